#!/usr/bin/env python3
"""test_infill_server.py: proves fill-in-the-middle end to end through the real fusiond, on
copies of stories260K given FIM tokens (tests/gguf_copy.py): one whose tokens are renamed to
Qwen2.5-Coder's texts (<|fim_prefix|> ... <|file_sep|>, found by text, repo-level pattern,
4096 context) and one with the ids in GGUF keys (the older prefix_token_id among them) and
no FIM_REP/FIM_SEP (snippet pattern, 512 context).  POST /infill: the exact token sequence
of the prompt (PSM with and without input_extra, the cuts, SPM with --spm-infill), checked
as the greedy output being /v1/completions' on that token sequence and as tokens_evaluated;
llama-server's native answer (content, stop_type eos/word/limit, stopping_word, timings,
response_fields as llama.vim asks, n_probs as /completion's completion_probabilities,
return_tokens and generation_settings, each frame's token ids) whole and streamed (data: frames, stop false, then the
final one, no [DONE]); llama-server's n_indent and t_max_predict_ms stops; FIM_PAD ending a
generation; the prefix cache serving the next keystroke, and cache_prompt false reusing
nothing; the errors in llama-server's shape (400s for wrong types, input_extra not an array of
objects; 501 without FIM tokens, with llama-server's message), the 413 of an oversize
body; a client gone mid-stream; the metrics label.  OpenAI's suffix on /v1/completions (the
PSM prompt; a 400 without FIM tokens).  Usage: test_infill_server.py (python3 stdlib only)."""

import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []
BOS = 1
# stories260K ids (rare single characters) renamed to Qwen2.5-Coder's FIM texts
PRE, SUF, MID, PAD, REP, SEP = 503, 507, 511, 498, 493, 502
QWEN = {PRE: "<|fim_prefix|>", SUF: "<|fim_suffix|>", MID: "<|fim_middle|>",
        PAD: "<|fim_pad|>", REP: "<|fim_repo|>", SEP: "<|file_sep|>"}
U32 = 4


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def tok(d, text):
    st, _, js = d.post("/tokenize", {"content": text, "add_special": False})
    assert st == 200, js
    return js["tokens"]


def llama_error(st, js, code, typ):
    """llama-server's error body, {"error": {"code", "message", "type"}}, and nothing else."""
    e = js.get("error") if isinstance(js, dict) else None
    return (st == code and isinstance(e, dict) and sorted(e) == ["code", "message", "type"] and
            e["code"] == code and e["type"] == typ and isinstance(e["message"], str) and
            e["message"] != "")


def infill(d, body):
    b = {"temperature": 0, "n_predict": 8}
    b.update(body)
    return d.post("/infill", b)


def completion_text(d, ids, n):
    st, _, js = d.post("/v1/completions", {"prompt": ids, "max_tokens": n, "temperature": 0})
    assert st == 200, js
    return js["choices"][0]["text"], js["usage"]["prompt_tokens"]


def same_as_completion(d, body, want_ids, what):
    """/infill's greedy output is /v1/completions' on want_ids, and it evaluated them."""
    st, _, js = infill(d, body)
    check(st == 200, "%s: status %d %r" % (what, st, js))
    if st != 200:
        return js
    text, n = completion_text(d, want_ids, body.get("n_predict", 8))
    check(js["tokens_evaluated"] == len(want_ids),
          "%s: tokens_evaluated %d, want %d" % (what, js["tokens_evaluated"], len(want_ids)))
    check(js["content"] == text, "%s: content %r, /v1/completions %r" % (what, js["content"], text))
    check(js["stop"] is True and js["stop_type"] in ("limit", "eos"),
          "%s: stop %r stop_type %r" % (what, js["stop"], js["stop_type"]))
    return js


