/*
 * ivf.h - internals of the libfabric provider "ivc" (libivc-fi.so).
 *
 * One reliable-datagram endpoint (FI_EP_RDM) talks to each peer over an
 * ordered byte stream per direction.  The stream is carried by TCP, or by
 * an IVC channel (libivc shared memory) when both endpoints are attached to
 * the same region, and it switches carrier without losing, repeating or
 * reordering a byte (the SC'07 paper's per-peer state machine):
 *
 *   tx side, per peer:  TCP ----(IVC channel open: FLUSH on TCP)----> IVC
 *                       IVC ----(channel suspended: rest on TCP)----> TCP
 *   rx side, per peer:  reads TCP until it parses FLUSH, then IVC until the
 *                       channel's suspend (its unread bytes handed back are
 *                       read first), then TCP again.
 *
 * One TCP connection carries both directions, as does the IVC channel
 * (opened by the endpoint with the smaller uid): each side's TCP ACKs ride
 * on its own data (two connections cost a pure ACK segment per message).
 * The endpoint that sends first opens it (HELLO first) and the other
 * answers on it.  When both opened one at once, the one opened by the
 * smaller uid stays: the other side sends MOVE on its own and closes it,
 * and writes on the one that stays once the MOVED answer (sent when MOVE
 * was read) says its peer reads there.  A peer that is ourselves has no
 * carrier: what we write to it is appended to the buffer we read it from
 * (IVF_SELF).
 *
 * On a stream go frames (struct ivf_hdr + payload).  Messages up to
 * eager_max are sent whole (EAGER); larger ones announce themselves (RTS),
 * and once the receiver matched them it asks for the data (CTS), which
 * comes in DATA frames of at most chunk bytes, interleaved with other
 * traffic.  Matching follows the order of the stream, so messages between
 * a pair match in send order.  Eager data is flow-controlled by credit: a
 * sender may have at most `credit` bytes of eager messages not yet taken
 * by receives at a receiver (CREDIT frames give them back); beyond that it
 * announces even small messages (RTS).  The receiver counts them too and
 * fails a peer that sends more (every endpoint of a job must run with the
 * same FI_IVC_CREDIT).  So the unexpected messages a receiver buffers are
 * bounded per peer, and it never has to stop reading a stream (which could
 * block data that a posted receive waits for).
 *
 * Threading: every call takes the domain's lock (FI_THREAD_SAFE), except in
 * a domain opened FI_THREAD_DOMAIN without a progress thread (the caller
 * serializes; Open MPI asks for that).
 * Progress is manual: the data moves inside calls on the endpoint and its
 * completion queues; with FI_PROGRESS_AUTO a thread per domain also does it.
 *
 * The files, from the bottom up (each calls only files listed before it):
 *   ivf_proto.h, proto.c  the wire format and its checks
 *   av.c        address vectors
 *   op.c        operations: their cache, queues, completion (into a CQ's
 *               ring), iovec copies
 *   match.c     posted receives and unexpected messages, and matching them
 *   conn.c      peers and their TCP connections (listen, connect, accept)
 *   stream.c    the byte stream with each peer: send queue, writes, reads
 *               into the parser's destination, failing a peer
 *   ivc.c       IVC channels: attach, find co-located peers, hellos
 *   progress.c  what each arriving frame does, the one "receive done",
 *               credit, small messages read in place from an IVC ring,
 *               and moving the bytes of every peer
 *   msg.c       the FI_MSG and FI_TAGGED calls: eager and rendezvous sends,
 *               posting receives, FI_PEEK/FI_CLAIM
 *   cq.c        completion queues: reading them drives progress
 *   ep.c        the endpoint object
 *   domain.c    the domain object and its progress thread
 *   init.c      fi_prov_ini, fi_getinfo, the fabric and its event queue
 */
#ifndef IVF_H
#define IVF_H

#include "ivc.h"
#include "ivf_proto.h"

#include <pthread.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <rdma/providers/fi_log.h>
#include <rdma/providers/fi_prov.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define IVF_NAME         "ivc"
#define IVF_PROV_VERSION FI_VERSION(1, 0)
#define IVF_FI_VERSION   FI_VERSION(1, 17)
#define IVF_IOV_LIMIT    8
#define IVF_INJECT_SIZE  4096
#define IVF_RX_AHEAD     8192         /* TCP read-ahead per peer (struct ivf_rx) */
#define IVF_SELF_MAX     (256u << 10) /* bytes written to ourselves not yet read */
#define IVF_TAG_BITS     64

