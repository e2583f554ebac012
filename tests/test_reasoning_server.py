#!/usr/bin/env python3
"""test_reasoning_server.py: proves the reasoning output end to end through the real fusiond:
a copy of stories260K written with Qwen3's chat template (tests/data/chat-templates) is
served as the qwen3 format, and since a random model writes no think block, a few of its
tokens are rewritten to hold one and logit_bias picks them.  Checked whole and streamed
(the deltas adding up to the whole answer's fields, reasoning before content): the exact
split (reasoning trimmed, the content's leading whitespace dropped, a later "<think>" left in
the content), an unclosed block (all reasoning), an output without one (all content),
usage.completion_tokens_details.reasoning_tokens, logprobs and n > 1, tool calls after the
reasoning,
reasoning_format none per request and per server (and deepseek forcing the split under
another format), enable_thinking false (the prompt closes an empty block and the answer is
all content), /v1/completions untouched, history with reasoning_content, the 400s and
refused configuration values; and /v1/responses: the block as a reasoning item (whole and
streamed), and a reasoning item given back as input.  Usage: test_reasoning_server.py (python3 stdlib only)."""

import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []

# Token ids of stories260K (single rare characters) rewritten to carry reasoning text.
THINK, OPEN, PLAIN, CALL = 503, 507, 476, 482
TOKENS = {
    THINK: "<think>\nStep one.\n\n</think>\n\nThe answer. ",
    OPEN: "<think>\n Still thinking \n",
    PLAIN: "Plain text, no block.",
    CALL: "<think>\nI need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", "
          "\"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
USER = [{"role": "user", "content": "Why?"}]


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def body(bias, max_tokens=1, **kw):
    b = {"messages": USER, "max_tokens": max_tokens, "temperature": 0,
         "logit_bias": {str(bias): 100}}
    b.update(kw)
    return b


def chat(d, b):
    st, _, js = d.post("/v1/chat/completions", b)
    return st, js


def stream(d, b):
    """The chunks of a streamed answer, checked to end in [DONE]."""
    b = dict(b, stream=True, stream_options={"include_usage": True})
    st, _, raw = d.request("POST", "/v1/chat/completions", b)
    frames, done = sse_frames(raw)
    check(st == 200 and done, "stream: status %d, [DONE] %s" % (st, done))
    return frames


def assemble(frames):
    """reasoning, content, tool call text, finishes, usage; and whether every reasoning
    delta came before the first content delta."""
    reasoning, content, calls, finishes, usage, order = "", "", "", [], None, True
    for f in frames:
        if f.get("usage"):
            usage = f["usage"]
        for c in f.get("choices", []):
            dl = c.get("delta", {})
            if dl.get("reasoning_content"):
                order = order and content == ""
                reasoning += dl["reasoning_content"]
            content += dl.get("content") or ""
            for tc in dl.get("tool_calls") or []:
                calls += tc.get("function", {}).get("arguments", "")
            if c.get("finish_reason"):
                finishes.append(c["finish_reason"])
    return reasoning, content, calls, finishes, usage, order


def split_case(d, b, reasoning, content, n_reasoning, finish, what):
    """The whole answer and the streamed one both carry exactly this split."""
    st, js = chat(d, b)
    try:
        ch = js["choices"][0]
        msg = ch["message"]
        check(st == 200 and ch["finish_reason"] == finish,
              what + ": status %d finish %s" % (st, ch["finish_reason"]))
        check(msg.get("reasoning_content") == reasoning,
              what + ": reasoning_content %r, want %r" % (msg.get("reasoning_content"), reasoning))
        check(reasoning is not None or "reasoning_content" not in msg,
              what + ": no reasoning_content key without reasoning")
        check(msg["content"] == content, what + ": content %r, want %r" % (msg["content"], content))
        det = js["usage"].get("completion_tokens_details")
        want = None if n_reasoning is None else {"reasoning_tokens": n_reasoning}
        check(det == want, what + ": completion_tokens_details %r, want %r" % (det, want))
    except (KeyError, TypeError, IndexError) as e:
        check(False, "%s: malformed answer %r (%s)" % (what, js, e))
    r, c, _, finishes, usage, order = assemble(stream(d, b))
    check(r == (reasoning or "") and c == content,
          what + " streamed: reasoning %r content %r" % (r, c))
    check(order, what + " streamed: reasoning after content")
    check(finishes == [finish], what + " streamed: finishes %r" % finishes)
    det = (usage or {}).get("completion_tokens_details")
    check(det == (None if n_reasoning is None else {"reasoning_tokens": n_reasoning}),
          what + " streamed: usage %r" % usage)


def rs_body(bias, max_tokens=1, **kw):
    b = {"input": "Why?", "max_output_tokens": max_tokens, "temperature": 0,
         "logit_bias": {str(bias): 100}}
    b.update(kw)
    return b


def rs_events(raw):
    """The typed events of a /v1/responses stream, in order."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("event: "):
            head, data = block.split("\ndata: ", 1)
            ev = json.loads(data)
            check(ev["type"] == head[7:], "event line %r vs type %r" % (head, ev["type"]))
            out.append(ev)
    return out


def responses_cases(d):
    """/v1/responses: the think block is a reasoning item before the message, whole and
    streamed, counted in output_tokens_details; given back as input it is the assistant
    message's reasoning_content (the same prompt as the chat request with it)."""
    st, _, js = d.post("/v1/responses", rs_body(THINK))
    out = (js or {}).get("output", [])
    check(st == 200 and [o.get("type") for o in out] == ["reasoning", "message"],
          "responses: output items %r" % js)
    if len(out) == 2:
        check(out[0].get("content") == [{"type": "reasoning_text", "text": "Step one."}] and
              out[0].get("summary") == [] and out[0].get("status") == "completed" and
              out[0].get("id", "").startswith("rs_"), "responses: reasoning item %r" % out[0])
        check(out[1]["content"][0]["text"] == "The answer. ",
              "responses: message %r" % out[1])
    check(js["usage"]["output_tokens_details"]["reasoning_tokens"] == 1,
          "responses: reasoning_tokens %r" % js.get("usage"))
    st, _, js = d.post("/v1/responses", rs_body(PLAIN, 2))
    check(st == 200 and [o["type"] for o in js["output"]] == ["message"] and
          js["usage"]["output_tokens_details"]["reasoning_tokens"] == 0,
          "responses without a block: %r" % js)
    whole = d.post("/v1/responses", rs_body(THINK, 3))[2]
    # logprobs: the message's are its own 2 tokens' (the first token, which closed the block,
    # is the reasoning item's)
    st, _, js = d.post("/v1/responses", rs_body(THINK, 3, top_logprobs=1))
    lps = js["output"][-1]["content"][0]["logprobs"] if st == 200 else []
    check(st == 200 and len(lps) == 2 and all(t["token"] == TOKENS[THINK] for t in lps),
          "responses logprobs: %d entries %r" % (len(lps), lps))
    st, _, raw = d.request("POST", "/v1/responses", dict(rs_body(THINK, 3), stream=True))
    evs = rs_events(raw)
    deltas = "".join(e["delta"] for e in evs if e["type"] == "response.reasoning_text.delta")
    done = [e["text"] for e in evs if e["type"] == "response.reasoning_text.done"]
    added = [(e["output_index"], e["item"]["type"]) for e in evs
             if e["type"] == "response.output_item.added"]
    parts = [e["part"]["type"] for e in evs if e["type"] == "response.content_part.added"]
    final = evs[-1]["response"] if evs else {}
    check(st == 200 and deltas == "Step one." and done == ["Step one."] and
          added == [(0, "reasoning"), (1, "message")] and
          parts == ["reasoning_text", "output_text"] and
          [e["sequence_number"] for e in evs] == list(range(len(evs))),
          "responses streamed: deltas %r done %r added %r parts %r" % (deltas, done, added,
                                                                     parts))
    strip = [{k: v for k, v in o.items() if k != "id"} for o in whole.get("output", [])]
    check([{k: v for k, v in o.items() if k != "id"} for o in final.get("output", [])] == strip,
          "responses streamed: the final output %r vs whole %r" % (final.get("output"),
                                                                   whole.get("output")))
    # given back: a reasoning item before the call is that assistant turn's reasoning
    tools = [{"type": "function", "name": "get_weather",
              "parameters": TOOLS[0]["function"]["parameters"]}]
    call = {"type": "function_call", "call_id": "c1", "name": "get_weather",
            "arguments": "{\"city\": \"Oslo\"}"}
    back = [{"role": "user", "content": "Why?"},
            {"type": "reasoning", "summary": [],
             "content": [{"type": "reasoning_text", "text": "I need the weather."}]},
            call, {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    st, _, with_r = d.post("/v1/responses/input_tokens", {"input": back, "tools": tools})
    st2, _, without = d.post("/v1/responses/input_tokens",
                             {"input": [back[0]] + back[2:], "tools": tools})
    msgs = USER + [{"role": "assistant", "content": None,
                    "reasoning_content": "I need the weather.",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {
                        "name": "get_weather", "arguments": call["arguments"]}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    st3, js = chat(d, body(PLAIN, messages=msgs, tools=TOOLS))
    check(st == 200 and st2 == 200 and st3 == 200 and
          with_r.get("input_tokens") == js["usage"]["prompt_tokens"] and
          without.get("input_tokens", 0) < with_r.get("input_tokens", 0),
          "a reasoning item given back: %r tokens, chat %r, without it %r"
          % (with_r, js.get("usage"), without))
    for item, param in (({"type": "reasoning", "summary": [], "encrypted_content": "x"},
                         "input[1].encrypted_content"),
                        ({"type": "reasoning"}, "input[1].summary"),
                        ({"type": "reasoning", "summary": [],
                          "content": [{"type": "output_text", "text": "x"}]},
                         "input[1].content[0]")):
        st, _, js = d.post("/v1/responses", {"input": [back[0], item]})
        check(st == 400 and js["error"]["param"] == param,
              "a bad reasoning item: want 400 %s, got %d %r" % (param, st, js))


def error(d, b, param, what):
    st, js = chat(d, b)
    err = (js or {}).get("error", {})
    check(st == 400 and err.get("param") == param and err.get("type") == "invalid_request_error",
          "%s: want 400 param %s, got %d %r" % (what, param, st, js))


def bad_config(args, what, conf="/dev/null"):
    """fusiond refuses the value at configuration load (exit 1, the option named)."""
    p = subprocess.run([loopback.fusiond_path(), "--config=" + conf, "--test-config"] + args,
                       capture_output=True, timeout=60)
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 1 and "reasoning_format" in err.replace("-", "_") and
          "not one of auto, none, deepseek" in err, "%s: exit %d %r" % (what, p.returncode, err))


def main():
    model = loopback.shared_model()
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates", "Qwen-Qwen3-0.6B.jinja"),
              encoding="utf-8") as f:
        template = f.read()
    tmp = scratch_dir("fusiond-reason-")
    gguf = os.path.join(tmp, "qwen3-think.gguf")
    gguf_rewrite(model, gguf, template, 2048, TOKENS)

    bad_config(["--reasoning-format=deepseek-legacy"], "--reasoning-format deepseek-legacy")
    bad_config(["--reasoning-format="], "--reasoning-format empty")
    conf = os.path.join(tmp, "bad.conf")
    with open(conf, "w") as f:
        f.write("reasoning_format = DeepSeek\n")
    bad_config([], "reasoning_format in the file", conf)
    os.unlink(conf)

    with loopback.daemon(check, "qwen3 daemon exit", model=gguf) as d:
        check(b"qwen3" in d.logtext(), "the Qwen3 template is detected")
        after = "The answer. "
        split_case(d, body(THINK), "Step one.", after, 1, "length", "one closed block")
        # a block only at the start: later ones are content
        split_case(d, body(THINK, 3), "Step one.", after + 2 * (TOKENS[THINK]), 1, "length",
                   "a closed block, then more")
        split_case(d, body(OPEN, 3), "Still thinking \n" + TOKENS[OPEN] + TOKENS[OPEN].rstrip(),
                   "", 3, "length", "an unclosed block")
        split_case(d, body(PLAIN, 2), None, TOKENS[PLAIN] * 2, 0, "length", "no block")
        # logprobs cover every token, the think block's too, streamed (each with its chunk)
        # or whole; n = 2 splits each choice on its own
        st, js = chat(d, body(THINK, 3, logprobs=True, n=2))
        check(st == 200 and len(js["choices"]) == 2 and
              all(len(c["logprobs"]["content"]) == 3 and
                  c["message"].get("reasoning_content") == "Step one." for c in js["choices"]) and
              js["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2},
              "logprobs and n=2: %r" % js)
        frames = stream(d, body(THINK, 3, logprobs=True))
        n_lp = sum(len((c.get("logprobs") or {}).get("content") or [])
                   for f in frames for c in f.get("choices", []))
        check(n_lp == 3 and assemble(frames)[0] == "Step one.",
              "streamed logprobs: %d entries" % n_lp)
        # none: everything stays content, and no reasoning count
        split_case(d, body(THINK, reasoning_format="none"), None, TOKENS[THINK], None, "length",
                   "reasoning_format none")
        split_case(d, body(THINK, reasoning_format="auto"), "Step one.", after, 1, "length",
                   "reasoning_format auto")
        # enable_thinking false: the prompt closes an empty block (more prompt tokens) and the
        # answer is content, think block or not
        st, on = chat(d, body(PLAIN))
        st2, off = chat(d, body(THINK, chat_template_kwargs={"enable_thinking": False,
                                                             "other": 1}))
        check(st == 200 and st2 == 200 and
              off["usage"]["prompt_tokens"] > on["usage"]["prompt_tokens"],
              "enable_thinking false: prompt tokens %r vs %r" % (off.get("usage"), on.get("usage")))
        check(off["choices"][0]["message"]["content"] == TOKENS[THINK] and
              "reasoning_content" not in off["choices"][0]["message"],
              "enable_thinking false: all content %r" % off)
        st, on2 = chat(d, body(PLAIN, chat_template_kwargs={"enable_thinking": True}))
        check(on2["usage"]["prompt_tokens"] == on["usage"]["prompt_tokens"],
              "enable_thinking true is the default")
        # tool calls are read from the content only
        st, js = chat(d, body(CALL, tools=TOOLS))
        msg = js["choices"][0]["message"]
        check(js["choices"][0]["finish_reason"] == "tool_calls" and msg["content"] is None and
              msg.get("reasoning_content") == "I need the weather." and
              len(msg.get("tool_calls", [])) == 1 and
              json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"},
              "reasoning then a call: %r" % js)
        r, c, calls, finishes, _, _ = assemble(stream(d, body(CALL, tools=TOOLS)))
        check(r == "I need the weather." and c == "" and json.loads(calls) == {"city": "Oslo"}
              and finishes == ["tool_calls"], "reasoning then a call, streamed: %r %r %r %r"
              % (r, c, calls, finishes))
        # a history with reasoning (given, or in content) is rendered and served
        hist = USER + [{"role": "assistant", "content": "A.", "reasoning_content": "R."},
                       {"role": "user", "content": "And?"},
                       {"role": "assistant", "content": "<think>x</think>B.",
                        "reasoning_content": None}, {"role": "user", "content": "So?"}]
        st, js = chat(d, body(PLAIN, messages=hist))
        check(st == 200, "history with reasoning: %d %r" % (st, js))
        # the raw completion endpoint is not a chat: nothing is split
        st, _, js = d.post("/v1/completions", {"prompt": "Once", "max_tokens": 1,
                                               "temperature": 0, "logit_bias": {str(THINK): 100}})
        check(st == 200 and js["choices"][0]["text"] == TOKENS[THINK] and
              "completion_tokens_details" not in js["usage"], "completions untouched: %r" % js)
        # bad requests
        error(d, body(PLAIN, messages=USER + [{"role": "assistant", "content": "x",
                                               "reasoning_content": 7}]),
              "messages[1].reasoning_content", "reasoning_content a number")
        error(d, body(PLAIN, chat_template_kwargs="enable_thinking"), "chat_template_kwargs",
              "chat_template_kwargs a string")
        error(d, body(PLAIN, chat_template_kwargs={"enable_thinking": "no"}),
              "chat_template_kwargs.enable_thinking", "enable_thinking a string")
        error(d, body(PLAIN, reasoning_format="deepseek-legacy"), "reasoning_format",
              "reasoning_format deepseek-legacy")
        error(d, body(PLAIN, reasoning_format=1), "reasoning_format", "reasoning_format 1")
        responses_cases(d)

    # the server's setting: none leaves the block in content unless a request asks
    with loopback.daemon(check, "none daemon exit", "--reasoning-format", "none",
                         model=gguf) as d:
        split_case(d, body(THINK), None, TOKENS[THINK], None, "length", "server none")
        split_case(d, body(THINK, reasoning_format="deepseek"), "Step one.", after, 1, "length",
                   "server none, request deepseek")

    # another format: auto separates nothing; deepseek (server-wide) does
    with loopback.daemon(check, "chatml daemon exit", "--chat-template", "chatml",
                         model=gguf) as d:
        split_case(d, body(THINK), None, TOKENS[THINK], None, "length", "chatml auto")
    with loopback.daemon(check, "chatml deepseek daemon exit", "--chat-template", "chatml",
                         "--reasoning-format", "deepseek", model=gguf) as d:
        split_case(d, body(THINK), "Step one.", after, 1, "length", "chatml deepseek")


if __name__ == "__main__":  # test_r1_server.py imports the helpers
    main()
    if FAILS:
        print("%d failures" % len(FAILS))
        sys.exit(1)
    print("reasoning: all checks passed")
