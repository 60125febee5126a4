/*
 * test_ivcd_protocol.c - ivcd speaks QEMU's ivshmem-server protocol exactly:
 * the greeting of each peer (version, id, the region's fd, everybody's
 * eventfds per vector), announcements of new peers, "id without fd" when a
 * peer leaves, lowest free id reuse, --max-peers; and the region it hands out
 * is sealed, sized and has the header ivc_layout.h specifies.
 */
#include "ivshmem_proto.h"
#include "test_ivcd_util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC     0x1234abcd5678ULL
#define SIZE      (4u << 20)
#define VECTORS   2
#define MAX_PEERS 3

/* Read the fixed start of a greeting: version, `id`, region fd. */
static int expect_hello(int sock, int64_t id)
{
    int shm;

    raw_expect(sock, IVSHMEM_PROTOCOL_VERSION, false, NULL);
    raw_expect(sock, id, false, NULL);
    raw_expect(sock, -1, true, &shm);
    return shm;
}

/* Read `VECTORS` messages "id + eventfd" into efd[]. */
static void expect_efds(int sock, int64_t id, int *efd)
{
    for (int v = 0; v < VECTORS; v++)
        raw_expect(sock, id, true, &efd[v]);
}

/* A signal written to one copy of an eventfd arrives on the other. */
static void check_same_eventfd(int writer, int reader, uint64_t n)
{
    uint64_t got = 0;

    T_ASSERT(eventfd_write(writer, n) == 0, "eventfd_write: %s", strerror(errno));
    T_ASSERT(eventfd_read(reader, &got) == 0 && got == n, "eventfd read %llu, wanted %llu (%s)",
             (unsigned long long)got, (unsigned long long)n, strerror(errno));
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static const char *const extra[] = {"--size", "4M", "--vectors", "2", "--max-peers", "3", NULL};

/* Start ivcd with the options above; wait until the probe connection of
 * t_ivcd_start (which held id 0 for a moment) has gone. */
static void start(struct t_ivcd *d)
{
    t_ivcd_start(d, MAGIC, extra);
    T_ASSERT(wait_list(d, "client id=", false, 5000), "the probe connection never went away");
}

/* A raw peer: its socket, the region fd and its own eventfds. */
struct peer {
    int sock, shm;
    int efd[VECTORS];
};

/* Peer 0 joins an empty job: only its own eventfds, then silence. */
static void join_first(struct t_ivcd *d, struct peer *p0)
{
    p0->sock = raw_connect(d->sock);
    p0->shm = expect_hello(p0->sock, 0);
    expect_efds(p0->sock, 0, p0->efd);
    T_ASSERT(raw_quiet(p0->sock, 100), "extra message after the greeting of peer 0");
}

/* Peer 1 joins peer 0: it learns about peer 0 (e0_at1), peer 0 learns
 * about it (e1_at0). */
static void join_second(struct t_ivcd *d, struct peer *p0, struct peer *p1, int *e0_at1,
                        int *e1_at0)
{
    p1->sock = raw_connect(d->sock);
    p1->shm = expect_hello(p1->sock, 1);
    expect_efds(p1->sock, 0, e0_at1);
    expect_efds(p1->sock, 1, p1->efd);
    expect_efds(p0->sock, 1, e1_at0);
    T_ASSERT(raw_quiet(p0->sock, 100) && raw_quiet(p1->sock, 50),
             "extra messages after peer 1 joined");
}

/* ivcd with peers 0 and 1 in it, each knowing the other's eventfds. */
struct two {
    struct t_ivcd d;
    struct peer p0, p1;
    int e0_at1[VECTORS], e1_at0[VECTORS];
};

static void two_peers(struct two *t)
{
    start(&t->d);
    join_first(&t->d, &t->p0);
    join_second(&t->d, &t->p0, &t->p1, t->e0_at1, t->e1_at0);
}

static struct ivc_client *client_table(uint8_t *base)
{
    struct ivc_geometry g;
    T_ASSERT(ivc_geometry_compute(&g, SIZE, MAX_PEERS, 64, 64) == 0, "geometry");
    return (struct ivc_client *)(base + g.clients_off);
}

static uint8_t *map_region(int shm)
{
    uint8_t *base = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
    T_ASSERT(base != MAP_FAILED, "mmap: %s", strerror(errno));
    return base;
}

/* The first peer's greeting and the region: sealed, sized, its header. */
static void test_first_peer_and_region(void)
{
    struct t_ivcd d;
    struct peer p0;
    struct stat st;

    start(&d);
    join_first(&d, &p0);
    int shm = p0.shm;
    T_ASSERT(fstat(shm, &st) == 0 && st.st_size == SIZE, "region size %lld, wanted %u",
             (long long)st.st_size, SIZE);
    int seals = fcntl(shm, F_GET_SEALS);
    T_ASSERT(seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
                               (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
             "seals 0x%x", seals);
    T_ASSERT(ftruncate(shm, SIZE / 2) < 0 && errno == EPERM, "a peer could shrink the region");
    T_ASSERT(ftruncate(shm, SIZE * 2) < 0 && errno == EPERM, "a peer could grow the region");

    /* ---- the header */
    uint8_t *base = map_region(shm);
    struct ivc_hdr *h = (struct ivc_hdr *)base;
    struct ivc_geometry g;
    T_ASSERT(ivc_geometry_compute(&g, SIZE, MAX_PEERS, 64, 64) == 0, "geometry");
    T_ASSERT(h->signature == IVC_REGION_SIGNATURE, "signature 0x%llx",
             (unsigned long long)h->signature);
    T_ASSERT(h->version == IVC_LAYOUT_VERSION && h->hdr_size == sizeof(struct ivc_hdr),
             "version %u hdr_size %u", h->version, h->hdr_size);
    T_ASSERT(h->region_size == SIZE && h->job_magic == MAGIC, "size %llu magic 0x%llx",
             (unsigned long long)h->region_size, (unsigned long long)h->job_magic);
    T_ASSERT(h->max_clients == MAX_PEERS && h->max_eps == 64 && h->conns_per_ep == 64,
             "max_clients %u max_eps %u conns_per_ep %u", h->max_clients, h->max_eps,
             h->conns_per_ep);
    T_ASSERT(h->clients_off == g.clients_off && h->eps_off == g.eps_off &&
                 h->conns_off == g.conns_off && h->pool_off == g.pool_off &&
                 h->share_size == g.share_size,
             "offsets differ from ivc_geometry_compute");
    T_ASSERT(atomic_load(&h->ivcd_pid) == (uint64_t)d.pid, "ivcd_pid %llu, ivcd is %d",
             (unsigned long long)atomic_load(&h->ivcd_pid), (int)d.pid);
    uint64_t hb = atomic_load(&h->ivcd_heartbeat);
    usleep(350000);
    T_ASSERT(atomic_load(&h->ivcd_heartbeat) >= hb + 2, "heartbeat %llu -> %llu in 350 ms",
             (unsigned long long)hb, (unsigned long long)atomic_load(&h->ivcd_heartbeat));
    struct ivc_client *ct = client_table(base);
    uint64_t c0st = atomic_load(&ct[0].status);
    T_ASSERT(IVC_EP_STATE(c0st) == IVC_CLIENT_LIVE && ct[0].pid == (uint64_t)getpid(),
             "client 0 status 0x%llx pid %llu", (unsigned long long)c0st,
             (unsigned long long)ct[0].pid);
    T_ASSERT(IVC_EP_STATE(atomic_load(&ct[1].status)) == IVC_CLIENT_FREE, "client 1 not free");
    for (uint32_t e = 0; e < 64; e++) {
        struct ivc_ep *ep = (struct ivc_ep *)(base + g.eps_off) + e;
        T_ASSERT(atomic_load(&ep->status) == 0, "endpoint %u not zeroed", e);
    }
    munmap(base, SIZE);
    close_all(p0.efd, VECTORS);
    close(p0.sock);
    close(shm);
    t_ivcd_stop(&d);
}

/* A second peer learns about peer 0, peer 0 learns about it, and each
 * vector is an eventfd of its own. */
static void test_second_peer(void)
{
    struct two t;

    two_peers(&t);
    for (int v = 0; v < VECTORS; v++) {
        check_same_eventfd(t.e0_at1[v], t.p0.efd[v], 3 + v); /* peer 1 rings peer 0, vector v */
        check_same_eventfd(t.e1_at0[v], t.p1.efd[v], 7 + v);
    }
    uint64_t none;
    T_ASSERT(eventfd_read(t.p0.efd[1], &none) < 0 && errno == EAGAIN, "vectors share an eventfd");
    uint8_t *base = map_region(t.p0.shm);
    T_ASSERT(IVC_EP_STATE(atomic_load(&client_table(base)[1].status)) == IVC_CLIENT_LIVE,
             "client 1 not live");
    munmap(base, SIZE);
    t_ivcd_stop(&t.d);
}

/* With peers 0 and 1 there, a third peer fills --max-peers; a fourth is
 * turned away; the third leaving is announced to the others. */
static void fill_and_leave(struct t_ivcd *d, struct peer *p0, struct peer *p1)
{
    int junk[VECTORS];
    int s2 = raw_connect(d->sock);
    close(expect_hello(s2, 2));
    for (int id = 0; id < 3; id++) {
        expect_efds(s2, id, junk);
        close_all(junk, VECTORS);
    }
    for (int s = 0; s < 2; s++) {
        expect_efds(s ? p1->sock : p0->sock, 2, junk);
        close_all(junk, VECTORS);
    }
    int s3 = raw_connect(d->sock);
    int64_t v;
    int fd;
    int r = ivshm_recv(s3, &v, &fd);
    T_ASSERT(r == -EPIPE || r == -ECONNRESET, "a peer beyond --max-peers got %d (%lld)", r,
             (long long)v);
    close(s3);
    close(s2);
    raw_expect(p0->sock, 2, false, NULL);
    raw_expect(p1->sock, 2, false, NULL);
}

static void test_max_peers(void)
{
    struct two t;

    two_peers(&t);
    fill_and_leave(&t.d, &t.p0, &t.p1);
    t_ivcd_stop(&t.d);
}

/* Peer 0 leaves: peer 1 is told, the table says FREE with gen + 1; a
 * newcomer gets the lowest free id, 0, and everybody's eventfds. */
static void test_leave_and_reuse(void)
{
    struct two t;

    two_peers(&t);
    uint8_t *base = map_region(t.p1.shm);
    struct ivc_client *ct = client_table(base);
    uint64_t c0st = atomic_load(&ct[0].status);
    close(t.p0.sock);
    raw_expect(t.p1.sock, 0, false, NULL);
    T_ASSERT(raw_quiet(t.p1.sock, 100), "extra messages after peer 0 left");
    uint64_t c0free = atomic_load(&ct[0].status);
    T_ASSERT(IVC_EP_STATE(c0free) == IVC_CLIENT_FREE && IVC_EP_GEN(c0free) == IVC_EP_GEN(c0st) + 1,
             "client 0 status 0x%llx after leaving (was 0x%llx)", (unsigned long long)c0free,
             (unsigned long long)c0st);

    int s0b = raw_connect(t.d.sock);
    close(expect_hello(s0b, 0));
    int e1_at0b[VECTORS], e0b[VECTORS], e0b_at1[VECTORS];
    expect_efds(s0b, 1, e1_at0b);
    expect_efds(s0b, 0, e0b);
    expect_efds(t.p1.sock, 0, e0b_at1);
    for (int i = 0; i < VECTORS; i++) {
        check_same_eventfd(e1_at0b[i], t.p1.efd[i], 11);
        check_same_eventfd(e0b_at1[i], e0b[i], 13);
    }
    T_ASSERT(IVC_EP_GEN(atomic_load(&ct[0].status)) == IVC_EP_GEN(c0free) + 1, "gen not bumped");
    munmap(base, SIZE);
    t_ivcd_stop(&t.d);
}

/* `ivcd ctl list` and `status` see both peers, with our pid, and not the
 * third one that came and went. */
static void test_ctl_sees_peers(void)
{
    static const char *const list[] = {"list", NULL};
    static const char *const status[] = {"status", NULL};
    struct two t;
    char out[8192], want[64];

    two_peers(&t);
    fill_and_leave(&t.d, &t.p0, &t.p1);
    T_ASSERT(ctl_run(&t.d, out, sizeof(out), list) == 0, "list: %s", out);
    for (int id = 0; id < 2; id++) {
        snprintf(want, sizeof(want), "client id=%d pid=%d state=live\n", id, (int)getpid());
        T_ASSERT(strstr(out, want), "list lacks '%s': %s", want, out);
    }
    T_ASSERT(!strstr(out, "client id=2"), "list shows the departed peer 2: %s", out);
    T_ASSERT(ctl_run(&t.d, out, sizeof(out), status) == 0, "status: %s", out);
    snprintf(want, sizeof(want), "job=%llu\n", (unsigned long long)MAGIC);
    T_ASSERT(strstr(out, want) && strstr(out, "region_size=4194304\n") &&
                 strstr(out, "clients=2\n") && strstr(out, "endpoints=0\n") &&
                 strstr(out, "max_peers=3\n"),
             "status: %s", out);
    t_ivcd_stop(&t.d);
}

static const struct t_case cases[] = {
    {"first_peer_and_region", test_first_peer_and_region, 30},
    {"second_peer", test_second_peer, 30},
    {"max_peers", test_max_peers, 30},
    {"leave_and_reuse", test_leave_and_reuse, 30},
    {"ctl_sees_peers", test_ctl_sees_peers, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
