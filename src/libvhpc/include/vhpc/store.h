/*
 * vhpc/store.h - the image store: content-addressed, immutable, versioned.
 *
 * An image is a manifest (JSON) plus the blobs it names (kernel, initramfs,
 * root file system).  Blobs are stored by the SHA-256 of their bytes, the
 * manifest by the SHA-256 of its bytes, and that is the image's digest: the
 * digest covers everything that is booted.  Names are references kept
 * apart from the content: "name:version" points at a digest, a build of a
 * name whose digest is new gets the next version, the old versions stay
 * until removed.  Tagging an image under another name changes no digest.
 *
 * Layout (<root> = $VHPC_HOME, else /var/lib/vhpc for root -- the system
 * store -- and $XDG_DATA_HOME/vhpc or ~/.local/share/vhpc for any other
 * user; a node cache is a store at another root):
 *   <root>/store/blobs/<sha256>        a blob, mode 0400 (0444 published),
 *                                      never rewritten
 *   <root>/store/images/<digest>.json  a manifest (digest = sha256 of the file),
 *                                      0400 (0444 published)
 *   <root>/store/refs.json             {"name": [{"version": 1, "digest": ..,
 *                                        "created": <unix s>}, ...], ...}
 *   <root>/store/refs.json.prev        the index before its last change
 *   <root>/store/used/<digest>         empty; its mtime is the image's last use
 *   <root>/store/budget                optional: the size budget in bytes
 *   <root>/store/tmp/                  blobs and builds in progress (0700)
 *   <root>/store/lock                  flock(2): held by every writer (0600)
 * Who can read what: a user's own store has 0700 directories and 0600
 * index files.  The system store (root's) has 0755 directories and a 0644
 * index (names are visible), but blobs and manifests are 0400 unless root
 * published them (`vhpc image build --public`, vhpc_store_publish): what a
 * build put in an image (--env API_TOKEN=...) is in its initramfs and its
 * manifest, so it is only shared when asked for.
 * The index is written durably (temporary file, fsync, rename, fsync of
 * the directory) and one that cannot be read or parsed is an error, never
 * an empty store: gc removes nothing then.
 *
 * Manifest (keys sorted, compact, so the same content gives the same bytes):
 *   {"schema": 1, "kind": "minimal"|"full", "os": "debian-12",
 *    "arch": "x86_64", "kernel": "6.1.0-56-cloud-amd64",
 *    "blobs": {"kernel": {"digest": .., "size": ..}, "initrd": {..},
 *              "rootfs": {.., "format": "squashfs"}},        (full only)
 *    "size": <sum of blob sizes>,
 *    "packages": {"openmpi-bin": {"version": "4.1.4-3", "source": "openmpi",
 *                                 "source_version": "4.1.4-3"}, ..},
 *    "libs": ["libc.so.6", ..],          (sonames in the image)
 *    "parent": <digest> | null,          (the image this one was made from)
 *    "inputs": {..}, "inputs_digest": <sha256 of the canonical inputs>, ..}
 * Other keys are allowed (kept as they are).  "inputs_digest" lets a build
 * find an image made from the same inputs without building again.
 */
#ifndef VHPC_PUBLIC_STORE_H
#define VHPC_PUBLIC_STORE_H

#include "error.h"
#include "vhpc/util.h"

#include <jansson.h>
#include <limits.h>
#include <stdint.h>

struct vhpc_store;

/* Open (creating the directories) the store under root, or under
 * $VHPC_HOME / /var/lib/vhpc when root is NULL. */
int vhpc_store_open(const char *root, struct vhpc_store **out, vhpc_err_t *err);
void vhpc_store_close(struct vhpc_store *st);
const char *vhpc_store_dir(const struct vhpc_store *st); /* <root>/store */

/* Writers hold the store's lock (a flock on <root>/store/lock) around
 * changes that must not interleave: a build or transfer from its last blob
 * to its tag, refs, removal, eviction.  Waits at most $VHPC_LOCK_TIMEOUT
 * seconds (default 600), then -ETIMEDOUT naming the file and the pid that
 * holds it; nests within one handle. */
