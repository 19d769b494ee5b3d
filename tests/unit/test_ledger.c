/* test_ledger.c: the ledger's rules R1-R10 (ledger.h), hour splitting,
 * staging/commit/rollback, restore, limits and allocation failure.
 * Expected values are worked out by hand in the comments next to them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"
#include "util.h"

#define DAY0   1795737600ull          /* 2026-11-27T00:00:00Z */
#define H      3600ull
#define NS     1000000000ull
#define AT(h, m, s) \
    ((DAY0 + (uint64_t)(h) * H + (uint64_t)(m) * 60u + (uint64_t)(s)) * NS)
#define HOUR(h) (DAY0 + (uint64_t)(h) * H)  /* hour_start_s of hour h */
#define MISSING (-12345.0)                    /* marker: series absent */
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---- */

static struct md_ledger *
new_ledger(size_t max)
{
    struct md_ledger *l = md_ledger_new(max);

    assert_non_null(l);
    return l;
}

static struct md_ledger_input
in_v(const char *key, double v)
{
    struct md_ledger_input x;

    memset(&x, 0, sizeof(x));
    x.key = key;
    x.key_len = strlen(key);
    x.value = v;
    return x;
}

/* apply + commit; fails the test on an error */
static struct md_ledger_result
scrape(struct md_ledger *l, uint32_t target, int initial,
    enum md_first_scrape pol, uint64_t now_ns,
    const struct md_ledger_input *in, size_t n)
{
    struct md_ledger_result r;
    struct md_err err = {0};
    int rc = md_ledger_apply(l, target, initial, pol, now_ns, in, n, &r, &err);

    if (rc != MD_OK)
        fail_msg("apply: rc %d: %s", rc, err.msg);
    md_ledger_commit(l);
    return r;
}

/* tokens billed to input i in r */
static uint64_t
billed_to(const struct md_ledger_result *r, size_t i)
{
    uint64_t sum = 0;

    for (size_t k = 0; k < r->delta_count; k++)
        if (r->deltas[k].input_index == i)
            sum += r->deltas[k].amount;
    return sum;
}

static uint64_t
value_of(const struct md_ledger *l, uint32_t target, const char *key)
{
    struct md_ledger_state st;

    if (md_ledger_get(l, target, key, strlen(key), &st) != MD_OK)
        return UINT64_MAX;
    return st.value;
}

/* A sorted copy of every live state, to compare ledgers exactly. */
struct row {
    uint32_t target;
    char key[64];
    uint64_t value, ts_ns;
    int has_created;
    double created;
};

struct dump {
    struct row rows[512];
    size_t n;
};

static int
dump_one(const struct md_ledger_state *s, void *ctx)
{
    struct dump *d = ctx;
    struct row *r;

    assert_true(d->n < NELEM(d->rows));
    assert_true(s->key_len < sizeof(r->key));
    r = &d->rows[d->n++];
    memset(r, 0, sizeof(*r));
    r->target = s->target;
    memcpy(r->key, s->key, s->key_len);
    r->value = s->value;
    r->ts_ns = s->ts_ns;
    r->has_created = s->has_created;
    r->created = s->has_created ? s->created : 0.0;
    return 0;
}

static int
row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;

    if (x->target != y->target)
        return x->target < y->target ? -1 : 1;
    return strcmp(x->key, y->key);
}

static void
dump_ledger(const struct md_ledger *l, struct dump *d)
{
    d->n = 0;
    assert_int_equal(md_ledger_each(l, dump_one, d), 0);
    qsort(d->rows, d->n, sizeof(d->rows[0]), row_cmp);
}

static void
assert_same_dump(const struct dump *a, const struct dump *b, const char *what)
{
    if (a->n != b->n)
        fail_msg("%s: %zu states, want %zu", what, b->n, a->n);
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(&a->rows[i], &b->rows[i], sizeof(a->rows[i])) != 0)
            fail_msg("%s: state %zu (target %u \"%s\") differs: value %llu "
                "ts %llu, want value %llu ts %llu", what, i, a->rows[i].target,
                a->rows[i].key, (unsigned long long)b->rows[i].value,
                (unsigned long long)b->rows[i].ts_ns,
                (unsigned long long)a->rows[i].value,
                (unsigned long long)a->rows[i].ts_ns);
}

/* ---- R1, R4, R5, R6, R8 on one series: value sequences ---- */

static void
test_sequences(void **state)
{
    static const struct {
        const char *name;
        int initial;
        enum md_first_scrape pol;
        double v[6];
        uint64_t want[6];           /* billed per scrape */
        size_t nsteps;
    } cases[] = {
        { "increase (non-initial target counts in full)", 0, MD_FIRST_BASELINE,
          { 10, 15, 15, 20 }, { 10, 5, 0, 5 }, 4 },
        { "gap is not a reset: 100, absent, 150 bills 50", 0, MD_FIRST_BASELINE,
          { 100, MISSING, 150 }, { 100, 0, 50 }, 3 },
        { "100, absent, 40 bills 40", 0, MD_FIRST_BASELINE,
          { 100, MISSING, 40 }, { 100, 0, 40 }, 3 },
        { "initial target, baseline", 1, MD_FIRST_BASELINE,
          { 100, 150, 151 }, { 0, 50, 1 }, 3 },
        { "initial target, count", 1, MD_FIRST_COUNT,
          { 100, 150 }, { 100, 50 }, 2 },
        { "NaN skipped, billed from the last finite checkpoint", 1,
          MD_FIRST_BASELINE, { 100, NAN, 130 }, { 0, 0, 30 }, 3 },
        { "Inf, -Inf, negative, non-integer skipped", 1, MD_FIRST_BASELINE,
          { 100, INFINITY, -INFINITY, -5, 101.5, 120 }, { 0, 0, 0, 0, 0, 20 },
          6 },
        { "NaN then a decrease: reset, full value", 1, MD_FIRST_BASELINE,
          { 100, NAN, 40 }, { 0, 0, 40 }, 3 },
        { "zero and -0.0 are values", 0, MD_FIRST_BASELINE,
          { 0, -0.0, 3 }, { 0, 0, 3 }, 3 },
        { "decrease to 0 then growth", 1, MD_FIRST_BASELINE,
          { 100, 0, 7 }, { 0, 0, 7 }, 3 },
    };

    (void)state;
    for (size_t c = 0; c < NELEM(cases); c++) {
        struct md_ledger *l = new_ledger(16);

        for (size_t s = 0; s < cases[c].nsteps; s++) {
            struct md_ledger_input x = in_v("tok", cases[c].v[s]);
            int absent = cases[c].v[s] == MISSING;
            struct md_ledger_result r = scrape(l, 7, cases[c].initial,
                cases[c].pol, AT(10, (s + 1) * 5, 0), &x, absent ? 0 : 1);
            uint64_t got = r.billed;

            if (got != cases[c].want[s] || billed_to(&r, 0) != got)
                fail_msg("case %zu \"%s\" step %zu: billed %llu want %llu",
                    c, cases[c].name, s, (unsigned long long)got,
                    (unsigned long long)cases[c].want[s]);
        }
        md_ledger_free(l);
    }
}

/* ---- R6: per-reason counters, checkpoint kept ---- */

