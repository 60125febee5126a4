/*
 * modules.h - the kernel modules of an initramfs (modules.c).  Internal to
 * the minimal build.
 */
#ifndef VHPC_IMAGE_MODULES_H
#define VHPC_IMAGE_MODULES_H

#include "kernel.h"
#include "tree.h"

/* Put vhpc_image_default_modules, then `extra` (NULL-terminated; may be
 * NULL), with their dependencies into the tree at lib/modules/<v>/, and
 * write /etc/vhpc/modules (load order, dependencies first) and a
 * modules.dep of just those; the names of the modules loaded go to
 * *loaded.  A module the kernel lacks is an error unless it is built in or
 * a default marked optional. */
int img_add_modules(struct img_tree *t, const struct vhpc_kernel *k, const char *const *extra,
                    struct img_strv *loaded, vhpc_err_t *err);

#endif
