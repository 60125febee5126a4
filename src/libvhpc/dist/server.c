/*
 * server.c - `vhpc node serve`: a node's engine with a listening socket.
 * It accepts within its limits (connections in all and per peer, where
 * the oldest that has not made its request gives way; a pause when out of
 * descriptors), admits a transfer only with the descriptors and a place
 * among --max-sessions for it (else "busy", and an orphaned transfer gives
 * way to a live one), and answers the requests that need no session of
 * their own: QUERY (is a verified copy here?) and PULL (a store session
 * sending the image to the puller).  A PUSH goes to recv.c.
 */
#include "engine.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Whether a server has the descriptors for a transfer of nb blobs (two
 * per blob and the link), keeping a margin for new connections; else an
 * error for that request (rather than "Too many open files" anywhere). */
int dist_fds_admit(struct engine *e, size_t nb, vhpc_err_t *err)
{
    if (e->lfd < 0)
        return 0;
    struct rlimit rl;
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        while (readdir(d))
            fds++;
        closedir(d);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (uint64_t)fds + 2 * nb + 2 + FD_MARGIN > rl.rlim_cur)
        return vhpc_err_setmsg(err, -EMFILE,
                               "this node is busy: %d of its %llu descriptors in use; try again "
                               "later",
                               fds, (unsigned long long)rl.rlim_cur);
    return 0;
}

/* Whether a server may start one more transfer: within --max-sessions;
 * else an error for that request. */
int dist_session_admit(struct engine *e, vhpc_err_t *err)
{
    if (e->lfd < 0)
        return 0; /* a pusher or a puller: its own one transfer */
    int n = 0;
    struct session *orphan = NULL;
    for (struct session *s = e->sessions; s; s = s->next) {
        if (s->dead)
            continue;
        n++;
        if (!s->up && !s->source && s->orphan_since && !s->pending &&
            (!orphan || s->orphan_since < orphan->orphan_since))
            orphan = s;
    }
    /* A transfer whose sender is gone (waiting for a take-over) gives way
     * to a live one at once: its space and descriptors go back. */
    if (n >= e->lim.max_sessions && orphan) {
        dist_session_fail(orphan, "its sender is gone and a new transfer needs its place");
        n--;
    }
    if (n >= e->lim.max_sessions)
        return vhpc_err_setmsg(err, -EBUSY,
                               "this node is busy: %d transfers at once (--max-sessions); try "
                               "again later",
                               n);
    return 0;
}

/* The "ref" of request j (a PULL or QUERY), or NULL when c got an ERROR. */
static const char *request_ref(struct conn *c, json_t *j, const char *what)
{
    const char *ref = json_string_value(json_object_get(j, "ref"));
    char msg[64];
    if (!ref) {
        snprintf(msg, sizeof(msg), "%s without \"ref\"", what);
        dist_conn_send_error(c, msg);
    }
    return ref;
}

/* The image ref names, if c's user may read it; else the same error as
 * for no image at all. */
static int resolve_readable(struct conn *c, const char *ref, struct vhpc_ref *got, vhpc_err_t *err)
{
    int r = vhpc_store_resolve(c->e->st, ref, got, err);
    if (r == 0 && !dist_may_read(c->e, c->uid, got->name))
        r = vhpc_err_setmsg(err, -ENOENT, "no image '%s' that uid %u may read here", ref,
                            (unsigned)c->uid);
    return r;
}

void dist_handle_query(struct conn *c, json_t *j)
{
    struct engine *e = c->e;
    const char *ref = request_ref(c, j, "QUERY");
    struct vhpc_ref got;
    vhpc_err_t err = {0};
    if (!ref)
        return;
    /* Who may read it first: nobody makes the node re-hash what they may
     * not see. */
    if (resolve_readable(c, ref, &got, &err) == 0)
        dist_resolve_verified(e, ref, &got, &err);
    if (err.code < 0) {
        dist_log(e, "query from %s: %s", c->peer, err.msg);
        dist_conn_send_json(c, VHPC_DIST_HAVE,
                            json_pack("{s:b, s:s}", "have", 0, "reason", err.msg));
    } else {
        dist_conn_send_json(c, VHPC_DIST_HAVE,
                            json_pack("{s:b, s:s, s:s, s:i}", "have", 1, "digest", got.digest,
                                      "name", got.name, "version", got.version));
    }
    c->role = R_LINGER;
    c->since = e->now;
}

void dist_handle_pull(struct conn *c, json_t *j)
{
    struct engine *e = c->e;
    const char *ref = request_ref(c, j, "PULL");
    struct vhpc_ref got;
    vhpc_err_t err = {0};
    struct session *s = NULL;
    if (!ref)
        return;
    if (dist_session_admit(e, &err) == 0 && resolve_readable(c, ref, &got, &err) == 0)
        s = dist_session_from_store(e, &got, 1, &err);
    if (!s) {
        dist_log(e, "pull from %s: %s", c->peer, err.msg);
        dist_conn_send_error(c, err.msg);
        return;
    }
    json_int_t to = json_integer_value(json_object_get(j, "timeout_ms"));
    if (to >= 100 && to <= 3600000)
        s->timeout_ms = (int)to;
    vhpc_store_touch(e->st, got.digest);
    dist_log(e, "image %.12s (%s:%d): sending it to %s, who pulls it", got.digest, got.name,
             got.version, c->peer);
    json_t *node = json_pack("{s:i, s:s, s:[]}", "i", 0, "addr", c->peer, "children");
    s->seq = 1; /* the kid is connected already: it starts below */
    struct kid *k = dist_kid_add(s, node);
    json_decref(node);
    if (!k) {
        dist_session_release(s);
        dist_conn_send_error(c, "out of memory");
        return;
    }
    k->c = c;
    c->kid = k;
    c->role = R_KID;
    dist_kid_hello(k);
}

