/*
 * region.c - the job's shared region as ivcd sees it: creation (a sealed
 * memfd with the header of ivc_layout.h), the client table, and every
 * decision ivcd takes from what processes wrote into the endpoint table and
 * the connection records: reclaiming a dead client's endpoints, the
 * migration suspend/resume handshake, and whether partners drained.
 *
 * This is the only file that reads the region, and the region is untrusted:
 * any guest may write anything anywhere at any time.  So every word is read
 * once into a local, every index is checked against ivcd's private geometry
 * (never against the header in shared memory), and status words ivcd changes
 * are changed by compare-and-swap from the value it just judged, so that a
 * concurrent claim or unregister by a process is never overwritten.  A
 * garbage value makes ivcd ignore a record or free a slot, never crash.
 */
#include "ivcd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RECLAIM_TRIES 8 /* CAS attempts on one slot before giving up on it for now */

static struct ivc_hdr *region_hdr(const struct ivcd_region *r)
{
    return (struct ivc_hdr *)r->base;
}

static struct ivc_client *client_at(const struct ivcd_region *r, uint32_t i)
{
    return (struct ivc_client *)(r->base + r->g.clients_off) + i;
}

static struct ivc_ep *ep_at(const struct ivcd_region *r, uint32_t i)
{
    return (struct ivc_ep *)(r->base + r->g.eps_off) + i;
}

static struct ivc_conn *conn_at(const struct ivcd_region *r, uint64_t i)
{
    return (struct ivc_conn *)(r->base + r->g.conns_off) + i;
}

/* Read a plain (non-atomic) field of the region exactly once. */
static uint32_t rd32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static int32_t rd32s(const int32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static uint64_t ld(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_acquire);
}

static bool cas(_Atomic uint64_t *p, uint64_t expect, uint64_t want)
{
    return atomic_compare_exchange_strong(p, &expect, want);
}

static const char *ep_state_name(uint8_t st)
{
    switch (st) {
    case IVC_EP_FREE: return "free";
    case IVC_EP_LIVE: return "live";
    case IVC_EP_SUSPENDING: return "suspending";
    case IVC_EP_DEPARTED: return "departed";
    default: return "invalid";
    }
}

static void fill_blocker(const struct ivcd_region *r, uint32_t slot, struct ivcd_blocker *b)
{
    if (!b)
        return;
    struct ivc_ep *e = ep_at(r, slot);
    b->slot = slot;
    b->client_id = rd32(&e->client_id);
    b->pid = rd32s(&e->pid);
}

