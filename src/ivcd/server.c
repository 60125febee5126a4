/*
 * server.c - ivcd's side of QEMU's ivshmem-server protocol (see
 * ivshmem_proto.h and QEMU's docs/specs/ivshmem-spec.rst).
 *
 * Every connection to the job socket is a peer: a QEMU ivshmem-doorbell
 * device or a host process using libivc.  A peer gets the lowest free id,
 * `vectors` eventfds, the region's fd and everybody's eventfds; the others
 * learn about it, and learn that it left (its id without fd) when its
 * connection ends.  Peers never talk: a byte from one is a protocol error.
 *
 * Client sockets are non-blocking and the loop never waits for a peer: a
 * send that cannot complete marks the peer dead, and server_reap()
 * disconnects dead peers once the current event is handled (a disconnect
 * sends notices, which can mark more peers dead).  Disconnecting a peer
 * reclaims its endpoint slots in the region (region.c).
 */
#include "ivcd.h"
#include "ivshmem_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ACCEPT_BATCH    64   /* connections accepted per wakeup */
#define MSG_SNDBUF_COST 1024 /* kernel memory one queued message takes, roughly */
#define SNDBUF_MAX      (32 << 20)

static int reserve_fd = -1; /* kept free for accepting when out of descriptors */

/* ---- socket files -------------------------------------------------------- */

static int mkdir_parents(const char *path, struct ivcd_err *err)
{
    char buf[PATH_MAX];

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return ivcd_err_set(err, ENAMETOOLONG, "%s", path);
    for (char *p = buf + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = 0;
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return ivcd_err_set(err, errno, "creating directory %s", buf);
        *p = '/';
    }
    return 0;
}

static int fill_addr(struct sockaddr_un *sa, const char *path, struct ivcd_err *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return ivcd_err_set(err, ENAMETOOLONG, "socket path %s", path);
    memcpy(sa->sun_path, path, strlen(path));
    return 0;
}

int ivcd_clear_stale(const char *path, struct ivcd_err *err)
{
    struct sockaddr_un sa;
    struct stat st;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : ivcd_err_set(err, errno, "checking %s", path);
    if (!S_ISSOCK(st.st_mode))
        return ivcd_err_set(err, 0, "%s exists and is not a socket; not replacing it", path);
    if (fill_addr(&sa, path, err) < 0)
        return -1;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return ivcd_err_set(err, errno, "creating a socket");
    int r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(s);
    if (r == 0 || e == EAGAIN) /* EAGAIN: listening, backlog full */
        return ivcd_err_set(err, 0, "another ivcd is already serving %s", path);
    if (e != ECONNREFUSED)
        return ivcd_err_set(err, e, "probing the existing socket %s", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return ivcd_err_set(err, errno, "removing the stale socket %s", path);
    log_info("removed stale socket %s", path);
    return 0;
}

int ivcd_listen_unix(const char *path, mode_t mode, dev_t *dev, ino_t *ino, struct ivcd_err *err)
{
    struct sockaddr_un sa;
    struct stat st;

    if (fill_addr(&sa, path, err) < 0 || mkdir_parents(path, err) < 0 ||
        ivcd_clear_stale(path, err) < 0)
        return -1;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return ivcd_err_set(err, errno, "creating a socket");
    /* Create the file with the final permissions: no window where it is
     * more open than asked. */
    mode_t old = umask(~mode & 0777);
    int r = bind(s, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (r < 0) {
        close(s);
        return ivcd_err_set(err, e, "binding %s", path);
    }
    if (chmod(path, mode) < 0 || listen(s, SOMAXCONN) < 0 || stat(path, &st) < 0) {
        e = errno;
        close(s);
        unlink(path);
        return ivcd_err_set(err, e, "setting up %s", path);
    }
    *dev = st.st_dev;
    *ino = st.st_ino;
    return s;
}

void ivcd_unlink_ours(const char *path, dev_t dev, ino_t ino)
{
    struct stat st;

    if (lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino && unlink(path) < 0)
        log_warn("removing %s: %s", path, strerror(errno));
}

/* ---- peers --------------------------------------------------------------- */

/* Record why a peer must go (the first reason wins); server_reap() acts. */
static void __attribute__((format(printf, 3, 4)))
mark_dead(struct ivcd *d, struct ivcd_client *c, const char *fmt, ...)
{
    va_list ap;

    if (c->dead[0])
        return;
    d->ndead++;
    va_start(ap, fmt);
    vsnprintf(c->dead, sizeof(c->dead), fmt, ap);
    va_end(ap);
}

/* Send one message to a peer; on failure the peer is marked dead. */
static void client_send(struct ivcd *d, struct ivcd_client *c, int64_t value, int fd)
{
    if (c->dead[0])
        return;
    int r = ivshm_send(c->sock, value, fd);
    if (r == -EAGAIN)
        mark_dead(d, c, "is not reading its socket (send buffer full); disconnecting");
    else if (r == -EPIPE || r == -ECONNRESET)
        mark_dead(d, c, "disconnected");
    else if (r < 0)
        mark_dead(d, c, "is unreachable (send: %s); disconnecting", strerror(-r));
}

static bool client_active(const struct ivcd_client *c)
{
    return c->sock >= 0 && !c->dead[0];
}

/* Let the kernel queue the whole greeting of a new peer (one message per
 * vector of every peer) even if the peer reads it slowly. */
static void size_sndbuf(const struct ivcd *d, int sock)
{
    uint64_t need = ((uint64_t)d->cfg.max_peers * d->cfg.vectors + 16) * MSG_SNDBUF_COST;
    int cur = 0;
    socklen_t len = sizeof(cur);

    if (need > SNDBUF_MAX)
        need = SNDBUF_MAX;
    if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &cur, &len) == 0 && (uint64_t)cur >= need)
        return;
    int v = (int)need;
    if (setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0 &&
        setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) < 0)
        log_debug("enlarging a client's send buffer: %s", strerror(errno));
}

