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
#include <string.h>

#define MAX_ADD 256

static const char build_help[] =
    "Usage: vhpc image build [--name NAME] [--add PATH]... [--module NAME]...\n"
    "Build a minimal image: Debian's cloud kernel (fetched and cached once) and an\n"
    "initramfs with busybox, vhpc-agent, the virtio modules, and each PATH with the\n"
    "shared libraries it needs (directories are copied whole).  NAME defaults to\n"
    "'minimal'.  The same inputs give the same digest.\n";

static int build(int argc, char **argv)
{
    const char *name = "minimal", *add[MAX_ADD + 1] = {0}, *mods[MAX_ADD + 1] = {0};
    int nadd = 0, nmods = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            fputs(build_help, stdout);
            return 0;
        }
        if (i + 1 >= argc)
            return vhpc_usage("image build", "'%s' needs an argument or is unknown", argv[i]);
        if (!strcmp(argv[i], "--name"))
            name = argv[++i];
        else if (!strcmp(argv[i], "--add") && nadd < MAX_ADD)
            add[nadd++] = argv[++i];
        else if (!strcmp(argv[i], "--module") && nmods < MAX_ADD)
            mods[nmods++] = argv[++i];
        else
            return vhpc_usage("image build", "unknown argument '%s'", argv[i]);
    }
    char agent[4096], rsh[4096];
    vhpc_err_t err = {0};
    if (vhpc_tool_path("vhpc-agent", agent, sizeof(agent)) < 0) {
        vhpc_err_setmsg(&err, -2, "cannot find vhpc-agent (build it, or set $VHPC_VHPC_AGENT)");
        return vhpc_fail(&err);
    }
    int have_rsh = vhpc_tool_path("vhpc-rsh", rsh, sizeof(rsh)) == 0;
    struct vhpc_image_spec spec = {.name = name, .add = add, .modules = mods};
    struct vhpc_image img;
    if (vhpc_image_build(&spec, agent, have_rsh ? rsh : NULL, &img, &err) < 0)
        return vhpc_fail(&err);
    printf("image %s %.12s: kernel %s, initramfs %" PRIu64 " KiB\n", img.name, img.digest,
           img.kernel_version, img.size >> 10);
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
