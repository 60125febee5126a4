/*
 * ctl.c - ivcd's control socket (PATH.ctl, mode 0600) and `ivcd ctl`, the
 * command that talks to it.
 *
 * Protocol: a client connects, sends one request line (at most
 * IVCD_CTL_LINE_MAX bytes, ending in '\n') and keeps its end open; ivcd
 * answers with text lines, the last one starting with "ok" or "error:", and
 * closes.  Requests:
 *   status                          job, region, socket, counts
 *   list                            one line per peer and per used endpoint
 *   suspend ID [--timeout MS]       quiesce peer ID's endpoints (migration)
 *   resume ID                       undo a suspend
 * A suspend is answered only once the peer's endpoints quiesced and their
 * partners drained, or when it times out; meanwhile the loop goes on serving
 * everybody and ctl_poll() checks the region at every wakeup.  A request that
 * is too long, not text, or not sent within IVCD_CTL_IDLE_MS gets an error or
 * is dropped; nothing on this socket can stop the daemon.
 */
#include "ivcd.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_MAX_ARGS       8
#define CTL_REPLY_MAX      (64u << 20) /* what `ivcd ctl` accepts */
#define CTL_CLIENT_WAIT_MS 10000 /* `ivcd ctl` waits this long beyond the request's own time */

enum ctl_phase {
    CTL_FREE = 0,
    CTL_READ,  /* reading the request line */
    CTL_WAIT,  /* a suspend is pending */
    CTL_WRITE, /* sending the reply, then close */
};

struct ivcd_ctl_conn {
    int fd;
    enum ctl_phase phase;
    uint64_t deadline; /* of the current phase */
    char line[IVCD_CTL_LINE_MAX + 1];
    size_t len;
    char *out; /* the reply */
    size_t out_len, out_cap, out_off;
    bool out_oom;
    struct ivcd_suspend susp; /* CTL_WAIT */
    uint32_t susp_gen;        /* the peer's generation when the suspend started */
    uint32_t susp_timeout_ms;
};

/* ---- replies ------------------------------------------------------------- */

static void __attribute__((format(printf, 2, 3)))
out_printf(struct ivcd_ctl_conn *cc, const char *fmt, ...)
{
    va_list ap;

    if (cc->out_oom)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (cc->out_len + (size_t)n + 1 > cc->out_cap) {
        size_t cap = cc->out_cap ? cc->out_cap : 512;
        while (cc->out_len + (size_t)n + 1 > cap)
            cap *= 2;
        char *p = realloc(cc->out, cap);
        if (!p) {
            cc->out_oom = true;
            return;
        }
        cc->out = p;
        cc->out_cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(cc->out + cc->out_len, cc->out_cap - cc->out_len, fmt, ap);
    va_end(ap);
    cc->out_len += (size_t)n;
}

static void ctl_close(struct ivcd *d, struct ivcd_ctl_conn *cc)
{
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, cc->fd, NULL);
    close(cc->fd);
    free(cc->out);
    free(cc->susp.word);
    memset(cc, 0, sizeof(*cc));
    cc->fd = -1;
}

static void ctl_flush(struct ivcd *d, struct ivcd_ctl_conn *cc)
{
    while (cc->out_off < cc->out_len) {
        ssize_t n = send(cc->fd, cc->out + cc->out_off, cc->out_len - cc->out_off,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return; /* EPOLLOUT brings us back */
        if (n <= 0) {
            ctl_close(d, cc);
            return;
        }
        cc->out_off += (size_t)n;
    }
    ctl_close(d, cc);
}

/* The reply is complete: send it (the last line is the caller's). */
static void __attribute__((format(printf, 3, 4)))
ctl_finish(struct ivcd *d, struct ivcd_ctl_conn *cc, const char *fmt, ...)
{
    char last[IVCD_CTL_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last, sizeof(last), fmt, ap);
    va_end(ap);
    if (cc->out_oom) {
        cc->out_len = 0;
        cc->out_oom = false;
        snprintf(last, sizeof(last), "error: ivcd is out of memory");
    }
    out_printf(cc, "%s\n", last);
    if (cc->out_oom) {
        ctl_close(d, cc);
        return;
    }
    free(cc->susp.word);
    cc->susp.word = NULL;
    cc->phase = CTL_WRITE;
    cc->deadline = ivcd_now_ms() + IVCD_CTL_IDLE_MS;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = IVCD_EV(EV_CTL, cc - d->ctl)};
    if (epoll_ctl(d->epfd, EPOLL_CTL_MOD, cc->fd, &ev) < 0) {
        ctl_close(d, cc);
        return;
    }
    ctl_flush(d, cc);
}

