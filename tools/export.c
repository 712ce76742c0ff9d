/*
 * export.c - mbox and Maildir writers for `mx2ctl export` (see export.h).
 *
 * Why mboxrd: in plain mbox (mboxo) a body line ">From " cannot be told from
 * a quoted "From ", so unquoting corrupts it; mboxrd quotes every
 * /^>*From / line, so a reader removes exactly one '>' and gets the original
 * back. mutt, Dovecot and Python's mailbox module read it.
 *
 * Why link() and not rename() into new/: rename replaces an existing file
 * silently, and two exports in the same second of the same message would
 * then lose one copy without a word; link fails with EEXIST and we pick
 * another name.
 */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsio.h"
#include "spool.h"

/* ---- the message text ---- */

struct export_collect {
    unsigned char *p;
    size_t len, cap;
};

static int
export_collect_piece(void *arg, const unsigned char *p, size_t n)
{
    struct export_collect *c = arg;

    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        unsigned char *np;
        while (cap < c->len + n)
            cap *= 2;
        if ((np = realloc(c->p, cap)) == NULL)
            return -ENOMEM;
        c->p = np;
        c->cap = cap;
    }
    memcpy(c->p + c->len, p, n);
    c->len += n;
    return 0;
}

/* Does line[0..n) match /^>*From /? */
static int
export_from_quoted(const unsigned char *line, size_t n)
{
    size_t i = 0;

    while (i < n && line[i] == '>')
        i++;
    return n - i >= 5 && memcmp(line + i, "From ", 5) == 0;
}

static int
export_is_pending(const struct envelope_rcpt *r)
{
    return r->state == ENVELOPE_RCPT_PENDING || r->state == ENVELOPE_RCPT_DEFERRED;
}

int
export_write_message(FILE *out, const struct envelope *e, const unsigned char *body, size_t len,
                     int mboxrd)
{
    struct export_collect c = {0};
    size_t npending = 0, pos = 0;
    int rc;

    if (out == NULL || e == NULL || (body == NULL && len > 0))
        return MX2_E_INVAL;
    /* Undo the dot-stuffing into one buffer: quoting needs whole lines, and
     * a piece boundary may fall anywhere. */
    if ((rc = spool_body_unstuff(body, len, export_collect_piece, &c)) != 0) {
        free(c.p);
        return rc;
    }
    fprintf(out, "Return-Path: <%s>\n", e->sender ? e->sender : "");
    for (size_t i = 0; i < e->nrcpt; i++)
        npending += export_is_pending(&e->rcpts[i]);
    for (size_t i = 0; i < e->nrcpt; i++)
        if (npending == 0 || export_is_pending(&e->rcpts[i]))
            fprintf(out, "X-Original-To: %s\n", e->rcpts[i].address);
    while (pos < c.len) {
        const unsigned char *line = c.p + pos;
        const unsigned char *lf = memchr(line, '\n', c.len - pos);
        size_t n = lf ? (size_t)(lf - line) : c.len - pos;
        size_t next = pos + n + (lf ? 1 : 0);

        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (mboxrd && export_from_quoted(line, n))
            fputc('>', out);
        fwrite(line, 1, n, out);
        fputc('\n', out);
        pos = next;
    }
    free(c.p);
    return ferror(out) ? -EIO : 0;
}

int
export_from_line(const struct envelope *e, char *buf, size_t size)
{
    const char *sender = (e->sender && e->sender[0]) ? e->sender : "MAILER-DAEMON";
    time_t t = (time_t)e->arrival_sec;
    struct tm tm;
    char date[64];
    size_t used;

    if (localtime_r(&t, &tm) == NULL ||
        strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm) == 0)
        snprintf(date, sizeof(date), "Thu Jan  1 00:00:00 1970");
    if (size < strlen(sender) + strlen(date) + 8)
        return MX2_E_INVAL;
    used = (size_t)snprintf(buf, size, "From %s %s\n", sender, date);
    /* A From_ line is split on blanks by readers: keep the sender one word. */
    for (size_t i = 5; i < 5 + strlen(sender); i++)
        if ((unsigned char)buf[i] <= ' ' || buf[i] == 0x7f)
            buf[i] = '_';
    return (int)used;
}

/* ---- mbox ---- */

