/*
 * ivc_bench.c - latency and bandwidth of an IVC channel between two
 * processes attached to a running ivcd (libivc's public API only).  Data
 * moves with the non-blocking ivc_write()/ivc_read() in a tight spin loop,
 * which is what a polling MPI library does.  The program forks: the parent
 * (timing side) registers as client 0 and connects to client 1, the child
 * (echo side) registers as client 1 and accepts; each can be pinned.
 *
 *   ivc_bench --socket PATH --magic ID [--ring-size BYTES] [common options]
 *
 * A channel that stops moving for --stall seconds (default 20) is reported
 * with its state instead of spinning until the global timeout.
 */
#include <sys/prctl.h>
#include <sys/wait.h>

#include "bench_common.h"
#include "ivc.h"

struct xport {
    ivc_chan_t *chan;
    pid_t peer;      /* the child, seen from the parent; 0 in the child */
    double stall_us; /* no progress for this long: give up */
};

#define IVC_DIE(call, r) bench_die("%s: %s (%d)", call, ivc_strerror((int)(r)), (int)(r))

static const char *chan_state_name(int st)
{
    static const char *const names[] = {"?",   "OPEN",  "SUSPENDING", "SUSPENDED",
                                        "EOF", "RESET", "CORRUPT"};
    return st >= 1 && st <= 6 ? names[st] : "invalid";
}

/* A channel fresh from ivc_connect()/ivc_accept() must be open. */
static void check_open(ivc_chan_t *chan, const char *call)
{
    int st = ivc_chan_state(chan);
    if (st != IVC_CHAN_OPEN)
        bench_die("%s returned 0 but the new channel is in state %d (%s), not OPEN", call, st,
                  chan_state_name(st));
}

/* Called every 64K polls without progress: detect a dead partner or a
 * channel that stopped moving, and say what the channel looks like. */
static void xport_idle(struct xport *x, const char *op, size_t left, double *since)
{
    double now = bench_now_us();
    if (*since == 0) {
        *since = now;
        return;
    }
    if (x->peer > 0) {
        int st;
        if (waitpid(x->peer, &st, WNOHANG) == x->peer) {
            x->peer = 0;
            bench_die("%s: the echo side exited (status 0x%x) with %zu bytes outstanding", op, st,
                      left);
        }
    } else if (getppid() == 1) {
        bench_die("%s: the timing side is gone", op);
    }
    if (now - *since > x->stall_us)
        bench_die("%s: no progress for %.0f s with %zu bytes outstanding: channel state %d "
                  "(%s), readable %zu, writable %zu, ring %zu",
                  op, (now - *since) / 1e6, left, ivc_chan_state(x->chan),
                  chan_state_name(ivc_chan_state(x->chan)), ivc_chan_readable(x->chan),
                  ivc_chan_writable(x->chan), ivc_chan_ring_size(x->chan));
}

static void xport_send(struct xport *x, const void *buf, size_t len)
{
    const char *p = buf;
    unsigned idle = 0;
    double since = 0;
    while (len > 0) {
        ssize_t n = ivc_write(x->chan, p, len);
        if (__builtin_expect(n > 0, 1)) {
            if ((size_t)n > len)
                bench_die("ivc_write returned %zd for %zu bytes", n, len);
            p += n, len -= (size_t)n;
            idle = 0, since = 0;
        } else if (n == 0) {
            if (__builtin_expect((++idle & 0xffff) == 0, 0))
                xport_idle(x, "ivc_write", len, &since);
        } else {
            IVC_DIE("ivc_write", n);
        }
    }
}

static void xport_recv(struct xport *x, void *buf, size_t len)
{
    char *p = buf;
    unsigned idle = 0;
    double since = 0;
    while (len > 0) {
        ssize_t n = ivc_read(x->chan, p, len);
        if (__builtin_expect(n > 0, 1)) {
            if ((size_t)n > len)
                bench_die("ivc_read returned %zd for %zu bytes", n, len);
            p += n, len -= (size_t)n;
            idle = 0, since = 0;
        } else if (n == 0) {
            if (__builtin_expect((++idle & 0xffff) == 0, 0))
                xport_idle(x, "ivc_read", len, &since);
        } else if (n == IVC_EOF) {
            bench_die("ivc_read: the peer closed the channel with %zu bytes outstanding", len);
        } else {
            IVC_DIE("ivc_read", n);
        }
    }
}

