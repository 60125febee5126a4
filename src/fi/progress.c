/*
 * progress.c - what the provider does when something arrives, and the
 * loop that moves the bytes.  Every frame's reaction is here: a message
 * (EAGER or RTS) is matched or kept as unexpected, a CTS starts the DATA
 * of a send, DATA fills a receive, ACK and CREDIT settle a send and the
 * credit, FLUSH moves the stream onto an IVC channel, MOVE onto the TCP
 * connection we opened.  A receive is done
 * in one place (recv_done) whichever way its bytes came.  Small messages
 * from an IVC channel take a shorter way (ivf_direct_take): read where
 * they lie in the ring, straight into a posted receive.
 *
 * A frame is checked (ivf_hdr_check: version, type, lengths) before any of
 * it is used; a bad one fails the peer, never the process.
 */
#include "ivf.h"

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- telling the sender ------------------------------------------------------------- */

/* A receive took an eager message of len bytes from p: give the credit
 * back (in batches).  What is given back the peer may send again. */
static void credit_return(struct ivf_ep *ep, struct ivf_peer *p, size_t len)
{
    p->credit_owed += len;
    if (p->credit_owed < ivf_params.credit / 4 || p->failed)
        return;
    struct ivf_hdr h = {.type = IVF_CREDIT, .data = p->credit_owed};
    if (ivf_send_frame(ep, p, &h, NULL, 0, 0, true, NULL) == 0) {
        p->eager_in -= p->credit_owed;
        p->credit_owed = 0;
    }
}

/* An EAGER of len bytes arrives from p: within the credit it was given?
 * The sender counts what it sent less the CREDIT it has read; we count
 * what arrived less the CREDIT we queued, never more than the sender's
 * count, so a peer that keeps to its credit is never failed here.  One
 * that does not (or runs with a larger FI_IVC_CREDIT) would make us
 * buffer without bound: it fails. */
static int credit_take(struct ivf_ep *ep, struct ivf_peer *p, uint32_t len)
{
    if (len > ivf_params.credit - p->eager_in) {
        char why[200];
        snprintf(why, sizeof(why),
                 "an EAGER of %u bytes beyond its credit: %zu of %zu bytes (FI_IVC_CREDIT) "
                 "not given back yet (the same FI_IVC_CREDIT everywhere?)",
                 len, p->eager_in, ivf_params.credit);
        ivf_peer_fail(ep, p, -FI_EIO, why);
        return -1;
    }
    p->eager_in += len;
    return 0;
}

/* CTS: the sender's op remote_id may send `want` bytes to our op `id`
 * (want 0: none, the message is dropped or done). */
static int send_cts(struct ivf_ep *ep, struct ivf_peer *p, uint64_t remote_id, uint64_t id,
                    size_t want)
{
    struct ivf_hdr h = {.type = IVF_CTS, .id = remote_id, .data = id, .size = want};
    return ivf_send_frame(ep, p, &h, NULL, 0, 0, true, NULL);
}

/* ACK: the sender's op remote_id is delivered (FI_DELIVERY_COMPLETE). */
static void send_ack(struct ivf_ep *ep, struct ivf_peer *p, uint64_t remote_id)
{
    struct ivf_hdr h = {.type = IVF_ACK, .id = remote_id};
    ivf_send_frame(ep, p, &h, NULL, 0, 0, true, NULL);
}

/* An unexpected message leaves for good: an eager one's bytes are taken
 * (delivered or discarded), so its sender gets the credit back. */
static void unexp_consumed(struct ivf_ep *ep, struct ivf_unexp *u)
{
    if (u->type == IVF_EAGER && u->peer)
        credit_return(ep, u->peer, u->len);
    ivf_unexp_free(ep, u);
}

/* ---- receives --------------------------------------------------------------------- */

/* The receive is over: its sender gets the ACK it asked for, the
 * application its completion (truncated if the message was longer, an
 * error if the sender could not read its data). */
static void recv_done(struct ivf_ep *ep, struct ivf_op *op)
{
    ivf_op_list_del(&ep->active, op);
    if (op->wire_flags & IVF_F_ACK)
        send_ack(ep, op->peer, op->remote_id);
    ivf_op_complete(ep, op,
                    op->wire_flags & IVF_F_FAULT ? FI_EREMOTEIO
                    : op->msg_len > op->len      ? FI_ETRUNC
                                                 : 0);
}

