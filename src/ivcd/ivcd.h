/*
 * ivcd.h - internal interfaces of ivcd, the per-job host daemon.
 *
 * ivcd creates a job's shared IVC region (region.c), serves QEMU's
 * ivshmem-server protocol to VMs and host processes alike (server.c), and
 * answers operators on a control socket (ctl.c); main.c parses options,
 * daemonizes and runs the single-threaded epoll loop that drives them all.
 * Nothing a client sends or writes into the region may crash, block or stop
 * the daemon: the region is untrusted memory and only region.c reads it.
 */
#ifndef IVCD_H
#define IVCD_H

#include "ivc_layout.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

#define IVCD_TICK_MS            100   /* heartbeat and housekeeping period */
#define IVCD_SUSPEND_TICK_MS    10    /* period while a suspend is pending */
#define IVCD_DEPARTED_MAX_MS    10000 /* a DEPARTED slot is freed after this at the latest */
#define IVCD_MAX_VECTORS        64    /* eventfds per peer */
#define IVCD_CTL_LINE_MAX       1024  /* longest control request line */
#define IVCD_CTL_IDLE_MS        5000  /* a control client must send / read within this */
#define IVCD_CTL_MAX_CONNS      32    /* simultaneous control connections */
#define IVCD_SUSPEND_DEFAULT_MS 5000
#define IVCD_SUSPEND_MAX_MS     3600000

/* ---- errors with context (crun style) ------------------------------------ */

