/*
 * full.c - full images (full.h): debootstrap a Debian root, make it a job
 * VM's system (vhpc-agent as a systemd service, settings, trimming),
 * describe it (OS, packages, libraries), pack it as squashfs, build the
 * boot initramfs that mounts it and commit the three as an image
 * (vhpc_image_commit, as the minimal build does).
 *
 * Compression: measured under TCG with a systemd + hello image (bench
 * numbers in the commit and README): lz4 decompresses fastest in the guest,
 * where every instruction is emulated, and booting reads only a fraction
 * of the image, so the larger blob costs less than the slower boot of
 * gzip/xz/zstd.
 */
#include "full.h"
#include "guest_abi.h"
#include "mpi.h"
#include "cpio.h"
#include "kernel.h"
#include "progress.h"
#include "vhpc/store.h"
#include "fs.h"
#include "paths.h"
#include "proc.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bump when what a build does changes (units, trimming, layout): images
 * built by an older recipe then no longer count as the same inputs. */
#define RECIPE 2

/* Always in the root besides what is asked for. */
static const char *const base_packages[] = {"systemd", "systemd-sysv", NULL};

/* Units a job VM does without (symlinked to /dev/null). */
static const char *const masked_units[] = {
    "getty.target",                 /* the console is a log file: nobody logs in */
    "systemd-firstboot.service",    /* would prompt on the console */
    "apt-daily.timer",              /* no upgrades inside a job */
    "apt-daily-upgrade.timer",      /* */
    "dpkg-db-backup.timer",         /* */
    "e2scrub_all.timer",            /* no ext4 in the VM */
    "e2scrub_reap.service",         /* */
    "fstrim.timer",                 /* no discard on a read-only squashfs + tmpfs */
    "systemd-tmpfiles-clean.timer", /* a job VM does not live for days */
    /* The root has no kernel modules (the boot initramfs loaded what the
     * VM needs; the kernel's 90 MB of modules stay out), so these can only
     * fail: */
    "modprobe@.service",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "proc-sys-fs-binfmt_misc.automount", /* needs autofs4 */
    NULL,
};

/* Generators for what a job VM never has (encrypted, verity or integrity
 * disks, GPT partitions, hibernation, offline updates, consoles to log in
 * on, kernel command line options vhpc does not set): each is a program
 * linked with libsystemd-shared that takes ~0.2 s under TCG at every boot.
 * fstab, sysv (packages with only init scripts) and rc-local stay. */
static const char *const masked_generators[] = {
    "systemd-cryptsetup-generator",
    "systemd-veritysetup-generator",
    "systemd-integritysetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-system-update-generator",
    "systemd-getty-generator",
    "systemd-debug-generator",
    "systemd-run-generator",
    NULL,
};

static const char agent_unit[] =
    "# vhpc-agent: runs what the host asks (commands, files) over the virtio-serial\n"
    "# port and serves vhpc-rsh between the VMs.  Started early (no default\n"
    "# dependencies): it also sets up the hostname and the network from the\n"
    "# kernel command line.  But after systemd-tmpfiles-setup, which empties\n"
    "# /tmp: a command started before it lost its files there (mpirun's\n"
    "# session directory).\n"
    "[Unit]\n"
    "Description=vhpc agent\n"
    "DefaultDependencies=no\n"
    "Conflicts=shutdown.target\n"
    "After=systemd-tmpfiles-setup.service\n"
    "Before=sysinit.target shutdown.target\n"
    "StartLimitIntervalSec=0\n"
    "\n"
    "[Service]\n"
    "ExecStart=/usr/lib/vhpc/vhpc-agent --service\n"
    "Restart=always\n"
    "RestartSec=200ms\n"
    "Environment=HOME=/root\n"
    "KillMode=mixed\n"
    "TasksMax=infinity\n"
    "StandardOutput=journal+console\n"
    "StandardError=journal+console\n"
    "\n"
    "[Install]\n"
    "WantedBy=sysinit.target\n";

static const char journald_conf[] = "# vhpc: a job VM keeps its journal in RAM, small.\n"
                                    "[Journal]\nStorage=volatile\nRuntimeMaxUse=8M\n";

static const char dpkg_trim[] =
    "# vhpc: what full images leave out, for packages installed later too.\n"
    "path-exclude /usr/share/doc/*\n"
    "path-include /usr/share/doc/*/copyright\n"
    "path-exclude /usr/share/man/*\n"
    "path-exclude /usr/share/info/*\n"
    "path-exclude /usr/share/locale/*/*\n"
    "path-exclude /usr/share/lintian/*\n";

/* ---- small helpers -------------------------------------------------------- */

/* ROOT/rel into path, its directories made and whatever is there removed
 * (a symlink, e.g. resolv.conf, is replaced, never followed). */
static int root_path(const char *root, const char *rel, char path[PATH_MAX], vhpc_err_t *err)
{
    char dir[PATH_MAX];
    int r;
    if ((r = vhpc__pathf(err, path, PATH_MAX, "%s/%s", root, rel)) < 0)
        return r;
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = 0;
    if ((r = vhpc_mkdirs(dir, 0755, err)) < 0)
        return r;
    unlink(path);
    return 0;
}

/* A file in the root: ROOT/rel, created with its directories. */
static int put_text(const char *root, const char *rel, const char *text, unsigned mode,
                    vhpc_err_t *err)
{
    char path[PATH_MAX];
    int r = root_path(root, rel, path, err);
    return r < 0 ? r : vhpc__write_file(path, text, strlen(text), mode, err);
}

static int put_link(const char *root, const char *rel, const char *target, vhpc_err_t *err)
{
    char path[PATH_MAX];
    int r = root_path(root, rel, path, err);
    if (r < 0)
        return r;
    if (symlink(target, path) < 0)
        return vhpc_err_set(err, -errno, "symlink %s", path);
    return 0;
}

