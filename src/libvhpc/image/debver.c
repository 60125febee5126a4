/*
 * debver.c - see debver.h.
 */
#include "debver.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Weight of one character of a non-digit run: '~' lowest, the end of the
 * run next, then letters, then everything else. */
static int weight(char c)
{
    if (c == '~')
        return -1;
    if (!c || isdigit((unsigned char)c))
        return 0;
    if (isalpha((unsigned char)c))
        return (unsigned char)c;
    return (unsigned char)c + 256;
}

/* Compare two upstream versions or two revisions, [a, a_end) and [b, b_end). */
static int part_cmp(const char *a, const char *a_end, const char *b, const char *b_end)
{
    while (a < a_end || b < b_end) {
        /* A non-digit run (possibly empty). */
        while ((a < a_end && !isdigit((unsigned char)*a)) ||
               (b < b_end && !isdigit((unsigned char)*b))) {
            int wa = weight(a < a_end ? *a : 0), wb = weight(b < b_end ? *b : 0);
            if (wa != wb)
                return wa < wb ? -1 : 1;
            a += a < a_end;
            b += b < b_end;
        }
        /* A digit run, numerically: skip leading zeros, then the longer
         * run is larger, else the first differing digit decides. */
        while (a < a_end && *a == '0')
            a++;
        while (b < b_end && *b == '0')
            b++;
        int first = 0;
        while (a < a_end && b < b_end && isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            if (!first)
                first = *a - *b;
            a++;
            b++;
        }
        if (a < a_end && isdigit((unsigned char)*a))
            return 1;
        if (b < b_end && isdigit((unsigned char)*b))
            return -1;
        if (first)
            return first < 0 ? -1 : 1;
    }
    return 0;
}

struct parts {
    unsigned long epoch;
    const char *up, *up_end, *rev, *rev_end;
};

static void split(const char *v, struct parts *p)
{
    const char *colon = strchr(v, ':');
    p->epoch = 0;
    if (colon) {
        p->epoch = strtoul(v, NULL, 10);
        v = colon + 1;
    }
    const char *dash = strrchr(v, '-');
    p->up = v;
    p->up_end = dash ? dash : v + strlen(v);
    p->rev = dash ? dash + 1 : p->up_end;
    p->rev_end = v + strlen(v);
}

bool vhpc_debver_valid(const char *v)
{
    if (!v || !*v)
        return false;
    const char *colon = strchr(v, ':');
    if (colon) {
        if (colon == v)
            return false;
        for (const char *c = v; c < colon; c++)
            if (!isdigit((unsigned char)*c))
                return false;
    }
    struct parts p;
    split(v, &p);
    if (p.up == p.up_end || !isdigit((unsigned char)*p.up))
        return false;
    for (const char *c = p.up; c < p.up_end; c++)
        if (!isalnum((unsigned char)*c) && !strchr(".+~:-", *c))
            return false;
    if (p.rev_end != p.up_end && p.rev == p.rev_end)
        return false; /* "1.0-": an empty revision */
    for (const char *c = p.rev; c < p.rev_end; c++)
        if (!isalnum((unsigned char)*c) && !strchr(".+~", *c))
            return false;
    return true;
}

int vhpc_debver_cmp(const char *a, const char *b)
{
    struct parts pa, pb;
    split(a, &pa);
    split(b, &pb);
    if (pa.epoch != pb.epoch)
        return pa.epoch < pb.epoch ? -1 : 1;
    int r = part_cmp(pa.up, pa.up_end, pb.up, pb.up_end);
    return r ? r : part_cmp(pa.rev, pa.rev_end, pb.rev, pb.rev_end);
}
