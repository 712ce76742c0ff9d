/*
 * mapsrc.c - passwd / aliases / list parsers for mx2map (see mapsrc.h).
 *
 * Why so strict about names. The map decides what the backup MX accepts, and
 * the primary usually trusts mx2 (it is in its mynetworks). A name holding
 * '%', '!', '@' or ':' could turn into a relay path at the primary, so every
 * name is checked with rcptmap_check_local()/rcptmap_check_domain(), the same
 * rules the map applies at lookup time, and refused names are reported, never
 * silently mangled into something else.
 *
 * Why skip rather than stop on a bad line. The typical input is piped from
 * another machine (`ssh primary getent passwd | mx2map build --passwd -`);
 * one odd line must not keep every valid user out of the map. Each bad line
 * is reported with its file and line so the operator can fix it.
 */
#include "mapsrc.h"

#include "rcptmap.h"
#include "xalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ line input */

struct mapsrc_reader {
    FILE *f;
    const char *buf;
    size_t len, pos;
    char *line; /* getline buffer */
    size_t cap;
    unsigned long lineno;
};

/* Next physical line without its "\n" / "\r\n". 1 = line, 0 = EOF,
 * -errno = read error. */
static int
mapsrc_next(struct mapsrc_reader *r, const char **p, size_t *n)
{
    size_t len;

    if (r->f != NULL) {
        ssize_t got;
        errno = 0;
        got = getline(&r->line, &r->cap, r->f);
        if (got < 0)
            return ferror(r->f) ? (errno ? -errno : -EIO) : 0;
        *p = r->line;
        len = (size_t)got;
    } else {
        const char *nl;
        if (r->pos >= r->len)
            return 0;
        *p = r->buf + r->pos;
        nl = memchr(*p, '\n', r->len - r->pos);
        len = nl != NULL ? (size_t)(nl - *p) + 1 : r->len - r->pos;
        r->pos += len;
    }
    if (len > 0 && (*p)[len - 1] == '\n')
        len--;
    if (len > 0 && (*p)[len - 1] == '\r')
        len--;
    *n = len;
    r->lineno++;
    return 1;
}

static void
mapsrc_reader_done(struct mapsrc_reader *r)
{
    free(r->line);
    r->line = NULL;
}

/* ------------------------------------------------------------- helpers */

static int
mapsrc_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

