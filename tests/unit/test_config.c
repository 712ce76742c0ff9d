/*
 * test_config.c - the mx2.conf loader: value parsers (tables of good and bad
 * input), defaults against SPEC.md, loading whole files, error collection
 * ("FILE:LINE: key: reason", all problems at once), the daemon checks, and
 * drift checks: every key of SPEC.md's "Configuration" block and the shipped
 * etc/mx2.conf load with zero errors.
 *
 * Temp files live in one mkdtemp directory, removed at the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "err.h"

static char tmpdir[256];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "%s/mx2-test-config-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write text to tmpdir/name; returns the path (static buffer per call site
 * is not needed: callers copy or use it before the next call). */
static const char *
write_file(const char *name, const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Does errs hold a line that starts with prefix? */
static int
has_error(const struct config_errors *errs, const char *prefix)
{
    for (size_t i = 0; i < errs->count; i++)
        if (strncmp(errs->lines[i], prefix, strlen(prefix)) == 0)
            return 1;
    return 0;
}

static void
dump_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        fprintf(stderr, "  config error: %s\n", errs->lines[i]);
}

/* ---- pure parsers ------------------------------------------------------ */

static void
test_duration_table(void **state)
{
    static const struct {
        const char *in;
        int64_t want;
    } good[] = {
        {"0", 0},
        {"0s", 0},
        {"300", 300},
        {"300s", 300},
        {"5m", 300},
        {"70m", 4200},
        {"1m", 60},
        {"10s", 10},
        {"4h", 14400},
        {"5d", 432000},
        {"007", 7},
        {"36500d", 3153600000},
        {"3153600000", CONFIG_DURATION_MAX},
    };
    static const char *const bad[] = {
        "",
        "-5",
        "+5",
        "5x",
        "5 m",
        " 5",
        "5m ",
        "m",
        "5mm",
        "5M",
        "5S",
        "1.5h",
        "5w",
        "0x10",
        "5ms",
        "s5",
        "3153600001",
        "36501d",
        "52560001m",
        "99999999999999999999",
        "18446744073709551616",
        "9223372036854775807",
        "5d\n",
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t v = -1;
        if (config_parse_duration(good[i].in, &v) != 0)
            fail_msg("duration \"%s\" refused", good[i].in);
        if (v != good[i].want)
            fail_msg("duration \"%s\" = %lld, want %lld", good[i].in, (long long)v,
                     (long long)good[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 12345;
        if (config_parse_duration(bad[i], &v) != MX2_E_INVAL)
            fail_msg("bad duration \"%s\" accepted", bad[i]);
        assert_int_equal(v, 12345); /* untouched on error */
    }
    assert_int_equal(config_parse_duration(NULL, &(int64_t){0}), MX2_E_INVAL);
}

static void
test_hostport_table(void **state)
{
    static const struct {
        const char *in;
        uint16_t defport;
        const char *host;
        uint16_t port;
        int bracketed;
        const char *canon;
    } good[] = {
        {"0.0.0.0:25", 25, "0.0.0.0", 25, 0, "0.0.0.0:25"},
        {"[::]:25", 25, "::", 25, 1, "[::]:25"},
        {"[::1]:25", 25, "::1", 25, 1, "[::1]:25"},
        {"[::1]", 2525, "::1", 2525, 1, "[::1]:2525"},
        {"[198.51.100.1]", 25, "198.51.100.1", 25, 1, "[198.51.100.1]:25"},
        {"[198.51.100.1]:2525", 25, "198.51.100.1", 2525, 1, "[198.51.100.1]:2525"},
        {"198.51.100.1", 25, "198.51.100.1", 25, 0, "198.51.100.1:25"},
        {"mx.example.jp:587", 25, "mx.example.jp", 587, 0, "mx.example.jp:587"},
        {"example.jp", 25, "example.jp", 25, 0, "example.jp:25"},
        {"[primary-mail.example.jp]", 25, "primary-mail.example.jp", 25, 1,
         "[primary-mail.example.jp]:25"},
        {"localhost:65535", 25, "localhost", 65535, 0, "localhost:65535"},
        {"127.0.0.1:1", 0, "127.0.0.1", 1, 0, "127.0.0.1:1"},
        {"127.0.0.1:8025", 0, "127.0.0.1", 8025, 0, "127.0.0.1:8025"},
        {"[2001:db8::25]:00025", 25, "2001:db8::25", 25, 1, "[2001:db8::25]:25"},
        {"Mail-1.Example.JP:25", 25, "Mail-1.Example.JP", 25, 0, "Mail-1.Example.JP:25"},
    };
    static const struct {
        const char *in;
        uint16_t defport;
    } bad[] = {
        {"", 25},
        {":25", 25},
        {"[]:25", 25},
        {"[]", 25},
        {"host:0", 25},
        {"host:65536", 25},
        {"host:99999999", 25},
        {"host:", 25},
        {"host:2x", 25},
        {"host:-1", 25},
        {"host:+25", 25},
        {"host: 25", 25},
        {"host:25 ", 25},
        {"::1", 25},
        {"::1:25", 25},
        {"2001:db8::1", 25},
        {"[::1", 25},
        {"::1]:25", 25},
        {"[::1]]:25", 25},
        {"[[::1]]:25", 25},
        {"[::1]x", 25},
        {"[::1]:", 25},
        {"[::1]25", 25},
        {"[not:ipv6]:25", 25},
        {"ho st:25", 25},
        {"host..jp:25", 25},
        {"-host:25", 25},
        {"host-:25", 25},
        {"a_b:25", 25},
        {"1.2.3:25", 25},
        {"256.0.0.1:25", 25},
        {".example.jp", 25},
        {"example.jp.", 25},
        {"[1.2.3.4]:25x", 25},
        {"127.0.0.1", 0},
        {"[::1]", 0},
        {"host:25:25", 25},
        {"[fe80::1%eth0]:25", 25},
        {"h\r\nst:25", 25},
    };
    char longhost[400];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct mx2_hostport hp;
        char buf[300];
        if (config_parse_hostport(good[i].in, good[i].defport, &hp) != 0)
            fail_msg("address \"%s\" refused", good[i].in);
        assert_string_equal(hp.host, good[i].host);
        assert_int_equal(hp.port, good[i].port);
        assert_int_equal(hp.bracketed, good[i].bracketed);
        config_format_hostport(&hp, buf, sizeof(buf));
        assert_string_equal(buf, good[i].canon);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mx2_hostport hp;
        if (config_parse_hostport(bad[i].in, bad[i].defport, &hp) != MX2_E_INVAL)
            fail_msg("bad address \"%s\" (default port %u) accepted", bad[i].in,
                     (unsigned)bad[i].defport);
    }
    /* A 300-character host does not fit (names are at most 253). */
    memset(longhost, 'a', 300);
    strcpy(longhost + 300, ":25");
    assert_int_equal(config_parse_hostport(longhost, 25, &(struct mx2_hostport){0}), MX2_E_INVAL);
    assert_int_equal(config_parse_hostport(NULL, 25, &(struct mx2_hostport){0}), MX2_E_INVAL);

    /* Formatting truncates safely. */
    {
        struct mx2_hostport hp;
        char small[8];
        assert_int_equal(config_parse_hostport("mx.example.jp:2525", 25, &hp), 0);
        config_format_hostport(&hp, small, sizeof(small));
        assert_string_equal(small, "mx.exam");
    }
}

/* ---- defaults ---------------------------------------------------------- */

static void
test_defaults_match_spec(void **state)
{
    struct mx2_config cfg;
    char host[256] = "";
    char buf[300];

    config_defaults(&cfg);
    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        strcpy(host, "localhost");
    assert_string_equal(cfg.hostname, host);
    assert_int_equal(cfg.listen_count, 2);
    config_format_hostport(&cfg.listen[0], buf, sizeof(buf));
    assert_string_equal(buf, "0.0.0.0:25");
    config_format_hostport(&cfg.listen[1], buf, sizeof(buf));
    assert_string_equal(buf, "[::]:25");
    assert_int_equal(cfg.relay_domains_count, 0);
    assert_string_equal(cfg.recipient_map, "/var/lib/mx2/recipients.mdb");
    assert_string_equal(cfg.recipient_delimiter, "+");
    assert_int_equal(cfg.primary_count, 0);
    assert_string_equal(cfg.spool_dir, "/var/spool/mx2");
    assert_int_equal(cfg.queue_lifetime, 5 * 86400);
    assert_int_equal(cfg.retry_min, 300);
    assert_int_equal(cfg.retry_max, 4200);
    assert_int_equal(cfg.probe_interval, 60);
    assert_int_equal(cfg.primary_concurrency, 10);
    assert_int_equal(cfg.primary_tls, MX2_TLS_MAY);
    assert_string_equal(cfg.primary_tls_ca, "");
    assert_string_equal(cfg.primary_auth_user, "");
    assert_string_equal(cfg.primary_auth_password_file, "");
    assert_false(cfg.has_bounce_relay);
    assert_int_equal(cfg.max_message_size, 52428800);
    assert_int_equal(cfg.max_recipients, 1000);
    assert_int_equal(cfg.max_connections, 1000);
    assert_int_equal(cfg.max_connections_per_ip, 20);
    assert_int_equal(cfg.smtp_timeout, 300);
    assert_int_equal(cfg.connect_timeout, 10);
    assert_int_equal(cfg.bare_newline, MX2_BARE_NORMALIZE);
    assert_int_equal(cfg.delay_warning, 0);
    assert_false(cfg.defer_when_primary_up);
    assert_string_equal(cfg.tls_cert, "");
    assert_string_equal(cfg.tls_key, "");
    assert_int_equal(cfg.etrn_clients_count, 0);
    assert_string_equal(cfg.control_socket, "/run/mx2/control.sock");
    assert_true(cfg.http_enabled);
    config_format_hostport(&cfg.http_listen, buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.1:8025");
    assert_int_equal(cfg.log, MX2_LOG_STDERR);
    assert_string_equal(cfg.user, "");
    assert_null(cfg.path);
    config_free(&cfg);
    assert_null(cfg.hostname);
    config_free(&cfg); /* twice: no-op */
    config_free(NULL);
}

/* ---- whole files ------------------------------------------------------- */

static const char full_conf[] =
    "# every key, none at its default\n"
    "hostname = \"MX2.Example.NET.\";\n"
    "listen = [ \"127.0.0.1:2525\", \"[::1]:2525\", \"[198.51.100.7]\" ];\n"
    "relay_domains = [ \"Example.JP.\", \"example.org\", \"example.jp\" ];\n"
    "recipient_map = \"/srv/mx2/map.mdb\";\n"
    "recipient_delimiter = \"+-\";\n"
    "primary = ( \"[198.51.100.1]:2525\", \"mail.example.jp\" );\n"
    "spool_dir = \"/srv/mx2/spool\";\n"
    "queue_lifetime = 86400;\n"
    "retry_min = \"30s\";\n"
    "retry_max = 3600L;\n"
    "probe_interval = \"15\";\n"
    "primary_concurrency = 4;\n"
    "primary_tls = \"verify\";\n"
    "primary_tls_ca = \"/etc/ssl/certs/ca.pem\";\n"
    "primary_auth = { user = \"mx2\"; password_file = \"/etc/mx2/auth\"; };\n"
    "bounce_relay = \"[192.0.2.9]:2526\";\n"
    "max_message_size = 52428800000;   # above 2^31, no L suffix\n"
    "max_recipients = 100;\n"
    "max_connections = 50;\n"
    "max_connections_per_ip = 5;\n"
    "smtp_timeout = \"2m\";\n"
    "connect_timeout = 3;\n"
    "bare_newline = \"reject\";\n"
    "delay_warning = \"4h\";\n"
    "defer_when_primary_up = true;\n"
    "tls_cert = \"/etc/mx2/cert.pem\";\n"
    "tls_key = \"/etc/mx2/key.pem\";\n"
    "etrn_clients = [ \"198.51.100.1\", \"2001:DB8:0::0:1\" ];\n"
    "control_socket = \"/tmp/mx2.sock\";\n"
    "http_listen = \"\";\n"
    "log = \"syslog\";\n"
    "user = \"mx2\";\n";

static void
test_full_file_loads(void **state)
{
    struct mx2_config cfg;
    struct config_errors errs = {0};
    const char *path = write_file("full.conf", full_conf);
    char buf[300];

    config_defaults(&cfg);
    if (config_load(path, &cfg, &errs) != 0) {
        dump_errors(&errs);
        fail();
    }
    assert_int_equal(errs.count, 0);
    assert_string_equal(cfg.path, path);
    assert_string_equal(cfg.hostname, "MX2.Example.NET");
    assert_int_equal(cfg.listen_count, 3);
    config_format_hostport(&cfg.listen[1], buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:2525");
    config_format_hostport(&cfg.listen[2], buf, sizeof(buf));
    assert_string_equal(buf, "[198.51.100.7]:25");
    /* lower-cased, trailing dot gone, the duplicate folded */
    assert_int_equal(cfg.relay_domains_count, 2);
    assert_string_equal(cfg.relay_domains[0], "example.jp");
    assert_string_equal(cfg.relay_domains[1], "example.org");
    assert_string_equal(cfg.recipient_map, "/srv/mx2/map.mdb");
    assert_string_equal(cfg.recipient_delimiter, "+-");
    assert_int_equal(cfg.primary_count, 2);
    assert_string_equal(cfg.primary[0].host, "198.51.100.1");
    assert_int_equal(cfg.primary[0].port, 2525);
    assert_true(cfg.primary[0].bracketed);
    assert_string_equal(cfg.primary[1].host, "mail.example.jp");
    assert_int_equal(cfg.primary[1].port, 25);
    assert_false(cfg.primary[1].bracketed);
    assert_string_equal(cfg.spool_dir, "/srv/mx2/spool");
    assert_int_equal(cfg.queue_lifetime, 86400);
    assert_int_equal(cfg.retry_min, 30);
    assert_int_equal(cfg.retry_max, 3600);
    assert_int_equal(cfg.probe_interval, 15);
    assert_int_equal(cfg.primary_concurrency, 4);
    assert_int_equal(cfg.primary_tls, MX2_TLS_VERIFY);
    assert_string_equal(cfg.primary_tls_ca, "/etc/ssl/certs/ca.pem");
    assert_string_equal(cfg.primary_auth_user, "mx2");
    assert_string_equal(cfg.primary_auth_password_file, "/etc/mx2/auth");
    assert_true(cfg.has_bounce_relay);
    config_format_hostport(&cfg.bounce_relay, buf, sizeof(buf));
    assert_string_equal(buf, "[192.0.2.9]:2526");
    assert_true(cfg.max_message_size == UINT64_C(52428800000));
    assert_int_equal(cfg.max_recipients, 100);
    assert_int_equal(cfg.max_connections, 50);
    assert_int_equal(cfg.max_connections_per_ip, 5);
    assert_int_equal(cfg.smtp_timeout, 120);
    assert_int_equal(cfg.connect_timeout, 3);
    assert_int_equal(cfg.bare_newline, MX2_BARE_REJECT);
    assert_int_equal(cfg.delay_warning, 4 * 3600);
    assert_true(cfg.defer_when_primary_up);
    assert_string_equal(cfg.tls_cert, "/etc/mx2/cert.pem");
    assert_string_equal(cfg.tls_key, "/etc/mx2/key.pem");
    assert_int_equal(cfg.etrn_clients_count, 2);
    assert_string_equal(cfg.etrn_clients[0], "198.51.100.1");
    assert_string_equal(cfg.etrn_clients[1], "2001:db8::1");
    assert_string_equal(cfg.control_socket, "/tmp/mx2.sock");
    assert_false(cfg.http_enabled);
    assert_int_equal(cfg.log, MX2_LOG_SYSLOG);
    assert_string_equal(cfg.user, "mx2");
    config_free(&cfg);
    config_errors_free(&errs);
    config_errors_free(&errs); /* no-op */
}

/* A zeroed struct gets the defaults; keys the text does not set keep them. */
static void
test_load_string_on_zeroed_struct(void **state)
{
    struct mx2_config cfg = {0};
    struct config_errors errs = {0};

    assert_int_equal(config_load_string("relay_domains = \"example.jp\";\n"
                                        "listen = \"127.0.0.1:2525\";\n",
                                        "inline", &cfg, &errs),
                     0);
    assert_int_equal(errs.count, 0);
    assert_string_equal(cfg.path, "inline");
    assert_int_equal(cfg.relay_domains_count, 1); /* one string = one-element list */
    assert_string_equal(cfg.relay_domains[0], "example.jp");
    assert_int_equal(cfg.listen_count, 1);
    assert_int_equal(cfg.listen[0].port, 2525);
    assert_string_equal(cfg.spool_dir, "/var/spool/mx2");
    assert_int_equal(cfg.retry_max, 4200);
    assert_true(cfg.http_enabled);
    /* An empty text is a valid config: all defaults. */
    config_free(&cfg);
    assert_int_equal(config_load_string("", "empty", &cfg, &errs), 0);
    assert_int_equal(cfg.max_recipients, 1000);
    config_free(&cfg);
}

static void
test_unknown_key_names_key_and_line(void **state)
{
    struct mx2_config cfg;
    struct config_errors errs = {0};
    char want[600], path[512];

    snprintf(path, sizeof(path), "%s",
             write_file("unknown.conf", "hostname = \"mx2.example.net\";\n"
                                        "\n"
                                        "relay_domain = [ \"example.jp\" ];\n"
                                        "primary_auth = { user = \"u\";\n"
                                        "  pasword_file = \"/x\"; };\n"));
    config_defaults(&cfg);
    assert_int_equal(config_load(path, &cfg, &errs), MX2_E_CONFIG);
    assert_int_equal(errs.count, 2);
    snprintf(want, sizeof(want), "%s:3: relay_domain: unknown key", path);
    assert_string_equal(errs.lines[0], want);
    snprintf(want, sizeof(want), "%s:5: primary_auth.pasword_file: unknown key", path);
    assert_true(has_error(&errs, want));
    /* the valid parts were applied */
    assert_string_equal(cfg.hostname, "mx2.example.net");
    assert_string_equal(cfg.primary_auth_user, "u");
    config_free(&cfg);
    config_errors_free(&errs);
}

/* Several bad values: every one is reported with its own line, the good ones
 * are applied, and the bad ones leave the defaults in place. */
static void
test_all_errors_reported(void **state)
{
    static const char text[] = "hostname = \"bad host\";\n"         /* 1 */
                               "retry_min = \"5x\";\n"              /* 2 */
                               "retry_max = -60;\n"                 /* 3 */
                               "primary_tls = \"maybe\";\n"         /* 4 */
                               "max_recipients = 0;\n"              /* 5 */
                               "listen = [ \"0.0.0.0:0\" ];\n"      /* 6 */
                               "primary = [ \"2001:db8::1\" ];\n"   /* 7 */
                               "max_connections = 77;\n"            /* 8: fine */
                               "defer_when_primary_up = \"yes\";\n" /* 9 */
                               "log = \"journal\";\n"               /* 10 */
                               "bare_newline = 1;\n"                /* 11 */
                               "http_listen = \"127.0.0.1\";\n"     /* 12 */
                               "smtp_timeout = 1.5;\n"              /* 13 */
                               "relay_domains = [ \"ok.example\",\n"
                               "  \"not a domain\" ];\n"                 /* 15 */
                               "recipient_delimiter = \"@\";\n"          /* 16 */
                               "queue_lifetime = 0;\n"                   /* 17 */
                               "delay_warning = \"0\";\n"                /* 18: fine */
                               "etrn_clients = [ \"mx.example.jp\" ];\n" /* 19 */
                               "bounce_relay = \"[::1\";\n";             /* 20 */
    static const struct {
        int line;
        const char *key;
    } want[] = {
        {1, "hostname"},
        {2, "retry_min"},
        {3, "retry_max"},
        {4, "primary_tls"},
        {5, "max_recipients"},
        {6, "listen"},
        {7, "primary"},
        {9, "defer_when_primary_up"},
        {10, "log"},
        {11, "bare_newline"},
        {12, "http_listen"},
        {13, "smtp_timeout"},
        {15, "relay_domains"},
        {16, "recipient_delimiter"},
        {17, "queue_lifetime"},
        {19, "etrn_clients"},
        {20, "bounce_relay"},
    };
    struct mx2_config cfg;
    struct config_errors errs = {0};
    char path[512], prefix[600];

    snprintf(path, sizeof(path), "%s", write_file("bad.conf", text));
    config_defaults(&cfg);
    assert_int_equal(config_load(path, &cfg, &errs), MX2_E_CONFIG);
    if (errs.count != sizeof(want) / sizeof(want[0]))
        dump_errors(&errs);
    assert_int_equal(errs.count, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(prefix, sizeof(prefix), "%s:%d: %s: ", path, want[i].line, want[i].key);
        if (!has_error(&errs, prefix)) {
            dump_errors(&errs);
            fail_msg("no error starting with \"%s\"", prefix);
        }
    }
    /* Values are quoted in the reason, and say what was wrong. */
    snprintf(prefix, sizeof(prefix), "%s:2: retry_min: \"5x\": bad duration", path);
    assert_true(has_error(&errs, prefix));
    snprintf(prefix, sizeof(prefix), "%s:3: retry_max: must not be negative", path);
    assert_true(has_error(&errs, prefix));
    snprintf(prefix, sizeof(prefix), "%s:9: defer_when_primary_up: wrong type", path);
    assert_true(has_error(&errs, prefix));
    /* good values applied, bad ones left at their defaults */
    assert_int_equal(cfg.max_connections, 77);
    assert_int_equal(cfg.retry_min, 300);
    assert_int_equal(cfg.retry_max, 4200);
    assert_int_equal(cfg.primary_tls, MX2_TLS_MAY);
    assert_int_equal(cfg.listen_count, 2);
    assert_int_equal(cfg.relay_domains_count, 0);
    assert_int_equal(cfg.queue_lifetime, 5 * 86400);
    assert_true(cfg.http_enabled);
    assert_string_equal(cfg.recipient_delimiter, "+");
    config_free(&cfg);
    config_errors_free(&errs);
}

static void
test_syntax_error_has_line(void **state)
{
    struct mx2_config cfg;
    struct config_errors errs = {0};
    char path[512], prefix[600];

    snprintf(path, sizeof(path), "%s",
             write_file("syntax.conf", "hostname = \"mx2.example.net\";\n"
                                       "# a comment\n"
                                       "listen = [ \"0.0.0.0:25\" \n"
                                       "spool_dir = \"/x\";\n"));
    config_defaults(&cfg);
    assert_int_equal(config_load(path, &cfg, &errs), MX2_E_CONFIG);
    assert_int_equal(errs.count, 1);
    snprintf(prefix, sizeof(prefix), "%s:4: syntax error", path);
    assert_string_equal(errs.lines[0], prefix);
    config_free(&cfg);
    config_errors_free(&errs);

    /* libconfig's other parse errors carry the line too. */
    config_defaults(&cfg);
    assert_int_equal(
        config_load_string("log = \"stderr\";\nlog = \"syslog\";\n", "dup", &cfg, &errs),
        MX2_E_CONFIG);
    assert_int_equal(errs.count, 1);
    assert_true(has_error(&errs, "dup:2: "));
    config_free(&cfg);
    config_errors_free(&errs);
}

static void
test_unreadable_file(void **state)
{
    struct mx2_config cfg = {0};
    struct config_errors errs = {0};
    char path[512];

    snprintf(path, sizeof(path), "%s/does-not-exist.conf", tmpdir);
    assert_int_equal(config_load(path, &cfg, &errs), -ENOENT);
    assert_int_equal(errs.count, 1);
    assert_true(has_error(&errs, path));
    assert_non_null(strstr(errs.lines[0], strerror(ENOENT)));
    assert_string_equal(cfg.spool_dir, "/var/spool/mx2"); /* defaults all the same */
    config_free(&cfg);
    config_errors_free(&errs);

    assert_int_equal(config_load(tmpdir, &cfg, &errs), -EISDIR);
    assert_int_equal(errs.count, 1);
    config_free(&cfg);
    config_errors_free(&errs);

    /* A NUL byte would silently cut the text short in libconfig. */
    snprintf(path, sizeof(path), "%s/nul.conf", tmpdir);
    {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fwrite("log = \"syslog\";\n\0user = 1;\n", 1, 28, f);
        fclose(f);
    }
    assert_int_equal(config_load(path, &cfg, &errs), MX2_E_CONFIG);
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.lines[0], "NUL"));
    config_free(&cfg);
    config_errors_free(&errs);
}

static void
test_include_refused(void **state)
{
    struct mx2_config cfg = {0};
    struct config_errors errs = {0};

    assert_int_equal(config_load_string("log = \"syslog\";\n"
                                        "  @include \"/etc/passwd\"\n"
                                        "max_recipients = -1;\n",
                                        "inc", &cfg, &errs),
                     MX2_E_CONFIG);
    assert_int_equal(errs.count, 2);
    assert_true(has_error(&errs, "inc:2: @include: "));
    assert_true(has_error(&errs, "inc:3: max_recipients: "));
    assert_int_equal(cfg.log, MX2_LOG_SYSLOG);
    config_free(&cfg);
    config_errors_free(&errs);
}

/* Integers: libconfig 1.5 wraps literals above 2^31 that lack "L"; the
 * loader must read what was written, and refuse what does not fit. */
static void
test_integer_values(void **state)
{
    static const struct {
        const char *text;
        int ok;
        uint64_t size;
    } rows[] = {
        {"max_message_size = 52428800000;", 1, UINT64_C(52428800000)},
        {"max_message_size = 52428800000L;", 1, UINT64_C(52428800000)},
        {"max_message_size = \"52428800000\";", 1, UINT64_C(52428800000)},
        {"max_message_size = 4294967296;", 1, UINT64_C(4294967296)},
        {"max_message_size = 0x10000;", 1, 65536},
        {"max_message_size : 1024 ; # colon form", 1, 1024},
        {"max_message_size =\n  /* size */ 2048;", 1, 2048},
        {"hostname = \"max_message_size = 5\"; max_message_size = 4294967297;", 0, 0},
        {"max_message_size = 9223372036854775807L;", 1, UINT64_C(9223372036854775807)},
        {"max_message_size = 99999999999999999999;", 0, 0},
        {"max_message_size = 99999999999999999999L;", 0, 0},
        {"max_message_size = \"99999999999999999999\";", 0, 0},
        {"max_message_size = 0;", 0, 0},
        {"max_message_size = -1;", 0, 0},
        {"max_message_size = \"\";", 0, 0},
        {"max_message_size = \"12a\";", 0, 0},
        {"max_message_size = \"-5\";", 0, 0},
        {"max_message_size = 1.5;", 0, 0},
        {"max_message_size = [ 1 ];", 0, 0},
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        int rc = config_load_string(rows[i].text, "int", &cfg, &errs);
        /* row 7 is special: its hostname is bad, so check the size only */
        if (i == 7) {
            assert_true(cfg.max_message_size == UINT64_C(4294967297));
        } else if (rows[i].ok) {
            if (rc != 0) {
                dump_errors(&errs);
                fail_msg("row %zu refused: %s", i, rows[i].text);
            }
            if (cfg.max_message_size != rows[i].size)
                fail_msg("row %zu: got %llu", i, (unsigned long long)cfg.max_message_size);
        } else {
            if (rc != MX2_E_CONFIG || errs.count != 1)
                fail_msg("row %zu accepted: %s", i, rows[i].text);
            assert_true(has_error(&errs, "int:1: max_message_size: "));
            assert_int_equal(cfg.max_message_size, 52428800);
        }
        config_free(&cfg);
        config_errors_free(&errs);
    }

    /* Other integer keys: positive, within int. */
    static const struct {
        const char *text;
        int ok;
    } ints[] = {
        {"max_recipients = 1;", 1},
        {"max_recipients = 2147483647;", 1},
        {"max_recipients = 2147483648;", 0},
        {"max_recipients = 0;", 0},
        {"primary_concurrency = -3;", 0},
        {"max_connections = \"10\";", 0},
        {"max_connections_per_ip = true;", 0},
        {"retry_min = 3000000000;", 1},
        {"retry_min = 3153600001L;", 0},
        {"connect_timeout = 0;", 0},
        {"delay_warning = 0;", 1},
        {"delay_warning = \"0\";", 1},
        {"probe_interval = \"\";", 0},
        {"smtp_timeout = [ \"5m\" ];", 0},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        int rc = config_load_string(ints[i].text, "int", &cfg, &errs);
        if ((rc == 0) != ints[i].ok || errs.count != (ints[i].ok ? 0u : 1u)) {
            dump_errors(&errs);
            fail_msg("\"%s\": rc %d, %zu errors", ints[i].text, rc, errs.count);
        }
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

static void
test_enumerations_and_lists(void **state)
{
    static const struct {
        const char *text;
        int ok;
    } rows[] = {
        {"primary_tls = \"none\";", 1},
        {"primary_tls = \"may\";", 1},
        {"primary_tls = \"encrypt\";", 1},
        {"primary_tls = \"verify\";", 1},
        {"primary_tls = \"VERIFY\";", 0},
        {"primary_tls = \"\";", 0},
        {"bare_newline = \"normalize\";", 1},
        {"bare_newline = \"reject\";", 1},
        {"bare_newline = \"strip\";", 0},
        {"log = \"stderr\";", 1},
        {"log = \"syslog\";", 1},
        {"log = \"file\";", 0},
        {"listen = [ ];", 1},
        {"listen = ( \"127.0.0.1:25\" );", 1},
        {"listen = [ \"localhost:25\" ];", 0},                /* a bind address must be an IP */
        {"listen = [ \"127.0.0.1:25\", \"127.0.0.1\" ];", 0}, /* the same twice */
        {"listen = [ 25 ];", 0},
        {"listen = 25;", 0},
        {"listen = { a = 1; };", 0},
        {"primary = [ \"mail.example.jp:2525\" ];", 1},
        {"primary = [ \"mail.example.jp:0\" ];", 0},
        {"http_listen = \"[::1]:8025\";", 1},
        {"http_listen = \"localhost:8025\";", 0},
        {"http_listen = \"127.0.0.1\";", 0},
        {"bounce_relay = \"[192.0.2.1]\";", 1},
        {"bounce_relay = \"relay.example.jp:587\";", 1},
        {"bounce_relay = \"x:\";", 0},
        {"relay_domains = [ \"EXAMPLE.jp\", \"a-b.example\" ];", 1},
        {"relay_domains = [ \"198.51.100.1\" ];", 0},
        {"relay_domains = [ \"[example.jp]\" ];", 0},
        {"relay_domains = [ \"ex_ample.jp\" ];", 0},
        {"relay_domains = [ \"\" ];", 0},
        {"relay_domains = [ \"user@example.jp\" ];", 0},
        {"relay_domains = [ \".example.jp\" ];", 0},
        {"hostname = \"\";", 0},
        {"hostname = \"mx2\";", 1},
        {"recipient_delimiter = \"\";", 1},
        {"recipient_delimiter = \"-\";", 1},
        {"recipient_delimiter = \"%\";", 0},
        {"recipient_delimiter = \" \";", 0},
        {"control_socket = \"/run/mx2/ctl\";", 1},
        {"control_socket = \"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\";",
         0},
        {"defer_when_primary_up = false;", 1},
        {"defer_when_primary_up = 0;", 0},
        {"user = 0;", 0},
        {"spool_dir = [ \"/x\" ];", 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        int rc = config_load_string(rows[i].text, "row", &cfg, &errs);
        if ((rc == 0) != rows[i].ok || errs.count != (rows[i].ok ? 0u : 1u)) {
            dump_errors(&errs);
            fail_msg("\"%s\": rc %d, %zu errors", rows[i].text, rc, errs.count);
        }
        if (!rows[i].ok)
            assert_true(has_error(&errs, "row:1: "));
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

static void
test_primary_auth_group(void **state)
{
    struct mx2_config cfg = {0};
    struct config_errors errs = {0};

    assert_int_equal(config_load_string("primary_auth = { user = \"relay\";\n"
                                        "                 password_file = \"/etc/mx2/pw\"; };\n",
                                        "auth", &cfg, &errs),
                     0);
    assert_string_equal(cfg.primary_auth_user, "relay");
    assert_string_equal(cfg.primary_auth_password_file, "/etc/mx2/pw");
    config_free(&cfg);

    /* Members are optional. */
    assert_int_equal(config_load_string("primary_auth = { };", "auth", &cfg, &errs), 0);
    assert_string_equal(cfg.primary_auth_user, "");
    config_free(&cfg);

    /* Not a group; a member of the wrong type; an unknown member. */
    assert_int_equal(config_load_string("primary_auth = \"relay\";\n", "auth", &cfg, &errs),
                     MX2_E_CONFIG);
    assert_true(has_error(&errs, "auth:1: primary_auth: wrong type"));
    config_free(&cfg);
    config_errors_free(&errs);
    assert_int_equal(config_load_string("primary_auth = {\n user = 5;\n password = \"x\"; };\n",
                                        "auth", &cfg, &errs),
                     MX2_E_CONFIG);
    assert_int_equal(errs.count, 2);
    assert_true(has_error(&errs, "auth:2: primary_auth.user: wrong type"));
    assert_true(has_error(&errs, "auth:3: primary_auth.password: unknown key"));
    config_free(&cfg);
    config_errors_free(&errs);
}

static void
test_etrn_clients(void **state)
{
    static const struct {
        const char *in, *canon;
    } good[] = {
        {"198.51.100.1", "198.51.100.1"},
        {"::1", "::1"},
        {"2001:DB8:0:0::25", "2001:db8::25"},
        {"::ffff:192.0.2.1", "::ffff:192.0.2.1"},
    };
    static const char *const bad[] = {
        "mx.example.jp", "[::1]", "198.51.100.0/24", "300.1.1.1", "", "1.2.3", " 1.2.3.4", "::1%lo",
    };
    char text[300];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        snprintf(text, sizeof(text), "etrn_clients = [ \"%s\" ];", good[i].in);
        if (config_load_string(text, "etrn", &cfg, &errs) != 0)
            fail_msg("etrn_clients \"%s\" refused", good[i].in);
        assert_int_equal(cfg.etrn_clients_count, 1);
        assert_string_equal(cfg.etrn_clients[0], good[i].canon);
        config_free(&cfg);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        snprintf(text, sizeof(text), "etrn_clients = [ \"127.0.0.1\", \"%s\" ];", bad[i]);
        if (config_load_string(text, "etrn", &cfg, &errs) != MX2_E_CONFIG)
            fail_msg("etrn_clients \"%s\" accepted", bad[i]);
        assert_int_equal(errs.count, 1);
        assert_true(has_error(&errs, "etrn:1: etrn_clients: "));
        assert_non_null(strstr(errs.lines[0], "not an IP address"));
        assert_int_equal(cfg.etrn_clients_count, 0);
        config_free(&cfg);
        config_errors_free(&errs);
    }
    /* A non-string element is a type error. */
    {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        assert_int_equal(config_load_string("etrn_clients = ( \"::1\", 5 );", "etrn", &cfg, &errs),
                         MX2_E_CONFIG);
        assert_true(has_error(&errs, "etrn:1: etrn_clients: wrong type"));
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

/* Control characters in a bad value never reach the message raw. */
static void
test_messages_are_sanitised(void **state)
{
    struct mx2_config cfg = {0};
    struct config_errors errs = {0};

    assert_int_equal(config_load_string("log = \"\\x1b[2Jsys\\nlog\";", "esc", &cfg, &errs),
                     MX2_E_CONFIG);
    assert_int_equal(errs.count, 1);
    for (const char *p = errs.lines[0]; *p != '\0'; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    config_free(&cfg);
    config_errors_free(&errs);
}

/* ---- daemon checks ----------------------------------------------------- */

static void
test_check_daemon(void **state)
{
    char cert[512], key[512], ca[512], pw[512];
    char base[4096], text[8192];

    snprintf(cert, sizeof(cert), "%s", write_file("cert.pem", "cert\n"));
    snprintf(key, sizeof(key), "%s", write_file("key.pem", "key\n"));
    snprintf(ca, sizeof(ca), "%s", write_file("ca.pem", "ca\n"));
    snprintf(pw, sizeof(pw), "%s", write_file("pw", "secret\n"));
    snprintf(base, sizeof(base),
             "relay_domains = [ \"example.jp\" ];\n"
             "primary = [ \"[198.51.100.1]:25\" ];\n"
             "listen = [ \"127.0.0.1:2525\" ];\n"
             "tls_cert = \"%s\";\n"
             "tls_key = \"%s\";\n"
             "primary_tls = \"verify\";\n"
             "primary_tls_ca = \"%s\";\n"
             "primary_auth = { user = \"relay\"; password_file = \"%s\"; };\n"
             "user = \"root\";\n"
             "delay_warning = \"4h\";\n",
             cert, key, ca, pw);

    /* The good base passes. */
    {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        assert_int_equal(config_load_string(base, "daemon.conf", &cfg, &errs), 0);
        if (config_check_daemon(&cfg, &errs) != 0) {
            dump_errors(&errs);
            fail();
        }
        assert_int_equal(errs.count, 0);
        config_free(&cfg);
    }

    /* Each row appends one setting to the base (later keys would be
     * duplicates, so rows override through libconfig-free text: the base is
     * rebuilt without the key the row sets). */
    static const struct {
        const char *drop; /* key of the base to leave out */
        const char *add;  /* text to add instead */
        const char *want; /* expected error prefix after "daemon.conf" */
    } rows[] = {
        {"relay_domains", "relay_domains = [ ];\n", ":11: relay_domains: at least one"},
        {"relay_domains", "", ": relay_domains: at least one"},
        {"primary", "primary = [ ];\n", ":11: primary: at least one"},
        {"listen", "listen = [ ];\n", ":11: listen: at least one"},
        {"spool_dir", "spool_dir = \"\";\n", ":11: spool_dir: must not be empty"},
        {"recipient_map", "recipient_map = \"\";\n", ":11: recipient_map: must not be empty"},
        {"control_socket", "control_socket = \"\";\n", ":11: control_socket: must not be empty"},
        {"tls_key", "", ": tls_key: must be set when tls_cert is set"},
        {"tls_cert", "", ": tls_cert: must be set when tls_key is set"},
        {"tls_cert", "tls_cert = \"/nonexistent/cert.pem\";\n", ":11: tls_cert: cannot read"},
        {"tls_key", "tls_key = \"/\";\n", ":11: tls_key: \"/\": not a regular file"},
        {"primary_tls_ca", "", ":6: primary_tls: \"verify\" needs primary_tls_ca"},
        {"primary_tls_ca", "primary_tls_ca = \"/nonexistent/ca\";\n",
         ":11: primary_tls_ca: cannot read"},
        {"primary_auth", "primary_auth = { user = \"relay\"; };\n",
         ":11: primary_auth: user is set but password_file is empty"},
        {"primary_auth",
         "primary_auth = { user = \"relay\"; password_file = \"/nonexistent\"; };\n",
         ":11: primary_auth: cannot read"},
        {"primary_auth", "primary_auth = { password_file = \"/etc/hostname\"; };\n",
         ":11: primary_auth: password_file is set but user is empty"},
        {"retry_max", "retry_min = \"2h\";\n", ": retry_max: 4200s is shorter than retry_min"},
        {"retry_max", "retry_max = \"1m\";\n", ":11: retry_max: 60s is shorter than retry_min"},
        {"delay_warning", "delay_warning = \"5d\";\n", ":11: delay_warning: "},
        {"user", "user = \"no-such-user-mx2\";\n", ":11: user: no such user"},
        {"http_listen", "http_listen = \"127.0.0.1:2525\";\n",
         ":11: http_listen: same address as a listen entry"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        char want[600];
        const char *p = base;
        size_t o = 0;
        /* copy the base without the line that sets rows[i].drop, but keep
         * its line count (an empty line) so line 11 is the added text */
        while (*p != '\0') {
            const char *eol = strchr(p, '\n');
            size_t n = (size_t)(eol - p) + 1;
            size_t kl = strlen(rows[i].drop);
            if (strncmp(p, rows[i].drop, kl) == 0 && p[kl] == ' ')
                text[o++] = '\n';
            else {
                memcpy(text + o, p, n);
                o += n;
            }
            p += n;
        }
        snprintf(text + o, sizeof(text) - o, "%s", rows[i].add);
        if (config_load_string(text, "daemon.conf", &cfg, &errs) != 0) {
            dump_errors(&errs);
            fail_msg("row %zu: load failed", i);
        }
        snprintf(want, sizeof(want), "daemon.conf%s", rows[i].want);
        if (config_check_daemon(&cfg, &errs) != MX2_E_CONFIG || !has_error(&errs, want) ||
            errs.count != 1) {
            dump_errors(&errs);
            fail_msg("row %zu: want exactly \"%s...\"", i, want);
        }
        config_free(&cfg);
        config_errors_free(&errs);
    }

    /* The defaults alone miss both the relay domains and the primary, and
     * every problem is reported in the one pass. */
    {
        struct mx2_config cfg;
        struct config_errors errs = {0};
        config_defaults(&cfg);
        assert_int_equal(config_check_daemon(&cfg, &errs), MX2_E_CONFIG);
        assert_int_equal(errs.count, 2);
        assert_true(has_error(&errs, "(defaults): relay_domains: "));
        assert_true(has_error(&errs, "(defaults): primary: "));
        config_errors_add(&errs, "%s: recipient_map: cannot open: %s", "x.conf", "No such file");
        assert_int_equal(errs.count, 3);
        assert_string_equal(errs.lines[2], "x.conf: recipient_map: cannot open: No such file");
        config_free(&cfg);
        config_errors_free(&errs);
    }
}

/* ---- drift ------------------------------------------------------------- */

/* Every key line of SPEC.md's "Configuration" block, written as it stands,
 * loads with zero errors; and the values SPEC shows are the defaults (apart
 * from the three example values). */
static void
test_spec_keys_drift(void **state)
{
    char path[4096], line[4096];
    char *text = calloc(1, 65536);
    size_t o = 0;
    int in_section = 0, in_block = 0, keys = 0;
    FILE *f;

    assert_non_null(text);
    snprintf(path, sizeof(path), "%s/../shared/SPEC.md", MX2_SOURCE_DIR);
    f = fopen(path, "r");
    if (f == NULL)
        fail_msg("SPEC.md not found beside the checkout (%s)", path);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "## ", 3) == 0) {
            in_section = strncmp(line, "## Configuration", 16) == 0;
            continue;
        }
        if (!in_section)
            continue;
        if (strncmp(line, "```", 3) == 0) {
            if (in_block)
                break;
            in_block = 1;
            continue;
        }
        if (!in_block)
            continue;
        if ((line[0] >= 'a' && line[0] <= 'z') && strchr(line, '=') != NULL) {
            size_t n = strlen(line);
            assert_true(o + n + 1 < 65536);
            memcpy(text + o, line, n + 1);
            o += n;
            keys++;
        }
    }
    fclose(f);
    assert_true(keys >= 30);

    {
        struct mx2_config cfg = {0}, def;
        struct config_errors errs = {0};
        const char *conf = write_file("spec.conf", text);
        if (config_load(conf, &cfg, &errs) != 0) {
            dump_errors(&errs);
            fail_msg("SPEC.md's configuration block does not load");
        }
        /* SPEC's examples */
        assert_string_equal(cfg.hostname, "mx2.example.net");
        assert_int_equal(cfg.relay_domains_count, 1);
        assert_string_equal(cfg.relay_domains[0], "example.jp");
        assert_int_equal(cfg.primary_count, 1);
        assert_string_equal(cfg.primary[0].host, "198.51.100.1");
        /* everything else equals the defaults */
        config_defaults(&def);
        assert_int_equal(cfg.listen_count, def.listen_count);
        for (size_t i = 0; i < def.listen_count; i++) {
            assert_string_equal(cfg.listen[i].host, def.listen[i].host);
            assert_int_equal(cfg.listen[i].port, def.listen[i].port);
        }
        assert_string_equal(cfg.recipient_map, def.recipient_map);
        assert_string_equal(cfg.recipient_delimiter, def.recipient_delimiter);
        assert_string_equal(cfg.spool_dir, def.spool_dir);
        assert_int_equal(cfg.queue_lifetime, def.queue_lifetime);
        assert_int_equal(cfg.retry_min, def.retry_min);
        assert_int_equal(cfg.retry_max, def.retry_max);
        assert_int_equal(cfg.probe_interval, def.probe_interval);
        assert_int_equal(cfg.primary_concurrency, def.primary_concurrency);
        assert_int_equal(cfg.primary_tls, def.primary_tls);
        assert_string_equal(cfg.primary_tls_ca, def.primary_tls_ca);
        assert_string_equal(cfg.primary_auth_user, def.primary_auth_user);
        assert_string_equal(cfg.primary_auth_password_file, def.primary_auth_password_file);
        assert_int_equal(cfg.has_bounce_relay, def.has_bounce_relay);
        assert_true(cfg.max_message_size == def.max_message_size);
        assert_int_equal(cfg.max_recipients, def.max_recipients);
        assert_int_equal(cfg.max_connections, def.max_connections);
        assert_int_equal(cfg.max_connections_per_ip, def.max_connections_per_ip);
        assert_int_equal(cfg.smtp_timeout, def.smtp_timeout);
        assert_int_equal(cfg.connect_timeout, def.connect_timeout);
        assert_int_equal(cfg.bare_newline, def.bare_newline);
        assert_int_equal(cfg.delay_warning, def.delay_warning);
        assert_int_equal(cfg.defer_when_primary_up, def.defer_when_primary_up);
        assert_string_equal(cfg.tls_cert, def.tls_cert);
        assert_string_equal(cfg.tls_key, def.tls_key);
        assert_int_equal(cfg.etrn_clients_count, def.etrn_clients_count);
        assert_string_equal(cfg.control_socket, def.control_socket);
        assert_int_equal(cfg.http_enabled, def.http_enabled);
        assert_string_equal(cfg.http_listen.host, def.http_listen.host);
        assert_int_equal(cfg.http_listen.port, def.http_listen.port);
        assert_int_equal(cfg.log, def.log);
        assert_string_equal(cfg.user, def.user);
        /* every key was set on its own line */
        {
            int set = 0;
            for (size_t i = 0; i < CONFIG_KEY_SLOTS; i++)
                set += cfg.key_line[i] != 0;
            assert_int_equal(set, keys);
        }
        config_free(&def);
        config_free(&cfg);
    }
    free(text);
}

/* The shipped sample loads cleanly and carries SPEC's example values. */
static void
test_sample_conf_loads(void **state)
{
    struct mx2_config cfg = {0};
    struct config_errors errs = {0};

    if (config_load(MX2_SOURCE_DIR "/etc/mx2.conf", &cfg, &errs) != 0) {
        dump_errors(&errs);
        fail_msg("etc/mx2.conf does not load");
    }
    assert_int_equal(errs.count, 0);
    assert_string_equal(cfg.hostname, "mx2.example.net");
    assert_int_equal(cfg.relay_domains_count, 1);
    assert_string_equal(cfg.relay_domains[0], "example.jp");
    assert_int_equal(cfg.primary_count, 1);
    assert_string_equal(cfg.primary[0].host, "198.51.100.1");
    /* and sets every key: 32 in SPEC.md */
    {
        int set = 0;
        for (size_t i = 0; i < CONFIG_KEY_SLOTS; i++)
            set += cfg.key_line[i] != 0;
        assert_int_equal(set, 32);
    }
    config_free(&cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_table),
        cmocka_unit_test(test_hostport_table),
        cmocka_unit_test(test_defaults_match_spec),
        cmocka_unit_test(test_full_file_loads),
        cmocka_unit_test(test_load_string_on_zeroed_struct),
        cmocka_unit_test(test_unknown_key_names_key_and_line),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_syntax_error_has_line),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_include_refused),
        cmocka_unit_test(test_integer_values),
        cmocka_unit_test(test_enumerations_and_lists),
        cmocka_unit_test(test_primary_auth_group),
        cmocka_unit_test(test_etrn_clients),
        cmocka_unit_test(test_messages_are_sanitised),
        cmocka_unit_test(test_check_daemon),
        cmocka_unit_test(test_spec_keys_drift),
        cmocka_unit_test(test_sample_conf_loads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
