/*
 * dist.c - image distribution (API: dist.h, wire format: dist_proto.h).
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
 */
#include "dist.h"
#include "clock.h"
#include "output.h"

#include "sha256.h"
#include "crc32c.h"
#include "dist_proto.h"
#include "progress.h"
#include "store.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <munge.h>
#include <pwd.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_BLOBS     VHPC_DIST_MAX_BLOBS
#define MAX_TREE      1000 /* nodes in one push (the tree nests one level per node) */
#define HEARTBEAT_MS  500
#define LINGER_MS     10000
#define MIN_ORPHAN_MS 10000
#define LOCK_WAIT_MS  10000 /* for the store's lock, then the transfer fails */
#define FD_MARGIN     32    /* descriptors kept free for connections */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void sha256_raw(const void *data, size_t len, unsigned char out[32])
{
    struct vhpc_sha256 s;
    char hex[65];
    vhpc_sha256_init(&s);
    vhpc_sha256_update(&s, data, len);
    vhpc_sha256_hex(&s, hex);
    for (int i = 0; i < 32; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
}

/* ---- addresses and sizes ----------------------------------------------- */

int vhpc_dist_resolve(const char *spec, struct sockaddr_storage *sa, socklen_t *salen,
                      vhpc_err_t *err)
{
    char host[256], port[16];
    const char *colon;
    if (!spec || !*spec || strlen(spec) >= sizeof(host))
        return vhpc_err_setmsg(err, -EINVAL, "'%s' is not a node address (HOST[:PORT])",
                               spec ? spec : "");
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || (close[1] && close[1] != ':'))
            return vhpc_err_setmsg(err, -EINVAL, "'%s' is not a node address ([V6ADDR][:PORT])",
                                   spec);
        snprintf(host, sizeof(host), "%.*s", (int)(close - spec - 1), spec + 1);
        colon = close[1] ? close + 1 : NULL;
    } else {
        colon = strchr(spec, ':');
        if (colon && strchr(colon + 1, ':'))
            return vhpc_err_setmsg(err, -EINVAL,
                                   "'%s': write an IPv6 address in brackets, [ADDR]:PORT", spec);
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
    }
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || p <= 0 || p > 65535)
            return vhpc_err_setmsg(err, -EINVAL, "'%s': the port must be a number 1..65535", spec);
        snprintf(port, sizeof(port), "%ld", p);
    } else {
        snprintf(port, sizeof(port), "%d", VHPC_DIST_PORT);
    }
    if (!host[0])
        return vhpc_err_setmsg(err, -EINVAL, "'%s' names no host", spec);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g)
        return vhpc_err_setmsg(err, -ENOENT, "node '%s': cannot resolve '%s' (%s)", spec, host,
                               g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

void vhpc_dist_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
}

int vhpc_parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10, end++; break;
    case 'M': shift = 20, end++; break;
    case 'G': shift = 30, end++; break;
    case 'T': shift = 40, end++; break;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

/* ---- the engine's objects ------------------------------------------------ */

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
    uint64_t reserved;  /* room made for blobs being received (session_room) */
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

static void elog(struct engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void elog(struct engine *e, const char *fmt, ...)
{
    if (!e->logp)
        return;
    va_list ap;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    char msg[1536];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vhpc__say("%s.%03ld %s: %s\n", when, ts.tv_nsec / 1000000, e->logp, msg);
}

static void conn_flush(struct conn *c);
static void conn_close(struct conn *c);
static void session_progress(struct session *s);
static void session_fail(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fds_admit(struct engine *e, size_t nb, vhpc_err_t *err);
static void kid_fail(struct kid *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kid_start(struct kid *k);

/* ---- connections --------------------------------------------------------- */

static struct conn *conn_new(struct engine *e, int fd, enum role role)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->e = e;
    c->fd = fd;
    c->role = role;
    c->cfd = -1;
    c->lowat = 1;
    c->since = c->last_rx = c->last_tx = e->now;
    c->next = e->conns;
    e->conns = c;
    e->nconns++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return c;
}

/* Queue a frame (copied). */
static void conn_send(struct conn *c, int type, const void *payload, size_t len)
{
    if (c->dead)
        return;
    struct obuf *b = malloc(sizeof(*b) + VHPC_DIST_HDR + len);
    if (!b) {
        conn_close(c);
        return;
    }
    b->next = NULL;
    b->len = VHPC_DIST_HDR + len;
    b->off = 0;
    put32(b->data, VHPC_DIST_MAGIC);
    b->data[4] = (unsigned char)type;
    b->data[5] = b->data[6] = b->data[7] = 0;
    put32(b->data + 8, (uint32_t)len);
    if (len)
        memcpy(b->data + VHPC_DIST_HDR, payload, len);
    if (c->qtail)
        c->qtail->next = b;
    else
        c->qhead = b;
    c->qtail = b;
    conn_flush(c);
}

/* Queue a JSON frame; steals the reference to j. */
static void conn_send_json(struct conn *c, int type, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        conn_close(c);
        return;
    }
    conn_send(c, type, text, strlen(text));
    free(text);
}

static void conn_send_error(struct conn *c, const char *msg)
{
    conn_send_json(c, VHPC_DIST_ERROR, json_pack("{s:s}", "error", msg));
    c->close_after_flush = 1;
    snprintf(c->closing_why, sizeof(c->closing_why), "%.150s", msg);
    conn_flush(c);
}

/* The link ends: tell its owner, free it at the next sweep. */
static void conn_lost(struct conn *c, const char *why);

static void conn_close(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    struct kid *k = c->kid;
    struct session *s = c->sess;
    c->kid = NULL;
    c->sess = NULL;
    if (k)
        k->c = NULL;
    if (s && s->up == c)
        s->up = NULL;
}

static void conn_free(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    while (c->qhead) {
        struct obuf *b = c->qhead;
        c->qhead = b->next;
        free(b);
    }
    json_decref(c->push);
    free(c->in);
    free(c);
}

/* ---- sessions: blobs, chunk digests ------------------------------------ */

static uint32_t chunk_len(const struct session *s, const struct blob *b, uint64_t off)
{
    uint64_t left = b->size - off;
    return left < s->chunk ? (uint32_t)left : s->chunk;
}

/* The chunks of an image at chunk size `chunk`; -E2BIG (with a message)
 * past the protocol's limits.  Every blob's size was bounded by
 * VHPC_DIST_MAX_BLOB when its manifest was read (collect_blob), so the sum
 * cannot overflow. */
static int check_chunking(const struct blob *b, size_t nb, uint32_t chunk, vhpc_err_t *err)
{
    uint64_t n = 0;
    for (size_t i = 0; i < nb; i++) {
        if (b[i].size > VHPC_DIST_MAX_BLOB)
            return vhpc_err_setmsg(err, -E2BIG,
                                   "blob %.12s (%s) claims %" PRIu64
                                   " bytes, more than the protocol's limit of %llu",
                                   b[i].digest, b[i].role, b[i].size, VHPC_DIST_MAX_BLOB);
        n += (b[i].size + chunk - 1) / chunk;
    }
    if (n > VHPC_DIST_MAX_CHUNKS)
        return vhpc_err_setmsg(err, -E2BIG,
                               "the image is %" PRIu64 " chunks of %u bytes, more than the "
                               "protocol's limit of %llu; push it with a larger --chunk",
                               n, chunk, VHPC_DIST_MAX_CHUNKS);
    return 0;
}

static int blob_set_chunking(struct session *s, struct blob *b)
{
    free(b->crc);
    free(b->crk);
    b->crc = NULL;
    b->crk = NULL;
    if (b->size > VHPC_DIST_MAX_BLOB)
        return -E2BIG; /* check_chunking said why */
    b->nchunks = (b->size + s->chunk - 1) / s->chunk;
    if (b->nchunks > VHPC_DIST_MAX_CHUNKS)
        return -E2BIG;
    b->crc = calloc(b->nchunks ? (size_t)b->nchunks : 1, sizeof(*b->crc));
    b->crk = calloc(b->nchunks ? (size_t)b->nchunks : 1, 1);
    return b->crc && b->crk ? 0 : -ENOMEM;
}

/* The checksum of chunk k of blob b: known (received with it) or computed
 * from the blob's file.  -EBADMSG when a store blob turns out damaged. */
static int chunk_sum(struct session *s, struct blob *b, uint64_t k, uint32_t *out)
{
    if (k >= b->nchunks)
        return -EINVAL;
    if (b->crk[k]) {
        *out = b->crc[k];
        return 0;
    }
    uint64_t off = (uint64_t)k * s->chunk;
    uint32_t len = chunk_len(s, b, off);
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    for (uint32_t done = 0; done < len;) {
        ssize_t n = pread(b->rfd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return n < 0 ? -errno : -EIO;
        }
        done += (uint32_t)n;
    }
    b->crc[k] = vhpc_crc32c(0, buf, len);
    b->crk[k] = 1;
    if (b->check_full && b->full_off == off) {
        vhpc_sha256_update(&b->full, buf, len);
        b->full_off += len;
        if (b->full_off == b->size) {
            char hex[65];
            vhpc_sha256_hex(&b->full, hex);
            b->check_full = 0;
            if (strcmp(hex, b->digest) != 0) {
                free(buf);
                return -EBADMSG;
            }
        }
    }
    free(buf);
    *out = b->crc[k];
    return 0;
}

static void blob_release(struct blob *b)
{
    if (b->state == B_RECV)
        vhpc_store_blob_abort(&b->w);
    if (b->rfd >= 0)
        close(b->rfd);
    b->rfd = -1;
    free(b->crc);
    free(b->crk);
    b->crc = NULL;
    b->crk = NULL;
}

struct blob_list {
    struct blob *b;
    size_t n;
    vhpc_err_t *err;
};

static int collect_blob(const char *role, const char *digest, uint64_t size, void *arg)
{
    struct blob_list *l = arg;
    if (l->n >= MAX_BLOBS)
        return vhpc_err_setmsg(l->err, -E2BIG,
                               "the manifest names more than %d blobs (the protocol's limit)",
                               MAX_BLOBS);
    if (size > VHPC_DIST_MAX_BLOB)
        return vhpc_err_setmsg(l->err, -E2BIG,
                               "the manifest's %s blob claims %" PRIu64
                               " bytes, more than the protocol's limit of %llu",
                               role, size, VHPC_DIST_MAX_BLOB);
    struct blob *b = &l->b[l->n++];
    memset(b, 0, sizeof(*b));
    snprintf(b->role, sizeof(b->role), "%s", role);
    snprintf(b->digest, sizeof(b->digest), "%s", digest);
    b->size = size;
    b->rfd = -1;
    return 0;
}

/* Largest first (then by role): a receiver re-hashes each blob when it
 * commits it, and that of the big root file system then overlaps with the
 * transfer of the small kernel and initramfs instead of trailing it. */
static int cmp_blob(const void *x, const void *y)
{
    const struct blob *a = x, *b = y;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    return strcmp(a->role, b->role);
}

/* The blobs a manifest names, in the order every side sends them. */
static int manifest_blobs(const char *text, size_t len, struct blob **out, size_t *n,
                          vhpc_err_t *err)
{
    json_error_t je;
    json_t *m = json_loadb(text, len, 0, &je);
    if (!json_is_object(m)) {
        json_decref(m);
        return vhpc_err_setmsg(err, -EBADMSG, "the manifest is not a JSON object (%s)", je.text);
    }
    struct blob_list l = {calloc(MAX_BLOBS, sizeof(struct blob)), 0, err};
    if (!l.b) {
        json_decref(m);
        return vhpc_err_set(err, -ENOMEM, "reading a manifest");
    }
    int r = vhpc_manifest_blobs(m, collect_blob, &l, err);
    json_decref(m);
    if (r < 0) {
        free(l.b);
        return r;
    }
    qsort(l.b, l.n, sizeof(*l.b), cmp_blob);
    *out = l.b;
    *n = l.n;
    return 0;
}

static struct session *session_alloc(struct engine *e)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->e = e;
    s->t0 = s->last_hb = e->now;
    s->self = -1;
    s->next = e->sessions;
    e->sessions = s;
    return s;
}

