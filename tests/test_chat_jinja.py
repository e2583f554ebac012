#!/usr/bin/env python3
"""test_chat_jinja.py: proves server/chat.c renders conversations with tools, tool calls and
tool results byte for byte as the real templates do: each of Llama 3.1, Qwen 2.5 and Mistral
Nemo's .jinja files in $FUSIOND_SHARED/chat-templates, and Qwen3's in the repository
(tests/data/chat-templates), is rendered with jinja2 the way transformers renders it
(trim_blocks, lstrip_blocks, loopcontrols, tojson as json.dumps with ensure_ascii=False,
raise_exception) and compared with tests/chat_render's output; a template that refuses a
conversation must be refused by chat.c too.  DeepSeek-R1-Distill's template (also in
tests/data) gets its own cases: <think> in assistant history, tool calls and outputs, tools
(its template renders no tools list: it is given the messages with llama-server's polyfill,
the tools and an example call in the system message, as r1_polyfill writes them), seeded
random conversations.  Mistral Small 3.2's family (mistral3) is compared with Unsloth's
Devstral-Small-2507 template (tests/data), less the model's own default system text that the
template writes when the conversation has no system message (chat.c leaves it out).  IBM
Granite 3.3's template (tests/data) is rendered with transformers' strftime_now (today's
date in its default system text).  Phi-4-mini's real template (tests/data) takes the tools
from a system message and has no place for tool calls: it is given them as fusiond maps
them (phi4_msgs).  gpt-oss's template (tests/data) is given the messages as llama-server
gives them (gptoss_msgs: arguments as objects, reasoning_content as "thinking" on messages
with calls), with today's date, reasoning_effort, nested/oneOf/enum schemas, and without a
generation prompt its last <|return|> made <|end|> as llama-server makes it.  Qwen3 also gets reasoning (reasoning_content,
<think> in content), multi-step tool use and enable_thinking.  Skips (77) when python3-jinja2
is missing, unless FUSIOND_REQUIRE_JINJA=1 (CI's flag), where that is a failure; without the
shared folder only Qwen3 is compared (a failure under FUSIOND_REQUIRE_SHARED=1)."""

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


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_jinja import ENV, WEATHER, Refused, jinja2, tojson  # noqa: E402,F401  (exits 77 without jinja2)

SHARED = os.environ.get("FUSIOND_SHARED", "")
TDIR = os.path.join(SHARED, "chat-templates")
HAVE_SHARED = bool(SHARED) and os.path.isdir(TDIR)
if not HAVE_SHARED:
    if os.environ.get("FUSIOND_REQUIRE_SHARED") == "1":
        print("FAIL: no shared chat templates in FUSIOND_SHARED (%r) "
              "(FUSIOND_REQUIRE_SHARED=1)" % SHARED)
        sys.exit(1)
    print("note: no shared chat templates in FUSIOND_SHARED (%r): Qwen3's alone" % SHARED)
