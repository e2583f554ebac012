#!/usr/bin/env python3
"""test_server.py: proves the real fusiond over HTTP on loopback with stories260K:
completions, chat, streaming equal to whole answers, n=2, seeded reproducibility, stop
strings, logprobs, 16 parallel greedy streams equal to each alone, a client disconnect
cancelling its sequence, a full queue (503 + Retry-After), an oversized body (413), API keys,
OpenAI-shaped errors, a /metrics scrape that promtool accepts, and a daemon with the prefix
cache answering a 3-turn chat as one without it while reusing the conversation's KV.

Usage: test_server.py FUSIOND MODEL  (python3 standard library only)."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402

FUSIOND, MODEL = sys.argv[1], sys.argv[2]
FAILS = []


class Daemon(loopback.Daemon):
    """One fusiond on 127.0.0.1 with an OS-chosen port (tests/loopback.py), the binary and
    model from the command line; an unclean exit counts as a failure."""

    def __init__(self, *args):
        super().__init__(*args, fusiond=FUSIOND, model=MODEL)

    def stop(self):
        rc = super().stop(timeout=30)
        if rc != 0:
            FAILS.append("fusiond exited with %s:\n%s" % (rc, self.logtext().decode(errors="replace")[-3000:]))
        self.cleanup()

    def post(self, path, body, headers=None):
        st, h, out = self.request("POST", path, body, headers)
        try:
            js = json.loads(out)
        except ValueError:
            js = None
        return st, h, js, out

    def stream(self, path, body):
        """Returns (status, frames as parsed JSON, saw [DONE], ping count)."""
        c = self.conn()
        c.request("POST", path, body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read().decode()
        c.close()
        frames, done, pings = [], False, 0
        for block in raw.split("\n\n"):
            if not block:
                continue
            if block.startswith(":"):
                pings += 1
                continue
            assert block.startswith("data: "), block
            assert not done, "data after [DONE]"
            if block == "data: [DONE]":
                done = True
            else:
                frames.append(json.loads(block[6:]))
        return r.status, frames, done, pings

    def metric(self, series, headers=None):
        st, _, body = self.get("/metrics", headers)
        assert st == 200
        for line in body.decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return None


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


def test(fn):
    fn.is_test = True
    return fn


def stream_text(frames, index=0, chat=False):
    out = ""
    for f in frames:
        for c in f.get("choices", []):
            if c["index"] != index:
                continue
            piece = c["delta"].get("content") if chat else c.get("text")
            out += piece or ""
    return out


# ----------------------------------------------------------------------------- tests

@test
def completion(d):
    st, h, js, _ = d.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 24,
                                               "temperature": 0})
    check(st == 200, "completion status %s" % st)
    check(h.get("content-type") == "application/json", "completion content type")
    check(js["object"] == "text_completion" and js["id"].startswith("cmpl-"), "completion shape")
    ch = js["choices"][0]
    check(ch["index"] == 0 and isinstance(ch["text"], str) and len(ch["text"]) > 0, "text")
    check(ch["finish_reason"] in ("stop", "length") and ch["logprobs"] is None, "finish/logprobs")
    u = js["usage"]
    check(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], "usage sums")
    check(0 < u["completion_tokens"] <= 24, "completion tokens %s" % u["completion_tokens"])
    t = js["timings"]
    for k in ("queue_ms", "prompt_n", "prompt_ms", "ttft_ms", "predicted_n", "predicted_ms",
              "prompt_per_second", "predicted_per_second"):
        check(k in t, "timings.%s" % k)
    check(t["predicted_n"] == u["completion_tokens"], "timings.predicted_n == usage")
    # The same prompt as token ids gives the same text.
    st, _, tk, _ = d.post("/tokenize", {"content": "Once upon a time"})
    check(st == 200 and tk["count"] == len(tk["tokens"]) > 1, "tokenize")
    st, _, js2, _ = d.post("/v1/completions", {"prompt": tk["tokens"], "max_tokens": 24,
                                                "temperature": 0})
    check(st == 200 and js2["choices"][0]["text"] == ch["text"], "token-id prompt == text prompt")
    st, _, dt, _ = d.post("/detokenize", {"tokens": tk["tokens"]})
    check(st == 200 and dt["content"].strip() == "Once upon a time", "detokenize: %r" % dt)
    # echo puts the prompt in front.
    st, _, js3, _ = d.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 24,
                                                "temperature": 0, "echo": True})
    check(js3["choices"][0]["text"] == "Once upon a time" + ch["text"], "echo")


@test
def chat(d):
    body = {"messages": [{"role": "system", "content": "You tell stories."},
                         {"role": "user", "content": [{"type": "text", "text": "A story"}]}],
            "max_completion_tokens": 20, "temperature": 0}
    st, _, js, raw = d.post("/v1/chat/completions", body)
    check(st == 200, "chat status %s %s" % (st, raw[:200]))
    check(js["object"] == "chat.completion" and js["id"].startswith("chatcmpl-"), "chat shape")
    m = js["choices"][0]["message"]
    check(m["role"] == "assistant" and isinstance(m["content"], str), "chat message")
    body["stream"] = True
    st, frames, done, _ = d.stream("/v1/chat/completions", body)
    check(st == 200 and done, "chat stream")
    check(frames[0]["object"] == "chat.completion.chunk", "chunk object")
    check(frames[0]["choices"][0]["delta"].get("role") == "assistant", "first delta has the role")
    check(stream_text(frames, chat=True) == m["content"], "chat stream == chat whole")


@test
def streaming(d):
    body = {"prompt": "The cat", "max_tokens": 40, "temperature": 0}
    st, _, whole, _ = d.post("/v1/completions", body)
    body = dict(body, stream=True, stream_options={"include_usage": True})
    st, frames, done, _ = d.stream("/v1/completions", body)
    check(st == 200 and done, "stream ends with [DONE]")
    check(stream_text(frames) == whole["choices"][0]["text"], "streamed text == whole text")
    last = frames[-1]
    check(last["choices"] == [] and last["usage"] == whole["usage"], "include_usage final chunk")
    fin = [c["finish_reason"] for f in frames for c in f["choices"] if c.get("finish_reason")]
    check(fin == [whole["choices"][0]["finish_reason"]], "one finish_reason: %s" % fin)
    for f in frames[:-1]:
        for c in f["choices"]:
            c["text"].encode("utf-8")  # every chunk is whole UTF-8 (json decoded it)


@test
def n_and_seeds(d):
    st, _, js, _ = d.post("/v1/completions", {"prompt": "One day", "max_tokens": 16, "n": 2,
                                               "temperature": 0})
    ch = js["choices"]
    check(st == 200 and [c["index"] for c in ch] == [0, 1], "n=2 indexes")
    check(ch[0]["text"] == ch[1]["text"], "greedy choices agree")
    check(js["usage"]["completion_tokens"] == js["timings"]["predicted_n"],
          "usage counts both choices")
    body = {"prompt": "One day", "max_tokens": 30, "temperature": 1.0, "seed": 1234}
    a = d.post("/v1/completions", body)[2]["choices"][0]["text"]
    b = d.post("/v1/completions", body)[2]["choices"][0]["text"]
    check(a == b, "same seed, same text")
    texts = set(d.post("/v1/completions", dict(body, seed=s))[2]["choices"][0]["text"]
                for s in range(6))
    check(len(texts) > 1, "different seeds differ")
    st, _, js, _ = d.post("/v1/completions", dict(body, n=2))
    check(js["choices"][0]["text"] != js["choices"][1]["text"], "n=2 sampled choices differ")


@test
def stop_strings(d):
    body = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}
    full = d.post("/v1/completions", body)[2]["choices"][0]["text"]
    words = [w for w in re.findall(r"[A-Za-z]{3,}", full)]
    check(len(words) > 3, "enough text to cut: %r" % full)
    stop = words[len(words) // 2]
    cut = full[:full.index(stop)]
    js = d.post("/v1/completions", dict(body, stop=[stop, "zzzq"]))[2]
    check(js["choices"][0]["text"] == cut, "stop cuts at the first match: %r vs %r"
          % (js["choices"][0]["text"], cut))
    check(js["choices"][0]["finish_reason"] == "stop", "stop finish_reason")
    st, frames, done, _ = d.stream("/v1/completions", dict(body, stop=stop, stream=True))
    check(stream_text(frames) == cut, "streamed stop == whole stop")


@test
def logprobs(d):
    js = d.post("/v1/completions", {"prompt": "The dog", "max_tokens": 10, "temperature": 0,
                                     "logprobs": 3})[2]
    lp = js["choices"][0]["logprobs"]
    n = js["usage"]["completion_tokens"]
    check(len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n,
          "one logprob entry per token")
    for i in range(n):
        top = lp["top_logprobs"][i]
        check(0 < len(top) <= 3, "top has up to 3")
        check(lp["token_logprobs"][i] <= 0, "logprob <= 0")
        check(abs(max(top.values()) - lp["token_logprobs"][i]) < 1e-4,
              "greedy token is the best alternative")
    check("".join(lp["tokens"]) == js["choices"][0]["text"] or n == 0, "tokens spell the text")
    # logit_bias reaches the sampler: banning the greedy first token changes it.
    base = d.post("/tokenize", {"content": "The dog"})[2]["tokens"]
    full = d.post("/tokenize", {"content": "The dog" + lp["tokens"][0]})[2]["tokens"]
    if check(full[:len(base)] == base and len(full) == len(base) + 1,
             "the first token's id from tokenizing: %r %r" % (base, full)):
        js2 = d.post("/v1/completions", {"prompt": "The dog", "max_tokens": 1, "temperature": 0,
                                          "logprobs": 0, "logit_bias": {str(full[-1]): -100}})[2]
        check(js2["choices"][0]["logprobs"]["tokens"][0] != lp["tokens"][0],
              "logit_bias -100 bans the greedy token")
    js = d.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 5, "temperature": 0, "logprobs": True,
                                          "top_logprobs": 2})[2]
    content = js["choices"][0]["logprobs"]["content"]
    check(len(content) == js["usage"]["completion_tokens"], "chat logprobs per token")
    check(all(len(c["top_logprobs"]) == 2 and isinstance(c["bytes"], list) for c in content),
          "chat top_logprobs and bytes")


@test
def parallel_streams(d):
    prompts = ["Lily had a %s" % w for w in ("cat", "dog", "ball", "hat", "tree", "car", "toy",
                                             "box", "cup", "bird", "fish", "bed", "sun", "boat",
                                             "cake", "kite")]
    alone = [d.post("/v1/completions", {"prompt": p, "max_tokens": 48, "temperature": 0})[2]
             ["choices"][0]["text"] for p in prompts]
    out = [None] * len(prompts)

    def run(i):
        st, frames, done, _ = d.stream("/v1/completions", {"prompt": prompts[i], "max_tokens": 48,
                                                           "temperature": 0, "stream": True})
        out[i] = stream_text(frames) if st == 200 and done else None

    th = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for i in range(len(prompts)):
        check(out[i] == alone[i], "parallel stream %d == alone: %r vs %r" % (i, out[i], alone[i]))


@test
def errors(d):
    def err(st, js, want, param):
        ok = check(st == want, "status %s, want %s: %s" % (st, want, js))
        if ok and js:
            e = js["error"]
            check(set(e) >= {"message", "type", "param", "code"}, "error shape %s" % e)
            check(e["param"] == param, "param %r, want %r" % (e["param"], param))
        return js
    st, _, js, _ = d.post("/v1/completions", b'{"prompt": ')
    err(st, js, 400, None)
    st, _, js, _ = d.post("/v1/completions", {"prompt": "x", "max_tokens": "many"})
    err(st, js, 400, "max_tokens")
    st, _, js, _ = d.post("/v1/completions", {"prompt": "x", "top_p": 5})
    err(st, js, 400, "top_p")
    st, _, js, _ = d.post("/v1/completions", {"prompt": [1, 99999999]})
    err(st, js, 400, "prompt[1]")
    st, _, js, _ = d.post("/v1/completions", {"prompt": "x", "max_tokens": 100000})
    js = err(st, js, 400, "max_tokens")
    check(js and re.search(r"\d{3}", js["error"]["message"]), "context numbers in message")
    st, _, js, _ = d.post("/v1/completions", {"prompt": "x", "model": "no-such-model"})
    err(st, js, 404, "model")
    st, _, js, _ = d.post("/v1/chat/completions", {"messages": [{"role": "user"}]})
    err(st, js, 400, "messages[0].content")
    st, h, body = d.request("GET", "/v1/completions")
    check(st == 405 and h.get("allow") == "POST", "405 with Allow")
    st, h, body = d.request("GET", "/v2/nothing")
    check(st == 404 and json.loads(body)["error"]["type"], "404 route")
    st, _, js, _ = d.post("/v1/completions", {"prompt": "x", "weird_field": {"a": [1]}})
    check(st == 200, "unknown fields are ignored")


def json_valid_prefix(text):
    """Whether text is a prefix of some JSON document (a few closing tries suffice for what
    stories260K writes within max_tokens: an open string, number, literal or containers)."""
    stack = []
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}":
            if not stack or stack.pop() != ch:
                return False
    closer = "".join(reversed(stack))
    for mid in ("", '"', '0', 'e', 'rue', 'alse', 'ull', ':0', '":0', '\\"', '0":0'):
        for tail in ("", '"', ":0"):
            try:
                json.loads(text + mid + tail + closer)
                return True
            except ValueError:
                pass
    return False


@test
def json_mode(d):
    """response_format json_object on both endpoints, whole and streamed, n = 2: every
    answer that stops is a JSON object; one cut by max_tokens is a valid prefix."""
    stops = 0
    fmt = {"type": "json_object"}
    bias = {}
    st, _, js, _ = d.post("/tokenize", {"content": "}\"", "add_special": False,
                                        "with_pieces": True})
    # closing braces and quotes are favoured so that stories260K finishes some documents
    # within max_tokens; the constraint still bans them where they would be invalid
    for t in (js or {}).get("tokens", []):
        if t["piece"] in ("}", '"'):
            bias[str(t["id"])] = 10 if t["piece"] == "}" else 5
    check(len(bias) == 2, "tokens for } and \": %s" % js)
    for seed in range(6):
        for path, body in (("/v1/completions", {"prompt": "Once upon a time"}),
                           ("/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "Tell me a story"}]})):
            chat_ = "chat" in path
            req = dict(body, response_format=fmt, max_tokens=96, seed=seed, n=2,
                       logit_bias=bias, logprobs=(True if chat_ else 3))
            if chat_:
                req["top_logprobs"] = 3
            st, _, js, raw = d.post(path, req)
            if not check(st == 200, "%s json_object: %s %s" % (path, st, raw[:300])):
                continue
            for ch in js["choices"]:
                text = ch["message"]["content"] if chat_ else ch["text"]
                if ch["finish_reason"] == "stop":
                    stops += 1
                    try:
                        v = json.loads(text)
                        check(isinstance(v, dict), "%s: not an object: %r" % (path, text))
                    except ValueError:
                        check(False, "%s: not JSON: %r" % (path, text))
                else:
                    check(ch["finish_reason"] == "length" and json_valid_prefix(text),
                          "%s: %s, not a JSON prefix: %r" % (path, ch["finish_reason"], text))
                lp = ch["logprobs"]
                tops = [t["top_logprobs"] for t in lp["content"]] if chat_ else lp["top_logprobs"]
                check(all(len(t) >= 1 for t in tops), "top_logprobs present")
            sreq = dict(req, stream=True)
            st, frames, done, _ = d.stream(path, sreq)
            check(st == 200 and done, "%s json_object stream" % path)
            for i in range(2):
                check(stream_text(frames, i, chat_) ==
                      (js["choices"][i]["message"]["content"] if chat_ else js["choices"][i]["text"]),
                      "%s: streamed json_object equals the whole answer (seed %d)" % (path, seed))
    check(stops >= 4, "only %d json_object answers finished" % stops)


SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string"},
                         "mood": {"enum": ["happy", "sad"]},
                         "age": {"type": "integer"},
                         "pets": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
          "required": ["name", "mood"], "additionalProperties": False}


def schema_ok(v):
    """The validator for SCHEMA, written out."""
    if not isinstance(v, dict) or set(v) - set(SCHEMA["properties"]) or \
            not {"name", "mood"} <= set(v):
        return False
    if list(v) != [k for k in SCHEMA["properties"] if k in v]:
        return False  # fusiond writes properties in the schema's order
    return isinstance(v["name"], str) and v["mood"] in ("happy", "sad") and \
        (type(v.get("age", 0)) is int) and \
        isinstance(v.get("pets", []), list) and len(v.get("pets", [])) <= 2 and \
        all(isinstance(p, str) for p in v.get("pets", []))


@test
def json_schema_mode(d):
    """response_format json_schema on both endpoints, whole and streamed, n = 2: every
    answer that stops validates; one cut by max_tokens is a valid prefix."""
    st, _, js, _ = d.post("/tokenize", {"content": "}\" \n]", "add_special": False,
                                        "with_pieces": True})
    # as in json_mode: closers favoured, whitespace disfavoured, so stories260K finishes
    bias = {}
    for t in (js or {}).get("tokens", []):
        bias[str(t["id"])] = {"}": 10, "]": 10, '"': 5, " ": -8, "\n": -8}.get(t["piece"], 0)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True,
                                                  "schema": SCHEMA}}
    stops = 0
    for seed in range(4):
        for path, body in (("/v1/completions", {"prompt": "Once upon a time"}),
                           ("/v1/chat/completions",
                            {"messages": [{"role": "user", "content": "Who is Lily?"}]})):
            chat_ = "chat" in path
            req = dict(body, response_format=fmt, max_tokens=128, seed=seed, n=2,
                       logit_bias=bias)
            st, _, js, raw = d.post(path, req)
            if not check(st == 200, "%s json_schema: %s %s" % (path, st, raw[:300])):
                continue
            texts = []
            for ch in js["choices"]:
                text = ch["message"]["content"] if chat_ else ch["text"]
                texts.append(text)
                if ch["finish_reason"] == "stop":
                    stops += 1
                    try:
                        check(schema_ok(json.loads(text)), "%s: does not validate: %r" % (path, text))
                    except ValueError:
                        check(False, "%s: not JSON: %r" % (path, text))
                else:
                    check(ch["finish_reason"] == "length" and json_valid_prefix(text),
                          "%s: %s, not a JSON prefix: %r" % (path, ch["finish_reason"], text))
            st, frames, done, _ = d.stream(path, dict(req, stream=True))
            check(st == 200 and done, "%s json_schema stream" % path)
            for i in range(2):
                check(stream_text(frames, i, chat_) == texts[i],
                      "%s: streamed json_schema equals the whole answer (seed %d)" % (path, seed))
    check(stops >= 4, "only %d json_schema answers finished" % stops)


@test
def response_format_errors(d):
    def err(body, param, code=None, path="/v1/chat/completions"):
        base = {"messages": [{"role": "user", "content": "x"}]} if "chat" in path else {"prompt": "x"}
        st, _, js, raw = d.post(path, dict(base, **body))
        if check(st == 400, "response_format %s: status %s %s" % (body, st, raw[:200])):
            e = js["error"]
            check(e["param"] == param, "param %r, want %r" % (e["param"], param))
            check(code is None or e["code"] == code, "code %r, want %r" % (e["code"], code))
    err({"response_format": "json"}, "response_format")
    err({"response_format": {}}, "response_format.type")
    err({"response_format": {"type": 3}}, "response_format.type")
    err({"response_format": {"type": "yaml"}}, "response_format.type", "unsupported_value")
    err({"response_format": {"type": "yaml"}}, "response_format.type", path="/v1/completions")
    js_ = lambda **kw: {"response_format": {"type": "json_schema", "json_schema": kw}}
    err({"response_format": {"type": "json_schema"}}, "response_format.json_schema")
    err(js_(schema={"type": "object"}), "response_format.json_schema.name")
    err(js_(name="a b", schema={}), "response_format.json_schema.name")
    err(js_(name="x", schema="{}"), "response_format.json_schema.schema")
    err(js_(name="x", strict="yes", schema={}), "response_format.json_schema.strict")
    err(js_(name="x", schema={"type": "string", "maxLength": 5}),
        "response_format.json_schema.schema", "unsupported_parameter")
    err(js_(name="x", schema={"type": "string", "maxLength": 5}),
        "response_format.json_schema.schema", "unsupported_parameter", path="/v1/completions")
    err(js_(name="x", schema={"type": "strin"}), "response_format.json_schema.schema", None)
    st, _, js, _ = d.post("/v1/chat/completions", dict(js_(name="x", schema={"type": "object",
                                                       "properties": {"a": {"minimum": 1}}}),
                                                       messages=[{"role": "user", "content": "x"}]))
    check(st == 400 and "minimum" in js["error"]["message"] and
          "/properties/a" in js["error"]["message"], "the refusal names keyword and place: %s" % js)
    st, _, js, _ = d.post("/v1/completions", {"prompt": "x", "max_tokens": 2,
                                               "response_format": {"type": "text"}})
    check(st == 200, "response_format text is served")


@test
def models_and_health(d):
    st, _, body = d.get("/v1/models")
    js = json.loads(body)
    check(st == 200 and js["object"] == "list" and len(js["data"]) == 1, "models list")
    m = js["data"][0]
    check(m["fusiond"]["context_length"] > 0 and m["fusiond"]["backend"] == "cpu", "model info")
    st, _, _ = d.get("/v1/models/" + m["id"])
    check(st == 200, "model by id")
    st, _, body = d.get("/health")
    check(st == 200 and json.loads(body)["status"] == "ok", "health ok")


@test
def disconnect(d):
    # A long stream, read a little, hang up: the sequence must be cancelled at once.
    before = d.metric('fusiond_requests_finished_total{reason="cancel"}') or 0
    c = d.conn()
    c.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": "Once", "max_tokens": 400, "n": 8, "ignore_eos": True, "stream": True,
         "temperature": 1.0}).encode(), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    check(r.status == 200, "stream started")
    r.fp.readline()
    c.sock.close()
    c.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        if d.metric("fusiond_requests_running") == 0 and d.metric("fusiond_http_requests_in_flight") == 0:
            break
        time.sleep(0.02)
    check(d.metric("fusiond_requests_running") == 0, "running drops to 0 after the disconnect")
    after = d.metric('fusiond_requests_finished_total{reason="cancel"}')
    check(after - before >= 1, "sequences finished as cancelled (%s -> %s)" % (before, after))


@test
def promtool(d):
    st, h, body = d.get("/metrics")
    check(st == 200 and h["content-type"].startswith("text/plain"), "metrics content type")
    text = body.decode()
    for name in ("fusiond_time_to_first_token_seconds", "fusiond_inter_token_latency_seconds",
                 "fusiond_e2e_request_latency_seconds", "fusiond_request_queue_time_seconds",
                 "fusiond_request_prefill_time_seconds", "fusiond_request_decode_time_seconds",
                 "fusiond_step_seconds"):
        check("# TYPE %s histogram" % name in text, "histogram %s" % name)
    for name in ("fusiond_requests_running", "fusiond_requests_waiting",
                 "fusiond_kv_cache_usage_ratio", "fusiond_batch_size",
                 "fusiond_prompt_tokens_total", "fusiond_generation_tokens_total",
                 'fusiond_requests_total{endpoint="completions",status="200"}',
                 'fusiond_op_seconds_total{op="gemm"'):
        check(name in text, "series %s" % name)
    check(d.metric("fusiond_step_seconds_count") > 0, "steps observed")
    tool = shutil.which("promtool")
    if not check(tool is not None or os.environ.get("FUSIOND_REQUIRE_SHARED") != "1",
                 "promtool missing (Debian package prometheus)"):
        return
    if tool:
        p = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True)
        check(p.returncode == 0, "promtool check metrics: %s" % (p.stdout + p.stderr).decode())


def limits():
    """A second daemon: one running sequence, one waiting, a small body limit, API keys."""
    d = Daemon("--max-running", "1", "--max-waiting", "1", "--max-body-bytes", "1024",
               "--api-keys", "k-one,k-two")
    try:
        auth = {"Authorization": "Bearer k-one"}
        st, _, js, _ = d.post("/v1/completions", {"prompt": "x"})
        check(st == 401 and js["error"]["type"], "401 without a key")
        st, _, _, _ = d.post("/v1/completions", {"prompt": "x", "max_tokens": 2},
                             {"X-Api-Key": "k-two"})
        check(st == 200, "X-Api-Key accepted")
        st, _, _ = d.get("/health")
        check(st == 200, "/health needs no key")
        # (long choices: the first two must still hold their places when the third is
        # submitted, even on a loaded machine)
        st, h, js, _ = d.post("/v1/completions", {"prompt": "x", "n": 4, "max_tokens": 400},
                              auth)
        check(st == 503 and "retry-after" in h, "full queue: 503 + Retry-After (%s)" % st)
        big = {"prompt": "x" * 3000}
        st, _, js, _ = d.post("/v1/completions", big, auth)
        check(st == 413 and js["error"]["message"], "413 over the body limit")
        # The sequences admitted before the queue filled are cancelled at the engine's next
        # step; once they are gone the server takes work again.
        deadline = time.time() + 10
        while time.time() < deadline and (d.metric("fusiond_requests_running", auth) or
                                          d.metric("fusiond_requests_waiting", auth)):
            time.sleep(0.01)
        st, _, _, _ = d.post("/v1/completions", {"prompt": "x", "max_tokens": 2}, auth)
        check(st == 200, "served again after the 503s (%s)" % st)
    finally:
        d.stop()


def prefix_cache(plain):
    """A daemon with the prefix cache: a 3-turn chat answers as the plain daemon does, each
    turn reusing more of the conversation (usage.prompt_tokens_details.cached_tokens, the
    stream's usage chunk and /metrics agree); the plain daemon reports no details."""
    d = Daemon("--prefix-cache", "--prefix-cache-min", "4", "--max-running", "2")
    try:
        msgs = [{"role": "system", "content": "You tell stories."}]
        turns = ["Once upon a time", "Tell me about the cat.", "And then?"]
        last, total = -1, 0
        for i, text in enumerate(turns):
            msgs.append({"role": "user", "content": text})
            body = {"messages": msgs, "max_tokens": 16, "temperature": 0}
            st0, _, ref, _ = plain.post("/v1/chat/completions", body)
            check(st0 == 200 and "prompt_tokens_details" not in ref["usage"],
                  "no cached_tokens without the cache: %s" % ref.get("usage"))
            if i < 2:
                st, _, js, _ = d.post("/v1/chat/completions", body)
                check(st == 200, "cached chat turn %d: %s" % (i, st))
                answer = js["choices"][0]["message"]["content"]
                usage = js["usage"]
            else:
                body = dict(body, stream=True, stream_options={"include_usage": True})
                st, frames, done, _ = d.stream("/v1/chat/completions", body)
                check(st == 200 and done, "cached chat stream")
                answer = stream_text(frames, chat=True)
                usage = frames[-1]["usage"]
            ref_answer = ref["choices"][0]["message"]["content"]
            check(answer == ref_answer, "turn %d: cached %r, plain %r" % (i, answer, ref_answer))
            cached = usage["prompt_tokens_details"]["cached_tokens"]
            check(usage["prompt_tokens"] == ref["usage"]["prompt_tokens"], "turn %d prompt "
                  "tokens %s, plain %s" % (i, usage["prompt_tokens"], ref["usage"]["prompt_tokens"]))
            check(cached > last and cached < usage["prompt_tokens"],
                  "turn %d: cached_tokens %s after %s, of %s" % (i, cached, last,
                                                                usage["prompt_tokens"]))
            if i == 0:
                check(cached == 0, "first turn reuses nothing (%s)" % cached)
            print("  turn %d: prompt %d, cached %d" % (i, usage["prompt_tokens"], cached))
            last, total = cached, total + cached
            msgs.append({"role": "assistant", "content": answer})
        check(d.metric("fusiond_prefix_cache_hits_total") == 2, "2 cache hits")
        check(d.metric("fusiond_prefix_cache_cached_tokens_total") == total,
              "cached tokens metric %s, usage %s" %
              (d.metric("fusiond_prefix_cache_cached_tokens_total"), total))
        check(d.metric("fusiond_prefix_cache_slots") >= 1, "a cached slot")
        check(d.metric("fusiond_kv_cache_usage_ratio") == 0, "cached slots are not in use")
        check(plain.metric("fusiond_prefix_cache_hits_total") == 0, "no hits without the cache")
    finally:
        d.stop()


def main():
    d = Daemon()
    try:
        for name, fn in list(globals().items()):
            if getattr(fn, "is_test", False):
                t0 = time.time()
                try:
                    fn(d)
                except Exception as e:  # a crash in a test is a failure, not an abort
                    import traceback
                    traceback.print_exc()
                    FAILS.append("%s raised %r" % (name, e))
                print("%-20s %.2fs" % (name, time.time() - t0))
        t0 = time.time()
        prefix_cache(d)
        print("%-20s %.2fs" % ("prefix_cache", time.time() - t0))
    finally:
        d.stop()
    limits()
    if FAILS:
        print("\n%d failure(s):" % len(FAILS))
        for f in FAILS:
            print("  -", f)
        return 1
    print("all server tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
