/*
 * memcpy_bench.c - the ceiling of bench-ivc's streaming bandwidth: one core
 * copying messages of each size with memcpy, as an IVC sender copies them
 * into its ring.  The destination cycles through max(1 MiB, size) bytes
 * (IVC's default ring is 1 MiB), the source is one message reused.  One
 * process, pinned to the timing CPU (--cpus A,B: A); bandwidth sizes,
 * repetitions and output as bench_common.h describes (`bw` lines only;
 * --lat-only prints nothing).  Each copy is checked once per size.
 */
#include "bench_common.h"

#define RING (1u << 20)

/* The copies of `count` messages of s bytes; how long they took (us). */
static double run(uint8_t *dst, size_t span, const uint8_t *src, size_t s, long count)
{
    size_t off = 0;
    double t0 = bench_now_us();
    for (long i = 0; i < count; i++) {
        memcpy(dst + off, src, s);
        off += s;
        if (off + s > span)
            off = 0;
    }
    /* The compiler may not drop the copies: their result is read. */
    volatile uint8_t sink = dst[span - 1];
    (void)sink;
    return bench_now_us() - t0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: memcpy_bench [options]\n");
    bench_usage_common(f);
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    bench_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (bench_parse_opt(&o, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    bench_opts_done(&o);
    bench_pin(o.cpu[0]);
    if (!o.do_bw)
        return 0;
    size_t span_max = o.bw_max > RING ? o.bw_max : RING;
    uint8_t *dst = bench_alloc(span_max), *src = bench_alloc(o.bw_max),
            *scratch = bench_alloc(o.bw_max);
    printf("# memcpy_bench: one core, destination cycling through max(1 MiB, size)\n");
    BENCH_FOR_SIZES(&o, s, o.bw_min, o.bw_max)
    {
        size_t span = s > RING ? s : RING;
        bench_fill(src, s, bench_seed(s, 0));
        run(dst, span, src, s, 1);
        if (bench_check(dst, s, bench_seed(s, 0), scratch) >= 0)
            bench_die("memcpy: the copy of %zu bytes differs", s);
        double per = run(dst, span, src, s, 16) / 16;
        long count = bench_count_for(o.rep_ms * 250, per, 16, 1); /* warm-up */
        per = run(dst, span, src, s, count) / (double)count;
        count = bench_count_for(o.rep_ms * 1000, per, 16, 1);
        double v[BENCH_MAX_REPS];
        for (int r = 0; r < o.reps; r++)
            v[r] = (double)s * (double)count / run(dst, span, src, s, count); /* bytes/us = MB/s */
        bench_report("bw", s, v, o.reps, count);
    }
    free(dst);
    free(src);
    free(scratch);
    return 0;
}
