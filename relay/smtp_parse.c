/*
 * smtp_parse.c - SMTP command and reply lines (see smtp_parse.h).
 *
 * Commands follow RFC 5321 4.1 with the ESMTP parameters of RFC 1870 (SIZE),
 * RFC 6152 (BODY=8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (RET, ENVID,
 * NOTIFY, ORCPT) and RFC 4954 (AUTH=, accepted and ignored since mx2 offers
 * no AUTH but a relaying MTA may still send it).
 *
 * Strictness: the verb is case-insensitive and must be followed by one space
 * or the end of the line; trailing blanks are dropped (harmless, and several
 * real clients send them). "MAIL FROM: <a@b>" / "RCPT TO: <a@b>" with blanks
 * after the colon are accepted because Outlook and many scripts send them;
 * the path itself must be in angle brackets (RFC 5321 4.1.2), so there is
 * never a doubt where the address ends and the parameters begin.
 */
#include "smtp_parse.h"

#include <string.h>
#include <strings.h>

#include "err.h"

static const char *const verb_names[SMTP_V_COUNT_] = {
    [SMTP_V_UNKNOWN] = "UNKNOWN", [SMTP_V_EHLO] = "EHLO",         [SMTP_V_HELO] = "HELO",
    [SMTP_V_MAIL] = "MAIL",       [SMTP_V_RCPT] = "RCPT",         [SMTP_V_DATA] = "DATA",
    [SMTP_V_RSET] = "RSET",       [SMTP_V_NOOP] = "NOOP",         [SMTP_V_QUIT] = "QUIT",
    [SMTP_V_VRFY] = "VRFY",       [SMTP_V_EXPN] = "EXPN",         [SMTP_V_HELP] = "HELP",
    [SMTP_V_STARTTLS] = "STARTTLS", [SMTP_V_ETRN] = "ETRN",       [SMTP_V_BDAT] = "BDAT",
    [SMTP_V_AUTH] = "AUTH",
};

const char *
smtp_verb_name(enum smtp_verb v)
{
    if ((int)v < 0 || v >= SMTP_V_COUNT_)
        return "UNKNOWN";
    return verb_names[v];
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static int
is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Case-insensitive equality of (p, n) with a NUL-terminated keyword. */
static int
eqi(const char *p, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(p, kw, n) == 0;
}

/* --- xtext -------------------------------------------------------------- */

int
smtp_xtext_decode(const char *in, size_t inlen, char *out, size_t outsize, size_t *outlen)
{
    size_t n = 0;

    if (outsize == 0)
        return MX2_E_INVAL;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            int hi, lo;
            if (i + 2 >= inlen)
                goto bad;
            hi = hexval((unsigned char)in[i + 1]);
            lo = hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                goto bad;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            /* RFC 3461 4.2, 4.4: the decoded value is printable US-ASCII.
             * Refusing NUL, CR, LF and 8-bit here keeps ENVID/ORCPT safe to
             * write into envelope files and DSN headers verbatim. */
            if (c < 0x20 || c > 0x7e)
                goto bad;
        } else if (c < '!' || c > '~' || c == '=') {
            goto bad;
        }
        if (n + 1 >= outsize)
            goto bad;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    if (outlen != NULL)
        *outlen = n;
    return 0;
bad:
    out[0] = '\0';
    if (outlen != NULL)
        *outlen = 0;
    return MX2_E_INVAL;
}

int
smtp_xtext_encode(const char *in, size_t inlen, char *out, size_t outsize, size_t *outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    if (outsize == 0)
        return MX2_E_INVAL;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= '!' && c <= '~' && c != '+' && c != '=') {
            if (n + 1 >= outsize)
                goto small;
            out[n++] = (char)c;
        } else {
            if (n + 3 >= outsize)
                goto small;
            out[n++] = '+';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
    if (outlen != NULL)
        *outlen = n;
    return 0;
small:
    out[0] = '\0';
    if (outlen != NULL)
        *outlen = 0;
    return MX2_E_INVAL;
}