static void mapsrc_bad(const struct mapsrc_sink *sink, const char *file, unsigned long line,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
mapsrc_bad(const struct mapsrc_sink *sink, const char *file, unsigned long line, const char *fmt,
           ...)
{
    char reason[256];
    va_list ap;

    if (sink == NULL || sink->bad == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    sink->bad(sink->arg, file != NULL ? file : "-", line, reason);
}

/* A printable, bounded copy of untrusted bytes for a report line, so that a
 * hostile input cannot put escape sequences on the operator's terminal. */
static const char *
mapsrc_show(char *out, size_t outsize, const char *s, size_t n)
{
    size_t w = 0;

    for (size_t i = 0; i < n && w + 4 < outsize; i++) {
        unsigned char c = (unsigned char)s[i];
        out[w++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (n > 0 && w + 4 >= outsize) {
        memcpy(out + w, "...", 3);
        w += 3;
    }
    out[w] = '\0';
    return out;
}

static void
mapsrc_emit(const struct mapsrc_sink *sink, const char *s, size_t n)
{
    char name[RCPTMAP_KEY_MAX];

    if (n >= sizeof(name))
        return; /* cannot happen: callers checked the length */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        name[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    name[n] = '\0';
    if (sink != NULL && sink->name != NULL)
        sink->name(sink->arg, name);
}

/* --------------------------------------------------------------- passwd */

/* Accounts that exist for daemons, never for people, on Debian, Red Hat and
 * the BSDs. They are refused whatever their uid: some distributions give
 * daemons high uids, and `nobody` is 65534 everywhere. */
/* clang-format off */
static const char *const mapsrc_system_names[] = {
    "root", "toor", "bin", "daemon", "sys", "adm", "lp", "sync", "shutdown", "halt", "mail",
    "news", "uucp", "operator", "games", "gopher", "ftp", "man", "proxy", "www-data", "www",
    "backup", "list", "irc", "gnats", "nobody", "nfsnobody", "nogroup", "messagebus", "dbus",
    "sshd", "postfix", "exim", "debian-exim", "smmsp", "mailnull", "dovecot", "dovenull",
    "opendkim", "opendmarc", "clamav", "amavis", "spamd", "debian-spamd", "mx2", "polkitd",
    "avahi", "avahi-autoipd", "ntp", "chrony", "rpc", "rpcuser", "statd", "tss", "tcpdump",
    "dnsmasq", "uuidd", "usbmux", "syslog", "colord", "pulse", "rtkit", "geoclue", "saned",
    "lightdm", "gdm", "sddm", "nm-openvpn", "nm-openconnect", "tftp", "bind", "named", "unbound",
    "nginx", "apache", "httpd", "mysql", "postgres", "redis", "memcached", "ldap", "openldap",
    "sssd", "nslcd", "nscd", "landscape", "pollinate", "lxd", "cockpit-ws", "cockpit-wsinstance",
    "libvirt-qemu", "libvirt-dnsmasq", "qemu", "kvm", "vcsa", "abrt", "setroubleshoot", "sslh",
    "stunnel4", "haproxy", "squid", "ntpsec", "fwupd-refresh", "speech-dispatcher", "hplip",
    "kernoops", "whoopsie", "cups-pk-helper", "sane", "Debian-snmp", "snmp", "zabbix", "nagios",
    "prometheus", "node-exporter", "grafana", "docker", "containerd", "vboxadd",
};
/* clang-format on */

int
mapsrc_is_system_account(const char *name)
{
    size_t n;

    if (name == NULL || *name == '\0')
        return 0;
    n = strlen(name);
    /* systemd-network, systemd-resolve ...; _apt, _chrony, _rpc (the leading
     * underscore is Debian's and macOS's mark for system users); "host$" is
     * a Samba machine account, with a uid in the user range. */
    if (strncasecmp(name, "systemd-", 8) == 0 || name[0] == '_' || name[n - 1] == '$')
        return 1;
    for (size_t i = 0; i < sizeof(mapsrc_system_names) / sizeof(mapsrc_system_names[0]); i++)
        if (strcasecmp(name, mapsrc_system_names[i]) == 0)
            return 1;
    return 0;
}

int
mapsrc_is_nologin_shell(const char *shell)
{
    const char *base;
    size_t n;

    if (shell == NULL || *shell == '\0')
        return 0;
    base = strrchr(shell, '/');
    base = base != NULL ? base + 1 : shell;
    n = strlen(base);
    /* /usr/sbin/nologin, /sbin/nologin, /bin/false, /usr/bin/false; also
     * FreeBSD's /usr/sbin/nologin and any site "*nologin" wrapper. */
    return strcmp(base, "false") == 0 || (n >= 7 && strcmp(base + n - 7, "nologin") == 0);
}

static int
mapsrc_excluded(const struct mapsrc_passwd_opts *o, const char *name)
{
    if (o == NULL)
        return 0;
    for (size_t i = 0; i < o->exclude_count; i++)
        if (o->exclude[i] != NULL && strcasecmp(o->exclude[i], name) == 0)
            return 1;
    return 0;
}

static void
mapsrc_passwd_line(const char *p, size_t n, const char *file, unsigned long lineno,
                   const struct mapsrc_passwd_opts *o, const struct mapsrc_sink *sink,
                   struct mapsrc_passwd_stats *st)
{
    const char *field[7];
    size_t flen[7], nf = 0, start = 0, i = 0;
    char name[RCPTMAP_LOCAL_MAX + 1], shell[4096], show[80];
    unsigned long long uid = 0;
    unsigned long min_uid = o != NULL ? o->min_uid : 1000;
    const char *why = NULL;

    while (i < n && mapsrc_is_blank(p[i]))
        i++;
    if (i == n || p[i] == '#')
        return; /* blank or comment: not in passwd(5), but harmless */
    if (memchr(p, '\0', n) != NULL) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "NUL byte in line");
        return;
    }
    for (i = 0; i <= n; i++) {
        if (i == n || p[i] == ':') {
            if (nf < 7) {
                field[nf] = p + start;
                flen[nf] = i - start;
            }
            nf++;
            start = i + 1;
        }
    }
    if (p[0] == '+' || p[0] == '-') {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "NIS compat entry '%s' ignored",
                   mapsrc_show(show, sizeof(show), p, n));
        return;
    }
    if (nf != 7) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "expected 7 colon-separated fields, found %zu", nf);
        return;
    }
    if (rcptmap_check_local(field[0], flen[0], &why) != 0) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "account '%s': %s",
                   mapsrc_show(show, sizeof(show), field[0], flen[0]), why);
        return;
    }
    if (flen[2] == 0 || flen[2] > 10) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "bad uid '%s'",
                   mapsrc_show(show, sizeof(show), field[2], flen[2]));
        return;
    }
    for (i = 0; i < flen[2]; i++) {
        if (field[2][i] < '0' || field[2][i] > '9') {
            st->bad_lines++;
            mapsrc_bad(sink, file, lineno, "bad uid '%s'",
                       mapsrc_show(show, sizeof(show), field[2], flen[2]));
            return;
        }
        uid = uid * 10 + (unsigned)(field[2][i] - '0');
    }
    if (uid > UINT32_MAX) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "uid %llu out of range", uid);
        return;
    }
    memcpy(name, field[0], flen[0]);
    name[flen[0]] = '\0';
    {
        size_t sl = flen[6];
        while (sl > 0 && mapsrc_is_blank(field[6][sl - 1]))
            sl--;
        if (sl >= sizeof(shell))
            sl = sizeof(shell) - 1;
        memcpy(shell, field[6], sl);
        shell[sl] = '\0';
    }
    /* One reason per account, most common first, so the summary adds up. */
    if (uid < min_uid)
        st->skipped_uid++;
    else if (mapsrc_is_system_account(name))
        st->skipped_system++;
    else if (mapsrc_is_nologin_shell(shell))
        st->skipped_shell++;
    else if (mapsrc_excluded(o, name))
        st->skipped_excluded++;
    else {
        st->accounts++;
        mapsrc_emit(sink, name, flen[0]);
    }
}

