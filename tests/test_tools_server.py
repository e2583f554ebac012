#!/usr/bin/env python3
"""test_tools_server.py: proves OpenAI function calling end to end through the real fusiond:
a copy of stories260K written with Qwen 2.5's chat template (and a longer context) is served,
and since a random model writes no tool call by itself, a few of its tokens are rewritten to
hold call text and logit_bias picks them.  Checked whole and streamed: auto calls (content
null, finish_reason "tool_calls", call ids), a named tool_choice and "required" continuing the
prefilled call opening (named: arguments held to the parameters schema, even unbiased),
arguments streamed piece by piece, parallel_tool_calls false, text that is no call staying content (and
held-back text released when it turns out not to be one), a history with tool calls and tool
results, the 400s; the same GGUF under --chat-template llama3.1 and mistral (9-character
ids); a copy with DeepSeek-R1-Distill's template (tests/data): the tools in its prompt, named
and required calls after the think block the prompt opened (its markers, which hold U+2581,
come from the prefill and the server's close: a SentencePiece model writes U+2581 as a
space), reasoning still split when no call comes; a copy with Devstral's template
(tests/data, the mistral3 family): [TOOL_CALLS]name[ARGS]{...} calls, with and without those
control tokens in the text, two of them, named and required; a copy with IBM Granite 3.3's
template (tests/data): <|tool_call|> arrays, with and without the tag, named and required; a
copy with Phi-4-mini's template (tests/data): the tools in its prompt, functools[...] calls
alone and after text (the text the content), the bare array, two of them, named and required,
"functools[" that is no call, the history's calls written back; the plain model refusing tools.
Usage: test_tools_server.py (python3 stdlib only)."""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []

# Token ids of stories260K (single rare characters) rewritten to carry call text.
QWEN_CALL, NAMED_ARGS, REQUIRED_REST, QWEN_TWO, LLAMA_CALL, MISTRAL_CALL, NOT_A_CALL, ARGS_OPEN, \
    ARGS_MORE = (503, 507, 476, 482, 511, 486, 481, 498, 493)
TOKENS = {
    QWEN_CALL: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Z\u00fcrich '
               '\\"old\\" {town}"}}\n</tool_call>',
    NAMED_ARGS: '{"city": "Paris"}',
    REQUIRED_REST: 'clock", "arguments": {}}',
    QWEN_TWO: 'Two.\n<tool_call>\n{"name": "clock", "arguments": {}}\n</tool_call>\n'
              '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    LLAMA_CALL: '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
    MISTRAL_CALL: '[{"name": "get_weather", "arguments": {"city": "Rome"}}]',
    NOT_A_CALL: '{"name": "get_weather", "parameters": 5} is no call',
    ARGS_OPEN: '{"city": "',
    ARGS_MORE: 'ris ',
}

# The DeepSeek-R1 copy's rewritten tokens.
R1_ANSWER, R1_REQUIRED_REST = 503, 476
R1_TOKENS = {
    R1_ANSWER: "\nHm.\n</think>\n\nNo call needed.",
    NAMED_ARGS: '{"city": "Paris"}',
    R1_REQUIRED_REST: 'clock\n```json\n{}\n```',
}

# The mistral3 (Devstral template) copy's rewritten tokens.
M3_CALL, M3_BARE, M3_TWO, M3_REQUIRED_REST, M3_NOT_A_CALL = 503, 511, 482, 476, 481
M3_TOKENS = {
    M3_CALL: '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}',
    M3_BARE: 'get_weather{"city": "Bern"}',
    M3_TWO: '[TOOL_CALLS]clock[ARGS]{}[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}',
    NAMED_ARGS: '{"city": "Paris"}',
    M3_REQUIRED_REST: 'clock[ARGS]{}',
    M3_NOT_A_CALL: 'Sure{x} is no call',
}

# The Granite copy's rewritten tokens.
G_CALL, G_BARE, G_REQUIRED_REST = 503, 511, 476
G_TOKENS = {
    G_CALL: '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Lima"}}]',
    G_BARE: '[{"name": "clock", "arguments": {}}, {"name": "clock", "arguments": {"x": 1}}]',
    NAMED_ARGS: '{"city": "Paris"}',
    G_REQUIRED_REST: 'clock", "arguments": {}}]',
}

