/*
 * ns.h - each job's own network namespace, held open by a keeper process.
 *
 * A cluster's bridge, taps and nftables table live in a network namespace of
 * their own: nothing of the host and no other job is on the job's network,
 * so no other user's VM or host process can reach its VMs, by construction.
 * As root the namespace is a plain network namespace.  As a normal user it
 * belongs to a user namespace of that user (uid and gid 0 inside mapped to
 * the user, nothing else mapped): that gives the CAP_NET_ADMIN needed to
 * build the job's network there and nowhere else, as rootless containers
 * do.  The keeper (a fork of vhpc named vhpc-netns, child of init) makes
 * the namespaces, gives up its capabilities and sleeps; ip, nft and QEMU
 * enter through /proc/<keeper>/ns/.  Once the keeper and the QEMUs are gone
 * the kernel removes the namespace and every device in it.
 */
#ifndef VHPC_NS_H
#define VHPC_NS_H

#include "error.h"
#include "vhpc/cluster.h" /* vhpc_ns_check */

#include <stdbool.h>
#include <sys/types.h>

/* Start a keeper; *keeper is its pid. */
int vhpc_ns_create(pid_t *keeper, vhpc_err_t *err);

/* Is `pid` a keeper (alive, named vhpc-netns)? */
bool vhpc_ns_alive(pid_t keeper);

/* Enter the keeper's namespaces: its user namespace when it is not ours
 * (then this process is uid 0 there, with every capability in it, until
 * it execs without SECBIT_NOROOT), then its network namespace.  For a
 * child between fork and exec (single-threaded); -1 with errno on failure. */
int vhpc__ns_enter(pid_t keeper);

/* Stop the keeper (SIGKILL: it holds nothing to save); -ETIMEDOUT if it
 * is still there 2 s later.  No keeper (pid <= 0, gone): 0. */
int vhpc_ns_stop(pid_t keeper, vhpc_err_t *err);

#endif
