/*
 * config.c - mx2.conf loader (see config.h for the contract).
 *
 * Shape: libconfig parses the text into a tree; a table of known keys (one
 * row per key of SPEC.md "Configuration") maps each top-level setting to a
 * handler that checks its type and value and stores it in struct mx2_config.
 * Every handler reports its own problems and returns, so one run collects all
 * of them: an operator fixing mx2.conf sees the whole list from `mx2d -t`,
 * not one error per restart (as `postfix check` does).
 *
 * A value is stored only when it is valid, so a failed load leaves defaults
 * in place of bad values; the caller refuses to start anyway.
 *
 * The text is read by us, not by config_read_file(), for three reasons:
 * - libconfig 1.5 turns an integer literal without the L suffix into
 *   (int)atoll(text): 52428800000 silently becomes 889192448, and a literal
 *   beyond 64 bits saturates. For integer settings we re-read the literal from
 *   the text (config_literal()), so big values work without "L" and overflow
 *   is an error instead of a wrong limit.
 * - @include would make FILE:LINE point at other files and let a fuzzer (or a
 *   typo) make the loader read /dev/zero; we refuse it before libconfig sees it.
 * - A NUL byte would silently end the text early in libconfig; we refuse it.
 */
#include "config.h"

#include "err.h"
#include "fsio.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * libconfig 1.5 leaks the buffer of a string token that its parser never
 * takes (a syntax error right after a string, or a bare `""` at top level):
 * the scanner allocates it (libconfig_yylex, strbuf_append) and nothing frees
 * it. We cannot free it from outside, and it is a few bytes once per failed
 * load, so under LeakSanitizer those two allocation sites are suppressed for
 * every program that links this loader (the fuzz target, `mx2d -t` in the
 * sanitizer e2e run). Only the scanner's string buffers are covered: a
 * config_t we forgot to destroy would still be reported, through
 * libconfig_yyparse.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONFIG_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(CONFIG_ASAN)
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
    return "leak:libconfig_yylex\nleak:strbuf_append\n";
}
#endif

/* ---- errors ---------------------------------------------------------- */

void
config_errors_add(struct config_errors *errs, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *line;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    line = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(line, (size_t)n + 1, fmt, ap);
    va_end(ap);
    errs->lines = xrealloc(errs->lines, (errs->count + 1) * sizeof(*errs->lines));
    errs->lines[errs->count++] = line;
}

void
config_errors_free(struct config_errors *errs)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->lines[i]);
    free(errs->lines);
    errs->lines = NULL;
    errs->count = 0;
}

/*
 * Quote a value for a message. Values come from the file, which may hold
 * control characters or escape sequences: they must not reach the operator's
 * terminal or syslog raw, so anything outside printable ASCII becomes '?'.
 */
