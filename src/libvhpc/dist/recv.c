/*
 * recv.c - the receiving side: a PUSH and its manifest arrive (from a
 * pusher, a parent node, or the node a pull asked), are checked (the
 * manifest hashes to the digest, the sender may write the name), and
 * start a session or continue the one under way (a sender that takes over
 * from a failed one); STATE says what is here already (re-hashed first);
 * then each CHUNK is CRC-checked, hashed in order, written into room made
 * for it (cache.c) and forwarded by the kids at once; a whole blob goes to
 * its commit.  A sender that goes away leaves the session waiting for
 * another.
 */
#include "crc32c.h"
#include "engine.h"
#include "progress.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void dist_handle_chunk(struct session *s, const unsigned char *p, size_t len)
{
    if (len < VHPC_DIST_CHUNK_HDR) {
        dist_session_fail(s, "a CHUNK frame of %zu bytes is too short", len);
        return;
    }
    uint32_t bi, want;
    uint64_t off;
    dist_chunk_header_get(p, &bi, &want, &off);
    const unsigned char *data = p + VHPC_DIST_CHUNK_HDR;
    size_t dlen = len - VHPC_DIST_CHUNK_HDR;
    if (bi >= s->nb) {
        dist_session_fail(s, "a chunk for blob %u, the image has %zu", bi, s->nb);
        return;
    }
    struct blob *b = &s->b[bi];
    if (b->state != B_RECV || off != b->have || dlen != dist_chunk_len(s, b, off) || dlen == 0) {
        dist_session_fail(s,
                          "an unexpected chunk (blob %.12s, offset %" PRIu64 ", %zu bytes; this "
                          "node has %" PRIu64 " of %" PRIu64 " bytes)",
                          b->digest, off, dlen, b->have, b->size);
        return;
    }
    if (vhpc_crc32c(0, data, dlen) != want) {
        dist_session_fail(s,
                          "the chunk at offset %" PRIu64 " of blob %.12s arrived damaged (its "
                          "CRC-32C differs from the sender's)",
                          off, b->digest);
        return;
    }
    if (dist_session_room(s, b, dlen) < 0)
        return;
    /* In order (off == have, checked above): the blob's hash so far. */
    vhpc_sha256_update(&b->full, data, dlen);
    b->full_off += dlen;
    for (size_t done = 0; done < dlen;) {
        ssize_t n = pwrite(b->w.fd, data + done, dlen - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            dist_session_fail(s, "writing blob %.12s into the store: %s", b->digest,
                              strerror(errno));
            return;
        }
        done += (size_t)n;
    }
    uint64_t k = off / s->chunk; /* < nchunks: off < size, checked above */
    b->crc[k] = want;
    b->crk[k] = 1;
    b->have += dlen;
    s->bytes_in += dlen;
    if (b->have == b->size) {
        dist_log(s->e, "image %.12s: %s blob %.12s received (%" PRIu64 " bytes, %.2f s)", s->digest,
                 b->role, b->digest, b->size, (double)(s->e->now - s->t0) / 1000);
        dist_commit_start(s, bi);
    }
    dist_session_kick(s);
}

static json_t *state_msg(struct session *s)
{
    json_t *have = json_array();
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        uint64_t h = b->have == b->size ? b->size : b->have / s->chunk * s->chunk;
        json_array_append_new(have, json_integer((json_int_t)h));
    }
    return json_pack("{s:o}", "have", have);
}

/* A new receiving session: verify what the store has, make room for the
 * rest, open files for it. */
