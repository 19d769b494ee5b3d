/* batch.c: the scrape -> writer hand-off.  A batch is built by one thread
 * and then owned by the next; no locking inside.  Invariant: every offset in
 * an entry points inside the arena at a NUL-terminated string. */
#include "batch.h"

#include <string.h>

#include "util.h"

const char *const md_dim_names[MD_DIM_COUNT] = {
    "cluster", "namespace", "department", "model", "provider", "operation", "token_type"
};

const char *const md_drop_names[MD_DROP_REASON_COUNT] = {
    "other_family", "histogram_bucket", "count_not_input", "excluded_operation",
    "total_token_type", "no_token_type", "inference_usage_duplicate", "invalid_value",
    "stale_timestamp", "too_large",
};

struct md_batch *
md_batch_new(const char *target, int target_initial, uint64_t scrape_ns)
{
    struct md_batch *b = md_calloc(1, sizeof(*b));

    if (b == NULL)
        return NULL;
    b->target = md_strdup(target);
    if (b->target == NULL) {
        md_free(b);
        return NULL;
    }
    b->target_initial = target_initial;
    b->scrape_ns = scrape_ns;
    md_buf_init(&b->arena, MD_BATCH_ARENA_MAX);
    return b;
}

void
md_batch_free(struct md_batch *b)
{
    if (b == NULL)
        return;
    md_free(b->target);
    md_free(b->e);
    md_buf_fini(&b->arena);
    md_free(b);
}

int
md_batch_reserve(struct md_batch *b, size_t entries, size_t arena_bytes)
{
    char *at;
    size_t room;

    if (entries > MD_BATCH_ENTRIES_MAX)
        entries = MD_BATCH_ENTRIES_MAX;
    if (entries > b->alloc) {
        struct md_batch_entry *p = md_realloc(b->e, entries * sizeof(*p));

        if (p == NULL)
            return MD_ENOMEM;
        b->e = p;
        b->alloc = entries;
    }
    if (arena_bytes > b->arena.cap - b->arena.len)
        arena_bytes = b->arena.cap - b->arena.len;
    /* the arena's room is its allocation; nothing is committed */
    return md_buf_reserve(&b->arena, arena_bytes, &at, &room) == MD_ENOMEM ? MD_ENOMEM : MD_OK;
}

int
md_batch_add(struct md_batch *b, const char *key, size_t key_len,
    const char *const dims[MD_DIM_COUNT], const size_t dim_lens[MD_DIM_COUNT],
    enum md_kind kind, double value, int has_ts, int64_t ts_ms, int has_created,
    double created, int overflow)
{
    struct md_batch_entry e;
    size_t total = key_len + 1, room, off;
    char *at;
    int rc;

    memset(&e, 0, sizeof(e));
    if (b->count == MD_BATCH_ENTRIES_MAX)
        return MD_ELIMIT;
    if (b->count == b->alloc) {
        size_t n = b->alloc ? b->alloc * 2 : 64;
        struct md_batch_entry *p = md_realloc(b->e, n * sizeof(*p));

        if (p == NULL)
            return MD_ENOMEM;
        b->e = p;
        b->alloc = n;
    }
    /* the key and the dims, each NUL-terminated, in one reservation; each
     * term is below the arena cap, so the sum cannot wrap */
    if (key_len > MD_BATCH_ARENA_MAX)
        return MD_ELIMIT;
    for (int d = 0; d < MD_DIM_COUNT; d++) {
        if (dim_lens[d] > UINT16_MAX)
            return MD_ELIMIT;
        total += dim_lens[d] + 1;
    }
    rc = md_buf_reserve(&b->arena, total, &at, &room);
    if (rc != MD_OK)
        return rc;
    /* offsets fit: the arena is capped at MD_BATCH_ARENA_MAX < 2^32 */
    off = b->arena.len;
    e.key_off = (uint32_t)off;
    e.key_len = (uint32_t)key_len;
    memcpy(at, key, key_len);
    at[key_len] = '\0';
    at += key_len + 1;
    off += key_len + 1;
    for (int d = 0; d < MD_DIM_COUNT; d++) {
        e.dim_off[d] = (uint32_t)off;
        e.dim_len[d] = (uint16_t)dim_lens[d];
        if (dim_lens[d] > 0)
            memcpy(at, dims[d], dim_lens[d]);
        at[dim_lens[d]] = '\0';
        at += dim_lens[d] + 1;
        off += dim_lens[d] + 1;
    }
    md_buf_commit(&b->arena, total);
    e.kind = (uint8_t)kind;
    e.value = value;
    e.has_ts = has_ts != 0;
    e.ts_ms = ts_ms;
    e.has_created = has_created != 0;
    e.created = created;
    e.overflow = overflow != 0;
    b->e[b->count++] = e;
    return MD_OK;
}