# The Phi-4-mini copy's rewritten tokens.
P_CALL, P_BARE, P_TEXT, P_REQUIRED_REST, P_NOT_A_CALL = 503, 511, 482, 476, 481
P_TOKENS = {
    P_CALL: 'functools[{"name": "get_weather", "arguments": {"city": "Lima"}}]',
    P_BARE: '[{"name": "clock", "arguments": {}}, {"name": "get_weather", "arguments": '
            '{"city": "Oslo"}}]',
    P_TEXT: 'Let me check. functools[{"name": "clock", "arguments": {}}]',
    NAMED_ARGS: '{"city": "Paris"}',
    P_REQUIRED_REST: 'clock", "arguments": {}}]',
    P_NOT_A_CALL: 'Use functools[0] here',
}


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


# ---- requests

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "clock"}},
         {"type": "function", "function": {"name": "set_unit", "parameters": {
             "type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"],
             "additionalProperties": False}}}]
SET_UNIT = {"type": "function", "function": {"name": "set_unit"}}
USER = [{"role": "user", "content": "Weather?"}]


def body(bias=None, **kw):
    b = {"messages": USER, "tools": TOOLS, "max_tokens": 1, "temperature": 0}
    if bias is not None:
        b["logit_bias"] = {str(bias): 100}
    b.update(kw)
    return b


def chat(d, b):
    st, _, js = d.post("/v1/chat/completions", b)
    return st, js


def stream(d, b):
    """The chunks of a streamed answer, checked to end in [DONE]."""
    b = dict(b, stream=True)
    st, _, raw = d.request("POST", "/v1/chat/completions", b)
    frames, done = sse_frames(raw)
    check(st == 200 and done, "stream: status %d, [DONE] %s" % (st, done))
    return frames


def assemble(frames):
    """content, tool calls (index -> {id, type, name, arguments}) and the finish reasons."""
    content, calls, finishes = "", {}, []
    for f in frames:
        for c in f.get("choices", []):
            dl = c.get("delta", {})
            content += dl.get("content") or ""
            for tc in dl.get("tool_calls") or []:
                e = calls.setdefault(tc["index"], {"id": None, "type": None, "name": None,
                                                   "arguments": ""})
                if "id" in tc:
                    check(e["id"] is None, "a call's id is sent once")
                    e["id"], e["type"] = tc["id"], tc.get("type")
                fn = tc.get("function", {})
                if "name" in fn:
                    e["name"] = fn["name"]
                e["arguments"] += fn.get("arguments", "")
            if c.get("finish_reason"):
                finishes.append(c["finish_reason"])
    return content, calls, finishes


def one_call(js, name, args, what, content=None):
    """The whole answer holds exactly the one call expected."""
    try:
        ch = js["choices"][0]
        msg = ch["message"]
        check(ch["finish_reason"] == "tool_calls", what + ": finish_reason " + str(ch["finish_reason"]))
        check(msg["content"] == content, what + ": content %r" % (msg["content"],))
        check(msg["role"] == "assistant", what + ": role")
        calls = msg["tool_calls"]
        check(len(calls) == 1, what + ": %d calls" % len(calls))
        c = calls[0]
        check(c["type"] == "function" and c["function"]["name"] == name,
              what + ": call " + json.dumps(c))
        check(json.loads(c["function"]["arguments"]) == args, what + ": arguments " +
              c["function"]["arguments"])
        return c
    except (KeyError, TypeError, IndexError) as e:
        check(False, "%s: malformed answer %r (%s)" % (what, js, e))
        return {"id": ""}


def streamed_call(d, b, name, args, what):
    frames = stream(d, b)
    content, calls, finishes = assemble(frames)
    check(content == "", what + " streamed: no content, got %r" % content)
    check("<tool_call>" not in json.dumps(frames) and "[TOOL_CALLS]" not in json.dumps(frames),
          what + " streamed: markup leaked")
    check(finishes == ["tool_calls"], what + " streamed: finishes %r" % finishes)
    check(list(calls) == [0], what + " streamed: call indexes %r" % list(calls))
    if calls:
        c = calls[0]
        check(c["type"] == "function" and c["name"] == name and c["id"],
              what + " streamed: head " + json.dumps(c))
        check(json.loads(c["arguments"]) == args, what + " streamed: arguments " + c["arguments"])
    return calls


