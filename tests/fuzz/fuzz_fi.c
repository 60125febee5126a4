/*
 * fuzz_fi.c - the provider "ivc" (src/fi) as a remote endpoint meets it:
 * what peers write on their connections goes through a real endpoint,
 * opened with the provider's own calls (IVC off, as FI_IVC_ENABLE=0): the
 * HELLO (conn.c's read_hellos, ivf_hello_check), the stream parser
 * (stream.c), ivf_hdr_check and every frame's reaction (progress.c) with
 * matching (match.c), rendezvous, ACK and credit, while the harness posts
 * receives and sends as an application would and takes their completions.
 *
 * A connection is a socketpair instead of an accepted TCP socket (its end
 * is handed to the endpoint as accept_new would); what the endpoint sends
 * a peer (CTS, DATA, ACK, CREDIT) comes back on it, and the harness empties
 * it (unless the peer is one that never reads).  The provider's connect()
 * always fails (the fuzzer is linked with --wrap=connect): a send to a peer
 * that opened no connection meets an unreachable address.  Small
 * tunables (eager_max 512, chunk 256, credit 2048) bring rendezvous,
 * several DATA frames and the credit within reach of small inputs.
 * Receive and send buffers are allocated to their exact size, so ASan sees
 * a byte written past one.  Nothing is written to disk.
 *
 * The input is a list of operations, one byte each plus arguments:
 *   0 c n16 bytes  peer c (c & 1) writes n bytes (little-endian n, cut to
 *                  what is left); a connection opens at a peer's first
 *                  write after it closed, and its first 88 bytes are the
 *                  hello; c & 2 when it opens: the peer never reads what
 *                  the endpoint sends on it
 *   1 f t k        a receive of slot k: f bit 0 tagged, bits 1-2 its size
 *                  (0, 24, 512, 3000 bytes), bit 3 in two pieces, bits 4-6
 *                  flags (none, PEEK, PEEK|CLAIM, PEEK|DISCARD, CLAIM,
 *                  CLAIM|DISCARD), bit 7 only from the AV's first peer; tag t
 *                  (t bit 7: its low 4 bits ignored)
 *   2 k            cancel the receive of slot k
 *   3 f k          a send of slot k to the peer (f & 1) in the AV: bit 1
 *                  tagged, bits 2-3 its size, bit 4 FI_DELIVERY_COMPLETE,
 *                  bit 5 FI_INJECT (its buffer freed on return), bit 6 CQ
 *                  data, bit 7 by fi_inject / fi_injectdata (no completion)
 *   4 c            peer c closes its connection
 *   5 c n16 bytes  the bytes (n as for 0) lie in the IVC ring of the c-th
 *                  peer the endpoint learnt of: the direct path for small
 *                  messages (ivf_direct_take/done) takes the frames it
 *                  takes from them, as if the channel confirmed each (c
 *                  bit 7: it refuses the first unexpected one, which is
 *                  given back, ivf_direct_undo); the rest is dropped (a
 *                  real ring leaves it to the parser, which operation 0
 *                  reaches)
 * After each, the endpoint progresses (fi_cq_read) until it has read all it
 * can and every completion is taken; at the end every peer closes its
 * connection.  A completion for an operation not pending, a receive longer
 * than its buffer, progress that never ends, a stream not read to its end
 * once closed, a receive left waiting for a closed peer and a descriptor
 * left open after fi_close abort.
 */
#include "ivf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCONN      2
#define NOPEN      6 /* connections an input may open, so peers at most */
#define NSLOT      8
#define MAX_ROUNDS 4096

static const size_t sizes[4] = {0, 24, 512, 3000};

/* An operation the harness posted; its address is the context. */
struct slot {
    bool busy, peek;
    size_t len;
    void *buf[2];
};

struct conn {
    int fd;      /* the peer's end, -1 when closed */
    int ep_fd;   /* the endpoint's end while it holds it, else -1 */
    size_t sent; /* the first IVF_HELLO_LEN bytes are the hello */
    bool deaf;   /* never reads what the endpoint sends */
};

/* A peer the endpoint learnt of, in the AV. */
struct out {
    struct ivf_peer *p;
    fi_addr_t fa;
};

