#!/usr/bin/env python3
"""test_cli_sampling.py: proves fusion-cli's llama-cli sampling flags (repeat/presence/
frequency penalties, DRY and its breakers, typical, top-n-sigma, dynamic temperature, XTC,
Mirostat 1/2, the chain order by name and by letter, logit biases, --ignore-eos, GBNF
grammars from the command line or a file) do what fusiond's request fields of the same
samplers do: on stories260K, fusion-cli's text equals fusiond's /completion content for the
same prompt, settings and seed, greedy and sampled; each setting changes the text (so the
flag is not ignored); grammar-constrained text is in the grammar's language for every seed;
and bad values fail with a clear message and exit status 1.  Usage: test_cli_sampling.py
(python3 stdlib; top_builddir and FUSIOND_SHARED as for the other daemon tests)."""

import os
import re
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

FAILS = []
PROMPT = "Once upon a time"
cli = os.path.join(os.environ.get("top_builddir", "."), "fusion-cli")


def check(cond, what, detail=""):
    if cond:
        print("ok   " + what)
    else:
        FAILS.append(what)
        print("FAIL %s\n%s" % (what, detail))


def run(*args):
    p = subprocess.run([cli] + list(args), capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def cli_text(model, n, args):
    rc, out, err = run("-m", model, "-p", PROMPT, "-n", str(n), "--threads", "1", *args)
    check(rc == 0, "fusion-cli %s runs" % " ".join(args), err)
    return out


def server_text(d, n, body):
    b = {"prompt": PROMPT, "n_predict": n, "cache_prompt": False}
    b.update(body)
    st, _, js = d.post("/completion", b)
    check(st == 200, "/completion %r: %d" % (body, st), repr(js))
    return js.get("content") if st == 200 else None


# (what, fusion-cli flags, fusiond fields): the CLI's defaults are llama-cli's (temperature
# 0.8, top-k 40, top-p 0.95, min-p 0.05), given to fusiond in full
CLI_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
GREEDY = [
    ("repeat penalty", ["--repeat-penalty", "1.5", "--repeat-last-n", "16"],
     {"repeat_penalty": 1.5, "repeat_last_n": 16}),
    ("repeat penalty, whole context", ["--repeat-penalty", "1.2", "--repeat-last-n", "-1"],
     {"repeat_penalty": 1.2, "repeat_last_n": -1}),
    ("presence and frequency penalties", ["--presence-penalty", "1.5", "--frequency-penalty", "0.5"],
     {"presence_penalty": 1.5, "frequency_penalty": 0.5}),
    ("DRY", ["--dry-multiplier", "1.5", "--dry-allowed-length", "1", "--dry-base", "2"],
     {"dry_multiplier": 1.5, "dry_allowed_length": 1, "dry_base": 2}),
    ("DRY with breakers", ["--dry-multiplier", "1.5", "--dry-allowed-length", "1",
                           "--dry-sequence-breaker", ".", "--dry-sequence-breaker", " the"],
     {"dry_multiplier": 1.5, "dry_allowed_length": 1, "dry_sequence_breakers": [".", " the"]}),
    ("DRY over the last 32", ["--dry-multiplier", "1.5", "--dry-allowed-length", "1",
                              "--dry-penalty-last-n", "32"],
     {"dry_multiplier": 1.5, "dry_allowed_length": 1, "dry_penalty_last_n": 32}),
    ("logit bias", ["-l", "68+100"], {"logit_bias": [[68, 100]]}),
    # the ids of the greedy text's first tokens (from fusiond's /tokenize) join at run time
    ("logit bias -inf", ["--logit-bias", "{0}-inf", "-l", "{1}-10"],
     {"logit_bias": [["{0}", False], ["{1}", -10]]}),
]
SAMPLED = [
    ("typical", ["--typical", "0.5"], {"typical_p": 0.5}),
    ("top-n-sigma", ["--top-nsigma", "0.3"], {"top_n_sigma": 0.3}),
    ("dynamic temperature", ["--dynatemp-range", "0.7", "--dynatemp-exp", "2"],
     {"dynatemp_range": 0.7, "dynatemp_exponent": 2}),
    ("XTC", ["--xtc-probability", "0.9", "--xtc-threshold", "0.05"],
     {"xtc_probability": 0.9, "xtc_threshold": 0.05}),
    ("Mirostat 1", ["--mirostat", "1", "--mirostat-ent", "3", "--mirostat-lr", "0.2"],
     {"mirostat": 1, "mirostat_tau": 3, "mirostat_eta": 0.2}),
    ("Mirostat 2", ["--mirostat", "2", "--mirostat-ent", "2"], {"mirostat": 2, "mirostat_tau": 2}),
    ("samplers by name", ["--samplers", "min_p;temperature;top-k", "--top-k", "3"],
     {"samplers": ["min_p", "temperature", "top_k"], "top_k": 3}),
    ("samplers by letter", ["--sampling-seq", "tk", "--top-k", "2", "--temp", "3"],
     {"samplers": "tk", "top_k": 2, "temperature": 3}),
]


def test_same_as_server(d, model):
    n = 120
    plain = cli_text(model, n, ["--temp", "0"])
    st, _, js = d.post("/tokenize", {"content": plain})
    check(st == 200 and len(js.get("tokens", [])) > 4, "/tokenize the greedy text", repr(js))
    ids = js["tokens"][1], js["tokens"][3]
    for what, flags, body in GREEDY:
        flags = [f.format(*ids) for f in flags]
        if "logit_bias" in body:
            body = dict(body, logit_bias=[[int(str(t).format(*ids)), b] for t, b in body["logit_bias"]])
        out = cli_text(model, n, ["--temp", "0"] + flags)
        srv = server_text(d, n, dict(body, temperature=0))
        check(out == srv, "greedy, %s: fusion-cli's text is fusiond's" % what,
              "cli=%r\nsrv=%r" % (out, srv))
        check(out != plain, "greedy, %s: the text changes" % what, out)
    check(cli_text(model, 5, ["--temp", "0", "-l", "68+100"]) == "AAAAA",
          "logit bias +100 on <0x41> writes A five times")
    for seed in (3, 11):
        base = cli_text(model, n, ["--seed", str(seed)])
        check(base == server_text(d, n, dict(CLI_DEFAULTS, seed=seed)),
              "seed %d, llama-cli's defaults: fusion-cli's text is fusiond's" % seed)
        for what, flags, body in SAMPLED:
            out = cli_text(model, n, ["--seed", str(seed)] + flags)
            srv = server_text(d, n, dict(CLI_DEFAULTS, seed=seed, **body))
            check(out == srv, "seed %d, %s: fusion-cli's text is fusiond's" % (seed, what),
                  "cli=%r\nsrv=%r" % (out, srv))
            check(out != base, "seed %d, %s: the text changes" % (seed, what), out)


def test_eos(d, model):
    # <eos> (id 2) pushed up: the text ends at once; --ignore-eos bans it and runs on
    rc, out, err = run("-m", model, "-p", PROMPT, "-n", "12", "--temp", "0", "-l", "2+100")
    check(rc == 0 and out == "" and "stopped after 0 tokens: end of text" in err,
          "a favoured <eos> ends the text", err)
    out = cli_text(model, 12, ["--temp", "0", "-l", "2+100", "--ignore-eos"])
    # llama-cli bans the end-of-generation tokens (stories260K's is <eos> alone), and so does
    # llama-server's ignore_eos on /completion; vLLM's on /v1/completions samples them and
    # goes on (their text is empty)
    srv = server_text(d, 12, {"temperature": 0, "logit_bias": [[2, 100], [2, False]]})
    check(out != "" and out == srv, "--ignore-eos bans <eos>", "cli=%r\nsrv=%r" % (out, srv))
    srv = server_text(d, 12, {"temperature": 0, "logit_bias": [[2, 100]], "ignore_eos": True})
    check(out == srv, "/completion's ignore_eos bans <eos> too", "cli=%r\nsrv=%r" % (out, srv))
    st, _, js = d.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0,
                                           "logit_bias": {"2": 100}, "ignore_eos": True})
    check(st == 200 and js["choices"][0]["text"] == "" and
          js["usage"]["completion_tokens"] == 12 and js["choices"][0]["finish_reason"] == "length",
          "/v1/completions' ignore_eos samples <eos> 12 times and goes on", repr(js))


