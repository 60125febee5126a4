/*
 * proto.c - checks of what a peer puts on the wire (ivf_proto.h): its
 * address, the headers of its frames and its hellos, before anything in
 * them is used.  Pure functions: no endpoint, no I/O.
 */
#include "ivf_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

bool ivf_addr_valid(const struct ivf_addr *a)
{
    return a->magic == IVF_ADDR_MAGIC && a->version == IVF_ADDR_VERSION && a->port != 0 &&
           a->uid != 0;
}

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void ivf_addr_v4(struct ivf_addr *a, const void *ip4, uint16_t port)
{
    memset(a, 0, sizeof(*a));
    a->magic = IVF_ADDR_MAGIC;
    a->version = IVF_ADDR_VERSION;
    a->port = port;
    memcpy(a->ip, v4mapped, sizeof(v4mapped));
    memcpy(a->ip + 12, ip4, 4);
}

bool ivf_addr_is_v4(const struct ivf_addr *a)
{
    return memcmp(a->ip, v4mapped, sizeof(v4mapped)) == 0;
}

void ivf_addr_str(const struct ivf_addr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ivf_addr_is_v4(a))
        inet_ntop(AF_INET, a->ip + 12, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
    snprintf(buf, len, "ivc://%s:%u/%016llx/%llx/%u", ip, (unsigned)ntohs(a->port),
             (unsigned long long)a->uid, (unsigned long long)a->job, (unsigned)a->ivc_client);
}

const char *ivf_hdr_check(const struct ivf_hdr *h)
{
    if (h->version != IVF_PROTO_VERSION)
        return "a frame of another protocol version (another build of the provider?)";
    if ((h->flags & IVF_F_FAULT) && ((h->type != IVF_EAGER && h->type != IVF_DATA) || h->len))
        return "a FAULT flag on a frame that cannot carry it";
    switch (h->type) {
    case IVF_EAGER:
        return h->len <= IVF_MAX_EAGER ? NULL : "an EAGER message beyond the eager limit";
    case IVF_DATA: return NULL; /* bounded by the receive it names (progress.c) */
    case IVF_RTS:
        if (h->size > IVF_MAX_MSG)
            return "an RTS beyond the largest message";
        /* fall through */
    case IVF_CTS:
    case IVF_ACK:
    case IVF_FLUSH:
    case IVF_CREDIT:
    case IVF_MOVE:
    case IVF_MOVED: return h->len == 0 ? NULL : "a control frame with a payload";
    default: return "an unknown frame type";
    }
}

const char *ivf_hello_check(const uint8_t buf[IVF_HELLO_LEN], uint8_t type, struct ivf_hdr *h,
                            struct ivf_addr *a)
{
    memcpy(h, buf, sizeof(*h));
    memcpy(a, buf + sizeof(*h), sizeof(*a));
    if (h->type != type || h->len != sizeof(*a) || !ivf_addr_valid(a))
        return "not a hello of an ivc endpoint";
    if (h->version != IVF_PROTO_VERSION)
        return "a hello of another protocol version (another build of the provider?)";
    return NULL;
}

void ivf_hello_fill(uint8_t buf[IVF_HELLO_LEN], uint8_t type, uint64_t id, const struct ivf_addr *a)
{
    struct ivf_hdr h = {.version = IVF_PROTO_VERSION, .type = type, .len = sizeof(*a), .id = id};
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), a, sizeof(*a));
}
