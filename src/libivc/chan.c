/*
 * chan.c - channel setup and teardown: ivc_connect(), ivc_accept(),
 * ivc_close(), and the state machine that reacts when a channel's shared
 * state changes (peer closed, died, suspending, or the region is corrupt).
 *
 * The initiator owns the conn record and the ring it produces into (in its
 * own share); the target answers in the record's target line with a ring in
 * its share.  A closed channel lingers privately until its peer has let go of
 * our ring and record, so that memory is never reused under a reader.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- private allocation of our share's pages ------------------------------ */

static bool page_used(const struct ivc_ctx *ctx, uint32_t i)
{
    return ctx->pages[i / 64] >> (i % 64) & 1;
}

static void pages_mark(struct ivc_ctx *ctx, uint32_t first, uint32_t n, bool used)
{
    for (uint32_t i = first; i < first + n; i++) {
        if (used)
            ctx->pages[i / 64] |= 1ULL << (i % 64);
        else
            ctx->pages[i / 64] &= ~(1ULL << (i % 64));
    }
}

/* First fit; returns the first page or -1. */
static int64_t pages_alloc(struct ivc_ctx *ctx, uint32_t n)
{
    uint32_t run = 0;
    for (uint32_t i = 0; i < ctx->npages; i++) {
        run = page_used(ctx, i) ? 0 : run + 1;
        if (run == n) {
            pages_mark(ctx, i + 1 - n, n, true);
            return i + 1 - n;
        }
    }
    return -1;
}

/* A free conn record of ours, round robin so a record rests between uses. */
static int64_t conn_alloc(struct ivc_ctx *ctx)
{
    uint32_t n = ctx->g.conns_per_ep;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (ctx->conn_next + k) % n;
        if (!ctx->conn_busy[i]) {
            ctx->conn_busy[i] = 1;
            ctx->conn_next = (i + 1) % n;
            return i;
        }
    }
    return -1;
}

/* ---- channel objects ------------------------------------------------------ */

static struct ivc_chan *chan_new(struct ivc_ctx *ctx, bool initiator, uint32_t conn_idx,
                                 uint32_t seq, uint32_t peer_ep, uint64_t peer_status,
                                 uint32_t peer_client, int64_t tx_page, uint64_t rx_off,
                                 uint64_t rx_size)
{
    struct ivc_chan *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return NULL;
    struct ivc_conn *c = ivc__conn(ctx, conn_idx);
    ch->ctx = ctx;
    ch->epoch = ctx->epoch;
    ch->initiator = initiator;
    ch->conn_idx = conn_idx;
    ch->seq = seq;
    ch->peer_ep = peer_ep;
    ch->peer_gen = IVC_EP_GEN(peer_status);
    ch->peer_client = peer_client;
    ch->peer_status = &ivc__ep(ctx, peer_ep)->status;
    ch->peer_status_live = peer_status;
    if (initiator) {
        ch->my_side = &c->i_state;
        ch->peer_side = &c->t_state;
        ch->my_hot = &c->i_hot;
        ch->peer_hot = &c->t_hot;
        ch->peer_side_open = IVC_SIDE(seq, IVC_SIDE_ACCEPTED);
    } else {
        ch->my_side = &c->t_state;
        ch->peer_side = &c->i_state;
        ch->my_hot = &c->t_hot;
        ch->peer_hot = &c->i_hot;
        /* The initiator moves REQUESTED -> OPEN once it sees our answer. */
        ch->peer_side_open = IVC_SIDE(seq, IVC_SIDE_REQUESTED);
    }
    ch->tx_page = (uint32_t)tx_page;
    ch->tx_npages = (uint32_t)(ctx->ring_size / IVC_PAGE);
    ch->tx = ctx->base + ivc__share_off(ctx, ctx->ep) + (uint64_t)tx_page * IVC_PAGE;
    ch->tx_mask = ctx->ring_size - 1;
    ch->rx = ctx->base + rx_off;
    ch->rx_mask = rx_size - 1;
    ch->state = initiator ? IVC_CHAN_CONNECTING : IVC_CHAN_OPEN;
    ch->next = ctx->chans;
    if (ctx->chans)
        ctx->chans->prev = ch;
    ctx->chans = ch;
    return ch;
}

