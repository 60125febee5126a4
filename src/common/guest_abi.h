/*
 * guest_abi.h - what the host's VMs and the guests' images agree on beyond
 * the agent's protocol (agent_proto.h): the VM side (libvhpc's vm.c) makes
 * the devices, the image side (full.c, which writes the root's serial
 * into the image for the agent's root.c to look for) names them, and
 * neither includes the other.
 */
#ifndef VHPC_GUEST_ABI_H
#define VHPC_GUEST_ABI_H

/* virtio-blk serial of a full image's read-only root disk. */
#define VHPC_ROOT_DISK_SERIAL "vhpc-root"

#endif
