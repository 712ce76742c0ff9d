/*
 * fsio.h - the blocking file calls that durability rests on.
 *
 * Callers: queue/, rcptmap (map build), tools. Blocking: never call from the
 * event-loop thread (mx2d calls these from its writer thread only).
 * Return 0 or -errno; EINTR is retried inside.
 */
#ifndef MX2_FSIO_H
#define MX2_FSIO_H

#include <stddef.h>
#include <sys/types.h>

/* Write all n bytes or fail. */
int fsio_write_all(int fd, const void *buf, size_t n);
/* pwrite all n bytes at off or fail. */
int fsio_pwrite_all(int fd, const void *buf, size_t n, off_t off);
/* Read up to n bytes, retrying short reads until EOF; *got = bytes read. */
int fsio_read_all(int fd, void *buf, size_t n, size_t *got);
/* fsync the directory `dir` (so entries created/renamed in it are durable). */
int fsio_fsync_dir(const char *dir);
/* fsync the directory that holds `path`. */
int fsio_fsync_parent(const char *path);
/* fsync(fd) then rename(from, to) then fsync the directory of `to`:
 * afterwards `to` names the complete new file, durably. fd may be -1 when the
 * caller has already synced the file. */
int fsio_durable_rename(int fd, const char *from, const char *to);
/* mkdir -p with the given mode for created components. */
int fsio_mkdirs(const char *path, mode_t mode);

#endif
