/*
 * test_cluster - the cluster layer (src/libvhpc/cluster: cluster.c, vm.c,
 * qmp.c, job.c, ns.c, net.c, agent_client.c) without a VM.  QEMU is
 * fake_qemu (first in PATH under QEMU's name; it speaks QMP and runs the
 * real vhpc-agent as its "guest"); ivcd, the namespace keeper, ip and nft
 * are the real ones.  Faults are injected where the code looks things up:
 * $VHPC_IVCD (ivcd = /bin/false, or missing), PATH (no QEMU; an `ip` or
 * `nft` that fails at one step), fake_qemu's own switches (QEMU that exits
 * at once, QMP that never answers, an agent that never says ready) and a
 * QEMU killed while a command runs.  After every path through
 * vhpc_cluster_up, vhpc_job_boot, vhpc_job_stop, vhpc_cluster_down and
 * vhpc_gc, check_gone() proves that nothing of the cluster is left: no
 * process (the program starts itself again with a marker in its
 * environment, so every process it forks or execs, detached helpers and
 * the guest's commands included, shows the marker in /proc/PID/environ),
 * no state directory, no socket, no namespace, no tap or bridge on the
 * host; and the error names what failed.
 *
 * The job's network namespace needs root (or, for a user, what `vhpc
 * setup` enables): a case that cannot start clusters here is skipped and
 * says why.
 */
#include "cluster.h"
#include "job.h"
#include "ns.h"
#include "qmp.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MARK_VAR "VHPC_TEST_CLUSTER_MARK"
#define BOOT_MS  10000

/* ---- the case's world ----------------------------------------------------------- */

static char mark[200];   /* MARK_VAR=<unique>: this test program's processes and theirs */
static char events[200]; /* fake_qemu's event log */
static char kernel[200], initrd[200], bin[200];

/* Processes other than this one carrying the marker: their pids, at most max. */
static int marked(pid_t *pids, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    size_t ml = strlen(mark);
    while (d && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || pid == getpid() || pid == getppid()) /* the case, the runner */
            continue;
        char path[64], buf[65536];
        snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; len > 0 && i < len; i += (ssize_t)strlen(buf + i) + 1) {
            buf[len] = 0;
            if (strncmp(buf + i, mark, ml) == 0 && buf[i + (ssize_t)ml] == 0) {
                if (n < max)
                    pids[n] = pid;
                n++;
                break;
            }
        }
    }
    if (d)
        closedir(d);
    return n;
}

/* Whatever a failed case leaves running goes with it (the runner only
 * kills the case's process group; keepers and loggers are not in it). */
static char mounted[VHPC_DIR_MAX + 16]; /* a case's mount, undone at exit */

static void kill_marked(void)
{
    if (mounted[0])
        umount2(mounted, MNT_DETACH);
    pid_t pids[256];
    for (int round = 0; round < 3; round++) {
        int n = marked(pids, 256);
        for (int i = 0; i < n && i < 256; i++)
            kill(pids[i], SIGKILL);
        if (!n)
            break;
        usleep(50 * 1000);
    }
}

static void on_alarm(int sig)
{
    (void)sig;
    kill_marked();
    fprintf(stderr, "FAIL: the case's timeout; what it started was killed\n");
    exit(1); /* testutil's exit handler removes the scratch directory */
}

static void write_text(const char *path, mode_t mode, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    T_ASSERT(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text), "writing %s: %s",
             path, strerror(errno));
    close(fd);
}