/* Mark a session for freeing at the next sweep (once no commit runs). */
static void session_release(struct session *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    for (size_t i = 0; i < s->nkids; i++)
        if (s->kids[i]->c)
            conn_close(s->kids[i]->c);
    if (s->up) {
        s->up->sess = NULL;
        s->up = NULL;
    }
}

static void session_free(struct session *s)
{
    for (size_t i = 0; i < s->nb; i++)
        blob_release(&s->b[i]);
    for (size_t i = 0; i < s->nkids; i++) {
        json_decref(s->kids[i]->sub);
        json_decref(s->kids[i]->entries);
        free(s->kids[i]->have);
        free(s->kids[i]);
    }
    free(s->kids);
    free(s->b);
    free(s->manifest);
    free(s);
}

static struct session *session_find(struct engine *e, const char *digest)
{
    for (struct session *s = e->sessions; s; s = s->next)
        if (!s->dead && !s->source && !strcmp(s->digest, digest))
            return s;
    return NULL;
}

/* ---- authentication and who may do what ------------------------------ */

static munge_ctx_t dist_munge(munge_ctx_t *slot, vhpc_err_t *err)
{
    if (*slot)
        return *slot;
    munge_ctx_t m = munge_ctx_create();
    const char *sock = getenv("VHPC_MUNGE_SOCKET");
    if (!m) {
        vhpc_err_setmsg(err, -ENOMEM, "creating a munge context");
        return NULL;
    }
    if (sock && *sock && munge_ctx_set(m, MUNGE_OPT_SOCKET, sock) != EMUNGE_SUCCESS) {
        vhpc_err_setmsg(err, -EINVAL, "VHPC_MUNGE_SOCKET=%s: %s", sock, munge_ctx_strerror(m));
        munge_ctx_destroy(m);
        return NULL;
    }
    return *slot = m;
}

/* What a request's credential must say: the request without "cred"
 * (canonical JSON), hashed, and the address it was sent to. */
static int cred_payload(json_t *req, const char *to, char *out, size_t len)
{
    json_t *copy = json_copy(req);
    if (!copy)
        return -ENOMEM;
    json_object_del(copy, "cred");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    if (!text)
        return -ENOMEM;
    struct vhpc_sha256 h;
    char hex[65];
    vhpc_sha256_init(&h);
    vhpc_sha256_update(&h, text, strlen(text));
    vhpc_sha256_hex(&h, hex);
    free(text);
    snprintf(out, len, "vhpc-dist/%d to=%s req=%s", VHPC_DIST_VERSION, to, hex);
    return 0;
}

static int sign_with(munge_ctx_t *slot, json_t *req, const char *to, vhpc_err_t *err)
{
    char payload[256], *cred = NULL;
    munge_ctx_t m = dist_munge(slot, err);
    if (!m)
        return err->code;
    if (cred_payload(req, to, payload, sizeof(payload)) < 0)
        return vhpc_err_set(err, -ENOMEM, "signing a request");
    munge_err_t me = munge_encode(&cred, m, payload, (int)strlen(payload));
    if (me != EMUNGE_SUCCESS) {
        free(cred);
        return vhpc_err_setmsg(err, -EACCES,
                               "cannot make a munge credential (munged's socket: "
                               "$VHPC_MUNGE_SOCKET, else munge's default): %s",
                               munge_ctx_strerror(m));
    }
    json_object_set_new(req, "cred", json_string(cred));
    free(cred);
    return 0;
}

int vhpc_dist_sign(json_t *req, const char *to, vhpc_err_t *err)
{
    static munge_ctx_t m;
    return sign_with(&m, req, to, err);
}

/* Who sent request req on c: the uid of its munge credential, which must
 * be for this request to this address.  A node (uid 0 or the service's
 * own) forwarding a push says on whose behalf ("uid"). */
static int authenticate(struct conn *c, json_t *req, uid_t *out, vhpc_err_t *err)
{
    struct engine *e = c->e;
    const char *cred = json_string_value(json_object_get(req, "cred"));
    struct sockaddr_storage sa;
    socklen_t sl = sizeof(sa);
    char to[64], want[256];
    void *buf = NULL;
    int blen = 0;
    uid_t uid;
    gid_t gid;
    if (!cred)
        return vhpc_err_setmsg(err, -EACCES,
                               "the request carries no credential: this node authenticates "
                               "every request with munge (vhpc %d or later)",
                               VHPC_DIST_VERSION);
    munge_ctx_t m = dist_munge(&e->mctx, err);
    if (!m)
        return err->code;
    if (getsockname(c->fd, (struct sockaddr *)&sa, &sl) < 0)
        return vhpc_err_set(err, -errno, "getsockname");
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
    if (sa.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        /* a dual-stack listener: the client dialled the IPv4 address */
        struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = s6->sin6_port};
        memcpy(&s4.sin_addr, s6->sin6_addr.s6_addr + 12, 4);
        memcpy(&sa, &s4, sizeof(s4));
    }
    vhpc_dist_addr_str((struct sockaddr *)&sa, to, sizeof(to));
    munge_err_t me = munge_decode(cred, m, &buf, &blen, &uid, &gid);
    if (me != EMUNGE_SUCCESS) {
        free(buf);
        return vhpc_err_setmsg(err, -EACCES, "authentication failed: munge: %s",
                               munge_ctx_strerror(m));
    }
    int ok = cred_payload(req, to, want, sizeof(want)) == 0 && blen == (int)strlen(want) &&
             !memcmp(buf, want, (size_t)blen);
    free(buf);
    if (!ok)
        return vhpc_err_setmsg(err, -EACCES,
                               "authentication failed: the credential was made for another "
                               "request or another node than %s",
                               to);
    json_t *behalf = json_object_get(req, "uid");
    if (behalf) {
        json_int_t b = json_integer_value(behalf);
        if (!json_is_integer(behalf) || b < 0 || b > 0x7fffffff)
            return vhpc_err_setmsg(err, -EACCES, "a request with an invalid \"uid\"");
        if ((uid_t)b != uid && uid != 0 && uid != geteuid())
            return vhpc_err_setmsg(err, -EACCES,
                                   "uid %u may not act on behalf of uid %lld (only nodes may)",
                                   (unsigned)uid, (long long)b);
        uid = (uid_t)b;
    }
    *out = uid;
    return 0;
}

/* Trusted like root: may push any name, read every image. */
static int privileged(const struct engine *e, uid_t uid)
{
    if (uid == 0)
        return 1;
    for (size_t i = 0; i < e->nallow; i++)
        if (e->allow[i] == uid)
            return 1;
    return 0;
}

/* A user's namespace: names "USER.*".  The user that owns name, or -1 for
 * a name outside every user's namespace (written by root or the trusted
 * only, readable by all). */
static long name_owner(const char *name)
{
    const char *dot = strchr(name, '.');
    char user[128], pwbuf[4096];
    struct passwd pw, *res = NULL;
    if (!dot || dot == name || (size_t)(dot - name) >= sizeof(user))
        return -1;
    snprintf(user, sizeof(user), "%.*s", (int)(dot - name), name);
    if (getpwnam_r(user, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res)
        return -1;
    return (long)pw.pw_uid;
}

static int may_write(const struct engine *e, uid_t uid, const char *name, vhpc_err_t *err)
{
    char pwbuf[4096];
    struct passwd pw, *res = NULL;
    if (privileged(e, uid) || (name[0] && name_owner(name) == (long)uid))
        return 0;
    if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res)
        return vhpc_err_setmsg(err, -EPERM,
                               "uid %u is not a user on this node: it may not push images",
                               (unsigned)uid);
    return vhpc_err_setmsg(err, -EPERM,
                           "user %s (uid %u) may push only names in its namespace, %s.NAME, "
                           "not '%s' (vhpc image tag IMAGE %s.NAME)",
                           pw.pw_name, (unsigned)uid, pw.pw_name, name, pw.pw_name);
}

static int may_read(const struct engine *e, uid_t uid, const char *name)
{
    long owner = name[0] ? name_owner(name) : 0;
    return privileged(e, uid) || owner < 0 || owner == (long)uid;
}

/* ---- kids: the links a session sends on ---------------------------------- */

static int tree_ok(json_t *children, int depth, int *count)
{
    size_t i;
    json_t *c;
    if (!json_is_array(children) || depth > MAX_TREE)
        return 0;
    json_array_foreach(children, i, c)
    {
        json_t *idx = json_object_get(c, "i"), *addr = json_object_get(c, "addr");
        if (++*count > MAX_TREE || !json_is_integer(idx) || json_integer_value(idx) < 0 ||
            json_integer_value(idx) >= MAX_TREE || !json_is_string(addr) ||
            strlen(json_string_value(addr)) >= 64 ||
            !tree_ok(json_object_get(c, "children"), depth + 1, count))
            return 0;
    }
    return 1;
}

static struct kid *kid_add(struct session *s, json_t *node)
{
    int idx = (int)json_integer_value(json_object_get(node, "i"));
    for (size_t i = 0; i < s->nkids; i++)
        if (s->kids[i]->idx == idx && s->kids[i]->state != K_FAILED)
            return NULL; /* already served */
    struct kid **g = realloc(s->kids, (s->nkids + 1) * sizeof(*g));
    if (!g)
        return NULL;
    s->kids = g;
    struct kid *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->have = calloc(s->nb ? s->nb : 1, sizeof(*k->have));
    if (!k->have) {
        free(k);
        return NULL;
    }
    k->s = s;
    k->idx = idx;
    snprintf(k->addr, sizeof(k->addr), "%s", json_string_value(json_object_get(node, "addr")));
    k->sub = json_incref(json_object_get(node, "children"));
    if (!k->sub)
        k->sub = json_array();
    k->state = K_WAIT;
    k->since = s->e->now;
    s->kids[s->nkids++] = k;
    if (!s->seq)
        kid_start(k);
    return k;
}

static json_t *push_msg(struct session *s, struct kid *k)
{
    return json_pack("{s:i, s:s, s:s, s:i, s:I, s:i, s:b, s:i, s:O, s:I}", "v", VHPC_DIST_VERSION,
                     "digest", s->digest, "name", s->name, "version", s->version, "chunk",
                     (json_int_t)s->chunk, "timeout_ms", s->timeout_ms, "seq", s->seq, "self",
                     k->idx, "children", k->sub, "uid", (json_int_t)s->uid);
}

static void kid_hello(struct kid *k)
{
    struct session *s = k->s;
    k->state = K_HELLO;
    k->since = s->e->now;
    json_t *j = push_msg(s, k);
    vhpc_err_t err = {0};
    if (!j || sign_with(&s->e->mctx, j, k->addr, &err) < 0) {
        json_decref(j);
        kid_fail(k, "%s", err.msg[0] ? err.msg : "out of memory");
        return;
    }
    conn_send_json(k->c, VHPC_DIST_PUSH, j);
    if (k->c)
        conn_send(k->c, VHPC_DIST_MANIFEST, s->manifest, s->mlen);
}

static void kid_start(struct kid *k)
{
    struct session *s = k->s;
    struct engine *e = s->e;
    struct sockaddr_storage sa;
    socklen_t salen;
    vhpc_err_t err = {0};
    k->since = e->now;
    if (vhpc_dist_resolve(k->addr, &sa, &salen, &err) < 0) {
        kid_fail(k, "%s", err.msg);
        return;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        kid_fail(k, "connecting to %s: %s", k->addr, strerror(errno));
        return;
    }
    if (connect(fd, (struct sockaddr *)&sa, salen) < 0 && errno != EINPROGRESS) {
        int en = errno;
        close(fd);
        kid_fail(k, "connecting to %s: %s", k->addr, strerror(en));
        return;
    }
    struct conn *c = conn_new(e, fd, R_KID);
    if (!c) {
        kid_fail(k, "connecting to %s: out of memory", k->addr);
        return;
    }
    snprintf(c->peer, sizeof(c->peer), "%s", k->addr);
    c->connecting = 1;
    c->kid = k;
    k->c = c;
    k->state = K_CONNECT;
}