static void
test_skip_reasons(void **state)
{
    static const struct {
        double v;
        size_t nan, inf, neg, nonint, big;
    } cases[] = {
        { NAN, 1, 0, 0, 0, 0 },
        { INFINITY, 0, 1, 0, 0, 0 },
        { -INFINITY, 0, 1, 0, 0, 0 },
        { -1, 0, 0, 1, 0, 0 },
        { -0.5, 0, 0, 1, 0, 0 },
        { 0.5, 0, 0, 0, 1, 0 },
        { 1e300, 0, 0, 0, 0, 1 },
        { 18446744073709551616.0, 0, 0, 0, 0, 1 },   /* 2^64 */
    };

    (void)state;
    for (size_t c = 0; c < NELEM(cases); c++) {
        struct md_ledger *l = new_ledger(16);
        struct md_ledger_input x = in_v("k", 100);
        struct md_ledger_result r;
        struct md_ledger_state st;

        scrape(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 0), &x, 1);
        x.value = cases[c].v;
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(1, 5, 0), &x, 1);
        if (r.skipped_nan != cases[c].nan || r.skipped_inf != cases[c].inf ||
            r.skipped_negative != cases[c].neg ||
            r.skipped_non_integer != cases[c].nonint ||
            r.skipped_too_large != cases[c].big || r.delta_count != 0 ||
            r.applied != 0)
            fail_msg("case %zu (%g): counters nan %zu inf %zu neg %zu "
                "nonint %zu big %zu applied %zu", c, cases[c].v,
                r.skipped_nan, r.skipped_inf, r.skipped_negative,
                r.skipped_non_integer, r.skipped_too_large, r.applied);
        assert_int_equal(md_ledger_get(l, 1, "k", 1, &st), MD_OK);
        assert_int_equal(st.value, 100);
        assert_int_equal(st.ts_ns, AT(1, 0, 0));    /* checkpoint kept */
        /* the next finite value bills from 100, over (01:00, 01:10] */
        x.value = 160;
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(1, 10, 0), &x, 1);
        assert_int_equal(r.billed, 60);
        assert_int_equal(r.delta_count, 1);
        assert_int_equal(r.deltas[0].hour_start_s, HOUR(1));
        md_ledger_free(l);
    }
}

/* ---- R6: 2^53 and above ---- */

static void
test_2p53(void **state)
{
    struct md_ledger *l = new_ledger(16);
    struct md_ledger_input x = in_v("big", 9007199254740990.0);  /* 2^53-2 */
    struct md_ledger_result r;

    (void)state;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(2, 0, 0), &x, 1);
    assert_int_equal(r.billed, 9007199254740990ull);
    assert_int_equal(r.flagged_2p53, 0);
    x.value = 9007199254740992.0;                    /* 2^53: +2 */
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(2, 1, 0), &x, 1);
    assert_int_equal(r.billed, 2);
    assert_int_equal(r.flagged_2p53, 1);
    x.value = 9007199254740996.0;                    /* 2^53+4: +4 */
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(2, 2, 0), &x, 1);
    assert_int_equal(r.billed, 4);
    assert_int_equal(r.flagged_2p53, 1);
    assert_int_equal(value_of(l, 1, "big"), 9007199254740996ull);
    x.value = 18446744073709549568.0;                /* 2^64-2048, largest */
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(2, 3, 0), &x, 1);
    assert_int_equal(r.billed, 18446744073709549568ull - 9007199254740996ull);
    assert_int_equal(r.flagged_2p53, 1);
    md_ledger_free(l);
}

/* ---- R2: target restart ---- */

static void
test_restart(void **state)
{
    struct md_ledger *l = new_ledger(64);
    struct md_ledger_input s1[] = {
        in_v("a", 100), in_v("b", 200), in_v("c", 300), in_v("d", 400),
        in_v("e", 500), in_v("n", 50), in_v("t", 70),
    };
    /* a, b went down; c, d already grew past their old values; e missing;
     * n is NaN now (unusable: dropped on restart); t stale (kept) */
    struct md_ledger_input s2[] = {
        in_v("a", 10), in_v("b", 5), in_v("c", 350), in_v("d", 450),
        in_v("n", NAN), in_v("t", 80),
    };
    struct md_ledger_result r;

    (void)state;
    s1[6].has_ts = 1;
    s1[6].ts_ms = (int64_t)(AT(3, 0, 0) / 1000000u);
    s2[5].has_ts = 1;
    s2[5].ts_ms = (int64_t)(AT(3, 0, 0) / 1000000u);      /* equal: stale */
    scrape(l, 3, 0, MD_FIRST_BASELINE, AT(3, 0, 0), s1, NELEM(s1));
    r = scrape(l, 3, 0, MD_FIRST_BASELINE, AT(3, 1, 0), s2, NELEM(s2));
    /* B = {a,b,c,d} (n unusable, t stale), D = {a,b}: 2*2 >= 4 */
    assert_int_equal(r.in_both, 4);
    assert_int_equal(r.went_down, 2);
    assert_true(r.target_restart);
    assert_false(r.anomaly);
    assert_int_equal(r.resets, 4);
    assert_int_equal(billed_to(&r, 0), 10);
    assert_int_equal(billed_to(&r, 1), 5);
    assert_int_equal(billed_to(&r, 2), 350);   /* not 50: counted in full */
    assert_int_equal(billed_to(&r, 3), 450);   /* not 50 */
    assert_int_equal(r.billed, 815);
    assert_int_equal(r.dropped, 2);            /* e and n */
    assert_int_equal(r.stale_ts, 1);
    assert_int_equal(value_of(l, 3, "e"), UINT64_MAX);
    assert_int_equal(value_of(l, 3, "n"), UINT64_MAX);
    assert_int_equal(value_of(l, 3, "t"), 70);
    /* e and n return: their state was dropped, so they count in full */
    {
        struct md_ledger_input s3[] = {
            in_v("a", 11), in_v("b", 5), in_v("c", 350), in_v("d", 450),
            in_v("e", 20), in_v("n", 3),
        };

        r = scrape(l, 3, 0, MD_FIRST_BASELINE, AT(3, 2, 0), s3, NELEM(s3));
        assert_false(r.target_restart);
        assert_int_equal(r.new_series, 2);
        assert_int_equal(billed_to(&r, 0), 1);
        assert_int_equal(billed_to(&r, 4), 20);
        assert_int_equal(billed_to(&r, 5), 3);
        assert_int_equal(r.billed, 24);
    }
    md_ledger_free(l);
}

/* ---- R3: the guard; R2 threshold table ---- */

static void
test_restart_threshold(void **state)
{
    /* n series at 100 each; `down` of them drop to 1, the rest grow to 110 */
    static const struct {
        size_t n, down;
        int restart;
        uint64_t billed;
    } cases[] = {
        { 1, 1, 1, 1 },                 /* lone series down: restart */
        { 2, 1, 1, 1 + 110 },           /* half: restart, 110 in full */
        { 3, 1, 0, 1 + 10 + 10 },       /* 1 of 3: guard */
        { 4, 1, 0, 1 + 3 * 10 },
        { 4, 2, 1, 2 + 2 * 110 },
        { 5, 2, 0, 2 + 3 * 10 },
        { 5, 3, 1, 3 + 2 * 110 },
        { 8, 8, 1, 8 },
    };

    (void)state;
    for (size_t c = 0; c < NELEM(cases); c++) {
        struct md_ledger *l = new_ledger(64);
        struct md_ledger_input in[8];
        char keys[8][4];
        struct md_ledger_result r;

        for (size_t i = 0; i < cases[c].n; i++) {
            snprintf(keys[i], sizeof(keys[i]), "s%zu", i);
            in[i] = in_v(keys[i], 100);
        }
        /* one more series that is absent in the second scrape */
        scrape(l, 1, 1, MD_FIRST_BASELINE, AT(4, 0, 0), in, cases[c].n);
        assert_int_equal(scrape(l, 1, 0, MD_FIRST_BASELINE, AT(4, 0, 30),
            &(struct md_ledger_input){ .key = "gone", .key_len = 4,
            .value = 9 }, 1).billed, 9);
        for (size_t i = 0; i < cases[c].n; i++)
            in[i].value = i < cases[c].down ? 1 : 110;
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(4, 1, 0), in, cases[c].n);
        if (r.target_restart != cases[c].restart ||
            r.anomaly != !cases[c].restart || r.billed != cases[c].billed)
            fail_msg("case %zu (n %zu down %zu): restart %d anomaly %d "
                "billed %llu; want restart %d billed %llu", c, cases[c].n,
                cases[c].down, r.target_restart, r.anomaly,
                (unsigned long long)r.billed, cases[c].restart,
                (unsigned long long)cases[c].billed);
        /* a restart drops the absent series; the guard keeps it */
        assert_int_equal(value_of(l, 1, "gone") == 9, !cases[c].restart);
        assert_int_equal(r.dropped, cases[c].restart ? 1 : 0);
        assert_int_equal(r.resets, cases[c].restart ? cases[c].n :
            cases[c].down);
        md_ledger_free(l);
    }
}

/* ---- _created ---- */

