/*
 * rcptmap.c - the LMDB recipient map (see rcptmap.h).
 *
 * Why readers use MDB_NOLOCK. LMDB's lock file exists so that readers and a
 * writer sharing one file can coordinate page reuse. Our map file is never
 * written after it has been renamed into place: every build writes a fresh
 * temporary file and renames it over the old name. A reader therefore reads
 * an immutable file, needs no reader slot, and mx2d needs neither a lock file
 * nor write access to the map's directory. For the same reason one read
 * transaction can stay open for the life of the mapping: there is no newer
 * snapshot to miss inside that inode. Picking up a rebuilt map means opening
 * the new inode (rcptmap_maybe_reopen), never refreshing the transaction.
 *
 * Why the builder also uses MDB_NOLOCK and MDB_NOSYNC. The temporary file has
 * exactly one user, the builder, until the rename; and durability comes from
 * the explicit mdb_env_sync(force) + fsync + rename + directory fsync at
 * commit, in that order (fsio.c explains the order), so per-transaction syncs
 * would only cost time.
 *
 * Why sorted appends. Keys are collected in memory, sorted with LMDB's own
 * default order (memcmp over the common length, then the shorter first) and
 * written with MDB_APPEND, which fills each leaf page completely and skips the
 * B-tree search: a million keys take well under a second.
 */
#include "rcptmap.h"

#include "err.h"
#include "fsio.h"
#include "xalloc.h"

#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ keys */

static int
rcptmap_is_ascii_upper(unsigned char c)
{
    return c >= 'A' && c <= 'Z';
}

int
rcptmap_check_local(const char *local, size_t len, const char **why)
{
    const char *reason = NULL;

    if (len == 0)
        reason = "empty local part";
    else if (len > RCPTMAP_LOCAL_MAX)
        reason = "local part longer than 64 octets";
    for (size_t i = 0; reason == NULL && i < len; i++) {
        unsigned char c = (unsigned char)local[i];
        if (c == ' ' || c == '\t')
            reason = "local part contains whitespace";
        else if (c < 0x20 || c == 0x7f)
            reason = "local part contains a control character";
        /* Routing characters: "a%b@relay", "b!a@relay" and "@a:b@relay" are
         * forms that a downstream MTA (the primary trusts mx2) may route
         * elsewhere. Refusing them here keeps them out of the map and out of
         * every lookup, catch-all included. */
        else if (c == '%' || c == '!' || c == '@' || c == ':')
            reason = "local part contains a routing character (% ! @ :)";
        else if (strchr("\"\\<>(),;[]", c) != NULL)
            reason = "local part contains a special character";
    }
    if (reason != NULL && why != NULL)
        *why = reason;
    return reason == NULL ? 0 : MX2_E_BAD_ADDRESS;
}

int
rcptmap_check_domain(const char *domain, size_t len, const char **why)
{
    const char *reason = NULL;
    size_t label = 0;

    if (len > 0 && domain[len - 1] == '.')
        len--; /* one trailing dot: the root, "example.jp." == "example.jp" */
    if (len == 0)
        reason = "empty domain";
    else if (len > 253)
        reason = "domain longer than 253 octets";
    else if (domain[0] == '[')
        reason = "address literal not allowed as a map domain";
    for (size_t i = 0; reason == NULL && i < len; i++) {
        unsigned char c = (unsigned char)domain[i];
        if (c == '.') {
            if (label == 0)
                reason = "domain has an empty label";
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || rcptmap_is_ascii_upper(c) || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c >= 0x80))
            reason = "domain contains an invalid character";
        else if (++label > 63)
            reason = "domain label longer than 63 octets";
    }
    if (reason == NULL && label == 0)
        reason = "domain has an empty label";
    if (reason != NULL && why != NULL)
        *why = reason;
    return reason == NULL ? 0 : MX2_E_BAD_ADDRESS;
}

