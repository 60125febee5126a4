/*
 * internal.h - libivc's private structures and the functions its files
 * share.  Names with the ivc__ prefix are internal; only ivc_* symbols are
 * exported from libivc.so (see libivc.map).
 *
 * A context (struct ivc_ctx) is one endpoint slot in one job region.  It
 * keeps a private, validated copy of everything it needs from the region
 * (geometry, its slot, its channels' ring offsets) and re-reads only the
 * words that legitimately change (indices, states), checking each one.
 */
#ifndef IVC_INTERNAL_H
#define IVC_INTERNAL_H

#include "ivc.h"
#include "ivc_layout.h"

#include <stdbool.h>
#include <stdint.h>

#define IVC_DEFAULT_RING       (256u << 10)
#define IVC_DEFAULT_TIMEOUT_MS 5000
#define IVC_SOCKET_DIR         "/run/vhpc"
#define IVC_PCI_VENDOR         0x1af4
#define IVC_PCI_DEVICE         0x1110
#define IVC_GUEST              "guest"

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* An initiator's channel waiting for the accept (IVC_CHAN_CONNECTING):
 * looks at the answer and moves it to OPEN or a failed state. */
int ivc__connect_poll(struct ivc_chan *ch);

/* A channel.  Pointers into the region are valid only while
 * chan->epoch == ctx->epoch (the context may have detached since). */
struct ivc_chan {
    /* hot: used by every read and write */
    int state;                     /* enum ivc_chan_state */
    uint64_t peer_status_live;     /* peer's ep status while the channel is healthy */
    uint64_t peer_side_open;       /* peer's side word while healthy */
    _Atomic uint64_t *peer_status; /* peer ep's status word */
    _Atomic uint64_t *peer_side;   /* peer's state word in the conn record */
    _Atomic uint64_t *my_side;     /* our state word in the conn record */
    struct ivc_hot *my_hot;        /* we write: tx head, rx tail */
    struct ivc_hot *peer_hot;      /* peer writes: rx head, tx tail */
    struct ivc_ctx *ctx;

    uint8_t *tx;       /* our ring (producer) */
    uint64_t tx_mask;  /* size - 1 */
    uint64_t tx_head;  /* private copy of what we published */
    uint64_t tx_tail;  /* cached consumer index */
    const uint8_t *rx; /* peer's ring (consumer) */
    uint64_t rx_mask;
    uint64_t rx_tail; /* what we consumed */
    uint64_t rx_pub;  /* what of it we published (ivc__rx_publish) */
    uint64_t rx_head; /* cached producer index */

    /* cold */
    uint64_t epoch;
    bool initiator;
    uint32_t conn_idx; /* index of the conn record */
    uint32_t seq;      /* its use number */
    uint32_t peer_ep, peer_gen, peer_client;
    uint32_t tx_page, tx_npages; /* our ring's pages in our share */
    int err;                     /* error returned once the channel is dead */
    bool closed;                 /* ivc_close() was called; kept until the peer lets go */
    /* Bytes a read took from the ring but has not returned yet: a suspend
     * noticed after the copy hands them back first (see ring_read). */
    const void *rx_taken;
    size_t rx_taken_len;
    void *user;
    struct ivc_chan *next, *prev;
};

struct ivc_ctx {
    uint64_t magic;
    uint32_t client_id;
    char *location; /* as given, or NULL for automatic discovery */
    size_t ring_size;
    int timeout_ms;
    ivc_callbacks_t cbs;
    int state; /* enum ivc_ctx_state */

    /* attachment: valid while state == IVC_CTX_ATTACHED */
    uint64_t epoch; /* bumped at every attach */
    int sock;       /* ivcd socket (host) or -1 (guest) */
    uint8_t *base;
    size_t size;
    struct ivc_geometry g;
    struct ivc_hdr hdr_copy; /* constant part, to detect a scribbled header */
    uint16_t vm_id;
    uint32_t ep;
    uint32_t gen;
    uint64_t my_status;         /* our status word while healthy */
    _Atomic uint64_t *status_p; /* &our ep.status */
    struct ivc_ep *ep_p;

    uint64_t *pages; /* bitmap over our share's pages: 1 = used */
    uint32_t npages;
    uint8_t *conn_busy; /* per conn record we own: in use or lingering */
    uint32_t conn_next; /* round-robin cursor */
    uint32_t conn_seq;
    uint64_t seen_req; /* conn_req value fully scanned */
    bool req_maybe;    /* a scan found a request: scan again */

    struct ivc_chan *chans; /* open and lingering channels */
    int in_callback;        /* >0 while a user callback runs: no channel is freed */
};

/* ---- region access (attach.c) ------------------------------------------- */
int ivc__attach(struct ivc_ctx *ctx);
bool ivc__guest_device_present(void);
void ivc__detach(struct ivc_ctx *ctx);
void ivc__drain_socket(struct ivc_ctx *ctx);
/* 0 if the header still says what it said at attach, else marks the context
 * broken and returns IVC_EPROTO. */
int ivc__check_header(struct ivc_ctx *ctx);

