/*
 * smtp_session.h - one inbound SMTP session: the state machine of SPEC.md
 * "SMTP behaviour (inbound)".
 *
 * States (smtpd_enter_state logs every change at debug level):
 *   INIT  greeting sent, no HELO/EHLO yet
 *   READY after HELO/EHLO (or after RSET / a finished transaction)
 *   MAIL  MAIL FROM accepted, no recipient yet
 *   RCPT  at least one recipient accepted
 *   DATA  between 354 and the end of data; bytes go through smtp_data
 *   SPILL the body buffer is being written to the temp file (reading paused)
 *   COMMIT the message is with the writer thread; 250 comes from its callback
 *   TLS   STARTTLS handshake in progress
 *   QUIT  closing after the last reply
 *
 * Callers: smtp_server (creation, limits, shutdown). Event-loop thread only.
 * Ownership: the server creates sessions; a session frees itself when its
 * connection has closed AND no writer job or file operation is in flight (a
 * session with a job in flight outlives its socket).
 *
 * Memory: an idle session holds only this struct; a session in DATA holds at
 * most SMTPD_BODY_MEM bytes of body (more goes to a temp file in the spool)
 * plus the connection's bounded input buffer. Beyond that, a message may stay
 * in memory while one server-wide pool of SMTPD_BODY_POOL bytes has room
 * (taken in SMTPD_POOL_STEP pieces): the writer then stores it straight
 * from memory, which saves writing it to a temp file and reading it back
 * (about a third of the CPU a 1 MiB message costs). When the pool is
 * exhausted the message spills as before, so memory stays bounded by a
 * constant whatever the message sizes.
 */
#ifndef MX2_SMTP_SESSION_H
#define MX2_SMTP_SESSION_H

#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "conn.h"
#include "envelope.h"
#include "smtp_data.h"
#include "spool.h"
#include "writer.h"

struct smtpd_server;

enum smtpd_state {
    SMTPD_S_INIT = 0,
    SMTPD_S_READY,
    SMTPD_S_MAIL,
    SMTPD_S_RCPT,
    SMTPD_S_DATA,
    SMTPD_S_SPILL,
    SMTPD_S_COMMIT,
    SMTPD_S_TLS,
    SMTPD_S_QUIT,
};

#define SMTPD_LINE_MAX 2048         /* longest command line accepted (with CRLF) */
#define SMTPD_BODY_MEM (48 * 1024)  /* body kept in memory before spilling to a file */
#define SMTPD_BODY_POOL (32u << 20)  /* server-wide: more body kept in memory, shared */
#define SMTPD_POOL_STEP (64 * 1024)
#define SMTPD_MAX_RECEIVED 50       /* more Received: headers is a mail loop */
#define SMTPD_ERROR_LIMIT 20        /* error replies before 421 and close */
#define SMTPD_OUT_HIGH (64 * 1024)  /* unsent replies before commands wait */
/* In DATA smtp_timeout is a budget, not an idle timer: it starts full at
 * the 354, drains in real time, and every byte received refills it by
 * 1/SMTPD_MIN_DATA_RATE s (never above smtp_timeout). A client sending at
 * least this many bytes per second never runs out; one dribbling a byte a
 * second is cut off about smtp_timeout after the 354 (Postfix:
 * smtpd_min_data_rate, same default). */
#define SMTPD_MIN_DATA_RATE 500

struct smtpd_rcpt {
    char *address; /* "local@domain" as it will be given to the primary */
    char *orcpt;   /* ORCPT value or NULL */
    unsigned notify;
};

struct smtpd_session {
    struct conn conn;
    struct smtpd_server *srv;
    struct smtpd_session *next, *prev;
    enum smtpd_state state;
    unsigned counted : 1, esmtp : 1, tls_active : 1, discard_line : 1, closed : 1,
        stop_after : 1, job_inflight : 1, fs_inflight : 1;
    unsigned errors;
    char helo[256];
    char tls_info[160];
    struct buf out; /* replies not yet written */

    /* The transaction. */
    char *sender;   /* NULL: no MAIL yet; "" for <> */
    unsigned mail_flags;     /* ENVELOPE_F_SMTPUTF8 | ENVELOPE_F_8BITMIME */
    int ret;                 /* enum envelope_ret */
    char *envid;
    struct smtpd_rcpt *rcpts;
    size_t nrcpt, rcpt_cap;

    /* DATA. */
    struct smtp_data scan;
    struct buf body;         /* body bytes not yet in the temp file */
    int tmpfd;
    char *tmppath;
    uint64_t spilled;        /* bytes already in the temp file */
    size_t pool_held;        /* bytes of the server's body pool this body uses */
    uint64_t data_deadline;  /* uv_now() ms when the DATA budget runs out */
    uint64_t spill_started;  /* uv_now() ms when the spill in flight began */
    uv_fs_t fsreq;
    int fs_final;            /* the spill in flight is the last one before commit */

    /* COMMIT. */
    struct writer_job job;
    struct envelope env;
};

struct smtpd_session *smtpd_session_new(struct smtpd_server *srv);
/* The connection is accepted and counted: greet and run. */
void smtpd_session_start(struct smtpd_session *s);
/* Over a limit: reply with err's 421 and close. */
void smtpd_session_refuse(struct smtpd_session *s, int err);
/* Accept failed: close quietly. */
void smtpd_session_abort(struct smtpd_session *s);
/* Server stopping: idle sessions get 421 now, sessions in DATA after their reply. */
void smtpd_session_shutdown(struct smtpd_session *s);

#endif
