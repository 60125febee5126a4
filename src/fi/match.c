/*
 * match.c - receive matching: posted receives (searched in posting order)
 * against arriving messages (in stream order), the unexpected queue (in
 * arrival order) with its byte budget, FI_PEEK / FI_CLAIM / FI_DISCARD,
 * and fi_cancel of a posted receive.
 *
 * Lists are circular and doubly linked; the head pointer is the oldest.
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>

void ivf_op_list_add(struct ivf_op **head, struct ivf_op *op)
{
    if (!*head) {
        op->next = op->prev = op;
        *head = op;
        return;
    }
    op->prev = (*head)->prev;
    op->next = *head;
    (*head)->prev->next = op;
    (*head)->prev = op;
}

void ivf_op_list_del(struct ivf_op **head, struct ivf_op *op)
{
    if (!op->next)
        return; /* not in a list */
    if (op->next == op) {
        *head = NULL;
    } else {
        op->prev->next = op->next;
        op->next->prev = op->prev;
        if (*head == op)
            *head = op->next;
    }
    op->next = op->prev = NULL;
}

static void unexp_add(struct ivf_unexp **head, struct ivf_unexp *u)
{
    if (!*head) {
        u->next = u->prev = u;
        *head = u;
        return;
    }
    u->prev = (*head)->prev;
    u->next = *head;
    (*head)->prev->next = u;
    (*head)->prev = u;
}

static void unexp_del(struct ivf_unexp **head, struct ivf_unexp *u)
{
    if (u->next == u) {
        *head = NULL;
    } else {
        u->prev->next = u->next;
        u->next->prev = u->prev;
        if (*head == u)
            *head = u->next;
    }
    u->next = u->prev = NULL;
}

static fi_addr_t peer_fi_addr(struct ivf_ep *ep, struct ivf_peer *p)
{
    if (p->fi_addr == FI_ADDR_NOTAVAIL)
        p->fi_addr = ivf_av_find(ep->av, &p->addr);
    return p->fi_addr;
}

static bool tag_match(uint64_t tag, uint64_t want, uint64_t ignore)
{
    return (tag | ignore) == (want | ignore);
}

/* Does receive `op` take a message with this tag from peer p? */
static bool op_matches(struct ivf_ep *ep, const struct ivf_op *op, bool tagged, uint64_t tag,
                       struct ivf_peer *p)
{
    if (tagged && !tag_match(tag, op->tag, op->ignore))
        return false;
    return op->addr == FI_ADDR_UNSPEC || op->addr == peer_fi_addr(ep, p);
}

/* u leaves the unexpected queue for good: an eager message's bytes are
 * taken (delivered or discarded), so its sender gets the credit back. */
static void unexp_free(struct ivf_ep *ep, struct ivf_unexp *u)
{
    if (u->type == IVF_EAGER) {
        ep->unexp_bytes -= u->len;
        if (u->peer)
            ivf_credit_return(ep, u->peer, u->len);
    }
    free(u->buf);
    free(u);
}

/* Let the sender of an RTS know that the data is not wanted. */
static void refuse_rts(struct ivf_ep *ep, struct ivf_unexp *u)
{
    struct ivf_hdr h = {.type = IVF_CTS, .id = u->remote_id, .data = 0, .size = 0};
    ivf_send_frame(ep, u->peer, &h, NULL, 0, 0, true, NULL);
}

/* Receive `op` takes message u (removed from its queue by the caller). */
static void deliver_unexp(struct ivf_ep *ep, struct ivf_op *op, struct ivf_unexp *u)
{
    op->peer = u->peer;
    op->tag = u->tag;
    op->data = u->data;
    op->wire_flags = u->flags;
    op->msg_len = u->len;
    op->remote_id = u->remote_id;
    if (u->type == IVF_EAGER) {
        op->done = ivf_buf_to_iov(op->iov, op->iov_count, 0, u->buf, u->len);
        if (u->flags & IVF_F_ACK)
            ivf_send_ack(ep, u->peer, u->remote_id);
        unexp_free(ep, u);
        ivf_op_complete(ep, op, op->msg_len > op->len ? FI_ETRUNC : 0);
        return;
    }
    /* RTS: ask for the data (as much as fits). */
    op->id = ++ep->next_id;
    size_t want = u->len < op->len ? u->len : op->len;
    unexp_free(ep, u);
    if (want == 0) {
        struct ivf_unexp tmp = {.peer = op->peer, .remote_id = op->remote_id};
        refuse_rts(ep, &tmp);
        ivf_op_complete(ep, op, op->msg_len > op->len ? FI_ETRUNC : 0);
        return;
    }
    ivf_op_list_add(&ep->active, op);
    struct ivf_hdr h = {.type = IVF_CTS, .id = op->remote_id, .data = op->id, .size = want};
    if (ivf_send_frame(ep, op->peer, &h, NULL, 0, 0, true, NULL) < 0) {
        ivf_op_list_del(&ep->active, op);
        ivf_op_complete(ep, op, FI_EIO);
    }
}

