/*
 * clusteropts.c - what `vhpc run` and `vhpc vm start` share: the options
 * that shape a cluster (--vms, --vcpus, --mem, --image, --accel), their
 * checks once parsed, and the image and cluster spec they lead to.
 */
#include "clusteropts.h"
#include "vhpc/cluster.h"
#include "vhpc.h"

#include <stdio.h>

struct cli_cluster cli_cluster = {.vcpus = 1, .mem = 256, .accel = "auto"};

const struct cli_opt cli_cluster_opts[] = {
    CLI_OPT("vms", CLI_INT, &cli_cluster.nvms, "N", "VMs (run: required; vm start: default 1)",
            .min = 1, .max = VHPC_MAX_VMS),
    CLI_OPT("vcpus", CLI_INT, &cli_cluster.vcpus, "C", "vCPUs per VM (default 1)", .min = 1,
            .max = VHPC_VCPUS_MAX),
    CLI_OPT("mem", CLI_MIB, &cli_cluster.mem, "MIB", "memory per VM, e.g. 256 or 1G (default 256)",
            .min = VHPC_MEM_MIN_MIB, .max = VHPC_MEM_MAX_MIB),
    CLI_OPT("image", CLI_STR, &cli_cluster.image, "IMAGE",
            "NAME, NAME:VERSION or a digest prefix (vhpc image list)"),
    CLI_OPT("accel", CLI_STR, &cli_cluster.accel, "A",
            "kvm only with hardware virtualization; auto picks (default)"),
    {0}};

int cli_opt_cluster_name(const struct cli_opt *opt, const char *val, vhpc_err_t *err)
{
    *(const char **)opt->dst = val;
    return vhpc_check_cluster_name(val, err) < 0 ? vhpc_err_wrap(err, "--name") : 0;
}

int cli_cluster_check(const char *cmd, int default_vms)
{
    struct cli_cluster *c = &cli_cluster;
    vhpc_err_t err = {0};
    if (c->nvms < 1 && !default_vms)
        return cli_usage(cmd, "--vms N is required, 1 to %d", VHPC_MAX_VMS);
    if (c->nvms < 1)
        c->nvms = default_vms;
    if (c->build_missing && (!c->nreqs || c->image))
        return cli_usage(cmd, c->image ? "--build-missing and --image exclude each other"
                                       : "--build-missing needs --require (what to build)");
    if (vhpc_accel_parse(cli_cluster.accel, &cli_cluster.want) < 0)
        return cli_usage(cmd, "--accel %s: expected auto, kvm or tcg", cli_cluster.accel);
    for (size_t i = 0; i < cli_cluster.nreqs; i++)
        if (vhpc_req_parse(cli_cluster.req_text[i], &cli_cluster.reqs[i], &err) < 0)
            return cli_fail(&err);
    if (vhpc_cluster_check_memory(cli_cluster.nvms, cli_cluster.mem, &err) < 0)
        return cli_fail(&err);
    return CLI_PARSED;
}

/* The image: named, by requirements, or the default (built on first use). */
static int pick_image(const struct cli_cluster *c, struct vhpc_image *img, vhpc_err_t *err)
{
    if (c->image || c->nreqs)
        return cli_select_image(c->image, c->reqs, c->nreqs, c->build_missing, img, err);
    if (vhpc_image_find("minimal", img, err) == 0)
        return 0;
    fprintf(stderr, "vhpc: building the minimal image (first use)\n");
    return cli_build_minimal(img, err);
}

int cli_cluster_prepare(const char *name, struct vhpc_image *img, struct vhpc_cluster_spec *cs,
                        vhpc_err_t *err)
{
    const struct cli_cluster *c = &cli_cluster;
    *cs = (struct vhpc_cluster_spec){
        .name = name, .nvms = c->nvms, .vcpus = c->vcpus, .mem_mib = (int)c->mem};
    if (vhpc_cluster_can_start(err) < 0 || pick_image(c, img, err) < 0 ||
        vhpc_image_verify(img, err) < 0 || /* never boot damaged bytes */
        vhpc_accel_resolve(c->want, &cs->accel, err) < 0)
        return -1;
    cs->kernel = img->kernel;
    cs->initrd = img->initrd;
    cs->rootfs = img->rootfs[0] ? img->rootfs : NULL;
    return 0;
}
