/*
 * envelope.c - see envelope.h; the byte layout is in queue/README.md.
 *
 * Why a fixed-order binary record rather than TLV or text lines: every field
 * is always present, so the decoder is one straight pass with a bounds check
 * before every read, and there is no "unknown tag" or "duplicate key" case to
 * get wrong. The version byte is how the layout will change: a decoder
 * refuses versions it does not know instead of guessing.
 *
 * Why a CRC: LMDB checks nothing about the values it stores. A flipped bit in
 * a length or a state would otherwise decode into a plausible but wrong
 * envelope (a recipient marked done is a lost message). With the CRC such a
 * record is refused and reported (mx2ctl shows it, the flusher skips it)
 * rather than trusted.
 *
 * Why strings refuse control characters: addresses, HELO and the rest end up
 * in SMTP commands to the primary, in Received:/XFORWARD and in log lines; a
 * CR or LF there would be command injection. The SMTP parser refuses them
 * first; encode and decode refuse them again so no path can store or load one.
 */
#include "envelope.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "xalloc.h"

static const unsigned char envelope_magic[4] = {'M', 'X', '2', 'E'};

/* Smallest possible encoding of one recipient: address (2 + 1), orcpt (2),
 * notify, state, flags (3), attempts (4), last_attempt (8), last_error (2). */
#define ENVELOPE_RCPT_MIN 22u

/* ---- CRC-32 ---- */

/* The reflected CRC-32 of zlib and Ethernet (polynomial 0xedb88320),
 * eight bytes a step ("slicing by 8": table k advances a byte's effect
 * by k more bytes). Same values as the byte-at-a-time loop, about five
 * times faster; it is the biggest user-space cost of a journaled 2 KiB
 * message. */
static uint32_t envelope_crc_table[8][256];
static pthread_once_t envelope_crc_once = PTHREAD_ONCE_INIT;

static void
envelope_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        envelope_crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = envelope_crc_table[t - 1][i];
            envelope_crc_table[t][i] = envelope_crc_table[0][c & 0xffu] ^ (c >> 8);
        }
}

uint32_t
envelope_crc32(const void *data, size_t len)
{
    return envelope_crc32_update(0, data, len);
}

