/*
 * test_ivcd_util.h - helpers for the ivcd tests: a raw ivshmem-protocol
 * client (what QEMU or libivc would be, minus the library), running ivcd and
 * `ivcd ctl` with their output captured, and waiting for conditions with a
 * bound.  Every process started here is tracked by testutil and killed when
 * the test ends, also when it fails.
 */
#ifndef TEST_IVCD_UTIL_H
#define TEST_IVCD_UTIL_H

#include "ivc_layout.h"
#include "testutil.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECV_TIMEOUT_MS 5000

/* A raw client of ivcd's job socket. */
struct raw_client {
    int sock;
    int64_t id;
    int shm_fd;
    uint8_t *base; /* the whole region, mapped */
    size_t size;
};

/* Connect to `path`; receives time out after RECV_TIMEOUT_MS. */
int raw_connect(const char *path);
/* Receive one message; fails the test on timeout or error. */
void raw_recv(int sock, int64_t *value, int *fd);
/* Receive one message and check it is `value` with an fd (returned in *fd,
 * may be NULL to close it) or without. */
void raw_expect(int sock, int64_t value, bool with_fd, int *fd);
/* True when nothing arrives on `sock` within `ms`. */
bool raw_quiet(int sock, int ms);
/* Connect, read the whole greeting (any other peers' eventfds, which are
 * closed, then its own `vectors` eventfds) and map the region. */
void raw_attach(struct raw_client *c, const char *path, uint32_t vectors);
void raw_close(struct raw_client *c);

/* Region accessors on a raw client's mapping. */
struct ivc_hdr *rc_hdr(const struct raw_client *c);
struct ivc_client *rc_client(const struct raw_client *c, uint32_t i);
struct ivc_ep *rc_ep(const struct raw_client *c, uint32_t i);
struct ivc_conn *rc_conn(const struct raw_client *c, uint64_t i);
/* Claim endpoint slot `slot` as the library does (CAS FREE -> LIVE with our
 * peer id); returns the LIVE status word. */
uint64_t rc_claim(const struct raw_client *c, uint32_t slot, uint32_t client_id);

/* Run `ivcd ARGS...` to completion (at most 20 s) with stdout and stderr in
 * `out`; returns its exit status. */
int run_ivcd(char *out, size_t len, const char *const *args);
/* Run `ivcd ctl --socket SOCK ARGS...`, stdout and stderr in `out`. */
int ctl_run(const struct t_ivcd *d, char *out, size_t len, const char *const *args);
/* Start `ivcd ctl --socket SOCK ARGS...` in the background; ctl_join()
 * collects its output and exit status. */
pid_t ctl_start(const struct t_ivcd *d, int *outfd, const char *const *args);
int ctl_join(pid_t pid, int outfd, char *out, size_t len);
/* Poll `ivcd ctl list` until its output contains `needle` (present) or does
 * not (!present); false after `ms`. */
bool wait_list(const struct t_ivcd *d, const char *needle, bool present, int ms);
/* Poll a 64-bit word until it equals `want`; false after `ms`. */
bool wait_word(_Atomic uint64_t *p, uint64_t want, int ms);

/* Is the process still running (not a zombie)? */
bool alive(pid_t pid);

#endif
