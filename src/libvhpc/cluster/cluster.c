/*
 * cluster.c - see cluster.h.
 */
#include "cluster.h"
#include "clock.h"
#include "names.h"
#include "ns.h"
#include "proc.h"
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The run directory exists, is a directory of ours (not a link, not made
 * by someone else in a shared /tmp) and nobody else may write it. */
static int run_dir_ready(vhpc_err_t *err)
{
    const char *d = vhpc_run_dir();
    struct stat st;
    if (mkdir(d, geteuid() == 0 ? 0755 : 0700) < 0 && errno != EEXIST)
        return vhpc_err_set(err, -errno, "creating the run directory %s", d);
    if (lstat(d, &st) < 0)
        return vhpc_err_set(err, -errno, "run directory %s", d);
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
        return vhpc_err_setmsg(err, -EPERM,
                               "the run directory %s is not a directory of yours that only you "
                               "may write (owner uid %u, mode %04o): someone else may have made "
                               "it.  Remove it, or set $VHPC_RUN_DIR to a directory of yours",
                               d, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
    return 0;
}

/* The cluster's small state files ("owner", "job", "tap", ...), written
 * whole (vhpc__write_file: temporary file, then rename, so `vhpc gc`
 * never reads half a file) and read back without the trailing newline. */
static int write_text(const char *dir, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int write_text(const char *dir, const char *name, const char *fmt, ...)
{
    char path[PATH_MAX], text[512];
    va_list ap;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -EOVERFLOW;
    return vhpc__write_file(path, text, (size_t)n, 0644, NULL);
}

static int read_text(const char *dir, const char *name, char *buf, size_t len)
{
    char path[PATH_MAX], *text;
    size_t n;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int r = vhpc__read_file(path, &text, &n, NULL);
    if (r < 0)
        return r;
    if (n >= len)
        n = len - 1;
    memcpy(buf, text, n);
    free(text);
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return 0;
}

/* Is `pid` alive and running `name` (its executable's base name contains it)? */
static bool running(pid_t pid, const char *name)
{
    char path[64], exe[PATH_MAX], comm[64];
    /* Until it is a zombie a process is there, also while it exits: its
     * program (exe) is gone from /proc as soon as it has released its
     * memory, and it may then still be closing descriptors (ivcd: a
     * region of 256 MiB) for a while.  Its name is in comm (stat) then. */
    char state = vhpc__proc_state(pid, comm, sizeof(comm));
    if (!state || state == 'Z' || state == 'X')
        return false;
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof(exe) - 1);
    if (n < 0)
        return strstr(comm, name) != NULL;
    exe[n] = 0;
    const char *base = strrchr(exe, '/');
    return strstr(base ? base + 1 : exe, name) != NULL;
}

static pid_t read_pid(const char *dir, const char *name)
{
    char buf[32];
    if (read_text(dir, name, buf, sizeof(buf)) < 0)
        return -1;
    return (pid_t)strtol(buf, NULL, 10);
}

/* Stop a process that is not our child: SIGTERM, wait, SIGKILL. */
static int stop_pid(pid_t pid, const char *name, int grace_ms, vhpc_err_t *err)
{
    if (!running(pid, name))
        return 0;
    kill(pid, SIGTERM);
    for (int t = 0; t < grace_ms && running(pid, name); t += 20)
        vhpc_sleep_ms(20);
    if (running(pid, name))
        kill(pid, SIGKILL);
    for (int t = 0; t < 2000 && running(pid, name); t += 20)
        vhpc_sleep_ms(20);
    if (running(pid, name))
        return vhpc_err_setmsg(err, -ETIMEDOUT, "%s (pid %d) is still there 2 s after SIGKILL",
                               name, (int)pid);
    return 0;
}

static int start_ivcd(struct vhpc_cluster *cl, vhpc_err_t *err)
{
    char ivcd[PATH_MAX], sock[PATH_MAX], pidf[PATH_MAX], job[32];
    if (vhpc_tool_path("ivcd", ivcd, sizeof(ivcd)) < 0)
        return vhpc_err_setmsg(err, -ENOENT, "cannot find ivcd (set $VHPC_IVCD)");
    snprintf(sock, sizeof(sock), "%s/ivc.sock", cl->dir);
    snprintf(pidf, sizeof(pidf), "%s/ivcd.pid", cl->dir);
    snprintf(job, sizeof(job), "%" PRIu64, cl->job);
    pid_t pid = fork();
    if (pid < 0)
        return vhpc_err_set(err, -errno, "starting ivcd");
    if (pid == 0) {
        vhpc__close_from(3);
        /* 256 MiB (sparse: only touched pages cost memory) for up to 32
         * processes gives each endpoint about 8 MiB of ring memory. */
        execl(ivcd, ivcd, "--daemon", "--socket", sock, "--job", job, "--size", "256M",
              "--max-endpoints", "32", "--pidfile", pidf, (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return vhpc_err_setmsg(err, -EIO, "starting ivcd %s failed (exit status %d; see syslog)",
                               ivcd, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}

/* Short names derived from the cluster's name, for interfaces (15 chars). */
static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

int vhpc_cluster_check_memory(int nvms, long mem_mib, vhpc_err_t *err)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    long avail = kb < 0 ? -1 : kb / 1024;
    if (avail > 0 && mem_mib * nvms > avail)
        return vhpc_err_setmsg(err, -ENOMEM,
                               "%d VMs of %ld MiB need %ld MiB but the host has %ld MiB "
                               "available; use fewer VMs or less --mem",
                               nvms, mem_mib, mem_mib * nvms, avail);
    return 0;
}

int vhpc_cluster_can_start(vhpc_err_t *err)
{
    int r = vhpc_ns_check(err);
    return r < 0 ? vhpc_err_wrap(err, "cannot start VMs as uid %u; nothing was created",
                                 (unsigned)geteuid())
                 : 0;
}

int vhpc_cluster_up(const struct vhpc_cluster_spec *spec, struct vhpc_cluster *cl, vhpc_err_t *err)
{
    char clusters[VHPC_DIR_MAX - 64 - VHPC_CLUSTER_NAME_MAX];
    int r;

    memset(cl, 0, sizeof(*cl));
    if ((r = vhpc_check_cluster_name(spec->name, err)) < 0)
        return r;
    if (strlen(vhpc_run_dir()) >= sizeof(clusters) - 10)
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "run directory %s too long", vhpc_run_dir());
    if (spec->nvms < 1 || spec->nvms > VHPC_MAX_VMS)
        return vhpc_err_setmsg(err, -EINVAL, "--vms %d: between 1 and %d", spec->nvms,
                               VHPC_MAX_VMS);
    snprintf(cl->name, sizeof(cl->name), "%s", spec->name);
    snprintf(clusters, sizeof(clusters), "%s/clusters", vhpc_run_dir());
    if ((r = run_dir_ready(err)) < 0)
        return r;
    mkdir(clusters, 0700);
    snprintf(cl->dir, sizeof(cl->dir), "%s/%.*s", clusters, VHPC_CLUSTER_NAME_MAX, spec->name);
    if (mkdir(cl->dir, 0700) < 0) {
        if (errno == EEXIST)
            return vhpc_err_setmsg(err, -EEXIST,
                                   "a cluster named '%s' already exists (vhpc vm list shows it; "
                                   "vhpc vm stop %s or vhpc gc removes it)",
                                   spec->name, spec->name);
        return vhpc_err_set(err, -errno, "creating %s", cl->dir);
    }
    if (spec->detached)
        r = write_text(cl->dir, "owner", "detached\n");
    else
        r = write_text(cl->dir, "owner", "%d\n", (int)getpid());
    if (r < 0) {
        vhpc_err_set(err, r, "writing %s/owner", cl->dir);
        goto fail;
    }
    if (getrandom(&cl->job, sizeof(cl->job), 0) != sizeof(cl->job))
        cl->job = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    cl->job &= INT64_MAX;
    if ((r = write_text(cl->dir, "job", "%" PRIu64 "\n", cl->job)) < 0) {
        vhpc_err_set(err, r, "writing %s/job", cl->dir);
        goto fail;
    }
    /* The job's key, handed to each guest over its virtio-serial port (which
     * only the owner can reach) and never put on a command line. */
    if (getrandom(cl->key, sizeof(cl->key), 0) != (ssize_t)sizeof(cl->key)) {
        r = vhpc_err_set(err, -errno, "generating the job key");
        goto fail;
    }
    char keyf[VHPC_DIR_MAX];
    snprintf(keyf, sizeof(keyf), "%s/job.key", cl->dir);
    if ((r = vhpc__write_file(keyf, cl->key, sizeof(cl->key), 0600, err)) < 0)
        goto fail;
    if ((r = start_ivcd(cl, err)) < 0)
        goto fail;

    /* The job's network namespace, then its network inside it. */
    if ((r = vhpc_ns_create(&cl->net.ns, err)) < 0)
        goto fail;
    if ((r = write_text(cl->dir, "netns.pid", "%d\n", (int)cl->net.ns)) < 0) {
        vhpc_ns_stop(cl->net.ns, NULL);
        vhpc_err_set(err, r, "writing %s/netns.pid", cl->dir);
        goto fail;
    }
    uint32_t h = name_hash(spec->name) ^ (uint32_t)getpid();
    snprintf(cl->net.bridge, sizeof(cl->net.bridge), "vhb%08x", h);
    if ((r = write_text(cl->dir, "bridge", "%s\n", cl->net.bridge)) < 0) {
        vhpc_err_set(err, r, "writing %s/bridge", cl->dir);
        goto fail;
    }
    /* The bridge's side in the namespace is closed before the bridge exists. */
    if ((r = vhpc_net_firewall(&cl->net, err)) < 0 || (r = vhpc_net_create(&cl->net, err)) < 0)
        goto fail;

    char hosts[VHPC_MAX_VMS * 32] = "";
    for (int i = 0; i < spec->nvms; i++) {
        vhpc_net_guest_ip(&cl->net, i, cl->ips[i], sizeof(cl->ips[i]));
        size_t l = strlen(hosts);
        snprintf(hosts + l, sizeof(hosts) - l, "%svm%d:%s", i ? "," : "", i, cl->ips[i]);
    }
    for (int i = 0; i < spec->nvms; i++) {
        char vmdir[VHPC_DIR_MAX], name[16], tap[IFNAMSIZ], mac[24], append[4096];
        snprintf(name, sizeof(name), "vm%d", i);
        snprintf(vmdir, sizeof(vmdir), "%s/%s", cl->dir, name);
        snprintf(tap, sizeof(tap), "vht%06x-%u", h & 0xffffff, (unsigned)i % 100u);
        snprintf(mac, sizeof(mac), "52:54:%02x:%02x:%02x:%02x", h >> 24 & 0xff, h >> 16 & 0xff,
                 cl->net.subnet, 10 + i);
        if (mkdir(vmdir, 0700) < 0 || (r = write_text(vmdir, "tap", "%s\n", tap)) < 0) {
            vhpc_err_set(err, -errno, "creating %s", vmdir);
            goto fail;
        }
        if ((r = vhpc_net_add_tap(&cl->net, tap, err)) < 0)
            goto fail;
        snprintf(append, sizeof(append), "vhpc.ip=%s/24 vhpc.gw=%s vhpc.hosts=%s vhpc.job=%" PRIu64,
                 cl->ips[i], cl->net.host_ip, hosts, cl->job);
        char ivc[PATH_MAX];
        snprintf(ivc, sizeof(ivc), "%s/ivc.sock", cl->dir);
        struct vhpc_vm_config vc = {
            .name = name,
            .dir = vmdir,
            .kernel = spec->kernel,
            .initrd = spec->initrd,
            .rootfs = spec->rootfs && spec->rootfs[0] ? spec->rootfs : NULL,
            .append = append,
            .vcpus = spec->vcpus,
            .mem_mib = spec->mem_mib,
            .accel = spec->accel,
            .ivc_socket = ivc,
            .tap = tap,
            .mac = mac,
            .netns = cl->net.ns,
        };
        if ((r = vhpc_vm_start(&vc, &cl->vms[i], err)) < 0)
            goto fail;
        cl->nvms = i + 1;
    }
    return 0;
fail : {
    vhpc_err_t ignore;
    vhpc_cluster_down(cl, 0, &ignore);
}
    return r;
}

/* The first failure of a teardown is the one reported; it goes on past it. */
static void first(int r, const vhpc_err_t *e, int *res, vhpc_err_t *err)
{
    if (r < 0 && *res == 0) {
        *res = r;
        if (err)
            *err = *e;
    }
}

/* Remove what the state directory `dir` records; idempotent, and goes on
 * past what fails (the first failure is returned, the state directory is
 * then kept for vhpc gc).  The bridge, taps and nftables table go with the
 * namespace, when the last QEMU and the keeper are gone. */
static int teardown_dir(const char *dir, int grace_ms, vhpc_err_t *err)
{
    int res = 0;
    vhpc_err_t e = {0};
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strncmp(de->d_name, "vm", 2) != 0)
                continue;
            char vmdir[VHPC_DIR_MAX];
            snprintf(vmdir, sizeof(vmdir), "%.200s/%.40s", dir, de->d_name);
            struct vhpc_vm vm = {.pid = read_pid(vmdir, "qemu.pid")};
            snprintf(vm.name, sizeof(vm.name), "%.40s", de->d_name);
            snprintf(vm.qmp_path, sizeof(vm.qmp_path), "%.*s/qmp.sock", VHPC_DIR_MAX - 1, vmdir);
            if (running(vm.pid, "qemu"))
                first(vhpc_vm_stop(&vm, grace_ms, &e), &e, &res, err);
        }
        closedir(d);
    }
    first(vhpc_ns_stop(read_pid(dir, "netns.pid"), &e), &e, &res, err);
    first(stop_pid(read_pid(dir, "ivcd.pid"), "ivcd", 2000, &e), &e, &res, err);
    if (res == 0)
        first(vhpc_rm_tree(dir, &e), &e, &res, err);
    if (res < 0)
        vhpc_err_wrap(err, "removing cluster %s", dir);
    return res;
}

