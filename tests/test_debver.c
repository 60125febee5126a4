/*
 * test_debver - Debian version comparison (deb-version(7)) as image
 * requirements will use it: numeric runs, '~', letters before symbols,
 * epochs, revisions, leading zeros, and what is not a version.  Each pair
 * is checked both ways round.  Then 300 random pairs against dpkg itself
 * (`dpkg --compare-versions`, on every Debian system).
 */
#include "debver.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int sign(int x)
{
    return (x > 0) - (x < 0);
}

static void check(const char *a, const char *b, int want)
{
    T_ASSERT(vhpc_debver_valid(a) && vhpc_debver_valid(b), "valid: %s %s", a, b);
    int r = sign(vhpc_debver_cmp(a, b)), back = sign(vhpc_debver_cmp(b, a));
    T_ASSERT(r == want && back == -want, "cmp(%s, %s) = %d (and %d back), want %d", a, b, r, back,
             want);
}

/* dpkg's answer: -1, 0 or 1. */
static int dpkg_cmp(const char *a, const char *b)
{
    const char *ops[] = {"lt", "eq"};
    for (int i = 0; i < 2; i++) {
        pid_t pid = fork();
        T_ASSERT(pid >= 0, "fork");
        if (pid == 0) {
            execlp("dpkg", "dpkg", "--compare-versions", a, ops[i], b, (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) <= 1, "dpkg --compare-versions failed");
        if (WEXITSTATUS(st) == 0)
            return i == 0 ? -1 : 0;
    }
    return 1;
}

/* A random valid version from pieces that exercise every rule. */
static void random_version(char *buf, size_t len, unsigned *seed)
{
    static const char *const pieces[] = {"0", "1", "9", "10", "01", ".",   ".",  "~",   "+",
                                         "a", "b", "z", "A",  "rc", "~rc", "+b", "dfsg"};
    size_t n = 0;
    if (rand_r(seed) % 5 == 0)
        n += (size_t)snprintf(buf, len, "%u:", rand_r(seed) % 3);
    n += (size_t)snprintf(buf + n, len - n, "%u", rand_r(seed) % 12);
    for (int k = rand_r(seed) % 6; k > 0; k--)
        n += (size_t)snprintf(buf + n, len - n, "%s", pieces[rand_r(seed) % 17]);
    if (rand_r(seed) % 2) {
        n += (size_t)snprintf(buf + n, len - n, "-%u", rand_r(seed) % 11);
        for (int k = rand_r(seed) % 3; k > 0; k--)
            n += (size_t)snprintf(buf + n, len - n, "%s", pieces[rand_r(seed) % 17]);
    }
}

static void test_pairs(void)
{
    check("1.10", "1.9", 1);
    check("1.9", "1.10", -1);
    check("6.1.0-56", "6.1.0-9", 1);
    check("4.1.4-3+b1", "4.1.4-3", 1);
    check("4.1.4-3", "4.1", 1);
    check("1.0~rc1", "1.0", -1);
    check("1.0~~", "1.0~", -1);
    check("1.0~", "1.0", -1);
    check("1.0a", "1.0", 1);
    check("1.0a", "1.0+", -1); /* letters sort before other symbols */
    check("1:0.9", "2.0", 1);  /* the epoch first */
    check("0:2.0", "2.0", 0);
    check("1.0-1", "1.0-2", -1);
    check("1.0-10", "1.0-9", 1);
    check("1.01", "1.1", 0); /* numerically */
    check("1.0", "1.0-0", 0);
    check("2.36-9+deb12u4", "2.36-9+deb12u10", -1);
    check("6.12.95-1~bpo12+1", "6.12.95-1", -1);
    check("6.12.95+deb12-cloud-amd64", "6.1.0-56-cloud-amd64", 1);
    check("3.0.0", "3.0", 1);
}

static void test_invalid(void)
{
    const char *bad[] = {"", "a1.0", ":1.0", "x:1.0", "1.0-", "1.0 beta", "1.0-a_b", "-1", NULL};
    for (int i = 0; bad[i]; i++)
        T_ASSERT(!vhpc_debver_valid(bad[i]), "'%s' must not be a version", bad[i]);
    T_ASSERT(vhpc_debver_valid("1:2.3~rc1+dfsg-4+b1"), "a full version");
}

static void test_against_dpkg(void)
{
    if (access("/usr/bin/dpkg", X_OK) != 0)
        T_SKIP("no /usr/bin/dpkg to cross-check with (apt-get install dpkg)");
    unsigned seed = 12345;
    for (int i = 0; i < 300; i++) {
        char a[64], b[64];
        random_version(a, sizeof(a), &seed);
        random_version(b, sizeof(b), &seed);
        T_ASSERT(vhpc_debver_valid(a) && vhpc_debver_valid(b), "generated %s %s", a, b);
        int ours = sign(vhpc_debver_cmp(a, b)), theirs = dpkg_cmp(a, b);
        T_ASSERT(ours == theirs, "%s vs %s: ours %d, dpkg %d", a, b, ours, theirs);
    }
}

static const struct t_case cases[] = {
    {"pairs", test_pairs, 10},
    {"invalid", test_invalid, 10},
    {"against_dpkg", test_against_dpkg, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
