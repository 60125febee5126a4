/*
 * test_image_store.c - the content-addressed store and requirement
 * matching, on synthetic images (manifests with small blobs; nothing is
 * booted): digests, versions, refs, rm/gc, received blobs that do not hash
 * to their name, damaged blobs, the LRU budget, and choosing an image by
 * requirements (satisfied, unsatisfiable, ties, Debian version rules).
 */
#include "match.h"
#include "vhpc/store.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct vhpc_store *st;
static vhpc_err_t err;

/* A file of `size` bytes derived from `seed`. */
static void make_file(const char *path, size_t size, unsigned seed)
{
    FILE *f = fopen(path, "w");
    T_ASSERT(f, "%s", path);
    for (size_t i = 0; i < size; i++)
        fputc((int)((seed * 2654435761u + i * 40503u) >> 13) & 0xff, f);
    fclose(f);
}

/* An image with one rootfs blob of `size` bytes and the given metadata;
 * returns its digest. */
static void make_image(const char *name, size_t size, unsigned seed, const char *os,
                       const char *kernel, json_t *pkgs, json_t *libs, char digest[65])
{
    char path[512], bd[65];
    uint64_t bs;
    snprintf(path, sizeof(path), "%s/blob-%u", t_tmpdir(), seed);
    make_file(path, size, seed);
    T_ASSERT(vhpc_store_add_blob(st, path, 0, bd, &bs, &err) == 0, "add blob: %s", err.msg);
    T_ASSERT(bs == size, "blob size");
    json_t *m = json_pack("{s:s, s:s, s:s, s:{s:{s:s, s:I}}, s:I, s:o, s:o}", "kind", "full", "os",
                          os, "kernel", kernel, "blobs", "rootfs", "digest", bd, "size",
                          (json_int_t)size, "size", (json_int_t)size, "packages",
                          pkgs ? pkgs : json_object(), "libs", libs ? libs : json_array());
    T_ASSERT(vhpc_store_put_manifest(st, m, digest, &err) == 0, "manifest: %s", err.msg);
    json_decref(m);
    struct vhpc_ref ref;
    T_ASSERT(vhpc_store_tag(st, name, 0, digest, &ref, &err) == 0, "tag: %s", err.msg);
}

static json_t *pkg(const char *name, const char *ver, const char *src, const char *srcver)
{
    json_t *o = json_object();
    json_object_set_new(
        o, name,
        json_pack("{s:s, s:s, s:s}", "version", ver, "source", src, "source_version", srcver));
    return o;
}

static int count_refs(const struct vhpc_ref *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
    return 0;
}

static int nrefs(void)
{
    int n = 0;
    T_ASSERT(vhpc_store_refs(st, count_refs, &n, &err) == 0, "refs: %s", err.msg);
    return n;
}

