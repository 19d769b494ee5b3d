/* test_expfmt_skip.c: the parser's fast skip (md_expfmt_opts.skip_fn)
 * against the full parse.
 *
 * - The ExtProc fixtures and hand-made tricky bodies (escaped \n, '#', '}'
 *   and \" inside label values, _bucket of a billed family, UTF-8 quoted
 *   names, OpenMetrics with exemplars and _created, dots escaping, tabs and
 *   timestamps) under several classifiers: the full parse, the skip with
 *   skipped lines parsed in full and the skip with the light check must
 *   deliver identical samples and counts (tests/common/expfmt_skipcheck.h),
 *   and the counts must equal what an independent line scan of the body
 *   expects.
 * - Malformed bodies the light check must still reject (unbalanced quotes,
 *   an escaped quote hiding the '}', a missing value, a truncated body,
 *   duplicate billed series, a family split in two, samples_max).
 * - Malformed bodies only the full parse rejects (the documented weaker
 *   validation of skipped lines); they also prove the light path ran.
 * - The scraper's glue: attributing with md_attrib_name_drop as the skip
 *   classifier gives the same batch (entries and drop counters) as
 *   attributing every sample. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/expfmt_skipcheck.h"
#include "attrib.h"
#include "config.h"
#include "expfmt.h"
#include "../common/fixture.h"

/* ---- classifiers (pure functions of the name) ---- */

static int
ends_with(struct md_str n, const char *sfx)
{
    size_t l = strlen(sfx);

    return n.len >= l && memcmp(n.p + n.len - l, sfx, l) == 0;
}

static int
contains(struct md_str n, const char *w)
{
    size_t l = strlen(w);

    for (size_t i = 0; i + l <= n.len; i++)
        if (memcmp(n.p + i, w, l) == 0)
            return 1;
    return 0;
}

/* 1 = _bucket, 2 = latency families, 3 = target_info, 0 = deliver */
static int
cls_meterd_like(void *arg, struct md_str n)
{
    (void)arg;
    if (contains(n, "duration") || contains(n, "lat") || contains(n, "time_per"))
        return 2;
    if (ends_with(n, "_bucket"))
        return 1;
    if (n.len == 11 && memcmp(n.p, "target_info", 11) == 0)
        return 3;
    return 0;
}

static int
cls_bucket(void *arg, struct md_str n)
{
    (void)arg;
    return ends_with(n, "_bucket") ? 1 : 0;
}

static int
cls_all(void *arg, struct md_str n)
{
    (void)arg;
    (void)n;
    return 7;
}

static int
cls_none(void *arg, struct md_str n)
{
    (void)arg;
    (void)n;
    return 0;
}

/* the scraper's classifier: drop reason + 1 */
static int
cls_attrib(void *arg, struct md_str n)
{
    int d = md_attrib_name_drop(n);

    (void)arg;
    return d < 0 ? 0 : d + 1;
}

/* ---- an independent line scan: sample names without the parser ---- */

struct scan_counts {
    uint64_t samples;
    uint64_t cls[MD_EXPFMT_SKIP_CLASSES];
};

/* names are unquoted (up to '{', ' ' or '\t') or the first "quoted" item
 * inside the braces; the fixtures and hand-made bodies use no escapes in
 * quoted names, and decoding (dots) is done by the caller's classifier */
static void
scan_body(const char *b, size_t len, md_expfmt_skip_fn *fn, struct scan_counts *out)
{
    const char *p = b, *e = b + len;

    memset(out, 0, sizeof(*out));
    while (p < e) {
        const char *eol = memchr(p, '\n', (size_t)(e - p));
        const char *s = p, *t;
        struct md_str n;

        if (eol == NULL)
            eol = e;
        while (s < eol && (*s == ' ' || *s == '\t'))
            s++;
        if (s < eol && *s != '#') {
            if (*s == '{') {
                s += 2;
                t = memchr(s, '"', (size_t)(eol - s));
            } else {
                t = s;
                while (t < eol && *t != '{' && *t != ' ' && *t != '\t')
                    t++;
            }
            n.p = s;
            n.len = (size_t)(t - s);
            out->samples++;
            out->cls[fn(NULL, n)]++;
        }
        p = eol + 1;
    }
}

