/* test_http.c: proves the HTTP layer over real sockets against a fake engine: routes and
 * their errors (404, 405, 401, 413, 400 with param), OpenAI-shaped answers, SSE streams equal
 * to whole answers, keep-alive, n > 1, logprobs, a full queue (503 + Retry-After), client
 * disconnects cancelling at once, pings during a slow first token, time limits, engine
 * errors, drain, cancel-all, run-time reconfiguration and shutdown with requests in flight. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/fd.h"
#include "common/log.h"
#include "server/server.h"
#include "tests/fake_engine.h"
#include "tests/testutil.h"

/* ------------------------------------------------------------------ the server under test */

static uv_loop_t loop;
static uv_async_t wake;
static pthread_t loop_th;
static srv_t *srv;
static eng_t *eng;
static int port;

static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t call_cv = PTHREAD_COND_INITIALIZER;
static void (*call_fn)(void);
static bool call_done, stopping;

static void on_wake(uv_async_t *h)
{
    pthread_mutex_lock(&call_mu);
    if (call_fn) {
        call_fn();
        call_fn = NULL;
        call_done = true;
        pthread_cond_broadcast(&call_cv);
    }
    if (stopping)
        uv_stop(&loop);
    pthread_mutex_unlock(&call_mu);
}

/* Runs fn on the loop thread (srv_* functions belong there) and waits for it. */
static void on_loop(void (*fn)(void))
{
    pthread_mutex_lock(&call_mu);
    call_fn = fn;
    call_done = false;
    uv_async_send(&wake);
    while (!call_done)
        pthread_cond_wait(&call_cv, &call_mu);
    pthread_mutex_unlock(&call_mu);
}

static void *loop_main(void *arg)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static srv_config_t cfg;
static const char *keys[3];

static void start(void)
{
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(uv_async_init(&loop, &wake, on_wake), 0);
    ck_assert_int_eq(fake_open(&eng), 0);
    char err[256];
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    int rc = srv_create(&srv, &loop, eng, &cfg, err, sizeof err);
    ck_assert_msg(rc == 0, "srv_create: %s", err);
    rc = srv_listen(srv, err, sizeof err);
    ck_assert_msg(rc == 0, "srv_listen: %s", err);
    port = srv_port(srv);
    ck_assert_int_gt(port, 0);
    stopping = false;
    pthread_create(&loop_th, NULL, loop_main, NULL);
}

static void stop(void)
{
    pthread_mutex_lock(&call_mu);
    stopping = true;
    uv_async_send(&wake);
    pthread_mutex_unlock(&call_mu);
    pthread_join(loop_th, NULL);
    srv_destroy(srv);
    fake_close(eng);
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
}

static void setup(void)
{
    fd_log_set_level(FD_LOG_WARN);
    srv_config_default(&cfg);
    cfg.max_body_bytes = 4096;
    cfg.access_log = false;
    fake_step_us = 200;
    fake_first_token_ms = 0;
    fake_capacity = 64;
    fake_error_token = -1;
    fake_paused = 0;
}

/* Holds the fake engine's steps (requests stay in flight) until fake_pause(false), so a test
 * acts on requests in flight without racing their end. */
static void fake_pause(bool on)
{
    __atomic_store_n(&fake_paused, on ? 1 : 0, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------ a small HTTP client */

typedef struct resp {
    int status;
    char head[4096];
    char *body;
    size_t len;
} resp_t;

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void send_req(int fd, const char *method, const char *path, const char *headers,
                     const char *body, bool keep)
{
    char head[1024];
    snprintf(head, sizeof head,
             "%s %s HTTP/1.1\r\nHost: localhost\r\n%s%sContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n",
             method, path, keep ? "" : "Connection: close\r\n", headers ? headers : "",
             body ? strlen(body) : 0);
    send_all(fd, head, strlen(head));
    if (body)
        send_all(fd, body, strlen(body));
}

/* Reads one response (Content-Length, chunked, or to the close). */
typedef struct rd {
    int fd;
    char buf[1 << 20];
    size_t len;
} rd_t;

static bool fill(rd_t *r, int timeout_ms)
{
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return false;
    if (r->len == sizeof r->buf)
        return false;
    ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
    if (n <= 0)
        return false;
    r->len += (size_t)n;
    return true;
}

static void take(rd_t *r, size_t n)
{
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
}

static bool read_head(rd_t *r, resp_t *out)
{
    char *end;
    while (!(end = memmem(r->buf, r->len, "\r\n\r\n", 4)))
        if (!fill(r, 5000))
            return false;
    size_t hl = (size_t)(end - r->buf) + 4;
    ck_assert_uint_lt(hl, sizeof out->head);
    memcpy(out->head, r->buf, hl);
    out->head[hl] = 0;
    out->status = atoi(out->head + 9);
    take(r, hl);
    return true;
}

static const char *header(const resp_t *r, const char *name)
{
    static __thread char val[256]; /* request() runs on several threads at once */
    size_t n = strlen(name);
    for (const char *p = r->head; (p = strstr(p, "\r\n")); p += 2) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r");
            snprintf(val, sizeof val, "%.*s", (int)l, v);
            return val;
        }
    }
    return NULL;
}

/* Reads a body in full (de-chunked). */
static void read_body(rd_t *r, resp_t *out)
{
    const char *cl = header(out, "Content-Length");
    const char *te = header(out, "Transfer-Encoding");
    size_t cap = 1 << 20;
    out->body = malloc(cap);
    out->len = 0;
    if (cl) {
        size_t want = (size_t)atol(cl);
        while (r->len < want && fill(r, 5000))
            ;
        ck_assert_uint_ge(r->len, want);
        memcpy(out->body, r->buf, want);
        out->len = want;
        take(r, want);
    } else if (te && strstr(te, "chunked")) {
        for (;;) {
            char *e;
            while (!(e = memmem(r->buf, r->len, "\r\n", 2)))
                ck_assert(fill(r, 5000));
            size_t n = strtoul(r->buf, NULL, 16);
            size_t hl = (size_t)(e - r->buf) + 2;
            while (r->len < hl + n + 2)
                ck_assert(fill(r, 5000));
            ck_assert_uint_lt(out->len + n, cap);
            memcpy(out->body + out->len, r->buf + hl, n);
            out->len += n;
            take(r, hl + n + 2);
            if (n == 0)
                break;
        }
    } else {
        while (fill(r, 5000))
            ;
        memcpy(out->body, r->buf, r->len);
        out->len = r->len;
        r->len = 0;
    }
    out->body[out->len] = 0;
}

