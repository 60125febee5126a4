/*
 * blob.c - a session's blobs: the list a manifest names, in the order every
 * side sends them (largest first) and within the protocol's limits (blobs
 * per image, bytes per blob, chunks per image), and each blob's chunks: their
 * length and their CRC-32C, known when received with the chunk or computed
 * from the blob's file when it goes out (hashing a store blob that was not
 * verified on the way).
 */
#include "crc32c.h"
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint32_t dist_chunk_len(const struct session *s, const struct blob *b, uint64_t off)
{
    uint64_t left = b->size - off;
    return left < s->chunk ? (uint32_t)left : s->chunk;
}

/* The chunks of an image at chunk size `chunk`; -E2BIG (with a message)
 * past the protocol's limits.  Every blob's size was bounded by
 * VHPC_DIST_MAX_BLOB when its manifest was read (collect_blob), so the sum
 * cannot overflow. */
int dist_check_chunking(const struct blob *b, size_t nb, uint32_t chunk, vhpc_err_t *err)
{
    uint64_t n = 0;
    for (size_t i = 0; i < nb; i++) {
        if (b[i].size > VHPC_DIST_MAX_BLOB)
            return vhpc_err_setmsg(err, -E2BIG,
                                   "blob %.12s (%s) claims %" PRIu64
                                   " bytes, more than the protocol's limit of %llu",
                                   b[i].digest, b[i].role, b[i].size, VHPC_DIST_MAX_BLOB);
        n += (b[i].size + chunk - 1) / chunk;
    }
    if (n > VHPC_DIST_MAX_CHUNKS)
        return vhpc_err_setmsg(err, -E2BIG,
                               "the image is %" PRIu64 " chunks of %u bytes, more than the "
                               "protocol's limit of %llu; push it with a larger --chunk",
                               n, chunk, VHPC_DIST_MAX_CHUNKS);
    return 0;
}

int dist_blob_set_chunking(struct session *s, struct blob *b)
{
    free(b->crc);
    free(b->crk);
    b->crc = NULL;
    b->crk = NULL;
    if (b->size > VHPC_DIST_MAX_BLOB)
        return -E2BIG; /* dist_check_chunking said why */
    b->nchunks = (b->size + s->chunk - 1) / s->chunk;
    if (b->nchunks > VHPC_DIST_MAX_CHUNKS)
        return -E2BIG;
    b->crc = calloc(b->nchunks ? (size_t)b->nchunks : 1, sizeof(*b->crc));
    b->crk = calloc(b->nchunks ? (size_t)b->nchunks : 1, 1);
    return b->crc && b->crk ? 0 : -ENOMEM;
}

/* A store blob not verified yet is hashed as its chunks' checksums are
 * computed, in order (check_full). */
int dist_chunk_sum(struct session *s, struct blob *b, uint64_t k, uint32_t *out)
{
    if (k >= b->nchunks)
        return -EINVAL;
    if (b->crk[k]) {
        *out = b->crc[k];
        return 0;
    }
    uint64_t off = (uint64_t)k * s->chunk;
    uint32_t len = dist_chunk_len(s, b, off);
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    for (uint32_t done = 0; done < len;) {
        ssize_t n = pread(b->rfd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return n < 0 ? -errno : -EIO;
        }
        done += (uint32_t)n;
    }
    b->crc[k] = vhpc_crc32c(0, buf, len);
    b->crk[k] = 1;
    if (b->check_full && b->full_off == off) {
        vhpc_sha256_update(&b->full, buf, len);
        b->full_off += len;
        if (b->full_off == b->size) {
            char hex[65];
            vhpc_sha256_hex(&b->full, hex);
            b->check_full = 0;
            if (strcmp(hex, b->digest) != 0) {
                free(buf);
                return -EBADMSG;
            }
        }
    }
    free(buf);
    *out = b->crc[k];
    return 0;
}

void dist_blob_release(struct blob *b)
{
    if (b->state == B_RECV)
        vhpc_store_blob_abort(&b->w);
    if (b->rfd >= 0)
        close(b->rfd);
    b->rfd = -1;
    free(b->crc);
    free(b->crk);
    b->crc = NULL;
    b->crk = NULL;
}

struct blob_list {
    struct blob *b;
    size_t n;
    vhpc_err_t *err;
};

static int collect_blob(const char *role, const char *digest, uint64_t size, void *arg)
{
    struct blob_list *l = arg;
    if (l->n >= VHPC_DIST_MAX_BLOBS)
        return vhpc_err_setmsg(l->err, -E2BIG,
                               "the manifest names more than %d blobs (the protocol's limit)",
                               VHPC_DIST_MAX_BLOBS);
    if (size > VHPC_DIST_MAX_BLOB)
        return vhpc_err_setmsg(l->err, -E2BIG,
                               "the manifest's %s blob claims %" PRIu64
                               " bytes, more than the protocol's limit of %llu",
                               role, size, VHPC_DIST_MAX_BLOB);
    struct blob *b = &l->b[l->n++];
    memset(b, 0, sizeof(*b));
    snprintf(b->role, sizeof(b->role), "%s", role);
    snprintf(b->digest, sizeof(b->digest), "%s", digest);
    b->size = size;
    b->rfd = -1;
    return 0;
}

/* Largest first (then by role): a receiver re-hashes each blob when it
 * commits it, and that of the big root file system then overlaps with the
 * transfer of the small kernel and initramfs instead of trailing it. */
static int cmp_blob(const void *x, const void *y)
{
    const struct blob *a = x, *b = y;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    return strcmp(a->role, b->role);
}

int dist_manifest_blobs(const char *text, size_t len, struct blob **out, size_t *n, vhpc_err_t *err)
{
    json_error_t je;
    json_t *m = json_loadb(text, len, 0, &je);
    if (!json_is_object(m)) {
        json_decref(m);
        return vhpc_err_setmsg(err, -EBADMSG, "the manifest is not a JSON object (%s)", je.text);
    }
    struct blob_list l = {calloc(VHPC_DIST_MAX_BLOBS, sizeof(struct blob)), 0, err};
    if (!l.b) {
        json_decref(m);
        return vhpc_err_set(err, -ENOMEM, "reading a manifest");
    }
    int r = vhpc_manifest_blobs(m, collect_blob, &l, err);
    json_decref(m);
    if (r < 0) {
        free(l.b);
        return r;
    }
    qsort(l.b, l.n, sizeof(*l.b), cmp_blob);
    *out = l.b;
    *n = l.n;
    return 0;
}
