#!/usr/bin/env python3
"""test_harmony_server.py: proves gpt-oss's harmony format end to end through the real fusiond:
a copy of stories260K with gpt-oss's chat template (tests/data/chat-templates) and harmony's
special tokens written into its vocabulary (<|return|>, <|call|>, <|end|>, <|start|>,
<|channel|>, <|message|>, <|constrain|>, typed control as in gpt-oss's GGUF) is served as the
gpt-oss format.  The request -> prompt path: /apply-template's text against one written from
the format's rules (system message with today's date and the reasoning effort from
reasoning_effort or chat_template_kwargs, developer instructions and tools, the generation
prompt), the markers tokenized as their special ids, bad efforts refused.  End of generation:
<|return|> and <|call|> stop it, <|end|> does not.  The output: a random model writes no
harmony, so a token is rewritten to hold a whole answer (and one a whole call) and logit_bias
picks it; and a GBNF grammar makes the model spell an answer out over many tokens (markers
split across them).  Checked whole and streamed (deltas adding up to the whole answer):
reasoning_content from the analysis channel, content from the final one, tool_calls from a
commentary call (finish_reason tool_calls), reasoning_format none (the analysis left in the
content as written), /v1/responses (a reasoning item, reasoning.effort in the prompt).
Usage: test_harmony_server.py (python3 stdlib only)."""

import datetime
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback  # noqa: E402
from loopback import sse_frames  # noqa: E402
from gguf_copy import gguf_rewrite, scratch_dir  # noqa: E402

FAILS = []
CONTROL = 3

RETURN, CALLTOK, END, START, CHANNEL, MESSAGE, CONSTRAIN = 476, 477, 478, 479, 480, 481, 483
ANSWER, CALL = 503, 482
AN = "<|channel|>analysis<|message|>"
TOKENS = {
    RETURN: "<|return|>", CALLTOK: "<|call|>", END: "<|end|>", START: "<|start|>",
    CHANNEL: "<|channel|>", MESSAGE: "<|message|>", CONSTRAIN: "<|constrain|>",
    ANSWER: AN + " Think first. <|end|><|start|>assistant<|channel|>final<|message|>The answer.",
    CALL: AN + "Need weather.<|end|><|start|>assistant<|channel|>commentary "
          "to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Oslo\"}",
}
TYPES = {i: CONTROL for i in (RETURN, CALLTOK, END, START, CHANNEL, MESSAGE, CONSTRAIN)}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "description": "Name"}},
        "required": ["city"]}}}]
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


def assemble(d, b):
    b = dict(b, stream=True)
    st, _, raw = d.request("POST", "/v1/chat/completions", b)
    frames, done = sse_frames(raw)
    check(st == 200 and done, "stream: status %d, [DONE] %s" % (st, done))
    reasoning, content, names, args, finishes = "", "", "", "", []
    for f in frames:
        for c in f.get("choices", []):
            dl = c.get("delta", {})
            reasoning += dl.get("reasoning_content") or ""
            content += dl.get("content") or ""
            for tc in dl.get("tool_calls") or []:
                names += tc.get("function", {}).get("name") or ""
                args += tc.get("function", {}).get("arguments") or ""
            if c.get("finish_reason"):
                finishes.append(c["finish_reason"])
    return reasoning, content, names, args, finishes


def system(effort, tools):
    day = datetime.datetime.now().strftime("%Y-%m-%d")
    return ("<|start|>system<|message|>You are ChatGPT, a large language model trained by "
            "OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: " + day + "\n\nReasoning: " +
            effort + "\n\n# Valid channels: analysis, commentary, final. Channel must be "
            "included for every message." +
            ("\nCalls to these tools must go to the commentary channel: 'functions'."
             if tools else "") + "<|end|>")


