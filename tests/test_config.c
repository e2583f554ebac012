/* test_config.c: proves the configuration: tables of good config files with the values they
 * give and of bad ones with their exact file:line errors, flags over the file (and their
 * errors), --test-config's checks (model, key file, user), --dump-config round trips, the
 * SIGHUP reload rules (run-time options change, the others wait for a restart, a bad file
 * changes nothing), llama-server's flags (same values as fusiond's names, ignored ones noted,
 * refused ones explained, -c still --config), and that etc/fusiond.conf is the documented
 * dump of the defaults. */
#include "common/log.h"
#include "server/config.h"
#include "tests/testutil.h"

#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/fd_test_config.XXXXXX";

static const char *tpath(const char *name)
{
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ & 3];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static const char *write_tmp(const char *name, const char *text)
{
    const char *p = tpath(name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static void setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    write_tmp("model.gguf", "not really a model, but a regular file\n");
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    strcpy(tmpdir, "/tmp/fd_test_config.XXXXXX");
}

static void expect_get(const cfg_t *c, const char *name, const char *want)
{
    char buf[1024];
    ck_assert_int_eq(cfg_get(c, name, buf, sizeof(buf)), 0);
    ck_assert_msg(strcmp(buf, want) == 0, "%s: got [%s], want [%s]", name, buf, want);
}

START_TEST(test_defaults)
{
    cfg_t c;
    cfg_init(&c);
    expect_get(&c, "model", "\"\"");
    expect_get(&c, "host", "127.0.0.1");
    expect_get(&c, "port", "8080");
    expect_get(&c, "backend", "cpu");
    expect_get(&c, "fusion", "on");
    expect_get(&c, "softmax", "maxsum");
    expect_get(&c, "cache_type_k", "f32");
    expect_get(&c, "cache_type_v", "f32");
    expect_get(&c, "max_running", "16");
    expect_get(&c, "max_waiting", "64");
    expect_get(&c, "prefill_chunk", "256");
    expect_get(&c, "prefix_cache", "off");
    expect_get(&c, "prefix_cache_min", "16");
    expect_get(&c, "spec_type", "none");
    expect_get(&c, "draft_max", "8");
    expect_get(&c, "draft_min", "1");
    expect_get(&c, "prompt_lookup_max", "4");
    expect_get(&c, "prompt_lookup_min", "2");
    expect_get(&c, "max_body_bytes", "4M");
    expect_get(&c, "request_timeout", "600");
    expect_get(&c, "drain_timeout", "30");
    expect_get(&c, "log_level", "info");
    expect_get(&c, "access_log", "on");
    expect_get(&c, "api_keys", "\"\"");
    expect_get(&c, "backend_option", "");
    ck_assert_int_eq(c.port, 8080);
    ck_assert(c.fusion);
    ck_assert_int_eq(c.max_body_bytes, 4 << 20);
    ck_assert_int_eq(c.backend_options.n, 0);
    ck_assert_int_eq(cfg_fd_log_level(&c), FD_LOG_INFO);
    char buf[16];
    ck_assert_int_eq(cfg_get(&c, "nope", buf, sizeof(buf)), -ENOENT);
    cfg_fini(&c);
}
END_TEST

/* Good files: the text and up to three option values it must give (cfg_get syntax). */
static const struct {
    const char *text;
    const char *name[3];
    const char *want[3];
} good[] = {
    {"", {"port"}, {"8080"}},
    {"# only a comment\n\n   \n\t# another\n", {"port"}, {"8080"}},
    {"port = 9000\n", {"port"}, {"9000"}},
    {"port=9000", {"port"}, {"9000"}},
    {"  port   =   9000   # why this port\n", {"port"}, {"9000"}},
    {"port = 9000\r\nhost = ::1\r\n", {"port", "host"}, {"9000", "::1"}},
    {"host = \"0.0.0.0\"  # quoted\n", {"host"}, {"0.0.0.0"}},
    {"model = /m/x#y.gguf\n", {"model"}, {"\"/m/x#y.gguf\""}},
    {"model = /m/x.gguf # comment\n", {"model"}, {"/m/x.gguf"}},
    {"model = \"/my models/a #1.gguf\"\n", {"model"}, {"\"/my models/a #1.gguf\""}},
    {"model =\n", {"model"}, {"\"\""}},
    {"model = \"\"\n", {"model"}, {"\"\""}},
    {"fusion = off\nsoftmax = sumonly\nbackend = corsair\n",
     {"fusion", "softmax", "backend"}, {"off", "sumonly", "corsair"}},
    {"fusion = yes\naccess_log = false\n", {"fusion", "access_log"}, {"on", "off"}},
    {"fusion = 0\n", {"fusion"}, {"off"}},
    {"cache_type_k = q8_0\ncache_type_v = f16\n", {"cache_type_k", "cache_type_v"},
     {"q8_0", "f16"}},
    {"max_body_bytes = 16K\n", {"max_body_bytes"}, {"16K"}},
    {"max_body_bytes = 1048576\n", {"max_body_bytes"}, {"1M"}},
    {"max_body_bytes = 2MiB\n", {"max_body_bytes"}, {"2M"}},
    {"max_body_bytes = 1G\n", {"max_body_bytes"}, {"1G"}},
    {"max_body_bytes = 1500\n", {"max_body_bytes"}, {"1500"}},
    {"request_timeout = 0.5\ndrain_timeout = 0\n", {"request_timeout", "drain_timeout"},
     {"0.5", "0"}},
    {"api_keys = a, b,c\n", {"api_keys"}, {"a,b,c"}},
    {"api_keys = \"k1 k2\"\n", {"api_keys"}, {"k1,k2"}},
    {"cors_origins = http://localhost:3000, https://app.example.com,*\n", {"cors_origins"},
     {"http://localhost:3000,https://app.example.com,*"}},
    {"cors_origins = http://[::1]:8080 chrome-extension://abc HTTP://Host.Example\n",
     {"cors_origins"}, {"http://[::1]:8080,chrome-extension://abc,HTTP://Host.Example"}},
    {"backend_option = x=1\nbackend_option = y.z=a b\n", {"backend_option"}, {"x=1\ny.z=a b"}},
    {"log_level = debug\nlog_format = plain\n", {"log_level", "log_format"},
     {"debug", "plain"}},
    {"log_level = warn\n", {"log_level"}, {"warn"}},
    {"threads = 8\nctx_size = 2048\nkv_tokens = 100000\n", {"threads", "ctx_size", "kv_tokens"},
     {"8", "2048", "100000"}},
    {"port = 0\n", {"port"}, {"0"}},
    {"port = 65535", {"port"}, {"65535"}},
    {"user = fusiond\nmodel_alias = demo\nchat_template = chatml\n",
     {"user", "model_alias", "chat_template"}, {"fusiond", "demo", "chatml"}},
};

START_TEST(test_good_files)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(good); i++) {
        cfg_t c;
        char err[512] = "";
        cfg_init(&c);
        int rc = cfg_parse_text(&c, "t.conf", good[i].text, strlen(good[i].text), err,
                                sizeof(err));
        ck_assert_msg(rc == 0, "case %zu: %s", i, err);
        for (int k = 0; k < 3 && good[i].name[k]; k++)
            expect_get(&c, good[i].name[k], good[i].want[k]);
        cfg_fini(&c);
    }
}
END_TEST

