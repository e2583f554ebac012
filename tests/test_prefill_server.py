#!/usr/bin/env python3
"""test_prefill_server.py: proves an assistant prefill and the reasoning budget end to end
through the real fusiond on a copy of stories260K written with Qwen3's chat template: a chat
whose last message is the assistant's answers, greedily, exactly what /completion continues
the rendered prompt (/apply-template) with, whole and streamed (only the new text, none of
the prefill), on /v1/chat/completions, /v1/responses and Anthropic's /v1/messages; a prefill
that opens <think> continues the reasoning (reasoning_content gets the continuation); the
refusals (a prefill with tool calls, with a forced tool_choice, Anthropic's trailing
whitespace), --no-prefill-assistant (a whole turn), and --jinja (Qwen3's real template through
the interpreter: the same prompts and answers).  The budget: with the block opened (by
deepseek-r1's generation prompt, or a Qwen3 prefill), reasoning_budget_tokens N leaves exactly
the N greedy tokens /completion gives as the reasoning, then the tokens of "</think>\\n\\n",
then the answer /completion continues that with; streamed the same; budget 0 switches
thinking off as enable_thinking false does; the same under n-gram speculation;
reasoning_budget_message is written before the
forced end; --reasoning-budget sets it server-wide, and
Anthropic's thinking.budget_tokens per request; gpt-oss (harmony tokens written into the
vocabulary, a token holding a whole analysis header that logit_bias keeps picking): the
analysis message gets exactly N tokens, then the final channel's header is forced, and a
later opening (or any, with budget 0) is closed at once.  python3 stdlib only."""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []
USER = [{"role": "user", "content": "Tell me a story."}]
PREFILL = "Once upon a time"
THINKING = "<think>\nOnce upon a time"


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def post(d, path, body):
    st, _, js = d.post(path, body)
    return st, js


def prompt_of(d, msgs):
    st, js = post(d, "/apply-template", {"messages": msgs})
    check(st == 200, "apply-template: %d %r" % (st, js))
    return js["prompt"]


def tokenize(d, text, add_special=True):
    st, js = post(d, "/tokenize", {"content": text, "add_special": add_special,
                                   "parse_special": True})
    check(st == 200, "tokenize: %d %r" % (st, js))
    ids = js["tokens"]
    if add_special and len(ids) > 1 and ids[0] == ids[1]:
        ids = ids[1:]  # a template that writes BOS itself: the chat adds none
    return ids


def complete(d, prompt, n):
    """/completion's greedy continuation of prompt (text or ids): (text, ids)."""
    st, js = post(d, "/completion", {"prompt": prompt, "n_predict": n, "temperature": 0,
                                     "return_tokens": True, "cache_prompt": False})
    check(st == 200, "completion: %d %r" % (st, js))
    return js["content"], js.get("tokens") or []


def chat(d, msgs, max_tokens, **kw):
    b = {"messages": msgs, "max_tokens": max_tokens, "temperature": 0}
    b.update(kw)
    return post(d, "/v1/chat/completions", b)


def chat_stream(d, msgs, n, **kw):
    b = {"messages": msgs, "max_tokens": n, "temperature": 0, "stream": True}
    b.update(kw)
    st, _, raw = d.request("POST", "/v1/chat/completions", b)
    frames, done = sse_frames(raw)
    check(st == 200 and done, "chat stream: %d, [DONE] %s" % (st, done))
    r = c = ""
    for f in frames:
        for ch in f.get("choices", []):
            dl = ch.get("delta", {})
            r += dl.get("reasoning_content") or ""
            c += dl.get("content") or ""
    return r, c