extern struct fi_provider ivf_prov;

#define IVF_WARN(sub, ...) FI_WARN(&ivf_prov, sub, __VA_ARGS__)
#define IVF_INFO(sub, ...) FI_INFO(&ivf_prov, sub, __VA_ARGS__)
#define IVF_DBG(sub, ...)  FI_DBG(&ivf_prov, sub, __VA_ARGS__)

/* ---- tunables (FI_IVC_*; see init.c) --------------------------------------- */

struct ivf_params {
    size_t eager_max;     /* largest message sent whole over IVC (FI_IVC_EAGER_MAX) */
    size_t tcp_eager_max; /* ... over TCP (FI_IVC_TCP_EAGER_MAX) */
    size_t chunk;         /* DATA frame payload (FI_IVC_CHUNK) */
    size_t credit;     /* eager bytes a sender may have unconsumed at a receiver (FI_IVC_CREDIT) */
    size_t tx_max;     /* bytes queued per peer before sends return -FI_EAGAIN (FI_IVC_TX_MAX) */
    int ivc;           /* use IVC at all (FI_IVC_ENABLE, default 1) */
    uint64_t job;      /* IVC job id (FI_IVC_JOB, else $VHPC_JOB); 0: none */
    const char *iface; /* TCP address to bind (FI_IVC_IFACE: an IPv4 address or interface) */
};
extern struct ivf_params ivf_params;

/* ---- operations -------------------------------------------------------------- */

enum ivf_op_kind { IVF_OP_SEND, IVF_OP_RECV };

/* A send or receive the application posted (or an internal one). */
struct ivf_op {
    struct ivf_op *next, *prev; /* in a queue: posted receives, pending sends */
    struct ivf_ep *ep;          /* whose cache takes it back */
    enum ivf_op_kind kind;
    uint64_t id; /* wire id (RTS/CTS/DATA/ACK), unique per endpoint */
    void *context;
    uint64_t flags; /* FI_* op flags as given, plus FI_TAGGED/FI_MSG, FI_SEND/FI_RECV */
    size_t iov_count;
    size_t len;            /* total of iov */
    uint64_t tag, ignore;  /* receive: tag and ignore bits; send: tag */
    uint64_t data;         /* send: remote CQ data; receive: what came */
    fi_addr_t addr;        /* send: destination; receive: wanted source or FI_ADDR_UNSPEC */
    uint64_t src_uid;      /* receive: the wanted source's endpoint (ivf_addr.uid), 0: any */
    struct ivf_peer *peer; /* send: destination; receive: the matched source */
    size_t done;           /* bytes moved so far */
    size_t msg_len;        /* receive: length of the matched message (for truncation) */
    uint64_t remote_id;    /* receive: the sender's op id (RTS, or EAGER wanting an ACK) */
    uint8_t wire_flags;    /* receive: IVF_F_* of the matched message */
    bool want_completion;  /* a CQ entry when done */
    bool wait_ack;         /* send: completes on IVF_ACK */
    bool wait_cts;         /* send: announced by RTS, its one CTS not in yet */
    bool data_sent;        /* send: every byte is on the stream */
    bool acked;
    bool claimed; /* receive by FI_CLAIM */
    bool discard;
    int err;     /* send: completes with this error (positive FI_E*; FI_EFAULT: unreadable) */
    bool quiet;  /* send: by fi_inject(data): no completion at all, errors included */
    void *owned; /* inject / unexpected: a buffer this op owns */
    /* Last: only iov[0..iov_count) is ever read, so a new op is cleared
     * up to here (ivf_op_new), not through these 128 bytes. */
    struct iovec iov[IVF_IOV_LIMIT];
};

/* Payloads up to this size are kept inside the record (no allocation for
 * the small messages that arrive before their receive: half of a ping-pong's). */
#define IVF_UNEXP_SMALL 192

/* Payload buffers (queued frame copies, unexpected messages) come from
 * power-of-two classes of 256 B to 128 KiB kept per endpoint (op.c). */
#define IVF_BUF_CLASSES 10

/* A message that arrived before a matching receive. */
struct ivf_unexp {
    struct ivf_unexp *next, *prev;
    struct ivf_peer *peer;
    uint8_t type; /* IVF_EAGER or IVF_RTS */
    uint8_t flags;
    uint64_t tag, data;
    uint64_t remote_id;        /* RTS: the sender's op */
    size_t len;                /* message length */
    size_t got;                /* EAGER: payload bytes received so far */
    void *buf;                 /* EAGER: the payload (small, or allocated) */
    void *claim_context;       /* FI_PEEK|FI_CLAIM'ed by this context */
    struct ivf_op *waiting_op; /* EAGER still arriving: the receive that took it */
    uint8_t small[IVF_UNEXP_SMALL];
};

