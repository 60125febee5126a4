/*
 * ivc.c - the IVC side of the provider: attaching the endpoint to its
 * job's region, finding co-located peers, opening channels and the hello
 * exchange that names them (struct ivf_seg in ivf.h), and what a
 * migration's suspend leaves behind.
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

static void seg_free(struct ivf_seg *seg)
{
    if (seg->chan) {
        ivc_chan_set_data(seg->chan, NULL);
        ivc_close(seg->chan);
    }
    free(seg->hb);
    free(seg);
}

void ivf_peer_segs_free(struct ivf_peer *p)
{
    while (p->segs) {
        struct ivf_seg *s = p->segs;
        p->segs = s->next;
        seg_free(s);
    }
    p->tx.seg = NULL;
    p->rx.seg = NULL;
    if (p->tx.to == IVF_IVC)
        p->tx.to = IVF_TCP;
    if (p->rx.from == IVF_IVC)
        p->rx.from = IVF_TCP;
}

void ivf_ivc_fini(struct ivf_ep *ep)
{
    while (ep->pending_segs) {
        struct ivf_seg *s = ep->pending_segs;
        ep->pending_segs = s->next;
        seg_free(s);
    }
    if (ep->ivc)
        ivc_unregister(ep->ivc);
    ep->ivc = NULL;
}

/* ---- segment I/O ---------------------------------------------------------------- */

ssize_t ivf_seg_read(struct ivf_seg *seg, void *buf, size_t len)
{
    if (seg->hb_off < seg->hb_len) {
        size_t n = seg->hb_len - seg->hb_off;
        if (n > len)
            n = len;
        memcpy(buf, seg->hb + seg->hb_off, n);
        seg->hb_off += n;
        return (ssize_t)n;
    }
    if (seg->dead || !seg->chan)
        return -1;
    ssize_t n = ivc_read(seg->chan, buf, len);
    if (n >= 0)
        return n;
    /* The channel ended: a suspend (its callback kept the unread bytes),
     * the peer closing or dying. */
    seg->dead = true;
    return seg->hb_off < seg->hb_len ? ivf_seg_read(seg, buf, len) : -1;
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

static void seg_unlink(struct ivf_peer *p, struct ivf_seg *seg)
{
    for (struct ivf_seg **pp = &p->segs; *pp; pp = &(*pp)->next)
        if (*pp == seg) {
            *pp = seg->next;
            break;
        }
}

void ivf_seg_release(struct ivf_peer *p, struct ivf_seg *seg)
{
    seg_unlink(p, seg);
    if (p->tx.seg == seg) {
        p->tx.seg = NULL;
        p->tx.to = IVF_TCP;
    }
    if (p->rx.seg == seg) {
        p->rx.seg = NULL;
        p->rx.from = IVF_TCP;
    }
    seg_free(seg);
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
    struct ivf_hdr h = {.type = IVF_IVC_HELLO, .len = sizeof(struct ivf_addr), .id = seg->id};
    memcpy(seg->hello_out, &h, sizeof(h));
    memcpy(seg->hello_out + sizeof(h), &ep->addr, sizeof(ep->addr));
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
    memcpy(h, seg->hello_in, sizeof(*h));
    memcpy(a, seg->hello_in + sizeof(*h), sizeof(*a));
    if (h->type != IVF_IVC_HELLO || h->len != sizeof(*a) || !ivf_addr_valid(a))
        return -1;
    return 1;
}

/* Both hellos through: this direction moves to the channel after FLUSH. */
static void seg_activate(struct ivf_ep *ep, struct ivf_peer *p, struct ivf_seg *seg)
{
    seg->active = true;
    struct ivf_hdr f = {.type = IVF_FLUSH, .id = seg->id};
    if (ivf_send_flush(ep, p, &f, seg) < 0)
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
            seg_free(seg);
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
        struct ivf_seg *seg = calloc(1, sizeof(*seg));
        if (!seg) {
            ivc_close(chan);
            continue;
        }
        seg->chan = chan;
        seg->connector = true;
        seg->id = rnd64();
        seg->hello_out_sent = SIZE_MAX;
        seg->deadline_ns = now_ns() + HELLO_TIMEOUT;
        ivc_chan_set_data(chan, seg);
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
        struct ivf_seg *seg = calloc(1, sizeof(*seg));
        if (!seg) {
            ivc_close(chan);
            break;
        }
        seg->chan = chan;
        seg->hello_out_sent = SIZE_MAX;
        ivc_chan_set_data(chan, seg);
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
