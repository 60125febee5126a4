/*
 * test_ivcd_qemu.c (ctest: test_qemu_ivshmem) - a real QEMU attaches to ivcd.
 *
 * QEMU is started paused (-S, no guest needed) with an ivshmem-doorbell
 * device wired to ivcd's socket.  Over QMP (JSON, parsed with jansson) the
 * test finds the device (vendor 0x1af4, device 0x1110) and checks that BAR2
 * has the region's size, which QEMU takes from the fd ivcd sent; `ivcd ctl
 * list` must show QEMU's pid; a host peer attached before QEMU sees it come
 * and, after QEMU quits, go; QEMU prints no complaint about the protocol.
 * The cases are skipped when qemu-system-x86_64 is not installed.
 */
#include "test_ivcd_util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SIZE           (4u << 20)
#define IVSHMEM_VENDOR 0x1af4
#define IVSHMEM_DEVICE 0x1110

static char qemu_log[512];

static const char *find_qemu(void)
{
    static char path[4096];
    const char *env = getenv("QEMU");
    if (env)
        return access(env, X_OK) == 0 ? env : NULL;
    const char *p = getenv("PATH");
    if (!p)
        p = "/usr/bin:/bin";
    while (*p) {
        size_t n = strcspn(p, ":");
        snprintf(path, sizeof(path), "%.*s/qemu-system-x86_64", (int)n, p);
        if (access(path, X_OK) == 0)
            return path;
        p += n + (p[n] == ':');
    }
    return NULL;
}

static void dump_qemu_log(void)
{
    char buf[4096];
    int fd = open(qemu_log, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n > 0) {
        buf[n] = 0;
        fprintf(stderr, "--- QEMU's output:\n%s---\n", buf);
    }
}

struct qemu_args {
    const char *argv[32];
};

static int exec_qemu(void *arg)
{
    struct qemu_args *a = arg;
    int fd = open(qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    execv(a->argv[0], (char *const *)a->argv);
    fprintf(stderr, "exec %s: %s\n", a->argv[0], strerror(errno));
    return 127;
}

/* ---- QMP ----------------------------------------------------------------- */

struct qmp {
    int sock;
    char buf[1 << 20];
    size_t len;
};

/* Next JSON message (one per line), within 10 s. */
static json_t *qmp_read(struct qmp *q)
{
    uint64_t deadline = t_now_ms() + 10000;

    for (;;) {
        char *nl = memchr(q->buf, '\n', q->len);
        if (nl) {
            size_t line = (size_t)(nl - q->buf) + 1;
            json_error_t err;
            json_t *j = json_loadb(q->buf, line, 0, &err);
            memmove(q->buf, q->buf + line, q->len - line);
            q->len -= line;
            T_ASSERT(j, "bad JSON from QMP: %s", err.text);
            return j;
        }
        uint64_t now = t_now_ms();
        T_ASSERT(now < deadline, "no QMP message within 10 s");
        T_ASSERT(q->len < sizeof(q->buf) - 1, "QMP line too long");
        struct pollfd p = {.fd = q->sock, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - now)) <= 0)
            continue;
        ssize_t n = recv(q->sock, q->buf + q->len, sizeof(q->buf) - q->len, 0);
        T_ASSERT(n > 0, "QMP connection closed (%s)", n < 0 ? strerror(errno) : "EOF");
        q->len += (size_t)n;
    }
}

/* Run a command; returns its "return" value (owned by the caller). */
static json_t *qmp_cmd(struct qmp *q, const char *cmd)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "{\"execute\": \"%s\"}\n", cmd);
    T_ASSERT(send(q->sock, req, (size_t)n, MSG_NOSIGNAL) == n, "QMP send: %s", strerror(errno));
    for (;;) {
        json_t *j = qmp_read(q);
        if (json_object_get(j, "event")) {
            json_decref(j);
            continue;
        }
        json_t *ret = json_object_get(j, "return");
        if (!ret) {
            char *s = json_dumps(j, 0);
            T_FAIL("QMP %s failed: %s", cmd, s ? s : "?");
        }
        json_incref(ret);
        json_decref(j);
        return ret;
    }
}

