/*
 * test_ivcd_util.c - see test_ivcd_util.h.
 */
#include "test_ivcd_util.h"
#include "ivshmem_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int raw_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {.tv_sec = RECV_TIMEOUT_MS / 1000};

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_ASSERT(s >= 0, "socket: %s", strerror(errno));
    T_ASSERT(connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", path,
             strerror(errno));
    T_ASSERT(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO: %s",
             strerror(errno));
    return s;
}

void raw_recv(int sock, int64_t *value, int *fd)
{
    int r = ivshm_recv(sock, value, fd);
    T_ASSERT(r == 0, "receiving a message from ivcd: %s",
             r == -EAGAIN ? "timed out" : strerror(-r));
}

void raw_expect(int sock, int64_t value, bool with_fd, int *fd)
{
    int64_t v;
    int f;

    raw_recv(sock, &v, &f);
    T_ASSERT(v == value && (f >= 0) == with_fd, "expected %lld %s fd, got %lld %s fd",
             (long long)value, with_fd ? "with" : "without", (long long)v,
             f >= 0 ? "with" : "without");
    if (fd)
        *fd = f;
    else if (f >= 0)
        close(f);
}

bool raw_quiet(int sock, int ms)
{
    struct pollfd p = {.fd = sock, .events = POLLIN};
    return poll(&p, 1, ms) == 0;
}

void raw_attach(struct raw_client *c, const char *path, uint32_t vectors)
{
    struct stat st;
    int64_t v;
    int fd;

    c->sock = raw_connect(path);
    raw_expect(c->sock, 0, false, NULL);
    raw_recv(c->sock, &c->id, &fd);
    T_ASSERT(c->id >= 0 && fd < 0, "bad id message %lld", (long long)c->id);
    raw_expect(c->sock, -1, true, &c->shm_fd);
    /* Others' eventfds, then ours: `vectors` messages with our id. */
    for (uint32_t own = 0; own < vectors;) {
        raw_recv(c->sock, &v, &fd);
        T_ASSERT(fd >= 0, "peer %lld without fd during the greeting", (long long)v);
        close(fd);
        if (v == c->id)
            own++;
    }
    T_ASSERT(fstat(c->shm_fd, &st) == 0, "fstat: %s", strerror(errno));
    c->size = (size_t)st.st_size;
    c->base = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, c->shm_fd, 0);
    T_ASSERT(c->base != MAP_FAILED, "mmap: %s", strerror(errno));
}

void raw_close(struct raw_client *c)
{
    if (c->base)
        munmap(c->base, c->size);
    if (c->shm_fd >= 0)
        close(c->shm_fd);
    if (c->sock >= 0)
        close(c->sock);
    c->base = NULL;
    c->shm_fd = c->sock = -1;
}

struct ivc_hdr *rc_hdr(const struct raw_client *c)
{
    return (struct ivc_hdr *)c->base;
}

struct ivc_client *rc_client(const struct raw_client *c, uint32_t i)
{
    return (struct ivc_client *)(c->base + rc_hdr(c)->clients_off) + i;
}

struct ivc_ep *rc_ep(const struct raw_client *c, uint32_t i)
{
    return (struct ivc_ep *)(c->base + rc_hdr(c)->eps_off) + i;
}

struct ivc_conn *rc_conn(const struct raw_client *c, uint64_t i)
{
    return (struct ivc_conn *)(c->base + rc_hdr(c)->conns_off) + i;
}

uint64_t rc_claim(const struct raw_client *c, uint32_t slot, uint32_t client_id)
{
    struct ivc_ep *e = rc_ep(c, slot);
    uint64_t st = atomic_load(&e->status);

    T_ASSERT(IVC_EP_STATE(st) == IVC_EP_FREE, "slot %u is not free (0x%llx)", slot,
             (unsigned long long)st);
    uint64_t live = IVC_EP_STATUS(IVC_EP_GEN(st), c->id, IVC_EP_LIVE);
    T_ASSERT(atomic_compare_exchange_strong(&e->status, &st, live), "claiming slot %u", slot);
    e->job_magic = rc_hdr(c)->job_magic;
    e->client_id = client_id;
    e->pid = (int32_t)getpid();
    atomic_store(&e->ack, 0);
    return live;
}

