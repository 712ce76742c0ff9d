/*
 * log.h - one-line logs to stderr or syslog.
 *
 * Callers: every program, any thread (each line is written with one write(2),
 * so lines from threads never interleave). log_open() once at startup before
 * threads start. Lines carry no trailing newline in the format; log adds it.
 * On stderr: "2026-11-25T06:00:00.123Z mx2d[42]: TEXT", with "warning: ",
 * "error: " or "debug: " before TEXT for those levels (Postfix's shape).
 *
 * Log once, where a decision is made (STYLE.md): inner layers return codes.
 */
#ifndef MX2_LOG_H
#define MX2_LOG_H

#include <stdarg.h>

enum log_target { LOG_TARGET_STDERR = 0, LOG_TARGET_SYSLOG = 1 };
enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* ident: program name for syslog and the stderr prefix. */
void log_open(const char *ident, enum log_target target);
void log_set_level(enum log_level max);
/* syslog mode: error lines also go to stderr, one line each ("ident:
 * error: text"), from log_open until this is called with 0. mx2d turns it
 * off once it serves, so a start that fails (a port taken, a spool it
 * cannot open) says why to whoever started it, not only to syslog. */
void log_errors_to_stderr(int on);

void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_vlog(enum log_level lvl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Gathering (stderr only): while on, the calling thread's lines collect in
 * a per-thread buffer and leave in one write(2) at log_flush(), when the
 * buffer fills, or at once for an error. mx2d's event loop gathers and
 * flushes before every wait for events, so a line is never held while the
 * process sleeps, and the lines of one loop turn (often several messages'
 * worth) cost one system call. Turning it off flushes; so does exit().
 * One thread gathers at a time (the last to turn it on). */
void log_gather(int on);
void log_flush(void);
/* Best effort, from any thread, for a process about to abort(): writes what
 * the gathering thread holds (abort runs no atexit handler). */
void log_flush_before_abort(void);
/* A broken invariant: write what is held, then abort(). */
void log_abort(void) __attribute__((noreturn));

/* Bad environment at startup: log and exit(1). */
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