static void
test_created(void **state)
{
    struct md_ledger *l = new_ledger(64);
    struct md_ledger_input in[] = { in_v("x", 100), in_v("y", 100),
        in_v("z", 100) };
    struct md_ledger_result r;

    (void)state;
    for (size_t i = 0; i < NELEM(in); i++) {
        in[i].has_created = 1;
        in[i].created = 1000.0;
    }
    scrape(l, 2, 1, MD_FIRST_BASELINE, AT(5, 0, 0), in, 3);
    /* x grew to 150 but its _created changed: a reset, 150 in full; 1 of 3
     * went down, so the guard keeps it a lone reset */
    in[0].value = 150;
    in[0].created = 2000.0;
    in[1].value = 120;
    in[2].value = 130;
    r = scrape(l, 2, 0, MD_FIRST_BASELINE, AT(5, 1, 0), in, 3);
    assert_int_equal(r.created_changed, 1);
    assert_int_equal(r.went_down, 1);
    assert_true(r.anomaly);
    assert_int_equal(billed_to(&r, 0), 150);
    assert_int_equal(billed_to(&r, 1), 20);
    assert_int_equal(billed_to(&r, 2), 30);
    /* two of three change _created: restart, all in full */
    in[0].value = 151;
    in[1].value = 121;
    in[1].created = 3000.0;
    in[2].value = 131;
    in[2].created = 3000.0;
    r = scrape(l, 2, 0, MD_FIRST_BASELINE, AT(5, 2, 0), in, 3);
    assert_true(r.target_restart);
    assert_int_equal(r.billed, 151 + 121 + 131);
    /* _created absent now: not a change; then present again with another
     * value: compared only with a checkpoint that has one, so no reset */
    in[0].has_created = 0;
    in[0].value = 160;
    r = scrape(l, 2, 0, MD_FIRST_BASELINE, AT(5, 3, 0), in, 1);
    assert_int_equal(r.billed, 9);
    in[0].has_created = 1;
    in[0].created = 5000.0;
    in[0].value = 170;
    r = scrape(l, 2, 0, MD_FIRST_BASELINE, AT(5, 4, 0), in, 1);
    assert_int_equal(r.billed, 10);
    assert_int_equal(r.went_down, 0);
    md_ledger_free(l);
}

/* ---- R4, R5: new series, targets appearing mid-way, policies ---- */

static void
test_new_series_and_targets(void **state)
{
    struct md_ledger *l = new_ledger(64);
    struct md_ledger_input a = in_v("a", 40), b = in_v("b", 70);
    struct md_ledger_result r;

    (void)state;
    /* initial target under baseline: checkpoint only */
    r = scrape(l, 1, 1, MD_FIRST_BASELINE, AT(6, 0, 0), &a, 1);
    assert_true(r.first_scrape);
    assert_int_equal(r.baselined, 1);
    assert_int_equal(r.billed, 0);
    assert_int_equal(r.delta_count, 0);
    assert_int_equal(value_of(l, 1, "a"), 40);
    /* a series new on an already scraped target: in full, the flags are no
     * longer read */
    {
        struct md_ledger_input ab[] = { in_v("a", 45), in_v("b", 70) };

        r = scrape(l, 1, 1, MD_FIRST_BASELINE, AT(6, 1, 0), ab, 2);
        assert_false(r.first_scrape);
        assert_int_equal(r.new_series, 1);
        assert_int_equal(billed_to(&r, 0), 5);
        assert_int_equal(billed_to(&r, 1), 70);
    }
    /* a target first seen after metering began (not initial): in full, even
     * with policy baseline */
    r = scrape(l, 2, 0, MD_FIRST_BASELINE, AT(6, 2, 0), &b, 1);
    assert_true(r.first_scrape);
    assert_int_equal(r.billed, 70);
    assert_int_equal(r.delta_count, 1);
    assert_int_equal(r.deltas[0].hour_start_s, HOUR(6));
    /* initial target with policy count */
    r = scrape(l, 3, 1, MD_FIRST_COUNT, AT(6, 3, 0), &b, 1);
    assert_int_equal(r.billed, 70);
    /* an initial target whose first scrape had no usable value: the series
     * is new on an already scraped target later, so it counts in full */
    {
        struct md_ledger_input n = in_v("n", NAN);

        r = scrape(l, 4, 1, MD_FIRST_BASELINE, AT(6, 4, 0), &n, 1);
        assert_int_equal(r.billed, 0);
        n.value = 33;
        r = scrape(l, 4, 1, MD_FIRST_BASELINE, AT(6, 5, 0), &n, 1);
        assert_int_equal(r.billed, 33);
    }
    /* the same key on two targets is two series */
    assert_int_equal(value_of(l, 2, "b"), 70);
    assert_int_equal(value_of(l, 1, "b"), 70);
    assert_int_equal(value_of(l, 3, "a"), UINT64_MAX);
    assert_int_equal(md_ledger_target_count(l), 4);
    assert_int_equal(md_ledger_series_count(l), 5);
    md_ledger_free(l);
}

/* ---- R7: explicit timestamps ---- */

static void
test_timestamps(void **state)
{
    static const struct {
        int64_t ts_off_ms;      /* relative to the checkpoint's ts */
        double v;
        uint64_t billed;
        size_t stale, bad;
    } cases[] = {
        { -1000, 200, 0, 1, 0 },        /* older: ignored */
        { 0, 200, 0, 1, 0 },            /* equal: ignored */
        { 1, 200, 100, 0, 0 },          /* newer: billed */
        { 60000, 90, 90, 0, 0 },        /* newer and lower: reset */
    };

    (void)state;
    for (size_t c = 0; c < NELEM(cases); c++) {
        struct md_ledger *l = new_ledger(16);
        struct md_ledger_input x = in_v("k", 100);
        int64_t ts0 = (int64_t)(AT(7, 30, 0) / 1000000u);
        struct md_ledger_result r;
        struct md_ledger_state st;

        x.has_ts = 1;
        x.ts_ms = ts0;
        scrape(l, 1, 0, MD_FIRST_BASELINE, AT(7, 31, 0), &x, 1);
        assert_int_equal(md_ledger_get(l, 1, "k", 1, &st), MD_OK);
        assert_int_equal(st.ts_ns, AT(7, 30, 0));   /* the sample's time */
        x.ts_ms = ts0 + cases[c].ts_off_ms;
        x.value = cases[c].v;
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(7, 32, 0), &x, 1);
        if (r.billed != cases[c].billed || r.stale_ts != cases[c].stale)
            fail_msg("case %zu: billed %llu stale %zu, want %llu %zu", c,
                (unsigned long long)r.billed, r.stale_ts,
                (unsigned long long)cases[c].billed, cases[c].stale);
        assert_int_equal(md_ledger_get(l, 1, "k", 1, &st), MD_OK);
        if (cases[c].stale) {
            assert_int_equal(st.value, 100);
            assert_int_equal(st.ts_ns, AT(7, 30, 0));
        } else {
            assert_int_equal(st.ts_ns, (uint64_t)x.ts_ms * 1000000u);
        }
        md_ledger_free(l);
    }
    /* bad timestamps: negative, past 2262 */
    {
        struct md_ledger *l = new_ledger(16);
        struct md_ledger_input x = in_v("k", 5);
        struct md_ledger_result r;

        x.has_ts = 1;
        x.ts_ms = -1;
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(8, 0, 0), &x, 1);
        assert_int_equal(r.bad_ts, 1);
        assert_int_equal(r.billed, 0);
        x.ts_ms = INT64_MAX;
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(8, 0, 0), &x, 1);
        assert_int_equal(r.bad_ts, 1);
        assert_int_equal(md_ledger_series_count(l), 0);
        md_ledger_free(l);
    }
}

/* ---- R9: the hour split, by hand ---- */

