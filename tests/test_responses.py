#!/usr/bin/env python3
"""test_responses.py: proves OpenAI's Responses API (POST /v1/responses) end to end through
the real fusiond and stories260K: greedy output and token counts equal /v1/chat/completions'
for the same conversation (a string input, message items, instructions, developer and
assistant turns, content parts); the response object's shape and the request parameters it
echoes; max_output_tokens -> status incomplete; text.format json_object / json_schema equal the
chat answer and parse; logprobs; the stream's typed events in order with increasing
sequence numbers, deltas that add up to the whole answer and no [DONE]; the store
(previous_response_id continues a conversation as the chat endpoint would see it, GET,
input_items, DELETE, store false, LRU eviction under --responses-store); input_tokens counts
what create would prefill; the endpoint's
requests counted in fusiond_requests_total; a client leaving mid-stream cancels its request;
background responses (queued at once, then the same answer and usage as the foreground
request; streamed with created/queued/in_progress first, replayed and resumed from any
sequence number, live or stored; a client leaving does not stop one; cancel stops the
engine's work (a prefix of the full answer, the slot and KV freed) and is idempotent,
DELETE of a running one cancels it; a drain waits for one); truncation "auto" drops the
oldest turns exactly as far as the context needs (the same answer as chat on the kept
turns); the Conversations API (create with items and metadata, items listed, added, read and
deleted, metadata updated, DELETE) and a response in a conversation answering as chat does on
the conversation's items, which it then extends with its input and output;
every malformed request a 400 (or 404) naming the field; and function calling through a
stories260K copy with Qwen 2.5's template (calls whole and streamed, a named tool_choice,
function_call and function_call_output items sent back).
Usage: test_responses.py (python3 stdlib only)."""

import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)
    return cond


def resp(d, body):
    st, _, js = d.post("/v1/responses", body)
    return st, js


def chat(d, body):
    st, _, js = d.post("/v1/chat/completions", body)
    return st, js


def out_text(js):
    """The concatenated output_text of the message items (the SDKs' output_text)."""
    t = ""
    for it in js.get("output", []):
        if it.get("type") == "message":
            for p in it["content"]:
                if p["type"] == "output_text":
                    t += p["text"]
    return t


def events(d, body, path="/v1/responses"):
    """The (event name, data) pairs of a streamed answer; checks there is no [DONE]."""
    st, h, raw = d.request("POST", path, dict(body, stream=True))
    check(st == 200, "stream status %d %r" % (st, raw[:300]))
    check(h.get("content-type", "").startswith("text/event-stream"), "stream content type")
    out = []
    for block in raw.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        check("[DONE]" not in block, "a Responses stream ends without [DONE]")
        lines = block.split("\n")
        if not check(len(lines) == 2 and lines[0].startswith("event: ") and
                     lines[1].startswith("data: "), "frame %r" % block[:200]):
            continue
        data = json.loads(lines[1][6:])
        check(data.get("type") == lines[0][7:], "event name %s is its data's type %s" %
              (lines[0][7:], data.get("type")))
        out.append((lines[0][7:], data))
    return out


# ---- the same answer as the chat endpoint

CASES = [
    # (responses body part, chat messages)
    ({"input": "Once upon a time"}, [{"role": "user", "content": "Once upon a time"}]),
    ({"input": "Tell me a story", "instructions": "You are a storyteller."},
     [{"role": "system", "content": "You are a storyteller."},
      {"role": "user", "content": "Tell me a story"}]),
    ({"input": [{"role": "developer", "content": "Be brief."},
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": "Lily had a"},
                             {"type": "input_text", "text": "big dog."}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "The dog",
                                                   "annotations": []}]},
                {"role": "user", "content": "What next?"}]},
     [{"role": "developer", "content": "Be brief."},
      {"role": "user", "content": "Lily had a\nbig dog."},
      {"role": "assistant", "content": "The dog"},
      {"role": "user", "content": "What next?"}]),
]


def same_as_chat(d):
    for part, msgs in CASES:
        for mx in (24, None):
            b = dict(part, temperature=0)
            c = {"messages": msgs, "temperature": 0}
            if mx:
                b["max_output_tokens"] = mx
                c["max_tokens"] = mx
            st, r = resp(d, b)
            st2, ch = chat(d, c)
            if not check(st == 200 and st2 == 200, "status %d %d: %r" % (st, st2, r)):
                continue
            what = "%s max %s" % (json.dumps(part)[:60], mx)
            check(out_text(r) == ch["choices"][0]["message"]["content"],
                  what + ": text %r vs chat %r" % (out_text(r), ch["choices"][0]["message"]["content"]))
            u, cu = r["usage"], ch["usage"]
            check(u["input_tokens"] == cu["prompt_tokens"] and
                  u["output_tokens"] == cu["completion_tokens"] and
                  u["total_tokens"] == cu["total_tokens"] and
                  u["output_tokens_details"] == {"reasoning_tokens": 0} and
                  u["input_tokens_details"]["cached_tokens"] >= 0,
                  what + ": usage %r vs %r" % (u, cu))
            fin = ch["choices"][0]["finish_reason"]
            check((r["status"] == "completed") == (fin == "stop"),
                  what + ": status %s, chat finish %s" % (r["status"], fin))
            if fin == "length":
                check(r["status"] == "incomplete" and
                      r["incomplete_details"] == {"reason": "max_output_tokens"},
                      what + ": incomplete details %r" % r.get("incomplete_details"))
            else:
                check(r["incomplete_details"] is None, what + ": no incomplete details")
    # sampling extensions pass through as on the chat endpoint
    b = {"input": "Once upon a time", "temperature": 0.9, "seed": 7, "top_k": 20,
         "max_output_tokens": 16}
    st, r1 = resp(d, b)
    st2, r2 = resp(d, b)
    st3, ch = chat(d, {"messages": CASES[0][1], "temperature": 0.9, "seed": 7, "top_k": 20,
                       "max_tokens": 16})
    check(st == st2 == st3 == 200 and out_text(r1) == out_text(r2) ==
          ch["choices"][0]["message"]["content"], "seeded sampling repeats and equals chat")


