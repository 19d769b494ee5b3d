/* store_rating.c: the rater's SQL side.  Pricing revisions, milestones,
 * rating a (cluster, day) from usage_hourly, re-rating, corrections,
 * finalize, backfill and the bills query (rating.h has the rules).
 *
 * Threads: every write runs on the store's writer thread, either in a
 * md_store_call (its own SAVEPOINT inside the writer's transaction) or in
 * md_rating_tick (one BEGIN IMMEDIATE per (cluster, day)).  Reads use the
 * calling thread's read-only connection.  struct md_rating's current
 * pricing is a counted holder swapped under `mu`; the stats are atomics.
 *
 * Invariants: a day's stored lines are replaced only as a whole and only
 * while it is closed; finalized lines and corrections are never changed
 * (the schema's triggers enforce it too); for a finalized day, rated lines
 * plus corrections always equal its latest rating, so re-rating twice
 * books nothing the second time. */
#define MD_MODULE "rating"
#include "rating.h"
#include "usage_snapshot.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "money.h"
#include "pricing.h"
#include "store_priv.h"

#define UNPRICED      "unpriced"
#define NO_CURRENCY   "XXX"          /* ISO 4217: no currency involved */
#define DIFF_MAX      10000          /* changes listed by one diff */
#define REVISIONS_MAX 100000         /* revisions listed */
#define MILESTONES_MAX 200000        /* milestones listed */
#define TENANTS_MAX   1000000        /* tenants in a backfill report */

struct holder {
    struct md_pricing *p;            /* NULL: no revision yet */
    int64_t            rev;
    int                refs;         /* guarded by md_rating.mu */
};

struct md_rating {
    pthread_mutex_t mu;
    struct holder  *cur;
    uint64_t        grace_s;
    int64_t       (*now_fn)(void *);
    void           *now_arg;
    struct md_complaint tick_complaint;   /* writer thread */
    atomic_ullong   unpriced, days_rated, lines, corrections, revisions;
    atomic_int      ready;           /* pricing loaded: the tick may rate */
    /* /metrics cost counters (writer thread): the store's live aggregate;
     * the tick stages what each rating adds and commits with the rating */
    struct md_usnap_agg *agg;
    int             stage_cost;      /* set while the tick rates */
    int             agg_changed;     /* committed cost since the last take */
    /* statements of the hot writer path (md_rating_touch once per drain,
     * next_pending once per tick), prepared once on the store's writer
     * connection: parsing them cost ~180,000 instructions per call.
     * Writer thread only; finalized by md_rating_bind_db(r, NULL). */
    sqlite3        *cache_db;
    sqlite3_stmt   *cache[3];
};

enum { CACHE_TOUCH = 0, CACHE_PENDING_OPEN, CACHE_PENDING_DIRTY };

void
md_rating_bind_db(struct md_rating *r, sqlite3 *db)
{
    for (size_t i = 0; i < sizeof(r->cache) / sizeof(r->cache[0]); i++) {
        sqlite3_finalize(r->cache[i]);
        r->cache[i] = NULL;
    }
    r->cache_db = db;
}

void
md_rating_set_aggregate(struct md_rating *r, struct md_usnap_agg *agg)
{
    r->agg = agg;
}

int
md_rating_take_changed(struct md_rating *r)
{
    int c = r->agg_changed;

    r->agg_changed = 0;
    return c;
}

/* Stages sign * every line of b into the cost (and unpriced) counters. */
static void
stage_lines(struct md_rating *r, const char *cluster, const struct md_bill *b, int sign)
{
    if (!r->stage_cost || r->agg == NULL)
        return;
    for (size_t i = 0; i < b->count; i++) {
        const struct md_bill_line *l = &b->lines[i];
        const char *v[6] = {
            cluster, l->dims[MD_BILL_NAMESPACE], l->dims[MD_BILL_DEPARTMENT],
            l->dims[MD_BILL_MODEL], l->currency, NULL,
        };
        size_t n[6];

        for (int k = 0; k < 5; k++) {
            v[k] = v[k] ? v[k] : "";
            n[k] = strlen(v[k]);
        }
        if (l->priced && l->amount_nanos != 0)
            (void)md_usnap_agg_stage_cost(r->agg, v, n, sign * l->amount_nanos);
        /* unpriced tokens only ever add: a later price moves them to cost */
        if (!l->priced && sign > 0 && l->tokens > 0) {
            const char *u[6] = {
                cluster, v[1], v[2], v[3], "", l->dims[MD_BILL_TOKEN_TYPE],
            };
            size_t un[6];

            /* label order of md_usnap_label_names for the unpriced family;
             * bill lines merge providers, so provider stays empty */
            for (int k = 0; k < 6; k++) {
                u[k] = u[k] ? u[k] : "";
                un[k] = strlen(u[k]);
            }
            (void)md_usnap_agg_stage_unpriced(r->agg, u, un, (uint64_t)l->tokens);
        }
    }
}

static int
db_err(struct md_err *err, sqlite3 *db, const char *what)
{
    return md_err_set(err, MD_EDB, "%s: %s", what, sqlite3_errmsg(db));
}

static int
prep(sqlite3 *db, const char *sql, sqlite3_stmt **s, struct md_err *err)
{
    if (sqlite3_prepare_v2(db, sql, -1, s, NULL) != SQLITE_OK) {
        *s = NULL;
        return db_err(err, db, sql);
    }
    return MD_OK;
}

/* A cached statement when db is the bound writer connection (reset, not
 * finalized, after use: see done_cached), else a fresh one. */
static int
prep_cached(struct md_rating *r, sqlite3 *db, int slot, const char *sql, sqlite3_stmt **s,
    struct md_err *err)
{
    if (db == NULL || db != r->cache_db)
        return prep(db, sql, s, err);
    if (r->cache[slot] == NULL && sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT,
            &r->cache[slot], NULL) != SQLITE_OK) {
        r->cache[slot] = NULL;
        *s = NULL;
        return db_err(err, db, sql);
    }
    *s = r->cache[slot];
    return MD_OK;
}

static void
done_cached(struct md_rating *r, sqlite3_stmt *s)
{
    for (size_t i = 0; i < sizeof(r->cache) / sizeof(r->cache[0]); i++) {
        if (s != NULL && r->cache[i] == s) {
            sqlite3_reset(s);
            sqlite3_clear_bindings(s);
            return;
        }
    }
    sqlite3_finalize(s);
}

static int
exec(sqlite3 *db, const char *sql, struct md_err *err)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = md_err_set(err, MD_EDB, "%.40s: %s", sql, msg ? msg : sqlite3_errmsg(db));

        sqlite3_free(msg);
        return rc;
    }
    return MD_OK;
}

static const char *
col_text(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);

    return t ? t : "";
}

/* ---- the rater object ---- */

struct md_rating *
md_rating_new(uint64_t grace_s)
{
    struct md_rating *r = md_calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->grace_s = grace_s;
    r->cur = md_calloc(1, sizeof(*r->cur));
    if (r->cur == NULL) {
        md_free(r);
        return NULL;
    }
    r->cur->refs = 1;
    return r;
}

static void
holder_put(struct md_rating *r, struct holder *h)
{
    int last;

    pthread_mutex_lock(&r->mu);
    last = --h->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        md_pricing_free(h->p);
        md_free(h);
    }
}

static struct holder *
holder_get(struct md_rating *r)
{
    struct holder *h;

    pthread_mutex_lock(&r->mu);
    h = r->cur;
    h->refs++;
    pthread_mutex_unlock(&r->mu);
    return h;
}

/* Makes (p, rev) current; takes ownership of p. */
static int
holder_set(struct md_rating *r, struct md_pricing *p, int64_t rev)
{
    struct holder *h = md_calloc(1, sizeof(*h)), *old;

    if (h == NULL) {
        md_pricing_free(p);
        return MD_ENOMEM;
    }
    h->p = p;
    h->rev = rev;
    h->refs = 1;
    pthread_mutex_lock(&r->mu);
    old = r->cur;
    r->cur = h;
    pthread_mutex_unlock(&r->mu);
    holder_put(r, old);
    return MD_OK;
}

void
md_rating_free(struct md_rating *r)
{
    if (r == NULL)
        return;
    md_rating_bind_db(r, NULL);
    holder_put(r, r->cur);
    pthread_mutex_destroy(&r->mu);
    md_free(r);
}

void
md_rating_set_clock(struct md_rating *r, int64_t (*now_s)(void *), void *arg)
{
    r->now_fn = now_s;
    r->now_arg = arg;
}

static int64_t
now_s(struct md_rating *r)
{
    if (r->now_fn != NULL)
        return r->now_fn(r->now_arg);
    return (int64_t)(md_now_realtime_ns() / 1000000000ULL);
}

/* Days before this one are past their grace: end of day + grace <= now. */
static int32_t
close_before(struct md_rating *r)
{
    int64_t t = now_s(r) - (int64_t)r->grace_s;

    return (int32_t)((t < 0 ? 0 : t) / 86400);
}

int64_t
md_rating_revision(struct md_rating *r)
{
    int64_t v;

    pthread_mutex_lock(&r->mu);
    v = r->cur->rev;
    pthread_mutex_unlock(&r->mu);
    return v;
}

void
md_rating_get_stats(struct md_rating *r, struct md_rating_stats *out)
{
    out->unpriced_tokens_total = atomic_load(&r->unpriced);
    out->days_rated = atomic_load(&r->days_rated);
    out->lines_written = atomic_load(&r->lines);
    out->corrections_written = atomic_load(&r->corrections);
    out->revisions = atomic_load(&r->revisions);
}