static inline uint32_t
envelope_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t
envelope_crc32_update(uint32_t crc, const void *data, size_t len)
{
    const uint32_t(*t)[256] = (const uint32_t(*)[256])envelope_crc_table;
    const unsigned char *p = data;
    uint32_t c = crc ^ 0xffffffffu;

    pthread_once(&envelope_crc_once, envelope_crc_init);
    for (; len >= 8; p += 8, len -= 8) {
        uint32_t a = c ^ envelope_le32(p), b = envelope_le32(p + 4);
        c = t[7][a & 0xffu] ^ t[6][(a >> 8) & 0xffu] ^ t[5][(a >> 16) & 0xffu] ^ t[4][a >> 24] ^
            t[3][b & 0xffu] ^ t[2][(b >> 8) & 0xffu] ^ t[1][(b >> 16) & 0xffu] ^ t[0][b >> 24];
    }
    for (; len > 0; p++, len--)
        c = t[0][(c ^ *p) & 0xffu] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---- validation shared by encode and decode ---- */

static int
envelope_str_ok(const char *s, size_t len, size_t max, int nonempty)
{
    if (len > max || (nonempty && len == 0))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static int
envelope_notify_ok(unsigned n)
{
    if (n & ~0xfu)
        return 0;
    return !((n & ENVELOPE_NOTIFY_NEVER) && n != ENVELOPE_NOTIFY_NEVER);
}

/* ---- encoding ---- */

struct envelope_wr {
    unsigned char *p;
    size_t cap, len;
};

static void
wr_bytes(struct envelope_wr *w, const void *b, size_t n)
{
    if (n > 0 && w->p != NULL && w->len + n <= w->cap)
        memcpy(w->p + w->len, b, n);
    w->len += n;
}

static void
wr_u8(struct envelope_wr *w, unsigned v)
{
    unsigned char b = (unsigned char)v;
    wr_bytes(w, &b, 1);
}

static void
wr_uint(struct envelope_wr *w, uint64_t v, int n)
{
    unsigned char b[8];
    for (int i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    wr_bytes(w, b, (size_t)n);
}

static void
wr_str(struct envelope_wr *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    wr_uint(w, n, 2);
    wr_bytes(w, s, n);
}

static size_t
slen(const char *s)
{
    return s ? strlen(s) : 0;
}

static int
envelope_check(const struct envelope *e)
{
    const char *strs[] = {e->sender, e->client_addr, e->client_name,
                          e->helo,   e->tls_cipher,  e->envid};

    if (!qid_valid(e->qid) || e->arrival_sec < 0 || e->arrival_usec > 999999 ||
        e->first_failure < 0 || e->next_attempt < 0 || (unsigned)e->proto > 2 ||
        (unsigned)e->ret > 2 || (e->flags & ~ENVELOPE_F_ALL_) || e->nrcpt == 0 ||
        e->nrcpt > ENVELOPE_MAX_RCPTS || e->rcpts == NULL)
        return MX2_E_INVAL;
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (!envelope_str_ok(strs[i], slen(strs[i]), ENVELOPE_MAX_STR, 0))
            return MX2_E_INVAL;
    for (size_t i = 0; i < e->nrcpt; i++) {
        const struct envelope_rcpt *r = &e->rcpts[i];
        if (!envelope_str_ok(r->address, slen(r->address), ENVELOPE_MAX_STR, 1) ||
            !envelope_str_ok(r->orcpt, slen(r->orcpt), ENVELOPE_MAX_STR, 0) ||
            !envelope_str_ok(r->last_error, slen(r->last_error), ENVELOPE_MAX_ERROR, 0) ||
            !envelope_notify_ok(r->notify) || (unsigned)r->state > 3 ||
            (r->flags & ~ENVELOPE_RF_DSN_SENT) || r->last_attempt < 0)
            return MX2_E_INVAL;
    }
    return 0;
}

static void
envelope_write(const struct envelope *e, struct envelope_wr *w)
{
    wr_bytes(w, envelope_magic, sizeof(envelope_magic));
    wr_u8(w, ENVELOPE_VERSION);
    wr_bytes(w, e->qid, QID_LEN);
    wr_uint(w, (uint64_t)e->arrival_sec, 8);
    wr_uint(w, e->arrival_usec, 4);
    wr_uint(w, e->size, 8);
    wr_u8(w, (unsigned)e->proto);
    wr_uint(w, e->flags, 4);
    wr_u8(w, (unsigned)e->ret);
    wr_uint(w, e->attempts, 4);
    wr_uint(w, (uint64_t)e->first_failure, 8);
    wr_uint(w, (uint64_t)e->next_attempt, 8);
    wr_str(w, e->sender);
    wr_str(w, e->client_addr);
    wr_str(w, e->client_name);
    wr_str(w, e->helo);
    wr_str(w, e->tls_cipher);
    wr_str(w, e->envid);
    wr_uint(w, e->nrcpt, 4);
    for (size_t i = 0; i < e->nrcpt; i++) {
        const struct envelope_rcpt *r = &e->rcpts[i];
        wr_str(w, r->address);
        wr_str(w, r->orcpt);
        wr_u8(w, r->notify);
        wr_u8(w, (unsigned)r->state);
        wr_u8(w, r->flags);
        wr_uint(w, r->attempts, 4);
        wr_uint(w, (uint64_t)r->last_attempt, 8);
        wr_str(w, r->last_error);
    }
}

size_t
envelope_encoded_size(const struct envelope *env)
{
    struct envelope_wr w = {NULL, 0, 0};

    if (env == NULL || envelope_check(env) != 0)
        return 0;
    envelope_write(env, &w);
    return w.len + 4;
}

int
envelope_encode_to(const struct envelope *env, unsigned char *buf, size_t cap, size_t *outlen)
{
    struct envelope_wr w = {buf, cap, 0};
    size_t need = envelope_encoded_size(env);

    if (need == 0 || cap < need || buf == NULL)
        return MX2_E_INVAL;
    envelope_write(env, &w);
    wr_uint(&w, envelope_crc32(buf, w.len), 4);
    *outlen = w.len;
    return 0;
}

int
envelope_encode(const struct envelope *env, unsigned char **out, size_t *outlen)
{
    size_t need = envelope_encoded_size(env);
    unsigned char *buf;
    int rc;

    if (need == 0)
        return MX2_E_INVAL;
    buf = xmalloc(need);
    rc = envelope_encode_to(env, buf, need, outlen);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

/* ---- decoding ---- */

struct envelope_rd {
    const unsigned char *p;
    size_t len, off;
    int bad;
};

static const unsigned char *
rd_take(struct envelope_rd *r, size_t n)
{
    const unsigned char *q;

    if (r->bad || n > r->len - r->off) {
        r->bad = 1;
        return NULL;
    }
    q = r->p + r->off;
    r->off += n;
    return q;
}

static uint64_t
rd_uint(struct envelope_rd *r, int n)
{
    const unsigned char *q = rd_take(r, (size_t)n);
    uint64_t v = 0;

    if (q == NULL)
        return 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | q[i];
    return v;
}

static int64_t
rd_time(struct envelope_rd *r)
{
    uint64_t v = rd_uint(r, 8);

    if (v > (uint64_t)INT64_MAX) {
        r->bad = 1;
        return 0;
    }
    return (int64_t)v;
}

/* A string of at most max bytes, checked, copied and NUL-terminated. Always
 * returns an allocated string (empty on failure) so the struct stays freeable. */
static char *
rd_str(struct envelope_rd *r, size_t max, int nonempty)
{
    size_t n = (size_t)rd_uint(r, 2);
    const unsigned char *q;
    char *s;

    if (!r->bad && n > max)
        r->bad = 1;
    q = rd_take(r, n);
    if (q == NULL || !envelope_str_ok((const char *)q, n, max, nonempty)) {
        r->bad = 1;
        return xstrdup("");
    }
    s = xmalloc(n + 1);
    memcpy(s, q, n);
    s[n] = '\0';
    return s;
}

int
envelope_decode(const void *data, size_t len, struct envelope *out)
{
    struct envelope_rd r = {data, 0, 0, 0};
    struct envelope *e = out;
    const unsigned char *q;
    uint64_t n;

    memset(out, 0, sizeof(*out));
    /* The CRC covers everything before it: check it first, so the field
     * checks below only ever see bytes the encoder wrote (or a collision). */
    if (data == NULL || len < sizeof(envelope_magic) + 1 + 4)
        return MX2_E_CORRUPT;
    {
        const unsigned char *t = (const unsigned char *)data + len - 4;
        uint32_t want = (uint32_t)t[0] << 24 | (uint32_t)t[1] << 16 | (uint32_t)t[2] << 8 | t[3];
        if (envelope_crc32(data, len - 4) != want)
            return MX2_E_CORRUPT;
    }
    r.len = len - 4;

    q = rd_take(&r, sizeof(envelope_magic));
    if (q == NULL || memcmp(q, envelope_magic, sizeof(envelope_magic)) != 0)
        return MX2_E_CORRUPT;
    if (rd_uint(&r, 1) != ENVELOPE_VERSION)
        return MX2_E_CORRUPT;
    q = rd_take(&r, QID_LEN);
    if (q == NULL || qid_parse((const char *)q, QID_LEN, NULL) != 0)
        return MX2_E_CORRUPT;
    memcpy(e->qid, q, QID_LEN);
    e->qid[QID_LEN] = '\0';
    e->arrival_sec = rd_time(&r);
    e->arrival_usec = (uint32_t)rd_uint(&r, 4);
    e->size = rd_uint(&r, 8);
    e->proto = (enum envelope_proto)rd_uint(&r, 1);
    e->flags = (unsigned)rd_uint(&r, 4);
    e->ret = (enum envelope_ret)rd_uint(&r, 1);
    e->attempts = (uint32_t)rd_uint(&r, 4);
    e->first_failure = rd_time(&r);
    e->next_attempt = rd_time(&r);
    if (r.bad || e->arrival_usec > 999999 || (unsigned)e->proto > 2 || (unsigned)e->ret > 2 ||
        (e->flags & ~ENVELOPE_F_ALL_))
        goto corrupt;
    e->sender = rd_str(&r, ENVELOPE_MAX_STR, 0);
    e->client_addr = rd_str(&r, ENVELOPE_MAX_STR, 0);
    e->client_name = rd_str(&r, ENVELOPE_MAX_STR, 0);
    e->helo = rd_str(&r, ENVELOPE_MAX_STR, 0);
    e->tls_cipher = rd_str(&r, ENVELOPE_MAX_STR, 0);
    e->envid = rd_str(&r, ENVELOPE_MAX_STR, 0);
    n = rd_uint(&r, 4);
    /* Never allocate for recipients the remaining bytes cannot hold. */
    if (r.bad || n == 0 || n > ENVELOPE_MAX_RCPTS || n * ENVELOPE_RCPT_MIN > r.len - r.off)
        goto corrupt;
    e->rcpts = xcalloc((size_t)n, sizeof(*e->rcpts));
    e->nrcpt = (size_t)n;
    for (size_t i = 0; i < e->nrcpt; i++) {
        struct envelope_rcpt *rc = &e->rcpts[i];
        rc->address = rd_str(&r, ENVELOPE_MAX_STR, 1);
        rc->orcpt = rd_str(&r, ENVELOPE_MAX_STR, 0);
        rc->notify = (unsigned)rd_uint(&r, 1);
        rc->state = (enum envelope_rcpt_state)rd_uint(&r, 1);
        rc->flags = (unsigned)rd_uint(&r, 1);
        rc->attempts = (uint32_t)rd_uint(&r, 4);
        rc->last_attempt = rd_time(&r);
        rc->last_error = rd_str(&r, ENVELOPE_MAX_ERROR, 0);
        if (r.bad || !envelope_notify_ok(rc->notify) || (unsigned)rc->state > 3 ||
            (rc->flags & ~ENVELOPE_RF_DSN_SENT)) {
            /* Strings of the recipients after i are still NULL: free copes. */
            goto corrupt;
        }
    }
    if (r.off != r.len) /* trailing garbage before the CRC */
        goto corrupt;
    return 0;

corrupt:
    envelope_free(e);
    return MX2_E_CORRUPT;
}

/* ---- ownership helpers ---- */

static char *
dup_or_empty(const char *s)
{
    return xstrdup(s ? s : "");
}

int
envelope_dup(const struct envelope *src, struct envelope *dst)
{
    *dst = *src;
    dst->sender = dup_or_empty(src->sender);
    dst->client_addr = dup_or_empty(src->client_addr);
    dst->client_name = dup_or_empty(src->client_name);
    dst->helo = dup_or_empty(src->helo);
    dst->tls_cipher = dup_or_empty(src->tls_cipher);
    dst->envid = dup_or_empty(src->envid);
    dst->rcpts = NULL;
    if (src->nrcpt > 0 && src->rcpts != NULL) {
        dst->rcpts = xcalloc(src->nrcpt, sizeof(*dst->rcpts));
        for (size_t i = 0; i < src->nrcpt; i++) {
            dst->rcpts[i] = src->rcpts[i];
            dst->rcpts[i].address = dup_or_empty(src->rcpts[i].address);
            dst->rcpts[i].orcpt = dup_or_empty(src->rcpts[i].orcpt);
            dst->rcpts[i].last_error = dup_or_empty(src->rcpts[i].last_error);
        }
    } else {
        dst->nrcpt = 0;
    }
    return 0;
}

void
envelope_free(struct envelope *env)
{
    if (env == NULL)
        return;
    free(env->sender);
    free(env->client_addr);
    free(env->client_name);
    free(env->helo);
    free(env->tls_cipher);
    free(env->envid);
    if (env->rcpts != NULL) {
        for (size_t i = 0; i < env->nrcpt; i++) {
            free(env->rcpts[i].address);
            free(env->rcpts[i].orcpt);
            free(env->rcpts[i].last_error);
        }
        free(env->rcpts);
    }
    memset(env, 0, sizeof(*env));
}

void
envelope_set_error(struct envelope_rcpt *r, const char *text, size_t len)
{
    char *s;

    if (text == NULL)
        len = 0;
    if (len > ENVELOPE_MAX_ERROR) {
        len = ENVELOPE_MAX_ERROR;
        /* Do not cut a UTF-8 sequence in half: back up over continuation
         * bytes (10xxxxxx) and the lead byte they belong to. */
        size_t k = len;
        while (k > 0 && ((unsigned char)text[k] & 0xc0) == 0x80)
            k--;
        len = k;
    }
    s = xmalloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        s[i] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    s[len] = '\0';
    free(r->last_error);
    r->last_error = s;
}

/* ---- names and counts ---- */

const char *
envelope_rcpt_state_name(enum envelope_rcpt_state s)
{
    switch (s) {
    case ENVELOPE_RCPT_PENDING:
        return "pending";
    case ENVELOPE_RCPT_DONE:
        return "done";
    case ENVELOPE_RCPT_BOUNCED:
        return "bounced";
    case ENVELOPE_RCPT_DEFERRED:
        return "deferred";
    }
    return "unknown";
}

const char *
envelope_proto_name(enum envelope_proto p)
{
    switch (p) {
    case ENVELOPE_PROTO_SMTP:
        return "SMTP";
    case ENVELOPE_PROTO_ESMTP:
        return "ESMTP";
    case ENVELOPE_PROTO_ESMTPS:
        return "ESMTPS";
    }
    return "unknown";
}

const char *
envelope_ret_name(enum envelope_ret r)
{
    switch (r) {
    case ENVELOPE_RET_NONE:
        return "";
    case ENVELOPE_RET_FULL:
        return "FULL";
    case ENVELOPE_RET_HDRS:
        return "HDRS";
    }
    return "unknown";
}

size_t
envelope_pending_count(const struct envelope *env)
{
    size_t n = 0;

    for (size_t i = 0; i < env->nrcpt; i++)
        if (env->rcpts[i].state == ENVELOPE_RCPT_PENDING ||
            env->rcpts[i].state == ENVELOPE_RCPT_DEFERRED)
            n++;
    return n;
}
