/*
 * cpio.c - cpio newc writer and reader, SHA-256; see cpio.h for the format.
 */
#include "cpio.h"

#include "sha256_hw.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- SHA-256 ---------------------------------------------------------- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha_block(struct vhpc_sha256 *s, const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

/* n whole blocks, on the SHA extensions when the CPU has them (sha256_hw.h). */
static void sha_blocks(struct vhpc_sha256 *s, const unsigned char *p, size_t n)
{
    if (vhpc__sha256_current() == VHPC_SHA256_HW) {
        vhpc__sha256_hw_blocks(s->h, p, n);
        return;
    }
    for (; n > 0; n--, p += 64)
        sha_block(s, p);
}

void vhpc_sha256_init(struct vhpc_sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof(iv));
    s->len = 0;
    s->used = 0;
}

void vhpc_sha256_update(struct vhpc_sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->len += len;
    if (s->used) {
        size_t n = 64 - s->used < len ? 64 - s->used : len;
        memcpy(s->block + s->used, p, n);
        s->used += n;
        p += n;
        len -= n;
        if (s->used < 64)
            return;
        sha_blocks(s, s->block, 1);
        s->used = 0;
    }
    sha_blocks(s, p, len / 64);
    p += len / 64 * 64;
    len %= 64;
    memcpy(s->block, p, len);
    s->used = len;
}

void vhpc_sha256_hex(struct vhpc_sha256 *s, char hex[65])
{
    uint64_t bits = s->len * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - s->used;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    vhpc_sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

int vhpc_sha256_file(const char *path, char hex[65], vhpc_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "opening %s", path);
    struct vhpc_sha256 s;
    vhpc_sha256_init(&s);
    unsigned char buf[1 << 16];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            return vhpc_err_set(err, e, "reading %s", path);
        }
        if (n == 0)
            break;
        vhpc_sha256_update(&s, buf, (size_t)n);
    }
    close(fd);
    vhpc_sha256_hex(&s, hex);
    return 0;
}

/* ---- writer ----------------------------------------------------------- */

static int flush(struct vhpc_cpio *c, vhpc_err_t *err)
{
    size_t done = 0;
    while (done < c->used) {
        ssize_t n = write(c->fd, c->buf + done, c->used - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vhpc_err_set(err, -errno, "writing the archive");
        done += (size_t)n;
    }
    c->used = 0;
    return 0;
}

static int put(struct vhpc_cpio *c, const void *data, size_t len, vhpc_err_t *err)
{
    const unsigned char *p = data;
    vhpc_sha256_update(&c->sha, data, len);
    c->off += len;
    while (len) {
        if (c->used == sizeof(c->buf) && flush(c, err) < 0)
            return err ? err->code : -EIO;
        size_t n = sizeof(c->buf) - c->used < len ? sizeof(c->buf) - c->used : len;
        memcpy(c->buf + c->used, p, n);
        c->used += n;
        p += n;
        len -= n;
    }
    return 0;
}

static int pad4(struct vhpc_cpio *c, vhpc_err_t *err)
{
    static const unsigned char zero[4];
    size_t n = (4 - (c->off & 3)) & 3;
    return n ? put(c, zero, n, err) : 0;
}

void vhpc_cpio_init(struct vhpc_cpio *c, int fd)
{
    c->fd = fd;
    c->off = 0;
    c->next_ino = 1;
    c->used = 0;
    vhpc_sha256_init(&c->sha);
}

static int header(struct vhpc_cpio *c, const char *name, uint32_t mode, uint32_t nlink,
                  uint64_t size, unsigned rmaj, unsigned rmin, vhpc_err_t *err)
{
    while (name[0] == '/')
        name++;
    if (!name[0])
        name = ".";
    if (size > 0xffffffffu)
        return vhpc_err_setmsg(err, -EFBIG, "%s: %llu bytes is more than cpio newc can hold", name,
                               (unsigned long long)size);
    size_t namesize = strlen(name) + 1;
    char h[111];
    int ino = strcmp(name, "TRAILER!!!") ? (int)c->next_ino++ : 0;
    snprintf(h, sizeof(h), "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode,
             0, 0, nlink, 0, (unsigned)size, 0, 0, rmaj, rmin, (unsigned)namesize, 0);
    int r;
    if ((r = put(c, h, 110, err)) < 0 || (r = put(c, name, namesize, err)) < 0)
        return r;
    return pad4(c, err);
}

int vhpc_cpio_dir(struct vhpc_cpio *c, const char *name, unsigned perm, vhpc_err_t *err)
{
    return header(c, name, S_IFDIR | (perm & 07777), 2, 0, 0, 0, err);
}

int vhpc_cpio_symlink(struct vhpc_cpio *c, const char *name, const char *target, vhpc_err_t *err)
{
    size_t n = strlen(target);
    int r;
    if ((r = header(c, name, S_IFLNK | 0777, 1, n, 0, 0, err)) < 0 ||
        (r = put(c, target, n, err)) < 0)
        return r;
    return pad4(c, err);
}

int vhpc_cpio_data(struct vhpc_cpio *c, const char *name, unsigned perm, const void *data,
                   size_t len, vhpc_err_t *err)
{
    int r;
    if ((r = header(c, name, S_IFREG | (perm & 07777), 1, len, 0, 0, err)) < 0 ||
        (r = put(c, data, len, err)) < 0)
        return r;
    return pad4(c, err);
}

int vhpc_cpio_file(struct vhpc_cpio *c, const char *name, unsigned perm, const char *src,
                   vhpc_err_t *err)
{
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "opening %s", src);
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0) {
        r = vhpc_err_set(err, -errno, "stat %s", src);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = vhpc_err_setmsg(err, -EINVAL, "%s is not a regular file", src);
        goto out;
    }
    if ((r = header(c, name, S_IFREG | (perm & 07777), 1, (uint64_t)st.st_size, 0, 0, err)) < 0)
        goto out;
    uint64_t left = (uint64_t)st.st_size;
    while (left) {
        if (c->used == sizeof(c->buf) && (r = flush(c, err)) < 0)
            goto out;
        size_t want = sizeof(c->buf) - c->used;
        if (want > left)
            want = (size_t)left;
        ssize_t n = read(fd, c->buf + c->used, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = vhpc_err_set(err, -errno, "reading %s", src);
            goto out;
        }
        if (n == 0) {
            r = vhpc_err_setmsg(err, -EIO, "%s shrank while it was being archived", src);
            goto out;
        }
        vhpc_sha256_update(&c->sha, c->buf + c->used, (size_t)n);
        c->used += (size_t)n;
        c->off += (uint64_t)n;
        left -= (uint64_t)n;
    }
    r = pad4(c, err);
