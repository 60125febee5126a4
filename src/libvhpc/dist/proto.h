/*
 * proto.h - the wire format of image distribution: what a pusher, the
 * `vhpc node serve` services and a puller say to each other over TCP.  This
 * header is the specification; proto.c encodes and decodes its frames for
 * the engine (engine.h), and test tools that speak it include it too.
 *
 * Every message is a frame: a 12-byte header, then `length` bytes of
 * payload.  Integers are big-endian.
 *
 *   offset 0  u32 magic   VHPC_DIST_MAGIC ("VDI3"; "VDI2", without
 *                         credentials, is refused as malformed)
 *          4  u8  type    enum vhpc_dist_type
 *          5  u8  pad[3]  zero
 *          8  u32 length  payload bytes (<= VHPC_DIST_MAX_CONTROL for JSON
 *                         frames, <= VHPC_DIST_MAX_MANIFEST for MANIFEST,
 *                         <= VHPC_DIST_MAX_CHUNK + 16 for CHUNK)
 *
 * Control payloads are one JSON object each.  A frame with a wrong magic, an
 * unknown type, a length over the limit, or a payload that does not parse
 * ends the connection (nothing else: a peer speaking garbage costs one
 * connection, never the service).
 *
 * Authentication: every request (PUSH, PULL, QUERY) has "cred", a munge
 * credential (munge_encode) whose payload is
 *     "vhpc-dist/3 to=<ip:port of the receiver> req=<sha256 hex>"
 * where the hash is over the request without "cred", as compact JSON
 * with sorted keys.  The receiver decodes it (its munged refuses expired
 * and replayed credentials), checks the payload against the request and
 * its own address (getsockname), and takes the uid from the credential:
 * a credential is good for one request to one node.  A PUSH may say
 * "uid": on whose behalf it is sent; the receiver believes that only from
 * uid 0 or its own uid (a node forwarding a user's push).  A request
 * without a good credential gets an ERROR.  Who may do what:
 *   - root and the node's --allow-uid / --allow-user uids: push any name,
 *     read every image;
 *   - another uid: push names in its namespace, "USER.NAME" (USER its
 *     login name on the receiver), read those and the names outside
 *     every user's namespace (NAME whose part before the first '.' is not
 *     a user there);
 *   - a name:version that points at another image is never rebound (an
 *     ERROR names the digest it has; the same digest is a no-op).
 * Replies (the node's PUSH answering a PULL) are signed too; a puller
 * checks instead that the reply is the image it asked for (the name, the
 * version if it gave one, the digest prefix if it gave one).
 *
 * A push, on one link from a sender (the pusher, or a node forwarding) to a
 * receiver:
 *   S -> R  PUSH      {"v":3, "digest":<image>, "name":.., "version":N,
 *                      "chunk":<bytes>, "timeout_ms":T, "seq":false,
 *                      "self":<R's index in the push's node list>,
 *                      "children":[{"i":k, "addr":"ip:port",
 *                                   "children":[..]}, ..],
 *                      "uid":U, "cred":".."}
 *   S -> R  MANIFEST  the manifest's bytes (their sha256 is "digest")
 *   R -> S  STATE     {"have":[bytes per blob, in send order]}: what R
 *                     already holds (verified), a multiple of "chunk" or
 *                     the whole blob; or R sends ERROR if it cannot take
 *                     the image (a declared size over the limits below or
 *                     over its budget or free space, ...)
 *   S -> R  CHUNK     u32 blob index, u32 CRC-32C of the data, u64 offset,
 *                     then the data: min(chunk, size - offset)
 *                     bytes, offset = what R has of that blob (in order)
 *   R -> S  PROGRESS  {"own":<bytes R received>, "sub":<bytes its subtree
 *                     received>} every 0.5 s; S sends R an empty PROGRESS
 *                     ({}) when it has sent nothing for 0.5 s (keep-alive)
 *   R -> S  REPORT    {"nodes":[{"i":k, "ok":true|false, "reason":"..",
 *                     "bytes":N, "ms":T}, ..]}: R itself and every node
 *                     below it, once R has the image (or failed) and every
 *                     child reported or failed
 *   either  ERROR     {"error":".."}; the sender closes the link after it
 *
 * Send order: the manifest's blobs by size, largest first, then by role
 * name; blob indexes in STATE and CHUNK count in that order.
 *
 * R makes room for the bytes (evicting within its budget, allocating
 * blocks) only as CRC-checked chunks arrive, never for a declared size.
 *
 * R checks each chunk's CRC-32C before it writes or forwards it (a link's
 * damage stops there), and hashes the blob's bytes as they arrive, in
 * order: the SHA-256 must equal the blob's name before the blob enters its
 * store (so a node hashes each byte once).  R forwards to its
 * children (the subtree in PUSH, each gets its own PUSH) while it receives
 * ("seq":false, pipelined), or only once it has everything and one child
 * after the other ("seq":true, store and forward: the binomial tree).
 * When a child fails (connection lost, ERROR, no frame for timeout_ms) its
 * parent reports it failed and adopts the child's children: it sends each
 * a PUSH; a receiver that already has a transfer of that image takes the
 * new link as its upstream and answers STATE with what it has, so the
 * transfer continues from there.
 *
 * Other requests, each on a new connection to a node:
 *   C -> N  PULL   {"ref":"name[:version]" | "name@digest-prefix",
 *                   "timeout_ms":T, "cred":".."}
 *   N -> C  PUSH + MANIFEST as above (no children), then the same
 *           STATE / CHUNK / REPORT exchange; or ERROR if N has no
 *           verified copy
 *   C -> N  QUERY  {"ref":.., "cred":".."}
 *   N -> C  HAVE   {"have":true, "digest":.., "name":.., "version":N} after
 *                  re-hashing every blob (a damaged one is removed), or
 *                  {"have":false, "reason":".."}
 */
