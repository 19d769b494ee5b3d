/* rating.c: bill documents.  Bill lines in memory (struct md_bill), their
 * order and merge, the bills query parameters, and rendering as JSON, CSV
 * and FOCUS 1.2.  Pure: no I/O, no SQLite, no logging; any thread, state
 * local to the caller's struct md_bill.
 *
 * Invariants: money stays in int64 nanos and is printed by money.c only;
 * totals are sums of the printed lines (grouped lines are sums of lines),
 * so a bill always adds up. */
#include "rating.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "money.h"
#include "pricing.h"

#define RENDER_MAX ((size_t)1 << 30)    /* bytes of one rendered bill */

const char *const md_bill_dim_names[MD_BILL_DIMS] = {
    "day", "cluster", "namespace", "department", "model", "token_type",
};

const char *
md_bill_status_name(enum md_bill_status s)
{
    static const char *const names[] = { "provisional", "closed", "finalized", "correction" };

    return (unsigned)s < 4 ? names[s] : "?";
}

void
md_bill_init(struct md_bill *b, size_t lines_max)
{
    memset(b, 0, sizeof(*b));
    b->lines_max = lines_max ? lines_max : MD_RATING_LINES_MAX;
}

void
md_bill_fini(struct md_bill *b)
{
    for (size_t i = 0; i < b->nstrs; i++)
        md_free(b->strs[i]);
    md_free(b->strs);
    md_free(b->htab);
    md_free(b->lines);
    memset(b, 0, sizeof(*b));
}

static size_t
str_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;    /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 32));
}

/* Rebuilds the hash table at twice the size (or 64 slots). */
static int
htab_grow(struct md_bill *b)
{
    size_t cap = b->hcap ? b->hcap * 2 : 64;
    char **t = md_calloc(cap, sizeof(*t));

    if (t == NULL)
        return MD_ENOMEM;
    for (size_t i = 0; i < b->nstrs; i++) {
        size_t h = str_hash(b->strs[i]) & (cap - 1);

        while (t[h] != NULL)
            h = (h + 1) & (cap - 1);
        t[h] = b->strs[i];
    }
    md_free(b->htab);
    b->htab = t;
    b->hcap = cap;
    return MD_OK;
}

/* The bill's one copy of s.  The previous line's string is checked first
 * (lines mostly arrive sorted, so most strings repeat), then a hash table
 * of every string of the bill: a bill has few distinct strings (a token
 * type, a model, a namespace...) and many lines, so one copy each instead
 * of one per line (the rater adds 100,000 lines a day per cluster). */
static const char *
intern(struct md_bill *b, const char *s, const char *prev)
{
    size_t h;
    char *c;

    if (s == NULL)
        return NULL;
    if (prev != NULL && (prev == s || strcmp(prev, s) == 0))
        return prev;
    if ((b->nstrs + 1) * 2 > b->hcap && htab_grow(b) != MD_OK)
        return NULL;
    h = str_hash(s) & (b->hcap - 1);
    for (; b->htab[h] != NULL; h = (h + 1) & (b->hcap - 1))
        if (strcmp(b->htab[h], s) == 0)
            return b->htab[h];
    if (b->nstrs == b->strs_cap) {
        size_t cap = b->strs_cap ? b->strs_cap * 2 : 64;
        char **n = md_realloc(b->strs, cap * sizeof(*n));

        if (n == NULL)
            return NULL;
        b->strs = n;
        b->strs_cap = cap;
    }
    c = md_strdup(s);
    if (c == NULL)
        return NULL;
    b->strs[b->nstrs++] = c;
    b->htab[h] = c;
    return c;
}

static int
token_rank(const char *t)
{
    enum md_token_type tt;

    if (t != NULL && md_token_type_parse(t, strlen(t), &tt) == MD_OK)
        return (int)tt;
    return MD_TOK_TYPES;
}

/* The rank of t, an interned string of b (or NULL): remembered per pointer
 * for the bill's first few token types (a bill has five in practice). */
static int
bill_tt_rank(struct md_bill *b, const char *t)
{
    int r;

    for (size_t i = 0; i < b->ntt; i++)
        if (b->tt_ptr[i] == t)
            return b->tt_rank[i];
    r = token_rank(t);
    if (b->ntt < sizeof(b->tt_ptr) / sizeof(b->tt_ptr[0])) {
        b->tt_ptr[b->ntt] = t;
        b->tt_rank[b->ntt++] = r;
    }
    return r;
}

int
md_bill_add(struct md_bill *b, const struct md_bill_line *l)
{
    const struct md_bill_line *prev;
    struct md_bill_line *n;

    if (b->count >= b->lines_max)
        return MD_ELIMIT;
    if (b->count == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;

        n = md_realloc(b->lines, cap * sizeof(*n));
        if (n == NULL)
            return MD_ENOMEM;
        b->lines = n;
        b->cap = cap;
    }
    /* after any realloc: the previous line's strings are shared with it */
    prev = b->count ? &b->lines[b->count - 1] : NULL;
    n = &b->lines[b->count];
    *n = *l;
    for (int d = 1; d < MD_BILL_DIMS; d++) {
        n->dims[d] = intern(b, l->dims[d], prev ? prev->dims[d] : NULL);
        if (l->dims[d] != NULL && n->dims[d] == NULL)
            return MD_ENOMEM;
    }
    n->tt_rank = bill_tt_rank(b, n->dims[MD_BILL_TOKEN_TYPE]);
    n->currency = intern(b, l->currency, prev ? prev->currency : NULL);
    n->pricing_model = intern(b, l->pricing_model, prev ? prev->pricing_model : NULL);
    if (n->currency == NULL || n->pricing_model == NULL)
        return MD_ENOMEM;
    b->count++;
    return MD_OK;
}

