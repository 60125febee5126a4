/*
 * fuzz_qmp.c - QMP replies and events (qmp.c), as a QEMU process (which
 * runs guest-controlled device models) could send them.  The input is what
 * "QEMU" writes on the socket; the client runs commands and waits for
 * events until the stream ends.
 */
#include "qmp.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (size > (128u << 10) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(sv[1], SHUT_WR);

    struct qmp q;
    memset(&q, 0, sizeof(q));
    q.fd = sv[0];
    vhpc_err_t err = {0};
    static const char *const events[] = {"STOP", "RESUME", "SHUTDOWN", "MIGRATION"};
    for (int i = 0; i < 64; i++) {
        json_t *ret = NULL;
        int r = qmp_command(&q, "query-status", NULL, &ret, 1000, &err);
        json_decref(ret);
        if (r == -EPIPE || r == -ETIMEDOUT)
            break;
        json_t *ev = NULL;
        r = qmp_wait_event(&q, events[i % 4], &ev, 0, &err);
        json_decref(ev);
    }
    qmp_close(&q); /* closes sv[0] */
    close(sv[1]);
    return 0;
}
