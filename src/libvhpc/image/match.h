/*
 * match.h - choosing a stored image by requirements (the ICS'06 image
 * manager's matching step).
 *
 * The requirements' syntax and the ranking are in vhpc/image.h.
 */
#ifndef VHPC_MATCH_H
#define VHPC_MATCH_H

#include "error.h"
#include "vhpc/image.h" /* struct vhpc_req, vhpc_req_parse */
#include "vhpc/store.h"

#include <jansson.h>
#include <stddef.h>

/* Does the manifest meet r?  1 yes, 0 no; why gets a short explanation
 * either way ("openmpi 4.1.4-3 (source of openmpi-bin) >= 4.1", "no
 * package or source package 'fftw'"). */
int vhpc_req_check(const struct vhpc_req *r, json_t *manifest, char *why, size_t len);

/* Check every named image of the store (each digest once, under its
 * newest ref).  On return *cands (free it) holds them, best first: those
 * meeting everything, smallest then newest, then the rest by how much they
 * miss.  *best is 0 when cands[0] meets everything, -1 otherwise. */
int vhpc_match(const struct vhpc_store *st, const struct vhpc_req *reqs, size_t nreqs,
               struct vhpc_candidate **cands, size_t *ncands, int *best, vhpc_err_t *err);

#endif
