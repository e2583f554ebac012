/* test_notify.c: proves sd_notify: messages arrive whole and in order on a datagram socket
 * named by $NOTIFY_SOCKET (a path and an abstract "@name"), through ntf_send (libsystemd when
 * built with it) and the hand-written protocol alike; no socket means a no-op; bad socket
 * names fail with the documented errors. */
#include "server/notify.h"
#include "tests/testutil.h"

#include <sys/socket.h>
#include <sys/un.h>

/* A bound receiving socket for name ("/path" or "@abstract"). */
static int listen_dgram(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    memcpy(sa.sun_path, name, n);
    if (name[0] == '@')
        sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/'));
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, len), 0);
    return fd;
}

static void expect_msg(int fd, const char *want)
{
    char buf[2048];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    ck_assert_msg(n >= 0, "no datagram waiting for [%s]", want);
    buf[n] = 0;
    ck_assert_str_eq(buf, want);
}

static void exchange(const char *name)
{
    int fd = listen_dgram(name);
    setenv("NOTIFY_SOCKET", name, 1);
    ck_assert_int_gt(ntf_send("STATUS=loading %s", "model.gguf"), 0);
    ck_assert_int_gt(ntf_send("READY=1\nSTATUS=serving on 127.0.0.1:%d", 8080), 0);
    ck_assert_int_gt(ntf_send_to(name, "STOPPING=1"), 0);
    expect_msg(fd, "STATUS=loading model.gguf");
    expect_msg(fd, "READY=1\nSTATUS=serving on 127.0.0.1:8080");
    expect_msg(fd, "STOPPING=1");
    char buf[16];
    ck_assert_int_lt(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), 0); /* nothing more */
    unsetenv("NOTIFY_SOCKET");
    close(fd);
}

START_TEST(test_path_socket)
{
    char dir[] = "/tmp/fd_test_notify.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/notify", dir);
    exchange(path);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_abstract_socket)
{
    char name[64];
    snprintf(name, sizeof(name), "@fusiond-test-notify-%ld", (long)getpid());
    exchange(name);
}
END_TEST

START_TEST(test_no_manager)
{
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(ntf_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    ck_assert_int_eq(ntf_send("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

START_TEST(test_bad_names)
{
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[0] = '/';
    longname[sizeof(longname) - 1] = 0;
    ck_assert_int_eq(ntf_send_to("relative/path", "READY=1"), -EAFNOSUPPORT);
    ck_assert_int_eq(ntf_send_to("", "READY=1"), -EAFNOSUPPORT);
    ck_assert_int_eq(ntf_send_to(NULL, "READY=1"), -EAFNOSUPPORT);
    ck_assert_int_eq(ntf_send_to(longname, "READY=1"), -ENAMETOOLONG);
    ck_assert_int_eq(ntf_send_to("/nonexistent/notify", "READY=1"), -ENOENT);
    /* The manager went away: an error to log, never a crash. */
    setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
    ck_assert_int_lt(ntf_send("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}
END_TEST

START_TEST(test_monotonic)
{
    unsigned long long a = ntf_monotonic_usec();
    usleep(2000);
    unsigned long long b = ntf_monotonic_usec();
    ck_assert(b >= a + 2000 && b < a + 2000000 * tu_time_scale());
}
END_TEST

int main(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_path_socket);
    tcase_add_test(tc, test_abstract_socket);
    tcase_add_test(tc, test_no_manager);
    tcase_add_test(tc, test_bad_names);
    tcase_add_test(tc, test_monotonic);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
