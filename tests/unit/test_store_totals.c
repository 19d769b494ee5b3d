/* test_store_totals.c: the /metrics totals a start loads (schema 006:
 * usage_folded + the recent hours of usage_hourly, cost_totals) equal the
 * whole history, across random usage over 300 hours (late writes into
 * folded hours, new dimension sets in old hours), H moved by the writer's
 * lag and by hand, retention runs, bill lines inserted and re-rated
 * (deleted and replaced, below and above the folded line L), corrections,
 * drains that roll back, and restarts; one restart goes
 * through the 006 migration from a schema-5 database with history.
 *
 * Expected values are computed independently: usage from the cumulative
 * counters this test fed (a series' total is its last value: every series
 * starts on a target first seen after metering began, so it counts in
 * full), cost and unpriced tokens by the GROUP BY over all bill_lines that
 * meterd ran at start before 006. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "store.h"
#include "store_priv.h"
#include "usage_snapshot.h"

#define NSER    24          /* token series; the input ones also have requests */
#define NHOURS  300         /* hours of usage, half before the current hour */
#define ROUNDS  8
#define SCRAPES 40

static char dir[64];
static char dbpath[128];
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t
rnd(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? rng % n : 0;
}

static int
setup(void **state)
{
    (void)state;
    (void)snprintf(dir, sizeof(dir), "/tmp/md_totals_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    (void)snprintf(dbpath, sizeof(dbpath), "%s/m.db", dir);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[128];

    (void)state;
    if (getenv("KEEP"))
        return 0;
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- the series this test feeds, and their expected totals ---- */

static const char *const ttypes[3] = { "input", "output", "cached_input" };

struct ser {
    int      live;           /* has appeared */
    double   tokens, reqs;   /* cumulative counter values (< 2^53) */
};
static struct ser ser[NSER];

static void
ser_dims(int i, char ns[8], char model[8], const char *dims[MD_DIM_COUNT])
{
    (void)snprintf(ns, 8, "ns%d", i % 3);
    (void)snprintf(model, 8, "m%d", i / 3 % 4);
    dims[MD_DIM_CLUSTER] = "c";
    dims[MD_DIM_NAMESPACE] = ns;
    dims[MD_DIM_DEPARTMENT] = "d";
    dims[MD_DIM_MODEL] = model;
    dims[MD_DIM_PROVIDER] = "p";
    /* two operations share a /metrics series (it sums over operations) */
    dims[MD_DIM_OPERATION] = i / 12 ? "embeddings" : "chat";
    dims[MD_DIM_TOKEN_TYPE] = ttypes[i % 3];
}

/* "c|ns|d|m|p|tt" of a /metrics usage series */
static void
ser_key(int i, char *out, size_t cap)
{
    char ns[8], model[8];
    const char *d[MD_DIM_COUNT];

    ser_dims(i, ns, model, d);
    (void)snprintf(out, cap, "c|%s|d|%s|p|%s", ns, model, d[MD_DIM_TOKEN_TYPE]);
}

/* One scrape at a random instant of the 300 hours: every live series grows
 * (or not), sometimes a new one appears.  spread 0: its usage lands in the
 * hour of the scrape, so scrapes back in time write late usage. */
static void
scrape(struct md_store *st, uint64_t now_h)
{
    uint64_t at = (now_h - NHOURS / 2 * 3600ULL + rnd(NHOURS * 3600ULL)) * 1000000000ULL +
        1 + rnd(1000000000ULL);
    struct md_batch *b = md_batch_new("http://t/metrics", 0, at);

    assert_non_null(b);
    if (rnd(3) == 0 || !ser[0].live) {
        for (int i = 0; i < NSER; i++) {
            if (!ser[i].live) {
                ser[i].live = 1;
                ser[i].tokens = (double)(1 + rnd(500));
                ser[i].reqs = (double)(1 + rnd(5));
                break;
            }
        }
    }
    for (int i = 0; i < NSER; i++) {
        char ns[8], model[8], key[16];
        const char *dims[MD_DIM_COUNT];
        size_t lens[MD_DIM_COUNT];

        if (!ser[i].live)
            continue;
        ser_dims(i, ns, model, dims);
        for (int d = 0; d < MD_DIM_COUNT; d++)
            lens[d] = strlen(dims[d]);
        if (rnd(4) != 0)
            ser[i].tokens += (double)rnd(100000);
        (void)snprintf(key, sizeof(key), "s%d", i);
        assert_int_equal(md_batch_add(b, key, strlen(key), dims, lens, MD_KIND_TOKENS,
            ser[i].tokens, 0, 0, 0, 0.0, 0), MD_OK);
        if (i % 3 == 0) {
            if (rnd(2))
                ser[i].reqs += (double)rnd(50);
            (void)snprintf(key, sizeof(key), "s%d#count", i);
            assert_int_equal(md_batch_add(b, key, strlen(key), dims, lens, MD_KIND_REQUESTS,
                ser[i].reqs, 0, 0, 0, 0.0, 0), MD_OK);
        }
    }
    assert_int_equal(md_store_submit_batch(st, b), MD_OK);
}

/* ---- bill lines: inserted, re-rated (deleted, replaced), corrected ---- */

struct billop {
    int     kind;            /* 0 insert, 1 delete some, 2 re-rate a day, 3 the last */
    int32_t day0;            /* first day of the history */
};

static int
exec_ok(sqlite3 *db, const char *sql, struct md_err *err)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = md_err_set(err, MD_EDB, "%s: %s", sql, msg ? msg : "?");

        sqlite3_free(msg);
        return rc;
    }
    return MD_OK;
}