static struct fi_info *info;
static struct {
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av *av;
    struct fid_cq *cq;
    struct fid_ep *ep;
    struct ivf_ep *iep;
    struct conn conn[NCONN];
    int opened;
    struct out out[NOPEN];
    int nout;
    struct slot rx[NSLOT], tx[NSLOT];
    int ep_fds[NOPEN + 1]; /* every descriptor the endpoint holds: closed by fi_close */
    int n_ep_fds;
} h;

/* The provider's connect() (linked with --wrap=connect): it reaches
 * nobody, so a fuzz input never makes a connection. */
int __wrap_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    errno = ENETUNREACH;
    return -1;
}

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        int r_ = (int)(x);                                                                         \
        if (r_ < 0) {                                                                              \
            fprintf(stderr, "fuzz_fi: %s: %s\n", #x, fi_strerror(-r_));                            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* libfabric.so brings libinfinipath, whose constructor catches SIGSEGV,
     * SIGABRT and others to print a backtrace and exit(): a crash would
     * look like an exit to libFuzzer (exit code 77) and to the corpus
     * driver.  Unless IPATH_NO_BACKTRACE was set before it ran: so once,
     * the harness starts itself again with it set. */
    if (!getenv("IPATH_NO_BACKTRACE")) {
        setenv("IPATH_NO_BACKTRACE", "1", 1);
        execv("/proc/self/exe", *argv);
        perror("fuzz_fi: starting again with IPATH_NO_BACKTRACE=1");
        abort();
    }
    /* What fi_prov_ini would make of FI_IVC_ENABLE=0 FI_IVC_IFACE=127.0.0.1
     * FI_IVC_EAGER_MAX=512 FI_IVC_CHUNK=256 FI_IVC_CREDIT=2048. */
    ivf_params = (struct ivf_params){.eager_max = 512,
                                     .tcp_eager_max = 512,
                                     .chunk = 256,
                                     .credit = 2048,
                                     .tx_max = 1u << 20,
                                     .ivc = 0,
                                     .iface = "127.0.0.1"};
    struct fi_info *hints = fi_allocinfo();
    if (!hints)
        abort();
    hints->caps = FI_TAGGED | FI_MSG | FI_DIRECTED_RECV | FI_SOURCE;
    hints->ep_attr->type = FI_EP_RDM;
    CHECK(ivf_prov.getinfo(IVF_FI_VERSION, NULL, NULL, 0, hints, &info));
    fi_freeinfo(hints);
    return 0;
}

/* ---- the operations' completions ---------------------------------------------------- */

static void slot_free(struct slot *s)
{
    free(s->buf[0]);
    free(s->buf[1]);
    *s = (struct slot){0};
}

static void completed(void *context, size_t len)
{
    if (!context)
        return; /* an inject that failed */
    struct slot *s = context;
    bool rx = s >= h.rx && s < h.rx + NSLOT, tx = s >= h.tx && s < h.tx + NSLOT;
    if ((!rx && !tx) || !s->busy) {
        fprintf(stderr, "fuzz_fi: a completion for an operation not pending (%p)\n", context);
        abort();
    }
    if (rx && !s->peek && len > s->len) {
        fprintf(stderr, "fuzz_fi: %zu bytes received into %zu\n", len, s->len);
        abort();
    }
    slot_free(s);
}

/* Read the CQ (each read progresses the endpoint) until it is empty. */
static void take_completions(void)
{
    for (int i = 0; i < MAX_ROUNDS; i++) {
        struct fi_cq_tagged_entry e[8];
        ssize_t n = fi_cq_read(h.cq, e, 8);
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry err = {0};
            if (fi_cq_readerr(h.cq, &err, 0) == 1)
                completed(err.op_context, err.len);
            continue;
        }
        if (n <= 0)
            return;
        for (ssize_t j = 0; j < n; j++)
            completed(e[j].op_context, e[j].len);
    }
}

/* ---- the peers' side of the connections --------------------------------------------- */

static bool ep_holds(int fd)
{
    for (size_t i = 0; i < h.iep->n_pending; i++)
        if (h.iep->pending_fds[i] == fd)
            return true;
    for (struct ivf_peer *p = h.iep->peers; p; p = p->next)
        if (p->fd_in == fd || p->fd_own == fd) /* rx.fd, tx.fd, fd_next are one of them */
            return true;
    return false;
}