def qwen_cases(d):
    prefix, suffix, prompt = "Once upon a time", " the end.", " there"
    extra = [{"filename": "a.py", "text": "Lily ran."}, {"text": "Tom sat."}]
    p, s, q = tok(d, prefix), tok(d, suffix), tok(d, prompt)
    head = [REP] + tok(d, "myproject\n")
    files = [SEP] + tok(d, "a.py\n") + tok(d, "Lily ran.") + [SEP] + tok(d, "tmp\n") + \
        tok(d, "Tom sat.")
    cur = [SEP] + tok(d, "filename\n")
    # PSM, repo-level: extra, BOS, FIM_PRE prefix prompt, FIM_SUF suffix, FIM_MID
    want = head + files + cur + [BOS, PRE] + p + q + [SUF] + s + [MID]
    js = same_as_completion(d, {"input_prefix": prefix, "input_suffix": suffix,
                                "prompt": prompt, "input_extra": extra}, want, "repo-level")
    check(js.get("prompt", "").startswith("<|fim_repo|>") and
          js.get("prompt", "").endswith("<|fim_middle|>"),
          "the final answer's prompt shows the FIM tokens: %r" % js.get("prompt"))
    check(js.get("tokens_cached") == js["tokens_evaluated"] + js["tokens_predicted"],
          "tokens_cached: %r" % js)
    t = js.get("timings", {})
    check(t.get("prompt_n") == len(want) and t.get("predicted_n") == js["tokens_predicted"] and
          t.get("predicted_ms", -1) >= 0 and "predicted_per_second" in t,
          "timings: %r" % t)
    # no input_extra: the header and the current file's separator only
    want = head + cur + [BOS, PRE] + p + [SUF] + s + [MID]
    same_as_completion(d, {"input_prefix": prefix, "input_suffix": suffix}, want, "no extra")
    # the extra context keeps its end: 4096 - 2048 - 2 * n_predict tokens
    big = [{"filename": "b.txt", "text": "The cat sat on the mat. " * 200}]
    run = head + [SEP] + tok(d, "b.txt\n") + tok(d, big[0]["text"]) + cur
    n = 400
    keep = 4096 - 2048 - 2 * n
    check(len(run) > keep, "the extra context is long enough to be cut (%d)" % len(run))
    want = run[-keep:] + [BOS, PRE] + p + [SUF] + s + [MID]
    same_as_completion(d, {"input_prefix": prefix, "input_suffix": suffix, "input_extra": big,
                           "n_predict": n}, want, "extra cut")

    # llama.vim's request: its fields accepted, response_fields flattened
    vim = {"input_prefix": prefix, "input_suffix": suffix, "prompt": prompt,
           "input_extra": extra, "n_predict": 4, "stop": [], "n_indent": 0, "top_k": 40,
           "top_p": 0.99, "samplers": ["top_k", "top_p", "infill"], "stream": False,
           "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1000,
           "id_slot": -1, "model": "whatever",
           "response_fields": ["content", "timings/prompt_n", "timings/prompt_ms",
                               "timings/prompt_per_token_ms", "timings/prompt_per_second",
                               "timings/predicted_n", "timings/predicted_ms",
                               "timings/predicted_per_token_ms",
                               "timings/predicted_per_second", "truncated", "tokens_cached"]}
    st, _, js = d.post("/infill", vim)
    check(st == 200 and js and sorted(js) == sorted(vim["response_fields"]),
          "llama.vim's response_fields: %d %r" % (st, js))
    # llama.cpp's samplers are taken here too (and replay for a seed)
    smp = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 8, "seed": 4,
           "temperature": 1.0, "dry_multiplier": 0.8, "typical_p": 0.9,
           "xtc_probability": 0.5, "samplers": "edkypmxt"}
    st, _, a = d.post("/infill", smp)
    st2, _, b = d.post("/infill", smp)
    check(st == 200 and st2 == 200 and a["content"] == b["content"],
          "llama.cpp's samplers on /infill: %d %r" % (st, a))
    st, _, a = d.post("/infill", dict(smp, mirostat=2, samplers=None))
    check(st == 200, "mirostat on /infill: %r" % a)
    st, _, a = d.post("/infill", dict(smp, temperature=0, n_probs=2, post_sampling_probs=True))
    pr = a.get("completion_probabilities") or [] if st == 200 else []
    check(st == 200 and pr and all(p["prob"] == 1 and len(p["top_probs"]) == 1 for p in pr),
          "post_sampling_probs on /infill (greedy: the chosen token, 1): %r" % pr[:2])
    st, _, a = d.post("/infill", dict(smp, mirostat=5))
    check(st == 400 and "mirostat" in json.dumps(a), "mirostat 5 on /infill: %r" % a)

    # streamed: frames of text, then the final answer; no [DONE]
    body = {"input_prefix": prefix, "input_suffix": suffix, "temperature": 0, "n_predict": 12}
    st, _, whole = d.post("/infill", body)
    body["stream"] = True
    st2, h, raw = d.request("POST", "/infill", body)
    frames, done = sse_frames(raw)
    check(st2 == 200 and h.get("content-type", "").startswith("text/event-stream"),
          "stream status %d %r" % (st2, h))
    check(not done, "the native stream has no [DONE]")
    check(len(frames) >= 2 and all(f["stop"] is False for f in frames[:-1]) and
          frames[-1]["stop"] is True, "frames: stop false then true: %r" % frames)
    check("".join(f["content"] for f in frames) == whole["content"],
          "streamed content adds up to the whole: %r vs %r" % (frames, whole["content"]))
    check(frames[-1].get("timings", {}).get("predicted_n") == whole["tokens_predicted"] and
          frames[-1]["stop_type"] == whole["stop_type"],
          "the last frame is the final answer: %r" % frames[-1])
    check(all(set(f) >= {"content", "stop", "tokens_predicted", "tokens_evaluated"}
              for f in frames[:-1]), "frame fields: %r" % frames[:1])

    # a stop string: stop_type word, the word named, the text before it
    gen = whole["content"]
    cut = next((i for i in range(1, len(gen) - 1) if gen[i] != " "), None)
    if cut:
        word = gen[cut:cut + 2]
        st, _, js = d.post("/infill", dict(body, stream=False, stop=[word, "zzzq"]))
        check(st == 200 and js["stop_type"] == "word" and js["stopping_word"] == word and
              js["content"] == gen[:gen.index(word)],
              "stop string: %r (word %r in %r)" % (js, word, gen))
    # llama-server's editor stops, both "limit": t_max_predict_ms at a token that ends a
    # line (stories260K's newline is a byte token of its own), n_indent at a line with text
    # indented less (the text cut after its indentation)
    lim = dict(body, stream=False, n_predict=300, ignore_eos=True, logit_bias={str(PAD): -100})
    st, _, full = d.post("/infill", lim)
    g = full["content"]
    nl = g.find("\n")
    check(st == 200 and nl > 0, "a whole answer with a newline: %r" % g[:80])
    st, _, js = d.post("/infill", dict(lim, t_max_predict_ms=0.001))
    check(st == 200 and js["stop_type"] == "limit" and js["content"] == g[:nl + 1] and
          js["tokens_predicted"] < full["tokens_predicted"],
          "t_max_predict_ms: %r (whole %r)" % (js.get("content"), g[:80]))
    n_indent = 2
    cut, line = None, nl + 1
    while cut is None and line < len(g):
        pos = line
        while pos < len(g) and g[pos] in " \t":
            pos += 1
        if pos < len(g) and pos - line < n_indent:
            cut = pos
        elif "\n" in g[line:]:
            line = g.index("\n", line) + 1
        else:
            break
    check(cut is not None, "the whole answer has a line indented less than %d: %r" %
          (n_indent, g[:200]))
    st, _, js = d.post("/infill", dict(lim, n_indent=n_indent))
    check(st == 200 and js["stop_type"] == "limit" and js["content"] == g[:cut],
          "n_indent: %r, want %r" % (js.get("content"), g[:cut or 0]))
    st, _, raw = d.request("POST", "/infill", dict(lim, n_indent=n_indent, stream=True))
    frames, _ = sse_frames(raw)
    text = "".join(f["content"] for f in frames)
    check(st == 200 and frames and frames[-1]["stop_type"] == "limit" and
          g.startswith(text) and len(text) >= cut and
          frames[-1]["tokens_predicted"] < full["tokens_predicted"],
          "n_indent streamed (not cut: sent): %r" % text[-40:])
    # FIM_PAD ends a generation (llama.cpp's end-of-generation set)
    st, _, js = d.post("/infill", dict(body, stream=False, logit_bias={str(PAD): 100}))
    check(st == 200 and js["stop_type"] == "eos" and js["tokens_predicted"] == 1 and
          js["content"] == "", "FIM_PAD is end of generation: %r" % js)
    # the context end: to-context generation stops there as "limit", truncated
    st, _, js = d.post("/infill", dict(body, stream=False, n_predict=5000, ignore_eos=True,
                                       logit_bias={str(PAD): -100}))
    check(st == 200 and js["stop_type"] == "limit" and js["truncated"] is True and
          js["tokens_evaluated"] + js["tokens_predicted"] == 4096,
          "n_predict past the context: cut to it: %r" % {k: js.get(k) for k in (
              "stop_type", "truncated", "tokens_evaluated", "tokens_predicted")})

    # n_probs: each token's log-probabilities as /completion answers them, equal to
    # /v1/completions' logprobs on the same prompt ids; streamed, one per frame
    want = head + cur + [BOS, PRE] + p + [SUF] + s + [MID]
    st, _, js = infill(d, {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 5,
                           "n_probs": 2, "return_tokens": True})
    st2, _, oa = d.post("/v1/completions", {"prompt": want, "max_tokens": 5, "temperature": 0,
                                            "logprobs": 2})
    cp, lp = js.get("completion_probabilities") or [], oa["choices"][0]["logprobs"]
    ok = st == 200 and st2 == 200 and len(cp) == js["tokens_predicted"] == 5
    for i, e in enumerate(cp if ok else []):
        ok &= e["token"] == lp["tokens"][i] and abs(e["logprob"] - lp["token_logprobs"][i]) < 1e-5
        ok &= len(e["top_logprobs"]) == 2 and isinstance(e["id"], int) and all(
            abs(lp["top_logprobs"][i][x["token"]] - x["logprob"]) < 1e-5 for x in e["top_logprobs"])
    check(ok, "infill n_probs: %r vs %r" % (cp[:2], lp))
    # return_tokens: the generated ids; generation_settings the request's
    ids = js.get("tokens") or []
    st3, _, dt = d.post("/detokenize", {"tokens": ids})
    gs = js.get("generation_settings") or {}
    check(len(ids) == 5 and dt.get("content") == js["content"] and gs.get("n_predict") == 5 and
          gs.get("n_probs") == 2 and gs.get("temperature") == 0,
          "infill return_tokens %r (%r), generation_settings %r" % (ids, dt, gs))
    st, _, raw = d.request("POST", "/infill", {"input_prefix": prefix, "input_suffix": suffix,
                                               "n_predict": 5, "n_probs": 2, "stream": True,
                                               "temperature": 0})
    frames = sse_frames(raw)[0]
    steps = [f for f in frames if not f["stop"]]
    check(st == 200 and len(steps) == 5 and sum((f["tokens"] for f in steps), []) == ids and
          [f["completion_probabilities"][0]["token"] for f in steps] == lp["tokens"] and
          "completion_probabilities" not in frames[-1],
          "infill n_probs streamed: %r" % frames)
    st, _, js = infill(d, {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 2})
    check("completion_probabilities" not in js and js["tokens"] == [],
          "infill: no probabilities without n_probs, no ids without return_tokens: %r" % js)

    # OpenAI's suffix: [BOS] FIM_PRE prompt FIM_SUF suffix FIM_MID
    st, _, js = d.post("/v1/completions", {"prompt": prefix, "suffix": suffix,
                                           "max_tokens": 8, "temperature": 0})
    want = [BOS, PRE] + p + [SUF] + s + [MID]
    text, _ = completion_text(d, want, 8)
    check(st == 200 and js["choices"][0]["text"] == text and
          js["usage"]["prompt_tokens"] == len(want), "suffix: %d %r" % (st, js))
    st, _, raw = d.request("POST", "/v1/completions", {
        "prompt": prefix, "suffix": suffix, "max_tokens": 8, "temperature": 0, "stream": True})
    frames, done = sse_frames(raw)
    check(st == 200 and done and "".join(f["choices"][0]["text"] for f in frames) == text,
          "suffix streamed: %r vs %r" % (frames, text))
    # token ids as the prompt: used as the prefix as they are (no BOS added)
    st, _, js = d.post("/v1/completions", {"prompt": p, "suffix": suffix, "max_tokens": 8,
                                           "temperature": 0})
    check(st == 200 and js["usage"]["prompt_tokens"] == len(want) - 1,
          "suffix after a token-id prompt: %d %r" % (st, js))
    st, _, js = d.post("/v1/completions", {"prompt": prefix, "suffix": suffix, "echo": True})
    check(st == 400 and js["error"]["param"] == "suffix", "suffix with echo: %d %r" % (st, js))

    # bad input
    for b, msg in [
        ({"input_suffix": ""}, '"input_prefix" is required'),
        ({"input_prefix": ""}, '"input_suffix" is required'),
        ({"input_prefix": 3, "input_suffix": ""}, "must be a string"),
        ({"input_prefix": "", "input_suffix": "", "prompt": ["a"]}, '"prompt" must be a string'),
        ({"input_prefix": "", "input_suffix": "", "input_extra": {"text": "a"}},
         '"input_extra" must be an array of {"filename": string, "text": string}'),
        ({"input_prefix": "", "input_suffix": "", "input_extra": ["a"]},
         'extra_context chunk must contain a "text" field with a string value'),
        ({"input_prefix": "", "input_suffix": "", "input_extra": [{"text": 1}]},
         "extra_context chunk must contain"),
        ({"input_prefix": "", "input_suffix": "", "input_extra": [{"text": "", "filename": 2}]},
         "\"filename\" field must be a string"),
        ({"input_prefix": "", "input_suffix": "", "n_predict": "8"}, "n_predict"),
        ({"input_prefix": "", "input_suffix": "", "temperature": "hot"}, "temperature"),
        ({"input_prefix": "", "input_suffix": "", "logit_bias": {"99999": 1}},
         "not in the vocabulary"),
        ({"input_prefix": "", "input_suffix": "", "cache_prompt": "no"}, "cache_prompt"),
    ]:
        st, _, js = d.post("/infill", b)
        check(llama_error(st, js, 400, "invalid_request_error") and
              msg in js["error"]["message"], "bad %r: %d %r" % (b, st, js))
    st, _, js = d.post("/infill", b"{not json")
    check(llama_error(st, js, 400, "invalid_request_error"), "malformed JSON: %d %r" % (st, js))
    st, _, js = d.post("/infill", {"input_prefix": "a" * (100 << 10), "input_suffix": ""})
    check(st == 413, "oversize body: %d %r" % (st, js))
    st, h, js = d.request("GET", "/infill")
    check(st == 405 and "POST" in h.get("allow", ""), "GET /infill: %d %r" % (st, h))

    # a client gone mid-stream: its sequence is cancelled, nothing stays running
    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    data = json.dumps({"input_prefix": prefix, "input_suffix": suffix, "stream": True,
                       "ignore_eos": True, "n_predict": 3000}).encode()
    s.sendall(b"POST /infill HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    s.close()
    m = d.settle()
    check(m.get("fusiond_requests_running") == 0, "the gone client's request ended: %r" %
          {k: v for k, v in m.items() if "running" in k})
    check(any('endpoint="infill"' in k for k in m), "the metrics label the endpoint infill")


def keys_cases(d):
    """ids in GGUF keys, no FIM_REP/FIM_SEP, 512 context (the cuts from n_batch 256)."""
    prefix = " ".join("Lily and Tom went to the park number %d." % i for i in range(40))
    suffix = " ".join("They were happy %d times." % i for i in range(40))
    p, s, q = tok(d, prefix), tok(d, suffix), tok(d, " and")
    check(len(p) > 192 and len(s) > 64, "long inputs (%d, %d)" % (len(p), len(s)))
    extra = [{"filename": "x.txt", "text": "A dog."}]
    snip = tok(d, "\n\n--- snippet ---\n\n") + tok(d, "A dog.")
    n = 16
    keep = min(len(snip), 512 - 256 - 2 * n)
    # prefix: its last 3 * (256 / 4) = 192 tokens; suffix: its first 256/4 - 2 - prompt
    want = snip[len(snip) - keep:] + [BOS, PRE] + p[-192:] + q + [SUF] + \
        s[:64 - 2 - len(q)] + [MID]
    same_as_completion(d, {"input_prefix": prefix, "input_suffix": suffix, "prompt": " and",
                           "input_extra": extra, "n_predict": n}, want, "keys, cuts")


def spm_cases(d):
    p, s = tok(d, "Once"), tok(d, " end")
    want = [REP] + tok(d, "myproject\n") + [SEP] + tok(d, "filename\n") + \
        [BOS, SUF] + s + [PRE] + p + [MID]
    same_as_completion(d, {"input_prefix": "Once", "input_suffix": " end"}, want, "SPM")
    # the prefix cache (on here) serves an editor's next request, which shares its start
    # (a keystroke more in the prefix, which comes after the suffix in SPM)
    body = {"input_prefix": "Once upon a time " * 8, "input_suffix": " end", "n_predict": 4,
            "temperature": 0}
    st, _, a = d.post("/infill", body)
    st2, _, b = d.post("/infill", dict(body, input_prefix=body["input_prefix"] + "Lily"))
    check(st == 200 and st2 == 200 and a["timings"]["cache_n"] < b["timings"]["cache_n"] and
          a["tokens_evaluated"] - 4 <= b["timings"]["cache_n"] < b["tokens_evaluated"],
          "prefix cache: cache_n %r then %r" % (a.get("timings"), b.get("timings")))
    # cache_prompt false (llama-server's): the whole prompt prefilled, the same greedy answer
    st3, _, c = d.post("/infill", dict(body, input_prefix=body["input_prefix"] + "Lily",
                                       cache_prompt=False))
    check(st3 == 200 and c["timings"]["cache_n"] == 0 and
          c["timings"]["prompt_n"] == c["tokens_evaluated"] == b["tokens_evaluated"] and
          c["content"] == b["content"],
          "cache_prompt false reuses nothing: %r then %r" % (b.get("timings"), c.get("timings")))
    # n_predict 0 (llama.vim's warm-up of its extra context): the prompt alone, left in the
    # prefix cache for the next request with that start
    warm = dict(body, input_prefix="Lily and Tom went to the park. " * 6, n_predict=0)
    st, _, w = d.post("/infill", warm)
    check(st == 200 and w["content"] == "" and w["tokens_predicted"] == 0 and
          w["stop_type"] == "limit", "n_predict 0: the prompt alone: %d %r" % (st, w))
    st, _, c = d.post("/infill", dict(warm, n_predict=4))
    check(st == 200 and c["tokens_predicted"] == 4 and
          c["timings"]["cache_n"] >= c["tokens_evaluated"] - 4 and
          c["timings"]["prompt_n"] + c["timings"]["cache_n"] == c["tokens_evaluated"],
          "after n_predict 0, from the prefix cache: %d %r" % (st, c.get("timings")))


def plain_cases(d):
    st, _, js = d.post("/infill", {"input_prefix": "a", "input_suffix": "b"})
    check(llama_error(st, js, 501, "not_supported_error") and js["error"]["message"] ==
          "Infill is not supported by this model: prefix token is missing. suffix token is "
          "missing. middle token is missing. ", "no FIM tokens: %d %r" % (st, js))
    st, _, js = d.post("/v1/completions", {"prompt": "a", "suffix": "b"})
    check(st == 400 and js["error"]["param"] == "suffix" and
          "fill-in-the-middle" in js["error"]["message"], "suffix without FIM: %d %r" % (st, js))
    st, _, js = d.post("/v1/completions", {"prompt": "a", "suffix": "", "max_tokens": 1})
    check(st == 200, "an empty suffix asks for nothing: %d %r" % (st, js))


def run(what, fn, *args, model):
    d = loopback.Daemon(*args, model=model)
    try:
        fn(d)
    finally:
        check(d.stop() == 0, "%s: clean exit" % what)
        d.cleanup()


def main():
    model = loopback.shared_model()
    tmp = scratch_dir("fusiond-fim-")
    qwen = os.path.join(tmp, "fim-qwen.gguf")
    gguf_rewrite(model, qwen, None, 4096, QWEN)
    keys = os.path.join(tmp, "fim-keys.gguf")
    gguf_rewrite(model, keys, None, None, {}, [
        (b"tokenizer.ggml.prefix_token_id", U32, PRE),
        (b"tokenizer.ggml.fim_suf_token_id", U32, SUF),
        (b"tokenizer.ggml.fim_mid_token_id", U32, MID)])
    bad = os.path.join(tmp, "fim-bad.gguf")
    gguf_rewrite(model, bad, None, None, {}, [(b"tokenizer.ggml.fim_mid_token_id", U32, 512)])
    t0 = time.time()
    run("qwen", qwen_cases, "--max-body-bytes", "64K", model=qwen)
    run("keys", keys_cases, model=keys)
    run("spm", spm_cases, "--spm-infill", "--prefix-cache", model=qwen)
    run("plain", plain_cases, model=model)
    # an id past the vocabulary is a load error
    try:
        d = loopback.Daemon(model=bad)
        d.stop()
        d.cleanup()
        check(False, "a FIM id past the vocabulary: the model loaded")
    except RuntimeError as e:
        check("the FIM middle token id 512 is past the vocabulary (512 tokens)" in str(e),
              "a FIM id past the vocabulary: %s" % str(e)[-300:])
    print("%s (%.1f s)" % ("FAIL" if FAILS else "PASS", time.time() - t0))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