START_TEST(test_escapes)
{
    cfg_t c;
    char err[512] = "";
    const char *t = "model_alias = \"a\\\"b\\\\c\\td\"\n";
    cfg_init(&c);
    ck_assert_int_eq(cfg_parse_text(&c, "t.conf", t, strlen(t), err, sizeof(err)), 0);
    ck_assert_str_eq(c.model_alias, "a\"b\\c\td");
    expect_get(&c, "model_alias", "\"a\\\"b\\\\c\\td\"");
    cfg_fini(&c);
}
END_TEST

/* Bad files and the exact message. */
#define ORIGIN_WHY "is not an origin: write scheme://host[:port] with no path or trailing " \
    "slash (for example http://localhost:3000), or * for any"

static const struct {
    const char *text;
    const char *err;
} bad[] = {
    {"port = 70000\n", "t.conf:1: port: 70000 is out of range 0..65535"},
    {"port = -1\n", "t.conf:1: port: -1 is out of range 0..65535"},
    {"port = abc\n", "t.conf:1: port: 'abc' is not an integer"},
    {"port = 80 80\n", "t.conf:1: port: '80 80' is not an integer"},
    {"port = 0x10\n", "t.conf:1: port: '0x10' is not an integer"},
    {"port = 99999999999999999999\n", "t.conf:1: port: '99999999999999999999' is out of range"},
    {"port =\n", "t.conf:1: port: '' is not an integer"},
    {"threads = 1e3\n", "t.conf:1: threads: '1e3' is not an integer"},
    {"prot = 1\n", "t.conf:1: unknown option 'prot' (did you mean 'port'?)"},
    {"frobnicate = 1\n", "t.conf:1: unknown option 'frobnicate'"},
    {"\n# c\nport = 1\nport = 2\n", "t.conf:4: duplicate option 'port' (first set on line 3)"},
    {"api_keys = a\napi_keys = b\n", "t.conf:2: duplicate option 'api_keys' (first set on line 1)"},
    {"port\n", "t.conf:1: 'port' has no value (expected name = value)"},
    {"port 8080\n", "t.conf:1: expected '=' after 'port'"},
    {"= 5\n", "t.conf:1: expected an option name, found '='"},
    {"model = \"abc\n", "t.conf:1: unterminated quoted value"},
    {"model = \"abc\" x\n", "t.conf:1: unexpected text after the quoted value"},
    {"model = \"a\\qb\"\n", "t.conf:1: unknown escape '\\q' in quoted value"},
    {"model = a\"b\n", "t.conf:1: a '\"' inside a bare value (quote the whole value)"},
    {"model = a\001b\n", "t.conf:1: control character in the value"},
    {"backend = gpu\n", "t.conf:1: backend: 'gpu' is not one of cpu, corsair, cuda"},
    {"softmax = ref\n", "t.conf:1: softmax: 'ref' is not one of maxsum, sumonly"},
    {"cache_type_k = q4_k\n", "t.conf:1: cache_type_k: 'q4_k' is not one of f32, f16, bf16, "
     "q8_0, q4_0, q4_1, q5_0, q5_1"},
    {"log_level = verbose\n", "t.conf:1: log_level: 'verbose' is not one of error, warn, info, debug"},
    {"fusion = maybe\n", "t.conf:1: fusion: 'maybe' is not on or off"},
    {"rope_scaling = longrope\n", "t.conf:1: rope_scaling: 'longrope' is not one of auto, none, "
     "linear, yarn"},
    {"yarn_beta_fast = 0\n", "t.conf:1: yarn_beta_fast: takes a number > 0 (negative: the "
     "default), not '0'"},
    {"rope_freq_base = -5\n", "t.conf:1: rope_freq_base: takes a number >= 0 (0: the model's), "
     "not '-5'"},
    {"max_body_bytes = 10X\n", "t.conf:1: max_body_bytes: '10X' is not a size (bytes, or with K, M, G)"},
    {"max_body_bytes = 10\n", "t.conf:1: max_body_bytes: 10 is out of range 1024..1073741824"},
    {"max_body_bytes = 2G\n", "t.conf:1: max_body_bytes: 2G is out of range 1024..1073741824"},
    {"request_timeout = -1\n", "t.conf:1: request_timeout: -1 is out of range 0..1000000000"},
    {"request_timeout = nan\n", "t.conf:1: request_timeout: 'nan' is not a number of seconds"},
    {"request_timeout = inf\n", "t.conf:1: request_timeout: 'inf' is not a number of seconds"},
    {"request_timeout = 5s\n", "t.conf:1: request_timeout: '5s' is not a number of seconds"},
    {"max_running = 0\n", "t.conf:1: max_running: 0 is out of range 1..4096"},
    {"backend_option = novalue\n", "t.conf:1: backend_option: 'novalue' is not KEY=VALUE"},
    {"backend_option = =1\n", "t.conf:1: backend_option: '=1' is not KEY=VALUE"},
    {"backend_option = a b=1\n", "t.conf:1: backend_option: 'a b' is not a valid key"},
    {"api_keys = caf\xc3\xa9\n",
     "t.conf:1: api_keys: an API key is printable ASCII without spaces or commas"},
    {"cors_origins = http://ok.example, http://localhost:3000/\n",
     "t.conf:1: cors_origins: 'http://localhost:3000/' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, localhost:3000\n",
     "t.conf:1: cors_origins: 'localhost:3000' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, http://\n",
     "t.conf:1: cors_origins: 'http://' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, http://a:99999\n",
     "t.conf:1: cors_origins: 'http://a:99999' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, null\n",
     "t.conf:1: cors_origins: 'null' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, http://a:\n",
     "t.conf:1: cors_origins: 'http://a:' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, http://u@h\n",
     "t.conf:1: cors_origins: 'http://u@h' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, http://[zz]\n",
     "t.conf:1: cors_origins: 'http://[zz]' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, 3http://x\n",
     "t.conf:1: cors_origins: '3http://x' " ORIGIN_WHY},
    {"cors_origins = http://ok.example, http://a/b\n",
     "t.conf:1: cors_origins: 'http://a/b' " ORIGIN_WHY},
    {"host =\n", "t.conf:1: host: must not be empty"},
    {"host = a/b\n", "t.conf:1: host: 'a/b' is not an address or host name"},
    {"user = a b\n", "t.conf:1: user: 'a b' is not a user name"},
    {"port = 1\n\n   bogus line\n", "t.conf:3: expected '=' after 'bogus'"},
};