static int
mapsrc_passwd_run(struct mapsrc_reader *r, const char *file, const struct mapsrc_passwd_opts *o,
                  const struct mapsrc_sink *sink, struct mapsrc_passwd_stats *st)
{
    struct mapsrc_passwd_stats dummy;
    const char *p = NULL;
    size_t n = 0;
    int rc;

    if (st == NULL)
        st = &dummy;
    memset(st, 0, sizeof(*st));
    while ((rc = mapsrc_next(r, &p, &n)) == 1)
        mapsrc_passwd_line(p, n, file, r->lineno, o, sink, st);
    mapsrc_reader_done(r);
    return rc;
}

int
mapsrc_passwd_file(FILE *f, const char *fname, const struct mapsrc_passwd_opts *opts,
                   const struct mapsrc_sink *sink, struct mapsrc_passwd_stats *st)
{
    struct mapsrc_reader r = {.f = f};

    return mapsrc_passwd_run(&r, fname, opts, sink, st);
}

int
mapsrc_passwd_buf(const char *buf, size_t len, const char *fname,
                  const struct mapsrc_passwd_opts *opts, const struct mapsrc_sink *sink,
                  struct mapsrc_passwd_stats *st)
{
    struct mapsrc_reader r = {.buf = buf, .len = buf != NULL ? len : 0};

    return mapsrc_passwd_run(&r, fname, opts, sink, st);
}

/* -------------------------------------------------------------- aliases */

/* One logical entry: its first line and every continuation line joined by a
 * space. */
struct mapsrc_entry {
    char *text;
    size_t len, cap;
    unsigned long lineno;
    int active;
};

static void
mapsrc_entry_append(struct mapsrc_entry *e, const char *p, size_t n)
{
    /* Written so that no sum can wrap: e->len < e->cap once text exists. */
    if (e->text == NULL || n >= e->cap - e->len) {
        e->cap = (e->len + n + 1) * 2;
        e->text = xrealloc(e->text, e->cap);
    }
    memcpy(e->text + e->len, p, n);
    e->len += n;
    e->text[e->len] = '\0';
}

