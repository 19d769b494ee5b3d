/* test_store.c: migrations from empty, restart is a no-op, a newer schema is
 * refused and left untouched, the writer commits and flushes; the ledger's
 * state rows (schema 004): 002's rows convert to the same state, a restart
 * bills exactly from the stored checkpoints, a corrupt state is refused, and
 * a kill just before or after COMMIT (failpoints) loses nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch.h"
#include "store.h"
#include "usage_snapshot.h"

static char dir[64];
static char dbpath[128];

static int
setup(void **state)
{
    (void)state;
    (void)snprintf(dir, sizeof(dir), "/tmp/md_store_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    (void)snprintf(dbpath, sizeof(dbpath), "%s/sub/dir/m.db", dir);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[128];

    (void)state;
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int
user_version(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int v = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static void
test_migrate_from_empty(void **state)
{
    struct md_store *st = NULL;
    struct md_err err = {0};
    uint64_t n = 99;

    (void)state;
    assert_true(md_store_schema_latest() >= 1);
    if (md_store_open(dbpath, 1000, &st, &err) != MD_OK)
        fail_msg("open: %s", err.msg);
    /* the directory was created, the schema is the latest, tables exist */
    assert_int_equal(md_store_count_events(st, "", &n, &err), MD_OK);
    assert_int_equal(n, 0);
    md_store_close(st);
    assert_int_equal(user_version(dbpath), md_store_schema_latest());
}

static void
test_restart_is_noop(void **state)
{
    struct md_store *st = NULL;
    struct md_err err = {0};
    struct stat a, b;
    uint64_t n = 0;

    (void)state;
    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
    assert_int_equal(md_store_writer_start(st, &err), MD_OK);
    assert_int_equal(md_store_submit_event(st, "start", "x"), MD_OK);
    assert_int_equal(md_store_submit_event(st, "reload", "y"), MD_OK);
    assert_int_equal(md_store_flush(st), MD_OK);
    md_store_close(st);
    assert_int_equal(stat(dbpath, &a), 0);

    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
    assert_int_equal(md_store_count_events(st, "", &n, &err), MD_OK);
    assert_int_equal(n, 2);          /* rows kept, no migration re-run */
    assert_int_equal(md_store_count_events(st, "reload", &n, &err), MD_OK);
    assert_int_equal(n, 1);
    assert_int_equal(md_store_check(st, &err), MD_OK);
    md_store_close(st);
    assert_int_equal(stat(dbpath, &b), 0);
    assert_int_equal(user_version(dbpath), md_store_schema_latest());
}

static void
test_newer_schema_refused(void **state)
{
    struct md_store *st = NULL;
    struct md_err err = {0};
    char sql[64], wal[160];
    sqlite3 *db;
    struct stat before, after;

    (void)state;
    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
    md_store_close(st);
    /* a future meterd migrated this file further; go back to rollback journal
     * so the file is one piece we can compare */
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    (void)snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", md_store_schema_latest() + 1);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(stat(dbpath, &before), 0);

    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_EDB);
    assert_null(strstr(err.msg, "(null)"));
    assert_non_null(strstr(err.msg, "newer than this meterd"));
    assert_non_null(strstr(err.msg, "not modified"));
    /* untouched: same size and mtime, still version N+1, not switched to WAL */
    assert_int_equal(stat(dbpath, &after), 0);
    assert_int_equal(before.st_size, after.st_size);
    assert_int_equal(before.st_mtime, after.st_mtime);
    assert_int_equal(user_version(dbpath), md_store_schema_latest() + 1);
    (void)snprintf(wal, sizeof(wal), "%s-wal", dbpath);
    assert_int_not_equal(access(wal, F_OK), 0);
}

static void
test_submit_needs_writer(void **state)
{
    struct md_store *st = NULL;
    struct md_err err = {0};
    struct md_store_stats ss;

    (void)state;
    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
    assert_int_equal(md_store_submit_event(st, "x", ""), MD_ELIMIT);
    md_store_get_stats(st, &ss);
    assert_int_equal(ss.queue_dropped, 1);
    assert_int_equal(md_store_writer_start(st, &err), MD_OK);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(md_store_submit_event(st, "bulk", "row"), MD_OK);
    assert_int_equal(md_store_flush(st), MD_OK);
    md_store_get_stats(st, &ss);
    assert_true(ss.commits >= 1);
    assert_int_equal(ss.errors, 0);
    assert_int_equal(ss.healthy, 1);
    md_store_close(st);
}

