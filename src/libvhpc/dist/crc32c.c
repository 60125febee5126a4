/*
 * crc32c.c - CRC-32C: the SSE4.2 crc32 instruction when the CPU has it,
 * else a byte-wise table (reflected polynomial 0x82F63B78).
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

static uint32_t table[256];
static int use_hw;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_soft(uint32_t c, const unsigned char *p, size_t n)
{
    while (n--)
        c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const unsigned char *p,
                                                         size_t n)
{
    uint64_t c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
    }
    c = (uint32_t)c64;
    for (; n; n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

uint32_t vhpc_crc32c(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&once, init);
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (use_hw)
        return ~crc_hw(c, p, n);
#endif
    return ~crc_soft(c, p, n);
}

uint32_t vhpc__crc32c_soft(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&once, init);
    return ~crc_soft(~crc, p, n);
}

int vhpc_crc32c_hw(void)
{
    pthread_once(&once, init);
    return use_hw;
}
