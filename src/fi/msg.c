/*
 * msg.c - the FI_MSG and FI_TAGGED calls of an endpoint (fi_send,
 * fi_tsend, fi_inject, fi_sendmsg, fi_recv, fi_trecvmsg, ...).  A send
 * goes eager (the whole message, while the peer's credit lasts: straight
 * into an idle IVC channel when it can) or starts a rendezvous (RTS; the
 * rest is progress.c's).  A receive takes an unexpected message or is
 * posted for matching (match.c); FI_PEEK, FI_CLAIM and FI_DISCARD act on
 * the unexpected queue.
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>

static uint8_t wire_flags(uint64_t flags, bool ack)
{
    return (uint8_t)((flags & FI_TAGGED ? IVF_F_TAGGED : 0) |
                     (flags & FI_REMOTE_CQ_DATA ? IVF_F_CQDATA : 0) | (ack ? IVF_F_ACK : 0));
}

/* A new operation of ep on the caller's iov (count checked). */
static struct ivf_op *op_on_iov(struct ivf_ep *ep, enum ivf_op_kind kind, const struct iovec *iov,
                                size_t count, void *context, uint64_t flags)
{
    struct ivf_op *op = ivf_op_new(ep);
    if (!op)
        return NULL;
    op->kind = kind;
    op->context = context;
    op->flags = flags;
    op->iov_count = count;
    if (count)
        memcpy(op->iov, iov, count * sizeof(*iov));
    for (size_t i = 0; i < count; i++)
        op->len += iov[i].iov_len;
    return op;
}

/* ---- sending ------------------------------------------------------------------- */

/* The common small message: straight into an idle IVC channel, without an
 * operation or a queued frame.  1: sent (and completed); 0: take the
 * ordinary way; <0: the peer failed. */
static ssize_t send_direct(struct ivf_ep *ep, struct ivf_peer *p, const struct iovec *iov,
                           size_t count, size_t len, uint64_t tag, uint64_t data, void *context,
                           uint64_t flags, bool want)
{
    struct ivf_hdr h = {.type = IVF_EAGER,
                        .flags = wire_flags(flags, false),
                        .len = (uint32_t)len,
                        .tag = tag,
                        .data = data};
    int k = ivf_send_now(ep, p, &h, iov, count);
    if (k < 0)
        return p->failed ? p->failed : -FI_EIO;
    if (k == 0)
        return 0;
    p->credit -= len;
    struct ivf_cqe *e;
    if (want && ep->tx_cq && (e = ivf_cq_slot(ep->tx_cq, 0))) {
        *e = (struct ivf_cqe){.e = {.op_context = context,
                                    .flags = FI_SEND | (flags & FI_TAGGED ? FI_TAGGED : FI_MSG)},
                              .src = FI_ADDR_NOTAVAIL};
    }
    return 1;
}

/* Messages up to this size go whole to p (see init.c). */
static size_t eager_limit(const struct ivf_peer *p)
{
    return p->tx.to == IVF_TCP ? ivf_params.tcp_eager_max : ivf_params.eager_max;
}

/* Queue send op to p: EAGER (copied: the caller's buffer is free on
 * return) while the credit lasts, else RTS. */
static ssize_t send_queued(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_op *op)
{
    struct ivf_hdr h = {
        .flags = wire_flags(op->flags, op->wait_ack), .tag = op->tag, .data = op->data};
    size_t len = op->len;
    ssize_t r;
    if (len <= eager_limit(p) && len <= p->credit) {
        h.type = IVF_EAGER;
        p->credit -= len;
        h.len = (uint32_t)len;
        if (op->wait_ack) {
            op->id = ++ep->next_id;
            h.id = op->id;
            ivf_op_list_add(&ep->active, op);
        }
        r = ivf_send_frame(ep, p, &h, op->iov, op->iov_count, 0, true, op);
    } else {
        /* Announced; an injected message's buffer is the caller's only
         * until we return, so its data is copied first. */
        if (op->flags & FI_INJECT) {
            op->owned = malloc(len ? len : 1);
            if (!op->owned)
                return -FI_ENOMEM;
            ivf_iov_to_buf(op->iov, op->iov_count, 0, op->owned, len);
            op->iov[0] = (struct iovec){op->owned, len};
            op->iov_count = 1;
        }
        h.type = IVF_RTS;
        h.size = len;
        op->id = ++ep->next_id;
        op->wait_cts = true;
        h.id = op->id;
        ivf_op_list_add(&ep->active, op);
        r = ivf_send_frame(ep, p, &h, NULL, 0, 0, true, op);
    }
    if (r < 0) {
        if (h.type == IVF_EAGER)
            p->credit += len;
        ivf_op_list_del(&ep->active, op);
    }
    return r;
}

