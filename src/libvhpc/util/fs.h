/*
 * fs.h - files and directory trees: whole files written atomically (and
 * durably), read whole, copied; mkdir -p; a sorted walk; rm -rf.
 */
#ifndef VHPC_FS_H
#define VHPC_FS_H

#include "error.h"
#include "vhpc/util.h" /* the public part */

#include <stddef.h>
#include <sys/stat.h>

/* snprintf for paths: -ENAMETOOLONG (err set) if it does not fit. */
int vhpc__pathf(vhpc_err_t *err, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Call fn for root and, if it is a directory, everything under it
 * (pre-order, names sorted, symlinks not followed); fn returning < 0 (with
 * err set) stops the walk and is returned. */
int vhpc__walk(const char *root, int (*fn)(const char *path, const struct stat *st, void *arg),
               void *arg, vhpc_err_t *err);
/* Write a whole file (created with `mode`, replaced atomically through a
 * temporary file in the same directory). */
int vhpc__write_file(const char *path, const void *data, size_t len, unsigned mode,
                     vhpc_err_t *err);
/* The same, durable: the data and the rename are on disk (fsync of the
 * file, then of its directory) before it returns; keep (may be NULL) names
 * where the file being replaced is kept (a hard link). */
int vhpc__write_file_sync(const char *path, const void *data, size_t len, unsigned mode,
                          const char *keep, vhpc_err_t *err);
/* Read a whole file into a malloc'd, NUL-terminated buffer. */
int vhpc__read_file(const char *path, char **data, size_t *len, vhpc_err_t *err);
/* Copy a file's bytes to dst, which is replaced (never followed: removed
 * first) and gets `mode`. */
int vhpc__copy_file(const char *src, const char *dst, unsigned mode, vhpc_err_t *err);

#endif
