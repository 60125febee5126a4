/*
 * image.c - minimal images: collect the initramfs's entries into an
 * in-memory tree (path -> dir, file, symlink, device node), then write them
 * sorted as a cpio newc archive whose SHA-256 names the image; plus lookup
 * and listing in the store.  Layout and contents: image.h.
 *
 * The tree mirrors the host's /bin, /sbin, /lib, /lib64 (symlinks into /usr
 * on a merged-/usr host), so that files added at their host paths, and the
 * symlinks met on the way to them (lib -> usr/lib, libfoo.so.1 ->
 * libfoo.so.1.2.3, ...), land where the programs expect them.  Every path
 * put into the tree is first resolved through the tree's own symlinks, so a
 * directory is never shadowed by a link of the same name.
 *
 * Shared libraries are found by asking glibc's dynamic loader (the file's
 * PT_INTERP, or /lib64/ld-linux-x86-64.so.2 for a library) with
 * LD_TRACE_LOADED_OBJECTS=1, which is what ldd does; the loader prints the
 * whole transitive closure.  Only files with DT_NEEDED entries are asked
 * (the loader crashes on static non-PIE executables such as busybox), and
 * only glibc's loader is run (another loader might run the program).
 * Libraries opened with dlopen() are not seen: add their directory.
 */
#include "image.h"
#include "cpio.h"
#include "kernel.h"
#include "store.h"
#include "fs.h"
#include "paths.h"
#include "proc.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

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

#define DEFAULT_LOADER "/lib64/ld-linux-x86-64.so.2"

/* ---- string lists ------------------------------------------------------- */

struct strv {
    char **v;
    size_t n, cap;
};

static int strv_push(struct strv *s, const char *str)
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

static void strv_sort_unique(struct strv *s)
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

static void strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static json_t *strv_json(const struct strv *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->n; i++)
        json_array_append_new(a, json_string(s->v[i]));
    return a;
}

/* ---- the tree of initramfs entries ------------------------------------- */

enum ent_type { E_DIR, E_FILE, E_DATA, E_LINK, E_CHR };

struct ent {
    char *path; /* inside the image, no leading '/' */
    enum ent_type type;
    unsigned perm;
    char *src;  /* E_FILE: host path */
    char *data; /* E_DATA: contents; E_LINK: target */
    size_t len;
    unsigned major, minor; /* E_CHR */
    int weak;              /* a busybox applet: any other entry replaces it */
    int implicit;          /* a parent directory nobody asked for */
};

