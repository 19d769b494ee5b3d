/* main.c: subcommands, signals, start/stop order.
 *
 * The main thread owns the configuration and the lifecycle.  It blocks
 * SIGTERM, SIGINT and SIGHUP before any thread exists (so every thread
 * inherits the mask), starts the store writer and the HTTP server, then waits
 * in sigwait().  SIGHUP reloads: the new file is validated first and swapped
 * in only when it has no error.  Stop order: HTTP (no new readers), writer
 * (queue drained and committed), store closed; exit 0. */
#define MD_MODULE "main"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api.h"
#include "app.h"
#include "cmd_bills.h"
#include "cmd_usage.h"
#include "cmd_discover.h"
#include "cmd_parse.h"
#include "cmd_pricing.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "rating.h"
#include "cm_cost.h"
#include "scrape.h"
#include "store.h"
#include "util.h"
#include "version.h"

static void
usage(FILE *fp)
{
    fputs("usage: meterd <command> [options]\n"
          "\n"
          "commands:\n"
          "  run -c FILE           run the daemon with configuration FILE\n"
          "  check-config -c FILE  validate FILE; print every error as FILE:LINE:COL: message\n"
          "  usage -c FILE [...]   usage per tenant from the database (meterd usage --help)\n"
          "  discover -c FILE [--rounds N]\n"
          "                        list the Kubernetes pods FILE selects and print the scrape\n"
          "                        targets found, one JSON object per line (N lists,\n"
          "                        kubernetes.refresh apart)\n"
          "  parse [options] FILE  print the samples of an exposition as JSON lines (parse -h)\n"
          "  pricing check|show|import ...  validate, print or import pricing (-h)\n"
          "  bills -c FILE [...]   bills per tenant: table, JSON, CSV or FOCUS (bills -h)\n"
          "  backfill -c FILE --from DAY --to DAY [--cluster C] [--dry-run]\n"
          "                        re-rate a range idempotently; old vs new per tenant\n"
          "  finalize -c FILE --period YYYY-MM\n"
          "                        finalize a month's bills (later changes: corrections)\n"
          "  routes                print every HTTP path served (one per line)\n"
          "  version               print the version\n"
          "\n"
          "options:\n"
          "  -h, --help            this help\n"
          "  --help-config         every configuration key, its type, range and default\n"
          "\n"
          "signals (run): SIGTERM/SIGINT stop cleanly; SIGHUP reloads the configuration\n",
        fp);
}

struct md_config *
md_app_config(struct md_app *app)
{
    struct md_config *c;

    pthread_mutex_lock(&app->cfg_mu);
    c = md_config_ref(app->cfg);
    pthread_mutex_unlock(&app->cfg_mu);
    return c;
}

/* Parses "-c FILE" / "--config FILE" / "--config=FILE" after a subcommand. */
static const char *
config_arg(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0)
            return argv[i] + 9;
    }
    return NULL;
}

static int
cmd_check_config(int argc, char **argv)
{
    struct md_cfg_errors *errs = calloc(1, sizeof(*errs));
    struct md_config *cfg = NULL;
    const char *path = config_arg(argc, argv);
    int rc;

    if (path == NULL) {
        fputs("meterd check-config: -c FILE is required\n", stderr);
        free(errs);
        return 2;
    }
    if (errs == NULL)
        return 1;
    rc = md_config_load(path, &cfg, errs);
    if (rc != MD_OK) {
        md_cfgtab_print_errors(stderr, errs);
        free(errs);
        return 1;
    }
    printf("%s: ok (%zu targets)\n", path, cfg->targets.count);
    md_config_unref(cfg);
    free(errs);
    return 0;
}

static void
apply_logging(const struct md_config *cfg)
{
    static const enum md_log_level lv[] = { MD_LOG_DEBUG, MD_LOG_INFO, MD_LOG_WARN, MD_LOG_ERR };

    md_log_setup(lv[cfg->log.level], cfg->log.format == MD_CFG_LOG_JSON ? MD_LOG_JSON
                                                                         : MD_LOG_LOGFMT);
}

/* pricing.file -> a new revision when it changed (rating.h).  A missing
 * file is not an error: the latest stored revision (or none) stays. */
static int
load_pricing(struct md_app *app, const struct md_config *cfg)
{
    static struct md_cfg_errors errs;   /* main thread only */
    struct md_err err = {0};
    int created = 0, rc;

    memset(&errs, 0, sizeof(errs));
    rc = md_rating_load_file(app->rating, app->store, cfg->pricing.file, &errs, &created, &err);
    for (size_t i = 0; i < errs.count; i++)
        md_log_err("pricing: %s", errs.msgs[i]);
    if (rc != MD_OK) {
        md_log_err("pricing: %s", err.msg);
        return rc;
    }
    if (access(cfg->pricing.file, F_OK) != 0)
        md_log_warn("pricing: file \"%s\" not found; %s", cfg->pricing.file,
            md_rating_revision(app->rating) ? "using the latest stored revision"
                                            : "all usage is unpriced until pricing is set");
    if (created)
        md_log_info("pricing: \"%s\" stored as revision %lld", cfg->pricing.file,
            (long long)md_rating_revision(app->rating));
    return MD_OK;
}

