/*
 * fuzz_debver.c - Debian version strings (debver.c), as users write them in
 * requirements and as package databases hold them.  Input: two versions
 * separated by a newline.  Besides not crashing, the order must be one:
 * cmp(a, a) == 0 and cmp(a, b) == -cmp(b, a) in sign.
 */
#include "debver.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int sign(int v)
{
    return (v > 0) - (v < 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    char *b = strchr(s, '\n');
    if (b)
        *b++ = 0;
    else
        b = s + strlen(s);
    bool va = vhpc_debver_valid(s), vb = vhpc_debver_valid(b);
    if (va && vhpc_debver_cmp(s, s) != 0)
        abort();
    if (va && vb && sign(vhpc_debver_cmp(s, b)) != -sign(vhpc_debver_cmp(b, s)))
        abort();
    free(s);
    return 0;
}
