/*
 * cq.c - completion queues.  Entries are kept in a growing ring (so a
 * completion is never lost because the application's CQ size was small),
 * error entries in a second one (op.c pushes them); fi_cq_read() reports -FI_EAVAIL while an
 * error entry waits, as the API asks.  Reading drives the progress of every
 * endpoint of the domain.
 */
#include "ivf.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* What the CQ's and EQ's strerror return: fi_strerror's sentence, copied
 * into buf when the caller gives one. */
const char *ivf_strerror(int prov_errno, char *buf, size_t len)
{
    const char *s = fi_strerror(prov_errno);
    if (!buf || !len)
        return s;
    snprintf(buf, len, "%s", s);
    return buf;
}

static size_t entry_size(enum fi_cq_format f)
{
    switch (f) {
    case FI_CQ_FORMAT_CONTEXT: return sizeof(struct fi_cq_entry);
    case FI_CQ_FORMAT_MSG: return sizeof(struct fi_cq_msg_entry);
    case FI_CQ_FORMAT_DATA: return sizeof(struct fi_cq_data_entry);
    default: return sizeof(struct fi_cq_tagged_entry);
    }
}

/* The formats are prefixes of fi_cq_tagged_entry, field for field. */
static ssize_t cq_readfrom_locked(struct ivf_cq *cq, void *buf, size_t count, fi_addr_t *src)
{
    /* Completions already there are returned first; progress runs when
     * there are none (a caller reads until -FI_EAGAIN, Open MPI does): a
     * send's own completion, there since the call, costs no pass over
     * every peer.  Not for errors: a caller that peeks until a message is
     * there reads an FI_ENOMSG every time, and must see one arrive. */
    if (!cq->count)
        ivf_domain_progress(cq->dom);
    if (cq->err_count)
        return -FI_EAVAIL;
    if (!cq->count)
        return -FI_EAGAIN;
    size_t n = 0, sz = entry_size(cq->format);
    for (; n < count && cq->count; n++) {
        struct ivf_cqe *e = &cq->ring[cq->head];
        if (cq->format == FI_CQ_FORMAT_TAGGED) /* Open MPI's: a fixed-size copy */
            ((struct fi_cq_tagged_entry *)buf)[n] = e->e;
        else
            memcpy((char *)buf + n * sz, &e->e, sz);
        if (src)
            src[n] = e->src;
        cq->head = (cq->head + 1) & (cq->cap - 1);
        cq->count--;
    }
    return (ssize_t)n;
}

/* Callers spin on fi_cq_read (Open MPI's blocking send does, without
 * yielding).  When the peer shares the CPU, spinning keeps it from running
 * until the scheduler's tick (4 ms here: measured 4000 us per 64 KiB
 * rendezvous message with two ranks on one CPU).  So every yield_every
 * empty reads in a row give the CPU away once.  Alone on a CPU that buys
 * nothing and costs a system call (1.2 us here, more than an 8 B message:
 * with a yield every 32 reads, an 8 B MPI_Sendrecv took 2-3x vader's): a
 * yield that comes back at once (nobody else ran) doubles yield_every up
 * to IDLE_YIELD_MAX, one that let another task run sets it back.  Whether
 * it did is the thread's count of involuntary context switches (a yield
 * that switched counts there; one that did not, not), not how long it
 * took: another rank spinning on the CPU gives it back within
 * microseconds, as fast as a yield to nobody. */
#define IDLE_YIELD     32
#define IDLE_YIELD_MAX 8192

static ssize_t cq_readfrom(struct fid_cq *fid, void *buf, size_t count, fi_addr_t *src)
{
    struct ivf_cq *cq = (struct ivf_cq *)fid;
    ivf_lock(cq->dom);
    ssize_t r = cq_readfrom_locked(cq, buf, count, src);
    bool yield = false;
    if (r == -FI_EAGAIN && ++cq->idle >= cq->yield_every) {
        cq->idle = 0;
        yield = true;
    } else if (r != -FI_EAGAIN) {
        cq->idle = 0;
    }
    ivf_unlock(cq->dom);
    if (yield) {
        struct rusage ru = {0};
        sched_yield();
        getrusage(RUSAGE_THREAD, &ru);
        ivf_lock(cq->dom);
        bool ran = ru.ru_nivcsw != cq->yield_switches;
        cq->yield_switches = ru.ru_nivcsw;
        if (ran)
            cq->yield_every = IDLE_YIELD;
        else if (cq->yield_every < IDLE_YIELD_MAX)
            cq->yield_every *= 2;
        ivf_unlock(cq->dom);
    }
    return r;
}

static ssize_t cq_read(struct fid_cq *fid, void *buf, size_t count)
{
    return cq_readfrom(fid, buf, count, NULL);
}

