/*
 * test_agent_files - PUT_FILE and GET_FILE through libvhpc's agent client:
 * large and empty files with checksums and modes, a file put then read by a
 * command, and every failure (missing directory, missing file, a directory,
 * a device) reported with the guest's errno and a message.
 */
#include "test_agent_util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(agent_client_t *c, const void *data, size_t len, const char *path, unsigned mode)
{
    vhpc_err_t e;
    int fd = t_memfd_with(data, len);
    T_ASSERT(agent_client_put_file(c, fd, path, mode, 30000, &e) == 0, "put: %s", e.msg);
    close(fd);
}

static char *get(agent_client_t *c, const char *path, size_t *len)
{
    vhpc_err_t e;
    int fd = t_memfd_with("", 0);
    T_ASSERT(agent_client_get_file(c, path, fd, 30000, &e) == 0, "get: %s", e.msg);
    char *buf = t_slurp(fd, len);
    close(fd);
    return buf;
}

static void test_roundtrip(agent_client_t *c)
{
    char path[256];
    struct stat st;
    size_t len = (5u << 20) + 123, got_len;
    uint8_t *data = malloc(len);
    t_fill(data, len, 42, 0);

    snprintf(path, sizeof(path), "%s/big", t_tmpdir());
    put(c, data, len, path, 0640);
    T_ASSERT(stat(path, &st) == 0 && (size_t)st.st_size == len, "size %lld", (long long)st.st_size);
    T_ASSERT((st.st_mode & 07777) == 0640, "mode %o", st.st_mode & 07777);
    char *back = get(c, path, &got_len);
    T_ASSERT(got_len == len && t_fnv(back, len) == t_fnv(data, len), "got %zu bytes back", got_len);
    free(back);

    /* The command sees the same bytes. */
    struct t_out o;
    t_run(c, ARGV("cat", path), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && o.out_len == len && t_fnv(o.out, len) == t_fnv(data, len), "cat");
    t_out_free(&o);

    /* Overwriting truncates; modes are applied as given. */
    put(c, "short", 5, path, 0755);
    T_ASSERT(stat(path, &st) == 0 && st.st_size == 5 && (st.st_mode & 07777) == 0755, "rewrite");
    back = get(c, path, &got_len);
    T_ASSERT(got_len == 5 && memcmp(back, "short", 5) == 0, "rewrite content");
    free(back);

    snprintf(path, sizeof(path), "%s/empty", t_tmpdir());
    put(c, "", 0, path, 0600);
    back = get(c, path, &got_len);
    T_ASSERT(got_len == 0, "empty file came back with %zu bytes", got_len);
    free(back);
    free(data);
}

static void test_errors(agent_client_t *c)
{
    vhpc_err_t e;
    char path[256];
    int fd = t_memfd_with("x", 1);
    snprintf(path, sizeof(path), "%s/no/such/dir/f", t_tmpdir());
    int r = agent_client_put_file(c, fd, path, 0644, 10000, &e);
    T_ASSERT(r == -ENOENT, "put into a missing directory: %d %s", r, e.msg);
    T_ASSERT(strstr(e.msg, path) && strstr(e.msg, "No such file or directory"), "msg: %s", e.msg);
    close(fd);

    fd = t_memfd_with("", 0);
    r = agent_client_get_file(c, path, fd, 10000, &e);
    T_ASSERT(r == -ENOENT && strstr(e.msg, "No such file or directory"), "get missing: %s", e.msg);
    r = agent_client_get_file(c, t_tmpdir(), fd, 10000, &e);
    T_ASSERT(r == -EISDIR, "get a directory: %d %s", r, e.msg);
    r = agent_client_get_file(c, "/dev/null", fd, 10000, &e);
    T_ASSERT(r == -EINVAL, "get a device: %d %s", r, e.msg);
    size_t n;
    free(t_slurp(fd, &n));
    T_ASSERT(n == 0, "failed gets wrote %zu bytes", n);
    close(fd);

    /* After the failures the connection still works. */
    struct t_out o;
    t_run(c, ARGV("echo", "ok"), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && strcmp(o.out, "ok\n") == 0, "echo after errors");
    t_out_free(&o);
}

/* Each case has an agent of its own and a client connected to it. */
#define CASE(name)                                                                                 \
    static void case_##name(void)                                                                  \
    {                                                                                              \
        struct t_agent a;                                                                          \
        t_agent_start(&a, NULL);                                                                   \
        agent_client_t *c = t_agent_client(&a);                                                    \
        test_##name(c);                                                                            \
        agent_client_close(c);                                                                     \
        t_agent_stop(&a);                                                                          \
    }
CASE(roundtrip)
CASE(errors)

static const struct t_case cases[] = {
    {"roundtrip", case_roundtrip, 60},
    {"errors", case_errors, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
