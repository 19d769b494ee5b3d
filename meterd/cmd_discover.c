/* cmd_discover.c: the `meterd discover` subcommand, an operator's view of
 * what Kubernetes discovery would scrape: loads the configuration, runs
 * md_discovery_list() (kubernetes.refresh apart when --rounds N > 1) and
 * prints each target as one JSON line on stdout, with a summary per round
 * (pods skipped by reason) on stderr.  Runs on the main thread only; nothing
 * is shared. */
#define MD_MODULE "discover"

#include "cmd_discover.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "discovery.h"
#include "util.h"

#define ROUNDS_MAX 1000000u

static json_t *
target_json(const struct md_discovered *t)
{
    json_t *o = json_object(), *labels = json_object();

    if (o == NULL || labels == NULL) {
        json_decref(o);
        json_decref(labels);
        return NULL;
    }
    for (size_t i = 0; i < t->labels.count; i++)
        (void)json_object_set_new(labels, t->labels.keys[i], json_string(t->labels.vals[i]));
    (void)json_object_set_new(o, "url", json_string(t->url));
    (void)json_object_set_new(o, "namespace", json_string(t->namespace));
    (void)json_object_set_new(o, "pod", json_string(t->pod));
    (void)json_object_set_new(o, "uid", json_string(t->uid));
    (void)json_object_set_new(o, "node", json_string(t->node));
    (void)json_object_set_new(o, "container", json_string(t->container));
    (void)json_object_set_new(o, "port_name", json_string(t->port_name));
    (void)json_object_set_new(o, "port", json_integer(t->port));
    (void)json_object_set_new(o, "labels", labels);
    return o;
}

static int
print_result(const struct md_discovery_result *res)
{
    for (size_t i = 0; i < res->count; i++) {
        json_t *o = target_json(&res->v[i]);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

        json_decref(o);
        if (s == NULL) {
            fputs("meterd discover: out of memory\n", stderr);
            return 1;
        }
        printf("%s\n", s);
        free(s);
    }
    fflush(stdout);
    return 0;
}

static void
print_summary(unsigned round, const struct md_discovery_stats *st)
{
    fprintf(stderr, "discover: round %u: %zu targets from %zu pods in %zu pages "
        "(skipped: not_running=%zu deleting=%zu no_ip=%zu no_port=%zu invalid=%zu "
        "duplicate=%zu; labels_dropped=%zu)\n", round, st->targets, st->pods, st->pages,
        st->not_running, st->deleting, st->no_ip, st->no_port, st->invalid, st->duplicate,
        st->labels_dropped);
    if (st->first_invalid[0] != '\0')
        fprintf(stderr, "discover: first invalid pod: %s\n", st->first_invalid);
}

static void
sleep_ms(uint64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0)
        ;
}

int
md_cmd_discover(int argc, char **argv)
{
    struct md_cfg_errors *errs;
    struct md_config *cfg = NULL;
    const char *path = NULL;
    uint64_t rounds = 1;
    int status = 0;

    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            i++;
            if (md_parse_u64(argv[i], strlen(argv[i]), ROUNDS_MAX, &rounds) != MD_OK ||
                rounds == 0) {
                fprintf(stderr, "meterd discover: --rounds needs a number from 1 to %u\n",
                    ROUNDS_MAX);
                return 2;
            }
        } else {
            fprintf(stderr, "meterd discover: unknown argument \"%s\"\n", argv[i]);
            return 2;
        }
    }
    if (path == NULL) {
        fputs("meterd discover: -c FILE is required\n", stderr);
        return 2;
    }
    errs = calloc(1, sizeof(*errs));
    if (errs == NULL)
        return 1;
    if (md_config_load(path, &cfg, errs) != MD_OK) {
        md_cfgtab_print_errors(stderr, errs);
        free(errs);
        return 1;
    }
    free(errs);
    if (!cfg->kubernetes.enabled)
        fprintf(stderr, "discover: note: kubernetes.enabled is false in \"%s\"; listing anyway\n",
            path);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("meterd discover: curl_global_init failed\n", stderr);
        md_config_unref(cfg);
        return 1;
    }
    for (uint64_t r = 1; r <= rounds; r++) {
        struct md_discovery_result res;
        struct md_err err = {0};

        md_discovery_result_init(&res);
        if (md_discovery_list(cfg, &res, &err) != MD_OK) {
            fprintf(stderr, "discover: round %u: %s\n", (unsigned)r, err.msg);
            status = 1;
        } else {
            if (print_result(&res) != 0)
                status = 1;
            print_summary((unsigned)r, &res.stats);
        }
        md_discovery_result_fini(&res);
        if (r < rounds)
            sleep_ms(cfg->kubernetes.refresh_ms);
    }
    curl_global_cleanup();
    md_config_unref(cfg);
    return status;
}
