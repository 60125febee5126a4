/*
 * test.h - the C tests' one assertion dialect and their runner.
 *
 * A test program is a table of cases; t_main() runs each case in its own
 * process (its own process group) with its own timeout, so that one
 * failure, crash or hang is reported and the next case still runs, as
 * libuv's runner does.  A case passes by returning, fails with T_FAIL /
 * T_ASSERT / T_OK (or by crashing, or by outliving its timeout), and is
 * skipped with T_SKIP when the machine lacks something it needs.
 *
 *     static void test_roundtrip(void) { T_ASSERT(f(1) == 2, "f(1)=%d", f(1)); }
 *     static const struct t_case cases[] = {
 *         {"roundtrip", test_roundtrip, 10},
 *         {0},
 *     };
 *     int main(int argc, char **argv) { return t_main(argc, argv, cases); }
 *
 * `prog` runs every case; `prog NAME...` runs the named ones; `prog --list`
 * prints their names.  The last line is "N passed, N failed, N skipped";
 * the exit status is 0 if nothing failed and something passed, T_SKIP_CODE
 * if every case was skipped, 1 otherwise.
 */
#ifndef VHPC_TEST_H
#define VHPC_TEST_H

#include <stdio.h>
#include <stdlib.h>

/* What a skipped case (and a program whose every case skipped) exits with;
 * ctest's SKIP_RETURN_CODE. */
#define T_SKIP_CODE 77

#define T_FAIL(...)                                                                                \
    do {                                                                                           \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)
#define T_ASSERT(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "assertion `%s` failed\n", #cond);                                     \
            T_FAIL(__VA_ARGS__);                                                                   \
        }                                                                                          \
    } while (0)
/* The case cannot run here (say why, and what would make it run). */
#define T_SKIP(...)                                                                                \
    do {                                                                                           \
        fprintf(stderr, "SKIP: ");                                                                 \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(T_SKIP_CODE);                                                                         \
    } while (0)

struct t_case {
    const char *name;
    void (*fn)(void);
    unsigned timeout_s; /* 0: 60 s */
};

/* Run the cases of a NULL-name-terminated table; see above. */
int t_main(int argc, char **argv, const struct t_case *cases);

#endif
