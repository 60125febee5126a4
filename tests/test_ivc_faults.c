/*
 * test_ivc_faults.c - peers that die and peers that scribble.
 *
 * kill: a peer A streams data to (or reads from) the test process B and is
 * killed with SIGKILL while B blocks in ivc_read_all(), ivc_poll() or
 * ivc_write_all().  B must get IVC_ECONNRESET - not a timeout, not a hang -
 * after having received only correct bytes; `ivcd ctl list` must forget A;
 * a new process registering with A's client id must get a working channel
 * with B.  Three rounds: A initiates and writes, B initiates and A writes,
 * A initiates and reads.
 *
 * corrupt: a reader R and a writer W share a channel; W wrote N bytes and
 * went idle, R read them and blocks for more in ivc_read_all() or
 * ivc_poll().  A vandal - a real member of the job that maps the region
 * through its own libivc context - writes random bytes (fixed seeds) into
 *   header  the region header,
 *   eps     the endpoint table,
 *   hot     the ring indices (struct ivc_hot) of the W->R channel,
 *   conn    the channel's conn record state words,
 * four variants each, every round with a fresh ivcd.  R must come back with
 * IVC_EPROTO or IVC_ECONNRESET, never with a byte beyond the N it was sent,
 * and exit with R_CLEAN (not a signal: under ASan a wild read would end it);
 * ivcd must still answer `ivcd ctl status` and `list` and stop cleanly.
 *   stream  W keeps streaming while the vandal keeps scribbling on both hot
 *           lines: every byte R got before its error must be right.
 */
#include "internal.h" /* the vandal reads ctx->base and ctx->g */
#include "ivc.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAGIC   0x6661756c74ULL
#define RING    (64u << 10)
#define STEP_MS 10000 /* the liveness bound: what should take ms may take this */
#define A_ID    0u
#define B_ID    1u
#define R_ID    1u
#define W_ID    2u
#define V_ID    3u

static const char *const ivcd_args[] = {"--size", "64M", NULL};

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void random_bytes(volatile uint8_t *p, size_t len, uint64_t *s)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)splitmix(s);
}

static bool exited(pid_t pid)
{
    siginfo_t si = {0};
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

/* Wait for one byte from a child, failing at once if the child exits. */
static void get_byte(int fd, pid_t child, const char *what)
{
    uint64_t deadline = t_now_ms() + STEP_MS;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, 20);
        if (r > 0) {
            char c;
            ssize_t n = read(fd, &c, 1);
            T_ASSERT(n == 1, "control pipe: %zd (%s)", n, strerror(errno));
            return;
        }
        T_ASSERT(r == 0 || errno == EINTR, "poll: %s", strerror(errno));
        T_ASSERT(!exited(child), "child %d exited (status %d) before %s", child, t_wait(child),
                 what);
        T_ASSERT(t_now_ms() < deadline, "no sign of %s within %d ms", what, STEP_MS);
    }
}

/* Does a line of `ivcd ctl list` that starts with `what` ("client " or
 * "endpoint ") name process `pid` (as a "pid=N" token)? */
static bool list_mentions_pid(const char *out, const char *what, pid_t pid)
{
    char key[32];
    snprintf(key, sizeof(key), " pid=%d", (int)pid);
    size_t klen = strlen(key);
    for (const char *line = out; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (strncmp(line, what, strlen(what)) == 0)
            for (const char *p = line; (p = strstr(p, key)) != NULL && p < line + len; p += klen)
                if (p + klen == line + len || p[klen] == ' ')
                    return true;
        line += len + (end != NULL);
    }
    return false;
}

static void ctl_ok(const struct t_ivcd *d, const char *cmd, char *out, size_t len)
{
    const char *args[] = {cmd, NULL};
    int st = t_ivcd_ctl(d, out, len, args);
    T_ASSERT(st == 0, "`ivcd ctl %s` exited with %d: %s", cmd, st, out);
}

