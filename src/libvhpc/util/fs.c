/*
 * fs.c - see fs.h.
 */
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int vhpc__pathf(vhpc_err_t *err, char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len)
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "path too long: %.200s...", buf);
    return 0;
}

int vhpc_mkdirs(const char *path, unsigned mode, vhpc_err_t *err)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p))
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "path too long: %s", path);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, mode) < 0 && errno != EEXIST)
                return vhpc_err_set(err, -errno, "creating directory %s", p);
            *s = c;
            if (!c)
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return vhpc_err_setmsg(err, -ENOTDIR, "%s is not a directory", path);
    return 0;
}

/* The first error of a removal, and where; nftw's callback has no argument. */
static __thread int rm_error;
static __thread char rm_where[PATH_MAX];

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    /* Go on past what cannot be removed (a mount point): the rest goes. */
    if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT && !rm_error) {
        rm_error = -errno;
        snprintf(rm_where, sizeof(rm_where), "%s", path);
    }
    return 0;
}

int vhpc_rm_tree(const char *path, vhpc_err_t *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : vhpc_err_set(err, -errno, "removing %s", path);
    if (!S_ISDIR(st.st_mode))
        return unlink(path) < 0 && errno != ENOENT ? vhpc_err_set(err, -errno, "removing %s", path)
                                                   : 0;
    rm_error = 0;
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return vhpc_err_set(err, -errno, "removing %s", path);
    return rm_error ? vhpc_err_set(err, rm_error, "removing %s", rm_where) : 0;
}

static int walk(char *path, size_t len, size_t used,
                int (*fn)(const char *path, const struct stat *st, void *arg), void *arg,
                vhpc_err_t *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return vhpc_err_set(err, -errno, "%s", path);
    int r = fn(path, &st, arg);
    if (r < 0 || !S_ISDIR(st.st_mode))
        return r < 0 ? r : 0;
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0)
        return vhpc_err_set(err, -errno, "reading directory %s", path);
    r = 0;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (r == 0 && strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0) {
            size_t nl = strlen(nm);
            if (used + 1 + nl >= len) {
                r = vhpc_err_setmsg(err, -ENAMETOOLONG, "%s/%s: path too long", path, nm);
            } else {
                path[used] = '/';
                memcpy(path + used + 1, nm, nl + 1);
                r = walk(path, len, used + 1 + nl, fn, arg, err);
                path[used] = 0;
            }
        }
        free(names[i]);
    }
    free(names);
    return r;
}

int vhpc__walk(const char *root, int (*fn)(const char *path, const struct stat *st, void *arg),
               void *arg, vhpc_err_t *err)
{
    char path[PATH_MAX];
    int r = vhpc__pathf(err, path, sizeof(path), "%s", root);
    return r < 0 ? r : walk(path, sizeof(path), strlen(path), fn, arg, err);
}

