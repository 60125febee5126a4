/*
 * line_pingpong - the floor under every shared-memory transport on this
 * machine: one cache line handed from one CPU to another and back.  Two
 * threads, pinned to two CPUs, bounce a counter:
 *
 *   line        the counter is the message (what Open MPI's vader fast box
 *               costs at best: the reader polls the line the writer writes)
 *   index+data  the writer stores 8 bytes in a data line, then the counter
 *               in an index line the reader polls (libivc's ring: the
 *               writer's published head, then the data)
 *
 * One-way time is half a round trip; median of the repetitions.  Neither
 * is a benchmark of vhpc's code: they say how much of an MPI latency is
 * the hardware's (or the hypervisor's) and how much is software.
 *
 * usage: line_pingpong [--cpus A,B] [--reps N] [--iters N]
 * Last line: RESULT line_ns=<one-way> index_data_ns=<one-way>
 *            index_data_over_line=<ratio>
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct side {
    _Alignas(64) _Atomic uint64_t index;
    _Alignas(64) _Atomic uint64_t data[8];
};

static struct side box[2]; /* [0]: written by the timing thread, [1]: by the echo */
static int mode;           /* 0: line, 1: index+data */
static long iters = 200000;
static int cpu_a = 0, cpu_b = 1;

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int r = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (r) {
        fprintf(stderr, "line_pingpong: pinning to CPU %d: %s\n", cpu, strerror(r));
        exit(1);
    }
}

static void put(struct side *s, uint64_t v)
{
    if (mode == 0) {
        atomic_store_explicit(&s->data[0], v, memory_order_release);
    } else {
        atomic_store_explicit(&s->data[1], v, memory_order_relaxed);
        atomic_store_explicit(&s->index, v, memory_order_release);
    }
}

static void get(struct side *s, uint64_t v)
{
    if (mode == 0) {
        while (atomic_load_explicit(&s->data[0], memory_order_acquire) != v)
            ;
    } else {
        while (atomic_load_explicit(&s->index, memory_order_acquire) != v)
            ;
        if (atomic_load_explicit(&s->data[1], memory_order_relaxed) != v) {
            fprintf(stderr, "line_pingpong: data behind its index\n");
            exit(1);
        }
    }
}

static uint64_t seq; /* values of the current repetition start above it */

static void *echo(void *arg)
{
    (void)arg;
    pin(cpu_b);
    for (uint64_t i = 1; i <= (uint64_t)iters; i++) {
        get(&box[0], seq + i);
        put(&box[1], seq + i);
    }
    return NULL;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* One repetition of `mode`: one-way ns. */
static double rep(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, echo, NULL)) {
        fprintf(stderr, "line_pingpong: pthread_create failed\n");
        exit(1);
    }
    double t0 = now_ns();
    for (uint64_t i = 1; i <= (uint64_t)iters; i++) {
        put(&box[0], seq + i);
        get(&box[1], seq + i);
    }
    double dt = now_ns() - t0;
    pthread_join(t, NULL);
    seq += (uint64_t)iters;
    return dt / (double)iters / 2;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpus") && i + 1 < argc &&
            sscanf(argv[i + 1], "%d,%d", &cpu_a, &cpu_b) == 2 && cpu_a >= 0 && cpu_b >= 0) {
            i++;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc && (reps = atoi(argv[i + 1])) > 0 &&
                   reps <= 101) {
            i++;
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc && (iters = atol(argv[i + 1])) > 0) {
            i++;
        } else {
            fprintf(stderr, "usage: line_pingpong [--cpus A,B] [--reps N (1-101)] [--iters N]\n");
            return 2;
        }
    }
    pin(cpu_a);
    double med[2];
    printf("# line_pingpong cpus=%d,%d reps=%d iters=%ld\n", cpu_a, cpu_b, reps, iters);
    printf("%-12s %10s %10s %10s\n", "mode", "median_ns", "min_ns", "max_ns");
    for (mode = 0; mode < 2; mode++) {
        double v[101];
        rep(); /* warm-up: both threads running, the lines where they go */
        for (int r = 0; r < reps; r++)
            v[r] = rep();
        qsort(v, (size_t)reps, sizeof(v[0]), cmp);
        med[mode] = v[reps / 2];
        printf("%-12s %10.1f %10.1f %10.1f\n", mode ? "index+data" : "line", med[mode], v[0],
               v[reps - 1]);
    }
    printf("RESULT line_ns=%.1f index_data_ns=%.1f index_data_over_line=%.3f\n", med[0], med[1],
           med[1] / med[0]);
    return 0;
}