static void client_close_fds(struct ivcd_client *c)
{
    for (int v = 0; v < IVCD_MAX_VECTORS; v++)
        if (c->efd[v] >= 0) {
            close(c->efd[v]);
            c->efd[v] = -1;
        }
    if (c->sock >= 0) {
        close(c->sock);
        c->sock = -1;
    }
}

static void client_add(struct ivcd *d, int sock)
{
    const uint32_t nvec = d->cfg.vectors;
    struct ivcd_client *c = NULL;
    uint32_t id;

    for (id = 0; id < d->cfg.max_peers; id++)
        if (d->clients[id].sock < 0) {
            c = &d->clients[id];
            break;
        }
    if (!c) {
        log_warn("refusing a connection: all %u peer ids are in use (see --max-peers)",
                 d->cfg.max_peers);
        close(sock);
        return;
    }
    c->sock = sock;
    for (uint32_t v = 0; v < nvec; v++) {
        c->efd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->efd[v] < 0) {
            log_err("refusing a connection: creating its eventfds: %s", strerror(errno));
            client_close_fds(c);
            return;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = IVCD_EV(EV_CLIENT, id)};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, sock, &ev) < 0) {
        log_err("refusing a connection: watching it: %s", strerror(errno));
        client_close_fds(c);
        return;
    }
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    c->pid = getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 ? cred.pid : 0;
    size_sndbuf(d, sock);
    c->gen++;
    c->state = IVC_CLIENT_LIVE;
    d->nclients++;
    region_set_client(&d->region, (uint16_t)id, c->gen, IVC_CLIENT_LIVE, c->pid);
    log_info("client %u connected (pid %d)", id, (int)c->pid);

    client_send(d, c, IVSHMEM_PROTOCOL_VERSION, -1);
    client_send(d, c, id, -1);
    client_send(d, c, -1, d->region.fd);
    for (uint32_t o = 0; o < d->cfg.max_peers; o++)
        if (o != id && client_active(&d->clients[o]))
            for (uint32_t v = 0; v < nvec; v++)
                client_send(d, c, o, d->clients[o].efd[v]);
    for (uint32_t o = 0; o < d->cfg.max_peers; o++)
        if (o != id && client_active(&d->clients[o]))
            for (uint32_t v = 0; v < nvec; v++)
                client_send(d, &d->clients[o], id, c->efd[v]);
    for (uint32_t v = 0; v < nvec; v++)
        client_send(d, c, id, c->efd[v]);
}

