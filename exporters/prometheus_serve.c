/* prometheus_serve.c: /metrics for HTTP threads: the usage part from the
 * writer's published snapshot, then meterd's own health metrics.
 *
 * Threads: runs on HTTP threads.  The only state is the render cache (one
 * slot per format, each under its own mutex, holding a reference-counted
 * body) and the cut counter (an atomic).  A body is built at most once per
 * (snapshot, format, limit); requests copy it with no lock held.  No SQLite
 * here: the snapshot is all the usage this file sees.
 *
 * Invariants: the usage part is the same bytes for every request of one
 * snapshot, so two scrapes between two commits return identical counters;
 * every series left out by metrics.max_series is counted in
 * meterd_metrics_series_cut_total on every exposition that leaves it out. */
#include "prometheus.h"

#define ZLIB_CONST
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "../meterd/app.h"
#include "../meterd/selfmetrics.h"
#include "../meterd/store.h"
#include "../meterd/usage_snapshot.h"
#include "prom_text.h"

#define MD_PROMEXP_HEALTH_MAX (16u << 20)    /* health part of one exposition */

/* ---- the cached body per format ---- */

struct body {
    atomic_uint refs;
    uint64_t    gen, max_series;
    struct md_promexp_stats stats;
    size_t      len;
    char       *data;
    /* gzip, made on the first request that accepts it (under the cache
     * mutex): the usage compressed up to a sync flush, and the deflate state
     * at that point, which requests copy to compress their own tail, so each
     * response is one valid gzip stream.  zs is never modified after. */
    int         gz_ready;
    z_stream   *zs;
    char       *gz;
    size_t      gz_len;
};

static struct {
    pthread_mutex_t mu;
    struct body    *b;
} cache[MD_PROMEXP_FORMATS] = {
    { PTHREAD_MUTEX_INITIALIZER, NULL }, { PTHREAD_MUTEX_INITIALIZER, NULL },
};

static atomic_ullong series_cut_total;

static void
body_unref(struct body *b)
{
    if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    if (b->zs != NULL) {
        (void)deflateEnd(b->zs);
        md_free(b->zs);
    }
    md_free(b->gz);
    md_free(b->data);
    md_free(b);
}

/* Runs deflate over in[0..len) with flush, appending to out. */
static int
deflate_into(z_stream *zs, const char *in, size_t len, int flush, struct md_buf *out)
{
    char chunk[64 * 1024];
    int zrc;

    zs->next_in = (const Bytef *)in;
    zs->avail_in = (uInt)len;
    do {
        zs->next_out = (Bytef *)chunk;
        zs->avail_out = sizeof(chunk);
        zrc = deflate(zs, flush);
        if (zrc == Z_STREAM_ERROR)
            return MD_ESTATE;
        if (md_buf_append(out, chunk, sizeof(chunk) - zs->avail_out) != MD_OK)
            return MD_ENOMEM;
    } while (zs->avail_out == 0 || zs->avail_in > 0 || (flush == Z_FINISH && zrc != Z_STREAM_END));
    return MD_OK;
}