static ssize_t cq_readerr(struct fid_cq *fid, struct fi_cq_err_entry *out, uint64_t flags)
{
    struct ivf_cq *cq = (struct ivf_cq *)fid;
    ivf_lock(cq->dom);
    if (!cq->err_count) {
        ivf_unlock(cq->dom);
        return -FI_EAGAIN;
    }
    struct ivf_cqe *e = &cq->errs[cq->err_head];
    struct fi_cq_err_entry x = {
        .op_context = e->e.op_context,
        .flags = e->e.flags,
        .len = e->e.len,
        .buf = e->e.buf,
        .data = e->e.data,
        .tag = e->e.tag,
        .olen = e->olen,
        .err = e->err,
        .prov_errno = e->err,
    };
    cq->err_head = (cq->err_head + 1) & (cq->err_cap - 1);
    cq->err_count--;
    ivf_unlock(cq->dom);
    /* We have no error data: a caller's err_data buffer stays untouched. */
    size_t keep = out->err_data_size;
    void *keep_data = out->err_data;
    *out = x;
    out->err_data = keep ? keep_data : NULL;
    out->err_data_size = 0;
    return 1;
}

static ssize_t cq_sreadfrom(struct fid_cq *fid, void *buf, size_t count, fi_addr_t *src,
                            const void *cond, int timeout)
{
    struct ivf_cq *cq = (struct ivf_cq *)fid;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ivf_lock(cq->dom);
        ssize_t r = cq_readfrom_locked(cq, buf, count, src);
        if (r != -FI_EAGAIN || atomic_exchange(&cq->signaled, false)) {
            ivf_unlock(cq->dom);
            return r;
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (timeout >= 0 && ms >= timeout) {
            ivf_unlock(cq->dom);
            return -FI_EAGAIN;
        }
        int wait = timeout < 0 ? 10 : (int)(timeout - ms < 10 ? timeout - ms : 10);
        ivf_domain_wait(cq->dom, wait);
        ivf_unlock(cq->dom);
    }
}

static ssize_t cq_sread(struct fid_cq *fid, void *buf, size_t count, const void *cond, int timeout)
{
    return cq_sreadfrom(fid, buf, count, NULL, cond, timeout);
}

/* Wake the thread in sread (-FI_EAGAIN), or make the next sread return at
 * once: sread waits in slices of at most 10 ms and looks between them. */
static int cq_signal(struct fid_cq *fid)
{
    atomic_store(&((struct ivf_cq *)fid)->signaled, true);
    return 0;
}

static const char *cq_strerror(struct fid_cq *fid, int prov_errno, const void *err_data, char *buf,
                               size_t len)
{
    return ivf_strerror(prov_errno, buf, len);
}

static int cq_close(struct fid *fid)
{
    struct ivf_cq *cq = (struct ivf_cq *)fid;
    int r = ivf_domain_release(cq->dom, cq->refs);
    if (r < 0)
        return r;
    free(cq->ring);
    free(cq->errs);
    free(cq);
    return 0;
}

static struct fi_ops cq_fi_ops = IVF_FI_OPS(cq_close, ivf_no_bind, ivf_no_control);

static struct fi_ops_cq cq_ops = {
    .size = sizeof(struct fi_ops_cq),
    .read = cq_read,
    .readfrom = cq_readfrom,
    .readerr = cq_readerr,
    .sread = cq_sread,
    .sreadfrom = cq_sreadfrom,
    .signal = cq_signal,
    .strerror = cq_strerror,
};

int ivf_cq_open(struct fid_domain *domain, struct fi_cq_attr *attr, struct fid_cq **out,
                void *context)
{
    struct ivf_domain *dom = (struct ivf_domain *)domain;
    if (!attr)
        return -FI_EINVAL;
    switch (attr->format) {
    case FI_CQ_FORMAT_UNSPEC:
    case FI_CQ_FORMAT_CONTEXT:
    case FI_CQ_FORMAT_MSG:
    case FI_CQ_FORMAT_DATA:
    case FI_CQ_FORMAT_TAGGED: break;
    default: return -FI_ENOSYS;
    }
    switch (attr->wait_obj) {
    case FI_WAIT_NONE:
    case FI_WAIT_UNSPEC: break;
    default: return -FI_ENOSYS; /* no fd/mutex-cond wait objects to hand out */
    }
    if (attr->flags & FI_AFFINITY)
        return -FI_ENOSYS;
    struct ivf_cq *cq = calloc(1, sizeof(*cq));
    if (!cq)
        return -FI_ENOMEM;
    cq->dom = dom;
    cq->yield_every = IDLE_YIELD;
    cq->format = attr->format == FI_CQ_FORMAT_UNSPEC ? FI_CQ_FORMAT_CONTEXT : attr->format;
    ivf_fid_init(&cq->fid.fid, FI_CLASS_CQ, context, &cq_fi_ops);
    cq->fid.ops = &cq_ops;
    ivf_domain_hold(dom);
    *out = &cq->fid;
    return 0;
}