/* Remove what is in dir (not dir itself); keep_copyright keeps
 * <dir>/<pkg>/copyright (for /usr/share/doc). */
static void empty_dir(const char *dir, bool keep_copyright, bool only_dirs)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[PATH_MAX + 300];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof(p), "%.*s/%s", PATH_MAX, dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) < 0)
            continue;
        if (only_dirs && !S_ISDIR(st.st_mode))
            continue;
        if (keep_copyright && S_ISDIR(st.st_mode)) {
            DIR *sd = opendir(p);
            struct dirent *se;
            char q[PATH_MAX + 600];
            while (sd && (se = readdir(sd))) {
                if (!strcmp(se->d_name, ".") || !strcmp(se->d_name, "..") ||
                    !strcmp(se->d_name, "copyright"))
                    continue;
                snprintf(q, sizeof(q), "%s/%s", p, se->d_name);
                vhpc_rm_tree(q, NULL);
            }
            if (sd)
                closedir(sd);
            rmdir(p); /* only if it held no copyright file */
            continue;
        }
        vhpc_rm_tree(p, NULL);
    }
    if (d)
        closedir(d);
}

/* ---- debootstrap --------------------------------------------------------- */

struct boot_progress {
    struct vhpc_progress p;
    unsigned pkgs; /* packages retrieved or validated */
    int phase;     /* 0 downloading, 1 extracting, 2 unpacking, 3 configuring */
    char errors[1024];
    char missing[512]; /* "Couldn't find these debs: ..." */
    bool release_failed;
};

static void boot_line(char *line, void *arg)
{
    struct boot_progress *b = arg;
    static const char *const verbs[] = {"Retrieving ", "Validating ", "Extracting ", "Unpacking ",
                                        "Configuring "};
    if (!strncmp(line, "E: ", 3) || !strncmp(line, "W: ", 3)) {
        size_t l = strlen(b->errors);
        if (l < sizeof(b->errors) - 2)
            snprintf(b->errors + l, sizeof(b->errors) - l, "%s%s", l ? "; " : "", line + 3);
        const char *m = strstr(line, "Couldn't find these debs: ");
        if (m)
            snprintf(b->missing, sizeof(b->missing), "%s", m + 26);
        if (strstr(line, "Failed getting release file"))
            b->release_failed = true;
        return;
    }
    if (strncmp(line, "I: ", 3) != 0)
        return;
    const char *rest = line + 3;
    for (int v = 0; v < 5; v++) {
        size_t vl = strlen(verbs[v]);
        if (strncmp(rest, verbs[v], vl) != 0)
            continue;
        const char *what = rest + vl;
        char name[128];
        int words = 0;
        for (const char *s = what; *s;) {
            while (*s == ' ')
                s++;
            if (!*s)
                break;
            words++;
            while (*s && *s != ' ')
                s++;
        }
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(what, " ."), what);
        if (v < 2) {
            if (words != 2) /* "Retrieving Packages", "Retrieving InRelease" */
                return;
            b->pkgs++;
            vhpc_progress_set(&b->p, b->pkgs);
            if (b->p.mode == 1)
                vhpc_progress_step(&b->p, "%s %s", v == 0 ? "downloading" : "checking", name);
            return;
        }
        if (words != 1 || !strstr(what, "...")) /* "Unpacking required packages..." */
            return;
        int phase = v - 1;
        if (b->phase == 0) /* downloads done: now the total is known */
            b->p.total = (uint64_t)b->pkgs * 4;
        if (phase != b->phase && b->p.mode != 1)
            vhpc_progress_step(&b->p, "%s",
                               phase == 1   ? "extracting"
                               : phase == 2 ? "unpacking"
                                            : "configuring");
        b->phase = phase;
        if (b->p.done < b->p.total)
            vhpc_progress_add(&b->p, 1);
        if (b->p.mode == 1)
            vhpc_progress_step(&b->p, "%s %s",
                               phase == 1   ? "extracting"
                               : phase == 2 ? "unpacking"
                                            : "configuring",
                               name);
        return;
    }
}

