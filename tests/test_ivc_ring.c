/*
 * test_ivc_ring - ring behaviour through the public API: reads when empty,
 * partial writes when full, wrap-around, EOF after close, and a stream of
 * every message size from 1 byte to 4 MiB (powers of two and their
 * neighbours) between two processes, checked byte for byte.
 */
#include "ivc.h"
#include "testutil.h"

#include <pthread.h>
#include <string.h>

#define MAGIC 4242

static struct t_ivcd ivcd;

static ivc_ctx_t *reg(uint32_t id, size_t ring)
{
    ivc_options_t o = {.location = ivcd.sock, .ring_size = ring};
    ivc_ctx_t *c;
    T_OK(ivc_register(MAGIC, id, &o, &c));
    return c;
}

/* Two contexts in this process joined by one channel: connect runs in a
 * thread because it waits for the accept. */
static ivc_chan_t *a_chan, *b_chan;
static ivc_ctx_t *a_ctx, *b_ctx;

static void *connect_thread(void *arg)
{
    T_OK(ivc_connect(a_ctx, 2, 10000, &a_chan));
    return NULL;
}

static void pair(size_t ring)
{
    pthread_t t;
    a_ctx = reg(1, ring);
    b_ctx = reg(2, ring);
    T_ASSERT(pthread_create(&t, NULL, connect_thread, NULL) == 0, "pthread_create");
    T_OK(ivc_accept(b_ctx, 10000, &b_chan));
    pthread_join(t, NULL);
    T_ASSERT(ivc_chan_ring_size(a_chan) == ring, "ring size %zu", ivc_chan_ring_size(a_chan));
}

static void test_empty_full_wrap(void)
{
    size_t ring = 4096;
    uint8_t buf[3 * 4096], out[3 * 4096];
    uint64_t off_w = 0, off_r = 0;

    T_ASSERT(ivc_read(b_chan, out, sizeof(out)) == 0, "read on an empty ring returns 0");
    t_fill(buf, sizeof(buf), 7, off_w);
    ssize_t n = ivc_write(a_chan, buf, 5000);
    T_ASSERT(n == (ssize_t)ring, "a 5000-byte write into an empty 4 KiB ring moves %zd", n);
    off_w += (uint64_t)n;
    T_ASSERT(ivc_write(a_chan, buf, 1) == 0, "a write into a full ring returns 0");
    T_ASSERT(ivc_chan_writable(a_chan) == 0, "full ring has no room");
    T_ASSERT(ivc_chan_readable(b_chan) == ring, "reader sees the whole ring");

    /* Read 100, then only 100 more fit. */
    T_ASSERT(ivc_read(b_chan, out, 100) == 100, "read 100");
    T_ASSERT(t_check(out, 100, 7, off_r) == 100, "first 100 bytes intact");
    off_r += 100;
    t_fill(buf, 300, 7, off_w);
    n = ivc_write(a_chan, buf, 300);
    T_ASSERT(n == 100, "partial write into 100 free bytes moved %zd", n);
    off_w += 100;

    /* Many rounds of odd sizes wrap the indices around the ring. */
    for (int round = 0; round < 2000; round++) {
        size_t want = 1 + (size_t)(round * 37 % 4000);
        size_t got = 0;
        while (got < ivc_chan_readable(b_chan) && got < want) {
            ssize_t r = ivc_read(b_chan, out, want - got);
            T_ASSERT(r > 0, "read %zd", r);
            T_ASSERT(t_check(out, (size_t)r, 7, off_r) == (size_t)r, "data intact at %llu",
                     (unsigned long long)off_r);
            off_r += (uint64_t)r;
            got += (size_t)r;
        }
        t_fill(buf, want, 7, off_w);
        n = ivc_write(a_chan, buf, want);
        T_ASSERT(n >= 0, "write %zd", n);
        off_w += (uint64_t)n;
    }
    while (off_r < off_w) {
        ssize_t r = ivc_read(b_chan, out, sizeof(out));
        T_ASSERT(r > 0, "drain read %zd", r);
        T_ASSERT(t_check(out, (size_t)r, 7, off_r) == (size_t)r, "drained data intact");
        off_r += (uint64_t)r;
    }
    T_ASSERT(ivc_read(b_chan, out, sizeof(out)) == 0, "empty again");

    /* Close: the reader drains what is left, then sees EOF; the closer's
     * peer can no longer write. */
    T_ASSERT(ivc_write(a_chan, "xyz", 3) == 3, "write before close");
    T_OK(ivc_close(a_chan));
    T_ASSERT(ivc_read(b_chan, out, 2) == 2, "data written before close is still read");
    T_ASSERT(ivc_read(b_chan, out, 10) == 1, "last byte");
    T_ASSERT(ivc_read(b_chan, out, 10) == IVC_EOF, "then EOF");
    T_ASSERT(ivc_chan_state(b_chan) == IVC_CHAN_EOF, "state EOF");
    T_ASSERT(ivc_write(b_chan, "x", 1) == IVC_EPIPE, "write to a closed peer fails");
    T_OK(ivc_close(b_chan));
}

/* ivc_writev: pieces of many shapes (empty ones, one byte, larger than the
 * ring, across the wrap), partial when the ring fills, the bytes in order. */
