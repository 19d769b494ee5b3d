/* cmd_usage.c: `meterd usage -c FILE [--from T] [--to T] [--step S]
 * [--group-by D,..] [--namespace N] ... [--json]`: the same query as
 * GET /api/v1/usage, read straight from the database (read-only; meterd may
 * be running), printed as a table or as the API's JSON.  Runs on the main
 * thread of a short-lived process. */
#include "cmd_usage.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "batch.h"
#include "config.h"
#include "store.h"
#include "util.h"

static void
usage(FILE *fp)
{
    fputs("usage: meterd usage -c FILE [--from T] [--to T] [--step hour|day|month|none]\n"
          "                    [--group-by DIM,...] [--cluster V] [--namespace V]\n"
          "                    [--department V] [--model V] [--provider V] [--operation V]\n"
          "                    [--token-type V] [--json]\n"
          "T is YYYY-MM-DD or RFC 3339 (UTC; --to exclusive; default: today).\n", fp);
}

static void
print_table(const char *json_text)
{
    json_error_t jerr;
    json_t *root = json_loads(json_text, 0, &jerr), *rows, *groups, *row, *g;
    size_t i, j;

    if (root == NULL)
        return;
    rows = json_object_get(root, "rows");
    groups = json_object_get(root, "group_by");
    printf("%-20s", "start");
    json_array_foreach(groups, j, g)
        printf(" %-24s", json_string_value(g));
    printf(" %15s %10s\n", "tokens", "requests");
    json_array_foreach(rows, i, row) {
        printf("%-20s", json_string_value(json_object_get(row, "start")));
        json_array_foreach(groups, j, g)
            printf(" %-24s", json_string_value(json_object_get(row, json_string_value(g))));
        printf(" %15lld %10lld\n",
            (long long)json_integer_value(json_object_get(row, "tokens")),
            (long long)json_integer_value(json_object_get(row, "requests")));
    }
    printf("%-20s", "total");
    json_array_foreach(groups, j, g)
        printf(" %-24s", "");
    printf(" %15lld %10lld\n",
        (long long)json_integer_value(json_object_get(json_object_get(root, "totals"), "tokens")),
        (long long)json_integer_value(json_object_get(json_object_get(root, "totals"),
            "requests")));
    json_decref(root);
}

int
md_cmd_usage(int argc, char **argv)
{
    static const struct { const char *opt, *key; } opts[] = {
        { "--from", "from" }, { "--to", "to" }, { "--step", "step" },
        { "--group-by", "group_by" }, { "--cluster", "cluster" },
        { "--namespace", "namespace" }, { "--department", "department" },
        { "--model", "model" }, { "--provider", "provider" },
        { "--operation", "operation" }, { "--token-type", "token_type" },
    };
    struct md_cfg_errors *errs = calloc(1, sizeof(*errs));
    struct md_api_req req;
    struct md_usage_query q;
    struct md_config *cfg = NULL;
    struct md_store *st = NULL;
    struct md_err err = {0};
    const char *path = NULL;
    char *body = NULL;
    size_t len = 0;
    int json = 0, rc = 1;

    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.path = "/api/v1/usage";
    for (int i = 0; i < argc; i++) {
        int known = 0;

        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            free(errs);
            return 0;
        }
        for (size_t o = 0; o < sizeof(opts) / sizeof(opts[0]) && !known; o++) {
            if (strcmp(argv[i], opts[o].opt) != 0)
                continue;
            if (i + 1 >= argc || req.nquery == MD_API_QUERY_MAX) {
                fprintf(stderr, "meterd usage: %s needs a value\n", argv[i]);
                free(errs);
                return 2;
            }
            req.query[req.nquery].key = opts[o].key;
            req.query[req.nquery].value = argv[++i];
            req.nquery++;
            known = 1;
        }
        if (!known) {
            fprintf(stderr, "meterd usage: unknown option \"%s\"\n", argv[i]);
            usage(stderr);
            free(errs);
            return 2;
        }
    }
    if (path == NULL || errs == NULL) {
        usage(stderr);
        free(errs);
        return 2;
    }
    if (md_config_load(path, &cfg, errs) != MD_OK) {
        md_cfgtab_print_errors(stderr, errs);
        goto out;
    }
    if (md_api_usage_parse(&req, (int64_t)(md_now_realtime_ns() / 1000000000ULL), &q, &err)
            != MD_OK) {
        fprintf(stderr, "meterd usage: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    if (md_store_open_readonly(cfg->storage.path, &st, &err) != MD_OK ||
        md_api_usage_json(st, &q, &body, &len, &err) != MD_OK) {
        fprintf(stderr, "meterd usage: %s\n", err.msg);
        goto out;
    }
    if (json)
        printf("%s\n", body);
    else
        print_table(body);
    rc = 0;
out:
    free(body);
    md_store_close(st);
    md_config_unref(cfg);
    free(errs);
    return rc;
}
