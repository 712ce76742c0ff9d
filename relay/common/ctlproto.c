/*
 * ctlproto.c - the control-socket line protocol (see ctlproto.h).
 *
 * The parser treats every request as hostile: the socket is mode 0660, but a
 * member of the daemon's group, a confused script or a fuzzer may write
 * anything. So it looks only at bounded, NUL-free printable ASCII, never
 * copies more than a fixed-size struct holds, and refuses instead of
 * guessing (an unknown word is an error, not ignored), so a typo never
 * turns `DELETE ALL` into something else.
 */
#include "ctlproto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "err.h"

static const char *const ctlproto_names[CTLPROTO_CMD_COUNT_] = {
    [CTLPROTO_PING] = "PING", [CTLPROTO_FLUSH] = "FLUSH",     [CTLPROTO_DELETE] = "DELETE",
    [CTLPROTO_HOLD] = "HOLD", [CTLPROTO_RELEASE] = "RELEASE", [CTLPROTO_STATS] = "STATS",
};

const char *
ctlproto_cmd_name(enum ctlproto_cmd cmd)
{
    if ((unsigned)cmd >= CTLPROTO_CMD_COUNT_)
        return "?";
    return ctlproto_names[cmd];
}

/* queue/qid.h: 13 characters of "0-9A-V", the value below 2^62, so the
 * first character (the top 5 of 65 bits) is at most 3. */
static int
ctlproto_id_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'V');
}

int
ctlproto_id_valid(const char *s, size_t len)
{
    if (len != CTLPROTO_ID_LEN || s[0] < '0' || s[0] > '3')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!ctlproto_id_char(s[i]))
            return 0;
    return 1;
}

int
ctlproto_next_line(const char *buf, size_t len, size_t *linelen, size_t *consumed)
{
    size_t scan = len < CTLPROTO_LINE_MAX ? len : CTLPROTO_LINE_MAX;
    const char *lf;

    if (len == 0)
        return 0; /* an empty buffer may be NULL: no memchr on it */
    lf = memchr(buf, '\n', scan);

    if (lf == NULL)
        return len >= CTLPROTO_LINE_MAX ? MX2_E_LINE_TOO_LONG : 0;
    *consumed = (size_t)(lf - buf) + 1;
    *linelen = (size_t)(lf - buf);
    if (*linelen > 0 && buf[*linelen - 1] == '\r')
        (*linelen)--;
    return 1;
}

static int
ctlproto_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Next word of line[*pos..len): sets (*w, *wlen), advances *pos. 0 at end. */
static int
ctlproto_word(const char *line, size_t len, size_t *pos, const char **w, size_t *wlen)
{
    size_t i = *pos;

    while (i < len && ctlproto_blank(line[i]))
        i++;
    if (i == len) {
        *pos = i;
        return 0;
    }
    *w = line + i;
    while (i < len && !ctlproto_blank(line[i]))
        i++;
    *wlen = (size_t)(line + i - *w);
    *pos = i;
    return 1;
}

static int
ctlproto_word_is(const char *w, size_t wlen, const char *lit)
{
    return strlen(lit) == wlen && strncasecmp(w, lit, wlen) == 0;
}

#define CTLPROTO_FAIL(code, text)                                                                  \
    do {                                                                                           \
        if (why != NULL)                                                                           \
            *why = (text);                                                                         \
        return (code);                                                                             \
    } while (0)

