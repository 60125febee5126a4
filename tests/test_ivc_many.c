/*
 * test_ivc_many.c - many processes, and several jobs, at once.
 *
 * all_to_all: eight processes of one job (client ids 0..7) open a channel
 * to each other - each first accepts one channel from every lower id, then
 * connects to every higher id, so a connect always finds its target
 * accepting and nobody can wait in a cycle - and stream 1 MiB of their own
 * deterministic data to every other (seed = sender * 8 + receiver) through
 * the non-blocking ivc_write()/ivc_read(), driven by ivc_poll() over all
 * seven channels.  Every received byte is checked, no byte may come after
 * the 1 MiB, and the lower id of each pair also sees IVC_EOF once the higher
 * one closed.  ivc_get_hosts() must name exactly the seven others, with
 * their pids.
 *
 * two_jobs: two ivcd instances (two jobs, different magic) side by side,
 * three processes each with overlapping client ids.  Each member sees only
 * its own job in ivc_get_hosts(), a channel inside each job reaches the
 * member of that job, connecting to an id that exists only in the other job
 * gives IVC_ENOENT, and registering with one job's magic on the other
 * job's socket gives IVC_EACCES.
 */
#include "ivc.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPROC       8
#define STREAM      (1u << 20)
#define RING        (64u << 10) /* small rings: every stream wraps sixteen times */
#define MAGIC_MANY  0x6d616e79ULL
#define MAGIC_JOB_A 0x4a4f4241ULL
#define MAGIC_JOB_B 0x4a4f4242ULL
#define STEP_MS     20000 /* bound on any single wait that should take milliseconds */

/* A small pseudo-random length in [1, max], different for every call site
 * and offset, so that writes and reads split at every place in the ring. */
static size_t odd_len(uint64_t salt, uint64_t off, size_t max)
{
    uint64_t x = (off + salt * 0x9E3779B97F4A7C15ULL) * 0xBF58476D1CE4E5B9ULL;
    return 1 + (size_t)((x >> 33) % max);
}

/* Like t_ivcd_stop(), but a daemon that does not exit fails the test. */
static void ivcd_stop(struct t_ivcd *d)
{
    T_ASSERT(kill(d->pid, SIGTERM) == 0, "kill ivcd: %s", strerror(errno));
    int st = t_wait_bounded(d->pid, STEP_MS, "ivcd after SIGTERM");
    d->pid = 0;
    T_ASSERT(st == 0, "ivcd exit status %d after SIGTERM", st);
}

/* ---- all_to_all ------------------------------------------------------------ */

struct many_shared {
    _Atomic int32_t pids[NPROC]; /* each child stores its own pid first */
};

struct many_arg {
    const char *sock;
    uint32_t me;
    struct many_shared *sh;
};

struct stream {
    ivc_chan_t *ch;
    uint8_t *tx;   /* the whole stream we send to this peer */
    size_t tx_off; /* bytes accepted by ivc_write */
    size_t rx_off; /* bytes received and checked */
    bool eof;      /* ivc_read said IVC_EOF */
    bool closed;   /* we called ivc_close */
};

static void check_hosts_many(ivc_ctx_t *ctx, uint32_t me, struct many_shared *sh)
{
    ivc_peer_t peers[2 * NPROC], self;
    bool seen[NPROC] = {false};

    int n = (int)T_OK(ivc_get_hosts(ctx, peers, 2 * NPROC));
    T_ASSERT(n == NPROC - 1, "client %u: ivc_get_hosts found %d members, want %d", me, n,
             NPROC - 1);
    T_OK(ivc_self(ctx, &self));
    T_ASSERT(self.client_id == me && self.pid == getpid(), "client %u: ivc_self says %u/%d", me,
             self.client_id, self.pid);
    for (int k = 0; k < n; k++) {
        uint32_t cid = peers[k].client_id;
        T_ASSERT(cid < NPROC && cid != me && !seen[cid],
                 "client %u: ivc_get_hosts listed client id %u (twice or unknown)", me, cid);
        seen[cid] = true;
        int32_t pid = atomic_load(&sh->pids[cid]);
        T_ASSERT(peers[k].pid == pid, "client %u: member %u has pid %d, want %d", me, cid,
                 peers[k].pid, pid);
        T_ASSERT(peers[k].slot != self.slot && peers[k].vm_id != self.vm_id,
                 "client %u: member %u shares our slot %u or ivshmem id %u", me, cid, self.slot,
                 self.vm_id);
        for (int j = 0; j < k; j++)
            T_ASSERT(peers[j].slot != peers[k].slot && peers[j].vm_id != peers[k].vm_id,
                     "client %u: members %u and %u share a slot or ivshmem id", me,
                     peers[j].client_id, cid);
    }
}