/* --- commands ----------------------------------------------------------- */

/* Bits for duplicate detection. */
enum {
    P_SIZE = 1u << 0,
    P_BODY = 1u << 1,
    P_SMTPUTF8 = 1u << 2,
    P_RET = 1u << 3,
    P_ENVID = 1u << 4,
    P_AUTH = 1u << 5,
    P_NOTIFY = 1u << 6,
    P_ORCPT = 1u << 7,
};

static int
parse_size(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;

    if (n == 0 || n > 20)
        return MX2_E_INVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned d;
        if (v[i] < '0' || v[i] > '9')
            return MX2_E_INVAL;
        d = (unsigned)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return MX2_E_INVAL;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

/* NOTIFY=NEVER / NOTIFY=SUCCESS,FAILURE,DELAY (RFC 3461 4.1: NEVER must
 * stand alone; each keyword at most once). */
static int
parse_notify(const char *v, size_t n, unsigned *out)
{
    unsigned mask = 0;
    size_t i = 0;

    while (i <= n) {
        size_t j = i;
        unsigned bit;
        while (j < n && v[j] != ',')
            j++;
        if (eqi(v + i, j - i, "NEVER"))
            bit = SMTP_NOTIFY_NEVER;
        else if (eqi(v + i, j - i, "SUCCESS"))
            bit = SMTP_NOTIFY_SUCCESS;
        else if (eqi(v + i, j - i, "FAILURE"))
            bit = SMTP_NOTIFY_FAILURE;
        else if (eqi(v + i, j - i, "DELAY"))
            bit = SMTP_NOTIFY_DELAY;
        else
            return MX2_E_INVAL;
        if (mask & bit)
            return MX2_E_INVAL;
        mask |= bit;
        i = j + 1;
    }
    if ((mask & SMTP_NOTIFY_NEVER) && mask != SMTP_NOTIFY_NEVER)
        return MX2_E_INVAL;
    *out = mask;
    return 0;
}

/* One "KEYWORD[=value]" of MAIL or RCPT. */
static int
apply_param(enum smtp_verb verb, const char *kw, size_t kwlen, const char *val, size_t vlen,
            int has_val, unsigned *seen, struct smtp_cmd *out)
{
    unsigned bit;

    if (verb == SMTP_V_MAIL) {
        if (eqi(kw, kwlen, "SIZE"))
            bit = P_SIZE;
        else if (eqi(kw, kwlen, "BODY"))
            bit = P_BODY;
        else if (eqi(kw, kwlen, "SMTPUTF8"))
            bit = P_SMTPUTF8;
        else if (eqi(kw, kwlen, "RET"))
            bit = P_RET;
        else if (eqi(kw, kwlen, "ENVID"))
            bit = P_ENVID;
        else if (eqi(kw, kwlen, "AUTH"))
            bit = P_AUTH;
        else
            return MX2_E_BAD_PARAM;
    } else {
        if (eqi(kw, kwlen, "NOTIFY"))
            bit = P_NOTIFY;
        else if (eqi(kw, kwlen, "ORCPT"))
            bit = P_ORCPT;
        else
            return MX2_E_BAD_PARAM;
    }
    /* A repeated parameter is ambiguous (which SIZE counts?): refuse. */
    if (*seen & bit)
        return MX2_E_INVAL;
    *seen |= bit;
    if (bit == P_SMTPUTF8) {
        if (has_val)
            return MX2_E_INVAL;
        out->smtputf8 = true;
        return 0;
    }
    if (!has_val || vlen == 0)
        return MX2_E_INVAL;
    switch (bit) {
    case P_SIZE:
        out->has_size = true;
        return parse_size(val, vlen, &out->size);
    case P_BODY:
        if (eqi(val, vlen, "7BIT"))
            out->body = SMTP_BODY_7BIT;
        else if (eqi(val, vlen, "8BITMIME"))
            out->body = SMTP_BODY_8BITMIME;
        else
            return MX2_E_INVAL; /* BINARYMIME needs CHUNKING, which mx2 does not offer */
        return 0;
    case P_RET:
        if (eqi(val, vlen, "FULL"))
            out->ret = SMTP_RET_FULL;
        else if (eqi(val, vlen, "HDRS"))
            out->ret = SMTP_RET_HDRS;
        else
            return MX2_E_INVAL;
        return 0;
    case P_ENVID:
        if (vlen > SMTP_ENVID_MAX ||
            smtp_xtext_decode(val, vlen, out->envid, sizeof(out->envid), &out->envid_len) != 0)
            return MX2_E_INVAL;
        out->has_envid = true;
        return 0;
    case P_AUTH:
        /* RFC 4954 5: AUTH=<> or an xtext mailbox. mx2 authenticates no one
         * and so trusts no AUTH= identity; the value is only checked. */
        {
            char tmp[ADDR_TEXT_MAX];
            if (!(vlen == 2 && val[0] == '<' && val[1] == '>') &&
                smtp_xtext_decode(val, vlen, tmp, sizeof(tmp), NULL) != 0)
                return MX2_E_INVAL;
        }
        out->has_auth = true;
        return 0;
    case P_NOTIFY:
        return parse_notify(val, vlen, &out->notify);
    case P_ORCPT: {
        /* ORCPT=addr-type;xtext; only "rfc822" is defined for SMTP mail
         * (RFC 3461 4.2). */
        const char *semi = memchr(val, ';', vlen);
        size_t tl;
        if (vlen > SMTP_ORCPT_MAX || semi == NULL)
            return MX2_E_INVAL;
        tl = (size_t)(semi - val);
        if (!eqi(val, tl, "rfc822") || tl + 1 >= vlen)
            return MX2_E_INVAL;
        if (smtp_xtext_decode(semi + 1, vlen - tl - 1, out->orcpt, sizeof(out->orcpt),
                              &out->orcpt_len) != 0)
            return MX2_E_INVAL;
        out->has_orcpt = true;
        return 0;
    }
    default:
        return MX2_E_INTERNAL;
    }
}

/* esmtp-param *(SP esmtp-param), RFC 5321 4.1.2:
 *   esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
 *   esmtp-value   = 1*(%d33-60 / %d62-126)
 * Several spaces between parameters are tolerated. The first error wins,
 * but the whole list is still read so SMTPUTF8 is known for the path. */
static int
parse_params(enum smtp_verb verb, const char *p, size_t n, struct smtp_cmd *out)
{
    unsigned seen = 0;
    size_t i = 0;
    int first_err = 0;

    while (i < n) {
        size_t ks, ke, vs = 0, ve = 0;
        int has_val = 0, rc = 0;

        while (i < n && p[i] == ' ')
            i++;
        if (i >= n)
            break;
        ks = i;
        while (i < n && (is_alnum((unsigned char)p[i]) || (i > ks && p[i] == '-')))
            i++;
        ke = i;
        if (i < n && p[i] == '=') {
            has_val = 1;
            vs = ++i;
            while (i < n && (unsigned char)p[i] >= 33 && (unsigned char)p[i] <= 126 &&
                   p[i] != '=')
                i++;
            ve = i;
        }
        if (ke == ks || (i < n && p[i] != ' ')) {
            rc = MX2_E_INVAL;
            while (i < n && p[i] != ' ')
                i++;
        } else {
            rc = apply_param(verb, p + ks, ke - ks, p + vs, ve - vs, has_val, &seen, out);
        }
        if (rc != 0 && first_err == 0)
            first_err = rc;
    }
    return first_err;
}

/* "FROM:<path> params" / "TO:<path> params". */
static int
parse_mail_rcpt(const char *a, size_t n, unsigned flags, struct smtp_cmd *out)
{
    const char *kw = out->verb == SMTP_V_MAIL ? "FROM:" : "TO:";
    size_t kwl = strlen(kw), i, end;
    int bad_path = out->verb == SMTP_V_MAIL ? MX2_E_BAD_SENDER : MX2_E_BAD_ADDRESS;
    int rc_params = 0;
    unsigned aflags;

    if (n < kwl || strncasecmp(a, kw, kwl) != 0)
        return MX2_E_INVAL;
    i = kwl;
    while (i < n && a[i] == ' ')
        i++;
    if (i >= n)
        return MX2_E_INVAL;
    if (addr_path_end(a + i, n - i, &end) != 0)
        return bad_path;
    end += i;
    if (end < n) {
        if (a[end] != ' ')
            return bad_path; /* "<a@b>x" */
        rc_params = parse_params(out->verb, a + end, n - end, out);
    }
    if (out->verb == SMTP_V_MAIL) {
        aflags = ADDR_PARSE_NULL | (out->smtputf8 ? ADDR_PARSE_UTF8 : 0);
    } else {
        aflags = (flags & SMTP_PARSE_UTF8) ? ADDR_PARSE_UTF8 : 0;
    }
    /* The path is judged first: a bad address is the more useful reply. */
    if (addr_parse_path(a + i, end - i, aflags, &out->path) != 0)
        return bad_path;
    return rc_params;
}

struct verb_def {
    const char *name;
    enum smtp_verb verb;
    enum { ARG_NONE, ARG_OPT, ARG_REQ, ARG_PATH } arg;
};

static const struct verb_def verbs[] = {
    {"EHLO", SMTP_V_EHLO, ARG_REQ},     {"HELO", SMTP_V_HELO, ARG_REQ},
    {"MAIL", SMTP_V_MAIL, ARG_PATH},    {"RCPT", SMTP_V_RCPT, ARG_PATH},
    {"DATA", SMTP_V_DATA, ARG_NONE},    {"RSET", SMTP_V_RSET, ARG_NONE},
    {"NOOP", SMTP_V_NOOP, ARG_OPT},     {"QUIT", SMTP_V_QUIT, ARG_NONE},
    {"VRFY", SMTP_V_VRFY, ARG_REQ},     {"EXPN", SMTP_V_EXPN, ARG_REQ},
    {"HELP", SMTP_V_HELP, ARG_OPT},     {"STARTTLS", SMTP_V_STARTTLS, ARG_NONE},
    {"ETRN", SMTP_V_ETRN, ARG_REQ},     {"BDAT", SMTP_V_BDAT, ARG_OPT},
    {"AUTH", SMTP_V_AUTH, ARG_OPT},
};

int
smtp_parse_command(const char *line, size_t len, unsigned flags, struct smtp_cmd *out)
{
    const struct verb_def *def = NULL;
    size_t vl = 0, a;

    memset(out, 0, sizeof(*out));
    out->verb = SMTP_V_UNKNOWN;
    /* A NUL can never be part of a command (RFC 5321 4.1.1), and a C
     * consumer further down might stop at it: refuse the line. */
    if (memchr(line, '\0', len) != NULL)
        return MX2_E_SYNTAX;
    while (len > 0 && is_blank((unsigned char)line[len - 1]))
        len--;
    while (vl < len && line[vl] != ' ')
        vl++;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (eqi(line, vl, verbs[i].name)) {
            def = &verbs[i];
            break;
        }
    }
    if (def == NULL)
        return MX2_E_SYNTAX;
    out->verb = def->verb;
    a = vl < len ? vl + 1 : len; /* exactly one space after the verb */
    out->arg = line + a;
    out->arg_len = len - a;
    if (def->arg == ARG_PATH)
        return parse_mail_rcpt(out->arg, out->arg_len, flags, out);
    /* Other arguments: extra leading blanks are harmless; controls and
     * 8-bit octets are not (they end up in logs and Received: lines). */
    while (out->arg_len > 0 && is_blank((unsigned char)out->arg[0])) {
        out->arg++;
        out->arg_len--;
    }
    for (size_t i = 0; i < out->arg_len; i++) {
        unsigned char c = (unsigned char)out->arg[i];
        if ((c < 32 && c != '\t') || c >= 127)
            return MX2_E_INVAL;
    }
    if (out->arg_len == 0)
        out->arg = NULL;
    if (def->arg == ARG_NONE && out->arg_len > 0)
        return MX2_E_INVAL;
    if (def->arg == ARG_REQ && out->arg_len == 0)
        return MX2_E_INVAL;
    return 0;
}

