/* ledger.c: cumulative counter samples -> exact integer deltas per hour.
 *
 * Owned by the writer thread; no locks, no I/O, no logging.  The rules R1-R10
 * are stated in ledger.h (DESIGN.md "Exactness of usage").
 *
 * Layout: series records live in a dense array (ser[0..count)); an
 * open-addressing index (linear probing, load <= 1/2, slot = record index + 1,
 * 0 = empty) finds them by SipHash(target, key).  Targets are a small array
 * sorted by id.  Each record has a slot, its place in its target's stored
 * state (the store's ledger_state row): new records take the lowest slot no
 * record of the target holds (tombstones hold theirs until commit), so a
 * target's slots stay below the most records it had at once.
 *
 * Invariants:
 *  - every record in ser[] has exactly one slot; live = records without
 *    F_DROPPED; live <= series_max.
 *  - records are only appended or changed in place between two commits;
 *    a drop sets F_DROPPED (a tombstone that lookups treat as absent and a
 *    later apply may revive).  Physical removal happens only in commit, so
 *    the undo log's record indexes stay valid until then.
 *  - the undo log holds, for each record and target changed since the last
 *    commit, its state at that commit (F_DIRTY marks "already logged"),
 *    in change order; it doubles as the staged list for the store.
 *  - series.seen holds the epoch of the apply that matched the record; it is
 *    scratch, not state (neither logged nor restored): an apply bumps the
 *    epoch, so stale marks of a failed apply mean nothing.
 *  - md_ledger_apply() does all fallible work (classification, allocation,
 *    key copies) before its first change, so a failure changes nothing;
 *    commit and rollback never allocate and cannot fail. */
#include "ledger.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HOUR_NS   3600000000000ull
#define HOUR_S    3600ull
#define NONE      UINT32_MAX

#define F_CREATED 0x1u      /* record holds a _created value */
#define F_DROPPED 0x2u      /* tombstone: state dropped, awaiting commit */
#define F_DIRTY   0x4u      /* logged in the undo log of this transaction */

#define TWO_P53   9007199254740992.0
#define TWO_P64   18446744073709551616.0

struct series {
    uint64_t hash;
    uint64_t value;
    uint64_t ts_ns;
    double   created;
    char    *key;           /* key_len bytes, no terminator */
    uint32_t target;
    uint32_t slot;          /* the series' place in its target's stored state */
    uint16_t key_len;       /* <= MD_LEDGER_KEY_MAX */
    uint16_t flags;
    uint32_t seen;          /* apply epoch that matched it (not state) */
};

struct target {
    uint64_t last_scrape_ns;
    uint32_t id;
    uint32_t flags;         /* F_DROPPED, F_DIRTY */
    uint32_t nslots;        /* slots handed out: every record's slot is below */
    uint32_t nrec;          /* records of the target in ser[], tombstones too */
};

enum undo_kind { U_MOD = 0, U_INS };

struct undo {
    uint64_t value;
    uint64_t ts_ns;
    double   created;
    uint32_t idx;
    uint32_t kind;
    uint32_t old_flags;
};

struct tundo {
    uint64_t last_scrape_ns;
    uint32_t id;
    uint32_t kind;
    uint32_t old_flags;
    uint32_t nslots;
};

/* classification of one input during an apply */
enum cls { C_SKIP = 0, C_STALE, C_UP, C_DOWN, C_NEW };

struct work {
    uint64_t hash;
    uint64_t value;
    uint64_t t1;
    uint64_t t0;
    uint64_t delta;
    char    *key_copy;      /* C_NEW without a tombstone to revive */
    uint32_t idx;           /* record (C_UP, C_DOWN, C_STALE, revived C_NEW) */
    uint32_t cls;
    int      has_t0;
    int      has_created;
    double   created;
};

struct md_ledger {
    size_t   series_max;
    uint64_t k0, k1;
    uint64_t spread_max_ns;

    struct series *ser;
    size_t   count, cap, live;
    size_t   key_bytes;

    uint32_t *slots;
    size_t   nslots;        /* power of two */

    struct target *tgt;
    size_t   ntgt, tgtcap;

    struct undo *undo;
    size_t   nundo, undocap;
    struct tundo *tundo;
    size_t   ntundo, tundocap;

    /* scratch of one apply, reused */
    struct work *work;
    size_t   workcap;
    uint32_t epoch;         /* of the current apply, never 0 */
    uint32_t *dset;         /* duplicates among new keys: input index + 1 */
    size_t   dsetcap;
    size_t   dsetn;         /* slots in use by the current apply (pow2) */
    struct md_ledger_delta *deltas;
    size_t   deltacap;
    uint8_t *smap;          /* slots in use of the applied target (holes) */
    size_t   smapcap;
};

/* ---- hashing: SipHash-1-3, keyed per ledger and per target ---- */

static inline uint64_t
rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64u - b));
}

#define SIPROUND do { \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32); \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2; \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32); \
    } while (0)

