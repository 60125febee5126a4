/*
 * closure.c - host files with their closure (closure.h): each path is
 * walked component by component so that the symlinks on the way are
 * recreated in the image, directories are added whole (sorted, so errors
 * are reproducible), and a file's shared libraries are found by asking
 * glibc's dynamic loader (the file's PT_INTERP, or
 * /lib64/ld-linux-x86-64.so.2 for a library) with
 * LD_TRACE_LOADED_OBJECTS=1, which is what ldd does; the loader prints the
 * whole transitive closure.  Only files with DT_NEEDED entries are asked
 * (the loader crashes on static non-PIE executables such as busybox), and
 * only glibc's loader is run (another loader might run the program).
 * Libraries opened with dlopen() are not seen: add their directory.
 */
#include "closure.h"
#include "fs.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define DEFAULT_LOADER "/lib64/ld-linux-x86-64.so.2"

/* ---- ELF: does a file need the dynamic loader? ------------------------- */

static int read_at(int fd, void *buf, size_t len, off_t off)
{
    ssize_t n = pread(fd, buf, len, off);
    return n == (ssize_t)len ? 0 : -1;
}

void img_elf_inspect(const char *path, struct img_elf *ei)
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

/* Run the loader in trace mode and add each library it names. */
int img_add_closure(struct img_build *b, const char *file, enum img_add_mode mode, int depth)
{
    struct img_elf ei;
    img_elf_inspect(file, &ei);
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
        return img_strv_push(&b->unresolved, u) < 0 ? vhpc_err_set(b->err, -ENOMEM, "closure") : 0;
    }
    int r = img_add_host(b, loader, ADD_LIB, depth + 1);
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
        r = img_strv_push(&b->unresolved, u) < 0 ? vhpc_err_set(b->err, -ENOMEM, "closure") : 0;
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
                if (img_strv_push(&b->unresolved, u) < 0) {
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
        if ((r = img_add_host(b, abs, ADD_LIB, depth + 1)) < 0) {
            vhpc_err_wrap(b->err, "%s: library", file);
            goto out;
        }
        if (img_strv_push(&b->libs, abs) < 0) {
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
                    (r = img_add_host(b, basepath, ADD_LIB, depth + 1)) < 0)
                    goto out;
            }
        }
    }
    r = 0;
out:
    free(out);
    return r;
}

static int add_dir_contents(struct img_build *b, const char *dir, int depth);

int img_add_host(struct img_build *b, const char *path, enum img_add_mode mode, int depth)
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
    while ((step = img_path_step(&rest, res, &rl, sizeof(res), true, &last)) != 0) {
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
            int r = img_put_link(&b->t, res + 1, target, 0, err);
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
            return img_add_host(b, next, mode, depth + 1);
        }
        if (!last) {
            if (!S_ISDIR(st.st_mode))
                return vhpc_err_setmsg(err, -ENOTDIR, "adding %s: %s is not a directory", path,
                                       res);
            int r = img_put_dir(&b->t, res + 1, st.st_mode & 07777, err);
            if (r < 0)
                return r;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            int r = img_put_dir(&b->t, res + 1, st.st_mode & 07777, err);
            if (r < 0)
                return r;
            return mode == ADD_EXPLICIT ? add_dir_contents(b, res, depth) : 0;
        }
        if (S_ISREG(st.st_mode)) {
            int r = img_put_file(&b->t, res + 1, res, st.st_mode & 07777, err);
            if (r <= 0 || mode == ADD_LIB)
                return r < 0 ? r : 0;
            return img_add_closure(b, res, mode, depth);
        }
        if (mode == ADD_EXPLICIT)
            return vhpc_err_setmsg(err, -EINVAL, "%s: not a file, directory or symlink", res);
        return 0; /* sockets, fifos, devices inside a directory */
    }
    return vhpc_err_setmsg(err, -EINVAL, "refusing to add %s: the whole root file system", path);
}

static int add_dir_contents(struct img_build *b, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return vhpc_err_set(b->err, -errno, "reading directory %s", dir);
    struct img_strv names = {0};
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (img_strv_push(&names, de->d_name) < 0) {
            r = vhpc_err_set(b->err, -ENOMEM, "reading directory %s", dir);
            break;
        }
    }
    closedir(d);
    img_strv_sort_unique(&names); /* the same order every time: errors are reproducible */
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
            if ((r = img_put_dir(&b->t, child + 1, st.st_mode & 07777, b->err)) >= 0)
                r = add_dir_contents(b, child, depth + 1);
            r = r < 0 ? r : 0;
        } else {
            r = img_add_host(b, child, ADD_INNER, depth);
        }
    }
    img_strv_free(&names);
    return r;
}
