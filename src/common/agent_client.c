/*
 * agent_client.c - see agent_client.h.  One non-blocking stream socket, a
 * queue of frames going out (written whenever the socket takes them) and an
 * input buffer cut into frames, each turned into one event.
 */
#include "agent_client.h"
#include "clock.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK   (256u << 10)
#define CLIENT_CHUNK (64u << 10) /* STDIN and FILE_DATA frames we send */
#define BACKLOG      (1u << 20)  /* queued output above which helpers stop reading input */

struct agent_client {
    int fd;
    char name[128];
    struct agent_buf in, out;
    size_t consume; /* bytes of the last event's frame, released by the next step */
    uint32_t next_session;
    bool closed;
    bool synced; /* past the first PONG 0: frames are for us (see agent_proto.h) */
    bool have_hello;
    struct agent_hello hello;
};

#define NO_DEADLINE UINT64_MAX

static uint64_t deadline_in(int timeout_ms)
{
    return timeout_ms < 0 ? NO_DEADLINE : vhpc_now_ms() + (uint64_t)timeout_ms;
}

/* Milliseconds left until `deadline`, for poll(): -1 for ever. */
static int left_ms(uint64_t deadline)
{
    if (deadline == NO_DEADLINE)
        return -1;
    uint64_t now = vhpc_now_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

int agent_client_open_fd(int fd, const char *name, agent_client_t **out, vhpc_err_t *err)
{
    agent_client_t *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return vhpc_err_set(err, -ENOMEM, "agent at %s", name);
    }
    c->fd = fd;
    c->next_session = 1;
    c->synced = true; /* a fresh stream; agent_client_connect() says otherwise */
    snprintf(c->name, sizeof(c->name), "%s", name);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int r = vhpc_err_set(err, -errno, "agent at %s", name);
        agent_client_close(c);
        return r;
    }
    *out = c;
    return 0;
}

int agent_client_connect(const char *path, int timeout_ms, agent_client_t **out, vhpc_err_t *err)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    uint64_t deadline = deadline_in(timeout_ms);
    if (strlen(path) >= sizeof(a.sun_path))
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "agent socket path too long: %s", path);
    strcpy(a.sun_path, path);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return vhpc_err_set(err, -errno, "connecting to the agent at %s", path);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            /* QEMU's chardev may still hold the tail of what the agent sent
             * to an earlier connection: skip to the PONG 0. */
            int r = agent_client_open_fd(fd, path, out, err);
            if (r == 0)
                (*out)->synced = false;
            return r;
        }
        int e = errno;
        close(fd);
        if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || left_ms(deadline) == 0)
            return vhpc_err_set(err, -e, "connecting to the agent at %s", path);
        usleep(20000);
    }
}

void agent_client_close(agent_client_t *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    agent_buf_free(&c->in);
    agent_buf_free(&c->out);
    free(c);
}

int agent_client_fd(const agent_client_t *c)
{
    return c->fd;
}

short agent_client_poll_events(const agent_client_t *c)
{
    return (short)(POLLIN | (agent_buf_pending(&c->out) ? POLLOUT : 0));
}

size_t agent_client_pending(const agent_client_t *c)
{
    return agent_buf_pending(&c->out);
}

const struct agent_hello *agent_client_hello(const agent_client_t *c)
{
    return c->have_hello ? &c->hello : NULL;
}

/* Mark the connection unusable and describe why. */
static int broken(agent_client_t *c, vhpc_err_t *err, int code, const char *what)
{
    c->closed = true;
    return vhpc_err_setmsg(err, code, "agent at %s: %s", c->name, what);
}

/* Queue a frame; *p gets its `len` payload bytes to fill. */
static int frame(agent_client_t *c, uint32_t type, uint32_t session, size_t len, uint8_t **p,
                 vhpc_err_t *err)
{
    if (c->closed)
        return broken(c, err, -EPIPE, "connection closed");
    if (len > AGENT_MAX_PAYLOAD)
        return vhpc_err_setmsg(err, -E2BIG, "agent at %s: request of %zu bytes is over the limit",
                               c->name, len);
    *p = agent_buf_frame(&c->out, type, session, (uint32_t)len);
    if (!*p)
        return vhpc_err_set(err, -ENOMEM, "agent at %s", c->name);
    return 0;
}

