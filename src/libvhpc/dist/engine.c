/*
 * engine.c - the engine's loop (engine.h says what the engine is): one
 * poll over the commit threads' pipe, a server's listening socket and
 * every connection; timers every 100 ms (requests that do not come,
 * senders and kids that go silent, heartbeats, orphaned transfers, the
 * store's lock); and the routing of what happens on a connection to the
 * object it belongs to, by the connection's role: a frame (dist_dispatch,
 * where a server authenticates each request first) or the end of the link
 * (dist_conn_lost).  Connections and sessions are freed only at the end
 * of a turn (sweep).
 */
#include "engine.h"
#include "clock.h"
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void dist_log(struct engine *e, const char *fmt, ...)
{
    if (!e->logp)
        return;
    va_list ap;
    struct timespec ts;
    struct tm tm;
    char when[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%H:%M:%S", &tm);
    char msg[1536];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    vhpc__say("%s.%03ld %s: %s\n", when, ts.tv_nsec / 1000000, e->logp, msg);
}

void dist_conn_lost(struct conn *c, const char *why)
{
    struct kid *k = c->kid;
    struct session *s = c->sess;
    enum role role = c->role;
    dist_conn_close(c);
    if (k) {
        dist_kid_fail(k, "%s", why);
        return;
    }
    if (s && role == R_UP)
        dist_recv_lost(s, c, why);
    if (c->is_pull)
        dist_pull_lost(c, role, s, why);
}

void dist_dispatch(struct conn *c, int type, const unsigned char *p, size_t len)
{
    struct engine *e = c->e;
    c->last_rx = e->now;
    if (type == VHPC_DIST_CHUNK) {
        if (c->role == R_UP && c->sess)
            dist_handle_chunk(c->sess, p, len);
        else
            dist_conn_lost(c, "an unexpected chunk");
        return;
    }
    if (type == VHPC_DIST_MANIFEST) {
        if (c->role != R_MANIFEST) {
            dist_conn_lost(c, "an unexpected manifest");
            return;
        }
        json_t *pj = c->push;
        c->push = NULL;
        dist_handle_push(c, pj, (const char *)p, len);
        json_decref(pj);
        return;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)p, len, 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        dist_conn_lost(c, "a frame that is not JSON");
        return;
    }
    if (c->role == R_INBOUND && e->lfd >= 0 &&
        (type == VHPC_DIST_PUSH || type == VHPC_DIST_PULL || type == VHPC_DIST_QUERY)) {
        vhpc_err_t err = {0};
        if (dist_authenticate(c, j, &c->uid, &err) < 0) {
            dist_log(e, "a request from %s: %s", c->peer, err.msg);
            dist_conn_send_error(c, err.msg);
            json_decref(j);
            return;
        }
    }
    switch (c->role) {
    case R_INBOUND:
    case R_PULL:
        if (type == VHPC_DIST_PUSH) {
            c->push = j;
            c->role = R_MANIFEST;
            return;
        }
        if (c->role == R_INBOUND && type == VHPC_DIST_PULL)
            dist_handle_pull(c, j);
        else if (c->role == R_INBOUND && type == VHPC_DIST_QUERY)
            dist_handle_query(c, j);
        else if (c->role == R_PULL && type == VHPC_DIST_ERROR) {
            const char *msg = json_string_value(json_object_get(j, "error"));
            dist_conn_lost(c, msg ? msg : "refused");
        } else
            dist_conn_lost(c, "an unexpected frame");
        break;
    case R_KID:
        if (c->kid)
            dist_kid_frame(c->kid, type, j);
        break;
    case R_UP:
        if (type == VHPC_DIST_PROGRESS)
            break;
        if (type == VHPC_DIST_ERROR) {
            const char *msg = json_string_value(json_object_get(j, "error"));
            dist_conn_lost(c, msg ? msg : "an error");
        } else {
            dist_conn_lost(c, "an unexpected frame");
        }
        break;
    default:
        if (type == VHPC_DIST_ERROR || type == VHPC_DIST_PROGRESS)
            break;
        dist_conn_lost(c, "an unexpected frame");
    }
    json_decref(j);
}

