/*
 * fuzz_dist_client.c - the other end of image distribution (dist/push.c, pull.c): what
 * a node answers a puller (`vhpc image pull`: PUSH + MANIFEST + CHUNKs) or
 * a pusher (`vhpc image push`: STATE, PROGRESS, REPORT, ERROR).  A thread
 * plays the node on 127.0.0.1:7471 in a private network namespace: it
 * accepts the client's connection, sends the input (after its first byte)
 * and closes its side.  First byte, bit 0: push image "img" (5000 + 9000
 * bytes, 4 KiB chunks) to it; else pull "img" from it into an empty store.
 * Without CAP_SYS_ADMIN the fuzzer exits 77 (skipped).
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

#define NODE "127.0.0.1:7471"

static char root[96], pull_root[112];
static struct vhpc_store *st; /* holds "img", for pushes */
static int lfd = -1;

static void cleanup(void)
{
    vhpc_store_close(st);
    fuzz_rm_tree("fuzz_dist_client", root);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vhpc_err_t err = {0};
    fuzz_private_net("fuzz_dist_client");

    snprintf(root, sizeof(root), "%s/fuzz_dist_client.%d", fuzz_tmpdir(), (int)getpid());
    snprintf(pull_root, sizeof(pull_root), "%s/pull", root);
    st = fuzz_store_with_img("fuzz_dist_client", root, 0); /* "img", for pushes */

    struct sockaddr_storage sa;
    socklen_t sl;
    int one = 1;
    if (vhpc_dist_resolve(NODE, &sa, &sl, &err) < 0)
        fuzz_die("fuzz_dist_client", "address", err.msg);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sl) < 0 || listen(lfd, 8) < 0)
        fuzz_die("fuzz_dist_client", "listening", strerror(errno));
    atexit(cleanup);
    return 0;
}

struct node {
    const uint8_t *data;
    size_t size;
    volatile int accepted;
};

/* The node: send the input, then read what comes until the client closes. */
static void *node(void *arg)
{
    struct node *n = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    n->accepted = 1;
    if (fd < 0)
        return NULL;
    size_t off = 0;
    char buf[65536];
    int64_t deadline = vhpc_now_ms() + 3000;
    if (n->size == 0)
        shutdown(fd, SHUT_WR);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (off < n->size ? POLLOUT : 0)};
        int64_t left = deadline - vhpc_now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        if (p.revents & POLLOUT) {
            ssize_t k = send(fd, n->data + off, n->size - off, MSG_NOSIGNAL);
            if (k > 0)
                off += (size_t)k;
            else if (k < 0 && errno != EAGAIN)
                break;
            if (off == n->size)
                shutdown(fd, SHUT_WR);
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(fd, buf, sizeof(buf), 0);
            if (k == 0 || (k < 0 && errno != EAGAIN))
                break;
        }
    }
    close(fd);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int push = data[0] & 1;
    struct node n = {data + 1, size - 1, 0};
    pthread_t t;
    if (pthread_create(&t, NULL, node, &n) != 0)
        return 0;
    vhpc_err_t err = {0};
    const char *nodes[] = {NODE};
    if (push) {
        struct vhpc_dist_push_opts o = {.nodes = nodes,
                                        .nnodes = 1,
                                        .fanout = 1,
                                        .chunk = 4096,
                                        .mode = VHPC_DIST_PIPELINE,
                                        .timeout_ms = 1000};
        struct vhpc_dist_result *res = NULL;
        struct vhpc_ref ref;
        if (vhpc_dist_push(st, "img", &o, &res, &ref, &err) == 0)
            free(res);
    } else {
        struct vhpc_store *ps = NULL;
        fuzz_rm_tree("fuzz_dist_client", pull_root);
        if (vhpc_store_open(pull_root, &ps, &err) == 0 &&
            vhpc_store_set_budget(ps, 64u << 20, &err) == 0) {
            struct vhpc_ref got;
            size_t from;
            vhpc_dist_pull(ps, "img", nodes, 1, 1000, 0, &got, &from, &err);
        }
        vhpc_store_close(ps);
    }
    if (!n.accepted) { /* the client never connected: let the node go */
        struct sockaddr_storage sa;
        socklen_t sl;
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c >= 0 && vhpc_dist_resolve(NODE, &sa, &sl, &err) == 0)
            connect(c, (struct sockaddr *)&sa, sl);
        pthread_join(t, NULL);
        if (c >= 0)
            close(c);
    } else {
        pthread_join(t, NULL);
    }
    return 0;
}
