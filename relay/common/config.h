/*
 * config.h - mx2.conf (libconfig syntax) -> struct mx2_config.
 *
 * One loader for all three programs (SPEC.md "Configuration"). Every key has
 * the default SPEC shows; config_defaults() fills them. config_load() reads a
 * file on top of the defaults and collects *every* problem (unknown key, bad
 * type, bad value) as "FILE:LINE: key: reason" lines in `errs`, so `mx2d -t`
 * can print them all at once.
 *
 * Ownership: the struct owns every string/array in it; config_free() releases
 * them (and is a no-op on a zeroed or already-freed struct). Not thread-safe
 * while loading; read-only afterwards, so any thread may read it.
 *
 * Durations are stored in seconds; sizes in bytes.
 */
#ifndef MX2_CONFIG_H
#define MX2_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MX2_DEFAULT_CONFIG "/etc/mx2/mx2.conf"

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
    char **etrn_clients;              /* IP address strings */
    size_t etrn_clients_count;
    char *control_socket;             /* /run/mx2/control.sock */
    struct mx2_hostport http_listen;  /* valid when http_enabled */
    bool http_enabled;                /* default true, 127.0.0.1:8025 */
    enum mx2_log_kind log;            /* stderr */
    char *user;                       /* "" = do not drop privileges */
};

/* Collected problems, one line each ("FILE:LINE: key: reason"). */
struct config_errors {
    char **lines;
    size_t count;
};

/* Fill every field with SPEC's defaults (allocates; config_free releases). */
void config_defaults(struct mx2_config *cfg);

/* Load `path` over the defaults. Returns 0, MX2_E_CONFIG when any problem was
 * found (all of them are in errs), or -errno when the file cannot be read
 * (also described in errs). On error cfg still holds defaults plus the
 * values that were valid, and must be freed. */
int config_load(const char *path, struct mx2_config *cfg, struct config_errors *errs);

/* Checks that only mx2d needs (relay_domains and primary non-empty, tls_cert
 * and tls_key both or neither, files readable, ...). Appends to errs; returns
 * 0 or MX2_E_CONFIG. */
int config_check_daemon(const struct mx2_config *cfg, struct config_errors *errs);

void config_free(struct mx2_config *cfg);
void config_errors_free(struct config_errors *errs);

/* Value parsers, pure (exposed for the unit tests and fuzz targets). */

/* "300", "300s", "5m", "70m", "4h", "5d" -> seconds. 0 or MX2_E_INVAL. */
int config_parse_duration(const char *s, int64_t *out);
/* "host:port", "[host]:port", "[::1]:25", "host", "[host]". A bare IPv6
 * address without brackets is refused (ambiguous). Port 1..65535.
 * 0 or MX2_E_INVAL. */
int config_parse_hostport(const char *s, uint16_t default_port, struct mx2_hostport *out);
/* Format back as the canonical "[host]:port" or "host:port". */
void config_format_hostport(const struct mx2_hostport *hp, char *buf, size_t len);

#endif
