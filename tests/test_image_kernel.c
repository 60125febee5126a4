/*
 * test_image_kernel - the guest kernel cache, in a private cache directory
 * (so that damaging it cannot disturb other tests): the first ensure
 * downloads Debian's cloud kernel with apt; the second finds it cached and
 * does not run apt-get at all (an apt-get that fails and leaves a mark is
 * first in $PATH) and leaves the manifest alone; a damaged vmlinuz is
 * noticed, reported clearly when apt-get cannot fetch, and re-fetched when
 * it can.  Also: the generated modules.dep has the virtio modules with
 * their dependencies, and the modules are plain .ko files.
 */
#include "kernel.h"
#include "cpio.h"
#include "testutil.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char marker[512], spy_path[4800], fail_path[4800];

static void fake_apt(const char *dir, const char *body)
{
    char path[600], text[1024];
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/apt-get", dir);
    snprintf(text, sizeof(text), "#!/bin/sh\necho \"$@\" >> %s\n%s\n", marker, body);
    vhpc_err_t err;
    T_ASSERT(vhpc__write_file(path, text, strlen(text), 0755, &err) == 0, "%s", err.msg);
}

static int apt_ran(const char *what)
{
    char *d;
    size_t n;
    vhpc_err_t err;
    if (vhpc__read_file(marker, &d, &n, &err) < 0)
        return 0;
    int r = strstr(d, what) != NULL;
    free(d);
    return r;
}

static char *slurp(const char *path)
{
    char *d;
    vhpc_err_t err;
    T_ASSERT(vhpc__read_file(path, &d, NULL, &err) == 0, "%s", err.msg);
    return d;
}

/* The modules.dep line of module `file` (e.g. "/virtio_net.ko"). */
static char *dep_line(const char *dep, const char *file, char *out, size_t len)
{
    for (const char *p = dep; *p;) {
        size_t l = strcspn(p, "\n");
        const char *colon = memchr(p, ':', l);
        size_t fl = strlen(file);
        if (colon && (size_t)(colon - p) >= fl && memcmp(colon - fl, file, fl) == 0) {
            snprintf(out, len, "%.*s", (int)l, p);
            return out;
        }
        p += l + (p[l] == '\n');
    }
    return NULL;
}

static char cache[512], orig[4096];

/* A private $VHPC_HOME and kernel cache, and two apt-gets first in $PATH
 * that note each call in `marker`: one passes it on (spy_path), one fails
 * (fail_path).  Then the first ensure: it downloads with apt-get. */
static void fetch(struct vhpc_kernel *k)
{
    const char *tmp = t_tmpdir();
    char home[512];
    snprintf(home, sizeof(home), "%s/home", tmp);
    snprintf(cache, sizeof(cache), "%s/kernels", tmp);
    snprintf(marker, sizeof(marker), "%s/apt-ran", tmp);
    setenv("VHPC_HOME", home, 1);
    setenv("VHPC_KERNEL_CACHE", cache, 1);
    snprintf(orig, sizeof(orig), "%s",
             getenv("PATH") ? getenv("PATH") : "/usr/sbin:/usr/bin:/sbin:/bin");
    char spy[512], fail[512];
    snprintf(spy, sizeof(spy), "%s/spy", tmp);
    snprintf(fail, sizeof(fail), "%s/fail", tmp);
    fake_apt(spy, "PATH=${PATH#*:} exec apt-get \"$@\"");
    fake_apt(fail, "exit 1");
    snprintf(spy_path, sizeof(spy_path), "%s:%s", spy, orig);
    snprintf(fail_path, sizeof(fail_path), "%s:%s", fail, orig);

    vhpc_err_t err;
    setenv("PATH", spy_path, 1);
    uint64_t t0 = t_now_ms();
    T_ASSERT(vhpc_kernel_ensure(k, &err) == 0, "first ensure: %s", err.msg);
    uint64_t t_fetch = t_now_ms() - t0;
    printf("fetched kernel %s in %.1f s\n", k->version, t_fetch / 1000.0);
    T_ASSERT(apt_ran("download"), "the first ensure downloads with apt-get");
}

