/*
 * store_int.h - what the store's three files share and nothing outside the
 * store sees: the handle, where a manifest lives, the index's mode and the
 * index itself (refs.c), the digest sets gc.c keeps.  store.h is the
 * store's interface; this header sits beside store.c, refs.c and gc.c and
 * is on no other include path.
 */
#ifndef VHPC_STORE_INT_H
#define VHPC_STORE_INT_H

#include "vhpc/store.h"

#include <jansson.h>
#include <limits.h>
#include <stddef.h>

struct vhpc_store {
    char dir[PATH_MAX - 128]; /* <root>/store */
    int lock_fd;
    int locked;
    int private_; /* a user's own store: directories 0700, index 0600 */
};

/* <root>/store/images/<digest>.json (store.c). */
void vhpc__store_manifest_path(const struct vhpc_store *st, const char *digest, char *p,
                               size_t len);
/* refs.json, budget: the system store's index is readable (users resolve
 * what root published); a user's own is not (store.c). */
unsigned vhpc__store_index_mode(const struct vhpc_store *st);

/* A set of digests (small: the images of one store), store.c.  Free s->d. */
struct vhpc__digests {
    char (*d)[65];
    size_t n, cap;
};
int vhpc__digests_add(struct vhpc__digests *s, const char *d);
int vhpc__digests_has(const struct vhpc__digests *s, const char *d);

/* vhpc_store_untag, also collecting the digests that lost a ref into
 * affected (may be NULL), refs.c. */
int vhpc__store_untag(struct vhpc_store *st, const char *ref, int *removed,
                      struct vhpc__digests *affected, vhpc_err_t *err);
/* Remove every ref to digest from the index (the lock is held), refs.c. */
int vhpc__store_drop_refs(struct vhpc_store *st, const char *digest, vhpc_err_t *err);

#endif
