/*
 * fuzz_smtp_session.c - the inbound SMTP state machine fed raw client bytes.
 *
 * One real session per input, on a real libuv loop, over a socketpair: the
 * input is written to the client end, which is then shut down, and the loop
 * runs until the session has closed (bounded). The server has a real spool
 * (so DATA reaches the writer thread and commits) and a real recipient map
 * with alice@example.jp and a catch-all-free example.jp. Whatever the bytes,
 * the session must not crash, leak, or read out of bounds (ASan/UBSan), and
 * the loop must come back to idle.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "log.h"
#include "rcptmap.h"
#include "smtp_server.h"
#include "smtp_session.h"
#include "spool.h"
#include "writer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    int ready;
    uv_loop_t loop;
    struct mx2_config cfg;
    struct spool *spool;
    struct writer *writer;
    struct rcptmap *map;
    struct smtpd_server srv;
} F;

static void
fuzz_setup(void)
{
    char dir[] = "/tmp/mx2-fuzz-session-XXXXXX", path[256];
    struct rcptmap_build *b;

    if (mkdtemp(dir) == NULL)
        abort();
    log_set_level(LOG_LVL_ERR);
    uv_loop_init(&F.loop);
    config_defaults(&F.cfg);
    free(F.cfg.relay_domains);
    F.cfg.relay_domains = calloc(1, sizeof(char *));
    F.cfg.relay_domains[0] = strdup("example.jp");
    F.cfg.relay_domains_count = 1;
    F.cfg.max_message_size = 100000;
    F.cfg.max_recipients = 5;
    F.cfg.listen_count = 0;
    snprintf(path, sizeof(path), "%s/map.mdb", dir);
    if (rcptmap_build_begin(path, &b) != 0 || rcptmap_build_add(b, "alice@example.jp") != 0 ||
        rcptmap_build_add(b, "postmaster@example.jp") != 0 || rcptmap_build_commit(b) != 0)
        abort();
    if (rcptmap_open(path, &F.map) != 0)
        abort();
    snprintf(path, sizeof(path), "%s/spool", dir);
    if (spool_open(path, 0, &F.spool) != 0 || writer_start(&F.loop, F.spool, &F.writer) != 0)
        abort();
    if (smtpd_server_start(&F.srv, &F.loop, &F.cfg, F.map, F.spool, F.writer, NULL) != 0)
        abort();
    F.ready = 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    struct smtpd_session *s;
    char sink[65536];

    if (!F.ready)
        fuzz_setup();
    if (size > 256 * 1024)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    s = smtpd_session_new(&F.srv);
    if (uv_tcp_open(&s->conn.tcp, sv[0]) != 0 || conn_start(&s->conn, 5000) != 0) {
        smtpd_session_abort(s);
    } else {
        F.srv.nconn++;
        s->counted = 1;
        smtpd_session_start(s);
    }
    /* Feed everything, then EOF; drain replies so the session never blocks
     * on a full socket. */
    {
        size_t off = 0;
        int spins = 0;
        while ((off < size || F.srv.sessions != NULL) && spins++ < 100000) {
            if (off < size) {
                ssize_t w = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w > 0)
                    off += (size_t)w;
                if (off == size)
                    shutdown(sv[1], SHUT_WR);
            }
            uv_run(&F.loop, UV_RUN_NOWAIT);
            while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
                ;
            if (off == size && F.srv.sessions != NULL)
                usleep(50);
        }
        if (size == 0)
            shutdown(sv[1], SHUT_WR);
    }
    /* Let the last commit (if any) answer and the handles close. */
    for (int i = 0; i < 2000 && F.srv.sessions != NULL; i++) {
        uv_run(&F.loop, UV_RUN_NOWAIT);
        while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
        usleep(100);
    }
    if (F.srv.sessions != NULL) {
        fprintf(stderr, "session did not finish\n");
        abort();
    }
    close(sv[1]);
    return 0;
}
