/* test_pricing.c: pricing documents (every validation error with its exact
 * file:line:col), matching precedence (exact, glob, regex, first wins),
 * effective dates across a month boundary, the cache rule per provider
 * (v0.5+ subsets, v0.4 Anthropic/Bedrock additive), the reasoning split,
 * unpriced usage, tenant adjustments, the shipped config/pricing.yaml, and
 * the canonical JSON round trip.  Expected amounts are computed by hand in
 * the comments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "money.h"
#include "pricing.h"
#include "util.h"

static struct md_cfg_errors errs;

static struct md_pricing *
load_ok(const char *yaml)
{
    struct md_pricing *p = NULL;
    int rc = md_pricing_load_buf("t.yaml", yaml, strlen(yaml), &p, &errs);

    if (rc != MD_OK)
        fail_msg("expected success, got %d: %s", rc, errs.count ? errs.msgs[0] : "(none)");
    return p;
}

static int32_t
day(const char *s)
{
    int32_t d = 0;

    assert_int_equal(md_pricing_day_parse(s, strlen(s), &d), MD_OK);
    return d;
}

/* ---- days ---- */

static void
test_days(void **state)
{
    static const struct { const char *in; int rc; int32_t want; } cases[] = {
        { "1970-01-01", MD_OK, 0 },
        { "1970-01-02", MD_OK, 1 },
        { "2000-03-01", MD_OK, 11017 },
        { "2024-02-29", MD_OK, 19782 },
        { "2026-01-31", MD_OK, 20484 },
        { "2026-02-01", MD_OK, 20485 },
        { "2026-02-29", MD_EPARSE, 0 },    /* 2026 is not a leap year */
        { "2100-02-29", MD_EPARSE, 0 },    /* divisible by 100, not by 400 */
        { "2000-02-29", MD_OK, 11016 },    /* divisible by 400 */
        { "2026-04-31", MD_EPARSE, 0 },
        { "2026-13-01", MD_EPARSE, 0 },
        { "2026-00-10", MD_EPARSE, 0 },
        { "2026-01-00", MD_EPARSE, 0 },
        { "1969-12-31", MD_EPARSE, 0 },
        { "2026-1-01", MD_EPARSE, 0 },
        { "2026/01/01", MD_EPARSE, 0 },
        { "2026-01-01T", MD_EPARSE, 0 },
        { "20260101", MD_EPARSE, 0 },
    };
    char buf[16];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int32_t got = -7;
        int rc = md_pricing_day_parse(cases[i].in, strlen(cases[i].in), &got);

        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc got %d want %d", i, cases[i].in, rc, cases[i].rc);
        if (rc == MD_OK && got != cases[i].want)
            fail_msg("case %zu \"%s\": got %d want %d", i, cases[i].in, (int)got,
                (int)cases[i].want);
        if (rc == MD_OK) {
            md_pricing_day_fmt(got, buf, sizeof(buf));
            assert_string_equal(buf, cases[i].in);
        }
    }
    /* format and parse are inverse over 200 years, day by day */
    for (int32_t d = 0; d < 73050; d++) {
        int32_t back = -1;

        md_pricing_day_fmt(d, buf, sizeof(buf));
        assert_int_equal(md_pricing_day_parse(buf, strlen(buf), &back), MD_OK);
        assert_int_equal(back, d);
    }
}

static void
test_token_types(void **state)
{
    enum md_token_type t;

    (void)state;
    for (int i = 0; i < MD_TOK_TYPES; i++) {
        const char *n = md_token_type_name((enum md_token_type)i);

        assert_int_equal(md_token_type_parse(n, strlen(n), &t), MD_OK);
        assert_int_equal(t, i);
    }
    assert_string_equal(md_token_type_name(MD_TOK_CACHE_CREATION_INPUT), "cache_creation_input");
    assert_int_equal(md_token_type_parse("total", 5, &t), MD_ENOTFOUND);
    assert_null(md_token_type_name(MD_TOK_TYPES));
}

/* ---- matching ---- */

static const char match_yaml[] =
    "pricing_models:\n"
    "  - name: m\n"
    "    currency: USD\n"
    "    clusters: [c1]\n"
    "    effective_from: 2026-01-01\n"
    "    items:\n"
    "      - models: [\"gpt-4o*\"]\n"
    "        per_million: {input: \"1\"}\n"
    "      - models: [gpt-4o-mini]\n"              /* exact, but after a glob */
    "        per_million: {input: \"2\"}\n"
    "      - models: [\"re:claude-3-(5|7)-.*\"]\n"
    "        per_million: {input: \"3\"}\n"
    "      - models: [claude-3-5-haiku-20241022, \"c?ude\"]\n"
    "        per_million: {input: \"4\"}\n"
    "      - models: [text-embedding-3-small, \"re:ema.l\"]\n"
    "        per_million: {input: \"5\"}\n"
    "      - models: [\"*\"]\n"
    "        per_million: {output: \"6\"}\n";

