/* test_rating.c: the rater end to end on a real store with a fake clock.
 * Usage rows are written through the writer (md_store_call) with the same
 * milestone mark a scrape commit makes (md_rating_touch).  Expected amounts
 * are computed by hand in the comments.  Covers: closing a day past its
 * grace, the cache rule (no double pricing), unpriced lines, re-rating on
 * late usage and on a new revision, finalize and corrections (twice: no
 * new corrections the second time), backfill idempotence and dry run,
 * revisions (unchanged file adds none), CSV and FOCUS shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "money.h"
#include "pricing.h"
#include "rating.h"
#include "store.h"
#include "store_priv.h"

static char dir[64];
static char dbpath[128];
static char pricepath[128];
static int64_t fake_now;
static struct md_store *st;
static struct md_rating *rt;

static int64_t
clock_fn(void *arg)
{
    (void)arg;
    return fake_now;
}

static int32_t
day(const char *s)
{
    int32_t d = 0;

    assert_int_equal(md_pricing_day_parse(s, strlen(s), &d), MD_OK);
    return d;
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char *price_v1 =
    "pricing_models:\n"
    "  - name: std\n"
    "    currency: USD\n"
    "    clusters: [c1]\n"
    "    effective_from: 2026-01-01\n"
    "    items:\n"
    "      - models: [m1]\n"
    "        per_million: {input: \"1\", cached_input: \"0.5\", output: \"2\"}\n";

static int
setup(void **state)
{
    struct md_err err = {0};
    static struct md_cfg_errors errs;

    (void)state;
    (void)snprintf(dir, sizeof(dir), "/tmp/md_rating_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    (void)snprintf(dbpath, sizeof(dbpath), "%s/m.db", dir);
    (void)snprintf(pricepath, sizeof(pricepath), "%s/pricing.yaml", dir);
    write_file(pricepath, price_v1);
    fake_now = (int64_t)day("2026-02-10") * 86400 + 12 * 3600;   /* noon */
    if (md_store_open(dbpath, 5000, &st, &err) != MD_OK)
        return -1;
    rt = md_rating_new(7200);
    md_rating_set_clock(rt, clock_fn, NULL);
    md_store_set_rating(st, rt);
    if (md_store_writer_start(st, &err) != MD_OK)
        return -1;
    if (md_rating_load_file(rt, st, pricepath, &errs, NULL, &err) != MD_OK)
        return -1;
    return 0;
}

