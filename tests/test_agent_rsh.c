/*
 * test_agent_rsh - vhpc-rsh against an agent's TCP port on 127.0.0.1, as
 * mpirun's rsh agent would use it: the remote exit status (7, 128+signal),
 * stdout and stderr apart, stdin forwarded (or not, with -n), ssh's joining
 * of arguments into one shell command line, names from /etc/hosts, and the
 * failures (refused, unknown host: 255); SIGTERM to vhpc-rsh reaches the
 * remote command; killing vhpc-rsh kills the remote command.
 */
#include "test_agent_util.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
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

static void test_names_and_failures(void)
{
    struct rsh_out o;
    if (etc_hosts_has_localhost()) {
        rsh(&o, NULL, 0, "-p", port_s, "localhost", "echo", "by-name", NULL);
        T_ASSERT(o.status == 0 && strcmp(o.out, "by-name\n") == 0, "localhost: %d '%s'", o.status,
                 o.err);
        rsh_free(&o);
    } else {
        printf("skipped: /etc/hosts has no 127.0.0.1 localhost\n");
    }
    rsh(&o, NULL, 0, "-p", port_s, "vhpc-no-such-host.invalid", "true", NULL);
    T_ASSERT(o.status == 255 && strstr(o.err, "Could not resolve hostname"), "unknown: %d '%s'",
             o.status, o.err);
    rsh_free(&o);

    /* A port nobody listens on: take one and close it again. */
    struct t_agent tmp;
    t_agent_start(&tmp, NULL);
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

int main(void)
{
    t_agent_start(&agent, NULL);
    snprintf(port_s, sizeof(port_s), "%d", agent.tcp_port);
    test_status_and_streams();
    test_big_stdin();
    test_names_and_failures();
    test_signal_rsh();
    test_kill_rsh();
    t_agent_stop(&agent);
    printf("ok\n");
    return 0;
}
