/*
 * net.c - see net.h.
 */
#include "net.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

/* Run `ip ARGS...`; its stderr goes into the error message. */
static int run_ip(vhpc_err_t *err, const char *const *args)
{
    const char *argv[16] = {"ip"};
    int n = 1, pfd[2];
    for (; args[n - 1] && n < 15; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "pipe");
    pid_t pid = fork();
    if (pid < 0)
        return vhpc_err_set(err, -errno, "fork");
    if (pid == 0) {
        dup2(pfd[1], 2);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execvp("ip", (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char out[512];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(out) - 1 && (r = read(pfd[0], out + got, sizeof(out) - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = 0;
    if (got && out[got - 1] == '\n')
        out[got - 1] = 0;
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    char cmd[256] = "ip";
    for (int i = 1; argv[i]; i++) {
        strncat(cmd, " ", sizeof(cmd) - strlen(cmd) - 1);
        strncat(cmd, argv[i], sizeof(cmd) - strlen(cmd) - 1);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return vhpc_err_setmsg(err, -ENOENT, "`%s`: cannot run ip (install iproute2)", cmd);
    return vhpc_err_setmsg(err, -EIO, "`%s` failed: %s", cmd, got ? out : "no message");
}

/* Is 10.213.N.0/24 already used by an interface on this host? */
static int subnet_used(int n)
{
    struct ifaddrs *ifa, *i;
    int used = 0;
    if (getifaddrs(&ifa) < 0)
        return 0;
    for (i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        uint32_t a = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr);
        if ((a >> 8) == ((10u << 16) | (213u << 8) | (uint32_t)n))
            used = 1;
    }
    freeifaddrs(ifa);
    return used;
}

int vhpc_net_create(struct vhpc_net *net, const char *name, vhpc_err_t *err)
{
    int r;
    memset(net, 0, sizeof(*net));
    if (strlen(name) >= IFNAMSIZ)
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "bridge name %s too long", name);
    snprintf(net->bridge, sizeof(net->bridge), "%s", name);
    for (net->subnet = 1; net->subnet < 255 && subnet_used(net->subnet); net->subnet++)
        ;
    if (net->subnet == 255)
        return vhpc_err_setmsg(err, -EADDRINUSE, "no free subnet in 10.213.0.0/16 for the cluster");
    snprintf(net->host_ip, sizeof(net->host_ip), "10.213.%d.1", net->subnet);
    char cidr[40];
    snprintf(cidr, sizeof(cidr), "%s/24", net->host_ip);
    if ((r = run_ip(err, (const char *const[]){"link", "add", name, "type", "bridge", NULL})) < 0)
        return vhpc_err_wrap(err, "creating bridge %s", name);
    if ((r = run_ip(err, (const char *const[]){"addr", "add", cidr, "dev", name, NULL})) < 0 ||
        (r = run_ip(err, (const char *const[]){"link", "set", name, "up", NULL})) < 0) {
        vhpc_net_del_link(name);
        return vhpc_err_wrap(err, "configuring bridge %s", name);
    }
    return 0;
}

int vhpc_net_add_tap(const struct vhpc_net *net, const char *tap, vhpc_err_t *err)
{
    int r;
    if ((r = run_ip(err, (const char *const[]){"tuntap", "add", "dev", tap, "mode", "tap", NULL})) <
        0)
        return vhpc_err_wrap(err, "creating tap %s", tap);
    if ((r = run_ip(err, (const char *const[]){"link", "set", tap, "master", net->bridge, NULL})) <
            0 ||
        (r = run_ip(err, (const char *const[]){"link", "set", tap, "up", NULL})) < 0) {
        vhpc_net_del_link(tap);
        return vhpc_err_wrap(err, "attaching tap %s to %s", tap, net->bridge);
    }
    return 0;
}

void vhpc_net_guest_ip(const struct vhpc_net *net, int i, char *buf, size_t len)
{
    snprintf(buf, len, "10.213.%d.%d", net->subnet, 10 + i);
}

void vhpc_net_del_link(const char *name)
{
    vhpc_err_t ignore;
    if (if_nametoindex(name))
        run_ip(&ignore, (const char *const[]){"link", "del", name, NULL});
}
