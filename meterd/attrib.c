/* attrib.c: samples -> billed batch entries, per the configuration.
 *
 * Owned by whoever built it; immutable after md_attrib_new, so the scrape
 * thread reads it without locks.  Rules (DESIGN.md "Dimensions and
 * tenants"):
 * - tokens come from gen_ai.client.token.usage _sum; requests from the _count
 *   of the `input` token type only (EAIG records one sample per type per
 *   request, so counting every type would multiply requests);
 * - department: the configured label, absent or empty -> default_department;
 * - namespace: namespace_label, then department_namespaces, then the
 *   target's namespace, then default_namespace;
 * - otel_metric_overflow="true" series carry no tenant: booked to the
 *   `unattributed` namespace/department with token type `unattributed`;
 * - count_tokens / responses_input_tokens (configurable) and the v0.3 type
 *   `total` are dropped with their reason;
 * - gen_ai.client.inference.usage.* counters repeat the tokens of
 *   token.usage: recognised and dropped as duplicates, never added.
 * Series identity (the ledger key) is the canonical instrument, the role and
 * every label with its name canonicalised, sorted by name: two spellings of
 * one series (classic vs UTF-8 names) are the same series. */
#include "attrib.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "normalize.h"

#define UNATTRIBUTED "unattributed"
#define UNKNOWN "unknown"
#define LABELS_MAX 256
#define CANON_MAX 512

/* a configured label name in comparison-key form (md_normalize_label_key),
 * computed once so a sample's labels are normalised once each, not once per
 * lookup; len == SIZE_MAX when the key does not fit (it then never matches,
 * as in md_normalize_label_eq) */
struct canon_name {
    char   key[MD_NORMALIZE_NAME_MAX + 1];
    size_t len;
};

enum {
    CN_OVERFLOW = 0, CN_TOKEN_TYPE, CN_OPERATION, CN_DEPARTMENT, CN_NAMESPACE, CN_MODEL,
    CN_PROVIDER, CN_SYSTEM_NAME, CN_COUNT
};

struct md_attrib {
    struct canon_name  canon[CN_COUNT];
    uint64_t           gen;                  /* unique per md_attrib_new: scratch memos */
    int                has_namespace_label;
    char              *cluster;
    size_t             cluster_len, default_department_len;
    char              *department_label;
    char              *default_department;
    char              *namespace_label;      /* NULL when off */
    char              *default_namespace;
    struct md_strmap   dept_ns;              /* borrowed copy, owned here */
    char              *model_label;
    char              *provider_label;
    char              *operation_label;
    char              *token_type_label;
    struct md_strlist  exclude_ops;
};

static int
dup_into(char **dst, const char *src)
{
    *dst = md_strdup(src);
    return *dst == NULL ? MD_ENOMEM : MD_OK;
}

void
md_attrib_free(struct md_attrib *a)
{
    if (a == NULL)
        return;
    md_free(a->cluster);
    md_free(a->department_label);
    md_free(a->default_department);
    md_free(a->namespace_label);
    md_free(a->default_namespace);
    md_free(a->model_label);
    md_free(a->provider_label);
    md_free(a->operation_label);
    md_free(a->token_type_label);
    for (size_t i = 0; i < a->dept_ns.count; i++) {
        md_free(a->dept_ns.keys[i]);
        md_free(a->dept_ns.vals[i]);
    }
    md_free(a->dept_ns.keys);
    md_free(a->dept_ns.vals);
    for (size_t i = 0; i < a->exclude_ops.count; i++)
        md_free(a->exclude_ops.v[i]);
    md_free(a->exclude_ops.v);
    md_free(a);
}

