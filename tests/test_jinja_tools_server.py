#!/usr/bin/env python3
"""test_jinja_tools_server.py: proves function calling end to end through the real fusiond
for chat templates of no known family (rendered by the Jinja interpreter), as llama-server
does them.  A copy of stories260K whose template prints neither tools nor calls gets
llama-server's generic format: the prompt carries the JSON instruction, the tools and an
example call in its system message (a first system message keeps its text before them), a
history's calls and tool results are written as JSON text; the answer is held by a grammar
to {"tool_call": ...} / {"tool_calls": [...]} / {"response": "..."}, so this random model
writes a well-formed call to an offered function with arguments that fit its schema
(tool_choice "required", a named function, parallel calls with ids), returned as OpenAI
tool_calls whole and streamed (the same call) and as /v1/responses function_call items,
while the same request without tools writes no JSON at all; a response comes back as its
decoded content, whole and streamed, one cut by max_tokens as far as it goes.  A copy
whose template has <tool_call> (Hermes 2 Pro's markers, as llama-server detects them) reads
<tool_call> blocks instead, its named calls prefilled.  python3 stdlib only."""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []

# Prints each message's content only: no tools, no calls (llama-server polyfills both).
PLAIN = ("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>\n"
         "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
# Hermes-style: the tools and the calls in <tool_call> blocks.
HERMES = ("{{ bos_token }}{% if tools %}<tools>{{ tools | map(attribute='function.name') | "
          "join(',') }}</tools>\n{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}"
          "{% for c in m.tool_calls or [] %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", "
          "\"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}"
          "</{{ m.role }}>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")

# stories260K tokens (single rare characters) rewritten to carry text a biased request picks.
RESP_OPEN, RESP_TEXT, ID_TEXT, HERMES_CALL = 503, 507, 476, 482
TOKENS = {
    RESP_OPEN: '{"response": "',
    RESP_TEXT: 'Sunny \\"22\\" \\u00b0C\\nok"',
    ID_TEXT: 'k7Qx9"}]}',  # a call's id, and the end of the calls (else the random model
                           # goes on writing calls)
    HERMES_CALL: '<tool_call>\n{"name": "set_unit", "arguments": {"unit": "f"}}\n</tool_call>',
}

SET_UNIT = {"type": "function", "function": {"name": "set_unit", "description": "Units", "parameters": {
    "type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"]}}}