static int debootstrap(const char *suite, const char *mirror, const char *cache,
                       const char *const *pkgs, const char *root, const char *log, vhpc_err_t *err)
{
    size_t n = 0, len = 16;
    for (; pkgs[n]; n++)
        len += strlen(pkgs[n]) + 1;
    char *include = malloc(len), cachearg[PATH_MAX + 16];
    struct boot_progress *b = calloc(1, sizeof(*b));
    if (!include || !b) {
        free(include);
        free(b);
        return vhpc_err_set(err, -ENOMEM, "debootstrap");
    }
    strcpy(include, "--include=");
    for (size_t i = 0; i < n; i++) {
        strcat(include, pkgs[i]);
        if (i + 1 < n)
            strcat(include, ",");
    }
    snprintf(cachearg, sizeof(cachearg), "--cache-dir=%s", cache);
    const char *argv[] = {
        "debootstrap", "--variant=minbase", include, cachearg, suite, root, mirror, NULL};
    const char *env[] = {"LC_ALL=C", "DEBIAN_FRONTEND=noninteractive",
                         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    char label[96];
    snprintf(label, sizeof(label), "debootstrap %s", suite);
    vhpc_progress_start_count(&b->p, label, 0);
    vhpc_progress_step(&b->p, "resolving packages");
    int r = vhpc__run_lines(argv, env, true, log, boot_line, b, err);
    if (r == 0)
        b->p.done = b->p.total;
    vhpc_progress_done(&b->p, r == 0);
    if (r > 0) {
        if (b->missing[0])
            r = vhpc_err_setmsg(err, -ENOENT,
                                "no package %s in Debian %s at %s (find the right name with "
                                "`apt-cache search WORD`, or `apt-cache policy NAME` to see "
                                "whether it exists)",
                                b->missing, suite, mirror);
        else if (b->release_failed)
            r = vhpc_err_setmsg(err, -EHOSTUNREACH,
                                "cannot get the release file of %s from %s: no network, or a "
                                "wrong mirror or suite (set $VHPC_MIRROR to a reachable Debian "
                                "mirror)",
                                suite, mirror);
        else
            r = vhpc_err_setmsg(err, -EIO, "debootstrap failed (status %d): %s; full log: %s", r,
                                b->errors[0] ? b->errors : "no message", log);
    }
    free(include);
    free(b);
    return r;
}

/* ---- making the root a job VM's system ------------------------------------ */

/* An ELF file's libraries must be in the root: ask the root's own ldd. */
static int check_libs(const char *root, const char *image_path, vhpc_err_t *err)
{
    char path[PATH_MAX], magic[4];
    int r = vhpc__pathf(err, path, sizeof(path), "%s%s", root, image_path);
    if (r < 0)
        return r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, magic, 4) : -1;
    if (fd >= 0)
        close(fd);
    if (n != 4 || memcmp(magic, "\177ELF", 4) != 0)
        return 0;
    const char *argv[] = {"chroot", root, "/usr/bin/ldd", image_path, NULL};
    char out[8192], ebuf[512], missing[1024] = "";
    r = vhpc__run(argv, NULL, out, sizeof(out), ebuf, sizeof(ebuf), err);
    if (r < 0)
        return r;
    for (char *save, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (!strstr(l, "=> not found"))
            continue;
        while (*l == ' ' || *l == '\t')
            l++;
        size_t ml = strlen(missing);
        snprintf(missing + ml, sizeof(missing) - ml, "%s%.*s", ml ? ", " : "", (int)strcspn(l, " "),
                 l);
    }
    if (missing[0])
        return vhpc_err_setmsg(err, -ENOENT,
                               "%s needs %s, which no package in the image provides (add the "
                               "package with --package; `apt-file search LIB` finds it)",
                               image_path, missing);
    return 0;
}

static int valid_image_path(const char *p)
{
    if (p[0] != '/' || strstr(p, "/../") || strstr(p, "/./") || strstr(p, "//"))
        return 0;
    size_t n = strlen(p);
    return n > 1 && p[n - 1] != '/' && !(n >= 3 && !strcmp(p + n - 3, "/.."));
}

static int setup_system(const struct vhpc_full_spec *spec, const char *root,
                        const struct vhpc_kernel *k, const char *suite, const char *mirror,
                        vhpc_err_t *err)
{
    char path[PATH_MAX + 128], text[8192];
    int r;
    /* The agent and vhpc-rsh. */
    if ((r = vhpc__pathf(err, path, sizeof(path), "%s/usr/lib/vhpc", root)) < 0 ||
        (r = vhpc_mkdirs(path, 0755, err)) < 0 ||
        (r = vhpc__pathf(err, path, sizeof(path), "%s/usr/lib/vhpc/vhpc-agent", root)) < 0 ||
        (r = vhpc__copy_file(spec->agent_path, path, 0755, err)) < 0)
        return r;
    if (spec->rsh_path &&
        ((r = vhpc__pathf(err, path, sizeof(path), "%s/usr/bin/vhpc-rsh", root)) < 0 ||
         (r = vhpc__copy_file(spec->rsh_path, path, 0755, err)) < 0))
        return r;
    if ((r = put_text(root, "usr/lib/systemd/system/vhpc-agent.service", agent_unit, 0644, err)) <
            0 ||
        (r = put_link(root, "etc/systemd/system/sysinit.target.wants/vhpc-agent.service",
                      "/lib/systemd/system/vhpc-agent.service", err)) < 0 ||
        (r = put_link(root, "etc/systemd/system/default.target",
                      "/lib/systemd/system/multi-user.target", err)) < 0)
        return r;
    /* systemd for a job VM. */
    for (size_t i = 0; masked_units[i]; i++) {
        snprintf(text, sizeof(text), "etc/systemd/system/%s", masked_units[i]);
        if ((r = put_link(root, text, "/dev/null", err)) < 0)
            return r;
        snprintf(path, sizeof(path), "%s/etc/systemd/system/timers.target.wants/%s", root,
                 masked_units[i]);
        unlink(path);
    }
    for (size_t i = 0; masked_generators[i]; i++) {
        snprintf(text, sizeof(text), "etc/systemd/system-generators/%s", masked_generators[i]);
        if ((r = put_link(root, text, "/dev/null", err)) < 0)
            return r;
    }
    char dbus1[PATH_MAX + 32], dbus2[PATH_MAX + 32];
    snprintf(dbus1, sizeof(dbus1), "%s/usr/bin/dbus-daemon", root);
    snprintf(dbus2, sizeof(dbus2), "%s/usr/bin/dbus-broker", root);
    if (access(dbus1, F_OK) < 0 && access(dbus2, F_OK) < 0 &&
        (r = put_link(root, "etc/systemd/system/systemd-logind.service", "/dev/null", err)) < 0)
        return r;
    if ((r = put_text(root, "etc/systemd/journald.conf.d/vhpc.conf", journald_conf, 0644, err)) <
            0 ||
        (r = put_text(root, "etc/dpkg/dpkg.cfg.d/vhpc-trim", dpkg_trim, 0644, err)) < 0)
        return r;
    /* Identity and names: per VM, set at boot. */
    if ((r = put_text(root, "etc/machine-id", "", 0444, err)) < 0 ||
        (r = put_text(root, "etc/hostname", "localhost\n", 0644, err)) < 0 ||
        (r = put_text(root, "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n", 0644, err)) <
            0 ||
        (r = put_text(root, "etc/resolv.conf", "", 0644, err)) < 0)
        return r;
    snprintf(path, sizeof(path), "%s/var/lib/dbus/machine-id", root);
    unlink(path);
    snprintf(text, sizeof(text), "deb %s %s main\n", mirror, suite);
    if ((r = put_text(root, "etc/apt/sources.list", text, 0644, err)) < 0)
        return r;
    /* No update-on-boot units (ldconfig, hwdb, catalog: ConditionNeedsUpdate):
     * /etc and /var are as new as /usr (times are clamped below). */
    if ((r = put_text(root, "etc/.updated", "", 0644, err)) < 0 ||
        (r = put_text(root, "var/.updated", "", 0644, err)) < 0)
        return r;
    /* vhpc's own files. */
    snprintf(text, sizeof(text), "kernel_version=%s\nkernel_sha256=%s\nsuite=%s\n", k->version,
             k->sha256, suite);
    if ((r = put_text(root, "etc/vhpc/image", text, 0644, err)) < 0)
        return r;
    size_t used = 0;
    text[0] = 0;
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        int w = snprintf(text + used, sizeof(text) - used, "%s\n", spec->env[i]);
        if (w < 0 || (size_t)w >= sizeof(text) - used)
            return vhpc_err_setmsg(err, -E2BIG, "--env: more than %zu bytes", sizeof(text));
        used += (size_t)w;
    }
    if (used && (r = put_text(root, "etc/vhpc/env", text, 0644, err)) < 0)
        return r;
    for (size_t i = 0; spec->files && spec->files[i]; i++) {
        const char *f = spec->files[i], *eq = strchr(f, '=');
        char host[PATH_MAX], dir[sizeof(path)];
        snprintf(host, sizeof(host), "%.*s", (int)(eq - f), f);
        struct stat st;
        if (stat(host, &st) < 0)
            return vhpc_err_set(err, -errno, "--file %s", f);
        if ((r = vhpc__pathf(err, path, sizeof(path), "%s%s", root, eq + 1)) < 0)
            return r;
        snprintf(dir, sizeof(dir), "%s", path);
        *strrchr(dir, '/') = 0;
        if ((r = vhpc_mkdirs(dir, 0755, err)) < 0 ||
            (r = vhpc__copy_file(host, path, st.st_mode & 07777, err)) < 0)
            return vhpc_err_wrap(err, "--file %s", f);
    }
    for (size_t i = 0; spec->files && spec->files[i]; i++)
        if ((r = check_libs(root, strchr(spec->files[i], '=') + 1, err)) < 0)
            return vhpc_err_wrap(err, "--file %s", spec->files[i]);
    return 0;
}

