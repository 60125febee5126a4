/*
 * link.c - the byte streams to and from each peer (see ivf.h): TCP
 * connections (one per direction, opened by the sender), frame queues,
 * the frame parser, and progress.
 */
#include "ivf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define HELLO_LEN (sizeof(struct ivf_hdr) + sizeof(struct ivf_addr))
#define OWN_MAX   (64u << 10) /* frames with payloads up to this are copied when queued */

/* ---- iovec helpers ---------------------------------------------------------------- */

/* Up to max iovecs describing `len` bytes of iov starting `off` in. */
static int iov_slice(const struct iovec *iov, size_t n, size_t off, size_t len, struct iovec *out,
                     int max)
{
    int k = 0;
    for (size_t i = 0; i < n && len && k < max; i++) {
        if (off >= iov[i].iov_len) {
            off -= iov[i].iov_len;
            continue;
        }
        size_t l = iov[i].iov_len - off;
        if (l > len)
            l = len;
        out[k].iov_base = (char *)iov[i].iov_base + off;
        out[k].iov_len = l;
        k++;
        len -= l;
        off = 0;
    }
    return k;
}

/* The copies in and out of an operation's buffers walk it as iov_slice
 * does (an operation has at most IVF_IOV_LIMIT pieces). */
size_t ivf_iov_to_buf(const struct iovec *iov, size_t n, size_t off, void *buf, size_t len)
{
    struct iovec v[IVF_IOV_LIMIT];
    int k = iov_slice(iov, n, off, len, v, IVF_IOV_LIMIT);
    size_t done = 0;
    for (int i = 0; i < k; i++) {
        memcpy((char *)buf + done, v[i].iov_base, v[i].iov_len);
        done += v[i].iov_len;
    }
    return done;
}

size_t ivf_buf_to_iov(const struct iovec *iov, size_t n, size_t off, const void *buf, size_t len)
{
    struct iovec v[IVF_IOV_LIMIT];
    int k = iov_slice(iov, n, off, len, v, IVF_IOV_LIMIT);
    size_t done = 0;
    for (int i = 0; i < k; i++) {
        memcpy(v[i].iov_base, (const char *)buf + done, v[i].iov_len);
        done += v[i].iov_len;
    }
    return done;
}

/* ---- setup -------------------------------------------------------------------------- */

/* The IPv4 address others reach us at: FI_IVC_IFACE (an address or an
 * interface name), else the first up, non-loopback interface, else
 * 127.0.0.1. */
static int local_ip(struct in_addr *out)
{
    const char *want = ivf_params.iface;
    if (want && inet_pton(AF_INET, want, out) == 1)
        return 0;
    struct ifaddrs *ifs, *i;
    if (getifaddrs(&ifs) < 0)
        return -FI_ENODEV;
    int found = 0;
    for (i = ifs; i && !found; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP))
            continue;
        if (want ? strcmp(i->ifa_name, want) != 0 : (i->ifa_flags & IFF_LOOPBACK) != 0)
            continue;
        *out = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        found = 1;
    }
    freeifaddrs(ifs);
    if (found)
        return 0;
    if (want) {
        IVF_WARN(FI_LOG_EP_CTRL, "FI_IVC_IFACE=%s: no such IPv4 address or interface\n", want);
        return -FI_ENODEV;
    }
    out->s_addr = htonl(INADDR_LOOPBACK);
    return 0;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int ivf_link_init(struct ivf_ep *ep)
{
    struct in_addr ip;
    int r = local_ip(&ip);
    if (r < 0)
        return r;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t sl = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    ep->listen_fd = fd;
    struct ivf_addr *a = &ep->addr;
    memset(a, 0, sizeof(*a));
    a->magic = IVF_ADDR_MAGIC;
    a->version = 1;
    a->port = sa.sin_port;
    a->ip[10] = a->ip[11] = 0xff;
    memcpy(a->ip + 12, &ip, 4);
    while (!a->uid)
        if (getrandom(&a->uid, sizeof(a->uid), 0) != sizeof(a->uid))
            a->uid = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uintptr_t)ep;
    ivf_ivc_init(ep);
    return 0;
}