static struct session *session_receive(struct engine *e, const struct dist_push_req *p,
                                       const char *manifest, size_t mlen, vhpc_err_t *err)
{
    struct session *s = dist_session_alloc(e);
    if (!s) {
        vhpc_err_set(err, -ENOMEM, "starting a transfer");
        return NULL;
    }
    snprintf(s->digest, sizeof(s->digest), "%s", p->digest);
    snprintf(s->name, sizeof(s->name), "%s", p->name);
    s->version = p->version;
    s->chunk = p->chunk;
    s->timeout_ms = p->timeout_ms;
    s->seq = p->seq;
    s->self = p->self;
    s->manifest = malloc(mlen + 1);
    int r = s->manifest ? 0 : vhpc_err_set(err, -ENOMEM, "receiving a manifest");
    if (r == 0) {
        memcpy(s->manifest, manifest, mlen);
        s->manifest[mlen] = 0;
        s->mlen = mlen;
        r = dist_manifest_blobs(manifest, mlen, &s->b, &s->nb, err);
    }
    if (r == 0)
        r = dist_check_chunking(s->b, s->nb, s->chunk, err);
    if (r == 0)
        r = dist_fds_admit(e, s->nb, err);
    /* What is here already counts only once re-hashed: a damaged blob is
     * removed by the check and received again. */
    uint64_t need = 0;
    for (size_t i = 0; r == 0 && i < s->nb; i++) {
        struct blob *b = &s->b[i];
        vhpc_err_t e2 = {0};
        b->state = B_GONE;
        if (vhpc_store_has_blob(e->st, b->digest)) {
            if (vhpc_store_verify_blob(e->st, b->digest, &e2) == 0)
                b->state = B_HAVE;
            else
                dist_log(e, "image %.12s: %s", s->digest, e2.msg);
        }
        if (b->state != B_HAVE)
            need += b->size;
    }
    if (r == 0)
        r = dist_check_room(e, s, need, err);
    /* Nothing is reserved or evicted yet: that happens as bytes arrive
     * (dist_session_room), so a sender that lies about sizes costs this node
     * only what it really sends. */
    for (size_t i = 0; r == 0 && i < s->nb; i++) {
        struct blob *b = &s->b[i];
        char p2[PATH_MAX];
        if (b->state == B_HAVE) {
            vhpc_store_blob_path(e->st, b->digest, p2, sizeof(p2));
            b->have = b->size;
        } else {
            r = vhpc_store_blob_begin(e->st, b->digest, b->size, &b->w, err);
            if (r < 0)
                break;
            b->state = B_RECV;
            vhpc_sha256_init(&b->full);
            b->full_off = 0;
            snprintf(p2, sizeof(p2), "%s", b->w.tmp);
            s->need += b->size;
        }
        b->rfd = open(p2, O_RDONLY | O_CLOEXEC);
        if (b->rfd < 0)
            r = vhpc_err_set(err, -errno, "opening %s", p2);
        else if (dist_blob_set_chunking(s, b) < 0)
            r = vhpc_err_set(err, -ENOMEM, "receiving");
        if (r == 0 && b->state == B_RECV && b->size == 0)
            dist_commit_start(s, i);
    }
    if (r < 0) {
        for (size_t i = 0; i < s->nb; i++)
            dist_blob_release(&s->b[i]);
        s->nb = 0;
        dist_session_release(s);
        return NULL;
    }
    return s;
}

/* Whether a PUSH on c may go on: it parses, its manifest is the image it
 * names, a server's sender may write that name, and a puller's node
 * answers with the image asked for.  Else c got an ERROR (or, a puller's,
 * is lost) and -1. */
static int push_ok(struct conn *c, json_t *pj, const char *manifest, size_t mlen,
                   struct dist_push_req *p)
{
    struct engine *e = c->e;
    vhpc_err_t err = {0};
    char hex[65];
    if (dist_push_parse(pj, p, &err) < 0) {
        dist_conn_send_error(c, err.msg);
        return -1;
    }
    dist_sha256_hex(manifest, mlen, hex);
    if (strcmp(hex, p->digest) != 0) {
        dist_conn_send_error(c, "the manifest does not hash to the image digest");
        return -1;
    }
    if (e->lfd >= 0 &&
        (dist_may_write(e, c->uid, p->name, &err) < 0 || dist_no_rebind(e, p, &err) < 0)) {
        dist_log(e, "image %.12s (%s:%d) from %s: %s", p->digest, p->name, p->version, c->peer,
                 err.msg);
        dist_conn_send_error(c, err.msg);
        return -1;
    }
    if (c->is_pull && dist_pull_refuse(c, p))
        return -1;
    return 0;
}

/* Session s (the same image) continues from c: its sender failed and c
 * takes over, or the image comes again.  -1 when c got an ERROR. */
