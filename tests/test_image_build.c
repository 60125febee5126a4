/*
 * test_image_build - minimal images: the initramfs has /init (the agent),
 * busybox with its applets, the virtio modules with every dependency ahead
 * of the module that needs it in /etc/vhpc/modules, an added dynamic binary
 * with its shared libraries and the loader, an added directory (with a
 * symlink and a nested binary) and the base files; the same inputs give the
 * same digest, a changed input a new one with the old image kept; find by
 * name, digest prefix and name@prefix; list; and the errors: unknown image,
 * ambiguous prefix, bad name, missing agent, missing added path, unknown
 * kernel module.
 *
 * The kernel comes from the shared test cache ($VHPC_KERNEL_CACHE, set by
 * tests/image.cmake), downloaded once per machine.  /init is the real
 * vhpc-agent when the build has one ($VHPC_AGENT), else a stand-in script.
 */
#include "cpio.h"
#include "image.h"
#include "kernel.h"
#include "vhpc/store.h"
#include "testutil.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the archive, read back ---- */

struct aent {
    char *name;
    uint32_t mode;
    uint64_t size;
    char *data;
    uint32_t rmaj, rmin;
};

struct archive {
    struct aent *v;
    size_t n, cap;
    char *raw;
};

static int collect(const struct vhpc_cpio_entry *e, void *arg)
{
    struct archive *a = arg;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = realloc(a->v, a->cap * sizeof(*a->v));
    }
    struct aent *x = &a->v[a->n++];
    x->name = strdup(e->name);
    x->mode = e->mode;
    x->size = e->size;
    x->data = malloc(e->size + 1);
    memcpy(x->data, e->data, e->size);
    x->data[e->size] = 0;
    x->rmaj = e->rdevmajor;
    x->rmin = e->rdevminor;
    T_ASSERT(e->uid == 0 && e->gid == 0 && e->mtime == 0, "%s: root-owned, mtime 0", e->name);
    if (a->n > 1)
        T_ASSERT(strcmp(a->v[a->n - 2].name, e->name) < 0, "entries sorted: %s before %s",
                 a->v[a->n - 2].name, e->name);
    return 0;
}

static void load_archive(const char *path, struct archive *a)
{
    memset(a, 0, sizeof(*a));
    size_t len;
    vhpc_err_t err;
    T_ASSERT(vhpc__read_file(path, &a->raw, &len, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_parse(a->raw, len, collect, a, &err) == 0, "parse %s: %s", path, err.msg);
}

static void free_archive(struct archive *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->v[i].name);
        free(a->v[i].data);
    }
    free(a->v);
    free(a->raw);
}

static struct aent *get(struct archive *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i].name, name) == 0)
            return &a->v[i];
    return NULL;
}

/* Follow symlinks inside the archive, as the guest kernel would. */
static struct aent *resolve(struct archive *a, const char *path)
{
    char work[4096], res[4096];
    snprintf(work, sizeof(work), "%s", path);
    for (int hops = 0; hops < 40; hops++) {
        res[0] = 0;
        int restarted = 0;
        for (char *p = work; *p;) {
            p += strspn(p, "/");
            if (!*p)
                break;
            size_t cl = strcspn(p, "/");
            char comp[256];
            snprintf(comp, sizeof(comp), "%.*s", (int)cl, p);
            p += cl;
            if (strcmp(comp, ".") == 0)
                continue;
            if (strcmp(comp, "..") == 0) {
                char *s = strrchr(res, '/');
                if (s)
                    *s = 0;
                else
                    res[0] = 0;
                continue;
            }
            char cand[4096];
            if (snprintf(cand, sizeof(cand), "%s%s%s", res, res[0] ? "/" : "", comp) >=
                (int)sizeof(cand))
                return NULL;
            struct aent *e = get(a, cand);
            if (!e)
                return NULL;
            if (S_ISLNK(e->mode)) {
                char next[4096];
                int n = e->data[0] == '/'
                            ? snprintf(next, sizeof(next), "%s%s", e->data, p)
                            : snprintf(next, sizeof(next), "%s/%s%s", res, e->data, p);
                if (n < 0 || n >= (int)sizeof(next))
                    return NULL;
                memcpy(work, next, (size_t)n + 1);
                restarted = 1;
                break;
            }
            snprintf(res, sizeof(res), "%s", cand);
        }
        if (!restarted)
            return res[0] ? get(a, res) : NULL;
    }
    return NULL;
}