static const char *
config_quote(const char *s, char *buf, size_t len)
{
    size_t o = 0, max = len - 5; /* room for the quotes, "..." cut mark, NUL */

    buf[o++] = '"';
    for (; *s != '\0' && o < max; s++)
        buf[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    if (*s != '\0') {
        buf[o - 2] = '.';
        buf[o - 1] = '.';
        buf[o++] = '.';
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- pure parsers ---------------------------------------------------- */

static int
config_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int
config_is_alnum(char c)
{
    return config_is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int
config_parse_duration(const char *s, int64_t *out)
{
    int64_t v = 0, unit = 1;
    const char *p = s;

    if (s == NULL || !config_is_digit(*p))
        return MX2_E_INVAL;
    for (; config_is_digit(*p); p++) {
        int d = *p - '0';
        if (v > (CONFIG_DURATION_MAX - d) / 10)
            return MX2_E_INVAL;
        v = v * 10 + d;
    }
    switch (*p) {
    case '\0':
        break;
    case 's':
        unit = 1;
        p++;
        break;
    case 'm':
        unit = 60;
        p++;
        break;
    case 'h':
        unit = 3600;
        p++;
        break;
    case 'd':
        unit = 86400;
        p++;
        break;
    default:
        return MX2_E_INVAL;
    }
    if (*p != '\0' || v > CONFIG_DURATION_MAX / unit)
        return MX2_E_INVAL;
    *out = v * unit;
    return 0;
}

/*
 * A host name as RFC 1123 section 2.1 allows: dot-separated labels of 1..63
 * letters, digits and hyphens, no hyphen at either end of a label, 253 octets
 * in all, no empty label (so no trailing dot: callers strip one first). The
 * last label must not be all digits (RFC 3696 section 2), so "198.51.100.300"
 * or "1.2.3" are not mistaken for names.
 */
static int
config_domain_ok(const char *s, size_t len)
{
    size_t label = 0, last = 0;
    int numeric = 1;

    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? s[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return 0;
            last = i - label;
            label = 0;
            continue;
        }
        if (!config_is_alnum(c) && c != '-')
            return 0;
        if (c == '-' && label == 0)
            return 0;
        label++;
    }
    for (size_t i = last; i < len; i++)
        if (!config_is_digit(s[i]))
            numeric = 0;
    return !numeric;
}

static int
config_is_ip(const char *s, int af)
{
    unsigned char tmp[sizeof(struct in6_addr)];

    return inet_pton(af, s, tmp) == 1;
}

/* The parser, with the reason for a refusal (for the loader's message). */
static int
config_hostport(const char *s, uint16_t default_port, struct mx2_hostport *out, const char **why)
{
    const char *host, *hend, *rest;
    size_t hlen;
    bool bracketed = false;

    *why = "empty";
    if (s == NULL || *s == '\0')
        return MX2_E_INVAL;
    if (s[0] == '[') {
        bracketed = true;
        host = s + 1;
        hend = strchr(host, ']');
        if (hend == NULL || memchr(host, '[', (size_t)(hend - host)) != NULL) {
            *why = "unbalanced brackets";
            return MX2_E_INVAL;
        }
        rest = hend + 1;
    } else {
        const char *colon = strchr(s, ':');
        /* "2001:db8::1" or "::1:25": cannot tell the port from the address. */
        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            *why = "an IPv6 address needs brackets, as in \"[2001:db8::1]:25\"";
            return MX2_E_INVAL;
        }
        host = s;
        hend = colon != NULL ? colon : s + strlen(s);
        rest = hend;
    }
    hlen = (size_t)(hend - host);
    if (hlen == 0) {
        *why = "empty host";
        return MX2_E_INVAL;
    }
    if (hlen >= sizeof(out->host)) {
        *why = "host name too long";
        return MX2_E_INVAL;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->bracketed = bracketed;

    if (memchr(out->host, ':', hlen) != NULL) {
        /* Only reachable in brackets: an IPv6 literal, and nothing else. */
        if (!config_is_ip(out->host, AF_INET6)) {
            *why = "not an IPv6 address";
            return MX2_E_INVAL;
        }
    } else if (!config_is_ip(out->host, AF_INET) && !config_domain_ok(out->host, hlen)) {
        *why = strchr(out->host, ']') != NULL || strchr(out->host, '[') != NULL
                   ? "unbalanced brackets"
                   : "not a host name or IP address";
        return MX2_E_INVAL;
    }

    if (*rest == '\0') {
        if (default_port == 0) {
            *why = "a port is required, as in \"127.0.0.1:8025\"";
            return MX2_E_INVAL;
        }
        out->port = default_port;
        return 0;
    }
    if (*rest != ':') {
        *why = "junk after \"]\"";
        return MX2_E_INVAL;
    }
    rest++;
    {
        unsigned long port = 0;
        size_t n = 0;
        for (; n < 6 && config_is_digit(rest[n]); n++)
            port = port * 10 + (unsigned long)(rest[n] - '0');
        if (n == 0 || rest[n] != '\0' || port == 0 || port > 65535) {
            *why = "the port must be a number from 1 to 65535";
            return MX2_E_INVAL;
        }
        out->port = (uint16_t)port;
    }
    return 0;
}

int
config_parse_hostport(const char *s, uint16_t default_port, struct mx2_hostport *out)
{
    const char *why;

    return config_hostport(s, default_port, out, &why);
}

void
config_format_hostport(const struct mx2_hostport *hp, char *buf, size_t len)
{
    if (len == 0)
        return;
    if (hp->bracketed || strchr(hp->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", hp->host, (unsigned)hp->port);
    else
        snprintf(buf, len, "%s:%u", hp->host, (unsigned)hp->port);
}

/* ---- defaults and free ----------------------------------------------- */

static void
config_hp_default(const char *s, uint16_t port, struct mx2_hostport *hp)
{
    if (config_parse_hostport(s, port, hp) != 0)
        abort(); /* a built-in default that does not parse is a bug */
}

void
config_defaults(struct mx2_config *cfg)
{
    char host[256];

    memset(cfg, 0, sizeof(*cfg));
    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    cfg->hostname = xstrdup(host);
    cfg->listen_count = 2;
    cfg->listen = xcalloc(2, sizeof(*cfg->listen));
    config_hp_default("0.0.0.0:25", 25, &cfg->listen[0]);
    config_hp_default("[::]:25", 25, &cfg->listen[1]);
    cfg->recipient_map = xstrdup("/var/lib/mx2/recipients.mdb");
    cfg->recipient_delimiter = xstrdup("+");
    cfg->spool_dir = xstrdup("/var/spool/mx2");
    cfg->queue_lifetime = 5 * 86400;
    cfg->retry_min = 5 * 60;
    cfg->retry_max = 70 * 60;
    cfg->probe_interval = 60;
    cfg->primary_concurrency = 10;
    cfg->primary_tls = MX2_TLS_MAY;
    cfg->primary_tls_ca = xstrdup("");
    cfg->primary_auth_user = xstrdup("");
    cfg->primary_auth_password_file = xstrdup("");
    cfg->max_message_size = 52428800;
    cfg->max_recipients = 1000;
    cfg->max_connections = 1000;
    cfg->max_connections_per_ip = 20;
    cfg->smtp_timeout = 5 * 60;
    cfg->connect_timeout = 10;
    cfg->bare_newline = MX2_BARE_NORMALIZE;
    cfg->delay_warning = 0;
    cfg->defer_when_primary_up = false;
    cfg->tls_cert = xstrdup("");
    cfg->tls_key = xstrdup("");
    cfg->control_socket = xstrdup("/run/mx2/control.sock");
    config_hp_default("127.0.0.1:8025", 0, &cfg->http_listen);
    cfg->http_enabled = true;
    cfg->log = MX2_LOG_STDERR;
    cfg->user = xstrdup("");
}

static void
config_strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void
config_free(struct mx2_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->hostname);
    free(cfg->listen);
    config_strv_free(cfg->relay_domains, cfg->relay_domains_count);
    free(cfg->recipient_map);
    free(cfg->recipient_delimiter);
    free(cfg->primary);
    free(cfg->spool_dir);
    free(cfg->primary_tls_ca);
    free(cfg->primary_auth_user);
    free(cfg->primary_auth_password_file);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    config_strv_free(cfg->etrn_clients, cfg->etrn_clients_count);
    free(cfg->control_socket);
    free(cfg->user);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- the loader ------------------------------------------------------ */

struct config_loader {
    const char *name; /* FILE in messages */
    const char *text; /* the text libconfig parsed, for integer literals */
    struct mx2_config *cfg;
    struct config_errors *errs;
    size_t nerr;
};

static void ld_err(struct config_loader *ld, const config_setting_t *s, const char *key,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
ld_err(struct config_loader *ld, const config_setting_t *s, const char *key, const char *fmt, ...)
{
    char reason[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    config_errors_add(ld->errs, "%s:%u: %s: %s", ld->name,
                      s != NULL ? (unsigned)config_setting_source_line(s) : 0u, key, reason);
    ld->nerr++;
}

static const char *
config_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group { }";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array [ ]";
    case CONFIG_TYPE_LIST:
        return "a list ( )";
    default:
        return "nothing";
    }
}

static void
ld_type_err(struct config_loader *ld, const config_setting_t *s, const char *key, const char *want)
{
    ld_err(ld, s, key, "wrong type: want %s, got %s", want, config_type_name(s));
}

/* Skip blanks, newlines and the three comment styles libconfig knows. */
static const char *
config_skip_blank(const char *p)
{
    for (;;) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\f') {
            p++;
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            while (*p != '\0' && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *e = strstr(p + 2, "*/");
            if (e == NULL)
                return p + strlen(p);
            p = e + 2;
        } else {
            return p;
        }
    }
}

static int
config_name_char(char c)
{
    return config_is_alnum(c) || c == '_' || c == '-' || c == '*';
}

/*
 * Parse an integer literal at p (libconfig syntax: optional sign, decimal or
 * 0x hex, optional L/LL) into *v, saturating and setting *overflow when it
 * does not fit in int64_t. Returns the end, or NULL when p holds no literal.
 */
static const char *
config_int_literal(const char *p, int64_t *v, int *overflow)
{
    int neg = 0, hex = 0;
    uint64_t acc = 0, limit;
    size_t digits = 0;

    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        hex = 1;
        p += 2;
    }
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    *overflow = 0;
    for (;; p++, digits++) {
        unsigned d;
        if (config_is_digit(*p))
            d = (unsigned)(*p - '0');
        else if (hex && *p >= 'a' && *p <= 'f')
            d = (unsigned)(*p - 'a' + 10);
        else if (hex && *p >= 'A' && *p <= 'F')
            d = (unsigned)(*p - 'A' + 10);
        else
            break;
        if (acc > (limit - d) / (hex ? 16 : 10))
            *overflow = 1;
        else
            acc = acc * (hex ? 16 : 10) + d;
    }
    if (digits == 0)
        return NULL;
    while (*p == 'L')
        p++;
    if (*overflow)
        acc = limit;
    *v = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    return p;
}

/*
 * The true value of an integer setting, read from the text (see the file
 * header). The setting's name is on its source line; the first occurrence of
 * `name =` / `name :` from there whose literal agrees with what libconfig
 * stored (modulo its wrap to 32 bits) is the one. Falls back to libconfig's
 * value when the text cannot be matched, which cannot happen for text that
 * libconfig itself parsed, but costs nothing to handle.
 */
static int
config_literal(const struct config_loader *ld, const config_setting_t *s, int64_t *out)
{
    const char *name = config_setting_name(s), *p = ld->text;
    unsigned line = config_setting_source_line(s);
    size_t nl;
    int is64 = config_setting_type(s) == CONFIG_TYPE_INT64;
    int64_t lc = is64 ? (int64_t)config_setting_get_int64(s) : config_setting_get_int(s);

    *out = lc;
    if (name == NULL || p == NULL)
        return 0;
    nl = strlen(name);
    for (unsigned l = 1; l < line && p != NULL; l++)
        if ((p = strchr(p, '\n')) != NULL)
            p++;
    for (; p != NULL && (p = strstr(p, name)) != NULL; p++) {
        const char *q = p + nl;
        int64_t v;
        int overflow;
        if ((p > ld->text && config_name_char(p[-1])) || config_name_char(*q))
            continue;
        q = config_skip_blank(q);
        if (*q != '=' && *q != ':')
            continue;
        q = config_skip_blank(q + 1);
        if (config_int_literal(q, &v, &overflow) == NULL)
            continue;
        if (overflow)
            return MX2_E_INVAL;
        if (is64 ? v == lc : (int32_t)(uint32_t)(uint64_t)v == lc) {
            *out = v;
            return 0;
        }
    }
    return 0;
}

struct config_key;
typedef void (*config_key_fn)(struct config_loader *ld, const config_setting_t *s,
                              const struct config_key *k);
typedef const char *(*config_check_fn)(char *value);

struct config_enum {
    const char *name;
    int value;
};

/* Flags of a config_key. */
#define KF_IP_ONLY 0x01   /* host must be an IP address (bind address) */
#define KF_EMPTY_OFF 0x02 /* "" turns the feature off (bool at off2) */
#define KF_NO_DUPS 0x04   /* the same address twice is an error */

struct config_key {
    const char *name;
    config_key_fn parse;
    size_t off;  /* the field in struct mx2_config */
    size_t off2; /* second field (count, enabled flag) */
    int64_t min; /* integers, durations; default port */
    unsigned flags;
    config_check_fn check;           /* strings: validate/normalise in place */
    const struct config_enum *names; /* enumerations */
};

#define FIELD(ld, off, type) ((type *)(void *)((char *)(ld)->cfg + (off)))

static void
ld_set_str(char **field, const char *v)
{
    char *n = xstrdup(v);
    free(*field);
    *field = n;
}

static void
key_string(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    char *v, q[100];
    const char *why;

    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        ld_type_err(ld, s, k->name, "a string");
        return;
    }
    v = xstrdup(config_setting_get_string(s));
    if (k->check != NULL && (why = k->check(v)) != NULL) {
        ld_err(ld, s, k->name, "%s: %s", config_quote(config_setting_get_string(s), q, sizeof(q)),
               why);
        free(v);
        return;
    }
    free(*FIELD(ld, k->off, char *));
    *FIELD(ld, k->off, char *) = v;
}

/* A trailing dot is the DNS root; "example.jp." and "example.jp" are the
 * same domain, and the RCPT checks compare without it. */
static void
config_strip_dot(char *v)
{
    size_t n = strlen(v);
    if (n > 1 && v[n - 1] == '.')
        v[n - 1] = '\0';
}

static const char *
check_hostname(char *v)
{
    config_strip_dot(v);
    return config_domain_ok(v, strlen(v)) ? NULL : "not a host name";
}

static const char *
check_domain(char *v)
{
    config_strip_dot(v);
    for (char *p = v; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return config_domain_ok(v, strlen(v)) ? NULL : "not a domain name";
}

/*
 * Like Postfix >= 2.11, several characters may be given and each one is a
 * delimiter. Characters with a routing meaning ('@', '%', '!'), quoting,
 * the address brackets and blanks are refused: a delimiter that is also a
 * routing character would let the map lookup and the primary disagree on
 * which address is meant, which is the road to an open relay.
 */
static const char *
check_delimiter(char *v)
{
    static const char ok[] = "+-_=.~#$&*/?^|'`{}";

    if (strlen(v) > 8)
        return "at most 8 characters";
    for (const char *p = v; *p != '\0'; p++)
        if (strchr(ok, *p) == NULL)
            return "each character must be one of + - _ = . ~ # $ & * / ? ^ | ' ` { }";
    return NULL;
}

static const char *
check_socket_path(char *v)
{
    struct sockaddr_un sa;
    return strlen(v) < sizeof(sa.sun_path) ? NULL : "path too long for a unix socket";
}

/* Integer value of an int/int64 setting from the text; reports overflow. */
static int
ld_int(struct config_loader *ld, const config_setting_t *s, const char *key, int64_t *v)
{
    if (config_literal(ld, s, v) != 0) {
        ld_err(ld, s, key, "integer out of range");
        return -1;
    }
    return 0;
}

static int
config_is_int(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

static void
key_duration(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    int64_t v;
    char q[100];

    if (config_is_int(s)) {
        if (ld_int(ld, s, k->name, &v) != 0)
            return;
        if (v < 0) {
            ld_err(ld, s, k->name, "must not be negative");
            return;
        }
        if (v > CONFIG_DURATION_MAX) {
            ld_err(ld, s, k->name, "too long (at most 100 years)");
            return;
        }
    } else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        const char *str = config_setting_get_string(s);
        if (config_parse_duration(str, &v) != 0) {
            ld_err(ld, s, k->name,
                   "%s: bad duration (want seconds or a number with s, m, h or d, "
                   "like \"300\" or \"5m\")",
                   config_quote(str, q, sizeof(q)));
            return;
        }
    } else {
        ld_type_err(ld, s, k->name, "a duration (seconds, or a string like \"5m\")");
        return;
    }
    if (v < k->min) {
        ld_err(ld, s, k->name, "must be positive");
        return;
    }
    *FIELD(ld, k->off, int64_t) = v;
}

static void
key_int(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    int64_t v;

    if (!config_is_int(s)) {
        ld_type_err(ld, s, k->name, "an integer");
        return;
    }
    if (ld_int(ld, s, k->name, &v) != 0)
        return;
    if (v < k->min || v > INT_MAX) {
        ld_err(ld, s, k->name, "%lld: must be between %lld and %d", (long long)v, (long long)k->min,
               INT_MAX);
        return;
    }
    *FIELD(ld, k->off, int) = (int)v;
}

/* Sizes: an integer (with or without L) or a string of digits. */
static void
key_size(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    int64_t v = 0;
    char q[100];

    if (config_is_int(s)) {
        if (ld_int(ld, s, k->name, &v) != 0)
            return;
    } else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        const char *p = config_setting_get_string(s);
        int overflow = 0;
        if (*p == '\0')
            overflow = -1;
        for (; *p != '\0' && overflow == 0; p++) {
            if (!config_is_digit(*p))
                overflow = -1;
            else if (v > (INT64_MAX - (*p - '0')) / 10)
                overflow = 1;
            else
                v = v * 10 + (*p - '0');
        }
        if (overflow != 0) {
            ld_err(ld, s, k->name, "%s: %s",
                   config_quote(config_setting_get_string(s), q, sizeof(q)),
                   overflow > 0 ? "size out of range" : "want a number of bytes");
            return;
        }
    } else {
        ld_type_err(ld, s, k->name, "a size in bytes");
        return;
    }
    if (v < k->min) {
        ld_err(ld, s, k->name, "must be positive");
        return;
    }
    *FIELD(ld, k->off, uint64_t) = (uint64_t)v;
}

static void
key_bool(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
        ld_type_err(ld, s, k->name, "true or false");
        return;
    }
    *FIELD(ld, k->off, bool) = config_setting_get_bool(s) != 0;
}

static void
key_enum(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    char q[100], want[200] = "";
    const char *v;
    int value;

    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        ld_type_err(ld, s, k->name, "a string");
        return;
    }
    v = config_setting_get_string(s);
    for (const struct config_enum *e = k->names; e->name != NULL; e++) {
        if (strcmp(v, e->name) == 0) {
            value = e->value;
            /* The enum fields are int-sized (checked below), set by memcpy so
             * no enum object is written through an int lvalue. */
            memcpy(FIELD(ld, k->off, char), &value, sizeof(value));
            return;
        }
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s\"%s\"",
                 e == k->names ? "" : (e[1].name == NULL ? " or " : ", "), e->name);
    }
    ld_err(ld, s, k->name, "%s: want %s", config_quote(v, q, sizeof(q)), want);
}

