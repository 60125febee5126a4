/*
 * push.c - vhpc_dist_push: send an image of the local store to many nodes.
 * The nodes become a tree, the same for every mode but its shape: a
 * pipeline tree of `fanout` children per node (1: a chain) whose nodes
 * forward chunks as they arrive, a binomial tree whose nodes store and
 * forward one child after the other, or the pusher alone sending to all.
 * The pusher is a store session whose kids are the tree's roots; each
 * PUSH carries the subtree below its receiver, and every node's REPORT
 * comes back up into one result per node.
 */
#include "engine.h"
#include "progress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct tree_ctx {
    const struct vhpc_dist_push_opts *o;
    char (*addr)[64];
};

static json_t *tree_children(const struct tree_ctx *t, size_t j);

/* Position pos of the tree (node pos - 1) and everything below it. */
static json_t *tree_node(const struct tree_ctx *t, size_t pos)
{
    return json_pack("{s:I, s:s, s:o}", "i", (json_int_t)(pos - 1), "addr", t->addr[pos - 1],
                     "children", tree_children(t, pos));
}

/* The children of position j (0 = the pusher, node i is position i + 1). */
static json_t *tree_children(const struct tree_ctx *t, size_t j)
{
    size_t k = t->o->nnodes, f = t->o->fanout ? t->o->fanout : 1;
    json_t *arr = json_array();
    switch (t->o->mode) {
    case VHPC_DIST_CENTRAL:
        for (size_t i = 1; j == 0 && i <= k; i++)
            json_array_append_new(arr, tree_node(t, i));
        break;
    case VHPC_DIST_BINOMIAL:
        /* Round r: every holder (positions < 2^r) sends to position + 2^r. */
        for (size_t step = 1; step <= k; step <<= 1)
            if (step > j && j + step <= k)
                json_array_append_new(arr, tree_node(t, j + step));
        break;
    default:
        for (size_t i = 0; i < f && j * f + 1 + i <= k; i++)
            json_array_append_new(arr, tree_node(t, j * f + 1 + i));
    }
    return arr;
}

/* Resolve every node before sending anything: addr[i] is node i's
 * "ip:port", out[i] its result until a REPORT says otherwise. */
static int resolve_nodes(const struct vhpc_dist_push_opts *o, char (*addr)[64],
                         struct vhpc_dist_result *out, vhpc_err_t *err)
{
    for (size_t i = 0; i < o->nnodes; i++) {
        struct sockaddr_storage sa;
        socklen_t sl;
        int r = vhpc_dist_resolve(o->nodes[i], &sa, &sl, err);
        if (r < 0)
            return r;
        vhpc_dist_addr_str((struct sockaddr *)&sa, addr[i], sizeof(addr[i]));
        for (size_t j = 0; j < i; j++)
            if (!strcmp(addr[i], addr[j]))
                return vhpc_err_setmsg(err, -EINVAL, "nodes '%s' and '%s' are the same (%s)",
                                       o->nodes[j], o->nodes[i], addr[i]);
        snprintf(out[i].node, sizeof(out[i].node), "%s", o->nodes[i]);
        snprintf(out[i].addr, sizeof(out[i].addr), "%s", addr[i]);
        snprintf(out[i].reason, sizeof(out[i].reason), "no report came back");
    }
    return 0;
}

/* What came back: every node's entry in the roots' REPORTs (or their
 * failures, which kid.c records alike). */
static void collect(const struct session *s, size_t nnodes, struct vhpc_dist_result *out)
{
    for (size_t k = 0; k < s->nkids; k++) {
        size_t i;
        json_t *ent;
        json_array_foreach(s->kids[k]->entries, i, ent)
        {
            json_int_t idx = json_integer_value(json_object_get(ent, "i"));
            if (idx < 0 || (size_t)idx >= nnodes)
                continue;
            struct vhpc_dist_result *x = &out[idx];
            int ok = json_is_true(json_object_get(ent, "ok"));
            if (x->ok && !ok)
                continue; /* it got the image all the same */
            x->ok = ok;
            snprintf(x->reason, sizeof(x->reason), "%s",
                     ok ? "" : json_string_value(json_object_get(ent, "reason")) ?: "failed");
            x->bytes = (uint64_t)json_integer_value(json_object_get(ent, "bytes"));
            x->ms = (int64_t)json_integer_value(json_object_get(ent, "ms"));
        }
    }
}