static void
rcptmap_lower_copy(char *dst, const char *src, size_t n)
{
    /* ASCII only: UTF-8 bytes (>= 0x80) are left alone, and tolower() is not
     * used because it depends on the locale. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (char)(rcptmap_is_ascii_upper(c) ? c + ('a' - 'A') : c);
    }
}

int
rcptmap_normalize_key(const char *local, size_t local_len, const char *domain, size_t domain_len,
                      char *out, size_t outsize, const char **why)
{
    size_t need;
    int rc;

    if (local_len > 0 && (rc = rcptmap_check_local(local, local_len, why)) != 0)
        return rc;
    if ((rc = rcptmap_check_domain(domain, domain_len, why)) != 0)
        return rc;
    if (domain[domain_len - 1] == '.')
        domain_len--;
    need = local_len + 1 + domain_len + 1;
    if (out == NULL || need > outsize) {
        if (why != NULL)
            *why = "key buffer too small";
        return MX2_E_INVAL;
    }
    rcptmap_lower_copy(out, local, local_len);
    out[local_len] = '@';
    rcptmap_lower_copy(out + local_len + 1, domain, domain_len);
    out[need - 1] = '\0';
    return (int)(need - 1);
}

int
rcptmap_normalize_address(const char *addr, char *out, size_t outsize, const char **why)
{
    const char *at;

    if (addr == NULL || (at = strrchr(addr, '@')) == NULL) {
        if (why != NULL)
            *why = "no '@' in address";
        return MX2_E_BAD_ADDRESS;
    }
    if (at == addr) /* "@domain": the explicit catch-all */
        return rcptmap_normalize_key("", 0, at + 1, strlen(at + 1), out, outsize, why);
    return rcptmap_normalize_key(addr, (size_t)(at - addr), at + 1, strlen(at + 1), out, outsize,
                                 why);
}

/* ---------------------------------------------------------------- lookup */

struct rcptmap_ident {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct rcptmap {
    char *path;
    MDB_env *env; /* NULL while no map is open */
    MDB_txn *txn; /* read-only, lives as long as env */
    MDB_dbi dbi;
    size_t count;
    struct rcptmap_ident ident; /* of the open file */
    int have_failed;            /* the file at `failed` could not be opened */
    struct rcptmap_ident failed;
    int failed_rc;
};

static void
rcptmap_ident_from(struct rcptmap_ident *id, const struct stat *st)
{
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = st->st_size;
    id->mtime = st->st_mtim;
}

static int
rcptmap_ident_eq(const struct rcptmap_ident *a, const struct rcptmap_ident *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Open the file at path into env/txn/dbi. All LMDB errors become
 * MX2_E_MAP_UNAVAILABLE; a missing or forbidden file stays -errno so that
 * tools can say which. */
static int
rcptmap_load(const char *path, MDB_env **envp, MDB_txn **txnp, MDB_dbi *dbip, size_t *count,
             struct rcptmap_ident *id)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_envinfo info;
    MDB_stat ms;
    struct stat st;
    int fd, rc;

    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || st.st_size == 0)
        return MX2_E_MAP_UNAVAILABLE;
    if (mdb_env_create(&env) != 0)
        return MX2_E_MAP_UNAVAILABLE;
    rc = mdb_env_open(env, path, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOTLS, 0);
    if (rc != 0) {
        rc = (rc == EACCES || rc == ENOENT) ? -rc : MX2_E_MAP_UNAVAILABLE;
        goto fail;
    }
    rc = MX2_E_MAP_UNAVAILABLE;
    if (mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &st) < 0)
        goto fail;
    /* A truncated file would pass the header checks and then SIGBUS on the
     * first access past its end: insist that every page LMDB believes in is
     * really in the file. */
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &ms) != 0 || ms.ms_psize == 0 ||
        (uint64_t)st.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize)
        goto fail;
    if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
        goto fail;
    if (mdb_dbi_open(txn, NULL, 0, dbip) != 0 || mdb_stat(txn, *dbip, &ms) != 0)
        goto fail;
    *envp = env;
    *txnp = txn;
    *count = ms.ms_entries;
    rcptmap_ident_from(id, &st);
    return 0;
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc;
}

static void
rcptmap_unload(struct rcptmap *m)
{
    if (m->txn != NULL)
        mdb_txn_abort(m->txn);
    if (m->env != NULL)
        mdb_env_close(m->env);
    m->txn = NULL;
    m->env = NULL;
    m->count = 0;
}

/* Open the file now at m->path and, only on success, replace the current
 * map. Returns 1 or an error (the old map stays). */
