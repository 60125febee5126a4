/*
 * fuzz_node.h - what the two distribution harnesses (fuzz_dist: a node
 * seen by its peers; fuzz_dist_client: a pusher and puller seen by a node)
 * both set up: a private network namespace with only loopback, and a store
 * holding one small image, "img".
 */
#ifndef VHPC_FUZZ_NODE_H
#define VHPC_FUZZ_NODE_H

#include "fs.h"
#include "vhpc/store.h"

#include <errno.h>
#include <jansson.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void fuzz_die(const char *who, const char *what, const char *why)
{
    fprintf(stderr, "%s: %s: %s\n", who, what, why);
    exit(1);
}

/* rm -rf, saying so when something is left. */
static void fuzz_rm_tree(const char *who, const char *dir)
{
    vhpc_err_t err = {0};
    if (vhpc_rm_tree(dir, &err) < 0)
        fprintf(stderr, "%s: %s\n", who, err.msg);
}

/* A network namespace of this process's own, loopback up, no SIGPIPE:
 * nothing the harness connects to can be anything but itself.  Without
 * CAP_SYS_ADMIN: exit 77 (skipped). */
static void fuzz_private_net(const char *who)
{
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "%s: needs a private network namespace (root): %s; skipped\n", who,
                strerror(errno));
        exit(77);
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        fuzz_die(who, "lo", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        fuzz_die(who, "bringing lo up", strerror(errno));
    close(s);
    signal(SIGPIPE, SIG_IGN);
}

/* A blob of `len` bytes of `c`, recorded in blobs under `role`. */
static void fuzz_add_blob(const char *who, struct vhpc_store *st, const char *dir, const char *role,
                          int c, size_t len, json_t *blobs)
{
    char path[160], digest[65];
    uint64_t size;
    vhpc_err_t err = {0};
    snprintf(path, sizeof(path), "%s/%s", dir, role);
    FILE *f = fopen(path, "wb");
    if (!f)
        fuzz_die(who, path, strerror(errno));
    for (size_t i = 0; i < len; i++)
        fputc(c, f);
    fclose(f);
    if (vhpc_store_add_blob(st, path, 0, digest, &size, &err) < 0)
        fuzz_die(who, "adding a blob", err.msg);
    json_object_set_new(blobs, role,
                        json_pack("{s:s, s:I}", "digest", digest, "size", (json_int_t)size));
    unlink(path);
}

/* A fresh store under root (its cache budget `budget` bytes, 0: none)
 * holding one minimal image tagged "img" (a 5000-byte kernel, a 9000-byte
 * initrd). */
static struct vhpc_store *fuzz_store_with_img(const char *who, const char *root, uint64_t budget)
{
    struct vhpc_store *st;
    vhpc_err_t err = {0};
    fuzz_rm_tree(who, root);
    if (vhpc_store_open(root, &st, &err) < 0 ||
        (budget && vhpc_store_set_budget(st, budget, &err) < 0))
        fuzz_die(who, "store", err.msg);
    json_t *m = json_pack("{s:i, s:s, s:s, s:s, s:s, s:{}, s:[], s:n}", "schema", 1, "kind",
                          "minimal", "os", "debian-12", "arch", "x86_64", "kernel",
                          "6.1.0-fuzz-amd64", "packages", "libs", "parent");
    json_t *blobs = json_object();
    fuzz_add_blob(who, st, root, "kernel", 'k', 5000, blobs);
    fuzz_add_blob(who, st, root, "initrd", 'i', 9000, blobs);
    json_object_set_new(m, "blobs", blobs);
    json_object_set_new(m, "size", json_integer(14000));
    char digest[65];
    if (vhpc_store_put_manifest(st, m, digest, &err) < 0 ||
        vhpc_store_tag(st, "img", 0, digest, NULL, &err) < 0)
        fuzz_die(who, "image", err.msg);
    json_decref(m);
    return st;
}

#endif