def prefill_cases(d):
    msgs = USER + [{"role": "assistant", "content": PREFILL}]
    p = prompt_of(d, msgs)
    check(p.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n" + PREFILL),
          "the prompt is cut after the prefill: %r" % p[-80:])
    want, _ = complete(d, p, 12)
    check(want and not want.startswith(PREFILL), "a continuation to compare with: %r" % want)
    st, js = chat(d, msgs, 12)
    msg = js["choices"][0]["message"]
    check(st == 200 and msg["content"] == want and "reasoning_content" not in msg,
          "prefill: %r, want %r" % (msg, want))
    check(js["usage"]["prompt_tokens"] == len(tokenize(d, p)),
          "prefill: prompt tokens %r" % js["usage"])
    r, c = chat_stream(d, msgs, 12)
    check(r == "" and c == want, "prefill streamed: %r %r, want %r" % (r, c, want))
    # n = 2 greedy choices, each the same continuation
    st, js = chat(d, msgs, 12, n=2)
    check([ch["message"]["content"] for ch in js["choices"]] == [want, want], "n=2: %r" % js)

    # a prefill inside <think>: the output continues the reasoning
    tmsgs = USER + [{"role": "assistant", "content": THINKING}]
    tp = prompt_of(d, tmsgs)
    check(tp.endswith("<|im_start|>assistant\n" + THINKING), "think prefill prompt %r" % tp[-60:])
    twant, _ = complete(d, tp, 12)
    st, js = chat(d, tmsgs, 12)
    msg = js["choices"][0]["message"]
    check(st == 200 and msg.get("reasoning_content") == twant.rstrip() and msg["content"] == "",
          "think prefill: %r, want reasoning %r" % (msg, twant))
    r, c = chat_stream(d, tmsgs, 12)
    check(r == twant.rstrip() and c == "", "think prefill streamed: %r %r" % (r, c))
    # reasoning_format none: the continuation is content, as written
    st, js = chat(d, tmsgs, 12, reasoning_format="none")
    check(js["choices"][0]["message"]["content"] == twant, "think prefill, format none: %r" % js)

    # /v1/responses: an assistant message last in the input is a prefill too
    st, js = post(d, "/v1/responses", {"input": [
        {"role": "user", "content": USER[0]["content"]},
        {"role": "assistant", "content": PREFILL}], "max_output_tokens": 12,
        "temperature": 0})
    texts = [c["text"] for o in js.get("output", []) if o["type"] == "message"
             for c in o["content"]]
    check(st == 200 and texts == [want], "responses prefill: %d %r" % (st, js))

    # Anthropic: the answer is the continuation, whole and streamed
    an = {"model": "llama", "max_tokens": 12, "temperature": 0,
          "messages": [{"role": "user", "content": USER[0]["content"]},
                       {"role": "assistant", "content": PREFILL}]}
    st, js = post(d, "/v1/messages", an)
    texts = [b["text"] for b in js.get("content", []) if b["type"] == "text"]
    check(st == 200 and texts == [want], "anthropic prefill: %d %r" % (st, js))
    st, _, raw = d.request("POST", "/v1/messages", dict(an, stream=True))
    got = ""
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if ev.get("type") == "content_block_delta":
                    got += ev["delta"].get("text", "")
    check(st == 200 and got == want, "anthropic prefill streamed: %r, want %r" % (got, want))
    st, js = post(d, "/v1/messages", dict(an, messages=an["messages"][:1] + [
        {"role": "assistant", "content": PREFILL + " "}]))
    check(st == 400 and "trailing whitespace" in json.dumps(js),
          "anthropic trailing whitespace: %d %r" % (st, js))

    # refusals
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {}}}}]
    st, js = chat(d, USER + [{"role": "assistant", "content": None, "tool_calls": [call]}], 4,
                  tools=tools)
    check(st == 400 and "tool calls" in js["error"]["message"],
          "a prefill with tool calls: %d %r" % (st, js))
    st, js = chat(d, msgs, 4, tools=tools, tool_choice="required")
    check(st == 400 and js["error"]["param"] == "tool_choice",
          "a prefill with tool_choice required: %d %r" % (st, js))
    st, js = chat(d, USER + [{"role": "assistant", "content": "<tool_call>\n{\"name\": "}], 4,
                  tools=tools)
    check(st == 400 and "opens a tool call" in js["error"]["message"],
          "a prefill that opens a call: %d %r" % (st, js))
    # with tools, a prefill of plain text is continued as content
    st, js = chat(d, msgs, 12, tools=tools)
    check(st == 200 and js["choices"][0]["message"]["content"] == want,
          "a prefill with tools offered: %r" % js)


def budget_case(d, msgs, n, extra, what, field="reasoning_budget_tokens", **kw):
    """reasoning_budget_tokens n: the reasoning is the n greedy tokens after the prompt, then
    "</think>\\n\\n" is forced, then the answer (extra tokens) continues greedily."""
    p = prompt_of(d, msgs)
    ids = tokenize(d, p)
    rtext, rids = complete(d, ids, n)
    check(len(rids) == n, "%s: %d reasoning ids" % (what, len(rids)))
    force = tokenize(d, "</think>\n\n", add_special=False)
    ctext, _ = complete(d, ids + rids + force, extra)
    total = n + len(force) + extra
    body = dict({field: n}, **kw)
    st, js = chat(d, msgs, total, **body)
    msg = js["choices"][0]["message"]
    check(st == 200 and msg.get("reasoning_content") == rtext.strip() and
          msg["content"] == ctext.lstrip() and js["usage"]["completion_tokens"] == total,
          "%s: %r, want reasoning %r content %r" % (what, js, rtext.strip(), ctext.lstrip()))
    r, c = chat_stream(d, msgs, total, **body)
    check(r == rtext.strip() and c == ctext.lstrip(), "%s streamed: %r %r" % (what, r, c))
    # without the budget the reasoning goes on
    st, js = chat(d, msgs, total)
    check(js["choices"][0]["message"].get("reasoning_content") != rtext.strip(),
          "%s: no budget, longer reasoning" % what)


