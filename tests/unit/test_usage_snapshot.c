/* test_usage_snapshot.c: the /metrics aggregate (stage, commit, rollback,
 * limits, snapshots) and its exposition (exporters/prometheus.c): exact
 * bodies written by hand, the cardinality cut, Accept negotiation, cost
 * spelling and the OpenMetrics conversion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "exporters/prometheus.h"
#include "usage_snapshot.h"
#include "util.h"

/* stage one usage delta for "c1/ns/dept/model/prov/type" */
static void
stage(struct md_usnap_agg *a, const char *ns, const char *type, uint64_t tokens,
    uint64_t requests)
{
    const char *v[6] = { "c1", ns, "d", "m", "p", type };
    size_t l[6];

    for (int i = 0; i < 6; i++)
        l[i] = strlen(v[i]);
    assert_int_equal(md_usnap_agg_stage_usage(a, v, l, tokens, requests), MD_OK);
}

static const struct md_usnap_series *
find(const struct md_usnap *s, const char *ns, const char *type)
{
    const struct md_usnap_series *v = md_usnap_series(s);

    for (size_t i = 0; i < md_usnap_count(s); i++)
        if (v[i].family == MD_USNAP_USAGE && strcmp(v[i].val[1], ns) == 0 &&
            strcmp(v[i].val[5], type) == 0)
            return &v[i];
    return NULL;
}

static void
test_commit_rollback(void **state)
{
    struct md_usnap_agg *a = md_usnap_agg_new(100);
    struct md_usnap *s1, *s2;

    (void)state;
    assert_non_null(a);
    stage(a, "a", "input", 10, 1);
    stage(a, "a", "input", 5, 2);
    stage(a, "a", "output", 7, 0);
    assert_int_equal(md_usnap_agg_commit(a), 1);
    s1 = md_usnap_agg_snapshot(a);
    assert_int_equal(md_usnap_count(s1), 2);
    assert_int_equal(find(s1, "a", "input")->tokens, 15);
    assert_int_equal(find(s1, "a", "input")->requests, 3);
    assert_int_equal(find(s1, "a", "output")->tokens, 7);

    /* a rolled-back transaction leaves no trace, not even its new label set */
    stage(a, "a", "input", 100, 100);
    stage(a, "b", "input", 1, 1);
    md_usnap_agg_rollback(a);
    assert_int_equal(md_usnap_agg_series_count(a), 2);
    stage(a, "b", "output", 4, 0);            /* after a rollback the table still works */
    stage(a, "a", "output", 1, 0);
    assert_int_equal(md_usnap_agg_commit(a), 1);
    s2 = md_usnap_agg_snapshot(a);
    assert_int_equal(md_usnap_count(s2), 3);
    assert_int_equal(find(s2, "a", "input")->tokens, 15);
    assert_int_equal(find(s2, "a", "output")->tokens, 8);
    assert_int_equal(find(s2, "b", "output")->tokens, 4);
    assert_null(find(s2, "b", "input"));
    /* first-seen order */
    assert_string_equal(md_usnap_series(s2)[2].val[1], "b");
    /* the older snapshot is immutable */
    assert_int_equal(find(s1, "a", "output")->tokens, 7);
    assert_int_equal(md_usnap_count(s1), 2);
    assert_true(md_usnap_generation(s2) > md_usnap_generation(s1));
    /* snapshots outlive the aggregate (shared arena) */
    md_usnap_agg_free(a);
    assert_string_equal(find(s2, "b", "output")->val[0], "c1");
    md_usnap_unref(s1);
    md_usnap_unref(s2);
}

