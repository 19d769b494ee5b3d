/* rating.h: pricing revisions, rating usage into bill lines, milestones,
 * finalize, backfill, and the bill documents (JSON, CSV, FOCUS).
 *
 * Bill line key: (day, cluster, namespace, department, model, token_type).
 * Usage is rated per (day, cluster, namespace, department, model,
 * provider) group so that md_pricing_price sees every token type of the
 * group at once (cache and reasoning rules: no token is priced twice);
 * the lines of the providers of one model are then merged (tokens summed,
 * amount computed once from the merged tokens: one rounding per line).
 * The operation dimension is summed: a bill prices tokens, and an
 * operation (chat, embeddings, ...) does not change the price of a token.
 * Excluded operations never reach usage_hourly (attribution).
 *
 * Usage that no price matches becomes a line with pricing_model
 * "unpriced", unit price and amount 0, and the currency of the pricing
 * model that applies to its (cluster, day) or "XXX" (ISO 4217: no
 * currency) when none does; it is never skipped.
 *
 * Milestones per (cluster, day): open until the day's end + rating.grace,
 * then closed (its lines stored), finalized with its month.  Late usage or
 * a new pricing revision marks a day dirty; the writer re-rates it: a
 * closed day's lines are replaced when their content changed (tokens,
 * prices, amounts, currency or pricing model; a mere new revision number
 * does not rewrite them); for a finalized day the difference against its
 * lines plus earlier corrections is booked as correction lines on the
 * first day of the first month after it that is not finalized.
 *
 * Threads: struct md_rating is shared.  Its current pricing is guarded by
 * a mutex and handed out by reference; everything that writes runs on the
 * store's writer thread (md_store_call or the writer's tick), reads go
 * through the calling thread's read-only connection. */
#ifndef MD_RATING_H
#define MD_RATING_H

#include <stddef.h>
#include <stdint.h>

#include "cfgtab.h"
#include "util.h"

#define MD_RATING_LINES_MAX   2000000  /* lines in one bills answer */
#define MD_RATING_DOC_MAX     (1u << 20) /* bytes of a pricing document (PUT) */
#define MD_RATING_RANGE_DAYS  366      /* days of one bills query or backfill */
#define MD_RATING_ACTOR_MAX   128      /* bytes of an actor name */

struct md_store;
struct md_pricing;
struct md_rating;

enum md_bill_status {
    MD_BILL_PROVISIONAL, MD_BILL_CLOSED, MD_BILL_FINALIZED, MD_BILL_CORRECTION
};
const char *md_bill_status_name(enum md_bill_status s);

/* Dimensions of group_by and of the filters. */
enum md_bill_dim {
    MD_BILL_DAY, MD_BILL_CLUSTER, MD_BILL_NAMESPACE, MD_BILL_DEPARTMENT, MD_BILL_MODEL,
    MD_BILL_TOKEN_TYPE, MD_BILL_DIMS
};
extern const char *const md_bill_dim_names[MD_BILL_DIMS];

struct md_bill_line {
    int32_t     day;                /* the day it is billed on */
    int32_t     source_day;         /* corrections: the finalized day corrected */
    const char *dims[MD_BILL_DIMS]; /* [MD_BILL_DAY] unused; NULL when not grouped */
    int64_t     tokens;             /* negative only on corrections */
    int64_t     unit_price_nanos;   /* per million tokens, after adjustment */
    int64_t     list_unit_price_nanos; /* before the tenant's adjustment */
    int64_t     amount_nanos;
    const char *currency;
    const char *pricing_model;      /* "unpriced" when no price matched */
    int64_t     revision;
    enum md_bill_status status;
    int         priced;
    int         tt_rank;            /* set by md_bill_add: the token type's sort
                                     * rank (MD_TOK_TYPES: not a known type) */
};

/* A bill: lines and the strings they point to. */
struct md_bill {
    struct md_bill_line *lines;
    size_t               count, cap;
    char               **strs;      /* owned strings (interned per bill) */
    size_t               nstrs, strs_cap;
    char               **htab;      /* strs by content: open addressing, power of 2 */
    size_t               hcap;
    size_t               lines_max;
    /* token type ranks by interned pointer (md_bill_add), so that sorting
     * and merging compare integers instead of parsing names per compare */
    const char          *tt_ptr[8];
    int                  tt_rank[8];
    size_t               ntt;
};
void md_bill_init(struct md_bill *b, size_t lines_max);
void md_bill_fini(struct md_bill *b);
/* Appends a copy of l (its strings copied into b; equal strings share one
 * copy per bill, so equal pointers mean equal strings).  MD_ELIMIT past
 * lines_max. */
