/*
 * test_fi_api - the provider ivc through libfabric's API, two endpoints in
 * one process (one domain, so reading either CQ moves both): names and
 * address vectors (table and map, bad addresses), tagged and untagged
 * messages with CQ data and source addresses, inject without completion
 * (the calls) and with it (the FI_INJECT flag), fi_cq_signal waking sread,
 * source addresses from fi_getinfo (FI_SOURCE, hints) that endpoints bind,
 * selective completion, truncation as an error entry, FI_PEEK / FI_CLAIM /
 * FI_DISCARD, fi_cancel (each cancelled receive completes once), one
 * address inserted twice (a directed receive takes the peer's messages by
 * either fi_addr), an 8 MiB rendezvous message, bad calls, send buffers
 * that cannot be read (the send and its receive fail, not the peer), and
 * bad peers (a raw TCP connection speaking another protocol version,
 * announcing an oversized frame or sending eager messages beyond its
 * credit, or claiming the endpoint's own uid is dropped, the endpoint
 * goes on; a peer failing with sends queued: no error entry for an
 * inject), and two endpoints that connect
 * to each other at once (one connection is left, nothing lost or reordered).
 * Needs FI_PROVIDER_PATH (set by ctest); no IVC job, so everything is TCP,
 * except in ivc_breaks (an ivcd of its own: an IVC channel that breaks
 * with messages in it fails its peer).
 */
#include "testutil.h"

#include "../src/fi/ivf.h" /* the wire format, to play a bad peer; endpoints' insides */
#include "internal.h"      /* libivc's channel, to break one */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FI_OK(x)                                                                                   \
    do {                                                                                           \
        int _r = (int)(x);                                                                         \
        T_ASSERT(_r >= 0, "%s: %s", #x, fi_strerror(-_r));                                         \
    } while (0)

static struct fi_info *info;
static struct fid_fabric *fabric;
static struct fid_domain *domain;

struct side {
    struct fid_ep *ep;
    struct fid_av *av;
    struct fid_cq *cq;
    fi_addr_t peer; /* the other side in this side's AV */
    fi_addr_t self;
};
static struct side a, b;

/* Wait for one completion on cq (entries or an error entry). */
static int wait_cq(struct fid_cq *cq, struct fi_cq_tagged_entry *e, fi_addr_t *src)
{
    for (uint64_t t0 = t_now_ms(); t_now_ms() - t0 < 20000;) {
        ssize_t r = src ? fi_cq_readfrom(cq, e, 1, src) : fi_cq_read(cq, e, 1);
        if (r == 1)
            return 0;
        if (r == -FI_EAVAIL)
            return -FI_EAVAIL;
        T_ASSERT(r == -FI_EAGAIN, "fi_cq_read: %s", fi_strerror((int)-r));
    }
    T_FAIL("no completion within 20 s");
}

static struct fi_cq_err_entry read_err(struct fid_cq *cq)
{
    struct fi_cq_err_entry e = {0};
    T_ASSERT(fi_cq_readerr(cq, &e, 0) == 1, "fi_cq_readerr");
    return e;
}

/* Nothing on cq for a while (progress runs meanwhile). */
static void expect_empty(struct fid_cq *cq)
{
    struct fi_cq_tagged_entry e;
    for (int i = 0; i < 200; i++)
        T_ASSERT(fi_cq_read(cq, &e, 1) == -FI_EAGAIN, "unexpected completion %p", e.op_context);
}

static void open_side(struct side *s, enum fi_av_type type, uint64_t bind_flags)
{
    struct fi_av_attr av = {.type = type};
    struct fi_cq_attr cq = {.format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_NONE};
    FI_OK(fi_av_open(domain, &av, &s->av, NULL));
    FI_OK(fi_cq_open(domain, &cq, &s->cq, NULL));
    FI_OK(fi_endpoint(domain, info, &s->ep, NULL));
    FI_OK(fi_ep_bind(s->ep, &s->av->fid, 0));
    FI_OK(fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV | bind_flags));
    FI_OK(fi_enable(s->ep));
}

static void test_setup_and_names(void)
{
    struct fi_info *hints = fi_allocinfo();
    hints->caps = FI_TAGGED | FI_MSG | FI_DIRECTED_RECV | FI_SOURCE;
    hints->ep_attr->type = FI_EP_RDM;
    hints->domain_attr->mr_mode = 0;
    hints->fabric_attr->prov_name = strdup("ivc");
    FI_OK(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &info));
    T_ASSERT(info->domain_attr->cq_data_size == 8, "cq_data_size %zu",
             info->domain_attr->cq_data_size);
    /* What it does not offer it refuses. */
    struct fi_info *bad;
    hints->caps = FI_RMA;
    T_ASSERT(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &bad) == -FI_ENODATA, "RMA");
    hints->caps = FI_TAGGED;
    hints->ep_attr->type = FI_EP_MSG;
    T_ASSERT(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &bad) == -FI_ENODATA, "EP_MSG");
    fi_freeinfo(hints);

    FI_OK(fi_fabric(info->fabric_attr, &fabric, NULL));
    FI_OK(fi_domain(fabric, info, &domain, NULL));
    open_side(&a, FI_AV_TABLE, 0);
    open_side(&b, FI_AV_MAP, FI_SELECTIVE_COMPLETION);

    char name_a[64], name_b[64];
    size_t len = 4;
    T_ASSERT(fi_getname(&a.ep->fid, name_a, &len) == -FI_ETOOSMALL && len == 48,
             "short buffer: ETOOSMALL and the length needed (%zu)", len);
    len = sizeof(name_a);
    FI_OK(fi_getname(&a.ep->fid, name_a, &len));
    len = sizeof(name_b);
    FI_OK(fi_getname(&b.ep->fid, name_b, &len));

    /* A table hands out 0, 1, ...; garbage is refused without harm. */
    T_ASSERT(fi_av_insert(a.av, name_a, 1, &a.self, 0, NULL) == 1 && a.self == 0, "self");
    T_ASSERT(fi_av_insert(a.av, name_b, 1, &a.peer, 0, NULL) == 1 && a.peer == 1, "peer");
    char junk[48];
    memset(junk, 0x5a, sizeof(junk));
    fi_addr_t fa = 7;
    T_ASSERT(fi_av_insert(a.av, junk, 1, &fa, 0, NULL) == 0 && fa == FI_ADDR_NOTAVAIL, "junk");
    T_ASSERT(fi_av_insert(b.av, name_a, 1, &b.peer, 0, NULL) == 1, "b's peer");
    char back[64];
    len = sizeof(back);
    FI_OK(fi_av_lookup(a.av, a.peer, back, &len));
    T_ASSERT(len == 48 && memcmp(back, name_b, 48) == 0, "lookup gives the name back");
    T_ASSERT(fi_av_lookup(a.av, 99, back, &len) == -FI_ENOENT, "lookup of nothing");
    char str[128];
    len = sizeof(str);
    fi_av_straddr(a.av, name_b, str, &len);
    T_ASSERT(strncmp(str, "ivc://", 6) == 0, "straddr '%s'", str);
}

static void test_tagged_and_msg(void)
{
    struct fi_cq_tagged_entry e;
    fi_addr_t src;
    char out[64] = "tagged hello", in[64] = "";
    int ctx_s, ctx_r;
    /* b's CQ is selective: its receive asks for a completion. */
    struct iovec iov = {in, sizeof(in)};
    struct fi_msg_tagged tm = {.msg_iov = &iov,
                               .iov_count = 1,
                               .addr = b.peer,
                               .tag = 0x500,
                               .ignore = 0xff,
                               .context = &ctx_r};
    FI_OK(fi_trecvmsg(b.ep, &tm, FI_COMPLETION));
    FI_OK(fi_tsenddata(a.ep, out, 13, NULL, 0xfeedULL, a.peer, 0x5ab, &ctx_s));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_s && (e.flags & FI_SEND) && (e.flags & FI_TAGGED), "send done");
    T_OK(wait_cq(b.cq, &e, &src));
    T_ASSERT(e.op_context == &ctx_r && e.len == 13 && e.tag == 0x5ab && e.data == 0xfeed &&
                 (e.flags & FI_REMOTE_CQ_DATA) && (e.flags & FI_RECV),
             "received: len %zu tag %llx data %llx", e.len, (unsigned long long)e.tag,
             (unsigned long long)e.data);
    T_ASSERT(src == b.peer, "FI_SOURCE gives the sender's fi_addr (%llu)", (unsigned long long)src);
    T_ASSERT(strcmp(in, "tagged hello") == 0, "data '%s'", in);

    /* Untagged, and inject: the injected send gives no completion. */
    struct fi_msg m = {.msg_iov = &iov, .iov_count = 1, .addr = b.peer, .context = &ctx_r};
    FI_OK(fi_recvmsg(b.ep, &m, FI_COMPLETION));
    FI_OK(fi_inject(a.ep, "injected", 9, a.peer));
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.len == 9 && (e.flags & FI_MSG) && strcmp(in, "injected") == 0, "inject: '%s'", in);
    expect_empty(a.cq);

    /* FI_INJECT as a flag of fi_tsendmsg: the buffer is free on return,
     * and the send completes all the same (only fi_inject is quiet). */
    char flagged[8] = "flagged";
    struct iovec fi = {flagged, sizeof(flagged)};
    struct fi_msg_tagged fm = {
        .msg_iov = &fi, .iov_count = 1, .addr = a.peer, .tag = 8, .context = &ctx_s};
    struct fi_msg_tagged rm = {
        .msg_iov = &iov, .iov_count = 1, .addr = b.peer, .tag = 8, .context = &ctx_r};
    FI_OK(fi_trecvmsg(b.ep, &rm, FI_COMPLETION));
    FI_OK(fi_tsendmsg(a.ep, &fm, FI_INJECT));
    memset(flagged, 0, sizeof(flagged));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_s && (e.flags & FI_SEND), "a send with FI_INJECT completes");
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_r && strcmp(in, "flagged") == 0, "FI_INJECT: '%s'", in);

    /* Selective: b sends without FI_COMPLETION: no entry; with it: one. */
    struct iovec so = {out, 4};
    struct fi_msg_tagged st = {.msg_iov = &so, .iov_count = 1, .addr = b.peer, .tag = 1};
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.peer, 1, 0, &ctx_r));
    FI_OK(fi_tsendmsg(b.ep, &st, 0));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_r && e.len == 4, "a got it");
    expect_empty(b.cq);
}

