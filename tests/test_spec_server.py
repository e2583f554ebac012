"""test_spec_server.py: fusiond with speculative decoding (--spec-type ngram, and a draft
model: -md, stories260K drafting for itself) answers exactly what fusiond without it
answers: greedy and seeded completions, logprobs, a stop string, streamed and whole, several
requests at once; its /metrics count drafted and accepted tokens (none without it; nearly
all taken from the draft model when greedy); and the daemon refuses bad speculation
settings and a draft model whose vocabulary differs.  python3
standard library only; run by tests/test_spec_server.sh with the built fusiond and
stories260K."""

import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FUSIOND, MODEL = sys.argv[1], sys.argv[2]
FAILS = []

PROMPTS = [
    "Lily and Ben went to the park. Lily and Ben went to the park. Lily and Ben",
    "The cat sat on the mat. The dog sat on the log. The cat sat on the",
    "Once upon a time",
]


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


def complete(d, body):
    st, _, js = d.post("/v1/completions", body)
    check(st == 200, "completion %r: %s %s" % (body, st, js))
    return js


def stream(d, body):
    b = dict(body)
    b["stream"] = True
    st, _, out = d.request("POST", "/v1/completions", b)
    check(st == 200, "stream: %s" % st)
    text, finish = "", None
    for line in out.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            ch = json.loads(line[6:])["choices"]
            if ch:
                text += ch[0].get("text", "")
                finish = ch[0].get("finish_reason") or finish
    return text, finish


def same_choice(a, b, what):
    ca, cb = a["choices"][0], b["choices"][0]
    check(ca["text"] == cb["text"], "%s: text %r without speculation, %r with" % (what, ca["text"], cb["text"]))
    check(ca["finish_reason"] == cb["finish_reason"], "%s: finish reason" % what)
    check(a["usage"]["completion_tokens"] == b["usage"]["completion_tokens"], "%s: usage" % what)
    la, lb = ca.get("logprobs"), cb.get("logprobs")
    if la or lb:
        check(la["tokens"] == lb["tokens"], "%s: logprob tokens" % what)
        check(all(abs(x - y) <= 1e-4 for x, y in zip(la["token_logprobs"], lb["token_logprobs"])),
              "%s: logprobs" % what)


def main():
    off = loopback.Daemon(fusiond=FUSIOND, model=MODEL)
    try:
        for kind in ("ngram", "draft"):
            compare(off, kind)
    finally:
        rc = off.stop(timeout=30)
        check(rc == 0, "fusiond exited with %s" % rc)
        off.cleanup()
    refusals()
    if FAILS:
        print("%d failure(s)" % len(FAILS))
        sys.exit(1)
    print("PASS: speculative decoding through the daemon")


