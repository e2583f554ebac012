/* notify.h: tells the service manager how start-up, reload and shutdown go (sd_notify:
 * "READY=1", "STATUS=...", "STOPPING=1", "RELOADING=1", "EXTEND_TIMEOUT_USEC=...").  Uses
 * libsystemd when configure found it, else speaks the documented datagram protocol to
 * $NOTIFY_SOCKET itself (a path, or "@name" for an abstract socket).  Without
 * $NOTIFY_SOCKET every call is a cheap no-op.  Called by the daemon main on the loop thread
 * (any thread is safe: no state). */
#ifndef FD_NOTIFY_H
#define FD_NOTIFY_H

#include "common/fd.h"

/* Sends one message of newline-separated assignments.  1 when sent, 0 when not running
 * under a service manager, negative errno on failure (the caller logs it at debug: a
 * manager that went away must not stop the daemon). */
int ntf_send(const char *fmt, ...) FD_PRINTF(1, 2);

/* The datagram protocol itself, to the socket named as in $NOTIFY_SOCKET; used by ntf_send
 * without libsystemd, and by the tests with it.  -EAFNOSUPPORT for a socket name that is
 * neither an absolute path nor "@abstract", -ENAMETOOLONG when it does not fit. */
int ntf_send_to(const char *socket_name, const char *msg);

/* Microseconds on CLOCK_MONOTONIC, as "MONOTONIC_USEC=" with "RELOADING=1" wants them. */
unsigned long long ntf_monotonic_usec(void);

#endif
