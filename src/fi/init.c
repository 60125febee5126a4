/*
 * init.c - the provider's entry point (fi_prov_ini) and its tunables,
 * fi_getinfo with full hint checking (the libfabric core checks nothing
 * but the name), the fabric object and a minimal event queue.
 *
 * What we offer: FI_EP_RDM with FI_MSG and FI_TAGGED (send, receive,
 * inject, remote CQ data, directed receive, FI_SOURCE), manual progress
 * (automatic when asked: a thread per domain),
 * thread safe, no memory registration (mr_mode 0), 64 tag bits, 8 bytes of
 * CQ data.  No RMA or atomics: Open MPI's btl ofi asks for those and so
 * never picks us.  No FI_EP_DGRAM: utility providers (ofi_rxd) would layer
 * on it and shadow us, so calls made on their behalf are refused too.
 */
#include "ivf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ivf_params ivf_params;

#define OFI_CORE_PROV_ONLY (1ULL << 59) /* libfabric's internal flag: a utility provider asks */

#define IVF_PRIMARY_CAPS   (FI_MSG | FI_TAGGED | FI_SEND | FI_RECV | FI_DIRECTED_RECV)
#define IVF_SECONDARY_CAPS (FI_SOURCE | FI_LOCAL_COMM | FI_REMOTE_COMM)
#define IVF_CAPS           (IVF_PRIMARY_CAPS | IVF_SECONDARY_CAPS)
#define IVF_TX_CAPS        (FI_MSG | FI_TAGGED | FI_SEND)
#define IVF_RX_CAPS        (FI_MSG | FI_TAGGED | FI_RECV | FI_DIRECTED_RECV | FI_SOURCE)
#define IVF_OP_FLAGS                                                                               \
    (FI_COMPLETION | FI_INJECT_COMPLETE | FI_TRANSMIT_COMPLETE | FI_DELIVERY_COMPLETE |            \
     FI_INJECT | FI_REMOTE_CQ_DATA | FI_MORE)
#define IVF_QUEUE_SIZE 65536

/* ---- getinfo ---------------------------------------------------------------- */

static bool str_ok(const char *hint, const char *ours)
{
    return !hint || !strcmp(hint, ours);
}

/* Why a hint cannot be met, for FI_LOG_LEVEL=info. */
#define REFUSE(...)                                                                                \
    do {                                                                                           \
        IVF_INFO(FI_LOG_CORE, __VA_ARGS__);                                                        \
        return -FI_ENODATA;                                                                        \
    } while (0)