static int
count_usage(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int n = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM usage_hourly", -1, &s, NULL),
        SQLITE_OK);
    if (sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static int64_t sql_int(const char *path, const char *q);

static void
test_retention(void **state)
{
    struct md_store *st = NULL;
    struct md_err err = {0};
    long long now_h = (long long)(md_now_realtime_ns() / 1000000000ULL / 3600) * 3600;
    char sql[512];
    sqlite3 *db;

    (void)state;
    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
    assert_int_equal(md_store_ledger_init(st, 1000, 3600, 0, &err), MD_OK);
    assert_int_equal(md_store_writer_start(st, &err), MD_OK);
    /* hours ending 49, 25, 23 and 1 hours ago, and the current hour */
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO dims VALUES (1,'c','n','d','m','p','o','input')",
        NULL, NULL, NULL), SQLITE_OK);
    (void)snprintf(sql, sizeof(sql), "INSERT INTO usage_hourly VALUES (%lld,1,5,1),(%lld,1,6,1),"
        "(%lld,1,7,1),(%lld,1,8,1),(%lld,1,9,1)", now_h - 50 * 3600, now_h - 26 * 3600,
        now_h - 24 * 3600, now_h - 2 * 3600, now_h);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    /* every day of cluster c is billed (closed, clean): deletable.  One more
     * old row, of cluster c2 whose day is still open, must survive: usage a
     * bill still needs is never deleted */
    (void)snprintf(sql, sizeof(sql), "INSERT INTO dims VALUES (2,'c2','n','d','m','p','o','input');"
        "INSERT INTO usage_hourly VALUES (%lld,2,1,1);"
        "INSERT OR IGNORE INTO milestones(cluster, day, state, dirty) VALUES "
        "('c',%lld,'closed',0),('c',%lld,'closed',0),('c',%lld,'closed',0),('c',%lld,'closed',0),"
        "('c',%lld,'closed',0),('c2',%lld,'open',1)",
        now_h - 50 * 3600, (now_h - 50 * 3600) / 86400, (now_h - 26 * 3600) / 86400,
        (now_h - 24 * 3600) / 86400, (now_h - 2 * 3600) / 86400, now_h / 86400,
        (now_h - 50 * 3600) / 86400);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(count_usage(dbpath), 6);
    /* 0 keeps everything */
    assert_int_equal(md_store_apply_retention(st), MD_OK);
    assert_int_equal(md_store_flush(st), MD_OK);
    assert_int_equal(count_usage(dbpath), 6);
    /* 25 hours: the cut is now - 25h floored to the hour (= the start of the
     * current hour - 25h); billed hours starting before it go: -50h and -26h
     * of cluster c; c2's open day stays */
    md_store_set_retention(st, 25ULL * 3600 * 1000);
    assert_int_equal(md_store_apply_retention(st), MD_OK);
    assert_int_equal(md_store_flush(st), MD_OK);
    assert_int_equal(count_usage(dbpath), 4);
    /* what went is kept as a total per dimension set: 5 + 6 tokens, 2 requests */
    assert_int_equal(sql_int(dbpath, "SELECT tokens FROM usage_retired WHERE dim_id = 1"), 11);
    assert_int_equal(sql_int(dbpath, "SELECT requests FROM usage_retired WHERE dim_id = 1"), 2);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM usage_retired"), 1);
    /* a second run adds to it: 1 hour cuts -24h and -2h (their days closed) */
    md_store_set_retention(st, 1ULL * 3600 * 1000);
    assert_int_equal(md_store_apply_retention(st), MD_OK);
    assert_int_equal(md_store_flush(st), MD_OK);
    assert_int_equal(count_usage(dbpath), 2);
    assert_int_equal(sql_int(dbpath, "SELECT tokens FROM usage_retired WHERE dim_id = 1"), 26);
    assert_int_equal(sql_int(dbpath, "SELECT requests FROM usage_retired WHERE dim_id = 1"), 4);
    md_store_close(st);
    /* restarted, the /metrics counters still hold every token ever
     * committed (5+6+7+8+9 = 35 for dims 1, 1 for c2's): they never go down */
    st = NULL;
    assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
    assert_int_equal(md_store_ledger_init(st, 1000, 3600, 0, &err), MD_OK);
    {
        struct md_usnap *snap = md_store_usage_snapshot(st);
        const struct md_usnap_series *se;
        uint64_t tok[2] = {0, 0}, req[2] = {0, 0};

        assert_non_null(snap);
        se = md_usnap_series(snap);
        for (size_t i = 0; i < md_usnap_count(snap); i++) {
            int c2;

            if (se[i].family != MD_USNAP_USAGE)
                continue;
            c2 = se[i].len[0] == 2 && memcmp(se[i].val[0], "c2", 2) == 0;
            tok[c2] += se[i].tokens;
            req[c2] += se[i].requests;
        }
        md_usnap_unref(snap);
        assert_int_equal(tok[0], 35);
        assert_int_equal(req[0], 5);
        assert_int_equal(tok[1], 1);
        assert_int_equal(req[1], 1);
    }
    md_store_close(st);
}

