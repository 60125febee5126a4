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

    CHECK(eventfd_write(writer, n) == 0, "eventfd_write: %s", strerror(errno));
    CHECK(eventfd_read(reader, &got) == 0 && got == n, "eventfd read %llu, wanted %llu (%s)",
          (unsigned long long)got, (unsigned long long)n, strerror(errno));
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

int main(void)
{
    static const char *const extra[] = {"--size", "4M", "--vectors", "2", "--max-peers", "3", NULL};
    struct t_ivcd d;
    struct stat st;
    char out[8192];
    int e0[VECTORS], e1[VECTORS], e0_at1[VECTORS], e1_at0[VECTORS], junk[VECTORS];

    t_ivcd_start(&d, MAGIC, extra);
    /* t_ivcd_start's probe connection held id 0 for a moment. */
    CHECK(wait_list(&d, "client id=", false, 5000), "the probe connection never went away");

    /* ---- first peer: nobody else is there */
    int s0 = raw_connect(d.sock);
    int shm = expect_hello(s0, 0);
    expect_efds(s0, 0, e0);
    CHECK(raw_quiet(s0, 100), "extra message after the greeting of peer 0");

    CHECK(fstat(shm, &st) == 0 && st.st_size == SIZE, "region size %lld, wanted %u",
          (long long)st.st_size, SIZE);
    int seals = fcntl(shm, F_GET_SEALS);
    CHECK(seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) ==
                            (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
          "seals 0x%x", seals);
    CHECK(ftruncate(shm, SIZE / 2) < 0 && errno == EPERM, "a peer could shrink the region");
    CHECK(ftruncate(shm, SIZE * 2) < 0 && errno == EPERM, "a peer could grow the region");

    /* ---- the header */
    uint8_t *base = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
    CHECK(base != MAP_FAILED, "mmap: %s", strerror(errno));
    struct ivc_hdr *h = (struct ivc_hdr *)base;
    struct ivc_geometry g;
    CHECK(ivc_geometry_compute(&g, SIZE, MAX_PEERS, 64, 64) == 0, "geometry");
    CHECK(h->signature == IVC_REGION_SIGNATURE, "signature 0x%llx",
          (unsigned long long)h->signature);
    CHECK(h->version == IVC_LAYOUT_VERSION && h->hdr_size == sizeof(struct ivc_hdr),
          "version %u hdr_size %u", h->version, h->hdr_size);
    CHECK(h->region_size == SIZE && h->job_magic == MAGIC, "size %llu magic 0x%llx",
          (unsigned long long)h->region_size, (unsigned long long)h->job_magic);
    CHECK(h->max_clients == MAX_PEERS && h->max_eps == 64 && h->conns_per_ep == 64,
          "max_clients %u max_eps %u conns_per_ep %u", h->max_clients, h->max_eps, h->conns_per_ep);
    CHECK(h->clients_off == g.clients_off && h->eps_off == g.eps_off &&
              h->conns_off == g.conns_off && h->pool_off == g.pool_off &&
              h->share_size == g.share_size,
          "offsets differ from ivc_geometry_compute");
    CHECK(atomic_load(&h->ivcd_pid) == (uint64_t)d.pid, "ivcd_pid %llu, ivcd is %d",
          (unsigned long long)atomic_load(&h->ivcd_pid), (int)d.pid);
    uint64_t hb = atomic_load(&h->ivcd_heartbeat);
    usleep(350000);
    CHECK(atomic_load(&h->ivcd_heartbeat) >= hb + 2, "heartbeat %llu -> %llu in 350 ms",
          (unsigned long long)hb, (unsigned long long)atomic_load(&h->ivcd_heartbeat));
    struct ivc_client *ct = (struct ivc_client *)(base + g.clients_off);
    uint64_t c0st = atomic_load(&ct[0].status);
    CHECK(IVC_EP_STATE(c0st) == IVC_CLIENT_LIVE && ct[0].pid == (uint64_t)getpid(),
          "client 0 status 0x%llx pid %llu", (unsigned long long)c0st,
          (unsigned long long)ct[0].pid);
    CHECK(IVC_EP_STATE(atomic_load(&ct[1].status)) == IVC_CLIENT_FREE, "client 1 not free");
    for (uint32_t e = 0; e < 64; e++) {
        struct ivc_ep *ep = (struct ivc_ep *)(base + g.eps_off) + e;
        CHECK(atomic_load(&ep->status) == 0, "endpoint %u not zeroed", e);
    }

    /* ---- second peer: learns about peer 0, peer 0 learns about it */
    int s1 = raw_connect(d.sock);
    close(expect_hello(s1, 1));
    expect_efds(s1, 0, e0_at1);
    expect_efds(s1, 1, e1);
    expect_efds(s0, 1, e1_at0);
    CHECK(raw_quiet(s0, 100) && raw_quiet(s1, 50), "extra messages after peer 1 joined");
    for (int v = 0; v < VECTORS; v++) {
        check_same_eventfd(e0_at1[v], e0[v], 3 + v); /* peer 1 rings peer 0, vector v */
        check_same_eventfd(e1_at0[v], e1[v], 7 + v);
    }
    uint64_t none;
    CHECK(eventfd_read(e0[1], &none) < 0 && errno == EAGAIN, "vectors share an eventfd");
    CHECK(IVC_EP_STATE(atomic_load(&ct[1].status)) == IVC_CLIENT_LIVE, "client 1 not live");

    /* ---- third peer fills --max-peers; a fourth is turned away */
    int s2 = raw_connect(d.sock);
    close(expect_hello(s2, 2));
    expect_efds(s2, 0, junk);
    close_all(junk, VECTORS);
    expect_efds(s2, 1, junk);
    close_all(junk, VECTORS);
    expect_efds(s2, 2, junk);
    close_all(junk, VECTORS);
    for (int s = 0; s < 2; s++) {
        expect_efds(s ? s1 : s0, 2, junk);
        close_all(junk, VECTORS);
    }
    int s3 = raw_connect(d.sock);
    int64_t v;
    int fd;
    int r = ivshm_recv(s3, &v, &fd);
    CHECK(r == -EPIPE || r == -ECONNRESET, "a peer beyond --max-peers got %d (%lld)", r,
          (long long)v);
    close(s3);
    close(s2);
    raw_expect(s0, 2, false, NULL);
    raw_expect(s1, 2, false, NULL);

    /* ---- peer 0 leaves: peer 1 is told, the table says FREE, gen + 1 */
    close(s0);
    raw_expect(s1, 0, false, NULL);
    CHECK(raw_quiet(s1, 100), "extra messages after peer 0 left");
    uint64_t c0free = atomic_load(&ct[0].status);
    CHECK(IVC_EP_STATE(c0free) == IVC_CLIENT_FREE && IVC_EP_GEN(c0free) == IVC_EP_GEN(c0st) + 1,
          "client 0 status 0x%llx after leaving (was 0x%llx)", (unsigned long long)c0free,
          (unsigned long long)c0st);

    /* ---- a newcomer gets the lowest free id, 0, and everybody's eventfds */
    int s0b = raw_connect(d.sock);
    close(expect_hello(s0b, 0));
    int e1_at0b[VECTORS], e0b[VECTORS], e0b_at1[VECTORS];
    expect_efds(s0b, 1, e1_at0b);
    expect_efds(s0b, 0, e0b);
    expect_efds(s1, 0, e0b_at1);
    for (int i = 0; i < VECTORS; i++) {
        check_same_eventfd(e1_at0b[i], e1[i], 11);
        check_same_eventfd(e0b_at1[i], e0b[i], 13);
    }
    CHECK(IVC_EP_GEN(atomic_load(&ct[0].status)) == IVC_EP_GEN(c0free) + 1, "gen not bumped");

    /* ---- ctl sees both, with our pid */
    static const char *const list[] = {"list", NULL};
    static const char *const status[] = {"status", NULL};
    char want[64];
    CHECK(ctl_run(&d, out, sizeof(out), list) == 0, "list: %s", out);
    snprintf(want, sizeof(want), "client id=0 pid=%d state=live\n", (int)getpid());
    CHECK(strstr(out, want), "list lacks '%s': %s", want, out);
    snprintf(want, sizeof(want), "client id=1 pid=%d state=live\n", (int)getpid());
    CHECK(strstr(out, want), "list lacks '%s': %s", want, out);
    CHECK(!strstr(out, "client id=2"), "list shows the departed peer 2: %s", out);
    CHECK(ctl_run(&d, out, sizeof(out), status) == 0, "status: %s", out);
    snprintf(want, sizeof(want), "job=%llu\n", (unsigned long long)MAGIC);
    CHECK(strstr(out, want) && strstr(out, "region_size=4194304\n") && strstr(out, "clients=2\n") &&
              strstr(out, "endpoints=0\n") && strstr(out, "max_peers=3\n"),
          "status: %s", out);

    close_all(e0, VECTORS);
    close_all(e1, VECTORS);
    close_all(e0_at1, VECTORS);
    close_all(e1_at0, VECTORS);
    close_all(e1_at0b, VECTORS);
    close_all(e0b, VECTORS);
    close_all(e0b_at1, VECTORS);
    close(s0b);
    close(s1);
    munmap(base, SIZE);
    close(shm);
    t_ivcd_stop(&d);
    printf("ok\n");
    return 0;
}
