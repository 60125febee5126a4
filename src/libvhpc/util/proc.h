/*
 * proc.h - running programs: one call that runs a program and collects
 * its output, one that hands its output over line by line (long builds
 * that show progress), and what every child vhpc starts does before exec.
 */
#ifndef VHPC_PROC_H
#define VHPC_PROC_H

#include "error.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Close every descriptor from `low` up, so a child (QEMU, ivcd, ip, nft)
 * holds nothing of its parent's: locks, sockets, other VMs' pipes.  In a
 * child between fork and exec: async-signal-safe. */
static inline void vhpc__close_from(int low)
{
    if (syscall(SYS_close_range, (unsigned)low, ~0u, 0) == 0)
        return;
    for (int fd = low; fd < 65536; fd++) /* a kernel before 5.9 */
        close(fd);
}

/* Give up every capability for good before exec: the bounding set (so an
 * exec as uid 0 grants none), securebits that keep uid 0 from meaning
 * anything, the ambient set, then the process's own sets; and no new
 * privileges through setuid files.  A process without capabilities just
 * sets no_new_privs.  -1 with errno on failure. */
static inline int vhpc__drop_privileges(void)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -1;
    if (data[0].effective & (1u << CAP_SETPCAP)) {
        if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                                         SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED) <
            0)
            return -1;
        for (int cap = 0; cap <= 63; cap++)
            if (prctl(PR_CAPBSET_DROP, cap) < 0 && errno != EINVAL)
                return -1;
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_data_struct none[2] = {{0, 0, 0}, {0, 0, 0}};
    hdr = (struct __user_cap_header_struct){_LINUX_CAPABILITY_VERSION_3, 0};
    if (syscall(SYS_capset, &hdr, none) < 0)
        return -1;
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* Process pid's state letter from /proc/PID/stat (R, S, D, Z, X, ...), or
 * 0 if there is no such process (or its stat cannot be read); its name
 * (comm) in comm if comm is not NULL.  A process that is exiting has
 * already lost its /proc exe link but not its state or its name. */
char vhpc__proc_state(pid_t pid, char *comm, size_t len);

/* Run argv (PATH lookup), stdin from /dev/null, and collect its stdout into
 * out (NUL-terminated, truncated to outlen - 1; may be NULL) and its stderr
 * into errbuf (same, without trailing newlines).  Returns the exit status
 * (0..255), 128 + signal, or a negative errno if it could not be started
 * (err set). */
int vhpc__run(const char *const argv[], const char *cwd, char *out, size_t outlen, char *errbuf,
              size_t errlen, vhpc_err_t *err);
/* The same with the environment envp. */
int vhpc__run_env(const char *const argv[], const char *const envp[], const char *cwd, char *out,
                  size_t outlen, char *errbuf, size_t errlen, vhpc_err_t *err);

/* Run argv (PATH lookup) with extra environment `env` ("K=V",
 * NULL-terminated), stdout and stderr into one pipe read line by line
 * (lines end at '\n' or '\r'), each given to fn (may be NULL), and also
 * appended to the file `log` (may be NULL).  private_mounts: in a
 * new mount namespace, so nothing it mounts outlives it.  Returns the exit
 * status, 128 + signal, or a negative errno (err set). */
typedef void (*vhpc_line_fn)(char *line, void *arg);
int vhpc__run_lines(const char *const argv[], const char *const env[], int private_mounts,
                    const char *log, vhpc_line_fn fn, void *arg, vhpc_err_t *err);

/* Start fn(3, arg) in a detached helper process: a child of init (forked
 * twice; the middle one is reaped before this returns), in a session of
 * its own (no terminal's Ctrl-C), named `name` (ps, pgrep), ignoring
 * SIGINT, SIGHUP and SIGPIPE, stdio on /dev/null and holding nothing of
 * the caller's but `keep`, as descriptor 3.  fn must not return. */
int vhpc__spawn_detached(const char *name, int keep, void (*fn)(int fd, void *arg), void *arg,
                         vhpc_err_t *err);

#endif
