/*
 * main.c - mx2d: arguments, `-t`, startup order, signals, privilege drop,
 * shutdown order.
 *
 * Startup: config (every problem printed, exit 2) -> raise RLIMIT_NOFILE to
 * its hard limit -> bind the listeners (port 25 needs root or
 * CAP_NET_BIND_SERVICE), the control socket (chowned to `user`, see
 * control.h) and the HTTP port -> drop privileges to `user`
 * -> open the spool and recover it (remove bodies of sessions that never got
 * their 250) -> start the writer thread -> open the map -> run the loop.
 * Nothing is accepted before the loop runs, so the order is safe.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting; idle sessions get 421; sessions
 * in DATA or waiting for their commit finish (bounded); then the writer
 * drains its queue and the process exits 0. A message answered 250 is
 * already durable, so even a kill -9 at any point loses nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "control.h"
#include "err.h"
#include "flusher.h"
#include "fsio.h"
#include "http.h"
#include "log.h"
#include "salvage.h"
#include "metrics.h"
#include "rcptmap.h"
#include "smtp_server.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "writer.h"

#define MX2D_MAP_CHECK_MS 2000      /* map rebuilt by mx2map: picked up within this */
#define MX2D_SHUTDOWN_BOUND_MS 30000 /* sessions in DATA get this long to finish */

struct mx2d {
    uv_loop_t *loop;
    struct mx2_config cfg;
    struct spool *spool;
    struct rcptmap *map;
    struct writer *writer;
    struct flusher *flusher;
    struct tls_ctx *tls;
    struct smtpd_server smtpd;
    struct control *ctl;      /* control socket (mx2ctl) */
    struct http_server *http; /* /healthz, /metrics; NULL when disabled */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t map_timer, stop_timer;
    uv_prepare_t log_prep; /* writes the loop turn's gathered log lines */
    uint64_t stop_started;
    int stopping;
    int exit_status;
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: mx2d [-c FILE]      run the relay in the foreground\n"
               "       mx2d -t [-c FILE]   check the configuration and the map, then exit\n"
               "       mx2d -h | --help | --version\n"
               "FILE defaults to %s\n",
            MX2_DEFAULT_CONFIG);
}

static void
mx2d_on_map_timer(uv_timer_t *t)
{
    struct mx2d *d = t->data;
    int rc = rcptmap_maybe_reopen(d->map);

    if (rc == 1)
        log_info("recipient map %s reloaded (%zu keys)", d->cfg.recipient_map,
                 rcptmap_count(d->map));
    else if (rc < 0 && !rcptmap_is_open(d->map))
        log_debug("recipient map %s still unavailable: %s", d->cfg.recipient_map,
                  mx2_strerror(rc));
    else if (rc < 0)
        /* A broken replacement never takes a good map away: answering from
         * the last good map beats 451 for everyone (and 550 is never said
         * for want of a map). The rcptmap layer reports each bad file once. */
        log_warn("recipient map %s: the new file is unusable (%s); still answering from the "
                 "previous map",
                 d->cfg.recipient_map, mx2_strerror(rc));
}

/* defer_when_primary_up: while the primary answers, new mail is told to
 * go there (SPEC: spammers aiming at the backup MX gain nothing). */
static void
mx2d_on_primary_state(void *arg, int up)
{
    struct mx2d *d = arg;

    d->smtpd.defer_new_mail = d->cfg.defer_when_primary_up && up;
}

/* Before every wait for events: the lines this loop turn gathered leave in
 * one write (log.h), and none waits while the process sleeps. */
static void
mx2d_on_log_prepare(uv_prepare_t *p)
{
    (void)p;
    log_flush();
}

