/* store.c: SQLite store, migrations, the writer thread and reader connections.
 *
 * Threads: the writer thread owns `db` (the only read-write connection) and
 * every prepared statement on it.  The job queue is guarded by `mu`; stats
 * are atomics.  Readers are per-thread read-only connections, found through a
 * thread-local pointer and registered in `readers` (under `mu`) so that
 * md_store_close() can close them after the HTTP server has stopped.
 *
 * Invariants: a drain of the queue is one BEGIN IMMEDIATE ... COMMIT; on
 * failure it is rolled back whole and its jobs are retried, never half
 * applied.  user_version always equals the last migration applied, and it is
 * set inside that migration's transaction.  Drains start at most every
 * MD_STORE_COMMIT_GAP_MS (group commit) unless a flush, call or stop waits.
 *
 * Ledger state (schema/004_ledger_state.sql), writer thread only: `ts[]`
 * mirrors every target's committed ledger_state row; a drain edits copies
 * (`scr[]`) that replace the mirror after COMMIT and are dropped on
 * ROLLBACK, so the mirror always equals the database.  A drain's usage is
 * summed per (dims, hour) in `uagg` and written before anything else of the
 * drain reads usage_hourly (other jobs, the end of the drain).
 *
 * Usage folding (schema/006_totals.sql), writer thread: `fold_h` is H, the
 * hour before which usage_hourly is summed in usage_folded, as the running
 * transaction sees it; it returns to `fold_h_committed` on ROLLBACK.  Every
 * write below H adds to usage_folded in its transaction (the UPDATE path
 * here, inserts by trigger), and H only moves forward, adding the hours
 * it passes.  Hence usage_folded + usage_hourly[H..] = all usage ever
 * committed, which is all a start reads for /metrics.
 *
 * Failpoints (crash tests, issue 7): MD_FAILPOINT=name:N in the environment
 * makes the writer _exit(137) the Nth time it reaches the point `name`:
 *   before_commit  usage rows and checkpoints written, COMMIT not yet run
 *   after_commit   COMMIT done, the in-memory ledger not yet committed
 * Unset (always, outside tests) the check is one integer comparison. */
#define MD_MODULE "store"
#include "store.h"
#include "store_priv.h"
#include "rating.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ledger.h"
#include "log.h"
#include "usage_snapshot.h"
#include "store_int.h"

static void failpoint_init(void);

/* generated at build time from schema/NNN_*.sql */
struct md_migration {
    int         version;
    const char *name;
    const char *sql;
};
extern const struct md_migration md_migrations[];
extern const size_t md_migrations_count;

enum job_kind { JOB_EVENT = 1, JOB_SCRAPE, JOB_RETENTION, JOB_CALL, JOB_FOLD };

/* a md_store_call in flight: lives on the caller's stack until done */
struct call {
    md_store_call_fn *fn;
    void             *arg;
    int               rc;
    struct md_err     err;
    int               done;          /* guarded by mu */
};

struct job {
    enum job_kind kind;
    uint64_t      seq;
    uint64_t      ts_ns;
    char         *a;          /* event kind */
    char         *b;          /* event detail */
    struct md_batch *batch;   /* JOB_SCRAPE, owned */
    struct call     *call;    /* JOB_CALL, borrowed */
};

/* dims memo: dimension tuple -> dims.id, writer thread only.  Cleared on a
 * rollback, since ids inserted by a rolled-back transaction do not exist.
 * It starts at DIMS_MEMO_MIN slots and doubles when 3/4 full, up to
 * DIMS_MEMO_MAX: slots are hashed, so a table of the maximum size touched
 * nearly all of its 1 MiB with a few hundred tuples (issue 4: memory per
 * series at 50 targets). */
#define DIMS_MEMO_MIN 512
#define DIMS_MEMO_MAX 65536
struct dims_memo_entry {
    char    *key;             /* the seven values joined by \x1f */
    int64_t  id;
};

/* A reader's kept statements (md_store_reader_stmt): prepared once per
 * connection, keyed by their SQL text, reset after each use.  `busy` while a
 * caller holds one, so a nested request for the same SQL gets a fresh
 * statement instead of the one being stepped.  READER_STMTS_MAX bounds them:
 * the least recently used idle one is finalized to make room. */
#define READER_STMTS_MAX 24
struct reader_stmt {
    char         *sql;
    sqlite3_stmt *s;
    uint64_t      used;         /* reader's use counter at the last get */
    int           busy;
};

struct reader {
    sqlite3        *db;
    struct md_store *owner;
    struct reader_stmt stmts[READER_STMTS_MAX];
    uint64_t        uses;
};

/* A target's stored ledger state (schema/004_ledger_state.sql): the
 * committed bytes of its ledger_state row, mirrored so that a scrape
 * rewrites the row without reading it.  Writer thread only. */
#define LSTATE_FORMAT  1
#define LSTATE_REC     25
#define LSTATE_IN_USE  0x1
#define LSTATE_CREATED 0x2
#define LSTATE_MAX     (1u + (size_t)MD_LEDGER_SERIES_LIMIT * LSTATE_REC)
struct tstate {
    uint32_t target;
    size_t   len;
    uint8_t *blob;
};

/* The state of a target being written by the current transaction: a copy
 * of the mirror with this transaction's changes; it replaces the mirror on
 * COMMIT and is dropped on ROLLBACK. */
struct tscratch {
    uint32_t target;
    int      existed;         /* a ledger_state row exists (committed) */
    int      drop;            /* the target is deleted */
    int      written;
    size_t   len, cap;
    uint8_t *blob;
};

/* Usage of one drain summed per (dims, hour) before it is written: the
 * input tokens and requests of a series, and every target booking the
 * same dimensions, share one upsert.  Writer thread only. */
#define UAGG_MAX (1u << 20)   /* entries before an early flush */
struct uagg {
    int64_t  dim;
    int      used;
    uint64_t hour_s;
    uint64_t tokens, requests;
    /* the dimension values for /metrics: a scrape of this drain, alive
     * until the drain's jobs are freed after its commit */
    const struct md_batch       *b;
    const struct md_batch_entry *e;
};

struct md_store {
    char           *path;
    uint64_t        busy_timeout_ms;
    sqlite3        *db;                 /* writer thread only, after start */
    sqlite3_stmt   *ins_event;

    pthread_mutex_t mu;
    pthread_cond_t  cv_work;            /* queue not empty, or stopping */
    pthread_cond_t  cv_done;            /* a drain finished */
    struct job      queue[MD_STORE_QUEUE_MAX];
    struct job      batch[MD_STORE_QUEUE_MAX];  /* writer thread: jobs in hand */
    size_t          q_head, q_len;
    uint64_t        next_seq;           /* seq of the next submitted job */
    uint64_t        done_seq;           /* every job below this is finished */
    int             last_drain_rc;
    int             urgent;             /* a flush or call waits: drain now */
    uint64_t        drain_last_ns;      /* writer: monotonic start of the last drain */
    int             stopping;
    int             running;
    pthread_t       thread;

    struct reader  *readers[MD_STORE_READERS_MAX];
    size_t          readers_count;

    atomic_ullong   commits, errors, busy_retries, write_ns_sum, dropped;
    atomic_int      healthy;
    atomic_ullong   max_pages_want;     /* storage.max_page_count; 0: none */
    uint64_t        max_pages_have;     /* writer thread: last applied */
    int             schema_version;

    /* writer thread only (after md_store_ledger_init) */
    struct md_ledger *ledger;
    enum md_first_scrape policy;
    int             fresh;              /* no metering_started_ns at open */
    int             metering_marked;    /* metering_started_ns written */
    sqlite3_stmt   *sel_target, *ins_target, *sel_dims, *ins_dims, *upsert_usage,
                   *put_key, *del_key, *del_keys, *upd_state, *upsert_state, *del_state,
                   *put_target, *del_target, *put_meta, *begin, *commit, *upd_usage,
                   *data_version;
    int64_t         dv_last;            /* PRAGMA data_version at the last drain */
    uint64_t        tick_last_ns;       /* monotonic: the last rating tick */
    int             tick_more;          /* that tick left work */
    struct tstate  *ts;                 /* sorted by target */
    size_t          nts, tscap;
    struct tscratch *scr;               /* this transaction's targets */
    size_t          nscr, scrcap, scr_last;
    struct uagg    *uagg;               /* open addressing, power of two */
    size_t          nuagg, uaggcap;
    struct dims_memo_entry *memo;       /* open addressing, memo_cap slots */
    size_t          memo_count, memo_cap;   /* memo_cap: a power of two */

    /* ledger outcome counters (atomics: read by /metrics) */
    atomic_ullong   retention_ms;       /* 0: keep usage forever */
    uint64_t        retention_last_ns;  /* writer thread: last retention run */
    uint64_t        trim_last_ns;       /* writer thread: last malloc_trim (trim_tick) */
    /* rating (writer thread): the last (cluster, day) marked in this drain */
    struct md_rating *rating;
    char            touch_cluster[256];
    int32_t         touch_day;
    int             touch_valid;

    atomic_ullong   l_resets, l_restarts, l_anomalies, l_invalid, l_stale, l_too_large,
                    l_flagged_2p53, l_rejected, l_tokens, l_requests, l_spread_capped;

    /* /metrics: the writer's live aggregate (writer thread only, after
     * md_store_ledger_init) and the snapshots it publishes (any thread) */
    struct md_usnap_agg *usnap;
    struct md_usnap_pub *usnap_pub;

    /* usage folding (schema/006_totals.sql): H (meta usage_folded_before)
     * as this transaction sees it and as committed (writer thread); the
     * committed H and the lag for any thread */
    uint64_t        fold_h, fold_h_committed;
    atomic_ullong   fold_h_pub, fold_lag_s;
    atomic_ullong   cost_fold_lines;    /* lines past L that make the writer fold */
    sqlite3_stmt   *fold_add, *fold_range, *fold_meta;
};

static _Thread_local struct reader *tls_reader;

static int reader_get(struct md_store *st, sqlite3 **out, struct md_err *err);
static int snapshot_load(struct md_store *st, struct md_err *err);
static int prepare(struct md_store *st, const char *sql, sqlite3_stmt **out,
    struct md_err *err);
static uint64_t hash_bytes(const char *p, size_t n);
static int step_done(sqlite3_stmt *s);

int
md_store_schema_latest(void)
{
    return md_migrations_count ? md_migrations[md_migrations_count - 1].version : 0;
}

static int
db_err(struct md_err *err, sqlite3 *db, const char *what)
{
    return md_err_set(err, MD_EDB, "%s: %s", what, db ? sqlite3_errmsg(db) : "no connection");
}

static int
exec(sqlite3 *db, const char *sql, struct md_err *err)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = md_err_set(err, MD_EDB, "%.60s: %s", sql, msg ? msg : sqlite3_errmsg(db));

        sqlite3_free(msg);
        return rc;
    }
    return MD_OK;
}

static int
pragma_int(sqlite3 *db, const char *sql, int *out, struct md_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_err(err, db, sql);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = db_err(err, db, sql);
        sqlite3_finalize(st);
        return rc;
    }
    *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return MD_OK;
}

/* mkdir -p of the directory part of path. */
static int
make_parent_dirs(const char *path, struct md_err *err)
{
    char tmp[4096];
    size_t len = strlen(path);

    if (len >= sizeof(tmp))
        return md_err_set(err, MD_ELIMIT, "path longer than %zu bytes", sizeof(tmp) - 1);
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return md_err_set(err, MD_EIO, "cannot create directory \"%s\": %s", tmp,
                strerror(errno));
        *p = '/';
    }
    return MD_OK;
}

/* The first integer of a one-row query; *out untouched when there is no row. */
static int
query_i64(sqlite3 *db, const char *sql, int64_t *out, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    int rc;

    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        return db_err(err, db, sql);
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? MD_OK : db_err(err, db, sql);
    sqlite3_finalize(s);
    return rc;
}

/* The hour start lag_s before now (unix seconds). */
static uint64_t
fold_target(uint64_t lag_s)
{
    uint64_t now = md_now_realtime_ns() / 1000000000ULL, h;

    h = now > lag_s ? now - lag_s : 0;
    return h - h % 3600;
}

/* cost_totals while schema 006 is filled: groups summed in memory */
#define FILL_GROUPS_MAX (1u << 22)      /* past it, the SQL upsert per line */
#define FILL_KEY_MAX    (1u << 20)      /* bytes of a group's six values */
struct fill_group {
    uint8_t *key;        /* unpriced byte, then six (u32 length, bytes); NULL: free */
    size_t   klen;
    uint64_t hash;
    int64_t  amount, tokens, lines, first_id;
};

static void
fill_free(struct fill_group *tab, size_t cap)
{
    for (size_t i = 0; tab != NULL && i < cap; i++)
        md_free(tab[i].key);
    md_free(tab);
}

/* The group of key k in tab (open addressing), inserted when new; NULL
 * when out of memory or past FILL_GROUPS_MAX. */
static struct fill_group *
fill_find(struct fill_group **tab, size_t *cap, size_t *n, const uint8_t *k, size_t kl)
{
    uint64_t h = hash_bytes((const char *)k, kl);
    struct fill_group *g;
    size_t i;

    for (i = h & (*cap - 1); (*tab)[i].key != NULL; i = (i + 1) & (*cap - 1))
        if ((*tab)[i].hash == h && (*tab)[i].klen == kl && memcmp((*tab)[i].key, k, kl) == 0)
            return &(*tab)[i];
    if (*n + 1 > FILL_GROUPS_MAX)
        return NULL;
    if (*n + 1 > *cap / 2) {
        size_t ncap = *cap * 2;
        struct fill_group *t = md_calloc(ncap, sizeof(*t));

        if (t == NULL)
            return NULL;
        for (size_t j = 0; j < *cap; j++) {
            size_t x;

            if ((*tab)[j].key == NULL)
                continue;
            for (x = (*tab)[j].hash & (ncap - 1); t[x].key != NULL; x = (x + 1) & (ncap - 1))
                ;
            t[x] = (*tab)[j];
        }
        md_free(*tab);
        *tab = t;
        *cap = ncap;
        for (i = h & (*cap - 1); (*tab)[i].key != NULL; i = (i + 1) & (*cap - 1))
            ;
    }
    g = &(*tab)[i];
    g->key = md_malloc(kl);
    if (g->key == NULL)
        return NULL;
    memcpy(g->key, k, kl);
    g->klen = kl;
    g->hash = h;
    g->amount = g->tokens = g->lines = 0;
    g->first_id = 0;
    (*n)++;
    return g;
}