static resp_t request(const char *method, const char *path, const char *headers,
                      const char *body)
{
    resp_t out;
    memset(&out, 0, sizeof out);
    rd_t *r = calloc(1, sizeof *r);
    r->fd = dial();
    send_req(r->fd, method, path, headers, body, false);
    ck_assert(read_head(r, &out));
    read_body(r, &out);
    close(r->fd);
    free(r);
    return out;
}

static cJSON *json_of(const resp_t *r)
{
    cJSON *j = cJSON_Parse(r->body);
    ck_assert_msg(j != NULL, "not JSON: %s", r->body);
    return j;
}

static const char *jstr(const cJSON *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = o;
    for (char *sp, *tok = strtok_r(buf, ".", &sp); tok && v; tok = strtok_r(NULL, ".", &sp)) {
        if (*tok >= '0' && *tok <= '9')
            v = cJSON_GetArrayItem(v, atoi(tok));
        else
            v = cJSON_GetObjectItemCaseSensitive(v, tok);
    }
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = o;
    for (char *sp, *tok = strtok_r(buf, ".", &sp); tok && v; tok = strtok_r(NULL, ".", &sp)) {
        if (*tok >= '0' && *tok <= '9')
            v = cJSON_GetArrayItem(v, atoi(tok));
        else
            v = cJSON_GetObjectItemCaseSensitive(v, tok);
    }
    return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

static void check_error(const resp_t *r, int status, const char *param)
{
    ck_assert_msg(r->status == status, "status %d, expected %d: %s", r->status, status, r->body);
    cJSON *j = json_of(r);
    ck_assert_ptr_nonnull(jstr(j, "error.message"));
    ck_assert_ptr_nonnull(jstr(j, "error.type"));
    const cJSON *p = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "param");
    if (param)
        ck_assert_str_eq(p->valuestring, param);
    else
        ck_assert(cJSON_IsNull(p));
    cJSON_Delete(j);
}

/* llama-server's error body: {"error": {"code": status, "message", "type"}}, no more. */
static void check_native_error(const resp_t *r, int status, const char *type)
{
    ck_assert_msg(r->status == status, "status %d, expected %d: %s", r->status, status, r->body);
    cJSON *j = json_of(r);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_int_eq(cJSON_GetArraySize(e), 3);
    ck_assert_int_eq((int)jnum(j, "error.code"), status);
    ck_assert_ptr_nonnull(jstr(j, "error.message"));
    ck_assert_str_eq(jstr(j, "error.type"), type);
    cJSON_Delete(j);
}

static void free_resp(resp_t *r)
{
    free(r->body);
}

/* The text the fake engine generates for a prompt of n tokens. */
static void expected(size_t n_prompt, int n, char *out)
{
    for (int k = 0; k < n; k++)
        out[k] = (char)('a' + (int)((n_prompt + (size_t)k) % 26));
    out[n] = 0;
}

/* SSE: concatenated "text" of every data frame for choice index (all choices when -1),
 * the number of frames, and whether [DONE] ended it. */
typedef struct sse {
    char text[4096];
    int frames;
    bool done;
    bool usage_chunk;
    bool error;
    int pings;
    char finish[32];
} sse_t;

static void parse_sse(const char *body, int index, bool chat, sse_t *s)
{
    memset(s, 0, sizeof *s);
    const char *p = body;
    while (*p) {
        const char *e = strstr(p, "\n\n");
        ck_assert_msg(e != NULL, "unterminated SSE frame: %s", p);
        if (strncmp(p, ": ping", 6) == 0) {
            s->pings++;
        } else {
            ck_assert_msg(strncmp(p, "data: ", 6) == 0, "bad frame: %.40s", p);
            ck_assert(!s->done);
            if (strncmp(p + 6, "[DONE]", 6) == 0) {
                s->done = true;
            } else {
                char *js = strndup(p + 6, (size_t)(e - p - 6));
                cJSON *j = cJSON_Parse(js);
                ck_assert_msg(j != NULL, "frame not JSON: %s", js);
                free(js);
                s->frames++;
                if (cJSON_GetObjectItem(j, "error"))
                    s->error = true;
                cJSON *ch = cJSON_GetObjectItem(j, "choices");
                if (ch && cJSON_GetArraySize(ch) == 0 && cJSON_GetObjectItem(j, "usage"))
                    s->usage_chunk = true;
                cJSON *c0 = cJSON_GetArrayItem(ch, 0);
                if (c0 && (index < 0 || jnum(c0, "index") == index)) {
                    const char *t = chat ? jstr(c0, "delta.content") : jstr(c0, "text");
                    if (t)
                        strcat(s->text, t);
                    const char *f = jstr(c0, "finish_reason");
                    if (f)
                        snprintf(s->finish, sizeof s->finish, "%s", f);
                }
                cJSON_Delete(j);
            }
        }
        p = e + 2;
    }
}

