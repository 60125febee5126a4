/*
 * store.c - the content-addressed image store (layout and rules: store.h).
 *
 * Everything that names content is checked on the way in: a blob is renamed
 * into place only after its bytes hashed to its name, a manifest is stored
 * under the hash of its bytes.  Refs (names and versions) live in one small
 * JSON file rewritten atomically under the store's lock, so two builds
 * finishing at once cannot lose each other's version.
 */
#include "store.h"

#include "sha256.h"
#include "fs.h"
#include "lock.h"
#include "paths.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct vhpc_store {
    char dir[PATH_MAX - 128]; /* <root>/store */
    int lock_fd;
    int locked;
    int private_; /* a user's own store: directories 0700, index 0600 */
};

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

/* refs.json, budget: the system store's index is readable (users resolve
 * what root published); a user's own is not. */
static unsigned index_mode(const struct vhpc_store *st)
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

int vhpc_valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n >= 128 || s[0] == '.')
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int is_hex_prefix(const char *s)
{
    size_t n = strlen(s);
    if (n < 4 || n > 64)
        return 0;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
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
    int r =
        vhpc__pathf(err, st->dir, sizeof(st->dir), "%s/store", root ? root : vhpc__store_root());
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
        r = vhpc__mkdirs(p, mode, err);
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

int vhpc_store_lock(struct vhpc_store *st, vhpc_err_t *err)
{
    char p[PATH_MAX];
    int r;
    snprintf(p, sizeof(p), "%s/lock", st->dir);
    if (st->lock_fd < 0 && (r = vhpc__lock_open(p, "store", &st->lock_fd, err)) < 0) {
        st->lock_fd = -1;
        return r;
    }
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
    snprintf(p, sizeof(p), "%s/lock", st->dir);
    if (st->lock_fd < 0 && (r = vhpc__lock_open(p, "store", &st->lock_fd, err)) < 0) {
        st->lock_fd = -1;
        return r;
    }
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

static void manifest_path(const struct vhpc_store *st, const char *digest, char *p, size_t len)
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
    manifest_path(st, digest, p, sizeof(p));
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
    manifest_path(st, digest, p, sizeof(p));
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

/* ---- refs --------------------------------------------------------------- */

/* The index (refs.json) is the only record of which images have names: an
 * index that cannot be read must never be taken for an empty one (gc would
 * then delete every image).  So: missing is empty only for a store that
 * never had one; unreadable, unparsable or malformed is an error that says
 * where the previous version is. */
#define REFS_MAX (64u << 20)

static int refs_error(const struct vhpc_store *st, int code, const char *why, vhpc_err_t *err)
{
    char prev[PATH_MAX + 16];
    snprintf(prev, sizeof(prev), "%s/refs.json.prev", st->dir);
    if (access(prev, F_OK) == 0)
        return vhpc_err_setmsg(err, code,
                               "the image index %s/refs.json %s; nothing was changed.  The index "
                               "as it was before its last change is kept: check it, then "
                               "`cp -p %s %s/refs.json`",
                               st->dir, why, prev, st->dir);
    return vhpc_err_setmsg(err, code,
                           "the image index %s/refs.json %s; nothing was changed.  No earlier "
                           "version is kept: repair it, or move it away to start an empty index "
                           "(the images stay, without names, until `vhpc image gc`)",
                           st->dir, why);
}

static int valid_refs(json_t *refs)
{
    const char *name;
    json_t *list, *v;
    size_t i;
    if (!json_is_object(refs))
        return 0;
    json_object_foreach(refs, name, list)
    {
        if (!vhpc_valid_name(name) || !json_is_array(list))
            return 0;
        json_array_foreach(list, i, v)
        {
            json_t *ver = json_object_get(v, "version");
            if (!json_is_object(v) ||
                !vhpc_is_digest(json_string_value(json_object_get(v, "digest"))) ||
                !json_is_integer(ver) || json_integer_value(ver) < 1 ||
                json_integer_value(ver) > INT_MAX)
                return 0;
        }
    }
    return 1;
}

static int load_refs(const struct vhpc_store *st, json_t **out, vhpc_err_t *err)
{
    char p[PATH_MAX + 16], why[300];
    snprintf(p, sizeof(p), "%s/refs.json", st->dir);
    *out = NULL;
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 && errno == ENOENT) {
        snprintf(p, sizeof(p), "%s/refs.json.prev", st->dir);
        if (access(p, F_OK) == 0)
            return refs_error(st, -ENOENT, "is missing", err);
        *out = json_object(); /* a store that never had a name */
        return *out ? 0 : vhpc_err_set(err, -ENOMEM, "reading %s", p);
    }
    if (fd < 0) {
        int e = errno;
        snprintf(why, sizeof(why), "cannot be read (%s)", strerror(e));
        return refs_error(st, -e, why, err);
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > REFS_MAX) {
        close(fd);
        return refs_error(st, -EBADMSG, "is not a regular file of at most 64 MiB", err);
    }
    json_error_t je;
    json_t *refs = json_loadfd(fd, 0, &je);
    int e = errno;
    close(fd);
    if (!refs) {
        if (je.line <= 0 && e)
            snprintf(why, sizeof(why), "cannot be read (%s)", strerror(e));
        else
            snprintf(why, sizeof(why), "is damaged (line %d: %.200s)", je.line, je.text);
        return refs_error(st, -EBADMSG, why, err);
    }
    if (!valid_refs(refs)) {
        json_decref(refs);
        return refs_error(st, -EBADMSG,
                          "is damaged (expected {\"NAME\": [{\"version\": N, \"digest\": "
                          "SHA256, ...}, ...], ...})",
                          err);
    }
    *out = refs;
    return 0;
}

/* Durably (file and directory synced), the previous index kept as
 * refs.json.prev. */
static int save_refs(struct vhpc_store *st, json_t *refs, vhpc_err_t *err)
{
    char p[PATH_MAX], prev[PATH_MAX + 8];
    snprintf(p, sizeof(p), "%s/refs.json", st->dir);
    snprintf(prev, sizeof(prev), "%s.prev", p);
    char *text = json_dumps(refs, JSON_SORT_KEYS | JSON_INDENT(1));
    if (!text)
        return vhpc_err_set(err, -ENOMEM, "writing %s", p);
    int r = vhpc__write_file_sync(p, text, strlen(text), index_mode(st), prev, err);
    free(text);
    return r;
}

static int ref_from_json(const char *name, json_t *v, struct vhpc_ref *out)
{
    const char *d = json_string_value(json_object_get(v, "digest"));
    json_t *ver = json_object_get(v, "version");
    if (!vhpc_is_digest(d) || !json_is_integer(ver))
        return -1;
    snprintf(out->name, sizeof(out->name), "%s", name);
    out->version = (int)json_integer_value(ver);
    snprintf(out->digest, sizeof(out->digest), "%s", d);
    out->created = json_integer_value(json_object_get(v, "created"));
    return 0;
}

/* The newest (highest) version entry of a name, or NULL. */
static json_t *newest(json_t *list)
{
    json_t *best = NULL, *v;
    size_t i;
    json_array_foreach(list, i, v)
    {
        if (!best || json_integer_value(json_object_get(v, "version")) >
                         json_integer_value(json_object_get(best, "version")))
            best = v;
    }
    return best;
}

int vhpc_store_tag(struct vhpc_store *st, const char *name, int version, const char *digest,
                   struct vhpc_ref *out, vhpc_err_t *err)
{
    if (!vhpc_valid_name(name))
        return vhpc_err_setmsg(err, -EINVAL,
                               "invalid image name '%s' (letters, digits, '.', '_', '-'; at most "
                               "127; not starting with '.')",
                               name);
    if (version < 0)
        return vhpc_err_setmsg(err, -EINVAL, "invalid version %d (1, 2, ...)", version);
    char p[PATH_MAX];
    manifest_path(st, digest, p, sizeof(p));
    if (!vhpc_is_digest(digest) || access(p, F_OK) < 0)
        return vhpc_err_setmsg(err, -ENOENT, "no image %.12s in the store", digest);
    int r = vhpc_store_lock(st, err);
    if (r < 0)
        return r;
    json_t *refs;
    if ((r = load_refs(st, &refs, err)) < 0) {
        vhpc_store_unlock(st);
        return r;
    }
    json_t *list = json_object_get(refs, name);
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(refs, name, list);
    }
    json_t *top = newest(list), *entry = NULL;
    if (version == 0 && top &&
        !strcmp(json_string_value(json_object_get(top, "digest")) ?: "", digest)) {
        entry = top; /* already the newest version */
    } else {
        if (version == 0)
            version = top ? (int)json_integer_value(json_object_get(top, "version")) + 1 : 1;
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
            if (json_integer_value(json_object_get(v, "version")) == version) {
                json_array_remove(list, i);
                break;
            }
        }
        entry = json_pack("{s:i, s:s, s:I}", "version", version, "digest", digest, "created",
                          (json_int_t)time(NULL));
        json_array_append_new(list, entry);
        r = save_refs(st, refs, err);
    }
    if (r == 0 && out)
        ref_from_json(name, entry, out);
    json_decref(refs);
    vhpc_store_unlock(st);
    return r;
}

