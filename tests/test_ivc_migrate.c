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
 *
 * suspend_mid_read: A only writes and B only reads, in large pieces, twelve
 * suspends of A; most land while B is copying out of the ring.
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

/* ---- suspends while the reader is copying ---------------------------------- */

#define SMR_ROUNDS 12

/* A cheap stream that never repeats: the 8-byte word at offset 8k holds
 * k + salt, little-endian.  Made and checked a word at a time, so both
 * sides spend their time in the ring's copies, not in the pattern. */
static uint8_t smr_byte(uint64_t salt, uint64_t off)
{
    return (uint8_t)((off / 8 + salt) >> (8 * (off % 8)));
}

static void smr_fill(uint8_t *buf, size_t len, uint64_t salt, uint64_t off)
{
    size_t i = 0;
    for (; i < len && (off + i) % 8; i++)
        buf[i] = smr_byte(salt, off + i);
    for (; i + 8 <= len; i += 8) {
        uint64_t w = (off + i) / 8 + salt;
        memcpy(buf + i, &w, 8);
    }
    for (; i < len; i++)
        buf[i] = smr_byte(salt, off + i);
}

/* Offset in buf of the first wrong byte, or len. */
static size_t smr_check(const uint8_t *buf, size_t len, uint64_t salt, uint64_t off)
{
    size_t i = 0;
    for (; i < len && (off + i) % 8; i++)
        if (buf[i] != smr_byte(salt, off + i))
            return i;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = (off + i) / 8 + salt, got;
        memcpy(&got, buf + i, 8);
        if (got != w)
            break;
    }
    for (; i < len; i++)
        if (buf[i] != smr_byte(salt, off + i))
            return i;
    return len;
}

struct smr_in {
    uint64_t salt, received;
    int bad;
};

static void smr_take(struct smr_in *in, const uint8_t *p, size_t n, const char *how)
{
    size_t ok = smr_check(p, n, in->salt, in->received);
    if (ok != n && !in->bad) {
        fprintf(stderr, "byte %llu of the stream differs (%s %zu bytes at %llu)\n",
                (unsigned long long)(in->received + ok), how, n, (unsigned long long)in->received);
        size_t a = (8 - in->received % 8) % 8;
        for (size_t k = a; k + 8 <= n && k < a + 64; k += 8) {
            uint64_t w;
            memcpy(&w, p + k, 8);
            fprintf(stderr, "  at +%zu: the word of offset %lld\n", k,
                    (long long)((w - in->salt) * 8));
        }
        in->bad = 1;
    }
    in->received += n;
}

static void smr_on_suspend(ivc_chan_t *ch, const void *unread, size_t len, void *arg)
{
    struct smr_in *in = ivc_chan_get_data(ch);
    if (in)
        smr_take(in, unread, len, "handed back");
}

/* A writes as fast as it can until it is suspended, reports what it wrote,
 * comes back, and does it again. */
static int proc_writer(void *arg)
{
    ivc_ctx_t *c = reg(A_ID);
    close(report[0]);
    static uint8_t buf[CHUNK];
    for (int round = 0; round < SMR_ROUNDS; round++) {
        ivc_chan_t *ch;
        T_OK(ivc_connect(c, B_ID, 10000, &ch));
        struct totals t = {0};
        for (;;) {
            /* Sizes that keep moving the frame boundaries around. */
            size_t want = CHUNK - (size_t)(t.written % 4093);
            smr_fill(buf, want, 500 + round, t.written);
            ssize_t w = ivc_write(ch, buf, want);
            if (w == IVC_ESHUTDOWN)
                break;
            T_ASSERT(w >= 0, "A write: %s", ivc_strerror((int)w));
            t.written += (uint64_t)w;
        }
        T_OK(ivc_close(ch));
        int r;
        for (int i = 0; (r = ivc_reattach(c, NULL)) == IVC_ENODEV && i < 100; i++)
            usleep(10000);
        T_OK(r);
        T_ASSERT(write(report[1], &t, sizeof(t)) == sizeof(t), "report");
    }
    T_OK(ivc_unregister(c));
    return 0;
}

/* B only reads, in large pieces, and A keeps the ring full, so B spends most
 * of its time copying out of the ring: a suspend of A lands in the middle
 * of a copy in many rounds.  What that copy returned must not be handed
 * back as well. */
static void test_suspend_mid_read(void)
{
    t_ivcd_start(&ivcd, MAGIC, NULL);
    T_ASSERT(pipe(report) == 0, "pipe");
    ivc_ctx_t *c = reg(B_ID);
    ivc_callbacks_t cb = {.suspend = smr_on_suspend, .arrive = on_arrive};
    T_OK(ivc_set_callbacks(c, &cb));
    pid_t a = t_fork(proc_writer, NULL);
    close(report[1]);
    static uint8_t tmp[CHUNK];
    for (int round = 0; round < SMR_ROUNDS; round++) {
        ivc_chan_t *ch;
        struct smr_in in = {.salt = 500 + round};
        T_OK(ivc_accept(c, 10000, &ch));
        ivc_chan_set_data(ch, &in);
        ivc_peer_t peers[4];
        T_ASSERT(T_OK(ivc_get_hosts(c, peers, 4)) == 1, "one peer");
        a_vm_id = peers[0].vm_id;
        pid_t ctl = 0;
        for (;;) {
            if (!ctl && in.received > (4u << 20))
                ctl = t_fork(proc_ctl, NULL);
            ssize_t r = ivc_read(ch, tmp, sizeof(tmp));
            if (r == IVC_ESHUTDOWN)
                break;
            T_ASSERT(r >= 0, "B read: %s", ivc_strerror((int)r));
            smr_take(&in, tmp, (size_t)r, "read");
        }
        struct totals t;
        T_ASSERT(read(report[0], &t, sizeof(t)) == sizeof(t), "A's report");
        printf("round %d: A wrote %llu, B got %llu\n", round, (unsigned long long)t.written,
               (unsigned long long)in.received);
        T_ASSERT(!in.bad, "round %d: B received corrupt data", round);
        T_ASSERT(in.received == t.written, "round %d: every byte A wrote reached B once", round);
        T_ASSERT(t_wait(ctl) == 0, "ivcd ctl suspend failed");
        T_OK(ivc_close(ch));
    }
    T_ASSERT(t_wait(a) == 0, "process A failed");
    T_OK(ivc_unregister(c));
    t_ivcd_stop(&ivcd);
}

static const struct t_case cases[] = {
    {"suspend_twice_then_stream", test_suspend_twice_then_stream, 150},
    {"suspend_mid_read", test_suspend_mid_read, 150},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
