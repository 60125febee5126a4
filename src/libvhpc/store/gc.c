/*
 * gc.c - what the store frees, and when (store.h: "use, budget, gc"): use
 * stamps for least-recently-used eviction, the size budget of a node
 * cache, removing an image with the blobs only it used, and gc of what no
 * ref reaches.  Nothing is freed unless every manifest could be read: what
 * an unreadable one names is unknown.
 */
#include "store_int.h"

#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- use, budget, gc ---------------------------------------------------- */

void vhpc_store_touch(struct vhpc_store *st, const char *digest)
{
    char p[PATH_MAX];
    if (!vhpc_is_digest(digest))
        return;
    snprintf(p, sizeof(p), "%s/used/%s", st->dir, digest);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        futimens(fd, NULL);
        close(fd);
    }
}

static int64_t last_use(const struct vhpc_store *st, const char *digest)
{
    char p[PATH_MAX];
    struct stat sb;
    snprintf(p, sizeof(p), "%s/used/%s", st->dir, digest);
    if (stat(p, &sb) == 0)
        return (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    vhpc__store_manifest_path(st, digest, p, sizeof(p));
    if (stat(p, &sb) == 0)
        return (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    return 0;
}

uint64_t vhpc_store_budget(const struct vhpc_store *st)
{
    char p[PATH_MAX], buf[32] = "";
    snprintf(p, sizeof(p), "%s/budget", st->dir);
    FILE *f = fopen(p, "re");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof(buf), f))
        buf[0] = 0;
    fclose(f);
    return strtoull(buf, NULL, 10);
}

int vhpc_store_set_budget(struct vhpc_store *st, uint64_t bytes, vhpc_err_t *err)
{
    char p[PATH_MAX], buf[32];
    snprintf(p, sizeof(p), "%s/budget", st->dir);
    if (!bytes) {
        unlink(p);
        return 0;
    }
    int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", bytes);
    return vhpc__write_file_sync(p, buf, (size_t)n, vhpc__store_index_mode(st), NULL, err);
}

uint64_t vhpc_store_usage(const struct vhpc_store *st)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/blobs", st->dir);
    DIR *d = opendir(p);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat sb;
        if (vhpc_is_digest(de->d_name) && fstatat(dirfd(d), de->d_name, &sb, 0) == 0)
            total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

static int collect_cb(const char *digest, void *arg)
{
    return vhpc__digests_add(arg, digest);
}

static int collect_blob(const char *role, const char *digest, uint64_t size, void *arg)
{
    (void)role;
    (void)size;
    return vhpc__digests_add(arg, digest);
}

static int collect_ref(const struct vhpc_ref *r, void *arg)
{
    return vhpc__digests_add(arg, r->digest);
}

/* The blobs every image in the store but `skip` names, into *blobs.  A
 * manifest that cannot be read or parsed is an error (naming it): what it
 * names is unknown, so nothing may be freed on its account. */
static int all_blobs(struct vhpc_store *st, const char *skip, struct vhpc__digests *blobs,
                     vhpc_err_t *err)
{
    struct vhpc__digests images = {0};
    int r = vhpc_store_images(st, collect_cb, &images, err);
    for (size_t i = 0; r == 0 && i < images.n; i++) {
        json_t *m;
        if (skip && !strcmp(images.d[i], skip))
            continue;
        if ((r = vhpc_store_get_manifest(st, images.d[i], &m, err)) == 0) {
            r = vhpc_manifest_blobs(m, collect_blob, blobs, err);
            json_decref(m);
        }
        if (r < 0) {
            char p[PATH_MAX];
            vhpc__store_manifest_path(st, images.d[i], p, sizeof(p));
            vhpc_err_wrap(err,
                          "no blob was freed: the manifest %s cannot be used (remove that image "
                          "with vhpc image rm %.12s, or rebuild or pull it)",
                          p, images.d[i]);
        }
    }
    free(images.d);
    return r;
}

/* Remove an image's manifest and the blobs of it no other image names
 * (the lock is held).  Nothing is removed unless every other manifest
 * could be read. */
