/*
 * bench_mpi.h - what the MPI benchmark programs share on top of
 * bench_common.h: dying with MPI's own words when a call fails, and the
 * library's name for the header line.
 */
#ifndef BENCH_MPI_H
#define BENCH_MPI_H

#include <mpi.h>

#include "bench_common.h"

static inline void mpi_check(int rc, const char *what)
{
    if (rc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, msg, &len);
        bench_die("%s: %s", what, msg);
    }
}

/* The MPI library's version, first line only, for the output's header. */
static inline void mpi_library(char lib[MPI_MAX_LIBRARY_VERSION_STRING])
{
    int len = 0;
    MPI_Get_library_version(lib, &len);
    char *nl = strchr(lib, '\n');
    if (nl)
        *nl = '\0';
}

#endif
