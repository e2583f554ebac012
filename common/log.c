/* log.c: the process-wide log (see log.h). */
#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

int fd_log__level = FD_LOG_INFO;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_format = FD_LOG_AUTO; /* resolved lazily under log_lock */
static int log_fd = 2;

/* systemd sets JOURNAL_STREAM to "dev:ino" of the stream it connected; if stderr is still
 * that stream, journald is reading us and parses "<N>" as the priority. */
static int detect_format(int fd)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return FD_LOG_PLAIN;
    if (fstat(fd, &st) != 0)
        return FD_LOG_PLAIN;
    if ((unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
        return FD_LOG_JOURNAL;
    return FD_LOG_PLAIN;
}

void fd_log_init(int level, int format)
{
    pthread_mutex_lock(&log_lock);
    log_format = format == FD_LOG_AUTO ? detect_format(log_fd) : format;
    pthread_mutex_unlock(&log_lock);
    fd_log_set_level(level);
}

void fd_log_fini(void)
{
    pthread_mutex_lock(&log_lock);
    log_format = FD_LOG_AUTO;
    log_fd = 2;
    pthread_mutex_unlock(&log_lock);
    fd_log_set_level(FD_LOG_INFO);
}

void fd_log_set_level(int level)
{
    if (level < FD_LOG_ERROR)
        level = FD_LOG_ERROR;
    if (level > FD_LOG_DEBUG)
        level = FD_LOG_DEBUG;
    __atomic_store_n(&fd_log__level, level, __ATOMIC_RELAXED);
}

int fd_log_get_level(void)
{
    return __atomic_load_n(&fd_log__level, __ATOMIC_RELAXED);
}

void fd_log_set_fd(int fd)
{
    pthread_mutex_lock(&log_lock);
    log_fd = fd;
    pthread_mutex_unlock(&log_lock);
}

int fd_log_get_format(void)
{
    pthread_mutex_lock(&log_lock);
    if (log_format == FD_LOG_AUTO)
        log_format = detect_format(log_fd);
    int f = log_format;
    pthread_mutex_unlock(&log_lock);
    return f;
}

static const struct {
    const char *name;
    int level;
} level_names[] = {
    {"error", FD_LOG_ERROR}, {"warn", FD_LOG_WARN}, {"warning", FD_LOG_WARN},
    {"info", FD_LOG_INFO},   {"debug", FD_LOG_DEBUG},
};

int fd_log_level_from_name(const char *name)
{
    for (size_t i = 0; name && i < FD_ARRAY_LEN(level_names); i++)
        if (strcmp(name, level_names[i].name) == 0)
            return level_names[i].level;
    return -EINVAL;
}

const char *fd_log_level_name(int level)
{
    switch (level) {
    case FD_LOG_ERROR: return "error";
    case FD_LOG_WARN: return "warn";
    case FD_LOG_INFO: return "info";
    case FD_LOG_DEBUG: return "debug";
    default: return "?";
    }
}

int fd_log_format_from_name(const char *name)
{
    if (!name)
        return -EINVAL;
    if (strcmp(name, "auto") == 0)
        return FD_LOG_AUTO;
    if (strcmp(name, "journal") == 0)
        return FD_LOG_JOURNAL;
    if (strcmp(name, "plain") == 0)
        return FD_LOG_PLAIN;
    return -EINVAL;
}

const char *fd_log_format_name(int format)
{
    switch (format) {
    case FD_LOG_AUTO: return "auto";
    case FD_LOG_JOURNAL: return "journal";
    case FD_LOG_PLAIN: return "plain";
    default: return "?";
    }
}

/* Copies src into dst[*pos..cap) escaping control characters; leaves room for the "...\n"
 * tail.  Returns false once it ran out of room. */
static bool put_escaped(char *dst, size_t *pos, size_t cap, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t p = *pos;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        char esc[4];
        size_t k = 0;
        if (c == '\n') {
            esc[k++] = '\\';
            esc[k++] = 'n';
        } else if (c == '\t') {
            esc[k++] = '\\';
            esc[k++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            esc[k++] = '\\';
            esc[k++] = 'x';
            esc[k++] = hex[c >> 4];
            esc[k++] = hex[c & 15];
        } else {
            esc[k++] = (char)c;
        }
        if (p + k > cap) {
            *pos = p;
            return false;
        }
        memcpy(dst + p, esc, k);
        p += k;
    }
    *pos = p;
    return true;
}

static void write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing log */
        }
        buf += w;
        n -= (size_t)w;
    }
}

void fd_logv(int level, const char *fmt, va_list ap)
{
    if (!fd_log_enabled(level))
        return;
    int saved_errno = errno;
    char msg[LINE_MAX_BYTES];
    int mn = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (mn < 0)
        mn = 0;
    bool cut = (size_t)mn >= sizeof(msg);
    size_t mlen = cut ? sizeof(msg) - 1 : (size_t)mn;

    int format = fd_log_get_format();
    char line[LINE_MAX_BYTES + 128];
    const size_t cap = sizeof(line) - 5; /* room for "...\n" */
    size_t pos = 0;
    if (format == FD_LOG_JOURNAL) {
        pos = (size_t)snprintf(line, sizeof(line), "<%d>", level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        pos = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        pos += (size_t)snprintf(line + pos, sizeof(line) - pos, ".%03ldZ fusiond[%ld]: %s: ",
                                ts.tv_nsec / 1000000L, (long)getpid(),
                                fd_log_level_name(level));
    }
    if (!put_escaped(line, &pos, cap, msg, mlen))
        cut = true;
    if (cut) {
        memcpy(line + pos, "...", 3);
        pos += 3;
    }
    line[pos++] = '\n';

    pthread_mutex_lock(&log_lock);
    write_all(log_fd, line, pos);
    pthread_mutex_unlock(&log_lock);
    errno = saved_errno;
}

void fd_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fd_logv(level, fmt, ap);
    va_end(ap);
}
