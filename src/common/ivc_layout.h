/*
 * ivc_layout.h - the format of a job's shared IVC region.  This header is the
 * specification: ivcd creates and polices the region, libivc uses it, and
 * both include this file.
 *
 * One region exists per (host, job).  ivcd creates it as a memfd, writes the
 * header, and hands the fd to every client of its ivshmem-server socket:
 * QEMU maps it as BAR2 of an ivshmem-doorbell device, a host process maps it
 * directly.  Every process that calls ivc_register() owns one endpoint slot.
 *
 *   offset 0          struct ivc_hdr                (one 4 KiB page)
 *   clients_off       struct ivc_client[max_clients] (one line per ivshmem id)
 *   eps_off           struct ivc_ep[max_eps]
 *   conns_off         struct ivc_conn[max_eps * conns_per_ep]
 *   pool_off          max_eps shares of share_size bytes; ring data only
 *
 * Everything is an offset from the start of the region, never a pointer.
 * Integers are little-endian (x86-64 hosts and guests).
 *
 * THE REGION IS UNTRUSTED MEMORY.  Any guest can write anything anywhere in
 * it at any time.  Readers copy what they need into private memory, check it
 * (ranges, alignment, ownership) once, and never follow a value from the
 * region without checking it again.  Each field below says who writes it; a
 * field has exactly one writer unless marked otherwise, so that no cross-VM
 * lock or compare-and-swap is needed on the data path.
 *
 * Ownership of memory:
 *  - An endpoint owns conn records [ep*conns_per_ep, (ep+1)*conns_per_ep)
 *    (the ones it initiates) and share `ep` of the pool.  The ring carrying
 *    bytes from A to B always lies in A's share, so a ring's producer
 *    allocates and frees it, privately, with no shared allocator.
 *  - ivcd owns the header and the client table, and moves endpoint slots
 *    through the states only it may set (SUSPENDING, DEPARTED, reclaim).
 *
 * Endpoint lifecycle (ivc_ep.status = gen:32 | client:16 | state:8):
 *   FREE --claim (CAS by the registering process)--> LIVE
 *   LIVE --ivc_unregister (owner CAS, gen+1)--> DEPARTED
 *   LIVE --ivcd ctl suspend--> SUSPENDING --owner finishes, acks--> (ack field)
 *   LIVE, SUSPENDING --its ivshmem client disconnects (ivcd)--> DEPARTED
 *        (gen+1), or FREE (gen+1) when no partner reads rings in its share
 *   DEPARTED --ivcd, once every partner closed or drained its channels with
 *        it (or after 10 s)--> FREE (gen+1)
 * DEPARTED keeps a gone endpoint's share from being reused under a partner
 * that still reads what it wrote.
 * A partner detects death or reuse by comparing the generation it saw at
 * connect time with the current one: a change means IVC_ECONNRESET.
 *
 * Channel (conn record) states, one word per side (seq:32 | state:8).  `seq`
 * is set by the initiator for each use of the record and echoed by the target,
 * so a stale write from an earlier use is never mistaken for an answer:
 *   initiator: IDLE -> REQUESTED -> OPEN -> {CLOSED | ABORTED | QUIESCED -> DRAINED}
 *   target:    IDLE -> {ACCEPTED -> {CLOSED | ABORTED | QUIESCED -> DRAINED} | REFUSED}
 * QUIESCED means "I will never write into my ring of this channel again, its
 * head is final".  A side hands its unread bytes to the suspend callback only
 * once the other side is QUIESCED (or gone), then sets DRAINED.
 */
#ifndef IVC_LAYOUT_H
#define IVC_LAYOUT_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IVC_CACHELINE 64
#define IVC_PAGE      4096

#define IVC_REGION_SIGNATURE 0x3143564943504856ULL /* "VHPCIVC1" little-endian */
#define IVC_LAYOUT_VERSION   1

#define IVC_REGION_MIN         (1ULL << 20) /* 1 MiB */
#define IVC_REGION_MAX         (1ULL << 40)
#define IVC_MAX_CLIENTS_LIMIT  4096 /* ivshmem allows 65535; we cap the table */
#define IVC_MAX_EPS_LIMIT      4096
#define IVC_CONNS_PER_EP_LIMIT 1024
#define IVC_RING_MIN           4096u
#define IVC_RING_MAX           (64u << 20)