static void
test_match_precedence(void **state)
{
    static const struct {
        const char *model;
        int         rc;
        long        item;
        const char *pattern;
    } cases[] = {
        { "gpt-4o-mini", MD_OK, 0, "gpt-4o*" },      /* first item wins over exact */
        { "gpt-4o", MD_OK, 0, "gpt-4o*" },           /* * matches empty */
        { "gpt-4o-mini-2024-07-18", MD_OK, 0, "gpt-4o*" },
        { "claude-3-5-haiku-20241022", MD_OK, 2, "re:claude-3-(5|7)-.*" }, /* regex first */
        { "claude-3-7-sonnet", MD_OK, 2, "re:claude-3-(5|7)-.*" },
        { "clude", MD_OK, 3, "c?ude" },
        { "text-embedding-3-small", MD_OK, 4, "text-embedding-3-small" },
        { "email", MD_OK, 4, "re:ema.l" },
        { "xemail", MD_OK, 5, "*" },                 /* regex is anchored at the start */
        { "emails", MD_OK, 5, "*" },                 /* ... and at the end */
        { "claude-3-opus", MD_OK, 5, "*" },
        { "GPT-4O", MD_OK, 5, "*" },                 /* case sensitive */
    };
    struct md_pricing *p = load_ok(match_yaml);
    struct md_price_match m;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = md_pricing_lookup(p, "c1", day("2026-06-01"), "openai", cases[i].model, NULL, &m);

        if (rc != cases[i].rc || m.item != cases[i].item)
            fail_msg("case %zu \"%s\": got rc %d item %ld, want rc %d item %ld", i,
                cases[i].model, rc, m.item, cases[i].rc, cases[i].item);
        assert_string_equal(m.pattern, cases[i].pattern);
        assert_string_equal(m.pricing_model, "m");
        assert_string_equal(m.currency, "USD");
    }
    /* the catch-all item prices only output */
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-06-01"), NULL, "zzz", NULL, &m), MD_OK);
    assert_int_equal(m.priced_mask, 1u << MD_TOK_OUTPUT);
    assert_true(m.price_nanos[MD_TOK_OUTPUT] == 6000000000);
    md_pricing_free(p);

    /* without the catch-all, unknown models are not found but the model applies */
    p = load_ok(
        "pricing_models:\n"
        "  - {name: m, currency: EUR, clusters: [c1], effective_from: 2026-01-01,\n"
        "     items: [{models: [\"a?c\", \"re:x+\"], per_million: {input: \"1\"}}]}\n");
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-01-01"), NULL, "abbc", NULL, &m),
        MD_ENOTFOUND);
    assert_int_equal(m.item, -1);
    assert_null(m.pattern);
    assert_string_equal(m.pricing_model, "m");
    assert_string_equal(m.currency, "EUR");
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-01-01"), NULL, "xxx", NULL, &m), MD_OK);
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-01-01"), NULL, "xxy", NULL, &m),
        MD_ENOTFOUND);
    md_pricing_free(p);
}

static void
test_effective_dates(void **state)
{
    static const char yaml[] =
        "pricing_models:\n"
        "  - name: jan\n"
        "    currency: USD\n"
        "    clusters: [c1]\n"
        "    effective_from: 2026-01-01\n"
        "    effective_to: 2026-02-01\n"
        "    items: [{models: [m], per_million: {input: \"1\"}}]\n"
        "  - name: feb-on\n"
        "    currency: USD\n"
        "    clusters: [c1]\n"
        "    effective_from: 2026-02-01\n"
        "    items: [{models: [m], per_million: {input: \"2\"}}]\n"
        "  - name: other\n"
        "    currency: EUR\n"
        "    clusters: [c2, c3]\n"
        "    effective_from: 2026-01-15\n"
        "    effective_to: 2026-01-16\n"
        "    items: [{models: [m], per_million: {input: \"3\"}}]\n";
    static const struct {
        const char *cluster, *day, *model;
        int64_t     input_nanos;
    } cases[] = {
        { "c1", "2025-12-31", NULL, 0 },
        { "c1", "2026-01-01", "jan", 1000000000 },
        { "c1", "2026-01-31", "jan", 1000000000 },   /* last day of January */
        { "c1", "2026-02-01", "feb-on", 2000000000 }, /* effective_to is exclusive */
        { "c1", "2099-12-31", "feb-on", 2000000000 }, /* open-ended */
        { "c2", "2026-01-14", NULL, 0 },
        { "c2", "2026-01-15", "other", 3000000000 },
        { "c3", "2026-01-15", "other", 3000000000 },
        { "c3", "2026-01-16", NULL, 0 },
        { "c4", "2026-01-15", NULL, 0 },
    };
    struct md_pricing *p = load_ok(yaml);

    (void)state;
    assert_int_equal(md_pricing_model_count(p), 3);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_price_match m;
        int rc = md_pricing_lookup(p, cases[i].cluster, day(cases[i].day), NULL, "m", NULL, &m);

        if (cases[i].model == NULL) {
            if (rc != MD_ENOTFOUND || m.pricing_model != NULL)
                fail_msg("case %zu: %s %s: want no model, got %s", i, cases[i].cluster,
                    cases[i].day, m.pricing_model ? m.pricing_model : "(null)");
            continue;
        }
        if (rc != MD_OK || m.pricing_model == NULL || strcmp(m.pricing_model, cases[i].model) != 0)
            fail_msg("case %zu: %s %s: got %s want %s", i, cases[i].cluster, cases[i].day,
                m.pricing_model ? m.pricing_model : "(null)", cases[i].model);
        assert_true(m.price_nanos[MD_TOK_INPUT] == cases[i].input_nanos);
    }
    md_pricing_free(p);
}

/* ---- the pricing rule ---- */

struct want_line {
    enum md_token_type type;
    uint64_t           tokens;
    int                priced;
    int64_t            unit;      /* per million, after adjustment */
    int64_t            amount;
};