static uint64_t
hash_key(const struct md_ledger *l, uint32_t target, const char *key,
    size_t len)
{
    /* the target id tweaks the key: same bytes on two targets differ */
    uint64_t k0 = l->k0;
    uint64_t k1 = l->k1 ^ ((uint64_t)target * 0x9e3779b97f4a7c15ull);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    const unsigned char *p = (const unsigned char *)key;
    size_t i = 0;
    uint64_t m, b;

    for (; i + 8 <= len; i += 8) {
        m = 0;
        for (unsigned j = 0; j < 8; j++)
            m |= (uint64_t)p[i + j] << (8u * j);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    b = (uint64_t)len << 56;
    for (unsigned j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8u * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- growable arrays ---- */

static int
reserve(void **p, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *np;

    if (need <= *cap)
        return MD_OK;
    ncap = *cap < 16 ? 16 : *cap;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return MD_ENOMEM;
        ncap *= 2;
    }
    if (ncap > SIZE_MAX / elem)
        return MD_ENOMEM;
    np = md_realloc(*p, ncap * elem);
    if (np == NULL)
        return MD_ENOMEM;
    *p = np;
    *cap = ncap;
    return MD_OK;
}

/* ---- the series index ---- */

static int
key_eq(const struct series *s, uint64_t hash, uint32_t target,
    const char *key, size_t len)
{
    return s->hash == hash && s->target == target && (size_t)s->key_len == len &&
        memcmp(s->key, key, len) == 0;
}

static uint32_t
lookup(const struct md_ledger *l, uint64_t hash, uint32_t target,
    const char *key, size_t len)
{
    size_t mask, i;

    if (l->nslots == 0)
        return NONE;
    mask = l->nslots - 1;
    for (i = (size_t)hash & mask; l->slots[i] != 0; i = (i + 1) & mask) {
        uint32_t idx = l->slots[i] - 1;

        if (key_eq(&l->ser[idx], hash, target, key, len))
            return idx;
    }
    return NONE;
}

static void
slot_insert(uint32_t *slots, size_t nslots, uint64_t hash, uint32_t idx)
{
    size_t mask = nslots - 1, i;

    for (i = (size_t)hash & mask; slots[i] != 0; i = (i + 1) & mask)
        ;
    slots[i] = idx + 1;
}

static size_t
slot_find(const struct md_ledger *l, uint32_t idx)
{
    size_t mask = l->nslots - 1, i;

    for (i = (size_t)l->ser[idx].hash & mask; l->slots[i] != idx + 1;
        i = (i + 1) & mask)
        ;
    return i;
}

/* Backward-shift deletion keeps linear probing chains unbroken. */
static void
slot_delete(struct md_ledger *l, uint32_t idx)
{
    size_t mask = l->nslots - 1;
    size_t i = slot_find(l, idx), j = i;

    for (;;) {
        size_t k;

        j = (j + 1) & mask;
        if (l->slots[j] == 0)
            break;
        k = (size_t)l->ser[l->slots[j] - 1].hash & mask;
        /* move slot j into the hole i unless its home k lies in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            l->slots[i] = l->slots[j];
            i = j;
        }
    }
    l->slots[i] = 0;
}

/* Makes room for `more` records: array capacity and index load <= 1/2.  The
 * index may be rebuilt (not a semantic change).  Allocates or fails before
 * changing anything. */
static int
reserve_series(struct md_ledger *l, size_t more)
{
    size_t need = l->count + more, n;
    uint32_t *ns;
    int rc;

    rc = reserve((void **)&l->ser, &l->cap, need, sizeof(*l->ser));
    if (rc != MD_OK)
        return rc;
    if (need <= l->nslots / 2)
        return MD_OK;
    n = l->nslots < 16 ? 16 : l->nslots;
    while (n / 2 < need)
        n *= 2;
    ns = md_calloc(n, sizeof(*ns));
    if (ns == NULL)
        return MD_ENOMEM;
    for (size_t i = 0; i < l->count; i++)
        slot_insert(ns, n, l->ser[i].hash, (uint32_t)i);
    md_free(l->slots);
    l->slots = ns;
    l->nslots = n;
    return MD_OK;
}

/* ---- targets ---- */

static size_t
target_pos(const struct md_ledger *l, uint32_t id, int *found)
{
    size_t lo = 0, hi = l->ntgt;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (l->tgt[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < l->ntgt && l->tgt[lo].id == id;
    return lo;
}

static struct target *
target_find(const struct md_ledger *l, uint32_t id)
{
    int found;
    size_t pos = target_pos(l, id, &found);

    return found ? &l->tgt[pos] : NULL;
}

/* Capacity must be reserved. */
static struct target *
target_insert(struct md_ledger *l, uint32_t id)
{
    int found;
    size_t pos = target_pos(l, id, &found);

    memmove(&l->tgt[pos + 1], &l->tgt[pos],
        (l->ntgt - pos) * sizeof(*l->tgt));
    l->ntgt++;
    memset(&l->tgt[pos], 0, sizeof(l->tgt[pos]));
    l->tgt[pos].id = id;
    return &l->tgt[pos];
}

static void
target_remove(struct md_ledger *l, uint32_t id)
{
    int found;
    size_t pos = target_pos(l, id, &found);

    if (!found)
        return;
    memmove(&l->tgt[pos], &l->tgt[pos + 1],
        (l->ntgt - pos - 1) * sizeof(*l->tgt));
    l->ntgt--;
}

/* ---- undo log (capacity reserved by the caller) ---- */

static void
touch_series(struct md_ledger *l, uint32_t idx)
{
    struct series *s = &l->ser[idx];
    struct undo *u;

    if (s->flags & F_DIRTY)
        return;
    if (l->nundo >= l->undocap)
        abort();        /* broken invariant: apply reserved too little */
    u = &l->undo[l->nundo++];
    u->idx = idx;
    u->kind = U_MOD;
    u->old_flags = s->flags;
    u->value = s->value;
    u->ts_ns = s->ts_ns;
    u->created = s->created;
    s->flags |= F_DIRTY;
}

static void
touch_target(struct md_ledger *l, struct target *t, uint32_t kind)
{
    struct tundo *u;

    if (t->flags & F_DIRTY)
        return;
    if (l->ntundo >= l->tundocap)
        abort();        /* broken invariant: apply reserved too little */
    u = &l->tundo[l->ntundo++];
    u->id = t->id;
    u->kind = kind;
    u->old_flags = t->flags;
    u->last_scrape_ns = t->last_scrape_ns;
    u->nslots = t->nslots;
    t->flags |= F_DIRTY;
}

/* Appends a record of target t at slot (capacity and index room reserved);
 * takes key. */
static uint32_t
series_append(struct md_ledger *l, uint64_t hash, struct target *t,
    uint32_t slot, char *key, size_t key_len)
{
    uint32_t idx = (uint32_t)l->count;
    struct series *s = &l->ser[idx];

    memset(s, 0, sizeof(*s));
    s->hash = hash;
    s->target = t->id;
    s->slot = slot;
    s->key = key;
    s->key_len = (uint16_t)key_len;
    t->nrec++;
    if (slot >= t->nslots)
        t->nslots = slot + 1;
    slot_insert(l->slots, l->nslots, hash, idx);
    l->count++;
    l->live++;
    l->key_bytes += key_len;
    return idx;
}

/* Removes the last record (rollback of an append). */
static void
series_pop(struct md_ledger *l)
{
    uint32_t idx = (uint32_t)(l->count - 1);
    struct series *s = &l->ser[idx];
    struct target *t = target_find(l, s->target);

    slot_delete(l, idx);
    if (t != NULL)
        t->nrec--;
    if (!(s->flags & F_DROPPED))
        l->live--;
    l->key_bytes -= s->key_len;
    md_free(s->key);
    s->key = NULL;
    l->count--;
}

/* Removes a tombstone for good: the last record moves into its place. */
static void
series_remove(struct md_ledger *l, uint32_t idx)
{
    uint32_t last = (uint32_t)(l->count - 1);
    struct target *t = target_find(l, l->ser[idx].target);

    if (t != NULL)
        t->nrec--;
    slot_delete(l, idx);
    l->key_bytes -= l->ser[idx].key_len;
    md_free(l->ser[idx].key);
    if (idx != last) {
        size_t at = slot_find(l, last);

        l->ser[idx] = l->ser[last];
        l->slots[at] = idx + 1;
    }
    l->ser[last].key = NULL;
    l->count--;
}

/* ---- hour split (R9) ---- */

static uint64_t
hour_of(uint64_t t_ns)
{
    /* the hour holding the interval's last nanosecond */
    return t_ns == 0 ? 0 : (t_ns - 1) / HOUR_NS * HOUR_S;
}

static int
single_bucket(int has_t0, uint64_t t0, uint64_t t1, uint64_t max_ns)
{
    return !has_t0 || t1 <= t0 || t1 - t0 > max_ns;
}

size_t
md_ledger_spread_buckets(int has_t0, uint64_t t0_ns, uint64_t t1_ns,
    uint64_t spread_max_ns)
{
    if (single_bucket(has_t0, t0_ns, t1_ns, spread_max_ns))
        return 1;
    return (size_t)((t1_ns - 1) / HOUR_NS - t0_ns / HOUR_NS + 1);
}

size_t
md_ledger_spread(uint64_t delta, int has_t0, uint64_t t0_ns, uint64_t t1_ns,
    uint64_t spread_max_ns, struct md_ledger_delta *out)
{
    uint64_t first, last, total, prev = 0;
    size_t n = 0;

    if (delta == 0)
        return 0;
    if (single_bucket(has_t0, t0_ns, t1_ns, spread_max_ns)) {
        out[0].input_index = 0;
        out[0].hour_start_s = hour_of(t1_ns);
        out[0].amount = delta;
        return 1;
    }
    first = t0_ns / HOUR_NS;
    last = (t1_ns - 1) / HOUR_NS;
    total = t1_ns - t0_ns;
    for (uint64_t k = first; k <= last; k++) {
        uint64_t end = k == last ? t1_ns : (k + 1) * HOUR_NS;
        uint64_t cum = end - t0_ns;
        /* delta * cum < 2^64 * 2^52: fits 128 bits; cum == total at the end,
         * so the last cumulative value is delta itself */
        uint64_t c = (uint64_t)((unsigned __int128)delta * cum / total);

        if (c > prev) {
            out[n].input_index = 0;
            out[n].hour_start_s = k * HOUR_S;
            out[n].amount = c - prev;
            n++;
        }
        prev = c;
    }
    return n;
}

/* ---- lifecycle ---- */

struct md_ledger *
md_ledger_new(size_t series_max)
{
    struct md_ledger *l;

    if (series_max == 0 || series_max > MD_LEDGER_SERIES_LIMIT)
        return NULL;
    l = md_calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->series_max = series_max;
    l->spread_max_ns = (uint64_t)MD_LEDGER_SPREAD_DEFAULT_S * 1000000000ull;
    /* a fixed default seed; md_ledger_set_seed() makes it secret */
    l->k0 = 0x6d65746572642d6cull;
    l->k1 = 0x65646765722d3031ull;
    return l;
}

void
md_ledger_free(struct md_ledger *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->count; i++)
        md_free(l->ser[i].key);
    md_free(l->ser);
    md_free(l->slots);
    md_free(l->tgt);
    md_free(l->undo);
    md_free(l->tundo);
    md_free(l->work);
    md_free(l->dset);
    md_free(l->deltas);
    md_free(l->smap);
    md_free(l);
}

int
md_ledger_set_seed(struct md_ledger *l, uint64_t k0, uint64_t k1)
{
    if (l->count != 0 || l->ntgt != 0)
        return MD_ESTATE;
    l->k0 = k0;
    l->k1 = k1;
    return MD_OK;
}

int
md_ledger_set_spread_max_s(struct md_ledger *l, uint64_t seconds)
{
    if (seconds > MD_LEDGER_SPREAD_LIMIT_S)
        return MD_ELIMIT;
    l->spread_max_ns = seconds * 1000000000ull;
    return MD_OK;
}

/* ---- apply ---- */

static uint32_t
dset_find(const struct md_ledger *l, const struct md_ledger_input *in,
    uint64_t hash, const char *key, size_t len)
{
    const struct work *w = l->work;
    size_t mask = l->dsetn - 1;

    if (l->dsetn == 0)
        return NONE;
    for (size_t i = (size_t)hash & mask; l->dset[i] != 0; i = (i + 1) & mask) {
        uint32_t j = l->dset[i] - 1;

        if (w[j].hash == hash && in[j].key_len == len &&
            memcmp(in[j].key, key, len) == 0)
            return j;
    }
    return NONE;
}

/* R6: returns the counter to increment, or NULL with *u set. */
static size_t *
value_check(double v, struct md_ledger_result *r, uint64_t *u)
{
    if (isnan(v))
        return &r->skipped_nan;
    if (isinf(v))
        return &r->skipped_inf;
    if (v < 0)
        return &r->skipped_negative;
    if (v >= TWO_P64)
        return &r->skipped_too_large;
    *u = (uint64_t)v;
    if ((double)*u != v)
        return &r->skipped_non_integer;
    return NULL;
}

/* A key for an error message: at most 120 bytes, bytes outside printable
 * ASCII (and quotes, backslashes) shown as '?', so that a label value
 * cannot forge log lines. */
static const char *
key_for_msg(const char *key, size_t len, char *buf, size_t buf_len)
{
    size_t n = len < buf_len - 1 ? len : buf_len - 1;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];

        buf[i] = c < 0x20 || c > 0x7e || c == '"' || c == '\\' ? '?' :
            (char)c;
    }
    buf[n] = '\0';
    return buf;
}

static void
free_key_copies(struct md_ledger *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        md_free(l->work[i].key_copy);
        l->work[i].key_copy = NULL;
    }
}

int
md_ledger_apply(struct md_ledger *l, uint32_t target, int target_initial,
    enum md_first_scrape policy, uint64_t now_ns,
    const struct md_ledger_input *in, size_t n,
    struct md_ledger_result *out, struct md_err *err)
{
    struct md_ledger_result r;
    struct target *t = target_find(l, target);
    int first = t == NULL || (t->flags & F_DROPPED) != 0;
    int baseline = first && target_initial && policy == MD_FIRST_BASELINE;
    size_t new_records = 0, revived = 0, drops = 0, nbuckets = 0, nd = 0;
    size_t want = 16;
    uint32_t prev = NONE, free_slot = 0;
    int rc = MD_OK, holes;

    memset(&r, 0, sizeof(r));
    if (n > l->series_max)
        return md_err_set(err, MD_ELIMIT,
            "ledger: target %u: %zu series in one scrape exceed series_max %zu",
            target, n, l->series_max);
    rc = reserve((void **)&l->work, &l->workcap, n, sizeof(*l->work));
    if (rc == MD_OK) {
        while (want / 2 < n)
            want *= 2;
        if (want > l->dsetcap) {
            uint32_t *d = md_malloc(want * sizeof(*d));

            if (d == NULL) {
                rc = MD_ENOMEM;
            } else {
                md_free(l->dset);
                l->dset = d;
                l->dsetcap = want;
            }
        }
    }
    if (rc != MD_OK)
        return md_err_set(err, (enum md_rc)rc,
            "ledger: target %u: out of memory", target);
    l->dsetn = want;
    memset(l->dset, 0, want * sizeof(*l->dset));
    /* a new epoch marks the records this scrape matches (duplicates, R2) */
    if (++l->epoch == 0) {
        for (size_t j = 0; j < l->count; j++)
            l->ser[j].seen = 0;
        l->epoch = 1;
    }

    /* phase 1a: identify and classify every input (no change yet) */
    for (size_t i = 0; i < n; i++) {
        struct work *w = &l->work[i];
        const struct md_ledger_input *x = &in[i];
        size_t *skip;
        uint32_t dup, idx;
        const struct series *s;
        char kb[121];

        memset(w, 0, sizeof(*w));
        w->idx = NONE;
        if (x->key == NULL || x->key_len == 0)
            return md_err_set(err, MD_EPARSE,
                "ledger: target %u: input %zu has an empty series key",
                target, i);
        if (x->key_len > MD_LEDGER_KEY_MAX)
            return md_err_set(err, MD_ELIMIT,
                "ledger: target %u: input %zu: series key of %zu bytes "
                "exceeds %d", target, i, x->key_len, MD_LEDGER_KEY_MAX);
        /* Exporters list series in a stable order and records of a target
         * are appended in scrape order, so the record after the previous
         * match is most likely this one: compare it before hashing. */
        idx = NONE;
        if (prev != NONE && prev + 1 < l->count) {
            s = &l->ser[prev + 1];
            if (s->target == target && s->key_len == x->key_len &&
                memcmp(s->key, x->key, x->key_len) == 0)
                idx = prev + 1;
        }
        if (idx == NONE) {
            w->hash = hash_key(l, target, x->key, x->key_len);
            /* a tombstone (dropped earlier in this transaction) is found
             * too: it is revived rather than shadowed by a second record */
            idx = lookup(l, w->hash, target, x->key, x->key_len);
        } else {
            w->hash = l->ser[idx].hash;
        }
        if (idx != NONE) {
            if (l->ser[idx].seen == l->epoch)
                return md_err_set(err, MD_EPARSE,
                    "ledger: target %u: series \"%s\" appears twice in "
                    "one scrape (input %zu); scrape rejected", target,
                    key_for_msg(x->key, x->key_len, kb, sizeof(kb)), i);
            l->ser[idx].seen = l->epoch;
            prev = idx;
        } else {
            dup = dset_find(l, in, w->hash, x->key, x->key_len);
            if (dup != NONE)
                return md_err_set(err, MD_EPARSE,
                    "ledger: target %u: series \"%s\" appears twice in "
                    "one scrape (inputs %u and %zu); scrape rejected", target,
                    key_for_msg(x->key, x->key_len, kb, sizeof(kb)),
                    (unsigned)dup, i);
            slot_insert(l->dset, l->dsetn, w->hash, (uint32_t)i);
        }
        s = idx == NONE ? NULL : &l->ser[idx];
        w->idx = idx;

        skip = value_check(x->value, &r, &w->value);
        if (skip != NULL) {
            (*skip)++;
            w->cls = C_SKIP;
            continue;
        }
        if (x->has_ts) {
            if (x->ts_ms < 0 || x->ts_ms > INT64_MAX / 1000000) {
                r.bad_ts++;
                w->cls = C_SKIP;
                continue;
            }
            w->t1 = (uint64_t)x->ts_ms * 1000000u;
        } else {
            w->t1 = now_ns;
        }
        w->has_created = x->has_created && isfinite(x->created);
        w->created = w->has_created ? x->created : 0.0;
        if (s == NULL || (s->flags & F_DROPPED)) {
            w->cls = C_NEW;
            continue;
        }
        if (x->has_ts && w->t1 <= s->ts_ns) {
            r.stale_ts++;
            w->cls = C_STALE;
            continue;
        }
        w->has_t0 = 1;
        w->t0 = s->ts_ns;
        if (w->has_created && (s->flags & F_CREATED) &&
            w->created != s->created) {
            r.created_changed++;
            w->cls = C_DOWN;
        } else {
            w->cls = w->value < s->value ? C_DOWN : C_UP;
        }
        /* a series whose checkpoint is 0 cannot show a decrease, so it does
         * not vote in the restart judgement (R2): EAIG records zero-valued
         * token types (cached_input = 0) that would otherwise outvote the
         * series that did go down after a real restart */
        if (s->value > 0 || w->cls == C_DOWN)
            r.in_both++;
        if (w->cls == C_DOWN)
            r.went_down++;
    }

    /* phase 1b: the target judgement (R2, R3) and the deltas */
    if (r.went_down > 0) {
        if (2 * r.went_down >= r.in_both)
            r.target_restart = 1;
        else
            r.anomaly = 1;
    }
    for (size_t i = 0; i < n; i++) {
        struct work *w = &l->work[i];

        switch (w->cls) {
        case C_UP:
            if (r.target_restart) {
                w->delta = w->value;
                r.resets++;
            } else {
                w->delta = w->value - l->ser[w->idx].value;
            }
            break;
        case C_DOWN:
            w->delta = w->value;
            r.resets++;
            break;
        case C_NEW:
            if (baseline) {
                r.baselined++;
            } else {
                w->delta = w->value;
                r.new_series++;
            }
            if (w->idx == NONE)
                new_records++;
            else
                revived++;
            break;
        default:
            continue;
        }
        r.applied++;
        if (w->value >= (uint64_t)TWO_P53)
            r.flagged_2p53++;
        if (w->delta > 0) {
            nbuckets += md_ledger_spread_buckets(w->has_t0, w->t0, w->t1,
                l->spread_max_ns);
            if (w->has_t0 && w->t1 > w->t0 &&
                w->t1 - w->t0 > l->spread_max_ns &&
                w->t1 / HOUR_NS != w->t0 / HOUR_NS)
                r.spread_capped++;
        }
    }
    if (r.target_restart) {
        /* R2: every other state of the target goes, except stale samples:
         * unmark the records whose sample is unusable, then count */
        for (size_t i = 0; i < n; i++)
            if (l->work[i].cls == C_SKIP && l->work[i].idx != NONE)
                l->ser[l->work[i].idx].seen = 0;
        for (size_t j = 0; j < l->count; j++) {
            const struct series *s = &l->ser[j];

            if (s->target == target && !(s->flags & F_DROPPED) &&
                s->seen != l->epoch)
                drops++;
        }
    }
    if (l->live + new_records + revived > l->series_max)
        return md_err_set(err, MD_ELIMIT,
            "ledger: target %u: %zu new series would exceed series_max %zu "
            "(%zu live)", target, new_records + revived, l->series_max,
            l->live);

    /* phase 1c: every allocation the changes need */
    rc = reserve((void **)&l->undo, &l->undocap, l->nundo + n + drops,
        sizeof(*l->undo));
    if (rc == MD_OK)
        rc = reserve((void **)&l->tundo, &l->tundocap, l->ntundo + 1,
            sizeof(*l->tundo));
    if (rc == MD_OK)
        rc = reserve((void **)&l->tgt, &l->tgtcap, l->ntgt + 1,
            sizeof(*l->tgt));
    if (rc == MD_OK)
        rc = reserve((void **)&l->deltas, &l->deltacap, nbuckets,
            sizeof(*l->deltas));
    if (rc == MD_OK)
        rc = reserve_series(l, new_records);
    /* slots freed by committed drops are reused lowest first, so a
     * target's stored state stays as long as its most series at once */
    holes = new_records > 0 && t != NULL && t->nrec < t->nslots;
    if (rc == MD_OK && holes)
        rc = reserve((void **)&l->smap, &l->smapcap, t->nslots, 1);
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        struct work *w = &l->work[i];

        if (w->cls != C_NEW || w->idx != NONE)
            continue;
        w->key_copy = md_malloc(in[i].key_len);
        if (w->key_copy == NULL) {
            rc = MD_ENOMEM;
            free_key_copies(l, i);
            break;
        }
        memcpy(w->key_copy, in[i].key, in[i].key_len);
    }
    if (rc != MD_OK)
        return md_err_set(err, (enum md_rc)rc,
            "ledger: target %u: out of memory", target);

    /* phase 2: changes; nothing below can fail */
    if (holes) {
        memset(l->smap, 0, t->nslots);
        for (size_t j = 0; j < l->count; j++)
            if (l->ser[j].target == target)
                l->smap[l->ser[j].slot] = 1;
    }
    if (t == NULL) {
        t = target_insert(l, target);
        touch_target(l, t, U_INS);
    } else {
        touch_target(l, t, U_MOD);
    }
    t->flags &= ~F_DROPPED;
    t->last_scrape_ns = now_ns;
    r.first_scrape = first;

    if (r.target_restart) {
        for (size_t j = 0; j < l->count; j++) {
            struct series *s = &l->ser[j];

            if (s->target != target || (s->flags & F_DROPPED) ||
                s->seen == l->epoch)
                continue;
            touch_series(l, (uint32_t)j);
            s->flags |= F_DROPPED;
            l->live--;
            r.dropped++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct work *w = &l->work[i];
        struct series *s;

        if (w->cls == C_SKIP || w->cls == C_STALE)
            continue;
        if (w->idx == NONE) {
            uint32_t slot = t->nslots;

            if (holes) {
                while (free_slot < t->nslots && l->smap[free_slot])
                    free_slot++;
                if (free_slot < t->nslots)
                    slot = free_slot++;
            }
            w->idx = series_append(l, w->hash, t, slot, w->key_copy,
                in[i].key_len);
            w->key_copy = NULL;
            if (l->nundo >= l->undocap)
                abort();    /* broken invariant, as in touch_series */
            l->undo[l->nundo].idx = w->idx;
            l->undo[l->nundo].kind = U_INS;
            l->undo[l->nundo].old_flags = 0;
            l->nundo++;
            l->ser[w->idx].flags |= F_DIRTY;
        } else {
            touch_series(l, w->idx);
            if (l->ser[w->idx].flags & F_DROPPED) {
                l->ser[w->idx].flags = (uint16_t)(l->ser[w->idx].flags & ~F_DROPPED);
                l->live++;
            }
        }
        s = &l->ser[w->idx];
        s->value = w->value;
        s->ts_ns = w->t1;
        s->created = w->created;
        if (w->has_created)
            s->flags |= F_CREATED;
        else
            s->flags = (uint16_t)(s->flags & ~F_CREATED);
        if (w->delta > 0) {
            size_t k = md_ledger_spread(w->delta, w->has_t0, w->t0, w->t1,
                l->spread_max_ns, &l->deltas[nd]);

            for (size_t j = nd; j < nd + k; j++)
                l->deltas[j].input_index = i;
            nd += k;
            if (r.billed > UINT64_MAX - w->delta)
                r.billed = UINT64_MAX;
            else
                r.billed += w->delta;
        }
    }
    r.deltas = l->deltas;
    r.delta_count = nd;
    *out = r;
    return MD_OK;
}

int
md_ledger_forget_target(struct md_ledger *l, uint32_t target,
    size_t *dropped_out, struct md_err *err)
{
    struct target *t = target_find(l, target);
    size_t k = 0;
    int rc;

    if (t == NULL || (t->flags & F_DROPPED)) {
        if (dropped_out != NULL)
            *dropped_out = 0;
        return MD_OK;
    }
    for (size_t j = 0; j < l->count; j++)
        if (l->ser[j].target == target && !(l->ser[j].flags & F_DROPPED))
            k++;
    rc = reserve((void **)&l->undo, &l->undocap, l->nundo + k,
        sizeof(*l->undo));
    if (rc == MD_OK)
        rc = reserve((void **)&l->tundo, &l->tundocap, l->ntundo + 1,
            sizeof(*l->tundo));
    if (rc != MD_OK)
        return md_err_set(err, (enum md_rc)rc,
            "ledger: target %u: out of memory", target);
    for (size_t j = 0; j < l->count; j++) {
        struct series *s = &l->ser[j];

        if (s->target != target || (s->flags & F_DROPPED))
            continue;
        touch_series(l, (uint32_t)j);
        s->flags |= F_DROPPED;
        l->live--;
    }
    touch_target(l, t, U_MOD);
    t->flags |= F_DROPPED;
    if (dropped_out != NULL)
        *dropped_out = k;
    return MD_OK;
}

/* ---- staged list, commit, rollback ---- */

static void
fill_state(const struct series *s, struct md_ledger_state *out)
{
    out->target = s->target;
    out->slot = s->slot;
    out->is_new = 0;
    out->key = s->key;
    out->key_len = s->key_len;
    out->value = s->value;
    out->ts_ns = s->ts_ns;
    out->has_created = (s->flags & F_CREATED) != 0;
    out->created = s->created;
    out->dropped = (s->flags & F_DROPPED) != 0;
}

size_t
md_ledger_staged_series_count(const struct md_ledger *l)
{
    return l->nundo;
}

void
md_ledger_staged_series(const struct md_ledger *l, size_t i,
    struct md_ledger_state *out)
{
    fill_state(&l->ser[l->undo[i].idx], out);
    out->is_new = l->undo[i].kind == U_INS;
}

size_t
md_ledger_staged_target_count(const struct md_ledger *l)
{
    return l->ntundo;
}

void
md_ledger_staged_target(const struct md_ledger *l, size_t i,
    struct md_ledger_target_state *out)
{
    const struct target *t = target_find(l, l->tundo[i].id);

    out->target = l->tundo[i].id;
    out->last_scrape_ns = t->last_scrape_ns;
    out->dropped = (t->flags & F_DROPPED) != 0;
}

static int
idx_desc(const void *a, const void *b)
{
    uint32_t x = ((const struct undo *)a)->idx;
    uint32_t y = ((const struct undo *)b)->idx;

    return x < y ? 1 : x > y ? -1 : 0;
}

void
md_ledger_commit(struct md_ledger *l)
{
    size_t ndrop = 0;

    for (size_t i = 0; i < l->nundo; i++) {
        struct series *s = &l->ser[l->undo[i].idx];

        s->flags = (uint16_t)(s->flags & ~F_DIRTY);
        if (s->flags & F_DROPPED)
            l->undo[ndrop++].idx = l->undo[i].idx;
    }
    /* highest index first: the record moved into a hole is never a
     * tombstone still waiting to be removed */
    if (ndrop > 1)
        qsort(l->undo, ndrop, sizeof(*l->undo), idx_desc);
    for (size_t i = 0; i < ndrop; i++)
        series_remove(l, l->undo[i].idx);
    l->nundo = 0;

    for (size_t i = 0; i < l->ntundo; i++) {
        struct target *t = target_find(l, l->tundo[i].id);

        t->flags &= ~F_DIRTY;
        if (t->flags & F_DROPPED)
            target_remove(l, l->tundo[i].id);
    }
    l->ntundo = 0;
}

void
md_ledger_rollback(struct md_ledger *l)
{
    for (size_t i = l->nundo; i-- > 0;) {
        const struct undo *u = &l->undo[i];
        struct series *s = &l->ser[u->idx];

        if (u->kind == U_INS) {
            /* appends are undone newest first, so this is the last record */
            series_pop(l);
            continue;
        }
        if ((s->flags & F_DROPPED) && !(u->old_flags & F_DROPPED))
            l->live++;
        else if (!(s->flags & F_DROPPED) && (u->old_flags & F_DROPPED))
            l->live--;
        s->flags = (uint16_t)u->old_flags;
        s->value = u->value;
        s->ts_ns = u->ts_ns;
        s->created = u->created;
    }
    l->nundo = 0;
    for (size_t i = l->ntundo; i-- > 0;) {
        const struct tundo *u = &l->tundo[i];
        struct target *t = target_find(l, u->id);

        if (u->kind == U_INS) {
            target_remove(l, u->id);
            continue;
        }
        t->flags = u->old_flags;
        t->last_scrape_ns = u->last_scrape_ns;
        t->nslots = u->nslots;
    }
    l->ntundo = 0;
}

/* ---- restore ---- */

int
md_ledger_restore_target(struct md_ledger *l, uint32_t target,
    uint64_t last_scrape_ns, struct md_err *err)
{
    struct target *t;

    if (l->nundo != 0 || l->ntundo != 0)
        return md_err_set(err, MD_ESTATE,
            "ledger: restore while changes are staged");
    t = target_find(l, target);
    if (t == NULL) {
        if (reserve((void **)&l->tgt, &l->tgtcap, l->ntgt + 1,
            sizeof(*l->tgt)) != MD_OK)
            return md_err_set(err, MD_ENOMEM, "ledger: out of memory");
        t = target_insert(l, target);
    }
    t->last_scrape_ns = last_scrape_ns;
    return MD_OK;
}

int
md_ledger_restore_series(struct md_ledger *l, uint32_t target,
    const char *key, size_t key_len, uint64_t value, uint64_t ts_ns,
    int has_created, double created, struct md_err *err)
{
    const struct target *t = target_find(l, target);

    return md_ledger_restore_series_at(l, target, t != NULL ? t->nslots : 0,
        key, key_len, value, ts_ns, has_created, created, err);
}

int
md_ledger_restore_series_at(struct md_ledger *l, uint32_t target,
    uint32_t slot, const char *key, size_t key_len, uint64_t value,
    uint64_t ts_ns, int has_created, double created, struct md_err *err)
{
    uint64_t hash;
    char *copy;
    uint32_t idx;
    struct series *s;
    struct target *t;

    if (l->nundo != 0 || l->ntundo != 0)
        return md_err_set(err, MD_ESTATE,
            "ledger: restore while changes are staged");
    if (key == NULL || key_len == 0)
        return md_err_set(err, MD_EPARSE, "ledger: restore: empty key");
    if (key_len > MD_LEDGER_KEY_MAX)
        return md_err_set(err, MD_ELIMIT,
            "ledger: restore: key of %zu bytes exceeds %d", key_len,
            MD_LEDGER_KEY_MAX);
    if (slot >= MD_LEDGER_SERIES_LIMIT)
        return md_err_set(err, MD_ELIMIT,
            "ledger: restore: slot %u of target %u out of range", slot, target);
    hash = hash_key(l, target, key, key_len);
    if (lookup(l, hash, target, key, key_len) != NONE) {
        char kb[121];

        return md_err_set(err, MD_EPARSE,
            "ledger: restore: target %u series \"%s\" twice", target,
            key_for_msg(key, key_len, kb, sizeof(kb)));
    }
    if (l->live + 1 > l->series_max)
        return md_err_set(err, MD_ELIMIT,
            "ledger: restore: more than series_max %zu series",
            l->series_max);
    if (reserve((void **)&l->tgt, &l->tgtcap, l->ntgt + 1,
        sizeof(*l->tgt)) != MD_OK || reserve_series(l, 1) != MD_OK)
        return md_err_set(err, MD_ENOMEM, "ledger: out of memory");
    copy = md_malloc(key_len);
    if (copy == NULL)
        return md_err_set(err, MD_ENOMEM, "ledger: out of memory");
    memcpy(copy, key, key_len);
    t = target_find(l, target);
    if (t == NULL)
        t = target_insert(l, target);
    idx = series_append(l, hash, t, slot, copy, key_len);
    s = &l->ser[idx];
    s->value = value;
    s->ts_ns = ts_ns;
    if (has_created && isfinite(created)) {
        s->flags |= F_CREATED;
        s->created = created;
    }
    return MD_OK;
}

/* ---- read access ---- */

int
md_ledger_get(const struct md_ledger *l, uint32_t target, const char *key,
    size_t key_len, struct md_ledger_state *out)
{
    uint32_t idx;

    if (key == NULL || key_len == 0 || key_len > MD_LEDGER_KEY_MAX)
        return MD_ENOTFOUND;
    idx = lookup(l, hash_key(l, target, key, key_len), target, key, key_len);
    if (idx == NONE || (l->ser[idx].flags & F_DROPPED))
        return MD_ENOTFOUND;
    fill_state(&l->ser[idx], out);
    return MD_OK;
}

int
md_ledger_get_target(const struct md_ledger *l, uint32_t target,
    struct md_ledger_target_state *out)
{
    const struct target *t = target_find(l, target);

    if (t == NULL || (t->flags & F_DROPPED))
        return MD_ENOTFOUND;
    out->target = t->id;
    out->last_scrape_ns = t->last_scrape_ns;
    out->dropped = 0;
    return MD_OK;
}

size_t
md_ledger_series_count(const struct md_ledger *l)
{
    return l->live;
}

size_t
md_ledger_target_count(const struct md_ledger *l)
{
    size_t n = 0;

    for (size_t i = 0; i < l->ntgt; i++)
        if (!(l->tgt[i].flags & F_DROPPED))
            n++;
    return n;
}

int
md_ledger_each(const struct md_ledger *l, md_ledger_each_fn fn, void *ctx)
{
    for (size_t i = 0; i < l->count; i++) {
        struct md_ledger_state st;
        int rc;

        if (l->ser[i].flags & F_DROPPED)
            continue;
        fill_state(&l->ser[i], &st);
        rc = fn(&st, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

size_t
md_ledger_memory_bytes(const struct md_ledger *l)
{
    /* malloc keeps ~16 bytes of its own per key allocation */
    return sizeof(*l) + l->cap * sizeof(*l->ser) +
        l->nslots * sizeof(*l->slots) + l->key_bytes + l->count * 16 +
        l->tgtcap * sizeof(*l->tgt) + l->undocap * sizeof(*l->undo) +
        l->tundocap * sizeof(*l->tundo) + l->workcap * sizeof(*l->work) +
        l->dsetcap * sizeof(*l->dset) + l->deltacap * sizeof(*l->deltas) +
        l->smapcap;
}