/* ---- processes ----------------------------------------------------------- */

struct exec_args {
    const char *argv[40];
    int outfd;
};

static int exec_child(void *arg)
{
    struct exec_args *a = arg;

    dup2(a->outfd, 1);
    dup2(a->outfd, 2);
    execv(a->argv[0], (char *const *)a->argv);
    fprintf(stderr, "exec %s: %s\n", a->argv[0], strerror(errno));
    return 127;
}

static const char *ivcd_bin(void)
{
    const char *p = getenv("IVCD");
    T_ASSERT(p && p[0] == '/', "$IVCD must be the absolute path of ivcd (set by CMake)");
    return p;
}

static pid_t spawn(const char *const *pre, const char *const *args, int *outfd)
{
    struct exec_args a;
    int p[2], n = 0;

    /* close-on-exec: the child gets the write end only as its stdout and
     * stderr, so EOF comes when it (and any daemon it forks) lets go. */
    T_ASSERT(pipe2(p, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    a.argv[n++] = ivcd_bin();
    for (int i = 0; pre && pre[i]; i++)
        a.argv[n++] = pre[i];
    for (int i = 0; args && args[i] && n < 39; i++)
        a.argv[n++] = args[i];
    a.argv[n] = NULL;
    a.outfd = p[1];
    pid_t pid = t_fork(exec_child, &a);
    close(p[1]);
    *outfd = p[0];
    return pid;
}

/* Read everything until EOF (at most 20 s), then reap the child. */
static int collect(pid_t pid, int fd, char *out, size_t len)
{
    size_t got = 0;
    uint64_t deadline = t_now_ms() + 20000;

    for (;;) {
        uint64_t now = t_now_ms();
        T_ASSERT(now < deadline, "child %d did not finish within 20 s", (int)pid);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        char sink[512];
        char *dst = got < len - 1 ? out + got : sink;
        size_t room = got < len - 1 ? len - 1 - got : sizeof(sink);
        ssize_t n = read(fd, dst, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (dst != sink)
            got += (size_t)n;
    }
    out[got] = 0;
    close(fd);
    return t_wait(pid);
}

int run_ivcd(char *out, size_t len, const char *const *args)
{
    int fd;
    pid_t pid = spawn(NULL, args, &fd);
    return collect(pid, fd, out, len);
}

pid_t ctl_start(const struct t_ivcd *d, int *outfd, const char *const *args)
{
    const char *pre[] = {"ctl", "--socket", d->sock, NULL};
    return spawn(pre, args, outfd);
}

int ctl_join(pid_t pid, int outfd, char *out, size_t len)
{
    return collect(pid, outfd, out, len);
}

int ctl_run(const struct t_ivcd *d, char *out, size_t len, const char *const *args)
{
    int fd;
    pid_t pid = ctl_start(d, &fd, args);
    return ctl_join(pid, fd, out, len);
}

bool wait_list(const struct t_ivcd *d, const char *needle, bool present, int ms)
{
    static const char *const list[] = {"list", NULL};
    char out[16384];
    uint64_t deadline = t_now_ms() + (uint64_t)ms;

    for (;;) {
        int st = ctl_run(d, out, sizeof(out), list);
        T_ASSERT(st == 0, "ivcd ctl list failed (%d): %s", st, out);
        if ((strstr(out, needle) != NULL) == present)
            return true;
        if (t_now_ms() >= deadline)
            return false;
        usleep(20000);
    }
}

bool wait_word(_Atomic uint64_t *p, uint64_t want, int ms)
{
    uint64_t deadline = t_now_ms() + (uint64_t)ms;

    while (atomic_load(p) != want) {
        if (t_now_ms() >= deadline)
            return false;
        usleep(2000);
    }
    return true;
}

bool alive(pid_t pid)
{
    char path[64], buf[256];

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}