static void
mx2d_close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void
mx2d_on_stop_timer(uv_timer_t *t)
{
    struct mx2d *d = t->data;

    if (smtpd_server_idle(&d->smtpd))
        flusher_stop(d->flusher);
    if (!smtpd_server_idle(&d->smtpd) || !flusher_idle(d->flusher)) {
        if (uv_now(d->loop) - d->stop_started < MX2D_SHUTDOWN_BOUND_MS)
            return;
        /* Bound reached: drop sessions still talking. One waiting for its
         * commit stays until the writer answers (it is never acked early). */
        for (struct smtpd_session *s = d->smtpd.sessions; s != NULL; s = s->next)
            if (s->state != SMTPD_S_COMMIT)
                conn_close(&s->conn);
        return;
    }
    uv_timer_stop(t);
    writer_stop(d->writer);
    d->writer = NULL;
    mx2d_close_handle((uv_handle_t *)&d->sig_term);
    mx2d_close_handle((uv_handle_t *)&d->sig_int);
    mx2d_close_handle((uv_handle_t *)&d->sig_hup);
    mx2d_close_handle((uv_handle_t *)&d->map_timer);
    mx2d_close_handle((uv_handle_t *)&d->stop_timer);
    mx2d_close_handle((uv_handle_t *)&d->log_prep);
    /* No flush before each wait from now on: the last lines (the loop may
     * still wait for a thread-pool job) go out as they are logged. */
    log_gather(0);
}

static void mx2d_stop(struct mx2d *d);

static void
mx2d_on_signal(uv_signal_t *h, int signum)
{
    struct mx2d *d = h->data;

    if (signum == SIGHUP) {
        int rc = rcptmap_reopen(d->map);
        if (rc == 1)
            log_info("SIGHUP: recipient map %s reopened (%zu keys)", d->cfg.recipient_map,
                     rcptmap_count(d->map));
        else
            log_warn("SIGHUP: recipient map %s: %s", d->cfg.recipient_map, mx2_strerror(rc));
        return;
    }
    if (d->stopping)
        return;
    log_info("%s: stopping (sessions in DATA may finish)", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    mx2d_stop(d);
}

/* The spool failed a write LMDB cannot undo in this process (writer.h):
 * every later commit would fail too. What was acknowledged is on disk and
 * intact, so stop like SIGTERM and exit non-zero: the service manager
 * (Restart=on-failure) starts a fresh process on the durable state. */
static void
mx2d_on_spool_fatal(void *arg)
{
    struct mx2d *d = arg;

    log_err("spool %s: a write failed in a way this process cannot recover from (the disk "
            "refused LMDB's meta page); acknowledged mail is safe on disk; stopping with exit "
            "status 75 so that mx2d is restarted",
            d->cfg.spool_dir);
    d->exit_status = 75; /* EX_TEMPFAIL */
    if (!d->stopping)
        mx2d_stop(d);
}

static void
mx2d_stop(struct mx2d *d)
{
    d->stopping = 1;
    control_stop(d->ctl);
    d->ctl = NULL;
    http_stop(d->http);
    d->http = NULL;
    smtpd_server_stop(&d->smtpd);
    d->stop_started = uv_now(d->loop);
    uv_timer_start(&d->stop_timer, mx2d_on_stop_timer, 0, 50);
}

/* Make the spool the unprivileged user's before dropping root to it. */
static int
mx2d_chown_spool(const char *dir, uid_t uid, gid_t gid)
{
    static const char *const subs[] = {"", "/queue", "/tmp", "/queue/data.mdb", "/queue/lock.mdb"};
    char path[4096];

    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", dir, subs[i]);
        if (chown(path, uid, gid) != 0 && errno != ENOENT)
            return -errno;
    }
    return 0;
}

static int
mx2d_drop_privileges(const struct mx2_config *cfg)
{
    struct passwd *pw;
    int rc;

    if (cfg->user == NULL || cfg->user[0] == '\0')
        return 0;
    if ((pw = getpwnam(cfg->user)) == NULL) {
        log_err("user %s: no such user", cfg->user);
        return MX2_E_CONFIG;
    }
    if (getuid() != 0 && geteuid() != 0) {
        if (getuid() == pw->pw_uid)
            return 0;
        log_err("user %s: cannot switch users without root", cfg->user);
        return -EPERM;
    }
    (void)fsio_mkdirs(cfg->spool_dir, 0700);
    if ((rc = mx2d_chown_spool(cfg->spool_dir, pw->pw_uid, pw->pw_gid)) != 0) {
        log_err("spool %s: chown to %s: %s", cfg->spool_dir, cfg->user, mx2_strerror(rc));
        return rc;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        rc = -errno;
        log_err("dropping privileges to %s: %s", cfg->user, mx2_strerror(rc));
        return rc;
    }
    if (setuid(0) == 0) {
        log_err("dropping privileges to %s: still able to regain root", cfg->user);
        return -EPERM;
    }
    log_info("running as user %s (uid %ld)", cfg->user, (long)pw->pw_uid);
    return 0;
}

