/*
 * main.c - `vhpc`: run HPC jobs in per-job virtual clusters.  Dispatches to
 * one function per verb (cmd_<verb>.c).
 */
#include "vhpc.h"

#include "vhpc/store.h"
#include "vhpc/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct cli_command commands[] = {
    {"run", cmd_run, "boot a virtual cluster, run a command in it, tear it down"},
    {"vm", cmd_vm, "start, exec, console, stop, list: clusters for interactive use"},
    {"image", cmd_image, "build, list, show, match, tag, rm, gc, push, pull: guest images"},
    {"gc", cmd_gc, "remove what crashed runs left (QEMU, taps, bridges, ivcd, files)"},
    {"node", cmd_node, "serve: receive, forward and cache images for push and pull"},
    {"setup", cmd_setup, "prepare this host once (root) so that normal users can run VMs"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: vhpc COMMAND [OPTIONS]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`vhpc COMMAND --help` describes each.\n");
}

int cli_fail(const vhpc_err_t *err)
{
    fprintf(stderr, "vhpc: %s\n", err->msg[0] ? err->msg : "failed");
    return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vhpc %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'vhpc %s --help'.\n", cmd);
    return 2;
}

int cli_public_ok(const char *cmd)
{
    if (geteuid() == 0)
        return 0;
    return cli_usage(cmd,
                     "--public publishes into the system store and is for root; your own "
                     "store (%s) is readable by you only",
                     vhpc_store_root());
}

int cli_image_env_public(const char *cmd, const char *const *env, size_t nenv, bool public)
{
    for (size_t i = 0; i < nenv; i++)
        if (!strchr(env[i], '=') || env[i][0] == '=')
            return cli_usage(cmd, "--env %s: expected KEY=VALUE", env[i]);
    if (public && cli_public_ok(cmd) != 0)
        return 2;
    if (public)
        vhpc_store_publish(1);
    return 0;
}

static void lock_notice(const char *msg)
{
    fprintf(stderr, "vhpc: %s\n", msg);
}

/* What the library shows (progress, a node's log) goes to stderr. */
static void to_stderr(const char *text)
{
    fputs(text, stderr);
    fflush(stderr);
}

int main(int argc, char **argv)
{
    vhpc_set_lock_notice(lock_notice);
    vhpc_set_output(to_stderr, isatty(STDERR_FILENO));
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("vhpc 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vhpc: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
