/*
 * test_ivcd_reclaim.c - what ivcd does with the endpoint table and the
 * connection records, tested by playing libivc by hand on a raw client's
 * mapping: a dead client's endpoints are freed with a new generation; the
 * suspend handshake (SUSPENDING, ack, partners draining both ways, time-outs
 * naming the culprit, resume); DEPARTED slots freed once partners drained or
 * after 10 s; and random bytes in the tables, also written while ivcd works,
 * never crash it.
 */
#include "test_ivcd_util.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define CPE  4 /* --conns-per-endpoint */
#define NEPS 8 /* --max-endpoints */

static char out[16384];
static struct t_ivcd d;

static uint64_t status_of(const struct raw_client *obs, uint32_t slot)
{
    return atomic_load(&rc_ep(obs, slot)->status);
}

/* Wait until endpoint `slot` is in `state`; returns its status word. */
static uint64_t wait_ep_state(const struct raw_client *obs, uint32_t slot, uint8_t state, int ms)
{
    uint64_t deadline = t_now_ms() + (uint64_t)ms, st;

    while (IVC_EP_STATE(st = status_of(obs, slot)) != state) {
        T_ASSERT(t_now_ms() < deadline, "endpoint %u still 0x%llx, wanted state %u after %d ms",
                 slot, (unsigned long long)st, state, ms);
        usleep(1000);
    }
    return st;
}

/* Set up connection record `idx` (owned by endpoint idx / CPE) as an open
 * channel to endpoint `target`, use number `seq`. */
static void open_channel(const struct raw_client *c, uint32_t idx, uint32_t target, uint32_t seq)
{
    struct ivc_conn *r = rc_conn(c, idx);
    uint32_t init = idx / CPE;

    r->target_ep = target;
    r->target_gen = IVC_EP_GEN(status_of(c, target));
    r->init_gen = IVC_EP_GEN(status_of(c, init));
    r->target_client = rc_ep(c, target)->client_id;
    atomic_store(&r->t_state, IVC_SIDE(seq, IVC_SIDE_ACCEPTED));
    atomic_store(&r->i_state, IVC_SIDE(seq, IVC_SIDE_OPEN));
}

static void set_side(_Atomic uint64_t *side, uint8_t state)
{
    atomic_store(side, IVC_SIDE(IVC_SIDE_SEQ(atomic_load(side)), state));
}

static void reset_records(const struct raw_client *c)
{
    for (uint32_t i = 0; i < NEPS * CPE; i++) {
        atomic_store(&rc_conn(c, i)->i_state, 0);
        atomic_store(&rc_conn(c, i)->t_state, 0);
    }
}

static pid_t suspend_start(int *fd, const char *peer, const char *timeout)
{
    return ctl_start(&d, fd, (const char *const[]){"suspend", peer, "--timeout", timeout, NULL});
}

static void resume(const char *peer)
{
    int st = ctl_run(&d, out, sizeof(out), (const char *const[]){"resume", peer, NULL});
    char want[64];
    snprintf(want, sizeof(want), "ok resumed peer %s\n", peer);
    T_ASSERT(st == 0 && strcmp(out, want) == 0, "resume %s: %d %s", peer, st, out);
}

static void expect_status_ok(void)
{
    int st = ctl_run(&d, out, sizeof(out), (const char *const[]){"status", NULL});
    T_ASSERT(st == 0 && strstr(out, "\nok\n"), "status: %d %s", st, out);
    st = ctl_run(&d, out, sizeof(out), (const char *const[]){"list", NULL});
    T_ASSERT(st == 0, "list: %d %s", st, out);
    T_ASSERT(alive(d.pid), "ivcd died");
}