int vhpc_store_lock(struct vhpc_store *st, vhpc_err_t *err);
void vhpc_store_unlock(struct vhpc_store *st);
/* vhpc_set_lock_notice (vhpc/util.h): called once when a lock (the
 * store's or the kernel cache's) is busy, with "waiting for the store lock
 * <path> held by pid N..." (the CLI prints it; the library does not). */
/* From now on, blobs and manifests this process stores are readable by
 * every user (0444; an existing one of ours is made so).  For root
 * publishing into the system store; off by default. */
void vhpc_store_publish(int on);
/* The same without waiting: -EWOULDBLOCK (with a message) when another
 * process holds it.  For event loops that must keep answering. */
int vhpc_store_trylock(struct vhpc_store *st, vhpc_err_t *err);

/* ---- blobs ---- */

int vhpc_is_digest(const char *s); /* 64 lowercase hex digits */
/* The path a blob has (or would have). */
void vhpc_store_blob_path(const struct vhpc_store *st, const char *digest, char *path, size_t len);
int vhpc_store_has_blob(const struct vhpc_store *st, const char *digest);
/* Put a file into the store as a blob: hashes it, then renames it in
 * (move != 0, same file system) or copies it.  Already present: kept. */
int vhpc_store_add_blob(struct vhpc_store *st, const char *src, int move, char digest[65],
                        uint64_t *size, vhpc_err_t *err);
/* Receiving a blob whose digest is known (transfers): begin gives an fd on
 * a temporary file in <root>/store/tmp; write the bytes in any order
 * (pwrite); commit checks size and sha256 and renames it in (-EBADMSG and
 * nothing stored on mismatch); abort discards it. */
struct vhpc_blob_writer {
    int fd;
    char digest[65];
    uint64_t size;
    char tmp[PATH_MAX];
};
int vhpc_store_blob_begin(struct vhpc_store *st, const char *digest, uint64_t size,
                          struct vhpc_blob_writer *w, vhpc_err_t *err);
int vhpc_store_blob_commit(struct vhpc_store *st, struct vhpc_blob_writer *w, vhpc_err_t *err);
/* The same when the caller hashed exactly the bytes it wrote, in order, as
 * it wrote them: hex (their sha256) must equal the digest; no second pass
 * over the file. */
int vhpc_store_blob_commit_hashed(struct vhpc_store *st, struct vhpc_blob_writer *w,
                                  const char *hex, vhpc_err_t *err);
void vhpc_store_blob_abort(struct vhpc_blob_writer *w);
/* Re-hash a stored blob; a damaged one is removed and -EBADMSG returned. */
int vhpc_store_verify_blob(struct vhpc_store *st, const char *digest, vhpc_err_t *err);

/* ---- manifests ---- */

/* Store a manifest (canonicalised: sorted keys, compact) and return its
 * digest.  Every blob it names must be present (-ENOENT otherwise). */
int vhpc_store_put_manifest(struct vhpc_store *st, json_t *manifest, char digest[65],
                            vhpc_err_t *err);
/* Store manifest bytes received from elsewhere; they must hash to digest. */
int vhpc_store_put_manifest_raw(struct vhpc_store *st, const char *digest, const char *text,
                                size_t len, vhpc_err_t *err);
/* The manifest of an image (new reference; json_decref it), or its bytes. */
int vhpc_store_get_manifest(const struct vhpc_store *st, const char *digest, json_t **out,
                            vhpc_err_t *err);
int vhpc_store_get_manifest_raw(const struct vhpc_store *st, const char *digest, char **text,
                                size_t *len, vhpc_err_t *err);
/* Call fn for every (blob role, digest, size) of a manifest. */
int vhpc_manifest_blobs(json_t *manifest,
                        int (*fn)(const char *role, const char *digest, uint64_t size, void *arg),
                        void *arg, vhpc_err_t *err);
