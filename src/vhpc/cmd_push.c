/*
 * cmd_push.c - `vhpc image push` and `vhpc image pull`: images between
 * nodes running `vhpc node serve` (the transfer itself: dist.c).
 */
#include "dist.h"
#include "store.h"
#include "vhpc.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NODES 1000

static const char push_help[] =
    "Usage: vhpc image push IMAGE --nodes HOST[:PORT],... [--fanout F] [--chunk SIZE]\n"
    "                       [--mode pipeline|binomial|central] [--timeout SECONDS]\n"
    "Send an image (its manifest, name:version and every blob) from the local store\n"
    "to nodes running `vhpc node serve` (default port 7470).  Each node checks every\n"
    "chunk's CRC-32C before it stores or forwards it, and each blob's sha256 (hashed\n"
    "as the chunks arrive) before it commits it; a node that already has the image\n"
    "(verified) only forwards it.  A node that fails is reported and its children\n"
    "continue from its parent.  Prints what happened at each node; exits 1 if any\n"
    "node did not get the image.\n"
    "  --nodes LIST     the nodes, comma-separated (the option may repeat)\n"
    "  --mode pipeline  (default) chunks flow down a tree over the node list and\n"
    "                   every node forwards them while it still receives the rest\n"
    "  --mode binomial  whole image, store and forward: in round r every node that\n"
    "                   has it sends it to one more (for comparison)\n"
    "  --mode central   this host sends to every node at once (for comparison)\n"
    "  --fanout F       pipeline: children per node (default 1, a chain: best when\n"
    "                   every node's link has the same speed in each direction)\n"
    "  --chunk SIZE     bytes per chunk, 4K..64M (default 1M; K, M, G suffixes)\n"
    "  --timeout S      a node that shows no progress for S seconds has failed\n"
    "                   (default 30)\n"
    "IMAGE: NAME, NAME:VERSION, NAME@DIGEST-PREFIX or a digest prefix.\n";

static const char pull_help[] =
    "Usage: vhpc image pull IMAGE --from HOST[:PORT],... [--timeout SECONDS]\n"
    "Fetch an image from the first of the nodes that has a verified copy (nodes\n"
    "running `vhpc node serve`, default port 7470) into the local store, under the\n"
    "name asked for (the version the node has; NAME:VERSION: exactly that).  A node\n"
    "that answers with another image is refused; a local NAME:VERSION is never\n"
    "rebound.  Blobs already here (verified) are not fetched again; a transfer cut\n"
    "short continues from the next node.\n"
    "  --from LIST  the nodes to ask, in order, comma-separated (may repeat)\n"
    "  --timeout S  give up on a node that shows no progress for S seconds\n"
    "               (default 30)\n"
    "IMAGE: NAME, NAME:VERSION or NAME@DIGEST-PREFIX.\n";

/* Split comma-separated node lists into list[]; returns the count or -1. */
static int add_nodes(const char *cmd, const char *arg, char **list, int n)
{
    char *copy = strdup(arg), *save = NULL;
    if (!copy)
        return -1;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (n >= MAX_NODES) {
            free(copy);
            cli_usage(cmd, "at most %d nodes", MAX_NODES);
            return -1;
        }
        list[n++] = strdup(tok);
    }
    free(copy);
    return n;
}

