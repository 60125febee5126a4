/*
 * mpi_allreduce.c - MPI_Allreduce latency over all the ranks of the job (sum
 * of MPI_DOUBLEs, 8 B and 64 KiB by default), for `make bench-mpi`
 * (run_mpi.sh): Open MPI over the provider ivc, over btl vader and over btl
 * tcp, on the host and across VMs.  Same iteration counts, statistics and
 * output format as the ping-pong (bench_common.h):
 *  - one repetition: a barrier, then `count` MPI_Allreduce back to back;
 *    the value of a repetition is the time per call averaged over the ranks
 *    (as osu_allreduce reports it).  `count` is calibrated during a warm-up
 *    so that a repetition lasts about `rep_ms` (the slowest rank's estimate,
 *    so that every rank runs the same count), at least 8;
 *  - each size is measured in `reps` repetitions and the median is reported;
 *  - data: every rank contributes integers (exact in a double) that depend
 *    on its rank, the element and the repetition; every rank compares the
 *    result with the sum it computes itself, before the timed part of each
 *    size, after it, and after each repetition (the result buffer is cleared
 *    before each), so a broken transport fails the run instead of producing
 *    a number.
 *
 * Output on rank 0, everything but results starts with '#':
 *     allreduce <bytes> <usec per call, median> <min> <max> <calls per rep>
 *
 *   mpirun -np 4 ... mpi_allreduce [--sizes 8,64K] [--quick] [--reps N] [--rep-ms MS]
 */
#include "bench_mpi.h"

#define MAX_SIZES 16

/* What rank `r` contributes at element `i` in round `k`: an integer below
 * 2^20, so that sums over any number of ranks are exact. */
static inline double contribution(int r, size_t i, int k)
{
    return (double)((((uint64_t)r + 1) * 7919u + i * 31u + (uint64_t)k * 104729u) % 1000003u);
}

static void fill(double *send, size_t n, int rank, int k)
{
    for (size_t i = 0; i < n; i++)
        send[i] = contribution(rank, i, k);
}

/* The result of round `k`, computed here without MPI. */
static void expected(double *want, size_t n, int nranks, int k)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < nranks; r++)
            s += contribution(r, i, k);
        want[i] = s;
    }
}

static void verify_or_die(const double *got, const double *want, size_t n, int rank, int k,
                          const char *where)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            bench_die("rank %d: %s: wrong sum: %zu B, round %d, element %zu: %.1f, expected %.1f",
                      rank, where, n * sizeof(double), k, i, got[i], want[i]);
}

/* One untimed, checked MPI_Allreduce of round `k`. */
static void checked_allreduce(double *send, double *recv, double *want, size_t n, int rank,
                              int nranks, int k, const char *where)
{
    fill(send, n, rank, k);
    expected(want, n, nranks, k);
    memset(recv, 0, n * sizeof(double));
    mpi_check(MPI_Allreduce(send, recv, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
    verify_or_die(recv, want, n, rank, k, where);
}

/* `cnt` timed calls of round `k` (already filled); returns this rank's
 * microseconds per call. */
static double timed(double *send, double *recv, size_t n, long cnt)
{
    int rc = MPI_SUCCESS;
    memset(recv, 0, n * sizeof(double));
    mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    double t0 = bench_now_us();
    for (long i = 0; i < cnt; i++)
        rc |= MPI_Allreduce(send, recv, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double t = bench_now_us() - t0;
    mpi_check(rc, "MPI_Allreduce (timed)");
    return t / (double)cnt;
}

/* Calibration: the slowest rank's time per call, known to every rank. */
static double per_call_max(double *send, double *recv, size_t n, long cnt)
{
    double mine = timed(send, recv, n, cnt), max = 0;
    mpi_check(MPI_Allreduce(&mine, &max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce (calibration)");
    return max;
}

static void measure(const struct bench_opts *o, size_t bytes, int rank, int nranks, double *send,
                    double *recv, double *want)
{
    size_t n = bytes / sizeof(double);
    double v[BENCH_MAX_REPS], target = o->rep_ms * 1000;
    checked_allreduce(send, recv, want, n, rank, nranks, 0, "before the timed part");

    fill(send, n, rank, 1); /* calibration and warm-up */
    expected(want, n, nranks, 1);
    long cnt = 4;
    double per = per_call_max(send, recv, n, cnt);
    cnt = bench_count_for(target / 4, per, 2, 1);
    per = per_call_max(send, recv, n, cnt);
    cnt = bench_count_for(target, per, 8, 1);
    verify_or_die(recv, want, n, rank, 1, "warm-up");

    for (int r = 0; r < o->reps; r++) {
        int k = 2 + r;
        fill(send, n, rank, k);
        expected(want, n, nranks, k);
        double mine = timed(send, recv, n, cnt), sum = 0;
        verify_or_die(recv, want, n, rank, k, "timed");
        mpi_check(MPI_Reduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD),
                  "MPI_Reduce (times)");
        v[r] = sum / nranks;
    }

    checked_allreduce(send, recv, want, n, rank, nranks, 2 + o->reps, "after the timed part");
    if (rank == 0)
        bench_report("allreduce", bytes, v, o->reps, cnt);
}

static int parse_sizes(const char *arg, size_t *sizes)
{
    char buf[256];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", arg);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t s = bench_parse_size(tok);
        if (n == MAX_SIZES || s < sizeof(double) || s % sizeof(double) || s > BENCH_MAX_SIZE)
            bench_die("--sizes: up to %d multiples of 8 B, at most %u B", MAX_SIZES,
                      BENCH_MAX_SIZE);
        sizes[n++] = s;
    }
    return n;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    size_t sizes[MAX_SIZES] = {8, 64 << 10};
    int nsizes = 2, rank, nranks, bad = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    bench_opts_init(&o);
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--sizes") && i + 1 < argc)
            nsizes = parse_sizes(argv[++i], sizes);
        else if (strcmp(a, "--quick") && strcmp(a, "--reps") && strcmp(a, "--rep-ms") &&
                 strcmp(a, "--timeout"))
            bad = 1;
        else
            bad = !bench_parse_opt(&o, argc, argv, &i);
    }
    if (bad) {
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np N ... mpi_allreduce [--sizes 8,64K] [--quick] "
                            "[--reps N] [--rep-ms MS] [--timeout SEC]\n");
        MPI_Finalize();
        return 2;
    }
    bench_opts_done(&o);
    size_t max = 0;
    for (int i = 0; i < nsizes; i++)
        max = sizes[i] > max ? sizes[i] : max;
    double *send = bench_alloc(max), *recv = bench_alloc(max), *want = bench_alloc(max);
    if (rank == 0) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING];
        mpi_library(lib);
        printf("# mpi_allreduce %s ranks=%d reps=%d%s\n", lib, nranks, o.reps,
               o.quick ? " quick" : "");
        fflush(stdout);
    }
    for (int i = 0; i < nsizes; i++)
        measure(&o, sizes[i], rank, nranks, send, recv, want);
    free(send);
    free(recv);
    free(want);
    MPI_Finalize();
    return 0;
}
