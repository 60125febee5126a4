/*
 * select.c - which image a run boots, as the CLI says it: the library
 * chooses (vhpc_image_select, image.h: named, by requirements, or built
 * for them with --build-missing) and this file prints what it reports.
 * Also the job file, which holds the same options one per line.
 */
#include "vhpc/image.h"
#include "vhpc.h"
#include "vhpc/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void print_system_store(const char *root, void *arg)
{
    (void)arg;
    fprintf(stderr, "vhpc: looking in the system store (%s)\n", root);
}

static void print_building(const char *name, const char *const *pkgs, bool with_mpi, void *arg)
{
    (void)arg;
    fprintf(stderr, "vhpc: building image %s (Debian 12%s", name, with_mpi ? ", --with-mpi" : "");
    for (size_t i = 0; pkgs[i]; i++)
        fprintf(stderr, "%s%s", i ? " " : ", packages ", pkgs[i]);
    fprintf(stderr, ")\n");
}

int cli_select_image(const char *image, const struct vhpc_req *reqs, size_t n, bool build_missing,
                     struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_select_report rep = {.matched = cli_print_candidates,
                                     .system_store = print_system_store,
                                     .building = print_building,
                                     .built = cli_print_full_built};
    return vhpc_image_select(image, reqs, n, build_missing, &rep, out, err);
}

int cli_build_minimal(struct vhpc_image *out, vhpc_err_t *err)
{
    struct vhpc_image_spec spec = {.name = "minimal"};
    return vhpc_image_build(&spec, NULL, NULL, out, err);
}

/* ---- job files ---- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

/* Read a job file: a regular file of at most JOB_MAX bytes of text (no
 * NUL bytes).  Anything else (a device, a FIFO, a huge or binary file) is
 * refused before more than JOB_MAX + 1 bytes are read. */
#define JOB_MAX (64 * 1024)
static int read_job(const char *path, char **text, vhpc_err_t *err)
{
    size_t used;
    char *buf;
    int r = vhpc_read_file_max(path, JOB_MAX, &buf, &used, err);
    if (r == -EFBIG)
        return vhpc_err_setmsg(err, r, "job file %s: larger than %d KiB, not a job file", path,
                               JOB_MAX / 1024);
    if (r < 0)
        return vhpc_err_wrap(err, "job file");
    if (memchr(buf, 0, used)) {
        free(buf);
        return vhpc_err_setmsg(err, -EINVAL, "job file %s: not a text file", path);
    }
    *text = buf;
    return 0;
}

/* At most 24 characters of a job file's line, printable ones only. */
static void excerpt(const char *l, char *out, size_t len)
{
    size_t i = 0;
    for (; l[i] && i < 24 && i + 4 < len; i++)
        out[i] = (l[i] >= 0x20 && l[i] < 0x7f) ? l[i] : '?';
    out[i] = 0;
    if (l[i])
        snprintf(out + i, len - i, "...");
}

int cli_job_file(const char *path, char ***args, int *nargs, char **command, vhpc_err_t *err)
{
    static const char *const keys[] = {"vms",   "vcpus",   "mem",  "image",         "name",
                                       "accel", "require", "each", "build-missing", NULL};
    char *text = NULL;
    int r = read_job(path, &text, err);
    if (r < 0)
        return r;
    int good = 0; /* lines that parsed: only then is a line shown in an error */
    char **v = NULL;
    int n = 0, lineno = 0;
    *command = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        lineno++;
        char *hash = strchr(line, '#');
        char *l = trim(line);
        if (hash && (hash == line || hash < l || strncmp(l, "command", 7) != 0))
            *hash = 0;
        l = trim(l);
        if (!*l)
            continue;
        size_t kl = strcspn(l, " \t=");
        char key[32];
        snprintf(key, sizeof(key), "%.*s", (int)(kl < 31 ? kl : 31), l);
        char *val = l + kl;
        while (*val == ' ' || *val == '\t' || *val == '=')
            val++;
        if (!strcmp(key, "command")) {
            free(*command);
            *command = strdup(val);
            good++;
            continue;
        }
        int known = 0;
        for (int i = 0; keys[i]; i++)
            known |= !strcmp(keys[i], key);
        int flag = !strcmp(key, "each") || !strcmp(key, "build-missing");
        if (!known || (!flag && !*val) || (flag && *val)) {
            char ex[40] = "";
            if (good)
                excerpt(l, ex, sizeof(ex));
            r = vhpc_err_setmsg(err, -EINVAL,
                                "%s:%d: %s%s%sexpected KEY VALUE with KEY one of vms, vcpus, "
                                "mem, image, name, accel, require, command, or a line 'each' or "
                                "'build-missing'%s",
                                path, lineno, good ? "'" : "", ex, good ? "': " : "",
                                good ? "" : " (is this a job file?)");
            break;
        }
        good++;
        char **g = realloc(v, (size_t)(n + 3) * sizeof(*v));
        if (!g) {
            r = vhpc_err_set(err, -ENOMEM, "job file");
            break;
        }
        v = g;
        if (asprintf(&v[n], "--%s", key) < 0) {
            r = vhpc_err_set(err, -ENOMEM, "job file");
            break;
        }
        n++;
        if (!flag)
            v[n++] = strdup(val);
    }
    free(text);
    if (r < 0) {
        for (int i = 0; i < n; i++)
            free(v[i]);
        free(v);
        free(*command);
        *command = NULL;
        return r;
    }
    *args = v;
    *nargs = n;
    return 0;
}