START_TEST(test_bad_files)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(bad); i++) {
        cfg_t c;
        char err[512] = "";
        cfg_init(&c);
        int rc = cfg_parse_text(&c, "t.conf", bad[i].text, strlen(bad[i].text), err,
                                sizeof(err));
        ck_assert_msg(rc == FD_ECONFIG, "case %zu accepted: %s", i, bad[i].text);
        ck_assert_msg(strcmp(err, bad[i].err) == 0, "case %zu: got [%s], want [%s]", i, err,
                      bad[i].err);
        cfg_fini(&c);
    }
    /* A NUL byte inside a line. */
    cfg_t c;
    char err[512] = "";
    cfg_init(&c);
    ck_assert_int_eq(cfg_parse_text(&c, "t.conf", "port = 1\nhost = a\0b\n", 19, err,
                                    sizeof(err)), FD_ECONFIG);
    ck_assert_str_eq(err, "t.conf:2: NUL byte in the line");
    cfg_fini(&c);
}
END_TEST

/* cfg_load with argv (argv[0] is the program). */
static int load(cfg_t *c, char *err, size_t errlen, const char *const *args);

/* The RoPE options reach llm_rope_params_t as fusion-cli's flags do: a factor as its
 * inverse, the yarn values with their bits, a negative yarn value unset, unset ones zero. */
START_TEST(test_rope_options)
{
    static const char *const args[] = {"-c", "/dev/null", "--rope-scaling=yarn",
                                       "--rope-scale=4", "--yarn-orig-ctx=64",
                                       "--yarn-beta-fast=16", "--yarn-attn-factor=-1",
                                       "--rope-freq-base=500000", NULL};
    cfg_t c;
    char err[512] = "";
    ck_assert_msg(load(&c, err, sizeof(err), args) == 0, "%s", err);
    llm_rope_params_t r;
    cfg_rope(&c, &r);
    ck_assert_int_eq(r.scaling, LLM_ROPE_SCALING_YARN);
    ck_assert_float_eq(r.freq_scale, 0.25f);
    ck_assert_float_eq(r.freq_base, 500000.0f);
    ck_assert_int_eq(r.yarn_orig_ctx, 64);
    ck_assert_uint_eq(r.set, LLM_YARN_BETA_FAST);
    ck_assert_float_eq(r.yarn_beta_fast, 16.0f);
    cfg_fini(&c);
    static const char *const none[] = {"-c", "/dev/null", NULL};
    ck_assert_int_eq(load(&c, err, sizeof(err), none), 0);
    cfg_rope(&c, &r);
    ck_assert(r.scaling == LLM_ROPE_SCALING_FILE && r.set == 0 && r.freq_scale == 0 &&
              r.freq_base == 0 && r.yarn_orig_ctx == 0);
    cfg_fini(&c);
}
END_TEST

static int load(cfg_t *c, char *err, size_t errlen, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"fusiond";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    cfg_init(c);
    return cfg_load(c, argc, argv, err, errlen);
}