static void
mapsrc_alias_entry(const struct mapsrc_entry *e, const char *file, const struct mapsrc_sink *sink,
                   struct mapsrc_aliases_stats *st)
{
    const char *p = e->text, *end = e->text + e->len, *colon;
    char name[RCPTMAP_LOCAL_MAX + 1], show[80];
    size_t nlen = 0;
    const char *why = NULL;
    int toolong = 0;

    if (memchr(p, '\0', e->len) != NULL) {
        st->bad_lines++;
        mapsrc_bad(sink, file, e->lineno, "NUL byte in line");
        return;
    }
    if (*p == '"') {
        /* "quoted name": backslash escapes the next character. */
        for (p++; p < end && *p != '"'; p++) {
            if (*p == '\\' && p + 1 < end)
                p++;
            if (nlen < RCPTMAP_LOCAL_MAX)
                name[nlen++] = *p;
            else
                toolong = 1;
        }
        if (p == end) {
            st->bad_lines++;
            mapsrc_bad(sink, file, e->lineno, "unterminated quoted name");
            return;
        }
        p++;
        while (p < end && mapsrc_is_blank(*p))
            p++;
        if (p == end || *p != ':') {
            st->bad_lines++;
            mapsrc_bad(sink, file, e->lineno, "missing ':' after quoted name");
            return;
        }
        colon = p;
    } else {
        const char *q;
        colon = memchr(p, ':', e->len);
        if (colon == NULL) {
            st->bad_lines++;
            mapsrc_bad(sink, file, e->lineno, "missing ':' in '%s'",
                       mapsrc_show(show, sizeof(show), p, e->len));
            return;
        }
        q = colon;
        while (q > p && mapsrc_is_blank(q[-1]))
            q--;
        if ((size_t)(q - p) > RCPTMAP_LOCAL_MAX)
            toolong = 1;
        else {
            nlen = (size_t)(q - p);
            memcpy(name, p, nlen);
        }
    }
    if (toolong) {
        st->bad_lines++;
        mapsrc_bad(sink, file, e->lineno, "alias name longer than 64 octets");
        return;
    }
    if (nlen == 0) {
        st->bad_lines++;
        mapsrc_bad(sink, file, e->lineno, "empty alias name");
        return;
    }
    if (rcptmap_check_local(name, nlen, &why) != 0) {
        st->bad_lines++;
        mapsrc_bad(sink, file, e->lineno, "alias '%s': %s",
                   mapsrc_show(show, sizeof(show), name, nlen), why);
        return;
    }
    /* The right-hand side is not interpreted (":include:" files are not
     * followed: only the name matters to the backup MX), but an empty one is
     * a broken alias that the primary would bounce. */
    for (p = colon + 1; p < end && (mapsrc_is_blank(*p) || *p == ','); p++)
        ;
    if (p == end) {
        st->bad_lines++;
        mapsrc_bad(sink, file, e->lineno, "alias '%s' has an empty right-hand side",
                   mapsrc_show(show, sizeof(show), name, nlen));
        return;
    }
    st->names++;
    mapsrc_emit(sink, name, nlen);
}

static int
mapsrc_aliases_run(struct mapsrc_reader *r, const char *file, const struct mapsrc_sink *sink,
                   struct mapsrc_aliases_stats *st)
{
    struct mapsrc_aliases_stats dummy;
    struct mapsrc_entry e = {0};
    const char *p = NULL;
    size_t n = 0, i;
    int rc;

    if (st == NULL)
        st = &dummy;
    memset(st, 0, sizeof(*st));
    while ((rc = mapsrc_next(r, &p, &n)) == 1) {
        for (i = 0; i < n && mapsrc_is_blank(p[i]); i++)
            ;
        /* aliases(5): blank lines and lines whose first non-blank is '#'
         * are ignored, and do not end the entry they sit in. */
        if (i == n || p[i] == '#')
            continue;
        if (i > 0) {
            if (!e.active) {
                st->bad_lines++;
                mapsrc_bad(sink, file, r->lineno, "continuation line without an entry before it");
                continue;
            }
            mapsrc_entry_append(&e, " ", 1);
            mapsrc_entry_append(&e, p + i, n - i);
            continue;
        }
        if (e.active)
            mapsrc_alias_entry(&e, file, sink, st);
        e.len = 0;
        e.lineno = r->lineno;
        e.active = 1;
        mapsrc_entry_append(&e, p, n);
    }
    if (e.active)
        mapsrc_alias_entry(&e, file, sink, st);
    free(e.text);
    mapsrc_reader_done(r);
    return rc;
}