/* The soft open-file limit raised to the hard one, as the Go runtime does
 * for Prometheus: each kept-alive scrape connection holds a descriptor, and
 * the scrape thread sizes its connection bound from this limit (scrape.c
 * conn_limit).  A failure only leaves the bound lower, so it is a warning. */
static void
raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        md_log_warn("cannot raise the open-file limit to %llu: %s",
            (unsigned long long)rl.rlim_max, strerror(errno));
}

static void
reload(struct md_app *app, const char *path)
{
    struct md_cfg_errors *errs = calloc(1, sizeof(*errs));
    struct md_config *next = NULL, *old;
    char detail[512];
    int rc;

    /* reloads_total moves last, after the outcome is stored, so whoever sees
     * it move (a test, an alert) sees that reload's outcome with it */
    if (errs == NULL) {
        md_log_err("reload: out of memory; keeping the running configuration");
        atomic_store(&app->reload_ok, 0);
        atomic_fetch_add(&app->reload_failures_total, 1);
        atomic_fetch_add(&app->reloads_total, 1);
        return;
    }
    rc = md_config_load(path, &next, errs);
    if (rc != MD_OK) {
        for (size_t i = 0; i < errs->count; i++)
            md_log_err("reload rejected: %s", errs->msgs[i]);
        md_log_err("reload: \"%s\" has %zu error(s); keeping the running configuration",
            path, errs->count);
        atomic_store(&app->reload_ok, 0);
        atomic_fetch_add(&app->reload_failures_total, 1);
        atomic_fetch_add(&app->reloads_total, 1);
        (void)snprintf(detail, sizeof(detail), "rejected: %zu error(s): %s", errs->count,
            errs->count ? errs->msgs[0] : "");
        (void)md_store_submit_event(app->store, "config_reload_failed", detail);
        free(errs);
        return;
    }
    free(errs);
    pthread_mutex_lock(&app->cfg_mu);
    old = app->cfg;
    app->cfg = next;
    pthread_mutex_unlock(&app->cfg_mu);
    if (strcmp(old->listen, next->listen) != 0)
        md_log_warn("reload: listen changed to \"%s\"; it takes effect at the next restart",
            next->listen);
    if (strcmp(old->storage.path, next->storage.path) != 0)
        md_log_warn("reload: storage.path changed to \"%s\"; it takes effect at the next restart",
            next->storage.path);
    if (memcmp(&old->http, &next->http, sizeof(old->http)) != 0)    /* integers only */
        md_log_warn("reload: the http section changed; it takes effect at the next restart");
    if (old->auth.enabled && !next->auth.enabled)
        md_log_warn("reload: the auth section was removed: the API is now open to anyone "
            "who can reach %s", next->listen);
    md_config_unref(old);
    apply_logging(next);
    md_store_set_max_page_count(app->store, next->storage.max_page_count);
    if (app->scrape != NULL)
        md_scrape_reload(app->scrape);
    md_store_set_retention(app->store, next->usage.retention_ms);
    if (load_pricing(app, next) != MD_OK)
        md_log_err("reload: pricing \"%s\" rejected; the current revision stays",
            next->pricing.file);
    atomic_store(&app->reload_ok, 1);
    atomic_store(&app->reload_success_ns, md_now_realtime_ns());
    atomic_fetch_add(&app->reloads_total, 1);
    (void)snprintf(detail, sizeof(detail), "%zu targets", next->targets.count);
    (void)md_store_submit_event(app->store, "config_reload", detail);
    md_log_info("reload: configuration \"%s\" loaded (%zu targets)", path, next->targets.count);
}