START_TEST(test_flags)
{
    const char *conf = write_tmp("f.conf", "port = 9000\napi_keys = a,b\n"
                                           "backend_option = x=1\nfusion = off\n");
    static const struct {
        const char *args[8];
        const char *name;
        const char *want;
    } cases[] = {
        {{"--dump-config"}, "port", "9000"},
        {{"--dump-config", "--port", "9100"}, "port", "9100"},
        {{"--port=9100", "--dump-config"}, "port", "9100"},
        {{"-p9100", "--dump-config"}, "port", "9100"},
        {{"-p", "9100", "--dump-config"}, "port", "9100"},
        {{"--port=1", "--port=2", "--dump-config"}, "port", "2"},
        {{"--ctx-size=100", "--dump-config"}, "ctx_size", "100"},
        {{"--ctx_size=100", "--dump-config"}, "ctx_size", "100"},
        {{"--fusion", "--dump-config"}, "fusion", "on"},
        {{"--fusion=on", "--no-fusion", "--dump-config"}, "fusion", "off"},
        {{"--dump-config"}, "fusion", "off"},
        {{"--prefix-cache", "--prefix-cache-min=32", "--dump-config"}, "prefix_cache", "on"},
        {{"--prefix-cache", "--prefix-cache-min=32", "--dump-config"}, "prefix_cache_min",
         "32"},
        {{"--spec-type=ngram", "--draft-max=16", "--dump-config"}, "spec_type", "ngram"},
        {{"--spec-type=ngram", "--draft-max=16", "--dump-config"}, "draft_max", "16"},
        {{"--prompt-lookup-min", "1", "--dump-config"}, "prompt_lookup_min", "1"},
        {{"-md", "/x/d.gguf", "--dump-config"}, "model_draft", "/x/d.gguf"},
        {{"-md", "/x/d.gguf", "--dump-config"}, "spec_type", "draft"},
        {{"--model-draft=/x/d.gguf", "--spec-type=none", "--dump-config"}, "spec_type", "none"},
        {{"--draft-n", "12", "--dump-config"}, "draft_max", "12"},
        {{"--draft", "3", "--draft-n-min", "2", "--dump-config"}, "draft_min", "2"},
        {{"--draft-p-min", "0.5", "--dump-config"}, "draft_p_min", "0.5"},
        {{"-cd", "128", "-td", "2", "--dump-config"}, "ctx_size_draft", "128"},
        {{"-cd", "128", "-td", "2", "--dump-config"}, "threads_draft", "2"},
        {{"--api-keys=c", "--dump-config"}, "api_keys", "c"},
        {{"--dump-config"}, "api_keys", "a,b"},
        {{"--backend-option", "y=2", "--backend-option=z=3", "--dump-config"},
         "backend_option", "y=2\nz=3"},
        {{"--dump-config"}, "backend_option", "x=1"},
        {{"-m", "/x.gguf", "--dump-config"}, "model", "/x.gguf"},
        {{"--log-level", "debug", "--dump-config"}, "log_level", "debug"},
        {{"-b", "cuda", "--dump-config"}, "backend", "cuda"},
        {{"--max-body-bytes=64K", "--dump-config"}, "max_body_bytes", "64K"},
        {{"--cache-type-k", "q8_0", "--dump-config"}, "cache_type_k", "q8_0"},
        {{"-ctk", "q4_0", "--dump-config"}, "cache_type_k", "q4_0"},
        {{"-ctv", "bf16", "--dump-config"}, "cache_type_v", "bf16"},
        {{"--rope-scaling=yarn", "--dump-config"}, "rope_scaling", "yarn"},
        {{"--yarn-ext-factor", "0.5", "--dump-config"}, "yarn_ext_factor", "0.5"},
        {{"-ctv", "bf16", "--cache_type_v=q5_1", "--dump-config"}, "cache_type_v", "q5_1"},
        {{"-a", "m1", "--dump-config"}, "model_alias", "m1"},
        {{"--alias=m1", "--dump-config"}, "model_alias", "m1"},
        {{"-np", "4", "--dump-config"}, "max_running", "4"},
        {{"--parallel", "4", "--dump-config"}, "max_running", "4"},
        {{"--api-key", "k9,k8", "--dump-config"}, "api_keys", "k9,k8"},
        {{"--ssl-cert-file", "/c.pem", "--dump-config"}, "tls_cert_file", "/c.pem"},
        {{"--ssl-key-file=/k.pem", "--dump-config"}, "tls_key_file", "/k.pem"},
        {{"-t", "3", "--dump-config"}, "threads", "3"},
        {{"-ngl", "99", "-fa", "--dump-config"}, "backend", "cpu"},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        const char *args[12] = {"-c", conf};
        for (int k = 0; cases[i].args[k]; k++)
            args[2 + k] = cases[i].args[k];
        cfg_t c;
        char err[512] = "";
        int rc = load(&c, err, sizeof(err), args);
        ck_assert_msg(rc == 0, "case %zu: %s", i, err);
        ck_assert_int_eq(c.action, CFG_DUMP);
        expect_get(&c, cases[i].name, cases[i].want);
        cfg_fini(&c);
    }
}
END_TEST