static void
test_spread_table(void **state)
{
    static const struct {
        const char *name;
        uint64_t delta;
        int has_t0;
        uint64_t t0, t1, max_s;
        size_t n;
        struct { uint64_t hour; uint64_t amount; } want[24];
    } cases[] = {
        { "inside one hour", 7, 1, AT(10, 10, 0), AT(10, 50, 0), 604800,
          1, { { HOUR(10), 7 } } },
        /* 30 of 60 min in hour 10: floor(7*30/60) = 3, then 7-3 */
        { "two hours", 7, 1, AT(10, 30, 0), AT(11, 30, 0), 604800,
          2, { { HOUR(10), 3 }, { HOUR(11), 4 } } },
        /* 100 min: cum 20, 80, 100 -> floor(10*20/100)=2, 8, 10 */
        { "three hours", 10, 1, AT(10, 40, 0), AT(12, 20, 0), 604800,
          3, { { HOUR(10), 2 }, { HOUR(11), 6 }, { HOUR(12), 2 } } },
        /* 1 token over the same span: floor(.2)=0, floor(.8)=0, 1 */
        { "one token, three hours", 1, 1, AT(10, 40, 0), AT(12, 20, 0),
          604800, 1, { { HOUR(12), 1 } } },
        /* 23:45 -> 00:15 next day: 15 of 30 min: floor(3/2)=1, 2 */
        { "across midnight", 3, 1, AT(23, 45, 0), AT(24, 15, 0), 604800,
          2, { { HOUR(23), 1 }, { HOUR(24), 2 } } },
        { "ends exactly on the hour", 5, 1, AT(10, 30, 0), AT(11, 0, 0),
          604800, 1, { { HOUR(10), 5 } } },
        { "starts exactly on the hour", 5, 1, AT(10, 0, 0), AT(10, 30, 0),
          604800, 1, { { HOUR(10), 5 } } },
        { "no t0, on the hour", 5, 0, 0, AT(11, 0, 0), 604800,
          1, { { HOUR(10), 5 } } },
        { "no t0, just after", 5, 0, 0, AT(11, 0, 1), 604800,
          1, { { HOUR(11), 5 } } },
        { "clock stepped back", 5, 1, AT(11, 0, 0), AT(10, 0, 0), 604800,
          1, { { HOUR(9), 5 } } },
        { "gap over spread_max", 9, 1, AT(0, 0, 0), AT(168, 0, 1), 604800,
          1, { { HOUR(168), 9 } } },
        { "spread_max 0", 9, 1, AT(10, 30, 0), AT(11, 30, 0), 0,
          1, { { HOUR(11), 9 } } },
        /* 24 whole hours, 100 tokens: floor(100k/24) = 4 8 12 16 20 25 29 33
         * 37 41 45 50 54 58 62 66 70 75 79 83 87 91 95 100 */
        { "a day", 100, 1, AT(0, 0, 0), AT(24, 0, 0), 604800, 24,
          { { HOUR(0), 4 }, { HOUR(1), 4 }, { HOUR(2), 4 }, { HOUR(3), 4 },
            { HOUR(4), 4 }, { HOUR(5), 5 }, { HOUR(6), 4 }, { HOUR(7), 4 },
            { HOUR(8), 4 }, { HOUR(9), 4 }, { HOUR(10), 4 }, { HOUR(11), 5 },
            { HOUR(12), 4 }, { HOUR(13), 4 }, { HOUR(14), 4 }, { HOUR(15), 4 },
            { HOUR(16), 4 }, { HOUR(17), 5 }, { HOUR(18), 4 }, { HOUR(19), 4 },
            { HOUR(20), 4 }, { HOUR(21), 4 }, { HOUR(22), 4 },
            { HOUR(23), 5 } } },
        /* 2^64-1 over two equal halves: floor((2^64-1)/2) = 2^63-1 */
        { "largest delta", UINT64_MAX, 1, AT(10, 30, 0), AT(11, 30, 0),
          604800, 2, { { HOUR(10), 9223372036854775807ull },
            { HOUR(11), 9223372036854775808ull } } },
        { "zero", 0, 1, AT(10, 30, 0), AT(11, 30, 0), 604800, 0, { { 0, 0 } } },
    };

    (void)state;
    for (size_t c = 0; c < NELEM(cases); c++) {
        struct md_ledger_delta out[800];
        uint64_t max_ns = cases[c].max_s * NS;
        size_t nb = md_ledger_spread_buckets(cases[c].has_t0, cases[c].t0,
            cases[c].t1, max_ns);
        size_t n = md_ledger_spread(cases[c].delta, cases[c].has_t0,
            cases[c].t0, cases[c].t1, max_ns, out);

        if (n != cases[c].n || n > nb)
            fail_msg("case %zu \"%s\": %zu buckets (bound %zu), want %zu", c,
                cases[c].name, n, nb, cases[c].n);
        for (size_t i = 0; i < n; i++)
            if (out[i].hour_start_s != cases[c].want[i].hour ||
                out[i].amount != cases[c].want[i].amount)
                fail_msg("case %zu \"%s\" bucket %zu: hour %llu amount %llu, "
                    "want %llu %llu", c, cases[c].name, i,
                    (unsigned long long)out[i].hour_start_s,
                    (unsigned long long)out[i].amount,
                    (unsigned long long)cases[c].want[i].hour,
                    (unsigned long long)cases[c].want[i].amount);
    }
}

/* ---- R9 property: random gaps and deltas ---- */

