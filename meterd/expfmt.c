/* expfmt.c: Prometheus text 0.0.4 and OpenMetrics 1.0 text parser.
 *
 * Owner: whoever holds the struct md_expfmt_parser (the scrape thread, or a
 * CLI); no globals, no locks, no I/O, no logging.
 *
 * Design (for throughput with every byte validated):
 * - The body is cut into lines with memchr; each line is parsed in place.
 *   Strings are views into the body unless they contain escapes or escaped
 *   names, which are decoded into a scratch area sized to the line (so views
 *   never move while a line is parsed).
 * - Label values are scanned 16 bytes at a time (SSE2) for the bytes that
 *   need attention: '"', '\\', NUL and non-ASCII (validated as UTF-8).
 * - Identical bytes parse identically: the label section of a line is
 *   compared with the previous sample line's (32 bytes at a time) and the
 *   results for the common prefix (views, label hashes, the partial label-set
 *   hash, the duplicate-check mask) are taken over; consecutive histogram
 *   lines share everything up to `le`.  Metric names, label names and
 *   escape-free label values byte-identical to ones already validated (same
 *   index on an earlier line) come from small caches.  Reuse never crosses
 *   the two metric-name forms (`name{` vs `{"name",`) or decoded strings.
 * - A label set is hashed once: the series hash is the name hash combined
 *   with the SUM of per-label terms, so it does not depend on label order,
 *   and a histogram series key is the same sum minus the `le` term.
 * - Duplicate series: (hash, line) records are appended per sample and
 *   checked once at the end with a counting-scatter pass into ~n/4 buckets
 *   (sequential memory, n log n worst case).  Non-contiguous families and
 *   histogram series use a small open-addressing set.  Duplicate label names:
 *   a 64-bit name-hash mask, then a linear check up to 16 labels and a
 *   per-line hash table above (never quadratic).
 * - Memory is kept in the parser between bodies: a reused parser allocates
 *   nothing in the steady state.
 * - Skipping (opts.skip_fn, the promise is in expfmt.h): a name's class is
 *   cached with the metric-name cache entry (unquoted names) or in a twin
 *   cache of escape-free quoted names.  A line whose cached name has a skip
 *   class and was already seen in the current family (same fam_gen, so its
 *   suffix is known to be valid) takes skip_light: braces and quotes are
 *   balanced with memchr-like scans, nothing is decoded or hashed.  Every
 *   other line is parsed in full; a skipped one then stops before the type
 *   rules, the duplicate records and the callback.  Skipped lines never
 *   touch the prefix-reuse state, which stays that of the last full line.
 * Invariants: nothing is read outside [body, body+len); every error names
 * line, column and what was expected; a limit error names the limit. */
#include "expfmt.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "util.h"

/* sample name suffixes (OpenMetrics 1.0 "Metric types" / text 0.0.4) */
enum sfx {
    SFX_NONE = 0, SFX_TOTAL, SFX_CREATED, SFX_BUCKET, SFX_SUM, SFX_COUNT,
    SFX_GSUM, SFX_GCOUNT, SFX_INFO, SFX_N
};

static const struct { const char *s; size_t len; } sfx_str[SFX_N] = {
    { "", 0 }, { "_total", 6 }, { "_created", 8 }, { "_bucket", 7 }, { "_sum", 4 },
    { "_count", 6 }, { "_gsum", 5 }, { "_gcount", 7 }, { "_info", 5 },
};

#define B(x) (1u << (x))

/* suffixes a family of each type may use */
static unsigned
allowed_sfx(int om, enum md_metric_type t)
{
    switch (t) {
    case MD_TYPE_COUNTER:
        /* OpenMetrics counters MUST end in _total; text 0.0.4 uses the name */
        return om ? B(SFX_TOTAL) | B(SFX_CREATED) : B(SFX_NONE);
    case MD_TYPE_HISTOGRAM:
        return B(SFX_BUCKET) | B(SFX_SUM) | B(SFX_COUNT) | (om ? B(SFX_CREATED) : 0);
    case MD_TYPE_GAUGE_HISTOGRAM:
        return B(SFX_BUCKET) | B(SFX_GSUM) | B(SFX_GCOUNT);
    case MD_TYPE_SUMMARY:
        return B(SFX_NONE) | B(SFX_SUM) | B(SFX_COUNT) | (om ? B(SFX_CREATED) : 0);
    case MD_TYPE_INFO:
        return B(SFX_INFO);
    default:
        return B(SFX_NONE);
    }
}

#define TAG_FAM   0x6a09e667f3bcc908ULL
#define TAG_GROUP 0xbb67ae8584caa73bULL
#define K1 0x9e3779b97f4a7c15ULL
#define K2 0xc2b2ae3d27d4eb4fULL

static inline uint64_t
fmix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t
rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t
hbytes(const char *s, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ (n * K1);

    while (n >= 8) {
        uint64_t w;

        memcpy(&w, s, 8);
        h = rotl(h ^ (w * K2), 31) * K1;
        s += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;

        memcpy(&w, s, n);
        h = rotl(h ^ (w * K2), 29) * K1;
    }
    return fmix(h);
}

static inline uint64_t
label_term(uint64_t name_h, const char *v, size_t vlen)
{
    return fmix(hbytes(v, vlen, name_h) ^ (name_h * K2));
}

static inline uint64_t
series_hash(uint64_t name_h, uint64_t sum)
{
    return fmix(name_h ^ rotl(sum * K1, 17));
}

struct name_cache {
    const char *raw;    /* view into the body of the previous line */
    size_t      len;    /* 0: no entry */
    uint64_t    h;
    uint64_t    fam_gen;    /* metric names: sx is valid for this family */
    int         sx;
    int         skip;       /* metric names: skip class, -1 = not asked yet */
    /* label names: the escape-free value last seen at this index, its term */
    const char *vraw;
    size_t      vlen;
    uint64_t    vh, vterm;
    int         vok;
};

struct group {
    int      active;
    uint64_t key;
    unsigned line;
    size_t   nbuckets;
    double   last_le, last_bucket;
    int      have_inf, have_count;
    double   inf_val, count_val;
    unsigned count_line;
};

struct series_rec {
    uint64_t h;
    uint64_t line;
};

struct le_cache {
    const char *p;
    size_t      len;
    double      v;
};

#define LE_CACHE_N 64
#define LINEAR_DUP_MAX 16
#define MCACHE_N 4
#define LM_BLOCKS 64    /* close_brace remembers lines up to 4 KiB */

struct md_expfmt_parser {
    /* per run */
    const char *body, *end, *ls;
    unsigned line;
    int om, seen_eof;
    enum md_expfmt_escaping esc;
    int decode_names;           /* DOTS/VALUES: unquoted names need unescaping */
    struct md_expfmt_limits lim;
    md_expfmt_sample_fn *fn;
    void *arg;
    md_expfmt_family_fn *ffn;
    void *farg;
    md_expfmt_skip_fn *sfn;
    void *sarg;
    int skip_full;
    uint64_t skipped[MD_EXPFMT_SKIP_CLASSES];
    struct md_expfmt_error *err;
    uint64_t nsamples;

    /* per line */
    struct md_label *labels;
    uint64_t *lname_h;          /* hash of each label name */
    uint64_t *lterm;            /* label term of each label */
    struct name_cache *ncache;  /* label names of the previous line by index */
    size_t *lend;               /* offset in the line after label i's closing quote */
    uint64_t *psum;             /* sum of label terms 0..i */
    uint64_t *pmask;            /* name-hash bit mask of labels 0..i */
    size_t labels_cap;
    size_t first_dec;           /* first label of this line with a decoded string */
    /* the previous sample line, for prefix reuse */
    const char *lbase;          /* '{' of the current line's labels */
    const char *pl_brace;
    size_t pl_len, pl_n;
    int pl_ok, pl_le, pl_quantile;
    /* quoted metric name inside the braces: offsets from '{' */
    int pl_qname;
    size_t pl_qname_off, pl_qname_len, pl_qname_end;
    uint64_t pl_qname_h;
    size_t qname_end;           /* this line: after the name's closing quote */
    int qname_dec;
    /* series hashes of this body, checked for duplicates at the end */
    struct series_rec *recs, *recs_tmp;
    size_t nrecs, recs_cap;
    uint32_t *buckets;
    size_t bucket_cap;
    size_t prev_n;
    struct name_cache mcache[MCACHE_N];   /* recent metric names */
    unsigned mcache_next;
    struct name_cache qcache[MCACHE_N];   /* recent escape-free {"quoted" names} */
    unsigned qcache_next;
    /* close_brace's memo of the previous light check (NULL: none) */
    const char *lm_base, *lm_prev;
    size_t lm_n;                          /* whole blocks remembered */
    unsigned char lm_in[LM_BLOCKS];       /* inside a string after block i */
    char *scratch;
    size_t scratch_cap, scratch_len;
    uint32_t *ltab_idx, *ltab_gen;
    size_t ltab_cap;
    uint32_t gen;

    /* family and histogram-series keys seen in this body */
    uint64_t *set;
    size_t set_cap, set_count;

    /* current family */
    int fam_open;
    char *fam;
    size_t fam_len, fam_cap;
    uint64_t fam_h;
    enum md_metric_type fam_type;
    int fam_help, fam_typed, fam_unit, fam_deliver;
    unsigned fam_skipped;       /* B(sfx) of the suffixes skipped in this family */
    uint64_t fam_samples;
    uint64_t fam_gen;           /* bumped whenever the family or its type changes */
    struct group g;
    struct le_cache lec[LE_CACHE_N];
};

/* ---- errors ---- */

