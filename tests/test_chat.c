/* test_chat.c: proves chat formatting renders what each model's Jinja template renders (the
 * expected strings were read off the templates in ../shared/chat-templates and checked by
 * rendering them with Python's jinja2 as transformers does; test_chat_jinja.py does that at
 * test time for many tool conversations), tools, tool calls and tool results included,
 * recognises each shared template's family (and the repository's: Phi-4-mini's too), falls
 * back plainly, refuses bad conversations
 * with the template's message and tools where a family has none, writes each family's call
 * opening for the prefill, and prints JSON exactly as Python's json.dumps. */
#include "server/chat.h"
#include "server/jinja.h"

#include <time.h>

#include "common/fd.h"
#include "tests/testutil.h"

#define MSG(r, s) {.role = (r), .content = (s), .len = sizeof(s) - 1}

/* system, user, assistant (with spaces to trim), user (ending in a newline) */
static const chat_msg_t conv[] = {
    MSG(CHAT_SYSTEM, "You are terse."),
    MSG(CHAT_USER, "Hello!"),
    MSG(CHAT_ASSISTANT, " Hi there. "),
    MSG(CHAT_USER, "What is 2+2?\n"),
};

static const struct {
    int family;
    const char *bos, *eos;
    const char *want;
} expected[] = {
    {CHAT_LLAMA2, "<s>", "</s>",
     "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] "
     "What is 2+2? [/INST]"},
    {CHAT_LLAMA3, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant"
     "<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {CHAT_LLAMA31, "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
     "December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user"
     "<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
     "Hi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    {CHAT_QWEN, "", "<|im_end|>",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n Hi there. <|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n"
     "<|im_start|>assistant\n"},
    /* Qwen3: an assistant turn before the last query keeps its content as written */
    {CHAT_QWEN3, "", "<|im_end|>",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n Hi there. <|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n"
     "<|im_start|>assistant\n"},
    {CHAT_CHATML, "", "<|im_end|>",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n Hi there. <|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n"
     "<|im_start|>assistant\n"},
    {CHAT_MISTRAL, "<s>", "</s>",
     "<s>[INST]Hello![/INST] Hi there. </s>[INST]You are terse.\n\nWhat is 2+2?\n[/INST]"},
    /* Gemma 2 refuses a system message; merged (not strict) as Gemma 3 does */
    {CHAT_GEMMA, "<bos>", "<eos>",
     "<bos><start_of_turn>user\nYou are terse.\n\nHello!<end_of_turn>\n<start_of_turn>model\n"
     "Hi there.<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
     "<start_of_turn>model\n"},
    {CHAT_PHI3, "<s>", "<|endoftext|>",
     "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\n Hi there. "
     "<|end|>\n<|user|>\nWhat is 2+2?\n<|end|>\n<|assistant|>\n"},
    {CHAT_ZEPHYR, "<s>", "</s>",
     "<|system|>\nYou are terse.</s>\n<|user|>\nHello!</s>\n<|assistant|>\n Hi there. </s>\n"
     "<|user|>\nWhat is 2+2?\n</s>\n<|assistant|>\n"},
    /* DeepSeek-R1: the system text right after BOS; the prompt opens the think block */
    {CHAT_DEEPSEEK_R1, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
     "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hello!<｜Assistant｜> Hi there. "
     "<｜end▁of▁sentence｜><｜User｜>What is 2+2?\n<｜Assistant｜><think>\n"},
    {CHAT_PLAIN, "<s>", "</s>",
     "You are terse.\n\nUser: Hello!\nAssistant:  Hi there. \nUser: What is 2+2?\n\nAssistant:"},
};

static char *fmt(int family, const chat_msg_t *m, size_t n, const char *bos, const char *eos,
                 bool gen, bool strict, int *rc, char *err)
{
    chat_opts_t o = {.bos = bos, .eos = eos, .add_generation_prompt = gen, .strict = strict};
    char *out = (char *)1;
    size_t len = 99;
    *rc = chat_format(family, m, n, &o, &out, &len, err, 256);
    if (*rc) {
        ck_assert_ptr_null(out);
        ck_assert_uint_eq(len, 0);
        return NULL;
    }
    ck_assert_uint_eq(strlen(out), len);
    return out;
}

/* chat_tool_prefill(family, name) succeeds with want. */
static void assert_prefill(int family, const char *name, const char *want)
{
    char *p = NULL;
    ck_assert_int_eq(chat_tool_prefill(family, name, &p), 0);
    ck_assert_str_eq(p, want);
    free(p);
}

/* The repository's copy of a real template (tests/data/chat-templates/file) is detected as
 * family. */
static void assert_detects(const char *file, int family)
{
    char rel[256];
    size_t n;
    snprintf(rel, sizeof rel, "tests/data/chat-templates/%s", file);
    char *t = tu_slurp(tu_src(rel), &n);
    ck_assert_int_eq(chat_detect(t, n), family);
    free(t);
}

START_TEST(test_families)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(expected); i++) {
        int rc;
        char err[256];
        char *out = fmt(expected[i].family, conv, FD_ARRAY_LEN(conv), expected[i].bos,
                        expected[i].eos, true, false, &rc, err);
        ck_assert_msg(rc == 0, "%s: %s", chat_family_name(expected[i].family), err);
        ck_assert_msg(strcmp(out, expected[i].want) == 0, "%s:\n got  [%s]\n want [%s]",
                      chat_family_name(expected[i].family), out, expected[i].want);
        free(out);
    }
}
END_TEST

/* Cases where the templates differ: who gets the system text, what is trimmed, what ends
 * the text without a generation prompt. */
