/*
 * agent_proto.h - the wire protocol between vhpc on the host and vhpc-agent
 * inside a guest, over one virtio-serial port (guest:
 * /dev/virtio-ports/org.vhpc.agent; host: a QEMU chardev UNIX socket).  The
 * same framing is used by vhpc-rsh between guests over TCP (AGENT_TCP_PORT).
 *
 * The port is a byte stream; it carries frames:
 *
 *   struct agent_hdr (16 bytes, little-endian) followed by `len` payload bytes
 *
 * Sessions: the host numbers each command (and each file transfer) it starts
 * (session != 0) and every frame about it carries the number; session 0 is
 * the connection itself.  Several sessions run at once.  Replies (PONG,
 * PUT_DONE, FILE_DATA, FILE_END) carry the number of their request.
 *
 *   dir  type          payload
 *   a->h HELLO         u32 version, then strings: kernel release, hostname
 *   h->a EXEC          u32 flags (AGENT_EXEC_*), u32 argc, u32 envc, then
 *                      argc + envc + 1 strings: argv..., env... ("K=V"), cwd
 *                      ("" = /).  Env entries are added to the agent's own
 *                      (replacing one of the same name).  argc >= 1.
 *   a->h STARTED       u32 pid
 *   a->h EXEC_FAILED   i32 errno, then a string saying what failed, e.g.
 *                      "cannot run 'foo': No such file or directory"
 *   h->a STDIN         data; an empty payload closes the command's stdin
 *   a->h STDOUT/STDERR data (at most AGENT_MAX_CHUNK bytes); an empty
 *                      payload means that stream reached EOF
 *   h->a SIGNAL        i32 signal number, sent to the command's process group
 *   a->h EXIT          i32 kind (AGENT_EXIT_CODE or AGENT_EXIT_SIGNAL), i32 value
 *   h->a PUT_FILE      u32 mode, string path, then the file's bytes (the
 *                      rest of the payload); a->h PUT_DONE i32 errno (0 = ok).
 *                      With AGENT_PUT_MORE in mode, more of the file follows
 *                      in h->a FILE_DATA frames of the same session, ended by
 *                      h->a FILE_END (i32 0); PUT_DONE answers the FILE_END.
 *   h->a GET_FILE      string path; a->h FILE_DATA (bytes; possibly several
 *                      frames of at most AGENT_MAX_CHUNK) then FILE_END i32 errno
 *   h->a SHUTDOWN      u32 AGENT_SHUTDOWN_POWEROFF or _REBOOT; the agent
 *                      stops every command, syncs and powers off (an agent
 *                      that is not PID 1 stops its commands and exits)
 *   either PING/PONG   u64 cookie echoed (liveness)
 *   h->a KEY           the job's key (AGENT_KEY_LEN bytes), on the port only;
 *                      a->h KEY_OK (empty) once the agent holds it.  The host
 *                      sends it on every connection; it never travels on TCP.
 *   a->c CHALLENGE     u32 version, AGENT_NONCE_LEN bytes nonce_a: the first
 *                      frame on every TCP connection (no HELLO before AUTH)
 *   c->a AUTH          nonce_c (AGENT_NONCE_LEN bytes), then
 *                      HMAC-SHA256(key, "vhpc-rsh client" NUL nonce_a nonce_c)
 *   a->c AUTH_OK       HMAC-SHA256(key, "vhpc-rsh agent" NUL nonce_a nonce_c),
 *                      then HELLO; the client checks it before it sends anything
 *
 * A string is u32 length + bytes (no NUL; a NUL inside makes the frame
 * malformed).
 *
 * Readiness: the agent sends HELLO whenever a connection opens (the port is
 * opened or the host side of it connects; a TCP client is accepted), but a
 * host that connects to QEMU's chardev may miss it (the agent may have
 * opened the port long before), and may find the tail of what the agent
 * sent to an earlier host connection.  So a host sends PING with cookie 0
 * after connecting (again every second until answered); the agent answers
 * PONG 0 and then HELLO.  The host skips everything before the first PONG 0
 * (scanning for AGENT_MAGIC if need be) and treats the agent as ready at the
 * HELLO after it.  On the port, PING 0 also means "a new host": commands
 * started for an earlier host connection are killed, even if the agent did
 * not see that connection end (a quick reconnect is invisible to the guest).
 *
 * Order: every STDOUT/STDERR frame of a command, and both EOF frames, come
 * before its EXIT.  Output written by background processes that outlive the
 * command is forwarded for at most AGENT_LINGER_MS after the command exits;
 * then its pipes are closed.
 *
 * Flow control: the agent stops reading a command's pipes while over 1 MiB
 * waits to go out on its connection, and stops reading the connection while
 * over 1 MiB of stdin waits for commands that do not read it (so further
 * frames on that connection wait too).  A host that does not read makes
 * the commands block on output; nothing is dropped.
 *
 * TCP (vhpc-rsh): the agent accepts connections on AGENT_TCP_PORT from
 * loopback and from the subnets of its own IPv4 interfaces (the cluster's
 * private network; refused from elsewhere), and only once it holds the job's
 * key.  Every TCP connection must prove it knows the key (CHALLENGE, AUTH,
 * AUTH_OK above: both sides, fresh nonces from both, so a recorded exchange
 * cannot be replayed); any other frame before AUTH, a wrong MAC, or no AUTH
 * within AGENT_AUTH_MS ends the connection, and at most AGENT_MAX_UNAUTH
 * connections may be waiting to authenticate at once.  Inside the guest the
 * key is in AGENT_KEY_FILE (0600), where vhpc-rsh reads it.
 *
 * Errors: every length read from the wire is checked against the frame.
 * A frame with a bad magic or over AGENT_MAX_PAYLOAD means the stream is out
 * of step: the receiver ends the connection (the agent: closes a TCP
 * connection; reopens its port and skips input up to the next AGENT_MAGIC).
 * A well-framed frame of unknown type or with a malformed payload is logged
 * and skipped; a malformed EXEC is answered with EXEC_FAILED EPROTO.  When a
 * connection ends (for the port: when its host side disconnects), the agent
 * kills (SIGKILL) the process groups of the commands it started for it.
 */