static int
insert_lines(sqlite3 *db, int n, int32_t day, int any_day, int32_t day0, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = MD_OK;

    if (sqlite3_prepare_v2(db, "INSERT INTO bill_lines(day, cluster, namespace, department, "
            "model, token_type, tokens, unit_price, list_unit_price, amount, currency, "
            "pricing_model, pricing_revision, kind, source_day) VALUES (?1, 'c', ?2, 'd', ?3, "
            "?4, ?5, 0, 0, ?6, ?7, ?8, 1, ?9, ?10)", -1, &s, NULL) != SQLITE_OK)
        return md_err_set(err, MD_EDB, "%s", sqlite3_errmsg(db));
    for (int i = 0; i < n && rc == MD_OK; i++) {
        char ns[8], model[8];
        int corr = rnd(5) == 0, unpriced = rnd(4) == 0;
        int32_t d = any_day ? day0 + (int32_t)rnd(NHOURS / 24 + 1) : day;
        int64_t tokens = (int64_t)rnd(1000000), amount = unpriced ? 0 :
            (int64_t)rnd(5000000000ULL);

        if (corr) {          /* corrections may be negative */
            tokens -= 500000;
            amount = unpriced ? 0 : amount - 2500000000LL;
        }
        (void)snprintf(ns, sizeof(ns), "ns%d", (int)rnd(3));
        (void)snprintf(model, sizeof(model), "m%d", (int)rnd(5));
        sqlite3_bind_int(s, 1, d);
        sqlite3_bind_text(s, 2, ns, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, model, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, ttypes[rnd(3)], -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 5, tokens);
        sqlite3_bind_int64(s, 6, amount);
        sqlite3_bind_text(s, 7, rnd(3) ? "USD" : "EUR", -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 8, unpriced ? "unpriced" : "std", -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 9, corr && !any_day ? "rated" : corr ? "correction" : "rated", -1,
            SQLITE_STATIC);
        sqlite3_bind_int(s, 10, d);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = md_err_set(err, MD_EDB, "insert line: %s", sqlite3_errmsg(db));
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return rc;
}

/* runs on the writer's connection, in its transaction (md_store_call) */
static int
bill_call(void *arg, sqlite3 *db, struct md_err *err)
{
    const struct billop *op = arg;
    char sql[512];

    /* rnd() here: the test thread waits in md_store_call meanwhile */
    if (op->kind == 0)
        return insert_lines(db, 1 + (int)rnd(40), 0, 1, op->day0, err);
    if (op->kind == 3) {
        /* the last lines deleted, new ones inserted: SQLite gives them the
         * ids just freed, which may lie below the folded line L */
        (void)snprintf(sql, sizeof(sql), "DELETE FROM bill_lines WHERE id > (SELECT max(id) "
            "FROM bill_lines WHERE kind = 'correction' OR day < %d) AND kind = 'rated'",
            (int)op->day0 + 2);
        if (exec_ok(db, sql, err) != MD_OK)
            return MD_EDB;
        return insert_lines(db, 1 + (int)rnd(20), 0, 1, op->day0, err);
    }
    if (op->kind == 1) {
        /* what a re-rating may delete: rated lines of days not finalized */
        (void)snprintf(sql, sizeof(sql), "DELETE FROM bill_lines WHERE id IN (SELECT id FROM "
            "bill_lines b WHERE kind = 'rated' AND NOT EXISTS (SELECT 1 FROM milestones m "
            "WHERE m.cluster = b.cluster AND m.day = b.day AND m.state = 'finalized') "
            "ORDER BY (id * %llu) %% 1009 LIMIT %d)", (unsigned long long)(1 + rnd(1000)),
            (int)rnd(15));
        return exec_ok(db, sql, err);
    }
    {
        /* a day re-rated: its rated lines replaced (store_rating.c's way) */
        int32_t day = op->day0 + (int32_t)rnd(NHOURS / 24 + 1);
        int fin = 0;
        sqlite3_stmt *s = NULL;

        (void)snprintf(sql, sizeof(sql), "SELECT count(*) FROM milestones WHERE cluster = 'c' "
            "AND day = %d AND state = 'finalized'", (int)day);
        if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
                sqlite3_step(s) == SQLITE_ROW)
            fin = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
        if (fin)
            return MD_OK;
        (void)snprintf(sql, sizeof(sql), "DELETE FROM bill_lines WHERE cluster = 'c' AND "
            "day = %d AND kind = 'rated'", (int)day);
        if (exec_ok(db, sql, err) != MD_OK)
            return MD_EDB;
        return insert_lines(db, (int)rnd(30), day, 0, op->day0, err);
    }
}