int
md_rating_price_group(struct md_rating *r, const char *cluster, int32_t day,
    const char *namespace, const char *model, const char *provider,
    const uint64_t tokens[MD_TOK_TYPES], struct md_price_result *out, char currency[8],
    int64_t *revision, struct md_err *err)
{
    struct holder *h = holder_get(r);
    struct md_price_match m;
    int rc;

    memset(&m, 0, sizeof(m));
    m.item = -1;
    m.cache_included = 1;
    if (h->p != NULL)
        (void)md_pricing_lookup(h->p, cluster, day, provider, model, namespace, &m);
    rc = md_pricing_price(&m, tokens, out, err);
    (void)snprintf(currency, 8, "%s", m.currency ? m.currency : NO_CURRENCY);
    *revision = h->rev;
    holder_put(r, h);
    return rc;
}

/* ---- rating one (cluster, day) ---- */

struct rate_filter {
    const char *namespace, *department, *model, *token_type;
};

static int
add_group_lines(struct md_bill *out, const struct md_pricing *p, const char *cluster,
    int32_t day, const char *ns, const char *dept, const char *model, const char *provider,
    const uint64_t tokens[MD_TOK_TYPES], enum md_bill_status status, int64_t rev,
    uint64_t *unpriced, struct md_err *err)
{
    struct md_price_match m;
    struct md_price_result res;
    struct md_bill_line l;
    int any = 0, rc;

    for (int t = 0; t < MD_TOK_TYPES; t++)
        any |= tokens[t] != 0;
    if (!any)
        return MD_OK;
    memset(&m, 0, sizeof(m));
    m.item = -1;
    m.cache_included = 1;
    if (p != NULL)
        (void)md_pricing_lookup(p, cluster, day, provider, model, ns, &m);
    rc = md_pricing_price(&m, tokens, &res, err);
    if (rc != MD_OK)
        return rc;
    memset(&l, 0, sizeof(l));
    l.day = day;
    l.source_day = day;
    l.dims[MD_BILL_CLUSTER] = cluster;
    l.dims[MD_BILL_NAMESPACE] = ns;
    l.dims[MD_BILL_DEPARTMENT] = dept;
    l.dims[MD_BILL_MODEL] = model;
    l.status = status;
    l.revision = rev;
    for (size_t i = 0; i < res.line_count; i++) {
        const struct md_price_line *pl = &res.lines[i];

        if (pl->tokens > INT64_MAX)
            return md_err_set(err, MD_ELIMIT, "tokens of a line above 2^63");
        l.dims[MD_BILL_TOKEN_TYPE] = md_token_type_name(pl->token_type);
        l.tokens = (int64_t)pl->tokens;
        l.priced = pl->priced;
        l.unit_price_nanos = pl->priced ? pl->unit_price_nanos : 0;
        l.list_unit_price_nanos = pl->priced ? pl->list_unit_price_nanos : 0;
        l.amount_nanos = pl->priced ? pl->amount_nanos : 0;
        l.currency = m.currency ? m.currency : NO_CURRENCY;
        l.pricing_model = pl->priced && m.pricing_model ? m.pricing_model : UNPRICED;
        if (!pl->priced)
            *unpriced += pl->tokens;
        rc = md_bill_add(out, &l);
        if (rc != MD_OK)
            return md_err_set(err, rc, "bill: %s", rc == MD_ELIMIT ? "too many lines"
                                                                   : "out of memory");
    }
    return MD_OK;
}

/* Rates the usage of (cluster, day) under p into out (appended, then the
 * providers of a model merged).  Filters narrow the tenants (provisional
 * bills); token_type filters the lines after pricing. */
static int
rate_day(sqlite3 *db, const struct md_pricing *p, int64_t rev, const char *cluster,
    int32_t day, const struct rate_filter *f, enum md_bill_status status,
    struct md_bill *out, uint64_t *unpriced, struct md_err *err)
{
    char sql[1024];
    sqlite3_stmt *s = NULL;
    struct md_bill tmp;
    char key[4][1024];
    uint64_t tokens[MD_TOK_TYPES] = {0}, unp = 0;
    int have = 0, rc, step, bind = 4;

    /* sum per dims row first (integer keys), then order by the text key:
     * the rows of one (namespace, department, model, provider) arrive
     * together, token types in any order (several operations add up) */
    (void)snprintf(sql, sizeof(sql), f == NULL
        ? "SELECT d.namespace, d.department, d.model, d.provider, d.token_type, s.t FROM "
          "(SELECT dim_id, sum(tokens) AS t FROM usage_hourly WHERE hour_s >= ?2 AND "
          "hour_s < ?3 GROUP BY dim_id) s JOIN dims d ON d.id = s.dim_id WHERE d.cluster = ?1"
          "%s%s%s ORDER BY 1, 2, 3, 4"
        /* a tenant's provisional bill: its dims first (dims_namespace index) */
        : "SELECT d.namespace, d.department, d.model, d.provider, d.token_type, "
          "sum(u.tokens) FROM dims d JOIN usage_hourly u ON u.dim_id = d.id WHERE "
          "d.cluster = ?1 AND u.hour_s >= ?2 AND u.hour_s < ?3%s%s%s "
          "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4",
        f && f->namespace ? " AND d.namespace = ?4" : "",
        f && f->department ? (f->namespace ? " AND d.department = ?5" : " AND d.department = ?4")
                           : "",
        f && f->model ? " AND d.model = ?99" : "");
    rc = prep(db, sql, &s, err);
    if (rc != MD_OK)
        return rc;
    md_bill_init(&tmp, out->lines_max);
    sqlite3_bind_text(s, 1, cluster, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (int64_t)day * 86400);
    sqlite3_bind_int64(s, 3, (int64_t)(day + 1) * 86400);
    if (f && f->namespace)
        sqlite3_bind_text(s, bind++, f->namespace, -1, SQLITE_STATIC);
    if (f && f->department)
        sqlite3_bind_text(s, bind++, f->department, -1, SQLITE_STATIC);
    if (f && f->model)
        sqlite3_bind_text(s, 99, f->model, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        const char *k[4];
        const char *tt = col_text(s, 4);
        int64_t n = sqlite3_column_int64(s, 5);
        enum md_token_type t;
        int same = have;

        for (int i = 0; i < 4; i++) {
            k[i] = col_text(s, i);
            if (same && strcmp(k[i], key[i]) != 0)
                same = 0;
        }
        if (!same) {
            if (have) {
                rc = add_group_lines(&tmp, p, cluster, day, key[0], key[1], key[2], key[3],
                    tokens, status, rev, &unp, err);
                if (rc != MD_OK)
                    goto out;
            }
            for (int i = 0; i < 4; i++) {
                size_t l = strlen(k[i]);

                if (l >= sizeof(key[i])) {
                    rc = md_err_set(err, MD_ELIMIT, "dimension value longer than %zu bytes",
                        sizeof(key[i]) - 1);
                    goto out;
                }
                memcpy(key[i], k[i], l + 1);
            }
            memset(tokens, 0, sizeof(tokens));
            have = 1;
        }
        if (n <= 0)
            continue;
        if (md_token_type_parse(tt, strlen(tt), &t) == MD_OK) {
            tokens[t] += (uint64_t)n;
        } else if (strcmp(tt, "total") != 0) {
            /* a token type no price can name: unpriced, never dropped */
            struct md_bill_line l;
            struct md_price_match m;

            memset(&m, 0, sizeof(m));
            if (p != NULL)
                (void)md_pricing_lookup(p, cluster, day, key[3], key[2], key[0], &m);
            memset(&l, 0, sizeof(l));
            l.day = l.source_day = day;
            l.dims[MD_BILL_CLUSTER] = cluster;
            l.dims[MD_BILL_NAMESPACE] = key[0];
            l.dims[MD_BILL_DEPARTMENT] = key[1];
            l.dims[MD_BILL_MODEL] = key[2];
            l.dims[MD_BILL_TOKEN_TYPE] = tt;
            l.tokens = n;
            l.currency = m.currency ? m.currency : NO_CURRENCY;
            l.pricing_model = UNPRICED;
            l.status = status;
            l.revision = rev;
            unp += (uint64_t)n;
            rc = md_bill_add(&tmp, &l);
            if (rc != MD_OK) {
                rc = md_err_set(err, rc, "bill: too many lines");
                goto out;
            }
        }
    }
    if (step != SQLITE_DONE) {
        rc = db_err(err, db, "rate: usage");
        goto out;
    }
    if (have) {
        rc = add_group_lines(&tmp, p, cluster, day, key[0], key[1], key[2], key[3], tokens,
            status, rev, &unp, err);
        if (rc != MD_OK)
            goto out;
    }
    rc = md_bill_merge_lines(&tmp, err);
    for (size_t i = 0; i < tmp.count && rc == MD_OK; i++) {
        if (f && f->token_type && strcmp(tmp.lines[i].dims[MD_BILL_TOKEN_TYPE],
                f->token_type) != 0)
            continue;
        rc = md_bill_add(out, &tmp.lines[i]);
        if (rc != MD_OK)
            rc = md_err_set(err, rc, "bill: too many lines");
    }
    if (unpriced != NULL)
        *unpriced += unp;
out:
    sqlite3_finalize(s);
    md_bill_fini(&tmp);
    return rc;
}

/* Stored lines of (cluster, day): kind 'rated' of that day, plus (all)
 * corrections of it as source_day.  Amounts of corrections are kept. */
