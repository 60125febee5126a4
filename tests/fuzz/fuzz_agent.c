/*
 * fuzz_agent.c - the agent's side of its protocol: src/agent/conn.c cuts
 * the byte stream into frames (parse, resync, dispatch) and request.c
 * parses the payloads, as a host (or, over TCP, another guest) may send
 * them.  The real session.c is replaced by a model that parses every
 * request with request.c and keeps the session bookkeeping conn.c relies
 * on, but starts nothing and touches no file: a fuzzer must not run the
 * commands or write the paths its inputs name.
 *
 * The first input byte picks the connection kind (bit 0: the port, which
 * resynchronises after bad frames; else an accepted stream); the rest is
 * what the peer writes.
 */
#include "agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct agent agent;

void agent_log(const char *fmt, ...)
{
    (void)fmt;
}

void agent_debug(const char *fmt, ...)
{
    (void)fmt;
}

uint64_t agent_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool net_peer_allowed(const struct sockaddr_storage *peer)
{
    return true;
}

/* ---- the session model ---------------------------------------------------- */

struct session *session_find(struct conn *c, uint32_t id)
{
    for (struct session *s = c->sessions; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static struct session *model_new(struct conn *c, uint32_t id, enum session_kind kind)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->conn = c;
    s->id = id;
    s->kind = kind;
    s->out_fd = s->err_fd = s->in_fd = s->file_fd = -1;
    s->next = c->sessions;
    c->sessions = s;
    return s;
}

void session_free(struct session *s, bool kill_group)
{
    for (struct session **ps = &s->conn->sessions; *ps; ps = &(*ps)->next) {
        if (*ps == s) {
            *ps = s->next;
            break;
        }
    }
    agent_buf_free(&s->stdin_q);
    free(s);
}

static void send_i32(struct conn *c, uint32_t type, uint32_t id, int32_t v)
{
    uint8_t *p = conn_frame(c, type, id, 4);
    if (p)
        agent_wr_u32(p, (uint32_t)v);
}

void session_exec(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len)
{
    struct exec_req x;
    if (id == 0)
        return;
    if (session_find(c, id)) {
        send_i32(c, AGENT_EXEC_FAILED, id, EEXIST);
        return;
    }
    int e = req_exec_parse(payload, len, &x);
    if (e) {
        send_i32(c, AGENT_EXEC_FAILED, id, e);
        return;
    }
    /* What the child would get: every string must be a C string. */
    size_t n = strlen(x.cwd);
    for (uint32_t i = 0; i < x.argc; i++)
        n += strlen(x.argv[i]);
    for (uint32_t i = 0; i < x.envc; i++)
        if (!strchr(x.env[i], '='))
            abort();
    if (x.argv[x.argc] || x.env[x.envc])
        abort();
    struct session *s = model_new(c, id, S_CMD);
    if (s) {
        s->in_fd = (x.flags & AGENT_EXEC_STDIN) ? 0 : -1; /* never written: a marker */
        send_i32(c, AGENT_STARTED, id, (int32_t)n);
    }
    req_exec_free(&x);
}

void session_stdin(struct conn *c, uint32_t id, const uint8_t *data, uint32_t len)
{
    struct session *s = session_find(c, id);
    if (!s || s->kind != S_CMD || s->in_fd < 0 || s->stdin_eof)
        return;
    if (len == 0) {
        s->stdin_eof = true;
        return;
    }
    /* Queued as the agent does (conn_input_blocked() counts it), up to a
     * bound, since nothing reads it here. */
    if (agent_buf_pending(&s->stdin_q) + len > 2 * AGENT_BACKLOG)
        agent_buf_free(&s->stdin_q);
    uint8_t *p = agent_buf_reserve(&s->stdin_q, len);
    if (p) {
        memcpy(p, data, len);
        s->stdin_q.len += len;
    }
}

void session_signal(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len)
{
    int sig;
    if (req_signal_parse(payload, len, &sig))
        conn_complain(c, "malformed SIGNAL ignored");
}

void session_put(struct conn *c, uint32_t id, uint32_t type, const uint8_t *payload, uint32_t len)
{
    struct session *s = session_find(c, id);
    if (type != AGENT_PUT_FILE) {
        if (!s || s->kind != S_PUT)
            return;
        if (type == AGENT_FILE_END) {
            send_i32(c, AGENT_PUT_DONE, id, s->file_err);
            session_free(s, false);
        }
        return;
    }
    uint32_t mode, dlen;
    char *path;
    const uint8_t *d;
    if (req_put_parse(payload, len, &mode, &path, &d, &dlen) || id == 0) {
        free(path);
        send_i32(c, AGENT_PUT_DONE, id, EPROTO);
        return;
    }
    if (d + dlen != payload + len || strlen(path) > len)
        abort();
    if (s) {
        send_i32(c, AGENT_PUT_DONE, id, EEXIST);
    } else if (mode & AGENT_PUT_MORE) {
        model_new(c, id, S_PUT);
    } else {
        send_i32(c, AGENT_PUT_DONE, id, 0);
    }
    free(path);
}

void session_get(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len)
{
    char *path;
    int e = req_get_parse(payload, len, &path);
    if (!e && strlen(path) > len)
        abort();
    send_i32(c, AGENT_FILE_END, id, e ? e : ENOENT);
    free(path);
}

/* ---- the harness ------------------------------------------------------------ */

static size_t feed(int fd, const uint8_t *data, size_t size, size_t off)
{
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    return off;
}

static void discard(int fd)
{
    char buf[4096];
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
}

static void conn_destroy(struct conn *c)
{
    for (struct conn **pc = &agent.conns; *pc; pc = &(*pc)->next) {
        if (*pc == c) {
            *pc = c->next;
            break;
        }
    }
    while (c->sessions)
        session_free(c->sessions, true);
    if (c->fd >= 0)
        close(c->fd);
    agent_buf_free(&c->in);
    agent_buf_free(&c->out);
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* First byte: bit 0 the port (else a stream); bit 1 a TCP client that
     * must authenticate (the agent holds an all-zero key); bit 2 one that
     * already did.  A KEY on the port is stored in key_file. */
    static char key_file[64];
    if (!key_file[0])
        snprintf(key_file, sizeof(key_file), "/tmp/fuzz_agent.%d.key", (int)getpid());
    bool port = data[0] & 1, tcp = !port && (data[0] & 2), authed = tcp && (data[0] & 4);
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    memset(&agent, 0, sizeof(agent));
    snprintf(agent.kernel, sizeof(agent.kernel), "6.1.0-fuzz");
    snprintf(agent.hostname, sizeof(agent.hostname), "fuzz");
    agent.tcp_fd = agent.unix_fd = agent.port_fd_arg = -1;
    agent.key_file = key_file;
    agent.have_key = tcp;
    struct conn *c = conn_new(port ? CONN_PORT : CONN_STREAM, sv[0], port ? "port" : "stream");
    if (!c) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    c->tcp = tcp;
    c->authed = authed;
    c->opened_ms = agent_now_ms();
    if (port)
        agent.port = c;
    conn_send_hello(c);
    size_t off = 0;
    for (int rounds = 0; rounds < 10000; rounds++) {
        size_t before = off;
        off = feed(sv[1], data, size, off);
        if (!conn_input_blocked(c) && c->fd >= 0 && !c->dead)
            conn_on_readable(c);
        conn_flush(c);
        discard(sv[1]);
        if (c->dead || c->fd < 0)
            break;
        if (off == size || (off == before && conn_input_blocked(c)))
            break;
    }
    /* The peer goes away. */
    close(sv[1]);
    if (!c->dead && c->fd >= 0)
        conn_on_readable(c);
    conn_destroy(c);
    agent.port = NULL;
    unlink(key_file);
    return 0;
}
