/*
 * mpi_conformance.c - MPI usages reported to crash or hang under the
 * provider "ivc" (Open MPI's pml cm + mtl ofi) that pass over pml ob1
 * (btl self,vader,tcp): one case per run, named on the command line, so a
 * crash or a hang is that case's alone.
 *
 *   alltoallw_bottom      MPI_Alltoallw with MPI_BOTTOM as both buffers and
 *                         datatypes built from absolute addresses
 *                         (MPI_Get_address, MPI_Type_create_struct): one
 *                         block of 1, 1000 and 100000 ints per peer
 *   alltoallw_bottom_gap  the same with a gap in each block (non-contiguous)
 *   intercomm_allgather   MPI_Allgather on an intercommunicator made by
 *                         MPI_Intercomm_create (even ranks / odd ranks)
 *   intercomm_collectives point-to-point, Barrier, Allgather, Bcast,
 *                         Allreduce, Alltoall, Gather, Scatter, Reduce on
 *                         such an intercommunicator, on its Comm_dup and
 *                         Comm_split, and an Allreduce on its Intercomm_merge
 *   self                  MPI_COMM_SELF: a send to self (small and large),
 *                         MPI_Cancel of receives nobody sends to (cancelled),
 *                         and of one whose message is already there
 *   cancel_send           MPI_Cancel of a send to self (a known crash of
 *                         Open MPI 4.1's mtl ofi, before any provider call)
 *   spawn                 MPI_Comm_spawn of 2 children, then all of
 *                         intercomm_collectives between parents and children
 *   connect_accept        MPI_Comm_accept / MPI_Comm_connect between the even
 *                         and the odd ranks, then the same across
 *
 * Every rank checks what it received and prints "FAIL CASE: rank R: why"
 * for its first failure; rank 0 prints "PASS CASE" when no rank failed.
 * Errors return (MPI_ERRORS_RETURN) instead of aborting.  A watchdog
 * (SIGALRM after TIMEOUT_S) turns a hang into "FAIL CASE: rank R: hung in
 * STEP" and exit status 3, so a hang fails instead of hanging.
 *
 * Build: mpicc -O2 -o mpi_conformance mpi_conformance.c
 * Run:   mpirun -np 2 mpi_conformance CASE
 */
#define _POSIX_C_SOURCE 200809L

#include <mpi.h>

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { TIMEOUT_S = 60 };

static int my_rank, nranks;
static const char *case_name = "?";
static const char *volatile step = "start"; /* what the rank is doing, for the watchdog */
static int failures;

static void on_alarm(int sig)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "FAIL %s: rank %d: hung in %s (no progress for %d s)\n",
                     case_name, my_rank, step, TIMEOUT_S);
    (void)sig;
    if (write(STDOUT_FILENO, msg, (size_t)n) < 0)
        _exit(4);
    _exit(3);
}

__attribute__((format(printf, 1, 2))) static void failf(const char *fmt, ...)
{
    if (failures++ > 0)
        return;
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    printf("FAIL %s: rank %d: %s\n", case_name, my_rank, why);
    fflush(stdout);
}

/* An MPI call that must succeed; false (and a failure) if it did not. */
static int ok(int rc, const char *call)
{
    if (rc == MPI_SUCCESS)
        return 1;
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    failf("%s: %s", call, s);
    return 0;
}
#define OK(call) (step = #call, ok((call), #call))

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* ---- alltoallw_bottom ------------------------------------------------------------ */

static int a2aw_value(int from, int to, int k)
{
    return from * 1000003 + to * 7919 + k;
}

/* A datatype naming n ints at absolute address `at` (one block), or, with
 * a gap, n/2 ints there and the other n - n/2 after a 3-int hole. */
static MPI_Datatype absolute_type(int *at, int n, int gap)
{
    MPI_Aint disp[2];
    int len[2] = {gap ? n / 2 : n, n - n / 2};
    MPI_Datatype types[2] = {MPI_INT, MPI_INT}, t;
    MPI_Get_address(at, &disp[0]);
    MPI_Get_address(at + len[0] + 3, &disp[1]);
    MPI_Type_create_struct(gap ? 2 : 1, len, disp, types, &t);
    MPI_Type_commit(&t);
    return t;
}

