/*
 * kid.c - the sending side: a kid is one link a session sends on, to one
 * node of the tree with the subtree below it.  It connects, sends its PUSH
 * (signed, auth.c) and the manifest, learns from STATE what the node has,
 * then gets each next chunk as soon as the session has it (conn.c sends
 * it), and ends with the node's REPORT.  A kid that fails (no connection,
 * an ERROR, no progress for the timeout) is reported failed and its
 * children are adopted: each gets a kid of its own here and continues
 * from what it has.
 */
#include "engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct kid *dist_kid_add(struct session *s, json_t *node)
{
    int idx = (int)json_integer_value(json_object_get(node, "i"));
    for (size_t i = 0; i < s->nkids; i++)
        if (s->kids[i]->idx == idx && s->kids[i]->state != K_FAILED)
            return NULL; /* already served */
    struct kid **g = realloc(s->kids, (s->nkids + 1) * sizeof(*g));
    if (!g)
        return NULL;
    s->kids = g;
    struct kid *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->have = calloc(s->nb ? s->nb : 1, sizeof(*k->have));
    if (!k->have) {
        free(k);
        return NULL;
    }
    k->s = s;
    k->idx = idx;
    snprintf(k->addr, sizeof(k->addr), "%s", json_string_value(json_object_get(node, "addr")));
    k->sub = json_incref(json_object_get(node, "children"));
    if (!k->sub)
        k->sub = json_array();
    k->state = K_WAIT;
    k->since = s->e->now;
    s->kids[s->nkids++] = k;
    if (!s->seq)
        dist_kid_start(k);
    return k;
}

void dist_kid_hello(struct kid *k)
{
    struct session *s = k->s;
    k->state = K_HELLO;
    k->since = s->e->now;
    struct dist_push_req p = {.digest = s->digest,
                              .name = s->name,
                              .version = s->version,
                              .timeout_ms = s->timeout_ms,
                              .seq = s->seq,
                              .self = k->idx,
                              .chunk = s->chunk,
                              .children = k->sub};
    json_t *j = dist_push_msg(&p, s->uid);
    vhpc_err_t err = {0};
    if (!j || dist_sign(&s->e->mctx, j, k->addr, &err) < 0) {
        json_decref(j);
        dist_kid_fail(k, "%s", err.msg[0] ? err.msg : "out of memory");
        return;
    }
    dist_conn_send_json(k->c, VHPC_DIST_PUSH, j);
    if (k->c)
        dist_conn_send(k->c, VHPC_DIST_MANIFEST, s->manifest, s->mlen);
}

void dist_kid_start(struct kid *k)
{
    struct session *s = k->s;
    struct engine *e = s->e;
    struct sockaddr_storage sa;
    socklen_t salen;
    vhpc_err_t err = {0};
    k->since = e->now;
    if (vhpc_dist_resolve(k->addr, &sa, &salen, &err) < 0) {
        dist_kid_fail(k, "%s", err.msg);
        return;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        dist_kid_fail(k, "connecting to %s: %s", k->addr, strerror(errno));
        return;
    }
    if (connect(fd, (struct sockaddr *)&sa, salen) < 0 && errno != EINPROGRESS) {
        int en = errno;
        close(fd);
        dist_kid_fail(k, "connecting to %s: %s", k->addr, strerror(en));
        return;
    }
    struct conn *c = dist_conn_new(e, fd, R_KID);
    if (!c) {
        dist_kid_fail(k, "connecting to %s: out of memory", k->addr);
        return;
    }
    snprintf(c->peer, sizeof(c->peer), "%s", k->addr);
    c->connecting = 1;
    c->kid = k;
    k->c = c;
    k->state = K_CONNECT;
}

void dist_kid_fail(struct kid *k, const char *fmt, ...)
{
    struct session *s = k->s;
    if (k->state == K_DONE || k->state == K_FAILED)
        return;
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (k->c)
        dist_conn_close(k->c);
    k->state = K_FAILED;
    json_decref(k->entries);
    k->entries = json_pack("[{s:i, s:b, s:s, s:I, s:I}]", "i", k->idx, "ok", 0, "reason", why,
                           "bytes", (json_int_t)k->own, "ms", (json_int_t)0);
    size_t n = json_array_size(k->sub);
    dist_log(s->e, "image %.12s: node %s failed (%s)%s", s->digest, k->addr, why,
             n ? "; taking over its children" : "");
    /* Adopt its children: they keep what they have and continue from us. */
    json_t *sub = json_incref(k->sub);
    size_t i;
    json_t *c;
    json_array_foreach(sub, i, c) dist_kid_add(s, c);
    json_decref(sub);
    dist_session_progress(s);
}

