/*
 * test_cli_parse.c - the CLI's strict number parsing (vhpc/util.h) and the
 * cluster name rule (names.h): whole strings only, ranges, unit suffixes,
 * overflow is an error (never a wrap), messages name the option and range.
 */
#include "names.h"
#include "vhpc/util.h"
#include "testutil.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

static vhpc_err_t err;

static void int_ok(const char *s, int min, int max, int want)
{
    int v = -12345;
    T_ASSERT(vhpc_parse_int("--x", s, min, max, &v, &err) == 0, "'%s': %s", s, err.msg);
    T_ASSERT(v == want, "'%s' -> %d, want %d", s, v, want);
}

static void int_bad(const char *s, int min, int max)
{
    int v = 777;
    vhpc_err_clear(&err);
    T_ASSERT(vhpc_parse_int("--vms", s, min, max, &v, &err) == -EINVAL, "'%s' accepted", s);
    T_ASSERT(v == 777, "'%s': output written on error", s);
    T_ASSERT(strstr(err.msg, "--vms") && strstr(err.msg, "from"), "message: %s", err.msg);
}

static void mib_ok(const char *s, long want)
{
    long v = -1;
    T_ASSERT(vhpc_parse_mib_opt("--mem", s, 64, 1L << 20, &v, &err) == 0, "'%s': %s", s, err.msg);
    T_ASSERT(v == want, "'%s' -> %ld, want %ld", s, v, want);
}

static void mib_bad(const char *s)
{
    long v = 1;
    vhpc_err_clear(&err);
    T_ASSERT(vhpc_parse_mib_opt("--mem", s, 64, 1L << 20, &v, &err) == -EINVAL, "'%s' accepted", s);
    T_ASSERT(v == 1, "'%s': output written on error", s);
    T_ASSERT(strstr(err.msg, "--mem") && strstr(err.msg, "64 to 1048576"), "message: %s", err.msg);
}

static void test_ints(void)
{
    int_ok("1", 1, 64, 1);
    int_ok("64", 1, 64, 64);
    int_ok("007", 1, 64, 7);
    int_ok("-3", -5, 5, -3);
    int_bad("1x", 1, 64);
    int_bad("2x", 1, 64);
    int_bad("", 1, 64);
    int_bad(" 1", 1, 64);
    int_bad("+1", 1, 64);
    int_bad("-1", 0, 64);
    int_bad("0", 1, 64);
    int_bad("65", 1, 64);
    int_bad("0x10", 1, 64);
    int_bad("4294967297", 1, 64);              /* wraps to 1 in a 32-bit int */
    int_bad("99999999999999999999999", 1, 64); /* overflows long long */
    int_bad(NULL, 1, 64);
}

static void test_longs(void)
{
    long l;
    T_ASSERT(vhpc_parse_long("--n", "9223372036854775807", 0, LONG_MAX, &l, &err) == 0 &&
                 l == LONG_MAX,
             "LONG_MAX: %s", err.msg);
    T_ASSERT(vhpc_parse_long("--n", "9223372036854775808", 0, LONG_MAX, &l, &err) < 0,
             "LONG_MAX + 1 accepted");
}

static void test_mib(void)
{
    mib_ok("64", 64);
    mib_ok("256M", 256);
    mib_ok("256mib", 256);
    mib_ok("1G", 1024);
    mib_ok("2GiB", 2048);
    mib_ok("1T", 1L << 20);
    mib_bad("63");
    mib_bad("4294967360");        /* 4 GiB + 64 MiB as a byte count: would wrap to 64 */
    mib_bad("9007199254740993G"); /* v * 1024 overflows */
    mib_bad("1025G");
    mib_bad("2T");
    mib_bad("1x");
    mib_bad("1 G");
    mib_bad("G");
    mib_bad("-1G");
    mib_bad("1.5G");
    mib_bad("");
}

/* Cluster names: the rule vhpc_cluster_up applies. */
static void test_cluster_names(void)
{
    T_ASSERT(vhpc_cluster_name_ok("c1") && vhpc_cluster_name_ok("run-123_x"), "good names");
    T_ASSERT(vhpc_cluster_name_ok("abcdefghijklmnopqrstuvwxyz012345"), "32 characters");
    static const char *const bad[] = {"",
                                      "..",
                                      "../../precious",
                                      "a/b",
                                      "a b",
                                      ".hidden",
                                      "x\n",
                                      "abcdefghijklmnopqrstuvwxyz0123456",
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        T_ASSERT(!vhpc_cluster_name_ok(bad[i]), "'%s' accepted", bad[i]);
        T_ASSERT(vhpc_check_cluster_name(bad[i], &err) == -EINVAL, "'%s'", bad[i]);
        T_ASSERT(strstr(err.msg, "letters, digits") && !strchr(err.msg, '\n'), "message: %s",
                 err.msg);
    }
    T_ASSERT(vhpc_check_cluster_name(NULL, &err) == -EINVAL, "NULL");
}

static const struct t_case cases[] = {
    {"ints", test_ints, 10},
    {"longs", test_longs, 10},
    {"mib", test_mib, 10},
    {"cluster_names", test_cluster_names, 10},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