#ifndef VHPC_AGENT_PROTO_H
#define VHPC_AGENT_PROTO_H

#include <assert.h>
#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_PROTO_VERSION 2
#define AGENT_MAGIC         0x56414731u /* "1GAV": catches a port that is not ours */
#define AGENT_MAX_PAYLOAD   (1u << 20)
#define AGENT_MAX_CHUNK     (64u << 10) /* STDOUT/STDERR/FILE_DATA frames from the agent */
#define AGENT_PORT_NAME     "org.vhpc.agent"
#define AGENT_TCP_PORT      7420
#define AGENT_LINGER_MS     250
#define AGENT_KEY_LEN       32
#define AGENT_NONCE_LEN     32
#define AGENT_MAC_LEN       32
#define AGENT_AUTH_MS       5000
#define AGENT_MAX_UNAUTH    16
#define AGENT_KEY_FILE      "/run/vhpc/job.key"
#define AGENT_MAC_CLIENT    "vhpc-rsh client" /* with its NUL: 16 bytes */
#define AGENT_MAC_AGENT     "vhpc-rsh agent"  /* with its NUL: 15 bytes */

enum agent_type {
    AGENT_HELLO = 1,
    AGENT_EXEC = 2,
    AGENT_STARTED = 3,
    AGENT_EXEC_FAILED = 4,
    AGENT_STDIN = 5,
    AGENT_STDOUT = 6,
    AGENT_STDERR = 7,
    AGENT_SIGNAL = 8,
    AGENT_EXIT = 9,
    AGENT_PUT_FILE = 10,
    AGENT_PUT_DONE = 11,
    AGENT_GET_FILE = 12,
    AGENT_FILE_DATA = 13,
    AGENT_FILE_END = 14,
    AGENT_SHUTDOWN = 15,
    AGENT_PING = 16,
    AGENT_PONG = 17,
    AGENT_KEY = 18,
    AGENT_KEY_OK = 19,
    AGENT_CHALLENGE = 20,
    AGENT_AUTH = 21,
    AGENT_AUTH_OK = 22,
};
#define AGENT_TYPE_MAX AGENT_AUTH_OK

enum {
    AGENT_EXEC_STDIN = 1u << 0, /* the host will send STDIN frames; else stdin is /dev/null */
    AGENT_EXEC_PTY = 1u << 1,   /* reserved: run on a pseudo-terminal */
};

enum { AGENT_EXIT_CODE = 1, AGENT_EXIT_SIGNAL = 2 };
enum { AGENT_SHUTDOWN_POWEROFF = 1, AGENT_SHUTDOWN_REBOOT = 2 };
#define AGENT_PUT_MORE (1u << 31) /* in PUT_FILE's mode: FILE_DATA.../FILE_END follow */

struct agent_hdr {
    uint32_t magic;   /* AGENT_MAGIC */
    uint32_t type;    /* enum agent_type */
    uint32_t session; /* 0: the connection; else the host's command number */
    uint32_t len;     /* payload bytes that follow, <= AGENT_MAX_PAYLOAD */
};
static_assert(sizeof(struct agent_hdr) == 16, "16-byte frame header");
#define AGENT_HDR_SIZE 16u