#define COST_UPSERT "ON CONFLICT DO UPDATE SET amount = amount + excluded.amount, " \
    "tokens = tokens + excluded.tokens, " \
    "first_id = CASE WHEN lines = 0 THEN excluded.first_id ELSE first_id END, " \
    "lines = lines + excluded.lines"

/* cost_totals' key order (BINARY text, column by column, unpriced last),
 * so that the upserts walk its B-tree in order instead of at random (its
 * pages are read once; the gain alone was not measured). */
static int
fill_cmp(const void *a, const void *b)
{
    const struct fill_group *x = *(const struct fill_group *const *)a;
    const struct fill_group *y = *(const struct fill_group *const *)b;
    size_t i = 1, j = 1;

    for (int c = 0; c < 6; c++) {
        uint32_t lx, ly;
        int d;

        memcpy(&lx, x->key + i, 4);
        memcpy(&ly, y->key + j, 4);
        d = memcmp(x->key + i + 4, y->key + j + 4, lx < ly ? lx : ly);
        if (d != 0)
            return d;
        if (lx != ly)
            return lx < ly ? -1 : 1;
        i += 4 + lx;
        j += 4 + ly;
    }
    return (int)x->key[0] - (int)y->key[0];
}

/* Adds the bill lines with from <= id < to to cost_totals: one scan in id
 * order, summed per group in memory, then one upsert per group (an upsert
 * per line took 130 s for 33 M lines, a GROUP BY sorts them).  MD_ELIMIT:
 * too many groups or too long values (nothing written; cost_sum_range sums
 * in SQL then); *lines: the lines read. */
static int
fill_cost(sqlite3 *db, int64_t from, int64_t to, long long *lines, struct md_err *err)
{
    sqlite3_stmt *q = NULL, *ins = NULL;
    struct fill_group *tab = md_calloc(1u << 16, sizeof(*tab)), **order = NULL;
    size_t cap = 1u << 16, n = 0;
    uint8_t *k = md_malloc(FILL_KEY_MAX);
    int rc = MD_OK, step = SQLITE_DONE;

    if (tab == NULL || k == NULL) {
        rc = md_err_set(err, MD_ENOMEM, "cost totals: out of memory");
        goto out;
    }
    if (sqlite3_prepare_v2(db, "SELECT id, cluster, namespace, department, model, currency, "
            "token_type, pricing_model = 'unpriced', amount, tokens FROM bill_lines "
            "WHERE id >= ?1 AND id < ?2 ORDER BY id", -1, &q, NULL) != SQLITE_OK) {
        rc = db_err(err, db, "cost totals: read bill lines");
        goto out;
    }
    sqlite3_bind_int64(q, 1, from);
    sqlite3_bind_int64(q, 2, to);
    while (rc == MD_OK && (step = sqlite3_step(q)) == SQLITE_ROW) {
        struct fill_group *g;
        size_t kl = 1;

        k[0] = (uint8_t)sqlite3_column_int(q, 7);
        for (int c = 1; c <= 6; c++) {
            const unsigned char *v = sqlite3_column_text(q, c);
            uint32_t l = (uint32_t)sqlite3_column_bytes(q, c);

            if (kl + 4 + l > FILL_KEY_MAX) {
                rc = md_err_set(err, MD_ELIMIT, "bill line %lld: values longer than %u bytes",
                    (long long)sqlite3_column_int64(q, 0), FILL_KEY_MAX);
                goto out;
            }
            memcpy(k + kl, &l, 4);
            if (l > 0)
                memcpy(k + kl + 4, v, l);
            kl += 4 + l;
        }
        g = fill_find(&tab, &cap, &n, k, kl);
        if (g == NULL) {
            rc = n + 1 > FILL_GROUPS_MAX ? md_err_set(err, MD_ELIMIT, "more than %u groups",
                FILL_GROUPS_MAX) : md_err_set(err, MD_ENOMEM, "cost totals: out of memory");
            goto out;
        }
        if (g->lines++ == 0)
            g->first_id = sqlite3_column_int64(q, 0);
        if (md_add_i64(g->amount, sqlite3_column_int64(q, 8), &g->amount) != MD_OK ||
            md_add_i64(g->tokens, sqlite3_column_int64(q, 9), &g->tokens) != MD_OK)
            rc = md_err_set(err, MD_EDB, "cost totals: a sum passes 2^63");
        (*lines)++;
    }
    if (rc == MD_OK && step != SQLITE_DONE)
        rc = db_err(err, db, "cost totals: read bill lines");
    if (rc != MD_OK)
        goto out;
    if (sqlite3_prepare_v2(db, "INSERT INTO cost_totals(cluster, namespace, department, model, "
            "currency, token_type, unpriced, amount, tokens, lines, first_id) VALUES (?1, ?2, "
            "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) " COST_UPSERT, -1, &ins, NULL) != SQLITE_OK) {
        rc = db_err(err, db, "cost totals: write");
        goto out;
    }
    order = md_calloc(n ? n : 1, sizeof(*order));
    if (order == NULL) {
        rc = md_err_set(err, MD_ENOMEM, "cost totals: out of memory");
        goto out;
    }
    for (size_t i = 0, m = 0; i < cap; i++)
        if (tab[i].key != NULL)
            order[m++] = &tab[i];
    qsort(order, n, sizeof(*order), fill_cmp);
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        const struct fill_group *g = order[i];
        size_t at = 1;

        for (int c = 1; c <= 6; c++) {
            uint32_t l;

            memcpy(&l, g->key + at, 4);
            sqlite3_bind_text(ins, c, (const char *)g->key + at + 4, (int)l, SQLITE_STATIC);
            at += 4 + l;
        }
        sqlite3_bind_int(ins, 7, g->key[0]);
        sqlite3_bind_int64(ins, 8, g->amount);
        sqlite3_bind_int64(ins, 9, g->tokens);
        sqlite3_bind_int64(ins, 10, g->lines);
        sqlite3_bind_int64(ins, 11, g->first_id);
        if (!step_done(ins))
            rc = db_err(err, db, "cost totals: write");
    }
out:
    sqlite3_finalize(q);
    sqlite3_finalize(ins);
    md_free(order);
    fill_free(tab, cap);
    md_free(k);
    return rc;
}

/* fill_cost, or past its limits the same sums in SQL (an upsert per line). */
static int
cost_sum_range(sqlite3 *db, int64_t from, int64_t to, long long *lines, struct md_err *err)
{
    sqlite3_stmt *q = NULL;
    int rc = fill_cost(db, from, to, lines, err);

    if (rc != MD_ELIMIT)
        return rc;
    md_log_warn("cost totals: %s; summing in SQL", err ? err->msg : "");
    if (sqlite3_prepare_v2(db, "INSERT INTO cost_totals(cluster, namespace, department, model, "
            "currency, token_type, unpriced, amount, tokens, lines, first_id) "
            "SELECT cluster, namespace, department, model, currency, token_type, "
            "pricing_model = 'unpriced', amount, tokens, 1, id FROM bill_lines "
            "WHERE id >= ?1 AND id < ?2 ORDER BY id " COST_UPSERT, -1, &q, NULL) != SQLITE_OK)
        return db_err(err, db, "cost totals");
    sqlite3_bind_int64(q, 1, from);
    sqlite3_bind_int64(q, 2, to);
    rc = sqlite3_step(q) == SQLITE_DONE ? MD_OK : db_err(err, db, "cost totals");
    if (rc == MD_OK)
        *lines = (long long)sqlite3_changes64(db);
    sqlite3_finalize(q);
    return rc;
}

/* The end of bill_lines: max(id) + 1 (1 when empty). */
static int
cost_end(sqlite3 *db, int64_t *out, struct md_err *err)
{
    int64_t m = 0;
    int rc = query_i64(db, "SELECT coalesce(max(id), 0) FROM bill_lines", &m, err);

    *out = m + 1;
    return rc;
}

/* L (meta cost_folded_before_id); 1 when unset. */
static int
cost_folded_before(sqlite3 *db, int64_t *out, struct md_err *err)
{
    *out = 1;
    return query_i64(db, "SELECT CAST(value AS INTEGER) FROM meta "
        "WHERE key = 'cost_folded_before_id'", out, err);
}

/* Moves L to the end of bill_lines when at least `every` lines lie past
 * it, adding theirs to cost_totals; in the running transaction. */
static int
cost_fold(sqlite3 *db, uint64_t every, struct md_err *err)
{
    int64_t l = 1, end = 1;
    long long lines = 0;
    char sql[160];
    int rc = cost_folded_before(db, &l, err);

    if (rc == MD_OK)
        rc = cost_end(db, &end, err);
    if (rc != MD_OK || end <= l || (uint64_t)(end - l) < every)
        return rc;
    rc = cost_sum_range(db, l, end, &lines, err);
    (void)snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta(key, value) "
        "VALUES ('cost_folded_before_id', '%lld')", (long long)end);
    if (rc == MD_OK)
        rc = exec(db, sql, err);
    return rc;
}

/* Schema 006, in its migration's transaction: usage_folded and cost_totals
 * from the whole history, once (so a crash leaves either no 006 or 006
 * filled).  One pass over usage_hourly's hours before H in key order and
 * one over bill_lines in id order, each row added to its total: no sort of
 * the history (the GROUP BY of the old start sorted 33 M lines through
 * temp files).  Logged: on an old database this is the one slow start. */
static int
fill_totals(struct md_store *st, struct md_err *err)
{
    uint64_t t0 = md_now_monotonic_ns(), h = fold_target(MD_STORE_FOLD_LAG_S);
    long long usage_rows = 0, lines = 0;
    int64_t end = 1;
    int cache = 0, rc;
    char sql[512];

    rc = pragma_int(st->db, "PRAGMA cache_size", &cache, err);
    /* the totals are small but updated in random order: keep them cached */
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA cache_size = -262144", err);
    (void)snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta(key, value) "
        "VALUES ('usage_folded_before', '%llu')", (unsigned long long)h);
    if (rc == MD_OK)
        rc = exec(st->db, sql, err);
    /* what retention deleted lies before H (its cut is never later than
     * the newest hour it keeps, and H is only moved up to a cut) */
    if (rc == MD_OK)
        rc = exec(st->db, "INSERT INTO usage_folded(dim_id, tokens, requests) "
            "SELECT dim_id, tokens, requests FROM usage_retired", err);
    (void)snprintf(sql, sizeof(sql), "INSERT INTO usage_folded(dim_id, tokens, requests) "
        "SELECT dim_id, tokens, requests FROM usage_hourly WHERE hour_s < %llu "
        "ON CONFLICT(dim_id) DO UPDATE SET tokens = tokens + excluded.tokens, "
        "requests = requests + excluded.requests", (unsigned long long)h);
    if (rc == MD_OK)
        rc = exec(st->db, sql, err);
    if (rc == MD_OK)
        usage_rows = (long long)sqlite3_changes64(st->db);
    if (rc == MD_OK)
        rc = cost_end(st->db, &end, err);
    if (rc == MD_OK)
        rc = cost_sum_range(st->db, 0, end, &lines, err);
    (void)snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta(key, value) "
        "VALUES ('cost_folded_before_id', '%lld')", (long long)end);
    if (rc == MD_OK)
        rc = exec(st->db, sql, err);
    (void)snprintf(sql, sizeof(sql), "PRAGMA cache_size = %d", cache);
    (void)exec(st->db, sql, NULL);
    if (rc == MD_OK)
        md_log_info("schema 006: /metrics totals built from %lld usage rows before %llu "
            "and %lld bill lines in %.1f s (once)", usage_rows, (unsigned long long)h, lines,
            (double)(md_now_monotonic_ns() - t0) / 1e9);
    return rc;
}

static int
migrate(struct md_store *st, struct md_err *err)
{
    int have = 0, latest = md_store_schema_latest(), rc;

    rc = pragma_int(st->db, "PRAGMA user_version", &have, err);
    if (rc != MD_OK)
        return rc;
    if (have > latest)
        return md_err_set(err, MD_EDB,
            "database \"%s\" has schema version %d, newer than this meterd knows (%d); "
            "use a newer meterd (the database was not modified)", st->path, have, latest);
    for (size_t i = 0; i < md_migrations_count; i++) {
        const struct md_migration *m = &md_migrations[i];
        char setv[64];

        if (m->version <= have)
            continue;
        rc = exec(st->db, "BEGIN IMMEDIATE", err);
        if (rc == MD_OK)
            rc = exec(st->db, m->sql, err);
        if (rc == MD_OK && m->version == 6)
            rc = fill_totals(st, err);
        (void)snprintf(setv, sizeof(setv), "PRAGMA user_version = %d", m->version);
        if (rc == MD_OK)
            rc = exec(st->db, setv, err);
        if (rc == MD_OK)
            rc = exec(st->db, "COMMIT", err);
        if (rc != MD_OK) {
            char keep[MD_ERR_MSG_MAX];

            memcpy(keep, err ? err->msg : "", err ? sizeof(keep) : 1);
            (void)exec(st->db, "ROLLBACK", NULL);
            return md_err_set(err, MD_EDB, "migration %s: %s", m->name, keep);
        }
        md_log_info("applied migration %s (schema version %d)", m->name, m->version);
        have = m->version;
    }
    st->schema_version = have;
    return MD_OK;
}

int
md_store_open(const char *path, uint64_t busy_timeout_ms, struct md_store **out,
    struct md_err *err)
{
    struct md_store *st;
    int rc;

