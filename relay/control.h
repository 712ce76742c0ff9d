/*
 * control.h - mx2d's control socket: the unix-socket server behind mx2ctl's
 * flush, delete, hold, release and stats (protocol: common/ctlproto.h).
 *
 * The socket: `control_socket` from the config. control_start() creates its
 * directory if missing (mode 0750), refuses to take over a path where a live
 * mx2d already answers or that is not a socket, unlinks a stale socket,
 * binds with a umask so it is never more open than 0660 even for an
 * instant, then sets mode 0660 and, when uid/gid are given, chowns the
 * socket (and a directory it created) to the daemon's user. main.c calls it
 * BEFORE dropping privileges, like the port 25 bind: /run/mx2 is usually
 * root's, and after the drop the daemon could neither create nor replace a
 * socket there; the chown makes the socket the daemon user's, so members of
 * that user's group may operate the queue, and root always may.
 *
 * Each connection handles one request at a time (reading pauses while an
 * operation is with the flusher/writer), its input is bounded by
 * CTLPROTO_LINE_MAX (an overlong line gets ERR 413 and is skipped), it may
 * name CTLPROTO_SESSION_MAX_IDS IDs in all (then ERR 429), and it is closed
 * after CONTROL_IDLE_MS without a request. At most CONTROL_MAX_CONN
 * connections are served at once. Malformed requests get an ERR line and
 * the connection goes on. Mutating requests are logged with the peer's uid.
 *
 * Callers: main.c. Event-loop thread only. The flusher and the metrics
 * source are borrowed and must outlive the server (control_stop first).
 *
 * Errors: control_start returns 0 or a negative libuv code / -errno /
 * MX2_E_EXISTS (another mx2d answers on the socket); it logs the reason.
 */
#ifndef MX2_CONTROL_H
#define MX2_CONTROL_H

#include <sys/types.h>
#include <uv.h>

#include "metrics.h"

#define CONTROL_IDLE_MS 30000
#define CONTROL_MAX_CONN 32

struct control;
struct flusher;

/* Create and listen on path. uid/gid (uid_t)-1/(gid_t)-1: no chown. */
int control_start(uv_loop_t *loop, const char *path, uid_t uid, gid_t gid, struct control **out);
/* What the requests act on (before the loop runs). */
void control_set_source(struct control *ctl, struct flusher *fl, const struct metrics_src *src);
/* Close the listener and every connection, unlink the socket. Operations
 * still with the writer finish; their answers are dropped. The struct frees
 * itself once its handles are closed. NULL is a no-op. */
void control_stop(struct control *ctl);

#endif