static void free_nodes(char **list, int n)
{
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int parse_timeout(const char *cmd, const char *s, int *ms)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || v <= 0 || v > 3600) {
        cli_usage(cmd, "--timeout %s: expected seconds, more than 0 and at most 3600", s);
        return -1;
    }
    *ms = (int)(v * 1000);
    if (*ms < 100)
        *ms = 100;
    return 0;
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
    const char *cmd = "image push", *image = NULL;
    char **nodes = calloc(MAX_NODES, sizeof(char *));
    int nn = 0, rc = 2;
    struct vhpc_dist_push_opts o = {.fanout = 1, .chunk = 1 << 20, .timeout_ms = 30000};
    const char *mode = "pipeline";
    if (!nodes)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(push_help, stdout);
            rc = 0;
            goto out;
        }
        if (a[0] == '-' && a[1] && i + 1 >= argc) {
            cli_usage(cmd, "'%s' needs an argument or is unknown", a);
            goto out;
        }
        if (!strcmp(a, "--nodes")) {
            if ((nn = add_nodes(cmd, argv[++i], nodes, nn)) < 0)
                goto out;
        } else if (!strcmp(a, "--fanout")) {
            char *end;
            long f = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || f < 1 || f > MAX_NODES) {
                cli_usage(cmd, "--fanout %s: expected a number from 1 to %d", argv[i], MAX_NODES);
                goto out;
            }
            o.fanout = (unsigned)f;
        } else if (!strcmp(a, "--chunk")) {
            uint64_t c;
            if (vhpc_parse_bytes(argv[++i], &c) < 0 || c < VHPC_DIST_MIN_CHUNK ||
                c > VHPC_DIST_MAX_CHUNK) {
                cli_usage(cmd, "--chunk %s: expected a size from 4K to 64M (e.g. 1M)", argv[i]);
                goto out;
            }
            o.chunk = (uint32_t)c;
        } else if (!strcmp(a, "--mode")) {
            mode = argv[++i];
            if (!strcmp(mode, "pipeline"))
                o.mode = VHPC_DIST_PIPELINE;
            else if (!strcmp(mode, "binomial"))
                o.mode = VHPC_DIST_BINOMIAL;
            else if (!strcmp(mode, "central"))
                o.mode = VHPC_DIST_CENTRAL;
            else {
                cli_usage(cmd, "--mode %s: expected pipeline, binomial or central", mode);
                goto out;
            }
        } else if (!strcmp(a, "--timeout")) {
            if (parse_timeout(cmd, argv[++i], &o.timeout_ms) < 0)
                goto out;
        } else if (a[0] == '-') {
            cli_usage(cmd, "unknown option '%s'", a);
            goto out;
        } else if (!image) {
            image = a;
        } else {
            cli_usage(cmd, "one image at a time ('%s' and '%s')", image, a);
            goto out;
        }
    }
    if (!image) {
        cli_usage(cmd, "which image? (vhpc image list shows them)");
        goto out;
    }
    if (nn == 0) {
        cli_usage(cmd, "no nodes: --nodes HOST[:PORT],...");
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    o.nodes = (const char *const *)nodes;
    o.nnodes = (size_t)nn;
    o.progress = 1;
    char label[200];
    snprintf(label, sizeof(label), "push %s", image);
    o.label = label;

    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_dist_result *res = NULL;
    struct vhpc_ref ref;
    if (vhpc_store_open(NULL, &st, &err) < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    int64_t t0 = 0;
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t0 = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    int r = vhpc_dist_push(st, image, &o, &res, &ref, &err);
    vhpc_store_close(st);
    if (r < 0) {
        vhpc_err_wrap(&err, "pushing %s", image);
        rc = cli_fail(&err);
        goto out;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double secs = (double)((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - t0) / 1000;

    int ok = 0, width = 4;
    for (int i = 0; i < nn; i++) {
        int w = (int)strlen(res[i].node);
        if (w > width)
            width = w;
        ok += res[i].ok;
    }
    char chunk[32];
    human(o.chunk, chunk, sizeof(chunk));
    printf("push %s:%d (%.12s) to %d node%s, %s", ref.name, ref.version, ref.digest, nn,
           nn == 1 ? "" : "s", mode);
    if (o.mode == VHPC_DIST_PIPELINE)
        printf(", fanout %u", o.fanout);
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
    free_nodes(nodes, nn > 0 ? nn : 0);
    return rc;
}

int cmd_image_pull(int argc, char **argv)
{
    const char *cmd = "image pull", *image = NULL;
    char **from = calloc(MAX_NODES, sizeof(char *));
    int nn = 0, rc = 2, timeout_ms = 30000;
    if (!from)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(pull_help, stdout);
            rc = 0;
            goto out;
        }
        if (a[0] == '-' && a[1] && i + 1 >= argc) {
            cli_usage(cmd, "'%s' needs an argument or is unknown", a);
            goto out;
        }
        if (!strcmp(a, "--from")) {
            if ((nn = add_nodes(cmd, argv[++i], from, nn)) < 0)
                goto out;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_timeout(cmd, argv[++i], &timeout_ms) < 0)
                goto out;
        } else if (a[0] == '-') {
            cli_usage(cmd, "unknown option '%s'", a);
            goto out;
        } else if (!image) {
            image = a;
        } else {
            cli_usage(cmd, "one image at a time ('%s' and '%s')", image, a);
            goto out;
        }
    }
    if (!image) {
        cli_usage(cmd, "which image? (NAME, NAME:VERSION or a digest prefix)");
        goto out;
    }
    if (nn == 0) {
        cli_usage(cmd, "no nodes: --from HOST[:PORT],...");
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_ref got;
    size_t node = 0;
    if (vhpc_store_open(NULL, &st, &err) < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    int r = vhpc_dist_pull(st, image, (const char *const *)from, (size_t)nn, timeout_ms, 1, &got,
                           &node, &err);
    vhpc_store_close(st);
    if (r < 0) {
        rc = cli_fail(&err);
        goto out;
    }
    printf("pulled %s:%d (%.12s) from %s\n", got.name, got.version, got.digest, from[node]);
    rc = 0;
out:
    free_nodes(from, nn > 0 ? nn : 0);
    return rc;
}