static int
cmd_run(int argc, char **argv)
{
    struct md_cfg_errors *errs;
    struct md_app app;
    struct md_http *http = NULL;
    struct md_err err = {0};
    const char *path = config_arg(argc, argv);
    sigset_t set;
    int rc, sig;

    if (path == NULL) {
        fputs("meterd run: -c FILE is required\n", stderr);
        return 2;
    }
    memset(&app, 0, sizeof(app));
    pthread_mutex_init(&app.cfg_mu, NULL);
    app.start_ns = md_now_realtime_ns();
    errs = calloc(1, sizeof(*errs));
    if (errs == NULL)
        return 1;
    rc = md_config_load(path, &app.cfg, errs);
    if (rc != MD_OK) {
        md_cfgtab_print_errors(stderr, errs);
        free(errs);
        return 1;
    }
    free(errs);
    apply_logging(app.cfg);
    atomic_store(&app.reload_ok, 1);
    atomic_store(&app.reload_success_ns, md_now_realtime_ns());

    /* block the signals before any thread starts, so only sigwait sees them */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        md_fatal("libcurl: global initialisation failed");
    rc = md_store_open(app.cfg->storage.path, app.cfg->storage.busy_timeout_ms, &app.store, &err);
    if (rc != MD_OK)
        md_fatal("store: %s", err.msg);
    rc = md_store_ledger_init(app.store, (size_t)app.cfg->ledger.series_max,
        app.cfg->ledger.max_spread_ms / 1000, app.cfg->ledger.first_scrape == MD_CFG_FIRST_COUNT,
        &err);
    if (rc != MD_OK)
        md_fatal("store: %s", err.msg);
    md_store_set_retention(app.store, app.cfg->usage.retention_ms);
    app.rating = md_rating_new(app.cfg->rating.grace_ms / 1000);
    if (app.rating == NULL)
        md_fatal("rating: out of memory");
    md_store_set_rating(app.store, app.rating);
    md_store_set_max_page_count(app.store, app.cfg->storage.max_page_count);
    rc = md_store_writer_start(app.store, &err);
    if (rc != MD_OK)
        md_fatal("store: %s", err.msg);
    if (load_pricing(&app, app.cfg) != MD_OK)
        md_fatal("pricing: \"%s\" is invalid (errors above)", app.cfg->pricing.file);
    rc = md_scrape_start(&app, md_store_fresh(app.store), &app.scrape, &err);
    if (rc != MD_OK)
        md_fatal("scrape: %s", err.msg);
    /* the Cost Management items' cost: the bill, open days provisional */
    md_api_costmgmt_set_cost_fn(md_app_cm_cost, &app);
    rc = md_http_start(&app, app.cfg, &http, &err);
    if (rc != MD_OK) {
        md_scrape_stop(app.scrape);
        md_store_close(app.store);
        md_fatal("http: %s", err.msg);
    }
    if (!app.cfg->auth.enabled)
        md_log_warn("auth: no auth section in the configuration: the usage and Cost "
            "Management APIs are open to anyone who can reach %s", app.cfg->listen);
    else
        md_log_info("auth: %zu token(s); open paths: %zu", app.cfg->auth.tokens.count,
            app.cfg->auth.open_paths.count);
    (void)md_store_submit_event(app.store, "start", MD_VERSION);
    atomic_store(&app.ready, 1);
    md_log_info("meterd %s listening on %s, store \"%s\", %zu targets", MD_VERSION,
        app.cfg->listen, app.cfg->storage.path, app.cfg->targets.count);

    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(&app, path);
            continue;
        }
        md_log_info("received %s; stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    atomic_store(&app.ready, 0);
    md_http_stop(http);
    md_scrape_stop(app.scrape);
    app.scrape = NULL;
    (void)md_store_submit_event(app.store, "stop", "");
    md_store_writer_stop(app.store);
    md_store_close(app.store);
    md_rating_free(app.rating);
    md_config_unref(app.cfg);
    pthread_mutex_destroy(&app.cfg_mu);
    curl_global_cleanup();
    md_log_info("stopped");
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--help-config") == 0) {
        md_config_help(stdout);
        return 0;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("meterd %s (revision %s)\n", MD_VERSION, MD_GIT_REVISION);
        return 0;
    }
    if (strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(argv[1], "parse") == 0)
        return md_cmd_parse(argc - 2, argv + 2);
    if (strcmp(argv[1], "check-config") == 0)
        return cmd_check_config(argc - 2, argv + 2);
    if (strcmp(argv[1], "usage") == 0)
        return md_cmd_usage(argc - 2, argv + 2);
    if (strcmp(argv[1], "discover") == 0)
        return md_cmd_discover(argc - 2, argv + 2);
    if (strcmp(argv[1], "pricing") == 0)
        return md_cmd_pricing(argc - 2, argv + 2);
    if (strcmp(argv[1], "bills") == 0)
        return md_cmd_bills(argc - 2, argv + 2);
    if (strcmp(argv[1], "backfill") == 0)
        return md_cmd_backfill(argc - 2, argv + 2);
    if (strcmp(argv[1], "finalize") == 0)
        return md_cmd_finalize(argc - 2, argv + 2);
    if (strcmp(argv[1], "routes") == 0) {
        for (size_t i = 0; md_http_route_path(i) != NULL; i++)
            printf("%s\n", md_http_route_path(i));
        return 0;
    }
    fprintf(stderr, "meterd: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
