/*
 * schedule.c - pure retry/expiry/probe policy (see schedule.h).
 *
 * Why the shapes below:
 * - Doubling is done by comparison against the cap before each shift, never
 *   by computing 2^(failures-1) first: failures counts attempts over a
 *   message's whole life and may be anything up to 2^32-1 (a corrupt or
 *   hand-edited envelope included), and a shift by >= 63 is undefined.
 * - Jitter spreads the retries of messages deferred by the same outage
 *   (OpenSMTPD and Postfix both avoid a thundering herd when the primary
 *   returns). It must be deterministic - the tests use a fake clock and the
 *   flusher may recompute a schedule after a restart - so it comes from a
 *   caller-supplied seed mixed by a 32-bit integer hash, not from rand().
 * - Durations in the config are at most CONFIG_DURATION_MAX (~3.2e9 s), so
 *   delay + delay/10 + now cannot overflow int64 for any sane `now`; a
 *   negative value (never produced by config.c) is clamped to 0.
 */
#include "schedule.h"

static int64_t
clamp0(int64_t v)
{
    return v < 0 ? 0 : v;
}

/* A 32-bit finaliser (the "lowbias32" mixer): every seed bit affects every
 * output bit, so consecutive queue IDs get unrelated jitters. */
static uint32_t
mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

int64_t
sched_retry_delay(const struct mx2_config *cfg, uint32_t failures, uint32_t seed)
{
    if (failures == 0)
        return 0;
    int64_t lo = clamp0(cfg->retry_min);
    int64_t hi = clamp0(cfg->retry_max);
    int64_t delay = lo < hi ? lo : hi;
    /* Double failures-1 times, stopping as soon as the cap is reached; at
     * most ~32 iterations for a 100-year cap, whatever failures is. */
    for (uint32_t i = 1; i < failures && delay < hi; i++) {
        if (delay == 0)
            break; /* retry_min 0: 0 doubles to 0 forever */
        delay = delay > hi / 2 ? hi : delay * 2;
    }
    int64_t span = delay / 10;
    if (span > 0) {
        int64_t j = (int64_t)(mix32(seed) % (uint64_t)(span + 1));
        /* SPEC: doubling "up to retry_max": never past it. Below the cap
         * the jitter is added (clamped); at the cap it is taken off, so
         * messages deferred together still spread out. */
        if (delay == hi)
            delay -= j;
        else
            delay = delay > hi - j ? hi : delay + j;
    }
    return delay;
}

int64_t
sched_next_attempt(const struct mx2_config *cfg, int64_t now, uint32_t failures, uint32_t seed)
{
    return now + sched_retry_delay(cfg, failures, seed);
}

int
sched_expired(const struct mx2_config *cfg, int64_t arrival, int64_t now)
{
    return now - arrival >= clamp0(cfg->queue_lifetime);
}

int64_t
sched_expire_time(const struct mx2_config *cfg, int64_t arrival)
{
    return arrival + clamp0(cfg->queue_lifetime);
}

int
sched_delay_warning_due(const struct mx2_config *cfg, int64_t arrival, int64_t now,
                        int already_warned)
{
    if (cfg->delay_warning <= 0 || already_warned)
        return 0;
    /* An expired message gets its bounce instead: a "still trying" note
     * sent together with "gave up" would only confuse the sender. */
    if (sched_expired(cfg, arrival, now))
        return 0;
    return now - arrival >= cfg->delay_warning;
}

void
sched_primary_init(struct sched_primary *p)
{
    p->up = 1;
    p->next_probe = 0;
    p->down_since = 0;
    p->failures = 0;
}

int
sched_primary_failed(struct sched_primary *p, const struct mx2_config *cfg, int64_t now)
{
    int changed = p->up != 0;
    if (changed)
        p->down_since = now;
    p->up = 0;
    if (p->failures < UINT32_MAX)
        p->failures++;
    /* A probe interval of 0 would make the flusher probe in a busy loop;
     * one second is the smallest step the flusher's timer deals in. */
    int64_t step = cfg->probe_interval > 0 ? cfg->probe_interval : 1;
    p->next_probe = now + step;
    return changed;
}

int
sched_primary_ok(struct sched_primary *p, int64_t now)
{
    (void)now;
    int changed = p->up == 0;
    p->up = 1;
    p->next_probe = 0;
    p->down_since = 0;
    p->failures = 0;
    return changed;
}

int
sched_probe_due(const struct sched_primary *p, int64_t now)
{
    return !p->up && now >= p->next_probe;
}
