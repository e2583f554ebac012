#!/usr/bin/env python3
"""test_native_server.py: proves llama-server's native API through the real fusiond on
stories260K: POST /completion (greedy content equal to /v1/completions' text for the same
prompt as a string, as token ids and as ids and text mixed; several prompts answered as an
array; return_tokens equal to what /tokenize gives for the content; streamed data: frames
whose contents and tokens add up to the whole answer, then the final frame and no [DONE];
n_probs equal to /v1/completions' logprobs, and n_probs on /v1/completions and
/v1/chat/completions standing for logprobs; stop_type eos, limit and word with
stopping_word; timings consistent with the token counts; generation_settings the request's),
GET /props (slots, context, model path, BOS/EOS, template), POST /props refused (501),
GET /slots (a slot is_processing with the running request's settings while streams run;
--no-slots answers 501), n_predict 0 (the prompt alone, left in the prefix cache), POST /apply-template (the prompt /v1/chat/completions runs: the
same greedy answer from /completion), llama-server's error shape for malformed bodies (and
its exceed_context_size_error with n_prompt_tokens and n_ctx for a prompt too long), the
fields it ignores, /tokenize's with_pieces (bytes for a piece that is not UTF-8) and
parse_special, the metrics labels, and llama.cpp's samplers (DRY stops a greedy
repetition; XTC, typical, dynamic temperature and Mirostat replay for a seed; the chain
order and every field shown in the settings and /props; post_sampling_probs' shape).  Usage: test_native_server.py (python3 stdlib)."""

import http.client
import json
import math
import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402

FAILS = []
PROMPT = "Once upon a time"


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def native(d, body):
    b = {"temperature": 0}
    b.update(body)
    return d.post("/completion", b)


def oai_text(d, prompt, n, **kw):
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0}
    body.update(kw)
    st, _, js = d.post("/v1/completions", body)
    assert st == 200, js
    return js


def tokenize(d, text, special):
    st, _, js = d.post("/tokenize", {"content": text, "add_special": special})
    assert st == 200, js
    return js["tokens"]


def llama_error(st, js, code, what):
    """llama-server's error body: {"error": {"code", "message", "type"}}."""
    e = js.get("error") if isinstance(js, dict) else None
    check(st == code and isinstance(e, dict) and e.get("code") == code and
          isinstance(e.get("message"), str) and e["message"] and isinstance(e.get("type"), str),
          "%s: %d %r" % (what, st, js))


def stream(d, body):
    b = {"temperature": 0, "stream": True}
    b.update(body)
    st, h, raw = d.request("POST", "/completion", b)
    frames, done = sse_frames(raw)
    return st, h, frames, done