static void kid_fail(struct kid *k, const char *fmt, ...)
{
    struct session *s = k->s;
    if (k->state == K_DONE || k->state == K_FAILED)
        return;
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (k->c)
        conn_close(k->c);
    k->state = K_FAILED;
    json_decref(k->entries);
    k->entries = json_pack("[{s:i, s:b, s:s, s:I, s:I}]", "i", k->idx, "ok", 0, "reason", why,
                           "bytes", (json_int_t)k->own, "ms", (json_int_t)0);
    size_t n = json_array_size(k->sub);
    elog(s->e, "image %.12s: node %s failed (%s)%s", s->digest, k->addr, why,
         n ? "; taking over its children" : "");
    /* Adopt its children: they keep what they have and continue from us. */
    json_t *sub = json_incref(k->sub);
    size_t i;
    json_t *c;
    json_array_foreach(sub, i, c) kid_add(s, c);
    json_decref(sub);
    session_progress(s);
}

/* The next chunk for kid k, if the session has it; 1 when one was set up. */
static int kid_next_chunk(struct kid *k)
{
    struct session *s = k->s;
    struct conn *c = k->c;
    while (k->bi < s->nb && k->have[k->bi] >= s->b[k->bi].size)
        k->bi++;
    if (k->bi == s->nb) {
        k->state = K_REPORT;
        session_progress(s);
        return 0;
    }
    struct blob *b = &s->b[k->bi];
    uint64_t off = k->have[k->bi];
    if (b->have <= off || b->rfd < 0)
        return 0; /* not here yet */
    uint32_t len = chunk_len(s, b, off);
    unsigned char *h = c->chdr;
    put32(h, VHPC_DIST_MAGIC);
    h[4] = VHPC_DIST_CHUNK;
    h[5] = h[6] = h[7] = 0;
    put32(h + 8, VHPC_DIST_CHUNK_HDR + len);
    uint32_t sum = 0;
    int r = chunk_sum(s, b, off / s->chunk, &sum);
    if (r < 0) {
        if (r == -EBADMSG)
            session_fail(s,
                         "blob %.12s (%s) in the local store is damaged: its bytes do not "
                         "hash to its name; build or pull the image again",
                         b->digest, b->role);
        else
            session_fail(s, "reading blob %.12s: %s", b->digest, strerror(-r));
        return 0;
    }
    put32(h + 12, (uint32_t)k->bi);
    put32(h + 16, sum);
    put64(h + 20, off);
    c->chunk_active = 1;
    c->chdr_off = 0;
    c->cfd = b->rfd;
    c->coff = (off_t)off;
    c->crem = len;
    k->have[k->bi] += len;
    k->sent += len;
    return 1;
}

/* Give every kid that waits for data what the session now has. */
static void session_kick(struct session *s)
{
    for (size_t i = 0; i < s->nkids && !s->dead; i++) {
        struct kid *k = s->kids[i];
        if (k->state == K_SEND && k->c && !k->c->chunk_active)
            conn_flush(k->c);
    }
}

/* ---- output ---------------------------------------------------------------- */

static void conn_flush(struct conn *c)
{
    struct engine *e = c->e;
    while (!c->dead && !c->connecting) {
        if (c->chunk_active) {
            if (c->chdr_off < sizeof(c->chdr)) {
                ssize_t n = send(c->fd, c->chdr + c->chdr_off, sizeof(c->chdr) - c->chdr_off,
                                 MSG_NOSIGNAL | MSG_MORE);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        return;
                    conn_lost(c, strerror(errno));
                    return;
                }
                c->chdr_off += (size_t)n;
                c->last_tx = e->now;
                continue;
            }
            if (c->crem > 0) {
                ssize_t n = sendfile(c->fd, c->cfd, &c->coff, c->crem);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        return;
                    conn_lost(c, strerror(errno));
                    return;
                }
                if (n == 0) {
                    conn_lost(c, "the blob file ended early");
                    return;
                }
                c->crem -= (size_t)n;
                c->last_tx = e->now;
                if (c->kid)
                    c->kid->since = e->now;
                continue;
            }
            c->chunk_active = 0;
            continue;
        }
        if (c->qhead) {
            struct obuf *b = c->qhead;
            ssize_t n = send(c->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return;
                conn_lost(c, strerror(errno));
                return;
            }
            c->last_tx = e->now;
            b->off += (size_t)n;
            if (b->off == b->len) {
                c->qhead = b->next;
                if (!c->qhead)
                    c->qtail = NULL;
                free(b);
            }
            continue;
        }
        if (c->kid && c->kid->state == K_SEND && kid_next_chunk(c->kid))
            continue;
        if (c->close_after_flush) {
            /* A pull whose answer we refused goes on with the next node
             * (conn_lost does that); anything else just ends. */
            if (c->is_pull)
                conn_lost(c, c->closing_why[0] ? c->closing_why : "refused its answer");
            else
                conn_close(c);
        }
        return;
    }
}

/* ---- receiving ------------------------------------------------------------- */

struct commit_job {
    struct session *s;
    size_t bi;
    struct vhpc_blob_writer w;
    char hex[65]; /* the sha256 of the bytes written, in order */
    struct vhpc_store *st;
    int r;
    vhpc_err_t err;
    int wake;
};

static void *commit_thread(void *arg)
{
    struct commit_job *j = arg;
    /* Committing (close, rename, maybe waiting for the store's lock) is
     * nobody's critical path; forwarding chunks (which the nodes below wait
     * for) is: let the loop have the CPU first. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    j->r = vhpc_store_blob_commit_hashed(j->st, &j->w, j->hex, &j->err);
    while (write(j->wake, &j, sizeof(j)) < 0 && errno == EINTR)
        ;
    return NULL;
}

static void start_commit(struct session *s, size_t bi)
{
    struct blob *b = &s->b[bi];
    struct commit_job *j = calloc(1, sizeof(*j));
    pthread_t t;
    pthread_attr_t at;
    if (!j) {
        session_fail(s, "committing blob %.12s: out of memory", b->digest);
        return;
    }
    j->s = s;
    j->bi = bi;
    j->w = b->w;
    /* The loop hashed every chunk as it wrote it (in order); a blob must be
     * whole before it commits, so the hash is the blob's. */
    if (b->full_off != b->size) {
        free(j);
        session_fail(s, "blob %.12s: %" PRIu64 " of %" PRIu64 " bytes hashed at commit", b->digest,
                     b->full_off, b->size);
        return;
    }
    vhpc_sha256_hex(&b->full, j->hex);
    /* Its bytes leave the room of blobs being received: session_tmp
     * counts them until they are in blobs/ (the store's usage). */
    s->tmp_bytes -= b->size < s->tmp_bytes ? b->size : s->tmp_bytes;
    s->reserved -= b->size < s->reserved ? b->size : s->reserved;
    j->st = s->e->st;
    j->wake = s->e->wake[1];
    b->state = B_COMMIT;
    s->pending++;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &at, commit_thread, j);
    pthread_attr_destroy(&at);
    if (r) {
        s->pending--;
        b->state = B_RECV;
        free(j);
        session_fail(s, "committing blob %.12s: %s", b->digest, strerror(r));
    }
}

/* Every blob is in the store: record the manifest and the name. */
static void session_finish_own(struct session *s)
{
    struct engine *e = s->e;
    vhpc_err_t err = {0};
    /* Never wait for the store's lock in the loop (every other client
     * would wait too): try, and again from timers() for LOCK_WAIT_MS. */
    int r = vhpc_store_trylock(e->st, &err);
    if (r == -EWOULDBLOCK) {
        if (!s->lock_wait) {
            s->lock_wait = e->now;
            elog(e, "image %.12s: %s; waiting up to %d s", s->digest, err.msg, LOCK_WAIT_MS / 1000);
        }
        if (e->now - s->lock_wait < LOCK_WAIT_MS)
            return;
        session_fail(s, "storing image %.12s: %s for %d s; try again once it is released",
                     s->digest, err.msg, LOCK_WAIT_MS / 1000);
        return;
    }
    s->lock_wait = 0;
    if (r == 0) {
        r = vhpc_store_put_manifest_raw(e->st, s->digest, s->manifest, s->mlen, &err);
        if (r == 0 && s->name[0])
            r = vhpc_store_bind(e->st, s->name, s->version, s->digest, NULL, &err);
        vhpc_store_unlock(e->st);
    }
    if (r < 0) {
        session_fail(s, "storing image %.12s: %s", s->digest, err.msg);
        return;
    }
    vhpc_store_touch(e->st, s->digest);
    s->own = 1;
    s->t_done = e->now;
    if (s->need)
        elog(e, "image %.12s (%s:%d): received %" PRIu64 " bytes in %.2f s", s->digest, s->name,
             s->version, s->bytes_in, (double)(s->t_done - s->t0) / 1000);
}

static void on_commit_done(struct commit_job *j)
{
    struct session *s = j->s;
    struct blob *b = &s->b[j->bi];
    s->pending--;
    b->w.fd = -1;
    b->w.tmp[0] = 0;
    if (s->dead) {
        b->state = B_GONE;
        return;
    }
    if (j->r < 0) {
        b->state = B_GONE;
        session_fail(s, "%s", j->err.msg);
        return;
    }
    b->state = B_HAVE;
    for (size_t i = 0; i < s->nb; i++)
        if (s->b[i].state != B_HAVE)
            return;
    session_finish_own(s);
    session_progress(s);
}

/* Make room for dlen more bytes of blob b before they are written: within
 * the cache budget (evicting least recently used images, a step at a
 * time) and the store's free space, the blocks allocated ahead (writing
 * into allocated blocks costs half of ext4's delayed allocation).  Only
 * bytes that arrived, CRC-checked, get room: a size a sender declares
 * reserves and evicts nothing.  -1 when the session failed. */
#define RESERVE_STEP (16u << 20)

/* Bytes a session holds outside blobs/ (what the store's usage does not
 * count yet): blobs being received, and those committing until their
 * rename. */
static uint64_t session_tmp(const struct session *o)
{
    uint64_t t = 0;
    for (size_t i = 0; i < o->nb; i++) {
        const struct blob *b = &o->b[i];
        if (b->state == B_RECV)
            t += b->have;
        else if (b->state == B_COMMIT && !vhpc_store_has_blob(o->e->st, b->digest))
            t += b->size;
    }
    return t;
}
static int session_room(struct session *s, struct blob *b, size_t dlen)
{
    struct engine *e = s->e;
    if (s->tmp_bytes + dlen <= s->reserved) {
        s->tmp_bytes += dlen;
        return 0;
    }
    uint64_t step = dlen > RESERVE_STEP ? dlen : RESERVE_STEP, pending = 0;
    if (step > b->size - b->have)
        step = b->size - b->have;
    if (step < dlen)
        step = dlen;
    for (struct session *o = e->sessions; o; o = o->next)
        if (!o->dead && !o->source)
            pending += session_tmp(o) + (o == s ? 0 : o->reserved - o->tmp_bytes);
    uint64_t budget = vhpc_store_budget(e->st);
    vhpc_err_t err = {0};
    if (budget && vhpc_store_usage(e->st) + pending + step > budget) {
        struct vhpc_gc_stats gs = {0};
        int r = vhpc_store_trylock(e->st, &err);
        if (r == 0) {
            r = vhpc_store_make_room(e->st, pending + step, s->digest, &gs, &err);
            vhpc_store_unlock(e->st);
        }
        if (gs.images)
            elog(e, "evicted %u images (%" PRIu64 " bytes) to make room", gs.images, gs.bytes);
        if (r < 0) {
            session_fail(s, "no room for image %.12s: %s", s->digest, err.msg);
            return -1;
        }
    }
    if (fallocate(b->w.fd, 0, (off_t)b->have, (off_t)step) < 0 && errno == ENOSPC) {
        session_fail(s, "no room for blob %.12s (%" PRIu64 " bytes) in %s", b->digest, b->size,
                     vhpc_store_dir(e->st));
        return -1;
    }
    s->reserved = s->tmp_bytes + step;
    s->tmp_bytes += dlen;
    return 0;
}