static void txq_free(struct ivf_tx *tx)
{
    while (tx->head) {
        struct ivf_txf *f = tx->head;
        tx->head = f->next;
        free(f);
    }
    tx->tail = NULL;
    tx->queued = 0;
}

void ivf_link_fini(struct ivf_ep *ep)
{
    /* Try to get what is queued out (a last message, a CTS) for a moment. */
    for (int i = 0; i < 200; i++) {
        bool pending = false;
        for (struct ivf_peer *p = ep->peers; p; p = p->next)
            if (p->tx.head && !p->failed)
                pending = true;
        if (!pending)
            break;
        ivf_progress(ep);
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    while (ep->peers) {
        struct ivf_peer *p = ep->peers;
        ep->peers = p->next;
        char s[160];
        ivf_addr_str(&p->addr, s, sizeof(s));
        IVF_INFO(
            FI_LOG_EP_CTRL,
            "peer %s: sent %llu bytes by TCP, %llu by IVC; received %llu by TCP, %llu by IVC\n", s,
            (unsigned long long)p->bytes[0][IVF_TCP], (unsigned long long)p->bytes[0][IVF_IVC],
            (unsigned long long)p->bytes[1][IVF_TCP], (unsigned long long)p->bytes[1][IVF_IVC]);
        if (p->tx.fd >= 0)
            close(p->tx.fd);
        if (p->rx.fd >= 0)
            close(p->rx.fd);
        txq_free(&p->tx);
        ivf_peer_segs_free(p);
        free(p);
    }
    ivf_ivc_fini(ep);
    for (size_t i = 0; i < ep->n_pending; i++)
        close(ep->pending_fds[i]);
    free(ep->pending_fds);
    ep->pending_fds = NULL;
    ep->n_pending = ep->cap_pending = 0;
    if (ep->listen_fd >= 0)
        close(ep->listen_fd);
    ep->listen_fd = -1;
}

/* ---- peers ---------------------------------------------------------------------------- */

struct ivf_peer *ivf_peer_get(struct ivf_ep *ep, const struct ivf_addr *a)
{
    for (struct ivf_peer *p = ep->peers; p; p = p->next)
        if (p->addr.uid == a->uid)
            return p;
    struct ivf_peer *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->ep = ep;
    p->addr = *a;
    p->fi_addr = ivf_av_find(ep->av, a);
    p->tx.fd = -1;
    p->rx.fd = -1;
    p->credit = ivf_params.credit;
    p->next = ep->peers;
    ep->peers = p;
    if (ep->ivc && a->job == ep->addr.job) {
        ep->next_scan_ns = 0; /* is it on this host? look now */
        ep->next_slow_ns = 0;
    }
    return p;
}

/* The peer is gone (connection reset, stream corrupt): everything queued
 * or in flight with it fails. */
static void peer_fail(struct ivf_ep *ep, struct ivf_peer *p, int err, const char *why)
{
    if (p->failed)
        return;
    char s[160];
    ivf_addr_str(&p->addr, s, sizeof(s));
    IVF_WARN(FI_LOG_EP_DATA, "peer %s: %s\n", s, why);
    p->failed = err;
    /* Sends whose frames are still queued and that wait for nothing else. */
    for (struct ivf_txf *f = p->tx.head; f; f = f->next) {
        struct ivf_op *op = f->op;
        if (op && !op->next) {
            for (struct ivf_txf *g = f->next; g; g = g->next)
                if (g->op == op)
                    g->op = NULL;
            f->op = NULL;
            ivf_op_complete(ep, op, -err);
        }
    }
    txq_free(&p->tx);
    ivf_peer_segs_free(p);
    for (struct ivf_op *op = ep->active, *next; op; op = next) {
        next = op->next == ep->active ? NULL : op->next;
        if (op->peer == p) {
            ivf_op_list_del(&ep->active, op);
            ivf_op_complete(ep, op, -err);
        }
    }
    if (p->rx.fd >= 0) {
        close(p->rx.fd);
        p->rx.fd = -1;
    }
    if (p->tx.fd >= 0) {
        close(p->tx.fd);
        p->tx.fd = -1;
    }
    p->rx.dst_op = NULL;
}

/* ---- sending ----------------------------------------------------------------------------- */

static int tcp_connect(struct ivf_peer *p)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = p->addr.port};
    memcpy(&sa.sin_addr, p->addr.ip + 12, 4);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    p->tx.fd = fd;
    p->tx.connecting = true;
    return 0;
}

