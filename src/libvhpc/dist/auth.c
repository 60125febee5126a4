/*
 * auth.c - who sent a request, and what they may do.  Every request (PUSH,
 * PULL, QUERY) carries a munge credential whose payload binds the request
 * and the address it goes to (proto.h): made here for what this process
 * sends, decoded and checked here for what a node receives, so that a
 * credential is good for one request to one node.  Then the rules: root and
 * the --allow-uid users may push any name and read every image, any other
 * user pushes and reads in its own namespace ("USER.NAME") and reads the
 * names outside every user's; a name:version is never rebound.
 */
#include "engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The munge context in *slot, made on first use. */
static munge_ctx_t munge_context(munge_ctx_t *slot, vhpc_err_t *err)
{
    if (*slot)
        return *slot;
    munge_ctx_t m = munge_ctx_create();
    const char *sock = getenv("VHPC_MUNGE_SOCKET");
    if (!m) {
        vhpc_err_setmsg(err, -ENOMEM, "creating a munge context");
        return NULL;
    }
    if (sock && *sock && munge_ctx_set(m, MUNGE_OPT_SOCKET, sock) != EMUNGE_SUCCESS) {
        vhpc_err_setmsg(err, -EINVAL, "VHPC_MUNGE_SOCKET=%s: %s", sock, munge_ctx_strerror(m));
        munge_ctx_destroy(m);
        return NULL;
    }
    return *slot = m;
}

/* What a request's credential must say: the request without "cred"
 * (canonical JSON), hashed, and the address it was sent to. */
static int cred_payload(json_t *req, const char *to, char *out, size_t len)
{
    json_t *copy = json_copy(req);
    if (!copy)
        return -ENOMEM;
    json_object_del(copy, "cred");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(copy);
    if (!text)
        return -ENOMEM;
    char hex[65];
    dist_sha256_hex(text, strlen(text), hex);
    free(text);
    snprintf(out, len, "vhpc-dist/%d to=%s req=%s", VHPC_DIST_VERSION, to, hex);
    return 0;
}

int dist_sign(munge_ctx_t *slot, json_t *req, const char *to, vhpc_err_t *err)
{
    char payload[256], *cred = NULL;
    munge_ctx_t m = munge_context(slot, err);
    if (!m)
        return err->code;
    if (cred_payload(req, to, payload, sizeof(payload)) < 0)
        return vhpc_err_set(err, -ENOMEM, "signing a request");
    munge_err_t me = munge_encode(&cred, m, payload, (int)strlen(payload));
    if (me != EMUNGE_SUCCESS) {
        free(cred);
        return vhpc_err_setmsg(err, -EACCES,
                               "cannot make a munge credential (munged's socket: "
                               "$VHPC_MUNGE_SOCKET, else munge's default): %s",
                               munge_ctx_strerror(m));
    }
    json_object_set_new(req, "cred", json_string(cred));
    free(cred);
    return 0;
}

int vhpc_dist_sign(json_t *req, const char *to, vhpc_err_t *err)
{
    static munge_ctx_t m;
    return dist_sign(&m, req, to, err);
}

/* Who sent request req on c: the uid of its munge credential, which must
 * be for this request to this address.  A node (uid 0 or the service's
 * own) forwarding a push says on whose behalf ("uid"). */
