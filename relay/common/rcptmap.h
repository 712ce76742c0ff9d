/*
 * rcptmap.h - the recipient map: an LMDB file of valid recipient keys.
 *
 * Purpose. mx2 accepts mail only for recipients listed here (SPEC.md
 * "mx2map"), so it never accepts mail it would later have to bounce to a
 * forged sender. Keys are lower-cased "local@domain" strings, plus "@domain"
 * for an explicit catch-all; values are empty. rcptmap_normalize_key() is the
 * ONE normaliser used both when the map is built (mx2map) and when it is
 * queried (mx2d's SMTP session, `mx2map query`): if the two sides spelled keys
 * differently, a case or routing trick could match a key it should not, so
 * this function is part of the no-open-relay guarantee.
 *
 * Callers and threads.
 *  - Lookup side (rcptmap_open/lookup/maybe_reopen/reopen/iterate/close): mx2d
 *    on its event-loop thread, and mx2map. A struct rcptmap is used by one
 *    thread at a time. Lookups never block in practice: the map is a
 *    read-only mmap (MDB_RDONLY|MDB_NOSUBDIR|MDB_NOLOCK|MDB_NOTLS) with one
 *    long-lived read transaction; a lookup is a B-tree walk in memory (about a
 *    microsecond). maybe_reopen() costs one stat(2) when nothing changed.
 *    mx2d needs neither a lock file nor write access to the map directory.
 *  - Build side (rcptmap_build_*): mx2map and tests only. Blocking (fsync);
 *    never call it from mx2d's event loop.
 *
 * Atomic replacement. A build writes "<path>.tmp.<pid>" in the same
 * directory, syncs it, renames it over <path> and syncs the directory. The
 * file is never written in place after that rename, which is why readers may
 * skip LMDB's lock file: a reader that has the old map open keeps reading the
 * old inode; a new open sees the complete new map, never a mix.
 *
 * Ownership. rcptmap_open() returns an owned handle that rcptmap_close()
 * frees (NULL is a no-op). Strings passed in are borrowed for the call.
 * rcptmap_build_commit() and rcptmap_build_abort() free the builder whatever
 * happens.
 *
 * Errors. 0 or a negative code: MX2_E_NOT_FOUND (no such recipient; includes
 * addresses the normaliser refuses, such as local parts holding routing
 * characters), MX2_E_MAP_UNAVAILABLE (map missing, unreadable or corrupt: the
 * SMTP server answers 451 4.3.0, never a 5xx), MX2_E_BAD_ADDRESS (a key
 * refused at build time), MX2_E_INVAL, or -errno for build-side I/O. LMDB
 * codes never leave rcptmap.c.
 */
#ifndef MX2_RCPTMAP_H
#define MX2_RCPTMAP_H

#include <stddef.h>

/* RFC 5321 4.5.3.1: local part <= 64 octets, domain <= 255. */
#define RCPTMAP_LOCAL_MAX 64
#define RCPTMAP_DOMAIN_MAX 255
/* Longest key plus its NUL: size output buffers with this. */
#define RCPTMAP_KEY_MAX (RCPTMAP_LOCAL_MAX + 1 + RCPTMAP_DOMAIN_MAX + 1)

struct rcptmap;
struct rcptmap_build;

/* ---- Keys (pure, any thread) ---- */

/* Check a local part (no '@'). Refused: empty, longer than 64 octets,
 * whitespace, control bytes (< 0x20, 0x7f), the routing characters '%', '!',
 * '@', ':', and the RFC 5322 specials that cannot appear unquoted
 * ('"', '\\', '<', '>', '(', ')', ',', ';', '[', ']'). Bytes >= 0x80 (UTF-8,
 * RFC 6531) are allowed and kept as they are. Returns 0 or MX2_E_BAD_ADDRESS
 * with *why (if why != NULL) set to a static reason. */
int rcptmap_check_local(const char *local, size_t len, const char **why);

/* Check a domain: dot-separated labels of letters, digits, '-', '_' or bytes
 * >= 0x80, each 1..63 octets, at most 253 octets in all; one trailing dot is
 * allowed (and dropped by the normaliser). Address literals ("[1.2.3.4]") are
 * refused. Returns 0 or MX2_E_BAD_ADDRESS with *why. */
int rcptmap_check_domain(const char *domain, size_t len, const char **why);