/* ---- ledger state rows (schema/004_ledger_state.sql) ---- */

#define NSER 4
#define HOUR_NS (3600ULL * 1000000000ULL)

/* one scrape of target "t1": series k0..k3 with the given values, token
 * types input/output alternating, models m0..m3; k2 carries a _created */
static struct md_batch *
make_batch(uint64_t scrape_ns, const double v[NSER], double created)
{
    struct md_batch *b = md_batch_new("http://t1/metrics", 1, scrape_ns);

    assert_non_null(b);
    for (int i = 0; i < NSER; i++) {
        char key[16], model[8];
        const char *dims[MD_DIM_COUNT] = { "c", "ns", "d", model, "p", "chat",
                                           i % 2 ? "output" : "input" };
        size_t lens[MD_DIM_COUNT];

        (void)snprintf(key, sizeof(key), "k%d", i);
        (void)snprintf(model, sizeof(model), "m%d", i);
        for (int d = 0; d < MD_DIM_COUNT; d++)
            lens[d] = strlen(dims[d]);
        assert_int_equal(md_batch_add(b, key, strlen(key), dims, lens, MD_KIND_TOKENS, v[i], 0,
            0, i == 2, i == 2 ? created : 0.0, 0), MD_OK);
    }
    return b;
}

static int64_t
sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v = -1;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* A checkpoint as decoded here from the documented format, independently
 * of store.c. */
struct cp {
    char     key[16];
    uint64_t value, ts_ns;
    int      has_created;
    double   created;
};

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Reads every checkpoint of the new rows, ordered by key; returns the count. */
static size_t
read_cps(const char *path, struct cp *out, size_t max)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    size_t n = 0;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT k.slot, k.key, s.state FROM ledger_keys k "
        "JOIN ledger_state s USING (target_id) ORDER BY k.key", -1, &s, NULL), SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        int slot = sqlite3_column_int(s, 0);
        const unsigned char *st = sqlite3_column_blob(s, 2);
        int len = sqlite3_column_bytes(s, 2);
        const unsigned char *r = st + 1 + 25 * slot;
        uint64_t bits;

        assert_true(n < max);
        assert_int_equal(st[0], 1);
        assert_true(1 + 25 * (slot + 1) <= len);
        assert_int_equal(r[0] & 1, 1);
        memset(&out[n], 0, sizeof(out[n]));
        assert_true(sqlite3_column_bytes(s, 1) < (int)sizeof(out[n].key));
        memcpy(out[n].key, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1));
        out[n].value = le64(r + 1);
        out[n].ts_ns = le64(r + 9);
        out[n].has_created = (r[0] & 2) != 0;
        bits = le64(r + 17);
        memcpy(&out[n].created, &bits, sizeof(bits));
        n++;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static struct md_store *
open_metering(void)
{
    struct md_store *st = NULL;
    struct md_err err = {0};

    if (md_store_open(dbpath, 1000, &st, &err) != MD_OK ||
        md_store_ledger_init(st, 1000, 0, 0, &err) != MD_OK ||
        md_store_writer_start(st, &err) != MD_OK)
        fail_msg("open: %s", err.msg);
    return st;
}

