/*
 * attach.c - finding and mapping the job's region, and claiming an
 * endpoint slot in it.
 *
 * On a host the region comes from ivcd: we connect to the job's UNIX socket
 * and read the first three ivshmem-server messages (version, our peer id, the
 * shared-memory fd).  Inside a QEMU guest it is BAR2 of the ivshmem PCI
 * device, mapped from sysfs with no kernel driver; BAR0 register IVPosition
 * (offset 8) gives the VM's peer id.  Either way the header is validated
 * against the real mapping size before anything else is trusted.
 */
#include "internal.h"
#include "ivshmem_proto.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Receive one message within the context's timeout (the socket is blocking
 * during attach only). */
static int recv_timed(struct ivc_ctx *ctx, int64_t *val, int *fd)
{
    struct pollfd p = {.fd = ctx->sock, .events = POLLIN};
    int r = poll(&p, 1, ctx->timeout_ms);
    if (r == 0)
        return IVC_ETIMEDOUT;
    if (r < 0)
        return -errno;
    r = ivshm_recv(ctx->sock, val, fd);
    return r == -EPIPE || r == -EBADMSG ? IVC_EPROTO : r;
}

static int attach_host(struct ivc_ctx *ctx, const char *path, int *memfd, size_t *size)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int64_t v;
    int fd = -1, r;
    struct stat st;

    if (strlen(path) >= sizeof(sa.sun_path))
        return IVC_EINVAL;
    strcpy(sa.sun_path, path);
    ctx->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ctx->sock < 0)
        return -errno;
    if (connect(ctx->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        r = errno == ENOENT || errno == ECONNREFUSED ? IVC_ENODEV : -errno;
        goto fail;
    }
    if ((r = recv_timed(ctx, &v, &fd)) < 0)
        goto fail;
    if (fd >= 0 || v != IVSHMEM_PROTOCOL_VERSION) {
        r = IVC_EPROTONOSUPPORT;
        goto fail;
    }
    if ((r = recv_timed(ctx, &v, &fd)) < 0)
        goto fail;
    if (fd >= 0 || v < 0 || v > IVSHMEM_MAX_PEER_ID) {
        r = IVC_EPROTO;
        goto fail;
    }
    ctx->vm_id = (uint16_t)v;
    if ((r = recv_timed(ctx, &v, &fd)) < 0)
        goto fail;
    if (fd < 0 || v != -1) {
        r = IVC_EPROTO;
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto fail;
    }
    *memfd = fd;
    *size = (size_t)st.st_size;
    /* From now on the socket only carries peer join/leave notices, drained
     * without blocking. */
    fcntl(ctx->sock, F_SETFL, fcntl(ctx->sock, F_GETFL) | O_NONBLOCK);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    close(ctx->sock);
    ctx->sock = -1;
    return r;
}

static int read_hex_file(const char *dir, const char *name, unsigned long *out)
{
    char path[PATH_MAX], buf[32];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return IVC_EPROTO;
    buf[n] = 0;
    *out = strtoul(buf, NULL, 0);
    return 0;
}

/* Find an ivshmem PCI device (first match in sysfs order); returns 0 and the
 * device directory, or IVC_ENODEV. */
static int find_guest_device(char *dir, size_t len)
{
    /* $IVC_SYSFS_PCI: another sysfs PCI device directory (tests use a fake). */
    const char *root = getenv("IVC_SYSFS_PCI");
    if (!root || !*root)
        root = "/sys/bus/pci/devices";
    DIR *d = opendir(root);
    struct dirent *e;
    int r = IVC_ENODEV;

    if (!d)
        return IVC_ENODEV;
    while ((e = readdir(d))) {
        unsigned long vendor, device;
        char path[PATH_MAX];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", root, e->d_name);
        if (read_hex_file(path, "vendor", &vendor) < 0 ||
            read_hex_file(path, "device", &device) < 0)
            continue;
        if (vendor == IVC_PCI_VENDOR && device == IVC_PCI_DEVICE) {
            snprintf(dir, len, "%s", path);
            r = 0;
            break;
        }
    }
    closedir(d);
    return r;
}

bool ivc__guest_device_present(void)
{
    char dir[PATH_MAX];
    return find_guest_device(dir, sizeof(dir)) == 0;
}

