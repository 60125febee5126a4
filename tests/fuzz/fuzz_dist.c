/*
 * fuzz_dist.c - a node of image distribution (dist.c) as another node, a
 * pusher or a puller sees it: the real serve loop (vhpc_dist_server_run)
 * runs in a thread on 127.0.0.1:7470 inside a private network namespace, with a
 * store holding one small image ("img") and a 64 MiB budget; each input is
 * what one TCP client sends it (frames of dist_proto.h), after which the
 * client closes its side and reads until the node closes too.
 *
 * The namespace keeps the node from reaching anything but loopback: a PUSH
 * names children the node then connects to.  After each input the serve
 * loop must still be running: a peer speaking garbage costs one connection,
 * never the service (dist_proto.h).  Without CAP_SYS_ADMIN the
 * fuzzer exits 77 (skipped).
 */
#include "dist.h"
#include "fuzz_util.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

static void rm_tree(const char *dir)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_dist: could not remove %s\n", dir);
}

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
    rm_tree(root);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_dist: %s: %s\n", what, why);
    exit(1);
}

/* A blob of `len` bytes of `c`. */
static void add_blob(const char *role, int c, size_t len, json_t *blobs)
{
    char path[160], digest[65];
    uint64_t size;
    vhpc_err_t err = {0};
    snprintf(path, sizeof(path), "%s/%s", root, role);
    FILE *f = fopen(path, "wb");
    if (!f)
        die(path, strerror(errno));
    for (size_t i = 0; i < len; i++)
        fputc(c, f);
    fclose(f);
    if (vhpc_store_add_blob(st, path, 0, digest, &size, &err) < 0)
        die("adding a blob", err.msg);
    json_object_set_new(blobs, role,
                        json_pack("{s:s, s:I}", "digest", digest, "size", (json_int_t)size));
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vhpc_err_t err = {0};
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "fuzz_dist: needs a private network namespace (root): %s; skipped\n",
                strerror(errno));
        exit(77);
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die("lo", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die("bringing lo up", strerror(errno));
    close(s);
    signal(SIGPIPE, SIG_IGN);

    snprintf(root, sizeof(root), "%s/fuzz_dist.%d", fuzz_tmpdir(), (int)getpid());
    rm_tree(root);
    if (vhpc_store_open(root, &st, &err) < 0 || vhpc_store_set_budget(st, 64u << 20, &err) < 0)
        die("store", err.msg);
    /* One image to pull and query. */
    json_t *m = json_pack("{s:i, s:s, s:s, s:s, s:s, s:{}, s:[], s:n}", "schema", 1, "kind",
                          "minimal", "os", "debian-12", "arch", "x86_64", "kernel",
                          "6.1.0-fuzz-amd64", "packages", "libs", "parent");
    json_t *blobs = json_object();
    add_blob("kernel", 'k', 5000, blobs);
    add_blob("initrd", 'i', 9000, blobs);
    json_object_set_new(m, "blobs", blobs);
    json_object_set_new(m, "size", json_integer(14000));
    char digest[65];
    if (vhpc_store_put_manifest(st, m, digest, &err) < 0 ||
        vhpc_store_tag(st, "img", 0, digest, NULL, &err) < 0)
        die("image", err.msg);
    json_decref(m);

    if (vhpc_dist_server_new(st, "127.0.0.1:7470", &srv, &err) < 0)
        die("node", err.msg);
    if (vhpc_dist_resolve(vhpc_dist_server_addr(srv), &addr, &addrlen, &err) < 0)
        die("node address", err.msg);
    if (pthread_create(&thread, NULL, serve, NULL) != 0)
        die("thread", "pthread_create");
    atexit(cleanup);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    int64_t deadline = now_ms() + 2000;
    char buf[65536];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (off < size ? POLLOUT : 0)};
        int64_t left = deadline - now_ms();
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