static int
load_stored(sqlite3 *db, const char *cluster, int32_t day, int with_corrections,
    struct md_bill *out, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = prep(db, with_corrections
        ? "SELECT day, namespace, department, model, token_type, tokens, unit_price, "
          "list_unit_price, amount, currency, pricing_model, pricing_revision, kind, "
          "source_day FROM bill_lines WHERE cluster = ?1 AND source_day = ?2"
        : "SELECT day, namespace, department, model, token_type, tokens, unit_price, "
          "list_unit_price, amount, currency, pricing_model, pricing_revision, kind, "
          "source_day FROM bill_lines WHERE cluster = ?1 AND source_day = ?2 AND "
          "kind = 'rated'", &s, err), step;

    if (rc != MD_OK)
        return rc;
    sqlite3_bind_text(s, 1, cluster, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, day);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        struct md_bill_line l;

        memset(&l, 0, sizeof(l));
        l.day = sqlite3_column_int(s, 0);
        l.dims[MD_BILL_CLUSTER] = cluster;
        for (int i = 0; i < 4; i++)
            l.dims[MD_BILL_NAMESPACE + i] = col_text(s, 1 + i);
        l.tokens = sqlite3_column_int64(s, 5);
        l.unit_price_nanos = sqlite3_column_int64(s, 6);
        l.list_unit_price_nanos = sqlite3_column_int64(s, 7);
        l.amount_nanos = sqlite3_column_int64(s, 8);
        l.currency = col_text(s, 9);
        l.pricing_model = col_text(s, 10);
        l.priced = strcmp(l.pricing_model, UNPRICED) != 0;
        l.revision = sqlite3_column_int64(s, 11);
        l.status = strcmp(col_text(s, 12), "correction") == 0 ? MD_BILL_CORRECTION
                                                              : MD_BILL_CLOSED;
        l.source_day = sqlite3_column_int(s, 13);
        rc = md_bill_add(out, &l);
        if (rc != MD_OK) {
            rc = md_err_set(err, rc, "bill: too many lines");
            break;
        }
    }
    if (rc == MD_OK && step != SQLITE_DONE)
        rc = db_err(err, db, "stored lines");
    sqlite3_finalize(s);
    return rc;
}

/* Content order of a line, without its revision, status or day. */
static int
content_cmp(const void *pa, const void *pb)
{
    const struct md_bill_line *a = pa, *b = pb;
    int c;

    for (int d = MD_BILL_NAMESPACE; d < MD_BILL_DIMS; d++) {
        c = strcmp(a->dims[d], b->dims[d]);
        if (c != 0)
            return c;
    }
    c = strcmp(a->pricing_model, b->pricing_model);
    if (c == 0)
        c = strcmp(a->currency, b->currency);
    if (c != 0)
        return c;
    if (a->unit_price_nanos != b->unit_price_nanos)
        return a->unit_price_nanos < b->unit_price_nanos ? -1 : 1;
    if (a->list_unit_price_nanos != b->list_unit_price_nanos)
        return a->list_unit_price_nanos < b->list_unit_price_nanos ? -1 : 1;
    return 0;
}

/* Sums lines with equal content (tokens and amounts added); sorted. */
static int
sum_by_content(struct md_bill *b, struct md_err *err)
{
    size_t w = 0;

    if (b->count > 1)
        qsort(b->lines, b->count, sizeof(b->lines[0]), content_cmp);
    for (size_t i = 0; i < b->count; i++) {
        struct md_bill_line *o = w ? &b->lines[w - 1] : NULL, *l = &b->lines[i];

        if (o != NULL && content_cmp(o, l) == 0) {
            if (md_add_i64(o->tokens, l->tokens, &o->tokens) != MD_OK ||
                md_add_i64(o->amount_nanos, l->amount_nanos, &o->amount_nanos) != MD_OK)
                return md_err_set(err, MD_ELIMIT, "sum above 2^63");
            continue;
        }
        b->lines[w++] = *l;
    }
    b->count = w;
    return MD_OK;
}

static int
same_content(struct md_bill *a, struct md_bill *b, struct md_err *err)
{
    if (sum_by_content(a, err) != MD_OK || sum_by_content(b, err) != MD_OK)
        return -1;
    if (a->count != b->count)
        return 0;
    for (size_t i = 0; i < a->count; i++)
        if (content_cmp(&a->lines[i], &b->lines[i]) != 0 ||
            a->lines[i].tokens != b->lines[i].tokens ||
            a->lines[i].amount_nanos != b->lines[i].amount_nanos)
            return 0;
    return 1;
}