def shapes(d):
    meta = {"k": "v", "n": "1"}
    b = {"model": d.model, "input": "Once upon a time", "instructions": "Be kind.",
         "max_output_tokens": 5, "temperature": 0, "top_p": 0.5, "metadata": meta,
         "user": "u1", "store": True, "parallel_tool_calls": False, "tool_choice": "none"}
    st, r = resp(d, b)
    if not check(st == 200, "shapes: %d %r" % (st, r)):
        return
    check(r["id"].startswith("resp_") and r["object"] == "response" and
          isinstance(r["created_at"], int) and abs(r["created_at"] - time.time()) < 600,
          "id, object, created_at: %r" % {k: r[k] for k in ("id", "object", "created_at")})
    check(r["model"] == d.model, "model %r" % r["model"])
    check(r["status"] == "incomplete" and r["error"] is None, "status %r" % r["status"])
    check(r["instructions"] == "Be kind." and r["max_output_tokens"] == 5 and
          r["temperature"] == 0 and r["top_p"] == 0.5 and r["metadata"] == meta and
          r["user"] == "u1" and r["store"] is True and r["parallel_tool_calls"] is False and
          r["tool_choice"] == "none" and r["tools"] == [] and
          r["previous_response_id"] is None and
          r["text"] == {"format": {"type": "text"}, "verbosity": "medium"} and
          r["truncation"] == "disabled", "echoed parameters: %r" % r)
    out = r["output"]
    check(len(out) == 1, "one output item")
    m = out[0]
    check(m["type"] == "message" and m["role"] == "assistant" and m["id"].startswith("msg_") and
          m["status"] == "incomplete" and len(m["content"]) == 1, "message item %r" % m)
    p = m["content"][0]
    check(p["type"] == "output_text" and p["annotations"] == [] and p["logprobs"] == [] and
          isinstance(p["text"], str), "output_text part %r" % p)
    check(r["usage"]["output_tokens"] == 5, "5 output tokens")
    # defaults echoed
    st, r = resp(d, {"input": "Hi", "max_output_tokens": 2})
    check(st == 200 and r["temperature"] == 1 and r["top_p"] == 1 and r["tool_choice"] == "auto"
          and r["parallel_tool_calls"] is True and r["metadata"] == {} and
          r["instructions"] is None and r["store"] is True, "defaults: %r" % r)
    # /responses is the same endpoint
    st, _, js = d.post("/responses", {"input": "Hi", "max_output_tokens": 2})
    check(st == 200 and js["object"] == "response", "/responses: %d" % st)


def formats(d):
    st, _, js = d.post("/tokenize", {"content": "}\" \n]", "add_special": False,
                                     "with_pieces": True})
    bias = {}
    for t in (js or {}).get("tokens", []):
        bias[str(t["id"])] = {"}": 10, "]": 10, '"': 5, " ": -8, "\n": -8}.get(t["piece"], 0)
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    fmts = [({"type": "json_object"}, {"type": "json_object"}),
            ({"type": "json_schema", "name": "p", "schema": schema, "strict": True},
             {"type": "json_schema", "json_schema": {"name": "p", "schema": schema,
                                                     "strict": True}})]
    done = 0
    for rf, cf in fmts:
        for seed in range(3):
            st, r = resp(d, {"input": "Who is Lily?", "text": {"format": rf}, "seed": seed,
                             "logit_bias": bias, "max_output_tokens": 96})
            st2, ch = chat(d, {"messages": [{"role": "user", "content": "Who is Lily?"}],
                               "response_format": cf, "seed": seed, "logit_bias": bias,
                               "max_tokens": 96})
            if not check(st == 200 and st2 == 200, "format %s: %d %r" % (rf["type"], st, r)):
                continue
            text = out_text(r)
            check(text == ch["choices"][0]["message"]["content"],
                  "format %s seed %d equals chat" % (rf["type"], seed))
            check(r["text"]["format"] == rf, "text.format echoed")
            if r["status"] == "completed":
                done += 1
                try:
                    v = json.loads(text)
                    check(isinstance(v, dict), "JSON object: %r" % text)
                    if rf["type"] == "json_schema":
                        check(set(v) == {"name", "age"} and type(v["age"]) is int,
                              "schema followed: %r" % v)
                except ValueError:
                    check(False, "not JSON: %r" % text)
    check(done >= 2, "only %d JSON answers finished" % done)


def logprobs(d):
    b = {"input": "Once upon a time", "max_output_tokens": 6, "temperature": 0,
         "top_logprobs": 3}
    st, r = resp(d, b)
    st2, ch = chat(d, {"messages": CASES[0][1], "max_tokens": 6, "temperature": 0,
                       "logprobs": True, "top_logprobs": 3})
    if not check(st == 200 and st2 == 200, "logprobs: %d %r" % (st, r)):
        return
    lp = r["output"][0]["content"][0]["logprobs"]
    clp = ch["choices"][0]["logprobs"]["content"]
    check(len(lp) == 6 and lp == clp, "logprobs equal chat's: %r vs %r" % (lp[:1], clp[:1]))
    check(all(len(t["top_logprobs"]) == 3 for t in lp), "3 top logprobs per token")
    st, r = resp(d, dict(b, top_logprobs=None, include=["message.output_text.logprobs"]))
    lp = r["output"][0]["content"][0]["logprobs"]
    check(st == 200 and len(lp) == 6 and all(t["top_logprobs"] == [] for t in lp),
          "include message.output_text.logprobs: %r" % lp[:1])