static int
perr(struct md_expfmt_parser *ps, const char *at, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
perr(struct md_expfmt_parser *ps, const char *at, int rc, const char *fmt, ...)
{
    va_list ap;

    if (ps->err != NULL) {
        ps->err->rc = rc;
        ps->err->line = ps->line;
        ps->err->col = at != NULL && at >= ps->ls ? (unsigned)(at - ps->ls) + 1 : 1;
        va_start(ap, fmt);
        (void)vsnprintf(ps->err->msg, sizeof(ps->err->msg), fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* printable excerpt of a name for messages */
#define SHOW(s) (int)((s).len > 80 ? 80 : (s).len), (s).p

/* ---- memory ---- */

static int
grow_labels(struct md_expfmt_parser *ps, size_t need)
{
    size_t cap = ps->labels_cap ? ps->labels_cap : 32;
    void *a, *b, *c, *d, *e, *f, *g;

    if (need <= ps->labels_cap)
        return MD_OK;
    while (cap < need)
        cap *= 2;
    a = md_realloc(ps->labels, cap * sizeof(*ps->labels));
    if (a != NULL)
        ps->labels = a;
    b = md_realloc(ps->lname_h, cap * sizeof(*ps->lname_h));
    if (b != NULL)
        ps->lname_h = b;
    c = md_realloc(ps->lterm, cap * sizeof(*ps->lterm));
    if (c != NULL)
        ps->lterm = c;
    d = md_realloc(ps->ncache, cap * sizeof(*ps->ncache));
    if (d != NULL)
        ps->ncache = d;
    e = md_realloc(ps->lend, cap * sizeof(*ps->lend));
    if (e != NULL)
        ps->lend = e;
    f = md_realloc(ps->psum, cap * sizeof(*ps->psum));
    if (f != NULL)
        ps->psum = f;
    g = md_realloc(ps->pmask, cap * sizeof(*ps->pmask));
    if (g != NULL)
        ps->pmask = g;
    if (a == NULL || b == NULL || c == NULL || d == NULL || e == NULL || f == NULL || g == NULL)
        return MD_ENOMEM;
    memset(ps->ncache + ps->labels_cap, 0, (cap - ps->labels_cap) * sizeof(*ps->ncache));
    ps->labels_cap = cap;
    return MD_OK;
}

/* 1: inserted, 0: already present, <0: out of memory */
static int
set_insert(struct md_expfmt_parser *ps, uint64_t key)
{
    size_t mask, i;

    if (key == 0)
        key = 1;    /* 0 marks an empty slot */
    if ((ps->set_count + 1) * 2 > ps->set_cap) {
        size_t ncap = ps->set_cap ? ps->set_cap * 2 : 4096;
        uint64_t *n = md_calloc(ncap, sizeof(*n));

        if (n == NULL)
            return -1;
        for (size_t j = 0; j < ps->set_cap; j++) {
            uint64_t k = ps->set[j];

            if (k == 0)
                continue;
            i = (size_t)k & (ncap - 1);
            while (n[i] != 0)
                i = (i + 1) & (ncap - 1);
            n[i] = k;
        }
        md_free(ps->set);
        ps->set = n;
        ps->set_cap = ncap;
    }
    mask = ps->set_cap - 1;
    i = (size_t)key & mask;
    while (ps->set[i] != 0) {
        if (ps->set[i] == key)
            return 0;
        i = (i + 1) & mask;
    }
    ps->set[i] = key;
    ps->set_count++;
    return 1;
}

/* ---- character classes ---- */

/* 1: [a-zA-Z_:] metric-name start, 2: [a-zA-Z0-9_:], 4: label start
 * [a-zA-Z_], 8: label char [a-zA-Z0-9_] */
static unsigned char cls[256];
static pthread_once_t cls_once = PTHREAD_ONCE_INIT;

static void
init_cls(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned v = 0;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        int digit = c >= '0' && c <= '9';

        if (alpha || c == '_' || c == ':')
            v |= 1;
        if (alpha || digit || c == '_' || c == ':')
            v |= 2;
        if (alpha || c == '_')
            v |= 4;
        if (alpha || digit || c == '_')
            v |= 8;
        cls[c] = (unsigned char)v;
    }
}

static inline int
is_blank(int om, char c)
{
    return !om && (c == ' ' || c == '\t');
}

static inline const char *
skip_blanks(int om, const char *q, const char *eol)
{
    if (om)
        return q;
    while (q < eol && (*q == ' ' || *q == '\t'))
        q++;
    return q;
}

/* Validates one UTF-8 sequence at q (q < eol, *q >= 0x80); returns its
 * length or 0 when invalid (overlong, surrogate, > U+10FFFF, truncated). */
static size_t
utf8_seq(const unsigned char *q, const unsigned char *eol)
{
    unsigned c = q[0];
    size_t n;
    unsigned cp, min;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2; cp = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3; cp = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)(eol - q) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((q[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (q[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* first byte in [q, eol) that is '"', '\\', NUL or >= 0x80 */
static inline const char *
scan_plain(const char *q, const char *eol)
{
#ifdef __SSE2__
    const __m128i dq = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
    const __m128i z = _mm_setzero_si128();

    while (eol - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
        __m128i m = _mm_or_si128(_mm_cmpeq_epi8(v, dq), _mm_cmpeq_epi8(v, bs));
        unsigned mask;

        m = _mm_or_si128(m, _mm_cmpeq_epi8(v, z));
        mask = (unsigned)_mm_movemask_epi8(m) | (unsigned)_mm_movemask_epi8(v);
        if (mask != 0)
            return q + __builtin_ctz(mask);
        q += 16;
    }
#endif
    while (q < eol) {
        unsigned char c = (unsigned char)*q;

        if (c == '"' || c == '\\' || c == 0 || c >= 0x80)
            return q;
        q++;
    }
    return q;
}

/* Reads a quoted string starting at *qp (which points at '"').  Escapes
 * \\ \" \n (others are errors); content must be UTF-8; NUL is allowed only
 * inside OpenMetrics strings.  The result is a view into the body, or the
 * decoded copy in scratch when escapes were present.  *decoded says which. */
static int
read_quoted(struct md_expfmt_parser *ps, const char **qp, const char *eol,
    struct md_str *out, int *decoded, const char *what)
{
    const char *q = *qp + 1, *start = q;
    char *dst = NULL;
    size_t dlen = 0;

    for (;;) {
        const char *s = scan_plain(q, eol);
        unsigned char c;

        if (dst != NULL && s > q) {
            memcpy(dst + dlen, q, (size_t)(s - q));
            dlen += (size_t)(s - q);
        }
        q = s;
        if (q >= eol)
            return perr(ps, q, MD_EPARSE, "%s: missing closing '\"' before end of line", what);
        c = (unsigned char)*q;
        if (c == '"')
            break;
        if (c == '\\') {
            char r;

            if (q + 1 >= eol)
                return perr(ps, q, MD_EPARSE, "%s: '\\' at end of line", what);
            if (q[1] == '\\')
                r = '\\';
            else if (q[1] == '"')
                r = '"';
            else if (q[1] == 'n')
                r = '\n';
            else
                return perr(ps, q, MD_EPARSE,
                    "%s: invalid escape sequence '\\%c' (only \\\\, \\\" and \\n)", what,
                    (q[1] >= 0x20 && q[1] < 0x7f) ? q[1] : '?');
            if (dst == NULL) {
                dst = ps->scratch + ps->scratch_len;
                dlen = (size_t)(q - start);
                memcpy(dst, start, dlen);
            }
            dst[dlen++] = r;
            q += 2;
            continue;
        }
        if (c == 0) {
            if (!ps->om)
                return perr(ps, q, MD_EPARSE, "%s: NUL byte", what);
            if (dst != NULL)
                dst[dlen++] = 0;
            q++;
            continue;
        }
        {
            size_t n = utf8_seq((const unsigned char *)q, (const unsigned char *)eol);

            if (n == 0)
                return perr(ps, q, MD_EPARSE, "%s: invalid UTF-8", what);
            if (dst != NULL) {
                memcpy(dst + dlen, q, n);
                dlen += n;
            }
            q += n;
        }
    }
    if (dst != NULL) {
        out->p = dst;
        out->len = dlen;
        ps->scratch_len += dlen;
        *decoded = 1;
    } else {
        out->p = start;
        out->len = (size_t)(q - start);
        *decoded = 0;
    }
    *qp = q + 1;
    return MD_OK;
}

static struct md_str
decode_name(struct md_expfmt_parser *ps, const char *p, size_t len)
{
    struct md_str s = { p, len };
    char *dst = ps->scratch + ps->scratch_len;
    size_t n = md_expfmt_unescape_name(ps->esc, p, len, dst);

    if (n != len || memcmp(dst, p, len) != 0) {
        s.p = dst;
        s.len = n;
        ps->scratch_len += n;
    }
    return s;
}

/* an unquoted metric name (text/OM `metricname`) */
static int
read_metric_name(struct md_expfmt_parser *ps, const char **qp, const char *eol,
    struct md_str *out, int *quoted)
{
    const char *q = *qp, *s = q;
    int dec;
    int rc;

    if (q < eol && *q == '"') {
        rc = read_quoted(ps, qp, eol, out, &dec, "quoted metric name");
        if (rc != MD_OK)
            return rc;
        if (out->len == 0)
            return perr(ps, q, MD_EPARSE, "empty quoted metric name");
        *quoted = 1;
    } else {
        if (q >= eol || !(cls[(unsigned char)*q] & 1))
            return perr(ps, q, MD_EPARSE, "expected a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
        q++;
        while (q < eol && (cls[(unsigned char)*q] & 2))
            q++;
        *out = ps->decode_names ? decode_name(ps, s, (size_t)(q - s))
                                : (struct md_str){ s, (size_t)(q - s) };
        *qp = q;
        *quoted = 0;
    }
    if (out->len > ps->lim.name_max)
        return perr(ps, s, MD_ELIMIT, "metric name is %zu bytes, over the limit name_max=%zu",
            out->len, ps->lim.name_max);
    return MD_OK;
}

/* ---- numbers ---- */

static int
ci_eq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);

    if (n != l)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return 0;
    }
    return 1;
}

static size_t
digits(const char *s, size_t i, size_t n)
{
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* realnumber (OpenMetrics ABNF; Go ParseFloat decimal syntax without
 * underscores): [sign] (1*DIGIT ["." *DIGIT] / "." 1*DIGIT) ["e" [sign] 1*DIGIT] */
static int
decimal_syntax(const char *s, size_t n)
{
    size_t i = 0, a, b;

    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    a = digits(s, i, n);
    b = a;
    if (b < n && s[b] == '.') {
        b = digits(s, b + 1, n);
        if (a == i && b == a + 1)
            return 0;   /* "." alone */
    } else if (a == i) {
        return 0;
    }
    i = b;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t e;

        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        e = digits(s, i, n);
        if (e == i)
            return 0;
        i = e;
    }
    return i == n;
}

static int
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Go hex float: [sign] 0x hex ["." hex] p [sign] digits (the exponent is
 * mandatory in Go) */
static int
hex_syntax(const char *s, size_t n)
{
    size_t i = 0, a;

    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    if (i + 2 > n || s[i] != '0' || (s[i + 1] != 'x' && s[i + 1] != 'X'))
        return 0;
    i += 2;
    a = i;
    while (i < n && is_hex(s[i]))
        i++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_hex(s[i]))
            i++;
        if (i == a + 1)
            return 0;
    } else if (i == a) {
        return 0;
    }
    if (i >= n || (s[i] != 'p' && s[i] != 'P'))
        return 0;
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    a = i;
    i = digits(s, i, n);
    return i > a && i == n;
}

/* Parses a sample value / le / quantile.  text: Go ParseFloat spellings
 * (decimal, hex with p exponent, Inf/Infinity with optional sign, NaN, case
 * insensitive); OpenMetrics: realnumber / [sign] inf(inity) / nan. */
static int
parse_number(int om, const char *s, size_t n, double *out)
{
    char buf[MD_EXPFMT_NUMBER_MAX + 1];
    char *endp;
    double v;
    size_t i = 0;

    if (n == 0 || n > MD_EXPFMT_NUMBER_MAX)
        return MD_EPARSE;
    /* fast path: up to 15 digits are exact in a double */
    if (n <= 15) {
        uint64_t u = 0;
        int neg = 0;

        if (s[0] == '-' || s[0] == '+') {
            neg = s[0] == '-';
            i = 1;
        }
        if (i < n) {
            size_t j = i;

            while (j < n && s[j] >= '0' && s[j] <= '9') {
                u = u * 10 + (uint64_t)(s[j] - '0');
                j++;
            }
            if (j == n) {
                *out = neg ? -(double)u : (double)u;
                return MD_OK;
            }
        }
        i = 0;
    }
    if (s[0] == '+' || s[0] == '-')
        i = 1;
    if (ci_eq(s + i, n - i, "inf") || ci_eq(s + i, n - i, "infinity")) {
        *out = s[0] == '-' ? -INFINITY : INFINITY;
        return MD_OK;
    }
    if (ci_eq(s, n, "nan")) {
        *out = NAN;
        return MD_OK;
    }
    if (!decimal_syntax(s, n) && (om || !hex_syntax(s, n)))
        return MD_EPARSE;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    v = strtod(buf, &endp);
    if (endp != buf + n)
        return MD_EPARSE;
    if (isinf(v))
        return MD_EPARSE;   /* out of range: Go ParseFloat fails with ErrRange */
    *out = v;
    return MD_OK;
}

/* text: int64 milliseconds; OpenMetrics: realnumber seconds */
static int
parse_timestamp(int om, const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > MD_EXPFMT_NUMBER_MAX)
        return MD_EPARSE;
    if (!om) {
        size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
        uint64_t u;
        int rc;

        if (i == n)
            return MD_EPARSE;
        rc = md_parse_u64(s + i, n - i, s[0] == '-' ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &u);
        if (rc != MD_OK)
            return rc;
        *out = s[0] == '-' ? (int64_t)(0 - u) : (int64_t)u;
        return MD_OK;
    } else {
        double v;
        int rc;

        if (!decimal_syntax(s, n))
            return MD_EPARSE;
        rc = parse_number(1, s, n, &v);
        if (rc != MD_OK)
            return rc;
        v = v * 1000.0;
        if (!(fabs(v) < 9.2e18))
            return MD_ELIMIT;
        *out = (int64_t)llround(v);
        return MD_OK;
    }
}

/* ---- families and histogram groups ---- */

static int
group_finish(struct md_expfmt_parser *ps)
{
    struct group *g = &ps->g;
    unsigned save = ps->line;
    int rc = MD_OK;

    if (!g->active)
        return MD_OK;
    g->active = 0;
    ps->line = g->line;
    if (g->nbuckets > 0 && !g->have_inf) {
        rc = perr(ps, NULL, MD_EPARSE,
            "histogram series starting here has no le=\"+Inf\" bucket");
    } else if (g->nbuckets == 0 && ps->om && ps->fam_type == MD_TYPE_HISTOGRAM &&
        !(ps->fam_skipped & B(SFX_BUCKET))) {
        rc = perr(ps, NULL, MD_EPARSE,
            "OpenMetrics histogram series starting here has no buckets");
    } else if (g->have_inf && g->have_count && g->inf_val != g->count_val) {
        ps->line = g->count_line;
        rc = perr(ps, NULL, MD_EPARSE,
            "histogram _count %.17g differs from its le=\"+Inf\" bucket %.17g",
            g->count_val, g->inf_val);
    }
    ps->line = save;
    return rc;
}

static int
family_close(struct md_expfmt_parser *ps)
{
    int rc;

    if (!ps->fam_open)
        return MD_OK;
    rc = group_finish(ps);
    ps->fam_open = 0;
    return rc;
}

/* opens family `name` (closing the current one); a name seen before means
 * the family is not one contiguous group */
static int
family_open(struct md_expfmt_parser *ps, struct md_str name, uint64_t name_h, const char *at)
{
    int rc = family_close(ps);
    int ins;

    if (rc != MD_OK)
        return rc;
    ins = set_insert(ps, fmix(name_h ^ TAG_FAM));
    if (ins < 0)
        return perr(ps, at, MD_ENOMEM, "out of memory");
    if (ins == 0)
        return perr(ps, at, MD_EPARSE,
            "metric family \"%.*s\" appears again after other families: "
            "all lines of a family must form one group", SHOW(name));
    if (name.len > ps->fam_cap) {
        char *n = md_realloc(ps->fam, name.len + 1);

        if (n == NULL)
            return perr(ps, at, MD_ENOMEM, "out of memory");
        ps->fam = n;
        ps->fam_cap = name.len;
    }
    memcpy(ps->fam, name.p, name.len);
    ps->fam_len = name.len;
    ps->fam_h = name_h;
    ps->fam_type = ps->om ? MD_TYPE_UNKNOWN : MD_TYPE_UNTYPED;
    ps->fam_help = ps->fam_typed = ps->fam_unit = 0;
    ps->fam_samples = 0;
    ps->fam_deliver = 1;
    ps->fam_skipped = 0;
    ps->fam_open = 1;
    ps->fam_gen++;
    return MD_OK;
}

enum meta { META_HELP, META_TYPE, META_UNIT };

static int
metadata(struct md_expfmt_parser *ps, enum meta kind, struct md_str name, const char *at)
{
    static const char *const kw[] = { "HELP", "TYPE", "UNIT" };
    int *flag;
    int rc;

    if (!ps->fam_open || name.len != ps->fam_len || memcmp(name.p, ps->fam, name.len) != 0) {
        rc = family_open(ps, name, hbytes(name.p, name.len, 0), at);
        if (rc != MD_OK)
            return rc;
    } else if (ps->fam_samples > 0) {
        return perr(ps, at, MD_EPARSE, "# %s for \"%.*s\" after its samples", kw[kind],
            SHOW(name));
    }
    flag = kind == META_HELP ? &ps->fam_help : kind == META_TYPE ? &ps->fam_typed
                                                                  : &ps->fam_unit;
    if (*flag)
        return perr(ps, at, MD_EPARSE, "second # %s for \"%.*s\"", kw[kind], SHOW(name));
    *flag = 1;
    return MD_OK;
}

static const struct { const char *s; enum md_metric_type t; int om_only, text_only; }
type_names[] = {
    { "counter", MD_TYPE_COUNTER, 0, 0 }, { "gauge", MD_TYPE_GAUGE, 0, 0 },
    { "histogram", MD_TYPE_HISTOGRAM, 0, 0 }, { "summary", MD_TYPE_SUMMARY, 0, 0 },
    { "untyped", MD_TYPE_UNTYPED, 0, 1 }, { "unknown", MD_TYPE_UNKNOWN, 1, 0 },
    { "gaugehistogram", MD_TYPE_GAUGE_HISTOGRAM, 1, 0 }, { "info", MD_TYPE_INFO, 1, 0 },
    { "stateset", MD_TYPE_STATESET, 1, 0 },
};

const char *
md_metric_type_name(enum md_metric_type t)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (type_names[i].t == t)
            return type_names[i].s;
    return "untyped";
}

/* HELP text: text 0.0.4 escapes \\ and \n; OpenMetrics also \" */
static int
check_help(struct md_expfmt_parser *ps, const char *q, const char *eol)
{
    while (q < eol) {
        unsigned char c = (unsigned char)*q;

        if (c == '\\') {
            if (q + 1 >= eol || !(q[1] == '\\' || q[1] == 'n' || (ps->om && q[1] == '"')))
                return perr(ps, q, MD_EPARSE, "HELP: invalid escape sequence (only %s)",
                    ps->om ? "\\\\, \\\" and \\n" : "\\\\ and \\n");
            q += 2;
        } else if (c == 0) {
            return perr(ps, q, MD_EPARSE, "NUL byte in HELP");
        } else if (ps->om && c == '"') {
            return perr(ps, q, MD_EPARSE, "HELP: unescaped '\"'");
        } else if (c >= 0x80) {
            size_t n = utf8_seq((const unsigned char *)q, (const unsigned char *)eol);

            if (n == 0)
                return perr(ps, q, MD_EPARSE, "HELP: invalid UTF-8");
            q += n;
        } else {
            q++;
        }
    }
    return MD_OK;
}

static int
comment_line(struct md_expfmt_parser *ps, const char *p, const char *eol)
{
    const char *q = p + 1, *kw, *at;
    struct md_str name;
    enum meta kind;
    int quoted, rc;
    size_t kwlen;

    if (ps->om) {
        if ((size_t)(eol - p) == 5 && memcmp(p, "# EOF", 5) == 0) {
            ps->seen_eof = 1;
            return MD_OK;
        }
        if (eol - p < 7 || p[1] != ' ' || p[6] != ' ')
            return perr(ps, p, MD_EPARSE,
                "expected \"# HELP \", \"# TYPE \", \"# UNIT \" or \"# EOF\" "
                "(OpenMetrics allows no other comments)");
        kw = p + 2;
        q = p + 7;
    } else {
        const char *nul = memchr(p, 0, (size_t)(eol - p));

        if (nul != NULL)
            return perr(ps, nul, MD_EPARSE, "NUL byte in comment");
        q = skip_blanks(0, q, eol);
        kw = q;
        while (q < eol && *q != ' ' && *q != '\t')
            q++;
        kwlen = (size_t)(q - kw);
        q = skip_blanks(0, q, eol);
        if (q == eol)
            return MD_OK;     /* "# HELP" alone is a comment, as in Go's parser */
    }
    if (ps->om)
        kwlen = 4;
    if (kwlen == 4 && memcmp(kw, "HELP", 4) == 0)
        kind = META_HELP;
    else if (kwlen == 4 && memcmp(kw, "TYPE", 4) == 0)
        kind = META_TYPE;
    else if (ps->om && kwlen == 4 && memcmp(kw, "UNIT", 4) == 0)
        kind = META_UNIT;
    else if (ps->om)
        return perr(ps, kw, MD_EPARSE, "unknown metadata \"# %.4s\" (expected HELP, TYPE, "
            "UNIT or EOF)", kw);
    else
        return MD_OK;   /* an ordinary comment */
    at = q;
    rc = read_metric_name(ps, &q, eol, &name, &quoted);
    if (rc != MD_OK)
        return rc;
    if (kind == META_HELP) {
        if (q < eol) {
            if (*q != ' ' && *q != '\t')
                return perr(ps, q, MD_EPARSE, "expected a space after the metric name");
            q = ps->om ? q + 1 : skip_blanks(0, q, eol);
        } else if (ps->om) {
            return perr(ps, q, MD_EPARSE, "expected a space and the help text");
        }
        rc = check_help(ps, q, eol);
    } else if (kind == META_TYPE) {
        const char *t;
        size_t tl, i;

        if (q >= eol || (*q != ' ' && !is_blank(ps->om, *q)))
            return perr(ps, q, MD_EPARSE, "expected a space and the metric type");
        q = ps->om ? q + 1 : skip_blanks(0, q, eol);
        t = q;
        while (q < eol && *q != ' ' && *q != '\t')
            q++;
        tl = (size_t)(q - t);
        if (skip_blanks(ps->om, q, eol) != eol)
            return perr(ps, q, MD_EPARSE, "unexpected text after the metric type");
        for (i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
            int hit = ps->om ? (tl == strlen(type_names[i].s) &&
                                   memcmp(t, type_names[i].s, tl) == 0)
                             : ci_eq(t, tl, type_names[i].s);

            if (hit && (ps->om ? !type_names[i].text_only : !type_names[i].om_only))
                break;
        }
        if (i == sizeof(type_names) / sizeof(type_names[0]))
            return perr(ps, t, MD_EPARSE, "unknown metric type \"%.*s\" (expected %s)",
                (int)(tl > 40 ? 40 : tl), t,
                ps->om ? "counter, gauge, histogram, gaugehistogram, stateset, info, "
                         "summary or unknown"
                       : "counter, gauge, histogram, summary or untyped");
        rc = metadata(ps, kind, name, at);
        if (rc == MD_OK) {
            ps->fam_type = type_names[i].t;
            ps->fam_gen++;
        }
        return rc;
    } else {
        /* UNIT: the family name MUST end with _<unit> (OpenMetrics 1.0) */
        const char *u;
        size_t ul;

        if (q >= eol || *q != ' ')
            return perr(ps, q, MD_EPARSE, "expected a space and the unit");
        u = ++q;
        while (q < eol && (cls[(unsigned char)*q] & 2))
            q++;
        if (q != eol)
            return perr(ps, q, MD_EPARSE, "invalid character in unit");
        ul = (size_t)(q - u);
        if (ul > 0 && (name.len < ul + 1 || name.p[name.len - ul - 1] != '_' ||
                memcmp(name.p + name.len - ul, u, ul) != 0))
            return perr(ps, u, MD_EPARSE, "metric family \"%.*s\" does not end with its unit "
                "\"_%.*s\"", SHOW(name), (int)(ul > 40 ? 40 : ul), u);
    }
    if (rc != MD_OK)
        return rc;
    return metadata(ps, kind, name, at);
}

/* ---- duplicate label names ---- */

static int
ltab_reset(struct md_expfmt_parser *ps, size_t want)
{
    size_t cap = 64;
    uint32_t *a, *b;

    while (cap < want * 2)
        cap *= 2;
    if (cap <= ps->ltab_cap)
        return MD_OK;
    a = md_calloc(cap, sizeof(*a));
    b = md_calloc(cap, sizeof(*b));
    if (a == NULL || b == NULL) {
        md_free(a);
        md_free(b);
        return MD_ENOMEM;
    }
    md_free(ps->ltab_idx);
    md_free(ps->ltab_gen);
    ps->ltab_idx = a;
    ps->ltab_gen = b;
    ps->ltab_cap = cap;
    ps->gen = 0;
    return MD_OK;
}

/* 1 when label `i` repeats the name of an earlier label of this line */
static int
ltab_dup(struct md_expfmt_parser *ps, size_t i)
{
    size_t mask = ps->ltab_cap - 1;
    size_t s = (size_t)ps->lname_h[i] & mask;

    while (ps->ltab_gen[s] == ps->gen) {
        size_t j = ps->ltab_idx[s];

        if (ps->lname_h[j] == ps->lname_h[i] &&
            ps->labels[j].name.len == ps->labels[i].name.len &&
            memcmp(ps->labels[j].name.p, ps->labels[i].name.p, ps->labels[i].name.len) == 0)
            return 1;
        s = (s + 1) & mask;
    }
    ps->ltab_gen[s] = ps->gen;
    ps->ltab_idx[s] = (uint32_t)i;
    return 0;
}

static int
dup_label(struct md_expfmt_parser *ps, size_t base, size_t i, uint64_t *mask, int *dup)
{
    size_t n = i - base;
    uint64_t bit = 1ULL << (ps->lname_h[i] >> 58);

    *dup = 0;
    if (n < LINEAR_DUP_MAX) {
        /* a name whose hash bit is new on this line cannot repeat */
        if ((*mask & bit) == 0) {
            *mask |= bit;
            return MD_OK;
        }
        for (size_t j = base; j < i; j++) {
            if (ps->lname_h[j] == ps->lname_h[i] &&
                ps->labels[j].name.len == ps->labels[i].name.len &&
                memcmp(ps->labels[j].name.p, ps->labels[i].name.p,
                    ps->labels[i].name.len) == 0) {
                *dup = 1;
                return MD_OK;
            }
        }
        return MD_OK;
    }
    if (n == LINEAR_DUP_MAX || n * 2 >= ps->ltab_cap) {
        /* (re)build the table from the labels so far; amortised O(1) */
        if (ltab_reset(ps, n * 2 + 2) != MD_OK)
            return MD_ENOMEM;
        if (++ps->gen == 0) {
            memset(ps->ltab_gen, 0, ps->ltab_cap * sizeof(*ps->ltab_gen));
            ps->gen = 1;
        }
        for (size_t j = base; j < i; j++)
            (void)ltab_dup(ps, j);
    }
    *dup = ltab_dup(ps, i);
    return MD_OK;
}

/* ---- labels ---- */

struct line_labels {
    size_t   n;
    uint64_t sum;
    uint64_t mask;           /* name-hash bits, for the duplicate check */
    int      le, quantile;   /* index or -1 */
};

/* Takes over the first k labels of the previous line, whose label section
 * started at ps->pl_brace, for this line's section starting at r (the bytes
 * up to the k-th label's end are equal): their pointers move by the
 * distance, their hash sums and masks come from the prefix arrays.  Returns
 * where parsing goes on. */
static inline const char *
take_prev_labels(struct md_expfmt_parser *ps, const char *r, size_t k, struct line_labels *ll)
{
    ptrdiff_t delta = r - ps->pl_brace;

    for (size_t i = 0; i < k; i++) {
        ps->labels[i].name.p += delta;
        ps->labels[i].value.p += delta;
    }
    ll->sum = ps->psum[k - 1];
    ll->mask = ps->pmask[k - 1];
    ll->le = ps->pl_le >= 0 && (size_t)ps->pl_le < k ? ps->pl_le : -1;
    ll->quantile = ps->pl_quantile >= 0 && (size_t)ps->pl_quantile < k ? ps->pl_quantile : -1;
    return r + ps->lend[k - 1];
}

/* Parses "{...}" starting at *qp ('{').  Labels go to ps->labels[base..].
 * When mname is non-NULL and mname->p is NULL, a leading quoted string
 * without '=' is taken as the metric name (Prometheus 3 UTF-8 syntax). */
static int
parse_labels(struct md_expfmt_parser *ps, const char **qp, const char *eol, size_t base,
    int use_cache, struct md_str *mname, struct line_labels *ll, size_t resume, int resumed)
{
    const char *q = *qp + 1;
    size_t i = base;
    int rc, first = 1, after_comma = 0;

    if (resumed) {
        /* the metric name and labels 0..resume-1 were taken over from the
         * previous line; *qp is just after the last closing quote taken */
        q = *qp;
        i = resume;
        first = 0;
        q = skip_blanks(ps->om, q, eol);
        if (q < eol && *q == ',') {
            after_comma = 1;
            q++;
        }
    } else {
        ll->sum = 0;
        ll->mask = 0;
        ll->le = ll->quantile = -1;
    }
    for (;;) {
        struct md_label *l;
        const char *at;
        struct md_str nm;
        struct name_cache *vc, *qc;
        const char *eq;
        uint64_t nh;
        int dec = 0, dup, vhit;

        q = skip_blanks(ps->om, q, eol);
        if (q >= eol)
            return perr(ps, q, MD_EPARSE, "expected a label name or '}' before end of line");
        if (*q == '}') {
            if (after_comma && ps->om)
                return perr(ps, q, MD_EPARSE, "expected a label name after ','");
            q++;
            break;
        }
        if (!first && !after_comma)
            return perr(ps, q, MD_EPARSE, "expected ',' or '}' after a label");
        at = q;
        qc = use_cache && i < ps->labels_cap ? &ps->ncache[i] : NULL;
        if (*q == '"' && qc != NULL && qc->len > 2 && qc->raw[0] == '"' &&
            (size_t)(eol - q) > qc->len && memcmp(q, qc->raw, qc->len) == 0 &&
            (eq = skip_blanks(ps->om, q + qc->len, eol)) < eol && *eq == '=') {
            /* the same escape-free quoted label name as at this index on an
             * earlier line, followed by '=' (so not a metric name) */
            nm.p = q + 1;
            nm.len = qc->len - 2;
            nh = qc->h;
            q += qc->len;
        } else if (*q == '"') {
            rc = read_quoted(ps, &q, eol, &nm, &dec, "quoted label name");
            if (rc != MD_OK)
                return rc;
            if (nm.len == 0)
                return perr(ps, at, MD_EPARSE, "empty quoted label name");
            {
                const char *r = skip_blanks(ps->om, q, eol);

                if (mname != NULL && first && r < eol && (*r == ',' || *r == '}')) {
                    /* {"metric.name", ...} */
                    if (mname->p != NULL)
                        return perr(ps, at, MD_EPARSE,
                            "metric name given twice (before and inside the braces)");
                    if (nm.len > ps->lim.name_max)
                        return perr(ps, at, MD_ELIMIT, "metric name is %zu bytes, over the "
                            "limit name_max=%zu", nm.len, ps->lim.name_max);
                    *mname = nm;
                    ps->qname_end = (size_t)(q - ps->lbase);
                    ps->qname_dec = dec;
                    q = r;
                    first = 0;
                    after_comma = 0;
                    if (*q == ',') {
                        after_comma = 1;
                        q++;
                    }
                    continue;
                }
            }
            nh = hbytes(nm.p, nm.len, 0);
            if (use_cache && !dec && i < ps->labels_cap) {
                ps->ncache[i].raw = at;
                ps->ncache[i].len = (size_t)(q - at);
                ps->ncache[i].h = nh;
            }
        } else {
            struct name_cache *c = use_cache && i < ps->prev_n ? &ps->ncache[i] : NULL;

            if (c != NULL && c->len > 0 && (size_t)(eol - q) > c->len && c->raw[0] != '"' &&
                memcmp(q, c->raw, c->len) == 0 && !(cls[(unsigned char)q[c->len]] & 8)) {
                /* same name as on the previous line: already validated */
                nm.p = q;
                nm.len = c->len;
                nh = c->h;
                q += c->len;
            } else {
                if (!(cls[(unsigned char)*q] & 4))
                    return perr(ps, q, MD_EPARSE,
                        "expected a label name ([a-zA-Z_][a-zA-Z0-9_]*) or a quoted name");
                q++;
                while (q < eol && (cls[(unsigned char)*q] & 8))
                    q++;
                nm.p = at;
                nm.len = (size_t)(q - at);
                if (nm.len > ps->lim.name_max)
                    return perr(ps, at, MD_ELIMIT, "label name is %zu bytes, over the limit "
                        "name_max=%zu", nm.len, ps->lim.name_max);
                if (ps->om && nm.len >= 2 && nm.p[0] == '_' && nm.p[1] == '_')
                    return perr(ps, at, MD_EPARSE, "label names starting with \"__\" are "
                        "reserved (OpenMetrics)");
                if (ps->decode_names)
                    nm = decode_name(ps, nm.p, nm.len);
                nh = hbytes(nm.p, nm.len, 0);
                if (use_cache && !ps->decode_names && i < ps->labels_cap) {
                    ps->ncache[i].raw = at;
                    ps->ncache[i].len = (size_t)(q - at);
                    ps->ncache[i].h = nh;
                }
            }
        }
        if (nm.len > ps->lim.name_max)
            return perr(ps, at, MD_ELIMIT, "label name is %zu bytes, over the limit "
                "name_max=%zu", nm.len, ps->lim.name_max);
        if (dec && use_cache && i < ps->labels_cap)
            ps->ncache[i].len = 0;
        q = skip_blanks(ps->om, q, eol);
        if (q >= eol || *q != '=')
            return perr(ps, q, MD_EPARSE, "expected '=' after label name \"%.*s\"", SHOW(nm));
        q = skip_blanks(ps->om, q + 1, eol);
        if (q >= eol || *q != '"')
            return perr(ps, q, MD_EPARSE, "expected '\"' to open the value of label \"%.*s\"",
                SHOW(nm));
        if (i - base >= ps->lim.labels_max)
            return perr(ps, at, MD_ELIMIT, "more than %zu labels (labels_max)",
                ps->lim.labels_max);
        if (i >= ps->labels_cap) {
            if (grow_labels(ps, i + 1) != MD_OK)
                return perr(ps, at, MD_ENOMEM, "out of memory");
        }
        l = &ps->labels[i];
        l->name = nm;
        vc = use_cache ? &ps->ncache[i] : NULL;
        vhit = 0;
        if (vc != NULL && vc->vok && vc->vh == nh && (size_t)(eol - q) > vc->vlen + 1 &&
            q[1 + vc->vlen] == '"' && memcmp(q + 1, vc->vraw, vc->vlen) == 0) {
            /* byte-identical to the escape-free value at this index on an
             * earlier line: already validated and hashed */
            l->value.p = q + 1;
            l->value.len = vc->vlen;
            q += vc->vlen + 2;
            vhit = 1;
            if ((dec || ps->decode_names) && i < ps->first_dec)
                ps->first_dec = i;
        } else {
            const char *vs = q;

            int ndec = dec;

            rc = read_quoted(ps, &q, eol, &l->value, &dec, "label value");
            if (rc != MD_OK)
                return rc;
            if ((dec || ndec || ps->decode_names) && i < ps->first_dec)
                ps->first_dec = i;
            if (vc != NULL) {
                vc->vok = !dec;
                vc->vraw = l->value.p;
                vc->vlen = l->value.len;
                vc->vh = nh;
            }
            if (l->value.len > ps->lim.label_value_max)
                return perr(ps, vs, MD_ELIMIT, "value of label \"%.*s\" is %zu bytes, over "
                    "the limit label_value_max=%zu", SHOW(nm), l->value.len,
                    ps->lim.label_value_max);
        }
        ps->lname_h[i] = nh;
        rc = dup_label(ps, base, i, &ll->mask, &dup);
        if (rc != MD_OK)
            return perr(ps, at, MD_ENOMEM, "out of memory");
        if (dup)
            return perr(ps, at, MD_EPARSE, "duplicate label name \"%.*s\"", SHOW(nm));
        if (vhit) {
            ps->lterm[i] = vc->vterm;
        } else {
            ps->lterm[i] = label_term(nh, l->value.p, l->value.len);
            if (vc != NULL)
                vc->vterm = ps->lterm[i];
        }
        ll->sum += ps->lterm[i];
        ps->lend[i] = (size_t)(q - ps->lbase);
        ps->psum[i] = ll->sum;
        ps->pmask[i] = ll->mask;
        if (nm.len == 2 && nm.p[0] == 'l' && nm.p[1] == 'e')
            ll->le = (int)(i - base);
        else if (nm.len == 8 && memcmp(nm.p, "quantile", 8) == 0)
            ll->quantile = (int)(i - base);
        i++;
        first = 0;
        after_comma = 0;
        q = skip_blanks(ps->om, q, eol);
        if (q < eol && *q == ',') {
            after_comma = 1;
            q++;
        }
    }
    ll->n = i - base;
    *qp = q;
    return MD_OK;
}

/* ---- samples ---- */

static int grow_recs(struct md_expfmt_parser *ps);

/* length of the common prefix of a[0..an) and b[0..bn) */
static size_t
common_prefix(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn, i = 0;

#ifdef __SSE2__
    while (n - i >= 32) {
        __m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)(a + i));
        __m128i y0 = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)(a + i + 16));
        __m128i y1 = _mm_loadu_si128((const __m128i *)(const void *)(b + i + 16));
        __m128i e0 = _mm_cmpeq_epi8(x0, y0), e1 = _mm_cmpeq_epi8(x1, y1);

        if (_mm_movemask_epi8(_mm_and_si128(e0, e1)) != 0xffff) {
            unsigned m = (unsigned)_mm_movemask_epi8(e0) ^ 0xffffu;

            if (m != 0)
                return i + (size_t)__builtin_ctz(m);
            m = (unsigned)_mm_movemask_epi8(e1) ^ 0xffffu;
            return i + 16 + (size_t)__builtin_ctz(m);
        }
        i += 32;
    }
    while (n - i >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(a + i));
        __m128i y = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) ^ 0xffffu;

        if (m != 0)
            return i + (size_t)__builtin_ctz(m);
        i += 16;
    }