/* Peek at a's tagged messages with m (flags: FI_CLAIM, FI_DISCARD) until
 * one is there: *e says which. */
static void peek_found(struct fi_msg_tagged *m, uint64_t flags, struct fi_cq_tagged_entry *e)
{
    for (int i = 0; i < 2000; i++) {
        FI_OK(fi_trecvmsg(a.ep, m, FI_PEEK | FI_COMPLETION | flags));
        if (wait_cq(a.cq, e, NULL) == 0)
            return;
        T_ASSERT(read_err(a.cq).err == FI_ENOMSG, "peek error");
    }
    T_FAIL("no message for the peek");
}

static void test_truncate_peek_cancel(void)
{
    struct fi_cq_tagged_entry e;
    char big[100], small[10];
    int ctx, c1, c2;
    memset(big, 'x', sizeof(big));
    /* 100 bytes into 10: an error entry with len 10, olen 90. */
    FI_OK(fi_trecv(a.ep, small, sizeof(small), NULL, FI_ADDR_UNSPEC, 2, 0, &ctx));
    FI_OK(fi_tsend(b.ep, big, sizeof(big), NULL, b.peer, 2, NULL));
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL, "truncation is an error entry");
    struct fi_cq_err_entry err = read_err(a.cq);
    T_ASSERT(err.err == FI_ETRUNC && err.len == 10 && err.olen == 90 && err.op_context == &ctx,
             "ETRUNC len %zu olen %zu", err.len, err.olen);

    /* Peek with nothing there: FI_ENOMSG. */
    struct fi_context pctx;
    struct fi_msg_tagged pm = {.addr = FI_ADDR_UNSPEC, .tag = 3, .context = &pctx};
    FI_OK(fi_trecvmsg(a.ep, &pm, FI_PEEK | FI_COMPLETION));
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL && read_err(a.cq).err == FI_ENOMSG, "ENOMSG");
    /* Two messages with tag 3; peek+claim the first, discard the second by peek. */
    FI_OK(fi_tinject(b.ep, "first", 6, b.peer, 3));
    FI_OK(fi_tinject(b.ep, "second", 7, b.peer, 3));
    peek_found(&pm, FI_CLAIM, &e);
    T_ASSERT(e.len == 6 && e.tag == 3, "peek+claim sees 'first' (len %zu)", e.len);
    struct fi_msg_tagged dm = {.addr = FI_ADDR_UNSPEC, .tag = 3, .context = &c1};
    peek_found(&dm, FI_DISCARD, &e);
    T_ASSERT(e.len == 7, "peek+discard dropped 'second'");
    char got[16] = "";
    struct iovec gi = {got, sizeof(got)};
    struct fi_msg_tagged cm = {.msg_iov = &gi, .iov_count = 1, .context = &pctx};
    FI_OK(fi_trecvmsg(a.ep, &cm, FI_CLAIM | FI_COMPLETION));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(strcmp(got, "first") == 0, "the claimed message is delivered: '%s'", got);
    /* 'second' is gone: nothing more with tag 3. */
    FI_OK(fi_trecvmsg(a.ep, &pm, FI_PEEK | FI_COMPLETION));
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL && read_err(a.cq).err == FI_ENOMSG,
             "discarded message gone");

    /* A message sent FI_DELIVERY_COMPLETE and discarded is delivered: the
     * send completes (the receiver acknowledges it all the same). */
    int cdc;
    struct iovec dv = {big, 3};
    struct fi_msg_tagged dcm = {
        .msg_iov = &dv, .iov_count = 1, .addr = b.peer, .tag = 5, .context = &cdc};
    FI_OK(fi_tsendmsg(b.ep, &dcm, FI_COMPLETION | FI_DELIVERY_COMPLETE));
    dm.tag = 5;
    peek_found(&dm, FI_DISCARD, &e);
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.op_context == &cdc, "a discarded FI_DELIVERY_COMPLETE send completes");

    /* Cancel a posted receive; an unknown context is ENOENT. */
    FI_OK(fi_trecv(a.ep, got, sizeof(got), NULL, FI_ADDR_UNSPEC, 4, 0, &c2));
    FI_OK(fi_cancel(&a.ep->fid, &c2));
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL, "cancel completes with an error");
    err = read_err(a.cq);
    T_ASSERT(err.err == FI_ECANCELED && err.op_context == &c2, "ECANCELED");
    T_ASSERT(fi_cancel(&a.ep->fid, &c2) == -FI_ENOENT, "cancel again: ENOENT");
}

