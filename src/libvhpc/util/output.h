/*
 * output.h - the library writes nothing to the terminal itself: what it has
 * to show a person (progress lines, a node service's log) goes to the sink
 * the program sets, whole lines or, for a terminal, redrawn ones.  With no
 * sink the library is silent.
 */
#ifndef VHPC_OUTPUT_H
#define VHPC_OUTPUT_H

#include <stdbool.h>

#include "vhpc/util.h" /* vhpc_set_output */

/* For the library: is there a sink, is it a terminal, and say something. */
bool vhpc__output_on(void);
bool vhpc__output_tty(void);
void vhpc__say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
