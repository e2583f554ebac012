/* test_metrics.c: proves the Prometheus registry: observations land in the right cumulative
 * buckets with exact sums and counts, counters and engine gauges render with their labels,
 * concurrent observers lose nothing, and promtool accepts the page (when installed). */
#include <pthread.h>
#include <stdio.h>

#include "server/metrics.h"
#include "server/strbuf.h"
#include "tests/testutil.h"

/* The value on the line that starts with `series ` (exact series text), or -1. */
static double value_of(const char *page, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = page; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

START_TEST(test_histogram_buckets)
{
    met_t *m;
    ck_assert_int_eq(met_create(&m), 0);
    met_observe(m, MET_TTFT, 0.00005);  /* first bucket (0.0001) */
    met_observe(m, MET_TTFT, 0.0001);   /* le is inclusive */
    met_observe(m, MET_TTFT, 0.003);    /* 0.005 */
    met_observe(m, MET_TTFT, 5000);     /* +Inf only */
    met_observe(m, MET_TTFT, -1);       /* clamped to 0 */
    sb_t b;
    sb_init(&b);
    met_view_t v = {0};
    met_render(m, &v, &b);
    ck_assert(!sb_failed(&b));
    const char *page = b.buf;
    ck_assert_double_eq(value_of(page, "fusiond_time_to_first_token_seconds_bucket{le=\"0.0001\"}"), 3);
    ck_assert_double_eq(value_of(page, "fusiond_time_to_first_token_seconds_bucket{le=\"0.0025\"}"), 3);
    ck_assert_double_eq(value_of(page, "fusiond_time_to_first_token_seconds_bucket{le=\"0.005\"}"), 4);
    ck_assert_double_eq(value_of(page, "fusiond_time_to_first_token_seconds_bucket{le=\"2560\"}"), 4);
    ck_assert_double_eq(value_of(page, "fusiond_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 5);
    ck_assert_double_eq(value_of(page, "fusiond_time_to_first_token_seconds_count"), 5);
    ck_assert_double_eq_tol(value_of(page, "fusiond_time_to_first_token_seconds_sum"),
                            5000.00315, 1e-9);
    ck_assert_double_eq(value_of(page, "fusiond_step_seconds_count"), 0);
    ck_assert_double_eq(value_of(page, "fusiond_requests_running"), 0);
    ck_assert_double_eq(value_of(page, "fusiond_ready"), 0);
    ck_assert_ptr_null(strstr(page, "fusiond_op_seconds_total{")); /* no engine yet */
    sb_free(&b);
    met_free(m);
}
END_TEST

START_TEST(test_buckets_resolve_submillisecond)
{
    const double *le;
    int n = met_buckets(MET_STEP, &le);
    ck_assert_int_gt(n, 4);
    int below_ms = 0;
    for (int i = 0; i < n; i++) {
        if (i)
            ck_assert(le[i] > le[i - 1]);
        below_ms += le[i] < 0.001;
    }
    ck_assert_int_ge(below_ms, 5);
    for (int h = 0; h < MET_HIST_COUNT; h++) {
        n = met_buckets(h, &le);
        ck_assert(n > 0 && n <= 32);
        ck_assert(le[0] <= 0.0001);
    }
    ck_assert_int_eq(met_buckets(MET_HIST_COUNT, &le), -EINVAL);
}
END_TEST

START_TEST(test_counters_and_engine_view)
{
    met_t *m;
    ck_assert_int_eq(met_create(&m), 0);
    met_request(m, MET_EP_COMPLETIONS, 200);
    met_request(m, MET_EP_COMPLETIONS, 200);
    met_request(m, MET_EP_COMPLETIONS, 400);
    met_request(m, MET_EP_HEALTH, 503);
    met_request(m, 99, 404);
    met_request(m, MET_EP_COMPLETION, 200);     /* llama-server's native routes */
    met_request(m, MET_EP_APPLY_TEMPLATE, 400);
    met_request(m, MET_EP_SLOTS, 501);
    met_finished(m, ENG_FINISH_LENGTH);
    met_finished(m, ENG_FINISH_CANCEL);
    met_finished(m, ENG_FINISH_CANCEL);
    met_finished(m, 0); /* ignored */
    met_step(m, 0.0002, 3, 40);

    eng_stats_t st;
    memset(&st, 0, sizeof st);
    st.running = 2;
    st.waiting = 5;
    st.kv_used = 256;
    st.kv_total = 1024;
    st.prompt_tokens = 77;
    st.gen_tokens = 1234;
    st.cache_hits = 6;
    st.cached_tokens = 345;
    st.cache_evictions = 2;
    st.cached_slots = 3;
    st.kv_cached = 99;
    st.draft_tokens = 500;
    st.draft_accepted = 321;
    st.draft_steps = 77;
    st.ops.host_ns[FB_OP_GEMM] = 1500000000ull;
    st.ops.calls[FB_OP_NORM] = 9;
    st.ops.dev_total_s = 0.25;
    st.ops.dev_s[FB_OP_ATTN] = 0.125;
    eng_info_t info;
    memset(&info, 0, sizeof info);
    info.model_id = "stories \"260K\"";
    info.arch = "llama";
    info.backend = "corsair";
    info.fusion = true;
    info.n_ctx = 512;
    info.cache_type_k = "q8_0";
    info.cache_type_v = "f16";
    info.cache_bytes = 123456789;
    met_view_t v = {.stats = &st, .info = &info, .http_in_flight = 4, .ready = true};

    sb_t b;
    sb_init(&b);
    met_render(m, &v, &b);
    const char *page = b.buf;
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"completions\",status=\"200\"}"), 2);
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"completions\",status=\"400\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"health\",status=\"503\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"other\",status=\"404\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"completion\",status=\"200\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"apply_template\",status=\"400\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_requests_total{endpoint=\"slots\",status=\"501\"}"), 1);
    ck_assert_str_eq(met_endpoint_name(MET_EP_PROPS), "props");
    ck_assert_str_eq(met_endpoint_name(MET_EP_OTHER), "other");
    ck_assert_double_eq(value_of(page, "fusiond_requests_finished_total{reason=\"cancel\"}"), 2);
    ck_assert_double_eq(value_of(page, "fusiond_requests_finished_total{reason=\"length\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_requests_finished_total{reason=\"stop\"}"), 0);
    ck_assert_double_eq(value_of(page, "fusiond_requests_running"), 2);
    ck_assert_double_eq(value_of(page, "fusiond_requests_waiting"), 5);
    ck_assert_double_eq(value_of(page, "fusiond_http_requests_in_flight"), 4);
    ck_assert_double_eq(value_of(page, "fusiond_kv_cache_usage_ratio"), 0.25);
    ck_assert_double_eq(value_of(page, "fusiond_batch_size"), 3);
    ck_assert_double_eq(value_of(page, "fusiond_batch_tokens"), 40);
    ck_assert_double_eq(value_of(page, "fusiond_prompt_tokens_total"), 77);
    ck_assert_double_eq(value_of(page, "fusiond_generation_tokens_total"), 1234);
    ck_assert_double_eq(value_of(page, "fusiond_prefix_cache_hits_total"), 6);
    ck_assert_double_eq(value_of(page, "fusiond_prefix_cache_cached_tokens_total"), 345);
    ck_assert_double_eq(value_of(page, "fusiond_prefix_cache_evictions_total"), 2);
    ck_assert_double_eq(value_of(page, "fusiond_prefix_cache_slots"), 3);
    ck_assert_double_eq(value_of(page, "fusiond_prefix_cache_tokens"), 99);
    ck_assert_double_eq(value_of(page, "fusiond_spec_draft_tokens_total"), 500);
    ck_assert_double_eq(value_of(page, "fusiond_spec_accepted_tokens_total"), 321);
    ck_assert_double_eq(value_of(page, "fusiond_spec_draft_passes_total"), 77);
    ck_assert_double_eq(value_of(page, "fusiond_ready"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_op_seconds_total{op=\"gemm\",fused=\"true\"}"), 1.5);
    ck_assert_double_eq(value_of(page, "fusiond_op_calls_total{op=\"norm\",fused=\"true\"}"), 9);
    ck_assert_double_eq(value_of(page, "fusiond_device_seconds_total{backend=\"corsair\"}"), 0.25);
    ck_assert_double_eq(value_of(page, "fusiond_op_device_seconds_total{op=\"attention\",fused=\"true\",backend=\"corsair\"}"), 0.125);
    ck_assert_double_eq(value_of(page, "fusiond_step_seconds_bucket{le=\"0.00025\"}"), 1);
    ck_assert_double_eq(value_of(page, "fusiond_step_seconds_bucket{le=\"0.0001\"}"), 0);
    ck_assert_ptr_nonnull(strstr(page, "model=\"stories \\\"260K\\\"\""));
    ck_assert_ptr_nonnull(strstr(page, ",n_ctx=\"512\",cache_type_k=\"q8_0\",cache_type_v=\"f16\"} 1\n"));
    ck_assert_double_eq(value_of(page, "fusiond_kv_cache_bytes"), 123456789);

    /* promtool, when installed, must accept the page as it is. */
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char path[] = "/tmp/fusiond-metrics-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, b.buf, b.len), (ssize_t)b.len);
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
        int rc = system(cmd);
        unlink(path);
        ck_assert_msg(rc == 0, "promtool check metrics failed");
    }
    sb_free(&b);
    met_free(m);
}
END_TEST

