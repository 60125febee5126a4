/*
 * store.c - the content-addressed image store's objects (layout and rules:
 * store.h): opening it and its lock, blobs (put, receive, verify) and
 * manifests (put, get, list, find by inputs).
 *
 * Everything that names content is checked on the way in: a blob is renamed
 * into place only after its bytes hashed to its name, a manifest is stored
 * under the hash of its bytes.  The names that point at images are refs.c;
 * when images and blobs are freed is gc.c.
 */
#include "store_int.h"

#include "sha256.h"
#include "fs.h"
#include "lock.h"
#include "paths.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Set by `--public` (root publishing into the system store): blobs and
 * manifests this process stores are 0444 instead of 0400. */
static int publish;

void vhpc_store_publish(int on)
{
    publish = on;
}

static unsigned blob_mode(void)
{
    return publish ? 0444 : 0400;
}

unsigned vhpc__store_index_mode(const struct vhpc_store *st)
{
    return st->private_ ? 0600 : 0644;
}

/* A file already in the store that this build publishes: make it
 * readable by everyone (only our own files; content is content). */
static void publish_existing(const char *path)
{
    struct stat sb;
    if (publish && stat(path, &sb) == 0 && sb.st_uid == geteuid() && (sb.st_mode & 0444) != 0444)
        chmod(path, 0444);
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int vhpc_is_digest(const char *s)
{
    if (!s || strlen(s) != 64)
        return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s) || isupper((unsigned char)*s))
            return 0;
    return 1;
}

int vhpc_store_open(const char *root, struct vhpc_store **out, vhpc_err_t *err)
{
    struct vhpc_store *st = calloc(1, sizeof(*st));
    if (!st)
        return vhpc_err_set(err, -ENOMEM, "opening the image store");
    st->lock_fd = -1;
    st->private_ = vhpc__private_store();
    int r = vhpc__pathf(err, st->dir, sizeof(st->dir), "%s/store", root ? root : vhpc_store_root());
    /* A user's store is theirs alone.  Root's has 0755 directories (what
     * root publishes must be reachable) but private files, and its tmp/
     * (builds under way) and used/ are 0700 everywhere. */
    unsigned dmode = st->private_ ? 0700 : 0755;
    static const struct {
        const char *name;
        unsigned mode; /* 0: dmode */
    } sub[] = {{"", 0}, {"/blobs", 0}, {"/images", 0}, {"/used", 0700}, {"/tmp", 0700}};
    for (size_t i = 0; r == 0 && i < sizeof(sub) / sizeof(*sub); i++) {
        char p[PATH_MAX];
        struct stat sb;
        unsigned mode = sub[i].mode ? sub[i].mode : dmode;
        snprintf(p, sizeof(p), "%s%s", st->dir, sub[i].name);
        r = vhpc_mkdirs(p, mode, err);
        /* Stores of older versions had 0755 everywhere: tighten ours. */
        if (r == 0 && stat(p, &sb) == 0 && sb.st_uid == geteuid() && (sb.st_mode & 077 & ~mode) &&
            chmod(p, mode) < 0)
            r = vhpc_err_set(err, -errno, "making %s private", p);
    }
    if (r < 0) {
        free(st);
        return vhpc_err_wrap(err, "opening the image store");
    }
    *out = st;
    return 0;
}

void vhpc_store_close(struct vhpc_store *st)
{
    if (!st)
        return;
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    free(st);
}

const char *vhpc_store_dir(const struct vhpc_store *st)
{
    return st->dir;
}

/* The lock file's path into p, opened once per handle. */
static int lock_file(struct vhpc_store *st, char *p, size_t len, vhpc_err_t *err)
{
    int r;
    snprintf(p, len, "%s/lock", st->dir);
    if (st->lock_fd < 0 && (r = vhpc__lock_open(p, "store", &st->lock_fd, err)) < 0) {
        st->lock_fd = -1;
        return r;
    }
    return 0;
}

