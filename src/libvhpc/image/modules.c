/*
 * modules.c - the kernel modules a minimal image loads at boot (image.h):
 * the virtio set every VM needs plus what a build asks for, each with the
 * modules it depends on, taken from the cached kernel's modules.dep
 * (kernel.h writes it) and put into the initramfs as plain .ko files.  The
 * agent loads /etc/vhpc/modules in order with finit_module(), so the order
 * written is a depth-first walk: dependencies before what needs them.
 */
#include "modules.h"
#include "image.h"
#include "fs.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const vhpc_image_default_modules[] = {
    "virtio_pci",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_console",
    "virtio_net",
    "net_failover",
    "failover",
    "virtio_blk",
    NULL,
};
/* Those a kernel may lack (older kernels have no split virtio_pci libraries;
 * failover only matters for virtio_net's standby feature). */
static const char *const optional_modules[] = {"virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                                               "net_failover", "failover", NULL};

struct moddep {
    char *name;
    char *path;  /* relative to the modules dir */
    char *deps;  /* the rest of the modules.dep line: space-separated paths */
    int visited; /* 0, 1 = in progress, 2 = done */
};

struct modset {
    struct moddep *v;
    size_t n;
    char *text; /* modules.dep, which the entries point into */
    char *builtin;
};

static int load_moddep(const char *dir, struct modset *m, vhpc_err_t *err)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/modules.dep", dir);
    int r = vhpc__read_file(path, &m->text, NULL, err);
    if (r < 0)
        return r;
    snprintf(path, sizeof(path), "%s/modules.builtin", dir);
    vhpc_err_t e2;
    if (vhpc__read_file(path, &m->builtin, NULL, &e2) < 0)
        m->builtin = NULL;
    size_t lines = 1;
    for (char *p = m->text; *p; p++)
        lines += *p == '\n';
    m->v = calloc(lines, sizeof(*m->v));
    if (!m->v)
        return vhpc_err_set(err, -ENOMEM, "reading %s", path);
    char *save;
    for (char *line = strtok_r(m->text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = 0;
        struct moddep *d = &m->v[m->n++];
        d->path = line;
        d->deps = colon + 1;
        char name[256];
        vhpc__modname(line, name, sizeof(name));
        if (!(d->name = strdup(name)))
            return vhpc_err_set(err, -ENOMEM, "reading modules.dep");
    }
    return 0;
}

static void free_modset(struct modset *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->v[i].name);
    free(m->v);
    free(m->text);
    free(m->builtin);
}

static struct moddep *mod_by_name(struct modset *m, const char *name)
{
    char norm[256];
    vhpc__modname(name, norm, sizeof(norm));
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].name, norm) == 0)
            return &m->v[i];
    return NULL;
}

static struct moddep *mod_by_path(struct modset *m, const char *path, size_t len)
{
    for (size_t i = 0; i < m->n; i++)
        if (strlen(m->v[i].path) == len && strncmp(m->v[i].path, path, len) == 0)
            return &m->v[i];
    return NULL;
}

static int mod_builtin(struct modset *m, const char *name)
{
    if (!m->builtin)
        return 0;
    char norm[256], n2[256];
    vhpc__modname(name, norm, sizeof(norm));
    for (const char *p = m->builtin; *p;) {
        size_t l = strcspn(p, "\n");
        char line[PATH_MAX];
        snprintf(line, sizeof(line), "%.*s", (int)l, p);
        vhpc__modname(line, n2, sizeof(n2));
        if (strcmp(norm, n2) == 0)
            return 1;
        p += l;
        p += *p == '\n';
    }
    return 0;
}

/* Depth-first: a module's dependencies (listed last-loaded-first in
 * modules.dep), then the module. */
static int mod_order(struct modset *m, struct moddep *d, struct moddep **order, size_t *n,
                     vhpc_err_t *err)
{
    if (d->visited == 2)
        return 0;
    if (d->visited == 1)
        return vhpc_err_setmsg(err, -ELOOP, "module %s: dependency loop", d->name);
    d->visited = 1;
    /* Walk the dependency list backwards. */
    const char *s = d->deps;
    size_t len = strlen(s);
    while (len) {
        while (len && s[len - 1] == ' ')
            len--;
        size_t end = len;
        while (len && s[len - 1] != ' ')
            len--;
        if (end == len)
            break;
        struct moddep *dep = mod_by_path(m, s + len, end - len);
        if (!dep)
            return vhpc_err_setmsg(err, -ENOENT, "module %s needs %.*s, missing from modules.dep",
                                   d->name, (int)(end - len), s + len);
        int r = mod_order(m, dep, order, n, err);
        if (r < 0)
            return r;
    }
    d->visited = 2;
    order[(*n)++] = d;
    return 0;
}

