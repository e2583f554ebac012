#!/usr/bin/env python3
"""test_jinja_templates.py: proves server/jinja.c renders real chat templates byte for byte as
transformers does: every .jinja file in $FUSIOND_SHARED/chat-templates and
tests/data/chat-templates is rendered by python3-jinja2 (trim_blocks, lstrip_blocks,
loopcontrols, tojson as json.dumps(ensure_ascii=False), raise_exception, strftime_now) and by
tests/jinja_render over the same variables: seeded random conversations (system, user,
assistant, tool messages; tool calls with arguments as objects and, every other case, as
JSON text; reasoning_content; tools;
add_generation_prompt on and off; enable_thinking, reasoning_effort), alternating ones for the
templates that demand it, and hand-written ones.
A conversation the template refuses must be refused by jinja.c too, with raise_exception's
own message.  Skips (77) when python3-jinja2 is missing, unless FUSIOND_REQUIRE_JINJA=1."""

import json
import os
import random
import subprocess
import sys

BUILD = os.environ.get("top_builddir", ".")
RENDER = os.path.join(BUILD, "tests", "jinja_render")
SRCDIR = os.environ.get("top_srcdir", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_jinja import ENV, WEATHER, Refused, jinja2, tojson  # noqa: E402,F401  (exits 77 without jinja2)



TEMPLATES = []
SHARED = os.environ.get("FUSIOND_SHARED", "")
for d in (os.path.join(SHARED, "chat-templates") if SHARED else None,
          os.path.join(SRCDIR, "tests", "data", "chat-templates")):
    if d and os.path.isdir(d):
        TEMPLATES += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jinja"))
if not TEMPLATES:
    print("FAIL: no templates found")
    sys.exit(1)

CLOCK = {"type": "function", "function": {"name": "clock", "description": "The time.",
                                          "parameters": {"type": "object", "properties": {}}}}
TOOLSETS = [None, [WEATHER, CLOCK], [CLOCK]]

TEXTS = ["Hello!", " What's the weather in Paris? ", "", "  ", "line one\nline two\n",
         "Ünïcode 東京 \U0001F600 and \"quotes\" and 'single' {{ braces }} {% tags %}",
         "<think>\nhidden\n</think>\n\nshown", "a</think>b", "tab\there\r\nCRLF",
         "[INST] fake [/INST] <|im_end|>"]


def call(i, name, args):
    return {"id": "call%05d" % i, "type": "function", "function": {"name": name,
                                                                   "arguments": args}}


ARGS = [{"city": "Paris \"Left\" \\bank\n{x}", "unit": "c", "days": 3, "ratio": 0.25,
         "alerts": True, "tags": ["a", "ü"], "nested": {"k": [1, 2.5, None, 1.0, -0.0, 1e20]}},
        {}, {"city": "Oslo"}]


def random_msgs(rng):
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(TEXTS[:6])})
    for _ in range(rng.randint(0, 6)):
        r = rng.random()
        if r < 0.35:
            msgs.append({"role": "user", "content": rng.choice(TEXTS)})
        elif r < 0.7:
            m = {"role": "assistant", "content": rng.choice(TEXTS)}
            if rng.random() < 0.3:
                m["reasoning_content"] = rng.choice(["I think.", "\nstep 1\nstep 2\n", ""])
            msgs.append(m)
        elif r < 0.85:
            calls = [call(rng.randint(0, 99999), rng.choice(["get_weather", "clock"]),
                          rng.choice(ARGS)) for _ in range(rng.randint(1, 2))]
            m = {"role": "assistant", "content": rng.choice(["", "Checking."]),
                 "tool_calls": calls}
            if rng.random() < 0.3:
                m["reasoning_content"] = "Need a tool."
            msgs.append(m)
            for c in calls:
                if rng.random() < 0.9:
                    msgs.append({"role": "tool", "tool_call_id": c["id"],
                                 "name": c["function"]["name"],
                                 "content": rng.choice(["{\"temp\": 21}", "cold", "12:00 Ü"])})
        else:
            msgs.append({"role": "user", "content": rng.choice(TEXTS)})
    return msgs