def error(d, b, param, what, code=None):
    st, js = chat(d, b)
    err = (js or {}).get("error", {})
    check(st == 400 and err.get("param") == param and err.get("type") == "invalid_request_error"
          and (code is None or err.get("code") == code),
          "%s: want 400 param %s, got %d %r" % (what, param, st, js))
    return err.get("message", "")


def history(call_id, name, arguments, result):
    """The question, the assistant's one call and the tool's result for it."""
    return USER + [{"role": "assistant", "content": None, "tool_calls": [{
        "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": result}]


def call_both(d, b, name, args, what):
    """One call to name with args, in the whole answer and streamed: the whole answer and its
    call."""
    st, js = chat(d, b)
    c = one_call(js, name, args, what)
    streamed_call(d, b, name, args, what)
    return js, c


def named_call(d, what):
    """A named tool_choice of get_weather (the prefill, then the arguments NAMED_ARGS biases
    toward), whole and streamed: the whole answer."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    return call_both(d, body(NAMED_ARGS, tool_choice=named, max_tokens=3), "get_weather",
                     {"city": "Paris"}, what)[0]


def not_a_call(d, bias, text, what):
    """An answer (biased to bias) that could begin a call and is none: held back, then
    released as its text, whole and streamed."""
    st, js = chat(d, body(bias))
    check(js["choices"][0]["message"]["content"] == text and
          js["choices"][0]["finish_reason"] == "length", "%s not a call: %r" % (what, js))
    content, calls, finishes = assemble(stream(d, body(bias)))
    check(content == text and not calls and finishes == ["length"],
          "%s not a call streamed: %r %r" % (what, content, finishes))


def schema_held(d, what):
    """A named tool_choice of set_unit: the arguments are held to its schema."""
    st, js = chat(d, body(None, tool_choice=SET_UNIT, max_tokens=200))
    c = (js["choices"][0]["message"].get("tool_calls") or [{"function": {}}])[0]["function"]
    check(c.get("name") == "set_unit" and json.loads(c.get("arguments") or "0") in (
        {"unit": "c"}, {"unit": "f"}), "%s named, schema-held: %r" % (what, js["choices"][0]))


def template_gguf(model, tmp, jinja, name, tokens):
    """The model rewritten under tmp with the template tests/data/chat-templates/jinja."""
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates", jinja),
              encoding="utf-8") as f:
        template = f.read()
    path = os.path.join(tmp, name)
    gguf_rewrite(model, path, template, 2048, tokens)
    return path


def main():
    model = loopback.shared_model()
    shared = os.path.dirname(os.path.dirname(model))
    tpath = os.path.join(shared, "chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
    with open(tpath, encoding="utf-8") as f:
        qwen_template = f.read()
    tmp = scratch_dir("fusiond-tools-")
    gguf = os.path.join(tmp, "qwen-tools.gguf")
    gguf_rewrite(model, gguf, qwen_template, 2048, TOKENS)

    with loopback.daemon(check, "qwen daemon exit", model=gguf) as d:
        check(b"qwen" in d.logtext(), "the Qwen template is detected")
        # auto: one call, whole and streamed
        st, js = chat(d, body(QWEN_CALL))
        check(st == 200, "auto call: status %d %r" % (st, js))
        c = one_call(js, "get_weather", {"city": "Z\u00fcrich \"old\" {town}"}, "auto call")
        check(c["id"].startswith("call_") and len(c["id"]) == 29, "call id " + c["id"])
        streamed_call(d, body(QWEN_CALL), "get_weather", {"city": "Z\u00fcrich \"old\" {town}"},
                      "auto call")
        # two calls after prose; parallel_tool_calls false keeps the first
        st, js = chat(d, body(QWEN_TWO))
        msg = js["choices"][0]["message"]
        check(msg["content"] == "Two." and len(msg["tool_calls"]) == 2 and
              msg["tool_calls"][1]["function"]["name"] == "get_weather" and
              msg["tool_calls"][0]["id"] != msg["tool_calls"][1]["id"],
              "two calls: %r" % msg)
        content, calls, finishes = assemble(stream(d, body(QWEN_TWO)))
        check(content == "Two." and sorted(calls) == [0, 1] and finishes == ["tool_calls"] and
              calls[1]["name"] == "get_weather", "two calls streamed: %r %r %r" % (content, calls, finishes))
        st, js = chat(d, body(QWEN_TWO, parallel_tool_calls=False))
        one_call(js, "clock", {}, "parallel_tool_calls false", content="Two.")
        # named: the prefill ends where the arguments begin, and the grammar holds them to
        # the parameters schema; the document complete, the model must end, and the server
        # closes the call
        js = named_call(d, "named tool_choice")
        check(js["usage"]["completion_tokens"] == 2, "named: the arguments, then the end")
        named = {"type": "function", "function": {"name": "get_weather"}}
        # no bias at all: the random model's arguments still fit the schema (an enum)
        for what, stream_it in (("whole", False), ("streamed", True)):
            b = body(None, tool_choice=SET_UNIT, max_tokens=200)
            if stream_it:
                content, calls, finishes = assemble(stream(d, b))
                call = calls.get(0, {})
                args, name, finish = call.get("arguments"), call.get("name"), finishes
            else:
                st, js = chat(d, b)
                m = js["choices"][0]["message"]
                call = (m.get("tool_calls") or [{}])[0].get("function", {})
                args, name, finish = call.get("arguments"), call.get("name"), [
                    js["choices"][0]["finish_reason"]]
            check(name == "set_unit" and finish == ["tool_calls"] and args and
                  json.loads(args) in ({"unit": "c"}, {"unit": "f"}),
                  "named, schema-held arguments (%s): %r %r %r" % (what, name, args, finish))
        # a call's arguments stream as they are written, a piece per token (the grammar lets
        # the second biased token in once the string is open); cut by max_tokens the call is
        # not well-formed, so the whole answer is content, and the stream (which cannot take
        # back what it sent) ends with "length"
        two = {str(ARGS_OPEN): 100, str(ARGS_MORE): 100}
        frames = stream(d, body(None, max_tokens=3, tool_choice=named, logit_bias=two))
        pieces = [tc["function"].get("arguments") for f in frames for c in f["choices"]
                  for tc in (c["delta"].get("tool_calls") or [])]
        content, calls, finishes = assemble(frames)
        check(pieces == ["", '{"city": "', 'ris ', 'ris '] and calls[0]["name"] == "get_weather"
              and content == "" and finishes == ["length"],
              "arguments streamed piece by piece: %r %r %r" % (pieces, content, finishes))
        st, js = chat(d, body(None, max_tokens=3, tool_choice=named, logit_bias=two))
        check(js["choices"][0]["message"]["content"].endswith('"arguments": {"city": "ris ris ') and
              js["choices"][0]["finish_reason"] == "length", "cut call, whole: %r" % js)
        # required: the prefill ends where the name begins
        st, js = chat(d, body(REQUIRED_REST, tool_choice="required"))
        one_call(js, "clock", {}, "required tool_choice")
        # no call: the text is content (a named choice the model does not finish too)
        st, js = chat(d, body(None, max_tokens=6))
        ch = js["choices"][0]
        check(ch["finish_reason"] == "length" and isinstance(ch["message"]["content"], str) and
              "tool_calls" not in ch["message"], "no call: %r" % ch)
        st, js = chat(d, body(None, max_tokens=1, tool_choice=named))
        ch = js["choices"][0]
        check(ch["finish_reason"] == "length" and ch["message"]["content"].startswith(
            '<tool_call>\n{"name": "get_weather", "arguments": ') and "tool_calls" not in ch["message"],
            "unfinished named call is content: %r" % ch)
        # tool_choice none: tools are not offered, the answer is text
        st, js = chat(d, body(QWEN_CALL, tool_choice="none"))
        check(st == 200 and "tool_calls" not in js["choices"][0]["message"] and
              js["choices"][0]["finish_reason"] == "length", "tool_choice none: %r" % js)
        # a history with a call and its result is rendered and answered
        hist = history("call_1", "get_weather", '{"city": "Oslo"}', "sunny")
        st, js = chat(d, body(None, messages=hist, max_tokens=2))
        check(st == 200, "history with tool results: %d %r" % (st, js))
        # bad requests
        error(d, body(None, tool_choice={"type": "function", "function": {"name": "nope"}}),
              "tool_choice.function.name", "named tool not offered")
        error(d, body(None, tools=TOOLS + TOOLS[:1]), "tools[3].function.name", "duplicate tool")
        error(d, body(None, tools=[{"type": "function", "function": {"name": "x",
                                                                     "parameters": []}}]),
              "tools[0].function.parameters", "parameters not an object")
        error(d, body(None, messages=USER + [{"role": "tool", "content": "x"}]),
              "messages[1].tool_call_id", "tool result without its call id")

    with loopback.daemon(check, "llama3.1 daemon exit", "--chat-template", "llama3.1",
                         model=gguf) as d:
        st, js = chat(d, body(LLAMA_CALL))
        one_call(js, "get_weather", {"city": "Oslo"}, "llama3.1 call")
        schema_held(d, "llama3.1")
        streamed_call(d, body(LLAMA_CALL), "get_weather", {"city": "Oslo"}, "llama3.1 call")
        # held back as a possible call, released as content when it is not one
        not_a_call(d, NOT_A_CALL, TOKENS[NOT_A_CALL], "llama3.1")
        two = USER + [{"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "12:00"}]
        msg = error(d, body(None, messages=two), "messages", "llama3.1 two calls in one message")
        check("single tool-calls" in msg, "llama3.1 refusal says why: " + msg)

    with loopback.daemon(check, "mistral daemon exit", "--chat-template", "mistral",
                         model=gguf) as d:
        schema_held(d, "mistral")
        _, c = call_both(d, body(MISTRAL_CALL), "get_weather", {"city": "Rome"}, "mistral call")
        check(len(c["id"]) == 9 and c["id"].isalnum(), "mistral call id " + c["id"])
        # the id it gave comes back in the history and is accepted
        hist = history(c["id"], "get_weather", '{"city": "Rome"}', "warm")
        st, js = chat(d, body(None, messages=hist, max_tokens=2))
        check(st == 200, "mistral history with its own ids: %d %r" % (st, js))
        hist[1]["tool_calls"][0]["id"] = hist[2]["tool_call_id"] = "call_1"
        msg = error(d, body(None, messages=hist), "messages", "mistral id of the wrong length")
        check("length 9" in msg, "mistral refusal says why: " + msg)

    # DeepSeek-R1-Distill: its template has no tools list (chat.c writes llama-server's);
    # the generation prompt opens <think>, which a forced call closes first
    r1_gguf = template_gguf(model, tmp, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
                            "r1-tools.gguf", R1_TOKENS)
    with loopback.daemon(check, "deepseek-r1 daemon exit", model=r1_gguf) as d:
        check(b"deepseek-r1" in d.logtext(), "the DeepSeek-R1 template is detected")
        st, with_tools = chat(d, body(R1_ANSWER))
        st2, without = chat(d, body(R1_ANSWER, tool_choice="none"))
        check(st == 200 and st2 == 200 and with_tools["usage"]["prompt_tokens"] >
              without["usage"]["prompt_tokens"] + 50, "r1: the tools are in the prompt: %r %r"
              % (with_tools.get("usage"), without.get("usage")))
        # no call: the think block is still split off, the answer is content
        msg = with_tools["choices"][0]["message"]
        check(msg.get("reasoning_content") == "Hm." and msg.get("content") == "No call needed."
              and "tool_calls" not in msg and with_tools["choices"][0]["finish_reason"] == "length",
              "r1 auto, no call: %r" % with_tools)
        js = named_call(d, "r1 named tool_choice")
        check(js["usage"]["completion_tokens"] == 2 and
              "reasoning_content" not in js["choices"][0]["message"],
              "r1 named: the arguments, then the end, no reasoning: %r" % js)
        schema_held(d, "r1")
        _, c = call_both(d, body(R1_REQUIRED_REST, tool_choice="required"), "clock", {},
                       "r1 required tool_choice")
        # its own call and the result come back in the history
        hist = history(c["id"], "clock", "{}", "12:00")
        st, js = chat(d, body(R1_ANSWER, messages=hist))
        check(st == 200 and "tool_calls" not in js["choices"][0]["message"],
              "r1 history with its call and result: %d %r" % (st, js))
        # a forced call the model does not finish is content
        st, js = chat(d, body(None, max_tokens=1, tool_choice="required"))
        ch = js["choices"][0]
        check(ch["finish_reason"] == "length" and "tool_calls" not in ch["message"] and
              ch["message"]["content"].startswith("<\uff5ctool\u2581calls\u2581begin\uff5c>"),
              "r1 unfinished required call is content: %r" % ch)

    # Mistral Small 3.2 / Devstral: [TOOL_CALLS]name[ARGS]{...}; the detokenizer of a real
    # model leaves those control tokens out, so a bare name{...} is a call too
    m3_gguf = template_gguf(model, tmp, "unsloth-mistral-Devstral-Small-2507.jinja",
                            "mistral3-tools.gguf", M3_TOKENS)
    with loopback.daemon(check, "mistral3 daemon exit", model=m3_gguf) as d:
        check(b"mistral3" in d.logtext(), "the Devstral template is detected as mistral3")
        _, c = call_both(d, body(M3_CALL), "get_weather", {"city": "Rome"}, "mistral3 call")
        check(len(c["id"]) == 9 and c["id"].isalnum(), "mistral3 call id " + c["id"])
        call_both(d, body(M3_BARE), "get_weather", {"city": "Bern"},
                  "mistral3 call without its markers")
        st, js = chat(d, body(M3_TWO))
        msg = js["choices"][0]["message"]
        check(msg["content"] is None and [t["function"]["name"] for t in msg["tool_calls"]] ==
              ["clock", "get_weather"], "mistral3 two calls: %r" % msg)
        content, calls, finishes = assemble(stream(d, body(M3_TWO)))
        check(content == "" and sorted(calls) == [0, 1] and finishes == ["tool_calls"] and
              calls[1]["name"] == "get_weather" and json.loads(calls[1]["arguments"]) ==
              {"city": "Oslo"}, "mistral3 two calls streamed: %r %r %r" % (content, calls, finishes))
        st, js = chat(d, body(M3_TWO, parallel_tool_calls=False))
        one_call(js, "clock", {}, "mistral3 parallel_tool_calls false")
        js = named_call(d, "mistral3 named tool_choice")
        check(js["usage"]["completion_tokens"] == 2, "mistral3 named: the arguments, then the end")
        schema_held(d, "mistral3")
        st, js = chat(d, body(M3_REQUIRED_REST, tool_choice="required"))
        c = one_call(js, "clock", {}, "mistral3 required tool_choice")
        # no call: held back while it could be one, then content
        not_a_call(d, M3_NOT_A_CALL, M3_TOKENS[M3_NOT_A_CALL], "mistral3")
        hist = history(c["id"], "clock", "{}", "12:00")
        st, js = chat(d, body(None, messages=hist, max_tokens=2))
        check(st == 200, "mistral3 history with its call and result: %d %r" % (st, js))

    # IBM Granite 3.3: <|tool_call|>[{"name", "arguments"}, ...]
    g_gguf = template_gguf(model, tmp, "ibm-granite-granite-3.3-2B-Instruct.jinja",
                           "granite-tools.gguf", G_TOKENS)
    with loopback.daemon(check, "granite daemon exit", model=g_gguf) as d:
        check(b"granite" in d.logtext(), "the Granite template is detected")
        _, c = call_both(d, body(G_CALL), "get_weather", {"city": "Lima"}, "granite call")
        check(c["id"].startswith("call_"), "granite call id " + c["id"])
        st, js = chat(d, body(G_BARE))
        msg = js["choices"][0]["message"]
        check(msg["content"] is None and len(msg["tool_calls"]) == 2 and
              json.loads(msg["tool_calls"][1]["function"]["arguments"]) == {"x": 1},
              "granite two calls without the tag: %r" % msg)
        named_call(d, "granite named tool_choice")
        st, js = chat(d, body(G_REQUIRED_REST, tool_choice="required"))
        one_call(js, "clock", {}, "granite required tool_choice")
        hist = history("call_1", "clock", "{}", "12:00")
        st, js = chat(d, body(None, messages=hist, max_tokens=2))
        check(st == 200, "granite history with a call and its result: %d %r" % (st, js))

    # Phi-4-mini: functools[{"name", "arguments"}, ...] after optional text, or the bare array
    p_gguf = template_gguf(model, tmp, "microsoft-Phi-4-mini-instruct.jinja",
                           "phi4-mini-tools.gguf", P_TOKENS)
    with loopback.daemon(check, "phi4-mini daemon exit", model=p_gguf) as d:
        check(b"phi4-mini" in d.logtext(), "the Phi-4-mini template is detected")
        # the prompt: the tools' function objects in a system message of fusiond's
        st, _, js = d.post("/apply-template", {"messages": USER, "tools": TOOLS[1:2]})
        check(st == 200 and js.get("prompt") ==
              '<|system|>You are a helpful assistant with some tools.<|tool|>[{"name": "clock"}]'
              '<|/tool|><|end|><|user|>Weather?<|end|><|assistant|>',
              "phi4-mini prompt with tools: %d %r" % (st, js))
        _, c = call_both(d, body(P_CALL), "get_weather", {"city": "Lima"}, "phi4-mini call")
        check(c["id"].startswith("call_"), "phi4-mini call id " + c["id"])
        # text before the call: the content, whole and streamed
        st, js = chat(d, body(P_TEXT))
        one_call(js, "clock", {}, "phi4-mini call after text", content="Let me check.")
        content, calls, finishes = assemble(stream(d, body(P_TEXT)))
        check(content == "Let me check." and list(calls) == [0] and calls[0]["name"] == "clock"
              and json.loads(calls[0]["arguments"]) == {} and finishes == ["tool_calls"] and
              "functools" not in content,
              "phi4-mini call after text streamed: %r %r %r" % (content, calls, finishes))
        # the bare array (the <|tool_call|> control token left out): two calls, or the first
        st, js = chat(d, body(P_BARE))
        msg = js["choices"][0]["message"]
        check(msg["content"] is None and [t["function"]["name"] for t in msg["tool_calls"]] ==
              ["clock", "get_weather"] and json.loads(
                  msg["tool_calls"][1]["function"]["arguments"]) == {"city": "Oslo"},
              "phi4-mini two calls: %r" % msg)
        content, calls, finishes = assemble(stream(d, body(P_BARE)))
        check(content == "" and sorted(calls) == [0, 1] and finishes == ["tool_calls"] and
              calls[1]["name"] == "get_weather", "phi4-mini two calls streamed: %r %r %r" % (
                  content, calls, finishes))
        st, js = chat(d, body(P_BARE, parallel_tool_calls=False))
        one_call(js, "clock", {}, "phi4-mini parallel_tool_calls false")
        named_call(d, "phi4-mini named tool_choice")
        schema_held(d, "phi4-mini")
        st, js = chat(d, body(P_REQUIRED_REST, tool_choice="required"))
        c = one_call(js, "clock", {}, "phi4-mini required tool_choice")
        not_a_call(d, P_NOT_A_CALL, P_TOKENS[P_NOT_A_CALL], "phi4-mini")
        # the history: the call written back as the model wrote it, the result a tool turn
        hist = history(c["id"], "clock", "{}", "12:00")
        st, _, js = d.post("/apply-template", {"messages": hist})
        check(st == 200 and js.get("prompt") ==
              '<|user|>Weather?<|end|><|assistant|>functools[{"name": "clock", "arguments": {}}]'
              '<|end|><|tool|>12:00<|end|><|assistant|>',
              "phi4-mini history prompt: %d %r" % (st, js))
        st, js = chat(d, body(None, messages=hist, max_tokens=2))
        check(st == 200, "phi4-mini history with its call and result: %d %r" % (st, js))

    # stories260K itself: no template, the plain format
    with loopback.daemon(check, "plain daemon exit") as d:
        error(d, body(None), "tools", "plain format with tools", code="unsupported_parameter")
        st, js = chat(d, body(None, tool_choice="none", max_tokens=2))
        check(st == 200, "plain format, tool_choice none: %d" % st)
        error(d, body(None, tool_choice="none", messages=USER + [
            {"role": "tool", "tool_call_id": "c", "content": "x"}]), "messages",
            "plain format with a tool result", code="unsupported_parameter")


main()
if FAILS:
    print("%d failures" % len(FAILS))
    sys.exit(1)
print("function calling: all checks passed")