static uint64_t
rnd(uint64_t *s)
{
    /* splitmix64: fixed seed, reproducible */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
test_spread_property(void **state)
{
    static struct md_ledger_delta out[800];
    uint64_t seed = 42;
    uint64_t max_ns = (uint64_t)MD_LEDGER_SPREAD_DEFAULT_S * NS;

    (void)state;
    for (int it = 0; it < 20000; it++) {
        uint64_t t0 = DAY0 * NS + rnd(&seed) % (30ull * 86400 * NS);
        uint64_t gap = (it % 4 == 0) ? rnd(&seed) % (2 * H * NS) :
            rnd(&seed) % (8ull * 86400 * NS);
        uint64_t r = rnd(&seed);
        uint64_t delta = it % 3 == 0 ? r : it % 3 == 1 ? r % 1000 : r >> 20;
        uint64_t t1 = t0 + gap;
        size_t nb = md_ledger_spread_buckets(1, t0, t1, max_ns);
        size_t n = md_ledger_spread(delta, 1, t0, t1, max_ns, out);
        unsigned __int128 sum = 0;

        assert_true(n <= nb);
        assert_true(nb <= 7 * 24 + 1);
        for (size_t i = 0; i < n; i++) {
            sum += out[i].amount;
            assert_true(out[i].amount > 0);
            assert_int_equal(out[i].hour_start_s % H, 0);
            if (i > 0)
                assert_true(out[i].hour_start_s > out[i - 1].hour_start_s);
            /* every bucket lies in (t0, t1] (or is t1's hour when capped) */
            if (gap > 0 && gap <= max_ns) {
                assert_true(out[i].hour_start_s * NS < t1);
                assert_true((out[i].hour_start_s + H) * NS > t0);
            }
        }
        if (sum != delta)
            fail_msg("iteration %d: buckets sum to %llu, want %llu", it,
                (unsigned long long)sum, (unsigned long long)delta);
        /* proportional: each bucket within 1 token of delta*share */
        if (n == nb && gap > 0 && gap <= max_ns && delta < (1ull << 40)) {
            for (size_t i = 0; i < n; i++) {
                uint64_t hs = out[i].hour_start_s * NS;
                uint64_t lo = hs > t0 ? hs : t0;
                uint64_t hi = hs + H * NS < t1 ? hs + H * NS : t1;
                double share = (double)delta * (double)(hi - lo) / (double)gap;

                assert_true(fabs((double)out[i].amount - share) < 1.0001);
            }
        }
    }
}

/* ---- churn against a reference model: new series, increases, restarts,
 * forgotten targets, commits and rollbacks, in a small hash table ---- */

struct model {
    uint64_t val[4][40];
    int present[4][40];
};

static void
churn(uint32_t nt, int nk, int steps, uint64_t seed)
{
    struct md_ledger *l = new_ledger(200);
    struct model m, saved;
    static char keys[40][8];
    struct md_ledger_input in[40];

    /* the hash seed varies the slots the few keys land in */
    assert_int_equal(md_ledger_set_seed(l, seed, seed * 31), MD_OK);
    memset(&m, 0, sizeof(m));
    for (int k = 0; k < 40; k++)
        snprintf(keys[k], sizeof(keys[k]), "k%d", k);
    for (int step = 0; step < steps; step++) {
        uint32_t t = (uint32_t)(rnd(&seed) % nt);
        uint64_t op = rnd(&seed) % 20, want = 0;
        uint64_t now = AT(0, 0, 0) + (uint64_t)step * 60u * NS;
        struct md_ledger_result r;
        struct md_err err = {0};
        int in_s[40] = {0};
        size_t n = 0, both = 0;

        saved = m;
        if (op == 0) {
            assert_int_equal(md_ledger_forget_target(l, t + 1, NULL, &err),
                MD_OK);
            memset(m.present[t], 0, sizeof(m.present[t]));
        } else {
            for (int k = 0; k < nk; k++) {
                uint64_t v;

                if (rnd(&seed) % 3 == 0)
                    continue;
                /* a restart sends values below 10: only series above */
                if (op == 1 && m.present[t][k] && m.val[t][k] < 10)
                    continue;
                in_s[k] = 1;
                if (op == 1)
                    v = rnd(&seed) % 10;            /* below every value */
                else if (m.present[t][k])
                    v = m.val[t][k] + 10 + rnd(&seed) % 50;
                else
                    v = 1000 + rnd(&seed) % 100;
                both += (size_t)m.present[t][k];
                if (m.present[t][k] && op != 1)
                    want += v - m.val[t][k];
                else
                    want += v;
                m.val[t][k] = v;
                in[n++] = in_v(keys[k], (double)v);
            }
            if (op == 1 && both > 0)         /* a restart drops the rest */
                for (int k = 0; k < nk; k++)
                    if (!in_s[k])
                        m.present[t][k] = 0;
            for (int k = 0; k < nk; k++)
                if (in_s[k])
                    m.present[t][k] = 1;
            assert_int_equal(md_ledger_apply(l, t + 1, 0, MD_FIRST_BASELINE,
                now, in, n, &r, &err), MD_OK);
            if (r.billed != want)
                fail_msg("step %d: billed %llu want %llu", step,
                    (unsigned long long)r.billed, (unsigned long long)want);
            assert_int_equal(r.target_restart, op == 1 && both > 0);
        }
        if (rnd(&seed) % 5 == 0) {
            md_ledger_rollback(l);
            m = saved;
        } else {
            md_ledger_commit(l);
        }
        {
            size_t live = 0;

            for (uint32_t tt = 0; tt < nt; tt++)
                for (int k = 0; k < nk; k++) {
                    uint64_t got = value_of(l, tt + 1, keys[k]);

                    live += (size_t)m.present[tt][k];
                    if (got != (m.present[tt][k] ? m.val[tt][k] : UINT64_MAX))
                        fail_msg("step %d: target %u %s: got %llu want %s%llu",
                            step, tt + 1, keys[k], (unsigned long long)got,
                            m.present[tt][k] ? "" : "absent ",
                            (unsigned long long)m.val[tt][k]);
                }
            assert_int_equal(md_ledger_series_count(l), live);
        }
    }
    md_ledger_free(l);
}

static void
test_churn(void **state)
{
    (void)state;
    churn(4, 40, 3000, 7);      /* ~100 live series */
    /* few series in a 16-slot index: deletions wrap around its end */
    for (uint64_t seed = 1; seed <= 40; seed++)
        churn(2, 4, 300, seed);
}

/* through apply: 10:30 new (one bucket), 12:30 +120 over 2 h */
static void
test_apply_spread(void **state)
{
    struct md_ledger *l = new_ledger(16);
    struct md_ledger_input x = in_v("k", 100);
    struct md_ledger_result r;

    (void)state;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(10, 30, 0), &x, 1);
    assert_int_equal(r.delta_count, 1);
    assert_int_equal(r.deltas[0].hour_start_s, HOUR(10));
    assert_int_equal(r.deltas[0].amount, 100);
    x.value = 220;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(12, 30, 0), &x, 1);
    /* 30 min of 120 -> floor(120*30/120) = 30; 90 -> 90 - 30; 120 -> 30 */
    assert_int_equal(r.delta_count, 3);
    assert_int_equal(r.deltas[0].hour_start_s, HOUR(10));
    assert_int_equal(r.deltas[0].amount, 30);
    assert_int_equal(r.deltas[1].hour_start_s, HOUR(11));
    assert_int_equal(r.deltas[1].amount, 60);
    assert_int_equal(r.deltas[2].hour_start_s, HOUR(12));
    assert_int_equal(r.deltas[2].amount, 30);
    /* a restart after a gap spreads its full value over the gap too */
    x.value = 40;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(13, 30, 0), &x, 1);
    assert_true(r.target_restart);
    assert_int_equal(r.delta_count, 2);
    assert_int_equal(r.deltas[0].amount, 20);
    assert_int_equal(r.deltas[1].amount, 20);
    /* a gap over spread_max goes to the current hour and is counted */
    assert_int_equal(md_ledger_set_spread_max_s(l, 3600), MD_OK);
    x.value = 50;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(15, 0, 1), &x, 1);
    assert_int_equal(r.spread_capped, 1);
    assert_int_equal(r.delta_count, 1);
    assert_int_equal(r.deltas[0].hour_start_s, HOUR(15));
    assert_int_equal(md_ledger_set_spread_max_s(l,
        MD_LEDGER_SPREAD_LIMIT_S + 1), MD_ELIMIT);
    md_ledger_free(l);
}

/* ---- rejected scrapes: duplicates, keys, limits ---- */

static void
test_rejects(void **state)
{
    struct md_ledger *l = new_ledger(3);
    struct md_ledger_input dup[] = { in_v("a", 1), in_v("b", 2), in_v("a", 3) };
    struct md_ledger_input four[] = { in_v("a", 1), in_v("b", 2),
        in_v("c", 3), in_v("d", 4) };
    struct md_ledger_input empty = in_v("", 1);
    struct md_ledger_result r;
    struct md_err err = {0};
    static char big[MD_LEDGER_KEY_MAX + 1];
    struct md_ledger_input bigin = in_v("x", 1);

    (void)state;
    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 0),
        dup, 3, &r, &err), MD_EPARSE);
    assert_non_null(strstr(err.msg, "twice"));
    assert_int_equal(r.delta_count, 0x5a5a5a5a5a5a5a5aull); /* untouched */
    assert_int_equal(md_ledger_target_count(l), 0);
    assert_int_equal(md_ledger_staged_series_count(l), 0);
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 0),
        &empty, 1, &r, &err), MD_EPARSE);
    /* a key with a newline and a quote is not copied raw into the message */
    {
        struct md_ledger_input ev[] = { in_v("x\n\"y", 1), in_v("x\n\"y", 2) };

        assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE,
            AT(1, 0, 0), ev, 2, &r, &err), MD_EPARSE);
        assert_non_null(strstr(err.msg, "\"x??y\""));
    }
    memset(big, 'k', sizeof(big));
    bigin.key = big;
    bigin.key_len = sizeof(big);
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 0),
        &bigin, 1, &r, &err), MD_ELIMIT);
    /* series_max 3: four new series are refused whole */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 0),
        four, 4, &r, &err), MD_ELIMIT);
    assert_int_equal(md_ledger_series_count(l), 0);
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 0), four, 3);
    assert_int_equal(r.billed, 6);
    /* a duplicate of a known series (found through the index, not the new
     * key check) rejects the scrape too, leaving every state as it was */
    {
        struct md_ledger_input d2[] = { in_v("a", 9), in_v("b", 9),
            in_v("b", 10) };
        struct md_ledger_input c9 = in_v("c", 9);

        assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE,
            AT(1, 0, 30), d2, 3, &r, &err), MD_EPARSE);
        assert_non_null(strstr(err.msg, "twice"));
        assert_int_equal(md_ledger_staged_series_count(l), 0);
        assert_int_equal(value_of(l, 1, "a"), 1);
        assert_int_equal(value_of(l, 1, "b"), 2);
        /* the same series twice in a row */
        d2[1] = in_v("a", 9);
        assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE,
            AT(1, 0, 30), d2, 2, &r, &err), MD_EPARSE);
        /* and a good scrape right after bills from the old checkpoints */
        r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(1, 0, 40), &c9, 1);
        assert_int_equal(r.billed, 6);
    }
    assert_int_equal(md_ledger_apply(l, 2, 0, MD_FIRST_BASELINE, AT(1, 0, 0),
        &four[3], 1, &r, &err), MD_ELIMIT);
    assert_non_null(strstr(err.msg, "series_max"));
    assert_int_equal(md_ledger_restore_series(l, 2, "z", 1, 1, 1, 0, 0, &err),
        MD_ELIMIT);
    /* a restart frees the slots of the series it drops */
    four[0].value = 0;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(1, 1, 0), four, 1);
    assert_true(r.target_restart);
    assert_int_equal(r.dropped, 2);
    assert_int_equal(md_ledger_series_count(l), 1);
    r = scrape(l, 2, 0, MD_FIRST_BASELINE, AT(1, 1, 0), &four[1], 2);
    assert_int_equal(r.billed, 5);
    assert_int_equal(md_ledger_series_count(l), 3);
    /* limits of the constructor and the seed */
    assert_null(md_ledger_new(0));
    assert_null(md_ledger_new((size_t)MD_LEDGER_SERIES_LIMIT + 1));
    assert_int_equal(md_ledger_set_seed(l, 1, 2), MD_ESTATE);
    md_ledger_free(l);
    md_ledger_free(NULL);
}