int vhpc_store_lock(struct vhpc_store *st, vhpc_err_t *err)
{
    char p[PATH_MAX];
    int r;
    if ((r = lock_file(st, p, sizeof(p), err)) < 0)
        return r;
    if (st->locked++ > 0)
        return 0; /* already held by this handle */
    if ((r = vhpc__lock_wait(st->lock_fd, p, "store", err)) < 0) {
        st->locked = 0;
        return r;
    }
    return 0;
}

int vhpc_store_trylock(struct vhpc_store *st, vhpc_err_t *err)
{
    if (st->locked > 0) {
        st->locked++;
        return 0;
    }
    char p[PATH_MAX];
    int r;
    if ((r = lock_file(st, p, sizeof(p), err)) < 0)
        return r;
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return errno == EWOULDBLOCK
                   ? vhpc_err_setmsg(err, -EWOULDBLOCK,
                                     "the image store %s is locked by another process", st->dir)
                   : vhpc_err_set(err, -errno, "locking the image store %s", st->dir);
    st->locked = 1;
    return 0;
}

void vhpc_store_unlock(struct vhpc_store *st)
{
    if (st->locked > 0 && --st->locked == 0 && st->lock_fd >= 0)
        flock(st->lock_fd, LOCK_UN);
}

/* ---- blobs -------------------------------------------------------------- */

void vhpc_store_blob_path(const struct vhpc_store *st, const char *digest, char *path, size_t len)
{
    snprintf(path, len, "%s/blobs/%s", st->dir, digest);
}

int vhpc_store_has_blob(const struct vhpc_store *st, const char *digest)
{
    char p[PATH_MAX];
    if (!vhpc_is_digest(digest))
        return 0;
    vhpc_store_blob_path(st, digest, p, sizeof(p));
    return access(p, F_OK) == 0;
}

static int tmp_file(struct vhpc_store *st, char *path, size_t len, vhpc_err_t *err)
{
    snprintf(path, len, "%s/tmp/blob-XXXXXX", st->dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "creating a file in %s/tmp", st->dir);
    return fd;
}

/* Rename a verified file into blobs/ (read-only: 0400, or 0444 when
 * published), its bytes on disk first; an existing blob of the same digest
 * wins and the file is dropped. */
static int place_blob(struct vhpc_store *st, const char *tmp, const char *digest, vhpc_err_t *err)
{
    char dst[PATH_MAX];
    vhpc_store_blob_path(st, digest, dst, sizeof(dst));
    if (access(dst, F_OK) == 0) {
        publish_existing(dst);
        unlink(tmp);
        return 0;
    }
    int fd = open(tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fchmod(fd, blob_mode()) < 0 || fsync(fd) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return vhpc_err_set(err, -e, "storing blob %.12s", digest);
    }
    futimens(fd, NULL); /* its age in the store, for gc's grace period */
    close(fd);
    if (rename(tmp, dst) < 0) {
        int e = errno;
        unlink(tmp);
        return vhpc_err_set(err, -e, "storing blob %.12s", digest);
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/blobs", st->dir);
    sync_dir(dir);
    return 0;
}

int vhpc_store_add_blob(struct vhpc_store *st, const char *src, int move, char digest[65],
                        uint64_t *size, vhpc_err_t *err)
{
    struct stat sb;
    if (stat(src, &sb) < 0)
        return vhpc_err_set(err, -errno, "%s", src);
    if (!S_ISREG(sb.st_mode))
        return vhpc_err_setmsg(err, -EINVAL, "%s is not a regular file", src);
    char tmp[PATH_MAX];
    int r;
    if (move) {
        if ((r = vhpc_sha256_file(src, digest, err)) < 0)
            return r;
        if (size)
            *size = (uint64_t)sb.st_size;
        if (vhpc_store_has_blob(st, digest)) {
            unlink(src);
            return 0;
        }
        snprintf(tmp, sizeof(tmp), "%s", src);
        return place_blob(st, tmp, digest, err);
    }
    /* Copy and hash in one pass, so what is stored is what was hashed. */
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return vhpc_err_set(err, -errno, "opening %s", src);
    int out = tmp_file(st, tmp, sizeof(tmp), err);
    if (out < 0) {
        close(in);
        return out;
    }
    struct vhpc_sha256 sha;
    vhpc_sha256_init(&sha);
    static __thread char buf[1 << 16];
    uint64_t total = 0;
    r = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = vhpc_err_set(err, -errno, "reading %s", src);
            break;
        }
        if (n == 0)
            break;
        vhpc_sha256_update(&sha, buf, (size_t)n);
        total += (uint64_t)n;
        for (ssize_t done = 0; done < n && r == 0;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno != EINTR)
                r = vhpc_err_set(err, -errno, "writing into the store");
            else if (w > 0)
                done += w;
        }
        if (r < 0)
            break;
    }
    close(in);
    if (close(out) < 0 && r == 0)
        r = vhpc_err_set(err, -errno, "writing into the store");
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    vhpc_sha256_hex(&sha, digest);
    if (size)
        *size = total;
    return place_blob(st, tmp, digest, err);
}