int vhpc_store_bind(struct vhpc_store *st, const char *name, int version, const char *digest,
                    struct vhpc_ref *out, vhpc_err_t *err)
{
    if (version <= 0 || !vhpc_valid_name(name))
        return vhpc_store_tag(st, name, version, digest, out, err);
    int r = vhpc_store_lock(st, err);
    if (r < 0)
        return r;
    json_t *refs, *v;
    size_t i;
    if ((r = load_refs(st, &refs, err)) < 0) {
        vhpc_store_unlock(st);
        return r;
    }
    json_array_foreach(json_object_get(refs, name), i, v)
    {
        if (json_integer_value(json_object_get(v, "version")) != version)
            continue;
        const char *d = json_string_value(json_object_get(v, "digest")) ?: "";
        if (strcmp(d, digest) != 0)
            r = vhpc_err_setmsg(err, -EEXIST,
                                "%s:%d is already image %.12s here; a version is never "
                                "rebound (push a new version, e.g. %s without :VERSION)",
                                name, version, d, name);
        else if (out)
            ref_from_json(name, v, out);
        json_decref(refs);
        vhpc_store_unlock(st);
        return r == 0 ? 1 : r;
    }
    json_decref(refs);
    r = vhpc_store_tag(st, name, version, digest, out, err);
    vhpc_store_unlock(st);
    return r;
}

