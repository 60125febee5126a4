/*
 * test.c - the runner of test.h: one process per case, a timeout per case,
 * one summary line.
 *
 * Each case runs in a child that leads its own process group, so what the
 * case started (ivcd, agents, helpers) is killed with it when it overruns.
 * The child arms alarm() at the case's timeout, which lets testutil's
 * SIGALRM handler clean up (scratch directory, tracked children); the
 * parent waits a grace period longer and then kills the whole group.  The
 * parent uses nothing of testutil that installs handlers (only its clock),
 * so no exit handler of a case runs twice.
 */
#include "test.h"
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 60
#define GRACE_S           5

enum verdict { PASSED, FAILED, SKIPPED };

static void run_child(const struct t_case *c, unsigned timeout)
{
    setpgid(0, 0);
    alarm(timeout);
    c->fn();
    exit(0);
}

/* Wait for the case's child until `deadline_ms`: 0 with *status set, -1
 * if it is still running then, -2 if it cannot be waited for (never a
 * pass). */
static int wait_until(pid_t pid, uint64_t deadline_ms, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return -2;
        if (t_now_ms() >= deadline_ms)
            return -1;
        usleep(10 * 1000);
    }
}

static enum verdict run_case(const struct t_case *c)
{
    unsigned timeout = c->timeout_s ? c->timeout_s : DEFAULT_TIMEOUT_S;
    uint64_t t0 = t_now_ms();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "FAIL %s: fork: %s\n", c->name, strerror(errno));
        return FAILED;
    }
    if (pid == 0)
        run_child(c, timeout);
    setpgid(pid, pid); /* also here, so the group exists before we may kill it */

    int status = 0, timed_out = 0;
    int w = wait_until(pid, t0 + (uint64_t)(timeout + GRACE_S) * 1000, &status);
    if (w == -2) {
        printf("FAIL  %s: cannot wait for its process: %s\n", c->name, strerror(errno));
        kill(-pid, SIGKILL);
        return FAILED;
    }
    if (w < 0) {
        timed_out = 1;
        kill(-pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    /* Whatever the case left running in its group goes with it. */
    kill(-pid, SIGKILL);
    unsigned ms = (unsigned)(t_now_ms() - t0);

    if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok    %s (%u ms)\n", c->name, ms);
        return PASSED;
    }
    if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == T_SKIP_CODE) {
        printf("skip  %s\n", c->name);
        return SKIPPED;
    }
    if (timed_out || (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM))
        printf("FAIL  %s: still running after its %u s timeout\n", c->name, timeout);
    else if (WIFSIGNALED(status))
        printf("FAIL  %s: killed by signal %d (%s)\n", c->name, WTERMSIG(status),
               strsignal(WTERMSIG(status)));
    else
        printf("FAIL  %s: exit status %d\n", c->name, WEXITSTATUS(status));
    return FAILED;
}

static const struct t_case *find(const struct t_case *cases, const char *name)
{
    for (const struct t_case *c = cases; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

int t_main(int argc, char **argv, const struct t_case *cases)
{
    int n[3] = {0, 0, 0};
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (const struct t_case *c = cases; c->name; c++)
            printf("%s\n", c->name);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        if (!find(cases, argv[i])) {
            fprintf(stderr, "%s: no case named '%s' (see %s --list)\n", argv[0], argv[i], argv[0]);
            return 2;
        }
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            n[run_case(find(cases, argv[i]))]++;
    } else {
        for (const struct t_case *c = cases; c->name; c++)
            n[run_case(c)]++;
    }
    printf("%d passed, %d failed, %d skipped\n", n[PASSED], n[FAILED], n[SKIPPED]);
    if (n[FAILED])
        return 1;
    return n[PASSED] ? 0 : T_SKIP_CODE;
}