#endif
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

static enum sfx
match_family(const struct md_expfmt_parser *ps, struct md_str name)
{
    const char *rest;
    size_t rl;

    if (!ps->fam_open || name.len < ps->fam_len || memcmp(name.p, ps->fam, ps->fam_len) != 0)
        return SFX_N;
    rest = name.p + ps->fam_len;
    rl = name.len - ps->fam_len;
    for (int s = 0; s < SFX_N; s++)
        if (sfx_str[s].len == rl && memcmp(rest, sfx_str[s].s, rl) == 0)
            return (enum sfx)s;
    return SFX_N;
}

static int
histogram_sample(struct md_expfmt_parser *ps, enum sfx sx, const struct line_labels *ll,
    double v, const char *at)
{
    struct group *g = &ps->g;
    uint64_t key = fmix(ps->fam_h ^ TAG_GROUP ^
        rotl((ll->sum - (ll->le >= 0 ? ps->lterm[ll->le] : 0)) * K2, 23));
    int rc;

    if (sx == SFX_CREATED)
        return MD_OK;
    if (!g->active || g->key != key) {
        int ins;

        rc = group_finish(ps);
        if (rc != MD_OK)
            return rc;
        ins = set_insert(ps, key);
        if (ins < 0)
            return perr(ps, at, MD_ENOMEM, "out of memory");
        if (ins == 0)
            return perr(ps, at, MD_EPARSE, "samples of one histogram series are not "
                "contiguous (this label set appeared earlier in the family)");
        memset(g, 0, sizeof(*g));
        g->active = 1;
        g->key = key;
        g->line = ps->line;
    }
    if (sx == SFX_BUCKET) {
        const struct md_label *le;
        double lv;

        if (ll->le < 0)
            return perr(ps, at, MD_EPARSE, "histogram bucket without an \"le\" label");
        le = &ps->labels[ll->le];
        if (g->nbuckets < LE_CACHE_N && ps->lec[g->nbuckets].p != NULL &&
            ps->lec[g->nbuckets].len == le->value.len &&
            memcmp(ps->lec[g->nbuckets].p, le->value.p, le->value.len) == 0) {
            lv = ps->lec[g->nbuckets].v;
        } else {
            rc = parse_number(ps->om, le->value.p, le->value.len, &lv);
            if (rc != MD_OK || isnan(lv))
                return perr(ps, at, MD_EPARSE, "le=\"%.*s\" is not a number", SHOW(le->value));
            if (g->nbuckets < LE_CACHE_N && le->value.p >= ps->body && le->value.p < ps->end) {
                ps->lec[g->nbuckets].p = le->value.p;
                ps->lec[g->nbuckets].len = le->value.len;
                ps->lec[g->nbuckets].v = lv;
            }
        }
        if (g->have_inf)
            return perr(ps, at, MD_EPARSE, "bucket after the le=\"+Inf\" bucket");
        if (g->nbuckets > 0 && !(lv > g->last_le))
            return perr(ps, at, MD_EPARSE, "le=\"%.*s\" is not greater than the previous "
                "bucket's le (buckets must be sorted)", SHOW(le->value));
        if (isnan(v) || v < 0)
            return perr(ps, at, MD_EPARSE, "bucket count must be a non-negative number");
        if (g->nbuckets > 0 && v < g->last_bucket)
            return perr(ps, at, MD_EPARSE, "bucket count %.17g is below the previous bucket's "
                "%.17g (buckets are cumulative)", v, g->last_bucket);
        g->last_le = lv;
        g->last_bucket = v;
        g->nbuckets++;
        if (isinf(lv) && lv > 0) {
            g->have_inf = 1;
            g->inf_val = v;
        }
    } else if (sx == SFX_COUNT || sx == SFX_GCOUNT) {
        if (isnan(v) || v < 0)
            return perr(ps, at, MD_EPARSE, "histogram count must be a non-negative number");
        if (g->have_count)
            return perr(ps, at, MD_EPARSE, "second _count for one histogram series");
        g->have_count = 1;
        g->count_val = v;
        g->count_line = ps->line;
    }
    return MD_OK;
}

