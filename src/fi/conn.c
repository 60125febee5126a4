/*
 * conn.c - peers and their TCP connections: the endpoint's listen socket
 * and the address it publishes, connecting to a peer, accepting
 * connections and reading the HELLO that names who is talking, and the
 * peer records themselves.  Which connection carries what is stream.c's.
 */
#include "ivf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

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

int ivf_src_addr(const char *node, const char *service, struct ivf_addr *a)
{
    struct in_addr ip = {0};
    long port = 0;
    if (service) {
        char *end;
        port = strtol(service, &end, 10);
        if (!*service || *end || port < 0 || port > 65535)
            return -FI_EINVAL; /* a port number: we have no service names */
    }
    if (node) { /* else 0.0.0.0: every address (the endpoint names its own) */
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(node, NULL, &hints, &res) != 0)
            return -FI_ENODATA;
        ip = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    ivf_addr_v4(a, &ip, htons((uint16_t)port));
    return 0;
}

/* The IPv4 address and port of a source address (fi_info's src_addr):
 * -FI_EINVAL when it is none of ours or not IPv4. */
static int src_ipv4(const struct ivf_ep *ep, struct in_addr *ip, uint16_t *port)
{
    const struct fi_info *fi = ep->info;
    const struct ivf_addr *a = fi ? fi->src_addr : NULL;
    if (!a || fi->src_addrlen != sizeof(*a) || a->magic != IVF_ADDR_MAGIC || !ivf_addr_is_v4(a))
        return -FI_EINVAL;
    memcpy(ip, a->ip + 12, 4);
    *port = a->port;
    return 0;
}

int ivf_conn_init(struct ivf_ep *ep)
{
    struct in_addr ip, bind_ip = {htonl(INADDR_ANY)};
    uint16_t port = 0;
    int r;
    if (ep->info && ep->info->src_addr) { /* given in the hints or by fi_getinfo */
        if ((r = src_ipv4(ep, &ip, &port)) < 0)
            return r;
        if (ip.s_addr != htonl(INADDR_ANY))
            bind_ip = ip; /* only that address */
        else if ((r = local_ip(&ip)) < 0)
            return r;
    } else if ((r = local_ip(&ip)) < 0) {
        return r;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = port, .sin_addr = bind_ip};
    socklen_t sl = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    ep->listen_fd = fd;
    struct ivf_addr *a = &ep->addr;
    ivf_addr_v4(a, &ip, sa.sin_port);
    while (!a->uid)
        if (getrandom(&a->uid, sizeof(a->uid), 0) != sizeof(a->uid))
            a->uid = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uintptr_t)ep;
    return 0;
}

void ivf_conn_fini(struct ivf_ep *ep)
{
    for (size_t i = 0; i < ep->n_pending; i++)
        close(ep->pending_fds[i]);
    free(ep->pending_fds);
    ep->pending_fds = NULL;
    ep->n_pending = ep->cap_pending = 0;
    if (ep->listen_fd >= 0)
        close(ep->listen_fd);
    ep->listen_fd = -1;
}

int ivf_tcp_connect(struct ivf_peer *p)
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
    p->fd_own = p->tx.fd = fd;
    p->tx.connecting = true;
    if (p->rx.fd < 0)
        p->rx.fd = fd; /* it answers on ours, unless it opens its own */
    return 0;
}

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
    p->tx.fd = p->rx.fd = p->rx.fd_next = -1;
    p->fd_own = p->fd_in = -1;
    p->credit = ivf_params.credit;
    p->next = ep->peers;
    ep->peers = p;
    if (ep->ivc && a->job == ep->addr.job) {
        ep->next_scan_ns = 0; /* is it on this host? look now */
        ep->next_slow_ns = 0;
    }
    return p;
}

