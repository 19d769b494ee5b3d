/* store_query.c: read-side queries beyond the usage API: the tenant
 * restriction shared by every usage query, and the Cost Management usage
 * query.  Runs on HTTP threads through their read-only connections; no state
 * of its own.
 *
 * Invariant: every query that returns usage rows appends the tenant clause,
 * so a tenant's view is enforced in SQL, below the HTTP layer: a row of
 * another tenant never reaches the renderer. */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
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

/* ---- Cost Management usage ----
 *
 * SQLite groups by sorting, and a month of a large installation is millions
 * of hourly rows: sorting them (or joining each to dims through an index)
 * costs several times the scan itself.  So the rows are read once, in
 * primary-key order (hour_s), and summed here per (dim, bucket) in a hash
 * table; the few thousand sums are then mapped to their (cluster,
 * namespace) and merged after a sort.  Every filter, the tenant's included,
 * stays in SQL: unselective ones (token_type only) as an IN over dims, and
 * selective ones (cluster, namespace, tenant) drive the query from dims
 * through the usage_hourly_dim index.  Limits: MD_CM_GROUPS_MAX (dim,
 * bucket) sums, else MD_ELIMIT. */

struct sum_ent {
    int64_t  dim_id;
    int64_t  bucket_s;
    uint64_t tokens;
    int      used;
};

struct sums {
    struct sum_ent *v;
    size_t          cap, count;     /* cap: a power of two */
};

struct dim_ent {
    int64_t id;
    char   *cluster, *namespace;
};

struct group {
    int64_t     bucket_s;
    const char *cluster, *namespace;
    uint64_t    tokens;
};

static size_t
sum_slot(const struct sums *h, int64_t dim, int64_t b)
{
    uint64_t x = (uint64_t)dim * 0x9e3779b97f4a7c15ULL ^ (uint64_t)b * 0xc2b2ae3d27d4eb4fULL;

    return (size_t)(x ^ (x >> 29)) & (h->cap - 1);
}

static int
sums_add(struct sums *h, int64_t dim, int64_t b, uint64_t tokens)
{
    size_t i;

    if ((h->count + 1) * 2 > h->cap) {
        struct sums n = { NULL, h->cap ? h->cap * 2 : 1024, 0 };

        if (h->count + 1 > MD_CM_GROUPS_MAX)
            return MD_ELIMIT;
        n.v = md_calloc(n.cap, sizeof(*n.v));
        if (n.v == NULL)
            return MD_ENOMEM;
        for (size_t j = 0; j < h->cap; j++) {
            if (!h->v[j].used)
                continue;
            i = sum_slot(&n, h->v[j].dim_id, h->v[j].bucket_s);
            while (n.v[i].used)
                i = (i + 1) & (n.cap - 1);
            n.v[i] = h->v[j];
            n.count++;
        }
        md_free(h->v);
        *h = n;
    }
    i = sum_slot(h, dim, b);
    while (h->v[i].used && (h->v[i].dim_id != dim || h->v[i].bucket_s != b))
        i = (i + 1) & (h->cap - 1);
    if (!h->v[i].used) {
        h->v[i].used = 1;
        h->v[i].dim_id = dim;
        h->v[i].bucket_s = b;
        h->count++;
    }
    return md_add_u64(h->v[i].tokens, tokens, &h->v[i].tokens);
}

/* Month starts from the month of from_s up to to_s (at most 14 for 366
 * days); months[n] = to_s closes the last. */
static int
month_starts(int64_t from_s, int64_t to_s, int64_t *months, size_t max, size_t *n)
{
    char d[16];
    struct md_err e = {0};
    int64_t t;

    md_fmt_date(from_s, d, sizeof(d));
    d[8] = '0';
    d[9] = '1';
    if (md_parse_time(d, 10, &t, &e) != MD_OK)
        return MD_EPARSE;
    *n = 0;
    while (t < to_s) {
        int y = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
        int m = (d[5] - '0') * 10 + (d[6] - '0') + 1;

        if (*n + 1 >= max)
            return MD_ELIMIT;
        months[(*n)++] = t;
        if (m == 13) {
            m = 1;
            y++;
        }
        (void)snprintf(d, sizeof(d), "%04d-%02d-01", y % 10000, m);
        if (md_parse_time(d, 10, &t, &e) != MD_OK)
            return MD_EPARSE;
    }
    months[*n] = to_s;
    return MD_OK;
}