/* ---- header: written by ivcd at creation, constant afterwards ------------ */
struct ivc_hdr {
    uint64_t signature;    /* IVC_REGION_SIGNATURE */
    uint32_t version;      /* IVC_LAYOUT_VERSION */
    uint32_t hdr_size;     /* sizeof(struct ivc_hdr) */
    uint64_t region_size;  /* bytes, power of two, == the mapping's size */
    uint64_t job_magic;    /* the job id; ivc_register() must name it */
    uint32_t max_clients;  /* ivshmem ids are 0..max_clients-1 */
    uint32_t max_eps;      /* endpoint slots */
    uint32_t conns_per_ep; /* conn records owned by each endpoint */
    uint32_t reserved0;
    uint64_t clients_off; /* struct ivc_client[max_clients] */
    uint64_t eps_off;     /* struct ivc_ep[max_eps] */
    uint64_t conns_off;   /* struct ivc_conn[max_eps * conns_per_ep] */
    uint64_t pool_off;    /* start of the ring pool, page aligned */
    uint64_t share_size;  /* pool bytes per endpoint, multiple of IVC_PAGE */
    /* third cache line: ivcd's liveness, written by ivcd only */
    _Alignas(IVC_CACHELINE) _Atomic uint64_t ivcd_pid;
    _Atomic uint64_t ivcd_heartbeat; /* bumped by ivcd every tick */
    uint8_t pad[IVC_PAGE - 2 * IVC_CACHELINE - 16];
};
/* Bytes of the header that never change after creation; clients compare
 * them with their private copy to notice a scribbled header. */
#define IVC_HDR_CONST_SIZE (2 * IVC_CACHELINE)
static_assert(sizeof(struct ivc_hdr) == IVC_PAGE, "header is one page");
static_assert(offsetof(struct ivc_hdr, ivcd_pid) == IVC_HDR_CONST_SIZE,
              "liveness after the constant part");

/* ---- client table: one line per ivshmem peer id, written by ivcd --------- */
enum ivc_client_state {
    IVC_CLIENT_FREE = 0,
    IVC_CLIENT_LIVE = 1,       /* connected to ivcd's socket */
    IVC_CLIENT_SUSPENDING = 2, /* ivcd asked its endpoints to quiesce */
};
struct ivc_client {
    _Atomic uint64_t status; /* gen:32 | 0:16 | state:8 (enum ivc_client_state) */
    uint64_t pid;            /* QEMU's or the host process's pid, for people */
    uint8_t pad[IVC_CACHELINE - 16];
};
static_assert(sizeof(struct ivc_client) == IVC_CACHELINE, "one line per client");

/* ---- endpoint table ------------------------------------------------------ */
enum ivc_ep_state {
    IVC_EP_FREE = 0,
    IVC_EP_LIVE = 1,
    IVC_EP_SUSPENDING = 2, /* set by ivcd: quiesce every channel, then ack */
    IVC_EP_DEPARTED = 3,   /* set by ivcd: client gone, partners still draining */
};
#define IVC_EP_STATUS(gen, client, state)                                                          \
    (((uint64_t)(uint32_t)(gen) << 32) | ((uint64_t)(uint16_t)(client) << 16) | (uint8_t)(state))
#define IVC_EP_GEN(st)    ((uint32_t)((st) >> 32))
#define IVC_EP_CLIENT(st) ((uint16_t)((st) >> 16))
#define IVC_EP_STATE(st)  ((uint8_t)(st))

struct ivc_ep {
    /* line 0: the owner's identity.  `status` is CAS'd by claimer/owner and
     * stored by ivcd (see the lifecycle above); the rest written by the owner
     * after it claimed the slot. */
    _Atomic uint64_t status;
    uint64_t job_magic;   /* must equal the header's */
    uint32_t client_id;   /* the id given to ivc_register() */
    int32_t pid;          /* owner's pid in its own OS */
    _Atomic uint64_t ack; /* owner: the SUSPENDING status word it finished quiescing for */
    uint8_t pad0[IVC_CACHELINE - 32];
    /* line 1: written by other endpoints (atomic add, many writers) */
    _Atomic uint64_t conn_req; /* bumped by each initiator after it posted a request */
    uint8_t pad1[IVC_CACHELINE - 8];
};
static_assert(sizeof(struct ivc_ep) == 2 * IVC_CACHELINE, "two lines per endpoint");
static_assert(offsetof(struct ivc_ep, conn_req) == IVC_CACHELINE, "requests on their own line");

