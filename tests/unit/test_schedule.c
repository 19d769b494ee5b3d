/* test_schedule.c: scrape start times (schedule.h): the slack, the cap on
 * early starts, the next due time after early, on-time and late starts, and
 * a simulated scrape thread over 200 targets for 100 intervals checking that
 * every beat of every target starts exactly once, never earlier than the
 * slack, and that scrapes share wake-ups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"

#define MS 1000000ULL

static void
test_slack(void **state)
{
    (void)state;
    assert_int_equal(md_sched_slack(2000 * MS), 200 * MS);     /* 1/10 */
    assert_int_equal(md_sched_slack(1000 * MS), 100 * MS);
    assert_int_equal(md_sched_slack(100 * MS), 10 * MS);       /* the shortest interval */
    assert_int_equal(md_sched_slack(15000 * MS), 200 * MS);    /* capped */
    assert_int_equal(md_sched_slack(86400000 * MS), 200 * MS);
    assert_int_equal(md_sched_slack(0), 0);
}

static void
test_start(void **state)
{
    unsigned early = 0;
    uint64_t now = 5000 * MS, iv = 2000 * MS;

    (void)state;
    /* due or overdue: always, and not counted as early */
    assert_true(md_sched_start(now, now, iv, &early));
    assert_true(md_sched_start(now - 3000 * MS, now, iv, &early));
    assert_int_equal(early, 0);
    /* within the slack, to its last nanosecond */
    assert_true(md_sched_start(now + 200 * MS, now, iv, &early));
    assert_int_equal(early, 1);
    assert_false(md_sched_start(now + 200 * MS + 1, now, iv, &early));
    assert_int_equal(early, 1);
    /* the slack follows the interval */
    assert_false(md_sched_start(now + 110 * MS, now, 1000 * MS, &early));
    assert_true(md_sched_start(now + 100 * MS, now, 1000 * MS, &early));
    assert_int_equal(early, 2);
    /* the cap on early starts per wake-up; due ones still start */
    while (early < MD_SCHED_EARLY_MAX)
        assert_true(md_sched_start(now + 1, now, iv, &early));
    assert_false(md_sched_start(now + 1, now, iv, &early));
    assert_true(md_sched_start(now, now, iv, &early));
    assert_int_equal(early, MD_SCHED_EARLY_MAX);
}

static void
test_next(void **state)
{
    (void)state;
    /* started early or on time: the phase stays */
    assert_int_equal(md_sched_next(1000, 990, 100), 1100);
    assert_int_equal(md_sched_next(1000, 1000, 100), 1100);
    /* late by less than a step: still the next beat */
    assert_int_equal(md_sched_next(1000, 1099, 100), 1100);
    /* late by a step or more: the missed beats are skipped, phase kept */
    assert_int_equal(md_sched_next(1000, 1100, 100), 1200);
    assert_int_equal(md_sched_next(1000, 1250, 100), 1300);
    assert_int_equal(md_sched_next(1000, 1200, 100), 1300);
    assert_int_equal(md_sched_next(1000, 1000 + 7 * 100 + 1, 100), 1800);
    /* a backing-off target (a multiple of the interval) */
    assert_int_equal(md_sched_next(1000, 1000, 800), 1800);
}

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint64_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* The scrape thread's loop without transfers: wake at the earliest due time,
 * start what md_sched_start allows.  Each target's k-th start must belong to
 * its k-th beat (phase + k * interval), at most the slack early, and every
 * beat up to the end must have started. */
static void
test_simulated_thread(void **state)
{
    enum { N = 200, BEATS = 100 };
    const uint64_t iv = 2000 * MS, slack = md_sched_slack(iv), t0 = 1000000 * MS;
    uint64_t phase[N], due[N], starts[N] = { 0 };
    uint64_t now = t0, end = t0 + BEATS * iv, wakeups = 0, scrapes = 0;
    unsigned max_batch = 0;

    (void)state;
    for (int i = 0; i < N; i++)
        due[i] = phase[i] = t0 + rnd() % iv;
    while (now < end) {
        unsigned early = 0, batch = 0;
        uint64_t next = UINT64_MAX;

        wakeups++;
        for (int i = 0; i < N; i++) {
            if (md_sched_start(due[i], now, iv, &early)) {
                uint64_t beat = phase[i] + starts[i] * iv;

                assert_int_equal(due[i], beat);
                assert_true(now + slack >= beat);       /* never earlier than the slack */
                assert_true(now <= beat);               /* this loop is never late */
                starts[i]++;
                scrapes++;
                batch++;
                due[i] = md_sched_next(due[i], now, iv);
                assert_true(due[i] > now);
            }
            if (due[i] < next)
                next = due[i];
        }
        if (batch > max_batch)
            max_batch = batch;
        assert_true(early <= MD_SCHED_EARLY_MAX);
        assert_true(next > now);
        now = next;
    }
    for (int i = 0; i < N; i++) {
        /* beats strictly before the end, all started */
        uint64_t want = (end - phase[i] + iv - 1) / iv;

        assert_true(starts[i] == want || starts[i] == want + 1);  /* + one early start */
    }
    /* 100 scrapes/s with a 200 ms slack: one wake-up per scrape was the old
     * behaviour; groups of ~9 (at most 8 early) leave well under one in four */
    assert_true(wakeups * 4 < scrapes);
    /* the groups stay spread over the interval: no wake-up starts a large
     * share of the targets */
    assert_true(max_batch <= MD_SCHED_EARLY_MAX + 1);
    assert_true(wakeups >= BEATS * 10);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slack),
        cmocka_unit_test(test_start),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_simulated_thread),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