def prompt_cases(d):
    st, _, js = d.post("/apply-template", {"messages": [
        {"role": "system", "content": "Be brief."}] + USER, "tools": TOOLS,
        "reasoning_effort": "high"})
    want = (system("high", True) + "<|start|>developer<|message|># Instructions\n\nBe brief."
            "\n\n# Tools\n\n## functions\n\nnamespace functions {\n\n// Weather in a city\n"
            "type get_weather = (_: {\n// Name\ncity: string,\n}) => any;\n\n} // namespace "
            "functions<|end|><|start|>user<|message|>Why?<|end|><|start|>assistant")
    check(st == 200 and js.get("prompt") == want,
          "apply-template with tools:\n got  %r\n want %r" % (js, want))
    hist = USER + [{"role": "assistant", "content": None, "reasoning_content": "Look it up.",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {
                        "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "cold"}]
    st, _, js = d.post("/apply-template", {"messages": hist,
                                           "chat_template_kwargs": {"reasoning_effort": "low"}})
    want = (system("low", False) + "<|start|>user<|message|>Why?<|end|><|start|>assistant"
            "<|channel|>analysis<|message|>Look it up.<|end|><|start|>assistant to=functions."
            "get_weather<|channel|>commentary json<|message|>{\"city\": \"Oslo\"}<|call|>"
            "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"
            "\"cold\"<|end|><|start|>assistant")
    check(st == 200 and js.get("prompt") == want,
          "apply-template with a call:\n got  %r\n want %r" % (js, want))
    # the markers are the vocabulary's special tokens in the prompt
    st, _, js = d.post("/tokenize", {"content": "<|start|>user<|message|>"})
    toks = js.get("tokens", []) if js else []
    check(st == 200 and START in toks and MESSAGE in toks and CHANNEL not in toks,
          "tokenize: %r" % js)
    for b, param in ((dict(body(ANSWER), reasoning_effort="max"), "reasoning_effort"),
                     (dict(body(ANSWER), reasoning_effort=3), "reasoning_effort"),
                     (dict(body(ANSWER), chat_template_kwargs={"reasoning_effort": "none"}),
                      "chat_template_kwargs.reasoning_effort")):
        st, js = chat(d, b)
        err = (js or {}).get("error", {})
        check(st == 400 and err.get("param") == param, "bad effort %r: %d %r" % (b, st, js))


def eog_cases(d):
    for tok, finish, n in ((RETURN, "stop", 1), (CALLTOK, "stop", 1), (END, "length", 3)):
        st, _, js = d.post("/v1/completions", {"prompt": "Once", "max_tokens": 3,
                                               "temperature": 0, "logit_bias": {str(tok): 100}})
        ch = (js or {}).get("choices", [{}])[0]
        check(st == 200 and ch.get("finish_reason") == finish and
              (n == 1 or js["usage"]["completion_tokens"] == n),
              "%s: finish %r, %r" % (TOKENS[tok], ch.get("finish_reason"), js))
    st, _, js = d.post("/v1/completions", {"prompt": "Once", "max_tokens": 2,
                                           "temperature": 0, "logit_bias": {str(END): 100}})
    check(st == 200 and js["choices"][0]["text"] == "<|end|><|end|>",
          "<|end|> is rendered: %r" % js)


def answer_cases(d):
    st, js = chat(d, body(ANSWER))
    msg = js["choices"][0]["message"]
    check(st == 200 and msg.get("reasoning_content") == "Think first." and
          msg["content"] == "The answer." and
          js["usage"].get("completion_tokens_details") == {"reasoning_tokens": 1},
          "analysis then final: %r" % js)
    r, c, _, _, fin = assemble(d, body(ANSWER))
    check((r, c, fin) == ("Think first.", "The answer.", ["length"]),
          "streamed: %r" % ((r, c, fin),))
    # none: the analysis stays in the content as written
    st, js = chat(d, body(ANSWER, reasoning_format="none"))
    msg = js["choices"][0]["message"]
    check(msg["content"] == AN + " Think first. <|end|>The answer." and
          "reasoning_content" not in msg, "reasoning_format none: %r" % js)
    # spelled out token by token under a grammar (the whole-answer token banned): markers cut
    # anywhere, then the end of generation
    text = AN + "Hmm.<|end|><|start|>assistant<|channel|>final<|message|>Yes."
    gb = {"messages": USER, "max_tokens": 200, "temperature": 0,
          "logit_bias": {str(ANSWER): -100, str(CALL): -100},
          "grammar": "root ::= " + json.dumps(text)}
    st, js = chat(d, gb)
    ch = js["choices"][0]
    check(st == 200 and ch["message"].get("reasoning_content") == "Hmm." and
          ch["message"]["content"] == "Yes." and ch["finish_reason"] == "stop" and
          js["usage"]["completion_tokens"] > 5, "spelled out: %r" % js)
    r, c, _, _, fin = assemble(d, gb)
    check((r, c, fin) == ("Hmm.", "Yes.", ["stop"]), "spelled out, streamed: %r" % ((r, c, fin),))


def call_cases(d):
    st, js = chat(d, body(CALL, tools=TOOLS))
    ch = js["choices"][0]
    msg = ch["message"]
    calls = msg.get("tool_calls") or []
    check(st == 200 and ch["finish_reason"] == "tool_calls" and msg["content"] is None and
          msg.get("reasoning_content") == "Need weather." and len(calls) == 1 and
          calls[0]["function"]["name"] == "get_weather" and
          json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"},
          "reasoning then a call: %r" % js)
    r, c, names, args, fin = assemble(d, body(CALL, tools=TOOLS))
    check(r == "Need weather." and c == "" and names == "get_weather" and
          json.loads(args or "null") == {"city": "Oslo"} and fin == ["tool_calls"],
          "a call, streamed: %r" % ((r, c, names, args, fin),))
    # without tools offered the call message is dropped, as llama-server adds no call
    st, js = chat(d, body(CALL))
    msg = js["choices"][0]["message"]
    check(st == 200 and msg.get("reasoning_content") == "Need weather." and
          msg["content"] == "" and "tool_calls" not in msg, "a call without tools: %r" % js)
    # a forced call: the prompt opens it
    st, _, js = d.post("/apply-template", {"messages": USER, "tools": TOOLS,
                                           "tool_choice": "required"})
    check(st == 200 and js["prompt"].endswith(
        "<|start|>assistant<|channel|>commentary to=functions."),
        "apply-template, tool_choice required: %r" % js)
    st, _, js = d.post("/apply-template", {"messages": USER, "tools": TOOLS, "tool_choice": {
        "type": "function", "function": {"name": "get_weather"}}})
    check(st == 200 and js["prompt"].endswith(
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        "<|message|>"), "apply-template, a named call: %r" % js)


def responses_cases(d):
    st, _, js = d.post("/v1/responses", {"input": "Why?", "max_output_tokens": 1,
                                         "temperature": 0, "logit_bias": {str(ANSWER): 100},
                                         "reasoning": {"effort": "low"}})
    out = (js or {}).get("output", [])
    kinds = [o.get("type") for o in out]
    check(st == 200 and kinds == ["reasoning", "message"] and
          out[0]["content"][0]["text"] == "Think first." and
          out[1]["content"][0]["text"] == "The answer." and
          js["reasoning"]["effort"] == "low", "responses: %r" % js)


def main():
    model = loopback.shared_model()
    src = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
    with open(os.path.join(src, "tests", "data", "chat-templates", "openai-gpt-oss-120b.jinja"),
              encoding="utf-8") as f:
        template = f.read()
    tmp = scratch_dir("fusiond-harmony-")
    gguf = os.path.join(tmp, "gpt-oss-like.gguf")
    gguf_rewrite(model, gguf, template, 2048, TOKENS, types=TYPES)
    with loopback.daemon(check, "gpt-oss daemon exit", model=gguf) as d:
        check(b"gpt-oss" in d.logtext(), "the gpt-oss template is detected")
        prompt_cases(d)
        eog_cases(d)
        answer_cases(d)
        call_cases(d)
        responses_cases(d)
    if FAILS:
        print("%d failures" % len(FAILS))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
