/* expfmt.h: streaming parser for the Prometheus text format 0.0.4 and
 * OpenMetrics 1.0 text, including the quoted UTF-8 names of Prometheus 3
 * and the `dots` / `values` name escapings.
 *
 * Pure: no I/O, no logging, no global state.  A parser object belongs to one
 * thread at a time.  Samples are views into the body (zero copy) except for
 * strings that had to be decoded (escapes, escaped names), which live in the
 * parser's scratch memory; both are valid only during the callback.
 *
 * All-or-nothing: the callback sees samples while the body is read, but the
 * body is valid only when the parse returns MD_OK.  A caller buffers the
 * samples and applies them only then.
 *
 * Limits (struct md_expfmt_limits): crossing one is MD_ELIMIT naming it.
 * Series identity for the duplicate check is a 64-bit hash of the decoded
 * name and label set (order independent); a hash collision between two
 * different series would reject a valid body (probability ~n^2/2^65), it can
 * never accept an invalid one. */
#ifndef MD_EXPFMT_H
#define MD_EXPFMT_H

#include <stddef.h>
#include <stdint.h>

enum md_expfmt_format { MD_EXPFMT_AUTO = 0, MD_EXPFMT_TEXT, MD_EXPFMT_OPENMETRICS };

/* Name escaping scheme negotiated with the exporter (Content-Type
 * `escaping=`).  UNDERSCORES and ALLOW_UTF8 need no decoding (quoted names
 * are always decoded); DOTS and VALUES names are unescaped back to the real
 * (dotted) names before delivery. */
enum md_expfmt_escaping {
    MD_ESC_UNDERSCORES = 0, MD_ESC_ALLOW_UTF8, MD_ESC_DOTS, MD_ESC_VALUES
};

enum md_metric_type {
    MD_TYPE_UNTYPED = 0, MD_TYPE_COUNTER, MD_TYPE_GAUGE, MD_TYPE_HISTOGRAM,
    MD_TYPE_GAUGE_HISTOGRAM, MD_TYPE_SUMMARY, MD_TYPE_INFO, MD_TYPE_STATESET,
    MD_TYPE_UNKNOWN
};

struct md_str {
    const char *p;
    size_t      len;
};

/* decoded (unescaped, unquoted) */
struct md_label {
    struct md_str name;
    struct md_str value;
};

struct md_expfmt_limits {
    size_t   label_value_max;   /* bytes of one decoded label value */
    size_t   name_max;          /* bytes of a metric or label name */
    size_t   labels_max;        /* labels per series (the name not counted) */
    uint64_t samples_max;       /* samples per body; 0 = unlimited */
};

#define MD_EXPFMT_LABEL_VALUE_MAX 16384
#define MD_EXPFMT_NAME_MAX        256
#define MD_EXPFMT_LABELS_MAX      128
/* a number or timestamp token longer than this is an error */
#define MD_EXPFMT_NUMBER_MAX      64

/* 16 KiB, 256, 128, 0 = unlimited samples */
void md_expfmt_limits_default(struct md_expfmt_limits *lim);

/* Content-Type header value -> format (AUTO when absent or unknown: detect
 * from the body).  `text/plain` (any version) is TEXT,
 * `application/openmetrics-text` is OPENMETRICS. */
enum md_expfmt_format md_expfmt_format_from_content_type(const char *ct, size_t len);
/* Same, also returning the `escaping=` parameter (UNDERSCORES when absent).
 * ct may be NULL. */
void md_expfmt_content_type(const char *ct, size_t len, enum md_expfmt_format *fmt,
    enum md_expfmt_escaping *esc);

struct md_sample {
    struct md_str           name;     /* decoded metric name */
    const struct md_label  *labels;   /* decoded; valid only during the callback */
    size_t                  nlabels;
    double                  value;
    int                     has_ts;
    int64_t                 ts_ms;    /* OpenMetrics seconds are converted */
    enum md_metric_type     type;     /* of its family (# TYPE), UNTYPED/UNKNOWN if none */
    uint64_t                hash;     /* name + label set, independent of label order */
    unsigned                line;
};

/* non-zero return aborts the parse with that rc */
typedef int md_expfmt_sample_fn(void *arg, const struct md_sample *s);

/* Per-family filter, called once per family before its first sample:
 * return 1 to deliver its samples, 0 to only validate them. */
typedef int md_expfmt_family_fn(void *arg, struct md_str family, enum md_metric_type type);

struct md_expfmt_error {
    int      rc;
    unsigned line, col;     /* 1-based; col is a byte column */
    char     msg[256];
};