/* Read what is there from one peer, checking every byte. */
static void drain_peer(uint32_t me, uint32_t p, struct stream *s, uint8_t *buf, size_t buflen)
{
    for (;;) {
        size_t want = odd_len(me * 131 + p, s->rx_off, buflen);
        ssize_t n = ivc_read(s->ch, buf, want);
        if (n == 0)
            return;
        if (n == IVC_EOF) {
            T_ASSERT(s->rx_off == STREAM, "client %u: EOF from %u after %zu of %u bytes", me, p,
                     s->rx_off, STREAM);
            T_ASSERT(s->tx_off == STREAM, "client %u: %u closed before taking our %u bytes", me, p,
                     STREAM);
            s->eof = true;
            return;
        }
        T_ASSERT(n > 0, "client %u: ivc_read from %u: %s", me, p, ivc_strerror((int)n));
        T_ASSERT((size_t)n <= want, "client %u: ivc_read returned %zd > %zu", me, n, want);
        T_ASSERT(s->rx_off + (size_t)n <= STREAM, "client %u: %u sent more than %u bytes", me, p,
                 STREAM);
        size_t bad = t_check(buf, (size_t)n, p * NPROC + me, s->rx_off);
        T_ASSERT(bad == (size_t)n, "client %u: byte %zu from %u is wrong", me, s->rx_off + bad, p);
        s->rx_off += (size_t)n;
    }
}

static void fill_peer(uint32_t me, uint32_t p, struct stream *s)
{
    while (s->tx_off < STREAM) {
        size_t want = odd_len(me * 137 + p, s->tx_off, 48 << 10);
        if (want > STREAM - s->tx_off)
            want = STREAM - s->tx_off;
        ssize_t n = ivc_write(s->ch, s->tx + s->tx_off, want);
        T_ASSERT(n >= 0, "client %u: ivc_write to %u: %s", me, p, ivc_strerror((int)n));
        T_ASSERT((size_t)n <= want, "client %u: ivc_write took %zd > %zu", me, n, want);
        if (n == 0)
            return;
        s->tx_off += (size_t)n;
    }
}

static int many_child(void *p)
{
    struct many_arg *a = p;
    const uint32_t me = a->me;
    ivc_options_t o = {.location = a->sock, .ring_size = RING, .timeout_ms = STEP_MS};
    struct stream st[NPROC];
    ivc_ctx_t *ctx;
    static uint8_t rbuf[40 << 10];

    memset(st, 0, sizeof(st));
    atomic_store(&a->sh->pids[me], (int32_t)getpid());
    T_OK(ivc_register(MAGIC_MANY, me, &o, &ctx));

    /* Lower ids connect to us: accept one channel from each of them. */
    for (uint32_t k = 0; k < me; k++) {
        ivc_chan_t *ch;
        T_OK(ivc_accept(ctx, STEP_MS, &ch));
        uint32_t peer = ivc_chan_peer(ch);
        T_ASSERT(peer < me && !st[peer].ch, "client %u accepted a channel from %u", me, peer);
        T_ASSERT(ivc_chan_state(ch) == IVC_CHAN_OPEN, "client %u: channel from %u state %d", me,
                 peer, ivc_chan_state(ch));
        st[peer].ch = ch;
    }
    for (uint32_t peer = me + 1; peer < NPROC; peer++) {
        T_OK(ivc_connect(ctx, peer, STEP_MS, &st[peer].ch));
        T_ASSERT(ivc_chan_peer(st[peer].ch) == peer, "client %u: channel names peer %u", me,
                 ivc_chan_peer(st[peer].ch));
    }
    /* Nobody can have left yet: every member still owes us its stream. */
    check_hosts_many(ctx, me, a->sh);

    for (uint32_t peer = 0; peer < NPROC; peer++) {
        if (peer == me)
            continue;
        T_ASSERT(ivc_chan_ring_size(st[peer].ch) == RING, "client %u: ring %zu", me,
                 ivc_chan_ring_size(st[peer].ch));
        st[peer].tx = malloc(STREAM);
        T_ASSERT(st[peer].tx, "out of memory");
        t_fill(st[peer].tx, STREAM, me * NPROC + peer, 0);
    }

    uint64_t deadline = t_now_ms() + 45000;
    for (;;) {
        ivc_pollitem_t items[NPROC];
        uint32_t who[NPROC];
        size_t n = 0;
        for (uint32_t peer = 0; peer < NPROC; peer++) {
            struct stream *s = &st[peer];
            if (peer == me || s->closed)
                continue;
            items[n] = (ivc_pollitem_t){
                .chan = s->ch, .events = IVC_POLLIN | (s->tx_off < STREAM ? IVC_POLLOUT : 0)};
            who[n++] = peer;
        }
        if (!n)
            break;
        int r = (int)T_OK(ivc_poll(ctx, items, n, 1000));
        T_ASSERT(t_now_ms() < deadline, "client %u: exchange not done within 45 s", me);
        if (r == 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            uint32_t peer = who[i];
            struct stream *s = &st[peer];
            short rev = items[i].revents;
            if (rev & IVC_POLLERR) {
                uint8_t x;
                T_FAIL("client %u: channel to %u failed: state %d, read %s", me, peer,
                       ivc_chan_state(s->ch), ivc_strerror((int)ivc_read(s->ch, &x, 1)));
            }
            if (rev & (IVC_POLLIN | IVC_POLLHUP))
                drain_peer(me, peer, s, rbuf, sizeof(rbuf));
            if (rev & IVC_POLLOUT)
                fill_peer(me, peer, s);
            /* The higher id closes first; the lower one waits for its EOF so
             * that it also proves no byte follows the stream. */
            if (s->tx_off == STREAM && s->rx_off == STREAM && (me > peer || s->eof)) {
                T_OK(ivc_close(s->ch));
                s->closed = true;
            }
        }
    }
    for (uint32_t peer = 0; peer < NPROC; peer++)
        free(st[peer].tx);
    T_OK(ivc_unregister(ctx));
    return 0;
}