/* ---- requests ------------------------------------------------------------ */

/* A peer id as the operator writes it: decimal, 0..65535. */
static bool parse_peer(const char *s, uint16_t *id)
{
    char *end;

    if (!isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > UINT16_MAX)
        return false;
    *id = (uint16_t)v;
    return true;
}

static bool parse_timeout(const char *s, uint32_t *ms)
{
    char *end;

    if (!isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < 1 || v > IVCD_SUSPEND_MAX_MS)
        return false;
    *ms = (uint32_t)v;
    return true;
}

static const char *client_state_name(enum ivc_client_state st)
{
    return st == IVC_CLIENT_SUSPENDING ? "suspending" : "live";
}

static void cmd_status(struct ivcd *d, struct ivcd_ctl_conn *cc, int argc, char **argv)
{
    if (argc != 1) {
        ctl_finish(d, cc, "error: usage: status");
        return;
    }
    out_printf(cc, "job=%" PRIu64 "\n", d->cfg.magic);
    out_printf(cc, "region_size=%" PRIu64 "\n", d->cfg.size);
    out_printf(cc, "socket=%s\n", d->cfg.socket_path);
    out_printf(cc, "pid=%d\n", (int)getpid());
    out_printf(cc, "clients=%u\n", d->nclients);
    out_printf(cc, "max_peers=%u\n", d->cfg.max_peers);
    out_printf(cc, "endpoints=%u\n", region_count_eps(&d->region));
    out_printf(cc, "max_endpoints=%u\n", d->cfg.max_eps);
    out_printf(cc, "conns_per_endpoint=%u\n", d->cfg.conns_per_ep);
    out_printf(cc, "vectors=%u\n", d->cfg.vectors);
    ctl_finish(d, cc, "ok");
}

static void emit_line(void *arg, const char *line)
{
    out_printf(arg, "%s\n", line);
}

static void cmd_list(struct ivcd *d, struct ivcd_ctl_conn *cc, int argc, char **argv)
{
    if (argc != 1) {
        ctl_finish(d, cc, "error: usage: list");
        return;
    }
    for (uint32_t id = 0; id < d->cfg.max_peers; id++) {
        const struct ivcd_client *c = server_peer(d, id);
        if (c)
            out_printf(cc, "client id=%u pid=%d state=%s\n", id, (int)c->pid,
                       client_state_name(c->state));
    }
    region_list_eps(&d->region, emit_line, cc);
    ctl_finish(d, cc, "ok");
}

static void cmd_suspend(struct ivcd *d, struct ivcd_ctl_conn *cc, int argc, char **argv)
{
    uint16_t id;
    uint32_t timeout = IVCD_SUSPEND_DEFAULT_MS;

    if (!(argc == 2 || (argc == 4 && strcmp(argv[2], "--timeout") == 0)) ||
        !parse_peer(argv[1], &id) || (argc == 4 && !parse_timeout(argv[3], &timeout))) {
        ctl_finish(d, cc, "error: usage: suspend ID [--timeout MS] (MS from 1 to %u)",
                   IVCD_SUSPEND_MAX_MS);
        return;
    }
    struct ivcd_client *c = server_peer(d, id);
    if (!c) {
        ctl_finish(d, cc, "error: no peer %u is connected (see `ivcd ctl list`)", id);
        return;
    }
    cc->susp.word = calloc(d->cfg.max_eps, sizeof(uint64_t));
    if (!cc->susp.word) {
        ctl_finish(d, cc, "error: ivcd is out of memory");
        return;
    }
    cc->susp.peer = id;
    cc->susp_gen = c->gen;
    cc->susp_timeout_ms = timeout;
    server_set_peer_state(d, id, IVC_CLIENT_SUSPENDING);
    uint32_t n = region_suspend_start(&d->region, &cc->susp);
    log_info("suspending peer %u: %u endpoints asked to quiesce (timeout %u ms)", id, n, timeout);
    cc->phase = CTL_WAIT;
    cc->deadline = ivcd_now_ms() + timeout;
    /* The answer comes from ctl_poll(), at the end of this loop iteration. */
}