static int
teardown(void **state)
{
    char cmd[128];

    (void)state;
    md_store_close(st);
    md_rating_free(rt);
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* usage: add tokens to (cluster, ns, model, token_type) at a unix hour,
 * marking the milestone like a scrape commit does (or not: touch = 0) */
struct usage_add {
    const char *cluster, *ns, *model, *tt;
    int64_t hour_s, tokens;
    int touch;
};

static int
add_usage_fn(void *arg, sqlite3 *db, struct md_err *err)
{
    struct usage_add *u = arg;
    sqlite3_stmt *s = NULL;
    int64_t id = 0;

    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO dims(cluster, namespace, department, "
            "model, provider, operation, token_type) VALUES (?1, ?2, 'd1', ?3, 'openai', 'chat', "
            "?4)", -1, &s, NULL) != SQLITE_OK)
        return md_err_set(err, MD_EDB, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(s, 1, u->cluster, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, u->ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, u->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, u->tt, -1, SQLITE_STATIC);
    sqlite3_step(s);
    sqlite3_finalize(s);
    sqlite3_prepare_v2(db, "SELECT id FROM dims WHERE cluster = ?1 AND namespace = ?2 AND "
        "model = ?3 AND token_type = ?4", -1, &s, NULL);
    sqlite3_bind_text(s, 1, u->cluster, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, u->ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, u->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, u->tt, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        id = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_prepare_v2(db, "INSERT INTO usage_hourly(hour_s, dim_id, tokens) VALUES (?1, ?2, ?3) "
        "ON CONFLICT(hour_s, dim_id) DO UPDATE SET tokens = tokens + excluded.tokens", -1, &s,
        NULL);
    sqlite3_bind_int64(s, 1, u->hour_s);
    sqlite3_bind_int64(s, 2, id);
    sqlite3_bind_int64(s, 3, u->tokens);
    if (sqlite3_step(s) != SQLITE_DONE) {
        sqlite3_finalize(s);
        return md_err_set(err, MD_EDB, "%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(s);
    if (!u->touch)
        return MD_OK;
    return md_rating_touch(rt, db, u->cluster, strlen(u->cluster),
        (int32_t)(u->hour_s / 86400), err);
}

static void
usage(const char *d, int hour, const char *ns, const char *model, const char *tt,
    int64_t tokens, int touch)
{
    struct usage_add u = { "c1", ns, model, tt, (int64_t)day(d) * 86400 + hour * 3600, tokens,
                           touch };
    struct md_err err = {0};

    assert_int_equal(md_store_call(st, add_usage_fn, &u, &err), MD_OK);
}

static int
nothing_fn(void *arg, sqlite3 *db, struct md_err *err)
{
    (void)arg;
    (void)db;
    (void)err;
    return MD_OK;
}

/* one writer round trip: the writer rates (its tick) after each drain */
static void
settle(void)
{
    struct md_err err = {0};

    for (int i = 0; i < 3; i++)
        assert_int_equal(md_store_call(st, nothing_fn, NULL, &err), MD_OK);
}

static json_t *
bills(const char *period, const char *extra_key, const char *extra_val)
{
    const char *keys[2] = { "period", extra_key }, *vals[2] = { period, extra_val };
    struct md_bill_query q;
    enum md_bill_format fmt;
    struct md_bill b;
    struct md_err err = {0};
    json_error_t je;
    char *body = NULL;
    size_t len = 0;
    json_t *j;

    assert_int_equal(md_bill_query_parse(extra_key ? 2 : 1, keys, vals, 0, &q, &fmt, &err),
        MD_OK);
    md_bill_init(&b, 0);
    assert_int_equal(md_rating_bills(rt, st, &q, &b, &err), MD_OK);
    assert_int_equal(md_bill_render(&b, &q, MD_BILL_JSON, &body, &len, &err), MD_OK);
    md_bill_fini(&b);
    j = json_loads(body, 0, &je);
    md_free(body);
    assert_non_null(j);
    return j;
}

/* the line of (day, model, token_type, status), or NULL */
static json_t *
line(json_t *doc, const char *d, const char *model, const char *tt, const char *status)
{
    size_t i;
    json_t *l;

    json_array_foreach(json_object_get(doc, "lines"), i, l) {
        if (strcmp(json_string_value(json_object_get(l, "day")), d) == 0 &&
            strcmp(json_string_value(json_object_get(l, "model")), model) == 0 &&
            strcmp(json_string_value(json_object_get(l, "token_type")), tt) == 0 &&
            strcmp(json_string_value(json_object_get(l, "status")), status) == 0)
            return l;
    }
    return NULL;
}

static void
expect_line(json_t *doc, const char *d, const char *model, const char *tt, const char *status,
    int64_t tokens, const char *amount, const char *unit_price, int64_t rev)
{
    json_t *l = line(doc, d, model, tt, status);
    char *dump = json_dumps(doc, JSON_COMPACT);

    if (l == NULL)
        fail_msg("no line %s %s %s %s in %s", d, model, tt, status, dump);
    if (json_integer_value(json_object_get(l, "tokens")) != tokens ||
        strcmp(json_string_value(json_object_get(l, "amount")), amount) != 0 ||
        strcmp(json_string_value(json_object_get(l, "unit_price")), unit_price) != 0 ||
        (rev >= 0 && json_integer_value(json_object_get(l, "pricing_revision")) != rev))
        fail_msg("%s %s %s %s: got tokens %lld amount %s unit %s rev %lld; want %lld %s %s "
            "%lld", d, model, tt, status,
            (long long)json_integer_value(json_object_get(l, "tokens")),
            json_string_value(json_object_get(l, "amount")),
            json_string_value(json_object_get(l, "unit_price")),
            (long long)json_integer_value(json_object_get(l, "pricing_revision")),
            (long long)tokens, amount, unit_price, (long long)rev);
    free(dump);
}

static void
expect_total(json_t *doc, const char *cur, const char *amount)
{
    size_t i;
    json_t *t;

    json_array_foreach(json_object_get(doc, "totals"), i, t) {
        if (strcmp(json_string_value(json_object_get(t, "currency")), cur) == 0) {
            if (strcmp(json_string_value(json_object_get(t, "amount")), amount) != 0)
                fail_msg("total %s: got %s want %s", cur,
                    json_string_value(json_object_get(t, "amount")), amount);
            return;
        }
    }
    fail_msg("no total in %s", cur);
}

static void
put(const char *doc, int64_t want_rev)
{
    static struct md_cfg_errors errs;
    struct md_err err = {0};
    int64_t rev = 0;
    int created = 0;

    assert_int_equal(md_rating_put(rt, st, "tester", doc, strlen(doc), &errs, &rev, &created,
        &err), MD_OK);
    assert_int_equal(rev, want_rev);
}

static void
test_lifecycle(void **state)
{
    struct md_rating_stats rs;
    struct md_err err = {0};
    static struct md_cfg_errors errs;
    json_t *doc;
    size_t days = 0;
    int already = 0, created = 1;
    char *rep = NULL;
    size_t len;

    (void)state;
    assert_int_equal(md_rating_revision(rt), 1);
    {
        /* the cost hook: 3M input with 1M cached, 0.5M output under v1 */
        const uint64_t tok[MD_TOK_TYPES] = { 3000000, 1000000, 0, 500000, 0 };
        struct md_price_result pr;
        char cur[8];
        int64_t rev = 0;

        assert_int_equal(md_rating_price_group(rt, "c1", day("2026-02-09"), "ns-a", "m1",
            "openai", tok, &pr, cur, &rev, &err), MD_OK);
        assert_int_equal(pr.amount_nanos, 3500000000LL);   /* 2 + 0.5 + 1 */
        assert_string_equal(cur, "USD");
        assert_int_equal(rev, 1);
    }
    /* reloading the same file adds no revision */
    assert_int_equal(md_rating_load_file(rt, st, pricepath, &errs, &created, &err), MD_OK);
    assert_int_equal(created, 0);
    assert_int_equal(md_rating_revision(rt), 1);

    /* 2026-02-09 (yesterday; closes at 02-10 02:00 < noon) */
    usage("2026-02-09", 3, "ns-a", "m1", "input", 3000000, 1);
    usage("2026-02-09", 3, "ns-a", "m1", "cached_input", 1000000, 1);
    usage("2026-02-09", 4, "ns-a", "m1", "output", 500000, 1);
    usage("2026-02-09", 5, "ns-a", "m2", "input", 777, 1);
    /* today: provisional */
    usage("2026-02-10", 1, "ns-a", "m1", "output", 250000, 1);
    settle();

    doc = bills("2026-02", NULL, NULL);
    /* cache rule included: input 3M - cached 1M = 2M uncached at 1/M = 2;
     * cached 1M at 0.5 = 0.5; output 0.5M at 2 = 1; m2 unpriced */
    expect_line(doc, "2026-02-09", "m1", "input", "closed", 2000000, "2", "1", 1);
    expect_line(doc, "2026-02-09", "m1", "cached_input", "closed", 1000000, "0.5", "0.5", 1);
    expect_line(doc, "2026-02-09", "m1", "output", "closed", 500000, "1", "2", 1);
    expect_line(doc, "2026-02-09", "m2", "input", "closed", 777, "0", "0", 1);
    assert_string_equal(json_string_value(json_object_get(
        line(doc, "2026-02-09", "m2", "input", "closed"), "pricing_model")), "unpriced");
    expect_line(doc, "2026-02-10", "m1", "output", "provisional", 250000, "0.5", "2", 1);
    expect_total(doc, "USD", "4");
    json_decref(doc);
    md_rating_get_stats(rt, &rs);
    assert_int_equal(rs.unpriced_tokens_total, 777);

    /* late usage for the closed day: re-rated automatically */
    usage("2026-02-09", 6, "ns-a", "m1", "input", 1000000, 1);
    settle();
    doc = bills("2026-02", "namespace", "ns-a");
    expect_line(doc, "2026-02-09", "m1", "input", "closed", 3000000, "3", "1", 1);
    json_decref(doc);

    /* a new revision re-rates closed days: input at 2 */
    put("pricing_models:\n"
        "  - name: std\n"
        "    currency: USD\n"
        "    clusters: [c1]\n"
        "    effective_from: 2026-01-01\n"
        "    items:\n"
        "      - models: [m1]\n"
        "        per_million: {input: \"2\", cached_input: \"0.5\", output: \"2\"}\n", 2);
    settle();
    doc = bills("2026-02", NULL, NULL);
    expect_line(doc, "2026-02-09", "m1", "input", "closed", 3000000, "6", "2", 2);
    json_decref(doc);

    /* February cannot be finalized before it ends (plus grace) */
    assert_int_equal(md_rating_finalize(rt, st, "2026-02", "t", &already, &days, &err),
        MD_ESTATE);
    fake_now = (int64_t)day("2026-03-02") * 86400;
    settle();
    assert_int_equal(md_rating_finalize(rt, st, "2026-02", "t", &already, &days, &err), MD_OK);
    assert_int_equal(already, 0);
    assert_int_equal(days, 2);
    assert_int_equal(md_rating_finalize(rt, st, "2026-02", "t", &already, &days, &err), MD_OK);
    assert_int_equal(already, 1);
    doc = bills("2026-02", NULL, NULL);
    expect_line(doc, "2026-02-09", "m1", "input", "finalized", 3000000, "6", "2", 2);
    /* 6 + 0.5 + 1 + 0 + 0.5 (the 10th's output closed at 2) */
    expect_total(doc, "USD", "8");
    json_decref(doc);

    /* late usage for a finalized day: a correction in March, February unchanged */
    usage("2026-02-09", 7, "ns-a", "m1", "output", 500000, 1);
    settle();
    doc = bills("2026-03", NULL, NULL);
    expect_line(doc, "2026-03-01", "m1", "output", "correction", 500000, "1", "2", 2);
    json_decref(doc);
    doc = bills("2026-02", NULL, NULL);
    expect_total(doc, "USD", "8");
    json_decref(doc);

    /* a new output price: -1M at 2 and +1M at 4 on top */
    put("pricing_models:\n"
        "  - name: std\n"
        "    currency: USD\n"
        "    clusters: [c1]\n"
        "    effective_from: 2026-01-01\n"
        "    items:\n"
        "      - models: [m1]\n"
        "        per_million: {input: \"2\", cached_input: \"0.5\", output: \"4\"}\n", 3);
    settle();
    doc = bills("2026-03", NULL, NULL);
    /* 02-09 output: 1M rated at 2 (1 finalized + 0.5M correction) -> now 1M
     * at 4: -1M at 2 (-2), +1M at 4 (+4); 02-10 output 0.25M: -0.5, +1 */
    expect_total(doc, "USD", "3.5");
    json_decref(doc);
    md_rating_get_stats(rt, &rs);
    {
        uint64_t before = rs.corrections_written;

        /* re-rating again (backfill) books nothing more */
        assert_int_equal(md_rating_backfill(rt, st, day("2026-02-01"), day("2026-03-01"), NULL,
            0, NULL, NULL, &rep, &len, &err), MD_OK);
        doc = json_loads(rep, 0, NULL);
        assert_int_equal(json_integer_value(json_object_get(doc, "days_changed")), 0);
        json_decref(doc);
        md_free(rep);
        md_rating_get_stats(rt, &rs);
        assert_int_equal(rs.corrections_written, before);
    }
}

static char *
render(const char *period, enum md_bill_format f)
{
    const char *keys[1] = { "period" }, *vals[1] = { period };
    struct md_bill_query q;
    enum md_bill_format fmt;
    struct md_bill b;
    struct md_err err = {0};
    char *body = NULL;
    size_t len = 0;

    assert_int_equal(md_bill_query_parse(1, keys, vals, 0, &q, &fmt, &err), MD_OK);
    md_bill_init(&b, 0);
    assert_int_equal(md_rating_bills(rt, st, &q, &b, &err), MD_OK);
    assert_int_equal(md_bill_render(&b, &q, f, &body, &len, &err), MD_OK);
    md_bill_fini(&b);
    return body;
}

static void
test_backfill_idempotent(void **state)
{
    struct md_err err = {0};
    char *rep = NULL, *b1, *b2, *b3;
    size_t len;
    json_t *j;

    (void)state;
    /* January usage nobody marked (before rating existed) */
    usage("2026-01-20", 10, "ns-b", "m1", "output", 1000000, 0);
    b1 = render("2026-01", MD_BILL_JSON);
    assert_non_null(strstr(b1, "\"lines\":[]"));
    /* dry run: reports, changes nothing */
    assert_int_equal(md_rating_backfill(rt, st, day("2026-01-01"), day("2026-02-01"), "c1", 1,
        NULL, NULL, &rep, &len, &err), MD_OK);
    j = json_loads(rep, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "days_changed")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
        json_object_get(j, "tenants"), 0), "new_amount")), "4");
    json_decref(j);
    md_free(rep);
    b2 = render("2026-01", MD_BILL_JSON);
    assert_string_equal(b1, b2);
    md_free(b2);
    /* real run: output 1M at 4 = 4, closed */
    assert_int_equal(md_rating_backfill(rt, st, day("2026-01-01"), day("2026-02-01"), "c1", 0,
        NULL, NULL, &rep, &len, &err), MD_OK);
    j = json_loads(rep, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "days_changed")), 1);
    json_decref(j);
    md_free(rep);
    b2 = render("2026-01", MD_BILL_JSON);
    assert_non_null(strstr(b2, "\"amount\":\"4\""));
    assert_non_null(strstr(b2, "\"status\":\"closed\""));
    /* second run: identical bills, no change reported */
    assert_int_equal(md_rating_backfill(rt, st, day("2026-01-01"), day("2026-02-01"), "c1", 0,
        NULL, NULL, &rep, &len, &err), MD_OK);
    j = json_loads(rep, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "days_changed")), 0);
    assert_false(json_is_true(json_object_get(json_array_get(json_object_get(j, "tenants"), 0),
        "changed")));
    json_decref(j);
    md_free(rep);
    b3 = render("2026-01", MD_BILL_JSON);
    assert_string_equal(b2, b3);
    md_free(b1);
    md_free(b2);
    md_free(b3);
}

