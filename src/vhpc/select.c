/*
 * select.c - which image a run boots: named (--image), chosen by
 * requirements (--require, match.h), or built for them (--build-missing:
 * a full Debian image with the packages the requirements name).  Also the
 * job file, which holds the same options one per line.
 */
#include "image.h"
#include "kernel.h"
#include "match.h"
#include "store.h"
#include "vhpc.h"
#include "fs.h"
#include "paths.h"
#include "proc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Is there a binary package of this name in the host's apt lists? */
static int apt_has(const char *pkg)
{
    const char *argv[] = {"apt-cache", "show", "--no-all-versions", pkg, NULL};
    char out[256], ebuf[256];
    vhpc_err_t e2 = {0};
    return vhpc__run(argv, NULL, out, sizeof(out), ebuf, sizeof(ebuf), &e2) == 0 && out[0];
}

/* The Debian package that ships a soname, by the library packaging
 * policy: libfoo.so.6 -> libfoo6, libfftw3.so.3 -> libfftw3-3. */
static int soname_package(const char *so, char *pkg, size_t len)
{
    const char *dot = strstr(so, ".so.");
    if (!dot || !dot[4])
        return -1;
    size_t n = (size_t)(dot - so);
    int digit = n && isdigit((unsigned char)so[n - 1]);
    snprintf(pkg, len, "%.*s%s%s", (int)n, so, digit ? "-" : "", dot + 4);
    for (char *p = pkg; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return 0;
}

/* The packages a full image must have to meet reqs; -EINVAL when a
 * requirement cannot be met by building (another OS, another kernel). */
static int packages_for(const struct vhpc_req *reqs, size_t n, char pkgs[][128], size_t *np,
                        int *with_mpi, vhpc_err_t *err)
{
    struct vhpc_kernel k;
    *np = 0;
    *with_mpi = 0;
    for (size_t i = 0; i < n; i++) {
        const struct vhpc_req *r = &reqs[i];
        char pkg[160];
        switch (r->kind) {
        case REQ_OS:
            if (strcasecmp(r->value, "debian-12") != 0 && r->op == OP_EQ)
                return vhpc_err_setmsg(err, -EINVAL,
                                       "--build-missing builds Debian 12 images; '%s' asks for "
                                       "another OS",
                                       r->text);
            continue;
        case REQ_KERNEL: {
            int rc = vhpc_kernel_ensure(&k, err);
            if (rc < 0)
                return rc;
            json_t *m = json_pack("{s:s}", "kernel", k.version);
            char why[300];
            int ok = vhpc_req_check(r, m, why, sizeof(why));
            json_decref(m);
            if (!ok)
                return vhpc_err_setmsg(err, -EINVAL,
                                       "--build-missing: the guest kernel is %s, so '%s' cannot "
                                       "be met",
                                       k.version, r->text);
            continue;
        }
        case REQ_LIB:
            if (soname_package(r->key, pkg, sizeof(pkg)) < 0 || !apt_has(pkg))
                return vhpc_err_setmsg(err, -ENOENT,
                                       "--build-missing: cannot tell which package ships %s; "
                                       "require the package by name (apt-file search %s)",
                                       r->key, r->key);
            break;
        case REQ_PKG:
            snprintf(pkg, sizeof(pkg), "%s", r->key);
            if (!apt_has(pkg)) {
                /* A source package name: its usual binary package. */
                snprintf(pkg, sizeof(pkg), "%s-bin", r->key);
                if (!apt_has(pkg))
                    return vhpc_err_setmsg(err, -ENOENT,
                                           "--build-missing: no package '%s' (nor '%s-bin') in "
                                           "Debian 12 (apt-cache search %s)",
                                           r->key, r->key, r->key);
            }
            if (!strncmp(r->key, "openmpi", 7) || !strncmp(pkg, "openmpi", 7))
                *with_mpi = 1;
            break;
        }
        if (*np < 64)
            snprintf(pkgs[(*np)++], 128, "%.127s", pkg);
    }
    return 0;
}

/* Build a full image for reqs; its name is derived from them. */
static int build_for(const struct vhpc_req *reqs, size_t n, vhpc_err_t *err)
{
    char pkgs[64][128], name[64], hex[65];
    size_t np;
    int with_mpi, r = packages_for(reqs, n, pkgs, &np, &with_mpi, err);
    if (r < 0)
        return r;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(reqs[i].text));
    vhpc_json_digest(a, hex);
    json_decref(a);
    snprintf(name, sizeof(name), "auto-%.8s", hex);
    char *argv[2 * 64 + 8];
    int argc = 0;
    argv[argc++] = "build";
    argv[argc++] = "--full";
    argv[argc++] = "--name";
    argv[argc++] = name;
    if (with_mpi)
        argv[argc++] = "--with-mpi";
    for (size_t i = 0; i < np; i++) {
        argv[argc++] = "--package";
        argv[argc++] = pkgs[i];
    }
    argv[argc] = NULL;
    fprintf(stderr, "vhpc: building image %s (Debian 12%s", name, with_mpi ? ", --with-mpi" : "");
    for (size_t i = 0; i < np; i++)
        fprintf(stderr, "%s%s", i ? " " : ", packages ", pkgs[i]);
    fprintf(stderr, ")\n");
    if (cmd_image_build_full(argc, argv) != 0)
        return vhpc_err_setmsg(err, -EIO, "--build-missing: building %s failed (above)", name);
    return 0;
}

