/* fuzz_auth.c: libFuzzer target for the auth decision: input is
 * "PATH\nAUTHORIZATION" against a fixed configuration with every scope.
 * Checks the invariants too: only a configured token is ever allowed on a
 * non-open path, and a 401 never carries a token. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char yaml[] =
    "auth:\n"
    "  tokens:\n"
    "    - {name: ops, sha256: \"16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01\","
    " scope: admin}\n"
    "    - {name: t, sha256: \"9a12a5d055129f6bda2e9ef5e898194500ca5115d6f26ec024e9518e36c2ae0f\","
    " scope: tenant, namespaces: [team-a]}\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_config *cfg;
    static struct md_cfg_errors errs;
    struct md_auth_result r;
    char *buf, *nl;

    if (cfg == NULL && md_config_load_buf("f.yaml", yaml, strlen(yaml), &cfg, &errs) != 0)
        abort();
    if (size > 8192)
        return 0;
    buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    nl = strchr(buf, '\n');
    if (nl != NULL)
        *nl = '\0';
    for (int need = MD_AUTH_NEED_ANY; need <= MD_AUTH_NEED_ADMIN; need++) {
        md_auth_decide(cfg, buf, (enum md_auth_need)need, nl ? nl + 1 : NULL, &r);
        if (r.status == 401 && r.token != NULL)
            abort();
        if (r.status == 0 && r.token == NULL && !md_auth_is_open(cfg, buf))
            abort();
        if (r.status == 0 && r.token != NULL && need == MD_AUTH_NEED_ADMIN &&
            r.token->scope != MD_CFG_SCOPE_ADMIN)
            abort();
    }
    free(buf);
    return 0;
}