def test_completion(d):
    want = oai_text(d, PROMPT, 12)["choices"][0]["text"]
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 12, "return_tokens": True})
    check(st == 200 and js["content"] == want, "greedy /completion = /v1/completions: %r vs %r"
          % (js.get("content") if js else None, want))
    check(js["stop"] is True and js["tokens_predicted"] == 12 and js["stop_type"] == "limit" and
          js["stopping_word"] == "" and js["truncated"] is False,
          "a limit stop: %r" % {k: js.get(k) for k in ("stop", "tokens_predicted", "stop_type")})
    ids = tokenize(d, PROMPT, True)
    check(js["tokens_evaluated"] == len(ids), "tokens_evaluated %d, the prompt has %d"
          % (js["tokens_evaluated"], len(ids)))
    check(len(js["tokens"]) == 12, "return_tokens: 12 ids, got %r" % js["tokens"])
    st, _, dt = d.post("/detokenize", {"tokens": js["tokens"]})
    check(st == 200 and dt["content"] == want, "the ids detokenize to the content: %r" % dt)
    check(js["prompt"].endswith(PROMPT) and js["model"], "prompt and model: %r %r"
          % (js["prompt"], js["model"]))
    check(isinstance(js["id_slot"], int) and js["id_slot"] >= 0, "id_slot %r" % js["id_slot"])
    gs = js["generation_settings"]
    check(gs["n_predict"] == 12 and gs["temperature"] == 0 and gs["top_k"] == 40 and
          gs["stream"] is False and gs["seed"] == 4294967295,
          "generation_settings are the request's: %r" % gs)
    st, _, js2 = native(d, {"prompt": PROMPT, "n_predict": 12})
    check(js2["tokens"] == [], "tokens empty without return_tokens: %r" % js2["tokens"])

    # the timings: counts match the answer, rates match the counts
    t = js["timings"]
    check(t["predicted_n"] == 12 and t["prompt_n"] + t["cache_n"] == len(ids) and
          t["predicted_ms"] >= 0 and t["prompt_ms"] >= 0, "timings counts: %r" % t)
    if t["predicted_ms"] > 0:
        check(math.isclose(t["predicted_per_token_ms"], t["predicted_ms"] / 12, rel_tol=1e-6) and
              math.isclose(t["predicted_per_second"], 12e3 / t["predicted_ms"], rel_tol=1e-6),
              "predicted rates: %r" % t)
    if t["prompt_n"] and t["prompt_ms"] > 0:
        check(math.isclose(t["prompt_per_second"], t["prompt_n"] * 1e3 / t["prompt_ms"],
                           rel_tol=1e-6), "prompt rate: %r" % t)

    # token ids, and ids and text mixed, are the same prompt
    st, _, a = native(d, {"prompt": ids, "n_predict": 12})
    check(st == 200 and a["content"] == want, "a token-id prompt: %r" % a.get("content"))
    # a string first gets BOS (where the model adds it), one after ids does not
    head = tokenize(d, "Once upon a", True)
    check(head == ids[:-1], "the prompt's head tokenizes alone: %r vs %r" % (head, ids))
    st, _, m = native(d, {"prompt": ["Once upon a", ids[-1]], "n_predict": 12})
    check(st == 200 and m["content"] == want and m["tokens_evaluated"] == len(ids),
          "a mixed prompt [text, id]: %d %r" % (st, m))
    st, _, m = native(d, {"prompt": ids[:2] + ["dog", 261], "n_predict": 2,
                          "return_tokens": True})
    n_dog = len(tokenize(d, "dog", False))
    check(st == 200 and m["tokens_evaluated"] == 3 + n_dog and
          m["prompt"].startswith("<s>") and m["prompt"].count("<s>") == 1,
          "a mixed prompt [ids, text, id]: %d %r" % (st, m))
    # several prompts: an array, one answer each in order
    st, _, many = native(d, {"prompt": [PROMPT, ids, "Lily"], "n_predict": 6})
    w6 = oai_text(d, PROMPT, 6)["choices"][0]["text"]
    lily = oai_text(d, "Lily", 6)["choices"][0]["text"]
    check(st == 200 and isinstance(many, list) and [x["content"] for x in many] == [w6, w6, lily]
          and [x["index"] for x in many] == [0, 1, 2], "several prompts: %r" % many)

    # n_probs: the OpenAI endpoint's log-probabilities, in the native shape
    st, _, p = native(d, {"prompt": PROMPT, "n_predict": 6, "n_probs": 3})
    lp = oai_text(d, PROMPT, 6, logprobs=3)["choices"][0]["logprobs"]
    cp = p.get("completion_probabilities") or []
    ok = st == 200 and len(cp) == 6
    for i, e in enumerate(cp if ok else []):
        tops = e["top_logprobs"]
        ok &= e["token"] == lp["tokens"][i] and abs(e["logprob"] - lp["token_logprobs"][i]) < 1e-5
        ok &= len(tops) == 3 and all(set(x) >= {"id", "token", "logprob", "bytes"} for x in tops)
        ok &= isinstance(e["id"], int) and e["id"] == tops[0]["id"]  # greedy: the best one
        want_top = lp["top_logprobs"][i]
        ok &= all(abs(want_top[x["token"]] - x["logprob"]) < 1e-5 for x in tops)
        ok &= bytes(e["bytes"]).decode(errors="replace") == e["token"]
    check(ok, "n_probs match /v1/completions' logprobs: %r vs %r" % (cp[:2], lp))
    st, _, p0 = native(d, {"prompt": PROMPT, "n_predict": 2})
    check("completion_probabilities" not in p0, "no probabilities without n_probs")

    # n_probs on the OpenAI endpoints (llama-server's clients send it there): the logprobs it
    # stands for when logprobs is not given, in OpenAI's shape
    np3 = oai_text(d, PROMPT, 6, n_probs=3)["choices"][0]["logprobs"]
    check(np3 == lp, "/v1/completions n_probs 3 is logprobs 3: %r vs %r" % (np3, lp))
    own = oai_text(d, PROMPT, 6, n_probs=3, logprobs=1)["choices"][0]["logprobs"]
    check(own["tokens"] == lp["tokens"] and all(len(t) == 1 for t in own["top_logprobs"]),
          "/v1/completions logprobs wins over n_probs: %r" % own)
    chat = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4,
            "temperature": 0}
    st, _, a = d.post("/v1/chat/completions", dict(chat, n_probs=2))
    st2, _, b = d.post("/v1/chat/completions", dict(chat, logprobs=True, top_logprobs=2))
    la, lb = a["choices"][0].get("logprobs"), b["choices"][0].get("logprobs")
    check(st == 200 and st2 == 200 and la == lb and len(la["content"]) == 4 and
          all(len(t["top_logprobs"]) == 2 for t in la["content"]),
          "chat n_probs 2 is logprobs true, top_logprobs 2: %r vs %r" % (la, lb))
    st, _, c = d.post("/v1/chat/completions", dict(chat, n_probs=2, logprobs=False))
    check(st == 200 and c["choices"][0].get("logprobs") is None,
          "chat logprobs false wins over n_probs: %r" % c["choices"][0])


