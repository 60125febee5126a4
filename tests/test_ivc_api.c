/*
 * test_ivc_api - the public API's contracts and error paths: every bad
 * argument and missing resource gets its own code, ivc_strerror() names each
 * one, membership listing, EOF when a peer unregisters, and a full region.
 */
#include "internal.h" /* one test below breaks a channel on purpose */
#include "ivc.h"
#include "testutil.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>

#define MAGIC 0xC0FFEE

static struct t_ivcd ivcd;

static ivc_ctx_t *reg_at(const char *sock, uint32_t id, size_t ring, int *err)
{
    ivc_options_t o = {.location = sock, .ring_size = ring};
    ivc_ctx_t *c = NULL;
    *err = ivc_register(MAGIC, id, &o, &c);
    return c;
}

static ivc_ctx_t *reg(uint32_t id)
{
    int r;
    ivc_ctx_t *c = reg_at(ivcd.sock, id, 0, &r);
    T_OK(r);
    return c;
}

struct conn_arg {
    ivc_ctx_t *ctx;
    uint32_t peer;
    ivc_chan_t *ch;
    int r;
};

static void *connect_thread(void *p)
{
    struct conn_arg *a = p;
    a->r = ivc_connect(a->ctx, a->peer, 5000, &a->ch);
    return NULL;
}

/* Connect `a` to `b` (registered as `b_id`): connect waits for the accept,
 * so it runs in a thread. */
static void pair_up(ivc_ctx_t *a, ivc_ctx_t *b, uint32_t b_id, ivc_chan_t **ach, ivc_chan_t **bch)
{
    struct conn_arg arg = {.ctx = a, .peer = b_id};
    pthread_t t;
    T_ASSERT(pthread_create(&t, NULL, connect_thread, &arg) == 0, "pthread_create");
    T_OK(ivc_accept(b, 5000, bch));
    pthread_join(t, NULL);
    T_OK(arg.r);
    *ach = arg.ch;
}

static void test_errors(void)
{
    int r;
    char path[300];

    snprintf(path, sizeof(path), "%s/nothing.sock", t_tmpdir());
    T_ASSERT(!reg_at(path, 1, 0, &r) && r == IVC_ENODEV, "missing socket: %d", r);
    T_ASSERT(!reg_at(ivcd.sock, 1, 5000, &r) && r == IVC_EINVAL, "ring not a power of two");
    T_ASSERT(!reg_at(ivcd.sock, 1, 1024, &r) && r == IVC_EINVAL, "ring below 4 KiB");
    T_ASSERT(ivc_register(MAGIC, 1, NULL, NULL) == IVC_EINVAL, "NULL out");

    ivc_options_t o = {.location = ivcd.sock};
    ivc_ctx_t *c = NULL;
    r = ivc_register(MAGIC + 1, 1, &o, &c);
    T_ASSERT(r == IVC_EACCES && !c, "wrong magic gives EACCES, got %d", r);

    c = reg(1);
    ivc_chan_t *ch = NULL;
    T_ASSERT(ivc_connect(c, 1, 100, &ch) == IVC_EINVAL, "connect to self");
    uint64_t t0 = t_now_ms();
    T_ASSERT(ivc_connect(c, 99, 200, &ch) == IVC_ENOENT && !ch, "absent peer: ENOENT");
    T_ASSERT(t_now_ms() - t0 >= 150, "ENOENT only after waiting for the peer to appear");
    T_ASSERT(ivc_accept(c, 0, &ch) == IVC_ETIMEDOUT, "accept with nothing pending");
    T_ASSERT(ivc_accept(c, 50, &ch) == IVC_ETIMEDOUT, "accept timeout");
    T_ASSERT(ivc_get_hosts(c, NULL, 0) == 0, "alone in the job");
    T_ASSERT(ivc_reattach(c, NULL) == IVC_EBUSY, "reattach while attached");
    T_ASSERT(ivc_progress(c) == IVC_CTX_ATTACHED, "attached");
    T_ASSERT(ivc_read(NULL, NULL, 0) == IVC_EINVAL, "NULL channel");
    T_OK(ivc_unregister(c));
}

