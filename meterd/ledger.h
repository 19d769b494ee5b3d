/* ledger.h: cumulative counter samples -> exact integer deltas per hour.
 *
 * Owned by the writer thread; no locks, no I/O, no logging.  One call of
 * md_ledger_apply() takes the billed series of ONE scrape of ONE target and
 * returns the tokens (or requests) each series added since its checkpoint,
 * split over the UTC hours they fall in.  The rules are DESIGN.md's
 * "Exactness of usage", made precise here:
 *
 *  R1 increase: a series present at the last checkpoint whose value did not
 *     go down bills delta = new - last.
 *  R2 restart, judged per target: "went down" = the value is below the
 *     checkpoint, or the sample carries an OpenMetrics _created that differs
 *     from the checkpoint's _created (both present).  Let B be the series of
 *     the target with a usable sample now and a checkpoint above 0 (present
 *     in both; a checkpoint of 0 cannot show a decrease, so it does not
 *     vote), D those of B that went down.  If D > 0 and 2*D >= B the target
 *     restarted: every series of the scrape bills its new value in full
 *     (also those that already grew past their old value), and every other
 *     state of the target -- series missing from the scrape, and series whose
 *     sample is unusable (R6) -- is dropped, so it bills in full when it
 *     returns.  Samples ignored as stale (R7) keep their checkpoint.
 *  R3 guard: if D > 0 and 2*D < B (fewer than half went down) it is not a
 *     restart: only the series of D bill their new value in full, the others
 *     follow R1, nothing is dropped, and result.anomaly is set for the
 *     caller to log and count.
 *  R4 a series without a checkpoint on a target already scraped bills its
 *     value in full.
 *  R5 first scrape of a target (no target state): a target that is not
 *     flagged initial bills every series in full.  A target flagged initial
 *     (present at the first start of a fresh database) follows the policy:
 *     MD_FIRST_BASELINE sets the checkpoints and bills nothing,
 *     MD_FIRST_COUNT bills in full.  The flag and policy are read only on
 *     the first scrape.  A series that first shows up (or first has a usable
 *     value) on a later scrape falls under R4.
 *  R6 unusable values: NaN, +-Inf, negative, non-integer, and >= 2^64 are
 *     skipped and counted per reason; the checkpoint is kept (except on a
 *     restart, R2), so the next usable value bills from the last usable
 *     checkpoint.  Integers >= 2^53 are billed exactly as the double
 *     represents them, and counted in flagged_2p53: deltas telescope, so the
 *     total billed over time is (last represented value - first), off from
 *     the exporter's true count by at most the rounding of those two
 *     samples (<= 1 ulp), never accumulated and never silently.
 *  R7 explicit timestamps: a sample whose timestamp (ms) is <= the
 *     checkpoint time bills nothing and changes nothing (stale_ts); a
 *     negative timestamp or one past year 2262 is skipped (bad_ts).  Without
 *     an explicit timestamp the sample time is now_ns.
 *  R8 absence alone is not a reset: 100, absent, 150 bills 50 (R1);
 *     100, absent, 40 bills 40 (a decrease: R2/R3).
 *  R9 hours: a delta bills the interval (t0, t1] where t0 is the series'
 *     checkpoint time and t1 the sample time.  It is split over the UTC hours
 *     [h, h+3600s) the interval covers, proportionally to the nanoseconds in
 *     each, by the cumulative floor rule with 128-bit intermediates:
 *         bucket_k = floor(delta*cum_k/total) - floor(delta*cum_{k-1}/total)
 *     cum_k = nanoseconds of (t0, t1] up to the end of hour k, total = t1-t0.
 *     The buckets sum to delta exactly and depend only on (t0, t1, delta),
 *     so re-runs and restarts split identically.  The whole delta goes to
 *     the hour holding t1 (the hour of the interval's last nanosecond, so a
 *     sample at exactly hh:00:00.000000000 belongs to the hour that ends
 *     then) when there is no t0 (R4, R5, and states dropped by R2), when
 *     t1 <= t0 (clock stepped back), or when t1 - t0 exceeds spread_max
 *     (default 7 days; then result.spread_capped counts it).  Putting a
 *     very long gap into the current hour keeps the output bounded and bills
 *     it in an open period instead of re-rating a week of closed days.
 *  R10 every usable, non-stale sample moves the checkpoint to (value, t1,
 *     _created), even when the delta is 0, so the next gap starts there.
 *
 * Transactions: md_ledger_apply() and md_ledger_forget_target() change the
 * in-memory state at once (later applies see it), and record how to undo
 * it.  The caller writes the staged states (md_ledger_staged_*) and the
 * usage in one SQLite transaction, then calls md_ledger_commit() if SQLite
 * committed and md_ledger_rollback() if not; rollback restores the exact
 * state of the last commit, so the next scrape bills the whole gap.
 * Several applies (several targets, or the same target twice) may be staged
 * before one commit.  A failing call (any rc but MD_OK) changes nothing.
 *
 * Memory: per series one 56-byte record (arrays grow by doubling), its key
 * bytes (one allocation), and 8-16 bytes of hash index: about 190 bytes for
 * a 60-byte key; see md_ledger_memory_bytes().
 *
 * Speed: exporters list series in a stable order, and a target's records
 * are kept in the order they were first seen, so each input is first
 * compared with the record after the previous match and hashed only on a
 * miss.  Restoring series in the order they were first stored (e.g. ORDER BY
 * rowid) keeps that fast path after a restart.  A restart (R2) and
 * md_ledger_forget_target() scan all records: O(series), rare. */