static void
test_csv_focus_shape(void **state)
{
    char *csv = render("2026-03", MD_BILL_CSV), *focus = render("2026-03", MD_BILL_FOCUS);

    (void)state;
    static const char csv_head[] = "day,cluster,namespace,department,model,token_type,tokens,"
        "unit_price,amount,currency,status,pricing_model,pricing_revision\r\n";
    static const char focus_head[] = "BilledCost,EffectiveCost,ListCost,ContractedCost,"
        "ListUnitPrice,BillingCurrency,BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,"
        "ChargePeriodEnd,ChargeCategory,ChargeClass,ChargeDescription,ConsumedQuantity,"
        "ConsumedUnit,PricingQuantity,PricingUnit,ServiceCategory,ServiceName,ProviderName,"
        "PublisherName,InvoiceIssuerName,BillingAccountId,BillingAccountName,SubAccountId,"
        "SubAccountName,SkuId,Tags\r\n";

    assert_true(strncmp(csv, csv_head, sizeof(csv_head) - 1) == 0);
    assert_non_null(strstr(csv, "2026-03-01,c1,ns-a,d1,m1,output,-1000000,2,-2,USD,correction,"
        "std,3\r\n"));
    assert_true(strncmp(focus, focus_head, sizeof(focus_head) - 1) == 0);
    /* the -1M at 2 correction of 02-09, booked in March */
    assert_non_null(strstr(focus, "-2,-2,-2,-2,2,USD,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,"
        "2026-02-09T00:00:00Z,2026-02-10T00:00:00Z,Usage,Correction,"));
    assert_non_null(strstr(focus, ",-1000000,Tokens,-1,1M Tokens,AI and Machine Learning,"));
    assert_non_null(strstr(focus, "\"{\"\"cluster\"\":\"\"c1\"\",\"\"department\"\":\"\"d1\"\","
        "\"\"token_type\"\":\"\"output\"\"}\""));
    md_free(csv);
    md_free(focus);
}