/* Many SMTP sessions each hold a socket (and a temp file while in DATA):
 * take the hard limit the administrator allows, as Postfix's master does. */
static void
mx2d_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("cannot raise the open files limit: %s", mx2_strerror(-errno));
    }
}

/* The control socket's owner: the user mx2d will run as (when root is
 * about to switch to it), else nobody to chown to. */
static void
mx2d_socket_owner(const struct mx2_config *cfg, uid_t *uid, gid_t *gid)
{
    struct passwd *pw;

    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (cfg->user == NULL || cfg->user[0] == '\0' || geteuid() != 0)
        return;
    if ((pw = getpwnam(cfg->user)) != NULL) {
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    }
}

static int
mx2d_check(const char *path, struct mx2_config *cfg, int check_only)
{
    struct config_errors errs = {0};
    int rc, problems = 0, cfg_ok;

    rc = config_load(path, cfg, &errs);
    if (rc == 0)
        rc = config_check_daemon(cfg, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "mx2d: %s\n", errs.lines[i]);
    problems = (int)errs.count;
    if (rc != 0 && problems == 0) {
        fprintf(stderr, "mx2d: %s: %s\n", path, mx2_strerror(rc));
        problems = 1;
    }
    config_errors_free(&errs);
    if (!check_only)
        return problems;
    /* -t reports every problem (SPEC): with other keys refused, the map and
     * the TLS pair are still tried when the file set them acceptably (a
     * default standing in for a refused or unread value would only mislead). */
    cfg_ok = problems == 0;
    if (cfg_ok || config_key_accepted(cfg, "recipient_map")) {
        struct rcptmap *map = NULL;
        rc = rcptmap_open(cfg->recipient_map, &map);
        if (rc != 0) {
            fprintf(stderr, "mx2d: recipient_map %s: %s\n", cfg->recipient_map, mx2_strerror(rc));
            problems++;
        }
        rcptmap_close(map);
    }
    if (cfg->tls_cert[0] != '\0' && cfg->tls_key[0] != '\0' &&
        (cfg_ok || (config_key_accepted(cfg, "tls_cert") && config_key_accepted(cfg, "tls_key")))) {
        struct tls_ctx *tls = NULL;
        char why[256];
        if (tls_ctx_server_new(cfg->tls_cert, cfg->tls_key, &tls, why, sizeof(why)) != 0) {
            fprintf(stderr, "mx2d: tls_cert/tls_key: %s\n", why);
            problems++;
        }
        tls_ctx_free(tls);
    }
    return problems;
}

int main(int argc, char **argv);

/* One line per record recovery moved aside (Postfix logs "corrupt" the same
 * way): the operator finds the bytes under quarantine/ and decides. */
static void
main_quarantined(void *arg, const char *qid, const char *why, const char *dir)
{
    (void)arg;
    if (dir == NULL)
        log_err("%s: cannot be trusted: %s", qid, why);
    else
        log_warn("%s: quarantined: %s; its stored bytes are in %s/", qid, why, dir);
}

/* Open and recover the spool. A data.mdb damaged as a whole (cut short, or
 * a tree that does not parse) cannot be read safely in place, and refusing to
 * start would take the backup MX down with it: move it aside (the bytes stay
 * for the operator), start a new spool and copy into it every record the
 * damaged one still yields, each checked (salvage.h). */
