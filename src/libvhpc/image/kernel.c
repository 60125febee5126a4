/*
 * kernel.c - the guest kernel cache (see kernel.h): resolving, fetching,
 * unpacking and checking Debian's cloud kernel, and the modules.dep it
 * lacks.  Files, locks and running apt are util's (fs.h, lock.h, proc.h).
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
#include "sha256.h"
#include "clock.h"
#include "fs.h"
#include "lock.h"
#include "paths.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PACKAGE "linux-image-cloud-amd64"

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
    if (snprintf(buf, len, "%s/kernels", vhpc_system_root()) >= (int)len || !strcmp(buf, own))
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
    /* A mirror that cannot be resolved or reached for a moment ("Temporary
     * failure resolving", a reset connection) is common on busy networks:
     * try a few times, further apart each time, before giving up. */
    static const int pause_ms[] = {2000, 5000, 10000};
    char e[2048];
    int r;
    for (size_t attempt = 0;; attempt++) {
        r = vhpc__run(argv, dir, NULL, 0, e, sizeof(e), err);
        if (r <= 0 || attempt == sizeof(pause_ms) / sizeof(pause_ms[0]))
            break;
        vhpc_sleep_ms(pause_ms[attempt]);
    }
    if (r < 0)
        return r;
    if (r != 0)
        return vhpc_err_setmsg(err, -EIO, "apt-get download %s failed (status %d, 4 tries)%s%s",
                               pkg, r, e[0] ? ": " : "", e);
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
    vhpc_rm_tree(tmp, &e2);
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
    int r = vhpc_mkdirs(cache, vhpc__private_store() ? 0700 : 0755, err);
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