int vhpc_store_blob_begin(struct vhpc_store *st, const char *digest, uint64_t size,
                          struct vhpc_blob_writer *w, vhpc_err_t *err)
{
    if (!vhpc_is_digest(digest))
        return vhpc_err_setmsg(err, -EINVAL, "'%s' is not a sha256 digest", digest);
    memset(w, 0, sizeof(*w));
    w->fd = tmp_file(st, w->tmp, sizeof(w->tmp), err);
    if (w->fd < 0)
        return w->fd;
    if (size && ftruncate(w->fd, (off_t)size) < 0) {
        int e = errno;
        vhpc_store_blob_abort(w);
        return vhpc_err_set(err, -e, "reserving %" PRIu64 " bytes in %s/tmp", size, st->dir);
    }
    snprintf(w->digest, sizeof(w->digest), "%s", digest);
    w->size = size;
    return 0;
}

/* hashed: the caller's sha256 of the bytes, or NULL to hash the file. */
static int blob_commit(struct vhpc_store *st, struct vhpc_blob_writer *w, const char *hashed,
                       vhpc_err_t *err)
{
    struct stat sb;
    char hex[65];
    int r;
    if (fstat(w->fd, &sb) < 0) {
        r = vhpc_err_set(err, -errno, "%s", w->tmp);
        goto fail;
    }
    if ((uint64_t)sb.st_size != w->size) {
        r = vhpc_err_setmsg(err, -EBADMSG,
                            "blob %.12s: %" PRIu64 " bytes received, %" PRIu64 " expected",
                            w->digest, (uint64_t)sb.st_size, w->size);
        goto fail;
    }
    if (close(w->fd) < 0) {
        w->fd = -1;
        r = vhpc_err_set(err, -errno, "writing %s", w->tmp);
        goto fail;
    }
    w->fd = -1;
    if (hashed)
        snprintf(hex, sizeof(hex), "%s", hashed);
    else if ((r = vhpc_sha256_file(w->tmp, hex, err)) < 0)
        goto fail;
    if (strcmp(hex, w->digest) != 0) {
        r = vhpc_err_setmsg(err, -EBADMSG, "blob %.12s: the bytes received hash to %.12s",
                            w->digest, hex);
        goto fail;
    }
    r = place_blob(st, w->tmp, w->digest, err);
    w->tmp[0] = 0;
    return r;
fail:
    vhpc_store_blob_abort(w);
    return r;
}

int vhpc_store_blob_commit(struct vhpc_store *st, struct vhpc_blob_writer *w, vhpc_err_t *err)
{
    return blob_commit(st, w, NULL, err);
}

int vhpc_store_blob_commit_hashed(struct vhpc_store *st, struct vhpc_blob_writer *w,
                                  const char *hex, vhpc_err_t *err)
{
    return blob_commit(st, w, hex, err);
}

void vhpc_store_blob_abort(struct vhpc_blob_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->tmp[0])
        unlink(w->tmp);
    w->tmp[0] = 0;
}

