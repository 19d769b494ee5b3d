/* fuzz_config.c: libFuzzer target for the configuration loader. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_cfg_errors errs;
    struct md_config *c = NULL;

    if (md_config_load_buf("fuzz.yaml", (const char *)data, size, &c, &errs) == 0)
        md_config_unref(c);
    return 0;
}
