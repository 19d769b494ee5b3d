/* usage_snapshot.h: cumulative usage per exported label set, kept in memory
 * for /metrics, so that no scrape of meterd touches SQLite.
 *
 * Two objects:
 * - struct md_usnap_agg, the live aggregate.  Owned by the store's writer
 *   thread (no locks inside): the writer stages the deltas of a transaction
 *   with md_usnap_agg_stage_*(), then calls md_usnap_agg_commit() after
 *   COMMIT succeeded or md_usnap_agg_rollback() after a ROLLBACK, so the
 *   aggregate only ever holds committed usage.
 * - struct md_usnap, an immutable snapshot of the committed aggregate,
 *   reference counted.  md_usnap_pub_publish() (writer) swaps the current one
 *   under a short mutex; md_usnap_pub_get() (any thread) returns a counted
 *   reference that the caller drops with md_usnap_unref().
 *
 * Families and their labels (values exactly as stored):
 *   MD_USNAP_USAGE     tokens, requests   cluster namespace department model provider token_type
 *   MD_USNAP_UNPRICED  tokens             cluster namespace department model provider token_type
 *   MD_USNAP_COST      nanos (int64)      cluster namespace department model currency
 * Cost and unpriced tokens are fed by rating (issue 5); until it does, those
 * families simply have no series.
 *
 * Limits: at most series_max label sets (MD_USNAP_SERIES_MAX at most); a
 * delta for a new label set beyond it is not tracked and counted in
 * `untracked` (exported, never silent).  Label values longer than
 * MD_USNAP_VALUE_MAX bytes are refused the same way. */
#ifndef MD_USAGE_SNAPSHOT_H
#define MD_USAGE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MD_USNAP_SERIES_MAX 4000000u
#define MD_USNAP_VALUE_MAX  65535u
#define MD_USNAP_LABELS_MAX 6
#define MD_USNAP_STAGED_MAX 4000000u    /* deltas staged in one transaction */

enum md_usnap_family { MD_USNAP_USAGE = 0, MD_USNAP_UNPRICED, MD_USNAP_COST, MD_USNAP_FAMILIES };

/* label names per family, and their count */
extern const char *const md_usnap_label_names[MD_USNAP_FAMILIES][MD_USNAP_LABELS_MAX];
extern const unsigned md_usnap_label_count[MD_USNAP_FAMILIES];

/* One series of a snapshot.  val/len point into memory the snapshot keeps
 * alive; the values are the committed totals at publish time. */
struct md_usnap_series {
    uint8_t      family;                       /* enum md_usnap_family */
    uint8_t      nlabels;
    uint16_t     len[MD_USNAP_LABELS_MAX];
    const char  *val[MD_USNAP_LABELS_MAX];
    uint64_t     tokens;                       /* USAGE, UNPRICED */
    uint64_t     requests;                     /* USAGE */
    int64_t      nanos;                        /* COST: 1e-9 units of currency */
};

struct md_usnap_agg;
struct md_usnap;
struct md_usnap_pub;

/* series_max: 1..MD_USNAP_SERIES_MAX.  NULL on allocation failure. */
struct md_usnap_agg *md_usnap_agg_new(size_t series_max);
void                 md_usnap_agg_free(struct md_usnap_agg *a);     /* NULL ok */

/* Stage deltas of the running transaction.  vals/lens hold the family's
 * labels in the order of md_usnap_label_names.  MD_OK also when the label set
 * could not be tracked (counted as untracked); MD_ENOMEM or MD_ELIMIT
 * (too many staged deltas) otherwise, and the caller may ignore both: usage
 * in SQLite never depends on the snapshot. */
int md_usnap_agg_stage_usage(struct md_usnap_agg *a, const char *const vals[6],
    const size_t lens[6], uint64_t tokens, uint64_t requests);
int md_usnap_agg_stage_unpriced(struct md_usnap_agg *a, const char *const vals[6],
    const size_t lens[6], uint64_t tokens);
/* vals: cluster, namespace, department, model, currency.  nanos may be
 * negative (an adjustment); the sum is checked for int64 overflow and a
 * delta that would overflow is counted as untracked. */
int md_usnap_agg_stage_cost(struct md_usnap_agg *a, const char *const vals[5],
    const size_t lens[5], int64_t nanos);
/* Apply the staged deltas (after COMMIT) or forget them (after ROLLBACK).
 * commit returns 1 when something changed (worth publishing). */
int  md_usnap_agg_commit(struct md_usnap_agg *a);
void md_usnap_agg_rollback(struct md_usnap_agg *a);
size_t   md_usnap_agg_series_count(const struct md_usnap_agg *a);
uint64_t md_usnap_agg_untracked(const struct md_usnap_agg *a);

/* An immutable copy of the committed aggregate.  NULL on allocation failure. */
struct md_usnap *md_usnap_agg_snapshot(struct md_usnap_agg *a);

/* An empty snapshot (no series). */
struct md_usnap *md_usnap_empty(void);
struct md_usnap *md_usnap_ref(struct md_usnap *s);
void             md_usnap_unref(struct md_usnap *s);        /* NULL ok; thread-safe */
/* Series in first-seen order (stable: a new label set never reorders the
 * others, so a cardinality cut always keeps the same series). */
size_t                        md_usnap_count(const struct md_usnap *s);
const struct md_usnap_series *md_usnap_series(const struct md_usnap *s);
uint64_t                      md_usnap_untracked(const struct md_usnap *s);
/* Unique across the process for each snapshot made (cache key). */
uint64_t                      md_usnap_generation(const struct md_usnap *s);

/* The publisher: the current snapshot behind a mutex. */
struct md_usnap_pub *md_usnap_pub_new(void);                 /* holds an empty snapshot */
void                 md_usnap_pub_free(struct md_usnap_pub *p);   /* NULL ok */
/* Takes ownership of s (NULL: keeps the current one). */
void                 md_usnap_pub_publish(struct md_usnap_pub *p, struct md_usnap *s);
/* A counted reference to the current snapshot; never NULL. */
struct md_usnap     *md_usnap_pub_get(struct md_usnap_pub *p);

#endif
