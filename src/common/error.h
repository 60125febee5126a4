/*
 * error.h - errors that explain themselves (after crun's libcrun_error):
 * a negative errno-style code plus a message; each level that passes an
 * error up adds what it was doing, so the CLI prints e.g.
 *   "starting VM vm1: connecting to ivcd at /run/vhpc/ivc-7.sock: No such file or directory".
 */
#ifndef VHPC_ERROR_H
#define VHPC_ERROR_H

#include <stddef.h>

typedef struct vhpc_err {
    int code;       /* negative errno value, 0 when no error */
    char msg[2048]; /* human-readable, without trailing newline */
} vhpc_err_t;

/* Record an error and return `code` (negative).  If `code` is a real errno
 * value its strerror() is appended ("...: No such file or directory"). */
int vhpc_err_set(vhpc_err_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same without the strerror() suffix. */
int vhpc_err_setmsg(vhpc_err_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix context to the error already recorded; returns its code. */
int vhpc_err_wrap(vhpc_err_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vhpc_err_clear(vhpc_err_t *e);

#endif