void ivc__chan_destroy(struct ivc_chan *ch)
{
    struct ivc_ctx *ctx = ch->ctx;
    if (ch->epoch == ctx->epoch && ctx->state == IVC_CTX_ATTACHED) {
        pages_mark(ctx, ch->tx_page, ch->tx_npages, false);
        if (ch->initiator)
            ctx->conn_busy[ch->conn_idx - ctx->ep * ctx->g.conns_per_ep] = 0;
    }
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        ctx->chans = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    free(ch);
}

void ivc__chan_free_all(struct ivc_ctx *ctx)
{
    while (ctx->chans)
        ivc__chan_destroy(ctx->chans);
}

/* Has the peer of a closed channel let go of our ring and record? */
static bool peer_done(const struct ivc_chan *ch)
{
    uint64_t ps = atomic_load_explicit(ch->peer_side, memory_order_acquire);
    uint64_t st = atomic_load_explicit(ch->peer_status, memory_order_acquire);
    if (IVC_EP_GEN(st) != ch->peer_gen || IVC_EP_STATE(st) == IVC_EP_FREE)
        return true; /* gone */
    if (IVC_SIDE_SEQ(ps) != ch->seq)
        return true; /* never answered (or garbage): it never used our ring */
    switch (IVC_SIDE_STATE(ps)) {
    case IVC_SIDE_CLOSED:
    case IVC_SIDE_DRAINED:
    case IVC_SIDE_ABORTED:
    case IVC_SIDE_REFUSED:
    case IVC_SIDE_IDLE: return true;
    case IVC_SIDE_REQUESTED:
    case IVC_SIDE_ACCEPTED:
    case IVC_SIDE_OPEN:
    case IVC_SIDE_QUIESCED: return false;
    default: return true; /* garbage: nothing sane will come from that side */
    }
}

void ivc__reap(struct ivc_ctx *ctx)
{
    struct ivc_chan *ch = ctx->chans, *next;
    if (ctx->in_callback)
        return; /* our caller is walking the channel list */
    for (; ch; ch = next) {
        next = ch->next;
        if (!ch->closed)
            continue;
        if (ch->epoch != ctx->epoch || ctx->state != IVC_CTX_ATTACHED || peer_done(ch))
            ivc__chan_destroy(ch);
    }
}

static void chan_dead(struct ivc_chan *ch, int state, int err)
{
    ch->state = state;
    ch->err = err;
}

/* React to a failed health check.  Order matters: a peer that quiesced or
 * closed has a final head, and its ring stays readable (ivcd keeps a
 * departed peer's share until partners drained), so that is checked before
 * concluding that the peer died. */
