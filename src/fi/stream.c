/*
 * stream.c - the byte stream to and from each peer (see ivf.h): frames
 * queued for sending and written to the carrier (TCP, or the IVC channel
 * after FLUSH, back to TCP when the channel dies), bytes read from the
 * carrier into what the parser fills (a header, then the payload's
 * destination progress.c chose), the IVC segments' reading side, and
 * failing or closing a peer.  What a frame means is progress.c's.
 */
#include "ivf.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OWN_MAX (64u << 10) /* frames with payloads up to this are copied when queued */

/* ---- segments: the IVC part of a stream ---------------------------------------------- */

/* Up to len of the bytes kept in src[*off..end) into buf: how many. */
static ssize_t kept_take(const uint8_t *src, size_t *off, size_t end, void *buf, size_t len)
{
    size_t n = end - *off < len ? end - *off : len;
    memcpy(buf, src + *off, n);
    *off += n;
    return (ssize_t)n;
}

ssize_t ivf_seg_read(struct ivf_seg *seg, void *buf, size_t len)
{
    if (seg->ra_off < seg->ra_len)
        return kept_take(seg->ra, &seg->ra_off, seg->ra_len, buf, len);
    if (seg->hb_off < seg->hb_len)
        return kept_take(seg->hb, &seg->hb_off, seg->hb_len, buf, len);
    if (seg->dead || !seg->chan)
        return -1;
    ssize_t n;
    if (len < sizeof(seg->ra)) {
        /* One ring read for a header and what follows it. */
        n = ivc_read(seg->chan, seg->ra, sizeof(seg->ra));
        if (n > 0) {
            seg->ra_len = (size_t)n;
            seg->ra_off = 0;
            return ivf_seg_read(seg, buf, len);
        }
    } else {
        n = ivc_read(seg->chan, buf, len);
    }
    if (n >= 0)
        return n;
    /* The channel ended: a suspend (its callback kept the unread bytes) or
     * the peer closing are ends of its part of the stream; anything else
     * (the peer died or never quiesced, the region is corrupt) may have
     * taken bytes with it. */
    seg->dead = true;
    seg->lost = n != IVC_ESHUTDOWN && n != IVC_EOF;
    return seg->hb_off < seg->hb_len ? ivf_seg_read(seg, buf, len) : -1;
}

void ivf_seg_free(struct ivf_seg *seg)
{
    if (seg->chan) {
        ivc_chan_set_data(seg->chan, NULL);
        ivc_close(seg->chan);
    }
    free(seg->hb);
    free(seg);
}

/* A FLUSH still queued that names seg (NULL: any) must not point to it
 * once it is freed, and the stream stays on TCP.  One not started becomes
 * a CREDIT of nothing, so its receiver stays on TCP too; one half out is
 * kept, and its receiver finds the channel it names dead. */
static void txq_forget_seg(struct ivf_tx *tx, const struct ivf_seg *seg)
{
    for (struct ivf_txf *f = tx->head; f; f = f->next) {
        if (!f->seg || (seg && f->seg != seg))
            continue;
        f->seg = NULL;
        if (f->sent == 0)
            f->hdr = (struct ivf_hdr){.version = IVF_PROTO_VERSION, .type = IVF_CREDIT};
    }
}

void ivf_peer_segs_free(struct ivf_peer *p)
{
    txq_forget_seg(&p->tx, NULL);
    while (p->segs) {
        struct ivf_seg *s = p->segs;
        p->segs = s->next;
        ivf_seg_free(s);
    }
    p->tx.seg = NULL;
    p->rx.seg = NULL;
    if (p->tx.to == IVF_IVC)
        p->tx.to = IVF_TCP;
    if (p->rx.from == IVF_IVC)
        p->rx.from = IVF_TCP;
}

static void seg_unlink(struct ivf_peer *p, struct ivf_seg *seg)
{
    for (struct ivf_seg **pp = &p->segs; *pp; pp = &(*pp)->next)
        if (*pp == seg) {
            *pp = seg->next;
            break;
        }
}

void ivf_seg_release(struct ivf_peer *p, struct ivf_seg *seg)
{
    seg_unlink(p, seg);
    txq_forget_seg(&p->tx, seg);
    if (p->tx.seg == seg) {
        p->tx.seg = NULL;
        p->tx.to = IVF_TCP;
    }
    if (p->rx.seg == seg) {
        p->rx.seg = NULL;
        p->rx.from = IVF_TCP;
    }
    ivf_seg_free(seg);
}

