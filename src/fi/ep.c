/*
 * ep.c - the RDM endpoint: binding, enabling, names, and the FI_MSG and
 * FI_TAGGED calls, which turn into operations (struct ivf_op) for the
 * matching engine (match.c) and the streams (link.c).
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ivf_ep *ep_of(struct fid_ep *fid)
{
    return (struct ivf_ep *)fid;
}

#define OP_CACHE_MAX 64

struct ivf_op *ivf_op_new(struct ivf_ep *ep)
{
    struct ivf_op *op = ep->op_cache;
    if (op) {
        ep->op_cache = op->next;
        ep->op_cached--;
        memset(op, 0, sizeof(*op));
    } else if (!(op = calloc(1, sizeof(*op)))) {
        return NULL;
    }
    op->ep = ep;
    return op;
}

void ivf_op_free(struct ivf_op *op)
{
    free(op->owned);
    op->owned = NULL;
    struct ivf_ep *ep = op->ep;
    if (ep && ep->op_cached < OP_CACHE_MAX) {
        op->next = ep->op_cache;
        ep->op_cache = op;
        ep->op_cached++;
        return;
    }
    free(op);
}

static void op_cache_drain(struct ivf_ep *ep)
{
    while (ep->op_cache) {
        struct ivf_op *op = ep->op_cache;
        ep->op_cache = op->next;
        free(op);
    }
    ep->op_cached = 0;
}

void ivf_op_complete(struct ivf_ep *ep, struct ivf_op *op, int err)
{
    bool recv = op->kind == IVF_OP_RECV;
    struct ivf_cq *cq = recv ? ep->rx_cq : ep->tx_cq;
    if (cq && (op->want_completion || err)) {
        struct ivf_cqe e = {0};
        e.e.op_context = op->context;
        e.e.flags = (recv ? FI_RECV : FI_SEND) | (op->flags & FI_TAGGED ? FI_TAGGED : FI_MSG);
        e.src = FI_ADDR_NOTAVAIL;
        if (recv) {
            if (op->wire_flags & IVF_F_CQDATA) {
                e.e.flags |= FI_REMOTE_CQ_DATA;
                e.e.data = op->data;
            }
            e.e.len = op->done;
            e.e.tag = op->tag;
            e.e.buf = op->iov_count ? op->iov[0].iov_base : NULL;
            if (op->peer) {
                if (op->peer->fi_addr == FI_ADDR_NOTAVAIL)
                    op->peer->fi_addr = ivf_av_find(ep->av, &op->peer->addr);
                e.src = op->peer->fi_addr;
            }
            if (err == FI_ETRUNC)
                e.olen = op->msg_len - op->done;
        }
        if (op->flags & FI_PEEK)
            e.e.len = op->msg_len;
        e.err = err;
        ivf_cq_push(cq, &e);
    }
    ivf_op_free(op);
}

/* ---- sending ------------------------------------------------------------------- */