struct tree {
    struct ent *v;
    size_t n, cap;
    size_t *tab; /* open addressing: index + 1, 0 = empty */
    size_t tabcap;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct ent *tree_get(struct tree *t, const char *path)
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

static int tree_grow(struct tree *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct ent *nv = realloc(t->v, cap * sizeof(*nv));
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
static int tree_insert(struct tree *t, struct ent *e)
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

static void ent_free(struct ent *e)
{
    free(e->path);
    free(e->src);
    free(e->data);
}

static void tree_free(struct tree *t)
{
    for (size_t i = 0; i < t->n; i++)
        ent_free(&t->v[i]);
    free(t->v);
    free(t->tab);
    memset(t, 0, sizeof(*t));
}

/* One step of a lexical path walk: skip slashes, apply "." and ".." to res
 * (length *rl), then append the next component, after a '/' when `abs` or
 * when res is not empty.  Returns 1 with *last telling whether it was the
 * final component, 0 at the end of the path, or -ENAMETOOLONG; *p moves
 * past what was consumed (so it is the rest of the path). */
static int path_step(const char **p, char *res, size_t *rl, size_t cap, bool abs, int *last)
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
static int tree_canon(struct tree *t, const char *path, char *out, size_t outlen)
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
        while ((step = path_step(&rest, res, &rl, sizeof(res), false, &last)) > 0) {
            if (last)
                break;
            struct ent *e = tree_get(t, res);
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

static const char *type_name(enum ent_type t)
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

static int same_ent(const struct ent *a, const struct ent *b)
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
 * directories.  Takes ownership of e's strings (freed on every path).
 * Returns 1 if the entry was added, 0 if an equal one was already there (or
 * e is weak and something is there), negative on a conflict. */
static int tree_put(struct tree *t, const char *path, struct ent *e, vhpc_err_t *err)
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
        struct ent *p = tree_get(t, canon);
        if (!p) {
            struct ent d = {.path = strdup(canon), .type = E_DIR, .perm = 0755, .implicit = 1};
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
    struct ent *old = tree_get(t, canon);
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

static int put_dir(struct tree *t, const char *path, unsigned perm, vhpc_err_t *err)
{
    struct ent e = {.path = strdup(path), .type = E_DIR, .perm = perm};
    return e.path ? tree_put(t, path, &e, err) : vhpc_err_set(err, -ENOMEM, "image tree");
}

static int put_link(struct tree *t, const char *path, const char *target, int weak, vhpc_err_t *err)
{
    struct ent e = {
        .path = strdup(path), .type = E_LINK, .perm = 0777, .data = strdup(target), .weak = weak};
    if (!e.path || !e.data) {
        ent_free(&e);
        return vhpc_err_set(err, -ENOMEM, "image tree");
    }
    return tree_put(t, path, &e, err);
}

static int put_file(struct tree *t, const char *path, const char *src, unsigned perm,
                    vhpc_err_t *err)
{
    struct ent e = {.path = strdup(path), .type = E_FILE, .perm = perm, .src = strdup(src)};
    if (!e.path || !e.src) {
        ent_free(&e);
        return vhpc_err_set(err, -ENOMEM, "image tree");
    }
    return tree_put(t, path, &e, err);
}

static int put_data(struct tree *t, const char *path, const char *text, unsigned perm,
                    vhpc_err_t *err)
{
    struct ent e = {.path = strdup(path),
                    .type = E_DATA,
                    .perm = perm,
                    .data = strdup(text),
                    .len = strlen(text)};
    if (!e.path || !e.data) {
        ent_free(&e);
        return vhpc_err_set(err, -ENOMEM, "image tree");
    }
    return tree_put(t, path, &e, err);
}

static int put_chr(struct tree *t, const char *path, unsigned perm, unsigned major, unsigned minor,
                   vhpc_err_t *err)
{
    struct ent e = {
        .path = strdup(path), .type = E_CHR, .perm = perm, .major = major, .minor = minor};
    return e.path ? tree_put(t, path, &e, err) : vhpc_err_set(err, -ENOMEM, "image tree");
}

/* ---- ELF: does a file need the dynamic loader? ------------------------- */

struct elf_info {
    int elf;    /* it is an ELF file */
    int needed; /* ELF64 x86-64 with DT_NEEDED entries */
    char interp[256];
};

static int read_at(int fd, void *buf, size_t len, off_t off)
{
    ssize_t n = pread(fd, buf, len, off);
    return n == (ssize_t)len ? 0 : -1;
}

static void elf_inspect(const char *path, struct elf_info *ei)
{
    memset(ei, 0, sizeof(*ei));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    unsigned char eh[64];
    if (read_at(fd, eh, sizeof(eh), 0) < 0 || memcmp(eh, "\177ELF", 4) != 0)
        goto out;
    ei->elf = 1;
    uint16_t machine, phentsize, phnum;
    uint64_t phoff;
    memcpy(&machine, eh + 0x12, 2);
    if (eh[4] != 2 || eh[5] != 1 || machine != 62 /* EM_X86_64 */)
        goto out;
    memcpy(&phoff, eh + 0x20, 8);
    memcpy(&phentsize, eh + 0x36, 2);
    memcpy(&phnum, eh + 0x38, 2);
    if (phentsize < 56 || phnum > 512)
        goto out;
    for (unsigned i = 0; i < phnum; i++) {
        unsigned char ph[56];
        if (read_at(fd, ph, sizeof(ph), (off_t)(phoff + (uint64_t)i * phentsize)) < 0)
            goto out;
        uint32_t type;
        uint64_t off, filesz;
        memcpy(&type, ph, 4);
        memcpy(&off, ph + 0x08, 8);
        memcpy(&filesz, ph + 0x20, 8);
        if (type == 3 /* PT_INTERP */ && filesz > 1 && filesz < sizeof(ei->interp)) {
            if (read_at(fd, ei->interp, filesz, (off_t)off) < 0)
                ei->interp[0] = 0;
            ei->interp[filesz] = 0;
        } else if (type == 2 /* PT_DYNAMIC */ && filesz <= (1u << 20)) {
            unsigned char *dyn = malloc(filesz ? filesz : 1);
            if (dyn && read_at(fd, dyn, filesz, (off_t)off) == 0) {
                for (size_t k = 0; k + 16 <= filesz; k += 16) {
                    int64_t tag;
                    memcpy(&tag, dyn + k, 8);
                    if (tag == 0)
                        break;
                    if (tag == 1 /* DT_NEEDED */)
                        ei->needed = 1;
                }
            }
            free(dyn);
        }
    }
out:
    close(fd);
}

/* ---- adding host files with their closure ------------------------------- */

enum add_mode {
    ADD_EXPLICIT, /* asked for: directories recursively, a missing library is an error */
    ADD_INNER,    /* found inside an added directory: missing libraries are recorded */
    ADD_LIB,      /* a library the loader named: its closure is already known */
};

struct build {
    struct tree t;
    struct strv libs;       /* host paths of the shared libraries added */
    struct strv unresolved; /* "file: what the loader could not find" */
    vhpc_err_t *err;
};

static int add_host(struct build *b, const char *path, enum add_mode mode, int depth);

/* Parse the loader's trace output and add each library. */
static int add_closure(struct build *b, const char *file, enum add_mode mode, int depth)
{
    struct elf_info ei;
    elf_inspect(file, &ei);
    if (!ei.needed)
        return 0;
    /* Only the system's glibc loader is run: another one (musl's, or one a
     * hostile binary names) might run the program instead of listing it. */
    const char *loader = ei.interp[0] ? ei.interp : DEFAULT_LOADER;
    char real_l[PATH_MAX], real_d[PATH_MAX];
    if (!realpath(loader, real_l) || !realpath(DEFAULT_LOADER, real_d) ||
        strcmp(real_l, real_d) != 0) {
        if (mode == ADD_EXPLICIT)
            return vhpc_err_setmsg(b->err, -ENOTSUP,
                                   "%s: dynamic loader %s is not the system's glibc loader %s; "
                                   "cannot find its libraries",
                                   file, loader, DEFAULT_LOADER);
        char u[PATH_MAX + 64];
        snprintf(u, sizeof(u), "%s: loader %s", file, loader);
        return strv_push(&b->unresolved, u) < 0 ? vhpc_err_set(b->err, -ENOMEM, "closure") : 0;
    }
    int r = add_host(b, loader, ADD_LIB, depth + 1);
    if (r < 0)
        return vhpc_err_wrap(b->err, "%s: its dynamic loader", file);

    /* The environment, minus preloads, plus the trace switch. */
    size_t ne = 0;
    while (environ[ne])
        ne++;
    const char **env = calloc(ne + 2, sizeof(*env));
    size_t outlen = 1 << 18;
    char *out = malloc(outlen), errbuf[1024];
    if (!env || !out) {
        free(env);
        free(out);
        return vhpc_err_set(b->err, -ENOMEM, "closure of %s", file);
    }
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 && strncmp(environ[i], "LD_TRACE", 8) != 0)
            env[k++] = environ[i];
    env[k++] = "LD_TRACE_LOADED_OBJECTS=1";
    env[k] = NULL;
    const char *argv[] = {loader, file, NULL};
    r = vhpc__run_env(argv, env, NULL, out, outlen, errbuf, sizeof(errbuf), b->err);
    free(env);
    if (r < 0)
        goto out;
    if (r != 0) {
        errbuf[strcspn(errbuf, "\n")] = 0;
        if (mode == ADD_EXPLICIT) {
            r = vhpc_err_setmsg(b->err, -ENOEXEC, "%s: %s failed (status %d): %s", file, loader, r,
                                errbuf);
            goto out;
        }
        char u[PATH_MAX + 1100];
        snprintf(u, sizeof(u), "%s: %s", file, errbuf);
        r = strv_push(&b->unresolved, u) < 0 ? vhpc_err_set(b->err, -ENOMEM, "closure") : 0;
        goto out;
    }
    char *save;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line += strspn(line, " \t");
        char *arrow = strstr(line, " => ");
        char *lib;
        if (arrow) {
            lib = arrow + 4;
            if (strncmp(lib, "not found", 9) == 0) {
                *arrow = 0;
                if (mode == ADD_EXPLICIT) {
                    r = vhpc_err_setmsg(b->err, -ENOENT,
                                        "%s needs %s, which the dynamic loader cannot find", file,
                                        line);
                    goto out;
                }
                char u[PATH_MAX + 300];
                snprintf(u, sizeof(u), "%s: %s not found", file, line);
                if (strv_push(&b->unresolved, u) < 0) {
                    r = vhpc_err_set(b->err, -ENOMEM, "closure");
                    goto out;
                }
                continue;
            }
        } else {
            lib = line;
        }
        char *paren = strstr(lib, " (0x");
        if (paren)
            *paren = 0;
        if (lib[0] != '/' && !(lib[0] == '.' && strchr(lib, '/')))
            continue; /* linux-vdso.so.1, "statically linked" */
        char abs[PATH_MAX];
        if (lib[0] != '/') { /* relative $LD_LIBRARY_PATH entries */
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd)) ||
                vhpc__pathf(b->err, abs, sizeof(abs), "%s/%s", cwd, lib) < 0)
                continue;
        } else {
            snprintf(abs, sizeof(abs), "%s", lib);
        }
        if ((r = add_host(b, abs, ADD_LIB, depth + 1)) < 0) {
            vhpc_err_wrap(b->err, "%s: library", file);
            goto out;
        }
        if (strv_push(&b->libs, abs) < 0) {
            r = vhpc_err_set(b->err, -ENOMEM, "closure");
            goto out;
        }
        /* A library chosen from glibc-hwcaps/<level>/ for this host's CPU:
         * also carry the baseline one, for a guest CPU without that level. */
        char *hw = strstr(abs, "/glibc-hwcaps/");
        if (hw) {
            char *after = strchr(hw + 14, '/');
            if (after) {
                char basepath[PATH_MAX];
                snprintf(basepath, sizeof(basepath), "%.*s%s", (int)(hw - abs), abs, after);
                if (access(basepath, F_OK) == 0 &&
                    (r = add_host(b, basepath, ADD_LIB, depth + 1)) < 0)
                    goto out;
            }
        }
    }
    r = 0;