def streaming(d):
    for mx in (8, None):
        b = {"input": "Tell me a story", "instructions": "Be kind.", "temperature": 0,
             "top_logprobs": 1}
        if mx:
            b["max_output_tokens"] = mx
        st, whole = resp(d, b)
        evs = events(d, b)
        names = [n for n, _ in evs]
        seqs = [e["sequence_number"] for _, e in evs]
        check(seqs == list(range(len(seqs))), "sequence numbers 0, 1, ...: %r" % seqs)
        end = "response.incomplete" if whole["status"] == "incomplete" else "response.completed"
        n_delta = names.count("response.output_text.delta")
        want = ["response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added"] + ["response.output_text.delta"] * n_delta + \
               ["response.output_text.done", "response.content_part.done",
                "response.output_item.done", end]
        check(names == want, "event order %r" % names)
        text = "".join(e["delta"] for n, e in evs if n == "response.output_text.delta")
        check(text == out_text(whole), "deltas %r equal the whole answer %r" % (text, out_text(whole)))
        created = evs[0][1]["response"]
        check(created["status"] == "in_progress" and created["output"] == [] and
              created["id"].startswith("resp_") and created["usage"] is None,
              "response.created: %r" % created)
        item_id = evs[2][1]["item"]["id"]
        check(all(e.get("item_id", item_id) == item_id and e["output_index"] == 0
                  for _, e in evs[2:-1]), "one item id and output index")
        dn = dict(evs)
        check(dn["response.output_text.done"]["text"] == text, "output_text.done text")
        check(dn["response.content_part.done"]["part"]["text"] == text, "content_part.done")
        final = evs[-1][1]["response"]
        check(final["id"] == created["id"] and out_text(final) == text and
              final["status"] == whole["status"] and final["usage"] == whole["usage"] and
              final["output"][0]["id"] == item_id, "final response %r vs %r" % (final, whole))
        lps = [t for n, e in evs if n == "response.output_text.delta" for t in e["logprobs"]]
        check(lps == whole["output"][0]["content"][0]["logprobs"] and
              len(lps) == whole["usage"]["output_tokens"], "streamed logprobs")
        # the streamed response is stored as it ended
        st, _, got = d.get("/v1/responses/" + final["id"])
        check(st == 200 and json.loads(got)["output"] == final["output"], "streamed one stored")


def store(d):
    st, r1 = resp(d, {"input": "Lily and Ben", "max_output_tokens": 12, "temperature": 0,
                      "instructions": "Be short."})
    if not check(st == 200, "store: first %d" % st):
        return
    st, _, raw = d.get("/v1/responses/" + r1["id"])
    check(st == 200 and json.loads(raw) == r1, "GET returns the response")
    st, _, raw = d.get("/v1/responses/" + r1["id"] + "/input_items?order=asc")
    items = json.loads(raw)
    check(st == 200 and items["object"] == "list" and len(items["data"]) == 1 and
          items["data"][0]["role"] == "user" and items["data"][0]["id"] and
          items["data"][0]["content"] == [{"type": "input_text", "text": "Lily and Ben"}] and
          items["has_more"] is False, "input_items %r" % items)
    # the continuation sees the first turn (not its instructions, as OpenAI)
    st, r2 = resp(d, {"input": [{"role": "user", "content": "And then?"}],
                      "previous_response_id": r1["id"], "max_output_tokens": 12,
                      "temperature": 0})
    st2, ch = chat(d, {"messages": [{"role": "user", "content": "Lily and Ben"},
                                    {"role": "assistant", "content": out_text(r1)},
                                    {"role": "user", "content": "And then?"}],
                       "max_tokens": 12, "temperature": 0})
    if check(st == 200 and st2 == 200, "continuation %d %r" % (st, r2)):
        check(out_text(r2) == ch["choices"][0]["message"]["content"] and
              r2["usage"]["input_tokens"] == ch["usage"]["prompt_tokens"],
              "previous_response_id continues the conversation as chat sees it")
        check(r2["previous_response_id"] == r1["id"], "previous_response_id echoed")
        st, _, raw = d.get("/v1/responses/" + r2["id"] + "/input_items")
        items = json.loads(raw)["data"]
        check([i.get("role") for i in items] == ["user", "assistant", "user"][::-1],
              "input_items of the continuation, newest first: %r" % items)
        st, _, raw = d.get("/v1/responses/%s/input_items?order=asc&limit=2" % r2["id"])
        page = json.loads(raw)
        check(len(page["data"]) == 2 and page["has_more"] is True, "limit 2: %r" % page)
        st, _, raw = d.get("/v1/responses/%s/input_items?order=asc&after=%s" %
                           (r2["id"], page["last_id"]))
        rest = json.loads(raw)
        check(len(rest["data"]) == 1 and rest["data"][0]["role"] == "user" and
              not rest["has_more"], "after: %r" % rest)
    # store false keeps nothing
    st, r3 = resp(d, {"input": "x", "max_output_tokens": 2, "store": False})
    check(st == 200 and r3["store"] is False, "store false answer")
    st, _, raw = d.get("/v1/responses/" + r3["id"])
    check(st == 404, "store false: GET 404, got %d" % st)
    # DELETE
    st, _, raw = d.request("DELETE", "/v1/responses/" + r1["id"])
    js = json.loads(raw)
    check(st == 200 and js == {"id": r1["id"], "object": "response", "deleted": True},
          "DELETE %d %r" % (st, js))
    for method in ("GET", "DELETE"):
        st, _, raw = d.request(method, "/v1/responses/" + r1["id"])
        err = json.loads(raw).get("error", {})
        check(st == 404 and r1["id"] in err.get("message", ""), "%s after DELETE: %d %r" %
              (method, st, err))
    st, js = resp(d, {"input": "x", "previous_response_id": r1["id"]})
    err = (js or {}).get("error", {})
    check(st == 404 and err.get("param") == "previous_response_id" and
          err.get("code") == "previous_response_not_found",
          "deleted previous_response_id: %d %r" % (st, js))
    st, _, _ = d.get("/v1/responses/" + r2["id"] + "/bogus")
    check(st == 404, "unknown sub-route: %d" % st)
    st, h, _ = d.request("PUT", "/v1/responses/" + r2["id"])
    check(st == 405 and h.get("allow") == "GET, DELETE", "PUT: 405, Allow %r" % h.get("allow"))


