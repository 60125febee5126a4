/*
 * test_agent_client - libvhpc's agent client against a scripted fake agent
 * (a UNIX socket played by a child process, as QEMU's chardev would be):
 * connecting before the socket exists, skipping what an earlier connection
 * left in the stream up to PONG 0, sending PING 0 again when unanswered, a
 * timeout, bad and malformed frames after that (EPROTO), and the agent going
 * away (AGENT_EV_CLOSED, then EPIPE).  Also a real agent: a command killed
 * by agent_client_run()'s timeout.
 */
#include "test_agent_util.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum scenario { STALE, RESEND, SILENT, BAD_MAGIC, MALFORMED, CLOSE, LATE_LISTEN };

struct fake {
    enum scenario sc;
    char path[108];
};

static int listen_at(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    unlink(path);
    T_ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 4) == 0,
             "listen %s: %s", path, strerror(errno));
    return fd;
}

/* Read the client's next frame; returns its type (PING: *cookie). */
static uint32_t get_frame(int fd, uint64_t *cookie)
{
    uint8_t buf[256];
    struct agent_hdr h;
    size_t got = 0;
    while (got < AGENT_HDR_SIZE) {
        ssize_t n = read(fd, buf + got, AGENT_HDR_SIZE - got);
        if (n <= 0)
            _exit(3);
        got += (size_t)n;
    }
    if (!agent_hdr_get(buf, &h) || h.len > sizeof(buf))
        _exit(4);
    for (got = 0; got < h.len;) {
        ssize_t n = read(fd, buf + got, h.len - got);
        if (n <= 0)
            _exit(5);
        got += (size_t)n;
    }
    if (h.type == AGENT_PING && cookie) {
        struct agent_rd r = {buf, h.len, false};
        *cookie = agent_rd_u64(&r);
    }
    return h.type;
}

static void pong_hello(int fd, uint64_t cookie)
{
    uint8_t p[64], *q;
    agent_wr_u64(p, cookie);
    t_write_frame(fd, AGENT_PONG, 0, p, 8);
    q = agent_wr_str(agent_wr_str(agent_wr_u32(p, AGENT_PROTO_VERSION), "6.1.0-test"), "fake");
    t_write_frame(fd, AGENT_HELLO, 0, p, (uint32_t)(q - p));
}

static int fake_agent(void *arg)
{
    struct fake *f = arg;
    uint64_t cookie = 1;
    uint8_t p[16];
    if (f->sc == LATE_LISTEN)
        usleep(300000);
    int lfd = listen_at(f->path);
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return 2;
    switch (f->sc) {
    case STALE:
        /* The tail of a frame, whole frames, junk: all for an earlier host. */
        t_write_all(fd, "ld output\n", 10);
        t_write_frame(fd, AGENT_STDOUT, 1, "stale", 5);
        t_write_all(fd, "\x31\x47\x41\x56garbage", 11);
        t_write_frame(fd, AGENT_PONG, 0, "\x05\0\0\0\0\0\0\0", 8);
        t_write_frame(fd, AGENT_EXIT, 1, "\x01\0\0\0\x07\0\0\0", 8);
        while (get_frame(fd, &cookie) != AGENT_PING || cookie != 0)
            ;
        pong_hello(fd, 0);
        t_write_frame(fd, AGENT_EXIT, 1, "\x02\0\0\0\x09\0\0\0", 8);
        break;
    case RESEND:
        /* The first PING 0 goes unanswered; the second gets through. */
        get_frame(fd, &cookie);
        get_frame(fd, &cookie);
        pong_hello(fd, cookie);
        break;
    case SILENT: get_frame(fd, &cookie); break;
    case BAD_MAGIC:
    case MALFORMED:
        get_frame(fd, &cookie);
        pong_hello(fd, 0);
        if (f->sc == BAD_MAGIC)
            t_write_all(fd, "0123456789abcdef", 16);
        else
            t_write_frame(fd, AGENT_EXIT, 1, p, 2);
        break;
    case CLOSE:
    case LATE_LISTEN:
        get_frame(fd, &cookie);
        pong_hello(fd, 0);
        close(fd);
        break;
    }
    /* Keep the connection until the test is done with it. */
    char c;
    while (read(fd, &c, 1) > 0)
        ;
    return 0;
}

static pid_t start_fake(struct fake *f, enum scenario sc)
{
    static int seq;
    f->sc = sc;
    snprintf(f->path, sizeof(f->path), "%s/fake%d.sock", t_tmpdir(), seq++);
    pid_t pid = t_fork(fake_agent, f);
    if (sc != LATE_LISTEN) /* wait for the socket */
        for (int i = 0; i < 500 && access(f->path, F_OK) < 0; i++)
            usleep(10000);
    return pid;
}

static agent_client_t *connect_fake(struct fake *f, enum scenario sc, int ready_ms, int expect)
{
    agent_client_t *c;
    vhpc_err_t e;
    start_fake(f, sc);
    T_ASSERT(agent_client_connect(f->path, 5000, &c, &e) == 0, "connect: %s", e.msg);
    int r = agent_client_wait_ready(c, ready_ms, &e);
    T_ASSERT(r == expect, "wait_ready: %d, expected %d (%s)", r, expect, e.msg);
    return c;
}

