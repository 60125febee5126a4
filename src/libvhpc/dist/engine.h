/*
 * engine.h - the objects of the distribution engine and the calls between
 * its files (internal to dist/; the API is dist.h, the wire format proto.h).
 *
 * One engine serves the three roles.  A *session* is one image on its way
 * through this process: its blobs (each readable through an fd, `have`
 * bytes of it present and verified), an optional upstream link it receives
 * on, and *kids*, the links it sends on.  A pusher is a session whose blobs
 * come from the local store and whose kids are the roots of the tree; a node
 * receiving a push is a session with an upstream and the kids of its
 * subtree; a node answering a pull is a store session with the puller as
 * its one kid; the puller is a receiving session without kids.  Sending is
 * the same everywhere: a kid is at (blob, offset) and gets the next chunk as
 * soon as the session has it, with sendfile(2) from the blob's fd, so a
 * node forwards chunks while it still receives the rest (or, in store and
 * forward mode, once it has everything).
 *
 * Everything happens in one poll loop.  Received blobs are committed to the
 * store (which re-hashes them) in a short-lived thread per blob, so the loop
 * keeps forwarding meanwhile; the thread hands its result back through a
 * pipe.  Connections and sessions are only freed at the end of a loop
 * iteration (sweep), so a callback may close or fail anything without
 * pulling memory from under its caller.
 *
 * The files, one object or one side each:
 *   engine.c   the loop, its timers, and what a frame or a lost link means
 *              for the connection's role
 *   conn.c     a connection: frames in, frames and chunks out
 *   session.c  a session's life: start from the store, fail, move on, report
 *   blob.c     a session's blobs: the manifest's list, chunks, checksums
 *   kid.c      the sending side: one link down the tree
 *   recv.c     the receiving side: PUSH, STATE, CHUNK
 *   cache.c    the node's store as a cache: room, commits, verification
 *   server.c   `vhpc node serve`: accept, limits, PULL and QUERY
 *   auth.c     munge credentials and who may do what
 *   push.c, pull.c   the two client calls of dist.h
 *   proto.c    encode and decode the frames of proto.h
 *   addr.c     node addresses and sizes (dist.h)
 */
#ifndef VHPC_DIST_ENGINE_H
#define VHPC_DIST_ENGINE_H

#include "vhpc/dist.h"
#include "proto.h"
#include "sha256.h"
#include "vhpc/store.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <munge.h>
#include <stdint.h>
#include <sys/types.h>

#define HEARTBEAT_MS  500
#define LINGER_MS     10000
#define MIN_ORPHAN_MS 10000
#define LOCK_WAIT_MS  10000 /* for the store's lock, then the transfer fails */
#define FD_MARGIN     32    /* descriptors kept free for connections */

enum role {
    R_INBOUND,  /* accepted, nothing received yet */
    R_MANIFEST, /* got a PUSH, waiting for its MANIFEST */
    R_UP,       /* this session receives on it */
    R_KID,      /* this session sends on it */
    R_PULL,     /* a puller's connection, waiting for PUSH or ERROR */
    R_LINGER,   /* done; waits for the other side to close */
};

struct obuf {
    struct obuf *next;
    size_t len, off;
    unsigned char data[];
};

struct engine;
struct session;
struct kid;

struct conn {
    struct conn *next;
    struct engine *e;
    int fd;
    enum role role;
    int dead, connecting, close_after_flush;
    char closing_why[160]; /* the ERROR we sent before closing (a puller moves on) */
    char peer[64];
    char ip[INET6_ADDRSTRLEN + 2]; /* the peer's address without the port */
    int64_t since;                 /* created */
    int64_t last_rx;               /* last frame received */
    int64_t last_tx;               /* last bytes sent */
    /* input */
    unsigned char *in;
    size_t cap, got, pos;
    json_t *push; /* R_MANIFEST: the PUSH waiting for its manifest */
    uid_t uid;    /* who sent the request (a server's: authenticated) */
    /* output: control frames, then at most one chunk in flight */
    struct obuf *qhead, *qtail;
    int chunk_active;
    unsigned char chdr[VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR];
    size_t chdr_off;
    int cfd;
    off_t coff;
    size_t crem;
    struct session *sess; /* R_UP */
    struct kid *kid;      /* R_KID */
    int lowat;            /* SO_RCVLOWAT set (0: the default, 1) */
    int is_pull;          /* the puller's link to a node */
    size_t pull_node;     /* ... its index in the list */
};

enum blob_state { B_HAVE, B_RECV, B_COMMIT, B_GONE };

struct blob {
    char role[32];
    char digest[65];
    uint64_t size;
    uint64_t have; /* bytes from the start, present and verified */
    int rfd;
    enum blob_state state;
    struct vhpc_blob_writer w;
    uint64_t nchunks;
    uint32_t *crc;      /* chunk checksums */
    unsigned char *crk; /* which are known */
    /* The blob's SHA-256 over its first full_off bytes, computed as they go
     * by: a blob being received (every chunk, in order, on arrival), or a
     * store blob not verified yet (the pusher's own, on the way out); the
     * whole is compared with the digest at the end. */
    int check_full;
    struct vhpc_sha256 full;
    uint64_t full_off;
};

