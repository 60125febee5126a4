/*
 * kernel.c - the guest kernel cache (see kernel.h), plus the small file and
 * process helpers that image.c shares.
 *
 * What Debian 12's cloud kernel package holds (checked with 6.1.0-56, 6.1.192-2):
 * boot/vmlinuz-<v>, boot/config-<v>, boot/System.map-<v> and lib/modules/<v>/
 * with the kernel/ tree (1121 modules, ~91 MB, all uncompressed:
 * CONFIG_MODULE_COMPRESS_NONE), modules.builtin, modules.builtin.modinfo and
 * modules.order, but no modules.dep (depmod runs at install time).  So the
 * dependencies are read here from each module's .modinfo section
 * ("depends=a,b") and written out as modules.dep.  The virtio core
 * (virtio, virtio_ring), virtio_pci (+ virtio_pci_modern_dev,
 * virtio_pci_legacy_dev), virtio_net (+ net_failover, failover),
 * virtio_blk and virtio_console are all modules.
 */
#include "kernel.h"
#include "cpio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <pwd.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_PACKAGE "linux-image-cloud-amd64"

/* ---- helpers shared with image.c -------------------------------------- */

const char *vhpc__system_root(void)
{
    const char *h = getenv("VHPC_SYSTEM_HOME");
    return h && h[0] == '/' ? h : "/var/lib/vhpc";
}

const char *vhpc__store_root(void)
{
    static __thread char buf[PATH_MAX];
    const char *h = getenv("VHPC_HOME");
    if (h && h[0])
        return h;
    if (geteuid() == 0)
        return vhpc__system_root();
    /* A user's own store: $XDG_DATA_HOME/vhpc, else ~/.local/share/vhpc. */
    const char *x = getenv("XDG_DATA_HOME");
    if (x && x[0] == '/' && snprintf(buf, sizeof(buf), "%s/vhpc", x) < (int)sizeof(buf))
        return buf;
    const char *home = getenv("HOME");
    if (!home || home[0] != '/') {
        struct passwd *pw = getpwuid(geteuid());
        home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
    }
    if (home && snprintf(buf, sizeof(buf), "%s/.local/share/vhpc", home) < (int)sizeof(buf))
        return buf;
    /* No home at all: a private directory of this uid under /tmp is no
     * better than failing loudly later; /var/lib/vhpc is not writable. */
    snprintf(buf, sizeof(buf), "/nonexistent-home-of-uid-%u/vhpc", (unsigned)geteuid());
    return buf;
}

void vhpc__kernel_cache_dir(char *buf, size_t len)
{
    const char *c = getenv("VHPC_KERNEL_CACHE");
    if (c && c[0])
        snprintf(buf, len, "%s", c);
    else
        snprintf(buf, len, "%s/kernels", vhpc__store_root());
}

int vhpc__private_store(void)
{
    return geteuid() != 0;
}

/* ---- locks -------------------------------------------------------------- */

static void (*lock_notice)(const char *msg);

void vhpc_set_lock_notice(void (*fn)(const char *msg))
{
    lock_notice = fn;
}

/* The pid holding a flock on the file open as fd, from /proc/locks (0 if
 * it cannot be told). */
static int lock_holder(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (!f)
        return 0;
    char line[256];
    int pid = 0;
    while (!pid && fgets(line, sizeof(line), f)) {
        char kind[16];
        int p;
        unsigned long long ino;
        char *s = strchr(line, ':');
        if (!s || strstr(line, "->")) /* "->": a waiter, not the holder */
            continue;
        if (sscanf(s + 1, " %15s %*s %*s %d %*x:%*x:%llu", kind, &p, &ino) == 3 &&
            !strcmp(kind, "FLOCK") && ino == (unsigned long long)st.st_ino && p != getpid())
            pid = p;
    }
    fclose(f);
    return pid;
}

int vhpc__lock_timeout_s(void)
{
    const char *t = getenv("VHPC_LOCK_TIMEOUT");
    char *end;
    long v = t && t[0] ? strtol(t, &end, 10) : -1;
    return t && t[0] && !*end && v >= 0 && v <= 86400 ? (int)v : VHPC_LOCK_TIMEOUT_S;
}

int vhpc__lock_open(const char *path, const char *what, int *fd_out, vhpc_err_t *err)
{
    char dir[PATH_MAX];
    struct stat st;
    /* Whoever can write the directory can replace the lock file with one
     * of their own and hold it. */
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = 0;
    else
        snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
    if (stat(dir, &st) == 0 && (st.st_mode & 022))
        return vhpc_err_setmsg(err, -EPERM,
                               "the %s lock %s is in a directory other users can write (chmod "
                               "go-w %s)",
                               what, path, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "opening the %s lock %s", what, path);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vhpc_err_setmsg(err, -EINVAL, "the %s lock %s is not a regular file", what, path);
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        close(fd);
        return vhpc_err_setmsg(err, -EPERM, "the %s lock %s belongs to another user (uid %u)", what,
                               path, (unsigned)st.st_uid);
    }
    /* Lock files of older versions were 0644: anyone could flock them
     * through a read-only open and stall every writer. */
    if ((st.st_mode & 077) && st.st_uid == geteuid() && fchmod(fd, 0600) < 0) {
        int e = -errno;
        close(fd);
        return vhpc_err_set(err, e, "making the %s lock %s private", what, path);
    }
    *fd_out = fd;
    return 0;
}

