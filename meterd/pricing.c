/* pricing.c: pricing documents (YAML or JSON) -> immutable md_pricing; the
 * lookup of the price that applies to a usage key; and THE PRICING RULE that
 * turns one usage row set into priced lines (documented in pricing.h).
 *
 * No thread owns a loaded md_pricing: it is immutable after load, so any
 * thread may look up and price concurrently (PCRE2 code and match context are
 * read-only; match data is per call).  Invariants: money is int64 nanos, one
 * rounding per line (money.c); at most one pricing model applies to a
 * (cluster, day), enforced at load; no token is priced twice. */
#include "pricing.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "money.h"

struct price_field {
    int64_t nanos;
    int     set;
};

struct day_field {
    int32_t day;
    int     set;
};

enum pat_kind { PAT_EXACT, PAT_GLOB, PAT_REGEX };

struct pattern {
    enum pat_kind  kind;
    pcre2_code    *re;
};

struct item_cfg {
    struct md_strlist   models;
    struct price_field  price[MD_TOK_TYPES];
    struct pattern     *pats;       /* built by validate_item */
    size_t              pat_count;  /* kept apart: cfgtab zeroes models first */
};

struct adj_cfg {
    char    *namespace;
    int64_t  percent_nanos;
};

struct model_cfg {
    char              *name;
    char              *currency;
    struct md_strlist  clusters;
    struct day_field   from;
    struct day_field   to;          /* exclusive; unset: open-ended */
    int                cache_included;
    struct md_strmap   providers;   /* pattern -> "true" | "false" */
    struct md_cfg_list adjustments; /* struct adj_cfg */
    struct md_cfg_list items;       /* struct item_cfg */
    struct adj_cfg   **adj_sorted;  /* by namespace, for bsearch; validate_model */
};

struct doc_cfg {
    struct md_cfg_list models;      /* struct model_cfg */
};

struct md_pricing {
    struct doc_cfg        doc;
    pcre2_match_context  *mctx;
};

static const char *const tok_names[MD_TOK_TYPES] = {
    "input", "cached_input", "cache_creation_input", "output", "reasoning",
};

/* ---- days ---- */

/* Howard Hinnant's days_from_civil: exact for the proleptic Gregorian
 * calendar, no floating point, no time zone. */
static int32_t
days_from_civil(int32_t y, unsigned m, unsigned d)
{
    int32_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (int32_t)((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1);
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int
md_pricing_day_parse(const char *s, size_t len, int32_t *day)
{
    static const unsigned mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    unsigned v[3] = {0, 0, 0};
    static const size_t pos[3] = {0, 5, 8}, width[3] = {4, 2, 2};

    if (len != 10 || s[4] != '-' || s[7] != '-')
        return MD_EPARSE;
    for (int f = 0; f < 3; f++) {
        for (size_t i = pos[f]; i < pos[f] + width[f]; i++) {
            if (s[i] < '0' || s[i] > '9')
                return MD_EPARSE;
            v[f] = v[f] * 10 + (unsigned)(s[i] - '0');
        }
    }
    if (v[0] < 1970 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1])
        return MD_EPARSE;
    if (v[1] == 2 && v[2] == 29 && !((v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0))
        return MD_EPARSE;
    *day = days_from_civil((int32_t)v[0], v[1], v[2]);
    return MD_OK;
}

void
md_pricing_day_fmt(int32_t day, char *buf, size_t buf_len)
{
    /* civil_from_days, the inverse of the above */
    int32_t z = day + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int32_t doe = z - era * 146097;
    int32_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int32_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int32_t mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1;
    int32_t m = mp < 10 ? mp + 3 : mp - 9;

    (void)snprintf(buf, buf_len, "%04d-%02d-%02d", (int)(y + (m <= 2)), (int)m, (int)d);
}

/* ---- token types ---- */

const char *
md_token_type_name(enum md_token_type t)
{
    return (unsigned)t < MD_TOK_TYPES ? tok_names[t] : NULL;
}

int
md_token_type_parse(const char *s, size_t len, enum md_token_type *out)
{
    for (int t = 0; t < MD_TOK_TYPES; t++) {
        if (strlen(tok_names[t]) == len && memcmp(tok_names[t], s, len) == 0) {
            *out = (enum md_token_type)t;
            return MD_OK;
        }
    }
    return MD_ENOTFOUND;
}

/* ---- converters and checks (cfgtab) ---- */

/* cfgtab copies the reason into its error, so a per-thread buffer is fine */
static _Thread_local char why_buf[MD_ERR_MSG_MAX];

static const char *
conv_price(const char *s, size_t len, void *field)
{
    struct price_field *f = field;
    struct md_err err = {0};

    if (md_money_parse(s, len, &f->nanos, &err) != MD_OK) {
        (void)snprintf(why_buf, sizeof(why_buf), "price %.200s", err.msg);
        return why_buf;
    }
    f->set = 1;
    return NULL;
}

static const char *
conv_percent(const char *s, size_t len, void *field)
{
    int64_t *f = field, v = 0;
    struct md_err err = {0};

    if (md_money_parse_signed(s, len, &v, &err) != MD_OK) {
        (void)snprintf(why_buf, sizeof(why_buf), "percent %.200s", err.msg);
        return why_buf;
    }
    if (v < MD_PRICING_PERCENT_MIN || v > MD_PRICING_PERCENT_MAX)
        return "percent must be between -100 and 1000";
    *f = v;
    return NULL;
}

static const char *
conv_day(const char *s, size_t len, void *field)
{
    struct day_field *f = field;

    if (md_pricing_day_parse(s, len, &f->day) != MD_OK)
        return "not a date YYYY-MM-DD (a real day, 1970 or later)";
    f->set = 1;
    return NULL;
}

static const char *
check_name(const char *v)
{
    if (*v == '\0')
        return "must not be empty";
    for (const char *p = v; *p != '\0'; p++) {
        char c = *p;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == ':'))
            return "use letters, digits and . _ - : only";
    }
    return NULL;
}