static void alltoallw_one(MPI_Comm comm, int n, int gap)
{
    const int stride = n + 3; /* room for the hole */
    int *sbuf = xcalloc((size_t)nranks * stride, sizeof(int));
    int *rbuf = xcalloc((size_t)nranks * stride, sizeof(int));
    int *counts = xcalloc((size_t)nranks, sizeof(int)),
        *displs = xcalloc((size_t)nranks, sizeof(int));
    MPI_Datatype *stypes = xcalloc((size_t)nranks, sizeof(MPI_Datatype));
    MPI_Datatype *rtypes = xcalloc((size_t)nranks, sizeof(MPI_Datatype));
    for (int j = 0; j < nranks; j++) {
        int *s = sbuf + (size_t)j * stride;
        for (int k = 0, h = gap ? n / 2 : n; k < n; k++)
            s[k < h ? k : k + 3] = a2aw_value(my_rank, j, k);
        stypes[j] = absolute_type(s, n, gap);
        rtypes[j] = absolute_type(rbuf + (size_t)j * stride, n, gap);
        counts[j] = 1;
    }
    if (OK(MPI_Alltoallw(MPI_BOTTOM, counts, displs, stypes, MPI_BOTTOM, counts, displs, rtypes,
                         comm)))
        for (int j = 0; j < nranks && !failures; j++)
            for (int k = 0, h = gap ? n / 2 : n; k < n; k++) {
                int got = rbuf[(size_t)j * stride + (k < h ? k : k + 3)];
                if (got != a2aw_value(j, my_rank, k)) {
                    failf("%d ints%s from rank %d: int %d is %d, not %d", n,
                          gap ? " (with a gap)" : "", j, k, got, a2aw_value(j, my_rank, k));
                    break;
                }
            }
    for (int j = 0; j < nranks; j++) {
        MPI_Type_free(&stypes[j]);
        MPI_Type_free(&rtypes[j]);
    }
    free(sbuf);
    free(rbuf);
    free(counts);
    free(displs);
    free(stypes);
    free(rtypes);
}

/* Eager and rendezvous sizes under ivc (16 KiB is its eager limit); with
 * a gap, at least an int on either side of it. */
static void alltoallw_sizes(int gap)
{
    const int sizes[] = {gap ? 2 : 1, 1000, 100000};
    for (int i = 0; i < 3 && !failures; i++)
        alltoallw_one(MPI_COMM_WORLD, sizes[i], gap);
}

static void case_alltoallw_bottom(void)
{
    alltoallw_sizes(0);
}

static void case_alltoallw_bottom_gap(void)
{
    alltoallw_sizes(1);
}

/* ---- intercommunicators ------------------------------------------------------------ */

/* What rank r of side `side` (0 or 1) of an intercommunicator contributes. */
static int side_value(int side, int r)
{
    return 1000 * side + r + 1;
}

/* Even ranks and odd ranks, joined by MPI_Intercomm_create; *local is this
 * rank's half, and the side is my_rank % 2. */
static MPI_Comm make_intercomm(MPI_Comm *local)
{
    MPI_Comm inter = MPI_COMM_NULL;
    int color = my_rank % 2;
    if (OK(MPI_Comm_split(MPI_COMM_WORLD, color, my_rank, local)) &&
        OK(MPI_Intercomm_create(*local, 0, MPI_COMM_WORLD, color ? 0 : 1, 77, &inter)))
        MPI_Comm_set_errhandler(inter, MPI_ERRORS_RETURN);
    return inter;
}

static void inter_allgather(MPI_Comm inter, int side)
{
    int lrank, rsize;
    MPI_Comm_rank(inter, &lrank);
    MPI_Comm_remote_size(inter, &rsize);
    int mine = side_value(side, lrank), *got = xcalloc((size_t)rsize, sizeof(int));
    if (OK(MPI_Allgather(&mine, 1, MPI_INT, got, 1, MPI_INT, inter)))
        for (int r = 0; r < rsize; r++)
            if (got[r] != side_value(!side, r)) {
                failf("Allgather: from remote rank %d got %d, not %d", r, got[r],
                      side_value(!side, r));
                break;
            }
    free(got);
}

static void case_intercomm_allgather(void)
{
    MPI_Comm local, inter = make_intercomm(&local);
    if (inter == MPI_COMM_NULL)
        return;
    inter_allgather(inter, my_rank % 2);
    MPI_Comm_free(&inter);
    MPI_Comm_free(&local);
}

/* Point-to-point (local rank 0 of each side with remote rank 0, by
 * MPI_ANY_SOURCE and by rank) and every collective with its result
 * checked, on an intercommunicator whose sides are 0 and 1. */
