/*
 * testutil.h - helpers shared by the C tests (test.h has their assertions
 * and runner): a private scratch directory, tracked child processes, and an
 * ivcd started for the test and always stopped (also when the case fails or
 * is killed by its timeout).
 */
#ifndef VHPC_TESTUTIL_H
#define VHPC_TESTUTIL_H

#include "ivc.h"
#include "test.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

/* Assert an ivc_* call returned >= 0, printing ivc_strerror() otherwise. */
#define T_OK(expr)                                                                                 \
    ({                                                                                             \
        long long _r = (long long)(expr);                                                          \
        if (_r < 0)                                                                                \
            T_FAIL("%s returned %lld (%s)", #expr, _r, ivc_strerror((int)_r));                     \
        _r;                                                                                        \
    })

/* A scratch directory under /tmp, removed at exit. */
const char *t_tmpdir(void);

/* An ivcd started for this test. */
struct t_ivcd {
    pid_t pid;
    char sock[100]; /* fits sockaddr_un.sun_path */
};
/* Start ivcd (path from $IVCD, set by CMake) for job `magic` with extra
 * arguments (NULL-terminated, may be NULL), wait until its socket accepts.
 * It is killed at exit and on SIGTERM/SIGINT/SIGALRM of the test. */
void t_ivcd_start(struct t_ivcd *d, uint64_t magic, const char *const *extra);
void t_ivcd_stop(struct t_ivcd *d);
/* Run `ivcd ctl --socket SOCK args...`, capture stdout into buf; returns exit status. */
int t_ivcd_ctl(const struct t_ivcd *d, char *buf, size_t len, const char *const *args);

/* Fork a child running fn(arg); returns its pid.  Children are killed at exit. */
pid_t t_fork(int (*fn)(void *), void *arg);
/* Wait for a child; returns its exit status, or 128+signal. */
int t_wait(pid_t pid);
/* The same, but fail the test if it has not finished within `ms` (`who`
 * names it in the message; it is killed at exit). */
int t_wait_bounded(pid_t pid, int ms, const char *who);

/* Pipes as barriers between test processes: write one byte; block until
 * the writing end is closed by everyone (EOF).  Both fail the test on error. */
void t_put_byte(int fd);
void t_wait_eof(int fd);

/* Deterministic data: byte i of stream `seed`. */
static inline uint8_t t_byte(uint64_t seed, uint64_t i)
{
    uint64_t x = (i ^ (seed * 0x9E3779B97F4A7C15ULL)) * 0xBF58476D1CE4E5B9ULL;
    return (uint8_t)(x >> 56);
}
void t_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset);
/* Returns the index of the first mismatch, or len. */
size_t t_check(const uint8_t *buf, size_t len, uint64_t seed, uint64_t offset);

/* Milliseconds on the monotonic clock. */
uint64_t t_now_ms(void);

#endif