int dist_kid_next_chunk(struct kid *k)
{
    struct session *s = k->s;
    struct conn *c = k->c;
    while (k->bi < s->nb && k->have[k->bi] >= s->b[k->bi].size)
        k->bi++;
    if (k->bi == s->nb) {
        k->state = K_REPORT;
        dist_session_progress(s);
        return 0;
    }
    struct blob *b = &s->b[k->bi];
    uint64_t off = k->have[k->bi];
    if (b->have <= off || b->rfd < 0)
        return 0; /* not here yet */
    uint32_t len = dist_chunk_len(s, b, off);
    uint32_t sum = 0;
    int r = dist_chunk_sum(s, b, off / s->chunk, &sum);
    if (r < 0) {
        if (r == -EBADMSG)
            dist_session_fail(s,
                              "blob %.12s (%s) in the local store is damaged: its bytes do not "
                              "hash to its name; build or pull the image again",
                              b->digest, b->role);
        else
            dist_session_fail(s, "reading blob %.12s: %s", b->digest, strerror(-r));
        return 0;
    }
    dist_frame_header(c->chdr, VHPC_DIST_CHUNK, VHPC_DIST_CHUNK_HDR + len);
    dist_chunk_header(c->chdr + VHPC_DIST_HDR, (uint32_t)k->bi, sum, off);
    c->chunk_active = 1;
    c->chdr_off = 0;
    c->cfd = b->rfd;
    c->coff = (off_t)off;
    c->crem = len;
    k->have[k->bi] += len;
    k->sent += len;
    return 1;
}

void dist_session_kick(struct session *s)
{
    for (size_t i = 0; i < s->nkids && !s->dead; i++) {
        struct kid *k = s->kids[i];
        if (k->state == K_SEND && k->c && !k->c->chunk_active)
            dist_conn_flush(k->c);
    }
}

void dist_kid_frame(struct kid *k, int type, json_t *j)
{
    struct session *s = k->s;
    k->since = s->e->now;
    switch (type) {
    case VHPC_DIST_STATE: {
        if (k->state != K_HELLO)
            break;
        const char *error = json_string_value(json_object_get(j, "error"));
        json_t *have = json_object_get(j, "have");
        if (error) {
            dist_kid_fail(k, "%s", error);
            return;
        }
        if (json_array_size(have) != s->nb) {
            dist_kid_fail(k, "it answered with a malformed STATE");
            return;
        }
        for (size_t i = 0; i < s->nb; i++) {
            json_int_t h = json_integer_value(json_array_get(have, i));
            uint64_t v = h < 0 ? 0 : (uint64_t)h;
            if (v > s->b[i].size)
                v = s->b[i].size;
            if (v != s->b[i].size)
                v = v / s->chunk * s->chunk;
            k->have[i] = v;
        }
        k->bi = 0;
        k->state = K_SEND;
        dist_conn_flush(k->c);
        return;
    }
    case VHPC_DIST_PROGRESS:
        k->own = (uint64_t)json_integer_value(json_object_get(j, "own"));
        k->subtree = (uint64_t)json_integer_value(json_object_get(j, "sub"));
        return;
    case VHPC_DIST_REPORT: {
        json_t *nodes = json_object_get(j, "nodes");
        if (!json_is_array(nodes) || json_array_size(nodes) > VHPC_DIST_MAX_TREE) {
            dist_kid_fail(k, "it sent a malformed REPORT");
            return;
        }
        json_decref(k->entries);
        k->entries = json_incref(nodes);
        k->state = K_DONE;
        if (k->c)
            dist_conn_close(k->c);
        dist_session_progress(s);
        return;
    }
    case VHPC_DIST_ERROR: {
        const char *msg = json_string_value(json_object_get(j, "error"));
        dist_kid_fail(k, "%s", msg ? msg : "it reported an error");
        return;
    }
    }
    dist_kid_fail(k, "it sent an unexpected frame (type %d)", type);
}
