/*
 * fake_qemu.c - a stand-in for qemu-system-x86_64, so that the cluster
 * layer (src/libvhpc/cluster) can be tested without a VM: test_cluster
 * installs it first in PATH under QEMU's name (vm.c runs QEMU through
 * execvp).  It reads the command line and the -readconfig file vm.c
 * writes, checks what real QEMU would refuse (a kernel or initrd that is
 * not there, a tap it cannot attach to, an ivcd that does not answer),
 * and then plays the machine:
 *
 *  - QMP on the "qmp0" chardev socket: the greeting, qmp_capabilities,
 *    query-status, system_powerdown (the guest stops, as on ACPI power-off)
 *    and quit (reply, SHUTDOWN event, exit); anything else is an error
 *    reply as QEMU gives.
 *  - The agent's virtio-serial port (chardev "agent0", a server socket):
 *    the real vhpc-agent ($FAKE_QEMU_AGENT_BIN) runs as the "guest",
 *    with --port-fd on one end of a socketpair, and the host connection
 *    is relayed to the other end, one connection at a time, as QEMU's
 *    chardev does.  The agent runs as PID 2 of a PID namespace of its own
 *    whose init dies with this process, so a VM that is killed takes
 *    every command it runs with it, as a real guest would.  When the agent
 *    exits (it powered off) this process exits 0, as -no-reboot does.
 *  - stdout is the serial console: a few boot lines.
 *
 * Faults, from the environment (each applies to every VM, or only to the
 * guest named by FAKE_QEMU_VM, e.g. "vm1"):
 *   FAKE_QEMU_EXIT=MSG     print "qemu-system-x86_64: MSG" and exit 1 at once
 *   FAKE_QEMU_QMP=mute     accept QMP connections and never say anything
 *   FAKE_QEMU_AGENT=mute   no agent: accept the port's connections, read,
 *                          never answer (also when FAKE_QEMU_AGENT_BIN is unset)
 * FAKE_QEMU_LOG=PATH gets a line per thing that happened ("start vm0",
 * "qmp quit", "agent exited 0", "exit 0"), for the tests to check.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROG "qemu-system-x86_64"

/* ---- the configuration file (QEMU's -readconfig syntax, as vm.c writes it) ---- */

#define MAX_SECTIONS 32
#define MAX_KEYS     12

struct section {
    char group[32], id[32];
    int nkeys;
    char key[MAX_KEYS][32], val[MAX_KEYS][512];
};

static struct section sections[MAX_SECTIONS];
static int nsections;
static char guest[64] = "?";
static FILE *event_log;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    if (!event_log)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(event_log, "%s ", guest);
    vfprintf(event_log, fmt, ap);
    fprintf(event_log, "\n");
    fflush(event_log);
    va_end(ap);
}

/* What QEMU does with an error: one line on stderr (qemu.log), exit 1. */
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    note("exit 1");
    exit(1);
}

static void parse_config(FILE *f)
{
    char line[1024];
    struct section *s = NULL;
    while (fgets(line, sizeof(line), f)) {
        char a[32], b[512];
        if (sscanf(line, "[%31s \"%31[^\"]\"]", a, b) == 2 || sscanf(line, "[%31[^]]]", a) == 1) {
            if (nsections == MAX_SECTIONS)
                die("-readconfig: too many sections");
            s = &sections[nsections++];
            snprintf(s->group, sizeof(s->group), "%s", a);
            if (strchr(line, '"'))
                snprintf(s->id, sizeof(s->id), "%.31s", b);
        } else if (sscanf(line, " %31s = \"%511[^\"]\"", a, b) == 2) {
            if (!s || s->nkeys == MAX_KEYS)
                die("-readconfig: a setting outside a section, or too many");
            snprintf(s->key[s->nkeys], sizeof(s->key[0]), "%s", a);
            snprintf(s->val[s->nkeys++], sizeof(s->val[0]), "%s", b);
        } else if (line[0] != '\n' && line[0] != '#') {
            die("-readconfig: cannot parse: %s", line);
        }
    }
}

static const struct section *find(const char *group, const char *id)
{
    for (int i = 0; i < nsections; i++)
        if (!strcmp(sections[i].group, group) && (!id || !strcmp(sections[i].id, id)))
            return &sections[i];
    return NULL;
}

static const char *get(const struct section *s, const char *key)
{
    for (int i = 0; s && i < s->nkeys; i++)
        if (!strcmp(s->key[i], key))
            return s->val[i];
    return NULL;
}