/* The destination's peer, ready to take a send: its stream started (before
 * any operation of the send exists: starting can fail the peer and what
 * waits on it), not failed nor too full.  *r says why not. */
static struct ivf_peer *send_peer(struct ivf_ep *ep, fi_addr_t dest, ssize_t *r)
{
    const struct ivf_addr *a = ep->enabled ? ivf_av_get(ep->av, dest) : NULL;
    struct ivf_peer *p = a ? ivf_peer_at(ep, dest, a) : NULL;
    *r = !ep->enabled ? -FI_EOPBADSTATE : !a ? -FI_EINVAL : !p ? -FI_ENOMEM : 0;
    if (!p)
        return NULL;
    int started = ivf_stream_start(ep, p);
    if (started < 0) {
        *r = started;
        return NULL;
    }
    if (p->tx.queued > ivf_params.tx_max) {
        ivf_progress(ep);
        if (p->tx.queued > ivf_params.tx_max) {
            *r = -FI_EAGAIN;
            return NULL;
        }
    }
    return p;
}

static ssize_t send_locked(struct ivf_ep *ep, const struct iovec *iov, size_t count, size_t len,
                           bool nobase, fi_addr_t dest, uint64_t tag, uint64_t data, void *context,
                           uint64_t flags, bool quiet)
{
    ssize_t r;
    struct ivf_peer *p = send_peer(ep, dest, &r);
    if (!p)
        return r;
    bool want = !quiet && (!(ep->tx_flags & FI_SELECTIVE_COMPLETION) || (flags & FI_COMPLETION));
    bool ack = want && (flags & FI_DELIVERY_COMPLETE) && !nobase;
    if (nobase) {
        /* Nothing to read the data from: what goes is a FAULT frame, so
         * that the receive that takes it fails rather than waits forever,
         * and the send completes with FI_EFAULT once it is out. */
        iov = NULL;
        count = 0;
    } else if (len <= eager_limit(p) && len <= p->credit && !ack) {
        r = send_direct(ep, p, iov, count, len, tag, data, context, flags, want);
        if (r != 0)
            return r < 0 ? r : 0;
    }
    struct ivf_op *op = op_on_iov(ep, IVF_OP_SEND, iov, count, context, flags);
    if (!op)
        return -FI_ENOMEM;
    op->tag = tag;
    op->data = data;
    op->addr = dest;
    op->peer = p;
    op->want_completion = want;
    op->quiet = quiet;
    op->wait_ack = ack;
    if (nobase) {
        struct ivf_hdr h = {.type = IVF_EAGER,
                            .flags = wire_flags(flags, false) | IVF_F_FAULT,
                            .tag = tag,
                            .data = data};
        op->err = FI_EFAULT;
        r = ivf_send_frame(ep, p, &h, NULL, 0, 0, true, op);
    } else {
        r = send_queued(ep, p, op);
    }
    if (r < 0) {
        ivf_op_free(op);
        return r;
    }
    ivf_progress(ep);
    return 0;
}

/* quiet: fi_inject and fi_injectdata, whose success writes no completion
 * (as if selective without FI_COMPLETION).  FI_INJECT as a flag (of
 * fi_sendmsg, or the endpoint's) only frees the buffer at once: such a
 * send completes like any other. */
