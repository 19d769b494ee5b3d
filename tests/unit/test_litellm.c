/* test_litellm.c: LiteLLM per-token prices -> per-million decimal strings by
 * shifting the number text (never a double), and the whole price map ->
 * pricing YAML against a hand-written expected file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cfgtab.h"
#include "litellm.h"
#include "pricing.h"
#include "util.h"

static void
test_shift6(void **state)
{
    static const struct { const char *in; int rc; const char *want; } cases[] = {
        { "1.5e-07", MD_OK, "0.15" },
        { "0.00000015", MD_OK, "0.15" },
        { "15e-8", MD_OK, "0.15" },
        { "3e-06", MD_OK, "3" },
        { "0.000001", MD_OK, "1" },
        { "1E-6", MD_OK, "1" },
        { "1.25e-05", MD_OK, "12.5" },
        { "1.25E+0", MD_OK, "1250000" },
        { "100", MD_OK, "100000000" },
        { "0", MD_OK, "0" },
        { "0.0", MD_OK, "0" },
        { "0.000000000000000", MD_OK, "0" },
        { "1e-15", MD_OK, "0.000000001" },
        { "0.1e-14", MD_OK, "0.000000001" },
        { "0.000000165", MD_OK, "0.165" },
        { "1.0000000e-06", MD_OK, "1" },
        { "9.2e3", MD_OK, "9200000000" },
        { "9.3e3", MD_ELIMIT, NULL },          /* above the int64 nano range */
        { "1e400", MD_ELIMIT, NULL },
        { "1e-16", MD_EPARSE, NULL },          /* 10 decimals per million */
        { "1.23456789e-9", MD_EPARSE, NULL },  /* 0.00123456789: 11 decimals */
        { "-1e-6", MD_EPARSE, NULL },
        { "1e", MD_EPARSE, NULL },
        { "1.", MD_EPARSE, NULL },
        { ".5", MD_EPARSE, NULL },
        { "1e+", MD_EPARSE, NULL },
        { "0x1", MD_EPARSE, NULL },
        { "", MD_EPARSE, NULL },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[MD_LITELLM_NUM_MAX];
        struct md_err err = {0};
        int rc = md_litellm_shift6(cases[i].in, strlen(cases[i].in), out, sizeof(out), &err);

        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc got %d want %d (%s)", i, cases[i].in, rc,
                cases[i].rc, err.msg);
        if (rc == MD_OK && strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu \"%s\": got \"%s\" want \"%s\"", i, cases[i].in, out,
                cases[i].want);
    }
}

static char *
read_fixture(const char *name, size_t *len)
{
    static struct md_cfg_errors errs;
    const char *fx = getenv("MD_FIXTURES");
    char path[1024];
    char *data = NULL;

    (void)snprintf(path, sizeof(path), "%s/litellm/%s", fx ? fx : "tests/fixtures", name);
    if (md_cfgtab_read_file(path, &data, len, &errs) != MD_OK)
        fail_msg("%s", errs.msgs[0]);
    return data;
}

static const char *const clusters[] = { "local", "prod" };
static const struct md_litellm_opts opts = {
    .name = "litellm-test", .currency = "USD", .clusters = clusters, .cluster_count = 2,
    .effective_from = "2026-02-01",
};

static void
test_fixture(void **state)
{
    static struct md_cfg_errors errs;
    struct md_litellm_stats st = {0};
    struct md_err err = {0};
    struct md_pricing *p = NULL;
    struct md_price_match m;
    struct md_buf out;
    size_t jlen, ylen;
    char *json = read_fixture("prices.json", &jlen);
    char *want = read_fixture("prices.expected.yaml", &ylen);
    int32_t d;

    (void)state;
    md_buf_init(&out, 1u << 20);
    assert_int_equal(md_litellm_to_yaml(json, jlen, &opts, &out, &st, &err), MD_OK);
    if (out.len != ylen || memcmp(out.data, want, ylen) != 0)
        fail_msg("generated YAML differs from prices.expected.yaml:\n%s", out.data);
    assert_int_equal(st.models, 9);
    assert_int_equal(st.skipped, 2);     /* sample_spec, dall-e-3 */
    /* it loads, and the odd names match exactly themselves */
    if (md_pricing_load_buf("gen", out.data, out.len, &p, &errs) != MD_OK)
        fail_msg("%s", errs.msgs[0]);
    assert_int_equal(md_pricing_day_parse("2026-02-01", 10, &d), MD_OK);
    assert_int_equal(md_pricing_lookup(p, "prod", d, NULL, "weird*model?", NULL, &m), MD_OK);
    assert_int_equal(md_pricing_lookup(p, "prod", d, NULL, "weirdXmodelY", NULL, &m),
        MD_ENOTFOUND);
    assert_int_equal(md_pricing_lookup(p, "local", d, NULL, "mod\xc3\xa8le \"quoted\"", NULL, &m),
        MD_OK);
    assert_true(m.price_nanos[MD_TOK_OUTPUT] == 1250000000000000LL);
    assert_int_equal(md_pricing_lookup(p, "local", d, NULL, "o3-mini", NULL, &m), MD_OK);
    assert_true(m.price_nanos[MD_TOK_REASONING] == 4400000000LL);
    md_pricing_free(p);
    md_buf_fini(&out);
    md_free(json);
    md_free(want);
}

