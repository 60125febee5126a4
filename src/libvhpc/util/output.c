/*
 * output.c - see output.h.
 */
#include "output.h"

#include <stdarg.h>
#include <stdio.h>

static vhpc_output_fn sink;
static bool sink_tty;

void vhpc_set_output(vhpc_output_fn fn, bool tty)
{
    sink = fn;
    sink_tty = tty;
}

bool vhpc__output_on(void)
{
    return sink != NULL;
}

bool vhpc__output_tty(void)
{
    return sink && sink_tty;
}

void vhpc__say(const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    if (!sink)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    sink(text);
}