int vhpc__lock_wait(int fd, const char *path, const char *what, vhpc_err_t *err)
{
    int timeout_s = vhpc__lock_timeout_s(), told = 0, holder = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            return vhpc_err_set(err, -errno, "locking the %s lock %s", what, path);
        if (!holder)
            holder = lock_holder(fd);
        if (!told && lock_notice) {
            char msg[PATH_MAX + 200];
            if (holder)
                snprintf(msg, sizeof(msg), "waiting for the %s lock %s held by pid %d...", what,
                         path, holder);
            else
                snprintf(msg, sizeof(msg), "waiting for the %s lock %s...", what, path);
            lock_notice(msg);
        }
        told = 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms =
            (int64_t)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= (int64_t)timeout_s * 1000) {
            char by[32] = "";
            if (holder)
                snprintf(by, sizeof(by), " held by pid %d", holder);
            return vhpc_err_setmsg(err, -ETIMEDOUT,
                                   "timed out after %d s waiting for the %s lock %s%s (if that "
                                   "process is stuck, stop it; VHPC_LOCK_TIMEOUT=SECONDS waits "
                                   "longer)",
                                   timeout_s, what, path, by);
        }
        struct timespec nap = {0, 50 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

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

int vhpc__mkdirs(const char *path, unsigned mode, vhpc_err_t *err)
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

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = type == FTW_DP ? rmdir(path) : unlink(path);
    return r < 0 && errno != ENOENT ? -errno : 0;
}

int vhpc__rm_tree(const char *path, vhpc_err_t *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : vhpc_err_set(err, -errno, "removing %s", path);
    int r = nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
    if (r < 0)
        return vhpc_err_set(err, -errno, "removing %s", path);
    if (r > 0 || r < -1)
        return vhpc_err_set(err, r, "removing %s", path);
    return 0;
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

int vhpc__run(const char *const argv[], const char *cwd, char *out, size_t outlen, char *errbuf,
              size_t errlen, vhpc_err_t *err)
{
    return vhpc__run_env(argv, (const char *const *)environ, cwd, out, outlen, errbuf, errlen, err);
}

int vhpc__run_env(const char *const argv[], const char *const envp[], const char *cwd, char *out,
                  size_t outlen, char *errbuf, size_t errlen, vhpc_err_t *err)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int r;
    if (out && outlen)
        out[0] = 0;
    if (errbuf && errlen)
        errbuf[0] = 0;
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        r = vhpc_err_set(err, -errno, "running %s: pipe", argv[0]);
        goto close_pipes;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    if (cwd)
        posix_spawn_file_actions_addchdir_np(&fa, cwd);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    if (r != 0) {
        r = vhpc_err_set(err, -r, "running %s", argv[0]);
        goto close_pipes;
    }
    struct pollfd pfd[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    size_t used[2] = {0, 0};
    char *bufs[2] = {out, errbuf};
    size_t lens[2] = {out ? outlen : 0, errbuf ? errlen : 0};
    int open_fds = 2;
    while (open_fds) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents)
                continue;
            char tmp[4096];
            ssize_t n = read(pfd[i].fd, tmp, sizeof(tmp));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open_fds--;
                continue;
            }
            if (lens[i] > 1 && used[i] < lens[i] - 1) {
                size_t k = lens[i] - 1 - used[i] < (size_t)n ? lens[i] - 1 - used[i] : (size_t)n;
                memcpy(bufs[i] + used[i], tmp, k);
                used[i] += k;
                bufs[i][used[i]] = 0;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (pfd[i].fd >= 0)
            close(pfd[i].fd);
    po[0] = pe[0] = -1;
    /* Messages read better without the trailing newline. */
    while (used[1] && (errbuf[used[1] - 1] == '\n' || errbuf[used[1] - 1] == ' '))
        errbuf[--used[1]] = 0;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return vhpc_err_set(err, -errno, "waiting for %s", argv[0]);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
close_pipes:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    return r;
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
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "opening %s", path);
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
    }
    close(fd);
    buf[used] = 0;
    *data = buf;
    if (len)
        *len = used;
    return 0;
}

/* ---- module dependencies ----------------------------------------------- */

/* The .modinfo section of an ELF64 kernel module ("key=value\0" strings),
 * into a malloc'd buffer.  Every offset is checked against the file. */
