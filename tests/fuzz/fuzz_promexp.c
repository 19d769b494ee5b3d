/* fuzz_promexp.c: libFuzzer target for what /metrics parses from outside or
 * rewrites: the Accept header (md_promexp_negotiate) and the 0.0.4 ->
 * OpenMetrics family rewrite (md_promexp_om_convert); and the usage render
 * over label values taken from the input (escaping, limits). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "exporters/prometheus.h"
#include "usage_snapshot.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = md_malloc(size + 1);
    struct md_buf b;
    struct md_usnap_agg *a;
    struct md_usnap *snap;
    struct md_promexp_stats st;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    (void)md_promexp_negotiate(s);
    md_buf_init(&b, 1u << 20);
    (void)md_promexp_om_convert((const char *)data, size, &b);
    md_buf_fini(&b);

    /* split the input into label values at '\n' */
    a = md_usnap_agg_new(64);
    if (a != NULL) {
        const char *v[6];
        size_t l[6];
        size_t off = 0;

        for (int round = 0; round < 8; round++) {
            for (int i = 0; i < 6; i++) {
                const char *nl;
                size_t n;

                if (off >= size) {
                    v[i] = "";
                    l[i] = 0;
                    continue;
                }
                nl = memchr(data + off, '\n', size - off);
                n = nl ? (size_t)(nl - (const char *)data) - off : size - off;
                v[i] = (const char *)data + off;
                l[i] = n;
                off += n + 1;
            }
            (void)md_usnap_agg_stage_usage(a, v, l, (uint64_t)round, 1);
            (void)md_usnap_agg_stage_cost(a, v, l, (int64_t)round - 4);
            if (round % 3 == 2)
                md_usnap_agg_rollback(a);
            else
                (void)md_usnap_agg_commit(a);
        }
        snap = md_usnap_agg_snapshot(a);
        if (snap != NULL) {
            md_buf_init(&b, 1u << 20);
            (void)md_promexp_render_usage(snap, MD_PROMEXP_OPENMETRICS, size % 7 + 1, &b, &st);
            md_buf_fini(&b);
            md_usnap_unref(snap);
        }
        md_usnap_agg_free(a);
    }
    md_free(s);
    return 0;
}