static char *slurp(const char *path)
{
    static char buf[65536];
    buf[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return buf;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

/* Set up the case: root or `vhpc setup`, a private run directory, fake
 * QEMU first in PATH, the real ivcd and agent, dummy kernel and initrd. */
static void setup(void)
{
    const char *tmp = t_tmpdir(), *fake = getenv("FAKE_QEMU_DIR"), *ivcd = getenv("IVCD");
    const char *agent = getenv("VHPC_AGENT");
    T_ASSERT(fake && ivcd && agent, "FAKE_QEMU_DIR, IVCD and VHPC_AGENT must be set (by ctest)");
    snprintf(mark, sizeof(mark), MARK_VAR "=%s", getenv(MARK_VAR));
    atexit(kill_marked);
    signal(SIGALRM, on_alarm);

    vhpc_err_t err = {0};
    if (vhpc_cluster_can_start(&err) < 0)
        T_SKIP("%s", err.msg);
    if (access("/usr/sbin/ip", X_OK) != 0 || access("/usr/sbin/nft", X_OK) != 0)
        T_SKIP("the job's network needs ip and nft (apt-get install iproute2 nftables)");
    char run[200], path[4200];
    snprintf(run, sizeof(run), "%s/run", tmp);
    T_ASSERT(mkdir(run, 0700) == 0, "mkdir %s", run);
    setenv("VHPC_RUN_DIR", run, 1);
    setenv("VHPC_IVCD", ivcd, 1);
    setenv("FAKE_QEMU_AGENT_BIN", agent, 1);
    snprintf(events, sizeof(events), "%s/qemu.events", tmp);
    setenv("FAKE_QEMU_LOG", events, 1);
    snprintf(bin, sizeof(bin), "%s/bin", tmp);
    T_ASSERT(mkdir(bin, 0755) == 0, "mkdir %s", bin);
    /* bin/ (the case's fake ip or nft), then fake QEMU, then the rest. */
    snprintf(path, sizeof(path), "%s:%s:%s", bin, fake, getenv("PATH") ? getenv("PATH") : "");
    setenv("PATH", path, 1);
    snprintf(kernel, sizeof(kernel), "%s/vmlinuz", tmp);
    snprintf(initrd, sizeof(initrd), "%s/initrd", tmp);
    write_text(kernel, 0644, "not a kernel: fake QEMU only checks it is there\n");
    write_text(initrd, 0644, "not an initramfs\n");
}

static struct vhpc_cluster_spec spec(const char *name, int nvms)
{
    return (struct vhpc_cluster_spec){.name = name,
                                      .nvms = nvms,
                                      .vcpus = 1,
                                      .mem_mib = 128,
                                      .kernel = kernel,
                                      .initrd = initrd,
                                      .accel = VHPC_ACCEL_TCG};
}

/* A fake `ip` or `nft` in the case's bin/ that fails when its arguments
 * contain `pattern`, and otherwise runs the real one. */
static void failing_tool(const char *tool, const char *pattern)
{
    char path[300], text[600];
    snprintf(path, sizeof(path), "%s/%s", bin, tool);
    snprintf(text, sizeof(text),
             "#!/bin/sh\n"
             "case \"$*\" in *'%s'*) echo \"%s: injected failure\" >&2; exit 2;; esac\n"
             "exec /usr/sbin/%s \"$@\"\n",
             pattern, tool, tool);
    write_text(path, 0755, text);
}

static void assert_has(const char *text, const char *want, const char *what)
{
    T_ASSERT(strstr(text, want), "%s should say '%s': %s", what, want, text);
}

/* ---- what a running cluster has, and proof that it is all gone -------------------- */

struct trace {
    char dir[VHPC_DIR_MAX];
    pid_t qemu[VHPC_MAX_VMS], ivcd, keeper;
    int nvms;
    ino_t netns;
    char bridge[IFNAMSIZ + 1], taps[VHPC_MAX_VMS][IFNAMSIZ + 1];
};

static pid_t read_pid(const char *dir, const char *name)
{
    char path[VHPC_DIR_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return (pid_t)atoi(slurp(path));
}

/* Does `pid` run?  A zombie waiting for init to reap it does not (a
 * daemon's or an orphaned QEMU's parent is init, which reaps when it will). */
static bool alive(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    const char *st = strrchr(slurp(path), ')');
    return st && st[1] == ' ' && st[2] != 'Z' && st[2] != 'X';
}

/* Record what the cluster has while it is up, checking it is there. */
static void trace_up(const struct vhpc_cluster *cl, struct trace *t)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "%s", cl->dir);
    t->nvms = cl->nvms;
    t->ivcd = read_pid(cl->dir, "ivcd.pid");
    t->keeper = read_pid(cl->dir, "netns.pid");
    T_ASSERT(t->ivcd > 0 && alive(t->ivcd), "ivcd (pid %d) runs", (int)t->ivcd);
    T_ASSERT(vhpc_ns_alive(t->keeper), "the namespace keeper (pid %d) runs", (int)t->keeper);
    char ns[64];
    struct stat st;
    snprintf(ns, sizeof(ns), "/proc/%d/ns/net", (int)t->keeper);
    T_ASSERT(stat(ns, &st) == 0, "stat %s", ns);
    t->netns = st.st_ino;
    snprintf(t->bridge, sizeof(t->bridge), "%s", cl->net.bridge);
    for (int i = 0; i < cl->nvms; i++) {
        char vmdir[VHPC_DIR_MAX + 8], tap[VHPC_DIR_MAX + 16];
        snprintf(vmdir, sizeof(vmdir), "%s/vm%d", cl->dir, i);
        t->qemu[i] = read_pid(vmdir, "qemu.pid");
        T_ASSERT(t->qemu[i] == cl->vms[i].pid, "vm%d/qemu.pid %d is QEMU's pid %d", i,
                 (int)t->qemu[i], (int)cl->vms[i].pid);
        snprintf(tap, sizeof(tap), "%s/tap", vmdir);
        snprintf(t->taps[i], sizeof(t->taps[i]), "%.15s", slurp(tap));
        t->taps[i][strcspn(t->taps[i], "\n")] = 0;
    }
}

static bool in_netns(ino_t ino)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    bool found = false;
    while (d && !found && (e = readdir(d))) {
        char path[300];
        struct stat st;
        if (atoi(e->d_name) <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%s/ns/net", e->d_name);
        found = stat(path, &st) == 0 && st.st_ino == ino;
    }
    if (d)
        closedir(d);
    return found;
}

/* Is a UNIX socket bound under the scratch directory still open? */
static bool socket_left(char *which, size_t len)
{
    FILE *f = fopen("/proc/net/unix", "re");
    char line[512];
    const char *tmp = t_tmpdir();
    bool left = false;
    while (f && !left && fgets(line, sizeof(line), f)) {
        const char *p = strstr(line, tmp);
        if (p) {
            snprintf(which, len, "%s", p);
            left = true;
        }
    }
    if (f)
        fclose(f);
    return left;
}

static void describe(pid_t pid, char *buf, size_t len)
{
    char path[64], exe[256] = "?";
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 1] = 0;
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    snprintf(buf, len, "pid %d (%s, %.40s)", (int)pid, exe, slurp(path));
    buf[strcspn(buf, "\n")] = 0;
}