static int
type_rules(struct md_expfmt_parser *ps, enum sfx sx, const struct line_labels *ll, double v,
    const char *at)
{
    switch (ps->fam_type) {
    case MD_TYPE_HISTOGRAM:
    case MD_TYPE_GAUGE_HISTOGRAM:
        return histogram_sample(ps, sx, ll, v, at);
    case MD_TYPE_SUMMARY:
        if (sx == SFX_NONE) {
            const struct md_label *qv;
            double qd;

            if (ll->quantile < 0)
                return perr(ps, at, MD_EPARSE, "summary quantile sample without a "
                    "\"quantile\" label");
            qv = &ps->labels[ll->quantile];
            if (parse_number(ps->om, qv->value.p, qv->value.len, &qd) != MD_OK ||
                isnan(qd) || qd < 0 || qd > 1)
                return perr(ps, at, MD_EPARSE, "quantile=\"%.*s\" is not a number in [0, 1]",
                    SHOW(qv->value));
        } else if (ps->om && sx == SFX_COUNT && (isnan(v) || v < 0)) {
            return perr(ps, at, MD_EPARSE, "summary count must be a non-negative number");
        }
        return MD_OK;
    case MD_TYPE_COUNTER:
        /* OpenMetrics: a Total is non-NaN and starts from 0 */
        if (ps->om && sx == SFX_TOTAL && (isnan(v) || v < 0))
            return perr(ps, at, MD_EPARSE, "counter value must be a non-negative number");
        return MD_OK;
    case MD_TYPE_INFO:
        if (v != 1)
            return perr(ps, at, MD_EPARSE, "info metric value must be 1");
        return MD_OK;
    case MD_TYPE_STATESET:
        if (v != 0 && v != 1)
            return perr(ps, at, MD_EPARSE, "stateset value must be 0 or 1");
        return MD_OK;
    default:
        return MD_OK;
    }
}

