/*
 * ivc.c - the IVC side of the provider: attaching the endpoint to its
 * job's region, finding co-located peers, opening channels and the hello
 * exchange that names them (struct ivf_seg in ivf.h), the segment a FLUSH
 * names, and keeping what a migration's suspend hands back (read by
 * stream.c).
 */
#include "ivf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define SCAN_NS       (100 * 1000000ull) /* look for co-located peers this often */
#define HELLO_TIMEOUT (5 * 1000000000ull)
#define MAX_HOSTS     1024

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd64(void)
{
    uint64_t v = 0;
    while (!v)
        if (getrandom(&v, sizeof(v), 0) != sizeof(v))
            v = now_ns() ^ ((uint64_t)getpid() << 40);
    return v;
}

/* ---- callbacks from libivc (inside its calls, during our progress) ------------ */

static void on_suspend(ivc_chan_t *chan, const void *unread, size_t len, void *arg)
{
    struct ivf_seg *seg = ivc_chan_get_data(chan);
    if (!seg)
        return;
    if (len) {
        size_t keep = seg->hb_len - seg->hb_off;
        uint8_t *hb = malloc(keep + len);
        if (!hb) {
            IVF_WARN(FI_LOG_EP_DATA, "out of memory keeping %zu bytes handed back\n", len);
            seg->dead = true;
            if (seg->peer)
                seg->peer->failed = -FI_ENOMEM;
            return;
        }
        if (keep)
            memcpy(hb, seg->hb + seg->hb_off, keep);
        memcpy(hb + keep, unread, len);
        free(seg->hb);
        seg->hb = hb;
        seg->hb_len = keep + len;
        seg->hb_off = 0;
    }
    seg->dead = true;
}

static void on_arrive(ivc_ctx_t *ctx, void *arg)
{
    struct ivf_ep *ep = arg;
    ep->next_scan_ns = 0; /* look for the new neighbours now */
    ep->next_slow_ns = 0;
}

/* ---- setup ---------------------------------------------------------------------- */

void ivf_ivc_init(struct ivf_ep *ep)
{
    if (!ivf_params.ivc || !ivf_params.job)
        return;
    uint32_t client = (uint32_t)rnd64() & 0x7fffffffu;
    if (!client)
        client = 1;
    ivc_options_t o = {0};
    int r = ivc_register(ivf_params.job, client, &o, &ep->ivc);
    if (r < 0) {
        IVF_INFO(FI_LOG_EP_CTRL, "no IVC region for job %llu (%s): TCP only\n",
                 (unsigned long long)ivf_params.job, ivc_strerror(r));
        ep->ivc = NULL;
        return;
    }
    ivc_callbacks_t cb = {.suspend = on_suspend, .arrive = on_arrive, .arg = ep};
    ivc_set_callbacks(ep->ivc, &cb);
    ep->addr.job = ivf_params.job;
    ep->addr.ivc_client = client;
}

void ivf_ivc_fini(struct ivf_ep *ep)
{
    while (ep->pending_segs) {
        struct ivf_seg *s = ep->pending_segs;
        ep->pending_segs = s->next;
        ivf_seg_free(s);
    }
    if (ep->ivc)
        ivc_unregister(ep->ivc);
    ep->ivc = NULL;
}

static void seg_attach(struct ivf_peer *p, struct ivf_seg *seg)
{
    seg->peer = p;
    seg->next = NULL;
    struct ivf_seg **pp = &p->segs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = seg;
}

static int hello_pull(struct ivf_seg *seg, struct ivf_hdr *h, struct ivf_addr *a);

struct ivf_seg *ivf_seg_for_flush(struct ivf_ep *ep, struct ivf_peer *p, uint64_t id, int *err)
{
    struct ivf_seg *s;
    *err = 0;
    for (s = p->segs; s && s->id != id; s = s->next)
        ;
    if (!s)
        return NULL;
    /* The peer's hello precedes its stream on the channel: a connector that
     * has not read it yet (its FLUSH can overtake it) reads it now. */
    struct ivf_hdr h;
    struct ivf_addr a;
    int r = hello_pull(s, &h, &a);
    if (r == 0)
        return NULL;
    if (r < 0 || a.uid != p->addr.uid) {
        *err = -FI_EIO;
        return NULL;
    }
    /* Older channels never carried this direction (no FLUSH named them). */
    while (p->segs != s)
        ivf_seg_release(p, p->segs);
    return s;
}

