/*
 * ivc.h - inter-VM communication (IVC): shared-memory channels between
 * processes that may live in different virtual machines on one host.
 *
 * The API follows "Virtual Machine Aware Communication Libraries for High
 * Performance Computing" (Huang et al., SC'07): a process joins its job's
 * local communication group with ivc_register(), lists the other members on
 * this physical host with ivc_get_hosts(), sets up byte-stream channels with
 * ivc_connect()/ivc_accept() and moves bytes with the non-blocking
 * ivc_write()/ivc_read().  When the VM (or a peer's VM) must leave the host,
 * every channel is quiesced and the bytes that were received but not yet read
 * are handed back through the suspend callback; after the move the arrival
 * callback fires and new channels can be set up.
 *
 * The shared region comes from ivcd (a host process connects to the job's
 * UNIX socket) or, inside a QEMU guest, from BAR2 of the ivshmem PCI device.
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * IVC_E* code (a negated errno value) on failure; ivc_strerror() names each.
 * The library never prints and never exits.  A context and its channels must
 * be used by one thread at a time.
 */
#ifndef IVC_H
#define IVC_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IVC_API_VERSION 1

/* Error codes (negative errno values, as in libuv). */
#define IVC_EINVAL          (-EINVAL)    /* bad argument */
#define IVC_ENOMEM          (-ENOMEM)    /* out of process memory */
#define IVC_EAGAIN          (-EAGAIN)    /* nothing to do now, try again */
#define IVC_ENOENT          (-ENOENT)    /* no such peer in this job on this host */
#define IVC_ENODEV          (-ENODEV)    /* no region: ivcd socket or ivshmem device missing */
#define IVC_EACCES          (-EACCES)    /* magic id does not match the job's region */
#define IVC_ENOSPC          (-ENOSPC)    /* region full: no endpoint slot, record or ring memory */
#define IVC_ETIMEDOUT       (-ETIMEDOUT) /* the operation's timeout expired */
#define IVC_ECONNREFUSED    (-ECONNREFUSED) /* the peer refused the connection */
#define IVC_ECONNRESET      (-ECONNRESET)   /* the peer died or its slot was reclaimed */
#define IVC_EPROTO          (-EPROTO)       /* the shared region is corrupt (checked and refused) */
#define IVC_EPROTONOSUPPORT (-EPROTONOSUPPORT) /* region or ivcd speaks another version */
#define IVC_ESHUTDOWN       (-ESHUTDOWN)       /* channel suspended for migration */
#define IVC_ENOTCONN        (-ENOTCONN)        /* context detached from its region (suspended) */
#define IVC_EBUSY           (-EBUSY)           /* resource in use */
#define IVC_EPIPE           (-EPIPE)           /* write after the peer closed the channel */
#define IVC_EOF             (-4095)            /* peer closed the channel and all data was read */

/* Opaque handles. */
typedef struct ivc_ctx ivc_ctx_t;
typedef struct ivc_chan ivc_chan_t;

/* A member of the job's group on this host, as listed by ivc_get_hosts(). */
typedef struct ivc_peer {
    uint32_t client_id; /* the id the member registered with (e.g. its MPI rank) */
    uint16_t vm_id;     /* ivshmem peer id of its VM (or of the host process) */
    uint16_t slot;      /* its endpoint slot in the region */
    int32_t pid;        /* its process id, as seen in its own OS */
} ivc_peer_t;

/*
 * Migration callbacks.
 * suspend: called once per open channel when this context or the channel's
 *   peer is suspended (its VM leaves the host).  `unread`/`len` are the bytes
 *   the peer wrote that were not yet returned by ivc_read(); together with what
 *   ivc_read() already returned they are exactly the peer's byte stream, each
 *   byte once and in order.  The buffer is valid during the call only.  After
 *   the call the channel is dead (I/O returns IVC_ESHUTDOWN); ivc_close() it,
 *   in the callback or later.
 * arrive: called after the context attached to a (new) region and may connect
 *   again.
 */
typedef struct ivc_callbacks {
    void (*suspend)(ivc_chan_t *chan, const void *unread, size_t len, void *arg);
    void (*arrive)(ivc_ctx_t *ctx, void *arg);
    void *arg;
} ivc_callbacks_t;