static int
insert_lines(sqlite3 *db, const struct md_bill *b, const char *cluster, int32_t day,
    int32_t source_day, const char *kind, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = prep(db, "INSERT INTO bill_lines(day, cluster, namespace, department, model, "
        "token_type, tokens, unit_price, list_unit_price, amount, currency, pricing_model, "
        "pricing_revision, kind, source_day) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
        "?11, ?12, ?13, ?14, ?15)", &s, err);

    for (size_t i = 0; i < b->count && rc == MD_OK; i++) {
        const struct md_bill_line *l = &b->lines[i];

        sqlite3_bind_int(s, 1, day);
        sqlite3_bind_text(s, 2, cluster, -1, SQLITE_STATIC);
        for (int d = 0; d < 4; d++)
            sqlite3_bind_text(s, 3 + d, l->dims[MD_BILL_NAMESPACE + d], -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, l->tokens);
        sqlite3_bind_int64(s, 8, l->unit_price_nanos);
        sqlite3_bind_int64(s, 9, l->list_unit_price_nanos);
        sqlite3_bind_int64(s, 10, l->amount_nanos);
        sqlite3_bind_text(s, 11, l->currency, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 12, l->pricing_model, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 13, l->revision);
        sqlite3_bind_text(s, 14, kind, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 15, source_day);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = db_err(err, db, "insert bill line");
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return rc;
}

static int
period_finalized(sqlite3 *db, int32_t day, int *out, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    char p[8];
    int rc = prep(db, "SELECT 1 FROM periods WHERE period = ?1", &s, err);

    if (rc != MD_OK)
        return rc;
    md_rating_period_fmt(day, p);
    sqlite3_bind_text(s, 1, p, -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    *out = rc == SQLITE_ROW;
    rc = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? MD_OK : db_err(err, db, "periods");
    sqlite3_finalize(s);
    return rc;
}

/* First day of the first month after day's month that is not finalized. */
static int
correction_day(sqlite3 *db, int32_t day, int32_t *out, struct md_err *err)
{
    char p[8];
    int32_t first, next = day;
    int fin = 1, rc = MD_OK;

    for (int i = 0; i < 12 * 100 && fin && rc == MD_OK; i++) {
        md_rating_period_fmt(next, p);
        (void)md_rating_period_parse(p, &first, &next);
        rc = period_finalized(db, next, &fin, err);
    }
    if (rc == MD_OK && fin)
        rc = md_err_set(err, MD_ELIMIT, "no open period within 100 years");
    if (rc == MD_OK)
        *out = next;
    return rc;
}

/* Old and new sums per (namespace, currency) of a re-rating, for reports. */
struct tenant_sum {
    char   *namespace, *currency;
    int64_t old_amount, new_amount, old_tokens, new_tokens;
};
struct report {
    json_t            *index;        /* "ns\x1fcur" -> position */
    struct tenant_sum *t;
    size_t             n, cap;
};

static int
report_add(struct report *rp, const struct md_bill *b, int is_new)
{
    for (size_t i = 0; rp != NULL && i < b->count; i++) {
        const struct md_bill_line *l = &b->lines[i];
        char key[2048];
        json_t *pos;
        struct tenant_sum *ts;

        (void)snprintf(key, sizeof(key), "%s\x1f%s", l->dims[MD_BILL_NAMESPACE], l->currency);
        pos = json_object_get(rp->index, key);
        if (pos == NULL) {
            if (rp->n == TENANTS_MAX)
                return MD_ELIMIT;
            if (rp->n == rp->cap) {
                size_t cap = rp->cap ? rp->cap * 2 : 64;
                struct tenant_sum *nt = md_realloc(rp->t, cap * sizeof(*nt));

                if (nt == NULL)
                    return MD_ENOMEM;
                rp->t = nt;
                rp->cap = cap;
            }
            ts = &rp->t[rp->n];
            memset(ts, 0, sizeof(*ts));
            ts->namespace = md_strdup(l->dims[MD_BILL_NAMESPACE]);
            ts->currency = md_strdup(l->currency);
            if (ts->namespace == NULL || ts->currency == NULL ||
                json_object_set_new(rp->index, key, json_integer((json_int_t)rp->n)) != 0) {
                md_free(ts->namespace);
                md_free(ts->currency);
                return MD_ENOMEM;
            }
            rp->n++;
        } else {
            ts = &rp->t[json_integer_value(pos)];
        }
        if (is_new) {
            ts->new_amount += l->amount_nanos;
            ts->new_tokens += l->tokens;
        } else {
            ts->old_amount += l->amount_nanos;
            ts->old_tokens += l->tokens;
        }
    }
    return MD_OK;
}

struct rate_outcome {
    int    changed;
    size_t corrections;
};

/* Rates (cluster, day) in its milestone state (open is closed now) and
 * stores the outcome.  In the caller's transaction. */
static int
rate_milestone(struct md_rating *r, sqlite3 *db, const char *cluster, int32_t day,
    const char *state, struct report *rp, struct rate_outcome *oc, struct md_err *err)
{
    struct holder *h = holder_get(r);
    struct md_bill fresh, old;
    sqlite3_stmt *s = NULL;
    uint64_t unp_new = 0, unp_old = 0;
    int finalized = strcmp(state, "finalized") == 0, rc, same;
    int64_t rev = h->rev;

    memset(oc, 0, sizeof(*oc));
    md_bill_init(&fresh, MD_RATING_LINES_MAX);
    md_bill_init(&old, MD_RATING_LINES_MAX);
    /* usage.retention deleted the usage of days before usage_kept_from_s:
     * their stored lines are the record now, never re-rated from nothing */
    {
        sqlite3_stmt *k = NULL;

        if (prep(db, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'usage_kept_from_s'",
                &k, err) == MD_OK) {
            int64_t kept = sqlite3_step(k) == SQLITE_ROW ? sqlite3_column_int64(k, 0) : 0;

            sqlite3_finalize(k);
            /* an open day was never deleted: it is rated from its usage */
            if ((int64_t)day * 86400 + 86400 <= kept && strcmp(state, "open") != 0) {
                rc = MD_OK;
                goto mark;      /* clean the mark; nothing changes */
            }
        }
    }
    rc = rate_day(db, h->p, rev, cluster, day, NULL, MD_BILL_CLOSED, &fresh, &unp_new, err);
    if (rc == MD_OK)
        rc = load_stored(db, cluster, day, finalized, &old, err);
    if (rc != MD_OK)
        goto out;
    for (size_t i = 0; i < old.count; i++)
        if (!old.lines[i].priced)
            unp_old += old.lines[i].tokens > 0 ? (uint64_t)old.lines[i].tokens : 0;
    rc = report_add(rp, &old, 0);
    if (rc == MD_OK)
        rc = report_add(rp, &fresh, 1);
    if (rc != MD_OK) {
        rc = md_err_set(err, rc, "backfill report: too many tenants or out of memory");
        goto out;
    }
    if (!finalized) {
        struct md_bill cmp;

        md_bill_init(&cmp, MD_RATING_LINES_MAX);
        for (size_t i = 0; i < fresh.count && rc == MD_OK; i++)
            rc = md_bill_add(&cmp, &fresh.lines[i]);
        same = rc == MD_OK ? same_content(&cmp, &old, err) : -1;
        md_bill_fini(&cmp);
        if (same < 0) {
            rc = md_err_set(err, MD_ENOMEM, "rate: out of memory");
            goto out;
        }
        if (!same) {
            rc = prep(db, "DELETE FROM bill_lines WHERE cluster = ?1 AND day = ?2 AND "
                "kind = 'rated'", &s, err);
            if (rc != MD_OK)
                goto out;
            sqlite3_bind_text(s, 1, cluster, -1, SQLITE_STATIC);
            sqlite3_bind_int(s, 2, day);
            if (sqlite3_step(s) != SQLITE_DONE) {
                rc = db_err(err, db, "replace bill lines");
                goto out;
            }
            sqlite3_finalize(s);
            s = NULL;
            rc = insert_lines(db, &fresh, cluster, day, day, "rated", err);
            if (rc != MD_OK)
                goto out;
            stage_lines(r, cluster, &fresh, 1);
            stage_lines(r, cluster, &old, -1);
            oc->changed = 1;
            atomic_fetch_add(&r->days_rated, 1);
            atomic_fetch_add(&r->lines, fresh.count);
            if (unp_new > unp_old)
                atomic_fetch_add(&r->unpriced, unp_new - unp_old);
        }
    } else {
        /* difference = fresh - (rated + corrections), per content */
        struct md_bill diff;
        int32_t cday = 0;

        md_bill_init(&diff, MD_RATING_LINES_MAX);
        for (size_t i = 0; i < fresh.count && rc == MD_OK; i++)
            rc = md_bill_add(&diff, &fresh.lines[i]);
        for (size_t i = 0; i < old.count && rc == MD_OK; i++) {
            struct md_bill_line l = old.lines[i];

            l.tokens = -l.tokens;
            l.amount_nanos = -l.amount_nanos;
            rc = md_bill_add(&diff, &l);
        }
        if (rc == MD_OK)
            rc = sum_by_content(&diff, err);
        else
            rc = md_err_set(err, rc, "corrections: out of memory");
        if (rc == MD_OK) {
            size_t w = 0;

            for (size_t i = 0; i < diff.count; i++) {
                if (diff.lines[i].tokens == 0 && diff.lines[i].amount_nanos == 0)
                    continue;
                diff.lines[i].revision = rev;
                diff.lines[w++] = diff.lines[i];
            }
            diff.count = w;
        }
        if (rc == MD_OK && diff.count > 0)
            rc = correction_day(db, day, &cday, err);
        if (rc == MD_OK && diff.count > 0)
            rc = insert_lines(db, &diff, cluster, cday, day, "correction", err);
        if (rc == MD_OK && diff.count > 0)
            stage_lines(r, cluster, &diff, 1);
        if (rc == MD_OK && diff.count > 0) {
            oc->changed = 1;
            oc->corrections = diff.count;
            atomic_fetch_add(&r->corrections, diff.count);
            if (unp_new > unp_old)
                atomic_fetch_add(&r->unpriced, unp_new - unp_old);
        }
        md_bill_fini(&diff);
        if (rc != MD_OK)
            goto out;
    }
mark:
    rc = prep(db, "UPDATE milestones SET state = CASE WHEN state = 'open' THEN 'closed' "
        "ELSE state END, dirty = 0, rated_ns = ?3, revision = CASE WHEN ?4 THEN ?5 "
        "WHEN revision = 0 THEN ?5 ELSE revision END WHERE cluster = ?1 AND day = ?2", &s, err);
    if (rc != MD_OK)
        goto out;
    sqlite3_bind_text(s, 1, cluster, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, day);
    sqlite3_bind_int64(s, 3, (int64_t)md_now_realtime_ns());
    sqlite3_bind_int(s, 4, oc->changed);
    sqlite3_bind_int64(s, 5, rev);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_err(err, db, "update milestone");
out:
    sqlite3_finalize(s);
    md_bill_fini(&fresh);
    md_bill_fini(&old);
    holder_put(r, h);
    return rc;
}

/* ---- writer hooks ---- */

int
md_rating_touch(struct md_rating *r, sqlite3 *db, const char *cluster, size_t cluster_len,
    int32_t day, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    char p[8];
    int rc;

    rc = prep_cached(r, db, CACHE_TOUCH, "INSERT INTO milestones(cluster, day, state, dirty) "
        "VALUES (?1, ?2, CASE WHEN EXISTS (SELECT 1 FROM periods WHERE period = ?3) THEN "
        "'finalized' ELSE 'open' END, 1) ON CONFLICT(cluster, day) DO UPDATE SET dirty = 1 "
        "WHERE state <> 'open' AND dirty = 0", &s, err);
    if (rc != MD_OK)
        return rc;
    md_rating_period_fmt(day, p);
    sqlite3_bind_text(s, 1, cluster, (int)cluster_len, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, day);
    sqlite3_bind_text(s, 3, p, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_err(err, db, "milestone mark");
    done_cached(r, s);
    return rc;
}

/* One pending (cluster, day): an open day past its grace, else a dirty
 * closed or finalized day.  MD_ENOTFOUND when there is none. */
static int
next_pending(struct md_rating *r, sqlite3 *db, char *cluster, size_t cl_len, int32_t *day,
    char *state, struct md_err *err)
{
    static const char *const q[] = {
        "SELECT cluster, day, state FROM milestones WHERE state = 'open' AND day < ?1 "
        "ORDER BY day LIMIT 1",
        "SELECT cluster, day, state FROM milestones WHERE dirty = 1 AND state <> 'open' "
        "ORDER BY day LIMIT 1",
    };

    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *s = NULL;
        int rc = prep_cached(r, db, CACHE_PENDING_OPEN + i, q[i], &s, err), step;

        if (rc != MD_OK)
            return rc;
        sqlite3_bind_int(s, 1, close_before(r));
        step = sqlite3_step(s);
        if (step == SQLITE_ROW) {
            (void)snprintf(cluster, cl_len, "%s", col_text(s, 0));
            *day = sqlite3_column_int(s, 1);
            (void)snprintf(state, 16, "%s", col_text(s, 2));
            done_cached(r, s);
            return MD_OK;
        }
        done_cached(r, s);
        if (step != SQLITE_DONE)
            return db_err(err, db, "pending milestones");
    }
    return MD_ENOTFOUND;
}

int
md_rating_tick(struct md_rating *r, sqlite3 *db, uint64_t budget_ms)
{
    uint64_t t0 = md_now_monotonic_ns();

    if (!atomic_load(&r->ready))
        return 0;      /* never rate before the pricing is loaded */
    for (;;) {
        struct md_err err = {0};
        struct rate_outcome oc;
        char cluster[512], state[16], d[16];
        int32_t day = 0;
        int rc;

        if ((md_now_monotonic_ns() - t0) / 1000000 >= budget_ms)
            return 1;
        rc = exec(db, "BEGIN IMMEDIATE", &err);
        if (rc == MD_OK) {
            rc = next_pending(r, db, cluster, sizeof(cluster), &day, state, &err);
            if (rc == MD_ENOTFOUND) {
                (void)exec(db, "ROLLBACK", NULL);
                return 0;
            }
        }
        r->stage_cost = 1;
        if (rc == MD_OK)
            rc = rate_milestone(r, db, cluster, day, state, NULL, &oc, &err);
        r->stage_cost = 0;
        if (rc == MD_OK)
            rc = exec(db, "COMMIT", &err);
        if (r->agg != NULL) {
            if (rc == MD_OK)
                r->agg_changed |= md_usnap_agg_commit(r->agg);
            else
                md_usnap_agg_rollback(r->agg);
        }
        if (rc != MD_OK) {
            if (!sqlite3_get_autocommit(db))
                (void)exec(db, "ROLLBACK", NULL);
            md_complain(&r->tick_complaint, MD_LOG_ERR, MD_MODULE, "rating: %s", err.msg);
            return 0;
        }
        md_release(&r->tick_complaint, MD_MODULE, "rating: working again");
        md_pricing_day_fmt(day, d, sizeof(d));
        if (oc.changed)
            md_log_info("cluster \"%s\" day %s: %s%s", cluster, d,
                strcmp(state, "open") == 0 ? "closed and rated" : "re-rated",
                oc.corrections ? " (corrections booked)" : "");
    }
}

/* ---- revisions ---- */

struct add_rev {
    struct md_rating  *r;
    struct md_pricing *p;            /* becomes current when added (then NULL) */
    const char *actor, *source, *doc;
    int         only_if_changed_source;   /* compare with the last of this source */
    int64_t     rev;
    int         created;
};

/* Marks dirty the rated days a pricing model that differs between the
 * previous revision (the one before rev) and doc applies to: its clusters
 * within its effective range, for both its old and new versions.  A day
 * whose lines come out the same keeps them, so over-marking costs time, not
 * correctness. */
static int
mark_model(sqlite3 *db, json_t *model, struct md_err *err)
{
    json_t *cl;
    const char *from = json_string_value(json_object_get(model, "effective_from"));
    const char *to = json_string_value(json_object_get(model, "effective_to"));
    int32_t fd = 0, td = INT32_MAX;
    size_t i;

    if (from != NULL)
        (void)md_pricing_day_parse(from, strlen(from), &fd);
    if (to != NULL)
        (void)md_pricing_day_parse(to, strlen(to), &td);
    json_array_foreach(json_object_get(model, "clusters"), i, cl) {
        sqlite3_stmt *s = NULL;
        int rc = prep(db, "UPDATE milestones SET dirty = 1 WHERE state <> 'open' AND "
            "dirty = 0 AND cluster = ?1 AND day >= ?2 AND day < ?3", &s, err);

        if (rc != MD_OK)
            return rc;
        sqlite3_bind_text(s, 1, json_string_value(cl), -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, fd);
        sqlite3_bind_int(s, 3, td);
        rc = sqlite3_step(s) == SQLITE_DONE ? MD_OK : db_err(err, db, "mark dirty");
        sqlite3_finalize(s);
        if (rc != MD_OK)
            return rc;
    }
    return MD_OK;
}

static json_t *
model_named(json_t *doc, const char *name)
{
    json_t *m;
    size_t i;

    json_array_foreach(json_object_get(doc, "pricing_models"), i, m)
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0)
            return m;
    return NULL;
}

static int
mark_changed(sqlite3 *db, int64_t rev, const char *doc, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    json_t *prev = NULL, *next = json_loads(doc, 0, NULL), *m;
    size_t i;
    int rc = prep(db, "SELECT document FROM pricing_revisions WHERE id < ?1 ORDER BY id DESC "
        "LIMIT 1", &s, err);

    if (rc != MD_OK) {
        json_decref(next);
        return rc;
    }
    sqlite3_bind_int64(s, 1, rev);
    if (sqlite3_step(s) == SQLITE_ROW)
        prev = json_loads(col_text(s, 0), 0, NULL);
    sqlite3_finalize(s);
    if (prev == NULL || next == NULL) {
        /* first revision (or unreadable): every rated day */
        json_decref(prev);
        json_decref(next);
        return exec(db, "UPDATE milestones SET dirty = 1 WHERE state <> 'open' AND dirty = 0",
            err);
    }
    json_array_foreach(json_object_get(next, "pricing_models"), i, m) {
        json_t *o = model_named(prev, json_string_value(json_object_get(m, "name")));

        if (o != NULL && json_equal(o, m))
            continue;
        rc = mark_model(db, m, err);
        if (rc == MD_OK && o != NULL)
            rc = mark_model(db, o, err);
        if (rc != MD_OK)
            break;
    }
    json_array_foreach(json_object_get(prev, "pricing_models"), i, m) {
        if (rc != MD_OK)
            break;
        if (model_named(next, json_string_value(json_object_get(m, "name"))) == NULL)
            rc = mark_model(db, m, err);
    }
    json_decref(prev);
    json_decref(next);
    return rc;
}

static int
add_rev_fn(void *arg, sqlite3 *db, struct md_err *err)
{
    struct add_rev *a = arg;
    sqlite3_stmt *s = NULL;
    int rc;

    /* same document as the last revision of that source (config) or as the
     * current revision (api): nothing to add */
    rc = prep(db, a->only_if_changed_source
        ? "SELECT id, document FROM pricing_revisions WHERE source = 'config' "
          "ORDER BY id DESC LIMIT 1"
        : "SELECT id, document FROM pricing_revisions ORDER BY id DESC LIMIT 1", &s, err);
    if (rc != MD_OK)
        return rc;
    if (sqlite3_step(s) == SQLITE_ROW && strcmp(col_text(s, 1), a->doc) == 0) {
        a->rev = sqlite3_column_int64(s, 0);
        a->created = 0;
        sqlite3_finalize(s);
        if (a->only_if_changed_source) {
            /* the current one stays whatever is latest (an API PUT) */
            rc = prep(db, "SELECT max(id) FROM pricing_revisions", &s, err);
            if (rc != MD_OK)
                return rc;
            if (sqlite3_step(s) == SQLITE_ROW)
                a->rev = sqlite3_column_int64(s, 0);
            sqlite3_finalize(s);
        }
        return MD_OK;
    }
    sqlite3_finalize(s);
    rc = prep(db, "INSERT INTO pricing_revisions(ts_ns, actor, source, document) "
        "VALUES (?1, ?2, ?3, ?4)", &s, err);
    if (rc != MD_OK)
        return rc;
    sqlite3_bind_int64(s, 1, (int64_t)md_now_realtime_ns());
    sqlite3_bind_text(s, 2, a->actor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, a->source, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, a->doc, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) {
        rc = db_err(err, db, "insert revision");
        sqlite3_finalize(s);
        return rc;
    }
    sqlite3_finalize(s);
    a->rev = sqlite3_last_insert_rowid(db);
    a->created = 1;
    /* current before the writer's next tick re-rates the dirty days (the
     * tick runs right after this drain, on this thread) */
    rc = holder_set(a->r, a->p, a->rev);
    a->p = NULL;
    if (rc != MD_OK)
        return md_err_set(err, rc, "out of memory");
    return mark_changed(db, a->rev, a->doc, err);
}

static int
canonical(const struct md_pricing *p, char **out, struct md_err *err)
{
    json_t *j = md_pricing_to_json(p);

    *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (*out == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    return MD_OK;
}

static int
latest_revision(struct md_store *st, int64_t *rev, char **doc, struct md_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    int rc = md_store_reader(st, &db, err);

    *rev = 0;
    *doc = NULL;
    if (rc == MD_OK)
        rc = prep(db, "SELECT id, document FROM pricing_revisions ORDER BY id DESC LIMIT 1",
            &s, err);
    if (rc != MD_OK)
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *rev = sqlite3_column_int64(s, 0);
        *doc = md_strdup(col_text(s, 1));
        rc = *doc ? MD_OK : md_err_set(err, MD_ENOMEM, "out of memory");
    } else {
        rc = rc == SQLITE_DONE ? MD_OK : db_err(err, db, "latest revision");
    }
    sqlite3_finalize(s);
    return rc;
}

/* Makes revision `rev` (document doc) current when it is not already. */
static int
use_revision(struct md_rating *r, int64_t rev, const char *doc, struct md_cfg_errors *errs,
    struct md_err *err)
{
    struct md_pricing *p = NULL;

    if (rev == md_rating_revision(r) || rev == 0)
        return MD_OK;
    if (md_pricing_load_buf("pricing revision", doc, strlen(doc), &p, errs) != MD_OK)
        return md_err_set(err, MD_ECONFIG, "pricing revision %lld does not load: %s",
            (long long)rev, errs->count ? errs->msgs[0] : "?");
    return holder_set(r, p, rev) == MD_OK ? MD_OK : md_err_set(err, MD_ENOMEM, "out of memory");
}

static int
store_document(struct md_rating *r, struct md_store *st, struct md_pricing *p,
    const char *actor, const char *source, int64_t *revision, int *created,
    struct md_err *err)
{
    struct add_rev a = { .r = r, .p = p, .actor = actor, .source = source,
                         .only_if_changed_source = strcmp(source, "config") == 0 };
    char *doc = NULL;
    int rc = canonical(p, &doc, err);

    if (rc != MD_OK) {
        md_pricing_free(p);
        return rc;
    }
    a.doc = doc;
    rc = md_store_call(st, add_rev_fn, &a, err);
    p = a.p;
    if (rc == MD_OK && a.created) {
        atomic_fetch_add(&r->revisions, 1);
    } else if (rc == MD_OK && a.rev != md_rating_revision(r)) {
        /* unchanged file, but the latest revision is another one */
        int64_t lrev;
        char *ldoc = NULL;
        static struct md_cfg_errors e2;

        rc = latest_revision(st, &lrev, &ldoc, err);
        if (rc == MD_OK)
            rc = use_revision(r, lrev, ldoc, &e2, err);
        md_free(ldoc);
    }
    md_pricing_free(p);
    free(doc);
    if (rc == MD_OK) {
        if (revision)
            *revision = md_rating_revision(r);
        if (created)
            *created = a.created;
    }
    return rc;
}

int
md_rating_load_file(struct md_rating *r, struct md_store *st, const char *path,
    struct md_cfg_errors *errs, int *created, struct md_err *err)
{
    struct md_pricing *p = NULL;
    int64_t rev;
    char *doc = NULL;
    int rc;

    if (created)
        *created = 0;
    rc = latest_revision(st, &rev, &doc, err);
    if (rc == MD_OK && doc != NULL)
        rc = use_revision(r, rev, doc, errs, err);
    md_free(doc);
    if (rc != MD_OK)
        return rc;
    if (path != NULL && access(path, F_OK) == 0) {
        if (md_pricing_load(path, &p, errs) != MD_OK)
            return md_err_set(err, MD_ECONFIG, "pricing file \"%s\" is invalid", path);
        rc = store_document(r, st, p, "config", "config", NULL, created, err);
    }
    if (rc == MD_OK)
        atomic_store(&r->ready, 1);
    return rc;
}

int
md_rating_put(struct md_rating *r, struct md_store *st, const char *actor,
    const char *doc, size_t len, struct md_cfg_errors *errs, int64_t *revision,
    int *created, struct md_err *err)
{
    struct md_pricing *p = NULL;

    if (md_pricing_load_buf("request body", doc, len, &p, errs) != MD_OK)
        return md_err_set(err, MD_ECONFIG, "invalid pricing document");
    return store_document(r, st, p, actor, "api", revision, created, err);
}

static void
ts_str(int64_t ns, char buf[32])
{
    md_fmt_rfc3339_ms((uint64_t)ns, buf, 32);
}

static int
dump(json_t *j, char **body, size_t *len, struct md_err *err)
{
    *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (*body == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    *len = strlen(*body);
    return MD_OK;
}

static int
revision_row(sqlite3 *db, int64_t id, json_t **out, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    json_error_t je;
    char ts[32];
    int rc = prep(db, id > 0
        ? "SELECT id, ts_ns, actor, source, document FROM pricing_revisions WHERE id = ?1"
        : "SELECT id, ts_ns, actor, source, document FROM pricing_revisions ORDER BY id DESC "
          "LIMIT 1", &s, err);

    *out = NULL;
    if (rc != MD_OK)
        return rc;
    if (id > 0)
        sqlite3_bind_int64(s, 1, id);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        ts_str(sqlite3_column_int64(s, 1), ts);
        *out = json_pack("{s:I,s:s,s:s,s:s,s:o}", "revision",
            (json_int_t)sqlite3_column_int64(s, 0), "ts", ts, "actor", col_text(s, 2),
            "source", col_text(s, 3), "document", json_loads(col_text(s, 4), 0, &je));
        rc = *out ? MD_OK : md_err_set(err, MD_ENOMEM, "out of memory");
    } else {
        rc = rc == SQLITE_DONE ? md_err_set(err, MD_ENOTFOUND, "no such revision")
                               : db_err(err, db, "revision");
    }
    sqlite3_finalize(s);
    return rc;
}

int
md_rating_current_json(struct md_rating *r, struct md_store *st, char **body, size_t *len,
    struct md_err *err)
{
    sqlite3 *db;
    json_t *o = NULL;
    int64_t rev = md_rating_revision(r);
    int rc = md_store_reader(st, &db, err);

    if (rc != MD_OK)
        return rc;
    if (rev == 0)
        return md_err_set(err, MD_ENOTFOUND, "no pricing revision yet");
    rc = revision_row(db, rev, &o, err);
    if (rc != MD_OK)
        return rc;
    return dump(o, body, len, err);
}

int
md_rating_revisions_json(struct md_store *st, char **body, size_t *len, struct md_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    json_t *arr = json_array();
    size_t n = 0;
    int rc = md_store_reader(st, &db, err), step;

    if (rc == MD_OK)
        rc = prep(db, "SELECT id, ts_ns, actor, source FROM pricing_revisions ORDER BY id",
            &s, err);
    if (rc != MD_OK) {
        json_decref(arr);
        return rc;
    }
    while ((step = sqlite3_step(s)) == SQLITE_ROW && n++ < REVISIONS_MAX) {
        char ts[32];

        ts_str(sqlite3_column_int64(s, 1), ts);
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:s}", "revision",
            (json_int_t)sqlite3_column_int64(s, 0), "ts", ts, "actor", col_text(s, 2),
            "source", col_text(s, 3)));
    }
    sqlite3_finalize(s);
    if (step != SQLITE_DONE && step != SQLITE_ROW) {
        json_decref(arr);
        return db_err(err, db, "revisions");
    }
    return dump(json_pack("{s:o}", "revisions", arr), body, len, err);
}

