/*
 * control.c - the control socket server (see control.h, common/ctlproto.h).
 *
 * A request that needs the writer (DELETE, HOLD, RELEASE) or a delivery
 * round (FLUSH WAIT) completes later, on a callback from the flusher. Its
 * state lives in a struct ctl_req separate from the connection: when the
 * client hangs up (or mx2d stops) meanwhile, the connection goes away and
 * the request only forgets where to answer; it frees itself when its last
 * callback has run. The flusher may also answer synchronously (inside
 * flusher_delete): `issuing` keeps the request alive until every operation
 * was handed over.
 */
#include "control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "ctlproto.h"
#include "err.h"
#include "flusher.h"
#include "fsio.h"
#include "log.h"
#include "qid.h"
#include "xalloc.h"

struct ctl_conn;

struct ctl_req {
    struct ctl_conn *conn; /* NULL once the connection is gone */
    enum ctlproto_cmd cmd;
    unsigned flags;
    size_t n, pending;
    int issuing;
    char (*ids)[QID_SIZE];
    int *results;
};

struct ctl_conn {
    uv_pipe_t pipe;
    uv_timer_t timer;
    struct control *ctl;
    struct ctl_conn *next, *prev;
    struct buf in;
    struct ctl_req *req; /* in flight */
    size_t ids_used;
    unsigned handles_open;
    long peer_uid;
    unsigned closing : 1, discarding : 1, reading : 1, eof : 1, shut : 1, processing : 1;
};

struct control {
    uv_loop_t *loop;
    uv_pipe_t listener;
    char *path;
    struct flusher *flusher;
    struct metrics_src src;
    struct ctl_conn *conns;
    unsigned nconn;
    int listener_open, bound, stopping;
};

static void ctl_process(struct ctl_conn *c);
static void ctl_close(struct ctl_conn *c);

static void
ctl_maybe_free(struct control *ctl)
{
    if (ctl->stopping && ctl->nconn == 0 && !ctl->listener_open) {
        free(ctl->path);
        free(ctl);
    }
}

/* ---- output ---- */

struct ctl_write {
    uv_write_t req;
    char data[];
};

static void
ctl_on_write(uv_write_t *w, int status)
{
    free(w);
}

static void
ctl_send(struct ctl_conn *c, struct buf *b)
{
    struct ctl_write *w;
    uv_buf_t ub;

    if (c->closing || buf_avail(b) == 0)
        return;
    w = xmalloc(sizeof(*w) + buf_avail(b));
    memcpy(w->data, buf_head(b), buf_avail(b));
    ub = uv_buf_init(w->data, (unsigned)buf_avail(b));
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &ub, 1, ctl_on_write) != 0) {
        free(w);
        ctl_close(c);
    }
}

static void
ctl_append_err(struct buf *b, int code, const char *text)
{
    char line[CTLPROTO_LINE_MAX];

    if (ctlproto_format_err(line, sizeof(line), code, text) > 0)
        buf_append(b, line, strlen(line));
}

static void
ctl_append_ok(struct buf *b, const char *text)
{
    char line[CTLPROTO_LINE_MAX];

    if (ctlproto_format_ok(line, sizeof(line), text) > 0)
        buf_append(b, line, strlen(line));
}

/* A complete one-line answer. */
static void
ctl_answer_err(struct ctl_conn *c, int code, const char *text)
{
    struct buf b = {0};

    ctl_append_err(&b, code, text);
    buf_append(&b, ".\n", 2);
    ctl_send(c, &b);
    buf_free(&b);
}

/* ---- connection lifetime ---- */

static void
ctl_on_handle_closed(uv_handle_t *h)
{
    struct ctl_conn *c = h->data;
    struct control *ctl = c->ctl;

    if (--c->handles_open > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        ctl->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    ctl->nconn--;
    buf_free(&c->in);
    free(c);
    ctl_maybe_free(ctl);
}

static void
ctl_close(struct ctl_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->req != NULL) {
        c->req->conn = NULL;
        c->req = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, ctl_on_handle_closed);
    uv_close((uv_handle_t *)&c->pipe, ctl_on_handle_closed);
}