struct ivf_peer *ivf_peer_at(struct ivf_ep *ep, fi_addr_t fi_addr, const struct ivf_addr *a)
{
    if (fi_addr < ep->n_peer_at) {
        struct ivf_peer *p = ep->peer_at[fi_addr];
        if (p && p->addr.uid == a->uid) /* the AV entry may have been replaced */
            return p;
    }
    struct ivf_peer *p = ivf_peer_get(ep, a);
    if (!p || fi_addr >= ((size_t)1 << 24))
        return p;
    if (fi_addr >= ep->n_peer_at) {
        size_t n = ep->n_peer_at ? ep->n_peer_at : 16;
        while (n <= fi_addr)
            n *= 2;
        struct ivf_peer **t = realloc(ep->peer_at, n * sizeof(*t));
        if (!t)
            return p; /* found all the same, only not remembered */
        memset(t + ep->n_peer_at, 0, (n - ep->n_peer_at) * sizeof(*t));
        ep->peer_at = t;
        ep->n_peer_at = n;
    }
    ep->peer_at[fi_addr] = p;
    return p;
}

int ivf_conn_pending_add(struct ivf_ep *ep, int fd)
{
    if (ep->n_pending == ep->cap_pending) {
        size_t cap = ep->cap_pending ? ep->cap_pending * 2 : 16;
        int *n = realloc(ep->pending_fds, cap * sizeof(*n));
        if (!n)
            return -FI_ENOMEM;
        ep->pending_fds = n;
        ep->cap_pending = cap;
    }
    ep->pending_fds[ep->n_pending++] = fd;
    return 0;
}

static void accept_new(struct ivf_ep *ep)
{
    for (;;) {
        int fd = accept4(ep->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        set_nodelay(fd);
        if (ivf_conn_pending_add(ep, fd) < 0) {
            close(fd);
            return;
        }
    }
}

/* Has the other end of fd closed (shut down its writing)? */
static bool closed_by_peer(int fd)
{
    struct pollfd pf = {.fd = fd, .events = POLLRDHUP};
    return poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* A new connection's first frame says who is talking.  Part of one waits
 * for the rest, unless the peer has closed (peeking never sees that end).
 * The first whole and good one's peer (the connection in *fd), or NULL. */
static struct ivf_peer *read_hellos(struct ivf_ep *ep, int *fd_out)
{
    for (size_t i = 0; i < ep->n_pending;) {
        int fd = ep->pending_fds[i];
        uint8_t buf[IVF_HELLO_LEN];
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            i++;
            continue;
        }
        bool whole = n == (ssize_t)sizeof(buf);
        if (n > 0 && !whole && !closed_by_peer(fd)) {
            i++;
            continue;
        }
        ep->pending_fds[i] = ep->pending_fds[--ep->n_pending];
        struct ivf_hdr h;
        struct ivf_addr a;
        const char *bad = n <= 0   ? "closed"
                          : !whole ? "a short hello"
                                   : ivf_hello_check(buf, IVF_HELLO, &h, &a);
        if (bad || recv(fd, buf, sizeof(buf), MSG_DONTWAIT) != (ssize_t)sizeof(buf)) {
            if (n > 0)
                IVF_WARN(FI_LOG_EP_CTRL, "a connection with %s: closed\n",
                         bad ? bad : "a short hello");
            close(fd);
            continue;
        }
        /* A failed peer's stream is never read again: it gets no new one;
         * nor does a peer that opened one already. */
        /* Nor does one that claims to be us: we never connect to ourselves. */
        struct ivf_peer *p = a.uid == ep->addr.uid ? NULL : ivf_peer_get(ep, &a);
        if (!p || p->accepted || p->failed) {
            IVF_WARN(FI_LOG_EP_CTRL, "a connection from %s: closed\n",
                     a.uid == ep->addr.uid ? "a peer that claims to be us"
                     : !p                  ? "a peer we have no memory for"
                     : p->failed           ? "a failed peer"
                                           : "a peer connected already");
            close(fd);
            continue;
        }
        p->accepted = true;
        *fd_out = fd;
        return p;
    }
    return NULL;
}

struct ivf_peer *ivf_conn_accept(struct ivf_ep *ep, int *fd)
{
    accept_new(ep);
    return ep->n_pending ? read_hellos(ep, fd) : NULL;
}