def test_tokenize(d):
    """llama-server's /tokenize fields: with_pieces (a piece is its text, or its bytes when
    they are not valid UTF-8) and parse_special (false: special-token texts stay text)."""
    st, _, js = d.post("/tokenize", {"content": "Lily \u4e2d\U0001F600", "add_special": False,
                                     "with_pieces": True})
    toks = js.get("tokens") or []
    ids = [t["id"] for t in toks]
    raw = b"".join(bytes(t["piece"]) if isinstance(t["piece"], list)
                   else t["piece"].encode() for t in toks)
    plain = tokenize(d, "Lily \u4e2d\U0001F600", False)
    check(st == 200 and ids == plain and raw.replace(b"\xe2\x96\x81", b" ").strip() ==
          "Lily \u4e2d\U0001F600".encode() and
          any(isinstance(t["piece"], list) for t in toks) and
          all(isinstance(t["piece"], str) or (t["piece"] and all(0 <= b < 256 for b in t["piece"]))
              for t in toks), "with_pieces: byte pieces as bytes: %r" % toks)
    check(all(isinstance(t["piece"], str) for t in toks[:2]), "text pieces as text: %r" % toks)
    eos = tokenize(d, "</s>", False)
    st, _, js = d.post("/tokenize", {"content": "</s>", "add_special": False,
                                     "parse_special": False})
    check(st == 200 and eos == [2] and 2 not in js["tokens"] and len(js["tokens"]) > 1,
          "parse_special false: </s> as text %r (parsed: %r)" % (js.get("tokens"), eos))
    st, _, js = d.post("/tokenize", {"content": "</s>", "parse_special": "no"})
    check(st == 400, "parse_special a string: %d %r" % (st, js))