static void
bills(struct md_store *st, int kind, int32_t day0)
{
    struct billop op = { kind, day0 };
    struct md_err err = {0};

    if (md_store_call(st, bill_call, &op, &err) != MD_OK)
        fail_msg("bill lines: %s", err.msg);
}

static int
sql_call(void *arg, sqlite3 *db, struct md_err *err)
{
    return exec_ok(db, arg, err);
}

/* ---- checks ---- */

static struct md_store *
open_metering(void)
{
    struct md_store *st = NULL;
    struct md_err err = {0};

    if (md_store_open(dbpath, 5000, &st, &err) != MD_OK ||
        md_store_ledger_init(st, 1000, 0, 0, &err) != MD_OK ||
        md_store_writer_start(st, &err) != MD_OK)
        fail_msg("open: %s", err.msg);
    return st;
}

static void
series_key(const struct md_usnap_series *s, char *out, size_t cap)
{
    size_t n = 0;

    for (unsigned i = 0; i < s->nlabels && n + 1 < cap; i++) {
        int w = snprintf(out + n, cap - n, "%s%.*s", i ? "|" : "", (int)s->len[i], s->val[i]);

        if (w < 0 || (size_t)w >= cap - n)
            fail_msg("label set too long");
        n += (size_t)w;
    }
    out[n] = '\0';
}

/* the snapshot's value of (family, key); 0 when absent */
static int64_t
snap_value(struct md_usnap *snap, int family, const char *key, int requests)
{
    const struct md_usnap_series *se = md_usnap_series(snap);
    int64_t v = 0;
    int found = 0;

    for (size_t i = 0; i < md_usnap_count(snap); i++) {
        char k[256];

        if (se[i].family != family)
            continue;
        series_key(&se[i], k, sizeof(k));
        if (strcmp(k, key) != 0)
            continue;
        if (found)
            fail_msg("series %s twice in the snapshot", key);
        found = 1;
        v = family == MD_USNAP_COST ? se[i].nanos :
            (int64_t)(requests ? se[i].requests : se[i].tokens);
    }
    return v;
}

