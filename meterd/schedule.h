/* schedule.h: when a target's scrape starts, and when its next one is due.
 *
 * Pure arithmetic on monotonic nanoseconds, no I/O, no state of its own: the
 * scrape thread keeps each target's due time and calls these on its turn.
 *
 * Every target keeps a phase inside its interval (its first due time is a
 * hashed offset), so targets are spread over the interval and do not fire
 * together.  A scrape may start up to md_sched_slack() before it is due, so
 * that scrapes due close together share one wake-up of the scrape thread:
 * each wake-up through an idle CPU costs a context switch, tens of
 * microseconds on a virtual machine, and one wake-up per scrape was ~1.8
 * switches and ~15 % of meterd's CPU at 200 targets (bench/RESULTS.md,
 * issue 4).  A wake-up for an answer starts the scrapes due within the
 * slack too, so a wider slack saves more than the timer wake-ups: 1/10 of
 * the interval (at most 200 ms) took another ~12 % off meterd's CPU per
 * sample against 1/20 (at most 100 ms).  At most MD_SCHED_EARLY_MAX scrapes
 * start early per wake-up, so a large target set never starts a whole slack
 * window's worth at once (16 measured the same CPU as 8, with more bodies
 * in flight).
 *
 * Invariants: a scrape starts at most md_sched_slack(interval) early and is
 * never started before that; the next due time counts from the due time,
 * not from the start, so early or late starts do not move the phase, and a
 * target more than a step behind skips the beats it missed.
 * md_sched_next() > now always (no busy loop). */
#ifndef MD_SCHEDULE_H
#define MD_SCHEDULE_H

#include <stdint.h>

/* slack: 1/MD_SCHED_SLACK_DIV of the interval, at most MD_SCHED_SLACK_MAX_NS */
#define MD_SCHED_SLACK_DIV    10u
#define MD_SCHED_SLACK_MAX_NS 200000000ULL      /* 200 ms */
/* scrapes started before their due time in one wake-up, at most */
#define MD_SCHED_EARLY_MAX    8u

/* how early a scrape with this interval may start */
uint64_t md_sched_slack(uint64_t interval_ns);

/* 1 when a scrape due at due_ns starts at now_ns: it is due, or due within
 * the slack and fewer than MD_SCHED_EARLY_MAX started early in this wake-up
 * (*early counts them; the caller zeroes it per wake-up) */
int md_sched_start(uint64_t due_ns, uint64_t now_ns, uint64_t interval_ns, unsigned *early);

/* the due time after a scrape due at due_ns started at now_ns, step_ns
 * apart (the interval, or a multiple of it while a target backs off; > 0) */
uint64_t md_sched_next(uint64_t due_ns, uint64_t now_ns, uint64_t step_ns);

#endif