void ivc__chan_update(struct ivc_chan *ch)
{
    struct ivc_ctx *ctx = ch->ctx;

    if (ch->state != IVC_CHAN_OPEN && ch->state != IVC_CHAN_EOF && ch->state != IVC_CHAN_SUSPENDING)
        return;
    if (ch->epoch != ctx->epoch || ctx->state != IVC_CTX_ATTACHED) {
        chan_dead(ch, ctx->state == IVC_CTX_BROKEN ? IVC_CHAN_CORRUPT : IVC_CHAN_SUSPENDED,
                  ctx->state == IVC_CTX_BROKEN ? IVC_EPROTO : IVC_ESHUTDOWN);
        return;
    }
    if (atomic_load_explicit(ctx->status_p, memory_order_acquire) != ctx->my_status) {
        ivc__progress(ctx); /* our own slot changed: suspend, or broken */
        if (ch->epoch != ctx->epoch || ctx->state != IVC_CTX_ATTACHED) {
            ivc__chan_update(ch); /* now takes the detached branch above */
            return;
        }
        if (atomic_load_explicit(ctx->status_p, memory_order_acquire) != ctx->my_status)
            return; /* progress() set every channel's state */
    }

    uint64_t ps = atomic_load_explicit(ch->peer_side, memory_order_acquire);
    uint64_t st = atomic_load_explicit(ch->peer_status, memory_order_acquire);
    bool gone = IVC_EP_GEN(st) != ch->peer_gen || IVC_EP_STATE(st) == IVC_EP_FREE;

    if (IVC_SIDE_SEQ(ps) != ch->seq) {
        chan_dead(ch, gone ? IVC_CHAN_RESET : IVC_CHAN_CORRUPT, gone ? IVC_ECONNRESET : IVC_EPROTO);
        return;
    }
    switch (IVC_SIDE_STATE(ps)) {
    case IVC_SIDE_REQUESTED:
        if (ch->initiator)
            goto corrupt;
        break;
    case IVC_SIDE_OPEN:
        if (ch->initiator)
            goto corrupt;
        ch->peer_side_open = ps; /* the initiator saw our answer */
        break;
    case IVC_SIDE_ACCEPTED:
        if (!ch->initiator)
            goto corrupt;
        break;
    case IVC_SIDE_CLOSED:
        if (ch->state == IVC_CHAN_SUSPENDING || IVC_EP_STATE(st) == IVC_EP_SUSPENDING) {
            /* Its head is final and its share is about to go: hand back the
             * rest now rather than wait for our reader to drain it. */
            ivc__chan_handback(ch);
            return;
        }
        ch->state = IVC_CHAN_EOF;
        ch->peer_side_open = ps;
        return;
    case IVC_SIDE_QUIESCED:
    case IVC_SIDE_DRAINED: ivc__chan_handback(ch); return;
    case IVC_SIDE_ABORTED: /* it gave up after an error: not an end of stream */
        chan_dead(ch, IVC_CHAN_RESET, IVC_ECONNRESET);
        return;
    default: goto corrupt;
    }

    if (st != ch->peer_status_live) {
        if (!gone && IVC_EP_STATE(st) == IVC_EP_SUSPENDING &&
            IVC_EP_CLIENT(st) == IVC_EP_CLIENT(ch->peer_status_live)) {
            /* The peer is being suspended: stop writing, keep reading until
             * it quiesced, then hand the rest back. */
            atomic_store_explicit(ch->my_side, IVC_SIDE(ch->seq, IVC_SIDE_QUIESCED),
                                  memory_order_release);
            ch->state = IVC_CHAN_SUSPENDING;
            ch->peer_status_live = st;
            return;
        }
        chan_dead(ch, IVC_CHAN_RESET, IVC_ECONNRESET);
        return;
    }
    return;
corrupt:
    chan_dead(ch, IVC_CHAN_CORRUPT, IVC_EPROTO);
}

/* ---- connect ---------------------------------------------------------------- */

/* Find the live endpoint registered as `client_id` in our job. */
static int find_peer(struct ivc_ctx *ctx, uint32_t client_id, uint32_t *ep, uint64_t *status)
{
    for (uint32_t i = 0; i < ctx->g.max_eps; i++) {
        struct ivc__ep_snap snap;
        if (i == ctx->ep || !ivc__ep_snapshot(ctx, i, &snap) || snap.client_id != client_id)
            continue;
        *ep = i;
        *status = snap.status;
        return 0;
    }
    return IVC_ENOENT;
}

static int ctx_usable(struct ivc_ctx *ctx)
{
    if (ctx->state == IVC_CTX_ATTACHED)
        return ivc__check_header(ctx);
    return ctx->state == IVC_CTX_BROKEN ? IVC_EPROTO : IVC_ENOTCONN;
}

/* Post a connection request to the member at endpoint slot pe (status
 * pst): a conn record and our ring, then a channel in CONNECTING. */