/* A dead client's endpoints are freed with the generation bumped. */
static void test_reclaim(struct raw_client *obs)
{
    struct raw_client c;
    char want[128];

    raw_attach(&c, d.sock, 1);
    T_ASSERT(c.id == 0, "id %lld", (long long)c.id);
    uint64_t live = rc_claim(&c, 2, 100);
    uint64_t live5 = rc_claim(&c, 5, 101);
    snprintf(want, sizeof(want), "endpoint slot=2 peer=0 client_id=100 pid=%d state=live gen=%u",
             (int)getpid(), IVC_EP_GEN(live));
    T_ASSERT(wait_list(&d, want, true, 1000), "list lacks '%s': %s", want, out);
    raw_close(&c);
    T_ASSERT(wait_word(&rc_ep(obs, 2)->status, IVC_EP_STATUS(IVC_EP_GEN(live) + 1, 0, IVC_EP_FREE),
                       3000),
             "slot 2 is 0x%llx after its client left", (unsigned long long)status_of(obs, 2));
    /* ivcd frees the slots one by one: slot 5 may follow slot 2 a moment later. */
    T_ASSERT(wait_word(&rc_ep(obs, 5)->status, IVC_EP_STATUS(IVC_EP_GEN(live5) + 1, 0, IVC_EP_FREE),
                       3000),
             "slot 5 is 0x%llx after its client left", (unsigned long long)status_of(obs, 5));
    T_ASSERT(IVC_EP_STATE(status_of(obs, 1)) == IVC_EP_LIVE, "the observer's slot was touched");
}

/* Suspend: SUSPENDING, the library acks, partners drain both ways, ok. */
static void test_suspend_ok(struct raw_client *obs)
{
    struct raw_client c;
    int fd;

    raw_attach(&c, d.sock, 1);
    T_ASSERT(c.id == 0, "id %lld", (long long)c.id);
    rc_claim(&c, 0, 10);
    reset_records(&c);
    open_channel(&c, 0 * CPE + 1, 1, 7);  /* slot 0 -> the observer's slot 1 */
    open_channel(&c, 1 * CPE + 2, 0, 9);  /* slot 1 -> slot 0 */
    open_channel(&c, 1 * CPE + 3, 0, 11); /* slot 1 -> slot 0, closed by both already */
    set_side(&rc_conn(&c, 1 * CPE + 3)->i_state, IVC_SIDE_CLOSED);
    set_side(&rc_conn(&c, 1 * CPE + 3)->t_state, IVC_SIDE_CLOSED);

    pid_t pid = suspend_start(&fd, "0", "5000");
    uint64_t susp = wait_ep_state(&c, 0, IVC_EP_SUSPENDING, 3000);
    T_ASSERT(IVC_EP_CLIENT(susp) == 0, "client field changed: 0x%llx", (unsigned long long)susp);
    T_ASSERT(IVC_EP_STATE(atomic_load(&rc_client(&c, 0)->status)) == IVC_CLIENT_SUSPENDING,
             "client 0 not SUSPENDING in the client table");
    T_ASSERT(IVC_EP_STATE(status_of(&c, 1)) == IVC_EP_LIVE, "the partner was suspended too");

    /* Our side quiesces and hands back, then acks; the partner has not. */
    set_side(&rc_conn(&c, 0 * CPE + 1)->i_state, IVC_SIDE_DRAINED);
    set_side(&rc_conn(&c, 1 * CPE + 2)->t_state, IVC_SIDE_DRAINED);
    atomic_store(&rc_ep(&c, 0)->ack, susp);
    usleep(300000);
    T_ASSERT(alive(pid), "suspend answered before the partner drained");
    set_side(&rc_conn(&c, 0 * CPE + 1)->t_state, IVC_SIDE_DRAINED); /* (a) drained */
    usleep(200000);
    T_ASSERT(alive(pid), "suspend answered before the partner drained its own record");
    set_side(&rc_conn(&c, 1 * CPE + 2)->i_state, IVC_SIDE_DRAINED); /* (b) drained */
    int st = ctl_join(pid, fd, out, sizeof(out));
    T_ASSERT(st == 0 && strcmp(out, "ok suspended peer 0: 1 endpoints, 3 channels drained\n") == 0,
             "suspend: %d %s", st, out);
    char want[64];
    snprintf(want, sizeof(want), "client id=0 pid=%d state=suspending\n", (int)getpid());
    st = ctl_run(&d, out, sizeof(out), (const char *const[]){"list", NULL});
    T_ASSERT(st == 0 && strstr(out, want), "list: %s", out);

    /* Resume: the acked endpoint detached, so its slot is freed. */
    resume("0");
    T_ASSERT(status_of(obs, 0) == IVC_EP_STATUS(IVC_EP_GEN(susp) + 1, 0, IVC_EP_FREE),
             "slot 0 is 0x%llx after resume", (unsigned long long)status_of(obs, 0));
    T_ASSERT(IVC_EP_STATE(atomic_load(&rc_client(&c, 0)->status)) == IVC_CLIENT_LIVE,
             "client 0 not LIVE after resume");
    raw_close(&c);
    T_ASSERT(wait_list(&d, "client id=0", false, 3000), "client 0 still listed");
}