static ssize_t do_send(struct ivf_ep *ep, const struct iovec *iov, size_t count, fi_addr_t dest,
                       uint64_t tag, uint64_t data, void *context, uint64_t flags)
{
    if (count > IVF_IOV_LIMIT)
        return -FI_EINVAL;
    size_t len = 0;
    for (size_t i = 0; i < count; i++)
        len += iov[i].iov_len;
    if ((flags & FI_INJECT) && len > IVF_INJECT_SIZE)
        return -FI_EINVAL;
    ivf_lock(ep->dom);
    ssize_t r;
    if (!ep->enabled) {
        r = -FI_EOPBADSTATE;
        goto out;
    }
    const struct ivf_addr *a = ivf_av_get(ep->av, dest);
    if (!a) {
        r = -FI_EINVAL;
        goto out;
    }
    struct ivf_peer *p = ivf_peer_get(ep, a);
    if (!p) {
        r = -FI_ENOMEM;
        goto out;
    }
    if (p->failed) {
        r = p->failed;
        goto out;
    }
    if (p->tx.queued > ivf_params.tx_max) {
        ivf_progress(ep);
        if (p->tx.queued > ivf_params.tx_max) {
            r = -FI_EAGAIN;
            goto out;
        }
    }
    bool want = !(flags & FI_INJECT) &&
                (!(ep->tx_flags & FI_SELECTIVE_COMPLETION) || (flags & FI_COMPLETION));
    bool ack = want && (flags & FI_DELIVERY_COMPLETE);
    if (len <= ivf_params.eager_max && len <= p->credit && !ack) {
        /* The common small message: straight into an idle IVC channel,
         * without an operation or a queued frame. */
        struct ivf_hdr h = {.type = IVF_EAGER,
                            .flags = (uint8_t)((flags & FI_TAGGED ? IVF_F_TAGGED : 0) |
                                               (flags & FI_REMOTE_CQ_DATA ? IVF_F_CQDATA : 0)),
                            .len = (uint32_t)len,
                            .tag = tag,
                            .data = data};
        int k = ivf_send_now(ep, p, &h, iov, count);
        if (k < 0) {
            r = p->failed ? p->failed : -FI_EIO;
            goto out;
        }
        if (k > 0) {
            p->credit -= len;
            if (want && ep->tx_cq) {
                struct ivf_cqe e = {.src = FI_ADDR_NOTAVAIL};
                e.e.op_context = context;
                e.e.flags = FI_SEND | (flags & FI_TAGGED ? FI_TAGGED : FI_MSG);
                ivf_cq_push(ep->tx_cq, &e);
            }
            r = 0;
            goto out;
        }
    }
    struct ivf_op *op = ivf_op_new(ep);
    if (!op) {
        r = -FI_ENOMEM;
        goto out;
    }
    op->kind = IVF_OP_SEND;
    op->context = context;
    op->flags = flags;
    op->len = len;
    op->iov_count = count;
    if (count)
        memcpy(op->iov, iov, count * sizeof(*iov));
    op->tag = tag;
    op->data = data;
    op->addr = dest;
    op->peer = p;
    op->want_completion = want;
    op->wait_ack = ack;
    struct ivf_hdr h = {.flags = (uint8_t)((flags & FI_TAGGED ? IVF_F_TAGGED : 0) |
                                           (flags & FI_REMOTE_CQ_DATA ? IVF_F_CQDATA : 0) |
                                           (op->wait_ack ? IVF_F_ACK : 0)),
                        .tag = tag,
                        .data = data};
    if (len <= ivf_params.eager_max && len <= p->credit) {
        h.type = IVF_EAGER;
        p->credit -= len;
        h.len = (uint32_t)len;
        if (op->wait_ack) {
            op->id = ++ep->next_id;
            h.id = op->id;
            ivf_op_list_add(&ep->active, op);
        }
        /* Copied when queued: the caller's buffer is free on return. */
        r = ivf_send_frame(ep, p, &h, op->iov, count, 0, true, op);
    } else {
        /* Announced; an injected message's buffer is the caller's only
         * until we return, so its data is copied first. */
        if (flags & FI_INJECT) {
            op->owned = malloc(len ? len : 1);
            if (!op->owned) {
                ivf_op_free(op);
                r = -FI_ENOMEM;
                goto out;
            }
            ivf_iov_to_buf(iov, count, 0, op->owned, len);
            op->iov[0] = (struct iovec){op->owned, len};
            op->iov_count = 1;
        }
        h.type = IVF_RTS;
        h.size = len;
        op->id = ++ep->next_id;
        h.id = op->id;
        ivf_op_list_add(&ep->active, op);
        r = ivf_send_frame(ep, p, &h, NULL, 0, 0, true, op);
    }
    if (r < 0) {
        if (h.type == IVF_EAGER)
            p->credit += len;
        ivf_op_list_del(&ep->active, op);
        ivf_op_free(op);
        goto out;
    }
    ivf_progress(ep);
    r = 0;
out:
    ivf_unlock(ep->dom);
    return r;
}