static void
ctl_on_shutdown(uv_shutdown_t *sh, int status)
{
    struct ctl_conn *c = sh->data;

    free(sh);
    ctl_close(c);
}

static void
ctl_on_timer(uv_timer_t *t)
{
    ctl_close(t->data);
}

static void
ctl_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct ctl_conn *c = h->data;
    char *p = buf_reserve(&c->in, 4096);

    *b = uv_buf_init(p, 4096);
}

static void
ctl_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct ctl_conn *c = s->data;

    if (c->closing)
        return;
    if (n < 0) {
        /* EOF: answer what is buffered (a client may half-close after its
         * request), then close once idle. */
        c->eof = 1;
        uv_read_stop(s);
        c->reading = 0;
        ctl_process(c);
        return;
    }
    c->in.len += (size_t)n;
    ctl_process(c);
}

static void
ctl_set_reading(struct ctl_conn *c, int on)
{
    if (c->closing || c->eof || on == (int)c->reading)
        return;
    if (on) {
        if (uv_read_start((uv_stream_t *)&c->pipe, ctl_on_alloc, ctl_on_read) == 0)
            c->reading = 1;
        uv_timer_start(&c->timer, ctl_on_timer, CONTROL_IDLE_MS, 0);
    } else {
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = 0;
        uv_timer_stop(&c->timer);
    }
}

/* ---- requests that complete later ---- */

static void
ctl_req_free(struct ctl_req *r)
{
    free(r->ids);
    free(r->results);
    free(r);
}

/* All operations of r have answered: write the per-ID lines. */
static void
ctl_req_finish(struct ctl_req *r)
{
    struct ctl_conn *c = r->conn;
    struct buf b = {0};

    if (c != NULL) {
        for (size_t i = 0; i < r->n; i++) {
            char text[128];
            if (r->results[i] == 0) {
                ctl_append_ok(&b, r->ids[i]);
            } else if (r->results[i] == MX2_E_NOT_FOUND) {
                snprintf(text, sizeof(text), "%s no such message", r->ids[i]);
                ctl_append_err(&b, CTLPROTO_ERR_NOT_FOUND, text);
            } else {
                snprintf(text, sizeof(text), "%s %s", r->ids[i], mx2_strerror(r->results[i]));
                ctl_append_err(&b, CTLPROTO_ERR_INTERNAL, text);
            }
        }
        buf_append(&b, ".\n", 2);
        ctl_send(c, &b);
        buf_free(&b);
        c->req = NULL;
    }
    ctl_req_free(r);
    if (c != NULL && !c->closing) {
        ctl_set_reading(c, 1);
        ctl_process(c);
    }
}

struct ctl_op_arg {
    struct ctl_req *req;
    size_t index;
};

static void
ctl_on_op_done(void *arg, int result)
{
    struct ctl_op_arg *a = arg;
    struct ctl_req *r = a->req;

    r->results[a->index] = result;
    free(a);
    if (--r->pending == 0 && !r->issuing)
        ctl_req_finish(r);
}

static void
ctl_collect_id(void *arg, const char *qid)
{
    struct ctl_req *r = arg;

    r->ids = xrealloc(r->ids, (r->n + 1) * sizeof(*r->ids));
    snprintf(r->ids[r->n], QID_SIZE, "%s", qid);
    r->n++;
}

static void
ctl_start_ops(struct ctl_conn *c, struct ctl_req *r)
{
    struct control *ctl = c->ctl;

    r->results = xcalloc(r->n ? r->n : 1, sizeof(*r->results));
    r->conn = c;
    c->req = r;
    ctl_set_reading(c, 0);
    r->issuing = 1;
    r->pending = r->n;
    for (size_t i = 0; i < r->n; i++) {
        struct ctl_op_arg *a = xmalloc(sizeof(*a));
        a->req = r;
        a->index = i;
        if (r->cmd == CTLPROTO_DELETE)
            flusher_delete(ctl->flusher, r->ids[i], ctl_on_op_done, a);
        else if (r->cmd == CTLPROTO_HOLD)
            flusher_hold(ctl->flusher, r->ids[i], ctl_on_op_done, a);
        else
            flusher_release(ctl->flusher, r->ids[i], ctl_on_op_done, a);
    }
    r->issuing = 0;
    if (r->pending == 0)
        ctl_req_finish(r);
}