static int check_hints(uint32_t version, const struct fi_info *h)
{
    if (h->caps & ~(uint64_t)IVF_CAPS)
        REFUSE("caps 0x%llx not offered (no RMA, atomics, multicast...)\n",
               (unsigned long long)(h->caps & ~(uint64_t)IVF_CAPS));
    if (h->addr_format != FI_FORMAT_UNSPEC)
        REFUSE("address format %u: ivc addresses are its own\n", h->addr_format);
    if (h->dest_addr && (h->dest_addrlen != sizeof(struct ivf_addr) ||
                         !ivf_addr_valid((const struct ivf_addr *)h->dest_addr)))
        REFUSE("dest_addr is not an ivc address\n");
    const struct ivf_addr *src = h->src_addr; /* port and id may be 0 (any, not yet) */
    if (src && (h->src_addrlen != sizeof(*src) || src->magic != IVF_ADDR_MAGIC ||
                src->version != IVF_ADDR_VERSION))
        REFUSE("src_addr is not an ivc address\n");
    const struct fi_ep_attr *ea = h->ep_attr;
    if (ea) {
        if (ea->type != FI_EP_UNSPEC && ea->type != FI_EP_RDM)
            REFUSE("endpoint type %s: only FI_EP_RDM\n", fi_tostr(&ea->type, FI_TYPE_EP_TYPE));
        if (ea->protocol != FI_PROTO_UNSPEC)
            REFUSE("protocol %u\n", ea->protocol);
        if (ea->max_msg_size > IVF_MAX_MSG)
            REFUSE("max_msg_size %zu\n", ea->max_msg_size);
        if (ea->tx_ctx_cnt > 1 || ea->rx_ctx_cnt > 1)
            REFUSE("scalable or shared contexts\n");
        if (ea->max_order_raw_size || ea->max_order_war_size || ea->max_order_waw_size)
            REFUSE("RMA ordering\n");
        if (ea->auth_key_size)
            REFUSE("authorization keys\n");
    }
    const struct fi_domain_attr *da = h->domain_attr;
    if (da) {
        if (!str_ok(da->name, IVF_NAME))
            REFUSE("domain %s\n", da->name);
        if (da->cq_data_size > 8)
            REFUSE("cq_data_size %zu > 8\n", da->cq_data_size);
        if (da->caps & ~(uint64_t)IVF_SECONDARY_CAPS)
            REFUSE("domain caps 0x%llx\n", (unsigned long long)da->caps);
        if (da->max_ep_tx_ctx > 1 || da->max_ep_rx_ctx > 1)
            REFUSE("several contexts per endpoint\n");
        if (da->auth_key_size)
            REFUSE("authorization keys\n");
    }
    const struct fi_tx_attr *ta = h->tx_attr;
    if (ta) {
        if (ta->caps & ~(uint64_t)(IVF_TX_CAPS | IVF_SECONDARY_CAPS))
            REFUSE("tx caps 0x%llx\n", (unsigned long long)ta->caps);
        if (ta->op_flags & ~(uint64_t)IVF_OP_FLAGS)
            REFUSE("tx op_flags 0x%llx\n", (unsigned long long)ta->op_flags);
        if (ta->msg_order & ~(uint64_t)FI_ORDER_SAS)
            REFUSE("tx msg_order 0x%llx (only FI_ORDER_SAS)\n", (unsigned long long)ta->msg_order);
        if (ta->comp_order & ~(uint64_t)FI_ORDER_NONE)
            REFUSE("tx comp_order\n");
        if (ta->inject_size > IVF_INJECT_SIZE || ta->size > IVF_QUEUE_SIZE ||
            ta->iov_limit > IVF_IOV_LIMIT || ta->rma_iov_limit)
            REFUSE("tx sizes beyond ours\n");
    }
    const struct fi_rx_attr *ra = h->rx_attr;
    if (ra) {
        if (ra->caps & ~(uint64_t)(IVF_RX_CAPS | FI_LOCAL_COMM | FI_REMOTE_COMM))
            REFUSE("rx caps 0x%llx\n", (unsigned long long)ra->caps);
        if (ra->op_flags & ~(uint64_t)(FI_COMPLETION | FI_MULTI_RECV) ||
            (ra->op_flags & FI_MULTI_RECV))
            REFUSE("rx op_flags 0x%llx (no FI_MULTI_RECV)\n", (unsigned long long)ra->op_flags);
        if (ra->msg_order & ~(uint64_t)FI_ORDER_SAS)
            REFUSE("rx msg_order 0x%llx (only FI_ORDER_SAS)\n", (unsigned long long)ra->msg_order);
        if (ra->comp_order & ~(uint64_t)FI_ORDER_NONE)
            REFUSE("rx comp_order\n");
        if (ra->size > IVF_QUEUE_SIZE || ra->iov_limit > IVF_IOV_LIMIT)
            REFUSE("rx sizes beyond ours\n");
    }
    if (h->fabric_attr && !str_ok(h->fabric_attr->name, IVF_NAME))
        REFUSE("fabric %s\n", h->fabric_attr->name);
    (void)version;
    return 0;
}

static void *dup_mem(const void *p, size_t len)
{
    void *d = malloc(len);
    if (d)
        memcpy(d, p, len);
    return d;
}

static struct fi_info *make_info(uint32_t version, const struct fi_info *h)
{
    struct fi_info *fi = fi_allocinfo();
    if (!fi)
        return NULL;
    uint64_t caps = IVF_CAPS;
    if (h && h->caps) {
        caps = (h->caps & IVF_PRIMARY_CAPS) | IVF_SECONDARY_CAPS;
        if (!(caps & (FI_SEND | FI_RECV)))
            caps |= FI_SEND | FI_RECV; /* neither named: both */
    }
    fi->caps = caps;
    fi->mode = 0;
    fi->addr_format = FI_FORMAT_UNSPEC;