/* Write what the socket takes now. */
static int flush(agent_client_t *c, vhpc_err_t *err)
{
    while (agent_buf_pending(&c->out)) {
        ssize_t n =
            send(c->fd, c->out.data + c->out.head, agent_buf_pending(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            agent_buf_consume(&c->out, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return 0;
        } else {
            int e = n < 0 ? errno : EIO;
            c->closed = true;
            return vhpc_err_set(err, -e, "agent at %s: sending", c->name);
        }
    }
    return 0;
}

static uint32_t new_session(agent_client_t *c)
{
    uint32_t id = c->next_session++;
    if (c->next_session == 0)
        c->next_session = 1;
    return id;
}

static size_t strv_size(const char *const *v, uint32_t *count)
{
    size_t n = 0;
    *count = 0;
    for (; v && v[*count]; (*count)++)
        n += 4 + strlen(v[*count]);
    return n;
}

int agent_client_exec(agent_client_t *c, const struct agent_exec_req *req, uint32_t *session,
                      vhpc_err_t *err)
{
    uint32_t argc, envc;
    const char *cwd = req->cwd ? req->cwd : "";
    size_t len = 12 + strv_size(req->argv, &argc) + strv_size(req->env, &envc) + 4 + strlen(cwd);
    if (argc == 0)
        return vhpc_err_setmsg(err, -EINVAL, "agent at %s: no command given", c->name);
    uint32_t id = new_session(c);
    uint8_t *p;
    int r = frame(c, AGENT_EXEC, id, len, &p, err);
    if (r < 0)
        return r;
    p = agent_wr_u32(p, req->flags);
    p = agent_wr_u32(p, argc);
    p = agent_wr_u32(p, envc);
    for (uint32_t i = 0; i < argc; i++)
        p = agent_wr_str(p, req->argv[i]);
    for (uint32_t i = 0; i < envc; i++)
        p = agent_wr_str(p, req->env[i]);
    agent_wr_str(p, cwd);
    *session = id;
    return flush(c, err);
}

int agent_client_send_stdin(agent_client_t *c, uint32_t session, const void *buf, size_t len,
                            vhpc_err_t *err)
{
    const uint8_t *b = buf;
    do {
        size_t n = len < CLIENT_CHUNK ? len : CLIENT_CHUNK;
        uint8_t *p;
        int r = frame(c, AGENT_STDIN, session, n, &p, err);
        if (r < 0)
            return r;
        if (n)
            memcpy(p, b, n);
        b += n;
        len -= n;
    } while (len);
    return flush(c, err);
}

int agent_client_signal(agent_client_t *c, uint32_t session, int sig, vhpc_err_t *err)
{
    uint8_t *p;
    int r = frame(c, AGENT_SIGNAL, session, 4, &p, err);
    if (r < 0)
        return r;
    agent_wr_u32(p, (uint32_t)sig);
    return flush(c, err);
}

static int send_ping(agent_client_t *c, uint64_t cookie, vhpc_err_t *err)
{
    uint8_t *p;
    int r = frame(c, AGENT_PING, 0, 8, &p, err);
    if (r < 0)
        return r;
    agent_wr_u64(p, cookie);
    return flush(c, err);
}

/* Block until everything queued is sent, or the deadline. */
static int drain(agent_client_t *c, uint64_t deadline, vhpc_err_t *err)
{
    while (agent_buf_pending(&c->out)) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        int r = poll(&p, 1, left_ms(deadline));
        if (r == 0)
            return vhpc_err_setmsg(err, -ETIMEDOUT, "agent at %s: not reading", c->name);
        if (r < 0 && errno != EINTR)
            return vhpc_err_set(err, -errno, "agent at %s: poll", c->name);
        if ((r = flush(c, err)) < 0)
            return r;
    }
    return 0;
}

int agent_client_shutdown(agent_client_t *c, int kind, vhpc_err_t *err)
{
    uint8_t *p;
    int r = frame(c, AGENT_SHUTDOWN, 0, 4, &p, err);
    if (r < 0)
        return r;
    agent_wr_u32(p, (uint32_t)kind);
    return drain(c, deadline_in(1000), err);
}

/* Copy a wire string into a fixed buffer (truncating). */
static void copy_str(struct agent_rd *r, char *dst, size_t size)
{
    uint32_t n;
    const char *s = agent_rd_str(r, &n);
    if (!s)
        n = 0;
    if (n >= size)
        n = (uint32_t)size - 1;
    memcpy(dst, s ? s : "", n);
    dst[n] = 0;
}

/* Turn the complete frame at the head of the input into *ev: 1, or 0 when
 * the frame is not complete yet (or was one to skip), or an error. */
static int parse_one(agent_client_t *c, struct agent_event *ev, vhpc_err_t *err)
{
    size_t avail = agent_buf_pending(&c->in);
    struct agent_hdr h;
    char what[96];
    if (avail < AGENT_HDR_SIZE)
        return 0; /* also before the first read, while c->in.data is NULL */
    const uint8_t *p = c->in.data + c->in.head;
    if (!agent_hdr_get(p, &h)) {
        if (!c->synced) {
            c->consume = 1; /* a stale partial frame: look for the next magic */
            return 0;
        }
        snprintf(what, sizeof(what), "bad frame (magic %08x, length %u)", h.magic, h.len);
        return broken(c, err, -EPROTO, what);
    }
    if (avail < AGENT_HDR_SIZE + (size_t)h.len)
        return 0;
    c->consume = AGENT_HDR_SIZE + (size_t)h.len;
    struct agent_rd r = {p + AGENT_HDR_SIZE, h.len, false};
    if (!c->synced) {
        if (h.type != AGENT_PONG || h.len != 8 || agent_rd_u64(&r) != 0)
            return 0; /* for an earlier connection */
        c->synced = true;
        r = (struct agent_rd){p + AGENT_HDR_SIZE, h.len, false};
    }
    memset(ev, 0, sizeof(*ev));
    ev->session = h.session;
    switch (h.type) {
    case AGENT_HELLO:
        ev->type = AGENT_EV_HELLO;
        c->hello.version = agent_rd_u32(&r);
        copy_str(&r, c->hello.kernel, sizeof(c->hello.kernel));
        copy_str(&r, c->hello.hostname, sizeof(c->hello.hostname));
        c->have_hello = !r.bad;
        break;
    case AGENT_STARTED:
        ev->type = AGENT_EV_STARTED;
        ev->pid = (int)agent_rd_u32(&r);
        break;
    case AGENT_EXEC_FAILED:
        ev->type = AGENT_EV_EXEC_FAILED;
        ev->err = (int)agent_rd_u32(&r);
        copy_str(&r, ev->msg, sizeof(ev->msg));
        break;
    case AGENT_STDOUT:
    case AGENT_STDERR:
    case AGENT_FILE_DATA:
        ev->type = h.type == AGENT_STDOUT   ? AGENT_EV_STDOUT
                   : h.type == AGENT_STDERR ? AGENT_EV_STDERR
                                            : AGENT_EV_FILE_DATA;
        ev->data = r.p;
        ev->len = h.len;
        break;
    case AGENT_EXIT:
        ev->type = AGENT_EV_EXIT;
        ev->exit_kind = (int)agent_rd_u32(&r);
        ev->exit_value = (int)agent_rd_u32(&r);
        ev->status = ev->exit_kind == AGENT_EXIT_SIGNAL ? 128 + ev->exit_value : ev->exit_value;
        break;
    case AGENT_PUT_DONE:
    case AGENT_FILE_END:
        ev->type = h.type == AGENT_PUT_DONE ? AGENT_EV_PUT_DONE : AGENT_EV_FILE_END;
        ev->err = (int)agent_rd_u32(&r);
        break;
    case AGENT_PONG:
        ev->type = AGENT_EV_PONG;
        ev->cookie = agent_rd_u64(&r);
        break;
    case AGENT_KEY_OK:
        ev->type = AGENT_EV_KEY_OK;
        r.bad = h.len != 0;
        break;
    case AGENT_CHALLENGE:
        ev->type = AGENT_EV_CHALLENGE;
        ev->err = (int)agent_rd_u32(&r); /* the agent's protocol version */
        ev->data = r.p;
        ev->len = r.left;
        r.bad = r.bad || r.left != AGENT_NONCE_LEN;
        break;
    case AGENT_AUTH_OK:
        ev->type = AGENT_EV_AUTH_OK;
        ev->data = r.p;
        ev->len = h.len;
        r.bad = h.len != AGENT_MAC_LEN;
        break;
    default: return 0; /* not for the host (or newer than us): skipped */
    }
    if (r.bad) {
        snprintf(what, sizeof(what), "malformed frame of type %u", h.type);
        return broken(c, err, -EPROTO, what);
    }
    return 1;
}

int agent_client_step(agent_client_t *c, int timeout_ms, struct agent_event *ev, vhpc_err_t *err)
{
    uint64_t deadline = deadline_in(timeout_ms);
    int r;
    if (c->consume) {
        agent_buf_consume(&c->in, c->consume);
        c->consume = 0;
    }
    if (c->closed)
        return broken(c, err, -EPIPE, "connection closed");
    if ((r = flush(c, err)) < 0)
        return r;
    for (;;) {
        while ((r = parse_one(c, ev, err)) == 0 && c->consume) {
            agent_buf_consume(&c->in, c->consume); /* a skipped frame */
            c->consume = 0;
        }
        if (r != 0)
            return r;
        struct pollfd p = {.fd = c->fd, .events = agent_client_poll_events(c)};
        int n = poll(&p, 1, left_ms(deadline));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vhpc_err_set(err, -errno, "agent at %s: poll", c->name);
        if (n == 0)
            return 0;
        if ((p.revents & POLLOUT) && (r = flush(c, err)) < 0)
            return r;
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        uint8_t *b = agent_buf_reserve(&c->in, READ_CHUNK);
        if (!b)
            return vhpc_err_set(err, -ENOMEM, "agent at %s", c->name);
        ssize_t got = recv(c->fd, b, READ_CHUNK, 0);
        if (got > 0) {
            c->in.len += (size_t)got;
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
            if (got < 0 && errno != ECONNRESET)
                return broken(c, err, -errno, strerror(errno));
            c->closed = true;
            memset(ev, 0, sizeof(*ev));
            ev->type = AGENT_EV_CLOSED;
            return 1;
        }
    }
}

int agent_client_wait_ready(agent_client_t *c, int timeout_ms, vhpc_err_t *err)
{
    uint64_t deadline = deadline_in(timeout_ms);
    struct agent_event ev;
    int r = send_ping(c, 0, err);
    c->have_hello = false;
    while (r >= 0) {
        int wait = left_ms(deadline);
        r = agent_client_step(c, wait < 0 || wait > 1000 ? 1000 : wait, &ev, err);
        if (r == 0 && left_ms(deadline) == 0)
            return vhpc_err_setmsg(err, -ETIMEDOUT, "agent at %s: no HELLO within %d ms", c->name,
                                   timeout_ms);
        if (r == 0 && !c->synced)
            r = send_ping(c, 0, err); /* the first may have been lost in a resync */
        if (r > 0 && ev.type == AGENT_EV_HELLO && c->have_hello && c->synced)
            return 0;
        if (r > 0 && ev.type == AGENT_EV_CLOSED)
            return broken(c, err, -ECONNRESET, "connection closed before HELLO");
    }
    return r;
}

/* Wait for the next event of `type` (others are skipped), up to `deadline`. */
static int wait_event(agent_client_t *c, enum agent_event_type type, uint64_t deadline,
                      struct agent_event *ev, const char *what, vhpc_err_t *err)
{
    for (;;) {
        int r = agent_client_step(c, left_ms(deadline), ev, err);
        if (r < 0)
            return r;
        if (r == 0)
            return vhpc_err_setmsg(err, -ETIMEDOUT, "agent at %s: no %s", c->name, what);
        if (ev->type == AGENT_EV_CLOSED)
            return broken(c, err, -ECONNRESET, "connection closed");
        if (ev->type == type)
            return 0;
    }
}

int agent_client_send_key(agent_client_t *c, const uint8_t key[AGENT_KEY_LEN], int timeout_ms,
                          vhpc_err_t *err)
{
    struct agent_event ev;
    uint8_t *p;
    int r = frame(c, AGENT_KEY, 0, AGENT_KEY_LEN, &p, err);
    if (r < 0)
        return r;
    memcpy(p, key, AGENT_KEY_LEN);
    if ((r = wait_event(c, AGENT_EV_KEY_OK, deadline_in(timeout_ms), &ev,
                        "answer to the job key (an agent older than this vhpc?)", err)) < 0)
        return r;
    return 0;
}

static void mac(const uint8_t *key, const char *who, size_t who_len, const uint8_t *nonce_a,
                const uint8_t *nonce_c, uint8_t out[AGENT_MAC_LEN])
{
    struct vhpc_iov parts[] = {
        {who, who_len}, {nonce_a, AGENT_NONCE_LEN}, {nonce_c, AGENT_NONCE_LEN}};
    vhpc_hmac_sha256(key, AGENT_KEY_LEN, parts, 3, out);
}

int agent_client_auth(agent_client_t *c, const uint8_t key[AGENT_KEY_LEN], int timeout_ms,
                      vhpc_err_t *err)
{
    uint64_t deadline = deadline_in(timeout_ms);
    uint8_t nonce_a[AGENT_NONCE_LEN], nonce_c[AGENT_NONCE_LEN], want[AGENT_MAC_LEN], *p;
    struct agent_event ev;
    int r = wait_event(c, AGENT_EV_CHALLENGE, deadline, &ev, "CHALLENGE (not a vhpc agent?)", err);
    if (r < 0)
        return r;
    memcpy(nonce_a, ev.data, AGENT_NONCE_LEN);
    if (getrandom(nonce_c, sizeof(nonce_c), 0) != (ssize_t)sizeof(nonce_c))
        return vhpc_err_set(err, -errno, "agent at %s: random nonce", c->name);
    if ((r = frame(c, AGENT_AUTH, 0, AGENT_NONCE_LEN + AGENT_MAC_LEN, &p, err)) < 0)
        return r;
    memcpy(p, nonce_c, AGENT_NONCE_LEN);
    mac(key, AGENT_MAC_CLIENT, sizeof(AGENT_MAC_CLIENT), nonce_a, nonce_c, p + AGENT_NONCE_LEN);
    r = wait_event(c, AGENT_EV_AUTH_OK, deadline, &ev, "answer to our authentication", err);
    if (r == -ECONNRESET)
        return vhpc_err_setmsg(err, -EACCES,
                               "agent at %s refused us: not the key of its job (is this "
                               "host in the same virtual cluster?)",
                               c->name);
    if (r < 0)
        return r;
    mac(key, AGENT_MAC_AGENT, sizeof(AGENT_MAC_AGENT), nonce_a, nonce_c, want);
    if (!vhpc_mem_equal(want, ev.data, AGENT_MAC_LEN))
        return broken(c, err, -EACCES, "the agent does not hold our job's key (not our VM?)");
    return 0;
}

/* Write all of an event's data to fd; on failure stop writing there (*fd = -1). */
static void deliver(int *fd, const uint8_t *data, size_t len)
{
    while (*fd >= 0 && len) {
        ssize_t n = write(*fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *fd = -1;
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

int agent_client_run(agent_client_t *c, const struct agent_exec_req *req,
                     const struct agent_run_io *io, int *status, vhpc_err_t *err)
{
    struct agent_exec_req x = *req;
    struct agent_event ev;
    uint32_t id;
    uint64_t deadline = deadline_in(io->timeout_ms);
    int stdin_fd = io->stdin_fd, stdout_fd = io->stdout_fd, stderr_fd = io->stderr_fd;
    int signal_fd = io->signal_fd;
    int signals = 0;
    bool killed = false;
    int r;

    if (stdin_fd >= 0)
        x.flags |= AGENT_EXEC_STDIN;
    if ((r = agent_client_exec(c, &x, &id, err)) < 0)
        goto fail;
    for (;;) {
        /* Everything that already arrived first, then wait for more. */
        while ((r = agent_client_step(c, 0, &ev, err)) > 0) {
            if (ev.type == AGENT_EV_CLOSED)
                return broken(c, err, -ECONNRESET, "connection closed while running a command");
            if (ev.session != id)
                continue;
            switch (ev.type) {
            case AGENT_EV_STDOUT: deliver(&stdout_fd, ev.data, ev.len); break;
            case AGENT_EV_STDERR: deliver(&stderr_fd, ev.data, ev.len); break;
            case AGENT_EV_EXEC_FAILED:
                return vhpc_err_setmsg(err, -(ev.err > 0 ? ev.err : EIO), "%s", ev.msg);
            case AGENT_EV_EXIT:
                *status = ev.status;
                if (killed)
                    return vhpc_err_setmsg(err, -ETIMEDOUT, "%s: killed after %d ms", req->argv[0],
                                           io->timeout_ms);
                return 0;
            default: break;
            }
        }
        if (r < 0)
            goto fail;
        if (deadline != NO_DEADLINE && !killed && left_ms(deadline) == 0) {
            killed = true;
            stdin_fd = -1;
            if ((r = agent_client_signal(c, id, SIGKILL, err)) < 0)
                goto fail;
            deadline = vhpc_now_ms() + 5000; /* for the EXIT that the kill brings */
        } else if (killed && left_ms(deadline) == 0) {
            return vhpc_err_setmsg(err, -ETIMEDOUT, "%s: no exit after SIGKILL", req->argv[0]);
        }
        struct pollfd p[3] = {{.fd = c->fd, .events = agent_client_poll_events(c)},
                              {.fd = -1, .events = POLLIN},
                              {.fd = signal_fd, .events = POLLIN}};
        if (stdin_fd >= 0 && agent_client_pending(c) < BACKLOG)
            p[1].fd = stdin_fd;
        if (poll(p, 3, left_ms(deadline)) < 0 && errno != EINTR)
            return vhpc_err_set(err, -errno, "agent at %s: poll", c->name);
        if (p[2].revents) {
            struct signalfd_siginfo si;
            ssize_t n = read(signal_fd, &si, sizeof(si));
            if (n == (ssize_t)sizeof(si)) {
                /* The first is passed on; a second one means "stop
                 * waiting now", as with ssh. */
                if (io->second_signal_ends && ++signals > 1) {
                    *status = 128 + (int)si.ssi_signo;
                    return vhpc_err_setmsg(err, -EINTR, "%s: %s again, not waiting any longer",
                                           req->argv[0], strsignal((int)si.ssi_signo));
                }
                if ((r = agent_client_signal(c, id, (int)si.ssi_signo, err)) < 0)
                    goto fail;
            } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                signal_fd = -1; /* closed: nothing more to forward */
            }
        }
        if (p[1].revents) {
            uint8_t buf[CLIENT_CHUNK];
            ssize_t n = read(stdin_fd, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0)
                stdin_fd = -1; /* EOF (or an error, taken as EOF) */
            if ((r = agent_client_send_stdin(c, id, buf, n > 0 ? (size_t)n : 0, err)) < 0)
                goto fail;
        }
    }
fail:
    vhpc_err_wrap(err, "running %s", req->argv[0]);
    return r;
}

int agent_client_signalfd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    int fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (fd >= 0)
        sigprocmask(SIG_BLOCK, &set, NULL);
    return fd;
}

/* Wait for the event that ends transfer `id` (PUT_DONE or FILE_END), handing
 * FILE_DATA to out_fd; returns the agent's errno value or a negative error. */
static int wait_transfer(agent_client_t *c, uint32_t id, int out_fd, uint64_t deadline,
                         vhpc_err_t *err)
{
    struct agent_event ev;
    int wfail = 0;
    for (;;) {
        int r = agent_client_step(c, left_ms(deadline), &ev, err);
        if (r < 0)
            return r;
        if (r == 0)
            return vhpc_err_setmsg(err, -ETIMEDOUT, "agent at %s: transfer timed out", c->name);
        if (ev.type == AGENT_EV_CLOSED)
            return broken(c, err, -ECONNRESET, "connection closed during a transfer");
        if (ev.session != id)
            continue;
        if (ev.type == AGENT_EV_FILE_DATA && !wfail) {
            int fd = out_fd;
            deliver(&fd, ev.data, ev.len);
            if (fd < 0)
                wfail = errno ? errno : EIO;
        } else if (ev.type == AGENT_EV_PUT_DONE || ev.type == AGENT_EV_FILE_END) {
            if (!ev.err && wfail)
                return vhpc_err_set(err, -wfail, "writing the local copy");
            return ev.err;
        }
    }
}

int agent_client_put_file(agent_client_t *c, int local_fd, const char *remote_path, unsigned mode,
                          int timeout_ms, vhpc_err_t *err)
{
    uint64_t deadline = deadline_in(timeout_ms);
    uint32_t id = new_session(c);
    uint8_t buf[CLIENT_CHUNK], *p;
    int rerr = 0;
    int r = frame(c, AGENT_PUT_FILE, id, 8 + strlen(remote_path), &p, err);
    if (r < 0)
        goto out;
    agent_wr_str(agent_wr_u32(p, (mode & 07777) | AGENT_PUT_MORE), remote_path);
    for (;;) {
        ssize_t n = read(local_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rerr = errno; /* end the transfer all the same, then report */
            n = 0;
        }
        r = frame(c, n ? AGENT_FILE_DATA : AGENT_FILE_END, id, n ? (size_t)n : 4, &p, err);
        if (r < 0)
            goto out;
        if (n)
            memcpy(p, buf, (size_t)n);
        else
            agent_wr_u32(p, 0);
        /* Keep at most BACKLOG queued: send before reading more. */
        if (agent_client_pending(c) > BACKLOG && (r = drain(c, deadline, err)) < 0)
            goto out;
        if (!n)
            break;
    }
    r = wait_transfer(c, id, -1, deadline, err);
    if (r > 0)
        r = vhpc_err_set(err, -r, "in the guest");
    else if (r == 0 && rerr)
        r = vhpc_err_set(err, -rerr, "reading the local file");
out:
    if (r < 0)
        vhpc_err_wrap(err, "copying to %s:%s", c->name, remote_path);
    return r;
}

int agent_client_get_file(agent_client_t *c, const char *remote_path, int local_fd, int timeout_ms,
                          vhpc_err_t *err)
{
    uint32_t id = new_session(c);
    uint8_t *p;
    int r = frame(c, AGENT_GET_FILE, id, 4 + strlen(remote_path), &p, err);
    if (r == 0) {
        agent_wr_str(p, remote_path);
        r = wait_transfer(c, id, local_fd, deadline_in(timeout_ms), err);
        if (r > 0)
            r = vhpc_err_set(err, -r, "in the guest");
    }
    if (r < 0)
        vhpc_err_wrap(err, "copying %s:%s", c->name, remote_path);
    return r;
}
