/*
 * fuzz_cpio.c - the newc reader (cpio.c): every field of a header is
 * checked against the buffer.  The callback touches every byte the reader
 * hands out (name and data), so an entry pointing outside the input is
 * caught by ASan.
 */
#include "cpio.h"

#include <stdint.h>
#include <string.h>

static int on_entry(const struct vhpc_cpio_entry *e, void *arg)
{
    unsigned *sum = arg;
    *sum += (unsigned)strlen(e->name);
    for (uint64_t i = 0; e->data && i < e->size; i++)
        *sum += e->data[i];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned sum = 0;
    vhpc_err_t err = {0};
    vhpc_cpio_parse(data, size, on_entry, &sum, &err);
    return 0;
}
