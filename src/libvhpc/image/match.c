/*
 * match.c - requirements against image manifests (rules: match.h).
 */
#include "match.h"

#include "debver.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *text;
    enum vhpc_req_op op;
} ops[] = {{">=", VHPC_OP_GE}, {"<=", VHPC_OP_LE}, {">>", VHPC_OP_GT},
           {"<<", VHPC_OP_LT}, {"!=", VHPC_OP_NE}, {"==", VHPC_OP_EQ},
           {"=", VHPC_OP_EQ},  {">", VHPC_OP_GT},  {"<", VHPC_OP_LT}};

static const char *op_text(enum vhpc_req_op op)
{
    static const char *const t[] = {"", "=", "!=", ">=", "<=", ">", "<"};
    return t[op];
}

static const char syntax[] =
    "expected KEY[OP VALUE], e.g. os=debian-12, kernel>=6.1, openmpi>=4.1, lib:libfftw3.so.3 "
    "(OP: = != >= <= > <)";

int vhpc_req_parse(const char *s, struct vhpc_req *r, vhpc_err_t *err)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->text, sizeof(r->text), "%s", s);
    size_t klen = strcspn(s, "=!<>");
    const char *rest = s + klen;
    while (klen && isspace((unsigned char)s[klen - 1]))
        klen--;
    if (!klen || klen >= sizeof(r->key))
        return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': %s", s, syntax);
    memcpy(r->key, s, klen);
    for (size_t i = 0; i < klen; i++) {
        unsigned char c = (unsigned char)r->key[i];
        if (!(isalnum(c) || strchr(".+-_:", c)))
            return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': '%c' in the name; %s", s, c,
                                   syntax);
        r->key[i] = (char)tolower(c);
    }
    if (*rest) {
        size_t i;
        for (i = 0; i < sizeof(ops) / sizeof(*ops); i++)
            if (!strncmp(rest, ops[i].text, strlen(ops[i].text)))
                break;
        if (i == sizeof(ops) / sizeof(*ops))
            return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': unknown operator; %s", s,
                                   syntax);
        r->op = ops[i].op;
        rest += strlen(ops[i].text);
        while (isspace((unsigned char)*rest))
            rest++;
        if (strchr("=!<>", *rest))
            return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': unknown operator; %s", s,
                                   syntax);
        if (!*rest || strlen(rest) >= sizeof(r->value))
            return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': no value after '%s'; %s", s,
                                   ops[i].text, syntax);
        snprintf(r->value, sizeof(r->value), "%s", rest);
    }
    if (!strcmp(r->key, "os")) {
        r->kind = VHPC_REQ_OS;
        if (r->op == VHPC_OP_ANY)
            return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': which OS? e.g. os=debian-12",
                                   s);
    } else if (!strcmp(r->key, "kernel")) {
        r->kind = VHPC_REQ_KERNEL;
        if (r->op == VHPC_OP_ANY)
            return vhpc_err_setmsg(err, -EINVAL, "requirement '%s': which kernel? e.g. kernel>=6.1",
                                   s);
    } else if (!strncmp(r->key, "lib:", 4)) {
        r->kind = VHPC_REQ_LIB;
        memmove(r->key, r->key + 4, strlen(r->key + 4) + 1);
        if (!r->key[0] || r->op != VHPC_OP_ANY)
            return vhpc_err_setmsg(err, -EINVAL,
                                   "requirement '%s': a library is named by its soname, e.g. "
                                   "lib:libfftw3.so.3 (for a version, require its package)",
                                   s);
    } else {
        r->kind = VHPC_REQ_PKG;
    }
    if (r->op != VHPC_OP_ANY && r->kind != VHPC_REQ_OS && r->op != VHPC_OP_EQ &&
        r->op != VHPC_OP_NE && !vhpc_debver_valid(r->value))
        return vhpc_err_setmsg(err, -EINVAL,
                               "requirement '%s': '%s' is not a version (digits first, e.g. 4.1 "
                               "or 1:2.3-1)",
                               s, r->value);
    return 0;
}