int
export_mbox_open(const char *path, struct export_mbox *mb)
{
    struct flock fl;
    int rc;

    mb->f = NULL;
    mb->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (mb->fd < 0)
        return -errno;
    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (fcntl(mb->fd, F_SETLKW, &fl) != 0) {
        if (errno != EINTR) {
            rc = -errno;
            close(mb->fd);
            mb->fd = -1;
            return rc;
        }
    }
    if ((mb->f = fdopen(mb->fd, "a")) == NULL) {
        rc = -errno;
        close(mb->fd);
        mb->fd = -1;
        return rc;
    }
    return 0;
}

int
export_mbox_append(struct export_mbox *mb, const struct envelope *e, const unsigned char *body,
                   size_t len)
{
    char from[1200];
    int rc;

    if (mb->f == NULL || export_from_line(e, from, sizeof(from)) < 0)
        return MX2_E_INVAL;
    fputs(from, mb->f);
    if ((rc = export_write_message(mb->f, e, body, len, 1)) != 0)
        return rc;
    fputc('\n', mb->f);
    return ferror(mb->f) ? -EIO : 0;
}

int
export_mbox_close(struct export_mbox *mb)
{
    int rc = 0;

    if (mb->f == NULL)
        return 0;
    if (fflush(mb->f) != 0 || ferror(mb->f))
        rc = -EIO;
    if (fsync(mb->fd) != 0 && rc == 0)
        rc = -errno;
    if (fclose(mb->f) != 0 && rc == 0)
        rc = -errno;
    mb->f = NULL;
    mb->fd = -1;
    return rc;
}

/* ---- Maildir ---- */

int
export_maildir_init(const char *dir)
{
    static const char *const subs[] = {"tmp", "new", "cur"};
    char path[4096];
    int rc;

    if ((rc = fsio_mkdirs(dir, 0700)) != 0)
        return rc;
    for (size_t i = 0; i < 3; i++) {
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, subs[i]) >= sizeof(path))
            return -ENAMETOOLONG;
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -errno;
    }
    return 0;
}

/* The host part of a Maildir name: '/' and ':' would break it. */
static void
export_host(const char *host, char *out, size_t size)
{
    size_t o = 0;

    for (const char *p = host ? host : "localhost"; *p && o + 5 < size; p++) {
        if (*p == '/') {
            memcpy(out + o, "\\057", 4);
            o += 4;
        } else if (*p == ':') {
            memcpy(out + o, "\\072", 4);
            o += 4;
        } else if ((unsigned char)*p > ' ' && *p != 0x7f) {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

int
export_maildir_write(const char *dir, const char *host, int64_t now, const struct envelope *e,
                     const unsigned char *body, size_t len, char *name_out, size_t name_size)
{
    char h[256], name[512], tmp[4096 + 600], dst[4096 + 600];
    FILE *f;
    int fd, rc = 0;

    export_host(host, h, sizeof(h));
    for (unsigned attempt = 0;; attempt++) {
        if (attempt == 0)
            snprintf(name, sizeof(name), "%lld.%s.%s", (long long)now, e->qid, h);
        else
            snprintf(name, sizeof(name), "%lld.%s_%u.%s", (long long)now, e->qid, attempt, h);
        snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, name);
        snprintf(dst, sizeof(dst), "%s/new/%s", dir, name);
        if (access(dst, F_OK) == 0 && attempt < 1000)
            continue;
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0 && errno == EEXIST && attempt < 1000)
            continue;
        if (fd < 0)
            return -errno;
        break;
    }
    if ((f = fdopen(fd, "w")) == NULL) {
        rc = -errno;
        close(fd);
        unlink(tmp);
        return rc;
    }
    rc = export_write_message(f, e, body, len, 0);
    if (fflush(f) != 0 && rc == 0)
        rc = -EIO;
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && link(tmp, dst) != 0)
        rc = -errno;
    unlink(tmp);
    if (rc == 0) {
        char newdir[4096 + 8];
        snprintf(newdir, sizeof(newdir), "%s/new", dir);
        rc = fsio_fsync_dir(newdir);
    }
    if (rc == 0 && name_out != NULL)
        snprintf(name_out, name_size, "%s", name);
    return rc;
}
