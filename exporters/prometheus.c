/* prometheus.c: the pure half of /metrics (see prometheus.h): Accept
 * negotiation, rendering a usage snapshot, converting text families to
 * OpenMetrics.  No state, no I/O, no locks; prometheus_serve.c caches and
 * serves.  Invariant: the cardinality cut keeps whole snapshot entries in
 * first-seen order and reports every line it leaves out. */
#include "prometheus.h"

#include <string.h>
#include <strings.h>

#include "../meterd/usage_snapshot.h"
#include "prom_text.h"

static const char *const ctypes[MD_PROMEXP_FORMATS] = {
    "text/plain; version=0.0.4; charset=utf-8",
    "application/openmetrics-text; version=1.0.0; charset=utf-8",
};

const char *
md_promexp_content_type(enum md_promexp_format f)
{
    return ctypes[f == MD_PROMEXP_OPENMETRICS];
}

/* ---- Accept negotiation ---- */

static int
trim_eq(const char *p, size_t n, const char *word)
{
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return n == strlen(word) && strncasecmp(p, word, n) == 0;
}

/* q of one media range's parameters "; a=b; q=0.5" (1000 = 1.0). */
static int
q_of(const char *p, size_t n)
{
    while (n > 0) {
        const char *semi = memchr(p, ';', n);
        size_t len = semi ? (size_t)(semi - p) : n;
        const char *eq = memchr(p, '=', len);

        if (eq != NULL && trim_eq(p, (size_t)(eq - p), "q")) {
            const char *v = eq + 1;
            size_t vl = len - (size_t)(v - p);
            int q = 0, scale = 1000, seen = 0, dot = 0;

            for (size_t i = 0; i < vl; i++) {
                if (v[i] == ' ' || v[i] == '\t')
                    continue;
                if (v[i] == '.' && !dot) {
                    dot = 1;
                    continue;
                }
                if (v[i] < '0' || v[i] > '9')
                    return 0;          /* malformed q: do not pick this range */
                seen = 1;
                if (!dot) {
                    q = q * 10 + (v[i] - '0');
                    if (q > 1)
                        return 1000;
                } else if (scale > 1) {
                    scale /= 10;
                    q = q * 10 + (v[i] - '0');
                }
            }
            if (!seen)
                return 0;
            while (scale > 1) {
                q *= 10;
                scale /= 10;
            }
            return q > 1000 ? 1000 : q;
        }
        if (semi == NULL)
            break;
        n -= len + 1;
        p = semi + 1;
    }
    return 1000;
}

