/*
 * paths.c - see paths.h.
 */
#include "paths.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *vhpc_system_root(void)
{
    const char *h = getenv("VHPC_SYSTEM_HOME");
    return h && h[0] == '/' ? h : "/var/lib/vhpc";
}

const char *vhpc_store_root(void)
{
    static __thread char buf[PATH_MAX];
    const char *h = getenv("VHPC_HOME");
    if (h && h[0])
        return h;
    if (geteuid() == 0)
        return vhpc_system_root();
    /* A user's own store: $XDG_DATA_HOME/vhpc, else ~/.local/share/vhpc. */
    const char *x = getenv("XDG_DATA_HOME");
    if (x && x[0] == '/' && snprintf(buf, sizeof(buf), "%s/vhpc", x) < (int)sizeof(buf))
        return buf;
    const char *home = getenv("HOME");
    if (!home || home[0] != '/') {
        struct passwd *pw = getpwuid(geteuid());
        home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
    }
    if (home && snprintf(buf, sizeof(buf), "%s/.local/share/vhpc", home) < (int)sizeof(buf))
        return buf;
    /* No home at all: a private directory of this uid under /tmp is no
     * better than failing loudly later; /var/lib/vhpc is not writable. */
    snprintf(buf, sizeof(buf), "/nonexistent-home-of-uid-%u/vhpc", (unsigned)geteuid());
    return buf;
}

void vhpc__kernel_cache_dir(char *buf, size_t len)
{
    const char *c = getenv("VHPC_KERNEL_CACHE");
    if (c && c[0])
        snprintf(buf, len, "%s", c);
    else
        snprintf(buf, len, "%s/kernels", vhpc_store_root());
}

int vhpc__private_store(void)
{
    return geteuid() != 0;
}

int vhpc_tool_path(const char *tool, char *buf, size_t len)
{
    char env[64], self[PATH_MAX], *slash;
    snprintf(env, sizeof(env), "VHPC_%s", tool);
    for (char *p = env; *p; p++)
        *p = *p == '-' || *p == '.' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    const char *e = getenv(env);
    if (e && *e) {
        snprintf(buf, len, "%s", e);
        return access(buf, X_OK) == 0 ? 0 : -ENOENT;
    }
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        if ((slash = strrchr(self, '/')))
            *slash = 0;
        /* installed side by side, or the build tree: build/src/vhpc/vhpc
         * next to build/src/ivcd/ivcd and build/src/agent/vhpc-agent */
        const char *sub = !strcmp(tool, "ivcd")           ? "ivcd"
                          : !strcmp(tool, "libivc-fi.so") ? "fi"
                                                          : "agent";
        snprintf(buf, len, "%s/%s", self, tool);
        if (access(buf, X_OK) == 0)
            return 0;
        snprintf(buf, len, "%s/../%s/%s", self, sub, tool);
        if (access(buf, X_OK) == 0)
            return 0;
    }
    const char *path = getenv("PATH");
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", path ? path : "/usr/bin:/bin");
    for (char *save, *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(buf, len, "%s/%s", dir, tool);
        if (access(buf, X_OK) == 0)
            return 0;
    }
    return -ENOENT;
}

int vhpc_guest_tools(char *agent, size_t alen, char *rsh, size_t rlen, vhpc_err_t *err)
{
    if (vhpc_tool_path("vhpc-agent", agent, alen) < 0)
        return vhpc_err_setmsg(err, -ENOENT,
                               "cannot find vhpc-agent (build it, or set $VHPC_VHPC_AGENT)");
    if (vhpc_tool_path("vhpc-rsh", rsh, rlen) < 0)
        rsh[0] = 0;
    return 0;
}

const char *vhpc_run_dir(void)
{
    static __thread char buf[PATH_MAX];
    const char *d = getenv("VHPC_RUN_DIR");
    if (d && *d)
        return d;
    if (geteuid() == 0)
        return "/run/vhpc";
    /* A user's own: in the session's runtime directory, else one of this
     * uid's under /tmp, as tmux does (checked before use: run_dir_ready). */
    const char *x = getenv("XDG_RUNTIME_DIR");
    /* (short enough that every socket path under it fits sun_path) */
    if (x && x[0] == '/' && snprintf(buf, sizeof(buf), "%s/vhpc", x) < 64)
        return buf;
    snprintf(buf, sizeof(buf), "/tmp/vhpc-%u", (unsigned)geteuid());
    return buf;
}

int vhpc__have_program(const char *prog)
{
    const char *path = getenv("PATH");
    char copy[4096], p[4200];
    snprintf(copy, sizeof(copy), "%s:/usr/sbin:/sbin", path ? path : "/usr/bin:/bin");
    for (char *save, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(p, sizeof(p), "%s/%s", d, prog);
        if (access(p, X_OK) == 0)
            return 1;
    }
    return 0;
}