/* Nothing of the cluster is left: processes (waited for up to 3 s, a
 * killed process takes a moment to go), state directory, sockets, the
 * namespace, and its devices on the host.  `t` may be NULL (the cluster
 * never came up: only what the marker and the run directory show). */
static void check_gone(const struct trace *t, const char *name)
{
    pid_t pids[16];
    int n = 0;
    for (int w = 0; w < 150 && (n = marked(pids, 16)) > 0; w++)
        usleep(20 * 1000);
    if (n > 0) {
        char what[400];
        describe(pids[0], what, sizeof(what));
        T_FAIL("%d process(es) of the cluster left, e.g. %s", n, what);
    }
    char dir[VHPC_DIR_MAX], sock[512];
    snprintf(dir, sizeof(dir), "%s/clusters/%s", getenv("VHPC_RUN_DIR"), name);
    T_ASSERT(access(dir, F_OK) != 0 && errno == ENOENT, "state directory %s left", dir);
    T_ASSERT(!socket_left(sock, sizeof(sock)), "a socket is still bound: %s", sock);
    if (!t)
        return;
    T_ASSERT(!strcmp(t->dir, dir), "the cluster's directory %s is %s", t->dir, dir);
    for (int i = 0; i < t->nvms; i++)
        T_ASSERT(!alive(t->qemu[i]), "QEMU of vm%d (pid %d) left", i, (int)t->qemu[i]);
    T_ASSERT(!alive(t->ivcd), "ivcd (pid %d) left", (int)t->ivcd);
    T_ASSERT(!vhpc_ns_alive(t->keeper), "namespace keeper (pid %d) left", (int)t->keeper);
    T_ASSERT(!in_netns(t->netns), "a process is still in the job's network namespace");
    /* Made in the job's namespace, never on the host. */
    T_ASSERT(if_nametoindex(t->bridge) == 0, "bridge %s on the host", t->bridge);
    for (int i = 0; i < t->nvms; i++)
        T_ASSERT(if_nametoindex(t->taps[i]) == 0, "tap %s on the host", t->taps[i]);
}