static void inter_collectives(MPI_Comm inter, int side)
{
    int lrank, rsize, mine, x, sum, want = 0;
    MPI_Comm_rank(inter, &lrank);
    MPI_Comm_remote_size(inter, &rsize);
    mine = side_value(side, lrank);
    for (int r = 0; r < rsize; r++)
        want += side_value(!side, r);
    int *s = xcalloc((size_t)rsize, sizeof(int)), *r = xcalloc((size_t)rsize, sizeof(int));

    if (lrank == 0) {
        MPI_Status st = {0};
        MPI_Request req;
        int in[2] = {-1, -1};
        if (OK(MPI_Irecv(&in[0], 1, MPI_INT, MPI_ANY_SOURCE, 5, inter, &req)) &&
            OK(MPI_Send(&mine, 1, MPI_INT, 0, 5, inter)) && OK(MPI_Wait(&req, &st)) &&
            OK(MPI_Sendrecv(&mine, 1, MPI_INT, 0, 6, &in[1], 1, MPI_INT, 0, 6, inter,
                            MPI_STATUS_IGNORE)) &&
            (in[0] != side_value(!side, 0) || in[1] != in[0] || st.MPI_SOURCE != 0))
            failf("point-to-point: got %d and %d from remote rank %d, not %d from 0", in[0], in[1],
                  st.MPI_SOURCE, side_value(!side, 0));
    }
    if (failures || !OK(MPI_Barrier(inter)))
        goto out;
    inter_allgather(inter, side);

    /* Bcast from side 0's rank 0. */
    x = side == 0 ? 4242 : 0;
    int root = side == 0 ? (lrank == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
    if (OK(MPI_Bcast(&x, 1, MPI_INT, root, inter)) && side == 1 && x != 4242)
        failf("Bcast: got %d, not 4242", x);

    /* Allreduce: each side gets the sum over the other. */
    sum = 0;
    if (OK(MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, inter)) && sum != want)
        failf("Allreduce: got %d, not %d", sum, want);

    /* Alltoall: one int to every remote rank. */
    for (int j = 0; j < rsize; j++)
        s[j] = mine * 100 + j;
    if (OK(MPI_Alltoall(s, 1, MPI_INT, r, 1, MPI_INT, inter)))
        for (int j = 0; j < rsize; j++)
            if (r[j] != side_value(!side, j) * 100 + lrank) {
                failf("Alltoall: from remote rank %d got %d", j, r[j]);
                break;
            }

    /* Gather to side 1's rank 0, Scatter from it, Reduce to it. */
    root = side == 1 ? (lrank == 0 ? MPI_ROOT : MPI_PROC_NULL) : 0;
    if (OK(MPI_Gather(&mine, 1, MPI_INT, r, 1, MPI_INT, root, inter)) && root == MPI_ROOT)
        for (int j = 0; j < rsize; j++)
            if (r[j] != side_value(0, j)) {
                failf("Gather: from remote rank %d got %d", j, r[j]);
                break;
            }
    for (int j = 0; j < rsize; j++)
        s[j] = 7000 + j;
    x = -1;
    if (OK(MPI_Scatter(s, 1, MPI_INT, &x, 1, MPI_INT, root, inter)) && side == 0 &&
        x != 7000 + lrank)
        failf("Scatter: got %d, not %d", x, 7000 + lrank);
    sum = 0;
    if (OK(MPI_Reduce(&mine, &sum, 1, MPI_INT, MPI_SUM, root, inter)) && root == MPI_ROOT &&
        sum != want)
        failf("Reduce: got %d, not %d", sum, want);
out:
    free(s);
    free(r);
}

/* inter_collectives on inter, on its MPI_Comm_dup and MPI_Comm_split, and
 * an MPI_Allreduce over its MPI_Intercomm_merge (of `total` ranks). */
static void inter_all(MPI_Comm inter, int side, int total)
{
    MPI_Comm dup, split, merged;
    inter_collectives(inter, side);
    if (!failures && OK(MPI_Comm_dup(inter, &dup))) {
        MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
        inter_collectives(dup, side);
        MPI_Comm_free(&dup);
    }
    if (!failures && OK(MPI_Comm_split(inter, 0, 0, &split))) {
        MPI_Comm_set_errhandler(split, MPI_ERRORS_RETURN);
        inter_collectives(split, side);
        MPI_Comm_free(&split);
    }
    if (!failures && OK(MPI_Intercomm_merge(inter, side, &merged))) {
        int n = 0, one = 1;
        if (OK(MPI_Allreduce(&one, &n, 1, MPI_INT, MPI_SUM, merged)) && n != total)
            failf("Intercomm_merge: an Allreduce over it counts %d ranks, not %d", n, total);
        MPI_Comm_free(&merged);
    }
}

