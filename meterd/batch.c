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

static int
put_str(struct md_batch *b, const char *s, size_t len, uint32_t *off)
{
    size_t at = b->arena.len;
    int rc = md_buf_append(&b->arena, s, len);

    if (rc == MD_OK)
        rc = md_buf_putc(&b->arena, '\0');
    if (rc != MD_OK) {
        b->arena.len = at;
        return rc;
    }
    *off = (uint32_t)at;
    return MD_OK;
}

int
md_batch_add(struct md_batch *b, const char *key, size_t key_len,
    const char *const dims[MD_DIM_COUNT], const size_t dim_lens[MD_DIM_COUNT],
    enum md_kind kind, double value, int has_ts, int64_t ts_ms, int has_created,
    double created, int overflow)
{
    struct md_batch_entry e;
    size_t mark = b->arena.len;
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
    rc = put_str(b, key, key_len, &e.key_off);
    e.key_len = (uint32_t)key_len;
    for (int d = 0; d < MD_DIM_COUNT && rc == MD_OK; d++) {
        if (dim_lens[d] > UINT16_MAX) {
            rc = MD_ELIMIT;
            break;
        }
        rc = put_str(b, dims[d], dim_lens[d], &e.dim_off[d]);
        e.dim_len[d] = (uint16_t)dim_lens[d];
    }
    if (rc != MD_OK) {
        b->arena.len = mark;
        return rc;
    }
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
