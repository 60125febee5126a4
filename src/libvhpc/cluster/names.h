/*
 * names.h - the one rule for cluster names, shared by everything that turns
 * a name into a path under the run directory (<run>/clusters/<name>): the
 * CLI checks a name with it before it touches anything, so "../x" or "a/b"
 * can never reach a directory outside the run directory.
 */
#ifndef VHPC_NAMES_H
#define VHPC_NAMES_H

#include "error.h"

#define VHPC_CLUSTER_NAME_MAX 32 /* the same as VHPC_NAME_MAX in cluster.h */

/* 1 if name is 1..VHPC_CLUSTER_NAME_MAX letters, digits, '-' or '_'. */
int vhpc_cluster_name_ok(const char *name);
/* 0, or -EINVAL with a message that says the rule. */
int vhpc_check_cluster_name(const char *name, vhpc_err_t *err);

#endif