    fi->tx_attr->caps =
        caps & IVF_TX_CAPS; /* the primary ones: FI_SOURCE etc. are not a sender's */
    fi->tx_attr->op_flags = h && h->tx_attr ? h->tx_attr->op_flags : 0;
    fi->tx_attr->msg_order = FI_ORDER_SAS;
    fi->tx_attr->comp_order = FI_ORDER_NONE;
    fi->tx_attr->inject_size = IVF_INJECT_SIZE;
    fi->tx_attr->size = IVF_QUEUE_SIZE;
    fi->tx_attr->iov_limit = IVF_IOV_LIMIT;

    fi->rx_attr->caps = caps & (IVF_RX_CAPS | FI_LOCAL_COMM | FI_REMOTE_COMM);
    fi->rx_attr->op_flags = h && h->rx_attr ? h->rx_attr->op_flags : 0;
    fi->rx_attr->msg_order = FI_ORDER_SAS;
    fi->rx_attr->comp_order = FI_ORDER_NONE;
    fi->rx_attr->total_buffered_recv = ivf_params.credit;
    fi->rx_attr->size = IVF_QUEUE_SIZE;
    fi->rx_attr->iov_limit = IVF_IOV_LIMIT;

    fi->ep_attr->type = FI_EP_RDM;
    fi->ep_attr->protocol = FI_PROTO_UNSPEC;
    fi->ep_attr->protocol_version = 1;
    fi->ep_attr->max_msg_size = IVF_MAX_MSG;
    fi->ep_attr->mem_tag_format =
        h && h->ep_attr && h->ep_attr->mem_tag_format ? h->ep_attr->mem_tag_format : ~0ULL;
    fi->ep_attr->tx_ctx_cnt = 1;
    fi->ep_attr->rx_ctx_cnt = 1;

    struct fi_domain_attr *d = fi->domain_attr;
    const struct fi_domain_attr *hd = h ? h->domain_attr : NULL;
    d->name = strdup(IVF_NAME);
    d->threading = hd && hd->threading != FI_THREAD_UNSPEC ? hd->threading : FI_THREAD_SAFE;
    /* Manual unless asked for automatic progress (a thread per domain). */
    d->control_progress =
        hd && hd->control_progress == FI_PROGRESS_AUTO ? FI_PROGRESS_AUTO : FI_PROGRESS_MANUAL;
    d->data_progress =
        hd && hd->data_progress == FI_PROGRESS_AUTO ? FI_PROGRESS_AUTO : FI_PROGRESS_MANUAL;
    d->resource_mgmt = FI_RM_ENABLED;
    d->av_type = hd && hd->av_type != FI_AV_UNSPEC ? hd->av_type : FI_AV_UNSPEC;
    d->mr_mode = version < FI_VERSION(1, 5) ? FI_MR_SCALABLE : 0;
    d->mr_key_size = 0;
    d->cq_data_size = 8;
    d->cq_cnt = 1024;
    d->ep_cnt = 1024;
    d->tx_ctx_cnt = 1024;
    d->rx_ctx_cnt = 1024;
    d->max_ep_tx_ctx = 1;
    d->max_ep_rx_ctx = 1;
    d->max_ep_stx_ctx = 0;
    d->max_ep_srx_ctx = 0;
    d->cntr_cnt = 0;
    d->mr_iov_limit = 1;
    d->caps = IVF_SECONDARY_CAPS & ~(uint64_t)FI_SOURCE;
    d->mode = 0;

    fi->fabric_attr->name = strdup(IVF_NAME);
    fi->fabric_attr->prov_version = IVF_PROV_VERSION;

    if (h && h->dest_addr) {
        fi->dest_addr = dup_mem(h->dest_addr, h->dest_addrlen);
        fi->dest_addrlen = h->dest_addrlen;
    }
    if (h && h->src_addr) {
        fi->src_addr = dup_mem(h->src_addr, h->src_addrlen);
        fi->src_addrlen = h->src_addrlen;
    }
    if (!d->name || !fi->fabric_attr->name || (h && h->dest_addr && !fi->dest_addr) ||
        (h && h->src_addr && !fi->src_addr)) {
        fi_freeinfo(fi);
        return NULL;
    }
    return fi;
}