static void
diff_rec(json_t *changes, const char *path, json_t *a, json_t *b)
{
    char sub[1024];

    if (json_array_size(changes) >= DIFF_MAX)
        return;
    if (a != NULL && b != NULL && json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;

        json_object_foreach(a, k, v) {
            (void)snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k);
            diff_rec(changes, sub, v, json_object_get(b, k));
        }
        json_object_foreach(b, k, v) {
            if (json_object_get(a, k) != NULL)
                continue;
            (void)snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k);
            diff_rec(changes, sub, NULL, v);
        }
        return;
    }
    if (a != NULL && b != NULL && json_is_array(a) && json_is_array(b)) {
        size_t na = json_array_size(a), nb = json_array_size(b);

        for (size_t i = 0; i < (na > nb ? na : nb); i++) {
            (void)snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            diff_rec(changes, sub, json_array_get(a, i), json_array_get(b, i));
        }
        return;
    }
    if (a != NULL && b != NULL && json_equal(a, b))
        return;
    {
        json_t *c = json_pack("{s:s}", "path", path);

        if (c == NULL)
            return;
        if (a != NULL)
            json_object_set(c, "old", a);
        if (b != NULL)
            json_object_set(c, "new", b);
        json_array_append_new(changes, c);
    }
}

int
md_rating_diff_json(struct md_store *st, int64_t a, int64_t b, char **body, size_t *len,
    struct md_err *err)
{
    sqlite3 *db;
    json_t *ra = NULL, *rb = NULL, *changes;
    int rc = md_store_reader(st, &db, err);

