/*
 * progress.h - progress bars for long builds and transfers, shown through
 * the program's output sink (output.h; none: nothing is shown).
 *
 * On a terminal: one line redrawn at most 10 times a second,
 *   "push mpi:3   [#########-----------]  45%  47.1/104.9 MB  98.2 MB/s  0:01"
 * and finished with the total and the time.  Not a terminal (logs, tests):
 * one line at the start, one per 25 %, one at the end, so a log shows the
 * motion without drowning.  $VHPC_PROGRESS=0 silences it, =1 forces the
 * terminal form.  total 0 = unknown: a counter instead of a bar.
 * Steps (debootstrap's "Retrieving", "Installing") are shown with
 * vhpc_progress_step.
 */
#ifndef VHPC_PROGRESS_H
#define VHPC_PROGRESS_H

#include <stdint.h>

struct vhpc_progress {
    char label[96];
    char step[96];
    uint64_t total, done;
    int64_t start_ms, last_ms;
    int mode;     /* 0 off, 1 terminal, 2 log */
    int last_pct; /* log mode: the last quarter printed */
    int units;    /* 0 bytes, 1 plain count */
};

void vhpc_progress_start(struct vhpc_progress *p, const char *label, uint64_t total);
/* The same for counts of things (packages), not bytes. */
void vhpc_progress_start_count(struct vhpc_progress *p, const char *label, uint64_t total);
void vhpc_progress_set(struct vhpc_progress *p, uint64_t done);
void vhpc_progress_add(struct vhpc_progress *p, uint64_t delta);
void vhpc_progress_step(struct vhpc_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Final line: "label: 104.9 MB in 1.07 s (98.0 MB/s)" or "... failed". */
void vhpc_progress_done(struct vhpc_progress *p, int ok);

#endif