/* The suite's Release date (seconds), from the index debootstrap kept; 0
 * if not found. */
static time_t release_date(const char *root)
{
    char dir[PATH_MAX + 32], path[PATH_MAX + 300], line[512];
    snprintf(dir, sizeof(dir), "%s/var/lib/apt/lists", root);
    DIR *d = opendir(dir);
    struct dirent *e;
    time_t t = 0;
    while (d && !t && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (!(n > 8 && !strcmp(e->d_name + n - 8, "_Release")) &&
            !(n > 10 && !strcmp(e->d_name + n - 10, "_InRelease")))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f)) {
            struct tm tm = {0};
            if (strncmp(line, "Date: ", 6) != 0)
                continue;
            /* "Date: Sat, 10 Jun 2023 08:54:45 UTC" */
            const char *s = strchr(line, ',');
            if (s && strptime(s + 1, " %d %b %Y %H:%M:%S", &tm))
                t = timegm(&tm);
            break;
        }
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return t;
}

static void trim(const char *root)
{
    static const struct {
        const char *dir;
        bool keep_copyright, only_dirs;
    } dirs[] = {
        {"var/lib/apt/lists", false, false},
        {"usr/share/doc", true, false},
        {"usr/share/man", false, false},
        {"usr/share/info", false, false},
        {"usr/share/locale", false, true}, /* locale.alias stays */
        {"usr/share/lintian", false, false},
        {"var/log", false, false},
        {"dev", false, false},
        {"run", false, false},
        {"tmp", false, false},
        {"var/tmp", false, false},
        {"var/cache/apt/archives", false, false},
    };
    char p[PATH_MAX + 64];
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", root, dirs[i].dir);
        empty_dir(p, dirs[i].keep_copyright, dirs[i].only_dirs);
    }
    /* apt wants these back. */
    snprintf(p, sizeof(p), "%s/var/lib/apt/lists/partial", root);
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/var/cache/apt/archives/partial", root);
    mkdir(p, 0700);
    static const char *const files[] = {
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/lib/dpkg/statoverride-old",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
        "var/cache/debconf/passwords.dat-old",
        "etc/passwd-",
        "etc/group-",
        "etc/shadow-",
        "etc/gshadow-",
        "etc/subuid-",
        "etc/subgid-",
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", root, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof(p), "%s/debootstrap", root);
    vhpc_rm_tree(p, NULL);
}

/* Clamp every time stamp to `t` and add up the regular files' bytes. */
static time_t clamp_to;
static uint64_t tree_bytes;
static int clamp_one(const char *p, const struct stat *st, int type, struct FTW *f)
{
    (void)type;
    (void)f;
    if (S_ISREG(st->st_mode))
        tree_bytes += (uint64_t)st->st_size;
    if (clamp_to && st->st_mtime > clamp_to) {
        struct timespec ts[2] = {{clamp_to, 0}, {clamp_to, 0}};
        utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
    }
    return 0;
}