/* The socket path of chardev `id`, which must be a server socket if `server`. */
static const char *chardev_path(const char *id, bool server)
{
    const struct section *c = find("chardev", id);
    const char *path = get(c, "path");
    if (!c || strcmp(get(c, "backend") ? get(c, "backend") : "", "socket") || !path)
        die("-readconfig: no socket chardev '%s'", id);
    if (server && (!get(c, "server") || strcmp(get(c, "server"), "on")))
        die("chardev '%s' must be a server (server=on, wait=off)", id);
    return path;
}

/* ---- the environment's faults ------------------------------------------------- */

/* $name if it is meant for this guest, else NULL. */
static const char *fault(const char *name)
{
    const char *only = getenv("FAKE_QEMU_VM"), *v = getenv(name);
    if (only && *only && strcmp(only, guest) != 0)
        return NULL;
    return v && *v ? v : NULL;
}

/* ---- devices ------------------------------------------------------------------- */

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || strlen(path) >= sizeof(sa.sun_path))
        die("chardev %s: %s", path, fd < 0 ? strerror(errno) : "path too long");
    strcpy(sa.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0)
        die("Failed to bind socket to %s: %s", path, strerror(errno));
    return fd;
}

/* ivshmem-doorbell: connect to ivcd and read its protocol version, as
 * QEMU does at start; the connection is kept (this VM is its peer). */
static int attach_ivshmem(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int64_t version = -1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("-device ivshmem-doorbell: Failed to connect to '%s': %s", path, strerror(errno));
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1 || read(fd, &version, sizeof(version)) != sizeof(version) ||
        version != 0)
        die("-device ivshmem-doorbell: %s did not send the ivshmem protocol version", path);
    return fd;
}

/* The NIC's tap: attached the way QEMU attaches (TUNSETIFF on an existing
 * tap that our uid owns; this process has no capability). */
static int attach_tap(const char *ifname)
{
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI};
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("could not open /dev/net/tun: %s", strerror(errno));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die("could not configure /dev/net/tun (%s): %s", ifname, strerror(errno));
    return fd;
}

static void check_file(const char *what, const char *path)
{
    if (!path || access(path, R_OK) != 0)
        die("could not load %s '%s': %s", what, path ? path : "", strerror(errno));
}

/* ---- the guest: vhpc-agent in a PID namespace of its own ----------------------- */

static void put(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        fprintf(stderr, PROG ": fake: %s: %s\n", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* PID 1 of the guest's PID namespace: start the agent, reap everything,
 * exit with the agent.  It dies with fake QEMU (and the kernel then kills
 * every process of the namespace). */
static void guest_init(const char *agent, int port, const char *vmdir)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The agent logs to the console (QEMU's stdout), not to qemu.log. */
    dup2(STDOUT_FILENO, STDERR_FILENO);
    char keyf[600], portarg[16];
    snprintf(keyf, sizeof(keyf), "%s/agent.key", vmdir);
    snprintf(portarg, sizeof(portarg), "%d", port);
    pid_t a = fork();
    if (a == 0) {
        execl(agent, agent, "--port-fd", portarg, "--tcp-port", "0", "--key-file", keyf,
              (char *)NULL);
        fprintf(stderr, PROG ": fake: running %s: %s\n", agent, strerror(errno));
        _exit(127);
    }
    close(port);
    int st = 0;
    for (;;) {
        pid_t p = wait(&st);
        if (p == a || (p < 0 && errno == ECHILD))
            break;
    }
    _exit(a > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : 1);
}

/* Start the guest on one end of a socketpair; returns the other (the port). */
static int start_guest(const char *agent, const char *vmdir, pid_t *init)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        die("socketpair: %s", strerror(errno));
    fcntl(sp[0], F_SETFD, FD_CLOEXEC);
    /* Its own user namespace (uid 0 is ours) gives the PID namespace. */
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWPID) < 0)
        die("fake: a PID namespace for the guest: %s", strerror(errno));
    char map[64];
    put("/proc/self/setgroups", "deny");
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
    put("/proc/self/uid_map", map);
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
    put("/proc/self/gid_map", map);
    *init = fork();
    if (*init < 0)
        die("fork: %s", strerror(errno));
    if (*init == 0) {
        close(sp[0]);
        guest_init(agent, sp[1], vmdir);
    }
    close(sp[1]);
    return sp[0];
}

/* ---- QMP ------------------------------------------------------------------------- */

