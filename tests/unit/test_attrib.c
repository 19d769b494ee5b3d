/* test_attrib.c: attribution's fast path (labels normalised once per
 * sample, buckets decided before any label lookup) against the reference
 * path sample_slow (every lookup normalises again), on the ExtProc fixture
 * scrapes and on hand-made bodies with the edge cases, under several
 * configurations: the batches must be identical entry by entry, and the
 * drop counters equal.  A few hand-counted expectations pin the reference
 * itself.  One scratch carried across many bodies and two configurations
 * (the fast path remembers label names, their matches and their order from
 * sample to sample) must give what a fresh scratch gives, also after a
 * sample took the reference path, which writes into the same memory.
 * attrib.c is included so the static reference path is reachable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../meterd/attrib.c"
#include "config.h"
#include "expfmt.h"
#include "../common/fixture.h"

struct run_ctx {
    const struct md_attrib   *a;
    struct md_attrib_target   t;
    struct md_attrib_scratch *sc;
    struct md_batch          *b;
    struct md_err             err;
    int                       slow;
    int                       rc_first;     /* first non-OK return of a sample */
};

static int
on_sample(void *arg, const struct md_sample *s)
{
    struct run_ctx *c = arg;
    int rc = c->slow ? sample_slow(c->a, &c->t, s, c->b, c->sc, &c->err)
                     : md_attrib_sample(c->a, &c->t, s, c->b, c->sc, &c->err);

    if (rc != MD_OK && c->rc_first == MD_OK)
        c->rc_first = rc;
    return MD_OK;    /* keep going: compare every sample, errors included */
}

/* one body through a caller's scratch (kept across bodies when the caller
 * keeps it); names up to 4 KiB, so the reference path's long label is
 * reached; rc_first: the first sample's error, else md_attrib_finish's */
static struct md_batch *
attribute_with(const struct md_attrib *a, struct md_attrib_scratch *sc, const char *body,
    size_t len, enum md_expfmt_format fmt, int slow, int *rc_first)
{
    struct run_ctx c;
    struct md_expfmt_error perr;
    struct md_expfmt_limits lim;

    memset(&c, 0, sizeof(c));
    c.a = a;
    c.t.namespace = "team-x";
    c.sc = sc;
    c.b = md_batch_new("http://t/metrics", 0, 0);
    c.slow = slow;
    assert_non_null(c.b);
    md_expfmt_limits_default(&lim);
    lim.name_max = 4096;
    if (md_expfmt_parse(body, len, fmt, &lim, on_sample, &c, &perr) != MD_OK)
        fail_msg("body does not parse: line %u: %s", perr.line, perr.msg);
    if (c.rc_first == MD_OK)
        c.rc_first = md_attrib_finish(c.b, &c.err);
    *rc_first = c.rc_first;
    return c.b;
}

/* the same with a fresh scratch */
static struct md_batch *
attribute(const struct md_attrib *a, const char *body, size_t len, enum md_expfmt_format fmt,
    int slow, int *rc_first)
{
    struct md_attrib_scratch *sc = md_attrib_scratch_new();
    struct md_batch *b;

    assert_non_null(sc);
    b = attribute_with(a, sc, body, len, fmt, slow, rc_first);
    md_attrib_scratch_free(sc);
    return b;
}