/* ---- receiving ----------------------------------------------------------------- */

static ssize_t do_recv(struct ivf_ep *ep, const struct iovec *iov, size_t count, fi_addr_t src,
                       uint64_t tag, uint64_t ignore, void *context, uint64_t flags)
{
    if (count > IVF_IOV_LIMIT)
        return -FI_EINVAL;
    if ((flags & FI_CLAIM) && !context)
        return -FI_EINVAL;
    ivf_lock(ep->dom);
    struct ivf_op *op = ivf_op_new(ep);
    if (!op) {
        ivf_unlock(ep->dom);
        return -FI_ENOMEM;
    }
    op->kind = IVF_OP_RECV;
    op->context = context;
    op->flags = flags;
    op->iov_count = count;
    if (count)
        memcpy(op->iov, iov, count * sizeof(*iov));
    for (size_t i = 0; i < count; i++)
        op->len += iov[i].iov_len;
    op->tag = tag;
    op->ignore = ignore;
    bool directed = ep->info->caps & FI_DIRECTED_RECV;
    op->addr = directed ? src : FI_ADDR_UNSPEC;
    op->want_completion = !(ep->rx_flags & FI_SELECTIVE_COMPLETION) || (flags & FI_COMPLETION);
    ssize_t r;
    if (!ep->enabled) {
        ivf_op_free(op);
        r = -FI_EOPBADSTATE;
    } else if (flags & FI_PEEK) {
        r = ivf_peek(ep, op, flags);
    } else {
        r = ivf_post_recv(ep, op);
        if (r < 0)
            ivf_op_free(op);
        else
            ivf_progress(ep);
    }
    ivf_unlock(ep->dom);
    return r;
}

/* ---- FI_MSG -------------------------------------------------------------------- */

static ssize_t msg_recv(struct fid_ep *fid, void *buf, size_t len, void *desc, fi_addr_t src,
                        void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {buf, len};
    return do_recv(ep, &v, 1, src, 0, 0, context, ep->rx_op_flags | FI_MSG);
}

static ssize_t msg_recvv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                         fi_addr_t src, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_recv(ep, iov, count, src, 0, 0, context, ep->rx_op_flags | FI_MSG);
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
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {(void *)buf, len};
    return do_send(ep, &v, 1, dest, 0, 0, context, ep->tx_op_flags | FI_MSG);
}

static ssize_t msg_sendv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                         fi_addr_t dest, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_send(ep, iov, count, dest, 0, 0, context, ep->tx_op_flags | FI_MSG);
}

static ssize_t msg_sendmsg(struct fid_ep *fid, const struct fi_msg *m, uint64_t flags)
{
    return do_send(ep_of(fid), m->msg_iov, m->iov_count, m->addr, 0, m->data, m->context,
                   flags | FI_MSG);
}

static ssize_t msg_inject(struct fid_ep *fid, const void *buf, size_t len, fi_addr_t dest)
{
    struct iovec v = {(void *)buf, len};
    return do_send(ep_of(fid), &v, 1, dest, 0, 0, NULL, FI_MSG | FI_INJECT);
}

static ssize_t msg_senddata(struct fid_ep *fid, const void *buf, size_t len, void *desc,
                            uint64_t data, fi_addr_t dest, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {(void *)buf, len};
    return do_send(ep, &v, 1, dest, 0, data, context, ep->tx_op_flags | FI_MSG | FI_REMOTE_CQ_DATA);
}

static ssize_t msg_injectdata(struct fid_ep *fid, const void *buf, size_t len, uint64_t data,
                              fi_addr_t dest)
{
    struct iovec v = {(void *)buf, len};
    return do_send(ep_of(fid), &v, 1, dest, 0, data, NULL, FI_MSG | FI_INJECT | FI_REMOTE_CQ_DATA);
}