static void
test_revisions_diff(void **state)
{
    struct md_err err = {0};
    char *body = NULL;
    size_t len;
    json_t *j, *c;

    (void)state;
    assert_int_equal(md_rating_revisions_json(st, &body, &len, &err), MD_OK);
    j = json_loads(body, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "revisions")), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
        json_object_get(j, "revisions"), 0), "actor")), "config");
    assert_string_equal(json_string_value(json_object_get(json_array_get(
        json_object_get(j, "revisions"), 1), "actor")), "tester");
    json_decref(j);
    md_free(body);
    assert_int_equal(md_rating_diff_json(st, 2, 3, &body, &len, &err), MD_OK);
    j = json_loads(body, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "changes")), 1);
    c = json_array_get(json_object_get(j, "changes"), 0);
    assert_non_null(strstr(json_string_value(json_object_get(c, "path")), "output"));
    assert_string_equal(json_string_value(json_object_get(c, "old")), "2");
    assert_string_equal(json_string_value(json_object_get(c, "new")), "4");
    json_decref(j);
    md_free(body);
}

/* a bill growing past its first allocations keeps every line's strings
 * (regression: the previous line was read through a stale pointer) and the
 * merge sums providers' lines with one rounding */
static void
test_bill_growth_and_merge(void **state)
{
    struct md_bill b;
    struct md_err err = {0};

    (void)state;
    md_bill_init(&b, 0);
    for (int i = 0; i < 3000; i++) {
        char ns[32];
        struct md_bill_line l;

        memset(&l, 0, sizeof(l));
        (void)snprintf(ns, sizeof(ns), "ns-%04d", i / 2);
        l.day = l.source_day = 20454;
        l.dims[MD_BILL_CLUSTER] = "c";
        l.dims[MD_BILL_NAMESPACE] = ns;
        l.dims[MD_BILL_DEPARTMENT] = "d";
        l.dims[MD_BILL_MODEL] = "m";
        l.dims[MD_BILL_TOKEN_TYPE] = "input";
        l.tokens = 1;                     /* two lines of 1 token at 0.5 per million */
        l.unit_price_nanos = l.list_unit_price_nanos = 500000000;
        l.amount_nanos = 0;               /* deliberately wrong: the merge recomputes */
        l.priced = 1;
        l.currency = "USD";
        l.pricing_model = "p";
        assert_int_equal(md_bill_add(&b, &l), MD_OK);
    }
    assert_int_equal(md_bill_merge_lines(&b, &err), MD_OK);
    assert_int_equal(b.count, 1500);
    for (size_t i = 0; i < b.count; i++) {
        char want[32];

        (void)snprintf(want, sizeof(want), "ns-%04zu", i);
        assert_string_equal(b.lines[i].dims[MD_BILL_NAMESPACE], want);
        assert_int_equal(b.lines[i].tokens, 2);
        /* 2 tokens x 0.5 / 1e6 = 0.000001 = 1000 nanos, from the merged tokens */
        assert_int_equal(b.lines[i].amount_nanos, 1000);
    }
    md_bill_fini(&b);
}

