/* scrape.h: the scrape thread (libcurl multi).
 *
 * One thread owns the CURLM handle, every target's easy handle, body buffer
 * and schedule.  It reads the configuration (a reference taken from the app)
 * when started and after md_scrape_reload(); each successful scrape becomes
 * an md_batch handed to the store's writer.  Per-target status is published
 * under a mutex for /metrics and GET /api/v1/targets. */
#ifndef MD_SCRAPE_H
#define MD_SCRAPE_H

#include "app.h"
#include "buf.h"
#include "util.h"

#define MD_SCRAPE_TARGETS_MAX 100000

struct md_scrape;

/* store_fresh: the database had never metered before this process, so the
 * targets of the first target list are "initial" (ledger.first_scrape). */
int  md_scrape_start(struct md_app *app, int store_fresh, struct md_scrape **out,
    struct md_err *err);
/* Stops the thread: running transfers are abandoned (nothing of them is
 * applied); joins.  NULL is a no-op. */
void md_scrape_stop(struct md_scrape *s);
/* Asks the thread to re-read the app's configuration (targets, attribution). */
void md_scrape_reload(struct md_scrape *s);

/* Appends per-target metrics (meterd_target_up, meterd_scrape_duration_seconds,
 * meterd_scrape_samples, meterd_scrape_failures_total, meterd_samples_dropped_total,
 * meterd_overflow_series) to an exposition.  Any thread. */
int  md_scrape_render_metrics(struct md_scrape *s, struct md_buf *b);
/* JSON for GET /api/v1/targets (caller md_free()s).  Any thread. */
char *md_scrape_targets_json(struct md_scrape *s, size_t *len);

#endif
