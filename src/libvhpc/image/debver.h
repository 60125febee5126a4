/*
 * debver.h - Debian version numbers: [epoch:]upstream[-revision], compared
 * by Debian's rules (deb-version(7)): epochs numerically; then upstream and
 * revision each as alternating non-digit and digit runs, the non-digit runs
 * character by character with letters before everything else except '~',
 * which sorts before even the end of the string ("1.0~rc1" < "1.0"), and
 * the digit runs numerically ("1.10" > "1.9").  For image requirements
 * (`--require openmpi>=4.1`), kernel releases and package versions.
 */
#ifndef VHPC_DEBVER_H
#define VHPC_DEBVER_H

#include <stdbool.h>

/* A well-formed version: optional numeric epoch and ':', an upstream part
 * that starts with a digit and holds [A-Za-z0-9.+~:-], an optional
 * revision after the last '-' of [A-Za-z0-9.+~]. */
bool vhpc_debver_valid(const char *v);

/* <0, 0 or >0 as a sorts before, equal to or after b (both valid). */
int vhpc_debver_cmp(const char *a, const char *b);

#endif