struct ivcd_err {
    char msg[768];
};
/* Format a message, append ": strerror(errnum)" when errnum != 0; returns -1. */
int ivcd_err_set(struct ivcd_err *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- logging (main.c) ---------------------------------------------------- */

/* Log to stderr as "ivcd[PID]: message" or to syslog; LOG_DEBUG only with
 * --verbose. */
void ivcd_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...)   ivcd_log(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  ivcd_log(LOG_WARNING, __VA_ARGS__)
#define log_info(...)  ivcd_log(LOG_INFO, __VA_ARGS__)
#define log_debug(...) ivcd_log(LOG_DEBUG, __VA_ARGS__)

uint64_t ivcd_now_ms(void); /* monotonic clock */

/* ---- configuration (main.c) ---------------------------------------------- */

/* Default socket directory; libivc's default is the same path. */
#define IVCD_SOCKET_DIR "/run/vhpc"

struct ivcd_config {
    char *socket_path; /* absolute */
    char *ctl_path;    /* socket_path + ".ctl" */
    char *pidfile;     /* absolute, or NULL */
    uint64_t magic;
    uint64_t size;
    uint32_t max_peers, max_eps, conns_per_ep, vectors;
    mode_t mode;
    bool hugetlb, daemon, syslog, verbose;
};

/* ---- the region (region.c) ----------------------------------------------- */

/* ivcd's own view of the region.  The geometry here is the private copy
 * every index is checked against; the header in shared memory is never read
 * back. */
struct ivcd_region {
    int fd; /* the memfd, sealed against resizing */
    uint8_t *base;
    size_t map_len; /* ivcd maps the tables only, not the ring pool */
    struct ivc_geometry g;
    uint64_t heartbeat; /* last value written to the header */
    /* Slots ivcd moved to DEPARTED: the status word it wrote (0: none) and
     * when to free the slot at the latest. */
    uint64_t *departed_word;
    uint64_t *departed_deadline;
};

/* Who keeps a suspend or a DEPARTED slot waiting, for messages. */
struct ivcd_blocker {
    uint32_t slot;      /* the partner endpoint (or the endpoint itself) */
    uint32_t client_id; /* its registered id, as found in the region */
    int32_t pid;        /* its pid, as found in the region */
};

/* An operator's suspend of one peer in progress. */
struct ivcd_suspend {
    uint16_t peer;
    bool peer_gone; /* it disconnected: no new endpoints join the suspend */
    /* Per endpoint slot: the SUSPENDING status word ivcd set, 0 if the slot
     * is not part of this suspend. */
    uint64_t *word;
};

int region_create(struct ivcd_region *r, const struct ivcd_config *cfg, struct ivcd_err *err);
void region_destroy(struct ivcd_region *r);
/* Heartbeat, and free DEPARTED slots whose partners drained or that waited
 * too long. */
void region_tick(struct ivcd_region *r, uint64_t now);
/* Write client table line `id`. */
void region_set_client(struct ivcd_region *r, uint16_t id, uint32_t gen,
                       enum ivc_client_state state, pid_t pid);
/* Client `id` disconnected: reclaim every endpoint slot it owned. */
void region_reclaim(struct ivcd_region *r, uint16_t id, uint64_t now);

/* Start suspending peer `s->peer` (s->word zeroed by the caller); returns
 * the number of endpoints asked to quiesce. */
uint32_t region_suspend_start(struct ivcd_region *r, struct ivcd_suspend *s);
/* Check a suspend: returns true once every endpoint quiesced and every
 * partner drained (with the totals), false otherwise with `why` saying what
 * is still awaited. */
bool region_suspend_poll(struct ivcd_region *r, struct ivcd_suspend *s, uint32_t *neps,
                         uint32_t *nchan, char *why, size_t whylen);
/* Resume peer `id`: its SUSPENDING endpoints that acked are freed (they
 * detached), the others go back to LIVE; the counts say how many of each. */
void region_resume(struct ivcd_region *r, uint16_t id, uint32_t *nfreed, uint32_t *nresumed);

/* For `ivcd ctl`: endpoints in use, and one line per non-free endpoint
 * appended through `emit`. */
uint32_t region_count_eps(const struct ivcd_region *r);
void region_list_eps(const struct ivcd_region *r, void (*emit)(void *arg, const char *line),
                     void *arg);

/* ---- ivshmem clients (server.c) ------------------------------------------ */

struct ivcd_client {
    int sock; /* -1: this peer id is free */
    int efd[IVCD_MAX_VECTORS];
    pid_t pid;    /* from SO_PEERCRED */
    uint32_t gen; /* generation last written to the client table */
    enum ivc_client_state state;
    char dead[96]; /* non-empty: why it must be disconnected (server_reap) */
};

/* epoll tags: kind in the high 32 bits, index in the low ones */
enum ivcd_ev_kind { EV_SIGNAL = 1, EV_LISTEN, EV_CLIENT, EV_CTL_LISTEN, EV_CTL };
#define IVCD_EV(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

struct ivcd_ctl_conn;

struct ivcd {
    struct ivcd_config cfg;
    struct ivcd_region region;
    int epfd;
    int listen_fd;
    int ctl_fd;
    dev_t sock_dev, ctl_dev; /* identity of the socket files we created */
    ino_t sock_ino, ctl_ino;
    struct ivcd_client *clients; /* [max_peers] */
    uint32_t nclients;
    uint32_t ndead;            /* clients marked dead, not yet disconnected */
    struct ivcd_ctl_conn *ctl; /* [IVCD_CTL_MAX_CONNS] */
    bool stopping;
};

/* If `path` exists: fail when something accepts connections there, remove
 * it when it is a stale socket, fail when it is not a socket. */
int ivcd_clear_stale(const char *path, struct ivcd_err *err);
/* Create a listening UNIX socket at `path` with permission bits `mode`:
 * creates missing parent directories, replaces a stale socket, refuses when
 * something already accepts connections there. */
int ivcd_listen_unix(const char *path, mode_t mode, dev_t *dev, ino_t *ino, struct ivcd_err *err);
/* Remove `path` if it is still the socket file we created. */
void ivcd_unlink_ours(const char *path, dev_t dev, ino_t ino);

/* accept4() a non-blocking connection; -1 when there is none (or none can
 * be taken now: out of descriptors, the connection is dropped). */
int ivcd_accept(int listen_fd);

int server_init(struct ivcd *d, struct ivcd_err *err);
void server_fini(struct ivcd *d);
/* The connected peer `id`, or NULL. */
struct ivcd_client *server_peer(struct ivcd *d, uint32_t id);
/* Set a connected peer's state, in ivcd and in the client table. */
void server_set_peer_state(struct ivcd *d, uint32_t id, enum ivc_client_state state);
void server_accept(struct ivcd *d);
void server_client_event(struct ivcd *d, uint32_t id, uint32_t events);
/* Disconnect every client marked dead (a disconnect can mark others). */
void server_reap(struct ivcd *d);

/* ---- control socket (ctl.c) ---------------------------------------------- */

int ctl_init(struct ivcd *d, struct ivcd_err *err);
void ctl_fini(struct ivcd *d);
void ctl_accept(struct ivcd *d);
void ctl_conn_event(struct ivcd *d, uint32_t idx, uint32_t events);
/* Check pending suspends and deadlines; returns true while a suspend is
 * pending (the loop then ticks faster). */
bool ctl_poll(struct ivcd *d, uint64_t now);
/* `ivcd ctl ...`: the client side; returns the process exit status. */
int ctl_client_main(int argc, char **argv);

#endif