START_TEST(test_bad_flags)
{
    const char *conf = write_tmp("f.conf", "port = 9000\n");
    const char *badconf = write_tmp("bad.conf", "# fine\nport = nine\n");
    static const struct {
        const char *args[6];
        const char *err; /* "%s" = the bad config file's path */
    } cases[] = {
        {{"--port=abc"}, "--port: 'abc' is not an integer"},
        {{"-p", "70000"}, "-p: 70000 is out of range 0..65535"},
        {{"--prot=1"}, "unknown option --prot (did you mean --port?)"},
        {{"--max-body=1"}, "unknown option --max-body (see --help)"},
        {{"--port"}, "--port needs a value"},
        {{"-x"}, "unknown option -x (see --help)"},
        {{"serve"}, "unexpected argument 'serve' (options are --name=value)"},
        {{"--", "x"}, "unexpected argument 'x'"},
        {{"--help=yes"}, "--help takes no value"},
        {{"--no-fusion=on"}, "--no-fusion takes no value"},
        {{"--no-port"}, "unknown option --no-port (see --help)"},
        {{"--fusion=perhaps"}, "--fusion: 'perhaps' is not on or off"},
        {{"--backend=tpu"}, "--backend: 'tpu' is not one of cpu, corsair, cuda"},
        {{"-ctk", "fp16"}, "-ctk: 'fp16' is not one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, "
         "q5_1"},
        {{"--cache-type-v=iq4_nl"}, "--cache-type-v: 'iq4_nl' is not one of f32, f16, bf16, "
         "q8_0, q4_0, q4_1, q5_0, q5_1"},
        {{"-ctk"}, "-ctk needs a value"},
        {{"--spec-type=eagle"}, "--spec-type: 'eagle' is not one of none, ngram, draft"},
        {{"--draft-p-min=2"}, "--draft-p-min: '2' is not a probability (a number from 0 to 1)"},
        {{"--draft-p-min=x"}, "--draft-p-min: 'x' is not a probability (a number from 0 to 1)"},
        {{"--draft-max=0"}, "--draft-max: 0 is out of range 1..64"},
        {{"--draft-max=65"}, "--draft-max: 65 is out of range 1..64"},
        {{"--prompt-lookup-min=0"}, "--prompt-lookup-min: 0 is out of range 1..64"},
        {{"--backend-option=nokv"}, "--backend-option: 'nokv' is not KEY=VALUE"},
        {{"--cors-origins=http://localhost:5173/"},
         "--cors-origins: 'http://localhost:5173/' " ORIGIN_WHY},
        {{"-nocb"}, "-nocb: fusiond always batches continuously; --max-running=1 runs one "
         "request at a time"},
        {{"--no-cont-batching"}, "--no-cont-batching: fusiond always batches continuously; "
         "--max-running=1 runs one request at a time"},
        {{"-c", "4096"}, "-c 4096: -c is fusiond's --config FILE; llama-server's context size "
         "is --ctx-size 4096"},
        {{"-b", "512"}, "-b 512: -b is fusiond's --backend; llama-server's batch size is "
         "--batch-size (accepted and ignored)"},
        {{"-ngl"}, "-ngl needs a value"},
        {{"--metrics=1"}, "--metrics takes no value"},
        {{"-np", "0"}, "-np: 0 is out of range 1..4096"},
        {{"--parallel=x"}, "--parallel: 'x' is not an integer"},
        {{"-c", "@bad"}, "%s:2: port: 'nine' is not an integer"},
        {{"-c", "/tmp"}, "/tmp: cannot read: Is a directory"},
        {{"-c", "/nonexistent/fusiond.conf"},
         "/nonexistent/fusiond.conf: cannot read: No such file or directory"},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        const char *args[10] = {"-c", conf, "--dump-config"};
        int n = 3;
        for (int k = 0; cases[i].args[k]; k++)
            args[n++] = strcmp(cases[i].args[k], "@bad") == 0 ? badconf : cases[i].args[k];
        cfg_t c;
        char err[512] = "", want[512];
        int rc = load(&c, err, sizeof(err), args);
        snprintf(want, sizeof(want), cases[i].err, badconf);
        ck_assert_msg(rc == FD_ECONFIG, "case %zu accepted", i);
        ck_assert_msg(strcmp(err, want) == 0, "case %zu: got [%s], want [%s]", i, err, want);
        cfg_fini(&c);
    }
}
END_TEST

static char *dump_of(const char *const *args)
{
    cfg_t c;
    char err[512] = "";
    ck_assert_msg(load(&c, err, sizeof(err), args) == 0, "%s: %s", args[2], err);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_dump(&c, f, false);
    fclose(f);
    cfg_fini(&c);
    return buf;
}

/* llama-server's spellings give the very configuration fusiond's own names give, and the
 * flags that mean nothing here change nothing but are each noted for the startup log. */
START_TEST(test_llama_server_flags)
{
    static const struct {
        const char *llama[5], *own[5];
    } same[] = {
        {{"-a", "chat"}, {"--model-alias", "chat"}},
        {{"--alias", "chat"}, {"--model-alias=chat"}},
        {{"-np", "7"}, {"--max-running", "7"}},
        {{"--parallel=7"}, {"--max-running=7"}},
        {{"--api-key", "s1,s2"}, {"--api-keys=s1,s2"}},
        {{"--ssl-cert-file", "/c.pem", "--ssl-key-file", "/k.pem"},
         {"--tls-cert-file=/c.pem", "--tls-key-file=/k.pem"}},
        {{"-ctk", "q8_0", "-ctv", "f16"}, {"--cache-type-k=q8_0", "--cache-type-v=f16"}},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(same); i++) {
        const char *a[10] = {"-c", "/dev/null", "--dump-config"};
        const char *b[10] = {"-c", "/dev/null", "--dump-config"};
        for (int k = 0; same[i].llama[k]; k++)
            a[3 + k] = same[i].llama[k];
        for (int k = 0; same[i].own[k]; k++)
            b[3 + k] = same[i].own[k];
        char *da = dump_of(a), *db = dump_of(b), *dd = dump_of((const char *const[]){
                                                     "-c", "/dev/null", "--dump-config", NULL});
        size_t d = 0;
        while (da[d] && da[d] == db[d])
            d++;
        ck_assert_msg(!da[d] && !db[d], "case %zu differs at [%.80s] vs [%.80s]", i, da + d,
                      db + d);
        ck_assert_msg(strcmp(da, dd) != 0, "case %zu changed nothing", i);
        free(da);
        free(db);
        free(dd);
    }

    static const char *const ign[] = {
        "-c", "/dev/null", "--dump-config", "-tb", "4", "--threads-batch=4", "--batch-size",
        "2048", "-ub", "512", "--ubatch-size", "512", "-ngl", "99", "--n-gpu-layers=all",
        "--gpu-layers", "0", "-fa", "on", "--flash-attn", "--mlock", "--no-mmap", "-cb",
        "--cont-batching", "--metrics", "--no-webui", NULL};
    static const char *const want[] = {
        "-tb 4: ignored: fusiond's --threads serve prompt processing and generation alike",
        "--threads-batch 4: ignored:", "--batch-size 2048: ignored:", "-ub 512: ignored:",
        "--ubatch-size 512: ignored:",
        "-ngl 99: ignored: --backend runs every layer (cpu, corsair or cuda); there is no "
        "partial offload",
        "--n-gpu-layers all: ignored:", "--gpu-layers 0: ignored:",
        "-fa on: ignored: attention is always fusiond's own fused kernel (see --fusion)",
        "--flash-attn: ignored:", "--mlock: ignored:", "--no-mmap: ignored:",
        "-cb: ignored: continuous batching is always on", "--cont-batching: ignored:",
        "--metrics: ignored: GET /metrics is always served",
        "--no-webui: ignored: fusiond has no web UI",
    };
    char *di = dump_of(ign), *dd = dump_of((const char *const[]){"-c", "/dev/null",
                                                                  "--dump-config", NULL});
    ck_assert_msg(strcmp(di, dd) == 0, "an ignored flag changed the configuration");
    free(di);
    free(dd);
    cfg_t c;
    char err[512] = "";
    ck_assert_msg(load(&c, err, sizeof(err), ign) == 0, "%s", err);
    ck_assert_int_eq(c.ignored_flags.n, (int)FD_ARRAY_LEN(want));
    for (size_t i = 0; i < FD_ARRAY_LEN(want); i++)
        ck_assert_msg(!strncmp(c.ignored_flags.v[i], want[i], strlen(want[i])),
                      "note %zu: [%s], want [%s...]", i, c.ignored_flags.v[i], want[i]);
    /* a reload walks the flags again: the notes are not doubled */
    int changed = -1;
    ck_assert_int_eq(cfg_reload(&c, &changed, err, sizeof(err)), 0);
    ck_assert_int_eq(changed, 0);
    cfg_fini(&c);

    /* -c keeps meaning --config, also for a file whose name is a number */
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    write_tmp("8192", "port = 9300\n");
    ck_assert_int_eq(chdir(tmpdir), 0);
    static const char *const dig[] = {"-c", "8192", "--dump-config", NULL};
    int rc = load(&c, err, sizeof(err), dig);
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_msg(rc == 0, "%s", err);
    expect_get(&c, "port", "9300");
    ck_assert_int_eq(c.ignored_flags.n, 0);
    cfg_fini(&c);
}
END_TEST

