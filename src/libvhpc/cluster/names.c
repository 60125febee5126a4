/*
 * names.c - the cluster name rule (names.h).
 */
#include "names.h"

#include <errno.h>
#include <string.h>

int vhpc_cluster_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n >= 1 && n <= VHPC_CLUSTER_NAME_MAX &&
           strspn(name, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

int vhpc_check_cluster_name(const char *name, vhpc_err_t *err)
{
    if (vhpc_cluster_name_ok(name))
        return 0;
    /* Only a short, printable echo of what was given. */
    char shown[VHPC_CLUSTER_NAME_MAX + 8];
    size_t i = 0;
    for (const char *p = name ? name : ""; *p && i < VHPC_CLUSTER_NAME_MAX + 1; p++)
        shown[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    shown[i] = 0;
    if (name && strlen(name) > VHPC_CLUSTER_NAME_MAX + 1)
        strcpy(shown + i, "...");
    return vhpc_err_setmsg(err, -EINVAL,
                           "bad cluster name '%s': use 1 to %d letters, digits, '-' or '_'", shown,
                           VHPC_CLUSTER_NAME_MAX);
}
