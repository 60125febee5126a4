/*
 * tree.c - the file tree of an initramfs being built (tree.h): an in-memory
 * map path -> entry (open addressing over an array), written sorted as a
 * cpio newc archive whose SHA-256 names the initramfs.
 *
 * The tree mirrors the host's /bin, /sbin, /lib, /lib64 (symlinks into /usr
 * on a merged-/usr host), so that files added at their host paths, and the
 * symlinks met on the way to them (lib -> usr/lib, libfoo.so.1 ->
 * libfoo.so.1.2.3, ...), land where the programs expect them.  Every path
 * put into the tree is first resolved through the tree's own symlinks, so a
 * directory is never shadowed by a link of the same name.  Two different
 * entries for one path are an error naming both, except that a busybox
 * applet (weak) gives way to anything else.
 */
#include "tree.h"
#include "cpio.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- string lists ------------------------------------------------------- */

int img_strv_push(struct img_strv *s, const char *str)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **nv = realloc(s->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        s->v = nv;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(str)))
        return -ENOMEM;
    s->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void img_strv_sort_unique(struct img_strv *s)
{
    if (!s->n)
        return;
    qsort(s->v, s->n, sizeof(*s->v), cmp_str);
    size_t o = 1;
    for (size_t i = 1; i < s->n; i++) {
        if (strcmp(s->v[i], s->v[o - 1]) == 0)
            free(s->v[i]);
        else
            s->v[o++] = s->v[i];
    }
    s->n = o;
}

void img_strv_free(struct img_strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

json_t *img_strv_json(const struct img_strv *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->n; i++)
        json_array_append_new(a, json_string(s->v[i]));
    return a;
}
/* ---- the tree of initramfs entries ------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct img_ent *tree_get(struct img_tree *t, const char *path)
{
    if (!t->tabcap)
        return NULL;
    for (size_t i = hash_str(path) & (t->tabcap - 1);; i = (i + 1) & (t->tabcap - 1)) {
        if (!t->tab[i])
            return NULL;
        if (strcmp(t->v[t->tab[i] - 1].path, path) == 0)
            return &t->v[t->tab[i] - 1];
    }
}

static int tree_grow(struct img_tree *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct img_ent *nv = realloc(t->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        t->v = nv;
        t->cap = cap;
    }
    if ((t->n + 1) * 2 > t->tabcap) {
        size_t cap = t->tabcap ? t->tabcap * 2 : 512;
        size_t *nt = calloc(cap, sizeof(*nt));
        if (!nt)
            return -ENOMEM;
        for (size_t k = 0; k < t->n; k++) {
            size_t i = hash_str(t->v[k].path) & (cap - 1);
            while (nt[i])
                i = (i + 1) & (cap - 1);
            nt[i] = k + 1;
        }
        free(t->tab);
        t->tab = nt;
        t->tabcap = cap;
    }
    return 0;
}

/* Append e (whose strings the tree now owns); the caller checked the path is new. */
static int tree_insert(struct img_tree *t, struct img_ent *e)
{
    if (tree_grow(t) < 0)
        return -ENOMEM;
    t->v[t->n] = *e;
    size_t i = hash_str(e->path) & (t->tabcap - 1);
    while (t->tab[i])
        i = (i + 1) & (t->tabcap - 1);
    t->tab[i] = ++t->n;
    return 0;
}

static void ent_free(struct img_ent *e)
{
    free(e->path);
    free(e->src);
    free(e->data);
}

void img_tree_free(struct img_tree *t)
{
    for (size_t i = 0; i < t->n; i++)
        ent_free(&t->v[i]);
    free(t->v);
    free(t->tab);
    memset(t, 0, sizeof(*t));
}

int img_path_step(const char **p, char *res, size_t *rl, size_t cap, bool abs, int *last)
{
    for (;;) {
        *p += strspn(*p, "/");
        if (!**p)
            return 0;
        const char *comp = *p;
        size_t cl = strcspn(comp, "/");
        *p = comp + cl;
        if (cl == 1 && comp[0] == '.')
            continue;
        if (cl == 2 && comp[0] == '.' && comp[1] == '.') {
            char *s = strrchr(res, '/');
            *rl = s ? (size_t)(s - res) : 0;
            res[*rl] = 0;
            continue;
        }
        if (*rl + cl + 2 > cap)
            return -ENAMETOOLONG;
        if (abs || *rl)
            res[(*rl)++] = '/';
        memcpy(res + *rl, comp, cl);
        *rl += cl;
        res[*rl] = 0;
        *last = (*p)[strspn(*p, "/")] == 0;
        return 1;
    }
}