TOOLS = [{"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {"utc": {"type": "boolean"}}, "required": ["utc"]}}},
    SET_UNIT]
USER = [{"role": "user", "content": "Weather?"}]


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: %s" % what)


def body(bias=(), **kw):
    # a random model spends many tokens on the whitespace the grammar allows between tokens
    b = {"messages": USER, "tools": TOOLS, "max_tokens": 2000, "temperature": 0}
    if bias:
        b["logit_bias"] = {str(t): 100 for t in bias}
    b.update(kw)
    return b


def chat(d, b):
    st, _, js = d.post("/v1/chat/completions", b, timeout=120)
    check(st == 200, "chat: %d %r" % (st, js))
    return js


def stream(d, b):
    st, _, raw = d.request("POST", "/v1/chat/completions", dict(b, stream=True))
    frames, done = sse_frames(raw)
    check(st == 200 and done, "stream: status %d, [DONE] %s" % (st, done))
    content, calls, finishes = "", {}, []
    for f in frames:
        for c in f.get("choices", []):
            dl = c.get("delta", {})
            content += dl.get("content") or ""
            for tc in dl.get("tool_calls") or []:
                e = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                if "id" in tc:
                    check(e["id"] is None, "a call's id is sent once")
                    e["id"] = tc["id"]
                fn = tc.get("function", {})
                if "name" in fn:
                    e["name"] = fn["name"]
                e["arguments"] += fn.get("arguments", "")
            if c.get("finish_reason"):
                finishes.append(c["finish_reason"])
    return content, calls, finishes


def calls_of(js, what):
    try:
        ch = js["choices"][0]
        check(ch["finish_reason"] == "tool_calls", "%s: finish %r" % (what, ch["finish_reason"]))
        check(ch["message"]["content"] is None, "%s: content %r" % (what, ch["message"]["content"]))
        return ch["message"]["tool_calls"]
    except (KeyError, TypeError, IndexError) as e:
        check(False, "%s: malformed answer %r (%s)" % (what, js, e))
        return []


def fits(call, what):
    """The call names an offered function and its arguments fit that function's schema."""
    name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
    if name == "set_unit":
        check(list(args) == ["unit"] and args["unit"] in ("c", "f"), "%s: %r" % (what, args))
    else:
        check(name == "clock" and list(args) == ["utc"] and isinstance(args["utc"], bool),
              "%s: %s %r" % (what, name, args))
    check(call["id"].startswith("call_") and len(call["id"]) == 29, "%s: id %r" % (what, call["id"]))


def generic(d, bos):
    check(b"tool calls in the generic JSON format" in d.logtext(), "generic format logged")
    # the prompt: instruction, tools and example in a new system message
    st, _, js = d.post("/apply-template", {"messages": USER, "tools": [SET_UNIT]})
    tools_text = json.dumps([SET_UNIT], indent=2)
    example = ('{\n  "tool_calls": [\n    {\n      "name": "tool_name",\n      "arguments": {\n'
               '        "arg1": "some_value"\n      },\n      "id": "call_1___"\n    }\n  ]\n}')
    sysmsg = ("Respond in JSON format, either with `tool_call` (a request to call tools) or "
              "with `response` reply to the user's request\n\nYou can call any of the following "
              "tools to satisfy the user's requests: " + tools_text +
              "\n\nExample tool call syntax:\n\n" + example + "\n\n")
    want = bos + "<system>" + sysmsg + "</system>\n<user>Weather?</user>\n<assistant>"
    check(st == 200 and js.get("prompt") == want, "generic prompt:\n got  %r\n want %r"
          % (js and js.get("prompt"), want))
    # a first system message keeps its text; a history's call and result become JSON text
    hist = [{"role": "system", "content": "Be brief."}, USER[0],
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_a", "type": "function",
                "function": {"name": "set_unit", "arguments": "{\"unit\": \"c\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "done"}]
    st, _, js = d.post("/apply-template", {"messages": hist, "tools": [SET_UNIT],
                                           "parallel_tool_calls": False})
    p = js.get("prompt", "") if js else ""
    call_text = json.dumps({"tool_calls": [{"name": "set_unit", "arguments": {"unit": "c"},
                                            "id": "call_a"}]}, indent=2)
    result_text = json.dumps({"tool_response": {"content": "done", "tool_call_id": "call_a"}},
                             indent=2)
    check(st == 200 and p.startswith(bos + "<system>Be brief.\n\nRespond in JSON format") and
          '"tool_call": {\n    "name": "tool_name"' in p and
          "<assistant>" + call_text + "</assistant>" in p and
          "<user>" + result_text + "</user>" in p, "history polyfilled:\n%r" % p)

    # without tools the random model writes no JSON: the grammar is what makes the calls
    js = chat(d, {"messages": USER, "max_tokens": 40, "temperature": 0})
    free = js["choices"][0]["message"]["content"]
    check(not free.lstrip().startswith("{"), "no tools: free text %r" % free)

    # required: a call to one of the tools, whole and streamed alike
    js = chat(d, body(tool_choice="required", parallel_tool_calls=False))
    calls = calls_of(js, "required")
    check(len(calls) == 1, "required: one call %r" % calls)
    for c in calls:
        fits(c, "required")
    content, scalls, fin = stream(d, body(tool_choice="required", parallel_tool_calls=False))
    check(fin == ["tool_calls"] and content == "" and len(scalls) == 1, "required streamed: %r %r %r"
          % (content, scalls, fin))
    if calls and scalls:
        check(scalls[0]["name"] == calls[0]["function"]["name"] and
              scalls[0]["arguments"] == calls[0]["function"]["arguments"],
              "streamed call %r vs %r" % (scalls[0], calls[0]))

    # a named function: that one only
    named = {"type": "function", "function": {"name": "set_unit"}}
    for c in calls_of(chat(d, body([ID_TEXT], tool_choice=named)), "named"):
        check(c["function"]["name"] == "set_unit", "named: %r" % c)
        fits(c, "named")

    # parallel: {"tool_calls": [...]}, each with the id the grammar asks for (ids ours)
    calls = calls_of(chat(d, body([ID_TEXT], tool_choice="required")), "parallel")
    check(len(calls) >= 1, "parallel: %r" % calls)
    for c in calls:
        fits(c, "parallel")
    check(len(set(c["id"] for c in calls)) == len(calls), "parallel ids differ")
    content, scalls, fin = stream(d, body([ID_TEXT], tool_choice="required"))
    check(fin == ["tool_calls"] and len(scalls) == len(calls) and
          [s["arguments"] for s in scalls.values()] ==
          [c["function"]["arguments"] for c in calls], "parallel streamed: %r %r" % (scalls, calls))

    # the Responses API reads the same calls
    st, _, js = d.post("/v1/responses", {
        "input": "Weather?", "tool_choice": "required", "max_output_tokens": 2000,
        "temperature": 0, "logit_bias": {str(ID_TEXT): 100},
        "tools": [dict(SET_UNIT["function"], type="function")]}, timeout=120)
    out = js.get("output", []) if js else []
    check(st == 200 and len(out) == 1 and out[0].get("type") == "function_call" and
          out[0].get("name") == "set_unit" and
          json.loads(out[0].get("arguments", "{}")).get("unit") in ("c", "f"),
          "responses: %d %r" % (st, out))

    # a response: its decoded text is the content, whole and streamed
    js = chat(d, body([RESP_OPEN, RESP_TEXT]))
    ch = js["choices"][0]
    check(ch["message"].get("content") == 'Sunny "22" \u00b0C\nok' and
          not ch["message"].get("tool_calls") and ch["finish_reason"] == "stop",
          "response: %r" % ch)
    content, scalls, fin = stream(d, body([RESP_OPEN, RESP_TEXT]))
    check(content == 'Sunny "22" \u00b0C\nok' and not scalls and fin == ["stop"],
          "response streamed: %r %r %r" % (content, scalls, fin))
    # cut short by max_tokens: what the response holds so far
    js = chat(d, body([RESP_OPEN], max_tokens=1))
    ch = js["choices"][0]
    check(ch["message"].get("content") == "" and ch["finish_reason"] == "length",
          "cut response: %r" % ch)
    # tool_choice none: no grammar, no parse: the model's free text
    js = chat(d, body(tool_choice="none", max_tokens=20))
    check(not js["choices"][0]["message"].get("tool_calls"), "none: %r" % js)


def hermes(d):
    check(b"tool calls as <tool_call> blocks" in d.logtext(), "hermes detection logged")
    st, _, js = d.post("/apply-template", {"messages": USER, "tools": TOOLS})
    check(st == 200 and js["prompt"].startswith("<s><tools>clock,set_unit</tools>\n<user>") and
          "Respond in JSON" not in js["prompt"], "hermes prompt: %r" % js)
    js = chat(d, body([HERMES_CALL], max_tokens=1))
    calls = calls_of(js, "hermes call")
    check(len(calls) == 1 and calls[0]["function"]["name"] == "set_unit" and
          json.loads(calls[0]["function"]["arguments"]) == {"unit": "f"}, "hermes: %r" % calls)
    content, scalls, fin = stream(d, body([HERMES_CALL], max_tokens=1))
    check(fin == ["tool_calls"] and content == "" and scalls.get(0, {}).get("name") == "set_unit",
          "hermes streamed: %r %r" % (content, scalls))
    # a named function: the opening prefilled, the arguments held to its schema
    named = {"type": "function", "function": {"name": "set_unit"}}
    for c in calls_of(chat(d, body(tool_choice=named)), "hermes named"):
        fits(c, "hermes named")


def main():
    model = loopback.shared_model()
    tmp = scratch_dir("fusiond-jtools-")
    g = os.path.join(tmp, "generic.gguf")
    gguf_rewrite(model, g, PLAIN, 4096, TOKENS)
    with loopback.daemon(check, "generic daemon exit", model=g) as d:
        generic(d, "<s>")
    h = os.path.join(tmp, "hermes.gguf")
    gguf_rewrite(model, h, HERMES, 4096, TOKENS)
    with loopback.daemon(check, "hermes daemon exit", model=h) as d:
        hermes(d)
    if FAILS:
        print("%d failures" % len(FAILS))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