static void ivcd_alive(struct t_ivcd *d, const char *when)
{
    static char out[64 << 10];
    T_ASSERT(!exited(d->pid), "ivcd died %s (status %d)", when, t_wait(d->pid));
    ctl_ok(d, "status", out, sizeof(out));
    T_ASSERT(strstr(out, "ok"), "`ivcd ctl status` %s: %s", when, out);
    ctl_ok(d, "list", out, sizeof(out));
}

/* Like t_ivcd_stop(), but a daemon that does not exit fails the test
 * instead of hanging it. */
static void ivcd_stop(struct t_ivcd *d)
{
    T_ASSERT(kill(d->pid, SIGTERM) == 0, "kill ivcd: %s", strerror(errno));
    int st = t_wait_bounded(d->pid, STEP_MS, "ivcd after SIGTERM");
    d->pid = 0;
    T_ASSERT(st == 0, "ivcd exit status %d after SIGTERM", st);
}

static ivc_ctx_t *reg(const char *sock, uint32_t id)
{
    ivc_options_t o = {.location = sock, .ring_size = RING, .timeout_ms = STEP_MS};
    ivc_ctx_t *ctx;
    T_OK(ivc_register(MAGIC, id, &o, &ctx));
    return ctx;
}

/* ---- kill ---------------------------------------------------------------------- */

enum kill_mode {
    KILL_A_CONNECTS_WRITES, /* B blocks in ivc_read_all on a channel it accepted */
    KILL_B_CONNECTS_WRITES, /* B blocks in ivc_poll on a channel it initiated */
    KILL_A_CONNECTS_READS,  /* B blocks in ivc_write_all */
};

struct kill_arg {
    const char *sock;
    enum kill_mode mode;
    uint64_t seed;
};

/* A: set up the channel, then move data forever (until killed). */
static int kill_victim(void *p)
{
    struct kill_arg *a = p;
    ivc_ctx_t *ctx = reg(a->sock, A_ID);
    ivc_chan_t *ch;
    static uint8_t buf[96 << 10];

    if (a->mode == KILL_B_CONNECTS_WRITES)
        T_OK(ivc_accept(ctx, STEP_MS, &ch));
    else
        T_OK(ivc_connect(ctx, B_ID, STEP_MS, &ch));
    for (uint64_t off = 0;;) {
        size_t len = 1 + (size_t)(off * 2654435761u % sizeof(buf));
        int r;
        if (a->mode == KILL_A_CONNECTS_READS) {
            r = ivc_read_all(ch, buf, len, STEP_MS, NULL);
            if (r == 0)
                T_ASSERT(t_check(buf, len, a->seed, off) == len, "A got wrong data at %llu",
                         (unsigned long long)off);
        } else {
            t_fill(buf, len, a->seed, off);
            r = ivc_write_all(ch, buf, len, STEP_MS, NULL);
        }
        T_ASSERT(r == 0, "A: transfer failed before it was killed: %s", ivc_strerror(r));
        off += len;
    }
}

static int killer(void *p)
{
    pid_t victim = *(pid_t *)p;
    usleep(200 * 1000); /* B is blocked by now */
    return kill(victim, SIGKILL) == 0 ? 0 : 1;
}

/* A': the new process with A's client id: 1 MiB each way, then close. */
static int kill_successor(void *p)
{
    struct kill_arg *a = p;
    ivc_ctx_t *ctx = reg(a->sock, A_ID);
    ivc_chan_t *ch;
    uint8_t *buf = malloc(1 << 20);

    T_ASSERT(buf, "out of memory");
    if (a->mode == KILL_B_CONNECTS_WRITES)
        T_OK(ivc_accept(ctx, STEP_MS, &ch));
    else
        T_OK(ivc_connect(ctx, B_ID, STEP_MS, &ch));
    T_ASSERT(ivc_chan_peer(ch) == B_ID, "A' has a channel to %u", ivc_chan_peer(ch));
    ivc_peer_t peers[4] = {{0}};
    int n = (int)T_OK(ivc_get_hosts(ctx, peers, 4));
    T_ASSERT(n == 1 && peers[0].client_id == B_ID && peers[0].pid == getppid(),
             "A' sees %d members, first %u/%d", n, peers[0].client_id, peers[0].pid);
    t_fill(buf, 1 << 20, a->seed + 1, 0);
    T_OK(ivc_write_all(ch, buf, 1 << 20, STEP_MS, NULL));
    memset(buf, 0, 1 << 20);
    T_OK(ivc_read_all(ch, buf, 1 << 20, STEP_MS, NULL));
    size_t bad = t_check(buf, 1 << 20, a->seed + 2, 0);
    T_ASSERT(bad == 1 << 20, "A': byte %zu from B is wrong", bad);
    T_OK(ivc_close(ch));
    T_OK(ivc_unregister(ctx));
    free(buf);
    return 0;
}