static void test_store(void)
{
    char d1[65], d2[65], d3[65], path[600];
    struct vhpc_ref ref;

    /* Same content, same digest; a new digest is a new version. */
    make_image("app", 5000, 1, "debian-12", "6.1.0-56-cloud-amd64", NULL, NULL, d1);
    make_image("app", 5000, 1, "debian-12", "6.1.0-56-cloud-amd64", NULL, NULL, d2);
    T_ASSERT(!strcmp(d1, d2), "same inputs, same digest");
    T_ASSERT(vhpc_store_resolve(st, "app", &ref, &err) == 0 && ref.version == 1,
             "still version 1: %s", err.msg);
    make_image("app", 5000, 2, "debian-12", "6.1.0-56-cloud-amd64", NULL, NULL, d3);
    T_ASSERT(strcmp(d1, d3) != 0, "changed input, new digest");
    T_ASSERT(vhpc_store_resolve(st, "app", &ref, &err) == 0 && ref.version == 2 &&
                 !strcmp(ref.digest, d3),
             "newest is version 2");
    T_ASSERT(vhpc_store_resolve(st, "app:1", &ref, &err) == 0 && !strcmp(ref.digest, d1),
             "app:1 is kept");
    char pre[16];
    snprintf(pre, sizeof(pre), "%.10s", d1);
    T_ASSERT(vhpc_store_resolve(st, pre, &ref, &err) == 0 && !strcmp(ref.digest, d1),
             "digest prefix");
    snprintf(pre, sizeof(pre), "app@%.6s", d3);
    T_ASSERT(vhpc_store_resolve(st, pre, &ref, &err) == 0 && ref.version == 2, "name@prefix");

    /* Errors say what exists. */
    T_ASSERT(vhpc_store_resolve(st, "app:7", &ref, &err) == -ENOENT && strstr(err.msg, "app:1") &&
                 strstr(err.msg, "app:2"),
             "unknown version: %s", err.msg);
    T_ASSERT(vhpc_store_resolve(st, "nope", &ref, &err) == -ENOENT && strstr(err.msg, "app"),
             "unknown name: %s", err.msg);
    T_ASSERT(vhpc_store_resolve(st, "app:x", &ref, &err) == -EINVAL, "bad version: %s", err.msg);
    T_ASSERT(vhpc_store_tag(st, "../x", 0, d1, &ref, &err) == -EINVAL, "bad name: %s", err.msg);

    /* Tag: another name, the same digest. */
    T_ASSERT(vhpc_store_tag(st, "prod", 0, d1, &ref, &err) == 0 && ref.version == 1 &&
                 !strcmp(ref.digest, d1),
             "tag: %s", err.msg);
    T_ASSERT(nrefs() == 3, "three refs");

    /* rm: content goes only when no name uses it. */
    int n = 0;
    struct vhpc_gc_stats gs = {0};
    T_ASSERT(vhpc_store_remove(st, "app:1", &n, &gs, &err) == 0 && n == 1 && gs.images == 0 &&
                 gs.blobs == 0,
             "rm app:1: prod still uses it (%u images): %s", gs.images, err.msg);
    T_ASSERT(vhpc_store_remove(st, "prod", &n, &gs, &err) == 0 && n == 1 && gs.images == 1 &&
                 gs.blobs == 1 && gs.bytes == 5000,
             "rm prod frees it (%u images, %u blobs, %llu bytes)", gs.images, gs.blobs,
             (unsigned long long)gs.bytes);
    snprintf(pre, sizeof(pre), "%.12s", d1);
    T_ASSERT(vhpc_store_resolve(st, pre, &ref, &err) == -ENOENT, "gone: %s", pre);

    /* gc: leftovers without a name, once old enough (younger ones may be a
     * transfer that has not tagged its image yet). */
    char lp[600], ld[65];
    uint64_t ls;
    snprintf(lp, sizeof(lp), "%s/leftover", t_tmpdir());
    make_file(lp, 777, 99);
    T_ASSERT(vhpc_store_add_blob(st, lp, 0, ld, &ls, &err) == 0, "a blob nothing names");
    memset(&gs, 0, sizeof(gs));
    T_ASSERT(vhpc_store_gc(st, &gs, &err) == 0 && gs.blobs == 0 && vhpc_store_has_blob(st, ld),
             "a fresh one stays");
    vhpc_store_blob_path(st, ld, lp, sizeof(lp));
    struct timespec old[2] = {{.tv_sec = time(NULL) - 2 * VHPC_GC_GRACE_S},
                              {.tv_sec = time(NULL) - 2 * VHPC_GC_GRACE_S}};
    T_ASSERT(utimensat(AT_FDCWD, lp, old, 0) == 0, "age it");
    T_ASSERT(vhpc_store_gc(st, &gs, &err) == 0 && gs.blobs == 1 && gs.bytes == 777 &&
                 !vhpc_store_has_blob(st, ld),
             "an old one goes (%u blobs)", gs.blobs);
    T_ASSERT(vhpc_store_resolve(st, "app", &ref, &err) == 0, "named images stay");

    /* A received blob must hash to its name. */
    struct vhpc_blob_writer w;
    char fake[65];
    memset(fake, 'a', 64);
    fake[64] = 0;
    T_ASSERT(vhpc_store_blob_begin(st, fake, 4, &w, &err) == 0, "begin: %s", err.msg);
    T_ASSERT(pwrite(w.fd, "abcd", 4, 0) == 4, "write");
    T_ASSERT(vhpc_store_blob_commit(st, &w, &err) == -EBADMSG && !vhpc_store_has_blob(st, fake),
             "wrong bytes are refused: %s", err.msg);
    char msg[] = "hello store";
    /* sha256("hello store") */
    snprintf(path, sizeof(path), "%s/hello", t_tmpdir());
    FILE *f = fopen(path, "w");
    fputs(msg, f);
    fclose(f);
    char hd[65];
    uint64_t hs;
    T_ASSERT(vhpc_store_add_blob(st, path, 1, hd, &hs, &err) == 0 && access(path, F_OK) < 0,
             "move a blob in: %s", err.msg);
    T_ASSERT(vhpc_store_blob_begin(st, hd, hs, &w, &err) == 0, "begin");
    T_ASSERT(pwrite(w.fd, msg + 6, 5, 6) == 5 && pwrite(w.fd, msg, 6, 0) == 6, "out of order");
    T_ASSERT(vhpc_store_blob_commit(st, &w, &err) == 0, "right bytes in any order: %s", err.msg);

    /* A flipped byte is caught and the blob removed. */
    char bp[600];
    json_t *m;
    T_ASSERT(vhpc_store_get_manifest(st, d3, &m, &err) == 0, "manifest");
    const char *rd = json_string_value(
        json_object_get(json_object_get(json_object_get(m, "blobs"), "rootfs"), "digest"));
    vhpc_store_blob_path(st, rd, bp, sizeof(bp));
    T_ASSERT(vhpc_store_verify_blob(st, rd, &err) == 0, "sound: %s", err.msg);
    int fd = open(bp, O_RDWR);
    unsigned char c;
    T_ASSERT(fd >= 0 && pread(fd, &c, 1, 100) == 1, "read %s", bp);
    c ^= 0x01;
    T_ASSERT(pwrite(fd, &c, 1, 100) == 1, "flip a bit");
    close(fd);
    T_ASSERT(vhpc_store_verify_blob(st, rd, &err) == -EBADMSG && strstr(err.msg, "damaged") &&
                 access(bp, F_OK) < 0,
             "caught and removed: %s", err.msg);
    json_decref(m);
    T_ASSERT(vhpc_store_remove(st, "app", &n, NULL, &err) == 0, "rm app");
}