/* jansson writes \n, \t, \r, \b, \f short and other escapes in upper case;
 * the bill renderer writes every control character as \u00xx, lower case
 * (as it always has): map one onto the other */
static char *
long_escapes(const char *s)
{
    static const char shorts[] = "ntrbf", codes[][5] = { "000a", "0009", "000d", "0008",
                                                          "000c" };
    size_t n = strlen(s);
    char *o = malloc(n * 6 + 1), *w = o;

    assert_non_null(o);
    for (size_t i = 0; i < n; i++) {
        const char *k = (s[i] == '\\' && s[i + 1] != '\0') ? strchr(shorts, s[i + 1]) : NULL;

        if (s[i] == '\\' && s[i + 1] == '\\') {
            memcpy(w, s + i, 2);
            w += 2;
            i++;
        } else if (s[i] == '\\' && s[i + 1] == 'u' && i + 5 < n) {
            for (int j = 0; j < 6; j++)
                *w++ = (s[i + j] >= 'A' && s[i + j] <= 'F') ? (char)(s[i + j] + 32) : s[i + j];
            i += 5;
        } else if (k != NULL) {
            memcpy(w, "\\u", 2);
            memcpy(w + 2, codes[k - shorts], 4);
            w += 6;
            i++;
        } else {
            *w++ = s[i];
        }
    }
    *w = '\0';
    return o;
}

/* The JSON renderer against jansson (an independent encoder) on strings
 * that need escaping, UTF-8, a correction with negative tokens and amounts
 * at the int64 edges: the same document byte for byte. */
