/*
 * match.c - the receive side's queues and matching: posted receives
 * (searched in posting order) against arriving messages (in stream order),
 * the unexpected queue (in arrival order) with its byte budget, the
 * message a FI_PEEK|FI_CLAIM set aside, fi_cancel of a posted receive.
 * What a match then does (copy, CTS, credit, ACK) is progress.c's.
 *
 * Queues are circular and doubly linked; the head pointer is the oldest.
 */
#include "ivf.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define UNEXP_CACHE_MAX 64

static struct ivf_unexp **unexp_queue(struct ivf_ep *ep, bool tagged)
{
    return tagged ? &ep->unexp_tagged : &ep->unexp_msg;
}

static bool tag_match(uint64_t tag, uint64_t want, uint64_t ignore)
{
    return (tag | ignore) == (want | ignore);
}

/* Does receive `op` take a message with this tag from peer p?  The source
 * is compared as an endpoint, not as an fi_addr: one address inserted
 * twice has two fi_addrs (Open MPI inserts a peer again for each
 * intercommunicator), and a receive naming either takes its messages. */
static bool op_matches(const struct ivf_op *op, bool tagged, uint64_t tag, struct ivf_peer *p)
{
    if (tagged && !tag_match(tag, op->tag, op->ignore))
        return false;
    return !op->src_uid || op->src_uid == p->addr.uid;
}

/* ---- posted receives ------------------------------------------------------------- */

void ivf_match_post(struct ivf_ep *ep, struct ivf_op *op)
{
    ivf_op_list_add(op->flags & FI_TAGGED ? &ep->posted_tagged : &ep->posted_msg, op);
}

struct ivf_op *ivf_match_find(struct ivf_ep *ep, bool tagged, uint64_t tag, struct ivf_peer *p)
{
    struct ivf_op *head = tagged ? ep->posted_tagged : ep->posted_msg, *op = head;
    if (!op)
        return NULL;
    do {
        if (op_matches(op, tagged, tag, p))
            return op;
        op = op->next;
    } while (op != head);
    return NULL;
}

void ivf_match_take(struct ivf_ep *ep, struct ivf_op *op)
{
    ivf_op_list_del(op->flags & FI_TAGGED ? &ep->posted_tagged : &ep->posted_msg, op);
}

struct ivf_op *ivf_match_posted(struct ivf_ep *ep, bool tagged, uint64_t tag, struct ivf_peer *p)
{
    struct ivf_op *op = ivf_match_find(ep, tagged, tag, p);
    if (op)
        ivf_match_take(ep, op);
    return op;
}

/* ---- unexpected messages ----------------------------------------------------------- */

/* Walk the unexpected queue of `tagged` for the first u with pred(u, arg). */
static struct ivf_unexp *
unexp_search(struct ivf_ep *ep, bool tagged,
             bool (*pred)(struct ivf_ep *, struct ivf_unexp *, const void *), const void *arg)
{
    struct ivf_unexp *head = *unexp_queue(ep, tagged), *u = head;
    if (!u)
        return NULL;
    do {
        if (pred(ep, u, arg))
            return u;
        u = u->next;
    } while (u != head);
    return NULL;
}

static bool takes(struct ivf_ep *ep, struct ivf_unexp *u, const void *arg)
{
    const struct ivf_op *op = arg;
    return !u->claim_context && !u->waiting_op &&
           op_matches(op, op->flags & FI_TAGGED, u->tag, u->peer);
}

static bool claimed_by(struct ivf_ep *ep, struct ivf_unexp *u, const void *context)
{
    return u->claim_context == context;
}

static bool waited_by(struct ivf_ep *ep, struct ivf_unexp *u, const void *context)
{
    return u->waiting_op && u->waiting_op->context == context;
}

struct ivf_unexp *ivf_unexp_find(struct ivf_ep *ep, const struct ivf_op *op)
{
    return unexp_search(ep, op->flags & FI_TAGGED, takes, op);
}

struct ivf_unexp *ivf_unexp_claimed(struct ivf_ep *ep, bool tagged, void *context)
{
    return unexp_search(ep, tagged, claimed_by, context);
}