static void test_budget(void)
{
    char a[65], b[65], c[65], d[65], root[600];
    struct vhpc_ref ref;
    struct vhpc_gc_stats gs = {0};
    struct vhpc_store *main_store = st;
    snprintf(root, sizeof(root), "%s/cache", t_tmpdir());
    T_ASSERT(vhpc_store_open(root, &st, &err) == 0, "a store of its own (a node cache)");
    T_ASSERT(vhpc_store_set_budget(st, 25000, &err) == 0, "budget");
    make_image("a", 10000, 11, "debian-12", "6.1", NULL, NULL, a);
    usleep(20000);
    make_image("b", 10000, 12, "debian-12", "6.1", NULL, NULL, b);
    usleep(20000);
    vhpc_store_touch(st, a); /* a is used after b: b is the least recently used */
    usleep(20000);
    T_ASSERT(vhpc_store_make_room(st, 10000, NULL, &gs, &err) == 0 && gs.images == 1,
             "one image evicted: %s", err.msg);
    T_ASSERT(vhpc_store_resolve(st, "b", &ref, &err) == -ENOENT, "the LRU one (b) went");
    T_ASSERT(vhpc_store_resolve(st, "a", &ref, &err) == 0, "a stays");
    make_image("c", 10000, 13, "debian-12", "6.1", NULL, NULL, c);
    T_ASSERT(vhpc_store_usage(st) <= 25000, "within the budget");
    T_ASSERT(vhpc_store_make_room(st, 30000, NULL, NULL, &err) == -ENOSPC &&
                 strstr(err.msg, "budget"),
             "too big: %s", err.msg);
    /* keep: never evict the image being received. */
    T_ASSERT(vhpc_store_make_room(st, 15000, c, NULL, &err) == 0, "room: %s", err.msg);
    T_ASSERT(vhpc_store_resolve(st, "c", &ref, &err) == 0 &&
                 vhpc_store_resolve(st, "a", &ref, &err) == -ENOENT,
             "a evicted, c kept");
    make_image("d", 10000, 14, "debian-12", "6.1", NULL, NULL, d);
    T_ASSERT(vhpc_store_set_budget(st, 0, &err) == 0 && vhpc_store_budget(st) == 0, "no budget");
    int n;
    vhpc_store_remove(st, "c", &n, NULL, &err);
    vhpc_store_remove(st, "d", &n, NULL, &err);
    T_ASSERT(vhpc_store_usage(st) == 0, "empty again");
    vhpc_store_close(st);
    st = main_store;
}