#ifndef MD_LEDGER_H
#define MD_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MD_LEDGER_SERIES_LIMIT  (1u << 28)   /* largest series_max accepted */
#define MD_LEDGER_KEY_MAX       16384        /* bytes of a series key */
#define MD_LEDGER_SPREAD_DEFAULT_S (7u * 86400u)  /* R9 spread_max default */
#define MD_LEDGER_SPREAD_LIMIT_S   (31u * 86400u) /* largest spread_max */

struct md_ledger;

enum md_first_scrape {
    MD_FIRST_BASELINE = 0,  /* initial targets: first scrape sets checkpoints */
    MD_FIRST_COUNT          /* initial targets: first scrape bills in full */
};

/* One billed series of a scrape.  key is opaque bytes (canonical identity,
 * e.g. name + sorted labels), borrowed for the call. */
struct md_ledger_input {
    const char *key;
    size_t      key_len;        /* 1..MD_LEDGER_KEY_MAX */
    double      value;          /* as parsed */
    int         has_ts;         /* explicit sample timestamp present */
    int64_t     ts_ms;
    int         has_created;    /* OpenMetrics _created present (finite) */
    double      created;
};

/* One (series, hour) with amount > 0.  Deltas of one input are consecutive,
 * in increasing hour order, and inputs appear in input order. */
struct md_ledger_delta {
    size_t   input_index;
    uint64_t hour_start_s;      /* UTC epoch seconds, multiple of 3600 */
    uint64_t amount;
};

struct md_ledger_result {
    const struct md_ledger_delta *deltas;   /* ledger-owned; valid until the
                                             * next apply, commit or rollback */
    size_t delta_count;
    uint64_t billed;            /* sum of all amounts (saturates at 2^64-1) */
    size_t applied;             /* samples that moved a checkpoint (R10) */
    size_t in_both;             /* B of R2 */
    size_t went_down;           /* D of R2 (incl. changed _created) */
    size_t created_changed;     /* of went_down: _created differed */
    size_t resets;              /* billed in full because of R2 or R3 */
    size_t new_series;          /* billed in full under R4/R5 */
    size_t baselined;           /* checkpoint set without a delta (R5) */
    size_t dropped;             /* states dropped by a restart (R2) */
    size_t skipped_nan;
    size_t skipped_inf;
    size_t skipped_negative;
    size_t skipped_non_integer;
    size_t skipped_too_large;   /* >= 2^64 */
    size_t flagged_2p53;        /* billed, but >= 2^53 (R6) */
    size_t stale_ts;            /* R7 */
    size_t bad_ts;              /* R7 */
    size_t spread_capped;       /* R9: gap over spread_max, put in one hour */
    int first_scrape;           /* R5 applied */
    int target_restart;         /* R2 */
    int anomaly;                /* R3 */
};

/* A series' state as the store keeps it (also what restore takes). */
struct md_ledger_state {
    uint32_t    target;
    uint32_t    slot;           /* the series' place among its target's:
                                 * stable while the series lives; a slot
                                 * freed by a committed drop is reused */
    const char *key;            /* ledger-owned; valid until the next call
                                 * that changes the ledger */
    size_t      key_len;
    uint64_t    value;
    uint64_t    ts_ns;          /* checkpoint time (t0 of the next delta) */
    int         has_created;
    double      created;
    int         dropped;        /* staged list only: delete this state */
    int         is_new;         /* staged list only: the series (and its
                                 * slot) first appeared in this transaction */
};

struct md_ledger_target_state {
    uint32_t target;
    uint64_t last_scrape_ns;
    int      dropped;           /* staged list only: delete this target */
};

/* series_max: live series kept, 1..MD_LEDGER_SERIES_LIMIT (NULL outside it
 * or on ENOMEM). */
struct md_ledger *md_ledger_new(size_t series_max);
void md_ledger_free(struct md_ledger *l);

/* Seeds the keyed hash (SipHash) so that label values chosen by tenants
 * cannot flood the table.  Only while the ledger is empty (MD_ESTATE). */
