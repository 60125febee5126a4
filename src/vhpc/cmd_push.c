/*
 * cmd_push.c - `vhpc image push` and `vhpc image pull`: images between
 * nodes running `vhpc node serve` (the transfer itself: src/libvhpc/dist/).
 */
#include "clock.h"
#include "vhpc/dist.h"
#include "opts.h"
#include "vhpc/store.h"
#include "vhpc.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NODES 1000
#define STR_(x)   #x
#define STR(x)    STR_(x)

static const char push_usage[] =
    "Usage: vhpc image push IMAGE --nodes HOST[:PORT],... [--fanout F] [--chunk SIZE]\n"
    "                       [--mode pipeline|binomial|central] [--timeout SECONDS]\n"
    "Send an image (its manifest, name:version and every blob) from the local store\n"
    "to nodes running `vhpc node serve` (default port 7470).  Each node checks every\n"
    "chunk's CRC-32C before it stores or forwards it, and each blob's sha256 (hashed\n"
    "as the chunks arrive) before it commits it; a node that already has the image\n"
    "(verified) only forwards it.  A node that fails is reported and its children\n"
    "continue from its parent.  Prints what happened at each node; exits 1 if any\n"
    "node did not get the image.\n";

static const char pull_usage[] =
    "Usage: vhpc image pull IMAGE --from HOST[:PORT],... [--timeout SECONDS]\n"
    "Fetch an image from the first of the nodes that has a verified copy (nodes\n"
    "running `vhpc node serve`, default port 7470) into the local store, under the\n"
    "name asked for (the version the node has; NAME:VERSION: exactly that).  A node\n"
    "that answers with another image is refused; a local NAME:VERSION is never\n"
    "rebound.  Blobs already here (verified) are not fetched again; a transfer cut\n"
    "short continues from the next node.\n";

static const char image_footer[] =
    "IMAGE: NAME, NAME:VERSION, NAME@DIGEST-PREFIX or a digest prefix.\n";

/* What push and pull are told: the nodes (nodes[0..nn-1], strdup'd). */
static struct {
    char *nodes[MAX_NODES];
    size_t nn;
    int timeout_ms, fanout;
    const char *mode;
    uint64_t chunk;
} o = {.timeout_ms = 30000, .fanout = 1, .mode = "pipeline", .chunk = 1 << 20};

/* --nodes / --from LIST: add each node of the comma-separated list. */
static int add_nodes(const struct cli_opt *opt, const char *arg, vhpc_err_t *err)
{
    char *copy = strdup(arg), *save = NULL;
    if (!copy)
        return vhpc_err_set(err, -ENOMEM, "--%s", opt->name);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (o.nn >= MAX_NODES) {
            free(copy);
            return vhpc_err_setmsg(err, -E2BIG, "at most %d nodes", MAX_NODES);
        }
        o.nodes[o.nn++] = strdup(tok);
    }
    free(copy);
    return 0;
}

static int parse_timeout(const struct cli_opt *opt, const char *s, vhpc_err_t *err)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || v <= 0 || v > 3600)
        return vhpc_err_setmsg(err, -EINVAL,
                               "--timeout %s: expected seconds, more than 0 and at most 3600", s);
    o.timeout_ms = (int)(v * 1000);
    if (o.timeout_ms < 100)
        o.timeout_ms = 100;
    return 0;
}

static int parse_chunk(const struct cli_opt *opt, const char *s, vhpc_err_t *err)
{
    if (vhpc_parse_bytes(s, &o.chunk) < 0 || o.chunk < VHPC_DIST_MIN_CHUNK ||
        o.chunk > VHPC_DIST_MAX_CHUNK)
        return vhpc_err_setmsg(err, -EINVAL, "--chunk %s: expected a size from 4K to 64M (e.g. 1M)",
                               s);
    return 0;
}

static const char *const modes[] = {"pipeline", "binomial", "central"};
static const enum vhpc_dist_mode mode_of[] = {VHPC_DIST_PIPELINE, VHPC_DIST_BINOMIAL,
                                              VHPC_DIST_CENTRAL};

static int parse_mode(const struct cli_opt *opt, const char *s, vhpc_err_t *err)
{
    for (size_t i = 0; i < sizeof(modes) / sizeof(*modes); i++)
        if (!strcmp(s, modes[i]))
            return (o.mode = modes[i], 0);
    return vhpc_err_setmsg(err, -EINVAL, "--mode %s: expected pipeline, binomial or central", s);
}

#define TIMEOUT_OPT(h) CLI_OPT("timeout", CLI_FN, NULL, "S", h, .fn = parse_timeout)
static const struct cli_opt push_opts[] = {
    CLI_OPT("nodes", CLI_FN, NULL, "LIST", "the nodes, comma-separated (the option may repeat)",
            .fn = add_nodes),
    CLI_OPT("mode", CLI_FN, NULL, "MODE",
            "pipeline (default): chunks flow down a tree over the node list\nand every node "
            "forwards them while it still receives the rest;\nbinomial: whole image, store and "
            "forward: in round r every node\nthat has it sends it to one more (for comparison);\n"
            "central: this host sends to every node at once (for comparison)",
            .fn = parse_mode),
    CLI_OPT("fanout", CLI_INT, &o.fanout, "F",
            "pipeline: children per node (default 1, a chain: best when\nevery node's link has "
            "the same speed in each direction)",
            .min = 1, .max = MAX_NODES, .expect = "a number from 1 to " STR(MAX_NODES)),
    CLI_OPT("chunk", CLI_FN, NULL, "SIZE",
            "bytes per chunk, 4K..64M (default 1M; K, M, G suffixes)", .fn = parse_chunk),
    TIMEOUT_OPT("a node that shows no progress for S seconds has failed\n(default 30)"),
    {0}};

