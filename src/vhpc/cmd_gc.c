/*
 * cmd_gc.c - `vhpc gc [--all]`: remove what crashed runs left behind.
 */
#include "cluster.h"
#include "vhpc.h"

#include <stdio.h>
#include <string.h>

static void print_line(const char *line, void *arg)
{
    (void)arg;
    printf("%s\n", line);
}

int cmd_gc(int argc, char **argv)
{
    bool all = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--all")) {
            all = true;
        } else if (!strcmp(argv[i], "--help")) {
            printf("Usage: vhpc gc [--all]\n"
                   "Remove every cluster whose vhpc process is gone: its QEMU processes, taps,\n"
                   "bridge, ivcd and state directory.  --all also removes clusters started\n"
                   "with `vhpc vm start` (they have no owning process).\n");
            return 0;
        } else {
            return cli_usage("gc", "unknown argument '%s'", argv[i]);
        }
    }
    vhpc_err_t err = {0};
    int n = vhpc_gc(all, print_line, NULL, &err);
    if (n < 0)
        return cli_fail(&err);
    printf("%d cluster%s removed\n", n, n == 1 ? "" : "s");
    return 0;
}