static const char *const fixtures[] = {
    "extproc_v04_text.prom", "extproc_newest_text.prom", "extproc_utf8.txt",
};

static const struct {
    const char        *name;
    md_expfmt_skip_fn *fn;
} classifiers[] = {
    { "meterd-like", cls_meterd_like }, { "bucket", cls_bucket }, { "all", cls_all },
    { "none", cls_none }, { "attrib", cls_attrib },
};

/* A accepts, the promise holds, and the counts match the line scan */
static void
check_valid(struct md_expfmt_parser *ps, const char *what, const char *body, size_t len,
    enum md_expfmt_format fmt, enum md_expfmt_escaping esc, md_expfmt_skip_fn *fn,
    md_expfmt_skip_fn *scan_fn)
{
    struct skc_result r;
    struct scan_counts want;
    int rc = skc_check(ps, body, len, fmt, NULL, esc, fn, NULL, &r);

    if (rc != 0)
        fail_msg("%s: %s", what, rc < 0 ? r.why : "out of memory");
    if (r.rc[0] != MD_OK)
        fail_msg("%s: the full parse rejects the body (rc %d)", what, r.rc[0]);
    scan_body(body, len, scan_fn, &want);
    if (r.delivered != want.cls[0])
        fail_msg("%s: delivered got %llu want %llu", what, (unsigned long long)r.delivered,
            (unsigned long long)want.cls[0]);
    for (int k = 1; k < MD_EXPFMT_SKIP_CLASSES; k++)
        if (r.counts[k] != want.cls[k])
            fail_msg("%s: skipped[%d] got %llu want %llu", what, k,
                (unsigned long long)r.counts[k], (unsigned long long)want.cls[k]);
}

static void
test_fixtures(void **state)
{
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        size_t len;
        char *body = md_test_read_fixture(fixtures[f], &len);

        for (size_t c = 0; c < sizeof(classifiers) / sizeof(classifiers[0]); c++) {
            char what[128];
            struct scan_counts sc;

            (void)snprintf(what, sizeof(what), "%s / %s", fixtures[f], classifiers[c].name);
            check_valid(ps, what, body, len, MD_EXPFMT_AUTO, MD_ESC_UNDERSCORES,
                classifiers[c].fn, classifiers[c].fn);
            /* the skip must have something to do on these bodies */
            scan_body(body, len, classifiers[c].fn, &sc);
            if (classifiers[c].fn != cls_none && sc.cls[0] == sc.samples)
                fail_msg("%s: nothing skipped", what);
        }
        free(body);
    }
    md_expfmt_parser_free(ps);
}

/* ---- hand-made valid bodies ---- */

