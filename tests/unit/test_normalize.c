/* test_normalize.c: every spelling of the EAIG instruments and labels maps
 * to one canonical OTel name (FACTS.md sections 2, 3, 6), and the label
 * comparison rule works both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "normalize.h"
#include "util.h"

#define S(x) ((struct md_str){ x, sizeof(x) - 1 })

static void
test_names(void **state)
{
    static const struct { const char *in; int inst; int role; const char *detail; } cases[] = {
        /* token usage: v0.4 (unit suffix _token), v0.5+, UTF-8, dots, values */
        { "gen_ai_client_token_usage_token_sum", MD_INST_TOKEN_USAGE, MD_ROLE_SUM, "" },
        { "gen_ai_client_token_usage_sum", MD_INST_TOKEN_USAGE, MD_ROLE_SUM, "" },
        { "gen_ai.client.token.usage_token_sum", MD_INST_TOKEN_USAGE, MD_ROLE_SUM, "" },
        { "gen_ai.client.token.usage_sum", MD_INST_TOKEN_USAGE, MD_ROLE_SUM, "" },
        { "gen__ai_dot_client_dot_token_dot_usage__token_sum", MD_INST_TOKEN_USAGE, MD_ROLE_SUM,
          "" },
        { "U__gen__ai_2e_client_2e_token_2e_usage__token_sum", MD_INST_TOKEN_USAGE,
          MD_ROLE_SUM, "" },
        { "gen_ai_client_token_usage_token_count", MD_INST_TOKEN_USAGE, MD_ROLE_COUNT, "" },
        { "gen_ai_client_token_usage_bucket", MD_INST_TOKEN_USAGE, MD_ROLE_BUCKET, "" },
        { "gen_ai.client.token.usage_token_bucket", MD_INST_TOKEN_USAGE, MD_ROLE_BUCKET, "" },
        { "gen_ai_client_token_usage_created", MD_INST_TOKEN_USAGE, MD_ROLE_CREATED, "" },
        { "gen_ai.client.token.usage", MD_INST_TOKEN_USAGE, MD_ROLE_NONE, "" },
        /* duration and latency histograms, unit _seconds */
        { "gen_ai_server_request_duration_seconds_sum", MD_INST_REQUEST_DURATION, MD_ROLE_SUM,
          "" },
        { "gen_ai.server.request.duration_seconds_count", MD_INST_REQUEST_DURATION,
          MD_ROLE_COUNT, "" },
        { "gen_ai_server_time_to_first_token_seconds_bucket", MD_INST_TTFT, MD_ROLE_BUCKET, "" },
        { "gen_ai.server.time_to_first_token_seconds_sum", MD_INST_TTFT, MD_ROLE_SUM, "" },
        { "gen_ai_server_time_per_output_token_seconds_count", MD_INST_TPOT, MD_ROLE_COUNT, "" },
        { "U__gen__ai_2e_server_2e_time__per__output__token__seconds_count", MD_INST_TPOT,
          MD_ROLE_COUNT, "" },
        /* inference usage counters */
        { "gen_ai_client_inference_usage_input_tokens_total", MD_INST_INFERENCE_USAGE,
          MD_ROLE_TOTAL, "input_tokens" },
        { "gen_ai.client.inference.usage.output_tokens_total", MD_INST_INFERENCE_USAGE,
          MD_ROLE_TOTAL, "output_tokens" },
        { "target_info", MD_INST_TARGET_INFO, MD_ROLE_NONE, "" },
        /* not ours */
        { "mcp_method_count_total", MD_INST_UNKNOWN, MD_ROLE_TOTAL, "" },
        { "mcp_initialization_duration_token_sum", MD_INST_UNKNOWN, MD_ROLE_SUM, "" },
        { "gen_ai_client_token_usage_tokens_sum", MD_INST_UNKNOWN, MD_ROLE_SUM, "" },
        { "gen_ai_client_token_usagex_sum", MD_INST_UNKNOWN, MD_ROLE_SUM, "" },
        { "gen_ai_client_inference_usage_total", MD_INST_UNKNOWN, MD_ROLE_TOTAL, "" },
        { "", MD_INST_UNKNOWN, MD_ROLE_NONE, "" },
        { "_sum", MD_INST_UNKNOWN, MD_ROLE_NONE, "" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum md_instrument inst;
        enum md_role role;
        char detail[64] = "junk";
        struct md_str n = { cases[i].in, strlen(cases[i].in) };
        int rc = md_normalize_name(n, &inst, &role, detail, sizeof(detail));

        if ((int)inst != cases[i].inst || (int)role != cases[i].role ||
            strcmp(detail, cases[i].detail) != 0 ||
            rc != (cases[i].inst == MD_INST_UNKNOWN ? MD_ENOTFOUND : MD_OK))
            fail_msg("case %zu %s: got inst %d role %d detail \"%s\" rc %d, want %d %d \"%s\"",
                i, cases[i].in, inst, role, detail, rc, cases[i].inst, cases[i].role,
                cases[i].detail);
    }
    assert_string_equal(md_instrument_name(MD_INST_TOKEN_USAGE), "gen_ai.client.token.usage");
    assert_string_equal(md_instrument_name(MD_INST_TTFT), "gen_ai.server.time_to_first_token");
    assert_string_equal(md_instrument_name(MD_INST_UNKNOWN), "");
    assert_string_equal(md_role_name(MD_ROLE_SUM), "sum");
    assert_string_equal(md_role_name(MD_ROLE_NONE), "none");
}