struct md_attrib *
md_attrib_new(const struct md_config *cfg, struct md_err *err)
{
    static const char *const default_excluded[] = { "count_tokens", "responses_input_tokens" };
    const struct md_strlist *ex = &cfg->attribution.exclude_operations;
    struct md_attrib *a = md_calloc(1, sizeof(*a));
    int rc = MD_OK;

    if (a == NULL)
        goto nomem;
    rc |= dup_into(&a->cluster, cfg->cluster);
    rc |= dup_into(&a->department_label, cfg->attribution.department_label);
    rc |= dup_into(&a->default_department, cfg->attribution.default_department);
    rc |= dup_into(&a->default_namespace, cfg->attribution.default_namespace);
    rc |= dup_into(&a->model_label, cfg->attribution.model_label);
    rc |= dup_into(&a->provider_label, cfg->attribution.provider_label);
    rc |= dup_into(&a->operation_label, cfg->attribution.operation_label);
    rc |= dup_into(&a->token_type_label, cfg->attribution.token_type_label);
    if (cfg->attribution.namespace_label[0] != '\0')
        rc |= dup_into(&a->namespace_label, cfg->attribution.namespace_label);
    if (rc != MD_OK)
        goto nomem;
    {
        /* a scratch's label memo holds matches against one md_attrib's
         * names: a new generation (never an address, which a later
         * md_attrib may reuse) tells it to forget them */
        static atomic_uint_fast64_t gens;

        a->gen = (uint64_t)atomic_fetch_add(&gens, 1) + 1;
    }
    a->cluster_len = strlen(a->cluster);
    a->default_department_len = strlen(a->default_department);
    {
        const char *names[CN_COUNT] = {
            [CN_OVERFLOW] = "otel_metric_overflow", [CN_TOKEN_TYPE] = a->token_type_label,
            [CN_OPERATION] = a->operation_label, [CN_DEPARTMENT] = a->department_label,
            [CN_NAMESPACE] = a->namespace_label ? a->namespace_label : "",
            [CN_MODEL] = a->model_label, [CN_PROVIDER] = a->provider_label,
            [CN_SYSTEM_NAME] = "gen_ai_system_name",
        };

        for (int i = 0; i < CN_COUNT; i++) {
            struct md_str n = { names[i], strlen(names[i]) };
            struct canon_name *c = &a->canon[i];

            c->len = md_normalize_label_key(n, c->key, sizeof(c->key));
            if (c->len >= sizeof(c->key))
                c->len = SIZE_MAX;
        }
        a->has_namespace_label = a->namespace_label != NULL;
    }
    if (cfg->attribution.department_namespaces.count > 0) {
        size_t n = cfg->attribution.department_namespaces.count;

        a->dept_ns.keys = md_calloc(n, sizeof(char *));
        a->dept_ns.vals = md_calloc(n, sizeof(char *));
        if (a->dept_ns.keys == NULL || a->dept_ns.vals == NULL)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            a->dept_ns.count++;
            if (dup_into(&a->dept_ns.keys[i], cfg->attribution.department_namespaces.keys[i]) ||
                dup_into(&a->dept_ns.vals[i], cfg->attribution.department_namespaces.vals[i]))
                goto nomem;
        }
    }
    {
        size_t n = ex->count ? ex->count : 2;

        a->exclude_ops.v = md_calloc(n, sizeof(char *));
        if (a->exclude_ops.v == NULL)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            a->exclude_ops.count++;
            if (dup_into(&a->exclude_ops.v[i], ex->count ? ex->v[i] : default_excluded[i]))
                goto nomem;
        }
    }
    return a;
nomem:
    md_attrib_free(a);
    md_err_set(err, MD_ENOMEM, "out of memory");
    return NULL;
}

/* Value of the label configured as `name` (any spelling), or NULL. */
static const struct md_str *
find_label(const struct md_sample *s, const char *name)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (md_normalize_label_eq(s->labels[i].name, name))
            return &s->labels[i].value;
    return NULL;
}

static int
str_is(const struct md_str *v, const char *lit)
{
    size_t n = strlen(lit);

    return v != NULL && v->len == n && memcmp(v->p, lit, n) == 0;
}

/* a == b for n bytes, inline: the names compared here are short (EAIG's
 * are 10-40 bytes), where a call to memcmp costs more than the compare */
static inline int
eq_short(const char *a, const char *b, size_t n)
{
    uint64_t x, y;

    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return 0;
        }
        /* the last 8 bytes (overlapping what was compared) */
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

#define RAW_MEMO_MAX 64
_Static_assert(CN_COUNT <= 32, "canon_label.cid holds one bit per configured name");

/* What the fast path knows of the label name at one index of a sample:
 * label order repeats from one sample to the next, so index i usually holds
 * the same raw name again, and everything here is a pure function of it
 * (and of the md_attrib's configured names, scratch.cid_gen). */
struct canon_label {
    char     name[CANON_MAX];     /* md_normalize_label_key of raw */
    size_t   name_len;
    unsigned cid;                 /* bit c: name equals the md_attrib's canon[c] */
    int      is_le;
    char     raw[RAW_MEMO_MAX];   /* the raw name; raw_len 0: nothing remembered */
    size_t   raw_len;
    const struct md_str *value;   /* series_key (the reference path) only */
};