static const struct {
    const char             *name;
    const char             *body;
    enum md_expfmt_format   fmt;
    enum md_expfmt_escaping esc;
    uint64_t                delivered;   /* hand-counted, under cls_meterd_like */
} valid_cases[] = {
    /* the light check once took the blank before the value for the blank
     * before a label set, and refused the label-less line (fuzz_expfmt) */
    { "skipped name: a label-less line after a labelled one",
      "target_info{a=\"1\"} 1\n"
      "target_info 1\n"
      "target_info {b=\"2\"} 1\n"
      "tok_total 3\n",
      MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES, 1 },
    { "escapes, '#' and '}' inside values, buckets of a billed family",
      "# TYPE tok histogram\n"
      "tok_bucket{a=\"x\\ny\",le=\"1\"} 1\n"
      "tok_bucket{a=\"x\\ny\",le=\"+Inf\"} 2\n"
      "tok_sum{a=\"x\\ny\"} 3\n"
      "tok_count{a=\"x\\ny\"} 2\n"
      "tok_bucket{a=\"# not a comment } {\",le=\"1\"} 0\n"
      "tok_bucket{a=\"# not a comment } {\",le=\"+Inf\"} 0\n"
      "tok_sum{a=\"# not a comment } {\"} 0\n"
      "tok_count{a=\"# not a comment } {\"} 0\n"
      "tok_bucket{a=\"q\\\"uote\\\\\",le=\"1\"} 1\n"
      "tok_bucket{a=\"q\\\"uote\\\\\",le=\"+Inf\"} 1\n"
      "tok_sum{a=\"q\\\"uote\\\\\"} 1\n"
      "tok_count{a=\"q\\\"uote\\\\\"} 1\n",
      MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES, 6 },
    { "UTF-8 quoted names, '}' and ',' inside the values",
      "# TYPE \"gen_ai.client.token.usage\" histogram\n"
      "{\"gen_ai.client.token.usage_bucket\",\"gen_ai.token.type\"=\"input\",le=\"1\"} 1\n"
      "{\"gen_ai.client.token.usage_bucket\",\"gen_ai.token.type\"=\"input\",le=\"+Inf\"} 1\n"
      "{\"gen_ai.client.token.usage_sum\",\"gen_ai.token.type\"=\"input\"} 5\n"
      "{\"gen_ai.client.token.usage_count\",\"gen_ai.token.type\"=\"input\"} 1\n"
      "{\"gen_ai.client.token.usage_bucket\",\"gen_ai.token.type\"=\"o},u\",le=\"1\"} 0\n"
      "{\"gen_ai.client.token.usage_bucket\",\"gen_ai.token.type\"=\"o},u\",le=\"+Inf\"} 2\n"
      "{\"gen_ai.client.token.usage_sum\",\"gen_ai.token.type\"=\"o},u\"} 7\n"
      "{\"gen_ai.client.token.usage_count\",\"gen_ai.token.type\"=\"o},u\"} 2\n"
      "# TYPE \"gen_ai.server.request.duration\" histogram\n"
      "{\"gen_ai.server.request.duration_bucket\",le=\"1\"} 1\n"
      "{\"gen_ai.server.request.duration_bucket\",le=\"+Inf\"} 1\n"
      "{\"gen_ai.server.request.duration_sum\"} 0.5\n"
      "{\"gen_ai.server.request.duration_count\"} 1\n",
      MD_EXPFMT_TEXT, MD_ESC_ALLOW_UTF8, 4 },
    { "quoted and unquoted forms of one family, blanks, tabs and timestamps",
      "# TYPE tok histogram\n"
      "tok_bucket {le=\"1\"} 1 1700000000000\n"
      "{\"tok_bucket\", le=\"2\"}\t1\n"
      "tok_bucket\t{le=\"+Inf\"}  2  1700000000000\n"
      "tok_sum 3\n"
      "tok_count 2\n"
      "target_info{k=\"v\"} 1\n",
      MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES, 2 },
    { "OpenMetrics: exemplars on skipped buckets, _created, skipped latency family",
      "# TYPE tok histogram\n"
      "tok_bucket{le=\"1\"} 1 # {trace_id=\"a}b\\\"\"} 1 123\n"
      "tok_bucket{le=\"+Inf\"} 2\n"
      "tok_sum 3\n"
      "tok_count 2\n"
      "tok_created 1.7e9\n"
      "tok_bucket{m=\"x\",le=\"1\"} 0\n"
      "tok_bucket{m=\"x\",le=\"+Inf\"} 0\n"
      "tok_sum{m=\"x\"} 0\n"
      "tok_count{m=\"x\"} 0\n"
      "# TYPE lat histogram\n"
      "lat_bucket{le=\"0.5\"} 1\n"
      "lat_bucket{le=\"+Inf\"} 1\n"
      "lat_sum 0.1\n"
      "lat_count 1\n"
      "# TYPE target info\n"
      "target_info{k=\"v\"} 1\n"
      "# EOF\n",
      MD_EXPFMT_OPENMETRICS, MD_ESC_UNDERSCORES, 5 },
    { "untyped text families whose names end in _bucket",
      "foo_bucket{a=\"1\"} 1\n"
      "foo_bucket{a=\"2\"} 2\n"
      "foo 3\n"
      "bar_bucket 4\n",
      MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES, 1 },
    { "a skipped name back as its own untyped family after another family",
      "# TYPE tok histogram\n"
      "tok_bucket{le=\"1\"} 1\n"
      "tok_bucket{le=\"+Inf\"} 2\n"
      "tok_sum 3\n"
      "tok_count 2\n"
      "other 1\n"
      "tok_bucket{le=\"+Inf\",b=\"1\"} 2\n"
      "tok_bucket{le=\"+Inf\",b=\"2\"} 2\n",
      MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES, 3 },
    { "summary quantiles and a counter between skipped lines",
      "# TYPE lat_s summary\n"
      "lat_s{quantile=\"0.5\"} 1\n"
      "lat_s{quantile=\"0.9\"} 2\n"
      "lat_s_sum 3\n"
      "lat_s_count 4\n"
      "# TYPE req counter\n"
      "req{code=\"200\"} 5\n",
      MD_EXPFMT_TEXT, MD_ESC_UNDERSCORES, 1 },
};

