/*
 * session.c - what a connection asks the agent to do: commands (fork, exec,
 * pipes for stdin/stdout/stderr, exit status, signals) and file transfers
 * (PUT_FILE, GET_FILE).  Each session belongs to the connection that started
 * it and dies with it.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct session *session_find(struct conn *c, uint32_t id)
{
    for (struct session *s = c->sessions; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static struct session *session_new(struct conn *c, uint32_t id, enum session_kind kind)
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

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

void session_free(struct session *s, bool kill_group)
{
    for (struct session **ps = &s->conn->sessions; *ps; ps = &(*ps)->next) {
        if (*ps == s) {
            *ps = s->next;
            break;
        }
    }
    if (s->kind == S_CMD && kill_group && !s->exited)
        kill(-s->pid, SIGKILL); /* reaped later, reported to nobody */
    close_fd(&s->out_fd);
    close_fd(&s->err_fd);
    close_fd(&s->in_fd);
    close_fd(&s->file_fd);
    agent_buf_free(&s->stdin_q);
    free(s);
}

static void send_i32(struct conn *c, uint32_t type, uint32_t id, int32_t v)
{
    uint8_t *p = conn_frame(c, type, id, 4);
    if (p)
        agent_wr_u32(p, (uint32_t)v);
}

static void exec_failed(struct conn *c, uint32_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void exec_failed(struct conn *c, uint32_t id, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    agent_debug("%s: session %u: %s", c->name, id, msg);
    uint8_t *p = conn_frame(c, AGENT_EXEC_FAILED, id, 4 + 4 + (uint32_t)strlen(msg));
    if (p)
        agent_wr_str(agent_wr_u32(p, (uint32_t)err), msg);
}

/* The agent's environment with `add` ("K=V" each) put over it. */
static char **make_env(char **add, uint32_t n)
{
    size_t base = 0;
    while (environ[base])
        base++;
    char **env = malloc((base + n + 1) * sizeof(*env));
    size_t k = 0;
    if (!env)
        return NULL;
    for (size_t i = 0; i < base; i++) {
        const char *e = environ[i];
        size_t klen = strcspn(e, "=");
        bool replaced = false;
        for (uint32_t j = 0; j < n && !replaced; j++)
            replaced = strncmp(add[j], e, klen) == 0 && add[j][klen] == '=';
        if (!replaced)
            env[k++] = (char *)e;
    }
    for (uint32_t j = 0; j < n; j++)
        env[k++] = add[j];
    env[k] = NULL;
    return env;
}

/* What the child reports through its close-on-exec pipe when it fails. */
struct child_err {
    int err;
    int chdir_failed;
};

static void __attribute__((noreturn))
child(char **argv, char **env, const char *cwd, int in_fd, int out_fd, int err_fd, int report)
{
    struct child_err ce = {0, 0};
    sigset_t all;

    setsid();
    if (in_fd < 0)
        in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd >= 0 && in_fd != 0)
        dup2(in_fd, 0);
    else if (in_fd < 0)
        close(0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (chdir(*cwd ? cwd : "/") < 0) {
        ce.err = errno;
        ce.chdir_failed = 1;
    } else {
        environ = env; /* execvp() searches the PATH of environ */
        execvp(argv[0], argv);
        ce.err = errno;
    }
    ssize_t w = write(report, &ce, sizeof(ce));
    (void)w;
    _exit(127);
}

/* Pipes for the child: the agent's ends are non-blocking, the child's are
 * not (O_NONBLOCK belongs to each end's own open file description). */
static int pipe_for_child(int fds[2], int agent_end)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    fcntl(fds[agent_end], F_SETFL, O_NONBLOCK);
    return 0;
}