    if (rc == MD_OK)
        rc = revision_row(db, a, &ra, err);
    if (rc == MD_OK)
        rc = revision_row(db, b, &rb, err);
    if (rc != MD_OK) {
        json_decref(ra);
        json_decref(rb);
        return rc;
    }
    changes = json_array();
    diff_rec(changes, "", json_object_get(ra, "document"), json_object_get(rb, "document"));
    json_decref(ra);
    json_decref(rb);
    return dump(json_pack("{s:I,s:I,s:o}", "from", (json_int_t)a, "to", (json_int_t)b,
        "changes", changes), body, len, err);
}

int
md_rating_milestones_json(struct md_store *st, int32_t from_day, int32_t to_day,
    const char *cluster, char **body, size_t *len, struct md_err *err)
{
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    json_t *arr = json_array();
    size_t n = 0;
    int rc = md_store_reader(st, &db, err), step;

    if (rc == MD_OK)
        rc = prep(db, "SELECT cluster, day, state, dirty, revision, rated_ns FROM milestones "
            "WHERE day >= ?1 AND day < ?2 AND (?3 IS NULL OR cluster = ?3) "
            "ORDER BY day, cluster", &s, err);
    if (rc != MD_OK) {
        json_decref(arr);
        return rc;
    }
    sqlite3_bind_int(s, 1, from_day);
    sqlite3_bind_int(s, 2, to_day);
    if (cluster != NULL)
        sqlite3_bind_text(s, 3, cluster, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        char d[16], ts[32];
        json_t *o;

        if (++n > MILESTONES_MAX) {
            sqlite3_finalize(s);
            json_decref(arr);
            return md_err_set(err, MD_ELIMIT, "more than %d milestones", MILESTONES_MAX);
        }
        md_pricing_day_fmt(sqlite3_column_int(s, 1), d, sizeof(d));
        o = json_pack("{s:s,s:s,s:s,s:b,s:I}", "cluster", col_text(s, 0), "day", d, "state",
            col_text(s, 2), "dirty", sqlite3_column_int(s, 3), "revision",
            (json_int_t)sqlite3_column_int64(s, 4));
        if (o != NULL && sqlite3_column_int64(s, 5) > 0) {
            ts_str(sqlite3_column_int64(s, 5), ts);
            json_object_set_new(o, "rated", json_string(ts));
        }
        json_array_append_new(arr, o);
    }
    sqlite3_finalize(s);
    if (step != SQLITE_DONE) {
        json_decref(arr);
        return db_err(err, db, "milestones");
    }
    return dump(json_pack("{s:o}", "milestones", arr), body, len, err);
}

/* ---- bills ---- */

/* The finalized (cluster, day) pairs of a bills query, sorted, so that the
 * status of a stored line is a lookup instead of a join per line (a
 * tenant-year is 36,500 lines; the join was a B-tree search each). */
struct fin_set {
    struct fin_day { int32_t day; char *cluster; } *v;
    size_t n, cap;
};

static int
fin_day_cmp(const void *pa, const void *pb)
{
    const struct fin_day *a = pa, *b = pb;

    if (a->day != b->day)
        return a->day < b->day ? -1 : 1;
    return strcmp(a->cluster, b->cluster);
}