struct ivf_unexp *ivf_unexp_new(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                                size_t msg_len)
{
    struct ivf_unexp *u = ep->unexp_cache;
    if (u) {
        ep->unexp_cache = u->next;
        ep->unexp_cached--;
        memset(u, 0, offsetof(struct ivf_unexp, small));
    } else if (!(u = calloc(1, sizeof(*u)))) {
        return NULL;
    }
    u->peer = p;
    u->type = h->type;
    u->flags = h->flags;
    u->tag = h->tag;
    u->data = h->data;
    u->remote_id = h->id;
    u->len = msg_len;
    if (h->type == IVF_EAGER) {
        u->buf = msg_len <= sizeof(u->small) ? u->small : ivf_buf_get(ep, msg_len);
        if (!u->buf) {
            free(u);
            return NULL;
        }
    }
    return u;
}

void ivf_unexp_link(struct ivf_ep *ep, struct ivf_unexp *u)
{
    if (u->type == IVF_EAGER)
        ep->unexp_bytes += u->len;
    struct ivf_unexp **head = unexp_queue(ep, u->flags & IVF_F_TAGGED);
    IVF_RING_ADD(head, u);
}

struct ivf_unexp *ivf_unexp_add(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                                size_t msg_len)
{
    struct ivf_unexp *u = ivf_unexp_new(ep, p, h, msg_len);
    if (u)
        ivf_unexp_link(ep, u);
    return u;
}

void ivf_unexp_del(struct ivf_ep *ep, struct ivf_unexp *u)
{
    struct ivf_unexp **head = unexp_queue(ep, u->flags & IVF_F_TAGGED);
    IVF_RING_DEL(head, u);
}

void ivf_unexp_free(struct ivf_ep *ep, struct ivf_unexp *u)
{
    if (u->type == IVF_EAGER)
        ep->unexp_bytes -= u->len;
    ivf_unexp_drop(ep, u);
}

void ivf_unexp_drop(struct ivf_ep *ep, struct ivf_unexp *u)
{
    if (u->buf != u->small)
        ivf_buf_put(ep, u->buf);
    if (ep->unexp_cached < UNEXP_CACHE_MAX) {
        u->next = ep->unexp_cache;
        ep->unexp_cache = u;
        ep->unexp_cached++;
        return;
    }
    free(u);
}

void ivf_unexp_cache_drain(struct ivf_ep *ep)
{
    while (ep->unexp_cache) {
        struct ivf_unexp *u = ep->unexp_cache;
        ep->unexp_cache = u->next;
        free(u);
    }
    ep->unexp_cached = 0;
}

/* ---- cancel and cleanup -------------------------------------------------------------- */

static void cancelled(struct ivf_ep *ep, struct ivf_op *op)
{
    op->done = 0;
    op->want_completion = true;
    ivf_op_complete(ep, op, FI_ECANCELED);
}

int ivf_cancel_recv(struct ivf_ep *ep, void *context)
{
    struct ivf_op **qs[] = {&ep->posted_tagged, &ep->posted_msg};
    for (int i = 0; i < 2; i++) {
        struct ivf_op *op = *qs[i];
        if (!op)
            continue;
        do {
            if (op->context == context) {
                ivf_op_list_del(qs[i], op);
                cancelled(ep, op);
                return 0;
            }
            op = op->next;
        } while (op != *qs[i]);
    }
    /* A receive waiting for an unexpected message still arriving. */
    for (int tagged = 1; tagged >= 0; tagged--) {
        struct ivf_unexp *u = unexp_search(ep, tagged, waited_by, context);
        if (u) {
            struct ivf_op *op = u->waiting_op;
            u->waiting_op = NULL;
            cancelled(ep, op);
            return 0;
        }
    }
    return -FI_ENOENT;
}

void ivf_match_cleanup(struct ivf_ep *ep)
{
    struct ivf_op **qs[] = {&ep->posted_tagged, &ep->posted_msg, &ep->active};
    for (int i = 0; i < 3; i++)
        while (*qs[i]) {
            struct ivf_op *op = *qs[i];
            ivf_op_list_del(qs[i], op);
            ivf_op_free(op);
        }
    /* Closing: the peers are gone, no credit to give back. */
    for (int tagged = 1; tagged >= 0; tagged--)
        while (*unexp_queue(ep, tagged)) {
            struct ivf_unexp *u = *unexp_queue(ep, tagged);
            ivf_unexp_del(ep, u);
            if (u->waiting_op)
                ivf_op_free(u->waiting_op);
            ivf_unexp_free(ep, u);
        }
}