#include "bench_driver.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: ivc_bench --socket PATH --magic ID [--ring-size BYTES] [--stall SEC] "
               "[options]\n");
    bench_usage_common(f);
}

/* The echo side: client 1, accepts. */
static int run_child(const struct bench_opts *o, uint64_t magic, const ivc_options_t *io,
                     double stall_us)
{
    ivc_ctx_t *ctx;
    struct xport x = {.peer = 0, .stall_us = stall_us};
    int r = ivc_register(magic, 1, io, &ctx);
    if (r < 0)
        IVC_DIE("ivc_register(client 1)", r);
    r = ivc_accept(ctx, 30000, &x.chan);
    if (r < 0)
        IVC_DIE("ivc_accept", r);
    if (ivc_chan_peer(x.chan) != 0)
        bench_die("ivc_accept: channel from client %u, expected 0", ivc_chan_peer(x.chan));
    check_open(x.chan, "ivc_accept");
    drv_run(&x, o, 0);
    if ((r = ivc_close(x.chan)) < 0)
        IVC_DIE("ivc_close", r);
    if ((r = ivc_unregister(ctx)) < 0)
        IVC_DIE("ivc_unregister", r);
    return 0;
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    const char *sock = NULL;
    uint64_t magic = 0;
    size_t ring = 1u << 20;
    double stall_s = 20;
    bench_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (bench_parse_opt(&o, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
            sock = argv[++i];
        } else if (!strcmp(argv[i], "--magic") && i + 1 < argc) {
            magic = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--ring-size") && i + 1 < argc) {
            ring = bench_parse_size(argv[++i]);
        } else if (!strcmp(argv[i], "--stall") && i + 1 < argc) {
            stall_s = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!sock || !magic) {
        usage(stderr);
        return 2;
    }
    bench_opts_done(&o);
    ivc_options_t io = {.location = sock, .ring_size = ring, .timeout_ms = 10000};

    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        bench_die("fork: %s", strerror(errno));
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        bench_pin(o.cpu[1]);
        _exit(run_child(&o, magic, &io, stall_s * 1e6));
    }

    /* The timing side: client 0, connects (retrying while client 1 is not
     * registered or not accepting yet). */
    bench_pin(o.cpu[0]);
    ivc_ctx_t *ctx;
    struct xport x = {.peer = child, .stall_us = stall_s * 1e6};
    int r = ivc_register(magic, 0, &io, &ctx);
    if (r < 0)
        IVC_DIE("ivc_register(client 0)", r);
    double deadline = bench_now_us() + 30e6;
    for (;;) {
        r = ivc_connect(ctx, 1, 1000, &x.chan);
        if (r == 0)
            break;
        if ((r != IVC_ENOENT && r != IVC_ECONNREFUSED && r != IVC_ETIMEDOUT) ||
            bench_now_us() > deadline)
            IVC_DIE("ivc_connect(client 1)", r);
        int st;
        if (waitpid(child, &st, WNOHANG) == child)
            bench_die("the echo side exited (status 0x%x) before accepting", st);
        usleep(10000);
    }
    check_open(x.chan, "ivc_connect");
    printf("# ivc_bench magic=%llu ring_size=%zu cpus=%d,%d reps=%d%s\n", (unsigned long long)magic,
           ivc_chan_ring_size(x.chan), o.cpu[0], o.cpu[1], o.reps, o.quick ? " quick" : "");
    if (ivc_chan_ring_size(x.chan) != ring)
        bench_die("asked for a %zu-byte ring, the channel has %zu", ring,
                  ivc_chan_ring_size(x.chan));
    drv_run(&x, &o, 1);

    /* Let the echo side read the final byte and leave before closing. */
    int st;
    if (waitpid(child, &st, 0) != child)
        bench_die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bench_die("echo side failed (status 0x%x)", st);
    if ((r = ivc_close(x.chan)) < 0)
        IVC_DIE("ivc_close", r);
    if ((r = ivc_unregister(ctx)) < 0)
        IVC_DIE("ivc_unregister", r);
    return 0;
}
