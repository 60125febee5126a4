/*
 * test_agent_util.c - see test_agent_util.h.
 */
#include "test_agent_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct exec_arg {
    const char *const *argv;
};

static int exec_agent(void *p)
{
    const struct exec_arg *x = p;
    execv(x->argv[0], (char *const *)x->argv);
    fprintf(stderr, "exec %s: %s\n", x->argv[0], strerror(errno));
    return 127;
}

void t_agent_start_nokey(struct t_agent *a, const char *const *extra)
{
    static int seq;
    const char *path = getenv("VHPC_AGENT");
    const char *argv[32];
    char fd_s[16];
    int n = 0;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);

    T_ASSERT(path, "VHPC_AGENT is not set");
    /* The TCP socket is made here so its port is known and never clashes. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    T_ASSERT(lfd >= 0 && bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
                 listen(lfd, 16) == 0 && getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0,
             "TCP listen: %s", strerror(errno));
    a->tcp_port = ntohs(sin.sin_port);
    snprintf(a->key_file, sizeof(a->key_file), "%s/agent%d.key", t_tmpdir(), seq);
    snprintf(a->sock, sizeof(a->sock), "%s/agent%d.sock", t_tmpdir(), seq++);
    snprintf(fd_s, sizeof(fd_s), "%d", lfd);
    argv[n++] = path;
    argv[n++] = "--no-port";
    argv[n++] = "--listen-unix";
    argv[n++] = a->sock;
    argv[n++] = "--tcp-fd";
    argv[n++] = fd_s;
    argv[n++] = "--key-file";
    argv[n++] = a->key_file;
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    struct exec_arg x = {argv};
    a->pid = t_fork(exec_agent, &x);
    close(lfd);
    /* Ready once its UNIX socket accepts (at most 10 s). */
    for (int i = 0;; i++) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", a->sock);
        int r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
        close(s);
        if (r == 0)
            return;
        T_ASSERT(i < 1000, "vhpc-agent did not listen on %s within 10 s", a->sock);
        usleep(10000);
    }
}

void t_agent_start(struct t_agent *a, const char *const *extra)
{
    vhpc_err_t e;
    t_agent_start_nokey(a, extra);
    T_ASSERT(getrandom(a->key, sizeof(a->key), 0) == (ssize_t)sizeof(a->key), "getrandom");
    agent_client_t *c = t_agent_client(a);
    T_ASSERT(agent_client_send_key(c, a->key, 10000, &e) == 0, "giving the key: %s", e.msg);
    agent_client_close(c);
    setenv("VHPC_KEY_FILE", a->key_file, 1);
}

void t_agent_stop(struct t_agent *a)
{
    if (a->pid <= 0)
        return;
    kill(a->pid, SIGTERM);
    int st = t_wait_bounded(a->pid, 5000, "vhpc-agent after SIGTERM");
    T_ASSERT(st == 0, "vhpc-agent exited with %d", st);
    a->pid = 0;
}

agent_client_t *t_agent_client(const struct t_agent *a)
{
    agent_client_t *c;
    vhpc_err_t e;
    if (agent_client_connect(a->sock, 10000, &c, &e) < 0)
        T_FAIL("%s", e.msg);
    if (agent_client_wait_ready(c, 10000, &e) < 0)
        T_FAIL("%s", e.msg);
    return c;
}

int t_memfd_with(const void *data, size_t len)
{
    int fd = memfd_create("t_agent", MFD_CLOEXEC);
    T_ASSERT(fd >= 0, "memfd_create: %s", strerror(errno));
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, (const char *)data + off, len - off);
        T_ASSERT(w > 0, "write: %s", strerror(errno));
        off += (size_t)w;
    }
    T_ASSERT(lseek(fd, 0, SEEK_SET) == 0, "lseek");
    return fd;
}

char *t_slurp(int fd, size_t *len)
{
    off_t size = lseek(fd, 0, SEEK_END);
    T_ASSERT(size >= 0 && lseek(fd, 0, SEEK_SET) == 0, "lseek: %s", strerror(errno));
    char *buf = malloc((size_t)size + 1);
    T_ASSERT(buf, "malloc");
    size_t got = 0;
    while (got < (size_t)size) {
        ssize_t r = read(fd, buf + got, (size_t)size - got);
        T_ASSERT(r > 0, "read: %s", strerror(errno));
        got += (size_t)r;
    }
    buf[got] = 0;
    *len = got;
    return buf;
}

void t_run(agent_client_t *c, const char *const *argv, const char *const *env, const char *cwd,
           const void *in, size_t in_len, struct t_out *o)
{
    struct agent_exec_req req = {.argv = argv, .env = env, .cwd = cwd};
    int out = t_memfd_with("", 0), err = t_memfd_with("", 0);
    int infd = in ? t_memfd_with(in, in_len) : -1;
    memset(o, 0, sizeof(*o));
    o->status = -1;
    struct agent_run_io io = {
        .stdin_fd = infd, .stdout_fd = out, .stderr_fd = err, .signal_fd = -1, .timeout_ms = 60000};
    o->rc = agent_client_run(c, &req, &io, &o->status, &o->e);
    o->out = t_slurp(out, &o->out_len);
    o->err = t_slurp(err, &o->err_len);
    close(out);
    close(err);
    if (infd >= 0)
        close(infd);
}

void t_out_free(struct t_out *o)
{
    free(o->out);
    free(o->err);
}

void t_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        T_ASSERT(n > 0, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

void t_write_frame(int fd, uint32_t type, uint32_t session, const void *payload, uint32_t len)
{
    uint8_t h[AGENT_HDR_SIZE];
    agent_hdr_put(h, type, session, len);
    t_write_all(fd, h, sizeof(h));
    if (len)
        t_write_all(fd, payload, len);
}

uint64_t t_fnv(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}