/* OpenMetrics exemplar: " # {labels} value [timestamp]" */
static int
exemplar(struct md_expfmt_parser *ps, const char **qp, const char *eol, size_t base, enum sfx sx)
{
    const char *q = *qp;
    struct line_labels ll;
    size_t chars = 0;
    const char *t;
    double v;
    int64_t ts;
    int rc;

    if (!((ps->fam_type == MD_TYPE_COUNTER && sx == SFX_TOTAL) ||
          ((ps->fam_type == MD_TYPE_HISTOGRAM || ps->fam_type == MD_TYPE_GAUGE_HISTOGRAM) &&
           sx == SFX_BUCKET)))
        return perr(ps, q, MD_EPARSE, "exemplars are allowed only on counter _total and "
            "histogram _bucket samples");
    q += 3;
    if (q >= eol || *q != '{')
        return perr(ps, q, MD_EPARSE, "expected '{' to open the exemplar's labels");
    rc = parse_labels(ps, &q, eol, base, 0, NULL, &ll, 0, 0);
    if (rc != MD_OK)
        return rc;
    for (size_t i = base; i < base + ll.n; i++) {
        const struct md_label *l = &ps->labels[i];

        for (size_t k = 0; k < l->name.len; k++)
            chars += ((unsigned char)l->name.p[k] & 0xc0) != 0x80;
        for (size_t k = 0; k < l->value.len; k++)
            chars += ((unsigned char)l->value.p[k] & 0xc0) != 0x80;
    }
    if (chars > 128)
        return perr(ps, *qp, MD_EPARSE, "exemplar labels have %zu characters, more than 128",
            chars);
    if (q >= eol || *q != ' ')
        return perr(ps, q, MD_EPARSE, "expected a space and the exemplar value");
    t = ++q;
    while (q < eol && *q != ' ')
        q++;
    if (parse_number(1, t, (size_t)(q - t), &v) != MD_OK)
        return perr(ps, t, MD_EPARSE, "invalid exemplar value \"%.*s\"",
            (int)((q - t) > 40 ? 40 : (q - t)), t);
    if (q < eol) {
        t = ++q;
        while (q < eol && *q != ' ')
            q++;
        if (q != eol || parse_timestamp(1, t, (size_t)(q - t), &ts) != MD_OK)
            return perr(ps, t, MD_EPARSE, "invalid exemplar timestamp");
    }
    *qp = q;
    return MD_OK;
}

/* ---- skipped samples ---- */

/* first byte in [q, eol) equal to a or b, or eol */
static inline const char *
scan2(const char *q, const char *eol, char a, char b)
{
#ifdef __SSE2__
    const __m128i va = _mm_set1_epi8(a), vb = _mm_set1_epi8(b);

    while (eol - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
        unsigned mask = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, va), _mm_cmpeq_epi8(v, vb)));

        if (mask != 0)
            return q + __builtin_ctz(mask);
        q += 16;
    }
#endif
    while (q < eol && *q != a && *q != b)
        q++;
    return q;
}

/* counts a sample of skip class k (suffix sx) that is not delivered */
static int
count_skipped(struct md_expfmt_parser *ps, int k, int sx, const char *at)
{
    if (ps->lim.samples_max != 0 && ps->nsamples >= ps->lim.samples_max)
        return perr(ps, at, MD_ELIMIT, "more than %llu samples (samples_max)",
            (unsigned long long)ps->lim.samples_max);
    ps->nsamples++;
    ps->skipped[k]++;
    ps->fam_skipped |= B(sx);
    return MD_OK;
}

/* The '}' closing a label set, from q inside it (in: q is inside a quoted
 * string).  A backslash inside a string escapes the next byte.  NULL at the
 * end of the line, with *open set when a string was still open. */