/* The push itself: a store session whose kids are the tree's roots, run
 * until every node reported or failed. */
static int run(struct vhpc_store *st, const struct vhpc_ref *img,
               const struct vhpc_dist_push_opts *o, char (*addr)[64], struct vhpc_dist_result *out,
               vhpc_err_t *err)
{
    struct engine e;
    int r;
    if ((r = dist_engine_init(&e, st, err)) < 0)
        return r;
    struct session *s = dist_session_from_store(&e, img, 0, err);
    if (!s) {
        dist_engine_fini(&e);
        return err->code;
    }
    s->chunk = o->chunk;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    s->seq = o->mode == VHPC_DIST_BINOMIAL;
    s->uid = getuid();
    if (dist_check_chunking(s->b, s->nb, s->chunk, err) < 0) {
        r = err->code;
        dist_session_release(s);
        dist_engine_fini(&e);
        return r;
    }
    for (size_t i = 0; i < s->nb && r == 0; i++)
        if (dist_blob_set_chunking(s, &s->b[i]) < 0)
            r = vhpc_err_set(err, -ENOMEM, "pushing");
    e.client = s;
    uint64_t size = 0;
    for (size_t i = 0; i < s->nb; i++)
        size += s->b[i].size;
    struct vhpc_progress prog;
    if (o->progress) {
        vhpc_progress_start(&prog, o->label ? o->label : "push", size * o->nnodes);
        e.prog = &prog;
    }
    struct tree_ctx t = {o, addr};
    json_t *roots = tree_children(&t, 0);
    size_t i;
    json_t *node;
    json_array_foreach(roots, i, node) dist_kid_add(s, node);
    json_decref(roots);
    dist_session_progress(s);
    if (r == 0)
        dist_engine_run(&e, NULL);
    collect(s, o->nnodes, out);
    if (s->own == -1)
        r = vhpc_err_setmsg(err, -EIO, "%s", s->reason);
    int all_ok = r == 0;
    for (size_t k = 0; k < o->nnodes; k++)
        all_ok &= out[k].ok;
    if (o->progress) {
        /* What the nodes received, from their REPORTs: the heartbeats come
         * every HEARTBEAT_MS, and a push may end before the first. */
        uint64_t moved = 0;
        for (size_t k = 0; k < o->nnodes; k++)
            moved += out[k].bytes;
        if (moved > prog.done)
            prog.done = moved;
        vhpc_progress_done(&prog, all_ok);
    }
    e.client = NULL;
    dist_session_release(s);
    dist_engine_fini(&e);
    return r;
}

int vhpc_dist_push(struct vhpc_store *st, const char *ref, const struct vhpc_dist_push_opts *o,
                   struct vhpc_dist_result **res, struct vhpc_ref *ref_out, vhpc_err_t *err)
{
    struct vhpc_ref img;
    int r;
    if (!o->nnodes)
        return vhpc_err_setmsg(err, -EINVAL, "no nodes to push to (--nodes HOST[:PORT],...)");
    if (o->nnodes > VHPC_DIST_MAX_TREE)
        return vhpc_err_setmsg(err, -EINVAL, "at most %d nodes", VHPC_DIST_MAX_TREE);
    if (o->chunk < VHPC_DIST_MIN_CHUNK || o->chunk > VHPC_DIST_MAX_CHUNK)
        return vhpc_err_setmsg(err, -EINVAL, "the chunk size must be 4 KiB .. 64 MiB");
    if ((r = vhpc_store_resolve(st, ref, &img, err)) < 0)
        return r;
    if (!img.name[0])
        return vhpc_err_setmsg(
            err, -EINVAL, "image %.12s has no name; tag it first (vhpc image tag)", img.digest);
    char(*addr)[64] = calloc(o->nnodes, sizeof(*addr));
    struct vhpc_dist_result *out = calloc(o->nnodes, sizeof(*out));
    if (!addr || !out) {
        free(addr);
        free(out);
        return vhpc_err_set(err, -ENOMEM, "pushing");
    }
    r = resolve_nodes(o, addr, out, err);
    if (r == 0) {
        r = run(st, &img, o, addr, out, err);
        if (ref_out)
            *ref_out = img;
    }
    free(addr);
    if (r < 0) {
        free(out);
        return r;
    }
    *res = out;
    return 0;
}