static void
check_lines(const char *what, const struct md_price_result *r, const struct want_line *w,
    size_t n, int64_t total, uint64_t unpriced, unsigned anomalies)
{
    if (r->line_count != n)
        fail_msg("%s: %zu lines, want %zu", what, r->line_count, n);
    for (size_t i = 0; i < n; i++) {
        const struct md_price_line *l = &r->lines[i];

        if (l->token_type != w[i].type || l->tokens != w[i].tokens ||
            l->priced != w[i].priced || l->unit_price_nanos != w[i].unit ||
            l->amount_nanos != w[i].amount)
            fail_msg("%s: line %zu: got %s %llu tokens priced=%d unit %lld amount %lld; "
                "want %s %llu priced=%d unit %lld amount %lld", what, i,
                md_token_type_name(l->token_type), (unsigned long long)l->tokens, l->priced,
                (long long)l->unit_price_nanos, (long long)l->amount_nanos,
                md_token_type_name(w[i].type), (unsigned long long)w[i].tokens, w[i].priced,
                (long long)w[i].unit, (long long)w[i].amount);
    }
    if (r->amount_nanos != total)
        fail_msg("%s: total %lld want %lld", what, (long long)r->amount_nanos, (long long)total);
    if (r->unpriced_tokens != unpriced)
        fail_msg("%s: unpriced %llu want %llu", what, (unsigned long long)r->unpriced_tokens,
            (unsigned long long)unpriced);
    if (r->anomalies != anomalies)
        fail_msg("%s: anomalies %u want %u", what, r->anomalies, anomalies);
}

static const char cache_yaml[] =
    "pricing_models:\n"
    "  - name: m\n"
    "    currency: USD\n"
    "    clusters: [c1]\n"
    "    effective_from: 2026-01-01\n"
    "    cache_included_in_input: true\n"
    "    providers:\n"
    "      aws.bedrock: false\n"
    "      \"*/anthropic/*\": false\n"
    "    adjustments:\n"
    "      - {namespace: team-a, percent: \"-10\"}\n"
    "      - {namespace: team-b, percent: \"2.5\"}\n"
    "    items:\n"
    "      - models: [sonnet]\n"
    "        per_million: {input: \"3\", cached_input: \"0.30\", cache_creation_input: \"3.75\",\n"
    "                      output: \"15\", reasoning: \"10\"}\n"
    "      - models: [mini]\n"
    "        per_million: {input: \"0.15\", output: \"0.60\"}\n"
    "      - models: [tiny]\n"
    "        per_million: {input: \"0.000000005\"}\n";

static void
rate(const struct md_pricing *p, const char *provider, const char *model, const char *ns,
    const uint64_t tok[MD_TOK_TYPES], struct md_price_result *r)
{
    struct md_price_match m;

    (void)md_pricing_lookup(p, "c1", day("2026-03-01"), provider, model, ns, &m);
    assert_int_equal(md_pricing_price(&m, tok, r, NULL), MD_OK);
}

static void
test_cache_rule(void **state)
{
    /* input, cached_input, cache_creation_input, output, reasoning */
    static const uint64_t tok[MD_TOK_TYPES] = { 1000, 200, 100, 500, 0 };
    struct md_pricing *p = load_ok(cache_yaml);
    struct md_price_result r;
    struct md_price_match m;

    (void)state;
    /* v0.5+ (and v0.4 OpenAI): cache tokens are inside input.
     * input 700 x 3 = 2100000 nanos; cached 200 x 0.30 = 60000;
     * creation 100 x 3.75 = 375000; output 500 x 15 = 7500000 */
    {
        static const struct want_line w[] = {
            { MD_TOK_INPUT, 700, 1, 3000000000, 2100000 },
            { MD_TOK_CACHED_INPUT, 200, 1, 300000000, 60000 },
            { MD_TOK_CACHE_CREATION_INPUT, 100, 1, 3750000000, 375000 },
            { MD_TOK_OUTPUT, 500, 1, 15000000000, 7500000 },
        };

        rate(p, "openai", "sonnet", NULL, tok, &r);
        check_lines("openai", &r, w, 4, 10035000, 0, 0);
        rate(p, "anthropic", "sonnet", NULL, tok, &r);   /* v0.5 provider name */
        check_lines("anthropic v0.5", &r, w, 4, 10035000, 0, 0);
        rate(p, NULL, "sonnet", NULL, tok, &r);          /* no provider: model default */
        check_lines("no provider", &r, w, 4, 10035000, 0, 0);
    }
    /* v0.4 Anthropic (provider label = backend name) and Bedrock: cache reads
     * are extra.  input 1000 x 3 = 3000000; the rest as above. */
    {
        static const struct want_line w[] = {
            { MD_TOK_INPUT, 1000, 1, 3000000000, 3000000 },
            { MD_TOK_CACHED_INPUT, 200, 1, 300000000, 60000 },
            { MD_TOK_CACHE_CREATION_INPUT, 100, 1, 3750000000, 375000 },
            { MD_TOK_OUTPUT, 500, 1, 15000000000, 7500000 },
        };

        rate(p, "default/anthropic/route/claude-messages/rule/0/ref/0", "sonnet", NULL, tok, &r);
        check_lines("anthropic v0.4", &r, w, 4, 10935000, 0, 0);
        rate(p, "aws.bedrock", "sonnet", NULL, tok, &r);
        check_lines("bedrock v0.4", &r, w, 4, 10935000, 0, 0);
        assert_int_equal(md_pricing_lookup(p, "c1", day("2026-03-01"), "aws.bedrock", "sonnet",
            NULL, &m), MD_OK);
        assert_int_equal(m.cache_included, 0);
    }
    /* no cache prices, included: cache tokens stay inside input (1000 at 0.15
     * = 150000), priced once; output 500 x 0.60 = 300000 */
    {
        static const struct want_line w[] = {
            { MD_TOK_INPUT, 1000, 1, 150000000, 150000 },
            { MD_TOK_OUTPUT, 500, 1, 600000000, 300000 },
        };

        rate(p, "openai", "mini", NULL, tok, &r);
        check_lines("mini included", &r, w, 2, 450000, 0, 0);
    }
    /* no cache prices, additive: the extra cache tokens are unpriced, not lost */
    {
        static const struct want_line w[] = {
            { MD_TOK_INPUT, 1000, 1, 150000000, 150000 },
            { MD_TOK_CACHED_INPUT, 200, 0, 0, 0 },
            { MD_TOK_CACHE_CREATION_INPUT, 100, 0, 0, 0 },
            { MD_TOK_OUTPUT, 500, 1, 600000000, 300000 },
        };

        rate(p, "aws.bedrock", "mini", NULL, tok, &r);
        check_lines("mini additive", &r, w, 4, 450000, 300, 0);
    }
    /* cache larger than input under "included": clamp and flag */
    {
        static const uint64_t bad[MD_TOK_TYPES] = { 250, 200, 100, 0, 0 };
        static const struct want_line w[] = {
            { MD_TOK_CACHED_INPUT, 200, 1, 300000000, 60000 },
            { MD_TOK_CACHE_CREATION_INPUT, 100, 1, 3750000000, 375000 },
        };

        rate(p, "openai", "sonnet", NULL, bad, &r);
        check_lines("cache > input", &r, w, 2, 435000, 0, MD_PRICE_ANOMALY_INPUT);
        /* the same data under the additive rule is no anomaly */
        rate(p, "aws.bedrock", "sonnet", NULL, bad, &r);
        assert_int_equal(r.anomalies, 0);
        assert_int_equal(r.line_count, 3);
    }
    md_pricing_free(p);
}

