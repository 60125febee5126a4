/*
 * lock.h - flock(2) locks on lock files, bounded waits, and who holds them.
 */
#ifndef VHPC_LOCK_H
#define VHPC_LOCK_H

#include "error.h"
#include "vhpc/util.h" /* the public part */

/* Locks on a lock file: created 0600 (an older 0644 one of ours is made
 * 0600), O_NOFOLLOW, a regular file.  vhpc__lock_wait waits at most
 * $VHPC_LOCK_TIMEOUT seconds (default VHPC_LOCK_TIMEOUT_S), says once
 * through the notice hook (vhpc_set_lock_notice) which pid holds it, and
 * fails with -ETIMEDOUT naming the file.  `what` names the lock in
 * messages ("store", "guest kernel cache"). */
#define VHPC_LOCK_TIMEOUT_S 600
int vhpc__lock_timeout_s(void);
int vhpc__lock_open(const char *path, const char *what, int *fd, vhpc_err_t *err);
int vhpc__lock_wait(int fd, const char *path, const char *what, vhpc_err_t *err);

#endif