static int parse_ok(const char *s, struct vhpc_req *r)
{
    int rc = vhpc_req_parse(s, r, &err);
    T_ASSERT(rc == 0, "parse %s: %s", s, err.msg);
    return rc;
}

static int meets(const char *req, json_t *m)
{
    struct vhpc_req r;
    char why[300];
    parse_ok(req, &r);
    int ok = vhpc_req_check(&r, m, why, sizeof(why));
    printf("  %-26s -> %s: %s\n", req, ok ? "met" : "not met", why);
    return ok;
}

static void test_requirements(void)
{
    struct vhpc_req r;
    const char *bad[] = {
        "",         "=4",           "openmpi>=", "openmpi=>4", "os", "kernel", "lib:libx.so>=1",
        "open mpi", "openmpi>=x.y", "lib:",      NULL};
    for (int i = 0; bad[i]; i++) {
        T_ASSERT(vhpc_req_parse(bad[i], &r, &err) == -EINVAL && strstr(err.msg, bad[i]),
                 "'%s' is refused: %s", bad[i], err.msg);
        printf("refused %-14s %s\n", bad[i], err.msg);
    }

    json_t *pkgs = pkg("openmpi-bin", "4.1.4-3", "openmpi", "4.1.4-3");
    json_t *more[] = {pkg("libfoo1", "1.10-1", "foo", "1.10-1"),
                      pkg("tool", "2:1.0~rc1-1", "tool", "2:1.0~rc1-1")};
    for (int i = 0; i < 2; i++) {
        json_object_update(pkgs, more[i]);
        json_decref(more[i]);
    }
    json_t *m =
        json_pack("{s:s, s:s, s:o, s:[s, s]}", "os", "debian-12", "kernel", "6.1.0-56-cloud-amd64",
                  "packages", pkgs, "libs", "libc.so.6", "libfftw3.so.3");
    T_ASSERT(meets("os=debian-12", m) && !meets("os=debian-11", m) && meets("os>=debian-11", m) &&
                 !meets("os>=ubuntu-11", m) && meets("os!=ubuntu-22.04", m),
             "os");
    T_ASSERT(meets("kernel>=6.1", m) && meets("kernel>6.0.99", m) && !meets("kernel>=6.2", m) &&
                 meets("kernel=6.1.0-56-cloud-amd64", m) && meets("kernel<6.10", m),
             "kernel: 6.10 > 6.1");
    T_ASSERT(meets("openmpi>=4.1", m) && meets("openmpi", m) && !meets("openmpi>=5", m) &&
                 meets("openmpi-bin=4.1.4-3", m) && meets("openmpi<<4.1.10", m),
             "package by source and binary name");
    T_ASSERT(meets("foo>1.9", m) && !meets("foo<1.9", m), "1.10 > 1.9");
    T_ASSERT(meets("tool>=2:0.5", m) && !meets("tool>=3:0", m) && meets("tool>9.9", m),
             "epochs: 2:1.0 is above any version of a lower epoch");
    T_ASSERT(meets("tool<2:1.0", m) && meets("tool>2:1.0~beta", m), "~ sorts before release");
    T_ASSERT(meets("lib:libfftw3.so.3", m) && meets("lib:libfftw3", m) &&
                 !meets("lib:libfftw3.so.2", m) && !meets("lib:libfftw", m),
             "libraries by soname");
    T_ASSERT(!meets("mpich", m), "absent package");
    json_decref(m);
}