/* ---- the stream to and from one peer ----------------------------------------- */

/* One frame waiting to go out: header bytes and a payload to copy from. */
struct ivf_txf {
    struct ivf_txf *next;
    struct ivf_hdr hdr;
    const struct iovec *iov; /* payload (into an op's iov, or `own`) */
    size_t iov_count;
    size_t iov_skip;     /* payload starts this far into iov */
    size_t sent;         /* of sizeof(hdr) + hdr.len */
    struct ivf_op *op;   /* to tell when its bytes are out */
    struct ivf_seg *seg; /* FLUSH: the IVC channel the stream moves to */
    struct iovec own_iov;
    uint8_t own[]; /* small payloads are copied here */
};

/* One IVC channel with a peer ("segment" of both streams).  The connector
 * (smaller uid) writes its IVF_IVC_HELLO (id = a random number naming the
 * channel) when the channel opens; the acceptor reads it, answers with its
 * own, and both then send IVF_FLUSH(id) on TCP and continue on the channel.
 * A suspended channel's unread bytes are kept in hb and read before the
 * stream goes back to TCP. */
#define IVF_SEG_AHEAD 256

struct ivf_seg {
    struct ivf_seg *next;
    struct ivf_peer *peer; /* NULL while an accepted channel's hello is awaited */
    ivc_chan_t *chan;      /* NULL once closed */
    uint64_t id;
    bool connector;
    bool dead;   /* suspended or broken: only hb is left */
    bool lost;   /* it broke with bytes of the stream in it (not a suspend or a close) */
    bool active; /* hellos exchanged: FLUSH sent */
    uint8_t hello_in[IVF_HELLO_LEN];
    size_t hello_in_got;
    uint8_t hello_out[IVF_HELLO_LEN];
    size_t hello_out_sent; /* 0..IVF_HELLO_LEN; SIZE_MAX: not started */
    uint64_t deadline_ns;  /* connector: give up if the hellos are not through by then */
    uint8_t *hb;           /* handed back by the suspend */
    size_t hb_len, hb_off;
    /* A small read (a header) takes what follows too, up to IVF_SEG_AHEAD
     * bytes: a small frame's payload, often the next header.  These bytes
     * came out of the ring before anything in hb, so they are read first. */
    size_t ra_len, ra_off;
    uint8_t ra[IVF_SEG_AHEAD];
};

/* IVF_SELF: a peer that is the endpoint itself; its stream is a buffer in
 * memory (the read-ahead buffer, grown up to IVF_SELF_MAX), no carrier. */
enum ivf_carrier { IVF_TCP, IVF_IVC, IVF_SELF };

/* Reading one direction: where the next bytes come from and what they are. */
struct ivf_rx {
    enum ivf_carrier from;
    int fd;              /* the TCP connection the peer writes on (p->fd_in, or p->fd_own
                          * while the peer answers on it), -1 */
    struct ivf_seg *seg; /* while from == IVF_IVC */
    int fd_next;         /* after the peer's MOVE: the connection we opened, else -1 */
    /* TCP bytes read ahead of what the parser asked for (the next header
     * and payload come with one readv): rbuf[rb_off..rb_len); for
     * IVF_SELF, what we wrote to ourselves (rb_cap bytes allocated). */
    char *rbuf;
    size_t rb_off, rb_len, rb_cap;
    /* parser */
    struct ivf_hdr hdr;
    size_t hdr_got;
    size_t payload_left;   /* of the current frame */
    struct ivf_op *dst_op; /* payload goes into this op's iov at dst_off ... */
    size_t dst_off;
    struct ivf_unexp *dst_unexp; /* ... or into an unexpected message's buffer */
    bool stalled;                /* a header waits (a FLUSH before its channel is set up) */
};

/* Writing one direction. */
struct ivf_tx {
    enum ivf_carrier to;
    int fd;              /* the TCP connection we write on (fd_own or fd_in), -1 */
    bool connecting;     /* non-blocking connect() in progress */
    bool parked;         /* MOVE sent, MOVED not read: no TCP to write on yet */
    struct ivf_seg *seg; /* while to == IVF_IVC */
    struct ivf_txf *head, *tail;
    size_t queued; /* bytes in the queue */
};

