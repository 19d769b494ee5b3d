/* schedule.c: scrape start times (schedule.h).  Pure; any thread. */
#include "schedule.h"

uint64_t
md_sched_slack(uint64_t interval_ns)
{
    uint64_t slack = interval_ns / MD_SCHED_SLACK_DIV;

    return slack < MD_SCHED_SLACK_MAX_NS ? slack : MD_SCHED_SLACK_MAX_NS;
}

int
md_sched_start(uint64_t due_ns, uint64_t now_ns, uint64_t interval_ns, unsigned *early)
{
    if (due_ns <= now_ns)
        return 1;
    if (*early >= MD_SCHED_EARLY_MAX || due_ns - now_ns > md_sched_slack(interval_ns))
        return 0;
    (*early)++;
    return 1;
}

uint64_t
md_sched_next(uint64_t due_ns, uint64_t now_ns, uint64_t step_ns)
{
    uint64_t next = due_ns + step_ns;

    /* a late start (a busy thread, a loaded machine) must not push every
     * later scrape back (it drifted 20 % under load, RELIABILITY 17); a
     * target more than a step behind skips the missed beats, keeping its
     * phase */
    if (next <= now_ns)
        next = now_ns + step_ns - (now_ns - next) % step_ns;
    return next;
}