int region_create(struct ivcd_region *r, const struct ivcd_config *cfg, struct ivcd_err *err)
{
    char name[48];
    unsigned int flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;

    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (ivc_geometry_compute(&r->g, cfg->size, cfg->max_peers, cfg->max_eps, cfg->conns_per_ep) < 0)
        return ivcd_err_set(err, 0, "the region's tables do not fit in %" PRIu64 " bytes",
                            cfg->size);
    r->departed_word = calloc(cfg->max_eps, sizeof(uint64_t));
    r->departed_deadline = calloc(cfg->max_eps, sizeof(uint64_t));
    if (!r->departed_word || !r->departed_deadline)
        return ivcd_err_set(err, ENOMEM, "allocating the endpoint bookkeeping");

    snprintf(name, sizeof(name), "ivc-job-%" PRIu64, cfg->magic);
    if (cfg->hugetlb)
        flags |= MFD_HUGETLB;
    r->fd = memfd_create(name, flags);
    if (r->fd < 0 && cfg->hugetlb)
        return ivcd_err_set(err, 0,
                            "creating the region with --hugetlb: %s (does this kernel "
                            "support MFD_HUGETLB?)",
                            strerror(errno));
    if (r->fd < 0)
        return ivcd_err_set(err, errno, "creating the region (memfd_create)");
    if (ftruncate(r->fd, (off_t)cfg->size) < 0) {
        if (cfg->hugetlb && errno == EINVAL)
            return ivcd_err_set(err, 0,
                                "sizing the region to %" PRIu64 " bytes with --hugetlb: %s (the "
                                "size must be a multiple of the huge page size)",
                                cfg->size, strerror(errno));
        return ivcd_err_set(err, errno, "sizing the region to %" PRIu64 " bytes", cfg->size);
    }
    /* Nobody may resize it: a shrink would SIGBUS every process mapping it. */
    if (fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        return ivcd_err_set(err, errno, "sealing the region against resizing");

    /* ivcd touches the tables only; hugetlb mappings must cover whole huge
     * pages, so there it maps everything. */
    r->map_len = cfg->hugetlb ? cfg->size : r->g.pool_off;
    void *p = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (p == MAP_FAILED) {
        r->base = NULL;
        if (cfg->hugetlb && errno == ENOMEM)
            return ivcd_err_set(err, 0,
                                "mapping the region with --hugetlb: %s (are enough huge pages "
                                "reserved? see /proc/sys/vm/nr_hugepages)",
                                strerror(ENOMEM));
        return ivcd_err_set(err, errno, "mapping the region");
    }
    r->base = p;

    struct ivc_hdr *h = region_hdr(r);
    h->version = IVC_LAYOUT_VERSION;
    h->hdr_size = sizeof(struct ivc_hdr);
    h->region_size = cfg->size;
    h->job_magic = cfg->magic;
    h->max_clients = r->g.max_clients;
    h->max_eps = r->g.max_eps;
    h->conns_per_ep = r->g.conns_per_ep;
    h->clients_off = r->g.clients_off;
    h->eps_off = r->g.eps_off;
    h->conns_off = r->g.conns_off;
    h->pool_off = r->g.pool_off;
    h->share_size = r->g.share_size;
    atomic_store_explicit(&h->ivcd_pid, (uint64_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&h->ivcd_heartbeat, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    h->signature = IVC_REGION_SIGNATURE; /* last: a complete header */
    return 0;
}

void region_destroy(struct ivcd_region *r)
{
    if (r->base)
        munmap(r->base, r->map_len);
    if (r->fd >= 0)
        close(r->fd);
    free(r->departed_word);
    free(r->departed_deadline);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

void region_set_client(struct ivcd_region *r, uint16_t id, uint32_t gen,
                       enum ivc_client_state state, pid_t pid)
{
    struct ivc_client *c = client_at(r, id);
    c->pid = pid > 0 ? (uint64_t)pid : 0;
    atomic_store_explicit(&c->status, ((uint64_t)gen << 32) | (uint8_t)state, memory_order_release);
}

/* The reader of a ring in e's share, endpoint `reader` of generation
 * `reader_gen` whose side of the record is `side`: does it still read?
 * Not once its side is DRAINED, CLOSED or ABORTED, nor once it is gone (a
 * later generation, or FREE).  If it does, *blk names it. */
static bool still_reading(const struct ivcd_region *r, uint8_t side, uint32_t reader,
                          uint32_t reader_gen, struct ivcd_blocker *blk)
{
    if (side == IVC_SIDE_DRAINED || side == IVC_SIDE_CLOSED || side == IVC_SIDE_ABORTED)
        return false;
    uint64_t pst = ld(&ep_at(r, reader)->status);
    if (IVC_EP_GEN(pst) != reader_gen || IVC_EP_STATE(pst) == IVC_EP_FREE)
        return false;
    fill_blocker(r, reader, blk);
    return true;
}

/* The target side's state of `c` when it is live in the initiator's round
 * (`is`, the initiator side's word), else IVC_SIDE_IDLE. */
static uint8_t live_target(struct ivc_conn *c, uint64_t is)
{
    uint64_t ts = ld(&c->t_state);
    uint8_t tst = IVC_SIDE_STATE(ts);
    if (IVC_SIDE_SEQ(ts) != IVC_SIDE_SEQ(is) || tst == IVC_SIDE_REFUSED)
        return IVC_SIDE_IDLE;
    return tst;
}

/*
 * Have the partners of incarnation `gen` of endpoint slot `e` finished with
 * the rings in e's share of the pool?  Until they have, the slot must not be
 * handed to a new process (which would reuse that memory), and a suspend of
 * e is not complete.  A channel counts (in *nchan) once its target accepted
 * it; it is drained when the side that reads e's ring is done with it:
 *
 *  (a) Records e initiated, [e*cpe, (e+1)*cpe): the target t reads the
 *      initiator->target ring in e's share.  Skipped when e's side is IDLE
 *      or REFUSED, or the record belongs to an earlier owner of the
 *      slot (init_gen != gen).  Drained when t's side, for this use of the
 *      record (same seq), is DRAINED or CLOSED (or never accepted: IDLE,
 *      REFUSED, another seq), or t is gone: its generation is no longer
 *      target_gen or it is FREE.  e's own side does not matter: a channel e
 *      closed may still hold bytes its target has not read.
 *  (b) Records other endpoints initiated to e (target_ep == e and
 *      target_gen == gen): the initiator reads the target->initiator ring in
 *      e's share once e accepted (t_state with the record's seq, not IDLE or
 *      REFUSED).  Drained when the initiator's side is DRAINED or CLOSED, or
 *      the initiator is gone: its generation is no longer init_gen or it is
 *      FREE.
 *
 * Every index comes from the region and is checked; a record with an index
 * out of range or pointing at e itself is garbage and ignored.  On false,
 * *blk names the first partner still draining.
 */
static bool partners_drained(const struct ivcd_region *r, uint32_t e, uint32_t gen,
                             struct ivcd_blocker *blk, uint32_t *nchan)
{
    const uint32_t neps = r->g.max_eps, cpe = r->g.conns_per_ep;
    uint32_t n = 0;

    for (uint32_t k = 0; k < cpe; k++) { /* (a) */
        struct ivc_conn *c = conn_at(r, (uint64_t)e * cpe + k);
        uint64_t is = ld(&c->i_state);
        uint8_t ist = IVC_SIDE_STATE(is);
        if (ist == IVC_SIDE_IDLE || ist == IVC_SIDE_REFUSED)
            continue;
        if (rd32(&c->init_gen) != gen)
            continue;
        uint32_t t = rd32(&c->target_ep);
        uint32_t tgen = rd32(&c->target_gen);
        if (t >= neps || t == e)
            continue;
        uint8_t tst = live_target(c, is);
        if (tst == IVC_SIDE_IDLE)
            continue;
        n++;
        if (still_reading(r, tst, t, tgen, blk))
            return false;
    }

    for (uint64_t i = 0; i < (uint64_t)neps * cpe; i++) { /* (b) */
        uint32_t o = (uint32_t)(i / cpe);
        if (o == e) {
            i += cpe - 1;
            continue;
        }
        struct ivc_conn *c = conn_at(r, i);
        if (rd32(&c->target_ep) != e || rd32(&c->target_gen) != gen)
            continue;
        uint64_t is = ld(&c->i_state);
        uint8_t ist = IVC_SIDE_STATE(is);
        if (ist == IVC_SIDE_IDLE)
            continue;
        uint8_t tst = live_target(c, is);
        if (tst == IVC_SIDE_IDLE)
            continue;
        n++;
        if (still_reading(r, ist, o, rd32(&c->init_gen), blk))
            return false;
    }
    if (nchan)
        *nchan = n;
    return true;
}

/* Start waiting for the partners of a DEPARTED endpoint (status `word`,
 * whose generation is one past the one its partners connected to). */
static void track_departed(struct ivcd_region *r, uint32_t e, uint64_t word, uint64_t now)
{
    r->departed_word[e] = word;
    r->departed_deadline[e] = now + IVCD_DEPARTED_MAX_MS;
    log_info("endpoint %u of client %u departed; freed once its partners drained", e,
             IVC_EP_CLIENT(word));
}

void region_tick(struct ivcd_region *r, uint64_t now)
{
    struct ivc_hdr *h = region_hdr(r);

    /* ivcd is the only writer: store its own count, never read one back. */
    r->heartbeat++;
    atomic_store_explicit(&h->ivcd_pid, (uint64_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&h->ivcd_heartbeat, r->heartbeat, memory_order_release);

    for (uint32_t e = 0; e < r->g.max_eps; e++) {
        uint64_t word = r->departed_word[e];
        struct ivc_ep *ep = ep_at(r, e);
        uint64_t st = ld(&ep->status);
        if (!word && IVC_EP_STATE(st) == IVC_EP_DEPARTED) {
            /* Left by its process (ivc_unregister) while its VM stays. */
            track_departed(r, e, st, now);
            word = st;
        }
        if (!word)
            continue;
        if (st != word) {
            log_warn("endpoint %u: its DEPARTED status was overwritten (now 0x%" PRIx64
                     "); no longer tracked",
                     e, st);
            r->departed_word[e] = 0;
            continue;
        }
        struct ivcd_blocker b;
        bool drained = partners_drained(r, e, IVC_EP_GEN(word) - 1, &b, NULL);
        if (!drained && now < r->departed_deadline[e])
            continue;
        if (!cas(&ep->status, word, IVC_EP_STATUS(IVC_EP_GEN(word) + 1, 0, IVC_EP_FREE)))
            continue; /* changed under us: judged again at the next tick */
        if (drained)
            log_info("endpoint %u freed: its partners drained", e);
        else
            log_warn("endpoint %u freed after %d s although partner endpoint %u (client id %u) "
                     "did not drain its channel with it",
                     e, IVCD_DEPARTED_MAX_MS / 1000, b.slot, b.client_id);
        r->departed_word[e] = 0;
    }
}

/* Client `id` is gone: none of its endpoints will act again.  An endpoint
 * whose partners may still be reading rings in its share (a channel it
 * wrote into, a process that died mid-stream or a migration suspend) becomes
 * DEPARTED, so that no new process gets that memory until they are done;
 * one without such partners is freed at once.  The generation changes
 * either way, which is how partners learn that it left. */
void region_reclaim(struct ivcd_region *r, uint16_t id, uint64_t now)
{
    for (uint32_t e = 0; e < r->g.max_eps; e++) {
        struct ivc_ep *ep = ep_at(r, e);
        for (int tries = 0;; tries++) {
            if (tries == RECLAIM_TRIES) {
                log_warn("endpoint %u of client %u changes too fast to be reclaimed; skipped", e,
                         id);
                break;
            }
            uint64_t st = ld(&ep->status);
            uint8_t state = IVC_EP_STATE(st);
            if (IVC_EP_CLIENT(st) != id || state == IVC_EP_FREE)
                break;
            if (state == IVC_EP_DEPARTED && r->departed_word[e] == st)
                break; /* already waiting for its partners */
            uint32_t gen = IVC_EP_GEN(st);
            /* A DEPARTED endpoint the process left itself (ivc_unregister)
             * already carries the new generation. */
            uint32_t partner_gen = state == IVC_EP_DEPARTED ? gen - 1 : gen;
            uint32_t new_gen = state == IVC_EP_DEPARTED ? gen : gen + 1;
            if (!partners_drained(r, e, partner_gen, NULL, NULL)) {
                uint64_t departed = IVC_EP_STATUS(new_gen, id, IVC_EP_DEPARTED);
                if (departed != st && !cas(&ep->status, st, departed))
                    continue;
                track_departed(r, e, departed, now);
            } else {
                if (!cas(&ep->status, st, IVC_EP_STATUS(new_gen, 0, IVC_EP_FREE)))
                    continue;
                log_info("endpoint %u of client %u reclaimed (was %s)", e, id,
                         ep_state_name(state));
            }
            break;
        }
    }
}

/* Ask every LIVE endpoint of the suspended peer to quiesce, and adopt the
 * ones already SUSPENDING (an earlier suspend that timed out).  Runs at
 * every check so that a process registering meanwhile joins the suspend. */
static uint32_t suspend_mark(struct ivcd_region *r, struct ivcd_suspend *s)
{
    uint32_t n = 0;

    for (uint32_t e = 0; e < r->g.max_eps; e++) {
        if (s->word[e])
            continue;
        struct ivc_ep *ep = ep_at(r, e);
        uint64_t st = ld(&ep->status);
        if (IVC_EP_CLIENT(st) != s->peer)
            continue;
        if (IVC_EP_STATE(st) == IVC_EP_LIVE) {
            uint64_t susp = IVC_EP_STATUS(IVC_EP_GEN(st), s->peer, IVC_EP_SUSPENDING);
            if (!cas(&ep->status, st, susp))
                continue; /* unregistered meanwhile; looked at again next time */
            s->word[e] = susp;
            n++;
        } else if (IVC_EP_STATE(st) == IVC_EP_SUSPENDING) {
            s->word[e] = st;
            n++;
        }
    }
    return n;
}

uint32_t region_suspend_start(struct ivcd_region *r, struct ivcd_suspend *s)
{
    return suspend_mark(r, s);
}

bool region_suspend_poll(struct ivcd_region *r, struct ivcd_suspend *s, uint32_t *neps,
                         uint32_t *nchan, char *why, size_t whylen)
{
    uint32_t ne = 0, nc = 0;

    if (!s->peer_gone)
        suspend_mark(r, s);
    for (uint32_t e = 0; e < r->g.max_eps; e++) {
        uint64_t w = s->word[e];
        if (!w)
            continue;
        ne++;
        struct ivc_ep *ep = ep_at(r, e);
        uint64_t st = ld(&ep->status);
        uint64_t ack = ld(&ep->ack);
        uint8_t state = IVC_EP_STATE(st);
        /* Still this incarnation of one of the peer's endpoints?  If not
         * (freed, departed, reused), it has nothing left to quiesce. */
        bool owned = IVC_EP_GEN(st) == IVC_EP_GEN(w) && IVC_EP_CLIENT(st) == s->peer &&
                     (state == IVC_EP_LIVE || state == IVC_EP_SUSPENDING);
        if (owned && (st != w || ack != w)) {
            struct ivcd_blocker b;
            fill_blocker(r, e, &b);
            snprintf(why, whylen, "endpoint %u (client id %u, pid %d) did not quiesce", e,
                     b.client_id, b.pid);
            return false;
        }
        struct ivcd_blocker b;
        uint32_t ch = 0;
        if (!partners_drained(r, e, IVC_EP_GEN(w), &b, &ch)) {
            snprintf(why, whylen,
                     "partner endpoint %u (client id %u) did not drain its channel with "
                     "endpoint %u",
                     b.slot, b.client_id, e);
            return false;
        }
        nc += ch;
    }
    *neps = ne;
    *nchan = nc;
    return true;
}

void region_resume(struct ivcd_region *r, uint16_t id, uint32_t *nfreed, uint32_t *nresumed)
{
    *nfreed = *nresumed = 0;
    for (uint32_t e = 0; e < r->g.max_eps; e++) {
        struct ivc_ep *ep = ep_at(r, e);
        for (int tries = 0; tries < RECLAIM_TRIES; tries++) {
            uint64_t st = ld(&ep->status);
            if (IVC_EP_CLIENT(st) != id || IVC_EP_STATE(st) != IVC_EP_SUSPENDING)
                break;
            uint32_t gen = IVC_EP_GEN(st);
            /* An endpoint that acked has detached (it re-registers after the
             * move); one that did not is simply told to go on. */
            bool acked = ld(&ep->ack) == st;
            uint64_t want = acked ? IVC_EP_STATUS(gen + 1, 0, IVC_EP_FREE)
                                  : IVC_EP_STATUS(gen, id, IVC_EP_LIVE);
            if (cas(&ep->status, st, want)) {
                (*(acked ? nfreed : nresumed))++;
                break;
            }
        }
    }
}

uint32_t region_count_eps(const struct ivcd_region *r)
{
    uint32_t n = 0;

    for (uint32_t e = 0; e < r->g.max_eps; e++)
        if (IVC_EP_STATE(ld(&ep_at(r, e)->status)) != IVC_EP_FREE)
            n++;
    return n;
}

void region_list_eps(const struct ivcd_region *r, void (*emit)(void *arg, const char *line),
                     void *arg)
{
    char line[160];

    for (uint32_t e = 0; e < r->g.max_eps; e++) {
        struct ivc_ep *ep = ep_at(r, e);
        uint64_t st = ld(&ep->status);
        if (IVC_EP_STATE(st) == IVC_EP_FREE)
            continue;
        snprintf(line, sizeof(line), "endpoint slot=%u peer=%u client_id=%u pid=%d state=%s gen=%u",
                 e, IVC_EP_CLIENT(st), rd32(&ep->client_id), rd32s(&ep->pid),
                 ep_state_name(IVC_EP_STATE(st)), IVC_EP_GEN(st));
        emit(arg, line);
    }
}
