/*
 * parse.h - strict parsing of the numbers people give on the command line
 * and in job files: the whole string must be the number (no "1x", no
 * leading blanks or sign tricks), it must lie in the option's range, sizes
 * take a unit suffix, and overflow is an error, never a wrap.  Errors name
 * the option and the allowed range, e.g.
 *   "--vms 1x: expected a whole number from 1 to 64".
 */
#ifndef VHPC_PARSE_H
#define VHPC_PARSE_H

#include "error.h"

/* A decimal integer in [min, max] (digits only, optional leading '-' when
 * min < 0).  opt names the option in the message ("--vms"). */
int vhpc_parse_long(const char *opt, const char *s, long min, long max, long *out, vhpc_err_t *err);
/* The same into an int (min and max within int). */
int vhpc_parse_int(const char *opt, const char *s, int min, int max, int *out, vhpc_err_t *err);
/* A size in MiB: a whole number with an optional unit M (the default), G
 * or T (also MiB, GiB, TiB, any case), in [min_mib, max_mib]. */
int vhpc_parse_mib_opt(const char *opt, const char *s, long min_mib, long max_mib, long *out,
                       vhpc_err_t *err);

#endif