static int
strcmp_null(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL);
    return strcmp(a, b);
}

#define CMP(a, b) do { if ((a) != (b)) return (a) < (b) ? -1 : 1; } while (0)

static int
line_cmp(const void *pa, const void *pb)
{
    const struct md_bill_line *a = pa, *b = pb;
    int c;

    /* equal pointers are equal strings (and within a bill equal strings
     * are one pointer): most comparisons end without strcmp */
    CMP(a->day, b->day);
    for (int d = MD_BILL_CLUSTER; d < MD_BILL_TOKEN_TYPE; d++) {
        if (a->dims[d] == b->dims[d])
            continue;
        c = strcmp_null(a->dims[d], b->dims[d]);
        if (c != 0)
            return c;
    }
    if (a->dims[MD_BILL_TOKEN_TYPE] != b->dims[MD_BILL_TOKEN_TYPE]) {
        CMP(a->tt_rank, b->tt_rank);
        c = strcmp_null(a->dims[MD_BILL_TOKEN_TYPE], b->dims[MD_BILL_TOKEN_TYPE]);
        if (c != 0)
            return c;
    }
    CMP((int)a->status, (int)b->status);
    CMP(a->source_day, b->source_day);
    c = a->pricing_model == b->pricing_model ? 0 : strcmp(a->pricing_model, b->pricing_model);
    if (c != 0)
        return c;
    c = a->currency == b->currency ? 0 : strcmp(a->currency, b->currency);
    if (c != 0)
        return c;
    CMP(a->unit_price_nanos, b->unit_price_nanos);
    CMP(a->list_unit_price_nanos, b->list_unit_price_nanos);
    CMP(a->revision, b->revision);
    return 0;
}

int
md_bill_merge_lines(struct md_bill *b, struct md_err *err)
{
    size_t w = 0;
    int sorted = 1;

    /* stored lines mostly come back in the order they were written, which
     * is this order: one pass instead of n log n comparisons */
    for (size_t i = 1; i < b->count && sorted; i++)
        sorted = line_cmp(&b->lines[i - 1], &b->lines[i]) <= 0;
    if (!sorted)
        qsort(b->lines, b->count, sizeof(b->lines[0]), line_cmp);
    for (size_t i = 0; i < b->count; i++) {
        struct md_bill_line *o = w ? &b->lines[w - 1] : NULL, *l = &b->lines[i];

        if (o != NULL && line_cmp(o, l) == 0) {
            int64_t t;

            if (md_add_i64(o->tokens, l->tokens, &t) != MD_OK)
                return md_err_set(err, MD_ELIMIT, "tokens of a bill line above 2^63");
            o->tokens = t;
            if (o->status == MD_BILL_CORRECTION || !o->priced) {
                /* corrections are differences of amounts, never recomputed */
                if (md_add_i64(o->amount_nanos, l->amount_nanos, &o->amount_nanos) != MD_OK)
                    return md_err_set(err, MD_ELIMIT, "amount of a bill line above 2^63");
            } else {
                if (t < 0)
                    return md_err_set(err, MD_ESTATE, "negative tokens in a rated line");
                if (md_money_line_amount((uint64_t)t, o->unit_price_nanos, &o->amount_nanos,
                        err) != MD_OK)
                    return MD_ELIMIT;
            }
            continue;
        }
        b->lines[w++] = *l;
    }
    b->count = w;
    return MD_OK;
}

/* ---- the query ---- */

void
md_rating_period_fmt(int32_t day, char buf[8])
{
    char d[16];

    md_pricing_day_fmt(day, d, sizeof(d));
    memcpy(buf, d, 7);
    buf[7] = '\0';
}

int
md_rating_period_parse(const char *s, int32_t *first, int32_t *next)
{
    uint64_t y, m;

    if (strlen(s) != 7 || s[4] != '-' || md_parse_u64(s, 4, 9999, &y) != MD_OK ||
        md_parse_u64(s + 5, 2, 12, &m) != MD_OK || m == 0 || y < 1970)
        return MD_EPARSE;
    *first = (int32_t)md_days_from_civil((int64_t)y, (unsigned)m, 1);
    *next = m == 12 ? (int32_t)md_days_from_civil((int64_t)y + 1, 1, 1)
                    : (int32_t)md_days_from_civil((int64_t)y, (unsigned)m + 1, 1);
    return MD_OK;
}