static void
test_reasoning(void **state)
{
    struct md_pricing *p = load_ok(cache_yaml);
    struct md_price_result r;

    (void)state;
    /* reasoning priced: output 1000 - 300 = 700 x 15 = 10500000; 300 x 10 = 3000000 */
    {
        static const uint64_t tok[MD_TOK_TYPES] = { 0, 0, 0, 1000, 300 };
        static const struct want_line w[] = {
            { MD_TOK_OUTPUT, 700, 1, 15000000000, 10500000 },
            { MD_TOK_REASONING, 300, 1, 10000000000, 3000000 },
        };

        rate(p, "openai", "sonnet", NULL, tok, &r);
        check_lines("reasoning priced", &r, w, 2, 13500000, 0, 0);
    }
    /* no reasoning price: reasoning is inside output, no line: 1000 x 0.60 */
    {
        static const uint64_t tok[MD_TOK_TYPES] = { 0, 0, 0, 1000, 300 };
        static const struct want_line w[] = {
            { MD_TOK_OUTPUT, 1000, 1, 600000000, 600000 },
        };

        rate(p, "openai", "mini", NULL, tok, &r);
        check_lines("reasoning unpriced", &r, w, 1, 600000, 0, 0);
    }
    /* reasoning above output: clamp the output part, flag */
    {
        static const uint64_t tok[MD_TOK_TYPES] = { 0, 0, 0, 100, 300 };
        static const struct want_line w[] = {
            { MD_TOK_REASONING, 300, 1, 10000000000, 3000000 },
        };

        rate(p, "openai", "sonnet", NULL, tok, &r);
        check_lines("reasoning > output", &r, w, 1, 3000000, 0, MD_PRICE_ANOMALY_OUTPUT);
    }
    md_pricing_free(p);
}

static void
test_unpriced(void **state)
{
    static const uint64_t tok[MD_TOK_TYPES] = { 1000, 200, 100, 500, 50 };
    /* included rule, nothing priced: cache inside input, reasoning inside
     * output: 1000 + 500 tokens, none counted twice */
    static const struct want_line w[] = {
        { MD_TOK_INPUT, 1000, 0, 0, 0 },
        { MD_TOK_OUTPUT, 500, 0, 0, 0 },
    };
    static const struct want_line w_add[] = {
        { MD_TOK_INPUT, 1000, 0, 0, 0 },
        { MD_TOK_CACHED_INPUT, 200, 0, 0, 0 },
        { MD_TOK_CACHE_CREATION_INPUT, 100, 0, 0, 0 },
        { MD_TOK_OUTPUT, 500, 0, 0, 0 },
    };
    struct md_pricing *p = load_ok(cache_yaml);
    struct md_price_result r;
    struct md_price_match m;

    (void)state;
    /* model no item matches */
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-03-01"), "openai", "unknown-model",
        NULL, &m), MD_ENOTFOUND);
    assert_int_equal(md_pricing_price(&m, tok, &r, NULL), MD_OK);
    check_lines("no item", &r, w, 2, 0, 1500, 0);
    /* the applying model's cache rule still decides the split */
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-03-01"), "aws.bedrock",
        "unknown-model", NULL, &m), MD_ENOTFOUND);
    assert_int_equal(md_pricing_price(&m, tok, &r, NULL), MD_OK);
    check_lines("no item, additive", &r, w_add, 4, 0, 1800, 0);
    /* no pricing model for the cluster at all */
    assert_int_equal(md_pricing_lookup(p, "elsewhere", day("2026-03-01"), "aws.bedrock",
        "sonnet", NULL, &m), MD_ENOTFOUND);
    assert_null(m.pricing_model);
    assert_int_equal(md_pricing_price(&m, tok, &r, NULL), MD_OK);
    check_lines("no model", &r, w, 2, 0, 1500, 0);
    /* before the model's first day */
    assert_int_equal(md_pricing_lookup(p, "c1", day("2025-12-31"), NULL, "sonnet", NULL, &m),
        MD_ENOTFOUND);
    assert_null(m.pricing_model);
    md_pricing_free(p);
}

