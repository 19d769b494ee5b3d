/* store.h: the SQLite store.
 *
 * One writer thread owns the only read-write connection; it drains a bounded
 * job queue and commits everything it drained in one BEGIN IMMEDIATE
 * transaction, starting a drain at most every MD_STORE_COMMIT_GAP_MS unless
 * a flush or a call waits (group commit).  Readers (HTTP threads) each get their own read-only
 * connection, opened lazily on first use in that thread and closed by
 * md_store_close().  Migrations from schema/NNN_*.sql are embedded at build
 * time and applied in order at open, tracked in PRAGMA user_version; a
 * database newer than the binary is refused and left untouched. */
#ifndef MD_STORE_H
#define MD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "util.h"

#define MD_STORE_QUEUE_MAX   4096   /* jobs waiting for the writer */
#define MD_STORE_TRIM_EVERY_S  60   /* writer: malloc_trim(0) at most this often */
/* least time between two drains' starts (group commit; flush and calls skip
 * it).  A transaction's fixed cost (BEGIN/COMMIT, the WAL sync, the usage
 * rows, which are summed per (dims, hour) over the drain) is shared by the
 * scrapes of this time: at 200 targets every 2 s, 250 ms gave the writer
 * ~49 us per scrape and 1 s ~25 us (bench/RESULTS.md, issue 4).  Usage
 * reads lag by at most this; a crash loses at most these queued scrapes,
 * whose tokens the next scrape bills (counters are cumulative). */
#define MD_STORE_COMMIT_GAP_MS 1000
#define MD_STORE_READERS_MAX 128    /* read-only connections (one per thread) */
#define MD_STORE_TEXT_MAX    1024   /* bytes of an event's detail */
#define MD_STORE_SNAPSHOT_SERIES_MAX 1000000   /* label sets kept for /metrics */
#define MD_STORE_COST_FOLD_LINES 262144  /* bill lines past the folded ones
                                         * that make the writer fold them */
#define MD_STORE_FOLD_LAG_S  7200   /* an hour is folded into usage_folded once
                                     * it ended this long ago (schema 006) */

struct md_store;
struct md_usnap;
struct md_usnap_agg;

struct md_store_stats {
    uint64_t commits;            /* transactions committed */
    uint64_t errors;             /* transactions rolled back */
    uint64_t busy_retries;       /* write attempts that found the lock held */
    uint64_t write_ns_sum;       /* time spent in committed write transactions */
    uint64_t queue_depth;
    uint64_t queue_dropped;      /* jobs refused because the queue was full */
    int      schema_version;
    int      healthy;            /* 0 after a failed commit, 1 after a good one */
    /* ledger outcomes since start */
    uint64_t ledger_resets;           /* series billed in full by a reset */
    uint64_t ledger_target_restarts;
    uint64_t ledger_anomalies;        /* lone series went down (guard) */
    uint64_t ledger_invalid_values;   /* NaN, Inf, negative, fractional, bad ts */
    uint64_t ledger_stale_timestamps;
    uint64_t ledger_too_large;        /* >= 2^64: skipped */
    uint64_t ledger_flagged_2p53;     /* billed but >= 2^53 */
    uint64_t batches_rejected;        /* scrapes the ledger refused */
    uint64_t tokens_committed;
    uint64_t requests_committed;
    uint64_t spread_capped;
};

/* Opens (creating the file and its directory), refuses a newer schema,
 * applies pending migrations, sets WAL and synchronous=FULL. */
int  md_store_open(const char *path, uint64_t busy_timeout_ms, struct md_store **out,
    struct md_err *err);
/* Opens an existing database for reading only (tools such as `meterd
 * usage`): no writer, no migration; a schema other than the latest is
 * refused. */
int  md_store_open_readonly(const char *path, struct md_store **out, struct md_err *err);
/* Stops the writer if running (draining the queue), closes every connection. */
void md_store_close(struct md_store *st);

