/*
 * wait.c - waiting without interrupts: spin briefly (a reply usually comes
 * within microseconds), then yield the core, then sleep with doubling pauses
 * up to 1 ms, so that an idle process costs almost nothing.  Also the
 * readiness poll over several channels and the blocking read/write helpers.
 */
#include "internal.h"

#include <sched.h>
#include <time.h>

#define SPIN_NS      50000ULL   /* busy-poll for the first 50 us */
#define YIELD_NS     1000000ULL /* then yield until 1 ms */
#define SLEEP_MIN_NS 20000ULL   /* then sleep 20 us, 40 us, ... */
#define SLEEP_MAX_NS 1000000ULL /* ... at most 1 ms per check */

uint64_t ivc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t ivc__deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return UINT64_MAX;
    return ivc__now_ns() + (uint64_t)timeout_ms * 1000000ULL;
}

void ivc__backoff_init(struct ivc__backoff *b)
{
    b->start_ns = 0;
    b->sleep_ns = SLEEP_MIN_NS;
    b->iter = 0;
}

void ivc__backoff_wait(struct ivc__backoff *b)
{
    if (b->iter++ < 64) { /* the first rounds: just spin, no clock reads */
        for (int i = 0; i < 16; i++)
            ivc__cpu_relax();
        return;
    }
    uint64_t now = ivc__now_ns();
    if (!b->start_ns)
        b->start_ns = now;
    uint64_t waited = now - b->start_ns;
    if (waited < SPIN_NS) {
        for (int i = 0; i < 64; i++)
            ivc__cpu_relax();
    } else if (waited < YIELD_NS) {
        sched_yield();
    } else {
        struct timespec ts = {0, (long)b->sleep_ns};
        nanosleep(&ts, NULL);
        if (b->sleep_ns < SLEEP_MAX_NS)
            b->sleep_ns *= 2;
    }
}

/* Control work is not free (it scans every channel): do it once per few
 * steps of a wait, not on every spin. */
static void wait_step(struct ivc_ctx *ctx, struct ivc__backoff *b)
{
    if (b->iter % 64 == 63)
        ivc__progress(ctx);
    ivc__backoff_wait(b);
}

int ivc_poll(ivc_ctx_t *ctx, ivc_pollitem_t *items, size_t n, int timeout_ms)
{
    struct ivc__backoff b;
    uint64_t deadline = ivc__deadline(timeout_ms);

    if (!ctx || (n && !items))
        return IVC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (items[i].chan && (items[i].chan->ctx != ctx || items[i].chan->closed))
            return IVC_EINVAL;
    ivc__backoff_init(&b);
    ivc__progress(ctx);
    for (;;) {
        int ready = 0;
        for (size_t i = 0; i < n; i++) {
            ivc_chan_t *ch = items[i].chan;
            short rev = 0;
            if (!ch) {
                items[i].revents = 0;
                continue;
            }
            switch (ivc_chan_state(ch)) {
            case IVC_CHAN_OPEN:
                if ((items[i].events & IVC_POLLIN) && ivc_chan_readable(ch))
                    rev |= IVC_POLLIN;
                if ((items[i].events & IVC_POLLOUT) && ivc_chan_writable(ch))
                    rev |= IVC_POLLOUT;
                break;
            case IVC_CHAN_SUSPENDING:
                if ((items[i].events & IVC_POLLIN) && ivc_chan_readable(ch))
                    rev |= IVC_POLLIN;
                break;
            case IVC_CHAN_EOF: rev |= IVC_POLLHUP | (items[i].events & IVC_POLLIN); break;
            case IVC_CHAN_CONNECTING: break; /* ready once accepted */
            default: rev |= IVC_POLLERR; break;
            }
            items[i].revents = rev;
            ready += rev != 0;
        }
        if (ready)
            return ready;
        if (ctx->state == IVC_CTX_BROKEN)
            return IVC_EPROTO;
        if (ivc__now_ns() >= deadline)
            return 0;
        wait_step(ctx, &b);
    }
}

/* Move all `len` bytes one way (`out`: write) with the non-blocking call,
 * waiting with back-off while nothing moves. */
static int move_all(ivc_chan_t *ch, void *buf, size_t len, int timeout_ms, size_t *done, bool out)
{
    struct ivc__backoff b;
    uint64_t deadline = ivc__deadline(timeout_ms);
    size_t moved = 0;
    int r = 0;

    if (!ch || (len && !buf))
        return IVC_EINVAL;
    ivc__backoff_init(&b);
    while (moved < len) {
        ssize_t n = out ? ivc_write(ch, (char *)buf + moved, len - moved)
                        : ivc_read(ch, (char *)buf + moved, len - moved);
        if (n < 0) {
            r = (int)n;
            break;
        }
        if (n > 0) {
            moved += (size_t)n;
            ivc__backoff_init(&b);
            continue;
        }
        if (ivc__now_ns() >= deadline) {
            r = IVC_ETIMEDOUT;
            break;
        }
        wait_step(ch->ctx, &b);
    }
    if (done)
        *done = moved;
    return r;
}

int ivc_write_all(ivc_chan_t *ch, const void *buf, size_t len, int timeout_ms, size_t *done)
{
    return move_all(ch, (void *)buf, len, timeout_ms, done, true);
}

int ivc_read_all(ivc_chan_t *ch, void *buf, size_t len, int timeout_ms, size_t *done)
{
    return move_all(ch, buf, len, timeout_ms, done, false);
}