/* Lines of fake QEMU's event log that contain `what`. */
static int events_with(const char *what)
{
    int n = 0;
    for (const char *p = slurp(events); (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

/* Kill a process `ms` from now, from a child of ours (VM death mid-run). */
static int killer_main(void *arg)
{
    usleep(500 * 1000);
    return kill(*(pid_t *)arg, SIGKILL) == 0 ? 0 : 1;
}

/* ---- cases: a cluster that comes up and goes ---------------------------------------- */

static void test_up_down(void)
{
    setup();
    struct vhpc_cluster_spec s = spec("updown", 2);
    struct vhpc_cluster cl;
    vhpc_err_t err = {0};
    setenv("FAKE_QEMU_AGENT", "mute", 1);
    T_ASSERT(vhpc_cluster_up(&s, &cl, &err) == 0, "vhpc_cluster_up: %s", err.msg);
    struct trace t;
    trace_up(&cl, &t);
    struct stat st;
    char path[VHPC_DIR_MAX + 32];
    snprintf(path, sizeof(path), "%s/job.key", cl.dir);
    T_ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "job.key is 0600");
    snprintf(path, sizeof(path), "%s/vm1/qemu.cfg", cl.dir);
    T_ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "qemu.cfg is 0600");

    /* QMP as vm.c speaks it: greeting, capabilities, commands, errors, events. */
    struct qmp q;
    json_t *ret = NULL;
    T_ASSERT(qmp_connect(&q, cl.vms[1].qmp_path, 5000, &err) == 0, "qmp_connect: %s", err.msg);
    T_ASSERT(qmp_command(&q, "query-status", NULL, &ret, 2000, &err) == 0, "query-status: %s",
             err.msg);
    const char *status = json_string_value(json_object_get(ret, "status"));
    T_ASSERT(status && !strcmp(status, "running"), "status %s", status ? status : "(none)");
    json_decref(ret);
    T_ASSERT(qmp_command(&q, "no-such-thing", NULL, NULL, 2000, &err) == -EIO, "unknown command");
    assert_has(err.msg, "QMP no-such-thing: The command no-such-thing has not been found",
               "the QMP error");
    T_ASSERT(qmp_command(&q, "system_powerdown", NULL, NULL, 2000, &err) == 0, "powerdown: %s",
             err.msg);
    T_ASSERT(qmp_wait_event(&q, "POWERDOWN", NULL, 2000, &err) == 0, "POWERDOWN: %s", err.msg);
    qmp_close(&q);

    char why[512];
    T_ASSERT(!vhpc_vm_exited(&cl.vms[0], why, sizeof(why)), "vm0 runs");
    T_ASSERT(vhpc_cluster_down(&cl, 0, &err) == 0, "vhpc_cluster_down: %s", err.msg);
    T_ASSERT(events_with("vm0 qmp quit") == 1 && events_with("vm1 qmp quit") == 1,
             "each QEMU was told to quit over QMP: %s", slurp(events));
    check_gone(&t, "updown");
}

/* vhpc vm list's view of the clusters: fn of vhpc_job_list. */
static int count_job(const struct vhpc_job_info *c, void *arg)
{
    const struct vhpc_job *job = arg;
    if (strcmp(c->name, vhpc_job_name(job)) != 0)
        return 0;
    struct vhpc_job_vm v;
    for (int i = 0; i < c->nvms; i++)
        if (vhpc_job_vm(job, i, &v) < 0 || v.pid != c->pid[i])
            return -1;
    char me[16];
    snprintf(me, sizeof(me), "%d", (int)getpid()); /* the process that booted it */
    return c->nvms == vhpc_job_nvms(job) && !strcmp(c->owner, me) ? 1 : -1;
}

/* What a program outside libvhpc sees of a booted job (vhpc/job.h). */
static void check_public_view(const struct vhpc_job *job)
{
    T_ASSERT(!strcmp(vhpc_job_name(job), "job") && vhpc_job_nvms(job) == 2 &&
                 vhpc_job_failed_vm(job) == -1,
             "name %s, %d VMs, failed %d", vhpc_job_name(job), vhpc_job_nvms(job),
             vhpc_job_failed_vm(job));
    for (int i = 0; i < 2; i++) {
        struct vhpc_job_vm v;
        char want[8];
        snprintf(want, sizeof(want), "vm%d", i);
        T_ASSERT(vhpc_job_vm(job, i, &v) == 0 && !strcmp(v.name, want) && v.pid > 0 &&
                     v.ip[0] && access(v.console, R_OK) == 0,
                 "vm%d: %s pid %d ip %s console %s", i, v.name, (int)v.pid, v.ip, v.console);
        const struct agent_hello *h = vhpc_job_hello(job, i);
        T_ASSERT(h && h->hostname[0], "vm%d's agent hello", i); /* (the fake's hostname) */
    }
    struct vhpc_job_vm v;
    T_ASSERT(vhpc_job_vm(job, 2, &v) == -ERANGE && vhpc_job_vm(job, -1, &v) == -ERANGE &&
                 !vhpc_job_hello(job, 2),
             "no vm2");
    vhpc_err_t err = {0};
    int r = vhpc_job_list(count_job, (void *)job, &err);
    T_ASSERT(r == 1, "vhpc_job_list saw the job as it is: %d (%s)", r, err.msg);
}

/* The whole job: boot with the real agent, run, power off cleanly. */
static void test_boot_run_stop(void)
{
    setup();
    struct vhpc_cluster_spec s = spec("job", 2);
    struct vhpc_job *job;
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_job_new(&job, &err) == 0, "vhpc_job_new: %s", err.msg);
    T_ASSERT(vhpc_job_boot(job, &s, BOOT_MS, &err) == 0, "vhpc_job_boot: %s", err.msg);
    T_ASSERT(job->failed == -1 && job->agents[0] && job->agents[1], "both agents ready");
    struct trace t;
    trace_up(&job->cl, &t);
    check_public_view(job);

    int p[2], status = -1;
    T_ASSERT(pipe(p) == 0, "pipe");
    const char *argv[] = {"sh", "-c", "echo vm=$VHPC_VM of $VHPC_NVMS; exit 3", NULL};
    struct agent_exec_req req = {.argv = argv};
    struct agent_run_io io = {
        .stdin_fd = -1, .stdout_fd = p[1], .stderr_fd = -1, .signal_fd = -1, .timeout_ms = 10000};
    T_ASSERT(vhpc_job_run(job, 1, &req, &io, &status, &err) == 0, "vhpc_job_run: %s", err.msg);
    close(p[1]);
    char out[128] = "";
    ssize_t n = read(p[0], out, sizeof(out) - 1);
    out[n > 0 ? n : 0] = 0;
    close(p[0]);
    T_ASSERT(status == 3 && !strcmp(out, "vm=1 of 2\n"), "status %d, output '%s'", status, out);

    T_ASSERT(vhpc_job_stop(job, true, &err) == 0, "vhpc_job_stop: %s", err.msg);
    T_ASSERT(vhpc_job_stop(job, true, &err) == 0, "a second vhpc_job_stop: %s", err.msg);
    vhpc_job_close(job);
    /* Powered off by their agents, not told to quit. */
    T_ASSERT(events_with("agent exited 0") == 2 && events_with("qmp quit") == 0,
             "both guests powered off by themselves: %s", slurp(events));
    check_gone(&t, "job");
}

