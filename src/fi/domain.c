/*
 * domain.c - the domain object: what fi_domain opens (AVs, CQs and
 * endpoints hang off it, the lock every call takes is its own), and its
 * progress thread when FI_PROGRESS_AUTO is asked for.  No memory
 * registration (mr_mode 0), counters, or shared and scalable contexts.
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>

/* FI_PROGRESS_AUTO: data moves without the application calling in. */
static void *progress_thread(void *arg)
{
    struct ivf_domain *dom = arg;
    ivf_lock(dom);
    while (!dom->stop_thread) {
        ivf_domain_progress(dom);
        ivf_domain_wait(dom, 1); /* drops the lock while it waits */
    }
    ivf_unlock(dom);
    return NULL;
}

static int domain_close(struct fid *fid)
{
    struct ivf_domain *dom = (struct ivf_domain *)fid;
    if (dom->refs > 0 || dom->eps)
        return -FI_EBUSY;
    if (dom->has_thread) {
        ivf_lock(dom);
        dom->stop_thread = true;
        ivf_unlock(dom);
        pthread_join(dom->thread, NULL);
    }
    pthread_mutex_destroy(&dom->lock);
    free(dom);
    return 0;
}

static int no_cntr(struct fid_domain *d, struct fi_cntr_attr *attr, struct fid_cntr **c,
                   void *context)
{
    return -FI_ENOSYS;
}

static int no_poll(struct fid_domain *d, struct fi_poll_attr *attr, struct fid_poll **p)
{
    return -FI_ENOSYS;
}

static int no_stx(struct fid_domain *d, struct fi_tx_attr *attr, struct fid_stx **stx,
                  void *context)
{
    return -FI_ENOSYS;
}

static int no_srx(struct fid_domain *d, struct fi_rx_attr *attr, struct fid_ep **rx, void *context)
{
    return -FI_ENOSYS;
}

static int no_sep(struct fid_domain *d, struct fi_info *info, struct fid_ep **sep, void *context)
{
    return -FI_ENOSYS;
}

static int no_query_atomic(struct fid_domain *d, enum fi_datatype t, enum fi_op op,
                           struct fi_atomic_attr *attr, uint64_t flags)
{
    return -FI_ENOSYS;
}

static int no_query_collective(struct fid_domain *d, enum fi_collective_op coll,
                               struct fi_collective_attr *attr, uint64_t flags)
{
    return -FI_ENOSYS;
}

static int endpoint2(struct fid_domain *d, struct fi_info *info, struct fid_ep **ep, uint64_t flags,
                     void *context)
{
    return flags ? -FI_EBADFLAGS : ivf_ep_open(d, info, ep, context);
}

static struct fi_ops domain_fi_ops = IVF_FI_OPS(domain_close, ivf_no_bind, ivf_no_control);

static struct fi_ops_domain domain_ops = {
    .size = sizeof(struct fi_ops_domain),
    .av_open = ivf_av_open,
    .cq_open = ivf_cq_open,
    .endpoint = ivf_ep_open,
    .scalable_ep = no_sep,
    .cntr_open = no_cntr,
    .poll_open = no_poll,
    .stx_ctx = no_stx,
    .srx_ctx = no_srx,
    .query_atomic = no_query_atomic,
    .query_collective = no_query_collective,
    .endpoint2 = endpoint2,
};

static int mr_reg(struct fid *fid, const void *buf, size_t len, uint64_t access, uint64_t offset,
                  uint64_t requested_key, uint64_t flags, struct fid_mr **mr, void *context)
{
    return -FI_ENOSYS; /* mr_mode 0: nothing to register */
}

static struct fi_ops_mr mr_ops = {
    .size = sizeof(struct fi_ops_mr),
    .reg = mr_reg,
};

int ivf_domain_open(struct fid_fabric *fabric, struct fi_info *info, struct fid_domain **out,
                    void *context)
{
    if (info && info->domain_attr && info->domain_attr->name &&
        strcmp(info->domain_attr->name, IVF_NAME) != 0)
        return -FI_EINVAL;
    struct ivf_domain *dom = calloc(1, sizeof(*dom));
    if (!dom)
        return -FI_ENOMEM;
    pthread_mutex_init(&dom->lock, NULL);
    dom->fabric = (struct ivf_fabric *)fabric;
    ivf_fid_init(&dom->fid.fid, FI_CLASS_DOMAIN, context, &domain_fi_ops);
    dom->fid.ops = &domain_ops;
    dom->fid.mr = &mr_ops;
    if (info && info->domain_attr && info->domain_attr->data_progress == FI_PROGRESS_AUTO) {
        if (pthread_create(&dom->thread, NULL, progress_thread, dom) != 0) {
            pthread_mutex_destroy(&dom->lock);
            free(dom);
            return -FI_ENOMEM;
        }
        dom->has_thread = true;
    }
    dom->serial = !dom->has_thread && info && info->domain_attr &&
                  info->domain_attr->threading == FI_THREAD_DOMAIN;
    *out = &dom->fid;
    return 0;
}
