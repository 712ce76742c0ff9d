/*
 * log.c - stderr or syslog, one write(2) per line so threads never interleave.
 *
 * stderr lines look like "2026-11-24T20:10:00.123Z mx2d[123]: info: text" so
 * they read well under systemd's journal and in a terminal alike.
 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "mx2";
static enum log_target log_to = LOG_TARGET_STDERR;
static enum log_level log_max = LOG_LVL_INFO;
static pid_t log_pid; /* cached by log_open: one getpid(2) less per line */

void
log_open(const char *ident, enum log_target target)
{
    const char *lvl;

    log_ident = ident;
    log_to = target;
    log_pid = getpid();
    if (target == LOG_TARGET_SYSLOG)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    lvl = getenv("MX2_DEBUG");
    if (lvl != NULL && *lvl != '\0' && strcmp(lvl, "0") != 0)
        log_max = LOG_LVL_DEBUG;
}

void
log_set_level(enum log_level max)
{
    log_max = max;
}

void
log_vlog(enum log_level lvl, const char *fmt, va_list ap)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    char line[2048];
    size_t n = 0;
    int r;

    if (lvl > log_max)
        return;
    if (log_to == LOG_TARGET_SYSLOG) {
        vsnprintf(line, sizeof(line), fmt, ap);
        syslog(prio[lvl], "%s", line);
        return;
    }
    {
        struct timeval tv;
        struct tm tm;

        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s[%ld]: %s: ", (long)tv.tv_usec / 1000,
                     log_ident, (long)(log_pid ? log_pid : getpid()), names[lvl]);
        if (r > 0)
            n += (size_t)r;
    }
    r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n - 1 ? (size_t)r : sizeof(line) - n - 2;
    line[n++] = '\n';
    /* One write: lines from several threads never interleave. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
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
