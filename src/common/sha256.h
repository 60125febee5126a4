/*
 * sha256.h - SHA-256 and HMAC-SHA256; see sha256.c.
 */
#ifndef VHPC_SHA256_H
#define VHPC_SHA256_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SHA-256 (FIPS 180-4), streaming. */
struct vhpc_sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    unsigned char block[64];
    size_t used;
};
void vhpc_sha256_init(struct vhpc_sha256 *s);
void vhpc_sha256_update(struct vhpc_sha256 *s, const void *data, size_t len);
/* Finish: the 32-byte digest, or 64 lowercase hex digits and a NUL. */
void vhpc_sha256_final(struct vhpc_sha256 *s, uint8_t out[32]);
void vhpc_sha256_hex(struct vhpc_sha256 *s, char hex[65]);
/* The SHA-256 of a file's contents. */
int vhpc_sha256_file(const char *path, char hex[65], vhpc_err_t *err);

/* HMAC-SHA256 of the concatenation of `parts` under `key`. */
struct vhpc_iov {
    const void *base;
    size_t len;
};
void vhpc_hmac_sha256(const uint8_t *key, size_t key_len, const struct vhpc_iov *parts, int nparts,
                      uint8_t out[32]);
/* Compare in time independent of where the bytes differ (for MACs). */
bool vhpc_mem_equal(const void *a, const void *b, size_t len);

#endif