static inline struct ivc_ep *ivc__ep(const struct ivc_ctx *ctx, uint32_t i)
{
    return (struct ivc_ep *)(ctx->base + ctx->g.eps_off) + i;
}
static inline struct ivc_conn *ivc__conn(const struct ivc_ctx *ctx, uint32_t i)
{
    return (struct ivc_conn *)(ctx->base + ctx->g.conns_off) + i;
}
static inline uint64_t ivc__share_off(const struct ivc_ctx *ctx, uint32_t ep)
{
    return ctx->g.pool_off + (uint64_t)ep * ctx->g.share_size;
}
/* A consistent copy of a live endpoint slot of our job (the slot's words
 * are copied, then the status is read again to confirm nothing moved). */
struct ivc__ep_snap {
    uint64_t status;
    uint32_t client_id;
    int32_t pid;
};
/* Returns true and fills *snap if slot `i` is LIVE and in our job. */
bool ivc__ep_snapshot(const struct ivc_ctx *ctx, uint32_t i, struct ivc__ep_snap *snap);

/* Is [off, off+size) a valid ring in endpoint `ep`'s share? */
bool ivc__ring_valid(const struct ivc_ctx *ctx, uint32_t ep, uint64_t off, uint64_t size);

/* ---- channels (chan.c) ---------------------------------------------------- */
/* Re-evaluate a channel whose health check failed; updates chan->state. */
void ivc__chan_update(struct ivc_chan *ch);
/* Free what lingering closed channels no longer need. */
void ivc__reap(struct ivc_ctx *ctx);
void ivc__chan_free_all(struct ivc_ctx *ctx);
void ivc__chan_destroy(struct ivc_chan *ch);

/* Cheap check run by every read and write: nothing changed since setup. */
static inline bool ivc__chan_healthy(const struct ivc_chan *ch)
{
    return atomic_load_explicit(ch->peer_status, memory_order_relaxed) == ch->peer_status_live &&
           atomic_load_explicit(ch->ctx->status_p, memory_order_relaxed) == ch->ctx->my_status &&
           atomic_load_explicit(ch->peer_side, memory_order_relaxed) == ch->peer_side_open;
}

/* The peer broke the ring's rules (an index where it cannot be): the
 * channel is corrupt.  Returns IVC_EPROTO. */
static inline int ivc__chan_corrupt(struct ivc_chan *ch)
{
    ch->state = IVC_CHAN_CORRUPT;
    ch->err = IVC_EPROTO;
    return IVC_EPROTO;
}

/* Publish our consumer index: the writer's free space.  An in-place read
 * (ivc_read_commit) does not store it: the index shares its cache line
 * with the head of the ring we write, which the peer polls, and a store
 * there pulls the line away from the peer once more per message (MPI's
 * 8 B ping-pong over the provider paid a transfer each way for it).  It
 * goes out with our next write on the channel (the same line, the same
 * transfer), with the next ivc_read (which publishes at once, as it always
 * did), and on its own once a quarter of the ring was consumed since.  A
 * writer never waits for it for ever: it finds no room only when more than
 * 3/4 of the ring is unread, and the reader that reads that publishes. */
static inline void ivc__rx_publish(struct ivc_chan *ch)
{
    if (ch->rx_pub != ch->rx_tail) {
        atomic_store_explicit(&ch->my_hot->tail, ch->rx_tail, memory_order_release);
        ch->rx_pub = ch->rx_tail;
    }
}

/* ch->rx_tail moved: publish it if a quarter ring waits. */
static inline void ivc__rx_consumed(struct ivc_chan *ch)
{
    if (ch->rx_tail - ch->rx_pub >= (ch->rx_mask + 1) / 4)
        ivc__rx_publish(ch);
}

/* Read the peer's published head into ch->rx_head.  It may only move
 * forward and never more than a ring past our tail: false (the channel is
 * then corrupt) if it broke that. */
static inline bool ivc__rx_head_update(struct ivc_chan *ch)
{
    uint64_t h = atomic_load_explicit(&ch->peer_hot->head, memory_order_acquire);
    if (h < ch->rx_head || h - ch->rx_tail > ch->rx_mask + 1) {
        ivc__chan_corrupt(ch);
        return false;
    }
    ch->rx_head = h;
    return true;
}

/* ---- migration (migrate.c) ----------------------------------------------- */
/* Suspend the whole context (ivcd asked): quiesce, drain, call back, detach. */
void ivc__suspend_self(struct ivc_ctx *ctx);
/* Drain a channel whose peer quiesced and hand the bytes to the callback. */
void ivc__chan_handback(struct ivc_chan *ch);
/* Run control work: our own status, every channel's peer. */
void ivc__progress(struct ivc_ctx *ctx);

/* ---- waiting (wait.c) ---------------------------------------------------- */
struct ivc__backoff {
    uint64_t start_ns;
    uint64_t sleep_ns;
    unsigned iter;
};
uint64_t ivc__now_ns(void);
/* Absolute deadline for a timeout in ms; UINT64_MAX for -1. */
uint64_t ivc__deadline(int timeout_ms);
void ivc__backoff_init(struct ivc__backoff *b);
/* One step of waiting: spin, then yield, then sleep with growing pauses. */
void ivc__backoff_wait(struct ivc__backoff *b);

static inline void ivc__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif /* IVC_INTERNAL_H */