void session_exec(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len)
{
    struct exec_req x;
    char **env = NULL;
    int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, rep[2] = {-1, -1};

    if (id == 0) {
        conn_complain(c, "EXEC without a session number ignored");
        return;
    }
    if (session_find(c, id)) {
        exec_failed(c, id, EEXIST, "session %u is already in use", id);
        return;
    }
    int e = req_exec_parse(payload, len, &x);
    if (e) {
        exec_failed(c, id, e, "%s", e == ENOMEM ? "out of memory" : "malformed EXEC");
        return;
    }
    char **argv = x.argv, **add = x.env, *cwd = x.cwd;
    uint32_t flags = x.flags, envc = x.envc;
    env = make_env(add, envc);
    if (!env) {
        exec_failed(c, id, ENOMEM, "out of memory");
        goto out;
    }
    if (pipe_for_child(out, 0) < 0 || pipe_for_child(err, 0) < 0 ||
        ((flags & AGENT_EXEC_STDIN) && pipe_for_child(in, 1) < 0) || pipe2(rep, O_CLOEXEC) < 0) {
        exec_failed(c, id, errno, "cannot run '%s': pipe: %s", argv[0], strerror(errno));
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        exec_failed(c, id, errno, "cannot run '%s': fork: %s", argv[0], strerror(errno));
        goto out;
    }
    if (pid == 0)
        child(argv, env, cwd, in[0], out[1], err[1], rep[1]);
    close_fd(&rep[1]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&in[0]);

    struct child_err ce;
    ssize_t n;
    while ((n = read(rep[0], &ce, sizeof(ce))) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof(ce)) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (ce.chdir_failed)
            exec_failed(c, id, ce.err, "cannot change to directory '%s': %s", cwd,
                        strerror(ce.err));
        else
            exec_failed(c, id, ce.err, "cannot run '%s': %s", argv[0], strerror(ce.err));
        goto out;
    }
    struct session *s = session_new(c, id, S_CMD);
    if (!s) {
        kill(-pid, SIGKILL);
        exec_failed(c, id, ENOMEM, "out of memory");
        goto out;
    }
    s->pid = pid;
    s->out_fd = out[0];
    s->err_fd = err[0];
    s->in_fd = in[1];
    out[0] = err[0] = in[1] = -1;
    agent_debug("%s: session %u: started '%s' as pid %d", c->name, id, argv[0], (int)pid);
    send_i32(c, AGENT_STARTED, id, pid);
out:
    for (int i = 0; i < 2; i++) {
        close_fd(&out[i]);
        close_fd(&err[i]);
        close_fd(&in[i]);
        close_fd(&rep[i]);
    }
    free(env);
    req_exec_free(&x);
}

