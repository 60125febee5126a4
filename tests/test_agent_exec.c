/*
 * test_agent_exec - commands through vhpc-agent, driven by libvhpc's agent
 * client over the agent's UNIX socket (the same stream a QEMU chardev
 * gives): HELLO, stdout and stderr apart, exit codes and signals, a command
 * that does not exist, cwd and env, 10 MiB of output with a checksum, stdin
 * forwarded, several commands at once through the event API, and a command
 * whose client goes away being killed.
 */
#include "test_agent_util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

static void expect(const struct t_out *o, int status, const char *out, const char *err)
{
    T_ASSERT(o->rc == 0, "run failed: %s", o->e.msg);
    T_ASSERT(o->status == status, "status %d, expected %d (stderr: %s)", o->status, status, o->err);
    T_ASSERT(strcmp(o->out, out) == 0, "stdout '%s', expected '%s'", o->out, out);
    T_ASSERT(strcmp(o->err, err) == 0, "stderr '%s', expected '%s'", o->err, err);
}

static void test_hello(agent_client_t *c)
{
    struct utsname u;
    const struct agent_hello *h = agent_client_hello(c);
    T_ASSERT(uname(&u) == 0, "uname");
    T_ASSERT(h && h->version == AGENT_PROTO_VERSION, "HELLO version");
    T_ASSERT(strcmp(h->kernel, u.release) == 0, "kernel '%s' vs '%s'", h->kernel, u.release);
    T_ASSERT(strcmp(h->hostname, u.nodename) == 0, "hostname '%s'", h->hostname);
}

