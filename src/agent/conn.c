/*
 * conn.c - connections of the agent: the virtio-serial port to the host,
 * accepted TCP (vhpc-rsh) and UNIX (tests) clients.  Reads frames, hands them
 * to session.c, and queues what goes back; a connection's output is a
 * non-blocking byte queue written when the peer takes it.
 *
 * The port is special: it is a character device that stays open while the
 * host side comes and goes.  With the host away, read() returns 0 and poll()
 * reports POLLHUP without end, so the port is then probed every 50 ms
 * instead of polled; the host's return is seen as a read that no longer
 * returns 0, and is greeted with HELLO.
 */
#include "agent.h"
#include "sha256.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (256u << 10)

struct conn *conn_new(enum conn_kind kind, int fd, const char *name)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        agent_log("out of memory for connection %s", name);
        return NULL;
    }
    c->kind = kind;
    c->fd = fd;
    c->host_present = fd >= 0;
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->next = agent.conns;
    agent.conns = c;
    return c;
}

void conn_complain(struct conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (c->complaints++ >= 5) {
        if (c->complaints == 6)
            agent_log("%s: more bad input, not logged", c->name);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    agent_log("%s: %s", c->name, msg);
}

bool conn_can_send(const struct conn *c)
{
    return !c->dead && c->fd >= 0 && c->host_present && agent_buf_pending(&c->out) < AGENT_BACKLOG;
}

bool conn_input_blocked(const struct conn *c)
{
    size_t queued = 0;
    for (struct session *s = c->sessions; s; s = s->next)
        queued += agent_buf_pending(&s->stdin_q);
    return queued > AGENT_BACKLOG;
}

uint8_t *conn_frame(struct conn *c, uint32_t type, uint32_t session, uint32_t len)
{
    if (c->dead || c->fd < 0 || !c->host_present)
        return NULL;
    uint8_t *p = agent_buf_frame(&c->out, type, session, len);
    if (!p)
        agent_log("%s: out of memory, frame dropped", c->name);
    return p;
}

void conn_send_hello(struct conn *c)
{
    uint32_t len = 4 + 4 + (uint32_t)strlen(agent.kernel) + 4 + (uint32_t)strlen(agent.hostname);
    uint8_t *p = conn_frame(c, AGENT_HELLO, 0, len);
    if (p) {
        p = agent_wr_u32(p, AGENT_PROTO_VERSION);
        p = agent_wr_str(p, agent.kernel);
        agent_wr_str(p, agent.hostname);
    }
}

/* Drop everything of the connection's current peer: its commands are
 * killed, queued bytes both ways discarded. */
static void reset(struct conn *c)
{
    while (c->sessions)
        session_free(c->sessions, true);
    agent_buf_free(&c->in);
    agent_buf_free(&c->out);
}

void conn_end(struct conn *c, const char *why)
{
    if (c->dead)
        return;
    agent_debug("%s: %s", c->name, why);
    reset(c);
    if (c->kind == CONN_STREAM) {
        close(c->fd);
        c->fd = -1;
        c->dead = true;
        return;
    }
    /* The port: reopen it (which also discards what the kernel buffered),
     * then skip to the next frame.  A port handed over as a descriptor
     * cannot be reopened: it is probed like a port whose host went away. */
    c->resync = true;
    if (agent.port_path && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        conn_port_try_open();
    } else {
        c->host_present = false;
    }
}

/* The host side of the port went away (read returned 0). */
static void port_host_gone(struct conn *c)
{
    if (c->host_present)
        agent_debug("port: host side closed");
    reset(c);
    c->host_present = false;
}

static void port_host_back(struct conn *c)
{
    agent_debug("port: host side connected");
    c->host_present = true;
    c->complaints = 0;
    conn_send_hello(c);
}

/* Open the port: agent.port_path, or where no udev made that link (a
 * minimal image has none), the /dev/vportNpM whose sysfs name is the
 * link's last component. */
static int open_port(void)
{
    const int flags = O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
    int fd = open(agent.port_path, flags);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    const char *name = strrchr(agent.port_path, '/');
    name = name ? name + 1 : agent.port_path;
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], buf[256];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
        int nfd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = nfd >= 0 ? read(nfd, buf, sizeof(buf) - 1) : -1;
        if (nfd >= 0)
            close(nfd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        if (strcmp(buf, name) == 0) {
            snprintf(path, sizeof(path), "/dev/%s", e->d_name);
            fd = open(path, flags);
            break;
        }
    }
    if (d)
        closedir(d);
    if (fd < 0)
        errno = ENOENT;
    return fd;
}