/* md_normalize_name is pure, and a body repeats a few names many times (an
 * EAIG body delivers _sum, _count, _sum, ... of one family, and the scraper
 * classifies the same names in every body): its answers are kept in a small
 * direct-mapped table, NAME_MEMO_N entries (a power of two) by a hash of
 * the name; a collision only costs a call */
#define NAME_MEMO_N 16
struct name_memo {
    char               name[MD_NORMALIZE_NAME_MAX];
    size_t             len;               /* 0: empty memo */
    int                rc;
    enum md_instrument inst;
    enum md_role       role;
};

struct md_attrib_scratch {
    struct md_buf        key;
    struct name_memo     memo[NAME_MEMO_N];
    size_t               memo_recent[2];       /* the two memo entries hit last */
    uint64_t             cid_gen;              /* md_attrib.gen of labels[].cid */
    /* order: indices of the non-`le` labels of a sample, sorted by
     * canonical name (stable); valid for samples of order_of labels whose
     * raw names all equal labels[].raw (SIZE_MAX: none) */
    size_t               order_n, order_of;
    uint16_t             order[LABELS_MAX];
    const struct md_str *values[LABELS_MAX];   /* the current sample's, by index */
    struct canon_label   labels[LABELS_MAX];
};

struct md_attrib_scratch *
md_attrib_scratch_new(void)
{
    struct md_attrib_scratch *sc = md_malloc(sizeof(*sc));

    if (sc != NULL) {
        md_buf_init(&sc->key, MD_ATTRIB_KEY_MAX);
        for (size_t i = 0; i < NAME_MEMO_N; i++)
            sc->memo[i].len = 0;
        sc->memo_recent[0] = sc->memo_recent[1] = 0;
        sc->cid_gen = 0;
        sc->order_n = 0;
        sc->order_of = SIZE_MAX;
        for (size_t i = 0; i < LABELS_MAX; i++)
            sc->labels[i].raw_len = 0;
    }
    return sc;
}

void
md_attrib_scratch_free(struct md_attrib_scratch *sc)
{
    if (sc == NULL)
        return;
    md_buf_fini(&sc->key);
    md_free(sc);
}

static int
cmp_canon(const void *x, const void *y)
{
    const struct canon_label *a = x, *b = y;
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->name, b->name, n);

    if (c != 0)
        return c;
    return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

/* "<instrument>\x1f<role>\x1e<name>=<value>\x1e..." with canonical names,
 * sorted, `le` excluded (buckets are not billed). */
static int
series_key(const struct md_sample *s, enum md_instrument inst, int role,
    struct md_attrib_scratch *sc, struct md_err *err)
{
    struct canon_label *labels = sc->labels;
    struct md_buf *out = &sc->key;
    size_t n = 0;
    int rc;

    if (s->nlabels > LABELS_MAX)
        return md_err_set(err, MD_ELIMIT, "series has more than %d labels", LABELS_MAX);
    /* labels[] is the fast path's memo too: what this overwrites (shifted
     * past any `le`, and moved by the sort) must not be taken as known */
    for (size_t i = 0; i < s->nlabels; i++)
        labels[i].raw_len = 0;
    sc->order_of = SIZE_MAX;
    for (size_t i = 0; i < s->nlabels; i++) {
        size_t len = md_normalize_label_key(s->labels[i].name, labels[n].name, CANON_MAX);

        if (len == 0 || len >= CANON_MAX)
            return md_err_set(err, MD_ELIMIT, "label name longer than %d bytes", CANON_MAX - 1);
        if (len == 2 && memcmp(labels[n].name, "le", 2) == 0)
            continue;
        labels[n].name_len = len;
        labels[n].value = &s->labels[i].value;
        n++;
    }
    qsort(labels, n, sizeof(labels[0]), cmp_canon);
    md_buf_reset(out);
    rc = md_buf_printf(out, "%s\x1f%d", md_instrument_name(inst), role);
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        rc = md_buf_putc(out, '\x1e');
        if (rc == MD_OK)
            rc = md_buf_append(out, labels[i].name, labels[i].name_len);
        if (rc == MD_OK)
            rc = md_buf_putc(out, '=');
        if (rc == MD_OK)
            rc = md_buf_append(out, labels[i].value->p, labels[i].value->len);
    }
    if (rc != MD_OK)
        return md_err_set(err, rc, "series identity longer than %u bytes", MD_ATTRIB_KEY_MAX);
    return MD_OK;
}