static void test_strerror(void)
{
    int codes[] = {IVC_EINVAL,       IVC_ENOMEM,     IVC_EAGAIN, IVC_ENOENT,
                   IVC_ENODEV,       IVC_EACCES,     IVC_ENOSPC, IVC_ETIMEDOUT,
                   IVC_ECONNREFUSED, IVC_ECONNRESET, IVC_EPROTO, IVC_EPROTONOSUPPORT,
                   IVC_ESHUTDOWN,    IVC_ENOTCONN,   IVC_EBUSY,  IVC_EPIPE,
                   IVC_EOF};
    size_t n = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < n; i++) {
        const char *s = ivc_strerror(codes[i]);
        T_ASSERT(s && strlen(s) > 5, "code %d has a message", codes[i]);
        for (size_t j = 0; j < i; j++)
            T_ASSERT(strcmp(s, ivc_strerror(codes[j])) != 0, "codes %d and %d share a message",
                     codes[i], codes[j]);
    }
    T_ASSERT(strcmp(ivc_strerror(-99999), "unknown error") == 0, "unknown code");
}

static void test_membership_and_eof(void)
{
    ivc_ctx_t *a = reg(10), *b = reg(11), *c = reg(12);
    ivc_peer_t p[8], self;
    int n = T_OK(ivc_get_hosts(a, p, 8));
    T_ASSERT(n == 2, "two others, got %d", n);
    T_ASSERT((p[0].client_id == 11 && p[1].client_id == 12) ||
                 (p[0].client_id == 12 && p[1].client_id == 11),
             "lists 11 and 12");
    T_ASSERT(ivc_get_hosts(a, p, 1) == 2, "count exceeds max");
    T_OK(ivc_self(a, &self));
    T_ASSERT(self.client_id == 10 && self.pid == getpid(), "self");

    ivc_chan_t *ach, *bch;
    pair_up(a, b, 11, &ach, &bch);
    T_ASSERT(ivc_chan_peer(bch) == 10 && ivc_chan_peer(ach) == 11, "peer ids");

    /* Idle: open, healthy and empty; anything to read (data, an EOF) is not.
     * (A channel just set up may say "not idle" until the first read.) */
    char buf[8];
    T_ASSERT(ivc_read(bch, buf, 8) == 0 && ivc_read(ach, buf, 8) == 0, "nothing to read");
    T_ASSERT(ivc_chan_idle(bch) && ivc_chan_idle(ach), "an empty channel is idle");
    T_ASSERT(!ivc_chan_idle(NULL), "no channel is not idle");
    T_ASSERT(ivc_write(ach, "x", 1) == 1, "write");
    T_ASSERT(!ivc_chan_idle(bch) && ivc_chan_idle(ach), "a byte waits: not idle");
    T_ASSERT(ivc_read(bch, buf, 8) == 1 && ivc_chan_idle(bch), "read: idle again");

    /* Reading in place: a peek shows what waits, a commit consumes part of
     * it, ivc_read() goes on from there; a run stops at the ring's end. */
    const void *d;
    T_ASSERT(ivc_read_peek(bch, &d) == 0, "nothing to peek");
    T_ASSERT(ivc_read_peek(NULL, &d) == IVC_EINVAL && ivc_read_commit(NULL, 0) == IVC_EINVAL,
             "no channel");
    T_ASSERT(ivc_write(ach, "abcdef", 6) == 6, "write");
    T_ASSERT(ivc_read_peek(bch, &d) == 6 && memcmp(d, "abcdef", 6) == 0, "peek sees the bytes");
    T_ASSERT(ivc_read_commit(bch, 7) == IVC_EINVAL, "commit beyond what was peeked");
    T_OK(ivc_read_commit(bch, 2));
    T_ASSERT(ivc_read(bch, buf, 8) == 4 && memcmp(buf, "cdef", 4) == 0, "read after a commit");
    /* An empty piece needs no address (UBSan checks that none is used). */
    struct iovec z[2] = {{NULL, 0}, {"q", 1}};
    T_ASSERT(ivc_writev(ach, z, 2) == 1 && ivc_read(bch, buf, 8) == 1 && buf[0] == 'q',
             "an empty piece without an address");
    size_t ring = ivc_chan_ring_size(ach);
    char *big = calloc(1, ring);
    T_ASSERT(big, "memory");
    size_t fill = ring - 8 - 3; /* 8 bytes went through already ("x", "abcdef", "q") */
    T_ASSERT(ivc_write(ach, big, fill) == (ssize_t)fill, "fill to 3 before the end");
    T_OK(ivc_read_all(bch, big, fill, 2000, NULL));
    T_ASSERT(ivc_write(ach, "uvwxyz", 6) == 6, "write across the ring's end");
    T_ASSERT(ivc_read_peek(bch, &d) == 3 && memcmp(d, "uvw", 3) == 0, "the run stops at the end");
    T_OK(ivc_read_commit(bch, 3));
    T_ASSERT(ivc_read_peek(bch, &d) == 3 && memcmp(d, "xyz", 3) == 0, "the rest from the start");
    T_OK(ivc_read_commit(bch, 3));
    T_ASSERT(ivc_chan_idle(bch), "all consumed");
    free(big);

    /* Unregistering closes the channel: the peer reads the rest, then EOF. */
    ssize_t w = ivc_write(ach, "bye", 3);
    T_ASSERT(w == 3, "write returned %zd (%s), state %d", w, ivc_strerror((int)w),
             ivc_chan_state(ach));
    T_ASSERT(ivc_read_peek(bch, &d) == 3, "peeked while the peer is there");
    T_OK(ivc_unregister(a));
    T_ASSERT(ivc_read_commit(bch, 3) == IVC_EAGAIN, "the peer left since the peek: not consumed");
    T_ASSERT(ivc_read_peek(bch, &d) == 0, "a closed channel is left to ivc_read");
    T_ASSERT(!ivc_chan_idle(bch), "bytes and an EOF wait: not idle");
    size_t done = 0;
    T_OK(ivc_read_all(bch, buf, 3, 2000, &done));
    T_ASSERT(memcmp(buf, "bye", 3) == 0, "data before unregister");
    T_ASSERT(!ivc_chan_idle(bch), "the peer left: not idle (the read says EOF)");
    T_ASSERT(ivc_read(bch, buf, 8) == IVC_EOF, "EOF after the peer left");
    ivc_pollitem_t pi = {.chan = bch, .events = IVC_POLLIN};
    T_ASSERT(ivc_poll(b, &pi, 1, 0) == 1 && (pi.revents & IVC_POLLHUP), "poll reports HUP");
    T_OK(ivc_close(bch));
    T_ASSERT(ivc_get_hosts(b, p, 8) == 1 && p[0].client_id == 12, "10 is gone from the list");
    T_OK(ivc_unregister(b));
    T_OK(ivc_unregister(c));
}

