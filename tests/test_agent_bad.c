/*
 * test_agent_bad - vhpc-agent against bad input and hard endings, on raw
 * frames: garbage and oversize frames end a stream connection (and the
 * agent serves the next one); unknown types, malformed payloads and frames
 * for unknown sessions are answered or skipped; random frames do not hurt
 * it; on a port (--port-fd) it resynchronises on the next magic after
 * garbage, kills the port's commands, greets again, and does not spin when
 * the host side is gone; SHUTDOWN stops its commands and ends it.
 */
#include "test_agent_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static struct t_agent agent;

static int raw_connect(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", agent.sock);
    T_ASSERT(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
             strerror(errno));
    return fd;
}

/* Read exactly len bytes within 10 s; false on EOF. */
static bool raw_read(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        T_ASSERT(poll(&pf, 1, 10000) == 1, "no reply from the agent within 10 s");
        ssize_t n = read(fd, p, len);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return false;
        T_ASSERT(n > 0, "read: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return true;
}

struct frame {
    struct agent_hdr h;
    uint8_t data[1 << 16];
};

/* The next frame that is not a HELLO; false if the agent closed. */
static bool next_frame(int fd, struct frame *f)
{
    for (;;) {
        uint8_t h[AGENT_HDR_SIZE];
        if (!raw_read(fd, h, sizeof(h)))
            return false;
        T_ASSERT(agent_hdr_get(h, &f->h), "the agent sent a bad header");
        T_ASSERT(f->h.len <= sizeof(f->data), "frame of %u bytes", f->h.len);
        T_ASSERT(raw_read(fd, f->data, f->h.len), "EOF inside a frame");
        if (f->h.type != AGENT_HELLO)
            return true;
    }
}

static void expect_closed(int fd)
{
    struct frame f;
    T_ASSERT(!next_frame(fd, &f), "connection still open (got type %u)", f.h.type);
    close(fd);
}

static void ping(int fd, uint64_t cookie)
{
    uint8_t p[8];
    struct frame f;
    agent_wr_u64(p, cookie);
    t_write_frame(fd, AGENT_PING, 0, p, 8);
    for (;;) { /* PONGs to earlier (random) PINGs come first */
        T_ASSERT(next_frame(fd, &f), "closed instead of PONG");
        if (f.h.type == AGENT_KEY_OK)
            continue; /* a random frame was a well-formed KEY */
        T_ASSERT(f.h.type == AGENT_PONG && f.h.len == 8, "type %u instead of PONG", f.h.type);
        struct agent_rd r = {f.data, 8, false};
        if (agent_rd_u64(&r) == cookie)
            return;
    }
}

static int32_t expect_i32(int fd, uint32_t type, uint32_t session)
{
    struct frame f;
    T_ASSERT(next_frame(fd, &f), "closed instead of type %u", type);
    T_ASSERT(f.h.type == type && f.h.session == session && f.h.len >= 4,
             "got type %u session %u, expected %u/%u", f.h.type, f.h.session, type, session);
    return (int32_t)agent_get_u32(f.data);
}

/* An EXEC payload: flags, argc, envc given; then `strs` as strings. */
static size_t exec_payload(uint8_t *buf, uint32_t argc, uint32_t envc, const char *const *strs)
{
    uint8_t *p = agent_wr_u32(buf, 0);
    p = agent_wr_u32(p, argc);
    p = agent_wr_u32(p, envc);
    for (int i = 0; strs && strs[i]; i++)
        p = agent_wr_str(p, strs[i]);
    return (size_t)(p - buf);
}

/* The agent is alive and serving: a fresh client runs a command. */
static void check_alive(void)
{
    agent_client_t *c = t_agent_client(&agent);
    struct t_out o;
    t_run(c, ARGV("echo", "alive"), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && strcmp(o.out, "alive\n") == 0, "agent not serving: %s", o.e.msg);
    t_out_free(&o);
    agent_client_close(c);
}

static void test_framing(void)
{
    int fd = raw_connect();
    t_write_all(fd, "GET / HTTP/1.0\r\n\r\n", 18);
    expect_closed(fd);

    fd = raw_connect();
    uint8_t h[AGENT_HDR_SIZE];
    agent_hdr_put(h, AGENT_STDIN, 1, AGENT_MAX_PAYLOAD + 1);
    t_write_all(fd, h, sizeof(h));
    expect_closed(fd);

    /* A frame cut short by the peer going away. */
    fd = raw_connect();
    agent_hdr_put(h, AGENT_EXEC, 1, 1000);
    t_write_all(fd, h, sizeof(h));
    t_write_all(fd, "abc", 3);
    close(fd);
    check_alive();
}

static void test_payloads(void)
{
    int fd = raw_connect();
    uint8_t buf[4096];
    size_t n;

    /* Unknown types are skipped; the connection goes on. */
    t_write_frame(fd, 99, 0, "whatever", 8);
    t_write_frame(fd, 0, 3, NULL, 0);
    ping(fd, 5);

    /* Malformed EXECs: EXEC_FAILED EPROTO, each. */
    n = exec_payload(buf, 1000000, 0, ARGV("x", ""));
    t_write_frame(fd, AGENT_EXEC, 1, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 1) == EPROTO, "huge argc");
    n = exec_payload(buf, 0, 0, ARGV(""));
    t_write_frame(fd, AGENT_EXEC, 2, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 2) == EPROTO, "argc 0");
    n = exec_payload(buf, 1, 0, ARGV("echo")); /* no cwd */
    t_write_frame(fd, AGENT_EXEC, 3, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 3) == EPROTO, "missing cwd");
    n = exec_payload(buf, 1, 1, ARGV("echo", "NOEQUALS", ""));
    t_write_frame(fd, AGENT_EXEC, 4, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 4) == EPROTO, "env without =");
    n = exec_payload(buf, 1, 0, ARGV("echo", "", "extra"));
    t_write_frame(fd, AGENT_EXEC, 5, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 5) == EPROTO, "trailing bytes");
    n = exec_payload(buf, 1, 0, ARGV("echo", ""));
    buf[12 + 4 + 1] = 0; /* "echo" -> "e\0ho" */
    t_write_frame(fd, AGENT_EXEC, 6, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 6) == EPROTO, "NUL in a string");
    n = exec_payload(buf, 1, 0, ARGV("echo", ""));
    agent_put_u32(buf + 12, 0xfffffff0u); /* string length past the frame */
    t_write_frame(fd, AGENT_EXEC, 7, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 7) == EPROTO, "string overrun");
    t_write_frame(fd, AGENT_EXEC, 8, buf, 5);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 8) == EPROTO, "short header");
    /* Session 0 is not a command's: ignored. */
    n = exec_payload(buf, 1, 0, ARGV("echo", ""));
    t_write_frame(fd, AGENT_EXEC, 0, buf, (uint32_t)n);

    /* Frames for sessions that do not exist, short SIGNALs, bad SHUTDOWNs:
     * skipped. */
    t_write_frame(fd, AGENT_STDIN, 77, "data", 4);
    t_write_frame(fd, AGENT_STDIN, 77, NULL, 0);
    t_write_frame(fd, AGENT_SIGNAL, 77, "\x09\0\0\0", 4);
    t_write_frame(fd, AGENT_SIGNAL, 77, "\x09", 1);
    t_write_frame(fd, AGENT_SIGNAL, 77, "\0\0\0\0", 4);
    t_write_frame(fd, AGENT_FILE_DATA, 77, "x", 1);
    t_write_frame(fd, AGENT_FILE_END, 77, "\0\0\0\0", 4);
    t_write_frame(fd, AGENT_SHUTDOWN, 0, "\x07\0\0\0", 4);
    t_write_frame(fd, AGENT_SHUTDOWN, 0, "\x01", 1);
    t_write_frame(fd, AGENT_PING, 0, "\x01", 1);
    t_write_frame(fd, AGENT_PONG, 0, NULL, 0);
    ping(fd, 6);

    /* A session number in use: EEXIST; the first command is unaffected. */
    n = exec_payload(buf, 2, 0, ARGV("sleep", "100", ""));
    t_write_frame(fd, AGENT_EXEC, 9, buf, (uint32_t)n);
    int32_t pid = expect_i32(fd, AGENT_STARTED, 9);
    T_ASSERT(pid > 0, "pid");
    t_write_frame(fd, AGENT_EXEC, 9, buf, (uint32_t)n);
    T_ASSERT(expect_i32(fd, AGENT_EXEC_FAILED, 9) == EEXIST, "session in use");
    t_write_frame(fd, AGENT_SIGNAL, 9, "\x09\0\0\0", 4);
    struct frame f;
    do
        T_ASSERT(next_frame(fd, &f), "closed before EXIT");
    while (f.h.type != AGENT_EXIT);
    T_ASSERT(agent_get_u32(f.data) == AGENT_EXIT_SIGNAL && agent_get_u32(f.data + 4) == 9,
             "sleep did not die of SIGKILL");

    /* PUT_FILE in one frame (no AGENT_PUT_MORE), and malformed. */
    char path[200];
    snprintf(path, sizeof(path), "%s/one-frame", t_tmpdir());
    uint8_t *p = agent_wr_str(agent_wr_u32(buf, 0600), path);
    memcpy(p, "content", 7);
    t_write_frame(fd, AGENT_PUT_FILE, 10, buf, (uint32_t)(p + 7 - buf));
    T_ASSERT(expect_i32(fd, AGENT_PUT_DONE, 10) == 0, "one-frame PUT_FILE");
    struct stat st;
    T_ASSERT(stat(path, &st) == 0 && st.st_size == 7, "one-frame file");
    t_write_frame(fd, AGENT_PUT_FILE, 11, buf, 6);
    T_ASSERT(expect_i32(fd, AGENT_PUT_DONE, 11) == EPROTO, "short PUT_FILE");
    t_write_frame(fd, AGENT_GET_FILE, 12, buf, 2);
    T_ASSERT(expect_i32(fd, AGENT_FILE_END, 12) == EPROTO, "short GET_FILE");
    ping(fd, 7);
    close(fd);
}

