/*
 * fuzz_store.c - what the image store reads back from disk (store.c,
 * image.c, match.c): refs.json, manifests (also those received from other
 * nodes) and the budget file, in a temporary store.  Input: refs.json, NUL,
 * a manifest, NUL, a reference to resolve, NUL, the budget file.  The
 * manifest is stored under its sha256, and "@MANIFEST@" in refs.json stands
 * for that digest (the fuzzer cannot compute it).
 */
#include "cpio.h"
#include "fs.h"
#include "fuzz_util.h"
#include "image.h"
#include "match.h"
#include "vhpc/store.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[96];
static struct vhpc_store *st;

static void cleanup(void)
{
    vhpc_err_t err = {0};
    vhpc_store_close(st);
    if (vhpc_rm_tree(root, &err) < 0)
        fprintf(stderr, "fuzz_store: %s\n", err.msg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vhpc_err_t err = {0};
    snprintf(root, sizeof(root), "%s/fuzz_store.%d", fuzz_tmpdir(), (int)getpid());
    if (vhpc_rm_tree(root, &err) < 0)
        fprintf(stderr, "fuzz_store: %s\n", err.msg);
    setenv("VHPC_HOME", root, 1);
    if (vhpc_store_open(root, &st, &err) < 0) {
        fprintf(stderr, "fuzz_store: %s\n", err.msg);
        exit(1);
    }
    atexit(cleanup);
    return 0;
}

static void put(const char *name, const char *text, size_t len)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", vhpc_store_dir(st), name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
}

/* The next NUL-terminated part of the input (the last runs to its end). */
static char *part(const uint8_t **data, size_t *size, size_t *len)
{
    const uint8_t *z = memchr(*data, 0, *size);
    size_t n = z ? (size_t)(z - *data) : *size;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, *data, n);
        s[n] = 0;
    }
    *len = n;
    *data += z ? n + 1 : n;
    *size -= z ? n + 1 : n;
    return s;
}

static int count_ref(const struct vhpc_ref *r, void *arg)
{
    ++*(int *)arg;
    return 0;
}

static int count_blob(const char *role, const char *digest, uint64_t size, void *arg)
{
    ++*(int *)arg;
    return strlen(role) + strlen(digest) == 0;
}

static int count_image(const struct vhpc_image *img, void *arg)
{
    ++*(int *)arg;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t rlen, mlen, qlen, blen;
    char *refs = part(&data, &size, &rlen), *man = part(&data, &size, &mlen);
    char *query = part(&data, &size, &qlen), *budget = part(&data, &size, &blen);
    vhpc_err_t err = {0};
    int n = 0;
    if (!refs || !man || !query || !budget)
        goto out;

    /* The manifest, under its digest. */
    struct vhpc_sha256 sha;
    char digest[65], name[80];
    vhpc_sha256_init(&sha);
    vhpc_sha256_update(&sha, man, mlen);
    vhpc_sha256_hex(&sha, digest);
    snprintf(name, sizeof(name), "images/%s.json", digest);
    put(name, man, mlen);
    /* refs.json, with the placeholder replaced. */
    char *fixed = malloc(rlen * 7 + 1), *o = fixed; /* 10 bytes become 64 */
    if (!fixed)
        goto out;
    for (size_t i = 0; i < rlen;) {
        if (rlen - i >= 10 && memcmp(refs + i, "@MANIFEST@", 10) == 0) {
            memcpy(o, digest, 64);
            o += 64;
            i += 10;
        } else {
            *o++ = refs[i++];
        }
    }
    put("refs.json", fixed, (size_t)(o - fixed));
    free(fixed);
    put("budget", budget, blen);

    vhpc_store_refs(st, count_ref, &n, &err);
    struct vhpc_ref ref;
    vhpc_store_resolve(st, query, &ref, &err);
    vhpc_store_resolve(st, digest, &ref, &err);
    json_t *m = NULL;
    if (vhpc_store_get_manifest(st, digest, &m, &err) == 0) {
        vhpc_manifest_blobs(m, count_blob, &n, &err);
        json_decref(m);
    }
    char found[65];
    vhpc_store_find_inputs(st, digest, found);
    vhpc_image_list(count_image, &n, &err);
    struct vhpc_image img;
    vhpc_image_find(query, &img, &err);
    struct vhpc_req reqs[2];
    if (vhpc_req_parse("os>=debian-11", &reqs[0], &err) == 0 &&
        vhpc_req_parse("openmpi>=4.1", &reqs[1], &err) == 0) {
        struct vhpc_candidate *cands = NULL;
        size_t nc = 0;
        int best;
        if (vhpc_match(st, reqs, 2, &cands, &nc, &best, &err) == 0)
            free(cands);
    }
    (void)vhpc_store_budget(st);
    /* Read-modify-write of whatever refs.json holds. */
    vhpc_store_tag(st, "fuzz", 0, digest, &ref, &err);
    int removed;
    vhpc_store_untag(st, query, &removed, &err);
    /* Next input starts from an empty store. */
    char mpath[PATH_MAX];
    snprintf(mpath, sizeof(mpath), "%s/images/%s.json", vhpc_store_dir(st), digest);
    unlink(mpath);
out:
    free(refs);
    free(man);
    free(query);
    free(budget);
    return 0;
}