static void all_to_all(void)
{
    struct t_ivcd d;
    const char *extra[] = {"--size", "64M", "--max-peers", "32", "--max-endpoints", "32", NULL};
    struct many_arg args[NPROC];
    pid_t pids[NPROC];

    struct many_shared *sh =
        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    T_ASSERT(sh != MAP_FAILED, "mmap: %s", strerror(errno));
    memset(sh, 0, sizeof(*sh));
    t_ivcd_start(&d, MAGIC_MANY, extra);
    for (uint32_t i = 0; i < NPROC; i++) {
        args[i] = (struct many_arg){.sock = d.sock, .me = i, .sh = sh};
        pids[i] = t_fork(many_child, &args[i]);
    }
    int failed = 0;
    for (uint32_t i = 0; i < NPROC; i++) {
        int st = t_wait_bounded(pids[i], 60000, "an all_to_all client");
        if (st != 0) {
            fprintf(stderr, "all_to_all: client %u exited with status %d\n", i, st);
            failed++;
        }
    }
    T_ASSERT(failed == 0, "%d of %d clients failed", failed, NPROC);
    ivcd_stop(&d);
    munmap(sh, sizeof(*sh));
    printf("ok all_to_all: %d processes, %d channels, %u bytes each way\n", NPROC,
           NPROC * (NPROC - 1) / 2, STREAM);
}

/* ---- two_jobs ---------------------------------------------------------------- */

#define JOB_N   3
#define JOB_MSG (64u << 10)

struct job_arg {
    const char *sock;
    uint64_t magic;
    uint32_t me;
    uint32_t ids[JOB_N];   /* this job's client ids; ids[0] connects to ids[1] */
    uint32_t foreign;      /* an id that exists only in the other job */
    _Atomic int32_t *pids; /* [JOB_N], shared, index as in ids */
    int ready_w;           /* write one byte when registered */
    int go_r;              /* EOF: everyone registered, check now */
    int done_w;            /* write one byte when checked */
    int release_r;         /* EOF: everyone checked, leave */
    int parent_fds[2];     /* the parent's ends of go and release: close them */
};