enum kid_state { K_WAIT, K_CONNECT, K_HELLO, K_SEND, K_REPORT, K_DONE, K_FAILED };

struct kid {
    struct session *s;
    int idx; /* in the push's node list */
    char addr[64];
    json_t *sub; /* its children (array) */
    struct conn *c;
    enum kid_state state;
    uint64_t *have;        /* per blob: what it has plus what was sent */
    size_t bi;             /* the blob being sent */
    int64_t since;         /* last sign of life */
    uint64_t own, subtree; /* from its PROGRESS */
    uint64_t sent;
    json_t *entries; /* its REPORT's nodes, or its failure */
};

struct session {
    struct session *next;
    struct engine *e;
    char digest[65], name[128];
    int version;
    char *manifest;
    size_t mlen;
    uint32_t chunk;
    int timeout_ms, seq, self;
    struct blob *b;
    size_t nb;
    int source; /* blobs from the local store, nothing to receive */
    struct conn *up;
    struct kid **kids;
    size_t nkids;
    int own; /* 0 receiving, 1 has the image, -1 failed */
    char reason[512];
    uint64_t bytes_in, need;
    uint64_t reserved;  /* room made for blobs being received (dist_session_room) */
    uint64_t tmp_bytes; /* ... of which written: their bytes so far */
    uid_t uid;          /* on whose behalf: the pusher's user (authenticated) */
    int64_t t0, t_done, orphan_since, last_hb;
    int pending;       /* commit threads running */
    int64_t lock_wait; /* since when it waits for the store's lock (0: not) */
    int dead, reported;
};

struct engine {
    struct vhpc_store *st;
    int lfd;
    char laddr[64];
    const char *logp;
    struct conn *conns;
    int nconns;
    struct session *sessions;
    int wake[2];
    int64_t now;
    size_t read_budget;          /* bytes one connection may read per loop turn */
    struct vhpc_dist_limits lim; /* a server's */
    munge_ctx_t mctx;            /* created on first use */
    uid_t *allow;                /* trusted like root (--allow-uid) */
    int64_t accept_paused;       /* until then (out of descriptors) */
    size_t nallow;
    /* client mode (push, pull) */
    struct session *client;
    int client_done;
    struct vhpc_progress *prog;
    const char *const *pull_from;
    size_t pull_n, pull_next;
    int pull_timeout;
    char *pull_ref;
    char pull_why[2048];
    size_t pull_node;
};

