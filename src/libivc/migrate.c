/*
 * migrate.c - the IVC side of live migration (DESIGN.md section 3, after
 * SC'07 section 4.3) and the control work done while waiting.
 *
 * ivcd marks every endpoint of a VM that must leave SUSPENDING.  That
 * endpoint quiesces each channel (its ring head becomes final), waits until
 * each peer quiesced too, reads what is left in each incoming ring and hands
 * it to the suspend callback, acknowledges, and unmaps the region.  A peer
 * that sees the SUSPENDING mark stops writing (writes return 0), keeps
 * reading until the leaving side quiesced, then hands back the rest the same
 * way.  So every byte written before the suspend is either read or handed
 * back, exactly once, in order.  After the move, ivc_reattach() maps the new
 * region and the arrival callback fires.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void ivc__chan_handback(struct ivc_chan *ch)
{
    struct ivc_ctx *ctx = ch->ctx;

    /* We stop writing first (our head is final for the peer), then read the
     * peer's final head: it published QUIESCED/CLOSED after its last write. */
    atomic_store_explicit(ch->my_side, IVC_SIDE(ch->seq, IVC_SIDE_QUIESCED), memory_order_release);
    if (!ivc__rx_head_update(ch))
        return;
    uint64_t h = ch->rx_head;
    size_t pre = ch->rx_taken_len, len = pre + (size_t)(h - ch->rx_tail);
    uint8_t *buf = NULL;
    if (len) {
        buf = malloc(len);
        if (!buf) {
            /* Cannot hand the bytes back: the stream is broken, say so. */
            ch->state = IVC_CHAN_RESET;
            ch->err = IVC_ENOMEM;
            return;
        }
        if (pre)
            memcpy(buf, ch->rx_taken, pre);
        uint64_t size = ch->rx_mask + 1, off = ch->rx_tail & ch->rx_mask;
        size_t rest = len - pre, first = rest < size - off ? rest : (size_t)(size - off);
        memcpy(buf + pre, ch->rx + off, first);
        if (rest > first)
            memcpy(buf + pre + first, ch->rx, rest - first);
    }
    ch->rx_tail = ch->rx_head = ch->rx_pub = h;
    atomic_store_explicit(&ch->my_hot->tail, h, memory_order_release);
    ch->state = IVC_CHAN_SUSPENDED;
    ch->err = IVC_ESHUTDOWN;
    atomic_store_explicit(ch->my_side, IVC_SIDE(ch->seq, IVC_SIDE_DRAINED), memory_order_release);
    if (ctx->cbs.suspend && !ch->closed) {
        ctx->in_callback++; /* the callback may ivc_close(ch) */
        ctx->cbs.suspend(ch, buf, len, ctx->cbs.arg);
        ctx->in_callback--;
    }
    free(buf);
}

/* Is the peer of a quiescing channel done writing? */
static bool peer_final(const struct ivc_chan *ch, bool *gone)
{
    uint64_t ps = atomic_load_explicit(ch->peer_side, memory_order_acquire);
    uint64_t st = atomic_load_explicit(ch->peer_status, memory_order_acquire);
    *gone = IVC_EP_GEN(st) != ch->peer_gen || IVC_EP_STATE(st) == IVC_EP_FREE;
    if (IVC_SIDE_SEQ(ps) != ch->seq)
        return false;
    uint8_t s = IVC_SIDE_STATE(ps);
    if (s == IVC_SIDE_ABORTED)
        *gone = true; /* it gave up on the channel: nothing to hand back */
    return s == IVC_SIDE_QUIESCED || s == IVC_SIDE_DRAINED || s == IVC_SIDE_CLOSED;
}