/* Compare version v against the requirement's constraint. */
static bool version_ok(const char *v, enum vhpc_req_op op, const char *want)
{
    if (op == VHPC_OP_ANY)
        return true;
    if (!vhpc_debver_valid(v) || !vhpc_debver_valid(want))
        return op == VHPC_OP_EQ   ? !strcmp(v, want)
               : op == VHPC_OP_NE ? strcmp(v, want) != 0
                                  : false;
    int c = vhpc_debver_cmp(v, want);
    switch (op) {
    case VHPC_OP_EQ: return c == 0;
    case VHPC_OP_NE: return c != 0;
    case VHPC_OP_GE: return c >= 0;
    case VHPC_OP_LE: return c <= 0;
    case VHPC_OP_GT: return c > 0;
    case VHPC_OP_LT: return c < 0;
    default: return true;
    }
}

/* "6.1.0-56-cloud-amd64" -> "6.1.0-56": the numeric release. */
static void kernel_release(const char *k, char *out, size_t len)
{
    size_t n = strspn(k, "0123456789.");
    if (k[n] == '-' && isdigit((unsigned char)k[n + 1]))
        n += 1 + strspn(k + n + 1, "0123456789");
    snprintf(out, len, "%.*s", (int)n, k);
}

/* "debian-12" -> id "debian", version "12" (split at the last '-'). */
static void split_os(const char *os, char *id, size_t idlen, const char **ver)
{
    const char *dash = strrchr(os, '-');
    size_t n = dash ? (size_t)(dash - os) : strlen(os);
    snprintf(id, idlen, "%.*s", (int)n, os);
    *ver = dash ? dash + 1 : "";
}

int vhpc_req_check(const struct vhpc_req *r, json_t *m, char *why, size_t len)
{
    const char *op = op_text(r->op);
    switch (r->kind) {
    case VHPC_REQ_OS: {
        const char *os = json_string_value(json_object_get(m, "os"));
        if (!os) {
            snprintf(why, len, "the image does not say its OS");
            return 0;
        }
        bool ok;
        if (r->op == VHPC_OP_EQ || r->op == VHPC_OP_NE) {
            ok = (strcasecmp(os, r->value) == 0) == (r->op == VHPC_OP_EQ);
        } else {
            char a[64], b[64];
            const char *va, *vb;
            split_os(os, a, sizeof(a), &va);
            split_os(r->value, b, sizeof(b), &vb);
            ok = !strcasecmp(a, b) && version_ok(va, r->op, vb);
        }
        snprintf(why, len, "os %s %s %s", os, ok ? op : "is not", r->value);
        if (!ok && r->op != VHPC_OP_EQ)
            snprintf(why, len, "os %s does not satisfy %s%s", os, op, r->value);
        return ok;
    }
    case VHPC_REQ_KERNEL: {
        const char *k = json_string_value(json_object_get(m, "kernel"));
        if (!k) {
            snprintf(why, len, "the image does not say its kernel");
            return 0;
        }
        char rel[64];
        kernel_release(k, rel, sizeof(rel));
        bool ok = (r->op == VHPC_OP_EQ && !strcmp(k, r->value)) || version_ok(rel, r->op, r->value);
        snprintf(why, len, ok ? "kernel %s %s %s" : "kernel %s does not satisfy %s%s", k, op,
                 r->value);
        return ok;
    }
    case VHPC_REQ_LIB: {
        json_t *libs = json_object_get(m, "libs"), *l;
        size_t i, kl = strlen(r->key);
        bool prefix = !strstr(r->key, ".so");
        json_array_foreach(libs, i, l)
        {
            const char *s = json_string_value(l);
            if (!s)
                continue;
            if (!strcmp(s, r->key) ||
                (prefix && !strncmp(s, r->key, kl) && !strncmp(s + kl, ".so", 3))) {
                snprintf(why, len, "library %s present", s);
                return 1;
            }
        }
        snprintf(why, len, "no library %s%s in the image", r->key, prefix ? ".so*" : "");
        return 0;
    }
    case VHPC_REQ_PKG: {
        json_t *pkgs = json_object_get(m, "packages"), *p;
        const char *name;
        /* A binary package of that name first. */
        json_t *bin = json_object_get(pkgs, r->key);
        if (bin) {
            const char *v = json_string_value(json_object_get(bin, "version")) ?: "";
            bool ok = version_ok(v, r->op, r->value);
            if (r->op == VHPC_OP_ANY)
                snprintf(why, len, "package %s %s installed", r->key, v);
            else
                snprintf(why, len, ok ? "%s %s %s %s" : "%s %s does not satisfy %s%s", r->key, v,
                         op, r->value);
            return ok;
        }
        /* Else any binary package built from a source of that name. */
        const char *found_v = NULL, *found_bin = NULL;
        json_object_foreach(pkgs, name, p)
        {
            const char *src = json_string_value(json_object_get(p, "source"));
            if (!src || strcmp(src, r->key) != 0)
                continue;
            const char *v = json_string_value(json_object_get(p, "source_version")) ?: "";
            if (!found_v || version_ok(v, r->op, r->value)) {
                found_v = v;
                found_bin = name;
            }
            if (version_ok(v, r->op, r->value))
                break;
        }
        if (!found_v) {
            snprintf(why, len, "no package or source package '%s'", r->key);
            return 0;
        }
        bool ok = version_ok(found_v, r->op, r->value);
        if (r->op == VHPC_OP_ANY)
            snprintf(why, len, "%s %s (source of %s) installed", r->key, found_v, found_bin);
        else
            snprintf(why, len,
                     ok ? "%s %s (source of %s) %s %s"
                        : "%s %s (source of %s) does not satisfy %s%s",
                     r->key, found_v, found_bin, op, r->value);
        return ok;
    }
    }
    return 0;
}

