/*
 * fuzz_match.c - image requirements (match.c): what a user gives to
 * --require, checked against a manifest (which may come from another node).
 * Input: the requirement on the first line, the manifest's JSON after it.
 */
#include "match.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t rlen = nl ? (size_t)(nl - data) : size;
    char *req = malloc(rlen + 1);
    if (!req)
        return 0;
    memcpy(req, data, rlen);
    req[rlen] = 0;
    struct vhpc_req r;
    vhpc_err_t err = {0};
    if (vhpc_req_parse(req, &r, &err) == 0 && nl) {
        json_error_t je;
        json_t *m = json_loadb((const char *)nl + 1, size - rlen - 1, 0, &je);
        if (m) {
            char why[300];
            vhpc_req_check(&r, m, why, sizeof(why));
            json_decref(m);
        }
    }
    free(req);
    return 0;
}