/* Receive op matched an RTS: ask for the data (as much as fits), unless
 * its sender's stream has ended (an RTS taken after the sender closed: no
 * DATA will come).  The op waits for DATA once the CTS is queued: queuing
 * it can fail the peer (its connection cannot be opened), which must not
 * find the op waiting. */
static void rndv_accept(struct ivf_ep *ep, struct ivf_op *op)
{
    op->done = 0;
    op->id = ++ep->next_id;
    size_t want = op->msg_len < op->len ? op->msg_len : op->len;
    if (want == 0) {
        send_cts(ep, op->peer, op->remote_id, op->id, 0);
        op->wire_flags &= (uint8_t)~IVF_F_ACK; /* the CTS for nothing settles the send */
        recv_done(ep, op);
        return;
    }
    if (ivf_stream_ended(op->peer)) {
        ivf_op_complete(ep, op, FI_ECONNRESET);
        return;
    }
    if (send_cts(ep, op->peer, op->remote_id, op->id, want) < 0) {
        ivf_op_complete(ep, op, FI_EIO);
        return;
    }
    ivf_op_list_add(&ep->active, op);
}

void ivf_recv_take(struct ivf_ep *ep, struct ivf_op *op, struct ivf_unexp *u)
{
    ivf_op_matched(op, u->peer, u->flags, u->tag, u->data, u->len, u->remote_id);
    if (u->type == IVF_EAGER) {
        op->done = ivf_buf_to_iov(op->iov, op->iov_count, 0, u->buf, u->len);
        unexp_consumed(ep, u);
        recv_done(ep, op);
        return;
    }
    ivf_unexp_free(ep, u);
    rndv_accept(ep, op);
}

void ivf_recv_discard(struct ivf_ep *ep, struct ivf_unexp *u)
{
    ivf_unexp_del(ep, u);
    if (u->peer && u->peer->rx.dst_unexp == u)
        u->peer->rx.dst_unexp = NULL; /* still arriving: the rest is read and dropped */
    if (u->type == IVF_RTS)
        send_cts(ep, u->peer, u->remote_id, 0, 0);
    else if (u->flags & IVF_F_ACK)
        send_ack(ep, u->peer, u->remote_id); /* delivered, to nobody */
    unexp_consumed(ep, u);
}

/* ---- frames ------------------------------------------------------------------------ */

/* EAGER or RTS: a posted receive takes it (an eager payload goes straight
 * into its buffer), or it waits as unexpected (the sender's credit bounds
 * the eager bytes that can wait: an EAGER beyond it fails the peer).
 * -FI_EAGAIN without memory: the stream stalls. */
static int on_message(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    bool eager = h->type == IVF_EAGER;
    if (eager && credit_take(ep, p, h->len) < 0)
        return -1;
    size_t msg_len = eager ? h->len : (size_t)h->size;
    struct ivf_op *op = ivf_match_posted(ep, h->flags & IVF_F_TAGGED, h->tag, p);
    if (!op) {
        struct ivf_unexp *u = ivf_unexp_add(ep, p, h, msg_len);
        if (!u) {
            if (eager)
                p->eager_in -= h->len; /* taken again when the stream goes on */
            return -FI_EAGAIN;
        }
        if (eager)
            p->rx.dst_unexp = u;
        return 0;
    }
    ivf_op_matched(op, p, h->flags, h->tag, h->data, msg_len, h->id);
    if (!eager) {
        rndv_accept(ep, op);
        return 0;
    }
    op->done = 0;
    ivf_op_list_add(&ep->active, op);
    p->rx.dst_op = op;
    p->rx.dst_off = 0;
    return 0;
}

/* The send to p that frame h (a CTS or ACK) names, or NULL: the peer failed. */
static struct ivf_op *named_send(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    struct ivf_op *op = ivf_op_find(ep, h->id, IVF_OP_SEND);
    if (op && op->peer == p)
        return op;
    ivf_peer_fail(ep, p, -FI_EIO,
                  h->type == IVF_CTS ? "CTS for an unknown send" : "ACK for an unknown send");
    return NULL;
}

/* CTS: the receiver wants `size` bytes of our send: queue them as DATA.
 * Only once, and only for a send announced by RTS: the DATA frames point
 * into the send's buffer, which is the application's again once the send
 * completed (an eager one's may be already: FI_INJECT). */