static void
fin_set_free(struct fin_set *f)
{
    for (size_t i = 0; i < f->n; i++)
        md_free(f->v[i].cluster);
    md_free(f->v);
    memset(f, 0, sizeof(*f));
}

/* Finalized milestones of [from, to), cluster optional.  At most
 * MD_RATING_RANGE_DAYS days per cluster; the number of clusters is that of
 * the milestones table, so this is bounded by what the store holds. */
static int
fin_set_load(struct md_store *st, sqlite3 *db, const struct md_bill_query *q, struct fin_set *f,
    struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = md_store_reader_stmt(st, "SELECT cluster, day FROM milestones WHERE "
        "state = 'finalized' AND day >= ?1 AND day < ?2 AND (?3 IS NULL OR cluster = ?3)", &s,
        err), step;

    if (rc != MD_OK)
        return rc;
    sqlite3_bind_int(s, 1, q->from_day);
    sqlite3_bind_int(s, 2, q->to_day);
    if (q->filter[MD_BILL_CLUSTER] != NULL)
        sqlite3_bind_text(s, 3, q->filter[MD_BILL_CLUSTER], -1, SQLITE_STATIC);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (f->n == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 64;
            struct fin_day *n = md_realloc(f->v, cap * sizeof(*n));

            if (n == NULL) {
                rc = md_err_set(err, MD_ENOMEM, "out of memory");
                goto out;
            }
            f->v = n;
            f->cap = cap;
        }
        f->v[f->n].day = sqlite3_column_int(s, 1);
        f->v[f->n].cluster = md_strdup(col_text(s, 0));
        if (f->v[f->n].cluster == NULL) {
            rc = md_err_set(err, MD_ENOMEM, "out of memory");
            goto out;
        }
        f->n++;
    }
    if (step != SQLITE_DONE)
        rc = db_err(err, db, "bills: finalized days");
    else if (f->n > 1)
        qsort(f->v, f->n, sizeof(f->v[0]), fin_day_cmp);
out:
    md_store_reader_put(s);
    return rc;
}

static int
fin_set_has(const struct fin_set *f, const char *cluster, int32_t day)
{
    struct fin_day key = { day, (char *)(uintptr_t)cluster };

    return f->n > 0 && bsearch(&key, f->v, f->n, sizeof(f->v[0]), fin_day_cmp) != NULL;
}

int
md_rating_bills(struct md_rating *r, struct md_store *st, const struct md_bill_query *q,
    struct md_bill *out, struct md_err *err)
{
    static const char *const colname[MD_BILL_DIMS] = {
        NULL, "cluster", "namespace", "department", "model", "token_type",
    };
    struct rate_filter f = {
        .namespace = q->filter[MD_BILL_NAMESPACE], .department = q->filter[MD_BILL_DEPARTMENT],
        .model = q->filter[MD_BILL_MODEL], .token_type = q->filter[MD_BILL_TOKEN_TYPE],
    };
    struct holder *h = NULL;
    struct fin_set fin = { NULL, 0, 0 };
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    const char *last_cluster = NULL;
    int32_t last_day = 0;
    enum md_bill_status last_status = MD_BILL_CLOSED;
    char sql[2048];
    size_t off;
    int rc = md_store_reader(st, &db, err), step, bind = 3;

    if (rc != MD_OK)
        return rc;
    rc = fin_set_load(st, db, q, &fin, err);
    if (rc != MD_OK)
        goto out;
    /* a namespace filter reads the tenant's days through bill_lines_tenant
     * (namespace, day); without one, bill_lines_day (day, cluster) */
    off = (size_t)snprintf(sql, sizeof(sql),
        "SELECT day, cluster, namespace, department, model, token_type, tokens, "
        "unit_price, list_unit_price, amount, currency, pricing_model, "
        "pricing_revision, kind, source_day FROM bill_lines "
        "WHERE day >= ?1 AND day < ?2");
    for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS; d++)
        if (q->filter[d] != NULL)
            off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND %s = ?%d", colname[d],
                bind++);
    /* open_only: "AND 0" reads no stored line */
    if (q->open_only)
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, " AND 0");
    /* kept per reader connection: a request binds and steps it, the next
     * one with the same filters reuses it (one per filter combination) */
    rc = md_store_reader_stmt(st, sql, &s, err);
    if (rc != MD_OK)
        goto out;
    sqlite3_bind_int(s, 1, q->from_day);
    sqlite3_bind_int(s, 2, q->to_day);
    bind = 3;
    for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS; d++)
        if (q->filter[d] != NULL)
            sqlite3_bind_text(s, bind++, q->filter[d], -1, SQLITE_STATIC);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        struct md_bill_line l, *added;

        memset(&l, 0, sizeof(l));
        l.day = sqlite3_column_int(s, 0);
        for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS; d++)
            l.dims[d] = col_text(s, d);
        l.tokens = sqlite3_column_int64(s, 6);
        l.unit_price_nanos = sqlite3_column_int64(s, 7);
        l.list_unit_price_nanos = sqlite3_column_int64(s, 8);
        l.amount_nanos = sqlite3_column_int64(s, 9);
        l.currency = col_text(s, 10);
        l.pricing_model = col_text(s, 11);
        l.priced = strcmp(l.pricing_model, UNPRICED) != 0;
        l.revision = sqlite3_column_int64(s, 12);
        l.source_day = sqlite3_column_int(s, 14);
        l.status = strcmp(col_text(s, 13), "correction") == 0 ? MD_BILL_CORRECTION
                                                             : MD_BILL_CLOSED;
        rc = md_bill_add(out, &l);
        if (rc != MD_OK) {
            rc = md_err_set(err, rc, "more than %zu lines", out->lines_max);
            goto out;
        }
        /* a rated line's state is its milestone's (cluster, source_day);
         * the added line's cluster is interned, so a pointer compare
         * finds the run of lines of one (cluster, day) */
        added = &out->lines[out->count - 1];
        if (added->status == MD_BILL_CORRECTION)
            continue;
        if (added->dims[MD_BILL_CLUSTER] != last_cluster || added->source_day != last_day) {
            last_cluster = added->dims[MD_BILL_CLUSTER];
            last_day = added->source_day;
            last_status = fin_set_has(&fin, last_cluster, last_day) ? MD_BILL_FINALIZED
                                                                    : MD_BILL_CLOSED;
        }
        added->status = last_status;
    }
    if (step != SQLITE_DONE) {
        rc = db_err(err, db, "bills");
        goto out;
    }
    md_store_reader_put(s);
    s = NULL;
    /* open days: rated now with the current pricing */
    rc = md_store_reader_stmt(st, "SELECT cluster, day FROM milestones WHERE state = 'open' "
        "AND day >= ?1 AND day < ?2 AND (?3 IS NULL OR cluster = ?3) ORDER BY day, cluster", &s,
        err);
    if (rc != MD_OK)
        goto out;
    sqlite3_bind_int(s, 1, q->from_day);
    sqlite3_bind_int(s, 2, q->to_day);
    if (q->filter[MD_BILL_CLUSTER] != NULL)
        sqlite3_bind_text(s, 3, q->filter[MD_BILL_CLUSTER], -1, SQLITE_STATIC);
    h = holder_get(r);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        char cluster[512];

        (void)snprintf(cluster, sizeof(cluster), "%s", col_text(s, 0));
        rc = rate_day(db, h->p, h->rev, cluster, sqlite3_column_int(s, 1), &f,
            MD_BILL_PROVISIONAL, out, NULL, err);
        if (rc != MD_OK)
            goto out;
    }
    if (step != SQLITE_DONE) {
        rc = db_err(err, db, "bills: open days");
        goto out;
    }
    /* a tenant's bill: only its lines, so another tenant's data (existing or
     * not) answers exactly like data that does not exist */
    if (q->tenant != NULL && q->tenant->restricted) {
        size_t w = 0;

        for (size_t i = 0; i < out->count; i++) {
            const struct md_bill_line *l = &out->lines[i];
            int mine = 0;

            for (size_t k = 0; k < q->tenant->ns_count && !mine; k++)
                mine = strcmp(l->dims[MD_BILL_NAMESPACE], q->tenant->ns[k]) == 0;
            for (size_t k = 0; k < q->tenant->dept_count && !mine; k++)
                mine = strcmp(l->dims[MD_BILL_DEPARTMENT], q->tenant->dept[k]) == 0;
            if (mine)
                out->lines[w++] = out->lines[i];
        }
        out->count = w;
    }
    rc = md_bill_merge_lines(out, err);
out:
    if (h != NULL)
        holder_put(r, h);
    md_store_reader_put(s);
    fin_set_free(&fin);
    return rc;
}

/* ---- finalize ---- */

struct fin {
    struct md_rating *r;
    const char *period, *actor;
    int32_t first, next;
    int already;
    size_t days;
};

