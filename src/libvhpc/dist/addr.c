/*
 * addr.c - the addresses and sizes of dist.h: a node's "HOST[:PORT]" (or
 * "[V6ADDR][:PORT]") resolved to a socket address, a socket address printed
 * as every log line and credential names it ("ip:port"), and the sizes
 * the CLI's options take ("64M", "2GiB").
 */
#include "vhpc/dist.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vhpc_dist_resolve(const char *spec, struct sockaddr_storage *sa, socklen_t *salen,
                      vhpc_err_t *err)
{
    char host[256], port[16];
    const char *colon;
    if (!spec || !*spec || strlen(spec) >= sizeof(host))
        return vhpc_err_setmsg(err, -EINVAL, "'%s' is not a node address (HOST[:PORT])",
                               spec ? spec : "");
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || (close[1] && close[1] != ':'))
            return vhpc_err_setmsg(err, -EINVAL, "'%s' is not a node address ([V6ADDR][:PORT])",
                                   spec);
        snprintf(host, sizeof(host), "%.*s", (int)(close - spec - 1), spec + 1);
        colon = close[1] ? close + 1 : NULL;
    } else {
        colon = strchr(spec, ':');
        if (colon && strchr(colon + 1, ':'))
            return vhpc_err_setmsg(err, -EINVAL,
                                   "'%s': write an IPv6 address in brackets, [ADDR]:PORT", spec);
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - spec) : (int)strlen(spec), spec);
    }
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || p <= 0 || p > 65535)
            return vhpc_err_setmsg(err, -EINVAL, "'%s': the port must be a number 1..65535", spec);
        snprintf(port, sizeof(port), "%ld", p);
    } else {
        snprintf(port, sizeof(port), "%d", VHPC_DIST_PORT);
    }
    if (!host[0])
        return vhpc_err_setmsg(err, -EINVAL, "'%s' names no host", spec);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g)
        return vhpc_err_setmsg(err, -ENOENT, "node '%s': cannot resolve '%s' (%s)", spec, host,
                               g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

void vhpc_dist_addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
}