/* ---- describing the root -------------------------------------------------- */

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The shared libraries of the root: the sonames its loader's cache knows
 * (`ldconfig -r ROOT -p`) and the .so names in the standard directories. */
static json_t *root_libs(const char *root)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
#define ADD(s)                                                                                     \
    do {                                                                                           \
        if (n == cap) {                                                                            \
            char **g = realloc(names, (cap = cap ? cap * 2 : 512) * sizeof(*names));               \
            if (!g)                                                                                \
                goto done;                                                                         \
            names = g;                                                                             \
        }                                                                                          \
        if ((names[n] = strdup(s)))                                                                \
            n++;                                                                                   \
    } while (0)
    const char *argv[] = {"ldconfig", "-r", root, "-p", NULL};
    size_t cap_out = 4 << 20;
    char *out = malloc(cap_out), ebuf[256];
    vhpc_err_t e2 = {0};
    if (out && vhpc__run(argv, NULL, out, cap_out, ebuf, sizeof(ebuf), &e2) == 0) {
        /* "\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6" */
        for (char *save, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (*l != '\t' && *l != ' ')
                continue;
            while (*l == '\t' || *l == ' ')
                l++;
            l[strcspn(l, " ")] = 0;
            if (strstr(l, ".so"))
                ADD(l);
        }
    }
    free(out);
    static const char *const dirs[] = {"usr/lib/x86_64-linux-gnu", "usr/lib", "usr/lib64",
                                       "usr/local/lib"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof(p), "%s/%s", root, dirs[i]);
        DIR *d = opendir(p);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strncmp(e->d_name, "lib", 3) == 0 && strstr(e->d_name, ".so") &&
                (e->d_type == DT_REG || e->d_type == DT_LNK))
                ADD(e->d_name);
        }
        if (d)
            closedir(d);
    }
#undef ADD
done:;
    json_t *a = json_array();
    if (names)
        qsort(names, n, sizeof(*names), cmp_strp);
    for (size_t i = 0; i < n; i++)
        if (!i || strcmp(names[i], names[i - 1]) != 0)
            json_array_append_new(a, json_string(names[i]));
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return a;
}

/* ---- mksquashfs ----------------------------------------------------------- */

struct sq_progress {
    struct vhpc_progress p;
};

static void sq_line(char *line, void *arg)
{
    struct sq_progress *s = arg;
    /* "[=====-----]  3726/3726 100%" */
    char *pct = strrchr(line, '%');
    if (!pct || !strchr(line, '['))
        return;
    char *q = pct;
    while (q > line && isdigit((unsigned char)q[-1]))
        q--;
    int v = atoi(q);
    if (v >= 0 && v <= 100 && s->p.total)
        vhpc_progress_set(&s->p, s->p.total * (uint64_t)v / 100);
}

static int squash(const char *root, const char *out, const char *comp, time_t t, uint64_t bytes,
                  vhpc_err_t *err)
{
    char when[32];
    snprintf(when, sizeof(when), "%lld", (long long)t);
    const char *argv[24] = {"mksquashfs", root, out, "-noappend", "-comp", comp, "-b", "128K"};
    size_t a = 8;
    if (t) {
        argv[a++] = "-mkfs-time";
        argv[a++] = when;
    }
    argv[a++] = "-reproducible";
    argv[a] = NULL;
    struct sq_progress *s = calloc(1, sizeof(*s));
    if (!s)
        return vhpc_err_set(err, -ENOMEM, "mksquashfs");
    char label[64];
    snprintf(label, sizeof(label), "squashfs (%s)", comp);
    vhpc_progress_start(&s->p, label, bytes);
    int r = vhpc__run_lines(argv, NULL, false, NULL, sq_line, s, err);
    if (r == 0)
        vhpc_progress_set(&s->p, bytes);
    vhpc_progress_done(&s->p, r == 0);
    free(s);
    if (r > 0)
        return vhpc_err_setmsg(err, -EIO, "mksquashfs -comp %s failed (status %d)", comp, r);
    return r;
}

/* ---- inputs ---------------------------------------------------------------- */

static int valid_package(const char *p)
{
    size_t n = strlen(p);
    if (n < 2 || n > 100 || !(islower((unsigned char)p[0]) || isdigit((unsigned char)p[0])))
        return 0;
    for (; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || strchr("+-.", *p)))
            return 0;
    return 1;
}

static int valid_word(const char *s)
{
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("-_.", *s)))
            return 0;
    return 1;
}