static int
rcptmap_swap(struct rcptmap *m)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi = 0;
    size_t count = 0;
    struct rcptmap_ident id;
    struct stat st;
    int rc;

    memset(&id, 0, sizeof(id));
    rc = rcptmap_load(m->path, &env, &txn, &dbi, &count, &id);
    if (rc != 0) {
        /* Remember which file failed so that the periodic check does not
         * re-read a bad file every few seconds; a new file clears this. */
        if (stat(m->path, &st) == 0) {
            rcptmap_ident_from(&m->failed, &st);
            m->have_failed = 1;
            m->failed_rc = rc;
        }
        return rc;
    }
    rcptmap_unload(m);
    m->env = env;
    m->txn = txn;
    m->dbi = dbi;
    m->count = count;
    m->ident = id;
    m->have_failed = 0;
    return 1;
}

int
rcptmap_open(const char *path, struct rcptmap **map)
{
    struct rcptmap *m;
    int rc;

    if (map == NULL)
        return MX2_E_INVAL;
    *map = NULL;
    if (path == NULL || *path == '\0')
        return MX2_E_INVAL;
    m = xcalloc(1, sizeof(*m));
    m->path = xstrdup(path);
    *map = m;
    rc = rcptmap_swap(m);
    return rc == 1 ? 0 : rc;
}

void
rcptmap_close(struct rcptmap *map)
{
    if (map == NULL)
        return;
    rcptmap_unload(map);
    free(map->path);
    free(map);
}

int
rcptmap_is_open(const struct rcptmap *map)
{
    return map != NULL && map->env != NULL;
}

size_t
rcptmap_count(const struct rcptmap *map)
{
    return map != NULL ? map->count : 0;
}

int
rcptmap_maybe_reopen(struct rcptmap *map)
{
    struct rcptmap_ident id;
    struct stat st;

    if (map == NULL)
        return MX2_E_INVAL;
    if (stat(map->path, &st) < 0)
        return -errno; /* gone: keep serving the map we have */
    rcptmap_ident_from(&id, &st);
    if (map->env != NULL && rcptmap_ident_eq(&id, &map->ident))
        return 0;
    if (map->have_failed && rcptmap_ident_eq(&id, &map->failed))
        return map->failed_rc;
    return rcptmap_swap(map);
}

int
rcptmap_reopen(struct rcptmap *map)
{
    if (map == NULL)
        return MX2_E_INVAL;
    return rcptmap_swap(map);
}

/* 0 found, MX2_E_NOT_FOUND, or MX2_E_MAP_UNAVAILABLE for anything else LMDB
 * says (a damaged page must not turn into "user unknown"). */
static int
rcptmap_get(struct rcptmap *m, const char *key, size_t len)
{
    MDB_val k = {len, (void *)key}, v;
    int rc = mdb_get(m->txn, m->dbi, &k, &v);

    if (rc == 0)
        return 0;
    return rc == MDB_NOTFOUND ? MX2_E_NOT_FOUND : MX2_E_MAP_UNAVAILABLE;
}

int
rcptmap_lookup(struct rcptmap *map, const char *local, const char *domain, const char *delimiter,
               char *matched_key, size_t len)
{
    char key[RCPTMAP_KEY_MAX];
    size_t local_len, cut;
    int n, rc;

    if (map == NULL || map->env == NULL)
        return MX2_E_MAP_UNAVAILABLE;
    if (local == NULL || domain == NULL || (local_len = strlen(local)) == 0)
        return MX2_E_NOT_FOUND;

    /* 1. Exact. A refused local part (routing characters, whitespace ...)
     * stops here: it must not fall through to the catch-all. */
    n = rcptmap_normalize_key(local, local_len, domain, strlen(domain), key, sizeof(key), NULL);
    if (n < 0)
        return MX2_E_NOT_FOUND;
    rc = rcptmap_get(map, key, (size_t)n);

    /* 2. recipient_delimiter: cut at the first delimiter character, as
     * Postfix does with a multi-character recipient_delimiter. A cut at
     * position 0 would leave "@domain", the catch-all key, so it is skipped
     * here and the catch-all gets its own explicit step. */
    if (rc == MX2_E_NOT_FOUND && delimiter != NULL && *delimiter != '\0') {
        cut = strcspn(local, delimiter);
        if (cut > 0 && cut < local_len) {
            n = rcptmap_normalize_key(local, cut, domain, strlen(domain), key, sizeof(key), NULL);
            rc = n < 0 ? MX2_E_NOT_FOUND : rcptmap_get(map, key, (size_t)n);
        }
    }

    /* 3. Catch-all "@domain". */
    if (rc == MX2_E_NOT_FOUND) {
        n = rcptmap_normalize_key("", 0, domain, strlen(domain), key, sizeof(key), NULL);
        rc = n < 0 ? MX2_E_NOT_FOUND : rcptmap_get(map, key, (size_t)n);
    }

    if (rc == 0 && matched_key != NULL && len > 0) {
        size_t k = strlen(key) < len - 1 ? strlen(key) : len - 1;
        memcpy(matched_key, key, k);
        matched_key[k] = '\0';
    }
    return rc;
}