static struct fi_ops_msg msg_ops = {
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

/* ---- FI_TAGGED ------------------------------------------------------------------ */

static ssize_t t_recv(struct fid_ep *fid, void *buf, size_t len, void *desc, fi_addr_t src,
                      uint64_t tag, uint64_t ignore, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {buf, len};
    return do_recv(ep, &v, 1, src, tag, ignore, context, ep->rx_op_flags | FI_TAGGED);
}

static ssize_t t_recvv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                       fi_addr_t src, uint64_t tag, uint64_t ignore, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_recv(ep, iov, count, src, tag, ignore, context, ep->rx_op_flags | FI_TAGGED);
}

static ssize_t t_recvmsg(struct fid_ep *fid, const struct fi_msg_tagged *m, uint64_t flags)
{
    return do_recv(ep_of(fid), m->msg_iov, m->iov_count, m->addr, m->tag, m->ignore, m->context,
                   flags | FI_TAGGED);
}

static ssize_t t_send(struct fid_ep *fid, const void *buf, size_t len, void *desc, fi_addr_t dest,
                      uint64_t tag, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {(void *)buf, len};
    return do_send(ep, &v, 1, dest, tag, 0, context, ep->tx_op_flags | FI_TAGGED);
}

static ssize_t t_sendv(struct fid_ep *fid, const struct iovec *iov, void **desc, size_t count,
                       fi_addr_t dest, uint64_t tag, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    return do_send(ep, iov, count, dest, tag, 0, context, ep->tx_op_flags | FI_TAGGED);
}

static ssize_t t_sendmsg(struct fid_ep *fid, const struct fi_msg_tagged *m, uint64_t flags)
{
    return do_send(ep_of(fid), m->msg_iov, m->iov_count, m->addr, m->tag, m->data, m->context,
                   flags | FI_TAGGED);
}

static ssize_t t_inject(struct fid_ep *fid, const void *buf, size_t len, fi_addr_t dest,
                        uint64_t tag)
{
    struct iovec v = {(void *)buf, len};
    return do_send(ep_of(fid), &v, 1, dest, tag, 0, NULL, FI_TAGGED | FI_INJECT);
}

static ssize_t t_senddata(struct fid_ep *fid, const void *buf, size_t len, void *desc,
                          uint64_t data, fi_addr_t dest, uint64_t tag, void *context)
{
    struct ivf_ep *ep = ep_of(fid);
    struct iovec v = {(void *)buf, len};
    return do_send(ep, &v, 1, dest, tag, data, context,
                   ep->tx_op_flags | FI_TAGGED | FI_REMOTE_CQ_DATA);
}

static ssize_t t_injectdata(struct fid_ep *fid, const void *buf, size_t len, uint64_t data,
                            fi_addr_t dest, uint64_t tag)
{
    struct iovec v = {(void *)buf, len};
    return do_send(ep_of(fid), &v, 1, dest, tag, data, NULL,
                   FI_TAGGED | FI_INJECT | FI_REMOTE_CQ_DATA);
}