static void case_intercomm_collectives(void)
{
    MPI_Comm local, inter = make_intercomm(&local);
    if (inter == MPI_COMM_NULL)
        return;
    inter_all(inter, my_rank % 2, nranks);
    MPI_Comm_free(&inter);
    MPI_Comm_free(&local);
}

/* ---- MPI_COMM_SELF ---------------------------------------------------------------- */

static void self_send(size_t len)
{
    char *out = xcalloc(len, 1), *in = xcalloc(len, 1);
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(i * 31 + len);
    MPI_Request r;
    MPI_Status st;
    if (OK(MPI_Isend(out, (int)len, MPI_BYTE, 0, 3, MPI_COMM_SELF, &r)) &&
        OK(MPI_Recv(in, (int)len, MPI_BYTE, 0, 3, MPI_COMM_SELF, &st)) &&
        OK(MPI_Wait(&r, MPI_STATUS_IGNORE)) && memcmp(in, out, len) != 0)
        failf("send to self of %zu bytes: the data differs", len);
    free(out);
    free(in);
}

static void case_self(void)
{
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    self_send(10);
    self_send(1 << 20);
    /* A receive nothing matches: cancelled. */
    int buf[4], cancelled = 0;
    MPI_Request r;
    MPI_Status st;
    if (OK(MPI_Irecv(buf, 4, MPI_INT, 0, 9, MPI_COMM_SELF, &r)) && OK(MPI_Cancel(&r)) &&
        OK(MPI_Wait(&r, &st)) && OK(MPI_Test_cancelled(&st, &cancelled)) && !cancelled)
        failf("a cancelled receive on MPI_COMM_SELF is not cancelled");
    /* Cancelled receives with a wildcard source and tag, several in a row. */
    for (int i = 0; i < 8 && !failures; i++)
        if (OK(MPI_Irecv(buf, 4, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &r)) &&
            OK(MPI_Cancel(&r)) && OK(MPI_Wait(&r, &st)) &&
            OK(MPI_Test_cancelled(&st, &cancelled)) && !cancelled)
            failf("cancelled wildcard receive %d is not cancelled", i);
    /* The message is already there: the cancel may lose (data delivered)
     * or win (the message stays for the next receive). */
    int out[4] = {1, 2, 3, 4};
    memset(buf, 0, sizeof(buf));
    if (OK(MPI_Send(out, 4, MPI_INT, 0, 10, MPI_COMM_SELF)) &&
        OK(MPI_Probe(0, 10, MPI_COMM_SELF, &st)) &&
        OK(MPI_Irecv(buf, 4, MPI_INT, 0, 10, MPI_COMM_SELF, &r)) && OK(MPI_Cancel(&r)) &&
        OK(MPI_Wait(&r, &st)) && OK(MPI_Test_cancelled(&st, &cancelled))) {
        if (cancelled)
            OK(MPI_Recv(buf, 4, MPI_INT, 0, 10, MPI_COMM_SELF, &st));
        if (memcmp(buf, out, sizeof(out)) != 0)
            failf("the message whose receive was cancelled (%s) is lost",
                  cancelled ? "won" : "lost");
    }
    /* Still in order afterwards. */
    self_send(100);
}

/* MPI_Cancel of a send to self: it may be cancelled or not, but the
 * message must then be received exactly if it was not.  (Open MPI 4.1's
 * mtl ofi crashes in MPI_Cancel of any send, whatever the provider: see
 * the README's "Known Open MPI limitations".) */
static void case_cancel_send(void)
{
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    int out = 77, in = 0, cancelled = 0, flag = 0;
    MPI_Request r;
    MPI_Status st;
    if (!OK(MPI_Isend(&out, 1, MPI_INT, 0, 11, MPI_COMM_SELF, &r)) || !OK(MPI_Cancel(&r)) ||
        !OK(MPI_Wait(&r, &st)) || !OK(MPI_Test_cancelled(&st, &cancelled)))
        return;
    if (!OK(MPI_Iprobe(0, 11, MPI_COMM_SELF, &flag, &st)))
        return;
    if (cancelled == flag)
        failf("the send %s cancelled, yet its message %s there", cancelled ? "was" : "was not",
              flag ? "is" : "is not");
    else if (flag && OK(MPI_Recv(&in, 1, MPI_INT, 0, 11, MPI_COMM_SELF, &st)) && in != out)
        failf("the message of the send not cancelled is %d, not %d", in, out);
}

