/*
 * ivshmem_proto.c - send and receive the 8-byte messages of QEMU's
 * ivshmem-server protocol, with at most one file descriptor each.
 */
#include "ivshmem_proto.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int ivshm_send(int sock, int64_t value, int fd)
{
    uint64_t le = htole64((uint64_t)value);
    struct iovec iov = {.iov_base = &le, .iov_len = sizeof(le)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    if (fd >= 0) {
        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n == (ssize_t)sizeof(le))
            return 0;
        if (n >= 0)
            return -EPIPE; /* a stream socket never sends 1..7 bytes of 8 here */
        if (errno == EINTR)
            continue;
        return -errno;
    }
}

int ivshm_recv(int sock, int64_t *value, int *fd)
{
    uint64_t le = 0;
    struct iovec iov = {.iov_base = &le, .iov_len = sizeof(le)};
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof(ctl.buf)};
    ssize_t n;

    *fd = -1;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;

    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int f;
            memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*fd < 0)
                *fd = f;
            else
                close(f);
        }
    }
    if (n == 0)
        return -EPIPE;
    if (n != (ssize_t)sizeof(le) || (msg.msg_flags & MSG_CTRUNC)) {
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
        return -EBADMSG;
    }
    *value = (int64_t)le64toh(le);
    return 0;
}