static ssize_t do_send(struct ivf_ep *ep, const struct iovec *iov, size_t count, fi_addr_t dest,
                       uint64_t tag, uint64_t data, void *context, uint64_t flags, bool quiet)
{
    if (count > IVF_IOV_LIMIT)
        return -FI_EINVAL;
    size_t len = 0;
    bool nobase = false; /* a piece with a length but no address (see send_locked) */
    for (size_t i = 0; i < count; i++) {
        len += iov[i].iov_len;
        nobase |= !iov[i].iov_base && iov[i].iov_len;
    }
    if ((flags & FI_INJECT) && len > IVF_INJECT_SIZE)
        return -FI_EINVAL;
    if (nobase && quiet)
        return -FI_EFAULT; /* no completion to report it in */
    ivf_lock(ep->dom);
    ssize_t r = send_locked(ep, iov, count, len, nobase, dest, tag, data, context, flags, quiet);
    ivf_unlock(ep->dom);
    return r;
}

/* ---- receiving ----------------------------------------------------------------- */

/* What posting a receive queued (the CTS of a rendezvous message it took,
 * the CREDIT or ACK of an eager one) leaves now: the sender waits for it.
 * Not a whole progress pass: the next completion read does that, and a
 * receive posted before each message (MPI_Sendrecv, collectives) would pay
 * for one every time. */
static void flush_replies(struct ivf_ep *ep)
{
    for (struct ivf_peer *p = ep->peers; p; p = p->next)
        if (p->tx.head && !p->failed)
            ivf_stream_write(ep, p);
}

/* Receive op takes the oldest unexpected message it matches (FI_CLAIM: the
 * one its peek set aside), or waits posted for one. */
static ssize_t post_recv(struct ivf_ep *ep, struct ivf_op *op)
{
    struct ivf_unexp *u;
    if (op->flags & FI_CLAIM) {
        u = ivf_unexp_claimed(ep, op->flags & FI_TAGGED, op->context);
        if (!u)
            return -FI_EINVAL;
        if (op->flags & FI_DISCARD) {
            ivf_recv_discard(ep, u);
            op->done = 0;
            ivf_op_complete(ep, op, 0);
            return 0;
        }
    } else if (!(u = ivf_unexp_find(ep, op))) {
        ivf_match_post(ep, op);
        return 0;
    }
    if (u->type == IVF_EAGER && u->got < u->len) {
        u->waiting_op = op; /* taken when its payload is in (progress.c) */
        return 0;
    }
    ivf_unexp_del(ep, u);
    ivf_recv_take(ep, op, u);
    return 0;
}

/* FI_PEEK: is there a message op would take?  Completes op either way
 * (FI_ENOMSG if not); FI_DISCARD drops the message, FI_CLAIM sets it
 * aside for a receive with op's context. */
static ssize_t peek(struct ivf_ep *ep, struct ivf_op *op, uint64_t flags)
{
    struct ivf_unexp *u = ivf_unexp_find(ep, op);
    op->want_completion = true;
    if (!u) {
        ivf_op_complete(ep, op, FI_ENOMSG);
        return 0;
    }
    ivf_op_matched(op, u->peer, u->flags, u->tag, u->data, u->len, u->remote_id);
    op->done = u->len; /* a peek reports the message's length */
    op->len = u->len;
    if (flags & FI_DISCARD)
        ivf_recv_discard(ep, u);
    else if (flags & FI_CLAIM)
        u->claim_context = op->context;
    ivf_op_complete(ep, op, 0);
    return 0;
}

