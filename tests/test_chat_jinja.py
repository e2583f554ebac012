#!/usr/bin/env python3
"""test_chat_jinja.py: proves server/chat.c renders conversations with tools, tool calls and
tool results byte for byte as the real templates do: each of Llama 3.1, Qwen 2.5 and Mistral
Nemo's .jinja files in $FUSIOND_SHARED/chat-templates is rendered with jinja2 the way
transformers renders it (trim_blocks, lstrip_blocks, loopcontrols, tojson as json.dumps with
ensure_ascii=False, raise_exception) and compared with tests/chat_render's output; a template
that refuses a conversation must be refused by chat.c too.  Skips (77) when python3-jinja2
or the shared folder is missing, unless FUSIOND_REQUIRE_JINJA=1 (or FUSIOND_REQUIRE_SHARED=1
for the folder), CI's flags, where that is a failure."""

import json
import os
import subprocess
import sys

BUILD = os.environ.get("top_builddir", ".")
RENDER = os.path.join(BUILD, "tests", "chat_render")


def skip_or_fail(what, flag):
    if os.environ.get(flag) == "1":
        print("FAIL: %s (%s=1)" % (what, flag))
        sys.exit(1)
    print("SKIP: %s" % what)
    sys.exit(77)


try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    skip_or_fail("python3 jinja2 is not installed (Debian: apt-get install python3-jinja2)",
                 "FUSIOND_REQUIRE_JINJA")

SHARED = os.environ.get("FUSIOND_SHARED", "")
TDIR = os.path.join(SHARED, "chat-templates")
if not SHARED or not os.path.isdir(TDIR):
    skip_or_fail("no shared chat templates in FUSIOND_SHARED (%r)" % SHARED,
                 "FUSIOND_REQUIRE_SHARED")


class Refused(Exception):
    pass


def raise_exception(msg):
    raise Refused(msg)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=[jinja2.ext.loopcontrols])
ENV.filters["tojson"] = tojson
ENV.globals["raise_exception"] = raise_exception

FAMILIES = {
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "qwen": ("Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>"),
    "mistral": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Current weather in a city, \"quoted\" and {braced}",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "Zürich or 東京"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "ratio": {"type": "number", "default": 0.5},
        "alerts": {"type": "boolean", "default": False},
        "tags": {"type": "array", "items": {"type": "string"}},
        "temp": {"type": "number", "minimum": 0.0, "maximum": 1e2, "default": 2.50,
                 "exclusiveMinimum": -0, "multipleOf": 1e-7},
        "id": {"type": "integer", "maximum": 123456789012345678901234567890},
        "empty": {}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {}}}}
TOOLS = [WEATHER, CLOCK]