/* ---- failing and closing ---------------------------------------------------------- */

static void txq_free(struct ivf_peer *p)
{
    struct ivf_tx *tx = &p->tx;
    while (tx->head) {
        struct ivf_txf *f = tx->head;
        tx->head = f->next;
        ivf_buf_put(p->ep, f);
    }
    tx->tail = NULL;
    tx->queued = 0;
}

/* Drop everything the stream holds: queued frames, segments, connections. */
static void stream_shut(struct ivf_peer *p)
{
    txq_free(p);
    ivf_peer_segs_free(p);
    if (p->fd_own >= 0)
        close(p->fd_own);
    if (p->fd_in >= 0)
        close(p->fd_in);
    p->fd_own = p->fd_in = -1;
    p->rx.fd = p->tx.fd = p->rx.fd_next = -1;
    free(p->rx.rbuf);
    p->rx.rbuf = NULL;
    p->rx.rb_off = p->rx.rb_len = p->rx.rb_cap = 0;
}

void ivf_peer_fail(struct ivf_ep *ep, struct ivf_peer *p, int err, const char *why)
{
    if (p->failed)
        return;
    char s[160];
    ivf_addr_str(&p->addr, s, sizeof(s));
    IVF_WARN(FI_LOG_EP_DATA, "peer %s: %s\n", s, why);
    p->failed = err;
    /* Sends whose frames are still queued and that wait for nothing else. */
    for (struct ivf_txf *f = p->tx.head; f; f = f->next) {
        struct ivf_op *op = f->op;
        if (op && !op->next) {
            for (struct ivf_txf *g = f->next; g; g = g->next)
                if (g->op == op)
                    g->op = NULL;
            f->op = NULL;
            ivf_op_complete(ep, op, -err);
        }
    }
    stream_shut(p);
    for (struct ivf_op *op = ep->active, *next; op; op = next) {
        next = op->next == ep->active ? NULL : op->next;
        if (op->peer == p) {
            ivf_op_list_del(&ep->active, op);
            ivf_op_complete(ep, op, -err);
        }
    }
    p->rx.dst_op = NULL;
    /* An unexpected message still arriving will never be whole: it goes,
     * and a receive that took it (waiting for the rest) fails. */
    struct ivf_unexp *u = p->rx.dst_unexp;
    p->rx.dst_unexp = NULL;
    if (u) {
        ivf_unexp_del(ep, u);
        if (u->waiting_op)
            ivf_op_complete(ep, u->waiting_op, -err);
        ivf_unexp_free(ep, u);
    }
}

void ivf_peers_close(struct ivf_ep *ep)
{
    while (ep->peers) {
        struct ivf_peer *p = ep->peers;
        ep->peers = p->next;
        char s[160];
        ivf_addr_str(&p->addr, s, sizeof(s));
        IVF_INFO(
            FI_LOG_EP_CTRL,
            "peer %s: sent %llu bytes by TCP, %llu by IVC, %llu to itself; received %llu by TCP, "
            "%llu by IVC, %llu from itself\n",
            s, (unsigned long long)p->bytes[0][IVF_TCP], (unsigned long long)p->bytes[0][IVF_IVC],
            (unsigned long long)p->bytes[0][IVF_SELF], (unsigned long long)p->bytes[1][IVF_TCP],
            (unsigned long long)p->bytes[1][IVF_IVC], (unsigned long long)p->bytes[1][IVF_SELF]);
        stream_shut(p);
        free(p);
    }
    free(ep->peer_at);
    ep->peer_at = NULL;
    ep->n_peer_at = 0;
}

/* ---- sending ------------------------------------------------------------------------ */

/* A frame to queue, our protocol version stamped on its header, with room
 * for `own` payload bytes. */
static struct ivf_txf *txf_new(struct ivf_ep *ep, const struct ivf_hdr *h, size_t own)
{
    struct ivf_txf *f = ivf_buf_get(ep, sizeof(*f) + own);
    if (f) {
        memset(f, 0, sizeof(*f));
        f->hdr = *h;
        f->hdr.version = IVF_PROTO_VERSION;
    }
    return f;
}