void conn_port_try_open(void)
{
    struct conn *c = agent.port;
    if (!c || c->fd >= 0 || !agent.port_path)
        return;
    int fd = open_port();
    if (fd < 0) {
        if (!agent.port_warned && agent_now_ms() - agent.port_wait_from > 10000) {
            agent_log("%s did not appear in 10 s (%s); still waiting", agent.port_path,
                      strerror(errno));
            agent.port_warned = true;
        }
        return;
    }
    agent_debug("port %s open", agent.port_path);
    c->fd = fd;
    c->host_present = true; /* until a read says otherwise */
    conn_send_hello(c);
}

/* Random bytes for a nonce; never blocks (an early-boot guest may not have
 * seeded its generator yet: the nonce needs to be fresh, not secret). */
static void random_bytes(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, GRND_NONBLOCK);
        if (r < 0)
            r = getrandom(p + got, n - got, 0x0004 /* GRND_INSECURE */);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    for (uint64_t t = agent_now_ms(); got < n; got++) /* only if both failed */
        p[got] ^= (uint8_t)(t >> (8 * (got % 8))) ^ (uint8_t)getpid();
}

static void auth_mac(const char *who, size_t who_len, const uint8_t *nonce_a,
                     const uint8_t *nonce_c, uint8_t out[AGENT_MAC_LEN])
{
    struct vhpc_iov parts[] = {
        {who, who_len}, {nonce_a, AGENT_NONCE_LEN}, {nonce_c, AGENT_NONCE_LEN}};
    vhpc_hmac_sha256(agent.key, AGENT_KEY_LEN, parts, 3, out);
}

/* A TCP client's first frame must be a correct AUTH; anything else ends it. */
static void authenticate(struct conn *c, const struct agent_hdr *h, const uint8_t *p)
{
    uint8_t want[AGENT_MAC_LEN], ours[AGENT_MAC_LEN];
    if (h->type != AGENT_AUTH || h->len != AGENT_NONCE_LEN + AGENT_MAC_LEN) {
        agent_log("%s: refused: frame of type %u before authenticating", c->name, h->type);
        conn_end(c, "not authenticated");
        return;
    }
    auth_mac(AGENT_MAC_CLIENT, sizeof(AGENT_MAC_CLIENT), c->nonce, p, want);
    if (!vhpc_mem_equal(want, p + AGENT_NONCE_LEN, AGENT_MAC_LEN)) {
        agent_log("%s: refused: wrong key (authentication failed)", c->name);
        conn_end(c, "authentication failed");
        return;
    }
    c->authed = true;
    auth_mac(AGENT_MAC_AGENT, sizeof(AGENT_MAC_AGENT), c->nonce, p, ours);
    uint8_t *q = conn_frame(c, AGENT_AUTH_OK, 0, AGENT_MAC_LEN);
    if (q)
        memcpy(q, ours, AGENT_MAC_LEN);
    agent_debug("%s: authenticated", c->name);
    conn_send_hello(c);
}

/* Keep the key where vhpc-rsh reads it: a 0600 file, replaced whole. */
static int store_key(void)
{
    char dir[256], tmp[300];
    snprintf(dir, sizeof(dir), "%s", agent.key_file);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return -errno;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", agent.key_file);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    ssize_t w = write(fd, agent.key, AGENT_KEY_LEN);
    int e = w == AGENT_KEY_LEN ? 0 : w < 0 ? errno : EIO;
    if (close(fd) < 0 && !e)
        e = errno;
    if (!e && rename(tmp, agent.key_file) < 0)
        e = errno;
    if (e)
        unlink(tmp);
    return -e;
}

static void take_key(struct conn *c, const struct agent_hdr *h, const uint8_t *p)
{
    if (c->tcp) {
        agent_log("%s: KEY over TCP refused", c->name);
        conn_end(c, "KEY over TCP");
        return;
    }
    if (h->len != AGENT_KEY_LEN) {
        conn_complain(c, "malformed KEY (%u bytes) ignored", h->len);
        return;
    }
    if (!agent.have_key || memcmp(agent.key, p, AGENT_KEY_LEN) != 0) {
        memcpy(agent.key, p, AGENT_KEY_LEN);
        agent.have_key = true;
        int r = store_key();
        if (r < 0)
            agent_log("storing the job key in %s: %s (vhpc-rsh will not work)", agent.key_file,
                      strerror(-r));
        else
            agent_debug("job key stored in %s", agent.key_file);
    }
    conn_frame(c, AGENT_KEY_OK, h->session, 0);
}