int vhpc_cluster_down(struct vhpc_cluster *cl, int grace_ms, vhpc_err_t *err)
{
    int res = 0;
    vhpc_err_t e = {0};
    for (int i = 0; i < cl->nvms; i++)
        first(vhpc_vm_stop(&cl->vms[i], grace_ms, &e), &e, &res, err);
    int r = teardown_dir(cl->dir, 0, res == 0 ? err : NULL);
    return res < 0 ? res : r;
}

int vhpc_cluster_load(const char *name, struct vhpc_cluster *cl, vhpc_err_t *err)
{
    char buf[64];
    memset(cl, 0, sizeof(*cl));
    if (vhpc_check_cluster_name(name, err) < 0)
        return -EINVAL; /* never a path outside the run directory */
    snprintf(cl->name, sizeof(cl->name), "%s", name);
    snprintf(cl->dir, sizeof(cl->dir), "%s/clusters/%s", vhpc_run_dir(), name);
    int r = read_text(cl->dir, "job", buf, sizeof(buf));
    if (r == -ENOENT || r == -ENOTDIR)
        return vhpc_err_setmsg(err, -ENOENT, "no cluster named '%s' (vhpc vm list shows them)",
                               name);
    if (r < 0)
        return vhpc_err_set(err, r,
                            "cluster '%s' (%s): cannot read its state (each user's clusters "
                            "are in a run directory of their own; $VHPC_RUN_DIR names another)",
                            name, cl->dir);
    cl->job = strtoull(buf, NULL, 10);
    cl->net.ns = read_pid(cl->dir, "netns.pid");
    read_text(cl->dir, "bridge", cl->net.bridge, sizeof(cl->net.bridge));
    char keyf[VHPC_DIR_MAX], *key;
    size_t keylen;
    snprintf(keyf, sizeof(keyf), "%s/job.key", cl->dir);
    if ((r = vhpc__read_file(keyf, &key, &keylen, err)) < 0)
        return vhpc_err_wrap(err, "cluster '%s'", name);
    if (keylen != sizeof(cl->key)) {
        free(key);
        return vhpc_err_setmsg(err, -EPROTO, "cluster '%s': %s is not a %zu-byte key", name, keyf,
                               sizeof(cl->key));
    }
    memcpy(cl->key, key, sizeof(cl->key));
    free(key);
    for (int i = 0; i < VHPC_MAX_VMS; i++) {
        struct vhpc_vm *vm = &cl->vms[i];
        char dir[VHPC_DIR_MAX];
        snprintf(dir, sizeof(dir), "%s/vm%d", cl->dir, i);
        if (access(dir, F_OK) != 0)
            break;
        snprintf(vm->name, sizeof(vm->name), "vm%d", i);
        snprintf(vm->dir, sizeof(vm->dir), "%s", dir);
        snprintf(vm->qmp_path, sizeof(vm->qmp_path), "%s/qmp.sock", dir);
        snprintf(vm->agent_path, sizeof(vm->agent_path), "%s/agent.sock", dir);
        snprintf(vm->console_path, sizeof(vm->console_path), "%s/console.log", dir);
        vm->pid = read_pid(vm->dir, "qemu.pid");
        cl->nvms = i + 1;
    }
    return 0;
}