static void test_large_and_bad(void)
{
    size_t len = 8u << 20;
    uint8_t *out = malloc(len), *in = malloc(len);
    t_fill(out, len, 11, 0);
    struct fi_cq_tagged_entry e;
    int cs, cr;
    FI_OK(fi_trecv(a.ep, in, len, NULL, a.peer, 9, 0, &cr));
    struct iovec v = {out, len};
    struct fi_msg_tagged m = {
        .msg_iov = &v, .iov_count = 1, .addr = b.peer, .tag = 9, .context = &cs};
    FI_OK(fi_tsendmsg(b.ep, &m, FI_COMPLETION | FI_DELIVERY_COMPLETE));
    int got_s = 0, got_r = 0;
    while (!got_s || !got_r) {
        if (!got_r && fi_cq_read(a.cq, &e, 1) == 1)
            got_r = e.op_context == &cr && e.len == len;
        if (!got_s && fi_cq_read(b.cq, &e, 1) == 1)
            got_s = e.op_context == &cs;
    }
    T_ASSERT(memcmp(in, out, len) == 0, "8 MiB intact");
    free(out);
    free(in);
    /* Bad calls: unknown fi_addr, inject too big. */
    char buf[8192];
    T_ASSERT(fi_tsend(a.ep, buf, 1, NULL, 42, 1, NULL) == -FI_EINVAL, "unknown destination");
    T_ASSERT(fi_tinject(a.ep, buf, sizeof(buf), a.peer, 1) == -FI_EINVAL, "inject > inject_size");
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    T_ASSERT(d, "/proc/self/fd");
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Wait until both the send (context cs on a's CQ) and the receive (cr)
 * completed; the receive's entry in *e. */
static void wait_both(void *cs, void *cr, struct fi_cq_tagged_entry *e)
{
    bool got_s = false, got_r = false;
    struct fi_cq_tagged_entry x;
    for (uint64_t t0 = t_now_ms(); (!got_s || !got_r) && t_now_ms() - t0 < 20000;) {
        ssize_t r = fi_cq_read(a.cq, &x, 1);
        T_ASSERT(r == 1 || r == -FI_EAGAIN, "fi_cq_read: %s", fi_strerror((int)-r));
        if (r == 1 && x.op_context == cs)
            got_s = true;
        if (r == 1 && x.op_context == cr) {
            got_r = true;
            *e = x;
        }
    }
    T_ASSERT(got_s && got_r, "send %s, receive %s", got_s ? "done" : "not done",
             got_r ? "done" : "not done");
}

/* Messages from an endpoint to itself (Open MPI's pml cm sends a rank's
 * messages to itself through the provider): small and large, expected and
 * not, delivery-complete, more at once than the in-memory stream holds,
 * and one whose buffer has no base.  They open no connection. */
static void test_self(void)
{
    struct fi_cq_tagged_entry e;
    fi_addr_t src;
    int cs, cr, fds = count_fds();
    char in[64] = "";
    /* Small: posted first, then unexpected (the receive comes later). */
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.self, 0x51, 0, &cr));
    FI_OK(fi_tsenddata(a.ep, "to me", 6, NULL, 0x77, a.self, 0x51, &cs));
    wait_both(&cs, &cr, &e);
    T_ASSERT(e.len == 6 && e.tag == 0x51 && e.data == 0x77 && strcmp(in, "to me") == 0,
             "small: len %zu '%s'", e.len, in);
    FI_OK(fi_tinject(a.ep, "later", 6, a.self, 0x52));
    expect_empty(a.cq);
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.self, 0x52, 0, &cr));
    T_OK(wait_cq(a.cq, &e, &src));
    T_ASSERT(e.op_context == &cr && strcmp(in, "later") == 0 && src == a.self,
             "unexpected: '%s', from %llu", in, (unsigned long long)src);

    /* Large (rendezvous, through the stream's buffer several times), with
     * delivery complete, sent before its receive is posted. */
    size_t len = 3u << 20;
    uint8_t *out = malloc(len), *big = malloc(len);
    t_fill(out, len, 5, 0);
    struct iovec v = {out, len};
    struct fi_msg_tagged m = {
        .msg_iov = &v, .iov_count = 1, .addr = a.self, .tag = 0x53, .context = &cs};
    FI_OK(fi_tsendmsg(a.ep, &m, FI_COMPLETION | FI_DELIVERY_COMPLETE));
    expect_empty(a.cq);
    FI_OK(fi_trecv(a.ep, big, len, NULL, a.self, 0x53, 0, &cr));
    wait_both(&cs, &cr, &e);
    T_ASSERT(e.len == len && memcmp(big, out, len) == 0, "3 MiB to itself intact");

    /* 64 eager messages of 16 KiB (1 MiB: more than the stream buffers)
     * before any receive: all arrive, in order. */
    enum { N = 64, K = 16384 };
    for (int i = 0; i < N; i++) {
        for (;;) {
            ssize_t r = fi_tsend(a.ep, out + (size_t)i * K, K, NULL, a.self, 0x54, &cs);
            if (r == 0)
                break;
            T_ASSERT(r == -FI_EAGAIN, "send %d: %s", i, fi_strerror((int)-r));
            fi_cq_read(a.cq, &e, 0);
        }
    }
    memset(big, 0, len);
    int sent = 0, got = 0;
    for (int i = 0; i < N; i++)
        FI_OK(fi_trecv(a.ep, big + (size_t)i * K, K, NULL, a.self, 0x54, 0, &cr));
    for (uint64_t t0 = t_now_ms(); (sent < N || got < N) && t_now_ms() - t0 < 20000;) {
        if (fi_cq_read(a.cq, &e, 1) == 1) {
            sent += e.op_context == &cs;
            got += e.op_context == &cr;
        }
    }
    T_ASSERT(sent == N && got == N, "%d of %d sends and %d receives done", sent, N, got);
    T_ASSERT(memcmp(big, out, (size_t)N * K) == 0, "the 64 messages arrived in order");
    free(out);
    free(big);

    /* No base: the send fails with FI_EFAULT, its receive FI_EREMOTEIO. */
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.self, 0x55, 0, &cr));
    FI_OK(fi_tsend(a.ep, NULL, 10, NULL, a.self, 0x55, &cs));
    bool send_failed = false, recv_failed = false;
    for (uint64_t t0 = t_now_ms(); (!send_failed || !recv_failed) && t_now_ms() - t0 < 20000;) {
        ssize_t r = fi_cq_read(a.cq, &e, 1);
        if (r != -FI_EAVAIL)
            continue;
        struct fi_cq_err_entry err = read_err(a.cq);
        send_failed |= err.op_context == &cs && err.err == FI_EFAULT;
        recv_failed |= err.op_context == &cr && err.err == FI_EREMOTEIO;
    }
    T_ASSERT(send_failed && recv_failed, "NULL base to itself: send %s, receive %s",
             send_failed ? "failed" : "did not fail", recv_failed ? "failed" : "did not fail");
    FI_OK(fi_tinject(a.ep, "still", 6, a.self, 0x56));
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.self, 0x56, 0, &cr));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(strcmp(in, "still") == 0, "the stream to itself goes on: '%s'", in);
    T_ASSERT(count_fds() == fds, "no connection opened (%d file descriptors, were %d)", count_fds(),
             fds);
}

/* One address inserted twice has two fi_addrs (Open MPI inserts a peer
 * again for each intercommunicator): a receive directed at either takes
 * the peer's messages, posted before or after they arrive, and reports
 * the fi_addr it named as the source. */
static void test_duplicate_address(void)
{
    char name_a[64], name_b[64];
    size_t len = sizeof(name_b);
    FI_OK(fi_getname(&b.ep->fid, name_b, &len));
    len = sizeof(name_a);
    FI_OK(fi_getname(&a.ep->fid, name_a, &len));
    fi_addr_t b_again, a_again;
    T_ASSERT(fi_av_insert(a.av, name_b, 1, &b_again, 0, NULL) == 1 && b_again == 2,
             "b again in a's table: %llu", (unsigned long long)b_again);
    T_ASSERT(fi_av_insert(b.av, name_a, 1, &a_again, 0, NULL) == 1 && a_again != b.peer,
             "a again in b's map");
    struct fi_cq_tagged_entry e;
    fi_addr_t src;
    char in[16];
    int ctx;
    /* Posted first, directed at the second fi_addr. */
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, b_again, 0x77, 0, &ctx));
    FI_OK(fi_tinject(b.ep, "posted", 7, b.peer, 0x77));
    T_OK(wait_cq(a.cq, &e, &src));
    T_ASSERT(e.op_context == &ctx && !strcmp(in, "posted"), "the posted receive took it");
    T_ASSERT(src == b_again, "source %llu, the fi_addr the receive named (%llu)",
             (unsigned long long)src, (unsigned long long)b_again);
    /* Arrived first (unexpected), then a receive directed at either. */
    FI_OK(fi_tinject(b.ep, "early", 6, b.peer, 0x78));
    FI_OK(fi_tinject(b.ep, "early2", 7, b.peer, 0x78));
    struct fi_msg_tagged pm = {.addr = b_again, .tag = 0x78, .context = &ctx};
    int found = 0;
    for (int i = 0; i < 2000 && !found; i++) {
        FI_OK(fi_trecvmsg(a.ep, &pm, FI_PEEK | FI_COMPLETION));
        if (wait_cq(a.cq, &e, NULL) == 0)
            found = 1;
        else
            T_ASSERT(read_err(a.cq).err == FI_ENOMSG, "peek error");
    }
    T_ASSERT(found && e.len == 6, "a peek directed at the second fi_addr sees it");
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, b_again, 0x78, 0, &ctx));
    T_OK(wait_cq(a.cq, &e, &src));
    T_ASSERT(!strcmp(in, "early") && src == b_again, "unexpected message, second fi_addr");
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.peer, 0x78, 0, &ctx));
    T_OK(wait_cq(a.cq, &e, &src));
    T_ASSERT(!strcmp(in, "early2") && src == a.peer, "unexpected message, first fi_addr");
    /* The other way, through b's map (b's CQ is selective). */
    struct iovec ri = {in, sizeof(in)};
    struct fi_msg_tagged rm = {
        .msg_iov = &ri, .iov_count = 1, .addr = a_again, .tag = 0x79, .context = &ctx};
    FI_OK(fi_trecvmsg(b.ep, &rm, FI_COMPLETION));
    FI_OK(fi_tinject(a.ep, "map", 4, a.peer, 0x79));
    T_OK(wait_cq(b.cq, &e, &src));
    T_ASSERT(!strcmp(in, "map") && src == a_again, "b's receive directed at a's second fi_addr");
    /* A receive directed at an fi_addr the AV does not have is refused. */
    T_ASSERT(fi_trecv(a.ep, in, sizeof(in), NULL, 99, 1, 0, &ctx) == -FI_EINVAL,
             "a receive from an unknown fi_addr");
}

/* Both completions of a message whose data the sender cannot read: the
 * send fails with FI_EFAULT, the receive that took it with FI_EREMOTEIO. */
static void expect_unreadable(void *send_ctx, void *recv_ctx, const char *what)
{
    struct fi_cq_tagged_entry e;
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL, "%s: the send fails", what);
    struct fi_cq_err_entry err = read_err(a.cq);
    T_ASSERT(err.err == FI_EFAULT && err.op_context == send_ctx && (err.flags & FI_SEND),
             "%s: send error %d (%s), context %p", what, err.err, fi_strerror(err.err),
             err.op_context);
    T_ASSERT(wait_cq(b.cq, &e, NULL) == -FI_EAVAIL, "%s: the receive fails", what);
    err = read_err(b.cq);
    T_ASSERT(err.err == FI_EREMOTEIO && err.op_context == recv_ctx && (err.flags & FI_RECV),
             "%s: receive error %d (%s), context %p", what, err.err, fi_strerror(err.err),
             err.op_context);
}

