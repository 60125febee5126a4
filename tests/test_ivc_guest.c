/*
 * test_ivc_guest - libivc's guest path (the region as BAR2 of an ivshmem PCI
 * device, mapped from sysfs) without a VM: this test plays QEMU.  It attaches
 * to ivcd with the raw ivshmem protocol as QEMU does, then builds a fake
 * sysfs device directory ($IVC_SYSFS_PCI) with vendor 0x1af4, device 0x1110,
 * an `enable` file, a BAR0 file whose IVPosition register holds the peer id
 * ivcd gave, and `resource2` pointing at the shared-memory fd.  A "guest"
 * process registers with location "guest" (and with no location at all:
 * discovery must prefer the device) and talks to an ordinary host process;
 * when the fake QEMU disconnects, ivcd reclaims the guest's endpoint and the
 * host side sees the channel reset.  Real VMs exercise the same code next.
 */
#include "internal.h"
#include "ivshmem_proto.h"
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAGIC 31337

static struct t_ivcd ivcd;
static char devdir[200];
static int qsock = -1; /* the fake QEMU's connection to ivcd */

static void write_file(const char *name, const void *data, size_t len)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", devdir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    T_ASSERT(fd >= 0, "create %s", path);
    T_ASSERT(write(fd, data, len) == (ssize_t)len, "write %s", path);
    close(fd);
}

/* Attach like QEMU: returns the socket; *id and *memfd from the greeting. */
static int fake_qemu(int64_t *id, int *memfd)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ivcd.sock);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_ASSERT(connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect to ivcd");
    int64_t v;
    int fd;
    T_ASSERT(ivshm_recv(s, &v, &fd) == 0 && v == 0 && fd < 0, "version 0");
    T_ASSERT(ivshm_recv(s, id, &fd) == 0 && fd < 0, "own id");
    T_ASSERT(ivshm_recv(s, &v, memfd) == 0 && v == -1 && *memfd >= 0, "shm fd");
    return s;
}

static int guest_proc(void *arg)
{
    const char *loc = arg;
    close(qsock); /* only "QEMU" holds the VM's connection */
    ivc_options_t o = {.location = loc, .ring_size = 64 << 10};
    ivc_ctx_t *c;
    T_OK(ivc_register(MAGIC, 7, &o, &c));
    ivc_peer_t self;
    T_OK(ivc_self(c, &self));
    T_ASSERT(c->sock < 0, "the guest path has no ivcd socket");
    ivc_chan_t *ch;
    T_OK(ivc_connect(c, 8, 10000, &ch));
    uint8_t buf[100000];
    t_fill(buf, sizeof(buf), 5, 0);
    T_OK(ivc_write_all(ch, buf, sizeof(buf), 10000, NULL));
    size_t done;
    T_OK(ivc_read_all(ch, buf, sizeof(buf), 10000, &done));
    T_ASSERT(t_check(buf, sizeof(buf), 6, 0) == sizeof(buf), "guest received the host's data");
    /* Stay until the test tears the "VM" down. */
    pause();
    return 0;
}

static int64_t vm_id;
static int memfd;

/* ivcd, a fake QEMU attached to it, and a fake sysfs device whose BAR2 is
 * the fake QEMU's region ($IVC_SYSFS_PCI points at it). */