static int on_cts(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    struct ivf_op *op = named_send(ep, p, h);
    if (!op)
        return -1;
    if (!op->wait_cts) {
        ivf_peer_fail(ep, p, -FI_EIO, "CTS for a send that waits for none");
        return -1;
    }
    op->wait_cts = false;
    size_t want = h->size < op->len ? h->size : op->len;
    op->len = want;  /* frame_sent() completes it when `want` bytes are out */
    if (want == 0) { /* discarded, or a 0-byte receive buffer */
        op->data_sent = true;
        op->wait_ack = false;
        ivf_send_done(ep, op);
        return 0;
    }
    for (size_t off = 0; off < want; off += ivf_params.chunk) {
        size_t n = want - off < ivf_params.chunk ? want - off : ivf_params.chunk;
        struct ivf_hdr d = {.type = IVF_DATA, .len = (uint32_t)n, .id = h->data, .size = off};
        if (ivf_send_frame(ep, p, &d, op->iov, op->iov_count, off, false, op) < 0)
            return -1;
    }
    return 0;
}

/* DATA: the next piece of a rendezvous receive, in order. */
static int on_data(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    struct ivf_op *op = ivf_op_find(ep, h->id, IVF_OP_RECV);
    if (!op || op->peer != p || h->size != op->done) {
        ivf_peer_fail(ep, p, -FI_EIO, "DATA for an unknown receive or out of order");
        return -1;
    }
    if (h->flags & IVF_F_FAULT) { /* the sender cannot read the rest: no more DATA, no ACK */
        op->wire_flags = (uint8_t)((op->wire_flags | IVF_F_FAULT) & ~IVF_F_ACK);
        recv_done(ep, op);
        return 0;
    }
    p->rx.dst_op = op;
    p->rx.dst_off = (size_t)h->size;
    return 0;
}

/* FLUSH: the sender continues on the IVC channel it names.  An endpoint
 * without IVC has no channel to wait for: its stream would stop for ever. */
static int on_flush(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    if (!ep->ivc) {
        ivf_peer_fail(ep, p, -FI_EIO, "FLUSH to an endpoint without IVC");
        return -1;
    }
    int err;
    struct ivf_seg *seg = ivf_seg_for_flush(ep, p, h->id, &err);
    if (!seg && !err) {
        ivf_ivc_progress(ep); /* an accepted channel's hello may be waiting */
        seg = ivf_seg_for_flush(ep, p, h->id, &err);
    }
    if (err) {
        ivf_peer_fail(ep, p, -FI_EIO, "FLUSH names a channel without a valid hello");
        return -1;
    }
    if (!seg)
        return -FI_EAGAIN; /* not set up on our side yet: the stream waits */
    p->rx.from = IVF_IVC;
    p->rx.seg = seg;
    return 0;
}

/* MOVE: the peer's stream goes on on the connection we opened (both
 * opened one at once, ours stays).  Nothing more comes on its own. */
static int on_move(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    if (rx->fd_next < 0 || rx->rb_off < rx->rb_len) {
        ivf_peer_fail(ep, p, -FI_EIO,
                      rx->fd_next < 0 ? "MOVE without a connection of ours to move to"
                                      : "bytes after MOVE");
        return -1;
    }
    ivf_stream_rx_close(p);
    rx->fd = rx->fd_next;
    rx->fd_next = -1;
    struct ivf_hdr h = {.type = IVF_MOVED};
    return ivf_send_frame(ep, p, &h, NULL, 0, 0, true, NULL) < 0 ? -1 : 0;
}

/* MOVED: the peer reads on the connection it opened: we write there. */
static int on_moved(struct ivf_ep *ep, struct ivf_peer *p)
{
    if (!p->tx.parked) {
        ivf_peer_fail(ep, p, -FI_EIO, "MOVED without a MOVE");
        return -1;
    }
    ivf_stream_unpark(p);
    return 0;
}

static int on_credit(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    if (h->data > ivf_params.credit - p->credit) {
        ivf_peer_fail(ep, p, -FI_EIO, "CREDIT beyond what was sent");
        return -1;
    }
    p->credit += (size_t)h->data;
    return 0;
}

/* ACK: a send that asked for it (FI_DELIVERY_COMPLETE) is delivered; the
 * receiver sends one per such message, never for another send. */
