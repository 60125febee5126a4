/*
 * cmd_image.c - `vhpc image build|list|show`: minimal guest images (the
 * Debian cloud kernel + an initramfs with busybox, vhpc-agent, the virtio
 * modules and the closure of what the job needs).
 */
#include "cluster.h"
#include "image.h"
#include "kernel.h"
#include "vhpc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#define MAX_ADD 256

static const char build_help[] =
    "Usage: vhpc image build [--name NAME] [--add PATH]... [--module NAME]...\n"
    "                        [--env KEY=VALUE]... [--with-mpi]\n"
    "Build a minimal image: Debian's cloud kernel (fetched and cached once) and an\n"
    "initramfs with busybox, vhpc-agent, the virtio modules, and each PATH with the\n"
    "shared libraries it needs (directories are copied whole).  NAME defaults to\n"
    "'minimal'.  The same inputs give the same digest.\n"
    "  --env KEY=VALUE  in the environment of everything run in the VMs\n"
    "  --with-mpi       add Debian's Open MPI and vhpc's libfabric provider ivc, set\n"
    "                   up so that `mpirun -np N prog` uses every VM of the cluster\n"
    "                   and IVC between them (see README: MPI in VMs)\n";

#define LIBDIR "/usr/lib/x86_64-linux-gnu"
#define FI_DIR "/usr/lib/vhpc/fi"

/* What --with-mpi adds: Open MPI's launcher, daemon, components and data. */
static const char *const mpi_paths[] = {
    "/usr/bin/mpirun", "/usr/bin/mpiexec",   "/usr/bin/orted", LIBDIR "/openmpi",
    LIBDIR "/pmix2",   "/usr/share/openmpi", "/etc/openmpi",   NULL};

/* ... and the settings that make it use the cluster: the provider ivc
 * (matched messages through IVC between VMs on one host, TCP otherwise),
 * daemons started through vhpc-rsh, the cluster's VMs as the default hosts.
 * Each can be overridden per run (mpirun --mca, -x, or the environment). */
static const char *const mpi_env[] = {"FI_PROVIDER_PATH=" FI_DIR,
                                      "OMPI_MCA_pml=cm",
                                      "OMPI_MCA_mtl=ofi",
                                      "OMPI_MCA_mtl_ofi_provider_include=ivc",
                                      "OMPI_MCA_btl=self,vader,tcp",
                                      "OMPI_MCA_btl_tcp_if_include=eth0",
                                      "OMPI_MCA_oob_tcp_if_include=eth0",
                                      "OMPI_MCA_plm_rsh_agent=vhpc-rsh",
                                      "OMPI_MCA_orte_default_hostfile=/etc/vhpc/hostfile",
                                      "OMPI_ALLOW_RUN_AS_ROOT=1",
                                      "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                                      NULL};

static int build(int argc, char **argv)
{
    const char *name = "minimal", *add[MAX_ADD + 16] = {0}, *mods[MAX_ADD + 1] = {0};
    const char *env[MAX_ADD + 16] = {0}, *files[2] = {0};
    int nadd = 0, nmods = 0, nenv = 0;
    bool with_mpi = false;
    char fi_file[4200];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            fputs(build_help, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--with-mpi")) {
            with_mpi = true;
            continue;
        }
        if (i + 1 >= argc)
            return vhpc_usage("image build", "'%s' needs an argument or is unknown", argv[i]);
        if (!strcmp(argv[i], "--name"))
            name = argv[++i];
        else if (!strcmp(argv[i], "--add") && nadd < MAX_ADD)
            add[nadd++] = argv[++i];
        else if (!strcmp(argv[i], "--module") && nmods < MAX_ADD)
            mods[nmods++] = argv[++i];
        else if (!strcmp(argv[i], "--env") && nenv < MAX_ADD) {
            const char *e = argv[++i];
            if (!strchr(e, '=') || e[0] == '=')
                return vhpc_usage("image build", "--env %s: expected KEY=VALUE", e);
            env[nenv++] = e;
        } else
            return vhpc_usage("image build", "unknown argument '%s'", argv[i]);
    }
    char agent[4096], rsh[4096];
    vhpc_err_t err = {0};
    if (vhpc_tool_path("vhpc-agent", agent, sizeof(agent)) < 0) {
        vhpc_err_setmsg(&err, -2, "cannot find vhpc-agent (build it, or set $VHPC_VHPC_AGENT)");
        return vhpc_fail(&err);
    }
    int have_rsh = vhpc_tool_path("vhpc-rsh", rsh, sizeof(rsh)) == 0;
    if (with_mpi) {
        char prov[4096];
        if (vhpc_tool_path("libivc-fi.so", prov, sizeof(prov)) < 0) {
            vhpc_err_setmsg(&err, -2,
                            "--with-mpi: cannot find libivc-fi.so (build it, or set "
                            "$VHPC_LIBIVC_FI_SO)");
            return vhpc_fail(&err);
        }
        for (int i = 0; mpi_paths[i]; i++) {
            if (access(mpi_paths[i], F_OK) < 0) {
                vhpc_err_setmsg(&err, -2,
                                "--with-mpi: %s is missing (apt-get install openmpi-bin "
                                "libfabric1)",
                                mpi_paths[i]);
                return vhpc_fail(&err);
            }
            add[nadd++] = mpi_paths[i];
        }
        snprintf(fi_file, sizeof(fi_file), "%s=" FI_DIR "/libivc-fi.so", prov);
        files[0] = fi_file;
        /* The image's settings first: --env given by the user wins (later lines). */
        int n = 0;
        while (mpi_env[n])
            n++;
        memmove(env + n, env, (size_t)nenv * sizeof(*env));
        memcpy(env, mpi_env, (size_t)n * sizeof(*env));
        nenv += n;
    }
    struct vhpc_image_spec spec = {
        .name = name, .add = add, .modules = mods, .files = files, .env = env};
    struct vhpc_image img;
    if (vhpc_image_build(&spec, agent, have_rsh ? rsh : NULL, &img, &err) < 0)
        return vhpc_fail(&err);
    printf("image %s %.12s: kernel %s, initramfs %" PRIu64 " KiB%s\n", img.name, img.digest,
           img.kernel_version, img.size >> 10, with_mpi ? ", with Open MPI and provider ivc" : "");
    return 0;
}

static int print_image(const struct vhpc_image *img, void *arg)
{
    (void)arg;
    printf("%-20s %.12s  %-24s %8" PRIu64 " KiB\n", img->name, img->digest, img->kernel_version,
           img->size >> 10);
    return 0;
}

int cmd_image(int argc, char **argv)
{
    vhpc_err_t err = {0};
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        printf("Usage: vhpc image build|list|show ...\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "build"))
        return build(argc - 1, argv + 1);
    if (!strcmp(argv[1], "list")) {
        printf("%-20s %-12s  %-24s %12s\n", "NAME", "DIGEST", "KERNEL", "SIZE");
        if (vhpc_image_list(print_image, NULL, &err) < 0)
            return vhpc_fail(&err);
        return 0;
    }
    if (!strcmp(argv[1], "show")) {
        if (argc != 3)
            return vhpc_usage("image show", "expected one image name or digest");
        struct vhpc_image img;
        if (vhpc_image_find(argv[2], &img, &err) < 0)
            return vhpc_fail(&err);
        printf("name:    %s\ndigest:  %s\nkernel:  %s (%s)\ninitrd:  %s\nsize:    %" PRIu64
               " bytes\n",
               img.name, img.digest, img.kernel_version, img.kernel, img.initrd, img.size);
        return 0;
    }
    return vhpc_usage("image", "unknown subcommand '%s'", argv[1]);
}