out:
    close(fd);
    return r;
}

int vhpc_cpio_node(struct vhpc_cpio *c, const char *name, unsigned perm, int chr, unsigned major,
                   unsigned minor, vhpc_err_t *err)
{
    return header(c, name, (chr ? S_IFCHR : S_IFBLK) | (perm & 07777), 1, 0, major, minor, err);
}

int vhpc_cpio_finish(struct vhpc_cpio *c, char digest[65], uint64_t *size, vhpc_err_t *err)
{
    static const unsigned char zero[512];
    int r;
    if ((r = header(c, "TRAILER!!!", 0, 1, 0, 0, 0, err)) < 0)
        return r;
    size_t n = (512 - (c->off & 511)) & 511;
    if (n && (r = put(c, zero, n, err)) < 0)
        return r;
    if ((r = flush(c, err)) < 0)
        return r;
    if (digest)
        vhpc_sha256_hex(&c->sha, digest);
    if (size)
        *size = c->off;
    return 0;
}

/* ---- reader ----------------------------------------------------------- */

static int hex8(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        unsigned char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

int vhpc_cpio_parse(const void *buf, size_t len,
                    int (*fn)(const struct vhpc_cpio_entry *e, void *arg), void *arg,
                    vhpc_err_t *err)
{
    const unsigned char *p = buf;
    size_t off = 0;
    for (;;) {
        if (len - off < 110 || memcmp(p + off, "070701", 6) != 0)
            return vhpc_err_setmsg(err, -EINVAL, "bad cpio header at offset %zu", off);
        uint32_t f[13];
        for (int i = 0; i < 13; i++)
            if (hex8(p + off + 6 + 8 * i, &f[i]) < 0)
                return vhpc_err_setmsg(err, -EINVAL, "bad cpio header field at offset %zu", off);
        uint32_t namesize = f[11];
        size_t name_off = off + 110;
        if (namesize == 0 || namesize > len - name_off || p[name_off + namesize - 1] != 0 ||
            memchr(p + name_off, 0, namesize) != p + name_off + namesize - 1)
            return vhpc_err_setmsg(err, -EINVAL, "bad cpio name at offset %zu", off);
        size_t data_off = (name_off + namesize + 3) & ~(size_t)3;
        if (data_off > len || f[6] > len - data_off)
            return vhpc_err_setmsg(err, -EINVAL, "cpio entry at offset %zu runs past the end", off);
        struct vhpc_cpio_entry e = {
            .name = (const char *)p + name_off,
            .ino = f[0],
            .mode = f[1],
            .uid = f[2],
            .gid = f[3],
            .nlink = f[4],
            .mtime = f[5],
            .size = f[6],
            .rdevmajor = f[9],
            .rdevminor = f[10],
            .data = p + data_off,
        };
        if (strcmp(e.name, "TRAILER!!!") == 0)
            return 0;
        int r = fn(&e, arg);
        if (r)
            return r;
        off = (data_off + f[6] + 3) & ~(size_t)3;
        if (off > len)
            return vhpc_err_setmsg(err, -EINVAL, "cpio archive ends inside an entry");
    }
}
