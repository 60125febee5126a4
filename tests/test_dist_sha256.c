/*
 * test_dist_sha256.c - the two SHA-256 implementations (portable, and the
 * x86 SHA extensions of sha256_hw.c): the FIPS 180-4 example vectors on
 * each, then both must agree on random inputs of every length up to 1100
 * bytes and some large ones, fed in one piece and in random pieces.  Prints
 * the speed of each (not asserted: timing is not a test's business).
 */
#include "cpio.h"
#include "sha256_hw.h"
#include "testutil.h"

#include <string.h>

static void hash(int impl, const void *p, size_t len, size_t piece, char hex[65])
{
    struct vhpc_sha256 s;
    vhpc__sha256_select(impl);
    vhpc_sha256_init(&s);
    if (!piece) {
        vhpc_sha256_update(&s, p, len);
    } else {
        /* uneven pieces: 1, piece, 1, piece, ... */
        const unsigned char *q = p;
        size_t done = 0;
        for (int odd = 0; done < len; odd ^= 1) {
            size_t n = odd ? piece : 1;
            if (n > len - done)
                n = len - done;
            vhpc_sha256_update(&s, q + done, n);
            done += n;
        }
    }
    vhpc_sha256_hex(&s, hex);
}

static const struct {
    const char *msg;
    size_t repeat;
    const char *want;
} fips[] = {
    {"abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnop"
     "qrsmnopqrstnopqrstu",
     1, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    {"a", 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
};

static const char *const impl_name[] = {"portable", "hardware"};

/* The FIPS 180-4 vectors on implementation `impl`, whole and in pieces. */
static void fips_vectors(int impl)
{
    int k = impl == VHPC_SHA256_HW;
    for (size_t v = 0; v < sizeof(fips) / sizeof(*fips); v++) {
        size_t ml = strlen(fips[v].msg), len = ml * fips[v].repeat;
        unsigned char *buf = malloc(len + 1);
        T_ASSERT(buf, "malloc");
        for (size_t i = 0; i < fips[v].repeat; i++)
            memcpy(buf + i * ml, fips[v].msg, ml);
        char hex[65];
        T_ASSERT(vhpc__sha256_select(impl) == impl, "select %d", impl);
        hash(impl, buf, len, 0, hex);
        T_ASSERT(!strcmp(hex, fips[v].want), "FIPS vector %zu (%s): %s, want %s", v, impl_name[k],
                 hex, fips[v].want);
        hash(impl, buf, len, 63, hex);
        T_ASSERT(!strcmp(hex, fips[v].want), "FIPS vector %zu in pieces (%s)", v, impl_name[k]);
        free(buf);
    }
}

/* The speed of `impl` (reported, not asserted). */
static void report_speed(int impl, const unsigned char *buf, size_t len)
{
    char hex[65];
    uint64_t t0 = t_now_ms();
    int rounds = 0;
    do {
        hash(impl, buf, len, 0, hex);
        rounds++;
    } while (t_now_ms() - t0 < 300);
    double s = (double)(t_now_ms() - t0) / 1000;
    printf("%-8s %6.0f MB/s\n", impl_name[impl == VHPC_SHA256_HW], (double)len * rounds / s / 1e6);
}

static void skip_without_hw(void)
{
    if (!vhpc__sha256_hw_supported())
        T_SKIP("this CPU has no SHA extensions: only the portable code runs here");
}

static void test_fips_portable(void)
{
    fips_vectors(VHPC_SHA256_SOFT);
}

static void test_fips_hardware(void)
{
    skip_without_hw();
    fips_vectors(VHPC_SHA256_HW);
}

/* Random inputs: every length to 1100 (each padding case, one to 17
 * blocks), then large ones; whole and in pieces of varied sizes; the two
 * implementations agree.  Then the speed of each. */
static void test_hardware_agrees(void)
{
    skip_without_hw();
    size_t max = (4 << 20) + 77;
    unsigned char *buf = malloc(max);
    T_ASSERT(buf, "malloc");
    t_fill(buf, max, 42, 0);
    size_t lens[1200], nl = 0;
    for (size_t l = 0; l <= 1100; l++)
        lens[nl++] = l;
    size_t big[] = {4095, 4096, 4097, 65535, 65536, 65599, 1 << 20, (1 << 20) + 1, max};
    for (size_t i = 0; i < sizeof(big) / sizeof(*big); i++)
        lens[nl++] = big[i];
    for (size_t i = 0; i < nl; i++) {
        char a[65], b[65], c[65];
        size_t off = i % 7; /* unaligned starts too */
        size_t len = lens[i] + off > max ? lens[i] - off : lens[i];
        hash(VHPC_SHA256_SOFT, buf + off, len, 0, a);
        hash(VHPC_SHA256_HW, buf + off, len, 0, b);
        hash(VHPC_SHA256_HW, buf + off, len, 1 + i % 200, c);
        T_ASSERT(!strcmp(a, b), "length %zu: portable %s, hardware %s", len, a, b);
        T_ASSERT(!strcmp(a, c), "length %zu in pieces: portable %s, hardware %s", len, a, c);
    }
    printf("portable and hardware agree on %zu inputs\n", nl);
    report_speed(VHPC_SHA256_SOFT, buf, max);
    report_speed(VHPC_SHA256_HW, buf, max);
    vhpc__sha256_select(VHPC_SHA256_AUTO);
    free(buf);
}

static const struct t_case cases[] = {
    {"fips_portable", test_fips_portable, 30},
    {"fips_hardware", test_fips_hardware, 30},
    {"hardware_agrees", test_hardware_agrees, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