static int write_file(const char *path, const void *data, size_t len, unsigned mode, int sync,
                      const char *keep, vhpc_err_t *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "creating %s", tmp);
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            unlink(tmp);
            return vhpc_err_set(err, e, "writing %s", tmp);
        }
        done += (size_t)n;
    }
    /* Store files: open() applied the umask, but the mode asked for is the
     * mode wanted (a published blob is 0444 whatever the umask). */
    if (sync && (fchmod(fd, mode) < 0 || fsync(fd) < 0)) {
        int e = -errno;
        close(fd);
        unlink(tmp);
        return vhpc_err_set(err, e, "writing %s", tmp);
    }
    if (close(fd) < 0) {
        int e = -errno;
        unlink(tmp);
        return vhpc_err_set(err, e, "writing %s", path);
    }
    if (keep) {
        /* The file being replaced stays as `keep` (a hard link, put in
         * place atomically), so a bad update can be undone by hand. */
        char ktmp[PATH_MAX];
        if (snprintf(ktmp, sizeof(ktmp), "%s.tmp-%d", keep, (int)getpid()) >= (int)sizeof(ktmp)) {
            unlink(tmp);
            return vhpc_err_setmsg(err, -ENAMETOOLONG, "path too long: %s", keep);
        }
        unlink(ktmp);
        if (link(path, ktmp) == 0) {
            if (rename(ktmp, keep) < 0) {
                int e = -errno;
                unlink(ktmp);
                unlink(tmp);
                return vhpc_err_set(err, e, "keeping %s as %s", path, keep);
            }
        } else if (errno != ENOENT) {
            int e = -errno;
            unlink(tmp);
            return vhpc_err_set(err, e, "keeping %s as %s", path, keep);
        }
    }
    if (rename(tmp, path) < 0) {
        int e = -errno;
        unlink(tmp);
        return vhpc_err_set(err, e, "writing %s", path);
    }
    if (sync) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
        else
            snprintf(dir, sizeof(dir), ".");
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0) {
            int e = -errno;
            if (dfd >= 0)
                close(dfd);
            return vhpc_err_set(err, e, "syncing directory %s", dir);
        }
        close(dfd);
    }
    return 0;
}

int vhpc__write_file(const char *path, const void *data, size_t len, unsigned mode, vhpc_err_t *err)
{
    return write_file(path, data, len, mode, 0, NULL, err);
}

int vhpc__write_file_sync(const char *path, const void *data, size_t len, unsigned mode,
                          const char *keep, vhpc_err_t *err)
{
    return write_file(path, data, len, mode, 1, keep, err);
}

int vhpc__read_file(const char *path, char **data, size_t *len, vhpc_err_t *err)
{
    return vhpc_read_file_max(path, 0, data, len, err);
}

int vhpc_read_file_max(const char *path, size_t max, char **data, size_t *len, vhpc_err_t *err)
{
    /* O_NONBLOCK: opening a FIFO someone named does not wait for a writer. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | (max ? O_NONBLOCK | O_NOCTTY : 0));
    if (fd < 0)
        return vhpc_err_set(err, -errno, "opening %s", path);
    struct stat st;
    if (max && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return vhpc_err_setmsg(err, -EINVAL, "%s: not a regular file", path);
    }
    size_t cap = 4096, used = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return vhpc_err_set(err, -ENOMEM, "reading %s", path);
    }
    for (;;) {
        if (cap - used < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                close(fd);
                return vhpc_err_set(err, -ENOMEM, "reading %s", path);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            free(buf);
            close(fd);
            return vhpc_err_set(err, e, "reading %s", path);
        }
        if (n == 0)
            break;
        used += (size_t)n;
        if (max && used > max) {
            free(buf);
            close(fd);
            return vhpc_err_setmsg(err, -EFBIG, "%s: larger than %zu KiB", path, max / 1024);
        }
    }
    close(fd);
    buf[used] = 0;
    *data = buf;
    if (len)
        *len = used;
    return 0;
}

int vhpc__copy_file(const char *src, const char *dst, unsigned mode, vhpc_err_t *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, r = 0;
    char buf[1 << 16];
    if (in < 0)
        return vhpc_err_set(err, -errno, "opening %s", src);
    unlink(dst);
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (out < 0) {
        r = vhpc_err_set(err, -errno, "creating %s", dst);
        goto out;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0) {
            r = vhpc_err_set(err, -errno, "reading %s", src);
            break;
        }
        if (n == 0)
            break;
        if (write(out, buf, (size_t)n) != n) {
            r = vhpc_err_set(err, -errno, "writing %s", dst);
            break;
        }
    }
    if (r == 0 && fchmod(out, mode) < 0)
        r = vhpc_err_set(err, -errno, "chmod %s", dst);
    if (close(out) < 0 && r == 0)
        r = vhpc_err_set(err, -errno, "writing %s", dst);
out:
    close(in);
    return r;
}
