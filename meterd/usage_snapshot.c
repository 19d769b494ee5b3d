/* usage_snapshot.c: the in-memory usage aggregate and its published
 * snapshots (see usage_snapshot.h).
 *
 * Threads: an md_usnap_agg belongs to one thread (the store writer); it has
 * no locks.  Snapshots are immutable after md_usnap_agg_snapshot() returns;
 * their reference count is atomic.  The publisher's current pointer is
 * guarded by its mutex, held only to swap or to take a reference, never
 * while rendering.
 *
 * Invariants: label strings live in a chunked arena whose chunks never move,
 * shared (by reference count) between the aggregate and every snapshot, so a
 * snapshot copies only the series array, not the strings.  entries[0 ..
 * committed) hold committed totals only; entries past it exist only while a
 * transaction is staged.  Series are never removed: counters are cumulative.
 * A rolled-back new label set leaves its bytes in the arena (bounded by the
 * number of rollbacks, which are rare and logged by the store). */
#include "usage_snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

const char *const md_usnap_label_names[MD_USNAP_FAMILIES][MD_USNAP_LABELS_MAX] = {
    [MD_USNAP_USAGE] = { "cluster", "namespace", "department", "model", "provider",
                         "token_type" },
    [MD_USNAP_UNPRICED] = { "cluster", "namespace", "department", "model", "provider",
                            "token_type" },
    [MD_USNAP_COST] = { "cluster", "namespace", "department", "model", "currency", NULL },
};
const unsigned md_usnap_label_count[MD_USNAP_FAMILIES] = { 6, 6, 5 };

#define CHUNK_BYTES (256u << 10)

struct chunk {
    struct chunk *next;
    size_t        used, cap;
    char          data[];
};

struct arena {
    atomic_uint   refs;
    struct chunk *head;
};

struct staged {
    uint32_t idx;
    uint64_t tokens, requests;
    int64_t  nanos;
};

struct md_usnap_agg {
    struct arena           *arena;
    struct md_usnap_series *e;
    size_t                  count, committed, alloc, series_max;
    uint32_t               *table;         /* index + 1; 0 empty */
    size_t                  table_size;    /* power of two, >= 2 * count */
    struct staged          *st;
    size_t                  st_count, st_alloc;
    uint64_t                untracked, st_untracked;
    uint64_t                seed;
};

struct md_usnap {
    atomic_uint             refs;
    struct arena           *arena;         /* NULL for an empty snapshot */
    struct md_usnap_series *s;
    size_t                  count;
    uint64_t                untracked, gen;
};

struct md_usnap_pub {
    pthread_mutex_t  mu;
    struct md_usnap *cur;
};

static atomic_ullong generation;

/* ---- arena ---- */

static struct arena *
arena_new(void)
{
    struct arena *ar = md_calloc(1, sizeof(*ar));

    if (ar != NULL)
        atomic_init(&ar->refs, 1);
    return ar;
}

static void
arena_unref(struct arena *ar)
{
    if (ar == NULL || atomic_fetch_sub(&ar->refs, 1) != 1)
        return;
    while (ar->head != NULL) {
        struct chunk *c = ar->head;

        ar->head = c->next;
        md_free(c);
    }
    md_free(ar);
}

static char *
arena_copy(struct arena *ar, const char *s, size_t len)
{
    struct chunk *c = ar->head;
    char *p;

    if (c == NULL || c->cap - c->used < len + 1) {
        size_t cap = len + 1 > CHUNK_BYTES ? len + 1 : CHUNK_BYTES;

        c = md_malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = ar->head;
        ar->head = c;
    }
    p = c->data + c->used;
    memcpy(p, s, len);
    p[len] = '\0';
    c->used += len + 1;
    return p;
}

/* ---- hashing: keyed, because tenants choose label values ---- */

static uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static uint64_t
key_hash(uint64_t seed, unsigned family, unsigned n, const char *const vals[],
    const size_t lens[])
{
    uint64_t h = mix(seed, family);

    for (unsigned i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)vals[i];
        size_t len = lens[i], j = 0;

        h = mix(h, len);
        for (; j + 8 <= len; j += 8) {
            uint64_t w;

            memcpy(&w, p + j, 8);
            h = mix(h, w);
        }
        if (j < len) {
            uint64_t w = 0;

            memcpy(&w, p + j, len - j);
            h = mix(h, w);
        }
    }
    return mix(h, 0x51afd7ed558ccd2ULL);
}

static uint64_t
series_hash(uint64_t seed, const struct md_usnap_series *s)
{
    size_t lens[MD_USNAP_LABELS_MAX];

    for (unsigned i = 0; i < s->nlabels; i++)
        lens[i] = s->len[i];
    return key_hash(seed, s->family, s->nlabels, s->val, lens);
}

