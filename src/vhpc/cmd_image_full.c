/*
 * cmd_image_full.c - `vhpc image build --full`: a Debian root file system
 * made by debootstrap that boots its own systemd, with vhpc-agent as a
 * service, stored as an image of kind "full" (full.h builds and stores
 * it; this file parses and prints).  cmd_image.c hands `build --full`
 * here; select.c prints what --build-missing built with
 * cli_print_full_built.
 */
#include "vhpc/image.h"
#include "opts.h"
#include "vhpc/store.h"
#include "vhpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 256

static const char full_usage[] =
    "Usage: vhpc image build --full [--name NAME] [--package PKG]... [--file HOST=IMAGE]...\n"
    "                               [--env KEY=VALUE]... [--with-mpi] [--suite SUITE]\n"
    "                               [--public]\n"
    "Build a full image: a Debian root file system (debootstrap --variant=minbase with\n"
    "systemd and the packages asked for) that boots its own systemd, with vhpc-agent\n"
    "as a service.  Every VM gets its own copy-on-write view of it.  NAME defaults\n"
    "to 'debian'.  The same inputs give the same image, found without building.\n";
static const char full_footer[] =
    "Environment: VHPC_MIRROR (default " VHPC_FULL_MIRROR "), VHPC_DEB_CACHE\n"
    "(downloaded packages, default <store root>/cache/debs).  Needs root,\n"
    "debootstrap, mksquashfs (squashfs-tools) and the mirror on the network.\n";

/* --add and --module belong to minimal images: say what a full one takes. */
static int minimal_only(const struct cli_opt *o, const char *val, vhpc_err_t *err)
{
    (void)val;
    return vhpc_err_setmsg(err, -EINVAL,
                           "--%s is for minimal images; a full image takes --package "
                           "(Debian packages) and --file HOST=IMAGE",
                           o->name);
}

int cmd_image_build_full(int argc, char **argv)
{
    static const char *name = "debian", *suite = NULL;
    static const char *pkgs[MAX_ARGS + 1], *files[MAX_ARGS + 1], *env[MAX_ARGS + 1];
    static size_t npkgs, nfiles, nenv;
    static bool with_mpi, public, full;
    static const struct cli_opt opts[] = {
        CLI_OPT("full", CLI_FLAG, &full, NULL, "a full image (what this verb builds)"),
        CLI_OPT("name", CLI_STR, &name, "NAME", "the image's name (default debian)"),
        CLI_OPT("package", CLI_LIST, pkgs, "PKG",
                "a Debian package to install, with what it depends on", .max = MAX_ARGS,
                .count = &npkgs),
        CLI_OPT("file", CLI_LIST, files, "HOST=IMAGE",
                "put the host file HOST at the absolute path IMAGE", .max = MAX_ARGS,
                .count = &nfiles),
        CLI_OPT("env", CLI_LIST, env, "KEY=VALUE",
                "in the environment of everything run in the VMs", .max = MAX_ARGS, .count = &nenv),
        CLI_OPT("with-mpi", CLI_FLAG, &with_mpi, NULL,
                "Open MPI (openmpi-bin, libfabric1) and vhpc's libfabric\nprovider ivc, set up "
                "as in minimal images (README: MPI in VMs)"),
        CLI_OPT("suite", CLI_STR, &suite, "SUITE",
                "the Debian suite (default " VHPC_FULL_SUITE ")"),
        CLI_OPT("public", CLI_FLAG, &public, NULL,
                "root, system store: every user may read and boot the image\n(default: only "
                "root; see README: who can read images)"),
        CLI_OPT("add", CLI_FN, NULL, "PATH", "(minimal images only)", .fn = minimal_only),
        CLI_OPT("module", CLI_FN, NULL, "NAME", "(minimal images only)", .fn = minimal_only),
        {0}};
    static const struct cli_spec cli = {"image build --full", full_usage, opts,
                                        .footer = full_footer};
    struct cli_args a;
    int ps = cli_parse(&cli, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    if (cli_image_env_public("image build --full", env, nenv, public) != 0)
        return 2;
    if (!vhpc_valid_name(name))
        return cli_usage("image build --full",
                         "invalid name '%s' (letters, digits, '.', '_', '-'; at most 127)", name);

    struct vhpc_full_spec spec = {
        .suite = suite, .packages = pkgs, .files = files, .env = env, .with_mpi = with_mpi};
    struct vhpc_full_image fi;
    vhpc_err_t err = {0};
    if (vhpc_full_image_build(&spec, name, &fi, &err) < 0)
        return cli_fail(&err);
    cli_print_full_built(&fi.img, fi.reused, fi.inputs_digest, with_mpi, NULL);
    return 0;
}

void cli_print_full_built(const struct vhpc_image *img, bool reused, const char *inputs_digest,
                          bool with_mpi, void *arg)
{
    (void)arg;
    if (reused)
        printf("image %s:%d %.12s: up to date (built before from the same inputs %.12s), %" PRIu64
               " KiB\n",
               img->name, img->version, img->digest, inputs_digest, img->size >> 10);
    else
        printf("image %s:%d %.12s: full, kernel %s, %" PRIu64 " KiB%s\n", img->name, img->version,
               img->digest, img->kernel_version, img->size >> 10,
               with_mpi ? ", with Open MPI and provider ivc" : "");
}