/* End every pending suspend of peer `id` with an error. */
static void cancel_suspends(struct ivcd *d, uint16_t id)
{
    for (int i = 0; i < IVCD_CTL_MAX_CONNS; i++) {
        struct ivcd_ctl_conn *cc = &d->ctl[i];
        if (cc->phase == CTL_WAIT && cc->susp.peer == id)
            ctl_finish(d, cc, "error: suspend of peer %u cancelled by resume", id);
    }
}

static void cmd_resume(struct ivcd *d, struct ivcd_ctl_conn *cc, int argc, char **argv)
{
    uint16_t id;
    uint32_t nfreed, nresumed;

    if (argc != 2 || !parse_peer(argv[1], &id)) {
        ctl_finish(d, cc, "error: usage: resume ID");
        return;
    }
    if (!server_peer(d, id)) {
        ctl_finish(d, cc, "error: no peer %u is connected (see `ivcd ctl list`)", id);
        return;
    }
    cancel_suspends(d, id);
    server_set_peer_state(d, id, IVC_CLIENT_LIVE);
    region_resume(&d->region, id, &nfreed, &nresumed);
    log_info("resumed peer %u: %u endpoints live again, %u detached endpoints freed", id, nresumed,
             nfreed);
    ctl_finish(d, cc, "ok resumed peer %u", id);
}

static const struct {
    const char *name;
    void (*fn)(struct ivcd *d, struct ivcd_ctl_conn *cc, int argc, char **argv);
} commands[] = {
    {"status", cmd_status},
    {"list", cmd_list},
    {"suspend", cmd_suspend},
    {"resume", cmd_resume},
};

