/*
 * test_store_trust.c - the image store against damage and other users
 * (issue 9): an index (refs.json) or a manifest that cannot be read is an
 * error and gc removes nothing then; the index is replaced atomically with
 * the previous one kept; blobs, manifests and the lock file are private
 * unless published; a busy lock is waited for a bounded time, naming the
 * file and the pid that holds it.
 */
#include "vhpc/store.h"
#include "testutil.h"
#include "lock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct vhpc_store *st;
static vhpc_err_t err;
static char sdir[600];

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    T_ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0, "%s", path);
}

static char *read_text(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    T_ASSERT(f, "%s", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static unsigned mode_of(const char *path)
{
    struct stat sb;
    T_ASSERT(stat(path, &sb) == 0, "%s", path);
    return sb.st_mode & 07777;
}

static int count(const char *sub)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/%s", sdir, sub);
    DIR *d = opendir(p);
    T_ASSERT(d, "%s", p);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Make everything in the store two hours old: past gc's grace period, so
 * a gc that took the store for empty would remove it all. */
static void age_all(void)
{
    static const char *const subs[] = {"blobs", "images", NULL};
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    for (int i = 0; subs[i]; i++) {
        char p[700];
        snprintf(p, sizeof(p), "%s/%s", sdir, subs[i]);
        DIR *d = opendir(p);
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                utimensat(dirfd(d), de->d_name, old, 0);
        closedir(d);
    }
}

static void make_image(const char *name, unsigned seed, char digest[65], char blob[65])
{
    char path[700];
    uint64_t size;
    snprintf(path, sizeof(path), "%s/in-%u", t_tmpdir(), seed);
    char text[64];
    snprintf(text, sizeof(text), "blob %u\n", seed);
    write_text(path, text);
    T_ASSERT(vhpc_store_add_blob(st, path, 0, blob, &size, &err) == 0, "blob: %s", err.msg);
    json_t *m = json_pack("{s:s, s:{s:{s:s, s:I}}}", "kind", "full", "blobs", "rootfs", "digest",
                          blob, "size", (json_int_t)size);
    T_ASSERT(vhpc_store_put_manifest(st, m, digest, &err) == 0, "manifest: %s", err.msg);
    json_decref(m);
    T_ASSERT(vhpc_store_tag(st, name, 0, digest, NULL, &err) == 0, "tag: %s", err.msg);
}

static int count_ref(const struct vhpc_ref *r, void *arg)
{
    (void)r;
    ++*(int *)arg;
    return 0;
}

/* The index is damaged: nothing reads it as empty and nothing changes. */
static void expect_refused(const char *what, const char *refs_text)
{
    char p[700], before[65536];
    struct vhpc_gc_stats gs = {0};
    struct vhpc_ref ref;
    int n = 0, blobs = count("blobs"), images = count("images");
    snprintf(p, sizeof(p), "%s/refs.json", sdir);
    if (refs_text)
        write_text(p, refs_text);
    snprintf(before, sizeof(before), "%s", refs_text ? read_text(p) : "");
    age_all();
    T_ASSERT(vhpc_store_refs(st, count_ref, &n, &err) < 0 && n == 0, "%s: refs listed", what);
    T_ASSERT(strstr(err.msg, "refs.json") && strstr(err.msg, "nothing was changed"),
             "%s: message: %s", what, err.msg);
    T_ASSERT(vhpc_store_resolve(st, "a", &ref, &err) < 0 && strstr(err.msg, "refs.json"),
             "%s: resolve: %s", what, err.msg);
    T_ASSERT(vhpc_store_gc(st, &gs, &err) < 0, "%s: gc went ahead", what);
    T_ASSERT(gs.images == 0 && gs.blobs == 0, "%s: gc removed something", what);
    T_ASSERT(count("blobs") == blobs && count("images") == images, "%s: files removed", what);
    char digest[65], blob[65];
    (void)digest;
    (void)blob;
    T_ASSERT(vhpc_store_untag(st, "a", &n, &err) < 0, "%s: untag went ahead", what);
    T_ASSERT(vhpc_store_make_room(st, 1, NULL, &gs, &err) == 0, "make_room without budget");
    if (refs_text)
        T_ASSERT(!strcmp(read_text(p), before), "%s: the damaged index was rewritten", what);
}

static int notices;
static char notice[1024];
static void on_notice(const char *msg)
{
    notices++;
    snprintf(notice, sizeof(notice), "%s", msg);
}

static int hold_lock(void *arg)
{
    int *pipes = arg; /* [0]: wait for EOF; [1]: tell "locked"; [2]: the parent's end of [0] */
    char p[700];
    snprintf(p, sizeof(p), "%s/lock", sdir);
    int fd = open(p, O_RDWR);
    if (fd < 0 || flock(fd, LOCK_EX) < 0)
        return 1;
    close(pipes[2]);
    t_put_byte(pipes[1]);
    close(pipes[1]);
    t_wait_eof(pipes[0]);
    return 0;
}

static char root[600];
static char d1[65], b1[65], d2[65], b2[65];

/* A store of its own with two versions of image a (d1/b1, d2/b2). */
static void setup(void)
{
    snprintf(root, sizeof(root), "%s/s", t_tmpdir());
    T_ASSERT(vhpc_store_open(root, &st, &err) == 0, "open: %s", err.msg);
    snprintf(sdir, sizeof(sdir), "%s", vhpc_store_dir(st));
    make_image("a", 1, d1, b1);
    make_image("a", 2, d2, b2);
}

/* Then a published image with a:1's content (the same blob). */
static void add_published(void)
{
    char d3[65], b3[65];
    vhpc_store_publish(1);
    make_image("pub", 1, d3, b3);
    vhpc_store_publish(0);
    T_ASSERT(!strcmp(b3, b1), "same content, same blob");
}

/* Who can read what: private modes; published: new files 0444, and an
 * existing private blob becomes so. */
static void test_modes(void)
{
    char p[700];
    setup();
    snprintf(p, sizeof(p), "%s/blobs/%s", sdir, b1);
    T_ASSERT(mode_of(p) == 0400, "blob mode %o", mode_of(p));
    snprintf(p, sizeof(p), "%s/images/%s.json", sdir, d1);
    T_ASSERT(mode_of(p) == 0400, "manifest mode %o", mode_of(p));
    snprintf(p, sizeof(p), "%s/lock", sdir);
    T_ASSERT(mode_of(p) == 0600, "lock mode %o", mode_of(p));
    snprintf(p, sizeof(p), "%s/tmp", sdir);
    T_ASSERT(mode_of(p) == 0700, "tmp mode %o", mode_of(p));
    add_published();
    snprintf(p, sizeof(p), "%s/blobs/%s", sdir, b1);
    T_ASSERT(mode_of(p) == 0444, "published blob mode %o", mode_of(p));
    snprintf(p, sizeof(p), "%s/blobs/%s", sdir, b2);
    T_ASSERT(mode_of(p) == 0400, "a private blob stays private: %o", mode_of(p));
    vhpc_store_close(st);
}

/* The index: the previous one kept, a damaged one refused. */
static void test_index(void)
{
    char p[700];
    setup();
    add_published();
    snprintf(p, sizeof(p), "%s/refs.json.prev", sdir);
    T_ASSERT(access(p, F_OK) == 0 && !strstr(read_text(p), "\"pub\""),
             "refs.json.prev is the index before the last change");
    int n = 0;
    T_ASSERT(vhpc_store_refs(st, count_ref, &n, &err) == 0 && n == 3, "3 refs: %d", n);
    static char good[65536];
    snprintf(p, sizeof(p), "%s/refs.json", sdir);
    snprintf(good, sizeof(good), "%s", read_text(p));

    expect_refused("truncated", "{\"a\": [{\"version\": 1, \"dig");
    expect_refused("not an object", "[1, 2]");
    expect_refused("a list that is not a list", "{\"a\": 5}");
    expect_refused("an entry without a digest", "{\"a\": [{\"version\": 1}]}");
    expect_refused("a bad name", "{\"../x\": []}");
    expect_refused("empty file", "");
    snprintf(p, sizeof(p), "%s/refs.json", sdir);
    T_ASSERT(unlink(p) == 0, "unlink");
    expect_refused("missing, with refs.json.prev there", NULL);
    T_ASSERT(strstr(err.msg, "cp -p"), "says how to restore: %s", err.msg);
    write_text(p, good);
    n = 0;
    T_ASSERT(vhpc_store_refs(st, count_ref, &n, &err) == 0 && n == 3, "restored: %d", n);
    vhpc_store_close(st);
}

/* A damaged manifest of a named image: gc frees nothing, and removing
 * another image frees none of the blobs either. */
static void test_damaged_manifest(void)
{
    char p[700];
    int n;
    setup();
    add_published();
    snprintf(p, sizeof(p), "%s/images/%s.json", sdir, d2);
    chmod(p, 0600);
    write_text(p, "{\"blobs\": ");
    age_all();
    struct vhpc_gc_stats gs = {0};
    int blobs = count("blobs"), images = count("images");
    T_ASSERT(vhpc_store_gc(st, &gs, &err) < 0 && strstr(err.msg, d2), "gc: %s", err.msg);
    T_ASSERT(count("blobs") == blobs && count("images") == images && !gs.blobs && !gs.images,
             "gc removed something despite a damaged manifest");
    vhpc_err_clear(&err);
    T_ASSERT(vhpc_store_remove(st, d1, &n, &gs, &err) < 0 && strstr(err.msg, "no blob"), "rm: %s",
             err.msg);
    T_ASSERT(count("blobs") == blobs, "rm freed a blob the damaged manifest may name");
    vhpc_store_close(st);
}

/* A busy lock: the wait is bounded and says who holds it. */
static void test_busy_lock(void)
{
    char p[700];
    setup();
    int ready[2], release[2];
    T_ASSERT(pipe(ready) == 0 && pipe(release) == 0, "pipe");
    int child_pipes[3] = {release[0], ready[1], release[1]};
    pid_t holder = t_fork(hold_lock, child_pipes);
    close(ready[1]);
    close(release[0]);
    char c;
    T_ASSERT(read(ready[0], &c, 1) == 1, "the child holds the lock");
    vhpc_set_lock_notice(on_notice);
    setenv("VHPC_LOCK_TIMEOUT", "1", 1);
    char pid[32];
    snprintf(pid, sizeof(pid), "pid %d", (int)holder);
    T_ASSERT(vhpc_store_tag(st, "b", 0, d1, NULL, &err) == -ETIMEDOUT, "tag: %s", err.msg);
    snprintf(p, sizeof(p), "%s/lock", sdir);
    T_ASSERT(strstr(err.msg, p) && strstr(err.msg, pid) && strstr(err.msg, "VHPC_LOCK_TIMEOUT"),
             "timeout message: %s", err.msg);
    T_ASSERT(notices == 1 && strstr(notice, "waiting for the store lock") && strstr(notice, pid),
             "notice (%d): %s", notices, notice);
    close(release[1]);
    T_ASSERT(t_wait_bounded(holder, 10000, "lock holder") == 0, "lock holder");
    unsetenv("VHPC_LOCK_TIMEOUT");
    T_ASSERT(vhpc_store_tag(st, "b", 0, d1, NULL, &err) == 0, "tag once free: %s", err.msg);
    vhpc_store_close(st);
}

/* A lock in a directory others can write is refused (they could put a
 * lock file of their own there); opening the store tightens such a
 * directory of ours again. */
static void test_lock_dir_writable(void)
{
    setup();
    struct vhpc_store *st2;
    T_ASSERT(vhpc_store_open(root, &st2, &err) == 0, "open: %s", err.msg);
    T_ASSERT(chmod(sdir, 0777) == 0, "chmod");
    T_ASSERT(vhpc_store_lock(st2, &err) == -EPERM && strstr(err.msg, "chmod go-w"), "lock: %s",
             err.msg);
    struct vhpc_store *st3;
    T_ASSERT(vhpc_store_open(root, &st3, &err) == 0, "open: %s", err.msg);
    T_ASSERT(mode_of(sdir) == 0755, "store directory mode %o", mode_of(sdir));
    vhpc_store_close(st3);
    T_ASSERT(vhpc_store_lock(st2, &err) == 0, "lock: %s", err.msg);
    vhpc_store_unlock(st2);
    vhpc_store_close(st2);
    vhpc_store_close(st);
}

static const struct t_case cases[] = {
    {"modes", test_modes, 30},
    {"index", test_index, 30},
    {"damaged_manifest", test_damaged_manifest, 30},
    {"busy_lock", test_busy_lock, 30},
    {"lock_dir_writable", test_lock_dir_writable, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
