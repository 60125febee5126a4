/*
 * mpi_pingpong.c - the MPI baseline IVC is compared with: Open MPI's own
 * shared memory (btl vader) or TCP (btl tcp), chosen by the mpirun command
 * line.  Same sizes, iteration counts, statistics, patterns and output as
 * the stream benchmarks (bench_common.h); rank 0 times and prints.
 *  - latency: MPI_Send/MPI_Recv ping-pong (like osu_latency);
 *  - bandwidth: windows of 64 MPI_Isend (rank 0) / MPI_Irecv (rank 1) and
 *    MPI_Waitall, then a 1-byte ack (like osu_bw).  As in osu_bw, the sender
 *    reuses one buffer and the receiver receives a window into one buffer,
 *    so the messages are not stamped; the patterned messages sent before the
 *    timed part of each size are checked.
 *
 *   mpirun -np 2 --bind-to core --mca pml ob1 --mca btl self,vader mpi_pingpong [options]
 */
#include "bench_mpi.h"

#define TAG_DATA 1
#define TAG_ACK  2
#define TAG_CTRL 3

static void verify_or_die(const uint8_t *buf, size_t s, uint64_t seed, void *scratch,
                          const char *where)
{
    long bad = bench_check(buf, s, seed, scratch);
    if (bad >= 0)
        bench_die("%s: data corrupted: size %zu, first bad byte at offset %ld", where, s, bad);
}

/* Patterned messages compared byte for byte, before and after the timed
 * runs of each size (seeds `base`..`base`+2). */
static void lat_verify(int rank, uint8_t *buf, size_t s, void *scratch, int base)
{
    int peer = 1 - rank, n = (int)s;
    MPI_Comm w = MPI_COMM_WORLD;
    for (int k = base; k < base + BENCH_VERIFY_MSGS; k++) {
        if (rank == 0) {
            bench_fill(buf, s, bench_seed(s, k));
            mpi_check(MPI_Send(buf, n, MPI_BYTE, peer, TAG_DATA, w), "MPI_Send");
            memset(buf, 0, s);
            mpi_check(MPI_Recv(buf, n, MPI_BYTE, peer, TAG_DATA, w, MPI_STATUS_IGNORE), "MPI_Recv");
            verify_or_die(buf, s, bench_seed(s, k), scratch, "latency echo");
        } else {
            memset(buf, 0, s);
            mpi_check(MPI_Recv(buf, n, MPI_BYTE, peer, TAG_DATA, w, MPI_STATUS_IGNORE), "MPI_Recv");
            verify_or_die(buf, s, bench_seed(s, k), scratch, "latency ping");
            mpi_check(MPI_Send(buf, n, MPI_BYTE, peer, TAG_DATA, w), "MPI_Send");
        }
    }
}
static void bw_verify(int rank, uint8_t *buf, size_t s, void *scratch, int base)
{
    int peer = 1 - rank, n = (int)s;
    MPI_Comm w = MPI_COMM_WORLD;
    for (int k = base; k < base + BENCH_VERIFY_MSGS; k++) {
        if (rank == 0) {
            bench_fill(buf, s, bench_seed(s, k));
            mpi_check(MPI_Send(buf, n, MPI_BYTE, peer, TAG_DATA, w), "MPI_Send");
        } else {
            memset(buf, 0, s);
            mpi_check(MPI_Recv(buf, n, MPI_BYTE, peer, TAG_DATA, w, MPI_STATUS_IGNORE), "MPI_Recv");
            verify_or_die(buf, s, bench_seed(s, k), scratch, "bandwidth");
        }
    }
}

/* The timing side (rank 0) tells rank 1 how many iterations the next run
 * has (0: this size is done), outside the timed region. */
