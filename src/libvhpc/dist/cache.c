/*
 * cache.c - the node's store as a cache, for the engine: the room a
 * transfer needs (checked against the budget and the file system when a
 * PUSH arrives, then made as CRC-checked bytes arrive, evicting the least
 * recently used images), received blobs committed to the store by a thread
 * each (the store re-checks their hash, the loop keeps forwarding), the
 * manifest and name recorded once every blob is in (never waiting for the
 * store's lock in the loop), and images re-hashed before they are served.
 */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

struct commit_job {
    struct session *s;
    size_t bi;
    struct vhpc_blob_writer w;
    char hex[65]; /* the sha256 of the bytes written, in order */
    struct vhpc_store *st;
    int r;
    vhpc_err_t err;
    int wake;
};

static void *commit_thread(void *arg)
{
    struct commit_job *j = arg;
    /* Committing (close, rename, maybe waiting for the store's lock) is
     * nobody's critical path; forwarding chunks (which the nodes below wait
     * for) is: let the loop have the CPU first. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    j->r = vhpc_store_blob_commit_hashed(j->st, &j->w, j->hex, &j->err);
    while (write(j->wake, &j, sizeof(j)) < 0 && errno == EINTR)
        ;
    return NULL;
}

void dist_commit_start(struct session *s, size_t bi)
{
    struct blob *b = &s->b[bi];
    struct commit_job *j = calloc(1, sizeof(*j));
    pthread_t t;
    pthread_attr_t at;
    if (!j) {
        dist_session_fail(s, "committing blob %.12s: out of memory", b->digest);
        return;
    }
    j->s = s;
    j->bi = bi;
    j->w = b->w;
    /* The loop hashed every chunk as it wrote it (in order); a blob must be
     * whole before it commits, so the hash is the blob's. */
    if (b->full_off != b->size) {
        free(j);
        dist_session_fail(s, "blob %.12s: %" PRIu64 " of %" PRIu64 " bytes hashed at commit",
                          b->digest, b->full_off, b->size);
        return;
    }
    vhpc_sha256_hex(&b->full, j->hex);
    /* Its bytes leave the room of blobs being received: session_tmp
     * counts them until they are in blobs/ (the store's usage). */
    s->tmp_bytes -= b->size < s->tmp_bytes ? b->size : s->tmp_bytes;
    s->reserved -= b->size < s->reserved ? b->size : s->reserved;
    j->st = s->e->st;
    j->wake = s->e->wake[1];
    b->state = B_COMMIT;
    s->pending++;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &at, commit_thread, j);
    pthread_attr_destroy(&at);
    if (r) {
        s->pending--;
        b->state = B_RECV;
        free(j);
        dist_session_fail(s, "committing blob %.12s: %s", b->digest, strerror(r));
    }
}

void dist_session_finish_own(struct session *s)
{
    struct engine *e = s->e;
    vhpc_err_t err = {0};
    /* Never wait for the store's lock in the loop (every other client
     * would wait too): try, and again from the engine's timers for
     * LOCK_WAIT_MS. */
    int r = vhpc_store_trylock(e->st, &err);
    if (r == -EWOULDBLOCK) {
        if (!s->lock_wait) {
            s->lock_wait = e->now;
            dist_log(e, "image %.12s: %s; waiting up to %d s", s->digest, err.msg,
                     LOCK_WAIT_MS / 1000);
        }
        if (e->now - s->lock_wait < LOCK_WAIT_MS)
            return;
        dist_session_fail(s, "storing image %.12s: %s for %d s; try again once it is released",
                          s->digest, err.msg, LOCK_WAIT_MS / 1000);
        return;
    }
    s->lock_wait = 0;
    if (r == 0) {
        r = vhpc_store_put_manifest_raw(e->st, s->digest, s->manifest, s->mlen, &err);
        if (r == 0 && s->name[0])
            r = vhpc_store_bind(e->st, s->name, s->version, s->digest, NULL, &err);
        vhpc_store_unlock(e->st);
    }
    if (r < 0) {
        dist_session_fail(s, "storing image %.12s: %s", s->digest, err.msg);
        return;
    }
    vhpc_store_touch(e->st, s->digest);
    s->own = 1;
    s->t_done = e->now;
    if (s->need)
        dist_log(e, "image %.12s (%s:%d): received %" PRIu64 " bytes in %.2f s", s->digest, s->name,
                 s->version, s->bytes_in, (double)(s->t_done - s->t0) / 1000);
}

static void on_commit_done(struct commit_job *j)
{
    struct session *s = j->s;
    struct blob *b = &s->b[j->bi];
    s->pending--;
    b->w.fd = -1;
    b->w.tmp[0] = 0;
    if (s->dead) {
        b->state = B_GONE;
        return;
    }
    if (j->r < 0) {
        b->state = B_GONE;
        dist_session_fail(s, "%s", j->err.msg);
        return;
    }
    b->state = B_HAVE;
    for (size_t i = 0; i < s->nb; i++)
        if (s->b[i].state != B_HAVE)
            return;
    dist_session_finish_own(s);
    dist_session_progress(s);
}