static void
test_limit_untracked(void **state)
{
    struct md_usnap_agg *a = md_usnap_agg_new(2);
    struct md_usnap *s;
    char big[MD_USNAP_VALUE_MAX + 2];
    const char *v[6] = { "c1", big, "d", "m", "p", "input" };
    size_t l[6] = { 2, sizeof(big) - 1, 1, 1, 1, 5 };

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    stage(a, "a", "input", 1, 1);
    stage(a, "b", "input", 1, 1);
    stage(a, "c", "input", 1, 1);            /* third label set: over series_max */
    stage(a, "a", "input", 1, 1);            /* existing: still tracked */
    assert_int_equal(md_usnap_agg_commit(a), 1);
    assert_int_equal(md_usnap_agg_series_count(a), 2);
    assert_int_equal(md_usnap_agg_untracked(a), 1);
    md_usnap_agg_free(a);

    a = md_usnap_agg_new(10);
    assert_int_equal(md_usnap_agg_stage_usage(a, v, l, 1, 1), MD_OK);
    (void)md_usnap_agg_commit(a);
    assert_int_equal(md_usnap_agg_untracked(a), 1);
    /* a total that would wrap is refused and counted */
    stage(a, "a", "input", UINT64_MAX, 0);
    (void)md_usnap_agg_commit(a);
    stage(a, "a", "input", 1, 0);
    (void)md_usnap_agg_commit(a);
    s = md_usnap_agg_snapshot(a);
    assert_int_equal(find(s, "a", "input")->tokens, UINT64_MAX);
    assert_int_equal(md_usnap_untracked(s), 2);
    md_usnap_unref(s);
    md_usnap_agg_free(a);
    assert_null(md_usnap_agg_new(0));
    assert_null(md_usnap_agg_new(MD_USNAP_SERIES_MAX + 1));
}

static void
test_many_series(void **state)
{
    struct md_usnap_agg *a = md_usnap_agg_new(50000);
    struct md_usnap *s;
    uint64_t sum = 0, want = 0;

    (void)state;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 20000; i++) {
            char ns[32];

            (void)snprintf(ns, sizeof(ns), "ns-%d", i);
            stage(a, ns, "output", (uint64_t)i, 0);
            want += (uint64_t)i;
        }
        (void)md_usnap_agg_commit(a);
    }
    s = md_usnap_agg_snapshot(a);
    assert_int_equal(md_usnap_count(s), 20000);
    for (size_t i = 0; i < md_usnap_count(s); i++)
        sum += md_usnap_series(s)[i].tokens;
    assert_int_equal(sum, want);
    assert_string_equal(md_usnap_series(s)[12345].val[1], "ns-12345");
    md_usnap_unref(s);
    md_usnap_agg_free(a);
}

static void
test_publisher(void **state)
{
    struct md_usnap_pub *p = md_usnap_pub_new();
    struct md_usnap_agg *a = md_usnap_agg_new(10);
    struct md_usnap *held, *now;

    (void)state;
    held = md_usnap_pub_get(p);
    assert_int_equal(md_usnap_count(held), 0);
    stage(a, "a", "input", 3, 1);
    (void)md_usnap_agg_commit(a);
    md_usnap_pub_publish(p, md_usnap_agg_snapshot(a));
    now = md_usnap_pub_get(p);
    assert_int_equal(md_usnap_count(now), 1);
    assert_int_equal(md_usnap_count(held), 0);      /* a held reference stays valid */
    md_usnap_unref(held);
    md_usnap_pub_free(p);                           /* now is still ours */
    assert_int_equal(find(now, "a", "input")->tokens, 3);
    md_usnap_unref(now);
    md_usnap_agg_free(a);
}

/* ---- exposition ---- */

static struct md_usnap *
sample_snapshot(void)
{
    struct md_usnap_agg *a = md_usnap_agg_new(100);
    const char *cv[5] = { "c1", "a", "d", "m", "EUR" };
    size_t cl[5] = { 2, 1, 1, 1, 3 };
    const char *uv[6] = { "c1", "a", "d", "m", "p", "output" };
    size_t ul[6] = { 2, 1, 1, 1, 1, 6 };
    struct md_usnap *s;

    stage(a, "a", "input", 10, 2);
    stage(a, "a", "output", 5, 0);
    stage(a, "q\"\\\n", "input", 1, 1);       /* escaping */
    assert_int_equal(md_usnap_agg_stage_cost(a, cv, cl, 1500000000), MD_OK);
    assert_int_equal(md_usnap_agg_stage_unpriced(a, uv, ul, 9), MD_OK);
    (void)md_usnap_agg_commit(a);
    s = md_usnap_agg_snapshot(a);
    md_usnap_agg_free(a);
    return s;
}

