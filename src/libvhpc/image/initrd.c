/*
 * initrd.c - the initramfs of a minimal image (image.h lays out what is
 * in it): the base layout (directories, device nodes, passwd, the kernel it
 * was made for), vhpc-agent as /init, static busybox with its applets as
 * symlinks, the kernel modules (modules.c), then what the build asks for
 * with its closure (closure.c) and the environment, all collected in a
 * tree (tree.c) and written as one deterministic cpio archive.  The same
 * initramfs is the boot initramfs of full images (full.c).
 */
#include "image.h"
#include "closure.h"
#include "describe.h"
#include "kernel.h"
#include "modules.h"
#include "fs.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- busybox ------------------------------------------------------------ */

static int add_busybox(struct img_build *b, char *path_out, size_t len, vhpc_err_t *err)
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
    struct img_elf ei;
    img_elf_inspect(bb, &ei);
    if (!ei.elf || ei.needed || ei.interp[0])
        return vhpc_err_setmsg(err, -EINVAL,
                               "%s is not a static binary (install busybox-static, or set "
                               "VHPC_BUSYBOX)",
                               bb);
    int r = img_put_file(&b->t, "bin/busybox", bb, 0755, err);
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
        if ((r = img_put_link(&b->t, line, "/bin/busybox", 1, err)) < 0)
            break;
    }
    free(out);
    return r < 0 ? r : 0;
}

/* ---- the base layout ---------------------------------------------------- */

static int add_base(struct img_build *b, const struct vhpc_kernel *k, vhpc_err_t *err)
{
    static const char *const top[] = {"bin", "sbin", "lib", "lib64", NULL};
    int r = 0;
    for (int i = 0; top[i] && r >= 0; i++) {
        char host[32], target[PATH_MAX];
        snprintf(host, sizeof(host), "/%s", top[i]);
        ssize_t n = readlink(host, target, sizeof(target) - 1);
        if (n > 0) { /* merged /usr: mirror the host's links */
            target[n] = 0;
            r = img_put_link(&b->t, top[i], target, 0, err);
        } else {
            r = img_put_dir(&b->t, top[i], 0755, err);
        }
    }
    static const struct {
        const char *path;
        unsigned perm;
    } dirs[] = {{"usr/bin", 0755}, {"usr/sbin", 0755}, {"usr/lib", 0755},  {"proc", 0555},
                {"sys", 0555},     {"dev", 0755},      {"tmp", 01777},     {"run", 0755},
                {"mnt", 0755},     {"root", 0700},     {"etc/vhpc", 0755}, {"var/tmp", 01777}};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && r >= 0; i++)
        r = img_put_dir(&b->t, dirs[i].path, dirs[i].perm, err);
    if (r >= 0)
        r = img_put_chr(&b->t, "dev/console", 0600, 5, 1, err);
    if (r >= 0)
        r = img_put_chr(&b->t, "dev/null", 0666, 1, 3, err);
    if (r >= 0)
        r = img_put_data(&b->t, "etc/passwd",
                         "root:x:0:0:root:/root:/bin/sh\n"
                         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                         0644, err);
    if (r >= 0)
        r = img_put_data(&b->t, "etc/group", "root:x:0:\nnogroup:x:65534:\n", 0644, err);
    if (r >= 0)
        r = img_put_data(&b->t, "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n", 0644, err);
    if (r >= 0)
        r = img_put_data(&b->t, "etc/nsswitch.conf",
                         "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n", 0644,
                         err);
    if (r >= 0) {
        /* The kernel the image was built for: part of the digest. */
        char text[256];
        snprintf(text, sizeof(text), "kernel_version=%s\nkernel_sha256=%s\n", k->version,
                 k->sha256);
        r = img_put_data(&b->t, "etc/vhpc/image", text, 0644, err);
    }
    return r < 0 ? r : 0;
}
static void free_build(struct img_build *b)
{
    img_tree_free(&b->t);
    img_strv_free(&b->libs);
    img_strv_free(&b->unresolved);
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

/* spec->add: host paths (relative to the working directory or absolute)
 * with their closure. */
static int add_paths(struct img_build *b, const char *const *add, json_t *inputs)
{
    vhpc_err_t *err = b->err;
    int r;
    for (size_t i = 0; add && add[i]; i++) {
        char abs[PATH_MAX];
        const char *a = add[i];
        if (a[0] != '/') {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof(cwd)))
                return vhpc_err_set(err, -errno, "getcwd");
            if ((r = vhpc__pathf(err, abs, sizeof(abs), "%s/%s", cwd, a)) < 0)
                return r;
            a = abs;
        }
        if ((r = img_add_host(b, a, ADD_EXPLICIT, 0)) < 0 ||
            (r = img_add_input(inputs, "add", a, err)) < 0)
            return vhpc_err_wrap(err, "adding %s", add[i]);
    }
    return 0;
}

