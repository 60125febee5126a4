/*
 * pull.c - vhpc_dist_pull: fetch an image from the first node of a list
 * that has a verified copy.  The puller sends a signed PULL; the node
 * answers as a sender (PUSH, MANIFEST, chunks) and the puller receives as
 * any node does (recv.c), but it decides the name the image is stored
 * under: an answer that is not the image asked for is refused.  A node
 * that refuses, fails or goes away is followed by the next, which
 * continues from what has arrived if it has the same image.
 */
#include "engine.h"
#include "clock.h"
#include "progress.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* Whether a node's answer to our PULL of `ref` is the image we asked for:
 * the puller decides the name it is stored under, never the node.  NAME:
 * that name (any version), NAME:VERSION: exactly that, NAME@PREFIX: that
 * name and a digest that starts so.  A bare digest prefix names nothing to
 * store it under, so it is refused too (unless it is also the name). */
static int pull_reply_ok(const char *ref, const struct dist_push_req *p, char *why, size_t len)
{
    const char *at = strchr(ref, '@'), *colon = strchr(ref, ':');
    size_t nl = at ? (size_t)(at - ref) : colon ? (size_t)(colon - ref) : strlen(ref);
    int name_ok = strlen(p->name) == nl && !strncmp(p->name, ref, nl);
    int ok = name_ok;
    if (ok && colon && !at)
        ok = p->version == atoi(colon + 1);
    if (ok && at)
        ok = at[1] && !strncasecmp(p->digest, at + 1, strlen(at + 1));
    if (ok)
        return 1;
    if (!at && !colon && !strncasecmp(p->digest, ref, strlen(ref)))
        snprintf(why, len,
                 "it answered a pull of '%s' with %s:%d (%.12s); say which name to store it "
                 "under: NAME@%s",
                 ref, p->name, p->version, p->digest, ref);
    else
        snprintf(why, len, "it answered a pull of '%s' with another image, %s:%d (%.12s); refused",
                 ref, p->name, p->version, p->digest);
    return 0;
}

static void ask_next(struct engine *e);

int dist_pull_refuse(struct conn *c, const struct dist_push_req *p)
{
    struct engine *e = c->e;
    char why[512];
    if (e->client && strcmp(e->client->digest, p->digest) != 0)
        snprintf(why, sizeof(why), "it answered with image %.12s, not %.12s (the one under way)",
                 p->digest, e->client->digest);
    else if (pull_reply_ok(e->pull_ref, p, why, sizeof(why)))
        return 0;
    dist_conn_send_error(c, why);
    dist_conn_lost(c, why);
    return 1;
}

void dist_pull_lost(struct conn *c, enum role role, struct session *s, const char *why)
{
    struct engine *e = c->e;
    /* The next node (a transfer under way continues from what it has, if
     * that node has the same image). */
    if (e->pull_ref && !e->client_done &&
        (role == R_PULL || role == R_MANIFEST || (role == R_UP && s))) {
        size_t used = strlen(e->pull_why);
        snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s: %s",
                 e->pull_from[c->pull_node], why);
        ask_next(e);
    }
}

/* Ask the next node of the list. */
static void ask_next(struct engine *e)
{
    while (e->pull_next < e->pull_n) {
        size_t i = e->pull_next++;
        struct sockaddr_storage sa;
        socklen_t sl;
        vhpc_err_t err = {0};
        size_t used = strlen(e->pull_why);
        if (vhpc_dist_resolve(e->pull_from[i], &sa, &sl, &err) < 0) {
            snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s", err.msg);
            continue;
        }
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sl) < 0 && errno != EINPROGRESS)) {
            snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s: %s", e->pull_from[i],
                     strerror(errno));
            if (fd >= 0)
                close(fd);
            continue;
        }
        struct conn *c = dist_conn_new(e, fd, R_PULL);
        if (!c)
            continue;
        vhpc_dist_addr_str((struct sockaddr *)&sa, c->peer, sizeof(c->peer));
        c->connecting = 1;
        c->is_pull = 1;
        c->pull_node = i;
        e->pull_node = i;
        json_t *j = json_pack("{s:s, s:i}", "ref", e->pull_ref, "timeout_ms", e->pull_timeout);
        if (!j || dist_sign(&e->mctx, j, c->peer, &err) < 0) {
            json_decref(j);
            snprintf(e->pull_why + used, sizeof(e->pull_why) - used, "\n  %s: %s", e->pull_from[i],
                     err.msg[0] ? err.msg : "out of memory");
            dist_conn_close(c);
            continue;
        }
        dist_conn_send_json(c, VHPC_DIST_PULL, j);
        return;
    }
    e->pull_next = e->pull_n + 1; /* nothing left to try */
}

int vhpc_dist_pull(struct vhpc_store *st, const char *ref, const char *const *from, size_t n,
                   int timeout_ms, int progress, struct vhpc_ref *got, size_t *node,
                   vhpc_err_t *err)
{
    struct engine e;
    int r;
    if (!n)
        return vhpc_err_setmsg(err, -EINVAL, "no node to pull from (--from HOST[:PORT],...)");
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage sa;
        socklen_t sl;
        if ((r = vhpc_dist_resolve(from[i], &sa, &sl, err)) < 0)
            return r;
    }
    if ((r = dist_engine_init(&e, st, err)) < 0)
        return r;
    struct vhpc_progress prog;
    e.pull_ref = strdup(ref);
    e.pull_from = from;
    e.pull_n = n;
    e.pull_timeout = timeout_ms > 0 ? timeout_ms : 30000;
    if (progress) {
        char label[200];
        snprintf(label, sizeof(label), "pull %s", ref);
        vhpc_progress_start(&prog, label, 0);
        e.prog = &prog;
    }
    ask_next(&e);
    dist_engine_run(&e, NULL);
    struct session *s = e.client;
    if (s && s->own == 1) {
        /* Let the REPORT reach the node. */
        struct conn *up = s->up;
        for (int64_t end = vhpc_now_ms() + 2000;
             up && !up->dead && up->qhead && vhpc_now_ms() < end;) {
            struct pollfd pf = {.fd = up->fd, .events = POLLOUT};
            poll(&pf, 1, 100);
            e.now = vhpc_now_ms();
            dist_conn_flush(up);
        }
        if (got) {
            memset(got, 0, sizeof(*got));
            snprintf(got->name, sizeof(got->name), "%s", s->name);
            got->version = s->version;
            snprintf(got->digest, sizeof(got->digest), "%s", s->digest);
        }
        if (node)
            *node = e.pull_node;
        r = 0;
    } else if (s && s->own == -1) {
        r = vhpc_err_setmsg(err, -EIO, "pulling %s from %s: %s", ref, from[e.pull_node], s->reason);
    } else {
        r = vhpc_err_setmsg(err, -ENOENT, "no node could give image '%s':%s", ref, e.pull_why);
    }
    if (progress) {
        if (s)
            prog.total = prog.done = s->bytes_in;
        vhpc_progress_done(&prog, r == 0);
    }
    free((char *)e.pull_ref);
    e.pull_ref = NULL;
    e.client = NULL;
    dist_engine_fini(&e);
    return r;
}
