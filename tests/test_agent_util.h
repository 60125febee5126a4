/*
 * test_agent_util.h - helpers for the vhpc-agent tests: an agent started as
 * an ordinary process (not PID 1, no virtio port) serving a UNIX socket and a
 * TCP port on 127.0.0.1, a connected libvhpc agent client, and commands run
 * with their output captured in memory.
 */
#ifndef VHPC_TEST_AGENT_UTIL_H
#define VHPC_TEST_AGENT_UTIL_H

#include "agent_client.h"
#include "testutil.h"

#include <stddef.h>
#include <sys/types.h>

/* A NULL-terminated argv in place. */
#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

struct t_agent {
    pid_t pid;
    char sock[108];             /* its --listen-unix socket */
    int tcp_port;               /* its TCP port on 127.0.0.1 */
    char key_file[160];         /* its --key-file, also $VHPC_KEY_FILE for vhpc-rsh */
    uint8_t key[AGENT_KEY_LEN]; /* the job key given to it, as the host would */
};

/* Start $VHPC_AGENT with --no-port --listen-unix --tcp-fd --key-file and
 * `extra` arguments (NULL-terminated, may be NULL); killed at exit.  Then,
 * as the host does, give it a fresh random job key over the UNIX socket
 * and point $VHPC_KEY_FILE (what vhpc-rsh reads) at its key file. */
void t_agent_start(struct t_agent *a, const char *const *extra);
/* The same without giving it a key. */
void t_agent_start_nokey(struct t_agent *a, const char *const *extra);
/* SIGTERM, and check it exits 0 within 5 s. */
void t_agent_stop(struct t_agent *a);
/* A client connected to the agent's UNIX socket, past HELLO. */
agent_client_t *t_agent_client(const struct t_agent *a);

/* Output of a command run to completion. */
struct t_out {
    int rc;     /* agent_client_run()'s return */
    int status; /* exit code or 128 + signal */
    char *out, *err;
    size_t out_len, err_len;
    vhpc_err_t e;
};
/* Run argv (NULL-terminated) with `env` (may be NULL) in `cwd` (may be
 * NULL), feeding `in` (NULL: no stdin) as its stdin. */
void t_run(agent_client_t *c, const char *const *argv, const char *const *env, const char *cwd,
           const void *in, size_t in_len, struct t_out *o);
void t_out_free(struct t_out *o);

/* A memfd holding `len` bytes of data (offset 0). */
int t_memfd_with(const void *data, size_t len);
/* All of fd's contents from offset 0 (NUL-terminated; *len without it). */
char *t_slurp(int fd, size_t *len);

/* Raw protocol for tests that play one side: write all of buf; write one
 * frame (header and payload). */
void t_write_all(int fd, const void *buf, size_t len);
void t_write_frame(int fd, uint32_t type, uint32_t session, const void *payload, uint32_t len);

/* FNV-1a 64, for checksums of large transfers. */
uint64_t t_fnv(const void *data, size_t len);

#endif