/* b receives len bytes with this tag (b's CQ is selective: asks for it). */
static void b_recv(void *buf, size_t len, uint64_t tag, void *ctx)
{
    struct iovec ri = {buf, len};
    struct fi_msg_tagged rm = {
        .msg_iov = &ri, .iov_count = 1, .addr = b.peer, .tag = tag, .context = ctx};
    FI_OK(fi_trecvmsg(b.ep, &rm, FI_COMPLETION));
}

/* A send buffer that cannot be read fails that send and the receive that
 * takes it, never the peer nor the process: a NULL base with a length
 * (what Open MPI 4.1 passes for a persistent send of data at absolute
 * addresses), eager or announced, expected or not, and a rendezvous
 * message whose pages are not readable (the kernel's EFAULT), wholly or
 * from its middle on.  A NULL base of length 0 is fine; receives and
 * injects with a NULL base and a length are refused at the call.  The
 * peer carries messages both ways afterwards. */
static void test_unreadable_send(void)
{
    size_t big = 1u << 20;
    uint8_t *in = malloc(big), *out = malloc(big);
    int cs, cr;
    T_ASSERT(in && out, "memory");
    t_fill(out, big, 5, 0);

    b_recv(in, 100, 0x100, &cr);
    FI_OK(fi_tsend(a.ep, NULL, 100, NULL, a.peer, 0x100, &cs));
    expect_unreadable(&cs, &cr, "NULL base, 100 bytes");
    FI_OK(fi_tsend(a.ep, NULL, big, NULL, a.peer, 0x101, &cs)); /* before the receive */
    b_recv(in, big, 0x101, &cr);
    expect_unreadable(&cs, &cr, "NULL base, 1 MiB, unexpected");
    T_ASSERT(fi_tinject(a.ep, NULL, 10, a.peer, 0x102) == -FI_EFAULT, "inject of NULL");
    T_ASSERT(fi_trecv(b.ep, NULL, 10, NULL, b.peer, 0x102, 0, &cr) == -FI_EFAULT,
             "receive into NULL");

    /* A piece of length 0 without an address is nothing. */
    struct fi_cq_tagged_entry e;
    struct iovec parts[3] = {{out, 10}, {NULL, 0}, {out + 10, 5}};
    b_recv(in, big, 0x103, &cr);
    FI_OK(fi_tsendv(a.ep, parts, NULL, 3, a.peer, 0x103, &cs));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.len == 15 && !memcmp(in, out, 15), "a NULL piece of length 0: %zu bytes", e.len);

    /* Not readable: the kernel refuses it (TCP); wholly, then its second half. */
    uint8_t *m = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    T_ASSERT(m != MAP_FAILED, "mmap");
    memcpy(m, out, big);
    T_ASSERT(mprotect(m, big, PROT_NONE) == 0, "mprotect");
    b_recv(in, big, 0x104, &cr);
    FI_OK(fi_tsend(a.ep, m, big, NULL, a.peer, 0x104, &cs));
    expect_unreadable(&cs, &cr, "1 MiB, not readable");
    T_ASSERT(mprotect(m, big / 2, PROT_READ) == 0, "mprotect");
    b_recv(in, big, 0x105, &cr);
    FI_OK(fi_tsend(a.ep, m, big, NULL, a.peer, 0x105, &cs));
    expect_unreadable(&cs, &cr, "1 MiB, its second half not readable");
    munmap(m, big);

    /* The peer is fine, both ways. */
    memset(in, 0, big);
    b_recv(in, big, 0x106, &cr);
    FI_OK(fi_tsend(a.ep, out, big, NULL, a.peer, 0x106, &cs));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.op_context == &cr && e.len == big && !memcmp(in, out, big), "1 MiB after");
    FI_OK(fi_trecv(a.ep, in, big, NULL, a.peer, 0x107, 0, &cr));
    FI_OK(fi_tinject(b.ep, "back", 5, b.peer, 0x107));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &cr && !strcmp((char *)in, "back"), "and back");
    free(in);
    free(out);
}

/* Read len bytes from fd while the domain makes progress (by b's CQ,
 * which stays empty). */
static void read_pumping(int fd, void *buf, size_t len)
{
    struct fi_cq_tagged_entry e;
    size_t got = 0;
    for (uint64_t t0 = t_now_ms(); got < len;) {
        T_ASSERT(t_now_ms() - t0 < 10000, "%zu of %zu bytes from a within 10 s", got, len);
        T_ASSERT(fi_cq_read(b.cq, &e, 1) == -FI_EAGAIN, "b's CQ");
        ssize_t n = recv(fd, (char *)buf + got, len - got, MSG_DONTWAIT);
        T_ASSERT(n != 0 && (n > 0 || errno == EAGAIN || errno == EWOULDBLOCK),
                 "a closed the connection (the peer failed?): %s", n ? strerror(errno) : "EOF");
        if (n > 0)
            got += (size_t)n;
    }
}

/* A rendezvous send whose buffer stops being readable while its DATA is
 * on its way (a raw TCP peer of ours receives it and reads slowly, so the
 * send stops in the middle of a frame): the frame is completed with zeros,
 * a FAULT frame ends the receive, the send fails with FI_EFAULT, and the
 * stream goes on: the next message arrives whole. */
static void test_fault_mid_frame(void)
{
    const size_t len = 8u << 20;
    struct ivf_addr fake = {.magic = IVF_ADDR_MAGIC, .version = IVF_ADDR_VERSION, .uid = 0xfa4e};
    int lfd = socket(AF_INET, SOCK_STREAM, 0), small = 64 << 10;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)); /* a fills it soon */
    T_ASSERT(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 1) == 0 &&
                 getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0,
             "listen: %s", strerror(errno));
    fake.port = sa.sin_port;
    fake.ip[10] = fake.ip[11] = 0xff;
    memcpy(fake.ip + 12, &sa.sin_addr, 4);
    fi_addr_t fa;
    T_ASSERT(fi_av_insert(a.av, &fake, 1, &fa, 0, NULL) == 1, "the raw peer in a's AV");

    uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    T_ASSERT(m != MAP_FAILED, "mmap");
    memset(m, 0x5a, len);
    int cs;
    FI_OK(fi_tsend(a.ep, m, len, NULL, fa, 0x200, &cs));
    int in = -1;
    for (uint64_t t0 = t_now_ms(); in < 0 && t_now_ms() - t0 < 10000;) {
        struct fi_cq_tagged_entry e;
        T_ASSERT(fi_cq_read(b.cq, &e, 1) == -FI_EAGAIN, "b's CQ");
        struct pollfd pf = {.fd = lfd, .events = POLLIN};
        if (poll(&pf, 1, 1) == 1)
            in = accept(lfd, NULL, NULL);
    }
    T_ASSERT(in >= 0, "a connects to the raw peer");
    uint8_t hello[IVF_HELLO_LEN];
    struct ivf_hdr h;
    read_pumping(in, hello, sizeof(hello));
    read_pumping(in, &h, sizeof(h));
    T_ASSERT(h.type == IVF_RTS && h.size == len, "an RTS of %zu bytes (type %u)", len, h.type);
    /* Clear to send, on the connection a opened (it carries both ways). */
    struct ivf_hdr cts = {
        .version = IVF_PROTO_VERSION, .type = IVF_CTS, .id = h.id, .data = 42, .size = len};
    T_ASSERT(write(in, &cts, sizeof(cts)) == (ssize_t)sizeof(cts), "CTS");
    /* a sends until our receive buffer is full, then the buffer goes away. */
    struct fi_cq_tagged_entry e;
    for (int i = 0; i < 300; i++) {
        T_ASSERT(fi_cq_read(b.cq, &e, 1) == -FI_EAGAIN, "b's CQ");
        usleep(1000);
    }
    T_ASSERT(mprotect(m, len, PROT_NONE) == 0, "mprotect");
    /* DATA in order, each byte ours or a zero, until the FAULT frame. */
    static uint8_t chunk[1 << 20];
    uint64_t off = 0;
    int zeros = 0;
    for (;;) {
        read_pumping(in, &h, sizeof(h));
        T_ASSERT(h.type == IVF_DATA && h.id == 42 && h.size == off && h.len <= sizeof(chunk),
                 "DATA at %llu (type %u, offset %llu, %u bytes)", (unsigned long long)off, h.type,
                 (unsigned long long)h.size, h.len);
        if (h.flags & IVF_F_FAULT) {
            T_ASSERT(h.len == 0, "a FAULT frame has no payload");
            break;
        }
        read_pumping(in, chunk, h.len);
        for (uint32_t i = 0; i < h.len; i++) {
            T_ASSERT(chunk[i] == 0x5a || chunk[i] == 0, "byte %llu", (unsigned long long)off + i);
            zeros += chunk[i] == 0;
        }
        off += h.len;
    }
    T_ASSERT(off < len, "the FAULT frame ends the message early (%llu bytes came)",
             (unsigned long long)off);
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL, "the send fails");
    struct fi_cq_err_entry err = read_err(a.cq);
    T_ASSERT(err.err == FI_EFAULT && err.op_context == &cs, "FI_EFAULT (%d)", err.err);
    /* The stream goes on: the next message is whole. */
    FI_OK(fi_tinject(a.ep, "next", 5, fa, 0x201));
    read_pumping(in, &h, sizeof(h));
    read_pumping(in, chunk, h.len);
    T_ASSERT(h.type == IVF_EAGER && h.tag == 0x201 && h.len == 5 && !memcmp(chunk, "next", 5),
             "the next message (type %u, %u bytes)", h.type, h.len);
    printf("# %llu bytes of DATA before the FAULT frame, %d of them zeros\n",
           (unsigned long long)off, zeros);
    munmap(m, len);
    close(in);
    close(lfd);
}