/* 1. Fetch: a cloud kernel, its sha256 in the manifest; modules.dep
 * written from .modinfo, plain .ko files. */
static void test_fetch(void)
{
    struct vhpc_kernel k;
    vhpc_err_t err;
    char path[4200];
    fetch(&k);
    T_ASSERT(strncmp(k.version, "6.", 2) == 0 && strstr(k.version, "cloud-amd64"),
             "a cloud kernel: %s", k.version);
    char hex[65];
    T_ASSERT(vhpc_sha256_file(k.vmlinuz, hex, &err) == 0 && strcmp(hex, k.sha256) == 0,
             "sha256 of %s", k.vmlinuz);
    struct stat st;
    T_ASSERT(stat(k.vmlinuz, &st) == 0 && st.st_size > (1 << 20), "vmlinuz is a kernel");
    snprintf(path, sizeof(path), "%s/%s/manifest.json", cache, k.version);
    json_error_t je;
    json_t *man = json_load_file(path, 0, &je);
    T_ASSERT(man, "manifest %s: %s", path, je.text);
    T_ASSERT(strcmp(json_string_value(json_object_get(man, "vmlinuz_sha256")), k.sha256) == 0,
             "the manifest records the sha256");
    const char *pkg = json_string_value(json_object_get(man, "package"));
    T_ASSERT(pkg && strstr(pkg, k.version), "the manifest names the package: %s", pkg);
    printf("package %s %s\n", pkg, json_string_value(json_object_get(man, "package_version")));
    json_decref(man);

    /* Modules: modules.dep written from .modinfo, plain .ko files. */
    snprintf(path, sizeof(path), "%s/modules.dep", k.modules_dir);
    char *dep = slurp(path), line[4096];
    T_ASSERT(!strstr(dep, ".ko.xz") && !strstr(dep, ".ko.zst") && !strstr(dep, ".ko.gz"),
             "no compressed modules");
    T_ASSERT(dep_line(dep, "/virtio_net.ko", line, sizeof(line)), "virtio_net is a module");
    T_ASSERT(strstr(line, "/net_failover.ko") && strstr(line, "/failover.ko") &&
                 strstr(line, "/virtio_ring.ko") && strstr(line, "/virtio.ko"),
             "virtio_net's dependencies: %s", line);
    /* depmod order: a module's dependencies come after it on the line. */
    T_ASSERT(strstr(line, "/net_failover.ko") < strstr(line, " kernel/net/core/failover.ko"),
             "net_failover before failover: %s", line);
    T_ASSERT(dep_line(dep, "/virtio_pci.ko", line, sizeof(line)) &&
                 strstr(line, "virtio_pci_modern_dev.ko") &&
                 strstr(line, "virtio_pci_legacy_dev.ko"),
             "virtio_pci's dependencies: %s", line);
    T_ASSERT(dep_line(dep, "/virtio_console.ko", line, sizeof(line)), "virtio_console");
    T_ASSERT(dep_line(dep, "/virtio_blk.ko", line, sizeof(line)), "virtio_blk");
    T_ASSERT(dep_line(dep, "/virtio_ring.ko", line, sizeof(line)) && strlen(strchr(line, ':')) == 1,
             "virtio_ring needs nothing: %s", line);
    T_ASSERT(dep_line(dep, "/virtio.ko", line, sizeof(line)) && strstr(line, "/virtio_ring.ko"),
             "virtio needs virtio_ring: %s", line);
    free(dep);

    setenv("PATH", orig, 1);
}

/* 2. Cached: no apt-get, manifest untouched; 3. a damaged vmlinuz is
 * detected, with apt-get failing a clear error; 4. with apt-get working,
 * re-fetched. */