/* Every image (manifest) in the store. */
int vhpc_store_images(const struct vhpc_store *st, int (*fn)(const char *digest, void *arg),
                      void *arg, vhpc_err_t *err);
/* An image made from inputs with this digest, if any (newest version). */
int vhpc_store_find_inputs(const struct vhpc_store *st, const char *inputs_digest, char digest[65]);

/* ---- names and versions ---- */

struct vhpc_ref {
    char name[128];
    int version;
    char digest[65];
    int64_t created; /* unix seconds */
};
int vhpc_valid_name(const char *s); /* [A-Za-z0-9._-], 1..127, not starting with '.' */
/* Point name at digest.  version 0: the next version of the name unless
 * its newest version is already this digest (then nothing changes);
 * otherwise that exact version (replacing what it pointed at).  The
 * resulting ref is written to *out (may be NULL). */
int vhpc_store_tag(struct vhpc_store *st, const char *name, int version, const char *digest,
                   struct vhpc_ref *out, vhpc_err_t *err);
/* The same, but never rebinding an existing name:version (version >= 1):
 * 0 when bound now, 1 when it already pointed at digest (nothing changes),
 * -EEXIST with a message naming the digest it points at otherwise.
 * version 0 is vhpc_store_tag's "next version". */
int vhpc_store_bind(struct vhpc_store *st, const char *name, int version, const char *digest,
                    struct vhpc_ref *out, vhpc_err_t *err);
/* Resolve "name" (its newest version), "name:version", "name@digestprefix",
 * or a digest prefix (>= 4 hex digits, unique).  -ENOENT with a message
 * that says what exists; -EINVAL for an ambiguous prefix. */
int vhpc_store_resolve(const struct vhpc_store *st, const char *ref, struct vhpc_ref *out,
                       vhpc_err_t *err);
/* Remove refs: "name" (all its versions), "name:version", or a digest
 * (every ref to it).  The content stays (vhpc_store_remove frees it). */
int vhpc_store_untag(struct vhpc_store *st, const char *ref, int *removed, vhpc_err_t *err);
/* Every ref, by name then version. */
int vhpc_store_refs(const struct vhpc_store *st, int (*fn)(const struct vhpc_ref *r, void *arg),
                    void *arg, vhpc_err_t *err);

/* ---- use, budget, gc ---- */

/* Mark an image used now (LRU order for eviction). */
void vhpc_store_touch(struct vhpc_store *st, const char *digest);
/* The budget in bytes (0 = none). */
uint64_t vhpc_store_budget(const struct vhpc_store *st);
int vhpc_store_set_budget(struct vhpc_store *st, uint64_t bytes, vhpc_err_t *err);
struct vhpc_gc_stats {
    unsigned images, blobs, tmp; /* removed */
    uint64_t bytes;              /* freed */
};
/* untag, then remove the images that lost their last ref and the blobs
 * only they used (`vhpc image rm`). */
int vhpc_store_remove(struct vhpc_store *st, const char *ref, int *removed,
                      struct vhpc_gc_stats *stats, vhpc_err_t *err);
/* Remove images no ref points at and blobs no manifest names, once they
 * are VHPC_GC_GRACE_S old (younger ones may be a build or transfer that has
 * not tagged its image yet), and leftovers in tmp/ older than an hour. */
#define VHPC_GC_GRACE_S 3600
int vhpc_store_gc(struct vhpc_store *st, struct vhpc_gc_stats *stats, vhpc_err_t *err);
/* Make room for `need` more bytes within the budget: evict whole images,
 * least recently used first (their refs too), never `keep` (may be NULL).
 * -ENOSPC when even evicting everything else is not enough. */
int vhpc_store_make_room(struct vhpc_store *st, uint64_t need, const char *keep,
                         struct vhpc_gc_stats *stats, vhpc_err_t *err);
/* Bytes used by blobs. */
uint64_t vhpc_store_usage(const struct vhpc_store *st);

#endif
