/*
 * test_image_cpio - the initramfs writer: SHA-256 against the FIPS 180-2
 * vectors; an archive with directories, files (from memory and from the
 * host, sizes that need padding), symlinks and a device node reads back the
 * same through our parser and through GNU cpio (listing and extracting) when
 * it is installed; the same calls give the same bytes; malformed archives
 * (truncated, bad magic, lying lengths, random damage) are rejected without
 * reading out of bounds.
 */
#include "cpio.h"
#include "kernel.h"
#include "testutil.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void check_sha(const void *data, size_t len, const char *want)
{
    struct vhpc_sha256 s;
    char hex[65];
    vhpc_sha256_init(&s);
    vhpc_sha256_update(&s, data, len);
    vhpc_sha256_hex(&s, hex);
    T_ASSERT(strcmp(hex, want) == 0, "sha256 of %zu bytes: %s, want %s", len, hex, want);
    /* The same fed in odd pieces. */
    vhpc_sha256_init(&s);
    const unsigned char *p = data;
    for (size_t off = 0, step = 1; off < len; off += step, step = step * 7 % 131 + 1)
        vhpc_sha256_update(&s, p + off, off + step > len ? len - off : step);
    vhpc_sha256_hex(&s, hex);
    T_ASSERT(strcmp(hex, want) == 0, "sha256 of %zu bytes in pieces: %s", len, hex);
}