out:
    free(out);
    return r;
}

static int add_dir_contents(struct build *b, const char *dir, int depth);

/* Add host path `path` at the same path in the image, recording every
 * symlink met on the way and following it.  A directory is added with its
 * contents when mode is ADD_EXPLICIT; a regular file with its libraries. */
static int add_host(struct build *b, const char *path, enum add_mode mode, int depth)
{
    vhpc_err_t *err = b->err;
    if (depth > 40)
        return vhpc_err_setmsg(err, -ELOOP, "%s: too many levels of symbolic links", path);
    if (path[0] != '/')
        return vhpc_err_setmsg(err, -EINVAL, "%s: not an absolute path", path);
    char res[PATH_MAX];
    size_t rl = 0;
    res[0] = 0;
    const char *rest = path;
    int last, step;
    while ((step = path_step(&rest, res, &rl, sizeof(res), true, &last)) != 0) {
        if (step < 0)
            return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s: path too long", path);
        struct stat st;
        if (lstat(res, &st) < 0)
            return vhpc_err_set(err, -errno, "%s", res);
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX], next[PATH_MAX];
            ssize_t n = readlink(res, target, sizeof(target) - 1);
            if (n < 0)
                return vhpc_err_set(err, -errno, "reading link %s", res);
            target[n] = 0;
            int r = put_link(&b->t, res + 1, target, 0, err);
            if (r < 0)
                return r;
            if (target[0] == '/') {
                n = snprintf(next, sizeof(next), "%s%s", target, rest);
            } else {
                char *s = strrchr(res, '/');
                n = snprintf(next, sizeof(next), "%.*s/%s%s", (int)(s - res), res, target, rest);
            }
            if (n >= (int)sizeof(next))
                return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s: path too long", path);
            /* Inside an added directory, a link to a directory is kept as a
             * link only: its target is added if it is inside, and following
             * it could pull in half the host. */
            if (last && mode == ADD_INNER) {
                struct stat tst;
                if (stat(next, &tst) < 0 || !S_ISREG(tst.st_mode))
                    return 0;
            }
            return add_host(b, next, mode, depth + 1);
        }
        if (!last) {
            if (!S_ISDIR(st.st_mode))
                return vhpc_err_setmsg(err, -ENOTDIR, "adding %s: %s is not a directory", path,
                                       res);
            int r = put_dir(&b->t, res + 1, st.st_mode & 07777, err);
            if (r < 0)
                return r;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            int r = put_dir(&b->t, res + 1, st.st_mode & 07777, err);
            if (r < 0)
                return r;
            return mode == ADD_EXPLICIT ? add_dir_contents(b, res, depth) : 0;
        }
        if (S_ISREG(st.st_mode)) {
            int r = put_file(&b->t, res + 1, res, st.st_mode & 07777, err);
            if (r <= 0 || mode == ADD_LIB)
                return r < 0 ? r : 0;
            return add_closure(b, res, mode, depth);
        }
        if (mode == ADD_EXPLICIT)
            return vhpc_err_setmsg(err, -EINVAL, "%s: not a file, directory or symlink", res);
        return 0; /* sockets, fifos, devices inside a directory */
    }
    return vhpc_err_setmsg(err, -EINVAL, "refusing to add %s: the whole root file system", path);
}

static int add_dir_contents(struct build *b, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return vhpc_err_set(b->err, -errno, "reading directory %s", dir);
    struct strv names = {0};
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (strv_push(&names, de->d_name) < 0) {
            r = vhpc_err_set(b->err, -ENOMEM, "reading directory %s", dir);
            break;
        }
    }
    closedir(d);
    strv_sort_unique(&names); /* the same order every time: errors are reproducible */
    for (size_t i = 0; r == 0 && i < names.n; i++) {
        char child[PATH_MAX];
        if (snprintf(child, sizeof(child), "%s/%s", dir, names.v[i]) >= (int)sizeof(child)) {
            r = vhpc_err_setmsg(b->err, -ENAMETOOLONG, "%s/%s: path too long", dir, names.v[i]);
            break;
        }
        struct stat st;
        if (lstat(child, &st) < 0) {
            r = vhpc_err_set(b->err, -errno, "adding %s", child);
            break;
        }
        if (S_ISDIR(st.st_mode)) {
            if ((r = put_dir(&b->t, child + 1, st.st_mode & 07777, b->err)) >= 0)
                r = add_dir_contents(b, child, depth + 1);
            r = r < 0 ? r : 0;
        } else {
            r = add_host(b, child, ADD_INNER, depth);
        }
    }
    strv_free(&names);
    return r;
}

/* sha256 of what was added from `path`: a file's contents; for a directory
 * a digest over its sorted listing (relative path, type, mode, content
 * digest or link target). */
struct hash_walk {
    struct strv lines;
    size_t base; /* length of the directory's path */
    vhpc_err_t *err;
};

