/*
 * driver.c - runs a fuzzer's LLVMFuzzerTestOneInput on files, without
 * libFuzzer: the committed corpus and crash reproducers of each fuzzer
 * become a deterministic regression test in the normal (gcc) builds.
 * Usage: fuzz_regress_<target> DIR_OR_FILE...  (missing directories are
 * skipped: a target may have no crashes/ yet).  An input that runs over
 * 30 s is a hang, as libFuzzer's -timeout would say: it fails at once.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define INPUT_TIMEOUT_S 30

static const char *current;

static void on_alarm(int sig)
{
    static const char msg[] = "fuzz driver: an input ran over 30 s (a hang): ";
    ssize_t w = write(2, msg, sizeof(msg) - 1);
    w = write(2, current, strlen(current));
    w = write(2, "\n", 1);
    (void)w;
    _exit(1);
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *g = realloc(buf, cap);
            if (!g) {
                fclose(f);
                free(buf);
                return -1;
            }
            buf = g;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    /* An exact-size copy, so that an overread past the input is caught
     * under ASan as it is under libFuzzer. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    current = path;
    alarm(INPUT_TIMEOUT_S);
    LLVMFuzzerTestOneInput(exact, len);
    alarm(0);
    free(exact);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int files = 0, bad = 0;
    signal(SIGALRM, on_alarm);
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0)
            continue;
        if (!S_ISDIR(st.st_mode)) {
            bad += run_file(argv[i]) < 0;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        char **names = NULL;
        size_t n = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char **g = realloc(names, (n + 1) * sizeof(*names));
            if (!g)
                break;
            names = g;
            if (asprintf(&names[n], "%s/%s", argv[i], e->d_name) < 0)
                break;
            n++;
        }
        if (d)
            closedir(d);
        qsort(names, n, sizeof(*names), cmp);
        for (size_t k = 0; k < n; k++) {
            fprintf(stderr, "running %s\n", names[k]);
            bad += run_file(names[k]) < 0;
            files++;
            free(names[k]);
        }
        free(names);
    }
    printf("%d inputs run, %d unreadable\n", files, bad);
    return bad ? 1 : 0;
}