static int connect_post(struct ivc_ctx *ctx, uint32_t peer_client_id, uint32_t pe, uint64_t pst,
                        ivc_chan_t **out)
{
    ivc__reap(ctx);
    int64_t k = conn_alloc(ctx);
    if (k < 0)
        return IVC_ENOSPC;
    int64_t page = pages_alloc(ctx, (uint32_t)(ctx->ring_size / IVC_PAGE));
    if (page < 0) {
        ctx->conn_busy[k] = 0;
        return IVC_ENOSPC;
    }
    uint32_t idx = ctx->ep * ctx->g.conns_per_ep + (uint32_t)k;
    uint32_t seq = ++ctx->conn_seq;
    if (!seq) /* 0 is the idle record's number */
        seq = ++ctx->conn_seq;
    struct ivc_conn *c = ivc__conn(ctx, idx);
    c->target_ep = pe;
    c->target_gen = IVC_EP_GEN(pst);
    c->init_gen = ctx->gen;
    c->target_client = peer_client_id;
    c->i_ring_off = ivc__share_off(ctx, ctx->ep) + (uint64_t)page * IVC_PAGE;
    c->i_ring_size = (uint32_t)ctx->ring_size;
    atomic_store_explicit(&c->i_hot.head, 0, memory_order_relaxed);
    atomic_store_explicit(&c->i_hot.tail, 0, memory_order_relaxed);
    atomic_store_explicit(&c->i_state, IVC_SIDE(seq, IVC_SIDE_REQUESTED), memory_order_release);
    atomic_fetch_add_explicit(&ivc__ep(ctx, pe)->conn_req, 1, memory_order_acq_rel);

    /* The channel object exists from here on so that every exit path can
     * hand the record and ring to the lingering logic. */
    struct ivc_chan *ch = chan_new(ctx, true, idx, seq, pe, pst, peer_client_id, page,
                                   ivc__share_off(ctx, pe), IVC_RING_MIN);
    if (!ch) {
        atomic_store_explicit(&c->i_state, IVC_SIDE(seq, IVC_SIDE_CLOSED), memory_order_release);
        pages_mark(ctx, (uint32_t)page, (uint32_t)(ctx->ring_size / IVC_PAGE), false);
        ctx->conn_busy[k] = 0; /* the target may still answer: it sees CLOSED and withdraws */
        return IVC_ENOMEM;
    }
    *out = ch;
    return 0;
}

/* A connecting channel whose request failed: withdraw it. */
static void connect_fail(struct ivc_chan *ch, int state, int err)
{
    struct ivc_ctx *ctx = ch->ctx;
    if (ctx->state == IVC_CTX_ATTACHED && ch->epoch == ctx->epoch)
        atomic_store_explicit(ch->my_side, IVC_SIDE(ch->seq, IVC_SIDE_CLOSED),
                              memory_order_release);
    ch->state = state;
    ch->err = err;
}

int ivc__connect_poll(struct ivc_chan *ch)
{
    struct ivc_ctx *ctx = ch->ctx;
    if (ch->state != IVC_CHAN_CONNECTING)
        return ch->state;
    if (ch->epoch != ctx->epoch || ctx->state != IVC_CTX_ATTACHED) {
        /* Suspended (or broken) before the answer: the request is void. */
        ch->state = ctx->state == IVC_CTX_BROKEN ? IVC_CHAN_CORRUPT : IVC_CHAN_SUSPENDED;
        ch->err = ctx->state == IVC_CTX_BROKEN ? IVC_EPROTO : IVC_ESHUTDOWN;
        return ch->state;
    }
    struct ivc_conn *c = ivc__conn(ctx, ch->conn_idx);
    uint64_t ts = atomic_load_explicit(&c->t_state, memory_order_acquire);
    if (IVC_SIDE_SEQ(ts) == ch->seq && IVC_SIDE_STATE(ts) == IVC_SIDE_ACCEPTED) {
        uint64_t off = c->t_ring_off, size = c->t_ring_size;
        if (!ivc__ring_valid(ctx, ch->peer_ep, off, size)) {
            connect_fail(ch, IVC_CHAN_CORRUPT, IVC_EPROTO);
            return ch->state;
        }
        ch->rx = ctx->base + off;
        ch->rx_mask = size - 1;
        ch->state = IVC_CHAN_OPEN;
        atomic_store_explicit(&c->i_state, IVC_SIDE(ch->seq, IVC_SIDE_OPEN), memory_order_release);
        return ch->state;
    }
    if (IVC_SIDE_SEQ(ts) == ch->seq && IVC_SIDE_STATE(ts) == IVC_SIDE_REFUSED) {
        connect_fail(ch, IVC_CHAN_RESET, IVC_ECONNREFUSED);
        return ch->state;
    }
    if (atomic_load_explicit(ch->peer_status, memory_order_acquire) != ch->peer_status_live)
        connect_fail(ch, IVC_CHAN_RESET, IVC_ECONNRESET);
    return ch->state;
}