static void dispatch(struct conn *c, const struct agent_hdr *h, const uint8_t *p)
{
    struct agent_rd r = {p, h->len, false};
    if (c->tcp && !c->authed) {
        authenticate(c, h, p);
        return;
    }
    switch (h->type) {
    case AGENT_KEY: take_key(c, h, p); break;
    case AGENT_EXEC: session_exec(c, h->session, p, h->len); break;
    case AGENT_STDIN: session_stdin(c, h->session, p, h->len); break;
    case AGENT_SIGNAL: session_signal(c, h->session, p, h->len); break;
    case AGENT_PUT_FILE:
    case AGENT_FILE_DATA:
    case AGENT_FILE_END: session_put(c, h->session, h->type, p, h->len); break;
    case AGENT_GET_FILE: session_get(c, h->session, p, h->len); break;
    case AGENT_SHUTDOWN: {
        uint32_t kind = agent_rd_u32(&r);
        if (r.bad || (kind != AGENT_SHUTDOWN_POWEROFF && kind != AGENT_SHUTDOWN_REBOOT)) {
            conn_complain(c, "malformed SHUTDOWN ignored");
            break;
        }
        agent_log("%s: shutdown requested", c->name);
        agent.stopping = true;
        agent.host_shutdown = true;
        agent.shutdown_kind = (int)kind;
        break;
    }
    case AGENT_PING: {
        uint64_t cookie = agent_rd_u64(&r);
        if (r.bad) {
            conn_complain(c, "malformed PING ignored");
            break;
        }
        /* PING 0 on the port: a host (re)connected, maybe so quickly that
         * no read saw it gone.  What the last one started is killed, so
         * its session numbers are free again. */
        if (cookie == 0 && c->kind == CONN_PORT && c->sessions) {
            agent_debug("port: a new host connection");
            while (c->sessions)
                session_free(c->sessions, true);
        }
        uint8_t *q = conn_frame(c, AGENT_PONG, h->session, 8);
        if (q)
            agent_wr_u64(q, cookie);
        if (cookie == 0)
            conn_send_hello(c);
        break;
    }
    case AGENT_PONG: break;
    default: conn_complain(c, "frame of type %u (%u bytes) ignored", h->type, h->len); break;
    }
}

/* Skip input up to the next AGENT_MAGIC; true once found. */
static bool resync(struct conn *c)
{
    uint8_t m[4];
    agent_put_u32(m, AGENT_MAGIC);
    size_t avail = agent_buf_pending(&c->in);
    const uint8_t *p = c->in.data + c->in.head;
    for (size_t i = 0; i + 4 <= avail; i++) {
        if (memcmp(p + i, m, 4) == 0) {
            if (i)
                conn_complain(c, "skipped %zu bytes to the next frame", i);
            agent_buf_consume(&c->in, i);
            c->resync = false;
            return true;
        }
    }
    if (avail > 3)
        agent_buf_consume(&c->in, avail - 3);
    return false;
}

static void parse(struct conn *c)
{
    while (!c->dead && c->fd >= 0) {
        if (c->resync && !resync(c))
            return;
        size_t avail = agent_buf_pending(&c->in);
        const uint8_t *p = c->in.data + c->in.head;
        struct agent_hdr h;
        if (avail < AGENT_HDR_SIZE)
            return;
        if (!agent_hdr_get(p, &h)) {
            conn_complain(c, "%s (magic %08x, length %u): out of step, connection reset",
                          h.magic != AGENT_MAGIC ? "bad magic" : "frame too long", h.magic, h.len);
            conn_end(c, "protocol error");
            return;
        }
        if (avail < AGENT_HDR_SIZE + (size_t)h.len)
            return;
        dispatch(c, &h, p + AGENT_HDR_SIZE);
        if (c->fd >= 0 && !c->dead && c->in.data)
            agent_buf_consume(&c->in, AGENT_HDR_SIZE + (size_t)h.len);
    }
}