int vhpc_store_verify_blob(struct vhpc_store *st, const char *digest, vhpc_err_t *err)
{
    char p[PATH_MAX], hex[65];
    vhpc_store_blob_path(st, digest, p, sizeof(p));
    int r = vhpc_sha256_file(p, hex, err);
    if (r < 0)
        return r;
    if (strcmp(hex, digest) != 0) {
        unlink(p);
        return vhpc_err_setmsg(err, -EBADMSG,
                               "blob %.12s is damaged (its bytes hash to %.12s); removed it, "
                               "build or pull the image again",
                               digest, hex);
    }
    return 0;
}

/* ---- manifests ---------------------------------------------------------- */

void vhpc__store_manifest_path(const struct vhpc_store *st, const char *digest, char *p, size_t len)
{
    snprintf(p, len, "%s/images/%.64s.json", st->dir, digest);
}

int vhpc_manifest_blobs(json_t *manifest,
                        int (*fn)(const char *role, const char *digest, uint64_t size, void *arg),
                        void *arg, vhpc_err_t *err)
{
    json_t *blobs = json_object_get(manifest, "blobs"), *b;
    const char *role;
    if (!json_is_object(blobs))
        return vhpc_err_setmsg(err, -EBADMSG, "manifest without \"blobs\"");
    json_object_foreach(blobs, role, b)
    {
        const char *d = json_string_value(json_object_get(b, "digest"));
        json_t *sz = json_object_get(b, "size");
        if (!vhpc_is_digest(d) || !json_is_integer(sz) || json_integer_value(sz) < 0)
            return vhpc_err_setmsg(err, -EBADMSG, "manifest: blob '%s' has no valid digest/size",
                                   role);
        int r = fn(role, d, (uint64_t)json_integer_value(sz), arg);
        if (r)
            return r;
    }
    return 0;
}

struct present_ctx {
    const struct vhpc_store *st;
    vhpc_err_t *err;
};

static int blob_present(const char *role, const char *digest, uint64_t size, void *arg)
{
    struct present_ctx *c = arg;
    (void)size;
    if (!vhpc_store_has_blob(c->st, digest))
        return vhpc_err_setmsg(c->err, -ENOENT, "the %s blob %.12s is not in the store", role,
                               digest);
    return 0;
}

static int write_manifest(struct vhpc_store *st, const char *digest, const char *text, size_t len,
                          vhpc_err_t *err)
{
    char p[PATH_MAX];
    vhpc__store_manifest_path(st, digest, p, sizeof(p));
    if (access(p, F_OK) == 0) {
        publish_existing(p);
        return 0;
    }
    return vhpc__write_file_sync(p, text, len, blob_mode(), NULL, err);
}

int vhpc_store_put_manifest(struct vhpc_store *st, json_t *manifest, char digest[65],
                            vhpc_err_t *err)
{
    struct present_ctx c = {st, err};
    int r = vhpc_manifest_blobs(manifest, blob_present, &c, err);
    if (r < 0)
        return r;
    char *text = json_dumps(manifest, JSON_SORT_KEYS | JSON_COMPACT);
    if (!text)
        return vhpc_err_set(err, -ENOMEM, "writing a manifest");
    size_t len = strlen(text);
    struct vhpc_sha256 sha;
    vhpc_sha256_init(&sha);
    vhpc_sha256_update(&sha, text, len);
    vhpc_sha256_hex(&sha, digest);
    r = write_manifest(st, digest, text, len, err);
    free(text);
    return r;
}

int vhpc_store_put_manifest_raw(struct vhpc_store *st, const char *digest, const char *text,
                                size_t len, vhpc_err_t *err)
{
    char hex[65];
    struct vhpc_sha256 sha;
    vhpc_sha256_init(&sha);
    vhpc_sha256_update(&sha, text, len);
    vhpc_sha256_hex(&sha, hex);
    if (strcmp(hex, digest) != 0)
        return vhpc_err_setmsg(err, -EBADMSG, "manifest %.12s: its bytes hash to %.12s", digest,
                               hex);
    json_error_t je;
    json_t *m = json_loadb(text, len, 0, &je);
    if (!json_is_object(m)) {
        json_decref(m);
        return vhpc_err_setmsg(err, -EBADMSG, "manifest %.12s is not a JSON object", digest);
    }
    struct present_ctx c = {st, err};
    int r = vhpc_manifest_blobs(m, blob_present, &c, err);
    json_decref(m);
    return r < 0 ? r : write_manifest(st, digest, text, len, err);
}