/* A frame whose payload is a copy of h->len bytes of iov (skip bytes in). */
static struct ivf_txf *txf_copy(struct ivf_ep *ep, const struct ivf_hdr *h, const struct iovec *iov,
                                size_t iov_count, size_t skip)
{
    struct ivf_txf *f = txf_new(ep, h, h->len);
    if (!f)
        return NULL;
    ivf_iov_to_buf(iov, iov_count, skip, f->own, h->len);
    f->own_iov = (struct iovec){f->own, h->len};
    f->iov = &f->own_iov;
    f->iov_count = 1;
    return f;
}

static void txq_push(struct ivf_tx *tx, struct ivf_txf *f)
{
    if (tx->tail)
        tx->tail->next = f;
    else
        tx->head = f;
    tx->tail = f;
    tx->queued += sizeof(f->hdr) + f->hdr.len;
}

int ivf_stream_start(struct ivf_ep *ep, struct ivf_peer *p)
{
    if (p->failed)
        return p->failed;
    if (p->tx.fd >= 0 || p->tx.parked || p->tx.to == IVF_SELF) {
        /* started */
    } else if (p->addr.uid == ep->addr.uid) {
        /* Ourselves: the frames go through memory (self_write), with no
         * connection (a message to oneself by TCP took 10 us). */
        p->tx.to = IVF_SELF;
        p->rx.from = IVF_SELF;
    } else if (p->fd_in >= 0) {
        p->tx.fd = p->fd_in; /* it opened one: we answer on it */
    } else {
        /* The hello first: a connection must never go without it. */
        struct ivf_hdr hh = {.type = IVF_HELLO, .len = sizeof(struct ivf_addr)};
        struct iovec v = {&ep->addr, sizeof(ep->addr)};
        struct ivf_txf *hf = txf_copy(ep, &hh, &v, 1, 0);
        if (!hf)
            return -FI_ENOMEM;
        if (ivf_tcp_connect(p) < 0) {
            ivf_buf_put(ep, hf);
            ivf_peer_fail(ep, p, -FI_ECONNREFUSED, "cannot connect");
            return -FI_ECONNREFUSED;
        }
        txq_push(&p->tx, hf);
    }
    return 0;
}

void ivf_stream_adopt(struct ivf_ep *ep, struct ivf_peer *p, int fd)
{
    /* p writes on fd now (if we opened one too, nothing came on ours: p
     * would not have opened its own). */
    p->fd_in = p->rx.fd = fd;
    if (p->fd_own < 0)
        return; /* the one connection */
    /* Both opened one at once: the smaller uid's stays. */
    if (ep->addr.uid < p->addr.uid) {
        p->rx.fd_next = p->fd_own; /* p moves to ours */
        return;
    }
    struct ivf_hdr h = {.type = IVF_MOVE};
    struct ivf_txf *f = txf_new(ep, &h, 0);
    if (!f) {
        ivf_peer_fail(ep, p, -FI_ENOMEM, "out of memory");
        return;
    }
    txq_push(&p->tx, f); /* frame_sent() moves us */
}

int ivf_send_flush(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_seg *seg)
{
    int r = ivf_stream_start(ep, p);
    if (r < 0)
        return r;
    struct ivf_hdr h = {.type = IVF_FLUSH, .id = seg->id};
    struct ivf_txf *f = txf_new(ep, &h, 0);
    if (!f)
        return -FI_ENOMEM;
    f->seg = seg;
    txq_push(&p->tx, f);
    return 0;
}

int ivf_send_frame(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                   const struct iovec *iov, size_t iov_count, size_t skip, bool copy,
                   struct ivf_op *op)
{
    int r = ivf_stream_start(ep, p);
    if (r < 0)
        return r;
    struct ivf_txf *f;
    if (copy && h->len <= OWN_MAX) {
        f = txf_copy(ep, h, iov, iov_count, skip);
    } else if ((f = txf_new(ep, h, 0))) {
        f->iov = iov;
        f->iov_count = iov_count;
        f->iov_skip = skip;
    }
    if (!f)
        return -FI_ENOMEM;
    f->op = op;
    txq_push(&p->tx, f);
    return 0;
}

/* A frame is out: the stream moves to the channel after FLUSH; a send
 * whose bytes are all out may be done (an RTS waits for CTS). */