static void
scrape_and_flush(struct md_store *st, uint64_t ns, const double v[NSER], double created)
{
    assert_int_equal(md_store_submit_batch(st, make_batch(ns, v, created)), MD_OK);
    assert_int_equal(md_store_flush(st), MD_OK);
}

/* 2^63 + 2048: above INT64_MAX, stored as a negative SQLite integer */
#define BIG 9223372036854777856.0

static void
test_ledger_state_rows(void **state)
{
    static const double v1[NSER] = { 100, BIG, 7, 0 };
    static const double v2[NSER] = { 150, BIG + 4096, 9, 0 };
    static const double v3[NSER] = { 151, BIG + 8192, 19, 5 };
    uint64_t t0 = md_now_realtime_ns();
    struct cp a[NSER], b[NSER];
    struct md_store *st;
    sqlite3 *db;

    (void)state;
    st = open_metering();
    /* first scrape of an initial target (policy baseline): checkpoints
     * only; the second bills (R1) 50 + 4096 + 2 + 0 = 4148 */
    scrape_and_flush(st, t0, v1, 1.5);
    scrape_and_flush(st, t0 + 1000000000ULL, v2, 1.5);
    md_store_close(st);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM ledger_keys"), NSER);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM ledger_state"), 1);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM ledger_series"), 0);
    assert_int_equal(read_cps(dbpath, a, NSER), NSER);
    for (int i = 0; i < NSER; i++) {
        char want[8];

        (void)snprintf(want, sizeof(want), "k%d", i);
        assert_string_equal(a[i].key, want);
        if (a[i].value != (uint64_t)v2[i] || a[i].ts_ns != t0 + 1000000000ULL ||
            a[i].has_created != (i == 2) || (i == 2 && a[i].created != 1.5))
            fail_msg("%s: got value %llu ts %llu created %d/%g, want %llu %llu %d/1.5", a[i].key,
                (unsigned long long)a[i].value, (unsigned long long)a[i].ts_ns,
                a[i].has_created, a[i].created, (unsigned long long)(uint64_t)v2[i],
                (unsigned long long)(t0 + 1000000000ULL), i == 2);
    }

    /* the same state as 002 stored it: one ledger_series row per series
     * (values >= 2^63 as negative integers), the new rows gone */
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA foreign_keys=ON; BEGIN; DELETE FROM ledger_keys; "
        "DELETE FROM ledger_state", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < NSER; i++) {
        sqlite3_stmt *s;

        assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO ledger_series(target_id, key, "
            "value, ts_ns, has_created, created) VALUES (1, ?1, ?2, ?3, ?4, ?5)", -1, &s, NULL),
            SQLITE_OK);
        sqlite3_bind_blob(s, 1, a[i].key, (int)strlen(a[i].key), SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)a[i].value);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)a[i].ts_ns);
        sqlite3_bind_int(s, 4, a[i].has_created);
        sqlite3_bind_double(s, 5, a[i].created);
        assert_int_equal(sqlite3_step(s), SQLITE_DONE);
        sqlite3_finalize(s);
    }
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    /* the next start converts them: the same checkpoints, no old rows */
    st = open_metering();
    md_store_close(st);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM ledger_series"), 0);
    assert_int_equal(read_cps(dbpath, b, NSER), NSER);
    for (int i = 0; i < NSER; i++)
        if (strcmp(a[i].key, b[i].key) != 0 || a[i].value != b[i].value ||
            a[i].ts_ns != b[i].ts_ns || a[i].has_created != b[i].has_created ||
            a[i].created != b[i].created)
            fail_msg("converted %s: got %llu/%llu/%d/%g, want %llu/%llu/%d/%g", b[i].key,
                (unsigned long long)b[i].value, (unsigned long long)b[i].ts_ns,
                b[i].has_created, b[i].created, (unsigned long long)a[i].value,
                (unsigned long long)a[i].ts_ns, a[i].has_created, a[i].created);

    /* and bills exactly from them after a restart: 1 + 4096 + 10 + 5;
     * k2's _created is unchanged, so no reset */
    assert_int_equal(sql_int(dbpath, "SELECT sum(tokens) FROM usage_hourly"), 4148);
    st = open_metering();
    scrape_and_flush(st, t0 + 2000000000ULL, v3, 1.5);
    md_store_close(st);
    assert_int_equal(sql_int(dbpath, "SELECT sum(tokens) FROM usage_hourly"), 4148 + 4112);
    assert_int_equal(sql_int(dbpath, "SELECT sum(tokens) FROM usage_hourly WHERE dim_id IN "
        "(SELECT id FROM dims WHERE model = 'm1')"), 8192);
}