enum md_promexp_format
md_promexp_negotiate(const char *accept)
{
    int q_om = -1, q_other = -1;
    const char *p = accept;

    if (accept == NULL)
        return MD_PROMEXP_TEXT;
    /* a header longer than this is not a scraper's: text */
    if (strnlen(accept, 4097) > 4096)
        return MD_PROMEXP_TEXT;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *semi = memchr(p, ';', len);
        size_t tl = semi ? (size_t)(semi - p) : len;
        int q = semi ? q_of(semi + 1, len - tl - 1) : 1000;

        if (trim_eq(p, tl, "application/openmetrics-text")) {
            if (q > q_om)
                q_om = q;
        } else if (trim_eq(p, tl, "text/plain") || trim_eq(p, tl, "*/*") ||
                   trim_eq(p, tl, "text/*")) {
            if (q > q_other)
                q_other = q;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return q_om > 0 && q_om >= q_other ? MD_PROMEXP_OPENMETRICS : MD_PROMEXP_TEXT;
}

/* ---- usage families ---- */

int
md_promexp_put_nanos(struct md_buf *b, int64_t nanos)
{
    uint64_t u = nanos < 0 ? (uint64_t)0 - (uint64_t)nanos : (uint64_t)nanos;
    uint64_t whole = u / 1000000000u, frac = u % 1000000000u;
    char tmp[48];
    size_t n = 0;
    char digits[24];
    size_t dn = 0;

    if (nanos < 0)
        tmp[n++] = '-';
    do {
        digits[dn++] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole > 0);
    while (dn > 0)
        tmp[n++] = digits[--dn];
    if (frac != 0) {
        int w = 9;

        while (frac % 10 == 0) {
            frac /= 10;
            w--;
        }
        tmp[n++] = '.';
        for (int i = w - 1; i >= 0; i--) {
            tmp[n + (size_t)i] = (char)('0' + frac % 10);
            frac /= 10;
        }
        n += (size_t)w;
    }
    return md_buf_append(b, tmp, n);
}

static int
put_u64(struct md_buf *b, uint64_t v)
{
    char tmp[24];
    size_t n = sizeof(tmp);

    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    return md_buf_append(b, tmp + n, sizeof(tmp) - n);
}

static int
is_input(const struct md_usnap_series *s)
{
    return s->len[5] == 5 && memcmp(s->val[5], "input", 5) == 0;
}

/* Sample lines one snapshot entry produces. */
static unsigned
lines_of(const struct md_usnap_series *s)
{
    if (s->family == MD_USNAP_USAGE)
        return 1u + (is_input(s) || s->requests > 0);
    return 1;
}

static int
family_header(struct md_buf *b, enum md_promexp_format f, const char *name, const char *type,
    const char *help)
{
    size_t n = strlen(name);

    if (f == MD_PROMEXP_OPENMETRICS && strcmp(type, "counter") == 0 && n > 6 &&
        strcmp(name + n - 6, "_total") == 0) {
        char fam[128];

        if (n - 6 >= sizeof(fam))
            return MD_ELIMIT;
        memcpy(fam, name, n - 6);
        fam[n - 6] = '\0';
        return md_prom_family(b, fam, type, help);
    }
    return md_prom_family(b, name, type, help);
}

static int
put_series(struct md_buf *b, const char *name, const struct md_usnap_series *s)
{
    const char *const *ln = md_usnap_label_names[s->family];
    int rc = md_buf_puts(b, name);

    if (rc == MD_OK)
        rc = md_buf_putc(b, '{');
    for (unsigned i = 0; i < s->nlabels && rc == MD_OK; i++) {
        if (i > 0)
            rc = md_buf_putc(b, ',');
        if (rc == MD_OK)
            rc = md_buf_puts(b, ln[i]);
        if (rc == MD_OK)
            rc = md_buf_append(b, "=\"", 2);
        if (rc == MD_OK)
            rc = md_prom_put_label_value(b, s->val[i], s->len[i]);
        if (rc == MD_OK)
            rc = md_buf_putc(b, '"');
    }
    if (rc == MD_OK)
        rc = md_buf_append(b, "} ", 2);
    return rc;
}

enum col { C_TOKENS, C_REQUESTS, C_COST, C_UNPRICED, C_COUNT };

static const struct {
    const char *name, *help;
} cols[C_COUNT] = {
    [C_TOKENS] = { "meterd_tokens_total",
        "Tokens used, by tenant, model and token type, exactly as stored (cumulative "
        "over the usage the database holds; token types overlap: see the README)." },
    [C_REQUESTS] = { "meterd_requests_total",
        "Requests, counted once per request from the input token type (token_type=\"input\")." },
    [C_COST] = { "meterd_cost_total",
        "Rated cost in units of the currency label (from integer nanos), by tenant and model." },
    [C_UNPRICED] = { "meterd_unpriced_tokens_total",
        "Tokens no pricing model matched (not in meterd_cost_total)." },
};

int
md_promexp_render_usage(const struct md_usnap *s, enum md_promexp_format f,
    uint64_t max_series, struct md_buf *out, struct md_promexp_stats *stats)
{
    const struct md_usnap_series *v = md_usnap_series(s);
    size_t n = md_usnap_count(s);
    uint8_t *keep = NULL;
    uint64_t exported = 0, cut = 0;
    int rc = MD_OK;

    if (n > 0) {
        keep = md_malloc(n);
        if (keep == NULL)
            return MD_ENOMEM;
    }
    /* first-seen order: the earliest series stay, later ones are cut */
    for (size_t i = 0; i < n; i++) {
        unsigned l = lines_of(&v[i]);

        keep[i] = exported + l <= max_series;
        if (keep[i])
            exported += l;
        else
            cut += l;
    }
    for (int c = 0; c < C_COUNT && rc == MD_OK; c++) {
        int any = 0;

        /* a family without samples is not declared: until rating feeds cost
         * and unpriced tokens per tenant, meterd's own unlabelled
         * meterd_unpriced_tokens_total (selfmetrics.c) is the only one */
        for (size_t i = 0; i < n && !any; i++) {
            enum md_usnap_family want = c == C_COST ? MD_USNAP_COST
                : c == C_UNPRICED ? MD_USNAP_UNPRICED : MD_USNAP_USAGE;

            any = v[i].family == want;      /* declared even when cut */
        }
        if (!any && c != C_TOKENS && c != C_REQUESTS)
            continue;
        rc = family_header(out, f, cols[c].name, "counter", cols[c].help);
        for (size_t i = 0; i < n && rc == MD_OK; i++) {
            const struct md_usnap_series *e = &v[i];

            if (!keep[i])
                continue;
            switch (c) {
            case C_TOKENS:
            case C_REQUESTS:
                if (e->family != MD_USNAP_USAGE)
                    continue;
                if (c == C_REQUESTS && !(is_input(e) || e->requests > 0))
                    continue;
                rc = put_series(out, cols[c].name, e);
                if (rc == MD_OK)
                    rc = put_u64(out, c == C_TOKENS ? e->tokens : e->requests);
                break;
            case C_COST:
                if (e->family != MD_USNAP_COST)
                    continue;
                rc = put_series(out, cols[c].name, e);
                if (rc == MD_OK)
                    rc = md_promexp_put_nanos(out, e->nanos);
                break;
            default:
                if (e->family != MD_USNAP_UNPRICED)
                    continue;
                rc = put_series(out, cols[c].name, e);
                if (rc == MD_OK)
                    rc = put_u64(out, e->tokens);
                break;
            }
            if (rc == MD_OK)
                rc = md_buf_putc(out, '\n');
        }
    }
    md_free(keep);
    if (rc == MD_OK && stats != NULL) {
        stats->exported = exported;
        stats->cut = cut;
    }
    return rc;
}

/* ---- OpenMetrics conversion of the health families ---- */

static int
has_suffix(const char *p, size_t n, const char *suf)
{
    size_t sl = strlen(suf);

    return n >= sl && memcmp(p + n - sl, suf, sl) == 0;
}

/* For "# HELP name ..." or "# TYPE name type": name span and, for TYPE, the
 * type word.  0 when the line is neither. */
static int
meta_line(const char *l, size_t n, const char **name, size_t *name_len, const char **type,
    size_t *type_len)
{
    const char *sp;

    if (n < 8 || (memcmp(l, "# HELP ", 7) != 0 && memcmp(l, "# TYPE ", 7) != 0))
        return 0;
    *name = l + 7;
    sp = memchr(*name, ' ', n - 7);
    *name_len = sp ? (size_t)(sp - *name) : n - 7;
    *type = sp ? sp + 1 : l + n;
    *type_len = (size_t)(l + n - *type);
    return l[2] == 'H' ? 1 : 2;
}

/* The OpenMetrics family name and type for a 0.0.4 family. */
static void
om_family(const char *name, size_t nl, const char *type, size_t tl, size_t *fam_len,
    const char **om_type, size_t *om_type_len)
{
    *fam_len = nl;
    *om_type = type;
    *om_type_len = tl;
    /* a gauge named x_info stays a gauge: valid in both formats, and the
     * 0.0.4 parsers (promtool check metrics) know no "info" type */
    if (tl == 7 && memcmp(type, "counter", 7) == 0 && has_suffix(name, nl, "_total"))
        *fam_len = nl - 6;
}

int
md_promexp_om_convert(const char *in, size_t len, struct md_buf *out)
{
    const char *p = in, *end = in + len;
    int rc = MD_OK;

    while (p < end && rc == MD_OK) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *name, *type, *ot;
        size_t name_len, type_len, fam_len, ot_len;
        int kind = meta_line(p, n, &name, &name_len, &type, &type_len);

        if (kind == 1) {
            /* HELP precedes TYPE: take the type from the next line */
            const char *q = nl ? nl + 1 : end;
            const char *qnl = q < end ? memchr(q, '\n', (size_t)(end - q)) : NULL;
            size_t qn = q < end ? (qnl ? (size_t)(qnl - q) : (size_t)(end - q)) : 0;
            const char *n2, *t2;
            size_t n2l, t2l;

            fam_len = name_len;
            if (meta_line(q, qn, &n2, &n2l, &t2, &t2l) == 2 && n2l == name_len &&
                memcmp(n2, name, name_len) == 0)
                om_family(name, name_len, t2, t2l, &fam_len, &ot, &ot_len);
            rc = md_buf_append(out, p, 7);
            if (rc == MD_OK)
                rc = md_buf_append(out, name, fam_len);
            if (rc == MD_OK)
                rc = md_buf_append(out, name + name_len, n - 7 - name_len);
        } else if (kind == 2) {
            om_family(name, name_len, type, type_len, &fam_len, &ot, &ot_len);
            rc = md_buf_append(out, p, 7);
            if (rc == MD_OK)
                rc = md_buf_append(out, name, fam_len);
            if (rc == MD_OK)
                rc = md_buf_putc(out, ' ');
            if (rc == MD_OK)
                rc = md_buf_append(out, ot, ot_len);
        } else {
            rc = md_buf_append(out, p, n);
        }
        if (rc == MD_OK && nl != NULL)
            rc = md_buf_putc(out, '\n');
        p = nl ? nl + 1 : end;
    }
    return rc;
}
