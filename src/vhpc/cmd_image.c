/*
 * cmd_image.c - `vhpc image build|list|show`: minimal guest images (the
 * Debian cloud kernel + an initramfs with busybox, vhpc-agent, the virtio
 * modules and the closure of what the job needs).
 */
#include "vhpc/image.h"
#include "opts.h"
#include "vhpc/util.h"
#include "vhpc/store.h"
#include "vhpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ADD 256

static const char build_usage[] =
    "Usage: vhpc image build [--name NAME] [--add PATH]... [--module NAME]...\n"
    "                        [--env KEY=VALUE]... [--with-mpi] [--public]\n"
    "Build a minimal image: Debian's cloud kernel (fetched and cached once) and an\n"
    "initramfs with busybox, vhpc-agent, the virtio modules, and each PATH with the\n"
    "shared libraries it needs (directories are copied whole).  NAME defaults to\n"
    "'minimal'.  The same inputs give the same digest.\n";

static int build(int argc, char **argv)
{
    static const char *name = "minimal", *add[MAX_ADD + 1], *mods[MAX_ADD + 1], *env[MAX_ADD + 1];
    static size_t nadd, nmods, nenv;
    static bool with_mpi, public;
    static const struct cli_opt opts[] = {
        CLI_OPT("name", CLI_STR, &name, "NAME", "the image's name (default minimal)"),
        CLI_OPT("add", CLI_LIST, add, "PATH", "a file or directory, with the libraries it needs",
                .max = MAX_ADD, .count = &nadd),
        CLI_OPT("module", CLI_LIST, mods, "NAME", "a kernel module to load at boot", .max = MAX_ADD,
                .count = &nmods),
        CLI_OPT("env", CLI_LIST, env, "KEY=VALUE",
                "in the environment of everything run in the VMs", .max = MAX_ADD, .count = &nenv),
        CLI_OPT("with-mpi", CLI_FLAG, &with_mpi, NULL,
                "add Debian's Open MPI and vhpc's libfabric provider ivc, set\nup so that `mpirun "
                "-np N prog` uses every VM of the cluster\nand IVC between them (see README: MPI "
                "in VMs)"),
        CLI_OPT("public", CLI_FLAG, &public, NULL,
                "root, system store: every user may read and boot the image\n(default: only its "
                "builder; --env values are in the image)"),
        {0}};
    static const struct cli_spec cli = {"image build", build_usage, opts, .more = NULL};
    struct cli_args a;
    int ps = cli_parse(&cli, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    if (cli_image_env_public("image build", env, nenv, public) != 0)
        return 2;
    struct vhpc_image_spec spec = {
        .name = name, .add = add, .modules = mods, .env = env, .with_mpi = with_mpi};
    struct vhpc_image img;
    vhpc_err_t err = {0};
    if (vhpc_image_build(&spec, NULL, NULL, &img, &err) < 0)
        return cli_fail(&err);
    printf("image %s:%d %.12s: kernel %s, %" PRIu64 " KiB%s\n", img.name, img.version, img.digest,
           img.kernel_version, img.size >> 10, with_mpi ? ", with Open MPI and provider ivc" : "");
    return 0;
}

/* ---- list, show ---- */

static void human_size(uint64_t b, char *out, size_t len)
{
    if (b >= 10ull << 30)
        snprintf(out, len, "%.1f GB", (double)b / 1e9);
    else
        snprintf(out, len, "%.1f MB", (double)b / 1e6);
}

static void age(int64_t t, char *out, size_t len)
{
    int64_t d = (int64_t)time(NULL) - t;
    if (d < 120)
        snprintf(out, len, "%lds ago", (long)(d < 0 ? 0 : d));
    else if (d < 7200)
        snprintf(out, len, "%ldm ago", (long)(d / 60));
    else if (d < 172800)
        snprintf(out, len, "%ldh ago", (long)(d / 3600));
    else
        snprintf(out, len, "%ldd ago", (long)(d / 86400));
}

static int print_image(const struct vhpc_image *img, void *arg)
{
    char ref[160], size[32], when[32];
    (void)arg;
    snprintf(ref, sizeof(ref), "%s:%d", img->name, img->version);
    human_size(img->size, size, sizeof(size));
    age(img->created, when, sizeof(when));
    printf("%-24s %.12s  %-8s %-10s %-22s %9s  %s\n", ref, img->digest, img->kind,
           img->os[0] ? img->os : "?", img->kernel_version, size, when);
    return 0;
}

/* The system store's images, under a heading printed with the first. */
static int print_system_image(const struct vhpc_image *img, void *arg)
{
    int *shown = arg;
    if (!(*shown)++)
        printf("-- the system store (%s, root's; read-only, runs fall back on it):\n",
               vhpc_system_root());
    return print_image(img, NULL);
}

static int no_ref(const struct vhpc_ref *r, void *arg)
{
    (void)r;
    (void)arg;
    return 0;
}

/* The verbs that take no option but --help: CLI_PARSED, or the exit status. */
static int no_options(const char *cmd, const char *usage, int max_pos, int argc, char **argv,
                      struct cli_args *a)
{
    const struct cli_spec spec = {cmd, usage, NULL, .max_pos = max_pos};
    return cli_parse(&spec, argc, argv, a);
}

static const char list_usage[] =
    "Usage: vhpc image list\nEvery image version in the store, by name; for a "
    "user, then those of the\nsystem store root keeps, which runs fall back "
    "on.\n";

static int list(int argc, char **argv)
{
    struct cli_args a;
    int ps = no_options("image list", list_usage, 0, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    struct vhpc_store *st = NULL;
    vhpc_err_t err = {0};
    /* An index that cannot be read is an error, before any output. */
    if (vhpc_store_open(NULL, &st, &err) < 0 || vhpc_store_refs(st, no_ref, NULL, &err) < 0) {
        vhpc_store_close(st);
        return cli_fail(&err);
    }
    printf("%-24s %-12s  %-8s %-10s %-22s %9s  %s\n", "NAME:VERSION", "DIGEST", "KIND", "OS",
           "KERNEL", "SIZE", "CREATED");
    vhpc_store_close(st);
    int r = vhpc_image_list(print_image, NULL, &err), shown = 0;
    if (r >= 0)
        r = vhpc_image_list_system(print_system_image, &shown, &err);
    return r < 0 ? cli_fail(&err) : 0;
}

struct refs_of {
    const char *digest;
    char text[512];
    size_t len;
};

static int refs_of_cb(const struct vhpc_ref *r, void *arg)
{
    struct refs_of *c = arg;
    if (strcmp(r->digest, c->digest) == 0 && c->len < sizeof(c->text) - 140)
        c->len += (size_t)snprintf(c->text + c->len, sizeof(c->text) - c->len, "%s%s:%d",
                                   c->len ? ", " : "", r->name, r->version);
    return 0;
}

static void print_packages(json_t *pkgs, int all)
{
    const char *name;
    json_t *p;
    size_t n = json_object_size(pkgs), shown = 0;
    printf("packages:  %zu\n", n);
    json_object_foreach(pkgs, name, p)
    {
        if (!all && shown == 12) {
            printf("  ... (%zu more; vhpc image show --all lists them)\n", n - shown);
            break;
        }
        printf("  %-32s %s\n", name, json_string_value(json_object_get(p, "version")) ?: "?");
        shown++;
    }
}

static int show(int argc, char **argv)
{
    static bool json, all;
    static const struct cli_opt opts[] = {
        CLI_OPT("json", CLI_FLAG, &json, NULL, "the manifest itself"),
        CLI_OPT("all", CLI_FLAG, &all, NULL, "every package and library"),
        {0}};
    static const struct cli_spec spec = {
        "image show",
        "Usage: vhpc image show [--json] [--all] IMAGE\n"
        "An image's manifest: kind, OS, kernel, blobs, packages, libraries, inputs.\n"
        "IMAGE is NAME, NAME:VERSION, NAME@DIGEST-PREFIX or a digest prefix.\n",
        opts, .max_pos = 1};
    struct cli_args a;
    int ps = cli_parse(&spec, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    if (a.npos < 1)
        return cli_usage("image show", "which image? (vhpc image list shows them)");
    const char *what = a.pos[0];
    struct vhpc_store *st;
    struct vhpc_ref ref;
    vhpc_err_t err = {0};
    json_t *m = NULL;
    int r = vhpc_store_open(NULL, &st, &err);
    if (r == 0 && (r = vhpc_store_resolve(st, what, &ref, &err)) == 0)
        r = vhpc_store_get_manifest(st, ref.digest, &m, &err);
    if (r < 0) {
        vhpc_store_close(st);
        return cli_fail(&err);
    }
    if (json) {
        json_dumpf(m, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
    } else {
        struct refs_of ro = {.digest = ref.digest};
        vhpc_store_refs(st, refs_of_cb, &ro, &err);
        char size[32];
        human_size((uint64_t)json_integer_value(json_object_get(m, "size")), size, sizeof(size));
        printf("digest:    %s\nnames:     %s\nkind:      %s\nos:        %s (%s)\nkernel:    "
               "%s\nsize:      %s\nparent:    %s\n",
               ref.digest, ro.len ? ro.text : "(none)",
               json_string_value(json_object_get(m, "kind")) ?: "?",
               json_string_value(json_object_get(m, "os")) ?: "?",
               json_string_value(json_object_get(m, "os_name")) ?: "?",
               json_string_value(json_object_get(m, "kernel")) ?: "?", size,
               json_string_value(json_object_get(m, "parent")) ?: "(none)");
        const char *role;
        json_t *b;
        printf("blobs:\n");
        json_object_foreach(json_object_get(m, "blobs"), role, b)
        {
            char bs[32], path[4096];
            const char *d = json_string_value(json_object_get(b, "digest"));
            human_size((uint64_t)json_integer_value(json_object_get(b, "size")), bs, sizeof(bs));
            vhpc_store_blob_path(st, d ? d : "", path, sizeof(path));
            printf("  %-8s %.12s %9s  %s\n", role, d ? d : "?", bs, path);
        }
        print_packages(json_object_get(m, "packages"), all);
        json_t *libs = json_object_get(m, "libs");
        printf("libs:      %zu shared libraries%s\n", json_array_size(libs),
               all ? ":" : " (--all lists them)");
        for (size_t i = 0; all && i < json_array_size(libs); i++)
            printf("  %s\n", json_string_value(json_array_get(libs, i)));
        printf("inputs:    %s\n",
               json_string_value(json_object_get(m, "inputs_digest")) ?: "(not recorded)");
    }
    json_decref(m);
    vhpc_store_close(st);
    return 0;
}

/* ---- rm, tag, gc ---- */

static int rm(int argc, char **argv)
{
    static const char usage[] =
        "Usage: vhpc image rm IMAGE...\n"
        "Remove NAME (every version), NAME:VERSION, or an image by digest (every name\n"
        "of it), then free what no name uses any more.\n";
    struct cli_args a;
    int ps = no_options("image rm", usage, CLI_MAX_POS, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    if (a.npos < 1)
        return cli_usage("image rm", "which image? (vhpc image list shows them)");
    struct vhpc_store *st;
    vhpc_err_t err = {0};
    if (vhpc_store_open(NULL, &st, &err) < 0)
        return cli_fail(&err);
    int status = 0;
    struct vhpc_gc_stats gs = {0};
    for (int i = 0; i < a.npos; i++) {
        int n = 0;
        if (vhpc_store_remove(st, a.pos[i], &n, &gs, &err) < 0) {
            status = cli_fail(&err);
            continue;
        }
        printf("removed %s (%d name%s)\n", a.pos[i], n, n == 1 ? "" : "s");
    }
    if (gs.bytes)
        printf("freed %.1f MB (%u blobs)\n", (double)gs.bytes / 1e6, gs.blobs);
    vhpc_store_close(st);
    return status;
}

static const char tag_usage[] =
    "Usage: vhpc image tag IMAGE NAME[:VERSION]\n"
    "Give an image another name (the next version of NAME, or VERSION).  "
    "The\ndigest does not change.\n";

static int tag(int argc, char **argv)
{
    struct cli_args a;
    int ps = no_options("image tag", tag_usage, 2, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    if (a.npos != 2)
        return cli_usage("image tag", "expected IMAGE NAME[:VERSION]");
    struct vhpc_store *st;
    struct vhpc_ref src, out;
    vhpc_err_t err = {0};
    char name[128];
    int version = 0;
    const char *colon = strchr(a.pos[1], ':');
    snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - a.pos[1]) : 127, a.pos[1]);
    if (colon && vhpc_parse_int("the version of", colon + 1, 1, 1000000, &version, &err) < 0)
        return cli_usage("image tag", "'%s': %s", a.pos[1], err.msg);
    int r = vhpc_store_open(NULL, &st, &err);
    if (r == 0 && (r = vhpc_store_resolve(st, a.pos[0], &src, &err)) == 0)
        r = vhpc_store_tag(st, name, version, src.digest, &out, &err);
    vhpc_store_close(st);
    if (r < 0)
        return cli_fail(&err);
    printf("%s:%d -> %.12s\n", out.name, out.version, out.digest);
    return 0;
}

static const char gc_usage[] =
    "Usage: vhpc image gc\nRemove images no name points at and blobs no image "
    "uses (once an hour old:\nyounger ones may belong to a build or transfer "
    "under way), and builds or\ntransfers left over for more than an hour.\n";

static int gc(int argc, char **argv)
{
    struct cli_args a;
    int ps = no_options("image gc", gc_usage, 0, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    struct vhpc_store *st;
    struct vhpc_gc_stats gs = {0};
    vhpc_err_t err = {0};
    int r = vhpc_store_open(NULL, &st, &err);
    if (r == 0)
        r = vhpc_store_gc(st, &gs, &err);
    vhpc_store_close(st);
    if (r < 0)
        return cli_fail(&err);
    /* Images of the layout before the content-addressed store. */
    char legacy[4200];
    snprintf(legacy, sizeof(legacy), "%s/images", vhpc_store_root());
    if (access(legacy, F_OK) == 0 && vhpc_rm_tree(legacy, &err) == 0)
        printf("removed %s (images in the old layout; build them again)\n", legacy);
    printf("removed %u image%s, %u blob%s (%.1f MB), %u leftover%s\n", gs.images,
           gs.images == 1 ? "" : "s", gs.blobs, gs.blobs == 1 ? "" : "s", (double)gs.bytes / 1e6,
           gs.tmp, gs.tmp == 1 ? "" : "s");
    return 0;
}

/* ---- match ---- */

void cli_print_candidates(const struct vhpc_candidate *c, size_t nc, int best, size_t n, void *arg)
{
    (void)arg;
    if (best == 0) {
        char size[32];
        human_size(c[0].size, size, sizeof(size));
        fprintf(stderr, "vhpc: image %s:%d (%.12s, %s, %s) meets all %zu requirement%s:\n%s",
                c[0].ref.name, c[0].ref.version, c[0].ref.digest, c[0].kind, size, n,
                n == 1 ? "" : "s", c[0].report);
        size_t others = 0;
        for (size_t i = 1; i < nc && c[i].unmet == 0; i++)
            others++;
        if (others)
            fprintf(stderr, "  (chosen over %zu other%s that also fit%s)\n", others,
                    others == 1 ? "" : "s",
                    c[1].size > c[0].size ? ": it is the smallest" : ": it is the newest");
        return;
    }
    fprintf(stderr, "vhpc: no stored image meets the requirements (%zu checked)%s\n", nc,
            nc ? ":" : "");
    for (size_t i = 0; i < nc && i < 8; i++) {
        fprintf(stderr, "  %s:%d (%s) misses %d:\n", c[i].ref.name, c[i].ref.version, c[i].kind,
                c[i].unmet);
        for (const char *l = c[i].report, *nl; *l; l = nl + 1) {
            nl = strchr(l, '\n');
            if (!nl)
                break;
            fprintf(stderr, "  %.*s\n", (int)(nl - l), l);
        }
    }
    if (nc > 8)
        fprintf(stderr, "  ... and %zu more\n", nc - 8);
}

static int match(int argc, char **argv)
{
    static const char *text[64];
    static size_t n;
    static const struct cli_opt opts[] = {
        CLI_OPT("require", CLI_LIST, text, "REQ",
                "os=debian-12, kernel>=6.1, PACKAGE[OP VERSION], lib:SONAME\n(OP: = != >= <= > <; "
                "versions compare by Debian's rules)",
                .max = 64, .count = &n),
        {0}};
    static const struct cli_spec spec = {
        "image match",
        "Usage: vhpc image match --require REQ...\n"
        "Which stored image `vhpc run --require` would pick, and why.\n",
        opts, .more = NULL};
    struct vhpc_req reqs[64];
    vhpc_err_t err = {0};
    struct cli_args a;
    int ps = cli_parse(&spec, argc, argv, &a);
    if (ps != CLI_PARSED)
        return ps;
    for (size_t i = 0; i < n; i++)
        if (vhpc_req_parse(text[i], &reqs[i], &err) < 0)
            return cli_fail(&err);
    if (!n)
        return cli_usage("image match", "no --require given");
    struct vhpc_store *st;
    struct vhpc_ref ref;
    if (vhpc_store_open(NULL, &st, &err) < 0)
        return cli_fail(&err);
    struct vhpc_select_report rep = {.matched = cli_print_candidates};
    int r = vhpc_image_pick(st, reqs, n, &rep, &ref, &err);
    vhpc_store_close(st);
    if (r < 0)
        return cli_fail(&err);
    printf("%s:%d\n", ref.name, ref.version);
    return 0;
}

static const char image_help[] =
    "Usage: vhpc image COMMAND ...\n"
    "  build [--full] ...     make an image (minimal, or --full: Debian by debootstrap)\n"
    "  list                   every image version\n"
    "  show IMAGE             its manifest (OS, kernel, packages, libraries, blobs)\n"
    "  match --require REQ..  which image fits requirements, and why\n"
    "  tag IMAGE NAME[:V]     another name for an image\n"
    "  rm IMAGE...            remove names (and what only they used)\n"
    "  gc                     remove what no name uses\n"
    "  push IMAGE --nodes ..  send an image to nodes (pipelined tree)\n"
    "  pull IMAGE --from ..   fetch an image from a node\n"
    "IMAGE: NAME (newest version), NAME:VERSION, NAME@DIGEST-PREFIX or a digest prefix.\n";

/* build: --full is another verb's (cmd_image_full.c). */
static int build_any(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--full"))
            return cmd_image_build_full(argc, argv);
    return build(argc, argv);
}

int cmd_image(int argc, char **argv)
{
    static const struct cli_sub subs[] = {{"build", build_any},
                                          {"list", list},
                                          {"show", show},
                                          {"rm", rm},
                                          {"tag", tag},
                                          {"gc", gc},
                                          {"match", match},
                                          {"push", cmd_image_push},
                                          {"pull", cmd_image_pull},
                                          {NULL, NULL}};
    return cli_dispatch("image", subs, image_help, argc, argv);
}