/* classifiers see decoded names; the line scan sees the raw ones, which
 * for these bodies classify the same (dots only touch "_dot_") */
static void
test_valid_bodies(void **state)
{
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        struct skc_result r;

        for (size_t c = 0; c < sizeof(classifiers) / sizeof(classifiers[0]); c++) {
            char what[160];

            (void)snprintf(what, sizeof(what), "%s / %s", valid_cases[i].name,
                classifiers[c].name);
            check_valid(ps, what, valid_cases[i].body, strlen(valid_cases[i].body),
                valid_cases[i].fmt, valid_cases[i].esc, classifiers[c].fn, classifiers[c].fn);
        }
        assert_int_equal(skc_check(ps, valid_cases[i].body, strlen(valid_cases[i].body),
            valid_cases[i].fmt, NULL, valid_cases[i].esc, cls_meterd_like, NULL, &r), 0);
        if (r.delivered != valid_cases[i].delivered)
            fail_msg("%s: delivered got %llu want %llu (hand-counted)", valid_cases[i].name,
                (unsigned long long)r.delivered, (unsigned long long)valid_cases[i].delivered);
    }
    md_expfmt_parser_free(ps);
}

/* dots escaping: names are decoded before classification (full path only) */
static int
cls_dotted_bucket(void *arg, struct md_str n)
{
    (void)arg;
    return contains(n, "tok.x") && ends_with(n, "_bucket") ? 1 : 0;
}

static void
test_dots(void **state)
{
    static const char body[] =
        "# TYPE tok_dot_x histogram\n"
        "tok_dot_x_bucket{le=\"1\"} 1\n"
        "tok_dot_x_bucket{le=\"+Inf\"} 1\n"
        "tok_dot_x_sum 1\n"
        "tok_dot_x_count 1\n";
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    struct skc_result r;

    (void)state;
    assert_non_null(ps);
    assert_int_equal(skc_check(ps, body, sizeof(body) - 1, MD_EXPFMT_TEXT, NULL, MD_ESC_DOTS,
        cls_dotted_bucket, NULL, &r), 0);
    assert_int_equal(r.rc[0], MD_OK);
    assert_int_equal(r.delivered, 2);
    assert_int_equal(r.counts[1], 2);
    /* undecoded, the names do not contain "tok.x": nothing skipped */
    assert_int_equal(skc_check(ps, body, sizeof(body) - 1, MD_EXPFMT_TEXT, NULL,
        MD_ESC_UNDERSCORES, cls_dotted_bucket, NULL, &r), 0);
    assert_int_equal(r.delivered, 4);
    md_expfmt_parser_free(ps);
}

/* '}', '"' (escaped) and block boundaries: the light check reads 64-byte
 * blocks, so a '}' inside a value and the real closing '}' are moved
 * across every offset of two blocks, with and without a backslash */