START_TEST(test_template_details)
{
    int rc;
    char err[256];
    char *out;
    static const chat_msg_t sys_last[] = {MSG(CHAT_SYSTEM, "S"), MSG(CHAT_USER, "u1"),
                                          MSG(CHAT_ASSISTANT, "a1"), MSG(CHAT_USER, "u2")};
    out = fmt(CHAT_MISTRAL, sys_last, 4, "<s>", "</s>", true, false, &rc, err);
    ck_assert_str_eq(out, "<s>[INST]u1[/INST]a1</s>[INST]S\n\nu2[/INST]");
    free(out);
    /* Mistral: the system text goes with the last message only if that is a user turn */
    out = fmt(CHAT_MISTRAL, sys_last, 3, "<s>", "</s>", true, false, &rc, err);
    ck_assert_str_eq(out, "<s>[INST]u1[/INST]a1</s>");
    free(out);

    static const chat_msg_t padded[] = {MSG(CHAT_USER, "  padded \xE3\x80\x80"),
                                        MSG(CHAT_ASSISTANT, "ok")};
    out = fmt(CHAT_PHI3, padded, 2, "<s>", "<|endoftext|>", false, false, &rc, err);
    ck_assert_str_eq(out, "<|user|>\n  padded \xE3\x80\x80<|end|>\n<|assistant|>\nok<|end|>\n"
                          "<|endoftext|>");
    free(out);
    out = fmt(CHAT_LLAMA2, padded, 2, "<s>", "</s>", false, false, &rc, err);
    ck_assert_str_eq(out, "<s>[INST] padded [/INST] ok </s>"); /* strip() takes U+3000 too */
    free(out);
    out = fmt(CHAT_GEMMA, padded, 2, "<bos>", "<eos>", false, false, &rc, err);
    ck_assert_str_eq(out, "<bos><start_of_turn>user\npadded<end_of_turn>\n<start_of_turn>model\n"
                          "ok<end_of_turn>\n");
    free(out);

    /* Phi 3.5 drops an empty system message; Qwen adds its default one */
    static const chat_msg_t empty_sys[] = {MSG(CHAT_SYSTEM, ""), MSG(CHAT_USER, "x")};
    out = fmt(CHAT_PHI3, empty_sys, 2, "<s>", "<|endoftext|>", true, false, &rc, err);
    ck_assert_str_eq(out, "<|user|>\nx<|end|>\n<|assistant|>\n");
    free(out);
    out = fmt(CHAT_QWEN, empty_sys + 1, 1, "", "<|im_end|>", true, false, &rc, err);
    ck_assert_str_eq(out, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                          "helpful assistant.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n"
                          "<|im_start|>assistant\n");
    free(out);
    out = fmt(CHAT_CHATML, empty_sys + 1, 1, "", "<|im_end|>", true, false, &rc, err);
    ck_assert_str_eq(out, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    free(out);

    /* Gemma: a later system message keeps its role name, as the template writes it */
    static const chat_msg_t mid[] = {MSG(CHAT_USER, "x"), MSG(CHAT_SYSTEM, "mid"),
                                     MSG(CHAT_USER, "y")};
    out = fmt(CHAT_GEMMA, mid, 3, "<bos>", "<eos>", true, false, &rc, err);
    ck_assert_str_eq(out, "<bos><start_of_turn>user\nx<end_of_turn>\n<start_of_turn>system\nmid"
                          "<end_of_turn>\n<start_of_turn>user\ny<end_of_turn>\n"
                          "<start_of_turn>model\n");
    free(out);

    /* Llama 2's strip() covers the whole <<SYS>> string: a blank user text eats its tail */
    static const chat_msg_t blank[] = {MSG(CHAT_SYSTEM, "sys"), MSG(CHAT_USER, "  ")};
    out = fmt(CHAT_LLAMA2, blank, 2, "<s>", "</s>", true, false, &rc, err);
    ck_assert_str_eq(out, "<s>[INST] <<SYS>>\nsys\n<</SYS>> [/INST]");
    free(out);
    /* a lone system message: Llama 2 writes nothing at all */
    out = fmt(CHAT_LLAMA2, blank, 1, "<s>", "</s>", true, false, &rc, err);
    ck_assert_str_eq(out, "");
    free(out);
    /* NULL bos/eos are empty strings; NUL bytes inside content are kept */
    static const chat_msg_t nul[] = {{.role = CHAT_USER, .content = "a\0b", .len = 3}};
    chat_opts_t o = {.add_generation_prompt = true};
    size_t len;
    ck_assert_int_eq(chat_format(CHAT_ZEPHYR, nul, 1, &o, &out, &len, err, sizeof err), 0);
    ck_assert_uint_eq(len, strlen("<|user|>\na") + 1 + strlen("b\n<|assistant|>\n"));
    ck_assert(memcmp(out, "<|user|>\na\0b\n<|assistant|>\n", len) == 0);
    free(out);
}
END_TEST

START_TEST(test_refusals)
{
    int rc;
    char err[256];
    static const chat_msg_t twice[] = {MSG(CHAT_USER, "a"), MSG(CHAT_USER, "b")};
    static const chat_msg_t asst_first[] = {MSG(CHAT_ASSISTANT, "first"), MSG(CHAT_USER, "u")};
    const int alternating[] = {CHAT_LLAMA2, CHAT_MISTRAL, CHAT_GEMMA};
    for (size_t i = 0; i < FD_ARRAY_LEN(alternating); i++) {
        ck_assert_ptr_null(fmt(alternating[i], twice, 2, "", "", true, false, &rc, err));
        ck_assert_int_eq(rc, -EINVAL);
        ck_assert_ptr_nonnull(strstr(err, "must alternate user/assistant"));
        ck_assert_ptr_null(fmt(alternating[i], asst_first, 2, "", "", true, false, &rc, err));
        ck_assert_int_eq(rc, -EINVAL);
    }
    /* the others accept any order */
    char *out = fmt(CHAT_CHATML, twice, 2, "", "", true, false, &rc, err);
    ck_assert_int_eq(rc, 0);
    free(out);
    /* Gemma under strict: the template's own refusal */
    ck_assert_ptr_null(fmt(CHAT_GEMMA, conv, 4, "<bos>", "<eos>", true, true, &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_str_eq(err, "System role not supported");
    /* Mistral: a system message after the first position */
    static const chat_msg_t late_sys[] = {MSG(CHAT_USER, "u"), MSG(CHAT_SYSTEM, "s"),
                                          MSG(CHAT_USER, "v")};
    ck_assert_ptr_null(fmt(CHAT_MISTRAL, late_sys, 3, "", "", true, false, &rc, err));
    ck_assert_ptr_nonnull(strstr(err, "Only user and assistant roles are supported"));

    /* bad input */
    ck_assert_ptr_null(fmt(CHAT_LLAMA3, conv, 0, "", "", true, false, &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_str_eq(err, "no messages");
    ck_assert_ptr_null(fmt(CHAT_LLAMA3, NULL, 2, "", "", true, false, &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    static const chat_msg_t badrole[] = {MSG(CHAT_USER, "u"), {.role = 7, .content = "x", .len = 1}};
    ck_assert_ptr_null(fmt(CHAT_PLAIN, badrole, 2, "", "", true, false, &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_str_eq(err, "message 1: unknown role");
    static const chat_msg_t nocontent[] = {{.role = CHAT_USER, .content = NULL, .len = 4}};
    ck_assert_ptr_null(fmt(CHAT_PLAIN, nocontent, 1, "", "", true, false, &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_ptr_null(fmt(CHAT_N_FAMILIES, conv, 1, "", "", true, false, &rc, err));
    ck_assert_ptr_null(fmt(-1, conv, 1, "", "", true, false, &rc, err));
    ck_assert_int_eq(rc, -EINVAL);

    ck_assert_int_eq(chat_role_from_name("user"), CHAT_USER);
    ck_assert_int_eq(chat_role_from_name("assistant"), CHAT_ASSISTANT);
    ck_assert_int_eq(chat_role_from_name("tool"), CHAT_TOOL);
    ck_assert_int_eq(chat_role_from_name("ipython"), -EINVAL);
    ck_assert_int_eq(chat_role_from_name(NULL), -EINVAL);
    ck_assert_str_eq(chat_role_name(CHAT_SYSTEM), "system");
}
END_TEST

static char *read_template(const char *rel, size_t *n)
{
    FILE *f = fopen(tu_shared(rel, 1), "rb");
    ck_assert_ptr_nonnull(f);
    char *b = malloc(1 << 16);
    *n = fread(b, 1, (1 << 16) - 1, f);
    b[*n] = '\0';
    fclose(f);
    return b;
}

START_TEST(test_detect_shared)
{
    static const struct {
        const char *file;
        int family;
    } files[] = {
        {"chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja", CHAT_QWEN},
        {"chat-templates/google-gemma-2-2b-it.jinja", CHAT_GEMMA},
        {"chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja", CHAT_LLAMA31},
        {"chat-templates/microsoft-Phi-3.5-mini-instruct.jinja", CHAT_PHI3},
        {"chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja", CHAT_MISTRAL},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(files); i++) {
        size_t n;
        char *t = read_template(files[i].file, &n);
        ck_assert_msg(chat_detect(t, n) == files[i].family, "%s: detected %s", files[i].file,
                      chat_family_name(chat_detect(t, n)));
        int fam;
        const char *note;
        ck_assert_int_eq(chat_select("auto", t, n, &fam, &note), 0);
        ck_assert_int_eq(fam, files[i].family);
        ck_assert_int_eq(chat_select("zephyr", t, n, &fam, &note), 0); /* override wins */
        ck_assert_int_eq(fam, CHAT_ZEPHYR);
        free(t);
    }
}
END_TEST

START_TEST(test_detect_markers)
{
    /* the well-known templates of the families shared/ lacks, abridged to their markers */
    static const struct {
        const char *tmpl;
        int family;
    } cases[] = {
        {"{% for message in messages %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
         "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' %}", CHAT_LLAMA2},
        {"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
         "+ message['content'] | trim + '<|eot_id|>' %}", CHAT_LLAMA3},
        {"{{ '<|user|>\\n' + message['content'] + eos_token }}{{ '<|assistant|>' }}", CHAT_ZEPHYR},
        {"{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}",
         CHAT_CHATML},
        {"{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}",
         CHAT_MISTRAL},
        /* Qwen3: ChatML with its thinking switch or <think> blocks, but not Qwen 2.5's
         * default system message (which stays CHAT_QWEN) */
        {"{{'<|im_start|>assistant\\n'}}{% if enable_thinking is false %}x{% endif %}",
         CHAT_QWEN3},
        {"{{'<|im_start|>' + role + '\\n<think>\\n' + reasoning_content}}", CHAT_QWEN3},
        {"{{'<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud.'}}", CHAT_QWEN},
        {"{{ '<think>' + enable_thinking }}", -ENOENT},
        {"{{ messages[0].content }}", -ENOENT},
        {"", CHAT_PLAIN},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++)
        ck_assert_msg(chat_detect(cases[i].tmpl, strlen(cases[i].tmpl)) == cases[i].family,
                      "case %zu", i);
    ck_assert_int_eq(chat_detect(NULL, 0), CHAT_PLAIN);

    int fam = -1;
    const char *note = NULL;
    ck_assert_int_eq(chat_select(NULL, "{{ x }}", 7, &fam, &note), 0);
    ck_assert_int_eq(fam, CHAT_PLAIN);
    ck_assert_ptr_nonnull(strstr(note, "not recognised"));
    ck_assert_int_eq(chat_select("", NULL, 0, &fam, &note), 0);
    ck_assert_int_eq(fam, CHAT_PLAIN);
    ck_assert_int_eq(chat_select("chatml", NULL, 0, &fam, &note), 0);
    ck_assert_int_eq(fam, CHAT_CHATML);
    ck_assert_int_eq(chat_select("vicuna", NULL, 0, &fam, &note), -EINVAL);
    for (int f = 0; f < CHAT_N_FAMILIES; f++)
        ck_assert_int_eq(chat_family_from_name(chat_family_name(f)), f);
    ck_assert_int_eq(chat_family_from_name(NULL), -EINVAL);
    ck_assert_str_eq(chat_family_name(99), "?");
}
END_TEST

/* One round trip with one tool in each family that has tools. */
static const char tools_one[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}]";
static const chat_call_t call_f = {"abcdefghi", "f", "{\"x\":1}"};
static const chat_msg_t round_trip[] = {
    MSG(CHAT_USER, "Hi"),
    {.role = CHAT_ASSISTANT, .calls = &call_f, .n_calls = 1},
    {.role = CHAT_TOOL, .content = "ok", .len = 2, .call_id = "abcdefghi"},
};

static char *fmt_tools(int family, const chat_msg_t *m, size_t n, const char *tools,
                       const char *bos, const char *eos, int *rc, char *err)
{
    chat_opts_t o = {.bos = bos, .eos = eos, .add_generation_prompt = true, .tools = tools};
    char *out = NULL;
    size_t len = 0;
    *rc = chat_format(family, m, n, &o, &out, &len, err, 256);
    if (*rc == 0)
        ck_assert_uint_eq(len, strlen(out));
    return out;
}

START_TEST(test_tools)
{
    static const struct {
        int family;
        const char *bos, *eos, *want;
    } cases[] = {
        {CHAT_QWEN, "", "<|im_end|>",
         "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
         "assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
         "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:"
         "\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": "
         "{\"type\": \"object\"}}}\n</tools>\n\nFor each function call, return a json object "
         "with function name and arguments within <tool_call></tool_call> XML tags:\n"
         "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
         "</tool_call><|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
         "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n"
         "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"
         "<|im_start|>assistant\n"},
        {CHAT_LLAMA31, "<|begin_of_text|>", "<|eot_id|>",
         "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython"
         "\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please "
         "respond with a JSON for a function call with its proper arguments that best answers "
         "the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": "
         "dictionary of argument name and its value}.Do not use variables.\n\n{\n    \"type\": "
         "\"function\",\n    \"function\": {\n        \"name\": \"f\",\n        \"parameters\": "
         "{\n            \"type\": \"object\"\n        }\n    }\n}\n\nHi<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"f\", \"parameters\": "
         "{\"x\": 1}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n\"ok\"<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n"},
        {CHAT_MISTRAL, "<s>", "</s>",
         "<s>[AVAILABLE_TOOLS][{\"type\": \"function\", \"function\": {\"name\": \"f\", "
         "\"parameters\": {\"type\": \"object\"}}}][/AVAILABLE_TOOLS][INST]Hi[/INST]"
         "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"x\": 1}, \"id\": \"abcdefghi\"}]"
         "</s>[TOOL_RESULTS]{\"content\": ok, \"call_id\": \"abcdefghi\"}[/TOOL_RESULTS]"},
    };
    char err[256];
    int rc;
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        ck_assert(chat_has_tools(cases[i].family));
        char *out = fmt_tools(cases[i].family, round_trip, 3, tools_one, cases[i].bos,
                              cases[i].eos, &rc, err);
        ck_assert_msg(rc == 0, "%s: %s", chat_family_name(cases[i].family), err);
        ck_assert_str_eq(out, cases[i].want);
        free(out);
        /* an empty list offers nothing: the text without tools */
        chat_opts_t o = {.bos = cases[i].bos, .eos = cases[i].eos, .add_generation_prompt = true};
        char *plain = NULL, *empty = NULL;
        size_t l1, l2;
        ck_assert_int_eq(chat_format(cases[i].family, round_trip, 3, &o, &plain, &l1, err,
                                     sizeof err), 0);
        o.tools = "[]";
        ck_assert_int_eq(chat_format(cases[i].family, round_trip, 3, &o, &empty, &l2, err,
                                     sizeof err), 0);
        ck_assert_str_eq(plain, empty);
        ck_assert(strstr(plain, "\"x\": 1") != NULL); /* the history still has its call */
        free(plain);
        free(empty);
    }
}
END_TEST

START_TEST(test_tool_refusals)
{
    char err[256];
    int rc;
    /* families without tools refuse tools, tool calls and tool results (not drop them) */
    static const int none[] = {CHAT_PLAIN, CHAT_LLAMA2, CHAT_LLAMA3, CHAT_CHATML, CHAT_GEMMA,
                               CHAT_PHI3, CHAT_ZEPHYR};
    for (size_t i = 0; i < FD_ARRAY_LEN(none); i++) {
        ck_assert(!chat_has_tools(none[i]));
        ck_assert_ptr_null(fmt_tools(none[i], conv + 1, 1, tools_one, "", "", &rc, err));
        ck_assert_int_eq(rc, -ENOTSUP);
        ck_assert_ptr_null(fmt_tools(none[i], round_trip, 3, NULL, "", "", &rc, err));
        ck_assert_int_eq(rc, -ENOTSUP);
        char *p = NULL;
        ck_assert_int_eq(chat_tool_prefill(none[i], "f", &p), -ENOTSUP);
        ck_assert_ptr_null(p);
    }
    /* Mistral: ids of 9 characters, in calls and in results */
    static const chat_call_t short_id = {"call_1", "f", "{}"};
    const chat_msg_t bad_call[] = {MSG(CHAT_USER, "Hi"),
                                   {.role = CHAT_ASSISTANT, .calls = &short_id, .n_calls = 1}};
    ck_assert_ptr_null(fmt_tools(CHAT_MISTRAL, bad_call, 2, NULL, "", "", &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_str_eq(err, "Tool call IDs should be alphanumeric strings with length 9!");
    const chat_msg_t bad_result[] = {MSG(CHAT_USER, "Hi"),
                                     {.role = CHAT_TOOL, .content = "x", .len = 1,
                                      .call_id = "\xc3\xbc" "2345678"}}; /* 9 bytes, 8 chars */
    ck_assert_ptr_null(fmt_tools(CHAT_MISTRAL, bad_result, 2, NULL, "", "", &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    /* Llama 3.1: one call per message; tools need a message to carry them */
    const chat_call_t two[] = {call_f, call_f};
    const chat_msg_t two_calls[] = {MSG(CHAT_USER, "Hi"),
                                    {.role = CHAT_ASSISTANT, .calls = two, .n_calls = 2}};
    ck_assert_ptr_null(fmt_tools(CHAT_LLAMA31, two_calls, 2, NULL, "", "", &rc, err));
    ck_assert_str_eq(err, "This model only supports single tool-calls at once!");
    char *q = fmt_tools(CHAT_QWEN, two_calls, 2, NULL, "", "", &rc, err); /* Qwen takes both */
    ck_assert_int_eq(rc, 0);
    free(q);
    ck_assert_ptr_null(fmt_tools(CHAT_LLAMA31, conv, 1, tools_one, "", "", &rc, err));
    ck_assert_str_eq(err, "Cannot put tools in the first user message when there's no first "
                          "user message!");
    /* not JSON: the tools, a call's arguments */
    ck_assert_ptr_null(fmt_tools(CHAT_QWEN, conv + 1, 1, "{\"a\":1}", "", "", &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
    static const chat_call_t broken = {"abcdefghi", "f", "{\"x\":"};
    const chat_msg_t broken_call[] = {MSG(CHAT_USER, "Hi"),
                                      {.role = CHAT_ASSISTANT, .calls = &broken, .n_calls = 1}};
    for (int f = CHAT_LLAMA31; f <= CHAT_MISTRAL; f++) {
        if (!chat_has_tools(f))
            continue;
        ck_assert_ptr_null(fmt_tools(f, broken_call, 2, NULL, "", "", &rc, err));
        ck_assert_int_eq(rc, -EINVAL);
    }
    /* a tool message needs its call id */
    const chat_msg_t no_id[] = {MSG(CHAT_USER, "Hi"), MSG(CHAT_TOOL, "x")};
    ck_assert_ptr_null(fmt_tools(CHAT_QWEN, no_id, 2, NULL, "", "", &rc, err));
    ck_assert_int_eq(rc, -EINVAL);
}
END_TEST

START_TEST(test_prefill_and_json)
{
    static const struct {
        int family;
        const char *name, *want;
    } pre[] = {
        {CHAT_QWEN, NULL, "<tool_call>\n{\"name\": \""},
        {CHAT_QWEN, "get-x", "<tool_call>\n{\"name\": \"get-x\", \"arguments\": "},
        {CHAT_QWEN3, NULL, "<tool_call>\n{\"name\": \""},
        {CHAT_QWEN3, "f", "<tool_call>\n{\"name\": \"f\", \"arguments\": "},
        {CHAT_LLAMA31, NULL, "{\"name\": \""},
        {CHAT_LLAMA31, "f", "{\"name\": \"f\", \"parameters\": "},
        {CHAT_MISTRAL, NULL, "[TOOL_CALLS][{\"name\": \""},
        {CHAT_MISTRAL, "f", "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": "},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(pre); i++)
        assert_prefill(pre[i].family, pre[i].name, pre[i].want);
    /* what Python's json.dumps(ensure_ascii=False) prints for the same values */
    char *j = NULL;
    ck_assert_int_eq(chat_pyjson("{\"a\": [0.5, 1e-05, 1e16, 3, -2.5, 1.5e300, 123456.789, 0.1],"
                                 " \"s\": \"q\\\"b\\\\ \\u001f\\u007f \xc3\xbc\xe6\x9d\xb1 "
                                 "\\n\\t\\r\\b\\f \\/\", \"e\": {}, \"l\": [], \"t\": true, "
                                 "\"n\": null}", -1, &j), 0);
    ck_assert_str_eq(j, "{\"a\": [0.5, 1e-05, 1e+16, 3, -2.5, 1.5e+300, 123456.789, 0.1], "
                        "\"s\": \"q\\\"b\\\\ \\u001f\x7f \xc3\xbc\xe6\x9d\xb1 \\n\\t\\r\\b\\f /\", "
                        "\"e\": {}, \"l\": [], \"t\": true, \"n\": null}");
    free(j);
    ck_assert_int_eq(chat_pyjson("{\"k\": [1, {\"x\": []}], \"e\": {}}", 4, &j), 0);
    ck_assert_str_eq(j, "{\n    \"k\": [\n        1,\n        {\n            \"x\": []\n"
                        "        }\n    ],\n    \"e\": {}\n}");
    free(j);
    /* numbers as written: an int or a float is what json.loads made of the text */
    ck_assert_int_eq(chat_pyjson("[1.0, -0, -0.0, 1E2, 2.50, 12345678901234567890123, 0.0, "
                                 "1e-7, 5, -12]", -1, &j), 0);
    ck_assert_str_eq(j, "[1.0, 0, -0.0, 100.0, 2.5, 12345678901234567890123, 0.0, 1e-07, 5, "
                        "-12]");
    free(j);
    ck_assert_int_eq(chat_pyjson("{\"s\": \"1.0 -2\", \"n\": 7.0}", -1, &j), 0);
    ck_assert_str_eq(j, "{\"s\": \"1.0 -2\", \"n\": 7.0}"); /* digits in strings are text */
    free(j);
    ck_assert_int_eq(chat_pyjson("{\"a\":", -1, &j), -EINVAL);
    ck_assert_ptr_null(j);
}
END_TEST

/* Qwen3's reasoning: reasoning_content or <think> in content, rendered after the last real
 * query only; the enable_thinking switch; the repository's copy of its template detected;
 * the other families ignore reasoning and the switch. */
START_TEST(test_qwen3)
{
    static const chat_msg_t r_final[] = {
        MSG(CHAT_USER, "Q1"),
        {.role = CHAT_ASSISTANT, .content = "\nA1", .len = 3, .reasoning = "\n\nwhy\n"},
    };
    int rc;
    char err[256];
    char *out = fmt(CHAT_QWEN3, r_final, 2, "", "", false, false, &rc, err);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(out, "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n<think>\nwhy\n"
                          "</think>\n\nA1<|im_end|>\n");
    free(out);
    /* the same reasoning before a later query is dropped; content stays as written */
    static const chat_msg_t r_early[] = {
        MSG(CHAT_USER, "Q1"),
        {.role = CHAT_ASSISTANT, .content = "\nA1", .len = 3, .reasoning = "why"},
        MSG(CHAT_USER, "Q2"),
    };
    out = fmt(CHAT_QWEN3, r_early, 3, "", "", true, false, &rc, err);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(out, "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n\nA1<|im_end|>\n"
                          "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    /* split from content: before the first </think> (after the last <think>), after the last */
    static const chat_msg_t split[] = {
        MSG(CHAT_USER, "Q"),
        MSG(CHAT_ASSISTANT, "x<think>\n<think>\nr1\n</think>mid</think>\n\nA"),
    };
    out = fmt(CHAT_QWEN3, split, 2, "", "", false, false, &rc, err);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(out, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n"
                          "</think>\n\nA<|im_end|>\n");
    free(out);
    /* a tool result wrapped in a user message is not a query: the turns after the real one
     * keep their reasoning; a null content with a call renders as "" */
    static const chat_msg_t steps[] = {
        MSG(CHAT_USER, "Q"),
        {.role = CHAT_ASSISTANT, .reasoning = "need f", .calls = &call_f, .n_calls = 1},
        MSG(CHAT_USER, "<tool_response>\nok\n</tool_response>"),
        {.role = CHAT_ASSISTANT, .content = "done", .len = 4, .reasoning = "got it"},
    };
    chat_opts_t o = {.tools = tools_one, .no_thinking = true, .add_generation_prompt = true};
    size_t len;
    ck_assert_int_eq(chat_format(CHAT_QWEN3, steps, 4, &o, &out, &len, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(out, "<|im_start|>assistant\n<think>\nneed f\n</think>\n\n"
                                      "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n"
                                      "</tool_call><|im_end|>\n"));
    ck_assert_ptr_nonnull(strstr(out, "<|im_start|>assistant\n<think>\ngot it\n</think>\n\n"
                                      "done<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
                                      "</think>\n\n"));
    ck_assert_ptr_nonnull(strstr(out, "<|im_start|>system\n# Tools\n"));
    free(out);
    /* Qwen 2.5 ignores both */
    ck_assert_int_eq(chat_format(CHAT_QWEN, r_final, 2, &o, &out, &len, err, sizeof err), 0);
    ck_assert_ptr_null(strstr(out, "think>"));
    free(out);
    ck_assert(chat_has_tools(CHAT_QWEN3));
    ck_assert(chat_has_thinking(CHAT_QWEN3));
    ck_assert(!chat_has_thinking(CHAT_QWEN));
    ck_assert(!chat_has_thinking(CHAT_CHATML));
    ck_assert_str_eq(chat_tool_close(CHAT_QWEN3), "}\n</tool_call>");
    ck_assert_int_eq(chat_family_from_name("qwen3"), CHAT_QWEN3);
    /* the template Qwen3's GGUFs carry (tests/data/chat-templates) */
    assert_detects("Qwen-Qwen3-0.6B.jinja", CHAT_QWEN3);
}
END_TEST

/* DeepSeek-R1-Distill: history drops everything up to the last </think>; tool calls and
 * outputs with the template's conversation-wide first-call and first-output flags; ending on
 * a tool output closes the outputs without a generation prompt; the last system message is
 * the one written; the tools list goes in the system text as llama-server's polyfill puts
 * it (the template renders none); the repository's copy of the template is detected. */
START_TEST(test_deepseek_r1)
{
    static const chat_call_t c1 = {"id1", "get", "{\"q\": 1}"};
    static const chat_call_t c23[] = {{"id2", "a", "{}"}, {"id3", "b", "[1]"}};
    static const chat_msg_t conv_r1[] = {
        MSG(CHAT_SYSTEM, "S1"),
        MSG(CHAT_USER, "Q"),
        MSG(CHAT_ASSISTANT, "<think>\nr\n</think>x</think>\n\nA"),
        MSG(CHAT_SYSTEM, "S2"),
        MSG(CHAT_USER, "Q2"),
        {.role = CHAT_ASSISTANT, .calls = &c1, .n_calls = 1},
        {.role = CHAT_TOOL, .content = "R1", .len = 2, .call_id = "id1"},
        MSG(CHAT_ASSISTANT, "said"),
        {.role = CHAT_ASSISTANT, .content = "pre", .len = 3, .calls = c23, .n_calls = 2},
        {.role = CHAT_TOOL, .content = "R2", .len = 2, .call_id = "id2"},
        {.role = CHAT_TOOL, .content = "R3", .len = 2, .call_id = "id3"},
    };
    int rc;
    char err[256];
    char *out = fmt(CHAT_DEEPSEEK_R1, conv_r1, FD_ARRAY_LEN(conv_r1), "<B>", "<E>", true, false,
                    &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(out,
        "<B>S2<｜User｜>Q<｜Assistant｜>\n\nA<｜end▁of▁sentence｜><｜User｜>Q2"
        "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n"
        "```json\n{\"q\": 1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
        "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>R1<｜tool▁output▁end｜>"
        "<｜tool▁outputs▁end｜>said<｜end▁of▁sentence｜>"
        "\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>a\n```json\n{}\n```<｜tool▁call▁end｜>"
        "\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>b\n```json\n[1]\n```<｜tool▁call▁end｜>"
        "<｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜Assistant｜>pre<｜end▁of▁sentence｜>"
        "\n<｜tool▁output▁begin｜>R2<｜tool▁output▁end｜>"
        "\n<｜tool▁output▁begin｜>R3<｜tool▁output▁end｜><｜tool▁outputs▁end｜>");
    free(out);
    /* thinking switched off closes the block the prompt opened (llama-server's addition) */
    chat_opts_t off = {.bos = "", .add_generation_prompt = true, .no_thinking = true};
    size_t olen;
    ck_assert_int_eq(chat_format(CHAT_DEEPSEEK_R1, conv_r1 + 1, 1, &off, &out, &olen, err,
                                 sizeof err), 0);
    ck_assert_str_eq(out, "<｜User｜>Q<｜Assistant｜><think>\n</think>");
    free(out);
    /* ... but not after tool outputs, where the template writes no generation prompt */
    ck_assert_int_eq(chat_format(CHAT_DEEPSEEK_R1, conv_r1 + 9, 2, &off, &out, &olen, err,
                                 sizeof err), 0);
    ck_assert_str_eq(out, "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>R2<｜tool▁output▁end｜>"
                          "\n<｜tool▁output▁begin｜>R3<｜tool▁output▁end｜><｜tool▁outputs▁end｜>");
    free(out);
    /* without a generation prompt, a user turn ends the text */
    out = fmt(CHAT_DEEPSEEK_R1, conv_r1 + 1, 1, "", "", false, false, &rc, err);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(out, "<｜User｜>Q");
    free(out);
    /* the tools list: the template has no place for it, so it goes in the system text as
     * llama-server's polyfill puts it, after the first message's when that is a system
     * message; a later system message hides it, as there */
    static const char tools_text[] =
        "You can call any of the following tools to satisfy the user's requests: [\n  {\n"
        "    \"type\": \"function\",\n    \"function\": {\n      \"name\": \"f\",\n"
        "      \"parameters\": {\n        \"type\": \"object\"\n      }\n    }\n  }\n]\n\n"
        "Example tool call syntax:\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
        "<｜tool▁sep｜>tool_name\n```json\n{\"arg1\": \"some_value\"}\n```<｜tool▁call▁end｜>"
        "<｜tool▁calls▁end｜>\n\n";
    chat_opts_t o = {.tools = tools_one, .add_generation_prompt = true};
    size_t len;
    ck_assert_int_eq(chat_format(CHAT_DEEPSEEK_R1, conv_r1 + 1, 1, &o, &out, &len, err,
                                 sizeof err), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s<｜User｜>Q<｜Assistant｜><think>\n", tools_text);
    ck_assert_str_eq(out, want);
    free(out);
    ck_assert_int_eq(chat_format(CHAT_DEEPSEEK_R1, conv_r1, 2, &o, &out, &len, err,
                                 sizeof err), 0);
    snprintf(want, sizeof want, "S1\n\n%s<｜User｜>Q<｜Assistant｜><think>\n", tools_text);
    ck_assert_str_eq(out, want);
    free(out);
    ck_assert_int_eq(chat_format(CHAT_DEEPSEEK_R1, conv_r1, 5, &o, &out, &len, err,
                                 sizeof err), 0);
    ck_assert(strncmp(out, "S2<｜User｜>Q", strlen("S2<｜User｜>Q")) == 0);
    free(out);
    ck_assert(chat_has_tools(CHAT_DEEPSEEK_R1));
    ck_assert(chat_has_thinking(CHAT_DEEPSEEK_R1));
    ck_assert_str_eq(chat_tool_close(CHAT_DEEPSEEK_R1),
                     "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>");
    assert_prefill(CHAT_DEEPSEEK_R1, "f", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
                                          "<｜tool▁sep｜>f\n```json\n");
    ck_assert_int_eq(chat_family_from_name("deepseek-r1"), CHAT_DEEPSEEK_R1);
    ck_assert_str_eq(chat_family_name(CHAT_DEEPSEEK_R1), "deepseek-r1");
    assert_detects("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", CHAT_DEEPSEEK_R1);
    /* one marker alone is not the family */
    ck_assert_int_eq(chat_detect("<｜User｜>{{x}}", strlen("<｜User｜>{{x}}")), -ENOENT);
}
END_TEST

/* Mistral Small 3.2 / Devstral (mistral3): [SYSTEM_PROMPT] only for a given system message,
 * the tools as one-line JSON, calls as [TOOL_CALLS]name[ARGS]arguments, results in
 * [TOOL_RESULTS]; the repository's Devstral template is detected as it, Mistral Nemo's
 * markers without [ARGS] are not. */
START_TEST(test_mistral3)
{
    static const chat_call_t two[] = {{"abcdefghi", "f", "{\"x\":1}"}, {"b", "g", "{}"}};
    const chat_msg_t conv_m3[] = {
        MSG(CHAT_SYSTEM, "S"),
        MSG(CHAT_USER, "Hi"),
        {.role = CHAT_ASSISTANT, .content = "ok", .len = 2, .calls = two, .n_calls = 2},
        {.role = CHAT_TOOL, .content = "R", .len = 1, .call_id = "abcdefghi"},
        MSG(CHAT_SYSTEM, "S2"),
        MSG(CHAT_ASSISTANT, "A"),
    };
    int rc;
    char err[256];
    char *out = fmt_tools(CHAT_MISTRAL3, conv_m3, FD_ARRAY_LEN(conv_m3), tools_one, "<s>",
                          "</s>", &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(out, "<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][AVAILABLE_TOOLS][{\"type\": "
                          "\"function\", \"function\": {\"name\": \"f\", \"parameters\": "
                          "{\"type\": \"object\"}}}][/AVAILABLE_TOOLS][INST]Hi[/INST]ok"
                          "[TOOL_CALLS]f[ARGS]{\"x\":1}[TOOL_CALLS]g[ARGS]{}</s>"
                          "[TOOL_RESULTS]R[/TOOL_RESULTS][SYSTEM_PROMPT]S2[/SYSTEM_PROMPT]A</s>");
    free(out);
    out = fmt(CHAT_MISTRAL3, conv_m3 + 1, 1, "<s>", "</s>", true, false, &rc, err);
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(out, "<s>[INST]Hi[/INST]");
    free(out);
    ck_assert(chat_has_tools(CHAT_MISTRAL3));
    ck_assert(!chat_has_thinking(CHAT_MISTRAL3));
    ck_assert_str_eq(chat_tool_close(CHAT_MISTRAL3), "");
    assert_prefill(CHAT_MISTRAL3, "get_x", "[TOOL_CALLS]get_x[ARGS]");
    assert_prefill(CHAT_MISTRAL3, NULL, "[TOOL_CALLS]");
    ck_assert_int_eq(chat_family_from_name("mistral3"), CHAT_MISTRAL3);
    assert_detects("unsloth-mistral-Devstral-Small-2507.jinja", CHAT_MISTRAL3);
    const char *nemo = "{{ '[INST]' }}{{ '[TOOL_CALLS]' }}{{ '[SYSTEM_PROMPT]' }}";
    ck_assert_int_eq(chat_detect(nemo, strlen(nemo)), CHAT_MISTRAL);
}
END_TEST

/* IBM Granite 3.3: the default system text with today's date and the tools sentence, the
 * tools at indent 4, every message in its role's turn (tool calls not written), the
 * generation prompt after the last; the repository's template is detected as granite. */
START_TEST(test_granite)
{
    const chat_msg_t conv_g[] = {
        MSG(CHAT_USER, "Hi"),
        {.role = CHAT_ASSISTANT, .content = "ok", .len = 2, .calls = &call_f, .n_calls = 1},
        {.role = CHAT_TOOL, .content = "R", .len = 1, .call_id = "abcdefghi"},
    };
    int rc;
    char err[256];
    char *out = fmt_tools(CHAT_GRANITE, conv_g, 3, tools_one, "", "", &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    const char *head = "<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April "
                       "2024. Today's Date: ";
    ck_assert(strncmp(out, head, strlen(head)) == 0);
    char day[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(day, sizeof day, "%B %d, %Y", &tm);
    ck_assert_ptr_nonnull(strstr(out, day));
    ck_assert_ptr_nonnull(strstr(out, ". You are Granite, developed by IBM. You are a helpful "
                                      "assistant with access to the following tools. When a"));
    const char *tail = "the request.<|end_of_text|>\n<|start_of_role|>available_tools"
                       "<|end_of_role|>[\n    {\n        \"type\": \"function\",\n        "
                       "\"function\": {\n            \"name\": \"f\",\n            "
                       "\"parameters\": {\n                \"type\": \"object\"\n            }\n"
                       "        }\n    }\n]<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hi"
                       "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>ok<|end_of_text|>"
                       "\n<|start_of_role|>tool<|end_of_role|>R<|end_of_text|>\n"
                       "<|start_of_role|>assistant<|end_of_role|>";
    ck_assert_ptr_nonnull(strstr(out, tail));
    ck_assert_str_eq(strstr(out, tail), tail);
    free(out);
    const chat_msg_t sys[] = {MSG(CHAT_SYSTEM, "S"), MSG(CHAT_USER, "Q")};
    out = fmt(CHAT_GRANITE, sys, 2, "", "", false, false, &rc, err);
    ck_assert_str_eq(out, "<|start_of_role|>system<|end_of_role|>S<|end_of_text|>\n"
                          "<|start_of_role|>user<|end_of_role|>Q<|end_of_text|>\n");
    free(out);
    ck_assert(chat_has_tools(CHAT_GRANITE));
    ck_assert_str_eq(chat_tool_close(CHAT_GRANITE), "}]");
    assert_prefill(CHAT_GRANITE, "f", "<|tool_call|>[{\"name\": \"f\", \"arguments\": ");
    ck_assert_int_eq(chat_family_from_name("granite"), CHAT_GRANITE);
    assert_detects("ibm-granite-granite-3.3-2B-Instruct.jinja", CHAT_GRANITE);
}
END_TEST

/* Phi-4-mini: no newlines; the tools (function objects) on the first system message, else
 * on one of fusiond's with the model card's text; calls written into the content as the
 * model writes them; the repository's real template is detected as phi4-mini, Phi-3.5's
 * stays phi3. */
START_TEST(test_phi4mini)
{
    int rc;
    char err[256];
    char *out = fmt(CHAT_PHI4MINI, conv, FD_ARRAY_LEN(conv), "<s>", "<|endoftext|>", true, false,
                    &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(out, "<|system|>You are terse.<|end|><|user|>Hello!<|end|><|assistant|> Hi "
                          "there. <|end|><|user|>What is 2+2?\n<|end|><|assistant|>");
    free(out);
    out = fmt(CHAT_PHI4MINI, conv + 1, 1, "", "<|endoftext|>", false, false, &rc, err);
    ck_assert_str_eq(out, "<|user|>Hello!<|end|><|endoftext|>");
    free(out);
    out = fmt_tools(CHAT_PHI4MINI, round_trip, 3, tools_one, "", "", &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_str_eq(out, "<|system|>You are a helpful assistant with some tools.<|tool|>"
                          "[{\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}]<|/tool|>"
                          "<|end|><|user|>Hi<|end|><|assistant|>functools[{\"name\": \"f\", "
                          "\"arguments\": {\"x\": 1}}]<|end|><|tool|>ok<|end|><|assistant|>");
    free(out);
    /* a system message first carries them; two calls after text */
    const chat_call_t two[] = {call_f, {"b", "g", "{}"}};
    const chat_msg_t sys[] = {
        MSG(CHAT_SYSTEM, "S"), MSG(CHAT_USER, "Q"),
        {.role = CHAT_ASSISTANT, .content = "Both.", .len = 5, .calls = two, .n_calls = 2},
    };
    out = fmt_tools(CHAT_PHI4MINI, sys, 3, tools_one, "", "", &rc, err);
    ck_assert_str_eq(out, "<|system|>S<|tool|>[{\"name\": \"f\", \"parameters\": {\"type\": "
                          "\"object\"}}]<|/tool|><|end|><|user|>Q<|end|><|assistant|>Both. "
                          "functools[{\"name\": \"f\", \"arguments\": {\"x\": 1}}, {\"name\": "
                          "\"g\", \"arguments\": {}}]<|end|><|assistant|>");
    free(out);
    /* without tools, a system message is only itself */
    out = fmt(CHAT_PHI4MINI, sys, 2, "", "", true, false, &rc, err);
    ck_assert_str_eq(out, "<|system|>S<|end|><|user|>Q<|end|><|assistant|>");
    free(out);
    ck_assert(chat_has_tools(CHAT_PHI4MINI));
    ck_assert_str_eq(chat_tool_close(CHAT_PHI4MINI), "}]");
    char *p = NULL;
    ck_assert_int_eq(chat_tool_prefill(CHAT_PHI4MINI, "f", &p), 0);
    ck_assert_str_eq(p, "functools[{\"name\": \"f\", \"arguments\": ");
    free(p);
    ck_assert_int_eq(chat_tool_prefill(CHAT_PHI4MINI, NULL, &p), 0);
    ck_assert_str_eq(p, "functools[{\"name\": \"");
    free(p);
    ck_assert_int_eq(chat_family_from_name("phi4-mini"), CHAT_PHI4MINI);
    ck_assert_str_eq(chat_family_name(CHAT_PHI4MINI), "phi4-mini");
    size_t n;
    char *t = tu_slurp(tu_src("tests/data/chat-templates/microsoft-Phi-4-mini-instruct.jinja"), &n);
    ck_assert_int_eq(chat_detect(t, n), CHAT_PHI4MINI);
    free(t);
}
END_TEST

/* gpt-oss (harmony): the expected texts are written from the format's rules (OpenAI's harmony
 * guide, the template's statements); test_chat_jinja.py compares with the real template. */
static char *gptoss_sys(const char *effort, bool tools)
{
    char day[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(day, sizeof day, "%Y-%m-%d", &tm);
    char *s = malloc(1024);
    ck_assert_ptr_nonnull(s);
    ck_assert(snprintf(s, 1024, "<|start|>system<|message|>You are ChatGPT, a large language model "
                       "trained by OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: %s\n\n"
                       "Reasoning: %s\n\n# Valid channels: analysis, commentary, final. Channel "
                       "must be included for every message.%s<|end|>", day, effort,
                       tools ? "\nCalls to these tools must go to the commentary channel: "
                               "'functions'." : "") < 1024);
    return s;
}

static void assert_gptoss(const char *effort, bool tools, const char *got, const char *rest)
{
    char *head = gptoss_sys(effort, tools);
    size_t hl = strlen(head);
    ck_assert_msg(strncmp(got, head, hl) == 0, "head:\n got  [%s]\n want [%s]", got, head);
    ck_assert_msg(strcmp(got + hl, rest) == 0, "\n got  [%s]\n want [%s]", got + hl, rest);
    free(head);
}

START_TEST(test_gptoss)
{
    int rc;
    char err[256];
    char *out = fmt(CHAT_GPTOSS, conv, FD_ARRAY_LEN(conv), "", "", true, false, &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    /* the system text is the developer's instructions; earlier answers in the final channel */
    assert_gptoss("medium", false, out,
                  "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n<|end|>"
                  "<|start|>user<|message|>Hello!<|end|><|start|>assistant<|channel|>final"
                  "<|message|> Hi there. <|end|><|start|>user<|message|>What is 2+2?\n<|end|>"
                  "<|start|>assistant");
    free(out);
    /* the effort; no developer message without system text or tools; no generation prompt */
    chat_opts_t o = {.add_generation_prompt = false, .reasoning_effort = "low"};
    size_t len;
    ck_assert_int_eq(chat_format(CHAT_GPTOSS, conv + 1, 2, &o, &out, &len, err, sizeof err), 0);
    assert_gptoss("low", false, out, "<|start|>user<|message|>Hello!<|end|><|start|>assistant"
                                     "<|channel|>final<|message|> Hi there. <|end|>");
    free(out);
    /* a call (its reasoning in the analysis channel: no answer follows it), its result */
    const char tools[] = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                         "\"description\":\"Weather now\",\"parameters\":{\"type\":\"object\","
                         "\"properties\":{\"city\":{\"type\":\"string\",\"description\":\"A "
                         "city\"},\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"],"
                         "\"default\":\"c\"},\"days\":{\"type\":\"integer\",\"default\":3},"
                         "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
                         "\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":{"
                         "\"name\":\"clock\",\"description\":\"Time\"}}]";
    const chat_call_t wc = {"call_1", "get_weather", "{\"city\":\"Paris\",\"days\":2.50}"};
    chat_msg_t trip[] = {
        MSG(CHAT_USER, "Weather?"),
        {.role = CHAT_ASSISTANT, .calls = &wc, .n_calls = 1, .reasoning = "Use the tool."},
        {.role = CHAT_TOOL, .content = "\"sunny\"\n", .len = 8, .call_id = "call_1"},
        MSG(CHAT_ASSISTANT, "Sunny."),
    };
    const char *ns = "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions "
                     "{\n\n// Weather now\ntype get_weather = (_: {\n// A city\ncity: string,\n"
                     "unit?: \"c\" | \"f\", // default: c,\ndays?: number, // default: 3,\n"
                     "tags?: string[],\n}) => any;\n\n// Time\ntype clock = () => any;\n\n} // "
                     "namespace functions<|end|>";
    const char *call = "<|start|>user<|message|>Weather?<|end|><|start|>assistant to=functions."
                       "get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\", "
                       "\"days\": 2.5}<|call|><|start|>functions.get_weather to=assistant"
                       "<|channel|>commentary<|message|>\"\\\"sunny\\\"\\n\"<|end|>";
    char want[2048];
    out = fmt_tools(CHAT_GPTOSS, trip, 3, tools, "", "", &rc, err);
    ck_assert_msg(rc == 0, "%s", err);
    snprintf(want, sizeof want, "%s<|start|>user<|message|>Weather?<|end|><|start|>assistant"
             "<|channel|>analysis<|message|>Use the tool.<|end|>%s<|start|>assistant", ns,
             call + strlen("<|start|>user<|message|>Weather?<|end|>"));
    assert_gptoss("medium", true, out, want);
    free(out);
    /* an answer after it: the call's reasoning is dropped */
    out = fmt_tools(CHAT_GPTOSS, trip, 4, tools, "", "", &rc, err);
    snprintf(want, sizeof want, "%s%s<|start|>assistant<|channel|>final<|message|>Sunny.<|end|>"
             "<|start|>assistant", ns, call);
    assert_gptoss("medium", true, out, want);
    free(out);
    /* refusals: a result without a call, content and reasoning on a call, channel tags */
    out = fmt_tools(CHAT_GPTOSS, trip + 2, 1, tools, "", "", &rc, err);
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert(strstr(err, "no previous assistant message with a tool call"));
    trip[1].content = "text";
    trip[1].len = 4;
    out = fmt_tools(CHAT_GPTOSS, trip, 2, tools, "", "", &rc, err);
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert(strstr(err, "Cannot pass both content and thinking"));
    const chat_msg_t tagged[] = {MSG(CHAT_USER, "x"),
                                 MSG(CHAT_ASSISTANT, "<|channel|>final<|message|>y")};
    out = fmt(CHAT_GPTOSS, tagged, 2, "", "", true, false, &rc, err);
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert(strstr(err, "containing <|channel|> tags in the content field"));
    ck_assert(chat_has_tools(CHAT_GPTOSS));
    ck_assert(!chat_has_thinking(CHAT_GPTOSS));
    ck_assert_str_eq(chat_tool_close(CHAT_GPTOSS), "");
    assert_prefill(CHAT_GPTOSS, NULL, "<|channel|>commentary to=functions.");
    assert_prefill(CHAT_GPTOSS, "clock",
                   "<|channel|>commentary to=functions.clock <|constrain|>json<|message|>");
    ck_assert_int_eq(chat_family_from_name("gpt-oss"), CHAT_GPTOSS);
    ck_assert_str_eq(chat_family_name(CHAT_GPTOSS), "gpt-oss");
    assert_detects("openai-gpt-oss-120b.jinja", CHAT_GPTOSS);
}
END_TEST


/* A template no family knows is rendered by the interpreter from chat_opts_t.jinja: the
 * variables it is given (chat_jinja_vars), the arguments as objects unless the template
 * prints the text (chat_jinja_string_args), its raise_exception as the error. */
START_TEST(test_jinja_hook)
{
    static const chat_call_t call = {"c1", "f", "{\"x\": 1.0}"};
    const chat_msg_t msgs[] = {MSG(CHAT_USER, "Hi\n\"q\""),
                               {.role = CHAT_ASSISTANT, .calls = &call, .n_calls = 1,
                                .reasoning = "r"},
                               {.role = CHAT_TOOL, .content = "ok", .len = 2, .call_id = "c1"}};
    chat_opts_t o = {.bos = "<s>", .add_generation_prompt = true, .no_thinking = true,
                     .tools = "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]",
                     .kwargs = " {\"a\": [1], \"add_generation_prompt\": 7} "};
    char *vars;
    ck_assert_int_eq(chat_jinja_vars(msgs, 3, &o, false, &vars), 0);
    ck_assert_str_eq(vars, "{\"a\": [1], \"add_generation_prompt\": 7, \"messages\": ["
                     "{\"role\": \"user\", \"content\": \"Hi\\n\\\"q\\\"\"}, "
                     "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": "
                     "\"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", "
                     "\"arguments\": {\"x\": 1.0}}}], \"reasoning_content\": \"r\"}, "
                     "{\"role\": \"tool\", \"content\": \"ok\", \"tool_call_id\": \"c1\"}], "
                     "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], "
                     "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", "
                     "\"eos_token\": \"\", \"enable_thinking\": false}");
    free(vars);
    ck_assert_int_eq(chat_jinja_vars(msgs, 3, &o, true, &vars), 0);
    ck_assert(strstr(vars, "\"arguments\": \"{\\\"x\\\": 1.0}\"") != NULL);
    free(vars);
    o.kwargs = "[1]";
    ck_assert_int_eq(chat_jinja_vars(msgs, 3, &o, false, &vars), -EINVAL);
    o.kwargs = NULL;

    static const char tmpl[] =
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' and not tools %}"
        "{{ raise_exception('no tools') }}{% endif %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}{% endfor %};"
        "{% endfor %}{{ enable_thinking }}";
    jinja_t *t;
    char err[256];
    ck_assert_int_eq(jinja_parse(tmpl, sizeof tmpl - 1, &t, err, sizeof err), 0);
    ck_assert(!chat_jinja_string_args(t)); /* tojson of a string would quote it */
    o.jinja = t;
    char *out;
    size_t len;
    ck_assert_int_eq(chat_format(CHAT_JINJA, msgs, 3, &o, &out, &len, err, sizeof err), 0);
    ck_assert_str_eq(out, "<s>user:Hi\n\"q\";assistant:{\"x\": 1.0};tool:ok;False");
    free(out);
    o.tools = NULL;
    ck_assert_int_eq(chat_format(CHAT_JINJA, msgs, 3, &o, &out, &len, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "no tools");
    jinja_free(t);
    static const char raw[] = "{% for m in messages %}{% for c in m.tool_calls or [] %}"
                              "{{ c.function.arguments }}{% endfor %}{% endfor %}";
    ck_assert_int_eq(jinja_parse(raw, sizeof raw - 1, &t, err, sizeof err), 0);
    ck_assert(chat_jinja_string_args(t));
    ck_assert(!chat_jinja_typed_content(t)); /* shows neither */
    jinja_free(t);
    /* a template that reads typed parts only gets them; one that reads strings keeps them */
    static const char parts[] = "{% for m in messages %}{% for p in m.content %}"
                                "{{ p.text }}{% endfor %}|{% endfor %}";
    ck_assert_int_eq(jinja_parse(parts, sizeof parts - 1, &t, err, sizeof err), 0);
    ck_assert(chat_jinja_typed_content(t));
    o.jinja = t;
    o.jinja_typed_content = true;
    ck_assert_int_eq(chat_format(CHAT_JINJA, msgs, 3, &o, &out, &len, err, sizeof err), 0);
    ck_assert_str_eq(out, "Hi\n\"q\"||ok|");
    free(out);
    o.jinja_typed_content = false;
    jinja_free(t);
    static const char strs[] = "{% for m in messages %}{{ m.content }}{% endfor %}";
    ck_assert_int_eq(jinja_parse(strs, sizeof strs - 1, &t, err, sizeof err), 0);
    ck_assert(!chat_jinja_typed_content(t));
    jinja_free(t);
    o.jinja = NULL;
    ck_assert_int_eq(chat_format(CHAT_JINJA, msgs, 1, &o, &out, &len, err, sizeof err), -EINVAL);
    ck_assert_int_eq(chat_family_from_name("jinja"), CHAT_JINJA);
}
END_TEST

static const char *const shared_files[] = {
    "chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja",
    "chat-templates/google-gemma-2-2b-it.jinja",
    "chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja",
    "chat-templates/microsoft-Phi-3.5-mini-instruct.jinja",
    "chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja",
};

int main(void)
{
    const char *missing = NULL;
    for (size_t i = 0; i < FD_ARRAY_LEN(shared_files); i++)
        if (!tu_shared(shared_files[i], 0))
            missing = shared_files[i];
    Suite *s = suite_create("chat");
    TCase *tc = tcase_create("format");
    tcase_add_test(tc, test_families);
    tcase_add_test(tc, test_template_details);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_detect_markers);
    tcase_add_test(tc, test_tools);
    tcase_add_test(tc, test_tool_refusals);
    tcase_add_test(tc, test_prefill_and_json);
    tcase_add_test(tc, test_qwen3);
    tcase_add_test(tc, test_deepseek_r1);
    tcase_add_test(tc, test_mistral3);
    tcase_add_test(tc, test_granite);
    tcase_add_test(tc, test_phi4mini);
    tcase_add_test(tc, test_gptoss);
    tcase_add_test(tc, test_jinja_hook);
    suite_add_tcase(s, tc);
    if (!missing) {
        tc = tcase_create("shared templates");
        tcase_add_test(tc, test_detect_shared);
        suite_add_tcase(s, tc);
    }
    int rc = tu_run(s);
    if (rc == EXIT_SUCCESS && missing)
        tu_shared(missing, 1);
    return rc;
}
