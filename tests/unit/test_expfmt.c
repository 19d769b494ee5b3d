/* test_expfmt.c: the exposition parser against the EAIG fixtures' exact
 * totals (numbers typed in from tests/fixtures/extproc README, i.e.
 * ../shared/extproc/README.md), a grammar table derived from the Prometheus
 * text format 0.0.4 and OpenMetrics 1.0 specifications, limits, the
 * 100,000-label line, Content-Type parsing, the family filter, and the round
 * trip parse -> exporters/prom_text -> parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "expfmt.h"
#include "exporters/prom_text.h"
#include "normalize.h"
#include "util.h"
#include "../common/fixture.h"

/* ---- helpers ---- */

static int
count_fn(void *arg, const struct md_sample *s)
{
    (void)s;
    (*(size_t *)arg)++;
    return 0;
}

struct first {
    size_t n;
    double value;
    int has_ts;
    int64_t ts_ms;
    char name[128];
    char l0name[64], l0value[64];
    size_t l0vlen;
    size_t nlabels;
    enum md_metric_type type;
};

static int
first_fn(void *arg, const struct md_sample *s)
{
    struct first *f = arg;

    if (f->n++ == 0) {
        f->value = s->value;
        f->has_ts = s->has_ts;
        f->ts_ms = s->ts_ms;
        f->type = s->type;
        f->nlabels = s->nlabels;
        (void)snprintf(f->name, sizeof(f->name), "%.*s", (int)s->name.len, s->name.p);
        if (s->nlabels > 0) {
            (void)snprintf(f->l0name, sizeof(f->l0name), "%.*s", (int)s->labels[0].name.len,
                s->labels[0].name.p);
            f->l0vlen = s->labels[0].value.len < sizeof(f->l0value) ?
                s->labels[0].value.len : sizeof(f->l0value);
            memcpy(f->l0value, s->labels[0].value.p, f->l0vlen);
        }
    }
    return 0;
}

/* ---- fixture totals ---- */

#define KEYS_MAX 64

struct totals {
    struct { char k[320]; uint64_t v; } e[KEYS_MAX];
    size_t n;
    size_t samples;
    int non_integer;
};

static void
tot_add(struct totals *t, const char *key, double v)
{
    size_t i;

    if (v != floor(v) || v < 0) {
        t->non_integer = 1;
        return;
    }
    for (i = 0; i < t->n; i++)
        if (strcmp(t->e[i].k, key) == 0)
            break;
    if (i == t->n) {
        assert_true(t->n < KEYS_MAX);
        (void)snprintf(t->e[i].k, sizeof(t->e[i].k), "%s", key);
        t->e[i].v = 0;
        t->n++;
    }
    t->e[i].v += (uint64_t)v;
}

static uint64_t
tot_get(const struct totals *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->e[i].k, key) == 0)
            return t->e[i].v;
    return UINT64_MAX;   /* absent */
}

static void
label_value(const struct md_sample *s, const char *configured, char *out, size_t out_len)
{
    (void)snprintf(out, out_len, "-");
    for (size_t i = 0; i < s->nlabels; i++)
        if (md_normalize_label_eq(s->labels[i].name, configured))
            (void)snprintf(out, out_len, "%.*s", (int)s->labels[i].value.len,
                s->labels[i].value.p);
}

static int
totals_fn(void *arg, const struct md_sample *s)
{
    struct totals *t = arg;
    enum md_instrument inst;
    enum md_role role;
    char dept[64], tt[64], model[128], key[320];

    t->samples++;
    if (md_normalize_name(s->name, &inst, &role, NULL, 0) != MD_OK ||
        inst != MD_INST_TOKEN_USAGE)
        return 0;
    label_value(s, "department.id", dept, sizeof(dept));
    label_value(s, "gen_ai.token.type", tt, sizeof(tt));
    label_value(s, "gen_ai.request.model", model, sizeof(model));
    if (role == MD_ROLE_SUM) {
        (void)snprintf(key, sizeof(key), "dept %s %s", dept, tt);
        tot_add(t, key, s->value);
        (void)snprintf(key, sizeof(key), "model %s %s", model, tt);
        tot_add(t, key, s->value);
        (void)snprintf(key, sizeof(key), "all %s", tt);
        tot_add(t, key, s->value);
    } else if (role == MD_ROLE_COUNT && strcmp(tt, "input") == 0) {
        (void)snprintf(key, sizeof(key), "requests %s", dept);
        tot_add(t, key, s->value);
    }
    return 0;
}

static const struct { const char *key; uint64_t want; } v04_want[] = {
    /* README "Roll-up per department" (v0.4 state) */
    { "dept eng input", 48884 }, { "dept eng cached_input", 14336 },
    { "dept eng output", 7375 },
    { "dept finance input", 1309552 }, { "dept finance cached_input", 15840 },
    { "dept finance output", 2495 },
    { "dept sales input", 77870 }, { "dept sales cached_input", 4096 },
    { "dept sales output", 7400 },
    { "dept - input", 975 }, { "dept - cached_input", 0 }, { "dept - output", 212 },
    { "all input", 1437281 }, { "all cached_input", 34272 }, { "all output", 17482 },
    /* per request model: sums of the README's per-series rows, by hand */
    { "model anthropic.claude-3-5-sonnet-20240620-v1:0 input", 90260 },
    { "model anthropic.claude-3-5-sonnet-20240620-v1:0 output", 8872 },
    { "model anthropic.claude-3-5-sonnet-20240620-v1:0 cached_input", 0 },
    { "model gpt-4o-mini input", 42075 }, { "model gpt-4o-mini cached_input", 22272 },
    { "model gpt-4o-mini output", 7585 },
    { "model text-embedding-3-small input", 1300336 },
    { "model claude-3-5-haiku-20241022 input", 4610 },
    { "model claude-3-5-haiku-20241022 cached_input", 12000 },
    { "model claude-3-5-haiku-20241022 output", 1025 },
    /* README "Successful requests per department" */
    { "requests eng", 14 }, { "requests finance", 55 }, { "requests sales", 5 },
    { "requests -", 2 },
};

static const struct { const char *key; uint64_t want; } newest_want[] = {
    { "dept eng input", 48884 }, { "dept eng cached_input", 14336 },
    { "dept eng cache_creation_input", 0 }, { "dept eng output", 7375 },
    { "dept eng reasoning", 0 },
    { "dept finance input", 1333552 }, { "dept finance cached_input", 15840 },
    { "dept finance cache_creation_input", 12000 }, { "dept finance output", 2495 },
    { "dept sales input", 77870 }, { "dept sales cached_input", 4096 },
    { "dept sales output", 7400 },
    { "dept - input", 975 }, { "dept - output", 212 },
    { "all input", 1461281 }, { "all cached_input", 34272 },
    { "all cache_creation_input", 12000 }, { "all output", 17482 }, { "all reasoning", 0 },
    { "model claude-3-5-haiku-20241022 input", 28610 },
    { "model claude-3-5-haiku-20241022 cache_creation_input", 12000 },
    { "model gpt-4o-mini input", 42075 },
    { "model text-embedding-3-small input", 1300336 },
    { "model anthropic.claude-3-5-sonnet-20240620-v1:0 input", 90260 },
    { "requests eng", 14 }, { "requests finance", 55 }, { "requests sales", 5 },
    { "requests -", 2 },
};

static void
check_totals(const char *file, const char *ct, const void *want, size_t nwant)
{
    const struct { const char *key; uint64_t want; } *w = want;
    struct totals *t = calloc(1, sizeof(*t));
    struct md_expfmt_error err;
    enum md_expfmt_format fmt;
    enum md_expfmt_escaping esc;
    struct md_expfmt_opts opts = { .escaping = MD_ESC_UNDERSCORES };
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    size_t len;
    char *body = md_test_read_fixture(file, &len);
    int rc;

    md_expfmt_content_type(ct, strlen(ct), &fmt, &esc);
    opts.escaping = esc;
    rc = md_expfmt_parser_run(ps, body, len, fmt, NULL, &opts, totals_fn, t, &err);
    if (rc != MD_OK)
        fail_msg("%s:%u:%u: %s", file, err.line, err.col, err.msg);
    assert_false(t->non_integer);
    for (size_t i = 0; i < nwant; i++) {
        uint64_t got = tot_get(t, w[i].key);

        if (got != w[i].want)
            fail_msg("%s: %s: got %llu want %llu", file, w[i].key, (unsigned long long)got,
                (unsigned long long)w[i].want);
    }
    md_expfmt_parser_free(ps);
    free(body);
    free(t);
}