static int on_ack(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    struct ivf_op *op = named_send(ep, p, h);
    if (!op)
        return -1;
    if (!op->wait_ack || op->acked) {
        ivf_peer_fail(ep, p, -FI_EIO, "ACK for a send that waits for none");
        return -1;
    }
    op->acked = true;
    ivf_send_done(ep, op);
    return 0;
}

/* A header was read: check it and act on it.  Returns 0 to go on,
 * -FI_EAGAIN to stall (keep the header, retry later), -1 on a broken
 * stream (the peer failed). */
static int frame_begin(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    const struct ivf_hdr *h = &rx->hdr;
    rx->dst_op = NULL;
    rx->dst_unexp = NULL;
    rx->dst_off = 0;
    rx->payload_left = 0;
    const char *bad = ivf_hdr_check(h);
    if (bad) {
        /* With where the stream stood: a stream that lost its framing (not
         * a peer of another build) is a bug of ours to find from this. */
        char why[400];
        const struct ivf_seg *seg = rx->from == IVF_IVC ? rx->seg : NULL;
        snprintf(why, sizeof(why),
                 "%s: type %u, version %u (ours %u), len %u, read from %s after %llu+%llu bytes "
                 "(TCP read ahead %zu, IVC read ahead %zu, handed back %zu of %zu, channel %s; "
                 "connections: ours %d, its %d, next %d; %s)",
                 bad, h->type, h->version, IVF_PROTO_VERSION, h->len,
                 rx->from == IVF_IVC    ? "IVC"
                 : rx->from == IVF_SELF ? "itself"
                                        : "TCP",
                 (unsigned long long)p->bytes[1][IVF_TCP], (unsigned long long)p->bytes[1][IVF_IVC],
                 rx->rb_len - rx->rb_off, seg ? seg->ra_len - seg->ra_off : 0,
                 seg ? seg->hb_off : 0, seg ? seg->hb_len : 0,
                 !seg        ? "-"
                 : seg->dead ? "dead"
                             : "live",
                 p->fd_own >= 0, p->fd_in >= 0, rx->fd_next >= 0,
                 p->tx.parked ? "parked" : "writing");
        ivf_peer_fail(ep, p, -FI_EIO, why);
        return -1;
    }
    int r;
    switch (h->type) {
    case IVF_EAGER:
    case IVF_RTS: r = on_message(ep, p, h); break;
    case IVF_CTS: r = on_cts(ep, p, h); break;
    case IVF_DATA: r = on_data(ep, p, h); break;
    case IVF_FLUSH: r = on_flush(ep, p, h); break;
    case IVF_CREDIT: r = on_credit(ep, p, h); break;
    case IVF_MOVE: r = on_move(ep, p); break;
    case IVF_MOVED: r = on_moved(ep, p); break;
    default: r = on_ack(ep, p, h); break; /* IVF_ACK: ivf_hdr_check knows no other */
    }
    if (r == 0)
        rx->payload_left = h->len;
    return r;
}

/* The frame's payload is all in: an eager message or the last DATA of a
 * receive finishes it; an unexpected eager message is ready for a receive
 * that waits for it. */
static void frame_end(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    const struct ivf_hdr *h = &rx->hdr;
    struct ivf_op *op = rx->dst_op;
    struct ivf_unexp *u = rx->dst_unexp;
    /* The frame is whole: if a reply below fails the peer, what it filled
     * is no longer the peer's half-read message. */
    rx->dst_op = NULL;
    rx->dst_unexp = NULL;
    rx->hdr_got = 0;
    if (h->type == IVF_EAGER && u) {
        if (u->waiting_op) {
            ivf_unexp_del(ep, u);
            ivf_recv_take(ep, u->waiting_op, u);
        }
    } else if (h->type == IVF_EAGER && op) {
        recv_done(ep, op); /* before the CREDIT, which may fail the peer */
        credit_return(ep, p, h->len);
    } else if (h->type == IVF_DATA && op) {
        size_t want = op->msg_len < op->len ? op->msg_len : op->len;
        if (op->done >= want)
            recv_done(ep, op);
    }
}

/* Nothing to do for an IVC stream now: no frame waits, nothing is kept
 * from the channel, its ring is empty and it is healthy.  The check that
 * lets progress skip a quiet peer at the cost of a few loads. */
