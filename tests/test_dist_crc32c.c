/*
 * test_dist_crc32c.c - CRC-32C, the chunk checksum of image transfers: the
 * check value and RFC 3720's test patterns, then the SSE4.2 code and the
 * table code must agree on random inputs of every length to 300 bytes and
 * some large ones, at unaligned starts, whole and continued in pieces; a
 * flipped bit always changes it.  Prints the speed (not asserted).
 */
#include "crc32c.h"
#include "testutil.h"

#include <string.h>

/* The check value and RFC 3720's patterns, on the fast and table code. */
static void test_check_values(void)
{
    unsigned char b[48];
    T_ASSERT(vhpc_crc32c(0, "123456789", 9) == 0xE3069283u, "check value: %08x",
             vhpc_crc32c(0, "123456789", 9));
    T_ASSERT(vhpc__crc32c_soft(0, "123456789", 9) == 0xE3069283u, "check value (table)");
    /* RFC 3720 B.4: 32 bytes of zeros, of ones, increasing, decreasing. */
    memset(b, 0, 32);
    T_ASSERT(vhpc_crc32c(0, b, 32) == 0x8A9136AAu, "32 zeros: %08x", vhpc_crc32c(0, b, 32));
    memset(b, 0xff, 32);
    T_ASSERT(vhpc_crc32c(0, b, 32) == 0x62A8AB43u, "32 x 0xff: %08x", vhpc_crc32c(0, b, 32));
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    T_ASSERT(vhpc_crc32c(0, b, 32) == 0x46DD794Eu, "0..31: %08x", vhpc_crc32c(0, b, 32));
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    T_ASSERT(vhpc_crc32c(0, b, 32) == 0x113FDB5Cu, "31..0: %08x", vhpc_crc32c(0, b, 32));
}

/* The fast code agrees with the table code, continues in pieces, and
 * notices a flipped bit; then its speed (reported, not asserted). */
static void test_fast_agrees(void)
{
    printf("SSE4.2 crc32: %s\n", vhpc_crc32c_hw() ? "yes" : "no (the table code runs)");
    size_t max = (2 << 20) + 13;
    unsigned char *buf = malloc(max);
    T_ASSERT(buf, "malloc");
    t_fill(buf, max, 7, 0);
    size_t lens[320], nl = 0;
    for (size_t l = 0; l <= 300; l++)
        lens[nl++] = l;
    size_t big[] = {4095, 4096, 65537, 1 << 20, max - 7};
    for (size_t i = 0; i < sizeof(big) / sizeof(*big); i++)
        lens[nl++] = big[i];
    for (size_t i = 0; i < nl; i++) {
        size_t off = i % 7, len = lens[i];
        uint32_t a = vhpc__crc32c_soft(0, buf + off, len), h = vhpc_crc32c(0, buf + off, len);
        T_ASSERT(a == h, "length %zu at +%zu: table %08x, fast %08x", len, off, a, h);
        size_t cut = len / 3;
        uint32_t c = vhpc_crc32c(vhpc_crc32c(0, buf + off, cut), buf + off + cut, len - cut);
        T_ASSERT(c == a, "length %zu continued after %zu bytes: %08x, whole %08x", len, cut, c, a);
        if (len) {
            size_t bit = (i * 131) % (len * 8);
            buf[off + bit / 8] ^= (unsigned char)(1u << (bit % 8));
            T_ASSERT(vhpc_crc32c(0, buf + off, len) != a, "length %zu: bit %zu flipped, same crc",
                     len, bit);
            buf[off + bit / 8] ^= (unsigned char)(1u << (bit % 8));
        }
    }
    printf("table and fast code agree on %zu inputs\n", nl);

    uint64_t t0 = t_now_ms();
    int rounds = 0;
    volatile uint32_t sink = 0;
    do {
        sink ^= vhpc_crc32c(0, buf, max);
        rounds++;
    } while (t_now_ms() - t0 < 200);
    printf("crc32c %6.0f MB/s\n", (double)max * rounds / ((double)(t_now_ms() - t0) / 1000) / 1e6);
    free(buf);
}

static const struct t_case cases[] = {
    {"check_values", test_check_values, 10},
    {"fast_agrees", test_fast_agrees, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