_Static_assert(sizeof(enum mx2_tls_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum mx2_bare_newline) == sizeof(int), "enum size");
_Static_assert(sizeof(enum mx2_log_kind) == sizeof(int), "enum size");

/* A list key: an array or list of strings, or one string. Returns the number
 * of elements, or -1 after reporting a wrong type. */
static int
ld_list(struct config_loader *ld, const config_setting_t *s, const char *key)
{
    int t = config_setting_type(s);

    if (t == CONFIG_TYPE_STRING)
        return 1;
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
        ld_type_err(ld, s, key, "a list of strings [ \"...\", ... ]");
        return -1;
    }
    return config_setting_length(s);
}

/* Element i as a string, or NULL after reporting a wrong type. */
static const char *
ld_list_str(struct config_loader *ld, const config_setting_t *s, int i, const char *key,
            const config_setting_t **elem)
{
    const config_setting_t *e = s;

    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        e = config_setting_get_elem(s, (unsigned)i);
    *elem = e;
    if (e == NULL)
        return NULL;
    if (config_setting_type(e) != CONFIG_TYPE_STRING) {
        ld_err(ld, e, key, "wrong type in list: want a string, got %s", config_type_name(e));
        return NULL;
    }
    return config_setting_get_string(e);
}

static int
config_hp_is_ip(const struct mx2_hostport *hp)
{
    return config_is_ip(hp->host, AF_INET) || config_is_ip(hp->host, AF_INET6);
}