def harmony_budget(tmp, model, src):
    """gpt-oss: a token that writes a whole analysis header, which logit_bias keeps picking:
    with reasoning_budget_tokens 2 the analysis message holds the opening and exactly 2 more,
    then the final channel's header is forced; a later opening is closed at once."""
    import test_harmony_server as H
    an = H.AN
    opener = H.ANSWER  # rewritten below to hold the analysis header alone
    tokens = {k: v for k, v in H.TOKENS.items() if k not in (H.ANSWER, H.CALL)}
    tokens[opener] = an
    # SentencePiece puts a space after a special token: the forced header's words are kept
    # whole as special tokens of their own (gpt-oss's BPE vocabulary has no such space)
    types = dict(H.TYPES)
    for tid, text in ((490, "<|start|>assistant"), (491, "<|channel|>final<|message|>")):
        tokens[tid] = text
        types[tid] = 4  # user-defined: parsed in the input, written in the output
    with open(os.path.join(src, "tests", "data", "chat-templates", "openai-gpt-oss-120b.jinja"),
              encoding="utf-8") as f:
        template = f.read()
    gguf = os.path.join(tmp, "gptoss.gguf")
    gguf_rewrite(model, gguf, template, 2048, tokens, types=types)
    with loopback.daemon(check, "gpt-oss daemon exit", model=gguf) as d:
        force = tokenize(d, "<|end|><|start|>assistant<|channel|>final<|message|>",
                         add_special=False)
        check(force == [H.END, 490, 491], "gpt-oss forced ids %r" % force)
        base = {"logit_bias": {str(opener): 100}, "reasoning_budget_tokens": 2}
        st, js = chat(d, USER, 3 + len(force), **base)
        msg = js["choices"][0]["message"]
        check(st == 200 and msg.get("reasoning_content") == an + an and msg["content"] == "",
              "gpt-oss budget 2: %r" % js)
        # one more sampled token opens another analysis in the final channel: it is content,
        # and closed at once (the budget is spent)
        st, js = chat(d, USER, 3 + len(force) + 1 + len(force) + 1, **base)
        msg = js["choices"][0]["message"]
        check(st == 200 and msg.get("reasoning_content") == an + an and
              msg["content"] == an + an, "gpt-oss budget spent: %r" % js)
        r, c = chat_stream(d, USER, 3 + len(force) + 1 + len(force) + 1, **base)
        check(r == an + an and c == an + an, "gpt-oss budget streamed: %r %r" % (r, c))
        # budget 0: the opening is closed at once
        st, js = chat(d, USER, 1 + len(force) + 1, **dict(base, reasoning_budget_tokens=0))
        msg = js["choices"][0]["message"]
        check(st == 200 and not msg.get("reasoning_content") and msg["content"] == an,
              "gpt-oss budget 0: %r" % js)