/* ---- staged list, commit, rollback ---- */

static void
test_rollback(void **state)
{
    struct md_ledger *l = new_ledger(64);
    struct md_ledger_input s1[] = { in_v("a", 100), in_v("b", 200),
        in_v("c", 300) };
    struct md_ledger_input s2[] = { in_v("a", 5), in_v("b", 6),
        in_v("d", 7) };   /* restart, c dropped, d new */
    struct md_ledger_input o = in_v("o", 50);
    struct md_ledger_result r;
    struct md_err err = {0};
    struct dump before, after;
    struct md_ledger_target_state ts;
    size_t dropped = 0;

    (void)state;
    s1[0].has_created = 1;
    s1[0].created = 11.0;
    scrape(l, 1, 0, MD_FIRST_BASELINE, AT(9, 0, 0), s1, 3);
    scrape(l, 2, 0, MD_FIRST_BASELINE, AT(9, 0, 0), &o, 1);
    assert_int_equal(md_ledger_staged_series_count(l), 0);
    dump_ledger(l, &before);
    assert_int_equal(before.n, 4);

    /* several changes in one transaction: restart with a drop and a new
     * series, the same target again, a new target, a forgotten target */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(9, 5, 0),
        s2, 3, &r, &err), MD_OK);
    assert_true(r.target_restart);
    s2[0].value = 8;
    s2[0].has_created = 1;
    s2[0].created = 12.0;
    s2[1] = in_v("d", 9);
    /* a and d (new in this transaction) change again: they see the staged
     * values 5 and 7 */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(9, 6, 0),
        s2, 2, &r, &err), MD_OK);
    assert_int_equal(r.billed, 3 + 2);
    s1[2].value = 1;                      /* c returns: dropped, so in full */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_BASELINE, AT(9, 7, 0),
        &s1[2], 1, &r, &err), MD_OK);
    assert_int_equal(r.new_series, 1);
    assert_int_equal(r.billed, 1);
    assert_int_equal(md_ledger_apply(l, 3, 0, MD_FIRST_BASELINE, AT(9, 7, 0),
        &o, 1, &r, &err), MD_OK);
    assert_int_equal(md_ledger_forget_target(l, 2, &dropped, &err), MD_OK);
    assert_int_equal(dropped, 1);
    assert_int_equal(md_ledger_get_target(l, 2, &ts), MD_ENOTFOUND);

    /* staged: a, b, c, d (target 1), o (target 3), o (target 2, dropped);
     * each once even though a and c changed twice */
    {
        size_t n = md_ledger_staged_series_count(l), ndrop = 0;

        assert_int_equal(n, 6);
        for (size_t i = 0; i < n; i++) {
            struct md_ledger_state st;

            md_ledger_staged_series(l, i, &st);
            for (size_t j = 0; j < i; j++) {
                struct md_ledger_state st2;

                md_ledger_staged_series(l, j, &st2);
                assert_false(st.target == st2.target &&
                    st.key_len == st2.key_len &&
                    memcmp(st.key, st2.key, st.key_len) == 0);
            }
            ndrop += (size_t)st.dropped;
            if (st.target == 1 && st.key_len == 1 && st.key[0] == 'a') {
                assert_int_equal(st.value, 8);
                assert_true(st.has_created);
            }
        }
        assert_int_equal(ndrop, 1);
        assert_int_equal(md_ledger_staged_target_count(l), 3);
    }

    md_ledger_rollback(l);
    assert_int_equal(md_ledger_staged_series_count(l), 0);
    assert_int_equal(md_ledger_staged_target_count(l), 0);
    dump_ledger(l, &after);
    assert_same_dump(&before, &after, "after rollback");
    assert_int_equal(md_ledger_series_count(l), 4);
    assert_int_equal(md_ledger_target_count(l), 2);
    assert_int_equal(md_ledger_get_target(l, 2, &ts), MD_OK);
    assert_int_equal(ts.last_scrape_ns, AT(9, 0, 0));
    assert_int_equal(md_ledger_get_target(l, 3, &ts), MD_ENOTFOUND);

    /* the next scrape bills the whole gap from the committed checkpoint */
    s1[0].value = 130;
    s1[1].value = 210;
    s1[2].value = 300;
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(9, 10, 0), s1, 3);
    assert_int_equal(r.billed, 40);
    assert_false(r.target_restart);

    /* commit of drops, then the dropped keys are really gone */
    assert_int_equal(md_ledger_forget_target(l, 1, &dropped, &err), MD_OK);
    assert_int_equal(dropped, 3);
    md_ledger_commit(l);
    assert_int_equal(md_ledger_series_count(l), 1);
    assert_int_equal(value_of(l, 1, "a"), UINT64_MAX);
    assert_int_equal(value_of(l, 2, "o"), 50);
    r = scrape(l, 1, 0, MD_FIRST_BASELINE, AT(9, 11, 0), s1, 1);
    assert_true(r.first_scrape);
    assert_int_equal(r.billed, 130);
    /* rollback of nothing is a no-op */
    md_ledger_rollback(l);
    assert_int_equal(md_ledger_series_count(l), 2);
    md_ledger_free(l);
}

/* ---- restore from persisted rows gives identical future deltas ---- */

struct store {
    struct row rows[512];
    size_t n;
    struct { uint32_t id; uint64_t last; } tg[16];
    size_t ntg;
};

static void
store_sync(struct store *s, const struct md_ledger *l)
{
    for (size_t i = 0; i < md_ledger_staged_series_count(l); i++) {
        struct md_ledger_state st;
        size_t j;

        md_ledger_staged_series(l, i, &st);
        for (j = 0; j < s->n; j++)
            if (s->rows[j].target == st.target &&
                strlen(s->rows[j].key) == st.key_len &&
                memcmp(s->rows[j].key, st.key, st.key_len) == 0)
                break;
        if (st.dropped) {
            if (j < s->n)
                s->rows[j] = s->rows[--s->n];
            continue;
        }
        if (j == s->n) {
            assert_true(s->n < NELEM(s->rows));
            s->n++;
        }
        memset(&s->rows[j], 0, sizeof(s->rows[j]));
        s->rows[j].target = st.target;
        memcpy(s->rows[j].key, st.key, st.key_len);
        s->rows[j].value = st.value;
        s->rows[j].ts_ns = st.ts_ns;
        s->rows[j].has_created = st.has_created;
        s->rows[j].created = st.has_created ? st.created : 0.0;
    }
    for (size_t i = 0; i < md_ledger_staged_target_count(l); i++) {
        struct md_ledger_target_state ts;
        size_t j;

        md_ledger_staged_target(l, i, &ts);
        for (j = 0; j < s->ntg; j++)
            if (s->tg[j].id == ts.target)
                break;
        if (ts.dropped) {
            if (j < s->ntg)
                s->tg[j] = s->tg[--s->ntg];
            continue;
        }
        if (j == s->ntg)
            s->ntg++;
        s->tg[j].id = ts.target;
        s->tg[j].last = ts.last_scrape_ns;
    }
}

static struct md_ledger *
store_restore(const struct store *s, uint64_t k0)
{
    struct md_ledger *l = new_ledger(256);
    struct md_err err = {0};

    assert_int_equal(md_ledger_set_seed(l, k0, ~k0), MD_OK);
    /* series first: restore creates their targets; then target rows */
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(md_ledger_restore_series(l, s->rows[i].target,
            s->rows[i].key, strlen(s->rows[i].key), s->rows[i].value,
            s->rows[i].ts_ns, s->rows[i].has_created, s->rows[i].created,
            &err), MD_OK);
    for (size_t i = 0; i < s->ntg; i++)
        assert_int_equal(md_ledger_restore_target(l, s->tg[i].id,
            s->tg[i].last, &err), MD_OK);
    return l;
}