static int read_modinfo(const char *path, char **info, size_t *infolen, vhpc_err_t *err)
{
    char *f;
    size_t n;
    int r = vhpc__read_file(path, &f, &n, err);
    if (r < 0)
        return r;
    r = -EINVAL;
    if (n < 64 || memcmp(f, "\177ELF", 4) != 0 || f[4] != 2 /* ELFCLASS64 */ ||
        f[5] != 1 /* little-endian */)
        goto out;
    uint64_t shoff;
    uint16_t shentsize, shnum, shstrndx;
    memcpy(&shoff, f + 0x28, 8);
    memcpy(&shentsize, f + 0x3a, 2);
    memcpy(&shnum, f + 0x3c, 2);
    memcpy(&shstrndx, f + 0x3e, 2);
    if (shentsize < 64 || shstrndx >= shnum || shoff > n || (uint64_t)shnum * shentsize > n - shoff)
        goto out;
    const char *sh = f + shoff;
    uint64_t stroff, strsize;
    memcpy(&stroff, sh + (size_t)shstrndx * shentsize + 0x18, 8);
    memcpy(&strsize, sh + (size_t)shstrndx * shentsize + 0x20, 8);
    if (stroff > n || strsize > n - stroff)
        goto out;
    for (unsigned i = 0; i < shnum; i++) {
        const char *s = sh + (size_t)i * shentsize;
        uint32_t name;
        uint64_t off, size;
        memcpy(&name, s, 4);
        memcpy(&off, s + 0x18, 8);
        memcpy(&size, s + 0x20, 8);
        if (name >= strsize || strnlen(f + stroff + name, strsize - name) == strsize - name)
            continue;
        if (strcmp(f + stroff + name, ".modinfo") != 0)
            continue;
        if (off > n || size > n - off)
            goto out;
        char *m = malloc(size + 1);
        if (!m) {
            r = vhpc_err_set(err, -ENOMEM, "reading %s", path);
            goto out;
        }
        memcpy(m, f + off, size);
        m[size] = 0;
        *info = m;
        *infolen = size;
        r = 0;
        goto out;
    }
    r = vhpc_err_setmsg(err, -EINVAL, "%s has no .modinfo section", path);
    goto done;
out:
    if (r == -EINVAL)
        vhpc_err_setmsg(err, r, "%s is not an ELF64 kernel module", path);
done:
    free(f);
    return r;
}

struct kmod {
    char *name;  /* module name, '-' as '_' */
    char *path;  /* relative to the modules dir, e.g. kernel/drivers/virtio/virtio.ko */
    char **deps; /* direct dependencies by name */
    int ndeps;
    int mark; /* for the walk */
};

struct kmods {
    struct kmod *v;
    size_t n, cap;
    const char *base; /* modules dir, for relative paths */
    vhpc_err_t *err;
};

void vhpc__modname(const char *path, char *out, size_t len)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strcspn(b, ".");
    if (n >= len)
        n = len - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = b[i] == '-' ? '_' : b[i];
    out[n] = 0;
}

static int collect_mod(const char *path, const struct stat *st, void *arg)
{
    struct kmods *m = arg;
    size_t pl = strlen(path);
    if (!S_ISREG(st->st_mode) || pl < 4 || strcmp(path + pl - 3, ".ko") != 0)
        return 0;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        struct kmod *nv = realloc(m->v, cap * sizeof(*nv));
        if (!nv)
            return vhpc_err_set(m->err, -ENOMEM, "listing modules");
        m->v = nv;
        m->cap = cap;
    }
    struct kmod *k = &m->v[m->n];
    memset(k, 0, sizeof(*k));
    char *info = NULL;
    size_t infolen = 0;
    int r = read_modinfo(path, &info, &infolen, m->err);
    if (r < 0)
        return r;
    char name[256];
    vhpc__modname(path, name, sizeof(name));
    const char *depends = "";
    for (size_t off = 0; off < infolen; off += strlen(info + off) + 1) {
        if (strncmp(info + off, "name=", 5) == 0)
            snprintf(name, sizeof(name), "%s", info + off + 5);
        else if (strncmp(info + off, "depends=", 8) == 0)
            depends = info + off + 8;
    }
    k->name = strdup(name);
    k->path = strdup(path + strlen(m->base) + 1);
    for (const char *d = depends; *d;) {
        size_t l = strcspn(d, ",");
        if (l) {
            char **nd = realloc(k->deps, (size_t)(k->ndeps + 1) * sizeof(*nd));
            if (!nd) {
                free(info);
                return vhpc_err_set(m->err, -ENOMEM, "listing modules");
            }
            k->deps = nd;
            k->deps[k->ndeps++] = strndup(d, l);
        }
        d += l;
        if (*d == ',')
            d++;
    }
    free(info);
    m->n++;
    if (!k->name || !k->path)
        return vhpc_err_set(m->err, -ENOMEM, "listing modules");
    return 0;
}