/* ---- helpers ---- */

static void write_text(const char *path, const char *text, unsigned mode)
{
    vhpc_err_t err;
    T_ASSERT(vhpc__write_file(path, text, strlen(text), mode, &err) == 0, "%s", err.msg);
}

static int same_as_host(struct archive *a, const char *image_path, const char *host)
{
    struct aent *e = resolve(a, image_path);
    if (!e || !S_ISREG(e->mode))
        return 0;
    char *d;
    size_t n;
    vhpc_err_t err;
    if (vhpc__read_file(host, &d, &n, &err) < 0)
        return 0;
    int same = n == e->size && memcmp(d, e->data, n) == 0;
    free(d);
    return same;
}

/* The libraries the host's loader names for `bin`. */
static int host_libs(const char *bin, char libs[][512], int max)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "LD_TRACE_LOADED_OBJECTS=1 /lib64/ld-linux-x86-64.so.2 %s", bin);
    FILE *p = popen(cmd, "r");
    char line[1024];
    int n = 0;
    while (n < max && fgets(line, sizeof(line), p)) {
        char *s = strstr(line, "=> /");
        s = s ? s + 3 : line + strspn(line, " \t");
        if (*s != '/')
            continue;
        s[strcspn(s, " \n")] = 0;
        snprintf(libs[n++], 512, "%s", s);
    }
    pclose(p);
    return n;
}

static int count_images(const struct vhpc_image *img, void *arg)
{
    int *c = arg;
    c[0]++;
    c[1] = img->version > c[1] ? img->version : c[1];
    return 0;
}

static void manifest_path(const struct vhpc_image *img, char *path, size_t len)
{
    snprintf(path, len, "%s/store/images/%s.json", getenv("VHPC_HOME"), img->digest);
}

/* ---- checks on one image ---- */

static void check_modules(struct archive *a, const struct vhpc_image *img)
{
    struct aent *list = get(a, "etc/vhpc/modules");
    T_ASSERT(list && S_ISREG(list->mode), "/etc/vhpc/modules");
    /* The kernel's own modules.dep says what each module needs. */
    struct vhpc_kernel k;
    vhpc_err_t err;
    T_ASSERT(vhpc_kernel_get(img->kernel_version, &k, &err) == 0, "%s", err.msg);
    char path[4200];
    snprintf(path, sizeof(path), "%s/modules.dep", k.modules_dir);
    char *dep;
    T_ASSERT(vhpc__read_file(path, &dep, NULL, &err) == 0, "%s", err.msg);
    char prefix[200];
    snprintf(prefix, sizeof(prefix), "/lib/modules/%s/", img->kernel_version);
    char loaded[64][256];
    int n = 0;
    char *save, *text = strdup(list->data);
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        T_ASSERT(strncmp(l, prefix, strlen(prefix)) == 0, "module path %s under %s", l, prefix);
        struct aent *m = resolve(a, l);
        T_ASSERT(m && S_ISREG(m->mode) && m->size > 1000 && memcmp(m->data, "\177ELF", 4) == 0,
                 "%s is in the image, a plain ELF .ko", l);
        const char *rel = l + strlen(prefix);
        /* Every dependency was listed earlier. */
        size_t rl = strlen(rel);
        for (char *p = dep; *p;) {
            size_t ll = strcspn(p, "\n");
            if (ll > rl && strncmp(p, rel, rl) == 0 && p[rl] == ':') {
                char line[4096];
                snprintf(line, sizeof(line), "%.*s", (int)(ll - rl - 1), p + rl + 1);
                char *s2;
                for (char *d = strtok_r(line, " ", &s2); d; d = strtok_r(NULL, " ", &s2)) {
                    int found = 0;
                    for (int i = 0; i < n; i++)
                        found |= strcmp(loaded[i], d) == 0;
                    T_ASSERT(found, "%s needs %s, which must be loaded before it", rel, d);
                }
            }
            p += ll + (p[ll] == '\n');
        }
        T_ASSERT(n < 64, "too many modules");
        snprintf(loaded[n++], 256, "%s", rel);
    }
    free(text);
    free(dep);
    const char *want[] = {"virtio.ko",         "virtio_ring.ko", "virtio_pci.ko",
                          "virtio_console.ko", "virtio_net.ko",  "failover.ko",
                          "net_failover.ko",   "virtio_blk.ko",  NULL};
    for (int w = 0; want[w]; w++) {
        int found = 0;
        for (int i = 0; i < n; i++) {
            const char *b = strrchr(loaded[i], '/');
            found |= strcmp(b + 1, want[w]) == 0;
        }
        T_ASSERT(found, "%s is loaded at boot", want[w]);
    }
    printf("modules (%d): ", n);
    for (int i = 0; i < n; i++)
        printf("%s ", strrchr(loaded[i], '/') + 1);
    printf("\n");
}

