#!/usr/bin/env python3
"""test_anthropic.py: proves Anthropic's Messages API (POST /v1/messages, /v1/messages/
count_tokens) end to end through the real fusiond and stories260K: greedy text, stop reason
and token counts equal /v1/chat/completions' for the same conversation (string and block
content, a system prompt as a string and as blocks, assistant turns); the message object's
shape; streamed events in Anthropic's order whose text deltas add up to the whole answer;
stop_sequences -> stop_reason stop_sequence naming it (whole and streamed); max_tokens ->
stop_reason max_tokens; count_tokens equals the prompt the message ran (input_tokens plus
cache_read_input_tokens, and the chat endpoint's prompt_tokens); errors in Anthropic's
shape with their types (400 naming the field, 404 model and path, 405, 401 without a key;
x-api-key and Bearer both accepted); the /messages alias; the endpoint counted in
fusiond_requests_total; and, through a stories260K copy with Qwen3's template (a few tokens
rewritten to hold a think block and a tool call, picked by logit_bias), thinking blocks
(whole and streamed, thinking disabled leaving none), tool_use (whole, streamed as
input_json_delta, a named tool_choice) and the round trip (tool_use and tool_result sent back
answer as the chat endpoint does on the same history with tool_calls and tool messages).
Usage: test_anthropic.py (python3 stdlib only)."""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []
KEY = "anthropic-test-key"
AUTH = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)
    return cond


def msg(d, body, path="/v1/messages", headers=AUTH):
    st, _, js = d.post(path, body, headers=headers)
    return st, js


def chat(d, body):
    st, _, js = d.post("/v1/chat/completions", body, headers={"Authorization": "Bearer " + KEY})
    return st, js


def text_of(m):
    return "".join(b["text"] for b in m["content"] if b["type"] == "text")


def events(d, body, path="/v1/messages"):
    """The (event name, data) pairs of a streamed answer, each frame checked."""
    st, h, raw = d.request("POST", path, dict(body, stream=True), headers=AUTH)
    check(st == 200, "stream status %d %r" % (st, raw[:300]))
    check(h.get("content-type", "").startswith("text/event-stream"), "stream content type")
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        lines = block.split("\n")
        if not check(len(lines) == 2 and lines[0].startswith("event: ") and
                     lines[1].startswith("data: "), "frame %r" % block[:200]):
            continue
        data = json.loads(lines[1][6:])
        check(data.get("type") == lines[0][7:], "event name %s is its data's type %s" %
              (lines[0][7:], data.get("type")))
        out.append((lines[0][7:], data))
    return out


def assemble(evs, what):
    """The message a stream describes (as the SDKs assemble it), checking the event order:
    message_start first, then blocks opened, filled and closed one at a time with increasing
    indexes, message_delta, message_stop last; pings anywhere."""
    names = [n for n, _ in evs if n != "ping"]
    if not check(names and names[0] == "message_start" and names[-2:] ==
                 ["message_delta", "message_stop"], what + ": event order %r" % names):
        return None
    m = dict(evs[0][1]["message"])
    check(m["content"] == [] and m["stop_reason"] is None, what + ": message_start %r" % m)
    blocks, open_idx = [], None
    for n, e in evs[1:]:
        if n == "content_block_start":
            check(open_idx is None and e["index"] == len(blocks), what + ": block start %r" % e)
            open_idx = e["index"]
            blocks.append(dict(e["content_block"]))
            if blocks[-1]["type"] == "tool_use":
                blocks[-1]["partial"] = ""
        elif n == "content_block_delta":
            check(e["index"] == open_idx, what + ": delta of the open block %r" % e)
            b, dl = blocks[-1], e["delta"]
            if dl["type"] == "text_delta":
                check(b["type"] == "text", what + ": text delta in a text block")
                b["text"] += dl["text"]
            elif dl["type"] == "thinking_delta":
                check(b["type"] == "thinking", what + ": thinking delta in a thinking block")
                b["thinking"] += dl["thinking"]
            elif dl["type"] == "input_json_delta":
                check(b["type"] == "tool_use", what + ": json delta in a tool_use block")
                b["partial"] += dl["partial_json"]
            else:
                check(False, what + ": delta type %r" % dl)
        elif n == "content_block_stop":
            check(e["index"] == open_idx, what + ": stop of the open block %r" % e)
            open_idx = None
        elif n == "message_delta":
            check(open_idx is None, what + ": blocks closed before message_delta")
            m.update(e["delta"])
            m["usage"] = dict(m["usage"], **e["usage"])
    for b in blocks:
        if b["type"] == "tool_use":
            b["input"] = json.loads(b.pop("partial") or "{}")
    m["content"] = blocks
    return m