def test_stops(d):
    greedy = native(d, {"prompt": PROMPT, "n_predict": 12})[2]["content"]
    # eos: the EOS token pushed to the top by a logit bias, in llama-server's pair form
    eos = d.post("/tokenize", {"content": "</s>", "add_special": False})[2]
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 12, "logit_bias": [[2, 100]]})
    check(st == 200 and js["stop_type"] == "eos" and js["content"] == "" and
          js["tokens_predicted"] == 1, "stop_type eos: %r (</s> is %r)" % (js, eos))
    # ignore_eos: no eos stop
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 5, "logit_bias": [[2, 100]],
                           "ignore_eos": True})
    check(st == 200 and js["stop_type"] != "eos", "ignore_eos: %r" % js.get("stop_type"))
    # false bans a token: the greedy answer changes at its first use
    first = native(d, {"prompt": PROMPT, "n_predict": 1, "return_tokens": True})[2]["tokens"][0]
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 1, "return_tokens": True,
                           "logit_bias": [[first, False]]})
    check(st == 200 and js["tokens"][0] != first, "logit_bias false bans the token: %r" % js)
    # word: the text before the stop string, the word reported
    word = " was"
    check(word in greedy, "the greedy text holds %r: %r" % (word, greedy))
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 12, "stop": ["zzz", word]})
    check(st == 200 and js["stop_type"] == "word" and js["stopping_word"] == word and
          js["content"] == greedy[:greedy.index(word)], "stop_type word: %r" % js)
    # n_predict 0: the prompt is evaluated, nothing generated
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 0})
    check(st == 200 and js["content"] == "" and js["tokens_predicted"] == 0 and
          js["stop_type"] == "limit" and js["tokens_evaluated"] == 5, "n_predict 0: %r" % js)
    st, _, frames, done = stream(d, {"prompt": PROMPT, "n_predict": 0})
    check(st == 200 and len(frames) == 1 and frames[0]["stop"] is True and not done,
          "n_predict 0 streamed: the final frame alone: %r" % frames)
    # limit: n_predict; -1 runs until the context is full (truncated) or EOS
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 3})
    check(js["stop_type"] == "limit" and js["tokens_predicted"] == 3, "limit: %r" % js)
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": -1, "ignore_eos": True})
    check(st == 200 and js["stop_type"] == "limit" and js["truncated"] is True and
          js["tokens_evaluated"] + js["tokens_predicted"] == 512,
          "n_predict -1 fills the context: %r" % {k: js.get(k) for k in (
              "stop_type", "truncated", "tokens_evaluated", "tokens_predicted")})


def test_stream(d):
    st, _, whole = native(d, {"prompt": PROMPT, "n_predict": 10, "return_tokens": True,
                              "stop": [" girl"]})
    st, h, frames, done = stream(d, {"prompt": PROMPT, "n_predict": 10, "stop": [" girl"],
                                     "n_probs": 2})
    check(st == 200 and h.get("content-type", "").startswith("text/event-stream"),
          "a stream: %d %r" % (st, h))
    check(not done, "llama-server's native stream has no [DONE]")
    check(len(frames) >= 2 and all(f["stop"] is False for f in frames[:-1]) and
          frames[-1]["stop"] is True, "frames stop false, then the final one")
    body = frames[:-1]
    text = "".join(f["content"] for f in body)
    toks = [t for f in body for t in f["tokens"]]
    check(text == whole["content"], "the frames' contents add up: %r vs %r"
          % (text, whole["content"]))
    fin = frames[-1]
    check(toks == whole["tokens"][:len(toks)] and len(toks) >= fin["tokens_predicted"] - 1,
          "the frames' tokens add up: %r vs %r" % (toks, whole["tokens"]))
    check(all(set(f) >= {"content", "tokens", "stop", "index", "id_slot", "tokens_predicted",
                         "tokens_evaluated"} for f in body) and
          all("completion_probabilities" in f for f in body if f["tokens"]),
          "a frame's fields: %r" % body[:1])
    check(fin["content"] == "" and fin["stop_type"] == whole["stop_type"] == "word" and
          fin["stopping_word"] == " girl" and fin["tokens_predicted"] ==
          whole["tokens_predicted"] and "timings" in fin and "generation_settings" in fin and
          fin["generation_settings"]["stream"] is True and
          "completion_probabilities" not in fin, "the final frame: %r" % fin)