static int ivf_getinfo(uint32_t version, const char *node, const char *service, uint64_t flags,
                       const struct fi_info *hints, struct fi_info **info)
{
    *info = NULL;
    if (flags & OFI_CORE_PROV_ONLY)
        return -FI_ENODATA; /* no utility provider on top of us */
    if (hints) {
        int r = check_hints(version, hints);
        if (r < 0)
            return r;
    }
    /* With FI_SOURCE, node and service name our own address: the endpoint
     * binds there and src_addr says so.  A destination is only ever an
     * endpoint's name (fi_getname: it holds the endpoint's unique id), so
     * node and service as a destination are not used. */
    struct ivf_addr src;
    if ((flags & FI_SOURCE) && !(hints && hints->src_addr)) {
        int r = ivf_src_addr(node, service, &src);
        if (r < 0)
            return r;
    }
    struct fi_info *fi = make_info(version, hints);
    if (!fi)
        return -FI_ENOMEM;
    if ((flags & FI_SOURCE) && !fi->src_addr) {
        fi->src_addr = dup_mem(&src, sizeof(src));
        fi->src_addrlen = sizeof(src);
        if (!fi->src_addr) {
            fi_freeinfo(fi);
            return -FI_ENOMEM;
        }
    }
    *info = fi;
    return 0;
}

/* ---- event queue (minimal: RDM endpoints report nothing through it) --------------- */

struct ivf_eq {
    struct fid_eq fid;
};

static ssize_t eq_read(struct fid_eq *eq, uint32_t *event, void *buf, size_t len, uint64_t flags)
{
    return -FI_EAGAIN;
}

static ssize_t eq_readerr(struct fid_eq *eq, struct fi_eq_err_entry *buf, uint64_t flags)
{
    return -FI_EAGAIN;
}

static ssize_t eq_write(struct fid_eq *eq, uint32_t event, const void *buf, size_t len,
                        uint64_t flags)
{
    return -FI_ENOSYS;
}

static ssize_t eq_sread(struct fid_eq *eq, uint32_t *event, void *buf, size_t len, int timeout,
                        uint64_t flags)
{
    if (timeout > 0)
        nanosleep(&(struct timespec){.tv_sec = timeout / 1000,
                                     .tv_nsec = (long)(timeout % 1000) * 1000000},
                  NULL);
    return -FI_EAGAIN;
}

static const char *eq_strerror(struct fid_eq *eq, int prov_errno, const void *err_data, char *buf,
                               size_t len)
{
    return ivf_strerror(prov_errno, buf, len);
}

/* The event queue and the fabric hold nothing but their fid. */
static int close_free(struct fid *fid)
{
    free(fid);
    return 0;
}

static struct fi_ops eq_fi_ops = IVF_FI_OPS(close_free, ivf_no_bind, ivf_no_control);

static struct fi_ops_eq eq_ops = {
    .size = sizeof(struct fi_ops_eq),
    .read = eq_read,
    .readerr = eq_readerr,
    .write = eq_write,
    .sread = eq_sread,
    .strerror = eq_strerror,
};

static int eq_open(struct fid_fabric *fabric, struct fi_eq_attr *attr, struct fid_eq **out,
                   void *context)
{
    if (attr && attr->wait_obj != FI_WAIT_NONE && attr->wait_obj != FI_WAIT_UNSPEC)
        return -FI_ENOSYS;
    struct ivf_eq *eq = calloc(1, sizeof(*eq));
    if (!eq)
        return -FI_ENOMEM;
    ivf_fid_init(&eq->fid.fid, FI_CLASS_EQ, context, &eq_fi_ops);
    eq->fid.ops = &eq_ops;
    *out = &eq->fid;
    return 0;
}

/* ---- fabric ------------------------------------------------------------------------- */

static int no_pep(struct fid_fabric *f, struct fi_info *info, struct fid_pep **pep, void *context)
{
    return -FI_ENOSYS;
}

static int no_wait(struct fid_fabric *f, struct fi_wait_attr *attr, struct fid_wait **w)
{
    return -FI_ENOSYS;
}

static int no_trywait(struct fid_fabric *f, struct fid **fids, int count)
{
    return -FI_ENOSYS;
}

static int domain2(struct fid_fabric *f, struct fi_info *info, struct fid_domain **dom,
                   uint64_t flags, void *context)
{
    return flags ? -FI_EBADFLAGS : ivf_domain_open(f, info, dom, context);
}

static struct fi_ops fabric_fi_ops = IVF_FI_OPS(close_free, ivf_no_bind, ivf_no_control);