# ---- the same answer as the chat endpoint

CASES = [
    # (messages body part, chat messages)
    ({"messages": [{"role": "user", "content": "Once upon a time"}]},
     [{"role": "user", "content": "Once upon a time"}]),
    ({"system": "You are a storyteller.", "messages": [{"role": "user", "content": "Tell me"}]},
     [{"role": "system", "content": "You are a storyteller."},
      {"role": "user", "content": "Tell me"}]),
    ({"system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
      "messages": [
          {"role": "user", "content": [{"type": "text", "text": "Lily had a"},
                                       {"type": "text", "text": "big dog.",
                                        "cache_control": {"type": "ephemeral"}}]},
          {"role": "assistant", "content": [{"type": "text", "text": "The dog"}]},
          {"role": "user", "content": "What next?"}]},
     [{"role": "system", "content": "Be brief.\nBe kind."},
      {"role": "user", "content": "Lily had a\nbig dog."},
      {"role": "assistant", "content": "The dog"},
      {"role": "user", "content": "What next?"}]),
]


def same_as_chat(d):
    for part, msgs in CASES:
        for mx in (24, 300):
            b = dict(part, model=d.model, max_tokens=mx, temperature=0)
            st, m = msg(d, b)
            st2, ch = chat(d, {"messages": msgs, "max_tokens": mx, "temperature": 0})
            what = "%s max %d" % (json.dumps(part)[:60], mx)
            if not check(st == 200 and st2 == 200, what + ": status %d %d: %r" % (st, st2, m)):
                continue
            c0 = ch["choices"][0]
            check(text_of(m) == c0["message"]["content"],
                  what + ": text %r vs chat %r" % (text_of(m), c0["message"]["content"]))
            u, cu = m["usage"], ch["usage"]
            check(u["input_tokens"] + u["cache_read_input_tokens"] == cu["prompt_tokens"] and
                  u["cache_creation_input_tokens"] == 0 and
                  u["output_tokens"] == cu["completion_tokens"],
                  what + ": usage %r vs %r" % (u, cu))
            want = {"stop": "end_turn", "length": "max_tokens"}[c0["finish_reason"]]
            check(m["stop_reason"] == want and m["stop_sequence"] is None,
                  what + ": stop_reason %s, chat finish %s" % (m["stop_reason"],
                                                              c0["finish_reason"]))
            check(m["id"].startswith("msg_") and m["type"] == "message" and
                  m["role"] == "assistant" and m["model"] == d.model and
                  all(bl["type"] == "text" for bl in m["content"]) and
                  len(m["content"]) == (1 if text_of(m) else 0),
                  what + ": message shape %r" % m)
            # streamed: the deltas add up to the whole answer
            sm = assemble(events(d, b), what + " streamed")
            if sm:
                check(text_of(sm) == text_of(m) and sm["stop_reason"] == m["stop_reason"] and
                      sm["usage"]["output_tokens"] == u["output_tokens"] and
                      sm["usage"]["input_tokens"] + sm["usage"]["cache_read_input_tokens"] ==
                      cu["prompt_tokens"] and sm["id"].startswith("msg_"),
                      what + ": streamed %r vs %r" % (sm, m))
            # count_tokens: the prompt this message ran
            st, n = msg(d, {k: v for k, v in b.items() if k in ("model", "system", "messages")},
                        "/v1/messages/count_tokens")
            check(st == 200 and n == {"input_tokens": cu["prompt_tokens"]},
                  what + ": count_tokens %r, prompt %d" % (n, cu["prompt_tokens"]))


