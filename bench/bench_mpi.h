/*
 * bench_mpi.h - what the MPI benchmark programs share on top of
 * bench_common.h: dying with MPI's own words when a call fails.
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

#endif
