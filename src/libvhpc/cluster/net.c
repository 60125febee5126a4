/*
 * net.c - see net.h.
 */
#include "net.h"
#include "ns.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run `tool ARGS...` inside the job's namespace `ns` (a keeper's pid; 0:
 * ours) with `input` (or nothing) on its stdin; its stderr goes into the
 * error message.  A normal user's PATH often lacks /usr/sbin, where ip
 * and nft live: looked for there too. */
static int run_tool(vhpc_err_t *err, pid_t ns, const char *tool, const char *pkg, const char *input,
                    const char *const *args)
{
    const char *argv[16] = {tool};
    int n = 1, pfd[2], ifd[2] = {-1, -1};
    for (; args[n - 1] && n < 15; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "pipe");
    if (input && pipe2(ifd, O_CLOEXEC) < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return vhpc_err_set(err, -errno, "pipe");
    }
    pid_t pid = fork();
    if (pid < 0)
        return vhpc_err_set(err, -errno, "fork");
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(input ? ifd[0] : devnull, 0);
        dup2(devnull, 1);
        dup2(pfd[1], 2);
        vhpc__close_from(3);
        if (ns > 0 && vhpc__ns_enter(ns) < 0) {
            dprintf(2, "cannot enter the job's network namespace: %s", strerror(errno));
            _exit(126);
        }
        execvp(tool, (char *const *)argv);
        static const char *const sbin[] = {"/usr/sbin/", "/sbin/"};
        for (int i = 0; i < 2; i++) {
            char path[64];
            snprintf(path, sizeof(path), "%s%s", sbin[i], tool);
            execv(path, (char *const *)argv);
        }
        _exit(127);
    }
    close(pfd[1]);
    if (input) {
        close(ifd[0]);
        size_t len = strlen(input), done = 0;
        while (done < len) {
            ssize_t w = write(ifd[1], input + done, len - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            done += (size_t)w;
        }
        close(ifd[1]);
    }
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
    char cmd[256] = "";
    snprintf(cmd, sizeof(cmd), "%s", tool);
    for (int i = 1; argv[i]; i++) {
        strncat(cmd, " ", sizeof(cmd) - strlen(cmd) - 1);
        strncat(cmd, argv[i], sizeof(cmd) - strlen(cmd) - 1);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return vhpc_err_setmsg(err, -ENOENT, "`%s`: cannot run %s (install %s)", cmd, tool, pkg);
    return vhpc_err_setmsg(err, -EIO, "`%s` failed: %s", cmd, got ? out : "no message");
}

static int run_ip(const struct vhpc_net *net, vhpc_err_t *err, const char *const *args)
{
    return run_tool(err, net->ns, "ip", "iproute2", NULL, args);
}

int vhpc_net_create(struct vhpc_net *net, vhpc_err_t *err)
{
    int r;
    const char *name = net->bridge;
    /* The namespace is the job's alone: every job can have 10.213.1.0/24. */
    net->subnet = 1;
    snprintf(net->host_ip, sizeof(net->host_ip), "10.213.%d.1", net->subnet);
    char cidr[40];
    snprintf(cidr, sizeof(cidr), "%s/24", net->host_ip);
    if ((r = run_ip(net, err, (const char *const[]){"link", "add", name, "type", "bridge", NULL})) <
        0)
        return vhpc_err_wrap(err, "creating bridge %s", name);
    if ((r = run_ip(net, err, (const char *const[]){"addr", "add", cidr, "dev", name, NULL})) < 0 ||
        (r = run_ip(net, err, (const char *const[]){"link", "set", name, "up", NULL})) < 0)
        return vhpc_err_wrap(err, "configuring bridge %s", name);
    return 0;
}

int vhpc_net_add_tap(const struct vhpc_net *net, const char *tap, vhpc_err_t *err)
{
    int r;
    /* Owned by uid 0 of the job's namespace, which is the job's user (root,
     * or the user whose user namespace it is): QEMU, running as that uid
     * with no capability, may attach to it. */
    if ((r = run_ip(net, err,
                    (const char *const[]){"tuntap", "add", "dev", tap, "mode", "tap", "user", "0",
                                          NULL})) < 0)
        return vhpc_err_wrap(err, "creating tap %s", tap);
    if ((r = run_ip(net, err,
                    (const char *const[]){"link", "set", tap, "master", net->bridge, NULL})) < 0 ||
        (r = run_ip(net, err, (const char *const[]){"link", "set", tap, "up", NULL})) < 0)
        return vhpc_err_wrap(err, "attaching tap %s to %s", tap, net->bridge);
    return 0;
}

void vhpc_net_guest_ip(const struct vhpc_net *net, int i, char *buf, size_t len)
{
    snprintf(buf, len, "10.213.%d.%d", net->subnet, 10 + i);
}

int vhpc_net_firewall(const struct vhpc_net *net, vhpc_err_t *err)
{
    char table[IFNAMSIZ + 8], rules[2048];
    const char *b = net->bridge;
    snprintf(table, sizeof(table), "vhpc_%s", b);
    /* A drop is final whatever other tables accept.  Bridged traffic
     * between the job's VMs never reaches these hooks (unless br_netfilter
     * is loaded: then it shows as bridge-to-bridge, let through). */
    snprintf(rules, sizeof(rules),
             "table inet %s {\n"
             "  chain input {\n"
             "    type filter hook input priority filter - 10; policy accept;\n"
             "    iifname \"%s\" drop comment \"the job's VMs reach no service of the host\"\n"
             "  }\n"
             "  chain output {\n"
             "    type filter hook output priority filter - 10; policy accept;\n"
             "    oifname \"%s\" drop comment \"no host process reaches the job's VMs\"\n"
             "  }\n"
             "  chain forward {\n"
             "    type filter hook forward priority filter - 10; policy accept;\n"
             "    iifname \"%s\" oifname \"%s\" accept\n"
             "    iifname \"%s\" drop comment \"no routing out of the job's network\"\n"
             "    oifname \"%s\" drop comment \"no routing into the job's network\"\n"
             "  }\n"
             "}\n",
             table, b, b, b, b, b, b);
    int r =
        run_tool(err, net->ns, "nft", "nftables", rules, (const char *const[]){"-f", "-", NULL});
    if (r < 0)
        return vhpc_err_wrap(err, "closing the host side of bridge %s (nftables table inet %s)", b,
                             table);
    return 0;
}
