/* test_log.c: proves the log: level filtering and runtime level change, the journal ("<N>")
 * and plain (timestamped) line formats, JOURNAL_STREAM detection, escaping of control
 * characters, truncation of long lines, and that lines from many threads never interleave. */
#include "common/log.h"
#include "tests/testutil.h"

#include <pthread.h>
#include <sys/stat.h>

/* Captures log output in a temporary file and returns it as a string (caller frees). */
static FILE *cap_file;

static void cap_begin(int level, int format)
{
    cap_file = tmpfile();
    ck_assert_ptr_nonnull(cap_file);
    fd_log_set_fd(fileno(cap_file));
    fd_log_init(level, format);
}

static char *cap_end(void)
{
    fd_log_fini();
    long n = lseek(fileno(cap_file), 0, SEEK_END);
    ck_assert_int_ge(n, 0);
    char *buf = malloc((size_t)n + 1);
    ck_assert_int_eq(pread(fileno(cap_file), buf, (size_t)n, 0), n);
    buf[n] = 0;
    fclose(cap_file);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

START_TEST(test_levels)
{
    cap_begin(FD_LOG_WARN, FD_LOG_JOURNAL);
    fd_log_error("e%d", 1);
    fd_log_warn("w%d", 2);
    fd_log_info("i%d", 3);
    fd_log_debug("d%d", 4);
    fd_log_set_level(FD_LOG_DEBUG);
    ck_assert_int_eq(fd_log_get_level(), FD_LOG_DEBUG);
    fd_log_debug("d%d", 5);
    fd_log_set_level(FD_LOG_ERROR);
    fd_log_warn("w%d", 6);
    char *out = cap_end();
    ck_assert_str_eq(out, "<3>e1\n<4>w2\n<7>d5\n");
    free(out);
}
END_TEST

static int side_effects;
static int bump(void)
{
    return ++side_effects;
}

START_TEST(test_disabled_is_cheap)
{
    /* A disabled level must not even evaluate its arguments. */
    cap_begin(FD_LOG_INFO, FD_LOG_JOURNAL);
    side_effects = 0;
    fd_log_debug("%d", bump());
    ck_assert_int_eq(side_effects, 0);
    fd_log_info("%d", bump());
    ck_assert_int_eq(side_effects, 1);
    char *out = cap_end();
    ck_assert_str_eq(out, "<6>1\n");
    free(out);
}
END_TEST

START_TEST(test_plain_format)
{
    cap_begin(FD_LOG_INFO, FD_LOG_PLAIN);
    ck_assert_int_eq(fd_log_get_format(), FD_LOG_PLAIN);
    fd_log_warn("hello %s", "world");
    char *out = cap_end();
    /* 2025-01-31T12:00:00.123Z fusiond[123]: warn: hello world */
    ck_assert_int_eq(count_lines(out), 1);
    ck_assert_msg(strlen(out) > 25 && out[4] == '-' && out[10] == 'T' && out[19] == '.' &&
                      out[23] == 'Z' && out[24] == ' ',
                  "bad timestamp: %s", out);
    char want[64];
    snprintf(want, sizeof(want), " fusiond[%ld]: warn: hello world\n", (long)getpid());
    ck_assert_str_eq(out + 24, want);
    free(out);
}
END_TEST

START_TEST(test_journal_detect)
{
    cap_file = tmpfile();
    fd_log_set_fd(fileno(cap_file));
    struct stat st;
    ck_assert_int_eq(fstat(fileno(cap_file), &st), 0);
    char js[64];
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    fd_log_init(FD_LOG_INFO, FD_LOG_AUTO);
    ck_assert_int_eq(fd_log_get_format(), FD_LOG_JOURNAL);
    /* Another stream (stderr redirected by a child shell): timestamps again. */
    snprintf(js, sizeof(js), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    fd_log_init(FD_LOG_INFO, FD_LOG_AUTO);
    ck_assert_int_eq(fd_log_get_format(), FD_LOG_PLAIN);
    setenv("JOURNAL_STREAM", "garbage", 1);
    fd_log_init(FD_LOG_INFO, FD_LOG_AUTO);
    ck_assert_int_eq(fd_log_get_format(), FD_LOG_PLAIN);
    unsetenv("JOURNAL_STREAM");
    fd_log_init(FD_LOG_INFO, FD_LOG_AUTO);
    ck_assert_int_eq(fd_log_get_format(), FD_LOG_PLAIN);
    free(cap_end());
}
END_TEST

START_TEST(test_escaping)
{
    cap_begin(FD_LOG_INFO, FD_LOG_JOURNAL);
    fd_log_info("a\nb\tc%cd\x7f", 1);
    char *out = cap_end();
    ck_assert_str_eq(out, "<6>a\\nb\\tc\\x01d\\x7f\n");
    free(out);
}
END_TEST

START_TEST(test_truncation)
{
    char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cap_begin(FD_LOG_INFO, FD_LOG_JOURNAL);
    fd_log_info("%s", big);
    /* Escapes that expand past the buffer are cut too. */
    memset(big, '\n', 3000);
    fd_log_info("%s", big);
    char *out = cap_end();
    ck_assert_int_eq(count_lines(out), 2);
    char *nl = strchr(out, '\n');
    ck_assert(nl - out > 4000 && nl - out < 4300);
    ck_assert(strncmp(nl - 3, "...", 3) == 0);
    ck_assert(strncmp(nl + 1, "<6>\\n\\n", 7) == 0);
    ck_assert(strncmp(out + strlen(out) - 4, "...\n", 4) == 0);
    free(out);
}
END_TEST

START_TEST(test_names)
{
    ck_assert_int_eq(fd_log_level_from_name("error"), FD_LOG_ERROR);
    ck_assert_int_eq(fd_log_level_from_name("warn"), FD_LOG_WARN);
    ck_assert_int_eq(fd_log_level_from_name("warning"), FD_LOG_WARN);
    ck_assert_int_eq(fd_log_level_from_name("info"), FD_LOG_INFO);
    ck_assert_int_eq(fd_log_level_from_name("debug"), FD_LOG_DEBUG);
    ck_assert_int_eq(fd_log_level_from_name("DEBUG"), -EINVAL);
    ck_assert_int_eq(fd_log_level_from_name(""), -EINVAL);
    ck_assert_int_eq(fd_log_level_from_name(NULL), -EINVAL);
    ck_assert_str_eq(fd_log_level_name(FD_LOG_WARN), "warn");
    ck_assert_str_eq(fd_log_level_name(99), "?");
    ck_assert_int_eq(fd_log_format_from_name("journal"), FD_LOG_JOURNAL);
    ck_assert_int_eq(fd_log_format_from_name("plain"), FD_LOG_PLAIN);
    ck_assert_int_eq(fd_log_format_from_name("auto"), FD_LOG_AUTO);
    ck_assert_int_eq(fd_log_format_from_name("json"), -EINVAL);
    ck_assert_str_eq(fd_log_format_name(FD_LOG_PLAIN), "plain");
    /* Out-of-range levels clamp. */
    fd_log_set_level(100);
    ck_assert_int_eq(fd_log_get_level(), FD_LOG_DEBUG);
    fd_log_set_level(0);
    ck_assert_int_eq(fd_log_get_level(), FD_LOG_ERROR);
    fd_log_fini();
}
END_TEST

enum { N_THREADS = 8, N_LINES = 500 };

static void *writer(void *arg)
{
    long t = (long)arg;
    char pad[200];
    memset(pad, 'a' + (int)t, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = 0;
    for (int i = 0; i < N_LINES; i++)
        fd_log_info("T%ld %d %s", t, i, pad);
    return NULL;
}

START_TEST(test_threads)
{
    cap_begin(FD_LOG_INFO, FD_LOG_JOURNAL);
    pthread_t th[N_THREADS];
    for (long t = 0; t < N_THREADS; t++)
        pthread_create(&th[t], NULL, writer, (void *)t);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    char *out = cap_end();
    ck_assert_int_eq(count_lines(out), N_THREADS * N_LINES);
    /* Every line is whole: "<6>T<t> <i> " then 199 copies of the thread's letter. */
    int next[N_THREADS] = {0};
    char *save = NULL;
    for (char *ln = strtok_r(out, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        long t;
        int i, off = 0;
        ck_assert_int_eq(sscanf(ln, "<6>T%ld %d %n", &t, &i, &off), 2);
        ck_assert(t >= 0 && t < N_THREADS);
        ck_assert_int_eq(i, next[t]++); /* each thread's lines stay in its order */
        ck_assert_uint_eq(strlen(ln + off), 199);
        for (int k = 0; k < 199; k++)
            ck_assert_int_eq(ln[off + k], 'a' + (int)t);
    }
    for (int t = 0; t < N_THREADS; t++)
        ck_assert_int_eq(next[t], N_LINES);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_levels);
    tcase_add_test(tc, test_disabled_is_cheap);
    tcase_add_test(tc, test_plain_format);
    tcase_add_test(tc, test_journal_detect);
    tcase_add_test(tc, test_escaping);
    tcase_add_test(tc, test_truncation);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