/* ---- hellos ------------------------------------------------------------------- */

static void hello_fill(struct ivf_ep *ep, struct ivf_seg *seg)
{
    ivf_hello_fill(seg->hello_out, IVF_IVC_HELLO, seg->id, &ep->addr);
    seg->hello_out_sent = 0;
}

/* 1: all of our hello is in the channel; 0: not yet; -1: the channel died. */
static int hello_push(struct ivf_seg *seg)
{
    while (seg->hello_out_sent < IVF_HELLO_LEN) {
        if (seg->dead || !seg->chan)
            return -1;
        ssize_t n = ivc_write(seg->chan, seg->hello_out + seg->hello_out_sent,
                              IVF_HELLO_LEN - seg->hello_out_sent);
        if (n < 0) {
            seg->dead = true;
            return -1;
        }
        if (n == 0)
            return 0;
        seg->hello_out_sent += (size_t)n;
    }
    return 1;
}

/* 1: the peer's hello is in and well formed (*a filled); 0: not yet; -1: dead or bad. */
static int hello_pull(struct ivf_seg *seg, struct ivf_hdr *h, struct ivf_addr *a)
{
    while (seg->hello_in_got < IVF_HELLO_LEN) {
        ssize_t n =
            ivf_seg_read(seg, seg->hello_in + seg->hello_in_got, IVF_HELLO_LEN - seg->hello_in_got);
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        seg->hello_in_got += (size_t)n;
    }
    /* A wrong one (another version included) is logged by the caller. */
    return ivf_hello_check(seg->hello_in, IVF_IVC_HELLO, h, a) ? -1 : 1;
}

/* Both hellos through: this direction moves to the channel after FLUSH. */
static void seg_activate(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_seg *seg)
{
    seg->active = true;
    if (ivf_send_flush(ep, p, seg) < 0)
        seg->dead = true;
    char s[160];
    ivf_addr_str(&p->addr, s, sizeof(s));
    IVF_INFO(FI_LOG_EP_CTRL, "IVC channel %016llx to %s up\n", (unsigned long long)seg->id, s);
}

/* A connector's channel: wait for the accept, send our hello, read theirs. */
static void connector_step(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_seg *seg)
{
    if (seg->dead || seg->active)
        return;
    if (now_ns() > seg->deadline_ns) {
        IVF_INFO(FI_LOG_EP_CTRL, "IVC channel %016llx: no answer, staying on TCP\n",
                 (unsigned long long)seg->id);
        ivc_chan_set_data(seg->chan, NULL);
        ivc_close(seg->chan);
        seg->chan = NULL;
        seg->dead = true;
        return;
    }
    int st = ivc_chan_state(seg->chan);
    if (st == IVC_CHAN_CONNECTING)
        return;
    if (st != IVC_CHAN_OPEN) {
        seg->dead = true;
        return;
    }
    if (seg->hello_out_sent == SIZE_MAX)
        hello_fill(ep, seg);
    if (hello_push(seg) <= 0)
        return;
    struct ivf_hdr h;
    struct ivf_addr a;
    int r = hello_pull(seg, &h, &a);
    if (r == 0)
        return;
    if (r < 0 || a.uid != p->addr.uid || h.id != seg->id) {
        if (!seg->dead)
            IVF_WARN(FI_LOG_EP_CTRL, "IVC channel %016llx: a wrong hello; staying on TCP\n",
                     (unsigned long long)seg->id);
        seg->dead = true;
        return;
    }
    seg_activate(ep, p, seg);
}