/* engine.c */
int dist_engine_init(struct engine *e, struct vhpc_store *st, vhpc_err_t *err);
/* Run the loop until *stop or (client mode) the client is done. */
int dist_engine_run(struct engine *e, volatile sig_atomic_t *stop);
void dist_engine_fini(struct engine *e);
/* A line of the server's log (nothing without a prefix). */
void dist_log(struct engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A frame of `type` arrived on c (its payload p, len bytes). */
void dist_dispatch(struct conn *c, int type, const unsigned char *p, size_t len);
/* The link ends: tell its owner, free it at the next sweep. */
void dist_conn_lost(struct conn *c, const char *why);

/* conn.c */
struct conn *dist_conn_new(struct engine *e, int fd, enum role role);
/* Queue a frame (copied). */
void dist_conn_send(struct conn *c, int type, const void *payload, size_t len);
/* Queue a JSON frame; steals the reference to j. */
void dist_conn_send_json(struct conn *c, int type, json_t *j);
/* Queue an ERROR, then close once it is out. */
void dist_conn_send_error(struct conn *c, const char *msg);
/* Close without telling the owner (it knows). */
void dist_conn_close(struct conn *c);
void dist_conn_free(struct conn *c);
/* Send what is queued, then (a kid's link) chunks, until the socket is full. */
void dist_conn_flush(struct conn *c);
/* Read what the socket has and dispatch every whole frame. */
void dist_conn_read(struct conn *c);

/* session.c */
struct session *dist_session_alloc(struct engine *e);
/* Mark a session for freeing at the next sweep (once no commit runs). */
void dist_session_release(struct session *s);
void dist_session_free(struct session *s);
/* The session receiving image `digest`, if any. */
struct session *dist_session_find(struct engine *e, const char *digest);
void dist_session_fail(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Move a session on: start kids waiting their turn, report when all is
 * done. */
void dist_session_progress(struct session *s);
/* A session for an image of the local store (a pusher, or a node answering
 * a pull).  verify: re-hash the blobs first (else while they go out). */
struct session *dist_session_from_store(struct engine *e, const struct vhpc_ref *ref, int verify,
                                        vhpc_err_t *err);
/* PROGRESS upstream and the client's progress bar (every HEARTBEAT_MS). */
void dist_session_heartbeat(struct session *s);

/* blob.c */
/* The bytes of the chunk at off of blob b. */
uint32_t dist_chunk_len(const struct session *s, const struct blob *b, uint64_t off);
/* -E2BIG (with a message) when blobs b at this chunk size pass the
 * protocol's limits. */
int dist_check_chunking(const struct blob *b, size_t nb, uint32_t chunk, vhpc_err_t *err);
/* (Re)size b's chunk checksums for the session's chunk size. */
int dist_blob_set_chunking(struct session *s, struct blob *b);
/* The checksum of chunk k of blob b: known (received with it) or computed
 * from the blob's file.  -EBADMSG when a store blob turns out damaged. */
int dist_chunk_sum(struct session *s, struct blob *b, uint64_t k, uint32_t *out);
void dist_blob_release(struct blob *b);
/* The blobs a manifest names, in the order every side sends them. */
int dist_manifest_blobs(const char *text, size_t len, struct blob **out, size_t *n,
                        vhpc_err_t *err);

/* kid.c */
/* A kid for tree node `node` ({"i", "addr", "children"}) of session s;
 * NULL when that node is served already (or out of memory). */
struct kid *dist_kid_add(struct session *s, json_t *node);
/* Connect to the kid (non-blocking); its PUSH goes once connected. */
void dist_kid_start(struct kid *k);
/* Send the kid its PUSH and the manifest. */
void dist_kid_hello(struct kid *k);
/* The kid failed: record why, adopt its children. */
void dist_kid_fail(struct kid *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Set up the kid's next chunk on its link, if the session has it; 1 when
 * one was. */
int dist_kid_next_chunk(struct kid *k);
/* A frame from the kid. */
void dist_kid_frame(struct kid *k, int type, json_t *j);
/* Give every kid that waits for data what the session now has. */
void dist_session_kick(struct session *s);

/* recv.c */
/* A PUSH (with its manifest) arrived on c: start or continue receiving. */
void dist_handle_push(struct conn *c, json_t *pj, const char *manifest, size_t mlen);
void dist_handle_chunk(struct session *s, const unsigned char *p, size_t len);
/* The sender of s (on c) is gone: give back the room made ahead, wait for
 * another. */
void dist_recv_lost(struct session *s, struct conn *c, const char *why);

/* cache.c */
/* Commit blob bi (whole, hashed) to the store in a thread of its own. */
void dist_commit_start(struct session *s, size_t bi);
/* Take the results of finished commit threads (the wake pipe). */
void dist_commits_reap(struct engine *e);
/* Every blob is in the store: record the manifest and the name. */
void dist_session_finish_own(struct session *s);
/* Make room for dlen more bytes of blob b before they are written; -1
 * when the session failed. */
int dist_session_room(struct session *s, struct blob *b, size_t dlen);
/* Whether `need` more bytes can fit at all. */
int dist_check_room(struct engine *e, const struct session *s, uint64_t need, vhpc_err_t *err);
/* Whether the store holds blob b and (verify) its bytes hash to its name
 * (a damaged one is removed): 0, or -ENOENT / -EBADMSG with a message. */
int dist_store_blob_check(struct engine *e, const struct blob *b, int verify, vhpc_err_t *err);
/* Resolve ref in the store and re-hash every blob of the image. */
int dist_resolve_verified(struct engine *e, const char *ref, struct vhpc_ref *out, vhpc_err_t *err);

/* server.c */
void dist_server_accept(struct engine *e);
/* Whether a server has the descriptors / the room (--max-sessions) for one
 * more transfer; else an error for that request.  0 for a client. */
int dist_fds_admit(struct engine *e, size_t nb, vhpc_err_t *err);
int dist_session_admit(struct engine *e, vhpc_err_t *err);
void dist_handle_pull(struct conn *c, json_t *j);
void dist_handle_query(struct conn *c, json_t *j);

/* auth.c */
/* Add a credential for request req sent to `to` (ip:port); *slot holds the
 * munge context, made on first use. */
int dist_sign(munge_ctx_t *slot, json_t *req, const char *to, vhpc_err_t *err);
/* Who sent request req on c (authenticated by its credential). */
int dist_authenticate(struct conn *c, json_t *req, uid_t *out, vhpc_err_t *err);
int dist_privileged(const struct engine *e, uid_t uid);
int dist_may_write(const struct engine *e, uid_t uid, const char *name, vhpc_err_t *err);
int dist_may_read(const struct engine *e, uid_t uid, const char *name);
int dist_no_rebind(struct engine *e, const struct dist_push_req *p, vhpc_err_t *err);

/* pull.c */
/* Whether the PUSH p answering our PULL on c is refused (then c is lost). */
int dist_pull_refuse(struct conn *c, const struct dist_push_req *p);
/* A puller's link (in `role`, receiving session s) is gone: the next node. */
void dist_pull_lost(struct conn *c, enum role role, struct session *s, const char *why);

#endif