static void send_str(int fd, const char *s)
{
    if (fd >= 0 && send(fd, s, strlen(s), MSG_NOSIGNAL) < 0) {
        /* the client went away: nothing to tell it */
    }
}

/* One command line from the QMP client; returns true when QEMU must quit. */
static bool qmp_execute(int fd, const char *msg, bool *powerdown)
{
    char cmd[64] = "";
    const char *e = strstr(msg, "\"execute\"");
    if (!e || sscanf(e, "\"execute\" : \"%63[^\"]\"", cmd) != 1)
        if (!e || sscanf(e, "\"execute\":\"%63[^\"]\"", cmd) != 1) {
            send_str(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input "
                         "member 'execute' is missing\"}}\r\n");
            return false;
        }
    note("qmp %s", cmd);
    if (!strcmp(cmd, "qmp_capabilities")) {
        send_str(fd, "{\"return\": {}}\r\n");
    } else if (!strcmp(cmd, "query-status")) {
        send_str(fd, "{\"return\": {\"status\": \"running\", \"singlestep\": false, "
                     "\"running\": true}}\r\n");
    } else if (!strcmp(cmd, "system_powerdown")) {
        send_str(fd, "{\"return\": {}}\r\n");
        send_str(fd, "{\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}, "
                     "\"event\": \"POWERDOWN\"}\r\n");
        *powerdown = true;
    } else if (!strcmp(cmd, "quit")) {
        send_str(fd, "{\"return\": {}}\r\n");
        send_str(fd, "{\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}, "
                     "\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, "
                     "\"reason\": \"host-qmp-quit\"}}\r\n");
        return true;
    } else {
        char reply[200];
        snprintf(reply, sizeof(reply),
                 "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command %s has "
                 "not been found\"}}\r\n",
                 cmd);
        send_str(fd, reply);
    }
    return false;
}

/* ---- the machine: one poll loop ----------------------------------------------------- */

struct machine {
    int qmp_listen, qmp, agent_listen, host, port;
    bool qmp_mute, agent_mute;
    pid_t init;
    char qbuf[8192];
    size_t qlen;
};

static void accept_one(int listen_fd, int *conn)
{
    int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    if (*conn >= 0)
        close(*conn); /* the newer host connection wins, as in QEMU */
    *conn = c;
}

static void on_qmp_accept(struct machine *m)
{
    accept_one(m->qmp_listen, &m->qmp);
    m->qlen = 0;
    if (!m->qmp_mute)
        send_str(m->qmp, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                         "\"major\": 7}, \"package\": \"fake\"}, \"capabilities\": []}}\r\n");
}

/* The length of the first whole JSON object in buf (QEMU's parser takes
 * a stream of objects; vhpc sends them without separators), or 0. */