/* What Open MPI's MPI_Cancel relies on: each cancelled receive completes
 * exactly once, as an FI_ECANCELED error entry with its own context
 * (tagged or not, and on b's selective CQ without FI_COMPLETION), and
 * takes nothing: a message sent afterwards goes to the next receive.  A
 * send cannot be cancelled (-FI_ENOENT) and completes once, as usual. */
static void test_cancel_completions(void)
{
    struct fi_cq_tagged_entry e;
    char buf[4][16];
    struct fi_context ctx[4];
    FI_OK(fi_trecv(a.ep, buf[0], 16, NULL, FI_ADDR_UNSPEC, 0x400, 0, &ctx[0]));
    FI_OK(fi_trecv(a.ep, buf[1], 16, NULL, a.peer, 0x401, 0xff, &ctx[1]));
    FI_OK(fi_recv(a.ep, buf[2], 16, NULL, a.peer, &ctx[2]));
    FI_OK(fi_trecv(b.ep, buf[3], 16, NULL, b.peer, 0x402, 0, &ctx[3])); /* no FI_COMPLETION */
    int order[4] = {1, 3, 0, 2};
    for (int i = 0; i < 4; i++) {
        struct side *s = order[i] == 3 ? &b : &a;
        FI_OK(fi_cancel(&s->ep->fid, &ctx[order[i]]));
        T_ASSERT(wait_cq(s->cq, &e, NULL) == -FI_EAVAIL, "receive %d: an error entry", order[i]);
        struct fi_cq_err_entry err = read_err(s->cq);
        T_ASSERT(err.err == FI_ECANCELED && err.op_context == &ctx[order[i]] &&
                     (err.flags & FI_RECV),
                 "receive %d: FI_ECANCELED with its context (%d, %p)", order[i], err.err,
                 err.op_context);
        T_ASSERT(fi_cancel(&s->ep->fid, &ctx[order[i]]) == -FI_ENOENT, "cancelled once");
    }
    expect_empty(a.cq);
    expect_empty(b.cq);
    /* Nothing was taken: these go to the next receives. */
    char in[16] = "";
    int cr, cs;
    FI_OK(fi_tsend(b.ep, "after", 6, NULL, b.peer, 0x400, NULL));
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.peer, 0x400, 0, &cr));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &cr && !strcmp(in, "after"), "the next receive takes it");
    /* A send: not cancelled, completes once. */
    FI_OK(fi_tsend(a.ep, "sent", 5, NULL, a.peer, 0x403, &cs));
    T_ASSERT(fi_cancel(&a.ep->fid, &cs) == -FI_ENOENT, "a send cannot be cancelled");
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &cs && (e.flags & FI_SEND), "the send completes");
    expect_empty(a.cq);
}

/* A raw TCP connection to a's endpoint, as the peer `uid` would open it:
 * its HELLO (of protocol `version`) sent. */
static int fake_peer(uint64_t uid, uint8_t version)
{
    struct ivf_addr me,
        peer = {.magic = IVF_ADDR_MAGIC, .version = IVF_ADDR_VERSION, .port = htons(1), .uid = uid};
    size_t len = sizeof(me);
    FI_OK(fi_getname(&a.ep->fid, &me, &len));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = me.port};
    memcpy(&sa.sin_addr, me.ip + 12, 4);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    T_ASSERT(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
             strerror(errno));
    uint8_t hello[IVF_HELLO_LEN];
    ivf_hello_fill(hello, IVF_HELLO, 0, &peer);
    hello[offsetof(struct ivf_hdr, version)] = version;
    T_ASSERT(write(fd, hello, sizeof(hello)) == (ssize_t)sizeof(hello), "hello");
    return fd;
}

/* Does the endpoint close fd (reading a's CQ meanwhile, which must stay
 * empty) within 10 s? */
static bool closed_by_ep(int fd)
{
    for (uint64_t t0 = t_now_ms(); t_now_ms() - t0 < 10000;) {
        struct fi_cq_tagged_entry e;
        T_ASSERT(fi_cq_read(a.cq, &e, 1) == -FI_EAGAIN, "a completion from a bad peer");
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return true;
        usleep(1000);
    }
    return false;
}

/* Write len bytes to fd as a peer would, without blocking: a's endpoint
 * reads them meanwhile (its CQ must stay empty).  Stops early when the
 * endpoint closes the connection. */
static void feed(int fd, const void *buf, size_t len)
{
    uint64_t t0 = t_now_ms();
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, (const char *)buf + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return;
        if (n > 0)
            off += (size_t)n;
        struct fi_cq_tagged_entry e;
        T_ASSERT(fi_cq_read(a.cq, &e, 1) == -FI_EAGAIN, "a completion from a bad peer");
        T_ASSERT(t_now_ms() - t0 < 10000, "the endpoint stopped reading");
    }
}

/* Peers that break the protocol are dropped; the endpoint goes on. */
static void test_bad_peers(void)
{
    /* A hello of another protocol version. */
    int fd = fake_peer(0xbad1, IVF_PROTO_VERSION + 1);
    T_ASSERT(closed_by_ep(fd), "a hello of version %d is refused", IVF_PROTO_VERSION + 1);
    close(fd);
    /* A good hello, then a frame of another version. */
    fd = fake_peer(0xbad2, IVF_PROTO_VERSION);
    struct ivf_hdr h = {.version = IVF_PROTO_VERSION + 1, .type = IVF_EAGER, .flags = IVF_F_TAGGED};
    T_ASSERT(write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h), "frame");
    T_ASSERT(closed_by_ep(fd), "a frame of version %d fails the peer", h.version);
    close(fd);
    /* A good hello, then an eager message beyond the limit (no payload
     * follows: nothing may be allocated or read for it). */
    fd = fake_peer(0xbad3, IVF_PROTO_VERSION);
    h = (struct ivf_hdr){.version = IVF_PROTO_VERSION, .type = IVF_EAGER, .len = UINT32_MAX};
    T_ASSERT(write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h), "frame");
    T_ASSERT(closed_by_ep(fd), "an EAGER of 4 GiB fails the peer");
    close(fd);
    /* A peer that ignores its credit (4 MiB of eager messages not taken by
     * receives): its fifth unexpected 1 MiB message fails it, before the
     * endpoint buffers more than that. */
    fd = fake_peer(0xbad4, IVF_PROTO_VERSION);
    size_t mib = 1u << 20;
    uint8_t *m = calloc(1, sizeof(h) + mib);
    h = (struct ivf_hdr){
        .version = IVF_PROTO_VERSION, .type = IVF_EAGER, .flags = IVF_F_TAGGED, .len = mib};
    memcpy(m, &h, sizeof(h));
    for (int i = 0; i < 5; i++)
        feed(fd, m, sizeof(h) + mib);
    free(m);
    T_ASSERT(closed_by_ep(fd), "eager messages beyond the credit fail the peer");
    close(fd);
    /* A hello that claims a's own uid (a never connects to itself), then
     * an eager message to a's own receive: refused, and nothing arrives. */
    struct ivf_addr me;
    size_t melen = sizeof(me);
    FI_OK(fi_getname(&a.ep->fid, &me, &melen));
    fd = fake_peer(me.uid, IVF_PROTO_VERSION);
    h = (struct ivf_hdr){.version = IVF_PROTO_VERSION, .type = IVF_EAGER, .flags = IVF_F_TAGGED};
    T_ASSERT(write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h), "frame");
    T_ASSERT(closed_by_ep(fd), "a hello claiming the endpoint's own uid is refused");
    close(fd);
    /* The endpoint still works. */
    struct fi_cq_tagged_entry e;
    char buf[16] = "still here", in[16] = "";
    int cr;
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.peer, 77, 0, &cr));
    FI_OK(fi_tsend(b.ep, buf, sizeof(buf), NULL, b.peer, 77, NULL));
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &cr && strcmp(in, "still here") == 0, "a message after bad peers");
}

