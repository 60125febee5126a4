/*
 * fuzz_select.c - job files (select.c's cli_job_file): `vhpc run --job F`
 * reads options one per line, and the requirements in them (match.c).  The
 * input is the file.
 */
#include "fuzz_util.h"
#include "match.h"
#include "vhpc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The rest of the CLI that select.c calls (to report how an image was
 * chosen or built, never from cli_job_file). */
void cli_print_candidates(const struct vhpc_candidate *c, size_t nc, int best, size_t n, void *arg)
{
    abort();
}

void cli_print_full_built(const struct vhpc_image *img, bool reused, const char *inputs_digest,
                          bool with_mpi, void *arg)
{
    abort();
}

static char path[96];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(path, sizeof(path), "%s/fuzz_select.%d", fuzz_tmpdir(), (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char **args = NULL, *command = NULL;
    int n = 0;
    vhpc_err_t err = {0};
    if (cli_job_file(path, &args, &n, &command, &err) == 0) {
        for (int i = 0; i < n; i++) {
            if (strcmp(args[i], "--require") == 0 && i + 1 < n) {
                struct vhpc_req r;
                vhpc_req_parse(args[i + 1], &r, &err);
            }
        }
        for (int i = 0; i < n; i++)
            free(args[i]);
        free(args);
        free(command);
    }
    unlink(path);
    return 0;
}