/* The room an in-place read frees reaches the writer later than a read's
 * (ivc_read_commit leaves the index the writer polls alone): with the
 * reader's next write, its next ivc_read, or once a quarter ring waits.
 * A one-way stream read only by peek and commit never stalls: 64 rings'
 * worth through a full ring, in odd pieces, every byte in order. */
static void test_commit_room(void)
{
    ivc_ctx_t *a = reg(30), *b = reg(31);
    ivc_chan_t *ach, *bch;
    pair_up(a, b, 31, &ach, &bch);
    size_t ring = ivc_chan_ring_size(ach);
    static uint8_t big[1 << 20];
    T_ASSERT(ring <= sizeof(big) && ring >= 4096, "ring of %zu", ring);
    t_fill(big, ring, 3, 0);
    T_ASSERT(ivc_write(ach, big, ring) == (ssize_t)ring && ivc_chan_writable(ach) == 0, "full");
    const void *d;
    T_ASSERT(ivc_chan_state(bch) == IVC_CHAN_OPEN, "open");
    T_ASSERT(ivc_read_peek(bch, &d) == (ssize_t)ring && t_check(d, 100, 3, 0) == 100, "peek");
    T_OK(ivc_read_commit(bch, 100));
    T_ASSERT(ivc_chan_writable(ach) == 0, "a commit's room is not the writer's yet");
    T_ASSERT(ivc_write(bch, "x", 1) == 1, "the reader writes");
    T_ASSERT(ivc_chan_writable(ach) == 100, "its write told the writer: %zu",
             ivc_chan_writable(ach));
    T_OK(ivc_read_commit(bch, 100));
    T_ASSERT(ivc_chan_writable(ach) == 100, "not yet");
    char c;
    T_ASSERT(ivc_read(ach, &c, 1) == 1 && c == 'x', "the writer reads the x");
    uint8_t out[300];
    T_ASSERT(ivc_read(bch, out, 300) == 300 && t_check(out, 300, 3, 200) == 300, "read 300");
    T_ASSERT(ivc_chan_writable(ach) == 500, "a read tells at once: %zu", ivc_chan_writable(ach));
    T_ASSERT(ivc_read_peek(bch, &d) > 0, "more to peek");
    T_OK(ivc_read_commit(bch, ring / 4 - 1));
    T_ASSERT(ivc_chan_writable(ach) == 500, "under a quarter ring: not yet");
    T_OK(ivc_read_commit(bch, 1));
    T_ASSERT(ivc_chan_writable(ach) == 500 + ring / 4, "a quarter ring: told (%zu)",
             ivc_chan_writable(ach));
    /* Drain what is left, then stream one way, read only in place. */
    size_t left = ring - 500 - ring / 4;
    uint64_t off_r = 500 + ring / 4, off_w = ring, total = 64 * (uint64_t)ring;
    while (left) {
        ssize_t n = ivc_read_peek(bch, &d);
        T_ASSERT(n > 0 && t_check(d, (size_t)n, 3, off_r) == (size_t)n, "drain");
        T_OK(ivc_read_commit(bch, (size_t)n));
        left -= (size_t)n;
        off_r += (uint64_t)n;
    }
    uint64_t t0 = t_now_ms();
    while (off_r < total) {
        T_ASSERT(t_now_ms() - t0 < 20000, "stalled at %llu of %llu bytes (written %llu)",
                 (unsigned long long)off_r, (unsigned long long)total, (unsigned long long)off_w);
        if (off_w < total) {
            size_t want = 1 + (size_t)(off_w * 7919 % 70000);
            if (want > total - off_w)
                want = (size_t)(total - off_w);
            t_fill(big, want, 3, off_w);
            ssize_t w = ivc_write(ach, big, want);
            T_ASSERT(w >= 0, "write: %s", ivc_strerror((int)w));
            off_w += (uint64_t)w;
        }
        ssize_t n = ivc_read_peek(bch, &d);
        T_ASSERT(n >= 0, "peek: %s", ivc_strerror((int)n));
        size_t k = n > 3000 ? 1 + (size_t)(off_r % 3000) : (size_t)n; /* odd pieces */
        if (k) {
            T_ASSERT(t_check(d, k, 3, off_r) == k, "bytes at %llu", (unsigned long long)off_r);
            T_OK(ivc_read_commit(bch, k));
            off_r += k;
        }
    }
    T_OK(ivc_unregister(a));
    T_OK(ivc_unregister(b));
}