/* The canonical inputs (and the sorted package list to install). */
static int make_inputs(const struct vhpc_full_spec *spec, const char *suite, const char *mirror,
                       const char *comp, const struct vhpc_kernel *k, json_t **out,
                       char ***pkgs_out, vhpc_err_t *err)
{
    size_t n = 0;
    for (size_t i = 0; spec->packages && spec->packages[i]; i++)
        n++;
    char **pkgs = calloc(n + 3, sizeof(*pkgs));
    json_t *in = json_object(), *jp = json_array(), *je = json_array();
    char hex[65];
    int r = 0;
    if (!pkgs || !in || !jp || !je) {
        r = vhpc_err_set(err, -ENOMEM, "inputs");
        goto fail;
    }
    size_t m = 0;
    for (size_t i = 0; base_packages[i]; i++)
        pkgs[m++] = (char *)base_packages[i];
    for (size_t i = 0; i < n; i++) {
        if (!valid_package(spec->packages[i])) {
            r = vhpc_err_setmsg(err, -EINVAL,
                                "--package '%s': not a Debian package name (lower case letters, "
                                "digits, '+', '-', '.'; no versions)",
                                spec->packages[i]);
            goto fail;
        }
        pkgs[m++] = (char *)spec->packages[i];
    }
    qsort(pkgs, m, sizeof(*pkgs), cmp_strp);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (!u || strcmp(pkgs[i], pkgs[u - 1]) != 0)
            pkgs[u++] = pkgs[i];
    pkgs[u] = NULL;
    for (size_t i = 0; i < u; i++)
        json_array_append_new(jp, json_string(pkgs[i]));

    json_t *files = json_object(); /* image path -> sha256, sorted when dumped */
    for (size_t i = 0; spec->files && spec->files[i]; i++) {
        const char *f = spec->files[i], *eq = strchr(f, '=');
        char host[PATH_MAX];
        struct stat st;
        if (!eq || eq == f || (size_t)(eq - f) >= sizeof(host) || !valid_image_path(eq + 1)) {
            json_decref(files);
            r = vhpc_err_setmsg(err, -EINVAL, "--file '%s': expected HOST=/IMAGE/PATH", f);
            goto fail;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(eq - f), f);
        if (stat(host, &st) < 0 || !S_ISREG(st.st_mode)) {
            int e = errno;
            json_decref(files);
            r = S_ISDIR(st.st_mode) ? vhpc_err_setmsg(err, -EISDIR,
                                                      "--file %s: a directory (give each file, "
                                                      "or package it)",
                                                      host)
                                    : vhpc_err_set(err, -e, "--file %s", host);
            goto fail;
        }
        if ((r = vhpc_sha256_file(host, hex, err)) < 0) {
            json_decref(files);
            goto fail;
        }
        json_object_set_new(files, eq + 1, json_string(hex));
    }
    for (size_t i = 0; spec->env && spec->env[i]; i++) {
        const char *e = spec->env[i], *eq = strchr(e, '=');
        if (!eq || eq == e || strchr(e, '\n')) {
            json_decref(files);
            r = vhpc_err_setmsg(err, -EINVAL, "--env '%s': expected KEY=VALUE", e);
            goto fail;
        }
        json_array_append_new(je, json_string(e));
    }
    char agent[65], rsh[65] = "";
    if ((r = vhpc_sha256_file(spec->agent_path, agent, err)) < 0 ||
        (spec->rsh_path && (r = vhpc_sha256_file(spec->rsh_path, rsh, err)) < 0)) {
        json_decref(files);
        goto fail;
    }
    json_object_set_new(in, "kind", json_string("full"));
    json_object_set_new(in, "recipe", json_integer(RECIPE));
    json_object_set_new(in, "suite", json_string(suite));
    json_object_set_new(in, "mirror", json_string(mirror));
    json_object_set_new(in, "packages", jp);
    json_object_set_new(in, "files", files);
    json_object_set_new(in, "env", je);
    json_object_set_new(in, "agent_sha256", json_string(agent));
    json_object_set_new(in, "rsh_sha256", rsh[0] ? json_string(rsh) : json_null());
    json_object_set_new(in, "kernel", json_string(k->version));
    json_object_set_new(in, "kernel_sha256", json_string(k->sha256));
    json_object_set_new(in, "compression", json_string(comp));
    *out = in;
    *pkgs_out = pkgs;
    return 0;
fail:
    free(pkgs);
    json_decref(in);
    json_decref(jp);
    json_decref(je);
    return r;
}

/* ---- the build ------------------------------------------------------------ */

struct full_build {
    /* An image made from the same inputs is in the store: its digest
     * (nothing was built and the fields below are empty). */
    char existing[65];
    char inputs_digest[65];
    char dir[PATH_MAX]; /* the work directory (under the store's tmp/) */
    /* What to commit (vhpc_image_commit, roles "kernel", "initrd", "rootfs"). */
    char kernel[PATH_MAX], initrd[PATH_MAX], rootfs[PATH_MAX];
    json_t *manifest; /* kind, os, os_name, kernel, packages, libs, inputs, inputs_digest, ... */
};

static void full_build_free(struct full_build *b)
{
    if (b->dir[0])
        vhpc_rm_tree(b->dir, NULL);
    json_decref(b->manifest);
    memset(b, 0, sizeof(*b));
}

static const char *env_or(const char *v, const char *var, const char *def)
{
    const char *e = getenv(var);
    return v && *v ? v : e && *e ? e : def;
}

/* What the spec and the environment chose, checked before anything runs. */
static int check_spec(const struct vhpc_full_spec *spec, const char *suite, const char *mirror,
                      const char *comp, vhpc_err_t *err)
{
    if (!valid_word(suite))
        return vhpc_err_setmsg(err, -EINVAL, "--suite '%s': not a Debian suite name", suite);
    if (strncmp(mirror, "http://", 7) != 0 && strncmp(mirror, "https://", 8) != 0 &&
        strncmp(mirror, "file:/", 6) != 0)
        return vhpc_err_setmsg(err, -EINVAL,
                               "mirror '%s': expected an http://, https:// or file:/ URL "
                               "($VHPC_MIRROR)",
                               mirror);
    static const char *const comps[] = {"gzip", "lzo", "lz4", "xz", "zstd", NULL};
    bool comp_ok = false;
    for (size_t i = 0; comps[i]; i++)
        comp_ok |= !strcmp(comp, comps[i]);
    if (!comp_ok)
        return vhpc_err_setmsg(err, -EINVAL,
                               "compression '%s': one of gzip, lzo, lz4, xz, zstd "
                               "($VHPC_FULL_COMPRESSION)",
                               comp);
    if (!spec->agent_path || access(spec->agent_path, R_OK) < 0)
        return vhpc_err_setmsg(err, -ENOENT, "vhpc-agent binary %s not found",
                               spec->agent_path ? spec->agent_path : "(none given)");
    return 0;
}

/* The deb cache (made if missing) and the build's work directory with
 * the paths in it; each buffer is PATH_MAX long. */