static const char *
close_scalar(const char *q, const char *eol, int in, int *open)
{
    for (;;) {
        if (!in) {
            q = scan2(q, eol, '"', '}');
            if (q == eol) {
                *open = 0;
                return NULL;
            }
            if (*q == '}')
                return q;
            q++;
        }
        for (;;) {
            q = scan2(q, eol, '"', '\\');
            if (q == eol || (*q == '\\' && eol - q < 2)) {
                *open = 1;
                return NULL;
            }
            if (*q == '"')
                break;
            q += 2;
        }
        q++;
        in = 0;
    }
}

#ifdef __SSE2__
static inline uint64_t
eq64(__m128i v0, __m128i v1, __m128i v2, __m128i v3, char c)
{
    const __m128i k = _mm_set1_epi8(c);

    return (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v0, k)) |
        (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v1, k)) << 16 |
        (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v2, k)) << 32 |
        (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v3, k)) << 48;
}

/* non-zero when any of the 64 bytes is c */
static inline int
any64(__m128i v0, __m128i v1, __m128i v2, __m128i v3, char c)
{
    const __m128i k = _mm_set1_epi8(c);

    return _mm_movemask_epi8(_mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(v0, k), _mm_cmpeq_epi8(v1, k)),
        _mm_or_si128(_mm_cmpeq_epi8(v2, k), _mm_cmpeq_epi8(v3, k))));
}
#endif

/* close_scalar's answer, 64 bytes at a time: while a block holds no
 * backslash, the bytes inside strings are the prefix XOR of its quote mask
 * (an opening quote starts a run, the closing one ends it), and the first
 * '}' outside them closes the set.  A block with a backslash (rare in
 * label values) hands over to close_scalar.  The last partial block is
 * read in place when 64 bytes remain in the body (the bytes past the line
 * are masked off), else copied into a zeroed one (zeros are neither quotes
 * nor braces): a copy per line cost ~4 % of a scrape's parse.
 * Memo: consecutive skipped lines (a histogram's buckets) repeat all but
 * their last bytes.  The whole blocks of the previous light check, their
 * bytes and the string state after each, are kept (lm_*); a block equal to
 * the one at the same offset of the previous line, reached in the same
 * state (every block before it equal too), ends in the same state and holds
 * no closing brace (else that check would have stopped there). */
static const char *
close_brace(struct md_expfmt_parser *ps, const char *q, const char *eol, int *open)
{
#ifdef __SSE2__
    uint64_t in = 0;    /* all ones: inside a string at the block start */
    const char *base = q;
    size_t i = 0;       /* index of the block at q (blocks recorded, once past the memo) */
    int same = ps->lm_base != NULL;

    ps->lm_base = NULL;     /* until this line's blocks are recorded */
    while (q < eol) {
        char tail[64];
        const char *b = q;
        size_t n = (size_t)(eol - q);
        __m128i v0, v1, v2, v3;
        uint64_t mq, mr, x, valid = ~(uint64_t)0;     /* the bits of this line's bytes */

        if (n < 64) {
            valid = ((uint64_t)1 << n) - 1;
            if ((size_t)(ps->end - q) < 64) {
                memset(tail, 0, sizeof(tail));
                memcpy(tail, q, n);
                b = tail;
            }
        }
        v0 = _mm_loadu_si128((const __m128i *)(const void *)b);
        v1 = _mm_loadu_si128((const __m128i *)(const void *)(b + 16));
        v2 = _mm_loadu_si128((const __m128i *)(const void *)(b + 32));
        v3 = _mm_loadu_si128((const __m128i *)(const void *)(b + 48));
        if (same) {
            same = n >= 64 && i < ps->lm_n;
            if (same) {
                const char *o = ps->lm_prev + 64 * i;
                __m128i e = _mm_and_si128(
                    _mm_and_si128(
                        _mm_cmpeq_epi8(v0, _mm_loadu_si128((const __m128i *)(const void *)o)),
                        _mm_cmpeq_epi8(v1, _mm_loadu_si128((const __m128i *)(const void *)
                            (o + 16)))),
                    _mm_and_si128(
                        _mm_cmpeq_epi8(v2, _mm_loadu_si128((const __m128i *)(const void *)
                            (o + 32))),
                        _mm_cmpeq_epi8(v3, _mm_loadu_si128((const __m128i *)(const void *)
                            (o + 48)))));

                same = _mm_movemask_epi8(e) == 0xffff;
            }
            if (same) {
                in = ps->lm_in[i] ? ~(uint64_t)0 : 0;
                i++;
                q += 64;
                continue;
            }
        }
        if (any64(v0, v1, v2, v3, '\\') && (eq64(v0, v1, v2, v3, '\\') & valid) != 0) {
            ps->lm_n = i;
            ps->lm_base = ps->lm_prev = base;
            return close_scalar(q, eol, in != 0, open);
        }
        mq = eq64(v0, v1, v2, v3, '"') & valid;
        x = mq;
        x ^= x << 1;
        x ^= x << 2;
        x ^= x << 4;
        x ^= x << 8;
        x ^= x << 16;
        x ^= x << 32;
        x ^= in;
        if (any64(v0, v1, v2, v3, '}')) {
            mr = eq64(v0, v1, v2, v3, '}') & valid;
            if ((mr & ~x) != 0) {
                ps->lm_n = i;
                ps->lm_base = ps->lm_prev = base;
                return q + __builtin_ctzll(mr & ~x);
            }
        }
        in = (uint64_t)((int64_t)x >> 63);
        if (n <= 64)
            break;
        /* a line longer than LM_BLOCKS blocks: only its start is kept
         * (i then stays at LM_BLOCKS, the count recorded) */
        if (i < LM_BLOCKS)
            ps->lm_in[i++] = in != 0;
        q += 64;
    }
    *open = in != 0;
    ps->lm_n = 0;
    return NULL;
#else
    (void)ps;
    return close_scalar(q, eol, 0, open);
#endif
}

/* The light check of a skipped line whose name c (already validated in this
 * family) ends at q: an optional label set whose '}' lies outside balanced
 * quotes (a backslash escapes the next byte, so `\"` and `}` inside a value
 * cannot end it), then a blank and a non-empty value token.  Labels are not
 * decoded, hashed or checked for duplicates; the value is not parsed.
 * inside: q is already inside the braces (after a quoted metric name). */
static int
skip_light(struct md_expfmt_parser *ps, const struct name_cache *c, const char *q,
    const char *eol, const char *at, int inside)
{
    /* blanks may precede a label set; without one, they are the separator
     * the value check below needs, so q stays before them */
    const char *b = inside ? q : skip_blanks(ps->om, q, eol);

    if (inside || (b < eol && *b == '{')) {
        int open = 0;
        const char *r = close_brace(ps, b + !inside, eol, &open);

        if (r == NULL)
            return perr(ps, eol, MD_EPARSE, open ? "unterminated quoted string"
                                                 : "expected '}' to close the label set");
        q = r + 1;
    }
    if (q >= eol || (*q != ' ' && !is_blank(ps->om, *q)))
        return perr(ps, q, MD_EPARSE, "expected a space and the sample value");
    q = skip_blanks(ps->om, q + 1, eol);
    if (q >= eol || *q == ' ')
        return perr(ps, q, MD_EPARSE, "expected the sample value");
    ps->fam_samples++;
    return count_skipped(ps, c->skip, c->sx, at);
}

