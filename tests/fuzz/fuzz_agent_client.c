/*
 * fuzz_agent_client.c - the host's side of the agent protocol
 * (src/common/agent_client.c): everything a guest's agent (or another guest's,
 * for vhpc-rsh) may send.  The first input byte picks how the stream is
 * met: bit 0 set, as after agent_client_connect() (frames are skipped up to
 * the first PONG 0); bit 1, through agent_client_wait_ready(); the rest is
 * what the agent writes.  The client takes events until the stream ends or
 * breaks.
 */
#include "agent_client.h"
#include "fuzz_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char sock_path[108];
static int listen_fd = -1;

static void cleanup(void)
{
    unlink(sock_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(sock_path, sizeof(sock_path), "%s/fuzz_agent_client.%d.sock", fuzz_tmpdir(),
             (int)getpid());
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
    unlink(sock_path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(listen_fd, 4) < 0) {
        perror("fuzz_agent_client: listening socket");
        exit(1);
    }
    atexit(cleanup);
    return 0;
}

/* Write what the socket takes now; returns the new offset. */
static size_t feed(int fd, const uint8_t *data, size_t size, size_t off)
{
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (off == size)
        shutdown(fd, SHUT_WR);
    return off;
}

static void discard(int fd)
{
    char buf[4096];
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    data++;
    size--;
    agent_client_t *c = NULL;
    vhpc_err_t err = {0};
    int peer = -1;
    if (mode & 1) {
        if (agent_client_connect(sock_path, 1000, &c, &err) < 0)
            return 0;
        peer = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    } else {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            return 0;
        peer = sv[1];
        if (agent_client_open_fd(sv[0], "fuzz", &c, &err) < 0) {
            close(peer);
            return 0;
        }
    }
    if (peer < 0) {
        agent_client_close(c);
        return 0;
    }
    size_t off = feed(peer, data, size, 0);
    if ((mode & 2) && off == size) {
        agent_client_wait_ready(c, 100, &err);
        discard(peer);
    }
    for (int steps = 0; steps < 100000; steps++) {
        struct agent_event ev;
        if (off < size)
            off = feed(peer, data, size, off);
        discard(peer);
        int r = agent_client_step(c, off < size ? 0 : 1000, &ev, &err);
        if (r < 0 || (r == 0 && off == size))
            break;
        if (r > 0 && ev.type == AGENT_EV_CLOSED)
            break;
        if (r > 0) {
            /* Touch what the event hands out. */
            volatile uint8_t sum = 0;
            for (size_t i = 0; i < ev.len; i++)
                sum += ev.data[i];
            (void)sum;
            if (ev.type == AGENT_EV_HELLO && !agent_client_hello(c))
                abort();
        }
    }
    agent_client_close(c);
    close(peer);
    return 0;
}