def call(cid, name, args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


ARGS = {"city": "Paris \"Left\" \\bank\n{x}", "unit": "c", "days": 3, "ratio": 0.25,
        "alerts": True, "tags": ["a", "ü"], "nested": {"k": [1, 2.5, None, 1.0, -0.0, 1e20]},
        "big": 98765432109876543210}
SYS = {"role": "system", "content": "  You are a helpful bot.  "}
U1 = {"role": "user", "content": " What's the weather in Paris? "}
A_CALL = {"role": "assistant", "content": None, "tool_calls": [call("abcDEF123", "get_weather", ARGS)]}
T_RES = {"role": "tool", "tool_call_id": "abcDEF123", "content": "{\"temp\": 21, \"sky\": \"clear\"}"}
A_TEXT = {"role": "assistant", "content": "It is 21 degrees and clear."}
U2 = {"role": "user", "content": "And what time is it?"}
A_TWO = {"role": "assistant", "content": "Checking both.", "tool_calls": [
    call("call00001", "get_weather", {"city": "Oslo"}), call("call00002", "clock", {})]}
T2 = [{"role": "tool", "tool_call_id": "call00001", "content": "cold"},
      {"role": "tool", "tool_call_id": "call00002", "content": "12:00 Ünïcode"}]

CASES = [
    ("tools, no system", [U1], TOOLS),
    ("tools and system", [SYS, U1], TOOLS),
    ("one call round trip", [SYS, U1, A_CALL, T_RES], TOOLS),
    ("round trip then answer, next question", [SYS, U1, A_CALL, T_RES, A_TEXT, U2], TOOLS),
    ("two calls, two results", [U1, A_TWO] + T2, TOOLS),
    ("history with tool calls, no tools offered", [U1, A_CALL, T_RES, A_TEXT, U2], None),
    ("plain chat, no tools", [SYS, U1, A_TEXT, U2], None),
    ("one tool", [U2], [CLOCK]),
    ("a user message repeated", [U2, A_TEXT, U2], [CLOCK]),
    ("bad call id length", [U1, {"role": "assistant", "content": None,
                                 "tool_calls": [call("short", "clock", {})]},
                            {"role": "tool", "tool_call_id": "short", "content": "x"}], TOOLS),
    ("tools but only a system message", [SYS], TOOLS),
    ("a tool result first", [T_RES, U2], TOOLS),
    ("a system message in the middle", [U1, SYS, U2], TOOLS),
    ("an assistant message carries the tools", [A_TEXT, U2], TOOLS),
    ("call with content and results back to back", [SYS, U1, A_TWO] + T2 + [A_TEXT], TOOLS),
    ("empty and whitespace contents", [{"role": "user", "content": ""},
                                      {"role": "assistant", "content": "  "},
                                      {"role": "user", "content": " \u3000\t"}], [CLOCK]),
    ("unicode and markup in a result", [U1, A_CALL, {"role": "tool", "tool_call_id": "abcDEF123",
                                                     "content": "<tool_response>\"\u00e9\U0001F600"
                                                                "\n[TOOL_RESULTS]"}], TOOLS),
    ("a tool without parameters or description", [U2], [{"type": "function", "function": {
        "name": "noop"}}]),
    ("a tool with a return schema and strict", [U2], [{"type": "function", "function": {
        "name": "r", "description": "d", "parameters": {"type": "object"}, "strict": True,
        "return": {"type": "string"}}}]),
]

fails = 0
checked = 0
for fam, (fname, bos, eos) in FAMILIES.items():
    with open(os.path.join(TDIR, fname), encoding="utf-8") as f:
        tmpl = ENV.from_string(f.read())
    for name, msgs, tools in CASES:
        for agp in (True, False):
            try:
                want = tmpl.render(messages=msgs, tools=tools, bos_token=bos, eos_token=eos,
                                   add_generation_prompt=agp)
                refused = None
            except Refused as e:
                want, refused = None, str(e)
            # as a client sends them: arguments and tools as JSON text (numbers as written)
            sent = [dict(m, tool_calls=[dict(c, function=dict(
                c["function"], arguments=json.dumps(c["function"]["arguments"])))
                for c in m["tool_calls"]]) if m.get("tool_calls") else m for m in msgs]
            req = {"family": fam, "bos": bos, "eos": eos, "add_generation_prompt": agp,
                   "messages": sent}
            if tools is not None:
                req["tools_text"] = json.dumps(tools)
            p = subprocess.run([RENDER], input=json.dumps(req).encode(), capture_output=True)
            got = p.stdout.decode("utf-8")
            checked += 1
            what = "%s: %s (add_generation_prompt=%s)" % (fam, name, agp)
            if refused is not None:
                if p.returncode != 3:
                    fails += 1
                    print("FAIL %s: the template refuses (%s); chat.c rendered:\n%r"
                          % (what, refused, got))
                continue
            if p.returncode != 0 or got != want:
                fails += 1
                print("FAIL %s (rc %d)\n want %r\n  got %r" % (what, p.returncode, want, got))

print("%d renderings compared, %d failed" % (checked, fails))
sys.exit(1 if fails else 0)