static size_t json_object_len(const char *buf, size_t len)
{
    int depth = 0;
    bool str = false, esc = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                str = false;
        } else if (c == '"') {
            str = true;
        } else if (c == '{') {
            depth++;
        } else if (c == '}' && --depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

/* Returns true when QEMU must quit. */
static bool on_qmp_input(struct machine *m, bool *powerdown)
{
    ssize_t n = read(m->qmp, m->qbuf + m->qlen, sizeof(m->qbuf) - 1 - m->qlen);
    if (n <= 0) {
        close(m->qmp);
        m->qmp = -1;
        return false;
    }
    if (m->qmp_mute)
        return false;
    m->qlen += (size_t)n;
    size_t used;
    while ((used = json_object_len(m->qbuf, m->qlen)) > 0) {
        char msg[sizeof(m->qbuf)];
        memcpy(msg, m->qbuf, used);
        msg[used] = 0;
        memmove(m->qbuf, m->qbuf + used, m->qlen - used);
        m->qlen -= used;
        if (qmp_execute(m->qmp, msg, powerdown))
            return true;
    }
    if (m->qlen == sizeof(m->qbuf) - 1)
        m->qlen = 0; /* an object larger than any vhpc sends: dropped */
    return false;
}

/* Relay `n` bytes from one side to the other (dropped when nobody listens). */
static void relay(int from, int *from_slot, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0) {
        close(from);
        *from_slot = -1;
        return;
    }
    for (ssize_t done = 0; to >= 0 && done < n;) {
        ssize_t w = send(to, buf + done, (size_t)(n - done), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += w;
    }
}

/* The guest is gone (powered off): QEMU's -no-reboot exit. */
static bool guest_gone(struct machine *m)
{
    int st;
    if (m->init <= 0 || waitpid(m->init, &st, WNOHANG) != m->init)
        return false;
    note("agent exited %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    m->init = -1;
    send_str(m->qmp, "{\"timestamp\": {\"seconds\": 0, \"microseconds\": 0}, \"event\": "
                     "\"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": "
                     "\"guest-shutdown\"}}\r\n");
    return true;
}

static int run(struct machine *m)
{
    bool powerdown = false;
    for (;;) {
        struct pollfd p[5];
        int fds[5] = {m->qmp_listen, m->qmp, m->agent_listen, m->host, m->port};
        for (int i = 0; i < 5; i++)
            p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        int n = poll(p, 5, 100);
        if (n < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        if (guest_gone(m))
            return 0;
        if (n <= 0)
            continue;
        if (p[0].revents)
            on_qmp_accept(m);
        if (p[1].revents && on_qmp_input(m, &powerdown))
            return 0;
        if (powerdown) {
            powerdown = false;
            if (m->init > 0) /* ACPI power button: the guest's init powers off */
                kill(m->init, SIGKILL);
        }
        if (p[2].revents)
            accept_one(m->agent_listen, &m->host);
        if (p[3].revents && m->agent_mute) {
            char sink[4096];
            if (read(m->host, sink, sizeof(sink)) <= 0) {
                close(m->host);
                m->host = -1;
            }
        } else if (p[3].revents) {
            relay(m->host, &m->host, m->port);
        }
        if (p[4].revents)
            relay(m->port, &m->port, m->host);
    }
}

static void check_argv(int argc, char **argv, const char **config)
{
    bool nodefaults = false, sandbox = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-nodefaults"))
            nodefaults = true;
        else if (!strcmp(argv[i], "-sandbox") && i + 1 < argc && !strncmp(argv[i + 1], "on,", 3))
            sandbox = true;
        else if (!strcmp(argv[i], "-readconfig") && i + 1 < argc)
            *config = argv[i + 1];
    }
    if (!*config)
        die("fake: no -readconfig (vm.c puts the machine in a config file)");
    if (!nodefaults || !sandbox)
        die("fake: expected -nodefaults and -sandbox on,... on the command line");
}

int main(int argc, char **argv)
{
    const char *config = NULL, *logp = getenv("FAKE_QEMU_LOG");
    if (logp && *logp)
        event_log = fopen(logp, "ae");
    check_argv(argc, argv, &config);
    FILE *f = fopen(config, "re");
    if (!f)
        die("-readconfig %s: %s", config, strerror(errno));
    parse_config(f);
    fclose(f);
    close(4); /* the descriptor vm.c passed the config through */
    const struct section *name = find("name", NULL), *machine = find("machine", NULL);
    if (get(name, "guest"))
        snprintf(guest, sizeof(guest), "%s", get(name, "guest"));
    note("start");
    const char *msg = fault("FAKE_QEMU_EXIT");
    if (msg)
        die("%s", msg);
    check_file("kernel", get(machine, "kernel"));
    check_file("initrd", get(machine, "initrd"));

    struct machine m = {.qmp = -1, .host = -1, .port = -1, .init = -1};
    const char *qmp_path = chardev_path("qmp0", true), *agent_path = chardev_path("agent0", true);
    const struct section *port = find("device", "agentport");
    if (!port || strcmp(get(port, "name") ? get(port, "name") : "", "org.vhpc.agent"))
        die("fake: no virtserialport named org.vhpc.agent");
    if (find("chardev", "ivc0"))
        attach_ivshmem(chardev_path("ivc0", false));
    if (get(find("netdev", "net0"), "ifname"))
        attach_tap(get(find("netdev", "net0"), "ifname"));
    m.qmp_listen = listen_on(qmp_path);
    m.agent_listen = listen_on(agent_path);
    m.qmp_mute = fault("FAKE_QEMU_QMP") && !strcmp(fault("FAKE_QEMU_QMP"), "mute");
    const char *agent = getenv("FAKE_QEMU_AGENT_BIN"), *mode = fault("FAKE_QEMU_AGENT");
    m.agent_mute = (mode && !strcmp(mode, "mute")) || !agent;
    if (!m.agent_mute) {
        char vmdir[512];
        snprintf(vmdir, sizeof(vmdir), "%s", qmp_path);
        *strrchr(vmdir, '/') = 0;
        m.port = start_guest(agent, vmdir, &m.init);
    }
    printf("fake QEMU: booting %s\n", guest);
    fflush(stdout);
    int r = run(&m);
    note("exit %d", r);
    return r;
}
