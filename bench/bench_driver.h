/*
 * bench_driver.h - the latency and bandwidth tests for a byte-stream
 * transport (IVC channel, TCP or UNIX socket), written once so that every
 * stream transport runs exactly the same code.  See bench_common.h for the
 * methodology.
 *
 * The including program defines, before including this file:
 *     struct xport;
 *     static void xport_send(struct xport *x, const void *buf, size_t len);
 *     static void xport_recv(struct xport *x, void *buf, size_t len);
 * which move all `len` bytes or exit with a message.  They are called
 * directly (not through pointers) so the compiler can inline them.
 *
 * One process is the timing side (it prints the results), the other the
 * echo side (latency) / receiver (bandwidth).
 */
#ifndef VHPC_BENCH_DRIVER_H
#define VHPC_BENCH_DRIVER_H

#include "bench_common.h"

static void drv__verify_or_die(const uint8_t *buf, size_t s, uint64_t seed, void *scratch,
                               const char *where)
{
    long bad = bench_check(buf, s, seed, scratch);
    if (bad >= 0) {
        uint8_t want;
        bench_fill(scratch, s, seed);
        want = ((uint8_t *)scratch)[bad];
        bench_die("%s: data corrupted: size %zu, first bad byte at offset %ld: got 0x%02x, "
                  "expected 0x%02x",
                  where, s, bad, buf[bad], want);
    }
}

static void drv__recv_ack(struct xport *x)
{
    uint8_t ack = 0;
    xport_recv(x, &ack, 1);
    if (ack != BENCH_ACK)
        bench_die("bad ack byte 0x%02x", ack);
}
static void drv__send_ack(struct xport *x)
{
    uint8_t ack = BENCH_ACK;
    xport_send(x, &ack, 1);
}

/* Patterned messages compared byte for byte, before and after the timed
 * runs of each size (seeds `base`..`base`+2). */
static void drv__lat_verify_timer(struct xport *x, uint8_t *buf, size_t s, void *scratch, int base)
{
    for (int k = base; k < base + BENCH_VERIFY_MSGS; k++) {
        bench_fill(buf, s, bench_seed(s, k));
        xport_send(x, buf, s);
        memset(buf, 0, s);
        xport_recv(x, buf, s);
        drv__verify_or_die(buf, s, bench_seed(s, k), scratch, "latency echo");
    }
}
static void drv__lat_verify_echo(struct xport *x, uint8_t *buf, size_t s, void *scratch, int base)
{
    for (int k = base; k < base + BENCH_VERIFY_MSGS; k++) {
        memset(buf, 0, s);
        xport_recv(x, buf, s);
        drv__verify_or_die(buf, s, bench_seed(s, k), scratch, "latency ping");
        xport_send(x, buf, s);
    }
}
static void drv__bw_verify_sender(struct xport *x, uint8_t *buf, size_t s, int base)
{
    for (int k = base; k < base + BENCH_VERIFY_MSGS; k++) {
        bench_fill(buf, s, bench_seed(s, k));
        xport_send(x, buf, s);
    }
    drv__recv_ack(x);
}
static void drv__bw_verify_receiver(struct xport *x, uint8_t *buf, size_t s, void *scratch,
                                    int base)
{
    for (int k = base; k < base + BENCH_VERIFY_MSGS; k++) {
        memset(buf, 0, s);
        xport_recv(x, buf, s);
        drv__verify_or_die(buf, s, bench_seed(s, k), scratch, "bandwidth");
    }
    drv__send_ack(x);
}

static void drv__send_count(struct xport *x, long n)
{
    uint64_t v = (uint64_t)n;
    xport_send(x, &v, sizeof(v));
}
static long drv__recv_count(struct xport *x)
{
    uint64_t v;
    xport_recv(x, &v, sizeof(v));
    if (v > (uint64_t)BENCH_MAX_COUNT)
        bench_die("bad control message %llu", (unsigned long long)v);
    return (long)v;
}

/* One timed latency run of `n` round trips; returns its duration in us. */
static double drv__lat_run(struct xport *x, uint8_t *buf, size_t s, long n)
{
    drv__send_count(x, n);
    double t0 = bench_now_us();
    for (long i = 0; i < n; i++) {
        bench_stamp(buf, s, i);
        xport_send(x, buf, s);
        xport_recv(x, buf, s);
        if (__builtin_expect(!bench_stamp_ok(buf, s, i), 0))
            bench_die("latency: size %zu message %ld: bad stamp in the echo", s, i);
    }
    return bench_now_us() - t0;
}

