/*
 * mpi_kill - rank 1 kills itself (SIGKILL) in the middle of a message
 * exchange while the others are waiting in receives from it and sending to
 * it.  mpirun must then end the job with a failure, not hang.
 */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    size_t len = 1 << 20;
    char *buf = malloc(len), *in = malloc(len);
    memset(buf, rank, len);
    for (int round = 0;; round++) {
        if (rank == 1 && round == 20) {
            printf("rank 1: killing myself in round %d\n", round);
            fflush(stdout);
            raise(SIGKILL);
        }
        int to = (rank + 1) % n, from = (rank + n - 1) % n;
        MPI_Sendrecv(buf, (int)len, MPI_BYTE, to, 1, in, (int)len, MPI_BYTE, from, 1,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    MPI_Finalize(); /* not reached */
    return 0;
}