static struct ivf_txf *txf_new(const struct ivf_hdr *h, size_t own)
{
    struct ivf_txf *f = calloc(1, sizeof(*f) + own);
    if (f)
        f->hdr = *h;
    return f;
}

static void txq_push(struct ivf_tx *tx, struct ivf_txf *f)
{
    if (tx->tail)
        tx->tail->next = f;
    else
        tx->head = f;
    tx->tail = f;
    tx->queued += sizeof(f->hdr) + f->hdr.len;
}

/* The stream starts on a TCP connection whose first frame says who we are. */
static int tx_start(struct ivf_ep *ep, struct ivf_peer *p)
{
    if (p->failed)
        return p->failed;
    if (p->tx.fd < 0) {
        int r = tcp_connect(p);
        if (r < 0) {
            peer_fail(ep, p, -FI_ECONNREFUSED, "cannot connect");
            return -FI_ECONNREFUSED;
        }
        struct ivf_hdr hh = {.type = IVF_HELLO, .len = sizeof(struct ivf_addr)};
        struct ivf_txf *hf = txf_new(&hh, sizeof(struct ivf_addr));
        if (!hf)
            return -FI_ENOMEM;
        memcpy(hf->own, &ep->addr, sizeof(ep->addr));
        hf->own_iov = (struct iovec){hf->own, sizeof(ep->addr)};
        hf->iov = &hf->own_iov;
        hf->iov_count = 1;
        txq_push(&p->tx, hf);
    }
    return 0;
}

int ivf_send_flush(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                   struct ivf_seg *seg)
{
    int r = tx_start(ep, p);
    if (r < 0)
        return r;
    struct ivf_txf *f = txf_new(h, 0);
    if (!f)
        return -FI_ENOMEM;
    f->seg = seg;
    txq_push(&p->tx, f);
    return 0;
}

int ivf_send_frame(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                   const struct iovec *iov, size_t iov_count, size_t skip, bool copy,
                   struct ivf_op *op)
{
    int r = tx_start(ep, p);
    if (r < 0)
        return r;
    bool own = copy && h->len <= OWN_MAX;
    struct ivf_txf *f = txf_new(h, own ? h->len : 0);
    if (!f)
        return -FI_ENOMEM;
    if (own) {
        ivf_iov_to_buf(iov, iov_count, skip, f->own, h->len);
        f->own_iov = (struct iovec){f->own, h->len};
        f->iov = &f->own_iov;
        f->iov_count = 1;
    } else {
        f->iov = iov;
        f->iov_count = iov_count;
        f->iov_skip = skip;
    }
    f->op = op;
    txq_push(&p->tx, f);
    return 0;
}

/* A frame is out: account for it. */
static void frame_sent(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_txf *f)
{
    if (f->hdr.type == IVF_FLUSH && f->seg && !f->seg->dead) {
        p->tx.to = IVF_IVC; /* the rest of the stream goes through the channel */
        p->tx.seg = f->seg;
        return;
    }
    struct ivf_op *op = f->op;
    if (!op)
        return;
    op->done += f->hdr.len;
    if (op->done < op->len && f->hdr.type != IVF_RTS)
        return;
    if (f->hdr.type == IVF_RTS)
        return; /* waits for CTS */
    op->data_sent = true;
    if (op->wait_ack && !op->acked)
        return;
    ivf_op_list_del(&ep->active, op);
    ivf_op_complete(ep, op, 0);
}

