/* expfmt_skipcheck.h: the fast-skip property of the expfmt parser, shared by
 * tests/unit/test_expfmt_skip.c and tests/fuzz/fuzz_expfmt.c.
 *
 * For a body and a skip classifier (a pure function of the sample name), it
 * parses three times with one reused parser:
 *   A  the reference: no skip_fn; the callback applies the classifier itself
 *      and records the class-0 samples, counting the others per class;
 *   B  skip_fn with skip_full = 1: skipped lines still parsed in full;
 *   C  skip_fn with the light check (what meterd's scraper runs).
 * The promise (expfmt.h): A accepts => B accepts => C accepts, and then all
 * three deliver byte-identical samples (name, labels, value bits, timestamp,
 * type, hash, line) in the same order and the same per-class counts.  C may
 * accept bodies that A rejects (a malformed skipped line); the caller
 * decides what to assert about those.
 *
 * Header-only (static functions) so the unit test and the fuzzer need no
 * extra library. */
#ifndef MD_TEST_EXPFMT_SKIPCHECK_H
#define MD_TEST_EXPFMT_SKIPCHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expfmt.h"

struct skc_rec {
    unsigned char *p;
    size_t         len, cap;
    int            oom;
    uint64_t       counts[MD_EXPFMT_SKIP_CLASSES];
    uint64_t       delivered;
    /* reference run only: classifies in the callback */
    md_expfmt_skip_fn *classify;
    void              *carg;
};

static void
skc_put(struct skc_rec *r, const void *p, size_t n)
{
    if (r->oom)
        return;
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        unsigned char *q;

        while (cap < r->len + n)
            cap *= 2;
        q = realloc(r->p, cap);
        if (q == NULL) {
            r->oom = 1;
            return;
        }
        r->p = q;
        r->cap = cap;
    }
    memcpy(r->p + r->len, p, n);
    r->len += n;
}

static void
skc_put_str(struct skc_rec *r, struct md_str s)
{
    skc_put(r, &s.len, sizeof(s.len));
    skc_put(r, s.p, s.len);
}

static int
skc_on_sample(void *arg, const struct md_sample *s)
{
    struct skc_rec *r = arg;
    int type = (int)s->type;

    if (r->classify != NULL) {
        int k = r->classify(r->carg, s->name);

        if (k > 0 && k < MD_EXPFMT_SKIP_CLASSES) {
            r->counts[k]++;
            return 0;
        }
    }
    r->delivered++;
    skc_put_str(r, s->name);
    skc_put(r, &s->nlabels, sizeof(s->nlabels));
    for (size_t i = 0; i < s->nlabels; i++) {
        skc_put_str(r, s->labels[i].name);
        skc_put_str(r, s->labels[i].value);
    }
    skc_put(r, &s->value, sizeof(s->value));
    skc_put(r, &s->has_ts, sizeof(s->has_ts));
    skc_put(r, &s->ts_ms, sizeof(s->ts_ms));
    skc_put(r, &type, sizeof(type));
    skc_put(r, &s->hash, sizeof(s->hash));
    skc_put(r, &s->line, sizeof(s->line));
    return 0;
}

struct skc_result {
    int      rc[3];                               /* A, B, C */
    uint64_t delivered;                           /* of C */
    uint64_t counts[MD_EXPFMT_SKIP_CLASSES];      /* of C */
    char     why[256];                            /* set when the promise broke */
};

static int
skc_same(const struct skc_rec *x, const struct skc_rec *y)
{
    return x->len == y->len && (x->len == 0 || memcmp(x->p, y->p, x->len) == 0) &&
        x->delivered == y->delivered && memcmp(x->counts, y->counts, sizeof(x->counts)) == 0;
}

/* Returns 0 when the promise holds, -1 (why set) when it breaks, 1 when the
 * check could not run (out of memory). */
static int
skc_check(struct md_expfmt_parser *ps, const char *body, size_t len,
    enum md_expfmt_format fmt, const struct md_expfmt_limits *lim,
    enum md_expfmt_escaping esc, md_expfmt_skip_fn *classify, void *carg,
    struct skc_result *res)
{
    struct skc_rec rec[3];
    int ret = 0;

    memset(rec, 0, sizeof(rec));
    memset(res, 0, sizeof(*res));
    for (int run = 0; run < 3; run++) {
        struct md_expfmt_opts o = { .escaping = esc };
        struct md_expfmt_error err;

        if (run == 0) {
            rec[0].classify = classify;
            rec[0].carg = carg;
        } else {
            o.skip_fn = classify;
            o.skip_arg = carg;
            o.skipped = rec[run].counts;
            o.skip_full = run == 1;
        }
        res->rc[run] = md_expfmt_parser_run(ps, body, len, fmt, lim, &o, skc_on_sample,
            &rec[run], &err);
        if (rec[run].oom || res->rc[run] == 1 /* MD_ENOMEM */) {
            ret = 1;
            goto out;
        }
    }
    res->delivered = rec[2].delivered;
    memcpy(res->counts, rec[2].counts, sizeof(res->counts));
    for (int run = 0; run < 2; run++) {
        if (res->rc[run] != 0)
            continue;
        for (int later = run + 1; later < 3; later++) {
            if (res->rc[later] != 0) {
                (void)snprintf(res->why, sizeof(res->why), "run %c accepts, run %c fails "
                    "(rc %d)", 'A' + run, 'A' + later, res->rc[later]);
                ret = -1;
                goto out;
            }
            if (!skc_same(&rec[run], &rec[later])) {
                (void)snprintf(res->why, sizeof(res->why), "runs %c and %c differ: "
                    "delivered %llu vs %llu, record bytes %zu vs %zu", 'A' + run,
                    'A' + later, (unsigned long long)rec[run].delivered,
                    (unsigned long long)rec[later].delivered, rec[run].len, rec[later].len);
                ret = -1;
                goto out;
            }
        }
        break;
    }
out:
    for (int run = 0; run < 3; run++)
        free(rec[run].p);
    return ret;
}

#endif
