/*
 * ivshmem_proto.h - QEMU's ivshmem-server wire protocol (QEMU
 * docs/specs/ivshmem-spec.rst), shared by ivcd (server) and libivc (client).
 *
 * The server speaks, the client only listens.  Each message is one 8-byte
 * little-endian signed integer, optionally with one file descriptor attached
 * (SCM_RIGHTS):
 *   1. protocol version (0), no fd
 *   2. the client's own peer id, no fd
 *   3. -1 with the shared-memory fd
 *   4. for every peer (the others, then the client itself): its id with one
 *      eventfd per interrupt vector, vectors in order
 * Later: a new peer's id with its eventfds; a peer id without fd means that
 * peer left.
 */
#ifndef IVSHMEM_PROTO_H
#define IVSHMEM_PROTO_H

#include <stdint.h>

#define IVSHMEM_PROTOCOL_VERSION 0
#define IVSHMEM_MAX_PEER_ID      65535

/* Send one message; `fd` < 0 sends none.  Returns 0 or a negative errno
 * (-EAGAIN when a non-blocking socket is full). */
int ivshm_send(int sock, int64_t value, int fd);

/* Receive one message.  `*fd` gets the attached descriptor or -1 (extra
 * descriptors are closed).  Returns 0, -EAGAIN (non-blocking, nothing yet),
 * -EPIPE at end of stream, -EBADMSG for a short message, or -errno. */
int ivshm_recv(int sock, int64_t *value, int *fd);

#endif