struct ivf_peer {
    struct ivf_peer *next; /* in the endpoint's list */
    struct ivf_ep *ep;
    struct ivf_addr addr;
    fi_addr_t fi_addr; /* in the endpoint's AV, or FI_ADDR_NOTAVAIL */
    struct ivf_tx tx;
    struct ivf_rx rx;
    int fd_own;           /* the TCP connection we opened to the peer, -1 */
    int fd_in;            /* the one it opened to us (accepted), -1 */
    bool accepted;        /* it opened one: it gets no other */
    struct ivf_seg *segs; /* IVC channels, oldest first */
    int failed;           /* a fatal error (-FI_E*): operations to it fail */
    size_t credit;        /* sender: eager bytes we may still send it */
    size_t credit_owed;   /* receiver: eager bytes taken and not yet given back */
    size_t eager_in;      /* receiver: eager bytes it sent not yet given back (CREDIT
                           * queued): waiting, being taken, or owed; at most credit */
    uint64_t bytes[2][3]; /* [tx, rx][carrier]: logged at close (FI_LOG_LEVEL=info) */
};

/* ---- objects ------------------------------------------------------------------ */

struct ivf_fabric {
    struct fid_fabric fid;
};

struct ivf_domain {
    struct fid_domain fid;
    struct ivf_fabric *fabric;
    pthread_mutex_t lock; /* taken by every call, unless serial */
    /* FI_THREAD_DOMAIN without a progress thread: the application calls in
     * from one thread at a time (Open MPI's mtl ofi asks for this), so the
     * lock is skipped. */
    bool serial;
    struct ivf_ep *eps; /* endpoints, for progress from a CQ */
    int refs;
    pthread_t thread; /* FI_PROGRESS_AUTO: moves data in the background */
    bool has_thread, stop_thread;
};

static inline void ivf_lock(struct ivf_domain *dom)
{
    if (!dom->serial)
        pthread_mutex_lock(&dom->lock);
}

static inline void ivf_unlock(struct ivf_domain *dom)
{
    if (!dom->serial)
        pthread_mutex_unlock(&dom->lock);
}

struct ivf_av {
    struct fid_av fid;
    struct ivf_domain *dom;
    enum fi_av_type type;
    struct ivf_addr *addrs;
    bool *used;
    size_t n, cap;
    int refs;
};

/* A completion, as kept until read. */
struct ivf_cqe {
    struct fi_cq_tagged_entry e;
    fi_addr_t src;
    int err; /* 0, or a positive FI_E* for an error entry */
    size_t olen;
};

struct ivf_cq {
    struct fid_cq fid;
    struct ivf_domain *dom;
    enum fi_cq_format format;
    struct ivf_cqe *ring; /* successful entries */
    size_t cap, head, count;
    struct ivf_cqe *errs; /* error entries */
    size_t err_cap, err_head, err_count;
    struct fi_cq_err_entry last_err;
    unsigned idle;        /* empty reads in a row (see cq.c: IDLE_YIELD) */
    unsigned yield_every; /* ... that give the CPU away once */
    long yield_switches;  /* the thread's involuntary switches after the last yield */
    atomic_bool signaled; /* fi_cq_signal: the (next) sread returns at once */
    int refs;
};

struct ivf_ep {
    struct fid_ep fid;
    struct ivf_ep *next; /* in the domain */
    struct ivf_domain *dom;
    struct fi_info *info;
    struct ivf_av *av;
    struct ivf_cq *tx_cq, *rx_cq;
    uint64_t tx_flags, rx_flags; /* bind flags: FI_SELECTIVE_COMPLETION */
    uint64_t tx_op_flags, rx_op_flags;
    bool enabled;
    /* Finished operations kept for reuse (a posted receive per message
     * otherwise costs a calloc and a free: a fifth of its instructions). */
    struct ivf_op *op_cache;
    int op_cached;
    struct ivf_unexp *unexp_cache; /* freed records for reuse (match.c) */
    int unexp_cached;
    void *buf_cache[IVF_BUF_CLASSES]; /* freed buffers for reuse, per size class (op.c) */
    size_t buf_cached;                /* bytes in them */
    size_t buf_class_cached[IVF_BUF_CLASSES];
    struct ivf_addr addr;
    int listen_fd;
    int *pending_fds; /* accepted, HELLO not read yet */
    size_t n_pending, cap_pending;
    struct ivf_peer *peers;
    struct ivf_peer **peer_at; /* by the fi_addr a send named it (a cache of ivf_peer_get) */
    size_t n_peer_at;
    /* IVC */
    ivc_ctx_t *ivc;
    struct ivf_seg *pending_segs; /* accepted channels awaiting their hello */
    uint64_t next_scan_ns;        /* next look for co-located peers / re-attach */
    bool ivc_busy;                /* some peer has a live channel: wait by spinning */
    bool ivc_setup;               /* a channel is being set up: progress it on every call */
    uint64_t next_slow_ns;        /* next look for new connections and channels */
    unsigned calls;               /* progress calls, to read the clock every 64th */
    /* receive side */
    struct ivf_op *posted_tagged, *posted_msg; /* queues (head; tail = head->prev) */
    struct ivf_unexp *unexp_tagged, *unexp_msg;
    size_t unexp_bytes;
    /* sends waiting for CTS or ACK, receives waiting for DATA */
    struct ivf_op *active;
    uint64_t next_id;
};