struct prefix_ctx {
    const char *prefix;
    char found[65];
    int n;
};

static int prefix_cb(const char *digest, void *arg)
{
    struct prefix_ctx *c = arg;
    if (!strncasecmp(digest, c->prefix, strlen(c->prefix))) {
        if (!c->n)
            snprintf(c->found, sizeof(c->found), "%s", digest);
        c->n++;
    }
    return 0;
}

static int unknown_ref(const struct vhpc_store *st, const char *ref, json_t *refs, vhpc_err_t *err)
{
    char names[512] = "";
    size_t used = 0, count = 0;
    const char *name;
    json_t *v;
    json_object_foreach(refs, name, v)
    {
        if (json_array_size(v) == 0)
            continue;
        if (used < sizeof(names) - 140)
            used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", count ? ", " : "",
                                     name);
        count++;
    }
    (void)st;
    if (!count)
        return vhpc_err_setmsg(err, -ENOENT,
                               "unknown image '%s': the store is empty (vhpc image build makes "
                               "one)",
                               ref);
    return vhpc_err_setmsg(err, -ENOENT,
                           "unknown image '%s' (the store has: %s; vhpc image list shows every "
                           "version)",
                           ref, names);
}

int vhpc_store_resolve(const struct vhpc_store *st, const char *ref, struct vhpc_ref *out,
                       vhpc_err_t *err)
{
    char name[128];
    const char *sep = strpbrk(ref, ":@");
    json_t *refs;
    memset(out, 0, sizeof(*out));
    int r = load_refs(st, &refs, err);
    if (r < 0)
        return r;
    if (sep) {
        size_t n = (size_t)(sep - ref);
        if (n == 0 || n >= sizeof(name)) {
            r = vhpc_err_setmsg(err, -EINVAL, "'%s': expected NAME, NAME:VERSION or NAME@DIGEST",
                                ref);
            goto out;
        }
        memcpy(name, ref, n);
        name[n] = 0;
    } else {
        snprintf(name, sizeof(name), "%s", ref);
    }
    json_t *list = json_object_get(refs, name), *v;
    size_t i;
    if (json_array_size(list) > 0) {
        json_t *hit = NULL;
        if (!sep) {
            hit = newest(list);
        } else if (*sep == ':') {
            char *end;
            long want = strtol(sep + 1, &end, 10);
            if (!sep[1] || *end || want <= 0) {
                r = vhpc_err_setmsg(err, -EINVAL, "'%s': the version must be a number >= 1", ref);
                goto out;
            }
            json_array_foreach(list, i, v) if (json_integer_value(json_object_get(v, "version")) ==
                                               want) hit = v;
        } else {
            int n = 0;
            json_array_foreach(list, i, v)
            {
                const char *d = json_string_value(json_object_get(v, "digest"));
                if (d && strlen(sep + 1) >= 4 && !strncasecmp(d, sep + 1, strlen(sep + 1))) {
                    if (!hit || json_integer_value(json_object_get(v, "version")) >
                                    json_integer_value(json_object_get(hit, "version")))
                        hit = v;
                    n++;
                }
            }
            (void)n;
        }
        if (hit && ref_from_json(name, hit, out) == 0)
            goto out;
        char versions[256] = "";
        size_t used = 0;
        json_array_foreach(list, i, v)
        {
            if (used < sizeof(versions) - 16)
                used += (size_t)snprintf(versions + used, sizeof(versions) - used, "%s%s:%d",
                                         i ? ", " : "", name,
                                         (int)json_integer_value(json_object_get(v, "version")));
        }
        r = vhpc_err_setmsg(err, -ENOENT, "no image '%s' (%s has %s)", ref, name, versions);
        goto out;
    }
    if (!sep && is_hex_prefix(ref)) {
        struct prefix_ctx c = {.prefix = ref};
        vhpc_err_t e2 = {0};
        vhpc_store_images(st, prefix_cb, &c, &e2);
        if (c.n > 1) {
            r = vhpc_err_setmsg(err, -EINVAL,
                                "digest prefix '%s' is ambiguous (%d images); give more digits",
                                ref, c.n);
            goto out;
        }
        if (c.n == 1) {
            snprintf(out->digest, sizeof(out->digest), "%s", c.found);
            /* Its newest ref, if any, for the name shown. */
            const char *nm;
            json_object_foreach(refs, nm, list)
            {
                json_array_foreach(list, i, v)
                {
                    if (!strcmp(json_string_value(json_object_get(v, "digest")) ?: "", c.found)) {
                        struct vhpc_ref cand;
                        if (ref_from_json(nm, v, &cand) == 0 && cand.created >= out->created)
                            *out = cand;
                    }
                }
            }
            goto out;
        }
    }
    r = unknown_ref(st, ref, refs, err);
out:
    json_decref(refs);
    return r;
}

