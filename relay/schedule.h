/*
 * schedule.h - the flusher's pure policy: retry backoff, queue lifetime,
 * delay warnings, and the primary's up/down/probe state.
 *
 * Every function is a function of its arguments and `now` (unix seconds):
 * no clock, no I/O, no rand(), no globals. The flusher passes the loop's
 * time; the unit tests pass a fake clock (OpenSMTPD scheduler_backoff,
 * Postfix qmgr_queue.c).
 *
 * Policy (SPEC.md "Delivery (flusher)"):
 * - After the k-th consecutive failure of a message (k >= 1) the next attempt
 *   is retry_min * 2^(k-1), capped at retry_max, moved by a jitter of up to
 *   a tenth derived from a caller-supplied seed (e.g. a hash of the queue
 *   ID), so that thousands of messages deferred by the same outage do not
 *   come back in the same second: added below the cap (never past it),
 *   taken off at the cap. Huge k never overflows.
 * - A message whose age (now - arrival) reaches queue_lifetime is expired.
 * - The delay warning (delay_warning > 0) is due once, when the age reaches
 *   delay_warning, unless the message has already expired (then the bounce
 *   says everything) or was already warned.
 * - The primary starts "up" (unknown = try it). A failure to reach it marks it
 *   down with the next probe probe_interval later; each failed probe pushes
 *   the next one by probe_interval; a success marks it up.
 *
 * Callers: the flusher (loop thread). Thread-safe: pure functions; a
 * struct sched_primary belongs to its caller (no locking here).
 *
 * Errors: none; bad configuration values (negative durations) are clamped
 * to 0 rather than trusted.
 */
#ifndef MX2_SCHEDULE_H
#define MX2_SCHEDULE_H

#include <stdint.h>

#include "config.h"

/* Delay before the next attempt after `failures` consecutive failures:
 * 0 when failures is 0; else base = min(retry_min * 2^(failures-1), retry_max)
 * and j in [0, base/10] derived deterministically from seed: min(base + j,
 * retry_max) below the cap, retry_max - j at it. Never above retry_max. */
int64_t sched_retry_delay(const struct mx2_config *cfg, uint32_t failures, uint32_t seed);

/* now + sched_retry_delay(cfg, failures, seed). */
int64_t sched_next_attempt(const struct mx2_config *cfg, int64_t now, uint32_t failures,
                           uint32_t seed);

/* 1 when now - arrival >= queue_lifetime, else 0. */
int sched_expired(const struct mx2_config *cfg, int64_t arrival, int64_t now);

/* arrival + queue_lifetime: when the message will be given up (for the
 * delayed DSN's Will-Retry-Until). */
int64_t sched_expire_time(const struct mx2_config *cfg, int64_t arrival);

/* 1 when a delay warning should be sent now: delay_warning > 0, not
 * already_warned, now - arrival >= delay_warning, and not yet expired. */
int sched_delay_warning_due(const struct mx2_config *cfg, int64_t arrival, int64_t now,
                            int already_warned);

/* The primary's reachability as the flusher sees it. */
struct sched_primary {
    int up;             /* 1 up (or unknown), 0 down */
    int64_t next_probe; /* when down: time of the next probe */
    int64_t down_since; /* when down: time it went down; 0 when up */
    uint32_t failures;  /* consecutive failures since it was last up */
};

/* Starts "up": an unknown primary is tried at once. */
void sched_primary_init(struct sched_primary *p);

/* A connection/greeting/EHLO to the primary failed (a delivery or a probe):
 * mark it down, next_probe = now + probe_interval (at least 1 s, so a zero
 * interval cannot make the flusher probe in a busy loop), failures + 1
 * (saturating); down_since is set on the transition only. Returns 1
 * when this call changed the state (up -> down: log it), else 0. */
int sched_primary_failed(struct sched_primary *p, const struct mx2_config *cfg, int64_t now);

/* The primary answered (delivery or probe succeeded): mark it up and reset
 * the counters. Returns 1 when this call changed the state (down -> up: log
 * it and deliver the deferred queue), else 0. */
int sched_primary_ok(struct sched_primary *p, int64_t now);

/* 1 when the primary is down and now >= next_probe. */
int sched_probe_due(const struct sched_primary *p, int64_t now);

#endif