def test_props_slots(d):
    st, _, props = d.post("/props", {})
    llama_error(st, props, 501, "POST /props is refused")
    st, _, js = d.post("/slots/0?action=save", {"filename": "x.bin"})
    llama_error(st, js, 501, "POST /slots/0?action=save is refused")
    st, _, raw = d.get("/props")
    props = json.loads(raw)
    models = json.loads(d.get("/v1/models")[2])["data"][0]
    dgs = props.get("default_generation_settings", {})
    check(st == 200 and props["total_slots"] == 4 and dgs["n_ctx"] == 512 ==
          models["max_model_len"] and dgs["is_processing"] is False and
          dgs["params"]["temperature"] == 0.800000011920929 and dgs["params"]["top_k"] == 40,
          "/props: %r" % props)
    check(props["model_path"].endswith("stories260K.gguf") and
          props["build_info"].startswith("fusiond ") and props["bos_token"] == "<s>" and
          props["eos_token"] == "</s>" and props["modalities"] == {"vision": False,
                                                                     "audio": False},
          "/props: model, build, tokens: %r" % props)
    check(isinstance(props["chat_template"], str), "chat_template is a string")

    st, _, raw = d.get("/slots")
    slots = json.loads(raw)
    check(st == 200 and [s["id"] for s in slots] == [0, 1, 2, 3] and
          not any(s["is_processing"] for s in slots) and
          all(s["n_ctx"] == 512 and s["id_task"] == -1 for s in slots), "idle /slots: %r" % slots)

    # streams keep the batch busy while /slots is read: a slot shows the running request
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
            body = {"prompt": PROMPT, "n_predict": 400, "ignore_eos": True, "stream": True,
                    "temperature": 0.5, "top_k": 7}
            try:
                c.request("POST", "/completion", body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})
                c.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass
            finally:
                c.close()

    th = [threading.Thread(target=worker) for _ in range(4)]
    for t in th:
        t.start()
    seen = None
    deadline = time.time() + 20
    while time.time() < deadline and not seen:
        for s in json.loads(d.get("/slots")[2]):
            if s["is_processing"] and s["next_token"]["n_decoded"] > 0:
                seen = s
    # four streams on four slots: at times every one is taken
    full = None
    while time.time() < deadline and full is None:
        st, _, raw = d.get("/slots?fail_on_no_slot=1")
        if st == 503:
            full = json.loads(raw)
    stop.set()
    for t in th:
        t.join()
    check(seen is not None, "a slot is_processing while streams run")
    if full is not None:
        llama_error(503, full, 503, "?fail_on_no_slot=1 with every slot busy")
    else:
        check(False, "?fail_on_no_slot=1 never saw every slot busy")
    if seen:
        p, nt = seen["params"], seen["next_token"]
        check(p["n_predict"] == 400 and p["stream"] is True and p["top_k"] == 7 and
              p["ignore_eos"] is True and seen["id_task"] >= 0 and
              nt["n_remain"] == 400 - nt["n_decoded"] and nt["has_next_token"] is True,
              "the busy slot shows its request: %r" % seen)
    d.settle()
    st, _, raw = d.get("/slots?fail_on_no_slot=1")
    slots = json.loads(raw)
    check(st == 200 and not any(s["is_processing"] for s in slots), "idle again: %r" % slots)


def test_apply_template(d):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    st, _, js = d.post("/apply-template", {"messages": msgs})
    check(st == 200 and isinstance(js.get("prompt"), str) and "Hi" in js["prompt"],
          "/apply-template: %d %r" % (st, js))
    st, _, chat = d.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 8,
                                                  "temperature": 0})
    ids = tokenize(d, js["prompt"], True)
    check(chat["usage"]["prompt_tokens"] == len(ids), "the chat runs the template's prompt: "
          "%d tokens vs %d" % (chat["usage"]["prompt_tokens"], len(ids)))
    st, _, nat = native(d, {"prompt": js["prompt"], "n_predict": 8})
    check(nat["content"] == chat["choices"][0]["message"]["content"],
          "/completion on the template's prompt answers as the chat: %r vs %r"
          % (nat["content"], chat["choices"][0]["message"]["content"]))
    st, _, e = d.post("/apply-template", {"prompt": "x"})
    llama_error(st, e, 400, "/apply-template without messages")