/* one scrape of target "t1" with n series, each its own model m<i> (so its
 * own dims row), value mult * (i + 1) */
static struct md_batch *
make_wide_batch(uint64_t scrape_ns, int n, double mult)
{
    struct md_batch *b = md_batch_new("http://t1/metrics", 1, scrape_ns);

    assert_non_null(b);
    for (int i = 0; i < n; i++) {
        char key[16], model[16];
        const char *dims[MD_DIM_COUNT] = { "c", "ns", "d", model, "p", "chat", "input" };
        size_t lens[MD_DIM_COUNT];

        (void)snprintf(key, sizeof(key), "k%d", i);
        (void)snprintf(model, sizeof(model), "m%d", i);
        for (int d = 0; d < MD_DIM_COUNT; d++)
            lens[d] = strlen(dims[d]);
        assert_int_equal(md_batch_add(b, key, strlen(key), dims, lens, MD_KIND_TOKENS,
            mult * (i + 1), 0, 0, 0, 0.0, 0), MD_OK);
    }
    return b;
}

/* The dims memo starts small and doubles (512 slots up to 4096 for 2,000
 * tuples): every tuple keeps its own dims row and its own usage, whether
 * its id came from an insert, from the memo before a doubling or after. */
static void
test_dims_memo_grows(void **state)
{
    enum { WIDE = 2000 };
    uint64_t t0 = md_now_realtime_ns();
    struct md_store *st = NULL;
    struct md_err err = {0};

    (void)state;
    if (md_store_open(dbpath, 1000, &st, &err) != MD_OK ||
        md_store_ledger_init(st, 4 * WIDE, 0, 0, &err) != MD_OK ||
        md_store_writer_start(st, &err) != MD_OK)
        fail_msg("open: %s", err.msg);
    /* baseline, then two scrapes that bill i + 1 each; the second one's
     * ids come from the memo as it stands after the doublings */
    for (int k = 1; k <= 3; k++) {
        assert_int_equal(md_store_submit_batch(st,
            make_wide_batch(t0 + (uint64_t)k * 1000000000ULL, WIDE, k)), MD_OK);
        assert_int_equal(md_store_flush(st), MD_OK);
    }
    md_store_close(st);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM dims"), WIDE);
    assert_int_equal(sql_int(dbpath, "SELECT count(DISTINCT model) FROM dims"), WIDE);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM (SELECT d.model, sum(u.tokens) AS t "
        "FROM usage_hourly u JOIN dims d ON d.id = u.dim_id GROUP BY d.model)"), WIDE);
    assert_int_equal(sql_int(dbpath, "SELECT count(*) FROM (SELECT d.model, sum(u.tokens) AS t "
        "FROM usage_hourly u JOIN dims d ON d.id = u.dim_id GROUP BY d.model) "
        "WHERE t != 2 * (CAST(substr(model, 2) AS INTEGER) + 1)"), 0);
    assert_int_equal(sql_int(dbpath, "SELECT sum(tokens) FROM usage_hourly"),
        (int64_t)WIDE * (WIDE + 1));
}

/* A kill -9 just before COMMIT loses the drain whole (usage and
 * checkpoints), just after it keeps it whole; either way the next scrape
 * after the restart makes the total exact: 4148 + 4112 (see above). */
