/*
 * mpi_suite.c - MPI point-to-point and collective semantics, checked from
 * inside one MPI job of 2 to 8 ranks.
 *
 * Written for the libfabric provider "ivc" under Open MPI's pml cm + mtl ofi,
 * where every MPI message becomes a tagged libfabric message, but nothing
 * here is specific to it: the same program must pass over pml ob1 with btl
 * tcp or vader, which is how the suite itself is checked.
 *
 * Each check runs on its own duplicate of MPI_COMM_WORLD with
 * MPI_ERRORS_RETURN, so an MPI error becomes a FAIL line instead of an abort
 * and a check's stray messages cannot reach the next check. Every rank keeps
 * its first failure; rank 0 prints one line per check (PASS, or FAIL with the
 * lowest failing rank and its reason) and a final "N passed, M failed". A
 * check that hangs is killed by SIGALRM after CHECK_TIMEOUT_S seconds: the
 * check after the last line printed is the one that hung. The exit status is
 * 0 only if every check passed.
 *
 * Build: mpicc -O2 -o mpi_suite mpi_suite.c
 */
#define _POSIX_C_SOURCE 200809L

#include <mpi.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

enum {
    CHECK_TIMEOUT_S = 60, /* SIGALRM kills a check that takes longer */
    STUCK_S = 20,         /* a polling loop gives up after this long */
    REPORT_TAG = 1,       /* MPI_COMM_WORLD: a failing rank's reason, to rank 0 */
};

static int my_rank; /* this process's rank in MPI_COMM_WORLD */
static int nranks;  /* size of MPI_COMM_WORLD */

/* What one rank saw during one check: its first failure and how many followed. */
struct result {
    int failures;
    char why[512];
};

__attribute__((format(printf, 2, 3))) static void failf(struct result *res, const char *fmt, ...)
{
    if (res->failures++ > 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->why, sizeof(res->why), fmt, ap);
    va_end(ap);
}

/* A failure after which this rank may hang: said on stderr at once as well,
 * since a hang ends in SIGALRM before rank 0 can print it. */
__attribute__((format(printf, 2, 3))) static void stuckf(struct result *res, const char *fmt, ...)
{
    char msg[sizeof(res->why)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "rank %d: %s\n", my_rank, msg);
    failf(res, "%s", msg);
}

static const char *mpi_strerror(int rc, char buf[MPI_MAX_ERROR_STRING])
{
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS)
        snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", rc);
    return buf;
}

/* Records a failure unless an MPI call returned MPI_SUCCESS; says whether it did. */
#define MPI_OK(res, call) mpi_ok((res), (call), #call, __LINE__)
static int mpi_ok(struct result *res, int rc, const char *call, int line)
{
    char msg[MPI_MAX_ERROR_STRING];
    if (rc == MPI_SUCCESS)
        return 1;
    failf(res, "line %d: %s: %s", line, call, mpi_strerror(rc, msg));
    return 0;
}

/* MPI_Waitall, naming the first failed request when the error is in a status. */
#define WAITALL_OK(res, n, reqs, sts) waitall_ok((res), (n), (reqs), (sts), __LINE__)
static int waitall_ok(struct result *res, int n, MPI_Request *reqs, MPI_Status *sts, int line)
{
    char msg[MPI_MAX_ERROR_STRING];
    int rc = MPI_Waitall(n, reqs, sts);
    if (rc == MPI_SUCCESS)
        return 1;
    if (rc == MPI_ERR_IN_STATUS && sts != MPI_STATUSES_IGNORE) {
        for (int i = 0; i < n; i++) {
            int err = sts[i].MPI_ERROR;
            if (err != MPI_SUCCESS && err != MPI_ERR_PENDING) {
                failf(res, "line %d: MPI_Waitall: request %d of %d: %s", line, i, n,
                      mpi_strerror(err, msg));
                return 0;
            }
        }
    }
    failf(res, "line %d: MPI_Waitall: %s", line, mpi_strerror(rc, msg));
    return 0;
}