static int
mx2d_open_spool(const char *dir, struct spool **out, struct spool_stats *st)
{
    char moved[SPOOL_PATH_MAX];
    struct salvage_stats sv;
    /* A child reads it first: a damaged page can kill its reader. */
    int rc = spool_probe(dir);

    if (rc != MX2_E_CORRUPT) {
        rc = spool_open(dir, 0, out);
        if (rc == 0)
            rc = spool_recover(*out, st, main_quarantined, NULL);
        /* LMDB reports some damage with codes we do not map (INTERNAL):
         * that too is a queue that cannot be used in place. Set aside, it
         * loses nothing: salvage copies what still reads. */
        if (rc == MX2_E_INTERNAL)
            rc = MX2_E_CORRUPT;
        if (rc != 0 && *out != NULL) {
            spool_close(*out);
            *out = NULL;
        }
    }
    if (rc != MX2_E_CORRUPT)
        return rc;
    if ((rc = spool_set_aside(dir, moved, sizeof(moved))) != 0) {
        log_err("spool %s: queue database damaged, and cannot be moved aside: %s", dir,
                mx2_strerror(rc));
        return MX2_E_CORRUPT;
    }
    log_err("spool %s: queue database damaged (cut short or a page that does not parse): "
            "moved to %s; salvaging what it still holds into a new queue",
            dir, moved);
    if ((rc = spool_open(dir, 0, out)) != 0)
        return rc;
    rc = salvage_into(*out, moved, &sv);
    spool_close(*out);
    *out = NULL;
    if (rc != 0)
        return rc;
    log_err("spool %s: salvaged %llu messages (%llu records refused, %s); what was not "
            "salvaged stays in %s (queue/README.md, \"Damaged spool\")",
            dir, (unsigned long long)sv.copied, (unsigned long long)sv.refused,
            sv.complete ? "read to the end" : "reading stopped at the damage", moved);
    /* Reopen: IDs are seeded above the salvaged ones. */
    if ((rc = spool_open(dir, 0, out)) != 0)
        return rc;
    return spool_recover(*out, st, main_quarantined, NULL);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = MX2_DEFAULT_CONFIG;
    int check_only = 0, opt, rc;
    struct mx2d d;
    struct spool_stats st;

    memset(&d, 0, sizeof(d));
    opterr = 0; /* our own one-line messages below (SPEC: one line) */
    while ((opt = getopt_long(argc, argv, ":c:th", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("mx2d %s\n", MX2_VERSION);
            return 0;
        case ':':
            fprintf(stderr, "mx2d: option %s needs an argument (try mx2d -h)\n",
                    argv[optind - 1]);
            return 2;
        default:
            if (optopt != 0)
                fprintf(stderr, "mx2d: unknown option '-%c' (try mx2d -h)\n", optopt);
            else
                fprintf(stderr, "mx2d: unknown option '%s' (try mx2d -h)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "mx2d: unexpected argument '%s' (try mx2d -h)\n", argv[optind]);
        return 2;
    }
    if (mx2d_check(path, &d.cfg, check_only) != 0) {
        config_free(&d.cfg);
        return 2;
    }
    if (check_only) {
        printf("mx2d: %s: configuration OK\n", path);
        config_free(&d.cfg);
        return 0;
    }

    log_open("mx2d", d.cfg.log == MX2_LOG_SYSLOG ? LOG_TARGET_SYSLOG : LOG_TARGET_STDERR);
    signal(SIGPIPE, SIG_IGN);
    mx2d_raise_nofile();
    d.loop = uv_default_loop();
    /* Started first: libuv runs the newest prepare handle first, so this
     * one runs after the writer's hand-over, last before the loop waits. */
    uv_prepare_init(d.loop, &d.log_prep);
    uv_prepare_start(&d.log_prep, mx2d_on_log_prepare);
    uv_unref((uv_handle_t *)&d.log_prep);

    if (d.cfg.tls_cert[0] != '\0') {
        char why[256];
        if (tls_ctx_server_new(d.cfg.tls_cert, d.cfg.tls_key, &d.tls, why, sizeof(why)) != 0)
            log_fatal("tls_cert/tls_key: %s", why);
    }
    if (smtpd_server_start(&d.smtpd, d.loop, &d.cfg, NULL, NULL, NULL, d.tls) != 0)
        log_fatal("cannot listen; exiting");
    /* The control socket and the HTTP port are bound here, before the
     * privilege drop, like port 25: /run/mx2 usually belongs to root, and
     * control_start chowns the socket to `user` (control.h). Nothing is
     * accepted before the loop runs, when their sources are set. */
    {
        uid_t uid;
        gid_t gid;
        mx2d_socket_owner(&d.cfg, &uid, &gid);
        if (control_start(d.loop, d.cfg.control_socket, uid, gid, &d.ctl) != 0)
            log_fatal("cannot create the control socket; exiting");
    }
    if (d.cfg.http_enabled && http_start(d.loop, &d.cfg, &d.http) != 0)
        log_fatal("cannot listen on http_listen; exiting");
    if (mx2d_drop_privileges(&d.cfg) != 0)
        exit(1);

    if ((rc = mx2d_open_spool(d.cfg.spool_dir, &d.spool, &st)) != 0)
        log_fatal("spool %s: %s", d.cfg.spool_dir, mx2_strerror(rc));
    log_info("spool %s: %llu messages, %llu recipients pending, %llu bytes; removed %llu "
             "unfinished temp files; quarantined %llu records",
             d.cfg.spool_dir, (unsigned long long)st.messages, (unsigned long long)st.recipients,
             (unsigned long long)st.bytes, (unsigned long long)st.tmp_removed,
             (unsigned long long)st.quarantined);
    if (spool_journal_cap(d.spool) > 0)
        log_info("spool %s: journal of %zu KiB; %llu acknowledged messages moved from it into "
                 "the queue at start",
                 d.cfg.spool_dir, spool_journal_cap(d.spool) >> 10,
                 (unsigned long long)spool_journal_replayed(d.spool));
    else
        log_warn("spool %s: writing without a journal (MX2_JOURNAL_SIZE=0, or it could not be "
                 "created: disk full?); %llu messages moved from an old one at start",
                 d.cfg.spool_dir, (unsigned long long)spool_journal_replayed(d.spool));
    if ((rc = writer_start(d.loop, d.spool, &d.writer)) != 0)
        log_fatal("writer thread: %s", mx2_strerror(rc));
    writer_on_fatal(d.writer, mx2d_on_spool_fatal, &d);

    rc = rcptmap_open(d.cfg.recipient_map, &d.map);
    if (rc != 0)
        log_warn("recipient map %s: %s: answering 451 4.3.0 until it appears",
                 d.cfg.recipient_map, mx2_strerror(rc));
    else
        log_info("recipient map %s: %zu keys", d.cfg.recipient_map, rcptmap_count(d.map));
    d.smtpd.map = d.map;
    d.smtpd.spool = d.spool;
    d.smtpd.writer = d.writer;
    if ((rc = flusher_start(d.loop, &d.cfg, d.spool, d.writer, &d.flusher)) != 0)
        log_fatal("flusher: %s", mx2_strerror(rc));
    d.smtpd.flusher = d.flusher;
    flusher_on_primary_state(d.flusher, mx2d_on_primary_state, &d);
    {
        struct metrics_src src = {.smtpd = &d.smtpd,
                                  .flusher = d.flusher,
                                  .writer = d.writer,
                                  .started = (int64_t)time(NULL)};
        struct http_health health = {
            .writer = d.writer, .spool_trouble = &d.smtpd.spool_trouble, .stopping = &d.stopping};
        control_set_source(d.ctl, d.flusher, &src);
        http_set_source(d.http, &src, &health);
    }

    uv_signal_init(d.loop, &d.sig_term);
    uv_signal_init(d.loop, &d.sig_int);
    uv_signal_init(d.loop, &d.sig_hup);
    d.sig_term.data = d.sig_int.data = d.sig_hup.data = &d;
    uv_signal_start(&d.sig_term, mx2d_on_signal, SIGTERM);
    uv_signal_start(&d.sig_int, mx2d_on_signal, SIGINT);
    uv_signal_start(&d.sig_hup, mx2d_on_signal, SIGHUP);
    uv_timer_init(d.loop, &d.map_timer);
    uv_timer_init(d.loop, &d.stop_timer);
    d.map_timer.data = d.stop_timer.data = &d;
    uv_timer_start(&d.map_timer, mx2d_on_map_timer, MX2D_MAP_CHECK_MS, MX2D_MAP_CHECK_MS);

    log_info("mx2d %s started: %s", MX2_VERSION, d.cfg.hostname);
    log_errors_to_stderr(0);
    log_gather(1);
    uv_run(d.loop, UV_RUN_DEFAULT);
    log_gather(0);

    rc = uv_loop_close(d.loop);
    if (rc != 0)
        log_warn("event loop closed with handles still open");
    flusher_free(d.flusher);
    rcptmap_close(d.map);
    spool_close(d.spool);
    tls_ctx_free(d.tls);
    free(d.smtpd.ipbuckets);
    log_info("stopped");
    config_free(&d.cfg);
    return d.exit_status;
}