static void handle_chunk(struct session *s, const unsigned char *p, size_t len)
{
    if (len < VHPC_DIST_CHUNK_HDR) {
        session_fail(s, "a CHUNK frame of %zu bytes is too short", len);
        return;
    }
    uint32_t bi = get32(p), want = get32(p + 4);
    uint64_t off = get64(p + 8);
    const unsigned char *data = p + VHPC_DIST_CHUNK_HDR;
    size_t dlen = len - VHPC_DIST_CHUNK_HDR;
    if (bi >= s->nb) {
        session_fail(s, "a chunk for blob %u, the image has %zu", bi, s->nb);
        return;
    }
    struct blob *b = &s->b[bi];
    if (b->state != B_RECV || off != b->have || dlen != chunk_len(s, b, off) || dlen == 0) {
        session_fail(s,
                     "an unexpected chunk (blob %.12s, offset %" PRIu64 ", %zu bytes; this "
                     "node has %" PRIu64 " of %" PRIu64 " bytes)",
                     b->digest, off, dlen, b->have, b->size);
        return;
    }
    if (vhpc_crc32c(0, data, dlen) != want) {
        session_fail(s,
                     "the chunk at offset %" PRIu64 " of blob %.12s arrived damaged (its "
                     "CRC-32C differs from the sender's)",
                     off, b->digest);
        return;
    }
    if (session_room(s, b, dlen) < 0)
        return;
    /* In order (off == have, checked above): the blob's hash so far. */
    vhpc_sha256_update(&b->full, data, dlen);
    b->full_off += dlen;
    for (size_t done = 0; done < dlen;) {
        ssize_t n = pwrite(b->w.fd, data + done, dlen - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            session_fail(s, "writing blob %.12s into the store: %s", b->digest, strerror(errno));
            return;
        }
        done += (size_t)n;
    }
    uint64_t k = off / s->chunk; /* < nchunks: off < size, checked above */
    b->crc[k] = want;
    b->crk[k] = 1;
    b->have += dlen;
    s->bytes_in += dlen;
    if (b->have == b->size) {
        elog(s->e, "image %.12s: %s blob %.12s received (%" PRIu64 " bytes, %.2f s)", s->digest,
             b->role, b->digest, b->size, (double)(s->e->now - s->t0) / 1000);
        start_commit(s, bi);
    }
    session_kick(s);
}

/* ---- sessions: life cycle ------------------------------------------------ */

static void session_fail(struct session *s, const char *fmt, ...)
{
    if (s->dead || s->own == -1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
    va_end(ap);
    s->own = -1;
    elog(s->e, "image %.12s: %s", s->digest, s->reason);
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        if (b->state == B_RECV) {
            vhpc_store_blob_abort(&b->w);
            b->state = B_GONE;
        }
    }
    if (s->up) {
        struct conn *up = s->up;
        conn_send_error(up, s->reason);
        up->sess = NULL;
        up->role = R_LINGER;
        s->up = NULL;
    }
    if (s == s->e->client)
        s->e->client_done = 1;
    else
        session_release(s);
}

static json_t *own_entry(struct session *s)
{
    return json_pack("{s:i, s:b, s:s, s:I, s:I}", "i", s->self, "ok", 1, "reason", "", "bytes",
                     (json_int_t)s->bytes_in, "ms", (json_int_t)(s->t_done - s->t0));
}

/* Move a session on: start kids waiting their turn, report when all is
 * done. */
static void session_progress(struct session *s)
{
    if (s->dead || s->own == -1)
        return;
    size_t active = 0, open = 0;
    for (size_t i = 0; i < s->nkids; i++) {
        enum kid_state st = s->kids[i]->state;
        if (st == K_CONNECT || st == K_HELLO || st == K_SEND)
            active++;
        if (st != K_DONE && st != K_FAILED)
            open++;
    }
    if (s->seq && s->own == 1 && active == 0) {
        for (size_t i = 0; i < s->nkids; i++) {
            if (s->kids[i]->state == K_WAIT) {
                kid_start(s->kids[i]);
                if (s->dead)
                    return;
                if (s->kids[i]->state != K_FAILED)
                    break;
            }
        }
        /* kid_start may have failed kids and adopted others */
        open = 0;
        for (size_t i = 0; i < s->nkids; i++)
            if (s->kids[i]->state != K_DONE && s->kids[i]->state != K_FAILED)
                open++;
    }
    if (s->own != 1 || open > 0 || s->reported)
        return;
    /* Everything below us is done. */
    if (s == s->e->client) {
        s->reported = 1;
        s->e->client_done = 1;
        if (s->up) {
            json_t *nodes = json_array();
            json_array_append_new(nodes, own_entry(s));
            conn_send_json(s->up, VHPC_DIST_REPORT, json_pack("{s:o}", "nodes", nodes));
        }
        return;
    }
    if (s->source) {
        s->reported = 1;
        session_release(s);
        return;
    }
    if (!s->up)
        return; /* wait for whoever takes us over */
    json_t *nodes = json_array();
    json_array_append_new(nodes, own_entry(s));
    for (size_t i = 0; i < s->nkids; i++)
        json_array_extend(nodes, s->kids[i]->entries);
    struct conn *up = s->up;
    conn_send_json(up, VHPC_DIST_REPORT, json_pack("{s:o}", "nodes", nodes));
    s->reported = 1;
    up->role = R_LINGER;
    up->since = s->e->now;
    session_release(s);
}

/* Open the session's blobs for reading from the store (all verified);
 * -ENOENT / -EBADMSG when one is missing or damaged (and was removed). */
static int open_store_blobs(struct session *s, int verify, vhpc_err_t *err)
{
    struct engine *e = s->e;
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        char p[PATH_MAX];
        if (!vhpc_store_has_blob(e->st, b->digest))
            return vhpc_err_setmsg(err, -ENOENT, "its %s blob %.12s is missing here", b->role,
                                   b->digest);
        if (verify) {
            int r = vhpc_store_verify_blob(e->st, b->digest, err);
            if (r < 0)
                return r;
        }
        vhpc_store_blob_path(e->st, b->digest, p, sizeof(p));
        b->rfd = open(p, O_RDONLY | O_CLOEXEC);
        if (b->rfd < 0)
            return vhpc_err_set(err, -errno, "opening %s", p);
        b->have = b->size;
        b->state = B_HAVE;
        if (!verify) {
            b->check_full = 1;
            vhpc_sha256_init(&b->full);
        }
        if (blob_set_chunking(s, b) < 0)
            return vhpc_err_set(err, -ENOMEM, "opening blob %.12s", b->digest);
    }
    return 0;
}

/* A session for an image of the local store (a pusher, or a node answering
 * a pull).  verify: re-hash the blobs first (else while they go out). */
static struct session *session_from_store(struct engine *e, const struct vhpc_ref *ref, int verify,
                                          vhpc_err_t *err)
{
    struct session *s = session_alloc(e);
    if (!s) {
        vhpc_err_set(err, -ENOMEM, "starting a transfer");
        return NULL;
    }
    s->source = 1;
    s->own = 1;
    snprintf(s->digest, sizeof(s->digest), "%s", ref->digest);
    snprintf(s->name, sizeof(s->name), "%s", ref->name);
    s->version = ref->version;
    s->chunk = 1 << 20;
    s->timeout_ms = 30000;
    int r = vhpc_store_get_manifest_raw(e->st, ref->digest, &s->manifest, &s->mlen, err);
    if (r == 0)
        r = manifest_blobs(s->manifest, s->mlen, &s->b, &s->nb, err);
    if (r == 0)
        r = fds_admit(e, s->nb, err);
    if (r == 0)
        r = open_store_blobs(s, verify, err);
    if (r < 0) {
        vhpc_err_wrap(err, "image %s:%d (%.12s)", ref->name, ref->version, ref->digest);
        session_release(s);
        return NULL;
    }
    return s;
}

static json_t *state_msg(struct session *s)
{
    json_t *have = json_array();
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        uint64_t h = b->have == b->size ? b->size : b->have / s->chunk * s->chunk;
        json_array_append_new(have, json_integer((json_int_t)h));
    }
    return json_pack("{s:o}", "have", have);
}

struct push_req {
    const char *digest, *name;
    int version, timeout_ms, seq, self;
    uint32_t chunk;
    json_t *children;
};

static int parse_push(json_t *j, struct push_req *p, vhpc_err_t *err)
{
    json_t *chunk = json_object_get(j, "chunk"), *to = json_object_get(j, "timeout_ms");
    int count = 0;
    memset(p, 0, sizeof(*p));
    p->digest = json_string_value(json_object_get(j, "digest"));
    p->name = json_string_value(json_object_get(j, "name"));
    p->version = (int)json_integer_value(json_object_get(j, "version"));
    p->seq = json_is_true(json_object_get(j, "seq"));
    p->self = (int)json_integer_value(json_object_get(j, "self"));
    p->children = json_object_get(j, "children");
    if (json_integer_value(json_object_get(j, "v")) != VHPC_DIST_VERSION)
        return vhpc_err_setmsg(err, -EPROTO, "PUSH of an unknown protocol version");
    if (!vhpc_is_digest(p->digest))
        return vhpc_err_setmsg(err, -EPROTO, "PUSH without a valid image digest");
    if (!p->name || (p->name[0] && !vhpc_valid_name(p->name)) || p->version < 0)
        return vhpc_err_setmsg(err, -EPROTO, "PUSH with an invalid name or version");
    if (!json_is_integer(chunk) || json_integer_value(chunk) < VHPC_DIST_MIN_CHUNK ||
        json_integer_value(chunk) > VHPC_DIST_MAX_CHUNK)
        return vhpc_err_setmsg(err, -EPROTO, "PUSH with an invalid chunk size");
    p->chunk = (uint32_t)json_integer_value(chunk);
    p->timeout_ms = json_is_integer(to) ? (int)json_integer_value(to) : 30000;
    if (p->timeout_ms < 100 || p->timeout_ms > 3600000)
        p->timeout_ms = 30000;
    if (p->children && !tree_ok(p->children, 0, &count))
        return vhpc_err_setmsg(err, -EPROTO, "PUSH with an invalid tree of children");
    return 0;
}

/* Whether `need` more bytes can fit at all: within the cache budget and
 * the store's file system (before anything is reserved or evicted). */
static int check_room(struct engine *e, const struct session *s, uint64_t need, vhpc_err_t *err)
{
    uint64_t budget = vhpc_store_budget(e->st);
    struct statvfs sv;
    if (budget && need > budget)
        return vhpc_err_setmsg(err, -ENOSPC,
                               "image %.12s needs %" PRIu64 " bytes, more than the cache budget "
                               "of %" PRIu64 " bytes (raise it with --budget)",
                               s->digest, need, budget);
    if (statvfs(vhpc_store_dir(e->st), &sv) == 0 && need / sv.f_frsize >= (uint64_t)sv.f_bavail)
        return vhpc_err_setmsg(
            err, -ENOSPC, "image %.12s needs %" PRIu64 " bytes, %s has %" PRIu64 " free", s->digest,
            need, vhpc_store_dir(e->st), (uint64_t)sv.f_bavail * sv.f_frsize);
    return 0;
}

/* A new receiving session: verify what the store has, make room for the
 * rest, open files for it. */
