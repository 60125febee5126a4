/*
 * vhpc.h - the CLI's commands (one file per verb, cmd_<verb>.c) and the
 * helpers they share.
 */
#ifndef VHPC_CLI_H
#define VHPC_CLI_H

#include "error.h"

#include <stdbool.h>

struct vhpc_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

int cmd_run(int argc, char **argv);
int cmd_vm(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_gc(int argc, char **argv);

/* Print "vhpc: <msg>" on stderr; returns the exit status for the error. */
int vhpc_fail(const vhpc_err_t *err);
/* Print a usage error and return 2. */
int vhpc_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse a size in MiB with an optional suffix (M, G); -1 on error. */
long vhpc_parse_mib(const char *s);

#endif