    st = md_calloc(1, sizeof(*st));
    if (st == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    st->path = md_strdup(path);
    st->busy_timeout_ms = busy_timeout_ms;
    failpoint_init();
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv_work, NULL);
    pthread_cond_init(&st->cv_done, NULL);
    atomic_store(&st->healthy, 1);
    st->next_seq = 1;
    st->done_seq = 1;
    st->usnap_pub = md_usnap_pub_new();
    if (st->path == NULL || st->usnap_pub == NULL) {
        rc = md_err_set(err, MD_ENOMEM, "out of memory");
        goto fail;
    }
    rc = make_parent_dirs(path, err);
    if (rc != MD_OK)
        goto fail;
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
            SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = md_err_set(err, MD_EDB, "cannot open \"%s\": %s", path,
            st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, (int)(busy_timeout_ms > 600000 ? 600000 : busy_timeout_ms));
    (void)sqlite3_extended_result_codes(st->db, 1);
    /* check the version before any pragma that writes to the file */
    {
        int have = 0;

        rc = pragma_int(st->db, "PRAGMA user_version", &have, err);
        if (rc != MD_OK)
            goto fail;
        if (have > md_store_schema_latest()) {
            rc = md_err_set(err, MD_EDB,
                "database \"%s\" has schema version %d, newer than this meterd knows (%d); "
                "use a newer meterd (the database was not modified)", path, have,
                md_store_schema_latest());
            goto fail;
        }
    }
    /* WAL: readers never block the writer.  synchronous=FULL: a committed
     * usage transaction survives power loss, not only a crash (issue 7).
     * journal_size_limit keeps the WAL file bounded after checkpoints. */
    rc = exec(st->db, "PRAGMA journal_mode=WAL", err);
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA synchronous=FULL", err);
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA foreign_keys=ON", err);
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA journal_size_limit=67108864", err);
    if (rc == MD_OK)
        rc = migrate(st, err);
    if (rc != MD_OK)
        goto fail;
    {
        int have = 0;

        rc = pragma_int(st->db, "SELECT count(*) FROM meta WHERE key = 'metering_started_ns'",
            &have, err);
        if (rc != MD_OK)
            goto fail;
        st->fresh = have == 0;
        st->metering_marked = have != 0;
    }
    {
        int64_t h = 0;

        rc = query_i64(st->db, "SELECT CAST(value AS INTEGER) FROM meta "
            "WHERE key = 'usage_folded_before'", &h, err);
        if (rc != MD_OK)
            goto fail;
        st->fold_h = st->fold_h_committed = h > 0 ? (uint64_t)h : 0;
        atomic_store(&st->fold_h_pub, st->fold_h);
        atomic_store(&st->fold_lag_s, MD_STORE_FOLD_LAG_S);
        atomic_store(&st->cost_fold_lines, MD_STORE_COST_FOLD_LINES);
    }
    if (sqlite3_prepare_v3(st->db, "INSERT INTO events(ts_ns, kind, detail) VALUES (?, ?, ?)",
            -1, SQLITE_PREPARE_PERSISTENT, &st->ins_event, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(st->db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT,
            &st->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(st->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &st->commit,
            NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(st->db, "PRAGMA data_version", -1, SQLITE_PREPARE_PERSISTENT,
            &st->data_version, NULL) != SQLITE_OK) {
        rc = db_err(err, st->db, "prepare insert event");
        goto fail;
    }
    *out = st;
    return MD_OK;
fail:
    md_store_close(st);
    return rc;
}

int
md_store_open_readonly(const char *path, struct md_store **out, struct md_err *err)
{
    struct md_store *st;
    sqlite3 *db;
    int rc, have = 0;

    st = md_calloc(1, sizeof(*st));
    if (st == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    st->path = md_strdup(path);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv_work, NULL);
    pthread_cond_init(&st->cv_done, NULL);
    st->usnap_pub = md_usnap_pub_new();
    if (st->path == NULL || st->usnap_pub == NULL) {
        md_store_close(st);
        return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    rc = reader_get(st, &db, err);
    if (rc == MD_OK)
        rc = pragma_int(db, "PRAGMA user_version", &have, err);
    if (rc == MD_OK && have != md_store_schema_latest())
        rc = md_err_set(err, MD_EDB, "database \"%s\" has schema version %d, this meterd "
            "reads %d%s", path, have, md_store_schema_latest(),
            have < md_store_schema_latest() ? " (run meterd once to migrate it)" : "");
    if (rc != MD_OK) {
        md_store_close(st);
        return rc;
    }
    st->schema_version = have;
    *out = st;
    return MD_OK;
}

static void
job_free(struct job *j)
{
    md_free(j->a);
    md_free(j->b);
    md_batch_free(j->batch);
    j->a = j->b = NULL;
    j->batch = NULL;
}

/* ---- the scrape path (writer thread) ---- */

static uint64_t
hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void
memo_clear(struct md_store *st)
{
    if (st->memo == NULL)
        return;
    for (size_t i = 0; i < st->memo_cap; i++) {
        md_free(st->memo[i].key);
        st->memo[i].key = NULL;
    }
    st->memo_count = 0;
}

static int
step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);

    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW;
}

/* ---- usage folding (schema/006_totals.sql), writer thread ---- */

static int
fold_prepare(struct md_store *st, struct md_err *err)
{
    sqlite3_stmt *a = NULL, *r = NULL, *m = NULL;
    int rc;

    if (st->fold_add != NULL)
        return MD_OK;
    rc = prepare(st, "INSERT INTO usage_folded(dim_id, tokens, requests) VALUES (?1, ?2, ?3) "
        "ON CONFLICT(dim_id) DO UPDATE SET tokens = tokens + excluded.tokens, "
        "requests = requests + excluded.requests", &a, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT INTO usage_folded(dim_id, tokens, requests) "
            "SELECT dim_id, tokens, requests FROM usage_hourly WHERE hour_s >= ?1 AND "
            "hour_s < ?2 ON CONFLICT(dim_id) DO UPDATE SET tokens = tokens + excluded.tokens, "
            "requests = requests + excluded.requests", &r, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT OR REPLACE INTO meta(key, value) "
            "VALUES ('usage_folded_before', ?1)", &m, err);
    if (rc != MD_OK) {
        sqlite3_finalize(a);
        sqlite3_finalize(r);
        sqlite3_finalize(m);
        return rc;
    }
    st->fold_add = a;
    st->fold_range = r;
    st->fold_meta = m;
    return MD_OK;
}

/* Adds usage written below H to its total. */
static int
fold_row(struct md_store *st, int64_t dim, uint64_t tokens, uint64_t requests,
    struct md_err *err)
{
    int rc = fold_prepare(st, err);

    if (rc != MD_OK)
        return rc;
    sqlite3_bind_int64(st->fold_add, 1, dim);
    sqlite3_bind_int64(st->fold_add, 2, (sqlite3_int64)tokens);
    sqlite3_bind_int64(st->fold_add, 3, (sqlite3_int64)requests);
    if (!step_done(st->fold_add))
        return db_err(err, st->db, "fold late usage");
    return MD_OK;
}

/* Moves H forward to h (an hour start), adding the hours it passes to
 * usage_folded, in the running transaction. */
static int
fold_to(struct md_store *st, uint64_t h, struct md_err *err)
{
    char v[32];
    int rc;

    h -= h % 3600;
    if (h <= st->fold_h)
        return MD_OK;
    rc = fold_prepare(st, err);
    if (rc != MD_OK)
        return rc;
    sqlite3_bind_int64(st->fold_range, 1, (sqlite3_int64)st->fold_h);
    sqlite3_bind_int64(st->fold_range, 2, (sqlite3_int64)h);
    if (!step_done(st->fold_range))
        return db_err(err, st->db, "fold usage");
    (void)snprintf(v, sizeof(v), "%llu", (unsigned long long)h);
    sqlite3_bind_text(st->fold_meta, 1, v, -1, SQLITE_TRANSIENT);
    if (!step_done(st->fold_meta))
        return db_err(err, st->db, "fold usage: meta");
    st->fold_h = h;
    return MD_OK;
}

/* ---- per-drain usage sums (writer thread) ---- */

/* An UPDATE of the existing hour row (the common case: one seek), else the
 * upsert (the hour's first usage of these dimensions). */
static void stage_snapshot(struct md_store *st, const struct md_batch *b,
    const struct md_batch_entry *e, int is_req, uint64_t amount);

static int
upsert_usage_row(struct md_store *st, const struct uagg *u, struct md_err *err)
{
    uint64_t hour_s = u->hour_s, tokens = u->tokens, requests = u->requests;
    int64_t dim = u->dim;

    /* what is written is staged for /metrics, applied when it commits */
    if (st->usnap != NULL && tokens > 0)
        stage_snapshot(st, u->b, u->e, 0, tokens);
    if (st->usnap != NULL && requests > 0)
        stage_snapshot(st, u->b, u->e, 1, requests);
    sqlite3_bind_int64(st->upd_usage, 1, (sqlite3_int64)hour_s);
    sqlite3_bind_int64(st->upd_usage, 2, dim);
    sqlite3_bind_int64(st->upd_usage, 3, (sqlite3_int64)tokens);
    sqlite3_bind_int64(st->upd_usage, 4, (sqlite3_int64)requests);
    if (!step_done(st->upd_usage))
        return db_err(err, st->db, "update usage");
    /* an hour already folded (late usage): its total grows too.  An
     * insert is folded by the trigger usage_hourly_fold (schema 006); the
     * upsert below inserts, as the row was just found missing by the only
     * writer, in this transaction */
    if (sqlite3_changes(st->db) == 1)
        return hour_s < st->fold_h ? fold_row(st, dim, tokens, requests, err) : MD_OK;
    sqlite3_bind_int64(st->upsert_usage, 1, (sqlite3_int64)hour_s);
    sqlite3_bind_int64(st->upsert_usage, 2, dim);
    sqlite3_bind_int64(st->upsert_usage, 3, (sqlite3_int64)tokens);
    sqlite3_bind_int64(st->upsert_usage, 4, (sqlite3_int64)requests);
    if (!step_done(st->upsert_usage))
        return db_err(err, st->db, "upsert usage");
    return MD_OK;
}

/* Forgets the sums (the transaction failed: none of it was written). */
static void
uagg_reset(struct md_store *st)
{
    if (st->nuagg > 0)
        memset(st->uagg, 0, st->uaggcap * sizeof(*st->uagg));
    st->nuagg = 0;
}

/* Writes the sums into usage_hourly and empties them. */
static int
uagg_flush(struct md_store *st, struct md_err *err)
{
    for (size_t i = 0; i < st->uaggcap && st->nuagg > 0; i++) {
        struct uagg *e = &st->uagg[i];
        int rc;

        if (!e->used)
            continue;
        rc = upsert_usage_row(st, e, err);
        if (rc != MD_OK)
            return rc;
        e->used = 0;
        st->nuagg--;
    }
    st->nuagg = 0;
    return MD_OK;
}

static size_t
uagg_home(int64_t dim, uint64_t hour_s, size_t mask)
{
    uint64_t h = (uint64_t)dim * 0x9e3779b97f4a7c15ULL ^ hour_s * 0xc2b2ae3d27d4eb4fULL;

    return (size_t)(h ^ (h >> 29)) & mask;
}

/* Adds amount (< 2^63) to the (dim, hour) sum; a sum that would pass
 * INT64_MAX is written out first. */
static int
uagg_add(struct md_store *st, const struct md_batch *b, const struct md_batch_entry *be,
    int64_t dim, uint64_t hour_s, int is_req, uint64_t amount, struct md_err *err)
{
    struct uagg *e;
    uint64_t *sum;
    size_t i;
    int rc;

    if (st->nuagg + 1 > st->uaggcap / 2) {
        if (st->uaggcap >= UAGG_MAX) {
            rc = uagg_flush(st, err);
            if (rc != MD_OK)
                return rc;
        } else {
            size_t ncap = st->uaggcap ? st->uaggcap * 2 : 256;
            struct uagg *n = md_calloc(ncap, sizeof(*n));

            if (n == NULL)
                return md_err_set(err, MD_ENOMEM, "out of memory");
            for (size_t j = 0; j < st->uaggcap; j++) {
                if (!st->uagg[j].used)
                    continue;
                for (i = uagg_home(st->uagg[j].dim, st->uagg[j].hour_s, ncap - 1); n[i].used;
                    i = (i + 1) & (ncap - 1))
                    ;
                n[i] = st->uagg[j];
            }
            md_free(st->uagg);
            st->uagg = n;
            st->uaggcap = ncap;
        }
    }
    for (i = uagg_home(dim, hour_s, st->uaggcap - 1); st->uagg[i].used;
        i = (i + 1) & (st->uaggcap - 1))
        if (st->uagg[i].dim == dim && st->uagg[i].hour_s == hour_s)
            break;
    e = &st->uagg[i];
    if (!e->used) {
        memset(e, 0, sizeof(*e));
        e->used = 1;
        e->dim = dim;
        e->hour_s = hour_s;
        e->b = b;
        e->e = be;
        st->nuagg++;
    }
    sum = is_req ? &e->requests : &e->tokens;
    if (*sum > (uint64_t)INT64_MAX - amount) {
        rc = upsert_usage_row(st, e, err);
        if (rc != MD_OK)
            return rc;
        e->tokens = e->requests = 0;
    }
    *sum += amount;
    return MD_OK;
}

/* ---- the ledger's state rows (schema/004_ledger_state.sql) ---- */

static void
put_u64le(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8u * i));
}

static uint64_t
get_u64le(const uint8_t *p)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8u * i);
    return v;
}

static void
rec_encode(uint8_t *r, const struct md_ledger_state *ls)
{
    double c = ls->has_created ? ls->created : 0.0;
    uint64_t bits;

    memcpy(&bits, &c, sizeof(bits));
    r[0] = (uint8_t)(LSTATE_IN_USE | (ls->has_created ? LSTATE_CREATED : 0));
    put_u64le(r + 1, ls->value);
    put_u64le(r + 9, ls->ts_ns);
    put_u64le(r + 17, bits);
}