static void
ctl_on_round(void *arg, uint64_t delivered, uint64_t deferred, uint64_t bounced)
{
    struct ctl_req *r = arg;
    struct ctl_conn *c = r->conn;

    r->issuing = 0;
    if (c != NULL) {
        struct buf b = {0};
        buf_appendf(
            &b, "STAT delivered %" PRIu64 "\nSTAT deferred %" PRIu64 "\nSTAT bounced %" PRIu64 "\n",
            delivered, deferred, bounced);
        ctl_append_ok(&b, "round finished");
        buf_append(&b, ".\n", 2);
        ctl_send(c, &b);
        buf_free(&b);
        c->req = NULL;
    }
    ctl_req_free(r);
    if (c != NULL && !c->closing) {
        ctl_set_reading(c, 1);
        ctl_process(c);
    }
}

/* ---- dispatch ---- */

static void
ctl_log_action(struct ctl_conn *c, const struct ctlproto_req *req, size_t n)
{
    if (req->cmd == CTLPROTO_FLUSH)
        log_info("control: FLUSH%s (uid %ld)", (req->flags & CTLPROTO_F_WAIT) ? " WAIT" : "",
                 c->peer_uid);
    else
        log_info("control: %s%s %zu ID%s (uid %ld)", ctlproto_cmd_name(req->cmd),
                 (req->flags & CTLPROTO_F_ALL) ? " ALL" : "", n, n == 1 ? "" : "s", c->peer_uid);
}

static void
ctl_handle(struct ctl_conn *c, const char *line, size_t len)
{
    struct control *ctl = c->ctl;
    struct ctlproto_req *req = xmalloc(sizeof(*req));
    const char *why = NULL;
    struct buf b = {0};
    int rc;

    rc = ctlproto_parse_request(line, len, req, &why);
    if (rc != 0) {
        ctl_answer_err(
            c, rc == MX2_E_LINE_TOO_LONG ? CTLPROTO_ERR_TOO_LONG : CTLPROTO_ERR_BAD_REQUEST, why);
        free(req);
        return;
    }
    if (ctl->stopping || ctl->flusher == NULL) {
        ctl_answer_err(c, CTLPROTO_ERR_SHUTDOWN, "mx2d is shutting down");
        free(req);
        return;
    }
    switch (req->cmd) {
    case CTLPROTO_PING:
        ctl_append_ok(&b, "pong");
        break;
    case CTLPROTO_STATS: {
        struct metrics_snapshot snap;
        metrics_collect(&ctl->src, (int64_t)time(NULL), &snap);
        metrics_render_stat_lines(&snap, &b);
        ctl_append_ok(&b, NULL);
        break;
    }
    case CTLPROTO_FLUSH:
        ctl_log_action(c, req, 0);
        if (req->flags & CTLPROTO_F_WAIT) {
            struct ctl_req *r = xcalloc(1, sizeof(*r));
            r->cmd = req->cmd;
            r->conn = c;
            r->issuing = 1;
            c->req = r;
            ctl_set_reading(c, 0);
            free(req);
            /* flusher_flush_wait may answer at once (nothing queued). */
            flusher_flush_wait(ctl->flusher, ctl_on_round, r);
            return;
        }
        flusher_flush(ctl->flusher);
        ctl_append_ok(&b, "flush started");
        break;
    case CTLPROTO_DELETE:
    case CTLPROTO_HOLD:
    case CTLPROTO_RELEASE: {
        struct ctl_req *r;
        size_t valid = 0;
        if (!(req->flags & CTLPROTO_F_ALL) && c->ids_used + req->nids > CTLPROTO_SESSION_MAX_IDS) {
            ctl_append_err(&b, CTLPROTO_ERR_TOO_MANY, "too many IDs on this connection");
            break;
        }
        c->ids_used += req->nids;
        r = xcalloc(1, sizeof(*r));
        r->cmd = req->cmd;
        r->flags = req->flags;
        if (req->flags & CTLPROTO_F_ALL) {
            flusher_foreach(ctl->flusher, ctl_collect_id, r);
        } else {
            r->ids = xcalloc(req->nids, sizeof(*r->ids));
            for (size_t i = 0; i < req->nids; i++) {
                /* The parser's check mirrors qid_valid; the queue's own
                 * function is the final word. */
                if (!qid_valid(req->ids[i]))
                    continue;
                snprintf(r->ids[valid++], QID_SIZE, "%s", req->ids[i]);
            }
            r->n = valid;
            if (valid != req->nids) {
                ctl_req_free(r);
                ctl_append_err(&b, CTLPROTO_ERR_BAD_REQUEST, "malformed queue ID");
                break;
            }
        }
        ctl_log_action(c, req, r->n);
        free(req);
        ctl_start_ops(c, r);
        return;
    }
    default:
        ctl_append_err(&b, CTLPROTO_ERR_BAD_REQUEST, "unknown command");
        break;
    }
    free(req);
    buf_append(&b, ".\n", 2);
    ctl_send(c, &b);
    buf_free(&b);
}