/* a deterministic scrape script with resets, gaps, new and vanishing
 * series over 3 targets and 40 series keys */
static size_t
script_step(int step, uint32_t *target, uint64_t *now,
    struct md_ledger_input *in, char keys[][16], uint64_t *vals)
{
    size_t n = 0;

    *target = (uint32_t)(step % 3) + 1;
    *now = AT(0, 0, 0) + (uint64_t)step * 17u * 60u * NS +
        (step % 7 == 0 ? 5u * H * NS : 0);
    for (int k = 0; k < 40; k++) {
        size_t slot = (*target - 1) * 40 + (size_t)k;

        if ((k + step) % 11 == 0)
            continue;                               /* absent this time */
        if (step % 13 == 5 && *target == 2)
            vals[slot] = (uint64_t)k;               /* target 2 restarts */
        else if ((step + k) % 29 == 0)
            vals[slot] /= 2;                        /* lone decrease */
        else
            vals[slot] += (uint64_t)((step * 31 + k * 7) % 500);
        snprintf(keys[n], 16, "s%02d", k);
        in[n] = in_v(keys[n], (double)vals[slot]);
        if (k == 3 && step % 5 == 0)
            in[n].value = NAN;
        if (k == 4) {
            in[n].has_created = 1;
            in[n].created = (double)(step / 10);
        }
        n++;
    }
    return n;
}

static void
test_restore_identical(void **state)
{
    struct store st;
    struct md_ledger *a = new_ledger(256), *b = NULL;
    uint64_t vals[120] = {0};
    struct md_ledger_input in[40];
    char keys[40][16];

    (void)state;
    memset(&st, 0, sizeof(st));
    for (int step = 0; step < 120; step++) {
        uint32_t target;
        uint64_t now;
        size_t n = script_step(step, &target, &now, in, keys, vals);
        struct md_ledger_result ra, rb;
        struct md_err err = {0};

        assert_int_equal(md_ledger_apply(a, target, step < 3,
            MD_FIRST_BASELINE, now, in, n, &ra, &err), MD_OK);
        if (b != NULL) {
            assert_int_equal(md_ledger_apply(b, target, step < 3,
                MD_FIRST_BASELINE, now, in, n, &rb, &err), MD_OK);
            if (ra.delta_count != rb.delta_count || memcmp(ra.deltas,
                rb.deltas, ra.delta_count * sizeof(ra.deltas[0])) != 0)
                fail_msg("step %d: restored ledger billed differently", step);
            assert_int_equal(ra.target_restart, rb.target_restart);
            md_ledger_commit(b);
        }
        store_sync(&st, a);
        md_ledger_commit(a);
        /* the store mirrors the ledger exactly after each commit */
        {
            struct dump d;
            struct store sorted = st;

            dump_ledger(a, &d);
            qsort(sorted.rows, sorted.n, sizeof(sorted.rows[0]), row_cmp);
            assert_int_equal(d.n, sorted.n);
            for (size_t i = 0; i < d.n; i++)
                assert_memory_equal(&d.rows[i], &sorted.rows[i],
                    sizeof(d.rows[i]));
        }
        if (step == 60) {
            struct dump da, db;

            b = store_restore(&st, 0x1234);      /* a "meterd restart" */
            dump_ledger(a, &da);
            dump_ledger(b, &db);
            assert_same_dump(&da, &db, "restored");
            assert_int_equal(md_ledger_target_count(b), 3);
            for (uint32_t t = 1; t <= 3; t++) {
                struct md_ledger_target_state ta, tb;

                assert_int_equal(md_ledger_get_target(a, t, &ta), MD_OK);
                assert_int_equal(md_ledger_get_target(b, t, &tb), MD_OK);
                assert_int_equal(ta.last_scrape_ns, tb.last_scrape_ns);
            }
        }
    }
    assert_non_null(b);
    md_ledger_free(a);
    md_ledger_free(b);
}

/* ---- allocation failure torture ---- */

/* Runs the script on a fresh ledger with allocation N failing.  Every
 * ENOMEM must leave the ledger as it was; the op is then retried (the
 * failure is one-shot), so the billing must equal the reference run. */
static int
torture_run(uint64_t *billed_out, size_t *enomem_out)
{
    static struct md_ledger_input in[40];
    static char keys[40][16];
    uint64_t vals[120] = {0};
    struct md_ledger *l = md_ledger_new(256);
    struct md_err err = {0};
    uint64_t billed = 0;
    size_t enomem = 0;
    int redone = 0;
    struct dump *before = malloc(sizeof(*before));
    struct dump *after = malloc(sizeof(*after));

    assert_non_null(before);
    assert_non_null(after);
    if (l == NULL) {
        enomem++;
        l = md_ledger_new(256);
        assert_non_null(l);
    }
    for (int step = 0; step < 40; step++) {
        uint32_t target;
        uint64_t now;
        size_t n = script_step(step, &target, &now, in, keys, vals);
        struct md_ledger_result r;
        int rc;

        if (step == 20) {
            /* restore into a second ledger under the same failure regime */
            struct md_ledger *l2 = md_ledger_new(256);

            if (l2 == NULL) {
                enomem++;
            } else {
                rc = md_ledger_restore_series(l2, 1, "r", 1, 5, 5, 0, 0, &err);
                if (rc == MD_ENOMEM) {
                    enomem++;
                    assert_int_equal(md_ledger_series_count(l2), 0);
                } else {
                    assert_int_equal(rc, MD_OK);
                }
                rc = md_ledger_restore_target(l2, 9, 5, &err);
                if (rc == MD_ENOMEM)
                    enomem++;
                md_ledger_free(l2);
            }
        }
        dump_ledger(l, before);
        for (;;) {
            rc = md_ledger_apply(l, target, step < 3, MD_FIRST_BASELINE, now,
                in, n, &r, &err);
            if (rc != MD_ENOMEM)
                break;
            enomem++;
            assert_int_equal(md_ledger_staged_series_count(l), 0);
            dump_ledger(l, after);
            assert_same_dump(before, after, "after ENOMEM in apply");
        }
        assert_int_equal(rc, MD_OK);
        billed += r.billed;
        if (step % 4 == 3 && !redone) {
            /* as if SQLite failed: roll back and run the step again (the
             * script's counters advance, as a sidecar's would) */
            md_ledger_rollback(l);
            dump_ledger(l, after);
            assert_same_dump(before, after, "after rollback");
            billed -= r.billed;
            redone = 1;
            step--;
            continue;
        }
        redone = 0;
        if (step == 30) {
            size_t dropped;

            for (;;) {
                rc = md_ledger_forget_target(l, 2, &dropped, &err);
                if (rc != MD_ENOMEM)
                    break;
                enomem++;
            }
            assert_int_equal(rc, MD_OK);
        }
        md_ledger_commit(l);
    }
    md_ledger_free(l);
    free(before);
    free(after);
    *billed_out = billed;
    *enomem_out = enomem;
    return 0;
}

static void
test_alloc_torture(void **state)
{
    uint64_t ref_billed, billed;
    size_t enomem;
    int n;

    (void)state;
    unsetenv("MD_FAIL_ALLOC_AT");
    md_alloc_reset();
    torture_run(&ref_billed, &enomem);
    assert_int_equal(enomem, 0);
    assert_true(ref_billed > 0);
    for (n = 1; n < 100000; n++) {
        char buf[32];

        snprintf(buf, sizeof(buf), "%d", n);
        setenv("MD_FAIL_ALLOC_AT", buf, 1);
        md_alloc_reset();
        torture_run(&billed, &enomem);
        if (billed != ref_billed)
            fail_msg("failing allocation %d: billed %llu, want %llu", n,
                (unsigned long long)billed, (unsigned long long)ref_billed);
        if (enomem == 0)
            break;      /* N is past the last allocation: all covered */
    }
    print_message("ledger: allocation failure injected at 1..%d\n", n - 1);
    assert_true(n > 10);        /* the run really allocates */
    unsetenv("MD_FAIL_ALLOC_AT");
    md_alloc_reset();
}