static void
test_block_offsets(void **state)
{
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    for (int bs = 0; bs < 2; bs++) {
        for (size_t k = 0; k < 140; k++) {
            char body[2048], pad[160];
            struct skc_result r;
            int n;

            memset(pad, 'x', k);
            pad[k] = '\0';
            n = snprintf(body, sizeof(body),
                "# TYPE tok histogram\n"
                "tok_bucket{a=\"%s}\",b=\"%s\",le=\"1\"} 1\n"
                "tok_bucket{a=\"%s}\",b=\"%s\",le=\"+Inf\"} 1\n"
                "tok_sum{a=\"%s}\",b=\"%s\"} 1\n"
                "tok_count{a=\"%s}\",b=\"%s\"} 1\n"
                "tok_bucket{a=\"%s\",b=\"%s}\",le=\"1\"} 1\n"
                "tok_bucket{a=\"%s\",b=\"%s}\",le=\"+Inf\"} 1\n"
                "tok_sum{a=\"%s\",b=\"%s}\"} 1\n"
                "tok_count{a=\"%s\",b=\"%s}\"} 1\n",
                pad, bs ? "\\\"" : "", pad, bs ? "\\\"" : "",
                pad, bs ? "\\\"" : "", pad, bs ? "\\\"" : "",
                pad, bs ? "\\\"" : "", pad, bs ? "\\\"" : "",
                pad, bs ? "\\\"" : "", pad, bs ? "\\\"" : "");
            assert_true(n > 0 && (size_t)n < sizeof(body));
            if (skc_check(ps, body, (size_t)n, MD_EXPFMT_TEXT, NULL, MD_ESC_UNDERSCORES,
                    cls_bucket, NULL, &r) != 0 || r.rc[0] != MD_OK || r.delivered != 4 ||
                r.counts[1] != 4)
                fail_msg("offset %zu backslash %d: %s (rc %d %d %d, delivered %llu)", k, bs,
                    r.why, r.rc[0], r.rc[1], r.rc[2], (unsigned long long)r.delivered);
            /* the same lines with the closing '}' removed must fail */
            {
                char *cut = strstr(body, "\"} 1\ntok_bucket{a=");

                assert_non_null(cut);
                cut = strstr(cut + 1, "\"} 1\n");   /* the second bucket line's end */
                assert_non_null(cut);
                cut[1] = ' ';
                assert_int_equal(skc_check(ps, body, (size_t)n, MD_EXPFMT_TEXT, NULL,
                    MD_ESC_UNDERSCORES, cls_bucket, NULL, &r), 0);
                if (r.rc[2] != MD_EPARSE)
                    fail_msg("offset %zu backslash %d: an unclosed label set passed", k, bs);
            }
        }
    }
    md_expfmt_parser_free(ps);
}

/* ---- malformed bodies ---- */

#define HIST_HEAD "# TYPE tok histogram\ntok_bucket{le=\"1\"} 1\n"
#define HIST_TAIL "tok_sum 3\ntok_count 2\n"