static void
test_fixture_totals(void **state)
{
    (void)state;
    check_totals("extproc_v04_text.prom",
        "text/plain; version=0.0.4; charset=utf-8; escaping=underscores",
        v04_want, sizeof(v04_want) / sizeof(v04_want[0]));
    check_totals("extproc_utf8.txt",
        "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8",
        v04_want, sizeof(v04_want) / sizeof(v04_want[0]));
    check_totals("extproc_newest_text.prom",
        "text/plain; version=0.0.4; charset=utf-8; escaping=underscores",
        newest_want, sizeof(newest_want) / sizeof(newest_want[0]));
}

/* ---- classic vs UTF-8: identical normalised samples ---- */

struct norm_list {
    char **lines;
    size_t n, cap;
};

static int
norm_fn(void *arg, const struct md_sample *s)
{
    struct norm_list *l = arg;
    enum md_instrument inst;
    enum md_role role;
    char keys[32][1024], buf[8192];
    size_t nk = s->nlabels, off = 0;
    char num[64];

    assert_true(nk <= 32);
    for (size_t i = 0; i < nk; i++) {
        char nm[MD_NORMALIZE_NAME_MAX + 1];
        size_t ln = md_normalize_label(s->labels[i].name, nm, sizeof(nm));

        assert_true(ln < sizeof(nm));
        (void)snprintf(keys[i], sizeof(keys[i]), "%s=%.*s", nm, (int)s->labels[i].value.len,
            s->labels[i].value.p);
    }
    qsort(keys, nk, sizeof(keys[0]), (int (*)(const void *, const void *))strcmp);
    if (md_normalize_name(s->name, &inst, &role, NULL, 0) == MD_OK)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s/%s",
            md_instrument_name(inst), md_role_name(role));
    else
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "?%.*s", (int)s->name.len,
            s->name.p);
    for (size_t i = 0; i < nk && off < sizeof(buf); i++)
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "|%s", keys[i]);
    (void)snprintf(num, sizeof(num), "%.17g", s->value);
    if (off < sizeof(buf))
        (void)snprintf(buf + off, sizeof(buf) - off, " %s", num);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->lines = realloc(l->lines, l->cap * sizeof(*l->lines));
        assert_non_null(l->lines);
    }
    l->lines[l->n++] = strdup(buf);
    return 0;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
norm_parse(const char *body, size_t len, enum md_expfmt_escaping esc, struct norm_list *l)
{
    struct md_expfmt_opts opts = { .escaping = esc };
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    struct md_expfmt_error err;
    int rc = md_expfmt_parser_run(ps, body, len, MD_EXPFMT_TEXT, NULL, &opts, norm_fn, l, &err);

    if (rc != MD_OK)
        fail_msg("%u:%u: %s", err.line, err.col, err.msg);
    md_expfmt_parser_free(ps);
    qsort(l->lines, l->n, sizeof(*l->lines), cmp_str);
}

static void
norm_free(struct norm_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->lines[i]);
    free(l->lines);
}

static void
test_classic_vs_utf8(void **state)
{
    struct norm_list a = { 0 }, b = { 0 };
    size_t la, lb;
    char *ca = md_test_read_fixture("extproc_v04_text.prom", &la);
    char *cb = md_test_read_fixture("extproc_utf8.txt", &lb);

    (void)state;
    norm_parse(ca, la, MD_ESC_UNDERSCORES, &a);
    norm_parse(cb, lb, MD_ESC_ALLOW_UTF8, &b);
    assert_int_equal(a.n, 632);
    assert_int_equal(a.n, b.n);
    for (size_t i = 0; i < a.n; i++)
        if (strcmp(a.lines[i], b.lines[i]) != 0)
            fail_msg("sample %zu differs:\n classic %s\n utf8    %s", i, a.lines[i], b.lines[i]);
    norm_free(&a);
    norm_free(&b);
    free(ca);
    free(cb);
}

/* The dots / values escapings of FACTS.md 6.3 decode to the UTF-8 names. */
static void
test_escapings(void **state)
{
    static const char dots[] =
        "gen__ai_dot_client_dot_token_dot_usage__token_count{gen__ai_dot_operation_dot_name="
        "\"chat\",gen__ai_dot_token_dot_type=\"cached_input\",otel_scope_name="
        "\"envoyproxy/ai-gateway\"} 2\n";
    static const char values[] =
        "U__gen__ai_2e_client_2e_token_2e_usage__token_count{U__gen__ai_2e_operation_2e_name="
        "\"chat\",U__gen__ai_2e_token_2e_type=\"cached_input\",otel_scope_name="
        "\"envoyproxy/ai-gateway\"} 2\n";
    static const char utf8[] =
        "{\"gen_ai.client.token.usage_token_count\",\"gen_ai.operation.name\"=\"chat\","
        "\"gen_ai.token.type\"=\"cached_input\",otel_scope_name=\"envoyproxy/ai-gateway\"} 2\n";
    static const char classic[] =
        "gen_ai_client_token_usage_token_count{gen_ai_operation_name=\"chat\","
        "gen_ai_token_type=\"cached_input\",otel_scope_name=\"envoyproxy/ai-gateway\"} 2\n";
    struct { const char *body; enum md_expfmt_escaping esc; } in[] = {
        { dots, MD_ESC_DOTS }, { values, MD_ESC_VALUES }, { utf8, MD_ESC_ALLOW_UTF8 },
        { classic, MD_ESC_UNDERSCORES },
        /* the normaliser also decodes escaped names the parser was not told about */
        { dots, MD_ESC_UNDERSCORES }, { values, MD_ESC_UNDERSCORES },
    };
    struct norm_list ref = { 0 };
    struct first f;
    struct md_expfmt_opts o = { .escaping = MD_ESC_DOTS };
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    norm_parse(utf8, sizeof(utf8) - 1, MD_ESC_ALLOW_UTF8, &ref);
    assert_int_equal(ref.n, 1);
    assert_string_equal(ref.lines[0], "gen_ai.client.token.usage/count|gen_ai.operation.name="
        "chat|gen_ai.token.type=cached_input|otel_scope_name=envoyproxy/ai-gateway 2");
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        struct norm_list l = { 0 };

        norm_parse(in[i].body, strlen(in[i].body), in[i].esc, &l);
        assert_int_equal(l.n, 1);
        if (strcmp(l.lines[0], ref.lines[0]) != 0)
            fail_msg("case %zu: got %s want %s", i, l.lines[0], ref.lines[0]);
        norm_free(&l);
    }
    /* with escaping=dots the delivered names are the real dotted names */
    memset(&f, 0, sizeof(f));
    assert_int_equal(md_expfmt_parser_run(ps, dots, sizeof(dots) - 1, MD_EXPFMT_TEXT, NULL, &o,
        first_fn, &f, NULL), MD_OK);
    assert_string_equal(f.name, "gen_ai.client.token.usage_token_count");
    assert_string_equal(f.l0name, "gen_ai.operation.name");
    o.escaping = MD_ESC_VALUES;
    memset(&f, 0, sizeof(f));
    assert_int_equal(md_expfmt_parser_run(ps, values, sizeof(values) - 1, MD_EXPFMT_TEXT, NULL,
        &o, first_fn, &f, NULL), MD_OK);
    assert_string_equal(f.name, "gen_ai.client.token.usage_token_count");
    assert_string_equal(f.l0name, "gen_ai.operation.name");
    md_expfmt_parser_free(ps);
    norm_free(&ref);
}

/* ---- the grammar table ---- */

#define T MD_EXPFMT_TEXT
#define O MD_EXPFMT_OPENMETRICS
#define BODY(s) s, sizeof(s) - 1
#define ANY (-1)

