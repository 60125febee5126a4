/*
 * fi_onecpu - the provider's own cost per message, with nothing crossing
 * between CPUs: one process on one CPU, two endpoints A and B of one
 * domain; per message B posts a tagged receive, A sends, and B's and A's
 * completion queues are read until both complete.  What is left is the
 * instructions of a send, a receive and two completion reads (and the
 * progress passes they run), cache-hot.  Then the same with the message
 * arriving before its receive (B's queue is read in between: progress
 * keeps it as unexpected, the receive finds it).  Then as many completion
 * reads on B's empty queue: what each poll of a waiting rank
 * costs (a progress pass over both endpoints, one IVC peer each), which
 * sets how soon a waiting rank sees a message.  Absolute: compare builds
 * in one session (old and new alternated), or count instructions under
 * `valgrind --tool=callgrind --toggle-collect=run_loop` (or run_loop_unexp,
 * empty_loop).
 *
 * usage: fi_onecpu [--provider NAME] [--iters N] [--reps N]
 * With the provider ivc, FI_PROVIDER_PATH, FI_IVC_JOB and IVC_SOCKET name
 * the provider and an ivcd region (see bench/README.md); the first 3000
 * messages (and 0.6 s) let the IVC channel between A and B come up.
 * Last line: RESULT fi_onecpu8_ns=<median ns per 8 B message>
 *                   unexp8_ns=<the same, unexpected>
 *                   empty_read_ns=<median ns per empty completion read>
 */
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FI_OK(call)                                                                                \
    do {                                                                                           \
        int r_ = (int)(call);                                                                      \
        if (r_) {                                                                                  \
            fprintf(stderr, "fi_onecpu: %s: %s\n", #call, fi_strerror(r_ < 0 ? -r_ : r_));         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

struct side {
    struct fid_ep *ep;
    struct fid_av *av;
    struct fid_cq *cq;
    fi_addr_t peer;
    char name[256];
};

static struct fi_info *info;
static struct fid_fabric *fabric;
static struct fid_domain *domain;
static struct side a, b;
static char sbuf[8], rbuf[8];

static void side_open(struct side *s)
{
    struct fi_av_attr aa = {.type = FI_AV_TABLE};
    struct fi_cq_attr ca = {.format = FI_CQ_FORMAT_TAGGED};
    FI_OK(fi_av_open(domain, &aa, &s->av, NULL));
    FI_OK(fi_cq_open(domain, &ca, &s->cq, NULL));
    FI_OK(fi_endpoint(domain, info, &s->ep, NULL));
    FI_OK(fi_ep_bind(s->ep, &s->av->fid, 0));
    FI_OK(fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV));
    FI_OK(fi_enable(s->ep));
    size_t len = sizeof(s->name);
    FI_OK(fi_getname(&s->ep->fid, s->name, &len));
}

static void side_close(struct side *s)
{
    fi_close(&s->ep->fid);
    fi_close(&s->cq->fid);
    fi_close(&s->av->fid);
}

static void wait_one(struct fid_cq *cq)
{
    struct fi_cq_tagged_entry e;
    ssize_t r;
    while ((r = fi_cq_read(cq, &e, 1)) == -FI_EAGAIN)
        ;
    if (r != 1) {
        struct fi_cq_err_entry err = {0};
        fi_cq_readerr(cq, &err, 0);
        fprintf(stderr, "fi_onecpu: fi_cq_read: %zd (%s)\n", r, fi_strerror(err.err));
        exit(1);
    }
}

__attribute__((noinline)) void run_loop(long n)
{
    for (long i = 0; i < n; i++) {
        ssize_t r;
        while ((r = fi_trecv(b.ep, rbuf, sizeof(rbuf), NULL, b.peer, 1, 0, rbuf)) == -FI_EAGAIN)
            ;
        FI_OK(r);
        while ((r = fi_tsend(a.ep, sbuf, sizeof(sbuf), NULL, a.peer, 1, sbuf)) == -FI_EAGAIN)
            ;
        FI_OK(r);
        wait_one(b.cq);
        wait_one(a.cq);
    }
}

/* The same message arriving before its receive: A sends, B's completion
 * queue is read (progress takes the message as unexpected), then B posts
 * the receive, which finds it. */
__attribute__((noinline)) void run_loop_unexp(long n)
{
    struct fi_cq_tagged_entry e;
    for (long i = 0; i < n; i++) {
        ssize_t r;
        while ((r = fi_tsend(a.ep, sbuf, sizeof(sbuf), NULL, a.peer, 1, sbuf)) == -FI_EAGAIN)
            ;
        FI_OK(r);
        if (fi_cq_read(b.cq, &e, 1) != -FI_EAGAIN) {
            fprintf(stderr, "fi_onecpu: a completion before the receive was posted\n");
            exit(1);
        }
        while ((r = fi_trecv(b.ep, rbuf, sizeof(rbuf), NULL, b.peer, 1, 0, rbuf)) == -FI_EAGAIN)
            ;
        FI_OK(r);
        wait_one(b.cq);
        wait_one(a.cq);
    }
}

/* Completion reads that find nothing, as a waiting MPI rank makes them
 * (each one is a progress pass over the domain's endpoints and peers). */
__attribute__((noinline)) void empty_loop(long n)
{
    struct fi_cq_tagged_entry e;
    for (long i = 0; i < n; i++)
        if (fi_cq_read(b.cq, &e, 1) != -FI_EAGAIN) {
            fprintf(stderr, "fi_onecpu: a completion where none was expected\n");
            exit(1);
        }
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *x, const void *y)
{
    double u = *(const double *)x, v = *(const double *)y;
    return (u > v) - (u < v);
}

int main(int argc, char **argv)
{
    const char *prov = "ivc";
    long iters = 200000;
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--provider") && i + 1 < argc) {
            prov = argv[++i];
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc && (iters = atol(argv[i + 1])) > 0) {
            i++;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc && (reps = atoi(argv[i + 1])) > 0 &&
                   reps <= 101) {
            i++;
        } else {
            fprintf(stderr, "usage: fi_onecpu [--provider NAME] [--iters N] [--reps N (1-101)]\n");
            return 2;
        }
    }
    struct fi_info *hints = fi_allocinfo();
    hints->caps = FI_TAGGED;
    hints->ep_attr->type = FI_EP_RDM;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->fabric_attr->prov_name = strdup(prov);
    int r = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &info);
    if (r) {
        fprintf(stderr, "fi_onecpu: no provider %s (%s); for ivc set FI_PROVIDER_PATH\n", prov,
                fi_strerror(-r));
        return 1;
    }
    fi_freeinfo(hints);
    FI_OK(fi_fabric(info->fabric_attr, &fabric, NULL));
    FI_OK(fi_domain(fabric, info, &domain, NULL));
    side_open(&a);
    side_open(&b);
    fi_addr_t self;
    if (fi_av_insert(a.av, b.name, 1, &a.peer, 0, NULL) != 1 ||
        fi_av_insert(a.av, a.name, 1, &self, 0, NULL) != 1 ||
        fi_av_insert(b.av, a.name, 1, &b.peer, 0, NULL) != 1 ||
        fi_av_insert(b.av, b.name, 1, &self, 0, NULL) != 1) {
        fprintf(stderr, "fi_onecpu: fi_av_insert failed\n");
        return 1;
    }
    for (int k = 0; k < 30; k++) { /* the IVC channel comes up meanwhile */
        run_loop(100);
        usleep(20000);
    }
    double v[101], u[101], w[101];
    for (int k = 0; k < reps; k++) {
        double t0 = now_ns();
        run_loop(iters);
        double t1 = now_ns();
        run_loop_unexp(iters);
        double t2 = now_ns();
        empty_loop(iters);
        v[k] = (t1 - t0) / (double)iters;
        u[k] = (t2 - t1) / (double)iters;
        w[k] = (now_ns() - t2) / (double)iters;
    }
    qsort(v, (size_t)reps, sizeof(v[0]), cmp);
    qsort(u, (size_t)reps, sizeof(u[0]), cmp);
    qsort(w, (size_t)reps, sizeof(w[0]), cmp);
    printf("# fi_onecpu provider=%s iters=%ld reps=%d\n", prov, iters, reps);
    printf("%-26s %10s %10s %10s\n", "per", "median_ns", "min_ns", "max_ns");
    printf("%-26s %10.1f %10.1f %10.1f\n", "8 B message", v[reps / 2], v[0], v[reps - 1]);
    printf("%-26s %10.1f %10.1f %10.1f\n", "8 B message, unexpected", u[reps / 2], u[0],
           u[reps - 1]);
    printf("%-26s %10.1f %10.1f %10.1f\n", "empty completion read", w[reps / 2], w[0], w[reps - 1]);
    printf("RESULT fi_onecpu8_ns=%.1f unexp8_ns=%.1f empty_read_ns=%.1f\n", v[reps / 2],
           u[reps / 2], w[reps / 2]);
    side_close(&a);
    side_close(&b);
    fi_close(&domain->fid);
    fi_close(&fabric->fid);
    fi_freeinfo(info);
    return 0;
}