static int drop_image(struct vhpc_store *st, const char *digest, struct vhpc_gc_stats *stats,
                      vhpc_err_t *err)
{
    struct vhpc__digests mine = {0}, others = {0};
    json_t *m;
    vhpc_err_t e2 = {0};
    char p[PATH_MAX];
    int r = all_blobs(st, digest, &others, err);
    if (r < 0)
        goto out;
    /* Its own manifest may be the damaged one: then only it goes. */
    if (vhpc_store_get_manifest(st, digest, &m, &e2) == 0) {
        if (vhpc_manifest_blobs(m, collect_blob, &mine, &e2) < 0)
            mine.n = 0;
        json_decref(m);
    }
    vhpc__store_manifest_path(st, digest, p, sizeof(p));
    if (unlink(p) == 0)
        stats->images++;
    snprintf(p, sizeof(p), "%s/used/%.64s", st->dir, digest);
    unlink(p);
    for (size_t i = 0; i < mine.n; i++) {
        struct stat sb;
        if (vhpc__digests_has(&others, mine.d[i]))
            continue;
        vhpc_store_blob_path(st, mine.d[i], p, sizeof(p));
        if (stat(p, &sb) == 0 && unlink(p) == 0) {
            stats->blobs++;
            stats->bytes += (uint64_t)sb.st_size;
        }
    }
out:
    free(mine.d);
    free(others.d);
    return r;
}

static int is_old(int dirfd_, const char *name, time_t now, int64_t grace, struct stat *sb)
{
    return fstatat(dirfd_, name, sb, AT_SYMLINK_NOFOLLOW) == 0 && now - sb->st_mtime >= grace;
}

/* gc with the lock held.  Unreferenced manifests and blobs younger than
 * `grace` seconds are kept: they may belong to a build or a transfer that
 * has not tagged its image yet. */
static int gc_locked(struct vhpc_store *st, struct vhpc_gc_stats *stats, int64_t grace,
                     vhpc_err_t *err)
{
    struct vhpc__digests refd = {0}, images = {0}, blobs = {0}, drop = {0};
    time_t now = time(NULL);
    char p[PATH_MAX];
    int r;
    /* Everything is read first: an index or a manifest that cannot be read
     * stops gc before it removes anything. */
    if ((r = vhpc_store_refs(st, collect_ref, &refd, err)) < 0 ||
        (r = vhpc_store_images(st, collect_cb, &images, err)) < 0)
        goto out;
    for (size_t i = 0; i < images.n; i++) {
        json_t *m;
        struct stat sb;
        vhpc__store_manifest_path(st, images.d[i], p, sizeof(p));
        if (!vhpc__digests_has(&refd, images.d[i]) && stat(p, &sb) == 0 &&
            now - sb.st_mtime >= grace) {
            if ((r = vhpc__digests_add(&drop, images.d[i])) < 0)
                goto out;
            continue;
        }
        if ((r = vhpc_store_get_manifest(st, images.d[i], &m, err)) == 0) {
            r = vhpc_manifest_blobs(m, collect_blob, &blobs, err);
            json_decref(m);
        }
        if (r < 0) {
            vhpc_err_wrap(err,
                          "gc removed nothing: the manifest %s cannot be used (remove that image "
                          "with vhpc image rm %.12s, or rebuild or pull it)",
                          p, images.d[i]);
            goto out;
        }
    }
    for (size_t i = 0; i < drop.n; i++) {
        vhpc__store_manifest_path(st, drop.d[i], p, sizeof(p));
        if (unlink(p) == 0)
            stats->images++;
    }
    snprintf(p, sizeof(p), "%s/blobs", st->dir);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            struct stat sb;
            if (de->d_name[0] == '.' || vhpc__digests_has(&blobs, de->d_name) ||
                !is_old(dirfd(d), de->d_name, now, grace, &sb))
                continue;
            if (unlinkat(dirfd(d), de->d_name, 0) == 0) {
                stats->blobs++;
                stats->bytes += (uint64_t)sb.st_size;
            }
        }
        closedir(d);
    }
    snprintf(p, sizeof(p), "%s/tmp", st->dir);
    if ((d = opendir(p))) {
        struct dirent *de;
        while ((de = readdir(d))) {
            struct stat sb;
            if (de->d_name[0] == '.' || !is_old(dirfd(d), de->d_name, now, 3600, &sb))
                continue;
            char q[PATH_MAX + 300];
            snprintf(q, sizeof(q), "%s/%s", p, de->d_name);
            vhpc_err_t e2 = {0};
            if (vhpc_rm_tree(q, &e2) == 0)
                stats->tmp++;
        }
        closedir(d);
    }
    /* Use stamps of images that are gone. */
    snprintf(p, sizeof(p), "%s/used", st->dir);
    if ((d = opendir(p))) {
        struct dirent *de;
        while ((de = readdir(d))) {
            char mp[PATH_MAX];
            if (!vhpc_is_digest(de->d_name))
                continue;
            vhpc__store_manifest_path(st, de->d_name, mp, sizeof(mp));
            if (access(mp, F_OK) < 0)
                unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
    }
out:
    free(refd.d);
    free(images.d);
    free(blobs.d);
    free(drop.d);
    return r;
}