/* ---- cases: vhpc_cluster_up fails at each step and removes what it made ---------------- */

static void up_fails(const char *name, int nvms, int code, const char *const *says)
{
    struct vhpc_cluster_spec s = spec(name, nvms);
    struct vhpc_cluster cl;
    vhpc_err_t err = {0};
    int r = vhpc_cluster_up(&s, &cl, &err);
    T_ASSERT(r < 0, "vhpc_cluster_up succeeded");
    T_ASSERT(!code || r == code, "returned %d, want %d (%s)", r, code, err.msg);
    for (int i = 0; says[i]; i++)
        assert_has(err.msg, says[i], "the error");
    check_gone(NULL, name);
}

static void test_ivcd_false(void)
{
    setup();
    setenv("VHPC_IVCD", "/bin/false", 1);
    up_fails("ivcdfalse", 1, -EIO,
             (const char *const[]){"starting ivcd /bin/false failed (exit status 1", NULL});
}

static void test_ivcd_missing(void)
{
    setup();
    setenv("VHPC_IVCD", "/nonexistent/ivcd", 1);
    up_fails("noivcd", 1, -ENOENT, (const char *const[]){"cannot find ivcd", NULL});
}

static void test_nft_fails(void)
{
    setup();
    failing_tool("nft", "-f");
    up_fails(
        "nftfail", 1, -EIO,
        (const char *const[]){"closing the host side of bridge", "nft: injected failure", NULL});
}

static void test_bridge_fails(void)
{
    setup();
    failing_tool("ip", "type bridge");
    up_fails("brfail", 1, -EIO,
             (const char *const[]){"creating bridge vhb", "ip: injected failure", NULL});
}

/* vm0's QEMU runs when vm1's tap cannot be made: it is stopped too. */
static void test_second_tap_fails(void)
{
    setup();
    setenv("FAKE_QEMU_AGENT", "mute", 1);
    failing_tool("ip", "-1 mode tap");
    up_fails("tapfail", 2, -EIO,
             (const char *const[]){"creating tap vht", "-1: `ip tuntap add dev",
                                   "ip: injected failure", NULL});
    T_ASSERT(events_with("vm0 start") == 1 && events_with("vm0 qmp quit") == 1 &&
                 events_with("vm1 start") == 0,
             "vm0 was started, then told to quit: %s", slurp(events));
}