/* A scrape's value for one exact series, or -1. */
static double metric(const char *series)
{
    resp_t r = request("GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    double v = -1;
    size_t n = strlen(series);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            v = strtod(p + n + 1, NULL);
    free_resp(&r);
    return v;
}

/* Polls fn until it returns want; ms is scaled by tu_time_scale (it only bounds a failure). */
static bool wait_for(int (*fn)(void), int want, int ms)
{
    for (int i = 0; i < ms * tu_time_scale() / 10; i++) {
        if (fn() == want)
            return true;
        usleep(10000);
    }
    return fn() == want;
}

static int live(void)
{
    return fake_live(eng);
}

/* ------------------------------------------------------------------ tests */

START_TEST(test_routes)
{
    start();
    resp_t r = request("GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    ck_assert(strncmp(header(&r, "X-Request-Id"), "req-", 4) == 0);
    free_resp(&r);

    r = request("GET", "/nope", NULL, NULL);
    check_error(&r, 404, NULL);
    free_resp(&r);
    r = request("POST", "/health", NULL, "{}");
    check_error(&r, 405, NULL);
    ck_assert_str_eq(header(&r, "Allow"), "GET");
    free_resp(&r);
    r = request("GET", "/v1/completions", NULL, NULL);
    check_error(&r, 405, NULL);
    ck_assert_str_eq(header(&r, "Allow"), "POST");
    free_resp(&r);

    r = request("GET", "/v1/models", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    cJSON *j = json_of(&r);
    ck_assert_str_eq(jstr(j, "object"), "list");
    ck_assert_str_eq(jstr(j, "data.0.id"), "fake-model");
    ck_assert_str_eq(jstr(j, "data.0.fusiond.backend"), "cpu");
    ck_assert(jnum(j, "data.0.fusiond.context_length") == 128);
    cJSON_Delete(j);
    free_resp(&r);
    r = request("GET", "/v1/models/fake-model", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    free_resp(&r);
    r = request("GET", "/v1/models/other", NULL, NULL);
    check_error(&r, 404, "model");
    free_resp(&r);

    r = request("GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(header(&r, "Content-Type"), "text/plain"));
    ck_assert_ptr_nonnull(strstr(r.body, "fusiond_requests_total{endpoint=\"models\",status=\"404\"} 1"));
    ck_assert_ptr_nonnull(strstr(r.body, "fusiond_requests_total{endpoint=\"other\",status=\"404\"} 1"));
    free_resp(&r);
    stop();
}
END_TEST

START_TEST(test_completion)
{
    start();
    resp_t r = request("POST", "/v1/completions", NULL,
                       "{\"prompt\":\"hi\",\"max_tokens\":5,\"model\":\"fake-model\"}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_str_eq(header(&r, "Content-Type"), "application/json");
    cJSON *j = json_of(&r);
    char want[64];
    expected(3, 5, want); /* BOS + 2 bytes */
    ck_assert_str_eq(jstr(j, "choices.0.text"), want);
    ck_assert_str_eq(jstr(j, "object"), "text_completion");
    ck_assert(strncmp(jstr(j, "id"), "cmpl-", 5) == 0);
    ck_assert_str_eq(jstr(j, "model"), "fake-model");
    ck_assert_str_eq(jstr(j, "choices.0.finish_reason"), "length");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "logprobs")));
    ck_assert(jnum(j, "created") > 1.6e9);
    ck_assert(jnum(j, "usage.prompt_tokens") == 3);
    ck_assert(jnum(j, "usage.completion_tokens") == 5);
    ck_assert(jnum(j, "usage.total_tokens") == 8);
    ck_assert(jnum(j, "timings.predicted_n") == 5);
    ck_assert(jnum(j, "timings.prompt_n") == 3);
    ck_assert(jnum(j, "timings.ttft_ms") >= 0);
    ck_assert(jnum(j, "timings.predicted_per_second") > 0);
    /* X-Request-Id is the body's id (the OpenAI SDKs' `_request_id`). */
    ck_assert_ptr_nonnull(header(&r, "X-Request-Id"));
    ck_assert_str_eq(header(&r, "X-Request-Id"), jstr(j, "id"));
    char first_id[64];
    snprintf(first_id, sizeof first_id, "%s", jstr(j, "id"));
    cJSON_Delete(j);
    free_resp(&r);

    /* Token ids, n = 2 and echo. */
    r = request("POST", "/v1/completions", NULL,
                "{\"prompt\":[104,105],\"max_tokens\":3,\"n\":2,\"echo\":true}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    j = json_of(&r);
    expected(2, 3, want);
    char full[64];
    snprintf(full, sizeof full, "hi%s", want);
    ck_assert_str_eq(jstr(j, "choices.0.text"), full);
    ck_assert_str_eq(jstr(j, "choices.1.text"), full);
    ck_assert(jnum(j, "choices.1.index") == 1);
    ck_assert(jnum(j, "usage.prompt_tokens") == 2);
    ck_assert(jnum(j, "usage.completion_tokens") == 6);
    ck_assert_str_eq(header(&r, "X-Request-Id"), jstr(j, "id"));
    ck_assert_str_ne(jstr(j, "id"), first_id);
    cJSON_Delete(j);
    free_resp(&r);

    /* Two prompts: choices in prompt order. */
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":[\"a\",\"bcd\"],\"max_tokens\":2}");
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    expected(2, 2, want);
    ck_assert_str_eq(jstr(j, "choices.0.text"), want);
    expected(4, 2, want);
    ck_assert_str_eq(jstr(j, "choices.1.text"), want);
    ck_assert(jnum(j, "usage.prompt_tokens") == 6);
    cJSON_Delete(j);
    free_resp(&r);
    stop();
}
END_TEST

START_TEST(test_bad_requests)
{
    start();
    resp_t r = request("POST", "/v1/completions", NULL, "{\"prompt\": ");
    check_error(&r, 400, NULL);
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"temperature\":\"hot\"}");
    check_error(&r, 400, "temperature");
    /* No specific code: null, as OpenAI's. */
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":null"));
    free_resp(&r);
    /* the fake vocabulary has no FIM tokens */
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"suffix\":\"!\"}");
    check_error(&r, 400, "suffix");
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"unsupported_parameter\""));
    free_resp(&r);
    /* /infill answers in llama-server's shape, with its status for a model without FIM */
    r = request("POST", "/infill", NULL, "{\"input_prefix\":\"a\",\"input_suffix\":\"b\"}");
    check_native_error(&r, 501, "not_supported_error");
    ck_assert_ptr_nonnull(strstr(r.body, "Infill is not supported by this model: prefix token "
                                         "is missing. "));
    free_resp(&r);
    r = request("POST", "/infill", NULL, "{\"input_prefix\":\"a\"}");
    check_native_error(&r, 400, "invalid_request_error");
    ck_assert_ptr_nonnull(strstr(r.body, "\\\"input_suffix\\\" is required"));
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"model\":\"gpt-4\"}");
    check_error(&r, 404, "model");
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":[1,2,300]}");
    check_error(&r, 400, "prompt[2]");
    ck_assert_ptr_nonnull(strstr(r.body, "300"));
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"hello\",\"max_tokens\":200}");
    check_error(&r, 400, "max_tokens");
    ck_assert_ptr_nonnull(strstr(r.body, "128")); /* the context length */
    ck_assert_ptr_nonnull(strstr(r.body, "6 tokens"));
    /* OpenAI's code, which clients test; errors have an X-Request-Id too. */
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"context_length_exceeded\""));
    ck_assert(strncmp(header(&r, "X-Request-Id"), "cmpl-", 5) == 0);
    free_resp(&r);
    /* A chat names the field it was sent. */
    r = request("POST", "/v1/chat/completions", NULL,
                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":200}");
    check_error(&r, 400, "max_tokens");
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"context_length_exceeded\""));
    ck_assert(strncmp(header(&r, "X-Request-Id"), "chatcmpl-", 9) == 0);
    free_resp(&r);
    r = request("POST", "/v1/chat/completions", NULL,
                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                "\"max_completion_tokens\":200}");
    check_error(&r, 400, "max_completion_tokens");
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,"
                "16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,"
                "44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,"
                "72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,"
                "100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,"
                "121,122,123,124,125,126,127,128]}");
    check_error(&r, 400, "prompt");
    ck_assert_ptr_nonnull(strstr(r.body, "\"code\":\"context_length_exceeded\""));
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "");
    check_error(&r, 400, NULL);
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":[\"a\",\"b\"],\"n\":9}");
    check_error(&r, 400, "n");
    free_resp(&r);
    /* Nothing was left running by any of these. */
    ck_assert_int_eq(fake_live(eng), 0);
    ck_assert(metric("fusiond_requests_total{endpoint=\"completions\",status=\"400\"}") == 8);
    stop();
}
END_TEST