static struct fi_ops_tagged tagged_ops = {
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

/* ---- endpoint control ----------------------------------------------------------- */

static ssize_t ep_cancel(fid_t fid, void *context)
{
    struct ivf_ep *ep = (struct ivf_ep *)fid;
    ivf_lock(ep->dom);
    int r = ivf_cancel_recv(ep, context);
    ivf_unlock(ep->dom);
    return r;
}

static int ep_getopt(fid_t fid, int level, int optname, void *optval, size_t *optlen)
{
    return -FI_ENOPROTOOPT;
}

static int ep_setopt(fid_t fid, int level, int optname, const void *optval, size_t optlen)
{
    return -FI_ENOPROTOOPT;
}

static int no_ctx(struct fid_ep *sep, int index, void *attr, struct fid_ep **ep, void *context)
{
    return -FI_ENOSYS;
}

static ssize_t size_left(struct fid_ep *ep)
{
    return 65536;
}

static struct fi_ops_ep ep_ops = {
    .size = sizeof(struct fi_ops_ep),
    .cancel = ep_cancel,
    .getopt = ep_getopt,
    .setopt = ep_setopt,
    .tx_ctx = (void *)no_ctx,
    .rx_ctx = (void *)no_ctx,
    .rx_size_left = size_left,
    .tx_size_left = size_left,
};

static int ep_getname(fid_t fid, void *addr, size_t *addrlen)
{
    struct ivf_ep *ep = (struct ivf_ep *)fid;
    size_t have = *addrlen;
    *addrlen = sizeof(struct ivf_addr);
    ivf_lock(ep->dom);
    struct ivf_addr a = ep->addr;
    ivf_unlock(ep->dom);
    if (!addr || have < sizeof(a))
        return -FI_ETOOSMALL;
    memcpy(addr, &a, sizeof(a));
    return 0;
}

static int no_setname(fid_t fid, void *addr, size_t addrlen)
{
    return -FI_ENOSYS;
}

static int no_getpeer(struct fid_ep *ep, void *addr, size_t *addrlen)
{
    return -FI_ENOSYS;
}

static int no_connect(struct fid_ep *ep, const void *addr, const void *param, size_t len)
{
    return -FI_ENOSYS;
}

static int no_listen(struct fid_pep *pep)
{
    return -FI_ENOSYS;
}

static int no_accept(struct fid_ep *ep, const void *param, size_t len)
{
    return -FI_ENOSYS;
}

static int no_reject(struct fid_pep *pep, fid_t handle, const void *param, size_t len)
{
    return -FI_ENOSYS;
}

static int no_shutdown(struct fid_ep *ep, uint64_t flags)
{
    return -FI_ENOSYS;
}

static int no_join(struct fid_ep *ep, const void *addr, uint64_t flags, struct fid_mc **mc,
                   void *context)
{
    return -FI_ENOSYS;
}

static struct fi_ops_cm cm_ops = {
    .size = sizeof(struct fi_ops_cm),
    .setname = no_setname,
    .getname = ep_getname,
    .getpeer = no_getpeer,
    .connect = no_connect,
    .listen = no_listen,
    .accept = no_accept,
    .reject = no_reject,
    .shutdown = no_shutdown,
    .join = no_join,
};

static int ep_bind(struct fid *fid, struct fid *bfid, uint64_t flags)
{
    struct ivf_ep *ep = (struct ivf_ep *)fid;
    int r = 0;
    ivf_lock(ep->dom);
    if (ep->enabled) {
        r = -FI_EOPBADSTATE;
    } else if (bfid->fclass == FI_CLASS_AV) {
        if (ep->av)
            r = -FI_EALREADY;
        else {
            ep->av = (struct ivf_av *)bfid;
            ep->av->refs++;
        }
    } else if (bfid->fclass == FI_CLASS_CQ) {
        struct ivf_cq *cq = (struct ivf_cq *)bfid;
        if (flags & ~(uint64_t)(FI_TRANSMIT | FI_RECV | FI_SELECTIVE_COMPLETION))
            r = -FI_EBADFLAGS;
        else if (((flags & FI_TRANSMIT) && ep->tx_cq) || ((flags & FI_RECV) && ep->rx_cq))
            r = -FI_EALREADY;
        else {
            if (flags & FI_TRANSMIT) {
                ep->tx_cq = cq;
                ep->tx_flags = flags & FI_SELECTIVE_COMPLETION;
                cq->refs++;
            }
            if (flags & FI_RECV) {
                ep->rx_cq = cq;
                ep->rx_flags = flags & FI_SELECTIVE_COMPLETION;
                cq->refs++;
            }
        }
    } else if (bfid->fclass == FI_CLASS_EQ) {
        r = 0; /* nothing to report through it */
    } else {
        r = -FI_ENOSYS; /* counters, ... */
    }
    ivf_unlock(ep->dom);
    return r;
}

static int ep_control(struct fid *fid, int command, void *arg)
{
    struct ivf_ep *ep = (struct ivf_ep *)fid;
    int r = 0;
    switch (command) {
    case FI_ENABLE:
        ivf_lock(ep->dom);
        if (!ep->av || !ep->tx_cq || !ep->rx_cq)
            r = -FI_ENOCQ;
        if (!ep->av)
            r = -FI_ENOAV;
        if (r == 0)
            ep->enabled = true;
        ivf_unlock(ep->dom);
        return r;
    case FI_GETOPSFLAG: {
        uint64_t *f = arg;
        if (!f)
            return -FI_EINVAL;
        *f = (*f & FI_TRANSMIT) ? ep->tx_op_flags : ep->rx_op_flags;
        return 0;
    }
    case FI_SETOPSFLAG: {
        uint64_t *f = arg;
        if (!f)
            return -FI_EINVAL;
        if (*f & FI_TRANSMIT)
            ep->tx_op_flags = *f & ~(uint64_t)(FI_TRANSMIT | FI_RECV);
        else
            ep->rx_op_flags = *f & ~(uint64_t)(FI_TRANSMIT | FI_RECV);
        return 0;
    }
    default: return -FI_ENOSYS;
    }
}

static int ep_close(struct fid *fid)
{
    struct ivf_ep *ep = (struct ivf_ep *)fid;
    struct ivf_domain *dom = ep->dom;
    ivf_lock(dom);
    if (ep->listen_fd >= 0)
        ivf_link_fini(ep);
    ivf_match_cleanup(ep);
    op_cache_drain(ep);
    for (struct ivf_ep **pp = &dom->eps; *pp; pp = &(*pp)->next)
        if (*pp == ep) {
            *pp = ep->next;
            break;
        }
    if (ep->av)
        ep->av->refs--;
    if (ep->tx_cq)
        ep->tx_cq->refs--;
    if (ep->rx_cq)
        ep->rx_cq->refs--;
    ivf_unlock(dom);
    fi_freeinfo(ep->info);
    free(ep);
    return 0;
}

static struct fi_ops ep_fi_ops = {
    .size = sizeof(struct fi_ops),
    .close = ep_close,
    .bind = ep_bind,
    .control = ep_control,
    .ops_open = ivf_no_ops_open,
};

int ivf_ep_open(struct fid_domain *domain, struct fi_info *info, struct fid_ep **out, void *context)
{
    struct ivf_domain *dom = (struct ivf_domain *)domain;
    if (!info || !info->ep_attr || info->ep_attr->type != FI_EP_RDM)
        return -FI_EINVAL;
    struct ivf_ep *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return -FI_ENOMEM;
    ep->info = fi_dupinfo(info);
    if (!ep->info) {
        free(ep);
        return -FI_ENOMEM;
    }
    ep->dom = dom;
    ep->listen_fd = -1;
    ep->tx_op_flags = info->tx_attr ? info->tx_attr->op_flags : 0;
    ep->rx_op_flags = info->rx_attr ? info->rx_attr->op_flags : 0;
    ep->fid.fid.fclass = FI_CLASS_EP;
    ep->fid.fid.context = context;
    ep->fid.fid.ops = &ep_fi_ops;
    ep->fid.ops = &ep_ops;
    ep->fid.cm = &cm_ops;
    ep->fid.msg = &msg_ops;
    ep->fid.tagged = &tagged_ops;
    int r = ivf_link_init(ep); /* the address exists from here on */
    if (r < 0) {
        fi_freeinfo(ep->info);
        free(ep);
        return r;
    }
    ivf_lock(dom);
    ep->next = dom->eps;
    dom->eps = ep;
    ivf_unlock(dom);
    *out = &ep->fid;
    return 0;
}