static void client_disconnect(struct ivcd *d, uint32_t id)
{
    struct ivcd_client *c = &d->clients[id];

    log_info("client %u %s", id, c->dead);
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->sock, NULL);
    client_close_fds(c);
    c->dead[0] = 0;
    d->ndead--;
    c->pid = 0;
    c->gen++;
    c->state = IVC_CLIENT_FREE;
    d->nclients--;
    region_reclaim(&d->region, (uint16_t)id, ivcd_now_ms());
    region_set_client(&d->region, (uint16_t)id, c->gen, IVC_CLIENT_FREE, 0);
    for (uint32_t o = 0; o < d->cfg.max_peers; o++)
        if (client_active(&d->clients[o]))
            client_send(d, &d->clients[o], id, -1);
}

void server_reap(struct ivcd *d)
{
    while (d->ndead > 0)
        for (uint32_t id = 0; id < d->cfg.max_peers; id++)
            if (d->clients[id].sock >= 0 && d->clients[id].dead[0])
                client_disconnect(d, id);
}

void server_client_event(struct ivcd *d, uint32_t id, uint32_t events)
{
    char buf[64];

    if (id >= d->cfg.max_peers || !client_active(&d->clients[id]))
        return;
    struct ivcd_client *c = &d->clients[id];
    if (events & EPOLLIN) {
        /* recv() without room for control data also drops any fds sent. */
        ssize_t n = recv(c->sock, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            mark_dead(d, c, "sent unexpected data; disconnecting");
            return;
        }
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            mark_dead(d, c, "disconnected");
            return;
        }
        if (errno != EAGAIN && errno != EINTR) {
            mark_dead(d, c, "is unreachable (recv: %s); disconnecting", strerror(errno));
            return;
        }
    }
    if (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP))
        mark_dead(d, c, "disconnected");
}

int ivcd_accept(int listen_fd)
{
    for (;;) {
        int s = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s >= 0)
            return s;
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && reserve_fd >= 0) {
            /* Out of descriptors: take the connection with the reserve and
             * drop it, rather than have epoll report it forever. */
            log_warn("refusing a connection: %s", strerror(errno));
            close(reserve_fd);
            s = accept(listen_fd, NULL, NULL);
            if (s >= 0)
                close(s);
            reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            return -1;
        }
        if (errno != EAGAIN)
            log_warn("accepting a connection: %s", strerror(errno));
        return -1;
    }
}

void server_accept(struct ivcd *d)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int s = ivcd_accept(d->listen_fd);
        if (s < 0)
            return;
        client_add(d, s);
        server_reap(d);
    }
}

struct ivcd_client *server_peer(struct ivcd *d, uint32_t id)
{
    if (id >= d->cfg.max_peers || !client_active(&d->clients[id]))
        return NULL;
    return &d->clients[id];
}

void server_set_peer_state(struct ivcd *d, uint32_t id, enum ivc_client_state state)
{
    struct ivcd_client *c = &d->clients[id];

    c->state = state;
    region_set_client(&d->region, (uint16_t)id, c->gen, state, c->pid);
}

int server_init(struct ivcd *d, struct ivcd_err *err)
{
    d->clients = calloc(d->cfg.max_peers, sizeof(*d->clients));
    if (!d->clients)
        return ivcd_err_set(err, ENOMEM, "allocating the peer table");
    for (uint32_t id = 0; id < d->cfg.max_peers; id++) {
        d->clients[id].sock = -1;
        for (int v = 0; v < IVCD_MAX_VECTORS; v++)
            d->clients[id].efd[v] = -1;
    }
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    d->listen_fd =
        ivcd_listen_unix(d->cfg.socket_path, d->cfg.mode, &d->sock_dev, &d->sock_ino, err);
    if (d->listen_fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = IVCD_EV(EV_LISTEN, 0)};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->listen_fd, &ev) < 0)
        return ivcd_err_set(err, errno, "watching %s", d->cfg.socket_path);
    return 0;
}

void server_fini(struct ivcd *d)
{
    if (d->clients)
        for (uint32_t id = 0; id < d->cfg.max_peers; id++)
            client_close_fds(&d->clients[id]);
    free(d->clients);
    d->clients = NULL;
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        d->listen_fd = -1;
        ivcd_unlink_ours(d->cfg.socket_path, d->sock_dev, d->sock_ino);
    }
    if (reserve_fd >= 0) {
        close(reserve_fd);
        reserve_fd = -1;
    }
}