START_TEST(test_actions)
{
    const char *badconf = write_tmp("bad.conf", "port = nine\n");
    cfg_t c;
    char err[512] = "";
    /* --help and --version work even with a broken file: they read none. */
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", badconf, "--help", NULL}), 0);
    ck_assert_int_eq(c.action, CFG_HELP);
    cfg_fini(&c);
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-V", "-c", badconf, NULL}), 0);
    ck_assert_int_eq(c.action, CFG_VERSION);
    cfg_fini(&c);
    ck_assert_int_eq(load(&c, err, sizeof(err),
                          (const char *[]){"--test-config", "-c", badconf, NULL}), FD_ECONFIG);
    ck_assert_int_eq(c.action, CFG_TEST);
    cfg_fini(&c);
    ck_assert_int_eq(load(&c, err, sizeof(err),
                          (const char *[]){"--dump-config", "--verbose", "-c", "/dev/null", NULL}), 0);
    ck_assert_int_eq(c.action, CFG_DUMP);
    ck_assert(c.verbose);
    cfg_fini(&c);
}
END_TEST

START_TEST(test_test_config)
{
    const char *model = tpath("model.gguf");
    char text[1024];
    snprintf(text, sizeof(text), "# ok\nmodel = %s\n", model);
    const char *ok = write_tmp("ok.conf", text);
    const char *missing = write_tmp("missing.conf", "\nmodel = /nonexistent/m.gguf\n");
    const char *dir = write_tmp("dir.conf", "model = /tmp\n");
    cfg_t c;
    char err[512] = "", want[600];

    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"--test-config", "-c", ok, NULL}), 0);
    ck_assert_str_eq(cfg_model_path(&c), model);
    cfg_fini(&c);

    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"--test-config", "-c", missing, NULL}),
                     FD_ECONFIG);
    snprintf(want, sizeof(want),
             "%s:2: model: cannot read /nonexistent/m.gguf: No such file or directory", missing);
    ck_assert_str_eq(err, want);
    cfg_fini(&c);

    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", dir, NULL}), FD_ECONFIG);
    snprintf(want, sizeof(want), "%s:1: model: /tmp is not a regular file", dir);
    ck_assert_str_eq(err, want);
    cfg_fini(&c);

    /* The flag is named when the flag set the model. */
    ck_assert_int_eq(load(&c, err, sizeof(err),
                          (const char *[]){"-c", ok, "--model", "/nonexistent/x", NULL}),
                     FD_ECONFIG);
    ck_assert_str_eq(err, "--model: cannot read /nonexistent/x: No such file or directory");
    cfg_fini(&c);

    snprintf(text, sizeof(text), "model = %s\nuser = no-such-user-fd\n", model);
    const char *user = write_tmp("user.conf", text);
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", user, NULL}), FD_ECONFIG);
    snprintf(want, sizeof(want), "%s:2: user: no such user 'no-such-user-fd'", user);
    ck_assert_str_eq(err, want);
    cfg_fini(&c);

    /* speculation's bounds that depend on each other */
    snprintf(text, sizeof(text), "model = %s\nspec_type = ngram\ndraft_max = 4\ndraft_min = 5\n",
             model);
    const char *draft = write_tmp("draft.conf", text);
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", draft, NULL}), FD_ECONFIG);
    snprintf(want, sizeof(want), "%s:4: draft_min: 5 is more than draft_max (4)", draft);
    ck_assert_str_eq(err, want);
    cfg_fini(&c);
    snprintf(text, sizeof(text), "model = %s\n", model);
    const char *plain = write_tmp("plain.conf", text);
    ck_assert_int_eq(load(&c, err, sizeof(err),
                          (const char *[]){"-c", plain, "--prompt-lookup-min=3",
                                           "--prompt-lookup-max", "2", NULL}),
                     FD_ECONFIG);
    ck_assert_str_eq(err, "--prompt-lookup-min: 3 is more than prompt_lookup_max (2)");
    cfg_fini(&c);

    /* Without a model and without the demo model the message says what to do. */
    if (!cfg_model_path(&(cfg_t){.model = (char *)""})) {
        ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", "/dev/null", NULL}),
                         FD_ECONFIG);
        ck_assert_msg(strstr(err, "no model configured") && strstr(err, "--model PATH"), "%s",
                      err);
        cfg_fini(&c);
    }
}
END_TEST