int
ctlproto_parse_request(const char *line, size_t len, struct ctlproto_req *req, const char **why)
{
    const char *w = NULL;
    size_t wlen = 0, pos = 0;
    int cmd = -1;

    req->cmd = CTLPROTO_PING;
    req->flags = 0;
    req->nids = 0;
    if (len >= CTLPROTO_LINE_MAX)
        CTLPROTO_FAIL(MX2_E_LINE_TOO_LONG, "request line too long");
    if (len > 0 && line[len - 1] == '\r')
        len--;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (!(c == '\t' || (c >= 0x20 && c < 0x7f)))
            CTLPROTO_FAIL(MX2_E_SYNTAX, "bad byte in request");
    }
    if (!ctlproto_word(line, len, &pos, &w, &wlen))
        CTLPROTO_FAIL(MX2_E_SYNTAX, "empty request");
    for (int i = 0; i < CTLPROTO_CMD_COUNT_; i++)
        if (ctlproto_word_is(w, wlen, ctlproto_names[i]))
            cmd = i;
    if (cmd < 0)
        CTLPROTO_FAIL(MX2_E_SYNTAX, "unknown command");
    req->cmd = (enum ctlproto_cmd)cmd;

    switch (req->cmd) {
    case CTLPROTO_PING:
    case CTLPROTO_STATS:
        break;
    case CTLPROTO_FLUSH:
        if (ctlproto_word(line, len, &pos, &w, &wlen)) {
            if (!ctlproto_word_is(w, wlen, "WAIT"))
                CTLPROTO_FAIL(MX2_E_SYNTAX, "FLUSH takes only WAIT");
            req->flags |= CTLPROTO_F_WAIT;
        }
        break;
    case CTLPROTO_DELETE:
    case CTLPROTO_HOLD:
    case CTLPROTO_RELEASE:
        while (ctlproto_word(line, len, &pos, &w, &wlen)) {
            char *id;
            if (req->cmd == CTLPROTO_DELETE && req->nids == 0 && !(req->flags & CTLPROTO_F_ALL) &&
                ctlproto_word_is(w, wlen, "ALL")) {
                req->flags |= CTLPROTO_F_ALL;
                continue;
            }
            if (req->flags & CTLPROTO_F_ALL)
                CTLPROTO_FAIL(MX2_E_SYNTAX, "DELETE ALL takes no IDs");
            if (req->nids == CTLPROTO_MAX_IDS)
                CTLPROTO_FAIL(MX2_E_INVAL, "too many IDs in one request");
            if (wlen != CTLPROTO_ID_LEN)
                CTLPROTO_FAIL(MX2_E_INVAL, "malformed queue ID");
            id = req->ids[req->nids];
            for (size_t i = 0; i < wlen; i++) {
                char c = w[i];
                id[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
            }
            id[wlen] = '\0';
            if (!ctlproto_id_valid(id, wlen))
                CTLPROTO_FAIL(MX2_E_INVAL, "malformed queue ID");
            req->nids++;
        }
        if (req->nids == 0 && !(req->flags & CTLPROTO_F_ALL))
            CTLPROTO_FAIL(MX2_E_INVAL, "missing queue ID");
        return 0;
    default:
        break;
    }
    if (ctlproto_word(line, len, &pos, &w, &wlen))
        CTLPROTO_FAIL(MX2_E_SYNTAX, "unexpected argument");
    return 0;
}

int
ctlproto_format_request(enum ctlproto_cmd cmd, unsigned flags, const char *const *ids, size_t nids,
                        char *buf, size_t size)
{
    size_t used;
    int n;

    if ((unsigned)cmd >= CTLPROTO_CMD_COUNT_ || size == 0)
        return MX2_E_INVAL;
    n = snprintf(buf, size, "%s", ctlproto_names[cmd]);
    if (n < 0 || (size_t)n >= size)
        return MX2_E_LINE_TOO_LONG;
    used = (size_t)n;
    if (cmd == CTLPROTO_FLUSH && (flags & CTLPROTO_F_WAIT))
        used += (size_t)snprintf(buf + used, size - used, " WAIT");
    if (cmd == CTLPROTO_DELETE && (flags & CTLPROTO_F_ALL)) {
        if (nids != 0)
            return MX2_E_INVAL;
        used += (size_t)snprintf(buf + used, size - used, " ALL");
    } else if (cmd == CTLPROTO_DELETE || cmd == CTLPROTO_HOLD || cmd == CTLPROTO_RELEASE) {
        if (nids == 0 || nids > CTLPROTO_MAX_IDS)
            return MX2_E_INVAL;
        for (size_t i = 0; i < nids; i++) {
            if (ids[i] == NULL || !ctlproto_id_valid(ids[i], strlen(ids[i])))
                return MX2_E_INVAL;
            if (used + 1 + CTLPROTO_ID_LEN + 2 > size)
                return MX2_E_LINE_TOO_LONG;
            buf[used++] = ' ';
            memcpy(buf + used, ids[i], CTLPROTO_ID_LEN);
            used += CTLPROTO_ID_LEN;
        }
    } else if (nids != 0) {
        return MX2_E_INVAL;
    }
    if (used + 2 > size || used + 1 > CTLPROTO_LINE_MAX)
        return MX2_E_LINE_TOO_LONG;
    buf[used++] = '\n';
    buf[used] = '\0';
    return (int)used;
}