static void
test_render_json_vs_jansson(void **state)
{
    static const struct {
        const char *cluster, *ns, *dept, *model, *tt, *cur, *pm;
        int64_t tokens, unit, amount, rev;
        enum md_bill_status status;
        int day;
        const char *unit_s, *amount_s, *status_s, *day_s;
    } in[] = {
        { "c\"1", "ns\\x", "d\n\t\x01\x1f", "m/\xc3\xbc", "input", "USD", "p\r\b\f", -123,
          150000000, -18450, 2, MD_BILL_CORRECTION, 20454, "0.15", "-0.00001845", "correction",
          "2026-01-01" },
        { "plain", "ns-0042", "d", "model-00", "reasoning", "USD", "bench", INT64_MAX,
          1000000000, INT64_MIN + 18450, 1, MD_BILL_FINALIZED, 20484, "1",
          "-9223372036.854757358", "finalized", "2026-01-31" },
        { "plain", "ns-0042", "", "model-01", "output", "EUR", "unpriced", 7, 0, 0,
          9223372036854775807LL, MD_BILL_PROVISIONAL, 20485, "0", "0", "provisional",
          "2026-02-01" },
    };
    struct md_bill b;
    struct md_bill_query q;
    struct md_err err = {0};
    json_t *want = json_object(), *lines = json_array(), *totals = json_array(), *t;
    char *body = NULL, *w1, *w2;
    size_t len = 0;

    (void)state;
    md_bill_init(&b, 0);
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        struct md_bill_line l;
        json_t *o = json_object();

        memset(&l, 0, sizeof(l));
        l.day = l.source_day = in[i].day;
        l.dims[MD_BILL_CLUSTER] = in[i].cluster;
        l.dims[MD_BILL_NAMESPACE] = in[i].ns;
        l.dims[MD_BILL_DEPARTMENT] = in[i].dept;
        l.dims[MD_BILL_MODEL] = in[i].model;
        l.dims[MD_BILL_TOKEN_TYPE] = in[i].tt;
        l.tokens = in[i].tokens;
        l.unit_price_nanos = l.list_unit_price_nanos = in[i].unit;
        l.amount_nanos = in[i].amount;
        l.currency = in[i].cur;
        l.pricing_model = in[i].pm;
        l.revision = in[i].rev;
        l.status = in[i].status;
        l.priced = 1;
        assert_int_equal(md_bill_add(&b, &l), MD_OK);
        json_object_set_new(o, "day", json_string(in[i].day_s));
        json_object_set_new(o, "cluster", json_string(in[i].cluster));
        json_object_set_new(o, "namespace", json_string(in[i].ns));
        json_object_set_new(o, "department", json_string(in[i].dept));
        json_object_set_new(o, "model", json_string(in[i].model));
        json_object_set_new(o, "token_type", json_string(in[i].tt));
        json_object_set_new(o, "tokens", json_integer(in[i].tokens));
        json_object_set_new(o, "unit_price", json_string(in[i].unit_s));
        json_object_set_new(o, "amount", json_string(in[i].amount_s));
        json_object_set_new(o, "currency", json_string(in[i].cur));
        json_object_set_new(o, "status", json_string(in[i].status_s));
        json_object_set_new(o, "pricing_model", json_string(in[i].pm));
        json_object_set_new(o, "pricing_revision", json_integer(in[i].rev));
        json_array_append_new(lines, o);
    }
    /* totals per currency, sorted by currency */
    t = json_pack("{s:s,s:I,s:s}", "currency", "EUR", "tokens", (json_int_t)7, "amount", "0");
    json_array_append_new(totals, t);
    t = json_pack("{s:s,s:I,s:s}", "currency", "USD", "tokens", (json_int_t)(INT64_MAX - 123),
        "amount", "-9223372036.854775808");
    json_array_append_new(totals, t);
    json_object_set_new(want, "period", json_string("2026-01"));
    json_object_set_new(want, "lines", lines);
    json_object_set_new(want, "totals", totals);
    memset(&q, 0, sizeof(q));
    memcpy(q.period, "2026-01", 8);
    assert_int_equal(md_bill_render(&b, &q, MD_BILL_JSON, &body, &len, &err), MD_OK);
    assert_int_equal(len, strlen(body));
    w1 = json_dumps(want, JSON_COMPACT);
    assert_non_null(w1);
    w2 = long_escapes(w1);
    if (strcmp(body, w2) != 0) {
        fprintf(stderr, "got  %s\nwant %s\n", body, w2);
        fail_msg("the rendered bill differs (above)");
    }
    /* and from/to instead of a period */
    md_free(body);
    memset(q.period, 0, sizeof(q.period));
    q.from_day = 20454;
    q.to_day = 20486;
    assert_int_equal(md_bill_render(&b, &q, MD_BILL_JSON, &body, &len, &err), MD_OK);
    assert_true(strncmp(body, "{\"from\":\"2026-01-01\",\"to\":\"2026-02-02\",\"lines\":[{", 49)
        == 0);
    assert_string_equal(body + strlen(body) - strlen(w2) + strlen("{\"period\":\"2026-01\""),
        w2 + strlen("{\"period\":\"2026-01\""));
    md_free(body);
    free(w1);
    free(w2);
    json_decref(want);
    md_bill_fini(&b);
    /* an empty bill */
    md_bill_init(&b, 0);
    memcpy(q.period, "2026-01", 8);
    assert_int_equal(md_bill_render(&b, &q, MD_BILL_JSON, &body, &len, &err), MD_OK);
    assert_string_equal(body, "{\"period\":\"2026-01\",\"lines\":[],\"totals\":[]}");
    md_free(body);
    md_bill_fini(&b);
}