/* Creates the ledger and restores its state from the database; call after
 * open and before md_store_writer_start.  first_scrape_count: 1 = policy
 * `count`, 0 = `baseline`. */
int  md_store_ledger_init(struct md_store *st, size_t series_max, uint64_t spread_max_s,
    int first_scrape_count, struct md_err *err);

int  md_store_writer_start(struct md_store *st, struct md_err *err);
/* Caps the database at `pages` pages (0: SQLite's maximum) before the next
 * write: storage.max_page_count, to rehearse a full disk.  Any thread. */
void md_store_set_max_page_count(struct md_store *st, uint64_t pages);
/* Commits what is queued, then joins the writer thread.  Idempotent. */
void md_store_writer_stop(struct md_store *st);

/* Queues an event row (start, stop, reload...).  Thread-safe, never blocks;
 * MD_ELIMIT when the queue is full (counted in queue_dropped). */
int  md_store_submit_event(struct md_store *st, const char *kind, const char *detail);
/* Queues a scrape batch; takes ownership of b in every case (freed on
 * failure).  The writer runs it through the ledger and commits the ledger
 * state and the usage it produced in one transaction.  MD_ELIMIT when the
 * queue is full (counters are cumulative: the next scrape covers it). */
int  md_store_submit_batch(struct md_store *st, struct md_batch *b);
/* usage.retention: hourly usage whose hour ended more than retention_ms ago
 * is deleted, checked every hour by the writer (0: keep forever).
 * md_store_apply_retention queues one run now.  Thread-safe. */
void md_store_set_retention(struct md_store *st, uint64_t retention_ms);
int  md_store_apply_retention(struct md_store *st);
/* The /metrics totals of usage (schema/006_totals.sql): hours before H are
 * kept summed in usage_folded, so a start reads only the hours from H on.
 * The writer moves H to the hour start MD_STORE_FOLD_LAG_S (or lag_s)
 * before now when a drain commits; md_store_fold_usage queues a move to
 * before_s (never backwards; tests).  Thread-safe. */
void md_store_set_fold_lag(struct md_store *st, uint64_t lag_s);
/* Cost: bill lines with id below L are kept summed in cost_totals; a drain
 * or rating tick moves L to the end once `lines` lie past it (default
 * MD_STORE_COST_FOLD_LINES).  Thread-safe. */
void md_store_set_cost_fold_lines(struct md_store *st, uint64_t lines);
int  md_store_fold_usage(struct md_store *st, uint64_t before_s);
/* H as last committed (0 before the writer's first move). */
uint64_t md_store_folded_before(struct md_store *st);

/* 1 when this process found a database that had never metered. */
int  md_store_fresh(struct md_store *st);

/* Blocks until every job queued before the call is committed or failed.
 * Returns MD_OK when the last drain committed.  For tests and shutdown. */
int  md_store_flush(struct md_store *st);

void md_store_get_stats(struct md_store *st, struct md_store_stats *out);

/* Schema version the binary knows (the highest embedded migration). */
int  md_store_schema_latest(void);

/* Read side, from any thread but the writer: count of event rows of a kind
 * ("" for all) through this thread's read-only connection. */
int  md_store_count_events(struct md_store *st, const char *kind, uint64_t *out,
    struct md_err *err);
enum md_step { MD_STEP_NONE = 0, MD_STEP_HOUR, MD_STEP_DAY, MD_STEP_MONTH, MD_STEP_WEEK };

/* A tenant's view (auth): when restricted, only rows whose namespace is one
 * of ns[] or whose department is one of dept[] exist for the query; a
 * restricted filter with both lists empty sees nothing.  The arrays are
 * borrowed (from the configuration) for the duration of the query. */
struct md_tenant_filter {
    int          restricted;
    char *const *ns;
    size_t       ns_count;
    char *const *dept;
    size_t       dept_count;
};

