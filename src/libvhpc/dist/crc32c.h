/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of each chunk in image
 * transfers (proto.h).
 *
 * A chunk's checksum guards the link, not the content: every blob is also
 * SHA-256 hashed as it arrives and compared with its name before it enters
 * the store.  CRC-32C with the SSE4.2 instruction costs a few percent of a
 * SHA-256 pass, which is what lets a node hash each byte once.
 */
#ifndef VHPC_CRC32C_H
#define VHPC_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue crc (0 to start) over n bytes at p; returns the new value. */
uint32_t vhpc_crc32c(uint32_t crc, const void *p, size_t n);
/* 1 if the SSE4.2 instruction is used (else a table). */
int vhpc_crc32c_hw(void);
/* The table code alone (for tests: the two must agree). */
uint32_t vhpc__crc32c_soft(uint32_t crc, const void *p, size_t n);

#endif
