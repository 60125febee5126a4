/*
 * clock.h - milliseconds of the monotonic clock, and sleeping.
 */
#ifndef VHPC_CLOCK_H
#define VHPC_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds: for timeouts and durations. */
int64_t vhpc_now_ms(void);
/* Sleep ms milliseconds (a signal may end it early). */
void vhpc_sleep_ms(int ms);

#endif
