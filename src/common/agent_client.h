/*
 * agent_client.h - the host's side of the vhpc-agent protocol
 * (src/common/agent_proto.h): connect to a VM's agent (QEMU's chardev UNIX
 * socket for the virtio-serial port, or any connected stream such as TCP),
 * start commands and file transfers, and collect what comes back.
 *
 * Two ways to use it:
 *  - blocking helpers (agent_client_run, _put_file, _get_file) for one thing
 *    at a time on a client;
 *  - events: agent_client_exec() etc. queue requests, then poll
 *    agent_client_fd() for agent_client_poll_events() (several clients in
 *    one poll set: several VMs at once) and call agent_client_step(c, 0, ...)
 *    until it returns 0.
 * The blocking helpers handle only the events of their own session: events
 * of other sessions that arrive meanwhile are dropped, so do not mix them
 * with event-driven sessions in flight on the same client.
 *
 * Functions return 0 (or a positive count) on success and a negative errno
 * value on failure, with the explanation in *err (which may be NULL).
 */
#ifndef VHPC_AGENT_CLIENT_H
#define VHPC_AGENT_CLIENT_H

#include "agent_proto.h"
#include "error.h"

#include <stddef.h>
#include <stdint.h>

typedef struct agent_client agent_client_t;

/* Connect to the UNIX socket at `path` (QEMU: -chardev socket,path=P,
 * server=on,wait=off), retrying for up to timeout_ms while it does not exist
 * or refuses (QEMU not started yet). */
int agent_client_connect(const char *path, int timeout_ms, agent_client_t **out, vhpc_err_t *err);
/* Use a connected stream socket (TCP to another agent, a socketpair); the
 * client owns fd from now on, also on failure.  `name` is for messages. */
int agent_client_open_fd(int fd, const char *name, agent_client_t **out, vhpc_err_t *err);
void agent_client_close(agent_client_t *c);

/* Wait until the agent is ready: send PING 0 (again every second) and wait
 * up to timeout_ms for the PONG 0 and the HELLO after it.  Call it after
 * agent_client_connect(): until then frames are skipped as left over from
 * an earlier connection (see agent_proto.h). */
int agent_client_wait_ready(agent_client_t *c, int timeout_ms, vhpc_err_t *err);

struct agent_hello {
    uint32_t version;
    char kernel[65];   /* uname -r in the guest */
    char hostname[65]; /* uname -n in the guest */
};
/* The last HELLO received, or NULL before the first. */
const struct agent_hello *agent_client_hello(const agent_client_t *c);

/* A command to start. */
struct agent_exec_req {
    const char *const *argv; /* NULL-terminated, at least argv[0]; searched in the guest's PATH */
    const char *const *env;  /* NULL-terminated "K=V" added to the agent's, or NULL */
    const char *cwd;         /* NULL or "": / */
    uint32_t flags;          /* AGENT_EXEC_STDIN: the caller sends stdin (else /dev/null) */
};

/* Queue a command; *session gets its number (never 0).  STARTED or
 * EXEC_FAILED, then output and EXIT, come as events. */
int agent_client_exec(agent_client_t *c, const struct agent_exec_req *req, uint32_t *session,
                      vhpc_err_t *err);
/* Queue bytes for the command's stdin (split into frames); len 0 closes it. */
int agent_client_send_stdin(agent_client_t *c, uint32_t session, const void *buf, size_t len,
                            vhpc_err_t *err);
/* Queue a signal for the command's process group. */
int agent_client_signal(agent_client_t *c, uint32_t session, int sig, vhpc_err_t *err);
/* Ask the guest to stop every command, sync and power off
 * (AGENT_SHUTDOWN_POWEROFF) or reboot; waits up to 1 s for the request to
 * leave (the VM's exit is the caller's to watch). */
int agent_client_shutdown(agent_client_t *c, int kind, vhpc_err_t *err);

/* Give the agent the job's key (on the port, which only the job's owner can
 * reach): it then admits vhpc-rsh clients that prove they hold it.  Waits
 * up to timeout_ms for the agent to confirm. */
int agent_client_send_key(agent_client_t *c, const uint8_t key[AGENT_KEY_LEN], int timeout_ms,
                          vhpc_err_t *err);

/* On a fresh TCP connection to an agent: answer its CHALLENGE with proof of
 * `key` and check the agent's proof in return (see agent_proto.h).  Fails
 * with -EACCES when either side does not hold the key. */
int agent_client_auth(agent_client_t *c, const uint8_t key[AGENT_KEY_LEN], int timeout_ms,
                      vhpc_err_t *err);

