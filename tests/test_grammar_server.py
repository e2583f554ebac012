#!/usr/bin/env python3
"""test_grammar_server.py: proves grammar-constrained output through the real fusiond on
stories260K: every answer (random seeds, temperature 1) to guided_regex is matched whole by
Python's re, every guided_choice answer is exactly one of the choices, llama-server's GBNF
"grammar" on /completion, /v1/completions and /v1/chat/completions (streamed too) and
structured_outputs' regex, choice and grammar all keep to their language (checked with an
equivalent Python regex), and malformed or clashing constraints are a 400 that says where
or why.  Usage: test_grammar_server.py (python3 stdlib)."""

import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402

FAILS = []
PROMPT = "Once upon a time"
SEEDS = range(1, 13)


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def sampled(extra):
    b = {"temperature": 1.0, "top_k": 0, "top_p": 1, "max_tokens": 64}
    b.update(extra)
    return b


def completion(d, seed, **kw):
    st, _, js = d.post("/v1/completions", sampled(dict(kw, prompt=PROMPT, seed=seed)))
    check(st == 200, "/v1/completions %r: %d %r" % (kw, st, js))
    c = js["choices"][0] if st == 200 else {"text": None, "finish_reason": None}
    return c["text"], c["finish_reason"]


def chat(d, seed, **kw):
    body = sampled(dict(kw, seed=seed, messages=[{"role": "user", "content": PROMPT}]))
    st, _, js = d.post("/v1/chat/completions", body)
    check(st == 200, "/v1/chat/completions %r: %d %r" % (kw, st, js))
    c = js["choices"][0] if st == 200 else {"message": {"content": None}, "finish_reason": None}
    return c["message"]["content"], c["finish_reason"]


def in_language(text, finish, pattern, what):
    """A bounded language: every answer ends (stop) inside max_tokens and matches whole."""
    check(finish == "stop" and text is not None and re.fullmatch(pattern, text, re.S),
          "%s: %r (finish %s) is not in /%s/" % (what, text, finish, pattern))


def test_regex(d):
    pattern = r"(yes|no|maybe)[.!]|[A-Z][a-z]{1,6}( [a-z]{1,6}){0,2}\."
    texts = set()
    for s in SEEDS:
        t, f = completion(d, s, guided_regex=pattern)
        in_language(t, f, pattern, "guided_regex seed %d" % s)
        texts.add(t)
    # temperature 1 explores: a constraint that always wrote the same thing proves little
    check(len(texts) > 2, "guided_regex answers vary: %r" % texts)
    pattern = r"\d{3}-\d{4}"
    for s in SEEDS:
        t, f = chat(d, s, guided_regex=pattern)
        in_language(t, f, pattern, "chat guided_regex seed %d" % s)
    pattern = r"[a-c]+x?"
    for s in SEEDS[:4]:
        t, f = completion(d, s, structured_outputs={"regex": pattern}, max_tokens=8)
        check(f in ("stop", "length") and t is not None and
              re.fullmatch(pattern, t) is not None or (f == "length" and re.fullmatch(
                  r"[a-c]*", t or "-") is not None),
              "structured_outputs.regex seed %d: %r (%s)" % (s, t, f))


def test_choice(d):
    choices = ["The cat", "The dog", "a \"quoted\" word", "é€ unicode", ""]
    got = set()
    for s in SEEDS:
        t, f = chat(d, s, guided_choice=choices)
        check(f == "stop" and t in choices, "guided_choice seed %d: %r (%s)" % (s, t, f))
        got.add(t)
    check(len(got) > 1, "guided_choice answers vary: %r" % got)
    for s in SEEDS[:4]:
        t, f = completion(d, s, structured_outputs={"choice": ["red", "green", "blue"]})
        check(f == "stop" and t in ("red", "green", "blue"),
              "structured_outputs.choice seed %d: %r (%s)" % (s, t, f))


GBNF = r'''
# a sentence: a capital word, up to three more, then a stop
root ::= word (" " lower){0,3} end
word ::= [A-Z] lower
lower ::= [a-z]{1,6}
end ::= "." | "!" | (
  "?"   # a question
)
'''
GBNF_RE = r"[A-Z][a-z]{1,6}( [a-z]{1,6}){0,3}[.!?]"


