/*
 * test_ivc_migrate - ivcd's migration control in the middle of a stream.
 *
 * Process A and the test (B) stream deterministic bytes both ways.  A third
 * process runs `ivcd ctl suspend <A's peer id>`.  Both sides must end up
 * with exactly the other's byte stream: what ivc_read() returned followed by
 * what the suspend callback handed back, each byte once and in order, and as
 * many bytes as the writer says it wrote.  Then A re-attaches (the arrival
 * callback fires), connects again and a fresh stream flows.  Done twice; the
 * second time B closes its channel from inside the callback.
 */
#include "ivc.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>

#define MAGIC 777
#define A_ID  1
#define B_ID  2
#define CHUNK 65536

static struct t_ivcd ivcd;
static int report[2]; /* A -> B: struct totals */

struct totals {
    uint64_t written, received;
    int arrived;
};

/* Receiving side of one stream: checks every byte, read or handed back. */
struct stream {
    uint64_t seed;
    uint64_t received;
    uint64_t handed_back_calls;
    int bad;
    int close_in_callback; /* the suspend callback closes the channel itself */
    int closed;
};

static void take(struct stream *s, const uint8_t *p, size_t n)
{
    size_t ok = t_check(p, n, s->seed, s->received);
    if (ok != n && !s->bad) {
        fprintf(stderr, "stream %llu: byte %llu differs\n", (unsigned long long)s->seed,
                (unsigned long long)(s->received + ok));
        s->bad = 1;
    }
    s->received += n;
}

static void on_suspend(ivc_chan_t *ch, const void *unread, size_t len, void *arg)
{
    struct stream *s = ivc_chan_get_data(ch);
    if (!s)
        return;
    s->handed_back_calls++;
    take(s, unread, len);
    if (s->close_in_callback) {
        T_OK(ivc_close(ch));
        s->closed = 1;
    }
    (void)arg;
}

static int arrived;
static void on_arrive(ivc_ctx_t *ctx, void *arg)
{
    arrived++;
}

static ivc_ctx_t *reg(uint32_t id)
{
    ivc_options_t o = {.location = ivcd.sock, .ring_size = 64 << 10};
    ivc_ctx_t *c;
    ivc_callbacks_t cb = {.suspend = on_suspend, .arrive = on_arrive};
    T_OK(ivc_register(MAGIC, id, &o, &c));
    T_OK(ivc_set_callbacks(c, &cb));
    return c;
}

/* Stream both ways on `ch` until it is suspended (or `limit` bytes were
 * sent, when limit != 0).  Returns bytes written. */
static uint64_t pump(ivc_chan_t *ch, uint64_t out_seed, struct stream *in, uint64_t limit)
{
    uint8_t buf[CHUNK], tmp[CHUNK];
    uint64_t written = 0;
    for (;;) {
        size_t want = CHUNK;
        if (limit && limit - written < want)
            want = (size_t)(limit - written);
        if (want) {
            t_fill(buf, want, out_seed, written);
            ssize_t w = ivc_write(ch, buf, want);
            if (w == IVC_ESHUTDOWN)
                break;
            T_ASSERT(w >= 0, "write: %s", ivc_strerror((int)w));
            written += (uint64_t)w;
        }
        ssize_t r = ivc_read(ch, tmp, sizeof(tmp));
        if (r == IVC_ESHUTDOWN)
            break;
        if (r == IVC_EOF && limit)
            break;
        T_ASSERT(r >= 0, "read: %s", ivc_strerror((int)r));
        take(in, tmp, (size_t)r);
        if (limit && written == limit && in->received >= limit)
            break;
    }
    return written;
}

static int proc_a(void *arg)
{
    ivc_ctx_t *c = reg(A_ID);
    close(report[0]);
    for (int round = 0; round < 2; round++) {
        ivc_chan_t *ch;
        struct stream in = {.seed = 100 + round};
        T_OK(ivc_connect(c, B_ID, 10000, &ch));
        ivc_chan_set_data(ch, &in);
        struct totals t = {0};
        t.written = pump(ch, 200 + round, &in, 0);
        T_ASSERT(ivc_chan_state(ch) == IVC_CHAN_SUSPENDED, "A's channel suspended");
        T_ASSERT(ivc_ctx_state(c) == IVC_CTX_DETACHED, "A detached");
        T_ASSERT(!in.bad, "A received corrupt data");
        T_ASSERT(in.handed_back_calls == 1, "suspend callback once per channel");
        T_OK(ivc_close(ch));
        /* Come back (here: to the same ivcd). */
        int r;
        for (int i = 0; (r = ivc_reattach(c, NULL)) == IVC_ENODEV && i < 100; i++)
            usleep(10000);
        T_OK(r);
        T_ASSERT(arrived == round + 1, "arrival callback fired");
        t.received = in.received;
        t.arrived = arrived;
        T_ASSERT(write(report[1], &t, sizeof(t)) == sizeof(t), "report");
    }
    /* After the moves, a fresh channel works. */
    ivc_chan_t *ch;
    struct stream in = {.seed = 300};
    T_OK(ivc_connect(c, B_ID, 10000, &ch));
    ivc_chan_set_data(ch, &in);
    pump(ch, 400, &in, 1 << 20);
    T_ASSERT(!in.bad && in.received == (1 << 20), "post-migration stream");
    T_OK(ivc_close(ch));
    T_OK(ivc_unregister(c));
    return 0;
}

