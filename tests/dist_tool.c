/*
 * dist_tool.c - what the image distribution tests (tests/dist/) and
 * bench/run_dist.sh need besides the vhpc binary:
 *
 * Requests are signed with munge ($VHPC_MUNGE_SOCKET; $DIST_TOOL_CRED:
 * send_req).
 *
 *   dist_tool mkimage ROOT NAME SIZE [SEED]  a synthetic image in the store
 *       at ROOT: kernel, initrd and rootfs blobs of pseudo-random bytes
 *       (5 %, 15 %, 80 % of SIZE), tagged NAME; prints its digest
 *   dist_tool verify ROOT REF   re-hash every blob of image REF; prints the
 *       digest, exits 1 if something is missing or damaged
 *   dist_tool blob ROOT REF ROLE    the path of image REF's blob ROLE
 *   dist_tool query HOST:PORT REF   ask a node "have REF?"; prints the answer
 *   dist_tool garbage HOST:PORT     talk nonsense to a node in many ways
 *       (random bytes, bad magic, huge lengths, half frames, bad JSON,
 *       frames out of order, a push of a manifest that lies)
 *   dist_tool liar HOST:PORT ROOT REF   push image REF of the store at ROOT
 *       to a node, with one byte of one chunk changed and that chunk's
 *       CRC-32C computed over the changed bytes (what a damaged sender's
 *       copy looks like); exits 0 if the node refused the image, 1 if it
 *       reported it received
 *   dist_tool fakenode HOST:PORT ROOT REF NAME VERSION  a lying node: answer
 *       one PULL (whatever it asks for) with image REF of the store at ROOT
 *       under the name NAME:VERSION, and serve its chunks; exits after
 *       one connection (or 30 s without one)
 *   dist_tool idle HOST:PORT N MS   open N connections that say nothing, keep
 *       them MS milliseconds; prints how many the node closed meanwhile
 *   dist_tool claim HOST:PORT SIZE [CHUNK [SEND [HOLD_MS]]]  push a made-up
 *       image of one blob that claims SIZE bytes (a sender that lies about
 *       sizes), chunks of CHUNK bytes (default 4K); if the node accepts it,
 *       send SEND bytes of it (default 3 chunks), then keep the connection
 *       HOLD_MS (default 0) before hanging up.  Prints the node's answer;
 *       exits 0 if the node refused the PUSH, 3 if it accepted it
 */