static int job_child(void *p)
{
    struct job_arg *a = p;
    ivc_options_t o = {.location = a->sock, .timeout_ms = STEP_MS};
    ivc_peer_t peers[16];
    ivc_ctx_t *ctx;
    int idx = -1;

    for (int k = 0; k < JOB_N; k++)
        if (a->ids[k] == a->me)
            idx = k;
    T_ASSERT(idx >= 0, "bad test setup");
    /* Without this the EOFs the children wait for would never come. */
    close(a->parent_fds[0]);
    close(a->parent_fds[1]);
    atomic_store(&a->pids[idx], (int32_t)getpid());
    T_OK(ivc_register(a->magic, a->me, &o, &ctx));
    t_put_byte(a->ready_w);
    t_wait_eof(a->go_r); /* both jobs are fully registered now */

    int n = (int)T_OK(ivc_get_hosts(ctx, peers, 16));
    T_ASSERT(n == JOB_N - 1, "job %#llx client %u: ivc_get_hosts found %d members, want %d",
             (unsigned long long)a->magic, a->me, n, JOB_N - 1);
    bool seen[JOB_N] = {false};
    for (int k = 0; k < n; k++) {
        int j = -1;
        for (int m = 0; m < JOB_N; m++)
            if (a->ids[m] == peers[k].client_id && m != idx)
                j = m;
        T_ASSERT(j >= 0 && !seen[j], "job %#llx client %u: ivc_get_hosts listed client %u",
                 (unsigned long long)a->magic, a->me, peers[k].client_id);
        seen[j] = true;
        T_ASSERT(peers[k].pid == atomic_load(&a->pids[j]),
                 "job %#llx client %u: member %u has pid %d, want %d (a member of the other job?)",
                 (unsigned long long)a->magic, a->me, peers[k].client_id, peers[k].pid,
                 atomic_load(&a->pids[j]));
    }

    /* An id of the other job is no one here. */
    ivc_chan_t *ch = (ivc_chan_t *)&ch; /* must be reset to NULL */
    uint64_t t0 = t_now_ms();
    int r = ivc_connect(ctx, a->foreign, 200, &ch);
    T_ASSERT(r == IVC_ENOENT, "job %#llx client %u: connect to foreign id %u gave %d (%s)",
             (unsigned long long)a->magic, a->me, a->foreign, r, ivc_strerror(r));
    T_ASSERT(ch == NULL, "failed ivc_connect left *out set");
    T_ASSERT(t_now_ms() - t0 >= 150, "ivc_connect gave up before its 200 ms timeout");

    /* The same ids exist in both jobs: a channel must reach our own job's
     * member (the data seed names the job). */
    uint8_t *buf = malloc(JOB_MSG);
    T_ASSERT(buf, "out of memory");
    uint64_t seed = a->magic;
    if (a->me == a->ids[0]) {
        T_OK(ivc_connect(ctx, a->ids[1], STEP_MS, &ch));
        t_fill(buf, JOB_MSG, seed, 0);
        T_OK(ivc_write_all(ch, buf, JOB_MSG, STEP_MS, NULL));
        size_t got = 0;
        uint8_t x;
        /* Wait for the peer's close: it read everything. */
        r = ivc_read_all(ch, &x, 1, STEP_MS, &got);
        T_ASSERT(r == IVC_EOF && got == 0, "after the message: %d (%s), %zu bytes", r,
                 ivc_strerror(r), got);
        T_OK(ivc_close(ch));
    } else if (a->me == a->ids[1]) {
        T_OK(ivc_accept(ctx, STEP_MS, &ch));
        T_ASSERT(ivc_chan_peer(ch) == a->ids[0], "accepted a channel from %u", ivc_chan_peer(ch));
        memset(buf, 0, JOB_MSG);
        T_OK(ivc_read_all(ch, buf, JOB_MSG, STEP_MS, NULL));
        size_t bad = t_check(buf, JOB_MSG, seed, 0);
        T_ASSERT(bad == JOB_MSG, "job %#llx: byte %zu of the message is wrong (the other job's?)",
                 (unsigned long long)a->magic, bad);
        T_OK(ivc_close(ch));
    }
    free(buf);

    t_put_byte(a->done_w);
    t_wait_eof(a->release_r);
    T_OK(ivc_unregister(ctx));
    return 0;
}

/* Has one of the children exited?  (Looks without reaping it.) */
static int first_exited(const pid_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pids[i], &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid)
            return i;
    }
    return -1;
}

/* Wait until `count` bytes came through `fd`, at most `ms`; fail at once
 * when a child exits early. */
static void collect(int fd, int count, int ms, const char *what, const pid_t *pids, int npids)
{
    uint64_t deadline = t_now_ms() + (uint64_t)ms;
    int got = 0;
    while (got < count) {
        uint64_t now = t_now_ms();
        T_ASSERT(now < deadline, "only %d of %d processes %s within %d ms", got, count, what, ms);
        int dead = first_exited(pids, npids);
        T_ASSERT(dead < 0, "child %d exited (status %d) before all %s", dead, t_wait(pids[dead]),
                 what);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, 100);
        if (r < 0 && errno == EINTR)
            continue;
        T_ASSERT(r >= 0, "poll: %s", strerror(errno));
        if (r == 0)
            continue;
        char c[8];
        ssize_t n = read(fd, c, sizeof(c));
        T_ASSERT(n > 0, "control pipe closed: a process died (%zd)", n);
        got += (int)n;
    }
}