/* Time-outs name who is late; resume undoes; a departed suspended endpoint
 * waits for its partners, or 10 s. */
static void test_suspend_timeouts(struct raw_client *obs)
{
    struct raw_client c;
    char want[256];
    int fd, st;

    raw_attach(&c, d.sock, 1);
    T_ASSERT(c.id == 0, "id %lld", (long long)c.id);
    reset_records(&c);
    uint64_t live = rc_claim(&c, 3, 30);

    /* Nobody acks. */
    pid_t pid = suspend_start(&fd, "0", "300");
    uint64_t t0 = t_now_ms();
    st = ctl_join(pid, fd, out, sizeof(out));
    snprintf(want, sizeof(want),
             "error: suspend of peer 0 timed out after 300 ms: endpoint 3 (client id 30, pid %d) "
             "did not quiesce\n",
             (int)getpid());
    T_ASSERT(st == 1 && strcmp(out, want) == 0, "suspend: %d '%s'", st, out);
    T_ASSERT(t_now_ms() - t0 >= 300 && t_now_ms() - t0 < 3000, "took %llu ms",
             (unsigned long long)(t_now_ms() - t0));
    uint64_t susp = IVC_EP_STATUS(IVC_EP_GEN(live), 0, IVC_EP_SUSPENDING);
    T_ASSERT(status_of(obs, 3) == susp, "slot 3 0x%llx after the time-out",
             (unsigned long long)status_of(obs, 3));
    resume("0");
    T_ASSERT(status_of(obs, 3) == live, "slot 3 0x%llx after resume, wanted LIVE again",
             (unsigned long long)status_of(obs, 3));

    /* It acks, but the partner never drains. */
    open_channel(&c, 3 * CPE + 0, 1, 2);
    set_side(&rc_conn(&c, 3 * CPE + 0)->i_state, IVC_SIDE_QUIESCED);
    pid = suspend_start(&fd, "0", "300");
    susp = wait_ep_state(&c, 3, IVC_EP_SUSPENDING, 2000);
    atomic_store(&rc_ep(&c, 3)->ack, susp);
    st = ctl_join(pid, fd, out, sizeof(out));
    T_ASSERT(st == 1 && strcmp(out, "error: suspend of peer 0 timed out after 300 ms: partner "
                                    "endpoint 1 (client id 11) did not drain its channel with "
                                    "endpoint 3\n") == 0,
             "suspend: %d '%s'", st, out);

    /* The client leaves meanwhile: slot 3 departs, freed once drained. */
    raw_close(&c);
    T_ASSERT(wait_word(&rc_ep(obs, 3)->status,
                       IVC_EP_STATUS(IVC_EP_GEN(susp) + 1, 0, IVC_EP_DEPARTED), 3000),
             "slot 3 is 0x%llx, wanted DEPARTED", (unsigned long long)status_of(obs, 3));
    usleep(300000);
    T_ASSERT(IVC_EP_STATE(status_of(obs, 3)) == IVC_EP_DEPARTED,
             "freed before the partner drained");
    set_side(&rc_conn(obs, 3 * CPE + 0)->t_state, IVC_SIDE_DRAINED);
    T_ASSERT(wait_word(&rc_ep(obs, 3)->status, IVC_EP_STATUS(IVC_EP_GEN(susp) + 2, 0, IVC_EP_FREE),
                       1000),
             "slot 3 is 0x%llx, wanted FREE after the partner drained",
             (unsigned long long)status_of(obs, 3));

    /* Same again, but the partner never drains: freed after 10 s. */
    raw_attach(&c, d.sock, 1);
    T_ASSERT(c.id == 0, "id %lld", (long long)c.id);
    rc_claim(&c, 4, 40);
    open_channel(&c, 1 * CPE + 0, 4, 3); /* the observer's slot 1 -> slot 4 */
    pid = suspend_start(&fd, "0", "200");
    susp = wait_ep_state(&c, 4, IVC_EP_SUSPENDING, 2000);
    atomic_store(&rc_ep(&c, 4)->ack, susp);
    st = ctl_join(pid, fd, out, sizeof(out));
    T_ASSERT(st == 1 && strstr(out, "partner endpoint 1 (client id 11) did not drain its channel "
                                    "with endpoint 4"),
             "suspend: %d '%s'", st, out);
    raw_close(&c);
    t0 = t_now_ms();
    T_ASSERT(wait_word(&rc_ep(obs, 4)->status,
                       IVC_EP_STATUS(IVC_EP_GEN(susp) + 1, 0, IVC_EP_DEPARTED), 3000),
             "slot 4 is 0x%llx, wanted DEPARTED", (unsigned long long)status_of(obs, 4));
    T_ASSERT(wait_word(&rc_ep(obs, 4)->status, IVC_EP_STATUS(IVC_EP_GEN(susp) + 2, 0, IVC_EP_FREE),
                       13000),
             "slot 4 is 0x%llx, wanted FREE after 10 s", (unsigned long long)status_of(obs, 4));
    T_ASSERT(t_now_ms() - t0 >= 9000, "DEPARTED slot freed after %llu ms only",
             (unsigned long long)(t_now_ms() - t0));
    set_side(&rc_conn(obs, 1 * CPE + 0)->i_state, IVC_SIDE_CLOSED);
}