def test_grammar(d, model):
    g = 'root ::= ("yes" | "no" | "maybe") ", " [a-z]{2,8} ("." | "!")'
    pattern = r"(yes|no|maybe), [a-z]{2,8}[.!]"
    texts = set()
    with tempfile.NamedTemporaryFile("w", suffix=".gbnf", delete=False) as f:
        f.write("# a comment, as in llama.cpp's grammars/\n" + g + "\n")
        path = f.name
    try:
        for seed in range(1, 9):
            rc, out, err = run("-m", model, "-p", PROMPT, "-n", "40", "--temp", "1.5",
                               "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed",
                               str(seed), "--grammar", g)
            check(rc == 0 and re.fullmatch(pattern, out) is not None and
                  "the grammar is complete" in err,
                  "--grammar, seed %d: %r is in the language" % (seed, out), err)
            texts.add(out)
            rc2, out2, _ = run("-m", model, "-p", PROMPT, "-n", "40", "--temp", "1.5",
                               "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed",
                               str(seed), "--grammar-file", path)
            check(rc2 == 0 and out2 == out, "--grammar-file, seed %d: the same text" % seed,
                  "%r vs %r" % (out2, out))
            srv = server_text(d, 40, {"temperature": 1.5, "top_k": 0, "top_p": 1, "min_p": 0,
                                      "seed": seed, "grammar": g})
            check(out == srv, "--grammar, seed %d: fusion-cli's text is fusiond's" % seed,
                  "cli=%r\nsrv=%r" % (out, srv))
        check(len(texts) > 2, "grammar answers vary with the seed: %r" % texts)
        # speculation keeps the text under a grammar
        out = cli_text(model, 40, ["--temp", "0", "--grammar", g])
        out2 = cli_text(model, 40, ["--temp", "0", "--grammar", g, "--draft-max", "4",
                                    "--lookup-min", "1"])
        check(out == out2 and re.fullmatch(pattern, out) is not None,
              "greedy under a grammar, with and without n-gram drafts", "%r %r" % (out, out2))
    finally:
        os.unlink(path)