struct digests;
static int digests_add(struct digests *s, const char *d);

static int untag(struct vhpc_store *st, const char *ref, int *removed, struct digests *affected,
                 vhpc_err_t *err)
{
    struct vhpc_ref target;
    int r = vhpc_store_resolve(st, ref, &target, err);
    if (r < 0)
        return r;
    /* Which refs go: all versions of a bare name, one version, or every
     * ref to a digest given as such. */
    int by_name = 0, by_version = 0;
    if (strchr(ref, ':'))
        by_version = 1;
    else if (!strchr(ref, '@') && !strcmp(ref, target.name))
        by_name = 1;
    if ((r = vhpc_store_lock(st, err)) < 0)
        return r;
    json_t *refs;
    if ((r = load_refs(st, &refs, err)) < 0) {
        vhpc_store_unlock(st);
        return r;
    }
    const char *nm;
    json_t *list;
    void *tmp;
    int n = 0;
    json_object_foreach_safe(refs, tmp, nm, list)
    {
        for (size_t i = json_array_size(list); i-- > 0;) {
            json_t *v = json_array_get(list, i);
            const char *d = json_string_value(json_object_get(v, "digest")) ?: "";
            int ver = (int)json_integer_value(json_object_get(v, "version"));
            bool drop = by_name      ? !strcmp(nm, target.name)
                        : by_version ? !strcmp(nm, target.name) && ver == target.version
                                     : !strcmp(d, target.digest);
            if (drop) {
                if (affected)
                    digests_add(affected, d);
                json_array_remove(list, i);
                n++;
            }
        }
        if (json_array_size(list) == 0)
            json_object_del(refs, nm);
    }
    r = save_refs(st, refs, err);
    json_decref(refs);
    vhpc_store_unlock(st);
    if (removed)
        *removed = n;
    return r;
}

int vhpc_store_untag(struct vhpc_store *st, const char *ref, int *removed, vhpc_err_t *err)
{
    return untag(st, ref, removed, NULL, err);
}

static int cmp_ref(const void *a, const void *b)
{
    const struct vhpc_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->version > y->version) - (x->version < y->version);
}