static void
compare(const char *what, const struct md_batch *got, const struct md_batch *want)
{
    for (int r = 0; r < MD_DROP_REASON_COUNT; r++)
        if (got->dropped[r] != want->dropped[r])
            fail_msg("%s: dropped[%s] got %llu want %llu", what, md_drop_names[r],
                (unsigned long long)got->dropped[r], (unsigned long long)want->dropped[r]);
    if (got->overflow_series != want->overflow_series)
        fail_msg("%s: overflow_series got %llu want %llu", what,
            (unsigned long long)got->overflow_series, (unsigned long long)want->overflow_series);
    if (got->count != want->count)
        fail_msg("%s: entries got %zu want %zu", what, got->count, want->count);
    for (size_t i = 0; i < got->count; i++) {
        const struct md_batch_entry *g = &got->e[i], *w = &want->e[i];

        if (g->key_len != w->key_len ||
            memcmp(md_batch_str(got, g->key_off), md_batch_str(want, w->key_off),
                g->key_len) != 0)
            fail_msg("%s: entry %zu key got \"%.*s\" want \"%.*s\"", what, i,
                (int)g->key_len, md_batch_str(got, g->key_off),
                (int)w->key_len, md_batch_str(want, w->key_off));
        for (int d = 0; d < MD_DIM_COUNT; d++)
            if (g->dim_len[d] != w->dim_len[d] ||
                memcmp(md_batch_str(got, g->dim_off[d]), md_batch_str(want, w->dim_off[d]),
                    g->dim_len[d]) != 0)
                fail_msg("%s: entry %zu dim %d got \"%.*s\" want \"%.*s\"", what, i, d,
                    (int)g->dim_len[d], md_batch_str(got, g->dim_off[d]),
                    (int)w->dim_len[d], md_batch_str(want, w->dim_off[d]));
        if (g->kind != w->kind || g->value != w->value || g->has_ts != w->has_ts ||
            g->ts_ms != w->ts_ms || g->has_created != w->has_created ||
            g->created != w->created || g->overflow != w->overflow)
            fail_msg("%s: entry %zu (kind %d/%d value %.17g/%.17g created %d/%d "
                "overflow %d/%d) differs", what, i, g->kind, w->kind, g->value, w->value,
                g->has_created, w->has_created, g->overflow, w->overflow);
    }
}

/* two runs of one body: the same return code and the same batch; frees both */
static void
compare_runs(const char *what, struct md_batch *got, int rc_got, struct md_batch *want,
    int rc_want)
{
    if (rc_got != rc_want)
        fail_msg("%s: rc got %d want %d", what, rc_got, rc_want);
    compare(what, got, want);
    md_batch_free(got);
    md_batch_free(want);
}

static const char *const configs[] = {
    "",
    "attribution:\n  department_label: department.id\n  namespace_label: k8s.namespace\n"
    "  model_label: gen_ai_response_model\n  department_namespaces: {eng: team-eng}\n",
    "attribution:\n  department_label: DEPARTMENT\n  token_type_label: gen_ai.token.type\n"
    "  operation_label: gen_ai_operation_name\n  exclude_operations: [chat]\n",
    /* a configured name that is `le` itself: found before buckets' le is cut */
    "attribution:\n  department_label: le\n",
};

/* hand-made bodies: classic and quoted UTF-8 names, dotted labels, labels
 * that canonicalise to the same key, overflow, excluded operations, the v0.3
 * `total` type, a missing type, OpenMetrics _created, inference usage */
static const char body_text[] =
    "# TYPE gen_ai_client_token_usage_token histogram\n"
    "gen_ai_client_token_usage_token_bucket{gen_ai_token_type=\"input\",le=\"1\"} 1\n"
    "gen_ai_client_token_usage_token_bucket{gen_ai_token_type=\"input\",le=\"+Inf\"} 2\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_token_type=\"input\",department=\"eng\","
    "gen_ai_request_model=\"m1\",gen_ai_operation_name=\"chat\"} 10\n"
    "gen_ai_client_token_usage_token_count{gen_ai_token_type=\"input\",department=\"eng\","
    "gen_ai_request_model=\"m1\",gen_ai_operation_name=\"chat\"} 2\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_token_type=\"output\",department_id=\"ops\","
    "gen_ai_request_model=\"m1\",gen_ai_response_model=\"m1-2024\"} 7\n"
    "gen_ai_client_token_usage_token_count{gen_ai_token_type=\"output\"} 2\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_token_type=\"total\"} 17\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_operation_name=\"count_tokens\","
    "gen_ai_token_type=\"input\"} 5\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_operation_name=\"x\"} 3\n"
    "gen_ai_client_token_usage_token_sum{otel_metric_overflow=\"true\"} 99\n"
    "gen_ai_client_token_usage_token_count{otel_metric_overflow=\"true\"} 9\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_token_type=\"input\",DEPARTMENT=\"a\","
    "department=\"b\",le=\"7\",k8s_namespace=\"ns-1\"} 4\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_token_type=\"input\",le=\"q\","
    "department=\"\",zz=\"1\",aa=\"2\",mm=\"3\"} 6\n"
    "# TYPE gen_ai_server_request_duration_seconds histogram\n"
    "gen_ai_server_request_duration_seconds_sum{gen_ai_token_type=\"input\"} 1.5\n"
    "gen_ai_server_request_duration_seconds_count{gen_ai_token_type=\"input\"} 3\n"
    "# TYPE gen_ai_client_inference_usage_input_tokens_total counter\n"
    "gen_ai_client_inference_usage_input_tokens_total{gen_ai_token_type=\"input\"} 10\n"
    "{\"gen_ai.client.token.usage_sum\",\"gen_ai.token.type\"=\"cached_input\","
    "\"department.id\"=\"eng\",\"k8s.namespace\"=\"ns-2\"} 8\n"
    "target_info{service_name=\"x\"} 1\n";