int dist_engine_init(struct engine *e, struct vhpc_store *st, vhpc_err_t *err)
{
    memset(e, 0, sizeof(*e));
    e->st = st;
    e->lfd = -1;
    e->now = vhpc_now_ms();
    /* VHPC_DIST_READ_BUDGET: a test knob (1 makes every turn end after one
     * read, the worst case for the low-water mark bookkeeping). */
    const char *rb = getenv("VHPC_DIST_READ_BUDGET");
    uint64_t v;
    e->read_budget = 8u << 20;
    e->lim = (struct vhpc_dist_limits)VHPC_DIST_LIMITS_DEFAULT;
    if (rb && *rb && vhpc_parse_bytes(rb, &v) == 0 && v > 0 && v <= SIZE_MAX)
        e->read_budget = (size_t)v;
    if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        return vhpc_err_set(err, -errno, "creating a pipe");
    return 0;
}

static void sweep(struct engine *e)
{
    for (struct conn **pc = &e->conns; *pc;) {
        struct conn *c = *pc;
        if (c->dead) {
            *pc = c->next;
            e->nconns--;
            dist_conn_free(c);
        } else {
            pc = &c->next;
        }
    }
    for (struct session **ps = &e->sessions; *ps;) {
        struct session *s = *ps;
        if (s->dead && s->pending == 0) {
            *ps = s->next;
            dist_session_free(s);
        } else {
            ps = &s->next;
        }
    }
}

void dist_engine_fini(struct engine *e)
{
    for (struct session *s = e->sessions; s; s = s->next) {
        dist_session_release(s);
        for (size_t i = 0; i < s->nb; i++)
            if (s->b[i].state == B_RECV) {
                vhpc_store_blob_abort(&s->b[i].w);
                s->b[i].state = B_GONE;
            }
    }
    for (struct conn *c = e->conns; c; c = c->next)
        dist_conn_close(c);
    /* Commit threads still running finish on their own; wait for them. */
    for (;;) {
        int pending = 0;
        for (struct session *s = e->sessions; s; s = s->next)
            pending += s->pending;
        if (!pending)
            break;
        struct pollfd pf = {.fd = e->wake[0], .events = POLLIN};
        poll(&pf, 1, 1000);
        dist_commits_reap(e);
    }
    sweep(e);
    if (e->mctx)
        munge_ctx_destroy(e->mctx);
    free(e->allow);
    if (e->lfd >= 0)
        close(e->lfd);
    close(e->wake[0]);
    close(e->wake[1]);
}

static void timers(struct engine *e)
{
    for (struct conn *c = e->conns; c; c = c->next) {
        if (c->dead)
            continue;
        if ((c->role == R_INBOUND || c->role == R_MANIFEST || c->role == R_PULL) &&
            e->now - c->since > e->lim.idle_ms)
            dist_conn_lost(c, "no request in time");
        else if (c->role == R_LINGER && e->now - c->since > LINGER_MS)
            dist_conn_close(c);
        else if (c->role == R_UP && c->sess &&
                 e->now - c->last_rx > (3 * c->sess->timeout_ms < e->lim.idle_ms
                                            ? 3 * c->sess->timeout_ms
                                            : e->lim.idle_ms))
            dist_conn_lost(c, "no sign of life from the sender");
        else if (c->role == R_KID && c->kid && !c->chunk_active && !c->qhead && !c->connecting &&
                 e->now - c->last_tx >= HEARTBEAT_MS)
            dist_conn_send(c, VHPC_DIST_PROGRESS, "{}", 2);
    }
    for (struct session *s = e->sessions; s; s = s->next) {
        if (s->dead)
            continue;
        if (s->lock_wait && s->own == 0) {
            dist_session_finish_own(s);
            dist_session_progress(s);
            if (s->dead)
                continue;
        }
        if (e->now - s->last_hb >= HEARTBEAT_MS) {
            s->last_hb = e->now;
            dist_session_heartbeat(s);
        }
        for (size_t i = 0; i < s->nkids && !s->dead; i++) {
            struct kid *k = s->kids[i];
            if (k->state >= K_CONNECT && k->state <= K_REPORT && e->now - k->since > s->timeout_ms)
                dist_kid_fail(k, "%s for %.1f s",
                              k->state == K_CONNECT ? "no connection" : "no progress",
                              (double)(e->now - k->since) / 1000);
        }
        if (!s->dead && !s->source && !s->up && s != e->client && s->orphan_since &&
            e->now - s->orphan_since >
                (2 * s->timeout_ms > MIN_ORPHAN_MS ? 2 * s->timeout_ms : MIN_ORPHAN_MS)) {
            if (s->own == 1)
                dist_session_release(s); /* it has the image; nobody wants the report */
            else
                dist_session_fail(s, "lost its sender and nobody took over");
        }
        if (!s->dead && !s->up && !s->source && !s->orphan_since)
            s->orphan_since = e->now;
    }
}