static const struct cli_opt pull_opts[] = {
    CLI_OPT("from", CLI_FN, NULL, "LIST",
            "the nodes to ask, in order, comma-separated (may repeat)", .fn = add_nodes),
    TIMEOUT_OPT("give up on a node that shows no progress for S seconds\n(default 30)"),
    {0}};

/* The options and the one IMAGE of push or pull (in *image): CLI_PARSED or
 * the exit status. */
static int parse(const struct cli_spec *spec, int argc, char **argv, const char *which,
                 const char **image)
{
    struct cli_args a;
    int st = cli_parse(spec, argc, argv, &a);
    if (st != CLI_PARSED)
        return st;
    if (a.npos > 1)
        return cli_usage(spec->cmd, "one image at a time ('%s' and '%s')", a.pos[0], a.pos[1]);
    if (a.npos < 1)
        return cli_usage(spec->cmd, "which image? (%s)", which);
    if (o.nn == 0)
        return cli_usage(spec->cmd, "no nodes: --%s HOST[:PORT],...", spec->opts[0].name);
    *image = a.pos[0];
    return CLI_PARSED;
}

static void free_nodes(void)
{
    for (size_t i = 0; i < o.nn; i++)
        free(o.nodes[i]);
    o.nn = 0;
}

static void human(uint64_t b, char *buf, size_t len)
{
    if (b >= 1000000)
        snprintf(buf, len, "%.1f MB", (double)b / 1e6);
    else if (b >= 1000)
        snprintf(buf, len, "%.1f kB", (double)b / 1e3);
    else
        snprintf(buf, len, "%" PRIu64 " B", b);
}

int cmd_image_push(int argc, char **argv)
{
    static const struct cli_spec spec = {"image push", push_usage, push_opts,
                                         .footer = image_footer, .max_pos = 2};
    const char *image;
    int rc = parse(&spec, argc, argv, "vhpc image list shows them", &image);
    if (rc != CLI_PARSED)
        goto out;
    struct vhpc_dist_push_opts po = {.fanout = (unsigned)o.fanout,
                                     .chunk = (uint32_t)o.chunk,
                                     .timeout_ms = o.timeout_ms,
                                     .nodes = (const char *const *)o.nodes,
                                     .nnodes = o.nn,
                                     .progress = 1};
    for (size_t i = 0; i < sizeof(modes) / sizeof(*modes); i++)
        if (o.mode == modes[i])
            po.mode = mode_of[i];
    signal(SIGPIPE, SIG_IGN);
    char label[200];
    snprintf(label, sizeof(label), "push %s", image);
    po.label = label;

    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_dist_result *res = NULL;
    struct vhpc_ref ref;
    if (vhpc_store_open(NULL, &st, &err) < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    int64_t t0 = vhpc_now_ms();
    int r = vhpc_dist_push(st, image, &po, &res, &ref, &err);
    vhpc_store_close(st);
    if (r < 0) {
        vhpc_err_wrap(&err, "pushing %s", image);
        rc = cli_fail(&err);
        goto out;
    }
    double secs = (double)(vhpc_now_ms() - t0) / 1000;
    int ok = 0, width = 4, nn = (int)o.nn;
    for (int i = 0; i < nn; i++) {
        int w = (int)strlen(res[i].node);
        if (w > width)
            width = w;
        ok += res[i].ok;
    }
    char chunk[32];
    human(o.chunk, chunk, sizeof(chunk));
    printf("push %s:%d (%.12s) to %d node%s, %s", ref.name, ref.version, ref.digest, nn,
           nn == 1 ? "" : "s", o.mode);
    if (po.mode == VHPC_DIST_PIPELINE)
        printf(", fanout %u", po.fanout);
    printf(", chunk %s\n", chunk);
    printf("  %-*s  %-6s  %10s  %8s\n", width, "node", "status", "received", "time");
    for (int i = 0; i < nn; i++) {
        char b[32];
        human(res[i].bytes, b, sizeof(b));
        if (res[i].ok)
            printf("  %-*s  %-6s  %10s  %6.2f s%s\n", width, res[i].node, "ok", b,
                   (double)res[i].ms / 1000, res[i].bytes ? "" : "  (had it)");
        else
            printf("  %-*s  %-6s  %10s  %8s  %s\n", width, res[i].node, "FAILED", b, "-",
                   res[i].reason);
    }
    printf("%d of %d nodes have %s:%d; %.2f s\n", ok, nn, ref.name, ref.version, secs);
    free(res);
    rc = ok == nn ? 0 : 1;
out:
    free_nodes();
    return rc;
}

int cmd_image_pull(int argc, char **argv)
{
    static const struct cli_spec spec = {"image pull", pull_usage, pull_opts,
                                         .footer = "IMAGE: NAME, NAME:VERSION or "
                                                   "NAME@DIGEST-PREFIX.\n",
                                         .max_pos = 2};
    const char *image;
    int rc = parse(&spec, argc, argv, "NAME, NAME:VERSION or a digest prefix", &image);
    if (rc != CLI_PARSED)
        goto out;
    signal(SIGPIPE, SIG_IGN);
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_ref got;
    size_t node = 0;
    if (vhpc_store_open(NULL, &st, &err) < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    int r = vhpc_dist_pull(st, image, (const char *const *)o.nodes, o.nn, o.timeout_ms, 1, &got,
                           &node, &err);
    vhpc_store_close(st);
    if (r < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    printf("pulled %s:%d (%.12s) from %s\n", got.name, got.version, got.digest, o.nodes[node]);
    rc = 0;
out:
    free_nodes();
    return rc;
}