/* Room for one more connection from ip?  At a limit (in all, or from that
 * peer), the oldest connection that has not made its request yet gives
 * way (idle connections cannot crowd out real requests); with none, no. */
static int admit(struct engine *e, const char *ip)
{
    for (int pass = 0; pass < 2; pass++) {
        int all = 0, mine = 0;
        struct conn *oldest = NULL, *oldest_mine = NULL;
        for (struct conn *c = e->conns; c; c = c->next) {
            if (c->dead || !c->ip[0])
                continue; /* ours, to a child */
            int same = !strcmp(c->ip, ip);
            all++;
            mine += same;
            if (c->role == R_INBOUND) {
                if (!oldest || c->since < oldest->since)
                    oldest = c;
                if (same && (!oldest_mine || c->since < oldest_mine->since))
                    oldest_mine = c;
            }
        }
        struct conn *victim = NULL;
        if (mine >= e->lim.max_per_peer)
            victim = oldest_mine;
        else if (all >= e->lim.max_conns)
            victim = oldest;
        else
            return 1;
        if (!victim)
            return 0;
        dist_conn_close(victim); /* it said nothing: nobody to tell */
    }
    return 0;
}

void dist_server_accept(struct engine *e)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(e->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* The connection waits in the backlog; poll would wake us
                 * for it at once, again and again: pause accepting. */
                if (!e->accept_paused)
                    dist_log(e, "out of descriptors (%s): not accepting for a moment",
                             strerror(errno));
                e->accept_paused = e->now + 100;
            }
            return;
        }
        char peer[64], ip[sizeof(((struct conn *)0)->ip)];
        vhpc_dist_addr_str((struct sockaddr *)&sa, peer, sizeof(peer));
        snprintf(ip, sizeof(ip), "%.*s", (int)(strrchr(peer, ':') - peer), peer);
        if (!admit(e, ip)) {
            dist_log(e,
                     "refused a connection from %s: too many connections (--max-connections "
                     "%d, --max-per-peer %d)",
                     peer, e->lim.max_conns, e->lim.max_per_peer);
            close(fd);
            continue;
        }
        struct conn *c = dist_conn_new(e, fd, R_INBOUND);
        if (c) {
            snprintf(c->peer, sizeof(c->peer), "%s", peer);
            snprintf(c->ip, sizeof(c->ip), "%s", ip);
        }
    }
}

struct vhpc_dist_server {
    struct engine e;
};

int vhpc_dist_server_new(struct vhpc_store *st, const char *listen_on,
                         struct vhpc_dist_server **out, vhpc_err_t *err)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    int r = vhpc_dist_resolve(listen_on, &sa, &salen, err);
    if (r < 0)
        return vhpc_err_wrap(err, "--listen");
    struct vhpc_dist_server *s = calloc(1, sizeof(*s));
    if (!s)
        return vhpc_err_set(err, -ENOMEM, "starting the node service");
    if ((r = dist_engine_init(&s->e, st, err)) < 0) {
        free(s);
        return r;
    }
    char a[64];
    vhpc_dist_addr_str((struct sockaddr *)&sa, a, sizeof(a));
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
        r = vhpc_err_set(err, -errno, "listening on %s", a);
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, 128) < 0) {
        r = vhpc_err_set(err, -errno, "listening on %s", a);
        close(fd);
        goto fail;
    }
    salen = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &salen);
    vhpc_dist_addr_str((struct sockaddr *)&sa, s->e.laddr, sizeof(s->e.laddr));
    s->e.lfd = fd;
    *out = s;
    return 0;
fail:
    dist_engine_fini(&s->e);
    free(s);
    return r;
}

const char *vhpc_dist_server_addr(const struct vhpc_dist_server *s)
{
    return s->e.laddr;
}

void vhpc_dist_server_log(struct vhpc_dist_server *s, const char *prefix)
{
    s->e.logp = prefix;
}

int vhpc_dist_server_allow(struct vhpc_dist_server *s, const uid_t *uids, size_t n, vhpc_err_t *err)
{
    uid_t *a = n ? malloc(n * sizeof(*a)) : NULL;
    if (n && !a)
        return vhpc_err_set(err, -ENOMEM, "--allow-uid");
    if (n)
        memcpy(a, uids, n * sizeof(*a));
    free(s->e.allow);
    s->e.allow = a;
    s->e.nallow = n;
    return 0;
}

void vhpc_dist_server_limits(struct vhpc_dist_server *s, const struct vhpc_dist_limits *l)
{
    if (l->max_conns > 0)
        s->e.lim.max_conns = l->max_conns;
    if (l->max_per_peer > 0)
        s->e.lim.max_per_peer = l->max_per_peer;
    if (l->max_sessions > 0)
        s->e.lim.max_sessions = l->max_sessions;
    if (l->idle_ms > 0)
        s->e.lim.idle_ms = l->idle_ms;
}

int vhpc_dist_server_run(struct vhpc_dist_server *s, volatile sig_atomic_t *stop, vhpc_err_t *err)
{
    (void)err;
    return dist_engine_run(&s->e, stop);
}

void vhpc_dist_server_free(struct vhpc_dist_server *s)
{
    if (!s)
        return;
    dist_engine_fini(&s->e);
    free(s);
}