/* The renderer copies a string's JSON form from where it first wrote it
 * (per field, a few values remembered): 600 lines whose fields cycle
 * through more distinct values than it remembers (11, 13, 7, 17, 9
 * values, some needing escapes), in orders that make it forget and meet
 * values again, must still equal jansson's document line for line; the
 * token ranks md_bill_add keeps must order like the names (merge_lines
 * sorts by them). */
static void
test_render_json_memo_vs_jansson(void **state)
{
    static const char *const v[] = {
        "a", "b\"q", "c\\s", "d\n", "e\x01", "f/\xc3\xbc", "g", "h-long-name-0042", "i\t",
        "", "k", "l\x1f", "m", "n", "o", "p\r", "q",
    };
    static const char *const tts[] = {
        "input", "cached_input", "cache_creation_input", "output", "reasoning", "zz\"x",
        "audio", "input", "reasoning",
    };
    static const enum md_bill_status sts[] = {
        MD_BILL_CLOSED, MD_BILL_FINALIZED, MD_BILL_PROVISIONAL, MD_BILL_CORRECTION,
    };
    struct md_bill b;
    struct md_bill_query q;
    struct md_err err = {0};
    json_t *want = json_object(), *lines = json_array(), *totals = json_array();
    char *body = NULL, *w1, *w2;
    size_t len = 0;
    int64_t tok_sum = 0, amt_sum = 0;

    (void)state;
    md_bill_init(&b, 0);
    for (int i = 0; i < 600; i++) {
        struct md_bill_line l;
        json_t *o = json_object();
        char day[16], unit[32], amount[32];
        /* pseudo-random walks, so that a value comes back after others
         * pushed it out */
        const char *cl = v[(i * 7 + i / 50) % 11], *ns = v[(i / 3) % 13], *dept = v[(i % 5) + 2];
        const char *model = v[(i * 5) % 17], *tt = tts[(i * 4 + i / 9) % 9];

        memset(&l, 0, sizeof(l));
        l.day = l.source_day = 20454 + i / 100;
        l.dims[MD_BILL_CLUSTER] = cl;
        l.dims[MD_BILL_NAMESPACE] = ns;
        l.dims[MD_BILL_DEPARTMENT] = dept;
        l.dims[MD_BILL_MODEL] = model;
        l.dims[MD_BILL_TOKEN_TYPE] = tt;
        l.tokens = 1000 + i;
        l.unit_price_nanos = l.list_unit_price_nanos = 150000000 + (i % 3);
        l.amount_nanos = 7 * i - 100;
        l.currency = "USD";
        l.pricing_model = v[(i * 11) % 17];
        l.revision = 1 + i % 4;
        l.status = sts[i % 4];
        l.priced = 1;
        assert_int_equal(md_bill_add(&b, &l), MD_OK);
        tok_sum += l.tokens;
        amt_sum += l.amount_nanos;
        md_pricing_day_fmt(l.day, day, sizeof(day));
        assert_int_equal(md_money_fmt(l.unit_price_nanos, unit, sizeof(unit)), MD_OK);
        assert_int_equal(md_money_fmt(l.amount_nanos, amount, sizeof(amount)), MD_OK);
        json_object_set_new(o, "day", json_string(day));
        json_object_set_new(o, "cluster", json_string(cl));
        json_object_set_new(o, "namespace", json_string(ns));
        json_object_set_new(o, "department", json_string(dept));
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "token_type", json_string(tt));
        json_object_set_new(o, "tokens", json_integer(l.tokens));
        json_object_set_new(o, "unit_price", json_string(unit));
        json_object_set_new(o, "amount", json_string(amount));
        json_object_set_new(o, "currency", json_string("USD"));
        json_object_set_new(o, "status", json_string(md_bill_status_name(l.status)));
        json_object_set_new(o, "pricing_model", json_string(l.pricing_model));
        json_object_set_new(o, "pricing_revision", json_integer(l.revision));
        json_array_append_new(lines, o);
    }
    {
        char amount[32];

        assert_int_equal(md_money_fmt(amt_sum, amount, sizeof(amount)), MD_OK);
        json_array_append_new(totals, json_pack("{s:s,s:I,s:s}", "currency", "USD", "tokens",
            (json_int_t)tok_sum, "amount", amount));
    }
    json_object_set_new(want, "period", json_string("2026-01"));
    json_object_set_new(want, "lines", lines);
    json_object_set_new(want, "totals", totals);
    memset(&q, 0, sizeof(q));
    memcpy(q.period, "2026-01", 8);
    assert_int_equal(md_bill_render(&b, &q, MD_BILL_JSON, &body, &len, &err), MD_OK);
    assert_int_equal(len, strlen(body));
    w1 = json_dumps(want, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(w1);
    w2 = long_escapes(w1);
    if (strcmp(body, w2) != 0) {
        size_t k = 0;

        while (body[k] == w2[k])
            k++;
        fail_msg("rendered bill differs at byte %zu: got ...%.80s want ...%.80s", k,
            body + (k > 20 ? k - 20 : 0), w2 + (k > 20 ? k - 20 : 0));
    }
    /* ranks: known token types in enum order, unknown ones after them */
    for (size_t i = 0; i < b.count; i++) {
        enum md_token_type tt;
        const char *name = b.lines[i].dims[MD_BILL_TOKEN_TYPE];
        int want_rank = md_token_type_parse(name, strlen(name), &tt) == MD_OK ? (int)tt
                                                                             : MD_TOK_TYPES;

        if (b.lines[i].tt_rank != want_rank)
            fail_msg("line %zu (%s): rank %d, want %d", i, name, b.lines[i].tt_rank, want_rank);
    }
    md_free(body);
    free(w1);
    free(w2);
    json_decref(want);
    md_bill_fini(&b);
}

