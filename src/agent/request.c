/*
 * request.c - the payloads of what a connection asks of the agent (EXEC,
 * SIGNAL, PUT_FILE, GET_FILE; agent_proto.h), parsed and bounded into plain
 * values with no side effect.  session.c acts on them; the fuzzers
 * (tests/fuzz/fuzz_agent.c) drive them without starting anything.
 */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void free_strv(char **v, uint32_t n)
{
    if (!v)
        return;
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void req_exec_free(struct exec_req *x)
{
    free_strv(x->argv, x->argc);
    free_strv(x->env, x->envc);
    free(x->cwd);
    memset(x, 0, sizeof(*x));
}

int req_exec_parse(const uint8_t *payload, uint32_t len, struct exec_req *x)
{
    struct agent_rd r = {payload, len, false};
    memset(x, 0, sizeof(*x));
    x->flags = agent_rd_u32(&r);
    uint32_t argc = agent_rd_u32(&r), envc = agent_rd_u32(&r);
    /* Every string takes at least 4 bytes: bound the counts before
     * allocating for them. */
    if (r.bad || argc == 0 || argc > r.left / 4 || envc > r.left / 4 ||
        ((uint64_t)argc + envc + 1) * 4 > r.left)
        return EPROTO;
    x->argc = argc;
    x->envc = envc;
    x->argv = calloc((size_t)argc + 1, sizeof(*x->argv));
    x->env = calloc((size_t)envc + 1, sizeof(*x->env));
    if (!x->argv || !x->env) {
        req_exec_free(x);
        return ENOMEM;
    }
    for (uint32_t i = 0; i < argc; i++)
        x->argv[i] = agent_rd_strdup(&r);
    for (uint32_t i = 0; i < envc; i++) {
        x->env[i] = agent_rd_strdup(&r);
        if (x->env[i] && !strchr(x->env[i], '='))
            r.bad = true;
    }
    x->cwd = agent_rd_strdup(&r);
    if (r.bad || r.left) {
        req_exec_free(x);
        return EPROTO;
    }
    return 0;
}

int req_signal_parse(const uint8_t *payload, uint32_t len, int *sig)
{
    struct agent_rd r = {payload, len, false};
    *sig = (int)agent_rd_u32(&r);
    return r.bad || *sig <= 0 || *sig >= NSIG ? EPROTO : 0;
}

int req_put_parse(const uint8_t *payload, uint32_t len, uint32_t *mode, char **path,
                  const uint8_t **data, uint32_t *dlen)
{
    struct agent_rd r = {payload, len, false};
    *mode = agent_rd_u32(&r);
    *path = agent_rd_strdup(&r);
    *data = r.p;
    *dlen = (uint32_t)r.left;
    if (r.bad) {
        free(*path);
        *path = NULL;
        *dlen = 0;
        return EPROTO;
    }
    return 0;
}

int req_get_parse(const uint8_t *payload, uint32_t len, char **path)
{
    struct agent_rd r = {payload, len, false};
    *path = agent_rd_strdup(&r);
    if (r.bad || r.left) {
        free(*path);
        *path = NULL;
        return EPROTO;
    }
    return 0;
}