BAD = [
    # (body, status, param)
    ({}, 400, "input"),
    ({"input": 5}, 400, "input"),
    ({"input": []}, 400, "input"),
    ({"input": [5]}, 400, "input[0]"),
    ({"input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
    ({"input": [{"role": "user"}]}, 400, "input[0].content"),
    ({"input": [{"role": "user", "content": 3}]}, 400, "input[0].content"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400,
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, 400,
     "input[0].content[0].text"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, 400, "input[0].type"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, 400,
     "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
     400, "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "call_id": "c"}]}, 400, "input[0].output"),
    ({"input": "x", "instructions": 5}, 400, "instructions"),
    ({"input": "x", "max_output_tokens": 0}, 400, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": "9"}, 400, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 100000}, 400, "max_output_tokens"),
    ({"input": "x", "temperature": 3}, 400, "temperature"),
    ({"input": "x", "top_p": "a"}, 400, "top_p"),
    ({"input": "x", "stream": "yes"}, 400, "stream"),
    ({"input": "x", "store": 1}, 400, "store"),
    ({"input": "x", "top_logprobs": 21}, 400, "top_logprobs"),
    ({"input": "x", "metadata": {"a": 1}}, 400, "metadata.a"),
    ({"input": "x", "metadata": []}, 400, "metadata"),
    ({"input": "x", "tools": {}}, 400, "tools"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
    ({"input": "x", "tools": [{"type": "function"}]}, 400, "tools[0].name"),
    ({"input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "tools[0]"),
    ({"input": "x", "tools": [{"type": "function", "name": "a b"}]}, 400, "tools[0].name"),
    ({"input": "x", "tool_choice": "maybe"}, 400, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, 400, "tool_choice.type"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, 400, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}}, 400,
     "text.format.name"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n",
                                        "schema": {"type": "object", "patternProperties": {}}}}},
     400, "text.format.schema"),
    ({"input": "x", "text": 5}, 400, "text"),
    ({"input": "x", "reasoning": {"summary": "auto"}}, 400, "reasoning"),
    ({"input": "x", "reasoning": {"effort": "max"}}, 400, "reasoning.effort"),
    ({"input": "x", "background": True, "store": False}, 400, "background"),
    ({"input": "x", "background": "yes"}, 400, "background"),
    ({"input": "x", "truncation": "sometimes"}, 400, "truncation"),
    ({"input": "x", "frobnicate": 1}, 400, "frobnicate"),
    ({"input": "x", "previous_response_id": 7}, 400, "previous_response_id"),
    ({"input": "x", "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
    ({"input": "x", "model": "gpt-9"}, 404, "model"),
]


def bad_requests(d):
    for body, status, param in BAD:
        st, js = resp(d, body)
        err = (js or {}).get("error", {})
        check(st == status and err.get("param") == param and err.get("message") and
              err.get("type") in ("invalid_request_error", "not_found_error"),
              "%s: want %d param %s, got %d %r" % (json.dumps(body)[:100], status, param, st, js))
    st, _, raw = d.request("POST", "/v1/responses", b"{not json")
    check(st == 400, "malformed JSON: %d" % st)
    # a stream that fails validation is a plain 400 too
    st, js = resp(d, {"input": 5, "stream": True})
    check(st == 400 and js["error"]["param"] == "input", "stream 400")


def input_tokens(d):
    for part, _ in CASES:
        st, r = resp(d, dict(part, max_output_tokens=1))
        st2, _, c = d.post("/v1/responses/input_tokens", part)
        check(st == st2 == 200 and c == {"object": "response.input_tokens",
                                         "input_tokens": r["usage"]["input_tokens"]},
              "input_tokens %r vs usage %r" % (c, r.get("usage")))
    # a prompt beyond the context (512) is counted, not refused
    st, _, c = d.post("/responses/input_tokens", {"input": "Once upon a time " * 200})
    check(st == 200 and c["input_tokens"] > 512, "input_tokens beyond the context: %d %r" % (st, c))
    st, _, c = d.post("/v1/responses/input_tokens", {"input": [{"role": "nobody"}]})
    check(st == 400 and c["error"]["param"] == "input[0].role", "input_tokens 400: %r" % c)


def metrics(d):
    before = d.metrics()
    key = 'fusiond_requests_total{endpoint="responses",status="%d"}'
    resp(d, {"input": "x", "max_output_tokens": 2})
    resp(d, {"input": 5})
    d.get("/v1/responses/resp_none")
    after = d.metrics()
    check(after.get(key % 200, 0) - before.get(key % 200, 0) == 1 and
          after.get(key % 400, 0) - before.get(key % 400, 0) == 1 and
          after.get(key % 404, 0) - before.get(key % 404, 0) == 1,
          "responses counted: %r" % {k: v for k, v in after.items() if "responses" in k})


def disconnect(d):
    before = d.settle()
    s, got, _ = open_stream(d, {"input": "Once upon a time", "stream": True, "ignore_eos": True,
                                "max_output_tokens": 400})
    s.close()
    check(b"response.output_text.delta" in got, "the stream began")
    m = d.settle()
    check(m.get("fusiond_requests_running") == 0 and m.get("fusiond_kv_cache_usage_ratio") == 0,
          "a client gone mid-stream: its request ends (running %s, kv %s)" %
          (m.get("fusiond_requests_running"), m.get("fusiond_kv_cache_usage_ratio")))
    key = 'fusiond_requests_finished_total{reason="cancel"}'
    gen = m["fusiond_generation_tokens_total"] - before["fusiond_generation_tokens_total"]
    check(m.get(key, 0) - before.get(key, 0) == 1 and gen < 400,
          "the request was cancelled after %d of 400 tokens" % gen)


def eviction():
    with loopback.daemon(check, "eviction daemon exit", "--responses-store", "2",
                         "--cors-origins", "*") as d:
        # a browser's DELETE is preflighted: the stored-response route allows it
        st, h, _ = d.request("OPTIONS", "/v1/responses/resp_x", headers={
            "Origin": "http://a.example", "Access-Control-Request-Method": "DELETE"})
        check(st == 204 and "DELETE" in h.get("access-control-allow-methods", ""),
              "DELETE preflight: %d %r" % (st, h.get("access-control-allow-methods")))
        ids = []
        for i in range(3):
            st, r = resp(d, {"input": "x%d" % i, "max_output_tokens": 2})
            ids.append(r["id"])
        # the first is the least recently used: gone; reading the second keeps it
        check(d.get("/v1/responses/" + ids[0])[0] == 404, "LRU: the oldest evicted")
        check(d.get("/v1/responses/" + ids[1])[0] == 200, "LRU: the second kept")
        st, r = resp(d, {"input": "x3", "max_output_tokens": 2})
        check(d.get("/v1/responses/" + ids[1])[0] == 200 and
              d.get("/v1/responses/" + ids[2])[0] == 404, "LRU: recently read kept")
    with loopback.daemon(check, "no-store daemon exit", "--responses-store", "0") as d:
        st, r = resp(d, {"input": "x", "max_output_tokens": 2})
        check(st == 200 and d.get("/v1/responses/" + r["id"])[0] == 404, "store of 0 keeps none")


# ---- background responses

def sse_events(raw):
    """(name, data) of each event frame of an SSE body (pings skipped)."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        lines = block.split("\n")
        out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


def wait_done(d, rid, timeout=30):
    """GET the response until it has ended; its last state."""
    deadline = time.time() + timeout
    while True:
        st, _, raw = d.get("/v1/responses/" + rid)
        js = json.loads(raw)
        if st != 200 or js["status"] not in ("queued", "in_progress") or time.time() > deadline:
            return st, js
        time.sleep(0.02)


def open_stream(d, body):
    """A raw POST /v1/responses stream on its own socket, read until the first text delta:
    (socket, bytes so far, the response id)."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", d.port), timeout=20)
    s.sendall((b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(data)) + data)
    got = b""
    while b"response.output_text.delta" not in got:
        b = s.recv(4096)
        if not b:
            break
        got += b
    i = got.find(b'"id":"resp_')
    rid = got[i + 6:got.index(b'"', i + 6)].decode() if i >= 0 else None
    return s, got, rid


def background(d):
    fg_body = {"input": "Once upon a time", "max_output_tokens": 40, "temperature": 0}
    st, fg = resp(d, fg_body)
    st2, bg = resp(d, dict(fg_body, background=True))
    if not check(st == st2 == 200, "background create: %d %r" % (st2, bg)):
        return
    check(bg["status"] in ("queued", "in_progress") and bg["background"] is True and
          bg["usage"] is None and bg["id"].startswith("resp_") and bg["store"] is True,
          "background create answers at once: %r" % bg)
    st, done = wait_done(d, bg["id"])
    check(st == 200 and done["status"] == fg["status"] and out_text(done) == out_text(fg) and
          done["usage"]["input_tokens"] == fg["usage"]["input_tokens"] and
          done["usage"]["output_tokens"] == fg["usage"]["output_tokens"] and
          done["background"] is True and done["id"] == bg["id"],
          "background result equals the foreground one: %r vs %r" % (done, fg))
    st, _, raw = d.get("/v1/responses/%s/input_items" % bg["id"])
    check(st == 200 and json.loads(raw)["data"][0]["content"][0]["text"] == "Once upon a time",
          "background input_items")
    # cancel: only background responses, idempotent once ended
    st, _, js = d.post("/v1/responses/%s/cancel" % bg["id"], None)
    check(st == 400 and js["error"]["type"] == "invalid_request_error" and
          js["error"]["message"] == "Cannot cancel a%s %s response." %
          ("n" if done["status"] == "incomplete" else "", done["status"]),
          "cancel of a background response that ended %s: %d %r" % (done["status"], st, js))
    st, _, js = d.post("/v1/responses/%s/cancel" % fg["id"], None)
    check(st == 400 and js["error"]["type"] == "invalid_request_error" and
          "synchronous" in js["error"]["message"], "cancel of a foreground response: %d %r" %
          (st, js))
    st, _, js = d.post("/v1/responses/resp_nope/cancel", None)
    check(st == 404 and "resp_nope" in js["error"]["message"], "cancel of an unknown id: %r" % js)
    st, _, js = d.post("/v1/responses/%s" % fg["id"], None)
    check(st == 404, "POST on a response (not /cancel): %d" % st)
    st, _, raw = d.get("/v1/responses/%s?stream=true" % fg["id"])
    check(st == 400 and json.loads(raw)["error"]["param"] == "stream",
          "a foreground response cannot be streamed again: %d %r" % (st, raw))
    st, _, raw = d.get("/v1/responses/%s?stream=true" % bg["id"])
    check(st == 400, "a background response made without stream cannot be streamed: %d" % st)

    # streamed: created and queued first, then as the foreground stream; replayed as sent
    st, h, raw = d.request("POST", "/v1/responses", dict(fg_body, background=True, stream=True))
    evs = sse_events(raw)
    names = [n for n, _ in evs]
    check(st == 200 and names[:3] == ["response.created", "response.queued",
                                      "response.in_progress"] and
          names[-1] == "response." + fg["status"] and
          [e["sequence_number"] for _, e in evs] == list(range(len(evs))),
          "background stream events %r" % names)
    check(evs[0][1]["response"]["status"] == "queued" and
          evs[0][1]["response"]["background"] is True, "created: queued")
    final = evs[-1][1]["response"]
    check(out_text(final) == out_text(fg) and
          "".join(e["delta"] for n, e in evs if n == "response.output_text.delta") ==
          out_text(fg), "background stream text equals the foreground answer")
    rid = final["id"]
    st, _, again = d.get("/v1/responses/%s?stream=true" % rid)
    check(st == 200 and again == raw, "the stored stream replays as sent")
    k = len(evs) // 2
    st, h, tail = d.get("/v1/responses/%s?stream=true&starting_after=%d" % (rid, k))
    check(st == 200 and h.get("content-type", "").startswith("text/event-stream") and
          sse_events(tail) == evs[k + 1:], "starting_after %d replays the rest" % k)
    st, _, tail = d.get("/v1/responses/%s?stream=true&starting_after=%d" % (rid, len(evs) - 1))
    check(st == 200 and tail == b"", "starting_after the last event: nothing more")
    for q, param in (("stream=true&starting_after=%d" % len(evs), "starting_after"),
                     ("stream=true&starting_after=-2", "starting_after"),
                     ("stream=true&starting_after=x", "starting_after"),
                     ("starting_after=1", "starting_after"), ("stream=maybe", "stream")):
        st, _, raw = d.get("/v1/responses/%s?%s" % (rid, q))
        err = json.loads(raw).get("error", {})
        check(st == 400 and err.get("param") == param, "?%s: %d %r" % (q, st, err))

    # a client that leaves does not stop it; a reader resumes it live (or from the store)
    long_body = {"input": "Once upon a time", "max_output_tokens": 450, "ignore_eos": True,
                 "temperature": 0}
    st, full = resp(d, long_body)
    s, got, rid = open_stream(d, dict(long_body, background=True, stream=True))
    s.close()
    check(rid is not None, "background stream id")
    st, _, raw = d.get("/v1/responses/%s?stream=true&starting_after=4" % rid)
    evs = sse_events(raw)
    check(st == 200 and [e["sequence_number"] for _, e in evs] ==
          list(range(5, 5 + len(evs))) and evs and evs[-1][0] == "response.incomplete" and
          out_text(evs[-1][1]["response"]) == out_text(full),
          "resumed after 4: the rest, to the end (%d events)" % len(evs))
    st, done = wait_done(d, rid)
    check(done["usage"]["output_tokens"] == 450 and out_text(done) == out_text(full),
          "a background job runs on without its client: %r" % done.get("usage"))
    # while it runs, GET shows the text so far: a prefix of the whole answer
    st, bg = resp(d, dict(long_body, background=True))
    seen = []
    while True:
        st, _, raw = d.get("/v1/responses/" + bg["id"])
        g = json.loads(raw)
        if g["status"] not in ("queued", "in_progress"):
            break
        seen.append((g["status"], out_text(g), g["usage"]))
    check(all(full_text.startswith(t) and u is None and
              (t == "" or sg == "in_progress") for sg, t, u in seen
              for full_text in [out_text(full)]) and out_text(g) == out_text(full),
          "GET while running: statuses and texts so far %r" % [(a, len(b)) for a, b, _ in seen])

    # cancel mid-generation: the engine stops, what was written is kept
    before = d.settle()
    s, got, rid = open_stream(d, dict(long_body, background=True, stream=True))
    st, _, c1 = d.post("/v1/responses/%s/cancel" % rid, None)
    while b"response.cancelled" not in got:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    check(st == 200 and c1["status"] == "cancelled" and c1["id"] == rid and
          c1["output"][0]["status"] == "incomplete",
          "cancel answers the cancelled response: %d %r" % (st, c1))
    check(b"event: response.cancelled" in got, "the stream ends with response.cancelled")
    m = d.settle()
    st, _, raw = d.get("/slots")
    check(m.get("fusiond_requests_running") == 0 and m.get("fusiond_kv_cache_usage_ratio") == 0
          and not any(x["is_processing"] for x in json.loads(raw)),
          "cancel frees the engine's slot and KV")
    st, g = wait_done(d, rid)
    n = g.get("usage", {}).get("output_tokens", 450)
    key = 'fusiond_requests_finished_total{reason="cancel"}'
    check(g["status"] == "cancelled" and n < 450 and
          m.get(key, 0) - before.get(key, 0) == 1 and
          out_text(full).startswith(out_text(g)) and
          m["fusiond_generation_tokens_total"] - before["fusiond_generation_tokens_total"] < 450,
          "cancel stops generation after %d of 450 tokens: %r" % (n, g.get("status")))
    check(out_text(c1) == out_text(g) and out_text(g), "the cancel's answer holds the text "
          "the response ended with (%d characters)" % len(out_text(g)))
    st, _, c2 = d.post("/v1/responses/%s/cancel" % rid, None)
    check(st == 200 and c2 == g, "cancel again: the same cancelled response")
    # DELETE of a running one cancels it and keeps nothing
    st, bg = resp(d, dict(long_body, background=True))
    st, _, raw = d.request("DELETE", "/v1/responses/" + bg["id"])
    check(st == 200 and json.loads(raw)["deleted"] is True, "DELETE of a running response")
    m = d.settle()
    check(m.get("fusiond_requests_running") == 0 and
          d.get("/v1/responses/" + bg["id"])[0] == 404 and
          m.get(key, 0) - before.get(key, 0) == 2, "DELETE cancelled it and kept nothing")
    st, js = resp(d, {"input": "x", "previous_response_id": bg["id"]})
    check(st == 404, "a deleted background response cannot be continued: %d" % st)


def background_store_off():
    with loopback.daemon(check, "store-off daemon exit", "--responses-store", "0") as d:
        st, js = resp(d, {"input": "x", "background": True})
        check(st == 400 and js["error"]["param"] == "background",
              "background without a store: %d %r" % (st, js))
        st, _, js = d.post("/v1/conversations", {})
        check(st == 400 and "store" in js["error"]["message"],
              "conversations without a store: %d %r" % (st, js))


def background_drain():
    """SIGTERM with a background response running: the drain waits for it (exit 0); with a
    drain timeout of 0 it is cancelled mid-generation and the daemon still exits cleanly."""
    for args, what in (((), "waits for"), (("--drain-timeout", "0"), "cancels")):
        d = loopback.Daemon(*args)
        try:
            st, bg = resp(d, {"input": "Once upon a time", "background": True,
                              "ignore_eos": True, "max_output_tokens": 450})
            check(st == 200, "drain: background create")
            check(d.stop(timeout=30) == 0, "SIGTERM with a background response running: exit 0")
            log = d.logtext()
            check(b"draining, 1 request(s) running" in log and
                  (b"drain timeout" in log) == bool(args),
                  "the drain %s the background response" % what)
        finally:
            d.cleanup()


# ---- truncation "auto"

def truncation(d):
    turn = "Once upon a time there was a little girl named Lily who liked to play. "
    msgs = []
    for i in range(5):
        msgs.append({"role": "user", "content": "%d. %s" % (i, turn * 3)})
        msgs.append({"role": "assistant", "content": turn * 3})
    msgs.append({"role": "user", "content": "What next?"})
    b = {"input": msgs, "instructions": "Be brief.", "max_output_tokens": 100,
         "temperature": 0}
    st, js = resp(d, b)
    check(st == 400 and js["error"]["code"] == "context_length_exceeded",
          "truncation disabled: a conversation too long is refused: %d %r" % (st, js))
    st, r = resp(d, dict(b, truncation="auto"))
    if not check(st == 200 and r["truncation"] == "auto", "truncation auto: %d %r" % (st, r)):
        return
    # what should be kept, found independently: the fewest whole turns (from a user message)
    # whose prompt and max_output_tokens fit the 512 context
    keep = None
    for k in range(0, len(msgs), 2):
        st, _, c = d.post("/v1/responses/input_tokens", {"input": msgs[k:],
                                                         "instructions": "Be brief."})
        if c["input_tokens"] + 100 <= 512:
            keep = k
            break
    check(keep and keep > 0, "the conversation needs truncating")
    st2, ch = chat(d, {"messages": [{"role": "system", "content": "Be brief."}] + msgs[keep:],
                       "max_tokens": 100, "temperature": 0})
    check(st2 == 200 and r["usage"]["input_tokens"] == ch["usage"]["prompt_tokens"] and
          out_text(r) == ch["choices"][0]["message"]["content"],
          "truncation auto keeps the instructions and turns %d..: %r vs %r" %
          (keep, r["usage"], ch.get("usage")))
    st, _, c = d.post("/v1/responses/input_tokens", dict(b, truncation="auto"))
    check(c["input_tokens"] == r["usage"]["input_tokens"], "input_tokens counts the truncated "
          "prompt: %r" % c)
    # the input items keep the whole conversation
    st, _, raw = d.get("/v1/responses/%s/input_items?limit=100" % r["id"])
    check(len(json.loads(raw)["data"]) == len(msgs), "input_items keep every item")
    # even the last turn alone is too long: refused as before
    st, js = resp(d, {"input": "Once upon a time " * 200, "truncation": "auto"})
    check(st == 400 and js["error"]["code"] == "context_length_exceeded",
          "truncation auto cannot cut the last user message: %d %r" % (st, js))


# ---- conversations

def conversations(d):
    st, _, c = d.post("/v1/conversations", {"items": [{"role": "user", "content": "Lily had a dog."}],
                                            "metadata": {"k": "v"}})
    if not check(st == 200 and c["object"] == "conversation" and c["id"].startswith("conv_") and
                 c["metadata"] == {"k": "v"} and isinstance(c["created_at"], int),
                 "conversation create: %d %r" % (st, c)):
        return
    cid = c["id"]
    st, _, raw = d.get("/v1/conversations/" + cid)
    check(st == 200 and json.loads(raw) == c, "conversation GET")
    st, _, raw = d.get("/v1/conversations/%s/items" % cid)
    items = json.loads(raw)
    check(st == 200 and items["object"] == "list" and len(items["data"]) == 1 and
          items["data"][0]["content"] == [{"type": "input_text", "text": "Lily had a dog."}] and
          items["data"][0]["id"].startswith("msg_"), "conversation items %r" % items)
    # a response in it sees its items first, as chat would, and then extends it
    b = {"conversation": cid, "input": "What next?", "max_output_tokens": 8, "temperature": 0}
    st, r = resp(d, b)
    st2, ch = chat(d, {"messages": [{"role": "user", "content": "Lily had a dog."},
                                    {"role": "user", "content": "What next?"}],
                       "max_tokens": 8, "temperature": 0})
    if check(st == 200 and st2 == 200, "response in a conversation: %d %r" % (st, r)):
        check(r["conversation"] == {"id": cid} and
              r["usage"]["input_tokens"] == ch["usage"]["prompt_tokens"] and
              out_text(r) == ch["choices"][0]["message"]["content"],
              "a conversation's items come before the input: %r" % r["usage"])
    st, _, raw = d.get("/v1/conversations/%s/items?order=asc" % cid)
    got = json.loads(raw)["data"]
    check([(i["type"], i.get("role")) for i in got] ==
          [("message", "user"), ("message", "user"), ("message", "assistant")] and
          got[2]["id"] == r["output"][0]["id"] and out_text({"output": [got[2]]}) == out_text(r),
          "the response's input and output join the conversation: %r" % got)
    st, r2 = resp(d, dict(b, input="And then?", store=False))
    st2, ch = chat(d, {"messages": [{"role": "user", "content": "Lily had a dog."},
                                    {"role": "user", "content": "What next?"},
                                    {"role": "assistant", "content": out_text(r)},
                                    {"role": "user", "content": "And then?"}],
                       "max_tokens": 8, "temperature": 0})
    check(st == st2 == 200 and r2["usage"]["input_tokens"] == ch["usage"]["prompt_tokens"] and
          out_text(r2) == ch["choices"][0]["message"]["content"],
          "the next turn sees the whole conversation (store false too)")
    st, _, raw = d.get("/v1/conversations/%s/items?limit=2" % cid)
    page = json.loads(raw)
    check(len(page["data"]) == 2 and page["has_more"] is True and
          page["data"][0]["role"] == "assistant", "items newest first, limit: %r" % page)
    # a background response joins the conversation when it ends; a cancelled one does not
    st, bg = resp(d, dict(b, input="Then?", background=True))
    st, done = wait_done(d, bg["id"])
    st, _, raw = d.get("/v1/conversations/%s/items?limit=100" % cid)
    data = json.loads(raw)["data"]
    check(len(data) == 7 and data[0]["id"] == done["output"][0]["id"] and
          out_text({"output": [data[0]]}) == out_text(done),
          "a background response's items join the conversation at its end")
    st, bg = resp(d, dict(b, input="Later?", background=True, max_output_tokens=350,
                          ignore_eos=True))
    d.post("/v1/responses/%s/cancel" % bg["id"], None)
    st, g = wait_done(d, bg["id"])
    st, _, raw = d.get("/v1/conversations/%s/items?limit=100" % cid)
    check(g["status"] == "cancelled" and len(json.loads(raw)["data"]) == 7,
          "a cancelled one (%s) adds nothing" % g["status"])
    # items added, read, deleted; metadata updated
    st, _, a = d.post("/v1/conversations/%s/items" % cid,
                      {"items": [{"role": "user", "content": "x"},
                                 {"type": "function_call_output", "call_id": "c1",
                                  "output": "o"}]})
    check(st == 200 and a["object"] == "list" and len(a["data"]) == 2 and
          a["data"][1]["type"] == "function_call_output", "items added: %r" % a)
    iid = a["data"][0]["id"]
    st, _, raw = d.get("/v1/conversations/%s/items/%s" % (cid, iid))
    check(st == 200 and json.loads(raw) == a["data"][0], "item GET")
    st, _, raw = d.request("DELETE", "/v1/conversations/%s/items/%s" % (cid, iid))
    check(st == 200 and json.loads(raw)["id"] == cid, "item DELETE answers the conversation")
    check(d.get("/v1/conversations/%s/items/%s" % (cid, iid))[0] == 404, "deleted item: 404")
    st, _, raw = d.get("/v1/conversations/%s/items?limit=100" % cid)
    check(len(json.loads(raw)["data"]) == 8, "8 items left")
    st, _, u = d.post("/v1/conversations/" + cid, {"metadata": {"x": "y"}})
    check(st == 200 and u["metadata"] == {"x": "y"} and u["created_at"] == c["created_at"],
          "metadata updated: %r" % u)
    # malformed calls
    for path, body, status, param in (
            ("/v1/conversations", {"items": 5}, 400, "items"),
            ("/v1/conversations", {"items": [{"role": "robot", "content": "x"}]}, 400,
             "items[0].role"),
            ("/v1/conversations", {"items": [{"role": "user", "content": "x"}] * 21}, 400,
             "items"),
            ("/v1/conversations", {"metadata": {"a": 1}}, 400, "metadata.a"),
            ("/v1/conversations", {"frob": 1}, 400, "frob"),
            ("/v1/conversations/%s/items" % cid, {}, 400, "items"),
            ("/v1/conversations/conv_nope/items", {"items": []}, 404, None)):
        st, _, js = d.post(path, body)
        err = (js or {}).get("error", {})
        check(st == status and err.get("param") == param and err.get("message"),
              "%s %s: want %d %s, got %d %r" % (path, json.dumps(body)[:60], status, param, st, js))
    st, js = resp(d, dict(b, conversation="conv_nope"))
    check(st == 404 and js["error"]["param"] == "conversation", "unknown conversation: %r" % js)
    st, js = resp(d, dict(b, previous_response_id=r["id"]))
    check(st == 400 and js["error"]["param"] == "conversation", "with previous_response_id: %r" % js)
    st, h, _ = d.request("PUT", "/v1/conversations/" + cid)
    check(st == 405 and h.get("allow") == "GET, POST, DELETE", "PUT: 405 %r" % h.get("allow"))
    st, _, raw = d.request("DELETE", "/v1/conversations/" + cid)
    check(st == 200 and json.loads(raw) == {"id": cid, "object": "conversation.deleted",
                                            "deleted": True}, "conversation DELETE %r" % raw)
    check(d.get("/v1/conversations/" + cid)[0] == 404, "deleted conversation: 404")


# ---- function calling (a Qwen-template copy of stories260K, call text in rare tokens)

QWEN_CALL, NAMED_ARGS = 503, 507
TOKENS = {
    QWEN_CALL: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    NAMED_ARGS: '{"city": "Paris"}',
}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"type": "function", "name": "clock", "strict": False}]