int cli_select_image(const char *image, const struct vhpc_req *reqs, size_t n, bool build_missing,
                     struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_store *st;
    struct vhpc_ref ref;
    json_t *m = NULL;
    int r;
    if (image) {
        /* Named (the own store, then the system store): it must meet what
         * is also required. */
        if ((r = vhpc_image_find(image, out, err)) < 0 || !n)
            return r;
        if ((r = vhpc_image_store_open(out, &st, err)) < 0)
            return r;
        if ((r = vhpc_store_get_manifest(st, out->digest, &m, err)) == 0) {
            for (size_t i = 0; i < n && r == 0; i++) {
                char why[300];
                if (!vhpc_req_check(&reqs[i], m, why, sizeof(why)))
                    r = vhpc_err_setmsg(err, -EINVAL, "image %s does not meet '%s': %s", image,
                                        reqs[i].text, why);
            }
        }
        json_decref(m);
        vhpc_store_close(st);
        return r;
    }
    /* By requirements: the own store, then the system store, then (with
     * --build-missing) a build into the own store. */
    if ((r = vhpc_store_open(NULL, &st, err)) < 0)
        return r;
    r = cli_print_match(st, reqs, n, &ref, err);
    vhpc_store_close(st);
    vhpc_err_t e2 = {0};
    if (r == -ENOENT && vhpc_system_store_open(&st, &e2) == 0) {
        fprintf(stderr, "vhpc: looking in the system store (%s)\n", vhpc__system_root());
        if (cli_print_match(st, reqs, n, &ref, &e2) == 0) {
            vhpc_err_clear(err);
            r = 0;
        }
        vhpc_store_close(st);
    }
    if (r == -ENOENT && build_missing) {
        vhpc_err_clear(err);
        if ((r = build_for(reqs, n, err)) < 0 || (r = vhpc_store_open(NULL, &st, err)) < 0)
            return r;
        if ((r = cli_print_match(st, reqs, n, &ref, err)) < 0)
            vhpc_err_setmsg(err, r,
                            "--build-missing: the image built still misses a requirement "
                            "(above): Debian 12 does not have what was asked for");
        vhpc_store_close(st);
    }
    if (r < 0)
        return r;
    char full[200];
    snprintf(full, sizeof(full), "%s", ref.digest);
    if ((r = vhpc_image_find(full, out, err)) < 0)
        return r;
    snprintf(out->name, sizeof(out->name), "%s", ref.name);
    out->version = ref.version;
    return 0;
}

int cli_build_minimal(struct vhpc_image *out, vhpc_err_t *err)
{
    char agent[4096], rsh[4096];
    if (vhpc_guest_tools(agent, sizeof(agent), rsh, sizeof(rsh), err) < 0)
        return -ENOENT;
    struct vhpc_image_spec spec = {.name = "minimal"};
    return vhpc_image_build(&spec, agent, rsh[0] ? rsh : NULL, out, err);
}