/* Options for ivc_register(); a zeroed struct (or NULL) means defaults. */
typedef struct ivc_options {
    /* Where the region is: an ivcd socket path, "guest" for the ivshmem PCI
     * device, or NULL for: $IVC_SOCKET, else the guest device if present,
     * else /run/vhpc/ivc-<magic>.sock. */
    const char *location;
    /* Capacity of each direction of a channel in bytes, a power of two
     * between 4 KiB and 64 MiB.  0: $IVC_RING_SIZE or 256 KiB. */
    size_t ring_size;
    /* Bound in milliseconds on attaching and on the migration handshake with
     * a peer that does not respond.  0: 5000. */
    int timeout_ms;
} ivc_options_t;

/* Context state, as returned by ivc_ctx_state(). */
enum ivc_ctx_state {
    IVC_CTX_ATTACHED = 1, /* in the region, channels usable */
    IVC_CTX_DETACHED = 2, /* suspended and detached; ivc_reattach() to come back */
    IVC_CTX_BROKEN = 3,   /* the region was found corrupt; only ivc_unregister() */
};

/* Channel state, as returned by ivc_chan_state(). */
enum ivc_chan_state {
    IVC_CHAN_OPEN = 1,       /* data flows both ways */
    IVC_CHAN_SUSPENDING = 2, /* quiescing for a migration: writes return 0 */
    IVC_CHAN_SUSPENDED = 3,  /* unread bytes handed back; I/O returns IVC_ESHUTDOWN */
    IVC_CHAN_EOF = 4,        /* the peer closed; reads drain, then IVC_EOF */
    IVC_CHAN_RESET = 5,      /* the peer died; I/O returns IVC_ECONNRESET */
    IVC_CHAN_CORRUPT = 6,    /* the channel's shared state was invalid; IVC_EPROTO */
    IVC_CHAN_CONNECTING = 7, /* ivc_connect_start(): the peer has not accepted yet */
};

/* ---- group membership ---------------------------------------------------- */

/* Join the group `magic` (the job id) on this host as `client_id`. */
int ivc_register(uint64_t magic, uint32_t client_id, const ivc_options_t *opts, ivc_ctx_t **out);

/* Close every channel, leave the group and free the context. */
int ivc_unregister(ivc_ctx_t *ctx);

/* Fill up to `max` members of the group on this host other than the caller.
 * Returns the number of members (which may exceed `max`) or an error. */
int ivc_get_hosts(ivc_ctx_t *ctx, ivc_peer_t *peers, size_t max);

/* Describe the caller itself. */
int ivc_self(const ivc_ctx_t *ctx, ivc_peer_t *self);

/* ---- channels ------------------------------------------------------------ */

/* Open a channel to the member registered as `peer_client_id`; waits for its
 * ivc_accept() at most `timeout_ms` (-1: forever). */
int ivc_connect(ivc_ctx_t *ctx, uint32_t peer_client_id, int timeout_ms, ivc_chan_t **out);

/* The same without waiting: returns at once (IVC_ENOENT if the member is not
 * in the region now) with a channel in IVC_CHAN_CONNECTING that turns OPEN
 * when the peer accepts; until then writes take and reads give 0 bytes and
 * ivc_poll() reports nothing.  A refusal or the peer's departure turn it
 * RESET (I/O returns the reason).  ivc_close() it in any state. */
int ivc_connect_start(ivc_ctx_t *ctx, uint32_t peer_client_id, ivc_chan_t **out);

/* Accept the next connection request; `timeout_ms` 0 polls, -1 waits forever.
 * Returns IVC_ETIMEDOUT when none came. */
int ivc_accept(ivc_ctx_t *ctx, int timeout_ms, ivc_chan_t **out);

/* Non-blocking: copy up to `len` bytes into the channel.  Returns how many
 * went (0 when the ring is full or the channel is quiescing) or an error. */
ssize_t ivc_write(ivc_chan_t *chan, const void *buf, size_t len);

/* ivc_write of several buffers, in order, as one write: they become visible
 * to the reader together (up to 32 KiB at a time).  At most IVC_IOV_MAX. */
#define IVC_IOV_MAX 64
ssize_t ivc_writev(ivc_chan_t *chan, const struct iovec *iov, int iovcnt);

/* Non-blocking: copy up to `len` received bytes out.  Returns how many came
 * (0 when none are there yet), IVC_EOF after the peer closed, or an error. */
ssize_t ivc_read(ivc_chan_t *chan, void *buf, size_t len);