START_TEST(test_body_limit)
{
    start();
    char *big = malloc(8192);
    memset(big, ' ', 8191);
    big[0] = '{';
    memcpy(big + 1, "\"prompt\":\"x\"", 12);
    big[8190] = '}';
    big[8191] = 0;
    resp_t r = request("POST", "/v1/completions", NULL, big);
    check_error(&r, 413, NULL);
    free_resp(&r);

    /* Without Content-Length (chunked upload) the limit holds while reading. */
    rd_t *rd = calloc(1, sizeof *rd);
    rd->fd = dial();
    const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n";
    send_all(rd->fd, head, strlen(head));
    for (int i = 0; i < 4; i++) {
        char chunk[2100];
        int n = snprintf(chunk, sizeof chunk, "7d0\r\n");
        memset(chunk + n, ' ', 2000);
        memcpy(chunk + n + 2000, "\r\n", 2);
        send_all(rd->fd, chunk, (size_t)n + 2002);
    }
    send_all(rd->fd, "0\r\n\r\n", 5);
    resp_t r2;
    memset(&r2, 0, sizeof r2);
    ck_assert(read_head(rd, &r2));
    read_body(rd, &r2);
    check_error(&r2, 413, NULL);
    free_resp(&r2);
    close(rd->fd);
    free(rd);
    free(big);
    stop();
}
END_TEST

