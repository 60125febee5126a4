/*
 * image.c - images in the store (image.h): the minimal build, which ties
 * the kernel (kernel.c), the initramfs (initrd.c) and its description
 * (describe.c) into a manifest; committing built files as an image, the
 * one path by which minimal and full builds (full.c) enter the store;
 * finding an image by name or digest (the user's own store, then the
 * system store), verifying and listing images.
 */
#include "image.h"
#include "describe.h"
#include "kernel.h"
#include "mpi.h"
#include "vhpc/store.h"
#include "fs.h"
#include "paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* vhpc_image_build once the tools are found and MPI's parts added. */
static int build_minimal(const struct vhpc_image_spec *spec, const char *agent_path,
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
    img_host_packages(ird.host_files, pkgs, &e2); /* without dpkg: no package metadata */
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
        vhpc_rm_tree(dir, &e3);
    }
    if (r < 0)
        vhpc_err_wrap(err, "building image '%s'", name);
    return r;
}

int vhpc_image_build(const struct vhpc_image_spec *spec, const char *agent_path,
                     const char *rsh_path, struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_image_spec s;
    struct img_mpi mpi = {0};
    char agent[PATH_MAX], rsh[PATH_MAX];
    int r;
    if (!spec) /* no name: refused as such */
        return build_minimal(spec, agent_path, rsh_path, out, err);
    s = *spec;
    if (!agent_path) {
        if ((r = vhpc_guest_tools(agent, sizeof(agent), rsh, sizeof(rsh), err)) < 0)
            return r;
        agent_path = agent;
        rsh_path = rsh[0] ? rsh : NULL;
    }
    if (s.with_mpi && (r = img_mpi_minimal(&s.add, &s.files, &s.env, &mpi, err)) < 0)
        return r;
    r = build_minimal(&s, agent_path, rsh_path, out, err);
    img_mpi_free(&mpi);
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
    if (!strcmp(vhpc_store_root(), vhpc_system_root()))
        return -ENOENT;
    snprintf(refs, sizeof(refs), "%s/store/refs.json", vhpc_system_root());
    if (access(refs, R_OK) < 0)
        return -ENOENT;
    return vhpc_store_open(vhpc_system_root(), st, err);
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
    return img->system ? vhpc_store_open(vhpc_system_root(), st, err)
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
