/*
 * paths.c - see paths.h.
 */
#include "paths.h"

#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *vhpc__system_root(void)
{
    const char *h = getenv("VHPC_SYSTEM_HOME");
    return h && h[0] == '/' ? h : "/var/lib/vhpc";
}

const char *vhpc__store_root(void)
{
    static __thread char buf[PATH_MAX];
    const char *h = getenv("VHPC_HOME");
    if (h && h[0])
        return h;
    if (geteuid() == 0)
        return vhpc__system_root();
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
        snprintf(buf, len, "%s/kernels", vhpc__store_root());
}

int vhpc__private_store(void)
{
    return geteuid() != 0;
}