static void check_image(const struct vhpc_image *img, const char *agent, const char *bin,
                        const char *addir)
{
    struct archive a;
    load_archive(img->initrd, &a);
    struct stat st, ks;
    T_ASSERT(stat(img->kernel, &ks) == 0 && ks.st_size > (1 << 20), "kernel %s", img->kernel);
    T_ASSERT(stat(img->initrd, &st) == 0 && (uint64_t)(st.st_size + ks.st_size) == img->size,
             "size %llu = kernel + initramfs", (unsigned long long)img->size);
    T_ASSERT(!strcmp(img->kind, "minimal") && !img->rootfs[0], "a minimal image");
    char hex[65];
    vhpc_err_t err;
    T_ASSERT(vhpc_sha256_file(img->initrd, hex, &err) == 0 && strstr(img->initrd, hex),
             "the initramfs is stored under its sha256");

    struct aent *init = get(&a, "init");
    T_ASSERT(init && init->mode == (S_IFREG | 0755), "/init is an executable file");
    T_ASSERT(same_as_host(&a, "init", agent), "/init is the agent");
    T_ASSERT(same_as_host(&a, "bin/busybox", "/bin/busybox"), "busybox");
    const char *applets[] = {"bin/sh", "bin/mount", "sbin/ip", "bin/cat", "sbin/modprobe", NULL};
    for (int i = 0; applets[i]; i++)
        T_ASSERT(same_as_host(&a, applets[i], "/bin/busybox"), "applet /%s runs busybox",
                 applets[i]);
    const char *dirs[] = {"proc", "sys", "dev", "tmp", "run", "mnt", NULL};
    for (int i = 0; dirs[i]; i++) {
        struct aent *d = get(&a, dirs[i]);
        T_ASSERT(d && S_ISDIR(d->mode), "/%s is a directory", dirs[i]);
    }
    T_ASSERT(get(&a, "tmp")->mode == (S_IFDIR | 01777), "/tmp is sticky");
    struct aent *con = get(&a, "dev/console");
    T_ASSERT(con && S_ISCHR(con->mode) && con->rmaj == 5 && con->rmin == 1, "/dev/console");
    struct aent *pw = resolve(&a, "etc/passwd");
    T_ASSERT(pw && strncmp(pw->data, "root:x:0:0:", 11) == 0, "/etc/passwd has root");
    T_ASSERT(resolve(&a, "etc/group") && resolve(&a, "etc/hosts"), "/etc/group, /etc/hosts");
    struct aent *info = get(&a, "etc/vhpc/image");
    T_ASSERT(info && strstr(info->data, img->kernel_version), "/etc/vhpc/image names the kernel");
    check_modules(&a, img);

    /* The added binary, its libraries and the loader. */
    T_ASSERT(same_as_host(&a, bin + 1, bin), "%s is in the image", bin);
    char libs[64][512];
    int nl = host_libs(bin, libs, 64);
    T_ASSERT(nl >= 2, "%s is dynamic (%d libraries)", bin, nl);
    for (int i = 0; i < nl; i++)
        T_ASSERT(same_as_host(&a, libs[i] + 1, libs[i]), "%s's library %s is in the image", bin,
                 libs[i]);
    T_ASSERT(same_as_host(&a, "lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"),
             "the dynamic loader");
    struct stat hst;
    if (lstat("/lib", &hst) == 0 && S_ISLNK(hst.st_mode)) {
        struct aent *l = get(&a, "lib");
        T_ASSERT(l && S_ISLNK(l->mode) && strcmp(l->data, "usr/lib") == 0,
                 "merged /usr like the host: /lib -> usr/lib");
    }
    /* The added directory: files, the symlink kept, the nested binary's libraries. */
    char p[1024], q[1024];
    snprintf(p, sizeof(p), "%s/data.txt", addir);
    T_ASSERT(same_as_host(&a, p + 1, p), "%s", p);
    snprintf(p, sizeof(p), "%s/sub/deeper/file", addir);
    T_ASSERT(same_as_host(&a, p + 1, p), "%s", p);
    snprintf(p, sizeof(p), "%s/alias", addir + 1);
    struct aent *al = get(&a, p);
    T_ASSERT(al && S_ISLNK(al->mode) && strcmp(al->data, "data.txt") == 0, "symlink kept: %s", p);
    snprintf(p, sizeof(p), "%s/bin/tool", addir);
    T_ASSERT(same_as_host(&a, p + 1, p), "nested binary %s", p);
    nl = host_libs(p, libs, 64);
    for (int i = 0; i < nl; i++)
        T_ASSERT(same_as_host(&a, libs[i] + 1, libs[i]), "%s's library %s", p, libs[i]);
    snprintf(q, sizeof(q), "%s/exec-script", addir);
    struct aent *sc = resolve(&a, q + 1);
    T_ASSERT(sc && (sc->mode & 0111), "modes kept: %s", q);

    /* The manifest. */
    char mpath[4200], cmd[4400], mhex[80] = "";
    manifest_path(img, mpath, sizeof(mpath));
    snprintf(cmd, sizeof(cmd), "sha256sum %s", mpath);
    FILE *sp = popen(cmd, "r");
    T_ASSERT(sp && fscanf(sp, "%64s", mhex) == 1, "%s", cmd);
    pclose(sp);
    T_ASSERT(strcmp(mhex, img->digest) == 0, "the digest is the manifest's sha256");
    json_error_t je;
    json_t *m = json_load_file(mpath, 0, &je);
    T_ASSERT(m, "manifest %s: %s", mpath, je.text);
    T_ASSERT(strcmp(json_string_value(json_object_get(m, "kind")), "minimal") == 0, "kind");
    T_ASSERT(strcmp(json_string_value(json_object_get(m, "os")), "debian-12") == 0, "os");
    json_t *libc = json_object_get(json_object_get(m, "packages"), "libc6");
    T_ASSERT(libc && json_string_value(json_object_get(libc, "version")) &&
                 strcmp(json_string_value(json_object_get(libc, "source")), "glibc") == 0,
             "the packages of the added files, with versions and sources");
    T_ASSERT(json_integer_value(json_object_get(m, "size")) == (json_int_t)img->size, "size");
    json_t *inputs = json_object_get(m, "inputs");
    int saw_bin = 0, saw_dir = 0;
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        json_t *in = json_array_get(inputs, i);
        const char *ip = json_string_value(json_object_get(in, "path"));
        const char *sha = json_string_value(json_object_get(in, "sha256"));
        T_ASSERT(ip && sha && strlen(sha) == 64, "input %zu has path and sha256", i);
        saw_bin |= strcmp(ip, bin) == 0;
        saw_dir |= strcmp(ip, addir) == 0;
    }
    T_ASSERT(saw_bin && saw_dir, "the manifest records the added paths");
    T_ASSERT(json_array_size(json_object_get(m, "modules")) >= 8, "the manifest lists modules");
    json_t *sonames = json_object_get(m, "libs");
    int saw_libc = 0;
    for (size_t i = 0; i < json_array_size(sonames); i++)
        saw_libc |= !strcmp(json_string_value(json_array_get(sonames, i)), "libc.so.6");
    T_ASSERT(saw_libc, "... and libraries by name");
    T_ASSERT(vhpc_is_digest(json_string_value(json_object_get(m, "inputs_digest"))),
             "... and the digest of the inputs");
    json_decref(m);
    free_archive(&a);
}