#ifndef VHPC_DIST_PROTO_H
#define VHPC_DIST_PROTO_H

#include "vhpc/dist.h" /* VHPC_DIST_PORT, VHPC_DIST_MIN_CHUNK, VHPC_DIST_MAX_CHUNK */
#include "error.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VHPC_DIST_MAGIC       0x56444933u /* "VDI3" */
#define VHPC_DIST_VERSION     3           /* PUSH's "v", and in every credential */
#define VHPC_DIST_HDR         12
#define VHPC_DIST_CHUNK_HDR   16
#define VHPC_DIST_MAX_CONTROL (16u << 20)
/* What a receiver accepts before it allocates or reserves anything (a PUSH
 * that declares more is refused with an ERROR / STATE {"error"} naming the
 * limit): the manifest's bytes, the blobs it names, one blob's size, and
 * the chunks of the whole image at the PUSH's chunk size (the per-chunk
 * state a receiver keeps: 5 bytes each, so at most 20 MiB per image; 1 MiB
 * chunks cover 4 TiB, 4 KiB chunks 16 GiB). */
#define VHPC_DIST_MAX_MANIFEST (1u << 20)
#define VHPC_DIST_MAX_BLOBS    64
#define VHPC_DIST_MAX_BLOB     (1ull << 40)
#define VHPC_DIST_MAX_CHUNKS   (1ull << 22)
/* Nodes in one push: in a PUSH's tree (which nests one level per node at
 * the most) and in a REPORT. */
#define VHPC_DIST_MAX_TREE 1000

enum vhpc_dist_type {
    VHPC_DIST_PUSH = 1,
    VHPC_DIST_MANIFEST = 2,
    VHPC_DIST_STATE = 3,
    VHPC_DIST_CHUNK = 4,
    VHPC_DIST_PROGRESS = 5,
    VHPC_DIST_REPORT = 6,
    VHPC_DIST_ERROR = 7,
    VHPC_DIST_PULL = 8,
    VHPC_DIST_QUERY = 9,
    VHPC_DIST_HAVE = 10,
};

/* ---- encode and decode (proto.c) ---------------------------------------- */

static inline void dist_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static inline uint32_t dist_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void dist_put64(unsigned char *p, uint64_t v)
{
    dist_put32(p, (uint32_t)(v >> 32));
    dist_put32(p + 4, (uint32_t)v);
}

static inline uint64_t dist_get64(const unsigned char *p)
{
    return (uint64_t)dist_get32(p) << 32 | dist_get32(p + 4);
}

/* A frame's header, for `len` bytes of payload of `type`. */
void dist_frame_header(unsigned char h[VHPC_DIST_HDR], int type, uint32_t len);
/* A received frame header: 0 with its type and payload length, or -EPROTO
 * (a wrong magic, an unknown type, a length over the type's limit). */
int dist_frame_check(const unsigned char h[VHPC_DIST_HDR], int *type, uint32_t *len);

/* A CHUNK's payload header: blob index, CRC-32C of the data, offset. */
void dist_chunk_header(unsigned char h[VHPC_DIST_CHUNK_HDR], uint32_t blob, uint32_t crc,
                       uint64_t off);
void dist_chunk_header_get(const unsigned char h[VHPC_DIST_CHUNK_HDR], uint32_t *blob,
                           uint32_t *crc, uint64_t *off);

/* The SHA-256 of len bytes, as 64 lowercase hex digits: a manifest's is
 * the image digest, a request's is in its credential. */
void dist_sha256_hex(const void *p, size_t len, char hex[65]);

/* A PUSH, decoded (its strings and "children" belong to the JSON object it
 * came from).  Its "uid" is the authentication's (auth.c). */
struct dist_push_req {
    const char *digest, *name;
    int version, timeout_ms, seq, self;
    uint32_t chunk;
    json_t *children;
};
/* Decode and check a PUSH: the version, digest, name, chunk size and tree
 * (within VHPC_DIST_MAX_TREE); -EPROTO with a message if it is not one. */
int dist_push_parse(json_t *j, struct dist_push_req *p, vhpc_err_t *err);
/* Encode a PUSH sent on behalf of uid; NULL when out of memory. */
json_t *dist_push_msg(const struct dist_push_req *p, uid_t uid);

#endif