/* ---- encoding, shared by vhpc-agent, vhpc-rsh and libvhpc -----------------
 * Static inline so the static guest binaries and the host library share one
 * implementation without a common library. */

static inline void agent_put_u32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static inline uint32_t agent_get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static inline void agent_hdr_put(uint8_t *out, uint32_t type, uint32_t session, uint32_t len)
{
    agent_put_u32(out, AGENT_MAGIC);
    agent_put_u32(out + 4, type);
    agent_put_u32(out + 8, session);
    agent_put_u32(out + 12, len);
}

/* Decode a header; false if the stream is out of step (bad magic, oversize). */
static inline bool agent_hdr_get(const uint8_t *in, struct agent_hdr *h)
{
    h->magic = agent_get_u32(in);
    h->type = agent_get_u32(in + 4);
    h->session = agent_get_u32(in + 8);
    h->len = agent_get_u32(in + 12);
    return h->magic == AGENT_MAGIC && h->len <= AGENT_MAX_PAYLOAD;
}

/* Reading a payload.  Every read is bounds-checked; a failed read sets `bad`
 * and makes every later read fail too, so a parser checks once at the end. */
struct agent_rd {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static inline uint32_t agent_rd_u32(struct agent_rd *r)
{
    if (r->bad || r->left < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = agent_get_u32(r->p);
    r->p += 4;
    r->left -= 4;
    return v;
}

static inline uint64_t agent_rd_u64(struct agent_rd *r)
{
    uint64_t lo = agent_rd_u32(r);
    return lo | (uint64_t)agent_rd_u32(r) << 32;
}

/* A string: returns a pointer into the payload (not NUL-terminated) and its
 * length; NULL (and `bad`) if it overruns the frame or contains a NUL. */
static inline const char *agent_rd_str(struct agent_rd *r, uint32_t *len)
{
    uint32_t n = agent_rd_u32(r);
    if (r->bad || n > r->left || memchr(r->p, 0, n)) {
        r->bad = true;
        *len = 0;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n;
    r->left -= n;
    *len = n;
    return s;
}

/* The same, copied into a fresh NUL-terminated string (NULL on error). */
static inline char *agent_rd_strdup(struct agent_rd *r)
{
    uint32_t n;
    const char *s = agent_rd_str(r, &n);
    char *d = s ? (char *)malloc((size_t)n + 1) : NULL;
    if (!d) {
        r->bad = true;
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* Writing a payload into a buffer the caller sized (4 bytes per integer,
 * 4 + length per string). */
static inline uint8_t *agent_wr_u32(uint8_t *p, uint32_t v)
{
    agent_put_u32(p, v);
    return p + 4;
}

static inline uint8_t *agent_wr_u64(uint8_t *p, uint64_t v)
{
    p = agent_wr_u32(p, (uint32_t)v);
    return agent_wr_u32(p, (uint32_t)(v >> 32));
}

static inline uint8_t *agent_wr_str(uint8_t *p, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    p = agent_wr_u32(p, (uint32_t)n);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

/* A byte queue for frames going out or coming in: data[head, len) is
 * pending.  agent_buf_reserve() makes room for n more bytes at the tail. */
struct agent_buf {
    uint8_t *data;
    size_t head, len, cap;
};

static inline size_t agent_buf_pending(const struct agent_buf *b)
{
    return b->len - b->head;
}

/* Returns a pointer to n writable bytes at the tail (commit them by adding
 * to `len`), or NULL when out of memory. */
static inline uint8_t *agent_buf_reserve(struct agent_buf *b, size_t n)
{
    if (b->head && (b->head == b->len || b->head >= b->cap / 2)) {
        memmove(b->data, b->data + b->head, b->len - b->head);
        b->len -= b->head;
        b->head = 0;
    }
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *d = (uint8_t *)realloc(b->data, cap);
        if (!d)
            return NULL;
        b->data = d;
        b->cap = cap;
    }
    return b->data + b->len;
}

static inline void agent_buf_consume(struct agent_buf *b, size_t n)
{
    b->head += n;
    if (b->head == b->len)
        b->head = b->len = 0;
}

static inline void agent_buf_free(struct agent_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* Append one frame whose payload the caller fills: returns a pointer to
 * `len` payload bytes (the header is written), or NULL when out of memory. */
static inline uint8_t *agent_buf_frame(struct agent_buf *b, uint32_t type, uint32_t session,
                                       uint32_t len)
{
    uint8_t *p = agent_buf_reserve(b, AGENT_HDR_SIZE + (size_t)len);
    if (!p)
        return NULL;
    agent_hdr_put(p, type, session, len);
    b->len += AGENT_HDR_SIZE + (size_t)len;
    return p + AGENT_HDR_SIZE;
}

#endif /* VHPC_AGENT_PROTO_H */