static void kill_round(enum kill_mode mode)
{
    static const char *names[] = {"A connects and writes, B in ivc_read_all",
                                  "B connects, A writes, B in ivc_poll",
                                  "A connects and reads, B in ivc_write_all"};
    static char out[64 << 10];
    struct t_ivcd d;
    struct kill_arg arg = {.mode = mode, .seed = 1000 + (uint64_t)mode * 10};
    ivc_chan_t *ch;
    ivc_peer_t peers[8] = {{0}};
    size_t bufsz = 256 << 10;
    uint8_t *buf = malloc(bufsz);

    T_ASSERT(buf, "out of memory");
    t_ivcd_start(&d, MAGIC, ivcd_args);
    arg.sock = d.sock;
    ivc_ctx_t *ctx = reg(d.sock, B_ID);
    pid_t a = t_fork(kill_victim, &arg);
    if (mode == KILL_B_CONNECTS_WRITES)
        T_OK(ivc_connect(ctx, A_ID, STEP_MS, &ch));
    else
        T_OK(ivc_accept(ctx, STEP_MS, &ch));
    T_ASSERT(ivc_chan_peer(ch) == A_ID, "channel to %u", ivc_chan_peer(ch));

    int n = (int)T_OK(ivc_get_hosts(ctx, peers, 8));
    T_ASSERT(n == 1 && peers[0].client_id == A_ID && peers[0].pid == a,
             "before the kill: %d members, first %u/%d", n, peers[0].client_id, peers[0].pid);
    ctl_ok(&d, "list", out, sizeof(out));
    T_ASSERT(list_mentions_pid(out, "client ", a) && list_mentions_pid(out, "endpoint ", a),
             "`ivcd ctl list` does not show A (pid %d) as client and endpoint:\n%s", a, out);

    /* Some traffic first, so that the kill hits a running transfer. */
    uint64_t off = 0;
    for (int i = 0; i < 8; i++) {
        if (mode == KILL_A_CONNECTS_READS) {
            t_fill(buf, bufsz, arg.seed, off);
            T_OK(ivc_write_all(ch, buf, bufsz, STEP_MS, NULL));
        } else {
            T_OK(ivc_read_all(ch, buf, bufsz, STEP_MS, NULL));
            size_t bad = t_check(buf, bufsz, arg.seed, off);
            T_ASSERT(bad == bufsz, "byte %llu from A is wrong", (unsigned long long)(off + bad));
        }
        off += bufsz;
    }

    pid_t k = t_fork(killer, &a);
    uint64_t t0 = t_now_ms();
    int err = 0;
    while (!err) {
        size_t done = 0;
        if (mode == KILL_A_CONNECTS_READS) {
            t_fill(buf, bufsz, arg.seed, off);
            err = ivc_write_all(ch, buf, bufsz, STEP_MS, &done);
        } else if (mode == KILL_A_CONNECTS_WRITES) {
            err = ivc_read_all(ch, buf, bufsz, STEP_MS, &done);
        } else {
            ivc_pollitem_t it = {.chan = ch, .events = IVC_POLLIN};
            int r = ivc_poll(ctx, &it, 1, STEP_MS);
            T_ASSERT(r >= 0, "ivc_poll: %s", ivc_strerror(r));
            T_ASSERT(r == 1, "ivc_poll: nothing within %d ms after A was killed", STEP_MS);
            ssize_t got = ivc_read(ch, buf, bufsz);
            if (got < 0)
                err = (int)got;
            else
                done = (size_t)got;
            T_ASSERT(got != 0 || (it.revents & IVC_POLLERR),
                     "ivc_poll said readable (%#x), ivc_read found nothing", it.revents);
        }
        if (mode != KILL_A_CONNECTS_READS) {
            size_t bad = t_check(buf, done, arg.seed, off);
            T_ASSERT(bad == done, "byte %llu from A is wrong", (unsigned long long)(off + bad));
        }
        off += done;
        T_ASSERT(t_now_ms() - t0 < 3 * STEP_MS, "no error within %d ms of the kill", 3 * STEP_MS);
    }
    T_ASSERT(err == IVC_ECONNRESET, "%s: after A was killed: %d (%s), want IVC_ECONNRESET",
             names[mode], err, ivc_strerror(err));
    T_ASSERT(t_wait_bounded(k, STEP_MS, "the killer") == 0, "the killer could not kill A");
    int st = t_wait_bounded(a, STEP_MS, "A");
    T_ASSERT(st == 128 + SIGKILL, "A ended with %d, not by SIGKILL: it failed before the kill", st);

    /* The error sticks and the channel says why. */
    T_ASSERT(ivc_chan_state(ch) == IVC_CHAN_RESET, "state %d", ivc_chan_state(ch));
    T_ASSERT(ivc_read(ch, buf, 1) == IVC_ECONNRESET, "second read");
    T_ASSERT(ivc_write(ch, buf, 1) == IVC_ECONNRESET, "write after the reset");
    T_OK(ivc_close(ch));

    /* ivcd forgets A: its ivshmem client and its endpoint. */
    uint64_t deadline = t_now_ms() + STEP_MS;
    for (;;) {
        ctl_ok(&d, "list", out, sizeof(out));
        if (!list_mentions_pid(out, "client ", a) && !list_mentions_pid(out, "endpoint ", a))
            break;
        T_ASSERT(t_now_ms() < deadline, "`ivcd ctl list` still shows A (pid %d) %d ms later:\n%s",
                 a, STEP_MS, out);
        usleep(20 * 1000);
    }
    n = (int)T_OK(ivc_get_hosts(ctx, peers, 8));
    T_ASSERT(n == 0, "ivc_get_hosts still lists %d members (first %u/%d)", n, peers[0].client_id,
             peers[0].pid);

    /* A' takes A's client id and gets a working channel. */
    pid_t a2 = t_fork(kill_successor, &arg);
    if (mode == KILL_B_CONNECTS_WRITES)
        T_OK(ivc_connect(ctx, A_ID, STEP_MS, &ch));
    else
        T_OK(ivc_accept(ctx, STEP_MS, &ch));
    uint8_t *big = malloc(1 << 20);
    T_ASSERT(big, "out of memory");
    T_OK(ivc_read_all(ch, big, 1 << 20, STEP_MS, NULL));
    size_t bad = t_check(big, 1 << 20, arg.seed + 1, 0);
    T_ASSERT(bad == 1 << 20, "byte %zu from A' is wrong", bad);
    t_fill(big, 1 << 20, arg.seed + 2, 0);
    T_OK(ivc_write_all(ch, big, 1 << 20, STEP_MS, NULL));
    size_t done = 0;
    int r = ivc_read_all(ch, big, 1, STEP_MS, &done);
    T_ASSERT(r == IVC_EOF && done == 0, "after A' closed: %d (%s)", r, ivc_strerror(r));
    T_OK(ivc_close(ch));
    T_ASSERT(t_wait_bounded(a2, STEP_MS, "A'") == 0, "A' failed");

    ivcd_alive(&d, "after the kill");
    T_OK(ivc_unregister(ctx));
    ivcd_stop(&d);
    free(big);
    free(buf);
    printf("ok kill: %s (error %llu ms after the transfer call began)\n", names[mode],
           (unsigned long long)(t_now_ms() - t0));
}