int
md_bill_query_parse(size_t n, const char *const *keys, const char *const *values,
    int32_t today, struct md_bill_query *q, enum md_bill_format *fmt, struct md_err *err)
{
    const char *period = NULL, *from = NULL, *to = NULL, *group = NULL, *format = NULL;

    memset(q, 0, sizeof(*q));
    q->lines_max = MD_RATING_LINES_MAX;
    *fmt = MD_BILL_JSON;
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i], *v = values[i] ? values[i] : "";
        int found = 0;

        for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS && !found; d++) {
            if (strcmp(k, md_bill_dim_names[d]) == 0) {
                q->filter[d] = v;
                found = 1;
            }
        }
        if (found)
            continue;
        if (strcmp(k, "period") == 0)
            period = v;
        else if (strcmp(k, "from") == 0)
            from = v;
        else if (strcmp(k, "to") == 0)
            to = v;
        else if (strcmp(k, "group_by") == 0)
            group = v;
        else if (strcmp(k, "format") == 0)
            format = v;
        else
            return md_err_set(err, MD_EPARSE, "%.64s: unknown parameter", k);
    }
    if (period != NULL && (from != NULL || to != NULL))
        return md_err_set(err, MD_EPARSE, "period: give period or from/to, not both");
    if (period != NULL) {
        if (md_rating_period_parse(period, &q->from_day, &q->to_day) != MD_OK)
            return md_err_set(err, MD_EPARSE, "period: must be YYYY-MM");
        memcpy(q->period, period, 8);
    } else if (from != NULL || to != NULL) {
        if (from == NULL || to == NULL)
            return md_err_set(err, MD_EPARSE, "%s: from and to go together",
                from == NULL ? "from" : "to");
        if (md_pricing_day_parse(from, strlen(from), &q->from_day) != MD_OK)
            return md_err_set(err, MD_EPARSE, "from: must be YYYY-MM-DD");
        if (md_pricing_day_parse(to, strlen(to), &q->to_day) != MD_OK)
            return md_err_set(err, MD_EPARSE, "to: must be YYYY-MM-DD");
        if (q->to_day <= q->from_day)
            return md_err_set(err, MD_EPARSE, "to: must be after from (to is exclusive)");
        if (q->to_day - q->from_day > MD_RATING_RANGE_DAYS)
            return md_err_set(err, MD_EPARSE, "to: the range is longer than %d days",
                MD_RATING_RANGE_DAYS);
    } else {
        char p[8];

        md_rating_period_fmt(today, p);
        (void)md_rating_period_parse(p, &q->from_day, &q->to_day);
        memcpy(q->period, p, 8);
    }
    if (group != NULL && group[0] != '\0') {
        const char *p = group;
        unsigned item = 1;

        while (*p != '\0') {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            int found = 0;

            for (int d = 0; d < MD_BILL_DIMS && !found; d++) {
                if (strlen(md_bill_dim_names[d]) == len &&
                    memcmp(md_bill_dim_names[d], p, len) == 0) {
                    if (q->group_mask & (1u << d))
                        return md_err_set(err, MD_EPARSE, "group_by: %s given twice",
                            md_bill_dim_names[d]);
                    q->group_mask |= 1u << d;
                    found = 1;
                }
            }
            /* by position: API messages echo no request bytes (api.h) */
            if (!found)
                return md_err_set(err, MD_EPARSE, "group_by: item %u is not one of day, "
                    "cluster, namespace, department, model, token_type", item);
            item++;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    if (format != NULL) {
        if (strcmp(format, "json") == 0)
            *fmt = MD_BILL_JSON;
        else if (strcmp(format, "csv") == 0)
            *fmt = MD_BILL_CSV;
        else if (strcmp(format, "focus") == 0)
            *fmt = MD_BILL_FOCUS;
        else
            return md_err_set(err, MD_EPARSE, "format: must be json, csv or focus");
    }
    if (*fmt == MD_BILL_FOCUS && q->group_mask != 0)
        return md_err_set(err, MD_EPARSE, "group_by: not available with format=focus "
            "(FOCUS rows are charges)");
    return MD_OK;
}

/* ---- rendering ---- */

/* Grouped rows: lines summed per (grouped dims, currency). */
struct grow {
    const struct md_bill_line *first;
    int64_t tokens, amount;
};

static unsigned g_mask;   /* qsort context; rendering runs on one thread at a time per call */

static int
group_key_cmp(const struct md_bill_line *a, const struct md_bill_line *b, unsigned mask)
{
    int c;

    if (mask & (1u << MD_BILL_DAY))
        CMP(a->day, b->day);
    for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS; d++) {
        if (!(mask & (1u << d)))
            continue;
        if (d == MD_BILL_TOKEN_TYPE)
            CMP(a->tt_rank, b->tt_rank);
        c = strcmp_null(a->dims[d], b->dims[d]);
        if (c != 0)
            return c;
    }
    return strcmp(a->currency, b->currency);
}

static int
ptr_group_cmp(const void *pa, const void *pb)
{
    const struct md_bill_line *a = *(const struct md_bill_line *const *)pa;
    const struct md_bill_line *b = *(const struct md_bill_line *const *)pb;
    int c = group_key_cmp(a, b, g_mask);

    if (c != 0)
        return c;
    CMP((uintptr_t)a, (uintptr_t)b);   /* stable */
    return 0;
}

static int
make_groups(const struct md_bill *b, unsigned mask, struct grow **out, size_t *n,
    struct md_err *err)
{
    const struct md_bill_line **idx = NULL;
    struct grow *g = NULL;
    size_t k = 0;

