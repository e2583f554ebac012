#!/usr/bin/env python3
"""test_chat_prefill.py: proves an assistant prefill (chat_format_prefill) renders, for every
built-in chat family, the real template's rendering of the whole conversation (no generation
prompt) cut right after the final assistant content, as transformers' continue_final_message
cuts it (the last occurrence of that content), byte for byte; that the turn offset it returns
is where the generation prompt of the conversation without the prefill ends (the model's own
text begins there), and that chat_guess_turn (the offset a Jinja-rendered prefill gets) finds
it too; Qwen3's prefill that opens <think> continues the reasoning (the generation
prompt and the content, as llama-server appends it); an empty prefill; and that a prefill with
tool calls, or a conversation not ending in an assistant message, is refused.  The templates
are those tests/test_chat_jinja.py renders (the shared folder's, tests/data's), and for
llama2, llama3, chatml and zephyr their well-known texts quoted below.  Skips (77) without
python3-jinja2 unless FUSIOND_REQUIRE_JINJA=1."""

import json
import os
import subprocess
import sys

BUILD = os.environ.get("top_builddir", ".")
RENDER = os.path.join(BUILD, "tests", "chat_render")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_jinja import ENV, Refused, jinja2, tojson  # noqa: E402,F401  (exits 77 without jinja2)

SHARED = os.environ.get("FUSIOND_SHARED", "")
TDIR = os.path.join(SHARED, "chat-templates")
HAVE_SHARED = bool(SHARED) and os.path.isdir(TDIR)
SRCDIR = os.environ.get("top_srcdir", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   ".."))
DATA = os.path.join(SRCDIR, "tests", "data", "chat-templates")



# the well-known templates of the families without a file here
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
          "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
          "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
          "%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = "
          "messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages "
          "%}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
          "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
          "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
          "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
          "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
          "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + "
          "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
          "'<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
          "'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
          "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n"
          "{% endif %}\n{% endfor %}")
R1_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
R1_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"


def shared(name):
    return os.path.join(TDIR, name) if HAVE_SHARED else None


# family: (template text or file, bos, eos, how the turn offset relates to the rest:
#   "gen": the prompt up to it is the generation prompt of the conversation without the
#   prefill; "think": that, less its "<think>\n"; "bare": the conversation without the prefill
#   (no generation prompt: the answer follows [/INST]); "space": that, then " ")
FAMILIES = {
    "llama2": (LLAMA2, "<s>", "</s>", "space"),
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "gen"),
    "chatml": (CHATML, "", "<|im_end|>", "gen"),
    "zephyr": (ZEPHYR, "", "</s>", "gen"),
    "llama3.1": (shared("meta-llama-Llama-3.1-8B-Instruct.jinja"), "<|begin_of_text|>",
                 "<|eot_id|>", "gen"),
    "qwen": (shared("Qwen-Qwen2.5-7B-Instruct.jinja"), "", "<|im_end|>", "gen"),
    "mistral": (shared("mistralai-Mistral-Nemo-Instruct-2407.jinja"), "<s>", "</s>", "bare"),
    "gemma": (shared("google-gemma-2-2b-it.jinja"), "<bos>", "<eos>", "gen"),
    "phi3": (shared("microsoft-Phi-3.5-mini-instruct.jinja"), "<s>", "<|endoftext|>", "gen"),
    "qwen3": (os.path.join(DATA, "Qwen-Qwen3-0.6B.jinja"), "", "<|im_end|>", "gen"),
    "deepseek-r1": (os.path.join(DATA, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
                    R1_BOS, R1_EOS, "think"),
    "mistral3": (os.path.join(DATA, "unsloth-mistral-Devstral-Small-2507.jinja"), "<s>", "</s>",
                 "bare"),
    "granite": (os.path.join(DATA, "ibm-granite-granite-3.3-2B-Instruct.jinja"), "",
                "<|end_of_text|>", "gen"),
    "phi4-mini": (os.path.join(DATA, "microsoft-Phi-4-mini-instruct.jinja"), "<|endoftext|>",
                  "<|endoftext|>", "gen"),
    "gpt-oss": (os.path.join(DATA, "openai-gpt-oss-120b.jinja"), "<|startoftext|>",
                "<|return|>", "gen"),
}


def template(spec):
    if spec is None:
        return None
    if spec.endswith(".jinja"):
        with open(spec, encoding="utf-8") as f:
            return ENV.from_string(f.read())
    return ENV.from_string(spec)


