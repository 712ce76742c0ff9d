/*
 * faultshim.c - an LD_PRELOAD shim for the fault-injection e2e tests
 * (tests/e2e/test_fault_injection.py compiles it at run time with
 * `cc -shared -fPIC -O1 -o faultshim.so faultshim.c -ldl`; it is not part of
 * the CMake build).
 *
 * While the file named by the environment variable MX2_FAULT_TRIGGER
 * exists, the calls it lists fail; otherwise every call passes straight
 * through to the next definition (libc, or ASan's interceptor in a
 * sanitizer build: run that daemon with ASAN_OPTIONS=verify_asan_link_order=0).
 * The trigger is re-read on every call, so a test switches faults on and
 * off by writing or removing one file, without restarting the process.
 *
 * Trigger file: one fault a line, "KIND [PATH-SUBSTRING]". A fault with a
 * substring applies only when the file the call works on (its
 * /proc/self/fd link, or either name given to rename) contains it.
 *   fsync      fsync(2)                           -> EIO
 *   fdatasync  fdatasync(2)                       -> EIO
 *   rename     rename, renameat, renameat2        -> EIO
 *   write      write, pwrite, writev, pwritev     -> ENOSPC (regular files only)
 *   metawrite  the same calls, only on a descriptor opened with O_DSYNC
 *              (LMDB's meta-page writes)          -> EIO
 *   slowsync   fdatasync(2) takes 400 ms longer and then succeeds (a slow
 *              disk: widens the window between a decision and its record)
 * Why these: strace of mx2d, mx2map and LMDB shows that an LMDB commit is
 * pwrite of the pages, fdatasync, then a pwrite of the meta page through an
 * O_DSYNC descriptor; mx2map adds fsync, rename and a directory fsync; the
 * SMTP session spills large bodies with pwrite/pwritev from libuv's pool.
 *
 * Every injected failure is appended, as "KIND PATH", to the file named by
 * MX2_FAULT_LOG (when set), so a test can prove the fault was really hit.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SHIM_TRIGGER_MAX 4096

static void *
shim_next(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (f == NULL)
        abort(); /* a shim that silently did nothing would fake a pass */
    return f;
}

/* The next definition of `name`, looked up once (a benign race: every
 * thread stores the same pointer). */
#define SHIM_REAL(name)                   \
    static __typeof__(&name) real_##name; \
    if (real_##name == NULL)              \
        real_##name = (__typeof__(&name))shim_next(#name);

/* The real write(2), for the fault log (our own write is wrapped). */
static ssize_t
shim_raw_write(int fd, const void *buf, size_t len)
{
    SHIM_REAL(write)
    return real_write(fd, buf, len);
}

static void
shim_log(const char *kind, const char *path)
{
    const char *log = getenv("MX2_FAULT_LOG");
    char line[PATH_MAX + 64];
    int fd, n;

    if (log == NULL || *log == '\0')
        return;
    n = snprintf(line, sizeof(line), "%s %s\n", kind, path ? path : "-");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1;
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    (void)shim_raw_write(fd, line, (size_t)n);
    close(fd);
}

/* Is KIND listed in the trigger for a file named path1 or path2? Keeps errno. */
static int
shim_active(const char *kind, const char *path1, const char *path2)
{
    const char *trig = getenv("MX2_FAULT_TRIGGER");
    char buf[SHIM_TRIGGER_MAX + 1];
    int saved = errno, fd, hit = 0;
    ssize_t len;
    size_t klen = strlen(kind);
    char *line, *save = NULL;

    if (trig == NULL || *trig == '\0')
        return 0;
    fd = open(trig, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved;
        return 0;
    }
    len = read(fd, buf, SHIM_TRIGGER_MAX);
    close(fd);
    if (len <= 0) {
        errno = saved;
        return 0;
    }
    buf[len] = '\0';
    for (line = strtok_r(buf, "\n", &save); line != NULL && !hit;
         line = strtok_r(NULL, "\n", &save)) {
        const char *sub;
        if (strncmp(line, kind, klen) != 0 || (line[klen] != '\0' && line[klen] != ' '))
            continue;
        sub = line + klen;
        while (*sub == ' ')
            sub++;
        if (*sub == '\0' || (path1 != NULL && strstr(path1, sub) != NULL) ||
            (path2 != NULL && strstr(path2, sub) != NULL))
            hit = 1;
    }
    errno = saved;
    return hit;
}

/* The path behind fd ("" if unknown). */
static void
shim_fd_path(int fd, char *out, size_t size)
{
    char link[64];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
}

static int
shim_fd_fault(const char *kind, int fd, int regular_only)
{
    char path[PATH_MAX];
    struct stat st;
    int saved = errno;

    if (getenv("MX2_FAULT_TRIGGER") == NULL)
        return 0;
    if (regular_only && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        errno = saved;
        return 0;
    }
    errno = saved;
    shim_fd_path(fd, path, sizeof(path));
    if (!shim_active(kind, path, NULL))
        return 0;
    shim_log(kind, path);
    return 1;
}

/* 0, or the errno a write to fd must fail with now. */
static int
shim_write_fault(int fd)
{
    int fl;

    if (shim_fd_fault("write", fd, 1))
        return ENOSPC;
    fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DSYNC) == O_DSYNC && shim_fd_fault("metawrite", fd, 1))
        return EIO;
    return 0;
}

