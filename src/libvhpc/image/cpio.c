/*
 * cpio.c - cpio newc writer and reader; see cpio.h for the format.
 */
#include "cpio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
