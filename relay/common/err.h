/*
 * err.h - mx2's error codes, one table for all programs.
 *
 * Contract: 0 is success. mx2's own codes are negative numbers in their own
 * range (MX2_E_BASE downwards); system errors travel as -errno. mx2_strerror()
 * reads both, as mdb_strerror() does. Each mx2 code carries the SMTP reply it
 * maps to (code, enhanced status, text) so the session never invents wording:
 * SPEC.md's reply codes live here and nowhere else (tests/unit/test_err.c checks
 * the table against SPEC.md).
 *
 * LMDB, mbedTLS and libconfig codes are translated inside their wrappers and
 * never appear outside them.
 *
 * Thread-safe: everything here is constant data.
 */
#ifndef MX2_ERR_H
#define MX2_ERR_H

/* X(name, smtp code, enhanced status, text) */
#define MX2_ERR_MAP(X)                                                                             \
    X(INVAL, 501, "5.5.4", "Invalid argument")                                                     \
    X(SYNTAX, 500, "5.5.2", "Syntax error")                                                        \
    X(LINE_TOO_LONG, 500, "5.5.2", "Line too long")                                                \
    X(BAD_ADDRESS, 501, "5.1.3", "Bad address syntax")                                             \
    X(RELAY_DENIED, 554, "5.7.1", "Relay access denied")                                           \
    X(USER_UNKNOWN, 550, "5.1.1", "Recipient address rejected: User unknown")                      \
    X(MAP_UNAVAILABLE, 451, "4.3.0", "Recipient map unavailable, try again later")                 \
    X(TOO_MANY_RCPTS, 452, "4.5.3", "Error: too many recipients")                                  \
    X(TOO_BIG, 552, "5.3.4", "Error: message file too big")                                        \
    X(SPOOL, 452, "4.3.1", "Insufficient system storage")                                          \
    X(LOOP, 554, "5.4.6", "Too many hops: mail forwarding loop")                                   \
    X(BARE_NEWLINE, 550, "5.5.2", "Error: bare <LF> or <CR> received")                             \
    X(TIMEOUT, 421, "4.4.2", "Error: timeout exceeded")                                            \
    X(TOO_MANY_CONN, 421, "4.7.0", "Error: too many connections")                                  \
    X(TOO_MANY_ERRORS, 421, "4.7.0", "Error: too many errors")                                     \
    X(PRIMARY_UP, 421, "4.3.2", "Service not available, deliver to the primary MX")                \
    X(NOT_FOUND, 550, "5.1.0", "No such entry")                                                    \
    X(EXISTS, 451, "4.3.0", "Entry exists")                                                        \
    X(CORRUPT, 451, "4.3.0", "Corrupt queue file")                                                 \
    X(CONFIG, 451, "4.3.5", "Configuration error")                                                 \
    X(TLS, 454, "4.7.0", "TLS not available due to local problem")                                 \
    X(PROTOCOL, 451, "4.5.0", "Protocol error")                                                    \
    X(SHUTDOWN, 421, "4.3.2", "Service shutting down")                                             \
    X(INTERNAL, 451, "4.3.0", "Local error in processing")                                         \
    X(BAD_SENDER, 501, "5.1.7", "Bad sender address syntax")                                       \
    X(BAD_PARAM, 555, "5.5.4", "Unsupported option")                                               \
    X(NOT_IMPLEMENTED, 502, "5.5.1", "Command not implemented")                                   \
    X(FORMAT, 451, "4.3.0", "Unsupported queue format")                                           \
    X(PANIC, 451, "4.3.0", "Queue storage failed")

#define MX2_E_BASE (-40000)

enum mx2_err_index_ {
#define MX2_ERR_IDX_(name, code, ecode, text) MX2_ERRIDX_##name,
    MX2_ERR_MAP(MX2_ERR_IDX_)
#undef MX2_ERR_IDX_
        MX2_ERRIDX_COUNT_
};

/* MX2_E_INVAL = MX2_E_BASE - 1, and so on down the table. */
enum mx2_err {
    MX2_OK = 0,
#define MX2_ERR_VAL_(name, code, ecode, text) MX2_E_##name = MX2_E_BASE - 1 - MX2_ERRIDX_##name,
    MX2_ERR_MAP(MX2_ERR_VAL_)
#undef MX2_ERR_VAL_
};

/* Text for an mx2 code or a -errno value; never NULL. */
const char *mx2_strerror(int err);

/* The SMTP reply an mx2 code maps to. For -errno and unknown values:
 * 451 4.3.0 "Local error in processing". Returns the three-digit code. */
int mx2_err_smtp(int err, const char **ecode, const char **text);

/* 1 if err is one of mx2's own codes (not -errno, not 0). */
int mx2_err_is_mx2(int err);

#endif