int  md_bill_add(struct md_bill *b, const struct md_bill_line *l);
/* Sorts by (day, cluster, namespace, department, model, token type order
 * input, cached_input, cache_creation_input, output, reasoning, others by
 * name, status, pricing model, unit price) and merges lines equal on all of
 * those and currency: tokens summed, amount recomputed once from the merged
 * tokens (priced) or kept 0.  Used by the rater for the providers of one
 * model. */
int  md_bill_merge_lines(struct md_bill *b, struct md_err *err);

struct md_tenant_filter;
struct md_bill_query {
    int32_t      from_day, to_day;       /* [from, to) */
    char         period[8];              /* "YYYY-MM" when asked by period, else "" */
    const char  *filter[MD_BILL_DIMS];   /* exact values; [DAY] unused */
    unsigned     group_mask;             /* bits 1 << enum md_bill_dim; 0: full lines */
    size_t       lines_max;
    /* auth: a tenant token sees only lines of its namespaces or departments
     * (NULL or unrestricted: every line) */
    const struct md_tenant_filter *tenant;
    /* only the open days, rated now (the Cost Management cost sums the
     * stored lines in SQL and adds these) */
    int          open_only;
};
enum md_bill_format { MD_BILL_JSON, MD_BILL_CSV, MD_BILL_FOCUS };

/* period=YYYY-MM or from/to (YYYY-MM-DD, to exclusive), the filters,
 * group_by and format, from (key, value) pairs as the API and CLI get them.
 * MD_EPARSE with "<param>: reason" in err. */
int md_bill_query_parse(size_t n, const char *const *keys, const char *const *values,
    int32_t today, struct md_bill_query *q, enum md_bill_format *fmt, struct md_err *err);

/* Renders a bill (lines as md_rating_bills leaves them, ordered).  JSON:
 *   {"period":"YYYY-MM" | "from":..,"to":.., "lines":[...], "totals":[...]}
 * with group_by lines summed over the other dimensions (only the grouped
 * dimensions, currency, tokens and amount are kept).  CSV: a header row
 * and the same fields as the JSON lines.  FOCUS: FOCUS 1.2 columns.  totals
 * are sums of the lines per currency.  *body is md_malloc'd. */
int md_bill_render(const struct md_bill *b, const struct md_bill_query *q,
    enum md_bill_format fmt, char **body, size_t *len, struct md_err *err);

/* ---- the rater ---- */

struct md_rating *md_rating_new(uint64_t grace_s);
/* Attaches the rater to the daemon's store (store.c); call before
 * md_store_writer_start.  From then on the writer marks the (cluster, day)
 * of every hour a scrape commit touches and rates (closes days past their
 * grace, re-rates dirty days) after drains and when idle, about once a
 * second, once md_rating_load_file has succeeded. */
void md_store_set_rating(struct md_store *st, struct md_rating *r);
void md_rating_free(struct md_rating *r);      /* NULL is a no-op */
/* Time source for tests (unix seconds); NULL: the wall clock. */
void md_rating_set_clock(struct md_rating *r, int64_t (*now_s)(void *), void *arg);

/* Loads the latest revision from the database as the current pricing
 * (none yet: no pricing, everything unpriced), then, when path is non-NULL
 * and the file exists, loads it and, if its canonical JSON differs from the
 * last revision taken from the configuration file, stores it as a new
 * revision (actor "config") that becomes current.  So a PUT through the API
 * stays current across restarts until the file itself changes.  Invalid
 * file: MD_ECONFIG with every problem in errs (nothing changes).  The writer
 * must be running.  *created (optional) is 1 when a revision was added. */
int md_rating_load_file(struct md_rating *r, struct md_store *st, const char *path,
    struct md_cfg_errors *errs, int *created, struct md_err *err);
/* A new revision from a document (YAML or the JSON of GET /api/v1/pricing's
 * "document") by actor, source "api".  Validation problems: MD_ECONFIG with
 * errs.  An identical document to the current one adds no revision
 * (*revision is then the current one). */
int md_rating_put(struct md_rating *r, struct md_store *st, const char *actor,
    const char *doc, size_t len, struct md_cfg_errors *errs, int64_t *revision,
    int *created, struct md_err *err);
/* The current revision number (0: none). */
int64_t md_rating_revision(struct md_rating *r);

/* JSON documents for the API (md_malloc'd):
 *   current:   {"revision":N,"ts":"...","actor":"...","source":"...","document":{...}}
 *   revisions: {"revisions":[{"revision":N,"ts":..,"actor":..,"source":..}]}
 *   diff:      {"from":A,"to":B,"changes":[{"path":"pricing_models[0].items[1]...",
 *               "old":..,"new":..}]}   (absent sides omitted) */