static void test_sha256(void)
{
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    size_t n = 1000000;
    char *a = malloc(n);
    memset(a, 'a', n);
    check_sha(a, n, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    char path[512], hex[65];
    snprintf(path, sizeof(path), "%s/million-a", t_tmpdir());
    vhpc_err_t err;
    T_ASSERT(vhpc__write_file(path, a, n, 0644, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_sha256_file(path, hex, &err) == 0, "%s", err.msg);
    T_ASSERT(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
             "sha256 of a file");
    T_ASSERT(vhpc_sha256_file("/nonexistent/x", hex, &err) == -ENOENT, "missing file");
    T_ASSERT(strstr(err.msg, "/nonexistent/x"), "the error names the file: %s", err.msg);
    free(a);
}

static char hostfile[512];

/* One archive; `with_node` adds a device node (extracting one needs mknod). */
static void write_archive(const char *path, int with_node, char digest[65], uint64_t *size)
{
    vhpc_err_t err;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    T_ASSERT(fd >= 0, "create %s", path);
    struct vhpc_cpio *c = malloc(sizeof(*c));
    vhpc_cpio_init(c, fd);
    T_ASSERT(vhpc_cpio_dir(c, "d", 0755, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_data(c, "/d/three", 0640, "abc", 3, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_data(c, "d/empty", 0600, "", 0, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_symlink(c, "d/link", "three", &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_dir(c, "d/sub", 0700, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_file(c, "d/sub/host", 0755, hostfile, &err) == 0, "%s", err.msg);
    T_ASSERT(vhpc_cpio_symlink(c, "d/sub/abs", "/d/three", &err) == 0, "%s", err.msg);
    char longname[203]; /* one component under NAME_MAX, so cpio -i can create it */
    memset(longname, 'n', sizeof(longname));
    memcpy(longname, "d/", 2);
    longname[sizeof(longname) - 1] = 0;
    T_ASSERT(vhpc_cpio_data(c, longname, 0644, "x", 1, &err) == 0, "%s", err.msg);
    if (with_node) {
        T_ASSERT(vhpc_cpio_dir(c, "dev", 0755, &err) == 0, "%s", err.msg);
        T_ASSERT(vhpc_cpio_node(c, "dev/console", 0600, 1, 5, 1, &err) == 0, "%s", err.msg);
    }
    T_ASSERT(vhpc_cpio_finish(c, digest, size, &err) == 0, "%s", err.msg);
    free(c);
    close(fd);
}

struct seen {
    int n;
    int three, empty, link, sub, host, abs, console, dir, lng;
    size_t hostlen;
};

static int on_entry(const struct vhpc_cpio_entry *e, void *arg)
{
    struct seen *s = arg;
    s->n++;
    T_ASSERT(e->uid == 0 && e->gid == 0 && e->mtime == 0, "%s: owner root, mtime 0", e->name);
    T_ASSERT(e->ino == (uint32_t)s->n, "%s: inode numbers in order (%u)", e->name, e->ino);
    if (strcmp(e->name, "d") == 0) {
        s->dir = e->mode == (S_IFDIR | 0755) && e->nlink == 2;
    } else if (strcmp(e->name, "d/three") == 0) {
        s->three = e->mode == (S_IFREG | 0640) && e->size == 3 && memcmp(e->data, "abc", 3) == 0;
    } else if (strcmp(e->name, "d/empty") == 0) {
        s->empty = e->mode == (S_IFREG | 0600) && e->size == 0;
    } else if (strcmp(e->name, "d/link") == 0) {
        s->link = e->mode == (S_IFLNK | 0777) && e->size == 5 && memcmp(e->data, "three", 5) == 0;
    } else if (strcmp(e->name, "d/sub") == 0) {
        s->sub = e->mode == (S_IFDIR | 0700);
    } else if (strcmp(e->name, "d/sub/host") == 0) {
        s->host = e->mode == (S_IFREG | 0755) && e->size == 70001 &&
                  t_check(e->data, 70001, 9, 0) == 70001;
    } else if (strcmp(e->name, "d/sub/abs") == 0) {
        s->abs = e->size == 8 && memcmp(e->data, "/d/three", 8) == 0;
    } else if (strcmp(e->name, "dev/console") == 0) {
        s->console = e->mode == (S_IFCHR | 0600) && e->rdevmajor == 5 && e->rdevminor == 1;
    } else if (strncmp(e->name, "d/nnn", 5) == 0) {
        s->lng = strlen(e->name) == 202 && e->size == 1;
    }
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    char *d;
    vhpc_err_t err;
    T_ASSERT(vhpc__read_file(path, &d, len, &err) == 0, "%s", err.msg);
    return d;
}

static int count_cb(const struct vhpc_cpio_entry *e, void *arg)
{
    (void)e;
    ++*(int *)arg;
    return 0;
}

/* The host file the archives carry (70001 bytes). */
static void make_hostfile(void)
{
    snprintf(hostfile, sizeof(hostfile), "%s/hostfile", t_tmpdir());
    uint8_t *buf = malloc(70001);
    t_fill(buf, 70001, 9, 0);
    vhpc_err_t err;
    T_ASSERT(vhpc__write_file(hostfile, buf, 70001, 0644, &err) == 0, "%s", err.msg);
    free(buf);
}

static void test_archive(void)
{
    const char *tmp = t_tmpdir();
    vhpc_err_t err;
    make_hostfile();

    char a1[512], a2[512], d1[65], d2[65], hex[65];
    uint64_t s1, s2;
    snprintf(a1, sizeof(a1), "%s/one.cpio", tmp);
    snprintf(a2, sizeof(a2), "%s/two.cpio", tmp);
    write_archive(a1, 1, d1, &s1);
    write_archive(a2, 1, d2, &s2);
    size_t l1, l2;
    char *b1 = slurp(a1, &l1), *b2 = slurp(a2, &l2);
    T_ASSERT(l1 == s1 && l1 % 512 == 0, "archive size %zu is the reported %llu, a multiple of 512",
             l1, (unsigned long long)s1);
    T_ASSERT(l1 == l2 && memcmp(b1, b2, l1) == 0 && strcmp(d1, d2) == 0,
             "the same calls give the same bytes");
    T_ASSERT(vhpc_sha256_file(a1, hex, &err) == 0 && strcmp(hex, d1) == 0,
             "the digest is the file's sha256");

    struct seen s = {0};
    T_ASSERT(vhpc_cpio_parse(b1, l1, on_entry, &s, &err) == 0, "parse: %s", err.msg);
    T_ASSERT(s.n == 10, "10 entries, got %d", s.n);
    T_ASSERT(s.dir && s.three && s.empty && s.link && s.sub && s.host && s.abs && s.console &&
                 s.lng,
             "every entry reads back (dir %d three %d empty %d link %d sub %d host %d abs %d "
             "console %d long %d)",
             s.dir, s.three, s.empty, s.link, s.sub, s.host, s.abs, s.console, s.lng);

    /* Malformed input: never a crash (ASan watches), always -EINVAL. */
    int n = 0;
    const char *trailer = memmem(b1, l1, "TRAILER!!!", 11);
    T_ASSERT(trailer, "the archive has a trailer");
    size_t end = (size_t)(trailer - b1) + 11; /* the archive is complete from here on */
    for (size_t cut = 0; cut < end; cut += cut < 400 || cut > end - 400 ? 1 : 997) {
        char *t = malloc(cut ? cut : 1);
        memcpy(t, b1, cut);
        int r = vhpc_cpio_parse(t, cut, count_cb, &n, &err);
        T_ASSERT(r == -EINVAL, "truncated to %zu bytes: %d", cut, r);
        free(t);
    }
    char *bad = malloc(l1);
    memcpy(bad, b1, l1);
    bad[3] = '8';
    T_ASSERT(vhpc_cpio_parse(bad, l1, count_cb, &n, &err) == -EINVAL, "bad magic");
    memcpy(bad, b1, l1);
    memcpy(bad + 6 + 8 * 11, "7FFFFFFF", 8); /* namesize */
    T_ASSERT(vhpc_cpio_parse(bad, l1, count_cb, &n, &err) == -EINVAL, "namesize too big");
    memcpy(bad, b1, l1);
    memcpy(bad + 6 + 8 * 6, "FFFFFFF0", 8); /* filesize */
    T_ASSERT(vhpc_cpio_parse(bad, l1, count_cb, &n, &err) == -EINVAL, "filesize too big");
    memcpy(bad, b1, l1);
    memcpy(bad + 6, "0000000G", 8);
    T_ASSERT(vhpc_cpio_parse(bad, l1, count_cb, &n, &err) == -EINVAL, "not hex");
    srand(7);
    for (int i = 0; i < 3000; i++) {
        memcpy(bad, b1, l1);
        for (int k = 0; k < 4; k++)
            bad[(size_t)rand() % 700] = (char)rand();
        vhpc_cpio_parse(bad, l1, count_cb, &n, &err); /* any result but a crash */
    }
    free(bad);
    free(b1);
    free(b2);
}

/* GNU cpio agrees (scripts/deps.sh installs it). */
static void test_gnu_cpio_agrees(void)
{
    const char *tmp = t_tmpdir();
    char a1[512], d1[65], hex[65];
    uint64_t s1;
    vhpc_err_t err;
    if (access("/usr/bin/cpio", X_OK) != 0 && access("/bin/cpio", X_OK) != 0)
        T_SKIP("GNU cpio is not installed to cross-check with (apt-get install cpio)");
    make_hostfile();
    snprintf(a1, sizeof(a1), "%s/one.cpio", tmp);
    write_archive(a1, 1, d1, &s1);
    char cmd[2048], out[4096];
    snprintf(cmd, sizeof(cmd), "cpio -it --quiet < %s", a1);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, sizeof(out) - 1, p);
    out[got] = 0;
    T_ASSERT(pclose(p) == 0, "cpio -t accepts the archive");
    T_ASSERT(strstr(out, "d/three\n") && strstr(out, "d/sub/host\n") && strstr(out, "d/link\n") &&
                 strstr(out, "dev/console\n"),
             "cpio -t lists the entries:\n%s", out);
    char a3[512], d3[65], x[512];
    uint64_t s3;
    snprintf(a3, sizeof(a3), "%s/nodev.cpio", tmp);
    write_archive(a3, 0, d3, &s3);
    snprintf(x, sizeof(x), "%s/x", tmp);
    mkdir(x, 0755);
    snprintf(cmd, sizeof(cmd), "cd %s && cpio -idm --quiet --no-absolute-filenames < %s", x, a3);
    T_ASSERT(system(cmd) == 0, "cpio -i extracts the archive");
    char path[1024], target[64];
    snprintf(path, sizeof(path), "%s/d/sub/host", x);
    T_ASSERT(vhpc_sha256_file(path, hex, &err) == 0 && vhpc_sha256_file(hostfile, d3, &err) == 0 &&
                 strcmp(hex, d3) == 0,
             "the extracted host file has the original contents");
    struct stat st;
    T_ASSERT(stat(path, &st) == 0 && (st.st_mode & 07777) == 0755 && st.st_mtime == 0,
             "mode 0755 and mtime 0 survive");
    snprintf(path, sizeof(path), "%s/d/link", x);
    ssize_t tl = readlink(path, target, sizeof(target) - 1);
    T_ASSERT(tl == 5 && memcmp(target, "three", 5) == 0, "the symlink survives");
    snprintf(path, sizeof(path), "%s/d/link", x);
    T_ASSERT(vhpc_sha256_file(path, hex, &err) == 0 &&
                 strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") ==
                     0,
             "and points at the right file");
}

static const struct t_case cases[] = {
    {"sha256", test_sha256, 30},
    {"archive", test_archive, 30},
    {"gnu_cpio_agrees", test_gnu_cpio_agrees, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