/* ---- events ----------------------------------------------------------------- */

enum agent_event_type {
    AGENT_EV_HELLO = 1,   /* agent_client_hello() is updated */
    AGENT_EV_STARTED,     /* pid */
    AGENT_EV_EXEC_FAILED, /* err (errno value), msg */
    AGENT_EV_STDOUT,      /* data, len; len 0: EOF */
    AGENT_EV_STDERR,      /* data, len; len 0: EOF */
    AGENT_EV_EXIT,        /* exit_kind, exit_value, status; the session is over */
    AGENT_EV_PUT_DONE,    /* err */
    AGENT_EV_FILE_DATA,   /* data, len */
    AGENT_EV_FILE_END,    /* err */
    AGENT_EV_PONG,        /* cookie */
    AGENT_EV_CLOSED,      /* the agent (or QEMU) closed the connection; nothing follows */
    AGENT_EV_KEY_OK,      /* the agent holds the job key */
    AGENT_EV_CHALLENGE,   /* data: the agent's nonce (AGENT_NONCE_LEN bytes) */
    AGENT_EV_AUTH_OK,     /* data: the agent's MAC (AGENT_MAC_LEN bytes) */
};

struct agent_event {
    enum agent_event_type type;
    uint32_t session;
    int pid;
    int err;
    int exit_kind;  /* AGENT_EXIT_CODE or AGENT_EXIT_SIGNAL */
    int exit_value; /* the code or the signal number */
    int status;     /* the shell's convention: the code, or 128 + the signal */
    const uint8_t *data;
    size_t len;
    char msg[256];
    uint64_t cookie;
};

int agent_client_fd(const agent_client_t *c);
/* What to poll agent_client_fd() for: POLLIN, plus POLLOUT while requests
 * wait to be sent. */
short agent_client_poll_events(const agent_client_t *c);
/* Bytes queued for the agent and not yet sent: a caller forwarding a stream
 * as stdin stops reading it while this is large (say over 1 MiB). */
size_t agent_client_pending(const agent_client_t *c);
/* Send what is queued and wait up to timeout_ms (0: not at all, -1: for
 * ever) for the next event.  Returns 1 with *ev filled (ev->data stays valid
 * until the next call on this client), 0 if none came in time, or a negative
 * error (the connection is then unusable).  AGENT_EV_CLOSED is reported once;
 * later calls fail with -EPIPE. */
int agent_client_step(agent_client_t *c, int timeout_ms, struct agent_event *ev, vhpc_err_t *err);

/* ---- blocking helpers -------------------------------------------------------- */

/* Where agent_client_run() takes the command's input from, where its output
 * goes, and what may interrupt it.  Every field is meant: 0 is stdin. */
struct agent_run_io {
    int stdin_fd;            /* forwarded until EOF; -1: the command's stdin is /dev/null */
    int stdout_fd;           /* -1: dropped */
    int stderr_fd;           /* -1: dropped */
    int signal_fd;           /* -1, or a signalfd(2) (or a pipe carrying struct signalfd_siginfo
                              * records): each signal read from it is forwarded to the command */
    int timeout_ms;          /* -1: none; else a command still running then is killed */
    bool second_signal_ends; /* the first signal is forwarded, a second one ends the
                              * wait at once (-EINTR, status 128 + it), as with ssh */
};

/* Run a command to completion with the streams and signals of *io; *status
 * gets the exit code or 128 + signal.  A command that cannot be started
 * fails with -errno and the agent's message ("cannot run 'foo': No such file
 * or directory"); one killed by io->timeout_ms fails with -ETIMEDOUT. */
int agent_client_run(agent_client_t *c, const struct agent_exec_req *req,
                     const struct agent_run_io *io, int *status, vhpc_err_t *err);
/* For a single-threaded caller that wants its own SIGINT, SIGTERM, SIGHUP
 * and SIGQUIT to reach the remote command: blocks them and returns a
 * signalfd for agent_run_io.signal_fd (or -1; they are then left alone). */
int agent_client_signalfd(void);
/* Copy local_fd's contents (read to EOF) to remote_path (created or
 * truncated, permissions `mode`; the directory must exist). */
int agent_client_put_file(agent_client_t *c, int local_fd, const char *remote_path, unsigned mode,
                          int timeout_ms, vhpc_err_t *err);
/* Copy the regular file remote_path into local_fd. */
int agent_client_get_file(agent_client_t *c, const char *remote_path, int local_fd, int timeout_ms,
                          vhpc_err_t *err);

#endif