/* Reading in place, for a reader that parses small messages where they lie
 * (no copy into a buffer of its own first).  ivc_read_peek() points *data at
 * the received bytes that follow the last read, as many as lie contiguous in
 * the ring (a run that reaches the ring's end stops there; the rest comes at
 * the next peek), and returns how many: 0 when there are none or the channel
 * is not plainly open (ivc_read() then says why).  The bytes stay in the
 * ring, and the peer may still scribble on them: copy what you check before
 * checking it.  ivc_read_commit() consumes the first `len` peeked bytes: 0
 * when they were the peer's stream, IVC_EAGAIN when the channel changed under
 * the reader (the peer died, or is being suspended): nothing was consumed,
 * what was peeked must be forgotten, and ivc_read() reads it again (or hands
 * it back with the rest).  Do nothing that cannot be undone before it
 * succeeds.  Mixing these with ivc_read() keeps the stream in order.  The
 * room a commit frees reaches the writer later than a read's: with our
 * next write or read on the channel, or once a quarter of the ring waits
 * (a store to the line the peer polls, per message, cost a ping-pong a
 * cache-line transfer each way).  A writer that finds no room at all
 * still always gets some: then over 3/4 of the ring is unread. */
ssize_t ivc_read_peek(ivc_chan_t *chan, const void **data);
int ivc_read_commit(ivc_chan_t *chan, size_t len);

/* Blocking helpers: move all `len` bytes or fail.  `*done` (optional) gets the
 * number of bytes moved, also on failure.  `timeout_ms` -1 waits forever. */
int ivc_write_all(ivc_chan_t *chan, const void *buf, size_t len, int timeout_ms, size_t *done);
int ivc_read_all(ivc_chan_t *chan, void *buf, size_t len, int timeout_ms, size_t *done);

/* Close the channel; the peer reads what is left, then IVC_EOF. */
int ivc_close(ivc_chan_t *chan);

/* Channel introspection. */
uint32_t ivc_chan_peer(const ivc_chan_t *chan); /* the peer's client id */
int ivc_chan_state(ivc_chan_t *chan);           /* enum ivc_chan_state */
size_t ivc_chan_readable(ivc_chan_t *chan);     /* bytes ready to read now */
size_t ivc_chan_writable(ivc_chan_t *chan);     /* bytes that fit now */
/* True when ivc_read() would surely return 0 now: the channel is open and
 * healthy and its ring empty.  A few loads and no side effect (it prefetches
 * where the next bytes will land, so that they come sooner), for pollers
 * that skip idle channels.  False means: call ivc_read(), which also brings
 * the channel's state up to date (a channel just set up is not idle until
 * its first read). */
bool ivc_chan_idle(const ivc_chan_t *chan);
size_t ivc_chan_ring_size(const ivc_chan_t *chan);
void ivc_chan_set_data(ivc_chan_t *chan, void *data); /* user pointer */
void *ivc_chan_get_data(const ivc_chan_t *chan);

/* ---- readiness ----------------------------------------------------------- */

#define IVC_POLLIN  0x01 /* ivc_read() would return data or EOF */
#define IVC_POLLOUT 0x02 /* ivc_write() would accept bytes */
#define IVC_POLLERR 0x04 /* reset, corrupt or suspended: I/O returns an error */
#define IVC_POLLHUP 0x08 /* the peer closed */

typedef struct ivc_pollitem {
    ivc_chan_t *chan;
    short events;  /* IVC_POLLIN | IVC_POLLOUT */
    short revents; /* set by ivc_poll(); ERR and HUP are always reported */
} ivc_pollitem_t;

/* Wait until one of the channels is ready or `timeout_ms` passes (0 polls,
 * -1 forever).  Waiting spins, then yields, then sleeps with back-off, so an
 * idle caller does not burn its core.  Returns the number of ready items. */
int ivc_poll(ivc_ctx_t *ctx, ivc_pollitem_t *items, size_t n, int timeout_ms);

/* ---- migration ----------------------------------------------------------- */

/* Install the migration callbacks (copied). */
int ivc_set_callbacks(ivc_ctx_t *ctx, const ivc_callbacks_t *cbs);

/* Do pending control work (a suspend requested by ivcd, a peer's suspend)
 * without moving data.  Returns the context state (enum ivc_ctx_state). */
int ivc_progress(ivc_ctx_t *ctx);

/* After a suspend: attach to the region at `location` (same meaning as in
 * ivc_options_t; NULL: as at registration), register again under the same
 * magic and client id and call the arrival callback.  Returns IVC_ENODEV
 * (try again later) while no region is there. */
int ivc_reattach(ivc_ctx_t *ctx, const char *location);

int ivc_ctx_state(const ivc_ctx_t *ctx); /* enum ivc_ctx_state */

/* ---- errors -------------------------------------------------------------- */

/* A sentence naming the error; never NULL. */
const char *ivc_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* IVC_H */