static char home[512], agent[512], rsh[512], addir[512];
static const char *bin;
static const char *add[3];
static struct vhpc_image_spec spec = {.name = "minimal", .add = add};

/* A $VHPC_HOME of the case's own, the agent (the real one or a stand-in),
 * a fake vhpc-rsh and an application directory: data, a symlink, a nested
 * dynamic binary. */
static void setup(void)
{
    const char *tmp = t_tmpdir();
    char path[1024];
    snprintf(home, sizeof(home), "%s/home", tmp);
    setenv("VHPC_HOME", home, 1);
    if (!getenv("VHPC_KERNEL_CACHE"))
        setenv("VHPC_KERNEL_CACHE", "/var/cache/vhpc-test/kernels", 1);
    const char *ra = getenv("VHPC_AGENT");
    if (ra && access(ra, R_OK) == 0) {
        snprintf(agent, sizeof(agent), "%s", ra);
    } else {
        snprintf(agent, sizeof(agent), "%s/fake-agent", tmp);
        write_text(agent, "#!/bin/sh\necho stand-in agent\nexec /bin/sh\n", 0755);
    }
    snprintf(rsh, sizeof(rsh), "%s/fake-rsh", tmp);
    write_text(rsh, "#!/bin/sh\necho rsh \"$@\"\n", 0755);
    printf("agent: %s\n", agent);

    bin = access("/usr/bin/hpcc", X_OK) == 0 ? "/usr/bin/hpcc" : "/usr/bin/ls";
    snprintf(addir, sizeof(addir), "%s/app", tmp);
    snprintf(path, sizeof(path), "%s/sub/deeper", addir);
    vhpc_err_t err;
    T_ASSERT(vhpc_mkdirs(path, 0755, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof(path), "%s/bin", addir);
    T_ASSERT(vhpc_mkdirs(path, 0755, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof(path), "%s/data.txt", addir);
    write_text(path, "version 1\n", 0644);
    snprintf(path, sizeof(path), "%s/sub/deeper/file", addir);
    write_text(path, "deep\n", 0600);
    snprintf(path, sizeof(path), "%s/exec-script", addir);
    write_text(path, "#!/bin/sh\ntrue\n", 0755);
    snprintf(path, sizeof(path), "%s/alias", addir);
    T_ASSERT(symlink("data.txt", path) == 0, "symlink");
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cp /usr/bin/env %s/bin/tool", addir);
    T_ASSERT(system(cmd) == 0, "copy a binary into the app dir");
    add[0] = bin;
    add[1] = addir;
    add[2] = NULL;
}

static void set_data(const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/data.txt", addir);
    write_text(path, text, 0644);
}

/* Build "minimal" (version 1), change an input, build it again (version
 * 2, a new digest, the old image kept). */
static void build_two_versions(struct vhpc_image *img1, struct vhpc_image *img3)
{
    vhpc_err_t err;
    T_ASSERT(vhpc_image_build(&spec, agent, rsh, img1, &err) == 0, "build: %s", err.msg);
    set_data("version 2\n");
    T_ASSERT(vhpc_image_build(&spec, agent, rsh, img3, &err) == 0, "build v2: %s", err.msg);
    T_ASSERT(strcmp(img3->digest, img1->digest) != 0, "a changed input, a new digest");
    T_ASSERT(access(img1->initrd, R_OK) == 0, "the old image is kept");
    T_ASSERT(img3->version == 2, "version 2");
}

/* 1. Build: what the initramfs holds. */
static void test_build(void)
{
    struct vhpc_image img1;
    vhpc_err_t err;
    setup();
    uint64_t t0 = t_now_ms();
    T_ASSERT(vhpc_image_build(&spec, agent, rsh, &img1, &err) == 0, "build: %s", err.msg);
    printf("built %s@%.12s (%llu bytes, kernel %s) in %.2f s\n", img1.name, img1.digest,
           (unsigned long long)img1.size, img1.kernel_version, (t_now_ms() - t0) / 1000.0);
    T_ASSERT(strcmp(img1.name, "minimal") == 0 && strlen(img1.digest) == 64 && img1.version == 1,
             "name, digest, version 1");
    check_image(&img1, agent, bin, addir);
    struct archive a;
    load_archive(img1.initrd, &a);
    T_ASSERT(same_as_host(&a, "bin/vhpc-rsh", rsh), "/bin/vhpc-rsh");
    free_archive(&a);
}

/* 2. Same inputs, same digest, nothing new in the store. */
static void test_same_inputs(void)
{
    struct vhpc_image img1, img2;
    vhpc_err_t err;
    setup();
    T_ASSERT(vhpc_image_build(&spec, agent, rsh, &img1, &err) == 0, "build: %s", err.msg);
    T_ASSERT(vhpc_image_build(&spec, agent, rsh, &img2, &err) == 0, "rebuild: %s", err.msg);
    T_ASSERT(strcmp(img1.digest, img2.digest) == 0, "same inputs, same digest");
    T_ASSERT(img2.created == img1.created, "the existing image is reused");
    int counts[2] = {0, 0};
    T_ASSERT(vhpc_image_list(count_images, counts, &err) == 0, "list: %s", err.msg);
    T_ASSERT(img2.version == 1, "still version 1");
    T_ASSERT(counts[0] == 1 && counts[1] == 1, "one image (%d, %d)", counts[0], counts[1]);
}

/* 3. A changed input: a new digest, the old image kept; finding by name,
 * name:version, digest prefix and name@prefix. */
static void test_versions_and_find(void)
{
    struct vhpc_image img1, img3, f;
    vhpc_err_t err;
    setup();
    build_two_versions(&img1, &img3);
    T_ASSERT(vhpc_image_find("minimal", &f, &err) == 0 && strcmp(f.digest, img3.digest) == 0 &&
                 f.version == 2,
             "the name finds the newest: %s", err.msg);
    T_ASSERT(vhpc_image_find("minimal:1", &f, &err) == 0 && strcmp(f.digest, img1.digest) == 0,
             "name:version: %s", err.msg);
    char pre[80];
    snprintf(pre, sizeof(pre), "%.12s", img1.digest);
    T_ASSERT(vhpc_image_find(pre, &f, &err) == 0 && strcmp(f.digest, img1.digest) == 0 &&
                 f.version == 1,
             "a digest prefix finds the old one: %s", err.msg);
    snprintf(pre, sizeof(pre), "minimal@%.8s", img1.digest);
    T_ASSERT(vhpc_image_find(pre, &f, &err) == 0 && strcmp(f.digest, img1.digest) == 0,
             "name@prefix: %s", err.msg);
    T_ASSERT(strcmp(f.initrd, img1.initrd) == 0 &&
                 strcmp(f.kernel_version, img1.kernel_version) == 0,
             "found image has its paths");
    int counts[2] = {0, 0};
    T_ASSERT(vhpc_image_list(count_images, counts, &err) == 0, "list: %s", err.msg);
    T_ASSERT(counts[0] == 2 && counts[1] == 2, "two versions (%d, %d)", counts[0], counts[1]);
}

/* Damage: verify notices; building the same inputs again repairs. */
static void test_damage_and_repair(void)
{
    struct vhpc_image img1, img3, f;
    vhpc_err_t err;
    setup();
    build_two_versions(&img1, &img3);
    T_ASSERT(vhpc_image_verify(&img1, &err) == 0, "verify: %s", err.msg);
    int fd = open(img1.initrd, O_WRONLY);
    T_ASSERT(fd >= 0 && pwrite(fd, "XXXX", 4, 4096) == 4, "damage the old initramfs");
    close(fd);
    T_ASSERT(vhpc_image_verify(&img1, &err) == -EBADMSG && strstr(err.msg, "damaged"),
             "verify notices: %s", err.msg);
    T_ASSERT(access(img1.initrd, F_OK) < 0, "the damaged blob is removed, never booted");
    set_data("version 1\n");
    T_ASSERT(vhpc_image_build(&spec, agent, rsh, &f, &err) == 0, "rebuild v1: %s", err.msg);
    T_ASSERT(strcmp(f.digest, img1.digest) == 0 && f.version == 3,
             "the same inputs give the old digest back, as the newest version");
    T_ASSERT(vhpc_image_verify(&img1, &err) == 0, "repaired: %s", err.msg);
    T_ASSERT(vhpc_image_verify(&img3, &err) == 0, "the other one is sound: %s", err.msg);
}

/* 4. An extra module, in the same store under another name. */
static void test_extra_module(void)
{
    struct vhpc_image img2;
    struct archive a;
    vhpc_err_t err;
    setup();
    const char *mods[] = {"overlay", NULL};
    struct vhpc_image_spec spec2 = {.name = "with-overlay", .add = NULL, .modules = mods};
    T_ASSERT(vhpc_image_build(&spec2, agent, NULL, &img2, &err) == 0, "build: %s", err.msg);
    load_archive(img2.initrd, &a);
    struct aent *ml = get(&a, "etc/vhpc/modules");
    T_ASSERT(ml && strstr(ml->data, "/overlay.ko\n"), "the extra module is loaded: %s",
             ml ? ml->data : "");
    T_ASSERT(!get(&a, "usr/bin/vhpc-rsh") && !get(&a, "bin/vhpc-rsh"), "no rsh when none given");
    free_archive(&a);
}

/* 5. A library the dynamic loader cannot find: an error for a file asked
 * for, recorded in the manifest for a file inside a directory, and found
 * (and carried) through $LD_LIBRARY_PATH. */
static void test_missing_library(void)
{
    struct vhpc_image f;
    struct archive a;
    vhpc_err_t err;
    char path[1024], mpath[4200], cmd[2048];
    setup();
    const char *tmp = t_tmpdir();
    const char *fp = getenv("FIXTURE_PROG"), *fl = getenv("FIXTURE_LIBDIR");
    T_ASSERT(fp && fl, "FIXTURE_PROG and FIXTURE_LIBDIR are set by tests/image.cmake");
    const char *addp[] = {fp, NULL};
    struct vhpc_image_spec s3 = {.name = "fixture", .add = addp};
    T_ASSERT(vhpc_image_build(&s3, agent, NULL, &f, &err) == -ENOENT &&
                 strstr(err.msg, "libtest_image_fixture_lib.so") && strstr(err.msg, "cannot find"),
             "a missing library is an error: %s", err.msg);
    printf("error: %s\n", err.msg);
    char fdir[600];
    snprintf(fdir, sizeof(fdir), "%s/fixture-dir", tmp);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp %s %s/", fdir, fp, fdir);
    T_ASSERT(system(cmd) == 0, "%s", cmd);
    const char *addd[] = {fdir, NULL};
    s3.add = addd;
    T_ASSERT(vhpc_image_build(&s3, agent, NULL, &f, &err) == 0, "a directory: %s", err.msg);
    manifest_path(&f, mpath, sizeof(mpath));
    json_error_t je;
    json_t *m = json_load_file(mpath, 0, &je);
    T_ASSERT(m, "%s: %s", mpath, je.text);
    json_t *unres = json_object_get(m, "unresolved");
    T_ASSERT(json_array_size(unres) == 1 && strstr(json_string_value(json_array_get(unres, 0)),
                                                   "libtest_image_fixture_lib.so"),
             "the manifest records the unresolved library");
    json_decref(m);
    setenv("LD_LIBRARY_PATH", fl, 1);
    s3.add = addp;
    T_ASSERT(vhpc_image_build(&s3, agent, NULL, &f, &err) == 0, "with LD_LIBRARY_PATH: %s",
             err.msg);
    unsetenv("LD_LIBRARY_PATH");
    load_archive(f.initrd, &a);
    snprintf(path, sizeof(path), "%s/libtest_image_fixture_lib.so", fl);
    T_ASSERT(same_as_host(&a, path + 1, path), "the library is carried: %s", path);
    T_ASSERT(same_as_host(&a, fp + 1, fp), "and the program");
    free_archive(&a);
}

/* 6. Errors (with two versions of "minimal" in the store). */
static void test_errors(void)
{
    struct vhpc_image img1, img3, f;
    vhpc_err_t err;
    char pre[80], cmd[2048];
    setup();
    build_two_versions(&img1, &img3);
    T_ASSERT(vhpc_image_find("nope", &f, &err) == -ENOENT, "unknown name");
    T_ASSERT(strstr(err.msg, "unknown image 'nope'") && strstr(err.msg, "minimal") &&
                 strstr(err.msg, "vhpc image list"),
             "the clear error: %s", err.msg);
    T_ASSERT(vhpc_image_find("ffffffff", &f, &err) == -ENOENT || strncmp(img1.digest, "ff", 2) == 0,
             "unknown digest");
    T_ASSERT(vhpc_image_find("minimal@0000zz", &f, &err) == -ENOENT, "bad name@prefix");
    T_ASSERT(vhpc_image_find("", &f, &err) == -ENOENT, "empty");
    /* Ambiguous: a one-hex-digit-shorter prefix common to the two minimal images, if any. */
    size_t common = 0;
    while (img1.digest[common] == img3.digest[common])
        common++;
    if (common >= 4) {
        snprintf(pre, sizeof(pre), "%.*s", (int)common, img1.digest);
        T_ASSERT(vhpc_image_find(pre, &f, &err) == -EINVAL && strstr(err.msg, "ambiguous"),
                 "ambiguous prefix: %s", err.msg);
    }
    struct vhpc_image_spec bad = {.name = "../x"};
    T_ASSERT(vhpc_image_build(&bad, agent, NULL, &f, &err) == -EINVAL &&
                 strstr(err.msg, "invalid image name"),
             "bad name: %s", err.msg);
    bad.name = "x";
    T_ASSERT(vhpc_image_build(&bad, "/nonexistent/agent", NULL, &f, &err) == -ENOENT &&
                 strstr(err.msg, "/nonexistent/agent"),
             "missing agent: %s", err.msg);
    const char *missing[] = {"/nonexistent/thing", NULL};
    bad.add = missing;
    T_ASSERT(vhpc_image_build(&bad, agent, NULL, &f, &err) == -ENOENT &&
                 strstr(err.msg, "/nonexistent"),
             "missing added path: %s", err.msg);
    printf("error: %s\n", err.msg);
    const char *nomod[] = {"no_such_module", NULL};
    bad.add = NULL;
    bad.modules = nomod;
    T_ASSERT(vhpc_image_build(&bad, agent, NULL, &f, &err) == -ENOENT &&
                 strstr(err.msg, "no module 'no_such_module'"),
             "unknown module: %s", err.msg);
    printf("error: %s\n", err.msg);
    const char *badmod[] = {"../../etc/passwd", NULL};
    bad.modules = badmod;
    T_ASSERT(vhpc_image_build(&bad, agent, NULL, &f, &err) == -EINVAL, "bad module name: %s",
             err.msg);
    T_ASSERT(vhpc_image_find("x", &f, &err) == -ENOENT, "failed builds leave no image");
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls %s/store/tmp)\"", home);
    T_ASSERT(system(cmd) == 0, "no build directories left behind");
}

static const struct t_case cases[] = {
    {"build", test_build, 120},
    {"same_inputs", test_same_inputs, 120},
    {"versions_and_find", test_versions_and_find, 120},
    {"damage_and_repair", test_damage_and_repair, 120},
    {"extra_module", test_extra_module, 120},
    {"missing_library", test_missing_library, 120},
    {"errors", test_errors, 120},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