static int
sample_line(struct md_expfmt_parser *ps, const char *p, const char *eol)
{
    const char *q = skip_blanks(ps->om, p, eol), *vs, *name_at = q;
    struct md_str name = { NULL, 0 };
    struct line_labels ll = { 0, 0, 0, -1, -1 };
    struct md_sample s;
    uint64_t name_h;
    enum sfx sx;
    int rc, quoted = 0;
    size_t k = 0;
    struct name_cache *nc = NULL;   /* the metric-name cache entry used */

    ps->first_dec = SIZE_MAX;
    /* metric name (unless it is quoted inside the braces) */
    if (*q != '{') {
        struct name_cache *c = NULL;

        for (size_t j = 0; j < MCACHE_N; j++) {
            struct name_cache *e = &ps->mcache[j];

            /* the byte after a cached name must end it: a cheap reject first */
            if (e->len > 0 && (size_t)(eol - q) > e->len &&
                !(cls[(unsigned char)q[e->len]] & 2) && q[e->len - 1] == e->raw[e->len - 1] &&
                memcmp(q, e->raw, e->len) == 0) {
                c = e;
                break;
            }
        }
        nc = c;
        if (c != NULL) {
            /* byte-identical to a name already validated in this body; a
             * name skipped in this family needs only the light check */
            if (c->skip > 0 && c->fam_gen == ps->fam_gen && ps->fam_open && !ps->skip_full)
                return skip_light(ps, c, q + c->len, eol, name_at, 0);
            name.p = q;
            name.len = c->len;
            name_h = c->h;
            q += c->len;
        } else {
            rc = read_metric_name(ps, &q, eol, &name, &quoted);
            if (rc != MD_OK)
                return rc;
            name_h = hbytes(name.p, name.len, 0);
            if (!quoted && !ps->decode_names) {
                c = &ps->mcache[ps->mcache_next++ % MCACHE_N];
                c->raw = name_at;
                c->len = (size_t)(q - name_at);
                c->h = name_h;
                c->fam_gen = 0;
                c->skip = -1;
                nc = c;
            }
        }
        if (quoted)
            return perr(ps, name_at, MD_EPARSE, "a quoted metric name goes inside the braces");
        {
            const char *r = skip_blanks(ps->om, q, eol);

            if (r < eol && *r == '{') {
                q = r;
                ps->lbase = r;
                /* the previous line's label section must not start with a
                 * quoted metric name: here one would be an error */
                if (ps->pl_ok && !ps->pl_qname) {
                    /* bytes equal to the previous line's label section parse
                     * the same: take over every label whose closing quote
                     * lies in the common prefix */
                    size_t L = common_prefix(r, (size_t)(eol - r), ps->pl_brace, ps->pl_len);

                    while (k < ps->pl_n && ps->lend[k] <= L)
                        k++;
                }
                if (k > 0)
                    q = take_prev_labels(ps, r, k, &ll);
                rc = parse_labels(ps, &q, eol, 0, 1, &name, &ll, k, k > 0);
                if (rc != MD_OK)
                    return rc;
            }
        }
    } else {
        int resumed = 0;

        /* {"name",...} with a name skipped in this family: the light check */
        if (ps->sfn != NULL && !ps->skip_full && eol - q > 3 && q[1] == '"') {
            for (size_t j = 0; j < MCACHE_N; j++) {
                const struct name_cache *e = &ps->qcache[j];

                if (e->len > 0 && e->skip > 0 && e->fam_gen == ps->fam_gen && ps->fam_open &&
                    (size_t)(eol - q) > e->len + 3 && q[e->len + 2] == '"' &&
                    memcmp(q + 2, e->raw, e->len) == 0) {
                    /* the cached name holds no '"' or backslash: this string is it */
                    const char *r = skip_blanks(ps->om, q + e->len + 3, eol);

                    if (r < eol && (*r == ',' || *r == '}'))
                        return skip_light(ps, e, r, eol, name_at, 1);
                    break;
                }
            }
        }
        ps->lbase = q;
        ps->qname_end = 0;
        if (ps->pl_ok && ps->pl_qname) {
            /* {"quoted.name",...}: the name is the first item of the prefix */
            size_t L = common_prefix(q, (size_t)(eol - q), ps->pl_brace, ps->pl_len);

            if (L >= ps->pl_qname_end) {
                const char *r = q;

                name.p = r + ps->pl_qname_off;
                name.len = ps->pl_qname_len;
                name_h = ps->pl_qname_h;
                while (k < ps->pl_n && ps->lend[k] <= L)
                    k++;
                if (k > 0) {
                    q = take_prev_labels(ps, r, k, &ll);
                } else {
                    q = r + ps->pl_qname_end;
                }
                ps->qname_end = ps->pl_qname_end;
                ps->qname_dec = 0;
                resumed = 1;
            }
        }
        rc = parse_labels(ps, &q, eol, 0, 1, &name, &ll, k, resumed);
        if (rc != MD_OK)
            return rc;
        if (name.p == NULL)
            return perr(ps, name_at, MD_EPARSE, "no metric name (expected a name before '{' "
                "or a quoted name as the first item inside)");
        if (!resumed)
            name_h = hbytes(name.p, name.len, 0);
        quoted = 1;
        if (!ps->qname_dec) {
            /* an escape-free quoted name: a view into the body */
            for (size_t j = 0; j < MCACHE_N && nc == NULL; j++)
                if (ps->qcache[j].len == name.len &&
                    memcmp(ps->qcache[j].raw, name.p, name.len) == 0)
                    nc = &ps->qcache[j];
            if (nc == NULL) {
                nc = &ps->qcache[ps->qcache_next++ % MCACHE_N];
                nc->raw = name.p;
                nc->len = name.len;
                nc->h = name_h;
                nc->fam_gen = 0;
                nc->skip = -1;
            }
        }
    }
    ps->prev_n = ll.n;
    ps->pl_ok = !ps->decode_names && ll.n > 0 && ll.n <= LINEAR_DUP_MAX &&
        ps->first_dec >= ll.n && (!quoted || (ps->qname_end > 0 && !ps->qname_dec));
    ps->pl_qname = quoted;
    if (ps->pl_ok && quoted) {
        ps->pl_qname_off = (size_t)(name.p - ps->lbase);
        ps->pl_qname_len = name.len;
        ps->pl_qname_end = ps->qname_end;
        ps->pl_qname_h = name_h;
    }
    if (ps->pl_ok) {
        ps->pl_brace = ps->lbase;
        ps->pl_len = (size_t)(eol - ps->lbase);
        ps->pl_n = ll.n;
        ps->pl_le = ll.le;
        ps->pl_quantile = ll.quantile;
    }

    /* value */
    if (q >= eol || (*q != ' ' && !is_blank(ps->om, *q)))
        return perr(ps, q, MD_EPARSE, "expected a space and the sample value");
    q = ps->om ? q + 1 : skip_blanks(0, q, eol);
    vs = q;
    while (q < eol && *q != ' ' && (ps->om || *q != '\t'))
        q++;
    rc = parse_number(ps->om, vs, (size_t)(q - vs), &s.value);
    if (rc != MD_OK)
        return perr(ps, vs, rc, "%s sample value \"%.*s\"",
            rc == MD_ELIMIT ? "out-of-range" : "invalid",
            (int)((q - vs) > 40 ? 40 : (q - vs)), vs);
    s.has_ts = 0;
    s.ts_ms = 0;
    /* family */
    if (nc != NULL && nc->fam_gen == ps->fam_gen && ps->fam_open)
        sx = (enum sfx)nc->sx;
    else
        sx = match_family(ps, name);
    if (sx == SFX_N || !(allowed_sfx(ps->om, ps->fam_type) & B(sx))) {
        if (sx == SFX_NONE)
            return perr(ps, name_at, MD_EPARSE, "sample \"%.*s\" is not valid in a %s family "
                "(expected one of its suffixes, e.g. %s)", SHOW(name),
                md_metric_type_name(ps->fam_type),
                ps->fam_type == MD_TYPE_COUNTER ? "_total" :
                ps->fam_type == MD_TYPE_INFO ? "_info" : "_bucket/_sum/_count");
        rc = family_open(ps, name, name_h, name_at);
        if (rc != MD_OK)
            return rc;
        sx = SFX_NONE;
    }
    if (nc != NULL) {
        nc->fam_gen = ps->fam_gen;
        nc->sx = sx;
    }
    if (ps->fam_samples++ == 0 && ps->ffn != NULL)
        ps->fam_deliver = ps->ffn(ps->farg, (struct md_str){ ps->fam, ps->fam_len },
            ps->fam_type) != 0;

    /* timestamp, exemplar */
    if (ps->om) {
        if (q < eol && eol - q >= 3 && q[1] == '#' && q[2] == ' ') {
            rc = exemplar(ps, &q, eol, ll.n, sx);
            if (rc != MD_OK)
                return rc;
        } else if (q < eol) {
            const char *ts = ++q;

            while (q < eol && *q != ' ')
                q++;
            rc = parse_timestamp(1, ts, (size_t)(q - ts), &s.ts_ms);
            if (rc != MD_OK)
                return perr(ps, ts, rc, "invalid timestamp \"%.*s\" (expected seconds)",
                    (int)((q - ts) > 40 ? 40 : (q - ts)), ts);
            s.has_ts = 1;
            if (q < eol) {
                if (eol - q < 3 || q[1] != '#' || q[2] != ' ')
                    return perr(ps, q, MD_EPARSE, "expected end of line or \" # \" and an "
                        "exemplar after the timestamp");
                rc = exemplar(ps, &q, eol, ll.n, sx);
                if (rc != MD_OK)
                    return rc;
            }
        }
        if (q != eol)
            return perr(ps, q, MD_EPARSE, "unexpected text at end of line");
    } else {
        q = skip_blanks(0, q, eol);
        if (q < eol) {
            const char *ts = q;

            while (q < eol && *q != ' ' && *q != '\t')
                q++;
            rc = parse_timestamp(0, ts, (size_t)(q - ts), &s.ts_ms);
            if (rc != MD_OK)
                return perr(ps, ts, rc, "invalid timestamp \"%.*s\" (expected integer "
                    "milliseconds)", (int)((q - ts) > 40 ? 40 : (q - ts)), ts);
            s.has_ts = 1;
            q = skip_blanks(0, q, eol);
            if (q != eol)
                return perr(ps, q, MD_EPARSE, "unexpected text after the timestamp");
        }
    }

    if (ps->sfn != NULL) {
        int kc = nc != NULL ? nc->skip : -1;

        if (kc < 0) {
            kc = ps->sfn(ps->sarg, name);
            if (kc < 0 || kc >= MD_EXPFMT_SKIP_CLASSES)
                return perr(ps, name_at, MD_ESTATE, "skip callback returned class %d "
                    "(expected 0..%d)", kc, MD_EXPFMT_SKIP_CLASSES - 1);
            if (nc != NULL)
                nc->skip = kc;
        }
        if (kc > 0)
            return count_skipped(ps, kc, sx, name_at);
    }
    rc = type_rules(ps, sx, &ll, s.value, name_at);
    if (rc != MD_OK)
        return rc;
    s.hash = series_hash(name_h, ll.sum);
    /* duplicates are found at the end by sorting: appending is sequential,
     * probing a table far larger than the cache is not */
    if (ps->nrecs == ps->recs_cap && grow_recs(ps) != MD_OK)
        return perr(ps, name_at, MD_ENOMEM, "out of memory");
    ps->recs[ps->nrecs].h = s.hash;
    ps->recs[ps->nrecs].line = ps->line;
    ps->nrecs++;
    if (ps->lim.samples_max != 0 && ps->nsamples >= ps->lim.samples_max)
        return perr(ps, name_at, MD_ELIMIT, "more than %llu samples (samples_max)",
            (unsigned long long)ps->lim.samples_max);
    ps->nsamples++;
    if (ps->fn == NULL || !ps->fam_deliver)
        return MD_OK;
    s.name = name;
    s.labels = ps->labels;
    s.nlabels = ll.n;
    s.type = ps->fam_type;
    s.line = ps->line;
    rc = ps->fn(ps->arg, &s);
    if (rc != 0)
        return perr(ps, name_at, rc, "sample callback stopped the parse (%s)", md_rc_str(rc));
    return MD_OK;
}

/* ---- driver ---- */

static int
grow_recs(struct md_expfmt_parser *ps)
{
    size_t cap = ps->recs_cap ? ps->recs_cap * 2 : 4096;
    struct series_rec *a, *b;

    a = md_realloc(ps->recs, cap * sizeof(*a));
    if (a == NULL)
        return MD_ENOMEM;
    ps->recs = a;
    b = md_realloc(ps->recs_tmp, cap * sizeof(*b));
    if (b == NULL)
        return MD_ENOMEM;
    ps->recs_tmp = b;
    ps->recs_cap = cap;
    return MD_OK;
}