static uint16_t a_vm_id;

static int proc_ctl(void *arg)
{
    char out[512], id[16];
    snprintf(id, sizeof(id), "%u", a_vm_id);
    const char *args[] = {"suspend", id, "--timeout", "20000", NULL};
    int st = t_ivcd_ctl(&ivcd, out, sizeof(out), args);
    printf("ivcd ctl suspend %s -> %d: %s", id, st, out);
    return st == 0 && strncmp(out, "ok", 2) == 0 ? 0 : 1;
}

/* B's side of two suspensions of A mid-stream and a stream afterwards
 * (one sequence: process A plays its side of all three in order). */
static void test_suspend_twice_then_stream(void)
{
    t_ivcd_start(&ivcd, MAGIC, NULL);
    T_ASSERT(pipe(report) == 0, "pipe");
    ivc_ctx_t *c = reg(B_ID);
    pid_t a = t_fork(proc_a, NULL);
    close(report[1]);

    for (int round = 0; round < 2; round++) {
        ivc_chan_t *ch;
        struct stream in = {.seed = 200 + round, .close_in_callback = round == 1};
        T_OK(ivc_accept(c, 10000, &ch));
        ivc_chan_set_data(ch, &in);
        ivc_peer_t peers[4];
        int n = T_OK(ivc_get_hosts(c, peers, 4));
        T_ASSERT(n == 1 && peers[0].client_id == A_ID, "one peer, A (n=%d)", n);
        a_vm_id = peers[0].vm_id;

        /* Let a few MiB flow, then suspend A while both are mid-stream. */
        uint8_t buf[CHUNK], tmp[CHUNK];
        uint64_t written = 0;
        pid_t ctl = 0;
        for (;;) {
            if (!ctl && in.received > (4u << 20))
                ctl = t_fork(proc_ctl, NULL);
            t_fill(buf, CHUNK, 100 + round, written);
            ssize_t w = ivc_write(ch, buf, CHUNK);
            if (w == IVC_ESHUTDOWN || in.closed)
                break;
            T_ASSERT(w >= 0, "B write: %s", ivc_strerror((int)w));
            written += (uint64_t)w;
            ssize_t r = ivc_read(ch, tmp, sizeof(tmp));
            if (r == IVC_ESHUTDOWN || in.closed)
                break;
            T_ASSERT(r >= 0, "B read: %s", ivc_strerror((int)r));
            take(&in, tmp, (size_t)r);
        }
        T_ASSERT(ctl, "suspend started");
        T_ASSERT(in.handed_back_calls == 1, "B's callback ran once");
        T_ASSERT(!in.bad, "B received corrupt data");
        if (!in.closed) {
            T_ASSERT(ivc_chan_state(ch) == IVC_CHAN_SUSPENDED, "B's channel suspended");
            T_OK(ivc_close(ch));
        }

        struct totals t;
        T_ASSERT(read(report[0], &t, sizeof(t)) == sizeof(t), "A's report");
        printf("round %d: A wrote %llu, B got %llu; B wrote %llu, A got %llu\n", round,
               (unsigned long long)t.written, (unsigned long long)in.received,
               (unsigned long long)written, (unsigned long long)t.received);
        T_ASSERT(in.received == t.written, "every byte A wrote reached B once");
        T_ASSERT(t.received == written, "every byte B wrote reached A once");
        T_ASSERT(t_wait(ctl) == 0, "ivcd ctl suspend failed");
        T_ASSERT(ivc_ctx_state(c) == IVC_CTX_ATTACHED, "B stays attached");
    }
    ivc_chan_t *ch;
    struct stream in = {.seed = 400};
    T_OK(ivc_accept(c, 10000, &ch));
    ivc_chan_set_data(ch, &in);
    pump(ch, 300, &in, 1 << 20);
    T_ASSERT(!in.bad && in.received == (1 << 20), "post-migration stream");
    T_ASSERT(t_wait(a) == 0, "process A failed");
    T_OK(ivc_close(ch));
    T_OK(ivc_unregister(c));
    t_ivcd_stop(&ivcd);
}

static const struct t_case cases[] = {
    {"suspend_twice_then_stream", test_suspend_twice_then_stream, 150},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