static void
test_adjustments(void **state)
{
    static const uint64_t tok[MD_TOK_TYPES] = { 1000, 0, 0, 0, 0 };
    struct md_pricing *p = load_ok(cache_yaml);
    struct md_price_result r;
    struct md_price_match m;

    (void)state;
    /* team-a -10 %: 0.15 -> 0.135 per million; 1000 x 0.135 = 135000 nanos */
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-03-01"), "openai", "mini", "team-a",
        &m), MD_OK);
    assert_true(m.adjust_percent_nanos == -10000000000);
    assert_int_equal(md_pricing_price(&m, tok, &r, NULL), MD_OK);
    assert_int_equal(r.line_count, 1);
    assert_true(r.lines[0].list_unit_price_nanos == 150000000);
    assert_true(r.lines[0].unit_price_nanos == 135000000);
    assert_true(r.lines[0].amount_nanos == 135000);
    /* team-b +2.5 %: 3.75 -> 3.84375; 100 creation tokens (additive) = 384375 */
    {
        static const uint64_t t2[MD_TOK_TYPES] = { 0, 0, 100, 0, 0 };

        rate(p, "aws.bedrock", "sonnet", "team-b", t2, &r);
        assert_int_equal(r.line_count, 1);
        assert_true(r.lines[0].unit_price_nanos == 3843750000);
        assert_true(r.lines[0].amount_nanos == 384375);
    }
    /* tie on the unit price: 5 nanos -10 % = 4.5 -> 4 (even); 10^6 tokens x 4 / 10^6 */
    {
        static const uint64_t t3[MD_TOK_TYPES] = { 1000000, 0, 0, 0, 0 };

        rate(p, "openai", "tiny", "team-a", t3, &r);
        assert_true(r.lines[0].list_unit_price_nanos == 5);
        assert_true(r.lines[0].unit_price_nanos == 4);
        assert_true(r.lines[0].amount_nanos == 4);
    }
    /* other namespaces pay list */
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-03-01"), "openai", "mini", "team-c",
        &m), MD_OK);
    assert_true(m.adjust_percent_nanos == 0);
    md_pricing_free(p);
}

static void
test_overflow(void **state)
{
    static const uint64_t tok[MD_TOK_TYPES] = { UINT64_MAX, 0, 0, 0, 0 };
    static const uint64_t two[MD_TOK_TYPES] = { 0, 0, 0, 4000000000000ULL, 0 };
    struct md_pricing *p = load_ok(
        "pricing_models:\n"
        "  - {name: m, currency: USD, clusters: [c1], effective_from: 2026-01-01,\n"
        "     items: [{models: [m], per_million: {input: \"1000\", output: \"3\"}}]}\n");
    struct md_price_match m;
    struct md_price_result r;
    struct md_err err = {0};

    (void)state;
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-01-01"), NULL, "m", NULL, &m), MD_OK);
    assert_int_equal(md_pricing_price(&m, tok, &r, &err), MD_ELIMIT);
    assert_non_null(strstr(err.msg, "int64"));
    /* 4e12 tokens x 3e9 nanos / 1e6 = 1.2e16 nanos fits */
    assert_int_equal(md_pricing_price(&m, two, &r, NULL), MD_OK);
    assert_true(r.amount_nanos == 12000000000000000LL);
    md_pricing_free(p);
}

/* ---- validation errors ---- */

static const char *const base_lines[] = {
    "pricing_models:",                                          /* 1 */
    "  - name: std",                                            /* 2 */
    "    currency: USD",                                        /* 3 */
    "    clusters: [local]",                                    /* 4 */
    "    effective_from: 2026-01-01",                           /* 5 */
    "    effective_to: 2026-12-31",                             /* 6 */
    "    cache_included_in_input: true",                        /* 7 */
    "    items:",                                               /* 8 */
    "      - models: [\"gpt-4o-mini*\", \"gpt-4o\"]",           /* 9 */
    "        per_million: {input: \"0.15\", output: \"0.60\"}",  /* 10 */
};

static void
build(char *buf, size_t len, int line, const char *replacement)
{
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(base_lines) / sizeof(base_lines[0]); i++) {
        const char *l = (int)i + 1 == line ? replacement : base_lines[i];
        int n = snprintf(buf + off, len - off, "%s\n", l);

        assert_true(n > 0 && (size_t)n < len - off);
        off += (size_t)n;
    }
}