def main():
    model = loopback.shared_model()
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates", "Qwen-Qwen3-0.6B.jinja"),
              encoding="utf-8") as f:
        template = f.read()
    tmp = scratch_dir("fusiond-prefill-")
    gguf = os.path.join(tmp, "qwen3.gguf")
    gguf_rewrite(model, gguf, template, 2048, {})

    prompts, answers = {}, {}
    with loopback.daemon(check, "qwen3 daemon exit", model=gguf) as d:
        prefill_cases(d)
        for content in (PREFILL, THINKING):
            msgs = USER + [{"role": "assistant", "content": content}]
            prompts[content] = prompt_of(d, msgs)
            answers[content] = chat(d, msgs, 12)[1]["choices"][0]["message"]
        tmsgs = USER + [{"role": "assistant", "content": THINKING}]
        budget_case(d, tmsgs, 5, 6, "qwen3 think prefill, budget 5")
        budget_case(d, tmsgs, 1, 4, "qwen3 think prefill, budget 1")
        st, js = chat(d, USER, 4, reasoning_budget_tokens="x")
        check(st == 400 and js["error"]["param"] == "reasoning_budget_tokens",
              "a budget that is no integer: %d %r" % (st, js))
        st, js = chat(d, USER, 4, reasoning_budget_tokens=-2)
        check(st == 400, "a budget below -1: %d %r" % (st, js))
        # budget 0 is enable_thinking false
        st, a = chat(d, USER, 8, reasoning_budget_tokens=0)
        st2, b = chat(d, USER, 8, chat_template_kwargs={"enable_thinking": False})
        check(a["choices"][0]["message"] == b["choices"][0]["message"] and
              a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"],
              "budget 0 = thinking off: %r vs %r" % (a, b))

    # the Jinja interpreter renders Qwen3's real template (--jinja): the same prompts (the
    # think prefill without the template's empty block before it), and the same answers
    with loopback.daemon(check, "jinja daemon exit", "--jinja", model=gguf) as d:
        for content in (PREFILL, THINKING):
            msgs = USER + [{"role": "assistant", "content": content}]
            with_jinja = prompt_of(d, msgs)
            check(with_jinja == prompts[content], "--jinja prompt for %r: %r" % (
                content, with_jinja[-80:]))
            st, js = chat(d, msgs, 12)
            check(st == 200 and js["choices"][0]["message"] == answers[content],
                  "--jinja answer for %r: %r vs %r" % (content, js, answers[content]))

    with loopback.daemon(check, "no-prefill daemon exit", "--no-prefill-assistant",
                         model=gguf) as d:
        msgs = USER + [{"role": "assistant", "content": PREFILL}]
        p = prompt_of(d, msgs)
        check(p.endswith(PREFILL + "<|im_end|>\n<|im_start|>assistant\n"),
              "--no-prefill-assistant: a whole turn %r" % p[-60:])

    # deepseek-r1's generation prompt opens the block: the budget counts from the first token
    with loopback.daemon(check, "r1 daemon exit", "--chat-template", "deepseek-r1",
                         model=gguf) as d:
        budget_case(d, USER, 6, 5, "deepseek-r1, budget 6")
        budget_case(d, USER, 3, 5, "deepseek-r1 thinking_budget_tokens 3",
                    field="thinking_budget_tokens")
        # reasoning_budget_message: written into the reasoning before its forced end
        p = prompt_of(d, USER)
        ids = tokenize(d, p)
        rtext, rids = complete(d, ids, 3)
        force = tokenize(d, "Time is up.</think>\n\n", add_special=False)
        ctext, _ = complete(d, ids + rids + force, 4)
        st, js = chat(d, USER, 3 + len(force) + 4, reasoning_budget_tokens=3,
                      reasoning_budget_message="Time is up.")
        msg = js["choices"][0]["message"]
        check(st == 200 and msg.get("reasoning_content", "").startswith(rtext.strip()) and
              msg["reasoning_content"].endswith("Time is up.") and
              msg["content"] == ctext.lstrip(), "reasoning_budget_message: %r" % js)
        st, js = chat(d, USER, 4, reasoning_budget_message=5)
        check(st == 400 and js["error"]["param"] == "reasoning_budget_message",
              "reasoning_budget_message a number: %d %r" % (st, js))
    # n-gram speculation: a forced token ends a run of drafts like any other
    with loopback.daemon(check, "r1 spec daemon exit", "--chat-template", "deepseek-r1",
                         "--spec-type", "ngram", "--draft-max", "8", "--draft-min", "1",
                         model=gguf) as d:
        budget_case(d, USER, 6, 12, "deepseek-r1 with n-gram drafts, budget 6")
    with loopback.daemon(check, "r1 budget daemon exit", "--chat-template", "deepseek-r1",
                         "--reasoning-budget", "4", model=gguf) as d:
        p = prompt_of(d, USER)
        ids = tokenize(d, p)
        rtext, rids = complete(d, ids, 4)
        room = 4 + len(tokenize(d, "</think>\n\n", add_special=False)) + 2
        st, js = chat(d, USER, room)
        check(js["choices"][0]["message"].get("reasoning_content") == rtext.strip(),
              "--reasoning-budget 4: %r, want %r" % (js, rtext.strip()))
        # a request's -1 lifts it
        st, js = chat(d, USER, room, reasoning_budget_tokens=-1)
        check(js["choices"][0]["message"].get("reasoning_content") != rtext.strip(),
              "reasoning_budget_tokens -1 lifts the server's: %r" % js)
        # Anthropic's thinking.budget_tokens (at least 1024) holds the thinking block
        n = 1024
        rtext, _ = complete(d, ids, n)
        st, js = post(d, "/v1/messages", {
            "model": "llama", "max_tokens": room + n, "temperature": 0,
            "thinking": {"type": "enabled", "budget_tokens": n},
            "messages": [{"role": "user", "content": USER[0]["content"]}]})
        th = [b["thinking"] for b in js.get("content", []) if b["type"] == "thinking"]
        check(st == 200 and th == [rtext.strip()] and js["stop_reason"] == "max_tokens",
              "anthropic budget_tokens: %d %r" % (st, str(js)[-300:]))

    harmony_budget(tmp, model, src)


if __name__ == "__main__":
    main()
    if FAILS:
        print("%d failures" % len(FAILS))
        sys.exit(1)
    print("prefill and reasoning budget: all checks passed")

