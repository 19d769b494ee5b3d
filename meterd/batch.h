/* batch.h: one successful scrape of one target, reduced to the series meterd
 * bills, handed from the scrape thread to the writer thread.
 *
 * Ownership moves with the pointer: the scrape thread builds a batch, the
 * store takes it (md_store_submit_batch) and frees it after commit.  All
 * strings live in one arena; entries refer to them by offset, so a batch is
 * two allocations whatever its size.  Limits: MD_BATCH_ENTRIES_MAX entries,
 * arena capped at MD_BATCH_ARENA_MAX bytes. */
#ifndef MD_BATCH_H
#define MD_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define MD_BATCH_ENTRIES_MAX 1000000
#define MD_BATCH_ARENA_MAX   (256u << 20)

enum md_dim {
    MD_DIM_CLUSTER = 0, MD_DIM_NAMESPACE, MD_DIM_DEPARTMENT, MD_DIM_MODEL, MD_DIM_PROVIDER,
    MD_DIM_OPERATION, MD_DIM_TOKEN_TYPE, MD_DIM_COUNT
};
extern const char *const md_dim_names[MD_DIM_COUNT];

enum md_kind { MD_KIND_TOKENS = 1, MD_KIND_REQUESTS = 2 };

/* Reasons a scraped sample is not billed; each is counted, none is silent. */
enum md_drop {
    MD_DROP_OTHER_FAMILY = 0,     /* not a token-usage family (latency, target_info...) */
    MD_DROP_BUCKET,               /* token-usage _bucket: tokens come from _sum */
    MD_DROP_COUNT_NOT_INPUT,      /* _count of a non-input type: requests come from input */
    MD_DROP_EXCLUDED_OPERATION,   /* count_tokens, responses_input_tokens */
    MD_DROP_TOTAL_TYPE,           /* v0.3 token type "total" = input + output */
    MD_DROP_NO_TOKEN_TYPE,        /* token sample without a token-type label */
    MD_DROP_INFERENCE_DUPLICATE,  /* gen_ai.client.inference.usage.* repeats token.usage */
    MD_DROP_INVALID_VALUE,        /* NaN, infinite, negative or fractional counter */
    MD_DROP_STALE_TIMESTAMP,      /* explicit timestamp not after the checkpoint */
    MD_DROP_TOO_LARGE,            /* counter at or above 2^53 */
    MD_DROP_REASON_COUNT
};
extern const char *const md_drop_names[MD_DROP_REASON_COUNT];

struct md_batch_entry {
    uint32_t key_off, key_len;               /* series identity in the arena */
    uint32_t dim_off[MD_DIM_COUNT];
    uint16_t dim_len[MD_DIM_COUNT];
    uint8_t  kind;                           /* enum md_kind */
    uint8_t  has_ts, has_created, overflow;
    double   value;
    int64_t  ts_ms;
    double   created;
};

struct md_batch {
    char                  *target;           /* target identity (URL, or URL#pod-uid) */
    int                    target_initial;   /* present at the first start of a fresh db */
    uint64_t               scrape_ns;        /* wall clock when the body was received */
    struct md_batch_entry *e;
    size_t                 count, alloc;
    struct md_buf          arena;
    uint64_t               dropped[MD_DROP_REASON_COUNT];
    uint64_t               overflow_series;  /* otel_metric_overflow="true" series seen */
};

struct md_batch *md_batch_new(const char *target, int target_initial, uint64_t scrape_ns);
void             md_batch_free(struct md_batch *b);                     /* NULL ok */
/* Room for this many entries and arena bytes at once, so a batch the size
 * of the target's last one grows without reallocating (a hint: MD_OK or
 * MD_ENOMEM; sizes above the limits are clamped to them). */
int md_batch_reserve(struct md_batch *b, size_t entries, size_t arena_bytes);
/* Appends an entry; key and dims are copied into the arena.  MD_ELIMIT past
 * the stated limits, MD_ENOMEM. */
int md_batch_add(struct md_batch *b, const char *key, size_t key_len,
    const char *const dims[MD_DIM_COUNT], const size_t dim_lens[MD_DIM_COUNT],
    enum md_kind kind, double value, int has_ts, int64_t ts_ms, int has_created,
    double created, int overflow);
static inline const char *
md_batch_str(const struct md_batch *b, uint32_t off)
{
    return b->arena.data + off;
}

#endif
