/*
 * sock_bench.c - latency and bandwidth of a TCP loopback connection or a
 * UNIX stream socket between two processes: the baselines IVC is compared
 * with (the "network loopback" of the SC'07 paper).  Blocking send()/recv()
 * loops, TCP_NODELAY on TCP.  The program forks: the parent is the timing
 * side, the child the echo side; each can be pinned to its own CPU.
 *
 *   sock_bench --transport tcp|unix [common options]
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "bench_common.h"

struct xport {
    int fd;
};

static void xport_send(struct xport *x, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(x->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            bench_die("send: %s", strerror(errno));
        }
        p += n, len -= (size_t)n;
    }
}

static void xport_recv(struct xport *x, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(x->fd, p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            bench_die("recv: %s", strerror(errno));
        }
        if (n == 0)
            bench_die("recv: peer closed the connection");
        p += n, len -= (size_t)n;
    }
}

#include "bench_driver.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sock_bench --transport tcp|unix [options]\n");
    bench_usage_common(f);
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    const char *transport = NULL;
    bench_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (bench_parse_opt(&o, argc, argv, &i))
            continue;
        if (!strcmp(argv[i], "--transport") && i + 1 < argc) {
            transport = argv[++i];
        } else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!transport || (strcmp(transport, "tcp") && strcmp(transport, "unix"))) {
        usage(stderr);
        return 2;
    }
    bench_opts_done(&o);
    int tcp = !strcmp(transport, "tcp");

    /* Listen before forking, so the child can connect at once. */
    struct sockaddr_storage addr;
    socklen_t alen;
    char dir[] = "/tmp/sock_bench.XXXXXX";
    memset(&addr, 0, sizeof(addr));
    int lfd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        bench_die("socket: %s", strerror(errno));
    if (tcp) {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        alen = sizeof(*in);
    } else {
        struct sockaddr_un *un = (struct sockaddr_un *)&addr;
        if (!mkdtemp(dir))
            bench_die("mkdtemp: %s", strerror(errno));
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof(un->sun_path), "%s/s", dir);
        alen = sizeof(*un);
    }
    if (bind(lfd, (struct sockaddr *)&addr, alen) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0)
        bench_die("bind/listen (%s): %s", transport, strerror(errno));

    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        bench_die("fork: %s", strerror(errno));
    int one = 1;
    struct xport x;
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        bench_pin(o.cpu[1]);
        close(lfd);
        x.fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (x.fd < 0 || connect(x.fd, (struct sockaddr *)&addr, alen) != 0)
            bench_die("connect (%s): %s", transport, strerror(errno));
        if (tcp && setsockopt(x.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
            bench_die("TCP_NODELAY: %s", strerror(errno));
        drv_run(&x, &o, 0);
        close(x.fd);
        _exit(0);
    }
    bench_pin(o.cpu[0]);
    x.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (x.fd < 0)
        bench_die("accept: %s", strerror(errno));
    close(lfd);
    if (!tcp) {
        unlink(((struct sockaddr_un *)&addr)->sun_path);
        rmdir(dir);
    }
    if (tcp && setsockopt(x.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        bench_die("TCP_NODELAY: %s", strerror(errno));
    printf("# sock_bench transport=%s cpus=%d,%d reps=%d%s\n", transport, o.cpu[0], o.cpu[1],
           o.reps, o.quick ? " quick" : "");
    drv_run(&x, &o, 1);
    close(x.fd);

    int st;
    if (waitpid(child, &st, 0) != child)
        bench_die("waitpid: %s", strerror(errno));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        bench_die("echo side failed (status 0x%x)", st);
    return 0;
}