/* Parses the whole body; MD_OK only if the WHOLE body is valid.  Returns
 * MD_EPARSE (grammar or rule), MD_ELIMIT (limit named in msg), MD_ENOMEM, or
 * the callback's non-zero rc.  lim NULL = defaults; err may be NULL. */
int md_expfmt_parse(const char *body, size_t len, enum md_expfmt_format fmt,
    const struct md_expfmt_limits *lim, md_expfmt_sample_fn *fn, void *arg,
    struct md_expfmt_error *err);

/* Skip classes: a caller that will never use some samples names them by
 * their (decoded) sample name.  The parser asks once per distinct name (and
 * again after its small name cache forgot it); the answer must depend on the
 * name only.  0 = deliver; 1..MD_EXPFMT_SKIP_CLASSES-1 = do not deliver,
 * count under that class.  Any other value fails the parse (MD_ESTATE). */
#define MD_EXPFMT_SKIP_CLASSES 16
typedef int md_expfmt_skip_fn(void *arg, struct md_str sample_name);

/* Reusable parser: keeps its scratch memory and series table between bodies,
 * so a scraper parsing the same target again allocates nothing.
 *
 * Skipped samples (skip_fn): a sample whose name is classed > 0 is counted
 * (toward samples_max, and in skipped[class]) but never delivered, never
 * entered in the duplicate-series check and never given to the type rules
 * (histogram bucket order, +Inf == _count, quantile range, info == 1).
 * Once a name has been seen (and fully parsed) in the current family, its
 * later lines are skipped on a light check only (names as written, or
 * escape-free quoted names; names that need decoding, with escapes or the
 * dots/values escaping, are always parsed in full): the name bytes, braces
 * closed outside balanced quotes (escapes honoured, so a `\"` or `}` inside
 * a label value cannot end the label set), a blank and a non-empty value
 * token before the newline.  Labels are not decoded or hashed and numbers
 * are not parsed on those lines.  What stays exact: every delivered sample
 * is parsed and checked in full; the line, family and # EOF structure of
 * the body; duplicate detection among delivered series; samples_max and the
 * counts (delivered + sum of skipped = samples in the body).  What is
 * weaker: a skipped line that is malformed inside its label set or value (a
 * bad escape, invalid UTF-8, a non-number) no longer fails the body.  So
 * for every body: if the parse without skip_fn succeeds, the parse with it
 * succeeds and delivers exactly the samples of class 0, in the same order,
 * with the same content; the converse does not hold.  OpenMetrics'
 * "histogram series has no buckets" rule is not applied to a family whose
 * _bucket samples were skipped. */
struct md_expfmt_opts {
    enum md_expfmt_escaping escaping;
    md_expfmt_family_fn    *family_fn;   /* NULL: deliver every family */
    void                   *family_arg;
    md_expfmt_skip_fn      *skip_fn;     /* NULL: skip nothing */
    void                   *skip_arg;
    /* MD_EXPFMT_SKIP_CLASSES counters, zeroed by each run and filled during
     * it (complete only when the run returns MD_OK); may be NULL */
    uint64_t               *skipped;
    /* 1: parse skipped lines in full anyway (no light check); for tests
     * and tools that want every byte validated */
    int                     skip_full;
};

struct md_expfmt_parser;
struct md_expfmt_parser *md_expfmt_parser_new(void);
void md_expfmt_parser_free(struct md_expfmt_parser *ps);   /* NULL ok */
int md_expfmt_parser_run(struct md_expfmt_parser *ps, const char *body, size_t len,
    enum md_expfmt_format fmt, const struct md_expfmt_limits *lim,
    const struct md_expfmt_opts *opts, md_expfmt_sample_fn *fn, void *arg,
    struct md_expfmt_error *err);

/* The format AUTO resolves to for this body: OPENMETRICS when it ends with
 * "# EOF" (optionally followed by one LF), TEXT otherwise. */
enum md_expfmt_format md_expfmt_detect(const char *body, size_t len);

/* Unescapes a name written with scheme esc (DOTS: `__`->`_`, `_dot_`->`.`;
 * VALUES: `U__` prefix, `__`->`_`, `_<hex>_`->code point).  Names that are
 * not escaped (or invalid escapes, like prometheus/common) come back
 * unchanged.  out needs len bytes; returns the decoded length. */
size_t md_expfmt_unescape_name(enum md_expfmt_escaping esc, const char *in, size_t len,
    char *out);

const char *md_metric_type_name(enum md_metric_type t);

#endif