START_TEST(test_auth)
{
    keys[0] = "sekrit";
    keys[1] = "other-key";
    keys[2] = NULL;
    cfg.api_keys = keys;
    start();
    resp_t r = request("GET", "/v1/models", NULL, NULL);
    check_error(&r, 401, NULL);
    ck_assert_str_eq(header(&r, "WWW-Authenticate"), "Bearer");
    free_resp(&r);
    r = request("GET", "/v1/models", "Authorization: Bearer nope\r\n", NULL);
    check_error(&r, 401, NULL);
    free_resp(&r);
    r = request("GET", "/v1/models", "Authorization: Bearer sekri\r\n", NULL);
    check_error(&r, 401, NULL);
    free_resp(&r);
    r = request("GET", "/v1/models", "Authorization: Bearer sekrit\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    free_resp(&r);
    r = request("GET", "/metrics", "X-Api-Key: other-key\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\"}");
    check_error(&r, 401, NULL);
    free_resp(&r);
    r = request("GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200); /* health stays open */
    free_resp(&r);
    stop();
}
END_TEST

static void reconf_keys(void)
{
    static const char *k2[] = {"new-key", NULL};
    srv_config_t c = cfg;
    c.api_keys = k2;
    c.max_body_bytes = 100;
    char err[128];
    ck_assert_int_eq(srv_reconfigure(srv, &c, err, sizeof err), 0);
    c.max_n = 0;
    ck_assert_int_eq(srv_reconfigure(srv, &c, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "max_n"));
}

START_TEST(test_reconfigure)
{
    start();
    resp_t r = request("GET", "/v1/models", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    free_resp(&r);
    on_loop(reconf_keys);
    r = request("GET", "/v1/models", NULL, NULL);
    check_error(&r, 401, NULL);
    free_resp(&r);
    r = request("POST", "/v1/completions", "X-Api-Key: new-key\r\n",
                "{\"prompt\":\"a rather longer prompt than one hundred bytes, padded out with "
                "words until it passes the new limit\"}");
    check_error(&r, 413, NULL);
    free_resp(&r);
    stop();
}
END_TEST

static const char *const *cors_next;
static void reconf_cors(void)
{
    srv_config_t c = cfg;
    c.cors_origins = cors_next;
    char err[128];
    ck_assert_int_eq(srv_reconfigure(srv, &c, err, sizeof err), 0);
}

/* A preflight as browsers send it (no API key), from origin. */
static resp_t preflight(const char *path, const char *origin, const char *extra)
{
    char h[512];
    snprintf(h, sizeof h, "Origin: %s\r\nAccess-Control-Request-Method: POST\r\n"
             "Access-Control-Request-Headers: authorization,content-type,x-stainless-os,"
             "x-stainless-retry-count\r\n%s", origin, extra ? extra : "");
    return request("OPTIONS", path, h, NULL);
}

START_TEST(test_cors)
{
    static const char *const origins[] = {"http://localhost:3000", "https://App.Example.com",
                                          NULL};
    keys[0] = "sekrit";
    keys[1] = NULL;
    cfg.api_keys = keys;
    cfg.cors_origins = origins;
    start();
    const char *key = "Authorization: Bearer sekrit\r\n";
    /* An allowed origin: its own name back, Vary, and the headers the SDKs read exposed. */
    resp_t r = request("GET", "/v1/models", "Origin: http://localhost:3000\r\n"
                       "Authorization: Bearer sekrit\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "http://localhost:3000");
    ck_assert_str_eq(header(&r, "Vary"), "Origin");
    ck_assert_ptr_nonnull(strstr(header(&r, "Access-Control-Expose-Headers"), "X-Request-Id"));
    ck_assert_ptr_nonnull(strstr(header(&r, "Access-Control-Expose-Headers"), "Retry-After"));
    free_resp(&r);
    /* Origins compare without regard to case (browsers send them in lower case). */
    r = request("GET", "/health", "Origin: https://app.example.com\r\n", NULL);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "https://app.example.com");
    free_resp(&r);
    /* Another origin, a port off, or none: no CORS headers (the browser blocks), but Vary. */
    static const char *const others[] = {"Origin: http://evil.example\r\n",
                                         "Origin: http://localhost:3001\r\n",
                                         "Origin: null\r\n", ""};
    for (size_t i = 0; i < FD_ARRAY_LEN(others); i++) {
        char h[256];
        snprintf(h, sizeof h, "%s%s", others[i], key);
        r = request("GET", "/v1/models", h, NULL);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin"));
        ck_assert_ptr_null(header(&r, "Access-Control-Expose-Headers"));
        ck_assert_str_eq(header(&r, "Vary"), "Origin");
        free_resp(&r);
    }

    /* The preflight needs no key; it allows the method and echoes the headers asked for. */
    r = preflight("/v1/chat/completions", "http://localhost:3000", NULL);
    ck_assert_msg(r.status == 204, "%d %s", r.status, r.body);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "http://localhost:3000");
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Methods"), "POST, OPTIONS");
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Headers"),
                     "authorization,content-type,x-stainless-os,x-stainless-retry-count");
    ck_assert_str_eq(header(&r, "Access-Control-Max-Age"), "7200");
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Private-Network"));
    free_resp(&r);
    r = preflight("/v1/models", "http://localhost:3000",
                  "Access-Control-Request-Private-Network: true\r\n");
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Methods"), "GET, HEAD, OPTIONS");
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Private-Network"), "true");
    free_resp(&r);
    /* Without Access-Control-Request-Headers, or with odd bytes in it: the usual ones. */
    r = request("OPTIONS", "/v1/completions", "Origin: http://localhost:3000\r\n"
                "Access-Control-Request-Method: POST\r\n"
                "Access-Control-Request-Headers: x-a\"b\r\n", NULL);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Headers"),
                     "Authorization, Content-Type, X-Api-Key, Anthropic-Version, Anthropic-Beta");
    free_resp(&r);
    /* Not a preflight (no Access-Control-Request-Method), a disallowed origin, an unknown
     * route: what OPTIONS got before (405 with Allow, 404). */
    r = request("OPTIONS", "/v1/completions", "Origin: http://localhost:3000\r\n", NULL);
    check_error(&r, 405, NULL);
    ck_assert_str_eq(header(&r, "Allow"), "POST");
    free_resp(&r);
    r = preflight("/v1/completions", "http://evil.example", NULL);
    check_error(&r, 405, NULL);
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin"));
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Methods"));
    free_resp(&r);
    r = preflight("/v1/nope", "http://localhost:3000", NULL);
    check_error(&r, 404, NULL);
    free_resp(&r);

    /* The real request still needs the key, and its 401 is readable by the page. */
    r = request("POST", "/v1/completions", "Origin: http://localhost:3000\r\n",
                "{\"prompt\":\"x\",\"max_tokens\":2}");
    check_error(&r, 401, NULL);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "http://localhost:3000");
    free_resp(&r);
    /* A stream carries the headers too; so do errors and whole answers. */
    r = request("POST", "/v1/chat/completions", "Origin: http://localhost:3000\r\n"
                "Authorization: Bearer sekrit\r\n",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":3,"
                "\"stream\":true}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "text/event-stream");
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "http://localhost:3000");
    ck_assert_ptr_nonnull(strstr(r.body, "data: [DONE]"));
    free_resp(&r);
    r = request("POST", "/v1/completions", "Origin: http://localhost:3000\r\n"
                "Authorization: Bearer sekrit\r\n", "{\"prompt\":\"x\",\"suffix\":\"y\"}");
    check_error(&r, 400, "suffix");
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "http://localhost:3000");
    free_resp(&r);

    /* "*": any origin gets "*" (no Vary: the answer is the same for all). */
    static const char *const any[] = {"*", NULL};
    cors_next = any;
    on_loop(reconf_cors);
    r = request("GET", "/v1/models", "Origin: http://elsewhere.example:8000\r\n"
                "Authorization: Bearer sekrit\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "*");
    ck_assert_ptr_null(header(&r, "Vary"));
    free_resp(&r);
    r = preflight("/v1/completions", "null", NULL);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(header(&r, "Access-Control-Allow-Origin"), "*");
    free_resp(&r);

    /* None (the default): no CORS headers at all, and OPTIONS is a 405 as before.  (No keys
     * either, for the scrape below.) */
    cors_next = NULL;
    cfg.api_keys = NULL;
    on_loop(reconf_cors);
    r = request("GET", "/v1/models", "Origin: http://localhost:3000\r\n"
                "Authorization: Bearer sekrit\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin"));
    ck_assert_ptr_null(header(&r, "Vary"));
    free_resp(&r);
    r = preflight("/v1/completions", "http://localhost:3000", NULL);
    check_error(&r, 405, NULL);
    ck_assert_ptr_null(header(&r, "Access-Control-Allow-Origin"));
    free_resp(&r);
    ck_assert(metric("fusiond_requests_total{endpoint=\"chat_completions\",status=\"204\"}")
              == 1);
    ck_assert(metric("fusiond_requests_total{endpoint=\"completions\",status=\"204\"}") == 2);
    stop();
}
END_TEST

START_TEST(test_stream_equals_whole)
{
    start();
    const char *body = "{\"prompt\":\"stream me\",\"max_tokens\":12,\"logprobs\":1}";
    resp_t whole = request("POST", "/v1/completions", NULL, body);
    ck_assert_int_eq(whole.status, 200);
    cJSON *j = json_of(&whole);

    resp_t r = request("POST", "/v1/completions", NULL,
                       "{\"prompt\":\"stream me\",\"max_tokens\":12,\"logprobs\":1,\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true}}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(header(&r, "Content-Type"), "text/event-stream");
    /* A stream's X-Request-Id is its chunks' id. */
    char idf[80];
    snprintf(idf, sizeof idf, "\"id\":\"%s\"", header(&r, "X-Request-Id"));
    ck_assert_ptr_nonnull(strstr(r.body, idf));
    sse_t s;
    parse_sse(r.body, 0, false, &s);
    ck_assert_str_eq(s.text, jstr(j, "choices.0.text"));
    ck_assert(s.done && s.usage_chunk && !s.error);
    ck_assert_str_eq(s.finish, "length");
    ck_assert_int_eq(s.frames, 12 + 1 + 1); /* tokens, finish, usage */
    ck_assert(jnum(j, "choices.0.logprobs.token_logprobs.11") == -0.25);
    ck_assert_uint_eq(cJSON_GetArraySize(cJSON_GetObjectItem(
                          cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                              "logprobs"), "tokens")), 12);
    ck_assert(jnum(j, "choices.0.logprobs.text_offset.3") == 3);
    cJSON_Delete(j);
    free_resp(&r);
    free_resp(&whole);

    /* Chat streams start with the role and end with [DONE]. */
    r = request("POST", "/v1/chat/completions", NULL,
                "{\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}],\"max_tokens\":4,"
                "\"stream\":true}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"));
    ck_assert_ptr_nonnull(strstr(r.body, "chat.completion.chunk"));
    ck_assert_ptr_nonnull(strstr(r.body, "chatcmpl-"));
    parse_sse(r.body, 0, true, &s);
    ck_assert(s.done && !s.usage_chunk);
    ck_assert_int_eq((int)strlen(s.text), 4);
    free_resp(&r);
    stop();
}
END_TEST

