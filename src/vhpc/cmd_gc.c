/*
 * cmd_gc.c - `vhpc gc [--all]`: remove what crashed runs left behind.
 */
#include "vhpc/cluster.h"
#include "opts.h"
#include "vhpc.h"

#include <stdio.h>

static void print_line(const char *line, void *arg)
{
    (void)arg;
    printf("%s\n", line);
}

int cmd_gc(int argc, char **argv)
{
    static bool all;
    static const struct cli_opt opts[] = {
        CLI_OPT("all", CLI_FLAG, &all, NULL, "also clusters started with `vhpc vm start`"), {0}};
    static const struct cli_spec spec = {
        "gc",
        "Usage: vhpc gc [--all]\n"
        "Remove every cluster whose vhpc process is gone: its QEMU processes, taps,\n"
        "bridge, ivcd and state directory.  --all also removes clusters started\n"
        "with `vhpc vm start` (they have no owning process).\n",
        opts, .more = NULL};
    struct cli_args a;
    int st = cli_parse(&spec, argc, argv, &a);
    if (st != CLI_PARSED)
        return st;
    vhpc_err_t err = {0};
    int n = vhpc_gc(all, print_line, NULL, &err);
    if (n < 0)
        return cli_fail(&err);
    printf("%d cluster%s removed\n", n, n == 1 ? "" : "s");
    return 0;
}