/* ---- helpers of every object ------------------------------------------------ */

static inline void ivf_fid_init(struct fid *f, size_t fclass, void *context, struct fi_ops *ops)
{
    f->fclass = fclass;
    f->context = context;
    f->ops = ops;
}

/* An AV or CQ of dom was opened: the domain cannot close before it. */
static inline void ivf_domain_hold(struct ivf_domain *dom)
{
    ivf_lock(dom);
    dom->refs++;
    ivf_unlock(dom);
}

/* Closing an AV or CQ of dom that `refs` endpoints still use: -FI_EBUSY
 * while they do, else the domain lets go of it. */
static inline int ivf_domain_release(struct ivf_domain *dom, int refs)
{
    if (refs > 0)
        return -FI_EBUSY;
    ivf_lock(dom);
    dom->refs--;
    ivf_unlock(dom);
    return 0;
}

/* "Not supported" entries of the ops tables. */
static inline int ivf_no_bind(struct fid *fid, struct fid *bfid, uint64_t flags)
{
    return -FI_ENOSYS;
}
static inline int ivf_no_control(struct fid *fid, int command, void *arg)
{
    return -FI_ENOSYS;
}
static inline int ivf_no_ops_open(struct fid *fid, const char *name, uint64_t flags, void **ops,
                                  void *context)
{
    return -FI_ENOSYS;
}

/* Circular doubly linked queues (*head is the oldest, (*head)->prev the
 * newest) of any struct with next and prev members: the operations'
 * (op.c) and the unexpected messages' (match.c).  Taking x off the queue
 * leaves its links NULL. */
#define IVF_RING_ADD(head, x)                                                                      \
    do {                                                                                           \
        if (!*(head)) {                                                                            \
            (x)->next = (x)->prev = (x);                                                           \
            *(head) = (x);                                                                         \
        } else {                                                                                   \
            (x)->prev = (*(head))->prev;                                                           \
            (x)->next = *(head);                                                                   \
            (*(head))->prev->next = (x);                                                           \
            (*(head))->prev = (x);                                                                 \
        }                                                                                          \
    } while (0)
#define IVF_RING_DEL(head, x)                                                                      \
    do {                                                                                           \
        if ((x)->next == (x)) {                                                                    \
            *(head) = NULL;                                                                        \
        } else {                                                                                   \
            (x)->prev->next = (x)->next;                                                           \
            (x)->next->prev = (x)->prev;                                                           \
            if (*(head) == (x))                                                                    \
                *(head) = (x)->next;                                                               \
        }                                                                                          \
        (x)->next = (x)->prev = NULL;                                                              \
    } while (0)

/* An object's struct fi_ops (no ops_open extensions anywhere). */
#define IVF_FI_OPS(close_fn, bind_fn, control_fn)                                                  \
    {                                                                                              \
        .size = sizeof(struct fi_ops), .close = close_fn, .bind = bind_fn, .control = control_fn,  \
        .ops_open = ivf_no_ops_open,                                                               \
    }

/* ---- functions shared between the files, bottom up ------------------------------- */

/* av.c */
int ivf_av_open(struct fid_domain *dom, struct fi_av_attr *attr, struct fid_av **av, void *context);
/* The address behind fi_addr, or NULL. */
const struct ivf_addr *ivf_av_get(struct ivf_av *av, fi_addr_t fi_addr);
/* The fi_addr of an address, FI_ADDR_NOTAVAIL if not in the AV. */
fi_addr_t ivf_av_find(struct ivf_av *av, const struct ivf_addr *a);