static void test_writev(void)
{
    uint8_t buf[3 * 4096], out[3 * 4096];
    uint64_t off_w = 0, off_r = 0;
    struct iovec v[IVC_IOV_MAX + 1] = {{0}};
    T_ASSERT(ivc_writev(a_chan, v, IVC_IOV_MAX + 1) == IVC_EINVAL, "too many pieces: EINVAL");
    T_ASSERT(ivc_writev(a_chan, v, -1) == IVC_EINVAL, "a negative count: EINVAL");
    T_ASSERT(ivc_writev(a_chan, v, 0) == 0, "no pieces: 0");
    for (int round = 0; round < 3000; round++) {
        int cnt = 1 + round % 5;
        size_t total = 0;
        for (int i = 0; i < cnt; i++) {
            size_t len = (size_t)((round * 131 + i * 977) % (i == 2 ? 5000 : 300));
            if (round % 7 == i)
                len = 0;
            if (total + len > sizeof(buf))
                len = sizeof(buf) - total;
            v[i] = (struct iovec){buf + total, len};
            total += len;
        }
        t_fill(buf, total, 9, off_w);
        size_t room = ivc_chan_writable(a_chan);
        ssize_t n = ivc_writev(a_chan, v, cnt);
        size_t want = total < room ? total : room;
        T_ASSERT(n == (ssize_t)want, "round %d: writev of %zu bytes with %zu free moved %zd", round,
                 total, room, n);
        off_w += (uint64_t)n;
        /* Read a varying part back, so the indices wrap at every offset. */
        size_t take = (size_t)(round * 53 % 4097);
        while (take && off_r < off_w) {
            ssize_t r = ivc_read(b_chan, out, take);
            T_ASSERT(r > 0, "read %zd", r);
            T_ASSERT(t_check(out, (size_t)r, 9, off_r) == (size_t)r,
                     "round %d: data intact at %llu", round, (unsigned long long)off_r);
            off_r += (uint64_t)r;
            take -= (size_t)r;
        }
    }
    while (off_r < off_w) {
        ssize_t r = ivc_read(b_chan, out, sizeof(out));
        T_ASSERT(r > 0, "drain read %zd", r);
        T_ASSERT(t_check(out, (size_t)r, 9, off_r) == (size_t)r, "drained data intact");
        off_r += (uint64_t)r;
    }
}

/* ---- streaming every size between two processes --------------------------- */

static size_t sizes[128];
static int nsizes;

static void make_sizes(void)
{
    for (size_t s = 1; s <= (4u << 20); s <<= 1) {
        if (s > 2)
            sizes[nsizes++] = s - 1;
        sizes[nsizes++] = s;
        if (s < (4u << 20))
            sizes[nsizes++] = s + 1;
    }
}

#define REPS 3

static int sender(void *arg)
{
    ivc_ctx_t *c = reg(10, 64 << 10);
    ivc_chan_t *ch;
    T_OK(ivc_connect(c, 11, 10000, &ch));
    uint8_t *buf = malloc(4u << 20);
    uint64_t off = 0;
    for (int i = 0; i < nsizes; i++)
        for (int r = 0; r < REPS; r++) {
            t_fill(buf, sizes[i], 99, off);
            T_OK(ivc_write_all(ch, buf, sizes[i], 30000, NULL));
            off += sizes[i];
        }
    /* Wait for the receiver's verdict byte before leaving. */
    char ok = 0;
    T_OK(ivc_read_all(ch, &ok, 1, 60000, NULL));
    T_ASSERT(ok == 'K', "receiver verdict");
    free(buf);
    T_OK(ivc_unregister(c));
    return 0;
}

static void test_stream_all_sizes(void)
{
    make_sizes();
    ivc_ctx_t *c = reg(11, 64 << 10);
    pid_t pid = t_fork(sender, NULL);
    ivc_chan_t *ch;
    T_OK(ivc_accept(c, 10000, &ch));
    T_ASSERT(ivc_chan_peer(ch) == 10, "peer id %u", ivc_chan_peer(ch));
    uint8_t *buf = malloc(4u << 20);
    uint64_t off = 0;
    for (int i = 0; i < nsizes; i++)
        for (int r = 0; r < REPS; r++) {
            size_t done = 0;
            T_OK(ivc_read_all(ch, buf, sizes[i], 30000, &done));
            T_ASSERT(done == sizes[i], "size %zu: got %zu", sizes[i], done);
            size_t bad = t_check(buf, sizes[i], 99, off);
            T_ASSERT(bad == sizes[i], "size %zu rep %d: byte %zu differs", sizes[i], r, bad);
            off += sizes[i];
        }
    T_OK(ivc_write_all(ch, "K", 1, 10000, NULL));
    T_ASSERT(t_wait(pid) == 0, "sender failed");
    printf("streamed %d sizes x %d, %llu bytes, all intact\n", nsizes, REPS,
           (unsigned long long)off);
    free(buf);
    T_OK(ivc_unregister(c));
}

/* A pair on a 4 KiB ring, run `fn`, unregister both. */
static void on_a_pair(void (*fn)(void))
{
    t_ivcd_start(&ivcd, MAGIC, NULL);
    pair(4096);
    fn();
    T_OK(ivc_unregister(a_ctx));
    T_OK(ivc_unregister(b_ctx));
    t_ivcd_stop(&ivcd);
}

static void case_writev(void)
{
    on_a_pair(test_writev);
}

static void case_empty_full_wrap(void)
{
    on_a_pair(test_empty_full_wrap);
}

static void case_stream_all_sizes(void)
{
    t_ivcd_start(&ivcd, MAGIC, NULL);
    test_stream_all_sizes();
    t_ivcd_stop(&ivcd);
}

static const struct t_case cases[] = {
    {"writev", case_writev, 30},
    {"empty_full_wrap", case_empty_full_wrap, 30},
    {"stream_all_sizes", case_stream_all_sizes, 180},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