static void
set_dim(const char **dims, size_t *lens, enum md_dim d, const char *p, size_t len)
{
    dims[d] = p;
    lens[d] = len;
}

static void
set_dim_label(const char **dims, size_t *lens, enum md_dim d, const struct md_str *v,
    const char *fallback)
{
    if (v != NULL && v->len > 0)
        set_dim(dims, lens, d, v->p, v->len);
    else
        set_dim(dims, lens, d, fallback, strlen(fallback));
}

#define ROLE_CREATED_KIND 0   /* batch kind of a pending _created value */

/* The reference path: every lookup normalises the sample's label names
 * again.  Used when a label name does not fit the canonical form (the fast
 * path could not reproduce its errors exactly); the fast path below must
 * give the same batch for every other sample. */
static int
sample_slow(const struct md_attrib *a, const struct md_attrib_target *t,
    const struct md_sample *s, struct md_batch *b, struct md_attrib_scratch *sc,
    struct md_err *err)
{
    const char *dims[MD_DIM_COUNT];
    size_t lens[MD_DIM_COUNT];
    const struct md_str *tt, *op, *dept, *ov;
    enum md_instrument inst = MD_INST_UNKNOWN;
    enum md_role role = MD_ROLE_NONE;
    enum md_kind kind;
    int overflow, rc;

    char detail[64];

    if (md_normalize_name(s->name, &inst, &role, detail, sizeof(detail)) != MD_OK ||
        inst == MD_INST_UNKNOWN) {
        b->dropped[MD_DROP_OTHER_FAMILY]++;
        return MD_OK;
    }
    if (inst == MD_INST_INFERENCE_USAGE) {
        b->dropped[MD_DROP_INFERENCE_DUPLICATE]++;
        return MD_OK;
    }
    if (inst != MD_INST_TOKEN_USAGE) {
        b->dropped[MD_DROP_OTHER_FAMILY]++;
        return MD_OK;
    }
    ov = find_label(s, "otel_metric_overflow");
    overflow = str_is(ov, "true");
    tt = find_label(s, a->token_type_label);
    op = find_label(s, a->operation_label);
    switch (role) {
    case MD_ROLE_SUM:
        kind = MD_KIND_TOKENS;
        break;
    case MD_ROLE_COUNT:
        /* the overflow series mixes every type: its count is not requests */
        if (overflow || !str_is(tt, "input")) {
            b->dropped[MD_DROP_COUNT_NOT_INPUT]++;
            return MD_OK;
        }
        kind = MD_KIND_REQUESTS;
        break;
    case MD_ROLE_BUCKET:
        b->dropped[MD_DROP_BUCKET]++;
        return MD_OK;
    case MD_ROLE_CREATED:
        kind = ROLE_CREATED_KIND;
        break;
    default:
        b->dropped[MD_DROP_OTHER_FAMILY]++;
        return MD_OK;
    }
    if (!overflow && kind != ROLE_CREATED_KIND) {
        if (tt == NULL || tt->len == 0) {
            b->dropped[MD_DROP_NO_TOKEN_TYPE]++;
            return MD_OK;
        }
        if (str_is(tt, "total")) {
            b->dropped[MD_DROP_TOTAL_TYPE]++;
            return MD_OK;
        }
        for (size_t i = 0; op != NULL && i < a->exclude_ops.count; i++) {
            if (str_is(op, a->exclude_ops.v[i])) {
                b->dropped[MD_DROP_EXCLUDED_OPERATION]++;
                return MD_OK;
            }
        }
    }
    /* _created shares the identity of the _sum/_count it belongs to */
    rc = series_key(s, inst, kind == ROLE_CREATED_KIND ? -1 : (int)role, sc, err);
    if (rc != MD_OK)
        return rc;