static void test_matching(void)
{
    char big[65], small[65], old[65], newer[65], other[65];
    struct vhpc_req reqs[4];
    struct vhpc_candidate *c;
    size_t n;
    int best;
    /* Two fit; the smaller wins. */
    make_image("big", 3000, 21, "debian-12", "6.1.0-56-cloud-amd64",
               pkg("openmpi-bin", "4.1.4-3", "openmpi", "4.1.4-3"), json_pack("[s]", "libm.so.6"),
               big);
    make_image("small", 2000, 22, "debian-12", "6.1.0-56-cloud-amd64",
               pkg("openmpi-bin", "4.1.4-3", "openmpi", "4.1.4-3"), json_pack("[s]", "libm.so.6"),
               small);
    make_image("nompi", 1000, 23, "debian-12", "6.1.0-56-cloud-amd64", NULL, NULL, other);
    parse_ok("os=debian-12", &reqs[0]);
    parse_ok("openmpi>=4.1", &reqs[1]);
    parse_ok("lib:libm.so.6", &reqs[2]);
    T_ASSERT(vhpc_match(st, reqs, 3, &c, &n, &best, &err) == 0 && n == 3, "match: %s", err.msg);
    T_ASSERT(best == 0 && !strcmp(c[0].ref.digest, small) && !strcmp(c[1].ref.digest, big) &&
                 c[2].unmet == 2,
             "smallest of those that fit first, then the misfit (%s)", c[0].ref.name);
    T_ASSERT(strstr(c[2].report, "openmpi") && strstr(c[2].report, "libm.so.6"),
             "the misfit's report names what it misses: %s", c[2].report);
    free(c);
    /* Same size: the newest wins. */
    make_image("older", 2000, 24, "debian-12", "6.1.0-56-cloud-amd64",
               pkg("hello", "2.10-3", "hello", "2.10-3"), NULL, old);
    sleep(1);
    make_image("newer", 2000, 25, "debian-12", "6.1.0-56-cloud-amd64",
               pkg("hello", "2.10-3", "hello", "2.10-3"), NULL, newer);
    parse_ok("hello>=2.10", &reqs[0]);
    T_ASSERT(vhpc_match(st, reqs, 1, &c, &n, &best, &err) == 0 && best == 0 &&
                 !strcmp(c[0].ref.digest, newer) && !strcmp(c[1].ref.digest, old),
             "equal size: the newest first (%s)", c[0].ref.name);
    free(c);
    /* Unsatisfiable. */
    parse_ok("openmpi>=5", &reqs[0]);
    parse_ok("lib:libfftw3.so.3", &reqs[1]);
    T_ASSERT(vhpc_match(st, reqs, 2, &c, &n, &best, &err) == 0 && best == -1 && n == 5,
             "nothing fits");
    for (size_t i = 0; i < n; i++)
        T_ASSERT(c[i].unmet >= 1 && strstr(c[i].report, "libfftw3.so.3"),
                 "each candidate says what it misses: %s", c[i].report);
    size_t k = 0;
    while (k < n && strcmp(c[k].ref.digest, small) != 0)
        k++;
    T_ASSERT(k < n && strstr(c[k].report, "4.1.4-3") && strstr(c[k].report, ">=5"),
             "with the version it has: %s", k < n ? c[k].report : "");
    free(c);
}

/* Each case has a store of its own in a fresh $VHPC_HOME. */
#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        setenv("VHPC_HOME", t_tmpdir(), 1);                                                        \
        T_ASSERT(vhpc_store_open(NULL, &st, &err) == 0, "open: %s", err.msg);                      \
        test_##name();                                                                             \
        vhpc_store_close(st);                                                                      \
    }
CASE(store)
CASE(budget)
CASE(requirements)
CASE(matching)

static const struct t_case cases[] = {
    {"store", case_store, 60},
    {"budget", case_budget, 30},
    {"requirements", case_requirements, 30},
    {"matching", case_matching, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