/* Random words in every table, with a bias towards values ivcd acts on. */
static void scribble(const struct raw_client *c, uint64_t seed)
{
    const struct ivc_hdr *h = rc_hdr(c);
    uint8_t *lo = c->base + h->clients_off, *hi = c->base + h->pool_off;

    t_fill(lo, (size_t)(hi - lo), seed, 0);
    for (uint32_t e = 0; e < NEPS; e++) {
        uint64_t r = *(uint64_t *)(c->base + h->eps_off + e * 8);
        if (r & 1) /* one of ours, in some state, maybe out of range */
            atomic_store(&rc_ep(c, e)->status, IVC_EP_STATUS(r >> 32, (r >> 1) & 1, (r >> 2) % 6));
        if (r & 2)
            atomic_store(&rc_ep(c, e)->ack, atomic_load(&rc_ep(c, e)->status));
    }
    for (uint32_t i = 0; i < NEPS * CPE; i++) {
        struct ivc_conn *r = rc_conn(c, i);
        uint64_t x = atomic_load(&r->i_state);
        if (x & 1) { /* plausible records: small indices, matching seqs */
            r->target_ep = (uint32_t)(x >> 8) % (NEPS + 2);
            r->target_gen = IVC_EP_GEN(status_of(c, r->target_ep % NEPS));
            r->init_gen = IVC_EP_GEN(status_of(c, i / CPE));
            atomic_store(&r->i_state, IVC_SIDE(1, (x >> 16) % 9));
            atomic_store(&r->t_state, IVC_SIDE(1, (x >> 24) % 9));
        }
    }
}