    set_dim(dims, lens, MD_DIM_CLUSTER, a->cluster, strlen(a->cluster));
    if (overflow) {
        for (int d = MD_DIM_NAMESPACE; d < MD_DIM_COUNT; d++)
            set_dim(dims, lens, (enum md_dim)d, UNATTRIBUTED, strlen(UNATTRIBUTED));
        b->overflow_series += role == MD_ROLE_SUM;
    } else {
        const struct md_str *nsl = a->namespace_label ? find_label(s, a->namespace_label) : NULL;
        const struct md_str *prov;

        dept = find_label(s, a->department_label);
        set_dim_label(dims, lens, MD_DIM_DEPARTMENT, dept, a->default_department);
        if (nsl != NULL && nsl->len > 0) {
            set_dim(dims, lens, MD_DIM_NAMESPACE, nsl->p, nsl->len);
        } else {
            const char *ns = NULL;

            for (size_t i = 0; i < a->dept_ns.count && ns == NULL; i++)
                if (strlen(a->dept_ns.keys[i]) == lens[MD_DIM_DEPARTMENT] &&
                    memcmp(a->dept_ns.keys[i], dims[MD_DIM_DEPARTMENT],
                        lens[MD_DIM_DEPARTMENT]) == 0)
                    ns = a->dept_ns.vals[i];
            if (ns == NULL)
                ns = t->namespace != NULL && t->namespace[0] ? t->namespace : a->default_namespace;
            set_dim(dims, lens, MD_DIM_NAMESPACE, ns, strlen(ns));
        }
        set_dim_label(dims, lens, MD_DIM_MODEL, find_label(s, a->model_label), UNKNOWN);
        prov = find_label(s, a->provider_label);
        if (prov == NULL)
            prov = find_label(s, "gen_ai_system_name");     /* EAIG v0.3 */
        set_dim_label(dims, lens, MD_DIM_PROVIDER, prov, UNKNOWN);
        set_dim_label(dims, lens, MD_DIM_OPERATION, op, UNKNOWN);
        set_dim_label(dims, lens, MD_DIM_TOKEN_TYPE, tt, UNKNOWN);
    }
    return md_batch_add(b, sc->key.data, sc->key.len, dims, lens, kind, s->value, s->has_ts, s->ts_ms,
        0, 0.0, overflow);
}

/* ---- fast path ----
 * Same decisions as sample_slow, in an order that does the cheap work
 * first: the name and role decide most samples (histogram buckets are ~60%
 * of an EAIG body) before any label is looked at, and each label name is
 * normalised once per sample, then compared with the configured names
 * normalised once in md_attrib_new. */

/* md_normalize_name through the memo table */
static int
normalize_name_memo(struct md_attrib_scratch *sc, struct md_str name, enum md_instrument *inst,
    enum md_role *role)
{
    struct name_memo *m;
    char detail[64];
    uint32_t h = 2166136261u;     /* FNV-1a */
    size_t slot;
    int rc;

    /* an EAIG body alternates _sum and _count of one family: the two
     * entries hit last answer without hashing the name */
    for (int k = 0; k < 2; k++) {
        m = &sc->memo[sc->memo_recent[k]];
        if (m->len != 0 && m->len == name.len && eq_short(m->name, name.p, name.len)) {
            *inst = m->inst;
            *role = m->role;
            return m->rc;
        }
    }
    for (size_t i = 0; i < name.len; i++)
        h = (h ^ (unsigned char)name.p[i]) * 16777619u;
    slot = (h ^ h >> 16) & (NAME_MEMO_N - 1);
    m = &sc->memo[slot];
    sc->memo_recent[1] = sc->memo_recent[0];
    sc->memo_recent[0] = slot;

    if (m->len != 0 && m->len == name.len && memcmp(m->name, name.p, name.len) == 0) {
        *inst = m->inst;
        *role = m->role;
        return m->rc;
    }
    *inst = MD_INST_UNKNOWN;
    *role = MD_ROLE_NONE;
    rc = md_normalize_name(name, inst, role, detail, sizeof(detail));
    if (name.len > 0 && name.len <= sizeof(m->name)) {
        memcpy(m->name, name.p, name.len);
        m->len = name.len;
        m->rc = rc;
        m->inst = *inst;
        m->role = *role;
    } else {
        m->len = 0;
    }
    return rc;
}

/* The canonical names of s's labels (sc->labels, by index), their matches
 * with the configured names (cid) and their sorted order (sc->order);
 * MD_OK, or MD_ELIMIT when a name does not fit (the caller then takes the
 * reference path).  A raw name equal to the one remembered at its index
 * costs one compare; when every name is remembered and the count is the
 * one order[] was built for, order[] is kept (the canonical names it
 * sorted are the same). */