static int hash_one(const char *p, const struct stat *st, void *arg)
{
    struct hash_walk *w = arg;
    char line[PATH_MAX * 2 + 100], what[PATH_MAX];
    const char *rel = p[w->base] ? p + w->base + 1 : ".";
    if (S_ISLNK(st->st_mode)) {
        ssize_t n = readlink(p, what, sizeof(what) - 1);
        what[n < 0 ? 0 : n] = 0;
        snprintf(line, sizeof(line), "%s l %s", rel, what);
    } else if (S_ISREG(st->st_mode)) {
        int r = vhpc_sha256_file(p, what, w->err);
        if (r < 0)
            return r;
        snprintf(line, sizeof(line), "%s f %o %s", rel, (unsigned)(st->st_mode & 07777), what);
    } else if (S_ISDIR(st->st_mode)) {
        snprintf(line, sizeof(line), "%s d %o", rel, (unsigned)(st->st_mode & 07777));
    } else {
        return 0;
    }
    return strv_push(&w->lines, line) < 0 ? vhpc_err_set(w->err, -ENOMEM, "hashing") : 0;
}

static int input_digest(const char *path, char hex[65], int *is_dir, vhpc_err_t *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return vhpc_err_set(err, -errno, "%s", path);
    *is_dir = S_ISDIR(st.st_mode);
    if (!*is_dir)
        return vhpc_sha256_file(path, hex, err);
    char real[PATH_MAX];
    if (!realpath(path, real))
        return vhpc_err_set(err, -errno, "%s", path);
    struct hash_walk w = {.base = strlen(real), .err = err};
    int r = vhpc__walk(real, hash_one, &w, err);
    if (r < 0) {
        strv_free(&w.lines);
        return vhpc_err_wrap(err, "hashing %s", path);
    }
    struct strv lines = w.lines;
    strv_sort_unique(&lines);
    struct vhpc_sha256 s;
    vhpc_sha256_init(&s);
    for (size_t i = 0; i < lines.n; i++) {
        vhpc_sha256_update(&s, lines.v[i], strlen(lines.v[i]));
        vhpc_sha256_update(&s, "\n", 1);
    }
    vhpc_sha256_hex(&s, hex);
    strv_free(&lines);
    return 0;
}

/* ---- kernel modules ----------------------------------------------------- */

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

/* Put the wanted modules and their dependencies into the tree, and write
 * /etc/vhpc/modules (load order) and a modules.dep of just those. */