static void send_count(long n)
{
    long long v = n;
    mpi_check(MPI_Send(&v, 1, MPI_LONG_LONG, 1, TAG_CTRL, MPI_COMM_WORLD), "MPI_Send count");
}
static long recv_count(void)
{
    long long v;
    mpi_check(MPI_Recv(&v, 1, MPI_LONG_LONG, 0, TAG_CTRL, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
              "MPI_Recv count");
    if (v < 0 || v > BENCH_MAX_COUNT)
        bench_die("bad control message %lld", v);
    return (long)v;
}

/* One latency run of `n` round trips on rank 0; returns us. */
static double lat_run(uint8_t *buf, size_t s, long n)
{
    int rc = MPI_SUCCESS;
    send_count(n);
    double t0 = bench_now_us();
    for (long i = 0; i < n; i++) {
        bench_stamp(buf, s, i);
        rc |= MPI_Send(buf, (int)s, MPI_BYTE, 1, TAG_DATA, MPI_COMM_WORLD);
        rc |= MPI_Recv(buf, (int)s, MPI_BYTE, 1, TAG_DATA, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (__builtin_expect(!bench_stamp_ok(buf, s, i), 0))
            bench_die("latency: size %zu message %ld: bad stamp in the echo", s, i);
    }
    double t = bench_now_us() - t0;
    mpi_check(rc, "MPI_Send/MPI_Recv");
    return t;
}

static void lat(const struct bench_opts *o, int rank, uint8_t *buf, void *scratch)
{
    double v[BENCH_MAX_REPS], target = o->rep_ms * 1000;
    int peer = 1 - rank;
    MPI_Comm w = MPI_COMM_WORLD;
    BENCH_FOR_SIZES(o, s, o->lat_min, o->lat_max)
    {
        int n = (int)s;
        lat_verify(rank, buf, s, scratch, 0);
        if (rank == 0) {
            long cnt = 4; /* calibration and warm-up */
            double per = lat_run(buf, s, cnt) / (double)cnt;
            cnt = bench_count_for(target / 4, per, 2, 1);
            per = lat_run(buf, s, cnt) / (double)cnt;
            cnt = bench_count_for(target, per, 8, 1);
            for (int r = 0; r < o->reps; r++)
                v[r] = lat_run(buf, s, cnt) / (double)cnt / 2.0;
            send_count(0);
            lat_verify(rank, buf, s, scratch, 8); /* after the timed runs */
            bench_report("lat", s, v, o->reps, cnt);
        } else {
            for (long cnt; (cnt = recv_count()) > 0;) {
                int rc = MPI_SUCCESS;
                for (long i = 0; i < cnt; i++) {
                    rc |= MPI_Recv(buf, n, MPI_BYTE, peer, TAG_DATA, w, MPI_STATUS_IGNORE);
                    if (__builtin_expect(!bench_stamp_ok(buf, s, i), 0))
                        bench_die("latency: size %zu message %ld: bad stamp in the ping", s, i);
                    rc |= MPI_Send(buf, n, MPI_BYTE, peer, TAG_DATA, w);
                }
                mpi_check(rc, "MPI_Recv/MPI_Send");
            }
            lat_verify(rank, buf, s, scratch, 8);
        }
    }
}

/* Move `cnt` messages in windows of BENCH_BW_WINDOW (a multiple of it). */
static void bw_windows(int rank, uint8_t *buf, size_t s, long cnt)
{
    MPI_Request req[BENCH_BW_WINDOW];
    for (long i = 0; i < cnt; i += BENCH_BW_WINDOW) {
        int rc = MPI_SUCCESS;
        for (int j = 0; j < BENCH_BW_WINDOW; j++) {
            if (rank == 0)
                rc |= MPI_Isend(buf, (int)s, MPI_BYTE, 1, TAG_DATA, MPI_COMM_WORLD, &req[j]);
            else
                rc |= MPI_Irecv(buf, (int)s, MPI_BYTE, 0, TAG_DATA, MPI_COMM_WORLD, &req[j]);
        }
        mpi_check(rc, "MPI_Isend/MPI_Irecv");
        mpi_check(MPI_Waitall(BENCH_BW_WINDOW, req, MPI_STATUSES_IGNORE), "MPI_Waitall");
    }
}

/* One bandwidth run of `cnt` messages and the ack on rank 0; returns us. */
static double bw_run(uint8_t *buf, size_t s, long cnt)
{
    uint8_t ack = 0;
    send_count(cnt);
    double t0 = bench_now_us();
    bw_windows(0, buf, s, cnt);
    mpi_check(MPI_Recv(&ack, 1, MPI_BYTE, 1, TAG_ACK, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
              "MPI_Recv ack");
    double t = bench_now_us() - t0;
    if (ack != BENCH_ACK)
        bench_die("bad ack byte 0x%02x", ack);
    return t;
}

static void bw(const struct bench_opts *o, int rank, uint8_t *buf, void *scratch)
{
    double v[BENCH_MAX_REPS], target = o->rep_ms * 1000;
    int peer = 1 - rank;
    MPI_Comm w = MPI_COMM_WORLD;
    uint8_t ack = BENCH_ACK;
    BENCH_FOR_SIZES(o, s, o->bw_min, o->bw_max)
    {
        bw_verify(rank, buf, s, scratch, 16);
        if (rank == 0) {
            long cnt = BENCH_BW_WINDOW; /* calibration and warm-up */
            double per = bw_run(buf, s, cnt) / (double)cnt;
            cnt = bench_count_for(target / 4, per, BENCH_BW_WINDOW, BENCH_BW_WINDOW);
            per = bw_run(buf, s, cnt) / (double)cnt;
            cnt = bench_count_for(target, per, BENCH_BW_WINDOW, BENCH_BW_WINDOW);
            for (int r = 0; r < o->reps; r++)
                v[r] = (double)s * (double)cnt / bw_run(buf, s, cnt); /* bytes/us = MB/s */
            send_count(0);
            bw_verify(rank, buf, s, scratch, 24); /* after the timed runs */
            bench_report("bw", s, v, o->reps, cnt);
        } else {
            for (long cnt; (cnt = recv_count()) > 0;) {
                bw_windows(1, buf, s, cnt);
                mpi_check(MPI_Send(&ack, 1, MPI_BYTE, peer, TAG_ACK, w), "MPI_Send ack");
            }
            bw_verify(rank, buf, s, scratch, 24);
        }
    }
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    bench_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!bench_parse_opt(&o, argc, argv, &i)) {
            if (rank == 0) {
                fprintf(stderr, "usage: mpirun -np 2 ... mpi_pingpong [options]\n");
                bench_usage_common(stderr);
            }
            MPI_Finalize();
            return 2;
        }
    }
    if (size != 2)
        bench_die("run with exactly 2 ranks (got %d)", size);
    bench_opts_done(&o);
    size_t max = o.lat_max > o.bw_max ? o.lat_max : o.bw_max;
    uint8_t *buf = bench_alloc(max);
    void *scratch = bench_alloc(max);
    if (rank == 0) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING];
        mpi_library(lib);
        printf("# mpi_pingpong %s reps=%d%s\n", lib, o.reps, o.quick ? " quick" : "");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (o.do_lat)
        lat(&o, rank, buf, scratch);
    if (o.do_bw)
        bw(&o, rank, buf, scratch);
    free(buf);
    free(scratch);
    MPI_Finalize();
    return 0;
}