int vhpc_store_remove(struct vhpc_store *st, const char *ref, int *removed,
                      struct vhpc_gc_stats *stats, vhpc_err_t *err)
{
    struct vhpc__digests affected = {0}, refd = {0};
    struct vhpc_gc_stats local = {0};
    int r = vhpc_store_lock(st, err);
    if (r < 0)
        return r;
    if ((r = vhpc__store_untag(st, ref, removed, &affected, err)) == 0 &&
        (r = vhpc_store_refs(st, collect_ref, &refd, err)) == 0) {
        for (size_t i = 0; i < affected.n && r == 0; i++)
            if (!vhpc__digests_has(&refd, affected.d[i]))
                r = drop_image(st, affected.d[i], stats ? stats : &local, err);
    }
    vhpc_store_unlock(st);
    free(affected.d);
    free(refd.d);
    return r;
}

int vhpc_store_gc(struct vhpc_store *st, struct vhpc_gc_stats *stats, vhpc_err_t *err)
{
    struct vhpc_gc_stats local = {0};
    int r = vhpc_store_lock(st, err);
    if (r < 0)
        return r;
    r = gc_locked(st, stats ? stats : &local, VHPC_GC_GRACE_S, err);
    vhpc_store_unlock(st);
    return r;
}

int vhpc_store_make_room(struct vhpc_store *st, uint64_t need, const char *keep,
                         struct vhpc_gc_stats *stats, vhpc_err_t *err)
{
    uint64_t budget = vhpc_store_budget(st);
    struct vhpc_gc_stats local = {0};
    if (!stats)
        stats = &local;
    if (!budget)
        return 0;
    if (need > budget)
        return vhpc_err_setmsg(err, -ENOSPC,
                               "%" PRIu64 " bytes do not fit in the cache budget of %" PRIu64
                               " bytes (raise it with --budget)",
                               need, budget);
    int r = vhpc_store_lock(st, err);
    if (r < 0)
        return r;
    while (vhpc_store_usage(st) + need > budget) {
        struct vhpc__digests images = {0};
        if ((r = vhpc_store_images(st, collect_cb, &images, err)) < 0)
            break;
        const char *victim = NULL;
        int64_t oldest = 0;
        for (size_t i = 0; i < images.n; i++) {
            if (keep && !strcmp(images.d[i], keep))
                continue;
            int64_t t = last_use(st, images.d[i]);
            if (!victim || t < oldest) {
                victim = images.d[i];
                oldest = t;
            }
        }
        if (!victim) {
            free(images.d);
            r = vhpc_err_setmsg(err, -ENOSPC,
                                "the cache budget of %" PRIu64 " bytes is full and nothing is "
                                "left to evict (raise it with --budget)",
                                budget);
            break;
        }
        /* Drop its refs, then the image and the blobs no other image
         * shares. */
        r = vhpc__store_drop_refs(st, victim, err);
        if (r == 0)
            r = drop_image(st, victim, stats, err);
        free(images.d);
        if (r < 0)
            break;
    }
    vhpc_store_unlock(st);
    return r;
}