/* Sends queued to a peer that then fails (it connects to us and breaks
 * the protocol while our connection to it is still being set up: its
 * accept queue is full): the send with a context gets its error entry, the
 * fi_inject call's none (it has no context: Open MPI's mtl ofi would
 * follow a NULL one). */
static void test_inject_to_failed_peer(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    T_ASSERT(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 0) == 0 &&
                 getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0,
             "listen: %s", strerror(errno));
    int fill[2];
    for (int i = 0; i < 2; i++) { /* the accept queue, full: later SYNs wait */
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
    }
    usleep(100 * 1000);
    struct ivf_addr peer = {
        .magic = IVF_ADDR_MAGIC, .version = IVF_ADDR_VERSION, .port = sa.sin_port, .uid = 0xdead};
    peer.ip[10] = peer.ip[11] = 0xff;
    memcpy(peer.ip + 12, &sa.sin_addr, 4);
    fi_addr_t fa;
    T_ASSERT(fi_av_insert(a.av, &peer, 1, &fa, 0, NULL) == 1, "insert");
    int ctx;
    FI_OK(fi_tinject(a.ep, "lost", 5, fa, 0x300));
    FI_OK(fi_tsend(a.ep, "lost too", 9, NULL, fa, 0x301, &ctx));
    /* The peer's own connection to us brings a frame of another version. */
    int fd = fake_peer(0xdead, IVF_PROTO_VERSION);
    struct ivf_hdr h = {.version = IVF_PROTO_VERSION + 1, .type = IVF_EAGER};
    T_ASSERT(write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h), "frame");
    struct fi_cq_tagged_entry e;
    T_ASSERT(wait_cq(a.cq, &e, NULL) == -FI_EAVAIL, "the send fails");
    struct fi_cq_err_entry err = read_err(a.cq);
    T_ASSERT(err.op_context == &ctx && err.err, "the send's error entry (context %p, error %d)",
             err.op_context, err.err);
    for (int i = 0; i < 200; i++) {
        ssize_t r = fi_cq_read(a.cq, &e, 1);
        T_ASSERT(r == -FI_EAGAIN, "another entry (%zd: context %p)", r,
                 r == -FI_EAVAIL ? read_err(a.cq).op_context : e.op_context);
    }
    close(fd);
    close(fill[0]);
    close(fill[1]);
    close(lfd);
}

/* Exchange until a reads b's stream from an IVC channel. */
static void until_on_ivc(void)
{
    struct ivf_ep *ea = (struct ivf_ep *)a.ep;
    struct fi_cq_tagged_entry e;
    char buf[16];
    bool on_ivc = false;
    for (int i = 0; i < 2000 && !on_ivc; i++) {
        FI_OK(fi_trecv(a.ep, buf, sizeof(buf), NULL, a.peer, 0x500, 0, &buf));
        FI_OK(fi_tinject(b.ep, "warm", 5, b.peer, 0x500));
        T_ASSERT(wait_cq(a.cq, &e, NULL) == 0 && e.op_context == buf, "warm-up message %d", i);
        on_ivc = ea->peers && ea->peers->rx.from == IVF_IVC;
        if (!on_ivc)
            usleep(2000);
    }
    T_ASSERT(on_ivc, "a reads b's stream from an IVC channel");
}

/* An IVC channel that breaks with bytes of the stream in it (its writer
 * gave up on it: its side word says ABORTED, as libivc writes after an
 * error) while the TCP connection lives on.  The bytes in the ring may be
 * lost, so the reader fails the peer (a send to it fails at once) rather
 * than go on by TCP past a gap; the messages in the ring are never
 * delivered.  A white-box test: it reaches into both endpoints (ivf.h) and
 * the channel (libivc's internal.h) to break the channel as a fault would. */
static void test_ivc_breaks(void)
{
    struct ivf_ep *ea = (struct ivf_ep *)a.ep, *eb = (struct ivf_ep *)b.ep;
    T_ASSERT(ea->ivc && eb->ivc, "both endpoints attached to the ivcd region");
    /* b's messages reach a by IVC once the channel is up and the stream
     * moved onto it (FLUSH). */
    until_on_ivc();
    struct fi_cq_tagged_entry e;
    char buf[16];
    struct ivf_peer *pb = eb->peers; /* b's only peer: a */
    T_ASSERT(pb && pb->tx.to == IVF_IVC && pb->tx.seg && pb->tx.seg->chan, "b writes to a by IVC");
    /* Three messages into the ring, unread, then the channel breaks. */
    for (int i = 0; i < 3; i++)
        FI_OK(fi_tinject(b.ep, "in the ring", 12, b.peer, 0x501));
    struct ivc_chan *ch = pb->tx.seg->chan;
    atomic_store(ch->my_side, IVC_SIDE(ch->seq, IVC_SIDE_ABORTED));
    int ctx[3];
    for (int i = 0; i < 3; i++)
        FI_OK(fi_trecv(a.ep, buf, sizeof(buf), NULL, a.peer, 0x501, 0, &ctx[i]));
    for (int i = 0; i < 200 && !ea->peers->failed; i++)
        T_ASSERT(fi_cq_read(a.cq, &e, 1) == -FI_EAGAIN, "a message from the broken channel");
    T_ASSERT(ea->peers->failed == -FI_ECONNRESET, "a failed its peer b: %d", ea->peers->failed);
    ssize_t r = fi_tinject(a.ep, "back", 5, a.peer, 0x502);
    T_ASSERT(r == -FI_ECONNRESET, "a send to the failed peer: %zd (%s)", r, fi_strerror((int)-r));
    expect_empty(a.cq);
    for (int i = 0; i < 3; i++)
        FI_OK(fi_cancel(&a.ep->fid, &ctx[i]));
}

/* Messages that reach an IVC ring before their receives: small ones are
 * kept straight from the ring (ivf_direct_take), larger ones by the
 * parser, mixed in one stream with messages whose receives are posted.
 * Each is received whole and where it belongs: in send order for one tag,
 * by tag across tags, with its length, tag and CQ data. */
static void test_ivc_unexpected(void)
{
    until_on_ivc();
    enum { N = 120 };
    static uint8_t out[N][400], in[N][400];
    static size_t len[N];
    int ctx[N];
    struct fi_cq_tagged_entry e;
    fi_addr_t src;
    /* Every third message (tag 0x7ff) has its receive posted first; the
     * others (tags 0x700-0x704) arrive before theirs. */
#define TAG_OF(i) ((i) % 3 ? 0x700 + (uint64_t)((i) % 5) : 0x7ff)
    for (int i = 0; i < N; i += 3)
        FI_OK(fi_trecv(a.ep, in[i], sizeof(in[i]), NULL, a.peer, TAG_OF(i), 0, &ctx[i]));
    for (int i = 0; i < N; i++) {
        len[i] = (size_t)(i * 37) % 390; /* 0 to 389: both sides of the 192 B record */
        t_fill(out[i], len[i], (unsigned)i, 0);
        FI_OK(fi_tinjectdata(b.ep, out[i], len[i], 0x1000 + (uint64_t)i, b.peer, TAG_OF(i)));
    }
    /* Let them all arrive: the posted ones complete, the others wait. */
    int got = 0;
    for (int i = 0; i < 100 || got < N / 3; i++) {
        T_ASSERT(i < 20000, "%d of %d posted receives done", got, N / 3);
        if (fi_cq_readfrom(a.cq, &e, 1, &src) != 1) {
            usleep(500);
            continue;
        }
        int k = (int *)e.op_context - ctx;
        T_ASSERT(k >= 0 && k < N && k % 3 == 0, "a completion for receive %d", k);
        T_ASSERT(e.len == len[k] && e.tag == TAG_OF(k) && e.data == 0x1000 + (uint64_t)k &&
                     memcmp(in[k], out[k], len[k]) == 0 && src == a.peer,
                 "posted message %d: len %zu (sent %zu)", k, e.len, len[k]);
        got++;
    }
    /* The rest of the receives, tag by tag, the last tag first: in one
     * tag, in send order, so receive i takes message i. */
    for (int t = 4; t >= 0; t--)
        for (int i = 0; i < N; i++)
            if (i % 3 && i % 5 == t)
                FI_OK(fi_trecv(a.ep, in[i], sizeof(in[i]), NULL, a.peer, TAG_OF(i), 0, &ctx[i]));
    for (int k = 0; k < N - N / 3; k++) {
        T_OK(wait_cq(a.cq, &e, &src));
        int i = (int *)e.op_context - ctx;
        T_ASSERT(i >= 0 && i < N && i % 3, "a completion for receive %d", i);
        T_ASSERT(e.len == len[i] && e.tag == TAG_OF(i) && e.data == 0x1000 + (uint64_t)i,
                 "message %d: len %zu (sent %zu), tag %llx, data %llx", i, e.len, len[i],
                 (unsigned long long)e.tag, (unsigned long long)e.data);
        T_ASSERT(memcmp(in[i], out[i], len[i]) == 0 && src == a.peer, "message %d intact", i);
    }
#undef TAG_OF
    expect_empty(a.cq);
    struct ivf_ep *ea = (struct ivf_ep *)a.ep;
    T_ASSERT(ea->peers->rx.from == IVF_IVC && !ea->peers->failed, "still on IVC");
}