START_TEST(test_key_file)
{
    const char *keys = write_tmp("keys", "# operators\nk1\n\n  k2  \r\nk1\n");
    chmod(keys, 0600);
    const char *badkeys = write_tmp("badkeys", "ok\nnot ok\n");
    chmod(badkeys, 0600);
    char text[1024];
    snprintf(text, sizeof(text), "api_keys = k0, k2\napi_key_file = %s\n", keys);
    const char *conf = write_tmp("k.conf", text);
    cfg_t c;
    char err[512] = "", want[600];
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", conf, "--dump-config", NULL}),
                     0);
    ck_assert_int_eq(c.auth_keys.n, 3);
    ck_assert_str_eq(c.auth_keys.v[0], "k0");
    ck_assert_str_eq(c.auth_keys.v[1], "k2");
    ck_assert_str_eq(c.auth_keys.v[2], "k1");
    ck_assert_ptr_null(c.auth_keys.v[3]);
    cfg_fini(&c);

    ck_assert_int_eq(load(&c, err, sizeof(err),
                          (const char *[]){"-c", conf, "--api-key-file", badkeys, "--dump-config", NULL}),
                     FD_ECONFIG);
    snprintf(want, sizeof(want), "%s:2: an API key is printable ASCII without spaces or commas",
             badkeys);
    ck_assert_str_eq(err, want);
    cfg_fini(&c);

    snprintf(text, sizeof(text), "\n\napi_key_file = %s/none\n", tmpdir);
    const char *conf2 = write_tmp("k2.conf", text);
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", conf2, "--dump-config", NULL}),
                     FD_ECONFIG);
    snprintf(want, sizeof(want),
             "%s:3: api_key_file: cannot read %s/none: No such file or directory", conf2, tmpdir);
    ck_assert_str_eq(err, want);
    cfg_fini(&c);
}
END_TEST

static char *dump_to_string(const cfg_t *c, bool verbose)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_dump(c, f, verbose);
    fclose(f);
    return buf;
}

START_TEST(test_dump_roundtrip)
{
    const char *text = "model = \"/models/my model #2.gguf\"\nmodel_alias = \"say \\\"hi\\\"\"\n"
                       "port = 0\nfusion = off\nbackend = corsair\n"
                       "backend_option = clock_ghz=1.5\nbackend_option = note=a b\n"
                       "api_keys = k1,k2\nmax_body_bytes = 1536\nrequest_timeout = 2.25\n"
                       "log_level = debug\nuser = nobody\n";
    for (int verbose = 0; verbose < 2; verbose++) {
        cfg_t a, b;
        char err[512] = "";
        cfg_init(&a);
        ck_assert_int_eq(cfg_parse_text(&a, "a.conf", text, strlen(text), err, sizeof(err)), 0);
        char *d1 = dump_to_string(&a, verbose);
        cfg_init(&b);
        int rc = cfg_parse_text(&b, "dump", d1, strlen(d1), err, sizeof(err));
        ck_assert_msg(rc == 0, "dump does not parse: %s\n%s", err, d1);
        char *d2 = dump_to_string(&b, verbose);
        ck_assert_str_eq(d1, d2);
        ck_assert_str_eq(b.model, "/models/my model #2.gguf");
        ck_assert_str_eq(b.model_alias, "say \"hi\"");
        ck_assert_int_eq(b.backend_options.n, 2);
        ck_assert_str_eq(b.backend_options.v[1], "note=a b");
        ck_assert_int_eq(b.max_body_bytes, 1536);
        ck_assert(!b.fusion);
        free(d1);
        free(d2);
        cfg_fini(&a);
        cfg_fini(&b);
    }
    /* The documented defaults parse back to the defaults. */
    cfg_t d, e;
    char err[512] = "";
    cfg_init(&d);
    char *doc = dump_to_string(&d, true);
    char *plain = dump_to_string(&d, false);
    cfg_init(&e);
    ck_assert_int_eq(cfg_parse_text(&e, "doc", doc, strlen(doc), err, sizeof(err)), 0);
    char *again = dump_to_string(&e, false);
    ck_assert_str_eq(plain, again);
    free(doc);
    free(plain);
    free(again);
    cfg_fini(&d);
    cfg_fini(&e);
}
END_TEST