static void test_cached_then_damaged(void)
{
    struct vhpc_kernel k, k2;
    vhpc_err_t err;
    char path[4200], hex[65];
    fetch(&k);
    uint64_t t0;
    /* 2. Cached: no apt-get, manifest untouched. */
    snprintf(path, sizeof(path), "%s/%s/manifest.json", cache, k.version);
    char *before = slurp(path);
    struct stat st_before;
    T_ASSERT(stat(path, &st_before) == 0, "stat manifest");
    unlink(marker);
    setenv("PATH", fail_path, 1);
    t0 = t_now_ms();
    T_ASSERT(vhpc_kernel_ensure(&k2, &err) == 0, "second ensure: %s", err.msg);
    uint64_t t_cached = t_now_ms() - t0;
    printf("cached ensure took %.3f s\n", t_cached / 1000.0);
    T_ASSERT(!apt_ran(""), "the cached kernel is returned without apt-get");
    T_ASSERT(strcmp(k.version, k2.version) == 0 && strcmp(k.sha256, k2.sha256) == 0 &&
                 strcmp(k.vmlinuz, k2.vmlinuz) == 0,
             "the same kernel");
    char *after = slurp(path);
    struct stat st_after;
    T_ASSERT(stat(path, &st_after) == 0 && strcmp(before, after) == 0 &&
                 st_after.st_mtim.tv_sec == st_before.st_mtim.tv_sec &&
                 st_after.st_mtim.tv_nsec == st_before.st_mtim.tv_nsec &&
                 st_after.st_ino == st_before.st_ino,
             "the manifest is unchanged");
    free(after);
    T_ASSERT(t_cached < 10000, "the cached path is quick (%llu ms)", (unsigned long long)t_cached);
    T_ASSERT(vhpc_kernel_get(k.version, &k2, &err) == 0 && strcmp(k2.sha256, k.sha256) == 0,
             "get by version: %s", err.msg);
    T_ASSERT(vhpc_kernel_get("9.9.9-0-nope", &k2, &err) == -ENOENT, "get unknown version");
    T_ASSERT(vhpc_kernel_get("../etc", &k2, &err) == -EINVAL, "get a bad version");

    /* 3. Damaged vmlinuz: detected; with apt-get failing, a clear error. */
    int fd = open(k.vmlinuz, O_WRONLY);
    T_ASSERT(fd >= 0 && pwrite(fd, "garbage!", 8, 4096) == 8, "damage vmlinuz");
    close(fd);
    T_ASSERT(vhpc_kernel_get(k.version, &k2, &err) == -EBADMSG, "get notices the damage: %s",
             err.msg);
    T_ASSERT(strstr(err.msg, "sha256"), "and says so: %s", err.msg);
    T_ASSERT(vhpc_kernel_ensure(&k2, &err) < 0, "ensure cannot fetch without apt-get");
    printf("error without apt-get: %s\n", err.msg);
    T_ASSERT(strstr(err.msg, "guest kernel") && strstr(err.msg, "apt-get"),
             "the error says what failed: %s", err.msg);
    T_ASSERT(apt_ran("download"), "it tried");

    /* 4. ... and with apt-get working, re-fetched. */
    unlink(marker);
    setenv("PATH", spy_path, 1);
    T_ASSERT(vhpc_kernel_ensure(&k2, &err) == 0, "ensure after damage: %s", err.msg);
    T_ASSERT(apt_ran("download"), "the damaged kernel is downloaded again");
    T_ASSERT(vhpc_sha256_file(k2.vmlinuz, hex, &err) == 0 && strcmp(hex, k.sha256) == 0 &&
                 strcmp(k2.sha256, k.sha256) == 0,
             "vmlinuz is whole again");
    /* Nothing left over in the cache. */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "test -z \"$(ls -A %s | grep -v -e '^\\.lock$' -e '^resolved$' -e '^%s$')\"", cache,
             k.version);
    T_ASSERT(system(cmd) == 0, "only the kernel, the lock and the resolution are in %s", cache);
    setenv("PATH", orig, 1);
    free(before);
}

static const struct t_case cases[] = {
    {"fetch", test_fetch, 300},
    {"cached_then_damaged", test_cached_then_damaged, 300},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
