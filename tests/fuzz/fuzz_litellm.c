/* fuzz_litellm.c: libFuzzer target for the LiteLLM price-map importer (its
 * number scanner and string decoder run on text jansson accepted) and the
 * decimal shifter on raw bytes; whatever converts must load as pricing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "litellm.h"
#include "pricing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_cfg_errors errs;
    static const char *const clusters[] = { "local" };
    static const struct md_litellm_opts o = {
        .name = "fuzz", .currency = "USD", .clusters = clusters, .cluster_count = 1,
        .effective_from = "2026-01-01",
    };
    struct md_err err = {0};
    struct md_buf out;
    char num[MD_LITELLM_NUM_MAX];

    (void)md_litellm_shift6((const char *)data, size, num, sizeof(num), &err);
    md_buf_init(&out, 1u << 22);
    if (md_litellm_to_yaml((const char *)data, size, &o, &out, NULL, &err) == 0) {
        struct md_pricing *p = NULL;

        /* every accepted map converts to a valid document */
        if (md_pricing_load_buf("gen", out.data, out.len, &p, &errs) != 0)
            abort();
        md_pricing_free(p);
    }
    md_buf_fini(&out);
    return 0;
}