START_TEST(test_chat_whole)
{
    start();
    resp_t r = request("POST", "/v1/chat/completions", NULL,
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}],"
                       "\"max_completion_tokens\":3,\"logprobs\":true,\"top_logprobs\":2}");
    ck_assert_msg(r.status == 200, "%s", r.body);
    cJSON *j = json_of(&r);
    ck_assert_str_eq(jstr(j, "object"), "chat.completion");
    ck_assert_str_eq(jstr(j, "choices.0.message.role"), "assistant");
    ck_assert_int_eq((int)strlen(jstr(j, "choices.0.message.content")), 3);
    ck_assert(jnum(j, "choices.0.logprobs.content.2.logprob") == -0.25);
    ck_assert(jnum(j, "choices.0.logprobs.content.0.top_logprobs.1.logprob") == -1.25);
    ck_assert(jnum(j, "choices.0.logprobs.content.0.bytes.0") > 0);
    cJSON_Delete(j);
    free_resp(&r);
    stop();
}
END_TEST

START_TEST(test_keep_alive)
{
    start();
    rd_t *rd = calloc(1, sizeof *rd);
    rd->fd = dial();
    for (int i = 0; i < 3; i++) {
        send_req(rd->fd, "POST", "/v1/completions", NULL, "{\"prompt\":\"k\",\"max_tokens\":2}",
                 true);
        resp_t r;
        memset(&r, 0, sizeof r);
        ck_assert(read_head(rd, &r));
        read_body(rd, &r);
        ck_assert_int_eq(r.status, 200);
        free_resp(&r);
        send_req(rd->fd, "GET", "/health", NULL, NULL, true);
        memset(&r, 0, sizeof r);
        ck_assert(read_head(rd, &r));
        read_body(rd, &r);
        ck_assert_int_eq(r.status, 200);
        free_resp(&r);
    }
    close(rd->fd);
    free(rd);
    stop();
}
END_TEST

START_TEST(test_queue_full)
{
    fake_capacity = 2;
    fake_step_us = 2000;
    start();
    resp_t r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"n\":3}");
    check_error(&r, 503, NULL);
    ck_assert_str_eq(header(&r, "Retry-After"), "1");
    ck_assert_ptr_nonnull(strstr(r.body, "overloaded"));
    free_resp(&r);
    /* The two sequences that were admitted are cancelled, not left generating. */
    ck_assert(wait_for(live, 0, 2000));
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"n\":2}");
    ck_assert_int_eq(r.status, 200);
    free_resp(&r);
    stop();
}
END_TEST

static int running_count;
static void get_running(void)
{
    running_count = srv_running(srv);
}
static int srv_running_now(void)
{
    on_loop(get_running);
    return running_count;
}

START_TEST(test_disconnect_stream)
{
    fake_step_us = 20000; /* 50 tokens/s: the request would run for 2.5 s */
    start();
    rd_t *rd = calloc(1, sizeof *rd);
    rd->fd = dial();
    send_req(rd->fd, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"x\",\"max_tokens\":120,\"stream\":true}", false);
    resp_t r;
    memset(&r, 0, sizeof r);
    ck_assert(read_head(rd, &r));
    ck_assert_int_eq(r.status, 200);
    while (!memmem(rd->buf, rd->len, "data:", 5))
        ck_assert(fill(rd, 2000));
    ck_assert_int_eq(fake_live(eng), 1);
    uint64_t t0 = fd_now_ns();
    close(rd->fd);
    free(rd);
    ck_assert(wait_for(live, 0, 2000));
    /* Well before the 2.4 s the request would have taken (slack for loaded CI machines; a
     * sanitizer build scales it, and then the cancel counter below is the proof). */
    ck_assert_uint_lt(fd_now_ns() - t0, (uint64_t)(1.5e9 * tu_time_scale()));
    ck_assert(wait_for(srv_running_now, 0, 1000));
    ck_assert(metric("fusiond_requests_finished_total{reason=\"cancel\"}") == 1);
    ck_assert(metric("fusiond_requests_running") == 0);
    stop();
}
END_TEST

START_TEST(test_disconnect_whole)
{
    fake_step_us = 20000;
    start();
    int fd = dial();
    send_req(fd, "POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"max_tokens\":120}", false);
    ck_assert(wait_for(live, 1, 1000));
    close(fd);
    ck_assert(wait_for(live, 0, 1000));
    ck_assert(wait_for(srv_running_now, 0, 1000));
    ck_assert(metric("fusiond_requests_finished_total{reason=\"cancel\"}") == 1);
    stop();
}
END_TEST

START_TEST(test_pings)
{
    fake_first_token_ms = 1200;
    cfg.ping_interval_s = 0.3;
    start();
    resp_t r = request("POST", "/v1/completions", NULL,
                       "{\"prompt\":\"x\",\"max_tokens\":2,\"stream\":true}");
    ck_assert_int_eq(r.status, 200);
    sse_t s;
    parse_sse(r.body, 0, false, &s);
    ck_assert_int_ge(s.pings, 2);
    ck_assert(s.done);
    ck_assert(strstr(r.body, ": ping") < strstr(r.body, "data:"));
    free_resp(&r);
    stop();
}
END_TEST