/* spec->files: "/HOST=/IMAGE", a host file at another path, with its
 * closure. */
static int add_files(struct img_build *b, const char *const *files, json_t *inputs)
{
    vhpc_err_t *err = b->err;
    int r;
    for (size_t i = 0; files && files[i]; i++) {
        const char *f = files[i], *eq = strchr(f, '=');
        char host[PATH_MAX];
        if (!eq || eq == f || eq[1] != '/' || (size_t)(eq - f) >= sizeof(host) || f[0] != '/')
            return vhpc_err_setmsg(err, -EINVAL, "'%s': expected /HOST/PATH=/IMAGE/PATH", f);
        memcpy(host, f, (size_t)(eq - f));
        host[eq - f] = 0;
        if ((r = img_put_file(&b->t, eq + 2, host, 0755, err)) < 0 ||
            (r = img_add_closure(b, host, ADD_EXPLICIT, 0)) < 0 ||
            (r = img_add_input(inputs, "file", host, err)) < 0)
            return vhpc_err_wrap(err, "adding %s", f);
    }
    return 0;
}

/* spec->env: "KEY=VALUE" lines of /etc/vhpc/env (none: no file). */
static int put_env(struct img_tree *t, const char *const *env, vhpc_err_t *err)
{
    if (!env || !env[0])
        return 0;
    size_t len = 1;
    for (size_t i = 0; env[i]; i++) {
        const char *e = env[i], *eq = strchr(e, '=');
        if (!eq || eq == e || strchr(e, '\n'))
            return vhpc_err_setmsg(err, -EINVAL, "environment '%s': expected KEY=VALUE", e);
        len += strlen(e) + 1;
    }
    char *text = malloc(len);
    if (!text)
        return vhpc_err_set(err, -ENOMEM, "environment");
    text[0] = 0;
    for (size_t i = 0; env[i]; i++) {
        strcat(text, env[i]);
        strcat(text, "\n");
    }
    int r = img_put_data(t, "etc/vhpc/env", text, 0644, err);
    free(text);
    return r;
}

/* Write the tree to out_path; its digest and size into out. */
static int write_initrd(struct img_tree *t, const char *out_path, struct vhpc_initrd *out,
                        vhpc_err_t *err)
{
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "creating %s", out_path);
    int r = img_tree_write_cpio(t, fd, out->digest, &out->size, err);
    if (close(fd) < 0 && r >= 0)
        r = vhpc_err_set(err, -errno, "writing %s", out_path);
    return r;
}

int vhpc_initrd_build(const struct vhpc_image_spec *spec, const char *agent_path,
                      const char *rsh_path, const struct vhpc_kernel *k, const char *out_path,
                      struct vhpc_initrd *out, vhpc_err_t *err)
{
    struct img_build b = {.err = err};
    struct img_strv loaded = {0};
    char busybox[PATH_MAX];
    json_t *inputs = NULL;
    int r;
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
    if ((r = img_put_file(&b.t, "init", agent_path, 0755, err)) < 0 ||
        (rsh_path && (r = img_put_file(&b.t, "bin/vhpc-rsh", rsh_path, 0755, err)) < 0))
        goto out;
    if ((r = img_add_closure(&b, agent_path, ADD_EXPLICIT, 0)) < 0 ||
        (rsh_path && (r = img_add_closure(&b, rsh_path, ADD_EXPLICIT, 0)) < 0))
        goto out;
    if ((r = add_busybox(&b, busybox, sizeof(busybox), err)) < 0)
        goto out;
    if ((r = img_add_modules(&b.t, k, spec->modules, &loaded, err)) < 0)
        goto out;
    if (!(inputs = json_array()) || (r = img_add_input(inputs, "agent", agent_path, err)) < 0 ||
        (rsh_path && (r = img_add_input(inputs, "rsh", rsh_path, err)) < 0) ||
        (r = img_add_input(inputs, "busybox", busybox, err)) < 0) {
        r = r < 0 ? r : vhpc_err_set(err, -ENOMEM, "inputs");
        goto out;
    }
    if ((r = add_paths(&b, spec->add, inputs)) < 0 ||
        (r = add_files(&b, spec->files, inputs)) < 0 || (r = put_env(&b.t, spec->env, err)) < 0)
        goto out;
    img_strv_sort_unique(&b.libs);
    if ((r = write_initrd(&b.t, out_path, out, err)) < 0)
        goto out;
    /* What went in, for the manifest: the host files (to find their
     * packages) and the shared objects by name (for lib: requirements). */
    img_tree_contents(&b.t, &out->host_files, &out->libs);
    out->inputs = inputs;
    inputs = NULL;
    out->modules = img_strv_json(&loaded);
    out->unresolved = img_strv_json(&b.unresolved);
    r = 0;
out:
    if (r < 0)
        unlink(out_path);
    json_decref(inputs);
    free_build(&b);
    img_strv_free(&loaded);
    return r;
}