/* ---- corrupt ------------------------------------------------------------------- */

enum kind { K_HEADER, K_EPS, K_HOT, K_CONN, K_STREAM };
static const char *const kind_names[] = {"header", "eps", "hot", "conn", "stream"};

#define R_CLEAN   42      /* reader: got IVC_EPROTO or IVC_ECONNRESET, data all right */
#define R_TIMEOUT 2       /* reader: no error within the bound */
#define R_EXTRA   3       /* reader: got bytes that were never written */
#define R_WRONG   4       /* reader: got wrong bytes */
#define R_OTHER   5       /* reader: another error */
#define N_FIRST   200000u /* what W writes before going idle */

struct corrupt_arg {
    const char *sock;
    enum kind kind;
    int variant;
    uint64_t seed;
    bool use_poll;
    int ready_w; /* R: one byte once it read N_FIRST and is about to block */
    int hold_r;  /* W, vandal: EOF means stop */
    int hold_w;  /* the parent's end: every child closes it */
};

static int classify(int err, const char *how)
{
    if (err == IVC_EPROTO || err == IVC_ECONNRESET)
        return R_CLEAN;
    fprintf(stderr, "reader: %s ended with %d (%s)\n", how, err, ivc_strerror(err));
    return err == IVC_ETIMEDOUT ? R_TIMEOUT : R_OTHER;
}

