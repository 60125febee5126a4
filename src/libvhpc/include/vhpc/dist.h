/*
 * vhpc/dist.h - image distribution between nodes: push an image from the local
 * store to many nodes through a pipelined tree, serve as a node (receive,
 * forward, answer pulls, keep a cache within a budget), pull an image from
 * a node.  The wire protocol is dist/proto.h; the engine behind these
 * calls is described in dist/engine.h.
 *
 * Everything runs in one poll loop per process (no threads but the ones
 * that commit received blobs, which re-hash them).  Callers must ignore
 * SIGPIPE (blobs go out with sendfile(2), which has no MSG_NOSIGNAL).
 */
#ifndef VHPC_PUBLIC_DIST_H
#define VHPC_PUBLIC_DIST_H

#include "error.h"

#include <jansson.h>
#include <sys/types.h>

#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

struct vhpc_store;
struct vhpc_ref;

#define VHPC_DIST_PORT      7470        /* a node's, when an address names none */
#define VHPC_DIST_MIN_CHUNK (4u << 10)  /* bytes per chunk (vhpc_dist_push_opts) */
#define VHPC_DIST_MAX_CHUNK (64u << 20) /* ... at most */

/* "HOST[:PORT]" or "[V6ADDR][:PORT]" (default port VHPC_DIST_PORT) resolved
 * to a socket address; -EINVAL / -ENOENT with a message naming `what`. */
int vhpc_dist_resolve(const char *spec, struct sockaddr_storage *sa, socklen_t *salen,
                      vhpc_err_t *err);
/* A socket address as "ip:port" / "[ip6]:port". */
void vhpc_dist_addr_str(const struct sockaddr *sa, char *buf, size_t len);

/* Authentication (munge): every request (PUSH, PULL, QUERY) carries a
 * munge credential whose payload binds the request's other fields and the
 * address it goes to (proto.h).  Add it to req (a JSON object), for
 * a request sent to `to` ("ip:port", as vhpc_dist_addr_str prints the
 * address connected to).  The munged socket is $VHPC_MUNGE_SOCKET, else
 * munge's default. */
int vhpc_dist_sign(json_t *req, const char *to, vhpc_err_t *err);

enum vhpc_dist_mode {
    VHPC_DIST_PIPELINE, /* chunks through a tree, forwarded while received */
    VHPC_DIST_BINOMIAL, /* whole image, store and forward, binomial tree */
    VHPC_DIST_CENTRAL,  /* the pusher sends to every node at once */
};

struct vhpc_dist_push_opts {
    const char *const *nodes; /* HOST[:PORT] each */
    size_t nnodes;
    unsigned fanout;   /* pipeline: children per node (1 = a chain) */
    uint32_t chunk;    /* bytes per chunk */
    int mode;          /* enum vhpc_dist_mode */
    int timeout_ms;    /* a link that makes no progress this long fails */
    int progress;      /* show a progress bar (progress.h) */
    const char *label; /* the progress bar's label */
};

/* What happened at one node. */
struct vhpc_dist_result {
    char node[300]; /* as given */
    char addr[64];  /* resolved, ip:port */
    int ok;
    char reason[512]; /* why it failed */
    uint64_t bytes;   /* received in this push (0: it had the image) */
    int64_t ms;       /* from its PUSH to the image in its store */
};

/* Send image `ref` of store st to every node.  Returns 0 once every node
 * has the image or failed (results in *res, one per node in order, free()
 * it; *ref_out says what was pushed), or a negative code before anything
 * was sent (unknown image, unknown host, ...). */
int vhpc_dist_push(struct vhpc_store *st, const char *ref, const struct vhpc_dist_push_opts *o,
                   struct vhpc_dist_result **res, struct vhpc_ref *ref_out, vhpc_err_t *err);

/* Fetch image `ref` from the first node of `from` that has a verified copy
 * into st, tagged as it is there.  *got (may be NULL) is the image; *node
 * (may be NULL) the index of the node it came from. */
int vhpc_dist_pull(struct vhpc_store *st, const char *ref, const char *const *from, size_t n,
                   int timeout_ms, int progress, struct vhpc_ref *got, size_t *node,
                   vhpc_err_t *err);

/* What one node serves at once, and how long it waits for a peer. */
struct vhpc_dist_limits {
    int max_conns;    /* connections in all (default 256) */
    int max_per_peer; /* ... from one address (default 32) */
    int max_sessions; /* transfers (pushes received, pulls served) at once (default 16) */
    int idle_ms;      /* a connection without its request, or a sender silent, this long is
                       * closed (default 30 s) */
};
#define VHPC_DIST_LIMITS_DEFAULT                                                                   \
    {                                                                                              \
        256, 32, 16, 30000                                                                         \
    }

/* A node: listen on `listen` (HOST[:PORT]), then serve until *stop. */
struct vhpc_dist_server;
int vhpc_dist_server_new(struct vhpc_store *st, const char *listen, struct vhpc_dist_server **out,
                         vhpc_err_t *err);
/* The address it listens on ("ip:port"). */
const char *vhpc_dist_server_addr(const struct vhpc_dist_server *s);
/* Log lines go to stderr with this prefix (NULL: silent). */
void vhpc_dist_server_log(struct vhpc_dist_server *s, const char *prefix);
/* Set its limits (defaults: VHPC_DIST_LIMITS_DEFAULT; a field <= 0 keeps its value). */
void vhpc_dist_server_limits(struct vhpc_dist_server *s, const struct vhpc_dist_limits *l);
/* Users trusted like root by this node: they may push any name and read
 * every image (--allow-uid / --allow-user).  Copied. */
int vhpc_dist_server_allow(struct vhpc_dist_server *s, const uid_t *uids, size_t n,
                           vhpc_err_t *err);
int vhpc_dist_server_run(struct vhpc_dist_server *s, volatile sig_atomic_t *stop, vhpc_err_t *err);
void vhpc_dist_server_free(struct vhpc_dist_server *s);

#endif