static int
config_hp_equal(const struct mx2_hostport *a, const struct mx2_hostport *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* One address: reports and returns -1 when bad. */
static int
ld_hostport(struct config_loader *ld, const config_setting_t *e, const struct config_key *k,
            const char *v, struct mx2_hostport *hp)
{
    char q[100];
    const char *why;

    if (config_hostport(v, (uint16_t)k->min, hp, &why) != 0) {
        ld_err(ld, e, k->name, "%s: bad address: %s", config_quote(v, q, sizeof(q)), why);
        return -1;
    }
    if ((k->flags & KF_IP_ONLY) && !config_hp_is_ip(hp)) {
        ld_err(ld, e, k->name, "%s: must be an IP address to listen on",
               config_quote(v, q, sizeof(q)));
        return -1;
    }
    return 0;
}

static void
key_hostport_list(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    int n = ld_list(ld, s, k->name), bad = 0;
    struct mx2_hostport *v;
    size_t count = 0;

    if (n < 0)
        return;
    v = xcalloc((size_t)n + 1, sizeof(*v));
    for (int i = 0; i < n; i++) {
        const config_setting_t *e;
        const char *str = ld_list_str(ld, s, i, k->name, &e);
        char q[100];
        if (str == NULL || ld_hostport(ld, e, k, str, &v[count]) != 0) {
            bad = 1;
            continue;
        }
        if (k->flags & KF_NO_DUPS) {
            size_t j;
            for (j = 0; j < count && !config_hp_equal(&v[j], &v[count]); j++)
                ;
            if (j < count) {
                ld_err(ld, e, k->name, "%s: listed twice", config_quote(str, q, sizeof(q)));
                bad = 1;
                continue;
            }
        }
        count++;
    }
    if (bad) {
        free(v);
        return;
    }
    free(*FIELD(ld, k->off, struct mx2_hostport *));
    *FIELD(ld, k->off, struct mx2_hostport *) = v;
    *FIELD(ld, k->off2, size_t) = count;
}

/* bounce_relay, http_listen: one address, "" = off. */
static void
key_hostport_opt(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    struct mx2_hostport hp;
    const char *v;

    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        ld_type_err(ld, s, k->name, "a string");
        return;
    }
    v = config_setting_get_string(s);
    if (*v == '\0') {
        *FIELD(ld, k->off2, bool) = false;
        return;
    }
    if (ld_hostport(ld, s, k, v, &hp) != 0)
        return;
    *FIELD(ld, k->off, struct mx2_hostport) = hp;
    *FIELD(ld, k->off2, bool) = true;
}