def test_errors(d):
    cases = [
        (b"{not json", "malformed JSON"),
        ({"n_predict": 4}, "no prompt"),
        ({"prompt": 5}, "a number prompt"),
        ({"prompt": []}, "an empty prompt"),
        ({"prompt": [1, 2.5]}, "a fraction token id"),
        ({"prompt": [1, {"x": 1}]}, "an object in a mixed prompt"),
        ({"prompt": [1, 100000]}, "a token id beyond the vocabulary"),
        ({"prompt": "x", "n_probs": 100}, "n_probs above 20"),
        ({"prompt": "x", "n_probs": "3"}, "n_probs a string"),
        ({"prompt": "x", "temperature": "hot"}, "temperature a string"),
        ({"prompt": "x", "stop": "nope" * 100}, "a too long stop"),
        ({"prompt": "x", "logit_bias": [["Hello", 1.0]]}, "a text logit_bias key"),
        ({"prompt": "x", "logit_bias": [[1]]}, "a logit_bias pair of one"),
        ({"prompt": "x", "post_sampling_probs": "yes"}, "post_sampling_probs a string"),
        ({"prompt": "x", "mirostat": 3}, "mirostat 3"),
        ({"prompt": "x", "samplers": ["top_k", "bogus"]}, "an unknown sampler"),
        ({"prompt": "x", "dry_sequence_breakers": []}, "no DRY breakers"),
        ({"prompt": "x", "xtc_probability": 2}, "xtc_probability above 1"),
        ({"prompt": "x", "grammar": "root ::= \"a"}, "a malformed GBNF grammar"),
        ({"prompt": "x", "return_tokens": "yes"}, "return_tokens a string"),
        ({"prompt": {"prompt_string": "x", "multimodal_data": ["AAAA"]}}, "multimodal data"),
    ]
    for body, what in cases:
        st, _, js = d.post("/completion", body)
        llama_error(st, js, 400, what)
    # a prompt the context cannot hold: llama-server's exceed_context_size_error with the
    # numbers its clients read (the OpenAI route keeps OpenAI's code)
    n_ctx = json.loads(d.get("/props")[2])["default_generation_settings"]["n_ctx"]
    long = [1] + [tokenize(d, " Lily", False)[0]] * n_ctx
    st, _, js = d.post("/completion", {"prompt": long, "n_predict": 4})
    e = (js or {}).get("error", {})
    check(st == 400 and e.get("type") == "exceed_context_size_error" and e.get("code") == 400 and
          e.get("n_prompt_tokens") == n_ctx + 1 and e.get("n_ctx") == n_ctx and
          "exceeds the available context size" in e.get("message", ""),
          "a prompt beyond the context: %d %r" % (st, js))
    st, _, js = d.post("/v1/completions", {"prompt": long, "max_tokens": 4})
    check(st == 400 and js["error"].get("code") == "context_length_exceeded",
          "/v1/completions keeps OpenAI's code: %d %r" % (st, js))
    # what llama-server's clients send and fusiond has no use for is ignored
    web_ui = {"prompt": PROMPT, "n_predict": 4, "cache_prompt": True, "samplers": "edkypmxt",
              "dynatemp_range": 0, "dynatemp_exponent": 1, "typical_p": 1, "xtc_probability": 0,
              "xtc_threshold": 0.1, "repeat_last_n": 64, "repeat_penalty": 1.0,
              "presence_penalty": 0, "frequency_penalty": 0, "dry_multiplier": 0,
              "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": -1,
              "max_tokens": -1, "timings_per_token": False, "id_slot": -1, "n_keep": 0,
              "t_max_prompt_ms": 500, "seed": -1, "lora": [], "grammar": "", "json_schema": {},
              "prompt_string": None, "mirostat": 0, "mirostat_tau": 5, "n_cmpl": 1}
    st, _, js = d.post("/completion", web_ui)
    check(st == 200 and js.get("tokens_predicted") == 4, "the web UI's fields: %d %r" % (st, js))
    # json_schema constrains the output as it does on /v1/completions
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 24, "json_schema": schema})
    want = oai_text(d, PROMPT, 24, json_schema=schema)["choices"][0]["text"]
    check(st == 200 and js["content"] == want and
          js["generation_settings"]["grammar"] != "", "json_schema: %r vs %r"
          % (js.get("content"), want))
    # a GBNF grammar: the answer is in its language, and the settings show the grammar
    g = "root ::= (\"yes\" | \"no\") \".\""
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 8, "grammar": g})
    check(st == 200 and js["content"] in ("yes.", "no.") and
          js["generation_settings"]["grammar"] == g, "grammar: %d %r" % (st, js))
    # the seed: a fixed one repeats, -1 is random (two answers at temperature 1 differ)
    b = {"prompt": PROMPT, "n_predict": 16, "temperature": 1.0, "top_k": 0, "top_p": 1,
         "min_p": 0}
    r1 = native(d, dict(b, seed=7))[2]["content"]
    r2 = native(d, dict(b, seed=7))[2]["content"]
    check(r1 == r2, "seed 7 repeats")
    rs = {native(d, dict(b, seed=-1))[2]["content"] for _ in range(4)}
    check(len(rs) > 1, "seed -1 is random: %r" % rs)


def breaker_ids(d, ids):
    """The ids whose text holds one of DRY's default sequence breakers."""
    out = set()
    for t in set(ids):
        st, _, js = d.post("/detokenize", {"tokens": [t]})
        if any(c in js["content"] for c in "\n:\"*"):
            out.add(t)
    return out


