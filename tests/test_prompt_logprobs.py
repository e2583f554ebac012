#!/usr/bin/env python3
"""test_prompt_logprobs.py: proves the prompt's log-probabilities over HTTP with the real
fusiond and stories260K: lm-evaluation-harness's exact loglikelihood request (echo, logprobs
1, max_tokens 1, temperature 0, token-id prompts, several per request) parsed as lm-eval
parses it gives, for a greedy continuation, is_greedy true and the sum of the logprobs the
model gave that continuation when it generated it; a changed continuation is not greedy;
every prompt position's logprob equals the logprob of that token among the top 20 the model
gives after the prefix before it; echo with max_tokens 0 returns the prompt alone; vLLM's
prompt_logprobs on completions and chat; n=2; streaming puts them in the first chunk;
a daemon with the prefix cache answers the same; and the 400s.

Usage: test_prompt_logprobs.py FUSIOND MODEL  (python3 standard library only)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

FUSIOND, MODEL = sys.argv[1], sys.argv[2]
FAILS = []
TOL = 1e-4


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


class Daemon(loopback.Daemon):
    def __init__(self, *args):
        super().__init__(*args, fusiond=FUSIOND, model=MODEL)

    def stop(self):
        rc = super().stop(timeout=30)
        if rc != 0:
            FAILS.append("fusiond exited with %s:\n%s" % (rc, self.logtext().decode(errors="replace")[-3000:]))
        self.cleanup()

    def post(self, path, body):
        st, _, out = self.request("POST", path, body, None)
        try:
            return st, json.loads(out)
        except ValueError:
            return st, None

    def stream(self, path, body):
        c = self.conn()
        c.request("POST", path, body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read().decode()
        c.close()
        frames = []
        for block in raw.split("\n\n"):
            if block.startswith("data: ") and block != "data: [DONE]":
                frames.append(json.loads(block[6:]))
        return r.status, frames


def tokenize(d, text):
    st, js = d.post("/tokenize", {"content": text, "add_special": True})
    assert st == 200, js
    return js["tokens"]


def lm_eval_parse(choice, ctxlen):
    """lm-evaluation-harness's local-completions parse_logprobs, as it reads the answer."""
    lps = choice["logprobs"]["token_logprobs"][ctxlen:-1]
    tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
    is_greedy = True
    for tok, top in zip(lps, tops):
        if tok != max(top.values()):
            is_greedy = False
            break
    return sum(lps), is_greedy


def lm_eval_request(d, prompts):
    # the payload lm-eval's LocalCompletionsAPI._create_payload sends for loglikelihood
    st, _, models = d.get("/v1/models")
    model = json.loads(models)["data"][0]["id"]
    body = {"model": model, "prompt": prompts, "temperature": 0, "max_tokens": 1,
            "logprobs": 1, "seed": 1234, "echo": True}
    return d.post("/v1/completions", body)


def loglikelihood(d):
    ctx = tokenize(d, "Once upon a time")
    # the model's own greedy continuation and its logprobs
    st, g = d.post("/v1/completions", {"prompt": ctx, "max_tokens": 6, "temperature": 0,
                                        "logprobs": 1})
    check(st == 200, "greedy continuation: %s %s" % (st, g))
    gl = g["choices"][0]["logprobs"]
    cont_text = g["choices"][0]["text"]
    cont = tokenize(d, "Once upon a time" + cont_text)[len(ctx):]
    if not check(len(cont) == 6, "the continuation re-tokenizes to 6 tokens: %r" % cont):
        return
    other = list(cont)
    other[2] = 300 if other[2] != 300 else 301
    # lm-eval sends [context + continuation] token lists, several per request, and drops
    # the continuation's last token from its own context
    st, js = lm_eval_request(d, [ctx + cont, ctx + other])
    if not check(st == 200, "lm-eval request: %s %s" % (st, js)):
        return
    ch = sorted(js["choices"], key=lambda c: c["index"])
    check(len(ch) == 2, "two choices for two prompts")
    ctxlen = len(ctx)
    for c, toks in zip(ch, [ctx + cont, ctx + other]):
        lp = c["logprobs"]
        check(len(lp["token_logprobs"]) == len(toks) + 1, "echo: a logprob per prompt token "
              "and the generated one")
        check(lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None,
              "position 0 is null")
        check(all(isinstance(x, float) for x in lp["token_logprobs"][1:]),
              "every later position has a logprob")
        check(all(isinstance(x, dict) and x for x in lp["top_logprobs"][1:]),
              "every later position has top_logprobs")
    s, greedy = lm_eval_parse(ch[0], ctxlen)
    # [ctxlen:-1] covers the continuation less the generated token: the 6 continuation tokens
    want = sum(gl["token_logprobs"][:6])
    check(abs(s - want) < 1e-3, "loglikelihood %r, generated %r" % (s, want))
    check(greedy, "the greedy continuation is greedy")
    s2, greedy2 = lm_eval_parse(ch[1], ctxlen)
    check(not greedy2, "a changed continuation is not greedy")
    check(s2 < s, "a changed continuation is less likely (%r vs %r)" % (s2, s))


