/*
 * proto.c - the frames of proto.h, encoded and decoded: frame and chunk
 * headers, the limits a received header must keep before anything is read
 * or allocated for it, and the PUSH request, checked field by field (the
 * tree of children within VHPC_DIST_MAX_TREE) before the engine acts on
 * it.  Everything that parses what another party sent starts here.
 */
#include "proto.h"
#include "sha256.h"
#include "vhpc/store.h"

#include <errno.h>
#include <string.h>

void dist_frame_header(unsigned char h[VHPC_DIST_HDR], int type, uint32_t len)
{
    dist_put32(h, VHPC_DIST_MAGIC);
    h[4] = (unsigned char)type;
    h[5] = h[6] = h[7] = 0;
    dist_put32(h + 8, len);
}

static uint32_t frame_limit(int type)
{
    return type == VHPC_DIST_CHUNK      ? VHPC_DIST_MAX_CHUNK + VHPC_DIST_CHUNK_HDR
           : type == VHPC_DIST_MANIFEST ? VHPC_DIST_MAX_MANIFEST
                                        : VHPC_DIST_MAX_CONTROL;
}

int dist_frame_check(const unsigned char h[VHPC_DIST_HDR], int *type, uint32_t *len)
{
    *type = h[4];
    *len = dist_get32(h + 8);
    if (dist_get32(h) != VHPC_DIST_MAGIC || *type < VHPC_DIST_PUSH || *type > VHPC_DIST_HAVE ||
        *len > frame_limit(*type))
        return -EPROTO;
    return 0;
}

void dist_chunk_header(unsigned char h[VHPC_DIST_CHUNK_HDR], uint32_t blob, uint32_t crc,
                       uint64_t off)
{
    dist_put32(h, blob);
    dist_put32(h + 4, crc);
    dist_put64(h + 8, off);
}

void dist_chunk_header_get(const unsigned char h[VHPC_DIST_CHUNK_HDR], uint32_t *blob,
                           uint32_t *crc, uint64_t *off)
{
    *blob = dist_get32(h);
    *crc = dist_get32(h + 4);
    *off = dist_get64(h + 8);
}

void dist_sha256_hex(const void *p, size_t len, char hex[65])
{
    struct vhpc_sha256 s;
    vhpc_sha256_init(&s);
    vhpc_sha256_update(&s, p, len);
    vhpc_sha256_hex(&s, hex);
}

/* A tree of children: each {"i": index, "addr": "ip:port", "children": [..]},
 * VHPC_DIST_MAX_TREE nodes and levels at the most. */
static int tree_ok(json_t *children, int depth, int *count)
{
    size_t i;
    json_t *c;
    if (!json_is_array(children) || depth > VHPC_DIST_MAX_TREE)
        return 0;
    json_array_foreach(children, i, c)
    {
        json_t *idx = json_object_get(c, "i"), *addr = json_object_get(c, "addr");
        if (++*count > VHPC_DIST_MAX_TREE || !json_is_integer(idx) || json_integer_value(idx) < 0 ||
            json_integer_value(idx) >= VHPC_DIST_MAX_TREE || !json_is_string(addr) ||
            strlen(json_string_value(addr)) >= 64 ||
            !tree_ok(json_object_get(c, "children"), depth + 1, count))
            return 0;
    }
    return 1;
}

int dist_push_parse(json_t *j, struct dist_push_req *p, vhpc_err_t *err)
{
    json_t *chunk = json_object_get(j, "chunk"), *to = json_object_get(j, "timeout_ms");
    int count = 0;
    memset(p, 0, sizeof(*p));
    p->digest = json_string_value(json_object_get(j, "digest"));
    p->name = json_string_value(json_object_get(j, "name"));
    p->version = (int)json_integer_value(json_object_get(j, "version"));
    p->seq = json_is_true(json_object_get(j, "seq"));
    p->self = (int)json_integer_value(json_object_get(j, "self"));
    p->children = json_object_get(j, "children");
    if (json_integer_value(json_object_get(j, "v")) != VHPC_DIST_VERSION)
        return vhpc_err_setmsg(err, -EPROTO, "PUSH of an unknown protocol version");
    if (!vhpc_is_digest(p->digest))
        return vhpc_err_setmsg(err, -EPROTO, "PUSH without a valid image digest");
    if (!p->name || (p->name[0] && !vhpc_valid_name(p->name)) || p->version < 0)
        return vhpc_err_setmsg(err, -EPROTO, "PUSH with an invalid name or version");
    if (!json_is_integer(chunk) || json_integer_value(chunk) < VHPC_DIST_MIN_CHUNK ||
        json_integer_value(chunk) > VHPC_DIST_MAX_CHUNK)
        return vhpc_err_setmsg(err, -EPROTO, "PUSH with an invalid chunk size");
    p->chunk = (uint32_t)json_integer_value(chunk);
    p->timeout_ms = json_is_integer(to) ? (int)json_integer_value(to) : 30000;
    if (p->timeout_ms < 100 || p->timeout_ms > 3600000)
        p->timeout_ms = 30000;
    if (p->children && !tree_ok(p->children, 0, &count))
        return vhpc_err_setmsg(err, -EPROTO, "PUSH with an invalid tree of children");
    return 0;
}

json_t *dist_push_msg(const struct dist_push_req *p, uid_t uid)
{
    return json_pack("{s:i, s:s, s:s, s:i, s:I, s:i, s:b, s:i, s:O, s:I}", "v", VHPC_DIST_VERSION,
                     "digest", p->digest, "name", p->name, "version", p->version, "chunk",
                     (json_int_t)p->chunk, "timeout_ms", p->timeout_ms, "seq", p->seq, "self",
                     p->self, "children", p->children, "uid", (json_int_t)uid);
}