static size_t
ts_pos(const struct md_store *st, uint32_t target, int *found)
{
    size_t lo = 0, hi = st->nts;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (st->ts[mid].target < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < st->nts && st->ts[lo].target == target;
    return lo;
}

static struct tstate *
ts_find(const struct md_store *st, uint32_t target)
{
    int found;
    size_t pos = ts_pos(st, target, &found);

    return found ? &st->ts[pos] : NULL;
}

static int
ts_reserve(struct md_store *st, size_t need, struct md_err *err)
{
    struct tstate *n;
    size_t ncap;

    if (need <= st->tscap)
        return MD_OK;
    ncap = st->tscap < 16 ? 16 : st->tscap;
    while (ncap < need)
        ncap *= 2;
    n = md_realloc(st->ts, ncap * sizeof(*n));
    if (n == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    st->ts = n;
    st->tscap = ncap;
    return MD_OK;
}

/* Grows a state to hold slot; new slots are not in use (zero). */
static int
blob_fit(struct tscratch *c, uint32_t slot, struct md_err *err)
{
    size_t need = 1 + ((size_t)slot + 1) * LSTATE_REC;

    if (need > LSTATE_MAX)
        return md_err_set(err, MD_ELIMIT, "ledger state: slot %u out of range", slot);
    if (need > c->cap) {
        size_t ncap = c->cap < 64 ? 64 : c->cap;
        uint8_t *n;

        while (ncap < need)
            ncap *= 2;
        n = md_realloc(c->blob, ncap);
        if (n == NULL)
            return md_err_set(err, MD_ENOMEM, "out of memory");
        c->blob = n;
        c->cap = ncap;
    }
    if (need > c->len) {
        memset(c->blob + c->len, 0, need - c->len);
        c->len = need;
    }
    c->blob[0] = LSTATE_FORMAT;
    return MD_OK;
}

static struct tscratch *
scr_find(struct md_store *st, uint32_t target)
{
    if (st->nscr > 0 && st->scr[st->scr_last].target == target)
        return &st->scr[st->scr_last];
    for (size_t i = 0; i < st->nscr; i++) {
        if (st->scr[i].target == target) {
            st->scr_last = i;
            return &st->scr[i];
        }
    }
    return NULL;
}

/* This transaction's copy of target's state, made from the mirror. */
static int
scr_get(struct md_store *st, uint32_t target, struct tscratch **out, struct md_err *err)
{
    const struct tstate *t;
    struct tscratch *c = scr_find(st, target);

    if (c != NULL) {
        *out = c;
        return MD_OK;
    }
    if (st->nscr == st->scrcap) {
        size_t ncap = st->scrcap < 16 ? 16 : st->scrcap * 2;
        struct tscratch *n = md_realloc(st->scr, ncap * sizeof(*n));

        if (n == NULL)
            return md_err_set(err, MD_ENOMEM, "out of memory");
        st->scr = n;
        st->scrcap = ncap;
    }
    c = &st->scr[st->nscr];
    memset(c, 0, sizeof(*c));
    c->target = target;
    t = ts_find(st, target);
    c->existed = t != NULL;
    c->len = c->cap = t != NULL ? t->len : 1;
    c->blob = md_malloc(c->cap);
    if (c->blob == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    if (t != NULL)
        memcpy(c->blob, t->blob, t->len);
    else
        c->blob[0] = LSTATE_FORMAT;
    st->scr_last = st->nscr++;
    *out = c;
    return MD_OK;
}

/* The transaction failed: its states are dropped. */
static void
scr_clear(struct md_store *st)
{
    for (size_t i = 0; i < st->nscr; i++)
        md_free(st->scr[i].blob);
    st->nscr = 0;
    st->scr_last = 0;
}

/* The transaction committed: its states become the mirror.  Room in ts[]
 * was reserved before COMMIT, so this cannot fail. */
static void
scr_install(struct md_store *st)
{
    for (size_t i = 0; i < st->nscr; i++) {
        struct tscratch *c = &st->scr[i];
        int found;
        size_t pos = ts_pos(st, c->target, &found);

        if (c->drop) {
            if (found) {
                md_free(st->ts[pos].blob);
                memmove(&st->ts[pos], &st->ts[pos + 1], (st->nts - pos - 1) * sizeof(*st->ts));
                st->nts--;
            }
            md_free(c->blob);
        } else if (found) {
            md_free(st->ts[pos].blob);
            st->ts[pos].blob = c->blob;
            st->ts[pos].len = c->len;
        } else {
            memmove(&st->ts[pos + 1], &st->ts[pos], (st->nts - pos) * sizeof(*st->ts));
            st->ts[pos].target = c->target;
            st->ts[pos].blob = c->blob;
            st->ts[pos].len = c->len;
            st->nts++;
        }
        c->blob = NULL;
    }
    st->nscr = 0;
    st->scr_last = 0;
}

static int
write_state_row(struct md_store *st, struct tscratch *c, int upsert, struct md_err *err)
{
    sqlite3_stmt *s = upsert || !c->existed ? st->upsert_state : st->upd_state;

    sqlite3_bind_int64(s, 1, c->target);
    sqlite3_bind_blob(s, 2, c->blob, (int)c->len, SQLITE_STATIC);
    if (!step_done(s))
        return db_err(err, st->db, "write ledger state");
    if (!upsert && c->existed && sqlite3_changes(st->db) != 1)
        return md_err_set(err, MD_EDB, "ledger state of target %u: row missing", c->target);
    c->written = 1;
    return MD_OK;
}

static int
write_key_row(struct md_store *st, uint32_t target, uint32_t slot, const char *key, size_t len,
    struct md_err *err)
{
    sqlite3_bind_int64(st->put_key, 1, target);
    sqlite3_bind_int64(st->put_key, 2, slot);
    sqlite3_bind_blob(st->put_key, 3, key, (int)len, SQLITE_STATIC);
    if (!step_done(st->put_key))
        return db_err(err, st->db, "write ledger key");
    return MD_OK;
}

/* doubles the dims memo (memo_count reached 3/4 of memo_cap); on failure the
 * memo stays as it is and dims_id stops adding to it */
static int
memo_grow(struct md_store *st)
{
    size_t cap = st->memo_cap * 2;
    struct dims_memo_entry *m;

    if (cap > DIMS_MEMO_MAX || (m = md_calloc(cap, sizeof(*m))) == NULL)
        return 0;
    for (size_t i = 0; i < st->memo_cap; i++) {
        size_t slot;

        if (st->memo[i].key == NULL)
            continue;
        slot = hash_bytes(st->memo[i].key, strlen(st->memo[i].key)) & (cap - 1);
        while (m[slot].key != NULL)
            slot = (slot + 1) & (cap - 1);
        m[slot] = st->memo[i];
    }
    md_free(st->memo);
    st->memo = m;
    st->memo_cap = cap;
    return 1;
}

/* dims.id of entry e's dimension tuple, inserting it when new. */
static int
dims_id(struct md_store *st, const struct md_batch *b, const struct md_batch_entry *e,
    int64_t *out, struct md_err *err)
{
    char key[MD_DIM_COUNT * 300];
    size_t klen = 0, slot;
    uint64_t h;
    int rc;

    for (int d = 0; d < MD_DIM_COUNT; d++) {
        size_t n = e->dim_len[d] < 256 ? e->dim_len[d] : 256;

        memcpy(key + klen, md_batch_str(b, e->dim_off[d]), n);
        klen += n;
        key[klen++] = '\x1f';
    }
    key[klen] = '\0';
    h = hash_bytes(key, klen);
    slot = h & (st->memo_cap - 1);
    while (st->memo[slot].key != NULL) {     /* never full: at most 3/4 */
        if (strcmp(st->memo[slot].key, key) == 0) {
            *out = st->memo[slot].id;
            return MD_OK;
        }
        slot = (slot + 1) & (st->memo_cap - 1);
    }
    for (int d = 0; d < MD_DIM_COUNT; d++)
        sqlite3_bind_text(st->sel_dims, d + 1, md_batch_str(b, e->dim_off[d]),
            (int)e->dim_len[d], SQLITE_STATIC);
    rc = sqlite3_step(st->sel_dims);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st->sel_dims, 0);
        sqlite3_reset(st->sel_dims);
    } else {
        sqlite3_reset(st->sel_dims);
        if (rc != SQLITE_DONE)
            return db_err(err, st->db, "select dims");
        for (int d = 0; d < MD_DIM_COUNT; d++)
            sqlite3_bind_text(st->ins_dims, d + 1, md_batch_str(b, e->dim_off[d]),
                (int)e->dim_len[d], SQLITE_STATIC);
        if (!step_done(st->ins_dims))
            return db_err(err, st->db, "insert dims");
        *out = sqlite3_last_insert_rowid(st->db);
    }
    /* memoise while there is room (3/4 full at most keeps probes short) */
    if (st->memo_count + 1 > st->memo_cap / 4 * 3 && memo_grow(st)) {
        slot = h & (st->memo_cap - 1);
        while (st->memo[slot].key != NULL)
            slot = (slot + 1) & (st->memo_cap - 1);
    }
    if (st->memo_count + 1 <= st->memo_cap / 4 * 3) {
        char *k = md_strdup(key);

        if (k != NULL) {
            st->memo[slot].key = k;
            st->memo[slot].id = *out;
            st->memo_count++;
        }
    }
    return MD_OK;
}

static int
target_id(struct md_store *st, const struct md_batch *b, uint32_t *out, struct md_err *err)
{
    int rc;

    sqlite3_bind_text(st->sel_target, 1, b->target, -1, SQLITE_STATIC);
    rc = sqlite3_step(st->sel_target);
    if (rc == SQLITE_ROW) {
        *out = (uint32_t)sqlite3_column_int64(st->sel_target, 0);
        sqlite3_reset(st->sel_target);
        return MD_OK;
    }
    sqlite3_reset(st->sel_target);
    if (rc != SQLITE_DONE)
        return db_err(err, st->db, "select target");
    sqlite3_bind_text(st->ins_target, 1, b->target, -1, SQLITE_STATIC);
    sqlite3_bind_int(st->ins_target, 2, b->target_initial);
    sqlite3_bind_int64(st->ins_target, 3, (sqlite3_int64)b->scrape_ns);
    if (!step_done(st->ins_target))
        return db_err(err, st->db, "insert target");
    if (sqlite3_last_insert_rowid(st->db) > UINT32_MAX)
        return md_err_set(err, MD_ELIMIT, "more than 2^32 targets");
    *out = (uint32_t)sqlite3_last_insert_rowid(st->db);
    return MD_OK;
}

static void
count_result(struct md_store *st, const struct md_ledger_result *r)
{
    atomic_fetch_add(&st->l_resets, r->resets);
    atomic_fetch_add(&st->l_restarts, (unsigned long long)r->target_restart);
    atomic_fetch_add(&st->l_anomalies, (unsigned long long)r->anomaly);
    atomic_fetch_add(&st->l_invalid, r->skipped_nan + r->skipped_inf + r->skipped_negative +
        r->skipped_non_integer + r->bad_ts);
    atomic_fetch_add(&st->l_stale, r->stale_ts);
    atomic_fetch_add(&st->l_too_large, r->skipped_too_large);
    atomic_fetch_add(&st->l_flagged_2p53, r->flagged_2p53);
    atomic_fetch_add(&st->l_spread_capped, r->spread_capped);
}

/* Stages a committed-to-be delta for /metrics (dims without operation).
 * Failures only cost the snapshot a delta, counted there as untracked. */
static void
stage_snapshot(struct md_store *st, const struct md_batch *b, const struct md_batch_entry *e,
    int is_req, uint64_t amount)
{
    static const int pick[6] = { MD_DIM_CLUSTER, MD_DIM_NAMESPACE, MD_DIM_DEPARTMENT,
                                 MD_DIM_MODEL, MD_DIM_PROVIDER, MD_DIM_TOKEN_TYPE };
    const char *v[6];
    size_t l[6];

    for (int i = 0; i < 6; i++) {
        v[i] = md_batch_str(b, e->dim_off[pick[i]]);
        l[i] = e->dim_len[pick[i]];
    }
    (void)md_usnap_agg_stage_usage(st->usnap, v, l, is_req ? 0 : amount, is_req ? amount : 0);
}

/* Runs one scrape through the ledger and writes the usage it produced.  A
 * batch the ledger refuses (duplicate identities, series limit) is skipped
 * and counted; a database error fails the whole transaction. */
static int
apply_scrape(struct md_store *st, struct md_batch *b, uint64_t *tokens, uint64_t *requests,
    struct md_err *err)
{
    struct md_ledger_input *in = NULL;
    struct md_ledger_result res;
    struct md_err lerr = {0};
    uint32_t tid = 0;
    int rc;

    if (st->ledger == NULL)
        return md_err_set(err, MD_ESTATE, "scrape batch before md_store_ledger_init");
    rc = target_id(st, b, &tid, err);
    if (rc != MD_OK)
        return rc;
    if (b->count > 0) {
        in = md_calloc(b->count, sizeof(*in));
        if (in == NULL)
            return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < b->count; i++) {
        const struct md_batch_entry *e = &b->e[i];

        in[i].key = md_batch_str(b, e->key_off);
        in[i].key_len = e->key_len;
        in[i].value = e->value;
        in[i].has_ts = e->has_ts;
        in[i].ts_ms = e->ts_ms;
        in[i].has_created = e->has_created;
        in[i].created = e->created;
    }
    rc = md_ledger_apply(st->ledger, tid, b->target_initial, st->policy, b->scrape_ns, in,
        b->count, &res, &lerr);
    md_free(in);
    if (rc != MD_OK) {
        atomic_fetch_add(&st->l_rejected, 1);
        md_log_err("target \"%s\": scrape rejected by the ledger: %s", b->target, lerr.msg);
        return rc == MD_ENOMEM ? md_err_set(err, MD_ENOMEM, "ledger: out of memory") : MD_OK;
    }
    count_result(st, &res);
    if (res.target_restart)
        md_log_info("target \"%s\": restarted (%zu of %zu series went down); its series "
            "count in full", b->target, res.went_down, res.in_both);
    if (res.anomaly)
        md_log_warn("target \"%s\": %zu of %zu series went down, too few for a restart; "
            "only those reset", b->target, res.went_down, res.in_both);
    for (size_t i = 0; i < res.delta_count; i++) {
        const struct md_ledger_delta *d = &res.deltas[i];
        const struct md_batch_entry *e = &b->e[d->input_index];
        int is_req = e->kind == MD_KIND_REQUESTS;
        int64_t dim = 0;

        rc = dims_id(st, b, e, &dim, err);
        if (rc != MD_OK)
            return rc;
        if (d->amount > INT64_MAX)
            return md_err_set(err, MD_ELIMIT, "delta above 2^63");
        rc = uagg_add(st, b, e, dim, d->hour_start_s, is_req, d->amount, err);
        if (rc != MD_OK)
            return rc;
        if (st->rating != NULL && !is_req) {
            const char *cl = md_batch_str(b, e->dim_off[MD_DIM_CLUSTER]);
            size_t cl_len = e->dim_len[MD_DIM_CLUSTER];
            int32_t day = (int32_t)(d->hour_start_s / 86400);

            /* one mark per (cluster, day) and drain: late usage for a
             * closed day commits together with its re-rating mark */
            if (!st->touch_valid || st->touch_day != day || cl_len >= sizeof(st->touch_cluster) ||
                strlen(st->touch_cluster) != cl_len || memcmp(st->touch_cluster, cl, cl_len) != 0) {
                rc = md_rating_touch(st->rating, st->db, cl, cl_len, day, err);
                if (rc != MD_OK)
                    return rc;
                st->touch_valid = cl_len < sizeof(st->touch_cluster);
                if (st->touch_valid) {
                    memcpy(st->touch_cluster, cl, cl_len);
                    st->touch_cluster[cl_len] = '\0';
                    st->touch_day = day;
                }
            }
        }
        if (is_req)
            *requests += d->amount;
        else
            *tokens += d->amount;
    }
    return MD_OK;
}

/* Writes the ledger states staged by this transaction's applies: a key row
 * for each new series (and its removal when one is dropped), and one state
 * row per target, rewritten whole from the mirror and the staged records. */
static int
write_staged(struct md_store *st, struct md_err *err)
{
    size_t n;
    int rc;

    if (st->ledger == NULL)
        return MD_OK;
    n = md_ledger_staged_series_count(st->ledger);
    for (size_t i = 0; i < n; i++) {
        struct md_ledger_state ls;
        struct tscratch *c;

        md_ledger_staged_series(st->ledger, i, &ls);
        rc = scr_get(st, ls.target, &c, err);
        if (rc != MD_OK)
            return rc;
        if (ls.dropped) {
            size_t at = 1 + (size_t)ls.slot * LSTATE_REC;

            if (at < c->len)
                memset(c->blob + at, 0, LSTATE_REC);
            if (ls.is_new)
                continue;       /* never written */
            sqlite3_bind_int64(st->del_key, 1, ls.target);
            sqlite3_bind_int64(st->del_key, 2, ls.slot);
            if (!step_done(st->del_key))
                return db_err(err, st->db, "delete ledger key");
            continue;
        }
        rc = blob_fit(c, ls.slot, err);
        if (rc != MD_OK)
            return rc;
        rec_encode(c->blob + 1 + (size_t)ls.slot * LSTATE_REC, &ls);
        if (ls.is_new) {
            rc = write_key_row(st, ls.target, ls.slot, ls.key, ls.key_len, err);
            if (rc != MD_OK)
                return rc;
        }
    }
    n = md_ledger_staged_target_count(st->ledger);
    for (size_t i = 0; i < n; i++) {
        struct md_ledger_target_state ts;
        struct tscratch *c;

        md_ledger_staged_target(st->ledger, i, &ts);
        if (ts.dropped) {
            rc = scr_get(st, ts.target, &c, err);
            if (rc != MD_OK)
                return rc;
            c->drop = c->written = 1;
            sqlite3_bind_int64(st->del_state, 1, ts.target);
            sqlite3_bind_int64(st->del_keys, 1, ts.target);
            sqlite3_bind_int64(st->del_target, 1, ts.target);
            if (!step_done(st->del_state) || !step_done(st->del_keys) ||
                    !step_done(st->del_target))
                return db_err(err, st->db, "delete target");
            continue;
        }
        sqlite3_bind_int64(st->put_target, 1, (sqlite3_int64)ts.last_scrape_ns);
        sqlite3_bind_int64(st->put_target, 2, ts.target);
        if (!step_done(st->put_target))
            return db_err(err, st->db, "update target");
        c = scr_find(st, ts.target);
        if (c != NULL && !c->written) {
            rc = write_state_row(st, c, 0, err);
            if (rc != MD_OK)
                return rc;
        }
    }
    /* every target with staged series is staged itself (ledger.h) */
    for (size_t i = 0; i < st->nscr; i++)
        if (!st->scr[i].written)
            return md_err_set(err, MD_ESTATE, "ledger: series of target %u staged without "
                "the target", st->scr[i].target);
    return ts_reserve(st, st->nts + st->nscr, err);
}

static int
apply_job(struct md_store *st, struct job *j, uint64_t *tokens, uint64_t *requests,
    struct md_err *err)
{
    int rc = MD_OK;

    switch (j->kind) {
    case JOB_SCRAPE:
        rc = apply_scrape(st, j->batch, tokens, requests, err);
        break;
    case JOB_RETENTION: {
        /* ts_ns carries the cutoff: whole hours older than it go */
        sqlite3_stmt *del = NULL;

        /* only days whose bill is computed and not dirty (closed or
         * finalized): usage a bill still needs is never deleted, and the
         * rater never re-rates a day before usage_kept_from_s (a re-rate
         * of deleted usage would book the whole bill away as a correction) */
#define RETAINED_WHERE "hour_s < ?1 AND EXISTS " \
                "(SELECT 1 FROM dims d JOIN milestones m ON m.cluster = d.cluster " \
                "WHERE d.id = usage_hourly.dim_id AND m.day = usage_hourly.hour_s / 86400 " \
                "AND m.state IN ('closed', 'finalized') AND m.dirty = 0)"
        /* H moves up to the cut first (same transaction): what goes is
         * in usage_folded, so the /metrics counters loaded at the next
         * start do not go down; usage_retired keeps the record of it */
        rc = fold_to(st, j->ts_ns / 1000000000ULL, err);
        if (rc != MD_OK)
            break;
        if (sqlite3_prepare_v2(st->db, "INSERT INTO usage_retired(dim_id, tokens, requests) "
                "SELECT dim_id, sum(tokens), sum(requests) FROM usage_hourly WHERE "
                RETAINED_WHERE " GROUP BY dim_id ON CONFLICT(dim_id) DO UPDATE SET "
                "tokens = tokens + excluded.tokens, requests = requests + excluded.requests",
                -1, &del, NULL) != SQLITE_OK)
            return db_err(err, st->db, "retention");
        sqlite3_bind_int64(del, 1, (sqlite3_int64)(j->ts_ns / 1000000000ULL));
        rc = sqlite3_step(del) == SQLITE_DONE ? MD_OK : db_err(err, st->db, "retention totals");
        sqlite3_finalize(del);
        del = NULL;
        if (rc != MD_OK)
            break;
        if (sqlite3_prepare_v2(st->db, "DELETE FROM usage_hourly WHERE " RETAINED_WHERE, -1,
                &del, NULL) != SQLITE_OK)
            return db_err(err, st->db, "retention");
#undef RETAINED_WHERE
        sqlite3_bind_int64(del, 1, (sqlite3_int64)(j->ts_ns / 1000000000ULL));
        if (sqlite3_step(del) != SQLITE_DONE) {
            rc = db_err(err, st->db, "retention");
        } else {
            int deleted = sqlite3_changes(st->db);
            char v[32];

            (void)snprintf(v, sizeof(v), "%llu", (unsigned long long)(j->ts_ns / 1000000000ULL));
            sqlite3_bind_text(st->put_meta, 1, "usage_kept_from_s", -1, SQLITE_STATIC);
            sqlite3_bind_text(st->put_meta, 2, v, -1, SQLITE_TRANSIENT);
            if (!step_done(st->put_meta))
                rc = db_err(err, st->db, "retention meta");
            else if (deleted > 0)
                md_log_info("usage.retention: deleted %d hourly rows before %s (unix seconds)",
                    deleted, v);
        }
        sqlite3_finalize(del);
        break;
    }
    case JOB_CALL:
        /* the call's own savepoint: its failure undoes only its writes */
        rc = exec(st->db, "SAVEPOINT md_call", err);
        if (rc != MD_OK)
            break;
        j->call->rc = j->call->fn(j->call->arg, st->db, &j->call->err);
        if (j->call->rc != MD_OK)
            rc = exec(st->db, "ROLLBACK TO md_call", err);
        if (rc == MD_OK)
            rc = exec(st->db, "RELEASE md_call", err);
        break;
    case JOB_FOLD:
        rc = fold_to(st, j->ts_ns, err);   /* ts_ns carries H, unix seconds */
        break;
    case JOB_EVENT:
        sqlite3_bind_int64(st->ins_event, 1, (sqlite3_int64)j->ts_ns);
        sqlite3_bind_text(st->ins_event, 2, j->a, -1, SQLITE_STATIC);
        sqlite3_bind_text(st->ins_event, 3, j->b ? j->b : "", -1, SQLITE_STATIC);
        if (sqlite3_step(st->ins_event) != SQLITE_DONE)
            rc = db_err(err, st->db, "insert event");
        sqlite3_reset(st->ins_event);
        sqlite3_clear_bindings(st->ins_event);
        break;
    }
    return rc;
}

/* ---- failpoints (see the file comment) ---- */

enum failpoint { FP_NONE = 0, FP_BEFORE_COMMIT, FP_AFTER_COMMIT };

static enum failpoint fp_point;         /* set once in md_store_open */
static uint64_t       fp_left;          /* writer thread only */

static void
failpoint_init(void)
{
    static const char *const names[] = { NULL, "before_commit", "after_commit" };
    const char *v = getenv("MD_FAILPOINT"), *colon;
    uint64_t n = 0;

    if (v == NULL || (colon = strchr(v, ':')) == NULL)
        return;
    for (int i = 1; i < 3; i++) {
        if (strlen(names[i]) == (size_t)(colon - v) &&
            strncmp(v, names[i], (size_t)(colon - v)) == 0 &&
            md_parse_u64(colon + 1, strlen(colon + 1), 1000000, &n) == MD_OK && n > 0) {
            fp_point = (enum failpoint)i;
            fp_left = n;
            md_log_warn("failpoint %s armed: _exit(137) at hit %llu", names[i],
                (unsigned long long)n);
        }
    }
}

static void
failpoint(enum failpoint p)
{
    if (fp_point != p || p == FP_NONE)
        return;
    if (--fp_left == 0)
        _exit(137);
}

/* Applies jobs[0..n) in one transaction.  On failure nothing is applied. */
static int
commit_jobs(struct md_store *st, struct job *jobs, size_t n, struct md_err *err)
{
    uint64_t t0 = md_now_monotonic_ns(), tokens = 0, requests = 0;
    int rc = step_done(st->begin) ? MD_OK : db_err(err, st->db, "BEGIN IMMEDIATE"), scrapes = 0;

    /* The milestone memo (apply_scrape) skips re-marking a (cluster, day)
     * marked by an earlier committed drain: the mark is a no-op while the
     * milestone stays as it left it (open, or dirty).  Only the rater (a
     * tick or a call on this connection) or another process changes it,
     * so those forget the memo: another process's commit shows as a new
     * PRAGMA data_version. */
    if (rc == MD_OK) {
        int64_t v = 0;

        if (sqlite3_step(st->data_version) == SQLITE_ROW)
            v = sqlite3_column_int64(st->data_version, 0);
        sqlite3_reset(st->data_version);
        if (v == 0 || v != st->dv_last)
            st->touch_valid = 0;
        st->dv_last = v;
    }

    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        /* other jobs (retention, calls) see the usage of the scrapes
         * before them, as if each scrape had been written at once */
        if (jobs[i].kind != JOB_SCRAPE)
            rc = uagg_flush(st, err);
        if (jobs[i].kind == JOB_CALL)
            st->touch_valid = 0;
        if (rc == MD_OK)
            rc = apply_job(st, &jobs[i], &tokens, &requests, err);
        if (jobs[i].kind == JOB_CALL)
            st->touch_valid = 0;
        scrapes |= jobs[i].kind == JOB_SCRAPE;
    }
    if (rc == MD_OK)
        rc = uagg_flush(st, err);
    /* the metering writer folds hours once they are old enough: about one
     * hour's rows once an hour, in the drain's transaction */
    if (rc == MD_OK && st->ledger != NULL)
        rc = fold_to(st, fold_target(atomic_load(&st->fold_lag_s)), err);
    /* and the bill lines rated since the last fold, once there are many
     * (backfill: a call per day) */
    if (rc == MD_OK)
        rc = cost_fold(st->db, atomic_load(&st->cost_fold_lines), err);
    if (rc == MD_OK)
        rc = write_staged(st, err);
    if (rc == MD_OK && scrapes && !st->metering_marked) {
        char v[32];

        (void)snprintf(v, sizeof(v), "%llu", (unsigned long long)md_now_realtime_ns());
        sqlite3_bind_text(st->put_meta, 1, "metering_started_ns", -1, SQLITE_STATIC);
        sqlite3_bind_text(st->put_meta, 2, v, -1, SQLITE_TRANSIENT);
        if (!step_done(st->put_meta))
            rc = db_err(err, st->db, "write meta");
    }
    if (rc == MD_OK && scrapes)
        failpoint(FP_BEFORE_COMMIT);
    if (rc == MD_OK && !step_done(st->commit))
        rc = db_err(err, st->db, "COMMIT");
    if (rc == MD_OK && scrapes)
        failpoint(FP_AFTER_COMMIT);
    if (rc != MD_OK) {
        if (!sqlite3_get_autocommit(st->db))
            (void)exec(st->db, "ROLLBACK", NULL);   /* keep the first error */
        /* the in-memory ledger returns to the last committed state, so the
         * next scrape bills the whole gap; dims ids of this txn are gone */
        if (st->ledger != NULL)
            md_ledger_rollback(st->ledger);
        if (st->usnap != NULL)
            md_usnap_agg_rollback(st->usnap);
        memo_clear(st);
        uagg_reset(st);
        scr_clear(st);
        st->touch_valid = 0;
        st->fold_h = st->fold_h_committed;
        atomic_fetch_add(&st->errors, 1);
        return rc;
    }
    st->fold_h_committed = st->fold_h;
    atomic_store(&st->fold_h_pub, st->fold_h);
    if (st->ledger != NULL)
        md_ledger_commit(st->ledger);
    scr_install(st);
    if (st->usnap != NULL && md_usnap_agg_commit(st->usnap))
        md_usnap_pub_publish(st->usnap_pub, md_usnap_agg_snapshot(st->usnap));
    if (scrapes)
        st->metering_marked = 1;
    atomic_fetch_add(&st->l_tokens, tokens);
    atomic_fetch_add(&st->l_requests, requests);
    atomic_fetch_add(&st->commits, 1);
    atomic_fetch_add(&st->write_ns_sum, md_now_monotonic_ns() - t0);
    return MD_OK;
}