static void drv_lat_timer(struct xport *x, const struct bench_opts *o, uint8_t *buf, void *scratch)
{
    double v[BENCH_MAX_REPS], target = o->rep_ms * 1000;
    BENCH_FOR_SIZES(o, s, o->lat_min, o->lat_max)
    {
        drv__lat_verify_timer(x, buf, s, scratch, 0);
        /* calibration and warm-up */
        long n = 4;
        double per = drv__lat_run(x, buf, s, n) / (double)n;
        n = bench_count_for(target / 4, per, 2, 1);
        per = drv__lat_run(x, buf, s, n) / (double)n;
        n = bench_count_for(target, per, 8, 1);
        for (int r = 0; r < o->reps; r++)
            v[r] = drv__lat_run(x, buf, s, n) / (double)n / 2.0;
        drv__send_count(x, 0);
        drv__lat_verify_timer(x, buf, s, scratch, 8); /* the ring after the timed runs */
        bench_report("lat", s, v, o->reps, n);
    }
}

static void drv_lat_echo(struct xport *x, const struct bench_opts *o, uint8_t *buf, void *scratch)
{
    BENCH_FOR_SIZES(o, s, o->lat_min, o->lat_max)
    {
        drv__lat_verify_echo(x, buf, s, scratch, 0);
        for (long n; (n = drv__recv_count(x)) > 0;) {
            for (long i = 0; i < n; i++) {
                xport_recv(x, buf, s);
                if (__builtin_expect(!bench_stamp_ok(buf, s, i), 0))
                    bench_die("latency: size %zu message %ld: bad stamp in the ping", s, i);
                xport_send(x, buf, s);
            }
        }
        drv__lat_verify_echo(x, buf, s, scratch, 8);
    }
}

/* One timed bandwidth run of `n` messages and the ack; returns us. */
static double drv__bw_run(struct xport *x, uint8_t *buf, size_t s, long n)
{
    drv__send_count(x, n);
    double t0 = bench_now_us();
    for (long i = 0; i < n; i++) {
        bench_stamp(buf, s, i);
        xport_send(x, buf, s);
    }
    drv__recv_ack(x);
    return bench_now_us() - t0;
}

static void drv_bw_sender(struct xport *x, const struct bench_opts *o, uint8_t *buf, void *scratch)
{
    double v[BENCH_MAX_REPS], target = o->rep_ms * 1000;
    BENCH_FOR_SIZES(o, s, o->bw_min, o->bw_max)
    {
        drv__bw_verify_sender(x, buf, s, 16);
        /* calibration and warm-up */
        long n = BENCH_BW_WINDOW;
        double per = drv__bw_run(x, buf, s, n) / (double)n;
        n = bench_count_for(target / 4, per, BENCH_BW_WINDOW, BENCH_BW_WINDOW);
        per = drv__bw_run(x, buf, s, n) / (double)n;
        n = bench_count_for(target, per, BENCH_BW_WINDOW, BENCH_BW_WINDOW);
        for (int r = 0; r < o->reps; r++)
            v[r] = (double)s * (double)n / drv__bw_run(x, buf, s, n); /* bytes/us = MB/s */
        drv__send_count(x, 0);
        drv__bw_verify_sender(x, buf, s, 24); /* the ring after the timed runs */
        bench_report("bw", s, v, o->reps, n);
    }
}

static void drv_bw_receiver(struct xport *x, const struct bench_opts *o, uint8_t *buf,
                            void *scratch)
{
    BENCH_FOR_SIZES(o, s, o->bw_min, o->bw_max)
    {
        drv__bw_verify_receiver(x, buf, s, scratch, 16);
        for (long n; (n = drv__recv_count(x)) > 0;) {
            for (long i = 0; i < n; i++) {
                xport_recv(x, buf, s);
                if (__builtin_expect(!bench_stamp_ok(buf, s, i), 0))
                    bench_die("bandwidth: size %zu message %ld: bad stamp", s, i);
            }
            drv__send_ack(x);
        }
        drv__bw_verify_receiver(x, buf, s, scratch, 24);
    }
}

/* Run every selected test; the timing side prints.  Ends with a "bye" byte
 * from the timing side so the echo side knows all data was consumed. */
static void drv_run(struct xport *x, const struct bench_opts *o, int timing_side)
{
    size_t max = o->lat_max > o->bw_max ? o->lat_max : o->bw_max;
    uint8_t *buf = bench_alloc(max);
    void *scratch = bench_alloc(max);
    if (o->do_lat)
        (timing_side ? drv_lat_timer : drv_lat_echo)(x, o, buf, scratch);
    if (o->do_bw)
        (timing_side ? drv_bw_sender : drv_bw_receiver)(x, o, buf, scratch);
    if (timing_side)
        drv__send_ack(x);
    else
        drv__recv_ack(x);
    free(buf);
    free(scratch);
}

#endif /* VHPC_BENCH_DRIVER_H */
