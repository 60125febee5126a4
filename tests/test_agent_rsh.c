/*
 * test_agent_rsh - vhpc-rsh against an agent's TCP port on 127.0.0.1, as
 * mpirun's rsh agent would use it: the remote exit status (7, 128+signal),
 * stdout and stderr apart, stdin forwarded (or not, with -n), ssh's joining
 * of arguments into one shell command line, names from /etc/hosts, and the
 * failures (refused, unknown host: 255); SIGTERM to vhpc-rsh reaches the
 * remote command; killing vhpc-rsh kills the remote command.
 *
 * And that nobody gets in without the job's key (issue 9, finding 1): a
 * wrong or missing key, frames before AUTH, a replayed AUTH, KEY over TCP,
 * an agent that has no key yet, a client that never authenticates, and a
 * flood of idle connections.
 */
#include "test_agent_util.h"

#include "sha256.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static struct t_agent agent;
static char port_s[16];

struct rsh_run {
    const char *argv[32];
    int in, out, err;
};

static int exec_rsh(void *p)
{
    struct rsh_run *r = p;
    dup2(r->in, 0);
    dup2(r->out, 1);
    dup2(r->err, 2);
    execv(r->argv[0], (char *const *)r->argv);
    return 126;
}

struct rsh_out {
    int status;
    char *out, *err;
    size_t out_len, err_len;
};

/* Run vhpc-rsh with `args` (NULL-terminated) and `in` as its stdin. */
static void rsh(struct rsh_out *o, const void *in, size_t in_len, ...)
{
    struct rsh_run r = {.argv = {getenv("VHPC_RSH")}};
    va_list ap;
    int n = 1;
    T_ASSERT(r.argv[0], "VHPC_RSH is not set");
    va_start(ap, in_len);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 31;)
        r.argv[n++] = a;
    va_end(ap);
    r.argv[n] = NULL;
    r.in = t_memfd_with(in ? in : "", in ? in_len : 0);
    r.out = t_memfd_with("", 0);
    r.err = t_memfd_with("", 0);
    pid_t pid = t_fork(exec_rsh, &r);
    o->status = t_wait_bounded(pid, 60000, "vhpc-rsh");
    o->out = t_slurp(r.out, &o->out_len);
    o->err = t_slurp(r.err, &o->err_len);
    close(r.in);
    close(r.out);
    close(r.err);
}

static void rsh_free(struct rsh_out *o)
{
    free(o->out);
    free(o->err);
}

static void test_status_and_streams(void)
{
    struct rsh_out o;
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", "sh -c 'exit 7'", NULL);
    T_ASSERT(o.status == 7, "status %d (%s)", o.status, o.err);
    rsh_free(&o);
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", "exit", "7", NULL);
    T_ASSERT(o.status == 7, "status %d", o.status);
    rsh_free(&o);
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", "kill -9 $$", NULL);
    T_ASSERT(o.status == 128 + SIGKILL, "status %d", o.status);
    rsh_free(&o);

    rsh(&o, "from stdin\n", 11, "-p", port_s, "127.0.0.1", "cat; echo to-stderr >&2; exit 3", NULL);
    T_ASSERT(o.status == 3, "status %d", o.status);
    T_ASSERT(strcmp(o.out, "from stdin\n") == 0, "stdout '%s'", o.out);
    T_ASSERT(strcmp(o.err, "to-stderr\n") == 0, "stderr '%s'", o.err);
    rsh_free(&o);

    /* -n: the remote command gets no stdin. */
    rsh(&o, "ignored\n", 8, "-n", "-p", port_s, "127.0.0.1", "cat", NULL);
    T_ASSERT(o.status == 0 && o.out_len == 0, "-n: status %d out '%s'", o.status, o.out);
    rsh_free(&o);

    /* Like ssh, the arguments become one command line for the remote shell. */
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", "echo", "a   b", "'c   d'", NULL);
    T_ASSERT(o.status == 0 && strcmp(o.out, "a b c   d\n") == 0, "joined: '%s'", o.out);
    rsh_free(&o);

    /* ssh's options and user@host are accepted. */
    rsh(&o, NULL, 0, "-x", "-T", "-o", "BatchMode=yes", "-l", "nobody", "-p", port_s,
        "root@127.0.0.1", "echo", "ok", NULL);
    T_ASSERT(o.status == 0 && strcmp(o.out, "ok\n") == 0, "options: %d '%s' '%s'", o.status, o.out,
             o.err);
    rsh_free(&o);
}