static void two_jobs(void)
{
    struct t_ivcd da, db;
    int ready[2], go[2], done[2], release[2];
    struct job_arg args[2 * JOB_N];
    pid_t pids[2 * JOB_N];

    _Atomic int32_t *shpids = mmap(NULL, 2 * JOB_N * sizeof(*shpids), PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    T_ASSERT(shpids != MAP_FAILED, "mmap: %s", strerror(errno));
    T_ASSERT(pipe2(ready, O_CLOEXEC) == 0 && pipe2(go, O_CLOEXEC) == 0 &&
                 pipe2(done, O_CLOEXEC) == 0 && pipe2(release, O_CLOEXEC) == 0,
             "pipe: %s", strerror(errno));
    t_ivcd_start(&da, MAGIC_JOB_A, NULL);
    t_ivcd_start(&db, MAGIC_JOB_B, NULL);

    /* Job A has ids 0,1,2 and job B has ids 1,2,3: 1 and 2 are in both. */
    static const uint32_t ids_a[JOB_N] = {1, 2, 0}, ids_b[JOB_N] = {2, 1, 3};
    for (int j = 0; j < 2; j++)
        for (int k = 0; k < JOB_N; k++) {
            struct job_arg *a = &args[j * JOB_N + k];
            *a = (struct job_arg){.sock = j ? db.sock : da.sock,
                                  .magic = j ? MAGIC_JOB_B : MAGIC_JOB_A,
                                  .foreign = j ? 0 : 3,
                                  .pids = shpids + j * JOB_N,
                                  .ready_w = ready[1],
                                  .go_r = go[0],
                                  .done_w = done[1],
                                  .release_r = release[0],
                                  .parent_fds = {go[1], release[1]}};
            memcpy(a->ids, j ? ids_b : ids_a, sizeof(a->ids));
            a->me = a->ids[k];
        }
    for (int i = 0; i < 2 * JOB_N; i++)
        pids[i] = t_fork(job_child, &args[i]);
    /* Only the children keep the ends they use. */
    close(ready[1]);
    close(go[0]);
    close(done[1]);
    close(release[0]);

    collect(ready[0], 2 * JOB_N, STEP_MS, "registered", pids, 2 * JOB_N);

    /* Job B's magic on job A's socket is refused, and so is A's on B's. */
    ivc_ctx_t *ctx = (ivc_ctx_t *)&ctx;
    ivc_options_t o = {.location = da.sock};
    int r = ivc_register(MAGIC_JOB_B, 7, &o, &ctx);
    T_ASSERT(r == IVC_EACCES, "job B's magic on job A's socket: %d (%s)", r, ivc_strerror(r));
    T_ASSERT(ctx == NULL, "failed ivc_register left *out set");
    o.location = db.sock;
    r = ivc_register(MAGIC_JOB_A, 7, &o, &ctx);
    T_ASSERT(r == IVC_EACCES, "job A's magic on job B's socket: %d (%s)", r, ivc_strerror(r));

    close(go[1]);
    collect(done[0], 2 * JOB_N, 2 * STEP_MS, "finished their checks", pids, 2 * JOB_N);
    close(release[1]);
    int failed = 0;
    for (int i = 0; i < 2 * JOB_N; i++) {
        int st = t_wait_bounded(pids[i], STEP_MS, "a two_jobs client");
        if (st != 0) {
            fprintf(stderr, "two_jobs: job %c client %u exited with status %d\n",
                    i < JOB_N ? 'A' : 'B', args[i].me, st);
            failed++;
        }
    }
    T_ASSERT(failed == 0, "%d of %d clients failed", failed, 2 * JOB_N);
    close(ready[0]);
    close(done[0]);

    /* After all that, both daemons still serve their own job. */
    o.location = da.sock;
    T_OK(ivc_register(MAGIC_JOB_A, 5, &o, &ctx));
    T_ASSERT(ivc_get_hosts(ctx, NULL, 0) == 0, "job A is not empty after everyone left");
    T_OK(ivc_unregister(ctx));
    ivcd_stop(&da);
    ivcd_stop(&db);
    munmap(shpids, 2 * JOB_N * sizeof(*shpids));
    printf("ok two_jobs\n");
}

static const struct t_case cases[] = {
    {"all_to_all", all_to_all, 90},
    {"two_jobs", two_jobs, 90},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
