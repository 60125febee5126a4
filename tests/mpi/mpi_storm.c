/*
 * mpi_storm SECONDS - every rank streams numbered messages to every other
 * rank for SECONDS, sizes cycling from 8 B to 64 KiB with a 1 MiB message
 * every 64th, each payload a pattern of (source, destination, number).  A
 * receiver checks that from each source the numbers come 0, 1, 2, ...
 * (nothing lost, repeated or reordered) and every byte, until the source's
 * end message, which carries how many it sent.
 *
 * Meant to run while ranks are suspended and re-attached (migrations):
 * the provider must move each stream between IVC and TCP without a trace.
 * Prints one line per rank; exits 0 only if every check held.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG      7
#define MAX_SIZE (1u << 20)
#define END      UINT64_MAX

struct head {
    uint64_t number; /* END: the last message, count follows */
    uint32_t src, dst;
    uint64_t count;
};

static size_t size_of(uint64_t k)
{
    static const size_t sizes[] = {8, 100, 1000, 4096, 16384, 20000, 65536};
    if (k % 64 == 63)
        return MAX_SIZE;
    size_t s = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];
    return s < sizeof(struct head) ? sizeof(struct head) : s;
}

static uint8_t pattern(uint32_t src, uint32_t dst, uint64_t k, size_t i)
{
    return (uint8_t)(src * 131 + dst * 31 + k * 7 + i * 13);
}

static void fill(uint8_t *buf, uint32_t src, uint32_t dst, uint64_t k, size_t len)
{
    struct head h = {.number = k, .src = src, .dst = dst};
    for (size_t i = sizeof(h); i < len; i++)
        buf[i] = pattern(src, dst, k, i);
    memcpy(buf, &h, sizeof(h));
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    double seconds = argc > 1 ? atof(argv[1]) : 5;

    uint8_t **sbuf = calloc(n, sizeof(*sbuf)), **rbuf = calloc(n, sizeof(*rbuf));
    MPI_Request *sreq = calloc(n, sizeof(*sreq)), *rreq = calloc(n, sizeof(*rreq));
    uint64_t *sent = calloc(n, sizeof(*sent)), *expect = calloc(n, sizeof(*expect));
    int *send_done = calloc(n, sizeof(int)), *recv_done = calloc(n, sizeof(int));
    long errors = 0, received = 0;
    for (int p = 0; p < n; p++) {
        sbuf[p] = malloc(MAX_SIZE);
        rbuf[p] = malloc(MAX_SIZE);
        sreq[p] = rreq[p] = MPI_REQUEST_NULL;
        if (p == rank) {
            send_done[p] = recv_done[p] = 1;
            continue;
        }
        MPI_Irecv(rbuf[p], MAX_SIZE, MPI_BYTE, p, TAG, MPI_COMM_WORLD, &rreq[p]);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    int pending = 2 * (n - 1);
    while (pending > 0) {
        int stop = MPI_Wtime() - t0 > seconds;
        for (int p = 0; p < n; p++) {
            int flag;
            if (!send_done[p]) {
                MPI_Test(&sreq[p], &flag, MPI_STATUS_IGNORE);
                if (flag) {
                    size_t len;
                    if (stop) {
                        struct head h = {.number = END, .src = rank, .dst = p, .count = sent[p]};
                        memcpy(sbuf[p], &h, sizeof(h));
                        len = sizeof(h);
                        send_done[p] = 1;
                        pending--;
                    } else {
                        len = size_of(sent[p]);
                        fill(sbuf[p], rank, p, sent[p], len);
                        sent[p]++;
                    }
                    MPI_Isend(sbuf[p], (int)len, MPI_BYTE, p, TAG, MPI_COMM_WORLD, &sreq[p]);
                }
            }
            if (!recv_done[p]) {
                MPI_Status st;
                MPI_Test(&rreq[p], &flag, &st);
                if (!flag)
                    continue;
                int len;
                MPI_Get_count(&st, MPI_BYTE, &len);
                struct head h;
                memcpy(&h, rbuf[p], sizeof(h));
                if (h.src != (uint32_t)p || h.dst != (uint32_t)rank) {
                    errors++;
                    fprintf(stderr, "rank %d: message from %d says %u->%u\n", rank, p, h.src,
                            h.dst);
                }
                if (h.number == END) {
                    if (h.count != expect[p]) {
                        errors++;
                        fprintf(stderr, "rank %d: %d sent %llu messages, %llu arrived\n", rank, p,
                                (unsigned long long)h.count, (unsigned long long)expect[p]);
                    }
                    recv_done[p] = 1;
                    pending--;
                    continue;
                }
                if (h.number != expect[p]) {
                    errors++;
                    fprintf(stderr, "rank %d: from %d message %llu came when %llu was due\n", rank,
                            p, (unsigned long long)h.number, (unsigned long long)expect[p]);
                } else if ((size_t)len != size_of(h.number)) {
                    errors++;
                    fprintf(stderr, "rank %d: from %d message %llu has %d bytes\n", rank, p,
                            (unsigned long long)h.number, len);
                } else {
                    for (size_t i = sizeof(h); i < (size_t)len; i++)
                        if (rbuf[p][i] != pattern(p, rank, h.number, i)) {
                            errors++;
                            fprintf(stderr, "rank %d: from %d message %llu byte %zu differs\n",
                                    rank, p, (unsigned long long)h.number, i);
                            break;
                        }
                }
                expect[p] = h.number + 1;
                received++;
                MPI_Irecv(rbuf[p], MAX_SIZE, MPI_BYTE, p, TAG, MPI_COMM_WORLD, &rreq[p]);
            }
        }
    }
    MPI_Waitall(n, sreq, MPI_STATUSES_IGNORE);
    long all_errors;
    MPI_Allreduce(&errors, &all_errors, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    printf("storm: rank %d received %ld messages from %d ranks in order, %ld errors\n", rank,
           received, n - 1, errors);
    for (int p = 0; p < n; p++) {
        free(sbuf[p]);
        free(rbuf[p]);
    }
    free(sbuf);
    free(rbuf);
    free(sreq);
    free(rreq);
    free(sent);
    free(expect);
    free(send_done);
    free(recv_done);
    MPI_Finalize();
    return all_errors ? 1 : 0;
}
