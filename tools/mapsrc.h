/*
 * mapsrc.h - pure parsers for mx2map's sources: passwd, aliases, plain lists.
 *
 * Purpose. Turn the text an operator has (`getent passwd`, /etc/aliases, a
 * Postfix-style `user@example.jp x` list) into recipient names for the map
 * (SPEC.md "mx2map"; the classic Postfix backup-MX recipe builds
 * relay_recipient_maps from exactly these). Nothing here opens files or
 * touches the map: input comes from a FILE* the caller opened or from a
 * buffer, output goes to the caller's callbacks. mx2map.c does the I/O and
 * appends domains.
 *
 * Callers: mx2map (main thread), unit tests, fuzz targets. Reentrant; no
 * global state.
 *
 * Output. Every accepted name goes to sink->name() as a NUL-terminated,
 * ASCII lower-cased string, already checked with rcptmap_check_local() /
 * rcptmap_check_domain() (so it holds no whitespace, control bytes or routing
 * characters):
 *   - passwd and aliases: a bare local part ("alice");
 *   - list: "alice", "alice@example.jp" or "@example.jp" (catch-all).
 * Strings are borrowed for the duration of the call.
 *
 * Bad lines are never fatal: each goes to sink->bad(file, line, reason)
 * (mx2map prints "FILE:LINE: reason") and is skipped. Lines may be any length
 * and hold any bytes (a NUL byte makes the line bad).
 *
 * Errors: the parse functions return 0, or -errno when reading the FILE*
 * failed (names already delivered stay delivered).
 */
#ifndef MX2_MAPSRC_H
#define MX2_MAPSRC_H

#include <stddef.h>
#include <stdio.h>

struct mapsrc_sink {
    void (*name)(void *arg, const char *name);
    void (*bad)(void *arg, const char *file, unsigned long line, const char *reason);
    void *arg;
};

/* passwd filter. exclude: names never taken (compared case-insensitively). */
struct mapsrc_passwd_opts {
    unsigned long min_uid; /* accounts below are skipped; mx2map default 1000 */
    const char *const *exclude;
    size_t exclude_count;
};

/* What the passwd parser did, by reason. Each account line lands in exactly
 * one of accounts / skipped_* / bad_lines. */
struct mapsrc_passwd_stats {
    size_t accounts;         /* names delivered */
    size_t skipped_uid;      /* uid < min_uid */
    size_t skipped_system;   /* nobody, root, daemon, systemd-*, _apt ... */
    size_t skipped_shell;    /* shell ends in nologin or false */
    size_t skipped_excluded; /* in opts->exclude */
    size_t bad_lines;        /* reported through sink->bad */
};

struct mapsrc_aliases_stats {
    size_t names;     /* names delivered */
    size_t bad_lines; /* reported (includes empty right-hand sides) */
};

struct mapsrc_list_stats {
    size_t locals;    /* "user" entries */
    size_t addresses; /* "user@domain" entries */
    size_t catchalls; /* "@domain" entries */
    size_t bad_lines;
};

/* passwd(5) / `getent passwd`: name:pw:uid:gid:gecos:home:shell. */
int mapsrc_passwd_file(FILE *f, const char *fname, const struct mapsrc_passwd_opts *opts,
                       const struct mapsrc_sink *sink, struct mapsrc_passwd_stats *st);
int mapsrc_passwd_buf(const char *buf, size_t len, const char *fname,
                      const struct mapsrc_passwd_opts *opts, const struct mapsrc_sink *sink,
                      struct mapsrc_passwd_stats *st);

/* aliases(5): "name: value, value"; lines starting with whitespace continue
 * the previous entry; lines whose first non-blank is '#' and blank lines are
 * ignored; "quoted name": allowed; right-hand sides (":include:/path",
 * "|command", "/file") are not followed, but an empty one is reported and the
 * name skipped (it would bounce at the primary). */
int mapsrc_aliases_file(FILE *f, const char *fname, const struct mapsrc_sink *sink,
                        struct mapsrc_aliases_stats *st);
int mapsrc_aliases_buf(const char *buf, size_t len, const char *fname,
                       const struct mapsrc_sink *sink, struct mapsrc_aliases_stats *st);

/* Plain list: the first whitespace-separated column of each line is "user",
 * "user@domain" or "@domain"; further columns are ignored; blank lines and
 * lines whose first non-blank is '#' are ignored. */
int mapsrc_list_file(FILE *f, const char *fname, const struct mapsrc_sink *sink,
                     struct mapsrc_list_stats *st);
int mapsrc_list_buf(const char *buf, size_t len, const char *fname, const struct mapsrc_sink *sink,
                    struct mapsrc_list_stats *st);

/* 1 if `name` is a system account that never receives mail from outside
 * (root, daemon, nobody, systemd-*, names starting with '_' or ending with
 * '$', ...), whatever its uid. Case-insensitive. */
int mapsrc_is_system_account(const char *name);

/* 1 if `shell` denies logins: its last path component ends in "nologin" or
 * is "false". An empty shell means /bin/sh (passwd(5)) and is a login shell. */
int mapsrc_is_nologin_shell(const char *shell);

#endif