static void
test_errors_one_by_one(void **state)
{
    static const struct { int line; const char *text; const char *want; } cases[] = {
        { 2, "  - name: \"std plan\"",
          "t.yaml:2:11: pricing_models[0].name: \"std plan\": use letters, digits and . _ - : only" },
        { 3, "    currency: usd",
          "t.yaml:3:15: pricing_models[0].currency: \"usd\": not an ISO 4217 code (3 letters A-Z, e.g. USD)" },
        { 3, "    # no currency",
          "t.yaml:2:5: pricing_models[0]: missing required key \"currency\"" },
        { 4, "    clusters: []",
          "t.yaml:4:15: pricing_models[0]: clusters is empty: a pricing model linked to no cluster bills nothing" },
        { 4, "    clusters: [a, b, a]",
          "t.yaml:4:22: pricing_models[0].clusters[2]: \"a\" is listed twice" },
        { 5, "    effective_from: 2026-02-30",
          "t.yaml:5:21: pricing_models[0].effective_from: \"2026-02-30\": not a date YYYY-MM-DD (a real day, 1970 or later)" },
        { 6, "    effective_to: 2026-01-01",
          "t.yaml:6:19: pricing_models[0]: effective_to must be after effective_from (it is exclusive)" },
        { 7, "    cache_included_in_input: maybe",
          "t.yaml:7:30: pricing_models[0].cache_included_in_input: \"maybe\" is not true or false" },
        { 7, "    providers: {anthropic: maybe}",
          "t.yaml:7:28: pricing_models[0].providers.anthropic: \"maybe\" is not true or false (is cache included in input?)" },
        { 7, "    adjustments: [{namespace: a, percent: \"-101\"}]",
          "t.yaml:7:43: pricing_models[0].adjustments[0].percent: \"-101\": percent must be between -100 and 1000" },
        { 7, "    adjustments: [{namespace: a, percent: \"5\"}, {namespace: a, percent: \"1\"}]",
          "t.yaml:7:61: pricing_models[0].adjustments[1].namespace: \"a\" already has adjustments[0]" },
        { 7, "    cache_include_in_input: true",
          "t.yaml:7:5: pricing_models[0].cache_include_in_input: unknown key (did you mean \"cache_included_in_input\"?)" },
        { 9, "      - models: [\"re:gpt-(4o\"]",
          "t.yaml:9:18: pricing_models[0].items[0].models[0]: \"re:gpt-(4o\": regex does not compile at offset 7: missing closing parenthesis" },
        { 9, "      - models: [\"gpt-4o\", \"gpt-4o\"]",
          "t.yaml:9:28: pricing_models[0].items[0].models[1]: \"gpt-4o\" is already items[0].models[0]: it could never match here" },
        { 9, "      - models: []",
          "t.yaml:9:17: pricing_models[0].items[0]: models is empty: the item would match nothing" },
        { 9, "      - models: [\"\"]",
          "t.yaml:9:18: pricing_models[0].items[0].models[0]: \"\": must not be empty" },
        { 10, "        per_million: {input: \"0.1234567891\", output: \"0.60\"}",
          "t.yaml:10:30: pricing_models[0].items[0].per_million.input: \"0.1234567891\": price more than 9 decimals" },
        { 10, "        per_million: {input: \"-1\"}",
          "t.yaml:10:30: pricing_models[0].items[0].per_million.input: \"-1\": price must not be negative" },
        { 10, "        per_million: {input: \"1e-7\"}",
          "t.yaml:10:30: pricing_models[0].items[0].per_million.input: \"1e-7\": price not a decimal number (digits and one '.', no sign, exponent or space)" },
        { 10, "        per_million: {input: \"99999999999\"}",
          "t.yaml:10:30: pricing_models[0].items[0].per_million.input: \"99999999999\": price too large (at most 9223372036.854775807)" },
        { 10, "        per_million: {input: \"0.15\", cachedinput: \"1\"}",
          "t.yaml:10:38: pricing_models[0].items[0].per_million.cachedinput: unknown key (did you mean \"cached_input\"?)" },
        { 10, "        per_million: {total: \"1\"}",
          "t.yaml:10:23: pricing_models[0].items[0].per_million.total: unknown key" },
        { 10, "        per_million: {}",
          "t.yaml:10:22: pricing_models[0].items[0]: per_million has no price (set at least one of input, cached_input, cache_creation_input, output, reasoning)" },
    };
    char yaml[2048];

    (void)state;
    /* the base document itself is valid */
    build(yaml, sizeof(yaml), 0, NULL);
    md_pricing_free(load_ok(yaml));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_pricing *p = NULL;
        int rc;

        build(yaml, sizeof(yaml), cases[i].line, cases[i].text);
        rc = md_pricing_load_buf("t.yaml", yaml, strlen(yaml), &p, &errs);
        if (rc != MD_ECONFIG || errs.count != 1 || strcmp(errs.msgs[0], cases[i].want) != 0)
            fail_msg("case %zu: rc %d, %zu errors, first:\n  got  %s\n  want %s", i, rc,
                errs.count, errs.count ? errs.msgs[0] : "(none)", cases[i].want);
        assert_null(p);
    }
}

static void
expect_errors(const char *yaml, const char *const *want, size_t n)
{
    struct md_pricing *p = NULL;
    int rc = md_pricing_load_buf("t.yaml", yaml, strlen(yaml), &p, &errs);

    assert_int_equal(rc, MD_ECONFIG);
    assert_null(p);
    for (size_t i = 0; i < errs.count || i < n; i++) {
        const char *got = i < errs.count ? errs.msgs[i] : "(none)";
        const char *w = i < n ? want[i] : "(none)";

        if (strcmp(got, w) != 0)
            fail_msg("error %zu:\n  got  %s\n  want %s", i, got, w);
    }
}

