/* fuzz_podlist.c: libFuzzer target for the Kubernetes PodList decoder and
 * the Status message extractor (discovery.c).  Two pages are decoded into
 * one result so rollback after a failing page is exercised too. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "discovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char admin[] = "aigw-admin", metrics[] = "aigw-metrics";
    static char *names[] = { admin, metrics };
    const struct md_strlist ports = { names, 2 };
    struct md_discovery_result res;
    struct md_err err = {0};
    char msg[128];
    char *cont = NULL;
    size_t half = size / 2;

    md_discovery_result_init(&res);
    /* the whole input, then its first half (usually malformed) */
    if (md_discovery_decode_podlist((const char *)data, size, &ports, &res, &cont, &err) == MD_OK)
        md_free(cont);
    cont = NULL;
    if (md_discovery_decode_podlist((const char *)data, half, &ports, &res, &cont, &err) == MD_OK)
        md_free(cont);
    md_discovery_result_finish(&res);
    for (size_t i = 0; i < res.count; i++)
        if (res.v[i].url == NULL || res.v[i].labels.count > MD_DISCOVERY_LABELS_MAX)
            abort();
    md_discovery_result_fini(&res);
    md_discovery_status_message((const char *)data, size, msg, sizeof(msg));
    return 0;
}
