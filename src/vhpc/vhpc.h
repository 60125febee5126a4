/*
 * vhpc.h - the CLI's commands (one file per verb, cmd_<verb>.c) and the
 * helpers they share, prefixed cli_ (vhpc_ is the library's).
 */
#ifndef VHPC_CLI_H
#define VHPC_CLI_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>

struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

int cmd_run(int argc, char **argv);
int cmd_vm(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_setup(int argc, char **argv);
int cmd_node(int argc, char **argv); /* cmd_node.c: vhpc node serve */

struct vhpc_req;
struct vhpc_candidate;
/* Say on stderr which image was chosen for requirements and why, or what
 * each candidate misses (a vhpc_select_report's matched, cmd_image.c). */
void cli_print_candidates(const struct vhpc_candidate *c, size_t nc, int best, size_t n, void *arg);

struct vhpc_image;
/* Say on stdout which full image was built, or found made from the same
 * inputs (a vhpc_select_report's built, cmd_image_full.c). */
void cli_print_full_built(const struct vhpc_image *img, bool reused, const char *inputs_digest,
                          bool with_mpi, void *arg);
/* The image a run boots: `image` by name (it must also meet reqs), else the
 * best stored image for reqs, built first when none fits and build_missing
 * (select.c). */
int cli_select_image(const char *image, const struct vhpc_req *reqs, size_t n, bool build_missing,
                     struct vhpc_image *out, vhpc_err_t *err);
/* Build the default image, `minimal` (vhpc run on first use). */
int cli_build_minimal(struct vhpc_image *out, vhpc_err_t *err);
/* The options of a job file as "--key" ["value"] arguments (malloc'd) and
 * its command line (malloc'd, NULL if none). */
int cli_job_file(const char *path, char ***args, int *nargs, char **command, vhpc_err_t *err);
/* `vhpc image build --full` (cmd_image_full.c), push and pull (cmd_push.c). */
int cmd_image_build_full(int argc, char **argv);
int cmd_image_push(int argc, char **argv);
int cmd_image_pull(int argc, char **argv);

/* --public is for root's system store (a user's own store is 0700, so
 * publishing there would share nothing): 0, or a usage error (2). */
int cli_public_ok(const char *cmd);
/* The checks of image build's --env (each KEY=VALUE) and --public, which
 * then publishes into the system store (cmd_image.c): 0, or a usage error (2). */
int cli_image_env_public(const char *cmd, const char *const *env, size_t nenv, bool public);

/* Print "vhpc: <msg>" on stderr; returns the exit status for the error. */
int cli_fail(const vhpc_err_t *err);
/* Print a usage error and return 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The ranges of --vcpus and --mem (MiB) for run and vm start (vhpc/util.h
 * parses them: whole numbers, sizes with M/G/T). */
#define VHPC_VCPUS_MAX   64
#define VHPC_MEM_MIN_MIB 64L
#define VHPC_MEM_MAX_MIB (1L << 20) /* 1 TiB: fits the int of a cluster spec */

#endif