/* op.c */
/* A zeroed operation of ep (its cache, else the heap); NULL without memory.
 * Both under the domain's lock. */
struct ivf_op *ivf_op_new(struct ivf_ep *ep);
void ivf_op_free(struct ivf_op *op);
void ivf_op_cache_drain(struct ivf_ep *ep);
void ivf_unexp_cache_drain(struct ivf_ep *ep);
/* A buffer of at least len bytes (NULL: no memory), and giving it back.
 * What is given back is kept for the next ivf_buf_get of its class, up to
 * a bound: a window of messages would otherwise free and allocate at the
 * top of the heap, which glibc gives back to the kernel and faults in
 * again, page by page. */
void *ivf_buf_get(struct ivf_ep *ep, size_t len);
void ivf_buf_put(struct ivf_ep *ep, void *buf);
void ivf_buf_cache_drain(struct ivf_ep *ep);
/* The next entry of cq's ring (err: of its error ring), to be filled in
 * place; NULL without memory (logged: the completion is lost). */
struct ivf_cqe *ivf_cq_slot(struct ivf_cq *cq, int err);
/* Complete an op: a CQ entry if wanted or if it failed (err: positive
 * FI_E*, 0 for success), never for an fi_inject call. */
void ivf_op_complete(struct ivf_ep *ep, struct ivf_op *op, int err);
/* Receive op matched a message from p (its header's flags, tag and data,
 * its length, the sender's op id). */
void ivf_op_matched(struct ivf_op *op, struct ivf_peer *p, uint8_t flags, uint64_t tag,
                    uint64_t data, size_t msg_len, uint64_t remote_id);
/* A send whose bytes are all out (and acknowledged, if it waits for that)
 * leaves the active queue and completes (with op->err); else nothing
 * happens. */
void ivf_send_done(struct ivf_ep *ep, struct ivf_op *op);
/* Circular queues of ops (head = oldest); del of an op in no queue does nothing. */
void ivf_op_list_add(struct ivf_op **head, struct ivf_op *op);
void ivf_op_list_del(struct ivf_op **head, struct ivf_op *op);
/* The active op of this kind with wire id `id`, or NULL. */
struct ivf_op *ivf_op_find(struct ivf_ep *ep, uint64_t id, enum ivf_op_kind kind);
/* The fi_addr of a peer in ep's AV (looked up again after av_remove). */
fi_addr_t ivf_peer_fi_addr(struct ivf_ep *ep, struct ivf_peer *p);
/* Up to max iovecs describing `len` bytes of iov starting `off` in. */
int ivf_iov_slice(const struct iovec *iov, size_t n, size_t off, size_t len, struct iovec *out,
                  int max);
/* Bytes copied between an iovec array (starting `off` bytes in) and a buffer. */
size_t ivf_iov_to_buf(const struct iovec *iov, size_t n, size_t off, void *buf, size_t len);
size_t ivf_buf_to_iov(const struct iovec *iov, size_t n, size_t off, const void *buf, size_t len);

/* match.c */
/* Queue receive op as posted. */
void ivf_match_post(struct ivf_ep *ep, struct ivf_op *op);
/* The oldest posted receive that takes a message with this tag from p,
 * taken off its queue; NULL if none. */
struct ivf_op *ivf_match_posted(struct ivf_ep *ep, bool tagged, uint64_t tag, struct ivf_peer *p);
/* The same in two steps: find it (left posted), take it off its queue. */
struct ivf_op *ivf_match_find(struct ivf_ep *ep, bool tagged, uint64_t tag, struct ivf_peer *p);
void ivf_match_take(struct ivf_ep *ep, struct ivf_op *op);
/* The oldest unexpected message receive op can take (not claimed, not
 * already taken), or NULL. */
struct ivf_unexp *ivf_unexp_find(struct ivf_ep *ep, const struct ivf_op *op);
/* The unexpected message a FI_PEEK|FI_CLAIM with this context set aside. */
struct ivf_unexp *ivf_unexp_claimed(struct ivf_ep *ep, bool tagged, void *context);
/* Queue an arriving message (header h, msg_len bytes) as unexpected, with a
 * buffer for an EAGER payload; NULL without memory.  In two steps: a
 * record not yet queued (ivf_unexp_new; ivf_unexp_drop frees one that is
 * never queued), then queued (ivf_unexp_link). */
