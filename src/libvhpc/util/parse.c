/*
 * parse.c - strict number parsing (vhpc/util.h).
 */
#include "vhpc/util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* What the user typed, for the message: at most 40 printable characters. */
static void shown(const char *s, char *out, size_t len)
{
    size_t i = 0;
    for (; s && s[i] && i < 40 && i + 4 < len; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = 0;
    if (s && s[i])
        snprintf(out + i, len - i, "...");
}

/* Digits (with an optional '-') into *v; the index after them in *end.
 * -ERANGE on overflow, -EINVAL when there are no digits. */
static int digits(const char *s, long long *v, size_t *end)
{
    size_t i = 0;
    int neg = 0;
    unsigned long long acc = 0, lim = (unsigned long long)LLONG_MAX;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
        lim += 1;
    }
    if (s[i] < '0' || s[i] > '9')
        return -EINVAL;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (lim - d) / 10)
            return -ERANGE;
        acc = acc * 10 + d;
    }
    *v = neg ? (acc == lim ? LLONG_MIN : -(long long)acc) : (long long)acc;
    *end = i;
    return 0;
}

static int range_error(const char *opt, const char *s, const char *what, long min, long max,
                       const char *unit, vhpc_err_t *err)
{
    char sh[48];
    shown(s, sh, sizeof(sh));
    return vhpc_err_setmsg(err, -EINVAL, "%s %s: expected %s from %ld to %ld%s", opt, sh, what, min,
                           max, unit);
}

int vhpc_parse_long(const char *opt, const char *s, long min, long max, long *out, vhpc_err_t *err)
{
    long long v;
    size_t end;
    if (!s || digits(s, &v, &end) < 0 || s[end] || (s[0] == '-' && min >= 0) || v < min || v > max)
        return range_error(opt, s, "a whole number", min, max, "", err);
    *out = (long)v;
    return 0;
}

int vhpc_parse_int(const char *opt, const char *s, int min, int max, int *out, vhpc_err_t *err)
{
    long v;
    int r = vhpc_parse_long(opt, s, min, max, &v, err);
    if (r == 0)
        *out = (int)v;
    return r;
}

int vhpc_parse_mib_opt(const char *opt, const char *s, long min_mib, long max_mib, long *out,
                       vhpc_err_t *err)
{
    static const struct {
        const char *suffix;
        int shift; /* MiB << shift */
    } units[] = {{"", 0},     {"m", 0},   {"mib", 0}, {"mb", 0},   {"g", 10},
                 {"gib", 10}, {"gb", 10}, {"t", 20},  {"tib", 20}, {"tb", 20}};
    long long v;
    size_t end;
    if (s && s[0] != '-' && digits(s, &v, &end) == 0) {
        for (size_t i = 0; i < sizeof(units) / sizeof(*units); i++) {
            if (strcasecmp(s + end, units[i].suffix) != 0)
                continue;
            /* v << shift overflows only above max anyway: compare first. */
            if (v > ((long long)max_mib >> units[i].shift))
                break;
            v <<= units[i].shift;
            if (v < min_mib)
                break;
            *out = (long)v;
            return 0;
        }
    }
    return range_error(opt, s, "a size in MiB (suffix M, G or T)", min_mib, max_mib, " MiB", err);
}

/* A size (vhpc/util.h). */
int vhpc_parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10, end++; break;
    case 'M': shift = 20, end++; break;
    case 'G': shift = 30, end++; break;
    case 'T': shift = 40, end++; break;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}