int ivc_connect_start(ivc_ctx_t *ctx, uint32_t peer_client_id, ivc_chan_t **out)
{
    uint32_t pe;
    uint64_t pst;
    int r;
    if (!ctx || !out || peer_client_id == ctx->client_id)
        return IVC_EINVAL;
    *out = NULL;
    ivc__progress(ctx);
    if ((r = ctx_usable(ctx)) < 0)
        return r;
    if (find_peer(ctx, peer_client_id, &pe, &pst) != 0)
        return IVC_ENOENT;
    return connect_post(ctx, peer_client_id, pe, pst, out);
}

int ivc_connect(ivc_ctx_t *ctx, uint32_t peer_client_id, int timeout_ms, ivc_chan_t **out)
{
    struct ivc__backoff b;
    uint64_t deadline = ivc__deadline(timeout_ms);
    uint32_t pe;
    uint64_t pst;
    int r;

    if (!ctx || !out || peer_client_id == ctx->client_id)
        return IVC_EINVAL;
    *out = NULL;
    ivc__backoff_init(&b);
    for (;;) {
        ivc__progress(ctx);
        if ((r = ctx_usable(ctx)) < 0)
            return r;
        if (find_peer(ctx, peer_client_id, &pe, &pst) == 0)
            break;
        if (ivc__now_ns() >= deadline)
            return IVC_ENOENT;
        ivc__backoff_wait(&b);
    }
    struct ivc_chan *ch;
    if ((r = connect_post(ctx, peer_client_id, pe, pst, &ch)) < 0)
        return r;
    ivc__backoff_init(&b);
    for (;;) {
        int st = ivc__connect_poll(ch);
        if (st == IVC_CHAN_OPEN) {
            *out = ch;
            return 0;
        }
        if (st != IVC_CHAN_CONNECTING) {
            r = ch->err;
            break;
        }
        if (ivc__now_ns() >= deadline) {
            connect_fail(ch, IVC_CHAN_RESET, IVC_ETIMEDOUT);
            r = IVC_ETIMEDOUT;
            break;
        }
        if (b.iter % 64 == 63) {
            ivc__progress(ctx);
            if ((r = ctx_usable(ctx)) < 0) {
                connect_fail(ch, IVC_CHAN_RESET, r);
                break;
            }
        }
        ivc__backoff_wait(&b);
    }
    ch->closed = true;
    ivc__reap(ctx);
    return r;
}

/* ---- accept ----------------------------------------------------------------- */

/* Look through every conn record for a request addressed to us.  Returns 0
 * with a channel, IVC_EAGAIN when none is pending, or an error. */
static int scan_requests(struct ivc_ctx *ctx, struct ivc_chan **out)
{
    uint32_t cpe = ctx->g.conns_per_ep;
    for (uint32_t e = 0; e < ctx->g.max_eps; e++) {
        if (e == ctx->ep)
            continue;
        for (uint32_t k = 0; k < cpe; k++) {
            uint32_t idx = e * cpe + k;
            struct ivc_conn *c = ivc__conn(ctx, idx);
            uint64_t is = atomic_load_explicit(&c->i_state, memory_order_acquire);
            if (IVC_SIDE_STATE(is) != IVC_SIDE_REQUESTED)
                continue;
            if (c->target_ep != ctx->ep || c->target_gen != ctx->gen ||
                c->target_client != ctx->client_id)
                continue;
            uint32_t seq = IVC_SIDE_SEQ(is);
            uint64_t ts = atomic_load_explicit(&c->t_state, memory_order_acquire);
            if (IVC_SIDE_SEQ(ts) == seq && IVC_SIDE_STATE(ts) != IVC_SIDE_IDLE)
                continue; /* answered already */
            struct ivc_ep *ie = ivc__ep(ctx, e);
            uint64_t est = atomic_load_explicit(&ie->status, memory_order_acquire);
            uint32_t init_gen = c->init_gen;
            uint64_t roff = c->i_ring_off, rsize = c->i_ring_size;
            uint32_t peer_client = ie->client_id;
            if (IVC_EP_STATE(est) != IVC_EP_LIVE || IVC_EP_GEN(est) != init_gen ||
                ie->job_magic != ctx->magic)
                continue;
            if (!ivc__ring_valid(ctx, e, roff, rsize)) {
                atomic_store_explicit(&c->t_state, IVC_SIDE(seq, IVC_SIDE_REFUSED),
                                      memory_order_release);
                continue;
            }
            int64_t page = pages_alloc(ctx, (uint32_t)(ctx->ring_size / IVC_PAGE));
            if (page < 0) {
                atomic_store_explicit(&c->t_state, IVC_SIDE(seq, IVC_SIDE_REFUSED),
                                      memory_order_release);
                return IVC_ENOSPC;
            }
            c->t_ring_off = ivc__share_off(ctx, ctx->ep) + (uint64_t)page * IVC_PAGE;
            c->t_ring_size = (uint32_t)ctx->ring_size;
            atomic_store_explicit(&c->t_hot.head, 0, memory_order_relaxed);
            atomic_store_explicit(&c->t_hot.tail, 0, memory_order_relaxed);
            atomic_store_explicit(&c->t_state, IVC_SIDE(seq, IVC_SIDE_ACCEPTED),
                                  memory_order_release);
            struct ivc_chan *ch =
                chan_new(ctx, false, idx, seq, e, est, peer_client, page, roff, rsize);
            if (!ch) {
                atomic_store_explicit(&c->t_state, IVC_SIDE(seq, IVC_SIDE_CLOSED),
                                      memory_order_release);
                pages_mark(ctx, (uint32_t)page, (uint32_t)(ctx->ring_size / IVC_PAGE), false);
                return IVC_ENOMEM;
            }
            /* If the initiator gave up meanwhile, the channel reads as EOF. */
            *out = ch;
            return 0;
        }
    }
    return IVC_EAGAIN;
}