def jinja(fam, msgs, agp):
    t, bos, eos, _ = FAMILIES[fam]
    kw = {}
    if fam == "gemma" and msgs[0]["role"] == "system":
        # Gemma 2 refuses a system message; chat.c merges it as Gemma 3 does
        msgs = [{"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}] \
            + msgs[2:]
    return template(t).render(messages=msgs, add_generation_prompt=agp, bos_token=bos,
                              eos_token=eos, **kw)


def c_render(fam, msgs, prefill=True):
    _, bos, eos, _ = FAMILIES.get(fam, (None, "", "", None))
    req = {"family": fam, "bos": bos, "eos": eos, "messages": msgs, "prefill": prefill,
           "add_generation_prompt": True}
    p = subprocess.run([RENDER], input=json.dumps(req).encode(), capture_output=True)
    out = p.stdout.decode("utf-8", "surrogateescape")
    if p.returncode == 3:
        raise Refused(out)
    if p.returncode != 0:
        raise RuntimeError("chat_render failed: %r" % p.stderr)
    turn = None
    for line in p.stderr.decode().splitlines():
        if line.startswith("turn="):  # a byte offset: as characters of out
            turn = len(p.stdout[:int(line[5:])].decode("utf-8", "surrogateescape"))
        if line.startswith("guess="):
            guess = len(p.stdout[:int(line[6:])].decode("utf-8", "surrogateescape"))
            # the offset a Jinja template's prefill gets (no mark): the same, give or take
            # the whitespace before the content
            a, b = sorted((turn, guess))
            check("%s: guessed turn %d vs %d" % (fam, guess, turn), out[a:b].strip(), "")
    return out, turn


def cut_after_last(text, content):
    """transformers' continue_final_message: the rendering up to the end of the last
    occurrence of the final message's content."""
    at = text.rindex(content)
    return text[:at + len(content)]


def u(text):
    return {"role": "user", "content": text}


def a(text, reasoning=None):
    m = {"role": "assistant", "content": text}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    return m


SYS = {"role": "system", "content": "Be brief."}
CONVS = [
    ("one turn", [u("Hi there"), a("Hello, I am")]),
    ("history", [u("What is 2+2?"), a("4."), u("And 3+3?"), a("The answer is")]),
    ("system", [SYS, u("Name a colour."), a("Blue, or maybe")]),
    ("unicode and markup", [u("Zürich?"), a("Grüezi <b>wohl</b> — 東京")]),
    ("newlines inside", [u("List two."), a("1. one\n2.")]),
]

failures = 0
checked = 0


def check(name, got, want):
    global failures, checked
    checked += 1
    if got != want:
        failures += 1
        print("FAIL %s\n  got:  %r\n  want: %r" % (name, got, want))


for fam, (spec, bos, eos, turn_kind) in FAMILIES.items():
    if spec is None:
        print("note: %s: no shared template, not compared" % fam)
        continue
    for cname, conv in CONVS:
        if fam == "mistral3" and conv[0]["role"] != "system":
            # without one its template writes the model's own system text (chat.c does not)
            conv = [SYS] + conv
        name = "%s / %s" % (fam, cname)
        full = jinja(fam, conv, False)
        want = cut_after_last(full, conv[-1]["content"])
        got, turn = c_render(fam, conv)
        check(name, got, want)
        if fam == "mistral" and conv[0]["role"] == "system":
            continue  # its template writes the system text only before a last user message
        head = jinja(fam, conv[:-1], turn_kind in ("gen", "think"))
        if turn_kind == "think":
            head = head[:-len("<think>\n")]
        elif turn_kind == "space":
            head += " "
        check(name + " (turn)", got[:turn], head)
    # an empty prefill: the prompt stops where the content would begin
    first = [SYS] if fam == "mistral3" else []
    conv = first + [u("Hi"), a("")]
    marked = first + [u("Hi"), a("\x01MARK\x01")]
    want = jinja(fam, marked, False).split("\x01MARK\x01")[0]
    got, turn = c_render(fam, conv)
    check("%s / empty prefill" % fam, got, want)
    # refusals: tool calls in the prefill, no final assistant message
    call = {"id": "abcDEF123", "type": "function",
            "function": {"name": "clock", "arguments": "{}"}}
    for bad, what in (([u("time?"), {"role": "assistant", "content": "", "tool_calls": [call]}],
                       "tool calls"),
                      ([u("Hi")], "a user message last")):
        try:
            c_render(fam, bad)
            check("%s / refuses %s" % (fam, what), "rendered", "refused")
        except Refused as e:
            check("%s / refuses %s" % (fam, what), bool(str(e)), True)

# plain: the fallback format, written out
got, turn = c_render("plain", [SYS, u("Hi"), a("Hello")])
check("plain", got, "Be brief.\n\nUser: Hi\nAssistant: Hello")
check("plain (turn)", got[:turn], "Be brief.\n\nUser: Hi\nAssistant: ")

# Qwen3's think block: a prefill that opens <think> continues the reasoning, right after the
# generation prompt (its template would put it after an empty think block); reasoning given
# with the prefill, or closed in its content, is a closed block the answer follows
Q3 = [u("Is 91 prime?")]
for content in ("<think>\nLet me see: 91 = 7", "\n<think>\n7 x 13"):
    got, turn = c_render("qwen3", Q3 + [a(content)])
    gen = jinja("qwen3", Q3, True)
    check("qwen3 / open think %r" % content, got, gen + content)
    check("qwen3 / open think (turn)", got[:turn], gen)
for msg in (a("No, it is", "91 = 7 x 13."), a("<think>\n91 = 7 x 13.\n</think>\n\nNo, it is")):
    conv = Q3 + [msg]
    got, turn = c_render("qwen3", conv)
    check("qwen3 / closed think %r" % msg, got, cut_after_last(jinja("qwen3", conv, False),
                                                                "No, it is"))
    check("qwen3 / closed think (turn)", got[turn:].startswith("<think>\n91 = 7 x 13.\n</think>"),
          True)
# DeepSeek-R1: a prefill inside <think> stays there (its template cuts only at </think>)
conv = Q3 + [a("<think>\nLet me")]
got, _ = c_render("deepseek-r1", conv)
check("deepseek-r1 / open think", got, cut_after_last(jinja("deepseek-r1", conv, False),
                                                      "<think>\nLet me"))

print("%d checks, %d failures" % (checked, failures))
sys.exit(1 if failures else 0)