static void test_no_qemu(void)
{
    setup();
    char *path = strdup(getenv("PATH"));
    setenv("PATH", bin, 1); /* no QEMU anywhere in it */
    up_fails("noqemu", 2, -ENOENT,
             (const char *const[]){"starting VM vm0: running qemu-system-x86_64 (install "
                                   "qemu-system-x86): No such file or directory",
                                   NULL});
    setenv("PATH", path, 1);
    free(path);
}

/* ---- cases: booting fails, the job stops -------------------------------------------- */

static struct vhpc_job *boot_fails(const char *name, int nvms, int timeout_ms, int failed,
                                   const char *const *says)
{
    struct vhpc_cluster_spec s = spec(name, nvms);
    vhpc_err_t err = {0};
    struct vhpc_job *job;
    T_ASSERT(vhpc_job_new(&job, &err) == 0, "vhpc_job_new: %s", err.msg);
    T_ASSERT(vhpc_job_boot(job, &s, timeout_ms, &err) < 0, "vhpc_job_boot succeeded");
    T_ASSERT(vhpc_job_failed_vm(job) == failed, "failed VM %d, want %d (%s)",
             vhpc_job_failed_vm(job), failed, err.msg);
    for (int i = 0; says[i]; i++)
        assert_has(err.msg, says[i], "the error");
    return job;
}

static void test_qemu_exits(void)
{
    setup();
    struct vhpc_job *job;
    setenv("FAKE_QEMU_VM", "vm1", 1);
    setenv("FAKE_QEMU_EXIT", "Invalid SMP CPUs 100000 (injected)", 1);
    job = boot_fails(
        "qemuexit", 2, BOOT_MS, 1,
        (const char *const[]){"qemuexit/vm1: QEMU exited: qemu-system-x86_64: Invalid SMP "
                              "CPUs 100000 (injected)",
                              NULL});
    T_ASSERT(job->agents[0] && !job->agents[1], "vm0 booted, vm1 did not");
    struct trace t;
    trace_up(&job->cl, &t); /* still up: its logs can be read */
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_job_stop(job, true, &err) == 0, "vhpc_job_stop: %s", err.msg);
    vhpc_job_close(job);
    check_gone(&t, "qemuexit");
}

static void test_agent_never_ready(void)
{
    setup();
    struct vhpc_job *job;
    setenv("FAKE_QEMU_AGENT", "mute", 1);
    job = boot_fails("mute", 1, 1500, 0,
                     (const char *const[]){
                         "mute/vm0: waiting for its agent (console: ", "/vm0/console.log)", NULL});
    struct trace t;
    trace_up(&job->cl, &t);
    char con[4096];
    T_ASSERT(vhpc_vm_console_tail(&job->cl.vms[0], 5, con, sizeof(con)) >= 1, "console");
    assert_has(con, "fake QEMU: booting vm0", "the console");
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_job_stop(job, false, &err) == 0, "vhpc_job_stop: %s", err.msg);
    vhpc_job_close(job);
    T_ASSERT(events_with("vm0 qmp quit") == 1, "QEMU told to quit: %s", slurp(events));
    check_gone(&t, "mute");
}

/* QMP never answers: QEMU is killed. */
static void test_qmp_mute(void)
{
    setup();
    setenv("FAKE_QEMU_AGENT", "mute", 1);
    setenv("FAKE_QEMU_QMP", "mute", 1);
    struct vhpc_cluster_spec s = spec("qmpmute", 1);
    struct vhpc_cluster cl;
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_cluster_up(&s, &cl, &err) == 0, "vhpc_cluster_up: %s", err.msg);
    struct trace t;
    trace_up(&cl, &t);
    uint64_t t0 = t_now_ms();
    T_ASSERT(vhpc_cluster_down(&cl, 0, &err) == 0, "vhpc_cluster_down: %s", err.msg);
    uint64_t took = t_now_ms() - t0;
    T_ASSERT(events_with("exit") == 0 && events_with("qmp") == 0,
             "QEMU heard nothing and was killed: %s", slurp(events));
    T_ASSERT(took < 6000, "down took %llu ms", (unsigned long long)took);
    check_gone(&t, "qmpmute");
}

/* ---- cases: a VM dies while commands run -------------------------------------------- */