/* A usage query: hour buckets whose start is in [from_s, to_s), filtered by
 * exact dimension values (NULL: any), summed per step and per the dimensions
 * in group_mask (bit 1 << enum md_dim). */
struct md_usage_query {
    int64_t      from_s, to_s;
    enum md_step step;
    unsigned     group_mask;
    const char  *filter[MD_DIM_COUNT];
    size_t       rows_max;              /* MD_ELIMIT past it */
    struct md_tenant_filter tenant;     /* zero: all rows */
};

struct md_usage_row {
    int64_t     start_s;                /* bucket start (from_s for MD_STEP_NONE) */
    const char *dims[MD_DIM_COUNT];     /* NULL for dimensions not grouped */
    uint64_t    tokens, requests;
};

typedef int md_usage_row_fn(void *arg, const struct md_usage_row *r);

/* Runs q through this thread's read-only connection; rows arrive ordered by
 * start then grouped dimensions. */
int  md_store_query_usage(struct md_store *st, const struct md_usage_query *q,
    md_usage_row_fn *fn, void *arg, struct md_err *err);

/* The current /metrics usage snapshot (usage_snapshot.h): a counted
 * reference, never NULL (empty before md_store_ledger_init); drop it with
 * md_usnap_unref().  Any thread; takes a mutex for a pointer swap only. */
struct md_usnap *md_store_usage_snapshot(struct md_store *st);
/* The writer's live /metrics aggregate, for code that runs on the writer
 * thread inside a store transaction (rating): deltas staged on it with
 * md_usnap_agg_stage_cost/_unpriced are applied when that transaction
 * commits and dropped when it rolls back.  NULL before md_store_ledger_init.
 * Writer thread only. */
struct md_usnap_agg *md_store_usage_aggregate(struct md_store *st);
/* ---- Cost Management usage (store_query.c) ---- */

/* The stored part of a Cost Management item's cost (cm_cost.c adds the
 * open days), arg = the store: the priced amount of the stored bill lines
 * (closed and finalized days and corrections) of [from_s, to_s) for the
 * item's filters and tenant, when they are in one currency.  MD_ENOTFOUND
 * when nothing is rated yet, MD_ELIMIT for several currencies. */
struct md_cm_cost_key;
int md_store_cm_cost(void *arg, const struct md_cm_cost_key *k, int64_t *cost_nanos,
    char currency[8]);

#define MD_CM_GROUPS_MAX 1000000   /* (bucket, entity) groups one query may build */

/* Hour buckets in [from_s, to_s) summed per step bucket (MD_STEP_DAY,
 * MD_STEP_WEEK: weeks start on Monday 00:00 UTC, MD_STEP_MONTH: calendar
 * months) and per the grouped dimensions (cluster and/or namespace), only
 * groups with tokens > 0, ordered by bucket then cluster then namespace; the
 * rows [offset, offset + limit) of that order are passed to fn and the
 * number of all groups is stored in *total. */
struct md_cm_query {
    int64_t      from_s, to_s;
    enum md_step step;
    int          by_cluster, by_namespace;
    const char  *cluster;               /* exact filters; NULL: any */
    const char  *namespace;
    const char  *token_type;            /* NULL: every token type */
    struct md_tenant_filter tenant;
    uint64_t     offset, limit;
};

struct md_cm_row {
    int64_t     bucket_s;               /* start of the step bucket (may precede from_s) */
    const char *cluster;                /* NULL when not grouped */
    const char *namespace;
    uint64_t    tokens;
};

typedef int md_cm_row_fn(void *arg, const struct md_cm_row *r);

int  md_store_query_cm(struct md_store *st, const struct md_cm_query *q, md_cm_row_fn *fn,
    void *arg, uint64_t *total, struct md_err *err);

/* PRAGMA quick_check through a read-only connection; MD_OK when "ok". */
int  md_store_check(struct md_store *st, struct md_err *err);

#endif