/* Resolve path (relative to the image root) through the tree's symlinks in
 * its directory components, lexically handling "." and "..". */
static int tree_canon(struct img_tree *t, const char *path, char *out, size_t outlen)
{
    char work[PATH_MAX];
    if (snprintf(work, sizeof(work), "%s", path) >= (int)sizeof(work))
        return -ENAMETOOLONG;
    for (int hops = 0; hops < 40; hops++) {
        char res[PATH_MAX];
        size_t rl = 0;
        int restarted = 0;
        res[0] = 0;
        const char *rest = work;
        int last, step;
        while ((step = img_path_step(&rest, res, &rl, sizeof(res), false, &last)) > 0) {
            if (last)
                break;
            struct img_ent *e = tree_get(t, res);
            if (e && e->type == E_LINK) {
                char next[PATH_MAX];
                int n;
                if (e->data[0] == '/') {
                    n = snprintf(next, sizeof(next), "%s%s", e->data, rest);
                } else {
                    char *s = strrchr(res, '/');
                    int dl = s ? (int)(s - res) : 0;
                    n = snprintf(next, sizeof(next), "%.*s/%s%s", dl, res, e->data, rest);
                }
                if (n >= (int)sizeof(next))
                    return -ENAMETOOLONG;
                memcpy(work, next, (size_t)n + 1);
                restarted = 1;
                break;
            }
        }
        if (step < 0)
            return step;
        if (!restarted) {
            if (rl + 1 > outlen)
                return -ENAMETOOLONG;
            memcpy(out, res, rl + 1);
            return 0;
        }
    }
    return -ELOOP;
}

static const char *type_name(enum img_ent_type t)
{
    switch (t) {
    case E_DIR: return "directory";
    case E_FILE:
    case E_DATA: return "file";
    case E_LINK: return "symlink";
    case E_CHR: return "device";
    }
    return "?";
}

static int same_ent(const struct img_ent *a, const struct img_ent *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case E_DIR: return 1;
    case E_FILE: return strcmp(a->src, b->src) == 0;
    case E_LINK: return strcmp(a->data, b->data) == 0;
    case E_DATA: return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
    case E_CHR: return a->major == b->major && a->minor == b->minor;
    }
    return 0;
}

/* Put an entry at path (resolved through the tree), creating missing parent
 * directories (tree.h).  Takes ownership of e's strings (freed on every path).
 * Returns 1 if the entry was added, 0 if an equal one was already there (or
 * e is weak and something is there), negative on a conflict. */
