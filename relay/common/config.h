/*
 * config.h - mx2.conf (libconfig syntax) -> struct mx2_config.
 *
 * One loader for all three programs (SPEC.md "Configuration"). Every key has
 * the default SPEC shows; config_defaults() fills them. config_load() reads a
 * file on top of the defaults and collects *every* problem (unknown key, bad
 * type, bad value) as "FILE:LINE: key: reason" lines in `errs`, so `mx2d -t`
 * can print them all at once. config_check_daemon() adds what only mx2d needs
 * (a relay domain, a primary, readable TLS files, ...); it does not open the
 * recipient map: main.c does that and may append its own line with
 * config_errors_add().
 *
 * Callers: main() of mx2d, mx2map and mx2ctl, once at startup; the unit tests
 * and the fuzz target. Not thread-safe while loading; read-only afterwards, so
 * any thread may read the struct.
 *
 * Ownership: the struct owns every string/array in it; config_free() releases
 * them and zeroes the struct (so it is a no-op on a zeroed or already-freed
 * struct). struct config_errors owns its lines; config_errors_free() likewise.
 * Both structs may start zeroed (`= {0}`).
 *
 * Errors: 0, MX2_E_CONFIG (problems found, all described in errs), MX2_E_INVAL
 * (pure parsers), or -errno when the file cannot be read (also in errs).
 * libconfig's own codes never leave config.c.
 *
 * Syntax notes (decisions where SPEC is silent):
 * - Durations are stored in seconds, sizes in bytes. A duration is a libconfig
 *   integer (seconds) or a string "N" / "Ns" / "Nm" / "Nh" / "Nd", at most
 *   CONFIG_DURATION_MAX, so callers may multiply by 1000 without overflow.
 * - libconfig 1.5 silently wraps an integer literal above 2^31 that lacks the
 *   L suffix; config.c re-reads such literals from the text, so
 *   `max_message_size = 52428800000;` means what it says, and a literal that
 *   does not fit in 64 bits is an error, never a wrapped value.
 * - List keys (listen, relay_domains, primary, etrn_clients) take a libconfig
 *   array [ ] or list ( ) of strings; a single string is taken as a one-element
 *   list.
 * - listen and http_listen must name IP addresses (they are bind addresses);
 *   primary and bounce_relay may name hosts. "[host]" means "no MX lookup".
 * - @include is refused: every FILE:LINE then points into the one file given.
 */
#ifndef MX2_CONFIG_H
#define MX2_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MX2_DEFAULT_CONFIG "/etc/mx2/mx2.conf"

/* Longest duration accepted: 100 years, in seconds. */
#define CONFIG_DURATION_MAX ((int64_t)100 * 365 * 24 * 3600)

/* Largest config file read (a sane mx2.conf is a few KiB). */
#define CONFIG_FILE_MAX (1024 * 1024)

/* Size of mx2_config.key_line: at least the number of known keys. */
#define CONFIG_KEY_SLOTS 40

/* "host:port", "[host]:port", "[::1]:25", "[198.51.100.1]" */
struct mx2_hostport {
    char host[256];   /* without brackets; an IPv6 literal is stored bare */
    uint16_t port;    /* the default port when none was written */
    bool bracketed;   /* written as [host]: no MX lookup (Postfix convention) */
};

enum mx2_tls_mode { MX2_TLS_NONE = 0, MX2_TLS_MAY, MX2_TLS_ENCRYPT, MX2_TLS_VERIFY };
enum mx2_bare_newline { MX2_BARE_NORMALIZE = 0, MX2_BARE_REJECT };
enum mx2_log_kind { MX2_LOG_STDERR = 0, MX2_LOG_SYSLOG };

