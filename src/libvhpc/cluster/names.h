/*
 * names.h - the one rule for cluster names, shared by everything that turns
 * a name into a path under the run directory (<run>/clusters/<name>): the
 * CLI checks a name with it before it touches anything, so "../x" or "a/b"
 * can never reach a directory outside the run directory.
 */
#ifndef VHPC_NAMES_H
#define VHPC_NAMES_H

#include "error.h"
#include "vhpc/cluster.h" /* the public part */

/* 1 if name is 1..VHPC_CLUSTER_NAME_MAX letters, digits, '-' or '_'. */
int vhpc_cluster_name_ok(const char *name);

#endif