/* An accepted channel: read the connector's hello, then answer. */
static void acceptor_step(struct ivf_ep *ep, struct ivf_seg *seg)
{
    struct ivf_hdr h;
    struct ivf_addr a;
    if (!seg->peer) {
        int r = hello_pull(seg, &h, &a);
        if (r == 0)
            return;
        /* Off the pending list either way. */
        for (struct ivf_seg **pp = &ep->pending_segs; *pp; pp = &(*pp)->next)
            if (*pp == seg) {
                *pp = seg->next;
                break;
            }
        struct ivf_peer *p = r > 0 && a.job == ep->addr.job ? ivf_peer_get(ep, &a) : NULL;
        if (!p) {
            IVF_WARN(FI_LOG_EP_CTRL, "an IVC channel without a valid hello: closed\n");
            ivf_seg_free(seg);
            return;
        }
        seg->id = h.id;
        seg_attach(p, seg);
        hello_fill(ep, seg);
    }
    if (seg->dead || seg->active)
        return;
    if (hello_push(seg) > 0)
        seg_activate(ep, seg->peer, seg);
}

/* ---- progress -------------------------------------------------------------------- */

/* A segment for a channel being set up (its id and peer come later). */
static struct ivf_seg *seg_new(ivc_chan_t *chan)
{
    struct ivf_seg *seg = calloc(1, sizeof(*seg));
    if (!seg) {
        ivc_close(chan);
        return NULL;
    }
    seg->chan = chan;
    seg->hello_out_sent = SIZE_MAX;
    ivc_chan_set_data(chan, seg);
    return seg;
}

static bool has_live_seg(const struct ivf_peer *p)
{
    for (const struct ivf_seg *s = p->segs; s; s = s->next)
        if (!s->dead)
            return true;
    return false;
}

static void scan(struct ivf_ep *ep)
{
    int st = ivc_progress(ep->ivc);
    if (st == IVC_CTX_DETACHED) {
        int r = ivc_reattach(ep->ivc, NULL);
        if (r < 0 && r != IVC_ENODEV)
            IVF_INFO(FI_LOG_EP_CTRL, "IVC re-attach: %s\n", ivc_strerror(r));
        return;
    }
    if (st != IVC_CTX_ATTACHED)
        return;
    ivc_peer_t hosts[MAX_HOSTS]; /* 12 KiB; not static: domains may progress in parallel */
    int n = ivc_get_hosts(ep->ivc, hosts, MAX_HOSTS);
    if (n <= 0)
        return;
    if (n > MAX_HOSTS)
        n = MAX_HOSTS;
    for (struct ivf_peer *p = ep->peers; p; p = p->next) {
        /* The endpoint with the smaller uid opens the channel. */
        if (p->failed || p->addr.job != ep->addr.job || !p->addr.ivc_client ||
            p->addr.uid <= ep->addr.uid || has_live_seg(p))
            continue;
        bool here = false;
        for (int i = 0; i < n && !here; i++)
            here = hosts[i].client_id == p->addr.ivc_client;
        if (!here)
            continue;
        ivc_chan_t *chan;
        if (ivc_connect_start(ep->ivc, p->addr.ivc_client, &chan) < 0)
            continue;
        struct ivf_seg *seg = seg_new(chan);
        if (!seg)
            continue;
        seg->connector = true;
        seg->id = rnd64();
        seg->deadline_ns = now_ns() + HELLO_TIMEOUT;
        seg_attach(p, seg);
    }
}

void ivf_ivc_progress(struct ivf_ep *ep)
{
    if (!ep->ivc)
        return;
    uint64_t now = now_ns();
    if (now >= ep->next_scan_ns) {
        ep->next_scan_ns = now + SCAN_NS;
        scan(ep);
    }
    ivc_chan_t *chan;
    while (ivc_accept(ep->ivc, 0, &chan) == 0) {
        struct ivf_seg *seg = seg_new(chan);
        if (!seg)
            break;
        seg->next = ep->pending_segs;
        ep->pending_segs = seg;
    }
    for (struct ivf_seg *s = ep->pending_segs, *next; s; s = next) {
        next = s->next;
        acceptor_step(ep, s);
    }
    bool busy = false, setup = false;
    for (struct ivf_peer *p = ep->peers; p; p = p->next)
        for (struct ivf_seg *s = p->segs; s; s = s->next) {
            if (s->connector)
                connector_step(ep, p, s);
            else
                acceptor_step(ep, s);
            busy |= !s->dead;
            setup |= !s->dead && !s->active;
        }
    ep->ivc_busy = busy || ep->pending_segs;
    ep->ivc_setup = setup;
}