/* Handle every complete line while no request is in flight. A request that
 * completes synchronously calls back in here: `processing` makes that a
 * no-op, so the loop below picks the next line up without recursion. */
static void
ctl_process(struct ctl_conn *c)
{
    if (c->processing)
        return;
    c->processing = 1;
    while (!c->closing && c->req == NULL) {
        char line[CTLPROTO_LINE_MAX];
        size_t linelen, consumed;
        int rc = ctlproto_next_line(buf_head(&c->in), buf_avail(&c->in), &linelen, &consumed);

        if (rc == 0)
            break;
        if (rc < 0) {
            /* Overlong: answer once, then skip bytes up to the next LF. */
            if (!c->discarding)
                ctl_answer_err(c, CTLPROTO_ERR_TOO_LONG, "request line too long");
            c->discarding = 1;
            buf_reset(&c->in);
            continue;
        }
        if (c->discarding) {
            c->discarding = 0;
            buf_consume(&c->in, consumed);
            continue;
        }
        uv_timer_start(&c->timer, ctl_on_timer, CONTROL_IDLE_MS, 0);
        /* Copy and consume first: the handler may answer and come back. */
        memcpy(line, buf_head(&c->in), linelen);
        buf_consume(&c->in, consumed);
        ctl_handle(c, line, linelen);
    }
    c->processing = 0;
    if (buf_avail(&c->in) == 0 && c->in.cap > 0)
        buf_free(&c->in);
    if (!c->closing && c->eof && c->req == NULL && !c->shut) {
        /* The client half-closed and everything is answered: close once the
         * answers are written (uv_shutdown waits for pending writes, which
         * uv_close would cancel). */
        uv_shutdown_t *sh = xmalloc(sizeof(*sh));
        sh->data = c;
        c->shut = 1;
        if (uv_shutdown(sh, (uv_stream_t *)&c->pipe, ctl_on_shutdown) != 0) {
            free(sh);
            ctl_close(c);
        }
    }
}

static void
ctl_on_connection(uv_stream_t *listener, int status)
{
    struct control *ctl = listener->data;
    struct ctl_conn *c;
    uv_os_fd_t fd;

    if (status < 0 || ctl->stopping)
        return;
    c = xcalloc(1, sizeof(*c));
    c->ctl = ctl;
    c->peer_uid = -1;
    if (uv_pipe_init(ctl->loop, &c->pipe, 0) != 0) {
        free(c);
        return;
    }
    c->pipe.data = c;
    c->handles_open = 1;
    uv_timer_init(ctl->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    c->next = ctl->conns;
    if (ctl->conns)
        ctl->conns->prev = c;
    ctl->conns = c;
    ctl->nconn++;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
        ctl_close(c);
        return;
    }
    if (ctl->nconn > CONTROL_MAX_CONN) {
        ctl_answer_err(c, CTLPROTO_ERR_TOO_MANY, "too many control connections");
        ctl_close(c);
        return;
    }
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
            c->peer_uid = (long)cred.uid;
    }
    ctl_set_reading(c, 1);
}