/* --- replies ------------------------------------------------------------ */

/* "X.Y.Z" at p: class digit, 1-3 digits, 1-3 digits (RFC 3463), followed by
 * a space or the end. Returns its length or 0. */
static size_t
scan_ecode(const char *p, size_t n)
{
    size_t i = 1, d;

    if (n < 5 || (p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
        return 0;
    for (int part = 0; part < 2; part++) {
        i++;
        for (d = 0; i < n && d < 4 && p[i] >= '0' && p[i] <= '9'; d++)
            i++;
        if (d == 0 || d > 3)
            return 0;
        if (part == 0 && (i >= n || p[i] != '.'))
            return 0;
    }
    if (i < n && p[i] != ' ')
        return 0;
    return i;
}

int
smtp_parse_reply_line(const char *line, size_t len, struct smtp_reply_line *out)
{
    size_t i;

    memset(out, 0, sizeof(*out));
    if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
        line[2] < '0' || line[2] > '9')
        return MX2_E_PROTOCOL;
    if (memchr(line, '\0', len) != NULL)
        return MX2_E_PROTOCOL;
    out->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (len == 3) {
        out->is_last = true;
        out->text = line + 3;
        return 0;
    }
    if (line[3] == ' ')
        out->is_last = true;
    else if (line[3] != '-')
        return MX2_E_PROTOCOL;
    i = 4;
    if (line[0] != '3') {
        size_t el = scan_ecode(line + i, len - i);
        /* The class must agree with the reply code (RFC 3463 / 2034). */
        if (el > 0 && line[i] == line[0] && el < sizeof(out->ecode)) {
            memcpy(out->ecode, line + i, el);
            out->ecode[el] = '\0';
            out->has_ecode = true;
            i += el;
            if (i < len)
                i++; /* the space after the code */
        }
    }
    out->text = line + i;
    out->text_len = len - i;
    return 0;
}

void
smtp_reply_init(struct smtp_reply *r)
{
    memset(r, 0, sizeof(*r));
}

int
smtp_reply_add_line(struct smtp_reply *r, const char *line, size_t len)
{
    struct smtp_reply_line l;
    size_t need;

    if (r->done)
        return MX2_E_INVAL;
    if (r->nlines >= SMTP_REPLY_MAX_LINES)
        goto bad;
    if (smtp_parse_reply_line(line, len, &l) != 0)
        goto bad;
    /* RFC 5321 4.2.1: every line of a multi-line reply carries the same
     * code; a change means the stream is out of step. */
    if (r->nlines > 0 && l.code != r->code)
        goto bad;
    need = l.text_len + (r->nlines > 0 ? 1 : 0);
    if (r->text_len + need > SMTP_REPLY_TEXT_MAX)
        goto bad;
    if (r->nlines == 0)
        r->code = l.code;
    else
        r->text[r->text_len++] = '\n';
    memcpy(r->text + r->text_len, l.text, l.text_len);
    r->text_len += l.text_len;
    r->text[r->text_len] = '\0';
    if (l.has_ecode && !r->has_ecode) {
        memcpy(r->ecode, l.ecode, sizeof(r->ecode));
        r->has_ecode = true;
    }
    r->nlines++;
    if (l.is_last) {
        r->done = true;
        return 1;
    }
    return 0;
bad:
    /* Poison: further lines are refused until smtp_reply_init(). */
    r->nlines = SMTP_REPLY_MAX_LINES;
    r->done = false;
    return MX2_E_PROTOCOL;
}

/* --- EHLO keywords ------------------------------------------------------ */

void
smtp_ehlo_parse_line(const char *text, size_t len, struct smtp_ehlo *out)
{
    size_t i = 0, ks, ke;

    while (i < len && is_blank((unsigned char)text[i]))
        i++;
    ks = i;
    while (i < len && !is_blank((unsigned char)text[i]) && text[i] != '=')
        i++;
    ke = i;
    if (i < len)
        i++; /* the blank, or '=' of the pre-RFC "AUTH=PLAIN LOGIN" form */
    if (eqi(text + ks, ke - ks, "PIPELINING")) {
        out->pipelining = true;
    } else if (eqi(text + ks, ke - ks, "SIZE")) {
        size_t s = i;
        uint64_t v;
        out->has_size = true;
        while (i < len && text[i] >= '0' && text[i] <= '9')
            i++;
        out->size = (i > s && parse_size(text + s, i - s, &v) == 0) ? v : 0;
    } else if (eqi(text + ks, ke - ks, "8BITMIME")) {
        out->eightbitmime = true;
    } else if (eqi(text + ks, ke - ks, "SMTPUTF8")) {
        out->smtputf8 = true;
    } else if (eqi(text + ks, ke - ks, "DSN")) {
        out->dsn = true;
    } else if (eqi(text + ks, ke - ks, "STARTTLS")) {
        out->starttls = true;
    } else if (eqi(text + ks, ke - ks, "ENHANCEDSTATUSCODES")) {
        out->enhancedstatuscodes = true;
    } else if (eqi(text + ks, ke - ks, "CHUNKING")) {
        out->chunking = true;
    } else if (eqi(text + ks, ke - ks, "AUTH") || eqi(text + ks, ke - ks, "XFORWARD")) {
        int auth = eqi(text + ks, ke - ks, "AUTH");
        while (i < len) {
            size_t ws, we;
            while (i < len && is_blank((unsigned char)text[i]))
                i++;
            ws = i;
            while (i < len && !is_blank((unsigned char)text[i]))
                i++;
            we = i;
            if (we == ws)
                break;
            if (auth) {
                if (eqi(text + ws, we - ws, "PLAIN"))
                    out->auth |= SMTP_AUTH_PLAIN;
                else if (eqi(text + ws, we - ws, "LOGIN"))
                    out->auth |= SMTP_AUTH_LOGIN;
                else if (eqi(text + ws, we - ws, "CRAM-MD5"))
                    out->auth |= SMTP_AUTH_CRAM_MD5;
                else
                    out->auth |= SMTP_AUTH_OTHER;
            } else {
                static const struct {
                    const char *n;
                    unsigned bit;
                } xf[] = {{"NAME", SMTP_XF_NAME},     {"ADDR", SMTP_XF_ADDR},
                          {"PROTO", SMTP_XF_PROTO},   {"HELO", SMTP_XF_HELO},
                          {"SOURCE", SMTP_XF_SOURCE}, {"PORT", SMTP_XF_PORT},
                          {"IDENT", SMTP_XF_IDENT}};
                for (size_t k = 0; k < sizeof(xf) / sizeof(xf[0]); k++)
                    if (eqi(text + ws, we - ws, xf[k].n))
                        out->xforward |= xf[k].bit;
            }
        }
    }
}

int
smtp_ehlo_parse(const struct smtp_reply *r, struct smtp_ehlo *out)
{
    size_t i = 0;
    int first = 1;

    memset(out, 0, sizeof(*out));
    if (!r->done || r->code < 200 || r->code > 299)
        return MX2_E_PROTOCOL;
    while (i <= r->text_len) {
        const char *nl = memchr(r->text + i, '\n', r->text_len - i);
        size_t e = nl != NULL ? (size_t)(nl - r->text) : r->text_len;
        if (!first)
            smtp_ehlo_parse_line(r->text + i, e - i, out);
        first = 0;
        i = e + 1;
    }
    return 0;
}