static void *observer(void *arg)
{
    met_t *m = arg;
    for (int i = 0; i < 20000; i++) {
        met_step(m, 0.001, 1, 1);
        met_observe(m, MET_ITL, 0.001);
    }
    return NULL;
}

START_TEST(test_threads)
{
    met_t *m;
    ck_assert_int_eq(met_create(&m), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, observer, m);
    sb_t b;
    sb_init(&b);
    for (int i = 0; i < 50; i++) {
        sb_reset(&b);
        met_view_t v = {0};
        met_render(m, &v, &b); /* scrapes race with observers */
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    sb_reset(&b);
    met_view_t v = {0};
    met_render(m, &v, &b);
    ck_assert_double_eq(value_of(b.buf, "fusiond_step_seconds_count"), 80000);
    ck_assert_double_eq(value_of(b.buf, "fusiond_inter_token_latency_seconds_count"), 80000);
    sb_free(&b);
    met_free(m);
}
END_TEST

START_TEST(test_strbuf)
{
    sb_t b;
    sb_init(&b);
    for (int i = 0; i < 1000; i++)
        sb_printf(&b, "%04d,", i);
    ck_assert_uint_eq(b.len, 5000);
    ck_assert(strncmp(b.buf + 4995, "0999,", 5) == 0);
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    sb_reset(&b);
    sb_printf(&b, "<%s>", big); /* longer than the small stack buffer */
    ck_assert_uint_eq(b.len, 601);
    ck_assert_int_eq(b.buf[600], '>');
    sb_consume(&b, 600);
    ck_assert_str_eq(b.buf, ">");
    size_t len;
    char *p = sb_take(&b, &len);
    ck_assert_str_eq(p, ">");
    ck_assert_uint_eq(len, 1);
    free(p);
    ck_assert_ptr_null(b.buf);
    sb_free(&b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_test(tc, test_histogram_buckets);
    tcase_add_test(tc, test_buckets_resolve_submillisecond);
    tcase_add_test(tc, test_counters_and_engine_view);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_strbuf);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