def test_gbnf(d):
    for s in SEEDS:
        t, f = completion(d, s, grammar=GBNF)
        in_language(t, f, GBNF_RE, "/v1/completions grammar seed %d" % s)
        t, f = chat(d, s, guided_grammar=GBNF)
        in_language(t, f, GBNF_RE, "chat guided_grammar seed %d" % s)
        st, _, js = d.post("/completion", {"prompt": PROMPT, "n_predict": 64, "seed": s,
                                           "temperature": 1.0, "grammar": GBNF})
        check(st == 200 and js["stop_type"] == "eos" and
              re.fullmatch(GBNF_RE, js["content"]) is not None and
              js["generation_settings"]["grammar"] == GBNF,
              "/completion grammar seed %d: %d %r" % (s, st, js))
    t, f = completion(d, 3, structured_outputs={"grammar": GBNF})
    in_language(t, f, GBNF_RE, "structured_outputs.grammar")
    # streamed: the deltas add up to a sentence
    body = sampled({"prompt": PROMPT, "seed": 5, "grammar": GBNF, "stream": True})
    st, _, raw = d.request("POST", "/v1/completions", body)
    frames, done = sse_frames(raw)
    text = "".join(fr["choices"][0]["text"] for fr in frames if fr.get("choices"))
    fin = [fr["choices"][0]["finish_reason"] for fr in frames if fr.get("choices")][-1]
    check(st == 200 and done, "streamed grammar: %d" % st)
    in_language(text, fin, GBNF_RE, "streamed grammar")


def error_of(st, js):
    e = js.get("error") if isinstance(js, dict) else None
    return e if st == 400 and isinstance(e, dict) else {}


def test_errors(d):
    cases = [
        ({"grammar": "root ::= [a-z\n"}, "grammar", "line 1, column 10: unterminated"),
        ({"grammar": "root ::= x\nx ::= x \"a\" | \"b\""}, "grammar",
         "line 2, column 1: rule 'x' is left-recursive"),
        ({"grammar": "start ::= \"a\""}, "grammar", "no rule named 'root'"),
        ({"grammar": "root ::= y"}, "grammar", "rule 'y' is used but never defined"),
        ({"guided_grammar": "root ::= \"a\" )"}, "guided_grammar", "column 14: unmatched ')'"),
        ({"guided_regex": r"(a)\1"}, "guided_regex", "backreferences"),
        ({"guided_regex": "(?=a)a"}, "guided_regex", "lookaround"),
        ({"guided_regex": "a{2"}, None, None),     # a literal "{" as in Python: fine
        ({"guided_regex": "(a"}, "guided_regex", "column 1: missing )"),
        ({"guided_choice": "yes"}, "guided_choice", "non-empty array"),
        ({"guided_choice": ["a", 2]}, "guided_choice", "'guided_choice[1]' must be a string"),
        ({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}, "grammar",
         "both constrain"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "both constrain"),
        ({"structured_outputs": {"regex": "a", "grammar": "root ::= \"a\""}},
         "structured_outputs", "more than one"),
    ]
    for extra, param, msg in cases:
        st, _, js = d.post("/v1/completions", dict(extra, prompt=PROMPT, max_tokens=4))
        if param is None:
            check(st == 200, "%r: %d %r" % (extra, st, js))
            continue
        e = error_of(st, js)
        check(e.get("param") == param and msg in (e.get("message") or ""),
              "%r: %d %r (want param %s, message with %r)" % (extra, st, js, param, msg))
    # a grammar with tools: refused, as a JSON constraint is
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    st, _, js = d.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                "tools": tools, "grammar": GBNF})
    check(st == 400 and error_of(st, js).get("param") == "tools" or
          st == 400 and "tool" in json.dumps(js), "grammar with tools: %d %r" % (st, js))
    # llama-server's error shape on /completion
    st, _, js = d.post("/completion", {"prompt": "x", "grammar": "root ::= \"a"})
    check(st == 400 and "line 1, column 10" in json.dumps(js), "/completion: %d %r" % (st, js))


def main():
    with loopback.daemon(check, "fusiond exits 0", "--max-running", "4") as d:
        test_regex(d)
        test_choice(d)
        test_gbnf(d)
        test_errors(d)
    if FAILS:
        print("%d failures" % len(FAILS))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
