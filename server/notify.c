/* notify.c: sd_notify through libsystemd or by hand (see notify.h).  The protocol, as
 * systemd documents it (sd_notify(3)): one AF_UNIX SOCK_DGRAM datagram holding
 * newline-separated VAR=value lines, sent to the socket named by $NOTIFY_SOCKET; a leading
 * '@' names a socket in the abstract namespace (the '@' becomes a NUL byte). */
#include <config.h> /* autoconf's; "config.h" would find server/config.h */

#include "server/notify.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

int ntf_send_to(const char *socket_name, const char *msg)
{
    struct sockaddr_un sa;
    size_t n = socket_name ? strlen(socket_name) : 0;
    if (n == 0 || (socket_name[0] != '/' && socket_name[0] != '@'))
        return -EAFNOSUPPORT;
    if (n > sizeof(sa.sun_path) - (socket_name[0] == '/'))
        return -ENAMETOOLONG;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, socket_name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (socket_name[0] == '@')
        sa.sun_path[0] = 0; /* abstract: the length, not a NUL, ends the name */
    else
        len++;              /* a path: count its terminating NUL, as systemd does */

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t w;
    do
        w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    while (w < 0 && errno == EINTR);
    int rc = w < 0 ? -errno : 1;
    close(fd);
    return rc;
}

int ntf_send(const char *fmt, ...)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    if (!sock || !*sock)
        return 0;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
#ifdef HAVE_LIBSYSTEMD
    return sd_notify(0, msg);
#else
    return ntf_send_to(sock, msg);
#endif
}

unsigned long long ntf_monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
}