/* ---- scale: many series, rehashing, memory per series ---- */

static void
test_scale(void **state)
{
    enum { TARGETS = 20, PER = 600 };
    struct md_ledger *l = new_ledger(TARGETS * PER);
    static struct md_ledger_input in[PER];
    static char keys[PER][96];
    uint64_t total = 0;

    (void)state;
    for (int round = 0; round < 3; round++) {
        for (uint32_t t = 0; t < TARGETS; t++) {
            struct md_ledger_result r;

            for (size_t k = 0; k < PER; k++) {
                snprintf(keys[k], sizeof(keys[k]),
                    "gen_ai_client_token_usage_sum{model=\"m%zu\","
                    "token_type=\"input\",dep=\"d%u\"}", k, t);
                in[k] = in_v(keys[k], (double)((round + 1) * (k + 1)));
            }
            r = scrape(l, t, 0, MD_FIRST_BASELINE,
                AT(0, round * 10, 0), in, PER);
            total += r.billed;
        }
    }
    /* sum over k of 3*(k+1) per target: the final values, billed once */
    assert_int_equal(total, (uint64_t)TARGETS * 3 * PER * (PER + 1) / 2);
    assert_int_equal(md_ledger_series_count(l), TARGETS * PER);
    {
        size_t per = md_ledger_memory_bytes(l) / (TARGETS * PER);

        print_message("ledger: %zu bytes per series (keys ~60 B)\n", per);
        assert_true(per < 400);
    }
    md_ledger_free(l);
}

/* ---- slots: each series' place in its target's stored state ---- */

static uint32_t
slot_of(const struct md_ledger *l, uint32_t target, const char *key)
{
    struct md_ledger_state st;

    if (md_ledger_get(l, target, key, strlen(key), &st) != MD_OK)
        fail_msg("slot_of: %u/%s not found", target, key);
    return st.slot;
}

/* the staged entry of key: its slot, is_new and dropped, or fails */
static void
staged_of(const struct md_ledger *l, uint32_t target, const char *key, uint32_t *slot,
    int *is_new, int *dropped)
{
    for (size_t i = 0; i < md_ledger_staged_series_count(l); i++) {
        struct md_ledger_state st;

        md_ledger_staged_series(l, i, &st);
        if (st.target == target && st.key_len == strlen(key) &&
            memcmp(st.key, key, st.key_len) == 0) {
            *slot = st.slot;
            *is_new = st.is_new;
            *dropped = st.dropped;
            return;
        }
    }
    fail_msg("staged_of: %u/%s not staged", target, key);
}

static void
test_slots(void **state)
{
    struct md_ledger *l = new_ledger(100);
    struct md_ledger_result r;
    struct md_err err = {0};
    uint32_t slot;
    int is_new, dropped;
    struct md_ledger_input abc[] = { in_v("a", 5), in_v("b", 5), in_v("c", 5) };
    struct md_ledger_input xy[] = { in_v("x", 1), in_v("y", 1) };
    struct md_ledger_input a0[] = { in_v("a", 1) };
    struct md_ledger_input ade[] = { in_v("a", 2), in_v("d", 1), in_v("e", 1) };
    struct md_ledger_input f[] = { in_v("f", 1) };
    struct md_ledger_input g[] = { in_v("g", 1) };
    static const struct { const char *key; uint32_t want; } first[] = {
        { "a", 0 }, { "b", 1 }, { "c", 2 },
    };

    (void)state;
    /* first scrape: slots in input order, staged as new */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_COUNT, AT(1, 0, 0), abc, 3, &r, &err),
        MD_OK);
    for (size_t i = 0; i < NELEM(first); i++) {
        staged_of(l, 1, first[i].key, &slot, &is_new, &dropped);
        if (slot != first[i].want || !is_new || dropped)
            fail_msg("%s: got slot %u new %d dropped %d, want slot %u new 1 dropped 0",
                first[i].key, slot, is_new, dropped, first[i].want);
    }
    md_ledger_commit(l);
    /* the next scrape keeps them and they are not new any more */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_COUNT, AT(1, 0, 10), abc, 3, &r, &err),
        MD_OK);
    staged_of(l, 1, "c", &slot, &is_new, &dropped);
    assert_int_equal(slot, 2);
    assert_int_equal(is_new, 0);
    md_ledger_commit(l);
    /* slots are numbered per target */
    (void)scrape(l, 2, 0, MD_FIRST_COUNT, AT(1, 0, 10), xy, 2);
    assert_int_equal(slot_of(l, 2, "x"), 0);
    assert_int_equal(slot_of(l, 2, "y"), 1);
    /* a restart (a went down, 1 of 1 voters) drops b and c: staged dropped
     * with their slots */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_COUNT, AT(1, 0, 20), a0, 1, &r, &err),
        MD_OK);
    assert_int_equal(r.target_restart, 1);
    staged_of(l, 1, "b", &slot, &is_new, &dropped);
    if (slot != 1 || is_new || !dropped)
        fail_msg("b: got slot %u new %d dropped %d, want 1 0 1", slot, is_new, dropped);
    staged_of(l, 1, "c", &slot, &is_new, &dropped);
    if (slot != 2 || is_new || !dropped)
        fail_msg("c: got slot %u new %d dropped %d, want 2 0 1", slot, is_new, dropped);
    md_ledger_commit(l);
    /* new series reuse the freed slots, lowest first */
    (void)scrape(l, 1, 0, MD_FIRST_COUNT, AT(1, 0, 30), ade, 3);
    assert_int_equal(slot_of(l, 1, "a"), 0);
    assert_int_equal(slot_of(l, 1, "d"), 1);
    assert_int_equal(slot_of(l, 1, "e"), 2);
    /* a rolled-back new series gives its slot back */
    assert_int_equal(md_ledger_apply(l, 1, 0, MD_FIRST_COUNT, AT(1, 0, 40), f, 1, &r, &err),
        MD_OK);
    staged_of(l, 1, "f", &slot, &is_new, &dropped);
    assert_int_equal(slot, 3);
    md_ledger_rollback(l);
    (void)scrape(l, 1, 0, MD_FIRST_COUNT, AT(1, 0, 50), g, 1);
    assert_int_equal(slot_of(l, 1, "g"), 3);
    md_ledger_free(l);

    /* restore at given slots; the hole at 0 is handed out first, then
     * slots after the highest */
    l = new_ledger(100);
    assert_int_equal(md_ledger_restore_series_at(l, 7, 5, "p", 1, 10, AT(1, 0, 0), 0, 0, &err),
        MD_OK);
    assert_int_equal(md_ledger_restore_series_at(l, 7, 2, "q", 1, 10, AT(1, 0, 0), 0, 0, &err),
        MD_OK);
    assert_int_equal(md_ledger_restore_series(l, 7, "r", 1, 10, AT(1, 0, 0), 0, 0, &err), MD_OK);
    assert_int_equal(slot_of(l, 7, "p"), 5);
    assert_int_equal(slot_of(l, 7, "q"), 2);
    assert_int_equal(slot_of(l, 7, "r"), 6);
    {
        struct md_ledger_input pqrst[] = { in_v("p", 11), in_v("q", 11), in_v("r", 11),
                                           in_v("s", 1), in_v("t", 1) };

        r = scrape(l, 7, 0, MD_FIRST_COUNT, AT(1, 0, 10), pqrst, 5);
        assert_int_equal(billed_to(&r, 0), 1);      /* 11 - 10 */
        assert_int_equal(billed_to(&r, 3), 1);      /* new: in full */
        assert_int_equal(slot_of(l, 7, "s"), 0);
        assert_int_equal(slot_of(l, 7, "t"), 1);
    }
    assert_int_equal(md_ledger_restore_series_at(l, 7, MD_LEDGER_SERIES_LIMIT, "u", 1, 1, 1, 0,
        0, &err), MD_ELIMIT);
    md_ledger_free(l);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_skip_reasons),
        cmocka_unit_test(test_2p53),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_restart_threshold),
        cmocka_unit_test(test_created),
        cmocka_unit_test(test_new_series_and_targets),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_spread_table),
        cmocka_unit_test(test_spread_property),
        cmocka_unit_test(test_apply_spread),
        cmocka_unit_test(test_churn),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_restore_identical),
        cmocka_unit_test(test_alloc_torture),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_slots),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