/* R: accept W's channel, read and check, then block until an error. */
static int reader(void *p)
{
    struct corrupt_arg *a = p;
    close(a->hold_w); /* or the EOF on hold_r never comes */
    ivc_ctx_t *ctx = reg(a->sock, R_ID);
    ivc_chan_t *ch;
    static uint8_t buf[N_FIRST + 4096];
    uint64_t off = 0;
    int res;

    T_OK(ivc_accept(ctx, STEP_MS, &ch));
    T_ASSERT(ivc_chan_peer(ch) == W_ID, "reader accepted %u", ivc_chan_peer(ch));
    T_OK(ivc_read_all(ch, buf, N_FIRST, STEP_MS, NULL));
    size_t bad = t_check(buf, N_FIRST, a->seed, 0);
    T_ASSERT(bad == N_FIRST, "reader: byte %zu wrong before any corruption", bad);
    off = N_FIRST;
    t_put_byte(a->ready_w);

    uint64_t deadline = t_now_ms() + STEP_MS;
    for (;;) {
        size_t done = 0;
        int err = 0;
        if (!a->use_poll) {
            err = ivc_read_all(ch, buf, sizeof(buf), STEP_MS, &done);
        } else {
            ivc_pollitem_t it = {.chan = ch, .events = IVC_POLLIN};
            int r = ivc_poll(ctx, &it, 1, STEP_MS);
            if (r < 0) {
                res = classify(r, "ivc_poll");
                break;
            }
            if (r == 0) {
                fprintf(stderr, "reader: ivc_poll saw nothing for %d ms\n", STEP_MS);
                res = R_TIMEOUT;
                break;
            }
            ssize_t n = ivc_read(ch, buf, sizeof(buf));
            if (n < 0)
                err = (int)n;
            else
                done = (size_t)n;
        }
        if (done && a->kind != K_STREAM) {
            fprintf(stderr, "reader: got %zu bytes after the %u that were written\n", done,
                    N_FIRST);
            return R_EXTRA;
        }
        if (done && t_check(buf, done, a->seed, off) != done) {
            fprintf(stderr, "reader: byte %llu is wrong\n",
                    (unsigned long long)(off + t_check(buf, done, a->seed, off)));
            return R_WRONG;
        }
        off += done;
        if (err) {
            res = classify(err, a->use_poll ? "ivc_read after ivc_poll" : "ivc_read_all");
            break;
        }
        if (t_now_ms() >= deadline) {
            fprintf(stderr, "reader: no error within %d ms (%llu bytes read)\n", STEP_MS,
                    (unsigned long long)off);
            return R_TIMEOUT;
        }
    }
    if (res != R_CLEAN)
        return res;
    printf("  reader: %s after %llu good bytes\n", ivc_strerror((int)ivc_read(ch, buf, 1)),
           (unsigned long long)off);
    /* The channel stays dead, says so, and lets itself be closed. */
    int st = ivc_chan_state(ch);
    T_ASSERT(st == IVC_CHAN_RESET || st == IVC_CHAN_CORRUPT, "reader: channel state %d", st);
    ssize_t again = ivc_read(ch, buf, 1);
    T_ASSERT(again == IVC_EPROTO || again == IVC_ECONNRESET, "reader: second read %zd", again);
    T_OK(ivc_close(ch));
    T_OK(ivc_unregister(ctx));
    return R_CLEAN;
}