/* Bytes the peers wrote that the endpoint has not read. */
static size_t unread(void)
{
    size_t n = 0;
    for (int c = 0; c < NCONN; c++) {
        struct conn *cn = &h.conn[c];
        if (cn->ep_fd >= 0 && !ep_holds(cn->ep_fd))
            cn->ep_fd = -1; /* closed by the endpoint */
        int q = 0;
        if (cn->ep_fd >= 0 && ioctl(cn->ep_fd, FIONREAD, &q) == 0)
            n += (size_t)q;
    }
    return n;
}

static void keep_ep_fd(int fd)
{
    if (h.n_ep_fds < (int)(sizeof(h.ep_fds) / sizeof(h.ep_fds[0])))
        h.ep_fds[h.n_ep_fds++] = fd;
}

/* A peer the endpoint just learnt of (from a hello): its address goes
 * into the AV, as the application would put it there. */
static void adopt_peers(void)
{
    for (struct ivf_peer *p = h.iep->peers; p; p = p->next) {
        bool known = false;
        for (int i = 0; i < h.nout && !known; i++)
            known = h.out[i].p == p;
        if (known)
            continue;
        if (h.nout == NOPEN) {
            fprintf(stderr, "fuzz_fi: a peer the harness cannot account for\n");
            abort();
        }
        struct out *o = &h.out[h.nout++];
        o->p = p;
        o->fa = FI_ADDR_NOTAVAIL;
        fi_av_insert(h.av, &p->addr, 1, &o->fa, 0, NULL);
    }
}