static void test_big_stdin(void)
{
    struct rsh_out o;
    size_t len = 3u << 20;
    uint8_t *data = malloc(len);
    t_fill(data, len, 3, 0);
    rsh(&o, data, len, "-p", port_s, "127.0.0.1", "cat", NULL);
    T_ASSERT(o.status == 0 && o.out_len == len && t_fnv(o.out, len) == t_fnv(data, len),
             "cat via rsh: status %d, %zu bytes", o.status, o.out_len);
    rsh_free(&o);
    free(data);
}

static bool etc_hosts_has_localhost(void)
{
    FILE *f = fopen("/etc/hosts", "r");
    char line[512];
    bool found = false;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "127.0.0.1", 9) == 0 && strstr(line, "localhost"))
            found = true;
    if (f)
        fclose(f);
    return found;
}

/* A host given by name. */
static void test_by_name(void)
{
    struct rsh_out o;
    if (!etc_hosts_has_localhost())
        T_SKIP("/etc/hosts has no 127.0.0.1 localhost");
    rsh(&o, NULL, 0, "-p", port_s, "localhost", "echo", "by-name", NULL);
    T_ASSERT(o.status == 0 && strcmp(o.out, "by-name\n") == 0, "localhost: %d '%s'", o.status,
             o.err);
    rsh_free(&o);
}

/* An unknown host, a refused port, no command. */
static void test_failures(void)
{
    struct rsh_out o;
    rsh(&o, NULL, 0, "-p", port_s, "vhpc-no-such-host.invalid", "true", NULL);
    T_ASSERT(o.status == 255 && strstr(o.err, "Could not resolve hostname"), "unknown: %d '%s'",
             o.status, o.err);
    rsh_free(&o);

    /* A port nobody listens on: take one and close it again. */
    struct t_agent tmp;
    t_agent_start_nokey(&tmp, NULL);
    char dead[16];
    snprintf(dead, sizeof(dead), "%d", tmp.tcp_port);
    t_agent_stop(&tmp);
    rsh(&o, NULL, 0, "-p", dead, "127.0.0.1", "true", NULL);
    T_ASSERT(o.status == 255 && strstr(o.err, "connect to host 127.0.0.1 port") &&
                 strstr(o.err, "Connection refused"),
             "refused: %d '%s'", o.status, o.err);
    rsh_free(&o);

    rsh(&o, NULL, 0, "127.0.0.1", NULL);
    T_ASSERT(o.status == 255 && strstr(o.err, "usage"), "no command: %d", o.status);
    rsh_free(&o);
}

/* A vhpc-rsh running `cmd` (no stdin) whose stdout is a pipe: returns its
 * pid, *out the pipe's read end. */
static pid_t spawn_rsh(struct rsh_run *r, const char *cmd, int *out)
{
    *r = (struct rsh_run){.argv = {getenv("VHPC_RSH"), "-n", "-p", port_s, "127.0.0.1", cmd, NULL}};
    int pfd[2];
    T_ASSERT(pipe(pfd) == 0, "pipe");
    r->in = t_memfd_with("", 0);
    r->out = pfd[1];
    r->err = 2;
    pid_t pid = t_fork(exec_rsh, r);
    close(pfd[1]);
    *out = pfd[0];
    return pid;
}