int md_ledger_set_seed(struct md_ledger *l, uint64_t k0, uint64_t k1);
/* R9 spread_max in seconds, 0..MD_LEDGER_SPREAD_LIMIT_S (MD_ELIMIT); 0 puts
 * every delta into the hour of its sample. */
int md_ledger_set_spread_max_s(struct md_ledger *l, uint64_t seconds);

/* Applies one scrape of target (a stable id the caller maps, e.g. a store
 * rowid).  target_initial and policy: R5.  in may be NULL when n is 0;
 * out is required and filled only on MD_OK.
 * Errors, each changing nothing: MD_EPARSE (a NULL/empty key, two inputs
 * with the same key: the scrape is rejected), MD_ELIMIT (key over
 * MD_LEDGER_KEY_MAX, or new series would pass series_max), MD_ENOMEM. */
int md_ledger_apply(struct md_ledger *l, uint32_t target, int target_initial,
    enum md_first_scrape policy, uint64_t now_ns,
    const struct md_ledger_input *in, size_t n,
    struct md_ledger_result *out, struct md_err *err);

/* Drops every state of target and the target itself (staged like apply);
 * its next scrape is a first scrape.  *dropped_out (may be NULL) gets the
 * number of series dropped.  MD_ENOMEM changes nothing; an unknown target
 * is MD_OK with 0. */
int md_ledger_forget_target(struct md_ledger *l, uint32_t target,
    size_t *dropped_out, struct md_err *err);

/* The states changed since the last commit/rollback, each once, to write in
 * the same transaction as the usage: series (dropped=1: delete the row) and
 * targets.  i < count; entries are valid until the next changing call. */
size_t md_ledger_staged_series_count(const struct md_ledger *l);
void   md_ledger_staged_series(const struct md_ledger *l, size_t i,
    struct md_ledger_state *out);
size_t md_ledger_staged_target_count(const struct md_ledger *l);
void   md_ledger_staged_target(const struct md_ledger *l, size_t i,
    struct md_ledger_target_state *out);

/* Makes the staged changes permanent (frees dropped states).  Cannot fail. */
void md_ledger_commit(struct md_ledger *l);
/* Undoes everything since the last commit, exactly.  Cannot fail. */
void md_ledger_rollback(struct md_ledger *l);

/* Loading persisted state at start, before any apply (MD_ESTATE while
 * changes are staged).  restore_series creates the target (last scrape 0)
 * when it is not known yet; a duplicate key is MD_EPARSE; MD_ELIMIT past
 * series_max or MD_LEDGER_KEY_MAX; MD_ENOMEM changes nothing. */
int md_ledger_restore_target(struct md_ledger *l, uint32_t target,
    uint64_t last_scrape_ns, struct md_err *err);
int md_ledger_restore_series(struct md_ledger *l, uint32_t target,
    const char *key, size_t key_len, uint64_t value, uint64_t ts_ns,
    int has_created, double created, struct md_err *err);
/* The same at a given slot (as stored); restore_series takes the target's
 * next slot.  Slots of one target must be distinct (the caller's storage
 * guarantees it); MD_ELIMIT for a slot >= MD_LEDGER_SERIES_LIMIT. */
int md_ledger_restore_series_at(struct md_ledger *l, uint32_t target,
    uint32_t slot, const char *key, size_t key_len, uint64_t value,
    uint64_t ts_ns, int has_created, double created, struct md_err *err);

/* Read access (staged changes included). */
int    md_ledger_get(const struct md_ledger *l, uint32_t target,
    const char *key, size_t key_len, struct md_ledger_state *out);
int    md_ledger_get_target(const struct md_ledger *l, uint32_t target,
    struct md_ledger_target_state *out);
size_t md_ledger_series_count(const struct md_ledger *l);
size_t md_ledger_target_count(const struct md_ledger *l);
/* Calls fn for every live series, in unspecified order; stops at a non-zero
 * return and passes it back. */
typedef int (*md_ledger_each_fn)(const struct md_ledger_state *s, void *ctx);
int    md_ledger_each(const struct md_ledger *l, md_ledger_each_fn fn,
    void *ctx);
/* Heap bytes held (records, index, keys, scratch), for benchmarks. */
size_t md_ledger_memory_bytes(const struct md_ledger *l);

/* R9 split, exposed for tests and re-rating tools: writes at most
 * md_ledger_spread_buckets() deltas for (t0, t1], input_index 0; has_t0 = 0
 * means no previous time.  Returns the number written. */
size_t md_ledger_spread_buckets(int has_t0, uint64_t t0_ns, uint64_t t1_ns,
    uint64_t spread_max_ns);
size_t md_ledger_spread(uint64_t delta, int has_t0, uint64_t t0_ns,
    uint64_t t1_ns, uint64_t spread_max_ns, struct md_ledger_delta *out);

#endif