def test_llama_samplers(d):
    """llama.cpp's samplers: accepted on every generating endpoint, shown in the settings,
    and changing the answer as they should."""
    rep = "The cat sat on the mat. The cat sat on the mat. The cat"
    plain = native(d, {"prompt": rep, "n_predict": 48, "return_tokens": True})[2]
    st, _, dry = native(d, {"prompt": rep, "n_predict": 48, "return_tokens": True,
                            "dry_multiplier": 1000})
    check(st == 200 and dry["content"] != plain["content"], "DRY changes the greedy answer")
    # greedy repeats itself here; with DRY no generated token extends a repeat of 2 tokens
    # (allowed_length) that no breaker cuts
    ctx = tokenize(d, rep, True)
    def repeats(gen):
        x = ctx + gen
        brk = breaker_ids(d, x)
        bad = 0
        for t in range(len(ctx), len(x)):
            tri = x[t - 2:t + 1]
            if any(v in brk for v in tri):
                continue
            if any(x[e - 1:e + 2] == tri for e in range(1, t - 1)):
                bad += 1
        return bad
    check(repeats(plain["tokens"]) > 0, "the greedy answer repeats itself")
    check(repeats(dry["tokens"]) == 0, "DRY: no repeat extended: %r" % dry["content"])
    gs = dry["generation_settings"]
    check(gs["dry_multiplier"] == 1000 and gs["dry_base"] == 1.75 and
          gs["dry_allowed_length"] == 2 and gs["dry_penalty_last_n"] == -1 and
          gs["dry_sequence_breakers"] == ["\n", ":", "\"", "*"],
          "DRY's settings: %r" % {k: v for k, v in gs.items() if k.startswith("dry")})
    # dry_penalty_last_n 0 switches it off
    off = native(d, {"prompt": rep, "n_predict": 48, "dry_multiplier": 1000,
                     "dry_penalty_last_n": 0})[2]
    check(off["content"] == plain["content"], "dry_penalty_last_n 0: DRY off")
    # the OpenAI endpoints and /infill take the same fields
    want = oai_text(d, rep, 24)["choices"][0]["text"]
    got = oai_text(d, rep, 24, dry_multiplier=1000)["choices"][0]["text"]
    check(got != want, "DRY on /v1/completions: %r" % got)
    st, _, js = d.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "seed": 5,
        "typical_p": 0.9, "xtc_probability": 0.5, "xtc_threshold": 0.1, "top_n_sigma": 2,
        "dynatemp_range": 0.5, "dynatemp_exponent": 1.5, "mirostat": 0,
        "samplers": ["penalties", "dry", "top_k", "typ_p", "top_p", "min_p", "xtc",
                     "temperature"]})
    check(st == 200, "the samplers on /v1/chat/completions: %d %r" % (st, js))
    # (/infill: test_infill_server.py, on a model that has the fill-in-the-middle tokens)
    # a seed replays every sampler's draws (XTC's too)
    b = {"prompt": PROMPT, "n_predict": 24, "temperature": 1.0, "seed": 11,
         "xtc_probability": 0.5, "xtc_threshold": 0.1, "typical_p": 0.95,
         "dynatemp_range": 0.5, "samplers": "edkypmxt"}
    r1 = native(d, b)[2]
    r2 = native(d, b)[2]
    check(r1["content"] == r2["content"], "seed 11 repeats with XTC")
    check(r1["generation_settings"]["samplers"] ==
          ["penalties", "dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"] and
          r1["generation_settings"]["xtc_probability"] == 0.5,
          "the chain shown: %r" % r1["generation_settings"]["samplers"])
    for m in (1, 2):
        a = native(d, {"prompt": PROMPT, "n_predict": 16, "temperature": 1.0, "seed": 3,
                       "mirostat": m, "mirostat_tau": 3})[2]
        b2 = native(d, {"prompt": PROMPT, "n_predict": 16, "temperature": 1.0, "seed": 3,
                        "mirostat": m, "mirostat_tau": 3})[2]
        check(a["content"] == b2["content"] and a["generation_settings"]["mirostat"] == m,
              "mirostat %d repeats for a seed" % m)
    # post_sampling_probs: the probabilities after the chain (top_k 3: at most 3 survivors)
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 6, "temperature": 1.0, "seed": 2,
                           "top_k": 3, "top_p": 1, "min_p": 0, "n_probs": 5,
                           "post_sampling_probs": True})
    probs = js.get("completion_probabilities") or []
    ok = st == 200 and len(probs) == 6
    for p in probs:
        tops = p.get("top_probs") or []
        ps = [t["prob"] for t in tops]
        ok = ok and "logprob" not in p and 1 <= len(tops) <= 3 and ps == sorted(ps)[::-1]
        ok = ok and abs(sum(ps) - 1) < 1e-5 and p["id"] in [t["id"] for t in tops]
        ok = ok and any(abs(t["prob"] - p["prob"]) < 1e-9 for t in tops if t["id"] == p["id"])
    check(ok and js["generation_settings"]["post_sampling_probs"] is True,
          "post_sampling_probs: %r" % probs[:2])
    # greedy: the chosen token alone, probability 1
    st, _, js = native(d, {"prompt": PROMPT, "n_predict": 2, "n_probs": 3,
                           "post_sampling_probs": True})
    probs = js.get("completion_probabilities") or []
    check(st == 200 and all(p["prob"] == 1 and len(p["top_probs"]) == 1 for p in probs),
          "post_sampling_probs at temperature 0: %r" % probs)
    # /props shows the defaults as llama-server does
    st, _, raw = d.get("/props")
    dgs = json.loads(raw)["default_generation_settings"]["params"]
    check(dgs["typical_p"] == 1 and dgs["top_n_sigma"] == -1 and dgs["mirostat"] == 0 and
          dgs["mirostat_tau"] == 5 and abs(dgs["xtc_threshold"] - 0.1) < 1e-6 and
          dgs["dry_base"] == 1.75 and dgs["post_sampling_probs"] is False and
          dgs["samplers"][0] == "penalties", "the defaults in /props: %r" % dgs)