int dist_authenticate(struct conn *c, json_t *req, uid_t *out, vhpc_err_t *err)
{
    struct engine *e = c->e;
    const char *cred = json_string_value(json_object_get(req, "cred"));
    struct sockaddr_storage sa;
    socklen_t sl = sizeof(sa);
    char to[64], want[256];
    void *buf = NULL;
    int blen = 0;
    uid_t uid;
    gid_t gid;
    if (!cred)
        return vhpc_err_setmsg(err, -EACCES,
                               "the request carries no credential: this node authenticates "
                               "every request with munge (vhpc %d or later)",
                               VHPC_DIST_VERSION);
    munge_ctx_t m = munge_context(&e->mctx, err);
    if (!m)
        return err->code;
    if (getsockname(c->fd, (struct sockaddr *)&sa, &sl) < 0)
        return vhpc_err_set(err, -errno, "getsockname");
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
    if (sa.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        /* a dual-stack listener: the client dialled the IPv4 address */
        struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = s6->sin6_port};
        memcpy(&s4.sin_addr, s6->sin6_addr.s6_addr + 12, 4);
        memcpy(&sa, &s4, sizeof(s4));
    }
    vhpc_dist_addr_str((struct sockaddr *)&sa, to, sizeof(to));
    munge_err_t me = munge_decode(cred, m, &buf, &blen, &uid, &gid);
    if (me != EMUNGE_SUCCESS) {
        free(buf);
        return vhpc_err_setmsg(err, -EACCES, "authentication failed: munge: %s",
                               munge_ctx_strerror(m));
    }
    int ok = cred_payload(req, to, want, sizeof(want)) == 0 && blen == (int)strlen(want) &&
             !memcmp(buf, want, (size_t)blen);
    free(buf);
    if (!ok)
        return vhpc_err_setmsg(err, -EACCES,
                               "authentication failed: the credential was made for another "
                               "request or another node than %s",
                               to);
    json_t *behalf = json_object_get(req, "uid");
    if (behalf) {
        json_int_t b = json_integer_value(behalf);
        if (!json_is_integer(behalf) || b < 0 || b > 0x7fffffff)
            return vhpc_err_setmsg(err, -EACCES, "a request with an invalid \"uid\"");
        if ((uid_t)b != uid && uid != 0 && uid != geteuid())
            return vhpc_err_setmsg(err, -EACCES,
                                   "uid %u may not act on behalf of uid %lld (only nodes may)",
                                   (unsigned)uid, (long long)b);
        uid = (uid_t)b;
    }
    *out = uid;
    return 0;
}

/* Trusted like root: may push any name, read every image. */
int dist_privileged(const struct engine *e, uid_t uid)
{
    if (uid == 0)
        return 1;
    for (size_t i = 0; i < e->nallow; i++)
        if (e->allow[i] == uid)
            return 1;
    return 0;
}

/* A user's namespace: names "USER.*".  The user that owns name, or -1 for
 * a name outside every user's namespace (written by root or the trusted
 * only, readable by all). */
static long name_owner(const char *name)
{
    const char *dot = strchr(name, '.');
    char user[128], pwbuf[4096];
    struct passwd pw, *res = NULL;
    if (!dot || dot == name || (size_t)(dot - name) >= sizeof(user))
        return -1;
    snprintf(user, sizeof(user), "%.*s", (int)(dot - name), name);
    if (getpwnam_r(user, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res)
        return -1;
    return (long)pw.pw_uid;
}

int dist_may_write(const struct engine *e, uid_t uid, const char *name, vhpc_err_t *err)
{
    char pwbuf[4096];
    struct passwd pw, *res = NULL;
    if (dist_privileged(e, uid) || (name[0] && name_owner(name) == (long)uid))
        return 0;
    if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) != 0 || !res)
        return vhpc_err_setmsg(err, -EPERM,
                               "uid %u is not a user on this node: it may not push images",
                               (unsigned)uid);
    return vhpc_err_setmsg(err, -EPERM,
                           "user %s (uid %u) may push only names in its namespace, %s.NAME, "
                           "not '%s' (vhpc image tag IMAGE %s.NAME)",
                           pw.pw_name, (unsigned)uid, pw.pw_name, name, pw.pw_name);
}

int dist_may_read(const struct engine *e, uid_t uid, const char *name)
{
    long owner = name[0] ? name_owner(name) : 0;
    return dist_privileged(e, uid) || owner < 0 || owner == (long)uid;
}

/* A push never rebinds a name:version that points at another image. */
int dist_no_rebind(struct engine *e, const struct dist_push_req *p, vhpc_err_t *err)
{
    char ref[160];
    struct vhpc_ref got;
    vhpc_err_t e2 = {0};
    if (!p->name[0] || p->version <= 0)
        return 0;
    snprintf(ref, sizeof(ref), "%s:%d", p->name, p->version);
    if (vhpc_store_resolve(e->st, ref, &got, &e2) < 0 || !strcmp(got.digest, p->digest))
        return 0;
    return vhpc_err_setmsg(err, -EEXIST,
                           "%s is already image %.12s on this node; a version is never rebound "
                           "(tag the image as a new version and push that)",
                           ref, got.digest);
}
