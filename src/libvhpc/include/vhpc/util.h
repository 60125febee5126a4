/*
 * vhpc/util.h - what a program built on libvhpc sets and uses besides the
 * layers' own calls: where the library keeps things, where what it has to
 * say goes, strict parsing of the numbers people give, and the few file
 * helpers a front end needs.
 *
 * The public headers (this folder) are all a program outside libvhpc may
 * include: util.h, store.h, image.h, dist.h, cluster.h, job.h.  Every
 * other header of libvhpc sits beside its sources and is not on a
 * program's include path.
 */
#ifndef VHPC_PUBLIC_UTIL_H
#define VHPC_PUBLIC_UTIL_H

#include "error.h" /* src/common: vhpc_err_t */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- where things are ---- */

/* <root>: $VHPC_HOME; else for root the system root /var/lib/vhpc
 * ($VHPC_SYSTEM_HOME in tests); else the user's own
 * $XDG_DATA_HOME/vhpc or ~/.local/share/vhpc. */
const char *vhpc_store_root(void);
const char *vhpc_system_root(void);

/* ---- what the library says ---- */

/* The library writes nothing to the terminal itself: what it has to show a
 * person (progress lines, a node service's log) goes to this sink, whole
 * lines or, for a terminal (tty), a line redrawn with "\r\033[K" and no
 * newline until it is done.  With no sink the library is silent. */
typedef void (*vhpc_output_fn)(const char *text);
void vhpc_set_output(vhpc_output_fn fn, bool tty);
/* Called (from the waiting thread) when a lock (the store's, the kernel
 * cache's) is busy, with a line naming the lock and the pid holding it;
 * NULL: quiet. */
void vhpc_set_lock_notice(void (*fn)(const char *msg));

/* ---- numbers people give ---- */

/* Strict: the whole string is the number (no "1x", no leading blanks or
 * sign tricks), within the range, overflow an error; messages name the
 * option and the range ("--vms 1x: expected a whole number from 1 to
 * 64").  A decimal integer in [min, max] (a leading '-' when min < 0). */
int vhpc_parse_long(const char *opt, const char *s, long min, long max, long *out, vhpc_err_t *err);
int vhpc_parse_int(const char *opt, const char *s, int min, int max, int *out, vhpc_err_t *err);
/* A size in MiB: a whole number with an optional unit M (the default), G
 * or T (also MiB, GiB, TiB, any case), in [min_mib, max_mib]. */
int vhpc_parse_mib_opt(const char *opt, const char *s, long min_mib, long max_mib, long *out,
                       vhpc_err_t *err);
/* A byte count with an optional unit (K, M, G, T: powers of 1024). */
int vhpc_parse_bytes(const char *s, uint64_t *out);

/* ---- files ---- */

/* mkdir -p (mode for the directories it creates). */
int vhpc_mkdirs(const char *path, unsigned mode, vhpc_err_t *err);
/* rm -rf that never leaves the file system it starts on (a mount left
 * under a tree is not descended into); a missing path is not an error. */
int vhpc_rm_tree(const char *path, vhpc_err_t *err);
/* Read a file another party named into a malloc'd, NUL-terminated buffer:
 * a regular file (a device or a FIFO is refused without waiting) of at
 * most max bytes (-EFBIG once more than max were read), max > 0. */
int vhpc_read_file_max(const char *path, size_t max, char **data, size_t *len, vhpc_err_t *err);

#endif