static int
is_busy(sqlite3 *db)
{
    int e = sqlite3_errcode(db);

    return e == SQLITE_BUSY || e == SQLITE_LOCKED;
}

/* storage.max_page_count (a rehearsal of a full disk): writes that need a
 * page past the cap fail with SQLITE_FULL and roll back like any failure.
 * SQLite keeps the cap at least the current page count. */
static void
apply_max_pages(struct md_store *st)
{
    uint64_t want = atomic_load(&st->max_pages_want);
    char sql[64];

    if (want == st->max_pages_have)
        return;
    (void)snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%llu",
        (unsigned long long)(want ? want : 4294967294ULL));
    if (exec(st->db, sql, NULL) == MD_OK)
        st->max_pages_have = want;
}

void
md_store_set_max_page_count(struct md_store *st, uint64_t pages)
{
    atomic_store(&st->max_pages_want, pages);
}

/* The rater's ticks commit on their own: their lines are folded in a
 * transaction of its own once there are many (a drain folds them too). */
static void
cost_fold_tick(struct md_store *st)
{
    uint64_t every = atomic_load(&st->cost_fold_lines);
    int64_t l = 1, end = 1;
    struct md_err err = {0};
    int rc;

    if (cost_folded_before(st->db, &l, &err) != MD_OK || cost_end(st->db, &end, &err) != MD_OK ||
        end <= l || (uint64_t)(end - l) < every)
        return;
    rc = exec(st->db, "BEGIN IMMEDIATE", &err);
    if (rc == MD_OK)
        rc = cost_fold(st->db, every, &err);
    if (rc == MD_OK)
        rc = exec(st->db, "COMMIT", &err);
    if (rc != MD_OK) {
        if (!sqlite3_get_autocommit(st->db))
            (void)exec(st->db, "ROLLBACK", NULL);
        md_log_warn("cost totals: folding the rated lines failed (a later drain retries): %s",
            err.msg);
    }
}

