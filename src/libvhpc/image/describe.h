/*
 * describe.h - what a minimal image is made of, for its manifest
 * (describe.c): the digests of its inputs, the host packages its files come
 * from, the files and shared objects in its tree.  Internal to the minimal
 * build; the parts full images share are in image.h (vhpc_json_digest,
 * vhpc_os_release, vhpc_dpkg_packages).
 */
#ifndef VHPC_IMAGE_DESCRIBE_H
#define VHPC_IMAGE_DESCRIBE_H

#include "tree.h"

#include <jansson.h>

/* Append {"role", "path", "type": "file"|"dir", "sha256"} to inputs: a
 * file's sha256, or for a directory one over its sorted listing (relative
 * path, type, mode, content digest or link target). */
int img_add_input(json_t *inputs, const char *role, const char *path, vhpc_err_t *err);
/* Add name -> {version, source, source_version} to pkgs for the host
 * packages that own the files (a JSON array of host paths). */
int img_host_packages(json_t *files, json_t *pkgs, vhpc_err_t *err);
/* The host files in the tree (*files) and the shared objects under lib/ and
 * usr/lib/ by name, sorted (*libs, for lib: requirements). */
void img_tree_contents(const struct img_tree *t, json_t **files, json_t **libs);

#endif