#define L(ns, t) "{cluster=\"c1\",namespace=\"" ns "\",department=\"d\",model=\"m\"," \
                 "provider=\"p\",token_type=\"" t "\"}"

static void
test_render_text_and_om(void **state)
{
    struct md_usnap *s = sample_snapshot();
    struct md_promexp_stats st = {0};
    struct md_buf b;
    static const char *want_text =
        "# HELP meterd_tokens_total Tokens used, by tenant, model and token type, exactly as "
        "stored (cumulative over the usage the database holds; token types overlap: see the "
        "README).\n"
        "# TYPE meterd_tokens_total counter\n"
        "meterd_tokens_total" L("a", "input") " 10\n"
        "meterd_tokens_total" L("a", "output") " 5\n"
        "meterd_tokens_total" L("q\\\"\\\\\\n", "input") " 1\n"
        "# HELP meterd_requests_total Requests, counted once per request from the input "
        "token type (token_type=\"input\").\n"
        "# TYPE meterd_requests_total counter\n"
        "meterd_requests_total" L("a", "input") " 2\n"
        "meterd_requests_total" L("q\\\"\\\\\\n", "input") " 1\n"
        "# HELP meterd_cost_total Rated cost in units of the currency label (from integer "
        "nanos), by tenant and model.\n"
        "# TYPE meterd_cost_total counter\n"
        "meterd_cost_total{cluster=\"c1\",namespace=\"a\",department=\"d\",model=\"m\","
        "currency=\"EUR\"} 1.5\n"
        "# HELP meterd_unpriced_tokens_total Tokens no pricing model matched (not in "
        "meterd_cost_total).\n"
        "# TYPE meterd_unpriced_tokens_total counter\n"
        "meterd_unpriced_tokens_total" L("a", "output") " 9\n";

    (void)state;
    md_buf_init(&b, 1 << 20);
    assert_int_equal(md_promexp_render_usage(s, MD_PROMEXP_TEXT, 100, &b, &st), MD_OK);
    assert_string_equal(b.data, want_text);
    assert_int_equal(st.exported, 7);
    assert_int_equal(st.cut, 0);

    /* OpenMetrics: counter families without _total, samples unchanged */
    md_buf_reset(&b);
    assert_int_equal(md_promexp_render_usage(s, MD_PROMEXP_OPENMETRICS, 100, &b, &st), MD_OK);
    assert_non_null(strstr(b.data, "# TYPE meterd_tokens counter\n"));
    assert_non_null(strstr(b.data, "# HELP meterd_cost Rated"));
    assert_null(strstr(b.data, "# TYPE meterd_tokens_total"));
    assert_non_null(strstr(b.data, "\nmeterd_tokens_total" L("a", "output") " 5\n"));

    /* limit 3: entry 1 (2 lines) fits, entry 2 (1 line) fits, entry 3 (2
     * lines) does not, cost (1) and unpriced (1) do not either */
    md_buf_reset(&b);
    assert_int_equal(md_promexp_render_usage(s, MD_PROMEXP_TEXT, 3, &b, &st), MD_OK);
    assert_int_equal(st.exported, 3);
    assert_int_equal(st.cut, 4);
    assert_null(strstr(b.data, "namespace=\"q"));
    assert_null(strstr(b.data, "EUR"));
    assert_non_null(strstr(b.data, "meterd_tokens_total" L("a", "output") " 5\n"));
    /* families stay declared even when every series is cut */
    assert_non_null(strstr(b.data, "# TYPE meterd_cost_total counter\n"));
    md_buf_fini(&b);
    md_usnap_unref(s);
}