static const struct {
    const char *name;
    const char *body;
    int         rc;       /* what the light check (run C) must return */
    int         full_rc;  /* what the full parse (run A) returns */
} bad_cases[] = {
    /* the light check rejects these too */
    { "unterminated quote in a skipped line",
      HIST_HEAD "tok_bucket{le=\"+Inf} 2\n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    { "an escaped quote hides the closing brace",
      HIST_HEAD "tok_bucket{le=\"+Inf\",a=\"x\\\"} 2\n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    { "backslash at the end of the line inside a value",
      HIST_HEAD "tok_bucket{le=\"+Inf\",a=\"x\\\n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    { "'}' only inside a value",
      HIST_HEAD "tok_bucket{le=\"+Inf\",a=\"}\" 2\n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    /* the light check reads a line's last block in place when 64 bytes of
     * the body follow: the next line's quotes, braces and backslashes are
     * in that block and must not count */
    { "unterminated quote, the next line's quotes and braces in the same block",
      HIST_HEAD "tok_bucket{le=\"+Inf} 2\n"
      "tok_sum{a=\"}\",b=\"}\",c=\"}\",d=\"}\",e=\"x\\\\y\",f=\"0123456789012345678901\"} 3\n"
      "tok_count 2\n", MD_EPARSE, MD_EPARSE },
    { "no closing brace, the next line's brace in the same block",
      HIST_HEAD "tok_bucket{le=\"+Inf\" 2\n"
      "tok_sum{a=\"\\\\\",b=\"01234567890123456789012345678901234567890123456789\"} 3\n"
      "tok_count 2\n", MD_EPARSE, MD_EPARSE },
    { "skipped line without a value",
      HIST_HEAD "tok_bucket{le=\"+Inf\"}\n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    { "skipped line with only blanks after the labels",
      HIST_HEAD "tok_bucket{le=\"+Inf\"}   \n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    { "skipped line with CRLF",
      HIST_HEAD "tok_bucket{le=\"+Inf\"} 2\r\n" HIST_TAIL, MD_EPARSE, MD_EPARSE },
    { "truncated after a skipped line",
      HIST_HEAD "tok_bucket{le=\"+Inf\"} 2", MD_EPARSE, MD_EPARSE },
    { "duplicate billed series",
      HIST_HEAD "tok_bucket{le=\"+Inf\"} 2\n" HIST_TAIL "tok_sum 3\n", MD_EPARSE, MD_EPARSE },
    { "family split in two around another family",
      HIST_HEAD "tok_bucket{le=\"+Inf\"} 2\n" HIST_TAIL "other 1\n"
      "# TYPE tok histogram\ntok_bucket{le=\"+Inf\",b=\"1\"} 2\n", MD_EPARSE, MD_EPARSE },
    { "quoted name followed by '=' is a label, not a name",
      "# TYPE tok histogram\n{\"tok_bucket\",le=\"1\"} 1\n{\"tok_bucket\"=\"x\"} 2\n" HIST_TAIL,
      MD_EPARSE, MD_EPARSE },
    { "OpenMetrics without # EOF",
      "# TYPE tok histogram\ntok_bucket{le=\"1\"} 1\ntok_bucket{le=\"+Inf\"} 2\n"
      "tok_sum 3\ntok_count 2\n", MD_EPARSE, MD_EPARSE },
    /* only the full parse rejects these: skipped lines are checked lightly */
    { "invalid escape in a later skipped line",
      HIST_HEAD "tok_bucket{le=\"+Inf\",a=\"\\q\"} 2\n" HIST_TAIL, MD_OK, MD_EPARSE },
    { "value that is not a number in a later skipped line",
      HIST_HEAD "tok_bucket{le=\"+Inf\"} two\n" HIST_TAIL, MD_OK, MD_EPARSE },
    { "buckets without +Inf",
      HIST_HEAD "tok_bucket{le=\"2\"} 2\n" HIST_TAIL, MD_OK, MD_EPARSE },
    { "duplicate skipped series",
      HIST_HEAD "tok_bucket{le=\"1\"} 1\ntok_bucket{le=\"+Inf\"} 2\n" HIST_TAIL, MD_OK,
      MD_EPARSE },
};

static void
test_malformed(void **state)
{
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct skc_result r;
        enum md_expfmt_format fmt = strstr(bad_cases[i].name, "OpenMetrics") ?
            MD_EXPFMT_OPENMETRICS : MD_EXPFMT_TEXT;
        int rc = skc_check(ps, bad_cases[i].body, strlen(bad_cases[i].body), fmt, NULL,
            MD_ESC_UNDERSCORES, cls_bucket, NULL, &r);

        if (rc != 0)
            fail_msg("%s: %s", bad_cases[i].name, rc < 0 ? r.why : "out of memory");
        if (r.rc[0] != bad_cases[i].full_rc)
            fail_msg("%s: full parse rc got %d want %d", bad_cases[i].name, r.rc[0],
                bad_cases[i].full_rc);
        if (r.rc[2] != bad_cases[i].rc)
            fail_msg("%s: light check rc got %d want %d", bad_cases[i].name, r.rc[2],
                bad_cases[i].rc);
    }
    md_expfmt_parser_free(ps);
}

/* the light check's error names the skipped line and what it lacks, also
 * when the line's last block is read in place with the next line's quotes
 * and braces in it (they must not close its string or its label set) */
static void
test_light_error_position(void **state)
{
    static const struct {
        const char *body;
        const char *msg;
    } cases[] = {
        { HIST_HEAD "tok_bucket{le=\"+Inf} 2\n"
          "tok_sum{a=\"}\",b=\"}\",c=\"}\",d=\"}\",f=\"01234567890123456789012345678\"} 3\n"
          "tok_count 2\n", "unterminated quoted string" },
        { HIST_HEAD "tok_bucket{le=\"+Inf\" 2\n"
          "tok_sum{a=\"x\",b=\"}\",c=\"}\",f=\"0123456789012345678901234567890123456789\"} 3\n"
          "tok_count 2\n", "expected '}' to close the label set" },
    };
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_expfmt_opts opts;
        struct md_expfmt_error err;
        uint64_t skipped[MD_EXPFMT_SKIP_CLASSES];
        int rc;

        memset(&opts, 0, sizeof(opts));
        memset(&err, 0, sizeof(err));
        opts.skip_fn = cls_bucket;
        opts.skipped = skipped;
        rc = md_expfmt_parser_run(ps, cases[i].body, strlen(cases[i].body), MD_EXPFMT_TEXT,
            NULL, &opts, NULL, NULL, &err);
        if (rc != MD_EPARSE || err.line != 3 || strstr(err.msg, cases[i].msg) == NULL ||
                err.col > strlen("tok_bucket{le=\"+Inf\" 2") + 1)
            fail_msg("case %zu: rc %d line %u col %u \"%s\"; want line 3, \"%s\"", i, rc,
                err.line, err.col, err.msg, cases[i].msg);
    }
    md_expfmt_parser_free(ps);
}

