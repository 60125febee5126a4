/*
 * net.h - the virtual cluster's network, built inside the job's own network
 * namespace (ns.h): one Linux bridge whose end in that namespace has an
 * address (10.213.1.1/24) closed by nftables, one tap per VM on it.  Uses
 * iproute2's `ip` (Debian: iproute2), which says clearly what went wrong,
 * and nft (Debian: nftables).
 */
#ifndef VHPC_NET_H
#define VHPC_NET_H

#include "error.h"

#include <net/if.h>
#include <sys/types.h>

struct vhpc_net {
    char bridge[IFNAMSIZ];
    pid_t ns;         /* the keeper of the job's namespace (ns.h) */
    int subnet;       /* N in 10.213.N.0/24 */
    char host_ip[32]; /* 10.213.N.1 */
};

/* Create net->bridge in net->ns on 10.213.1.0/24 and bring it up. */
int vhpc_net_create(struct vhpc_net *net, vhpc_err_t *err);
/* Create tap `name` attached to the bridge; guest i gets 10.213.N.(10+i). */
int vhpc_net_add_tap(const struct vhpc_net *net, const char *tap, vhpc_err_t *err);
void vhpc_net_guest_ip(const struct vhpc_net *net, int i, char *buf, size_t len);

/* Close the namespace's side of the bridge (nftables table inet
 * vhpc_BRIDGE there): no packet from the job's VMs reaches a service in the
 * namespace, no process that enters it reaches the VMs, nothing is routed
 * in or out (a device the multi-node setup adds stays closed too).  The
 * VMs reach each other over the bridge; the host talks to them only
 * through their virtio-serial ports and ivcd.  The table goes with the
 * namespace. */
int vhpc_net_firewall(const struct vhpc_net *net, vhpc_err_t *err);

#endif
