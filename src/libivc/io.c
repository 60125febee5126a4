/*
 * io.c - moving bytes: ivc_write() and ivc_read() on a channel's pair of
 * single-producer/single-consumer rings.
 *
 * The fast path touches the data, one index we own, and (only when the
 * cached copy says the ring looks full or empty) the peer's index; plus three
 * read-mostly words that say the channel is still healthy.  Every index read
 * from the region is checked against what it can legally be: the peer can
 * only move its index forward and never past ours by more than a ring.
 */
#include "internal.h"

#include <string.h>

/* Bytes copied between two index updates on large transfers. */
#define IVC_PUBLISH_CHUNK (32u << 10)

/* Copy len bytes at the producer index (wrapping), without publishing. */
static inline void copy_in(struct ivc_chan *ch, const void *src, size_t len)
{
    uint64_t size = ch->tx_mask + 1, off = ch->tx_head & ch->tx_mask;
    size_t first = len < size - off ? len : (size_t)(size - off);
    memcpy(ch->tx + off, src, first);
    if (len > first)
        memcpy(ch->tx, (const char *)src + first, len - first);
    ch->tx_head += len;
}

/* Copy what fits of the buffers into the ring, in order.  A small write
 * that does not wrap is plain copies and one index update (a frame's header
 * and payload become visible together: one cache line handed over, not
 * two); a large one publishes every IVC_PUBLISH_CHUNK so that the reader
 * copies out while we still copy in (a pipeline, not two serial copies). */
static inline ssize_t ring_writev(struct ivc_chan *ch, const struct iovec *iov, int cnt)
{
    uint64_t size = ch->tx_mask + 1;
    uint64_t space = size - (ch->tx_head - ch->tx_tail);
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    if (space < total) {
        uint64_t t = atomic_load_explicit(&ch->peer_hot->tail, memory_order_acquire);
        if (unlikely(t > ch->tx_head || t < ch->tx_tail))
            return ivc__chan_corrupt(ch);
        ch->tx_tail = t;
        space = size - (ch->tx_head - t);
        if (!space)
            return 0;
    }
    uint64_t off = ch->tx_head & ch->tx_mask;
    if (total <= space && total <= IVC_PUBLISH_CHUNK && off + total <= size) {
        /* The common case, a frame that fits without wrapping: plain
         * copies, one index update. */
        uint8_t *d = ch->tx + off;
        for (int i = 0; i < cnt; i++) {
            if (iov[i].iov_len) /* an empty piece may have no address: not memcpy's */
                memcpy(d, iov[i].iov_base, iov[i].iov_len);
            d += iov[i].iov_len;
        }
        ch->tx_head += total;
        ivc__rx_publish(ch); /* the same line as the head: no extra transfer */
        atomic_store_explicit(&ch->my_hot->head, ch->tx_head, memory_order_release);
        return (ssize_t)total;
    }
    size_t n = total < space ? total : (size_t)space, done = 0, unpublished = 0;
    for (int i = 0; i < cnt && done < n; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len < n - done ? iov[i].iov_len : n - done;
        while (left) {
            size_t c = IVC_PUBLISH_CHUNK - unpublished;
            if (c > left)
                c = left;
            copy_in(ch, p, c);
            p += c, left -= c, done += c, unpublished += c;
            if (unpublished == IVC_PUBLISH_CHUNK) {
                atomic_store_explicit(&ch->my_hot->head, ch->tx_head, memory_order_release);
                unpublished = 0;
            }
        }
    }
    if (unpublished)
        atomic_store_explicit(&ch->my_hot->head, ch->tx_head, memory_order_release);
    ivc__rx_publish(ch);
    return (ssize_t)n;
}