static int add_modules(struct build *b, const struct vhpc_kernel *k, const char *const *extra,
                       struct strv *loaded, vhpc_err_t *err)
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
        if ((r = put_file(&b->t, ipath, src, 0644, err)) < 0)
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
        if ((r = strv_push(loaded, order[i]->name)) < 0) {
            r = vhpc_err_set(err, -ENOMEM, "modules");
            break;
        }
    }
    if (r >= 0)
        r = put_data(&b->t, "etc/vhpc/modules", list, 0644, err);
    if (r >= 0) {
        char ipath[PATH_MAX];
        snprintf(ipath, sizeof(ipath), "lib/modules/%s/modules.dep", k->version);
        r = put_data(&b->t, ipath, dep, 0644, err);
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

/* ---- busybox ------------------------------------------------------------ */

static int add_busybox(struct build *b, char *path_out, size_t len, vhpc_err_t *err)
{
    const char *env = getenv("VHPC_BUSYBOX");
    const char *cands[] = {env && env[0] ? env : NULL, "/bin/busybox", "/usr/bin/busybox", NULL};
    const char *bb = NULL;
    for (int i = 0; i < 3 && !bb; i++)
        if (cands[i] && access(cands[i], X_OK) == 0)
            bb = cands[i];
    if (!bb)
        return vhpc_err_setmsg(err, -ENOENT,
                               "busybox not found (install busybox-static, or set VHPC_BUSYBOX)");
    snprintf(path_out, len, "%s", bb);
    struct elf_info ei;
    elf_inspect(bb, &ei);
    if (!ei.elf || ei.needed || ei.interp[0])
        return vhpc_err_setmsg(err, -EINVAL,
                               "%s is not a static binary (install busybox-static, or set "
                               "VHPC_BUSYBOX)",
                               bb);
    int r = put_file(&b->t, "bin/busybox", bb, 0755, err);
    if (r < 0)
        return r;
    const char *argv[] = {bb, "--list-full", NULL};
    size_t outlen = 1 << 16;
    char *out = malloc(outlen), e[512];
    if (!out)
        return vhpc_err_set(err, -ENOMEM, "busybox");
    r = vhpc__run(argv, NULL, out, outlen, e, sizeof(e), err);
    if (r > 0)
        r = vhpc_err_setmsg(err, -EIO, "%s --list-full failed: %s", bb, e);
    char *save;
    for (char *line = r == 0 ? strtok_r(out, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        /* "bin/sh", "usr/sbin/ip", ...; "linuxrc" (no directory) is skipped. */
        if (!strchr(line, '/') || strstr(line, "..") || strcmp(line, "bin/busybox") == 0)
            continue;
        if ((r = put_link(&b->t, line, "/bin/busybox", 1, err)) < 0)
            break;
    }
    free(out);
    return r < 0 ? r : 0;
}

/* ---- the base layout ---------------------------------------------------- */

static int add_base(struct build *b, const struct vhpc_kernel *k, vhpc_err_t *err)
{
    static const char *const top[] = {"bin", "sbin", "lib", "lib64", NULL};
    int r = 0;
    for (int i = 0; top[i] && r >= 0; i++) {
        char host[32], target[PATH_MAX];
        snprintf(host, sizeof(host), "/%s", top[i]);
        ssize_t n = readlink(host, target, sizeof(target) - 1);
        if (n > 0) { /* merged /usr: mirror the host's links */
            target[n] = 0;
            r = put_link(&b->t, top[i], target, 0, err);
        } else {
            r = put_dir(&b->t, top[i], 0755, err);
        }
    }
    static const struct {
        const char *path;
        unsigned perm;
    } dirs[] = {{"usr/bin", 0755}, {"usr/sbin", 0755}, {"usr/lib", 0755},  {"proc", 0555},
                {"sys", 0555},     {"dev", 0755},      {"tmp", 01777},     {"run", 0755},
                {"mnt", 0755},     {"root", 0700},     {"etc/vhpc", 0755}, {"var/tmp", 01777}};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && r >= 0; i++)
        r = put_dir(&b->t, dirs[i].path, dirs[i].perm, err);
    if (r >= 0)
        r = put_chr(&b->t, "dev/console", 0600, 5, 1, err);
    if (r >= 0)
        r = put_chr(&b->t, "dev/null", 0666, 1, 3, err);
    if (r >= 0)
        r = put_data(&b->t, "etc/passwd",
                     "root:x:0:0:root:/root:/bin/sh\n"
                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                     0644, err);
    if (r >= 0)
        r = put_data(&b->t, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0644, err);
    if (r >= 0)
        r = put_data(&b->t, "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n", 0644, err);
    if (r >= 0)
        r = put_data(&b->t, "etc/nsswitch.conf",
                     "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n", 0644, err);
    if (r >= 0) {
        /* The kernel the image was built for: part of the digest. */
        char text[256];
        snprintf(text, sizeof(text), "kernel_version=%s\nkernel_sha256=%s\n", k->version,
                 k->sha256);
        r = put_data(&b->t, "etc/vhpc/image", text, 0644, err);
    }
    return r < 0 ? r : 0;
}

/* ---- writing ------------------------------------------------------------ */

static int cmp_ent(const void *a, const void *b)
{
    return strcmp((*(struct ent *const *)a)->path, (*(struct ent *const *)b)->path);
}

/* Write the tree sorted by path (parents come before their children). */
static int write_cpio(struct tree *t, int fd, char digest[65], uint64_t *size, vhpc_err_t *err)
{
    struct ent **s = malloc((t->n + 1) * sizeof(*s));
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
        struct ent *e = s[i];
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

/* Record an input of the build in the manifest: role, path, type, sha256. */
static int add_input(json_t *inputs, const char *role, const char *path, vhpc_err_t *err)
{
    char hex[65];
    int is_dir = 0;
    int r = input_digest(path, hex, &is_dir, err);
    if (r < 0)
        return r;
    json_t *in = json_pack("{s:s, s:s, s:s, s:s}", "role", role, "path", path, "type",
                           is_dir ? "dir" : "file", "sha256", hex);
    if (!in || json_array_append_new(inputs, in) < 0)
        return vhpc_err_set(err, -ENOMEM, "recording input %s", path);
    return 0;
}

static void free_build(struct build *b)
{
    tree_free(&b->t);
    strv_free(&b->libs);
    strv_free(&b->unresolved);
}

void vhpc_initrd_free(struct vhpc_initrd *i)
{
    json_decref(i->inputs);
    json_decref(i->modules);
    json_decref(i->libs);
    json_decref(i->unresolved);
    json_decref(i->host_files);
    memset(i, 0, sizeof(*i));
}

int vhpc_initrd_build(const struct vhpc_image_spec *spec, const char *agent_path,
                      const char *rsh_path, const struct vhpc_kernel *k, const char *out_path,
                      struct vhpc_initrd *out, vhpc_err_t *err)
{
    struct build b = {.err = err};
    struct strv loaded = {0};
    char busybox[PATH_MAX];
    json_t *inputs = NULL;
    int r, fd = -1;
    memset(out, 0, sizeof(*out));

    if (!agent_path || access(agent_path, R_OK) < 0) {
        r = vhpc_err_set(err, agent_path ? -errno : -EINVAL, "vhpc-agent binary %s",
                         agent_path ? agent_path : "(none given)");
        goto out;
    }
    if (rsh_path && access(rsh_path, R_OK) < 0) {
        r = vhpc_err_set(err, -errno, "vhpc-rsh binary %s", rsh_path);
        goto out;
    }
    /* Collect: base layout, agent, busybox, modules, then what was asked
     * for (which may replace busybox applets but nothing else). */
    if ((r = add_base(&b, k, err)) < 0)
        goto out;
    if ((r = put_file(&b.t, "init", agent_path, 0755, err)) < 0 ||
        (rsh_path && (r = put_file(&b.t, "bin/vhpc-rsh", rsh_path, 0755, err)) < 0))
        goto out;
    if ((r = add_closure(&b, agent_path, ADD_EXPLICIT, 0)) < 0 ||
        (rsh_path && (r = add_closure(&b, rsh_path, ADD_EXPLICIT, 0)) < 0))
        goto out;
    if ((r = add_busybox(&b, busybox, sizeof(busybox), err)) < 0)
        goto out;
    if ((r = add_modules(&b, k, spec->modules, &loaded, err)) < 0)
        goto out;
    if (!(inputs = json_array()) || (r = add_input(inputs, "agent", agent_path, err)) < 0 ||
        (rsh_path && (r = add_input(inputs, "rsh", rsh_path, err)) < 0) ||
        (r = add_input(inputs, "busybox", busybox, err)) < 0) {
        r = r < 0 ? r : vhpc_err_set(err, -ENOMEM, "inputs");
        goto out;
    }
    for (size_t i = 0; spec->add && spec->add[i]; i++) {
        char abs[PATH_MAX];
        const char *a = spec->add[i];
        if (a[0] != '/') {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd))) {
                r = vhpc_err_set(err, -errno, "getcwd");
                goto out;
            }
            if ((r = vhpc__pathf(err, abs, sizeof(abs), "%s/%s", cwd, a)) < 0)
                goto out;
            a = abs;
        }
        if ((r = add_host(&b, a, ADD_EXPLICIT, 0)) < 0 ||
            (r = add_input(inputs, "add", a, err)) < 0) {
            vhpc_err_wrap(err, "adding %s", spec->add[i]);
            goto out;
        }
    }
    for (size_t i = 0; spec->files && spec->files[i]; i++) {
        const char *f = spec->files[i], *eq = strchr(f, '=');
        char host[PATH_MAX];
        if (!eq || eq == f || eq[1] != '/' || (size_t)(eq - f) >= sizeof(host) || f[0] != '/') {
            r = vhpc_err_setmsg(err, -EINVAL, "'%s': expected /HOST/PATH=/IMAGE/PATH", f);
            goto out;
        }
        memcpy(host, f, (size_t)(eq - f));
        host[eq - f] = 0;
        if ((r = put_file(&b.t, eq + 2, host, 0755, err)) < 0 ||
            (r = add_closure(&b, host, ADD_EXPLICIT, 0)) < 0 ||
            (r = add_input(inputs, "file", host, err)) < 0) {
            vhpc_err_wrap(err, "adding %s", f);
            goto out;
        }
    }
    if (spec->env && spec->env[0]) {
        size_t len = 1;
        for (size_t i = 0; spec->env[i]; i++) {
            const char *e = spec->env[i], *eq = strchr(e, '=');
            if (!eq || eq == e || strchr(e, '\n')) {
                r = vhpc_err_setmsg(err, -EINVAL, "environment '%s': expected KEY=VALUE", e);
                goto out;
            }
            len += strlen(e) + 1;
        }
        char *text = malloc(len);
        if (!text) {
            r = vhpc_err_set(err, -ENOMEM, "environment");
            goto out;
        }
        text[0] = 0;
        for (size_t i = 0; spec->env[i]; i++) {
            strcat(text, spec->env[i]);
            strcat(text, "\n");
        }
        r = put_data(&b.t, "etc/vhpc/env", text, 0644, err);
        free(text);
        if (r < 0)
            goto out;
    }
    strv_sort_unique(&b.libs);

    fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = vhpc_err_set(err, -errno, "creating %s", out_path);
        goto out;
    }
    if ((r = write_cpio(&b.t, fd, out->digest, &out->size, err)) < 0)
        goto out;
    r = close(fd);
    fd = -1;
    if (r < 0) {
        r = vhpc_err_set(err, -errno, "writing %s", out_path);
        goto out;
    }
    /* What went in, for the manifest: the host files (to find their
     * packages) and the shared objects by name (for lib: requirements). */
    json_t *files = json_array(), *libs = json_array();
    struct strv sonames = {0};
    for (size_t i = 0; i < b.t.n; i++) {
        const struct ent *e = &b.t.v[i];
        const char *base = strrchr(e->path, '/');
        base = base ? base + 1 : e->path;
        if (e->type == E_FILE && e->src)
            json_array_append_new(files, json_string(e->src));
        if ((e->type == E_FILE || e->type == E_LINK) && strstr(base, ".so") &&
            (!strncmp(e->path, "lib", 3) || !strncmp(e->path, "usr/lib", 7)))
            strv_push(&sonames, base);
    }
    strv_sort_unique(&sonames);
    for (size_t i = 0; i < sonames.n; i++)
        json_array_append_new(libs, json_string(sonames.v[i]));
    strv_free(&sonames);
    out->inputs = inputs;
    inputs = NULL;
    out->modules = strv_json(&loaded);
    out->libs = libs;
    out->host_files = files;
    out->unresolved = strv_json(&b.unresolved);
    r = 0;