static int make_paths(const struct vhpc_full_spec *spec, struct full_build *out, char *cache,
                      char *root, char *log, char *conf, vhpc_err_t *err)
{
    int r;
    snprintf(cache, PATH_MAX, "%s", env_or(spec->deb_cache, "VHPC_DEB_CACHE", ""));
    if (!cache[0] &&
        (r = vhpc__pathf(err, cache, PATH_MAX, "%s/cache/debs", vhpc_store_root())) < 0)
        return r;
    if (cache[0] != '/')
        return vhpc_err_setmsg(err, -EINVAL, "deb cache '%s': must be an absolute path", cache);
    if ((r = vhpc_mkdirs(cache, 0755, err)) < 0)
        return r;
    if ((r = vhpc_image_workdir(out->dir, sizeof(out->dir), err)) < 0)
        return r;
    if ((r = vhpc__pathf(err, root, PATH_MAX, "%s/root", out->dir)) < 0 ||
        (r = vhpc__pathf(err, log, PATH_MAX, "%s/debootstrap.log", out->dir)) < 0 ||
        (r = vhpc__pathf(err, out->rootfs, sizeof(out->rootfs), "%s/rootfs.squashfs", out->dir)) <
            0 ||
        (r = vhpc__pathf(err, out->initrd, sizeof(out->initrd), "%s/initrd.cpio", out->dir)) < 0 ||
        (r = vhpc__pathf(err, conf, PATH_MAX, "%s/root.conf", out->dir)) < 0)
        return r;
    return 0;
}

/* The initramfs that boots a full image: the agent, the modules to mount
 * a squashfs under an overlay, and /etc/vhpc/root naming the root disk
 * (its serial, size and SHA-256). */
static int boot_initrd(const struct vhpc_full_spec *spec, const struct vhpc_kernel *k,
                       const char *conf, struct full_build *out, struct vhpc_initrd *ird,
                       vhpc_err_t *err)
{
    char confarg[PATH_MAX + 32], rootsha[65], text[512];
    struct stat sst;
    int r;
    if ((r = vhpc_sha256_file(out->rootfs, rootsha, err)) < 0)
        return r;
    if (stat(out->rootfs, &sst) < 0)
        return vhpc_err_set(err, -errno, "%s", out->rootfs);
    snprintf(text, sizeof(text),
             "# the root file system of this full image (see vhpc-agent, root.c)\n"
             "serial=" VHPC_ROOT_DISK_SERIAL
             "\nfstype=squashfs\nsize=%lld\nsha256=%s\ninit=/sbin/init\n",
             (long long)sst.st_size, rootsha);
    if ((r = vhpc__write_file(conf, text, strlen(text), 0644, err)) < 0)
        return r;
    snprintf(confarg, sizeof(confarg), "%s=/etc/vhpc/root", conf);
    const char *mods[] = {"squashfs", "overlay", NULL}, *files[] = {confarg, NULL};
    struct vhpc_image_spec is = {.name = "boot", .modules = mods, .files = files};
    if ((r = vhpc_initrd_build(&is, spec->agent_path, NULL, k, out->initrd, ird, err)) < 0) {
        vhpc_err_wrap(err, "the boot initramfs");
        return r;
    }
    return 0;
}

/* Build a full image in a work directory (or find that one made from the
 * same inputs is in the store: out->existing). */
