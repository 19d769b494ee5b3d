/* store_query.c: read-side queries beyond the usage API: the tenant
 * restriction shared by every usage query, and the Cost Management usage
 * query.  Runs on HTTP threads through their read-only connections; no state
 * of its own.
 *
 * Invariant: every query that returns usage rows appends the tenant clause,
 * so a tenant's view is enforced in SQL, below the HTTP layer: a row of
 * another tenant never reaches the renderer. */
#include "store_int.h"

#include <string.h>

#include "util.h"

void
md_store_tenant_sql(struct md_buf *sql, const struct md_tenant_filter *t, int *bind)
{
    if (!t->restricted)
        return;
    if (t->ns_count == 0 && t->dept_count == 0) {
        (void)md_buf_puts(sql, " AND 0");
        return;
    }
    (void)md_buf_puts(sql, " AND (");
    if (t->ns_count > 0) {
        (void)md_buf_puts(sql, "d.namespace IN (");
        for (size_t i = 0; i < t->ns_count; i++)
            (void)md_buf_printf(sql, "%s?%d", i ? "," : "", (*bind)++);
        (void)md_buf_puts(sql, ")");
    }
    if (t->dept_count > 0) {
        (void)md_buf_puts(sql, t->ns_count > 0 ? " OR d.department IN (" : "d.department IN (");
        for (size_t i = 0; i < t->dept_count; i++)
            (void)md_buf_printf(sql, "%s?%d", i ? "," : "", (*bind)++);
        (void)md_buf_puts(sql, ")");
    }
    (void)md_buf_puts(sql, ")");
}

void
md_store_tenant_bind(sqlite3_stmt *s, const struct md_tenant_filter *t, int *bind)
{
    if (!t->restricted)
        return;
    for (size_t i = 0; i < t->ns_count; i++)
        sqlite3_bind_text(s, (*bind)++, t->ns[i], -1, SQLITE_STATIC);
    for (size_t i = 0; i < t->dept_count; i++)
        sqlite3_bind_text(s, (*bind)++, t->dept[i], -1, SQLITE_STATIC);
}

/* Month starts between from_s and to_s as a CASE over at most 13 bounds:
 * cheaper per row than strftime(), and a range is at most 366 days. */
static int
month_case(struct md_buf *sql, int64_t from_s, int64_t to_s)
{
    char d[16];
    int64_t start;
    struct md_err e = {0};
    int n = 0;

    md_fmt_date(from_s, d, sizeof(d));
    d[8] = '0';
    d[9] = '1';
    if (md_parse_time(d, 10, &start, &e) != MD_OK)
        return MD_EPARSE;
    /* "CASE WHEN .. ELSE .. END"; the first WHEN is written with the
     * first bound, so a range inside one month is the bare constant */
    for (;;) {
        int64_t next;
        int y = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
        int m = (d[5] - '0') * 10 + (d[6] - '0');

        if (++n > 40)
            return MD_ELIMIT;
        m++;
        if (m == 13) {
            m = 1;
            y++;
        }
        d[0] = (char)('0' + y / 1000);
        d[1] = (char)('0' + y / 100 % 10);
        d[2] = (char)('0' + y / 10 % 10);
        d[3] = (char)('0' + y % 10);
        d[5] = (char)('0' + m / 10);
        d[6] = (char)('0' + m % 10);
        if (md_parse_time(d, 10, &next, &e) != MD_OK)
            return MD_EPARSE;
        if (next >= to_s) {
            if (n == 1)     /* not a bare literal: GROUP BY would read a column number */
                (void)md_buf_printf(sql, "(%lld + 0 * u.hour_s)", (long long)start);
            else
                (void)md_buf_printf(sql, " ELSE %lld END", (long long)start);
            return MD_OK;
        }
        (void)md_buf_printf(sql, "%s WHEN u.hour_s < %lld THEN %lld", n == 1 ? "CASE" : "",
            (long long)next, (long long)start);
        start = next;
    }
}

