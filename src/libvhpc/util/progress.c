/*
 * progress.c - progress bars, through the program's output sink
 * (output.h; behaviour: progress.h).
 */
#include "progress.h"
#include "clock.h"
#include "output.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int pick_mode(void)
{
    const char *e = getenv("VHPC_PROGRESS");
    if ((e && !strcmp(e, "0")) || !vhpc__output_on())
        return 0;
    if ((e && !strcmp(e, "1")) || vhpc__output_tty())
        return 1;
    return 2;
}

/* "47.1 MB" or "312" */
static void amount(const struct vhpc_progress *p, uint64_t v, char *buf, size_t len)
{
    if (p->units)
        snprintf(buf, len, "%" PRIu64, v);
    else
        snprintf(buf, len, "%.1f MB", (double)v / 1e6);
}

static void start(struct vhpc_progress *p, const char *label, uint64_t total, int units)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->label, sizeof(p->label), "%s", label);
    p->total = total;
    p->units = units;
    p->mode = pick_mode();
    p->start_ms = vhpc_now_ms();
    p->last_pct = -1;
    if (p->mode == 2) {
        char t[32];
        amount(p, total, t, sizeof(t));
        vhpc__say("%s: started%s%s\n", p->label, total ? ", " : "", total ? t : "");
        p->last_pct = 0;
    }
}

void vhpc_progress_start(struct vhpc_progress *p, const char *label, uint64_t total)
{
    start(p, label, total, 0);
}

void vhpc_progress_start_count(struct vhpc_progress *p, const char *label, uint64_t total)
{
    start(p, label, total, 1);
}

static void draw(struct vhpc_progress *p, int force)
{
    int64_t t = vhpc_now_ms();
    if (p->mode == 0)
        return;
    if (p->mode == 2) {
        if (!p->total)
            return;
        int pct = (int)(p->done * 100 / p->total);
        if (pct / 25 > p->last_pct / 25 && pct < 100) {
            char d[32], tot[32];
            amount(p, p->done, d, sizeof(d));
            amount(p, p->total, tot, sizeof(tot));
            vhpc__say("%s: %d%% (%s of %s)%s%s\n", p->label, pct, d, tot, p->step[0] ? ", " : "",
                      p->step);
            p->last_pct = pct;
        }
        return;
    }
    if (!force && t - p->last_ms < 100)
        return;
    p->last_ms = t;
    double secs = (double)(t - p->start_ms) / 1000;
    char d[32], tot[32], rate[32] = "";
    amount(p, p->done, d, sizeof(d));
    amount(p, p->total, tot, sizeof(tot));
    if (!p->units && secs > 0.2)
        snprintf(rate, sizeof(rate), "  %.1f MB/s", (double)p->done / 1e6 / secs);
    char bar[32] = "";
    if (p->total) {
        int fill = (int)(p->done * 20 / p->total);
        if (fill > 20)
            fill = 20;
        for (int i = 0; i < 20; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[20] = 0;
        vhpc__say("\r\033[K%s [%s] %3d%%  %s/%s%s  %d:%02d%s%s", p->label, bar,
                  (int)(p->done * 100 / p->total), d, tot, rate, (int)secs / 60, (int)secs % 60,
                  p->step[0] ? "  " : "", p->step);
    } else {
        vhpc__say("\r\033[K%s %s%s  %d:%02d%s%s", p->label, d, rate, (int)secs / 60, (int)secs % 60,
                  p->step[0] ? "  " : "", p->step);
    }
}

void vhpc_progress_set(struct vhpc_progress *p, uint64_t done)
{
    p->done = done;
    draw(p, 0);
}

void vhpc_progress_add(struct vhpc_progress *p, uint64_t delta)
{
    p->done += delta;
    draw(p, 0);
}

void vhpc_progress_step(struct vhpc_progress *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->step, sizeof(p->step), fmt, ap);
    va_end(ap);
    if (p->mode == 2 && !p->total)
        vhpc__say("%s: %s\n", p->label, p->step);
    draw(p, 1);
}

void vhpc_progress_done(struct vhpc_progress *p, int ok)
{
    if (p->mode == 0)
        return;
    double secs = (double)(vhpc_now_ms() - p->start_ms) / 1000;
    char d[32];
    amount(p, p->done, d, sizeof(d));
    if (p->mode == 1)
        vhpc__say("\r\033[K");
    if (!ok)
        vhpc__say("%s: failed after %.2f s\n", p->label, secs);
    else if (p->units || secs < 0.01)
        vhpc__say("%s: %s in %.2f s\n", p->label, d, secs);
    else
        vhpc__say("%s: %s in %.2f s (%.1f MB/s)\n", p->label, d, secs,
                  (double)p->done / 1e6 / secs);
}