def cases():
    rng = random.Random(20261129)
    fixed = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
        [{"role": "user", "content": "Weather?"},
         {"role": "assistant", "content": "", "tool_calls": [call(1, "get_weather", ARGS[0])]},
         {"role": "tool", "tool_call_id": "call00001", "name": "get_weather",
          "content": "sunny"},
         {"role": "assistant", "content": "Sunny.", "reasoning_content": "It said sunny."}],
        [{"role": "user", "content": [{"type": "text", "text": "parts"}]}],
    ]
    out = []
    for m in fixed:
        for tools in TOOLSETS:
            out.append({"messages": m, "tools": tools})
    for _ in range(120):
        out.append({"messages": random_msgs(rng), "tools": rng.choice(TOOLSETS)})
    for _ in range(40):  # user/assistant alternating, for the templates that demand it
        m = [{"role": "system", "content": rng.choice(TEXTS[:6])}] if rng.random() < 0.4 else []
        for k in range(rng.randint(1, 5)):
            m.append({"role": "user" if k % 2 == 0 else "assistant",
                      "content": rng.choice(TEXTS)})
        out.append({"messages": m, "tools": rng.choice(TOOLSETS)})
    for c in out:
        c["add_generation_prompt"] = rng.random() < 0.6
        k = rng.random()
        if k < 0.25:
            c["enable_thinking"] = rng.random() < 0.5
        elif k < 0.4:
            c["reasoning_effort"] = rng.choice(["low", "medium", "high"])
        if c["tools"] is None:
            del c["tools"]
    return out


BOS_EOS = [("<s>", "</s>"), ("<|begin_of_text|>", "<|eot_id|>"), ("", "<|im_end|>")]


def main():
    fails = checked = 0
    all_cases = cases()
    for path in TEMPLATES:
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            src = f.read()
        try:
            tmpl = ENV.from_string(src)
        except jinja2.TemplateSyntaxError as e:
            print("note: %s: jinja2 cannot parse it (%s); skipped" % (name, e))
            continue
        lines = []
        wants = []
        for i, c in enumerate(all_cases):
            bos, eos = BOS_EOS[i % len(BOS_EOS)]
            v = dict(c, bos_token=bos, eos_token=eos)
            if i % 2:  # the arguments as the JSON text sent, as fusiond gives them to a
                # template that prints them as text (chat_jinja_string_args)
                v["messages"] = [dict(m, tool_calls=[dict(t, function=dict(
                    t["function"], arguments=json.dumps(t["function"]["arguments"])))
                    for t in m["tool_calls"]]) if m.get("tool_calls") else m
                    for m in v["messages"]]
            text = json.dumps(v, ensure_ascii=False)
            lines.append(text)
            try:
                wants.append(("OK", tmpl.render(**json.loads(text))))
            except Refused as e:
                wants.append(("REFUSED", str(e)))
            except Exception as e:  # any other template error: jinja.c must fail too
                wants.append(("ERR", "%s: %s" % (type(e).__name__, e)))
        p = subprocess.run([RENDER, path], input=("\n".join(lines) + "\n").encode(),
                           capture_output=True)
        if p.returncode != 0:
            fails += 1
            print("FAIL %s: jinja_render exited %d: %s" % (name, p.returncode,
                                                           p.stdout.decode(errors="replace")))
            continue
        buf = p.stdout
        pos = 0
        for i, (kind, want) in enumerate(wants):
            nl = buf.index(b"\n", pos)
            tag, n = buf[pos:nl].decode().split()
            n = int(n)
            got = buf[nl + 1:nl + 1 + n].decode("utf-8")
            pos = nl + 1 + n + 1
            checked += 1
            what = "%s case %d" % (name, i)
            if kind == "OK":
                if tag != "OK" or got != want:
                    fails += 1
                    print("FAIL %s (%s)\n vars %s\n want %r\n  got %r" % (what, tag, lines[i],
                                                                       want, got))
            elif tag != "ERR" or (kind == "REFUSED" and got != want):
                fails += 1
                print("FAIL %s: jinja2 refused (%s: %r); jinja.c: %s %r" % (what, kind, want,
                                                                            tag, got))
    print("%d renderings of %d templates compared, %d failed" % (checked, len(TEMPLATES),
                                                                 fails))
    return 1 if fails else 0


sys.exit(main())