static int
series_eq(const struct md_usnap_series *s, unsigned family, unsigned n,
    const char *const vals[], const size_t lens[])
{
    if (s->family != family)
        return 0;
    for (unsigned i = 0; i < n; i++)
        if (s->len[i] != lens[i] || memcmp(s->val[i], vals[i], lens[i]) != 0)
            return 0;
    return 1;
}

static int
table_rebuild(struct md_usnap_agg *a, size_t size)
{
    uint32_t *t = md_calloc(size, sizeof(*t));

    if (t == NULL)
        return MD_ENOMEM;
    for (size_t i = 0; i < a->count; i++) {
        size_t slot = (size_t)series_hash(a->seed, &a->e[i]) & (size - 1);

        while (t[slot] != 0)
            slot = (slot + 1) & (size - 1);
        t[slot] = (uint32_t)(i + 1);
    }
    md_free(a->table);
    a->table = t;
    a->table_size = size;
    return MD_OK;
}

/* ---- aggregate ---- */

struct md_usnap_agg *
md_usnap_agg_new(size_t series_max)
{
    struct md_usnap_agg *a;

    if (series_max == 0 || series_max > MD_USNAP_SERIES_MAX)
        return NULL;
    a = md_calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->series_max = series_max;
    a->seed = md_now_realtime_ns() ^ (md_now_monotonic_ns() << 17) ^ (uint64_t)(uintptr_t)a;
    a->arena = arena_new();
    if (a->arena == NULL || table_rebuild(a, 1024) != MD_OK) {
        md_usnap_agg_free(a);
        return NULL;
    }
    return a;
}

void
md_usnap_agg_free(struct md_usnap_agg *a)
{
    if (a == NULL)
        return;
    arena_unref(a->arena);
    md_free(a->e);
    md_free(a->table);
    md_free(a->st);
    md_free(a);
}

/* Index of the label set, creating it (with zero totals) when new.
 * MD_ELIMIT when it cannot be tracked. */
static int
find_or_add(struct md_usnap_agg *a, unsigned family, const char *const vals[],
    const size_t lens[], uint32_t *out)
{
    unsigned n = md_usnap_label_count[family];
    uint64_t h = key_hash(a->seed, family, n, vals, lens);
    size_t slot = (size_t)h & (a->table_size - 1);
    struct md_usnap_series *s;

    while (a->table[slot] != 0) {
        uint32_t i = a->table[slot] - 1;

        if (series_eq(&a->e[i], family, n, vals, lens)) {
            *out = i;
            return MD_OK;
        }
        slot = (slot + 1) & (a->table_size - 1);
    }
    if (a->count >= a->series_max)
        return MD_ELIMIT;
    for (unsigned i = 0; i < n; i++)
        if (lens[i] > MD_USNAP_VALUE_MAX)
            return MD_ELIMIT;
    if (a->count == a->alloc) {
        size_t na = a->alloc ? a->alloc * 2 : 256;
        struct md_usnap_series *ne = md_realloc(a->e, na * sizeof(*ne));

        if (ne == NULL)
            return MD_ENOMEM;
        a->e = ne;
        a->alloc = na;
    }
    s = &a->e[a->count];
    memset(s, 0, sizeof(*s));
    s->family = (uint8_t)family;
    s->nlabels = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        char *p = arena_copy(a->arena, vals[i], lens[i]);

        if (p == NULL)
            return MD_ENOMEM;
        s->val[i] = p;
        s->len[i] = (uint16_t)lens[i];
    }
    a->table[slot] = (uint32_t)(a->count + 1);
    *out = (uint32_t)a->count;
    a->count++;
    /* keep the load at most 1/2 */
    if (a->count * 2 > a->table_size && table_rebuild(a, a->table_size * 2) != MD_OK)
        return MD_ENOMEM;   /* the old table is intact and still finds it */
    return MD_OK;
}

static int
stage(struct md_usnap_agg *a, unsigned family, const char *const vals[], const size_t lens[],
    uint64_t tokens, uint64_t requests, int64_t nanos)
{
    uint32_t idx = 0;
    int rc;

    if (a->st_count == MD_USNAP_STAGED_MAX) {
        a->st_untracked++;
        return MD_ELIMIT;
    }
    rc = find_or_add(a, family, vals, lens, &idx);
    if (rc != MD_OK) {
        a->st_untracked++;
        return rc == MD_ELIMIT ? MD_OK : rc;
    }
    if (a->st_count == a->st_alloc) {
        size_t na = a->st_alloc ? a->st_alloc * 2 : 256;
        struct staged *ns = md_realloc(a->st, na * sizeof(*ns));

        if (ns == NULL) {
            a->st_untracked++;
            return MD_ENOMEM;
        }
        a->st = ns;
        a->st_alloc = na;
    }
    a->st[a->st_count++] = (struct staged){ idx, tokens, requests, nanos };
    return MD_OK;
}

int
md_usnap_agg_stage_usage(struct md_usnap_agg *a, const char *const vals[6],
    const size_t lens[6], uint64_t tokens, uint64_t requests)
{
    return stage(a, MD_USNAP_USAGE, vals, lens, tokens, requests, 0);
}

