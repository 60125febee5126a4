/*
 * refs.c - the names of images (store.h: "names and versions"): the index
 * refs.json that maps name:version to a digest, how a ref given by a user
 * resolves (name, name:version, name@prefix, digest prefix), tagging and
 * untagging.  The index is one small JSON file rewritten durably under the
 * store's lock, so two builds finishing at once cannot lose each other's
 * version, and one that cannot be read is an error, never an empty store.
 */
#include "store_int.h"

#include "fs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    int r = vhpc__write_file_sync(p, text, strlen(text), vhpc__store_index_mode(st), prev, err);
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
    vhpc__store_manifest_path(st, digest, p, sizeof(p));
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

int vhpc__store_untag(struct vhpc_store *st, const char *ref, int *removed,
                      struct vhpc__digests *affected, vhpc_err_t *err)
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
                    vhpc__digests_add(affected, d);
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
    return vhpc__store_untag(st, ref, removed, NULL, err);
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

int vhpc__store_drop_refs(struct vhpc_store *st, const char *digest, vhpc_err_t *err)
{
    json_t *refs, *list;
    const char *nm;
    void *it;
    int r = load_refs(st, &refs, err);
    if (r < 0)
        return r;
    json_object_foreach_safe(refs, it, nm, list)
    {
        for (size_t i = json_array_size(list); i-- > 0;)
            if (!strcmp(json_string_value(json_object_get(json_array_get(list, i), "digest")) ?: "",
                        digest))
                json_array_remove(list, i);
        if (json_array_size(list) == 0)
            json_object_del(refs, nm);
    }
    r = save_refs(st, refs, err);
    json_decref(refs);
    return r;
}
