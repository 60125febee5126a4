/*
 * match.h - choosing a stored image by requirements (the ICS'06 image
 * manager's matching step).
 *
 * A requirement is KEY [OP VALUE], OP one of = == != >= <= > < >> << (> and
 * >> mean the same, strictly greater, as do < and <<; = and == are equal):
 *   os=debian-12          the image's OS (ID-VERSION_ID from os-release);
 *                         with an order operator the IDs must be equal and
 *                         the versions compare ("os>=debian-12")
 *   kernel>=6.1           the guest kernel release ("6.1.0-56-cloud-amd64"
 *                         compares as 6.1.0-56; = also accepts the full
 *                         release string)
 *   lib:libfftw3.so.3     a shared library by soname in the image;
 *                         "lib:libfftw3" accepts any libfftw3.so*
 *   openmpi>=4.1          a package: a binary package of that name, else a
 *                         source package (openmpi-bin comes from openmpi),
 *                         whose version satisfies the constraint; no OP
 *                         means installed in any version
 * Versions compare by Debian's rules (debver.h): 1.10 > 1.9, epochs, ~.
 *
 * The best image meets every requirement; among those the smallest wins,
 * then the newest.
 */
#ifndef VHPC_MATCH_H
#define VHPC_MATCH_H

#include "error.h"
#include "store.h"

#include <jansson.h>
#include <stddef.h>

enum vhpc_req_kind { REQ_OS, REQ_KERNEL, REQ_LIB, REQ_PKG };
enum vhpc_req_op { OP_ANY, OP_EQ, OP_NE, OP_GE, OP_LE, OP_GT, OP_LT };

struct vhpc_req {
    enum vhpc_req_kind kind;
    enum vhpc_req_op op;
    char key[128]; /* package, soname, or "os" / "kernel" */
    char value[128];
    char text[300]; /* as written, for messages */
};

/* Parse one requirement; -EINVAL with a message that shows the syntax. */
int vhpc_req_parse(const char *s, struct vhpc_req *r, vhpc_err_t *err);

/* Does the manifest meet r?  1 yes, 0 no; why gets a short explanation
 * either way ("openmpi 4.1.4-3 (source of openmpi-bin) >= 4.1", "no
 * package or source package 'fftw'"). */
int vhpc_req_check(const struct vhpc_req *r, json_t *manifest, char *why, size_t len);

struct vhpc_candidate {
    struct vhpc_ref ref; /* the image's newest ref */
    char kind[16];
    uint64_t size;
    int unmet;         /* requirements not met */
    char report[2048]; /* one line per unmet requirement ("  - ..."), or the met ones */
};

/* Check every named image of the store (each digest once, under its
 * newest ref).  On return *cands (free it) holds them, best first: those
 * meeting everything, smallest then newest, then the rest by how much they
 * miss.  *best is 0 when cands[0] meets everything, -1 otherwise. */
int vhpc_match(const struct vhpc_store *st, const struct vhpc_req *reqs, size_t nreqs,
               struct vhpc_candidate **cands, size_t *ncands, int *best, vhpc_err_t *err);

#endif
