/*
 * fuzz_ivcd.c - ivcd as its clients and operators meet it: the ivshmem
 * server (server.c), the control socket (ctl.c) and, above all, the region
 * (region.c), which every peer can scribble on.  A fresh ivcd (1 MiB
 * region, 4 peers, 4 endpoints with 4 channels) is set up per input and
 * driven by the same dispatch as main.c's loop, on a clock the input moves.
 *
 * The input is a list of operations, one byte each plus arguments:
 *   0 connect an ivshmem client        1 k: disconnect client k
 *   2 off16 n bytes: write n bytes into the region's tables at off
 *   3 n bytes: a control request line (a connection of its own, kept)
 *   4 t8: advance the clock by t * 50 ms and tick
 *   5 k: client k sends a byte (which ivcd must refuse)
 *   6 k: close control connection k
 */
#include "fuzz_util.h"
#include "ivcd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static uint64_t fake_now;
static char dir[80];

int ivcd_err_set(struct ivcd_err *err, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

void ivcd_log(int prio, const char *fmt, ...)
{
    (void)prio;
    (void)fmt;
}

uint64_t ivcd_now_ms(void)
{
    return fake_now;
}

static void cleanup(void)
{
    rmdir(dir); /* the sockets in it are removed after each input */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(dir, sizeof(dir), "%s/fuzz_ivcd.%d", fuzz_tmpdir(), (int)getpid());
    atexit(cleanup);
    return 0;
}

static void pump(struct ivcd *d)
{
    struct epoll_event evs[64];
    for (int round = 0; round < 16; round++) {
        int n = epoll_wait(d->epfd, evs, 64, 0);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t idx = (uint32_t)evs[i].data.u64;
            switch (kind) {
            case EV_LISTEN: server_accept(d); break;
            case EV_CLIENT: server_client_event(d, idx, evs[i].events); break;
            case EV_CTL_LISTEN: ctl_accept(d); break;
            case EV_CTL: ctl_conn_event(d, idx, evs[i].events); break;
            default: break;
            }
            server_reap(d);
        }
        ctl_poll(d, ivcd_now_ms());
    }
}

static int connect_to(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(s);
        s = -1;
    }
    return s;
}

/* Read (and drop) what ivcd sent on s, closing the fds that came with it. */
static void drain(int s)
{
    char buf[512];
    union {
        char b[CMSG_SPACE(16 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    for (;;) {
        struct iovec iov = {buf, sizeof(buf)};
        struct msghdr m = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = ctl.b,
                           .msg_controllen = sizeof(ctl.b)};
        ssize_t n = recvmsg(s, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n <= 0)
            return;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                close(f);
            }
        }
    }
}

#define NCL  6
#define NCTL 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char sock[96], ctlp[100];
    struct ivcd d = {.epfd = -1, .listen_fd = -1, .ctl_fd = -1, .region.fd = -1};
    struct ivcd_err err = {{0}};
    int cl[NCL], cc[NCTL];
    for (int i = 0; i < NCL; i++)
        cl[i] = -1;
    for (int i = 0; i < NCTL; i++)
        cc[i] = -1;
    fake_now = 1000000;
    snprintf(sock, sizeof(sock), "%s/ivc.sock", dir);
    snprintf(ctlp, sizeof(ctlp), "%s.ctl", sock);
    d.cfg.socket_path = sock;
    d.cfg.ctl_path = ctlp;
    d.cfg.magic = 7;
    d.cfg.size = 1u << 20;
    d.cfg.max_peers = 4;
    d.cfg.max_eps = 4;
    d.cfg.conns_per_ep = 4;
    d.cfg.vectors = 1;
    d.cfg.mode = 0600;
    d.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (d.epfd < 0 || region_create(&d.region, &d.cfg, &err) < 0 || ctl_init(&d, &err) < 0 ||
        server_init(&d, &err) < 0) {
        fprintf(stderr, "fuzz_ivcd: setting up: %s\n", err.msg);
        abort();
    }
    size_t i = 0;
    while (i < size) {
        uint8_t op = data[i++] % 7;
        uint8_t k = i < size ? data[i] : 0;
        switch (op) {
        case 0:
            for (int j = 0; j < NCL; j++)
                if (cl[j] < 0) {
                    cl[j] = connect_to(sock);
                    break;
                }
            break;
        case 1:
            i++;
            if (cl[k % NCL] >= 0) {
                close(cl[k % NCL]);
                cl[k % NCL] = -1;
            }
            break;
        case 2: {
            if (size - i < 3) {
                i = size;
                break;
            }
            size_t off = (size_t)data[i] | (size_t)data[i + 1] << 8, n = data[i + 2];
            i += 3;
            if (n > size - i)
                n = size - i;
            off %= d.region.map_len;
            if (n > d.region.map_len - off)
                n = d.region.map_len - off;
            memcpy(d.region.base + off, data + i, n);
            i += n;
            break;
        }
        case 3: {
            size_t n = i < size ? data[i++] : 0;
            if (n > size - i)
                n = size - i;
            int j = 0;
            while (j < NCTL && cc[j] >= 0)
                j++;
            if (j == NCTL) {
                close(cc[0]);
                j = 0;
            }
            cc[j] = connect_to(ctlp);
            if (cc[j] >= 0 && n && send(cc[j], data + i, n, MSG_NOSIGNAL) < 0)
                (void)0; /* ivcd may have closed it already */
            i += n;
            break;
        }
        case 4:
            i++;
            fake_now += (uint64_t)k * 50;
            region_tick(&d.region, fake_now);
            break;
        case 5:
            i++;
            if (cl[k % NCL] >= 0)
                send(cl[k % NCL], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            break;
        case 6:
            i++;
            if (cc[k % NCTL] >= 0) {
                close(cc[k % NCTL]);
                cc[k % NCTL] = -1;
            }
            break;
        }
        pump(&d);
        for (int j = 0; j < NCL; j++)
            if (cl[j] >= 0)
                drain(cl[j]);
        for (int j = 0; j < NCTL; j++)
            if (cc[j] >= 0)
                drain(cc[j]);
    }
    ctl_fini(&d);
    server_fini(&d);
    region_destroy(&d.region);
    close(d.epfd);
    for (int j = 0; j < NCL; j++)
        if (cl[j] >= 0)
            close(cl[j]);
    for (int j = 0; j < NCTL; j++)
        if (cc[j] >= 0)
            close(cc[j]);
    return 0;
}
