/*
 * net.c - the guest's network, from the kernel command line (PID 1 only):
 *   vhpc.ip=ADDR/PREFIX  vhpc.gw=ADDR  vhpc.iface=NAME (default: the first
 *   interface other than lo)  vhpc.hosts=name1:ip1,name2:ip2,...
 * Addresses are set with ioctl()s; busybox `ip` is the fallback.  Also who
 * may use the agent's TCP port (net_peer_allowed).
 */
#include "agent.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int if_up(int sk, const char *ifname)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(sk, SIOCGIFFLAGS, &ifr) < 0)
        return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(sk, SIOCSIFFLAGS, &ifr);
}

static int set_addr(int sk, const char *ifname, unsigned long req, struct in_addr a)
{
    struct ifreq ifr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    sin->sin_family = AF_INET;
    sin->sin_addr = a;
    return ioctl(sk, req, &ifr);
}

static int add_default_route(int sk, struct in_addr gw)
{
    struct rtentry rt = {0};
    struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
    struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
    struct sockaddr_in *g = (struct sockaddr_in *)&rt.rt_gateway;
    dst->sin_family = mask->sin_family = g->sin_family = AF_INET;
    g->sin_addr = gw;
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    return ioctl(sk, SIOCADDRT, &rt);
}

/* Run busybox ip with the given arguments; 0 on success. */
static int run_ip(const char *const *args)
{
    pid_t pid = fork();
    int status;
    if (pid == 0) {
        execv("/bin/ip", (char *const *)args);
        execv("/sbin/ip", (char *const *)args);
        _exit(127);
    }
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* The first interface other than lo, waiting up to 2 s for virtio_net's
 * probe to create it. */
static bool first_iface(char *name, size_t len)
{
    for (int t = 0; t < 100; t++) {
        DIR *d = opendir("/sys/class/net");
        struct dirent *e;
        bool found = false;
        char best[IFNAMSIZ] = "";
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.' || !strcmp(e->d_name, "lo") || strlen(e->d_name) >= IFNAMSIZ)
                continue;
            if (!found || strcmp(e->d_name, best) < 0)
                snprintf(best, sizeof(best), "%s", e->d_name);
            found = true;
        }
        if (d)
            closedir(d);
        if (found) {
            snprintf(name, len, "%s", best);
            return true;
        }
        usleep(20000);
    }
    return false;
}

static bool iface_exists(const char *name)
{
    char path[64 + IFNAMSIZ];
    struct stat st;
    snprintf(path, sizeof(path), "/sys/class/net/%s", name);
    for (int t = 0; t < 100; t++, usleep(20000))
        if (stat(path, &st) == 0)
            return true;
    return false;
}

static void configure(int sk, const char *iface, const char *ipspec, const char *gwspec)
{
    char ip[64];
    int prefix = 24;
    struct in_addr addr, mask, gw;
    snprintf(ip, sizeof(ip), "%s", ipspec);
    char *slash = strchr(ip, '/');
    if (slash) {
        *slash = 0;
        prefix = atoi(slash + 1);
    }
    if (inet_pton(AF_INET, ip, &addr) != 1 || prefix < 0 || prefix > 32) {
        agent_log("vhpc.ip=%s: not ADDR/PREFIX", ipspec);
        return;
    }
    mask.s_addr = htonl(prefix ? ~0u << (32 - prefix) : 0);
    if (set_addr(sk, iface, SIOCSIFADDR, addr) < 0 ||
        set_addr(sk, iface, SIOCSIFNETMASK, mask) < 0 || if_up(sk, iface) < 0) {
        agent_log("configuring %s with ioctl: %s; trying ip", iface, strerror(errno));
        const char *a1[] = {"ip", "addr", "add", ipspec, "dev", iface, NULL};
        const char *a2[] = {"ip", "link", "set", iface, "up", NULL};
        if (run_ip(a1) < 0 || run_ip(a2) < 0)
            agent_log("configuring %s with ip failed", iface);
    }
    if (!*gwspec)
        return;
    if (inet_pton(AF_INET, gwspec, &gw) != 1) {
        agent_log("vhpc.gw=%s: not an IPv4 address", gwspec);
        return;
    }
    if (add_default_route(sk, gw) < 0 && errno != EEXIST) {
        const char *a3[] = {"ip", "route", "add", "default", "via", gwspec, NULL};
        if (run_ip(a3) < 0)
            agent_log("default route via %s: %s", gwspec, strerror(errno));
    }
}

