/*
 * tree.h - the file tree of an initramfs being built (tree.c): entries by
 * path (directories, host files, text, symlinks, device nodes), every path
 * resolved through the tree's own symlinks first, written out sorted as a
 * cpio archive.  Also the string lists the build keeps.  Internal to the
 * minimal build (closure.c, modules.c, initrd.c, describe.c).
 */
#ifndef VHPC_IMAGE_TREE_H
#define VHPC_IMAGE_TREE_H

#include "error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growing list of strings (each strdup'd). */
struct img_strv {
    char **v;
    size_t n, cap;
};
int img_strv_push(struct img_strv *s, const char *str);
/* Sort and drop repeats: the same order every time. */
void img_strv_sort_unique(struct img_strv *s);
void img_strv_free(struct img_strv *s);
json_t *img_strv_json(const struct img_strv *s);

enum img_ent_type { E_DIR, E_FILE, E_DATA, E_LINK, E_CHR };

struct img_ent {
    char *path; /* inside the image, no leading '/' */
    enum img_ent_type type;
    unsigned perm;
    char *src;  /* E_FILE: host path */
    char *data; /* E_DATA: contents; E_LINK: target */
    size_t len;
    unsigned major, minor; /* E_CHR */
    int weak;              /* a busybox applet: any other entry replaces it */
    int implicit;          /* a parent directory nobody asked for */
};

struct img_tree {
    struct img_ent *v;
    size_t n, cap;
    size_t *tab; /* open addressing: index + 1, 0 = empty */
    size_t tabcap;
};
void img_tree_free(struct img_tree *t);

/* Put an entry at path (relative to the image root, resolved through the
 * tree), its missing parent directories too.  1 when added, 0 when an equal
 * entry was there (or a weak one is given and anything is there), negative
 * on a conflict (err says which two entries). */
int img_put_dir(struct img_tree *t, const char *path, unsigned perm, vhpc_err_t *err);
/* weak: a busybox applet, which any other entry at its path replaces. */
int img_put_link(struct img_tree *t, const char *path, const char *target, int weak,
                 vhpc_err_t *err);
int img_put_file(struct img_tree *t, const char *path, const char *src, unsigned perm,
                 vhpc_err_t *err);
int img_put_data(struct img_tree *t, const char *path, const char *text, unsigned perm,
                 vhpc_err_t *err);
int img_put_chr(struct img_tree *t, const char *path, unsigned perm, unsigned major, unsigned minor,
                vhpc_err_t *err);

/* One step of a lexical path walk: skip slashes, apply "." and ".." to res
 * (length *rl), then append the next component, after a '/' when `abs` or
 * when res is not empty.  Returns 1 with *last telling whether it was the
 * final component, 0 at the end of the path, or -ENAMETOOLONG; *p moves
 * past what was consumed (so it is the rest of the path). */
int img_path_step(const char **p, char *res, size_t *rl, size_t cap, bool abs, int *last);

/* Write the tree to fd as a cpio newc archive, sorted by path (parents
 * before their children); its sha256 and size. */
int img_tree_write_cpio(struct img_tree *t, int fd, char digest[65], uint64_t *size,
                        vhpc_err_t *err);

#endif