struct mx2_config {
    char *path;                       /* file this was loaded from, or NULL */
    char *hostname;                   /* default: the system's host name */
    struct mx2_hostport *listen;      /* default 0.0.0.0:25 and [::]:25 */
    size_t listen_count;
    char **relay_domains;             /* lower-cased, no trailing dot */
    size_t relay_domains_count;
    char *recipient_map;              /* default /var/lib/mx2/recipients.mdb */
    char *recipient_delimiter;        /* default "+"; "" disables */
    struct mx2_hostport *primary;     /* tried in order; default port 25 */
    size_t primary_count;
    char *spool_dir;                  /* default /var/spool/mx2 */
    int64_t queue_lifetime;           /* seconds; default 5d */
    int64_t retry_min;                /* 5m */
    int64_t retry_max;                /* 70m */
    int64_t probe_interval;           /* 1m */
    int primary_concurrency;          /* 10 */
    enum mx2_tls_mode primary_tls;    /* may */
    char *primary_tls_ca;             /* "" */
    char *primary_auth_user;          /* "" = no AUTH */
    char *primary_auth_password_file; /* "" */
    struct mx2_hostport bounce_relay; /* valid when has_bounce_relay */
    bool has_bounce_relay;            /* false: MX of the sender's domain */
    uint64_t max_message_size;        /* 52428800 */
    int max_recipients;               /* 1000 */
    int max_connections;              /* 1000 */
    int max_connections_per_ip;       /* 20 */
    int64_t smtp_timeout;             /* 5m */
    int64_t connect_timeout;          /* 10s */
    enum mx2_bare_newline bare_newline; /* normalize */
    int64_t delay_warning;            /* 0 = off */
    bool defer_when_primary_up;       /* false */
    char *tls_cert;                   /* "" */
    char *tls_key;                    /* "" */
    char **etrn_clients;              /* IP addresses, canonical inet_ntop form */
    size_t etrn_clients_count;
    char *control_socket;             /* /run/mx2/control.sock */
    struct mx2_hostport http_listen;  /* valid when http_enabled */
    bool http_enabled;                /* default true, 127.0.0.1:8025 */
    enum mx2_log_kind log;            /* stderr */
    char *user;                       /* "" = do not drop privileges */

    /* Private to config.c: the line each key was set on in `path` (0 = not
     * set), so config_check_daemon() can name it; and whether the value set
     * there was refused (the field then holds the default). */
    unsigned key_line[CONFIG_KEY_SLOTS];
    bool key_refused[CONFIG_KEY_SLOTS];
};

/* Collected problems, one line each ("FILE:LINE: key: reason"), no newline. */
struct config_errors {
    char **lines;
    size_t count;
};

/* Fill every field with SPEC's defaults (allocates; config_free releases).
 * Overwrites cfg without freeing: pass a zeroed or freed struct. */
void config_defaults(struct mx2_config *cfg);

/* Whether the last load set `key` in its file and accepted the value: what
 * `mx2d -t` still checks (the map opens, the TLS pair loads) when other keys
 * were refused, so that it reports every problem at once. */
bool config_key_accepted(const struct mx2_config *cfg, const char *key);

/* Load `path` over what cfg holds: cfg must be zeroed (it then gets
 * config_defaults() first) or hold config_defaults() / an earlier load.
 * Returns 0, MX2_E_CONFIG when any problem was found (all of them are in
 * errs), or -errno when the file cannot be read (also described in errs).
 * On error cfg still holds defaults plus the values that were valid, and must
 * be freed. */
int config_load(const char *path, struct mx2_config *cfg, struct config_errors *errs);

/* The same from a NUL-terminated text; `name` stands for FILE in messages.
 * Returns 0 or MX2_E_CONFIG. */
int config_load_string(const char *text, const char *name, struct mx2_config *cfg,
                       struct config_errors *errs);

/* Checks that only mx2d needs (relay_domains, primary and listen non-empty,
 * tls_cert and tls_key both or neither and readable, primary_tls "verify"
 * has a readable CA, retry_min <= retry_max, AUTH password file readable,
 * user exists, ...). Does not open the recipient map. Appends to errs;
 * returns 0 or MX2_E_CONFIG. */
int config_check_daemon(const struct mx2_config *cfg, struct config_errors *errs);

void config_free(struct mx2_config *cfg);
void config_errors_free(struct config_errors *errs);

/* Append one formatted line (no trailing newline) to errs, e.g. main.c's
 * "FILE: recipient_map: cannot open ...: ...". */
void config_errors_add(struct config_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Value parsers, pure (exposed for the unit tests and fuzz targets). */

/* "300", "300s", "5m", "70m", "4h", "5d", "0" -> seconds, at most
 * CONFIG_DURATION_MAX. No sign, no spaces, one lower-case unit at most.
 * 0 or MX2_E_INVAL. */
int config_parse_duration(const char *s, int64_t *out);
/* "host:port", "[host]:port", "[::1]:25", "host", "[host]". A bare IPv6
 * address without brackets is refused (ambiguous). Port 1..65535, digits
 * only. default_port 0 means a port must be written. host is an IPv4
 * address, a host name, or (in brackets only) an IPv6 address.
 * 0 or MX2_E_INVAL (out is then unspecified). */
int config_parse_hostport(const char *s, uint16_t default_port, struct mx2_hostport *out);
/* Format back as the canonical "[host]:port" or "host:port" (brackets when
 * bracketed or IPv6). Truncates to len (always NUL-terminated when len > 0). */
void config_format_hostport(const struct mx2_hostport *hp, char *buf, size_t len);

#endif