/* W: connect, write N_FIRST bytes, then idle until told to stop; in the
 * stream kind write until the channel fails. */
static int writer(void *p)
{
    struct corrupt_arg *a = p;
    close(a->hold_w); /* or the EOF on hold_r never comes */
    ivc_ctx_t *ctx = reg(a->sock, W_ID);
    ivc_chan_t *ch;
    static uint8_t buf[N_FIRST];

    T_OK(ivc_connect(ctx, R_ID, STEP_MS, &ch));
    t_fill(buf, N_FIRST, a->seed, 0);
    T_OK(ivc_write_all(ch, buf, N_FIRST, STEP_MS, NULL));
    if (a->kind != K_STREAM) {
        t_wait_eof(a->hold_r);
        T_OK(ivc_unregister(ctx));
        return 0;
    }
    uint64_t off = N_FIRST;
    for (;;) {
        size_t len = 1 + (size_t)(off * 2654435761u % 50000), done = 0;
        t_fill(buf, len, a->seed, off);
        int r = ivc_write_all(ch, buf, len, STEP_MS, &done);
        off += done;
        if (r < 0) {
            /* Its own view of the scribbles, or the reader leaving. */
            T_ASSERT(r == IVC_EPROTO || r == IVC_ECONNRESET || r == IVC_EPIPE, "writer: %d (%s)", r,
                     ivc_strerror(r));
            break;
        }
    }
    T_OK(ivc_unregister(ctx));
    return 0;
}

/* The channel W->R as seen by a member of the job. */
struct target {
    struct ivc_ctx *ctx;
    uint32_t w_ep, r_ep;
    struct ivc_conn *conn;
};

static uint32_t find_ep(struct ivc_ctx *ctx, uint32_t client_id)
{
    for (uint32_t i = 0; i < ctx->g.max_eps; i++) {
        struct ivc_ep *e = ivc__ep(ctx, i);
        uint64_t st = atomic_load(&e->status);
        if (IVC_EP_STATE(st) == IVC_EP_LIVE && e->client_id == client_id && e->job_magic == MAGIC)
            return i;
    }
    T_FAIL("vandal: no live endpoint with client id %u", client_id);
}

static void find_target(struct ivc_ctx *ctx, struct target *t)
{
    t->ctx = ctx;
    t->w_ep = find_ep(ctx, W_ID);
    t->r_ep = find_ep(ctx, R_ID);
    t->conn = NULL;
    for (uint32_t k = 0; k < ctx->g.conns_per_ep; k++) {
        struct ivc_conn *c = ivc__conn(ctx, t->w_ep * ctx->g.conns_per_ep + k);
        if (IVC_SIDE_STATE(atomic_load(&c->i_state)) == IVC_SIDE_OPEN && c->target_ep == t->r_ep)
            t->conn = c;
    }
    T_ASSERT(t->conn, "vandal: no open conn record from W (slot %u) to R (slot %u)", t->w_ep,
             t->r_ep);
}