def per_position(d):
    text = "Lily saw a big cat"
    ids = tokenize(d, text)
    st, js = d.post("/v1/completions", {"prompt": text, "echo": True, "logprobs": 3,
                                         "max_tokens": 0})
    if not check(st == 200, "echo max_tokens 0: %s %s" % (st, js)):
        return
    c = js["choices"][0]
    check(c["text"] == text, "max_tokens 0: the prompt alone: %r" % c["text"])
    check(js["usage"]["completion_tokens"] == 0, "no generated token")
    check(c["finish_reason"] == "length", "finish_reason length")
    lp = c["logprobs"]
    check(len(lp["token_logprobs"]) == len(ids), "one entry per prompt token")
    compared = 0
    for i in range(1, len(ids)):
        # independent: the model after the prefix, through generation's logprobs
        st, g = d.post("/v1/completions", {"prompt": ids[:i], "max_tokens": 1,
                                            "temperature": 0, "logprobs": 20})
        top = g["choices"][0]["logprobs"]["top_logprobs"][0]
        best = max(top.values())
        check(abs(max(lp["top_logprobs"][i].values()) - best) < TOL,
              "position %d: best alternative %r vs %r" % (i, lp["top_logprobs"][i], best))
        tok = lp["tokens"][i]
        if tok in top:
            compared += 1
            check(abs(top[tok] - lp["token_logprobs"][i]) < TOL,
                  "position %d (%r): %r, after the prefix %r" % (i, tok, lp["token_logprobs"][i], top[tok]))
        check(len(lp["top_logprobs"][i]) in (3, 4), "3 alternatives and the token itself")
    check(compared >= (len(ids) - 1) // 2, "%d of %d positions among the top 20" % (compared, len(ids) - 1))


def vllm_prompt_logprobs(d):
    ids = tokenize(d, "The dog ran")
    st, js = d.post("/v1/completions", {"prompt": ids, "max_tokens": 2, "temperature": 0,
                                         "prompt_logprobs": 2, "n": 2})
    if not check(st == 200, "prompt_logprobs: %s %s" % (st, js)):
        return
    st, ref = d.post("/v1/completions", {"prompt": ids, "echo": True, "logprobs": 1,
                                          "max_tokens": 0})
    want = ref["choices"][0]["logprobs"]["token_logprobs"]
    for c in js["choices"]:
        pl = c["prompt_logprobs"]
        check(c["logprobs"] is None, "logprobs not asked: null")
        check(len(pl) == len(ids) and pl[0] is None, "prompt_logprobs: null then a dict each")
        for i in range(1, len(ids)):
            e = pl[i]
            mine = e.get(str(ids[i]))
            if not check(mine is not None, "position %d holds the prompt token" % i):
                continue
            check(abs(mine["logprob"] - want[i]) < TOL, "position %d: %r vs echo's %r"
                  % (i, mine["logprob"], want[i]))
            check(isinstance(mine["rank"], int) and mine["rank"] >= 1, "a rank")
            check(isinstance(mine["decoded_token"], str), "a decoded_token")
            ranks = sorted(v["rank"] for k, v in e.items() if k != str(ids[i]) or v["rank"] <= 2)
            check(ranks[:2] == [1, 2], "the two best alternatives are ranks 1 and 2: %r" % e)
            check(len(e) in (2, 3), "2 alternatives and the token: %r" % e)
    # chat: on the response, as vLLM puts it
    st, cj = d.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                              "max_tokens": 1, "prompt_logprobs": 0})
    if check(st == 200, "chat prompt_logprobs: %s %s" % (st, cj)):
        pl = cj.get("prompt_logprobs")
        n = cj["usage"]["prompt_tokens"]
        check(isinstance(pl, list) and len(pl) == n and pl[0] is None and
              all(isinstance(x, dict) and len(x) == 1 for x in pl[1:]),
              "chat prompt_logprobs over the %d prompt tokens: %r" % (n, pl))