static struct session *session_receive(struct engine *e, const struct push_req *p,
                                       const char *manifest, size_t mlen, vhpc_err_t *err)
{
    struct session *s = session_alloc(e);
    if (!s) {
        vhpc_err_set(err, -ENOMEM, "starting a transfer");
        return NULL;
    }
    snprintf(s->digest, sizeof(s->digest), "%s", p->digest);
    snprintf(s->name, sizeof(s->name), "%s", p->name);
    s->version = p->version;
    s->chunk = p->chunk;
    s->timeout_ms = p->timeout_ms;
    s->seq = p->seq;
    s->self = p->self;
    s->manifest = malloc(mlen + 1);
    int r = s->manifest ? 0 : vhpc_err_set(err, -ENOMEM, "receiving a manifest");
    if (r == 0) {
        memcpy(s->manifest, manifest, mlen);
        s->manifest[mlen] = 0;
        s->mlen = mlen;
        r = manifest_blobs(manifest, mlen, &s->b, &s->nb, err);
    }
    if (r == 0)
        r = check_chunking(s->b, s->nb, s->chunk, err);
    if (r == 0)
        r = fds_admit(e, s->nb, err);
    /* What is here already counts only once re-hashed: a damaged blob is
     * removed by the check and received again. */
    uint64_t need = 0;
    for (size_t i = 0; r == 0 && i < s->nb; i++) {
        struct blob *b = &s->b[i];
        vhpc_err_t e2 = {0};
        b->state = B_GONE;
        if (vhpc_store_has_blob(e->st, b->digest)) {
            if (vhpc_store_verify_blob(e->st, b->digest, &e2) == 0)
                b->state = B_HAVE;
            else
                elog(e, "image %.12s: %s", s->digest, e2.msg);
        }
        if (b->state != B_HAVE)
            need += b->size;
    }
    if (r == 0)
        r = check_room(e, s, need, err);
    /* Nothing is reserved or evicted yet: that happens as bytes arrive
     * (session_room), so a sender that lies about sizes costs this node
     * only what it really sends. */
    for (size_t i = 0; r == 0 && i < s->nb; i++) {
        struct blob *b = &s->b[i];
        char p2[PATH_MAX];
        if (b->state == B_HAVE) {
            vhpc_store_blob_path(e->st, b->digest, p2, sizeof(p2));
            b->have = b->size;
        } else {
            r = vhpc_store_blob_begin(e->st, b->digest, b->size, &b->w, err);
            if (r < 0)
                break;
            b->state = B_RECV;
            vhpc_sha256_init(&b->full);
            b->full_off = 0;
            snprintf(p2, sizeof(p2), "%s", b->w.tmp);
            s->need += b->size;
        }
        b->rfd = open(p2, O_RDONLY | O_CLOEXEC);
        if (b->rfd < 0)
            r = vhpc_err_set(err, -errno, "opening %s", p2);
        else if (blob_set_chunking(s, b) < 0)
            r = vhpc_err_set(err, -ENOMEM, "receiving");
        if (r == 0 && b->state == B_RECV && b->size == 0)
            start_commit(s, i);
    }
    if (r < 0) {
        for (size_t i = 0; i < s->nb; i++)
            blob_release(&s->b[i]);
        s->nb = 0;
        session_release(s);
        return NULL;
    }
    return s;
}

/* Whether a server has the descriptors for a transfer of nb blobs (two
 * per blob and the link), keeping a margin for new connections; else an
 * error for that request (rather than "Too many open files" anywhere). */
static int fds_admit(struct engine *e, size_t nb, vhpc_err_t *err)
{
    if (e->lfd < 0)
        return 0;
    struct rlimit rl;
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        while (readdir(d))
            fds++;
        closedir(d);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)fds + 2 * nb + 2 + FD_MARGIN > rl.rlim_cur)
        return vhpc_err_setmsg(err, -EMFILE,
                               "this node is busy: %d of its %llu descriptors in use; try again "
                               "later",
                               fds, (unsigned long long)rl.rlim_cur);
    return 0;
}

/* Whether a server may start one more transfer: within --max-sessions;
 * else an error for that request. */
static int session_admit(struct engine *e, vhpc_err_t *err)
{
    if (e->lfd < 0)
        return 0; /* a pusher or a puller: its own one transfer */
    int n = 0;
    struct session *orphan = NULL;
    for (struct session *s = e->sessions; s; s = s->next) {
        if (s->dead)
            continue;
        n++;
        if (!s->up && !s->source && s->orphan_since && !s->pending &&
            (!orphan || s->orphan_since < orphan->orphan_since))
            orphan = s;
    }
    /* A transfer whose sender is gone (waiting for a take-over) gives way
     * to a live one at once: its space and descriptors go back. */
    if (n >= e->lim.max_sessions && orphan) {
        session_fail(orphan, "its sender is gone and a new transfer needs its place");
        n--;
    }
    if (n >= e->lim.max_sessions)
        return vhpc_err_setmsg(err, -EBUSY,
                               "this node is busy: %d transfers at once (--max-sessions); try "
                               "again later",
                               n);
    return 0;
}

/* A push never rebinds a name:version that points at another image. */
static int no_rebind(struct engine *e, const struct push_req *p, vhpc_err_t *err)
{
    char ref[160];
    struct vhpc_ref got;
    vhpc_err_t e2 = {0};
    if (!p->name[0] || p->version <= 0)
        return 0;
    snprintf(ref, sizeof(ref), "%s:%d", p->name, p->version);
    if (vhpc_store_resolve(e->st, ref, &got, &e2) < 0 || !strcmp(got.digest, p->digest))
        return 0;
    return vhpc_err_setmsg(err, -EEXIST,
                           "%s is already image %.12s on this node; a version is never rebound "
                           "(tag the image as a new version and push that)",
                           ref, got.digest);
}

/* Whether a node's answer to our PULL of `ref` is the image we asked for:
 * the puller decides the name it is stored under, never the node.  NAME:
 * that name (any version), NAME:VERSION: exactly that, NAME@PREFIX: that
 * name and a digest that starts so.  A bare digest prefix names nothing to
 * store it under, so it is refused too (unless it is also the name). */
static int pull_reply_ok(const char *ref, const struct push_req *p, char *why, size_t len)
{
    const char *at = strchr(ref, '@'), *colon = strchr(ref, ':');
    size_t nl = at ? (size_t)(at - ref) : colon ? (size_t)(colon - ref) : strlen(ref);
    int name_ok = strlen(p->name) == nl && !strncmp(p->name, ref, nl);
    int ok = name_ok;
    if (ok && colon && !at)
        ok = p->version == atoi(colon + 1);
    if (ok && at)
        ok = at[1] && !strncasecmp(p->digest, at + 1, strlen(at + 1));
    if (ok)
        return 1;
    if (!at && !colon && !strncasecmp(p->digest, ref, strlen(ref)))
        snprintf(why, len,
                 "it answered a pull of '%s' with %s:%d (%.12s); say which name to store it "
                 "under: NAME@%s",
                 ref, p->name, p->version, p->digest, ref);
    else
        snprintf(why, len, "it answered a pull of '%s' with another image, %s:%d (%.12s); refused",
                 ref, p->name, p->version, p->digest);
    return 0;
}

/* A PUSH (with its manifest) arrived on c: start or continue receiving. */
static void handle_push(struct conn *c, json_t *pj, const char *manifest, size_t mlen)
{
    struct engine *e = c->e;
    struct push_req p;
    vhpc_err_t err = {0};
    if (parse_push(pj, &p, &err) < 0) {
        conn_send_error(c, err.msg);
        return;
    }
    unsigned char raw[32];
    char hex[65];
    sha256_raw(manifest, mlen, raw);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    if (strcmp(hex, p.digest) != 0) {
        conn_send_error(c, "the manifest does not hash to the image digest");
        return;
    }
    if (e->lfd >= 0 && (may_write(e, c->uid, p.name, &err) < 0 || no_rebind(e, &p, &err) < 0)) {
        elog(e, "image %.12s (%s:%d) from %s: %s", p.digest, p.name, p.version, c->peer, err.msg);
        conn_send_error(c, err.msg);
        return;
    }
    char why[512];
    if (c->is_pull && e->client && strcmp(e->client->digest, p.digest) != 0)
        snprintf(why, sizeof(why), "it answered with image %.12s, not %.12s (the one under way)",
                 p.digest, e->client->digest);
    if (c->is_pull && ((e->client && strcmp(e->client->digest, p.digest) != 0) ||
                       !pull_reply_ok(e->pull_ref, &p, why, sizeof(why)))) {
        conn_send_error(c, why);
        conn_lost(c, why);
        return;
    }
    struct session *s = session_find(e, p.digest);
    if (s && e->lfd >= 0 && s->uid != c->uid && !privileged(e, c->uid)) {
        conn_send_error(c, "this image is under way for another user");
        return;
    }
    if (s) {
        /* Taken over (our sender failed), or the same image again. */
        if (s->up && s->up != c) {
            struct conn *old = s->up;
            conn_send_error(old, "another sender took over this transfer");
            old->sess = NULL;
            old->role = R_LINGER;
        }
        if (p.chunk != s->chunk) {
            if (check_chunking(s->b, s->nb, p.chunk, &err) < 0) {
                conn_send_error(c, err.msg);
                return;
            }
            s->chunk = p.chunk;
            for (size_t i = 0; i < s->nb; i++) {
                struct blob *b = &s->b[i];
                if (b->state == B_RECV)
                    b->have = b->have / s->chunk * s->chunk;
                if (blob_set_chunking(s, b) < 0) {
                    conn_send_error(c, "out of memory");
                    session_fail(s, "re-chunking: out of memory");
                    return;
                }
            }
        }
        s->timeout_ms = p.timeout_ms;
        s->self = p.self;
        s->orphan_since = 0;
        elog(e, "image %.12s: %s takes over sending", s->digest, c->peer);
    } else {
        if (session_admit(e, &err) < 0) {
            elog(e, "image %.12s from %s: %s", p.digest, c->peer, err.msg);
            conn_send_error(c, err.msg);
            return;
        }
        s = session_receive(e, &p, manifest, mlen, &err);
        if (s)
            s->uid = c->uid;
        if (!s) {
            elog(e, "image %.12s from %s: %s", p.digest, c->peer, err.msg);
            conn_send_error(c, err.msg);
            return;
        }
        elog(e, "image %.12s (%s:%d) from %s: %zu blobs, %" PRIu64 " bytes to receive", s->digest,
             s->name, s->version, c->peer, s->nb, s->need);
        if (e->pull_ref && !e->client) {
            e->client = s;
            if (e->prog)
                e->prog->total = s->need;
        }
    }
    s->up = c;
    c->sess = s;
    c->role = R_UP;
    /* Align what we have with the sender's chunks. */
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        if (b->state == B_RECV)
            b->have = b->have / s->chunk * s->chunk;
    }
    conn_send_json(c, VHPC_DIST_STATE, state_msg(s));
    size_t i;
    json_t *ch;
    json_array_foreach(p.children, i, ch) kid_add(s, ch);
    int all = 1;
    for (size_t j = 0; j < s->nb; j++)
        all &= s->b[j].state == B_HAVE;
    if (all && s->own == 0)
        session_finish_own(s);
    session_progress(s);
}

/* ---- requests on a fresh connection -------------------------------------- */

static int resolve_verified(struct engine *e, const char *ref, struct vhpc_ref *out,
                            vhpc_err_t *err)
{
    int r = vhpc_store_resolve(e->st, ref, out, err);
    if (r < 0)
        return r;
    struct session tmp = {.e = e, .chunk = 1 << 20};
    r = vhpc_store_get_manifest_raw(e->st, out->digest, &tmp.manifest, &tmp.mlen, err);
    if (r == 0)
        r = manifest_blobs(tmp.manifest, tmp.mlen, &tmp.b, &tmp.nb, err);
    for (size_t i = 0; r == 0 && i < tmp.nb; i++) {
        struct blob *b = &tmp.b[i];
        if (!vhpc_store_has_blob(e->st, b->digest))
            r = vhpc_err_setmsg(err, -ENOENT, "its %s blob %.12s is missing here", b->role,
                                b->digest);
        else
            r = vhpc_store_verify_blob(e->st, b->digest, err);
    }
    free(tmp.b);
    free(tmp.manifest);
    if (r < 0)
        vhpc_err_wrap(err, "image %s", ref);
    return r;
}