static void test_poll_and_timeouts(void)
{
    ivc_ctx_t *a = reg(20), *b = reg(21);
    ivc_chan_t *ach, *bch;
    pair_up(a, b, 21, &ach, &bch);

    ivc_pollitem_t pi[2] = {{.chan = bch, .events = IVC_POLLIN}, {.chan = NULL}};
    T_ASSERT(ivc_poll(b, pi, 2, 30) == 0, "nothing to read: poll times out");
    pi[0].events = IVC_POLLIN | IVC_POLLOUT;
    T_ASSERT(ivc_poll(b, pi, 2, 0) == 1 && pi[0].revents == IVC_POLLOUT, "writable");
    char buf[16];
    size_t done = 99;
    T_ASSERT(ivc_read_all(bch, buf, 4, 20, &done) == IVC_ETIMEDOUT && done == 0, "read timeout");
    ssize_t w = ivc_write(ach, "ab", 2);
    T_ASSERT(w == 2, "write returned %zd (%s) state %d", w, ivc_strerror((int)w),
             ivc_chan_state(ach));
    T_ASSERT(ivc_read_all(bch, buf, 4, 20, &done) == IVC_ETIMEDOUT && done == 2,
             "partial read reports what came");
    /* Fill the ring: write_all times out and says how much went. */
    static char big[1 << 20];
    T_ASSERT(ivc_write_all(ach, big, sizeof(big), 20, &done) == IVC_ETIMEDOUT, "write timeout");
    T_ASSERT(done == ivc_chan_ring_size(ach), "exactly a ring's worth went: %zu", done);
    T_ASSERT(ivc_chan_writable(ach) == 0, "full");
    T_ASSERT(ivc_chan_readable(bch) == done, "reader sees it all");
    T_OK(ivc_unregister(a));
    T_OK(ivc_unregister(b));
}

