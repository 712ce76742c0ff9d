/*
 * addr.c - RFC 5321 paths (see addr.h).
 *
 * The grammar is RFC 5321 4.1.2 with RFC 6531's UTF-8 extension:
 *
 *   Path       = "<" [ A-d-l ":" ] Mailbox ">"
 *   A-d-l      = At-domain *( "," At-domain )       ; source route, ignored
 *   Mailbox    = Local-part "@" ( Domain / address-literal )
 *   Local-part = Dot-string / Quoted-string
 *
 * Two deliberate leniencies, both safe because the result is canonical:
 * blanks around the path are skipped, and one trailing dot on the domain
 * ("user@example.jp.") is removed and flagged, since resolvers treat the
 * absolute name as the same domain and a relay check that compared strings
 * naively would be fooled by it. Everything else is strict: a parser that
 * guesses is how open relays happen.
 *
 * "<postmaster>" without a domain (RFC 5321 4.5.1) is refused: a backup MX
 * has no postmaster of its own to deliver to and cannot tell which relay
 * domain's postmaster is meant.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "err.h"

#define MAX_LABEL 63 /* RFC 1035 2.3.4 */

static int
is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* RFC 5322 atext. */
static int
is_atext(unsigned char c)
{
    if (is_alpha(c) || is_digit(c))
        return 1;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Length of a well-formed UTF-8 sequence starting at s (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. Checked so
 * that SMTPUTF8 cannot smuggle bytes that a later consumer decodes into
 * something else (an overlong "@", for instance). */
static size_t
utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp, min;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* A cursor over the input. */
struct cur {
    const unsigned char *s;
    size_t len;
    size_t pos;
    unsigned pflags; /* ADDR_PARSE_* */
};

static int
peek(const struct cur *c)
{
    return c->pos < c->len ? c->s[c->pos] : -1;
}

/* Parse a Domain (dot-separated sub-domains, each Let-dig [Ldh-str], with
 * U-labels when UTF-8 is allowed) at the cursor. Writes the lower-cased
 * domain into out (NUL-terminated) when out != NULL. A single trailing dot
 * is accepted only when allow_trailing_dot (the final domain, not a route)
 * and reported through *trailing. */
static int
parse_domain(struct cur *c, char *out, size_t *outlen, unsigned *seen, int allow_trailing_dot)
{
    size_t start = c->pos, label = 0, n = 0;
    int last = 0; /* last octet of the current label, for the no-trailing-hyphen rule */

    for (;;) {
        int ch = peek(c);
        if (ch == '.') {
            if (label == 0 || last == '-')
                return MX2_E_BAD_ADDRESS;
            c->pos++;
            label = 0;
            ch = peek(c);
            if (allow_trailing_dot && (ch == '>' || ch == -1 || is_blank((unsigned char)ch))) {
                /* "example.jp." -> "example.jp": the root label is implied
                 * anyway; the relay check must see the same name. */
                *seen |= ADDR_F_TRAILING_DOT;
                break;
            }
            if (out != NULL)
                out[n] = '.';
            n++;
            continue;
        }
        if (ch >= 0 && (is_alpha((unsigned char)ch) || is_digit((unsigned char)ch))) {
            if (out != NULL && n < ADDR_DOMAIN_MAX)
                out[n] = (char)lower((unsigned char)ch);
            n++;
            label++;
            last = ch;
            c->pos++;
        } else if (ch == '-' && label > 0) {
            if (out != NULL && n < ADDR_DOMAIN_MAX)
                out[n] = '-';
            n++;
            label++;
            last = ch;
            c->pos++;
        } else if (ch >= 0x80 && (c->pflags & ADDR_PARSE_UTF8)) {
            size_t k = utf8_seq(c->s + c->pos, c->len - c->pos);
            if (k == 0)
                return MX2_E_BAD_ADDRESS;
            for (size_t i = 0; i < k; i++) {
                if (out != NULL && n < ADDR_DOMAIN_MAX)
                    out[n] = (char)c->s[c->pos + i];
                n++;
            }
            c->pos += k;
            label += k;
            last = 0x80;
            *seen |= ADDR_F_UTF8;
        } else {
            break;
        }
        if (label > MAX_LABEL || n > ADDR_DOMAIN_MAX)
            return MX2_E_BAD_ADDRESS;
    }
    if (c->pos == start || (label == 0 && !(*seen & ADDR_F_TRAILING_DOT)) || last == '-')
        return MX2_E_BAD_ADDRESS;
    if (n == 0 || n > ADDR_DOMAIN_MAX)
        return MX2_E_BAD_ADDRESS;
    if (out != NULL)
        out[n] = '\0';
    if (outlen != NULL)
        *outlen = n;
    return 0;
}

/* address-literal: "[" IPv4 / "IPv6:" IPv6 "]". General-address-literals
 * ("[tag:...]") are refused: nothing mx2 would ever accept lives there. */
static int
parse_literal(struct cur *c, char *out, size_t *outlen)
{
    size_t start = c->pos, end;
    char tmp[64];
    unsigned char buf[16];
    size_t n;

    c->pos++; /* '[' */
    end = c->pos;
    while (end < c->len && c->s[end] != ']')
        end++;
    if (end >= c->len)
        return MX2_E_BAD_ADDRESS;
    n = end - c->pos;
    if (n == 0 || n >= sizeof(tmp))
        return MX2_E_BAD_ADDRESS;
    memcpy(tmp, c->s + c->pos, n);
    tmp[n] = '\0';
    if (memchr(tmp, '\0', n) != NULL)
        return MX2_E_BAD_ADDRESS;
    if (n > 5 && strncasecmp(tmp, "IPv6:", 5) == 0) {
        if (inet_pton(AF_INET6, tmp + 5, buf) != 1)
            return MX2_E_BAD_ADDRESS;
    } else {
        /* inet_pton(AF_INET) is strict dotted-quad: no octal, no short
         * forms, no leading zeros tricks like "0x7f.1". */
        if (inet_pton(AF_INET, tmp, buf) != 1)
            return MX2_E_BAD_ADDRESS;
    }
    c->pos = end + 1;
    n = c->pos - start;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)lower(c->s[start + i]);
    out[n] = '\0';
    *outlen = n;
    return 0;
}

static void
note_local_char(unsigned char ch, int quoted, unsigned *seen)
{
    if (ch == '%')
        *seen |= ADDR_F_HAS_PERCENT;
    else if (ch == '!')
        *seen |= ADDR_F_HAS_BANG;
    else if (ch == '@' && quoted)
        *seen |= ADDR_F_HAS_AT_IN_LOCAL;
    else if ((ch == ':' || ch == ',') && quoted)
        *seen |= ADDR_F_HAS_ROUTE_CHAR;
    else if (ch >= 0x80)
        *seen |= ADDR_F_UTF8;
}

/* Local-part = Dot-string / Quoted-string; writes the unquoted form. */
static int
parse_local(struct cur *c, struct addr_path *out)
{
    size_t start = c->pos, n = 0;

    if (peek(c) == '"') {
        out->flags |= ADDR_F_QUOTED;
        c->pos++;
        for (;;) {
            int ch = peek(c);
            if (ch < 0)
                return MX2_E_BAD_ADDRESS;
            if (ch == '"') {
                c->pos++;
                break;
            }
            if (ch == '\\') {
                /* quoted-pairSMTP = "\" %d32-126 */
                c->pos++;
                ch = peek(c);
                if (ch < 32 || ch > 126)
                    return MX2_E_BAD_ADDRESS;
                c->pos++;
            } else if (ch >= 32 && ch <= 126) {
                c->pos++; /* qtextSMTP: everything printable but '"' and '\' */
            } else if (ch >= 0x80 && (c->pflags & ADDR_PARSE_UTF8)) {
                size_t k = utf8_seq(c->s + c->pos, c->len - c->pos);
                if (k == 0 || n + k > ADDR_LOCAL_MAX)
                    return MX2_E_BAD_ADDRESS;
                memcpy(out->local + n, c->s + c->pos, k);
                n += k;
                c->pos += k;
                out->flags |= ADDR_F_UTF8;
                continue;
            } else {
                return MX2_E_BAD_ADDRESS;
            }
            if (n >= ADDR_LOCAL_MAX)
                return MX2_E_BAD_ADDRESS;
            out->local[n++] = (char)ch;
            note_local_char((unsigned char)ch, 1, &out->flags);
        }
    } else {
        int prev_dot = 1; /* no leading dot */
        for (;;) {
            int ch = peek(c);
            if (ch == '.') {
                if (prev_dot)
                    return MX2_E_BAD_ADDRESS;
                prev_dot = 1;
            } else if (ch >= 0 && is_atext((unsigned char)ch)) {
                prev_dot = 0;
            } else if (ch >= 0x80 && (c->pflags & ADDR_PARSE_UTF8)) {
                size_t k = utf8_seq(c->s + c->pos, c->len - c->pos);
                if (k == 0 || n + k > ADDR_LOCAL_MAX)
                    return MX2_E_BAD_ADDRESS;
                memcpy(out->local + n, c->s + c->pos, k);
                n += k;
                c->pos += k;
                out->flags |= ADDR_F_UTF8;
                prev_dot = 0;
                continue;
            } else {
                break;
            }
            if (n >= ADDR_LOCAL_MAX)
                return MX2_E_BAD_ADDRESS;
            out->local[n++] = (char)ch;
            note_local_char((unsigned char)ch, 0, &out->flags);
            c->pos++;
        }
        if (prev_dot && n > 0)
            return MX2_E_BAD_ADDRESS; /* trailing dot in the local part */
    }
    /* RFC 5321 4.5.3.1.1 counts the local part as written. An empty local
     * part ("" or nothing) names no mailbox. */
    if (n == 0 || c->pos - start > ADDR_LOCAL_MAX)
        return MX2_E_BAD_ADDRESS;
    out->local[n] = '\0';
    out->local_len = n;
    return 0;
}

/* Mailbox = Local-part "@" ( Domain / address-literal ) */
static int
parse_mailbox(struct cur *c, struct addr_path *out)
{
    int rc;

    if ((rc = parse_local(c, out)) != 0)
        return rc;
    if (peek(c) != '@')
        return MX2_E_BAD_ADDRESS;
    c->pos++;
    if (peek(c) == '[') {
        out->flags |= ADDR_F_IP_LITERAL;
        return parse_literal(c, out->domain, &out->domain_len);
    }
    return parse_domain(c, out->domain, &out->domain_len, &out->flags, 1);
}

/* A-d-l ":" - a source route. RFC 5321 4.1.1.3 and Appendix C: servers
 * SHOULD ignore it and deliver to the mailbox; so we check its syntax and
 * drop it, and the relay check judges the final domain only. */
static int
parse_route(struct cur *c, struct addr_path *out)
{
    for (;;) {
        unsigned dummy = 0;
        if (peek(c) != '@')
            return MX2_E_BAD_ADDRESS;
        c->pos++;
        if (parse_domain(c, NULL, NULL, &dummy, 0) != 0)
            return MX2_E_BAD_ADDRESS;
        if (dummy & ADDR_F_UTF8)
            out->flags |= ADDR_F_UTF8;
        if (peek(c) == ',') {
            c->pos++;
            continue;
        }
        if (peek(c) == ':') {
            c->pos++;
            out->flags |= ADDR_F_ROUTE;
            return 0;
        }
        return MX2_E_BAD_ADDRESS;
    }
}

int
addr_path_end(const char *s, size_t len, size_t *end)
{
    int quoted = 0;

    if (len == 0 || s[0] != '<')
        return MX2_E_BAD_ADDRESS;
    for (size_t i = 1; i < len; i++) {
        char ch = s[i];
        if (quoted) {
            if (ch == '\\')
                i++; /* the escaped octet cannot close anything */
            else if (ch == '"')
                quoted = 0;
        } else if (ch == '"') {
            quoted = 1;
        } else if (ch == '>') {
            *end = i + 1;
            return 0;
        }
    }
    return MX2_E_BAD_ADDRESS;
}

int
addr_parse_path(const char *s, size_t len, unsigned flags, struct addr_path *out)
{
    struct cur c;
    size_t b = 0, e = len;
    int bracket;

    memset(out, 0, sizeof(*out));
    while (b < e && is_blank((unsigned char)s[b]))
        b++;
    while (e > b && is_blank((unsigned char)s[e - 1]))
        e--;
    if (b == e)
        return MX2_E_BAD_ADDRESS;
    bracket = s[b] == '<';
    if (!bracket && !(flags & ADDR_PARSE_BARE))
        return MX2_E_BAD_ADDRESS;
    /* RFC 5321 4.5.3.1.3: the whole path, brackets included, is at most
     * 256 octets (a bare address is measured as if bracketed). */
    if (e - b + (bracket ? 0 : 2) > ADDR_PATH_MAX)
        return MX2_E_BAD_ADDRESS;
    c.s = (const unsigned char *)s;
    c.len = e;
    c.pos = b;
    c.pflags = flags;
    if (bracket) {
        c.pos++;
        if (peek(&c) == '>') {
            if (!(flags & ADDR_PARSE_NULL) || c.pos + 1 != e)
                goto bad;
            out->flags = ADDR_F_NULL;
            return 0;
        }
        /* Every parse error is reported as MX2_E_BAD_ADDRESS below, so the
         * inner code is not kept. */
        if (peek(&c) == '@' && parse_route(&c, out) != 0)
            goto bad;
    }
    if (parse_mailbox(&c, out) != 0)
        goto bad;
    if (bracket) {
        if (peek(&c) != '>')
            goto bad;
        c.pos++;
    }
    if (c.pos != e)
        goto bad;
    return 0;
bad:
    memset(out, 0, sizeof(*out));
    return MX2_E_BAD_ADDRESS;
}

int
addr_domain_listed(const char *domain, size_t len, char *const *relay_domains, size_t n)
{
    if (len > 0 && domain[len - 1] == '.')
        len--;
    if (len == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *r = relay_domains[i];
        size_t rl;
        if (r == NULL)
            continue;
        rl = strlen(r);
        if (rl > 0 && r[rl - 1] == '.')
            rl--;
        /* Exact match only: "sub.example.jp" and "example.jp.evil.com"
         * are different domains; a relay domain covers no subdomains
         * unless they are listed themselves (as Postfix relay_domains
         * with parent_domain_matches_subdomains off). */
        if (rl == len && strncasecmp(r, domain, len) == 0)
            return 1;
    }
    return 0;
}

int
addr_relay_check(const struct addr_path *a, char *const *relay_domains, size_t n)
{
    /* The null path names no mailbox: nothing to relay to. */
    if (a->flags & ADDR_F_NULL || a->local_len == 0 || a->domain_len == 0)
        return MX2_E_RELAY_DENIED;
    /* "user@[198.51.100.1]": an address literal routes by IP, around the
     * domain list entirely; the primary would send it wherever it points. */
    if ((a->flags & ADDR_F_IP_LITERAL) || a->domain[0] == '[')
        return MX2_E_RELAY_DENIED;
    /* Routing characters in the local part. The primary trusts mx2 (it is
     * in its mynetworks), so whatever the local part still routes is
     * relayed by the primary on our word:
     *   "user%evil.com@example.jp"     - percent hack: user@evil.com
     *   "evil.com!user@example.jp"     - UUCP bang path: evil.com!user
     *   "\"user@evil.com\"@example.jp" - a quoted '@': a second domain
     *   "\"@a:user@evil.com\"@example.jp", "\"a,b\"@..." - quoted ':' and
     *                                    ',' rebuild a source route or a list
     * They are refused even when the map has a @domain catch-all. The flags
     * come from the parser; the octets are checked again so that an
     * addr_path built by hand cannot slip through. */
    if (a->flags & (ADDR_F_HAS_PERCENT | ADDR_F_HAS_BANG | ADDR_F_HAS_AT_IN_LOCAL |
                    ADDR_F_HAS_ROUTE_CHAR))
        return MX2_E_RELAY_DENIED;
    for (size_t i = 0; i < a->local_len; i++) {
        char ch = a->local[i];
        if (ch == '%' || ch == '!' || ch == '@' || ch == ':' || ch == ',')
            return MX2_E_RELAY_DENIED;
    }
    /* The final domain, after the source route was dropped ("<@example.jp:
     * user@evil.com>" is judged on evil.com) and the trailing dot and case
     * folded ("USER@EXAMPLE.JP.", "user@example.jp." are example.jp), must
     * be listed exactly: "example.jp.evil.com" and an unlisted
     * "sub.example.jp" are foreign. */
    if (!addr_domain_listed(a->domain, a->domain_len, relay_domains, n))
        return MX2_E_RELAY_DENIED;
    return 0;
}

int
addr_local_needs_quotes(const char *local, size_t len)
{
    int prev_dot = 1;

    if (len == 0)
        return 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)local[i];
        if (ch == '.') {
            if (prev_dot)
                return 1;
            prev_dot = 1;
        } else if (is_atext(ch) || ch >= 0x80) {
            /* 8-bit octets are atext under SMTPUTF8 (RFC 6531 3.3); the
             * parser only lets them in when they are valid UTF-8. */
            prev_dot = 0;
        } else {
            return 1;
        }
    }
    return prev_dot;
}

int
addr_format(const struct addr_path *a, char *buf, size_t size, size_t *outlen)
{
    size_t n = 0;

#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (n + 1 >= size)                                                                         \
            goto small;                                                                            \
        buf[n++] = (char)(ch);                                                                     \
    } while (0)

    if (size == 0)
        return MX2_E_INVAL;
    if (!(a->flags & ADDR_F_NULL)) {
        if (addr_local_needs_quotes(a->local, a->local_len)) {
            PUT('"');
            for (size_t i = 0; i < a->local_len; i++) {
                if (a->local[i] == '"' || a->local[i] == '\\')
                    PUT('\\');
                PUT(a->local[i]);
            }
            PUT('"');
        } else {
            for (size_t i = 0; i < a->local_len; i++)
                PUT(a->local[i]);
        }
        PUT('@');
        for (size_t i = 0; i < a->domain_len; i++)
            PUT(a->domain[i]);
    }
#undef PUT
    buf[n] = '\0';
    if (outlen != NULL)
        *outlen = n;
    return 0;
small:
    buf[0] = '\0';
    if (outlen != NULL)
        *outlen = 0;
    return MX2_E_INVAL;
}
