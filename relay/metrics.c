/*
 * metrics.c - snapshot and renderings of mx2d's figures (see metrics.h).
 *
 * Names follow Prometheus conventions: counters end in _total, gauges carry
 * their unit (_bytes, _seconds). Rejections are one counter with a `reason`
 * label rather than five metrics, so `sum(rate(mx2_rejected_total[5m]))`
 * works and a new reason is not a new metric. The oldest message's age (not
 * its arrival time) is exported because that is what an alert compares with
 * queue_lifetime.
 */
#include "metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "flusher.h"
#include "smtp_server.h"
#include "writer.h"

void
metrics_collect(const struct metrics_src *src, int64_t now, struct metrics_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    out->spool_free_bytes = UINT64_MAX;
    if (src->smtpd != NULL) {
        const struct smtpd_stats *st = &src->smtpd->stats;
        out->accepted = st->accepted;
        out->rejected_relay = st->rejected_relay;
        out->rejected_unknown_user = st->rejected_unknown;
        out->rejected_map_unavailable = st->rejected_map;
        out->rejected_limit = st->rejected_limit;
        out->rejected_other = st->rejected_other;
        out->connections_open = src->smtpd->nconn;
        out->connections_total = st->connections;
    }
    if (src->flusher != NULL) {
        struct flusher_stats fs;
        flusher_get_stats(src->flusher, &fs);
        out->delivered = fs.delivered;
        out->deferred = fs.deferred;
        out->bounced = fs.bounced;
        out->expired = fs.expired;
        out->queue_messages = fs.messages;
        out->queue_bytes = fs.queue_bytes;
        out->queue_held = fs.held;
        if (fs.oldest_arrival > 0 && now > fs.oldest_arrival)
            out->queue_oldest_age_seconds = (uint64_t)(now - fs.oldest_arrival);
        out->primary_up = fs.primary_up ? 1 : 0;
    }
    if (src->writer != NULL)
        out->spool_free_bytes = writer_free_space(src->writer);
    if (src->started > 0 && now > src->started)
        out->uptime_seconds = (uint64_t)(now - src->started);
}

static void
metrics_one(struct buf *out, const char *name, const char *type, const char *help, uint64_t v)
{
    buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name,
                v);
}

void
metrics_render_prometheus(const struct metrics_snapshot *s, struct buf *out)
{
    const struct {
        const char *reason;
        uint64_t v;
    } rej[] = {
        {"relay", s->rejected_relay},
        {"unknown_user", s->rejected_unknown_user},
        {"map_unavailable", s->rejected_map_unavailable},
        {"limit", s->rejected_limit},
        {"other", s->rejected_other},
    };

    metrics_one(out, "mx2_accepted_total", "counter",
                "Messages accepted (answered 250 after DATA).", s->accepted);
    buf_appendf(out, "# HELP mx2_rejected_total SMTP commands rejected, by reason.\n"
                     "# TYPE mx2_rejected_total counter\n");
    for (size_t i = 0; i < sizeof(rej) / sizeof(rej[0]); i++)
        buf_appendf(out, "mx2_rejected_total{reason=\"%s\"} %" PRIu64 "\n", rej[i].reason,
                    rej[i].v);
    metrics_one(out, "mx2_delivered_total", "counter", "Recipients accepted by the primary.",
                s->delivered);
    metrics_one(out, "mx2_deferred_total", "counter",
                "Recipient delivery attempts that failed temporarily.", s->deferred);
    metrics_one(out, "mx2_bounced_total", "counter", "Recipients bounced to the sender.",
                s->bounced);
    metrics_one(out, "mx2_expired_total", "counter", "Recipients that outlived queue_lifetime.",
                s->expired);
    metrics_one(out, "mx2_queue_messages", "gauge", "Messages in the queue.", s->queue_messages);
    metrics_one(out, "mx2_queue_bytes", "gauge", "Bytes of the messages in the queue.",
                s->queue_bytes);
    metrics_one(out, "mx2_queue_held_messages", "gauge", "Messages on hold.", s->queue_held);
    metrics_one(out, "mx2_queue_oldest_age_seconds", "gauge",
                "Age of the oldest queued message (0 when the queue is empty).",
                s->queue_oldest_age_seconds);
    metrics_one(out, "mx2_primary_up", "gauge",
                "1 when the last contact with the primary succeeded, else 0.", s->primary_up);
    metrics_one(out, "mx2_connections_open", "gauge", "Inbound SMTP connections open now.",
                s->connections_open);
    metrics_one(out, "mx2_connections_total", "counter", "Inbound SMTP connections accepted.",
                s->connections_total);
    if (s->spool_free_bytes != UINT64_MAX)
        metrics_one(out, "mx2_spool_free_bytes", "gauge",
                    "Bytes a new message may use in the spool.", s->spool_free_bytes);
    metrics_one(out, "mx2_uptime_seconds", "gauge", "Seconds since mx2d started.",
                s->uptime_seconds);
}

void
metrics_render_stat_lines(const struct metrics_snapshot *s, struct buf *out)
{
#define METRICS_STAT_(name) buf_appendf(out, "STAT %s %" PRIu64 "\n", #name, s->name);
    CTLPROTO_STATS_MAP(METRICS_STAT_)
#undef METRICS_STAT_
}