static const char body_om[] =
    "# TYPE gen_ai_client_token_usage_token histogram\n"
    "gen_ai_client_token_usage_token_bucket{gen_ai_token_type=\"input\",le=\"+Inf\"} 2\n"
    "gen_ai_client_token_usage_token_sum{gen_ai_token_type=\"input\"} 10\n"
    "gen_ai_client_token_usage_token_count{gen_ai_token_type=\"input\"} 2\n"
    "gen_ai_client_token_usage_token_created{gen_ai_token_type=\"input\"} 1700000000.5\n"
    "# EOF\n";

static void
check_body(const char *what, const char *body, size_t len, enum md_expfmt_format fmt)
{
    for (size_t c = 0; c < sizeof(configs) / sizeof(configs[0]); c++) {
        struct md_cfg_errors errs;
        struct md_config *cfg = NULL;
        struct md_err err = {0};
        struct md_attrib *a;
        struct md_batch *fast, *slow;
        int rc_fast, rc_slow;
        char name[160];

        memset(&errs, 0, sizeof(errs));
        if (md_config_load_buf("t.yaml", configs[c], strlen(configs[c]), &cfg, &errs) != MD_OK)
            fail_msg("config %zu: %s", c, errs.count ? errs.msgs[0] : "?");
        a = md_attrib_new(cfg, &err);
        assert_non_null(a);
        fast = attribute(a, body, len, fmt, 0, &rc_fast);
        slow = attribute(a, body, len, fmt, 1, &rc_slow);
        (void)snprintf(name, sizeof(name), "%s, config %zu", what, c);
        compare_runs(name, fast, rc_fast, slow, rc_slow);
        md_attrib_free(a);
        md_config_unref(cfg);
    }
}

static void
test_fixtures(void **state)
{
    static const char *const files[] = {
        "extproc_v04_text.prom", "extproc_newest_text.prom", "extproc_utf8.txt",
    };
    size_t checked = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        size_t n;
        char *body = md_test_read_fixture(files[i], &n);

        check_body(files[i], body, n, MD_EXPFMT_AUTO);
        free(body);
        checked++;
    }
    assert_int_equal(checked, 3);
}

static void
test_edge_bodies(void **state)
{
    (void)state;
    check_body("text body", body_text, sizeof(body_text) - 1, MD_EXPFMT_TEXT);
    check_body("openmetrics body", body_om, sizeof(body_om) - 1, MD_EXPFMT_OPENMETRICS);
}

/* the fast path's decisions on body_text with the default configuration,
 * counted by hand from the lines above */