/* "<prefix>[ text]\n": text sanitised to printable ASCII and cut to fit. */
static int
ctlproto_format_line(char *buf, size_t size, const char *prefix, const char *text)
{
    size_t used, cap;
    int n;

    if (size < 64)
        return MX2_E_LINE_TOO_LONG;
    cap = size < CTLPROTO_LINE_MAX ? size : CTLPROTO_LINE_MAX;
    n = snprintf(buf, cap, "%s", prefix);
    used = (size_t)n;
    if (text != NULL && text[0] != '\0') {
        buf[used++] = ' ';
        for (const char *p = text; *p != '\0' && used + 2 < cap; p++) {
            unsigned char c = (unsigned char)*p;
            buf[used++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        }
    }
    buf[used++] = '\n';
    buf[used] = '\0';
    return (int)used;
}

int
ctlproto_format_ok(char *buf, size_t size, const char *text)
{
    return ctlproto_format_line(buf, size, "OK", text);
}

int
ctlproto_format_err(char *buf, size_t size, int code, const char *text)
{
    char prefix[16];

    if (code < 100 || code > 599)
        code = CTLPROTO_ERR_INTERNAL;
    snprintf(prefix, sizeof(prefix), "ERR %d", code);
    return ctlproto_format_line(buf, size, prefix, text);
}

int
ctlproto_format_stat(char *buf, size_t size, const char *name, uint64_t value)
{
    int n;

    if (size < 64)
        return MX2_E_LINE_TOO_LONG;
    n = snprintf(buf, size, "STAT %s %llu\n", name, (unsigned long long)value);
    if (n < 0 || (size_t)n >= size)
        return MX2_E_LINE_TOO_LONG;
    return n;
}

int
ctlproto_parse_response(const char *line, size_t len, struct ctlproto_resp *resp)
{
    memset(resp, 0, sizeof(*resp));
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len >= CTLPROTO_LINE_MAX)
        return MX2_E_SYNTAX;
    if (len == 1 && line[0] == '.') {
        resp->kind = CTLPROTO_R_END;
        return 0;
    }
    if (len >= 2 && memcmp(line, "OK", 2) == 0 && (len == 2 || line[2] == ' ')) {
        resp->kind = CTLPROTO_R_OK;
        resp->text = line + (len > 2 ? 3 : 2);
        resp->text_len = len > 2 ? len - 3 : 0;
        return 0;
    }
    if (len >= 7 && memcmp(line, "ERR ", 4) == 0) {
        const char *c = line + 4;
        if (c[0] < '1' || c[0] > '5' || c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9')
            return MX2_E_SYNTAX;
        if (len > 7 && line[7] != ' ')
            return MX2_E_SYNTAX;
        resp->kind = CTLPROTO_R_ERR;
        resp->code = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
        resp->text = line + (len > 7 ? 8 : 7);
        resp->text_len = len > 7 ? len - 8 : 0;
        return 0;
    }
    if (len >= 5 && memcmp(line, "STAT ", 5) == 0) {
        size_t i = 5, start = 5;
        uint64_t v = 0;
        while (i < len && ((line[i] >= 'a' && line[i] <= 'z') || line[i] == '_' || line[i] == '.'))
            i++;
        if (i == start || i >= len || line[i] != ' ' || i + 1 >= len)
            return MX2_E_SYNTAX;
        resp->text = line + start;
        resp->text_len = i - start;
        for (i++; i < len; i++) {
            if (line[i] < '0' || line[i] > '9')
                return MX2_E_SYNTAX;
            if (v > (UINT64_MAX - (uint64_t)(line[i] - '0')) / 10)
                return MX2_E_SYNTAX;
            v = v * 10 + (uint64_t)(line[i] - '0');
        }
        resp->kind = CTLPROTO_R_STAT;
        resp->value = v;
        return 0;
    }
    return MX2_E_SYNTAX;
}

/* Parse an address to 16 bytes, IPv4 as ::ffff:a.b.c.d, so "192.0.2.1" and
 * "::ffff:192.0.2.1" (how a client of a [::] listener appears) compare
 * equal, and "2001:DB8::1" equals "2001:db8:0::1". */
static int
ctlproto_ip_bytes(const char *ip, unsigned char out[16])
{
    unsigned char v4[4];

    if (inet_pton(AF_INET, ip, v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, v4, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, out) == 1)
        return 0;
    return -1;
}

int
ctlproto_ip_listed(const char *ip, char *const *list, size_t n)
{
    unsigned char a[16], b[16];

    if (ip == NULL || ctlproto_ip_bytes(ip, a) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (list[i] != NULL && ctlproto_ip_bytes(list[i], b) == 0 && memcmp(a, b, 16) == 0)
            return 1;
    return 0;
}