struct ivf_unexp *ivf_unexp_add(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                                size_t msg_len);
struct ivf_unexp *ivf_unexp_new(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                                size_t msg_len);
void ivf_unexp_link(struct ivf_ep *ep, struct ivf_unexp *u);
void ivf_unexp_drop(struct ivf_ep *ep, struct ivf_unexp *u);
void ivf_unexp_del(struct ivf_ep *ep, struct ivf_unexp *u);
/* Free u (off its queue); its eager bytes leave the budget. */
void ivf_unexp_free(struct ivf_ep *ep, struct ivf_unexp *u);
int ivf_cancel_recv(struct ivf_ep *ep, void *context);
void ivf_match_cleanup(struct ivf_ep *ep);

/* conn.c */
/* The listen socket and ep->addr. */
/* The source address fi_getinfo gives for node and service (FI_SOURCE):
 * node's IPv4 address (NULL: 0.0.0.0, every address), service's port
 * (NULL: any); the endpoint binds there (ivf_conn_init). */
int ivf_src_addr(const char *node, const char *service, struct ivf_addr *a);
int ivf_conn_init(struct ivf_ep *ep);
void ivf_conn_fini(struct ivf_ep *ep);
/* Start a non-blocking connect to p (p->fd_own, written on: p->tx.fd; and
 * read on until p opens one of its own). */
int ivf_tcp_connect(struct ivf_peer *p);
/* Accept new connections and read their HELLOs (which name the peer): the
 * next new connection whose peer is known (its fd in *fd, for
 * ivf_stream_adopt), NULL when there is none now. */
struct ivf_peer *ivf_conn_accept(struct ivf_ep *ep, int *fd);
/* Keep fd, a connection just accepted, until its HELLO is read (the
 * fuzzer hands the endpoint its connections here too). */
int ivf_conn_pending_add(struct ivf_ep *ep, int fd);
/* The peer with this address, created if new; NULL without memory. */
struct ivf_peer *ivf_peer_get(struct ivf_ep *ep, const struct ivf_addr *a);
/* The same for a, found in the AV at fi_addr: the peer is remembered by
 * fi_addr (no search of the peers at every send). */
struct ivf_peer *ivf_peer_at(struct ivf_ep *ep, fi_addr_t fi_addr, const struct ivf_addr *a);

/* stream.c */
/* The stream to p starts on a TCP connection whose first frame says who we
 * are: connect (once), HELLO queued.  <0: the peer failed (when the
 * connection cannot be opened, here: whatever waits on the peer fails). */
int ivf_stream_start(struct ivf_ep *ep, struct ivf_peer *p);
/* fd, a connection p opened to us (its HELLO read), becomes p's: read on,
 * and written on unless we opened one first (then the one opened by the
 * smaller uid stays for both directions: a MOVE if it is p's). */
void ivf_stream_adopt(struct ivf_ep *ep, struct ivf_peer *p, int fd);
/* Queue a frame; payload from iov (skip bytes in) or copied when copy.
 * The stream starts if it has not yet, which can fail the peer. */
int ivf_send_frame(struct ivf_ep *ep, struct ivf_peer *peer, const struct ivf_hdr *h,
                   const struct iovec *iov, size_t iov_count, size_t skip, bool copy,
                   struct ivf_op *op);
/* A small frame straight into an idle IVC channel, no queue, no copy kept:
 * 1 if it went (or was taken care of), 0 if it must be queued, <0 if the
 * peer failed. */
int ivf_send_now(struct ivf_ep *ep, struct ivf_peer *peer, const struct ivf_hdr *h,
                 const struct iovec *iov, size_t iov_count);
/* Queue FLUSH(id of seg): once it is out, the stream continues on seg. */
int ivf_send_flush(struct ivf_ep *ep, struct ivf_peer *peer, struct ivf_seg *seg);
/* Write queued frames until the carrier would take no more. */
void ivf_stream_write(struct ivf_ep *ep, struct ivf_peer *p);
/* Has the stream from p (one that began) ended: the peer failed, or closed
 * its connection between frames (its endpoint closed)?  Nothing more of it
 * will come. */
bool ivf_stream_ended(const struct ivf_peer *p);
/* MOVED: write on the connection p opened. */
void ivf_stream_unpark(struct ivf_peer *p);
/* Stop reading p's TCP connection (closed unless we write on it). */
void ivf_stream_rx_close(struct ivf_peer *p);
/* Read the next frame header into p->rx.hdr: 1 once it is all in. */
int ivf_stream_read_header(struct ivf_ep *ep, struct ivf_peer *p);
/* Read the current frame's payload to p->rx.dst_*: 1 once it is all in. */
int ivf_stream_read_payload(struct ivf_ep *ep, struct ivf_peer *p);
/* The peer is gone (connection reset, stream corrupt): everything queued
 * or in flight with it fails; why is logged (once). */