static void
test_errors_collected(void **state)
{
    static const char yaml[] =
        "pricing_models:\n"
        "  - name: a\n"
        "    currency: usd\n"
        "    clusters: [c1]\n"
        "    effective_from: 2026-1-01\n"
        "    items:\n"
        "      - models: [x]\n"
        "        per_million: {input: \"0.1234567891\"}\n"
        "      - models: [\"re:[\"]\n"
        "        per_million: {output: \"1\"}\n"
        "  - name: b\n"
        "    clusters: []\n"
        "    effective_from: 2026-01-01\n"
        "    items: [{models: [y], per_million: {input: \"1\"}}]\n"
        "pricing_model: []\n";
    static const char *const want[] = {
        "t.yaml:3:15: pricing_models[0].currency: \"usd\": not an ISO 4217 code (3 letters A-Z, e.g. USD)",
        "t.yaml:5:21: pricing_models[0].effective_from: \"2026-1-01\": not a date YYYY-MM-DD (a real day, 1970 or later)",
        "t.yaml:8:30: pricing_models[0].items[0].per_million.input: \"0.1234567891\": price more than 9 decimals",
        "t.yaml:9:18: pricing_models[0].items[1].models[0]: \"re:[\": regex does not compile at offset 1: missing terminating ] for character class",
        "t.yaml:11:5: pricing_models[1]: missing required key \"currency\"",
        "t.yaml:15:1: pricing_model: unknown key (did you mean \"pricing_models\"?)",
    };
    static const char overlap[] =
        "pricing_models:\n"
        "  - name: a\n"
        "    currency: USD\n"
        "    clusters: [c1, c2]\n"
        "    effective_from: 2026-01-01\n"
        "    effective_to: 2026-03-01\n"
        "    items: [{models: [x], per_million: {input: \"1\"}}]\n"
        "  - name: b\n"
        "    currency: USD\n"
        "    clusters: [c2]\n"
        "    effective_from: 2026-02-01\n"
        "    items: [{models: [x], per_million: {input: \"1\"}}]\n"
        "  - name: a\n"
        "    currency: EUR\n"
        "    clusters: [c3]\n"
        "    effective_from: 2026-01-01\n"
        "    items: [{models: [x], per_million: {input: \"1\"}}]\n"
        "  - name: d\n"
        "    currency: USD\n"
        "    clusters: [c1]\n"
        "    effective_from: 2026-03-01\n"
        "    items: [{models: [x], per_million: {input: \"1\"}}]\n";
    static const char *const want_overlap[] = {
        "t.yaml:13:11: pricing_models[2].name: \"a\" is already pricing_models[0]",
        "t.yaml:11:21: pricing_models[1].effective_from: overlaps pricing_models[0] (\"a\") on cluster \"c2\" from 2026-02-01: one model per cluster and day",
    };

    (void)state;
    expect_errors(yaml, want, sizeof(want) / sizeof(want[0]));
    /* cross-model rules; "d" starts the day "a" ends on c1: no overlap */
    expect_errors(overlap, want_overlap, sizeof(want_overlap) / sizeof(want_overlap[0]));
    {
        static const char *const w[] = {
            "t.yaml:6:12: pricing_models[0]: items is empty: the model would price nothing",
        };

        expect_errors("pricing_models:\n"
            "  - name: std\n"
            "    currency: USD\n"
            "    clusters: [local]\n"
            "    effective_from: 2026-01-01\n"
            "    items: []\n", w, 1);
    }
    /* the sweep compares with the longest-running model, not just the previous one */
    {
        static const char *const w[] = {
            "t.yaml:4:61: pricing_models[1].effective_from: overlaps pricing_models[0] (\"a\") on cluster \"k\" from 2026-02-01: one model per cluster and day",
            "t.yaml:6:61: pricing_models[2].effective_from: overlaps pricing_models[0] (\"a\") on cluster \"k\" from 2026-04-01: one model per cluster and day",
        };

        expect_errors("pricing_models:\n"
            "  - {name: a, currency: USD, clusters: [k], effective_from: 2026-01-01,\n"
            "     effective_to: 2026-12-31, items: [{models: [x], per_million: {input: \"1\"}}]}\n"
            "  - {name: b, currency: USD, clusters: [k], effective_from: 2026-02-01,\n"
            "     effective_to: 2026-03-01, items: [{models: [x], per_million: {input: \"1\"}}]}\n"
            "  - {name: c, currency: USD, clusters: [k], effective_from: 2026-04-01,\n"
            "     items: [{models: [x], per_million: {input: \"1\"}}]}\n", w, 2);
    }
    /* an empty document and a missing list are errors, an empty list is not */
    {
        static const char *const w[] = { "t.yaml: pricing_models: missing required key \"pricing_models\"" };
        struct md_pricing *p;

        expect_errors("", w, 1);
        p = load_ok("pricing_models: []\n");
        assert_int_equal(md_pricing_model_count(p), 0);
        md_pricing_free(p);
    }
}

/* ---- size ---- */

static void
test_large_document(void **state)
{
    const size_t n = MD_PRICING_ITEMS_MAX - 1;
    size_t cap = n * 120 + 1024, off = 0;
    char *y = malloc(cap);
    struct md_pricing *p;
    struct md_price_match m;
    char model[32], ns[32];

    (void)state;
    assert_non_null(y);
    off += (size_t)snprintf(y + off, cap - off,
        "pricing_models:\n  - name: big\n    currency: USD\n    clusters: [c1]\n"
        "    effective_from: 2026-01-01\n    adjustments:\n");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(y + off, cap - off,
            "      - {namespace: ns-%zu, percent: \"-1\"}\n", i);
    off += (size_t)snprintf(y + off, cap - off, "    items:\n");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(y + off, cap - off,
            "      - {models: [m-%zu], per_million: {input: \"%zu\"}}\n", i, i + 1);
    assert_true(off < cap);
    p = load_ok(y);
    (void)snprintf(model, sizeof(model), "m-%zu", n - 1);
    (void)snprintf(ns, sizeof(ns), "ns-%zu", n - 1);
    assert_int_equal(md_pricing_lookup(p, "c1", day("2026-01-01"), NULL, model, ns, &m),
        MD_OK);
    assert_int_equal(m.item, (long)(n - 1));
    assert_true(m.price_nanos[MD_TOK_INPUT] == (int64_t)n * 1000000000);
    assert_true(m.adjust_percent_nanos == -1000000000);
    md_pricing_free(p);
    /* one repeated pattern at the very end is still found (item 10000 of 10000) */
    (void)snprintf(y + off, cap - off, "      - {models: [m-17], per_million: {input: \"1\"}}\n");
    {
        char want[200];

        (void)snprintf(want, sizeof(want),
            "t.yaml:%zu:19: pricing_models[0].items[%zu].models[0]: \"m-17\" is already "
            "items[17].models[0]: it could never match here", 2 * n + 8, n);
        assert_int_equal(md_pricing_load_buf("t.yaml", y, strlen(y), &p, &errs), MD_ECONFIG);
        assert_int_equal(errs.count, 1);
        assert_string_equal(errs.msgs[0], want);
    }
    free(y);
}

/* Allocation failure at every md_alloc call of a load: never a crash or a
 * leak (ASan checks), always an error or a complete document. */
static void
test_alloc_failures(void **state)
{
    size_t n;

    (void)state;
    for (n = 1; n < 5000; n++) {
        struct md_pricing *p = NULL;
        char at[32];
        int rc;

        (void)snprintf(at, sizeof(at), "%zu", n);
        setenv("MD_FAIL_ALLOC_AT", at, 1);
        md_alloc_reset();
        rc = md_pricing_load_buf("t.yaml", cache_yaml, strlen(cache_yaml), &p, &errs);
        unsetenv("MD_FAIL_ALLOC_AT");
        md_alloc_reset();
        if (rc == MD_OK) {
            md_pricing_free(p);
            break;
        }
        assert_null(p);
        if (rc == MD_ECONFIG && (errs.count != 1 || strstr(errs.msgs[0], "out of memory") == NULL))
            fail_msg("allocation %zu: %s", n, errs.count ? errs.msgs[0] : "(no error)");
        else if (rc != MD_ECONFIG && rc != MD_ENOMEM)
            fail_msg("allocation %zu: rc %d", n, rc);
    }
    assert_true(n > 20 && n < 5000);    /* the loop reached a successful load */
}