static void test_stale(void)
{
    struct fake f;
    struct agent_event ev;
    vhpc_err_t e;
    agent_client_t *c = connect_fake(&f, STALE, 5000, 0);
    const struct agent_hello *h = agent_client_hello(c);
    T_ASSERT(h && strcmp(h->kernel, "6.1.0-test") == 0 && strcmp(h->hostname, "fake") == 0,
             "HELLO");
    /* Only the EXIT after PONG 0 is an event: signal 9. */
    T_ASSERT(agent_client_step(c, 5000, &ev, &e) == 1, "step: %s", e.msg);
    T_ASSERT(ev.type == AGENT_EV_EXIT && ev.exit_kind == AGENT_EXIT_SIGNAL && ev.status == 137,
             "event %d status %d: a stale frame came through", ev.type, ev.status);
    agent_client_close(c);
}

static void test_resend_and_timeout(void)
{
    struct fake f;
    uint64_t t0 = t_now_ms();
    agent_client_t *c = connect_fake(&f, RESEND, 5000, 0);
    T_ASSERT(t_now_ms() - t0 >= 900, "ready before the PING was sent again");
    agent_client_close(c);

    t0 = t_now_ms();
    c = connect_fake(&f, SILENT, 1500, -ETIMEDOUT);
    uint64_t ms = t_now_ms() - t0;
    T_ASSERT(ms >= 1400 && ms < 4000, "timed out after %llu ms", (unsigned long long)ms);
    agent_client_close(c);
}

static void test_bad_frames(void)
{
    struct fake f;
    struct agent_event ev;
    vhpc_err_t e;
    agent_client_t *c = connect_fake(&f, BAD_MAGIC, 5000, 0);
    int r = agent_client_step(c, 5000, &ev, &e);
    T_ASSERT(r == -EPROTO && strstr(e.msg, "bad frame"), "bad magic: %d %s", r, e.msg);
    r = agent_client_step(c, 0, &ev, &e);
    T_ASSERT(r == -EPIPE, "after EPROTO: %d", r);
    agent_client_close(c);

    c = connect_fake(&f, MALFORMED, 5000, 0);
    r = agent_client_step(c, 5000, &ev, &e);
    T_ASSERT(r == -EPROTO && strstr(e.msg, "malformed frame of type 9"), "malformed: %d %s", r,
             e.msg);
    agent_client_close(c);
}

static void test_closed(void)
{
    struct fake f;
    struct agent_event ev;
    vhpc_err_t e;
    uint32_t id;
    agent_client_t *c = connect_fake(&f, CLOSE, 5000, 0);
    T_ASSERT(agent_client_step(c, 5000, &ev, &e) == 1 && ev.type == AGENT_EV_CLOSED, "CLOSED");
    T_ASSERT(agent_client_step(c, 0, &ev, &e) == -EPIPE, "step after CLOSED");
    struct agent_exec_req req = {.argv = ARGV("true")};
    T_ASSERT(agent_client_exec(c, &req, &id, &e) == -EPIPE, "exec after CLOSED");
    int st;
    T_ASSERT(agent_client_run(c, &req,
                              &(struct agent_run_io){.stdin_fd = -1,
                                                     .stdout_fd = -1,
                                                     .stderr_fd = -1,
                                                     .signal_fd = -1,
                                                     .timeout_ms = 1000},
                              &st, &e) == -EPIPE &&
                 strstr(e.msg, "running true"),
             "run after CLOSED: %s", e.msg);
    agent_client_close(c);
}

static void test_connect(void)
{
    struct fake f;
    agent_client_t *c;
    vhpc_err_t e;
    /* The socket appears 300 ms later: connect waits for it. */
    c = connect_fake(&f, LATE_LISTEN, 5000, 0);
    agent_client_close(c);
    char path[200];
    snprintf(path, sizeof(path), "%s/never.sock", t_tmpdir());
    uint64_t t0 = t_now_ms();
    int r = agent_client_connect(path, 200, &c, &e);
    T_ASSERT(r == -ENOENT && strstr(e.msg, path), "missing socket: %d %s", r, e.msg);
    T_ASSERT(t_now_ms() - t0 < 2000, "connect did not give up");
}

/* With a real agent: agent_client_run()'s timeout kills the command. */
static void test_run_timeout(void)
{
    struct t_agent a;
    vhpc_err_t e;
    int status = -1;
    t_agent_start(&a, NULL);
    agent_client_t *c = t_agent_client(&a);
    struct agent_exec_req req = {.argv = ARGV("sleep", "100")};
    uint64_t t0 = t_now_ms();
    int r = agent_client_run(
        c, &req,
        &(struct agent_run_io){
            .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .signal_fd = -1, .timeout_ms = 300},
        &status, &e);
    T_ASSERT(r == -ETIMEDOUT && status == 128 + SIGKILL, "timeout: %d %d %s", r, status, e.msg);
    T_ASSERT(t_now_ms() - t0 < 3000, "took %llu ms", (unsigned long long)(t_now_ms() - t0));
    /* The client is still usable. */
    struct t_out o;
    t_run(c, ARGV("echo", "after"), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && strcmp(o.out, "after\n") == 0, "after timeout: %s", o.e.msg);
    t_out_free(&o);
    agent_client_close(c);
    t_agent_stop(&a);
}

static const struct t_case cases[] = {
    {"stale", test_stale, 30},
    {"resend_and_timeout", test_resend_and_timeout, 30},
    {"bad_frames", test_bad_frames, 30},
    {"closed", test_closed, 30},
    {"connect", test_connect, 30},
    {"run_timeout", test_run_timeout, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