void ivf_peer_fail(struct ivf_ep *ep, struct ivf_peer *p, int err, const char *why);
/* Endpoint close: free every peer (what was moved how is logged). */
void ivf_peers_close(struct ivf_ep *ep);
/* Bytes of a segment: handed back first, then the ring.  0: none now;
 * <0: the segment has nothing more (dead and drained). */
ssize_t ivf_seg_read(struct ivf_seg *seg, void *buf, size_t len);
/* Close and free a segment. */
void ivf_seg_free(struct ivf_seg *seg);
/* rx is done with a segment: unlink, close and free it (and tx leaves it). */
void ivf_seg_release(struct ivf_peer *p, struct ivf_seg *seg);
void ivf_peer_segs_free(struct ivf_peer *p);

/* ivc.c */
/* IVC attach at endpoint creation; detach at close. */
void ivf_ivc_init(struct ivf_ep *ep);
void ivf_ivc_fini(struct ivf_ep *ep);
/* Accept channels, exchange hellos, look for co-located peers. */
void ivf_ivc_progress(struct ivf_ep *ep);
/* The segment named by a FLUSH, its hello read and older unused ones
 * dropped; NULL: not there yet (or *err set: a protocol error). */
struct ivf_seg *ivf_seg_for_flush(struct ivf_ep *ep, struct ivf_peer *p, uint64_t id, int *err);

/* progress.c */
/* Receive op takes unexpected message u (off its queue): an eager one is
 * copied and done, a rendezvous one asks for its data. */
void ivf_recv_take(struct ivf_ep *ep, struct ivf_op *op, struct ivf_unexp *u);
/* Nobody will take unexpected message u: off its queue and freed, its
 * sender told (credit back and the ACK it asked for, or a CTS for nothing). */
void ivf_recv_discard(struct ivf_ep *ep, struct ivf_unexp *u);
/* The common small message, read where it lies (an IVC ring: n bytes
 * readable at `at`): an EAGER frame whole there, without an ACK wanted,
 * which a posted receive takes whole (*op, left posted: the payload is
 * copied into it), or, when none is posted, small enough to be kept inside
 * an unexpected record (*u, not yet queued: the payload is copied into
 * it).  The header is copied into *h before it is checked (the peer can
 * still write there).  Returns the frame's length, 0 if the frame is not
 * one for this path (every other case is the parser's: other frames,
 * truncation, a larger unexpected message, a frame cut by the ring's end).
 * Nothing is done that cannot be undone: once the channel confirms the
 * bytes were the peer's stream, ivf_direct_done() takes the receive off
 * its queue and completes it (or queues the unexpected message), and
 * counts the credit; if it does not, ivf_direct_undo() frees the record. */
size_t ivf_direct_take(struct ivf_ep *ep, struct ivf_peer *p, const void *at, size_t n,
                       struct ivf_hdr *h, struct ivf_op **op, struct ivf_unexp **u);
void ivf_direct_done(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                     struct ivf_op *op, struct ivf_unexp *u);
void ivf_direct_undo(struct ivf_ep *ep, struct ivf_unexp *u);
/* Move bytes: accept, connect, write queued frames, read and act on frames. */
void ivf_progress(struct ivf_ep *ep);
/* Endpoint close: try for a moment to get what is queued out. */
void ivf_progress_drain(struct ivf_ep *ep);
/* Progress every endpoint of the domain (lock held). */
void ivf_domain_progress(struct ivf_domain *dom);
/* Wait up to timeout_ms for something to move on the domain's endpoints. */
void ivf_domain_wait(struct ivf_domain *dom, int timeout_ms);

/* cq.c */
int ivf_cq_open(struct fid_domain *dom, struct fi_cq_attr *attr, struct fid_cq **cq, void *context);
/* What the CQ's and EQ's strerror return. */
const char *ivf_strerror(int prov_errno, char *buf, size_t len);

/* msg.c */
extern struct fi_ops_msg ivf_msg_ops;
extern struct fi_ops_tagged ivf_tagged_ops;

/* ep.c */
int ivf_ep_open(struct fid_domain *dom, struct fi_info *info, struct fid_ep **ep, void *context);

/* domain.c */
int ivf_domain_open(struct fid_fabric *fabric, struct fi_info *info, struct fid_domain **dom,
                    void *context);

#endif
