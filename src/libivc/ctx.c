/*
 * ctx.c - group membership: ivc_register(), ivc_unregister(),
 * ivc_get_hosts() and the context's accessors.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t ring_size_from_env(void)
{
    const char *s = getenv("IVC_RING_SIZE");
    if (!s || !*s)
        return 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end == 'k' || *end == 'K')
        v <<= 10;
    else if (*end == 'm' || *end == 'M')
        v <<= 20;
    return (size_t)v;
}

int ivc_register(uint64_t magic, uint32_t client_id, const ivc_options_t *opts, ivc_ctx_t **out)
{
    struct ivc_ctx *ctx;
    int r;

    if (!out)
        return IVC_EINVAL;
    *out = NULL;
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return IVC_ENOMEM;
    ctx->magic = magic;
    ctx->client_id = client_id;
    ctx->sock = -1;
    ctx->ring_size = opts && opts->ring_size ? opts->ring_size : ring_size_from_env();
    if (!ctx->ring_size)
        ctx->ring_size = IVC_DEFAULT_RING;
    ctx->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : IVC_DEFAULT_TIMEOUT_MS;
    if (ctx->ring_size < IVC_RING_MIN || ctx->ring_size > IVC_RING_MAX ||
        (ctx->ring_size & (ctx->ring_size - 1))) {
        free(ctx);
        return IVC_EINVAL;
    }
    if (opts && opts->location && !(ctx->location = strdup(opts->location))) {
        free(ctx);
        return IVC_ENOMEM;
    }
    if ((r = ivc__attach(ctx)) < 0) {
        free(ctx->location);
        free(ctx);
        return r;
    }
    *out = ctx;
    return 0;
}

int ivc_unregister(ivc_ctx_t *ctx)
{
    if (!ctx)
        return IVC_EINVAL;
    /* ivc_close() may free channels (its reap): start over after each. */
    for (struct ivc_chan *ch = ctx->chans; ch;) {
        if (ch->closed) {
            ch = ch->next;
            continue;
        }
        ivc_close(ch);
        ch = ctx->chans;
    }
    if (ctx->state == IVC_CTX_ATTACHED) {
        /* Leave the slot: the new generation tells partners we are gone;
         * DEPARTED (not FREE) keeps our share from being reused while they
         * still read what we wrote.  ivcd frees it once they are done. */
        uint64_t st = ctx->my_status;
        atomic_compare_exchange_strong(ctx->status_p, &st,
                                       IVC_EP_STATUS(ctx->gen + 1, ctx->vm_id, IVC_EP_DEPARTED));
    }
    ivc__chan_free_all(ctx);
    ivc__detach(ctx);
    free(ctx->location);
    free(ctx);
    return 0;
}

int ivc_get_hosts(ivc_ctx_t *ctx, ivc_peer_t *peers, size_t max)
{
    int n = 0;

    if (!ctx || (max && !peers))
        return IVC_EINVAL;
    if (ctx->state != IVC_CTX_ATTACHED)
        return ctx->state == IVC_CTX_BROKEN ? IVC_EPROTO : IVC_ENOTCONN;
    int r = ivc__check_header(ctx);
    if (r < 0)
        return r;
    ivc__drain_socket(ctx);
    for (uint32_t i = 0; i < ctx->g.max_eps; i++) {
        struct ivc__ep_snap snap;
        if (i == ctx->ep || !ivc__ep_snapshot(ctx, i, &snap))
            continue;
        if ((size_t)n < max)
            peers[n] = (ivc_peer_t){.client_id = snap.client_id,
                                    .vm_id = IVC_EP_CLIENT(snap.status),
                                    .slot = (uint16_t)i,
                                    .pid = snap.pid};
        n++;
    }
    return n;
}

bool ivc__ep_snapshot(const struct ivc_ctx *ctx, uint32_t i, struct ivc__ep_snap *snap)
{
    struct ivc_ep *e = ivc__ep(ctx, i);
    uint64_t st = atomic_load_explicit(&e->status, memory_order_acquire);
    if (IVC_EP_STATE(st) != IVC_EP_LIVE)
        return false;
    uint64_t magic = e->job_magic;
    snap->client_id = e->client_id;
    snap->pid = e->pid;
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&e->status, memory_order_relaxed) != st || magic != ctx->magic)
        return false;
    snap->status = st;
    return true;
}

int ivc_self(const ivc_ctx_t *ctx, ivc_peer_t *self)
{
    if (!ctx || !self)
        return IVC_EINVAL;
    if (ctx->state != IVC_CTX_ATTACHED)
        return ctx->state == IVC_CTX_BROKEN ? IVC_EPROTO : IVC_ENOTCONN;
    *self = (ivc_peer_t){.client_id = ctx->client_id,
                         .vm_id = ctx->vm_id,
                         .slot = (uint16_t)ctx->ep,
                         .pid = (int32_t)getpid()};
    return 0;
}

int ivc_set_callbacks(ivc_ctx_t *ctx, const ivc_callbacks_t *cbs)
{
    if (!ctx)
        return IVC_EINVAL;
    if (cbs)
        ctx->cbs = *cbs;
    else
        memset(&ctx->cbs, 0, sizeof(ctx->cbs));
    return 0;
}

int ivc_ctx_state(const ivc_ctx_t *ctx)
{
    return ctx ? ctx->state : IVC_EINVAL;
}