static ssize_t do_recv(struct ivf_ep *ep, const struct iovec *iov, size_t count, fi_addr_t src,
                       uint64_t tag, uint64_t ignore, void *context, uint64_t flags)
{
    if (count > IVF_IOV_LIMIT)
        return -FI_EINVAL;
    if ((flags & FI_CLAIM) && !context)
        return -FI_EINVAL;
    for (size_t i = 0; i < count; i++)
        if (!iov[i].iov_base && iov[i].iov_len)
            return -FI_EFAULT; /* nowhere to put the data */
    ivf_lock(ep->dom);
    struct ivf_op *op = op_on_iov(ep, IVF_OP_RECV, iov, count, context, flags);
    if (!op) {
        ivf_unlock(ep->dom);
        return -FI_ENOMEM;
    }
    op->tag = tag;
    op->ignore = ignore;
    bool directed = ep->info->caps & FI_DIRECTED_RECV;
    op->addr = directed ? src : FI_ADDR_UNSPEC;
    /* A directed receive wants an endpoint, whichever fi_addr names it. */
    const struct ivf_addr *from = op->addr == FI_ADDR_UNSPEC ? NULL : ivf_av_get(ep->av, op->addr);
    op->src_uid = from ? from->uid : 0;
    op->want_completion = !(ep->rx_flags & FI_SELECTIVE_COMPLETION) || (flags & FI_COMPLETION);
    ssize_t r;
    if (!ep->enabled || (op->addr != FI_ADDR_UNSPEC && !from)) {
        ivf_op_free(op);
        r = ep->enabled ? -FI_EINVAL : -FI_EOPBADSTATE;
    } else if (flags & FI_PEEK) {
        r = peek(ep, op, flags);
    } else {
        r = post_recv(ep, op);
        if (r < 0)
            ivf_op_free(op);
        else
            flush_replies(ep);
    }
    ivf_unlock(ep->dom);
    return r;
}

/* ---- the ops tables ------------------------------------------------------------- */

static struct ivf_ep *ep_of(struct fid_ep *fid)
{
    return (struct ivf_ep *)fid;
}

/* One buffer (every call but the v and msg ones); `flags` say what kind
 * (FI_MSG/FI_TAGGED, FI_REMOTE_CQ_DATA); FI_INJECT: an inject call, quiet;
 * else the endpoint's default op flags are added. */
static ssize_t send_buf(struct fid_ep *fid, const void *buf, size_t len, fi_addr_t dest,
                        uint64_t tag, uint64_t data, void *context, uint64_t flags)
{
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {(void *)buf, len};
    bool inject = flags & FI_INJECT;
    if (!inject)
        flags |= ep->tx_op_flags;
    return do_send(ep, &v, 1, dest, tag, data, context, flags, inject);
}

static ssize_t recv_iov(struct fid_ep *fid, const struct iovec *iov, size_t count, fi_addr_t src,
                        uint64_t tag, uint64_t ignore, void *context, uint64_t flags)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_recv(ep, iov, count, src, tag, ignore, context, ep->rx_op_flags | flags);
}

static ssize_t msg_recv(struct fid_ep *fid, void *buf, size_t len, void *desc, fi_addr_t src,
                        void *context)
{
    return recv_iov(fid, &(struct iovec){buf, len}, 1, src, 0, 0, context, FI_MSG);
}

static ssize_t msg_recvv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                         fi_addr_t src, void *context)
{
    return recv_iov(fid, iov, count, src, 0, 0, context, FI_MSG);
}

static ssize_t msg_recvmsg(struct fid_ep *fid, const struct fi_msg *m, uint64_t flags)
{
    if (flags & (FI_PEEK | FI_CLAIM | FI_DISCARD))
        return -FI_EBADFLAGS; /* only for tagged receives */
    return do_recv(ep_of(fid), m->msg_iov, m->iov_count, m->addr, 0, 0, m->context, flags | FI_MSG);
}

static ssize_t msg_send(struct fid_ep *fid, const void *buf, size_t len, void *desc, fi_addr_t dest,
                        void *context)
{
    return send_buf(fid, buf, len, dest, 0, 0, context, FI_MSG);
}

static ssize_t msg_sendv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                         fi_addr_t dest, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_send(ep, iov, count, dest, 0, 0, context, ep->tx_op_flags | FI_MSG, false);
}

static ssize_t msg_sendmsg(struct fid_ep *fid, const struct fi_msg *m, uint64_t flags)
{
    return do_send(ep_of(fid), m->msg_iov, m->iov_count, m->addr, 0, m->data, m->context,
                   flags | FI_MSG, false);
}

static ssize_t msg_inject(struct fid_ep *fid, const void *buf, size_t len, fi_addr_t dest)
{
    return send_buf(fid, buf, len, dest, 0, 0, NULL, FI_MSG | FI_INJECT);
}