static struct fi_ops_fabric fabric_ops = {
    .size = sizeof(struct fi_ops_fabric),
    .domain = ivf_domain_open,
    .passive_ep = no_pep,
    .eq_open = eq_open,
    .wait_open = no_wait,
    .trywait = no_trywait,
    .domain2 = domain2,
};

static int ivf_fabric_open(struct fi_fabric_attr *attr, struct fid_fabric **out, void *context)
{
    if (attr && !str_ok(attr->name, IVF_NAME))
        return -FI_EINVAL;
    struct ivf_fabric *fab = calloc(1, sizeof(*fab));
    if (!fab)
        return -FI_ENOMEM;
    ivf_fid_init(&fab->fid.fid, FI_CLASS_FABRIC, context, &fabric_fi_ops);
    fab->fid.ops = &fabric_ops;
    *out = &fab->fid;
    return 0;
}

/* ---- entry point --------------------------------------------------------------------- */

static void cleanup(void)
{
}

struct fi_provider ivf_prov = {
    .version = IVF_PROV_VERSION,
    .fi_version = IVF_FI_VERSION,
    .name = IVF_NAME,
    .getinfo = ivf_getinfo,
    .fabric = ivf_fabric_open,
    .cleanup = cleanup,
};

static size_t param_size(const char *name, const char *help, size_t def)
{
    size_t v;
    fi_param_define(&ivf_prov, name, FI_PARAM_SIZE_T, help);
    return fi_param_get_size_t(&ivf_prov, name, &v) == 0 && v > 0 ? v : def;
}

FI_EXT_INI
{
    /* Whole messages over TCP go up to 64 KiB: a rendezvous costs a round
     * trip, 15-30 us on TCP here and far more between VMs (LAMMPS melt:
     * 0.26 s with 16 KiB, 0.22 s with 64 KiB, btl tcp's 0.22 s).  Over IVC
     * 16 KiB: a window of larger eager messages overflows the 1 MiB ring
     * into copies on the send queue (64 KiB streams at 3-9 GB/s instead of
     * 16-21). */
    size_t eager = param_size("eager_max",
                              "largest message sent whole (bytes; over TCP too "
                              "unless tcp_eager_max is set)",
                              0);
    ivf_params.eager_max = eager ? eager : 16384;
    ivf_params.tcp_eager_max = param_size(
        "tcp_eager_max", "largest message sent whole over TCP (bytes)", eager ? eager : 65536);
    ivf_params.chunk = param_size("chunk", "payload of one rendezvous data frame", 65536);
    ivf_params.credit =
        param_size("credit", "eager bytes a sender may have unconsumed at one receiver", 4u << 20);
    ivf_params.tx_max =
        param_size("tx_max", "bytes queued per peer before sends return FI_EAGAIN", 8u << 20);
    int on = 1;
    fi_param_define(&ivf_prov, "enable", FI_PARAM_BOOL,
                    "use IVC shared memory between co-located endpoints (0: TCP only)");
    if (fi_param_get_bool(&ivf_prov, "enable", &on) == 0)
        ivf_params.ivc = on;
    else
        ivf_params.ivc = 1;
    char *s = NULL;
    fi_param_define(&ivf_prov, "job", FI_PARAM_STRING, "IVC job id (default: $VHPC_JOB)");
    if (fi_param_get_str(&ivf_prov, "job", &s) != 0 || !s)
        s = getenv("VHPC_JOB");
    ivf_params.job = s ? strtoull(s, NULL, 0) : 0;
    fi_param_define(&ivf_prov, "iface", FI_PARAM_STRING,
                    "IPv4 address or interface name to publish for TCP (default: the first up "
                    "non-loopback IPv4 interface)");
    s = NULL;
    fi_param_get_str(&ivf_prov, "iface", &s);
    ivf_params.iface = s;
    size_t *limits[] = {&ivf_params.eager_max, &ivf_params.tcp_eager_max};
    for (int i = 0; i < 2; i++) {
        if (*limits[i] < 64)
            *limits[i] = 64;
        if (*limits[i] > IVF_MAX_EAGER)
            *limits[i] = IVF_MAX_EAGER; /* what a receiver accepts */
        if (ivf_params.credit < *limits[i])
            ivf_params.credit = *limits[i];
    }
    return &ivf_prov;
}