/* FI_PROGRESS_AUTO: a rendezvous message arrives while the application
 * does not call into the provider at all. */
static void test_auto_progress(void)
{
    struct fi_info *hints = fi_allocinfo(), *fi;
    hints->caps = FI_TAGGED;
    hints->ep_attr->type = FI_EP_RDM;
    hints->domain_attr->data_progress = FI_PROGRESS_AUTO;
    hints->fabric_attr->prov_name = strdup("ivc");
    FI_OK(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &fi));
    T_ASSERT(fi->domain_attr->data_progress == FI_PROGRESS_AUTO, "AUTO granted");
    fi_freeinfo(hints);
    struct fid_domain *dom;
    struct fid_ep *ep[2];
    struct fid_av *av[2];
    struct fid_cq *cq[2];
    fi_addr_t to[2];
    FI_OK(fi_domain(fabric, fi, &dom, NULL));
    for (int i = 0; i < 2; i++) {
        struct fi_av_attr aa = {.type = FI_AV_MAP};
        struct fi_cq_attr ca = {.format = FI_CQ_FORMAT_TAGGED};
        FI_OK(fi_av_open(dom, &aa, &av[i], NULL));
        FI_OK(fi_cq_open(dom, &ca, &cq[i], NULL));
        FI_OK(fi_endpoint(dom, fi, &ep[i], NULL));
        FI_OK(fi_ep_bind(ep[i], &av[i]->fid, 0));
        FI_OK(fi_ep_bind(ep[i], &cq[i]->fid, FI_TRANSMIT | FI_RECV));
        FI_OK(fi_enable(ep[i]));
    }
    for (int i = 0; i < 2; i++) {
        char name[64];
        size_t len = sizeof(name);
        FI_OK(fi_getname(&ep[1 - i]->fid, name, &len));
        T_ASSERT(fi_av_insert(av[i], name, 1, &to[i], 0, NULL) == 1, "insert");
    }
    size_t len = 4u << 20;
    uint8_t *out = malloc(len), *in = calloc(1, len);
    t_fill(out, len, 21, 0);
    FI_OK(fi_trecv(ep[1], in, len, NULL, FI_ADDR_UNSPEC, 1, 0, NULL));
    FI_OK(fi_tsend(ep[0], out, len, NULL, to[0], 1, NULL));
    /* Hands off: only the provider's thread can move the data now. */
    int arrived = 0;
    for (int i = 0; i < 1000 && !arrived; i++) {
        usleep(10000);
        arrived = memcmp(in, out, len) == 0;
    }
    T_ASSERT(arrived, "4 MiB arrived without any call into the provider");
    struct fi_cq_tagged_entry e;
    T_OK(wait_cq(cq[1], &e, NULL));
    T_OK(wait_cq(cq[0], &e, NULL));
    for (int i = 0; i < 2; i++) {
        FI_OK(fi_close(&ep[i]->fid));
        FI_OK(fi_close(&cq[i]->fid));
        FI_OK(fi_close(&av[i]->fid));
    }
    FI_OK(fi_close(&dom->fid));
    fi_freeinfo(fi);
    free(out);
    free(in);
}

/* The FI_INJECT flag only says the buffer may be reused at once: a send
 * with it still completes (only the fi_inject calls do not). */
static void test_inject_flag(void)
{
    struct fi_cq_tagged_entry e;
    char out[32] = "flag inject", in[32] = "";
    int ctx_s, ctx_r;
    struct iovec so = {out, 12}, ri = {in, sizeof(in)};
    struct fi_msg_tagged st = {
        .msg_iov = &so, .iov_count = 1, .addr = a.peer, .tag = 7, .context = &ctx_s};
    struct fi_msg_tagged rt = {
        .msg_iov = &ri, .iov_count = 1, .addr = b.peer, .tag = 7, .context = &ctx_r};
    FI_OK(fi_tsendmsg(a.ep, &st, FI_INJECT));
    memset(out, 'x', sizeof(out)); /* ours again at once */
    T_OK(wait_cq(a.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_s && (e.flags & FI_SEND), "the send's completion");
    FI_OK(fi_trecvmsg(b.ep, &rt, FI_COMPLETION)); /* b's CQ is selective */
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_r && e.len == 12 && !strcmp(in, "flag inject"),
             "received '%s' (%zu bytes), not the buffer overwritten after the call", in, e.len);
    /* fi_tinject: no completion at all. */
    FI_OK(fi_tinject(a.ep, "x", 2, a.peer, 8));
    rt.tag = 8;
    FI_OK(fi_trecvmsg(b.ep, &rt, FI_COMPLETION));
    T_OK(wait_cq(b.cq, &e, NULL));
    T_ASSERT(e.op_context == &ctx_r, "the receive completes");
    expect_empty(a.cq);
}

static void *signal_later(void *cq)
{
    usleep(100 * 1000);
    fi_cq_signal(cq);
    return NULL;
}

/* fi_cq_signal wakes a thread in fi_cq_sread (which waits forever here:
 * without the wake the case runs into its timeout), or makes the next
 * sread return at once. */
static void test_cq_signal(void)
{
    struct fi_cq_tagged_entry e;
    FI_OK(fi_cq_signal(a.cq));
    T_ASSERT(fi_cq_sread(a.cq, &e, 1, NULL, -1) == -FI_EAGAIN, "signalled before the sread");
    pthread_t th;
    T_ASSERT(pthread_create(&th, NULL, signal_later, a.cq) == 0, "thread");
    ssize_t r = fi_cq_sread(a.cq, &e, 1, NULL, -1);
    pthread_join(th, NULL);
    T_ASSERT(r == -FI_EAGAIN, "sread woken: %zd", r);
    /* A completion still comes through sread. */
    char in[8];
    int ctx;
    FI_OK(fi_trecv(a.ep, in, sizeof(in), NULL, a.peer, 9, 0, &ctx));
    FI_OK(fi_tinject(b.ep, "s", 2, b.peer, 9));
    T_ASSERT(fi_cq_sread(a.cq, &e, 1, NULL, -1) == 1 && e.op_context == &ctx, "sread's entry");
}

/* A free TCP port of 127.0.0.1 (for a moment). */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    T_ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                 getsockname(fd, (struct sockaddr *)&sa, &sl) == 0,
             "a free port");
    close(fd);
    return ntohs(sa.sin_port);
}

/* An endpoint of info (on the case's domain) and its name. */
static struct ivf_addr name_of(struct fi_info *fi)
{
    struct fid_ep *ep;
    struct fid_av *av;
    struct fi_av_attr aa = {.type = FI_AV_TABLE};
    FI_OK(fi_av_open(domain, &aa, &av, NULL));
    FI_OK(fi_endpoint(domain, fi, &ep, NULL));
    FI_OK(fi_ep_bind(ep, &av->fid, 0));
    FI_OK(fi_ep_bind(ep, &a.cq->fid, FI_TRANSMIT | FI_RECV));
    FI_OK(fi_enable(ep));
    struct ivf_addr n;
    size_t len = sizeof(n);
    FI_OK(fi_getname(&ep->fid, &n, &len));
    FI_OK(fi_close(&ep->fid));
    FI_OK(fi_close(&av->fid));
    return n;
}

/* fi_getinfo with FI_SOURCE fills src_addr from node and service, and the
 * endpoint binds there (so does a src_addr given in the hints); tx caps
 * are the primary ones only. */