static bool rx_idle(const struct ivf_rx *rx)
{
    const struct ivf_seg *seg = rx->seg;
    return !rx->stalled && seg && !seg->dead && seg->ra_off == seg->ra_len &&
           seg->hb_off == seg->hb_len && ivc_chan_idle(seg->chan);
}

size_t ivf_direct_take(struct ivf_ep *ep, struct ivf_peer *p, const void *at, size_t n,
                       struct ivf_hdr *h, struct ivf_op **op, struct ivf_unexp **u)
{
    *op = NULL;
    *u = NULL;
    if (n < sizeof(*h))
        return 0;
    memcpy(h, at, sizeof(*h)); /* checked here, not where the peer can still write */
    if (h->type != IVF_EAGER || h->len > n - sizeof(*h) || (h->flags & (IVF_F_ACK | IVF_F_FAULT)) ||
        ivf_hdr_check(h) || h->len > ivf_params.credit - p->eager_in)
        return 0;
    const uint8_t *payload = (const uint8_t *)at + sizeof(*h);
    *op = ivf_match_find(ep, h->flags & IVF_F_TAGGED, h->tag, p);
    if (*op) {
        if ((*op)->len < h->len)
            return 0;
        ivf_buf_to_iov((*op)->iov, (*op)->iov_count, 0, payload, h->len);
    } else {
        /* Before its receive (half of the messages of two ranks sending
         * to each other at once): kept, without the parser's states. */
        if (h->len > IVF_UNEXP_SMALL || !(*u = ivf_unexp_new(ep, p, h, h->len)))
            return 0;
        memcpy((*u)->buf, payload, h->len);
        (*u)->got = h->len;
    }
    return sizeof(*h) + h->len;
}

void ivf_direct_done(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                     struct ivf_op *op, struct ivf_unexp *u)
{
    p->bytes[1][IVF_IVC] += sizeof(*h) + h->len;
    p->eager_in += h->len;
    if (u) {
        ivf_unexp_link(ep, u);
        return;
    }
    ivf_match_take(ep, op);
    ivf_op_matched(op, p, h->flags, h->tag, h->data, h->len, h->id);
    op->done = h->len;
    recv_done(ep, op);
    credit_return(ep, p, h->len);
}

void ivf_direct_undo(struct ivf_ep *ep, struct ivf_unexp *u)
{
    if (u)
        ivf_unexp_drop(ep, u);
}

/* The common small message, read where it lies in the IVC ring (see
 * ivf_direct_take): half the instructions of the way through the
 * read-ahead and the parser's states.  Only at a frame boundary with
 * nothing kept from the channel.  False when it took every byte its last
 * look found (what came since waits for the next pass, which starts here
 * again); true when what it stopped at is rx_pump's. */
static bool rx_direct(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    struct ivf_seg *seg = rx->seg;
    for (int frames = 0; frames < 64; frames++) {
        if (rx->hdr_got || rx->stalled || !seg || seg->dead || !seg->chan ||
            seg->ra_off < seg->ra_len || seg->hb_off < seg->hb_len)
            return true;
        const void *at;
        ssize_t n = ivc_read_peek(seg->chan, &at);
        struct ivf_hdr h;
        struct ivf_op *op;
        struct ivf_unexp *u;
        size_t len = n > 0 ? ivf_direct_take(ep, p, at, (size_t)n, &h, &op, &u) : 0;
        if (!len)
            return true;
        if (ivc_read_commit(seg->chan, len) < 0) {
            ivf_direct_undo(ep, u); /* a receive filled but not taken stays posted */
            return true;
        }
        ivf_direct_done(ep, p, &h, op, u);
        if (p->failed || rx->seg != seg)
            return !p->failed;
        if ((size_t)n == len)
            return false;
    }
    return true;
}

/* Read and act on up to 64 frames of p's stream. */
static void rx_pump(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    for (int frames = 0; frames < 64 && (rx->fd >= 0 || rx->from != IVF_TCP) && !p->failed;
         frames++) {
        if (rx->hdr_got < sizeof(rx->hdr)) {
            if (ivf_stream_read_header(ep, p) <= 0)
                return;
            rx->stalled = false;
            if (frame_begin(ep, p) < 0) {
                rx->stalled = !p->failed;
                return;
            }
        } else if (rx->stalled) {
            /* A header waits (memory, or a FLUSH's channel not set up). */
            if (frame_begin(ep, p) < 0)
                return;
            rx->stalled = false;
        }
        if (ivf_stream_read_payload(ep, p) <= 0)
            return;
        frame_end(ep, p);
    }
}