static const char *
check_currency(const char *v)
{
    return md_money_currency_valid(v) ? NULL : "not an ISO 4217 code (3 letters A-Z, e.g. USD)";
}

static const char *
check_nonempty(const char *v)
{
    return *v == '\0' ? "must not be empty" : NULL;
}

static const char *
check_pattern(const char *v)
{
    if (*v == '\0')
        return "must not be empty";
    if (strlen(v) > MD_PRICING_PATTERN_MAX)
        return "pattern longer than 1024 bytes";
    if (strcmp(v, "re:") == 0)
        return "empty regex";
    return NULL;
}

static void validate_item(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_model(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_doc(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void free_item(void *obj);
static void free_model(void *obj);

/* ---- key tables ---- */

#define IOFF(f) offsetof(struct item_cfg, f)
#define MOFF(f) offsetof(struct model_cfg, f)
#define AOFF(f) offsetof(struct adj_cfg, f)
#define END { .name = NULL }

static const struct md_cfg_key per_million_keys[] = {
    { .name = "input", .type = MD_CFG_SCALAR, .off = IOFF(price[MD_TOK_INPUT]),
      .conv = conv_price, .help = "uncached input tokens, per million" },
    { .name = "cached_input", .type = MD_CFG_SCALAR, .off = IOFF(price[MD_TOK_CACHED_INPUT]),
      .conv = conv_price, .help = "cache-read input tokens, per million" },
    { .name = "cache_creation_input", .type = MD_CFG_SCALAR,
      .off = IOFF(price[MD_TOK_CACHE_CREATION_INPUT]), .conv = conv_price,
      .help = "cache-write input tokens, per million" },
    { .name = "output", .type = MD_CFG_SCALAR, .off = IOFF(price[MD_TOK_OUTPUT]),
      .conv = conv_price, .help = "output tokens (reasoning included unless priced), per million" },
    { .name = "reasoning", .type = MD_CFG_SCALAR, .off = IOFF(price[MD_TOK_REASONING]),
      .conv = conv_price, .help = "reasoning tokens, per million (carved out of output)" },
    END,
};
static const struct md_cfg_section per_million_section = {
    .name = "per_million", .keys = per_million_keys
};

static const struct md_cfg_key item_keys[] = {
    { .name = "models", .type = MD_CFG_STRLIST, .off = IOFF(models),
      .max = MD_PRICING_PATTERNS_MAX, .flags = MD_CFG_REQUIRED, .check = check_pattern,
      .help = "model names: exact, glob (* ?) or \"re:REGEX\" (anchored)" },
    { .name = "per_million", .type = MD_CFG_SECTION, .sub = &per_million_section,
      .flags = MD_CFG_REQUIRED, .help = "prices per million tokens, decimal strings" },
    END,
};
static const struct md_cfg_section item_section = {
    .name = "items[]", .keys = item_keys, .size = sizeof(struct item_cfg),
    .validate = validate_item, .free_extra = free_item
};

static const struct md_cfg_key adj_keys[] = {
    { .name = "namespace", .type = MD_CFG_STR, .off = AOFF(namespace), .max = 253,
      .flags = MD_CFG_REQUIRED, .check = check_nonempty, .help = "the tenant (namespace)" },
    { .name = "percent", .type = MD_CFG_SCALAR, .off = AOFF(percent_nanos),
      .flags = MD_CFG_REQUIRED, .conv = conv_percent,
      .help = "markup (> 0) or discount (< 0) in percent, -100..1000" },
    END,
};
static const struct md_cfg_section adj_section = {
    .name = "adjustments[]", .keys = adj_keys, .size = sizeof(struct adj_cfg)
};

static const struct md_cfg_key model_keys[] = {
    { .name = "name", .type = MD_CFG_STR, .off = MOFF(name), .max = MD_PRICING_NAME_MAX,
      .flags = MD_CFG_REQUIRED, .check = check_name, .help = "unique name of the model" },
    { .name = "currency", .type = MD_CFG_STR, .off = MOFF(currency), .max = 3,
      .flags = MD_CFG_REQUIRED, .check = check_currency, .help = "ISO 4217 code" },
    { .name = "clusters", .type = MD_CFG_STRLIST, .off = MOFF(clusters),
      .max = MD_PRICING_CLUSTERS_MAX, .flags = MD_CFG_REQUIRED, .check = check_nonempty,
      .help = "linked clusters (not empty)" },
    { .name = "effective_from", .type = MD_CFG_SCALAR, .off = MOFF(from),
      .flags = MD_CFG_REQUIRED, .conv = conv_day, .help = "first day, YYYY-MM-DD (inclusive)" },
    { .name = "effective_to", .type = MD_CFG_SCALAR, .off = MOFF(to), .conv = conv_day,
      .help = "end day, YYYY-MM-DD (exclusive); absent: open-ended" },
    { .name = "cache_included_in_input", .type = MD_CFG_BOOL, .off = MOFF(cache_included),
      .def = "true", .help = "cached and cache-creation tokens are part of input" },
    { .name = "providers", .type = MD_CFG_STRMAP, .off = MOFF(providers),
      .max = MD_PRICING_PROVIDERS_MAX,
      .help = "per-provider cache_included_in_input (name or glob: true|false)" },
    { .name = "adjustments", .type = MD_CFG_LIST, .off = MOFF(adjustments),
      .max = MD_PRICING_ADJUST_MAX, .sub = &adj_section,
      .help = "per-namespace markup or discount" },
    { .name = "items", .type = MD_CFG_LIST, .off = MOFF(items), .max = MD_PRICING_ITEMS_MAX,
      .flags = MD_CFG_REQUIRED, .sub = &item_section, .help = "prices; first match wins" },
    END,
};
static const struct md_cfg_section model_section = {
    .name = "pricing_models[]", .keys = model_keys, .size = sizeof(struct model_cfg),
    .validate = validate_model, .free_extra = free_model
};

static const struct md_cfg_key doc_keys[] = {
    { .name = "pricing_models", .type = MD_CFG_LIST, .off = offsetof(struct doc_cfg, models),
      .max = MD_PRICING_MODELS_MAX, .flags = MD_CFG_REQUIRED, .sub = &model_section,
      .help = "pricing models" },
    END,
};
static const struct md_cfg_section doc_section = {
    .name = "", .keys = doc_keys, .size = sizeof(struct doc_cfg), .validate = validate_doc
};

/* ---- patterns ---- */

/* Glob over the whole string: '*' any run, '?' one byte.  Iterative with a
 * single backtrack point, so O(len(p) * len(s)) at worst, never exponential. */
static int
glob_match(const char *p, const char *s)
{
    const char *star = NULL, *retry = NULL;

    while (*s != '\0') {
        if (*p == '*') {
            star = p++;
            retry = s;
        } else if (*p == '?' || *p == *s) {
            p++;
            s++;
        } else if (star != NULL) {
            p = star + 1;
            s = ++retry;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static void
free_item(void *obj)
{
    struct item_cfg *it = obj;

    if (it->pats == NULL)
        return;
    for (size_t i = 0; i < it->pat_count; i++)
        pcre2_code_free(it->pats[i].re);
    md_free(it->pats);
    it->pats = NULL;
    it->pat_count = 0;
}

static void
free_model(void *obj)
{
    struct model_cfg *m = obj;

    md_free(m->adj_sorted);
    m->adj_sorted = NULL;
}

static int
cmp_adj(const void *x, const void *y)
{
    const struct adj_cfg *const *p = x, *const *q = y;

    return strcmp((*p)->namespace, (*q)->namespace);
}

static int
cmp_adj_key(const void *key, const void *y)
{
    const struct adj_cfg *const *q = y;

    return strcmp(key, (*q)->namespace);
}

static void
validate_item(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct item_cfg *it = obj;
    int models = md_cfgtab_key_node(c, node, "models", 1);
    unsigned any = 0;
    char epath[400];

    for (int t = 0; t < MD_TOK_TYPES; t++)
        any |= (unsigned)it->price[t].set;
    if (!any)
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "per_million", 1), path,
            "per_million has no price (set at least one of input, cached_input, "
            "cache_creation_input, output, reasoning)");
    if (it->models.count == 0) {
        md_cfgtab_error(c, models, path, "models is empty: the item would match nothing");
        return;
    }
    it->pats = md_calloc(it->models.count, sizeof(*it->pats));
    if (it->pats == NULL) {
        md_cfgtab_error(c, node, path, "out of memory");
        return;
    }
    it->pat_count = it->models.count;
    for (size_t i = 0; i < it->models.count; i++) {
        const char *m = it->models.v[i];
        struct pattern *pt = &it->pats[i];
        PCRE2_SIZE off = 0;
        int errcode = 0;

        if (strncmp(m, "re:", 3) != 0) {
            pt->kind = strpbrk(m, "*?") != NULL ? PAT_GLOB : PAT_EXACT;
            continue;
        }
        pt->kind = PAT_REGEX;
        /* anchored at both ends like Prometheus relabelling: "re:gpt-4o"
         * means exactly gpt-4o, not every name containing it */
        pt->re = pcre2_compile((PCRE2_SPTR)(m + 3), PCRE2_ZERO_TERMINATED,
            PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
            &errcode, &off, NULL);
        if (pt->re == NULL) {
            PCRE2_UCHAR msg[160];

            if (pcre2_get_error_message(errcode, msg, sizeof(msg)) < 0)
                (void)snprintf((char *)msg, sizeof(msg), "error %d", errcode);
            (void)snprintf(epath, sizeof(epath), "%.200s.models[%zu]", path, i);
            md_cfgtab_error(c, md_cfgtab_item_node(c, models, i), epath,
                "\"%.80s\": regex does not compile at offset %zu: %s", m, (size_t)off,
                (const char *)msg);
            continue;
        }
        /* JIT when the platform has it; the interpreter otherwise */
        (void)pcre2_jit_compile(pt->re, PCRE2_JIT_COMPLETE);
    }
}

/* Duplicate detection sorts references instead of comparing all pairs, so a
 * large document (thousands of items or adjustments) validates in
 * O(n log n).  a and b locate the string (item and pattern index, model and
 * cluster index...); within equal strings the first in file order is the
 * original and every later one is reported. */
struct ref {
    const char *s;
    size_t      a, b;
    int32_t     from, to;       /* overlap check only */
};

static int
cmp_ref(const void *x, const void *y)
{
    const struct ref *p = x, *q = y;
    int c = strcmp(p->s, q->s);

    if (c != 0)
        return c;
    if (p->from != q->from)
        return p->from < q->from ? -1 : 1;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return p->b < q->b ? -1 : (p->b > q->b);
}

static int32_t
end_day(const struct model_cfg *m)
{
    return m->to.set ? m->to.day : INT32_MAX;
}

static void
validate_model(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct model_cfg *m = obj;
    struct item_cfg *items = m->items.v;
    struct adj_cfg *adj = m->adjustments.v;
    int clusters = md_cfgtab_key_node(c, node, "clusters", 1);
    int adjs = md_cfgtab_key_node(c, node, "adjustments", 1);
    int itemsn = md_cfgtab_key_node(c, node, "items", 1);
    size_t npat = 0, n, cap;
    struct ref *r;
    char epath[400];

    /* an allocation that failed inside cfgtab leaves NULL strings behind and
     * fails the load anyway: nothing to cross-check then */
    if (m->name == NULL || m->currency == NULL)
        return;
    for (size_t i = 0; i < m->adjustments.count; i++)
        if (adj[i].namespace == NULL)
            return;
    if (m->clusters.count == 0)
        md_cfgtab_error(c, clusters, path,
            "clusters is empty: a pricing model linked to no cluster bills nothing");
    if (m->to.set && m->to.day <= m->from.day)
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "effective_to", 1), path,
            "effective_to must be after effective_from (it is exclusive)");
    if (m->items.count == 0)
        md_cfgtab_error(c, itemsn, path, "items is empty: the model would price nothing");
    for (size_t i = 0; i < m->providers.count; i++) {
        const char *v = m->providers.vals[i];

        if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
            continue;
        (void)snprintf(epath, sizeof(epath), "%.200s.providers.%.60s", path, m->providers.keys[i]);
        md_cfgtab_error(c, md_cfgtab_key_node(c, md_cfgtab_key_node(c, node, "providers", 1),
            m->providers.keys[i], 1), epath,
            "\"%.40s\" is not true or false (is cache included in input?)", v);
    }
    for (size_t i = 0; i < m->items.count; i++)
        npat += items[i].models.count;
    cap = npat;
    if (cap < m->clusters.count)
        cap = m->clusters.count;
    if (cap < m->adjustments.count)
        cap = m->adjustments.count;
    if (cap == 0)
        return;
    r = md_calloc(cap, sizeof(*r));
    if (r == NULL) {
        md_cfgtab_error(c, node, path, "out of memory");
        return;
    }
    for (size_t i = 0; i < m->clusters.count; i++)
        r[i] = (struct ref){ .s = m->clusters.v[i], .a = i };
    qsort(r, m->clusters.count, sizeof(*r), cmp_ref);
    for (size_t i = 1, first = 0; i < m->clusters.count; i++) {
        if (strcmp(r[i].s, r[first].s) != 0) {
            first = i;
            continue;
        }
        (void)snprintf(epath, sizeof(epath), "%.200s.clusters[%zu]", path, r[i].a);
        md_cfgtab_error(c, md_cfgtab_item_node(c, clusters, r[i].a), epath,
            "\"%s\" is listed twice", r[i].s);
    }
    for (size_t i = 0; i < m->adjustments.count; i++)
        r[i] = (struct ref){ .s = adj[i].namespace, .a = i };
    qsort(r, m->adjustments.count, sizeof(*r), cmp_ref);
    for (size_t i = 1, first = 0; i < m->adjustments.count; i++) {
        if (strcmp(r[i].s, r[first].s) != 0) {
            first = i;
            continue;
        }
        (void)snprintf(epath, sizeof(epath), "%.200s.adjustments[%zu].namespace", path, r[i].a);
        md_cfgtab_error(c, md_cfgtab_key_node(c, md_cfgtab_item_node(c, adjs, r[i].a),
            "namespace", 1), epath, "\"%s\" already has adjustments[%zu]", r[i].s, r[first].a);
    }
    if (m->adjustments.count > 0) {
        /* lookups bsearch the namespace: the rater asks once per usage key */
        m->adj_sorted = md_calloc(m->adjustments.count, sizeof(*m->adj_sorted));
        if (m->adj_sorted == NULL) {
            md_cfgtab_error(c, node, path, "out of memory");
        } else {
            for (size_t i = 0; i < m->adjustments.count; i++)
                m->adj_sorted[i] = &adj[i];
            qsort(m->adj_sorted, m->adjustments.count, sizeof(*m->adj_sorted), cmp_adj);
        }
    }
    /* a pattern repeated in one model can never match the second time */
    n = 0;
    for (size_t i = 0; i < m->items.count; i++)
        for (size_t k = 0; k < items[i].models.count; k++)
            r[n++] = (struct ref){ .s = items[i].models.v[k], .a = i, .b = k };
    qsort(r, n, sizeof(*r), cmp_ref);
    for (size_t i = 1, first = 0; i < n; i++) {
        if (strcmp(r[i].s, r[first].s) != 0) {
            first = i;
            continue;
        }
        (void)snprintf(epath, sizeof(epath), "%.200s.items[%zu].models[%zu]", path, r[i].a,
            r[i].b);
        md_cfgtab_error(c, md_cfgtab_item_node(c, md_cfgtab_key_node(c,
            md_cfgtab_item_node(c, itemsn, r[i].a), "models", 1), r[i].b), epath,
            "\"%.80s\" is already items[%zu].models[%zu]: it could never match here",
            r[i].s, r[first].a, r[first].b);
    }
    md_free(r);
}

static void
validate_doc(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct doc_cfg *d = obj;
    struct model_cfg *m = d->models.v;
    int list = md_cfgtab_key_node(c, node, "pricing_models", 1);
    size_t n = 0;
    struct ref *r;
    char epath[64];

    (void)path;
    for (size_t i = 0; i < d->models.count; i++) {
        if (m[i].name == NULL)
            return;     /* a failed allocation; the load fails anyway */
        n += m[i].clusters.count;
    }
    r = md_calloc(n > d->models.count ? n : d->models.count, sizeof(*r));
    if (r == NULL) {
        if (n > 0 || d->models.count > 0)
            md_cfgtab_error(c, node, "", "out of memory");
        return;
    }
    for (size_t i = 0; i < d->models.count; i++)
        r[i] = (struct ref){ .s = m[i].name, .a = i };
    qsort(r, d->models.count, sizeof(*r), cmp_ref);
    for (size_t i = 1, first = 0; i < d->models.count; i++) {
        if (strcmp(r[i].s, r[first].s) != 0) {
            first = i;
            continue;
        }
        (void)snprintf(epath, sizeof(epath), "pricing_models[%zu].name", r[i].a);
        md_cfgtab_error(c, md_cfgtab_key_node(c, md_cfgtab_item_node(c, list, r[i].a), "name", 1),
            epath, "\"%s\" is already pricing_models[%zu]", r[i].s, r[first].a);
    }
    /* one model per (cluster, day): sorted by cluster and start, a model
     * overlaps when it starts before the latest end seen in its cluster */
    n = 0;
    for (size_t i = 0; i < d->models.count; i++)
        for (size_t k = 0; k < m[i].clusters.count; k++)
            r[n++] = (struct ref){ .s = m[i].clusters.v[k], .a = i, .b = k,
                                   .from = m[i].from.day, .to = end_day(&m[i]) };
    qsort(r, n, sizeof(*r), cmp_ref);
    for (size_t i = 1, last = 0; i < n; i++) {
        char f[16];

        if (strcmp(r[i].s, r[last].s) != 0) {
            last = i;
            continue;
        }
        if (r[i].from >= r[last].to) {
            last = i;
            continue;
        }
        md_pricing_day_fmt(r[i].from, f, sizeof(f));
        (void)snprintf(epath, sizeof(epath), "pricing_models[%zu].effective_from", r[i].a);
        md_cfgtab_error(c, md_cfgtab_key_node(c, md_cfgtab_item_node(c, list, r[i].a),
            "effective_from", 1), epath,
            "overlaps pricing_models[%zu] (\"%s\") on cluster \"%s\" from %s: "
            "one model per cluster and day", r[last].a, m[r[last].a].name, r[i].s, f);
        if (r[i].to > r[last].to)
            last = i;
    }
    md_free(r);
}

/* ---- load ---- */

int
md_pricing_load_buf(const char *name, const char *data, size_t len, struct md_pricing **out,
    struct md_cfg_errors *errs)
{
    struct md_pricing *p = md_calloc(1, sizeof(*p));
    int rc;

    if (p == NULL)
        return MD_ENOMEM;
    rc = md_cfgtab_load(name, data, len, &doc_section, &p->doc, errs);
    if (rc == MD_OK) {
        p->mctx = pcre2_match_context_create(NULL);
        if (p->mctx == NULL)
            rc = MD_ENOMEM;
        else
            (void)pcre2_set_match_limit(p->mctx, MD_PRICING_REGEX_MATCH_LIMIT);
    }
    if (rc != MD_OK) {
        md_pricing_free(p);
        return rc;
    }
    *out = p;
    return MD_OK;
}

int
md_pricing_load(const char *path, struct md_pricing **out, struct md_cfg_errors *errs)
{
    struct md_cfg_errors local;
    char *data = NULL;
    size_t len = 0;
    int rc;

    if (errs == NULL)
        errs = &local;
    rc = md_cfgtab_read_file(path, &data, &len, errs);
    if (rc != MD_OK)
        return rc;
    rc = md_pricing_load_buf(path, data, len, out, errs);
    md_free(data);
    return rc;
}

void
md_pricing_free(struct md_pricing *p)
{
    if (p == NULL)
        return;
    md_cfgtab_free(&doc_section, &p->doc);
    pcre2_match_context_free(p->mctx);
    md_free(p);
}

size_t
md_pricing_model_count(const struct md_pricing *p)
{
    return p->doc.models.count;
}

/* ---- lookup ---- */

static int
pattern_match(const struct md_pricing *p, const struct pattern *pt, const char *pat,
    const char *s, pcre2_match_data **md)
{
    int rc;

    switch (pt->kind) {
    case PAT_EXACT:
        return strcmp(pat, s) == 0;
    case PAT_GLOB:
        return glob_match(pat, s);
    case PAT_REGEX:
        if (*md == NULL) {
            *md = pcre2_match_data_create(1, NULL);
            if (*md == NULL)
                return 0;   /* out of memory: no match, so unpriced, not lost */
        }
        rc = pcre2_match(pt->re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, *md, p->mctx);
        return rc >= 0;
    }
    return 0;
}

int
md_pricing_lookup(const struct md_pricing *p, const char *cluster, int32_t day,
    const char *provider, const char *model, const char *namespace,
    struct md_price_match *out)
{
    const struct model_cfg *m = NULL, *models = p->doc.models.v;
    pcre2_match_data *md = NULL;
    const struct item_cfg *items;

    memset(out, 0, sizeof(*out));
    out->item = -1;
    out->cache_included = 1;   /* EAIG v0.5+ semantics when nothing applies */
    if (cluster == NULL || model == NULL)
        return MD_ENOTFOUND;
    for (size_t i = 0; i < p->doc.models.count && m == NULL; i++) {
        if (day < models[i].from.day || day >= end_day(&models[i]))
            continue;
        for (size_t j = 0; j < models[i].clusters.count; j++) {
            if (strcmp(models[i].clusters.v[j], cluster) == 0) {
                m = &models[i];
                break;
            }
        }
    }
    if (m == NULL)
        return MD_ENOTFOUND;
    out->pricing_model = m->name;
    out->currency = m->currency;
    out->cache_included = m->cache_included;
    for (size_t i = 0; provider != NULL && i < m->providers.count; i++) {
        if (glob_match(m->providers.keys[i], provider)) {
            out->cache_included = strcmp(m->providers.vals[i], "true") == 0;
            break;
        }
    }
    if (namespace != NULL && m->adj_sorted != NULL) {
        struct adj_cfg *const *a = bsearch(namespace, m->adj_sorted, m->adjustments.count,
            sizeof(*m->adj_sorted), cmp_adj_key);

        if (a != NULL)
            out->adjust_percent_nanos = (*a)->percent_nanos;
    }
    items = m->items.v;
    for (size_t i = 0; i < m->items.count && out->item < 0; i++) {
        for (size_t k = 0; k < items[i].models.count; k++) {
            const char *pat = items[i].models.v[k];

            if (!pattern_match(p, &items[i].pats[k],
                    items[i].pats[k].kind == PAT_REGEX ? pat + 3 : pat, model, &md))
                continue;
            out->item = (long)i;
            out->pattern = pat;
            for (int t = 0; t < MD_TOK_TYPES; t++) {
                if (!items[i].price[t].set)
                    continue;
                out->priced_mask |= 1u << t;
                out->price_nanos[t] = items[i].price[t].nanos;
            }
            break;
        }
    }
    pcre2_match_data_free(md);
    return out->item >= 0 ? MD_OK : MD_ENOTFOUND;
}

/* ---- the pricing rule ---- */

static int
add_line(const struct md_price_match *m, enum md_token_type t, uint64_t tokens,
    struct md_price_result *out, struct md_err *err)
{
    struct md_price_line *l;
    int rc;

    if (tokens == 0)
        return MD_OK;
    l = &out->lines[out->line_count++];
    memset(l, 0, sizeof(*l));
    l->token_type = t;
    l->tokens = tokens;
    if (m->item < 0 || !(m->priced_mask & (1u << t))) {
        if (md_add_u64(out->unpriced_tokens, tokens, &out->unpriced_tokens) != MD_OK)
            return md_err_set(err, MD_ELIMIT, "unpriced token sum overflows");
        return MD_OK;
    }
    l->priced = 1;
    l->list_unit_price_nanos = m->price_nanos[t];
    rc = md_money_apply_percent(m->price_nanos[t], m->adjust_percent_nanos,
        &l->unit_price_nanos, err);
    if (rc == MD_OK)
        rc = md_money_line_amount(tokens, l->unit_price_nanos, &l->amount_nanos, err);
    if (rc == MD_OK && md_add_i64(out->amount_nanos, l->amount_nanos, &out->amount_nanos) != MD_OK)
        rc = md_err_set(err, MD_ELIMIT, "sum of lines overflows");
    return rc;
}

int
md_pricing_price(const struct md_price_match *m, const uint64_t tokens[MD_TOK_TYPES],
    struct md_price_result *out, struct md_err *err)
{
    uint64_t n[MD_TOK_TYPES], carved = 0;
    int rc = MD_OK;

    memset(out, 0, sizeof(*out));
    memcpy(n, tokens, sizeof(n));
    if (m->cache_included) {
        uint64_t both;

        /* the data itself says cache > input: report it whatever is priced */
        if (md_add_u64(tokens[MD_TOK_CACHED_INPUT], tokens[MD_TOK_CACHE_CREATION_INPUT],
                &both) != MD_OK || both > tokens[MD_TOK_INPUT])
            out->anomalies |= MD_PRICE_ANOMALY_INPUT;
        for (int t = MD_TOK_CACHED_INPUT; t <= MD_TOK_CACHE_CREATION_INPUT; t++) {
            if (m->item >= 0 && (m->priced_mask & (1u << t))) {
                /* has its own price: carved out of input */
                if (md_add_u64(carved, tokens[t], &carved) != MD_OK)
                    carved = UINT64_MAX;
            } else {
                n[t] = 0;   /* no own price: stays inside input */
            }
        }
        n[MD_TOK_INPUT] = tokens[MD_TOK_INPUT] >= carved ? tokens[MD_TOK_INPUT] - carved : 0;
    }
    if (tokens[MD_TOK_REASONING] > tokens[MD_TOK_OUTPUT])
        out->anomalies |= MD_PRICE_ANOMALY_OUTPUT;
    if (m->item >= 0 && (m->priced_mask & (1u << MD_TOK_REASONING)))
        n[MD_TOK_OUTPUT] = tokens[MD_TOK_OUTPUT] >= tokens[MD_TOK_REASONING]
            ? tokens[MD_TOK_OUTPUT] - tokens[MD_TOK_REASONING] : 0;
    else
        n[MD_TOK_REASONING] = 0;    /* inside output, no line of its own */
    for (int t = 0; t < MD_TOK_TYPES && rc == MD_OK; t++)
        rc = add_line(m, (enum md_token_type)t, n[t], out, err);
    return rc;
}

/* ---- canonical JSON ---- */

static json_t *
money_json(int64_t nanos)
{
    char buf[MD_MONEY_FMT_MAX];

    (void)md_money_fmt(nanos, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *
day_json(int32_t day)
{
    char buf[16];

    md_pricing_day_fmt(day, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *
strlist_json(const struct md_strlist *l)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < l->count; i++) {
        if (json_array_append_new(a, json_string(l->v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *
model_json(const struct model_cfg *m)
{
    json_t *o = json_object(), *prov = json_object(), *adj = json_array(), *items = json_array();
    int bad = o == NULL || prov == NULL || adj == NULL || items == NULL;

    for (size_t i = 0; !bad && i < m->providers.count; i++)
        bad |= json_object_set_new(prov, m->providers.keys[i],
            json_boolean(strcmp(m->providers.vals[i], "true") == 0)) != 0;
    for (size_t i = 0; !bad && i < m->adjustments.count; i++) {
        const struct adj_cfg *a = (const struct adj_cfg *)m->adjustments.v + i;

        bad |= json_array_append_new(adj, json_pack("{s:s, s:o}", "namespace", a->namespace,
            "percent", money_json(a->percent_nanos))) != 0;
    }
    for (size_t i = 0; !bad && i < m->items.count; i++) {
        const struct item_cfg *it = (const struct item_cfg *)m->items.v + i;
        json_t *pm = json_object();

        for (int t = 0; pm != NULL && t < MD_TOK_TYPES; t++)
            if (it->price[t].set)
                bad |= json_object_set_new(pm, tok_names[t], money_json(it->price[t].nanos)) != 0;
        bad |= json_array_append_new(items, json_pack("{s:o, s:o}", "models",
            strlist_json(&it->models), "per_million", pm)) != 0;
    }
    if (!bad)
        bad |= json_object_set_new(o, "name", json_string(m->name)) != 0 ||
            json_object_set_new(o, "currency", json_string(m->currency)) != 0 ||
            json_object_set_new(o, "clusters", strlist_json(&m->clusters)) != 0 ||
            json_object_set_new(o, "effective_from", day_json(m->from.day)) != 0 ||
            (m->to.set && json_object_set_new(o, "effective_to", day_json(m->to.day)) != 0) ||
            json_object_set_new(o, "cache_included_in_input",
                json_boolean(m->cache_included)) != 0 ||
            json_object_set(o, "providers", prov) != 0 ||
            json_object_set(o, "adjustments", adj) != 0 ||
            json_object_set(o, "items", items) != 0;
    json_decref(prov);
    json_decref(adj);
    json_decref(items);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void *
md_pricing_to_json(const struct md_pricing *p)
{
    json_t *arr = json_array(), *root;

    for (size_t i = 0; arr != NULL && i < p->doc.models.count; i++) {
        if (json_array_append_new(arr, model_json((const struct model_cfg *)p->doc.models.v + i))
            != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    if (arr == NULL)
        return NULL;
    root = json_object();
    if (root == NULL || json_object_set_new(root, "pricing_models", arr) != 0) {
        json_decref(root);
        return NULL;
    }
    return root;
}