/* The cached gzip prefix of b (cache mutex held). */
static int
make_gzip(struct body *b)
{
    struct md_buf out;
    z_stream *zs;
    int rc;

    if (b->gz_ready)
        return MD_OK;
    if (b->len > UINT32_MAX)
        return MD_ELIMIT;
    zs = md_calloc(1, sizeof(*zs));
    if (zs == NULL)
        return MD_ENOMEM;
    /* level 1: most of the size win for a fraction of the time; 15 + 16 =
     * a gzip header and trailer */
    if (deflateInit2(zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        md_free(zs);
        return MD_ENOMEM;
    }
    md_buf_init(&out, (size_t)1 << 30);
    rc = deflate_into(zs, b->data, b->len, Z_SYNC_FLUSH, &out);
    if (rc == MD_OK) {
        b->gz = md_buf_steal(&out, &b->gz_len);
        if (b->gz == NULL)
            rc = MD_ENOMEM;
    }
    md_buf_fini(&out);
    if (rc != MD_OK) {
        (void)deflateEnd(zs);
        md_free(zs);
        return rc;
    }
    b->zs = zs;
    b->gz_ready = 1;
    return MD_OK;
}

/* A counted reference to the rendered usage body of s, rendering it when the
 * cached one is of another snapshot or limit. */
static int
usage_body(struct md_usnap *s, enum md_promexp_format f, uint64_t max_series, int gzip,
    struct body **out)
{
    struct body *b;
    struct md_buf buf;
    int rc = MD_OK;

    pthread_mutex_lock(&cache[f].mu);
    b = cache[f].b;
    if (b != NULL && b->gen == md_usnap_generation(s) && b->max_series == max_series) {
        rc = gzip ? make_gzip(b) : MD_OK;
        if (rc == MD_OK)
            atomic_fetch_add(&b->refs, 1);
        pthread_mutex_unlock(&cache[f].mu);
        *out = rc == MD_OK ? b : NULL;
        return rc;
    }
    /* rendered under the lock: concurrent scrapes of a new snapshot wait for
     * one render instead of each doing it */
    b = md_calloc(1, sizeof(*b));
    if (b == NULL) {
        pthread_mutex_unlock(&cache[f].mu);
        return MD_ENOMEM;
    }
    md_buf_init(&buf, (size_t)1 << 30);
    rc = md_promexp_render_usage(s, f, max_series, &buf, &b->stats);
    if (rc == MD_OK) {
        b->data = md_buf_steal(&buf, &b->len);
        if (b->data == NULL)
            rc = MD_ENOMEM;
    }
    if (rc != MD_OK) {
        pthread_mutex_unlock(&cache[f].mu);
        md_buf_fini(&buf);
        md_free(b);
        return rc;
    }
    b->gen = md_usnap_generation(s);
    b->max_series = max_series;
    atomic_init(&b->refs, 2);           /* the cache's and the caller's */
    body_unref(cache[f].b);
    cache[f].b = b;
    rc = gzip ? make_gzip(b) : MD_OK;
    if (rc != MD_OK)
        body_unref(b);                  /* the caller's reference */
    pthread_mutex_unlock(&cache[f].mu);
    *out = rc == MD_OK ? b : NULL;
    return rc;
}

/* 1 when an Accept-Encoding header accepts gzip (q > 0). */
static int
accepts_gzip(const char *ae)
{
    const char *p = ae;

    if (ae == NULL || strnlen(ae, 4097) > 4096)
        return 0;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *semi = memchr(p, ';', len);
        size_t tl = semi ? (size_t)(semi - p) : len;

        while (tl > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            tl--;
            len--;
        }
        while (tl > 0 && (p[tl - 1] == ' ' || p[tl - 1] == '\t'))
            tl--;
        if (tl == 4 && strncasecmp(p, "gzip", 4) == 0) {
            /* "q=0" (any spelling of zero) refuses it */
            const char *q = semi ? strstr(semi, "q=") : NULL;

            if (q == NULL || q >= p + len)
                return 1;
            for (q += 2; *q == '0' || *q == '.'; q++)
                ;
            return *q >= '1' && *q <= '9';
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

static int
render_limit_metrics(struct md_buf *b, uint64_t max_series, const struct md_promexp_stats *st,
    uint64_t untracked)
{
    int rc = md_prom_family(b, "meterd_metrics_series_limit", "gauge",
        "Usage series /metrics exports at most (metrics.max_series).");

    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_metrics_series_limit", NULL, 0, max_series);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_metrics_series_exported", "gauge",
            "Usage series in this exposition.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_metrics_series_exported", NULL, 0, st->exported);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_metrics_series_cut_total", "counter",
            "Usage series left out of expositions by metrics.max_series, summed over "
            "expositions served (raise the limit or aggregate).");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_metrics_series_cut_total", NULL, 0,
            atomic_load(&series_cut_total));
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_metrics_series_untracked_total", "counter",
            "Committed usage deltas the in-memory /metrics aggregate could not hold "
            "(label-set limit, memory); they are in the usage API, not on /metrics.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_metrics_series_untracked_total", NULL, 0, untracked);
    return rc;
}