static int try_accept(struct ivc_ctx *ctx, struct ivc_chan **out)
{
    uint64_t req = atomic_load_explicit(&ctx->ep_p->conn_req, memory_order_acquire);
    if (!ctx->req_maybe && req == ctx->seen_req)
        return IVC_EAGAIN;
    int r = scan_requests(ctx, out);
    if (r == 0) {
        ctx->req_maybe = true; /* there may be more */
        return 0;
    }
    ctx->seen_req = req;
    ctx->req_maybe = false;
    return r;
}

int ivc_accept(ivc_ctx_t *ctx, int timeout_ms, ivc_chan_t **out)
{
    struct ivc__backoff b;
    uint64_t deadline = ivc__deadline(timeout_ms);
    int r;

    if (!ctx || !out)
        return IVC_EINVAL;
    *out = NULL;
    ivc__backoff_init(&b);
    for (;;) {
        if (b.iter % 64 == 0)
            ivc__progress(ctx);
        if ((r = ctx_usable(ctx)) < 0)
            return r;
        r = try_accept(ctx, out);
        if (r != IVC_EAGAIN)
            return r;
        if (ivc__now_ns() >= deadline)
            return IVC_ETIMEDOUT;
        ivc__backoff_wait(&b);
    }
}

/* ---- close -------------------------------------------------------------------- */

int ivc_close(ivc_chan_t *ch)
{
    if (!ch || ch->closed)
        return IVC_EINVAL;
    struct ivc_ctx *ctx = ch->ctx;
    ch->closed = true;
    ch->user = NULL;
    /* CLOSED (or ABORTED after an error, so the peer does not take it for a
     * clean end) tells the peer we are done with its ring; ivcd waits for
     * that before reusing a departed peer's memory.  A suspended channel
     * already said so with DRAINED. */
    if (ch->epoch == ctx->epoch && ctx->state == IVC_CTX_ATTACHED &&
        ch->state != IVC_CHAN_SUSPENDED) {
        /* A request never answered is withdrawn with CLOSED (connect_fail
         * did so already for a refused or failed one). */
        bool failed = (ch->state == IVC_CHAN_RESET || ch->state == IVC_CHAN_CORRUPT) &&
                      ch->err != IVC_ECONNREFUSED && ch->err != IVC_ETIMEDOUT;
        atomic_store_explicit(ch->my_side,
                              IVC_SIDE(ch->seq, failed ? IVC_SIDE_ABORTED : IVC_SIDE_CLOSED),
                              memory_order_release);
    }
    ivc__reap(ctx);
    return 0;
}