static void qmp_connect(struct qmp *q, const char *path, pid_t qemu)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    T_ASSERT(strlen(path) < sizeof(sa.sun_path), "%s is too long", path);
    memcpy(sa.sun_path, path, strlen(path));
    for (int i = 0;; i++) {
        q->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        T_ASSERT(q->sock >= 0, "socket: %s", strerror(errno));
        if (connect(q->sock, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        close(q->sock);
        if (!alive(qemu)) {
            dump_qemu_log();
            T_FAIL("QEMU exited during start-up");
        }
        T_ASSERT(i < 1000, "QMP socket %s did not come up within 20 s", path);
        usleep(20000);
    }
    q->len = 0;
    json_t *greeting = qmp_read(q);
    T_ASSERT(json_object_get(greeting, "QMP"), "no QMP greeting");
    json_decref(greeting);
    json_decref(qmp_cmd(q, "qmp_capabilities"));
}

/* Find the ivshmem device in query-pci's answer (bridges nest buses);
 * returns its BAR2 size or 0. */
static uint64_t find_bar2(json_t *devices)
{
    size_t i;
    json_t *dev;

    json_array_foreach(devices, i, dev)
    {
        json_t *id = json_object_get(dev, "id");
        if (json_integer_value(json_object_get(id, "vendor")) == IVSHMEM_VENDOR &&
            json_integer_value(json_object_get(id, "device")) == IVSHMEM_DEVICE) {
            size_t k;
            json_t *reg;
            json_array_foreach(json_object_get(dev, "regions"), k, reg)
            {
                if (json_integer_value(json_object_get(reg, "bar")) == 2)
                    return (uint64_t)json_integer_value(json_object_get(reg, "size"));
            }
            T_FAIL("the ivshmem device has no BAR2");
        }
        json_t *bridge = json_object_get(dev, "pci_bridge");
        uint64_t sz = find_bar2(json_object_get(bridge, "devices"));
        if (sz)
            return sz;
    }
    return 0;
}

/* What a case has running: ivcd, a host peer attached before QEMU, and
 * QEMU (paused) with its QMP connection. */
struct rig {
    struct t_ivcd d;
    struct raw_client host;
    struct qmp q;
    pid_t qpid;
};

/* Start ivcd, attach the host peer, start QEMU wired to ivcd and connect
 * to its QMP socket; skips the case without QEMU. */
static void rig_up(struct rig *r)
{
    char qmp_path[300], qmp_arg[400], chardev[400];
    static struct qemu_args a;

    const char *qemu = find_qemu();
    if (!qemu)
        T_SKIP("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    t_ivcd_start(&r->d, 0xabc, (const char *const[]){"--size", "4M", NULL});
    T_ASSERT(wait_list(&r->d, "client id=", false, 5000), "the probe connection never went away");

    /* A host peer is there first: QEMU must take its eventfds, and it must
     * hear about QEMU coming and going. */
    raw_attach(&r->host, r->d.sock, 1);
    T_ASSERT(r->host.id == 0, "host peer id %lld", (long long)r->host.id);

    snprintf(qmp_path, sizeof(qmp_path), "%s/qmp.sock", t_tmpdir());
    snprintf(qemu_log, sizeof(qemu_log), "%s/qemu.log", t_tmpdir());
    snprintf(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", qmp_path);
    snprintf(chardev, sizeof(chardev), "socket,path=%s,id=ivc0", r->d.sock);
    const char *argv[] = {qemu,
                          "-S",
                          "-M",
                          "q35",
                          "-nodefaults",
                          "-display",
                          "none",
                          "-accel",
                          "tcg",
                          "-m",
                          "64",
                          "-qmp",
                          qmp_arg,
                          "-chardev",
                          chardev,
                          "-device",
                          "ivshmem-doorbell,chardev=ivc0,vectors=1",
                          NULL};
    memcpy(a.argv, argv, sizeof(argv));
    r->qpid = t_fork(exec_qemu, &a); /* killed at exit if the case fails */
    qmp_connect(&r->q, qmp_path, r->qpid);
}

/* QEMU sizes BAR2 from the region ivcd sent; ivcd lists QEMU's pid; the
 * host peer hears QEMU arrive. */
static void test_qemu_attaches(void)
{
    static struct rig r;
    char want[128];

    rig_up(&r);
    json_t *buses = qmp_cmd(&r.q, "query-pci");
    uint64_t bar2 = 0;
    size_t i;
    json_t *bus;
    json_array_foreach(buses, i, bus)
    {
        if ((bar2 = find_bar2(json_object_get(bus, "devices"))) != 0)
            break;
    }
    json_decref(buses);
    if (bar2 != SIZE)
        dump_qemu_log();
    T_ASSERT(bar2 == SIZE, "ivshmem BAR2 size %llu, wanted %u", (unsigned long long)bar2, SIZE);

    snprintf(want, sizeof(want), "client id=1 pid=%d state=live\n", (int)r.qpid);
    T_ASSERT(wait_list(&r.d, want, true, 5000), "ivcd ctl list does not show QEMU (%d)",
             (int)r.qpid);
    raw_expect(r.host.sock, 1, true, NULL);
}

/* QEMU quits: ivcd notices within a few seconds, the host peer hears it
 * go, and QEMU took every message without complaint. */
static void test_qemu_quits(void)
{
    static struct rig r;
    char want[128], out[8192];

    rig_up(&r);
    snprintf(want, sizeof(want), "client id=1 pid=%d state=live\n", (int)r.qpid);
    T_ASSERT(wait_list(&r.d, want, true, 5000), "ivcd ctl list does not show QEMU (%d)",
             (int)r.qpid);
    raw_expect(r.host.sock, 1, true, NULL);
    json_decref(qmp_cmd(&r.q, "quit"));
    close(r.q.sock);
    int st = t_wait(r.qpid);
    T_ASSERT(st == 0, "QEMU exit status %d", st);
    snprintf(want, sizeof(want), "pid=%d", (int)r.qpid);
    T_ASSERT(wait_list(&r.d, want, false, 5000), "ivcd still lists QEMU after it quit");
    raw_expect(r.host.sock, 1, false, NULL);
    raw_close(&r.host);
    T_ASSERT(ctl_run(&r.d, out, sizeof(out), (const char *const[]){"status", NULL}) == 0 &&
                 strstr(out, "clients=0\n"),
             "status: %s", out);
    int lfd = open(qemu_log, O_RDONLY | O_CLOEXEC);
    ssize_t n = lfd >= 0 ? read(lfd, out, sizeof(out) - 1) : -1;
    if (lfd >= 0)
        close(lfd);
    T_ASSERT(n == 0, "QEMU printed: %.*s", (int)(n > 0 ? n : 0), out);
    t_ivcd_stop(&r.d);
}

static const struct t_case cases[] = {
    {"qemu_attaches", test_qemu_attaches, 60},
    {"qemu_quits", test_qemu_quits, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