/* rc, line of the error (0: do not check), samples (ANY: do not check) */
static const struct gcase {
    int fmt;
    const char *body;
    size_t len;
    int rc;
    unsigned line;
    int samples;
    const char *why;
} gcases[] = {
    /* --- text 0.0.4: valid --- */
    { T, BODY(""), MD_OK, 0, 0, "empty body" },
    { T, BODY("a 1\n"), MD_OK, 0, 1, "name and value" },
    { T, BODY("a{} 1\n"), MD_OK, 0, 1, "empty label set" },
    { T, BODY("a{b=\"c\"} 1\n"), MD_OK, 0, 1, "one label" },
    { T, BODY("a{b=\"c\",} 1\n"), MD_OK, 0, 1, "trailing comma in the label set" },
    { T, BODY("a { b = \"c\" , d=\"e\" } 1\n"), MD_OK, 0, 1, "blanks between tokens" },
    { T, BODY("  a 1\n"), MD_OK, 0, 1, "leading whitespace ignored" },
    { T, BODY("a 1  \n"), MD_OK, 0, 1, "trailing whitespace ignored" },
    { T, BODY("a\t1\t123\n"), MD_OK, 0, 1, "tabs separate tokens" },
    { T, BODY("a 1 123\n"), MD_OK, 0, 1, "timestamp" },
    { T, BODY("a 1 -123\n"), MD_OK, 0, 1, "negative timestamp" },
    { T, BODY("\n\na 1\n\n  \n"), MD_OK, 0, 1, "blank lines" },
    { T, BODY("# a comment\n#\n#  HELP\na 1\n"), MD_OK, 0, 1, "comments" },
    { T, BODY("# EOF\na 1\n"), MD_OK, 0, 1, "# EOF is a plain comment in text" },
    { T, BODY("a NaN\nb +Inf\nc -Inf\nd Inf\ne inf\nf nan\ng Infinity\n"), MD_OK, 0, 7,
      "NaN and infinities, case insensitive (Go ParseFloat)" },
    { T, BODY("a 1e3\nb 1E3\nc .5\nd 5.\ne -0\nf +7\ng 1.5e-7\nh 0x1p4\n"), MD_OK, 0, 8,
      "float spellings incl. a Go hex float" },
    { T, BODY("# HELP a some help\n# TYPE a counter\na 1\n"), MD_OK, 0, 1, "HELP then TYPE" },
    { T, BODY("# TYPE a counter\n# HELP a x\na 1\n"), MD_OK, 0, 1, "TYPE then HELP" },
    { T, BODY("# HELP a back\\\\slash and \\n newline\na 1\n"), MD_OK, 0, 1, "HELP escapes" },
    { T, BODY("# HELP a\na 1\n"), MD_OK, 0, 1, "HELP without text" },
    { T, BODY("# TYPE a COUNTER\na 1\n"), MD_OK, 0, 1, "type is case insensitive (Go)" },
    { T, BODY("# TYPE a counter\n"), MD_OK, 0, 0, "metadata without samples" },
    { T, BODY("a{b=\"x\\\\y\\\"z\\n\"} 1\n"), MD_OK, 0, 1, "label value escapes" },
    { T, BODY("a{b=\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"} 1\n"), MD_OK, 0, 1, "UTF-8 value" },
    { T, BODY("a{b=\"1\"} 1\na{b=\"2\"} 1\n"), MD_OK, 0, 2, "two series" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
              "h_count 2\n"), MD_OK, 0, 4, "histogram" },
    { T, BODY("# TYPE h histogram\nh_bucket{a=\"1\",le=\"0.5\"} 0\nh_bucket{a=\"1\",le=\"1\"} 0\n"
              "h_bucket{a=\"1\",le=\"+Inf\"} 0\nh_sum{a=\"1\"} 0\nh_count{a=\"1\"} 0\n"
              "h_bucket{a=\"2\",le=\"0.5\"} 1\nh_bucket{a=\"2\",le=\"1\"} 1\n"
              "h_bucket{a=\"2\",le=\"+Inf\"} 1\nh_sum{a=\"2\"} 0.2\nh_count{a=\"2\"} 1\n"),
      MD_OK, 0, 10, "histogram, two series" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1.048576e+06\"} 1\nh_bucket{le=\"+Inf\"} 1\n"),
      MD_OK, 0, 2, "histogram le in exponent form, no _count" },
    { T, BODY("# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"1\"} 2\ns_sum 1\n"
              "s_count 1\n"), MD_OK, 0, 4, "summary" },
    { T, BODY("{\"a.b\"} 1\n"), MD_OK, 0, 1, "quoted UTF-8 metric name" },
    { T, BODY("{\"a.b\",\"c.d\"=\"e\",f=\"g\"} 1\n"), MD_OK, 0, 1, "quoted names" },
    { T, BODY("a{\"c.d\"=\"e\"} 1\n"), MD_OK, 0, 1, "quoted label name" },
    { T, BODY("# TYPE \"a.b\" gauge\n# HELP \"a.b\" x\n{\"a.b\"} 1\n"), MD_OK, 0, 1,
      "quoted name in metadata" },
    { T, BODY("{\"a\"} 1\nb 1\n"), MD_OK, 0, 2, "quoted legacy name" },
    { T, BODY("x{\"a.b\"=\"1\"} 1\n{\"a.b\" , \"c\"=\"d\"} 1\n"), MD_OK, 0, 2,
      "quoted name seen before as a label, now the metric name" },
    { T, BODY("{\"a.b\",\"c.d\"=\"1\",le=\"1\"} 1\n{\"a.b\",\"c.d\"=\"2\",le=\"1\"} 1\n"
              "{\"a.b\",\"c.d\"=\"2\",le=\"2\"} 1\n"), MD_OK, 0, 3,
      "quoted names repeated line to line" },
    { T, BODY("{\"a.b\",\"c.d\"=\"1\"} 1\n{\"a.b\",\"c.d\"=\"1\",\"c.d\"=\"2\"} 1\n"),
      MD_EPARSE, 2, ANY, "duplicate quoted label after reuse" },
    { T, BODY("# TYPE a counter\na_total 1\n"), MD_OK, 0, 1,
      "text: a_total is its own (untyped) family" },

    /* --- text 0.0.4: invalid --- */
    { T, BODY("a 1"), MD_EPARSE, 1, ANY, "last line must end with a line feed" },
    { T, BODY("a{b=\"c\"} 1\na{b=\"d"), MD_EPARSE, 2, ANY, "truncated mid-line" },
    { T, BODY("a{b=\"c\"} 1\na{b"), MD_EPARSE, 2, ANY, "truncated in a label name" },
    { T, BODY("a 1\r\n"), MD_EPARSE, 1, ANY, "CRLF" },
    { T, BODY("a 1\nb 2\r\n"), MD_EPARSE, 2, ANY, "CRLF on line 2" },
    { T, BODY("a{b=\"c\\q\"} 1\n"), MD_EPARSE, 1, ANY, "invalid escape in a value" },
    { T, BODY("a{b=\"c\\\"} 1\n"), MD_EPARSE, 1, ANY, "unterminated value" },
    { T, BODY("a{b=\"c\",b=\"d\"} 1\n"), MD_EPARSE, 1, ANY, "duplicate label name" },
    { T, BODY("a{b=\"c\",d=\"e\",b=\"c\"} 1\n"), MD_EPARSE, 1, ANY, "duplicate label, apart" },
    { T, BODY("a{\"b\"=\"c\",b=\"d\"} 1\n"), MD_EPARSE, 1, ANY, "duplicate label, quoted" },
    { T, BODY("a 1\na 2\n"), MD_EPARSE, 2, ANY, "duplicate series" },
    { T, BODY("a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n"), MD_EPARSE, 2, ANY,
      "duplicate series, labels in another order" },
    { T, BODY("a 1\n{\"a\"} 2\n"), MD_EPARSE, 2, ANY, "duplicate series, quoted spelling" },
    { T, BODY("a 1\nb 1\na{x=\"1\"} 1\n"), MD_EPARSE, 3, ANY, "family in two groups" },
    { T, BODY("a 1\n# TYPE a counter\n"), MD_EPARSE, 2, ANY, "TYPE after samples" },
    { T, BODY("a 1\n# HELP a x\n"), MD_EPARSE, 2, ANY, "HELP after samples" },
    { T, BODY("# TYPE a counter\n# TYPE a gauge\na 1\n"), MD_EPARSE, 2, ANY, "second TYPE" },
    { T, BODY("# HELP a x\n# HELP a y\n"), MD_EPARSE, 2, ANY, "second HELP" },
    { T, BODY("# TYPE a foo\n"), MD_EPARSE, 1, ANY, "unknown type" },
    { T, BODY("# TYPE a gaugehistogram\n"), MD_EPARSE, 1, ANY, "OpenMetrics-only type" },
    { T, BODY("# TYPE a counter extra\n"), MD_EPARSE, 1, ANY, "text after the type" },
    { T, BODY("# HELP a x\\q\n"), MD_EPARSE, 1, ANY, "invalid HELP escape" },
    { T, BODY("# HELP a x\\\"\n"), MD_EPARSE, 1, ANY, "\\\" is not a text HELP escape" },
    { T, BODY("a\n"), MD_EPARSE, 1, ANY, "no value" },
    { T, BODY("a abc\n"), MD_EPARSE, 1, ANY, "value not a number" },
    { T, BODY("a 1 abc\n"), MD_EPARSE, 1, ANY, "timestamp not a number" },
    { T, BODY("a 1 1.5\n"), MD_EPARSE, 1, ANY, "timestamp not an integer" },
    { T, BODY("a 1 99999999999999999999\n"), MD_ELIMIT, 1, ANY, "timestamp out of int64" },
    { T, BODY("a 1 2 3\n"), MD_EPARSE, 1, ANY, "text after the timestamp" },
    { T, BODY("a 0x10\n"), MD_EPARSE, 1, ANY, "hex float without p exponent" },
    { T, BODY("a 1_000\n"), MD_EPARSE, 1, ANY, "underscore in a number" },
    { T, BODY("a 1e999\n"), MD_EPARSE, 1, ANY, "value out of range" },
    { T, BODY("a 1e\n"), MD_EPARSE, 1, ANY, "exponent without digits" },
    { T, BODY("a .\n"), MD_EPARSE, 1, ANY, "lone dot" },
    { T, BODY("a{b=\"c\" 1\n"), MD_EPARSE, 1, ANY, "missing '}'" },
    { T, BODY("a{b=\"c\" d=\"e\"} 1\n"), MD_EPARSE, 1, ANY, "missing ','" },
    { T, BODY("a{b=c} 1\n"), MD_EPARSE, 1, ANY, "unquoted value" },
    { T, BODY("a{1b=\"c\"} 1\n"), MD_EPARSE, 1, ANY, "label name starts with a digit" },
    { T, BODY("a{b:c=\"d\"} 1\n"), MD_EPARSE, 1, ANY, "':' not allowed in label names" },
    { T, BODY("1a 1\n"), MD_EPARSE, 1, ANY, "metric name starts with a digit" },
    { T, BODY("a-b 1\n"), MD_EPARSE, 1, ANY, "'-' in a metric name" },
    { T, BODY("{} 1\n"), MD_EPARSE, 1, ANY, "no metric name" },
    { T, BODY("a{\"b.c\"} 1\n"), MD_EPARSE, 1, ANY, "metric name twice" },
    { T, BODY("\"a.b\" 1\n"), MD_EPARSE, 1, ANY, "quoted name outside the braces" },
    { T, BODY("{\"\"} 1\n"), MD_EPARSE, 1, ANY, "empty quoted name" },
    { T, BODY("{\"a.b\",x=\"1\"} 1\nc{\"a.b\",x=\"1\"} 1\n"), MD_EPARSE, 2, ANY,
      "metric name twice, after a line that quoted it" },
    { T, BODY("{\"a.b\",x=\"1\",le=\"1\"} 1\n{\"a.b\",x=\"1\",le=\"1\"} 1\n"), MD_EPARSE, 2,
      ANY, "duplicate series, quoted name, whole line repeated" },
    { T, BODY("{\"a.b\",x=\"1\",y=\"1\"} 1\n{\"a.b\",x=\"1\",x=\"2\"} 1\n"), MD_EPARSE, 2,
      ANY, "duplicate label after a reused prefix" },
    { T, BODY("a{x=\"1\",y=\"1\"} 1\na{x=\"1\",x=\"2\"} 1\n"), MD_EPARSE, 2, ANY,
      "duplicate label after a reused prefix (unquoted)" },
    { T, BODY("a{x=\"1\",y=\"1\"} 1\na{x=\"1\",y=\"1\",z=\"\\q\"} 1\n"), MD_EPARSE, 2, ANY,
      "invalid escape after a reused prefix" },
    { T, BODY("a{b=\"\0\"} 1\n"), MD_EPARSE, 1, ANY, "NUL in a text label value" },
    { T, BODY("a 1\0\n"), MD_EPARSE, 1, ANY, "NUL after the value" },
    { T, BODY("a\0 1\n"), MD_EPARSE, 1, ANY, "NUL in the name" },
    { T, BODY("# comment \0\n"), MD_EPARSE, 1, ANY, "NUL in a comment" },
    { T, BODY("a{b=\"\xff\"} 1\n"), MD_EPARSE, 1, ANY, "invalid UTF-8" },
    { T, BODY("a{b=\"\xc0\xaf\"} 1\n"), MD_EPARSE, 1, ANY, "overlong UTF-8" },
    { T, BODY("a{b=\"\xed\xa0\x80\"} 1\n"), MD_EPARSE, 1, ANY, "UTF-8 surrogate" },
    { T, BODY("a{b=\"\xe2\x82\"} 1\n"), MD_EPARSE, 1, ANY, "truncated UTF-8" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"),
      MD_EPARSE, 3, ANY, "buckets not cumulative" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
              "h_bucket{le=\"+Inf\"} 1\n"), MD_EPARSE, 3, ANY, "le not sorted" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1\"} 1\n"
              "h_bucket{le=\"+Inf\"} 1\n"), MD_EPARSE, 3, ANY, "same le twice" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n"), MD_EPARSE, 2,
      ANY, "no +Inf bucket (reported at the series' first line)" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
              "h_count 3\n"), MD_EPARSE, 5, ANY, "+Inf bucket differs from _count" },
    { T, BODY("# TYPE h histogram\nh_bucket 1\n"), MD_EPARSE, 2, ANY, "bucket without le" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n"), MD_EPARSE, 2, ANY, "le not a number" },
    { T, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} -1\nh_bucket{le=\"+Inf\"} 1\n"),
      MD_EPARSE, 2, ANY, "negative bucket count" },
    { T, BODY("# TYPE h histogram\nh 1\n"), MD_EPARSE, 2, ANY, "bare name in a histogram" },
    { T, BODY("# TYPE h histogram\nh_bucket{a=\"1\",le=\"+Inf\"} 1\nh_bucket{a=\"2\",le=\"+Inf\"} 1\n"
              "h_count{a=\"1\"} 1\n"), MD_EPARSE, 4, ANY, "histogram series not contiguous" },
    { T, BODY("# TYPE s summary\ns 1\n"), MD_EPARSE, 2, ANY, "summary without quantile" },
    { T, BODY("# TYPE s summary\ns{quantile=\"1.5\"} 1\n"), MD_EPARSE, 2, ANY,
      "quantile out of [0, 1]" },

    /* --- OpenMetrics 1.0: valid --- */
    { O, BODY("# EOF\n"), MD_OK, 0, 0, "only # EOF" },
    { O, BODY("# EOF"), MD_OK, 0, 0, "# EOF without the final LF" },
    { O, BODY("a 1\n# EOF\n"), MD_OK, 0, 1, "unknown-type sample" },
    { O, BODY("# TYPE a counter\n# HELP a x\na_total 1\na_created 1.6e9\n# EOF\n"), MD_OK, 0, 2,
      "counter with _created" },
    { O, BODY("# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1\n# EOF\n"),
      MD_OK, 0, 1, "UNIT matching the name" },
    { O, BODY("# TYPE a unknown\na 1\n# EOF\n"), MD_OK, 0, 1, "unknown type" },
    { O, BODY("# HELP a x \\\" \\\\ \\n\na 1\n# EOF\n"), MD_OK, 0, 1, "OpenMetrics HELP escapes" },
    { O, BODY("a 1 1520879607.789\n# EOF\n"), MD_OK, 0, 1, "timestamp in seconds" },
    { O, BODY("# TYPE a counter\na_total 1 # {trace_id=\"abc\"} 1 1520879607.789\n# EOF\n"),
      MD_OK, 0, 1, "counter exemplar" },
    { O, BODY("# TYPE a counter\na_total 1 1520879607 # {trace_id=\"abc\"} 0.5\n# EOF\n"),
      MD_OK, 0, 1, "timestamp then exemplar" },
    { O, BODY("# TYPE h histogram\nh_bucket{le=\"1\"} 1 # {a=\"b\"} 0.5\nh_bucket{le=\"+Inf\"} 1\n"
              "h_sum 0.5\nh_count 1\nh_created 1\n# EOF\n"), MD_OK, 0, 5,
      "histogram with bucket exemplar and _created" },
    { O, BODY("# TYPE g gaugehistogram\ng_bucket{le=\"+Inf\"} 1\ng_gcount 1\ng_gsum 2\n# EOF\n"),
      MD_OK, 0, 3, "gaugehistogram" },
    { O, BODY("# TYPE i info\ni_info{v=\"1.0\"} 1\n# EOF\n"), MD_OK, 0, 1, "info" },
    { O, BODY("# TYPE s stateset\ns{s=\"a\"} 1\ns{s=\"b\"} 0\n# EOF\n"), MD_OK, 0, 2, "stateset" },
    { O, BODY("# TYPE s summary\ns{quantile=\"0.9\"} 1\ns_sum 1\ns_count 1\ns_created 1\n# EOF\n"),
      MD_OK, 0, 4, "summary" },
    { O, BODY("a{b=\"\0\"} 1\n# EOF\n"), MD_OK, 0, 1, "NUL inside a quoted OpenMetrics string" },
    { O, BODY("a 1.0\nb -1.5e-3\nc +Inf\nd NaN\n# EOF\n"), MD_OK, 0, 4, "OpenMetrics numbers" },
    { O, BODY("{\"a.b\"} 1\n# EOF\n"), MD_OK, 0, 1, "quoted name (Prometheus 3 allow-utf-8)" },

    /* --- OpenMetrics 1.0: invalid --- */
    { O, BODY(""), MD_EPARSE, 0, ANY, "empty body: no # EOF" },
    { O, BODY("a 1\n"), MD_EPARSE, 0, ANY, "missing # EOF" },
    { O, BODY("a 1\n# EOF\n\n"), MD_EPARSE, 3, ANY, "line after # EOF" },
    { O, BODY("# EOF\na 1\n"), MD_EPARSE, 2, ANY, "# EOF not last" },
    { O, BODY("a 1\n\n# EOF\n"), MD_EPARSE, 2, ANY, "empty line" },
    { O, BODY("# a comment\n# EOF\n"), MD_EPARSE, 1, ANY, "comment" },
    { O, BODY("#  TYPE a gauge\n# EOF\n"), MD_EPARSE, 1, ANY, "two spaces after #" },
    { O, BODY("# EOF \n"), MD_EPARSE, 1, ANY, "space after EOF" },
    { O, BODY("# TYPE a counter\na 1\n# EOF\n"), MD_EPARSE, 2, ANY, "counter without _total" },
    { O, BODY("# TYPE a counter\na_total -1\n# EOF\n"), MD_EPARSE, 2, ANY, "negative counter" },
    { O, BODY("# TYPE a counter\na_total NaN\n# EOF\n"), MD_EPARSE, 2, ANY, "NaN counter" },
    { O, BODY("# TYPE a untyped\n# EOF\n"), MD_EPARSE, 1, ANY, "text-only type" },
    { O, BODY("# TYPE a Counter\n# EOF\n"), MD_EPARSE, 1, ANY, "type is case sensitive" },
    { O, BODY("# TYPE a counter\n# TYPE a counter\n# EOF\n"), MD_EPARSE, 2, ANY, "second TYPE" },
    { O, BODY("# UNIT a_seconds bytes\n# EOF\n"), MD_EPARSE, 1, ANY, "UNIT not the suffix" },
    { O, BODY("# HELP a\n# EOF\n"), MD_EPARSE, 1, ANY, "HELP without the space and text" },
    { O, BODY("# HELP a x\"y\n# EOF\n"), MD_EPARSE, 1, ANY, "unescaped quote in HELP" },
    { O, BODY("a  1\n# EOF\n"), MD_EPARSE, 1, ANY, "two spaces" },
    { O, BODY(" a 1\n# EOF\n"), MD_EPARSE, 1, ANY, "leading space" },
    { O, BODY("a 1 \n# EOF\n"), MD_EPARSE, 1, ANY, "trailing space" },
    { O, BODY("a\t1\n# EOF\n"), MD_EPARSE, 1, ANY, "tab separator" },
    { O, BODY("a{b=\"c\",} 1\n# EOF\n"), MD_EPARSE, 1, ANY, "trailing comma" },
    { O, BODY("a{b = \"c\"} 1\n# EOF\n"), MD_EPARSE, 1, ANY, "blanks around '='" },
    { O, BODY("a 0x1p4\n# EOF\n"), MD_EPARSE, 1, ANY, "hex float" },
    { O, BODY("a 1 abc\n# EOF\n"), MD_EPARSE, 1, ANY, "timestamp not a number" },
    { O, BODY("a 1 1 1\n# EOF\n"), MD_EPARSE, 1, ANY, "text after the timestamp" },
    { O, BODY("a{__x=\"1\"} 1\n# EOF\n"), MD_EPARSE, 1, ANY, "reserved label name" },
    { O, BODY("a 1\0\n# EOF\n"), MD_EPARSE, 1, ANY, "NUL outside a quoted string" },
    { O, BODY("# TYPE g gauge\ng 1 # {a=\"b\"} 1\n# EOF\n"), MD_EPARSE, 2, ANY,
      "exemplar on a gauge" },
    { O, BODY("# TYPE a counter\na_total 1 # {a=\"01234567890123456789012345678901234567890123456789"
              "01234567890123456789012345678901234567890123456789012345678901234567890123456789\"} 1\n# EOF\n"),
      MD_EPARSE, 2, ANY, "exemplar labels over 128 characters" },
    { O, BODY("# TYPE a counter\na_total 1 # {a=\"b\"}\n# EOF\n"), MD_EPARSE, 2, ANY,
      "exemplar without a value" },
    { O, BODY("# TYPE h histogram\nh_sum 1\nh_count 1\n# EOF\n"), MD_EPARSE, 2, ANY,
      "OpenMetrics histogram without buckets" },
    { O, BODY("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\n# EOF\n"), MD_EPARSE, 3, ANY,
      "+Inf bucket differs from _count" },
    { O, BODY("# TYPE i info\ni_info 2\n# EOF\n"), MD_EPARSE, 2, ANY, "info value not 1" },
    { O, BODY("# TYPE s stateset\ns{s=\"a\"} 2\n# EOF\n"), MD_EPARSE, 2, ANY, "stateset value 2" },
    { O, BODY("a 1\nb 1\na{x=\"y\"} 1\n# EOF\n"), MD_EPARSE, 3, ANY, "interleaved families" },
    { O, BODY("a 1\na 1\n# EOF\n"), MD_EPARSE, 2, ANY, "duplicate series" },
    { O, BODY("a 1\n# EOF"), MD_OK, 0, 1, "(control) valid without final LF" },
};