def compare(off, kind):
    if kind == "ngram":
        on = loopback.Daemon("--spec-type", "ngram", "--draft-max", "6", "--prompt-lookup-min", "1",
                             fusiond=FUSIOND, model=MODEL)
        log = b"speculative decoding: ngram, up to 6 draft tokens"
    else:
        # llama-server's spellings; spec_type draft follows from the draft model
        on = loopback.Daemon("-md", MODEL, "--draft", "6", "--draft-p-min", "0.5", "-cd", "256",
                             "-td", "1", fusiond=FUSIOND, model=MODEL)
        log = b"speculative decoding: draft model"
    m_off0 = off.settle()
    try:
        check(log in on.logtext(), "the daemon logs speculation's settings (%s)" % kind)
        for i, p in enumerate(PROMPTS):
            bodies = [
                {"prompt": p, "max_tokens": 80, "temperature": 0, "logprobs": 2},
                {"prompt": p, "max_tokens": 80, "temperature": 0.8, "top_p": 0.9, "seed": 11 + i,
                 "presence_penalty": 0.4},
                {"prompt": p, "max_tokens": 80, "temperature": 0, "stop": [" the"]},
            ]
            for j, body in enumerate(bodies):
                same_choice(complete(off, body), complete(on, body), "prompt %d body %d" % (i, j))
                check(stream(off, body) == stream(on, body), "prompt %d body %d streamed" % (i, j))
        # several at once on the speculating daemon: each as it is alone without it
        body = {"prompt": PROMPTS[0], "max_tokens": 60, "temperature": 0}
        want = complete(off, body)
        got = [None] * 6

        def one(k):
            got[k] = complete(on, body)

        ts = [threading.Thread(target=one, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for k in range(6):
            same_choice(want, got[k], "concurrent %d" % k)
        m_on, m_off = on.settle(), off.settle()
        drafted = m_on.get("fusiond_spec_draft_tokens_total", -1)
        accepted = m_on.get("fusiond_spec_accepted_tokens_total", -1)
        check(drafted > 0 and 0 < accepted <= drafted,
              "metrics (%s): %s drafted, %s accepted" % (kind, drafted, accepted))
        passes = m_on.get("fusiond_spec_draft_passes_total", -1)
        if kind == "draft":
            # its own copy drafts: only the sampled requests' drafts are turned down
            check(accepted >= 0.7 * drafted, "draft model: %s of %s taken" % (accepted, drafted))
            check(passes > 0, "draft model passes: %s" % passes)
        else:
            check(passes == 0, "n-gram drafts count no draft model passes: %s" % passes)
        check(m_off.get("fusiond_spec_draft_tokens_total") == 0 and
              m_off.get("fusiond_spec_accepted_tokens_total") == 0, "no drafts without speculation")
        # the same tokens counted: the speculating daemon ran five more copies of `body`
        extra = 5 * want["usage"]["completion_tokens"]
        gen_off = m_off["fusiond_generation_tokens_total"] - m_off0["fusiond_generation_tokens_total"]
        check(m_on["fusiond_generation_tokens_total"] == gen_off + extra,
              "tokens generated (%s): %s with speculation, %s + %d without" % (
                  kind, m_on["fusiond_generation_tokens_total"], gen_off, extra))
    finally:
        rc = on.stop(timeout=30)
        check(rc == 0, "fusiond exited with %s" % rc)
        on.cleanup()


def refusals():
    # bad settings are refused before anything starts
    for args, want in [(["--draft-max", "0"], "--draft-max: 0 is out of range 1..64"),
                       (["--spec-type", "medusa"], "--spec-type: 'medusa' is not one of none, ngram, draft"),
                       (["--draft-max", "2", "--draft-min", "3"], "--draft-min: 3 is more than draft_max (2)"),
                       (["--spec-type", "draft"], "--spec-type: draft needs a draft model"),
                       (["--spec-type", "ngram", "-md", MODEL], "--model-draft: a draft model with spec_type ngram"),
                       (["-md", "/nonexistent.gguf"], "--model-draft: cannot read /nonexistent.gguf"),
                       (["-md", MODEL, "--draft-p-min", "1.5"], "--draft-p-min: '1.5' is not a probability")]:
        r = subprocess.run([FUSIOND, "--config=/dev/null", "--model", MODEL, "--test-config"] + args,
                           capture_output=True, timeout=60)
        check(r.returncode != 0 and want.encode() in r.stderr,
              "%s: exit %d, %r" % (args, r.returncode, r.stderr))
    # a draft model whose vocabulary differs in one token's text: the daemon does not start
    tmp = scratch_dir("fusiond-spec-")
    other = os.path.join(tmp, "other.gguf")
    gguf_rewrite(MODEL, other, None, None, {300: "xyzzy"})
    r = subprocess.run([FUSIOND, "--config=/dev/null", "--model", MODEL, "--host", "127.0.0.1",
                        "--port", "0", "--threads", "1", "--log-format", "plain", "-md", other],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    check(r.returncode != 0 and b"token 300 is 'xyzzy' there" in out,
          "a draft model of another vocabulary: exit %s, %r" % (r.returncode, out[-400:]))


main()