#define PLUS10 "++++++++++"
#define PLUS100 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10
#define PLUS600 PLUS100 PLUS100 PLUS100 PLUS100 PLUS100 PLUS100

/* names with characters YAML may not carry raw are escaped, and still match
 * exactly themselves (C1 control found by fuzz_litellm) */
static void
test_odd_names(void **state)
{
    static struct md_cfg_errors errs;
    static const char json[] =
        "{\"a\\u009eb\\u0007\\\"c\\\\\": {\"input_cost_per_token\": 2E-7}}";
    static const char want_line[] = "      - models: [\"a\\u009eb\\u0007\\\"c\\\\\"]\n";
    struct md_err err = {0};
    struct md_pricing *p = NULL;
    struct md_price_match m;
    struct md_buf out;
    int32_t d = 0;

    (void)state;
    md_buf_init(&out, 1u << 16);
    assert_int_equal(md_litellm_to_yaml(json, strlen(json), &opts, &out, NULL, &err), MD_OK);
    if (strstr(out.data, want_line) == NULL)
        fail_msg("no line %s in:\n%s", want_line, out.data);
    if (md_pricing_load_buf("gen", out.data, out.len, &p, &errs) != MD_OK)
        fail_msg("%s", errs.msgs[0]);
    assert_int_equal(md_pricing_day_parse("2026-02-01", 10, &d), MD_OK);
    assert_int_equal(md_pricing_lookup(p, "local", d, NULL, "a\xc2\x9e" "b\x07\"c\\", NULL, &m),
        MD_OK);
    assert_true(m.price_nanos[0] == 200000000);
    md_pricing_free(p);
    md_buf_fini(&out);
    /* a lone low surrogate is refused */
    md_buf_init(&out, 1u << 16);
    {
        static const char lone[] = "{\"\\udc00\": {\"input_cost_per_token\": 1}}";

        assert_int_equal(md_litellm_to_yaml(lone, strlen(lone), &opts, &out, NULL, &err),
            MD_EPARSE);
    }
    md_buf_fini(&out);
}

static void
test_errors(void **state)
{
    static const struct { const char *json; int rc; const char *msg; } cases[] = {
        { "{\"a\": {\"input_cost_per_token\": 1e-7,}}", MD_EPARSE, "JSON 1:" },
        { "{\"a\": {\"input_cost_per_token\": 1e-7}, \"a\": {}}", MD_EPARSE, "duplicate" },
        { "[1]", MD_EPARSE, "must be a JSON object" },
        { "{\"a\": {\"input_cost_per_token\": \"1e-7\"}}", MD_EPARSE,
          "\"a\": input_cost_per_token is not a number" },
        { "{\"a\": {\"output_cost_per_token\": -1e-7}}", MD_EPARSE,
          "\"a\": output_cost_per_token: negative price" },
        { "{\"a\": {\"input_cost_per_token\": 1.23456789e-9}}", MD_EPARSE,
          "more than 9" },
        { "{\"a\": {\"mode\": \"chat\"}, \"b\": 3}", MD_EPARSE, "no model in the map" },
        /* 600 '+' fit as a name but not once each is escaped (found by fuzz_litellm) */
        { "{\"*" PLUS600 "\": {\"input_cost_per_token\": 1e-7}}", MD_ELIMIT,
          "model name longer than a pattern may be (1024 bytes" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_err err = {0};
        struct md_buf out;
        int rc;

        md_buf_init(&out, 1u << 16);
        rc = md_litellm_to_yaml(cases[i].json, strlen(cases[i].json), &opts, &out, NULL, &err);
        if (rc != cases[i].rc || strstr(err.msg, cases[i].msg) == NULL)
            fail_msg("case %zu: rc %d \"%s\", want rc %d containing \"%s\"", i, rc, err.msg,
                cases[i].rc, cases[i].msg);
        md_buf_fini(&out);
    }
    /* jansson lets a NUL byte follow a number; the scanner must neither hang
     * on it (found by fuzz_litellm) nor take it as part of a price */
    {
        static const char skip[] = "{\"a\": {\"x\": 0.0\0, \"input_cost_per_token\": 1e-7}}";
        static const char price[] = "{\"a\": {\"input_cost_per_token\": 1e-7\0}}";
        struct md_err err = {0};
        struct md_buf out;

        md_buf_init(&out, 1u << 16);
        assert_int_equal(md_litellm_to_yaml(skip, sizeof(skip) - 1, &opts, &out, NULL, &err),
            MD_OK);
        assert_non_null(strstr(out.data, "          input: \"0.1\"\n"));
        md_buf_reset(&out);
        assert_int_equal(md_litellm_to_yaml(price, sizeof(price) - 1, &opts, &out, NULL, &err),
            MD_EPARSE);
        md_buf_fini(&out);
    }
    /* the output cap is a limit, not a truncation */
    {
        struct md_err err = {0};
        struct md_buf out;
        const char *j = "{\"a\": {\"input_cost_per_token\": 1e-7}}";

        md_buf_init(&out, 64);
        assert_int_equal(md_litellm_to_yaml(j, strlen(j), &opts, &out, NULL, &err), MD_ELIMIT);
        md_buf_fini(&out);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shift6),
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_odd_names),
        cmocka_unit_test(test_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
