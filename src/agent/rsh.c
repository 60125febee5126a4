/*
 * rsh.c - vhpc-rsh, the rsh/ssh stand-in inside a virtual cluster: runs a
 * command in another VM through that VM's vhpc-agent (TCP port 7420), so that
 * `mpirun --mca plm_rsh_agent vhpc-rsh` starts its daemons without sshd.
 *
 *   vhpc-rsh [-l user] [-n] [-p port] HOST COMMAND [ARGS...]
 *
 * Like ssh, the arguments are joined with spaces and run by /bin/sh -c in
 * the remote VM; stdin is forwarded (unless -n), stdout and stderr come back
 * separately, and the exit status is the remote command's (128 + signal if
 * it was killed; 255 if the connection failed).  HOST is an IPv4 address or
 * a name from /etc/hosts (a static binary has no NSS).  -l and ssh's -x -T
 * -q -o OPT are accepted and ignored: the agent runs commands as itself.
 *
 * Every connection proves that it belongs to the job: vhpc-rsh reads the
 * job's key from AGENT_KEY_FILE (which the local agent got from the host
 * over virtio-serial; $VHPC_KEY_FILE elsewhere) and answers the remote
 * agent's challenge (agent_proto.h).  TCP keepalives notice a VM that
 * disappeared within about 15 s.  SIGINT/SIGTERM/SIGHUP are passed on to the
 * remote command; a second one makes vhpc-rsh give up at once, as ssh does.
 */
#include "agent_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: vhpc-rsh [-l user] [-n] [-p port] HOST COMMAND [ARGS...]\n");
    exit(255);
}

/* Look `name` up in /etc/hosts (IPv4 entries only). */
static bool hosts_lookup(const char *name, struct in_addr *out)
{
    FILE *f = fopen("/etc/hosts", "re");
    char line[1024];
    bool found = false;
    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "#\n")] = 0;
        char *save = NULL, *addr = strtok_r(line, " \t", &save);
        struct in_addr a;
        if (!addr || inet_pton(AF_INET, addr, &a) != 1)
            continue;
        for (char *n = strtok_r(NULL, " \t", &save); n && !found; n = strtok_r(NULL, " \t", &save))
            if (strcmp(n, name) == 0) {
                *out = a;
                found = true;
            }
    }
    fclose(f);
    return found;
}

/* The job key, from a file only its owner may read. */
static int read_key(uint8_t key[AGENT_KEY_LEN])
{
    const char *path = getenv("VHPC_KEY_FILE");
    if (!path || !*path)
        path = AGENT_KEY_FILE;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        fprintf(stderr,
                "vhpc-rsh: cannot read the job key %s: %s (vhpc-rsh works only inside a "
                "vhpc virtual cluster)\n",
                path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, key, AGENT_KEY_LEN);
    close(fd);
    if (n != AGENT_KEY_LEN) {
        fprintf(stderr, "vhpc-rsh: the job key %s is not %d bytes\n", path, AGENT_KEY_LEN);
        return -1;
    }
    return 0;
}

static void keepalive(int fd)
{
    int one = 1, idle = 5, intvl = 2, cnt = 3;
    unsigned user_timeout = 15000; /* unacknowledged data: give up after 15 s */
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

static int connect_host(const char *host, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 10};
    int one = 1;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 && !hosts_lookup(host, &a.sin_addr)) {
        fprintf(stderr, "vhpc-rsh: Could not resolve hostname %s: not in /etc/hosts\n", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() */
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            keepalive(fd);
            return fd;
        }
    }
    /* connect() bounded by SO_SNDTIMEO fails with EINPROGRESS: a timeout. */
    fprintf(stderr, "vhpc-rsh: connect to host %s port %d: %s\n", host, port,
            strerror(errno == EINPROGRESS ? ETIMEDOUT : errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

int main(int argc, char **argv)
{
    int port = AGENT_TCP_PORT, opt, status = 255;
    bool no_stdin = false;
    vhpc_err_t err = {0};
    agent_client_t *c;

    while ((opt = getopt(argc, argv, "+l:np:xTqo:")) != -1) {
        switch (opt) {
        case 'n': no_stdin = true; break;
        case 'p': port = atoi(optarg); break;
        case 'l':
        case 'x':
        case 'T':
        case 'q':
        case 'o': break;
        default: usage();
        }
    }
    if (argc - optind < 2)
        usage();
    const char *host = argv[optind];
    const char *at = strrchr(host, '@'); /* user@host */
    if (at)
        host = at + 1;

    /* The command line, as ssh sends it: the arguments joined by spaces. */
    size_t len = 1;
    for (int i = optind + 1; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *cmd = calloc(1, len);
    if (!cmd)
        return 255;
    for (int i = optind + 1; i < argc; i++) {
        if (i > optind + 1)
            strcat(cmd, " ");
        strcat(cmd, argv[i]);
    }

    uint8_t key[AGENT_KEY_LEN];
    if (read_key(key) < 0)
        return 255;
    int fd = connect_host(host, port);
    if (fd < 0)
        return 255;
    if (agent_client_open_fd(fd, host, &c, &err) < 0 ||
        agent_client_auth(c, key, 10000, &err) < 0) {
        fprintf(stderr, "vhpc-rsh: %s\n", err.msg);
        return 255;
    }
    const char *sh_argv[] = {"/bin/sh", "-c", cmd, NULL};
    struct agent_exec_req req = {.argv = sh_argv};
    /* mpirun stops its daemons by signalling us: the remote command gets it. */
    struct agent_run_io io = {.stdin_fd = no_stdin ? -1 : STDIN_FILENO,
                              .stdout_fd = STDOUT_FILENO,
                              .stderr_fd = STDERR_FILENO,
                              .signal_fd = agent_client_signalfd(),
                              .timeout_ms = -1,
                              .second_signal_ends = true};
    int r = agent_client_run(c, &req, &io, &status, &err);
    if (r < 0) {
        fprintf(stderr, "vhpc-rsh: %s: %s\n", host, err.msg);
        /* A remote shell that cannot be started: the shell's codes. */
        if (r != -EINTR)
            status = r == -ENOENT ? 127 : r == -EACCES || r == -ENOEXEC ? 126 : 255;
    }
    agent_client_close(c);
    free(cmd);
    return status;
}
