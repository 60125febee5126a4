/*
 * describe.c - what an image is made of, for its manifest (the keys
 * store.h lists) and for matching requirements (match.h): the digests of
 * a build's inputs, so that the same inputs are found without building
 * again; the OS from os-release; the Debian packages (name, version,
 * source) from dpkg; the shared objects an image holds, by name.
 */
#include "describe.h"
#include "image.h"
#include "sha256.h"
#include "fs.h"
#include "proc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- inputs ----------------------------------------------------------- */

/* sha256 of what was added from `path`: a file's contents; for a directory
 * a digest over its sorted listing (relative path, type, mode, content
 * digest or link target). */
struct hash_walk {
    struct img_strv lines;
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
    return img_strv_push(&w->lines, line) < 0 ? vhpc_err_set(w->err, -ENOMEM, "hashing") : 0;
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
        img_strv_free(&w.lines);
        return vhpc_err_wrap(err, "hashing %s", path);
    }
    struct img_strv lines = w.lines;
    img_strv_sort_unique(&lines);
    struct vhpc_sha256 s;
    vhpc_sha256_init(&s);
    for (size_t i = 0; i < lines.n; i++) {
        vhpc_sha256_update(&s, lines.v[i], strlen(lines.v[i]));
        vhpc_sha256_update(&s, "\n", 1);
    }
    vhpc_sha256_hex(&s, hex);
    img_strv_free(&lines);
    return 0;
}

int img_add_input(json_t *inputs, const char *role, const char *path, vhpc_err_t *err)
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

/* dpkg knows many libraries only under their pre-merged-/usr paths: both
 * are asked. */
int img_host_packages(json_t *files, json_t *pkgs, vhpc_err_t *err)
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
    struct img_strv names = {0};
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
            img_strv_push(&names, p);
        }
    }
    free(out);
    img_strv_sort_unique(&names);
    r = 0;
    const char **list = calloc(names.n + 1, sizeof(*list));
    if (!list)
        r = vhpc_err_set(err, -ENOMEM, "finding packages");
    for (size_t i = 0; list && i < names.n; i++)
        list[i] = names.v[i];
    if (list && names.n)
        r = vhpc_dpkg_packages(NULL, list, pkgs, err);
    free(list);
    img_strv_free(&names);
out:
    for (size_t i = 0; owned && owned[i]; i++)
        free(owned[i]);
    free(owned);
    free(argv);
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

/* ---- contents ------------------------------------------------------------ */

void img_tree_contents(const struct img_tree *t, json_t **files, json_t **libs)
{
    struct img_strv sonames = {0};
    *files = json_array();
    *libs = json_array();
    for (size_t i = 0; i < t->n; i++) {
        const struct img_ent *e = &t->v[i];
        const char *base = strrchr(e->path, '/');
        base = base ? base + 1 : e->path;
        if (e->type == E_FILE && e->src)
            json_array_append_new(*files, json_string(e->src));
        if ((e->type == E_FILE || e->type == E_LINK) && strstr(base, ".so") &&
            (!strncmp(e->path, "lib", 3) || !strncmp(e->path, "usr/lib", 7)))
            img_strv_push(&sonames, base);
    }
    img_strv_sort_unique(&sonames);
    for (size_t i = 0; i < sonames.n; i++)
        json_array_append_new(*libs, json_string(sonames.v[i]));
    img_strv_free(&sonames);
}
