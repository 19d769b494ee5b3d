/* cmd_bills.c: `meterd bills`, `meterd backfill`, `meterd finalize`.
 *
 * They work on the database named by the configuration, with or without
 * the daemon running: bills reads through a read-only connection; backfill
 * and finalize open their own writer (SQLite WAL: the daemon keeps
 * scraping; each day of a backfill is one short write transaction, retried
 * while the daemon holds the lock).  The pricing used is the latest stored
 * revision: the daemon owns pricing.file, so a changed file is taken by the
 * daemon (start, SIGHUP) or through PUT /api/v1/pricing first.  Main thread
 * of a short-lived process; all state is local. */
#include "cmd_bills.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "money.h"
#include "pricing.h"
#include "rating.h"
#include "store.h"
#include "util.h"

#define ARGS_MAX 32

struct ctx {
    struct md_config *cfg;
    struct md_store  *st;
    struct md_rating *r;
};

static int
open_ctx(const char *path, int writer, struct ctx *c)
{
    static struct md_cfg_errors errs;
    struct md_err err = {0};

    memset(c, 0, sizeof(*c));
    if (path == NULL) {
        fputs("meterd: -c FILE is required\n", stderr);
        return 2;
    }
    if (md_config_load(path, &c->cfg, &errs) != MD_OK) {
        md_cfgtab_print_errors(stderr, &errs);
        return 1;
    }
    if (writer) {
        if (md_store_open(c->cfg->storage.path, c->cfg->storage.busy_timeout_ms, &c->st, &err)
                != MD_OK || md_store_writer_start(c->st, &err) != MD_OK) {
            fprintf(stderr, "meterd: store: %s\n", err.msg);
            return 1;
        }
    } else if (md_store_open_readonly(c->cfg->storage.path, &c->st, &err) != MD_OK) {
        fprintf(stderr, "meterd: store: %s\n", err.msg);
        return 1;
    }
    c->r = md_rating_new(c->cfg->rating.grace_ms / 1000);
    if (c->r == NULL)
        return 1;
    memset(&errs, 0, sizeof(errs));
    if (md_rating_load_file(c->r, c->st, NULL, &errs, NULL, &err) != MD_OK) {
        fprintf(stderr, "meterd: pricing: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static void
close_ctx(struct ctx *c)
{
    md_store_close(c->st);
    md_rating_free(c->r);
    md_config_unref(c->cfg);
}

static void
bills_usage(FILE *fp)
{
    fputs("usage: meterd bills -c FILE [--period YYYY-MM | --from DAY --to DAY]\n"
          "                    [--cluster V] [--namespace V] [--department V] [--model V]\n"
          "                    [--token-type V] [--group-by DIM,...]\n"
          "                    [--format table|json|csv|focus]\n"
          "DAY is YYYY-MM-DD (--to exclusive); default: this month.  DIM: day, cluster,\n"
          "namespace, department, model, token_type.\n", fp);
}

static void
print_table(const char *json_text)
{
    json_error_t je;
    json_t *root = json_loads(json_text, 0, &je), *lines, *l, *gb, *t;
    size_t i, j;

    if (root == NULL)
        return;
    lines = json_object_get(root, "lines");
    gb = json_object_get(root, "group_by");
    if (gb != NULL) {
        json_array_foreach(gb, j, t)
            printf("%-22s ", json_string_value(t));
        printf("%-8s %14s %20s\n", "currency", "tokens", "amount");
        json_array_foreach(lines, i, l) {
            json_array_foreach(gb, j, t)
                printf("%-22s ", json_string_value(json_object_get(l, json_string_value(t))));
            printf("%-8s %14lld %20s\n", json_string_value(json_object_get(l, "currency")),
                (long long)json_integer_value(json_object_get(l, "tokens")),
                json_string_value(json_object_get(l, "amount")));
        }
    } else {
        printf("%-10s %-12s %-14s %-12s %-22s %-20s %12s %10s %14s %-4s %-11s\n", "day",
            "cluster", "namespace", "department", "model", "token_type", "tokens",
            "unit_price", "amount", "cur", "status");
        json_array_foreach(lines, i, l)
            printf("%-10s %-12s %-14s %-12s %-22s %-20s %12lld %10s %14s %-4s %-11s\n",
                json_string_value(json_object_get(l, "day")),
                json_string_value(json_object_get(l, "cluster")),
                json_string_value(json_object_get(l, "namespace")),
                json_string_value(json_object_get(l, "department")),
                json_string_value(json_object_get(l, "model")),
                json_string_value(json_object_get(l, "token_type")),
                (long long)json_integer_value(json_object_get(l, "tokens")),
                json_string_value(json_object_get(l, "unit_price")),
                json_string_value(json_object_get(l, "amount")),
                json_string_value(json_object_get(l, "currency")),
                json_string_value(json_object_get(l, "status")));
    }
    json_array_foreach(json_object_get(root, "totals"), i, t)
        printf("total %s: %s (%lld tokens)\n", json_string_value(json_object_get(t, "currency")),
            json_string_value(json_object_get(t, "amount")),
            (long long)json_integer_value(json_object_get(t, "tokens")));
    json_decref(root);
}

int
md_cmd_bills(int argc, char **argv)
{
    static const struct { const char *opt, *key; } opts[] = {
        { "--period", "period" }, { "--from", "from" }, { "--to", "to" },
        { "--cluster", "cluster" }, { "--namespace", "namespace" },
        { "--department", "department" }, { "--model", "model" },
        { "--token-type", "token_type" }, { "--group-by", "group_by" },
        { "--format", "format" },
    };
    const char *keys[ARGS_MAX], *values[ARGS_MAX], *path = NULL;
    struct md_bill_query q;
    enum md_bill_format fmt;
    struct md_bill bill;
    struct md_err err = {0};
    struct ctx c;
    size_t n = 0, len = 0;
    char *body = NULL;
    int table = 1, rc;

    for (int i = 0; i < argc; i++) {
        int known = 0;

        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            bills_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
            continue;
        }
        for (size_t o = 0; o < sizeof(opts) / sizeof(opts[0]) && !known; o++) {
            if (strcmp(argv[i], opts[o].opt) != 0)
                continue;
            if (i + 1 >= argc || n == ARGS_MAX) {
                fprintf(stderr, "meterd bills: %s needs a value\n", argv[i]);
                return 2;
            }
            known = 1;
            i++;
            if (o == 9 && strcmp(argv[i], "table") == 0)
                continue;
            if (o == 9)
                table = 0;
            keys[n] = opts[o].key;
            values[n++] = argv[i];
        }
        if (!known) {
            fprintf(stderr, "meterd bills: unknown option \"%s\"\n", argv[i]);
            bills_usage(stderr);
            return 2;
        }
    }
    if (md_bill_query_parse(n, keys, values, (int32_t)(md_now_realtime_ns() /
            86400000000000ULL), &q, &fmt, &err) != MD_OK) {
        fprintf(stderr, "meterd bills: %s\n", err.msg);
        return 2;
    }
    rc = open_ctx(path, 0, &c);
    if (rc != 0) {
        close_ctx(&c);
        return rc;
    }
    md_bill_init(&bill, q.lines_max);
    rc = md_rating_bills(c.r, c.st, &q, &bill, &err);
    if (rc == MD_OK)
        rc = md_bill_render(&bill, &q, fmt, &body, &len, &err);
    md_bill_fini(&bill);
    if (rc != MD_OK) {
        fprintf(stderr, "meterd bills: %s\n", err.msg);
        close_ctx(&c);
        return 1;
    }
    if (table)
        print_table(body);
    else
        fwrite(body, 1, len, stdout);
    if (!table && fmt == MD_BILL_JSON)
        fputc('\n', stdout);
    md_free(body);
    close_ctx(&c);
    return 0;
}

static void
progress_bar(void *arg, size_t done, size_t total)
{
    int *tty = arg;
    int w = 40, filled = total ? (int)(done * (size_t)w / total) : w;

    if (!*tty)
        return;
    fprintf(stderr, "\r[%.*s%*s] %zu/%zu days", filled,
        "########################################", w - filled, "", done, total);
    if (done == total)
        fputc('\n', stderr);
}

int
md_cmd_backfill(int argc, char **argv)
{
    const char *path = NULL, *from = NULL, *to = NULL, *cluster = NULL;
    int dry = 0, json_out = 0, tty = isatty(2), rc;
    int32_t fd, td;
    struct md_err err = {0};
    struct ctx c;
    char *report = NULL;
    size_t len = 0;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--dry-run") == 0) {
            dry = 1;
        } else if (strcmp(a, "--json") == 0) {
            json_out = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            puts("usage: meterd backfill -c FILE --from DAY --to DAY [--cluster C] [--dry-run] "
                 "[--json]\nre-rates [from, to) with the latest pricing revision, idempotently;"
                 "\nreports old and new totals per tenant");
            return 0;
        } else if (v != NULL && strcmp(a, "-c") == 0) {
            path = v;
            i++;
        } else if (v != NULL && strcmp(a, "--from") == 0) {
            from = v;
            i++;
        } else if (v != NULL && strcmp(a, "--to") == 0) {
            to = v;
            i++;
        } else if (v != NULL && strcmp(a, "--cluster") == 0) {
            cluster = v;
            i++;
        } else {
            fprintf(stderr, "meterd backfill: unexpected \"%s\"\n", a);
            return 2;
        }
    }
    if (from == NULL || to == NULL || md_pricing_day_parse(from, strlen(from), &fd) != MD_OK ||
        md_pricing_day_parse(to, strlen(to), &td) != MD_OK) {
        fputs("meterd backfill: --from and --to are required, YYYY-MM-DD (--to exclusive)\n",
            stderr);
        return 2;
    }
    rc = open_ctx(path, 1, &c);
    if (rc != 0) {
        close_ctx(&c);
        return rc;
    }
    rc = md_rating_backfill(c.r, c.st, fd, td, cluster, dry, progress_bar, &tty, &report, &len,
        &err);
    if (rc != MD_OK) {
        fprintf(stderr, "meterd backfill: %s\n", err.msg);
        close_ctx(&c);
        return 1;
    }
    if (json_out) {
        printf("%s\n", report);
    } else {
        json_error_t je;
        json_t *j = json_loads(report, 0, &je), *t;
        size_t i;

        printf("%s%lld days, %lld changed, %lld still open, %lld correction lines\n",
            dry ? "dry run: " : "",
            (long long)json_integer_value(json_object_get(j, "days")),
            (long long)json_integer_value(json_object_get(j, "days_changed")),
            (long long)json_integer_value(json_object_get(j, "days_open")),
            (long long)json_integer_value(json_object_get(j, "corrections")));
        printf("%-24s %-4s %20s %20s %s\n", "namespace", "cur", "old", "new", "");
        json_array_foreach(json_object_get(j, "tenants"), i, t)
            printf("%-24s %-4s %20s %20s %s\n",
                json_string_value(json_object_get(t, "namespace")),
                json_string_value(json_object_get(t, "currency")),
                json_string_value(json_object_get(t, "old_amount")),
                json_string_value(json_object_get(t, "new_amount")),
                json_is_true(json_object_get(t, "changed")) ? "changed" : "");
        json_decref(j);
    }
    md_free(report);
    close_ctx(&c);
    return 0;
}

int
md_cmd_finalize(int argc, char **argv)
{
    const char *path = NULL, *period = NULL;
    struct md_err err = {0};
    struct ctx c;
    size_t days = 0;
    int already = 0, rc;

    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-c") == 0)
            path = argv[i + 1];
        else if (strcmp(argv[i], "--period") == 0)
            period = argv[i + 1];
        else {
            fprintf(stderr, "meterd finalize: unexpected \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (period == NULL || argc % 2 != 0) {
        fputs("usage: meterd finalize -c FILE --period YYYY-MM\n", stderr);
        return 2;
    }
    rc = open_ctx(path, 1, &c);
    if (rc != 0) {
        close_ctx(&c);
        return rc;
    }
    rc = md_rating_finalize(c.r, c.st, period, "cli", &already, &days, &err);
    close_ctx(&c);
    if (rc != MD_OK) {
        fprintf(stderr, "meterd finalize: %s\n", err.msg);
        return rc == MD_EPARSE ? 2 : 1;
    }
    if (already)
        printf("%s was already finalized\n", period);
    else
        printf("%s finalized (%zu cluster-days)\n", period, days);
    return 0;
}
