/* cmd_pricing.c: the `meterd pricing` command line.
 *
 *   meterd pricing check FILE      validate; every error as FILE:LINE:COL
 *   meterd pricing show FILE       the canonical JSON of a valid file
 *   meterd pricing import --litellm FILE --cluster C [--cluster C2 ...]
 *       [--name litellm] [--currency USD] [--effective-from YYYY-MM-DD]
 *                                  LiteLLM price map -> pricing YAML on stdout
 *
 * Runs on the main thread before (and instead of) the daemon; all state is
 * local to one call.  The import validates its own output with the pricing
 * loader before printing it, so what it prints always loads. */
#include "cmd_pricing.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "cfgtab.h"
#include "litellm.h"
#include "money.h"
#include "pricing.h"
#include "util.h"

#define IMPORT_OUT_MAX (64u << 20)   /* bytes of generated YAML */

static void
usage(FILE *fp)
{
    fputs("usage: meterd pricing check FILE\n"
          "       meterd pricing show FILE\n"
          "       meterd pricing import --litellm FILE --cluster NAME [--cluster NAME ...]\n"
          "              [--name NAME] [--currency USD] [--effective-from YYYY-MM-DD]\n",
        fp);
}

static int
load(const char *path, struct md_pricing **p)
{
    static struct md_cfg_errors errs;   /* large; one CLI call at a time */

    if (md_pricing_load(path, p, &errs) != MD_OK) {
        md_cfgtab_print_errors(stderr, &errs);
        return 1;
    }
    return 0;
}

static int
cmd_check(int argc, char **argv)
{
    struct md_pricing *p = NULL;

    if (argc != 1) {
        usage(stderr);
        return 2;
    }
    if (load(argv[0], &p) != 0)
        return 1;
    printf("%s: ok (%zu pricing models)\n", argv[0], md_pricing_model_count(p));
    md_pricing_free(p);
    return 0;
}

static int
cmd_show(int argc, char **argv)
{
    struct md_pricing *p = NULL;
    json_t *j;
    int rc = 1;

    if (argc != 1) {
        usage(stderr);
        return 2;
    }
    if (load(argv[0], &p) != 0)
        return 1;
    j = md_pricing_to_json(p);
    if (j != NULL && json_dumpf(j, stdout, JSON_INDENT(2)) == 0) {
        fputc('\n', stdout);
        rc = 0;
    } else {
        fputs("meterd pricing show: out of memory\n", stderr);
    }
    json_decref(j);
    md_pricing_free(p);
    return rc;
}

static const char *
today(char *buf, size_t len)
{
    md_pricing_day_fmt((int32_t)(md_now_realtime_ns() / 86400000000000ULL), buf, len);
    return buf;
}

static int
cmd_import(int argc, char **argv)
{
    static struct md_cfg_errors errs;
    const char *clusters[MD_LITELLM_CLUSTERS_MAX];
    struct md_litellm_opts o = { .name = "litellm", .currency = "USD", .clusters = clusters };
    struct md_litellm_stats st = {0};
    struct md_err err = {0};
    struct md_pricing *check = NULL;
    const char *file = NULL;
    char day_buf[16], *data = NULL;
    struct md_buf out;
    size_t len = 0;
    int32_t d;
    int rc = 1;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (v == NULL || strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "meterd pricing import: unexpected \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--litellm") == 0) {
            file = v;
        } else if (strcmp(a, "--name") == 0) {
            o.name = v;
        } else if (strcmp(a, "--currency") == 0) {
            o.currency = v;
        } else if (strcmp(a, "--effective-from") == 0) {
            o.effective_from = v;
        } else if (strcmp(a, "--cluster") == 0) {
            if (o.cluster_count == MD_LITELLM_CLUSTERS_MAX) {
                fprintf(stderr, "meterd pricing import: more than %d clusters\n",
                    MD_LITELLM_CLUSTERS_MAX);
                return 2;
            }
            clusters[o.cluster_count++] = v;
        } else {
            fprintf(stderr, "meterd pricing import: unknown option \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (file == NULL || o.cluster_count == 0) {
        fputs("meterd pricing import: --litellm FILE and at least one --cluster are required\n",
            stderr);
        usage(stderr);
        return 2;
    }
    if (o.effective_from == NULL)
        o.effective_from = today(day_buf, sizeof(day_buf));
    if (md_pricing_day_parse(o.effective_from, strlen(o.effective_from), &d) != MD_OK) {
        fprintf(stderr, "meterd pricing import: --effective-from \"%s\" is not YYYY-MM-DD\n",
            o.effective_from);
        return 2;
    }
    if (!md_money_currency_valid(o.currency)) {
        fprintf(stderr, "meterd pricing import: --currency \"%s\" is not an ISO 4217 code\n",
            o.currency);
        return 2;
    }
    if (md_cfgtab_read_file(file, &data, &len, &errs) != MD_OK) {
        md_cfgtab_print_errors(stderr, &errs);
        return 1;
    }
    md_buf_init(&out, IMPORT_OUT_MAX);
    if (md_litellm_to_yaml(data, len, &o, &out, &st, &err) != MD_OK) {
        fprintf(stderr, "%s: %s\n", file, err.msg);
        goto out;
    }
    /* what we print must load: same validation as the daemon's */
    if (md_pricing_load_buf("<generated>", out.data, out.len, &check, &errs) != MD_OK) {
        md_cfgtab_print_errors(stderr, &errs);
        goto out;
    }
    md_pricing_free(check);
    if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
        fputs("meterd pricing import: write error\n", stderr);
        goto out;
    }
    fprintf(stderr, "%s: %zu models imported, %zu entries without a token price skipped\n",
        file, st.models, st.skipped);
    rc = 0;
out:
    md_buf_fini(&out);
    md_free(data);
    return rc;
}

int
md_cmd_pricing(int argc, char **argv)
{
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[0], "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(argv[0], "show") == 0)
        return cmd_show(argc - 1, argv + 1);
    if (strcmp(argv[0], "import") == 0)
        return cmd_import(argc - 1, argv + 1);
    if (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "meterd pricing: unknown command \"%s\"\n", argv[0]);
    usage(stderr);
    return 2;
}