static inline ssize_t ring_read(struct ivc_chan *ch, void *buf, size_t len)
{
    uint64_t avail = ch->rx_head - ch->rx_tail;

    if (!avail) {
        if (unlikely(!ivc__rx_head_update(ch)))
            return ch->err;
        avail = ch->rx_head - ch->rx_tail;
        if (!avail)
            return 0;
    }
    size_t n = len < avail ? len : (size_t)avail;
    uint64_t size = ch->rx_mask + 1;
    for (size_t done = 0; done < n;) {
        size_t c = n - done < IVC_PUBLISH_CHUNK ? n - done : IVC_PUBLISH_CHUNK;
        uint64_t off = (ch->rx_tail + done) & ch->rx_mask;
        size_t first = c < size - off ? c : (size_t)(size - off);
        memcpy((char *)buf + done, ch->rx + off, first);
        if (c > first)
            memcpy((char *)buf + done + first, ch->rx, c - first);
        done += c;
        if (done < n) { /* let the writer refill behind us */
            ch->rx_pub = ch->rx_tail + done;
            atomic_store_explicit(&ch->my_hot->tail, ch->rx_pub, memory_order_release);
        }
    }
    ch->rx_tail += n;
    /* If the peer died while we copied, ivcd may have handed its share to a
     * new endpoint: the bytes could be someone else's.  Check again. */
    atomic_thread_fence(memory_order_acquire);
    if (unlikely(atomic_load_explicit(ch->peer_status, memory_order_relaxed) !=
                     ch->peer_status_live &&
                 ch->state == IVC_CHAN_OPEN)) {
        /* A suspend found here hands back what follows our tail, which we
         * may already have let the writer reuse (the chunks above): these
         * bytes go to the callback first, and are not returned as well. */
        ch->rx_taken = buf;
        ch->rx_taken_len = n;
        ivc__chan_update(ch);
        ch->rx_taken = NULL;
        ch->rx_taken_len = 0;
        if (ch->state != IVC_CHAN_OPEN && ch->state != IVC_CHAN_SUSPENDING &&
            ch->state != IVC_CHAN_EOF)
            return ch->err; /* reset, corrupt, or suspended (handed back) */
    }
    ivc__rx_publish(ch); /* at once, unlike a commit's (see ivc__rx_publish) */
    return (ssize_t)n;
}

/* Bring the channel's state up to date if its shared state moved. */
static void refresh(struct ivc_chan *ch)
{
    if (ch->state == IVC_CHAN_CONNECTING && ivc__connect_poll(ch) == IVC_CHAN_CONNECTING)
        return;
    if ((ch->state == IVC_CHAN_OPEN || ch->state == IVC_CHAN_EOF ||
         ch->state == IVC_CHAN_SUSPENDING) &&
        (ch->epoch != ch->ctx->epoch || ch->ctx->state != IVC_CTX_ATTACHED ||
         !ivc__chan_healthy(ch)))
        ivc__chan_update(ch);
}

static ssize_t write_slow(struct ivc_chan *ch, const struct iovec *iov, int cnt)
{
    if (ch->closed)
        return IVC_EINVAL;
    refresh(ch);
    switch (ch->state) {
    case IVC_CHAN_OPEN: return ring_writev(ch, iov, cnt);
    case IVC_CHAN_SUSPENDING: /* quiescing for a migration: nothing goes */
    case IVC_CHAN_CONNECTING: return 0;
    case IVC_CHAN_EOF: return IVC_EPIPE;
    default: return ch->err;
    }
}

ssize_t ivc_writev(ivc_chan_t *ch, const struct iovec *iov, int iovcnt)
{
    if (!ch || iovcnt < 0 || iovcnt > IVC_IOV_MAX || (iovcnt && !iov))
        return IVC_EINVAL;
    for (int i = 0; i < iovcnt; i++)
        if (iov[i].iov_len && !iov[i].iov_base)
            return IVC_EINVAL;
    if (likely(ch->state == IVC_CHAN_OPEN && ivc__chan_healthy(ch)))
        return ring_writev(ch, iov, iovcnt);
    return write_slow(ch, iov, iovcnt);
}

ssize_t ivc_write(ivc_chan_t *ch, const void *buf, size_t len)
{
    struct iovec v = {(void *)buf, len}; /* ring_writev inlined for one piece */
    if (likely(ch && ch->state == IVC_CHAN_OPEN && ivc__chan_healthy(ch) && buf))
        return ring_writev(ch, &v, 1);
    if (!ch || (len && !buf))
        return IVC_EINVAL;
    return write_slow(ch, &v, 1);
}

static ssize_t read_slow(struct ivc_chan *ch, void *buf, size_t len)
{
    ssize_t n;
    if (!ch || ch->closed || (len && !buf))
        return IVC_EINVAL;
    refresh(ch);
    switch (ch->state) {
    case IVC_CHAN_OPEN:
    case IVC_CHAN_SUSPENDING: /* the peer may still be writing until it quiesced */
        return ring_read(ch, buf, len);
    case IVC_CHAN_EOF: n = ring_read(ch, buf, len); return n == 0 && len ? IVC_EOF : n;
    case IVC_CHAN_CONNECTING: return 0;
    default: return ch->err;
    }
}

ssize_t ivc_read(ivc_chan_t *ch, void *buf, size_t len)
{
    if (likely(ch && ch->state == IVC_CHAN_OPEN && ivc__chan_healthy(ch) && buf))
        return ring_read(ch, buf, len);
    return read_slow(ch, buf, len);
}