SRCDIR = os.environ.get("top_srcdir", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   ".."))
QWEN3 = os.path.join(SRCDIR, "tests", "data", "chat-templates", "Qwen-Qwen3-0.6B.jinja")
R1 = os.path.join(SRCDIR, "tests", "data", "chat-templates",
                  "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
MISTRAL3 = os.path.join(SRCDIR, "tests", "data", "chat-templates",
                        "unsloth-mistral-Devstral-Small-2507.jinja")
GRANITE = os.path.join(SRCDIR, "tests", "data", "chat-templates",
                       "ibm-granite-granite-3.3-2B-Instruct.jinja")
PHI4MINI = os.path.join(SRCDIR, "tests", "data", "chat-templates",
                        "microsoft-Phi-4-mini-instruct.jinja")
GPTOSS = os.path.join(SRCDIR, "tests", "data", "chat-templates", "openai-gpt-oss-120b.jinja")
R1_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
R1_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"



FAMILIES = {
    "llama3.1": (os.path.join(TDIR, "meta-llama-Llama-3.1-8B-Instruct.jinja"),
                 "<|begin_of_text|>", "<|eot_id|>"),
    "qwen": (os.path.join(TDIR, "Qwen-Qwen2.5-7B-Instruct.jinja"), "", "<|im_end|>"),
    "mistral": (os.path.join(TDIR, "mistralai-Mistral-Nemo-Instruct-2407.jinja"), "<s>", "</s>"),
    "qwen3": (QWEN3, "", "<|im_end|>"),
    "deepseek-r1": (R1, R1_BOS, R1_EOS),
    "mistral3": (MISTRAL3, "<s>", "</s>"),
    "granite": (GRANITE, "", "<|end_of_text|>"),
    "phi4-mini": (PHI4MINI, "<|endoftext|>", "<|endoftext|>"),
    "gpt-oss": (GPTOSS, "<|startoftext|>", "<|return|>"),
}
if not HAVE_SHARED:
    FAMILIES = {k: FAMILIES[k] for k in ("qwen3", "deepseek-r1", "mistral3", "granite",
                                         "phi4-mini", "gpt-oss")}

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


# Qwen3's reasoning: reasoning_content given, or "<think>...</think>" inside content, rendered
# only for assistant turns after the last real user query (the final one always).
def asst(content, reasoning=None, calls=None):
    m = {"role": "assistant", "content": content}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    if calls:
        m["tool_calls"] = calls
    return m


A_R = asst("It is sunny.", "The user asks about weather.\nCheck Paris.")
A_THINK = asst("<think>\nI should answer briefly.\n</think>\n\nIt is 21 degrees.")
A_THINK_ODD = asst("\n\npre<think>a<think>\n\nb\n\n</think>mid</think>\n\nend\n")
A_THINK_NOOPEN = asst("just thoughts\n</think>answer")
A_EMPTY_THINK = asst("<think>\n\n</think>\n\nPlain answer.")
A_BOTH = asst("<think>in content</think>shown", "given reasoning")
A_R_EMPTY = asst("no reasoning here", "")
A_R_NL = asst("\n\nleading newlines", "\n\nnewlines around\n\n")
A_CALL_R = asst(None, "I need the weather.", [call("c1", "get_weather", {"city": "Paris"})])
A_CALL_TEXT = asst("<think>\nlook it up\n</think>\n\nLet me check.",
                   calls=[call("c2", "get_weather", {"city": "Oslo"}),
                          call("c3", "clock", {})])
T_C1 = {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
T_C2 = [{"role": "tool", "tool_call_id": "c2", "content": "cold"},
        {"role": "tool", "tool_call_id": "c3", "content": "12:00"}]
U_WRAP = {"role": "user", "content": "<tool_response>\nwrapped result\n</tool_response>"}
NO_THINK = {"enable_thinking": False}
THINK = {"enable_thinking": True}

QWEN3_CASES = [
    ("plain chat", [U1], None),
    ("plain chat, enable_thinking false", [U1], None, NO_THINK),
    ("plain chat, enable_thinking true", [SYS, U1], None, THINK),
    ("multi-turn, reasoning_content before the last query", [SYS, U1, A_R, U2], None),
    ("reasoning_content in the final message", [U1, A_R], None),
    ("think in content, final", [U1, A_THINK], None),
    ("think in content, earlier turn", [U1, A_THINK, U2], None),
    ("odd think markup", [U1, A_THINK_ODD], None),
    ("odd think markup, then a query", [U1, A_THINK_ODD, U2, A_THINK_ODD], None),
    ("closing tag only", [U1, A_THINK_NOOPEN], None),
    ("empty think block", [U1, A_EMPTY_THINK], None),
    ("reasoning_content wins over think in content", [U1, A_BOTH], None),
    ("empty reasoning_content, not last", [U1, A_R_EMPTY, A_TEXT], None),
    ("newlines around reasoning and content", [U1, A_R_NL], None),
    ("tools, call with reasoning, result, answer", [SYS, U1, A_CALL_R, T_C1, A_R], TOOLS),
    ("multi-step tool use", [U1, A_CALL_R, T_C1, A_CALL_TEXT] + T_C2 + [A_THINK], TOOLS),
    ("multi-step, unfinished", [U1, A_CALL_TEXT] + T_C2, TOOLS, NO_THINK),
    ("a user message wrapping a tool response", [U1, A_CALL_R, U_WRAP, A_R], TOOLS),
    ("only wrapped user messages", [U_WRAP, A_THINK, U_WRAP, A_R], None),
    ("tool calls in history, no tools", [U1, A_CALL_R, T_C1, A_R, U2], None),
    ("system in the middle, tools", [SYS, U1, SYS, A_R_NL, U2], TOOLS, NO_THINK),
    ("assistant first", [A_THINK, U2], None),
    ("tools, no system, thinking off", [U1], TOOLS, NO_THINK),
]


def jinja_msgs(fam, msgs, tools):
    """What the template is given: the messages as vLLM hands them over (a null content,
    which Qwen3's and mistral3's templates cannot take, as ""; DeepSeek-R1's and mistral3's
    concatenate the arguments, so they go as the JSON text a client sends; DeepSeek-R1's
    tools as llama-server polyfills them)."""
    if fam == "phi4-mini":
        return phi4_msgs(msgs, tools)
    if fam == "gpt-oss":
        return gptoss_msgs(msgs)
    if fam in ("mistral3", "granite"):
        msgs = [dict(m, content="") if m.get("content") is None else m for m in msgs]
    if fam in ("deepseek-r1", "mistral3"):
        if fam == "deepseek-r1":
            msgs = r1_polyfill(msgs, tools)
        return [dict(m, tool_calls=[dict(c, function=dict(
            c["function"], arguments=json.dumps(c["function"]["arguments"])))
            for c in m["tool_calls"]]) if m.get("tool_calls") else m for m in msgs]
    if fam != "qwen3":
        return msgs
    return [dict(m, content="") if m.get("content") is None else m for m in msgs]


def gptoss_msgs(msgs):
    """What llama-server gives gpt-oss's template: the arguments as objects (its polyfill
    parses them: the template prints them with tojson), a null content as "", and an
    assistant message's reasoning_content as the template's "thinking" for messages with tool
    calls only."""
    out = []
    for m in msgs:
        m = dict(m)
        if m.get("content") is None:
            m["content"] = ""
        r = m.pop("reasoning_content", None)
        if m.get("tool_calls") and isinstance(r, str):
            m["thinking"] = r
        out.append(m)
    return out


def jinja_tools(fam, tools):
    """gpt-oss's template adds each tool's description to a string, which jinja2 cannot do
    when there is none; chat.c writes it as empty, the same as an empty description."""
    if fam != "gpt-oss" or not tools:
        return tools
    return [dict(t, function=dict({"description": ""}, **t["function"])) for t in tools]


GPTOSS_CASES = [
    ("reasoning effort low", [SYS, U1], TOOLS, {"reasoning_effort": "low"}),
    ("reasoning effort high, no tools", [U1, A_TEXT, U2], None, {"reasoning_effort": "high"}),
    ("empty system message", [{"role": "system", "content": ""}, U1], None),
    ("developer role first", [{"role": "developer", "content": "Be terse."}, U1], [CLOCK]),
    ("call with reasoning, result, no answer yet", [U1, A_CALL_R, T_C1], TOOLS),
    ("call with reasoning, result, answer", [U1, A_CALL_R, T_C1, A_R, U2], TOOLS),
    ("content and reasoning with a call", [U1, asst("text", "thought", [call(
        "c9", "clock", {})])], TOOLS),
    ("channel tags in content", [U1, asst("<|channel|>final<|message|>hi")], None),
    ("a tool result without a call", [U1, T_C1], TOOLS),
    ("nested, oneOf, nullable and typed-list schemas", [U2], [{"type": "function", "function": {
        "name": "f", "description": "many types", "parameters": {
            "type": "object", "required": ["a", "o"], "properties": {
                "a": {"type": "array", "items": {"type": "object", "properties": {
                    "x": {"type": "integer"}, "y": {"type": "string", "nullable": True}},
                    "required": ["x"]}},
                "aa": {"type": "array", "items": {"type": "array", "items": {
                    "type": "boolean"}}, "nullable": True},
                "big": {"type": "array", "items": {"type": "object", "properties": {
                    "a_long_property_name": {"type": "string"},
                    "another_long_one": {"type": "number"}}}},
                "o": {"type": "object", "properties": {"p": {"type": "boolean"},
                                                       "q": {"type": "string",
                                                             "enum": ["u", "v"]}}},
                "e": {"type": "object"},
                "u": {"type": ["string", "null"]},
                "u1": {"type": ["integer"]},
                "one": {"oneOf": [{"type": "string", "description": "a name"},
                                  {"type": "integer", "default": 3}],
                        "default": "x"},
                "en": {"type": "string", "enum": ["p", "q"], "default": "p",
                       "description": "pick"},
                "ns": {"type": "string", "nullable": True, "default": None},
                "any": {"description": "no type"}}}}}]),
]


PHI4_SYSTEM = "You are a helpful assistant with some tools."


def phi4_msgs(msgs, tools):
    """What fusiond gives Phi-4-mini's template, which takes the tools from a system message's
    own "tools" field (a JSON text) and has no place for tool calls: the tools' function
    objects as JSON (the model card's list) on the first message when it is a system
    message, else on a system message with the model card's text put first; an assistant's
    calls written into its content as the model writes them, after a space when there is
    text: functools[{"name": ..., "arguments": ...}, ...]."""
    out = []
    for m in msgs:
        m = dict(m)
        if m.get("tool_calls"):
            text = m.get("content") or ""
            m["content"] = (text + " " if text else "") + "functools" + tojson(
                [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                 for c in m["tool_calls"]])
            del m["tool_calls"]
        elif m.get("content") is None:
            m["content"] = ""
        out.append(m)
    if tools:
        listed = tojson([t["function"] for t in tools])
        if out and out[0]["role"] == "system":
            out[0] = dict(out[0], tools=listed)
        else:
            out.insert(0, {"role": "system", "content": PHI4_SYSTEM, "tools": listed})
    return out


R1_EXAMPLE = ("<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>"
              "function<\uff5ctool\u2581sep\uff5c>tool_name\n```json\n{\"arg1\": \"some_value\"}\n"
              "```<\uff5ctool\u2581call\u2581end\uff5c><\uff5ctool\u2581calls\u2581end\uff5c>")


def r1_polyfill(msgs, tools):
    """llama-server's (minja's) tools polyfill for a template without tools: the list as
    json.dumps(indent=2) and an example call, after the first message's text and "\n\n" when
    it is a system message, else as a new system message first."""
    if not tools:
        return msgs
    text = ("You can call any of the following tools to satisfy the user's requests: " +
            json.dumps(tools, indent=2, ensure_ascii=False) +
            "\n\nExample tool call syntax:\n\n" + R1_EXAMPLE + "\n\n")
    if msgs and msgs[0]["role"] == "system":
        return [dict(msgs[0], content=msgs[0]["content"] + "\n\n" + text)] + msgs[1:]
    return [{"role": "system", "content": text}] + msgs


def random_qwen3_cases(n, seed=1234):
    """Conversations drawn from the pieces above (a fixed seed: the same ones every run), for
    the orderings no hand-written case thought of."""
    import random
    rng = random.Random(seed)
    pool = [SYS, U1, U2, U_WRAP, A_TEXT, A_R, A_THINK, A_THINK_ODD, A_THINK_NOOPEN, A_EMPTY_THINK,
            A_BOTH, A_R_EMPTY, A_R_NL, A_CALL_R, A_CALL_TEXT, A_CALL, A_TWO, T_C1, T_RES] + T2
    out = []
    for i in range(n):
        msgs = [rng.choice(pool) for _ in range(rng.randint(1, 7))]
        tools = rng.choice([None, TOOLS, [CLOCK]])
        kw = rng.choice([{}, NO_THINK, THINK])
        out.append(("random %d" % i, msgs, tools, kw))
    return out


QWEN3_CASES += random_qwen3_cases(150)

# DeepSeek-R1-Distill: the model's own <think> blocks in history (dropped up to the last
# </think>), tool calls (the template's first-call flag spans the whole conversation) and
# tool outputs (so does its first-output flag), several system messages (the last wins).
R1_A_THINK = asst("<think>\nLet me think.\n</think>\n\nIt is 21 degrees.")
R1_A_NOOPEN = asst("thoughts only closed</think>answer")
R1_A_TWO_CLOSE = asst("a</think>b</think>\nc")
R1_SYS2 = {"role": "system", "content": "Second system message."}
R1_A_EMPTY = asst("")
R1_CASES = [
    ("plain chat", [U1], None),
    ("system", [SYS, U1], None),
    ("only a system message", [SYS], None),
    ("multi-turn with think in assistant content", [SYS, U1, R1_A_THINK, U2], None),
    ("think, unopened close, two closes", [U1, R1_A_THINK, U2, R1_A_NOOPEN, U1,
                                           R1_A_TWO_CLOSE], None),
    ("two system messages, the last wins", [SYS, U1, R1_SYS2, U2], None),
    ("one call round trip", [SYS, U1, A_CALL, T_RES], None),
    ("round trip then answer, next question", [SYS, U1, A_CALL, T_RES, A_TEXT, U2], None),
    ("two calls with content, two results", [U1, A_TWO] + T2, None),
    ("call with content and results, then answer", [SYS, U1, A_TWO] + T2 + [A_TEXT], None),
    ("two rounds of calls", [U1, A_CALL, T_RES, R1_A_THINK, U2, A_TWO] + T2 + [R1_A_THINK],
     None),
    ("calls after an answer", [U1, A_TEXT, U2, A_CALL, T_RES], None),
    ("a tool result first", [T_RES, U2], None),
    ("empty contents", [{"role": "user", "content": ""}, R1_A_EMPTY], None),
    ("unicode and markup in a result", [U1, A_CALL, {"role": "tool", "tool_call_id": "abcDEF123",
                                                     "content": "<\uff5ctool\u2581output\u2581"
                                                                "end\uff5c>\"\u00e9\U0001F600"}],
     None),
    ("assistant first", [R1_A_THINK, U2], None),
    ("tools, no system", [U1], TOOLS),
    ("tools and system", [SYS, U1], TOOLS),
    ("tools, round trip then answer", [SYS, U1, A_CALL, T_RES, A_TEXT, U2], TOOLS),
    ("tools, two calls, two results", [U1, A_TWO] + T2, TOOLS),
    ("tools, a later system message wins", [SYS, U1, R1_SYS2, U2], TOOLS),
    ("tools, a system message after the first", [U1, SYS, U2], TOOLS),
    ("a tool without parameters", [U2], [{"type": "function", "function": {"name": "noop"}}]),
]


def random_r1_cases(n, seed=4321):
    """Seeded random conversations from the pieces above, as for Qwen3."""
    import random
    rng = random.Random(seed)
    pool = [SYS, R1_SYS2, U1, U2, A_TEXT, R1_A_THINK, R1_A_NOOPEN, R1_A_TWO_CLOSE, R1_A_EMPTY,
            A_CALL, A_TWO, A_CALL_TEXT, T_RES, T_C1] + T2
    return [("random %d" % i, [rng.choice(pool) for _ in range(rng.randint(1, 7))],
             rng.choice([None, TOOLS, [CLOCK]])) for i in range(n)]


R1_CASES += random_r1_cases(150)

fails = 0
checked = 0
for fam, (fname, bos, eos) in FAMILIES.items():
    with open(fname, encoding="utf-8") as f:
        tmpl = ENV.from_string(f.read())
    cases = [c if len(c) == 4 else c + ({},) for c in CASES]
    if fam == "deepseek-r1":
        cases = [c + ({},) for c in R1_CASES]
    if fam == "qwen3":
        cases += [c if len(c) == 4 else c + ({},) for c in QWEN3_CASES]
    if fam in ("mistral3", "granite", "phi4-mini", "gpt-oss"):
        cases += [c + ({},) for c in random_r1_cases(100, seed=777)]
    if fam == "gpt-oss":
        cases += [c if len(c) == 4 else c + ({},) for c in QWEN3_CASES + GPTOSS_CASES]
    for name, msgs, tools, kw in cases:
        for agp in (True, False):
            try:
                want = tmpl.render(messages=jinja_msgs(fam, msgs, tools),
                                   tools=jinja_tools(fam, tools), bos_token=bos,
                                   eos_token=eos, add_generation_prompt=agp, **kw)
                refused = None
            except Refused as e:
                want, refused = None, str(e)
            if fam == "gpt-oss" and want is not None and not agp:
                # llama-server's change: the last <|return|> (an end of generation the
                # model must not read) becomes <|end|>
                k = want.rfind("<|return|>")
                if k >= 0:
                    want = want[:k] + "<|end|>" + want[k + len("<|return|>"):]
            if fam == "mistral3" and want is not None and not (msgs and msgs[0]["role"] == "system"):
                # the model's default system text, which chat.c does not write
                head = bos + "[SYSTEM_PROMPT]"
                if want.startswith(head):
                    want = bos + want[want.index("[/SYSTEM_PROMPT]") + len("[/SYSTEM_PROMPT]"):]
            # as a client sends them: arguments and tools as JSON text (numbers as written)
            sent = [dict(m, tool_calls=[dict(c, function=dict(
                c["function"], arguments=json.dumps(c["function"]["arguments"])))
                for c in m["tool_calls"]]) if m.get("tool_calls") else m for m in msgs]
            req = dict(kw, family=fam, bos=bos, eos=eos, add_generation_prompt=agp,
                       messages=sent)
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