static void handle_query(struct conn *c, json_t *j)
{
    struct engine *e = c->e;
    const char *ref = json_string_value(json_object_get(j, "ref"));
    struct vhpc_ref got;
    vhpc_err_t err = {0};
    if (!ref) {
        conn_send_error(c, "QUERY without \"ref\"");
        return;
    }
    /* Who may read it first: nobody makes the node re-hash what they may
     * not see. */
    if (vhpc_store_resolve(e->st, ref, &got, &err) == 0 && !may_read(e, c->uid, got.name))
        vhpc_err_setmsg(&err, -ENOENT, "no image '%s' that uid %u may read here", ref,
                        (unsigned)c->uid);
    else if (err.code == 0)
        resolve_verified(e, ref, &got, &err);
    if (err.code < 0) {
        elog(e, "query from %s: %s", c->peer, err.msg);
        conn_send_json(c, VHPC_DIST_HAVE, json_pack("{s:b, s:s}", "have", 0, "reason", err.msg));
    } else {
        conn_send_json(c, VHPC_DIST_HAVE,
                       json_pack("{s:b, s:s, s:s, s:i}", "have", 1, "digest", got.digest, "name",
                                 got.name, "version", got.version));
    }
    c->role = R_LINGER;
    c->since = e->now;
}

static void handle_pull(struct conn *c, json_t *j)
{
    struct engine *e = c->e;
    const char *ref = json_string_value(json_object_get(j, "ref"));
    struct vhpc_ref got;
    vhpc_err_t err = {0};
    if (!ref) {
        conn_send_error(c, "PULL without \"ref\"");
        return;
    }
    struct session *s = NULL;
    if (session_admit(e, &err) == 0 && vhpc_store_resolve(e->st, ref, &got, &err) == 0) {
        if (!may_read(e, c->uid, got.name))
            vhpc_err_setmsg(&err, -ENOENT, "no image '%s' that uid %u may read here", ref,
                            (unsigned)c->uid);
        else
            s = session_from_store(e, &got, 1, &err);
    }
    if (!s) {
        elog(e, "pull from %s: %s", c->peer, err.msg);
        conn_send_error(c, err.msg);
        return;
    }
    json_int_t to = json_integer_value(json_object_get(j, "timeout_ms"));
    if (to >= 100 && to <= 3600000)
        s->timeout_ms = (int)to;
    vhpc_store_touch(e->st, got.digest);
    elog(e, "image %.12s (%s:%d): sending it to %s, who pulls it", got.digest, got.name,
         got.version, c->peer);
    json_t *node = json_pack("{s:i, s:s, s:[]}", "i", 0, "addr", c->peer, "children");
    s->seq = 1; /* the kid is connected already: it starts below */
    struct kid *k = kid_add(s, node);
    json_decref(node);
    if (!k) {
        session_release(s);
        conn_send_error(c, "out of memory");
        return;
    }
    k->c = c;
    c->kid = k;
    c->role = R_KID;
    kid_hello(k);
}

/* ---- frames from a kid ------------------------------------------------------ */

static void kid_frame(struct kid *k, int type, json_t *j)
{
    struct session *s = k->s;
    k->since = s->e->now;
    switch (type) {
    case VHPC_DIST_STATE: {
        if (k->state != K_HELLO)
            break;
        const char *error = json_string_value(json_object_get(j, "error"));
        json_t *have = json_object_get(j, "have");
        if (error) {
            kid_fail(k, "%s", error);
            return;
        }
        if (json_array_size(have) != s->nb) {
            kid_fail(k, "it answered with a malformed STATE");
            return;
        }
        for (size_t i = 0; i < s->nb; i++) {
            json_int_t h = json_integer_value(json_array_get(have, i));
            uint64_t v = h < 0 ? 0 : (uint64_t)h;
            if (v > s->b[i].size)
                v = s->b[i].size;
            if (v != s->b[i].size)
                v = v / s->chunk * s->chunk;
            k->have[i] = v;
        }
        k->bi = 0;
        k->state = K_SEND;
        conn_flush(k->c);
        return;
    }
    case VHPC_DIST_PROGRESS:
        k->own = (uint64_t)json_integer_value(json_object_get(j, "own"));
        k->subtree = (uint64_t)json_integer_value(json_object_get(j, "sub"));
        return;
    case VHPC_DIST_REPORT: {
        json_t *nodes = json_object_get(j, "nodes");
        if (!json_is_array(nodes) || json_array_size(nodes) > MAX_TREE) {
            kid_fail(k, "it sent a malformed REPORT");
            return;
        }
        json_decref(k->entries);
        k->entries = json_incref(nodes);
        k->state = K_DONE;
        if (k->c)
            conn_close(k->c);
        session_progress(s);
        return;
    }
    case VHPC_DIST_ERROR: {
        const char *msg = json_string_value(json_object_get(j, "error"));
        kid_fail(k, "%s", msg ? msg : "it reported an error");
        return;
    }
    }
    kid_fail(k, "it sent an unexpected frame (type %d)", type);
}

/* ---- frames in general ------------------------------------------------------- */

static void pull_next(struct engine *e);

static void conn_lost(struct conn *c, const char *why)
{
    struct engine *e = c->e;
    struct kid *k = c->kid;
    struct session *s = c->sess;
    enum role role = c->role;
    conn_close(c);
    if (k) {
        kid_fail(k, "%s", why);
        return;
    }
    if (s && role == R_UP) {
        /* Room only for what it has: the blocks allocated ahead go back. */
        s->reserved = s->tmp_bytes;
        for (size_t i = 0; i < s->nb; i++) {
            struct blob *b = &s->b[i];
            if (b->state == B_RECV && b->have < b->size)
                fallocate(b->w.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)b->have,
                          (off_t)(b->size - b->have));
        }
    }
    if (s && role == R_UP && !s->reported && s->own != -1) {
        elog(e, "image %.12s: lost the sender %s (%s); waiting for another", s->digest, c->peer,
             why);
        s->orphan_since = e->now;
    }
    /* A puller tries the next node (a transfer under way continues from
     * what it has, if that node has the same image). */
    if (c->is_pull && e->pull_ref && !e->client_done &&
        (role == R_PULL || role == R_MANIFEST || (role == R_UP && s))) {
        size_t used = strlen(e->pull_why);
        snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s: %s",
                 e->pull_from[c->pull_node], why);
        pull_next(e);
    }
}

static int frame_limit(int type)
{
    return type == VHPC_DIST_CHUNK      ? VHPC_DIST_MAX_CHUNK + VHPC_DIST_CHUNK_HDR
           : type == VHPC_DIST_MANIFEST ? (int)VHPC_DIST_MAX_MANIFEST
                                        : (int)VHPC_DIST_MAX_CONTROL;
}

static void dispatch(struct conn *c, int type, const unsigned char *p, size_t len)
{
    struct engine *e = c->e;
    c->last_rx = e->now;
    if (type == VHPC_DIST_CHUNK) {
        if (c->role == R_UP && c->sess)
            handle_chunk(c->sess, p, len);
        else
            conn_lost(c, "an unexpected chunk");
        return;
    }
    if (type == VHPC_DIST_MANIFEST) {
        if (c->role != R_MANIFEST) {
            conn_lost(c, "an unexpected manifest");
            return;
        }
        json_t *pj = c->push;
        c->push = NULL;
        handle_push(c, pj, (const char *)p, len);
        json_decref(pj);
        return;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)p, len, 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        conn_lost(c, "a frame that is not JSON");
        return;
    }
    if (c->role == R_INBOUND && e->lfd >= 0 &&
        (type == VHPC_DIST_PUSH || type == VHPC_DIST_PULL || type == VHPC_DIST_QUERY)) {
        vhpc_err_t err = {0};
        if (authenticate(c, j, &c->uid, &err) < 0) {
            elog(e, "a request from %s: %s", c->peer, err.msg);
            conn_send_error(c, err.msg);
            json_decref(j);
            return;
        }
    }
    switch (c->role) {
    case R_INBOUND:
    case R_PULL:
        if (type == VHPC_DIST_PUSH) {
            c->push = j;
            c->role = R_MANIFEST;
            return;
        }
        if (c->role == R_INBOUND && type == VHPC_DIST_PULL)
            handle_pull(c, j);
        else if (c->role == R_INBOUND && type == VHPC_DIST_QUERY)
            handle_query(c, j);
        else if (c->role == R_PULL && type == VHPC_DIST_ERROR) {
            const char *msg = json_string_value(json_object_get(j, "error"));
            conn_lost(c, msg ? msg : "refused");
        } else
            conn_lost(c, "an unexpected frame");
        break;
    case R_KID:
        if (c->kid)
            kid_frame(c->kid, type, j);
        break;
    case R_UP:
        if (type == VHPC_DIST_PROGRESS)
            break;
        if (type == VHPC_DIST_ERROR) {
            const char *msg = json_string_value(json_object_get(j, "error"));
            conn_lost(c, msg ? msg : "an error");
        } else {
            conn_lost(c, "an unexpected frame");
        }
        break;
    default:
        if (type == VHPC_DIST_ERROR || type == VHPC_DIST_PROGRESS)
            break;
        conn_lost(c, "an unexpected frame");
    }
    json_decref(j);
}

static void conn_read(struct conn *c)
{
    size_t budget = c->e->read_budget; /* then let the others have a turn */
    while (!c->dead) {
        /* Whole frames first. */
        while (!c->dead && c->got - c->pos >= VHPC_DIST_HDR) {
            const unsigned char *h = c->in + c->pos;
            uint32_t len = get32(h + 8);
            int type = h[4];
            if (get32(h) != VHPC_DIST_MAGIC || type < VHPC_DIST_PUSH || type > VHPC_DIST_HAVE ||
                len > (uint32_t)frame_limit(type)) {
                conn_lost(c, "a malformed frame");
                return;
            }
            if (type == VHPC_DIST_CHUNK && c->role != R_UP) {
                conn_lost(c, "an unexpected chunk");
                return;
            }
            size_t need = VHPC_DIST_HDR + (size_t)len;
            if (c->got - c->pos < need)
                break;
            c->pos += need;
            dispatch(c, type, h + VHPC_DIST_HDR, len);
        }
        if (c->dead)
            return;
        if (c->pos) {
            memmove(c->in, c->in + c->pos, c->got - c->pos);
            c->got -= c->pos;
            c->pos = 0;
        }
        if (!c->in) {
            c->cap = 64 << 10;
            if (!(c->in = malloc(c->cap))) {
                conn_lost(c, "out of memory");
                return;
            }
        }
        /* The buffer grows as a frame's bytes arrive, never on a length
         * alone: a peer costs us what it actually sends. */
        if (c->got == c->cap) {
            size_t need = VHPC_DIST_HDR + get32(c->in + 8), ncap = c->cap * 4;
            if (ncap > need)
                ncap = need;
            unsigned char *g = realloc(c->in, ncap);
            if (!g) {
                conn_lost(c, "out of memory");
                return;
            }
            c->in = g;
            c->cap = ncap;
        }
        size_t want = c->cap - c->got;
        /* Inside a big frame, read just to its end: no bytes to move after;
         * and be woken only once a good part of it is here (fewer wake-ups
         * and context switches per chunk). */
        int lowat = 1;
        if (c->got >= VHPC_DIST_HDR) {
            size_t need = VHPC_DIST_HDR + get32(c->in + 8), rest = need - c->got;
            if (rest > (64 << 10) && rest < want)
                want = rest;
            if (rest > (64 << 10))
                lowat = rest < (256 << 10) ? (int)rest : 256 << 10;
        }
        if (lowat != c->lowat) {
            setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
            c->lowat = lowat;
        }
        /* Only now may we stop: the mark must fit the frame we are inside,
         * not the one just dispatched, or poll waits for bytes that never
         * come (a last chunk smaller than the mark left for its
         * predecessor). */
        if (budget == 0)
            return;
        ssize_t n = recv(c->fd, c->in + c->got, want, 0);
        if (n == 0) {
            conn_lost(c, "it closed the connection");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_lost(c, strerror(errno));
            return;
        }
        c->got += (size_t)n;
        c->last_rx = c->e->now;
        budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
    }
}

/* ---- the loop ------------------------------------------------------------------ */