static ssize_t msg_senddata(struct fid_ep *fid, const void *buf, size_t len, void *desc,
                            uint64_t data, fi_addr_t dest, void *context)
{
    return send_buf(fid, buf, len, dest, 0, data, context, FI_MSG | FI_REMOTE_CQ_DATA);
}

static ssize_t msg_injectdata(struct fid_ep *fid, const void *buf, size_t len, uint64_t data,
                              fi_addr_t dest)
{
    return send_buf(fid, buf, len, dest, 0, data, NULL, FI_MSG | FI_INJECT | FI_REMOTE_CQ_DATA);
}

struct fi_ops_msg ivf_msg_ops = {
    .size = sizeof(struct fi_ops_msg),
    .recv = msg_recv,
    .recvv = msg_recvv,
    .recvmsg = msg_recvmsg,
    .send = msg_send,
    .sendv = msg_sendv,
    .sendmsg = msg_sendmsg,
    .inject = msg_inject,
    .senddata = msg_senddata,
    .injectdata = msg_injectdata,
};

static ssize_t t_recv(struct fid_ep *fid, void *buf, size_t len, void *desc, fi_addr_t src,
                      uint64_t tag, uint64_t ignore, void *context)
{
    return recv_iov(fid, &(struct iovec){buf, len}, 1, src, tag, ignore, context, FI_TAGGED);
}

static ssize_t t_recvv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                       fi_addr_t src, uint64_t tag, uint64_t ignore, void *context)
{
    return recv_iov(fid, iov, count, src, tag, ignore, context, FI_TAGGED);
}

static ssize_t t_recvmsg(struct fid_ep *fid, const struct fi_msg_tagged *m, uint64_t flags)
{
    return do_recv(ep_of(fid), m->msg_iov, m->iov_count, m->addr, m->tag, m->ignore, m->context,
                   flags | FI_TAGGED);
}

static ssize_t t_send(struct fid_ep *fid, const void *buf, size_t len, void *desc, fi_addr_t dest,
                      uint64_t tag, void *context)
{
    return send_buf(fid, buf, len, dest, tag, 0, context, FI_TAGGED);
}

static ssize_t t_sendv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                       fi_addr_t dest, uint64_t tag, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_send(ep, iov, count, dest, tag, 0, context, ep->tx_op_flags | FI_TAGGED, false);
}

static ssize_t t_sendmsg(struct fid_ep *fid, const struct fi_msg_tagged *m, uint64_t flags)
{
    return do_send(ep_of(fid), m->msg_iov, m->iov_count, m->addr, m->tag, m->data, m->context,
                   flags | FI_TAGGED, false);
}

static ssize_t t_inject(struct fid_ep *fid, const void *buf, size_t len, fi_addr_t dest,
                        uint64_t tag)
{
    return send_buf(fid, buf, len, dest, tag, 0, NULL, FI_TAGGED | FI_INJECT);
}

static ssize_t t_senddata(struct fid_ep *fid, const void *buf, size_t len, void *desc,
                          uint64_t data, fi_addr_t dest, uint64_t tag, void *context)
{
    return send_buf(fid, buf, len, dest, tag, data, context, FI_TAGGED | FI_REMOTE_CQ_DATA);
}

static ssize_t t_injectdata(struct fid_ep *fid, const void *buf, size_t len, uint64_t data,
                            fi_addr_t dest, uint64_t tag)
{
    return send_buf(fid, buf, len, dest, tag, data, NULL,
                    FI_TAGGED | FI_INJECT | FI_REMOTE_CQ_DATA);
}

struct fi_ops_tagged ivf_tagged_ops = {
    .size = sizeof(struct fi_ops_tagged),
    .recv = t_recv,
    .recvv = t_recvv,
    .recvmsg = t_recvmsg,
    .send = t_send,
    .sendv = t_sendv,
    .sendmsg = t_sendmsg,
    .inject = t_inject,
    .senddata = t_senddata,
    .injectdata = t_injectdata,
};
