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

#include "cpio.h"
#include "kernel.h"

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
};

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
    int r =
        vhpc__pathf(err, st->dir, sizeof(st->dir), "%s/store", root ? root : vhpc__store_root());
    static const char *const sub[] = {"blobs", "images", "used", "tmp"};
    for (size_t i = 0; r == 0 && i < sizeof(sub) / sizeof(*sub); i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", st->dir, sub[i]);
        r = vhpc__mkdirs(p, 0755, err);
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
    if (st->lock_fd < 0) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/lock", st->dir);
        st->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (st->lock_fd < 0)
            return vhpc_err_set(err, -errno, "opening %s", p);
    }
    if (st->locked++ > 0)
        return 0; /* already held by this handle */
    while (flock(st->lock_fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            st->locked = 0;
            return vhpc_err_set(err, -errno, "locking the image store %s", st->dir);
        }
    }
    return 0;
}

int vhpc_store_trylock(struct vhpc_store *st, vhpc_err_t *err)
{
    if (st->locked > 0) {
        st->locked++;
        return 0;
    }
    if (st->lock_fd < 0) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/lock", st->dir);
        st->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (st->lock_fd < 0)
            return vhpc_err_set(err, -errno, "opening %s", p);
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

/* Rename a verified file into blobs/ (read-only); an existing blob of the
 * same digest wins and the file is dropped. */
static int place_blob(struct vhpc_store *st, const char *tmp, const char *digest, vhpc_err_t *err)
{
    char dst[PATH_MAX];
    vhpc_store_blob_path(st, digest, dst, sizeof(dst));
    chmod(tmp, 0444);
    utimensat(AT_FDCWD, tmp, NULL, 0); /* its age in the store, for gc's grace period */
    if (access(dst, F_OK) == 0) {
        unlink(tmp);
        return 0;
    }
    if (rename(tmp, dst) < 0) {
        int e = errno;
        unlink(tmp);
        return vhpc_err_set(err, -e, "storing blob %.12s", digest);
    }
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
    if (access(p, F_OK) == 0)
        return 0;
    return vhpc__write_file(p, text, len, 0444, err);
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

static json_t *load_refs(const struct vhpc_store *st)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/refs.json", st->dir);
    json_error_t je;
    json_t *refs = json_load_file(p, 0, &je);
    if (!json_is_object(refs)) {
        json_decref(refs);
        refs = json_object();
    }
    return refs;
}

static int save_refs(struct vhpc_store *st, json_t *refs, vhpc_err_t *err)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/refs.json", st->dir);
    char *text = json_dumps(refs, JSON_SORT_KEYS | JSON_INDENT(1));
    if (!text)
        return vhpc_err_set(err, -ENOMEM, "writing %s", p);
    int r = vhpc__write_file(p, text, strlen(text), 0644, err);
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
    json_t *refs = load_refs(st);
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
    json_t *refs = load_refs(st), *v;
    size_t i;
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
    json_t *refs = load_refs(st);
    int r = 0;
    memset(out, 0, sizeof(*out));
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
    json_t *refs = load_refs(st);
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
    json_t *refs = load_refs(st), *list, *v;
    const char *nm;
    size_t n = 0, cap = 0, i;
    struct vhpc_ref *all = NULL;
    int r = 0;
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
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
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
    return vhpc__write_file(p, buf, (size_t)n, 0644, err);
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

/* Remove an image's manifest and the blobs of it no other image names
 * (the lock is held). */
static void drop_image(struct vhpc_store *st, const char *digest, struct vhpc_gc_stats *stats)
{
    struct digests mine = {0}, others = {0}, images = {0};
    json_t *m;
    vhpc_err_t e2 = {0};
    if (vhpc_store_get_manifest(st, digest, &m, &e2) == 0) {
        vhpc_manifest_blobs(m, collect_blob, &mine, &e2);
        json_decref(m);
    }
    char p[PATH_MAX];
    manifest_path(st, digest, p, sizeof(p));
    if (unlink(p) == 0)
        stats->images++;
    snprintf(p, sizeof(p), "%s/used/%.64s", st->dir, digest);
    unlink(p);
    vhpc_store_images(st, collect_cb, &images, &e2);
    for (size_t i = 0; i < images.n; i++) {
        if (vhpc_store_get_manifest(st, images.d[i], &m, &e2) == 0) {
            vhpc_manifest_blobs(m, collect_blob, &others, &e2);
            json_decref(m);
        }
    }
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
    free(mine.d);
    free(others.d);
    free(images.d);
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
    struct digests refd = {0}, images = {0}, blobs = {0};
    time_t now = time(NULL);
    char p[PATH_MAX];
    int r;
    if ((r = vhpc_store_refs(st, collect_ref, &refd, err)) < 0 ||
        (r = vhpc_store_images(st, collect_cb, &images, err)) < 0)
        goto out;
    for (size_t i = 0; i < images.n; i++) {
        json_t *m;
        struct stat sb;
        vhpc_err_t e2 = {0};
        manifest_path(st, images.d[i], p, sizeof(p));
        if (!digests_has(&refd, images.d[i]) && stat(p, &sb) == 0 && now - sb.st_mtime >= grace) {
            unlink(p);
            stats->images++;
            continue;
        }
        if (vhpc_store_get_manifest(st, images.d[i], &m, &e2) == 0) {
            vhpc_manifest_blobs(m, collect_blob, &blobs, &e2);
            json_decref(m);
        }
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
        for (size_t i = 0; i < affected.n; i++)
            if (!digests_has(&refd, affected.d[i]))
                drop_image(st, affected.d[i], stats ? stats : &local);
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
        json_t *refs = load_refs(st), *list;
        const char *nm;
        void *it;
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
            drop_image(st, victim, stats);
        free(images.d);
        if (r < 0)
            break;
    }
    vhpc_store_unlock(st);
    return r;
}
