/*
 * fuzz_dist.c - a node of image distribution (dist/server.c, recv.c) as another node, a
 * pusher or a puller sees it: the real serve loop (vhpc_dist_server_run)
 * runs in a thread on 127.0.0.1:7470 inside a private network namespace, with a
 * store holding one small image ("img") and a 64 MiB budget; each input is
 * what one TCP client sends it (frames of dist/proto.h), after which the
 * client closes its side and reads until the node closes too.
 *
 * The namespace keeps the node from reaching anything but loopback: a PUSH
 * names children the node then connects to.  After each input the serve
 * loop must still be running: a peer speaking garbage costs one connection,
 * never the service (dist/proto.h).  Without CAP_SYS_ADMIN the
 * fuzzer exits 77 (skipped).
 */
#include "vhpc/dist.h"
#include "clock.h"
#include "fuzz_node.h"
#include "fuzz_util.h"
#include "vhpc/store.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char root[96];
static struct vhpc_store *st;
static struct vhpc_dist_server *srv;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static volatile sig_atomic_t stop;
static pthread_t thread;

static void *serve(void *arg)
{
    vhpc_err_t err = {0};
    vhpc_dist_server_run(srv, &stop, &err);
    return NULL;
}

static void cleanup(void)
{
    stop = 1;
    pthread_join(thread, NULL);
    vhpc_dist_server_free(srv);
    vhpc_store_close(st);
    fuzz_rm_tree("fuzz_dist", root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vhpc_err_t err = {0};
    fuzz_private_net("fuzz_dist");

    snprintf(root, sizeof(root), "%s/fuzz_dist.%d", fuzz_tmpdir(), (int)getpid());
    st = fuzz_store_with_img("fuzz_dist", root, 64u << 20); /* one image to pull and query */

    if (vhpc_dist_server_new(st, "127.0.0.1:7470", &srv, &err) < 0)
        fuzz_die("fuzz_dist", "node", err.msg);
    if (vhpc_dist_resolve(vhpc_dist_server_addr(srv), &addr, &addrlen, &err) < 0)
        fuzz_die("fuzz_dist", "node address", err.msg);
    if (pthread_create(&thread, NULL, serve, NULL) != 0)
        fuzz_die("fuzz_dist", "thread", "pthread_create");
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0) {
        close(fd);
        return 0;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t off = 0;
    int64_t deadline = vhpc_now_ms() + 2000;
    char buf[65536];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (off < size ? POLLOUT : 0)};
        int64_t left = deadline - vhpc_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (p.revents & POLLOUT) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                break;
            if (off == size)
                shutdown(fd, SHUT_WR);
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                break; /* the node closed: this input is done */
        }
        if (size == 0 && off == 0) {
            shutdown(fd, SHUT_WR);
            off = 1; /* nothing to send */
            size = 1;
        }
    }
    close(fd);
    if (pthread_tryjoin_np(thread, NULL) == 0) {
        fprintf(stderr, "fuzz_dist: the node's serve loop ended\n");
        abort();
    }
    return 0;
}