/* samples_max counts skipped samples: a body of N samples passes at N and
 * fails at N - 1 whether the excess sample is skipped or delivered */
static void
test_samples_max(void **state)
{
    static const char body[] =
        "# TYPE tok histogram\n"
        "tok_bucket{le=\"1\"} 1\n"
        "tok_bucket{le=\"2\"} 1\n"
        "tok_bucket{le=\"+Inf\"} 2\n"
        "tok_sum 3\n"
        "tok_count 2\n"
        "# TYPE lat histogram\n"
        "lat_bucket{le=\"1\"} 1\n"
        "lat_bucket{le=\"+Inf\"} 1\n"
        "lat_sum 1\n"
        "lat_count 1\n";
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    struct md_expfmt_limits lim;

    (void)state;
    assert_non_null(ps);
    md_expfmt_limits_default(&lim);
    for (uint64_t max = 8; max <= 11; max++) {
        struct skc_result r;
        int want = max >= 9 ? MD_OK : MD_ELIMIT;

        lim.samples_max = max;
        assert_int_equal(skc_check(ps, body, sizeof(body) - 1, MD_EXPFMT_TEXT, &lim,
            MD_ESC_UNDERSCORES, cls_meterd_like, NULL, &r), 0);
        for (int run = 0; run < 3; run++)
            if (r.rc[run] != want)
                fail_msg("samples_max=%llu run %c: rc got %d want %d",
                    (unsigned long long)max, 'A' + run, r.rc[run], want);
    }
    /* the last sample is a skipped one: 9 samples, at 8 the 9th fails */
    md_expfmt_parser_free(ps);
}

/* a skip classifier out of range fails the parse loudly */
static int
cls_bad(void *arg, struct md_str n)
{
    (void)arg;
    (void)n;
    return MD_EXPFMT_SKIP_CLASSES;
}

static void
test_bad_class(void **state)
{
    static const char body[] = "a 1\n";
    struct md_expfmt_opts o = { .escaping = MD_ESC_UNDERSCORES, .skip_fn = cls_bad };
    struct md_expfmt_error err;
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    assert_int_equal(md_expfmt_parser_run(ps, body, sizeof(body) - 1, MD_EXPFMT_TEXT, NULL,
        &o, NULL, NULL, &err), MD_ESTATE);
    md_expfmt_parser_free(ps);
}

/* ---- the scraper's glue: attribution with and without the skip ---- */

struct attr_ctx {
    const struct md_attrib   *a;
    struct md_attrib_target   t;
    struct md_attrib_scratch *sc;
    struct md_batch          *b;
    struct md_err             err;
    uint64_t                  samples;
};

static int
attr_on_sample(void *arg, const struct md_sample *s)
{
    struct attr_ctx *c = arg;

    c->samples++;
    return md_attrib_sample(c->a, &c->t, s, c->b, c->sc, &c->err);
}

