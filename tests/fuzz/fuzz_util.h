/*
 * fuzz_util.h - what the harnesses share: where they may create files.
 * Everything a harness creates (sockets, stores, job files) goes under
 * $TMPDIR (else /tmp); run.sh and regress.sh point it at a directory of
 * their own and remove it afterwards, so even a run that crashes or times
 * out (no atexit then) leaves nothing behind.
 */
#ifndef VHPC_FUZZ_UTIL_H
#define VHPC_FUZZ_UTIL_H

#include <stdlib.h>

static inline const char *fuzz_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

#endif