/* ---- moving the bytes ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The part of a pass that is due every millisecond: new connections and
 * channels.  Out of line, like peer_pass: what stays in ivf_progress is
 * the check that most calls make and find nothing (Open MPI polls the CQ
 * without pause while it waits; each poll is a pass). */
static __attribute__((noinline)) void setup_pass(struct ivf_ep *ep)
{
    ep->next_slow_ns = now_ns() + 1000000;
    int fd;
    for (struct ivf_peer *p; (p = ivf_conn_accept(ep, &fd));)
        ivf_stream_adopt(ep, p, fd);
    ivf_ivc_progress(ep);
}

/* A peer's share of a pass, unless it is a quiet IVC peer (busy: its IVC
 * stream was just found not idle). */
static __attribute__((noinline)) void peer_pass(struct ivf_ep *ep, struct ivf_peer *p, bool busy)
{
    if (p->tx.head)
        ivf_stream_write(ep, p);
    if (p->rx.from == IVF_IVC) {
        if ((busy || !rx_idle(&p->rx)) && rx_direct(ep, p) && !p->failed && !rx_idle(&p->rx))
            rx_pump(ep, p);
    } else if (p->rx.fd >= 0 || p->rx.from == IVF_SELF) {
        rx_pump(ep, p);
    }
    /* What reading queued (CTS, DATA, ACK, CREDIT) leaves now, not at the
     * next call: the peer may be waiting for it. */
    if (p->tx.head && !p->failed)
        ivf_stream_write(ep, p);
}

void ivf_progress(struct ivf_ep *ep)
{
    if (!ep->enabled)
        return;
    /* New connections and channels are looked for every millisecond (an
     * accept4() and a scan of the region per call would cost more than
     * an IVC message; the clock is read every 64 calls), and at once while
     * some are being set up. */
    bool due = ep->n_pending || ep->pending_segs || ep->ivc_setup || ep->next_slow_ns == 0;
    if (!due && ++ep->calls % 64 == 0) /* the clock is not free either (17% of a ping-pong) */
        due = now_ns() >= ep->next_slow_ns;
    if (due)
        setup_pass(ep);
    for (struct ivf_peer *p = ep->peers; p; p = p->next) {
        if (p->failed)
            continue;
        bool check = p->rx.from == IVF_IVC && !p->tx.head;
        if (!check || !rx_idle(&p->rx))
            peer_pass(ep, p, check);
    }
}

void ivf_progress_drain(struct ivf_ep *ep)
{
    for (int i = 0; i < 200; i++) {
        bool pending = false;
        for (struct ivf_peer *p = ep->peers; p; p = p->next)
            if (p->tx.head && !p->failed)
                pending = true;
        if (!pending)
            break;
        ivf_progress(ep);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
}

void ivf_domain_progress(struct ivf_domain *dom)
{
    for (struct ivf_ep *ep = dom->eps; ep; ep = ep->next)
        ivf_progress(ep);
}

void ivf_domain_wait(struct ivf_domain *dom, int timeout_ms)
{
    struct pollfd fds[256];
    nfds_t n = 0;
    bool spin = false;
    for (struct ivf_ep *ep = dom->eps; ep && n < 256; ep = ep->next) {
        if (!ep->enabled)
            continue;
        spin |= ep->ivc_busy;
        fds[n++] = (struct pollfd){.fd = ep->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < ep->n_pending && n < 256; i++)
            fds[n++] = (struct pollfd){.fd = ep->pending_fds[i], .events = POLLIN};
        for (struct ivf_peer *p = ep->peers; p && n < 256; p = p->next) {
            if (p->rx.rb_off < p->rx.rb_len)
                return; /* frames read ahead wait: no POLLIN would tell of them */
            if (p->rx.fd >= 0)
                fds[n++] = (struct pollfd){.fd = p->rx.fd, .events = POLLIN};
            if (p->tx.fd >= 0 && p->tx.head)
                fds[n++] = (struct pollfd){.fd = p->tx.fd, .events = POLLOUT};
        }
    }
    ivf_unlock(dom);
    if (spin) { /* shared memory wakes no file descriptor: look again soon */
        poll(fds, n, 0);
        nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
    } else {
        poll(fds, n, timeout_ms);
    }
    ivf_lock(dom);
}