static int
canon_labels(const struct md_attrib *a, const struct md_sample *s, struct md_attrib_scratch *sc)
{
    int all_known = 1;

    if (s->nlabels > LABELS_MAX)
        return MD_ELIMIT;
    if (sc->cid_gen != a->gen) {
        for (size_t i = 0; i < LABELS_MAX; i++)
            sc->labels[i].raw_len = 0;
        sc->order_of = SIZE_MAX;
        sc->cid_gen = a->gen;
    }
    for (size_t i = 0; i < s->nlabels; i++) {
        struct canon_label *l = &sc->labels[i];
        struct md_str raw = s->labels[i].name;
        size_t len;

        sc->values[i] = &s->labels[i].value;
        /* md_normalize_label_key is pure: the same raw name, the same key */
        if (raw.len > 0 && raw.len == l->raw_len && eq_short(raw.p, l->raw, raw.len))
            continue;
        all_known = 0;
        l->raw_len = 0;
        len = md_normalize_label_key(raw, l->name, CANON_MAX);
        if (len == 0 || len >= CANON_MAX) {
            sc->order_of = SIZE_MAX;
            return MD_ELIMIT;
        }
        l->name_len = len;
        l->is_le = len == 2 && memcmp(l->name, "le", 2) == 0;
        l->cid = 0;
        for (int c = 0; c < CN_COUNT; c++)
            if (a->canon[c].len == len && memcmp(a->canon[c].key, l->name, len) == 0)
                l->cid |= 1u << c;
        if (raw.len <= RAW_MEMO_MAX) {
            memcpy(l->raw, raw.p, raw.len);
            l->raw_len = raw.len;
        }
    }
    if (all_known && sc->order_of == s->nlabels)
        return MD_OK;
    /* stable insertion sort of the indices: a handful of labels, and the
     * order of equal names stays the sample order, as glibc's (merge sort)
     * qsort keeps it for the reference path */
    sc->order_n = 0;
    for (size_t i = 0; i < s->nlabels; i++) {
        size_t j;

        if (sc->labels[i].is_le)
            continue;
        j = sc->order_n++;
        while (j > 0 && cmp_canon(&sc->labels[sc->order[j - 1]], &sc->labels[i]) > 0) {
            sc->order[j] = sc->order[j - 1];
            j--;
        }
        sc->order[j] = (uint16_t)i;
    }
    sc->order_of = s->nlabels;
    return MD_OK;
}

/* found[c]: the value of the first label (in sample order) whose key equals
 * the configured canon[c], like find_label; NULL when none */
static void
find_canons(const struct md_attrib_scratch *sc, size_t n, const struct md_str *found[CN_COUNT])
{
    unsigned want = (1u << CN_COUNT) - 1;

    for (int c = 0; c < CN_COUNT; c++)
        found[c] = NULL;
    for (size_t i = 0; i < n && want != 0; i++) {
        unsigned m = sc->labels[i].cid & want;

        want &= ~m;
        while (m != 0) {
            found[__builtin_ctz(m)] = sc->values[i];
            m &= m - 1;
        }
    }
}

/* series_key from canonical labels, in sc->order */
static int
series_key_canon(enum md_instrument inst, int role, struct md_attrib_scratch *sc,
    struct md_err *err)
{
    const struct canon_label *labels = sc->labels;
    const uint16_t *ord = sc->order;
    struct md_buf *out = &sc->key;
    size_t n = sc->order_n;
    int rc;

    /* the bytes series_key writes ("%s\x1f%d", then \x1e name = value per
     * label), counted first and written in place with one reservation:
     * test_attrib compares the two keys byte for byte */
    {
        const char *iname = md_instrument_name(inst);
        size_t ilen = strlen(iname), total, room;
        char digits[3 * sizeof(int) + 1], *at;
        size_t nd = 0;
        unsigned r = role < 0 ? 0u - (unsigned)role : (unsigned)role;

        do {
            digits[sizeof(digits) - 1 - nd++] = (char)('0' + r % 10);
            r /= 10;
        } while (r != 0);
        if (role < 0)
            digits[sizeof(digits) - 1 - nd++] = '-';
        total = ilen + 1 + nd;
        /* each term is bounded (a label name by CANON_MAX, a value by the
         * parser's line limit, n by LABELS_MAX): the sum cannot wrap */
        for (size_t i = 0; i < n; i++)
            total += 2 + labels[ord[i]].name_len + sc->values[ord[i]]->len;
        md_buf_reset(out);
        rc = md_buf_reserve(out, total, &at, &room);
        if (rc != MD_OK)
            return md_err_set(err, rc, "series identity longer than %u bytes", MD_ATTRIB_KEY_MAX);
        memcpy(at, iname, ilen);
        at += ilen;
        *at++ = '\x1f';
        memcpy(at, digits + sizeof(digits) - nd, nd);
        at += nd;
        for (size_t i = 0; i < n; i++) {
            const struct canon_label *l = &labels[ord[i]];
            const struct md_str *v = sc->values[ord[i]];

            *at++ = '\x1e';
            memcpy(at, l->name, l->name_len);
            at += l->name_len;
            *at++ = '=';
            if (v->len > 0)
                memcpy(at, v->p, v->len);
            at += v->len;
        }
        md_buf_commit(out, total);
    }
    return MD_OK;
}