out:
    if (fd >= 0)
        close(fd);
    if (r < 0)
        unlink(out_path);
    json_decref(inputs);
    free_build(&b);
    strv_free(&loaded);
    return r;
}

/* ---- metadata for matching ---------------------------------------------- */

/* "debian-12" from an os-release file (ID and VERSION_ID), and its
 * PRETTY_NAME. */
void vhpc_os_release(const char *path, char *id, size_t idlen, char *pretty, size_t plen)
{
    char name[64] = "unknown", ver[64] = "", line[512];
    snprintf(pretty, plen, "unknown");
    FILE *f = fopen(path, "re");
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = 0;
        char *v = eq + 1;
        size_t n = strlen(v);
        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
            v[n - 1] = 0;
            v++;
        }
        if (!strcmp(line, "ID"))
            snprintf(name, sizeof(name), "%.60s", v);
        else if (!strcmp(line, "VERSION_ID"))
            snprintf(ver, sizeof(ver), "%.60s", v);
        else if (!strcmp(line, "PRETTY_NAME"))
            snprintf(pretty, plen, "%.200s", v);
    }
    if (f)
        fclose(f);
    snprintf(id, idlen, "%s%s%s", name, ver[0] ? "-" : "", ver);
}

/* Add "pkg" -> {version, source, source_version} for each line of
 * dpkg-query's output "pkg\tversion\tsource\tsource_version". */
static void parse_packages(char *text, json_t *pkgs)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *f[4];
        int n = 0;
        for (char *p = line; n < 4; n++) {
            f[n] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                n++;
                break;
            }
            *tab = 0;
            p = tab + 1;
        }
        if (n < 4 || !f[0][0] || !f[1][0])
            continue;
        json_object_set_new(pkgs, f[0],
                            json_pack("{s:s, s:s, s:s}", "version", f[1], "source",
                                      f[2][0] ? f[2] : f[0], "source_version",
                                      f[3][0] ? f[3] : f[1]));
    }
}

#define PKG_FORMAT "${Package}\\t${Version}\\t${source:Package}\\t${source:Version}\\n"

int vhpc_dpkg_packages(const char *admindir, const char *const *names, json_t *pkgs,
                       vhpc_err_t *err)
{
    size_t n = 0;
    while (names && names[n])
        n++;
    const char **argv = calloc(n + 8, sizeof(*argv));
    char admin[PATH_MAX + 16];
    if (!argv)
        return vhpc_err_set(err, -ENOMEM, "listing packages");
    size_t a = 0;
    argv[a++] = "dpkg-query";
    if (admindir) {
        snprintf(admin, sizeof(admin), "--admindir=%s", admindir);
        argv[a++] = admin;
    }
    argv[a++] = "-W";
    argv[a++] = "-f=" PKG_FORMAT;
    for (size_t i = 0; i < n; i++)
        argv[a++] = names[i];
    size_t cap = 4 << 20;
    char *out = malloc(cap), ebuf[512];
    int r = out ? vhpc__run(argv, NULL, out, cap, ebuf, sizeof(ebuf), err) : -ENOMEM;
    if (r >= 0) {
        parse_packages(out, pkgs);
        r = 0;
    }
    free(out);
    free(argv);
    return r;
}

/* The host packages that own the files of an image (dpkg knows many
 * libraries only under their pre-merged-/usr paths). */
static int host_packages(json_t *files, json_t *pkgs, vhpc_err_t *err)
{
    size_t n = json_array_size(files), a = 0;
    const char **argv = calloc(2 * n + 4, sizeof(*argv));
    char **owned = calloc(2 * n + 1, sizeof(*owned));
    int r = 0;
    if (!argv || !owned) {
        r = vhpc_err_set(err, -ENOMEM, "finding packages");
        goto out;
    }
    argv[a++] = "dpkg-query";
    argv[a++] = "-S";
    size_t no = 0;
    for (size_t i = 0; i < n; i++) {
        char real[PATH_MAX];
        const char *f = json_string_value(json_array_get(files, i));
        if (!realpath(f, real))
            continue;
        owned[no] = strdup(real);
        if (owned[no])
            argv[a++] = owned[no++];
        if (!strncmp(real, "/usr/", 5) && (owned[no] = strdup(real + 4)))
            argv[a++] = owned[no++];
    }
    size_t cap = 8 << 20;
    char *out = malloc(cap), ebuf[256];
    if (!out) {
        r = vhpc_err_set(err, -ENOMEM, "finding packages");
        goto out;
    }
    /* Exit status 1 = some paths belong to no package: expected. */
    r = vhpc__run(argv, NULL, out, cap, ebuf, sizeof(ebuf), err);
    if (r < 0) {
        free(out);
        goto out;
    }
    struct strv names = {0};
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char *colon = strstr(line, ": ");
        if (!colon || strncmp(line, "diversion", 9) == 0)
            continue;
        *colon = 0;
        for (char *p = strtok_r(line, ",", &colon); p; p = strtok_r(NULL, ",", &colon)) {
            while (*p == ' ')
                p++;
            char *arch = strchr(p, ':');
            if (arch)
                *arch = 0;
            strv_push(&names, p);
        }
    }
    free(out);
    strv_sort_unique(&names);
    r = 0;
    const char **list = calloc(names.n + 1, sizeof(*list));
    if (!list)
        r = vhpc_err_set(err, -ENOMEM, "finding packages");
    for (size_t i = 0; list && i < names.n; i++)
        list[i] = names.v[i];
    if (list && names.n)
        r = vhpc_dpkg_packages(NULL, list, pkgs, err);
    free(list);
    strv_free(&names);