static int tree_put(struct img_tree *t, const char *path, struct img_ent *e, vhpc_err_t *err)
{
    char canon[PATH_MAX];
    int r = tree_canon(t, path, canon, sizeof(canon));
    if (r < 0) {
        ent_free(e);
        return vhpc_err_set(err, r, "image path /%s", path);
    }
    if (!canon[0]) { /* the root itself */
        ent_free(e);
        return 0;
    }
    /* Parents. */
    for (char *s = strchr(canon, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        struct img_ent *p = tree_get(t, canon);
        if (!p) {
            struct img_ent d = {.path = strdup(canon), .type = E_DIR, .perm = 0755, .implicit = 1};
            if (!d.path || tree_insert(t, &d) < 0) {
                free(d.path);
                ent_free(e);
                return vhpc_err_set(err, -ENOMEM, "image tree");
            }
        } else if (p->type != E_DIR) {
            r = vhpc_err_setmsg(err, -ENOTDIR, "image path /%s: /%s is a %s, not a directory", path,
                                canon, type_name(p->type));
            ent_free(e);
            return r;
        }
        *s = '/';
    }
    free(e->path);
    if (!(e->path = strdup(canon))) {
        ent_free(e);
        return vhpc_err_set(err, -ENOMEM, "image tree");
    }
    struct img_ent *old = tree_get(t, canon);
    if (!old) {
        if (tree_insert(t, e) < 0) {
            ent_free(e);
            return vhpc_err_set(err, -ENOMEM, "image tree");
        }
        return 1;
    }
    if (e->weak || same_ent(old, e)) {
        if (old->type == E_DIR && old->implicit && !e->implicit) {
            old->perm = e->perm;
            old->implicit = 0;
        }
        ent_free(e);
        return 0;
    }
    if (old->weak) {
        ent_free(old);
        *old = *e;
        return 1;
    }
    r = vhpc_err_setmsg(err, -EEXIST, "conflicting entries for /%s: a %s%s%s and a %s%s%s", canon,
                        type_name(old->type), old->src ? " from " : "", old->src ? old->src : "",
                        type_name(e->type), e->src ? " from " : "", e->src ? e->src : "");
    ent_free(e);
    return r;
}

/* tree_put for an entry whose strings were just strdup'd: one that failed
 * (NULL) is -ENOMEM. */
static int put_new(struct img_tree *t, const char *path, struct img_ent *e, vhpc_err_t *err)
{
    if (!e->path || (e->type == E_FILE && !e->src) ||
        ((e->type == E_LINK || e->type == E_DATA) && !e->data)) {
        ent_free(e);
        return vhpc_err_set(err, -ENOMEM, "image tree");
    }
    return tree_put(t, path, e, err);
}

int img_put_dir(struct img_tree *t, const char *path, unsigned perm, vhpc_err_t *err)
{
    struct img_ent e = {.path = strdup(path), .type = E_DIR, .perm = perm};
    return put_new(t, path, &e, err);
}

int img_put_link(struct img_tree *t, const char *path, const char *target, int weak,
                 vhpc_err_t *err)
{
    struct img_ent e = {
        .path = strdup(path), .type = E_LINK, .perm = 0777, .data = strdup(target), .weak = weak};
    return put_new(t, path, &e, err);
}

int img_put_file(struct img_tree *t, const char *path, const char *src, unsigned perm,
                 vhpc_err_t *err)
{
    struct img_ent e = {.path = strdup(path), .type = E_FILE, .perm = perm, .src = strdup(src)};
    return put_new(t, path, &e, err);
}

int img_put_data(struct img_tree *t, const char *path, const char *text, unsigned perm,
                 vhpc_err_t *err)
{
    struct img_ent e = {.path = strdup(path),
                        .type = E_DATA,
                        .perm = perm,
                        .data = strdup(text),
                        .len = strlen(text)};
    return put_new(t, path, &e, err);
}

int img_put_chr(struct img_tree *t, const char *path, unsigned perm, unsigned major, unsigned minor,
                vhpc_err_t *err)
{
    struct img_ent e = {
        .path = strdup(path), .type = E_CHR, .perm = perm, .major = major, .minor = minor};
    return put_new(t, path, &e, err);
}

/* ---- writing ------------------------------------------------------------ */

static int cmp_ent(const void *a, const void *b)
{
    return strcmp((*(struct img_ent *const *)a)->path, (*(struct img_ent *const *)b)->path);
}

int img_tree_write_cpio(struct img_tree *t, int fd, char digest[65], uint64_t *size,
                        vhpc_err_t *err)
{
    struct img_ent **s = malloc((t->n + 1) * sizeof(*s));
    struct vhpc_cpio *c = malloc(sizeof(*c));
    int r = 0;
    if (!s || !c) {
        r = vhpc_err_set(err, -ENOMEM, "writing the initramfs");
        goto out;
    }
    for (size_t i = 0; i < t->n; i++)
        s[i] = &t->v[i];
    qsort(s, t->n, sizeof(*s), cmp_ent);
    vhpc_cpio_init(c, fd);
    for (size_t i = 0; i < t->n && r >= 0; i++) {
        struct img_ent *e = s[i];
        switch (e->type) {
        case E_DIR: r = vhpc_cpio_dir(c, e->path, e->perm, err); break;
        case E_FILE: r = vhpc_cpio_file(c, e->path, e->perm, e->src, err); break;
        case E_DATA: r = vhpc_cpio_data(c, e->path, e->perm, e->data, e->len, err); break;
        case E_LINK: r = vhpc_cpio_symlink(c, e->path, e->data, err); break;
        case E_CHR: r = vhpc_cpio_node(c, e->path, e->perm, 1, e->major, e->minor, err); break;
        }
    }
    if (r >= 0)
        r = vhpc_cpio_finish(c, digest, size, err);
out:
    free(s);
    free(c);
    return r < 0 ? r : 0;
}