static void
test_hand_counted(void **state)
{
    struct md_cfg_errors errs;
    struct md_config *cfg = NULL;
    struct md_err err = {0};
    struct md_attrib *a;
    struct md_batch *b;
    int rc;
    static const struct { int reason; uint64_t want; } drops[] = {
        { MD_DROP_BUCKET, 2 },
        { MD_DROP_COUNT_NOT_INPUT, 2 },        /* output _count, overflow _count */
        { MD_DROP_TOTAL_TYPE, 1 },
        { MD_DROP_EXCLUDED_OPERATION, 1 },     /* count_tokens */
        { MD_DROP_NO_TOKEN_TYPE, 1 },          /* operation "x", no type */
        { MD_DROP_OTHER_FAMILY, 3 },           /* duration _sum/_count, target_info */
        { MD_DROP_INFERENCE_DUPLICATE, 1 },
    };

    (void)state;
    memset(&errs, 0, sizeof(errs));
    assert_int_equal(md_config_load_buf("t.yaml", "", 0, &cfg, &errs), MD_OK);
    a = md_attrib_new(cfg, &err);
    assert_non_null(a);
    b = attribute(a, body_text, sizeof(body_text) - 1, MD_EXPFMT_TEXT, 0, &rc);
    assert_int_equal(rc, MD_OK);
    for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
        if (b->dropped[drops[i].reason] != drops[i].want)
            fail_msg("dropped[%s] got %llu want %llu", md_drop_names[drops[i].reason],
                (unsigned long long)b->dropped[drops[i].reason],
                (unsigned long long)drops[i].want);
    /* billed: input _sum + input _count (eng), output _sum, overflow _sum,
     * the two input sums with duplicate/le labels, the UTF-8 cached_input */
    if (b->count != 7)
        fail_msg("entries got %zu want 7", b->count);
    assert_int_equal(b->overflow_series, 1);
    {
        const struct md_batch_entry *e = &b->e[0];

        assert_int_equal(e->kind, MD_KIND_TOKENS);
        assert_true(e->value == 10.0);
        if (e->dim_len[MD_DIM_DEPARTMENT] != 3 ||
            memcmp(md_batch_str(b, e->dim_off[MD_DIM_DEPARTMENT]), "eng", 3) != 0)
            fail_msg("entry 0 department got \"%.*s\" want \"eng\"",
                (int)e->dim_len[MD_DIM_DEPARTMENT], md_batch_str(b, e->dim_off[MD_DIM_DEPARTMENT]));
        if (e->dim_len[MD_DIM_NAMESPACE] != 6 ||
            memcmp(md_batch_str(b, e->dim_off[MD_DIM_NAMESPACE]), "team-x", 6) != 0)
            fail_msg("entry 0 namespace got \"%.*s\" want \"team-x\"",
                (int)e->dim_len[MD_DIM_NAMESPACE], md_batch_str(b, e->dim_off[MD_DIM_NAMESPACE]));
    }
    md_batch_free(b);
    md_attrib_free(a);
    md_config_unref(cfg);
}

/* a body whose first sum has a 600-byte label name (the fast path cannot
 * hold its key: the reference path takes it and fails), after an `le` that
 * shifts where the reference path writes; then sums whose labels sit at the
 * same indices as those it overwrote */
static char *
long_label_body(size_t *len)
{
    struct md_buf b;
    char *p;

    md_buf_init(&b, 1u << 16);
    assert_int_equal(md_buf_puts(&b, "# TYPE gen_ai_client_token_usage_token histogram\n"
        "gen_ai_client_token_usage_token_sum{department=\"d1\",le=\"x\","
        "gen_ai_token_type=\"input\",gen_ai_request_model=\"m\","), MD_OK);
    for (int i = 0; i < 600; i++)
        assert_int_equal(md_buf_putc(&b, 'a'), MD_OK);
    assert_int_equal(md_buf_puts(&b, "=\"v\"} 5\n"
        "gen_ai_client_token_usage_token_sum{department=\"d2\",le=\"y\","
        "gen_ai_token_type=\"output\",gen_ai_request_model=\"m\"} 7\n"
        "gen_ai_client_token_usage_token_sum{department=\"d3\",le=\"z\","
        "gen_ai_token_type=\"input\",gen_ai_request_model=\"m\"} 9\n"), MD_OK);
    p = md_buf_steal(&b, len);
    return p;
}

