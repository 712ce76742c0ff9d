/*
 * log.c - stderr or syslog, one write(2) per line so threads never interleave.
 *
 * stderr lines look like "2026-11-24T20:10:00.123Z mx2d[123]: info: text" so
 * they read well under systemd's journal and in a terminal alike.
 */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "mx2";
static enum log_target log_to = LOG_TARGET_STDERR;
static int log_err_stderr; /* syslog mode: errors also to stderr (log_errors_to_stderr) */
static enum log_level log_max = LOG_LVL_INFO;
static pid_t log_pid; /* cached by log_open: one getpid(2) less per line */

#define LOG_GATHER_MAX (16 * 1024)
/* One thread gathers (mx2d's event loop): the buffer is global so that a
 * process about to abort can still write it from any thread. */
static struct {
    int on;
    pthread_t owner;
    size_t len;
    char buf[LOG_GATHER_MAX];
} log_g;

/* The "2026-11-24T20:10:00" prefix of the current second, per thread. */
static _Thread_local struct {
    time_t sec;
    size_t len;
    char text[32];
} log_ts;

static int
log_gathering(void)
{
    return log_g.on && pthread_equal(log_g.owner, pthread_self());
}

/* Write all of p, retrying after a signal or a short write (a pipe or a
 * socket to journald can take part of it). Pieces of at most PIPE_BUF
 * bytes, cut at line ends, so that each is atomic on a pipe: lines from
 * other threads, written whole, never land inside one. */
static void
log_write_all(const char *p, size_t n)
{
    while (n > 0) {
        size_t piece = n;
        if (piece > PIPE_BUF) {
            piece = PIPE_BUF;
            while (piece > 0 && p[piece - 1] != '\n')
                piece--;
            if (piece == 0)
                piece = PIPE_BUF; /* no line end: cannot happen, lines are short */
        }
        ssize_t w = write(STDERR_FILENO, p, piece);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report it */
        }
        p += w;
        n -= (size_t)w;
    }
}

void
log_flush(void)
{
    if (log_gathering() && log_g.len > 0) {
        log_write_all(log_g.buf, log_g.len);
        log_g.len = 0;
    }
}

void
log_flush_before_abort(void)
{
    if (log_g.on && log_g.len > 0) {
        log_write_all(log_g.buf, log_g.len);
        log_g.len = 0;
    }
}

void
log_abort(void)
{
    log_flush_before_abort();
    abort();
}

void
log_gather(int on)
{
    if (!on) {
        log_flush();
        log_g.on = 0;
        return;
    }
    log_g.owner = pthread_self();
    log_g.len = 0;
    log_g.on = log_to == LOG_TARGET_STDERR;
}

static int log_atexit_set;

static void
log_atexit(void)
{
    log_flush();
}

void
log_open(const char *ident, enum log_target target)
{
    const char *lvl;

    log_ident = ident;
    log_to = target;
    log_pid = getpid();
    if (!log_atexit_set && atexit(log_atexit) == 0)
        log_atexit_set = 1;
    if (target == LOG_TARGET_SYSLOG) {
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
        log_err_stderr = 1;
    }
    lvl = getenv("MX2_DEBUG");
    if (lvl != NULL && *lvl != '\0' && strcmp(lvl, "0") != 0)
        log_max = LOG_LVL_DEBUG;
}

void
log_errors_to_stderr(int on)
{
    log_err_stderr = on;
}

void
log_set_level(enum log_level max)
{
    log_max = max;
}

void
log_vlog(enum log_level lvl, const char *fmt, va_list ap)
{
    /* Postfix's shape: "warning: ", "error: " before the text, nothing for
     * an ordinary line, so "ident[pid]: QUEUEID: ..." parses as Postfix's. */
    static const char *const names[] = {"error: ", "warning: ", "", "debug: "};
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char line[2048];
    size_t n = 0;
    int r;

    if (lvl > log_max)
        return;
    if (log_to == LOG_TARGET_SYSLOG) {
        vsnprintf(line, sizeof(line), fmt, ap);
        syslog(prio[lvl], "%s%s", names[lvl], line);
        if (lvl == LOG_LVL_ERR && log_err_stderr) {
            /* Starting up: whoever started mx2d sees why it stops. */
            char out[2100];
            int k = snprintf(out, sizeof(out), "%s: %s%s\n", log_ident, names[lvl], line);
            if (k > 0)
                log_write_all(out, (size_t)k < sizeof(out) ? (size_t)k : sizeof(out) - 1);
        }
        return;
    }
    {
        struct timeval tv;
        struct tm tm;

        gettimeofday(&tv, NULL);
        if (tv.tv_sec != log_ts.sec || log_ts.len == 0) {
            gmtime_r(&tv.tv_sec, &tm);
            log_ts.len = strftime(log_ts.text, sizeof(log_ts.text), "%Y-%m-%dT%H:%M:%S", &tm);
            log_ts.sec = tv.tv_sec;
        }
        memcpy(line, log_ts.text, log_ts.len);
        n = log_ts.len;
        r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s[%ld]: %s", (long)tv.tv_usec / 1000,
                     log_ident, (long)(log_pid ? log_pid : getpid()), names[lvl]);
        if (r > 0)
            n += (size_t)r;
    }
    r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n - 1 ? (size_t)r : sizeof(line) - n - 2;
    line[n++] = '\n';
    if (!log_gathering()) {
        log_write_all(line, n);
        return;
    }
    if (log_g.len + n > sizeof(log_g.buf))
        log_flush();
    memcpy(log_g.buf + log_g.len, line, n);
    log_g.len += n;
    if (lvl == LOG_LVL_ERR)
        log_flush();
}

#define LOG_FN_(fname, lvl)                                                                        \
    void fname(const char *fmt, ...)                                                               \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vlog(lvl, fmt, ap);                                                                    \
        va_end(ap);                                                                                \
    }

LOG_FN_(log_err, LOG_LVL_ERR)
LOG_FN_(log_warn, LOG_LVL_WARN)
LOG_FN_(log_info, LOG_LVL_INFO)
LOG_FN_(log_debug, LOG_LVL_DEBUG)

void
log_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vlog(LOG_LVL_ERR, fmt, ap);
    va_end(ap);
    exit(1);
}
