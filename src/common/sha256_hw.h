/*
 * sha256_hw.h - SHA-256 with the x86 SHA extensions (SHA-NI), and which
 * implementation vhpc_sha256_update (sha256.c) uses.
 *
 * The portable code in sha256.c does about 300 MB/s here; the SHA extensions
 * about 1.8 GB/s.  That matters for image transfers, where every byte is
 * hashed on every node it passes (dist/recv.c, dist/cache.c).  The choice is made once, at the first hash:
 * the hardware path when the CPU has SHA-NI and SSE4.1, unless
 * $VHPC_SHA256=soft asks for the portable one.
 */
#ifndef VHPC_SHA256_HW_H
#define VHPC_SHA256_HW_H

#include <stddef.h>
#include <stdint.h>

enum { VHPC_SHA256_AUTO, VHPC_SHA256_SOFT, VHPC_SHA256_HW };

/* The round constants (sha256.c), for both implementations. */
extern const uint32_t vhpc__sha256_k[64];

/* 1 if this CPU can run vhpc__sha256_hw_blocks. */
int vhpc__sha256_hw_supported(void);
/* Compress n 64-byte blocks at p into the state h (FIPS 180-4 order:
 * h[0] = a ... h[7] = h).  Only when vhpc__sha256_hw_supported(). */
void vhpc__sha256_hw_blocks(uint32_t h[8], const unsigned char *p, size_t n);
/* Pick the implementation (AUTO: as described above; HW falls back to SOFT
 * when unsupported) and return the one now in effect (SOFT or HW).  For
 * tests and benchmarks; not thread-safe against concurrent hashing. */
int vhpc__sha256_select(int which);
/* The implementation in effect (SOFT or HW), deciding it on first use. */
int vhpc__sha256_current(void);

#endif
