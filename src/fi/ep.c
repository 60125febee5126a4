/*
 * ep.c - the RDM endpoint object: opening it (its listen socket and IVC
 * attachment), binding an AV and CQs, enabling, its name, fi_cancel, and
 * closing it (what is queued goes out first).  Its data calls are msg.c's.
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>

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
    if (ep->listen_fd >= 0) {
        ivf_progress_drain(ep);
        ivf_peers_close(ep);
        ivf_ivc_fini(ep);
        ivf_conn_fini(ep);
    }
    ivf_match_cleanup(ep);
    ivf_op_cache_drain(ep);
    ivf_unexp_cache_drain(ep);
    ivf_buf_cache_drain(ep);
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

static struct fi_ops ep_fi_ops = IVF_FI_OPS(ep_close, ep_bind, ep_control);

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
    ivf_fid_init(&ep->fid.fid, FI_CLASS_EP, context, &ep_fi_ops);
    ep->fid.ops = &ep_ops;
    ep->fid.cm = &cm_ops;
    ep->fid.msg = &ivf_msg_ops;
    ep->fid.tagged = &ivf_tagged_ops;
    int r = ivf_conn_init(ep); /* the address exists from here on */
    if (r < 0) {
        fi_freeinfo(ep->info);
        free(ep);
        return r;
    }
    ivf_ivc_init(ep);
    ivf_lock(dom);
    ep->next = dom->eps;
    dom->eps = ep;
    ivf_unlock(dom);
    *out = &ep->fid;
    return 0;
}
