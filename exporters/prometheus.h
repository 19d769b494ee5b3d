/* prometheus.h: the /metrics exposition of usage and of meterd's health.
 *
 * Families (stable, underscored names; labels exactly as stored):
 *   meterd_tokens_total{cluster,namespace,department,model,provider,token_type}
 *   meterd_requests_total{...same...}          only token_type="input" series:
 *                                              requests are counted from the
 *                                              input type's _count, once
 *   meterd_cost_total{cluster,namespace,department,model,currency}   currency units
 *   meterd_unpriced_tokens_total{cluster,namespace,department,model,provider,token_type}
 *   meterd_metrics_series_limit, meterd_metrics_series_exported,
 *   meterd_metrics_series_cut_total, meterd_metrics_series_untracked_total
 * then meterd's own metrics (selfmetrics.h, scrape.h, http.h).
 *
 * Text format 0.0.4 by default; OpenMetrics 1.0 when the Accept header
 * prefers it (counter families named without _total, `# EOF`).
 * The cardinality limit metrics.max_series is applied in first-seen order, so
 * the same series stay exported as new ones arrive; every series left out is
 * counted, nothing is cut silently. */
#ifndef MD_EXP_PROMETHEUS_H
#define MD_EXP_PROMETHEUS_H

#include <stddef.h>
#include <stdint.h>

#include "../meterd/buf.h"

struct md_app;
struct md_usnap;

enum md_promexp_format { MD_PROMEXP_TEXT = 0, MD_PROMEXP_OPENMETRICS, MD_PROMEXP_FORMATS };

/* The format an Accept header asks for (NULL or unparsable: text 0.0.4).
 * OpenMetrics when application/openmetrics-text has q > 0 and a q at least
 * that of text/plain and of any wildcard. */
enum md_promexp_format md_promexp_negotiate(const char *accept);
const char *md_promexp_content_type(enum md_promexp_format f);

struct md_promexp_stats {
    uint64_t exported;      /* usage series written */
    uint64_t cut;           /* usage series left out by max_series */
};

/* Renders the usage families of snapshot s.  Pure.  MD_ELIMIT when out's cap
 * is reached. */
int md_promexp_render_usage(const struct md_usnap *s, enum md_promexp_format f,
    uint64_t max_series, struct md_buf *out, struct md_promexp_stats *stats);

/* Rewrites text-0.0.4 families into OpenMetrics families: a counter
 * `x_total` becomes family `x` (samples keep x_total); other families are
 * unchanged.  Pure; in is not modified. */
int md_promexp_om_convert(const char *in, size_t len, struct md_buf *out);

/* Cents-free decimal spelling of nanos (1e-9 units): "-12.5", "0", "3.000000001". */
int md_promexp_put_nanos(struct md_buf *b, int64_t nanos);

/* The /metrics body in two parts, for a zero-copy response: `usage` is the
 * cached usage body shared by every request of the same snapshot (read-only,
 * valid until md_promexp_parts_release), `tail` the health metrics of this
 * request (and "# EOF" in OpenMetrics), owned.  Thread-safe. */
struct md_promexp_parts {
    const char *usage;
    size_t      usage_len;
    char       *tail;
    size_t      tail_len;
    const char *ctype;          /* static */
    const char *encoding;       /* "gzip" or NULL (static) */
    void       *hold;           /* the reference keeping `usage` alive */
};
/* accept_encoding: the request's Accept-Encoding (NULL: none).  With gzip
 * accepted, usage + tail are one gzip stream: the usage part compressed once
 * per snapshot (up to a sync flush), the tail finished per request from a
 * copy of that deflate state. */
int  md_promexp_render_parts(struct md_app *app, const char *accept,
    const char *accept_encoding, struct md_promexp_parts *out);
void md_promexp_parts_release(struct md_promexp_parts *p);   /* NULL ok */

/* The whole /metrics body for an HTTP thread (a copy of the two parts): the usage part is rendered
 * once per snapshot, format and limit and then served from a cache; health
 * metrics are rendered on every call.  *ctype is a static string. */
int md_promexp_render(struct md_app *app, const char *accept, struct md_buf *out,
    const char **ctype);

#endif