void ivc__suspend_self(struct ivc_ctx *ctx)
{
    uint64_t susp = atomic_load_explicit(ctx->status_p, memory_order_acquire);
    struct ivc__backoff b;
    uint64_t deadline = ivc__deadline(ctx->timeout_ms);
    struct ivc_chan *ch;

    /* 1. Stop writing everywhere. */
    for (ch = ctx->chans; ch; ch = ch->next) {
        if (ch->state != IVC_CHAN_OPEN && ch->state != IVC_CHAN_EOF &&
            ch->state != IVC_CHAN_SUSPENDING)
            continue;
        if (ch->closed)
            continue; /* already CLOSED: its head is final */
        atomic_store_explicit(ch->my_side, IVC_SIDE(ch->seq, IVC_SIDE_QUIESCED),
                              memory_order_release);
        ch->state = IVC_CHAN_SUSPENDING;
    }
    /* 2. Hand back each channel once its peer stopped too. */
    ivc__backoff_init(&b);
    for (;;) {
        int pending = 0;
        for (ch = ctx->chans; ch; ch = ch->next) {
            bool gone;
            if (ch->closed || ch->state != IVC_CHAN_SUSPENDING)
                continue;
            if (peer_final(ch, &gone)) {
                ivc__chan_handback(ch);
            } else if (gone) {
                ch->state = IVC_CHAN_RESET;
                ch->err = IVC_ECONNRESET;
            } else {
                pending++;
            }
        }
        if (!pending)
            break;
        if (ivc__now_ns() >= deadline) {
            /* A peer that never quiesced: its later bytes would be lost, so
             * the channel is reported reset rather than suspended. */
            for (ch = ctx->chans; ch; ch = ch->next)
                if (!ch->closed && ch->state == IVC_CHAN_SUSPENDING) {
                    ch->state = IVC_CHAN_RESET;
                    ch->err = IVC_ECONNRESET;
                }
            break;
        }
        ivc__backoff_wait(&b);
    }
    /* 3. Acknowledge to ivcd and leave the region. */
    atomic_store_explicit(&ctx->ep_p->ack, susp, memory_order_release);
    for (ch = ctx->chans; ch; ch = ch->next)
        if (ch->state == IVC_CHAN_OPEN || ch->state == IVC_CHAN_EOF) {
            ch->state = IVC_CHAN_SUSPENDED;
            ch->err = IVC_ESHUTDOWN;
        }
    ivc__detach(ctx);
    ctx->state = IVC_CTX_DETACHED;
}

static void ctx_broken(struct ivc_ctx *ctx, int state, int err)
{
    ctx->state = IVC_CTX_BROKEN;
    for (struct ivc_chan *ch = ctx->chans; ch; ch = ch->next)
        if (ch->state == IVC_CHAN_OPEN || ch->state == IVC_CHAN_EOF ||
            ch->state == IVC_CHAN_SUSPENDING) {
            ch->state = state;
            ch->err = err;
        }
}

void ivc__progress(struct ivc_ctx *ctx)
{
    if (ctx->state != IVC_CTX_ATTACHED)
        return;
    if (ivc__check_header(ctx) < 0) {
        ctx_broken(ctx, IVC_CHAN_CORRUPT, IVC_EPROTO);
        return;
    }
    ivc__drain_socket(ctx);
    uint64_t st = atomic_load_explicit(ctx->status_p, memory_order_acquire);
    if (st != ctx->my_status) {
        if (st == IVC_EP_STATUS(ctx->gen, ctx->vm_id, IVC_EP_SUSPENDING)) {
            ivc__suspend_self(ctx);
        } else if (IVC_EP_GEN(st) != ctx->gen) {
            /* ivcd reclaimed our slot (it believed we were gone). */
            ctx_broken(ctx, IVC_CHAN_RESET, IVC_ECONNRESET);
        } else {
            ctx_broken(ctx, IVC_CHAN_CORRUPT, IVC_EPROTO);
        }
        return;
    }
    for (struct ivc_chan *ch = ctx->chans; ch; ch = ch->next)
        if (!ch->closed &&
            (ch->state == IVC_CHAN_OPEN || ch->state == IVC_CHAN_EOF ||
             ch->state == IVC_CHAN_SUSPENDING) &&
            !ivc__chan_healthy(ch))
            ivc__chan_update(ch);
    ivc__reap(ctx);
}

int ivc_progress(ivc_ctx_t *ctx)
{
    if (!ctx)
        return IVC_EINVAL;
    ivc__progress(ctx);
    return ctx->state;
}

int ivc_reattach(ivc_ctx_t *ctx, const char *location)
{
    int r;

    if (!ctx)
        return IVC_EINVAL;
    if (ctx->state == IVC_CTX_ATTACHED)
        return IVC_EBUSY;
    if (location) {
        char *copy = strdup(location);
        if (!copy)
            return IVC_ENOMEM;
        free(ctx->location);
        ctx->location = copy;
    }
    if (ctx->state == IVC_CTX_BROKEN)
        ivc__detach(ctx);
    if ((r = ivc__attach(ctx)) < 0)
        return r;
    if (ctx->cbs.arrive)
        ctx->cbs.arrive(ctx, ctx->cbs.arg);
    return 0;
}