int
mapsrc_aliases_file(FILE *f, const char *fname, const struct mapsrc_sink *sink,
                    struct mapsrc_aliases_stats *st)
{
    struct mapsrc_reader r = {.f = f};

    return mapsrc_aliases_run(&r, fname, sink, st);
}

int
mapsrc_aliases_buf(const char *buf, size_t len, const char *fname, const struct mapsrc_sink *sink,
                   struct mapsrc_aliases_stats *st)
{
    struct mapsrc_reader r = {.buf = buf, .len = buf != NULL ? len : 0};

    return mapsrc_aliases_run(&r, fname, sink, st);
}

/* ----------------------------------------------------------------- list */

static void
mapsrc_list_line(const char *p, size_t n, const char *file, unsigned long lineno,
                 const struct mapsrc_sink *sink, struct mapsrc_list_stats *st)
{
    char key[RCPTMAP_KEY_MAX], show[80];
    const char *tok, *at = NULL, *why = NULL;
    size_t i = 0, tlen;
    int k;

    while (i < n && mapsrc_is_blank(p[i]))
        i++;
    if (i == n || p[i] == '#')
        return;
    if (memchr(p, '\0', n) != NULL) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "NUL byte in line");
        return;
    }
    tok = p + i;
    while (i < n && !mapsrc_is_blank(p[i]))
        i++;
    tlen = (size_t)(p + i - tok);
    for (size_t j = 0; j < tlen; j++)
        if (tok[j] == '@')
            at = tok + j; /* the last '@' separates; any other is refused below */
    if (at == NULL) {
        if (rcptmap_check_local(tok, tlen, &why) != 0) {
            st->bad_lines++;
            mapsrc_bad(sink, file, lineno, "'%s': %s", mapsrc_show(show, sizeof(show), tok, tlen),
                       why);
            return;
        }
        st->locals++;
        mapsrc_emit(sink, tok, tlen);
        return;
    }
    k = rcptmap_normalize_key(tok, (size_t)(at - tok), at + 1, tlen - (size_t)(at - tok) - 1, key,
                              sizeof(key), &why);
    if (k < 0) {
        st->bad_lines++;
        mapsrc_bad(sink, file, lineno, "'%s': %s", mapsrc_show(show, sizeof(show), tok, tlen), why);
        return;
    }
    if (at == tok)
        st->catchalls++;
    else
        st->addresses++;
    if (sink != NULL && sink->name != NULL)
        sink->name(sink->arg, key);
}

static int
mapsrc_list_run(struct mapsrc_reader *r, const char *file, const struct mapsrc_sink *sink,
                struct mapsrc_list_stats *st)
{
    struct mapsrc_list_stats dummy;
    const char *p = NULL;
    size_t n = 0;
    int rc;

    if (st == NULL)
        st = &dummy;
    memset(st, 0, sizeof(*st));
    while ((rc = mapsrc_next(r, &p, &n)) == 1)
        mapsrc_list_line(p, n, file, r->lineno, sink, st);
    mapsrc_reader_done(r);
    return rc;
}

int
mapsrc_list_file(FILE *f, const char *fname, const struct mapsrc_sink *sink,
                 struct mapsrc_list_stats *st)
{
    struct mapsrc_reader r = {.f = f};

    return mapsrc_list_run(&r, fname, sink, st);
}

int
mapsrc_list_buf(const char *buf, size_t len, const char *fname, const struct mapsrc_sink *sink,
                struct mapsrc_list_stats *st)
{
    struct mapsrc_reader r = {.buf = buf, .len = buf != NULL ? len : 0};

    return mapsrc_list_run(&r, fname, sink, st);
}