#include "cpio.h"
#include "crc32c.h"
#include "vhpc/dist.h"
#include "proto.h"
#include "output.h"
#include "vhpc/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what, const vhpc_err_t *err)
{
    fprintf(stderr, "dist_tool: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

static uint64_t rng(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int mkimage(const char *root, const char *name, const char *size_s, uint64_t seed)
{
    uint64_t size;
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    if (vhpc_parse_bytes(size_s, &size) < 0 || size < 100)
        die("SIZE", NULL);
    if (vhpc_store_open(root, &st, &err) < 0)
        die("opening the store", &err);
    static const char *const roles[] = {"kernel", "initrd", "rootfs"};
    const uint64_t part[] = {size * 5 / 100, size * 15 / 100,
                             size - size * 5 / 100 - size * 15 / 100};
    json_t *blobs = json_object();
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int i = 0; i < 3; i++) {
        char tmp[4200], digest[65];
        snprintf(tmp, sizeof(tmp), "%s/store/tmp/mkimage-%d-XXXXXX", root, i);
        int fd = mkstemp(tmp);
        if (fd < 0)
            die(tmp, NULL);
        static uint64_t buf[1 << 14];
        for (uint64_t left = part[i]; left > 0;) {
            size_t n = left < sizeof(buf) ? (size_t)left : sizeof(buf);
            for (size_t j = 0; j < (n + 7) / 8; j++)
                buf[j] = rng(&s);
            if (write(fd, buf, n) != (ssize_t)n)
                die("writing", NULL);
            left -= n;
        }
        close(fd);
        uint64_t got;
        if (vhpc_store_add_blob(st, tmp, 1, digest, &got, &err) < 0)
            die("adding a blob", &err);
        json_object_set_new(blobs, roles[i],
                            json_pack("{s:s, s:I}", "digest", digest, "size", (json_int_t)got));
    }
    json_t *m =
        json_pack("{s:i, s:s, s:s, s:s, s:s, s:o, s:I, s:n, s:I}", "schema", 1, "kind", "minimal",
                  "os", "debian-12", "arch", "x86_64", "kernel", "synthetic", "blobs", blobs,
                  "size", (json_int_t)size, "parent", "seed", (json_int_t)seed);
    char digest[65];
    if (vhpc_store_put_manifest(st, m, digest, &err) < 0)
        die("storing the manifest", &err);
    json_decref(m);
    struct vhpc_ref ref;
    if (vhpc_store_tag(st, name, 0, digest, &ref, &err) < 0)
        die("tagging", &err);
    printf("%s\n", digest);
    vhpc_store_close(st);
    return 0;
}

static int verify_cb(const char *role, const char *digest, uint64_t size, void *arg)
{
    vhpc_err_t err = {0};
    (void)size;
    if (!vhpc_store_has_blob(arg, digest)) {
        fprintf(stderr, "dist_tool: the %s blob %.12s is missing\n", role, digest);
        return 1;
    }
    if (vhpc_store_verify_blob(arg, digest, &err) < 0) {
        fprintf(stderr, "dist_tool: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int verify(const char *root, const char *ref_s)
{
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_ref ref;
    json_t *m;
    if (vhpc_store_open(root, &st, &err) < 0 || vhpc_store_resolve(st, ref_s, &ref, &err) < 0 ||
        vhpc_store_get_manifest(st, ref.digest, &m, &err) < 0) {
        fprintf(stderr, "dist_tool: %s\n", err.msg);
        return 1;
    }
    int r = vhpc_manifest_blobs(m, verify_cb, st, &err);
    json_decref(m);
    vhpc_store_close(st);
    if (r)
        return 1;
    printf("%s\n", ref.digest);
    return 0;
}

struct blob_find {
    const char *role;
    char digest[65];
};

static int blob_cb(const char *role, const char *digest, uint64_t size, void *arg)
{
    struct blob_find *f = arg;
    (void)size;
    if (!strcmp(role, f->role))
        snprintf(f->digest, sizeof(f->digest), "%s", digest);
    return 0;
}

/* The path of image REF's blob ROLE. */
static int blob(const char *root, const char *ref_s, const char *role)
{
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_ref ref;
    struct blob_find f = {role, ""};
    json_t *m;
    if (vhpc_store_open(root, &st, &err) < 0 || vhpc_store_resolve(st, ref_s, &ref, &err) < 0 ||
        vhpc_store_get_manifest(st, ref.digest, &m, &err) < 0)
        die("blob", &err);
    vhpc_manifest_blobs(m, blob_cb, &f, &err);
    json_decref(m);
    if (!f.digest[0]) {
        fprintf(stderr, "dist_tool: no %s blob\n", role);
        return 1;
    }
    char p[4200];
    vhpc_store_blob_path(st, f.digest, p, sizeof(p));
    printf("%s\n", p);
    vhpc_store_close(st);
    return 0;
}

static int dial(const char *addr)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    vhpc_err_t err = {0};
    if (vhpc_dist_resolve(addr, &sa, &sl, &err) < 0)
        die("address", &err);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sl) < 0)
        die(addr, NULL);
    return fd;
}

static void frame(unsigned char *h, int type, uint32_t len, uint32_t magic)
{
    h[0] = (unsigned char)(magic >> 24), h[1] = (unsigned char)(magic >> 16);
    h[2] = (unsigned char)(magic >> 8), h[3] = (unsigned char)magic;
    h[4] = (unsigned char)type;
    h[5] = h[6] = h[7] = 0;
    h[8] = (unsigned char)(len >> 24), h[9] = (unsigned char)(len >> 16);
    h[10] = (unsigned char)(len >> 8), h[11] = (unsigned char)len;
}

static void send_frame(int fd, int type, const void *p, size_t len)
{
    unsigned char h[VHPC_DIST_HDR];
    frame(h, type, (uint32_t)len, VHPC_DIST_MAGIC);
    if (send(fd, h, sizeof(h), MSG_NOSIGNAL) < 0 || (len && send(fd, p, len, MSG_NOSIGNAL) < 0))
        return; /* the node may hang up on us: that is what we test */
}

/* Read one frame's payload into buf (NUL-terminated); its type, or -1. */
static int recv_frame(int fd, char *buf, size_t cap, int ms)
{
    unsigned char h[VHPC_DIST_HDR];
    size_t got = 0;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    while (got < sizeof(h)) {
        if (poll(&pf, 1, ms) <= 0)
            return -1;
        ssize_t n = recv(fd, h + got, sizeof(h) - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    uint32_t len = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
    if (len >= cap)
        return -1;
    for (got = 0; got < len;) {
        if (poll(&pf, 1, ms) <= 0)
            return -1;
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    buf[len] = 0;
    return h[4];
}

/* Send request `text` (JSON) to the node at addr on fd, signed with a
 * munge credential (dist.h) unless $DIST_TOOL_CRED says otherwise: "none"
 * sends it without one, "other" signs it for another request (the same
 * with "ref" changed), "replay" sends it twice, on fd and on a second
 * connection, with the same credential.  $DIST_TOOL_UID: the request says
 * it is on behalf of that uid (as a forwarding node's do). */
static void send_req(int fd, int type, const char *text, const char *addr)
{
    const char *mode = getenv("DIST_TOOL_CRED");
    json_t *j = json_loads(text, 0, NULL);
    struct sockaddr_storage sa;
    socklen_t sl;
    vhpc_err_t err = {0};
    char to[64];
    if (!j) {
        send_frame(fd, type, text, strlen(text));
        return;
    }
    if (vhpc_dist_resolve(addr, &sa, &sl, &err) < 0)
        die("address", &err);
    vhpc_dist_addr_str((struct sockaddr *)&sa, to, sizeof(to));
    if (getenv("DIST_TOOL_UID"))
        json_object_set_new(j, "uid", json_integer(atoi(getenv("DIST_TOOL_UID"))));
    if (!mode || strcmp(mode, "none") != 0) {
        json_t *signed_for = j;
        if (mode && !strcmp(mode, "other")) {
            signed_for = json_copy(j);
            json_object_set_new(signed_for, "ref", json_string("something-else"));
        }
        if (vhpc_dist_sign(signed_for, to, &err) < 0)
            die("signing", &err);
        if (signed_for != j) {
            json_object_set(j, "cred", json_object_get(signed_for, "cred"));
            json_decref(signed_for);
        }
    }
    char *out = json_dumps(j, JSON_COMPACT);
    send_frame(fd, type, out, strlen(out));
    if (mode && !strcmp(mode, "replay")) {
        char buf[4096];
        int t = recv_frame(fd, buf, sizeof(buf), 10000);
        printf("first: %d %s\n", t, t >= 0 ? buf : "");
        int fd2 = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd2 < 0 || connect(fd2, (struct sockaddr *)&sa, sl) < 0)
            die(addr, NULL);
        dup2(fd2, fd);
        close(fd2);
        send_frame(fd, type, out, strlen(out));
    }
    free(out);
    json_decref(j);
}

static int query(const char *addr, const char *ref)
{
    int fd = dial(addr);
    char req[1024], buf[65536];
    int n = snprintf(req, sizeof(req), "{\"ref\":\"%s\"}", ref);
    (void)n;
    send_req(fd, VHPC_DIST_QUERY, req, addr);
    int t = recv_frame(fd, buf, sizeof(buf), 10000);
    close(fd);
    if (t == VHPC_DIST_ERROR) {
        printf("ERROR %s\n", buf);
        return 1;
    }
    if (t != VHPC_DIST_HAVE) {
        fprintf(stderr, "dist_tool: no answer from %s\n", addr);
        return 1;
    }
    printf("%s\n", buf);
    return 0;
}

/* Each case on its own connection; the node must survive them all. */
static int garbage(const char *addr)
{
    uint64_t s = 12345;
    unsigned char h[VHPC_DIST_HDR], junk[4096];
    char buf[65536];
    int fd;

    /* random bytes */
    for (int i = 0; i < 20; i++) {
        fd = dial(addr);
        for (size_t j = 0; j < sizeof(junk); j++)
            junk[j] = (unsigned char)rng(&s);
        send(fd, junk, 1 + rng(&s) % sizeof(junk), MSG_NOSIGNAL);
        close(fd);
    }
    /* a wrong magic; an unknown type; a length over the limit */
    fd = dial(addr);
    frame(h, VHPC_DIST_QUERY, 2, 0xdeadbeef);
    send(fd, h, sizeof(h), MSG_NOSIGNAL);
    close(fd);
    fd = dial(addr);
    frame(h, 200, 2, VHPC_DIST_MAGIC);
    send(fd, h, sizeof(h), MSG_NOSIGNAL);
    close(fd);
    fd = dial(addr);
    frame(h, VHPC_DIST_PUSH, 0xffffffffu, VHPC_DIST_MAGIC);
    send(fd, h, sizeof(h), MSG_NOSIGNAL);
    close(fd);
    /* a chunk on a fresh connection, claiming 64 MiB, then a few bytes */
    fd = dial(addr);
    frame(h, VHPC_DIST_CHUNK, VHPC_DIST_MAX_CHUNK, VHPC_DIST_MAGIC);
    send(fd, h, sizeof(h), MSG_NOSIGNAL);
    send(fd, junk, 100, MSG_NOSIGNAL);
    close(fd);
    /* half a header, half a payload, then hang up */
    fd = dial(addr);
    send(fd, h, 5, MSG_NOSIGNAL);
    close(fd);
    fd = dial(addr);
    frame(h, VHPC_DIST_QUERY, 1000, VHPC_DIST_MAGIC);
    send(fd, h, sizeof(h), MSG_NOSIGNAL);
    send(fd, "{\"ref\":", 7, MSG_NOSIGNAL);
    close(fd);
    /* JSON that is not JSON, or not an object, or lacks fields */
    static const char *const bad[] = {"not json",      "[1,2,3]", "{}",
                                      "{\"ref\":5}",   "\"x\"",   "{\"ref\":\"../../etc\"}",
                                      "{\"ref\":\"\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        for (int type = VHPC_DIST_PUSH; type <= VHPC_DIST_HAVE; type++) {
            fd = dial(addr);
            send_frame(fd, type, bad[i], strlen(bad[i]));
            recv_frame(fd, buf, sizeof(buf), 200);
            close(fd);
        }
    /* a PUSH whose manifest does not hash to its digest, and one with a bad tree */
    const char *push = "{\"v\":3,\"digest\":\"0000000000000000000000000000000000000000000000000000"
                       "000000000000\",\"name\":\"x\",\"version\":1,\"chunk\":1048576,"
                       "\"children\":[]}";
    fd = dial(addr);
    send_req(fd, VHPC_DIST_PUSH, push, addr);
    send_frame(fd, VHPC_DIST_MANIFEST, "{\"blobs\":{}}", 12);
    int t = recv_frame(fd, buf, sizeof(buf), 5000);
    close(fd);
    if (t != VHPC_DIST_ERROR) {
        fprintf(stderr, "dist_tool: a lying manifest was not refused (got %d)\n", t);
        return 1;
    }
    const char *tree = "{\"v\":3,\"digest\":\"0000000000000000000000000000000000000000000000000000"
                       "000000000000\",\"name\":\"x\",\"version\":1,\"chunk\":1048576,"
                       "\"children\":[{\"i\":-1,\"addr\":7}]}";
    fd = dial(addr);
    send_req(fd, VHPC_DIST_PUSH, tree, addr);
    send_frame(fd, VHPC_DIST_MANIFEST, "{}", 2);
    t = recv_frame(fd, buf, sizeof(buf), 5000);
    close(fd);
    if (t != VHPC_DIST_ERROR) {
        fprintf(stderr, "dist_tool: a bad tree was not refused (got %d)\n", t);
        return 1;
    }
    /* many connections at once, left open for a moment */
    int many[300], nm = 0;
    for (; nm < 300; nm++) {
        many[nm] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_storage sa;
        socklen_t sl;
        vhpc_err_t err = {0};
        vhpc_dist_resolve(addr, &sa, &sl, &err);
        if (connect(many[nm], (struct sockaddr *)&sa, sl) < 0) {
            close(many[nm]);
            break;
        }
    }
    usleep(200000);
    for (int i = 0; i < nm; i++)
        close(many[i]);
    printf("garbage: done (%d connections at once)\n", nm);
    return 0;
}

struct liar_blob {
    char role[32], digest[65];
    uint64_t size;
};
struct liar_list {
    struct liar_blob b[16];
    size_t n;
};

static int liar_cb(const char *role, const char *digest, uint64_t size, void *arg)
{
    struct liar_list *l = arg;
    if (l->n == 16)
        return 1;
    struct liar_blob *b = &l->b[l->n++];
    snprintf(b->role, sizeof(b->role), "%s", role);
    snprintf(b->digest, sizeof(b->digest), "%s", digest);
    b->size = size;
    return 0;
}

static int liar_cmp(const void *x, const void *y)
{
    const struct liar_blob *a = x, *b = y;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    return strcmp(a->role, b->role);
}

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

/* Send every blob of l in chunks, in order; damage: change one byte of
 * one chunk (its CRC-32C computed over the changed bytes). */
static int send_blobs(int fd, struct vhpc_store *st, const struct liar_list *l, uint32_t chunk,
                      int damage)
{
    unsigned char *data = malloc(VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR + chunk);
    if (!data)
        return -1;
    int lied = !damage;
    for (size_t i = 0; i < l->n; i++) {
        char p[4200];
        vhpc_store_blob_path(st, l->b[i].digest, p, sizeof(p));
        int bfd = open(p, O_RDONLY | O_CLOEXEC);
        if (bfd < 0)
            die(p, NULL);
        for (uint64_t off = 0; off < l->b[i].size; off += chunk) {
            uint32_t len = l->b[i].size - off < chunk ? (uint32_t)(l->b[i].size - off) : chunk;
            unsigned char *d = data + VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR;
            if (pread(bfd, d, len, (off_t)off) != (ssize_t)len)
                die(p, NULL);
            if (!lied && (off > 0 || l->b[i].size <= chunk)) {
                d[len / 2] ^= 0x40; /* the damage, in the middle of a chunk */
                lied = 1;
            }
            frame(data, VHPC_DIST_CHUNK, VHPC_DIST_CHUNK_HDR + len, VHPC_DIST_MAGIC);
            put_be(data + VHPC_DIST_HDR, i, 4);
            put_be(data + VHPC_DIST_HDR + 4, vhpc_crc32c(0, d, len), 4);
            put_be(data + VHPC_DIST_HDR + 8, off, 8);
            size_t total = VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR + len;
            for (size_t done = 0; done < total;) {
                ssize_t w = send(fd, data + done, total - done, MSG_NOSIGNAL);
                if (w <= 0)
                    break; /* the node may hang up on us */
                done += (size_t)w;
            }
        }
        close(bfd);
    }
    free(data);
    return 0;
}

/* Push REF with one changed byte whose chunk checksum still matches. */
static int liar(const char *addr, const char *root, const char *ref_s)
{
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_ref ref;
    struct liar_list l = {.n = 0};
    char *man;
    size_t mlen;
    json_t *m;
    if (vhpc_store_open(root, &st, &err) < 0 || vhpc_store_resolve(st, ref_s, &ref, &err) < 0 ||
        vhpc_store_get_manifest_raw(st, ref.digest, &man, &mlen, &err) < 0 ||
        vhpc_store_get_manifest(st, ref.digest, &m, &err) < 0)
        die("liar", &err);
    vhpc_manifest_blobs(m, liar_cb, &l, &err);
    json_decref(m);
    qsort(l.b, l.n, sizeof(*l.b), liar_cmp);

    const uint32_t chunk = 1 << 20;
    int fd = dial(addr);
    char buf[65536];
    int n = snprintf(buf, sizeof(buf),
                     "{\"v\":%d,\"digest\":\"%s\",\"name\":\"%s\",\"version\":%d,\"chunk\":%u,"
                     "\"timeout_ms\":5000,\"seq\":false,\"self\":0,\"children\":[]}",
                     VHPC_DIST_VERSION, ref.digest, ref.name, ref.version, chunk);
    send_req(fd, VHPC_DIST_PUSH, buf, addr);
    (void)n;
    send_frame(fd, VHPC_DIST_MANIFEST, man, mlen);
    free(man);
    int t = recv_frame(fd, buf, sizeof(buf), 10000);
    if (t != VHPC_DIST_STATE) {
        fprintf(stderr, "dist_tool liar: no STATE from the node (got %d)\n", t);
        return 1;
    }
    if (send_blobs(fd, st, &l, chunk, 1) < 0)
        return 1;
    vhpc_store_close(st);
    /* Its answer: a REPORT (ok or not), an ERROR, or it hangs up. */
    for (;;) {
        t = recv_frame(fd, buf, sizeof(buf), 15000);
        if (t == VHPC_DIST_PROGRESS)
            continue;
        break;
    }
    close(fd);
    json_t *rep = t == VHPC_DIST_REPORT ? json_loads(buf, 0, NULL) : NULL, *node;
    size_t k;
    int took = 0;
    json_array_foreach(json_object_get(rep, "nodes"), k, node) took |=
        json_is_true(json_object_get(node, "ok"));
    json_decref(rep);
    if (took) {
        fprintf(stderr, "dist_tool liar: the node took the damaged image: %s\n", buf);
        return 1;
    }
    printf("liar: refused (%s)\n", t == VHPC_DIST_REPORT  ? buf
                                   : t == VHPC_DIST_ERROR ? buf
                                                          : "the node hung up");
    return 0;
}

static int fakenode(const char *addr, const char *root, const char *ref_s, const char *name,
                    int version)
{
    vhpc_err_t err = {0};
    struct vhpc_store *st;
    struct vhpc_ref ref;
    struct liar_list l = {.n = 0};
    char *man, buf[65536];
    size_t mlen;
    json_t *m;
    struct sockaddr_storage sa;
    socklen_t sl;
    if (vhpc_store_open(root, &st, &err) < 0 || vhpc_store_resolve(st, ref_s, &ref, &err) < 0 ||
        vhpc_store_get_manifest_raw(st, ref.digest, &man, &mlen, &err) < 0 ||
        vhpc_store_get_manifest(st, ref.digest, &m, &err) < 0 ||
        vhpc_dist_resolve(addr, &sa, &sl, &err) < 0)
        die("fakenode", &err);
    vhpc_manifest_blobs(m, liar_cb, &l, &err);
    json_decref(m);
    qsort(l.b, l.n, sizeof(*l.b), liar_cmp);
    int one = 1, lfd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sl) < 0 || listen(lfd, 4) < 0)
        die(addr, NULL);
    printf("fakenode: listening\n");
    fflush(stdout);
    struct pollfd pf = {.fd = lfd, .events = POLLIN};
    if (poll(&pf, 1, 30000) <= 0)
        return 1;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0 || recv_frame(fd, buf, sizeof(buf), 10000) != VHPC_DIST_PULL)
        return 1;
    const uint32_t chunk = 1 << 20;
    int n = snprintf(buf, sizeof(buf),
                     "{\"v\":%d,\"digest\":\"%s\",\"name\":\"%s\",\"version\":%d,"
                     "\"chunk\":%u,\"timeout_ms\":5000,\"seq\":true,\"self\":0,"
                     "\"children\":[]}",
                     VHPC_DIST_VERSION, ref.digest, name, version, chunk);
    send_frame(fd, VHPC_DIST_PUSH, buf, (size_t)n);
    send_frame(fd, VHPC_DIST_MANIFEST, man, mlen);
    free(man);
    int t = recv_frame(fd, buf, sizeof(buf), 10000);
    printf("fakenode: got %d %s\n", t, t >= 0 ? buf : "");
    if (t == VHPC_DIST_STATE)
        send_blobs(fd, st, &l, chunk, 0);
    while ((t = recv_frame(fd, buf, sizeof(buf), 10000)) == VHPC_DIST_PROGRESS)
        ;
    printf("fakenode: then %d %s\n", t, t >= 0 ? buf : "");
    close(fd);
    close(lfd);
    vhpc_store_close(st);
    return 0;
}

static int idle(const char *addr, int n, int ms)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    vhpc_err_t err = {0};
    if (vhpc_dist_resolve(addr, &sa, &sl, &err) < 0 || n < 1 || n > 4000)
        die("idle", &err);
    int *fd = calloc((size_t)n, sizeof(*fd)), opened = 0, closed = 0;
    for (; fd && opened < n; opened++) {
        fd[opened] = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd[opened] < 0 || connect(fd[opened], (struct sockaddr *)&sa, sl) < 0) {
            if (fd[opened] >= 0)
                close(fd[opened]);
            break;
        }
    }
    printf("idle: %d opened\n", opened);
    fflush(stdout);
    usleep((useconds_t)ms * 1000);
    for (int i = 0; i < opened; i++) {
        char c;
        struct pollfd pf = {.fd = fd[i], .events = POLLIN};
        if (poll(&pf, 1, 0) > 0 && recv(fd[i], &c, 1, MSG_DONTWAIT) <= 0)
            closed++;
        close(fd[i]);
    }
    free(fd);
    printf("idle: %d closed by the node\n", closed);
    return 0;
}