int
md_usnap_agg_stage_unpriced(struct md_usnap_agg *a, const char *const vals[6],
    const size_t lens[6], uint64_t tokens)
{
    return stage(a, MD_USNAP_UNPRICED, vals, lens, tokens, 0, 0);
}

int
md_usnap_agg_stage_cost(struct md_usnap_agg *a, const char *const vals[5],
    const size_t lens[5], int64_t nanos)
{
    return stage(a, MD_USNAP_COST, vals, lens, 0, 0, nanos);
}

int
md_usnap_agg_commit(struct md_usnap_agg *a)
{
    int changed = a->count != a->committed || a->st_untracked != 0;

    for (size_t i = 0; i < a->st_count; i++) {
        struct md_usnap_series *s = &a->e[a->st[i].idx];
        uint64_t t, r;
        int64_t c;

        /* a total that would wrap is not applied (never a silent wrap) */
        if (md_add_u64(s->tokens, a->st[i].tokens, &t) != MD_OK ||
            md_add_u64(s->requests, a->st[i].requests, &r) != MD_OK ||
            md_add_i64(s->nanos, a->st[i].nanos, &c) != MD_OK) {
            a->untracked++;
            changed = 1;
            continue;
        }
        changed |= t != s->tokens || r != s->requests || c != s->nanos;
        s->tokens = t;
        s->requests = r;
        s->nanos = c;
    }
    a->untracked += a->st_untracked;
    a->st_untracked = 0;
    a->st_count = 0;
    a->committed = a->count;
    return changed;
}

void
md_usnap_agg_rollback(struct md_usnap_agg *a)
{
    a->st_count = 0;
    a->st_untracked = 0;
    if (a->count != a->committed) {
        a->count = a->committed;
        size_t keep = a->count;

        /* the new label sets leave the table.  Out of memory for the new
         * table: keep them, with zero totals (nothing was applied to them) */
        a->count = a->committed;
        if (table_rebuild(a, a->table_size) != MD_OK) {
            a->count = keep;
            a->committed = keep;
        }
    }
}

size_t
md_usnap_agg_series_count(const struct md_usnap_agg *a)
{
    return a->committed;
}

uint64_t
md_usnap_agg_untracked(const struct md_usnap_agg *a)
{
    return a->untracked;
}

/* ---- snapshots ---- */

struct md_usnap *
md_usnap_agg_snapshot(struct md_usnap_agg *a)
{
    struct md_usnap *s = md_calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    if (a->committed > 0) {
        s->s = md_malloc(a->committed * sizeof(*s->s));
        if (s->s == NULL) {
            md_free(s);
            return NULL;
        }
        memcpy(s->s, a->e, a->committed * sizeof(*s->s));
    }
    atomic_init(&s->refs, 1);
    s->count = a->committed;
    s->untracked = a->untracked;
    s->gen = atomic_fetch_add(&generation, 1) + 1;
    atomic_fetch_add(&a->arena->refs, 1);
    s->arena = a->arena;
    return s;
}

struct md_usnap *
md_usnap_empty(void)
{
    struct md_usnap *s = md_calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    s->gen = atomic_fetch_add(&generation, 1) + 1;
    return s;
}

struct md_usnap *
md_usnap_ref(struct md_usnap *s)
{
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
    return s;
}

void
md_usnap_unref(struct md_usnap *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    arena_unref(s->arena);
    md_free(s->s);
    md_free(s);
}

size_t
md_usnap_count(const struct md_usnap *s)
{
    return s->count;
}

const struct md_usnap_series *
md_usnap_series(const struct md_usnap *s)
{
    return s->s;
}

uint64_t
md_usnap_untracked(const struct md_usnap *s)
{
    return s->untracked;
}

uint64_t
md_usnap_generation(const struct md_usnap *s)
{
    return s->gen;
}

/* ---- publisher ---- */

struct md_usnap_pub *
md_usnap_pub_new(void)
{
    struct md_usnap_pub *p = md_calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->cur = md_usnap_empty();
    if (p->cur == NULL) {
        md_free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void
md_usnap_pub_free(struct md_usnap_pub *p)
{
    if (p == NULL)
        return;
    md_usnap_unref(p->cur);
    pthread_mutex_destroy(&p->mu);
    md_free(p);
}

void
md_usnap_pub_publish(struct md_usnap_pub *p, struct md_usnap *s)
{
    struct md_usnap *old;

    if (s == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    old = p->cur;
    p->cur = s;
    pthread_mutex_unlock(&p->mu);
    md_usnap_unref(old);        /* outside the lock: may free megabytes */
}

struct md_usnap *
md_usnap_pub_get(struct md_usnap_pub *p)
{
    struct md_usnap *s;

    pthread_mutex_lock(&p->mu);
    s = md_usnap_ref(p->cur);
    pthread_mutex_unlock(&p->mu);
    return s;
}