/* ---- dynamic processes --------------------------------------------------------------- */

enum { SPAWNED = 2 };

/* The parents (side 0) and SPAWNED children (side 1) run inter_all on the
 * intercommunicator between them. */
static void case_spawn(char *self)
{
    MPI_Comm child;
    char *args[] = {"spawn-child", NULL};
    int errs[SPAWNED];
    if (!OK(MPI_Comm_spawn(self, args, SPAWNED, MPI_INFO_NULL, 0, MPI_COMM_WORLD, &child, errs)))
        return;
    MPI_Comm_set_errhandler(child, MPI_ERRORS_RETURN);
    inter_all(child, 0, nranks + SPAWNED);
    OK(MPI_Comm_disconnect(&child));
}

/* The child side of `spawn`. */
static int spawn_child(void)
{
    MPI_Comm parent;
    int psize;
    case_name = "spawn (child)";
    MPI_Comm_get_parent(&parent);
    if (parent == MPI_COMM_NULL) {
        failf("spawn-child without a parent");
        return 1;
    }
    MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
    MPI_Comm_remote_size(parent, &psize);
    inter_all(parent, 1, psize + nranks);
    OK(MPI_Comm_disconnect(&parent));
    return failures ? 1 : 0;
}

/* Even ranks accept, odd ranks connect (the port name goes by
 * MPI_COMM_WORLD); then inter_all across. */
static void case_connect_accept(void)
{
    char port[MPI_MAX_PORT_NAME] = "";
    MPI_Comm half, other;
    int color = my_rank % 2;
    if (!OK(MPI_Comm_split(MPI_COMM_WORLD, color, my_rank, &half)))
        return;
    if (my_rank == 0)
        OK(MPI_Open_port(MPI_INFO_NULL, port));
    OK(MPI_Bcast(port, MPI_MAX_PORT_NAME, MPI_CHAR, 0, MPI_COMM_WORLD));
    step = color == 0 ? "MPI_Comm_accept" : "MPI_Comm_connect";
    int rc = color == 0 ? MPI_Comm_accept(port, MPI_INFO_NULL, 0, half, &other)
                        : MPI_Comm_connect(port, MPI_INFO_NULL, 0, half, &other);
    if (ok(rc, step)) {
        MPI_Comm_set_errhandler(other, MPI_ERRORS_RETURN);
        inter_all(other, color, nranks);
        OK(MPI_Comm_disconnect(&other));
    }
    if (my_rank == 0)
        MPI_Close_port(port);
    MPI_Comm_free(&half);
}

/* ---- main ---------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(void);
    } cases[] = {
        {"alltoallw_bottom", case_alltoallw_bottom},
        {"alltoallw_bottom_gap", case_alltoallw_bottom_gap},
        {"intercomm_allgather", case_intercomm_allgather},
        {"intercomm_collectives", case_intercomm_collectives},
        {"self", case_self},
        {"cancel_send", case_cancel_send},
        {"spawn", NULL}, /* needs argv[0] */
        {"connect_accept", case_connect_accept},
    };
    const int ncases = (int)(sizeof(cases) / sizeof(cases[0]));
    signal(SIGALRM, on_alarm);
    alarm(TIMEOUT_S);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (argc == 2 && !strcmp(argv[1], "spawn-child")) {
        int r = spawn_child();
        MPI_Finalize();
        return r;
    }
    case_name = argc == 2 ? argv[1] : "";
    if (argc != 2 || nranks < 2) {
        if (my_rank == 0)
            fprintf(stderr, "usage: mpirun -np N (N >= 2) mpi_conformance CASE\n");
        MPI_Finalize();
        return 2;
    }
    int i = 0;
    while (i < ncases && strcmp(case_name, cases[i].name))
        i++;
    if (i == ncases)
        failf("no such case (see the top of mpi_conformance.c)");
    else if (!cases[i].run)
        case_spawn(argv[0]);
    else
        cases[i].run();
    step = "the final MPI_Allreduce";
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (my_rank == 0 && total == 0)
        printf("PASS %s\n", case_name);
    fflush(stdout);
    step = "MPI_Finalize";
    MPI_Finalize();
    return total ? 1 : 0;
}
