/*
 * error.c - ivc_strerror(): a sentence for every code the library returns.
 */
#include "ivc.h"

#include <string.h>

const char *ivc_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case IVC_EINVAL: return "invalid argument";
    case IVC_ENOMEM: return "out of memory";
    case IVC_EAGAIN: return "resource temporarily unavailable, try again";
    case IVC_ENOENT: return "no such peer in this job on this host";
    case IVC_ENODEV:
        return "no IVC region: the job's ivcd socket or the guest's ivshmem device is missing";
    case IVC_EACCES: return "the magic id does not match this job's region";
    case IVC_ENOSPC:
        return "the region is full (no free endpoint slot, connection record or ring memory)";
    case IVC_ETIMEDOUT: return "timed out";
    case IVC_ECONNREFUSED: return "the peer refused the connection";
    case IVC_ECONNRESET: return "connection reset: the peer died or left the region";
    case IVC_EPROTO: return "the shared region is corrupt (invalid index, length, offset or state)";
    case IVC_EPROTONOSUPPORT: return "the region or ivcd speaks an unsupported protocol version";
    case IVC_ESHUTDOWN: return "channel suspended for migration";
    case IVC_ENOTCONN: return "not attached to a region (suspended for migration)";
    case IVC_EBUSY: return "resource busy";
    case IVC_EPIPE: return "the peer closed the channel";
    case IVC_EOF: return "end of stream: the peer closed the channel";
    }
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "unknown error";
}