/* The oldest unexpected message op can take (not claimed by a peek). */
static struct ivf_unexp *find_unexp(struct ivf_ep *ep, struct ivf_unexp *head,
                                    const struct ivf_op *op, bool tagged)
{
    struct ivf_unexp *u = head;
    if (!u)
        return NULL;
    do {
        if (!u->claim_context && !u->waiting_op && op_matches(ep, op, tagged, u->tag, u->peer))
            return u;
        u = u->next;
    } while (u != head);
    return NULL;
}

ssize_t ivf_post_recv(struct ivf_ep *ep, struct ivf_op *op)
{
    bool tagged = op->flags & FI_TAGGED;
    struct ivf_unexp **uq = tagged ? &ep->unexp_tagged : &ep->unexp_msg;
    struct ivf_unexp *u;
    if (op->flags & FI_CLAIM) {
        /* The message a FI_PEEK|FI_CLAIM with this context set aside. */
        u = *uq;
        struct ivf_unexp *found = NULL;
        if (u) {
            do {
                if (u->claim_context == op->context)
                    found = u;
                u = u->next;
            } while (!found && u != *uq);
        }
        if (!found)
            return -FI_EINVAL;
        if (op->flags & FI_DISCARD) {
            unexp_del(uq, found);
            if (found->type == IVF_RTS)
                refuse_rts(ep, found);
            unexp_free(ep, found);
            op->done = 0;
            ivf_op_complete(ep, op, 0);
            return 0;
        }
        if (found->type == IVF_EAGER && found->got < found->len) {
            found->waiting_op = op; /* delivered when its payload is in */
            return 0;
        }
        unexp_del(uq, found);
        deliver_unexp(ep, op, found);
        return 0;
    }
    if ((u = find_unexp(ep, *uq, op, tagged))) {
        if (u->type == IVF_EAGER && u->got < u->len) {
            u->waiting_op = op;
            return 0;
        }
        unexp_del(uq, u);
        deliver_unexp(ep, op, u);
        return 0;
    }
    ivf_op_list_add(tagged ? &ep->posted_tagged : &ep->posted_msg, op);
    return 0;
}

void ivf_unexp_ready(struct ivf_ep *ep, struct ivf_unexp *u)
{
    struct ivf_op *op = u->waiting_op;
    if (!op)
        return;
    unexp_del(op->flags & FI_TAGGED ? &ep->unexp_tagged : &ep->unexp_msg, u);
    deliver_unexp(ep, op, u);
}