/* One rating tick; a tick that wrote anything forgets the milestone memo. */
static void
rating_tick(struct md_store *st, uint64_t budget_ms)
{
    sqlite3_int64 before = sqlite3_total_changes64(st->db);

    st->tick_more = md_rating_tick(st->rating, st->db, budget_ms);
    if (sqlite3_total_changes64(st->db) != before)
        cost_fold_tick(st);
    st->tick_last_ns = md_now_monotonic_ns();
    if (sqlite3_total_changes64(st->db) != before)
        st->touch_valid = 0;
    if (md_rating_take_changed(st->rating) && st->usnap != NULL)
        md_usnap_pub_publish(st->usnap_pub, md_usnap_agg_snapshot(st->usnap));
}

/* About once a minute, hand the free memory of every malloc arena back to
 * the kernel (malloc_trim(0) releases whole free pages anywhere in a heap,
 * not only at its top).  Each thread that allocates (scrape, writer,
 * discovery, the HTTP threads, reloads) gets its own glibc arena, and the
 * free pages scattered in them stay resident: the hour soak's RSS crept up
 * 18-42 KiB a minute in steps while the heap in use (heaptrack) grew about
 * 3 KiB a minute (RELIABILITY 18).  A trim walks the arenas' free chunks,
 * each arena locked in turn and no lock of meterd's held: 1.8 ms measured
 * for 16 MB in use in 8 fragmented arenas, less at meterd's few MB, once a
 * minute. */
static void
trim_tick(struct md_store *st)
{
    uint64_t now = md_now_monotonic_ns();

    if (now - st->trim_last_ns < MD_STORE_TRIM_EVERY_S * 1000000000ULL)
        return;
    st->trim_last_ns = now;
#ifdef __GLIBC__
    (void)malloc_trim(0);
#endif
}

static void *
writer_main(void *arg)
{
    struct md_store *st = arg;
    struct job *batch = st->batch;      /* writer thread only */
    struct md_complaint complaint = {0};

    for (;;) {
        struct md_err err = {0};
        uint64_t last_seq;
        size_t n = 0;
        int rc, stopping;

        pthread_mutex_lock(&st->mu);
        while (st->q_len == 0 && !st->stopping) {
            struct timespec until;

            if (st->rating == NULL) {
                pthread_cond_wait(&st->cv_work, &st->mu);
                continue;
            }
            /* idle: rate (close days past their grace, re-rate dirty days)
             * about once a second, with the queue unlocked */
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            if (pthread_cond_timedwait(&st->cv_work, &st->mu, &until) == 0 || st->q_len > 0 ||
                st->stopping)
                continue;
            pthread_mutex_unlock(&st->mu);
            rating_tick(st, 200);
            pthread_mutex_lock(&st->mu);
        }
        /* group commit: a drain starts at most every MD_STORE_COMMIT_GAP_MS,
         * so that one transaction carries the scrapes of that time (their
         * usage summed per (dims, hour), one BEGIN/COMMIT and WAL sync).
         * Nothing is lost by waiting: queued scrapes are not committed
         * yet, and a crash loses them exactly as it loses any queued
         * scrape (counters are cumulative: the next scrape bills the gap).
         * A flush, a call, a stop or a half-full queue do not wait. */
        while (st->q_len > 0 && !st->stopping && !st->urgent &&
                st->q_len < MD_STORE_QUEUE_MAX / 2) {
            uint64_t now = md_now_monotonic_ns(), due = st->drain_last_ns +
                (uint64_t)MD_STORE_COMMIT_GAP_MS * 1000000ULL;
            struct timespec until;

            if (now >= due)
                break;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += (long)(due - now);
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            (void)pthread_cond_timedwait(&st->cv_work, &st->mu, &until);
        }
        st->urgent = 0;
        st->drain_last_ns = md_now_monotonic_ns();
        stopping = st->stopping;
        while (st->q_len > 0) {
            batch[n++] = st->queue[st->q_head];
            st->q_head = (st->q_head + 1) % MD_STORE_QUEUE_MAX;
            st->q_len--;
        }
        /* empty: the next jobs go to the front again, so the ring's pages
         * that are ever touched are those of the longest queue, not all
         * 4096 slots (224 KiB) going round */
        st->q_head = 0;
        pthread_mutex_unlock(&st->mu);
        if (n == 0 && stopping)
            break;
        last_seq = batch[n - 1].seq;
        apply_max_pages(st);

        /* a held lock is retried (the jobs stay in hand) until it is free;
         * any other failure drops this drain after logging it */
        for (int attempt = 0;; attempt++) {
            rc = commit_jobs(st, batch, n, &err);
            if (rc == MD_OK || !is_busy(st->db) || attempt >= 20)
                break;
            atomic_fetch_add(&st->busy_retries, 1);
            md_complain(&complaint, MD_LOG_WARN, MD_MODULE,
                "write: database is locked by another process; retrying");
            nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = 100000000 }, NULL);
        }
        if (rc == MD_OK) {
            atomic_store(&st->healthy, 1);
            md_release(&complaint, MD_MODULE, "write: committing again");
        } else {
            atomic_store(&st->healthy, 0);
            md_complain(&complaint, MD_LOG_ERR, MD_MODULE, "write: %s (rolled back)", err.msg);
        }
        /* under load the queue is never idle: rate after a drain too, at
         * once after a call (pricing, backfill, tests adding usage) or while
         * the rater has work, else about once a second (a tick that finds
         * nothing costs as much as a small drain) */
        if (st->rating != NULL && !stopping) {
            int call = 0;

            for (size_t i = 0; i < n && !call; i++)
                call = batch[i].kind == JOB_CALL;
            if (call || st->tick_more ||
                    md_now_monotonic_ns() - st->tick_last_ns >= 1000000000ULL)
                rating_tick(st, 50);
        }
        pthread_mutex_lock(&st->mu);
        for (size_t i = 0; i < n; i++) {
            if (batch[i].kind == JOB_CALL) {
                if (rc != MD_OK) {
                    batch[i].call->rc = rc;
                    batch[i].call->err = err;
                }
                batch[i].call->done = 1;
            }
        }
        pthread_mutex_unlock(&st->mu);
        for (size_t i = 0; i < n; i++)
            job_free(&batch[i]);
        /* hourly: drop usage past usage.retention (a job of its own, so it
         * commits, fails and retries like any other write) */
        if (atomic_load(&st->retention_ms) > 0 && !stopping &&
            md_now_monotonic_ns() - st->retention_last_ns >= 3600ULL * 1000000000ULL) {
            st->retention_last_ns = md_now_monotonic_ns();
            (void)md_store_apply_retention(st);
        }
        pthread_mutex_lock(&st->mu);
        st->done_seq = last_seq + 1;
        st->last_drain_rc = rc;
        pthread_cond_broadcast(&st->cv_done);
        pthread_mutex_unlock(&st->mu);
        trim_tick(st);
    }
    return NULL;
}

int
md_store_writer_start(struct md_store *st, struct md_err *err)
{
    int e;

    pthread_mutex_lock(&st->mu);
    if (st->running) {
        pthread_mutex_unlock(&st->mu);
        return md_err_set(err, MD_ESTATE, "writer already running");
    }
    st->stopping = 0;
    e = pthread_create(&st->thread, NULL, writer_main, st);
    if (e == 0)
        st->running = 1;
    pthread_mutex_unlock(&st->mu);
    if (e != 0)
        return md_err_set(err, MD_ENOMEM, "cannot start writer thread: %s", strerror(e));
    return MD_OK;
}

void
md_store_writer_stop(struct md_store *st)
{
    int running;

    pthread_mutex_lock(&st->mu);
    running = st->running;
    st->stopping = 1;
    pthread_cond_broadcast(&st->cv_work);
    pthread_mutex_unlock(&st->mu);
    if (!running)
        return;
    pthread_join(st->thread, NULL);
    pthread_mutex_lock(&st->mu);
    st->running = 0;
    pthread_mutex_unlock(&st->mu);
}

static int
submit(struct md_store *st, struct job *j)
{
    pthread_mutex_lock(&st->mu);
    if (st->q_len == MD_STORE_QUEUE_MAX || !st->running || st->stopping) {
        pthread_mutex_unlock(&st->mu);
        atomic_fetch_add(&st->dropped, 1);
        return MD_ELIMIT;
    }
    j->seq = st->next_seq++;
    st->queue[(st->q_head + st->q_len) % MD_STORE_QUEUE_MAX] = *j;
    st->q_len++;
    if (j->kind == JOB_CALL)
        st->urgent = 1;         /* its caller waits */
    /* wake the writer only where its waits in writer_main end: the queue
     * was empty (the idle wait), a call is urgent, or the queue just became
     * half full.  While it waits out the group-commit gap it wakes at the
     * gap's end anyway; a signal per scrape cost a futex wake, a wake-up and
     * a context switch each for nothing (issue 4: ~3 futex calls per
     * scrape).  Signals while it commits are never waited for: it re-checks
     * q_len under the mutex before it waits again. */
    if (st->q_len == 1 || j->kind == JOB_CALL || st->q_len == MD_STORE_QUEUE_MAX / 2)
        pthread_cond_signal(&st->cv_work);
    pthread_mutex_unlock(&st->mu);
    return MD_OK;
}

int
md_store_submit_event(struct md_store *st, const char *kind, const char *detail)
{
    struct job j = { .kind = JOB_EVENT, .ts_ns = md_now_realtime_ns() };
    size_t dl = strlen(detail ? detail : "");
    int rc;

    j.a = md_strdup(kind);
    j.b = md_strndup(detail ? detail : "", dl > MD_STORE_TEXT_MAX ? MD_STORE_TEXT_MAX : dl);
    if (j.a == NULL || j.b == NULL) {
        job_free(&j);
        return MD_ENOMEM;
    }
    rc = submit(st, &j);
    if (rc != MD_OK)
        job_free(&j);
    return rc;
}

int
md_store_submit_batch(struct md_store *st, struct md_batch *b)
{
    struct job j = { .kind = JOB_SCRAPE, .ts_ns = md_now_realtime_ns(), .batch = b };
    int rc = submit(st, &j);

    if (rc != MD_OK)
        md_batch_free(b);
    return rc;
}

void
md_store_set_retention(struct md_store *st, uint64_t retention_ms)
{
    atomic_store(&st->retention_ms, retention_ms);
}

int
md_store_apply_retention(struct md_store *st)
{
    uint64_t keep_ms = atomic_load(&st->retention_ms), now = md_now_realtime_ns(), cut;
    struct job j = { .kind = JOB_RETENTION };

    if (keep_ms == 0)
        return MD_OK;
    cut = keep_ms * 1000000ULL > now ? 0 : now - keep_ms * 1000000ULL;
    /* whole hours only: an hour partly inside the window is kept */
    cut -= cut % (3600ULL * 1000000000ULL);
    j.ts_ns = cut;
    return submit(st, &j);
}

void
md_store_set_fold_lag(struct md_store *st, uint64_t lag_s)
{
    atomic_store(&st->fold_lag_s, lag_s);
}

void
md_store_set_cost_fold_lines(struct md_store *st, uint64_t lines)
{
    atomic_store(&st->cost_fold_lines, lines > 0 ? lines : 1);
}

int
md_store_fold_usage(struct md_store *st, uint64_t before_s)
{
    struct job j = { .kind = JOB_FOLD, .ts_ns = before_s };

    return submit(st, &j);
}

uint64_t
md_store_folded_before(struct md_store *st)
{
    return atomic_load(&st->fold_h_pub);
}

int
md_store_call(struct md_store *st, md_store_call_fn *fn, void *arg, struct md_err *err)
{
    struct call c = { .fn = fn, .arg = arg };
    struct job j = { .kind = JOB_CALL, .ts_ns = md_now_realtime_ns(), .call = &c };
    int rc = submit(st, &j);

    if (rc != MD_OK)
        return md_err_set(err, rc, "store: the writer queue is full or stopped");
    pthread_mutex_lock(&st->mu);
    while (!c.done)
        pthread_cond_wait(&st->cv_done, &st->mu);
    pthread_mutex_unlock(&st->mu);
    if (c.rc != MD_OK && err != NULL)
        *err = c.err;
    return c.rc;
}

int
md_store_reader(struct md_store *st, sqlite3 **db, struct md_err *err)
{
    return reader_get(st, db, err);
}

void
md_store_set_rating(struct md_store *st, struct md_rating *r)
{
    if (st->rating != NULL && st->rating != r)
        md_rating_bind_db(st->rating, NULL);
    st->rating = r;
    if (r != NULL) {
        md_rating_set_aggregate(r, st->usnap);
        md_rating_bind_db(r, st->db);
    }
}

int
md_store_fresh(struct md_store *st)
{
    return st->fresh;
}

static int
prepare(struct md_store *st, const char *sql, sqlite3_stmt **out, struct md_err *err)
{
    if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL) != SQLITE_OK)
        return db_err(err, st->db, sql);
    return MD_OK;
}