static void on_connected(struct conn *c)
{
    int soerr = 0;
    socklen_t l = sizeof(soerr);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
    if (soerr) {
        char why[256];
        snprintf(why, sizeof(why), "connecting to %s: %s", c->peer, strerror(soerr));
        dist_conn_lost(c, why);
        return;
    }
    c->connecting = 0;
    c->last_tx = c->e->now;
    if (c->kid)
        dist_kid_hello(c->kid);
    else
        dist_conn_flush(c);
}

int dist_engine_run(struct engine *e, volatile sig_atomic_t *stop)
{
    struct pollfd *pf = NULL;
    struct conn **pc = NULL;
    size_t cap = 0;
    int64_t last_timers = 0;
    while (!(stop && *stop) && !(e->client && e->client_done && !e->pull_ref) &&
           !(e->pull_ref && (e->client_done || e->pull_next > e->pull_n))) {
        size_t n = 0, want = (size_t)e->nconns + 2;
        if (want > cap) {
            cap = want * 2;
            void *g1 = realloc(pf, cap * sizeof(*pf)), *g2;
            if (!g1)
                break;
            pf = g1;
            g2 = realloc(pc, cap * sizeof(*pc));
            if (!g2)
                break;
            pc = g2;
        }
        pf[n++] = (struct pollfd){.fd = e->wake[0], .events = POLLIN};
        if (e->lfd >= 0 && e->accept_paused && e->now >= e->accept_paused)
            e->accept_paused = 0;
        if (e->lfd >= 0)
            pf[n++] = (struct pollfd){.fd = e->lfd, .events = e->accept_paused ? 0 : POLLIN};
        size_t first = n;
        for (struct conn *c = e->conns; c; c = c->next) {
            if (c->dead)
                continue;
            short ev = c->connecting ? POLLOUT : POLLIN;
            if (c->chunk_active || c->qhead)
                ev |= POLLOUT;
            pc[n] = c;
            pf[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int r = poll(pf, n, 100);
        e->now = vhpc_now_ms();
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0) {
            if (pf[0].revents)
                dist_commits_reap(e);
            if (e->lfd >= 0 && pf[1].revents)
                dist_server_accept(e);
            for (size_t i = first; i < n; i++) {
                struct conn *c = pc[i];
                short rv = pf[i].revents;
                if (!rv || c->dead)
                    continue;
                if (c->connecting) {
                    on_connected(c);
                    continue;
                }
                if (rv & (POLLIN | POLLHUP | POLLERR))
                    dist_conn_read(c);
                if (!c->dead && (rv & POLLOUT))
                    dist_conn_flush(c);
            }
        }
        if (e->now - last_timers >= 100) {
            last_timers = e->now;
            timers(e);
        }
        sweep(e);
    }
    free(pf);
    free(pc);
    return 0;
}