/* relay_domains (with k->check) and etrn_clients (k->check NULL: IPs). */
static void
key_strlist(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    int n = ld_list(ld, s, k->name), bad = 0;
    char **v;
    size_t count = 0;

    if (n < 0)
        return;
    v = xcalloc((size_t)n + 1, sizeof(*v));
    for (int i = 0; i < n; i++) {
        const config_setting_t *e;
        const char *str = ld_list_str(ld, s, i, k->name, &e), *why;
        char q[100], *item;
        if (str == NULL) {
            bad = 1;
            continue;
        }
        if (k->check != NULL) {
            item = xstrdup(str);
            if ((why = k->check(item)) != NULL) {
                ld_err(ld, e, k->name, "%s: %s", config_quote(str, q, sizeof(q)), why);
                free(item);
                bad = 1;
                continue;
            }
        } else {
            /* etrn_clients: stored in inet_ntop's canonical form, so the
             * session can compare it with the peer's formatted address. */
            unsigned char a[sizeof(struct in6_addr)];
            char buf[INET6_ADDRSTRLEN];
            int af = strchr(str, ':') != NULL ? AF_INET6 : AF_INET;
            if (inet_pton(af, str, a) != 1 || inet_ntop(af, a, buf, sizeof(buf)) == NULL) {
                ld_err(ld, e, k->name, "%s: not an IP address", config_quote(str, q, sizeof(q)));
                bad = 1;
                continue;
            }
            item = xstrdup(buf);
        }
        /* The same entry twice is harmless: keep one. */
        size_t j;
        for (j = 0; j < count && strcmp(v[j], item) != 0; j++)
            ;
        if (j < count)
            free(item);
        else
            v[count++] = item;
    }
    if (bad) {
        config_strv_free(v, count);
        return;
    }
    config_strv_free(*FIELD(ld, k->off, char **), *FIELD(ld, k->off2, size_t));
    *FIELD(ld, k->off, char **) = v;
    *FIELD(ld, k->off2, size_t) = count;
}