/* Read what the peer sent, at most a few chunks per round so one busy
 * connection does not starve the others. */
void conn_on_readable(struct conn *c)
{
    for (int round = 0; round < 4 && !c->dead && c->fd >= 0; round++) {
        if (conn_input_blocked(c))
            return;
        uint8_t *p = agent_buf_reserve(&c->in, READ_CHUNK);
        if (!p) {
            agent_log("%s: out of memory", c->name);
            return;
        }
        ssize_t n = read(c->fd, p, READ_CHUNK);
        if (n > 0) {
            c->in.len += (size_t)n;
            parse(c);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (c->kind == CONN_PORT && n == 0) {
            port_host_gone(c);
            return;
        }
        conn_end(c, n == 0 ? "closed by the peer" : strerror(errno));
        return;
    }
}

void conn_flush(struct conn *c)
{
    while (c->fd >= 0 && !c->dead && agent_buf_pending(&c->out)) {
        ssize_t n = write(c->fd, c->out.data + c->out.head, agent_buf_pending(&c->out));
        if (n > 0) {
            agent_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_end(c, n < 0 ? strerror(errno) : "write returned 0");
        return;
    }
}

/* Open a port that is not open yet; see whether the host side came back. */
void conn_port_probe(void)
{
    static uint64_t last;
    struct conn *c = agent.port;
    uint64_t now = agent_now_ms();
    if ((c->fd >= 0 && c->host_present) || now - last < 50)
        return;
    last = now;
    if (c->fd < 0) {
        conn_port_try_open();
        return;
    }
    uint8_t *p = agent_buf_reserve(&c->in, READ_CHUNK);
    if (!p)
        return;
    ssize_t n = read(c->fd, p, READ_CHUNK);
    if (n == 0)
        return; /* still away */
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        conn_end(c, strerror(errno));
        return;
    }
    port_host_back(c);
    if (n > 0) {
        c->in.len += (size_t)n;
        parse(c);
    }
}

void conn_accept(int lfd, bool tcp)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char name[80] = "unix";
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR)
            agent_log("accept: %s", strerror(errno));
        return;
    }
    if (tcp) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int port = 0, one = 1;
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        }
        snprintf(name, sizeof(name), "tcp %s:%d", ip, port);
        if (!agent.tcp_any && !net_peer_allowed(&ss)) {
            agent_log("%s: refused (not on a local subnet)", name);
            close(fd);
            return;
        }
        if (!agent.have_key) {
            agent_log("%s: refused (no job key from the host yet)", name);
            close(fd);
            return;
        }
        unsigned waiting = 0;
        for (struct conn *o = agent.conns; o; o = o->next)
            waiting += o->tcp && !o->authed && !o->dead;
        if (waiting >= AGENT_MAX_UNAUTH) {
            agent_log("%s: refused (%u connections already waiting to authenticate)", name,
                      waiting);
            close(fd);
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* A client VM that vanished: its commands are killed within ~15 s. */
        int idle = 5, intvl = 2, cnt = 3;
        unsigned user_timeout = 15000;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
    }
    struct conn *c = conn_new(CONN_STREAM, fd, name);
    if (!c) {
        close(fd);
        return;
    }
    agent_debug("%s: connected", name);
    if (!tcp) {
        conn_send_hello(c);
        return;
    }
    c->tcp = true;
    c->opened_ms = agent_now_ms();
    random_bytes(c->nonce, sizeof(c->nonce));
    uint8_t *q = conn_frame(c, AGENT_CHALLENGE, 0, 4 + AGENT_NONCE_LEN);
    if (q)
        memcpy(agent_wr_u32(q, AGENT_PROTO_VERSION), c->nonce, AGENT_NONCE_LEN);
}

int conns_expire(void)
{
    int timeout = -1;
    uint64_t now = agent_now_ms();
    for (struct conn *c = agent.conns; c; c = c->next) {
        if (!c->tcp || c->authed || c->dead)
            continue;
        if (now - c->opened_ms >= AGENT_AUTH_MS) {
            agent_log("%s: no AUTH within %d ms, closed", c->name, AGENT_AUTH_MS);
            conn_end(c, "authentication timed out");
            continue;
        }
        int left = (int)(c->opened_ms + AGENT_AUTH_MS - now);
        if (timeout < 0 || left < timeout)
            timeout = left;
    }
    return timeout;
}
