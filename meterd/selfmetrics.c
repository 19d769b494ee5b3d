/* selfmetrics.c: meterd's own metrics for /metrics.  No state of its own:
 * everything is read from the app's atomics, the store's stats and the HTTP
 * counters at render time, on the calling HTTP thread. */
#include "selfmetrics.h"

#include <sqlite3.h>
#include <stdio.h>

#include "../exporters/prom_text.h"
#include "http.h"
#include "scrape.h"
#include "rating.h"
#include "store.h"
#include "util.h"
#include "version.h"

int
md_selfmetrics_render(struct md_app *app, struct md_buf *b)
{
    struct md_store_stats ss = {0};
    struct md_prom_label bl[] = {
        { "version", MD_VERSION, 0 },
        { "revision", MD_GIT_REVISION, 0 },
        { "sqlite", sqlite3_libversion(), 0 },
    };
    int rc;

    md_store_get_stats(app->store, &ss);
    rc = md_prom_family(b, "meterd_build_info", "gauge",
        "A metric with a constant '1' value labelled by version, revision and SQLite version.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_build_info", bl, 3, 1);
    if (rc == MD_OK)
        rc = md_prom_family(b, "process_start_time_seconds", "gauge",
            "Start time of the process since unix epoch in seconds.");
    if (rc == MD_OK)
        rc = md_prom_sample_f64(b, "process_start_time_seconds", NULL, 0,
            (double)(app->start_ns / 1000000ULL) / 1000.0);
    /* reloads_total first: the reloader stores the outcome before it counts
     * the attempt, so with sequentially consistent atomics the outcome read
     * after it is at least as new as the count */
    uint64_t reloads = atomic_load(&app->reloads_total);
    uint64_t reload_ok = (uint64_t)atomic_load(&app->reload_ok);
    uint64_t reload_success_ns = (uint64_t)atomic_load(&app->reload_success_ns);
    uint64_t reload_failures = atomic_load(&app->reload_failures_total);

    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_config_last_reload_successful", "gauge",
            "Whether the last configuration load or reload attempt was successful.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_config_last_reload_successful", NULL, 0,
            reload_ok);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_config_last_reload_success_timestamp_seconds", "gauge",
            "Timestamp of the last successful configuration load or reload.");
    if (rc == MD_OK)
        rc = md_prom_sample_f64(b, "meterd_config_last_reload_success_timestamp_seconds", NULL, 0,
            (double)(reload_success_ns / 1000000ULL) / 1000.0);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_config_reloads_total", "counter",
            "Configuration reload attempts (SIGHUP).");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_config_reloads_total", NULL, 0, reloads);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_config_reload_failures_total", "counter",
            "Configuration reloads rejected because the new file did not validate.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_config_reload_failures_total", NULL, 0,
            reload_failures);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_commits_total", "counter",
            "SQLite write transactions committed.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_commits_total", NULL, 0, ss.commits);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_errors_total", "counter",
            "SQLite write transactions rolled back after an error.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_errors_total", NULL, 0, ss.errors);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_busy_retries_total", "counter",
            "Write attempts that found the database locked by another process.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_busy_retries_total", NULL, 0, ss.busy_retries);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_write_seconds_total", "counter",
            "Time spent in committed SQLite write transactions.");
    if (rc == MD_OK)
        rc = md_prom_sample_f64(b, "meterd_store_write_seconds_total", NULL, 0,
            (double)ss.write_ns_sum / 1e9);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_queue_depth", "gauge",
            "Jobs waiting for the store writer.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_queue_depth", NULL, 0, ss.queue_depth);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_queue_dropped_total", "counter",
            "Jobs refused because the writer queue was full.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_queue_dropped_total", NULL, 0, ss.queue_dropped);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_healthy", "gauge",
            "1 when the last store write committed, 0 after a failed one.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_healthy", NULL, 0, (uint64_t)ss.healthy);
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_store_schema_version", "gauge",
            "Schema version of the database (PRAGMA user_version).");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_store_schema_version", NULL, 0,
            (uint64_t)ss.schema_version);
    {
        static const struct { const char *name, *type, *help; } lm[] = {
            { "meterd_ledger_resets_total", "counter",
              "Series billed in full because their target restarted (or they went down)." },
            { "meterd_ledger_target_restarts_total", "counter",
              "Scrapes in which a target was judged restarted (its billed series went down)." },
            { "meterd_ledger_anomalies_total", "counter",
              "Scrapes in which fewer than half of a target's series went down (only those reset)." },
            { "meterd_ledger_flagged_2p53_total", "counter",
              "Counter values at or above 2^53 (billed as represented; flagged)." },
            { "meterd_ledger_rejected_scrapes_total", "counter",
              "Scrapes the ledger refused (duplicate series identity, series limit)." },
            { "meterd_ledger_spread_capped_total", "counter",
              "Gaps longer than ledger.max_spread booked whole into one hour." },
            { "meterd_usage_tokens_committed_total", "counter",
              "Tokens committed to the usage store since start." },
            { "meterd_usage_requests_committed_total", "counter",
              "Requests committed to the usage store since start." },
        };
        const uint64_t lv[] = {
            ss.ledger_resets, ss.ledger_target_restarts, ss.ledger_anomalies,
            ss.ledger_flagged_2p53, ss.batches_rejected, ss.spread_capped,
            ss.tokens_committed, ss.requests_committed,
        };

        for (size_t i = 0; i < sizeof(lv) / sizeof(lv[0]) && rc == MD_OK; i++) {
            rc = md_prom_family(b, lm[i].name, lm[i].type, lm[i].help);
            if (rc == MD_OK)
                rc = md_prom_sample_u64(b, lm[i].name, NULL, 0, lv[i]);
        }
    }
    if (rc == MD_OK && app->rating != NULL) {
        static const struct { const char *name, *help; } rm[] = {
            { "meterd_rating_day_ratings_total",
              "(cluster, day) ratings that stored new bill lines." },
            { "meterd_rating_lines_written_total", "Bill lines stored by ratings." },
            { "meterd_rating_correction_lines_total",
              "Correction lines booked for re-rated finalized days." },
        };
        /* meterd_unpriced_tokens_total is exported per tenant with the usage
         * (exporters/prometheus.c), fed by the rater */
        struct md_rating_stats rs;
        uint64_t rv[3];

        md_rating_get_stats(app->rating, &rs);
        rv[0] = rs.days_rated;
        rv[1] = rs.lines_written;
        rv[2] = rs.corrections_written;
        for (size_t i = 0; i < 3 && rc == MD_OK; i++) {
            rc = md_prom_family(b, rm[i].name, "counter", rm[i].help);
            if (rc == MD_OK)
                rc = md_prom_sample_u64(b, rm[i].name, NULL, 0, rv[i]);
        }
    }
    if (rc == MD_OK)
        rc = md_http_render_metrics(b);
    if (rc == MD_OK && app->scrape != NULL)
        rc = md_scrape_render_metrics(app->scrape, b);
    return rc;
}