/* Write v[0..n) to the stream's carrier; how many bytes went, or <0 if
 * the TCP connection broke.  A channel that dies moves the stream back to
 * TCP: what it took reaches the peer (read or handed back), the rest goes
 * by TCP. */
static ssize_t tx_write(struct ivf_ep *ep, struct ivf_peer *p, struct iovec *v, int n)
{
    struct ivf_tx *tx = &p->tx;
    if (tx->to == IVF_IVC) {
        struct ivf_seg *seg = tx->seg;
        if (seg && !seg->dead && seg->chan) {
            /* One write: the header and a small payload appear together. */
            ssize_t w = ivc_writev(seg->chan, v, n);
            if (w >= 0) {
                p->bytes[0][IVF_IVC] += (size_t)w;
                return w;
            }
            seg->dead = true;
        }
        tx->to = IVF_TCP;
        tx->seg = NULL;
    }
    struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(tx->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) {
        p->bytes[0][IVF_TCP] += (size_t)w;
        return w;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    peer_fail(ep, p, -FI_ECONNRESET, strerror(errno));
    return -1;
}

int ivf_send_now(struct ivf_ep *ep, struct ivf_peer *p, const struct ivf_hdr *h,
                 const struct iovec *iov, size_t iov_count)
{
    struct ivf_tx *tx = &p->tx;
    struct ivf_seg *seg = tx->seg;
    size_t total = sizeof(*h) + h->len;
    if (tx->head || tx->to != IVF_IVC || !seg || seg->dead || !seg->chan || p->failed)
        return 0;
    struct ivf_hdr hdr = *h;
    struct iovec v[1 + IVF_IOV_LIMIT] = {{&hdr, sizeof(hdr)}};
    int n = 1 + iov_slice(iov, iov_count, 0, h->len, v + 1, IVF_IOV_LIMIT);
    ssize_t w = tx_write(ep, p, v, n);
    if (w == (ssize_t)total)
        return 1;
    if (w < 0)
        return -1;
    if (w == 0 && tx->to == IVF_IVC)
        return 0; /* no room (or quiescing): the caller queues the frame */
    /* Part of it went (the ring filled up), or the channel died under us
     * and the rest goes by TCP: the rest from a copy, after it. */
    struct ivf_txf *f = txf_new(h, h->len);
    if (!f) {
        peer_fail(ep, p, -FI_ENOMEM, "out of memory");
        return -1;
    }
    ivf_iov_to_buf(iov, iov_count, 0, f->own, h->len);
    f->own_iov = (struct iovec){f->own, h->len};
    f->iov = &f->own_iov;
    f->iov_count = 1;
    f->sent = (size_t)w;
    txq_push(tx, f);
    tx->queued -= (size_t)w;
    return 1;
}

/* Write queued frames until the carrier would take no more. */
static void tx_flush(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_tx *tx = &p->tx;
    if (tx->fd < 0)
        return;
    if (tx->connecting) {
        struct pollfd pf = {.fd = tx->fd, .events = POLLOUT};
        if (poll(&pf, 1, 0) <= 0)
            return;
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(tx->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            peer_fail(ep, p, -FI_ECONNREFUSED, strerror(err));
            return;
        }
        tx->connecting = false;
    }
    while (tx->head) {
        struct ivf_txf *f = tx->head;
        struct iovec v[1 + IVF_IOV_LIMIT];
        size_t total = sizeof(f->hdr) + f->hdr.len;
        int n = 0;
        if (f->sent < sizeof(f->hdr)) {
            v[n].iov_base = (char *)&f->hdr + f->sent;
            v[n].iov_len = sizeof(f->hdr) - f->sent;
            n++;
        }
        size_t poff = f->sent > sizeof(f->hdr) ? f->sent - sizeof(f->hdr) : 0;
        n += iov_slice(f->iov, f->iov_count, f->iov_skip + poff, f->hdr.len - poff, v + n,
                       IVF_IOV_LIMIT);
        ssize_t w = tx_write(ep, p, v, n);
        if (w < 0)
            return;
        f->sent += (size_t)w;
        tx->queued -= (size_t)w;
        if (f->sent < total)
            return;
        tx->head = f->next;
        if (!tx->head)
            tx->tail = NULL;
        frame_sent(ep, p, f);
        free(f);
    }
}

/* ---- receiving -------------------------------------------------------------------------- */

/* Read into v[0..k) from the peer's stream; 0: nothing now; <0: broken
 * (the connection is closed, and the peer failed if anything was expected
 * of it). */
static ssize_t rx_readv(struct ivf_ep *ep, struct ivf_peer *p, struct iovec *v, int k)
{
    struct ivf_rx *rx = &p->rx;
    if (rx->from == IVF_IVC) {
        size_t done = 0;
        for (int i = 0; i < k; i++) {
            ssize_t n = ivf_seg_read(rx->seg, v[i].iov_base, v[i].iov_len);
            if (n < 0) {
                /* The channel's part of the stream is over: TCP again. */
                ivf_seg_release(p, rx->seg);
                if (done)
                    return (ssize_t)done;
                return rx_readv(ep, p, v, k);
            }
            done += (size_t)n;
            p->bytes[1][IVF_IVC] += (size_t)n;
            if ((size_t)n < v[i].iov_len)
                break;
        }
        return (ssize_t)done;
    }
    if (rx->fd < 0)
        return -1;
    ssize_t n = readv(rx->fd, v, k);
    if (n > 0) {
        p->bytes[1][IVF_TCP] += (size_t)n;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    /* EOF or error.  An EOF between frames is the peer closing its
     * endpoint: only what is still expected from it fails. */
    int e = n < 0 ? errno : 0;
    bool mid = rx->hdr_got || rx->payload_left;
    bool waiting = false;
    for (struct ivf_op *op = ep->active; op && !waiting;
         op = op->next == ep->active ? NULL : op->next)
        waiting = op->peer == p;
    close(rx->fd);
    rx->fd = -1;
    if (mid || waiting)
        peer_fail(ep, p, -FI_ECONNRESET, e ? strerror(e) : "connection closed");
    return -1;
}

static ssize_t rx_read(struct ivf_ep *ep, struct ivf_peer *p, void *buf, size_t len)
{
    struct iovec v = {buf, len};
    return rx_readv(ep, p, &v, 1);
}

static void rx_frame_done(struct ivf_ep *ep, struct ivf_peer *p);

/* Where the current frame's payload goes. */
static ssize_t rx_payload(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    char sink[16384];
    while (rx->payload_left) {
        ssize_t n;
        if (rx->dst_op) {
            struct ivf_op *op = rx->dst_op;
            size_t room = op->len > rx->dst_off ? op->len - rx->dst_off : 0;
            if (room) {
                struct iovec v[IVF_IOV_LIMIT];
                size_t want = rx->payload_left < room ? rx->payload_left : room;
                int k = iov_slice(op->iov, op->iov_count, rx->dst_off, want, v, IVF_IOV_LIMIT);
                if ((n = rx_readv(ep, p, v, k)) <= 0)
                    return n;
                rx->dst_off += (size_t)n;
                op->done += (size_t)n;
                rx->payload_left -= (size_t)n;
                continue;
            }
        } else if (rx->dst_unexp) {
            struct ivf_unexp *u = rx->dst_unexp;
            n = rx_read(ep, p, (char *)u->buf + u->got, rx->payload_left);
            if (n <= 0)
                return n;
            u->got += (size_t)n;
            rx->payload_left -= (size_t)n;
            continue;
        }
        /* No room (truncation) or nobody wants it: drop. */
        n = rx_read(ep, p, sink, rx->payload_left < sizeof(sink) ? rx->payload_left : sizeof(sink));
        if (n <= 0)
            return n;
        rx->payload_left -= (size_t)n;
    }
    return 1;
}

static struct ivf_op *find_active(struct ivf_ep *ep, uint64_t id, enum ivf_op_kind kind)
{
    struct ivf_op *op = ep->active;
    if (!op)
        return NULL;
    do {
        if (op->id == id && op->kind == kind)
            return op;
        op = op->next;
    } while (op != ep->active);
    return NULL;
}

void ivf_credit_return(struct ivf_ep *ep, struct ivf_peer *p, size_t len)
{
    p->credit_owed += len;
    if (p->credit_owed < ivf_params.credit / 4 || p->failed)
        return;
    struct ivf_hdr h = {.type = IVF_CREDIT, .data = p->credit_owed};
    if (ivf_send_frame(ep, p, &h, NULL, 0, 0, true, NULL) == 0)
        p->credit_owed = 0;
}

void ivf_send_ack(struct ivf_ep *ep, struct ivf_peer *p, uint64_t remote_id)
{
    struct ivf_hdr h = {.type = IVF_ACK, .id = remote_id};
    ivf_send_frame(ep, p, &h, NULL, 0, 0, true, NULL);
}

/* A header was read: act on it.  Returns 0 to go on, -FI_EAGAIN to stall
 * (keep the header, retry later), -1 on a broken stream. */
static int rx_header(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    struct ivf_hdr *h = &rx->hdr;
    rx->dst_op = NULL;
    rx->dst_unexp = NULL;
    rx->dst_off = 0;
    rx->payload_left = 0;
    switch (h->type) {
    case IVF_EAGER:
    case IVF_RTS: {
        if (h->type == IVF_RTS && h->len) {
            peer_fail(ep, p, -FI_EIO, "RTS with a payload");
            return -1;
        }
        int r = ivf_incoming(ep, p, h);
        if (r < 0)
            return r;
        rx->payload_left = h->len;
        return 0;
    }
    case IVF_CTS: {
        struct ivf_op *op = find_active(ep, h->id, IVF_OP_SEND);
        if (!op || op->peer != p || h->len) {
            peer_fail(ep, p, -FI_EIO, "CTS for an unknown send");
            return -1;
        }
        size_t want = h->size < op->len ? h->size : op->len;
        if (want == 0) { /* discarded, or a 0-byte receive buffer */
            op->data_sent = true;
            ivf_op_list_del(&ep->active, op);
            ivf_op_complete(ep, op, 0);
            return 0;
        }
        op->len = want; /* frame_sent() completes it when `want` bytes are out */
        for (size_t off = 0; off < want; off += ivf_params.chunk) {
            size_t n = want - off < ivf_params.chunk ? want - off : ivf_params.chunk;
            struct ivf_hdr d = {.type = IVF_DATA, .len = (uint32_t)n, .id = h->data, .size = off};
            if (ivf_send_frame(ep, p, &d, op->iov, op->iov_count, off, false, op) < 0)
                return -1;
        }
        return 0;
    }
    case IVF_DATA: {
        struct ivf_op *op = find_active(ep, h->id, IVF_OP_RECV);
        if (!op || op->peer != p || h->size != op->done) {
            peer_fail(ep, p, -FI_EIO, "DATA for an unknown receive or out of order");
            return -1;
        }
        rx->dst_op = op;
        rx->dst_off = (size_t)h->size;
        rx->payload_left = h->len;
        return 0;
    }
    case IVF_FLUSH: {
        /* The sender continues on the IVC channel this names. */
        if (h->len) {
            peer_fail(ep, p, -FI_EIO, "FLUSH with a payload");
            return -1;
        }
        int err;
        struct ivf_seg *seg = ivf_seg_for_flush(ep, p, h->id, &err);
        if (!seg && !err) {
            ivf_ivc_progress(ep); /* an accepted channel's hello may be waiting */
            seg = ivf_seg_for_flush(ep, p, h->id, &err);
        }
        if (err) {
            peer_fail(ep, p, -FI_EIO, "FLUSH names a channel without a valid hello");
            return -1;
        }
        if (!seg)
            return -FI_EAGAIN; /* not set up on our side yet: the stream waits */
        rx->from = IVF_IVC;
        rx->seg = seg;
        return 0;
    }
    case IVF_CREDIT:
        if (h->len || h->data > ivf_params.credit - p->credit) {
            peer_fail(ep, p, -FI_EIO, "CREDIT beyond what was sent");
            return -1;
        }
        p->credit += (size_t)h->data;
        return 0;
    case IVF_ACK: {
        struct ivf_op *op = find_active(ep, h->id, IVF_OP_SEND);
        if (!op || op->peer != p) {
            peer_fail(ep, p, -FI_EIO, "ACK for an unknown send");
            return -1;
        }
        op->acked = true;
        if (op->data_sent) {
            ivf_op_list_del(&ep->active, op);
            ivf_op_complete(ep, op, 0);
        }
        return 0;
    }
    default: {
        char why[160];
        snprintf(
            why, sizeof(why), "unknown frame type %u (len %u) read from %s, after %llu+%llu bytes",
            h->type, h->len, rx->from == IVF_IVC ? "IVC" : "TCP",
            (unsigned long long)p->bytes[1][IVF_TCP], (unsigned long long)p->bytes[1][IVF_IVC]);
        peer_fail(ep, p, -FI_EIO, why);
        return -1;
    }
    }
}

/* The frame's payload is all in. */
static void rx_frame_done(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    struct ivf_hdr *h = &rx->hdr;
    if (h->type == IVF_EAGER) {
        if (rx->dst_unexp) {
            ivf_unexp_ready(ep, rx->dst_unexp);
        } else if (rx->dst_op) {
            struct ivf_op *op = rx->dst_op;
            ivf_op_list_del(&ep->active, op);
            ivf_credit_return(ep, p, h->len);
            if (h->flags & IVF_F_ACK)
                ivf_send_ack(ep, p, h->id);
            ivf_op_complete(ep, op, op->msg_len > op->len ? FI_ETRUNC : 0);
        }
    } else if (h->type == IVF_DATA && rx->dst_op) {
        struct ivf_op *op = rx->dst_op;
        size_t want = op->msg_len < op->len ? op->msg_len : op->len;
        if (op->done >= want) {
            ivf_op_list_del(&ep->active, op);
            if (op->wire_flags & IVF_F_ACK)
                ivf_send_ack(ep, p, op->remote_id);
            ivf_op_complete(ep, op, op->msg_len > op->len ? FI_ETRUNC : 0);
        }
    }
    rx->dst_op = NULL;
    rx->dst_unexp = NULL;
    rx->hdr_got = 0;
}

static void rx_pump(struct ivf_ep *ep, struct ivf_peer *p)
{
    struct ivf_rx *rx = &p->rx;
    for (int frames = 0; frames < 64 && (rx->fd >= 0 || rx->from == IVF_IVC) && !p->failed;
         frames++) {
        if (rx->hdr_got < sizeof(rx->hdr)) {
            ssize_t n =
                rx_read(ep, p, (char *)&rx->hdr + rx->hdr_got, sizeof(rx->hdr) - rx->hdr_got);
            if (n <= 0)
                return;
            rx->hdr_got += (size_t)n;
            if (rx->hdr_got < sizeof(rx->hdr))
                return;
            rx->stalled = false;
            if (rx_header(ep, p) < 0) {
                rx->stalled = !p->failed;
                return;
            }
        } else if (rx->stalled) {
            /* A header waits for room in the unexpected buffer. */
            if (rx_header(ep, p) < 0)
                return;
            rx->stalled = false;
        }
        if (rx_payload(ep, p) <= 0)
            return;
        rx_frame_done(ep, p);
    }
}

/* ---- accepting ------------------------------------------------------------------------------ */

static void accept_new(struct ivf_ep *ep)
{
    for (;;) {
        int fd = accept4(ep->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        set_nodelay(fd);
        if (ep->n_pending == ep->cap_pending) {
            size_t cap = ep->cap_pending ? ep->cap_pending * 2 : 16;
            int *n = realloc(ep->pending_fds, cap * sizeof(*n));
            if (!n) {
                close(fd);
                return;
            }
            ep->pending_fds = n;
            ep->cap_pending = cap;
        }
        ep->pending_fds[ep->n_pending++] = fd;
    }
}

/* A new connection's first frame says who is talking. */
static void read_hellos(struct ivf_ep *ep)
{
    for (size_t i = 0; i < ep->n_pending;) {
        int fd = ep->pending_fds[i];
        uint8_t buf[HELLO_LEN];
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            i++;
            continue;
        }
        if (n > 0 && (size_t)n < sizeof(buf)) {
            i++;
            continue;
        }
        ep->pending_fds[i] = ep->pending_fds[--ep->n_pending];
        struct ivf_hdr h;
        struct ivf_addr a;
        memcpy(&h, buf, sizeof(h));
        memcpy(&a, buf + sizeof(h), sizeof(a));
        if (n <= 0 || h.type != IVF_HELLO || h.len != sizeof(a) || !ivf_addr_valid(&a) ||
            recv(fd, buf, sizeof(buf), MSG_DONTWAIT) != (ssize_t)sizeof(buf)) {
            if (n > 0)
                IVF_WARN(FI_LOG_EP_CTRL, "a connection that is not from an ivc endpoint: closed\n");
            close(fd);
            continue;
        }
        struct ivf_peer *p = ivf_peer_get(ep, &a);
        if (!p || p->rx.fd >= 0) {
            IVF_WARN(FI_LOG_EP_CTRL, "a second connection from one peer: closed\n");
            close(fd);
            continue;
        }
        p->rx.fd = fd;
    }
}

/* ---- progress ---------------------------------------------------------------------------------
 */

void ivf_progress(struct ivf_ep *ep)
{
    if (!ep->enabled)
        return;
    /* New connections and channels are looked for every millisecond (an
     * accept4() and a scan of the region per call would cost more than
     * an IVC message; the clock is read every 64 calls), and at once while
     * some are being set up. */
    bool due = ep->n_pending || ep->pending_segs || ep->ivc_setup || ep->next_slow_ns == 0;
    if (!due && ++ep->calls % 64 == 0) { /* the clock is not free either (17% of a ping-pong) */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        due = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec >= ep->next_slow_ns;
    }
    if (due) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ep->next_slow_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + 1000000;
        accept_new(ep);
        if (ep->n_pending)
            read_hellos(ep);
        ivf_ivc_progress(ep);
    }
    for (struct ivf_peer *p = ep->peers; p; p = p->next) {
        if (p->failed)
            continue;
        if (p->tx.head)
            tx_flush(ep, p);
        if (p->rx.fd >= 0 || p->rx.from == IVF_IVC)
            rx_pump(ep, p);
        /* What reading queued (CTS, DATA, ACK, CREDIT) leaves now, not
         * at the next call: the peer may be waiting for it. */
        if (p->tx.head && !p->failed)
            tx_flush(ep, p);
    }
}

void ivf_domain_progress(struct ivf_domain *dom)
{
    for (struct ivf_ep *ep = dom->eps; ep; ep = ep->next)
        ivf_progress(ep);
}

void ivf_domain_wait(struct ivf_domain *dom, int timeout_ms)
{
    struct pollfd fds[256];
    nfds_t n = 0;
    bool spin = false;
    for (struct ivf_ep *ep = dom->eps; ep && n < 256; ep = ep->next) {
        if (!ep->enabled)
            continue;
        spin |= ep->ivc_busy;
        fds[n++] = (struct pollfd){.fd = ep->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < ep->n_pending && n < 256; i++)
            fds[n++] = (struct pollfd){.fd = ep->pending_fds[i], .events = POLLIN};
        for (struct ivf_peer *p = ep->peers; p && n < 256; p = p->next) {
            if (p->rx.fd >= 0)
                fds[n++] = (struct pollfd){.fd = p->rx.fd, .events = POLLIN};
            if (p->tx.fd >= 0 && p->tx.head)
                fds[n++] = (struct pollfd){.fd = p->tx.fd, .events = POLLOUT};
        }
    }
    ivf_unlock(dom);
    if (spin) { /* shared memory wakes no file descriptor: look again soon */
        poll(fds, n, 0);
        nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
    } else {
        poll(fds, n, timeout_ms);
    }
    ivf_lock(dom);
}