int
md_promexp_render_parts(struct md_app *app, const char *accept, const char *accept_encoding,
    struct md_promexp_parts *out)
{
    int gzip = accepts_gzip(accept_encoding);
    enum md_promexp_format f = md_promexp_negotiate(accept);
    struct md_config *cfg = md_app_config(app);
    uint64_t max_series = cfg->metrics.max_series;
    struct md_usnap *s = md_store_usage_snapshot(app->store);
    struct body *ub = NULL;
    struct md_buf health, tail;
    int rc;

    md_config_unref(cfg);
    memset(out, 0, sizeof(*out));
    md_buf_init(&health, MD_PROMEXP_HEALTH_MAX);
    md_buf_init(&tail, MD_PROMEXP_HEALTH_MAX);
    rc = usage_body(s, f, max_series, gzip, &ub);
    if (rc == MD_OK) {
        atomic_fetch_add(&series_cut_total, ub->stats.cut);
        rc = render_limit_metrics(&health, max_series, &ub->stats, md_usnap_untracked(s));
    }
    if (rc == MD_OK)
        rc = md_selfmetrics_render(app, &health);
    if (rc == MD_OK && f == MD_PROMEXP_OPENMETRICS)
        rc = md_promexp_om_convert(health.data, health.len, &tail);
    else if (rc == MD_OK)
        rc = md_buf_append(&tail, health.data, health.len);
    /* OpenMetrics: the exposition MUST end with "# EOF" */
    if (rc == MD_OK && f == MD_PROMEXP_OPENMETRICS)
        rc = md_buf_puts(&tail, "# EOF\n");
    md_buf_fini(&health);
    md_usnap_unref(s);
    if (rc == MD_OK && gzip) {
        /* finish the cached stream with this request's tail */
        struct md_buf z;
        z_stream zs;

        md_buf_init(&z, MD_PROMEXP_HEALTH_MAX);
        if (deflateCopy(&zs, ub->zs) != Z_OK) {
            rc = MD_ENOMEM;
        } else {
            rc = deflate_into(&zs, tail.data, tail.len, Z_FINISH, &z);
            (void)deflateEnd(&zs);
        }
        md_buf_fini(&tail);
        tail = z;
    }
    if (rc == MD_OK) {
        out->tail = md_buf_steal(&tail, &out->tail_len);
        if (out->tail == NULL)
            rc = MD_ENOMEM;
    }
    md_buf_fini(&tail);
    if (rc != MD_OK) {
        body_unref(ub);
        md_free(out->tail);
        memset(out, 0, sizeof(*out));
        return rc;
    }
    out->usage = gzip ? ub->gz : ub->data;
    out->usage_len = gzip ? ub->gz_len : ub->len;
    out->encoding = gzip ? "gzip" : NULL;
    out->hold = ub;
    out->ctype = md_promexp_content_type(f);
    return MD_OK;
}

void
md_promexp_parts_release(struct md_promexp_parts *p)
{
    if (p == NULL)
        return;
    body_unref(p->hold);
    md_free(p->tail);
    memset(p, 0, sizeof(*p));
}

int
md_promexp_render(struct md_app *app, const char *accept, struct md_buf *out,
    const char **ctype)
{
    struct md_promexp_parts parts;
    int rc = md_promexp_render_parts(app, accept, NULL, &parts);

    if (rc != MD_OK)
        return rc;
    rc = md_buf_append(out, parts.usage, parts.usage_len);
    if (rc == MD_OK)
        rc = md_buf_append(out, parts.tail, parts.tail_len);
    *ctype = parts.ctype;
    md_promexp_parts_release(&parts);
    return rc;
}