int
md_store_query_cm(struct md_store *st, const struct md_cm_query *q, md_cm_row_fn *fn,
    void *arg, uint64_t *total, struct md_err *err)
{
    struct md_buf sql, groups;
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    uint64_t n = 0, seen = 0;
    int rc = md_store_reader_db(st, &db, err), bind = 3, step;

    if (rc != MD_OK)
        return rc;
    md_buf_init(&sql, MD_STORE_SQL_MAX);
    md_buf_init(&groups, 256);
    if (q->by_cluster)
        (void)md_buf_puts(&groups, ", d.cluster");
    if (q->by_namespace)
        (void)md_buf_puts(&groups, ", d.namespace");
    (void)md_buf_puts(&sql, "SELECT ");
    switch (q->step) {
    case MD_STEP_DAY:
        (void)md_buf_puts(&sql, "(u.hour_s / 86400) * 86400");
        break;
    case MD_STEP_WEEK:
        /* 1970-01-05 (345600) was a Monday; hour_s >= 0 keeps the division exact */
        (void)md_buf_puts(&sql, "((u.hour_s - 345600) / 604800) * 604800 + 345600");
        break;
    case MD_STEP_MONTH:
        rc = month_case(&sql, q->from_s, q->to_s);
        if (rc != MD_OK) {
            rc = md_err_set(err, rc, "month buckets: bad range");
            goto out;
        }
        break;
    default:
        rc = md_err_set(err, MD_EPARSE, "step: unsupported");
        goto out;
    }
    /* the window count gives the number of groups on every page that has
     * rows; an empty page past the end needs the count query below */
    (void)md_buf_printf(&sql, " AS b%s, sum(u.tokens) AS t, count(*) OVER () "
        "FROM usage_hourly u JOIN dims d ON d.id = u.dim_id "
        "WHERE u.hour_s >= ?1 AND u.hour_s < ?2",
        groups.len ? groups.data : "");
    if (q->cluster != NULL)
        (void)md_buf_printf(&sql, " AND d.cluster = ?%d", bind++);
    if (q->namespace != NULL)
        (void)md_buf_printf(&sql, " AND d.namespace = ?%d", bind++);
    if (q->token_type != NULL)
        (void)md_buf_printf(&sql, " AND d.token_type = ?%d", bind++);
    md_store_tenant_sql(&sql, &q->tenant, &bind);
    (void)md_buf_printf(&sql, " GROUP BY b%s HAVING t > 0 ORDER BY b%s LIMIT ?%d OFFSET ?%d",
        groups.len ? groups.data : "", groups.len ? groups.data : "", bind, bind + 1);
    if (sqlite3_prepare_v2(db, sql.data, -1, &s, NULL) != SQLITE_OK) {
        rc = md_err_set(err, MD_EDB, "cost usage query: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(s, 1, q->from_s);
    sqlite3_bind_int64(s, 2, q->to_s);
    bind = 3;
    if (q->cluster != NULL)
        sqlite3_bind_text(s, bind++, q->cluster, -1, SQLITE_STATIC);
    if (q->namespace != NULL)
        sqlite3_bind_text(s, bind++, q->namespace, -1, SQLITE_STATIC);
    if (q->token_type != NULL)
        sqlite3_bind_text(s, bind++, q->token_type, -1, SQLITE_STATIC);
    md_store_tenant_bind(s, &q->tenant, &bind);
    sqlite3_bind_int64(s, bind, q->limit > INT64_MAX ? INT64_MAX : (int64_t)q->limit);
    sqlite3_bind_int64(s, bind + 1, q->offset > INT64_MAX ? INT64_MAX : (int64_t)q->offset);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        struct md_cm_row r = {0};
        int col = 1;

        r.bucket_s = sqlite3_column_int64(s, 0);
        if (q->by_cluster)
            r.cluster = (const char *)sqlite3_column_text(s, col++);
        if (q->by_namespace)
            r.namespace = (const char *)sqlite3_column_text(s, col++);
        r.tokens = (uint64_t)sqlite3_column_int64(s, col++);
        n = (uint64_t)sqlite3_column_int64(s, col);
        seen++;
        rc = fn(arg, &r);
        if (rc != MD_OK)
            goto out;
    }
    if (step != SQLITE_DONE) {
        rc = md_err_set(err, MD_EDB, "cost usage query: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (seen == 0 && q->offset > 0) {
        /* past the last page: count the groups without the window */
        sqlite3_finalize(s);
        s = NULL;
        md_buf_reset(&sql);
        (void)md_buf_printf(&sql, "SELECT count(*) FROM (SELECT 1 ");
        (void)md_buf_printf(&sql, "FROM usage_hourly u JOIN dims d ON d.id = u.dim_id "
            "WHERE u.hour_s >= ?1 AND u.hour_s < ?2");
        bind = 3;
        if (q->cluster != NULL)
            (void)md_buf_printf(&sql, " AND d.cluster = ?%d", bind++);
        if (q->namespace != NULL)
            (void)md_buf_printf(&sql, " AND d.namespace = ?%d", bind++);
        if (q->token_type != NULL)
            (void)md_buf_printf(&sql, " AND d.token_type = ?%d", bind++);
        md_store_tenant_sql(&sql, &q->tenant, &bind);
        rc = MD_OK;
        (void)md_buf_puts(&sql, " GROUP BY ");
        switch (q->step) {
        case MD_STEP_DAY:
            (void)md_buf_puts(&sql, "(u.hour_s / 86400)");
            break;
        case MD_STEP_WEEK:
            (void)md_buf_puts(&sql, "((u.hour_s - 345600) / 604800)");
            break;
        default:
            rc = month_case(&sql, q->from_s, q->to_s);
            break;
        }
        (void)md_buf_printf(&sql, "%s HAVING sum(u.tokens) > 0)", groups.len ? groups.data : "");
        if (rc != MD_OK || sqlite3_prepare_v2(db, sql.data, -1, &s, NULL) != SQLITE_OK) {
            rc = md_err_set(err, MD_EDB, "cost usage count: %s", sqlite3_errmsg(db));
            goto out;
        }
        sqlite3_bind_int64(s, 1, q->from_s);
        sqlite3_bind_int64(s, 2, q->to_s);
        bind = 3;
        if (q->cluster != NULL)
            sqlite3_bind_text(s, bind++, q->cluster, -1, SQLITE_STATIC);
        if (q->namespace != NULL)
            sqlite3_bind_text(s, bind++, q->namespace, -1, SQLITE_STATIC);
        if (q->token_type != NULL)
            sqlite3_bind_text(s, bind++, q->token_type, -1, SQLITE_STATIC);
        md_store_tenant_bind(s, &q->tenant, &bind);
        if (sqlite3_step(s) != SQLITE_ROW) {
            rc = md_err_set(err, MD_EDB, "cost usage count: %s", sqlite3_errmsg(db));
            goto out;
        }
        n = (uint64_t)sqlite3_column_int64(s, 0);
    }
    *total = n;
out:
    sqlite3_finalize(s);
    md_buf_fini(&sql);
    md_buf_fini(&groups);
    return rc;
}