static void test_source_addr(void)
{
    struct fi_info *hints = fi_dupinfo(info), *fi;
    fi_freeinfo(hints->next);
    hints->next = NULL;
    free(hints->src_addr);
    hints->src_addr = NULL;
    hints->src_addrlen = 0;
    unsigned port = free_port();
    char service[16];
    snprintf(service, sizeof(service), "%u", port);
    FI_OK(fi_getinfo(FI_VERSION(1, 17), "127.0.0.1", service, FI_SOURCE, hints, &fi));
    const struct ivf_addr *src = fi->src_addr;
    T_ASSERT(src && fi->src_addrlen == sizeof(*src) && src->magic == IVF_ADDR_MAGIC &&
                 ntohs(src->port) == port && src->ip[12] == 127 && src->ip[15] == 1,
             "src_addr 127.0.0.1:%u (len %zu)", port, fi->src_addrlen);
    T_ASSERT(!(fi->tx_attr->caps & (FI_SOURCE | FI_LOCAL_COMM | FI_REMOTE_COMM)) &&
                 (fi->tx_attr->caps & FI_TAGGED),
             "tx caps 0x%llx", (unsigned long long)fi->tx_attr->caps);
    struct ivf_addr n = name_of(fi);
    T_ASSERT(ntohs(n.port) == port && n.ip[12] == 127 && n.ip[15] == 1 && n.uid,
             "the endpoint is at 127.0.0.1:%u: port %u", port, ntohs(n.port));
    fi_freeinfo(fi);

    /* A src_addr in the hints: the endpoint binds there too. */
    port = free_port();
    n.port = htons((uint16_t)port);
    n.uid = 0;
    hints->src_addr = malloc(sizeof(n));
    memcpy(hints->src_addr, &n, sizeof(n));
    hints->src_addrlen = sizeof(n);
    FI_OK(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &fi));
    T_ASSERT(ntohs(name_of(fi).port) == port, "the hints' src_addr is used");
    fi_freeinfo(fi);

    /* No source given: every address, a port of the kernel's choosing. */
    FI_OK(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, FI_SOURCE, hints, &fi));
    fi_freeinfo(fi);
    free(hints->src_addr);
    hints->src_addr = NULL;
    hints->src_addrlen = 0;
    FI_OK(fi_getinfo(FI_VERSION(1, 17), NULL, NULL, FI_SOURCE, hints, &fi));
    src = fi->src_addr;
    T_ASSERT(src && src->port == 0 && src->ip[12] == 0, "0.0.0.0:0");
    fi_freeinfo(fi);
    T_ASSERT(fi_getinfo(FI_VERSION(1, 17), NULL, "http", FI_SOURCE, hints, &fi) < 0,
             "a service name is refused");
    fi_freeinfo(hints);
}

/* ESTABLISHED TCP connection ends in /proc/net/tcp with local or remote
 * port `port` (network order). */
static int established(uint16_t port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    T_ASSERT(f, "/proc/net/tcp: %s", strerror(errno));
    char line[256];
    unsigned lport, rport, st;
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, " %*u: %*x:%x %*x:%x %x", &lport, &rport, &st) == 3 && st == 1 &&
            (lport == ntohs(port) || rport == ntohs(port)))
            n++;
    fclose(f);
    return n;
}

/* a and b both send before either has read anything, so each opens a
 * connection to the other: one of them moves its stream (MOVE / MOVED)
 * onto the other's, eager and rendezvous messages arrive whole and in
 * order both ways, before the move and after it, and one connection is
 * left between them (it carries both directions). */
static void test_crossing_connections(void)
{
    struct ivf_addr na, nb;
    size_t len = sizeof(na);
    FI_OK(fi_getname(&a.ep->fid, &na, &len));
    len = sizeof(nb);
    FI_OK(fi_getname(&b.ep->fid, &nb, &len));
    enum { N = 4, BIG = 256 << 10 };
    static char out[2][N][BIG], in[2][N][BIG];
    struct side *sides[2] = {&a, &b};
    int sctx[2][N], rctx[2][N];
    for (int round = 0; round < 2; round++) {
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < N; i++) {
                size_t n = i == 1 ? BIG : 16; /* one rendezvous among eager ones */
                snprintf(out[s][i], 16, "r%d %c%d", round, "ab"[s], i);
                out[s][i][n - 1] = (char)('x' + s);
                struct iovec v = {out[s][i], n};
                struct fi_msg_tagged m = {.msg_iov = &v,
                                          .iov_count = 1,
                                          .addr = sides[s]->peer,
                                          .tag = 9,
                                          .context = &sctx[s][i]};
                FI_OK(fi_tsendmsg(sides[s]->ep, &m, FI_COMPLETION)); /* b's CQ is selective */
            }
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < N; i++) {
                struct iovec v = {in[s][i], BIG};
                struct fi_msg_tagged m = {.msg_iov = &v,
                                          .iov_count = 1,
                                          .addr = sides[1 - s]->peer,
                                          .tag = 9,
                                          .context = &rctx[s][i]};
                FI_OK(fi_trecvmsg(sides[1 - s]->ep, &m, FI_COMPLETION));
            }
        /* Each side: N sends and N receives complete, the i-th receive
         * with the i-th message (one tag: matched in send order). */
        for (int s = 0; s < 2; s++) {
            int sends = 0, recvs = 0;
            while (sends + recvs < 2 * N) {
                struct fi_cq_tagged_entry e;
                T_OK(wait_cq(sides[s]->cq, &e, NULL));
                if (e.flags & FI_SEND) {
                    sends++;
                    continue;
                }
                int i = (int)((int *)e.op_context - rctx[1 - s]);
                T_ASSERT(i >= 0 && i < N, "round %d: %c's receive", round, "ab"[s]);
                size_t n = i == 1 ? BIG : 16;
                T_ASSERT(e.len == n && !memcmp(in[1 - s][i], out[1 - s][i], n),
                         "round %d: %c's receive %d got %zu bytes '%s'", round, "ab"[s], i,
                         (size_t)e.len, in[1 - s][i]);
                recvs++;
            }
        }
    }
    int ea = established(na.port), eb = established(nb.port);
    printf("# connection ends: %d at a's port, %d at b's\n", ea, eb);
    T_ASSERT(ea + eb == 2, "one connection between a and b (%d + %d ends)", ea, eb);
}

static void teardown(void)
{
    FI_OK(fi_close(&a.ep->fid));
    FI_OK(fi_close(&b.ep->fid));
    FI_OK(fi_close(&a.cq->fid));
    FI_OK(fi_close(&b.cq->fid));
    FI_OK(fi_close(&a.av->fid));
    FI_OK(fi_close(&b.av->fid));
    FI_OK(fi_close(&domain->fid));
    FI_OK(fi_close(&fabric->fid));
    fi_freeinfo(info);
}

static void nothing(void)
{
}

/* Every case opens the fabric, the domain and the two sides (checking
 * names and addresses on the way), runs, and closes them all. */
#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        T_ASSERT(getenv("FI_PROVIDER_PATH"), "FI_PROVIDER_PATH is not set");                       \
        unsetenv("FI_IVC_JOB");                                                                    \
        unsetenv("VHPC_JOB");                                                                      \
        test_setup_and_names();                                                                    \
        name();                                                                                    \
        teardown();                                                                                \
    }
/* The same, with both endpoints in an ivcd region of their own. */
#define IVC_CASE(name)                                                                             \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        T_ASSERT(getenv("FI_PROVIDER_PATH"), "FI_PROVIDER_PATH is not set");                       \
        struct t_ivcd d;                                                                           \
        t_ivcd_start(&d, 0x1f1f, NULL);                                                            \
        setenv("FI_IVC_JOB", "7967", 1); /* 0x1f1f */                                              \
        setenv("IVC_SOCKET", d.sock, 1);                                                           \
        test_setup_and_names();                                                                    \
        name();                                                                                    \
        teardown();                                                                                \
        t_ivcd_stop(&d);                                                                           \
    }
CASE(nothing)
IVC_CASE(test_ivc_breaks)
IVC_CASE(test_ivc_unexpected)
CASE(test_tagged_and_msg)
CASE(test_truncate_peek_cancel)
CASE(test_large_and_bad)
CASE(test_bad_peers)
CASE(test_auto_progress)
CASE(test_inject_flag)
CASE(test_cq_signal)
CASE(test_source_addr)
CASE(test_duplicate_address)
CASE(test_unreadable_send)
CASE(test_fault_mid_frame)
CASE(test_inject_to_failed_peer)
CASE(test_cancel_completions)
CASE(test_crossing_connections)
CASE(test_self)

static const struct t_case cases[] = {
    {"setup_and_names", case_nothing, 30},
    {"tagged_and_msg", case_test_tagged_and_msg, 30},
    {"truncate_peek_cancel", case_test_truncate_peek_cancel, 30},
    {"large_and_bad", case_test_large_and_bad, 60},
    {"bad_peers", case_test_bad_peers, 30},
    {"auto_progress", case_test_auto_progress, 60},
    {"inject_flag", case_test_inject_flag, 30},
    {"cq_signal", case_test_cq_signal, 30},
    {"source_addr", case_test_source_addr, 30},
    {"duplicate_address", case_test_duplicate_address, 30},
    {"unreadable_send", case_test_unreadable_send, 60},
    {"fault_mid_frame", case_test_fault_mid_frame, 60},
    {"inject_to_failed_peer", case_test_inject_to_failed_peer, 30},
    {"cancel_completions", case_test_cancel_completions, 30},
    {"crossing_connections", case_test_crossing_connections, 30},
    {"ivc_breaks", case_test_ivc_breaks, 60},
    {"self", case_test_self, 60},
    {"ivc_unexpected", case_test_ivc_unexpected, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
