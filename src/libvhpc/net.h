/*
 * net.h - the virtual cluster's network: one Linux bridge per cluster whose
 * host end has an address (10.213.N.1/24) closed by nftables, one tap per VM
 * on it.  Uses
 * iproute2's `ip` (Debian: iproute2), which says clearly what went wrong.
 */
#ifndef VHPC_NET_H
#define VHPC_NET_H

#include "error.h"

#include <net/if.h>

struct vhpc_net {
    char bridge[IFNAMSIZ];
    int subnet;       /* N in 10.213.N.0/24 */
    char host_ip[32]; /* 10.213.N.1 */
};

/* Create the bridge `name` on a free 10.213.N.0/24 and bring it up. */
int vhpc_net_create(struct vhpc_net *net, const char *name, vhpc_err_t *err);
/* Create tap `name` attached to the bridge; guest i gets 10.213.N.(10+i). */
int vhpc_net_add_tap(const struct vhpc_net *net, const char *tap, vhpc_err_t *err);
void vhpc_net_guest_ip(const struct vhpc_net *net, int i, char *buf, size_t len);
/* Delete a link if it exists (tap or bridge); quiet. */
void vhpc_net_del_link(const char *name);

/* Close the host side of the bridge (nftables table inet vhpc_BRIDGE): no
 * packet from the job's VMs reaches a host service, no host process (of any
 * user) reaches the VMs, nothing is routed in or out.  The VMs reach each
 * other over the bridge; the host talks to them only through their
 * virtio-serial ports and ivcd.  Needs nft (Debian: nftables). */
int vhpc_net_firewall(const struct vhpc_net *net, vhpc_err_t *err);
/* Remove that table if it exists; quiet. */
void vhpc_net_del_firewall(const char *bridge);
void vhpc_net_firewall_name(const char *bridge, char *buf, size_t len);

#endif