def request_id(d):
    body = {"model": d.model, "max_tokens": 2, "messages": [{"role": "user", "content": "a"}]}
    for b in (body, dict(body, stream=True), dict(body, max_tokens=0)):
        st, h, raw = d.request("POST", "/v1/messages", b, headers=AUTH)
        check(h.get("request-id") and h.get("request-id") == h.get("x-request-id") and
              h["request-id"].startswith("msg_"), "request-id %r (%d)" % (h, st))
    st, h, raw = d.request("POST", "/v1/chat/completions", {"messages": [
        {"role": "user", "content": "a"}], "max_tokens": 1}, headers=AUTH)
    check("request-id" not in h, "no request-id header on the OpenAI routes %r" % h)


def stops(d):
    base = {"model": d.model, "messages": [{"role": "user", "content": "Once upon a time"}],
            "temperature": 0}
    st, m = msg(d, dict(base, max_tokens=40))
    full = text_of(m)
    words = full.split()
    if not check(st == 200 and len(words) > 4, "a long enough answer %r" % full):
        return
    word = words[len(words) // 2]
    cut = full[:full.index(word)]
    st, m = msg(d, dict(base, max_tokens=40, stop_sequences=["\u00a7never", word]))
    check(st == 200 and m["stop_reason"] == "stop_sequence" and m["stop_sequence"] == word and
          text_of(m) == cut, "stop_sequences: %r (want %r before %r)" % (m, cut, word))
    sm = assemble(events(d, dict(base, max_tokens=40, stop_sequences=[word])), "stop streamed")
    check(sm and sm["stop_reason"] == "stop_sequence" and sm["stop_sequence"] == word and
          text_of(sm) == cut, "stop_sequences streamed: %r" % sm)
    # max_tokens
    st, m = msg(d, dict(base, max_tokens=3))
    check(st == 200 and m["stop_reason"] == "max_tokens" and m["usage"]["output_tokens"] == 3,
          "max_tokens 3: %r" % m)
    sm = assemble(events(d, dict(base, max_tokens=3)), "max_tokens streamed")
    check(sm and sm["stop_reason"] == "max_tokens" and sm["usage"]["output_tokens"] == 3,
          "max_tokens streamed: %r" % sm)
    # the alias without /v1, and Bearer instead of x-api-key
    st, m2 = msg(d, dict(base, max_tokens=3), "/messages",
                 {"Authorization": "Bearer " + KEY})
    check(st == 200 and text_of(m2) == text_of(m), "/messages with Bearer: %d %r" % (st, m2))
    st, n = msg(d, {"model": d.model, "messages": base["messages"]}, "/messages/count_tokens")
    check(st == 200 and n["input_tokens"] == m["usage"]["input_tokens"] +
          m["usage"]["cache_read_input_tokens"], "/messages/count_tokens %r" % n)


def error_shape(st, js, status, etype, what, says=None):
    ok = check(st == status and isinstance(js, dict) and js.get("type") == "error" and
               set(js) == {"type", "error"} and js["error"].get("type") == etype and
               isinstance(js["error"].get("message"), str),
               what + ": %d %r (want %d %s)" % (st, js, status, etype))
    if ok and says:
        check(says in js["error"]["message"], what + ": message %r lacks %r" %
              (js["error"]["message"], says))


def errors(d):
    good = {"model": d.model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    bad = [
        ({k: v for k, v in good.items() if k != "max_tokens"}, "max_tokens: Field required"),
        (dict(good, max_tokens=0), "max_tokens"),
        (dict(good, messages=[]), "messages"),
        (dict(good, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}}]}]), "image blocks are not supported"),
        (dict(good, temperature=2), "temperature"),
        (dict(good, nope=1), "nope: Extra inputs are not permitted"),
        (dict(good, tools=[{"type": "bash_20250124", "name": "bash"}]), "tools.0.type"),
        (dict(good, stop_sequences=["s"] * 40), "stop_sequences"),
        (dict(good, messages=[{"role": "user", "content": "x"},
                              {"role": "assistant", "content": "pre\n"}]), "trailing whitespace"),
    ]
    for b, says in bad:
        st, js = msg(d, b)
        error_shape(st, js, 400, "invalid_request_error", "bad body %s" % json.dumps(b)[:80],
                    says)
    st, _, raw = d.request("POST", "/v1/messages", b"{\"model\": ", headers=AUTH)
    error_shape(st, json.loads(raw), 400, "invalid_request_error", "malformed JSON")
    st, js = msg(d, dict(good, model="claude-nope"))
    error_shape(st, js, 404, "not_found_error", "unknown model", "claude-nope")
    st, js = msg(d, {"model": "claude-nope", "messages": good["messages"]},
                 "/v1/messages/count_tokens")
    error_shape(st, js, 404, "not_found_error", "count_tokens unknown model")
    st, js = msg(d, dict(good, max_tokens=5000))
    error_shape(st, js, 400, "invalid_request_error", "beyond the context", "max_tokens")
    st, h, raw = d.request("GET", "/v1/messages", headers=AUTH)
    error_shape(st, json.loads(raw), 405, "invalid_request_error", "GET /v1/messages")
    check(h.get("allow") == "POST", "405 Allow %r" % h.get("allow"))
    st, h, raw = d.request("POST", "/v1/messages/batches", good, headers=AUTH)
    error_shape(st, json.loads(raw), 404, "not_found_error", "POST /v1/messages/batches")
    for hdr in ({}, {"x-api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
        st, js = msg(d, good, headers=hdr)
        error_shape(st, js, 401, "authentication_error", "key %r" % hdr)
    st, js = msg(d, dict(good, max_tokens=1, temperature=0))
    check(st == 200, "x-api-key accepted: %d" % st)
    # the chat endpoint keeps OpenAI's shape
    st, js = chat(d, {"messages": []})
    check(st == 400 and "type" not in js and "message" in js.get("error", {}),
          "chat errors keep OpenAI's shape: %r" % js)


def metrics(d):
    key = 'fusiond_requests_total{endpoint="messages",status="200"}'

    def value():
        st, _, body = d.get("/metrics", headers=AUTH)
        for line in body.decode().splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0

    before = value()
    msg(d, {"model": d.model, "max_tokens": 1, "messages": [{"role": "user", "content": "a"}]})
    msg(d, {"model": d.model, "messages": [{"role": "user", "content": "a"}]},
        "/v1/messages/count_tokens")
    after = value()
    check(after == before + 2, "%s: %s -> %s" % (key, before, after))


# ---- thinking and tool use through a Qwen3-template copy

THINK, CALL, NAMED_ARGS = 503, 482, 507
TOKENS = {
    THINK: "<think>\nStep one.\n\n</think>\n\nThe answer. ",
    CALL: "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n"
          "</tool_call>",
    NAMED_ARGS: "{\"city\": \"Paris\"}",
}
TOOLS = [{"name": "get_weather", "description": "Weather",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"name": "clock", "input_schema": {"type": "object"}}]


def qwen3(model):
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates", "Qwen-Qwen3-0.6B.jinja"),
              encoding="utf-8") as f:
        template = f.read()
    tmp = scratch_dir("fusiond-anthropic-")
    gguf = os.path.join(tmp, "qwen3.gguf")
    gguf_rewrite(model, gguf, template, 2048, TOKENS)
    with loopback.daemon(check, "qwen3 daemon exit", "--api-key", KEY, model=gguf) as d:
        st, _, raw = d.get("/v1/models", headers=AUTH)
        d.model = json.loads(raw)["data"][0]["id"]
        user = [{"role": "user", "content": "Weather?"}]
        base = {"model": d.model, "messages": user, "temperature": 0}
        # thinking: a thinking block before the text
        b = dict(base, max_tokens=1, logit_bias={str(THINK): 100})
        st, m = msg(d, b)
        check(st == 200 and [bl["type"] for bl in m["content"]] == ["thinking", "text"] and
              m["content"][0]["thinking"] == "Step one." and
              m["content"][0]["signature"] == "" and
              m["content"][1]["text"] == "The answer. " and m["stop_reason"] == "max_tokens",
              "thinking block: %r" % m)
        sm = assemble(events(d, b), "thinking streamed")
        check(sm and [bl["type"] for bl in sm["content"]] == ["thinking", "text"] and
              sm["content"][0]["thinking"] == "Step one." and
              sm["content"][1]["text"] == "The answer. ", "thinking streamed: %r" % sm)
        st, m = msg(d, dict(b, max_tokens=1500, stop_sequences=["answer"],
                            thinking={"type": "enabled", "budget_tokens": 1024}))
        check(st == 200 and [bl["type"] for bl in m["content"]] == ["thinking", "text"] and
              m["content"][1]["text"] == "The " and m["stop_reason"] == "stop_sequence" and
              m["stop_sequence"] == "answer", "thinking enabled: %r" % m)
        st, m = msg(d, dict(b, thinking={"type": "disabled"}))
        check(st == 200 and [bl["type"] for bl in m["content"]] == ["text"],
              "thinking disabled: no thinking block %r" % m)
        st, n1 = msg(d, {"model": d.model, "messages": user, "thinking": {"type": "disabled"}},
                     "/v1/messages/count_tokens")
        st2, n2 = msg(d, {"model": d.model, "messages": user}, "/v1/messages/count_tokens")
        check(st == 200 and st2 == 200 and n1["input_tokens"] > n2["input_tokens"],
              "thinking disabled closes an empty think block in the prompt: %r %r" % (n1, n2))

        # tool use
        b = dict(base, max_tokens=1, tools=TOOLS, logit_bias={str(CALL): 100})
        st, m = msg(d, b)
        call = m["content"][-1] if st == 200 and m["content"] else {}
        check(st == 200 and m["stop_reason"] == "tool_use" and len(m["content"]) == 1 and
              call.get("type") == "tool_use" and call.get("name") == "get_weather" and
              call.get("input") == {"city": "Oslo"} and call.get("id", "").startswith("call_"),
              "tool_use: %r" % m)
        sm = assemble(events(d, b), "tool_use streamed")
        check(sm and sm["stop_reason"] == "tool_use" and len(sm["content"]) == 1 and
              sm["content"][0]["type"] == "tool_use" and
              sm["content"][0]["name"] == "get_weather" and
              sm["content"][0]["input"] == {"city": "Oslo"}, "tool_use streamed: %r" % sm)
        # a named tool_choice: the arguments held to the schema, the call closed
        st, m = msg(d, dict(b, tool_choice={"type": "tool", "name": "get_weather"},
                            logit_bias={str(NAMED_ARGS): 100}, max_tokens=3))
        check(st == 200 and m["stop_reason"] == "tool_use" and
              m["content"][-1]["type"] == "tool_use" and
              m["content"][-1]["input"] == {"city": "Paris"}, "named tool_choice: %r" % m)
        # the round trip: tool_use and its tool_result sent back answer as chat does
        hist = user + [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1",
                                               "name": "get_weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                          "content": "Sunny"}]}]
        st, m = msg(d, dict(base, messages=hist, tools=TOOLS, max_tokens=8))
        st2, ch = chat(d, {"messages": user + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}],
            "tools": [{"type": "function", "function": {
                "name": t["name"], **({"description": t["description"]} if "description" in t
                                      else {}), "parameters": t["input_schema"]}} for t in TOOLS],
            "max_tokens": 8, "temperature": 0})
        check(st == 200 and st2 == 200 and
              m["usage"]["input_tokens"] + m["usage"]["cache_read_input_tokens"] ==
              ch["usage"]["prompt_tokens"] and
              text_of(m) == (ch["choices"][0]["message"]["content"] or ""),
              "tool_result round trip equals the chat history: %r / %r" % (m, ch))
        st, n = msg(d, {"model": d.model, "messages": hist, "tools": TOOLS},
                    "/v1/messages/count_tokens")
        check(st == 200 and n["input_tokens"] == ch["usage"]["prompt_tokens"],
              "count_tokens with tools: %r vs %d" % (n, ch["usage"]["prompt_tokens"]))


def main():
    model = loopback.shared_model()
    with loopback.daemon(check, "daemon exit", "--api-key", KEY) as d:
        st, _, raw = d.get("/v1/models", headers=AUTH)
        d.model = json.loads(raw)["data"][0]["id"]
        for t in (same_as_chat, stops, errors, metrics, request_id):
            t(d)
    qwen3(model)


main()
if FAILS:
    print("%d failures" % len(FAILS))
    sys.exit(1)
print("anthropic: all checks passed")
