/*
 * paths.h - where vhpc keeps things: the image store roots (a user's own,
 * the system one root keeps), the guest kernel cache, the run directory.
 */
#ifndef VHPC_PATHS_H
#define VHPC_PATHS_H

#include "error.h"
#include "vhpc/util.h" /* the public part */

#include <stddef.h>

/* vhpc_store_root, vhpc_system_root: vhpc/util.h.
 * 1 when the stores this process creates are private to its user (every
 * user but root): directories 0700.  Root's (the system store) has 0755
 * directories so that what root publishes can be read; its files are
 * still private unless published (store.h). */
int vhpc__private_store(void);
/* The guest kernel cache: $VHPC_KERNEL_CACHE, else <root>/kernels. */
void vhpc__kernel_cache_dir(char *buf, size_t len);

/* Directory holding every cluster's state: $VHPC_RUN_DIR; else /run/vhpc
 * for root; else the user's $XDG_RUNTIME_DIR/vhpc or /tmp/vhpc-UID (which
 * the cluster layer checks is the user's own before using it). */
const char *vhpc_run_dir(void);

/* Path of a helper program or file (ivcd, vhpc-agent, vhpc-rsh,
 * libivc-fi.so): $VHPC_<NAME> (upper case, '-' and '.' as '_', e.g.
 * $VHPC_LIBIVC_FI_SO), next to the running executable, in the build tree
 * beside it, or PATH. */
int vhpc_tool_path(const char *tool, char *buf, size_t len);
/* The guest's own programs: vhpc-agent (an error if missing, saying how to
 * get it) and vhpc-rsh (rsh[0] = 0 if missing). */
int vhpc_guest_tools(char *agent, size_t alen, char *rsh, size_t rlen, vhpc_err_t *err);
/* Is the program `prog` on PATH (or in /usr/sbin, /sbin)?  1 or 0. */
int vhpc__have_program(const char *prog);

#endif