static int
finalize_fn(void *arg, sqlite3 *db, struct md_err *err)
{
    struct fin *f = arg;
    sqlite3_stmt *s = NULL;
    int fin = 0, rc = period_finalized(db, f->first, &fin, err), step;

    if (rc != MD_OK)
        return rc;
    if (fin) {
        f->already = 1;
        return MD_OK;
    }
    if (f->next > close_before(f->r))
        return md_err_set(err, MD_ESTATE, "%s has not ended yet (plus rating.grace)",
            f->period);
    /* an open day left (no tick yet), or a dirty one: rate it first */
    rc = prep(db, "SELECT cluster, day, state FROM milestones WHERE day >= ?1 AND day < ?2 "
        "AND (state = 'open' OR dirty = 1)", &s, err);
    if (rc != MD_OK)
        return rc;
    sqlite3_bind_int(s, 1, f->first);
    sqlite3_bind_int(s, 2, f->next);
    while (rc == MD_OK && (step = sqlite3_step(s)) == SQLITE_ROW) {
        struct rate_outcome oc;
        char cluster[512], state[16];
        int32_t day = sqlite3_column_int(s, 1);

        (void)snprintf(cluster, sizeof(cluster), "%s", col_text(s, 0));
        (void)snprintf(state, sizeof(state), "%s", col_text(s, 2));
        rc = rate_milestone(f->r, db, cluster, day, state, NULL, &oc, err);
    }
    sqlite3_finalize(s);
    if (rc != MD_OK)
        return rc;
    rc = prep(db, "UPDATE milestones SET state = 'finalized' WHERE day >= ?1 AND day < ?2 "
        "AND state <> 'finalized'", &s, err);
    if (rc != MD_OK)
        return rc;
    sqlite3_bind_int(s, 1, f->first);
    sqlite3_bind_int(s, 2, f->next);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_err(err, db, "finalize");
    f->days = (size_t)sqlite3_changes(db);
    sqlite3_finalize(s);
    if (rc != MD_OK)
        return rc;
    rc = prep(db, "INSERT INTO periods(period, finalized_ns, actor) VALUES (?1, ?2, ?3)", &s,
        err);
    if (rc != MD_OK)
        return rc;
    sqlite3_bind_text(s, 1, f->period, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (int64_t)md_now_realtime_ns());
    sqlite3_bind_text(s, 3, f->actor, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_err(err, db, "record period");
    sqlite3_finalize(s);
    return rc;
}

int
md_rating_finalize(struct md_rating *r, struct md_store *st, const char *period,
    const char *actor, int *already, size_t *days, struct md_err *err)
{
    struct fin f = { .r = r, .period = period, .actor = actor };
    int rc;

    if (md_rating_period_parse(period, &f.first, &f.next) != MD_OK)
        return md_err_set(err, MD_EPARSE, "period: must be YYYY-MM");
    rc = md_store_call(st, finalize_fn, &f, err);
    if (rc == MD_OK) {
        *already = f.already;
        *days = f.days;
    }
    return rc;
}

/* ---- backfill ---- */

struct bf_day {
    struct md_rating *r;
    const char *cluster;
    int32_t day;
    int dry_run;
    struct report *rp;
    struct rate_outcome oc;
    int skipped_open;
    int done;
};

static int
backfill_fn(void *arg, sqlite3 *db, struct md_err *err)
{
    struct bf_day *b = arg;
    sqlite3_stmt *s = NULL;
    char p[8], state[16];
    int rc = prep(db, "INSERT OR IGNORE INTO milestones(cluster, day, state, dirty) VALUES "
        "(?1, ?2, CASE WHEN EXISTS (SELECT 1 FROM periods WHERE period = ?3) THEN 'finalized' "
        "ELSE 'open' END, 1)", &s, err);

    if (rc != MD_OK)
        return rc;
    md_rating_period_fmt(b->day, p);
    sqlite3_bind_text(s, 1, b->cluster, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, b->day);
    sqlite3_bind_text(s, 3, p, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = db_err(err, db, "milestone");
    sqlite3_finalize(s);
    if (rc != MD_OK)
        return rc;
    rc = prep(db, "SELECT state FROM milestones WHERE cluster = ?1 AND day = ?2", &s, err);
    if (rc != MD_OK)
        return rc;
    sqlite3_bind_text(s, 1, b->cluster, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, b->day);
    if (sqlite3_step(s) != SQLITE_ROW) {
        rc = db_err(err, db, "milestone state");
        sqlite3_finalize(s);
        return rc;
    }
    (void)snprintf(state, sizeof(state), "%s", col_text(s, 0));
    sqlite3_finalize(s);
    if (strcmp(state, "open") == 0 && b->day >= close_before(b->r)) {
        b->skipped_open = 1;          /* still provisional: nothing stored to re-rate */
        b->done = 1;
        return MD_OK;
    }
    /* a real backfill moves the cost counters too (committed or dropped with
     * the writer's transaction); a failed one drops everything staged in this
     * drain from the snapshot, which then lags until the next start rather
     * than ever counting a cost that was rolled back */
    b->r->stage_cost = !b->dry_run;
    rc = rate_milestone(b->r, db, b->cluster, b->day, state, b->rp, &b->oc, err);
    b->r->stage_cost = 0;
    if (rc != MD_OK) {
        if (b->r->agg != NULL)
            md_usnap_agg_rollback(b->r->agg);
        return rc;
    }
    b->done = 1;
    /* dry run: everything above is undone by the call's savepoint */
    return b->dry_run ? md_err_set(err, MD_ESTATE, "dry run") : MD_OK;
}

struct cd {
    char   *cluster;
    int32_t day;
};

int
md_rating_backfill(struct md_rating *r, struct md_store *st, int32_t from_day,
    int32_t to_day, const char *cluster, int dry_run, md_rating_progress_fn *progress,
    void *parg, char **report, size_t *len, struct md_err *err)
{
    struct report rp = { .index = json_object() };
    struct cd *days = NULL;
    size_t n = 0, cap = 0, changed = 0, corrections = 0, open_days = 0;
    sqlite3 *db;
    sqlite3_stmt *s = NULL;
    json_t *tenants, *doc;
    char fd[16], td[16];
    int rc, step;

    if (to_day <= from_day || to_day - from_day > MD_RATING_RANGE_DAYS) {
        json_decref(rp.index);
        return md_err_set(err, MD_EPARSE, "to: must be after from, at most %d days",
            MD_RATING_RANGE_DAYS);
    }
    rc = md_store_reader(st, &db, err);
    if (rc == MD_OK)
        rc = prep(db, "SELECT d.cluster, u.hour_s / 86400 AS day FROM usage_hourly u JOIN dims d "
            "ON d.id = u.dim_id WHERE u.hour_s >= ?1 AND u.hour_s < ?2 AND "
            "(?3 IS NULL OR d.cluster = ?3) UNION SELECT cluster, day FROM milestones WHERE "
            "day >= ?4 AND day < ?5 AND (?3 IS NULL OR cluster = ?3) ORDER BY 2, 1", &s, err);
    if (rc != MD_OK)
        goto out;
    sqlite3_bind_int64(s, 1, (int64_t)from_day * 86400);
    sqlite3_bind_int64(s, 2, (int64_t)to_day * 86400);
    if (cluster != NULL)
        sqlite3_bind_text(s, 3, cluster, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 4, from_day);
    sqlite3_bind_int(s, 5, to_day);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            struct cd *nd = md_realloc(days, nc * sizeof(*nd));

            if (nd == NULL) {
                rc = md_err_set(err, MD_ENOMEM, "out of memory");
                goto out;
            }
            days = nd;
            cap = nc;
        }
        days[n].cluster = md_strdup(col_text(s, 0));
        days[n].day = sqlite3_column_int(s, 1);
        if (days[n++].cluster == NULL) {
            rc = md_err_set(err, MD_ENOMEM, "out of memory");
            goto out;
        }
    }
    if (step != SQLITE_DONE) {
        rc = db_err(err, db, "backfill: days");
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    for (size_t i = 0; i < n; i++) {
        struct bf_day b = { .r = r, .cluster = days[i].cluster, .day = days[i].day,
                            .dry_run = dry_run, .rp = &rp };

        rc = md_store_call(st, backfill_fn, &b, err);
        if (rc != MD_OK && !(dry_run && b.done && rc == MD_ESTATE))
            goto out;
        rc = MD_OK;
        changed += (size_t)b.oc.changed;
        corrections += b.oc.corrections;
        open_days += (size_t)b.skipped_open;
        if (progress != NULL)
            progress(parg, i + 1, n);
    }
    tenants = json_array();
    for (size_t i = 0; i < rp.n; i++) {
        char oa[MD_MONEY_FMT_MAX], na[MD_MONEY_FMT_MAX];

        (void)md_money_fmt(rp.t[i].old_amount, oa, sizeof(oa));
        (void)md_money_fmt(rp.t[i].new_amount, na, sizeof(na));
        json_array_append_new(tenants, json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:b}", "namespace",
            rp.t[i].namespace, "currency", rp.t[i].currency, "old_amount", oa, "new_amount",
            na, "old_tokens", (json_int_t)rp.t[i].old_tokens, "new_tokens",
            (json_int_t)rp.t[i].new_tokens, "changed",
            rp.t[i].old_amount != rp.t[i].new_amount ||
            rp.t[i].old_tokens != rp.t[i].new_tokens));
    }
    md_pricing_day_fmt(from_day, fd, sizeof(fd));
    md_pricing_day_fmt(to_day, td, sizeof(td));
    doc = json_pack("{s:s,s:s,s:s?,s:b,s:I,s:I,s:I,s:I,s:o}", "from", fd, "to", td, "cluster",
        cluster, "dry_run", dry_run, "days", (json_int_t)n, "days_changed", (json_int_t)changed,
        "days_open", (json_int_t)open_days, "corrections", (json_int_t)corrections,
        "tenants", tenants);
    rc = dump(doc, report, len, err);
out:
    sqlite3_finalize(s);
    for (size_t i = 0; i < n; i++)
        md_free(days[i].cluster);
    md_free(days);
    for (size_t i = 0; i < rp.n; i++) {
        md_free(rp.t[i].namespace);
        md_free(rp.t[i].currency);
    }
    md_free(rp.t);
    json_decref(rp.index);
    return rc;
}
