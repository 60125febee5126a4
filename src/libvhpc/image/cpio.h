/*
 * cpio.h - the archive format of a minimal image's initramfs: a writer and a
 * reader for cpio "newc" (the SVR4 format without checksums, the one the
 * Linux kernel unpacks into its initial root file system), and the SHA-256
 * the writer digests its output with, so an image's digest comes for free
 * while the archive is written.
 *
 * newc, as the kernel reads it (init/initramfs.c): each entry is a 110-byte
 * ASCII header "070701" + 13 fields of 8 hex digits (ino, mode, uid, gid,
 * nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
 * namesize including the NUL, check), then the name and its NUL padded to a
 * multiple of 4 bytes (counting the header), then the data padded to 4.  A
 * symlink's data is its target.  The entry "TRAILER!!!" ends the archive.
 *
 * The writer is deterministic: it writes uid/gid 0, mtime 0 and inode
 * numbers in the order entries are written, so the same calls give the same
 * bytes.  Ordering entries (parents before children) is the caller's job.
 */
#ifndef VHPC_CPIO_H
#define VHPC_CPIO_H

#include "error.h"
#include "sha256.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct vhpc_cpio {
    int fd;
    uint64_t off;      /* bytes written so far */
    uint32_t next_ino; /* deterministic inode numbers */
    struct vhpc_sha256 sha;
    size_t used; /* bytes waiting in buf */
    unsigned char buf[1 << 16];
};

/* Start an archive written to fd (the caller opens and closes it). */
void vhpc_cpio_init(struct vhpc_cpio *c, int fd);
/* Entries.  `name` is the path inside the archive without a leading "/"
 * (one is stripped if present); `perm` is the permission bits (07777). */
int vhpc_cpio_dir(struct vhpc_cpio *c, const char *name, unsigned perm, vhpc_err_t *err);
int vhpc_cpio_symlink(struct vhpc_cpio *c, const char *name, const char *target, vhpc_err_t *err);
int vhpc_cpio_data(struct vhpc_cpio *c, const char *name, unsigned perm, const void *data,
                   size_t len, vhpc_err_t *err);
/* A regular file with the contents of host file `src`; fails if the file
 * changes size while it is copied. */
int vhpc_cpio_file(struct vhpc_cpio *c, const char *name, unsigned perm, const char *src,
                   vhpc_err_t *err);
/* A character (`chr` != 0) or block device node. */
int vhpc_cpio_node(struct vhpc_cpio *c, const char *name, unsigned perm, int chr, unsigned major,
                   unsigned minor, vhpc_err_t *err);
/* Write the trailer, pad the archive to a multiple of 512 bytes, flush.
 * digest (may be NULL) receives the SHA-256 of every byte written, size the
 * archive's length. */
int vhpc_cpio_finish(struct vhpc_cpio *c, char digest[65], uint64_t *size, vhpc_err_t *err);

/* One entry as the reader reports it; `data` points into the reader's
 * buffer and is valid only during the callback (for a symlink: the target,
 * not NUL-terminated, `size` bytes). */
struct vhpc_cpio_entry {
    const char *name;
    uint32_t ino, mode, uid, gid, nlink, mtime;
    uint32_t rdevmajor, rdevminor;
    uint64_t size;
    const unsigned char *data;
};
/* Read a newc archive held in memory, calling fn for each entry up to the
 * trailer; fn returning non-zero stops the walk and is returned.  Every
 * field is checked against the buffer: a malformed archive is -EINVAL with
 * the offset in err, never an access out of bounds. */
int vhpc_cpio_parse(const void *buf, size_t len,
                    int (*fn)(const struct vhpc_cpio_entry *e, void *arg), void *arg,
                    vhpc_err_t *err);

#endif