/* the drop reason of a sample decided by its name alone (inst, role from
 * md_normalize_name and its rc), or -1 when its labels decide */
static int
name_drop(int nrc, enum md_instrument inst, enum md_role role)
{
    if (nrc != MD_OK || inst == MD_INST_UNKNOWN)
        return MD_DROP_OTHER_FAMILY;
    if (inst == MD_INST_INFERENCE_USAGE)
        return MD_DROP_INFERENCE_DUPLICATE;
    if (inst != MD_INST_TOKEN_USAGE)
        return MD_DROP_OTHER_FAMILY;
    /* these roles are decided without labels (sample_slow looks them up
     * first but never uses them for these) */
    if (role == MD_ROLE_BUCKET)
        return MD_DROP_BUCKET;
    if (role != MD_ROLE_SUM && role != MD_ROLE_COUNT && role != MD_ROLE_CREATED)
        return MD_DROP_OTHER_FAMILY;
    return -1;
}

int
md_attrib_name_drop(struct md_str name)
{
    enum md_instrument inst = MD_INST_UNKNOWN;
    enum md_role role = MD_ROLE_NONE;
    char detail[64];
    int rc = md_normalize_name(name, &inst, &role, detail, sizeof(detail));

    return name_drop(rc, inst, role);
}

int
md_attrib_sample(const struct md_attrib *a, const struct md_attrib_target *t,
    const struct md_sample *s, struct md_batch *b, struct md_attrib_scratch *sc,
    struct md_err *err)
{
    const char *dims[MD_DIM_COUNT];
    size_t lens[MD_DIM_COUNT];
    const struct md_str *found[CN_COUNT], *tt, *op;
    enum md_instrument inst = MD_INST_UNKNOWN;
    enum md_role role = MD_ROLE_NONE;
    enum md_kind kind;
    int overflow, rc, drop;