static void
test_grammar_table(void **state)
{
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    size_t failures = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(gcases) / sizeof(gcases[0]); i++) {
        const struct gcase *c = &gcases[i];
        struct md_expfmt_error err;
        size_t n = 0;
        int rc;

        /* reused and fresh parsers must agree */
        rc = md_expfmt_parser_run(ps, c->body, c->len, (enum md_expfmt_format)c->fmt, NULL, NULL,
            count_fn, &n, &err);
        if (rc != c->rc || (c->line != 0 && err.line != c->line) ||
            (c->samples != ANY && n != (size_t)c->samples)) {
            print_error("case %zu (%s, %s): got rc %d line %u samples %zu (%s), want rc %d "
                "line %u samples %d\n", i, c->fmt == T ? "text" : "openmetrics", c->why, rc,
                err.line, n, err.msg, c->rc, c->line, c->samples);
            failures++;
        }
        if (rc != MD_OK && err.msg[0] == '\0') {
            print_error("case %zu (%s): error without a message\n", i, c->why);
            failures++;
        }
        n = 0;
        if (md_expfmt_parse(c->body, c->len, (enum md_expfmt_format)c->fmt, NULL, count_fn, &n,
                NULL) != rc) {
            print_error("case %zu (%s): fresh parser disagrees\n", i, c->why);
            failures++;
        }
    }
    md_expfmt_parser_free(ps);
    if (failures > 0)
        fail_msg("%zu grammar case(s) failed", failures);
}