static void test_full_region(void)
{
    struct t_ivcd small;
    const char *extra[] = {"--size", "4M", "--max-endpoints", "2", NULL};
    t_ivcd_start(&small, MAGIC, extra);
    int r;
    ivc_ctx_t *a = reg_at(small.sock, 1, 1 << 20, &r);
    T_OK(r);
    ivc_ctx_t *b = reg_at(small.sock, 2, 1 << 20, &r);
    T_OK(r);
    T_ASSERT(!reg_at(small.sock, 3, 0, &r) && r == IVC_ENOSPC, "third endpoint: ENOSPC, got %d", r);

    /* Each endpoint's share is under 2 MiB: the second 1 MiB ring of a
     * channel pair fits once, a second channel does not. */
    ivc_chan_t *ach, *bch;
    pair_up(a, b, 2, &ach, &bch);
    ivc_chan_t *more = NULL;
    int n = 0;
    for (; n < 8 && (r = ivc_connect(a, 2, 0, &more)) != IVC_ENOSPC; n++)
        if (more)
            ivc_close(more);
    T_ASSERT(r == IVC_ENOSPC, "the region eventually runs out of ring memory (r=%d)", r);
    T_OK(ivc_unregister(a));
    T_OK(ivc_unregister(b));
    /* Slots are reusable once freed. */
    ivc_ctx_t *c = reg_at(small.sock, 3, 0, &r);
    T_OK(r);
    T_OK(ivc_unregister(c));
    t_ivcd_stop(&small);
}

/* A peer that wrote and left: its share (where the unread bytes are) is not
 * handed to a newcomer until the reader closed its channel.  With two
 * endpoint slots, a third process cannot register until then. */
static void test_departed_share_kept(void)
{
    struct t_ivcd small;
    const char *extra[] = {"--size", "4M", "--max-endpoints", "2", NULL};
    t_ivcd_start(&small, MAGIC, extra);
    int r;
    ivc_ctx_t *a = reg_at(small.sock, 1, 64 << 10, &r);
    T_OK(r);
    ivc_ctx_t *b = reg_at(small.sock, 2, 64 << 10, &r);
    T_OK(r);
    ivc_chan_t *ach, *bch;
    pair_up(a, b, 2, &ach, &bch);
    static uint8_t buf[60000];
    t_fill(buf, sizeof(buf), 42, 0);
    T_OK(ivc_write_all(ach, buf, sizeof(buf), 1000, NULL));
    T_OK(ivc_unregister(a)); /* leaves with 60000 bytes unread */

    /* The newcomer would take A's slot and overwrite the bytes. */
    for (int i = 0; i < 5; i++) {
        T_ASSERT(!reg_at(small.sock, 3, 64 << 10, &r) && r == IVC_ENOSPC,
                 "a newcomer got the departed peer's slot (r=%d)", r);
        usleep(50000);
    }
    memset(buf, 0, sizeof(buf));
    size_t done;
    T_OK(ivc_read_all(bch, buf, sizeof(buf), 1000, &done));
    T_ASSERT(t_check(buf, sizeof(buf), 42, 0) == sizeof(buf), "the departed peer's bytes");
    T_ASSERT(ivc_read(bch, buf, 1) == IVC_EOF, "then EOF");
    T_OK(ivc_close(bch));

    /* Now ivcd frees the slot (at its next tick). */
    ivc_ctx_t *c = NULL;
    for (int i = 0; i < 100 && !(c = reg_at(small.sock, 3, 64 << 10, &r)); i++)
        usleep(20000);
    T_ASSERT(c, "the slot was freed after the reader closed (r=%d)", r);
    T_OK(ivc_unregister(c));
    T_OK(ivc_unregister(b));
    t_ivcd_stop(&small);
}

/* A peer that closes a channel it found broken must not look like a clean
 * end of stream to its partner: the partner gets IVC_ECONNRESET, not EOF. */
static void test_abort_is_not_eof(void)
{
    ivc_ctx_t *a = reg(40), *b = reg(41);
    ivc_chan_t *ach, *bch;
    pair_up(a, b, 41, &ach, &bch);
    T_ASSERT(ivc_write(ach, "0123456789", 10) == 10, "write");
    /* Scribble the tail A reads (B's consumer index) beyond A's head. */
    atomic_store(&ach->peer_hot->tail, 1ULL << 40);
    static char big[1 << 20];
    ssize_t w = ivc_write(ach, big, sizeof(big)); /* needs the tail: finds it corrupt */
    T_ASSERT(w == IVC_EPROTO, "corrupt tail detected, got %zd", w);
    T_OK(ivc_close(ach));
    char buf[16];
    size_t done = 0;
    int r = ivc_read_all(bch, buf, sizeof(buf), 1000, &done);
    T_ASSERT(r == IVC_ECONNRESET, "partner of an aborted channel: %s (after %zu bytes)",
             ivc_strerror(r), done);
    T_OK(ivc_close(bch));
    T_OK(ivc_unregister(a));
    T_OK(ivc_unregister(b));
}

