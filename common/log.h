/* log.h: the process-wide log: four levels, one line per message on stderr (or a chosen fd),
 * in a form journald understands ("<3>message", syslog priorities) when running under
 * systemd, else "2025-01-31T12:00:00.123Z fusiond[pid]: level: message".  Any thread may
 * log at any time (each line is one write(2) under a lock); a disabled level costs one
 * relaxed atomic load.  fd_log_init/fd_log_fini belong to main(); fd_log_set_level may be
 * called from any thread (SIGHUP reload). */
#ifndef FD_LOG_H
#define FD_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "common/fd.h"

/* The values are the syslog priorities, so the journal prefix is "<level>". */
enum fd_log_level {
    FD_LOG_ERROR = 3,
    FD_LOG_WARN = 4,
    FD_LOG_INFO = 6,
    FD_LOG_DEBUG = 7,
};

enum fd_log_format {
    FD_LOG_AUTO = 0,    /* journal when stderr is the stream systemd gave us, else plain */
    FD_LOG_JOURNAL,     /* "<6>message" */
    FD_LOG_PLAIN,       /* "timestamp fusiond[pid]: info: message" */
};

/* Sets the level and format for the whole process.  AUTO compares $JOURNAL_STREAM
 * ("device:inode") with stderr's, as systemd documents, so a shell started from a service
 * that redirects stderr elsewhere still gets timestamps. */
void fd_log_init(int level, int format);
/* Back to the defaults (info, AUTO, stderr). */
void fd_log_fini(void);

void fd_log_set_level(int level);
int fd_log_get_level(void);
/* Where lines go (default 2).  For tests and for an access log file; the caller owns fd. */
void fd_log_set_fd(int fd);
/* The format actually in use after AUTO was resolved (FD_LOG_JOURNAL or FD_LOG_PLAIN). */
int fd_log_get_format(void);

/* "error", "warn", "info", "debug" (also "warning"); -EINVAL for anything else. */
int fd_log_level_from_name(const char *name);
const char *fd_log_level_name(int level);
/* "auto", "journal", "plain"; -EINVAL otherwise. */
int fd_log_format_from_name(const char *name);
const char *fd_log_format_name(int format);

/* The current level, read without a lock: the cheap test the macros below make. */
extern int fd_log__level;
static inline bool fd_log_enabled(int level)
{
    return level <= __atomic_load_n(&fd_log__level, __ATOMIC_RELAXED);
}

/* Writes one line if level is enabled.  Control characters in the message (a newline from a
 * client's string, say) are escaped as \n, \t or \xNN so one call is always one line and
 * nobody can forge log lines; lines longer than 4 KiB are cut and end in "...". */
void fd_log(int level, const char *fmt, ...) FD_PRINTF(2, 3);
void fd_logv(int level, const char *fmt, va_list ap);

#define fd_log_at(lvl, ...)                                                                \
    do {                                                                                   \
        if (FD_UNLIKELY(fd_log_enabled(lvl)))                                              \
            fd_log((lvl), __VA_ARGS__);                                                    \
    } while (0)
#define fd_log_error(...) fd_log_at(FD_LOG_ERROR, __VA_ARGS__)
#define fd_log_warn(...) fd_log_at(FD_LOG_WARN, __VA_ARGS__)
#define fd_log_info(...) fd_log_at(FD_LOG_INFO, __VA_ARGS__)
#define fd_log_debug(...) fd_log_at(FD_LOG_DEBUG, __VA_ARGS__)

#endif
