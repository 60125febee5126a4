/*
 * select.c - which image a run boots (image.h: choosing an image): named,
 * chosen by requirements (match.h) in the user's own store and then the
 * system store, or built for them (--build-missing: a full Debian 12 image
 * with the packages the requirements name, full.h).  What it finds and
 * does goes to the caller's report callbacks; the CLI prints them.
 */
#include "image.h"
#include "full.h"
#include "kernel.h"
#include "match.h"
#include "vhpc/store.h"
#include "paths.h"
#include "proc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PKGS 64

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
        case VHPC_REQ_OS:
            if (strcasecmp(r->value, "debian-12") != 0 && r->op == VHPC_OP_EQ)
                return vhpc_err_setmsg(err, -EINVAL,
                                       "--build-missing builds Debian 12 images; '%s' asks for "
                                       "another OS",
                                       r->text);
            continue;
        case VHPC_REQ_KERNEL: {
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
        case VHPC_REQ_LIB:
            if (soname_package(r->key, pkg, sizeof(pkg)) < 0 || !apt_has(pkg))
                return vhpc_err_setmsg(err, -ENOENT,
                                       "--build-missing: cannot tell which package ships %s; "
                                       "require the package by name (apt-file search %s)",
                                       r->key, r->key);
            break;
        case VHPC_REQ_PKG:
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
static int build_for(const struct vhpc_req *reqs, size_t n, const struct vhpc_select_report *rep,
                     vhpc_err_t *err)
{
    char pkgs[MAX_PKGS][128], name[64], hex[65];
    const char *list[MAX_PKGS + 1];
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
    for (size_t i = 0; i < np; i++)
        list[i] = pkgs[i];
    list[np] = NULL;
    if (rep && rep->building)
        rep->building(name, list, with_mpi, rep->arg);
    struct vhpc_full_spec spec = {.packages = list, .with_mpi = with_mpi};
    struct vhpc_full_image fi;
    if ((r = vhpc_full_image_build(&spec, name, &fi, err)) < 0)
        return vhpc_err_wrap(err, "--build-missing: building %s", name);
    if (rep && rep->built)
        rep->built(&fi.img, fi.reused, fi.inputs_digest, with_mpi, rep->arg);
    return 0;
}

int vhpc_image_pick(const struct vhpc_store *st, const struct vhpc_req *reqs, size_t n,
                    const struct vhpc_select_report *rep, struct vhpc_ref *chosen, vhpc_err_t *err)
{
    struct vhpc_candidate *c = NULL;
    size_t nc = 0;
    int best;
    int r = vhpc_match(st, reqs, n, &c, &nc, &best, err);
    if (r < 0)
        return r;
    if (rep && rep->matched)
        rep->matched(c, nc, best, n, rep->arg);
    if (best == 0)
        *chosen = c[0].ref;
    else
        r = vhpc_err_setmsg(err, -ENOENT,
                            "no image meets the requirements (--build-missing builds one)");
    free(c);
    return r;
}

/* A named image must also meet what is required. */
static int check_named(const char *image, const struct vhpc_req *reqs, size_t n,
                       const struct vhpc_image *img, vhpc_err_t *err)
{
    struct vhpc_store *st;
    json_t *m = NULL;
    int r = vhpc_image_store_open(img, &st, err);
    if (r < 0)
        return r;
    if ((r = vhpc_store_get_manifest(st, img->digest, &m, err)) == 0) {
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
 * build_missing) a build into the own store. */
static int by_requirements(const struct vhpc_req *reqs, size_t n, bool build_missing,
                           const struct vhpc_select_report *rep, struct vhpc_ref *ref,
                           vhpc_err_t *err)
{
    struct vhpc_store *st;
    int r;
    if ((r = vhpc_store_open(NULL, &st, err)) < 0)
        return r;
    r = vhpc_image_pick(st, reqs, n, rep, ref, err);
    vhpc_store_close(st);
    vhpc_err_t e2 = {0};
    if (r == -ENOENT && vhpc_system_store_open(&st, &e2) == 0) {
        if (rep && rep->system_store)
            rep->system_store(vhpc_system_root(), rep->arg);
        if (vhpc_image_pick(st, reqs, n, rep, ref, &e2) == 0) {
            vhpc_err_clear(err);
            r = 0;
        }
        vhpc_store_close(st);
    }
    if (r == -ENOENT && build_missing) {
        vhpc_err_clear(err);
        if ((r = build_for(reqs, n, rep, err)) < 0 || (r = vhpc_store_open(NULL, &st, err)) < 0)
            return r;
        if ((r = vhpc_image_pick(st, reqs, n, rep, ref, err)) < 0)
            vhpc_err_setmsg(err, r,
                            "--build-missing: the image built still misses a requirement "
                            "(above): Debian 12 does not have what was asked for");
        vhpc_store_close(st);
    }
    return r;
}

int vhpc_image_select(const char *image, const struct vhpc_req *reqs, size_t n, bool build_missing,
                      const struct vhpc_select_report *rep, struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_ref ref;
    int r;
    if (image) {
        /* Named (the own store, then the system store). */
        if ((r = vhpc_image_find(image, out, err)) < 0 || !n)
            return r;
        return check_named(image, reqs, n, out, err);
    }
    if ((r = by_requirements(reqs, n, build_missing, rep, &ref, err)) < 0)
        return r;
    char full[200];
    snprintf(full, sizeof(full), "%s", ref.digest);
    if ((r = vhpc_image_find(full, out, err)) < 0)
        return r;
    snprintf(out->name, sizeof(out->name), "%s", ref.name);
    out->version = ref.version;
    return 0;
}