static void
test_nanos(void **state)
{
    static const struct { int64_t v; const char *want; } cases[] = {
        { 0, "0" }, { 1, "0.000000001" }, { 1000000000, "1" }, { 1500000000, "1.5" },
        { -2500000000LL, "-2.5" }, { 3000000001LL, "3.000000001" },
        { 123456789012345678LL, "123456789.012345678" },
        { INT64_MIN, "-9223372036.854775808" }, { INT64_MAX, "9223372036.854775807" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_buf b;

        md_buf_init(&b, 64);
        assert_int_equal(md_promexp_put_nanos(&b, cases[i].v), MD_OK);
        if (strcmp(b.data, cases[i].want) != 0)
            fail_msg("case %zu: got %s want %s", i, b.data, cases[i].want);
        md_buf_fini(&b);
    }
}

static void
test_negotiate(void **state)
{
    static const struct { const char *accept; enum md_promexp_format want; } cases[] = {
        { NULL, MD_PROMEXP_TEXT },
        { "", MD_PROMEXP_TEXT },
        { "*/*", MD_PROMEXP_TEXT },
        { "text/plain;version=0.0.4", MD_PROMEXP_TEXT },
        /* Prometheus 2.42's scrape Accept header */
        { "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
          MD_PROMEXP_OPENMETRICS },
        { "application/openmetrics-text; version=1.0.0", MD_PROMEXP_OPENMETRICS },
        { "Application/OpenMetrics-Text", MD_PROMEXP_OPENMETRICS },
        { "text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5",
          MD_PROMEXP_TEXT },
        { "application/openmetrics-text;q=0", MD_PROMEXP_TEXT },
        { "application/openmetrics-text;q=0.000, text/plain", MD_PROMEXP_TEXT },
        { "application/openmetrics-text;q=1.0, text/plain;q=1", MD_PROMEXP_OPENMETRICS },
        { "application/openmetrics-text;q=bogus", MD_PROMEXP_TEXT },
        { "application/json", MD_PROMEXP_TEXT },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum md_promexp_format got = md_promexp_negotiate(cases[i].accept);

        if (got != cases[i].want)
            fail_msg("case %zu (%s): got %d want %d", i,
                cases[i].accept ? cases[i].accept : "NULL", got, cases[i].want);
    }
    assert_non_null(strstr(md_promexp_content_type(MD_PROMEXP_OPENMETRICS),
        "application/openmetrics-text; version=1.0.0"));
    assert_non_null(strstr(md_promexp_content_type(MD_PROMEXP_TEXT), "version=0.0.4"));
}

static void
test_om_convert(void **state)
{
    static const char in[] =
        "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
        "# HELP g_total A gauge named _total stays.\n# TYPE g_total gauge\ng_total 1\n"
        "# HELP b_info Build.\n# TYPE b_info gauge\nb_info{v=\"1\"} 1\n"
        "# HELP c Counter without suffix stays.\n# TYPE c counter\nc 2\n"
        "# TYPE d_total counter\nd_total 4";
    static const char want[] =
        "# HELP a Things.\n# TYPE a counter\na_total{x=\"1\"} 3\n"
        "# HELP g_total A gauge named _total stays.\n# TYPE g_total gauge\ng_total 1\n"
        "# HELP b_info Build.\n# TYPE b_info gauge\nb_info{v=\"1\"} 1\n"
        "# HELP c Counter without suffix stays.\n# TYPE c counter\nc 2\n"
        "# TYPE d counter\nd_total 4";
    struct md_buf b;

    (void)state;
    md_buf_init(&b, 4096);
    assert_int_equal(md_promexp_om_convert(in, strlen(in), &b), MD_OK);
    assert_string_equal(b.data, want);
    md_buf_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_rollback),
        cmocka_unit_test(test_limit_untracked),
        cmocka_unit_test(test_many_series),
        cmocka_unit_test(test_publisher),
        cmocka_unit_test(test_render_text_and_om),
        cmocka_unit_test(test_nanos),
        cmocka_unit_test(test_negotiate),
        cmocka_unit_test(test_om_convert),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