/* Random frames of the types that cannot start anything, then random bytes. */
static void test_fuzz(void)
{
    static const uint32_t types[] = {
        0,          AGENT_HELLO,     AGENT_STARTED,  AGENT_STDIN, AGENT_STDOUT, AGENT_SIGNAL,
        AGENT_EXIT, AGENT_FILE_DATA, AGENT_FILE_END, AGENT_PING,  AGENT_PONG,   18,
        1000,       0xffffffffu};
    uint8_t buf[300];
    srand(1234);
    for (int round = 0; round < 20; round++) {
        int fd = raw_connect();
        for (int i = 0; i < 200; i++) {
            uint32_t len = (uint32_t)(rand() % 64);
            for (uint32_t k = 0; k < len; k++)
                buf[k] = (uint8_t)rand();
            t_write_frame(fd, types[rand() % (sizeof(types) / sizeof(types[0]))],
                          (uint32_t)(rand() % 4), buf, len);
        }
        ping(fd, 100 + (uint64_t)round); /* every frame was skipped or answered */
        for (int k = 0; k < 256; k++)
            buf[k] = (uint8_t)rand();
        t_write_all(fd, buf, 256);
        expect_closed(fd);
    }
    check_alive();
}

/* --port-fd: the port's rules on a socketpair. */
static void test_port(void)
{
    int sv[2];
    char fd_s[16];
    T_ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    fcntl(sv[0], F_SETFD, FD_CLOEXEC);
    snprintf(fd_s, sizeof(fd_s), "%d", sv[1]);
    struct t_agent pa;
    t_agent_start(&pa, ARGV("--port-fd", fd_s));
    close(sv[1]);
    int fd = sv[0];
    uint8_t h[AGENT_HDR_SIZE], buf[256];
    struct agent_hdr hdr;

    /* HELLO when the port opens, without being asked. */
    T_ASSERT(raw_read(fd, h, sizeof(h)) && agent_hdr_get(h, &hdr) && hdr.type == AGENT_HELLO,
             "no HELLO on the port");
    T_ASSERT(raw_read(fd, buf, hdr.len), "HELLO payload");
    /* PING 0 brings PONG and HELLO. */
    agent_wr_u64(buf, 0);
    t_write_frame(fd, AGENT_PING, 0, buf, 8);
    T_ASSERT(raw_read(fd, h, sizeof(h)) && agent_hdr_get(h, &hdr) && hdr.type == AGENT_PONG,
             "PONG");
    T_ASSERT(raw_read(fd, buf, hdr.len), "PONG payload");
    T_ASSERT(raw_read(fd, h, sizeof(h)) && agent_hdr_get(h, &hdr) && hdr.type == AGENT_HELLO,
             "HELLO after PING 0");
    T_ASSERT(raw_read(fd, buf, hdr.len), "HELLO payload");

    /* A command on the port, then garbage: the command is killed, the port
     * greets again and skips to the next magic. */
    size_t n = exec_payload(buf, 2, 0, ARGV("sleep", "100", ""));
    t_write_frame(fd, AGENT_EXEC, 1, buf, (uint32_t)n);
    int32_t pid = expect_i32(fd, AGENT_STARTED, 1);
    t_write_all(fd, "garbage garbage garbage!", 24);
    for (int i = 0; i < 300 && kill(pid, 0) == 0; i++)
        usleep(10000);
    T_ASSERT(kill(pid, 0) < 0, "the port's command survived a reset");
    T_ASSERT(raw_read(fd, h, sizeof(h)) && agent_hdr_get(h, &hdr) && hdr.type == AGENT_HELLO,
             "no HELLO after the reset");
    T_ASSERT(raw_read(fd, buf, hdr.len), "HELLO payload");
    t_write_all(fd, "junk", 4);
    ping(fd, 9);

    /* PING 0 on the port is a new host: the last one's commands go (even
     * though the agent never saw that host leave). */
    n = exec_payload(buf, 2, 0, ARGV("sleep", "100", ""));
    t_write_frame(fd, AGENT_EXEC, 1, buf, (uint32_t)n);
    pid = expect_i32(fd, AGENT_STARTED, 1);
    ping(fd, 0);
    for (int i = 0; i < 300 && kill(pid, 0) == 0; i++)
        usleep(10000);
    T_ASSERT(kill(pid, 0) < 0, "the earlier host's command survived PING 0");
    t_write_frame(fd, AGENT_EXEC, 1, buf, (uint32_t)n); /* its session number is free again */
    pid = expect_i32(fd, AGENT_STARTED, 1);
    t_write_frame(fd, AGENT_SIGNAL, 1, "\x09\0\0\0", 4);
    struct frame f;
    do
        T_ASSERT(next_frame(fd, &f), "closed before EXIT");
    while (f.h.type != AGENT_EXIT);

    /* The host side goes away: the agent waits without spinning. */
    close(fd);
    usleep(200000);
    char statpath[64];
    snprintf(statpath, sizeof(statpath), "/proc/%d/stat", (int)pa.pid);
    unsigned long t0[2], t1[2];
    for (int k = 0; k < 2; k++) {
        FILE *sf = fopen(statpath, "r");
        T_ASSERT(sf, "open %s", statpath);
        T_ASSERT(fscanf(sf, "%*d %*s %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                        k ? &t1[0] : &t0[0], k ? &t1[1] : &t0[1]) == 2,
                 "parse %s", statpath);
        fclose(sf);
        if (!k)
            usleep(1000000);
    }
    long ticks = (long)(t1[0] + t1[1] - t0[0] - t0[1]);
    T_ASSERT(ticks < 20, "the agent used %ld ticks in 1 s with its port's host gone", ticks);
    t_agent_stop(&pa);
}

/* SHUTDOWN to an agent that is not PID 1: commands stopped, agent exits 0. */
static void test_shutdown(void)
{
    struct t_agent sa;
    vhpc_err_t e;
    struct agent_event ev;
    uint32_t id;
    t_agent_start(&sa, NULL);
    agent_client_t *c = t_agent_client(&sa);
    struct agent_exec_req req = {.argv = ARGV("sleep", "100")};
    T_ASSERT(agent_client_exec(c, &req, &id, &e) == 0, "%s", e.msg);
    pid_t pid = 0;
    while (!pid) {
        T_ASSERT(agent_client_step(c, 10000, &ev, &e) > 0, "no STARTED");
        if (ev.type == AGENT_EV_STARTED)
            pid = ev.pid;
    }
    T_ASSERT(agent_client_shutdown(c, AGENT_SHUTDOWN_POWEROFF, &e) == 0, "%s", e.msg);
    /* The command's EXIT still reaches us before the connection closes. */
    int status = -1;
    for (;;) {
        int r = agent_client_step(c, 10000, &ev, &e);
        T_ASSERT(r > 0, "no EXIT/CLOSED after SHUTDOWN");
        if (ev.type == AGENT_EV_EXIT)
            status = ev.status;
        if (ev.type == AGENT_EV_CLOSED)
            break;
    }
    T_ASSERT(status == 128 + SIGTERM, "sleep: status %d", status);
    T_ASSERT(t_wait_bounded(sa.pid, 5000, "agent after SHUTDOWN") == 0, "agent exit status");
    sa.pid = 0;
    T_ASSERT(kill(pid, 0) < 0, "sleep survived SHUTDOWN");
    agent_client_close(c);
}

/* Each case has an agent of its own, serving before and after. */
#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        t_agent_start(&agent, NULL);                                                               \
        check_alive();                                                                             \
        test_##name();                                                                             \
        check_alive();                                                                             \
        t_agent_stop(&agent);                                                                      \
    }
CASE(framing)
CASE(payloads)
CASE(fuzz)
CASE(port)
CASE(shutdown)

static const struct t_case cases[] = {
    {"framing", case_framing, 30}, {"payloads", case_payloads, 30}, {"fuzz", case_fuzz, 60},
    {"port", case_port, 60},       {"shutdown", case_shutdown, 30}, {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