def main():
    with loopback.daemon(check, "fusiond exits 0", "--max-running", "4") as d:
        test_completion(d)
        test_tokenize(d)
        test_llama_samplers(d)
        test_stops(d)
        test_stream(d)
        test_props_slots(d)
        test_apply_template(d)
        test_errors(d)
        m = d.metrics()
        for ep in ("completion", "props", "slots", "apply_template"):
            check(any('endpoint="%s"' % ep in k for k in m), "the metrics label %s" % ep)
    with loopback.daemon(check, "fusiond exits 0 (--no-slots)", "--no-slots",
                         "--prefix-cache") as d:
        st, _, raw = d.get("/slots")
        llama_error(st, json.loads(raw), 501, "--no-slots: /slots")
        # n_predict 0 leaves the prompt in the prefix cache for the next request (llama.vim)
        long = PROMPT + ", there was a little girl named Lily. She loved to play outside"
        st, _, js = native(d, {"prompt": long, "n_predict": 0})
        check(st == 200 and js["timings"]["cache_n"] == 0, "a cold prompt: %r" % js)
        # a prompt-only request reuses the cache too (no logits of every row to compute)
        st, _, js = native(d, {"prompt": long, "n_predict": 0})
        check(st == 200 and js["timings"]["cache_n"] >= 16 and js["tokens_predicted"] == 0,
              "n_predict 0 again: from the prefix cache: %r" % js)
        # cache_prompt false: the whole prompt prefilled, the same answer
        a = native(d, {"prompt": long, "n_predict": 4, "temperature": 0})[2]
        b = native(d, {"prompt": long, "n_predict": 4, "temperature": 0,
                       "cache_prompt": False})[2]
        check(a["timings"]["cache_n"] >= 16 and b["timings"]["cache_n"] == 0 and
              b["timings"]["prompt_n"] == b["tokens_evaluated"] and a["content"] == b["content"],
              "cache_prompt false reuses nothing: %r then %r" % (a.get("timings"),
                                                                 b.get("timings")))
        st, _, js = native(d, {"prompt": long + " in the sun.", "n_predict": 4})
        check(st == 200 and js["timings"]["cache_n"] >= 16 and
              js["timings"]["prompt_n"] + js["timings"]["cache_n"] == js["tokens_evaluated"],
              "n_predict 0 warmed the prefix cache: %r" % js.get("timings"))
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("PASS: test_native_server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