out:
    for (size_t i = 0; owned && owned[i]; i++)
        free(owned[i]);
    free(owned);
    free(argv);
    return r;
}

/* ---- the store ---------------------------------------------------------- */

int vhpc_image_workdir(char *path, size_t len, vhpc_err_t *err)
{
    struct vhpc_store *st;
    int r = vhpc_store_open(NULL, &st, err);
    if (r < 0)
        return r;
    snprintf(path, len, "%s/tmp/build-XXXXXX", vhpc_store_dir(st));
    vhpc_store_close(st);
    if (!mkdtemp(path))
        return vhpc_err_set(err, -errno, "creating a build directory %s", path);
    chmod(path, 0755);
    return 0;
}

static int load(struct vhpc_store *st, const struct vhpc_ref *ref, struct vhpc_image *out,
                vhpc_err_t *err);

int vhpc_image_commit(const char *name, json_t *manifest, const char *const roles[],
                      const char *const paths[], struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_store *st = NULL;
    char digest[65], tmpdir[PATH_MAX];
    uint64_t total = 0;
    int r;
    if (!vhpc_valid_name(name)) {
        r = vhpc_err_setmsg(err, -EINVAL,
                            "invalid image name '%s' (letters, digits, '.', '_', '-'; at most 127)",
                            name);
        goto out;
    }
    if ((r = vhpc_store_open(NULL, &st, err)) < 0)
        goto out;
    /* From the first blob to the tag under the lock: a concurrent gc must
     * not take the blobs before the manifest names them. */
    if ((r = vhpc_store_lock(st, err)) < 0)
        goto out;
    snprintf(tmpdir, sizeof(tmpdir), "%s/tmp/", vhpc_store_dir(st));
    json_t *blobs = json_object();
    json_object_set_new(manifest, "blobs", blobs);
    for (size_t i = 0; roles[i]; i++) {
        uint64_t size;
        int move = !strncmp(paths[i], tmpdir, strlen(tmpdir));
        if ((r = vhpc_store_add_blob(st, paths[i], move, digest, &size, err)) < 0)
            goto out;
        json_t *b = json_pack("{s:s, s:I}", "digest", digest, "size", (json_int_t)size);
        if (!strcmp(roles[i], "rootfs"))
            json_object_set_new(b, "format", json_string("squashfs"));
        json_object_set_new(blobs, roles[i], b);
        total += size;
    }
    json_object_set_new(manifest, "size", json_integer((json_int_t)total));
    json_object_set_new(manifest, "schema", json_integer(1));
    if (!json_object_get(manifest, "arch"))
        json_object_set_new(manifest, "arch", json_string("x86_64"));
    if (!json_object_get(manifest, "parent"))
        json_object_set_new(manifest, "parent", json_null());
    struct vhpc_ref ref;
    if ((r = vhpc_store_put_manifest(st, manifest, digest, err)) < 0 ||
        (r = vhpc_store_tag(st, name, 0, digest, &ref, err)) < 0)
        goto out;
    vhpc_store_touch(st, digest);
    r = load(st, &ref, out, err);
out:
    if (st)
        vhpc_store_unlock(st);
    vhpc_store_close(st);
    json_decref(manifest);
    return r;
}

/* The digest of a build's inputs: sha256 of their canonical JSON. */
void vhpc_json_digest(json_t *v, char hex[65])
{
    char *text = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    struct vhpc_sha256 sha;
    vhpc_sha256_init(&sha);
    if (text)
        vhpc_sha256_update(&sha, text, strlen(text));
    vhpc_sha256_hex(&sha, hex);
    free(text);
}

int vhpc_image_build(const struct vhpc_image_spec *spec, const char *agent_path,
                     const char *rsh_path, struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_initrd ird = {0};
    struct vhpc_kernel k;
    char dir[PATH_MAX], path[PATH_MAX + 16];
    const char *name = spec && spec->name ? spec->name : "";
    json_t *man = NULL;
    int r;
    dir[0] = 0;
    if (!vhpc_valid_name(name)) {
        r = vhpc_err_setmsg(err, -EINVAL,
                            "invalid image name '%s' (letters, digits, '.', '_', '-'; at most 127)",
                            name);
        goto out;
    }
    if ((r = vhpc_kernel_ensure(&k, err)) < 0 ||
        (r = vhpc_image_workdir(dir, sizeof(dir), err)) < 0)
        goto out;
    snprintf(path, sizeof(path), "%s/initrd.cpio", dir);
    if ((r = vhpc_initrd_build(spec, agent_path, rsh_path, &k, path, &ird, err)) < 0)
        goto out;

    char os[64], pretty[256], inputs_digest[65];
    vhpc_os_release("/etc/os-release", os, sizeof(os), pretty, sizeof(pretty));
    json_t *pkgs = json_object(), *env = json_array();
    vhpc_err_t e2 = {0};
    host_packages(ird.host_files, pkgs, &e2); /* without dpkg: no package metadata */
    for (size_t i = 0; spec->env && spec->env[i]; i++)
        json_array_append_new(env, json_string(spec->env[i]));
    json_t *in = json_pack("{s:s, s:O, s:o, s:s, s:s}", "kind", "minimal", "files", ird.inputs,
                           "env", env, "kernel", k.version, "kernel_sha256", k.sha256);
    vhpc_json_digest(in, inputs_digest);
    man =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:O, s:O, s:O, s:O, s:o, s:s, s:s}", "kind", "minimal",
                  "os", os, "os_name", pretty, "kernel", k.version, "packages", pkgs, "libs",
                  ird.libs, "modules", ird.modules, "unresolved", ird.unresolved, "inputs",
                  ird.inputs, "build", in, "inputs_digest", inputs_digest, "format", "cpio-newc");
    if (!man) {
        r = vhpc_err_set(err, -ENOMEM, "writing the manifest");
        goto out;
    }
    const char *roles[] = {"kernel", "initrd", NULL}, *paths[] = {k.vmlinuz, path, NULL};
    r = vhpc_image_commit(name, man, roles, paths, out, err);
    man = NULL;
