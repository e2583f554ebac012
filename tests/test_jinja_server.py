#!/usr/bin/env python3
"""test_jinja_server.py: proves the real fusiond renders chat templates that no built-in
formatter knows with its Jinja interpreter (server/jinja.c): a copy of stories260K whose
tokenizer.chat_template is a template of no known family is served as the "jinja" format, and
/apply-template gives what the template writes for messages, tool calls (arguments as
objects: tojson prints them as sent), tools, chat_template_kwargs and the generation prompt;
the template's raise_exception is the request's 400 with its message, on /apply-template and
/v1/chat/completions; a conversation that ends in the assistant's message is cut after it (the
prefill).  --chat-template-file replaces the model's template (and a file that
cannot be read or parsed stops the start with a clear error); a model template that does not
parse falls back to the plain format with a warning; --jinja renders a known family's
template (Qwen3's) through the interpreter too.  python3 stdlib only."""

import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []

TEMPLATE = (
    "{{ bos_token }}{%- for m in messages %}"
    "{% if m.role == 'system' and not loop.first %}"
    "{{ raise_exception('System message must be first') }}{% endif %}"
    "<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments | tojson }}]"
    "{% endfor %}{% if m.tool_call_id %}({{ m.tool_call_id }}){% endif %}</{{ m.role }}>\n"
    "{% endfor %}"
    "{% if tools %}T:{{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
    "{% if enable_thinking is defined %}E:{{ enable_thinking }}\n{% endif %}"
    "{% if flavour is defined %}F:{{ flavour }}\n{% endif %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}\n")

CLOCK = [{"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {}}}}]


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: %s" % what)


def prompt(d, body):
    st, _, js = d.post("/apply-template", body)
    return st, js


def cases(d, bos):
    check(b"chat format jinja" in d.logtext(), "the unknown template is served by the "
          "interpreter:\n%s" % d.logtext().decode(errors="replace")[-2000:])
    st, js = prompt(d, {"messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Hi \u00fc"}]})
    check(st == 200 and js.get("prompt") == bos + "<system>Be brief.</system>\n"
          "<user>Hi \u00fc</user>\n<assistant>", "apply-template: %r" % js)
    st, js = prompt(d, {"messages": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "clock", "arguments": "{\"tz\": \"UTC\", \"n\": 1.0}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"}],
        "tools": CLOCK, "add_generation_prompt": False,
        "chat_template_kwargs": {"enable_thinking": False, "flavour": "x"}})
    # with tools, llama-server's generic format's instruction opens the system message
    want = (bos + "<system>Respond in JSON format, either with `tool_call` (a request to call "
            "tools) or with `response` reply to the user's request</system>\n"
            "<user>Time?</user>\n<assistant>[clock {\"tz\": \"UTC\", \"n\": 1.0}]"
            "</assistant>\n<tool>12:00(c1)</tool>\nT:clock\nE:False\nF:x\n")
    check(st == 200 and js.get("prompt") == want, "apply-template with a call, tools and "
          "kwargs:\n got  %r\n want %r" % (js.get("prompt"), want))
    st, js = prompt(d, {"messages": [{"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": "Sure, "}]})
    check(st == 200 and js.get("prompt") == bos + "<user>Hi</user>\n<assistant>Sure, ",
          "an assistant prefill is cut after its content: %r" % js)
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}
    st, js = prompt(d, bad)
    check(st == 400 and js["error"]["message"] == "System message must be first",
          "raise_exception on /apply-template: %d %r" % (st, js))
    st, _, js = d.post("/v1/chat/completions", dict(bad, max_tokens=2))
    check(st == 400 and js["error"]["message"] == "System message must be first",
          "raise_exception on chat: %d %r" % (st, js))
    st, _, js = d.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}],
                                                "max_tokens": 3, "tools": CLOCK})
    check(st == 200 and js["choices"][0]["message"]["role"] == "assistant",
          "a chat with tools through the interpreter: %d %r" % (st, js))


def main():
    model = loopback.shared_model()
    tmp = scratch_dir("fusiond-jinja-")
    gguf = os.path.join(tmp, "jinja.gguf")
    gguf_rewrite(model, gguf, TEMPLATE, 2048, {})
    with loopback.daemon(check, "jinja daemon exit", model=gguf) as d:
        cases(d, "<s>")  # stories260K's BOS text
    # the same template from a file, the model's own being one that does not parse
    broken = os.path.join(tmp, "broken.gguf")
    gguf_rewrite(model, broken, "{% for m in messages %}{{ m.content }}", 2048, {})
    tfile = os.path.join(tmp, "t.jinja")
    with open(tfile, "w", encoding="utf-8") as f:
        f.write(TEMPLATE)
    with loopback.daemon(check, "plain fallback daemon exit", model=broken) as d:
        log = d.logtext()
        check(b"does not parse" in log and b"chat format plain" in log,
              "a broken model template falls back to plain:\n%s" % log.decode(errors="replace"))
        st, js = prompt(d, {"messages": [{"role": "user", "content": "Hi"}]})
        check(st == 200 and js.get("prompt") == "User: Hi\nAssistant:", "plain: %r" % js)
    with loopback.daemon(check, "template file daemon exit", "--chat-template-file", tfile,
                         model=broken) as d:
        cases(d, "<s>")
    # --jinja on a known family: Qwen3's template rendered by the interpreter
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates", "Qwen-Qwen3-0.6B.jinja"),
              encoding="utf-8") as f:
        qwen3 = f.read()
    q = os.path.join(tmp, "qwen3.gguf")
    gguf_rewrite(model, q, qwen3, 2048, {})
    msgs = {"messages": [{"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "<think>\nx\n</think>\n\nYo"},
                         {"role": "user", "content": "Again"}],
            "chat_template_kwargs": {"enable_thinking": False}}
    with loopback.daemon(check, "qwen3 daemon exit", model=q) as d:
        st, builtin = prompt(d, msgs)
    with loopback.daemon(check, "qwen3 --jinja daemon exit", "--jinja", model=q) as d:
        check(b"chat format qwen3 (rendered by the Jinja interpreter)" in d.logtext(),
              "--jinja on qwen3: %s" % d.logtext().decode(errors="replace")[-1500:])
        st2, viajinja = prompt(d, msgs)
    check(st == st2 == 200 and builtin == viajinja, "qwen3 built-in vs interpreter:\n %r\n %r"
          % (builtin, viajinja))
    # a template file that cannot be read or parsed stops the start
    bad = os.path.join(tmp, "bad.jinja")
    with open(bad, "w") as f:
        f.write("{% if x %}")
    for path, want in ((os.path.join(tmp, "none.jinja"), b"cannot read it"),
                       (bad, b"does not parse: line 1 column 11")):
        p = subprocess.run([loopback.fusiond_path(), "--model", gguf, "--port", "0",
                            "--chat-template-file", path], capture_output=True, timeout=60)
        check(p.returncode != 0 and want in p.stdout + p.stderr,
              "bad template file %s: rc %d %r" % (path, p.returncode, p.stderr[-500:]))
    if FAILS:
        print("%d failures" % len(FAILS))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