int vhpc_store_refs(const struct vhpc_store *st, int (*fn)(const struct vhpc_ref *r, void *arg),
                    void *arg, vhpc_err_t *err)
{
    json_t *refs, *list, *v;
    const char *nm;
    size_t n = 0, cap = 0, i;
    struct vhpc_ref *all = NULL;
    int r = load_refs(st, &refs, err);
    if (r < 0)
        return r;
    json_object_foreach(refs, nm, list)
    {
        json_array_foreach(list, i, v)
        {
            if (n == cap) {
                struct vhpc_ref *g = realloc(all, (cap = cap ? 2 * cap : 16) * sizeof(*all));
                if (!g) {
                    r = vhpc_err_set(err, -ENOMEM, "listing images");
                    goto out;
                }
                all = g;
            }
            if (ref_from_json(nm, v, &all[n]) == 0)
                n++;
        }
    }
    if (n)
        qsort(all, n, sizeof(*all), cmp_ref);
    for (i = 0; i < n && !r; i++)
        r = fn(&all[i], arg);
out:
    free(all);
    json_decref(refs);
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
        manifest_path(c->st, digest, p, sizeof(p));
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
    manifest_path(st, digest, p, sizeof(p));
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
    return vhpc__write_file_sync(p, buf, (size_t)n, index_mode(st), NULL, err);
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

/* A set of digests (small: the images of one store). */
struct digests {
    char (*d)[65];
    size_t n, cap;
};

static int digests_add(struct digests *s, const char *d)
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

static int digests_has(const struct digests *s, const char *d)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->d[i], d))
            return 1;
    return 0;
}

static int collect_cb(const char *digest, void *arg)
{
    return digests_add(arg, digest);
}

static int collect_blob(const char *role, const char *digest, uint64_t size, void *arg)
{
    (void)role;
    (void)size;
    return digests_add(arg, digest);
}

static int collect_ref(const struct vhpc_ref *r, void *arg)
{
    return digests_add(arg, r->digest);
}

/* The blobs every image in the store but `skip` names, into *blobs.  A
 * manifest that cannot be read or parsed is an error (naming it): what it
 * names is unknown, so nothing may be freed on its account. */
static int all_blobs(struct vhpc_store *st, const char *skip, struct digests *blobs,
                     vhpc_err_t *err)
{
    struct digests images = {0};
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
            manifest_path(st, images.d[i], p, sizeof(p));
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
    struct digests mine = {0}, others = {0};
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
    manifest_path(st, digest, p, sizeof(p));
    if (unlink(p) == 0)
        stats->images++;
    snprintf(p, sizeof(p), "%s/used/%.64s", st->dir, digest);
    unlink(p);
    for (size_t i = 0; i < mine.n; i++) {
        struct stat sb;
        if (digests_has(&others, mine.d[i]))
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
    struct digests refd = {0}, images = {0}, blobs = {0}, drop = {0};
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
        manifest_path(st, images.d[i], p, sizeof(p));
        if (!digests_has(&refd, images.d[i]) && stat(p, &sb) == 0 && now - sb.st_mtime >= grace) {
            if ((r = digests_add(&drop, images.d[i])) < 0)
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
        manifest_path(st, drop.d[i], p, sizeof(p));
        if (unlink(p) == 0)
            stats->images++;
    }
    snprintf(p, sizeof(p), "%s/blobs", st->dir);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            struct stat sb;
            if (de->d_name[0] == '.' || digests_has(&blobs, de->d_name) ||
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
            if (vhpc__rm_tree(q, &e2) == 0)
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
            manifest_path(st, de->d_name, mp, sizeof(mp));
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
    struct digests affected = {0}, refd = {0};
    struct vhpc_gc_stats local = {0};
    int r = vhpc_store_lock(st, err);
    if (r < 0)
        return r;
    if ((r = untag(st, ref, removed, &affected, err)) == 0 &&
        (r = vhpc_store_refs(st, collect_ref, &refd, err)) == 0) {
        for (size_t i = 0; i < affected.n && r == 0; i++)
            if (!digests_has(&refd, affected.d[i]))
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
        struct digests images = {0};
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
        json_t *refs, *list;
        const char *nm;
        void *it;
        if ((r = load_refs(st, &refs, err)) < 0) {
            free(images.d);
            break;
        }
        json_object_foreach_safe(refs, it, nm, list)
        {
            for (size_t i = json_array_size(list); i-- > 0;)
                if (!strcmp(json_string_value(json_object_get(json_array_get(list, i), "digest"))
                                ?: "",
                            victim))
                    json_array_remove(list, i);
            if (json_array_size(list) == 0)
                json_object_del(refs, nm);
        }
        r = save_refs(st, refs, err);
        json_decref(refs);
        if (r == 0)
            r = drop_image(st, victim, stats, err);
        free(images.d);
        if (r < 0)
            break;
    }
    vhpc_store_unlock(st);
    return r;
}