def streaming(d):
    ids = tokenize(d, "Once upon a time there was")
    body = {"prompt": ids, "echo": True, "logprobs": 2, "max_tokens": 3, "temperature": 0}
    st, whole = d.post("/v1/completions", body)
    st2, frames = d.stream("/v1/completions", dict(body, stream=True))
    check(st == 200 and st2 == 200, "stream status")
    first = frames[0]["choices"][0]
    wl = whole["choices"][0]["logprobs"]
    check(first["logprobs"]["token_logprobs"] == wl["token_logprobs"][:len(ids)],
          "the first chunk carries the prompt's logprobs: %r vs %r"
          % (first["logprobs"]["token_logprobs"], wl["token_logprobs"][:len(ids)]))
    check(first["logprobs"]["top_logprobs"] == wl["top_logprobs"][:len(ids)],
          "and its top_logprobs")
    check(first["text"] == whole["choices"][0]["text"][:len(first["text"])] and first["text"],
          "and the echoed text")
    rest = [lp for f in frames[1:] for c in f["choices"] if c.get("logprobs")
            for lp in c["logprobs"]["token_logprobs"]]
    check(rest == wl["token_logprobs"][len(ids):], "then the generated tokens' logprobs")
    # max_tokens 0 streamed: the prompt, then the end
    st, frames = d.stream("/v1/completions", {"prompt": ids, "echo": True, "logprobs": 0,
                                              "max_tokens": 0, "stream": True})
    check(st == 200 and frames and len(frames[0]["choices"][0]["logprobs"]["tokens"]) == len(ids),
          "streamed max_tokens 0: the prompt's tokens")
    check(frames[-1]["choices"][0]["finish_reason"] == "length", "then finish_reason length")


def errors(d):
    for body, param in [
        ({"prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
        ({"prompt": "x", "prompt_logprobs": -1}, "prompt_logprobs"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0, "logprobs": 1}, "max_tokens"),
    ]:
        st, js = d.post("/v1/completions", body)
        check(st == 400 and js and js["error"]["param"] == param,
              "%r: 400 on %s, got %s %s" % (body, param, st, js))
    st, js = d.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                              "max_tokens": 0})
    check(st == 400 and js["error"]["param"] == "max_tokens", "chat max_tokens 0: %s" % js)
    st, js = d.post("/v1/completions", {"prompt": [1, 99999], "echo": True, "logprobs": 1,
                                         "max_tokens": 0})
    check(st == 400, "a token id outside the vocabulary: %s" % js)


def main():
    d = Daemon()
    answers = {}
    try:
        for fn in (loglikelihood, per_position, vllm_prompt_logprobs, streaming, errors):
            try:
                fn(d)
            except Exception as e:  # a crash in a test is a failure, not an abort
                import traceback
                traceback.print_exc()
                FAILS.append("%s raised %r" % (fn.__name__, e))
        ids = tokenize(d, "Once upon a time there was a girl")
        body = {"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
        answers["plain"] = d.post("/v1/completions", body)[1]["choices"][0]["logprobs"]
    finally:
        d.stop()
    # the prefix cache: the same prompt cached first, then asked with echo + logprobs
    c = Daemon("--prefix-cache")
    try:
        c.post("/v1/completions", {"prompt": ids, "max_tokens": 2, "temperature": 0})
        st, js = c.post("/v1/completions", body)
        check(st == 200 and js["choices"][0]["logprobs"]["token_logprobs"] ==
              answers["plain"]["token_logprobs"], "prefix cache: the same prompt logprobs")
    finally:
        c.stop()
    if FAILS:
        print("\n%d failure(s):" % len(FAILS))
        for f in FAILS:
            print("  -", f)
        return 1
    print("all prompt logprobs tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