static void
test_kill_around_commit(void **state)
{
    static const double v1[NSER] = { 100, BIG, 7, 0 };
    static const double v2[NSER] = { 150, BIG + 4096, 9, 0 };
    static const double v3[NSER] = { 151, BIG + 8192, 19, 5 };
    static const struct {
        const char *fp;
        int64_t     usage_after_kill;
        uint64_t    cp0_after_kill;     /* k0's checkpoint */
    } cases[] = {
        { "before_commit:2", 0, 100 },
        { "after_commit:2", 4148, 150 },
    };
    uint64_t t0 = md_now_realtime_ns();

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct cp cps[NSER];
        struct md_store *st;
        int status = 0;
        pid_t pid;

        (void)snprintf(dbpath, sizeof(dbpath), "%s/kill%zu.db", dir, c);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            /* the child: no cmocka assertions here, exit codes only */
            struct md_store *cst = NULL;
            struct md_err err = {0};

            setenv("MD_FAILPOINT", cases[c].fp, 1);
            if (md_store_open(dbpath, 1000, &cst, &err) != MD_OK ||
                md_store_ledger_init(cst, 1000, 0, 0, &err) != MD_OK ||
                md_store_writer_start(cst, &err) != MD_OK)
                _exit(2);
            (void)md_store_submit_batch(cst, make_batch(t0, v1, 1.5));
            (void)md_store_flush(cst);
            (void)md_store_submit_batch(cst, make_batch(t0 + 1000000000ULL, v2, 1.5));
            (void)md_store_flush(cst);
            _exit(3);       /* the failpoint did not fire */
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 137)
            fail_msg("%s: child status %d, want exit 137", cases[c].fp, status);
        if (sql_int(dbpath, "SELECT coalesce(sum(tokens), 0) FROM usage_hourly") !=
            cases[c].usage_after_kill)
            fail_msg("%s: usage after the kill %lld, want %lld", cases[c].fp,
                (long long)sql_int(dbpath, "SELECT coalesce(sum(tokens), 0) FROM usage_hourly"),
                (long long)cases[c].usage_after_kill);
        assert_int_equal(read_cps(dbpath, cps, NSER), NSER);
        if (cps[0].value != cases[c].cp0_after_kill)
            fail_msg("%s: k0 checkpoint %llu, want %llu", cases[c].fp,
                (unsigned long long)cps[0].value, (unsigned long long)cases[c].cp0_after_kill);
        st = open_metering();
        scrape_and_flush(st, t0 + 2000000000ULL, v3, 1.5);
        md_store_close(st);
        if (sql_int(dbpath, "SELECT sum(tokens) FROM usage_hourly") != 4148 + 4112)
            fail_msg("%s: total after the restart %lld, want %d", cases[c].fp,
                (long long)sql_int(dbpath, "SELECT sum(tokens) FROM usage_hourly"), 4148 + 4112);
    }
}

/* A stored state that does not add up is refused at start, loudly. */
static void
test_corrupt_state_refused(void **state)
{
    static const double v1[NSER] = { 100, 5, 7, 0 };
    static const struct {
        const char *sql;
        const char *want;       /* in the error */
    } cases[] = {
        { "INSERT INTO ledger_keys VALUES (1, 9, X'6b39')", "slot 9 has no state" },
        { "UPDATE ledger_state SET state = X'02'", "not format 1" },
        { "UPDATE ledger_state SET state = CAST(state || X'00' AS BLOB)", "not format 1" },
        { "DELETE FROM ledger_keys WHERE slot = 1", "slots in use but 3 keys" },
    };

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct md_store *st = NULL;
        struct md_err err = {0};
        sqlite3 *db;

        (void)snprintf(dbpath, sizeof(dbpath), "%s/corrupt%zu.db", dir, c);
        st = open_metering();
        scrape_and_flush(st, md_now_realtime_ns(), v1, 1.5);
        md_store_close(st);
        assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
        if (sqlite3_exec(db, cases[c].sql, NULL, NULL, NULL) != SQLITE_OK)
            fail_msg("%s: %s", cases[c].sql, sqlite3_errmsg(db));
        sqlite3_close(db);
        assert_int_equal(md_store_open(dbpath, 1000, &st, &err), MD_OK);
        assert_int_equal(md_store_ledger_init(st, 1000, 0, 0, &err), MD_EPARSE);
        if (strstr(err.msg, cases[c].want) == NULL)
            fail_msg("%s: error \"%s\", want it to say \"%s\"", cases[c].sql, err.msg,
                cases[c].want);
        md_store_close(st);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_from_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_is_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_needs_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_state_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dims_memo_grows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_around_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_state_refused, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