int ivf_incoming(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h)
{
    bool tagged = h->flags & IVF_F_TAGGED;
    struct ivf_op **pq = tagged ? &ep->posted_tagged : &ep->posted_msg;
    size_t msg_len = h->type == IVF_EAGER ? h->len : (size_t)h->size;
    struct ivf_op *op = *pq;
    if (op) {
        do {
            if (op_matches(ep, op, tagged, h->tag, p))
                break;
            op = op->next;
        } while (op != *pq);
        if (!op_matches(ep, op, tagged, h->tag, p))
            op = NULL;
    }
    if (op) {
        ivf_op_list_del(pq, op);
        op->peer = p;
        op->tag = h->tag;
        op->data = h->data;
        op->wire_flags = h->flags;
        op->msg_len = msg_len;
        op->remote_id = h->id;
        op->done = 0;
        if (h->type == IVF_EAGER) {
            /* The payload goes straight into the buffer (link.c). */
            ivf_op_list_add(&ep->active, op);
            p->rx.dst_op = op;
            p->rx.dst_off = 0;
            return 0;
        }
        struct ivf_unexp tmp = {.peer = p,
                                .type = IVF_RTS,
                                .flags = h->flags,
                                .tag = h->tag,
                                .data = h->data,
                                .remote_id = h->id,
                                .len = msg_len};
        struct ivf_unexp *u = malloc(sizeof(*u));
        if (!u)
            return -FI_EAGAIN;
        *u = tmp;
        deliver_unexp(ep, op, u);
        return 0;
    }
    /* Unexpected: the sender's credit bounds what eager data comes. */
    struct ivf_unexp *u = calloc(1, sizeof(*u));
    if (!u)
        return -FI_EAGAIN;
    u->peer = p;
    u->type = h->type;
    u->flags = h->flags;
    u->tag = h->tag;
    u->data = h->data;
    u->remote_id = h->id;
    u->len = msg_len;
    if (h->type == IVF_EAGER) {
        u->buf = malloc(msg_len ? msg_len : 1);
        if (!u->buf) {
            free(u);
            return -FI_EAGAIN;
        }
        ep->unexp_bytes += msg_len;
        p->rx.dst_unexp = u;
        if (msg_len == 0)
            u->got = 0;
    }
    unexp_add(tagged ? &ep->unexp_tagged : &ep->unexp_msg, u);
    return 0;
}

ssize_t ivf_peek(struct ivf_ep *ep, struct ivf_op *op, uint64_t flags)
{
    bool tagged = op->flags & FI_TAGGED;
    struct ivf_unexp **uq = tagged ? &ep->unexp_tagged : &ep->unexp_msg;
    struct ivf_unexp *u = find_unexp(ep, *uq, op, tagged);
    if (!u) {
        op->want_completion = true;
        ivf_op_complete(ep, op, FI_ENOMSG);
        return 0;
    }
    op->peer = u->peer;
    op->tag = u->tag;
    op->data = u->data;
    op->wire_flags = u->flags;
    op->msg_len = u->len;
    op->done = u->len; /* a peek reports the message's length */
    op->len = u->len;
    if (flags & FI_DISCARD) {
        unexp_del(uq, u);
        if (u->type == IVF_RTS)
            refuse_rts(ep, u);
        unexp_free(ep, u);
    } else if (flags & FI_CLAIM) {
        u->claim_context = op->context;
    }
    op->want_completion = true;
    ivf_op_complete(ep, op, 0);
    return 0;
}

static struct ivf_op *find_context(struct ivf_op *head, void *context)
{
    struct ivf_op *op = head;
    if (!op)
        return NULL;
    do {
        if (op->context == context)
            return op;
        op = op->next;
    } while (op != head);
    return NULL;
}

int ivf_cancel_recv(struct ivf_ep *ep, void *context)
{
    struct ivf_op **qs[] = {&ep->posted_tagged, &ep->posted_msg};
    for (int i = 0; i < 2; i++) {
        struct ivf_op *op = find_context(*qs[i], context);
        if (op) {
            ivf_op_list_del(qs[i], op);
            op->done = 0;
            op->want_completion = true;
            ivf_op_complete(ep, op, FI_ECANCELED);
            return 0;
        }
    }
    /* A receive waiting for an unexpected message still arriving. */
    struct ivf_unexp **uqs[] = {&ep->unexp_tagged, &ep->unexp_msg};
    for (int i = 0; i < 2; i++) {
        struct ivf_unexp *u = *uqs[i];
        if (!u)
            continue;
        do {
            if (u->waiting_op && u->waiting_op->context == context) {
                struct ivf_op *op = u->waiting_op;
                u->waiting_op = NULL;
                op->done = 0;
                op->want_completion = true;
                ivf_op_complete(ep, op, FI_ECANCELED);
                return 0;
            }
            u = u->next;
        } while (u != *uqs[i]);
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
    struct ivf_unexp **uqs[] = {&ep->unexp_tagged, &ep->unexp_msg};
    for (int i = 0; i < 2; i++)
        while (*uqs[i]) {
            struct ivf_unexp *u = *uqs[i];
            unexp_del(uqs[i], u);
            if (u->waiting_op)
                ivf_op_free(u->waiting_op);
            u->peer = NULL; /* closing: the peers are gone, no credit to give back */
            unexp_free(ep, u);
        }
}
