/*
 * fuzz_ivshmem.c - the client side of QEMU's ivshmem-server protocol
 * (common/ivshmem_proto.c) as libivc meets it when it attaches (attach.c):
 * the messages an ivcd (or anything listening on the job's socket) sends,
 * and the region it hands over, which is untrusted memory.  A thread plays
 * the server: it accepts libivc's connection and sends the messages the
 * input gives; libivc then registers, lists the peers, accepts and
 * connects, and leaves.
 *
 * Input: byte 0 = the number of messages (mod 16); per message 9 bytes:
 * flags (bit 0: attach the region's memfd, bit 1: an eventfd) and the
 * value (i64, little-endian); then the region's first bytes (the rest of a
 * 1 MiB memfd is zero).  Job magic 7, client id 1.
 */
#include "ivc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "ivshmem_proto.h"

#define REGION (1u << 20)

static char path[108];
static int lfd = -1;

static void cleanup(void)
{
    unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(path, sizeof(path), "%s/fuzz_ivshmem.%d.sock", fuzz_tmpdir(), (int)getpid());
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    unlink(path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4) < 0) {
        perror("fuzz_ivshmem: listening");
        exit(1);
    }
    atexit(cleanup);
    return 0;
}

struct server {
    const uint8_t *msgs;
    unsigned n;
    int memfd;
    volatile int accepted;
};

static void *serve(void *arg)
{
    struct server *s = arg;
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    s->accepted = 1;
    if (c < 0)
        return NULL;
    for (unsigned i = 0; i < s->n; i++) {
        const uint8_t *m = s->msgs + 9 * i;
        int64_t v;
        memcpy(&v, m + 1, 8); /* the input is little-endian, as the wire */
        int fd = -1;
        if (m[0] & 1)
            fd = s->memfd;
        else if (m[0] & 2)
            fd = eventfd(0, EFD_CLOEXEC);
        int r = ivshm_send(c, v, fd);
        if ((m[0] & 2) && !(m[0] & 1) && fd >= 0)
            close(fd);
        if (r < 0)
            break;
    }
    close(c); /* what was sent stays readable */
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned n = data[0] % 16;
    if (size < 1 + 9 * (size_t)n)
        return 0;
    struct server s = {.msgs = data + 1, .n = n, .memfd = memfd_create("fuzz", MFD_CLOEXEC)};
    if (s.memfd < 0 || ftruncate(s.memfd, REGION) < 0) {
        if (s.memfd >= 0)
            close(s.memfd);
        return 0;
    }
    size_t rlen = size - 1 - 9 * (size_t)n;
    if (rlen > REGION)
        rlen = REGION;
    if (rlen && pwrite(s.memfd, data + 1 + 9 * n, rlen, 0) != (ssize_t)rlen) {
        close(s.memfd);
        return 0;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, serve, &s) != 0) {
        close(s.memfd);
        return 0;
    }
    ivc_options_t o;
    memset(&o, 0, sizeof(o));
    o.location = path;
    o.timeout_ms = 200;
    ivc_ctx_t *ctx = NULL;
    int r = ivc_register(7, 1, &o, &ctx);
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "ivc_register: %s\n", ivc_strerror(r));
    if (r == 0) {
        ivc_peer_t peers[8], self;
        ivc_get_hosts(ctx, peers, 8);
        ivc_self(ctx, &self);
        ivc_chan_t *ch = NULL;
        if (ivc_accept(ctx, 0, &ch) == 0)
            ivc_close(ch);
        ch = NULL;
        if (ivc_connect_start(ctx, 2, &ch) == 0)
            ivc_close(ch);
        ivc_progress(ctx);
        ivc_unregister(ctx);
    }
    if (!s.accepted) { /* it never connected: let the thread go */
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
        if (c >= 0 && connect(c, (struct sockaddr *)&a, sizeof(a)) == 0) {
            pthread_join(t, NULL);
            close(c);
        } else {
            pthread_detach(t);
            if (c >= 0)
                close(c);
        }
    } else {
        pthread_join(t, NULL);
    }
    close(s.memfd);
    return 0;
}