static void free_mods(struct kmods *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].name);
        free(m->v[i].path);
        for (int j = 0; j < m->v[i].ndeps; j++)
            free(m->v[i].deps[j]);
        free(m->v[i].deps);
    }
    free(m->v);
}

static int cmp_mod_name(const void *a, const void *b)
{
    return strcmp(((const struct kmod *)a)->name, ((const struct kmod *)b)->name);
}

static struct kmod *find_mod(struct kmods *m, const char *name)
{
    struct kmod key = {.name = (char *)name};
    return bsearch(&key, m->v, m->n, sizeof(*m->v), cmp_mod_name);
}

/* Append k's dependencies (post-order: a module after everything it needs)
 * to list, not k itself. */
static int dep_walk(struct kmods *m, struct kmod *k, struct kmod **list, size_t *n, int gen,
                    int depth)
{
    if (depth > 64)
        return -ELOOP;
    for (int i = 0; i < k->ndeps; i++) {
        struct kmod *d = find_mod(m, k->deps[i]);
        if (!d || d->mark == gen)
            continue; /* unknown deps are built in */
        d->mark = gen;
        int r = dep_walk(m, d, list, n, gen, depth + 1);
        if (r < 0)
            return r;
        list[(*n)++] = d;
    }
    return 0;
}

/* Write modules.dep in depmod's format: "path: dep dep ..." where the
 * dependencies are listed so that loading them from last to first works. */
static int write_modules_dep(const char *dir, vhpc_err_t *err)
{
    struct kmods m = {.base = dir, .err = err};
    char path[PATH_MAX];
    int r = vhpc__pathf(err, path, sizeof(path), "%s/kernel", dir);
    if (r < 0)
        return r;
    if ((r = vhpc__walk(path, collect_mod, &m, err)) < 0) {
        free_mods(&m);
        return vhpc_err_wrap(err, "listing modules");
    }
    qsort(m.v, m.n, sizeof(*m.v), cmp_mod_name);
    struct kmod **list = calloc(m.n + 1, sizeof(*list));
    size_t cap = 1 << 20, used = 0;
    char *out = malloc(cap);
    if (!list || !out) {
        r = vhpc_err_set(err, -ENOMEM, "writing modules.dep");
        goto out;
    }
    /* Sorted by path, as depmod's output is stable for a given tree. */
    struct kmod **bypath = calloc(m.n + 1, sizeof(*bypath));
    if (!bypath) {
        r = vhpc_err_set(err, -ENOMEM, "writing modules.dep");
        goto out;
    }
    for (size_t i = 0; i < m.n; i++)
        bypath[i] = &m.v[i];
    for (size_t i = 1; i < m.n; i++) /* insertion sort by path: n ~ 1000 */
        for (size_t j = i; j > 0 && strcmp(bypath[j - 1]->path, bypath[j]->path) > 0; j--) {
            struct kmod *t = bypath[j];
            bypath[j] = bypath[j - 1];
            bypath[j - 1] = t;
        }
    for (size_t i = 0; i < m.n; i++) {
        struct kmod *k = bypath[i];
        size_t nl = 0;
        k->mark = (int)i + 1;
        r = dep_walk(&m, k, list, &nl, (int)i + 1, 0);
        if (r < 0) {
            r = vhpc_err_setmsg(err, r, "module %s: dependency loop", k->name);
            free(bypath);
            goto out;
        }
        size_t need = strlen(k->path) + 3;
        for (size_t j = 0; j < nl; j++)
            need += strlen(list[j]->path) + 1;
        while (cap - used < need + 1) {
            char *no = realloc(out, cap * 2);
            if (!no) {
                r = vhpc_err_set(err, -ENOMEM, "writing modules.dep");
                free(bypath);
                goto out;
            }
            out = no;
            cap *= 2;
        }
        used += (size_t)sprintf(out + used, "%s:", k->path);
        for (size_t j = nl; j-- > 0;)
            used += (size_t)sprintf(out + used, " %s", list[j]->path);
        out[used++] = '\n';
    }
    free(bypath);
    if ((r = vhpc__pathf(err, path, sizeof(path), "%s/modules.dep", dir)) == 0)
        r = vhpc__write_file(path, out, used, 0644, err);
out:
    free(list);
    free(out);
    free_mods(&m);
    return r;
}

/* Decompress modules shipped as .ko.xz/.ko.zst/.ko.gz in place (Debian 12's
 * cloud kernel has none, later kernels may). */