/* One act of vandalism; `variant` picks what exactly. */
static void scribble(struct target *t, enum kind kind, int variant, uint64_t *rng)
{
    struct ivc_ctx *ctx = t->ctx;
    uint8_t *base = ctx->base;
    struct ivc_conn *c = t->conn;

    switch (kind) {
    case K_HEADER:
        if (variant == 0) { /* the whole page */
            random_bytes(base, IVC_PAGE, rng);
        } else if (variant == 1) { /* the constant part only */
            random_bytes(base, IVC_HDR_CONST_SIZE, rng);
        } else if (variant == 2) { /* one word of it */
            size_t w = splitmix(rng) % (IVC_HDR_CONST_SIZE / 8);
            random_bytes(base + 8 * w, 8, rng);
        } else { /* one bit of it */
            size_t bit = splitmix(rng) % (IVC_HDR_CONST_SIZE * 8);
            ((volatile uint8_t *)base)[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        break;
    case K_EPS: {
        uint8_t *eps = base + ctx->g.eps_off;
        if (variant == 0) { /* the whole table */
            random_bytes(eps, (size_t)ctx->g.max_eps * sizeof(struct ivc_ep), rng);
        } else if (variant == 1) { /* W's entry */
            random_bytes(eps + t->w_ep * sizeof(struct ivc_ep), sizeof(struct ivc_ep), rng);
        } else if (variant == 2) { /* R's status word */
            random_bytes(eps + t->r_ep * sizeof(struct ivc_ep), 8, rng);
        } else { /* one bit of W's status (never LIVE -> SUSPENDING: needs two) */
            static const int bits[] = {0, 1, 2, 7, 16, 17, 31, 32, 33, 63};
            int bit = bits[splitmix(rng) % (sizeof(bits) / sizeof(bits[0]))];
            atomic_fetch_xor(&ivc__ep(ctx, t->w_ep)->status, 1ULL << bit);
        }
        break;
    }
    case K_HOT: {
        uint64_t head = atomic_load(&c->i_hot.head);
        if (variant == 0) { /* W's head: a random value */
            random_bytes((uint8_t *)&c->i_hot.head, 8, rng);
        } else if (variant == 1) { /* both hot lines */
            random_bytes((uint8_t *)&c->i_hot, 2 * sizeof(struct ivc_hot), rng);
        } else if (variant == 2) { /* more unread bytes than the ring holds */
            atomic_store(&c->i_hot.head, head + c->i_ring_size + 1 + splitmix(rng) % 4096);
        } else { /* the head moves backwards */
            atomic_store(&c->i_hot.head, head - 1 - splitmix(rng) % 4096);
        }
        break;
    }
    case K_CONN:
        if (variant == 0) { /* W's state word */
            random_bytes((uint8_t *)&c->i_state, 8, rng);
        } else if (variant == 1) { /* W's whole line: state, ring offset and size */
            random_bytes((uint8_t *)c, IVC_CACHELINE, rng);
        } else if (variant == 2) { /* both state lines */
            random_bytes((uint8_t *)c, 2 * IVC_CACHELINE, rng);
        } else { /* the whole record */
            random_bytes((uint8_t *)c, sizeof(*c), rng);
        }
        break;
    case K_STREAM: /* both hot lines, again and again */
        random_bytes((uint8_t *)&c->i_hot, 2 * sizeof(struct ivc_hot), rng);
        break;
    }
}

static bool hold_closed(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

static int vandal(void *p)
{
    struct corrupt_arg *a = p;
    close(a->hold_w); /* or the EOF on hold_r never comes */
    ivc_ctx_t *ctx = reg(a->sock, V_ID);
    struct target t;
    uint64_t rng = a->seed * 7919 + (uint64_t)a->kind * 104729 + (uint64_t)a->variant;

    find_target(ctx, &t);
    if (a->kind != K_STREAM) {
        scribble(&t, a->kind, a->variant, &rng);
    } else {
        /* Keep at it until the test has seen enough, at most STEP_MS. */
        uint64_t deadline = t_now_ms() + STEP_MS;
        while (!hold_closed(a->hold_r) && t_now_ms() < deadline) {
            scribble(&t, a->kind, a->variant, &rng);
            usleep(500);
        }
    }
    t_wait_eof(a->hold_r);
    T_OK(ivc_unregister(ctx)); /* whatever state its own slot is in */
    return 0;
}

static void corrupt_round(enum kind kind, int variant)
{
    struct t_ivcd d;
    int ready[2], hold[2];
    struct corrupt_arg arg = {.kind = kind,
                              .variant = variant,
                              .seed = 77 + (uint64_t)kind * 16 + (uint64_t)variant,
                              .use_poll = variant & 1};

    T_ASSERT(pipe2(ready, O_CLOEXEC) == 0 && pipe2(hold, O_CLOEXEC) == 0, "pipe: %s",
             strerror(errno));
    t_ivcd_start(&d, MAGIC, ivcd_args);
    arg.sock = d.sock;
    arg.ready_w = ready[1];
    arg.hold_r = hold[0];
    arg.hold_w = hold[1];
    pid_t r = t_fork(reader, &arg);
    pid_t w = t_fork(writer, &arg);
    get_byte(ready[0], r, "the reader reading its first bytes");
    usleep(50 * 1000); /* let it settle into its blocking call */
    pid_t v = t_fork(vandal, &arg);

    int rst = t_wait_bounded(r, 2 * STEP_MS, "the reader");
    close(hold[1]); /* W and the vandal may go */
    int wst = t_wait_bounded(w, STEP_MS, "the writer");
    int vst = t_wait_bounded(v, STEP_MS, "the vandal");
    T_ASSERT(rst == R_CLEAN,
             "%s variant %d (%s): the reader ended with %d (%s), want %d (clean error)",
             kind_names[kind], variant, arg.use_poll ? "ivc_poll" : "ivc_read_all", rst,
             rst == R_TIMEOUT ? "no error: hang"
             : rst == R_EXTRA ? "accepted unwritten bytes"
             : rst == R_WRONG ? "wrong data"
             : rst == R_OTHER ? "unexpected error"
             : rst > 128      ? "killed by a signal"
                              : "failed",
             R_CLEAN);
    T_ASSERT(wst == 0, "%s variant %d: the writer ended with %d", kind_names[kind], variant, wst);
    T_ASSERT(vst == 0, "%s variant %d: the vandal ended with %d", kind_names[kind], variant, vst);
    ivcd_alive(&d, "after the corruption");
    ivcd_stop(&d);
    close(ready[0]);
    close(ready[1]);
    close(hold[0]);
    printf("ok corrupt: %s variant %d (%s)\n", kind_names[kind], variant,
           arg.use_poll ? "ivc_poll" : "ivc_read_all");
}

#define KILL(name, mode)                                                                           \
    static void name(void)                                                                         \
    {                                                                                              \
        kill_round(mode);                                                                          \
    }
KILL(kill_a_connects_writes, KILL_A_CONNECTS_WRITES)
KILL(kill_b_connects_writes, KILL_B_CONNECTS_WRITES)
KILL(kill_a_connects_reads, KILL_A_CONNECTS_READS)

#define CORRUPT(kind, variant)                                                                     \
    static void corrupt_##kind##_##variant(void)                                                   \
    {                                                                                              \
        corrupt_round(kind, variant);                                                              \
    }
#define CORRUPT4(kind) CORRUPT(kind, 0) CORRUPT(kind, 1) CORRUPT(kind, 2) CORRUPT(kind, 3)
CORRUPT4(K_HEADER)
CORRUPT4(K_EPS)
CORRUPT4(K_HOT)
CORRUPT4(K_CONN)
CORRUPT(K_STREAM, 0)
CORRUPT(K_STREAM, 1)

/* One corrupt round's entry: "corrupt_<what>_<variant>". */
#define C(what, kind, variant)                                                                     \
    {                                                                                              \
        "corrupt_" #what "_" #variant, corrupt_##kind##_##variant, 40                              \
    }

static const struct t_case cases[] = {
    {"kill_a_connects_writes", kill_a_connects_writes, 40},
    {"kill_b_connects_writes", kill_b_connects_writes, 40},
    {"kill_a_connects_reads", kill_a_connects_reads, 40},
    C(header, K_HEADER, 0),
    C(header, K_HEADER, 1),
    C(header, K_HEADER, 2),
    C(header, K_HEADER, 3),
    C(eps, K_EPS, 0),
    C(eps, K_EPS, 1),
    C(eps, K_EPS, 2),
    C(eps, K_EPS, 3),
    C(hot, K_HOT, 0),
    C(hot, K_HOT, 1),
    C(hot, K_HOT, 2),
    C(hot, K_HOT, 3),
    C(conn, K_CONN, 0),
    C(conn, K_CONN, 1),
    C(conn, K_CONN, 2),
    C(conn, K_CONN, 3),
    C(stream, K_STREAM, 0),
    C(stream, K_STREAM, 1),
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