/* /etc/hosts: localhost, then vhpc.hosts=name:ip,... (no NSS in the image:
 * vhpc-rsh reads this file itself); and /etc/vhpc/hostfile, the cluster's
 * VMs with this VM's CPU count as slots (all VMs of a cluster have the
 * same), for mpirun (the MPI images point Open MPI at it). */
static void write_hosts(const char *spec)
{
    char buf[4096];
    FILE *f, *hf;
    mkdir("/etc", 0755);
    mkdir("/etc/vhpc", 0755);
    if (!(f = fopen("/etc/hosts", "we"))) {
        agent_log("/etc/hosts: %s", strerror(errno));
        return;
    }
    if (!(hf = fopen("/etc/vhpc/hostfile", "we")))
        agent_log("/etc/vhpc/hostfile: %s", strerror(errno));
    long slots = sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(f, "127.0.0.1\tlocalhost\n");
    snprintf(buf, sizeof(buf), "%s", spec);
    for (char *save = NULL, *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(e, ':');
        if (!colon) {
            agent_log("vhpc.hosts: '%s' is not name:ip", e);
            continue;
        }
        *colon = 0;
        fprintf(f, "%s\t%s\n", colon + 1, e);
        if (hf)
            fprintf(hf, "%s slots=%ld\n", e, slots > 0 ? slots : 1);
    }
    if (fclose(f) != 0)
        agent_log("/etc/hosts: %s", strerror(errno));
    if (hf && fclose(hf) != 0)
        agent_log("/etc/vhpc/hostfile: %s", strerror(errno));
}

void net_setup(void)
{
    char ip[64] = "", gw[64] = "", iface[IFNAMSIZ] = "", hosts[4096] = "";
    int sk = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sk < 0) {
        agent_log("socket: %s", strerror(errno));
        return;
    }
    if (if_up(sk, "lo") < 0)
        agent_log("bringing up lo: %s", strerror(errno));
    if (init_cmdline("vhpc.ip", ip, sizeof(ip))) {
        init_cmdline("vhpc.gw", gw, sizeof(gw));
        bool have = init_cmdline("vhpc.iface", iface, sizeof(iface))
                        ? iface_exists(iface)
                        : first_iface(iface, sizeof(iface));
        if (have)
            configure(sk, iface, ip, gw);
        else
            agent_log("vhpc.ip=%s: no network interface %s", ip, iface);
    }
    close(sk);
    if (init_cmdline("vhpc.hosts", hosts, sizeof(hosts)))
        write_hosts(hosts);
    else if (access("/etc/hosts", F_OK) < 0)
        write_hosts("");
}

/* TCP clients are accepted from loopback and from the subnets of this
 * machine's own IPv4 addresses (the cluster's private network). */
bool net_peer_allowed(const struct sockaddr_storage *peer)
{
    struct ifaddrs *ifs, *i;
    bool ok = false;
    if (peer->ss_family != AF_INET)
        return false;
    uint32_t a = ntohl(((const struct sockaddr_in *)peer)->sin_addr.s_addr);
    if ((a >> 24) == 127)
        return true;
    if (getifaddrs(&ifs) < 0)
        return false;
    for (i = ifs; i && !ok; i = i->ifa_next) {
        if (!i->ifa_addr || !i->ifa_netmask || i->ifa_addr->sa_family != AF_INET)
            continue;
        uint32_t mine = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr);
        uint32_t mask = ntohl(((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr);
        ok = (mine & mask) == (a & mask) && (mine >> 24) != 127;
    }
    freeifaddrs(ifs);
    return ok;
}
