/*
 * ivf_proto.h - the wire format of the provider "ivc": the address an
 * endpoint publishes (fi_getname) and the frames that go on a stream
 * between two endpoints.  Nothing here depends on the rest of the
 * provider; proto.c checks what arrives against these rules.
 *
 * A stream (one per direction and peer, see ivf.h) is a sequence of frames:
 * a 40-byte header (struct ivf_hdr) and `len` payload bytes.  The first
 * frame of a TCP connection, from the endpoint that opened it, is HELLO;
 * the first frame of each direction of an IVC channel is IVC_HELLO; both
 * carry the sender's struct ivf_addr.
 * Every header carries IVF_PROTO_VERSION: a frame of another version makes
 * the peer failed (an endpoint of another build of the provider).
 *
 * All fields are in host byte order (both ends run on one architecture:
 * one host, or VMs of it), except ivf_addr.port and ivf_addr.ip.
 */
#ifndef IVF_PROTO_H
#define IVF_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 2: a TCP connection carries both directions (MOVE); 1 had one per direction. */
#define IVF_PROTO_VERSION 2

/* The largest message (RTS size) and eager message (EAGER len) a peer may
 * announce; FI_IVC_EAGER_MAX is kept below the latter. */
#define IVF_MAX_MSG   ((uint64_t)1 << 40)
#define IVF_MAX_EAGER ((uint32_t)1 << 24)

/* ---- addresses -------------------------------------------------------------- */

#define IVF_ADDR_MAGIC   0x49564641u /* "IVFA" */
#define IVF_ADDR_VERSION 1

/* What fi_getname() returns and fi_av_insert() takes: how to reach an
 * endpoint over TCP, and who it is in IVC terms.  Stable for the
 * endpoint's life, migrations included (the IVC client id stays; which
 * region it is attached to is found out at run time). */
struct ivf_addr {
    uint32_t magic;
    uint16_t version;    /* IVF_ADDR_VERSION */
    uint16_t port;       /* TCP port, network order */
    uint8_t ip[16];      /* IPv4-mapped IPv6 or IPv6 */
    uint64_t uid;        /* unique per endpoint (random) */
    uint64_t job;        /* IVC job id; 0: no IVC */
    uint32_t ivc_client; /* IVC client id in that job */
    uint32_t reserved;
};
_Static_assert(sizeof(struct ivf_addr) == 48, "wire size");

/* ---- frames ------------------------------------------------------------------- */

enum ivf_frame {
    IVF_HELLO = 1, /* first frame of a TCP connection: payload = sender's ivf_addr */
    IVF_EAGER,     /* a whole message: payload = the data */
    IVF_RTS,       /* a large message: size = its length, id = sender's op */
    IVF_CTS,       /* receiver matched an RTS: id = sender's op, data = receiver's op,
                    * size = bytes wanted (0: discard) */
    IVF_DATA,      /* rendezvous data: id = receiver's op, size = offset */
    IVF_ACK,       /* delivered: id = sender's op (FI_DELIVERY_COMPLETE) */
    IVF_FLUSH,     /* the sender continues this stream on the IVC channel `id` */
    IVF_IVC_HELLO, /* first frame on an IVC channel, both ways: payload = sender's ivf_addr,
                    * id = the channel's name */
    IVF_CREDIT,    /* the receiver took `data` more bytes of eager messages */
    IVF_MOVE,      /* the sender's stream goes on on the TCP connection the receiver
                    * opened (both opened one at once; see ivf.h) */
    IVF_MOVED,     /* answer to MOVE: its receiver reads on that connection now */
    IVF_FRAME_MAX
};

#define IVF_F_TAGGED 0x01 /* EAGER/RTS: a tagged message (else FI_MSG) */
#define IVF_F_CQDATA 0x02 /* EAGER/RTS: `data` is remote CQ data */
#define IVF_F_ACK    0x04 /* EAGER/RTS: send IVF_ACK once delivered */
/* EAGER/DATA with len 0: the sender could not read the message's data (its
 * buffer is not mapped): the receive that takes it fails (FI_EREMOTEIO);
 * a DATA frame so marked ends its receive early.  Added within version 1
 * (its frames, the fuzzers' corpus among them, stay valid): a receiver of
 * an earlier build takes such an EAGER for an empty message and waits on
 * after such a DATA, where that build's sender crashed. */
#define IVF_F_FAULT 0x08

struct ivf_hdr {
    uint8_t version; /* IVF_PROTO_VERSION */
    uint8_t type;    /* enum ivf_frame */
    uint8_t flags;   /* IVF_F_* */
    uint8_t reserved;
    uint32_t len; /* payload bytes following this header */
    uint64_t tag;
    uint64_t data;
    uint64_t id;
    uint64_t size;
};
_Static_assert(sizeof(struct ivf_hdr) == 40, "wire size");

/* A hello frame, header and address, as it goes on the wire. */
#define IVF_HELLO_LEN (sizeof(struct ivf_hdr) + sizeof(struct ivf_addr))

/* ---- checks on what a peer sent (proto.c) -------------------------------------- */

bool ivf_addr_valid(const struct ivf_addr *a);
/* "ivc://1.2.3.4:5555/uid/job/client" */
/* An IPv4 address (4 bytes, network order) and port (network order) as
 * ours, IPv4-mapped; uid, job and client 0.  Is a an IPv4-mapped one? */
void ivf_addr_v4(struct ivf_addr *a, const void *ip4, uint16_t port);
bool ivf_addr_is_v4(const struct ivf_addr *a);
void ivf_addr_str(const struct ivf_addr *a, char *buf, size_t len);

/* Is h a well-formed header of a stream frame (not a hello): our version,
 * a known type, a payload only where the type has one (at most
 * IVF_MAX_EAGER for EAGER), an RTS size up to IVF_MAX_MSG?  NULL if so,
 * else why not (for the log). */
const char *ivf_hdr_check(const struct ivf_hdr *h);
/* The same for a hello of `type` (IVF_HELLO or IVF_IVC_HELLO) in buf:
 * NULL and *a filled if it is one. */
const char *ivf_hello_check(const uint8_t buf[IVF_HELLO_LEN], uint8_t type, struct ivf_hdr *h,
                            struct ivf_addr *a);
/* Fill buf with a hello of `type` from a, naming `id`. */
void ivf_hello_fill(uint8_t buf[IVF_HELLO_LEN], uint8_t type, uint64_t id,
                    const struct ivf_addr *a);

#endif