/* ---- files and JSON ---- */

static void
test_shipped_example(void **state)
{
    static const struct {
        const char *provider, *model;
        int64_t     input, output;
    } cases[] = {
        { "openai", "gpt-4o-mini", 150000000, 600000000 },
        { "openai", "gpt-4o-mini-2024-07-18", 150000000, 600000000 },
        { "aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", 3000000000, 15000000000 },
        { "anthropic", "claude-3-5-haiku-20241022", 800000000, 4000000000 },
        { "openai", "text-embedding-3-small", 20000000, 0 },
    };
    const char *fx = getenv("MD_FIXTURES");
    char path[1024];
    struct md_pricing *p = NULL;
    int rc;

    (void)state;
    if (fx == NULL)
        fx = "tests/fixtures";
    (void)snprintf(path, sizeof(path), "%s/../../config/pricing.yaml", fx);
    rc = md_pricing_load(path, &p, &errs);
    if (rc != MD_OK)
        fail_msg("%s: %s", path, errs.count ? errs.msgs[0] : "?");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_price_match m;

        rc = md_pricing_lookup(p, "local", day("2026-11-27"), cases[i].provider, cases[i].model,
            NULL, &m);
        if (rc != MD_OK)
            fail_msg("%s: not priced", cases[i].model);
        assert_true(m.price_nanos[MD_TOK_INPUT] == cases[i].input);
        assert_true(m.price_nanos[MD_TOK_OUTPUT] == cases[i].output);
        assert_string_equal(m.currency, "USD");
    }
    md_pricing_free(p);
    /* a missing file is one error naming it */
    assert_int_equal(md_pricing_load("/nonexistent/pricing.yaml", &p, &errs), MD_EIO);
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.msgs[0], "/nonexistent/pricing.yaml: cannot open"));
}

/* meterd.yaml names the pricing file: pricing.file, default config/pricing.yaml */
static void
test_config_key(void **state)
{
    static const char yaml[] = "pricing:\n  file: /etc/meterd/pricing.yaml\n";
    struct md_config *c = NULL;

    (void)state;
    assert_int_equal(md_config_load_buf("m.yaml", "", 0, &c, &errs), MD_OK);
    assert_string_equal(c->pricing.file, "config/pricing.yaml");
    md_config_unref(c);
    assert_int_equal(md_config_load_buf("m.yaml", yaml, strlen(yaml), &c, &errs), MD_OK);
    assert_string_equal(c->pricing.file, "/etc/meterd/pricing.yaml");
    md_config_unref(c);
    assert_int_equal(md_config_load_buf("m.yaml", "pricing: {file: \"\"}\n", 20, &c, &errs),
        MD_ECONFIG);
    assert_string_equal(errs.msgs[0], "m.yaml:1:17: pricing.file: \"\": must not be empty");
}

static void
test_json_round_trip(void **state)
{
    struct md_pricing *p = load_ok(cache_yaml), *q;
    json_t *a, *b;
    char *text, *text2;

    (void)state;
    a = md_pricing_to_json(p);
    assert_non_null(a);
    text = json_dumps(a, JSON_COMPACT);
    assert_non_null(text);
    /* prices are exact decimal strings; the default rule is explicit */
    assert_non_null(strstr(text, "\"per_million\":{\"input\":\"0.15\",\"output\":\"0.6\"}"));
    assert_non_null(strstr(text, "\"cache_included_in_input\":true"));
    assert_non_null(strstr(text,
        "\"providers\":{\"aws.bedrock\":false,\"*/anthropic/*\":false}"));
    assert_non_null(strstr(text, "{\"namespace\":\"team-b\",\"percent\":\"2.5\"}"));
    assert_non_null(strstr(text, "\"effective_from\":\"2026-01-01\""));
    assert_null(strstr(text, "effective_to"));
    /* the JSON loads back through the same validation to the same document */
    q = load_ok(text);
    b = md_pricing_to_json(q);
    text2 = json_dumps(b, JSON_COMPACT);
    assert_string_equal(text, text2);
    assert_true(json_equal(a, b));
    free(text);
    free(text2);
    json_decref(a);
    json_decref(b);
    md_pricing_free(q);
    md_pricing_free(p);
    /* JSON with an error gets a position too */
    {
        static const char *const w[] = {
            "t.yaml:1:90: pricing_models[0].currency: \"US\": not an ISO 4217 code (3 letters A-Z, e.g. USD)",
        };

        expect_errors("{\"pricing_models\":[{\"name\":\"m\",\"clusters\":[\"c\"],"
            "\"effective_from\":\"2026-01-01\",\"currency\":\"US\","
            "\"items\":[{\"models\":[\"m\"],\"per_million\":{\"input\":\"1\"}}]}]}", w, 1);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_days),
        cmocka_unit_test(test_token_types),
        cmocka_unit_test(test_match_precedence),
        cmocka_unit_test(test_effective_dates),
        cmocka_unit_test(test_cache_rule),
        cmocka_unit_test(test_reasoning),
        cmocka_unit_test(test_unpriced),
        cmocka_unit_test(test_adjustments),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_errors_one_by_one),
        cmocka_unit_test(test_errors_collected),
        cmocka_unit_test(test_large_document),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_shipped_example),
        cmocka_unit_test(test_config_key),
        cmocka_unit_test(test_json_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
