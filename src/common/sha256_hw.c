/*
 * sha256_hw.c - the SHA-256 compression function on the x86 SHA extensions
 * (see sha256_hw.h), written from the instruction definitions in Intel's
 * Software Developer's Manual:
 *
 *   SHA256RNDS2 (_mm_sha256rnds2_epu32(cdgh, abef, wk)): two rounds.  The
 *     state is split over two registers, dwords high to low {A,B,E,F} and
 *     {C,D,G,H}; wk holds W[t]+K[t] and W[t+1]+K[t+1] in its low two dwords.
 *     It returns the new {A,B,E,F}; the new {C,D,G,H} is the old {A,B,E,F}.
 *   SHA256MSG1 (_mm_sha256msg1_epu32(w0, w4)): W[t+i] + s0(W[t+i+1]), i=0..3,
 *     from W[t..t+3] and W[t+4..t+7].
 *   SHA256MSG2 (_mm_sha256msg2_epu32(x, w12)): finishes W[t+16..t+19] from
 *     x = MSG1's result + W[t+9..t+12] and W[t+12..t+15], adding s1 of the
 *     two words before each (the last two computed by the instruction itself).
 *
 * Registers hold dwords little-endian, so "high to low" above is dword 3 to
 * dword 0.  The message words are big-endian in memory: each dword's bytes
 * are reversed with PSHUFB as they are loaded.
 */
#include "sha256_hw.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

int vhpc__sha256_hw_supported(void)
{
    /* cpuid rather than __builtin_cpu_supports("sha"), which clang 14 (the
     * fuzz build's compiler) does not know: leaf 1 ECX bit 19 is SSE4.1,
     * leaf 7 EBX bit 29 the SHA extensions. */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_SHA) != 0;
}

__attribute__((target("sha,sse4.1"))) void vhpc__sha256_hw_blocks(uint32_t h[8],
                                                                  const unsigned char *p, size_t n)
{
    /* Byte order: reverse the 4 bytes of each dword. */
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);

    /* h[0..3] = {A,B,C,D} and h[4..7] = {E,F,G,H} (dword 0 first) into
     * abef = {A,B,E,F} and cdgh = {C,D,G,H} (dword 3 first). */
    __m128i t = _mm_loadu_si128((const __m128i *)&h[0]); /* D C B A */
    __m128i u = _mm_loadu_si128((const __m128i *)&h[4]); /* H G F E */
    t = _mm_shuffle_epi32(t, 0xB1);                      /* C D A B */
    u = _mm_shuffle_epi32(u, 0x1B);                      /* E F G H */
    __m128i abef = _mm_alignr_epi8(t, u, 8);             /* A B E F */
    __m128i cdgh = _mm_blend_epi16(u, t, 0xF0);          /* C D G H */

    for (; n > 0; n--, p += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
            /* 16 groups of 4 rounds; w[g % 4] holds W[4g..4g+3] when group g runs. */
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            if (g >= 4) {
                /* W[4g+i] = s1(W[4g+i-2]) + W[4g+i-7] + s0(W[4g+i-15]) + W[4g+i-16] */
                __m128i x = _mm_sha256msg1_epu32(w[g % 4], w[(g + 1) % 4]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(g + 3) % 4], w[(g + 2) % 4], 4));
                w[g % 4] = _mm_sha256msg2_epu32(x, w[(g + 3) % 4]);
            }
            __m128i wk =
                _mm_add_epi32(w[g % 4], _mm_load_si128((const __m128i *)&vhpc__sha256_k[4 * g]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk); /* now the new {A,B,E,F} */
            wk = _mm_shuffle_epi32(wk, 0x0E);             /* the upper two words */
            abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);
            /* After two calls the registers are back in their roles:
             * abef holds {A,B,E,F}, cdgh the previous {A,B,E,F} = {C,D,G,H}. */
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }

    t = _mm_shuffle_epi32(abef, 0x1B);                               /* F E B A */
    u = _mm_shuffle_epi32(cdgh, 0xB1);                               /* D C H G */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, u, 0xF0)); /* D C B A */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(u, t, 8));    /* H G F E */
}

#else /* not x86: the portable code only */

int vhpc__sha256_hw_supported(void)
{
    return 0;
}

void vhpc__sha256_hw_blocks(uint32_t h[8], const unsigned char *p, size_t n)
{
    (void)h, (void)p, (void)n;
    abort();
}

#endif

static int current; /* 0: not decided yet */

int vhpc__sha256_select(int which)
{
    if (which == VHPC_SHA256_AUTO) {
        const char *e = getenv("VHPC_SHA256");
        which = e && !strcmp(e, "soft") ? VHPC_SHA256_SOFT : VHPC_SHA256_HW;
    }
    if (which == VHPC_SHA256_HW && !vhpc__sha256_hw_supported())
        which = VHPC_SHA256_SOFT;
    current = which;
    return current;
}

int vhpc__sha256_current(void)
{
    if (!current)
        vhpc__sha256_select(VHPC_SHA256_AUTO);
    return current;
}