static int
cmp_dim(const void *a, const void *b)
{
    int64_t x = ((const struct dim_ent *)a)->id, y = ((const struct dim_ent *)b)->id;

    return x < y ? -1 : x > y;
}

static int
cmp_group(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    int c;

    if (x->bucket_s != y->bucket_s)
        return x->bucket_s < y->bucket_s ? -1 : 1;
    c = strcmp(x->cluster ? x->cluster : "", y->cluster ? y->cluster : "");
    if (c != 0)
        return c;
    return strcmp(x->namespace ? x->namespace : "", y->namespace ? y->namespace : "");
}

/* " AND ..." for the dims filters of q; binds from *bind in the same order
 * as bind_dim_filters. */
static void
dim_filters_sql(struct md_buf *sql, const struct md_cm_query *q, int *bind)
{
    if (q->cluster != NULL)
        (void)md_buf_printf(sql, " AND d.cluster = ?%d", (*bind)++);
    if (q->namespace != NULL)
        (void)md_buf_printf(sql, " AND d.namespace = ?%d", (*bind)++);
    if (q->token_type != NULL)
        (void)md_buf_printf(sql, " AND d.token_type = ?%d", (*bind)++);
    md_store_tenant_sql(sql, &q->tenant, bind);
}

static void
bind_dim_filters(sqlite3_stmt *s, const struct md_cm_query *q, int *bind)
{
    if (q->cluster != NULL)
        sqlite3_bind_text(s, (*bind)++, q->cluster, -1, SQLITE_STATIC);
    if (q->namespace != NULL)
        sqlite3_bind_text(s, (*bind)++, q->namespace, -1, SQLITE_STATIC);
    if (q->token_type != NULL)
        sqlite3_bind_text(s, (*bind)++, q->token_type, -1, SQLITE_STATIC);
    md_store_tenant_bind(s, &q->tenant, bind);
}