struct convert_ctx {
    struct md_store *st;
    struct md_err   *err;
    int              rc;
};

static int
convert_one(const struct md_ledger_state *ls, void *arg)
{
    struct convert_ctx *cx = arg;
    struct tscratch *c;

    cx->rc = scr_get(cx->st, ls->target, &c, cx->err);
    if (cx->rc == MD_OK)
        cx->rc = blob_fit(c, ls->slot, cx->err);
    if (cx->rc == MD_OK) {
        rec_encode(c->blob + 1 + (size_t)ls->slot * LSTATE_REC, ls);
        cx->rc = write_key_row(cx->st, ls->target, ls->slot, ls->key, ls->key_len, cx->err);
    }
    return cx->rc != MD_OK;
}

/* 002's ledger_series rows, restored into the ledger, are written as 004's
 * key and state rows and deleted, in one transaction: a crash leaves
 * either the old rows or the new ones. */
static int
convert_legacy(struct md_store *st, size_t legacy, struct md_err *err)
{
    struct convert_ctx cx = { st, err, MD_OK };
    int rc = exec(st->db, "BEGIN IMMEDIATE", err);

    if (rc == MD_OK) {
        (void)md_ledger_each(st->ledger, convert_one, &cx);
        rc = cx.rc;
    }
    for (size_t i = 0; i < st->nscr && rc == MD_OK; i++)
        rc = write_state_row(st, &st->scr[i], 1, err);
    if (rc == MD_OK)
        rc = exec(st->db, "DELETE FROM ledger_series", err);
    if (rc == MD_OK)
        rc = ts_reserve(st, st->nts + st->nscr, err);
    if (rc == MD_OK)
        rc = exec(st->db, "COMMIT", err);
    if (rc != MD_OK) {
        if (!sqlite3_get_autocommit(st->db))
            (void)exec(st->db, "ROLLBACK", NULL);
        scr_clear(st);
        return rc;
    }
    scr_install(st);
    md_log_info("ledger: %zu series checkpoints converted to the per-target state rows "
        "(schema 004)", legacy);
    return MD_OK;
}

/* Loads the ledger's checkpoints: the state rows (the mirror, checked),
 * their series in slot order (the order they were first seen, which keeps
 * the ledger's in-order fast path), then rows of 002's ledger_series,
 * which are converted. */
static int
restore_states(struct md_store *st, struct md_err *err)
{
    sqlite3_stmt *q = NULL;
    size_t in_use = 0, keys = 0, legacy = 0;
    int rc = MD_OK, step;

    if (sqlite3_prepare_v2(st->db, "SELECT target_id, state FROM ledger_state "
            "ORDER BY target_id", -1, &q, NULL) != SQLITE_OK)
        return db_err(err, st->db, "load ledger state");
    while (rc == MD_OK && (step = sqlite3_step(q)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64(q, 0);
        const uint8_t *b = sqlite3_column_blob(q, 1);
        size_t len = (size_t)sqlite3_column_bytes(q, 1);
        struct tstate *t;

        if (id <= 0 || id > UINT32_MAX || b == NULL || len < 1 || len > LSTATE_MAX ||
                b[0] != LSTATE_FORMAT || (len - 1) % LSTATE_REC != 0) {
            rc = md_err_set(err, MD_EPARSE, "ledger_state of target %lld: not format %d "
                "(%zu bytes)", (long long)id, LSTATE_FORMAT, len);
            break;
        }
        rc = ts_reserve(st, st->nts + 1, err);
        if (rc != MD_OK)
            break;
        t = &st->ts[st->nts];
        t->target = (uint32_t)id;
        t->len = len;
        t->blob = md_malloc(len);
        if (t->blob == NULL) {
            rc = md_err_set(err, MD_ENOMEM, "out of memory");
            break;
        }
        memcpy(t->blob, b, len);
        st->nts++;
        for (size_t at = 1; at < len; at += LSTATE_REC)
            in_use += (b[at] & LSTATE_IN_USE) != 0;
    }
    if (rc == MD_OK && step != SQLITE_DONE)
        rc = db_err(err, st->db, "load ledger state");
    sqlite3_finalize(q);
    if (rc != MD_OK)
        return rc;
    if (sqlite3_prepare_v2(st->db, "SELECT target_id, slot, key FROM ledger_keys "
            "ORDER BY target_id, slot", -1, &q, NULL) != SQLITE_OK)
        return db_err(err, st->db, "load ledger keys");
    while (rc == MD_OK && (step = sqlite3_step(q)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64(q, 0), slot = sqlite3_column_int64(q, 1);
        const struct tstate *t = id > 0 && id <= UINT32_MAX ? ts_find(st, (uint32_t)id) : NULL;
        const uint8_t *r;
        double created;
        uint64_t bits;

        if (t == NULL || slot < 0 || (uint64_t)slot >= (t->len - 1) / LSTATE_REC ||
                !(t->blob[1 + (size_t)slot * LSTATE_REC] & LSTATE_IN_USE)) {
            rc = md_err_set(err, MD_EPARSE, "ledger_keys: target %lld slot %lld has no state",
                (long long)id, (long long)slot);
            break;
        }
        r = t->blob + 1 + (size_t)slot * LSTATE_REC;
        bits = get_u64le(r + 17);
        memcpy(&created, &bits, sizeof(created));
        rc = md_ledger_restore_series_at(st->ledger, (uint32_t)id, (uint32_t)slot,
            sqlite3_column_blob(q, 2), (size_t)sqlite3_column_bytes(q, 2), get_u64le(r + 1),
            get_u64le(r + 9), (r[0] & LSTATE_CREATED) != 0, created, err);
        keys++;
    }
    if (rc == MD_OK && step != SQLITE_DONE)
        rc = db_err(err, st->db, "load ledger keys");
    sqlite3_finalize(q);
    if (rc == MD_OK && keys != in_use)
        rc = md_err_set(err, MD_EPARSE, "ledger_state: %zu series slots in use but %zu keys",
            in_use, keys);
    if (rc != MD_OK)
        return rc;
    /* 002's rows, from a database metered before 004 */
    if (sqlite3_prepare_v2(st->db, "SELECT target_id, key, value, ts_ns, has_created, created "
            "FROM ledger_series ORDER BY target_id, key", -1, &q, NULL) != SQLITE_OK)
        return db_err(err, st->db, "load ledger");
    while (rc == MD_OK && (step = sqlite3_step(q)) == SQLITE_ROW) {
        rc = md_ledger_restore_series(st->ledger, (uint32_t)sqlite3_column_int64(q, 0),
            sqlite3_column_blob(q, 1), (size_t)sqlite3_column_bytes(q, 1),
            (uint64_t)sqlite3_column_int64(q, 2), (uint64_t)sqlite3_column_int64(q, 3),
            sqlite3_column_int(q, 4), sqlite3_column_double(q, 5), err);
        legacy++;
    }
    if (rc == MD_OK && step != SQLITE_DONE)
        rc = db_err(err, st->db, "load ledger");
    sqlite3_finalize(q);
    if (rc == MD_OK && legacy > 0)
        rc = convert_legacy(st, legacy, err);
    return rc;
}

int
md_store_ledger_init(struct md_store *st, size_t series_max, uint64_t spread_max_s,
    int first_scrape_count, struct md_err *err)
{
    sqlite3_stmt *q = NULL;
    int rc;

    if (st->ledger != NULL || st->running)
        return md_err_set(err, MD_ESTATE, "ledger already initialised");
    st->policy = first_scrape_count ? MD_FIRST_COUNT : MD_FIRST_BASELINE;
    st->ledger = md_ledger_new(series_max);
    st->memo = md_calloc(DIMS_MEMO_MIN, sizeof(*st->memo));
    st->memo_cap = DIMS_MEMO_MIN;
    if (st->ledger == NULL || st->memo == NULL)
        return md_err_set(err, MD_ENOMEM, "ledger: out of memory");
    /* tenants choose label values: key the hash so they cannot flood it */
    {
        uint64_t k0 = md_now_realtime_ns() ^ 0x9e3779b97f4a7c15ULL;
        uint64_t k1 = md_now_monotonic_ns() * 0xbf58476d1ce4e5b9ULL ^ (uint64_t)(uintptr_t)st;

        (void)md_ledger_set_seed(st->ledger, k0, k1);
    }
    rc = md_ledger_set_spread_max_s(st->ledger, spread_max_s);
    if (rc != MD_OK)
        return md_err_set(err, rc, "ledger.max_spread: out of range");
    rc = prepare(st, "SELECT id FROM targets WHERE key = ?1", &st->sel_target, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT INTO targets(key, initial, first_seen_ns, last_scrape_ns) "
            "VALUES (?1, ?2, ?3, 0)", &st->ins_target, err);
    if (rc == MD_OK)
        rc = prepare(st, "SELECT id FROM dims WHERE cluster=?1 AND namespace=?2 AND "
            "department=?3 AND model=?4 AND provider=?5 AND operation=?6 AND token_type=?7",
            &st->sel_dims, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT INTO dims(cluster, namespace, department, model, provider, "
            "operation, token_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", &st->ins_dims, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT INTO usage_hourly(hour_s, dim_id, tokens, requests) "
            "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(hour_s, dim_id) DO UPDATE SET "
            "tokens = tokens + excluded.tokens, requests = requests + excluded.requests",
            &st->upsert_usage, err);
    if (rc == MD_OK)
        rc = prepare(st, "UPDATE usage_hourly SET tokens = tokens + ?3, "
            "requests = requests + ?4 WHERE hour_s = ?1 AND dim_id = ?2", &st->upd_usage, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT OR REPLACE INTO ledger_keys(target_id, slot, key) "
            "VALUES (?1, ?2, ?3)", &st->put_key, err);
    if (rc == MD_OK)
        rc = prepare(st, "DELETE FROM ledger_keys WHERE target_id = ?1 AND slot = ?2",
            &st->del_key, err);
    if (rc == MD_OK)
        rc = prepare(st, "DELETE FROM ledger_keys WHERE target_id = ?1", &st->del_keys, err);
    if (rc == MD_OK)
        rc = prepare(st, "UPDATE ledger_state SET state = ?2 WHERE target_id = ?1",
            &st->upd_state, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT INTO ledger_state(target_id, state) VALUES (?1, ?2) "
            "ON CONFLICT(target_id) DO UPDATE SET state = excluded.state", &st->upsert_state,
            err);
    if (rc == MD_OK)
        rc = prepare(st, "DELETE FROM ledger_state WHERE target_id = ?1", &st->del_state, err);
    if (rc == MD_OK)
        rc = prepare(st, "UPDATE targets SET last_scrape_ns = ?1 WHERE id = ?2",
            &st->put_target, err);
    if (rc == MD_OK)
        rc = prepare(st, "DELETE FROM targets WHERE id = ?1", &st->del_target, err);
    if (rc == MD_OK)
        rc = prepare(st, "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
            &st->put_meta, err);
    if (rc != MD_OK)
        return rc;
    /* restore: targets first, then every series checkpoint */
    if (sqlite3_prepare_v2(st->db, "SELECT id, last_scrape_ns FROM targets", -1, &q, NULL)
            != SQLITE_OK)
        return db_err(err, st->db, "load targets");
    while (rc == MD_OK && sqlite3_step(q) == SQLITE_ROW)
        rc = md_ledger_restore_target(st->ledger, (uint32_t)sqlite3_column_int64(q, 0),
            (uint64_t)sqlite3_column_int64(q, 1), err);
    sqlite3_finalize(q);
    if (rc != MD_OK)
        return rc;
    rc = restore_states(st, err);
    if (rc == MD_OK)
        md_log_info("ledger: %zu series of %zu targets restored",
            md_ledger_series_count(st->ledger), md_ledger_target_count(st->ledger));
    if (rc == MD_OK)
        rc = snapshot_load(st, err);
    return rc;
}

/* The /metrics aggregate starts from the committed totals: usage_folded
 * (every hour before H, deleted ones included) plus usage_hourly from H on
 * (a range of the primary key: the last hours, not the history), summed
 * over operations; cost and unpriced tokens from cost_totals (schema
 * 006).  So the counters never go down across a retention run or a
 * restart; from then on the writer adds every committed delta.  Usage rows
 * arrive in dims id order, cost groups in the order of their first line:
 * first-seen order, as before 006. */
static int
snapshot_load(struct md_store *st, struct md_err *err)
{
    sqlite3_stmt *q = NULL;
    size_t rows = 0;
    int64_t cost_l = 1;
    int step;

    st->usnap = md_usnap_agg_new(MD_STORE_SNAPSHOT_SERIES_MAX);
    if (st->usnap == NULL)
        return md_err_set(err, MD_ENOMEM, "usage snapshot: out of memory");
    if (sqlite3_prepare_v2(st->db, "SELECT d.cluster, d.namespace, d.department, d.model, "
            "d.provider, d.token_type, sum(u.tokens), sum(u.requests) FROM (SELECT dim_id, "
            "tokens, requests FROM usage_folded UNION ALL SELECT dim_id, tokens, requests "
            "FROM usage_hourly WHERE hour_s >= ?1) u JOIN dims d ON d.id = u.dim_id "
            "GROUP BY d.id ORDER BY d.id", -1, &q, NULL) != SQLITE_OK)
        return db_err(err, st->db, "load usage snapshot");
    sqlite3_bind_int64(q, 1, (sqlite3_int64)st->fold_h_committed);
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        const char *v[6];
        size_t l[6];

        for (int i = 0; i < 6; i++) {
            v[i] = (const char *)sqlite3_column_text(q, i);
            l[i] = (size_t)sqlite3_column_bytes(q, i);
            if (v[i] == NULL)
                v[i] = "";
        }
        if (md_usnap_agg_stage_usage(st->usnap, v, l, (uint64_t)sqlite3_column_int64(q, 6),
                (uint64_t)sqlite3_column_int64(q, 7)) == MD_ENOMEM) {
            sqlite3_finalize(q);
            return md_err_set(err, MD_ENOMEM, "usage snapshot: out of memory");
        }
        rows++;
    }
    sqlite3_finalize(q);
    if (step != SQLITE_DONE)
        return db_err(err, st->db, "load usage snapshot");
    /* cost and unpriced tokens: the sums of the stored bill lines (closed,
     * finalized and corrections); the rater adds to them from here on */
    step = cost_folded_before(st->db, &cost_l, err);
    if (step != MD_OK)
        return step;
    if (sqlite3_prepare_v2(st->db, "SELECT cluster, namespace, department, model, currency, "
            "token_type, sum(amount), sum(tokens), unpriced FROM (SELECT cluster, namespace, "
            "department, model, currency, token_type, unpriced, amount, tokens, first_id "
            "FROM cost_totals WHERE lines > 0 UNION ALL SELECT cluster, namespace, department, "
            "model, currency, token_type, pricing_model = 'unpriced', sum(amount), "
            "sum(tokens), min(id) FROM bill_lines WHERE id >= ?1 GROUP BY 1, 2, 3, 4, 5, 6, 7) "
            "GROUP BY 1, 2, 3, 4, 5, 6, 9 ORDER BY min(first_id)", -1, &q, NULL) != SQLITE_OK)
        return db_err(err, st->db, "load cost snapshot");
    sqlite3_bind_int64(q, 1, cost_l);
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        const char *v[6];
        size_t l[6];

        for (int i = 0; i < 6; i++) {
            v[i] = (const char *)sqlite3_column_text(q, i);
            v[i] = v[i] ? v[i] : "";
            l[i] = strlen(v[i]);
        }
        if (sqlite3_column_int(q, 8)) {
            const char *u[6] = { v[0], v[1], v[2], v[3], "", v[5] };
            size_t ul[6] = { l[0], l[1], l[2], l[3], 0, l[5] };

            if (sqlite3_column_int64(q, 7) > 0)
                (void)md_usnap_agg_stage_unpriced(st->usnap, u, ul,
                    (uint64_t)sqlite3_column_int64(q, 7));
        } else if (sqlite3_column_int64(q, 6) != 0) {
            (void)md_usnap_agg_stage_cost(st->usnap, v, l, sqlite3_column_int64(q, 6));
        }
    }
    sqlite3_finalize(q);
    if (step != SQLITE_DONE)
        return db_err(err, st->db, "load cost snapshot");
    (void)md_usnap_agg_commit(st->usnap);
    md_usnap_pub_publish(st->usnap_pub, md_usnap_agg_snapshot(st->usnap));
    md_log_info("usage snapshot: %zu series from %zu dimension sets",
        md_usnap_agg_series_count(st->usnap), rows);
    return MD_OK;
}

struct md_usnap *
md_store_usage_snapshot(struct md_store *st)
{
    return md_usnap_pub_get(st->usnap_pub);
}

struct md_usnap_agg *
md_store_usage_aggregate(struct md_store *st)
{
    return st->usnap;
}

int
md_store_flush(struct md_store *st)
{
    uint64_t want;
    int rc;

    pthread_mutex_lock(&st->mu);
    want = st->next_seq;
    if (st->done_seq < want) {
        st->urgent = 1;
        pthread_cond_signal(&st->cv_work);
    }
    while (st->done_seq < want && st->running)
        pthread_cond_wait(&st->cv_done, &st->mu);
    rc = st->done_seq >= want ? st->last_drain_rc : MD_ESTATE;
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void
md_store_get_stats(struct md_store *st, struct md_store_stats *out)
{
    out->commits = atomic_load(&st->commits);
    out->errors = atomic_load(&st->errors);
    out->busy_retries = atomic_load(&st->busy_retries);
    out->write_ns_sum = atomic_load(&st->write_ns_sum);
    out->queue_dropped = atomic_load(&st->dropped);
    pthread_mutex_lock(&st->mu);
    out->queue_depth = st->q_len;
    pthread_mutex_unlock(&st->mu);
    out->schema_version = st->schema_version;
    out->healthy = atomic_load(&st->healthy);
    out->ledger_resets = atomic_load(&st->l_resets);
    out->ledger_target_restarts = atomic_load(&st->l_restarts);
    out->ledger_anomalies = atomic_load(&st->l_anomalies);
    out->ledger_invalid_values = atomic_load(&st->l_invalid);
    out->ledger_stale_timestamps = atomic_load(&st->l_stale);
    out->ledger_too_large = atomic_load(&st->l_too_large);
    out->ledger_flagged_2p53 = atomic_load(&st->l_flagged_2p53);
    out->batches_rejected = atomic_load(&st->l_rejected);
    out->tokens_committed = atomic_load(&st->l_tokens);
    out->requests_committed = atomic_load(&st->l_requests);
    out->spread_capped = atomic_load(&st->l_spread_capped);
}

/* ---- readers ---- */

static int
reader_get(struct md_store *st, sqlite3 **out, struct md_err *err)
{
    struct reader *r = tls_reader;

    if (r != NULL && r->owner == st && r->db != NULL) {
        *out = r->db;
        return MD_OK;
    }
    r = md_calloc(1, sizeof(*r));
    if (r == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    r->owner = st;
    if (sqlite3_open_v2(st->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
            NULL) != SQLITE_OK) {
        int rc = db_err(err, r->db, "open read-only connection");

        sqlite3_close(r->db);
        md_free(r);
        return rc;
    }
    sqlite3_busy_timeout(r->db, 5000);
    pthread_mutex_lock(&st->mu);
    if (st->readers_count == MD_STORE_READERS_MAX) {
        pthread_mutex_unlock(&st->mu);
        sqlite3_close(r->db);
        md_free(r);
        return md_err_set(err, MD_ELIMIT, "more than %d reader connections",
            MD_STORE_READERS_MAX);
    }
    st->readers[st->readers_count++] = r;
    pthread_mutex_unlock(&st->mu);
    tls_reader = r;
    *out = r->db;
    return MD_OK;
}

int
md_store_reader_db(struct md_store *st, sqlite3 **out, struct md_err *err)
{
    return reader_get(st, out, err);
}

int
md_store_reader_stmt(struct md_store *st, const char *sql, sqlite3_stmt **out,
    struct md_err *err)
{
    struct reader *r;
    struct reader_stmt *e = NULL, *victim = NULL;
    sqlite3 *db;
    int rc = reader_get(st, &db, err);

    *out = NULL;
    if (rc != MD_OK)
        return rc;
    r = tls_reader;
    for (size_t i = 0; i < READER_STMTS_MAX; i++) {
        struct reader_stmt *c = &r->stmts[i];

        if (c->s != NULL && !c->busy && strcmp(c->sql, sql) == 0) {
            e = c;
            break;
        }
        if (!c->busy && (victim == NULL || (victim->s != NULL &&
                (c->s == NULL || c->used < victim->used))))
            victim = c;
    }
    if (e == NULL) {
        sqlite3_stmt *s = NULL;
        char *copy;

        if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
            sqlite3_finalize(s);
            return db_err(err, db, sql);
        }
        /* every slot held (nested gets): a statement of its own, finalized
         * by md_store_reader_put */
        if (victim == NULL) {
            *out = s;
            return MD_OK;
        }
        if ((copy = md_strdup(sql)) == NULL) {
            sqlite3_finalize(s);
            return md_err_set(err, MD_ENOMEM, "out of memory");
        }
        sqlite3_finalize(victim->s);
        md_free(victim->sql);
        victim->s = s;
        victim->sql = copy;
        e = victim;
    }
    e->busy = 1;
    e->used = ++r->uses;
    *out = e->s;
    return MD_OK;
}

void
md_store_reader_put(sqlite3_stmt *s)
{
    struct reader *r = tls_reader;

    if (s == NULL)
        return;
    for (size_t i = 0; r != NULL && i < READER_STMTS_MAX; i++) {
        if (r->stmts[i].s == s) {
            /* reset ends the statement's read transaction */
            sqlite3_reset(s);
            sqlite3_clear_bindings(s);
            r->stmts[i].busy = 0;
            return;
        }
    }
    sqlite3_finalize(s);
}

int
md_store_count_events(struct md_store *st, const char *kind, uint64_t *out, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    int rc = reader_get(st, &db, err);

    if (rc != MD_OK)
        return rc;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM events WHERE ?1 = '' OR kind = ?1",
            -1, &s, NULL) != SQLITE_OK)
        return db_err(err, db, "count events");
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(s, 0);
    else
        rc = db_err(err, db, "count events");
    sqlite3_finalize(s);
    return rc;
}