int
fsync(int fd)
{
    SHIM_REAL(fsync)
    if (shim_fd_fault("fsync", fd, 0)) {
        errno = EIO;
        return -1;
    }
    return real_fsync(fd);
}

int
fdatasync(int fd)
{
    SHIM_REAL(fdatasync)
    if (shim_fd_fault("fdatasync", fd, 0)) {
        errno = EIO;
        return -1;
    }
    if (shim_fd_fault("slowsync", fd, 0)) {
        struct timespec ts = {0, 400 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return real_fdatasync(fd);
}

static int
shim_rename_fault(const char *oldpath, const char *newpath)
{
    if (!shim_active("rename", oldpath, newpath))
        return 0;
    shim_log("rename", newpath);
    errno = EIO;
    return 1;
}

int
rename(const char *oldpath, const char *newpath)
{
    SHIM_REAL(rename)
    if (shim_rename_fault(oldpath, newpath))
        return -1;
    return real_rename(oldpath, newpath);
}

int
renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    SHIM_REAL(renameat)
    if (shim_rename_fault(oldpath, newpath))
        return -1;
    return real_renameat(olddirfd, oldpath, newdirfd, newpath);
}

int
renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
          unsigned int flags)
{
    SHIM_REAL(renameat2)
    if (shim_rename_fault(oldpath, newpath))
        return -1;
    return real_renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

ssize_t
write(int fd, const void *buf, size_t len)
{
    int err;

    SHIM_REAL(write)
    if ((err = shim_write_fault(fd)) != 0) {
        errno = err;
        return -1;
    }
    return real_write(fd, buf, len);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
    int err;

    SHIM_REAL(pwrite)
    if ((err = shim_write_fault(fd)) != 0) {
        errno = err;
        return -1;
    }
    return real_pwrite(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
    int err;

    SHIM_REAL(pwrite64)
    if ((err = shim_write_fault(fd)) != 0) {
        errno = err;
        return -1;
    }
    return real_pwrite64(fd, buf, len, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
    int err;

    SHIM_REAL(writev)
    if ((err = shim_write_fault(fd)) != 0) {
        errno = err;
        return -1;
    }
    return real_writev(fd, iov, n);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    int err;

    SHIM_REAL(pwritev)
    if ((err = shim_write_fault(fd)) != 0) {
        errno = err;
        return -1;
    }
    return real_pwritev(fd, iov, n, off);
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
    int err;

    SHIM_REAL(pwritev64)
    if ((err = shim_write_fault(fd)) != 0) {
        errno = err;
        return -1;
    }
    return real_pwritev64(fd, iov, n, off);
}
