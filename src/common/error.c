/*
 * error.c - see error.h.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int set(vhpc_err_t *e, int code, int with_errno, const char *fmt, va_list ap)
{
    if (!e)
        return code;
    e->code = code;
    int n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    if (n < 0)
        e->msg[0] = 0;
    if (with_errno && code < 0 && code > -4096 && (size_t)n < sizeof(e->msg))
        snprintf(e->msg + n, sizeof(e->msg) - (size_t)n, ": %s", strerror(-code));
    return code;
}

int vhpc_err_set(vhpc_err_t *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set(e, code, 1, fmt, ap);
    va_end(ap);
    return code;
}

int vhpc_err_setmsg(vhpc_err_t *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set(e, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

int vhpc_err_wrap(vhpc_err_t *e, const char *fmt, ...)
{
    char prefix[1024], old[sizeof(e->msg)];
    va_list ap;
    if (!e)
        return -1;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof(old));
    /* Truncation keeps the outermost context, which says the most. */
    size_t n = strlen(prefix);
    memcpy(e->msg, prefix, n);
    size_t room = sizeof(e->msg) - n;
    if (room > 3) {
        memcpy(e->msg + n, ": ", 2);
        size_t m = strnlen(old, room - 3);
        memcpy(e->msg + n + 2, old, m);
        e->msg[n + 2 + m] = 0;
    } else {
        e->msg[n] = 0;
    }
    return e->code;
}

void vhpc_err_clear(vhpc_err_t *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = 0;
    }
}
