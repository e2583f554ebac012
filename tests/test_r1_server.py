#!/usr/bin/env python3
"""test_r1_server.py: proves the deepseek-r1 chat format end to end through the real fusiond:
a copy of stories260K written with DeepSeek-R1-Distill's chat template (tests/data) is
detected as deepseek-r1, and since its generation prompt ends in "<think>\\n", the answer
starts inside the reasoning: a few tokens are rewritten to hold R1-style output and
logit_bias picks them.  Checked whole and streamed (the deltas adding up to the whole
answer's fields, reasoning before content): "r</think>\\n\\nanswer" splits into reasoning and
content, an unclosed block is all reasoning, reasoning_tokens counted, reasoning_format none
leaves it all in content; after tool outputs (the prompt opens no block) the answer is
content; enable_thinking false closes the block in the prompt (all content); a history with
tool calls and </think> is served; with tools offered and no call the split is the same.
Usage: test_r1_server.py (python3 stdlib only)."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402
from test_reasoning_server import FAILS, body, check, split_case  # noqa: E402

# Token ids of stories260K (single rare characters) rewritten to carry R1 output.
ANS, OPEN = 503, 507
TOKENS = {
    ANS: "\nI reason.\n</think>\n\nThe answer. ",
    OPEN: " Still thinking \n",
}
USER = [{"role": "user", "content": "Why?"}]  # as body()'s
TOOLS = [{"type": "function", "function": {"name": "clock", "parameters": {
    "type": "object", "properties": {}}}}]


def main():
    model = loopback.shared_model()
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates",
                           "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
              encoding="utf-8") as f:
        template = f.read()
    tmp = scratch_dir("fusiond-r1-")
    gguf = os.path.join(tmp, "r1-think.gguf")
    gguf_rewrite(model, gguf, template, 2048, TOKENS)

    with loopback.daemon(check, "deepseek-r1 daemon exit", model=gguf) as d:
        check(b"deepseek-r1" in d.logtext(), "the DeepSeek-R1 template is detected")
        split_case(d, body(ANS), "I reason.", "The answer. ", 1, "length",
                   "closed in the first token")
        split_case(d, body(ANS, 3), "I reason.", "The answer. " + 2 * TOKENS[ANS], 1, "length",
                   "closed, then more")
        split_case(d, body(OPEN, 3), "Still thinking \n Still thinking \n Still thinking", "",
                   3, "length", "never closed")
        split_case(d, body(ANS, reasoning_format="none"), None, TOKENS[ANS], None, "length",
                   "reasoning_format none")
        split_case(d, body(ANS, reasoning_format="deepseek"), "I reason.", "The answer. ", 1,
                   "length", "reasoning_format deepseek")
        # ending on tool outputs, the template writes no "<｜Assistant｜><think>\n": the
        # answer does not start inside a block
        hist = USER + [
            {"role": "assistant", "content": "<think>\nhm\n</think>\n\nA."},
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "clock", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "12:00"}]
        split_case(d, body(ANS, messages=hist), None, TOKENS[ANS], 0, "length",
                   "after tool outputs")
        split_case(d, body(ANS, messages=hist[:2] + [{"role": "user", "content": "So?"}]),
                   "I reason.", "The answer. ", 1, "length", "history with </think>")
        # enable_thinking false: llama-server's "</think>" after the prompt's "<think>\n" (one
        # more prompt token or more), and the answer is all content
        st, on = d.post("/v1/chat/completions", body(ANS))[::2]
        st2, off = d.post("/v1/chat/completions",
                          body(ANS, chat_template_kwargs={"enable_thinking": False}))[::2]
        check(st == 200 and st2 == 200 and
              off["usage"]["prompt_tokens"] > on["usage"]["prompt_tokens"] and
              off["choices"][0]["message"]["content"] == TOKENS[ANS] and
              "reasoning_content" not in off["choices"][0]["message"],
              "enable_thinking false: %r vs %r" % (off, on))
        # with tools offered and no call written, the reasoning is split as without them
        # (the calls themselves: test_tools_server.py)
        split_case(d, body(ANS, tools=TOOLS), "I reason.", "The answer. ", 1, "length",
                   "tools offered, no call")


main()
if FAILS:
    print("%d failures" % len(FAILS))
    sys.exit(1)
print("deepseek-r1: all checks passed")