static int scribbler(void *arg)
{
    const struct raw_client *c = arg;
    uint64_t end = t_now_ms() + 1500;

    for (uint64_t seed = 1; t_now_ms() < end; seed++) {
        scribble(c, seed * 7919);
        usleep(500);
    }
    return 0;
}

static void test_garbage(struct raw_client *obs)
{
    struct raw_client c;
    int fd, st;

    for (unsigned round = 0; round < 12; round++) {
        raw_attach(&c, d.sock, 1);
        scribble(&c, 5000 + round);
        expect_status_ok();
        pid_t pid = suspend_start(&fd, "0", "100");
        if (round % 3 == 0)
            for (uint32_t e = 0; e < NEPS; e++) /* ack whatever ivcd set */
                atomic_store(&rc_ep(&c, e)->ack, status_of(&c, e));
        st = ctl_join(pid, fd, out, sizeof(out));
        T_ASSERT(st == 0 || st == 1, "suspend on garbage: %d %s", st, out);
        if (round % 2)
            resume("0");
        raw_close(&c);
        expect_status_ok();
    }

    /* Now with the tables changing under ivcd's feet. */
    raw_attach(&c, d.sock, 1);
    pid_t scr = t_fork(scribbler, &c);
    for (int i = 0; i < 6; i++) {
        struct raw_client x;
        raw_attach(&x, d.sock, 1);
        pid_t pid = suspend_start(&fd, "0", "50");
        ctl_join(pid, fd, out, sizeof(out));
        raw_close(&x);
        expect_status_ok();
    }
    T_ASSERT(t_wait(scr) == 0, "scribbler failed");
    raw_close(&c);

    /* Clean tables again: a proper client still gets a proper greeting. */
    memset(obs->base + rc_hdr(obs)->clients_off, 0,
           rc_hdr(obs)->pool_off - rc_hdr(obs)->clients_off);
    raw_attach(&c, d.sock, 1);
    T_ASSERT(c.id == 0 && rc_hdr(&c)->job_magic == 5, "after garbage: id %lld", (long long)c.id);
    rc_claim(&c, 6, 60);
    raw_close(&c);
    T_ASSERT(wait_word(&rc_ep(obs, 6)->status, IVC_EP_STATUS(1, 0, IVC_EP_FREE), 3000),
             "slot 6 is 0x%llx", (unsigned long long)status_of(obs, 6));
    expect_status_ok();
}

/* Start ivcd (job 5, 8 endpoints of 4 connections) and attach the
 * observer: peer 1, owning endpoint 1 (client id 11), keeping the region
 * mapped throughout; peer 0 is for the case to come and go. */
static void setup(struct raw_client *obs)
{
    struct raw_client hold;

    t_ivcd_start(&d, 5,
                 (const char *const[]){"--size", "4M", "--max-endpoints", "8",
                                       "--conns-per-endpoint", "4", NULL});
    T_ASSERT(wait_list(&d, "client id=", false, 5000), "the probe connection never went away");
    raw_attach(&hold, d.sock, 1);
    raw_attach(obs, d.sock, 1);
    T_ASSERT(hold.id == 0 && obs->id == 1, "ids %lld %lld", (long long)hold.id, (long long)obs->id);
    raw_close(&hold);
    T_ASSERT(wait_list(&d, "client id=0", false, 3000), "client 0 still listed");
    rc_claim(obs, 1, 11);
}

static void teardown(struct raw_client *obs)
{
    raw_close(obs);
    t_ivcd_stop(&d);
}

#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        struct raw_client obs;                                                                     \
        setup(&obs);                                                                               \
        test_##name(&obs);                                                                         \
        teardown(&obs);                                                                            \
    }
CASE(reclaim)
CASE(suspend_ok)
CASE(suspend_timeouts)
CASE(garbage)

static const struct t_case cases[] = {
    {"reclaim", case_reclaim, 30},
    {"suspend_ok", case_suspend_ok, 30},
    {"suspend_timeouts", case_suspend_timeouts, 60},
    {"garbage", case_garbage, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