/* ---- socket setup ---- */

/* Is something answering on path? 1 yes, 0 no (stale or absent). */
static int
ctl_socket_alive(const char *path)
{
    struct sockaddr_un sun;
    int fd, rc;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        return 0;
    rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    close(fd);
    return rc == 0;
}

int
control_start(uv_loop_t *loop, const char *path, uid_t uid, gid_t gid, struct control **out)
{
    struct control *ctl;
    struct stat st;
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int rc, created_dir = 0;
    mode_t old_mask;

    *out = NULL;
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(dir)) {
        log_err("control_socket %s: path empty or too long for a unix socket", path ? path : "");
        return -ENAMETOOLONG;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    {
        char *slash = strrchr(dir, '/');
        if (slash == NULL)
            snprintf(dir, sizeof(dir), ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
    }
    if (stat(dir, &st) != 0) {
        if ((rc = fsio_mkdirs(dir, 0750)) != 0) {
            log_err("control_socket %s: cannot create %s: %s", path, dir, mx2_strerror(rc));
            return rc;
        }
        created_dir = 1;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_err("control_socket %s: exists and is not a socket; not touching it", path);
            return -EEXIST;
        }
        if (ctl_socket_alive(path)) {
            log_err("control_socket %s: another mx2d answers there", path);
            return MX2_E_EXISTS;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            rc = -errno;
            log_err("control_socket %s: cannot remove the stale socket: %s", path,
                    mx2_strerror(rc));
            return rc;
        }
    }
    ctl = xcalloc(1, sizeof(*ctl));
    ctl->loop = loop;
    ctl->path = xstrdup(path);
    if ((rc = uv_pipe_init(loop, &ctl->listener, 0)) != 0) {
        free(ctl->path);
        free(ctl);
        return rc;
    }
    ctl->listener.data = ctl;
    ctl->listener_open = 1;
    /* Never more open than 0660, not even between bind and chmod. */
    old_mask = umask(0117);
    rc = uv_pipe_bind(&ctl->listener, path);
    umask(old_mask);
    if (rc == 0)
        ctl->bound = 1;
    if (rc == 0 && chmod(path, 0660) != 0)
        rc = -errno;
    if (rc == 0 && uid != (uid_t)-1) {
        if (chown(path, uid, gid) != 0 || (created_dir && chown(dir, uid, gid) != 0))
            rc = -errno;
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&ctl->listener, 16, ctl_on_connection);
    if (rc != 0) {
        log_err("control_socket %s: %s", path, mx2_strerror(rc));
        control_stop(ctl);
        return rc;
    }
    log_info("control socket %s", path);
    *out = ctl;
    return 0;
}

void
control_set_source(struct control *ctl, struct flusher *fl, const struct metrics_src *src)
{
    if (ctl == NULL)
        return;
    ctl->flusher = fl;
    if (src != NULL)
        ctl->src = *src;
}

static void
ctl_on_listener_closed(uv_handle_t *h)
{
    struct control *ctl = h->data;

    ctl->listener_open = 0;
    ctl_maybe_free(ctl);
}

void
control_stop(struct control *ctl)
{
    if (ctl == NULL || ctl->stopping)
        return;
    ctl->stopping = 1;
    for (struct ctl_conn *c = ctl->conns; c != NULL; c = c->next)
        ctl_close(c);
    /* Remove the name only if we bound it. */
    if (ctl->bound)
        (void)unlink(ctl->path);
    uv_close((uv_handle_t *)&ctl->listener, ctl_on_listener_closed);
}
