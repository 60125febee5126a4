/*
 * daemon.h - going into the background without losing the start-up's
 * verdict, for ivcd --daemon and `vhpc node serve --daemon`: the process
 * forks; the parent waits on a pipe until the child (the daemon) says it
 * is ready ("R") or why it failed ("E" and the message) and exits with
 * that (0, or 1 after printing the message), so whoever started it knows.
 *
 *   int ready_fd;
 *   if (vhpc_daemonize("ivcd", &ready_fd, &err) < 0) ...  // only the child returns
 *   ... start up; on failure: vhpc_daemon_fail(ready_fd, msg)
 *   vhpc_daemon_ready(ready_fd, log_fd, &err);            // stdio detached
 */
#ifndef VHPC_DAEMON_H
#define VHPC_DAEMON_H

#include "error.h"

#include <stddef.h>

/* Fork.  The parent never returns: it exits 0 at the child's "R", 1 after
 * printing "WHO: <message>" at its "E<message>", or 1 saying the daemon
 * died if the pipe closes without a word.  The child returns 0 in a new
 * session with the pipe's write end in *ready_fd, or 1 if only setsid
 * failed (errno says why; it runs on).  -1: nothing was forked (*err). */
int vhpc_daemonize(const char *who, int *ready_fd, vhpc_err_t *err);

/* Start-up is done: change to / (every path should be absolute by now),
 * stdin and stdout to /dev/null, stderr to log_fd (or /dev/null if it is
 * negative), then release the parent.  0, or what went wrong (not fatal:
 * the parent was released as far as possible). */
int vhpc_daemon_ready(int ready_fd, int log_fd, vhpc_err_t *err);

/* `path` as an absolute path in buf (relative ones against the current
 * directory): a daemon changes to / when it is ready, so every path it
 * keeps must be made absolute before.  0, or -ENAMETOOLONG / -errno with
 * a message naming opt (the option that gave the path) in *err. */
int vhpc_daemon_path(const char *opt, const char *path, char *buf, size_t len, vhpc_err_t *err);

/* Start-up failed: hand msg to the waiting parent, which prints it. */
void vhpc_daemon_fail(int ready_fd, const char *msg);

#endif