    *out = NULL;
    *n = 0;
    if (b->count == 0)
        return MD_OK;
    idx = md_malloc(b->count * sizeof(*idx));
    g = md_malloc(b->count * sizeof(*g));
    if (idx == NULL || g == NULL) {
        md_free(idx);
        md_free(g);
        return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < b->count; i++)
        idx[i] = &b->lines[i];
    /* thread-unsafe qsort context: mask is passed through a static, and
     * callers render under md_bill_render's own serialisation below */
    g_mask = mask;
    qsort(idx, b->count, sizeof(*idx), ptr_group_cmp);
    for (size_t i = 0; i < b->count; i++) {
        if (k > 0 && group_key_cmp(g[k - 1].first, idx[i], mask) == 0) {
            if (md_add_i64(g[k - 1].tokens, idx[i]->tokens, &g[k - 1].tokens) != MD_OK ||
                md_add_i64(g[k - 1].amount, idx[i]->amount_nanos, &g[k - 1].amount) != MD_OK) {
                md_free(idx);
                md_free(g);
                return md_err_set(err, MD_ELIMIT, "a grouped sum leaves int64");
            }
            continue;
        }
        g[k].first = idx[i];
        g[k].tokens = idx[i]->tokens;
        g[k].amount = idx[i]->amount_nanos;
        k++;
    }
    md_free(idx);
    *out = g;
    *n = k;
    return MD_OK;
}

struct total {
    const char *currency;
    int64_t tokens, amount;
};

static int
add_total(struct total *t, size_t *nt, size_t cap, const char *cur, int64_t tokens,
    int64_t amount)
{
    size_t i;

    for (i = 0; i < *nt; i++)
        if (strcmp(t[i].currency, cur) == 0)
            break;
    if (i == *nt) {
        if (*nt == cap)
            return MD_ELIMIT;
        t[i].currency = cur;
        t[i].tokens = 0;
        t[i].amount = 0;
        (*nt)++;
    }
    if (md_add_i64(t[i].tokens, tokens, &t[i].tokens) != MD_OK ||
        md_add_i64(t[i].amount, amount, &t[i].amount) != MD_OK)
        return MD_ELIMIT;
    return MD_OK;
}

static int
total_cmp(const void *pa, const void *pb)
{
    return strcmp(((const struct total *)pa)->currency, ((const struct total *)pb)->currency);
}

#define TOTALS_MAX 64   /* currencies in one bill */

static void
day_str(int32_t day, char buf[16])
{
    md_pricing_day_fmt(day, buf, 16);
}

/* CSV field, quoted when it needs to be (RFC 4180). */
static void
csv_field(struct md_buf *o, const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n") != NULL) {
        (void)md_buf_putc(o, '"');
        for (const char *p = s; *p; p++) {
            if (*p == '"')
                (void)md_buf_putc(o, '"');
            (void)md_buf_putc(o, *p);
        }
        (void)md_buf_putc(o, '"');
    } else {
        (void)md_buf_puts(o, s);
    }
    (void)md_buf_puts(o, last ? "\r\n" : ",");
}

static const char *const line_keys[] = {
    "day", "cluster", "namespace", "department", "model", "token_type", "tokens",
    "unit_price", "amount", "currency", "status", "pricing_model", "pricing_revision",
};
#define LINE_KEYS (sizeof(line_keys) / sizeof(line_keys[0]))

/* Decimal of v into buf (>= 21 bytes); no printf on the hot path. */
static void
fmt_i64(int64_t v, char *buf)
{
    char tmp[24];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, k = 0;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[k++] = '-';
    while (n > 0)
        buf[k++] = tmp[--n];
    buf[k] = '\0';
}

/* The fields of a full line as strings, in line_keys order. */
static void
line_fields(const struct md_bill_line *l, char bufs[LINE_KEYS][48], const char *f[LINE_KEYS])
{
    day_str(l->day, bufs[0]);
    f[0] = bufs[0];
    for (int d = 1; d < MD_BILL_DIMS; d++)
        f[d] = l->dims[d] ? l->dims[d] : "";
    fmt_i64(l->tokens, bufs[6]);
    f[6] = bufs[6];
    (void)md_money_fmt(l->unit_price_nanos, bufs[7], 48);
    f[7] = bufs[7];
    (void)md_money_fmt(l->amount_nanos, bufs[8], 48);
    f[8] = bufs[8];
    f[9] = l->currency;
    f[10] = md_bill_status_name(l->status);
    f[11] = l->pricing_model;
    fmt_i64(l->revision, bufs[12]);
    f[12] = bufs[12];
}