static FILE *logcap;
static void log_begin(void)
{
    logcap = tmpfile();
    fd_log_set_fd(fileno(logcap));
    fd_log_init(FD_LOG_INFO, FD_LOG_JOURNAL);
}
static char *log_end(void)
{
    fd_log_fini();
    long n = lseek(fileno(logcap), 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    ck_assert_int_eq(pread(fileno(logcap), buf, (size_t)n, 0), n);
    fclose(logcap);
    return buf;
}

START_TEST(test_reload)
{
    const char *conf = write_tmp("r.conf", "port = 9000\nlog_level = info\napi_keys = a\n");
    cfg_t c;
    char err[512] = "";
    int changed = -1;
    ck_assert_int_eq(load(&c, err, sizeof(err),
                          (const char *[]){"-c", conf, "--dump-config", "--drain-timeout=5", NULL}), 0);
    ck_assert_int_eq(c.auth_keys.n, 1);

    log_begin();
    /* Nothing changed. */
    ck_assert_int_eq(cfg_reload(&c, &changed, err, sizeof(err)), 0);
    ck_assert_int_eq(changed, 0);
    /* Run-time options change; the port waits for a restart; the flag still wins. */
    write_tmp("r.conf", "port = 9001\nlog_level = debug\napi_keys = a,b\nmax_body_bytes = 8K\n"
                        "drain_timeout = 99\n");
    ck_assert_int_eq(cfg_reload(&c, &changed, err, sizeof(err)), 0);
    ck_assert_int_eq(changed, 4); /* log_level, api_keys, max_body_bytes, auth keys */
    ck_assert_int_eq(c.port, 9000);
    ck_assert_int_eq(c.log_level, CFG_LOG_DEBUG);
    ck_assert_int_eq(c.max_body_bytes, 8192);
    ck_assert_double_eq(c.drain_timeout, 5);
    ck_assert_int_eq(c.auth_keys.n, 2);
    /* A bad file changes nothing. */
    write_tmp("r.conf", "port = 9000\nlog_level = error\napi_keys = c\nmax_body_bytes = huge\n");
    ck_assert_int_eq(cfg_reload(&c, &changed, err, sizeof(err)), FD_ECONFIG);
    char want[600];
    snprintf(want, sizeof(want), "%s:4: max_body_bytes: 'huge' is not a size (bytes, or with K, "
             "M, G)", conf);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(c.log_level, CFG_LOG_DEBUG);
    ck_assert_int_eq(c.auth_keys.n, 2);
    ck_assert_str_eq(c.api_keys.v[1], "b");
    /* A vanished explicit file is an error too. */
    unlink(conf);
    ck_assert_int_eq(cfg_reload(&c, &changed, err, sizeof(err)), FD_ECONFIG);
    ck_assert_int_eq(c.max_body_bytes, 8192);
    char *log = log_end();
    ck_assert_msg(strstr(log, "<4>reload: port changed (9000 -> 9001) but needs a restart; keeping 9000"),
                  "%s", log);
    ck_assert_msg(strstr(log, "<6>reload: log_level: info -> debug"), "%s", log);
    ck_assert_msg(strstr(log, "<6>reload: api_keys changed"), "%s", log);
    ck_assert_msg(!strstr(log, "a,b"), "keys must not be logged: %s", log);
    free(log);
    cfg_fini(&c);
}
END_TEST

START_TEST(test_reload_key_file)
{
    const char *keys = write_tmp("keys", "k1\n");
    chmod(keys, 0600);
    char text[600];
    snprintf(text, sizeof(text), "api_key_file = %s\n", keys);
    const char *conf = write_tmp("r.conf", text);
    cfg_t c;
    char err[512] = "";
    int changed = -1;
    ck_assert_int_eq(load(&c, err, sizeof(err), (const char *[]){"-c", conf, "--dump-config", NULL}), 0);
    ck_assert_int_eq(c.auth_keys.n, 1);
    write_tmp("keys", "k1\nk2\n");
    log_begin();
    ck_assert_int_eq(cfg_reload(&c, &changed, err, sizeof(err)), 0);
    free(log_end());
    ck_assert_int_eq(changed, 1);
    ck_assert_int_eq(c.auth_keys.n, 2);
    ck_assert_str_eq(c.auth_keys.v[1], "k2");
    cfg_fini(&c);
}
END_TEST

START_TEST(test_help)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_print_help(f, "fusiond");
    fclose(f);
    static const char *const must[] = {
        "Usage: fusiond", "-m, --model=PATH", "--[no-]fusion", "--backend=cpu|corsair|cuda",
        "--max-body-bytes=BYTES", "--backend-option=KEY=VALUE", "--test-config", "--dump-config",
        "-c, --config=FILE", "Default: 8080.", "Applied on reload (SIGHUP).",
        "llama-server compatibility", "  -np, --parallel" "             = --max-running",
        "  --ssl-key-file" "              = --tls-key-file", "-ngl, --n-gpu-layers",
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(must); i++)
        ck_assert_msg(strstr(buf, must[i]), "--help lacks [%s]:\n%s", must[i], buf);
    /* No line is wider than 79 columns, unless one word (a long install path) fills it. */
    for (char *p = buf, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        const char *w = p + strspn(p, " ");
        const char *sp = memchr(w, ' ', (size_t)(nl - w));
        ck_assert_msg(nl - p <= 79 || !sp || sp > p + 79, "long line: %.*s", (int)(nl - p), p);
    }
    free(buf);
}
END_TEST

START_TEST(test_shipped_conf)
{
    /* etc/fusiond.conf must be exactly the documented dump of the defaults. */
    const char *top = getenv("top_srcdir");
    char path[4096];
    snprintf(path, sizeof(path), "%s/etc/fusiond.conf", top ? top : ".");
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *file = calloc(1, 1 << 20);
    size_t n = fread(file, 1, (1 << 20) - 1, f);
    fclose(f);
    file[n] = 0;
    cfg_t d;
    cfg_init(&d);
    char *doc = dump_to_string(&d, true);
    ck_assert_msg(strcmp(file, doc) == 0,
                  "etc/fusiond.conf is stale: regenerate it with\n"
                  "  ./fusiond --config=/dev/null --dump-config --verbose > etc/fusiond.conf");
    free(doc);
    free(file);
    cfg_fini(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_good_files);
    tcase_add_test(tc, test_escapes);
    tcase_add_test(tc, test_bad_files);
    tcase_add_test(tc, test_flags);
    tcase_add_test(tc, test_rope_options);
    tcase_add_test(tc, test_bad_flags);
    tcase_add_test(tc, test_llama_server_flags);
    tcase_add_test(tc, test_actions);
    tcase_add_test(tc, test_test_config);
    tcase_add_test(tc, test_key_file);
    tcase_add_test(tc, test_dump_roundtrip);
    tcase_add_test(tc, test_reload);
    tcase_add_test(tc, test_reload_key_file);
    tcase_add_test(tc, test_help);
    tcase_add_test(tc, test_shipped_conf);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