void session_pump_stdin(struct session *s)
{
    while (s->in_fd >= 0 && agent_buf_pending(&s->stdin_q)) {
        ssize_t n =
            write(s->in_fd, s->stdin_q.data + s->stdin_q.head, agent_buf_pending(&s->stdin_q));
        if (n > 0) {
            agent_buf_consume(&s->stdin_q, (size_t)n);
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else if (!(n < 0 && errno == EINTR)) {
            /* The command closed its stdin: what it did not read is dropped. */
            close_fd(&s->in_fd);
            agent_buf_free(&s->stdin_q);
        }
    }
    if (s->stdin_eof && !agent_buf_pending(&s->stdin_q))
        close_fd(&s->in_fd);
}

void session_stdin(struct conn *c, uint32_t id, const uint8_t *data, uint32_t len)
{
    struct session *s = session_find(c, id);
    if (!s || s->kind != S_CMD || s->in_fd < 0 || s->stdin_eof)
        return; /* gone, no stdin, or closed: nothing reads it */
    if (len == 0) {
        s->stdin_eof = true;
    } else {
        uint8_t *p = agent_buf_reserve(&s->stdin_q, len);
        if (!p) {
            agent_log("%s: session %u: out of memory, stdin dropped", c->name, id);
            return;
        }
        memcpy(p, data, len);
        s->stdin_q.len += len;
    }
    session_pump_stdin(s);
}

void session_signal(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len)
{
    int sig;
    struct session *s = session_find(c, id);
    if (req_signal_parse(payload, len, &sig)) {
        conn_complain(c, "malformed SIGNAL ignored");
        return;
    }
    /* After the leader was reaped its pid may be reused: signal no more. */
    if (s && s->kind == S_CMD && !s->exited)
        kill(-s->pid, sig);
}

void session_pump_output(struct session *s, int fd)
{
    struct conn *c = s->conn;
    uint32_t type = fd == s->out_fd ? AGENT_STDOUT : AGENT_STDERR;
    if (!conn_can_send(c))
        return;
    uint8_t *p = agent_buf_reserve(&c->out, AGENT_HDR_SIZE + AGENT_MAX_CHUNK);
    if (!p)
        return;
    ssize_t n = read(fd, p + AGENT_HDR_SIZE, AGENT_MAX_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0)
        n = 0; /* a read error ends the stream like EOF */
    agent_hdr_put(p, type, s->id, (uint32_t)n);
    c->out.len += AGENT_HDR_SIZE + (size_t)n;
    if (n == 0)
        close_fd(type == AGENT_STDOUT ? &s->out_fd : &s->err_fd);
}

void session_reaped(pid_t pid, int status)
{
    for (struct conn *c = agent.conns; c; c = c->next) {
        for (struct session *s = c->sessions; s; s = s->next) {
            if (s->kind != S_CMD || s->pid != pid || s->exited)
                continue;
            s->exited = true;
            s->exit_ms = agent_now_ms();
            if (WIFSIGNALED(status)) {
                s->exit_kind = AGENT_EXIT_SIGNAL;
                s->exit_value = WTERMSIG(status);
            } else {
                s->exit_kind = AGENT_EXIT_CODE;
                s->exit_value = WEXITSTATUS(status);
            }
            return;
        }
    }
    /* Not ours (an orphan reaped as PID 1, or a session already gone). */
}

/* Report EXIT once the output is drained: both pipes at EOF, or the linger
 * time is over (then what is readable at once still goes out). */
static bool try_finish(struct session *s, uint64_t now, int *timeout)
{
    struct conn *c = s->conn;
    if (s->out_fd >= 0 || s->err_fd >= 0) {
        uint64_t due = s->exit_ms + AGENT_LINGER_MS;
        if (now < due) {
            int left = (int)(due - now);
            if (*timeout < 0 || *timeout > left)
                *timeout = left;
            return false;
        }
        if (!conn_can_send(c))
            return false; /* the peer is behind: the command's last output waits */
        if (s->out_fd >= 0)
            session_pump_output(s, s->out_fd);
        if (s->err_fd >= 0)
            session_pump_output(s, s->err_fd);
        for (uint32_t type = AGENT_STDOUT; type <= AGENT_STDERR; type++) {
            int *fd = type == AGENT_STDOUT ? &s->out_fd : &s->err_fd;
            if (*fd >= 0) {
                close_fd(fd);
                conn_frame(c, type, s->id, 0);
            }
        }
    }
    uint8_t *p = conn_frame(c, AGENT_EXIT, s->id, 8);
    if (p)
        agent_wr_u32(agent_wr_u32(p, (uint32_t)s->exit_kind), (uint32_t)s->exit_value);
    agent_debug("%s: session %u: pid %d exited (%s %d)", c->name, s->id, (int)s->pid,
                s->exit_kind == AGENT_EXIT_CODE ? "code" : "signal", s->exit_value);
    session_free(s, false);
    return true;
}

int sessions_finish(void)
{
    int timeout = -1;
    uint64_t now = agent_now_ms();
    for (struct conn *c = agent.conns; c; c = c->next) {
        for (struct session *s = c->sessions, *next; s; s = next) {
            next = s->next;
            if (s->kind == S_CMD && s->exited)
                try_finish(s, now, &timeout);
        }
    }
    return timeout;
}

void sessions_kill_all(int sig)
{
    for (struct conn *c = agent.conns; c; c = c->next)
        for (struct session *s = c->sessions; s; s = s->next)
            if (s->kind == S_CMD && !s->exited)
                kill(-s->pid, sig);
}

bool sessions_any_cmd(void)
{
    for (struct conn *c = agent.conns; c; c = c->next)
        for (struct session *s = c->sessions; s; s = s->next)
            if (s->kind == S_CMD)
                return true;
    return false;
}

void sessions_pump_all(void)
{
    for (struct conn *c = agent.conns; c; c = c->next) {
        for (struct session *s = c->sessions; s; s = s->next) {
            if (s->kind != S_CMD)
                continue;
            if (s->out_fd >= 0)
                session_pump_output(s, s->out_fd);
            if (s->err_fd >= 0)
                session_pump_output(s, s->err_fd);
        }
    }
}

/* ---- files ----------------------------------------------------------------- */

/* Write all of buf to a file; 0 or an errno value. */
static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Open a file to write without blocking on a FIFO that nobody reads. */
static int open_for_put(const char *path, uint32_t mode, int *fd)
{
    *fd =
        open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, mode & 07777);
    if (*fd < 0)
        return errno;
    fcntl(*fd, F_SETFL, 0);
    if (fchmod(*fd, mode & 07777) < 0 && errno != EROFS && errno != EPERM) {
        int e = errno;
        close_fd(fd);
        return e;
    }
    return 0;
}