int
rcptmap_iterate(struct rcptmap *map, int (*cb)(const char *key, size_t key_len, void *arg),
                void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc, op = MDB_FIRST, ret = 0;

    if (map == NULL || map->env == NULL)
        return MX2_E_MAP_UNAVAILABLE;
    if (mdb_cursor_open(map->txn, map->dbi, &cur) != 0)
        return MX2_E_MAP_UNAVAILABLE;
    while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
        op = MDB_NEXT;
        if ((ret = cb(k.mv_data, k.mv_size, arg)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (ret != 0)
        return ret;
    return rc == MDB_NOTFOUND ? 0 : MX2_E_MAP_UNAVAILABLE;
}

/* ----------------------------------------------------------------- build */

struct rcptmap_keyref {
    size_t off;
    size_t len;
};

struct rcptmap_build {
    char *path;
    char *tmp;
    char *lockfile;
    MDB_env *env;
    char *arena; /* every key, back to back, no NULs */
    size_t arena_len, arena_cap;
    struct rcptmap_keyref *keys;
    size_t nkeys, keys_cap;
    int sorted; /* keys[] sorted and without duplicates */
};

static char *
rcptmap_strcat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = xmalloc(la + lb + lc + 1);

    /* stpcpy, not three memcpy: each copy visibly ends in a NUL, and the
     * size above is exact. */
    stpcpy(stpcpy(stpcpy(s, a), b), c);
    return s;
}

static void
rcptmap_build_free(struct rcptmap_build *b)
{
    if (b->env != NULL)
        mdb_env_close(b->env);
    unlink(b->tmp);
    unlink(b->lockfile);
    free(b->path);
    free(b->tmp);
    free(b->lockfile);
    free(b->arena);
    free(b->keys);
    free(b);
}

int
rcptmap_build_begin(const char *path, struct rcptmap_build **bp)
{
    struct rcptmap_build *b;
    char pid[32];
    int rc;

    if (bp == NULL)
        return MX2_E_INVAL;
    *bp = NULL;
    if (path == NULL || *path == '\0')
        return MX2_E_INVAL;
    b = xcalloc(1, sizeof(*b));
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    b->path = xstrdup(path);
    b->tmp = rcptmap_strcat3(path, ".tmp.", pid);
    b->lockfile = rcptmap_strcat3(b->tmp, "-lock", "");
    /* A leftover from an earlier build that died with our pid: ours now. */
    unlink(b->tmp);
    unlink(b->lockfile);
    if (mdb_env_create(&b->env) != 0) {
        b->env = NULL;
        rcptmap_build_free(b);
        return MX2_E_INTERNAL;
    }
    rc = mdb_env_set_mapsize(b->env, (size_t)1 << 20);
    if (rc == 0)
        rc = mdb_env_open(b->env, b->tmp, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC | MDB_NOMETASYNC,
                          0644);
    if (rc != 0) {
        rc = rc > 0 && rc < 4096 ? -rc : MX2_E_INTERNAL;
        rcptmap_build_free(b);
        return rc;
    }
    *bp = b;
    return 0;
}

int
rcptmap_build_add(struct rcptmap_build *b, const char *key)
{
    char norm[RCPTMAP_KEY_MAX];
    int n;

    if (b == NULL || key == NULL)
        return MX2_E_INVAL;
    n = rcptmap_normalize_address(key, norm, sizeof(norm), NULL);
    if (n < 0)
        return MX2_E_BAD_ADDRESS;
    if (b->arena_len + (size_t)n > b->arena_cap) {
        b->arena_cap = b->arena_cap ? b->arena_cap * 2 : 4096;
        while (b->arena_len + (size_t)n > b->arena_cap)
            b->arena_cap *= 2;
        b->arena = xrealloc(b->arena, b->arena_cap);
    }
    if (b->nkeys == b->keys_cap) {
        b->keys_cap = b->keys_cap ? b->keys_cap * 2 : 256;
        b->keys = xrealloc(b->keys, b->keys_cap * sizeof(*b->keys));
    }
    memcpy(b->arena + b->arena_len, norm, (size_t)n);
    b->keys[b->nkeys].off = b->arena_len;
    b->keys[b->nkeys].len = (size_t)n;
    b->nkeys++;
    b->arena_len += (size_t)n;
    b->sorted = 0;
    return 0;
}

/* LMDB's default key order (mdb_cmp_memn): bytes over the common length,
 * then the shorter key first. MDB_APPEND needs exactly this order. */
static int
rcptmap_keycmp(const void *a, const void *b, void *arena)
{
    const struct rcptmap_keyref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp((char *)arena + x->off, (char *)arena + y->off, n);

    if (c != 0)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static void
rcptmap_build_sort(struct rcptmap_build *b)
{
    size_t w = 0;

    if (b->sorted)
        return;
    if (b->nkeys > 1)
        qsort_r(b->keys, b->nkeys, sizeof(*b->keys), rcptmap_keycmp, b->arena);
    for (size_t r = 0; r < b->nkeys; r++)
        if (w == 0 || rcptmap_keycmp(&b->keys[w - 1], &b->keys[r], b->arena) != 0)
            b->keys[w++] = b->keys[r];
    b->nkeys = w;
    b->sorted = 1;
}

size_t
rcptmap_build_count(struct rcptmap_build *b)
{
    if (b == NULL)
        return 0;
    rcptmap_build_sort(b);
    return b->nkeys;
}

/* Fill the map in one write transaction. MDB_MAP_FULL only if our size
 * estimate was wrong; the caller then retries with a larger map. */
static int
rcptmap_build_write(struct rcptmap_build *b)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc;

    if ((rc = mdb_txn_begin(b->env, NULL, 0, &txn)) != 0)
        return rc;
    if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi)) != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    for (size_t i = 0; i < b->nkeys; i++) {
        MDB_val k = {b->keys[i].len, b->arena + b->keys[i].off};
        MDB_val v = {0, (void *)""};
        if ((rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND)) != 0) {
            mdb_txn_abort(txn);
            return rc;
        }
    }
    return mdb_txn_commit(txn);
}