def test_bad(model):
    for args, what in (
            (["--mirostat", "3"], "--mirostat: '3' is not an integer in [0, 2]"),
            (["--samplers", "top_k;foo"], "--samplers: 'foo' is not a sampler"),
            (["--samplers", ""], "--samplers names no sampler"),
            (["--sampling-seq", "kq"], "--sampling-seq: 'q' names no sampler"),
            (["-l", "5000+1"], "logit_bias"),
            (["-l", "12"], "--logit-bias takes TOKEN_ID+BIAS"),
            (["-l", "x+1"], "--logit-bias takes TOKEN_ID+BIAS"),
            (["--logit-bias", "12+nan"], "--logit-bias takes TOKEN_ID+BIAS"),
            (["--typical", "x"], "--typical"),
            (["--dry-base", "0.5"], "--dry-base: '0.5' is not a number in [1,"),
            (["--dry-sequence-breaker", ""], "--dry-sequence-breaker takes a string"),
            (["--dry-sequence-breaker", "x" * 41], "--dry-sequence-breaker takes a string"),
            (["--repeat-penalty", "0"], "--repeat-penalty"),
            (["--presence-penalty", "3"], "--presence-penalty"),
            (["--grammar", "root ::= x"], "line 1, column 10: rule 'x' is used but never defined"),
            (["--grammar", 'root ::= "a'], "line 1"),
            (["--grammar-file", "/nonexistent/g.gbnf"], "/nonexistent/g.gbnf: No such file"),
            (["--grammar", "root ::= \"a\"", "--grammar-file", "g"], "not both")):
        rc, out, err = run("-m", model, "-n", "4", *args)
        check(rc == 1 and what in err and out == "", "bad input %s" % " ".join(args)[:60], err)


def main():
    model = loopback.shared_model()
    with loopback.daemon(check, "fusiond exits 0") as d:
        test_same_as_server(d, model)
        test_eos(d, model)
        test_grammar(d, model)
    test_bad(model)
    if FAILS:
        print("%d failures" % len(FAILS))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