int vhpc_store_get_manifest_raw(const struct vhpc_store *st, const char *digest, char **text,
                                size_t *len, vhpc_err_t *err)
{
    char p[PATH_MAX];
    if (!vhpc_is_digest(digest))
        return vhpc_err_setmsg(err, -EINVAL, "'%s' is not an image digest", digest);
    vhpc__store_manifest_path(st, digest, p, sizeof(p));
    return vhpc__read_file(p, text, len, err);
}

int vhpc_store_get_manifest(const struct vhpc_store *st, const char *digest, json_t **out,
                            vhpc_err_t *err)
{
    char *text;
    size_t len;
    int r = vhpc_store_get_manifest_raw(st, digest, &text, &len, err);
    if (r < 0)
        return r;
    json_error_t je;
    *out = json_loadb(text, len, 0, &je);
    free(text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return vhpc_err_setmsg(err, -EBADMSG, "manifest of image %.12s: %s", digest, je.text);
    }
    return 0;
}

int vhpc_store_images(const struct vhpc_store *st, int (*fn)(const char *digest, void *arg),
                      void *arg, vhpc_err_t *err)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/images", st->dir);
    DIR *d = opendir(p);
    if (!d)
        return vhpc_err_set(err, -errno, "reading %s", p);
    struct dirent *de;
    int r = 0;
    while (!r && (de = readdir(d))) {
        char digest[65];
        size_t n = strlen(de->d_name);
        if (n != 69 || strcmp(de->d_name + 64, ".json") != 0)
            continue;
        memcpy(digest, de->d_name, 64);
        digest[64] = 0;
        if (vhpc_is_digest(digest))
            r = fn(digest, arg);
    }
    closedir(d);
    return r;
}

/* ---- inputs ------------------------------------------------------------- */

struct inputs_ctx {
    const struct vhpc_store *st;
    const char *want;
    char found[65];
    int64_t best;
};

static int inputs_cb(const char *digest, void *arg)
{
    struct inputs_ctx *c = arg;
    json_t *m;
    vhpc_err_t e2 = {0};
    if (vhpc_store_get_manifest(c->st, digest, &m, &e2) < 0)
        return 0;
    const char *d = json_string_value(json_object_get(m, "inputs_digest"));
    if (d && !strcmp(d, c->want)) {
        char p[PATH_MAX];
        struct stat sb;
        vhpc__store_manifest_path(c->st, digest, p, sizeof(p));
        int64_t t = stat(p, &sb) == 0 ? (int64_t)sb.st_mtime : 0;
        if (!c->found[0] || t > c->best) {
            snprintf(c->found, sizeof(c->found), "%s", digest);
            c->best = t;
        }
    }
    json_decref(m);
    return 0;
}

int vhpc_store_find_inputs(const struct vhpc_store *st, const char *inputs_digest, char digest[65])
{
    struct inputs_ctx c = {.st = st, .want = inputs_digest};
    vhpc_err_t e2 = {0};
    vhpc_store_images(st, inputs_cb, &c, &e2);
    if (!c.found[0])
        return -ENOENT;
    snprintf(digest, 65, "%s", c.found);
    return 0;
}

/* ---- a set of digests (store_int.h) ---- */

int vhpc__digests_add(struct vhpc__digests *s, const char *d)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->d[i], d))
            return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        void *g = realloc(s->d, cap * sizeof(*s->d));
        if (!g)
            return -ENOMEM;
        s->d = g;
        s->cap = cap;
    }
    snprintf(s->d[s->n++], 65, "%s", d);
    return 0;
}

int vhpc__digests_has(const struct vhpc__digests *s, const char *d)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->d[i], d))
            return 1;
    return 0;
}