static void
check_usage(struct md_store *st, int round)
{
    struct md_usnap *snap = md_store_usage_snapshot(st);
    const struct md_usnap_series *se = md_usnap_series(snap);
    size_t want_series = 0;

    for (int i = 0; i < NSER; i++) {
        char key[128];
        uint64_t tok = 0, req = 0;
        int first = 1;

        if (!ser[i].live)
            continue;
        ser_key(i, key, sizeof(key));
        for (int j = 0; j < NSER; j++) {
            char k2[128];

            if (!ser[j].live)
                continue;
            ser_key(j, k2, sizeof(k2));
            if (strcmp(key, k2) != 0)
                continue;
            if (j < i)
                first = 0;
            tok += (uint64_t)ser[j].tokens;
            req += j % 3 == 0 ? (uint64_t)ser[j].reqs : 0;
        }
        if (!first)
            continue;       /* counted with the first series of its key */
        want_series++;
        if ((uint64_t)snap_value(snap, MD_USNAP_USAGE, key, 0) != tok ||
            (uint64_t)snap_value(snap, MD_USNAP_USAGE, key, 1) != req)
            fail_msg("round %d, %s: snapshot has %lld tokens %lld requests, the counters fed "
                "%llu and %llu", round, key,
                (long long)snap_value(snap, MD_USNAP_USAGE, key, 0),
                (long long)snap_value(snap, MD_USNAP_USAGE, key, 1),
                (unsigned long long)tok, (unsigned long long)req);
    }
    for (size_t i = 0; i < md_usnap_count(snap); i++)
        if (se[i].family == MD_USNAP_USAGE && want_series-- == 0)
            fail_msg("round %d: more usage series in the snapshot than were fed", round);
    md_usnap_unref(snap);
}

/* cost and unpriced series against the GROUP BY over all bill_lines (the
 * start's query before schema 006), and cost_totals row for row */
static void
check_cost(struct md_store *st, int round)
{
    struct md_usnap *snap = md_store_usage_snapshot(st);
    sqlite3 *db;
    sqlite3_stmt *s;
    size_t cost_series = 0, unpriced_series = 0, have_cost = 0, have_unpriced = 0;

    assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT cluster || '|' || namespace || '|' || "
        "department || '|' || model || '|' || currency, sum(amount) FROM bill_lines "
        "WHERE pricing_model <> 'unpriced' GROUP BY cluster, namespace, department, model, "
        "currency", -1, &s, NULL), SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(s, 0);
        int64_t want = sqlite3_column_int64(s, 1), got = snap_value(snap, MD_USNAP_COST, k, 0);

        cost_series += want != 0;
        if (got != want)
            fail_msg("round %d, cost %s: snapshot %lld nanos, bill_lines sum %lld", round, k,
                (long long)got, (long long)want);
    }
    sqlite3_finalize(s);
    /* unpriced: groups with a positive token sum (a group's lines summing to
     * zero or less show no series, as before 006) */
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT cluster || '|' || namespace || '|' || "
        "department || '|' || model || '||' || token_type, sum(s) FROM (SELECT cluster, "
        "namespace, department, model, token_type, currency, sum(tokens) AS s FROM bill_lines "
        "WHERE pricing_model = 'unpriced' GROUP BY cluster, namespace, department, model, "
        "currency, token_type HAVING s > 0) GROUP BY 1", -1, &s, NULL), SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(s, 0);
        int64_t want = sqlite3_column_int64(s, 1), got = snap_value(snap, MD_USNAP_UNPRICED, k, 0);

        unpriced_series++;
        if (got != want)
            fail_msg("round %d, unpriced %s: snapshot %lld tokens, bill_lines sum %lld", round,
                k, (long long)got, (long long)want);
    }
    sqlite3_finalize(s);
    for (size_t i = 0; i < md_usnap_count(snap); i++) {
        have_cost += md_usnap_series(snap)[i].family == MD_USNAP_COST &&
            md_usnap_series(snap)[i].nanos != 0;
        have_unpriced += md_usnap_series(snap)[i].family == MD_USNAP_UNPRICED;
    }
    if (have_cost != cost_series || have_unpriced != unpriced_series)
        fail_msg("round %d: snapshot has %zu cost and %zu unpriced series, bill_lines %zu and "
            "%zu", round, have_cost, have_unpriced, cost_series, unpriced_series);
    /* the tables themselves: cost_totals (the lines below L) and the lines
     * from L on, summed per group, equal the GROUP BY of all lines */
#define FOLDED "(SELECT cluster AS c, namespace AS n, department AS d, model AS m, " \
    "currency AS cu, token_type AS t, unpriced AS u, sum(amount) AS a, sum(tokens) AS k, " \
    "sum(lines) AS l FROM (SELECT cluster, namespace, department, model, currency, " \
    "token_type, unpriced, amount, tokens, lines FROM cost_totals UNION ALL SELECT cluster, " \
    "namespace, department, model, currency, token_type, pricing_model = 'unpriced', amount, " \
    "tokens, 1 FROM bill_lines WHERE id >= (SELECT CAST(value AS INTEGER) FROM meta WHERE " \
    "key = 'cost_folded_before_id')) GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING l > 0)"