/* Waiting must not burn the core: a process blocked for 1.5 s in
 * ivc_accept() and in ivc_read_all() on an idle channel uses well under half
 * of that in CPU time (it spins only for the first 50 us, then yields, then
 * sleeps).  CPU time, not wall-clock speed, is what is checked. */
static void test_idle_waits_sleep(void)
{
    ivc_ctx_t *a = reg(30), *b = reg(31);
    ivc_chan_t *ach, *bch;
    pair_up(a, b, 31, &ach, &bch);

    fflush(NULL);
    pid_t pid = fork();
    T_ASSERT(pid >= 0, "fork");
    if (pid == 0) {
        ivc_chan_t *none;
        char c;
        int r1 = ivc_accept(b, 1500, &none);
        int r2 = ivc_read_all(bch, &c, 1, 1500, NULL);
        _exit(r1 == IVC_ETIMEDOUT && r2 == IVC_ETIMEDOUT ? 0 : 1);
    }
    int st;
    struct rusage ru;
    T_ASSERT(wait4(pid, &st, 0, &ru) == pid, "wait4");
    T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "both waits time out (status %d)", st);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("3 s of idle waiting cost %.3f s of CPU\n", cpu);
    T_ASSERT(cpu < 1.5, "idle waiting burnt %.3f s of CPU in 3 s", cpu);
    T_OK(ivc_unregister(a));
    T_OK(ivc_unregister(b));
}

/* ivc_connect_start: no waiting; CONNECTING until the peer accepts (I/O
 * moves nothing meanwhile), then OPEN; an absent peer is ENOENT at once; a
 * request withdrawn by ivc_close() is never accepted. */
static void test_connect_start(void)
{
    ivc_ctx_t *a = reg(50), *b = reg(51);
    ivc_chan_t *ach, *bch;
    T_ASSERT(ivc_connect_start(a, 59, &ach) == IVC_ENOENT, "absent member");
    T_OK(ivc_connect_start(a, 51, &ach));
    T_ASSERT(ivc_chan_state(ach) == IVC_CHAN_CONNECTING, "connecting: %d", ivc_chan_state(ach));
    char buf[8];
    T_ASSERT(ivc_write(ach, "x", 1) == 0 && ivc_read(ach, buf, 1) == 0, "no I/O while connecting");
    ivc_pollitem_t pi = {.chan = ach, .events = IVC_POLLIN | IVC_POLLOUT};
    T_ASSERT(ivc_poll(a, &pi, 1, 0) == 0, "nothing to poll while connecting");
    T_OK(ivc_accept(b, 1000, &bch));
    T_ASSERT(ivc_chan_state(ach) == IVC_CHAN_OPEN, "open after accept: %d", ivc_chan_state(ach));
    T_ASSERT(ivc_write(ach, "hello", 5) == 5, "write");
    size_t done;
    T_OK(ivc_read_all(bch, buf, 5, 1000, &done));
    T_ASSERT(memcmp(buf, "hello", 5) == 0, "data");
    T_OK(ivc_close(ach));
    T_OK(ivc_close(bch));

    /* Withdrawn before the accept: b finds nothing to accept. */
    T_OK(ivc_connect_start(a, 51, &ach));
    T_OK(ivc_close(ach));
    T_ASSERT(ivc_accept(b, 50, &bch) == IVC_ETIMEDOUT, "a withdrawn request is not accepted");
    T_OK(ivc_unregister(a));
    T_OK(ivc_unregister(b));
}

/* Each case has an ivcd of its own. */
#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        t_ivcd_start(&ivcd, MAGIC, NULL);                                                          \
        test_##name();                                                                             \
        t_ivcd_stop(&ivcd);                                                                        \
    }
CASE(errors)
CASE(strerror)
CASE(membership_and_eof)
CASE(poll_and_timeouts)
CASE(commit_room)
CASE(full_region)
CASE(departed_share_kept)
CASE(abort_is_not_eof)
CASE(idle_waits_sleep)
CASE(connect_start)

static const struct t_case cases[] = {
    {"errors", case_errors, 30},
    {"strerror", case_strerror, 30},
    {"membership_and_eof", case_membership_and_eof, 30},
    {"poll_and_timeouts", case_poll_and_timeouts, 30},
    {"commit_room", case_commit_room, 60},
    {"full_region", case_full_region, 60},
    {"departed_share_kept", case_departed_share_kept, 30},
    {"abort_is_not_eof", case_abort_is_not_eof, 30},
    {"idle_waits_sleep", case_idle_waits_sleep, 30},
    {"connect_start", case_connect_start, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