static void frame_sent(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_txf *f)
{
    if (f->hdr.type == IVF_FLUSH && f->seg && !f->seg->dead) {
        p->tx.to = IVF_IVC; /* the rest of the stream goes through the channel */
        p->tx.seg = f->seg;
        return;
    }
    if (f->hdr.type == IVF_MOVE) { /* the rest: on p's connection once it reads there */
        close(p->fd_own);
        p->fd_own = p->tx.fd = -1;
        p->tx.connecting = false;
        p->tx.parked = true;
        return;
    }
    struct ivf_op *op = f->op;
    if (!op || f->hdr.type == IVF_RTS)
        return;
    op->done += f->hdr.len;
    if (op->done < op->len)
        return;
    op->data_sent = true;
    ivf_send_done(ep, op);
}

/* To ourselves: v[0..n) goes to our own read side's buffer, as much as
 * fits under IVF_SELF_MAX (the rest stays queued, as on a full socket).
 * Like any shared-memory transport (and unlike TCP), a buffer that cannot
 * be read faults here, in the caller's own process. */
static ssize_t self_write(struct ivf_ep *ep, struct ivf_peer *p, const struct iovec *v, int n)
{
    struct ivf_rx *rx = &p->rx;
    if (rx->rb_off == rx->rb_len)
        rx->rb_off = rx->rb_len = 0;
    size_t held = rx->rb_len - rx->rb_off, want = 0;
    for (int i = 0; i < n; i++)
        want += v[i].iov_len;
    size_t take = IVF_SELF_MAX - held < want ? IVF_SELF_MAX - held : want;
    if (take == 0)
        return 0;
    if (rx->rb_len + take > rx->rb_cap && rx->rb_off) {
        memmove(rx->rbuf, rx->rbuf + rx->rb_off, held);
        rx->rb_off = 0;
        rx->rb_len = held;
    }
    if (held + take > rx->rb_cap) {
        size_t cap = rx->rb_cap ? rx->rb_cap : 4096;
        while (cap < held + take)
            cap *= 2;
        char *b = realloc(rx->rbuf, cap);
        if (!b) {
            ivf_peer_fail(ep, p, -FI_ENOMEM, "out of memory");
            return -1;
        }
        rx->rbuf = b;
        rx->rb_cap = cap;
    }
    size_t done = 0;
    for (int i = 0; i < n && done < take; i++) {
        size_t k = v[i].iov_len < take - done ? v[i].iov_len : take - done;
        memcpy(rx->rbuf + rx->rb_len + done, v[i].iov_base, k);
        done += k;
    }
    rx->rb_len += take;
    p->bytes[0][IVF_SELF] += take;
    return (ssize_t)take;
}

/* Write v[0..n) to the stream's carrier; how many bytes went, or <0:
 * -EFAULT if the kernel could not read them (the peer is fine), else the
 * TCP connection broke.  A channel that dies moves the stream back to TCP:
 * what it took reaches the peer (read or handed back), the rest goes by
 * TCP. */