/* ---- job files ---- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

/* Read a job file: a regular file of at most JOB_MAX bytes of text (no
 * NUL bytes).  Anything else (a device, a FIFO, a huge or binary file) is
 * refused before more than JOB_MAX + 1 bytes are read. */
#define JOB_MAX (64 * 1024)
static int read_job(const char *path, char **text, vhpc_err_t *err)
{
    size_t used;
    char *buf;
    int r = vhpc__read_file_max(path, JOB_MAX, &buf, &used, err);
    if (r == -EFBIG)
        return vhpc_err_setmsg(err, r, "job file %s: larger than %d KiB, not a job file", path,
                               JOB_MAX / 1024);
    if (r < 0)
        return vhpc_err_wrap(err, "job file");
    if (memchr(buf, 0, used)) {
        free(buf);
        return vhpc_err_setmsg(err, -EINVAL, "job file %s: not a text file", path);
    }
    *text = buf;
    return 0;
}

/* At most 24 characters of a job file's line, printable ones only. */
static void excerpt(const char *l, char *out, size_t len)
{
    size_t i = 0;
    for (; l[i] && i < 24 && i + 4 < len; i++)
        out[i] = (l[i] >= 0x20 && l[i] < 0x7f) ? l[i] : '?';
    out[i] = 0;
    if (l[i])
        snprintf(out + i, len - i, "...");
}

int cli_job_file(const char *path, char ***args, int *nargs, char **command, vhpc_err_t *err)
{
    static const char *const keys[] = {"vms",   "vcpus",   "mem",  "image",         "name",
                                       "accel", "require", "each", "build-missing", NULL};
    char *text = NULL;
    int r = read_job(path, &text, err);
    if (r < 0)
        return r;
    int good = 0; /* lines that parsed: only then is a line shown in an error */
    char **v = NULL;
    int n = 0, lineno = 0;
    *command = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        lineno++;
        char *hash = strchr(line, '#');
        char *l = trim(line);
        if (hash && (hash == line || hash < l || strncmp(l, "command", 7) != 0))
            *hash = 0;
        l = trim(l);
        if (!*l)
            continue;
        size_t kl = strcspn(l, " \t=");
        char key[32];
        snprintf(key, sizeof(key), "%.*s", (int)(kl < 31 ? kl : 31), l);
        char *val = l + kl;
        while (*val == ' ' || *val == '\t' || *val == '=')
            val++;
        if (!strcmp(key, "command")) {
            free(*command);
            *command = strdup(val);
            good++;
            continue;
        }
        int known = 0;
        for (int i = 0; keys[i]; i++)
            known |= !strcmp(keys[i], key);
        int flag = !strcmp(key, "each") || !strcmp(key, "build-missing");
        if (!known || (!flag && !*val) || (flag && *val)) {
            char ex[40] = "";
            if (good)
                excerpt(l, ex, sizeof(ex));
            r = vhpc_err_setmsg(err, -EINVAL,
                                "%s:%d: %s%s%sexpected KEY VALUE with KEY one of vms, vcpus, "
                                "mem, image, name, accel, require, command, or a line 'each' or "
                                "'build-missing'%s",
                                path, lineno, good ? "'" : "", ex, good ? "': " : "",
                                good ? "" : " (is this a job file?)");
            break;
        }
        good++;
        char **g = realloc(v, (size_t)(n + 3) * sizeof(*v));
        if (!g) {
            r = vhpc_err_set(err, -ENOMEM, "job file");
            break;
        }
        v = g;
        if (asprintf(&v[n], "--%s", key) < 0) {
            r = vhpc_err_set(err, -ENOMEM, "job file");
            break;
        }
        n++;
        if (!flag)
            v[n++] = strdup(val);
    }
    free(text);
    if (r < 0) {
        for (int i = 0; i < n; i++)
            free(v[i]);
        free(v);
        free(*command);
        *command = NULL;
        return r;
    }
    *args = v;
    *nargs = n;
    return 0;
}