/* A PUSH of a made-up one-blob image claiming `size` bytes. */
static int claim(const char *addr, const char *size_s, const char *chunk_s, const char *send_s,
                 const char *hold_s)
{
    uint64_t size, chunk = 4096, sendb, hold = hold_s ? strtoull(hold_s, NULL, 10) : 0;
    if (vhpc_parse_bytes(size_s, &size) < 0 || (chunk_s && vhpc_parse_bytes(chunk_s, &chunk) < 0))
        die("SIZE or CHUNK", NULL);
    sendb = 3 * chunk;
    if (send_s && vhpc_parse_bytes(send_s, &sendb) < 0)
        die("SEND", NULL);
    char blob[65], digest[65], buf[65536];
    struct vhpc_sha256 h;
    snprintf(blob, sizeof(blob), "%064x", 0); /* no bytes will ever hash to this */
    blob[0] = 'e';
    json_t *m = json_pack("{s:i, s:s, s:{s:{s:s, s:I}}}", "schema", 1, "kind", "claim", "blobs",
                          "rootfs", "digest", blob, "size", (json_int_t)size);
    char *man = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(m);
    vhpc_sha256_init(&h);
    vhpc_sha256_update(&h, man, strlen(man));
    vhpc_sha256_hex(&h, digest);
    int fd = dial(addr);
    int n = snprintf(buf, sizeof(buf),
                     "{\"v\":%d,\"digest\":\"%s\",\"name\":\"claim\",\"version\":1,"
                     "\"chunk\":%" PRIu64 ",\"timeout_ms\":30000,\"seq\":false,\"self\":0,"
                     "\"children\":[]}",
                     VHPC_DIST_VERSION, digest, chunk);
    send_req(fd, VHPC_DIST_PUSH, buf, addr);
    (void)n;
    send_frame(fd, VHPC_DIST_MANIFEST, man, strlen(man));
    free(man);
    int t = recv_frame(fd, buf, sizeof(buf), 10000);
    json_t *a = t == VHPC_DIST_STATE ? json_loads(buf, 0, NULL) : NULL;
    int accepted = json_is_array(json_object_get(a, "have"));
    json_decref(a);
    printf("claim: %s %s\n",
           t == VHPC_DIST_STATE   ? "STATE"
           : t == VHPC_DIST_ERROR ? "ERROR"
                                  : "?",
           t < 0 ? "(no answer)" : buf);
    if (accepted) {
        unsigned char *d = calloc(1, VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR + chunk);
        for (uint64_t off = 0; d && off < sendb && off < size; off += chunk) {
            uint64_t len = size - off < chunk ? size - off : chunk;
            unsigned char *data = d + VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR;
            frame(d, VHPC_DIST_CHUNK, (uint32_t)(VHPC_DIST_CHUNK_HDR + len), VHPC_DIST_MAGIC);
            put_be(d + VHPC_DIST_HDR, 0, 4);
            put_be(d + VHPC_DIST_HDR + 4, vhpc_crc32c(0, data, len), 4);
            put_be(d + VHPC_DIST_HDR + 8, off, 8);
            size_t total = VHPC_DIST_HDR + VHPC_DIST_CHUNK_HDR + len;
            for (size_t done = 0; done < total;) {
                ssize_t w = send(fd, d + done, total - done, MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                done += (size_t)w;
            }
        }
        free(d);
        if (hold)
            usleep((useconds_t)(hold * 1000));
    }
    close(fd);
    return accepted ? 3 : 0;
}

static void to_stderr(const char *text)
{
    fputs(text, stderr);
}

int main(int argc, char **argv)
{
    vhpc_set_output(to_stderr, false); /* the library's log lines, as vhpc's */
    if (argc >= 5 && !strcmp(argv[1], "mkimage"))
        return mkimage(argv[2], argv[3], argv[4], argc > 5 ? strtoull(argv[5], NULL, 10) : 1);
    if (argc == 4 && !strcmp(argv[1], "verify"))
        return verify(argv[2], argv[3]);
    if (argc == 5 && !strcmp(argv[1], "blob"))
        return blob(argv[2], argv[3], argv[4]);
    if (argc == 4 && !strcmp(argv[1], "query"))
        return query(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "garbage"))
        return garbage(argv[2]);
    if (argc == 5 && !strcmp(argv[1], "liar"))
        return liar(argv[2], argv[3], argv[4]);
    if (argc == 5 && !strcmp(argv[1], "idle"))
        return idle(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 7 && !strcmp(argv[1], "fakenode"))
        return fakenode(argv[2], argv[3], argv[4], argv[5], atoi(argv[6]));
    if (argc >= 4 && argc <= 7 && !strcmp(argv[1], "claim"))
        return claim(argv[2], argv[3], argc > 4 ? argv[4] : NULL, argc > 5 ? argv[5] : NULL,
                     argc > 6 ? argv[6] : NULL);
    fprintf(stderr, "usage: dist_tool mkimage ROOT NAME SIZE [SEED] | verify ROOT REF |\n"
                    "       blob ROOT REF ROLE | query HOST:PORT REF | garbage HOST:PORT |\n"
                    "       liar HOST:PORT ROOT REF | fakenode HOST:PORT ROOT REF NAME VERSION |\n"
                    "       idle HOST:PORT N MS | claim HOST:PORT SIZE [CHUNK [SEND [HOLD_MS]]]\n");
    return 2;
}