static void
key_auth(struct config_loader *ld, const config_setting_t *s, const struct config_key *k)
{
    int n;

    if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
        ld_type_err(ld, s, k->name, "a group { user = \"...\"; password_file = \"...\"; }");
        return;
    }
    n = config_setting_length(s);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *name = config_setting_name(e);
        char key[200];
        char **field;
        snprintf(key, sizeof(key), "%s.%s", k->name, name != NULL ? name : "?");
        if (name != NULL && strcmp(name, "user") == 0)
            field = &ld->cfg->primary_auth_user;
        else if (name != NULL && strcmp(name, "password_file") == 0)
            field = &ld->cfg->primary_auth_password_file;
        else {
            ld_err(ld, e, key, "unknown key (want user, password_file)");
            continue;
        }
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            ld_type_err(ld, e, key, "a string");
            continue;
        }
        ld_set_str(field, config_setting_get_string(e));
    }
}

static const struct config_enum tls_names[] = {
    {"none", MX2_TLS_NONE},
    {"may", MX2_TLS_MAY},
    {"encrypt", MX2_TLS_ENCRYPT},
    {"verify", MX2_TLS_VERIFY},
    {NULL, 0},
};
static const struct config_enum bare_names[] = {
    {"normalize", MX2_BARE_NORMALIZE}, {"reject", MX2_BARE_REJECT}, {NULL, 0}};
static const struct config_enum log_names[] = {
    {"stderr", MX2_LOG_STDERR}, {"syslog", MX2_LOG_SYSLOG}, {NULL, 0}};

#define OFF(f) offsetof(struct mx2_config, f)

/* Every key of SPEC.md "Configuration", in SPEC's order. */
static const struct config_key config_keys[] = {
    {"hostname", key_string, OFF(hostname), 0, 0, 0, check_hostname, NULL},
    {"listen", key_hostport_list, OFF(listen), OFF(listen_count), 25, KF_IP_ONLY | KF_NO_DUPS, NULL,
     NULL},
    {"relay_domains", key_strlist, OFF(relay_domains), OFF(relay_domains_count), 0, 0, check_domain,
     NULL},
    {"recipient_map", key_string, OFF(recipient_map), 0, 0, 0, NULL, NULL},
    {"recipient_delimiter", key_string, OFF(recipient_delimiter), 0, 0, 0, check_delimiter, NULL},
    {"primary", key_hostport_list, OFF(primary), OFF(primary_count), 25, 0, NULL, NULL},
    {"spool_dir", key_string, OFF(spool_dir), 0, 0, 0, NULL, NULL},
    {"queue_lifetime", key_duration, OFF(queue_lifetime), 0, 1, 0, NULL, NULL},
    {"retry_min", key_duration, OFF(retry_min), 0, 1, 0, NULL, NULL},
    {"retry_max", key_duration, OFF(retry_max), 0, 1, 0, NULL, NULL},
    {"probe_interval", key_duration, OFF(probe_interval), 0, 1, 0, NULL, NULL},
    {"primary_concurrency", key_int, OFF(primary_concurrency), 0, 1, 0, NULL, NULL},
    {"primary_tls", key_enum, OFF(primary_tls), 0, 0, 0, NULL, tls_names},
    {"primary_tls_ca", key_string, OFF(primary_tls_ca), 0, 0, 0, NULL, NULL},
    {"primary_auth", key_auth, 0, 0, 0, 0, NULL, NULL},
    {"bounce_relay", key_hostport_opt, OFF(bounce_relay), OFF(has_bounce_relay), 25, 0, NULL, NULL},
    {"max_message_size", key_size, OFF(max_message_size), 0, 1, 0, NULL, NULL},
    {"max_recipients", key_int, OFF(max_recipients), 0, 1, 0, NULL, NULL},
    {"max_connections", key_int, OFF(max_connections), 0, 1, 0, NULL, NULL},
    {"max_connections_per_ip", key_int, OFF(max_connections_per_ip), 0, 1, 0, NULL, NULL},
    {"smtp_timeout", key_duration, OFF(smtp_timeout), 0, 1, 0, NULL, NULL},
    {"connect_timeout", key_duration, OFF(connect_timeout), 0, 1, 0, NULL, NULL},
    {"bare_newline", key_enum, OFF(bare_newline), 0, 0, 0, NULL, bare_names},
    {"delay_warning", key_duration, OFF(delay_warning), 0, 0, 0, NULL, NULL},
    {"defer_when_primary_up", key_bool, OFF(defer_when_primary_up), 0, 0, 0, NULL, NULL},
    {"tls_cert", key_string, OFF(tls_cert), 0, 0, 0, NULL, NULL},
    {"tls_key", key_string, OFF(tls_key), 0, 0, 0, NULL, NULL},
    {"etrn_clients", key_strlist, OFF(etrn_clients), OFF(etrn_clients_count), 0, 0, NULL, NULL},
    {"control_socket", key_string, OFF(control_socket), 0, 0, 0, check_socket_path, NULL},
    {"http_listen", key_hostport_opt, OFF(http_listen), OFF(http_enabled), 0, KF_IP_ONLY, NULL,
     NULL},
    {"log", key_enum, OFF(log), 0, 0, 0, NULL, log_names},
    {"user", key_string, OFF(user), 0, 0, 0, NULL, NULL},
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))
_Static_assert(CONFIG_NKEYS <= CONFIG_KEY_SLOTS, "raise CONFIG_KEY_SLOTS");