#define ALL "(SELECT cluster, namespace, department, model, currency, token_type, " \
    "pricing_model = 'unpriced', sum(amount), sum(tokens), count(*) FROM bill_lines " \
    "GROUP BY 1, 2, 3, 4, 5, 6, 7)"
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM (SELECT * FROM " FOLDED
        " EXCEPT SELECT * FROM " ALL ") UNION ALL SELECT count(*) FROM (SELECT * FROM " ALL
        " EXCEPT SELECT * FROM " FOLDED ") UNION ALL SELECT count(*) FROM cost_totals "
        "WHERE lines = 0 AND (amount <> 0 OR tokens <> 0)", -1, &s, NULL), SQLITE_OK);
#undef FOLDED
#undef ALL
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        if (sqlite3_column_int(s, 0) != 0)
            fail_msg("round %d: cost_totals differs from the GROUP BY of bill_lines (part %d: "
                "%d rows)", round, i, sqlite3_column_int(s, 0));
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    md_usnap_unref(snap);
}

/* usage_folded + usage_hourly from H = usage_hourly + usage_retired (the
 * start's query before 006), per dimension set */
static void
check_folded(int round)
{
    sqlite3 *db;
    sqlite3_stmt *s;

    assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM ("
        "SELECT dim_id, sum(tokens), sum(requests) FROM (SELECT dim_id, tokens, requests FROM "
        "usage_folded UNION ALL SELECT dim_id, tokens, requests FROM usage_hourly WHERE "
        "hour_s >= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = "
        "'usage_folded_before')) GROUP BY dim_id EXCEPT SELECT dim_id, sum(tokens), "
        "sum(requests) FROM (SELECT dim_id, tokens, requests FROM usage_hourly UNION ALL "
        "SELECT dim_id, tokens, requests FROM usage_retired) GROUP BY dim_id)", -1, &s, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    if (sqlite3_column_int(s, 0) != 0)
        fail_msg("round %d: %d dimension sets differ between the folded totals and the "
            "history", round, sqlite3_column_int(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* The database as meterd left it before schema 006 (history kept). */
static void
back_to_schema5(void)
{
    sqlite3 *db;

    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    if (sqlite3_exec(db, "BEGIN; DROP TRIGGER usage_hourly_fold; DROP TRIGGER "
            "bill_lines_fold_del; DROP TABLE usage_folded; "
            "DROP TABLE cost_totals; DELETE FROM meta WHERE key IN ('usage_folded_before', "
            "'cost_folded_before_id'); "
            "PRAGMA user_version = 5; COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("back to schema 5: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

static void
test_totals_equal_history(void **state)
{
    uint64_t now_h = md_now_realtime_ns() / 1000000000ULL / 3600 * 3600;
    uint64_t first_h = now_h - NHOURS / 2 * 3600ULL;
    int32_t day0 = (int32_t)(first_h / 86400);
    struct md_store *st = open_metering();
    char sql[256];
    uint64_t moves = 0, fulls = 0;

    (void)state;
    /* H back to the first hour (valid while there is no usage at all), so
     * that retention cuts and the writer's moves fall on both sides of it */
    (void)snprintf(sql, sizeof(sql), "UPDATE meta SET value = '%llu' WHERE key = "
        "'usage_folded_before'", (unsigned long long)first_h);
    {
        struct md_err err = {0};

        if (md_store_call(st, sql_call, sql, &err) != MD_OK)
            fail_msg("%s", err.msg);
    }
    md_store_close(st);
    st = open_metering();
    assert_int_equal(md_store_folded_before(st), first_h);
    md_store_set_fold_lag(st, NHOURS * 3600ULL);     /* H stays, for now */
    /* every day billed (retention may delete its usage), two finalized
     * (their rated lines are never deleted) */
    for (int32_t d = day0; d <= day0 + NHOURS / 24 + 1; d++) {
        struct md_err err = {0};

        (void)snprintf(sql, sizeof(sql), "INSERT INTO milestones(cluster, day, state, dirty) "
            "VALUES ('c', %d, '%s', 0)", (int)d, d < day0 + 2 ? "finalized" : "closed");
        if (md_store_call(st, sql_call, sql, &err) != MD_OK)
            fail_msg("%s", err.msg);
    }
    for (int round = 0; round < ROUNDS; round++) {
        uint64_t h0 = md_store_folded_before(st);

        /* the writer's own moves: H at lag before now, or a lag beyond the
         * history (H stays); md_store_fold_usage moves it into the future
         * half of the usage (written by scrapes timed there) */
        static const uint64_t lags[5] = { 0, 3600, 5 * 3600, 100 * 3600, NHOURS * 3600 };
        uint64_t lag = lags[rnd(5)];

        md_store_set_fold_lag(st, lag);
        /* bill lines folded every few lines, or (rarely) not at all */
        md_store_set_cost_fold_lines(st, rnd(5) ? 1 + rnd(80) : 1000000);
        for (int k = 0; k < SCRAPES; k++) {
            uint64_t r = rnd(20);

            scrape(st, now_h);
            if (r == 0)      /* H creeps up (the full run covers the 300 hours) */
                assert_int_equal(md_store_fold_usage(st, md_store_folded_before(st) +
                    rnd(6) * 3600ULL), MD_OK);
            else if (r == 1) {
                md_store_set_retention(st, (1 + rnd(NHOURS / 2)) * 3600ULL * 1000);
                assert_int_equal(md_store_apply_retention(st), MD_OK);
            } else if (r < 5)
                bills(st, 0, day0);
            else if (r == 5)
                bills(st, 1, day0);
            else if (r == 6)
                bills(st, 2, day0);
            else if (r == 8)
                bills(st, 3, day0);
            else if (r == 7) {
                /* a full disk: the drain moving H (and the scrapes with it)
                 * rolls back; H must go back with it */
                md_store_set_max_page_count(st, 1);
                assert_int_equal(md_store_fold_usage(st, md_store_folded_before(st) +
                    (1 + rnd(48)) * 3600ULL), MD_OK);
                for (int i = 0; i < 20; i++)
                    scrape(st, now_h);
                fulls += md_store_flush(st) != MD_OK;
                md_store_set_max_page_count(st, 0);
                /* a drain after the cap is lifted (a job the writer queued
                 * meanwhile, retention, may have failed too) */
                assert_int_equal(md_store_submit_event(st, "disk", "free"), MD_OK);
                assert_int_equal(md_store_flush(st), MD_OK);
            }
            if (rnd(4) == 0)
                assert_int_equal(md_store_flush(st), MD_OK);
        }
        scrape(st, now_h);     /* commits what a failed drain left to bill */
        assert_int_equal(md_store_flush(st), MD_OK);
        /* the writer moved H itself, to lag before now, in its drains */
        if (lag < NHOURS * 3600 && md_store_folded_before(st) < (now_h - lag) / 3600 * 3600)
            fail_msg("round %d: H %llu, the lag of %llu s asked for %llu at least", round,
                (unsigned long long)md_store_folded_before(st), (unsigned long long)lag,
                (unsigned long long)((now_h - lag) / 3600 * 3600));
        moves += md_store_folded_before(st) != h0;
        md_store_close(st);
        check_folded(round);
        if (round == ROUNDS / 2)
            back_to_schema5();      /* the next start migrates, filling the totals */
        st = open_metering();
        check_usage(st, round);
        check_cost(st, round);
        check_folded(round);
    }
    md_store_close(st);
    /* the run moved H and left usage on both sides of it */
    assert_true(moves >= 2);
    assert_true(fulls >= 1);
    {
        sqlite3 *db;
        sqlite3_stmt *s;

        assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "WITH h(h) AS (SELECT CAST(value AS INTEGER) "
            "FROM meta WHERE key = 'usage_folded_before') SELECT "
            "(SELECT count(*) FROM usage_folded), (SELECT count(*) FROM usage_retired), "
            "(SELECT count(*) FROM bill_lines), (SELECT count(*) FROM cost_totals WHERE "
            "lines > 0), (SELECT count(*) FROM usage_hourly, h WHERE hour_s < h), "
            "(SELECT count(*) FROM usage_hourly, h WHERE hour_s >= h)", -1, &s, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        for (int i = 0; i < 6; i++)
            if (sqlite3_column_int(s, i) == 0)
                fail_msg("column %d of the final state is empty: the run did not exercise it",
                    i);
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_totals_equal_history, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