static void test_vm_dies_mid_run(void)
{
    setup();
    struct vhpc_job *job;
    struct vhpc_cluster_spec s = spec("dies", 2);
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_job_new(&job, &err) == 0, "vhpc_job_new: %s", err.msg);
    T_ASSERT(vhpc_job_boot(job, &s, BOOT_MS, &err) == 0, "vhpc_job_boot: %s", err.msg);
    struct trace t;
    trace_up(&job->cl, &t);
    pid_t victim = job->cl.vms[1].pid, killer = t_fork(killer_main, &victim);
    const char *argv[] = {"sleep", "30", NULL};
    struct agent_exec_req req = {.argv = argv};
    struct agent_run_io io = {
        .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = -1, .signal_fd = -1, .timeout_ms = 20000};
    int status = -1;
    uint64_t t0 = t_now_ms();
    int r = vhpc_job_run(job, 1, &req, &io, &status, &err);
    T_ASSERT(r < 0 && t_now_ms() - t0 < 10000, "vhpc_job_run returned %d after %llu ms", r,
             (unsigned long long)(t_now_ms() - t0));
    assert_has(err.msg, "vm1", "the error");
    T_ASSERT(t_wait(killer) == 0, "the killer");
    /* Its connection closes a moment before it is a zombie. */
    char why[512];
    for (int w = 0; w < 100 && !vhpc_vm_exited(&job->cl.vms[1], why, sizeof(why)); w++)
        usleep(10 * 1000);
    T_ASSERT(vhpc_vm_exited(&job->cl.vms[1], why, sizeof(why)), "vm1 exited (run: %s)", err.msg);
    T_ASSERT(vhpc_job_stop(job, false, &err) == 0, "vhpc_job_stop: %s", err.msg);
    vhpc_job_close(job);
    check_gone(&t, "dies"); /* the guest's sleep too */
}

/* vhpc_job_run_each: one VM dies, the job is stopped at once. */
static void test_each_vm_dies(void)
{
    setup();
    struct vhpc_job *job;
    static struct vhpc_job_each each;
    struct vhpc_cluster_spec s = spec("eachdies", 2);
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_job_new(&job, &err) == 0, "vhpc_job_new: %s", err.msg);
    T_ASSERT(vhpc_job_boot(job, &s, BOOT_MS, &err) == 0, "vhpc_job_boot: %s", err.msg);
    struct trace t;
    trace_up(&job->cl, &t);
    pid_t victim = job->cl.vms[0].pid, killer = t_fork(killer_main, &victim);
    const char *argv[] = {"sleep", "30", NULL};
    struct agent_exec_req req = {.argv = argv};
    int p[2];
    T_ASSERT(pipe(p) == 0, "pipe");
    each = (struct vhpc_job_each){.out_fd = p[1], .err_fd = p[1], .signal_fd = -1};
    uint64_t t0 = t_now_ms();
    T_ASSERT(vhpc_job_run_each(job, &req, &each, &err) == 0, "run_each: %s", err.msg);
    T_ASSERT(t_now_ms() - t0 < 15000, "run_each took %llu ms",
             (unsigned long long)(t_now_ms() - t0));
    T_ASSERT(each.failed == 0 && each.r[0] < 0, "vm0 failed (failed %d, r %d)", each.failed,
             each.r[0]);
    assert_has(each.errs[0].msg, "vm0", "vm0's error");
    T_ASSERT(!job->up, "the job was stopped");
    T_ASSERT(t_wait(killer) == 0, "the killer");
    check_gone(&t, "eachdies"); /* vm1's sleep too */
    T_ASSERT(vhpc_job_stop(job, true, &err) == 0, "vhpc_job_stop after it: %s", err.msg);
    vhpc_job_close(job);
    close(p[0]);
    close(p[1]);
}

/* ---- cases: teardown that cannot finish, and vhpc gc --------------------------------- */

/* A mount inside the state directory: the directory cannot go.  The rest
 * does; the error says what is left, and vhpc gc removes it later. */
static void test_down_leaves_dir(void)
{
    setup();
    setenv("FAKE_QEMU_AGENT", "mute", 1);
    struct vhpc_cluster_spec s = spec("stuck", 1);
    struct vhpc_cluster cl;
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_cluster_up(&s, &cl, &err) == 0, "vhpc_cluster_up: %s", err.msg);
    struct trace t;
    trace_up(&cl, &t);
    char mnt[VHPC_DIR_MAX + 16];
    snprintf(mnt, sizeof(mnt), "%s/vm0/mnt", cl.dir);
    T_ASSERT(mkdir(mnt, 0700) == 0, "mkdir %s", mnt);
    if (mount("none", mnt, "tmpfs", 0, "size=64k") < 0) {
        vhpc_cluster_down(&cl, 0, &err);
        T_SKIP("cannot mount a tmpfs here (%s)", strerror(errno));
    }
    snprintf(mounted, sizeof(mounted), "%s", mnt);
    int r = vhpc_cluster_down(&cl, 0, &err);
    T_ASSERT(r == -ENOTEMPTY, "vhpc_cluster_down returned %d: %s", r, err.msg);
    char want[2 * VHPC_DIR_MAX + 64];
    snprintf(want, sizeof(want), "removing cluster %s: removing %s/vm0", cl.dir, cl.dir);
    assert_has(err.msg, want, "the error");
    T_ASSERT(access(cl.dir, F_OK) == 0, "the state directory is kept for vhpc gc");
    T_ASSERT(umount(mnt) == 0, "umount %s", mnt);
    mounted[0] = 0;
    T_ASSERT(vhpc_gc(false, NULL, NULL, &err) == 1, "vhpc gc removes it: %s", err.msg);
    check_gone(&t, "stuck");
}