    rc = normalize_name_memo(sc, s->name, &inst, &role);
    drop = name_drop(rc, inst, role);
    if (drop >= 0) {
        b->dropped[drop]++;
        return MD_OK;
    }
    if (canon_labels(a, s, sc) != MD_OK)
        return sample_slow(a, t, s, b, sc, err);
    find_canons(sc, s->nlabels, found);
    overflow = str_is(found[CN_OVERFLOW], "true");
    tt = found[CN_TOKEN_TYPE];
    op = found[CN_OPERATION];
    if (role == MD_ROLE_SUM) {
        kind = MD_KIND_TOKENS;
    } else if (role == MD_ROLE_COUNT) {
        /* the overflow series mixes every type: its count is not requests */
        if (overflow || !str_is(tt, "input")) {
            b->dropped[MD_DROP_COUNT_NOT_INPUT]++;
            return MD_OK;
        }
        kind = MD_KIND_REQUESTS;
    } else {
        kind = ROLE_CREATED_KIND;
    }
    if (!overflow && kind != ROLE_CREATED_KIND) {
        if (tt == NULL || tt->len == 0) {
            b->dropped[MD_DROP_NO_TOKEN_TYPE]++;
            return MD_OK;
        }
        if (str_is(tt, "total")) {
            b->dropped[MD_DROP_TOTAL_TYPE]++;
            return MD_OK;
        }
        for (size_t i = 0; op != NULL && i < a->exclude_ops.count; i++) {
            if (str_is(op, a->exclude_ops.v[i])) {
                b->dropped[MD_DROP_EXCLUDED_OPERATION]++;
                return MD_OK;
            }
        }
    }
    set_dim(dims, lens, MD_DIM_CLUSTER, a->cluster, a->cluster_len);
    if (overflow) {
        for (int d = MD_DIM_NAMESPACE; d < MD_DIM_COUNT; d++)
            set_dim(dims, lens, (enum md_dim)d, UNATTRIBUTED, sizeof(UNATTRIBUTED) - 1);
    } else {
        const struct md_str *nsl = a->has_namespace_label ? found[CN_NAMESPACE] : NULL;
        const struct md_str *dept = found[CN_DEPARTMENT], *prov;

        if (dept != NULL && dept->len > 0)
            set_dim(dims, lens, MD_DIM_DEPARTMENT, dept->p, dept->len);
        else
            set_dim(dims, lens, MD_DIM_DEPARTMENT, a->default_department,
                a->default_department_len);
        if (nsl != NULL && nsl->len > 0) {
            set_dim(dims, lens, MD_DIM_NAMESPACE, nsl->p, nsl->len);
        } else {
            const char *ns = NULL;

            for (size_t i = 0; i < a->dept_ns.count && ns == NULL; i++)
                if (strlen(a->dept_ns.keys[i]) == lens[MD_DIM_DEPARTMENT] &&
                    memcmp(a->dept_ns.keys[i], dims[MD_DIM_DEPARTMENT],
                        lens[MD_DIM_DEPARTMENT]) == 0)
                    ns = a->dept_ns.vals[i];
            if (ns == NULL)
                ns = t->namespace != NULL && t->namespace[0] ? t->namespace : a->default_namespace;
            set_dim(dims, lens, MD_DIM_NAMESPACE, ns, strlen(ns));
        }
        set_dim_label(dims, lens, MD_DIM_MODEL, found[CN_MODEL], UNKNOWN);
        prov = found[CN_PROVIDER];
        if (prov == NULL)
            prov = found[CN_SYSTEM_NAME];     /* EAIG v0.3 */
        set_dim_label(dims, lens, MD_DIM_PROVIDER, prov, UNKNOWN);
        set_dim_label(dims, lens, MD_DIM_OPERATION, op, UNKNOWN);
        set_dim_label(dims, lens, MD_DIM_TOKEN_TYPE, tt, UNKNOWN);
    }
    /* _created shares the identity of the _sum/_count it belongs to */
    rc = series_key_canon(inst, kind == ROLE_CREATED_KIND ? -1 : (int)role, sc, err);
    if (rc != MD_OK)
        return rc;
    if (overflow)
        b->overflow_series += role == MD_ROLE_SUM;
    return md_batch_add(b, sc->key.data, sc->key.len, dims, lens, kind, s->value, s->has_ts,
        s->ts_ms, 0, 0.0, overflow);
}

/* The label part of a key: everything from the first \x1e (or the end). */
static const char *
key_labels(const struct md_batch *b, const struct md_batch_entry *e, size_t *len)
{
    const char *k = md_batch_str(b, e->key_off);
    const char *p = memchr(k, '\x1e', e->key_len);

    if (p == NULL)
        p = k + e->key_len;
    *len = e->key_len - (size_t)(p - k);
    return p;
}

int
md_attrib_finish(struct md_batch *b, struct md_err *err)
{
    size_t w = 0, ncreated = 0;

    (void)err;
    for (size_t i = 0; i < b->count; i++)
        ncreated += b->e[i].kind == ROLE_CREATED_KIND;
    if (ncreated == 0)
        return MD_OK;
    /* _created is rare (EAIG never sends it): a quadratic match is fine for
     * the few OpenMetrics producers that do, and bounded by the batch size */
    for (size_t i = 0; i < b->count; i++) {
        struct md_batch_entry *e = &b->e[i];
        size_t el;
        const char *ek;

        if (e->kind == ROLE_CREATED_KIND)
            continue;
        ek = key_labels(b, e, &el);
        for (size_t j = 0; j < b->count; j++) {
            const struct md_batch_entry *c = &b->e[j];
            size_t cl;
            const char *ck;

            if (c->kind != ROLE_CREATED_KIND)
                continue;
            ck = key_labels(b, c, &cl);
            if (cl == el && memcmp(ck, ek, el) == 0) {
                e->has_created = 1;
                e->created = c->value;
                break;
            }
        }
    }
    for (size_t i = 0; i < b->count; i++)
        if (b->e[i].kind != ROLE_CREATED_KIND)
            b->e[w++] = b->e[i];
    b->count = w;
    return MD_OK;
}
