/*
 * agent.h - vhpc-agent's internal interfaces.  The agent is one process with
 * one poll() loop (main.c) serving connections (conn.c): the virtio-serial
 * port to the host, TCP clients (vhpc-rsh from other VMs) and, for tests, a
 * UNIX socket.  Each connection owns the sessions it started (session.c):
 * commands with their pipes, and file transfers.  As PID 1 it first sets up
 * the guest (init.c, net.c).
 */
#ifndef VHPC_AGENT_H
#define VHPC_AGENT_H

#include "agent_proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Pending output above this stops reading the commands' pipes of that
 * connection (and file reads) until the peer catches up; pending stdin of a
 * connection above it stops reading that connection's input. */
#define AGENT_BACKLOG (1u << 20)

enum conn_kind {
    CONN_PORT,   /* the virtio-serial port (or --port-fd): never closed for good */
    CONN_STREAM, /* an accepted socket: closed on EOF or error */
};

struct session;

struct conn {
    struct conn *next;
    enum conn_kind kind;
    int fd;            /* -1: a port not (yet) open */
    bool host_present; /* a port: the host side is connected, as far as we know */
    bool dead;         /* a stream: closed, freed at the end of the loop iteration */
    bool resync;       /* skipping input up to the next AGENT_MAGIC */
    struct agent_buf in, out;
    struct session *sessions;
    unsigned complaints;            /* bad input logged so far: a flood is not logged */
    bool tcp;                       /* a vhpc-rsh client: must authenticate first */
    bool authed;                    /* it did (AGENT_AUTH checked) */
    uint64_t opened_ms;             /* when accepted, for AGENT_AUTH_MS */
    uint8_t nonce[AGENT_NONCE_LEN]; /* our CHALLENGE's */
    char name[80];                  /* for the log: "port", "tcp 10.0.0.2:40022" */
};

enum session_kind { S_CMD, S_PUT, S_GET };

struct session {
    struct session *next;
    struct conn *conn;
    uint32_t id;
    enum session_kind kind;
    /* S_CMD */
    pid_t pid;                /* also the process group */
    int out_fd, err_fd;       /* pipes from the command; -1 once at EOF */
    int in_fd;                /* pipe to its stdin; -1 when none or closed */
    struct agent_buf stdin_q; /* STDIN bytes not yet written to in_fd */
    bool stdin_eof;           /* close in_fd once stdin_q is empty */
    bool exited;
    int exit_kind, exit_value;
    uint64_t exit_ms; /* when it was reaped, for AGENT_LINGER_MS */
    /* S_PUT, S_GET */
    int file_fd;
    int file_err; /* first errno of a transfer */
};

/* The agent as a whole (main.c). */
struct agent {
    bool pid1;
    bool service;       /* --service: the agent of a full image, under systemd */
    bool host_shutdown; /* the stop was a SHUTDOWN request (not a signal) */
    bool verbose;
    bool stopping; /* SHUTDOWN or SIGTERM seen */
    int shutdown_kind;
    const char *cmdline_path; /* /proc/cmdline, or --cmdline (tests) */
    const char *port_path;    /* NULL: no port (tests) */
    int port_fd_arg;          /* --port-fd, or -1 */
    uint64_t port_wait_from;
    bool port_warned;
    struct conn *port; /* NULL when port_path == NULL and port_fd_arg < 0 */
    struct conn *conns;
    int tcp_fd, unix_fd; /* listening sockets or -1 */
    bool tcp_any;        /* accept TCP clients from anywhere */
    char kernel[65];
    char hostname[65];
    bool have_key; /* the job's key came from the host (AGENT_KEY) */
    uint8_t key[AGENT_KEY_LEN];
    const char *key_file; /* where vhpc-rsh finds it (AGENT_KEY_FILE, --key-file) */
};

extern struct agent agent;

/* main.c */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void agent_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log bad input from a connection: its first few complaints only. */
void conn_complain(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t agent_now_ms(void);

/* conn.c */
struct conn *conn_new(enum conn_kind kind, int fd, const char *name);
void conn_port_try_open(void);
void conn_port_probe(void);
void conn_accept(int lfd, bool tcp);
/* End TCP connections that did not authenticate in time; returns the poll
 * timeout the next such deadline needs (-1: none). */
int conns_expire(void);
void conn_on_readable(struct conn *c);
void conn_flush(struct conn *c);
/* Queue a frame (header + payload of `len` bytes to fill); NULL when the
 * connection cannot take it (out of memory or gone: the frame is dropped). */
uint8_t *conn_frame(struct conn *c, uint32_t type, uint32_t session, uint32_t len);
void conn_send_hello(struct conn *c);
void conn_end(struct conn *c, const char *why);
bool conn_can_send(const struct conn *c);
bool conn_input_blocked(const struct conn *c);

/* request.c: request payloads parsed and bounded, without side effects;
 * each returns 0 or an errno value (EPROTO: malformed, ENOMEM). */
struct exec_req {
    uint32_t flags; /* AGENT_EXEC_* */
    uint32_t argc, envc;
    char **argv; /* argc strings, NULL-terminated */
    char **env;  /* envc "K=V" strings, NULL-terminated */
    char *cwd;   /* "" = / */
};
int req_exec_parse(const uint8_t *payload, uint32_t len, struct exec_req *x);
void req_exec_free(struct exec_req *x);
int req_signal_parse(const uint8_t *payload, uint32_t len, int *sig);
/* The path comes malloc'ed; data and dlen are the file bytes after it. */
int req_put_parse(const uint8_t *payload, uint32_t len, uint32_t *mode, char **path,
                  const uint8_t **data, uint32_t *dlen);
int req_get_parse(const uint8_t *payload, uint32_t len, char **path);

/* session.c */
void session_exec(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len);
void session_stdin(struct conn *c, uint32_t id, const uint8_t *data, uint32_t len);
void session_signal(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len);
void session_put(struct conn *c, uint32_t id, uint32_t type, const uint8_t *payload, uint32_t len);
void session_get(struct conn *c, uint32_t id, const uint8_t *payload, uint32_t len);
struct session *session_find(struct conn *c, uint32_t id);
void session_free(struct session *s, bool kill_group);
void session_reaped(pid_t pid, int status);
void session_pump_output(struct session *s, int fd);
void session_pump_stdin(struct session *s);
bool session_pump_get(struct session *s);
/* Finish commands whose process exited and whose output is drained (or
 * lingered long enough); returns the poll timeout the next deadline needs. */
int sessions_finish(void);
void sessions_kill_all(int sig);
/* Any command not finished yet (running, or its EXIT not sent)? */
bool sessions_any_cmd(void);
/* Read what every command's pipes hold now (for stopping: no poll round). */
void sessions_pump_all(void);

/* init.c: PID 1, or the service of a full image */
void init_early(void);
void init_system(void);
void init_poweroff(int kind) __attribute__((noreturn));
void init_service(void);
void init_service_poweroff(int kind) __attribute__((noreturn));
/* A key's value from /proc/cmdline ("vhpc.ip"), copied into buf; false if absent. */
bool init_cmdline(const char *key, char *buf, size_t len);

/* root.c: a full image's boot initramfs (/etc/vhpc/root) */
bool root_wanted(void);
void root_switch(void) __attribute__((noreturn));

/* net.c */
void net_setup(void);
bool net_peer_allowed(const struct sockaddr_storage *peer);

#endif