static void handle_request(struct ivcd *d, struct ivcd_ctl_conn *cc)
{
    char *argv[CTL_MAX_ARGS + 1], *save = NULL;
    int argc = 0;

    for (size_t i = 0; i < cc->len; i++)
        if (!isprint((unsigned char)cc->line[i]) && cc->line[i] != '\t') {
            ctl_finish(d, cc, "error: unknown command (the request is not a line of text)");
            return;
        }
    cc->line[cc->len] = 0;
    for (char *t = strtok_r(cc->line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
        if (argc == CTL_MAX_ARGS) {
            ctl_finish(d, cc, "error: too many arguments");
            return;
        }
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    if (argc == 0) {
        ctl_finish(d, cc, "error: empty request (expected status, list, suspend or resume)");
        return;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[0], commands[i].name) == 0) {
            commands[i].fn(d, cc, argc, argv);
            return;
        }
    ctl_finish(d, cc, "error: unknown command '%.64s' (expected status, list, suspend or resume)",
               argv[0]);
}

/* ---- connections --------------------------------------------------------- */

void ctl_accept(struct ivcd *d)
{
    for (int n = 0; n < IVCD_CTL_MAX_CONNS; n++) {
        int s = ivcd_accept(d->ctl_fd);
        if (s < 0)
            return;
        struct ivcd_ctl_conn *cc = NULL;
        for (int i = 0; i < IVCD_CTL_MAX_CONNS && !cc; i++)
            if (d->ctl[i].phase == CTL_FREE)
                cc = &d->ctl[i];
        static const char busy[] = "error: too many control connections; try again\n";
        if (!cc) {
            log_warn("refusing a control connection: %d already open", IVCD_CTL_MAX_CONNS);
            if (send(s, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                log_debug("telling a control client we are busy: %s", strerror(errno));
            close(s);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                 .data.u64 = IVCD_EV(EV_CTL, cc - d->ctl)};
        if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, s, &ev) < 0) {
            log_warn("watching a control connection: %s", strerror(errno));
            close(s);
            continue;
        }
        cc->fd = s;
        cc->phase = CTL_READ;
        cc->deadline = ivcd_now_ms() + IVCD_CTL_IDLE_MS;
    }
}

static void ctl_read(struct ivcd *d, struct ivcd_ctl_conn *cc)
{
    ssize_t n = recv(cc->fd, cc->line + cc->len, IVCD_CTL_LINE_MAX - cc->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) { /* gone before sending a whole line: nothing to answer */
        ctl_close(d, cc);
        return;
    }
    char *nl = memchr(cc->line + cc->len, '\n', (size_t)n);
    cc->len += (size_t)n;
    if (nl) {
        cc->len = (size_t)(nl - cc->line);
        if (cc->len && cc->line[cc->len - 1] == '\r')
            cc->len--;
        handle_request(d, cc);
    } else if (cc->len == IVCD_CTL_LINE_MAX) {
        ctl_finish(d, cc, "error: request line too long (at most %d bytes)", IVCD_CTL_LINE_MAX);
    }
}

/* While a suspend is pending the requester has nothing to say; its end of
 * the connection closing means nobody waits for the answer any more. */
static void ctl_wait_event(struct ivcd *d, struct ivcd_ctl_conn *cc)
{
    char buf[256];
    ssize_t n = recv(cc->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
        return;
    log_info("suspend of peer %u: the requester went away; its endpoints stay suspending "
             "(`ivcd ctl resume %u` undoes it)",
             cc->susp.peer, cc->susp.peer);
    ctl_close(d, cc);
}

void ctl_conn_event(struct ivcd *d, uint32_t idx, uint32_t events)
{
    if (idx >= IVCD_CTL_MAX_CONNS)
        return;
    struct ivcd_ctl_conn *cc = &d->ctl[idx];
    switch (cc->phase) {
    case CTL_READ: ctl_read(d, cc); break;
    case CTL_WAIT: ctl_wait_event(d, cc); break;
    case CTL_WRITE:
        if (events & (EPOLLERR | EPOLLHUP))
            ctl_close(d, cc);
        else
            ctl_flush(d, cc);
        break;
    case CTL_FREE: break;
    }
}

bool ctl_poll(struct ivcd *d, uint64_t now)
{
    bool pending = false;
    char why[256];
    uint32_t neps, nchan;

    for (int i = 0; i < IVCD_CTL_MAX_CONNS; i++) {
        struct ivcd_ctl_conn *cc = &d->ctl[i];
        switch (cc->phase) {
        case CTL_READ:
        case CTL_WRITE:
            if (now >= cc->deadline) {
                log_debug("control connection idle for %d ms; closed", IVCD_CTL_IDLE_MS);
                ctl_close(d, cc);
            }
            break;
        case CTL_WAIT: {
            uint16_t id = cc->susp.peer;
            /* Once the peer disconnected its id may be reused: endpoints of
             * the newcomer are not part of this suspend. */
            if (d->clients[id].gen != cc->susp_gen)
                cc->susp.peer_gone = true;
            if (region_suspend_poll(&d->region, &cc->susp, &neps, &nchan, why, sizeof(why))) {
                log_info("suspended peer %u: %u endpoints, %u channels drained", id, neps, nchan);
                ctl_finish(d, cc, "ok suspended peer %u: %u endpoints, %u channels drained", id,
                           neps, nchan);
            } else if (now >= cc->deadline) {
                log_warn("suspend of peer %u timed out after %u ms: %s", id, cc->susp_timeout_ms,
                         why);
                ctl_finish(d, cc, "error: suspend of peer %u timed out after %u ms: %s", id,
                           cc->susp_timeout_ms, why);
            } else {
                pending = true;
            }
            break;
        }
        case CTL_FREE: break;
        }
    }
    return pending;
}

int ctl_init(struct ivcd *d, struct ivcd_err *err)
{
    d->ctl = calloc(IVCD_CTL_MAX_CONNS, sizeof(*d->ctl));
    if (!d->ctl)
        return ivcd_err_set(err, ENOMEM, "allocating control connections");
    for (int i = 0; i < IVCD_CTL_MAX_CONNS; i++)
        d->ctl[i].fd = -1;
    d->ctl_fd = ivcd_listen_unix(d->cfg.ctl_path, 0600, &d->ctl_dev, &d->ctl_ino, err);
    if (d->ctl_fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = IVCD_EV(EV_CTL_LISTEN, 0)};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->ctl_fd, &ev) < 0)
        return ivcd_err_set(err, errno, "watching %s", d->cfg.ctl_path);
    return 0;
}