void dist_commits_reap(struct engine *e)
{
    struct commit_job *j;
    while (read(e->wake[0], &j, sizeof(j)) == sizeof(j)) {
        on_commit_done(j);
        free(j);
    }
}

#define RESERVE_STEP (16u << 20) /* room made at a time */

/* Bytes a session holds outside blobs/ (what the store's usage does not
 * count yet): blobs being received, and those committing until their
 * rename. */
static uint64_t session_tmp(const struct session *o)
{
    uint64_t t = 0;
    for (size_t i = 0; i < o->nb; i++) {
        const struct blob *b = &o->b[i];
        if (b->state == B_RECV)
            t += b->have;
        else if (b->state == B_COMMIT && !vhpc_store_has_blob(o->e->st, b->digest))
            t += b->size;
    }
    return t;
}

/* Make room for dlen more bytes of blob b before they are written: within
 * the cache budget (evicting least recently used images, a step at a
 * time) and the store's free space, the blocks allocated ahead (writing
 * into allocated blocks costs half of ext4's delayed allocation).  Only
 * bytes that arrived, CRC-checked, get room: a size a sender declares
 * reserves and evicts nothing.  -1 when the session failed. */
int dist_session_room(struct session *s, struct blob *b, size_t dlen)
{
    struct engine *e = s->e;
    if (s->tmp_bytes + dlen <= s->reserved) {
        s->tmp_bytes += dlen;
        return 0;
    }
    uint64_t step = dlen > RESERVE_STEP ? dlen : RESERVE_STEP, pending = 0;
    if (step > b->size - b->have)
        step = b->size - b->have;
    if (step < dlen)
        step = dlen;
    for (struct session *o = e->sessions; o; o = o->next)
        if (!o->dead && !o->source)
            pending += session_tmp(o) + (o == s ? 0 : o->reserved - o->tmp_bytes);
    uint64_t budget = vhpc_store_budget(e->st);
    vhpc_err_t err = {0};
    if (budget && vhpc_store_usage(e->st) + pending + step > budget) {
        struct vhpc_gc_stats gs = {0};
        int r = vhpc_store_trylock(e->st, &err);
        if (r == 0) {
            r = vhpc_store_make_room(e->st, pending + step, s->digest, &gs, &err);
            vhpc_store_unlock(e->st);
        }
        if (gs.images)
            dist_log(e, "evicted %u images (%" PRIu64 " bytes) to make room", gs.images, gs.bytes);
        if (r < 0) {
            dist_session_fail(s, "no room for image %.12s: %s", s->digest, err.msg);
            return -1;
        }
    }
    if (fallocate(b->w.fd, 0, (off_t)b->have, (off_t)step) < 0 && errno == ENOSPC) {
        dist_session_fail(s, "no room for blob %.12s (%" PRIu64 " bytes) in %s", b->digest, b->size,
                          vhpc_store_dir(e->st));
        return -1;
    }
    s->reserved = s->tmp_bytes + step;
    s->tmp_bytes += dlen;
    return 0;
}

/* Whether `need` more bytes can fit at all: within the cache budget and
 * the store's file system (before anything is reserved or evicted). */
int dist_check_room(struct engine *e, const struct session *s, uint64_t need, vhpc_err_t *err)
{
    uint64_t budget = vhpc_store_budget(e->st);
    struct statvfs sv;
    if (budget && need > budget)
        return vhpc_err_setmsg(err, -ENOSPC,
                               "image %.12s needs %" PRIu64 " bytes, more than the cache budget "
                               "of %" PRIu64 " bytes (raise it with --budget)",
                               s->digest, need, budget);
    if (statvfs(vhpc_store_dir(e->st), &sv) == 0 && need / sv.f_frsize >= (uint64_t)sv.f_bavail)
        return vhpc_err_setmsg(
            err, -ENOSPC, "image %.12s needs %" PRIu64 " bytes, %s has %" PRIu64 " free", s->digest,
            need, vhpc_store_dir(e->st), (uint64_t)sv.f_bavail * sv.f_frsize);
    return 0;
}

int dist_store_blob_check(struct engine *e, const struct blob *b, int verify, vhpc_err_t *err)
{
    if (!vhpc_store_has_blob(e->st, b->digest))
        return vhpc_err_setmsg(err, -ENOENT, "its %s blob %.12s is missing here", b->role,
                               b->digest);
    return verify ? vhpc_store_verify_blob(e->st, b->digest, err) : 0;
}

int dist_resolve_verified(struct engine *e, const char *ref, struct vhpc_ref *out, vhpc_err_t *err)
{
    int r = vhpc_store_resolve(e->st, ref, out, err);
    if (r < 0)
        return r;
    struct session tmp = {.e = e, .chunk = 1 << 20};
    r = vhpc_store_get_manifest_raw(e->st, out->digest, &tmp.manifest, &tmp.mlen, err);
    if (r == 0)
        r = dist_manifest_blobs(tmp.manifest, tmp.mlen, &tmp.b, &tmp.nb, err);
    for (size_t i = 0; r == 0 && i < tmp.nb; i++) {
        r = dist_store_blob_check(e, &tmp.b[i], 1, err);
    }
    free(tmp.b);
    free(tmp.manifest);
    if (r < 0)
        vhpc_err_wrap(err, "image %s", ref);
    return r;
}