static int decompress_one(const char *path, const struct stat *st, void *arg)
{
    vhpc_err_t *err = arg;
    static const char *const tools[][2] = {
        {".ko.xz", "xz"}, {".ko.zst", "zstd"}, {".ko.gz", "gzip"}};
    if (!S_ISREG(st->st_mode))
        return 0;
    size_t pl = strlen(path);
    for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
        size_t sl = strlen(tools[i][0]);
        if (pl <= sl || strcmp(path + pl - sl, tools[i][0]) != 0)
            continue;
        const char *argv[] = {tools[i][1], "-d", "-q", "-f", path, NULL};
        char e[512];
        int r = vhpc__run(argv, NULL, NULL, 0, e, sizeof(e), err);
        if (r > 0)
            r = vhpc_err_setmsg(err, -EIO, "decompressing %s with %s: %s", path, tools[i][1], e);
        if (r < 0)
            return r;
        if (strcmp(tools[i][1], "zstd") == 0)
            unlink(path); /* zstd keeps its input */
    }
    return 0;
}

static int decompress_modules(const char *dir, vhpc_err_t *err)
{
    return vhpc__walk(dir, decompress_one, err, err);
}

/* ---- the cache ---------------------------------------------------------- */

static int valid_version(const char *v)
{
    if (!v[0] || v[0] == '.' || strlen(v) >= 64)
        return 0;
    for (const char *p = v; *p; p++)
        if (!(*p == '.' || *p == '-' || *p == '_' || *p == '+' || (*p >= '0' && *p <= '9') ||
              (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return 0;
    return 1;
}

/* Check a cached kernel: manifest readable, modules.dep present, vmlinuz's
 * sha256 equal to the manifest's. */
static int check_cached(const char *cache, const char *version, struct vhpc_kernel *k,
                        vhpc_err_t *err)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    if (!valid_version(version))
        return vhpc_err_setmsg(err, -EINVAL, "invalid kernel version '%s'", version);
    if (vhpc__pathf(err, dir, sizeof(dir) - 16, "%s/%s", cache, version) < 0)
        return -ENAMETOOLONG;
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    json_error_t je;
    json_t *man = json_load_file(path, 0, &je);
    if (!man) {
        if (access(dir, F_OK) < 0)
            return vhpc_err_setmsg(err, -ENOENT, "kernel %s is not cached in %s", version, cache);
        return vhpc_err_setmsg(err, -EINVAL, "reading %s: %s", path, je.text);
    }
    const char *want = json_string_value(json_object_get(man, "vmlinuz_sha256"));
    int r = 0;
    if (!want || strlen(want) != 64) {
        r = vhpc_err_setmsg(err, -EINVAL, "%s has no vmlinuz_sha256", path);
        goto out;
    }
    snprintf(k->version, sizeof(k->version), "%s", version);
    if (vhpc__pathf(err, k->vmlinuz, sizeof(k->vmlinuz), "%s/vmlinuz", dir) < 0 ||
        vhpc__pathf(err, k->modules_dir, sizeof(k->modules_dir), "%s/modules", dir) < 0) {
        r = -ENAMETOOLONG;
        goto out;
    }
    snprintf(path, sizeof(path), "%s/modules.dep", k->modules_dir);
    if (access(path, R_OK) < 0) {
        r = vhpc_err_set(err, -errno, "cached kernel %s: %s", version, path);
        goto out;
    }
    if ((r = vhpc_sha256_file(k->vmlinuz, k->sha256, err)) < 0)
        goto out;
    if (strcmp(k->sha256, want) != 0)
        r = vhpc_err_setmsg(err, -EBADMSG, "cached kernel %s: %s has sha256 %s, manifest says %s",
                            version, k->vmlinuz, k->sha256, want);
out:
    json_decref(man);
    return r;
}

/* The system kernel cache (<system root>/kernels) as a read-only source
 * for a user whose own cache is elsewhere: only if root owns it and nobody
 * else can write it (else anyone could plant a kernel for everyone).
 * Not used when $VHPC_KERNEL_CACHE names the cache, nor for root. */
static int shared_cache(const char *own, char *buf, size_t len)
{
    struct stat st;
    const char *c = getenv("VHPC_KERNEL_CACHE");
    if ((c && c[0]) || geteuid() == 0)
        return 0;
    if (snprintf(buf, len, "%s/kernels", vhpc__system_root()) >= (int)len || !strcmp(buf, own))
        return 0;
    return stat(buf, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 && !(st.st_mode & 022);
}

int vhpc_kernel_get(const char *version, struct vhpc_kernel *k, vhpc_err_t *err)
{
    char cache[PATH_MAX], shared[PATH_MAX];
    vhpc__kernel_cache_dir(cache, sizeof(cache));
    int r = check_cached(cache, version, k, err);
    vhpc_err_t e2;
    if (r == -ENOENT && shared_cache(cache, shared, sizeof(shared)) &&
        check_cached(shared, version, k, &e2) == 0) {
        vhpc_err_clear(err);
        return 0;
    }
    return r;
}

/* The newest cached kernel that verifies (fallback when apt cannot say). */
static int newest_cached(const char *cache, struct vhpc_kernel *k, vhpc_err_t *err)
{
    DIR *d = opendir(cache);
    if (!d)
        return vhpc_err_set(err, -errno, "opening %s", cache);
    char best[64] = "";
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!valid_version(de->d_name))
            continue;
        struct vhpc_kernel tmp;
        vhpc_err_t e2;
        if (check_cached(cache, de->d_name, &tmp, &e2) == 0 &&
            (!best[0] || strverscmp(de->d_name, best) > 0))
            memcpy(best, de->d_name, strlen(de->d_name) + 1); /* valid_version: < 64 */
    }
    closedir(d);
    if (!best[0])
        return vhpc_err_setmsg(err, -ENOENT, "no valid kernel cached in %s", cache);
    return check_cached(cache, best, k, err);
}

/* Resolve the meta package to the versioned one ("linux-image-6.1.0-56-cloud-amd64"). */
static int resolve_package(const char *meta, char *pkg, size_t len, vhpc_err_t *err)
{
    const char *argv[] = {"apt-cache", "depends", meta, NULL};
    char out[8192], e[1024];
    int r = vhpc__run(argv, NULL, out, sizeof(out), e, sizeof(e), err);
    if (r < 0)
        return r;
    if (r != 0)
        return vhpc_err_setmsg(err, -ENOENT, "apt-cache depends %s: %s", meta, e[0] ? e : "failed");
    char *save;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *s = line + strspn(line, " \t|");
        if (strncmp(s, "Depends: linux-image-", 21) != 0)
            continue;
        s += 9;
        s[strcspn(s, " \t")] = 0;
        if (s[0] == '<')
            continue;
        snprintf(pkg, len, "%s", s);
        return 0;
    }
    return vhpc_err_setmsg(err, -ENOENT, "apt-cache depends %s names no linux-image package", meta);
}