void ctl_fini(struct ivcd *d)
{
    static const char bye[] = "error: ivcd is shutting down\n";

    if (d->ctl)
        for (int i = 0; i < IVCD_CTL_MAX_CONNS; i++) {
            struct ivcd_ctl_conn *cc = &d->ctl[i];
            if (cc->phase == CTL_FREE)
                continue;
            if (cc->phase == CTL_WAIT &&
                send(cc->fd, bye, sizeof(bye) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                log_debug("telling a control client we stop: %s", strerror(errno));
            ctl_close(d, cc);
        }
    free(d->ctl);
    d->ctl = NULL;
    if (d->ctl_fd >= 0) {
        close(d->ctl_fd);
        d->ctl_fd = -1;
        ivcd_unlink_ours(d->cfg.ctl_path, d->ctl_dev, d->ctl_ino);
    }
}

/* ---- `ivcd ctl` ---------------------------------------------------------- */

static const char ctl_usage_text[] =
    "Usage: ivcd ctl --socket PATH COMMAND\n"
    "Talk to the ivcd serving PATH (through PATH.ctl).  Commands:\n"
    "  status                     the job, its region and how many peers and endpoints\n"
    "  list                       connected peers and endpoints in use\n"
    "  suspend ID [--timeout MS]  quiesce peer ID's channels for a migration\n"
    "                             (default timeout 5000 ms)\n"
    "  resume ID                  undo a suspend of peer ID\n"
    "Exit status: 0 ok, 1 ivcd answered with an error, 2 usage error or no ivcd.\n";

static int __attribute__((format(printf, 1, 2))) ctl_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("ivcd ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'ivcd ctl --help' for more information.\n", stderr);
    return 2;
}

/* Send `req` to the control socket of `sock` and collect the reply, waiting
 * at most `wait_ms`.  Returns 0, or 2 after printing why. */
static int ctl_exchange(const char *sock, const char *req, int wait_ms, char **reply, size_t *len)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[sizeof(sa.sun_path) + 8];

    if (snprintf(path, sizeof(path), "%s.ctl", sock) >= (int)sizeof(sa.sun_path)) {
        fprintf(stderr, "ivcd ctl: socket path %s.ctl is too long for a UNIX socket\n", sock);
        return 2;
    }
    memcpy(sa.sun_path, path, strlen(path));
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        fprintf(stderr, "ivcd ctl: cannot connect to ivcd control socket %s: %s (%s)\n", path,
                strerror(e),
                e == EACCES || e == EPERM ? "run as the user that started ivcd"
                                          : "is ivcd running for this job?");
        if (s >= 0)
            close(s);
        return 2;
    }
    size_t off = 0, rlen = strlen(req);
    while (off < rlen) {
        ssize_t n = send(s, req + off, rlen - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "ivcd ctl: sending to %s: %s\n", path, strerror(errno));
            close(s);
            return 2;
        }
        off += (size_t)n;
    }
    uint64_t deadline = ivcd_now_ms() + (uint64_t)wait_ms;
    char *buf = NULL;
    size_t got = 0, cap = 0;
    for (;;) {
        uint64_t now = ivcd_now_ms();
        if (now >= deadline) {
            fprintf(stderr, "ivcd ctl: no complete reply from ivcd within %d ms\n", wait_ms);
            break;
        }
        struct pollfd pfd = {.fd = s, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        if (got + 4096 + 1 > cap) {
            if (cap >= CTL_REPLY_MAX) {
                fprintf(stderr, "ivcd ctl: reply larger than %u bytes\n", CTL_REPLY_MAX);
                break;
            }
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(buf, cap);
            if (!p) {
                fprintf(stderr, "ivcd ctl: out of memory\n");
                break;
            }
            buf = p;
        }
        ssize_t n = recv(s, buf + got, cap - got - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ECONNRESET) /* ivcd closed; what it sent is here */
            n = 0;
        if (n < 0) {
            fprintf(stderr, "ivcd ctl: reading from %s: %s\n", path, strerror(errno));
            break;
        }
        if (n == 0) {
            close(s);
            buf[got] = 0;
            *reply = buf;
            *len = got;
            return 0;
        }
        got += (size_t)n;
    }
    close(s);
    free(buf);
    return 2;
}

