/*
 * init.c - what vhpc-agent does for the guest besides serving the host.
 *
 * As PID 1 of a minimal image: mount the kernel file systems, load the
 * image's modules (/etc/vhpc/modules), set the hostname and the network
 * from the kernel command line (net.c), and at the end stop every process,
 * sync and power off.  As PID 1 of a full image's boot initramfs: load the
 * modules, then switch to the image's root and its init (root.c).
 *
 * As the service of a full image (`--service`, started by systemd): the
 * same guest set-up as PID 1 minus mounts and modules (hostname, network,
 * /etc/hosts and /etc/vhpc/hostfile, VHPC_JOB, /etc/vhpc/env), and a
 * SHUTDOWN from the host asks init to power off (SIGRTMIN+4 to systemd: no
 * D-Bus, no systemctl), with a direct poweroff should init not get there.
 * Otherwise (tests, a plain service) nothing here runs.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <stdbool.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

static void mount_one(const char *src, const char *dir, const char *type, unsigned long flags,
                      const char *data, mode_t mode)
{
    mkdir(dir, mode);
    if (mount(src, dir, type, flags, data) < 0 && errno != EBUSY)
        agent_log("mount %s on %s: %s", type, dir, strerror(errno));
}

/* True if `dir` is missing or has no entries besides . and .. */
static bool dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return true;
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)))
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

void init_early(void)
{
    const unsigned long nosuid = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    mount_one("proc", "/proc", "proc", nosuid, NULL, 0555);
    mount_one("sysfs", "/sys", "sysfs", nosuid, NULL, 0555);
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755);
    mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "gid=5,mode=0620,ptmxmode=0666", 0755);
    mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
    /* /tmp and /run are already writable on the initramfs; a tmpfs over
     * them would hide what the image put there (an added program built
     * under /tmp, say), so only an empty one gets its own tmpfs. */
    if (dir_empty("/tmp"))
        mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
    if (dir_empty("/run"))
        mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755);
    /* The kernel gave init the initramfs's /dev/console if it had one; the
     * devtmpfs one is there now in any case. */
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) {
        for (int i = 0; i < 3; i++)
            dup2(fd, i);
        if (fd > 2)
            close(fd);
    }
    umask(022);
}

bool init_cmdline(const char *key, char *buf, size_t len)
{
    char line[4096];
    size_t klen = strlen(key);
    int fd = open(agent.cmdline_path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, line, sizeof(line) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return false;
    line[n] = 0;
    for (char *save = NULL, *w = strtok_r(line, " \t\n", &save); w;
         w = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(w, key, klen) == 0 && w[klen] == '=') {
            snprintf(buf, len, "%s", w + klen + 1);
            return true;
        }
    }
    return false;
}

/* /etc/vhpc/modules: one module per line, in load order (dependencies
 * first), "PATH [PARAMS]"; a relative PATH is under /lib/modules/RELEASE.
 * A module file under /lib/modules is removed once loaded: the initramfs
 * lives in RAM, and the kernel has its own copy. */
static void load_modules(void)
{
    FILE *f = fopen("/etc/vhpc/modules", "re");
    struct utsname u;
    char line[1024];
    if (!f)
        return;
    uname(&u);
    while (fgets(line, sizeof(line), f)) {
        char path[1200], *p = line + strspn(line, " \t");
        p[strcspn(p, "\n")] = 0;
        if (!*p || *p == '#')
            continue;
        char *params = p + strcspn(p, " \t");
        if (*params)
            *params++ = 0;
        if (*p == '/')
            snprintf(path, sizeof(path), "%s", p);
        else
            snprintf(path, sizeof(path), "/lib/modules/%s/%s", u.release, p);
        int flags = 0;
        const char *dot = strrchr(path, '.');
        if (dot && (!strcmp(dot, ".xz") || !strcmp(dot, ".zst") || !strcmp(dot, ".gz")))
            flags = MODULE_INIT_COMPRESSED_FILE;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || (syscall(SYS_finit_module, fd, params, flags) < 0 && errno != EEXIST))
            agent_log("loading module %s: %s", path, strerror(errno));
        else if (agent.pid1 && strncmp(path, "/lib/modules/", 13) == 0)
            unlink(path);
        if (fd >= 0)
            close(fd);
    }
    fclose(f);
}

/* /etc/vhpc/env: "KEY=VALUE" lines the image wants in the environment of
 * everything the agent runs (e.g. Open MPI's settings in MPI images). */
static void load_env(void)
{
    FILE *f = fopen("/etc/vhpc/env", "re");
    char line[4096];
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (!line[0] || line[0] == '#')
            continue;
        if (!eq || eq == line) {
            agent_log("/etc/vhpc/env: '%s' is not KEY=VALUE", line);
            continue;
        }
        *eq = 0;
        setenv(line, eq + 1, 1);
    }
    fclose(f);
}

/* The guest's settings, PID 1 or service alike. */
static void setup_guest(void)
{
    char name[65];
    load_env();
    /* The cluster's IVC job id, for every process (a rank started through
     * vhpc-rsh has no other way to learn it). */
    char job[32];
    if (init_cmdline("vhpc.job", job, sizeof(job)))
        setenv("VHPC_JOB", job, 1);
    if (init_cmdline("vhpc.hostname", name, sizeof(name)) && sethostname(name, strlen(name)) < 0)
        agent_log("sethostname %s: %s", name, strerror(errno));
    net_setup();
}

void init_system(void)
{
    load_modules();
    if (root_wanted())
        root_switch(); /* does not return */
    setup_guest();
}

void init_service(void)
{
    setup_guest();
}

static void reap_for(int ms)
{
    for (int t = 0; t < ms; t += 20) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
            return;
        usleep(20000);
    }
}

void init_poweroff(int kind)
{
    agent_log("%s", kind == AGENT_SHUTDOWN_REBOOT ? "rebooting" : "powering off");
    kill(-1, SIGTERM);
    reap_for(2000);
    kill(-1, SIGKILL);
    reap_for(500);
    sync();
    reboot(kind == AGENT_SHUTDOWN_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF);
    agent_log("reboot: %s", strerror(errno));
    for (;;) /* PID 1 must not exit: the kernel would panic */
        pause();
}

/* Ask init (systemd) to power off or reboot the machine: it stops every
 * service, this agent too (SIGTERM, which now simply ends it).  If nothing
 * happens within SERVICE_POWEROFF_S, power off directly. */
#define SERVICE_POWEROFF_S 30

void init_service_poweroff(int kind)
{
    bool rb = kind == AGENT_SHUTDOWN_REBOOT;
    agent_log("asking init to %s", rb ? "reboot" : "power off");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    signal(SIGTERM, SIG_DFL);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    if (kill(1, rb ? SIGRTMIN + 5 : SIGRTMIN + 4) < 0)
        agent_log("signalling init: %s", strerror(errno));
    else
        sleep(SERVICE_POWEROFF_S);
    agent_log("init did not %s; doing it directly", rb ? "reboot" : "power off");
    sync();
    reboot(rb ? RB_AUTOBOOT : RB_POWER_OFF);
    agent_log("reboot: %s", strerror(errno));
    exit(1);
}
