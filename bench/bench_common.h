/*
 * bench_common.h - what the IVC benchmark programs share, so that every
 * transport is measured the same way: the message sizes, how many iterations
 * each size gets, the statistics, the test patterns, the command line, CPU
 * pinning and the output format.
 *
 * Methodology (the same for ivc_bench, sock_bench and mpi_pingpong):
 *  - latency: ping-pong of one message of the size each way; one-way latency
 *    is the round trip / 2, averaged over the round trips of one repetition.
 *    Each timed message carries a sequence stamp in its first and last byte
 *    that the other side checks.
 *  - bandwidth: the sender writes messages back to back, the receiver reads
 *    them all and answers with a 1-byte ack; the clock runs on the sender
 *    from the first write to the ack, so it covers delivery.
 *    MB/s = 1e6 bytes/s.
 *  - a repetition lasts about `rep_ms` (the count per repetition is
 *    calibrated during the warm-up, see bench_count_for(), so large sizes get
 *    fewer iterations); each size is measured `reps` times and the MEDIAN of
 *    the repetitions is reported (the minimum and maximum are printed too).
 *  - before and after the timed part of each size, a few messages filled with
 *    a pseudo-random pattern are sent and compared byte for byte on arrival
 *    (and, for the latency test, again after the echo), so a transport that
 *    corrupts data fails instead of producing a number.
 *
 * Output, one line per result on stdout, everything else starts with '#':
 *     lat <bytes> <one-way usec, median> <min> <max> <round trips per rep>
 *     bw  <bytes> <MB/s, median> <min> <max> <messages per rep>
 *
 * Header-only (static functions) so the MPI program, built by mpicc outside
 * CMake's compiler flags, can share it.
 */
#ifndef VHPC_BENCH_COMMON_H
#define VHPC_BENCH_COMMON_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_SIZE    (4u << 20)
#define BENCH_MAX_REPS    64
#define BENCH_VERIFY_MSGS 3    /* patterned messages checked per size */
#define BENCH_ACK         0xAC /* the bandwidth test's ack byte */

/* Command-line options shared by all programs. */
struct bench_opts {
    int quick;          /* few sizes, few iterations: a smoke run */
    int reps;           /* repetitions per size (median reported) */
    double rep_ms;      /* target duration of one repetition */
    int do_lat, do_bw;  /* which tests */
    int cpu[2];         /* timing side, echo side; -1: do not pin */
    unsigned timeout_s; /* alarm() bound on the whole program */
    size_t lat_min, lat_max, bw_min, bw_max;
};

static void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bench_die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench[%d]: ", (int)getpid());
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static inline double bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Sizes: latency 1 B..4 MiB, bandwidth 1 KiB..4 MiB, powers of two.  A quick
 * run keeps the sizes the RESULT line needs (8 B, 64 KiB, 4 MiB) and a few. */
static inline size_t bench_next_size(const struct bench_opts *o, size_t s)
{
    if (!o->quick)
        return s * 2;
    static const size_t quick[] = {1, 8, 1024, 65536, 1u << 20, 4u << 20};
    for (size_t i = 0; i < sizeof(quick) / sizeof(quick[0]); i++)
        if (quick[i] > s)
            return quick[i];
    return SIZE_MAX;
}
static inline size_t bench_first_size(const struct bench_opts *o, size_t min)
{
    if (!o->quick)
        return min;
    size_t s = 1;
    while (s < min)
        s = bench_next_size(o, s);
    return s;
}
#define BENCH_FOR_SIZES(o, s, min, max)                                                            \
    for (size_t s = bench_first_size((o), (min)); s <= (max); s = bench_next_size((o), s))

/* Repetitions are time-based, so that every transport gets comparable
 * exposure to the machine's noise: a short timed run estimates the cost of
 * one iteration, a warm-up of about a quarter of a repetition refines it, and
 * every repetition of the size then runs the same count, chosen to last about
 * `rep_ms` (at least `min`).  The count is sent to the other side as a
 * control message before each run, outside the timed region. */
#define BENCH_BW_WINDOW 64 /* the MPI test's window; stream counts are multiples of it */
#define BENCH_MAX_COUNT (1l << 24)
static inline long bench_count_for(double target_us, double per_us, long min, long multiple)
{
    double c = per_us > 0 ? target_us / per_us : (double)BENCH_MAX_COUNT;
    long n = c > (double)BENCH_MAX_COUNT ? BENCH_MAX_COUNT : (long)c;
    n = (n + multiple - 1) / multiple * multiple;
    return n < min ? min : n;
}

/* Statistics over the repetitions of one size. */
static int bench__cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static inline void bench_report(const char *what, size_t size, double *v, int n, long count)
{
    qsort(v, (size_t)n, sizeof(*v), bench__cmp_double);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    printf("%s %zu %.3f %.3f %.3f %ld\n", what, size, med, v[0], v[n - 1], count);
    fflush(stdout);
}