int
md_store_check(struct md_store *st, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    int rc = reader_get(st, &db, err);

    if (rc != MD_OK)
        return rc;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL) != SQLITE_OK)
        return db_err(err, db, "quick_check");
    if (sqlite3_step(s) != SQLITE_ROW)
        rc = db_err(err, db, "quick_check");
    else if (strcmp((const char *)sqlite3_column_text(s, 0), "ok") != 0)
        rc = md_err_set(err, MD_EDB, "quick_check: %s", sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return rc;
}

void
md_store_close(struct md_store *st)
{
    if (st == NULL)
        return;
    md_store_writer_stop(st);
    for (size_t i = 0; i < st->readers_count; i++) {
        for (size_t k = 0; k < READER_STMTS_MAX; k++) {
            sqlite3_finalize(st->readers[i]->stmts[k].s);
            md_free(st->readers[i]->stmts[k].sql);
        }
        sqlite3_close(st->readers[i]->db);
        st->readers[i]->db = NULL;
        md_free(st->readers[i]);
    }
    st->readers_count = 0;
    tls_reader = NULL;
    sqlite3_finalize(st->ins_event);
    st->ins_event = NULL;
    if (st->rating != NULL)
        md_rating_bind_db(st->rating, NULL);
    {
        sqlite3_stmt **stmts[] = {
            &st->sel_target, &st->ins_target, &st->sel_dims, &st->ins_dims, &st->upsert_usage,
            &st->put_key, &st->del_key, &st->del_keys, &st->upd_state, &st->upsert_state,
            &st->del_state, &st->put_target, &st->del_target, &st->put_meta, &st->begin,
            &st->commit, &st->upd_usage, &st->data_version, &st->fold_add, &st->fold_range,
            &st->fold_meta,
        };

        for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
            sqlite3_finalize(*stmts[i]);
            *stmts[i] = NULL;
        }
    }
    md_ledger_free(st->ledger);
    st->ledger = NULL;
    md_usnap_agg_free(st->usnap);
    st->usnap = NULL;
    md_usnap_pub_free(st->usnap_pub);
    st->usnap_pub = NULL;
    memo_clear(st);
    md_free(st->memo);
    st->memo = NULL;
    st->memo_cap = 0;
    scr_clear(st);
    md_free(st->scr);
    for (size_t i = 0; i < st->nts; i++)
        md_free(st->ts[i].blob);
    md_free(st->ts);
    md_free(st->uagg);
    st->scr = NULL;
    st->ts = NULL;
    st->uagg = NULL;
    st->nts = st->nuagg = 0;
    if (st->db != NULL && sqlite3_close(st->db) != SQLITE_OK)
        md_log_warn("close: %s", sqlite3_errmsg(st->db));
    st->db = NULL;
    pthread_cond_destroy(&st->cv_work);
    pthread_cond_destroy(&st->cv_done);
    pthread_mutex_destroy(&st->mu);
    md_free(st->path);
    md_free(st);
}

/* ---- usage queries (read side) ---- */

int
md_store_query_usage(struct md_store *st, const struct md_usage_query *q,
    md_usage_row_fn *fn, void *arg, struct md_err *err)
{
    static const char *const bucket_expr[] = {
        [MD_STEP_NONE] = "?1",
        [MD_STEP_HOUR] = "u.hour_s",
        [MD_STEP_DAY] = "(u.hour_s / 86400) * 86400",
        [MD_STEP_MONTH] = "CAST(strftime('%s', u.hour_s, 'unixepoch', 'start of month') AS INTEGER)",
        [MD_STEP_WEEK] = "((u.hour_s - 345600) / 604800) * 604800 + 345600",
    };
    struct md_buf sql;
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    size_t rows = 0;
    int rc = reader_get(st, &db, err), bind = 3, step;

    if (rc != MD_OK)
        return rc;
    md_buf_init(&sql, MD_STORE_SQL_MAX);
    (void)md_buf_printf(&sql, "SELECT %s AS b", bucket_expr[q->step]);
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (q->group_mask & (1u << d))
            (void)md_buf_printf(&sql, ", d.%s", md_dim_names[d]);
    (void)md_buf_puts(&sql, ", sum(u.tokens), sum(u.requests) FROM usage_hourly u "
        "JOIN dims d ON d.id = u.dim_id WHERE u.hour_s >= ?1 AND u.hour_s < ?2");
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (q->filter[d] != NULL)
            (void)md_buf_printf(&sql, " AND d.%s = ?%d", md_dim_names[d], bind++);
    md_store_tenant_sql(&sql, &q->tenant, &bind);
    (void)md_buf_puts(&sql, " GROUP BY b");
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (q->group_mask & (1u << d))
            (void)md_buf_printf(&sql, ", d.%s", md_dim_names[d]);
    (void)md_buf_puts(&sql, " ORDER BY b");
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (q->group_mask & (1u << d))
            (void)md_buf_printf(&sql, ", d.%s", md_dim_names[d]);
    if (sqlite3_prepare_v2(db, sql.data, -1, &s, NULL) != SQLITE_OK) {
        rc = db_err(err, db, "usage query");
        goto out;
    }
    sqlite3_bind_int64(s, 1, q->from_s);
    sqlite3_bind_int64(s, 2, q->to_s);
    bind = 3;
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (q->filter[d] != NULL)
            sqlite3_bind_text(s, bind++, q->filter[d], -1, SQLITE_STATIC);
    md_store_tenant_bind(s, &q->tenant, &bind);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        struct md_usage_row r;
        int col = 1;

        memset(&r, 0, sizeof(r));
        if (q->rows_max && ++rows > q->rows_max) {
            rc = md_err_set(err, MD_ELIMIT, "more than %zu rows", q->rows_max);
            goto out;
        }
        r.start_s = sqlite3_column_int64(s, 0);
        for (int d = 0; d < MD_DIM_COUNT; d++)
            if (q->group_mask & (1u << d))
                r.dims[d] = (const char *)sqlite3_column_text(s, col++);
        r.tokens = (uint64_t)sqlite3_column_int64(s, col++);
        r.requests = (uint64_t)sqlite3_column_int64(s, col);
        rc = fn(arg, &r);
        if (rc != MD_OK)
            goto out;
    }
    if (step != SQLITE_DONE)
        rc = db_err(err, db, "usage query");
out:
    sqlite3_finalize(s);
    md_buf_fini(&sql);
    return rc;
}
