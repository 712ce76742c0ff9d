/*
 * fsio.c - see fsio.h.
 *
 * Why fsync the directory: on Linux a new or renamed directory entry is only
 * durable once the directory itself is synced (fsync(2), "Calling fsync() does
 * not necessarily ensure that the entry in the directory containing the file
 * has also reached disk"). A durable rename is therefore file fsync, rename,
 * directory fsync, in that order: a crash before the rename leaves the old
 * name; after the directory fsync the new name points at complete data.
 */
#include "fsio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
fsio_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int
fsio_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        off += w;
        n -= (size_t)w;
    }
    return 0;
}

int
fsio_read_all(int fd, void *buf, size_t n, size_t *got)
{
    char *p = buf;
    size_t total = 0;

    while (total < n) {
        ssize_t r = read(fd, p + total, n - total);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            *got = total;
            return -errno;
        }
        if (r == 0)
            break;
        total += (size_t)r;
    }
    *got = total;
    return 0;
}

int
fsio_fsync_dir(const char *dir)
{
    int fd, rc = 0;

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int
fsio_fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t len;

    if (slash == NULL)
        return fsio_fsync_dir(".");
    len = (size_t)(slash - path);
    if (len == 0)
        return fsio_fsync_dir("/");
    if (len >= sizeof(dir))
        return -ENAMETOOLONG;
    memcpy(dir, path, len);
    dir[len] = '\0';
    return fsio_fsync_dir(dir);
}

int
fsio_durable_rename(int fd, const char *from, const char *to)
{
    if (fd >= 0 && fsync(fd) < 0)
        return -errno;
    if (rename(from, to) < 0)
        return -errno;
    return fsio_fsync_parent(to);
}

int
fsio_mkdirs(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}