out:
    json_decref(man);
    vhpc_initrd_free(&ird);
    if (dir[0]) {
        vhpc_err_t e3;
        vhpc__rm_tree(dir, &e3);
    }
    if (r < 0)
        vhpc_err_wrap(err, "building image '%s'", name);
    return r;
}

static int load(struct vhpc_store *st, const struct vhpc_ref *ref, struct vhpc_image *out,
                vhpc_err_t *err)
{
    json_t *m;
    int r = vhpc_store_get_manifest(st, ref->digest, &m, err);
    if (r < 0)
        return r;
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", ref->name);
    out->version = ref->version;
    out->created = ref->created;
    snprintf(out->digest, sizeof(out->digest), "%s", ref->digest);
    const char *kind = json_string_value(json_object_get(m, "kind"));
    const char *kv = json_string_value(json_object_get(m, "kernel"));
    snprintf(out->kind, sizeof(out->kind), "%s", kind ? kind : "?");
    snprintf(out->kernel_version, sizeof(out->kernel_version), "%s", kv ? kv : "");
    const char *os = json_string_value(json_object_get(m, "os"));
    snprintf(out->os, sizeof(out->os), "%s", os ? os : "");
    out->size = (uint64_t)json_integer_value(json_object_get(m, "size"));
    json_t *blobs = json_object_get(m, "blobs");
    static const char *const role[] = {"kernel", "initrd", "rootfs"};
    char *dst[] = {out->kernel, out->initrd, out->rootfs};
    for (int i = 0; i < 3; i++) {
        const char *d =
            json_string_value(json_object_get(json_object_get(blobs, role[i]), "digest"));
        if (d && vhpc_is_digest(d))
            vhpc_store_blob_path(st, d, dst[i], PATH_MAX);
    }
    json_decref(m);
    if (!out->kernel[0] || !out->initrd[0])
        return vhpc_err_setmsg(err, -EBADMSG, "image %.12s: its manifest names no kernel or initrd",
                               ref->digest);
    return 0;
}

/* The system store root keeps, for a user whose own store is elsewhere:
 * read-only, used when the user's own store does not have the image.
 * Only if it exists (opening it must create nothing). */
int vhpc_system_store_open(struct vhpc_store **st, vhpc_err_t *err)
{
    char refs[PATH_MAX];
    if (!strcmp(vhpc__store_root(), vhpc__system_root()))
        return -ENOENT;
    snprintf(refs, sizeof(refs), "%s/store/refs.json", vhpc__system_root());
    if (access(refs, R_OK) < 0)
        return -ENOENT;
    return vhpc_store_open(vhpc__system_root(), st, err);
}

int vhpc_image_find(const char *what, struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_store *st;
    struct vhpc_ref ref;
    int r = vhpc_store_open(NULL, &st, err);
    if (r < 0)
        return r;
    if ((r = vhpc_store_resolve(st, what ? what : "", &ref, err)) == 0 &&
        (r = load(st, &ref, out, err)) == 0)
        vhpc_store_touch(st, ref.digest);
    vhpc_store_close(st);
    vhpc_err_t e2 = {0};
    if (r == -ENOENT && vhpc_system_store_open(&st, &e2) == 0) {
        if (vhpc_store_resolve(st, what ? what : "", &ref, &e2) == 0 &&
            load(st, &ref, out, &e2) == 0) {
            out->system = true;
            vhpc_err_clear(err);
            r = 0;
        }
        vhpc_store_close(st);
    }
    return r;
}

struct verify_ctx {
    struct vhpc_store *st;
    vhpc_err_t *err;
};

static int verify_blob(const char *role, const char *digest, uint64_t size, void *arg)
{
    struct verify_ctx *c = arg;
    (void)size;
    int r = vhpc_store_verify_blob(c->st, digest, c->err);
    return r < 0 ? vhpc_err_wrap(c->err, "its %s", role) : 0;
}

int vhpc_image_store_open(const struct vhpc_image *img, struct vhpc_store **st, vhpc_err_t *err)
{
    return img->system ? vhpc_store_open(vhpc__system_root(), st, err)
                       : vhpc_store_open(NULL, st, err);
}

int vhpc_image_verify(const struct vhpc_image *img, vhpc_err_t *err)
{
    struct vhpc_store *st;
    json_t *m = NULL;
    int r = vhpc_image_store_open(img, &st, err);
    if (r < 0)
        return r;
    struct verify_ctx c = {st, err};
    if ((r = vhpc_store_get_manifest(st, img->digest, &m, err)) == 0)
        r = vhpc_manifest_blobs(m, verify_blob, &c, err);
    json_decref(m);
    vhpc_store_close(st);
    if (r < 0)
        return vhpc_err_wrap(err, "image %s%s%.12s is not usable (build or pull it again)",
                             img->name, img->name[0] ? " " : "", img->digest);
    return 0;
}

struct list_ctx {
    struct vhpc_store *st;
    int (*fn)(const struct vhpc_image *img, void *arg);
    void *arg;
};

static int list_cb(const struct vhpc_ref *ref, void *arg)
{
    struct list_ctx *c = arg;
    struct vhpc_image img;
    vhpc_err_t e2 = {0};
    if (load(c->st, ref, &img, &e2) < 0)
        return 0; /* a damaged manifest is not listed */
    return c->fn(&img, c->arg);
}

int vhpc_image_list(int (*fn)(const struct vhpc_image *img, void *arg), void *arg, vhpc_err_t *err)
{
    struct vhpc_store *st;
    int r = vhpc_store_open(NULL, &st, err);
    if (r < 0)
        return r;
    struct list_ctx c = {st, fn, arg};
    r = vhpc_store_refs(st, list_cb, &c, err);
    vhpc_store_close(st);
    return r;
}

int vhpc_image_list_system(int (*fn)(const struct vhpc_image *img, void *arg), void *arg,
                           vhpc_err_t *err)
{
    struct vhpc_store *st;
    vhpc_err_t e2 = {0};
    if (vhpc_system_store_open(&st, &e2) < 0)
        return 0;
    struct list_ctx c = {st, fn, arg};
    int r = vhpc_store_refs(st, list_cb, &c, err);
    vhpc_store_close(st);
    return r < 0 ? r : 1;
}
