/*
 * qmp.h - a small client for QEMU's machine protocol (QMP) over a UNIX
 * socket: JSON objects, one per line.  Commands are synchronous; events that
 * arrive meanwhile are kept until qmp_wait_event() asks for them.
 */
#ifndef VHPC_QMP_H
#define VHPC_QMP_H

#include "error.h"

#include <jansson.h>
#include <stddef.h>

#define QMP_MAX_EVENTS 64

struct qmp {
    int fd;
    char *buf; /* bytes received, not yet parsed */
    size_t len, cap;
    json_t *events[QMP_MAX_EVENTS]; /* events received during commands */
    int nevents;
};

/* Connect to `path` (retrying until `timeout_ms`: QEMU creates it while it
 * starts), read the greeting and enter command mode. */
int qmp_connect(struct qmp *q, const char *path, int timeout_ms, vhpc_err_t *err);

/* Run `cmd` with `args` (stolen; may be NULL).  On success *ret (optional)
 * gets the "return" value (caller decrefs).  A QMP error becomes the error
 * message "QMP cmd: <desc>". */
int qmp_command(struct qmp *q, const char *cmd, json_t *args, json_t **ret, int timeout_ms,
                vhpc_err_t *err);

/* Wait for event `name` (already received or new); *data (optional) gets
 * its "data" member (caller decrefs).  Returns -ETIMEDOUT after timeout_ms. */
int qmp_wait_event(struct qmp *q, const char *name, json_t **data, int timeout_ms, vhpc_err_t *err);

void qmp_close(struct qmp *q);

#endif