/* apt-cache takes about a second (it rebuilds its cache from the package
 * lists when pkgcache.bin is not kept, as in containers), so its answer is
 * remembered in <cache>/resolved ("<meta> <package> <stamp>") for as long as
 * apt's state is unchanged: the stamp digests the names, sizes and mtimes of
 * the package lists and of the preferences that choose the candidate. */
static void apt_stamp(char hex[65])
{
    static const char *const dirs[] = {"/var/lib/apt/lists", "/etc/apt/preferences.d", NULL};
    struct vhpc_sha256 s;
    vhpc_sha256_init(&s);
    char line[PATH_MAX + 100];
    struct stat st;
    for (int i = 0; dirs[i]; i++) {
        struct dirent **names;
        int n = scandir(dirs[i], &names, NULL, alphasort);
        for (int j = 0; j < n; j++) {
            char p[PATH_MAX];
            snprintf(p, sizeof(p), "%s/%s", dirs[i], names[j]->d_name);
            if (names[j]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                int l =
                    snprintf(line, sizeof(line), "%s %lld %lld.%09ld\n", p, (long long)st.st_size,
                             (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
                vhpc_sha256_update(&s, line, (size_t)l);
            }
            free(names[j]);
        }
        if (n >= 0)
            free(names);
    }
    if (stat("/etc/apt/preferences", &st) == 0) {
        int l = snprintf(line, sizeof(line), "prefs %lld %lld.%09ld\n", (long long)st.st_size,
                         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
        vhpc_sha256_update(&s, line, (size_t)l);
    }
    vhpc_sha256_hex(&s, hex);
}

static int resolve_cached(const char *cache, const char *meta, char *pkg, size_t len,
                          vhpc_err_t *err)
{
    char path[PATH_MAX + 16], stamp[65], *text;
    snprintf(path, sizeof(path), "%s/resolved", cache);
    apt_stamp(stamp);
    vhpc_err_t e2;
    if (vhpc__read_file(path, &text, NULL, &e2) == 0) {
        char m[128], p[128], st[65];
        int hit = sscanf(text, "%127s %127s %64s", m, p, st) == 3 && strcmp(m, meta) == 0 &&
                  strcmp(st, stamp) == 0 && strlen(p) < len;
        free(text);
        if (hit) {
            memcpy(pkg, p, strlen(p) + 1);
            return 0;
        }
    }
    int r = resolve_package(meta, pkg, len, err);
    if (r < 0)
        return r;
    char line[400];
    int n = snprintf(line, sizeof(line), "%s %s %s\n", meta, pkg, stamp);
    if (n > 0 && (size_t)n < sizeof(line))
        vhpc__write_file(path, line, (size_t)n, 0644, &e2); /* only a shortcut */
    return 0;
}

static int apt_update(vhpc_err_t *err)
{
    const char *argv[] = {"apt-get", "update", "-q", NULL};
    char e[2048];
    int r = vhpc__run(argv, NULL, NULL, 0, e, sizeof(e), err);
    if (r < 0)
        return r;
    if (r != 0)
        return vhpc_err_setmsg(err, -EIO, "apt-get update failed (status %d)%s%s", r,
                               e[0] ? ": " : "", e);
    return 0;
}

static int apt_download(const char *pkg, const char *dir, vhpc_err_t *err)
{
    /* As root, apt drops privileges to _apt, which cannot write our
     * directory; download as root instead (quietly). */
    const char *argv[] = {"apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg, NULL};
    if (geteuid() != 0) {
        argv[3] = pkg;
        argv[4] = NULL;
    }
    char e[2048];
    int r = vhpc__run(argv, dir, NULL, 0, e, sizeof(e), err);
    if (r < 0)
        return r;
    if (r != 0)
        return vhpc_err_setmsg(err, -EIO, "apt-get download %s failed (status %d)%s%s", pkg, r,
                               e[0] ? ": " : "", e);
    return 0;
}

static int find_suffix(const char *dir, const char *prefix, const char *suffix, char *out,
                       size_t len)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    int r = -ENOENT;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name), sl = strlen(suffix), pl = strlen(prefix);
        if (nl > sl + pl && strncmp(de->d_name, prefix, pl) == 0 &&
            strcmp(de->d_name + nl - sl, suffix) == 0) {
            snprintf(out, len, "%s", de->d_name);
            r = 0;
            break;
        }
    }
    closedir(d);
    return r;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
}

/* Download pkg and install it as <cache>/<version> (replacing a broken one). */
static int fetch(const char *cache, const char *pkg, int *updated, struct vhpc_kernel *k,
                 vhpc_err_t *err)
{
    char tmp[PATH_MAX], path[PATH_MAX + 300], deb[256], version[64];
    if (vhpc__pathf(err, tmp, sizeof(tmp) - 320, "%s/.fetch-XXXXXX", cache) < 0)
        return -ENAMETOOLONG;
    if (!mkdtemp(tmp))
        return vhpc_err_set(err, -errno, "creating a temporary directory in %s", cache);
    chmod(tmp, 0755);
    int r = apt_download(pkg, tmp, err);
    if (r < 0 && !*updated) {
        /* Perhaps the lists are missing or stale: update once and retry. */
        char first[sizeof(err->msg)];
        memcpy(first, err ? err->msg : "", err ? sizeof(first) : 1);
        *updated = 1;
        if ((r = apt_update(err)) == 0)
            r = apt_download(pkg, tmp, err);
        else
            vhpc_err_wrap(err, "%s; then", first);
    }
    if (r < 0)
        goto out;
    if (find_suffix(tmp, "", ".deb", deb, sizeof(deb)) < 0) {
        r = vhpc_err_setmsg(err, -ENOENT, "apt-get download %s left no .deb in %s", pkg, tmp);
        goto out;
    }
    char debpath[PATH_MAX + 300], pkgver[128] = "", debsha[65];
    snprintf(debpath, sizeof(debpath), "%s/%s", tmp, deb);
    {
        const char *argv[] = {"dpkg-deb", "-f", debpath, "Version", NULL};
        char e[512];
        if (vhpc__run(argv, NULL, pkgver, sizeof(pkgver), e, sizeof(e), err) != 0)
            pkgver[0] = 0;
        trim(pkgver);
    }
    if ((r = vhpc_sha256_file(debpath, debsha, err)) < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/root", tmp);
    {
        const char *argv[] = {"dpkg-deb", "-x", debpath, path, NULL};
        char e[1024];
        r = vhpc__run(argv, NULL, NULL, 0, e, sizeof(e), err);
        if (r > 0)
            r = vhpc_err_setmsg(err, -EIO, "dpkg-deb -x %s failed: %s", deb, e);
        if (r < 0)
            goto out;
    }
    unlink(debpath);
    /* The kernel release, from the image's name. */
    char name[256];
    snprintf(path, sizeof(path), "%s/root/boot", tmp);
    if (find_suffix(path, "vmlinuz-", "", name, sizeof(name)) < 0 || !valid_version(name + 8)) {
        r = vhpc_err_setmsg(err, -ENOENT, "package %s has no boot/vmlinuz-*", pkg);
        goto out;
    }
    memcpy(version, name + 8, strlen(name + 8) + 1); /* valid_version: < 64 */
    char kdir[PATH_MAX + 16], src[PATH_MAX + 300], dst[PATH_MAX + 300];
    snprintf(kdir, sizeof(kdir), "%s/k", tmp);
    if (mkdir(kdir, 0755) < 0) {
        r = vhpc_err_set(err, -errno, "creating %s", kdir);
        goto out;
    }
    snprintf(src, sizeof(src), "%s/root/boot/vmlinuz-%s", tmp, version);
    snprintf(dst, sizeof(dst), "%s/vmlinuz", kdir);
    if (rename(src, dst) < 0) {
        r = vhpc_err_set(err, -errno, "moving %s", src);
        goto out;
    }
    snprintf(src, sizeof(src), "%s/root/boot/config-%s", tmp, version);
    snprintf(dst, sizeof(dst), "%s/config", kdir);
    rename(src, dst); /* optional */
    snprintf(src, sizeof(src), "%s/root/lib/modules/%s", tmp, version);
    if (access(src, F_OK) < 0)
        snprintf(src, sizeof(src), "%s/root/usr/lib/modules/%s", tmp, version);
    snprintf(dst, sizeof(dst), "%s/modules", kdir);
    if (rename(src, dst) < 0) {
        r = vhpc_err_set(err, -errno, "package %s: lib/modules/%s", pkg, version);
        goto out;
    }
    if ((r = decompress_modules(dst, err)) < 0 || (r = write_modules_dep(dst, err)) < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/vmlinuz", kdir);
    char sha[65];
    if ((r = vhpc_sha256_file(path, sha, err)) < 0)
        goto out;
    char now[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    json_t *man = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "version", version, "package", pkg,
                            "package_version", pkgver, "vmlinuz_sha256", sha, "deb_sha256", debsha,
                            "fetched", now);
    char *text = man ? json_dumps(man, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(man);
    if (!text) {
        r = vhpc_err_set(err, -ENOMEM, "writing the kernel manifest");
        goto out;
    }
    snprintf(path, sizeof(path), "%s/manifest.json", kdir);
    r = vhpc__write_file(path, text, strlen(text), 0644, err);
    free(text);
    if (r < 0)
        goto out;
    /* Into place; a broken copy is moved aside first (the lock keeps other
     * vhpc processes out; a VM still using its files keeps them open). */
    char final[PATH_MAX + 80];
    snprintf(final, sizeof(final), "%s/%s", cache, version);
    if (access(final, F_OK) == 0) {
        snprintf(path, sizeof(path), "%s/old", tmp);
        if (rename(final, path) < 0) {
            r = vhpc_err_set(err, -errno, "moving the broken %s aside", final);
            goto out;
        }
    }
    if (rename(kdir, final) < 0) {
        r = vhpc_err_set(err, -errno, "installing %s", final);
        goto out;
    }
    r = check_cached(cache, version, k, err);
out:
    if (r < 0)
        vhpc_err_wrap(err, "fetching %s", pkg);
    vhpc_err_t e2;
    vhpc__rm_tree(tmp, &e2);
    return r;
}

int vhpc_kernel_ensure(struct vhpc_kernel *k, vhpc_err_t *err)
{
    char cache[PATH_MAX], lockpath[PATH_MAX + 16], shared[PATH_MAX];
    const char *meta = getenv("VHPC_KERNEL_PACKAGE");
    if (!meta || !meta[0])
        meta = DEFAULT_PACKAGE;
    vhpc__kernel_cache_dir(cache, sizeof(cache));
    int have_shared = shared_cache(cache, shared, sizeof(shared));
    int r = vhpc__mkdirs(cache, vhpc__private_store() ? 0700 : 0755, err);
    if (r < 0)
        return vhpc_err_wrap(err, "guest kernel cache");
    snprintf(lockpath, sizeof(lockpath), "%s/.lock", cache);
    int lock;
    if ((r = vhpc__lock_open(lockpath, "guest kernel cache", &lock, err)) < 0)
        return r;
    if ((r = vhpc__lock_wait(lock, lockpath, "guest kernel cache", err)) < 0) {
        close(lock);
        return r;
    }
    int updated = 0;
    char pkg[128];
    /* Metapackage -> versioned package; apt-cache reads local lists only. */
    r = resolve_cached(cache, meta, pkg, sizeof(pkg), err);
    if (r < 0) {
        vhpc_err_t e2;
        if (newest_cached(cache, k, &e2) == 0 ||
            (have_shared && newest_cached(shared, k, &e2) == 0)) {
            r = 0; /* apt does not know it here: use what is cached */
            goto out;
        }
        updated = 1;
        if ((r = apt_update(err)) < 0 ||
            (r = resolve_cached(cache, meta, pkg, sizeof(pkg), err)) < 0)
            goto out;
    }
    const char *version = pkg + strlen("linux-image-");
    char ver[64];
    if (strlen(version) >= sizeof(ver)) {
        r = vhpc_err_setmsg(err, -EINVAL, "unexpected kernel package name %s", pkg);
        goto out;
    }
    memcpy(ver, version, strlen(version) + 1);
    size_t vl = strlen(ver);
    if (vl > 9 && strcmp(ver + vl - 9, "-unsigned") == 0)
        ver[vl - 9] = 0;
    vhpc_err_t e2;
    if (valid_version(ver) && (check_cached(cache, ver, k, &e2) == 0 ||
                               (have_shared && check_cached(shared, ver, k, &e2) == 0))) {
        r = 0; /* cached here, or in the system cache root keeps */
        goto out;
    }
    r = fetch(cache, pkg, &updated, k, err);
out:
    close(lock);
    if (r < 0)
        vhpc_err_wrap(err, "guest kernel (%s)", meta);
    return r;
}