static ssize_t tx_write(struct ivf_ep *ep, struct ivf_peer *p, struct iovec *v, int n)
{
    struct ivf_tx *tx = &p->tx;
    if (tx->to == IVF_SELF)
        return self_write(ep, p, v, n);
    if (tx->to == IVF_IVC) {
        struct ivf_seg *seg = tx->seg;
        if (seg && !seg->dead && seg->chan) {
            /* One write: the header and a small payload appear together. */
            ssize_t w = ivc_writev(seg->chan, v, n);
            if (w >= 0) {
                p->bytes[0][IVF_IVC] += (size_t)w;
                return w;
            }
            seg->dead = true;
        }
        tx->to = IVF_TCP;
        tx->seg = NULL;
    }
    if (tx->fd < 0)
        return 0; /* parked: after MOVED */
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(tx->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
        p->bytes[0][IVF_TCP] += (size_t)w;
        return w;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    if (errno == EFAULT)
        return -EFAULT;
    ivf_peer_fail(ep, p, -FI_ECONNRESET, strerror(errno));
    return -1;
}

int ivf_send_now(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                 const struct iovec *iov, size_t iov_count)
{
    struct ivf_tx *tx = &p->tx;
    struct ivf_seg *seg = tx->seg;
    size_t total = sizeof(*h) + h->len;
    if (tx->head || p->failed || tx->to == IVF_TCP ||
        (tx->to == IVF_IVC && (!seg || seg->dead || !seg->chan)))
        return 0;
    struct ivf_hdr hdr = *h;
    hdr.version = IVF_PROTO_VERSION;
    struct iovec v[1 + IVF_IOV_LIMIT];
    v[0] = (struct iovec){&hdr, sizeof(hdr)};
    int n = 1;
    if (iov_count == 1 && iov[0].iov_len == h->len) { /* the common case: one piece */
        if (h->len)
            v[n++] = iov[0]; /* an empty one may have no address */
    } else {
        n += ivf_iov_slice(iov, iov_count, 0, h->len, v + 1, IVF_IOV_LIMIT);
    }
    ssize_t w = tx_write(ep, p, v, n);
    if (w == (ssize_t)total)
        return 1;
    if (w == -EFAULT)
        return 0; /* nothing went: the caller queues the frame */
    if (w < 0)
        return -1;
    if (w == 0 && tx->to != IVF_TCP)
        return 0; /* no room (or quiescing): the caller queues the frame */
    /* Part of it went (the ring filled up), or the channel died under us
     * and the rest goes by TCP: the rest from a copy, after it. */
    struct ivf_txf *f = txf_copy(ep, h, iov, iov_count, 0);
    if (!f) {
        ivf_peer_fail(ep, p, -FI_ENOMEM, "out of memory");
        return -1;
    }
    f->sent = (size_t)w;
    txq_push(tx, f);
    tx->queued -= (size_t)w;
    return 1;
}

/* Frame f (the head of p's queue) has a payload the kernel cannot read
 * (EFAULT from sendmsg): its send fails, not the peer, and the stream
 * stays framed.  What went of f already (its header at least) is followed
 * by zeros (f is replaced by a copy of zeros); the send's next frame (f
 * itself if nothing of it went) becomes a FAULT frame without payload,
 * which fails the receive, and the send's frames after it are dropped.
 * When f was the send's last frame, the receive completes with the zeros:
 * telling it would take a frame after every message (checking the pages
 * before each frame, by process_vm_readv, cost a third of TCP's bandwidth
 * at 4 MiB).  The head of the queue, or NULL without memory (the peer
 * failed). */
static struct ivf_txf *frame_fault(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_txf *f)
{
    struct ivf_tx *tx = &p->tx;
    struct ivf_op *op = f->op;
    bool started = f->sent > 0;
    char s[160];
    ivf_addr_str(&p->addr, s, sizeof(s));
    IVF_WARN(FI_LOG_EP_DATA, "send of %zu bytes to %s: its buffer cannot be read (%s)\n",
             op ? op->len : (size_t)f->hdr.len, s, strerror(EFAULT));
    if (started) {
        struct ivf_txf *z = txf_new(ep, &f->hdr, f->hdr.len);
        if (!z) {
            ivf_peer_fail(ep, p, -FI_ENOMEM, "out of memory");
            return NULL;
        }
        memset(z->own, 0, z->hdr.len);
        z->own_iov = (struct iovec){z->own, z->hdr.len};
        z->iov = &z->own_iov;
        z->iov_count = 1;
        z->sent = f->sent;
        z->op = op;
        z->next = f->next;
        tx->head = z;
        if (tx->tail == f)
            tx->tail = z;
        ivf_buf_put(ep, f);
        f = z;
    }
    if (!op)
        return f;
    op->err = FI_EFAULT;
    bool told = false;
    struct ivf_txf *prev = started ? f : NULL, *g = started ? f->next : f;
    while (g) {
        struct ivf_txf *next = g->next;
        if (g->op == op && !told) {
            tx->queued -= g->hdr.len;
            if (g->hdr.type == IVF_EAGER)
                p->credit += g->hdr.len; /* the receiver gives back what it gets: nothing */
            g->hdr.len = 0;
            g->hdr.flags = (uint8_t)((g->hdr.flags | IVF_F_FAULT) & ~IVF_F_ACK);
            g->iov = NULL;
            g->iov_count = 0;
            g->iov_skip = 0;
            told = true;
        } else if (g->op == op) {
            tx->queued -= sizeof(g->hdr) + g->hdr.len;
            if (prev)
                prev->next = next;
            else
                tx->head = next;
            if (tx->tail == g)
                tx->tail = prev;
            ivf_buf_put(ep, g);
            g = next;
            continue;
        }
        prev = g;
        g = next;
    }
    /* The send completes when its last frame is out: the FAULT frame (a
     * receive it ends acknowledges nothing), else the zeros. */
    op->len = op->done + (started && !told ? f->hdr.len : 0);
    if (started && told)
        f->op = NULL;
    if (told)
        op->wait_ack = false;
    return tx->head;
}

void ivf_stream_write(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_tx *tx = &p->tx;
    if (tx->fd < 0 && tx->to == IVF_TCP)
        return; /* not started, or parked */
    if (tx->connecting) {
        struct pollfd pf = {.fd = tx->fd, .events = POLLOUT};
        if (poll(&pf, 1, 0) <= 0)
            return;
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(tx->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            ivf_peer_fail(ep, p, -FI_ECONNREFUSED, strerror(err));
            return;
        }
        tx->connecting = false;
    }
    while (tx->head) {
        struct ivf_txf *f = tx->head;
        struct iovec v[1 + IVF_IOV_LIMIT];
        size_t total = sizeof(f->hdr) + f->hdr.len;
        int n = 0;
        if (f->sent < sizeof(f->hdr)) {
            v[n].iov_base = (char *)&f->hdr + f->sent;
            v[n].iov_len = sizeof(f->hdr) - f->sent;
            n++;
        }
        size_t poff = f->sent > sizeof(f->hdr) ? f->sent - sizeof(f->hdr) : 0;
        n += ivf_iov_slice(f->iov, f->iov_count, f->iov_skip + poff, f->hdr.len - poff, v + n,
                           IVF_IOV_LIMIT);
        ssize_t w = tx_write(ep, p, v, n);
        if (w == -EFAULT) { /* the application's buffer (DATA, or a large EAGER) */
            if (!frame_fault(ep, p, f))
                return;
            continue;
        }
        if (w < 0)
            return;
        f->sent += (size_t)w;
        tx->queued -= (size_t)w;
        if (f->sent < total)
            return;
        tx->head = f->next;
        if (!tx->head)
            tx->tail = NULL;
        frame_sent(ep, p, f);
        ivf_buf_put(ep, f);
    }
}

/* ---- receiving ---------------------------------------------------------------------- */

/* Bytes read ahead go into v[0..k) first: how many. */
static ssize_t rbuf_take(struct ivf_rx *rx, const struct iovec *v, int k)
{
    size_t n = ivf_buf_to_iov(v, (size_t)k, 0, rx->rbuf + rx->rb_off, rx->rb_len - rx->rb_off);
    rx->rb_off += n;
    return (ssize_t)n;
}

/* One readv into v[0..k) and, behind it, the read-ahead buffer: a small
 * message's header and payload, and the frames after them, cost one
 * system call instead of two or more.  What went beyond v is kept for the
 * next reads.  readv's result. */
static ssize_t tcp_readv(struct ivf_rx *rx, const struct iovec *v, int k)
{
    if (!rx->rbuf && !(rx->rbuf = malloc(IVF_RX_AHEAD)))
        return readv(rx->fd, v, k); /* without memory: no read-ahead */
    struct iovec w[IVF_IOV_LIMIT + 1];
    size_t want = 0;
    for (int i = 0; i < k; i++) {
        w[i] = v[i];
        want += v[i].iov_len;
    }
    w[k] = (struct iovec){rx->rbuf, IVF_RX_AHEAD};
    ssize_t n = readv(rx->fd, w, k + 1);
    if (n > (ssize_t)want) {
        rx->rb_off = 0;
        rx->rb_len = (size_t)n - want;
        n = (ssize_t)want;
    }
    return n;
}

/* Read into v[0..k) from the peer's stream; 0: nothing now; <0: broken
 * (the connection is closed, and the peer failed if anything was expected
 * of it). */
static ssize_t rx_readv(struct ivf_ep *ep, struct ivf_peer *p, struct iovec *v, int k)
{
    struct ivf_rx *rx = &p->rx;
    if (rx->from == IVF_IVC) {
        size_t done = 0;
        for (int i = 0; i < k; i++) {
            ssize_t n = ivf_seg_read(rx->seg, v[i].iov_base, v[i].iov_len);
            if (n < 0) {
                bool lost = rx->seg->lost;
                ivf_seg_release(p, rx->seg);
                if (lost) {
                    ivf_peer_fail(ep, p, -FI_ECONNRESET, "its IVC channel broke mid-stream");
                    return -1;
                }
                /* The channel's part of the stream is over: TCP again. */
                if (done)
                    return (ssize_t)done;
                return rx_readv(ep, p, v, k);
            }
            done += (size_t)n;
            p->bytes[1][IVF_IVC] += (size_t)n;
            if ((size_t)n < v[i].iov_len)
                break;
        }
        return (ssize_t)done;
    }
    if (rx->from == IVF_SELF) {
        ssize_t n = rx->rb_off < rx->rb_len ? rbuf_take(rx, v, k) : 0;
        p->bytes[1][IVF_SELF] += (size_t)n;
        return n;
    }
    if (rx->rb_off < rx->rb_len)
        return rbuf_take(rx, v, k);
    if (rx->fd < 0)
        return -1;
    ssize_t n = tcp_readv(rx, v, k);
    if (n > 0) {
        p->bytes[1][IVF_TCP] += (size_t)n;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    /* EOF or error.  An EOF between frames is the peer closing its
     * endpoint: only what is still expected from it fails. */
    int e = n < 0 ? errno : 0;
    bool mid = rx->hdr_got || rx->payload_left;
    bool waiting = false;
    for (struct ivf_op *op = ep->active; op && !waiting;
         op = op->next == ep->active ? NULL : op->next)
        waiting = op->peer == p;
    ivf_stream_rx_close(p);
    if (mid || waiting)
        ivf_peer_fail(ep, p, -FI_ECONNRESET, e ? strerror(e) : "connection closed");
    return -1;
}

void ivf_stream_unpark(struct ivf_peer *p)
{
    p->tx.parked = false;
    p->tx.fd = p->fd_in;
}

void ivf_stream_rx_close(struct ivf_peer *p)
{
    int fd = p->rx.fd;
    p->rx.fd = -1;
    if (fd < 0 || fd == p->tx.fd)
        return; /* written on still: the writes tell whether the peer is gone */
    close(fd);
    if (fd == p->fd_own)
        p->fd_own = -1;
    if (fd == p->fd_in)
        p->fd_in = -1;
}

bool ivf_stream_ended(const struct ivf_peer *p)
{
    return p->failed || (p->rx.fd < 0 && p->rx.from == IVF_TCP);
}

static ssize_t rx_read(struct ivf_ep *ep, struct ivf_peer *p, void *buf, size_t len)
{
    struct iovec v = {buf, len};
    return rx_readv(ep, p, &v, 1);
}

int ivf_stream_read_header(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    ssize_t n = rx_read(ep, p, (char *)&rx->hdr + rx->hdr_got, sizeof(rx->hdr) - rx->hdr_got);
    if (n <= 0)
        return 0;
    rx->hdr_got += (size_t)n;
    return rx->hdr_got == sizeof(rx->hdr);
}

/* The payload goes into the receive progress.c chose (never beyond its
 * buffer or the message it matched), into an unexpected message's buffer
 * (as long as that message), or nowhere. */
int ivf_stream_read_payload(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    char sink[16384];
    while (rx->payload_left) {
        ssize_t n;
        if (rx->dst_op) {
            struct ivf_op *op = rx->dst_op;
            size_t end = op->len < op->msg_len ? op->len : op->msg_len;
            size_t room = end > rx->dst_off ? end - rx->dst_off : 0;
            if (room) {
                struct iovec v[IVF_IOV_LIMIT];
                size_t want = rx->payload_left < room ? rx->payload_left : room;
                int k = ivf_iov_slice(op->iov, op->iov_count, rx->dst_off, want, v, IVF_IOV_LIMIT);
                if ((n = rx_readv(ep, p, v, k)) <= 0)
                    return 0;
                rx->dst_off += (size_t)n;
                op->done += (size_t)n;
                rx->payload_left -= (size_t)n;
                continue;
            }
        } else if (rx->dst_unexp && rx->dst_unexp->got < rx->dst_unexp->len) {
            struct ivf_unexp *u = rx->dst_unexp;
            size_t room = u->len - u->got;
            n = rx_read(ep, p, (char *)u->buf + u->got,
                        rx->payload_left < room ? rx->payload_left : room);
            if (n <= 0)
                return 0;
            u->got += (size_t)n;
            rx->payload_left -= (size_t)n;
            continue;
        }
        /* No room (truncation) or nobody wants it: drop. */
        n = rx_read(ep, p, sink, rx->payload_left < sizeof(sink) ? rx->payload_left : sizeof(sink));
        if (n <= 0)
            return 0;
        rx->payload_left -= (size_t)n;
    }
    return 1;
}
