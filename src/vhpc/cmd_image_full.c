/*
 * cmd_image_full.c - `vhpc image build --full`: a Debian root file system
 * made by debootstrap that boots its own systemd, with vhpc-agent as a
 * service, stored as an image of kind "full" (full.h builds and stores
 * it; this file parses and prints).  cmd_image.c hands `build --full`
 * here; select.c prints what --build-missing built with
 * cli_print_full_built.
 */
#include "full.h"
#include "image.h"
#include "store.h"
#include "vhpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_ARGS 256

static const char full_help[] =
    "Usage: vhpc image build --full [--name NAME] [--package PKG]... [--file HOST=IMAGE]...\n"
    "                               [--env KEY=VALUE]... [--with-mpi] [--suite SUITE]\n"
    "                               [--public]\n"
    "Build a full image: a Debian root file system (debootstrap --variant=minbase with\n"
    "systemd and the packages asked for) that boots its own systemd, with vhpc-agent\n"
    "as a service.  Every VM gets its own copy-on-write view of it.  NAME defaults\n"
    "to 'debian'.  The same inputs give the same image, found without building.\n"
    "  --package PKG      a Debian package to install, with what it depends on\n"
    "  --file HOST=IMAGE  put the host file HOST at the absolute path IMAGE\n"
    "  --env KEY=VALUE    in the environment of everything run in the VMs\n"
    "  --with-mpi         Open MPI (openmpi-bin, libfabric1) and vhpc's libfabric\n"
    "                     provider ivc, set up as in minimal images (README: MPI in VMs)\n"
    "  --suite SUITE      the Debian suite (default " VHPC_FULL_SUITE ")\n"
    "  --public           root, system store: every user may read and boot the image\n"
    "                     (default: only root; see README: who can read images)\n"
    "Environment: VHPC_MIRROR (default " VHPC_FULL_MIRROR "), VHPC_DEB_CACHE\n"
    "(downloaded packages, default <store root>/cache/debs).  Needs root,\n"
    "debootstrap, mksquashfs (squashfs-tools) and the mirror on the network.\n";

int cmd_image_build_full(int argc, char **argv)
{
    const char *name = "debian", *suite = NULL;
    const char *pkgs[MAX_ARGS + 1] = {0}, *files[MAX_ARGS + 1] = {0}, *env[MAX_ARGS + 1] = {0};
    int npkgs = 0, nfiles = 0, nenv = 0;
    bool with_mpi = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            fputs(full_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--full"))
            continue;
        if (!strcmp(a, "--with-mpi")) {
            with_mpi = true;
            continue;
        }
        if (!strcmp(a, "--public")) {
            if (cli_public_ok("image build --full") != 0)
                return 2;
            vhpc_store_publish(1);
            continue;
        }
        if (i + 1 >= argc)
            return cli_usage("image build --full", "'%s' needs an argument or is unknown", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--name"))
            name = v;
        else if (!strcmp(a, "--suite"))
            suite = v;
        else if (!strcmp(a, "--package") && npkgs < MAX_ARGS)
            pkgs[npkgs++] = v;
        else if (!strcmp(a, "--file") && nfiles < MAX_ARGS)
            files[nfiles++] = v;
        else if (!strcmp(a, "--env") && nenv < MAX_ARGS) {
            if (!strchr(v, '=') || v[0] == '=')
                return cli_usage("image build --full", "--env %s: expected KEY=VALUE", v);
            env[nenv++] = v;
        } else if (!strcmp(a, "--add") || !strcmp(a, "--module"))
            return cli_usage("image build --full",
                             "%s is for minimal images; a full image takes --package "
                             "(Debian packages) and --file HOST=IMAGE",
                             a);
        else
            return cli_usage("image build --full", "unknown argument '%s'", a);
    }
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