static void setup(void)
{
    const char *extra[] = {"--size", "16M", NULL};
    t_ivcd_start(&ivcd, MAGIC, extra);

    qsock = fake_qemu(&vm_id, &memfd);

    /* The fake sysfs device. */
    snprintf(devdir, sizeof(devdir), "%s/pci", t_tmpdir());
    mkdir(devdir, 0755);
    snprintf(devdir, sizeof(devdir), "%s/pci/0000:00:03.0", t_tmpdir());
    T_ASSERT(mkdir(devdir, 0755) == 0, "mkdir");
    write_file("vendor", "0x1af4\n", 7);
    write_file("device", "0x1110\n", 7);
    write_file("enable", "0\n", 2);
    uint8_t bar0[4096] = {0};
    int32_t pos = (int32_t)vm_id;
    memcpy(bar0 + 8, &pos, 4); /* IVPosition */
    write_file("resource0", bar0, sizeof(bar0));
    char target[64], link[400];
    snprintf(target, sizeof(target), "/proc/%d/fd/%d", getpid(), memfd);
    snprintf(link, sizeof(link), "%s/resource2", devdir);
    T_ASSERT(symlink(target, link) == 0, "symlink resource2");
    /* A device of another kind beside it is ignored. */
    char other[250];
    snprintf(other, sizeof(other), "%s/pci/0000:00:02.0", t_tmpdir());
    mkdir(other, 0755);
    snprintf(link, sizeof(link), "%s/vendor", other);
    int fd = open(link, O_WRONLY | O_CREAT, 0644);
    T_ASSERT(fd >= 0 && write(fd, "0x8086\n", 7) == 7, "other vendor");
    close(fd);

    char pci[300];
    snprintf(pci, sizeof(pci), "%s/pci", t_tmpdir());
    setenv("IVC_SYSFS_PCI", pci, 1);
}

/* A guest process talks to a host peer, found with location "guest"
 * (round 0) or by automatic discovery (round 1). */
static void guest_round(int round)
{
    char link[400];
    int fd;

    setup();
    ivc_options_t o = {.location = ivcd.sock, .ring_size = 64 << 10};
    ivc_ctx_t *host;
    T_OK(ivc_register(MAGIC, 8, &o, &host));
    pid_t g = t_fork(guest_proc, round == 0 ? "guest" : NULL);
    ivc_chan_t *ch;
    T_OK(ivc_accept(host, 10000, &ch));
    ivc_peer_t peers[4];
    int n = T_OK(ivc_get_hosts(host, peers, 4));
    T_ASSERT(n == 1 && peers[0].client_id == 7, "the guest is listed");
    T_ASSERT(peers[0].vm_id == vm_id, "the guest's endpoint carries its VM's peer id (%u != %lld)",
             peers[0].vm_id, (long long)vm_id);
    uint8_t buf[100000];
    size_t done;
    T_OK(ivc_read_all(ch, buf, sizeof(buf), 10000, &done));
    T_ASSERT(t_check(buf, sizeof(buf), 5, 0) == sizeof(buf), "host received the guest's data");
    t_fill(buf, sizeof(buf), 6, 0);
    T_OK(ivc_write_all(ch, buf, sizeof(buf), 10000, NULL));

    char en[4] = {0};
    snprintf(link, sizeof(link), "%s/enable", devdir);
    fd = open(link, O_RDONLY);
    T_ASSERT(fd >= 0 && read(fd, en, 1) == 1 && en[0] == '1', "the guest enabled the device");
    close(fd);
    write_file("enable", "0\n", 2);

    if (round == 0) {
        /* The guest process dies but its VM lives on: its endpoint stays
         * (only the VM's agent can tell, next issue).  Close it cleanly. */
        kill(g, SIGKILL);
        t_wait(g);
        T_OK(ivc_close(ch));
        /* Free its slot the way the agent will: it knows the pid. */
        struct ivc_ep *e = ivc__ep(host, peers[0].slot);
        uint64_t st = atomic_load(&e->status);
        atomic_store(&e->status, IVC_EP_STATUS(IVC_EP_GEN(st) + 1, 0, IVC_EP_FREE));
    } else {
        /* The VM goes away (QEMU disconnects): ivcd reclaims the guest's
         * endpoint and the host sees the channel reset. */
        close(qsock);
        char c;
        int r = ivc_read_all(ch, &c, 1, 10000, NULL);
        T_ASSERT(r == IVC_ECONNRESET, "host sees reset when the VM leaves, got %s",
                 ivc_strerror(r));
        kill(g, SIGKILL);
        t_wait(g);
        T_OK(ivc_close(ch));
    }
    T_OK(ivc_unregister(host));
    close(memfd);
    t_ivcd_stop(&ivcd);
}

static void test_location_guest(void)
{
    guest_round(0);
}

static void test_discovery_vm_leaves(void)
{
    guest_round(1);
}

static const struct t_case cases[] = {
    {"location_guest", test_location_guest, 60},
    {"discovery_vm_leaves", test_discovery_vm_leaves, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