static void report(const char *line, void *arg)
{
    strncat(arg, line, 1000);
    strncat(arg, "\n", 2);
}

static int orphan_main(void *arg)
{
    struct vhpc_cluster_spec s = spec("orphan", 2);
    static struct vhpc_cluster cl;
    vhpc_err_t err = {0};
    if (vhpc_cluster_up(&s, &cl, &err) < 0) {
        fprintf(stderr, "vhpc_cluster_up: %s\n", err.msg);
        return 1;
    }
    _exit(0); /* a vhpc run that crashed: nothing removed */
}

/* A cluster whose owner died: vhpc gc removes it; a detached one only with --all. */
static void test_gc(void)
{
    setup();
    setenv("FAKE_QEMU_AGENT", "mute", 1);
    T_ASSERT(t_wait(t_fork(orphan_main, NULL)) == 0, "the owner");
    struct vhpc_cluster cl;
    vhpc_err_t err = {0};
    T_ASSERT(vhpc_cluster_load("orphan", &cl, &err) == 0 && cl.nvms == 2, "load: %s", err.msg);
    struct trace t;
    trace_up(&cl, &t);

    struct vhpc_cluster_spec s = spec("detached", 1);
    s.detached = true;
    struct vhpc_cluster dcl;
    T_ASSERT(vhpc_cluster_up(&s, &dcl, &err) == 0, "vhpc_cluster_up: %s", err.msg);
    struct trace dt;
    trace_up(&dcl, &dt);

    char said[4096] = "";
    T_ASSERT(vhpc_gc(false, report, said, &err) == 1, "gc: %s (%s)", said, err.msg);
    T_ASSERT(!strcmp(said, "removed cluster orphan\n"), "gc said: %s", said);
    T_ASSERT(access(dcl.dir, F_OK) == 0 && alive(dt.qemu[0]), "the detached one stays");
    said[0] = 0;
    T_ASSERT(vhpc_gc(true, report, said, &err) == 1, "gc --all: %s (%s)", said, err.msg);
    T_ASSERT(!strcmp(said, "removed cluster detached\n"), "gc --all said: %s", said);
    check_gone(&t, "orphan");
    check_gone(&dt, "detached");
}

static const struct t_case cases[] = {
    {"up_down", test_up_down, 30},
    {"boot_run_stop", test_boot_run_stop, 40},
    {"ivcd_false", test_ivcd_false, 20},
    {"ivcd_missing", test_ivcd_missing, 20},
    {"nft_fails", test_nft_fails, 20},
    {"bridge_fails", test_bridge_fails, 20},
    {"second_tap_fails", test_second_tap_fails, 30},
    {"no_qemu", test_no_qemu, 20},
    {"qemu_exits", test_qemu_exits, 60},
    {"agent_never_ready", test_agent_never_ready, 30},
    {"qmp_mute", test_qmp_mute, 30},
    {"vm_dies_mid_run", test_vm_dies_mid_run, 40},
    {"each_vm_dies", test_each_vm_dies, 40},
    {"down_leaves_dir", test_down_leaves_dir, 30},
    {"gc", test_gc, 40},
    {0},
};

/* Every process this program starts, and theirs, carries a marker in the
 * environment it was started with (a fork keeps that of the exec before
 * it, so the program is started again with the marker in place). */
int main(int argc, char **argv)
{
    if (!getenv(MARK_VAR)) {
        char m[64];
        snprintf(m, sizeof(m), "%d-%llu", (int)getpid(), (unsigned long long)t_now_ms());
        setenv(MARK_VAR, m, 1);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "%s: cannot start again with %s set: %s\n", argv[0], MARK_VAR,
                strerror(errno));
        return 1;
    }
    return t_main(argc, argv, cases);
}