/* ---- connection records -------------------------------------------------- */
enum ivc_side_state {
    IVC_SIDE_IDLE = 0,
    IVC_SIDE_REQUESTED = 1, /* initiator: waiting for the target */
    IVC_SIDE_ACCEPTED = 2,  /* target: ring allocated, channel open */
    IVC_SIDE_OPEN = 3,      /* initiator: saw ACCEPTED, channel open */
    IVC_SIDE_REFUSED = 4,   /* target: cannot accept (no memory) */
    IVC_SIDE_CLOSED = 5,    /* closed by its owner; its head is final */
    IVC_SIDE_QUIESCED = 6,  /* migration: will not write again; head is final */
    IVC_SIDE_DRAINED = 7,   /* migration: unread bytes handed back */
    IVC_SIDE_ABORTED = 8,   /* closed after an error (reset, corrupt): what it wrote may be
                               incomplete, so its peer must not take the end for an EOF */
};
#define IVC_SIDE(seq, state) (((uint64_t)(uint32_t)(seq) << 32) | (uint8_t)(state))
#define IVC_SIDE_SEQ(w)      ((uint32_t)((w) >> 32))
#define IVC_SIDE_STATE(w)    ((uint8_t)(w))

/* A channel's hot indices.  head = total bytes ever written into a ring,
 * tail = total bytes ever consumed; both only grow; 0 <= head - tail <= size.
 * Each side's hot line holds the head of the ring it produces and the tail of
 * the ring it consumes, so one side writes one line and a ping-pong moves one
 * line each way besides the data. */
struct ivc_hot {
    _Atomic uint64_t head; /* of the ring this side produces */
    _Atomic uint64_t tail; /* of the ring this side consumes */
    uint8_t pad[IVC_CACHELINE - 16];
};

struct ivc_conn {
    /* line 0: written by the initiator only */
    _Atomic uint64_t i_state; /* IVC_SIDE(seq, state) */
    uint32_t target_ep;       /* endpoint slot of the target */
    uint32_t target_gen;      /* its generation when the request was posted */
    uint32_t init_gen;        /* initiator's generation */
    uint32_t target_client;   /* client id asked for (for the target's check) */
    uint64_t i_ring_off;      /* initiator->target ring, in the initiator's share */
    uint32_t i_ring_size;     /* power of two */
    uint8_t pad0[IVC_CACHELINE - 36];
    /* line 1: written by the target only */
    _Atomic uint64_t t_state; /* IVC_SIDE(seq echoed, state) */
    uint64_t t_ring_off;      /* target->initiator ring, in the target's share */
    uint32_t t_ring_size;
    uint8_t pad1[IVC_CACHELINE - 20];
    /* line 2: initiator hot (head of i->t, tail of t->i) */
    struct ivc_hot i_hot;
    /* line 3: target hot (head of t->i, tail of i->t) */
    struct ivc_hot t_hot;
};
static_assert(sizeof(struct ivc_conn) == 4 * IVC_CACHELINE, "four lines per conn record");
static_assert(offsetof(struct ivc_conn, t_state) == IVC_CACHELINE, "target line");
static_assert(offsetof(struct ivc_conn, i_hot) == 2 * IVC_CACHELINE, "initiator hot line");
static_assert(offsetof(struct ivc_conn, t_hot) == 3 * IVC_CACHELINE, "target hot line");

/* ---- geometry ------------------------------------------------------------ */
struct ivc_geometry {
    uint64_t region_size;
    uint32_t max_clients, max_eps, conns_per_ep;
    uint64_t clients_off, eps_off, conns_off, pool_off, share_size;
};

static inline uint64_t ivc__align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* Compute the layout for a region; returns 0, or -1 when it does not fit
 * (every endpoint needs at least one ring page in each direction). */
static inline int ivc_geometry_compute(struct ivc_geometry *g, uint64_t size, uint32_t max_clients,
                                       uint32_t max_eps, uint32_t conns_per_ep)
{
    if (!max_clients || !max_eps || !conns_per_ep || max_clients > IVC_MAX_CLIENTS_LIMIT ||
        max_eps > IVC_MAX_EPS_LIMIT || conns_per_ep > IVC_CONNS_PER_EP_LIMIT)
        return -1;
    g->region_size = size;
    g->max_clients = max_clients;
    g->max_eps = max_eps;
    g->conns_per_ep = conns_per_ep;
    g->clients_off = sizeof(struct ivc_hdr);
    g->eps_off = ivc__align_up(g->clients_off + (uint64_t)max_clients * sizeof(struct ivc_client),
                               IVC_CACHELINE);
    g->conns_off =
        ivc__align_up(g->eps_off + (uint64_t)max_eps * sizeof(struct ivc_ep), IVC_CACHELINE);
    g->pool_off = ivc__align_up(
        g->conns_off + (uint64_t)max_eps * conns_per_ep * sizeof(struct ivc_conn), IVC_PAGE);
    if (g->pool_off >= size)
        return -1;
    g->share_size = ((size - g->pool_off) / max_eps) & ~(uint64_t)(IVC_PAGE - 1);
    if (g->share_size < 2 * IVC_PAGE)
        return -1;
    return 0;
}

#endif /* IVC_LAYOUT_H */