int ctl_client_main(int argc, char **argv)
{
    const char *sock = NULL, *timeout = NULL, *words[3];
    int nw = 0;
    uint16_t id;
    uint32_t ms = IVCD_SUSPEND_DEFAULT_MS;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--socket") == 0 || strcmp(a, "--timeout") == 0) {
            if (i + 1 == argc)
                return ctl_usage_error("option '%s' requires an argument", a);
            if (strcmp(a, "--socket") == 0)
                sock = argv[++i];
            else
                timeout = argv[++i];
        } else if (strncmp(a, "--socket=", 9) == 0) {
            sock = a + 9;
        } else if (strncmp(a, "--timeout=", 10) == 0) {
            timeout = a + 10;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(ctl_usage_text, stdout);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            return ctl_usage_error("unrecognized option '%s'", a);
        } else if (nw < 3) {
            words[nw++] = a;
        } else {
            return ctl_usage_error("unexpected argument '%s'", a);
        }
    }
    if (!sock)
        return ctl_usage_error("--socket PATH is required (the job's ivcd socket)");
    if (nw == 0)
        return ctl_usage_error("a command is required: status, list, suspend ID or resume ID");

    char req[128];
    const char *cmd = words[0];
    bool is_suspend = strcmp(cmd, "suspend") == 0;
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "list") == 0) {
        if (nw != 1 || timeout)
            return ctl_usage_error("'%s' takes no arguments", cmd);
        snprintf(req, sizeof(req), "%s\n", cmd);
    } else if (is_suspend || strcmp(cmd, "resume") == 0) {
        if (nw != 2)
            return ctl_usage_error("usage: %s ID%s", cmd, is_suspend ? " [--timeout MS]" : "");
        if (!parse_peer(words[1], &id))
            return ctl_usage_error("'%s' is not a peer id (0..65535, see `ivcd ctl list`)",
                                   words[1]);
        if (timeout && !is_suspend)
            return ctl_usage_error("--timeout goes with suspend only");
        if (timeout && !parse_timeout(timeout, &ms))
            return ctl_usage_error("--timeout '%s' is not a number of milliseconds from 1 to %u",
                                   timeout, IVCD_SUSPEND_MAX_MS);
        if (is_suspend)
            snprintf(req, sizeof(req), "suspend %u --timeout %u\n", id, ms);
        else
            snprintf(req, sizeof(req), "resume %u\n", id);
    } else {
        return ctl_usage_error("unknown command '%s' (expected status, list, suspend or resume)",
                               cmd);
    }

    char *reply;
    size_t len;
    int wait_ms = CTL_CLIENT_WAIT_MS + (is_suspend ? (int)ms : 0);
    if (ctl_exchange(sock, req, wait_ms, &reply, &len) != 0)
        return 2;

    /* The last line decides; everything before it is the answer proper. */
    size_t end = len;
    while (end > 0 && reply[end - 1] == '\n')
        end--;
    size_t last = end;
    while (last > 0 && reply[last - 1] != '\n')
        last--;
    const char *tail = reply + last;
    int rc;
    if (strncmp(tail, "ok", 2) == 0) {
        fwrite(reply, 1, len, stdout);
        rc = 0;
    } else if (strncmp(tail, "error:", 6) == 0) {
        fwrite(reply, 1, last, stdout);
        fprintf(stderr, "%.*s\n", (int)(end - last), tail);
        rc = 1;
    } else {
        fprintf(stderr, "ivcd ctl: incomplete reply from ivcd (connection closed)\n");
        rc = 2;
    }
    free(reply);
    return rc;
}
