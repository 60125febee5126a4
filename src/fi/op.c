/*
 * op.c - operations (struct ivf_op in ivf.h): the per-endpoint cache they
 * come from, the circular queues they wait in, finding an active one by
 * its wire id, their completion into a CQ's ring (cq.c reads it), and copying between their
 * iovecs and flat buffers.  Everything above (match, stream, progress,
 * msg) handles operations through these.
 */
#include "ivf.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define OP_CACHE_MAX 64

struct ivf_op *ivf_op_new(struct ivf_ep *ep)
{
    struct ivf_op *op = ep->op_cache;
    if (op) {
        ep->op_cache = op->next;
        ep->op_cached--;
        memset(op, 0, offsetof(struct ivf_op, iov));
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

void ivf_op_cache_drain(struct ivf_ep *ep)
{
    while (ep->op_cache) {
        struct ivf_op *op = ep->op_cache;
        ep->op_cache = op->next;
        free(op);
    }
    ep->op_cached = 0;
}

/* ---- payload buffers --------------------------------------------------------- */

#define BUF_MIN_SHIFT 8               /* class 0: 256 B */
#define BUF_CLASS_MAX (4u << 20)      /* bytes kept per class: the eager credit's worth */
#define BUF_CACHE_MAX (16u << 20)     /* bytes kept per endpoint */
#define BUF_PLAIN     IVF_BUF_CLASSES /* larger than every class: plain malloc */

/* In front of each buffer: its class, and the link while it is cached. */
union buf_head {
    struct {
        unsigned cls;
        void *next;
    } h;
    max_align_t align;
};

static unsigned buf_class(size_t len)
{
    unsigned c = 0;
    while (c < IVF_BUF_CLASSES && ((size_t)1 << (c + BUF_MIN_SHIFT)) < len)
        c++;
    return c;
}

void *ivf_buf_get(struct ivf_ep *ep, size_t len)
{
    unsigned c = buf_class(len);
    union buf_head *b = c < BUF_PLAIN ? ep->buf_cache[c] : NULL;
    if (b) {
        ep->buf_cache[c] = b->h.next;
        ep->buf_cached -= (size_t)1 << (c + BUF_MIN_SHIFT);
        ep->buf_class_cached[c] -= (size_t)1 << (c + BUF_MIN_SHIFT);
    } else {
        size_t size = c < BUF_PLAIN ? (size_t)1 << (c + BUF_MIN_SHIFT) : len;
        if (!(b = malloc(sizeof(*b) + size)))
            return NULL;
        b->h.cls = c;
    }
    return b + 1;
}

void ivf_buf_put(struct ivf_ep *ep, void *buf)
{
    if (!buf)
        return;
    union buf_head *b = (union buf_head *)buf - 1;
    unsigned c = b->h.cls;
    size_t size = c < BUF_PLAIN ? (size_t)1 << (c + BUF_MIN_SHIFT) : 0;
    if (!size || ep->buf_class_cached[c] + size > BUF_CLASS_MAX) {
        free(b);
        return;
    }
    /* Buffers of an earlier message size must not take the room of those
     * the program uses now: the fullest class, if fuller than this one,
     * gives way. */
    while (ep->buf_cached + size > BUF_CACHE_MAX) {
        unsigned v = c;
        for (unsigned k = 0; k < IVF_BUF_CLASSES; k++)
            if (k != c && ep->buf_class_cached[k] > ep->buf_class_cached[v])
                v = k;
        if (v == c || !ep->buf_cache[v]) {
            free(b);
            return;
        }
        union buf_head *old = ep->buf_cache[v];
        ep->buf_cache[v] = old->h.next;
        size_t vsize = (size_t)1 << (v + BUF_MIN_SHIFT);
        ep->buf_cached -= vsize;
        ep->buf_class_cached[v] -= vsize;
        free(old);
    }
    b->h.next = ep->buf_cache[c];
    ep->buf_cache[c] = b;
    ep->buf_cached += size;
    ep->buf_class_cached[c] += size;
}

void ivf_buf_cache_drain(struct ivf_ep *ep)
{
    for (unsigned c = 0; c < IVF_BUF_CLASSES; c++)
        while (ep->buf_cache[c]) {
            union buf_head *b = ep->buf_cache[c];
            ep->buf_cache[c] = b->h.next;
            free(b);
        }
    ep->buf_cached = 0;
    memset(ep->buf_class_cached, 0, sizeof(ep->buf_class_cached));
}

fi_addr_t ivf_peer_fi_addr(struct ivf_ep *ep, struct ivf_peer *p)
{
    if (p->fi_addr == FI_ADDR_NOTAVAIL)
        p->fi_addr = ivf_av_find(ep->av, &p->addr);
    return p->fi_addr;
}

/* ---- completion ------------------------------------------------------------------ */

/* Double a ring's capacity (64 at first), its entries moved to the start;
 * false without memory. */
static __attribute__((noinline, cold)) bool ring_grow(struct ivf_cqe **ring, size_t *cap,
                                                      size_t *head, size_t count)
{
    size_t ncap = *cap ? *cap * 2 : 64;
    struct ivf_cqe *n = malloc(ncap * sizeof(*n));
    if (!n)
        return false;
    for (size_t i = 0; i < count; i++)
        n[i] = (*ring)[(*head + i) & (*cap - 1)];
    free(*ring);
    *ring = n;
    *cap = ncap;
    *head = 0;
    return true;
}

/* A new entry at the tail of a ring (capacity a power of two, grown by
 * doubling), to be filled in place; NULL without memory. */
static inline struct ivf_cqe *ring_slot(struct ivf_cqe **ring, size_t *cap, size_t *head,
                                        size_t *count)
{
    if (__builtin_expect(*count == *cap, 0) && !ring_grow(ring, cap, head, *count))
        return NULL;
    return &(*ring)[(*head + (*count)++) & (*cap - 1)];
}

struct ivf_cqe *ivf_cq_slot(struct ivf_cq *cq, int err)
{
    struct ivf_cqe *e = err ? ring_slot(&cq->errs, &cq->err_cap, &cq->err_head, &cq->err_count)
                            : ring_slot(&cq->ring, &cq->cap, &cq->head, &cq->count);
    if (!e)
        IVF_WARN(FI_LOG_CQ, "out of memory: a completion is lost\n");
    return e;
}

void ivf_op_complete(struct ivf_ep *ep, struct ivf_op *op, int err)
{
    bool recv = op->kind == IVF_OP_RECV;
    struct ivf_cq *cq = recv ? ep->rx_cq : ep->tx_cq;
    struct ivf_cqe *e;
    /* Errors are reported even where no completion was asked for, but an
     * fi_inject call has no context to report one with. */
    if (cq && (op->want_completion || (err && !op->quiet)) && (e = ivf_cq_slot(cq, err))) {
        e->e.op_context = op->context;
        e->e.flags = (recv ? FI_RECV : FI_SEND) | (op->flags & FI_TAGGED ? FI_TAGGED : FI_MSG);
        e->e.len = 0;
        e->e.buf = NULL;
        e->e.data = 0;
        e->e.tag = 0;
        e->src = FI_ADDR_NOTAVAIL;
        e->olen = 0;
        if (recv) {
            if (op->wire_flags & IVF_F_CQDATA) {
                e->e.flags |= FI_REMOTE_CQ_DATA;
                e->e.data = op->data;
            }
            e->e.len = op->done;
            e->e.tag = op->tag;
            e->e.buf = op->iov_count ? op->iov[0].iov_base : NULL;
            if (op->peer) /* a directed receive: the fi_addr it named */
                e->src = op->addr != FI_ADDR_UNSPEC ? op->addr : ivf_peer_fi_addr(ep, op->peer);
            if (err == FI_ETRUNC)
                e->olen = op->msg_len - op->done;
        }
        if (op->flags & FI_PEEK)
            e->e.len = op->msg_len;
        e->err = err;
    }
    ivf_op_free(op);
}

void ivf_op_matched(struct ivf_op *op, struct ivf_peer *p, uint8_t flags, uint64_t tag,
                    uint64_t data, size_t msg_len, uint64_t remote_id)
{
    op->peer = p;
    op->tag = tag;
    op->data = data;
    op->wire_flags = flags;
    op->msg_len = msg_len;
    op->remote_id = remote_id;
}

void ivf_send_done(struct ivf_ep *ep, struct ivf_op *op)
{
    if (!op->data_sent || (op->wait_ack && !op->acked))
        return;
    ivf_op_list_del(&ep->active, op);
    ivf_op_complete(ep, op, op->err);
}

/* ---- queues --------------------------------------------------------------------- */

void ivf_op_list_add(struct ivf_op **head, struct ivf_op *op)
{
    IVF_RING_ADD(head, op);
}

void ivf_op_list_del(struct ivf_op **head, struct ivf_op *op)
{
    if (op->next) /* else in no queue */
        IVF_RING_DEL(head, op);
}

struct ivf_op *ivf_op_find(struct ivf_ep *ep, uint64_t id, enum ivf_op_kind kind)
{
    struct ivf_op *op = ep->active;
    if (!op)
        return NULL;
    do {
        if (op->id == id && op->kind == kind)
            return op;
        op = op->next;
    } while (op != ep->active);
    return NULL;
}

/* ---- iovecs ------------------------------------------------------------------------ */

int ivf_iov_slice(const struct iovec *iov, size_t n, size_t off, size_t len, struct iovec *out,
                  int max)
{
    int k = 0;
    for (size_t i = 0; i < n && len && k < max; i++) {
        if (off >= iov[i].iov_len) {
            off -= iov[i].iov_len;
            continue;
        }
        size_t l = iov[i].iov_len - off;
        if (l > len)
            l = len;
        out[k].iov_base = (char *)iov[i].iov_base + off;
        out[k].iov_len = l;
        k++;
        len -= l;
        off = 0;
    }
    return k;
}

/* The copies in and out of an operation's buffers walk it as ivf_iov_slice
 * does (an operation has at most IVF_IOV_LIMIT pieces). */
size_t ivf_iov_to_buf(const struct iovec *iov, size_t n, size_t off, void *buf, size_t len)
{
    struct iovec v[IVF_IOV_LIMIT];
    int k = ivf_iov_slice(iov, n, off, len, v, IVF_IOV_LIMIT);
    size_t done = 0;
    for (int i = 0; i < k; i++) {
        memcpy((char *)buf + done, v[i].iov_base, v[i].iov_len);
        done += v[i].iov_len;
    }
    return done;
}

size_t ivf_buf_to_iov(const struct iovec *iov, size_t n, size_t off, const void *buf, size_t len)
{
    if (n == 1 && off <= iov[0].iov_len) { /* the common receive: one buffer */
        size_t l = iov[0].iov_len - off < len ? iov[0].iov_len - off : len;
        if (l)
            memcpy((char *)iov[0].iov_base + off, buf, l);
        return l;
    }
    struct iovec v[IVF_IOV_LIMIT];
    int k = ivf_iov_slice(iov, n, off, len, v, IVF_IOV_LIMIT);
    size_t done = 0;
    for (int i = 0; i < k; i++) {
        memcpy(v[i].iov_base, (const char *)buf + done, v[i].iov_len);
        done += v[i].iov_len;
    }
    return done;
}