static int is_optional(const char *name)
{
    for (int i = 0; optional_modules[i]; i++)
        if (strcmp(optional_modules[i], name) == 0)
            return 1;
    return 0;
}

static int valid_modname(const char *s)
{
    if (!s[0] || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

int img_add_modules(struct img_tree *t, const struct vhpc_kernel *k, const char *const *extra,
                    struct img_strv *loaded, vhpc_err_t *err)
{
    struct modset m = {0};
    int r = load_moddep(k->modules_dir, &m, err);
    if (r < 0)
        goto out;
    struct moddep **order = calloc(m.n + 1, sizeof(*order));
    size_t n = 0;
    if (!order) {
        r = vhpc_err_set(err, -ENOMEM, "modules");
        goto out;
    }
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass == 0 ? vhpc_image_default_modules : extra;
        for (size_t i = 0; list && list[i]; i++) {
            if (!valid_modname(list[i])) {
                r = vhpc_err_setmsg(err, -EINVAL, "invalid module name '%s'", list[i]);
                goto free_order;
            }
            struct moddep *d = mod_by_name(&m, list[i]);
            if (!d) {
                if (mod_builtin(&m, list[i]) || (pass == 0 && is_optional(list[i])))
                    continue;
                r = vhpc_err_setmsg(err, -ENOENT,
                                    "kernel %s has no module '%s' (not in %s/modules.dep, not "
                                    "built in)",
                                    k->version, list[i], k->modules_dir);
                goto free_order;
            }
            if ((r = mod_order(&m, d, order, &n, err)) < 0)
                goto free_order;
        }
    }
    size_t cap = 4096, used = 0, dcap = 4096, dused = 0;
    char *list = malloc(cap), *dep = malloc(dcap);
    if (!list || !dep) {
        free(list);
        free(dep);
        r = vhpc_err_set(err, -ENOMEM, "modules");
        goto free_order;
    }
    list[0] = dep[0] = 0;
    for (size_t i = 0; i < n; i++) {
        char ipath[PATH_MAX], src[PATH_MAX * 2];
        snprintf(ipath, sizeof(ipath), "lib/modules/%s/%s", k->version, order[i]->path);
        snprintf(src, sizeof(src), "%s/%s", k->modules_dir, order[i]->path);
        if ((r = img_put_file(t, ipath, src, 0644, err)) < 0)
            break;
        size_t need = strlen(ipath) + 3,
               dneed = strlen(order[i]->path) + strlen(order[i]->deps) + 3;
        while (cap - used < need) {
            char *nl = realloc(list, cap *= 2);
            if (!nl) {
                r = vhpc_err_set(err, -ENOMEM, "modules");
                break;
            }
            list = nl;
        }
        while (r >= 0 && dcap - dused < dneed) {
            char *nd = realloc(dep, dcap *= 2);
            if (!nd) {
                r = vhpc_err_set(err, -ENOMEM, "modules");
                break;
            }
            dep = nd;
        }
        if (r < 0)
            break;
        used += (size_t)sprintf(list + used, "/%s\n", ipath);
        dused += (size_t)sprintf(dep + dused, "%s:%s\n", order[i]->path, order[i]->deps);
        if ((r = img_strv_push(loaded, order[i]->name)) < 0) {
            r = vhpc_err_set(err, -ENOMEM, "modules");
            break;
        }
    }
    if (r >= 0)
        r = img_put_data(t, "etc/vhpc/modules", list, 0644, err);
    if (r >= 0) {
        char ipath[PATH_MAX];
        snprintf(ipath, sizeof(ipath), "lib/modules/%s/modules.dep", k->version);
        r = img_put_data(t, ipath, dep, 0644, err);
    }
    free(list);
    free(dep);
    r = r < 0 ? r : 0;
free_order:
    free(order);
out:
    free_modset(&m);
    return r < 0 ? vhpc_err_wrap(err, "kernel modules") : 0;
}