def tools(model):
    shared = os.path.dirname(os.path.dirname(model))
    with open(os.path.join(shared, "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja"),
              encoding="utf-8") as f:
        tmpl = f.read()
    tmp = scratch_dir("fusiond-resp-")
    gguf = os.path.join(tmp, "qwen.gguf")
    gguf_rewrite(model, gguf, tmpl, 2048, TOKENS)
    with loopback.daemon(check, "tools daemon exit", model=gguf) as d:
        # one token: the call (the biased token would come again)
        b = {"input": "Weather?", "tools": TOOLS, "max_output_tokens": 1, "temperature": 0,
             "logit_bias": {str(QWEN_CALL): 100}}
        st, r = resp(d, b)
        if check(st == 200, "call: %d %r" % (st, r)):
            out = r["output"]
            check(len(out) == 1 and out[0]["type"] == "function_call" and
                  out[0]["name"] == "get_weather" and
                  json.loads(out[0]["arguments"]) == {"city": "Oslo"} and
                  out[0]["call_id"].startswith("call_") and out[0]["id"].startswith("fc_") and
                  out[0]["status"] == "completed", "function_call item %r" % out)
            check(r["tools"] == TOOLS, "tools echoed")
        # streamed
        evs = events(d, b)
        names = [n for n, _ in evs]
        check(names[:3] == ["response.created", "response.in_progress",
                            "response.output_item.added"] and
              names[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                             "response.incomplete"] and
              "response.output_text.delta" not in names, "call events %r" % names)
        args = "".join(e["delta"] for n, e in evs if n == "response.function_call_arguments.delta")
        dn = dict(evs)
        check(json.loads(args) == {"city": "Oslo"} and
              dn["response.function_call_arguments.done"]["arguments"] == args and
              dn["response.function_call_arguments.done"]["name"] == "get_weather" and
              dn["response.output_item.added"]["item"]["type"] == "function_call" and
              dn["response.output_item.added"]["item"]["name"] == "get_weather",
              "streamed arguments %r" % args)
        final = evs[-1][1]["response"]["output"]
        check(len(final) == 1 and final[0]["arguments"] == args and
              final[0]["call_id"] == dn["response.output_item.added"]["item"]["call_id"],
              "final output %r" % final)
        # named tool_choice: the arguments held to the schema
        st, r = resp(d, dict(b, tool_choice={"type": "function", "name": "get_weather"},
                             logit_bias={str(NAMED_ARGS): 100}, max_output_tokens=3))
        check(st == 200 and r["status"] == "completed", "named call: the model ends")
        check(st == 200 and r["output"][0]["type"] == "function_call" and
              json.loads(r["output"][0]["arguments"]) == {"city": "Paris"} and
              r["tool_choice"] == {"type": "function", "name": "get_weather"},
              "named tool_choice: %r" % r)
        # the call and its result sent back equal the chat history with tool_calls
        st, r = resp(d, dict(b, logit_bias=None, input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city": "Oslo"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"}],
            max_output_tokens=8))
        st2, ch = chat(d, {"messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}],
            "tools": [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
                      for t in TOOLS], "max_tokens": 8, "temperature": 0})
        check(st == 200 and st2 == 200 and
              r["usage"]["input_tokens"] == ch["usage"]["prompt_tokens"] and
              out_text(r) == (ch["choices"][0]["message"]["content"] or ""),
              "function_call items equal the chat history: %r / %r" % (r, ch))
        # a call continued through previous_response_id
        st, r1 = resp(d, b)
        call = r1["output"][0]
        st, r2 = resp(d, {"previous_response_id": r1["id"], "tools": TOOLS,
                          "max_output_tokens": 4, "temperature": 0,
                          "input": [{"type": "function_call_output", "call_id": call["call_id"],
                                     "output": "Rain"}]})
        check(st == 200 and r2["usage"]["input_tokens"] > r1["usage"]["input_tokens"],
              "function_call_output after previous_response_id: %d %r" % (st, r2))


def main():
    model = loopback.shared_model()
    with loopback.daemon(check, "daemon exit") as d:
        st, _, raw = d.get("/v1/models")
        d.model = json.loads(raw)["data"][0]["id"]
        for t in (same_as_chat, shapes, formats, logprobs, streaming, store, bad_requests,
                  input_tokens, metrics, disconnect, background, truncation, conversations):
            t(d)
    eviction()
    background_store_off()
    background_drain()
    tools(model)


main()
if FAILS:
    print("%d failures" % len(FAILS))
    sys.exit(1)
print("responses: all checks passed")