static void *xmalloc(size_t len)
{
    void *p = malloc(len ? len : 1);
    if (!p) {
        fprintf(stderr, "rank %d: out of memory (%zu bytes)\n", my_rank, len);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int next_rank(void)
{
    return (my_rank + 1) % nranks;
}

static int prev_rank(void)
{
    return (my_rank + nranks - 1) % nranks;
}

/*
 * Message contents: a pseudo-random stream of 64-bit words that depends on a
 * seed made of (sending rank, length, index), so a message that arrives at the
 * wrong receive, from the wrong rank, cut short or shifted does not verify.
 */
static uint64_t mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static uint64_t pattern_seed(int src, size_t len, int index)
{
    return mix64(((uint64_t)src << 56) ^ ((uint64_t)(uint32_t)index << 32) ^ (uint64_t)len);
}

static uint64_t pattern_word(uint64_t seed, size_t k)
{
    return mix64(seed + (k + 1) * UINT64_C(0x9e3779b97f4a7c15));
}

static void fill_pattern(void *buf, size_t len, uint64_t seed)
{
    unsigned char *p = buf;
    size_t words = len / 8;
    for (size_t k = 0; k < words; k++) {
        uint64_t w = pattern_word(seed, k);
        memcpy(p + 8 * k, &w, 8);
    }
    if (len % 8) {
        uint64_t w = pattern_word(seed, words);
        memcpy(p + 8 * words, &w, len % 8);
    }
}

/* Checks buf against the pattern; on a mismatch records the first bad byte. */
static int verify_pattern(struct result *res, const char *what, const void *buf, size_t len,
                          uint64_t seed)
{
    const unsigned char *p = buf;
    for (size_t off = 0; off < len; off += 8) {
        size_t n = len - off < 8 ? len - off : 8;
        uint64_t want = pattern_word(seed, off / 8), got = want;
        memcpy(&got, p + off, n);
        if (got == want)
            continue;
        const unsigned char *w = (const unsigned char *)&want;
        size_t i = 0;
        while (p[off + i] == w[i])
            i++;
        failf(res, "%s: byte %zu of %zu is 0x%02x, expected 0x%02x", what, off + i, len, p[off + i],
              w[i]);
        return 0;
    }
    return 1;
}

/* Checks a receive's or probe's status: source, tag and element count. */
static int expect_status(struct result *res, const char *what, const MPI_Status *st, int source,
                         int tag, MPI_Datatype type, int count)
{
    int got = -1;
    MPI_Get_count(st, type, &got);
    if (st->MPI_SOURCE == source && st->MPI_TAG == tag && got == count)
        return 1;
    failf(res, "%s: status says source %d tag %d count %d, expected source %d tag %d count %d",
          what, st->MPI_SOURCE, st->MPI_TAG, got, source, tag, count);
    return 0;
}

/* Checks an int array element by element against the expected one. */
static int expect_ints(struct result *res, const char *what, const int *got, const int *want,
                       size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            failf(res, "%s: element %zu of %zu is %d, expected %d", what, i, n, got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

/*
 * 1. Blocking MPI_Send/MPI_Recv around the ring, both directions, from 0 B
 * through eager sizes to 16 MiB (the rendezvous path): each message arrives
 * whole, intact, from the right neighbour, with the right status. Even ranks
 * send first and odd ranks receive first, so no send waits on another send.
 */
static void check_ring_send_recv(MPI_Comm comm, struct result *res)
{
    static const size_t sizes[] = {0, 1, 8, 1000, 65536, 1 * MiB, 16 * MiB};
    const int nsizes = (int)(sizeof(sizes) / sizeof(sizes[0]));
    unsigned char *sbuf = xmalloc(16 * MiB), *rbuf = xmalloc(16 * MiB);
    char what[128];

    for (int dir = 0; dir < 2; dir++) {
        int to = dir == 0 ? next_rank() : prev_rank();
        int from = dir == 0 ? prev_rank() : next_rank();
        for (int k = 0; k < nsizes; k++) {
            size_t len = sizes[k];
            int index = dir * nsizes + k;
            MPI_Status st = {0};
            fill_pattern(sbuf, len, pattern_seed(my_rank, len, index));
            if (my_rank % 2 == 0) {
                MPI_OK(res, MPI_Send(sbuf, (int)len, MPI_BYTE, to, index, comm));
                MPI_OK(res, MPI_Recv(rbuf, (int)len, MPI_BYTE, from, index, comm, &st));
            } else {
                MPI_OK(res, MPI_Recv(rbuf, (int)len, MPI_BYTE, from, index, comm, &st));
                MPI_OK(res, MPI_Send(sbuf, (int)len, MPI_BYTE, to, index, comm));
            }
            snprintf(what, sizeof(what), "%zu B from rank %d", len, from);
            if (expect_status(res, what, &st, from, index, MPI_BYTE, (int)len))
                verify_pattern(res, what, rbuf, len, pattern_seed(from, len, index));
        }
    }
    free(sbuf);
    free(rbuf);
}

/*
 * 2. MPI_Isend/MPI_Irecv between every pair of ranks, each rank with itself
 * too, all completed by one MPI_Waitall: with receives posted first (matched
 * on arrival) and with sends first (unexpected messages), 0 B to 256 KiB.
 */
static void check_all_to_all_isend_irecv(MPI_Comm comm, struct result *res)
{
    static const size_t sizes[] = {0, 7, 4096, 256 * KiB};
    const int nsizes = (int)(sizeof(sizes) / sizeof(sizes[0]));
    const size_t max = 256 * KiB;
    unsigned char *sbuf = xmalloc(nranks * max), *rbuf = xmalloc(nranks * max);
    MPI_Request *reqs = xmalloc(2 * nranks * sizeof(*reqs));
    MPI_Status *sts = xmalloc(2 * nranks * sizeof(*sts));
    char what[128];

    for (int k = 0; k < 2 * nsizes; k++) {
        size_t len = sizes[k % nsizes];
        int recv_first = k < nsizes;
        for (int p = 0; p < nranks; p++)
            fill_pattern(sbuf + p * len, len, pattern_seed(my_rank, len, k * 64 + p));
        for (int pass = 0; pass < 2; pass++) {
            if ((pass == 0) == recv_first) {
                for (int p = 0; p < nranks; p++)
                    MPI_OK(res,
                           MPI_Irecv(rbuf + p * len, (int)len, MPI_BYTE, p, k, comm, &reqs[p]));
            } else {
                for (int i = 1; i <= nranks; i++) { /* next rank first, self last */
                    int p = (my_rank + i) % nranks;
                    MPI_OK(res, MPI_Isend(sbuf + p * len, (int)len, MPI_BYTE, p, k, comm,
                                          &reqs[nranks + p]));
                }
            }
        }
        if (!WAITALL_OK(res, 2 * nranks, reqs, sts))
            continue;
        for (int p = 0; p < nranks; p++) {
            snprintf(what, sizeof(what), "%zu B from rank %d (%s)", len, p,
                     recv_first ? "receives posted first" : "sends first");
            if (expect_status(res, what, &sts[p], p, k, MPI_BYTE, (int)len))
                verify_pattern(res, what, rbuf + p * len, len,
                               pattern_seed(p, len, k * 64 + my_rank));
        }
    }
    free(sbuf);
    free(rbuf);
    free(reqs);
    free(sts);
}

/* Check 3's messages: a header (source, tag, count) then values. */
enum { ANY_MSGS = 4, ANY_HEADER = 3, ANY_LARGE_INTS = 64 * 1024 };

static int any_count(int src, int j)
{
    return ANY_HEADER + (j == ANY_MSGS - 1 ? ANY_LARGE_INTS : (src * 5 + j * 3) % 50);
}

static int any_tag(int src, int j)
{
    return 100 + src * ANY_MSGS + j;
}

static int any_value(int src, int j, int i)
{
    return (src << 24) ^ (j << 20) ^ i;
}

/*
 * 3. MPI_ANY_SOURCE + MPI_ANY_TAG: every rank (0 included) sends rank 0 four
 * messages with distinct tags, the last one 256 KiB. Rank 0's wildcard
 * receives report in the status the source, tag and count the payload
 * carries, get every message exactly once, and get each sender's messages in
 * the order sent (a wildcard receive still may not overtake).
 */
static void check_any_source_any_tag(MPI_Comm comm, struct result *res)
{
    int *msgs[ANY_MSGS];
    MPI_Request reqs[ANY_MSGS];

    for (int j = 0; j < ANY_MSGS; j++) {
        int count = any_count(my_rank, j);
        msgs[j] = xmalloc(count * sizeof(int));
        msgs[j][0] = my_rank;
        msgs[j][1] = any_tag(my_rank, j);
        msgs[j][2] = count;
        for (int i = 0; i < count - ANY_HEADER; i++)
            msgs[j][ANY_HEADER + i] = any_value(my_rank, j, i);
        MPI_OK(res, MPI_Isend(msgs[j], count, MPI_INT, 0, any_tag(my_rank, j), comm, &reqs[j]));
    }
    if (my_rank == 0) {
        const int cap = ANY_HEADER + ANY_LARGE_INTS;
        int *buf = xmalloc(cap * sizeof(int));
        int *next_j = xmalloc(nranks * sizeof(int));
        memset(next_j, 0, nranks * sizeof(int));
        for (int m = 0; m < nranks * ANY_MSGS; m++) {
            MPI_Status st;
            int count = -1;
            if (!MPI_OK(res, MPI_Recv(buf, cap, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &st)))
                break;
            MPI_Get_count(&st, MPI_INT, &count);
            int src = st.MPI_SOURCE, tag = st.MPI_TAG;
            if (count < ANY_HEADER || buf[0] != src || buf[1] != tag || buf[2] != count) {
                failf(res,
                      "receive %d: status says source %d tag %d count %d, the payload "
                      "source %d tag %d count %d",
                      m, src, tag, count, buf[0], buf[1], buf[2]);
                continue;
            }
            int j = tag - any_tag(src, 0);
            if (src < 0 || src >= nranks || j < 0 || j >= ANY_MSGS) {
                failf(res, "receive %d: source %d tag %d was never sent", m, src, tag);
                continue;
            }
            if (j != next_j[src])
                failf(res, "receive %d: got rank %d's message %d when its message %d was due", m,
                      src, j, next_j[src]);
            next_j[src] = j + 1;
            if (count != any_count(src, j))
                failf(res, "receive %d: %d ints, rank %d sent %d", m, count, src,
                      any_count(src, j));
            for (int i = 0; i < count - ANY_HEADER; i++) {
                if (buf[ANY_HEADER + i] != any_value(src, j, i)) {
                    failf(res, "receive %d (rank %d tag %d): int %d is %d, expected %d", m, src,
                          tag, ANY_HEADER + i, buf[ANY_HEADER + i], any_value(src, j, i));
                    break;
                }
            }
        }
        for (int s = 0; s < nranks; s++)
            if (next_j[s] != ANY_MSGS)
                failf(res, "received %d of rank %d's %d messages", next_j[s], s, ANY_MSGS);
        free(buf);
        free(next_j);
    }
    WAITALL_OK(res, ANY_MSGS, reqs, MPI_STATUSES_IGNORE);
    for (int j = 0; j < ANY_MSGS; j++)
        free(msgs[j]);
}

/* Check 4's messages: seq and sender (int32 each), then pattern bytes. */
enum {
    ORDER_MSGS = 1000,
    ORDER_LARGE = 256 * 1024, /* every 250th message, from the 125th */
    ORDER_SLOT = 64,          /* a pre-posted receive's buffer for a small message */
    ORDER_HEADER = 8,
};

static int order_is_large(int seq)
{
    return seq % 250 == 125;
}

static size_t order_len(int seq)
{
    return order_is_large(seq) ? ORDER_LARGE : ORDER_HEADER + (size_t)(seq % 7) * 4;
}

static void order_verify(struct result *res, const char *phase, int seq, const unsigned char *buf,
                         const MPI_Status *st, int from)
{
    int count = -1;
    int32_t got_seq = -1, got_src = -1;
    char what[128];
    MPI_Get_count(st, MPI_BYTE, &count);
    if (count >= ORDER_HEADER) {
        memcpy(&got_seq, buf, 4);
        memcpy(&got_src, buf + 4, 4);
    }
    if (got_seq != seq || got_src != from) {
        failf(res, "%s: receive %d from rank %d got %d B carrying seq %d from rank %d", phase, seq,
              from, count, (int)got_seq, (int)got_src);
        return;
    }
    snprintf(what, sizeof(what), "%s: message %d (%zu B) from rank %d", phase, seq, order_len(seq),
             from);
    if (expect_status(res, what, st, from, st->MPI_TAG, MPI_BYTE, (int)order_len(seq)))
        verify_pattern(res, what, buf + ORDER_HEADER, order_len(seq) - ORDER_HEADER,
                       pattern_seed(from, order_len(seq), seq));
}

/*
 * 4. Non-overtaking: 1000 messages with one tag from each rank to the next,
 * small ones with 256 KiB ones (rendezvous) among them, arrive in send order:
 * (a) into blocking receives, most messages arriving unexpected; (b) into
 * receives all posted before the first message is sent, each sized for the
 * message due there, so a message out of order also shows as truncation.
 */
static void check_ordering(MPI_Comm comm, struct result *res)
{
    enum { TAG_UNEXPECTED = 1, TAG_POSTED = 2, TAG_READY = 3 };
    const int to = next_rank(), from = prev_rank();
    size_t *off = xmalloc(ORDER_MSGS * sizeof(*off)), total = 0;
    MPI_Request *sreqs = xmalloc(ORDER_MSGS * sizeof(*sreqs));
    MPI_Request *rreqs = xmalloc(ORDER_MSGS * sizeof(*rreqs));
    MPI_Status *sts = xmalloc(ORDER_MSGS * sizeof(*sts));
    MPI_Request ready_req;

    for (int seq = 0; seq < ORDER_MSGS; seq++) {
        off[seq] = total;
        total += order_len(seq);
    }
    unsigned char *sbuf = xmalloc(total);
    for (int seq = 0; seq < ORDER_MSGS; seq++) {
        int32_t hdr[2] = {seq, my_rank};
        memcpy(sbuf + off[seq], hdr, ORDER_HEADER);
        fill_pattern(sbuf + off[seq] + ORDER_HEADER, order_len(seq) - ORDER_HEADER,
                     pattern_seed(my_rank, order_len(seq), seq));
    }

    /* (a) All sends first, then blocking receives. */
    unsigned char *rbuf = xmalloc(ORDER_LARGE);
    for (int seq = 0; seq < ORDER_MSGS; seq++)
        MPI_OK(res, MPI_Isend(sbuf + off[seq], (int)order_len(seq), MPI_BYTE, to, TAG_UNEXPECTED,
                              comm, &sreqs[seq]));
    for (int seq = 0; seq < ORDER_MSGS; seq++) {
        MPI_Status st = {0};
        if (MPI_OK(res, MPI_Recv(rbuf, ORDER_LARGE, MPI_BYTE, from, TAG_UNEXPECTED, comm, &st)))
            order_verify(res, "unexpected", seq, rbuf, &st, from);
    }
    WAITALL_OK(res, ORDER_MSGS, sreqs, MPI_STATUSES_IGNORE);
    free(rbuf);

    /* (b) Every receive posted, then "ready" to the sender, which only then sends. */
    unsigned char *small = xmalloc((size_t)ORDER_MSGS * ORDER_SLOT);
    unsigned char *large[ORDER_MSGS / 250 + 1];
    unsigned char **slot = xmalloc(ORDER_MSGS * sizeof(*slot));
    int nlarge = 0;
    for (int seq = 0; seq < ORDER_MSGS; seq++) {
        int cap = order_is_large(seq) ? ORDER_LARGE : ORDER_SLOT;
        slot[seq] = order_is_large(seq) ? (large[nlarge++] = xmalloc(ORDER_LARGE))
                                        : small + (size_t)seq * ORDER_SLOT;
        MPI_OK(res, MPI_Irecv(slot[seq], cap, MPI_BYTE, from, TAG_POSTED, comm, &rreqs[seq]));
    }
    MPI_OK(res, MPI_Isend(NULL, 0, MPI_BYTE, from, TAG_READY, comm, &ready_req));
    MPI_OK(res, MPI_Recv(NULL, 0, MPI_BYTE, to, TAG_READY, comm, MPI_STATUS_IGNORE));
    for (int seq = 0; seq < ORDER_MSGS; seq++)
        MPI_OK(res, MPI_Isend(sbuf + off[seq], (int)order_len(seq), MPI_BYTE, to, TAG_POSTED, comm,
                              &sreqs[seq]));
    if (WAITALL_OK(res, ORDER_MSGS, rreqs, sts))
        for (int seq = 0; seq < ORDER_MSGS; seq++)
            order_verify(res, "pre-posted", seq, slot[seq], &sts[seq], from);
    WAITALL_OK(res, ORDER_MSGS, sreqs, MPI_STATUSES_IGNORE);
    MPI_OK(res, MPI_Wait(&ready_req, MPI_STATUS_IGNORE));

    for (int i = 0; i < nlarge; i++)
        free(large[i]);
    free(small);
    free(slot);
    free(sbuf);
    free(off);
    free(sreqs);
    free(rreqs);
    free(sts);
}

/* Check 5's messages, by tag: the order they are sent in. */
static const size_t probe_len[] = {
    [1] = 1000, [2] = 4 * MiB, [3] = 100, [4] = 1 * MiB, [5] = 70000, [6] = 0};
enum { PROBE_TAGS = 6 };

/* Receives the message a probe reported, into a buffer sized from the probe's count. */
static void probe_recv_verify(MPI_Comm comm, struct result *res, const char *what,
                              const MPI_Status *probed, int from)
{
    int tag = probed->MPI_TAG, count = -1;
    MPI_Get_count(probed, MPI_BYTE, &count);
    if (tag < 1 || tag > PROBE_TAGS || count < 0) {
        stuckf(res, "%s: the probe reported tag %d count %d", what, tag, count);
        return;
    }
    unsigned char *buf = xmalloc(count);
    MPI_Status st = {0};
    if (MPI_OK(res, MPI_Recv(buf, count, MPI_BYTE, probed->MPI_SOURCE, tag, comm, &st)) &&
        expect_status(res, what, &st, from, tag, MPI_BYTE, (int)probe_len[tag]))
        verify_pattern(res, what, buf, count, pattern_seed(from, probe_len[tag], tag));
    free(buf);
}

/* MPI_Iprobe until it finds a message or STUCK_S pass. */
static int iprobe_until_found(MPI_Comm comm, struct result *res, const char *what, int source,
                              int tag, MPI_Status *st)
{
    double deadline = MPI_Wtime() + STUCK_S;
    int flag = 0;
    while (!flag) {
        if (!MPI_OK(res, MPI_Iprobe(source, tag, comm, &flag, st)))
            return 0;
        if (!flag && MPI_Wtime() > deadline) {
            stuckf(res, "%s: MPI_Iprobe found no message in %d s", what, STUCK_S);
            return 0;
        }
    }
    return 1;
}

/*
 * 5. Probes report source, tag and count before the receive, and the receive
 * then gets that very message: MPI_Probe with MPI_ANY_TAG finds the first
 * message sent; MPI_Mprobe/MPI_Mrecv, MPI_Iprobe and MPI_Probe by tag find
 * later ones out of send order (1 MiB, 100 B, 4 MiB); MPI_Improbe/MPI_Imrecv
 * 70000 B; a 0 B message; and once all is received, MPI_Iprobe finds nothing.
 */
static void check_probe(MPI_Comm comm, struct result *res)
{
    const int to = next_rank(), from = prev_rank();
    unsigned char *sbuf[PROBE_TAGS + 1];
    MPI_Request reqs[PROBE_TAGS];
    MPI_Status st = {0}, st2 = {0};
    MPI_Message msg;
    int flag = 0;

    for (int tag = 1; tag <= PROBE_TAGS; tag++) {
        sbuf[tag] = xmalloc(probe_len[tag]);
        fill_pattern(sbuf[tag], probe_len[tag], pattern_seed(my_rank, probe_len[tag], tag));
        MPI_OK(res,
               MPI_Isend(sbuf[tag], (int)probe_len[tag], MPI_BYTE, to, tag, comm, &reqs[tag - 1]));
    }

    /* MPI_Probe, any tag: must be the first message sent, tag 1. */
    if (MPI_OK(res, MPI_Probe(from, MPI_ANY_TAG, comm, &st)) &&
        expect_status(res, "MPI_Probe(any tag)", &st, from, 1, MPI_BYTE, (int)probe_len[1]))
        probe_recv_verify(comm, res, "MPI_Probe(any tag) then MPI_Recv", &st, from);

    /* MPI_Mprobe from any source, tag 4, past the unreceived tags 2 and 3. */
    if (MPI_OK(res, MPI_Mprobe(MPI_ANY_SOURCE, 4, comm, &msg, &st)) &&
        expect_status(res, "MPI_Mprobe", &st, from, 4, MPI_BYTE, (int)probe_len[4])) {
        unsigned char *buf = xmalloc(probe_len[4]);
        if (MPI_OK(res, MPI_Mrecv(buf, (int)probe_len[4], MPI_BYTE, &msg, &st2)) &&
            expect_status(res, "MPI_Mrecv", &st2, from, 4, MPI_BYTE, (int)probe_len[4]))
            verify_pattern(res, "MPI_Mrecv", buf, probe_len[4],
                           pattern_seed(from, probe_len[4], 4));
        free(buf);
    }

    /* MPI_Iprobe until found, tag 3. */
    if (iprobe_until_found(comm, res, "MPI_Iprobe(tag 3)", from, 3, &st) &&
        expect_status(res, "MPI_Iprobe(tag 3)", &st, from, 3, MPI_BYTE, (int)probe_len[3]))
        probe_recv_verify(comm, res, "MPI_Iprobe then MPI_Recv", &st, from);

    /* MPI_Probe from any source, tag 2: the 4 MiB message. */
    if (MPI_OK(res, MPI_Probe(MPI_ANY_SOURCE, 2, comm, &st)) &&
        expect_status(res, "MPI_Probe(4 MiB)", &st, from, 2, MPI_BYTE, (int)probe_len[2]))
        probe_recv_verify(comm, res, "MPI_Probe(4 MiB) then MPI_Recv", &st, from);

    /* MPI_Improbe until found, tag 5, then MPI_Imrecv. */
    double deadline = MPI_Wtime() + STUCK_S;
    flag = 0;
    while (!flag && MPI_OK(res, MPI_Improbe(from, 5, comm, &flag, &msg, &st))) {
        if (!flag && MPI_Wtime() > deadline) {
            stuckf(res, "MPI_Improbe(tag 5) found no message in %d s", STUCK_S);
            break;
        }
    }
    if (flag && expect_status(res, "MPI_Improbe", &st, from, 5, MPI_BYTE, (int)probe_len[5])) {
        unsigned char *buf = xmalloc(probe_len[5]);
        MPI_Request req;
        if (MPI_OK(res, MPI_Imrecv(buf, (int)probe_len[5], MPI_BYTE, &msg, &req)) &&
            MPI_OK(res, MPI_Wait(&req, &st2)) &&
            expect_status(res, "MPI_Imrecv", &st2, from, 5, MPI_BYTE, (int)probe_len[5]))
            verify_pattern(res, "MPI_Imrecv", buf, probe_len[5],
                           pattern_seed(from, probe_len[5], 5));
        free(buf);
    }

    /* Only the 0 B message is left. */
    if (iprobe_until_found(comm, res, "MPI_Iprobe(any)", MPI_ANY_SOURCE, MPI_ANY_TAG, &st) &&
        expect_status(res, "MPI_Iprobe(any) for the 0 B message", &st, from, 6, MPI_BYTE, 0))
        probe_recv_verify(comm, res, "0 B message", &st, from);

    /* Nothing else was sent to this rank on this communicator. */
    for (int i = 0; i < 10; i++) {
        if (MPI_OK(res, MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &st)) && flag) {
            failf(res, "MPI_Iprobe after all was received found source %d tag %d", st.MPI_SOURCE,
                  st.MPI_TAG);
            break;
        }
    }
    WAITALL_OK(res, PROBE_TAGS, reqs, MPI_STATUSES_IGNORE);
    for (int tag = 1; tag <= PROBE_TAGS; tag++)
        free(sbuf[tag]);
}

/*
 * 6. Synchronous sends: an MPI_Issend (8 B, eager-sized, and 256 KiB) does not
 * complete while its receive is not posted - the sender polls MPI_Test for
 * 200 ms, the receiver posts only 500 ms after it sees a message the sender
 * sent after its MPI_Issend - and completes once it is. Then blocking MPI_Ssend
 * of 0 B and 1 MiB around the ring.
 */
static void check_ssend(MPI_Comm comm, struct result *res)
{
    enum { TAG_GO = 1, TAG_SMALL = 2, TAG_LARGE = 3, TAG_RING = 4 };
    const int poll_ms = 200, receiver_delay_ms = 500;
    const size_t lens[2] = {8, 256 * KiB};
    const int tags[2] = {TAG_SMALL, TAG_LARGE};
    const int partner = my_rank % 2 ? my_rank - 1 : my_rank + 1;
    unsigned char *buf[2] = {xmalloc(lens[0]), xmalloc(lens[1])};
    char what[128];

    if (partner < nranks && my_rank % 2) { /* sender */
        MPI_Request reqs[3];
        int done[2] = {0, 0};
        for (int i = 0; i < 2; i++) {
            fill_pattern(buf[i], lens[i], pattern_seed(my_rank, lens[i], tags[i]));
            MPI_OK(res,
                   MPI_Issend(buf[i], (int)lens[i], MPI_BYTE, partner, tags[i], comm, &reqs[i]));
        }
        MPI_OK(res, MPI_Isend(NULL, 0, MPI_BYTE, partner, TAG_GO, comm, &reqs[2]));
        double t0 = MPI_Wtime(), t;
        while ((t = MPI_Wtime()) - t0 < poll_ms / 1e3) {
            for (int i = 0; i < 2; i++) {
                if (done[i] || !MPI_OK(res, MPI_Test(&reqs[i], &done[i], MPI_STATUS_IGNORE)))
                    continue;
                if (done[i])
                    failf(res,
                          "MPI_Issend of %zu B to rank %d completed %.0f ms after it was "
                          "started, but the receive is posted only %d ms after it",
                          lens[i], partner, (t - t0) * 1e3, receiver_delay_ms);
            }
        }
        WAITALL_OK(res, 3, reqs, MPI_STATUSES_IGNORE);
    } else if (partner < nranks) { /* receiver */
        MPI_OK(res, MPI_Recv(NULL, 0, MPI_BYTE, partner, TAG_GO, comm, MPI_STATUS_IGNORE));
        sleep_ms(receiver_delay_ms);
        for (int i = 0; i < 2; i++) {
            MPI_Status st = {0};
            snprintf(what, sizeof(what), "MPI_Issend of %zu B", lens[i]);
            if (MPI_OK(res,
                       MPI_Recv(buf[i], (int)lens[i], MPI_BYTE, partner, tags[i], comm, &st)) &&
                expect_status(res, what, &st, partner, tags[i], MPI_BYTE, (int)lens[i]))
                verify_pattern(res, what, buf[i], lens[i], pattern_seed(partner, lens[i], tags[i]));
        }
    }
    free(buf[0]);
    free(buf[1]);

    /* Blocking MPI_Ssend around the ring; even ranks send first. */
    const size_t ring_lens[2] = {0, 1 * MiB};
    unsigned char *sbuf = xmalloc(1 * MiB), *rbuf = xmalloc(1 * MiB);
    for (int i = 0; i < 2; i++) {
        size_t len = ring_lens[i];
        int tag = TAG_RING + i;
        MPI_Status st = {0};
        fill_pattern(sbuf, len, pattern_seed(my_rank, len, tag));
        if (my_rank % 2 == 0) {
            MPI_OK(res, MPI_Ssend(sbuf, (int)len, MPI_BYTE, next_rank(), tag, comm));
            MPI_OK(res, MPI_Recv(rbuf, (int)len, MPI_BYTE, prev_rank(), tag, comm, &st));
        } else {
            MPI_OK(res, MPI_Recv(rbuf, (int)len, MPI_BYTE, prev_rank(), tag, comm, &st));
            MPI_OK(res, MPI_Ssend(sbuf, (int)len, MPI_BYTE, next_rank(), tag, comm));
        }
        snprintf(what, sizeof(what), "MPI_Ssend of %zu B", len);
        if (expect_status(res, what, &st, prev_rank(), tag, MPI_BYTE, (int)len))
            verify_pattern(res, what, rbuf, len, pattern_seed(prev_rank(), len, tag));
    }
    free(sbuf);
    free(rbuf);
}

/* Cancels a receive that no message can match yet; it must say cancelled. */
static void cancel_unmatched(MPI_Comm comm, struct result *res, const char *what, int source,
                             int tag)
{
    unsigned char buf[16];
    MPI_Request req;
    MPI_Status st;
    int cancelled = 0;
    if (MPI_OK(res, MPI_Irecv(buf, sizeof(buf), MPI_BYTE, source, tag, comm, &req)) &&
        MPI_OK(res, MPI_Cancel(&req)) && MPI_OK(res, MPI_Wait(&req, &st)) &&
        MPI_OK(res, MPI_Test_cancelled(&st, &cancelled)) && !cancelled)
        failf(res, "%s: MPI_Test_cancelled says not cancelled (status source %d tag %d)", what,
              st.MPI_SOURCE, st.MPI_TAG);
}

/*
 * 7. Cancelling a posted receive: MPI_Cancel + MPI_Wait complete it and
 * MPI_Test_cancelled says so, for a wildcard-source receive and for one from a
 * given rank whose tag is sent later; the cancelled receive consumes nothing,
 * so that later message and one with another tag arrive intact. And when the
 * message is already there (probed) a cancel either wins - and the message is
 * still there for the next receive - or loses and the data is delivered.
 */
static void check_cancel_recv(MPI_Comm comm, struct result *res)
{
    enum { TAG_NEVER = 1, TAG_LATER = 2, TAG_OTHER = 3, TAG_GO = 4, TAG_RACE = 5 };
    const int to = next_rank(), from = prev_rank();
    const size_t later_len = 1000, other_len = 100, race_len = 500;
    unsigned char later[1000], other[100], race[500], rbuf[1000];
    MPI_Request sreqs[4];
    MPI_Status st = {0};
    int cancelled = 0;

    fill_pattern(later, later_len, pattern_seed(my_rank, later_len, TAG_LATER));
    fill_pattern(other, other_len, pattern_seed(my_rank, other_len, TAG_OTHER));
    fill_pattern(race, race_len, pattern_seed(my_rank, race_len, TAG_RACE));

    cancel_unmatched(comm, res, "MPI_ANY_SOURCE receive of a tag nobody sends", MPI_ANY_SOURCE,
                     TAG_NEVER);
    cancel_unmatched(comm, res, "receive of a tag not sent yet", from, TAG_LATER);

    /* Only now may the previous rank send TAG_LATER. */
    MPI_OK(res, MPI_Isend(NULL, 0, MPI_BYTE, from, TAG_GO, comm, &sreqs[0]));
    MPI_OK(res, MPI_Recv(NULL, 0, MPI_BYTE, to, TAG_GO, comm, MPI_STATUS_IGNORE));
    MPI_OK(res, MPI_Isend(other, (int)other_len, MPI_BYTE, to, TAG_OTHER, comm, &sreqs[1]));
    MPI_OK(res, MPI_Isend(later, (int)later_len, MPI_BYTE, to, TAG_LATER, comm, &sreqs[2]));
    MPI_OK(res, MPI_Isend(race, (int)race_len, MPI_BYTE, to, TAG_RACE, comm, &sreqs[3]));

    if (MPI_OK(res, MPI_Recv(rbuf, (int)other_len, MPI_BYTE, from, TAG_OTHER, comm, &st)) &&
        expect_status(res, "message after the cancels", &st, from, TAG_OTHER, MPI_BYTE,
                      (int)other_len))
        verify_pattern(res, "message after the cancels", rbuf, other_len,
                       pattern_seed(from, other_len, TAG_OTHER));
    if (MPI_OK(res, MPI_Recv(rbuf, (int)later_len, MPI_BYTE, from, TAG_LATER, comm, &st)) &&
        expect_status(res, "message with the cancelled receive's tag", &st, from, TAG_LATER,
                      MPI_BYTE, (int)later_len))
        verify_pattern(res, "message with the cancelled receive's tag", rbuf, later_len,
                       pattern_seed(from, later_len, TAG_LATER));

    /* The message is here: the cancel may win or lose, but not both or neither. */
    MPI_Request req;
    memset(rbuf, 0, sizeof(rbuf));
    if (MPI_OK(res, MPI_Probe(from, TAG_RACE, comm, &st)) &&
        MPI_OK(res, MPI_Irecv(rbuf, (int)race_len, MPI_BYTE, from, TAG_RACE, comm, &req)) &&
        MPI_OK(res, MPI_Cancel(&req)) && MPI_OK(res, MPI_Wait(&req, &st)) &&
        MPI_OK(res, MPI_Test_cancelled(&st, &cancelled))) {
        const char *what = cancelled ? "message whose receive was cancelled, received again"
                                     : "message whose receive's cancel failed";
        if (cancelled)
            MPI_OK(res, MPI_Recv(rbuf, (int)race_len, MPI_BYTE, from, TAG_RACE, comm, &st));
        if (expect_status(res, what, &st, from, TAG_RACE, MPI_BYTE, (int)race_len))
            verify_pattern(res, what, rbuf, race_len, pattern_seed(from, race_len, TAG_RACE));
    }
    WAITALL_OK(res, 4, sreqs, MPI_STATUSES_IGNORE);
}

/*
 * 8. Truncation: a 100 B message into a 10 B receive, by MPI_Recv and by
 * MPI_Irecv + MPI_Wait, returns an error of class MPI_ERR_TRUNCATE under
 * MPI_ERRORS_RETURN and writes nothing past the 10 B; the sends succeed, and
 * a following message arrives intact. (Only eager-sized messages: Open MPI
 * 4.1's pml ob1 itself overruns the buffer and may hang when it truncates a
 * rendezvous message.)
 */
static void check_truncate(MPI_Comm comm, struct result *res)
{
    enum { TAG_RECV = 1, TAG_IRECV = 2, TAG_AFTER = 3, GUARD = 0xA5 };
    const int to = next_rank(), from = prev_rank();
    const size_t lens[3] = {100, 100, 1000};
    const int tags[3] = {TAG_RECV, TAG_IRECV, TAG_AFTER};
    unsigned char sbuf[3][1000], rbuf[1000];
    char msg[MPI_MAX_ERROR_STRING];
    MPI_Request sreqs[3], req;
    MPI_Status sts[3], st;
    MPI_Errhandler saved;

    if (!MPI_OK(res, MPI_Comm_get_errhandler(comm, &saved)) ||
        !MPI_OK(res, MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN)))
        return;
    for (int i = 0; i < 3; i++) {
        fill_pattern(sbuf[i], lens[i], pattern_seed(my_rank, lens[i], tags[i]));
        MPI_OK(res, MPI_Isend(sbuf[i], (int)lens[i], MPI_BYTE, to, tags[i], comm, &sreqs[i]));
    }

    for (int i = 0; i < 2; i++) {
        const char *how = i == 0 ? "MPI_Recv" : "MPI_Irecv + MPI_Wait";
        int rc, class = -1;
        memset(rbuf, GUARD, sizeof(rbuf));
        if (i == 0) {
            rc = MPI_Recv(rbuf, 10, MPI_BYTE, from, TAG_RECV, comm, &st);
        } else {
            rc = MPI_Irecv(rbuf, 10, MPI_BYTE, from, TAG_IRECV, comm, &req);
            if (!MPI_OK(res, rc))
                continue;
            rc = MPI_Wait(&req, &st);
        }
        MPI_Error_class(rc, &class);
        if (class != MPI_ERR_TRUNCATE)
            failf(res, "100 B into a 10 B %s: returned \"%s\", expected MPI_ERR_TRUNCATE", how,
                  rc == MPI_SUCCESS ? "MPI_SUCCESS" : mpi_strerror(rc, msg));
        for (size_t k = 10; k < sizeof(rbuf); k++) {
            if (rbuf[k] != GUARD) {
                failf(res, "100 B into a 10 B %s: byte %zu past the buffer was overwritten", how,
                      k);
                break;
            }
        }
    }

    if (MPI_OK(res, MPI_Recv(rbuf, 1000, MPI_BYTE, from, TAG_AFTER, comm, &st)) &&
        expect_status(res, "message after the truncated ones", &st, from, TAG_AFTER, MPI_BYTE,
                      (int)lens[2]))
        verify_pattern(res, "message after the truncated ones", rbuf, lens[2],
                       pattern_seed(from, lens[2], TAG_AFTER));
    WAITALL_OK(res, 3, sreqs, sts);

    MPI_OK(res, MPI_Comm_set_errhandler(comm, saved));
    MPI_OK(res, MPI_Errhandler_free(&saved));
}

/*
 * 9a. MPI_Barrier completes, repeatedly, and synchronizes: when the last rank
 * enters 300 ms late, nobody leaves before it arrived (no one leaves sooner
 * than 150 ms after entering; the slack is for uneven exits from the barrier
 * before).
 */
static void check_barrier(MPI_Comm comm, struct result *res)
{
    const int late_ms = 300, min_wait_ms = 150;
    for (int i = 0; i < 20; i++)
        MPI_OK(res, MPI_Barrier(comm));
    if (my_rank == nranks - 1)
        sleep_ms(late_ms);
    double t0 = MPI_Wtime();
    MPI_OK(res, MPI_Barrier(comm));
    double waited_ms = (MPI_Wtime() - t0) * 1e3;
    if (my_rank != nranks - 1 && waited_ms < min_wait_ms)
        failf(res, "left MPI_Barrier %.0f ms after entering it, though rank %d entered %d ms late",
              waited_ms, nranks - 1, late_ms);
}

/* 9b. MPI_Bcast from every root of 1 B and 1 MiB: every rank gets the root's bytes. */
static void check_bcast(MPI_Comm comm, struct result *res)
{
    static const size_t sizes[] = {1, 1 * MiB};
    unsigned char *buf = xmalloc(1 * MiB);
    char what[128];
    for (int root = 0; root < nranks; root++) {
        for (int k = 0; k < 2; k++) {
            size_t len = sizes[k];
            uint64_t seed = pattern_seed(root, len, k);
            if (my_rank == root)
                fill_pattern(buf, len, seed);
            else
                memset(buf, 0, len);
            snprintf(what, sizeof(what), "MPI_Bcast of %zu B from root %d", len, root);
            if (MPI_OK(res, MPI_Bcast(buf, (int)len, MPI_BYTE, root, comm)))
                verify_pattern(res, what, buf, len, seed);
        }
    }
    free(buf);
}

/* Rank r's contributions to the reductions; the values and all sums are exact. */
static long reduce_long(int r, int i)
{
    return (long)(r + 1) * 1000003L + (long)i * (r + 3);
}

static double reduce_double(int r, int i)
{
    return (r + 1) * 0.5 + (i % 1000) * 0.25;
}

/* 9c. MPI_Reduce with MPI_SUM of long and double vectors, to every root. */
static void check_reduce(MPI_Comm comm, struct result *res)
{
    enum { LEN = 10000 };
    long *lsend = xmalloc(LEN * sizeof(long)), *lrecv = xmalloc(LEN * sizeof(long));
    double *dsend = xmalloc(LEN * sizeof(double)), *drecv = xmalloc(LEN * sizeof(double));
    for (int i = 0; i < LEN; i++) {
        lsend[i] = reduce_long(my_rank, i);
        dsend[i] = reduce_double(my_rank, i);
    }
    for (int root = 0; root < nranks; root++) {
        memset(lrecv, 0, LEN * sizeof(long));
        memset(drecv, 0, LEN * sizeof(double));
        int ok = MPI_OK(res, MPI_Reduce(lsend, lrecv, LEN, MPI_LONG, MPI_SUM, root, comm)) &
                 MPI_OK(res, MPI_Reduce(dsend, drecv, LEN, MPI_DOUBLE, MPI_SUM, root, comm));
        if (my_rank != root || !ok)
            continue;
        for (int i = 0; i < LEN; i++) {
            long lwant = 0;
            double dwant = 0;
            for (int r = 0; r < nranks; r++) {
                lwant += reduce_long(r, i);
                dwant += reduce_double(r, i);
            }
            if (lrecv[i] != lwant || drecv[i] != dwant) {
                failf(res,
                      "MPI_Reduce to root %d: element %d is %ld (long) and %g (double), "
                      "expected %ld and %g",
                      root, i, lrecv[i], drecv[i], lwant, dwant);
                break;
            }
        }
    }
    free(lsend);
    free(lrecv);
    free(dsend);
    free(drecv);
}

static int allreduce_value(int r, int i)
{
    return (int)(((long long)r * 7919 + (long long)i * 104729) % 2001) - 1000;
}

/* 9d. MPI_Allreduce with MPI_SUM, MPI_MAX and MPI_MIN of int vectors of 1 and 100000. */
static void check_allreduce(MPI_Comm comm, struct result *res)
{
    static const int lens[] = {1, 100000};
    static const struct {
        MPI_Op op;
        const char *name;
    } ops[] = {{MPI_SUM, "MPI_SUM"}, {MPI_MAX, "MPI_MAX"}, {MPI_MIN, "MPI_MIN"}};
    int *send = xmalloc(100000 * sizeof(int)), *recv = xmalloc(100000 * sizeof(int));
    int *want = xmalloc(100000 * sizeof(int));
    char what[128];
    for (int i = 0; i < 100000; i++)
        send[i] = allreduce_value(my_rank, i);
    for (int l = 0; l < 2; l++) {
        for (int o = 0; o < 3; o++) {
            int len = lens[l];
            for (int i = 0; i < len; i++) {
                want[i] = allreduce_value(0, i);
                for (int r = 1; r < nranks; r++) {
                    int v = allreduce_value(r, i);
                    want[i] = o == 0   ? want[i] + v
                              : o == 1 ? (v > want[i] ? v : want[i])
                                       : (v < want[i] ? v : want[i]);
                }
            }
            memset(recv, 0, len * sizeof(int));
            snprintf(what, sizeof(what), "MPI_Allreduce %s of %d ints", ops[o].name, len);
            if (MPI_OK(res, MPI_Allreduce(send, recv, len, MPI_INT, ops[o].op, comm)))
                expect_ints(res, what, recv, want, len);
        }
    }
    free(send);
    free(recv);
    free(want);
}

/* 9e. MPI_Allgather of 5 and 20000 ints per rank: every rank gets every block. */
static void check_allgather(MPI_Comm comm, struct result *res)
{
    static const int counts[] = {5, 20000};
    char what[128];
    for (int c = 0; c < 2; c++) {
        int count = counts[c];
        int *send = xmalloc(count * sizeof(int));
        int *recv = xmalloc((size_t)nranks * count * sizeof(int));
        int *want = xmalloc((size_t)nranks * count * sizeof(int));
        for (int k = 0; k < count; k++)
            send[k] = my_rank * 1000000 + k;
        for (int r = 0; r < nranks; r++)
            for (int k = 0; k < count; k++)
                want[(size_t)r * count + k] = r * 1000000 + k;
        memset(recv, 0xff, (size_t)nranks * count * sizeof(int));
        snprintf(what, sizeof(what), "MPI_Allgather of %d ints", count);
        if (MPI_OK(res, MPI_Allgather(send, count, MPI_INT, recv, count, MPI_INT, comm)))
            expect_ints(res, what, recv, want, (size_t)nranks * count);
        free(send);
        free(recv);
        free(want);
    }
}

/* The k-th int that rank i sends rank j in the all-to-all checks. */
static int a2a_value(int i, int j, int k)
{
    return i * 100000000 + j * 1000000 + k;
}

/* 9f. MPI_Alltoall of 3 and 10000 ints per pair: block (i, j) lands at j, slot i. */
static void check_alltoall(MPI_Comm comm, struct result *res)
{
    static const int counts[] = {3, 10000};
    char what[128];
    for (int c = 0; c < 2; c++) {
        int count = counts[c];
        size_t total = (size_t)nranks * count;
        int *send = xmalloc(total * sizeof(int)), *recv = xmalloc(total * sizeof(int));
        int *want = xmalloc(total * sizeof(int));
        for (int j = 0; j < nranks; j++)
            for (int k = 0; k < count; k++)
                send[(size_t)j * count + k] = a2a_value(my_rank, j, k);
        for (int i = 0; i < nranks; i++)
            for (int k = 0; k < count; k++)
                want[(size_t)i * count + k] = a2a_value(i, my_rank, k);
        memset(recv, 0xff, total * sizeof(int));
        snprintf(what, sizeof(what), "MPI_Alltoall of %d ints per pair", count);
        if (MPI_OK(res, MPI_Alltoall(send, count, MPI_INT, recv, count, MPI_INT, comm)))
            expect_ints(res, what, recv, want, total);
        free(send);
        free(recv);
        free(want);
    }
}

/* Check 9g's count of ints from rank i to rank j. */
static int a2av_count(int i, int j, int scale)
{
    return ((i + 2 * j) % 5 + 1) * scale;
}

/*
 * 9g. MPI_Alltoallv with a different count for every pair, (i + 2j) % 5 + 1
 * ints from i to j, times 1 and times 1000, received at displacements that
 * leave a one-int gap before each block: blocks land where the displacements
 * say and the gaps stay untouched.
 */
static void check_alltoallv(MPI_Comm comm, struct result *res)
{
    int *scounts = xmalloc(nranks * sizeof(int)), *sdispls = xmalloc(nranks * sizeof(int));
    int *rcounts = xmalloc(nranks * sizeof(int)), *rdispls = xmalloc(nranks * sizeof(int));
    char what[128];
    for (int scale = 1; scale <= 1000; scale *= 1000) {
        int stotal = 0, rtotal = 1; /* rtotal: the gap before block 0 */
        for (int j = 0; j < nranks; j++) {
            scounts[j] = a2av_count(my_rank, j, scale);
            sdispls[j] = stotal;
            stotal += scounts[j];
            rcounts[j] = a2av_count(j, my_rank, scale);
            rdispls[j] = rtotal;
            rtotal += rcounts[j] + 1;
        }
        int *send = xmalloc(stotal * sizeof(int)), *recv = xmalloc(rtotal * sizeof(int));
        int *want = xmalloc(rtotal * sizeof(int));
        for (int j = 0; j < nranks; j++)
            for (int k = 0; k < scounts[j]; k++)
                send[sdispls[j] + k] = a2a_value(my_rank, j, k);
        for (int k = 0; k < rtotal; k++)
            want[k] = recv[k] = -1;
        for (int i = 0; i < nranks; i++)
            for (int k = 0; k < rcounts[i]; k++)
                want[rdispls[i] + k] = a2a_value(i, my_rank, k);
        snprintf(what, sizeof(what), "MPI_Alltoallv with counts x%d", scale);
        if (MPI_OK(res, MPI_Alltoallv(send, scounts, sdispls, MPI_INT, recv, rcounts, rdispls,
                                      MPI_INT, comm)))
            expect_ints(res, what, recv, want, rtotal);
        free(send);
        free(recv);
        free(want);
    }
    free(scounts);
    free(sdispls);
    free(rcounts);
    free(rdispls);
}

struct check {
    const char *name;
    void (*run)(MPI_Comm comm, struct result *res);
};

/*
 * Runs one check on every rank on a fresh communicator, then reports it from
 * rank 0: PASS, or FAIL with the lowest failing rank's first failure.
 */
static int run_check(const struct check *check)
{
    struct result res = {0};
    MPI_Comm comm;

    alarm(CHECK_TIMEOUT_S);
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    check->run(comm, &res);
    MPI_Comm_free(&comm);

    int first = res.failures ? my_rank : nranks, nfailing = res.failures ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &nfailing, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (first == nranks) {
        if (my_rank == 0)
            printf("PASS %s\n", check->name);
    } else {
        char why[sizeof(res.why) + 64];
        if (my_rank == first) {
            snprintf(why, sizeof(why), "%s", res.why);
            if (res.failures > 1)
                snprintf(why + strlen(why), sizeof(why) - strlen(why), " (+%d more)",
                         res.failures - 1);
            if (first != 0)
                MPI_Send(why, sizeof(why), MPI_CHAR, 0, REPORT_TAG, MPI_COMM_WORLD);
        }
        if (my_rank == 0) {
            if (first != 0)
                MPI_Recv(why, sizeof(why), MPI_CHAR, first, REPORT_TAG, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
            printf("FAIL %s: rank %d: %s", check->name, first, why);
            if (nfailing > 1)
                printf(" [%d of %d ranks failed]", nfailing, nranks);
            printf("\n");
        }
    }
    fflush(stdout);
    alarm(0);
    return first == nranks;
}

int main(int argc, char **argv)
{
    static const struct check checks[] = {
        {"ring_send_recv", check_ring_send_recv},
        {"all_to_all_isend_irecv", check_all_to_all_isend_irecv},
        {"any_source_any_tag", check_any_source_any_tag},
        {"ordering", check_ordering},
        {"probe", check_probe},
        {"ssend", check_ssend},
        {"cancel_recv", check_cancel_recv},
        {"truncate", check_truncate},
        {"barrier", check_barrier},
        {"bcast", check_bcast},
        {"reduce", check_reduce},
        {"allreduce", check_allreduce},
        {"allgather", check_allgather},
        {"alltoall", check_alltoall},
        {"alltoallv", check_alltoallv},
    };
    const int nchecks = (int)(sizeof(checks) / sizeof(checks[0]));
    int passed = 0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (nranks < 2) {
        fprintf(stderr, "mpi_suite: needs at least 2 ranks, got %d\n", nranks);
        MPI_Finalize();
        return 2;
    }
    for (int i = 0; i < nchecks; i++)
        passed += run_check(&checks[i]);
    if (my_rank == 0)
        printf("%d passed, %d failed\n", passed, nchecks - passed);
    MPI_Finalize();
    return passed == nchecks ? 0 : 1;
}