struct collect {
    const struct vhpc_store *st;
    struct vhpc_candidate *v;
    size_t n, cap;
    int failed;
};

static int add_ref(const struct vhpc_ref *ref, void *arg)
{
    struct collect *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        if (!strcmp(c->v[i].ref.digest, ref->digest)) {
            if (ref->created > c->v[i].ref.created)
                c->v[i].ref = *ref;
            return 0;
        }
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        void *g = realloc(c->v, cap * sizeof(*c->v));
        if (!g) {
            c->failed = 1;
            return -ENOMEM;
        }
        c->v = g;
        c->cap = cap;
    }
    memset(&c->v[c->n], 0, sizeof(*c->v));
    c->v[c->n++].ref = *ref;
    return 0;
}

static int cmp_cand(const void *a, const void *b)
{
    const struct vhpc_candidate *x = a, *y = b;
    if (x->unmet != y->unmet)
        return x->unmet < y->unmet ? -1 : 1;
    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    if (x->ref.created != y->ref.created)
        return x->ref.created > y->ref.created ? -1 : 1;
    return strcmp(x->ref.digest, y->ref.digest);
}

int vhpc_match(const struct vhpc_store *st, const struct vhpc_req *reqs, size_t nreqs,
               struct vhpc_candidate **cands, size_t *ncands, int *best, vhpc_err_t *err)
{
    struct collect c = {.st = st};
    int r = vhpc_store_refs(st, add_ref, &c, err);
    if (r < 0 || c.failed) {
        free(c.v);
        return r < 0 ? r : vhpc_err_set(err, -ENOMEM, "matching images");
    }
    for (size_t i = 0; i < c.n; i++) {
        struct vhpc_candidate *cd = &c.v[i];
        json_t *m;
        vhpc_err_t e2 = {0};
        if (vhpc_store_get_manifest(st, cd->ref.digest, &m, &e2) < 0) {
            cd->unmet = (int)nreqs + 1;
            snprintf(cd->report, sizeof(cd->report), "  - unreadable: %.200s\n", e2.msg);
            continue;
        }
        const char *kind = json_string_value(json_object_get(m, "kind"));
        snprintf(cd->kind, sizeof(cd->kind), "%s", kind ? kind : "?");
        cd->size = (uint64_t)json_integer_value(json_object_get(m, "size"));
        char met[2048] = "", unmet[2048] = "";
        size_t ml = 0, ul = 0;
        for (size_t k = 0; k < nreqs; k++) {
            char why[300];
            int ok = vhpc_req_check(&reqs[k], m, why, sizeof(why));
            char *buf = ok ? met : unmet;
            size_t *l = ok ? &ml : &ul;
            if (*l < sizeof(met) - 1)
                *l += (size_t)snprintf(buf + *l, sizeof(met) - *l, "  - %s\n", why);
            if (*l >= sizeof(met))
                *l = sizeof(met) - 1;
            cd->unmet += !ok;
        }
        snprintf(cd->report, sizeof(cd->report), "%s", cd->unmet ? unmet : met);
        json_decref(m);
    }
    if (c.n) /* c.v is NULL for a store without images: qsort's array must not be */
        qsort(c.v, c.n, sizeof(*c.v), cmp_cand);
    *cands = c.v;
    *ncands = c.n;
    *best = c.n && c.v[0].unmet == 0 ? 0 : -1;
    return 0;
}