static int attach_guest(struct ivc_ctx *ctx, int *memfd, size_t *size)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    struct stat st;
    int r, fd;

    if ((r = find_guest_device(dir, sizeof(dir))) < 0)
        return r;
    /* Memory decoding must be on before the BARs can be touched. */
    snprintf(path, sizeof(path), "%s/enable", dir);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "1", 1) < 0 && errno != EBUSY) {
            /* already enabled shows up as EBUSY on some kernels; else ignore:
             * the mmap below fails clearly if decoding is off */
        }
        close(fd);
    }
    /* BAR0: registers; IVPosition at offset 8 is our peer id. */
    snprintf(path, sizeof(path), "%s/resource0", dir);
    fd = open(path, O_RDWR | O_CLOEXEC | O_SYNC);
    if (fd < 0)
        return -errno;
    void *regs = mmap(NULL, IVC_PAGE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (regs == MAP_FAILED)
        return -errno;
    int32_t pos = *(volatile int32_t *)((char *)regs + 8);
    munmap(regs, IVC_PAGE);
    if (pos < 0 || pos > IVSHMEM_MAX_PEER_ID)
        return IVC_EPROTO; /* -1: the device is not connected to a server */
    ctx->vm_id = (uint16_t)pos;

    snprintf(path, sizeof(path), "%s/resource2", dir);
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    *memfd = fd;
    *size = (size_t)st.st_size;
    return 0;
}

/* Check the header against the mapping and copy the geometry privately. */
static int validate_header(struct ivc_ctx *ctx)
{
    const struct ivc_hdr *h = (const struct ivc_hdr *)ctx->base;
    struct ivc_geometry g;

    memcpy(&ctx->hdr_copy, h, IVC_HDR_CONST_SIZE);
    h = &ctx->hdr_copy; /* everything below reads the private copy */
    if (h->signature != IVC_REGION_SIGNATURE)
        return IVC_EPROTO;
    if (h->version != IVC_LAYOUT_VERSION || h->hdr_size != sizeof(struct ivc_hdr))
        return IVC_EPROTONOSUPPORT;
    if (h->region_size != ctx->size || !is_pow2(h->region_size))
        return IVC_EPROTO;
    if (h->job_magic != ctx->magic)
        return IVC_EACCES;
    if (!h->max_clients || h->max_clients > IVC_MAX_CLIENTS_LIMIT || !h->max_eps ||
        h->max_eps > IVC_MAX_EPS_LIMIT || !h->conns_per_ep ||
        h->conns_per_ep > IVC_CONNS_PER_EP_LIMIT)
        return IVC_EPROTO;
    /* The offsets must be exactly what the layout rules give. */
    if (ivc_geometry_compute(&g, h->region_size, h->max_clients, h->max_eps, h->conns_per_ep) < 0)
        return IVC_EPROTO;
    if (g.clients_off != h->clients_off || g.eps_off != h->eps_off || g.conns_off != h->conns_off ||
        g.pool_off != h->pool_off || g.share_size != h->share_size)
        return IVC_EPROTO;
    if (ctx->vm_id >= g.max_clients)
        return IVC_EPROTO;
    ctx->g = g;
    return 0;
}

/* Claim a free endpoint slot: CAS FREE -> LIVE keeping the generation
 * ivcd (or the previous owner) left there. */
static int claim_slot(struct ivc_ctx *ctx)
{
    for (uint32_t i = 0; i < ctx->g.max_eps; i++) {
        struct ivc_ep *e = ivc__ep(ctx, i);
        uint64_t st = atomic_load_explicit(&e->status, memory_order_acquire);
        if (IVC_EP_STATE(st) != IVC_EP_FREE)
            continue;
        uint32_t gen = IVC_EP_GEN(st);
        uint64_t live = IVC_EP_STATUS(gen, ctx->vm_id, IVC_EP_LIVE);
        if (!atomic_compare_exchange_strong(&e->status, &st, live))
            continue;
        ctx->ep = i;
        ctx->gen = gen;
        ctx->ep_p = e;
        ctx->status_p = &e->status;
        ctx->my_status = live;
        e->job_magic = ctx->magic;
        e->client_id = ctx->client_id;
        e->pid = (int32_t)getpid();
        atomic_store_explicit(&e->ack, 0, memory_order_relaxed);
        atomic_store_explicit(&e->conn_req, 0, memory_order_relaxed);
        /* Our conn records start idle. */
        for (uint32_t k = 0; k < ctx->g.conns_per_ep; k++) {
            struct ivc_conn *c = ivc__conn(ctx, i * ctx->g.conns_per_ep + k);
            atomic_store_explicit(&c->i_state, IVC_SIDE(0, IVC_SIDE_IDLE), memory_order_relaxed);
        }
        /* A target of the previous owner may have left an answer in a record's
         * target line (which only targets write): number our requests from a
         * range of our own generation so that an old answer never matches. */
        ctx->conn_seq = gen << 16;
        atomic_thread_fence(memory_order_release);
        return 0;
    }
    return IVC_ENOSPC;
}