static int full_build(const struct vhpc_full_spec *spec, struct full_build *out, vhpc_err_t *err)
{
    const char *suite = spec->suite && *spec->suite ? spec->suite : VHPC_FULL_SUITE;
    const char *mirror = env_or(spec->mirror, "VHPC_MIRROR", VHPC_FULL_MIRROR);
    const char *comp = env_or(spec->compression, "VHPC_FULL_COMPRESSION", VHPC_FULL_COMP);
    char cache[PATH_MAX], root[PATH_MAX], log[PATH_MAX], conf[PATH_MAX];
    struct vhpc_kernel k;
    struct vhpc_initrd ird = {0};
    struct vhpc_store *st = NULL;
    json_t *inputs = NULL, *pkgs = NULL, *libs = NULL;
    char **pkglist = NULL;
    int r;

    memset(out, 0, sizeof(*out));
    if ((r = check_spec(spec, suite, mirror, comp, err)) < 0)
        return r;
    if ((r = vhpc_kernel_ensure(&k, err)) < 0)
        return r;
    if ((r = make_inputs(spec, suite, mirror, comp, &k, &inputs, &pkglist, err)) < 0)
        return r;
    vhpc_json_digest(inputs, out->inputs_digest);

    /* Built before? */
    if ((r = vhpc_store_open(NULL, &st, err)) < 0)
        goto out;
    if (vhpc_store_find_inputs(st, out->inputs_digest, out->existing) == 0 &&
        vhpc_is_digest(out->existing)) {
        r = 0;
        goto out;
    }
    out->existing[0] = 0;

    if (geteuid() != 0) {
        r = vhpc_err_setmsg(err, -EPERM,
                            "building a full image needs root (debootstrap installs packages "
                            "as root in a chroot)");
        goto out;
    }
    if (!vhpc__have_program("debootstrap") || !vhpc__have_program("mksquashfs")) {
        r = vhpc_err_setmsg(err, -ENOENT,
                            "building a full image needs debootstrap and mksquashfs "
                            "(apt-get install debootstrap squashfs-tools, or make deps)");
        goto out;
    }
    if ((r = make_paths(spec, out, cache, root, log, conf, err)) < 0)
        goto out;

    /* 1. debootstrap */
    if ((r = debootstrap(suite, mirror, cache, (const char *const *)pkglist, root, log, err)) < 0) {
        /* Keep the log where it outlives the work directory (gc removes
         * it after an hour). */
        char kept[PATH_MAX + 64], msg[sizeof(err->msg)];
        snprintf(kept, sizeof(kept), "%s.debootstrap-%d.log", out->dir, (int)getpid());
        snprintf(msg, sizeof(msg), "%s", err->msg);
        if (rename(log, kept) == 0 && r == -EIO)
            vhpc_err_setmsg(err, r, "%.1500s (log kept as %s)", msg, kept);
        goto out;
    }
    /* 2. a job VM's system */
    if ((r = setup_system(spec, root, &k, suite, mirror, err)) < 0)
        goto out;
    /* 3. what it is, for matching */
    char path[PATH_MAX + 64], os[64], pretty[256];
    snprintf(path, sizeof(path), "%s/usr/lib/os-release", root);
    if (access(path, R_OK) < 0)
        snprintf(path, sizeof(path), "%s/etc/os-release", root);
    vhpc_os_release(path, os, sizeof(os), pretty, sizeof(pretty));
    snprintf(path, sizeof(path), "%s/var/lib/dpkg", root);
    pkgs = json_object();
    if ((r = vhpc_dpkg_packages(path, NULL, pkgs, err)) < 0)
        goto out;
    libs = root_libs(root);
    time_t t = release_date(root);
    /* 4. trimmed, times clamped, packed */
    trim(root);
    clamp_to = t;
    tree_bytes = 0;
    nftw(root, clamp_one, 32, FTW_PHYS | FTW_MOUNT);
    uint64_t bytes = tree_bytes;
    if ((r = squash(root, out->rootfs, comp, t, bytes, err)) < 0)
        goto out;
    vhpc_rm_tree(root, NULL); /* the tree is in the squashfs now: free the space early */
    /* 5. the boot initramfs, naming its root */
    if ((r = boot_initrd(spec, &k, conf, out, &ird, err)) < 0)
        goto out;
    snprintf(out->kernel, sizeof(out->kernel), "%s", k.vmlinuz);
    /* 6. the manifest */
    json_t *requested = json_array();
    for (size_t i = 0; pkglist[i]; i++)
        json_array_append_new(requested, json_string(pkglist[i]));
    char date[32] = "";
    if (t) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    json_t *rootfs =
        json_pack("{s:s, s:s, s:i, s:I, s:s, s:s}", "format", "squashfs", "compression", comp,
                  "block_size", 131072, "tree_bytes", (json_int_t)bytes, "release_date", date,
                  "trimmed", VHPC_FULL_TRIMMED);
    out->manifest = json_pack(
        "{s:s, s:s, s:s, s:s, s:O, s:O, s:o, s:O, s:s, s:o, s:o, s:O}", "kind", "full", "os", os,
        "os_name", pretty, "kernel", k.version, "packages", pkgs, "libs", libs, "requested",
        requested, "inputs", inputs, "inputs_digest", out->inputs_digest, "rootfs_build", rootfs,
        "boot_modules", json_incref(ird.modules), "suite", json_object_get(inputs, "suite"));
    if (!out->manifest) {
        r = vhpc_err_set(err, -ENOMEM, "the manifest");
        goto out;
    }
    r = 0;
out:
    vhpc_store_close(st);
    vhpc_initrd_free(&ird);
    json_decref(inputs);
    json_decref(pkgs);
    json_decref(libs);
    free(pkglist);
    if (r < 0) {
        if (out->dir[0])
            vhpc_rm_tree(out->dir, NULL);
        out->dir[0] = 0;
        vhpc_err_wrap(err, "building a full image");
    }
    return r;
}

/* Built before from the same inputs: give that image the name too. */
static int name_existing(const char *name, const char *digest, struct vhpc_image *out,
                         vhpc_err_t *err)
{
    struct vhpc_store *st;
    struct vhpc_ref ref;
    int r = vhpc_store_open(NULL, &st, err);
    if (r < 0)
        return r;
    r = vhpc_store_tag(st, name, 0, digest, &ref, err);
    vhpc_store_close(st);
    if (r < 0 || (r = vhpc_image_find(digest, out, err)) < 0)
        return r;
    snprintf(out->name, sizeof(out->name), "%s", ref.name);
    out->version = ref.version;
    return 0;
}

int vhpc_full_image_build(const struct vhpc_full_spec *spec, const char *name,
                          struct vhpc_full_image *out, vhpc_err_t *err)
{
    struct vhpc_full_spec s = *spec;
    struct img_mpi mpi = {0};
    struct full_build b = {0};
    char agent[PATH_MAX], rsh[PATH_MAX];
    int r;
    memset(out, 0, sizeof(*out));
    if (!s.agent_path) {
        if ((r = vhpc_guest_tools(agent, sizeof(agent), rsh, sizeof(rsh), err)) < 0)
            return r;
        s.agent_path = agent;
        s.rsh_path = rsh[0] ? rsh : NULL;
    }
    if (s.with_mpi && (r = img_mpi_full(&s.packages, &s.files, &s.env, &mpi, err)) < 0)
        return r;
    r = full_build(&s, &b, err);
    img_mpi_free(&mpi);
    if (r < 0)
        return r;
    snprintf(out->inputs_digest, sizeof(out->inputs_digest), "%s", b.inputs_digest);
    if (b.existing[0]) {
        out->reused = true;
        r = name_existing(name, b.existing, &out->img, err);
    } else {
        const char *roles[] = {"kernel", "initrd", "rootfs", NULL};
        const char *paths[] = {b.kernel, b.initrd, b.rootfs, NULL};
        json_t *man = b.manifest;
        b.manifest = NULL; /* vhpc_image_commit takes it */
        if ((r = vhpc_image_commit(name, man, roles, paths, &out->img, err)) < 0)
            vhpc_err_wrap(err, "storing image '%s'", name);
    }
    full_build_free(&b);
    return r;
}