static int engine_init(struct engine *e, struct vhpc_store *st, vhpc_err_t *err)
{
    memset(e, 0, sizeof(*e));
    e->st = st;
    e->lfd = -1;
    e->now = vhpc__now_ms();
    /* VHPC_DIST_READ_BUDGET: a test knob (1 makes every turn end after one
     * read, the worst case for the low-water mark bookkeeping). */
    const char *rb = getenv("VHPC_DIST_READ_BUDGET");
    uint64_t v;
    e->read_budget = 8u << 20;
    e->lim = (struct vhpc_dist_limits)VHPC_DIST_LIMITS_DEFAULT;
    if (rb && *rb && vhpc_parse_bytes(rb, &v) == 0 && v > 0 && v <= SIZE_MAX)
        e->read_budget = (size_t)v;
    if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return vhpc_err_set(err, -errno, "creating a pipe");
    return 0;
}

static void sweep(struct engine *e)
{
    for (struct conn **pc = &e->conns; *pc;) {
        struct conn *c = *pc;
        if (c->dead) {
            *pc = c->next;
            e->nconns--;
            conn_free(c);
        } else {
            pc = &c->next;
        }
    }
    for (struct session **ps = &e->sessions; *ps;) {
        struct session *s = *ps;
        if (s->dead && s->pending == 0) {
            *ps = s->next;
            session_free(s);
        } else {
            ps = &s->next;
        }
    }
}

static void engine_fini(struct engine *e)
{
    for (struct session *s = e->sessions; s; s = s->next) {
        session_release(s);
        for (size_t i = 0; i < s->nb; i++)
            if (s->b[i].state == B_RECV) {
                vhpc_store_blob_abort(&s->b[i].w);
                s->b[i].state = B_GONE;
            }
    }
    for (struct conn *c = e->conns; c; c = c->next)
        conn_close(c);
    /* Commit threads still running finish on their own; wait for them. */
    for (;;) {
        int pending = 0;
        for (struct session *s = e->sessions; s; s = s->next)
            pending += s->pending;
        if (!pending)
            break;
        struct pollfd pf = {.fd = e->wake[0], .events = POLLIN};
        poll(&pf, 1, 1000);
        struct commit_job *j;
        while (read(e->wake[0], &j, sizeof(j)) == sizeof(j)) {
            on_commit_done(j);
            free(j);
        }
    }
    sweep(e);
    if (e->mctx)
        munge_ctx_destroy(e->mctx);
    free(e->allow);
    if (e->lfd >= 0)
        close(e->lfd);
    close(e->wake[0]);
    close(e->wake[1]);
}

static void heartbeat(struct session *s)
{
    uint64_t sub = 0;
    for (size_t i = 0; i < s->nkids; i++) {
        struct kid *k = s->kids[i];
        if (k->state == K_DONE) {
            size_t j;
            json_t *n;
            json_array_foreach(k->entries, j, n) sub +=
                (uint64_t)json_integer_value(json_object_get(n, "bytes"));
        } else {
            sub += k->own + k->subtree;
        }
    }
    if (s->up)
        conn_send_json(
            s->up, VHPC_DIST_PROGRESS,
            json_pack("{s:I, s:I}", "own", (json_int_t)s->bytes_in, "sub", (json_int_t)sub));
    if (s == s->e->client && s->e->prog)
        vhpc_progress_set(s->e->prog, s->source ? sub : s->bytes_in);
}

static void timers(struct engine *e)
{
    for (struct conn *c = e->conns; c; c = c->next) {
        if (c->dead)
            continue;
        if ((c->role == R_INBOUND || c->role == R_MANIFEST || c->role == R_PULL) &&
            e->now - c->since > e->lim.idle_ms)
            conn_lost(c, "no request in time");
        else if (c->role == R_LINGER && e->now - c->since > LINGER_MS)
            conn_close(c);
        else if (c->role == R_UP && c->sess &&
                 e->now - c->last_rx > (3 * c->sess->timeout_ms < e->lim.idle_ms
                                            ? 3 * c->sess->timeout_ms
                                            : e->lim.idle_ms))
            conn_lost(c, "no sign of life from the sender");
        else if (c->role == R_KID && c->kid && !c->chunk_active && !c->qhead && !c->connecting &&
                 e->now - c->last_tx >= HEARTBEAT_MS)
            conn_send(c, VHPC_DIST_PROGRESS, "{}", 2);
    }
    for (struct session *s = e->sessions; s; s = s->next) {
        if (s->dead)
            continue;
        if (s->lock_wait && s->own == 0) {
            session_finish_own(s);
            session_progress(s);
            if (s->dead)
                continue;
        }
        if (e->now - s->last_hb >= HEARTBEAT_MS) {
            s->last_hb = e->now;
            heartbeat(s);
        }
        for (size_t i = 0; i < s->nkids && !s->dead; i++) {
            struct kid *k = s->kids[i];
            if (k->state >= K_CONNECT && k->state <= K_REPORT && e->now - k->since > s->timeout_ms)
                kid_fail(k, "%s for %.1f s",
                         k->state == K_CONNECT ? "no connection" : "no progress",
                         (double)(e->now - k->since) / 1000);
        }
        if (!s->dead && !s->source && !s->up && s != e->client && s->orphan_since &&
            e->now - s->orphan_since >
                (2 * s->timeout_ms > MIN_ORPHAN_MS ? 2 * s->timeout_ms : MIN_ORPHAN_MS)) {
            if (s->own == 1)
                session_release(s); /* it has the image; nobody wants the report */
            else
                session_fail(s, "lost its sender and nobody took over");
        }
        if (!s->dead && !s->up && !s->source && !s->orphan_since)
            s->orphan_since = e->now;
    }
}

/* Room for one more connection from ip?  At a limit (in all, or from that
 * peer), the oldest connection that has not made its request yet gives
 * way (idle connections cannot crowd out real requests); with none, no. */
static int admit(struct engine *e, const char *ip)
{
    for (int pass = 0; pass < 2; pass++) {
        int all = 0, mine = 0;
        struct conn *oldest = NULL, *oldest_mine = NULL;
        for (struct conn *c = e->conns; c; c = c->next) {
            if (c->dead || !c->ip[0])
                continue; /* ours, to a child */
            int same = !strcmp(c->ip, ip);
            all++;
            mine += same;
            if (c->role == R_INBOUND) {
                if (!oldest || c->since < oldest->since)
                    oldest = c;
                if (same && (!oldest_mine || c->since < oldest_mine->since))
                    oldest_mine = c;
            }
        }
        struct conn *victim = NULL;
        if (mine >= e->lim.max_per_peer)
            victim = oldest_mine;
        else if (all >= e->lim.max_conns)
            victim = oldest;
        else
            return 1;
        if (!victim)
            return 0;
        conn_close(victim); /* it said nothing: nobody to tell */
    }
    return 0;
}

static void on_accept(struct engine *e)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(e->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* The connection waits in the backlog; poll would wake us
                 * for it at once, again and again: pause accepting. */
                if (!e->accept_paused)
                    elog(e, "out of descriptors (%s): not accepting for a moment", strerror(errno));
                e->accept_paused = e->now + 100;
            }
            return;
        }
        char peer[64], ip[sizeof(((struct conn *)0)->ip)];
        vhpc_dist_addr_str((struct sockaddr *)&sa, peer, sizeof(peer));
        snprintf(ip, sizeof(ip), "%.*s", (int)(strrchr(peer, ':') - peer), peer);
        if (!admit(e, ip)) {
            elog(e,
                 "refused a connection from %s: too many connections (--max-connections "
                 "%d, --max-per-peer %d)",
                 peer, e->lim.max_conns, e->lim.max_per_peer);
            close(fd);
            continue;
        }
        struct conn *c = conn_new(e, fd, R_INBOUND);
        if (c) {
            snprintf(c->peer, sizeof(c->peer), "%s", peer);
            snprintf(c->ip, sizeof(c->ip), "%s", ip);
        }
    }
}

static void on_connected(struct conn *c)
{
    int soerr = 0;
    socklen_t l = sizeof(soerr);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
    if (soerr) {
        char why[256];
        snprintf(why, sizeof(why), "connecting to %s: %s", c->peer, strerror(soerr));
        conn_lost(c, why);
        return;
    }
    c->connecting = 0;
    c->last_tx = c->e->now;
    if (c->kid)
        kid_hello(c->kid);
    else
        conn_flush(c);
}

/* Run the loop until *stop or (client mode) the client is done. */
static int engine_run(struct engine *e, volatile sig_atomic_t *stop)
{
    struct pollfd *pf = NULL;
    struct conn **pc = NULL;
    size_t cap = 0;
    int64_t last_timers = 0;
    while (!(stop && *stop) && !(e->client && e->client_done && !e->pull_ref) &&
           !(e->pull_ref && (e->client_done || e->pull_next > e->pull_n))) {
        size_t n = 0, want = (size_t)e->nconns + 2;
        if (want > cap) {
            cap = want * 2;
            void *g1 = realloc(pf, cap * sizeof(*pf)), *g2;
            if (!g1)
                break;
            pf = g1;
            g2 = realloc(pc, cap * sizeof(*pc));
            if (!g2)
                break;
            pc = g2;
        }
        pf[n++] = (struct pollfd){.fd = e->wake[0], .events = POLLIN};
        if (e->lfd >= 0 && e->accept_paused && e->now >= e->accept_paused)
            e->accept_paused = 0;
        if (e->lfd >= 0)
            pf[n++] = (struct pollfd){.fd = e->lfd, .events = e->accept_paused ? 0 : POLLIN};
        size_t first = n;
        for (struct conn *c = e->conns; c; c = c->next) {
            if (c->dead)
                continue;
            short ev = c->connecting ? POLLOUT : POLLIN;
            if (c->chunk_active || c->qhead)
                ev |= POLLOUT;
            pc[n] = c;
            pf[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int r = poll(pf, n, 100);
        e->now = vhpc__now_ms();
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0) {
            if (pf[0].revents) {
                struct commit_job *j;
                while (read(e->wake[0], &j, sizeof(j)) == sizeof(j)) {
                    on_commit_done(j);
                    free(j);
                }
            }
            if (e->lfd >= 0 && pf[1].revents)
                on_accept(e);
            for (size_t i = first; i < n; i++) {
                struct conn *c = pc[i];
                short rv = pf[i].revents;
                if (!rv || c->dead)
                    continue;
                if (c->connecting) {
                    on_connected(c);
                    continue;
                }
                if (rv & (POLLIN | POLLHUP | POLLERR))
                    conn_read(c);
                if (!c->dead && (rv & POLLOUT))
                    conn_flush(c);
            }
        }
        if (e->now - last_timers >= 100) {
            last_timers = e->now;
            timers(e);
        }
        sweep(e);
    }
    free(pf);
    free(pc);
    return 0;
}

/* ---- the server ---------------------------------------------------------------- */

struct vhpc_dist_server {
    struct engine e;
};

int vhpc_dist_server_new(struct vhpc_store *st, const char *listen_on,
                         struct vhpc_dist_server **out, vhpc_err_t *err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    int r = vhpc_dist_resolve(listen_on, &sa, &salen, err);
    if (r < 0)
        return vhpc_err_wrap(err, "--listen");
    struct vhpc_dist_server *s = calloc(1, sizeof(*s));
    if (!s)
        return vhpc_err_set(err, -ENOMEM, "starting the node service");
    if ((r = engine_init(&s->e, st, err)) < 0) {
        free(s);
        return r;
    }
    char a[64];
    vhpc_dist_addr_str((struct sockaddr *)&sa, a, sizeof(a));
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
        r = vhpc_err_set(err, -errno, "listening on %s", a);
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, 128) < 0) {
        r = vhpc_err_set(err, -errno, "listening on %s", a);
        close(fd);
        goto fail;
    }
    salen = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &salen);
    vhpc_dist_addr_str((struct sockaddr *)&sa, s->e.laddr, sizeof(s->e.laddr));
    s->e.lfd = fd;
    *out = s;
    return 0;
fail:
    engine_fini(&s->e);
    free(s);
    return r;
}

const char *vhpc_dist_server_addr(const struct vhpc_dist_server *s)
{
    return s->e.laddr;
}

void vhpc_dist_server_log(struct vhpc_dist_server *s, const char *prefix)
{
    s->e.logp = prefix;
}