static void
test_labels(void **state)
{
    static const struct { const char *in; const char *want; } cases[] = {
        { "gen_ai_token_type", "gen_ai.token.type" },
        { "gen_ai.token.type", "gen_ai.token.type" },
        { "gen__ai_dot_token_dot_type", "gen_ai.token.type" },
        { "U__gen__ai_2e_token_2e_type", "gen_ai.token.type" },
        { "gen_ai_request_model", "gen_ai.request.model" },
        { "gen_ai_provider_name", "gen_ai.provider.name" },
        { "gen_ai_system_name", "gen_ai.system.name" },
        { "error_type", "error.type" },
        { "department_id", "department.id" },
        { "department.id", "department.id" },
        { "service_name", "service.name" },
        { "U__service_2e_name", "service.name" },
        { "telemetry_sdk_version", "telemetry.sdk.version" },
        { "otel_metric_overflow", "otel.metric.overflow" },
        { "le", "le" },
        { "otel_scope_name", "otel_scope_name" },
        { "department", "department" },
        { "x.custom.attr", "x.custom.attr" },
        { "custom_label", "custom_label" },
    };
    char out[128];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_str n = { cases[i].in, strlen(cases[i].in) };
        size_t l = md_normalize_label(n, out, sizeof(out));

        if (l != strlen(cases[i].want) || strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu %s: got \"%s\" want \"%s\"", i, cases[i].in, out, cases[i].want);
    }
    /* too small a buffer: the needed length comes back, nothing is cut */
    memset(out, 'x', sizeof(out));
    assert_int_equal(md_normalize_label(S("gen_ai_token_type"), out, 5), 17);
    assert_int_equal(out[0], 'x');
}

static void
test_label_eq(void **state)
{
    static const struct { const char *recv; const char *conf; int want; } cases[] = {
        { "department_id", "department.id", 1 },
        { "department.id", "department_id", 1 },
        { "department.id", "department.id", 1 },
        { "department_id", "department_id", 1 },
        { "department__id", "department.id", 1 },
        { "U__department_2e_id", "department.id", 1 },
        { "department_2e_id", "department.id", 0 },
        { "gen_ai_token_type", "gen_ai.token.type", 1 },
        { "gen__ai_dot_token_dot_type", "gen_ai.token.type", 1 },
        { "gen_ai.request.model", "gen_ai_request_model", 1 },
        { "department", "department.id", 0 },
        { "department_id", "department", 0 },
        { "gen_ai_request_model", "gen_ai.response.model", 0 },
        { "Department", "department", 0 },
        { "le", "le", 1 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_str r = { cases[i].recv, strlen(cases[i].recv) };

        if (md_normalize_label_eq(r, cases[i].conf) != cases[i].want)
            fail_msg("case %zu: %s vs %s: want %d", i, cases[i].recv, cases[i].conf,
                cases[i].want);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_label_eq),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