static struct md_batch *
attribute(struct md_expfmt_parser *ps, const struct md_attrib *a, const char *body,
    size_t len, int skip, uint64_t *samples)
{
    struct attr_ctx c;
    struct md_expfmt_error perr;
    struct md_expfmt_opts o = { .escaping = MD_ESC_UNDERSCORES };
    uint64_t skipped[MD_EXPFMT_SKIP_CLASSES];
    int rc;

    memset(&c, 0, sizeof(c));
    c.a = a;
    c.t.namespace = "team-x";
    c.sc = md_attrib_scratch_new();
    c.b = md_batch_new("http://t/metrics", 0, 0);
    assert_non_null(c.sc);
    assert_non_null(c.b);
    if (skip) {
        o.skip_fn = cls_attrib;
        o.skipped = skipped;
    }
    rc = md_expfmt_parser_run(ps, body, len, MD_EXPFMT_AUTO, NULL, &o, attr_on_sample, &c,
        &perr);
    if (rc != MD_OK)
        fail_msg("fixture does not parse: line %u: %s", perr.line, perr.msg);
    if (skip) {
        assert_int_equal(skipped[0], 0);
        for (int r = 0; r < MD_DROP_REASON_COUNT; r++) {
            c.b->dropped[r] += skipped[r + 1];
            c.samples += skipped[r + 1];
        }
        for (int k = MD_DROP_REASON_COUNT + 1; k < MD_EXPFMT_SKIP_CLASSES; k++)
            assert_int_equal(skipped[k], 0);
    }
    assert_int_equal(md_attrib_finish(c.b, &c.err), MD_OK);
    md_attrib_scratch_free(c.sc);
    *samples = c.samples;
    return c.b;
}

static void
test_attrib_glue(void **state)
{
    struct md_cfg_errors errs;
    struct md_config *cfg = NULL;
    struct md_err err = { 0 };
    struct md_attrib *a;
    struct md_expfmt_parser *ps = md_expfmt_parser_new();

    (void)state;
    assert_non_null(ps);
    memset(&errs, 0, sizeof(errs));
    assert_int_equal(md_config_load_buf("t.yaml", "", 0, &cfg, &errs), MD_OK);
    a = md_attrib_new(cfg, &err);
    assert_non_null(a);
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        size_t len;
        char *body = md_test_read_fixture(fixtures[f], &len);
        uint64_t n_full, n_skip, skipped_total = 0;
        struct md_batch *full = attribute(ps, a, body, len, 0, &n_full);
        struct md_batch *fast = attribute(ps, a, body, len, 1, &n_skip);
        struct scan_counts sc;

        scan_body(body, len, cls_attrib, &sc);
        if (n_full != sc.samples || n_skip != sc.samples)
            fail_msg("%s: samples full %llu skip %llu want %llu", fixtures[f],
                (unsigned long long)n_full, (unsigned long long)n_skip,
                (unsigned long long)sc.samples);
        for (int r = 0; r < MD_DROP_REASON_COUNT; r++) {
            if (full->dropped[r] != fast->dropped[r])
                fail_msg("%s: dropped[%s] full %llu skip %llu", fixtures[f], md_drop_names[r],
                    (unsigned long long)full->dropped[r], (unsigned long long)fast->dropped[r]);
            skipped_total += sc.cls[r + 1];
        }
        /* buckets alone are most of an EAIG body */
        if (sc.cls[MD_DROP_BUCKET + 1] == 0 || skipped_total * 2 < sc.samples)
            fail_msg("%s: the skip skipped too little (%llu of %llu)", fixtures[f],
                (unsigned long long)skipped_total, (unsigned long long)sc.samples);
        assert_int_equal(full->count, fast->count);
        assert_true(full->count > 0);
        for (size_t i = 0; i < full->count; i++) {
            const struct md_batch_entry *x = &full->e[i], *y = &fast->e[i];

            if (x->key_len != y->key_len || memcmp(md_batch_str(full, x->key_off),
                    md_batch_str(fast, y->key_off), x->key_len) != 0 || x->kind != y->kind ||
                x->value != y->value || x->has_created != y->has_created)
                fail_msg("%s: entry %zu differs", fixtures[f], i);
            for (int d = 0; d < MD_DIM_COUNT; d++)
                if (x->dim_len[d] != y->dim_len[d] || memcmp(md_batch_str(full, x->dim_off[d]),
                        md_batch_str(fast, y->dim_off[d]), x->dim_len[d]) != 0)
                    fail_msg("%s: entry %zu dimension %s differs", fixtures[f], i,
                        md_dim_names[d]);
        }
        md_batch_free(full);
        md_batch_free(fast);
        free(body);
    }
    md_attrib_free(a);
    md_config_unref(cfg);
    md_expfmt_parser_free(ps);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_valid_bodies),
        cmocka_unit_test(test_dots),
        cmocka_unit_test(test_block_offsets),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_light_error_position),
        cmocka_unit_test(test_samples_max),
        cmocka_unit_test(test_bad_class),
        cmocka_unit_test(test_attrib_glue),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
