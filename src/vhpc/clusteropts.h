/*
 * clusteropts.h - the options that shape a cluster, `vhpc run`'s and
 * `vhpc vm start`'s (clusteropts.c): cli_cluster_opts fills cli_cluster;
 * run adds --require and --build-missing into it.
 */
#ifndef VHPC_CLI_CLUSTEROPTS_H
#define VHPC_CLI_CLUSTEROPTS_H

#include "vhpc/cluster.h"
#include "vhpc/image.h"
#include "opts.h"

#define CLI_MAX_REQS 64
struct cli_cluster {
    int nvms, vcpus;
    long mem;
    const char *image, *accel, *req_text[CLI_MAX_REQS];
    size_t nreqs;
    bool build_missing;
    enum vhpc_accel want; /* from accel */
    struct vhpc_req reqs[CLI_MAX_REQS];
};
extern struct cli_cluster cli_cluster;
extern const struct cli_opt cli_cluster_opts[];

/* Once parsed: --vms given (or default_vms, if not 0), --build-missing
 * with what it needs, --accel known, --require's parsed, the memory there;
 * then CLI_PARSED, else the exit status (the error printed). */
int cli_cluster_check(const char *cmd, int default_vms);

/* A CLI_FN for --name: a cluster name that is safe as a path. */
int cli_opt_cluster_name(const struct cli_opt *opt, const char *val, vhpc_err_t *err);

/* The image the cluster boots (named, by requirements, else 'minimal',
 * built on first use), verified, and the spec of a cluster `name` of it. */
int cli_cluster_prepare(const char *name, struct vhpc_image *img, struct vhpc_cluster_spec *cs,
                        vhpc_err_t *err);

#endif