ssize_t ivc_read_peek(ivc_chan_t *ch, const void **data)
{
    if (!ch || !data || ch->closed)
        return IVC_EINVAL;
    *data = NULL;
    if (unlikely(ch->state != IVC_CHAN_OPEN || !ivc__chan_healthy(ch)))
        return 0;
    if (unlikely(!ivc__rx_head_update(ch)))
        return ch->err;
    uint64_t avail = ch->rx_head - ch->rx_tail, off = ch->rx_tail & ch->rx_mask;
    uint64_t run = ch->rx_mask + 1 - off;
    *data = ch->rx + off;
    return (ssize_t)(avail < run ? avail : run);
}

int ivc_read_commit(ivc_chan_t *ch, size_t len)
{
    if (!ch || ch->closed || len > ch->rx_head - ch->rx_tail)
        return IVC_EINVAL;
    /* As in ring_read: if the peer died while we looked, its share may be
     * someone else's now; if it is being suspended, the bytes go back with
     * the rest (the slow path's rules), so nothing is consumed here. */
    atomic_thread_fence(memory_order_acquire);
    if (unlikely(ch->state != IVC_CHAN_OPEN ||
                 atomic_load_explicit(ch->peer_status, memory_order_relaxed) !=
                     ch->peer_status_live)) {
        if (ch->state == IVC_CHAN_OPEN)
            ivc__chan_update(ch);
        return IVC_EAGAIN;
    }
    ch->rx_tail += len;
    ivc__rx_consumed(ch);
    return 0;
}

int ivc_chan_state(ivc_chan_t *ch)
{
    if (!ch || ch->closed)
        return IVC_EINVAL;
    refresh(ch);
    return ch->state;
}

size_t ivc_chan_readable(ivc_chan_t *ch)
{
    if (!ch || ch->closed)
        return 0;
    refresh(ch);
    if (ch->state != IVC_CHAN_OPEN && ch->state != IVC_CHAN_EOF && ch->state != IVC_CHAN_SUSPENDING)
        return 0;
    return ivc__rx_head_update(ch) ? (size_t)(ch->rx_head - ch->rx_tail) : 0;
}

/* Lines of the ring an idle reader keeps fetching (see ivc_chan_idle). */
#define IDLE_PREFETCH_LINES 3

bool ivc_chan_idle(const ivc_chan_t *ch)
{
    if (!(ch && ch->state == IVC_CHAN_OPEN && ivc__chan_healthy(ch) && ch->rx_head == ch->rx_tail))
        return false;
    /* While the ring is empty, fetch the lines the next bytes will land
     * in: once the writer wrote them, the next look fetches them together
     * with its index, instead of one after the other (a cross-CPU transfer
     * each).  MPI ping-pong over the provider, without -> with: 8 B
     * 0.65-0.74 -> 0.58-0.60 us, 128 B 0.95-1.05 -> 0.61 us (without it,
     * the provider's in-place read was slower than a copy out above 64 B). */
    uint64_t off = ch->rx_tail & ch->rx_mask;
    for (uint64_t k = 0; k < IDLE_PREFETCH_LINES && off + k * 64 <= ch->rx_mask; k++)
        __builtin_prefetch(ch->rx + off + k * 64);
    return atomic_load_explicit(&ch->peer_hot->head, memory_order_relaxed) == ch->rx_tail;
}

size_t ivc_chan_writable(ivc_chan_t *ch)
{
    if (!ch || ch->closed)
        return 0;
    refresh(ch);
    if (ch->state != IVC_CHAN_OPEN)
        return 0;
    uint64_t t = atomic_load_explicit(&ch->peer_hot->tail, memory_order_acquire);
    if (t > ch->tx_head || t < ch->tx_tail) {
        ivc__chan_corrupt(ch);
        return 0;
    }
    ch->tx_tail = t;
    return (size_t)(ch->tx_mask + 1 - (ch->tx_head - t));
}

size_t ivc_chan_ring_size(const ivc_chan_t *ch)
{
    return ch ? (size_t)ch->tx_mask + 1 : 0;
}

uint32_t ivc_chan_peer(const ivc_chan_t *ch)
{
    return ch ? ch->peer_client : 0;
}

void ivc_chan_set_data(ivc_chan_t *ch, void *data)
{
    if (ch)
        ch->user = data;
}

void *ivc_chan_get_data(const ivc_chan_t *ch)
{
    return ch ? ch->user : NULL;
}