int
rcptmap_build_commit(struct rcptmap_build *b)
{
    size_t mapsize;
    int fd, rc = 0;

    if (b == NULL)
        return MX2_E_INVAL;
    rcptmap_build_sort(b);
    /* Each leaf node costs the key, an 8-byte node header and a 2-byte slot;
     * appends fill pages, so twice that plus slack covers branch pages and
     * the metadata. The file only grows to the pages really used. */
    mapsize = ((b->arena_len + b->nkeys * 16) * 2 + ((size_t)4 << 20)) & ~(size_t)0xffff;
    for (int attempt = 0; attempt < 6; attempt++) {
        if ((rc = mdb_env_set_mapsize(b->env, mapsize)) != 0)
            break;
        rc = rcptmap_build_write(b);
        if (rc != MDB_MAP_FULL)
            break;
        mapsize *= 2;
    }
    if (rc == 0)
        rc = mdb_env_sync(b->env, 1);
    if (rc == 0)
        rc = mdb_env_get_fd(b->env, &fd);
    if (rc != 0) {
        rc = rc > 0 && rc < 4096 ? -rc : MX2_E_INTERNAL;
        rcptmap_build_free(b);
        return rc;
    }
    /* fsync the data, rename over the old map, fsync the directory: from here
     * on a reader opening `path` sees the complete new map. */
    rc = fsio_durable_rename(fd, b->tmp, b->path);
    rcptmap_build_free(b); /* closes env; unlinks tmp (already renamed) */
    return rc;
}

void
rcptmap_build_abort(struct rcptmap_build *b)
{
    if (b != NULL)
        rcptmap_build_free(b);
}