static void
test_scratch_reuse(void **state)
{
    static const char *const files[] = {
        "extproc_v04_text.prom", "extproc_newest_text.prom", "extproc_utf8.txt",
    };
    struct md_attrib *as[2];
    struct md_config *cfgs[2];
    struct md_attrib_scratch *kept = md_attrib_scratch_new();
    struct { char *p; size_t n; } bodies[6];
    size_t nb = 0, runs = 0;

    (void)state;
    assert_non_null(kept);
    for (int c = 0; c < 2; c++) {
        struct md_cfg_errors errs;
        struct md_err err = {0};

        memset(&errs, 0, sizeof(errs));
        cfgs[c] = NULL;
        assert_int_equal(md_config_load_buf("t.yaml", configs[c], strlen(configs[c]), &cfgs[c],
            &errs), MD_OK);
        as[c] = md_attrib_new(cfgs[c], &err);
        assert_non_null(as[c]);
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        bodies[nb].p = md_test_read_fixture(files[i], &bodies[nb].n);
        nb++;
    }
    bodies[nb].p = md_strdup(body_text);
    bodies[nb++].n = sizeof(body_text) - 1;
    bodies[nb].p = long_label_body(&bodies[nb].n);
    nb++;
    bodies[nb].p = md_strdup(body_om);
    bodies[nb++].n = sizeof(body_om) - 1;
    /* every body after every other one, under both configurations in turn */
    for (size_t round = 0; round < 2 * nb * nb; round++) {
        size_t i = round % nb, j = (round / nb) % nb;
        const struct md_attrib *a = as[(round / (nb * nb) + i) % 2];

        for (int k = 0; k < 2; k++) {
            size_t w = k ? j : i;
            struct md_attrib_scratch *fresh = md_attrib_scratch_new();
            struct md_batch *got, *want;
            int rc_got, rc_want;
            char name[96];

            got = attribute_with(a, kept, bodies[w].p, bodies[w].n, MD_EXPFMT_AUTO, 0, &rc_got);
            want = attribute_with(a, fresh, bodies[w].p, bodies[w].n, MD_EXPFMT_AUTO, 0, &rc_want);
            (void)snprintf(name, sizeof(name), "round %zu body %zu", round, w);
            compare_runs(name, got, rc_got, want, rc_want);
            md_attrib_scratch_free(fresh);
            runs++;
        }
    }
    /* the long-label body: its first sum fails the sample; the next ones
     * (d2 output 7, d3 input 9) are billed with their own token types */
    {
        struct md_batch *b;
        int rc;

        b = attribute_with(as[0], kept, bodies[4].p, bodies[4].n, MD_EXPFMT_AUTO, 0, &rc);
        assert_int_equal(rc, MD_ELIMIT);
        assert_int_equal(b->count, 2);
        for (size_t e = 0; e < 2; e++) {
            const char *want = e == 0 ? "output" : "input";
            const struct md_batch_entry *x = &b->e[e];

            if (x->dim_len[MD_DIM_TOKEN_TYPE] != strlen(want) ||
                memcmp(md_batch_str(b, x->dim_off[MD_DIM_TOKEN_TYPE]), want, strlen(want)) != 0)
                fail_msg("entry %zu token type \"%.*s\" want \"%s\"", e,
                    (int)x->dim_len[MD_DIM_TOKEN_TYPE],
                    md_batch_str(b, x->dim_off[MD_DIM_TOKEN_TYPE]), want);
        }
        md_batch_free(b);
    }
    assert_int_equal(runs, 4 * nb * nb);
    for (size_t i = 0; i < nb; i++)
        free(bodies[i].p);
    md_attrib_scratch_free(kept);
    for (int c = 0; c < 2; c++) {
        md_attrib_free(as[c]);
        md_config_unref(cfgs[c]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_edge_bodies),
        cmocka_unit_test(test_hand_counted),
        cmocka_unit_test(test_scratch_reuse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
