/*
 * session.c - a session's life: made for an image of the local store (a
 * pusher, or a node answering a pull) or by a PUSH (recv.c), found again
 * when another sender takes a transfer over, moved on as its kids finish
 * (in store and forward mode, starting the next kid only once the last is
 * done), reporting upstream once it has the image and every node below it
 * is done or failed, failed with a reason, and freed at the loop's sweep
 * once no commit thread holds it.
 */
#include "engine.h"
#include "progress.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct session *dist_session_alloc(struct engine *e)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->e = e;
    s->t0 = s->last_hb = e->now;
    s->self = -1;
    s->next = e->sessions;
    e->sessions = s;
    return s;
}

void dist_session_release(struct session *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    for (size_t i = 0; i < s->nkids; i++)
        if (s->kids[i]->c)
            dist_conn_close(s->kids[i]->c);
    if (s->up) {
        s->up->sess = NULL;
        s->up = NULL;
    }
}

void dist_session_free(struct session *s)
{
    for (size_t i = 0; i < s->nb; i++)
        dist_blob_release(&s->b[i]);
    for (size_t i = 0; i < s->nkids; i++) {
        json_decref(s->kids[i]->sub);
        json_decref(s->kids[i]->entries);
        free(s->kids[i]->have);
        free(s->kids[i]);
    }
    free(s->kids);
    free(s->b);
    free(s->manifest);
    free(s);
}

struct session *dist_session_find(struct engine *e, const char *digest)
{
    for (struct session *s = e->sessions; s; s = s->next)
        if (!s->dead && !s->source && !strcmp(s->digest, digest))
            return s;
    return NULL;
}

void dist_session_fail(struct session *s, const char *fmt, ...)
{
    if (s->dead || s->own == -1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
    va_end(ap);
    s->own = -1;
    dist_log(s->e, "image %.12s: %s", s->digest, s->reason);
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        if (b->state == B_RECV) {
            vhpc_store_blob_abort(&b->w);
            b->state = B_GONE;
        }
    }
    if (s->up) {
        struct conn *up = s->up;
        dist_conn_send_error(up, s->reason);
        up->sess = NULL;
        up->role = R_LINGER;
        s->up = NULL;
    }
    if (s == s->e->client)
        s->e->client_done = 1;
    else
        dist_session_release(s);
}

static json_t *own_entry(struct session *s)
{
    return json_pack("{s:i, s:b, s:s, s:I, s:I}", "i", s->self, "ok", 1, "reason", "", "bytes",
                     (json_int_t)s->bytes_in, "ms", (json_int_t)(s->t_done - s->t0));
}

/* REPORT upstream: this node and, with `below`, every node below it (its
 * kids' REPORTs or failures). */
static void report_up(struct session *s, int below)
{
    json_t *nodes = json_array();
    json_array_append_new(nodes, own_entry(s));
    for (size_t i = 0; below && i < s->nkids; i++)
        json_array_extend(nodes, s->kids[i]->entries);
    dist_conn_send_json(s->up, VHPC_DIST_REPORT, json_pack("{s:o}", "nodes", nodes));
}

void dist_session_progress(struct session *s)
{
    if (s->dead || s->own == -1)
        return;
    size_t active = 0, open = 0;
    for (size_t i = 0; i < s->nkids; i++) {
        enum kid_state st = s->kids[i]->state;
        if (st == K_CONNECT || st == K_HELLO || st == K_SEND)
            active++;
        if (st != K_DONE && st != K_FAILED)
            open++;
    }
    if (s->seq && s->own == 1 && active == 0) {
        for (size_t i = 0; i < s->nkids; i++) {
            if (s->kids[i]->state == K_WAIT) {
                dist_kid_start(s->kids[i]);
                if (s->dead)
                    return;
                if (s->kids[i]->state != K_FAILED)
                    break;
            }
        }
        /* dist_kid_start may have failed kids and adopted others */
        open = 0;
        for (size_t i = 0; i < s->nkids; i++)
            if (s->kids[i]->state != K_DONE && s->kids[i]->state != K_FAILED)
                open++;
    }
    if (s->own != 1 || open > 0 || s->reported)
        return;
    /* Everything below us is done. */
    if (s == s->e->client) {
        s->reported = 1;
        s->e->client_done = 1;
        if (s->up)
            report_up(s, 0);
        return;
    }
    if (s->source) {
        s->reported = 1;
        dist_session_release(s);
        return;
    }
    if (!s->up)
        return; /* wait for whoever takes us over */
    struct conn *up = s->up;
    report_up(s, 1);
    s->reported = 1;
    up->role = R_LINGER;
    up->since = s->e->now;
    dist_session_release(s);
}

/* Open the session's blobs for reading from the store (all verified);
 * -ENOENT / -EBADMSG when one is missing or damaged (and was removed). */
static int open_store_blobs(struct session *s, int verify, vhpc_err_t *err)
{
    struct engine *e = s->e;
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        char p[PATH_MAX];
        int r = dist_store_blob_check(e, b, verify, err);
        if (r < 0)
            return r;
        vhpc_store_blob_path(e->st, b->digest, p, sizeof(p));
        b->rfd = open(p, O_RDONLY | O_CLOEXEC);
        if (b->rfd < 0)
            return vhpc_err_set(err, -errno, "opening %s", p);
        b->have = b->size;
        b->state = B_HAVE;
        if (!verify) {
            b->check_full = 1;
            vhpc_sha256_init(&b->full);
        }
        if (dist_blob_set_chunking(s, b) < 0)
            return vhpc_err_set(err, -ENOMEM, "opening blob %.12s", b->digest);
    }
    return 0;
}

struct session *dist_session_from_store(struct engine *e, const struct vhpc_ref *ref, int verify,
                                        vhpc_err_t *err)
{
    struct session *s = dist_session_alloc(e);
    if (!s) {
        vhpc_err_set(err, -ENOMEM, "starting a transfer");
        return NULL;
    }
    s->source = 1;
    s->own = 1;
    snprintf(s->digest, sizeof(s->digest), "%s", ref->digest);
    snprintf(s->name, sizeof(s->name), "%s", ref->name);
    s->version = ref->version;
    s->chunk = 1 << 20;
    s->timeout_ms = 30000;
    int r = vhpc_store_get_manifest_raw(e->st, ref->digest, &s->manifest, &s->mlen, err);
    if (r == 0)
        r = dist_manifest_blobs(s->manifest, s->mlen, &s->b, &s->nb, err);
    if (r == 0)
        r = dist_fds_admit(e, s->nb, err);
    if (r == 0)
        r = open_store_blobs(s, verify, err);
    if (r < 0) {
        vhpc_err_wrap(err, "image %s:%d (%.12s)", ref->name, ref->version, ref->digest);
        dist_session_release(s);
        return NULL;
    }
    return s;
}

void dist_session_heartbeat(struct session *s)
{
    uint64_t sub = 0;
    for (size_t i = 0; i < s->nkids; i++) {
        struct kid *k = s->kids[i];
        if (k->state == K_DONE) {
            size_t j;
            json_t *n;
            json_array_foreach(k->entries, j, n) sub +=
                (uint64_t)json_integer_value(json_object_get(n, "bytes"));
        } else {
            sub += k->own + k->subtree;
        }
    }
    if (s->up)
        dist_conn_send_json(
            s->up, VHPC_DIST_PROGRESS,
            json_pack("{s:I, s:I}", "own", (json_int_t)s->bytes_in, "sub", (json_int_t)sub));
    if (s == s->e->client && s->e->prog)
        vhpc_progress_set(s->e->prog, s->source ? sub : s->bytes_in);
}