/* mpirun kills its rsh children on abort: the remote command must go too. */
static void test_kill_rsh(void)
{
    struct rsh_run r;
    int out;
    pid_t pid = spawn_rsh(&r, "echo $$; exec sleep 100", &out);
    char buf[32] = "";
    ssize_t n = read(out, buf, sizeof(buf) - 1);
    T_ASSERT(n > 0, "no pid from the remote shell");
    pid_t remote = atoi(buf);
    T_ASSERT(remote > 0 && kill(remote, 0) == 0, "remote sleep %d not running", remote);
    kill(pid, SIGKILL);
    t_wait(pid);
    for (int i = 0; i < 300 && kill(remote, 0) == 0; i++)
        usleep(10000);
    T_ASSERT(kill(remote, 0) < 0 && errno == ESRCH, "remote command outlived vhpc-rsh");
    close(out);
    close(r.in);
}

/* mpirun stops its daemons with SIGTERM: vhpc-rsh passes it on and exits
 * with the remote command's status. */
static void test_signal_rsh(void)
{
    struct rsh_run r;
    int out;
    pid_t pid =
        spawn_rsh(&r, "trap 'echo got-term; exit 9' TERM; echo ready; sleep 100 & wait", &out);
    char buf[64] = "";
    size_t got = 0;
    ssize_t n;
    while (!strstr(buf, "ready\n") && (n = read(out, buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)n;
    T_ASSERT(strstr(buf, "ready\n"), "remote shell not ready: '%s'", buf);
    kill(pid, SIGTERM);
    while ((n = read(out, buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = 0;
    int st = t_wait_bounded(pid, 10000, "vhpc-rsh after SIGTERM");
    T_ASSERT(st == 9 && strstr(buf, "got-term"), "SIGTERM forwarded: status %d, out '%s'", st, buf);
    close(out);
    close(r.in);
}

/* ---- authentication --------------------------------------------------------- */

static int tcp_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_ASSERT(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
             strerror(errno));
    return fd;
}

/* Read one whole frame (at most `cap` payload bytes) within 10 s; returns its
 * type, or 0 if the agent closed the connection instead. */
static uint32_t read_frame(int fd, uint8_t *payload, size_t cap, uint32_t *len)
{
    uint8_t hdr[AGENT_HDR_SIZE];
    size_t got = 0;
    struct agent_hdr h;
    while (got < sizeof(hdr)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        T_ASSERT(poll(&p, 1, 10000) == 1, "nothing from the agent in 10 s");
        ssize_t n = read(fd, hdr + got, sizeof(hdr) - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    T_ASSERT(agent_hdr_get(hdr, &h) && h.len <= cap, "bad frame from the agent");
    for (got = 0; got < h.len;) {
        ssize_t n = read(fd, payload + got, h.len - got);
        T_ASSERT(n > 0, "frame cut short");
        got += (size_t)n;
    }
    *len = h.len;
    return h.type;
}

static void send_frame(int fd, uint32_t type, const void *payload, uint32_t len)
{
    uint8_t buf[AGENT_HDR_SIZE + 256];
    T_ASSERT(len <= 256, "frame too big for the test");
    agent_hdr_put(buf, type, 1, len);
    memcpy(buf + AGENT_HDR_SIZE, payload, len);
    T_ASSERT(write(fd, buf, AGENT_HDR_SIZE + len) == (ssize_t)(AGENT_HDR_SIZE + len), "write");
}

/* True once the agent closed fd (within 10 s), skipping what it sent. */
static bool closed_by_agent(int fd)
{
    uint8_t buf[4096];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) != 1)
            return false;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return true;
    }
}

/* An EXEC payload for `/bin/sh -c cmd`. */
static uint32_t exec_payload(uint8_t *p, const char *cmd)
{
    uint8_t *q = agent_wr_u32(agent_wr_u32(agent_wr_u32(p, 0), 3), 0);
    q = agent_wr_str(agent_wr_str(agent_wr_str(q, "/bin/sh"), "-c"), cmd);
    q = agent_wr_str(q, "");
    return (uint32_t)(q - p);
}

static void client_mac(const uint8_t *key, const uint8_t *na, const uint8_t *nc, uint8_t *out)
{
    struct vhpc_iov parts[] = {
        {AGENT_MAC_CLIENT, sizeof(AGENT_MAC_CLIENT)}, {na, AGENT_NONCE_LEN}, {nc, AGENT_NONCE_LEN}};
    vhpc_hmac_sha256(key, AGENT_KEY_LEN, parts, 3, out);
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static void test_auth(void)
{
    char pwned[256], wrong[256], cmd[300];
    uint8_t buf[512], nonce_c[AGENT_NONCE_LEN];
    uint32_t len;
    struct rsh_out o;
    snprintf(pwned, sizeof(pwned), "%s/pwned", t_tmpdir());
    snprintf(cmd, sizeof(cmd), "touch %s", pwned);

    /* The right key: works (the other tests show more). */
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", "echo", "in", NULL);
    T_ASSERT(o.status == 0 && !strcmp(o.out, "in\n"), "with the key: %d '%s'", o.status, o.err);
    rsh_free(&o);

    /* A wrong key: refused, nothing runs. */
    snprintf(wrong, sizeof(wrong), "%s/wrong.key", t_tmpdir());
    uint8_t bad[AGENT_KEY_LEN];
    T_ASSERT(getrandom(bad, sizeof(bad), 0) == (ssize_t)sizeof(bad), "getrandom");
    int kfd = open(wrong, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    T_ASSERT(kfd >= 0 && write(kfd, bad, sizeof(bad)) == (ssize_t)sizeof(bad), "key file");
    close(kfd);
    setenv("VHPC_KEY_FILE", wrong, 1);
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", cmd, NULL);
    T_ASSERT(o.status == 255 && strstr(o.err, "refused") && !exists(pwned), "wrong key: %d '%s'",
             o.status, o.err);
    rsh_free(&o);
    /* No key at all: says where it looked. */
    setenv("VHPC_KEY_FILE", "/nonexistent/job.key", 1);
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", cmd, NULL);
    T_ASSERT(o.status == 255 && strstr(o.err, "/nonexistent/job.key") && !exists(pwned),
             "no key: %d '%s'", o.status, o.err);
    rsh_free(&o);
    setenv("VHPC_KEY_FILE", agent.key_file, 1);

    /* A client that skips authentication: the first frame is CHALLENGE,
     * an EXEC in reply ends the connection and runs nothing. */
    int fd = tcp_connect(agent.tcp_port);
    T_ASSERT(read_frame(fd, buf, sizeof(buf), &len) == AGENT_CHALLENGE &&
                 len == 4 + AGENT_NONCE_LEN,
             "first frame is not a CHALLENGE");
    uint8_t ex[300];
    send_frame(fd, AGENT_EXEC, ex, exec_payload(ex, cmd));
    T_ASSERT(closed_by_agent(fd) && !exists(pwned), "EXEC before AUTH was not refused");
    close(fd);

    /* KEY over TCP: refused (it may only come from the host). */
    fd = tcp_connect(agent.tcp_port);
    T_ASSERT(read_frame(fd, buf, sizeof(buf), &len) == AGENT_CHALLENGE, "CHALLENGE");
    send_frame(fd, AGENT_KEY, bad, sizeof(bad));
    T_ASSERT(closed_by_agent(fd), "KEY over TCP was not refused");
    close(fd);

    /* A replay: a correct AUTH for one connection's challenge, sent on
     * another connection, is refused. */
    int fa = tcp_connect(agent.tcp_port), fb = tcp_connect(agent.tcp_port);
    uint8_t na[4 + AGENT_NONCE_LEN], nb[4 + AGENT_NONCE_LEN], auth[AGENT_NONCE_LEN + AGENT_MAC_LEN];
    T_ASSERT(read_frame(fa, na, sizeof(na), &len) == AGENT_CHALLENGE &&
                 read_frame(fb, nb, sizeof(nb), &len) == AGENT_CHALLENGE,
             "CHALLENGEs");
    T_ASSERT(memcmp(na + 4, nb + 4, AGENT_NONCE_LEN) != 0, "two connections got the same nonce");
    T_ASSERT(getrandom(nonce_c, sizeof(nonce_c), 0) == (ssize_t)sizeof(nonce_c), "getrandom");
    memcpy(auth, nonce_c, AGENT_NONCE_LEN);
    client_mac(agent.key, na + 4, nonce_c, auth + AGENT_NONCE_LEN);
    send_frame(fb, AGENT_AUTH, auth, sizeof(auth));
    T_ASSERT(closed_by_agent(fb), "an AUTH made for another challenge was accepted");
    /* ... while on its own connection the same AUTH works. */
    send_frame(fa, AGENT_AUTH, auth, sizeof(auth));
    T_ASSERT(read_frame(fa, buf, sizeof(buf), &len) == AGENT_AUTH_OK && len == AGENT_MAC_LEN,
             "a correct AUTH was not answered with AUTH_OK");
    close(fa);
    close(fb);

    /* A client that never authenticates is dropped after AGENT_AUTH_MS. */
    fd = tcp_connect(agent.tcp_port);
    uint64_t t0 = t_now_ms();
    T_ASSERT(read_frame(fd, buf, sizeof(buf), &len) == AGENT_CHALLENGE, "CHALLENGE");
    T_ASSERT(closed_by_agent(fd), "an idle unauthenticated client was kept");
    T_ASSERT(t_now_ms() - t0 >= AGENT_AUTH_MS - 100, "dropped before its time");
    close(fd);

    /* At most AGENT_MAX_UNAUTH wait to authenticate; the next is refused at
     * once, and a real client works again when they are gone. */
    int idle[AGENT_MAX_UNAUTH];
    for (int i = 0; i < AGENT_MAX_UNAUTH; i++) {
        idle[i] = tcp_connect(agent.tcp_port);
        T_ASSERT(read_frame(idle[i], buf, sizeof(buf), &len) == AGENT_CHALLENGE, "CHALLENGE %d", i);
    }
    fd = tcp_connect(agent.tcp_port);
    T_ASSERT(read_frame(fd, buf, sizeof(buf), &len) == 0, "connection %d was not refused",
             AGENT_MAX_UNAUTH + 1);
    close(fd);
    for (int i = 0; i < AGENT_MAX_UNAUTH; i++)
        close(idle[i]);
    usleep(100000);
    rsh(&o, NULL, 0, "-p", port_s, "127.0.0.1", "echo", "again", NULL);
    T_ASSERT(o.status == 0 && !strcmp(o.out, "again\n"), "after the flood: %d '%s'", o.status,
             o.err);
    rsh_free(&o);

    /* An agent that has no key yet admits nobody. */
    struct t_agent nokey;
    char p2[16];
    t_agent_start_nokey(&nokey, (const char *const[]){"--tcp-any", NULL});
    snprintf(p2, sizeof(p2), "%d", nokey.tcp_port);
    rsh(&o, NULL, 0, "-p", p2, "127.0.0.1", cmd, NULL);
    T_ASSERT(o.status == 255 && !exists(pwned), "agent without a key: %d '%s'", o.status, o.err);
    rsh_free(&o);
    t_agent_stop(&nokey);
}

/* Each case has an agent of its own. */
#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        t_agent_start(&agent, NULL);                                                               \
        snprintf(port_s, sizeof(port_s), "%d", agent.tcp_port);                                    \
        test_##name();                                                                             \
        t_agent_stop(&agent);                                                                      \
    }
CASE(status_and_streams)
CASE(big_stdin)
CASE(by_name)
CASE(failures)
CASE(signal_rsh)
CASE(kill_rsh)
CASE(auth)

static const struct t_case cases[] = {
    {"status_and_streams", case_status_and_streams, 30},
    {"big_stdin", case_big_stdin, 60},
    {"by_name", case_by_name, 30},
    {"failures", case_failures, 30},
    {"signal_rsh", case_signal_rsh, 30},
    {"kill_rsh", case_kill_rsh, 30},
    {"auth", case_auth, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
