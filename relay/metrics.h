/*
 * metrics.h - mx2d's figures in one snapshot, and their two renderings:
 * Prometheus text (GET /metrics) and the control socket's STAT lines
 * (mx2ctl stats).
 *
 * The counters live where they are counted (struct smtpd_stats in the SMTP
 * server, struct flusher_stats in the flusher, the writer's free-space
 * figure); metrics_collect() copies them into a struct metrics_snapshot so
 * that both renderings see the same numbers. Rendering is pure, so the unit
 * test checks the exposition format without a daemon.
 *
 * Callers: control.c and http.c, on the event-loop thread (the counters are
 * only written on that thread, so no locking). The source pointers are
 * borrowed from main.c and outlive the servers.
 *
 * Errors: none (rendering appends to a struct buf; out of memory is fatal).
 */
#ifndef MX2_METRICS_H
#define MX2_METRICS_H

#include <stdint.h>

#include "buf.h"
#include "ctlproto.h"

struct smtpd_server;
struct flusher;
struct writer;

/* Where the figures come from (any pointer may be NULL: its figures are 0). */
struct metrics_src {
    const struct smtpd_server *smtpd;
    const struct flusher *flusher;
    const struct writer *writer;
    int64_t started; /* unix seconds when mx2d started */
};

/* One field per STAT name of ctlproto.h, spelled the same. */
struct metrics_snapshot {
#define METRICS_FIELD_(name) uint64_t name;
    CTLPROTO_STATS_MAP(METRICS_FIELD_)
#undef METRICS_FIELD_
};

/* Fill *out from src at time now (unix seconds). spool_free_bytes is
 * UINT64_MAX until the writer has measured it. */
void metrics_collect(const struct metrics_src *src, int64_t now, struct metrics_snapshot *out);

/* Append the Prometheus text exposition (format 0.0.4: # HELP and # TYPE
 * lines, LF line ends) of s to out. */
void metrics_render_prometheus(const struct metrics_snapshot *s, struct buf *out);

/* Append "STAT name value\n" for every field, in CTLPROTO_STATS_MAP order. */
void metrics_render_stat_lines(const struct metrics_snapshot *s, struct buf *out);

#endif
