/* fuzz_pricing.c: libFuzzer target for the pricing loader (YAML and JSON
 * input, regex compilation, cross-model validation) and, when a document
 * loads, for lookup and pricing of a fixed usage row over its models. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pricing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_cfg_errors errs;
    static const char *const models[] = { "gpt-4o-mini", "claude-3-5-haiku-20241022", "x", "" };
    static const uint64_t tok[MD_TOK_TYPES] = { 1000, 200, 100, 500, 50 };
    struct md_pricing *p = NULL;

    if (md_pricing_load_buf("fuzz.yaml", (const char *)data, size, &p, &errs) != 0)
        return 0;
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        struct md_price_match m;
        struct md_price_result r;

        (void)md_pricing_lookup(p, "local", 20454, "anthropic", models[i], "team-a", &m);
        (void)md_pricing_price(&m, tok, &r, NULL);
    }
    md_pricing_free(p);
    return 0;
}