/* What the endpoint sent the peers that read. */
static void drain_out(void)
{
    static char sink[65536];
    for (int c = 0; c < NCONN; c++)
        while (h.conn[c].fd >= 0 && !h.conn[c].deaf &&
               recv(h.conn[c].fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
            ;
}

/* Progress until the endpoint reads nothing more; whether it read anything. */
static bool pump(void)
{
    size_t first = unread(), before = first;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        take_completions();
        drain_out();
        adopt_peers();
        size_t after = unread();
        if (after == 0 || after == before)
            return after < first;
        before = after;
    }
    fprintf(stderr, "fuzz_fi: the endpoint keeps reading without end\n");
    abort();
}

static bool conn_open(struct conn *cn, bool deaf)
{
    int sv[2];
    if (h.opened == NOPEN)
        return false;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    CHECK(ivf_conn_pending_add(h.iep, sv[1]));
    keep_ep_fd(sv[1]);
    h.opened++;
    cn->fd = sv[0];
    cn->ep_fd = sv[1];
    cn->sent = 0;
    cn->deaf = deaf;
    return true;
}

/* The hello goes alone, so that the peer it names is in the AV before the
 * endpoint reads anything of its stream. */
static void peer_write(struct conn *cn, bool deaf, const uint8_t *d, size_t n)
{
    if (cn->fd < 0 && !conn_open(cn, deaf))
        return;
    size_t off = 0;
    while (off < n) {
        size_t want = n - off;
        if (cn->sent < IVF_HELLO_LEN && want > IVF_HELLO_LEN - cn->sent)
            want = IVF_HELLO_LEN - cn->sent;
        ssize_t w = send(cn->fd, d + off, want, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return; /* the endpoint closed it */
        if (w > 0) {
            off += (size_t)w;
            cn->sent += (size_t)w;
        }
        if (!pump() && w <= 0)
            return; /* the endpoint reads no more of it: the rest is lost */
    }
}

static void peer_close(struct conn *cn)
{
    if (cn->fd >= 0)
        close(cn->fd);
    cn->fd = -1;
    pump();
}

/* ---- the application's side ---------------------------------------------------------- */

static void slot_bufs(struct slot *s, size_t len, bool two, struct iovec *iov, size_t *count)
{
    size_t first = two ? len / 2 : len;
    s->len = len;
    s->buf[0] = malloc(first);
    iov[0] = (struct iovec){s->buf[0], first};
    *count = 1;
    if (two) {
        s->buf[1] = malloc(len - first);
        iov[1] = (struct iovec){s->buf[1], len - first};
        *count = 2;
    }
    for (size_t i = 0; i < *count; i++)
        if (!iov[i].iov_base && iov[i].iov_len)
            abort();
}

static void post_recv(uint8_t f, uint8_t t, uint8_t k)
{
    static const uint64_t flag_sets[8] = {
        0, FI_PEEK, FI_PEEK | FI_CLAIM, FI_PEEK | FI_DISCARD, FI_CLAIM, FI_CLAIM | FI_DISCARD,
        0, 0};
    struct slot *s = &h.rx[k % NSLOT];
    if (s->busy)
        return;
    struct iovec iov[2];
    size_t count;
    slot_bufs(s, sizes[(f >> 1) & 3], f & 8, iov, &count);
    uint64_t flags = flag_sets[(f >> 4) & 7] | FI_COMPLETION;
    fi_addr_t src = f & 0x80 ? 0 : FI_ADDR_UNSPEC;
    ssize_t r;
    if (f & 1) {
        struct fi_msg_tagged m = {.msg_iov = iov,
                                  .iov_count = count,
                                  .addr = src,
                                  .tag = t,
                                  .ignore = t & 0x80 ? 0xf : 0,
                                  .context = s};
        r = fi_trecvmsg(h.ep, &m, flags);
    } else {
        struct fi_msg m = {.msg_iov = iov, .iov_count = count, .addr = src, .context = s};
        r = fi_recvmsg(h.ep, &m, flags);
    }
    if (r == 0) {
        s->busy = true;
        s->peek = flags & FI_PEEK;
    } else {
        slot_free(s);
    }
}

static void post_send(uint8_t f, uint8_t k)
{
    struct slot *s = &h.tx[k % NSLOT];
    if (s->busy)
        return;
    struct iovec iov[2];
    size_t count;
    slot_bufs(s, sizes[(f >> 2) & 3], false, iov, &count);
    memset(s->buf[0], 0xab, s->len);
    fi_addr_t dest = (f & 1) < h.nout ? h.out[f & 1].fa : 0;
    uint64_t flags = FI_COMPLETION | (f & 0x10 ? FI_DELIVERY_COMPLETE : 0) |
                     (f & 0x20 ? FI_INJECT : 0) | (f & 0x40 ? FI_REMOTE_CQ_DATA : 0);
    void *buf = s->buf[0];
    ssize_t r;
    if (f & 0x80) { /* no completion: not pending */
        if (f & 2)
            r = f & 0x40 ? fi_tinjectdata(h.ep, buf, s->len, f, dest, k)
                         : fi_tinject(h.ep, buf, s->len, dest, k);
        else
            r = f & 0x40 ? fi_injectdata(h.ep, buf, s->len, f, dest)
                         : fi_inject(h.ep, buf, s->len, dest);
        slot_free(s);
        return;
    }
    if (f & 2) {
        struct fi_msg_tagged m = {
            .msg_iov = iov, .iov_count = count, .addr = dest, .tag = k, .context = s, .data = f};
        r = fi_tsendmsg(h.ep, &m, flags);
    } else {
        struct fi_msg m = {
            .msg_iov = iov, .iov_count = count, .addr = dest, .context = s, .data = f};
        r = fi_sendmsg(h.ep, &m, flags);
    }
    if (r != 0) {
        slot_free(s);
        return;
    }
    s->busy = true;
    if (flags & FI_INJECT) { /* the buffer is the application's again */
        free(s->buf[0]);
        s->buf[0] = NULL;
    }
}

/* ---- one input ------------------------------------------------------------------------ */

static void open_endpoint(void)
{
    memset(&h, 0, sizeof(h));
    for (int c = 0; c < NCONN; c++)
        h.conn[c].fd = h.conn[c].ep_fd = -1;
    struct fi_av_attr av = {.type = FI_AV_TABLE};
    struct fi_cq_attr cq = {.format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_NONE};
    CHECK(ivf_prov.fabric(info->fabric_attr, &h.fabric, NULL));
    CHECK(fi_domain(h.fabric, info, &h.domain, NULL));
    CHECK(fi_av_open(h.domain, &av, &h.av, NULL));
    CHECK(fi_cq_open(h.domain, &cq, &h.cq, NULL));
    CHECK(fi_endpoint(h.domain, info, &h.ep, NULL));
    CHECK(fi_ep_bind(h.ep, &h.av->fid, 0));
    CHECK(fi_ep_bind(h.ep, &h.cq->fid, FI_TRANSMIT | FI_RECV));
    CHECK(fi_enable(h.ep));
    h.iep = (struct ivf_ep *)h.ep;
    keep_ep_fd(h.iep->listen_fd);
}

static bool posted(struct ivf_op *head, const void *context)
{
    struct ivf_op *op = head;
    if (op)
        do {
            if (op->context == context)
                return true;
            op = op->next;
        } while (op != head);
    return false;
}

/* Every peer closes its connection: the endpoint must read each stream to
 * its end, and a receive still pending must be one still posted (not one
 * waiting for the rest of a message that can no longer come). */
static void peers_gone(void)
{
    for (int c = 0; c < NCONN; c++)
        peer_close(&h.conn[c]);
    if (unread()) {
        fprintf(stderr, "fuzz_fi: the endpoint stopped reading a stream before its end\n");
        abort();
    }
    for (int i = 0; i < NSLOT; i++)
        if (h.rx[i].busy && !posted(h.iep->posted_tagged, &h.rx[i]) &&
            !posted(h.iep->posted_msg, &h.rx[i])) {
            fprintf(stderr, "fuzz_fi: receive %d waits for what a closed peer cannot send\n", i);
            abort();
        }
}

/* Everything closed through the provider's calls; not a descriptor left. */
static void close_endpoint(void)
{
    peers_gone();
    CHECK(fi_close(&h.ep->fid));
    CHECK(fi_close(&h.cq->fid));
    CHECK(fi_close(&h.av->fid));
    CHECK(fi_close(&h.domain->fid));
    CHECK(fi_close(&h.fabric->fid));
    for (int i = 0; i < NSLOT; i++) {
        slot_free(&h.rx[i]);
        slot_free(&h.tx[i]);
    }
    for (int i = 0; i < h.n_ep_fds; i++)
        if (fcntl(h.ep_fds[i], F_GETFD) >= 0) {
            fprintf(stderr, "fuzz_fi: descriptor %d still open after fi_close\n", h.ep_fds[i]);
            abort();
        }
}

/* Frames the direct path takes from n bytes of a peer's IVC ring, copied
 * to a buffer of their exact size (ASan sees a read past them). */
static void ring_bytes(int c, const uint8_t *d, size_t n)
{
    if (!h.nout)
        return;
    struct ivf_peer *p = h.out[c % h.nout].p;
    uint8_t *ring = malloc(n ? n : 1);
    if (!ring)
        abort();
    memcpy(ring, d, n);
    for (size_t off = 0; off < n && !p->failed;) {
        struct ivf_hdr hd;
        struct ivf_op *op;
        struct ivf_unexp *u;
        size_t k = ivf_direct_take(h.iep, p, ring + off, n - off, &hd, &op, &u);
        if (!k)
            break;
        if (k > n - off) {
            fprintf(stderr, "fuzz_fi: the direct path took %zu of %zu bytes\n", k, n - off);
            abort();
        }
        if ((c & 0x80) && u) { /* the channel says no: a record taken is given back */
            ivf_direct_undo(h.iep, u);
            break;
        }
        ivf_direct_done(h.iep, p, &hd, op, u);
        off += k;
    }
    free(ring);
    pump();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    open_endpoint();
    size_t i = 0;
    while (i < size) {
        uint8_t op = data[i++] % 6;
        uint8_t a = i < size ? data[i] : 0, b = i + 1 < size ? data[i + 1] : 0,
                c = i + 2 < size ? data[i + 2] : 0;
        switch (op) {
        case 0:
        case 5: {
            size_t n = (size_t)b | (size_t)c << 8;
            i += 3;
            if (i > size)
                i = size;
            if (n > size - i)
                n = size - i;
            if (op == 0)
                peer_write(&h.conn[a & 1], a & 2, data + i, n);
            else
                ring_bytes(a, data + i, n);
            i += n;
            break;
        }
        case 1:
            i += 3;
            post_recv(a, b, c);
            pump();
            break;
        case 2:
            i += 1;
            fi_cancel(&h.ep->fid, &h.rx[a % NSLOT]);
            pump();
            break;
        case 3:
            i += 2;
            post_send(a, b);
            pump();
            break;
        case 4:
            i += 1;
            peer_close(&h.conn[a & 1]);
            break;
        }
    }
    close_endpoint();
    return 0;
}