/* Deterministic pseudo-random pattern for message `seed`. */
static inline void bench_fill(void *buf, size_t len, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    for (; i < len; i++)
        p[i] = (uint8_t)(x >> (8 * (i & 7)));
}
/* Check `buf` against the pattern; returns the first bad offset or -1. */
static inline long bench_check(const void *buf, size_t len, uint64_t seed, void *scratch)
{
    bench_fill(scratch, len, seed);
    if (memcmp(buf, scratch, len) == 0)
        return -1;
    const uint8_t *a = buf, *b = scratch;
    for (size_t i = 0; i < len; i++)
        if (a[i] != b[i])
            return (long)i;
    return -1;
}
static inline uint64_t bench_seed(size_t size, int k)
{
    return ((uint64_t)size << 8) | (uint64_t)k;
}

/* Sequence stamp of timed message `i` (first and last byte). */
static inline void bench_stamp(uint8_t *buf, size_t len, long i)
{
    buf[0] = (uint8_t)i;
    buf[len - 1] = (uint8_t)i;
}
static inline int bench_stamp_ok(const uint8_t *buf, size_t len, long i)
{
    return buf[0] == (uint8_t)i && buf[len - 1] == (uint8_t)i;
}

/* Page-aligned buffer, touched so that page faults are not timed. */
static inline void *bench_alloc(size_t len)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, len ? len : 1) != 0)
        bench_die("out of memory (%zu bytes)", len);
    memset(p, 0x5a, len);
    return p;
}

static inline void bench_pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        bench_die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

static inline size_t bench_parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    switch (*end) {
    case 'k':
    case 'K':
        v <<= 10;
        end++;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        end++;
        break;
    }
    if (*end != '\0' || end == s)
        bench_die("bad size '%s'", s);
    return (size_t)v;
}

static inline void bench_usage_common(FILE *f)
{
    fprintf(f, "  --quick            few sizes and iterations (smoke run)\n"
               "  --reps N           repetitions per size, median reported (default 7, quick 3)\n"
               "  --rep-ms MS        duration of one repetition (default 20, quick 2)\n"
               "  --lat-only|--bw-only\n"
               "  --lat-range MIN:MAX, --bw-range MIN:MAX   message sizes (1:4M, 1K:4M)\n"
               "  --cpus A,B         pin the timing side to CPU A and the echo side to B\n"
               "  --timeout SEC      give up after SEC seconds (default 600)\n");
}

/* Parse the common options out of argv; returns 1 if argv[*i] (and maybe its
 * value) was one of them. */
static inline int bench_parse_opt(struct bench_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
#define BENCH_VAL() ((*i + 1 < argc) ? argv[++*i] : (bench_die("%s needs a value", a), ""))
    if (!strcmp(a, "--quick")) {
        o->quick = 1;
    } else if (!strcmp(a, "--reps")) {
        o->reps = atoi(BENCH_VAL());
        if (o->reps < 1 || o->reps > BENCH_MAX_REPS)
            bench_die("--reps: 1..%d", BENCH_MAX_REPS);
    } else if (!strcmp(a, "--rep-ms")) {
        o->rep_ms = atof(BENCH_VAL());
        if (o->rep_ms <= 0)
            bench_die("--rep-ms: a positive number of milliseconds");
    } else if (!strcmp(a, "--lat-only")) {
        o->do_bw = 0;
    } else if (!strcmp(a, "--bw-only")) {
        o->do_lat = 0;
    } else if (!strcmp(a, "--lat-range") || !strcmp(a, "--bw-range")) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", BENCH_VAL());
        char *colon = strchr(buf, ':');
        if (!colon)
            bench_die("%s MIN:MAX", a);
        *colon = '\0';
        size_t lo = bench_parse_size(buf), hi = bench_parse_size(colon + 1);
        if (lo < 1 || hi < lo || hi > BENCH_MAX_SIZE)
            bench_die("%s: sizes 1..%u", a, BENCH_MAX_SIZE);
        if (a[2] == 'l')
            o->lat_min = lo, o->lat_max = hi;
        else
            o->bw_min = lo, o->bw_max = hi;
    } else if (!strcmp(a, "--cpus")) {
        const char *v = BENCH_VAL();
        if (!strcmp(v, "none"))
            o->cpu[0] = o->cpu[1] = -1;
        else if (sscanf(v, "%d,%d", &o->cpu[0], &o->cpu[1]) != 2)
            bench_die("--cpus A,B or none");
    } else if (!strcmp(a, "--timeout")) {
        o->timeout_s = (unsigned)atoi(BENCH_VAL());
    } else {
        return 0;
    }
#undef BENCH_VAL
    return 1;
}

static inline void bench_opts_init(struct bench_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->do_lat = o->do_bw = 1;
    o->cpu[0] = o->cpu[1] = -1;
    o->timeout_s = 600;
    o->lat_min = 1, o->lat_max = BENCH_MAX_SIZE;
    o->bw_min = 1024, o->bw_max = BENCH_MAX_SIZE;
}
static inline void bench_opts_done(struct bench_opts *o)
{
    if (o->reps == 0)
        o->reps = o->quick ? 3 : 7;
    if (o->rep_ms == 0)
        o->rep_ms = o->quick ? 2 : 20;
    if (o->timeout_s)
        alarm(o->timeout_s);
}

#endif /* VHPC_BENCH_COMMON_H */