static void test_basic(agent_client_t *c)
{
    struct t_out o;
    t_run(c, ARGV("echo", "hi"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "hi\n", "");
    t_out_free(&o);

    t_run(c, ARGV("sh", "-c", "echo out; echo err >&2; exit 3"), NULL, NULL, NULL, 0, &o);
    expect(&o, 3, "out\n", "err\n");
    t_out_free(&o);

    t_run(c, ARGV("sh", "-c", "kill -TERM $$"), NULL, NULL, NULL, 0, &o);
    expect(&o, 128 + SIGTERM, "", "");
    t_out_free(&o);

    /* No stdin requested: the command reads /dev/null. */
    t_run(c, ARGV("cat"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "", "");
    t_out_free(&o);
}

static void test_exec_failed(agent_client_t *c)
{
    struct t_out o;
    t_run(c, ARGV("vhpc-no-such-command"), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == -ENOENT, "rc %d: %s", o.rc, o.e.msg);
    T_ASSERT(strcmp(o.e.msg, "cannot run 'vhpc-no-such-command': No such file or directory") == 0,
             "message: %s", o.e.msg);
    t_out_free(&o);

    t_run(c, ARGV("/etc/passwd"), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == -EACCES, "rc %d: %s", o.rc, o.e.msg);
    T_ASSERT(strstr(o.e.msg, "Permission denied"), "message: %s", o.e.msg);
    t_out_free(&o);

    t_run(c, ARGV("pwd"), NULL, "/no/such/dir", NULL, 0, &o);
    T_ASSERT(o.rc == -ENOENT, "rc %d", o.rc);
    T_ASSERT(strcmp(o.e.msg, "cannot change to directory '/no/such/dir': No such file or "
                             "directory") == 0,
             "message: %s", o.e.msg);
    t_out_free(&o);

    /* The connection is still good afterwards. */
    t_run(c, ARGV("true"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "", "");
    t_out_free(&o);
}

static void test_env_cwd(agent_client_t *c)
{
    struct t_out o;
    t_run(c, ARGV("pwd"), NULL, "/tmp", NULL, 0, &o);
    expect(&o, 0, "/tmp\n", "");
    t_out_free(&o);
    t_run(c, ARGV("pwd"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "/\n", "");
    t_out_free(&o);

    /* Given variables are added, replacing the agent's; IVC_SOCKET is set
     * and empty so that libivc looks for the guest's device. */
    t_run(c, ARGV("sh", "-c", "echo \"$FOO|$BAR|${IVC_SOCKET-unset}|$VHPC_T\""),
          ARGV("FOO=1", "BAR=a b", "VHPC_T=new"), NULL, NULL, 0, &o);
    expect(&o, 0, "1|a b||new\n", "");
    t_out_free(&o);
    t_run(c, ARGV("sh", "-c", "env | grep -c '^VHPC_T='"), ARGV("VHPC_T=new"), NULL, NULL, 0, &o);
    expect(&o, 0, "1\n", "");
    t_out_free(&o);
    /* Nothing of the agent's leaks into a command (not even what the agent
     * inherited): ls has 0-2 and the directory it reads (3). */
    t_run(c, ARGV("ls", "/proc/self/fd"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "0\n1\n2\n3\n", "");
    t_out_free(&o);
    t_run(c, ARGV("ls", "/proc/self/fd"), NULL, NULL, "", 0, &o);
    expect(&o, 0, "0\n1\n2\n3\n", "");
    t_out_free(&o);
    /* PATH is the agent's: a command is found without a full path. */
    t_run(c, ARGV("sh", "-c", "command -v sh >/dev/null && echo ok"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "ok\n", "");
    t_out_free(&o);
}

/* 10 MiB and more of output, in order: `seq` is checked line by line. */
static void test_big_output(agent_client_t *c)
{
    struct t_out o;
    const int lines = 1500000;
    uint64_t t0 = t_now_ms();
    t_run(c, ARGV("seq", "1", "1500000"), NULL, NULL, NULL, 0, &o);
    uint64_t ms = t_now_ms() - t0;
    T_ASSERT(o.rc == 0 && o.status == 0, "seq: %d %d %s", o.rc, o.status, o.e.msg);
    char *expect_buf = malloc(o.out_len + 64);
    size_t n = 0;
    for (int i = 1; i <= lines; i++)
        n += (size_t)sprintf(expect_buf + n, "%d\n", i);
    T_ASSERT(n == o.out_len && n > (10u << 20), "got %zu bytes, expected %zu", o.out_len, n);
    T_ASSERT(t_fnv(expect_buf, n) == t_fnv(o.out, o.out_len), "checksum differs");
    printf("big output: %zu bytes in %llu ms\n", n, (unsigned long long)ms);
    free(expect_buf);
    t_out_free(&o);

    /* Binary data, both streams at once, with checksums. */
    t_run(c,
          ARGV("sh", "-c",
               "head -c 10485760 /dev/zero | tr '\\0' 'x' & head -c 3000000 /dev/zero >&2; wait"),
          NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && o.status == 0, "rc %d status %d", o.rc, o.status);
    T_ASSERT(o.out_len == 10485760 && o.err_len == 3000000, "%zu %zu", o.out_len, o.err_len);
    for (size_t i = 0; i < o.out_len; i++)
        T_ASSERT(o.out[i] == 'x', "stdout byte %zu", i);
    for (size_t i = 0; i < o.err_len; i++)
        T_ASSERT(o.err[i] == 0, "stderr byte %zu", i);
    t_out_free(&o);
}

static void test_stdin(agent_client_t *c)
{
    struct t_out o;
    size_t len = 6u << 20;
    uint8_t *data = malloc(len);
    t_fill(data, len, 7, 0);
    t_run(c, ARGV("cat"), NULL, NULL, data, len, &o);
    T_ASSERT(o.rc == 0 && o.status == 0, "cat: %s", o.e.msg);
    T_ASSERT(o.out_len == len && t_fnv(o.out, len) == t_fnv(data, len), "cat returned %zu bytes",
             o.out_len);
    t_out_free(&o);

    /* A command that reads only part of its stdin and exits. */
    t_run(c, ARGV("head", "-c", "5"), NULL, NULL, data, len, &o);
    T_ASSERT(o.rc == 0 && o.status == 0 && o.out_len == 5 && memcmp(o.out, data, 5) == 0,
             "head: %d %d %zu", o.rc, o.status, o.out_len);
    t_out_free(&o);

    /* stdin, then EOF: wc sees exactly what was sent. */
    t_run(c, ARGV("wc", "-c"), NULL, NULL, "hello\n", 6, &o);
    expect(&o, 0, "6\n", "");
    t_out_free(&o);
    free(data);
}

/* Several commands at once through the event API; one also gets a signal
 * and one gets stdin while the others print. */
static void test_concurrent(agent_client_t *c)
{
    enum { N = 8 };
    uint32_t ids[N];
    char script[N][200], *out[N];
    size_t out_len[N];
    int status[N], started = 0, exited = 0, pid_sig = 0;
    bool eof_out[N] = {0}, eof_err[N] = {0};
    vhpc_err_t e;
    struct agent_event ev;

    for (int i = 0; i < N; i++) {
        struct agent_exec_req req = {0};
        const char *argv[] = {"sh", "-c", script[i], NULL};
        snprintf(script[i], sizeof(script[i]),
                 "i=0; while [ $i -lt 2000 ]; do echo %d-$i; i=$((i+1)); done; exit %d", i, i);
        if (i == N - 1) {
            snprintf(script[i], sizeof(script[i]), "exec sleep 100");
        } else if (i == N - 2) {
            snprintf(script[i], sizeof(script[i]), "tr a-z A-Z; exit 42");
            req.flags = AGENT_EXEC_STDIN;
        }
        req.argv = argv;
        T_ASSERT(agent_client_exec(c, &req, &ids[i], &e) == 0, "%s", e.msg);
        out[i] = calloc(1, 1);
        out_len[i] = 0;
        status[i] = -1;
    }
    T_ASSERT(agent_client_send_stdin(c, ids[N - 2], "abc", 3, &e) == 0, "%s", e.msg);
    T_ASSERT(agent_client_send_stdin(c, ids[N - 2], "def\n", 4, &e) == 0, "%s", e.msg);
    T_ASSERT(agent_client_send_stdin(c, ids[N - 2], NULL, 0, &e) == 0, "%s", e.msg);

    uint64_t deadline = t_now_ms() + 60000;
    while (exited < N) {
        T_ASSERT(t_now_ms() < deadline, "commands did not finish (%d of %d)", exited, N);
        struct pollfd p = {.fd = agent_client_fd(c), .events = agent_client_poll_events(c)};
        T_ASSERT(poll(&p, 1, 1000) >= 0, "poll");
        int r;
        while ((r = agent_client_step(c, 0, &ev, &e)) > 0) {
            int i = 0;
            while (i < N && ids[i] != ev.session)
                i++;
            if (ev.type == AGENT_EV_HELLO || ev.type == AGENT_EV_PONG)
                continue;
            T_ASSERT(i < N, "event %d for unknown session %u", ev.type, ev.session);
            switch (ev.type) {
            case AGENT_EV_STARTED:
                T_ASSERT(ev.pid > 0, "pid");
                if (++started == N) {
                    /* All running: stop the sleeper. */
                    T_ASSERT(agent_client_signal(c, ids[N - 1], SIGINT, &e) == 0, "%s", e.msg);
                    pid_sig = ev.pid;
                }
                break;
            case AGENT_EV_STDOUT:
            case AGENT_EV_STDERR: {
                bool *eof = ev.type == AGENT_EV_STDOUT ? eof_out : eof_err;
                T_ASSERT(!eof[i], "data after EOF");
                if (ev.len == 0) {
                    eof[i] = true;
                    break;
                }
                T_ASSERT(ev.type == AGENT_EV_STDOUT, "unexpected stderr: %.*s", (int)ev.len,
                         ev.data);
                out[i] = realloc(out[i], out_len[i] + ev.len + 1);
                memcpy(out[i] + out_len[i], ev.data, ev.len);
                out_len[i] += ev.len;
                out[i][out_len[i]] = 0;
                break;
            }
            case AGENT_EV_EXIT:
                T_ASSERT(eof_out[i] && eof_err[i], "EXIT before both EOFs (session %d)", i);
                status[i] = ev.status;
                exited++;
                break;
            default: T_FAIL("unexpected event %d", ev.type);
            }
        }
        T_ASSERT(r == 0, "step: %s", e.msg);
    }
    (void)pid_sig;
    for (int i = 0; i < N - 2; i++) {
        T_ASSERT(status[i] == i, "session %d status %d", i, status[i]);
        char *p = out[i];
        for (int k = 0; k < 2000; k++) {
            char line[32];
            int l = snprintf(line, sizeof(line), "%d-%d\n", i, k);
            T_ASSERT(strncmp(p, line, (size_t)l) == 0, "session %d line %d: %.40s", i, k, p);
            p += l;
        }
        T_ASSERT(*p == 0, "session %d: trailing output", i);
    }
    T_ASSERT(status[N - 2] == 42 && strcmp(out[N - 2], "ABCDEF\n") == 0, "tr: %d '%s'",
             status[N - 2], out[N - 2]);
    T_ASSERT(status[N - 1] == 128 + SIGINT, "sleep: status %d", status[N - 1]);
    for (int i = 0; i < N; i++)
        free(out[i]);
}

/* The process group gets the signal: a shell's children too. */
static void test_signal_group(agent_client_t *c)
{
    vhpc_err_t e;
    struct agent_event ev;
    uint32_t id;
    char pidfile[200];
    snprintf(pidfile, sizeof(pidfile), "%s/child.pid", t_tmpdir());
    char script[300];
    snprintf(script, sizeof(script), "sleep 100 & echo $! > %s; wait", pidfile);
    struct agent_exec_req req = {.argv = ARGV("sh", "-c", script)};
    T_ASSERT(agent_client_exec(c, &req, &id, &e) == 0, "%s", e.msg);
    /* Wait until the child's pid is written. */
    pid_t child = 0;
    for (int i = 0; i < 500 && child <= 0; i++) {
        FILE *f = fopen(pidfile, "r");
        if (f) {
            if (fscanf(f, "%d", &child) != 1)
                child = 0;
            fclose(f);
        }
        T_ASSERT(agent_client_step(c, 10, &ev, &e) >= 0, "%s", e.msg);
    }
    T_ASSERT(child > 0, "no child pid");
    T_ASSERT(agent_client_signal(c, id, SIGTERM, &e) == 0, "%s", e.msg);
    int status = -1;
    while (status < 0) {
        int r = agent_client_step(c, 10000, &ev, &e);
        T_ASSERT(r > 0, "no EXIT: %s", r < 0 ? e.msg : "timeout");
        if (ev.type == AGENT_EV_EXIT && ev.session == id)
            status = ev.status;
    }
    T_ASSERT(status == 128 + SIGTERM, "status %d", status);
    for (int i = 0; i < 200 && kill(child, 0) == 0; i++)
        usleep(10000);
    T_ASSERT(kill(child, 0) < 0 && errno == ESRCH, "the shell's child %d survived", child);
}

/* A client that goes away: its running commands are killed. */
static void test_disconnect_kills(const struct t_agent *a)
{
    agent_client_t *c = t_agent_client(a);
    vhpc_err_t e;
    struct agent_event ev;
    uint32_t id;
    pid_t pid = 0;
    struct agent_exec_req req = {.argv = ARGV("sleep", "100")};
    T_ASSERT(agent_client_exec(c, &req, &id, &e) == 0, "%s", e.msg);
    while (pid == 0) {
        T_ASSERT(agent_client_step(c, 10000, &ev, &e) > 0, "no STARTED");
        if (ev.type == AGENT_EV_STARTED)
            pid = ev.pid;
    }
    T_ASSERT(kill(pid, 0) == 0, "sleep is not running");
    agent_client_close(c);
    for (int i = 0; i < 300 && kill(pid, 0) == 0; i++)
        usleep(10000);
    T_ASSERT(kill(pid, 0) < 0 && errno == ESRCH, "sleep %d outlived its client", pid);
}

/* Background output after the command exits is bounded by the linger time:
 * EXIT comes although a background process keeps the pipes open. */
static void test_linger(agent_client_t *c)
{
    struct t_out o;
    uint64_t t0 = t_now_ms();
    t_run(c, ARGV("sh", "-c", "sleep 3 & echo done"), NULL, NULL, NULL, 0, &o);
    uint64_t ms = t_now_ms() - t0;
    expect(&o, 0, "done\n", "");
    T_ASSERT(ms < 2500, "EXIT took %llu ms", (unsigned long long)ms);
    t_out_free(&o);
}

/* A second client comes and goes (killing its commands); the first one
 * still works afterwards. */
static void test_disconnect(const struct t_agent *a, agent_client_t *c)
{
    struct t_out o;
    test_disconnect_kills(a);
    t_run(c, ARGV("echo", "still"), NULL, NULL, NULL, 0, &o);
    expect(&o, 0, "still\n", "");
    t_out_free(&o);
}

/* Each case has an agent of its own and a client connected to it. */
#define CASE(name, ...)                                                                            \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        struct t_agent a;                                                                          \
        t_agent_start(&a, NULL);                                                                   \
        agent_client_t *c = t_agent_client(&a);                                                    \
        test_##name(__VA_ARGS__);                                                                  \
        agent_client_close(c);                                                                     \
        t_agent_stop(&a);                                                                          \
    }
CASE(hello, c)
CASE(basic, c)
CASE(exec_failed, c)
CASE(env_cwd, c)
CASE(big_output, c)
CASE(stdin, c)
CASE(concurrent, c)
CASE(signal_group, c)
CASE(linger, c)
CASE(disconnect, &a, c)

static const struct t_case cases[] = {
    {"hello", case_hello, 30},
    {"basic", case_basic, 30},
    {"exec_failed", case_exec_failed, 30},
    {"env_cwd", case_env_cwd, 30},
    {"big_output", case_big_output, 60},
    {"stdin", case_stdin, 60},
    {"concurrent", case_concurrent, 60},
    {"signal_group", case_signal_group, 30},
    {"linger", case_linger, 30},
    {"disconnect", case_disconnect, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