/* md_store_reader_stmt: a statement is prepared once per reader connection
 * and handed out again (same pointer) after md_store_reader_put; put resets
 * it, so the next use sees rows committed in between (no read transaction
 * left open); a nested get of the same SQL while one is held gets its own
 * statement; more distinct SQL texts than the reader keeps evict the least
 * recently used one and every text still answers right. */
static int64_t
count_usage(const char *sql, sqlite3_stmt **held)
{
    struct md_err err = {0};
    sqlite3_stmt *s = NULL;
    int64_t v;

    assert_int_equal(md_store_reader_stmt(st, sql, &s, &err), MD_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    v = sqlite3_column_int64(s, 0);
    if (held != NULL) {
        *held = s;
        return v;
    }
    md_store_reader_put(s);
    assert_int_equal(sqlite3_stmt_busy(s), 0);   /* cached: reset, still valid */
    return v;
}

static void
test_reader_stmt_cache(void **state)
{
    static const char q0[] = "SELECT count(*) + 0 FROM usage_hourly";
    char sql[64];
    sqlite3_stmt *a = NULL, *b = NULL, *first = NULL;
    struct md_err err = {0};
    int64_t n0, n1;

    (void)state;
    n0 = count_usage(q0, NULL);
    assert_int_equal(md_store_reader_stmt(st, q0, &first, &err), MD_OK);
    md_store_reader_put(first);
    assert_int_equal(md_store_reader_stmt(st, q0, &a, &err), MD_OK);
    if (a != first)
        fail_msg("second get of the same SQL: got statement %p, want the kept %p", (void *)a,
            (void *)first);
    /* nested: the same SQL while a is held is another statement */
    assert_int_equal(md_store_reader_stmt(st, q0, &b, &err), MD_OK);
    if (b == a)
        fail_msg("nested get handed out the held statement");
    assert_int_equal(sqlite3_step(a), SQLITE_ROW);
    assert_int_equal(sqlite3_step(b), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(a, 0), n0);
    assert_int_equal(sqlite3_column_int64(b, 0), n0);
    md_store_reader_put(b);
    md_store_reader_put(a);
    /* a commit between two uses is seen by the kept statement */
    usage("2026-03-01", 1, "ns-cache", "m1", "input", 5, 0);
    n1 = count_usage(q0, NULL);
    if (n1 != n0 + 1)
        fail_msg("after one committed row: got %lld rows, want %lld", (long long)n1,
            (long long)n0 + 1);
    /* 60 distinct texts (more than the reader keeps), twice round: each
     * answers its own value, evicted or not */
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 60; k++) {
            int64_t got;

            (void)snprintf(sql, sizeof(sql), "SELECT count(*) + %d FROM usage_hourly", k);
            got = count_usage(sql, NULL);
            if (got != n1 + k)
                fail_msg("round %d, %s: got %lld want %lld", round, sql, (long long)got,
                    (long long)(n1 + k));
        }
    /* a held statement is never evicted: hold one, cycle the others */
    (void)count_usage(q0, &a);
    for (int k = 0; k < 60; k++) {
        (void)snprintf(sql, sizeof(sql), "SELECT count(*) - %d FROM usage_hourly", k);
        assert_int_equal(count_usage(sql, NULL), n1 - k);
    }
    assert_int_equal(sqlite3_column_int64(a, 0), n1);   /* still the held row */
    md_store_reader_put(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_backfill_idempotent),
        cmocka_unit_test(test_csv_focus_shape),
        cmocka_unit_test(test_revisions_diff),
        cmocka_unit_test(test_bill_growth_and_merge),
        cmocka_unit_test(test_render_json_vs_jansson),
        cmocka_unit_test(test_render_json_memo_vs_jansson),
        cmocka_unit_test(test_reader_stmt_cache),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