START_TEST(test_timeouts)
{
    /* The limit must pass before the first token (part 1) and before the 100th, yet after
     * the first (part 2): scaled for slow builds, and far from the engine's times. */
    cfg.request_timeout_s = 0.5 * tu_time_scale();
    fake_first_token_ms = (int)(4000 * tu_time_scale());
    start();
    /* No token before the limit: 503. */
    resp_t r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"max_tokens\":5}");
    check_error(&r, 503, NULL);
    ck_assert_ptr_nonnull(strstr(r.body, "timeout"));
    ck_assert_ptr_nonnull(header(&r, "Retry-After"));
    free_resp(&r);
    fake_first_token_ms = 0;
    fake_step_us = (int)(40000 * tu_time_scale()); /* 100 tokens: 4 s */
    /* Some tokens: what was generated, finish_reason length, timings.timed_out. */
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"max_tokens\":100}");
    ck_assert_int_eq(r.status, 200);
    cJSON *j = json_of(&r);
    ck_assert_str_eq(jstr(j, "choices.0.finish_reason"), "length");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "timings"), "timed_out")));
    double n = jnum(j, "usage.completion_tokens");
    ck_assert(n > 0 && n < 100);
    cJSON_Delete(j);
    free_resp(&r);
    ck_assert(metric("fusiond_requests_finished_total{reason=\"timeout\"}") == 2);
    stop();
}
END_TEST

START_TEST(test_engine_error)
{
    fake_error_token = 7;
    start();
    resp_t r = request("POST", "/v1/completions", NULL, "{\"prompt\":[3,7]}");
    check_error(&r, 500, NULL);
    ck_assert_ptr_nonnull(strstr(r.body, "fake engine failure"));
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":[3,7],\"stream\":true}");
    ck_assert_int_eq(r.status, 200);
    sse_t s;
    parse_sse(r.body, -1, false, &s);
    ck_assert(s.error && s.done);
    free_resp(&r);
    stop();
}
END_TEST

static void do_drain(void)
{
    srv_drain(srv);
}
static void do_cancel_all(void)
{
    srv_cancel_all(srv);
}

static void *slow_request(void *arg)
{
    resp_t *out = arg;
    *out = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"max_tokens\":25}");
    return NULL;
}

START_TEST(test_drain)
{
    fake_step_us = 20000;
    start();
    resp_t slow;
    pthread_t th;
    fake_pause(true); /* the slow request cannot end before the drain starts */
    pthread_create(&th, NULL, slow_request, &slow);
    ck_assert(wait_for(live, 1, 1000));
    ck_assert_int_eq(srv_running_now(), 1);
    on_loop(do_drain);
    resp_t r = request("GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body, "{\"status\":\"draining\"}");
    ck_assert_str_eq(header(&r, "Connection"), "close");
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\"}");
    check_error(&r, 503, NULL);
    ck_assert_ptr_nonnull(header(&r, "Retry-After"));
    free_resp(&r);
    fake_pause(false);
    pthread_join(th, NULL);
    ck_assert_int_eq(slow.status, 200); /* admitted before the drain: it completes */
    cJSON *j = json_of(&slow);
    ck_assert(jnum(j, "usage.completion_tokens") == 25);
    cJSON_Delete(j);
    free_resp(&slow);
    ck_assert_int_eq(srv_running_now(), 0);
    stop();
}
END_TEST

START_TEST(test_cancel_all)
{
    fake_step_us = 20000;
    start();
    fake_pause(true); /* both in flight when cancel_all comes */
    rd_t *rd = calloc(1, sizeof *rd);
    rd->fd = dial();
    send_req(rd->fd, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"x\",\"max_tokens\":120,\"stream\":true}", false);
    resp_t slow;
    pthread_t th;
    pthread_create(&th, NULL, slow_request, &slow);
    ck_assert(wait_for(live, 2, 1000));
    on_loop(do_cancel_all);
    fake_pause(false);
    resp_t r;
    memset(&r, 0, sizeof r);
    ck_assert(read_head(rd, &r));
    read_body(rd, &r);
    sse_t s;
    parse_sse(r.body, -1, false, &s);
    ck_assert(s.error && s.done);
    ck_assert_ptr_nonnull(strstr(r.body, "shutting down"));
    free_resp(&r);
    close(rd->fd);
    free(rd);
    pthread_join(th, NULL);
    check_error(&slow, 503, NULL);
    free_resp(&slow);
    stop();
}
END_TEST

START_TEST(test_shutdown_in_flight)
{
    fake_step_us = 20000;
    start();
    int fd1 = dial(), fd2 = dial();
    send_req(fd1, "POST", "/v1/completions", NULL, "{\"prompt\":\"x\",\"max_tokens\":120}", false);
    send_req(fd2, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"x\",\"max_tokens\":120,\"stream\":true}", false);
    ck_assert(wait_for(live, 2, 1000));
    stop(); /* srv_destroy with two requests running: no hang, no leak, no crash */
    close(fd1);
    close(fd2);
}
END_TEST

/* Bodies above 16 KiB are prepared on libuv's thread pool: answers, errors and admission
 * must come back from there just the same. */
START_TEST(test_large_bodies)
{
    cfg.max_body_bytes = 1 << 20;
    start();
    size_t n = 40000;
    char *body = malloc(n + 128);
    int off = snprintf(body, 128, "{\"prompt\":\"hi\",\"max_tokens\":4,\"pad\":\"");
    memset(body + off, 'x', n);
    strcpy(body + off + n, "\"}");
    resp_t r = request("POST", "/v1/completions", NULL, body);
    ck_assert_msg(r.status == 200, "%s", r.body);
    cJSON *j = json_of(&r);
    char want[16];
    expected(3, 4, want);
    ck_assert_str_eq(jstr(j, "choices.0.text"), want);
    cJSON_Delete(j);
    free_resp(&r);

    /* The same padding in a stream. */
    char *sb = malloc(n + 160);
    snprintf(sb, n + 160, "{\"stream\":true,%s", body + 1);
    r = request("POST", "/v1/completions", NULL, sb);
    ck_assert_int_eq(r.status, 200);
    sse_t s;
    parse_sse(r.body, 0, false, &s);
    ck_assert(s.done);
    ck_assert_str_eq(s.text, want);
    free_resp(&r);
    free(sb);

    /* A prompt of 40000 tokens: refused from the pool with the numbers. */
    off = snprintf(body, 128, "{\"prompt\":\"");
    memset(body + off, 'y', n);
    strcpy(body + off + n, "\"}");
    r = request("POST", "/v1/completions", NULL, body);
    check_error(&r, 400, "prompt");
    ck_assert_ptr_nonnull(strstr(r.body, "40001"));
    /* That answer was held, then queued: its headers went on once. */
    const char *rid = strstr(r.head, "X-Request-Id:");
    ck_assert_ptr_nonnull(rid);
    ck_assert_ptr_null(strstr(rid + 1, "X-Request-Id:"));
    free_resp(&r);
    r = request("POST", "/tokenize", NULL, body); /* "prompt" is vLLM's name for content */
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    ck_assert(jnum(j, "count") == 40001);
    cJSON_Delete(j);
    free_resp(&r);
    free(body);
    stop();
}
END_TEST