static int
cmp_rec(const void *a, const void *b)
{
    const struct series_rec *x = a, *y = b;

    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* Duplicate series: one stable counting-scatter pass of the hashes into
 * about n/4 buckets by their top bits (sequential reads, one write each),
 * then each bucket is checked on its own: pairwise when small, sorted when
 * large (so crafted top-bit collisions cost n log n, never n^2).  Reports
 * the earliest line that repeats a series. */
static int
check_duplicates(struct md_expfmt_parser *ps)
{
    struct series_rec *src = ps->recs, *dst = ps->recs_tmp;
    size_t n = ps->nrecs, nb = 256;
    unsigned shift = 56;
    uint64_t dup_line = 0;
    uint32_t *cnt;

    if (n < 2)
        return MD_OK;
    while (nb < n / 4 && shift > 40) {
        nb *= 2;
        shift--;
    }
    if (nb + 1 > ps->bucket_cap) {
        uint32_t *c = md_realloc(ps->buckets, (nb + 1) * sizeof(*c));

        if (c == NULL)
            return perr(ps, NULL, MD_ENOMEM, "out of memory");
        ps->buckets = c;
        ps->bucket_cap = nb + 1;
    }
    cnt = ps->buckets;
    memset(cnt, 0, (nb + 1) * sizeof(*cnt));
    for (size_t i = 0; i < n; i++)
        cnt[(src[i].h >> shift) + 1]++;
    for (size_t d = 1; d <= nb; d++)
        cnt[d] += cnt[d - 1];
    /* cnt[d] is now the start of bucket d; scatter advances it to the end */
    for (size_t i = 0; i < n; i++)
        dst[cnt[src[i].h >> shift]++] = src[i];
    for (size_t d = 0, start = 0; d < nb; d++) {
        size_t end = cnt[d], m = end - start;
        struct series_rec *r = dst + start;

        if (m > 32) {
            qsort(r, m, sizeof(*r), cmp_rec);
            for (size_t i = 1; i < m; i++)
                if (r[i].h == r[i - 1].h && (dup_line == 0 || r[i].line < dup_line))
                    dup_line = r[i].line;
        } else {
            /* in body order: the later record of an equal pair repeats */
            for (size_t i = 1; i < m; i++)
                for (size_t j = 0; j < i; j++)
                    if (r[i].h == r[j].h && (dup_line == 0 || r[i].line < dup_line))
                        dup_line = r[i].line;
        }
        start = end;
    }
    if (dup_line != 0) {
        ps->line = (unsigned)dup_line;
        ps->ls = NULL;
        return perr(ps, NULL, MD_EPARSE, "duplicate series: this metric name and label set "
            "appeared earlier in the body");
    }
    return MD_OK;
}

static int
ensure_scratch(struct md_expfmt_parser *ps, size_t need)
{
    size_t cap = ps->scratch_cap ? ps->scratch_cap : 4096;
    char *n;

    if (need <= ps->scratch_cap)
        return MD_OK;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    n = md_realloc(ps->scratch, cap);
    if (n == NULL)
        return MD_ENOMEM;
    ps->scratch = n;
    ps->scratch_cap = cap;
    return MD_OK;
}

static int
run(struct md_expfmt_parser *ps)
{
    const char *p = ps->body;
    int rc = MD_OK;

    while (p < ps->end) {
        const char *eol = memchr(p, '\n', (size_t)(ps->end - p));

        ps->ls = p;
        ps->line++;
        if (ps->seen_eof)
            return perr(ps, p, MD_EPARSE, "content after \"# EOF\"");
        if (eol == NULL) {
            if (ps->om && ps->end - p == 5 && memcmp(p, "# EOF", 5) == 0) {
                ps->seen_eof = 1;
                break;
            }
            return perr(ps, ps->end, MD_EPARSE, "last line has no terminating newline "
                "(truncated body?)");
        }
        if (eol > p && eol[-1] == '\r')
            return perr(ps, eol - 1, MD_EPARSE, "carriage return before line feed "
                "(CRLF line endings are not allowed)");
        /* decoded strings of this line fit in its length */
        ps->scratch_len = 0;
        if ((size_t)(eol - p) + 16 > ps->scratch_cap &&
            ensure_scratch(ps, (size_t)(eol - p) + 16) != MD_OK)
            return perr(ps, p, MD_ENOMEM, "out of memory");
        if (p == eol) {
            if (ps->om)
                return perr(ps, p, MD_EPARSE, "empty line (not allowed in OpenMetrics)");
        } else if (*p == '#') {
            rc = comment_line(ps, p, eol);
        } else {
            const char *q = skip_blanks(ps->om, p, eol);

            if (q == eol)
                ;   /* blank line (text format) */
            else if (*q == '#')
                rc = comment_line(ps, q, eol);
            else
                rc = sample_line(ps, p, eol);
        }
        if (rc != MD_OK)
            return rc;
        p = eol + 1;
    }
    if (ps->om && !ps->seen_eof) {
        ps->ls = ps->end;
        return perr(ps, ps->end, MD_EPARSE, "missing \"# EOF\" at the end (OpenMetrics; "
            "truncated body?)");
    }
    rc = family_close(ps);
    if (rc == MD_OK)
        rc = check_duplicates(ps);
    return rc;
}

void
md_expfmt_limits_default(struct md_expfmt_limits *lim)
{
    lim->label_value_max = MD_EXPFMT_LABEL_VALUE_MAX;
    lim->name_max = MD_EXPFMT_NAME_MAX;
    lim->labels_max = MD_EXPFMT_LABELS_MAX;
    lim->samples_max = 0;
}

struct md_expfmt_parser *
md_expfmt_parser_new(void)
{
    return md_calloc(1, sizeof(struct md_expfmt_parser));
}

void
md_expfmt_parser_free(struct md_expfmt_parser *ps)
{
    if (ps == NULL)
        return;
    md_free(ps->labels);
    md_free(ps->lname_h);
    md_free(ps->lterm);
    md_free(ps->ncache);
    md_free(ps->lend);
    md_free(ps->psum);
    md_free(ps->pmask);
    md_free(ps->scratch);
    md_free(ps->ltab_idx);
    md_free(ps->ltab_gen);
    md_free(ps->set);
    md_free(ps->recs);
    md_free(ps->recs_tmp);
    md_free(ps->buckets);
    md_free(ps->fam);
    md_free(ps);
}

enum md_expfmt_format
md_expfmt_detect(const char *body, size_t len)
{
    if (len > 0 && body[len - 1] == '\n')
        len--;
    if (len >= 5 && memcmp(body + len - 5, "# EOF", 5) == 0 &&
        (len == 5 || body[len - 6] == '\n'))
        return MD_EXPFMT_OPENMETRICS;
    return MD_EXPFMT_TEXT;
}

int
md_expfmt_parser_run(struct md_expfmt_parser *ps, const char *body, size_t len,
    enum md_expfmt_format fmt, const struct md_expfmt_limits *lim,
    const struct md_expfmt_opts *opts, md_expfmt_sample_fn *fn, void *arg,
    struct md_expfmt_error *err)
{
    int rc;

    (void)pthread_once(&cls_once, init_cls);
    if (err != NULL)
        memset(err, 0, sizeof(*err));
    if (body == NULL) {
        body = "";
        len = 0;
    }
    if (fmt == MD_EXPFMT_AUTO)
        fmt = md_expfmt_detect(body, len);
    ps->body = body;
    ps->end = body + len;
    ps->ls = body;
    ps->line = 0;
    ps->om = fmt == MD_EXPFMT_OPENMETRICS;
    ps->seen_eof = 0;
    ps->esc = opts != NULL ? opts->escaping : MD_ESC_UNDERSCORES;
    ps->decode_names = ps->esc == MD_ESC_DOTS || ps->esc == MD_ESC_VALUES;
    if (lim != NULL)
        ps->lim = *lim;
    else
        md_expfmt_limits_default(&ps->lim);
    ps->fn = fn;
    ps->arg = arg;
    ps->ffn = opts != NULL ? opts->family_fn : NULL;
    ps->farg = opts != NULL ? opts->family_arg : NULL;
    ps->sfn = opts != NULL ? opts->skip_fn : NULL;
    ps->sarg = opts != NULL ? opts->skip_arg : NULL;
    ps->skip_full = opts != NULL && opts->skip_full;
    memset(ps->skipped, 0, sizeof(ps->skipped));
    ps->err = err;
    ps->nsamples = 0;
    ps->prev_n = 0;
    for (size_t i = 0; i < MCACHE_N; i++) {
        ps->mcache[i].len = 0;
        ps->qcache[i].len = 0;
    }
    ps->lm_base = NULL;
    ps->lm_n = 0;
    for (size_t i = 0; i < ps->labels_cap; i++) {
        ps->ncache[i].len = 0;
        ps->ncache[i].vok = 0;
    }
    for (size_t i = 0; i < LE_CACHE_N; i++)
        ps->lec[i].p = NULL;
    if (ps->set_count > 0)
        memset(ps->set, 0, ps->set_cap * sizeof(*ps->set));
    ps->set_count = 0;
    ps->fam_open = 0;
    ps->pl_ok = 0;
    ps->nrecs = 0;
    memset(&ps->g, 0, sizeof(ps->g));
    if (grow_labels(ps, 32) != MD_OK || ensure_scratch(ps, 4096) != MD_OK)
        return perr(ps, body, MD_ENOMEM, "out of memory");
    rc = run(ps);
    if (rc != MD_OK && err != NULL && err->rc == 0)
        err->rc = rc;
    if (opts != NULL && opts->skipped != NULL)
        memcpy(opts->skipped, ps->skipped, sizeof(ps->skipped));
    ps->body = ps->end = ps->ls = NULL;
    return rc;
}

int
md_expfmt_parse(const char *body, size_t len, enum md_expfmt_format fmt,
    const struct md_expfmt_limits *lim, md_expfmt_sample_fn *fn, void *arg,
    struct md_expfmt_error *err)
{
    struct md_expfmt_parser *ps = md_expfmt_parser_new();
    int rc;

    if (ps == NULL) {
        if (err != NULL) {
            memset(err, 0, sizeof(*err));
            err->rc = MD_ENOMEM;
            (void)snprintf(err->msg, sizeof(err->msg), "out of memory");
        }
        return MD_ENOMEM;
    }
    rc = md_expfmt_parser_run(ps, body, len, fmt, lim, NULL, fn, arg, err);
    md_expfmt_parser_free(ps);
    return rc;
}

/* ---- Content-Type ---- */

static const char *
ct_token(const char *p, const char *e, const char **te)
{
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    *te = p;
    while (*te < e && **te != ';' && **te != ',' && **te != '=')
        (*te)++;
    return p;
}

static size_t
trim_len(const char *s, const char *e)
{
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return (size_t)(e - s);
}

void
md_expfmt_content_type(const char *ct, size_t len, enum md_expfmt_format *fmt,
    enum md_expfmt_escaping *esc)
{
    const char *p, *e, *te, *t;

    *fmt = MD_EXPFMT_AUTO;
    *esc = MD_ESC_UNDERSCORES;
    if (ct == NULL || len == 0)
        return;
    p = ct;
    e = ct + len;
    t = ct_token(p, e, &te);
    if (ci_eq(t, trim_len(t, te), "text/plain"))
        *fmt = MD_EXPFMT_TEXT;
    else if (ci_eq(t, trim_len(t, te), "application/openmetrics-text"))
        *fmt = MD_EXPFMT_OPENMETRICS;
    p = te;
    while (p < e && *p == ';') {
        const char *k, *ke, *v, *ve;
        size_t vl;

        k = ct_token(p + 1, e, &ke);
        if (ke >= e || *ke != '=')
            break;
        v = ke + 1;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        if (v < e && *v == '"') {
            v++;
            ve = v;
            while (ve < e && *ve != '"')
                ve++;
            vl = (size_t)(ve - v);
            p = ve < e ? ve + 1 : ve;
            while (p < e && *p != ';')
                p++;
        } else {
            ve = v;
            while (ve < e && *ve != ';')
                ve++;
            vl = trim_len(v, ve);
            p = ve;
        }
        if (ci_eq(k, trim_len(k, ke), "escaping")) {
            if (ci_eq(v, vl, "allow-utf-8"))
                *esc = MD_ESC_ALLOW_UTF8;
            else if (ci_eq(v, vl, "dots"))
                *esc = MD_ESC_DOTS;
            else if (ci_eq(v, vl, "values"))
                *esc = MD_ESC_VALUES;
            else
                *esc = MD_ESC_UNDERSCORES;
        }
    }
}

enum md_expfmt_format
md_expfmt_format_from_content_type(const char *ct, size_t len)
{
    enum md_expfmt_format f;
    enum md_expfmt_escaping e;

    md_expfmt_content_type(ct, len, &f, &e);
    return f;
}

/* ---- name unescaping (prometheus/common model.UnescapeName) ---- */

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* VALUES: "U__" prefix, "__" -> "_", "_<hex>_" -> code point; -1 when
 * in[0..len) is not a valid values-escaped name */
static long
values_decode(const char *in, size_t len, char *out)
{
    size_t o = 0, i;

    if (len <= 3 || memcmp(in, "U__", 3) != 0)
        return -1;
    for (i = 3; i < len;) {
        unsigned cp = 0;
        size_t j;

        if (in[i] != '_') {
            if (!(cls[(unsigned char)in[i]] & 8))
                return -1;
            out[o++] = in[i++];
            continue;
        }
        if (i + 1 < len && in[i + 1] == '_') {
            out[o++] = '_';
            i += 2;
            continue;
        }
        for (j = i + 1; j < len && in[j] != '_' && j - i <= 7; j++) {
            int h = hexval(in[j]);

            if (h < 0)
                return -1;
            cp = cp * 16 + (unsigned)h;
        }
        if (j >= len || in[j] != '_' || j == i + 1 || cp == 0 || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        /* "_<hex>_" is at least 3 bytes, the code point at most 4 and only
         * when the escape had >= 5 hex digits: out never outgrows in */
        o += md_utf8_put(out + o, cp);
        i = j + 1;
    }
    return (long)o;
}

size_t
md_expfmt_unescape_name(enum md_expfmt_escaping esc, const char *in, size_t len, char *out)
{
    /* sample suffixes are appended after the family name was escaped */
    static const char *const sfx[] = {
        "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gsum", "_gcount",
    };
    size_t o = 0, i;
    long n;

    (void)pthread_once(&cls_once, init_cls);
    if (esc == MD_ESC_DOTS) {
        for (i = 0; i < len;) {
            if (i + 5 <= len && memcmp(in + i, "_dot_", 5) == 0) {
                out[o++] = '.';
                i += 5;
            } else if (i + 2 <= len && in[i] == '_' && in[i + 1] == '_') {
                out[o++] = '_';
                i += 2;
            } else {
                out[o++] = in[i++];
            }
        }
        return o;
    }
    if (esc == MD_ESC_VALUES) {
        n = values_decode(in, len, out);
        if (n >= 0)
            return (size_t)n;
        for (i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
            size_t sl = strlen(sfx[i]);

            if (len > sl + 3 && memcmp(in + len - sl, sfx[i], sl) == 0) {
                n = values_decode(in, len - sl, out);
                if (n >= 0) {
                    memcpy(out + n, sfx[i], sl);
                    return (size_t)n + sl;
                }
            }
        }
    }
    memmove(out, in, len);
    return len;
}