static int
config_key_index(const char *name)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

/*
 * libconfig 1.5 acts on "@include" at the start of a line (after blanks).
 * Report each such line and blank it in our copy, so the rest still parses
 * and its problems are reported too.
 */
static void
config_refuse_includes(struct config_loader *ld, char *text)
{
    unsigned line = 1;

    for (char *p = text; *p != '\0'; line++) {
        char *q = p + strspn(p, " \t");
        char *eol = strchr(p, '\n');
        if (strncmp(q, "@include", 8) == 0) {
            config_errors_add(ld->errs, "%s:%u: @include: not supported (keep mx2.conf one file)",
                              ld->name, line);
            ld->nerr++;
            memset(q, ' ', eol != NULL ? (size_t)(eol - q) : strlen(q));
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
}

static void
config_begin(struct mx2_config *cfg, const char *name)
{
    if (cfg->hostname == NULL)
        config_defaults(cfg);
    free(cfg->path);
    cfg->path = xstrdup(name);
    memset(cfg->key_line, 0, sizeof(cfg->key_line));
    memset(cfg->key_refused, 0, sizeof(cfg->key_refused));
}

static int
config_load_text(const char *text, const char *name, struct mx2_config *cfg,
                 struct config_errors *errs)
{
    struct config_loader ld = {.name = name, .cfg = cfg, .errs = errs};
    size_t len = strlen(text);
    char *copy = xmalloc(len + 2);
    config_t lc;

    /* libconfig 1.5's scanner needs a newline to end a # or // comment: a
     * file whose last line is a comment without one would be a "syntax
     * error". A newline more changes no line number. */
    memcpy(copy, text, len);
    copy[len] = '\n';
    copy[len + 1] = '\0';

    config_refuse_includes(&ld, copy);
    ld.text = copy;
    config_init(&lc);
    if (config_read_string(&lc, copy) != CONFIG_TRUE) {
        const char *f = config_error_file(&lc);
        config_errors_add(errs, "%s:%d: %s", f != NULL ? f : name, config_error_line(&lc),
                          config_error_text(&lc) != NULL ? config_error_text(&lc) : "syntax error");
        ld.nerr++;
    } else {
        const config_setting_t *root = config_root_setting(&lc);
        int n = config_setting_length(root);
        for (int i = 0; i < n; i++) {
            const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
            const char *key = config_setting_name(s);
            int idx = key != NULL ? config_key_index(key) : -1;
            if (idx < 0) {
                ld_err(&ld, s, key != NULL ? key : "?", "unknown key");
                continue;
            }
            size_t nerr = ld.nerr;
            cfg->key_line[idx] = config_setting_source_line(s);
            config_keys[idx].parse(&ld, s, &config_keys[idx]);
            cfg->key_refused[idx] = ld.nerr != nerr;
        }
    }
    config_destroy(&lc);
    free(copy);
    return ld.nerr != 0 ? MX2_E_CONFIG : 0;
}

int
config_load_string(const char *text, const char *name, struct mx2_config *cfg,
                   struct config_errors *errs)
{
    config_begin(cfg, name);
    return config_load_text(text, name, cfg, errs);
}

int
config_load(const char *path, struct mx2_config *cfg, struct config_errors *errs)
{
    struct stat st;
    char *buf;
    size_t got;
    int fd, rc;

    config_begin(cfg, path);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
        rc = -errno;
        config_errors_add(errs, "%s: cannot open: %s", path, mx2_strerror(rc));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        config_errors_add(errs, "%s: cannot stat: %s", path, mx2_strerror(rc));
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        config_errors_add(errs, "%s: not a regular file", path);
        close(fd);
        return rc;
    }
    if (st.st_size > CONFIG_FILE_MAX) {
        config_errors_add(errs, "%s: file too large (more than %d bytes)", path, CONFIG_FILE_MAX);
        close(fd);
        return MX2_E_CONFIG;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    rc = fsio_read_all(fd, buf, (size_t)st.st_size, &got);
    close(fd);
    if (rc != 0) {
        config_errors_add(errs, "%s: cannot read: %s", path, mx2_strerror(rc));
        free(buf);
        return rc;
    }
    buf[got] = '\0';
    if (memchr(buf, '\0', got) != NULL) {
        config_errors_add(errs, "%s: contains a NUL byte (not a text file?)", path);
        free(buf);
        return MX2_E_CONFIG;
    }
    rc = config_load_text(buf, path, cfg, errs);
    free(buf);
    return rc;
}

bool
config_key_accepted(const struct mx2_config *cfg, const char *key)
{
    int idx = config_key_index(key);

    return idx >= 0 && cfg->key_line[idx] != 0 && !cfg->key_refused[idx];
}

/* ---- daemon checks --------------------------------------------------- */

static void chk_err(const struct mx2_config *cfg, struct config_errors *errs, const char *key,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "FILE:LINE: key: reason" when the key was set in the file, else
 * "FILE: key: reason" (the value is a default). */
static void
chk_err(const struct mx2_config *cfg, struct config_errors *errs, const char *key, const char *fmt,
        ...)
{
    char reason[512];
    const char *file = cfg->path != NULL ? cfg->path : "(defaults)";
    int idx = config_key_index(key);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (idx >= 0 && cfg->key_line[idx] != 0)
        config_errors_add(errs, "%s:%u: %s: %s", file, cfg->key_line[idx], key, reason);
    else
        config_errors_add(errs, "%s: %s: %s", file, key, reason);
}

/* Can this process open `path` as a regular file for reading? NULL or why
 * not. O_NONBLOCK: a FIFO planted at the path must not hang `mx2d -t`. */
static const char *
config_unreadable(const char *path, char *buf, size_t len)
{
    struct stat st;
    char q[300];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0) {
        snprintf(buf, len, "cannot read %s: %s", config_quote(path, q, sizeof(q)), strerror(errno));
        return buf;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(buf, len, "%s: not a regular file", config_quote(path, q, sizeof(q)));
        close(fd);
        return buf;
    }
    close(fd);
    return NULL;
}

static void
chk_file(const struct mx2_config *cfg, struct config_errors *errs, const char *key,
         const char *path)
{
    char buf[512];
    const char *why = config_unreadable(path, buf, sizeof(buf));

    if (why != NULL)
        chk_err(cfg, errs, key, "%s", why);
}

int
config_check_daemon(const struct mx2_config *cfg, struct config_errors *errs)
{
    size_t before = errs->count;

    if (cfg->relay_domains_count == 0)
        chk_err(cfg, errs, "relay_domains", "at least one domain is required");
    if (cfg->primary_count == 0)
        chk_err(cfg, errs, "primary", "at least one primary is required");
    if (cfg->listen_count == 0)
        chk_err(cfg, errs, "listen", "at least one address is required");
    if (cfg->spool_dir == NULL || cfg->spool_dir[0] == '\0')
        chk_err(cfg, errs, "spool_dir", "must not be empty");
    if (cfg->recipient_map == NULL || cfg->recipient_map[0] == '\0')
        chk_err(cfg, errs, "recipient_map", "must not be empty");
    if (cfg->control_socket == NULL || cfg->control_socket[0] == '\0')
        chk_err(cfg, errs, "control_socket", "must not be empty (mx2ctl talks to mx2d there)");

    /* Inbound STARTTLS: a certificate without its key (or the reverse) is a
     * half-done setup; refuse it rather than silently running without TLS. */
    if (cfg->tls_cert[0] != '\0' && cfg->tls_key[0] == '\0')
        chk_err(cfg, errs, "tls_key", "must be set when tls_cert is set");
    if (cfg->tls_key[0] != '\0' && cfg->tls_cert[0] == '\0')
        chk_err(cfg, errs, "tls_cert", "must be set when tls_key is set");
    if (cfg->tls_cert[0] != '\0')
        chk_file(cfg, errs, "tls_cert", cfg->tls_cert);
    if (cfg->tls_key[0] != '\0')
        chk_file(cfg, errs, "tls_key", cfg->tls_key);

    if (cfg->primary_tls == MX2_TLS_VERIFY && cfg->primary_tls_ca[0] == '\0')
        chk_err(cfg, errs, "primary_tls", "\"verify\" needs primary_tls_ca (a CA file)");
    if (cfg->primary_tls_ca[0] != '\0')
        chk_file(cfg, errs, "primary_tls_ca", cfg->primary_tls_ca);

    if (cfg->primary_auth_user[0] != '\0') {
        if (cfg->primary_auth_password_file[0] == '\0')
            chk_err(cfg, errs, "primary_auth", "user is set but password_file is empty");
        else
            chk_file(cfg, errs, "primary_auth", cfg->primary_auth_password_file);
    } else if (cfg->primary_auth_password_file[0] != '\0') {
        chk_err(cfg, errs, "primary_auth", "password_file is set but user is empty");
    }

    if (cfg->retry_min > cfg->retry_max)
        chk_err(cfg, errs, "retry_max", "%llds is shorter than retry_min (%llds)",
                (long long)cfg->retry_max, (long long)cfg->retry_min);
    if (cfg->delay_warning > 0 && cfg->delay_warning >= cfg->queue_lifetime)
        chk_err(cfg, errs, "delay_warning",
                "%llds is not shorter than queue_lifetime (%llds): it would never be sent",
                (long long)cfg->delay_warning, (long long)cfg->queue_lifetime);

    if (cfg->http_enabled) {
        for (size_t i = 0; i < cfg->listen_count; i++)
            if (config_hp_equal(&cfg->http_listen, &cfg->listen[i]))
                chk_err(cfg, errs, "http_listen", "same address as a listen entry");
    }

    /* Startup only, single-threaded: getpwnam's static buffer is fine. */
    if (cfg->user[0] != '\0' && getpwnam(cfg->user) == NULL) {
        char q[100];
        chk_err(cfg, errs, "user", "no such user: %s", config_quote(cfg->user, q, sizeof(q)));
    }

    return errs->count > before ? MX2_E_CONFIG : 0;
}