/* values, timestamps and decoded strings of single samples */
static void
test_sample_values(void **state)
{
    static const struct {
        int fmt;
        const char *body;
        double value;
        int has_ts;
        int64_t ts_ms;
        const char *l0value;
        size_t l0len;
    } cases[] = {
        { T, "a{b=\"x\\\\y\\\"z\\n\"} 1\n", 1, 0, 0, "x\\y\"z\n", 6 },
        { T, "a 1.5 -123\n", 1.5, 1, -123, NULL, 0 },
        { T, "a 1e3\n", 1000, 0, 0, NULL, 0 },
        { T, "a 0x1p4\n", 16, 0, 0, NULL, 0 },
        { T, "a -Inf\n", -INFINITY, 0, 0, NULL, 0 },
        { T, "a 28.683631999999996\n", 28.683631999999996, 0, 0, NULL, 0 },
        { T, "a 1.297632e+06\n", 1297632, 0, 0, NULL, 0 },
        { T, "a 9007199254740993\n", 9007199254740992.0, 0, 0, NULL, 0 },
        { O, "a 1 1520879607.789\n# EOF\n", 1, 1, 1520879607789LL, NULL, 0 },
        { O, "a 2.5 -1.5\n# EOF\n", 2.5, 1, -1500, NULL, 0 },
        { O, "a{b=\"\0\"} 1\n# EOF\n", 1, 0, 0, "\0", 1 },
        { T, "{\"a.b\",\"c\\\"d\"=\"v\"} 1\n", 1, 0, 0, "v", 1 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct first f;
        struct md_expfmt_error err;
        size_t len = strlen(cases[i].body);
        int rc;

        if (cases[i].l0len == 1 && cases[i].l0value[0] == '\0')
            len = sizeof("a{b=\"\0\"} 1\n# EOF\n") - 1;
        memset(&f, 0, sizeof(f));
        rc = md_expfmt_parse(cases[i].body, len, (enum md_expfmt_format)cases[i].fmt, NULL,
            first_fn, &f, &err);
        if (rc != MD_OK)
            fail_msg("case %zu: %u:%u: %s", i, err.line, err.col, err.msg);
        if (!(f.value == cases[i].value || (isnan(f.value) && isnan(cases[i].value))))
            fail_msg("case %zu: value got %.17g want %.17g", i, f.value, cases[i].value);
        if (f.has_ts != cases[i].has_ts || f.ts_ms != cases[i].ts_ms)
            fail_msg("case %zu: ts got %d/%lld want %d/%lld", i, f.has_ts, (long long)f.ts_ms,
                cases[i].has_ts, (long long)cases[i].ts_ms);
        if (cases[i].l0value != NULL && (f.l0vlen != cases[i].l0len ||
                memcmp(f.l0value, cases[i].l0value, f.l0vlen) != 0))
            fail_msg("case %zu: label value differs (len %zu want %zu)", i, f.l0vlen,
                cases[i].l0len);
    }
    {
        struct first f;

        memset(&f, 0, sizeof(f));
        static const char q[] = "{\"a.b\",\"c\\\"d\"=\"v\"} 1\n";

        assert_int_equal(md_expfmt_parse(q, sizeof(q) - 1, MD_EXPFMT_TEXT, NULL, first_fn, &f,
            NULL), MD_OK);
        assert_string_equal(f.name, "a.b");
        assert_string_equal(f.l0name, "c\"d");
    }
}

/* the type of a sample is its family's */
static void
test_types(void **state)
{
    static const char body[] = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"
        "g{a=\"1\",b=\"2\"} 1\n";
    static const char om[] = "x 1\n# EOF\n";
    struct first f;

    (void)state;
    memset(&f, 0, sizeof(f));
    assert_int_equal(md_expfmt_parse(body, sizeof(body) - 1, MD_EXPFMT_TEXT, NULL, first_fn, &f,
        NULL), MD_OK);
    assert_int_equal(f.type, MD_TYPE_HISTOGRAM);
    assert_int_equal(f.n, 3);
    memset(&f, 0, sizeof(f));
    assert_int_equal(md_expfmt_parse(body + 19, sizeof(body) - 20, MD_EXPFMT_TEXT, NULL,
        first_fn, &f, NULL), MD_OK);
    assert_int_equal(f.type, MD_TYPE_UNTYPED);
    memset(&f, 0, sizeof(f));
    assert_int_equal(md_expfmt_parse(om, sizeof(om) - 1, MD_EXPFMT_AUTO, NULL, first_fn, &f,
        NULL), MD_OK);
    assert_int_equal(f.type, MD_TYPE_UNKNOWN);
}

static int
hash_fn(void *arg, const struct md_sample *s)
{
    *(uint64_t *)arg = s->hash;
    return 0;
}

static void
test_hash_order_independent(void **state)
{
    uint64_t a = 0, b = 0, c = 0;

    (void)state;
    assert_int_equal(md_expfmt_parse("g{a=\"1\",b=\"2\"} 1\n", 17, MD_EXPFMT_TEXT, NULL, hash_fn,
        &a, NULL), MD_OK);
    assert_int_equal(md_expfmt_parse("g{b=\"2\",a=\"1\"} 7\n", 17, MD_EXPFMT_TEXT, NULL, hash_fn,
        &b, NULL), MD_OK);
    assert_int_equal(md_expfmt_parse("g{a=\"2\",b=\"1\"} 1\n", 17, MD_EXPFMT_TEXT, NULL, hash_fn,
        &c, NULL), MD_OK);
    assert_true(a == b);
    assert_true(a != c);
}

/* ---- limits ---- */

static void
test_limits(void **state)
{
    struct md_expfmt_limits lim;
    struct md_expfmt_error err;
    char *big;
    size_t n = 0;

    (void)state;
    md_expfmt_limits_default(&lim);
    assert_int_equal(lim.label_value_max, 16384);
    assert_int_equal(lim.name_max, 256);
    assert_int_equal(lim.labels_max, 128);
    assert_int_equal(lim.samples_max, 0);

    lim.label_value_max = 3;
    assert_int_equal(md_expfmt_parse("a{b=\"abc\"} 1\n", 13, T, &lim, NULL, NULL, &err), MD_OK);
    assert_int_equal(md_expfmt_parse("a{b=\"abcd\"} 1\n", 14, T, &lim, NULL, NULL, &err),
        MD_ELIMIT);
    assert_non_null(strstr(err.msg, "label_value_max"));
    /* decoded length counts: "\\n" is one byte */
    assert_int_equal(md_expfmt_parse("a{b=\"ab\\n\"} 1\n", 14, T, &lim, NULL, NULL, &err), MD_OK);

    md_expfmt_limits_default(&lim);
    lim.name_max = 4;
    assert_int_equal(md_expfmt_parse("abcd{abcd=\"x\"} 1\n", 17, T, &lim, NULL, NULL, &err),
        MD_OK);
    assert_int_equal(md_expfmt_parse("abcde 1\n", 8, T, &lim, NULL, NULL, &err), MD_ELIMIT);
    assert_non_null(strstr(err.msg, "name_max"));
    assert_int_equal(md_expfmt_parse("a{abcde=\"x\"} 1\n", 15, T, &lim, NULL, NULL, &err),
        MD_ELIMIT);
    assert_int_equal(md_expfmt_parse("{\"a.b.c\"} 1\n", 12, T, &lim, NULL, NULL, &err),
        MD_ELIMIT);

    md_expfmt_limits_default(&lim);
    lim.labels_max = 2;
    assert_int_equal(md_expfmt_parse("a{b=\"1\",c=\"2\"} 1\n", 17, T, &lim, NULL, NULL, &err),
        MD_OK);
    assert_int_equal(md_expfmt_parse("a{b=\"1\",c=\"2\",d=\"3\"} 1\n", 23, T, &lim, NULL, NULL,
        &err), MD_ELIMIT);
    assert_non_null(strstr(err.msg, "labels_max"));

    md_expfmt_limits_default(&lim);
    lim.samples_max = 2;
    assert_int_equal(md_expfmt_parse("a 1\nb 1\n", 8, T, &lim, count_fn, &n, &err), MD_OK);
    assert_int_equal(md_expfmt_parse("a 1\nb 1\nc 1\n", 12, T, &lim, NULL, NULL, &err),
        MD_ELIMIT);
    assert_int_equal(err.line, 3);
    assert_non_null(strstr(err.msg, "samples_max"));

    /* a 16 KiB value passes, one byte more does not */
    big = malloc(16384 + 64);
    assert_non_null(big);
    memcpy(big, "a{b=\"", 5);
    memset(big + 5, 'x', 16384);
    memcpy(big + 5 + 16384, "\"} 1\n", 5);
    assert_int_equal(md_expfmt_parse(big, 16384 + 10, T, NULL, NULL, NULL, &err), MD_OK);
    memcpy(big + 5, "xx", 2);
    memset(big + 5, 'x', 16385);
    memcpy(big + 5 + 16385, "\"} 1\n", 5);
    assert_int_equal(md_expfmt_parse(big, 16385 + 10, T, NULL, NULL, NULL, &err), MD_ELIMIT);
    free(big);
}

static double
elapsed(struct timespec a)
{
    struct timespec b;

    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
}

/* a 100,000-label line: rejected by the default limit at once, and even
 * with the limit lifted the duplicate check is not quadratic */
static void
test_100k_labels(void **state)
{
    const size_t n = 100000;
    struct md_buf b;
    struct md_expfmt_limits lim;
    struct md_expfmt_error err;
    struct timespec t0;
    size_t got = 0;

    (void)state;
    md_buf_init(&b, 64u << 20);
    assert_int_equal(md_buf_puts(&b, "m{"), MD_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(md_buf_printf(&b, "%sl%zu=\"v\"", i ? "," : "", i), MD_OK);
    assert_int_equal(md_buf_puts(&b, "} 1\n"), MD_OK);

    /* The bounds below only catch a quadratic check (100,000^2 label
     * comparisons take minutes); they are far above the real cost so a loaded
     * machine or a sanitizer build cannot make them flaky.  The speed itself
     * is measured in bench/parse, not here. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(md_expfmt_parse(b.data, b.len, T, NULL, NULL, NULL, &err), MD_ELIMIT);
    assert_true(elapsed(t0) < 20.0);
    assert_non_null(strstr(err.msg, "labels_max"));

    md_expfmt_limits_default(&lim);
    lim.labels_max = 200000;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(md_expfmt_parse(b.data, b.len, T, &lim, count_fn, &got, &err), MD_OK);
    assert_true(elapsed(t0) < 20.0);
    assert_int_equal(got, 1);

    /* the same line with the last label repeating the first */
    b.len -= 4;
    assert_int_equal(md_buf_puts(&b, ",l0=\"w\"} 1\n"), MD_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(md_expfmt_parse(b.data, b.len, T, &lim, NULL, NULL, &err), MD_EPARSE);
    assert_true(elapsed(t0) < 20.0);
    assert_non_null(strstr(err.msg, "duplicate label"));
    md_buf_fini(&b);
}

/* many series: the bucketed duplicate check finds the earliest repeat */
static void
test_many_series_duplicates(void **state)
{
    struct md_buf b;
    struct md_expfmt_error err;
    size_t n = 0;

    (void)state;
    md_buf_init(&b, 16u << 20);
    for (size_t i = 0; i < 50000; i++)
        assert_int_equal(md_buf_printf(&b, "m{d=\"dept-%zu\",t=\"input\"} %zu\n", i, i), MD_OK);
    assert_int_equal(md_expfmt_parse(b.data, b.len, T, NULL, count_fn, &n, &err), MD_OK);
    assert_int_equal(n, 50000);
    /* series 7 again at line 50001, series 3 again (labels swapped) at 50002 */
    assert_int_equal(md_buf_puts(&b, "m{d=\"dept-7\",t=\"input\"} 1\n"
        "m{t=\"input\",d=\"dept-3\"} 1\n"), MD_OK);
    assert_int_equal(md_expfmt_parse(b.data, b.len, T, NULL, NULL, NULL, &err), MD_EPARSE);
    assert_int_equal(err.line, 50001);
    assert_non_null(strstr(err.msg, "duplicate series"));
    md_buf_fini(&b);
}

/* ---- Content-Type ---- */

static void
test_content_type(void **state)
{
    static const struct { const char *ct; int fmt; int esc; } cases[] = {
        { "", MD_EXPFMT_AUTO, MD_ESC_UNDERSCORES },
        { "text/plain; version=0.0.4; charset=utf-8; escaping=underscores", MD_EXPFMT_TEXT,
          MD_ESC_UNDERSCORES },
        { "text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8", MD_EXPFMT_TEXT,
          MD_ESC_ALLOW_UTF8 },
        { "text/plain;version=0.0.4;escaping=dots", MD_EXPFMT_TEXT, MD_ESC_DOTS },
        { "text/plain; escaping=\"values\"", MD_EXPFMT_TEXT, MD_ESC_VALUES },
        { "text/plain", MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES },
        { "Text/Plain ; Version=1.0.0; Escaping=allow-utf-8", MD_EXPFMT_TEXT, MD_ESC_ALLOW_UTF8 },
        { "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
          MD_EXPFMT_OPENMETRICS, MD_ESC_UNDERSCORES },
        { "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
          MD_EXPFMT_OPENMETRICS, MD_ESC_ALLOW_UTF8 },
        { "application/json", MD_EXPFMT_AUTO, MD_ESC_UNDERSCORES },
        { "text/html; charset=utf-8", MD_EXPFMT_AUTO, MD_ESC_UNDERSCORES },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum md_expfmt_format f;
        enum md_expfmt_escaping e;

        md_expfmt_content_type(cases[i].ct, strlen(cases[i].ct), &f, &e);
        if ((int)f != cases[i].fmt || (int)e != cases[i].esc)
            fail_msg("case %zu \"%s\": got %d/%d want %d/%d", i, cases[i].ct, f, e,
                cases[i].fmt, cases[i].esc);
        assert_int_equal(md_expfmt_format_from_content_type(cases[i].ct, strlen(cases[i].ct)),
            cases[i].fmt);
    }
    md_expfmt_content_type(NULL, 0, &(enum md_expfmt_format){ 0 },
        &(enum md_expfmt_escaping){ 0 });
    assert_int_equal(md_expfmt_detect("a 1\n# EOF\n", 10), MD_EXPFMT_OPENMETRICS);
    assert_int_equal(md_expfmt_detect("# EOF", 5), MD_EXPFMT_OPENMETRICS);
    assert_int_equal(md_expfmt_detect("a 1\n", 4), MD_EXPFMT_TEXT);
    assert_int_equal(md_expfmt_detect("a# EOF\n", 7), MD_EXPFMT_TEXT);
}

/* ---- callback abort and the family filter ---- */

static int
abort_fn(void *arg, const struct md_sample *s)
{
    (void)s;
    return ++*(size_t *)arg == 2 ? MD_ELIMIT : 0;
}

struct filt {
    size_t delivered, asked;
};

static int
filter_fn(void *arg, struct md_str fam, enum md_metric_type t)
{
    struct filt *f = arg;

    (void)t;
    f->asked++;
    return fam.len == 1 && fam.p[0] == 'k';
}

static int
filt_sample(void *arg, const struct md_sample *s)
{
    struct filt *f = arg;

    assert_true(s->name.p[0] == 'k');
    f->delivered++;
    return 0;
}

static void
test_abort_and_filter(void **state)
{
    static const char body[] = "k{a=\"1\"} 1\nk{a=\"2\"} 2\nskip{a=\"1\"} 3\nskip{a=\"2\"} 4\n";
    static const char bad[] = "k 1\nskip 1\nskip 2\n";
    struct md_expfmt_opts o = { .escaping = MD_ESC_UNDERSCORES, .family_fn = filter_fn };
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    struct md_expfmt_error err;
    struct filt f = { 0, 0 };
    size_t n = 0;

    (void)state;
    assert_int_equal(md_expfmt_parse(body, sizeof(body) - 1, T, NULL, abort_fn, &n, &err),
        MD_ELIMIT);
    assert_int_equal(n, 2);
    assert_int_equal(err.line, 2);
    o.family_arg = &f;
    assert_int_equal(md_expfmt_parser_run(ps, body, sizeof(body) - 1, T, NULL, &o, filt_sample,
        &f, &err), MD_OK);
    assert_int_equal(f.delivered, 2);
    assert_int_equal(f.asked, 2);
    /* a skipped family is still validated */
    assert_int_equal(md_expfmt_parser_run(ps, bad, sizeof(bad) - 1, T, NULL, &o, filt_sample,
        &f, &err), MD_EPARSE);
    assert_int_equal(err.line, 3);
    md_expfmt_parser_free(ps);
}

/* ---- round trip through exporters/prom_text ---- */

struct rt {
    struct md_buf out;      /* re-written exposition */
    struct md_buf canon;    /* canonical dump of the samples */
    char fam[256];          /* family of the last sample written */
};

/* the family a sample belongs to, from its type and suffix */
static void
family_of(const struct md_sample *s, char *out, size_t out_len)
{
    static const char *const sfx[] = { "_bucket", "_sum", "_count" };
    size_t n = s->name.len;

    if (s->type == MD_TYPE_HISTOGRAM || s->type == MD_TYPE_SUMMARY) {
        for (size_t i = 0; i < 3; i++) {
            size_t l = strlen(sfx[i]);

            if (n > l && memcmp(s->name.p + n - l, sfx[i], l) == 0) {
                n -= l;
                break;
            }
        }
    }
    (void)snprintf(out, out_len, "%.*s", (int)n, s->name.p);
}

static int
rt_fn(void *arg, const struct md_sample *s)
{
    struct rt *r = arg;
    struct md_prom_label l[64];
    char names[64][64], name[256];
    int rc = 0;

    assert_true(s->nlabels <= 64);
    (void)snprintf(name, sizeof(name), "%.*s", (int)s->name.len, s->name.p);
    for (size_t i = 0; i < s->nlabels; i++) {
        (void)snprintf(names[i], sizeof(names[i]), "%.*s", (int)s->labels[i].name.len,
            s->labels[i].name.p);
        l[i].name = names[i];
        l[i].value = s->labels[i].value.p;
        l[i].value_len = s->labels[i].value.len;
    }
    /* md_prom_label: value_len 0 means strlen; an empty value is "" */
    for (size_t i = 0; i < s->nlabels; i++)
        if (l[i].value_len == 0)
            l[i].value = "";
    {
        char fam[256];

        family_of(s, fam, sizeof(fam));
        if (strcmp(fam, r->fam) != 0) {
            /* OpenMetrics counters become text counters named like their samples */
            int om_counter = s->type == MD_TYPE_COUNTER;

            rc = md_prom_family(&r->out, om_counter ? name : fam,
                md_metric_type_name(s->type), "round trip");
            assert_int_equal(rc, MD_OK);
            (void)snprintf(r->fam, sizeof(r->fam), "%s", fam);
        }
    }
    if (s->has_ts)
        rc = md_prom_sample_f64_ts(&r->out, name, l, s->nlabels, s->value, s->ts_ms);
    else
        rc = md_prom_sample_f64(&r->out, name, l, s->nlabels, s->value);
    assert_int_equal(rc, MD_OK);
    rc = md_buf_printf(&r->canon, "%s %d %016llx %a %d %lld |", name,
        s->type == MD_TYPE_UNKNOWN ? MD_TYPE_UNTYPED : (int)s->type,
        (unsigned long long)s->hash, s->value, s->has_ts, (long long)s->ts_ms);
    for (size_t i = 0; i < s->nlabels && rc == MD_OK; i++) {
        rc = md_buf_printf(&r->canon, "%s=", names[i]);
        if (rc == MD_OK)
            rc = md_buf_append(&r->canon, s->labels[i].value.p, s->labels[i].value.len);
        if (rc == MD_OK)
            rc = md_buf_putc(&r->canon, ',');
    }
    if (rc == MD_OK)
        rc = md_buf_putc(&r->canon, '\n');
    assert_int_equal(rc, MD_OK);
    return 0;
}

static void
round_trip(const char *body, size_t len, int fmt)
{
    struct rt a, b;
    struct md_expfmt_error err;

    a.fam[0] = b.fam[0] = '\0';
    md_buf_init(&a.out, 64u << 20);
    md_buf_init(&a.canon, 64u << 20);
    md_buf_init(&b.out, 64u << 20);
    md_buf_init(&b.canon, 64u << 20);
    if (md_expfmt_parse(body, len, (enum md_expfmt_format)fmt, NULL, rt_fn, &a, &err) != MD_OK)
        fail_msg("first parse: %u:%u: %s", err.line, err.col, err.msg);
    if (md_expfmt_parse(a.out.data, a.out.len, MD_EXPFMT_TEXT, NULL, rt_fn, &b, &err) != MD_OK)
        fail_msg("second parse: %u:%u: %s", err.line, err.col, err.msg);
    assert_true(a.canon.len > 0);
    assert_int_equal(a.canon.len, b.canon.len);
    assert_memory_equal(a.canon.data, b.canon.data, a.canon.len);
    md_buf_fini(&a.out);
    md_buf_fini(&a.canon);
    md_buf_fini(&b.out);
    md_buf_fini(&b.canon);
}

static void
test_round_trip(void **state)
{
    static const char special[] =
        "a{b=\"x\\\\y\\\"z\\n\",c=\"\"} NaN 1700000000000\n"
        "b +Inf\nc -Inf -5\nd 0.1\ne 1e-300\nf 1.7976931348623157e+308\ng -0\n"
        "h{v=\"\xc3\xa9\"} 28.683631999999996\n";
    static const char om[] = "# TYPE a counter\na_total{x=\"1\"} 3 1520879607.789\n# EOF\n";
    const char *files[] = { "extproc_v04_text.prom", "extproc_newest_text.prom" };

    (void)state;
    for (size_t i = 0; i < 2; i++) {
        size_t len;
        char *body = md_test_read_fixture(files[i], &len);

        round_trip(body, len, T);
        free(body);
    }
    round_trip(special, sizeof(special) - 1, T);
    round_trip(om, sizeof(om) - 1, O);
}

/* ---- error positions ---- */

static void
test_error_position(void **state)
{
    struct md_expfmt_error err;

    (void)state;
    assert_int_equal(md_expfmt_parse("a 1\nbb{c=\"d\",e=f} 1\n", 20, T, NULL, NULL, NULL, &err),
        MD_EPARSE);
    assert_int_equal(err.rc, MD_EPARSE);
    assert_int_equal(err.line, 2);
    assert_int_equal(err.col, 12);
    assert_non_null(strstr(err.msg, "expected '\"'"));
    assert_int_equal(md_expfmt_parse("a 1\n\nb{c=\"d\\x\"} 1\n", 18, T, NULL, NULL, NULL, &err),
        MD_EPARSE);
    assert_int_equal(err.line, 3);
    assert_int_equal(err.col, 7);
    assert_non_null(strstr(err.msg, "escape"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_totals),
        cmocka_unit_test(test_classic_vs_utf8),
        cmocka_unit_test(test_escapings),
        cmocka_unit_test(test_grammar_table),
        cmocka_unit_test(test_sample_values),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_hash_order_independent),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_100k_labels),
        cmocka_unit_test(test_many_series_duplicates),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_abort_and_filter),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_error_position),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