int vhpc_dist_server_allow(struct vhpc_dist_server *s, const uid_t *uids, size_t n, vhpc_err_t *err)
{
    uid_t *a = n ? malloc(n * sizeof(*a)) : NULL;
    if (n && !a)
        return vhpc_err_set(err, -ENOMEM, "--allow-uid");
    if (n)
        memcpy(a, uids, n * sizeof(*a));
    free(s->e.allow);
    s->e.allow = a;
    s->e.nallow = n;
    return 0;
}

void vhpc_dist_server_limits(struct vhpc_dist_server *s, const struct vhpc_dist_limits *l)
{
    if (l->max_conns > 0)
        s->e.lim.max_conns = l->max_conns;
    if (l->max_per_peer > 0)
        s->e.lim.max_per_peer = l->max_per_peer;
    if (l->max_sessions > 0)
        s->e.lim.max_sessions = l->max_sessions;
    if (l->idle_ms > 0)
        s->e.lim.idle_ms = l->idle_ms;
}

int vhpc_dist_server_run(struct vhpc_dist_server *s, volatile sig_atomic_t *stop, vhpc_err_t *err)
{
    (void)err;
    return engine_run(&s->e, stop);
}

void vhpc_dist_server_free(struct vhpc_dist_server *s)
{
    if (!s)
        return;
    engine_fini(&s->e);
    free(s);
}

/* ---- push ---------------------------------------------------------------------- */

struct tree_ctx {
    const struct vhpc_dist_push_opts *o;
    char (*addr)[64];
};

static json_t *tree_children(const struct tree_ctx *t, size_t j);

/* Position pos of the tree (node pos - 1) and everything below it. */
static json_t *tree_node(const struct tree_ctx *t, size_t pos)
{
    return json_pack("{s:I, s:s, s:o}", "i", (json_int_t)(pos - 1), "addr", t->addr[pos - 1],
                     "children", tree_children(t, pos));
}

/* The children of position j (0 = the pusher, node i is position i + 1). */
static json_t *tree_children(const struct tree_ctx *t, size_t j)
{
    size_t k = t->o->nnodes, f = t->o->fanout ? t->o->fanout : 1;
    json_t *arr = json_array();
    switch (t->o->mode) {
    case VHPC_DIST_CENTRAL:
        for (size_t i = 1; j == 0 && i <= k; i++)
            json_array_append_new(arr, tree_node(t, i));
        break;
    case VHPC_DIST_BINOMIAL:
        /* Round r: every holder (positions < 2^r) sends to position + 2^r. */
        for (size_t step = 1; step <= k; step <<= 1)
            if (step > j && j + step <= k)
                json_array_append_new(arr, tree_node(t, j + step));
        break;
    default:
        for (size_t i = 0; i < f && j * f + 1 + i <= k; i++)
            json_array_append_new(arr, tree_node(t, j * f + 1 + i));
    }
    return arr;
}

int vhpc_dist_push(struct vhpc_store *st, const char *ref, const struct vhpc_dist_push_opts *o,
                   struct vhpc_dist_result **res, struct vhpc_ref *ref_out, vhpc_err_t *err)
{
    struct vhpc_ref img;
    struct engine e;
    int r;
    if (!o->nnodes)
        return vhpc_err_setmsg(err, -EINVAL, "no nodes to push to (--nodes HOST[:PORT],...)");
    if (o->nnodes > MAX_TREE)
        return vhpc_err_setmsg(err, -EINVAL, "at most %d nodes", MAX_TREE);
    if (o->chunk < VHPC_DIST_MIN_CHUNK || o->chunk > VHPC_DIST_MAX_CHUNK)
        return vhpc_err_setmsg(err, -EINVAL, "the chunk size must be 4 KiB .. 64 MiB");
    if ((r = vhpc_store_resolve(st, ref, &img, err)) < 0)
        return r;
    if (!img.name[0])
        return vhpc_err_setmsg(
            err, -EINVAL, "image %.12s has no name; tag it first (vhpc image tag)", img.digest);
    /* Resolve every node before sending anything. */
    char(*addr)[64] = calloc(o->nnodes, sizeof(*addr));
    struct vhpc_dist_result *out = calloc(o->nnodes, sizeof(*out));
    if (!addr || !out) {
        free(addr);
        free(out);
        return vhpc_err_set(err, -ENOMEM, "pushing");
    }
    for (size_t i = 0; i < o->nnodes; i++) {
        struct sockaddr_storage sa;
        socklen_t sl;
        if ((r = vhpc_dist_resolve(o->nodes[i], &sa, &sl, err)) < 0)
            goto out;
        vhpc_dist_addr_str((struct sockaddr *)&sa, addr[i], sizeof(addr[i]));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(addr[i], addr[j])) {
                r = vhpc_err_setmsg(err, -EINVAL, "nodes '%s' and '%s' are the same (%s)",
                                    o->nodes[j], o->nodes[i], addr[i]);
                goto out;
            }
        snprintf(out[i].node, sizeof(out[i].node), "%s", o->nodes[i]);
        snprintf(out[i].addr, sizeof(out[i].addr), "%s", addr[i]);
        snprintf(out[i].reason, sizeof(out[i].reason), "no report came back");
    }
    if ((r = engine_init(&e, st, err)) < 0)
        goto out;
    struct session *s = session_from_store(&e, &img, 0, err);
    if (!s) {
        engine_fini(&e);
        r = err->code;
        goto out;
    }
    s->chunk = o->chunk;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    s->seq = o->mode == VHPC_DIST_BINOMIAL;
    s->uid = getuid();
    if (check_chunking(s->b, s->nb, s->chunk, err) < 0) {
        r = err->code;
        session_release(s);
        engine_fini(&e);
        goto out;
    }
    for (size_t i = 0; i < s->nb && r == 0; i++)
        if (blob_set_chunking(s, &s->b[i]) < 0)
            r = vhpc_err_set(err, -ENOMEM, "pushing");
    e.client = s;
    uint64_t size = 0;
    for (size_t i = 0; i < s->nb; i++)
        size += s->b[i].size;
    struct vhpc_progress prog;
    if (o->progress) {
        vhpc_progress_start(&prog, o->label ? o->label : "push", size * o->nnodes);
        e.prog = &prog;
    }
    struct tree_ctx t = {o, addr};
    json_t *roots = tree_children(&t, 0);
    size_t i;
    json_t *node;
    json_array_foreach(roots, i, node) kid_add(s, node);
    json_decref(roots);
    session_progress(s);
    if (r == 0)
        engine_run(&e, NULL);
    /* Collect what came back. */
    for (size_t k = 0; k < s->nkids; k++) {
        json_t *ent;
        json_array_foreach(s->kids[k]->entries, i, ent)
        {
            json_int_t idx = json_integer_value(json_object_get(ent, "i"));
            if (idx < 0 || (size_t)idx >= o->nnodes)
                continue;
            struct vhpc_dist_result *x = &out[idx];
            int ok = json_is_true(json_object_get(ent, "ok"));
            if (x->ok && !ok)
                continue; /* it got the image all the same */
            x->ok = ok;
            snprintf(x->reason, sizeof(x->reason), "%s",
                     ok ? "" : json_string_value(json_object_get(ent, "reason")) ?: "failed");
            x->bytes = (uint64_t)json_integer_value(json_object_get(ent, "bytes"));
            x->ms = (int64_t)json_integer_value(json_object_get(ent, "ms"));
        }
    }
    if (s->own == -1) {
        r = vhpc_err_setmsg(err, -EIO, "%s", s->reason);
    }
    int all_ok = r == 0;
    for (size_t k = 0; k < o->nnodes; k++)
        all_ok &= out[k].ok;
    if (o->progress) {
        /* What the nodes received, from their REPORTs: the heartbeats come
         * every HEARTBEAT_MS, and a push may end before the first. */
        uint64_t moved = 0;
        for (size_t k = 0; k < o->nnodes; k++)
            moved += out[k].bytes;
        if (moved > prog.done)
            prog.done = moved;
        vhpc_progress_done(&prog, all_ok);
    }
    e.client = NULL;
    session_release(s);
    engine_fini(&e);
    if (ref_out)
        *ref_out = img;
out:
    free(addr);
    if (r < 0) {
        free(out);
        return r;
    }
    *res = out;
    return 0;
}

/* ---- pull ---------------------------------------------------------------------- */

/* Ask the next node of the list. */
static void pull_next(struct engine *e)
{
    while (e->pull_next < e->pull_n) {
        size_t i = e->pull_next++;
        struct sockaddr_storage sa;
        socklen_t sl;
        vhpc_err_t err = {0};
        size_t used = strlen(e->pull_why);
        if (vhpc_dist_resolve(e->pull_from[i], &sa, &sl, &err) < 0) {
            snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s", err.msg);
            continue;
        }
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sl) < 0 && errno != EINPROGRESS)) {
            snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s: %s", e->pull_from[i],
                     strerror(errno));
            if (fd >= 0)
                close(fd);
            continue;
        }
        struct conn *c = conn_new(e, fd, R_PULL);
        if (!c)
            continue;
        vhpc_dist_addr_str((struct sockaddr *)&sa, c->peer, sizeof(c->peer));
        c->connecting = 1;
        c->is_pull = 1;
        c->pull_node = i;
        e->pull_node = i;
        json_t *j = json_pack("{s:s, s:i}", "ref", e->pull_ref, "timeout_ms", e->pull_timeout);
        if (!j || sign_with(&e->mctx, j, c->peer, &err) < 0) {
            json_decref(j);
            snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s: %s", e->pull_from[i],
                     err.msg[0] ? err.msg : "out of memory");
            conn_close(c);
            continue;
        }
        conn_send_json(c, VHPC_DIST_PULL, j);
        return;
    }
    e->pull_next = e->pull_n + 1; /* nothing left to try */
}

int vhpc_dist_pull(struct vhpc_store *st, const char *ref, const char *const *from, size_t n,
                   int timeout_ms, int progress, struct vhpc_ref *got, size_t *node,
                   vhpc_err_t *err)
{
    struct engine e;
    int r;
    if (!n)
        return vhpc_err_setmsg(err, -EINVAL, "no node to pull from (--from HOST[:PORT],...)");
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage sa;
        socklen_t sl;
        if ((r = vhpc_dist_resolve(from[i], &sa, &sl, err)) < 0)
            return r;
    }
    if ((r = engine_init(&e, st, err)) < 0)
        return r;
    struct vhpc_progress prog;
    e.pull_ref = strdup(ref);
    e.pull_from = from;
    e.pull_n = n;
    e.pull_timeout = timeout_ms > 0 ? timeout_ms : 30000;
    if (progress) {
        char label[200];
        snprintf(label, sizeof(label), "pull %s", ref);
        vhpc_progress_start(&prog, label, 0);
        e.prog = &prog;
    }
    pull_next(&e);
    engine_run(&e, NULL);
    struct session *s = e.client;
    if (s && s->own == 1) {
        /* Let the REPORT reach the node. */
        struct conn *up = s->up;
        for (int64_t end = vhpc__now_ms() + 2000;
             up && !up->dead && up->qhead && vhpc__now_ms() < end;) {
            struct pollfd pf = {.fd = up->fd, .events = POLLOUT};
            poll(&pf, 1, 100);
            e.now = vhpc__now_ms();
            conn_flush(up);
        }
        if (got) {
            memset(got, 0, sizeof(*got));
            snprintf(got->name, sizeof(got->name), "%s", s->name);
            got->version = s->version;
            snprintf(got->digest, sizeof(got->digest), "%s", s->digest);
        }
        if (node)
            *node = e.pull_node;
        r = 0;
    } else if (s && s->own == -1) {
        r = vhpc_err_setmsg(err, -EIO, "pulling %s from %s: %s", ref, from[e.pull_node], s->reason);
    } else {
        r = vhpc_err_setmsg(err, -ENOENT, "no node could give image '%s':%s", ref, e.pull_why);
    }
    if (progress) {
        if (s)
            prog.total = prog.done = s->bytes_in;
        vhpc_progress_done(&prog, r == 0);
    }
    free((char *)e.pull_ref);
    e.pull_ref = NULL;
    e.client = NULL;
    engine_fini(&e);
    return r;
}
