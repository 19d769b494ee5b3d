/* test_store.c: migrations from empty, restart is a no-op, a newer schema is
 * refused and left untouched, the writer commits and flushes. */
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
#include <unistd.h>

#include "store.h"

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
    md_store_close(st);
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
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
