/*
 * conn.c - a connection of the engine: a non-blocking TCP socket with its
 * input buffer and its output queue.  Frames go out in order, control
 * frames first, then at most one chunk in flight, sent from the blob's
 * file with sendfile(2) (the kid's next one is set up as soon as the last
 * is out); frames come in whole, each checked (proto.c) before its bytes
 * are read, the buffer growing only as bytes arrive, and are handed to
 * dist_dispatch.  What a frame means and who owns the link is the
 * engine's (engine.c).
 */
#include "engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn *dist_conn_new(struct engine *e, int fd, enum role role)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->e = e;
    c->fd = fd;
    c->role = role;
    c->cfd = -1;
    c->lowat = 1;
    c->since = c->last_rx = c->last_tx = e->now;
    c->next = e->conns;
    e->conns = c;
    e->nconns++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return c;
}

void dist_conn_send(struct conn *c, int type, const void *payload, size_t len)
{
    if (c->dead)
        return;
    struct obuf *b = malloc(sizeof(*b) + VHPC_DIST_HDR + len);
    if (!b) {
        dist_conn_close(c);
        return;
    }
    b->next = NULL;
    b->len = VHPC_DIST_HDR + len;
    b->off = 0;
    dist_frame_header(b->data, type, (uint32_t)len);
    if (len)
        memcpy(b->data + VHPC_DIST_HDR, payload, len);
    if (c->qtail)
        c->qtail->next = b;
    else
        c->qhead = b;
    c->qtail = b;
    dist_conn_flush(c);
}

void dist_conn_send_json(struct conn *c, int type, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        dist_conn_close(c);
        return;
    }
    dist_conn_send(c, type, text, strlen(text));
    free(text);
}

void dist_conn_send_error(struct conn *c, const char *msg)
{
    dist_conn_send_json(c, VHPC_DIST_ERROR, json_pack("{s:s}", "error", msg));
    c->close_after_flush = 1;
    snprintf(c->closing_why, sizeof(c->closing_why), "%.150s", msg);
    dist_conn_flush(c);
}

void dist_conn_close(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    struct kid *k = c->kid;
    struct session *s = c->sess;
    c->kid = NULL;
    c->sess = NULL;
    if (k)
        k->c = NULL;
    if (s && s->up == c)
        s->up = NULL;
}

void dist_conn_free(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    while (c->qhead) {
        struct obuf *b = c->qhead;
        c->qhead = b->next;
        free(b);
    }
    json_decref(c->push);
    free(c->in);
    free(c);
}

void dist_conn_flush(struct conn *c)
{
    struct engine *e = c->e;
    while (!c->dead && !c->connecting) {
        if (c->chunk_active) {
            if (c->chdr_off < sizeof(c->chdr)) {
                ssize_t n = send(c->fd, c->chdr + c->chdr_off, sizeof(c->chdr) - c->chdr_off,
                                 MSG_NOSIGNAL | MSG_MORE);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        return;
                    dist_conn_lost(c, strerror(errno));
                    return;
                }
                c->chdr_off += (size_t)n;
                c->last_tx = e->now;
                continue;
            }
            if (c->crem > 0) {
                ssize_t n = sendfile(c->fd, c->cfd, &c->coff, c->crem);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        return;
                    dist_conn_lost(c, strerror(errno));
                    return;
                }
                if (n == 0) {
                    dist_conn_lost(c, "the blob file ended early");
                    return;
                }
                c->crem -= (size_t)n;
                c->last_tx = e->now;
                if (c->kid)
                    c->kid->since = e->now;
                continue;
            }
            c->chunk_active = 0;
            continue;
        }
        if (c->qhead) {
            struct obuf *b = c->qhead;
            ssize_t n = send(c->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return;
                dist_conn_lost(c, strerror(errno));
                return;
            }
            c->last_tx = e->now;
            b->off += (size_t)n;
            if (b->off == b->len) {
                c->qhead = b->next;
                if (!c->qhead)
                    c->qtail = NULL;
                free(b);
            }
            continue;
        }
        if (c->kid && c->kid->state == K_SEND && dist_kid_next_chunk(c->kid))
            continue;
        if (c->close_after_flush) {
            /* A pull whose answer we refused goes on with the next node
             * (dist_conn_lost does that); anything else just ends. */
            if (c->is_pull)
                dist_conn_lost(c, c->closing_why[0] ? c->closing_why : "refused its answer");
            else
                dist_conn_close(c);
        }
        return;
    }
}

void dist_conn_read(struct conn *c)
{
    size_t budget = c->e->read_budget; /* then let the others have a turn */
    while (!c->dead) {
        /* Whole frames first. */
        while (!c->dead && c->got - c->pos >= VHPC_DIST_HDR) {
            const unsigned char *h = c->in + c->pos;
            uint32_t len;
            int type;
            if (dist_frame_check(h, &type, &len) < 0) {
                dist_conn_lost(c, "a malformed frame");
                return;
            }
            if (type == VHPC_DIST_CHUNK && c->role != R_UP) {
                dist_conn_lost(c, "an unexpected chunk");
                return;
            }
            size_t need = VHPC_DIST_HDR + (size_t)len;
            if (c->got - c->pos < need)
                break;
            c->pos += need;
            dist_dispatch(c, type, h + VHPC_DIST_HDR, len);
        }
        if (c->dead)
            return;
        if (c->pos) {
            memmove(c->in, c->in + c->pos, c->got - c->pos);
            c->got -= c->pos;
            c->pos = 0;
        }
        if (!c->in) {
            c->cap = 64 << 10;
            if (!(c->in = malloc(c->cap))) {
                dist_conn_lost(c, "out of memory");
                return;
            }
        }
        /* The buffer grows as a frame's bytes arrive, never on a length
         * alone: a peer costs us what it actually sends. */
        if (c->got == c->cap) {
            size_t need = VHPC_DIST_HDR + dist_get32(c->in + 8), ncap = c->cap * 4;
            if (ncap > need)
                ncap = need;
            unsigned char *g = realloc(c->in, ncap);
            if (!g) {
                dist_conn_lost(c, "out of memory");
                return;
            }
            c->in = g;
            c->cap = ncap;
        }
        size_t want = c->cap - c->got;
        /* Inside a big frame, read just to its end: no bytes to move after;
         * and be woken only once a good part of it is here (fewer wake-ups
         * and context switches per chunk). */
        int lowat = 1;
        if (c->got >= VHPC_DIST_HDR) {
            size_t need = VHPC_DIST_HDR + dist_get32(c->in + 8), rest = need - c->got;
            if (rest > (64 << 10) && rest < want)
                want = rest;
            if (rest > (64 << 10))
                lowat = rest < (256 << 10) ? (int)rest : 256 << 10;
        }
        if (lowat != c->lowat) {
            setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
            c->lowat = lowat;
        }
        /* Only now may we stop: the mark must fit the frame we are inside,
         * not the one just dispatched, or poll waits for bytes that never
         * come (a last chunk smaller than the mark left for its
         * predecessor). */
        if (budget == 0)
            return;
        ssize_t n = recv(c->fd, c->in + c->got, want, 0);
        if (n == 0) {
            dist_conn_lost(c, "it closed the connection");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                dist_conn_lost(c, strerror(errno));
            return;
        }
        c->got += (size_t)n;
        c->last_rx = c->e->now;
        budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
    }
}