int
md_store_query_cm(struct md_store *st, const struct md_cm_query *q, md_cm_row_fn *fn,
    void *arg, uint64_t *total, struct md_err *err)
{
    struct md_buf sql;
    struct sums h = {0};
    struct dim_ent *dims = NULL;
    struct group *g = NULL;
    size_t ndims = 0, cdims = 0, ng = 0, nmonths = 0;
    int64_t months[48];
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    int selective = q->cluster != NULL || q->namespace != NULL || q->tenant.restricted;
    int rc = md_store_reader_db(st, &db, err), bind = 3, step;

    if (rc != MD_OK)
        return rc;
    md_buf_init(&sql, MD_STORE_SQL_MAX);
    if (q->step == MD_STEP_MONTH &&
        month_starts(q->from_s, q->to_s, months, sizeof(months) / sizeof(months[0]),
            &nmonths) != MD_OK) {
        rc = md_err_set(err, MD_ELIMIT, "month buckets: range too long");
        goto out;
    }
    if (q->step != MD_STEP_DAY && q->step != MD_STEP_WEEK && q->step != MD_STEP_MONTH) {
        rc = md_err_set(err, MD_EPARSE, "step: unsupported");
        goto out;
    }
    /* 1: the sums per (dim, bucket) */
    if (selective) {
        (void)md_buf_puts(&sql, "SELECT u.dim_id, u.hour_s, u.tokens FROM dims d "
            "CROSS JOIN usage_hourly u ON u.dim_id = d.id "
            "WHERE u.hour_s >= ?1 AND u.hour_s < ?2");
        dim_filters_sql(&sql, q, &bind);
    } else {
        (void)md_buf_puts(&sql, "SELECT u.dim_id, u.hour_s, u.tokens FROM usage_hourly u "
            "WHERE u.hour_s >= ?1 AND u.hour_s < ?2");
        if (q->token_type != NULL)
            (void)md_buf_printf(&sql, " AND u.dim_id IN (SELECT d.id FROM dims d "
                "WHERE d.token_type = ?%d)", bind++);
    }
    if (sqlite3_prepare_v2(db, sql.data, -1, &s, NULL) != SQLITE_OK) {
        rc = md_err_set(err, MD_EDB, "cost usage query: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(s, 1, q->from_s);
    sqlite3_bind_int64(s, 2, q->to_s);
    bind = 3;
    bind_dim_filters(s, q, &bind);
    {
        size_t mi = 0;

        while ((step = sqlite3_step(s)) == SQLITE_ROW) {
            int64_t t = sqlite3_column_int64(s, 1), b;
            int64_t tok = sqlite3_column_int64(s, 2);

            if (tok <= 0)
                continue;
            if (q->step == MD_STEP_DAY) {
                b = t - t % 86400;
            } else if (q->step == MD_STEP_WEEK) {
                /* 1970-01-05 (345600) was a Monday */
                b = ((t - 345600) / 604800) * 604800 + 345600;
            } else {
                /* rows come in hour_s order in the scan, not in the
                 * dims-driven join: search from the last month found */
                if (mi >= nmonths || t < months[mi])
                    mi = 0;
                while (mi + 1 < nmonths && t >= months[mi + 1])
                    mi++;
                b = months[mi];
            }
            rc = sums_add(&h, sqlite3_column_int64(s, 0), b, (uint64_t)tok);
            if (rc != MD_OK) {
                rc = md_err_set(err, rc, rc == MD_ELIMIT ? "more than %d groups"
                    : "out of memory or 64-bit overflow", MD_CM_GROUPS_MAX);
                goto out;
            }
        }
        if (step != SQLITE_DONE) {
            rc = md_err_set(err, MD_EDB, "cost usage query: %s", sqlite3_errmsg(db));
            goto out;
        }
    }
    sqlite3_finalize(s);
    s = NULL;
    /* 2: the dims the sums refer to (same filters: a dim outside them is
     * never looked up) */
    md_buf_reset(&sql);
    (void)md_buf_puts(&sql, "SELECT d.id, d.cluster, d.namespace FROM dims d WHERE 1");
    bind = 1;
    dim_filters_sql(&sql, q, &bind);
    if (sqlite3_prepare_v2(db, sql.data, -1, &s, NULL) != SQLITE_OK) {
        rc = md_err_set(err, MD_EDB, "cost usage dims: %s", sqlite3_errmsg(db));
        goto out;
    }
    bind = 1;
    bind_dim_filters(s, q, &bind);
    while (h.count > 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
        if (ndims == cdims) {
            size_t nc = cdims ? cdims * 2 : 256;
            struct dim_ent *nd = md_realloc(dims, nc * sizeof(*nd));

            if (nd == NULL) {
                rc = md_err_set(err, MD_ENOMEM, "out of memory");
                goto out;
            }
            dims = nd;
            cdims = nc;
        }
        dims[ndims].id = sqlite3_column_int64(s, 0);
        dims[ndims].cluster = md_strdup((const char *)sqlite3_column_text(s, 1));
        dims[ndims].namespace = md_strdup((const char *)sqlite3_column_text(s, 2));
        ndims++;
        if (dims[ndims - 1].cluster == NULL || dims[ndims - 1].namespace == NULL) {
            rc = md_err_set(err, MD_ENOMEM, "out of memory");
            goto out;
        }
    }
    if (ndims > 1)
        qsort(dims, ndims, sizeof(*dims), cmp_dim);
    /* 3: group per (bucket, cluster?, namespace?), sort, merge, page */
    if (h.count > 0) {
        g = md_calloc(h.count, sizeof(*g));
        if (g == NULL) {
            rc = md_err_set(err, MD_ENOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < h.cap; i++) {
        struct dim_ent key, *d;

        if (!h.v[i].used)
            continue;
        key.id = h.v[i].dim_id;
        d = ndims ? bsearch(&key, dims, ndims, sizeof(*dims), cmp_dim) : NULL;
        if (d == NULL)
            continue;      /* filtered out (or a dim without a row) */
        g[ng].bucket_s = h.v[i].bucket_s;
        g[ng].cluster = q->by_cluster ? d->cluster : NULL;
        g[ng].namespace = q->by_namespace ? d->namespace : NULL;
        g[ng].tokens = h.v[i].tokens;
        ng++;
    }
    if (ng > 1)
        qsort(g, ng, sizeof(*g), cmp_group);
    {
        size_t out_n = 0;

        for (size_t i = 0; i < ng; ) {
            struct md_cm_row r = {0};
            size_t j = i + 1;

            r.bucket_s = g[i].bucket_s;
            r.cluster = g[i].cluster;
            r.namespace = g[i].namespace;
            r.tokens = g[i].tokens;
            while (j < ng && cmp_group(&g[i], &g[j]) == 0) {
                if (md_add_u64(r.tokens, g[j].tokens, &r.tokens) != MD_OK) {
                    rc = md_err_set(err, MD_ELIMIT, "tokens overflow 64 bits");
                    goto out;
                }
                j++;
            }
            if (out_n >= q->offset && out_n - q->offset < q->limit) {
                rc = fn(arg, &r);
                if (rc != MD_OK)
                    goto out;
            }
            out_n++;
            i = j;
        }
        *total = out_n;
    }
out:
    sqlite3_finalize(s);
    md_buf_fini(&sql);
    md_free(h.v);
    md_free(g);
    for (size_t i = 0; i < ndims; i++) {
        md_free(dims[i].cluster);
        md_free(dims[i].namespace);
    }
    md_free(dims);
    return rc;
}

/* ---- Cost Management: the priced cost of stored bill lines ---- */

int
md_store_cm_cost(void *arg, const struct md_cm_cost_key *k, int64_t *cost_nanos,
    char currency[8])
{
    struct md_store *st = arg;
    struct md_err err = {0};
    struct md_buf sql;
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    int64_t sum = 0;
    int rc, bind = 3, step, rows = 0;
    char cur[8] = "";

    rc = md_store_reader_db(st, &db, &err);
    if (rc != MD_OK)
        return rc;
    md_buf_init(&sql, MD_STORE_SQL_MAX);
    /* days whose lines are stored (closed, finalized, corrections booked on
     * them); open days have no stored lines yet, so their cost shows once
     * the day closes */
    (void)md_buf_puts(&sql, "SELECT currency, sum(amount) FROM bill_lines d WHERE d.day >= ?1 "
        "AND d.day < ?2 AND d.pricing_model != 'unpriced'");
    if (k->cluster != NULL)
        (void)md_buf_printf(&sql, " AND d.cluster = ?%d", bind++);
    if (k->namespace != NULL)
        (void)md_buf_printf(&sql, " AND d.namespace = ?%d", bind++);
    if (k->token_type != NULL)
        (void)md_buf_printf(&sql, " AND d.token_type = ?%d", bind++);
    if (k->tenant != NULL)
        md_store_tenant_sql(&sql, k->tenant, &bind);
    if (md_buf_puts(&sql, " GROUP BY currency") != MD_OK) {
        md_buf_fini(&sql);
        return MD_ELIMIT;
    }
    if (sqlite3_prepare_v2(db, sql.data, -1, &s, NULL) != SQLITE_OK) {
        md_buf_fini(&sql);
        return MD_EDB;
    }
    md_buf_fini(&sql);
    sqlite3_bind_int64(s, 1, k->from_s / 86400);
    sqlite3_bind_int64(s, 2, (k->to_s + 86399) / 86400);
    bind = 3;
    if (k->cluster != NULL)
        sqlite3_bind_text(s, bind++, k->cluster, -1, SQLITE_STATIC);
    if (k->namespace != NULL)
        sqlite3_bind_text(s, bind++, k->namespace, -1, SQLITE_STATIC);
    if (k->token_type != NULL)
        sqlite3_bind_text(s, bind++, k->token_type, -1, SQLITE_STATIC);
    if (k->tenant != NULL)
        md_store_tenant_bind(s, k->tenant, &bind);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(s, 0);

        rows++;
        (void)snprintf(cur, sizeof(cur), "%s", c ? c : "");
        sum = sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);
    if (step != SQLITE_DONE)
        return MD_EDB;
    /* nothing rated yet, or several currencies in one item: no single cost */
    if (rows != 1)
        return rows == 0 ? MD_ENOTFOUND : MD_ELIMIT;
    *cost_nanos = sum;
    memcpy(currency, cur, sizeof(cur));
    return MD_OK;
}
