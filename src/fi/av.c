/*
 * av.c - address vectors.  Both FI_AV_MAP and FI_AV_TABLE hand out the
 * index of the address as its fi_addr_t (map allows any value; the table
 * requires the index), so lookups are O(1).  A removed index is not reused
 * while the AV lives, so a stale fi_addr can never reach somebody else.
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>

static struct ivf_av *av_of(struct fid_av *fid)
{
    return (struct ivf_av *)fid;
}

const struct ivf_addr *ivf_av_get(struct ivf_av *av, fi_addr_t fi_addr)
{
    if (!av || fi_addr >= av->n || !av->used[fi_addr])
        return NULL;
    return &av->addrs[fi_addr];
}

fi_addr_t ivf_av_find(struct ivf_av *av, const struct ivf_addr *a)
{
    if (!av)
        return FI_ADDR_NOTAVAIL;
    for (size_t i = 0; i < av->n; i++)
        if (av->used[i] && av->addrs[i].uid == a->uid)
            return i;
    return FI_ADDR_NOTAVAIL;
}

static int av_grow(struct ivf_av *av, size_t need)
{
    if (need <= av->cap)
        return 0;
    size_t cap = av->cap ? av->cap : 64;
    while (cap < need)
        cap *= 2;
    struct ivf_addr *addrs = realloc(av->addrs, cap * sizeof(*addrs));
    if (!addrs)
        return -FI_ENOMEM;
    av->addrs = addrs;
    bool *used = realloc(av->used, cap * sizeof(*used));
    if (!used)
        return -FI_ENOMEM;
    av->used = used;
    av->cap = cap;
    return 0;
}

static int av_insert(struct fid_av *fid, const void *addr, size_t count, fi_addr_t *fi_addr,
                     uint64_t flags, void *context)
{
    struct ivf_av *av = av_of(fid);
    const struct ivf_addr *in = addr;
    int *errs = (flags & FI_SYNC_ERR) ? context : NULL;
    int done = 0;

    if (flags & ~(uint64_t)(FI_MORE | FI_SYNC_ERR))
        return -FI_EBADFLAGS;
    if (count && !addr)
        return -FI_EINVAL;
    ivf_lock(av->dom);
    int r = av_grow(av, av->n + count);
    for (size_t i = 0; i < count; i++) {
        int e = r < 0 ? FI_ENOMEM : ivf_addr_valid(&in[i]) ? 0 : FI_EINVAL;
        if (e == 0) {
            av->addrs[av->n] = in[i];
            av->used[av->n] = true;
            if (fi_addr)
                fi_addr[i] = av->n;
            av->n++;
            done++;
        } else {
            char s[160];
            ivf_addr_str(&in[i], s, sizeof(s));
            IVF_WARN(FI_LOG_AV, "fi_av_insert: address %zu is not an ivc address (%s)\n", i, s);
            if (fi_addr)
                fi_addr[i] = FI_ADDR_NOTAVAIL;
        }
        if (errs)
            errs[i] = e;
    }
    ivf_unlock(av->dom);
    return done;
}

static int av_insertsvc(struct fid_av *fid, const char *node, const char *service,
                        fi_addr_t *fi_addr, uint64_t flags, void *context)
{
    return -FI_ENOSYS;
}

static int av_insertsym(struct fid_av *fid, const char *node, size_t nodecnt, const char *service,
                        size_t svccnt, fi_addr_t *fi_addr, uint64_t flags, void *context)
{
    return -FI_ENOSYS;
}

static int av_remove(struct fid_av *fid, fi_addr_t *fi_addr, size_t count, uint64_t flags)
{
    struct ivf_av *av = av_of(fid);
    int r = 0;
    ivf_lock(av->dom);
    for (size_t i = 0; i < count; i++) {
        if (fi_addr[i] < av->n && av->used[fi_addr[i]])
            av->used[fi_addr[i]] = false;
        else
            r = -FI_EINVAL;
    }
    /* Peers keep their cached fi_addr; they look it up again. */
    for (struct ivf_ep *ep = av->dom->eps; ep; ep = ep->next)
        if (ep->av == av)
            for (struct ivf_peer *p = ep->peers; p; p = p->next)
                p->fi_addr = FI_ADDR_NOTAVAIL;
    ivf_unlock(av->dom);
    return r;
}

static int av_lookup(struct fid_av *fid, fi_addr_t fi_addr, void *addr, size_t *addrlen)
{
    struct ivf_av *av = av_of(fid);
    ivf_lock(av->dom);
    const struct ivf_addr *a = ivf_av_get(av, fi_addr);
    struct ivf_addr copy;
    if (a)
        copy = *a;
    ivf_unlock(av->dom);
    if (!a)
        return -FI_ENOENT;
    memcpy(addr, &copy, *addrlen < sizeof(copy) ? *addrlen : sizeof(copy));
    *addrlen = sizeof(copy);
    return 0;
}

static const char *av_straddr(struct fid_av *fid, const void *addr, char *buf, size_t *len)
{
    char s[160];
    ivf_addr_str(addr, s, sizeof(s));
    size_t need = strlen(s) + 1;
    if (*len > 0) {
        size_t n = need < *len ? need : *len;
        memcpy(buf, s, n - 1);
        buf[n - 1] = 0;
    }
    *len = need;
    return buf;
}

static int av_close(struct fid *fid)
{
    struct ivf_av *av = (struct ivf_av *)fid;
    int r = ivf_domain_release(av->dom, av->refs);
    if (r < 0)
        return r;
    free(av->addrs);
    free(av->used);
    free(av);
    return 0;
}

/* No binding an event queue: inserts are synchronous. */
static struct fi_ops av_fi_ops = IVF_FI_OPS(av_close, ivf_no_bind, ivf_no_control);

static struct fi_ops_av av_ops = {
    .size = sizeof(struct fi_ops_av),
    .insert = av_insert,
    .insertsvc = av_insertsvc,
    .insertsym = av_insertsym,
    .remove = av_remove,
    .lookup = av_lookup,
    .straddr = av_straddr,
};

int ivf_av_open(struct fid_domain *domain, struct fi_av_attr *attr, struct fid_av **out,
                void *context)
{
    struct ivf_domain *dom = (struct ivf_domain *)domain;
    if (!attr)
        return -FI_EINVAL;
    if (attr->type != FI_AV_UNSPEC && attr->type != FI_AV_MAP && attr->type != FI_AV_TABLE)
        return -FI_EINVAL;
    if (attr->flags & (FI_EVENT | FI_READ | FI_SYMMETRIC))
        return -FI_ENOSYS;
    if (attr->rx_ctx_bits || attr->name)
        return -FI_ENOSYS;
    struct ivf_av *av = calloc(1, sizeof(*av));
    if (!av)
        return -FI_ENOMEM;
    av->type = attr->type == FI_AV_UNSPEC ? FI_AV_MAP : attr->type;
    attr->type = av->type;
    av->dom = dom;
    if (av_grow(av, attr->count ? attr->count : 64) < 0) {
        free(av->addrs);
        free(av->used);
        free(av);
        return -FI_ENOMEM;
    }
    ivf_fid_init(&av->fid.fid, FI_CLASS_AV, context, &av_fi_ops);
    av->fid.ops = &av_ops;
    ivf_domain_hold(dom);
    *out = &av->fid;
    return 0;
}