int ivc__attach(struct ivc_ctx *ctx)
{
    const char *loc = ctx->location;
    char defpath[128];
    int memfd = -1, r;
    size_t size = 0;

    ctx->sock = -1;
    if (!loc)
        loc = getenv("IVC_SOCKET");
    if (!loc || !*loc) {
        if (ivc__guest_device_present()) {
            loc = IVC_GUEST;
        } else {
            snprintf(defpath, sizeof(defpath), IVC_SOCKET_DIR "/ivc-%" PRIu64 ".sock", ctx->magic);
            loc = defpath;
        }
    }
    r = strcmp(loc, IVC_GUEST) == 0 ? attach_guest(ctx, &memfd, &size)
                                    : attach_host(ctx, loc, &memfd, &size);
    if (r < 0)
        return r;
    if (size < IVC_REGION_MIN || size > IVC_REGION_MAX || !is_pow2(size)) {
        r = IVC_EPROTO;
        goto fail;
    }
    ctx->size = size;
    ctx->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    close(memfd);
    memfd = -1;
    if (ctx->base == MAP_FAILED) {
        ctx->base = NULL;
        r = -errno;
        goto fail;
    }
    if ((r = validate_header(ctx)) < 0)
        goto fail;
    if ((r = claim_slot(ctx)) < 0)
        goto fail;

    ctx->npages = (uint32_t)(ctx->g.share_size / IVC_PAGE);
    ctx->pages = calloc((ctx->npages + 63) / 64, sizeof(uint64_t));
    ctx->conn_busy = calloc(ctx->g.conns_per_ep, 1);
    if (!ctx->pages || !ctx->conn_busy) {
        r = IVC_ENOMEM;
        goto fail;
    }
    ctx->conn_next = 0;
    ctx->seen_req = 0;
    ctx->req_maybe = true;
    ctx->epoch++;
    ctx->state = IVC_CTX_ATTACHED;
    return 0;
fail:
    if (memfd >= 0)
        close(memfd);
    ivc__detach(ctx);
    return r;
}

void ivc__detach(struct ivc_ctx *ctx)
{
    if (ctx->base)
        munmap(ctx->base, ctx->size);
    ctx->base = NULL;
    ctx->ep_p = NULL;
    ctx->status_p = NULL;
    if (ctx->sock >= 0)
        close(ctx->sock);
    ctx->sock = -1;
    free(ctx->pages);
    ctx->pages = NULL;
    free(ctx->conn_busy);
    ctx->conn_busy = NULL;
    ctx->epoch++; /* every channel's pointers are now stale */
}

/* Read and discard ivcd's peer join/leave notices so its socket never fills.
 * (Liveness itself is read from the region, which works in guests too.) */
void ivc__drain_socket(struct ivc_ctx *ctx)
{
    int64_t v;
    int fd;
    if (ctx->sock < 0)
        return;
    for (;;) {
        int r = ivshm_recv(ctx->sock, &v, &fd);
        if (fd >= 0)
            close(fd);
        if (r == -EAGAIN)
            return;
        if (r < 0) {
            /* ivcd went away: the mapping stays valid, only reclaim stops. */
            close(ctx->sock);
            ctx->sock = -1;
            return;
        }
    }
}

int ivc__check_header(struct ivc_ctx *ctx)
{
    if (ctx->state != IVC_CTX_ATTACHED)
        return ctx->state == IVC_CTX_BROKEN ? IVC_EPROTO : IVC_ENOTCONN;
    if (memcmp(ctx->base, &ctx->hdr_copy, IVC_HDR_CONST_SIZE) != 0) {
        ctx->state = IVC_CTX_BROKEN;
        return IVC_EPROTO;
    }
    return 0;
}

bool ivc__ring_valid(const struct ivc_ctx *ctx, uint32_t ep, uint64_t off, uint64_t size)
{
    if (ep >= ctx->g.max_eps || !is_pow2(size) || size < IVC_RING_MIN || size > IVC_RING_MAX)
        return false;
    if (off % IVC_PAGE)
        return false;
    uint64_t lo = ivc__share_off(ctx, ep), hi = lo + ctx->g.share_size;
    return off >= lo && off < hi && size <= hi - off;
}
