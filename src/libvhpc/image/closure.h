/*
 * closure.h - host files added to an initramfs with everything they need
 * to run (closure.c): the symlinks on their way, their shared libraries and
 * the dynamic loader, directories with their contents.  Internal to the
 * minimal build.
 */
#ifndef VHPC_IMAGE_CLOSURE_H
#define VHPC_IMAGE_CLOSURE_H

#include "tree.h"

/* What an ELF file asks of the dynamic loader. */
struct img_elf {
    int elf;    /* it is an ELF file */
    int needed; /* ELF64 x86-64 with DT_NEEDED entries */
    char interp[256];
};
/* Never fails: a file that cannot be read is no ELF file. */
void img_elf_inspect(const char *path, struct img_elf *ei);

enum img_add_mode {
    ADD_EXPLICIT, /* asked for: directories recursively, a missing library is an error */
    ADD_INNER,    /* found inside an added directory: missing libraries are recorded */
    ADD_LIB,      /* a library the loader named: its closure is already known */
};

/* An initramfs being filled with host files. */
struct img_build {
    struct img_tree t;
    struct img_strv libs;       /* host paths of the shared libraries added */
    struct img_strv unresolved; /* "file: what the loader could not find" */
    vhpc_err_t *err;
};

/* Add host path `path` (absolute) at the same path in the image, recording
 * every symlink met on the way and following it.  A directory is added
 * with its contents when mode is ADD_EXPLICIT; a regular file with its
 * libraries.  depth counts the links followed so far (0). */
int img_add_host(struct img_build *b, const char *path, enum img_add_mode mode, int depth);
/* Add the shared libraries a file needs (and their loader), as glibc's
 * loader lists them; the file itself is the caller's. */
int img_add_closure(struct img_build *b, const char *file, enum img_add_mode mode, int depth);

#endif