void vhpc_cluster_env(const struct vhpc_cluster *cl, int i, struct vhpc_env_buf *buf,
                      const char *env[5])
{
    snprintf(buf->s[0], sizeof(buf->s[0]), "VHPC_CLUSTER=%s", cl->name);
    snprintf(buf->s[1], sizeof(buf->s[1]), "VHPC_JOB=%" PRIu64, cl->job);
    snprintf(buf->s[2], sizeof(buf->s[2]), "VHPC_VM=%d", i);
    snprintf(buf->s[3], sizeof(buf->s[3]), "VHPC_NVMS=%d", cl->nvms);
    for (int k = 0; k < 4; k++)
        env[k] = buf->s[k];
    env[4] = NULL;
}

int vhpc_gc(bool all, void (*report)(const char *line, void *arg), void *arg, vhpc_err_t *err)
{
    char clusters[VHPC_DIR_MAX], line[VHPC_DIR_MAX + 64];
    int n = 0;
    snprintf(clusters, sizeof(clusters), "%s/clusters", vhpc_run_dir());
    DIR *d = opendir(clusters);
    if (!d)
        return errno == ENOENT ? 0 : vhpc_err_set(err, -errno, "reading %s", clusters);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char dir[VHPC_DIR_MAX], owner[32];
        snprintf(dir, sizeof(dir), "%.150s/%.64s", clusters, e->d_name);
        if (read_text(dir, "owner", owner, sizeof(owner)) == 0) {
            if (strcmp(owner, "detached") == 0) {
                if (!all)
                    continue;
            } else if (running((pid_t)strtol(owner, NULL, 10), "vhpc")) {
                continue; /* its vhpc run is alive and will clean up */
            }
        }
        vhpc_err_t e2 = {0};
        if (teardown_dir(dir, 0, &e2) < 0) {
            snprintf(line, sizeof(line), "could not remove cluster %.64s: %.200s", e->d_name,
                     e2.msg);
        } else {
            snprintf(line, sizeof(line), "removed cluster %.64s", e->d_name);
            n++;
        }
        if (report)
            report(line, arg);
    }
    closedir(d);
    return n;
}