START_TEST(test_tokenize)
{
    start();
    resp_t r = request("POST", "/tokenize", NULL, "{\"content\":\"ab\"}");
    ck_assert_int_eq(r.status, 200);
    cJSON *j = json_of(&r);
    ck_assert(jnum(j, "tokens.0") == 1 && jnum(j, "tokens.1") == 'a' && jnum(j, "tokens.2") == 'b');
    ck_assert(jnum(j, "count") == 3);
    ck_assert(jnum(j, "max_model_len") == 128);
    cJSON_Delete(j);
    free_resp(&r);
    r = request("POST", "/tokenize", NULL, "{\"content\":\"ab\",\"add_special\":false,\"with_pieces\":true}");
    j = json_of(&r);
    ck_assert(jnum(j, "tokens.0.id") == 'a');
    ck_assert_str_eq(jstr(j, "tokens.1.piece"), "b");
    cJSON_Delete(j);
    free_resp(&r);
    r = request("POST", "/detokenize", NULL, "{\"tokens\":[1,104,105]}");
    ck_assert_int_eq(r.status, 200);
    j = json_of(&r);
    ck_assert_str_eq(jstr(j, "content"), "hi");
    cJSON_Delete(j);
    free_resp(&r);
    r = request("POST", "/detokenize", NULL, "{\"tokens\":[1,999]}");
    check_error(&r, 400, "tokens[1]");
    free_resp(&r);
    stop();
}
END_TEST

static void start_loading(void)
{
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(uv_async_init(&loop, &wake, on_wake), 0);
    ck_assert_int_eq(fake_open(&eng), 0);
    char err[256];
    cfg.port = 0;
    ck_assert_int_eq(srv_create(&srv, &loop, NULL, &cfg, err, sizeof err), 0);
    ck_assert_int_eq(srv_listen(srv, err, sizeof err), 0);
    port = srv_port(srv);
    stopping = false;
    pthread_create(&loop_th, NULL, loop_main, NULL);
}

static void set_engine(void)
{
    srv_set_engine(srv, eng);
}

START_TEST(test_loading)
{
    start_loading();
    resp_t r = request("GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body, "{\"status\":\"loading\"}");
    free_resp(&r);
    r = request("POST", "/v1/completions", NULL, "{\"prompt\":\"x\"}");
    check_error(&r, 503, NULL);
    free_resp(&r);
    r = request("GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "fusiond_ready 0"));
    free_resp(&r);
    on_loop(set_engine);
    r = request("GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    free_resp(&r);
    stop();
}
END_TEST

START_TEST(test_parallel_clients)
{
    fake_step_us = 500;
    start();
    enum { N = 16 };
    pthread_t th[N];
    resp_t out[N];
    for (int i = 0; i < N; i++)
        pthread_create(&th[i], NULL, slow_request, &out[i]);
    char want[64];
    expected(2, 25, want);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(out[i].status, 200);
        cJSON *j = json_of(&out[i]);
        ck_assert_str_eq(jstr(j, "choices.0.text"), want);
        cJSON_Delete(j);
        free_resp(&out[i]);
    }
    ck_assert(metric("fusiond_requests_total{endpoint=\"completions\",status=\"200\"}") == N);
    ck_assert(metric("fusiond_generation_tokens_total") == N * 25);
    ck_assert(metric("fusiond_time_to_first_token_seconds_count") == N);
    ck_assert(metric("fusiond_inter_token_latency_seconds_count") == N * 24);
    ck_assert(metric("fusiond_e2e_request_latency_seconds_count") == N);
    stop();
}
END_TEST

/* Regression (bad-input battery): at the connection limit libmicrohttpd takes the listening
 * socket out of its epoll set and puts it back only at the start of a later MHD_run; when
 * the connections that filled the limit all closed in one run, nothing woke the loop again,
 * so the connections waiting in the accept queue (and every new one) hung for good. */
START_TEST(test_connection_limit)
{
    cfg.max_connections = 4;
    start();
    int fds[7];
    for (int i = 0; i < 7; i++) /* 4 accepted, 3 left in the kernel's accept queue */
        fds[i] = dial();
    usleep(200 * 1000);
    for (int i = 0; i < 7; i++)
        close(fds[i]);
    usleep(200 * 1000);
    for (int k = 0; k < 3; k++) {
        rd_t *r = calloc(1, sizeof *r);
        resp_t out;
        memset(&out, 0, sizeof out);
        r->fd = dial();
        send_req(r->fd, "GET", "/health", NULL, NULL, false);
        ck_assert_msg(read_head(r, &out), "no answer after the connections at the limit closed");
        ck_assert_int_eq(out.status, 200);
        read_body(r, &out);
        free_resp(&out);
        close(r->fd);
        free(r);
    }
    stop();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_routes);
    tcase_add_test(tc, test_completion);
    tcase_add_test(tc, test_bad_requests);
    tcase_add_test(tc, test_body_limit);
    tcase_add_test(tc, test_auth);
    tcase_add_test(tc, test_reconfigure);
    tcase_add_test(tc, test_cors);
    tcase_add_test(tc, test_stream_equals_whole);
    tcase_add_test(tc, test_chat_whole);
    tcase_add_test(tc, test_keep_alive);
    tcase_add_test(tc, test_queue_full);
    tcase_add_test(tc, test_disconnect_stream);
    tcase_add_test(tc, test_disconnect_whole);
    tcase_add_test(tc, test_pings);
    tcase_add_test(tc, test_timeouts);
    tcase_add_test(tc, test_engine_error);
    tcase_add_test(tc, test_drain);
    tcase_add_test(tc, test_cancel_all);
    tcase_add_test(tc, test_shutdown_in_flight);
    tcase_add_test(tc, test_tokenize);
    tcase_add_test(tc, test_large_bodies);
    tcase_add_test(tc, test_loading);
    tcase_add_test(tc, test_parallel_clients);
    tcase_add_test(tc, test_connection_limit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