static int take_over(struct session *s, struct conn *c, const struct dist_push_req *p)
{
    vhpc_err_t err = {0};
    if (s->up && s->up != c) {
        struct conn *old = s->up;
        dist_conn_send_error(old, "another sender took over this transfer");
        old->sess = NULL;
        old->role = R_LINGER;
    }
    if (p->chunk != s->chunk) {
        if (dist_check_chunking(s->b, s->nb, p->chunk, &err) < 0) {
            dist_conn_send_error(c, err.msg);
            return -1;
        }
        s->chunk = p->chunk;
        for (size_t i = 0; i < s->nb; i++) {
            struct blob *b = &s->b[i];
            if (b->state == B_RECV)
                b->have = b->have / s->chunk * s->chunk;
            if (dist_blob_set_chunking(s, b) < 0) {
                dist_conn_send_error(c, "out of memory");
                dist_session_fail(s, "re-chunking: out of memory");
                return -1;
            }
        }
    }
    s->timeout_ms = p->timeout_ms;
    s->self = p->self;
    s->orphan_since = 0;
    dist_log(s->e, "image %.12s: %s takes over sending", s->digest, c->peer);
    return 0;
}

/* A new transfer from c, if this node admits it; NULL when c got an
 * ERROR. */
static struct session *start_session(struct conn *c, const struct dist_push_req *p,
                                     const char *manifest, size_t mlen)
{
    struct engine *e = c->e;
    vhpc_err_t err = {0};
    struct session *s = NULL;
    if (dist_session_admit(e, &err) == 0)
        s = session_receive(e, p, manifest, mlen, &err);
    if (!s) {
        dist_log(e, "image %.12s from %s: %s", p->digest, c->peer, err.msg);
        dist_conn_send_error(c, err.msg);
        return NULL;
    }
    s->uid = c->uid;
    dist_log(e, "image %.12s (%s:%d) from %s: %zu blobs, %" PRIu64 " bytes to receive", s->digest,
             s->name, s->version, c->peer, s->nb, s->need);
    if (e->pull_ref && !e->client) {
        e->client = s;
        if (e->prog)
            e->prog->total = s->need;
    }
    return s;
}

void dist_handle_push(struct conn *c, json_t *pj, const char *manifest, size_t mlen)
{
    struct engine *e = c->e;
    struct dist_push_req p;
    if (push_ok(c, pj, manifest, mlen, &p) < 0)
        return;
    struct session *s = dist_session_find(e, p.digest);
    if (s && e->lfd >= 0 && s->uid != c->uid && !dist_privileged(e, c->uid)) {
        dist_conn_send_error(c, "this image is under way for another user");
        return;
    }
    if (s ? take_over(s, c, &p) < 0 : !(s = start_session(c, &p, manifest, mlen)))
        return;
    s->up = c;
    c->sess = s;
    c->role = R_UP;
    /* Align what we have with the sender's chunks. */
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        if (b->state == B_RECV)
            b->have = b->have / s->chunk * s->chunk;
    }
    dist_conn_send_json(c, VHPC_DIST_STATE, state_msg(s));
    size_t i;
    json_t *ch;
    json_array_foreach(p.children, i, ch) dist_kid_add(s, ch);
    int all = 1;
    for (size_t j = 0; j < s->nb; j++)
        all &= s->b[j].state == B_HAVE;
    if (all && s->own == 0)
        dist_session_finish_own(s);
    dist_session_progress(s);
}

void dist_recv_lost(struct session *s, struct conn *c, const char *why)
{
    /* Room only for what it has: the blocks allocated ahead go back. */
    s->reserved = s->tmp_bytes;
    for (size_t i = 0; i < s->nb; i++) {
        struct blob *b = &s->b[i];
        if (b->state == B_RECV && b->have < b->size)
            fallocate(b->w.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)b->have,
                      (off_t)(b->size - b->have));
    }
    if (!s->reported && s->own != -1) {
        dist_log(s->e, "image %.12s: lost the sender %s (%s); waiting for another", s->digest,
                 c->peer, why);
        s->orphan_since = s->e->now;
    }
}
