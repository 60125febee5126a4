/*
 * ivc_demo - two processes exchange data through IVC and say what happened.
 *
 *   ivc_demo [--socket PATH] --job MAGIC --role recv [--mib N]
 *   ivc_demo [--socket PATH] --job MAGIC --role send [--mib N]
 *
 * The receiver registers as client 1 and accepts; the sender registers as
 * client 0, lists its neighbours, connects, measures the one-way latency of
 * 8-byte messages (ping-pong / 2), then streams N MiB of checksummed data.
 * The receiver verifies every byte and answers with its checksum.
 * This is the `make demo` of vhpc until virtual clusters exist.
 */
#include "ivc.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK (1u << 20)
#define PINGS 20000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *role, const char *what, int err)
{
    fprintf(stderr, "ivc_demo %s: %s: %s\n", role, what, ivc_strerror(err));
    return 1;
}

/* A 64-bit FNV-style hash over 8-byte words (CHUNK is a multiple of 8), so
 * both ends can compare what went through. */
static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
    }
    return h;
}

/* Word j of the stream, distinct for every position. */
static void fill(uint8_t *p, size_t n, uint64_t off)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w = ((off + i) / 8 + 1) * 0x9E3779B97F4A7C15ULL;
        memcpy(p + i, &w, 8);
    }
}

/* Spin on the non-blocking calls, as a polling MPI library does. */
static int xfer(ivc_chan_t *ch, void *buf, size_t len, int out)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = out ? ivc_write(ch, (char *)buf + done, len - done)
                        : ivc_read(ch, (char *)buf + done, len - done);
        if (n < 0)
            return (int)n;
        done += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *sock = NULL, *role = NULL;
    uint64_t job = 0;
    unsigned mib = 64;
    static const struct option opts[] = {{"socket", 1, 0, 's'},
                                         {"job", 1, 0, 'j'},
                                         {"role", 1, 0, 'r'},
                                         {"mib", 1, 0, 'm'},
                                         {0, 0, 0, 0}};
    int c, r;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': sock = optarg; break;
        case 'j': job = strtoull(optarg, NULL, 0); break;
        case 'r': role = optarg; break;
        case 'm': mib = (unsigned)strtoul(optarg, NULL, 0); break;
        default: return 2;
        }
    }
    if (!job && getenv("VHPC_JOB")) /* inside a vhpc cluster */
        job = strtoull(getenv("VHPC_JOB"), NULL, 0);
    if (!job || !role || (strcmp(role, "send") && strcmp(role, "recv")) || !mib) {
        fprintf(stderr, "usage: ivc_demo [--socket PATH] --job MAGIC --role send|recv [--mib N]\n"
                        "(without --socket: $IVC_SOCKET, the guest's ivshmem device, or\n"
                        " /run/vhpc/ivc-MAGIC.sock)\n");
        return 2;
    }
    int sender = strcmp(role, "send") == 0;
    ivc_options_t o = {.location = sock, .ring_size = 1u << 20};
    ivc_ctx_t *ctx;
    ivc_chan_t *ch;
    if ((r = ivc_register(job, sender ? 0 : 1, &o, &ctx)) < 0)
        return die(role, "joining the job's region", r);
    uint8_t *buf = malloc(CHUNK), *want = malloc(CHUNK);
    uint64_t sum = 0xcbf29ce484222325ULL, peer_sum = 0;
    uint8_t ping[8] = {0};

    if (!sender) {
        if ((r = ivc_accept(ctx, 30000, &ch)) < 0)
            return die(role, "waiting for the sender", r);
        for (int i = 0; i < PINGS + 1000; i++)
            if ((r = xfer(ch, ping, 8, 0)) < 0 || (r = xfer(ch, ping, 8, 1)) < 0)
                return die(role, "ping-pong", r);
        for (uint64_t off = 0; off < (uint64_t)mib << 20; off += CHUNK) {
            if ((r = xfer(ch, buf, CHUNK, 0)) < 0)
                return die(role, "receiving", r);
            sum = fnv(sum, buf, CHUNK);
            fill(want, CHUNK, off);
            if (memcmp(want, buf, CHUNK) != 0) {
                fprintf(stderr, "ivc_demo recv: data differs in MiB %" PRIu64 "\n", off >> 20);
                return 1;
            }
        }
        if ((r = ivc_write_all(ch, &sum, sizeof(sum), 10000, NULL)) < 0)
            return die(role, "answering", r);
        char eof;
        while ((r = (int)ivc_read(ch, &eof, 1)) == 0)
            ;
        ivc_close(ch);
        ivc_unregister(ctx);
        free(buf);
        free(want);
        return 0;
    }

    ivc_peer_t peers[16], self;
    int n = 0;
    for (int i = 0; i < 3000 && (n = ivc_get_hosts(ctx, peers, 16)) == 0; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    ivc_self(ctx, &self);
    printf("sender:   client 0 in job %" PRIu64 ", ivshmem peer %u, endpoint slot %u\n", job,
           self.vm_id, self.slot);
    for (int i = 0; i < n && i < 16; i++)
        printf("neighbour: client %u (pid %d, ivshmem peer %u, slot %u)\n", peers[i].client_id,
               peers[i].pid, peers[i].vm_id, peers[i].slot);
    if ((r = ivc_connect(ctx, 1, 30000, &ch)) < 0)
        return die(role, "connecting to client 1", r);
    printf("channel:  open, %zu KiB ring each way\n", ivc_chan_ring_size(ch) >> 10);

    double t0 = 0;
    for (int i = 0; i < PINGS + 1000; i++) {
        if (i == 1000)
            t0 = now_s();
        if ((r = xfer(ch, ping, 8, 1)) < 0 || (r = xfer(ch, ping, 8, 0)) < 0)
            return die(role, "ping-pong", r);
    }
    double lat_us = (now_s() - t0) / PINGS / 2 * 1e6;

    double t1 = now_s();
    for (uint64_t off = 0; off < (uint64_t)mib << 20; off += CHUNK) {
        fill(buf, CHUNK, off);
        sum = fnv(sum, buf, CHUNK);
        if ((r = xfer(ch, buf, CHUNK, 1)) < 0)
            return die(role, "sending", r);
    }
    if ((r = ivc_read_all(ch, &peer_sum, sizeof(peer_sum), 30000, NULL)) < 0)
        return die(role, "waiting for the checksum", r);
    double secs = now_s() - t1;
    printf("latency:  %.3f us one-way for 8-byte messages (%d ping-pongs)\n", lat_us, PINGS);
    printf("transfer: %u MiB in %.3f s = %.0f MB/s (including generating and checking the data)\n",
           mib, secs, (double)mib * 1048576 / secs / 1e6);
    printf("checksum: sent %016" PRIx64 ", receiver computed %016" PRIx64 ": %s\n", sum, peer_sum,
           sum == peer_sum ? "match" : "MISMATCH");
    ivc_close(ch);
    ivc_unregister(ctx);
    free(buf);
    free(want);
    return sum == peer_sum ? 0 : 1;
}
