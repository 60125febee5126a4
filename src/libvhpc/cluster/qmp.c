/*
 * qmp.c - see qmp.h.  Messages are JSON objects separated by CRLF; replies
 * carry "return" or "error", asynchronous events carry "event".
 */
#include "qmp.h"
#include "clock.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Next JSON message, waiting until `deadline` (ms, monotonic). */
static int read_msg(struct qmp *q, json_t **out, long long deadline, vhpc_err_t *err)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->buf) + 1;
            json_error_t je;
            json_t *j = json_loadb(q->buf, n, 0, &je);
            memmove(q->buf, q->buf + n, q->len - n);
            q->len -= n;
            if (!j || !json_is_object(j)) {
                json_decref(j);
                return vhpc_err_setmsg(err, -EPROTO, "QMP: malformed message: %s", je.text);
            }
            *out = j;
            return 0;
        }
        long long left = deadline - vhpc_now_ms();
        if (left <= 0)
            return vhpc_err_setmsg(err, -ETIMEDOUT, "QMP: no answer from QEMU in time");
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return vhpc_err_set(err, -errno, "QMP: poll");
        if (r == 0)
            continue;
        if (q->cap - q->len < 4096) {
            size_t cap = q->cap ? q->cap * 2 : 16384;
            if (cap > (64u << 20))
                return vhpc_err_setmsg(err, -EPROTO, "QMP: message too long");
            char *b = realloc(q->buf, cap);
            if (!b)
                return vhpc_err_set(err, -ENOMEM, "QMP");
            q->buf = b;
            q->cap = cap;
        }
        ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vhpc_err_set(err, -errno, "QMP: read");
        if (n == 0)
            return vhpc_err_setmsg(err, -EPIPE, "QMP: QEMU closed the connection");
        q->len += (size_t)n;
    }
}

static void keep_event(struct qmp *q, json_t *ev)
{
    if (q->nevents == QMP_MAX_EVENTS) { /* keep the newest */
        json_decref(q->events[0]);
        memmove(q->events, q->events + 1, sizeof(q->events[0]) * (QMP_MAX_EVENTS - 1));
        q->nevents--;
    }
    q->events[q->nevents++] = ev;
}

static int send_json(struct qmp *q, json_t *msg, vhpc_err_t *err)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (!s)
        return vhpc_err_set(err, -ENOMEM, "QMP");
    size_t len = strlen(s), off = 0;
    int r = 0;
    while (off < len) {
        ssize_t n = send(q->fd, s + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = vhpc_err_set(err, -errno, "QMP: send");
            break;
        }
        off += (size_t)n;
    }
    free(s);
    return r;
}

int qmp_connect(struct qmp *q, const char *path, int timeout_ms, vhpc_err_t *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    long long deadline = vhpc_now_ms() + timeout_ms;
    json_t *greeting = NULL;
    int r;

    memset(q, 0, sizeof(*q));
    q->fd = -1;
    if (strlen(path) >= sizeof(sa.sun_path))
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "QMP socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    for (;;) {
        q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (q->fd < 0)
            return vhpc_err_set(err, -errno, "QMP: socket");
        if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        r = -errno;
        close(q->fd);
        q->fd = -1;
        if ((r != -ENOENT && r != -ECONNREFUSED) || vhpc_now_ms() >= deadline)
            return vhpc_err_set(err, r, "connecting to QMP socket %s", path);
        usleep(10000);
    }
    if ((r = read_msg(q, &greeting, deadline, err)) < 0)
        goto fail;
    if (!json_object_get(greeting, "QMP")) {
        r = vhpc_err_setmsg(err, -EPROTO, "QMP: %s does not greet like QEMU", path);
        goto fail;
    }
    json_decref(greeting);
    greeting = NULL;
    if ((r = qmp_command(q, "qmp_capabilities", NULL, NULL, timeout_ms, err)) < 0)
        goto fail;
    return 0;
fail:
    json_decref(greeting);
    qmp_close(q);
    return r;
}

int qmp_command(struct qmp *q, const char *cmd, json_t *args, json_t **ret, int timeout_ms,
                vhpc_err_t *err)
{
    long long deadline = vhpc_now_ms() + timeout_ms;
    json_t *msg = json_pack("{s:s}", "execute", cmd);
    int r;

    if (ret)
        *ret = NULL;
    if (!msg) {
        json_decref(args);
        return vhpc_err_set(err, -ENOMEM, "QMP %s", cmd);
    }
    if (args)
        json_object_set_new(msg, "arguments", args);
    r = send_json(q, msg, err);
    json_decref(msg);
    if (r < 0)
        return vhpc_err_wrap(err, "QMP %s", cmd);
    for (;;) {
        json_t *m;
        if ((r = read_msg(q, &m, deadline, err)) < 0)
            return vhpc_err_wrap(err, "QMP %s", cmd);
        if (json_object_get(m, "event")) {
            keep_event(q, m);
            continue;
        }
        json_t *e = json_object_get(m, "error");
        if (e) {
            const char *desc = json_string_value(json_object_get(e, "desc"));
            r = vhpc_err_setmsg(err, -EIO, "QMP %s: %s", cmd, desc ? desc : "failed");
            json_decref(m);
            return r;
        }
        if (ret) {
            *ret = json_incref(json_object_get(m, "return"));
        }
        json_decref(m);
        return 0;
    }
}

int qmp_wait_event(struct qmp *q, const char *name, json_t **data, int timeout_ms, vhpc_err_t *err)
{
    long long deadline = vhpc_now_ms() + timeout_ms;
    if (data)
        *data = NULL;
    for (;;) {
        for (int i = 0; i < q->nevents; i++) {
            const char *ev = json_string_value(json_object_get(q->events[i], "event"));
            if (ev && strcmp(ev, name) == 0) {
                if (data)
                    *data = json_incref(json_object_get(q->events[i], "data"));
                json_decref(q->events[i]);
                memmove(q->events + i, q->events + i + 1,
                        sizeof(q->events[0]) * (size_t)(q->nevents - i - 1));
                q->nevents--;
                return 0;
            }
        }
        json_t *m;
        int r = read_msg(q, &m, deadline, err);
        if (r < 0)
            return vhpc_err_wrap(err, "waiting for QMP event %s", name);
        if (json_object_get(m, "event"))
            keep_event(q, m);
        else
            json_decref(m); /* a late reply: nothing waits for it */
    }
}

void qmp_close(struct qmp *q)
{
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    for (int i = 0; i < q->nevents; i++)
        json_decref(q->events[i]);
    q->nevents = 0;
    free(q->buf);
    q->buf = NULL;
    q->len = q->cap = 0;
}