void session_put(struct conn *c, uint32_t id, uint32_t type, const uint8_t *payload, uint32_t len)
{
    struct session *s = session_find(c, id);
    if (type != AGENT_PUT_FILE) {
        if (!s || s->kind != S_PUT) {
            conn_complain(c, "%s for unknown transfer %u ignored",
                          type == AGENT_FILE_DATA ? "FILE_DATA" : "FILE_END", id);
            return;
        }
        if (type == AGENT_FILE_DATA) {
            if (!s->file_err)
                s->file_err = write_all(s->file_fd, payload, len);
            return;
        }
        if (close(s->file_fd) < 0 && !s->file_err)
            s->file_err = errno;
        s->file_fd = -1;
        send_i32(c, AGENT_PUT_DONE, id, s->file_err);
        session_free(s, false);
        return;
    }
    uint32_t mode, dlen;
    char *path;
    const uint8_t *data;
    int bad = req_put_parse(payload, len, &mode, &path, &data, &dlen);
    int fd = -1, e;
    if (id == 0 || bad) {
        conn_complain(c, "malformed PUT_FILE");
        send_i32(c, AGENT_PUT_DONE, id, EPROTO);
        goto out;
    }
    if (s) {
        send_i32(c, AGENT_PUT_DONE, id, EEXIST);
        goto out;
    }
    e = open_for_put(path, mode, &fd);
    if (!e)
        e = write_all(fd, data, dlen);
    if (mode & AGENT_PUT_MORE) {
        s = session_new(c, id, S_PUT);
        if (s) {
            s->file_fd = fd;
            s->file_err = e;
            fd = -1;
            goto out;
        }
        e = ENOMEM;
    }
    if (fd >= 0 && close(fd) < 0 && !e)
        e = errno;
    fd = -1;
    send_i32(c, AGENT_PUT_DONE, id, e);
out:
    close_fd(&fd);
    free(path);
}

void session_get(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len)
{
    char *path;
    int bad = req_get_parse(payload, len, &path);
    struct stat st;
    int fd = -1, e = 0;
    if (id == 0 || bad) {
        conn_complain(c, "malformed GET_FILE");
        e = EPROTO;
    } else if (session_find(c, id)) {
        e = EEXIST;
    } else if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0) {
        e = errno;
    } else if (fstat(fd, &st) < 0) {
        e = errno;
    } else if (!S_ISREG(st.st_mode)) {
        e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL; /* a FIFO or device could block or not end */
    } else {
        struct session *s = session_new(c, id, S_GET);
        if (s) {
            s->file_fd = fd;
            fd = -1;
        } else {
            e = ENOMEM;
        }
    }
    if (e)
        send_i32(c, AGENT_FILE_END, id, e);
    close_fd(&fd);
    free(path);
}

/* Send the next chunk of a GET_FILE; true when the transfer ended. */
bool session_pump_get(struct session *s)
{
    struct conn *c = s->conn;
    uint8_t *p = agent_buf_reserve(&c->out, AGENT_HDR_SIZE + AGENT_MAX_CHUNK);
    if (!p)
        return false;
    ssize_t n = read(s->file_fd, p + AGENT_HDR_SIZE, AGENT_MAX_CHUNK);
    if (n < 0 && errno == EINTR)
        return false;
    if (n > 0) {
        agent_hdr_put(p, AGENT_FILE_DATA, s->id, (uint32_t)n);
        c->out.len += AGENT_HDR_SIZE + (size_t)n;
        return false;
    }
    send_i32(c, AGENT_FILE_END, s->id, n < 0 ? errno : 0);
    session_free(s, false);
    return true;
}
