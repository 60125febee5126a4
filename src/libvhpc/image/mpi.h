/*
 * mpi.h - what `--with-mpi` puts into an image, minimal or full (mpi.c):
 * Open MPI, vhpc's libfabric provider ivc at VHPC_FI_DIR, and the settings
 * that make Open MPI use it and the cluster.  Internal to the image
 * builds; the CLI only passes the flag (vhpc_image_spec.with_mpi,
 * vhpc_full_spec.with_mpi).
 */
#ifndef VHPC_IMAGE_MPI_H
#define VHPC_IMAGE_MPI_H

#include "error.h"

#include <limits.h>

/* Where the provider goes in MPI images. */
#define VHPC_FI_DIR "/usr/lib/vhpc/fi"

/* The lists of a spec with MPI's added: the caller's spec points into it
 * until img_mpi_free. */
struct img_mpi {
    const char **add;             /* minimal: the caller's paths, then Open MPI's host files */
    const char **packages;        /* full: the caller's packages, then Open MPI's */
    const char **files;           /* the caller's files, then the provider */
    const char **env;             /* the MPI settings first, then the caller's (which win) */
    char provider[PATH_MAX + 64]; /* "HOST=VHPC_FI_DIR/libivc-fi.so" */
};

/* For a minimal image: Open MPI's launcher, daemon, components and data
 * from the host (each must be there: -ENOENT naming the package).  *add,
 * *files and *env are replaced by lists in m holding them and MPI's. */
int img_mpi_minimal(const char *const **add, const char *const **files, const char *const **env,
                    struct img_mpi *m, vhpc_err_t *err);
/* For a full image: Debian's Open MPI packages, likewise. */
int img_mpi_full(const char *const **packages, const char *const **files, const char *const **env,
                 struct img_mpi *m, vhpc_err_t *err);
void img_mpi_free(struct img_mpi *m);

#endif