/* Build the canonical key from a local part and a domain: ASCII lower-cased
 * (UTF-8 bytes untouched), a single trailing dot of the domain dropped,
 * "local@domain", or "@domain" when local_len == 0 (the catch-all key).
 * Writes a NUL-terminated key to out (outsize >= RCPTMAP_KEY_MAX always
 * suffices). Returns the key length (> 0), MX2_E_BAD_ADDRESS (with *why) when
 * either half is refused, or MX2_E_INVAL when out is too small. */
int rcptmap_normalize_key(const char *local, size_t local_len, const char *domain,
                          size_t domain_len, char *out, size_t outsize, const char **why);

/* The same for a whole "local@domain" or "@domain" string, split at its last
 * '@' (an '@' left in the local part is then refused). */
int rcptmap_normalize_address(const char *addr, char *out, size_t outsize, const char **why);

/* ---- Lookup side ---- */

/* Open the map at `path`. Always returns a handle in *map (unless path or map
 * is NULL: MX2_E_INVAL), so the daemon can start while the map is missing and
 * pick it up later through rcptmap_maybe_reopen(). Returns 0 when the map is
 * open, or MX2_E_MAP_UNAVAILABLE / -errno saying why it is not; until a later
 * reopen succeeds, lookups return MX2_E_MAP_UNAVAILABLE. Close it either way. */
int rcptmap_open(const char *path, struct rcptmap **map);
void rcptmap_close(struct rcptmap *map);

/* 1 if a map is currently open (lookups can answer), else 0. */
int rcptmap_is_open(const struct rcptmap *map);

/* Number of keys in the open map (0 when none is open). */
size_t rcptmap_count(const struct rcptmap *map);

/* Is local@domain a valid recipient? local and domain are NUL-terminated,
 * as received (any case). Tries, in order:
 *   1. the exact key "local@domain";
 *   2. if `delimiter` is non-NULL and non-empty, a set of delimiter characters
 *      (Postfix recipient_delimiter): the local part cut at the first of them,
 *      "user+tag@d" -> "user@d" (not when the cut would leave it empty);
 *   3. the catch-all "@domain".
 * A local part the normaliser refuses (routing characters ...) is never
 * matched, not even by a catch-all. On success the matched key is copied into
 * matched_key (if non-NULL; truncated to len - 1 bytes and NUL-terminated).
 * Returns 0, MX2_E_NOT_FOUND or MX2_E_MAP_UNAVAILABLE. */
int rcptmap_lookup(struct rcptmap *map, const char *local, const char *domain,
                   const char *delimiter, char *matched_key, size_t len);

/* Cheap change check, meant to be called every few seconds: stat(2) the path;
 * when its inode, size or mtime differ from the open map's (or no map is open
 * yet), open the new file and swap it in. Returns 0 when nothing changed, 1
 * when a new map was loaded, or an error (MX2_E_MAP_UNAVAILABLE / -errno)
 * while the previously open map, if any, stays in use. */
int rcptmap_maybe_reopen(struct rcptmap *map);

/* Forced reopen (SIGHUP): like maybe_reopen but opens even when the file
 * looks unchanged. Returns 1 on success, or an error with the old map kept. */
int rcptmap_reopen(struct rcptmap *map);

/* Call cb(key, key_len, arg) for every key in sorted (byte) order; keys are
 * not NUL-terminated and die when cb returns. A non-zero return from cb stops
 * the walk and is returned. MX2_E_MAP_UNAVAILABLE when no map is open. */
int rcptmap_iterate(struct rcptmap *map, int (*cb)(const char *key, size_t key_len, void *arg),
                    void *arg);

/* ---- Build side (blocking) ---- */

/* Start a build that will replace `path`: creates "<path>.tmp.<pid>" in the
 * same directory now, so an unwritable directory fails here. Returns 0 with
 * *b set, or -errno / MX2_E_INTERNAL. */
int rcptmap_build_begin(const char *path, struct rcptmap_build **b);

/* Add one key, "local@domain" or "@domain" (any case; normalised here).
 * Duplicates are fine. Returns 0 or MX2_E_BAD_ADDRESS (key skipped). Keys are
 * held in memory and written, sorted, at commit. */
int rcptmap_build_add(struct rcptmap_build *b, const char *key);

/* Number of distinct keys added so far. */
size_t rcptmap_build_count(struct rcptmap_build *b);

/* Write all keys (sorted appends), sync, rename over the target, sync the
 * directory. Frees b. Returns 0 or an error; on error the old map (if any)
 * is untouched and the temporary file is removed. */
int rcptmap_build_commit(struct rcptmap_build *b);

/* Drop the build and its temporary file. Frees b; NULL is a no-op. */
void rcptmap_build_abort(struct rcptmap_build *b);

#endif