static json_t *
line_json(const struct md_bill_line *l)
{
    char bufs[LINE_KEYS][48];
    const char *f[LINE_KEYS];
    json_t *o = json_object();

    line_fields(l, bufs, f);
    for (size_t i = 0; i < LINE_KEYS && o != NULL; i++) {
        json_t *v = (i == 6 || i == 12) ? json_integer(i == 6 ? l->tokens : l->revision)
                                        : json_string(f[i]);

        if (v == NULL || json_object_set_new(o, line_keys[i], v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

/* group row fields: grouped dims, then currency, tokens, amount */
static size_t
group_fields(const struct grow *g, unsigned mask, char bufs[LINE_KEYS][48],
    const char *keys[LINE_KEYS], const char *f[LINE_KEYS])
{
    size_t k = 0;

    for (int d = 0; d < MD_BILL_DIMS; d++) {
        if (!(mask & (1u << d)))
            continue;
        keys[k] = md_bill_dim_names[d];
        if (d == MD_BILL_DAY) {
            day_str(g->first->day, bufs[k]);
            f[k] = bufs[k];
        } else {
            f[k] = g->first->dims[d] ? g->first->dims[d] : "";
        }
        k++;
    }
    keys[k] = "currency";
    f[k++] = g->first->currency;
    keys[k] = "tokens";
    (void)snprintf(bufs[k], 48, "%lld", (long long)g->tokens);
    f[k] = bufs[k];
    k++;
    keys[k] = "amount";
    (void)md_money_fmt(g->amount, bufs[k], 48);
    f[k] = bufs[k];
    k++;
    return k;
}

/* ---- the JSON lines renderer (the bills endpoint's hot path) ---- */

/* One md_malloc'd block grown by doubling and written through a cursor
 * after one capacity check per line: no per-field call, strlen or printf.
 * failed is sticky: after MD_ENOMEM or MD_ELIMIT writes are dropped and the
 * caller reports it once. */
struct out {
    char  *p;
    size_t len, cap;
    int    failed;
};

/* Room for n more bytes (and a NUL); 0 when it cannot be had. */
static int
out_reserve(struct out *o, size_t n)
{
    size_t want;
    char *np;

    if (o->failed)
        return 0;
    if (n > RENDER_MAX - o->len) {
        o->failed = MD_ELIMIT;
        return 0;
    }
    if (o->len + n + 1 <= o->cap)
        return 1;
    want = o->cap ? o->cap : 4096;
    while (want < o->len + n + 1)
        want *= 2;      /* at most 2^31: RENDER_MAX is 2^30 */
    np = md_realloc(o->p, want);
    if (np == NULL) {
        o->failed = MD_ENOMEM;
        return 0;
    }
    o->p = np;
    o->cap = want;
    return 1;
}

#define W_LIT(w, lit) do { memcpy((w), (lit), sizeof(lit) - 1); (w) += sizeof(lit) - 1; } \
    while (0)

/* JSON string of s (n bytes) at w, quotes included: backslash, quote and
 * control characters escaped, other bytes as they are (dimension values are
 * UTF-8 from attribution).  Needs 6 n + 2 bytes of room.  Plain strings
 * (all of them in practice) are one scan and one copy. */
static char *
w_json_str(char *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        memcpy(w, s + run, i - run);
        w += i - run;
        run = i + 1;
        *w++ = '\\';
        if (c == '"' || c == '\\') {
            *w++ = (char)c;
        } else {
            *w++ = 'u';
            *w++ = '0';
            *w++ = '0';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    memcpy(w, s + run, n - run);
    w += n - run;
    *w++ = '"';
    return w;
}

/* Decimal of v at w (at most 20 bytes). */
static char *
w_i64(char *w, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    memcpy(w, p, (size_t)(tmp + sizeof(tmp) - p));
    return w + (tmp + sizeof(tmp) - p);
}

/* A money amount as a JSON string (digits, '-', '.': nothing to escape);
 * at most MD_MONEY_FMT_MAX + 1 bytes. */
static char *
w_money(char *w, int64_t nanos)
{
    char a[MD_MONEY_FMT_MAX];
    size_t n;

    (void)md_money_fmt(nanos, a, sizeof(a));
    n = strlen(a);
    *w++ = '"';
    memcpy(w, a, n);
    w += n;
    *w++ = '"';
    return w;
}

/* The JSON forms of one field's strings already written in this render:
 * the bill's strings are interned (equal pointers are equal strings) and a
 * field takes few values (one namespace, five token types...), so each is
 * escaped once and later copied from where it was first written (an offset:
 * the block may move when it grows).  JMEMO_N per field, replaced in turn. */
#define JMEMO_N 8
struct jmemo {
    const char *p[JMEMO_N];
    size_t      off[JMEMO_N], len[JMEMO_N];
    unsigned    n, next;
};

/* The slot of s in m, or -1. */
static int
jmemo_find(const struct jmemo *m, const char *s)
{
    for (unsigned i = 0; i < m->n; i++)
        if (m->p[i] == s)
            return (int)i;
    return -1;
}

/* Writes s (n bytes; slot: jmemo_find's answer) as a JSON string at w, in
 * the block of o, copying an earlier rendering when there is one. */
static char *
w_json_memo(const struct out *o, char *w, struct jmemo *m, int slot, const char *s, size_t n)
{
    char *start = w;
    unsigned i;

    if (slot >= 0) {
        memcpy(w, o->p + m->off[slot], m->len[slot]);
        return w + m->len[slot];
    }
    w = w_json_str(w, s, n);
    i = m->n < JMEMO_N ? m->n++ : (m->next++ % JMEMO_N);
    m->p[i] = s;
    m->off[i] = (size_t)(start - o->p);
    m->len[i] = (size_t)(w - start);
    return w;
}

#define LINE_FIXED 320  /* bytes of a line besides its strings (keys, numbers) */

/* Full lines: the same document json_dumps would give, keys in line_keys
 * order, written in one pass.  Days repeat (lines are ordered by day), so
 * the date string is made once per day. */
static int
render_json_lines(const struct md_bill *b, const struct md_bill_query *q, struct total *t,
    size_t nt, char **body, size_t *len, struct md_err *err)
{
    struct out o = { NULL, 0, 0, 0 };
    struct jmemo jm[MD_BILL_DIMS + 2];   /* per string field, indexed as sv below */
    char buf[32], dstr[16];
    int32_t dprev = 0;
    size_t dlen = 0;
    char *w;

    memset(jm, 0, sizeof(jm));
    /* the usual size of a line, so that the block grows once or twice */
    if (b->count < RENDER_MAX / 256)
        (void)out_reserve(&o, 256 + b->count * 256);
    if (q->period[0] != '\0') {
        if (out_reserve(&o, 16 + 6 * sizeof(q->period))) {
            w = o.p;
            W_LIT(w, "{\"period\":");
            w = w_json_str(w, q->period, strlen(q->period));
            o.len = (size_t)(w - o.p);
        }
    } else if (out_reserve(&o, 64)) {
        w = o.p;
        day_str(q->from_day, buf);
        W_LIT(w, "{\"from\":");
        w = w_json_str(w, buf, strlen(buf));
        day_str(q->to_day, buf);
        W_LIT(w, ",\"to\":");
        w = w_json_str(w, buf, strlen(buf));
        o.len = (size_t)(w - o.p);
    }
    if (out_reserve(&o, 16)) {
        w = o.p + o.len;
        W_LIT(w, ",\"lines\":[");
        o.len = (size_t)(w - o.p);
    }
    for (size_t i = 0; i < b->count && !o.failed; i++) {
        const struct md_bill_line *l = &b->lines[i];
        const char *sv[MD_BILL_DIMS + 2];
        size_t sl[MD_BILL_DIMS + 2], need = LINE_FIXED;
        int slot[MD_BILL_DIMS + 2];

        for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS; d++)
            sv[d] = l->dims[d] ? l->dims[d] : "";
        sv[0] = l->currency;
        sv[MD_BILL_DIMS] = l->pricing_model;
        sv[MD_BILL_DIMS + 1] = md_bill_status_name(l->status);
        for (int k = 0; k < MD_BILL_DIMS + 2; k++) {
            slot[k] = jmemo_find(&jm[k], sv[k]);
            if (slot[k] >= 0) {
                sl[k] = 0;
                need += jm[k].len[slot[k]];
                continue;
            }
            sl[k] = strlen(sv[k]);
            if (sl[k] > RENDER_MAX / 8) {
                o.failed = MD_ELIMIT;
                break;
            }
            need += 6 * sl[k] + 2;
        }
        if (i == 0 || l->day != dprev) {
            day_str(l->day, dstr);
            dlen = strlen(dstr);
            dprev = l->day;
        }
        if (o.failed || !out_reserve(&o, need))
            break;
        w = o.p + o.len;
        if (i > 0)
            *w++ = ',';
#define W_STR(k) (w = w_json_memo(&o, w, &jm[k], slot[k], sv[k], sl[k]))
        W_LIT(w, "{\"day\":\"");
        memcpy(w, dstr, dlen);
        w += dlen;
        W_LIT(w, "\",\"cluster\":");
        W_STR(MD_BILL_CLUSTER);
        W_LIT(w, ",\"namespace\":");
        W_STR(MD_BILL_NAMESPACE);
        W_LIT(w, ",\"department\":");
        W_STR(MD_BILL_DEPARTMENT);
        W_LIT(w, ",\"model\":");
        W_STR(MD_BILL_MODEL);
        W_LIT(w, ",\"token_type\":");
        W_STR(MD_BILL_TOKEN_TYPE);
        W_LIT(w, ",\"tokens\":");
        w = w_i64(w, l->tokens);
        W_LIT(w, ",\"unit_price\":");
        w = w_money(w, l->unit_price_nanos);
        W_LIT(w, ",\"amount\":");
        w = w_money(w, l->amount_nanos);
        W_LIT(w, ",\"currency\":");
        W_STR(0);
        W_LIT(w, ",\"status\":");
        W_STR(MD_BILL_DIMS + 1);
        W_LIT(w, ",\"pricing_model\":");
        W_STR(MD_BILL_DIMS);
#undef W_STR
        W_LIT(w, ",\"pricing_revision\":");
        w = w_i64(w, l->revision);
        *w++ = '}';
        o.len = (size_t)(w - o.p);
    }
    if (out_reserve(&o, 16)) {
        w = o.p + o.len;
        W_LIT(w, "],\"totals\":[");
        o.len = (size_t)(w - o.p);
    }
    for (size_t i = 0; i < nt && !o.failed; i++) {
        size_t cl = strlen(t[i].currency);

        if (cl > RENDER_MAX / 8) {
            o.failed = MD_ELIMIT;
            break;
        }
        if (!out_reserve(&o, 128 + 6 * cl))
            break;
        w = o.p + o.len;
        if (i > 0)
            *w++ = ',';
        W_LIT(w, "{\"currency\":");
        w = w_json_str(w, t[i].currency, cl);
        W_LIT(w, ",\"tokens\":");
        w = w_i64(w, t[i].tokens);
        W_LIT(w, ",\"amount\":");
        w = w_money(w, t[i].amount);
        *w++ = '}';
        o.len = (size_t)(w - o.p);
    }
    if (out_reserve(&o, 2)) {
        w = o.p + o.len;
        W_LIT(w, "]}");
        o.len = (size_t)(w - o.p);
        o.p[o.len] = '\0';
    }
    if (o.failed) {
        md_free(o.p);
        if (o.failed == MD_ENOMEM)
            return md_err_set(err, MD_ENOMEM, "out of memory");
        return md_err_set(err, MD_ELIMIT, "bill larger than %zu bytes", RENDER_MAX);
    }
    *body = o.p;
    *len = o.len;
    return MD_OK;
}

static int
render_json(const struct md_bill *b, const struct md_bill_query *q, struct grow *g, size_t ng,
    struct total *t, size_t nt, char **body, size_t *len, struct md_err *err)
{
    json_t *root = json_object(), *lines = json_array(), *totals = json_array();
    char buf[32];
    int rc = MD_OK;

    if (root == NULL || lines == NULL || totals == NULL) {
        rc = md_err_set(err, MD_ENOMEM, "out of memory");
        goto out;
    }
    if (q->period[0] != '\0') {
        json_object_set_new(root, "period", json_string(q->period));
    } else {
        day_str(q->from_day, buf);
        json_object_set_new(root, "from", json_string(buf));
        day_str(q->to_day, buf);
        json_object_set_new(root, "to", json_string(buf));
    }
    if (q->group_mask) {
        json_t *gb = json_array();

        for (int d = 0; d < MD_BILL_DIMS; d++)
            if (q->group_mask & (1u << d))
                json_array_append_new(gb, json_string(md_bill_dim_names[d]));
        json_object_set_new(root, "group_by", gb);
        for (size_t i = 0; i < ng; i++) {
            char bufs[LINE_KEYS][48];
            const char *keys[LINE_KEYS], *f[LINE_KEYS];
            size_t k = group_fields(&g[i], q->group_mask, bufs, keys, f);
            json_t *o = json_object();

            for (size_t j = 0; j < k && o != NULL; j++)
                json_object_set_new(o, keys[j], strcmp(keys[j], "tokens") == 0
                    ? json_integer(g[i].tokens) : json_string(f[j]));
            if (o == NULL || json_array_append_new(lines, o) != 0) {
                rc = md_err_set(err, MD_ENOMEM, "out of memory");
                goto out;
            }
        }
    } else {
        for (size_t i = 0; i < b->count; i++) {
            json_t *o = line_json(&b->lines[i]);

            if (o == NULL || json_array_append_new(lines, o) != 0) {
                rc = md_err_set(err, MD_ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    for (size_t i = 0; i < nt; i++) {
        char a[MD_MONEY_FMT_MAX];

        (void)md_money_fmt(t[i].amount, a, sizeof(a));
        json_array_append_new(totals, json_pack("{s:s,s:I,s:s}", "currency", t[i].currency,
            "tokens", (json_int_t)t[i].tokens, "amount", a));
    }
    json_object_set(root, "lines", lines);
    json_object_set(root, "totals", totals);
    *body = json_dumps(root, JSON_COMPACT);
    if (*body == NULL)
        rc = md_err_set(err, MD_ENOMEM, "out of memory");
    else
        *len = strlen(*body);
out:
    json_decref(lines);
    json_decref(totals);
    json_decref(root);
    return rc;
}

static const char *const focus_cols[] = {
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice",
    "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart",
    "ChargePeriodEnd", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ConsumedQuantity", "ConsumedUnit", "PricingQuantity", "PricingUnit", "ServiceCategory",
    "ServiceName", "ProviderName", "PublisherName", "InvoiceIssuerName", "BillingAccountId",
    "BillingAccountName", "SubAccountId", "SubAccountName", "SkuId", "Tags",
};
#define FOCUS_COLS (sizeof(focus_cols) / sizeof(focus_cols[0]))

static void
focus_time(int32_t day, char buf[32])
{
    char d[16];

    md_pricing_day_fmt(day, d, sizeof(d));
    (void)snprintf(buf, 32, "%sT00:00:00Z", d);
}

/* tokens x price per million / 1e6, rounded half to even, for any sign */
static int
signed_amount(int64_t tokens, int64_t price, int64_t *out, struct md_err *err)
{
    int64_t a;
    uint64_t mag = tokens < 0 ? (uint64_t)0 - (uint64_t)tokens : (uint64_t)tokens;

    if (md_money_line_amount(mag, price, &a, err) != MD_OK)
        return MD_ELIMIT;
    *out = tokens < 0 ? -a : a;
    return MD_OK;
}

static int
render_focus_line(struct md_buf *o, const struct md_bill_line *l, struct md_err *err)
{
    char billed[32], list_cost[32], list_price[32], bps[32], bpe[32], cps[32], cpe[32];
    char desc[512], qty[32], pqty[32], sku[512], src[16], ym[8];
    char *tags;
    json_t *tj;
    int64_t lc, pq;
    int32_t first, next;
    int corr = l->status == MD_BILL_CORRECTION;
    const char *f[FOCUS_COLS];

    (void)md_money_fmt(l->amount_nanos, billed, sizeof(billed));
    if (signed_amount(l->tokens, l->list_unit_price_nanos, &lc, err) != MD_OK)
        return MD_ELIMIT;
    (void)md_money_fmt(lc, list_cost, sizeof(list_cost));
    (void)md_money_fmt(l->list_unit_price_nanos, list_price, sizeof(list_price));
    md_rating_period_fmt(l->day, ym);
    (void)md_rating_period_parse(ym, &first, &next);
    focus_time(first, bps);
    focus_time(next, bpe);
    focus_time(l->source_day, cps);
    focus_time(l->source_day + 1, cpe);
    day_str(l->source_day, src);
    (void)snprintf(desc, sizeof(desc), "%s%.120s tokens of %.200s (%.128s, revision %lld)%s%s",
        corr ? "Correction of " : "", l->dims[MD_BILL_TOKEN_TYPE], l->dims[MD_BILL_MODEL],
        l->pricing_model, (long long)l->revision, corr ? " on " : "", corr ? src : "");
    (void)snprintf(qty, sizeof(qty), "%lld", (long long)l->tokens);
    /* PricingUnit is "1M Tokens": quantity = tokens / 10^6, exact */
    if (md_mul_i64(l->tokens, 1000, &pq) != MD_OK)
        return md_err_set(err, MD_ELIMIT, "tokens too large for PricingQuantity");
    (void)md_money_fmt(pq, pqty, sizeof(pqty));
    (void)snprintf(sku, sizeof(sku), "%s/%s", l->dims[MD_BILL_MODEL],
        l->dims[MD_BILL_TOKEN_TYPE]);
    tj = json_pack("{s:s,s:s,s:s}", "cluster", l->dims[MD_BILL_CLUSTER], "department",
        l->dims[MD_BILL_DEPARTMENT], "token_type", l->dims[MD_BILL_TOKEN_TYPE]);
    tags = tj ? json_dumps(tj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(tj);
    if (tags == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    f[0] = billed;                      /* BilledCost */
    f[1] = billed;                      /* EffectiveCost: no commitments, no amortisation */
    f[2] = list_cost;                   /* ListCost */
    f[3] = billed;                      /* ContractedCost: the adjusted price is the contract */
    f[4] = list_price;                  /* ListUnitPrice per PricingUnit */
    f[5] = l->currency;
    f[6] = bps;
    f[7] = bpe;
    f[8] = cps;
    f[9] = cpe;
    f[10] = "Usage";
    f[11] = corr ? "Correction" : "";
    f[12] = desc;
    f[13] = qty;
    f[14] = "Tokens";
    f[15] = pqty;
    f[16] = "1M Tokens";
    f[17] = "AI and Machine Learning";
    f[18] = "LLM Tokens";
    f[19] = "Envoy AI Gateway";
    f[20] = "Envoy AI Gateway";
    f[21] = "meterd";
    f[22] = l->dims[MD_BILL_CLUSTER];
    f[23] = l->dims[MD_BILL_CLUSTER];
    f[24] = l->dims[MD_BILL_NAMESPACE];
    f[25] = l->dims[MD_BILL_NAMESPACE];
    f[26] = sku;
    f[27] = tags;
    for (size_t i = 0; i < FOCUS_COLS; i++)
        csv_field(o, f[i], i + 1 == FOCUS_COLS);
    free(tags);
    return MD_OK;
}

int
md_bill_render(const struct md_bill *b, const struct md_bill_query *q,
    enum md_bill_format fmt, char **body, size_t *len, struct md_err *err)
{
    static pthread_mutex_t render_mu = PTHREAD_MUTEX_INITIALIZER;
    struct total t[TOTALS_MAX];
    struct grow *g = NULL;
    struct md_buf o;
    size_t ng = 0, nt = 0;
    int rc;

    /* totals: sums of the lines per currency (the same sums as the groups) */
    for (size_t i = 0; i < b->count; i++)
        if (add_total(t, &nt, TOTALS_MAX, b->lines[i].currency, b->lines[i].tokens,
                b->lines[i].amount_nanos) != MD_OK)
            return md_err_set(err, MD_ELIMIT, "more than %d currencies or a total above 2^63",
                TOTALS_MAX);
    if (nt > 1)
        qsort(t, nt, sizeof(t[0]), total_cmp);
    if (q->group_mask) {
        pthread_mutex_lock(&render_mu);
        rc = make_groups(b, q->group_mask, &g, &ng, err);
        pthread_mutex_unlock(&render_mu);
        if (rc != MD_OK)
            return rc;
    }
    if (fmt == MD_BILL_JSON && q->group_mask == 0)
        return render_json_lines(b, q, t, nt, body, len, err);
    if (fmt == MD_BILL_JSON) {
        rc = render_json(b, q, g, ng, t, nt, body, len, err);
        md_free(g);
        return rc;
    }
    md_buf_init(&o, RENDER_MAX);
    rc = MD_OK;
    if (fmt == MD_BILL_FOCUS) {
        for (size_t i = 0; i < FOCUS_COLS; i++)
            csv_field(&o, focus_cols[i], i + 1 == FOCUS_COLS);
        for (size_t i = 0; i < b->count && rc == MD_OK; i++)
            rc = render_focus_line(&o, &b->lines[i], err);
    } else if (q->group_mask) {
        for (size_t i = 0; i < ng; i++) {
            char bufs[LINE_KEYS][48];
            const char *keys[LINE_KEYS], *f[LINE_KEYS];
            size_t k = group_fields(&g[i], q->group_mask, bufs, keys, f);

            if (i == 0)
                for (size_t j = 0; j < k; j++)
                    csv_field(&o, keys[j], j + 1 == k);
            for (size_t j = 0; j < k; j++)
                csv_field(&o, f[j], j + 1 == k);
        }
        if (ng == 0) {
            for (int d = 0; d < MD_BILL_DIMS; d++)
                if (q->group_mask & (1u << d))
                    csv_field(&o, md_bill_dim_names[d], 0);
            (void)md_buf_puts(&o, "currency,tokens,amount\r\n");
        }
    } else {
        for (size_t j = 0; j < LINE_KEYS; j++)
            csv_field(&o, line_keys[j], j + 1 == LINE_KEYS);
        for (size_t i = 0; i < b->count; i++) {
            char bufs[LINE_KEYS][48];
            const char *f[LINE_KEYS];

            line_fields(&b->lines[i], bufs, f);
            for (size_t j = 0; j < LINE_KEYS; j++)
                csv_field(&o, f[j], j + 1 == LINE_KEYS);
        }
    }
    md_free(g);
    if (rc == MD_OK && o.len >= RENDER_MAX)
        rc = md_err_set(err, MD_ELIMIT, "bill larger than %zu bytes", RENDER_MAX);
    if (rc != MD_OK) {
        md_buf_fini(&o);
        return rc;
    }
    *body = md_buf_steal(&o, len);
    if (*body == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    return MD_OK;
}