int md_rating_current_json(struct md_rating *r, struct md_store *st, char **body,
    size_t *len, struct md_err *err);
int md_rating_revisions_json(struct md_store *st, char **body, size_t *len, struct md_err *err);
int md_rating_diff_json(struct md_store *st, int64_t a, int64_t b, char **body, size_t *len,
    struct md_err *err);
/* {"milestones":[{"cluster":..,"day":..,"state":..,"dirty":bool,"revision":N,
 *  "rated":"..."}]} for days in [from_day, to_day), cluster optional. */
int md_rating_milestones_json(struct md_store *st, int32_t from_day, int32_t to_day,
    const char *cluster, char **body, size_t *len, struct md_err *err);

/* The bill of q: stored lines of closed and finalized days and corrections
 * booked in the range, and open days rated now with the current pricing
 * (status provisional).  Through this thread's read-only connection.
 * Lines come ordered; with group_by they are summed by md_bill_render. */
int md_rating_bills(struct md_rating *r, struct md_store *st, const struct md_bill_query *q,
    struct md_bill *out, struct md_err *err);

/* Finalizes month "YYYY-MM": its dirty days are re-rated first, then every
 * milestone of the month becomes finalized, and the month is recorded.
 * MD_ESTATE when a day of the month is still open (the month plus grace has
 * not ended); finalizing an already finalized month is MD_OK with
 * *already = 1.  *days = milestones finalized. */
int md_rating_finalize(struct md_rating *r, struct md_store *st, const char *period,
    const char *actor, int *already, size_t *days, struct md_err *err);

/* Re-rates [from_day, to_day) (cluster optional) on purpose, one
 * (cluster, day) per writer transaction, with the current pricing: days
 * with usage but no milestone get one, closed days' lines are replaced when
 * different, finalized days get correction lines, open days stay
 * provisional.  Idempotent: a second run changes nothing and says so.
 * dry_run: every change is computed and rolled back.  progress (optional)
 * is called after each day with (done, total).  *report: md_malloc'd JSON
 *   {"from":..,"to":..,"cluster":..,"dry_run":b,"days":N,"days_changed":N,
 *    "corrections":N,"tenants":[{"namespace":..,"currency":..,
 *    "old_amount":"..","new_amount":"..","old_tokens":N,"new_tokens":N}]} */
typedef void md_rating_progress_fn(void *arg, size_t done, size_t total);
int md_rating_backfill(struct md_rating *r, struct md_store *st, int32_t from_day,
    int32_t to_day, const char *cluster, int dry_run, md_rating_progress_fn *progress,
    void *parg, char **report, size_t *len, struct md_err *err);

/* For cost counters elsewhere (the /metrics usage snapshot): prices one
 * (cluster, day, namespace, model, provider) group's token counts, indexed
 * by enum md_token_type as reported, with the current pricing, by the same
 * rule and rounding as bill lines.  Any thread.  currency gets the pricing
 * model's code, or "XXX" when none applies; *revision the revision used
 * (0: no pricing yet, everything unpriced).  MD_ELIMIT on overflow. */
struct md_price_result;
int md_rating_price_group(struct md_rating *r, const char *cluster, int32_t day,
    const char *namespace, const char *model, const char *provider,
    const uint64_t tokens[5], struct md_price_result *out, char currency[8],
    int64_t *revision, struct md_err *err);

struct md_rating_stats {
    uint64_t unpriced_tokens_total;  /* unpriced tokens newly rated into closed days */
    uint64_t days_rated;             /* (cluster, day) ratings that wrote lines */
    uint64_t lines_written;
    uint64_t corrections_written;
    uint64_t revisions;              /* revisions created by this process */
};
void md_rating_get_stats(struct md_rating *r, struct md_rating_stats *out);

/* "YYYY-MM" -> first day and the first day of the next month. */
int md_rating_period_parse(const char *s, int32_t *first, int32_t *next);
void md_rating_period_fmt(int32_t day, char buf[8]);

/* /metrics cost counters: the rater stages what each rating adds to the
 * store's live aggregate (writer thread) and commits it with the rating;
 * md_rating_take_changed tells the writer to publish a new snapshot.
 * A backfill stages through the writer's own transaction (md_store_call).
 * At start the counters are loaded from bill_lines. */
struct md_usnap_agg;
void md_rating_set_aggregate(struct md_rating *r, struct md_usnap_agg *agg);
int  md_rating_take_changed(struct md_rating *r);

#endif
