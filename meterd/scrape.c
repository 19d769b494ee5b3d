/* scrape.c: the scrape thread.
 *
 * Threads: one scrape thread owns the CURLM handle, every target (easy
 * handle, body buffer, schedule, attribution rules) and runs
 * curl_multi_poll.  When kubernetes.enabled, a discovery thread lists pods
 * every kubernetes.refresh (a slow API server must not stall scrapes) and
 * publishes its result under disc_mu; the scrape thread merges it with the
 * static targets on its next turn.  Other threads touch only: `wake` flags (atomics) plus
 * curl_multi_wakeup, and the published status (targets[].st and the global
 * counters) under status_mu.  The targets array itself changes only in the
 * scrape thread, with status_mu held, so readers see a consistent list.
 *
 * Invariants: a scrape is applied all or nothing — the body is parsed into a
 * batch and handed to the writer only when the transfer completed with 200,
 * within the size limit, and the whole body parsed.  Anything else is a
 * failure, counted by reason and logged once per change of state
 * (md_complain).  Schedules are offset per target by a hash of its URL, so
 * targets do not fire together; scrapes due within a small slack start on
 * the same wake-up (schedule.h). */
#define MD_MODULE "scrape"
#include "scrape.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include "../exporters/prom_text.h"
#include "attrib.h"
#include "batch.h"
#include "config.h"
#include "discovery.h"
#include "expfmt.h"
#include "gunzip.h"
#include "log.h"
#include "schedule.h"
#include "store.h"
#include "version.h"

enum fail_reason {
    FAIL_CONNECT = 0, FAIL_TIMEOUT, FAIL_HTTP_STATUS, FAIL_BODY_TOO_LARGE, FAIL_TRANSFER,
    FAIL_PARSE, FAIL_SAMPLE_LIMIT, FAIL_QUEUE_FULL, FAIL_INTERNAL, FAIL_COUNT
};
static const char *const fail_names[FAIL_COUNT] = {
    "connect", "timeout", "http_status", "body_too_large", "transfer", "parse_error",
    "sample_limit", "queue_full", "internal",
};

struct status {
    int      up;                      /* -1 never scraped, 0 down, 1 up */
    double   duration_s;
    uint64_t samples;                 /* samples in the last successful body */
    uint64_t billed;                  /* entries billed from it */
    uint64_t last_ns;                 /* wall clock of the last attempt's end */
    uint64_t scrapes;
    uint64_t failures[FAIL_COUNT];
    uint64_t overflow_series;
    char     last_error[256];
};

struct target {
    char                *key;         /* identity: the URL */
    char                *url;
    char                *namespace;
    uint64_t             interval_ns;
    uint64_t             timeout_ms;
    uint64_t             next_due_ns; /* monotonic */
    int                  initial;
    int                  in_flight;
    uint64_t             started_ns;  /* monotonic */
    uint64_t             started_wall_ns;
    unsigned             fails;
    CURL                *easy;
    /* the caches of the target's group (struct conn_group); NULL before
     * the first scrape, and for a target beyond the grouped ones */
    struct conn_group   *grp;
    int                  grp_none;    /* uses the multi handle's caches */
    /* the request headers of this target's transfers: libcurl reads the
     * list while a transfer runs, so it is the target's own and replaced
     * only between transfers (a shared list freed by a reload or a
     * discovery refresh while scrapes were in flight crashed meterd in
     * curl_multi_perform: RELIABILITY 18) */
    struct curl_slist   *headers;
    unsigned             headers_gen; /* accept_gen it was built from */
    /* the settings the handle's options were last set from (start_scrape) */
    int                  opts_set;
    uint64_t             opts_timeout_ms;
    size_t               opts_cap;
    struct md_buf        body;        /* as received (gzip'ed when gzip is set) */
    int                  body_over;
    /* the last batch's size: the next one is reserved at once (a target's
     * series change little from scrape to scrape) */
    size_t               last_entries, last_arena;
    int                  gzip;        /* Content-Encoding: gzip */
    int                  encoding_bad; /* a Content-Encoding we did not ask for */
    struct md_complaint  complaint;
    struct status        st;          /* guarded by status_mu */
};

#define SPARE_BODIES 4
/* Targets share libcurl's DNS and connection caches in groups of up to
 * CONN_GROUP (a share of CURL_LOCK_DATA_DNS and CURL_LOCK_DATA_CONNECT,
 * used by the scrape thread alone, so no lock callbacks).  libcurl walks
 * the whole cache a handle uses on every transfer: it prunes the DNS cache
 * at the end of each, and curl_multi_remove_handle visits every cached
 * connection.  In the multi handle's caches both walks were as long as
 * the target count (one host:port and one kept connection per target): at
 * 200 targets the DNS walk was ~9 % of libcurl's CPU, and a connection
 * cache per target saved ~8 % of meterd's CPU at 500 (bench/RESULTS.md).
 * A group costs ~10 KiB (a connection cache has a hash table and an easy
 * handle of its own), so groups, not one per target.  A group takes new
 * members until CONN_GROUP joined, and goes with its last member.
 *
 * Each target holds at most one connection (one scrape in flight), and a
 * group's cache is not counted by CURLMOPT_MAX_TOTAL_CONNECTIONS, so at most
 * conn_max / 2 targets join groups and the multi handle's own caches, for
 * the rest, are bounded to the other half. */
#define CONN_GROUP 32
struct conn_group {
    CURLSH  *sh;
    unsigned members;             /* targets that use it now */
    unsigned joined;              /* targets that ever joined */
};
/* open connections at most (CURLMOPT_MAX_TOTAL_CONNECTIONS), and idle ones
 * kept for reuse at most (CURLMOPT_MAXCONNECTS): each holds a file
 * descriptor, so the bound is the open-file limit less a reserve for the
 * store, the HTTP server and discovery (conn_limit()), within these.  With
 * a fixed 256, a scrape of 500 keep-alive targets reconnected about every
 * other time (bench/RESULTS.md, stop 14: 0.16x of Prometheus's CPU at 500
 * targets) */
#define CONN_MIN     16
#define CONN_MAX     16384
#define CONN_RESERVE 256

struct md_scrape {
    long                 conn_max;    /* conn_limit() at start */
    struct conn_group   *grp_open;    /* the group new targets join */
    long                 grouped;     /* targets in a group */
    struct md_app       *app;
    struct md_store     *store;
    pthread_t            thread;
    int                  thread_started;
    CURLM               *multi;
    char                 accept[600]; /* "Accept: ..." of the current configuration */
    const char          *accept_enc;  /* "Accept-Encoding: ..." (a literal) */
    unsigned             accept_gen;  /* bumped when accept or accept_enc changes */
    struct md_attrib    *attrib;
    struct md_attrib_scratch *scratch; /* scrape thread's attribution memory */
    struct md_expfmt_parser *parser;  /* scrape thread's, reused for every body */
    struct md_buf        plain;       /* a gzip body inflated, reused for every body */
    struct md_gunzip    *inflater;    /* scrape thread's */
    /* body memory of finished scrapes, handed to the next transfer: an idle
     * target holds no body, so memory follows the transfers in flight, not
     * the number of targets (200 targets x a 256 KiB body were 51 MB) */
    struct md_buf        spare[SPARE_BODIES];
    size_t               nspare;
    struct md_config    *cfg;         /* reference held by the thread */
    int                  store_fresh;
    int                  first_sync_done;
    atomic_int           stop;
    atomic_int           reload;

    /* discovery: the thread and its latest result (guarded by disc_mu) */
    pthread_t            disc_thread;
    int                  disc_started;
    pthread_mutex_t      disc_mu;
    pthread_cond_t       disc_cv;
    struct md_discovery_result disc;     /* latest successful list */
    int                  disc_have;      /* a list succeeded at least once */
    atomic_int           disc_new;       /* disc changed since the last sync */
    int                  initial_open;   /* fresh db: first target set not complete yet */

    pthread_mutex_t      status_mu;
    struct target      **targets;     /* array changes only in the scrape thread */
    size_t               ntargets;
    uint64_t             dropped[MD_DROP_REASON_COUNT];    /* guarded by status_mu */
    uint64_t             batches_submitted;
};

/* ---- helpers ---- */

/* connections the scrape thread may hold: the soft open-file limit (main
 * raises it to the hard one) less CONN_RESERVE, within CONN_MIN..CONN_MAX */
static long
conn_limit(void)
{
    struct rlimit rl;
    rlim_t n = 1024;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        n = rl.rlim_cur == RLIM_INFINITY ? CONN_MAX + CONN_RESERVE : rl.rlim_cur;
    n = n > CONN_RESERVE + CONN_MIN ? n - CONN_RESERVE : CONN_MIN;
    return n < CONN_MAX ? (long)n : CONN_MAX;
}

static uint64_t
fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t
write_cb(char *p, size_t size, size_t n, void *arg)
{
    struct target *t = arg;
    size_t len = size * n;

    if (md_buf_append(&t->body, p, len) != MD_OK) {
        t->body_over = 1;
        return 0;                     /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    return len;
}

/* Content-Encoding of the answer: meterd inflates gzip itself, so that a
 * gzip stream cut short (libcurl 7.88 accepts one cut at a block boundary)
 * fails the scrape instead of applying part of it. */
static size_t
header_cb(char *p, size_t size, size_t n, void *arg)
{
    struct target *t = arg;
    size_t len = size * n, k = sizeof("content-encoding:") - 1;

    if (len > k && strncasecmp(p, "content-encoding:", k) == 0) {
        const char *v = p + k, *end = p + len;

        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        if ((size_t)(end - v) == 4 && strncasecmp(v, "gzip", 4) == 0)
            t->gzip = 1;
        else if (!((size_t)(end - v) == 8 && strncasecmp(v, "identity", 8) == 0))
            t->encoding_bad = 1;
    }
    return len;
}

/* t's group: the open one, or a new one when that is full (NULL: no memory) */
static struct conn_group *
group_join(struct md_scrape *s)
{
    struct conn_group *g = s->grp_open;

    if (g == NULL || g->joined == CONN_GROUP) {
        g = md_calloc(1, sizeof(*g));
        if (g == NULL)
            return NULL;
        g->sh = curl_share_init();
        if (g->sh == NULL ||
            curl_share_setopt(g->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
            curl_share_setopt(g->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK) {
            if (g->sh != NULL)
                curl_share_cleanup(g->sh);
            md_free(g);
            return NULL;
        }
        s->grp_open = g;
    }
    g->members++;
    g->joined++;
    s->grouped++;
    return g;
}

static void
target_free(struct md_scrape *s, struct target *t)
{
    if (t == NULL)
        return;
    if (t->easy != NULL)
        curl_easy_cleanup(t->easy);
    if (t->grp != NULL) {           /* after the handle that used it */
        s->grouped--;
        if (--t->grp->members == 0) {
            if (s->grp_open == t->grp)
                s->grp_open = NULL;
            curl_share_cleanup(t->grp->sh);     /* closes its connections */
            md_free(t->grp);
        }
    }
    curl_slist_free_all(t->headers);
    md_buf_fini(&t->body);
    md_free(t->key);
    md_free(t->url);
    md_free(t->namespace);
    md_free(t);
}

/* ---- configuration sync (scrape thread) ---- */

static struct target *
find_target(struct md_scrape *s, const char *key)
{
    for (size_t i = 0; i < s->ntargets; i++)
        if (strcmp(s->targets[i]->key, key) == 0)
            return s->targets[i];
    return NULL;
}

struct want {
    const char *key;          /* identity */
    const char *url;
    const char *namespace;
    uint64_t    interval_ms, timeout_ms;
};

static int
sync_config(struct md_scrape *s)
{
    struct md_config *cfg = md_app_config(s->app);
    const struct md_target_cfg *tc = cfg->targets.v;
    struct md_discovery_result disc;
    struct target **next = NULL;
    struct want *want = NULL;
    struct md_attrib *attrib;
    struct md_err err = {0};
    size_t n = 0, kept = 0, ndisc;
    uint64_t now = md_now_monotonic_ns();
    char **keys = NULL;
    int disc_ready;

    md_discovery_result_init(&disc);
    pthread_mutex_lock(&s->disc_mu);
    disc_ready = !cfg->kubernetes.enabled || s->disc_have;
    ndisc = cfg->kubernetes.enabled ? s->disc.count : 0;
    atomic_store(&s->disc_new, 0);
    /* copy what we need of the published list (the thread may replace it) */
    keys = md_calloc(ndisc ? ndisc : 1, sizeof(char *));
    if (keys != NULL) {
        for (size_t i = 0; i < ndisc; i++) {
            const struct md_discovered *d = &s->disc.v[i];
            size_t kl = strlen(d->url) + strlen(d->uid) + strlen(d->namespace) + 3;

            keys[i] = md_malloc(kl);
            if (keys[i] == NULL)
                break;
            /* "url#uid\0namespace": a new pod with a reused IP is a new target */
            (void)snprintf(keys[i], kl, "%s#%s", d->url, d->uid);
            memcpy(keys[i] + strlen(keys[i]) + 1, d->namespace, strlen(d->namespace) + 1);
        }
    }
    pthread_mutex_unlock(&s->disc_mu);

    attrib = md_attrib_new(cfg, &err);
    want = md_calloc(cfg->targets.count + ndisc + 1, sizeof(*want));
    next = md_calloc(cfg->targets.count + ndisc + 1, sizeof(*next));
    if (attrib == NULL || want == NULL || next == NULL || keys == NULL)
        goto nomem;
    for (size_t i = 0; i < ndisc; i++)
        if (keys[i] == NULL)
            goto nomem;
    for (size_t i = 0; i < cfg->targets.count; i++) {
        want[n].key = tc[i].url;
        want[n].url = tc[i].url;
        want[n].namespace = tc[i].namespace ? tc[i].namespace : "";
        want[n].interval_ms = tc[i].interval_ms ? tc[i].interval_ms : cfg->scrape.interval_ms;
        want[n].timeout_ms = tc[i].timeout_ms ? tc[i].timeout_ms : cfg->scrape.timeout_ms;
        n++;
    }
    for (size_t i = 0; i < ndisc; i++) {
        int dup = 0;

        want[n].key = keys[i];
        want[n].url = keys[i];       /* the URL is the part before '#' */
        want[n].namespace = keys[i] + strlen(keys[i]) + 1;
        want[n].interval_ms = cfg->scrape.interval_ms;
        want[n].timeout_ms = cfg->scrape.timeout_ms;
        for (size_t j = 0; j < cfg->targets.count && !dup; j++)
            dup = strncmp(tc[j].url, keys[i], strlen(tc[j].url)) == 0 &&
                  keys[i][strlen(tc[j].url)] == '#';
        if (!dup)                    /* a static target wins over the same pod */
            n++;
    }
    if (n > MD_SCRAPE_TARGETS_MAX) {
        md_log_err("%zu targets, more than %d; keeping the current targets", n,
            MD_SCRAPE_TARGETS_MAX);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        struct target *t = find_target(s, want[i].key);
        uint64_t interval_ms = want[i].interval_ms;

        if (t == NULL) {
            const char *hash = strchr(want[i].url, '#');
            size_t ulen = hash ? (size_t)(hash - want[i].url) : strlen(want[i].url);

            t = md_calloc(1, sizeof(*t));
            if (t == NULL)
                goto nomem;
            t->key = md_strdup(want[i].key);
            t->url = md_strndup(want[i].url, ulen);
            t->st.up = -1;
            /* initial: present in the first complete target set of a fresh
             * database (ledger.first_scrape); later targets count in full */
            t->initial = s->store_fresh && s->initial_open;
            /* a stable, per-target offset inside the interval */
            t->next_due_ns = now + (fnv1a(want[i].key) % (interval_ms * 1000000ULL));
            if (t->key == NULL || t->url == NULL) {
                target_free(s, t);
                goto nomem;
            }
        } else {
            kept++;
        }
        md_free(t->namespace);
        t->namespace = md_strdup(want[i].namespace);
        if (t->namespace == NULL)
            goto nomem;
        t->interval_ns = interval_ms * 1000000ULL;
        t->timeout_ms = want[i].timeout_ms > interval_ms ? interval_ms : want[i].timeout_ms;
        /* only the cap changes: a transfer in flight keeps writing into the
         * same memory (a lower cap fails it as oversized, which it is) */
        t->body.cap = (size_t)cfg->scrape.body_size_limit;
        next[i] = t;
    }
    /* targets no longer wanted stop being scraped; their ledger state stays
     * in the database */
    pthread_mutex_lock(&s->status_mu);
    for (size_t i = 0; i < s->ntargets; i++) {
        int still = 0;

        for (size_t j = 0; j < n && !still; j++)
            still = next[j] == s->targets[i];
        if (!still) {
            if (s->targets[i]->in_flight)
                curl_multi_remove_handle(s->multi, s->targets[i]->easy);
            md_log_info("target \"%s\" removed; its last state is kept", s->targets[i]->key);
            target_free(s, s->targets[i]);
        }
    }
    md_free(s->targets);
    s->targets = next;
    s->ntargets = n;
    pthread_mutex_unlock(&s->status_mu);
    next = NULL;
    /* idle connections kept for reuse: one per target, up to the total
     * limit.  libcurl's default is 4 x the handles added, and a handle is
     * added only while its scrape runs, so with a few scrapes in flight
     * nearly every scrape of a keep-alive target opened a new TCP
     * connection (socket, handshake, teardown: kernel time; and the
     * simulator could not tell a scrape was read: RELIABILITY 18) */
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS,
        (long)n < s->conn_max ? (long)(n > 0 ? n : 1) : s->conn_max);

    md_attrib_free(s->attrib);
    s->attrib = attrib;
    attrib = NULL;
    md_config_unref(s->cfg);
    s->cfg = cfg;
    cfg = NULL;
    {
        char accept[sizeof(s->accept)];
        /* identity is said explicitly: without the header a server may pick
         * any coding (RFC 9110 12.5.3); a gzip answer is inflated either way */
        const char *enc = s->cfg->scrape.compression == MD_CFG_COMPRESSION_IDENTITY ?
            "Accept-Encoding: identity" : "Accept-Encoding: gzip";

        (void)snprintf(accept, sizeof(accept), "Accept: %s", s->cfg->scrape.accept);
        if (strcmp(accept, s->accept) != 0 || s->accept_enc == NULL ||
            strcmp(enc, s->accept_enc) != 0) {
            memcpy(s->accept, accept, sizeof(accept));
            s->accept_enc = enc;
            s->accept_gen++;    /* each target rebuilds its list before its next scrape */
        }
    }
    if (disc_ready)
        s->initial_open = 0;
    md_log_info("scraping %zu targets (%zu kept, %zu new; %zu discovered)", n, kept, n - kept,
        ndisc);
    for (size_t i = 0; i < ndisc; i++)
        md_free(keys[i]);
    md_free(keys);
    md_free(want);
    md_discovery_result_fini(&disc);
    return MD_OK;
nomem:
    md_log_err("reload: out of memory; keeping the current targets");
fail:
    /* free only the targets that are new (not in s->targets) */
    for (size_t i = 0; next != NULL && i < n; i++)
        if (next[i] != NULL && find_target(s, next[i]->key) != next[i])
            target_free(s, next[i]);
    md_free(next);
    for (size_t i = 0; keys != NULL && i < ndisc; i++)
        md_free(keys[i]);
    md_free(keys);
    md_free(want);
    md_attrib_free(attrib);
    md_config_unref(cfg);
    md_discovery_result_fini(&disc);
    return MD_ENOMEM;
}

/* ---- discovery thread ---- */

static void *
discovery_main(void *arg)
{
    struct md_scrape *s = arg;
    struct md_complaint complaint = {0};

    while (!atomic_load(&s->stop)) {
        struct md_config *cfg = md_app_config(s->app);
        struct md_discovery_result res;
        struct md_err err = {0};
        struct timespec until;
        uint64_t refresh_ms = cfg->kubernetes.refresh_ms;
        int enabled = cfg->kubernetes.enabled, rc = MD_OK;

        md_discovery_result_init(&res);
        if (enabled)
            rc = md_discovery_list(cfg, &res, &err);
        md_config_unref(cfg);
        if (enabled && rc != MD_OK) {
            /* keep scraping the last known pods */
            md_complain(&complaint, MD_LOG_WARN, MD_MODULE, "kubernetes: %s", err.msg);
        } else if (enabled) {
            md_release(&complaint, MD_MODULE, "kubernetes: listing pods again");
            pthread_mutex_lock(&s->disc_mu);
            md_discovery_result_move(&s->disc, &res);
            s->disc_have = 1;
            pthread_mutex_unlock(&s->disc_mu);
            atomic_store(&s->disc_new, 1);
            curl_multi_wakeup(s->multi);
        }
        md_discovery_result_fini(&res);
        (void)clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(refresh_ms / 1000);
        until.tv_nsec += (long)(refresh_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->disc_mu);
        if (!atomic_load(&s->stop))
            (void)pthread_cond_timedwait(&s->disc_cv, &s->disc_mu, &until);
        pthread_mutex_unlock(&s->disc_mu);
    }
    return NULL;
}

/* ---- one scrape ---- */

static int
start_scrape(struct md_scrape *s, struct target *t, uint64_t now)
{
    if (t->easy == NULL) {
        t->easy = curl_easy_init();
        if (t->easy == NULL)
            return MD_ENOMEM;
    }
    if (t->grp == NULL && !t->grp_none) {
        if (s->grouped < s->conn_max / 2) {
            t->grp = group_join(s);
            if (t->grp == NULL)
                return MD_ENOMEM;
        } else {
            t->grp_none = 1;
        }
        t->opts_set = 0;
    }
    if (t->body.data == NULL && s->nspare > 0) {
        struct md_buf *b = &s->spare[--s->nspare];

        t->body.data = b->data;     /* the target's cap stays the limit */
        t->body.alloc = b->alloc;
        md_buf_init(b, 0);
    }
    md_buf_reset(&t->body);
    t->body_over = 0;
    t->gzip = 0;
    t->encoding_bad = 0;
    if (t->headers == NULL || t->headers_gen != s->accept_gen) {
        struct curl_slist *h = curl_slist_append(NULL, s->accept);

        if (h != NULL && curl_slist_append(h, s->accept_enc) == NULL) {
            curl_slist_free_all(h);
            h = NULL;
        }
        if (h == NULL)
            return MD_ENOMEM;
        /* not in flight: nobody reads it, and the options below point the
         * handle at the new list before the next transfer */
        curl_slist_free_all(t->headers);
        t->headers = h;
        t->headers_gen = s->accept_gen;
        t->opts_set = 0;
    }
    /* libcurl keeps a handle's options between its transfers: they are set
     * again only when the target's settings changed (a reload), not per
     * scrape (a reset and 15 setopt calls, the URL copied and parsed again
     * each time, were ~3 % of meterd's CPU at 200 targets: issue 4) */
    if (!t->opts_set || t->opts_timeout_ms != t->timeout_ms || t->opts_cap != t->body.cap) {
        char ua[64];

        curl_easy_reset(t->easy);
        (void)snprintf(ua, sizeof(ua), "meterd/%s", MD_VERSION);
        curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
        curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
        curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
        curl_easy_setopt(t->easy, CURLOPT_USERAGENT, ua);   /* libcurl copies it */
        /* gzip is asked for and inflated by meterd (header_cb, md_gunzip) */
        curl_easy_setopt(t->easy, CURLOPT_ACCEPT_ENCODING, NULL);
        curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
        curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
        curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)t->timeout_ms);
        curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(t->easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)t->body.cap);
        /* a scrape goes to the pod itself: a proxy from the environment
         * (http_proxy, all_proxy, common in corporate clusters) is not used,
         * as Prometheus does by default (proxy_from_environment: false);
         * it also spares libcurl's environment lookups per transfer (an
         * unset CURLOPT_NOPROXY makes it read no_proxy and NO_PROXY from
         * the environment for every transfer, ~0.5 % of meterd's CPU at
         * 200 targets; with no proxy an empty list changes nothing) */
        curl_easy_setopt(t->easy, CURLOPT_PROXY, "");
        curl_easy_setopt(t->easy, CURLOPT_NOPROXY, "");
        curl_easy_setopt(t->easy, CURLOPT_SHARE, t->grp != NULL ? t->grp->sh : NULL);
        t->opts_set = 1;
        t->opts_timeout_ms = t->timeout_ms;
        t->opts_cap = t->body.cap;
    }
    if (curl_multi_add_handle(s->multi, t->easy) != CURLM_OK)
        return MD_EIO;
    t->in_flight = 1;
    t->started_ns = now;
    t->started_wall_ns = md_now_realtime_ns();
    return MD_OK;
}

struct parse_ctx {
    const struct md_attrib        *attrib;
    struct md_attrib_scratch      *scratch;
    struct md_attrib_target        at;
    struct md_batch               *batch;
    struct md_err                  err;
    uint64_t                       samples;
};

static int
on_sample(void *arg, const struct md_sample *smp)
{
    struct parse_ctx *pc = arg;

    pc->samples++;
    return md_attrib_sample(pc->attrib, &pc->at, smp, pc->batch, pc->scratch, &pc->err);
}

/* Samples whose name alone decides their drop reason (buckets, latency
 * histograms, target_info...: 93% of an EAIG body) are not decoded: the
 * parser counts them under class reason + 1 (md_expfmt_opts.skip_fn). */
_Static_assert(MD_DROP_REASON_COUNT < MD_EXPFMT_SKIP_CLASSES, "skip classes: reason + 1");

static int
skip_sample(void *arg, struct md_str name)
{
    int drop;

    (void)arg;
    drop = md_attrib_name_drop(name);
    return drop < 0 ? 0 : drop + 1;
}

static void
record(struct md_scrape *s, struct target *t, int ok, enum fail_reason why, const char *msg,
    uint64_t samples, uint64_t billed, const struct md_batch *b, uint64_t now)
{
    pthread_mutex_lock(&s->status_mu);
    t->st.scrapes++;
    t->st.duration_s = (double)(now - t->started_ns) / 1e9;
    t->st.last_ns = md_now_realtime_ns();
    if (ok) {
        t->st.up = 1;
        t->st.samples = samples;
        t->st.billed = billed;
        t->st.last_error[0] = '\0';
        t->st.overflow_series = b->overflow_series;
        for (int r = 0; r < MD_DROP_REASON_COUNT; r++)
            s->dropped[r] += b->dropped[r];
    } else {
        t->st.up = 0;
        t->st.failures[why]++;
        (void)snprintf(t->st.last_error, sizeof(t->st.last_error), "%s", msg);
    }
    pthread_mutex_unlock(&s->status_mu);
    if (ok) {
        t->fails = 0;
        md_release(&t->complaint, MD_MODULE, "target \"%s\": scraping again", t->url);
    } else {
        t->fails++;
        md_complain(&t->complaint, MD_LOG_WARN, MD_MODULE, "target \"%s\": %s: %s", t->url,
            fail_names[why], msg);
    }
}

static void
finish_scrape_body(struct md_scrape *s, struct target *t, CURLcode cc, uint64_t now);

/* the body is parsed (or failed) by now: its memory goes to the spare pool
 * or is freed */
static void
finish_scrape(struct md_scrape *s, struct target *t, CURLcode cc, uint64_t now)
{
    finish_scrape_body(s, t, cc, now);
    if (t->body.data != NULL && s->nspare < SPARE_BODIES) {
        s->spare[s->nspare] = t->body;
        s->nspare++;
        md_buf_init(&t->body, t->body.cap);
    } else {
        md_buf_fini(&t->body);
    }
}

static void
finish_scrape_body(struct md_scrape *s, struct target *t, CURLcode cc, uint64_t now)
{
    struct md_expfmt_limits lim;
    struct md_expfmt_error perr = {0};
    struct parse_ctx pc;
    long status = 0;
    char *ct = NULL;
    char msg[300];
    int rc;

    t->in_flight = 0;
    curl_multi_remove_handle(s->multi, t->easy);
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        enum fail_reason why = FAIL_TRANSFER;

        if (t->body_over || cc == CURLE_FILESIZE_EXCEEDED) {
            why = FAIL_BODY_TOO_LARGE;
            (void)snprintf(msg, sizeof(msg), "body exceeds %zu bytes (scrape.body_size_limit)",
                t->body.cap);
        } else {
            if (cc == CURLE_OPERATION_TIMEDOUT)
                why = FAIL_TIMEOUT;
            else if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
                why = FAIL_CONNECT;
            (void)snprintf(msg, sizeof(msg), "%s", curl_easy_strerror(cc));
        }
        record(s, t, 0, why, msg, 0, 0, NULL, now);
        return;
    }
    if (status != 200) {
        (void)snprintf(msg, sizeof(msg), "HTTP status %ld", status);
        record(s, t, 0, FAIL_HTTP_STATUS, msg, 0, 0, NULL, now);
        return;
    }
    if (t->encoding_bad) {
        record(s, t, 0, FAIL_TRANSFER, "a Content-Encoding other than gzip", 0, 0, NULL, now);
        return;
    }
    if (t->gzip) {
        s->plain.cap = t->body.cap;
        rc = md_gunzip(s->inflater, t->body.data, t->body.len, &s->plain, msg, sizeof(msg));
        if (rc != MD_OK) {
            record(s, t, 0, rc == MD_ELIMIT ? FAIL_BODY_TOO_LARGE : FAIL_TRANSFER, msg, 0, 0,
                NULL, now);
            return;
        }
    }
    curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct);
    memset(&pc, 0, sizeof(pc));
    pc.attrib = s->attrib;
    pc.scratch = s->scratch;
    pc.at.namespace = t->namespace;
    pc.batch = md_batch_new(t->key, t->initial, t->started_wall_ns);
    if (pc.batch != NULL &&
            md_batch_reserve(pc.batch, t->last_entries, t->last_arena + t->last_arena / 16) != MD_OK) {
        md_batch_free(pc.batch);
        pc.batch = NULL;
    }
    if (pc.batch == NULL) {
        record(s, t, 0, FAIL_INTERNAL, "out of memory", 0, 0, NULL, now);
        return;
    }
    md_expfmt_limits_default(&lim);
    lim.samples_max = s->cfg->scrape.sample_limit;
    {
        struct md_expfmt_opts opts = {0};
        enum md_expfmt_format fmt;
        uint64_t skipped[MD_EXPFMT_SKIP_CLASSES];

        /* the escaping= the exporter declares decodes dots/values names */
        md_expfmt_content_type(ct, ct ? strlen(ct) : 0, &fmt, &opts.escaping);
        const struct md_buf *b = t->gzip ? &s->plain : &t->body;

        opts.skip_fn = skip_sample;
        opts.skipped = skipped;
        rc = md_expfmt_parser_run(s->parser, b->data ? b->data : "", b->len,
            fmt, &lim, &opts, on_sample, &pc, &perr);
        if (rc == MD_OK) {
            for (int r = 0; r < MD_DROP_REASON_COUNT; r++) {
                pc.batch->dropped[r] += skipped[r + 1];
                pc.samples += skipped[r + 1];
            }
        }
    }
    if (rc == MD_OK)
        rc = md_attrib_finish(pc.batch, &pc.err);
    if (rc != MD_OK) {
        enum fail_reason why = FAIL_PARSE;

        if (pc.err.rc != MD_OK)
            (void)snprintf(msg, sizeof(msg), "%s", pc.err.msg);
        else
            (void)snprintf(msg, sizeof(msg), "line %u column %u: %s", perr.line, perr.col,
                perr.msg);
        if (rc == MD_ELIMIT && strstr(msg, "sample") != NULL)
            why = FAIL_SAMPLE_LIMIT;
        md_batch_free(pc.batch);
        record(s, t, 0, why, msg, 0, 0, NULL, now);
        return;
    }
    {
        uint64_t billed = pc.batch->count;
        struct md_batch snapshot = *pc.batch;     /* counters only, for record() */

        t->last_entries = pc.batch->count;
        t->last_arena = pc.batch->arena.len;

        rc = md_store_submit_batch(s->store, pc.batch);   /* takes ownership */
        if (rc != MD_OK) {
            /* counters are cumulative: the next scrape carries these tokens */
            record(s, t, 0, FAIL_QUEUE_FULL, "writer queue full; the next scrape covers it",
                0, 0, NULL, now);
            return;
        }
        record(s, t, 1, FAIL_COUNT, "", pc.samples, billed, &snapshot, now);
    }
}

/* ---- the thread ---- */

static void *
scrape_main(void *arg)
{
    struct md_scrape *s = arg;

    while (!atomic_load(&s->stop)) {
        uint64_t now = md_now_monotonic_ns(), next = now + 1000000000ULL;
        struct CURLMsg *m;
        int running = 0, left = 0;
        unsigned early = 0;     /* scrapes started before their due time */

        if (atomic_exchange(&s->reload, 0) | atomic_exchange(&s->disc_new, 0))
            (void)sync_config(s);
        for (size_t i = 0; i < s->ntargets; i++) {
            struct target *t = s->targets[i];

            /* scrapes due within the slack start with this wake-up
             * (schedule.h) */
            if (!t->in_flight && md_sched_start(t->next_due_ns, now, t->interval_ns, &early)) {
                /* failing targets back off: 1, 2, 4, 8 intervals */
                unsigned shift = t->fails > 3 ? 3 : t->fails;

                t->next_due_ns = md_sched_next(t->next_due_ns, now, t->interval_ns << shift);
                if (start_scrape(s, t, now) != MD_OK)
                    record(s, t, 0, FAIL_INTERNAL, "cannot start transfer", 0, 0, NULL, now);
            }
            if (!t->in_flight && t->next_due_ns < next)
                next = t->next_due_ns;
        }
        curl_multi_perform(s->multi, &running);
        while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
            struct target *t = NULL;

            if (m->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            if (t == NULL)
                continue;
            finish_scrape(s, t, m->data.result, md_now_monotonic_ns());
            /* a scrape that finished just now has its next due time: without
             * this the poll below slept until other socket activity or 1 s,
             * and a target next to a slow one skipped a beat (only the
             * finished ones: a scan of every target here ran on each of
             * the ~3 wake-ups per scrape) */
            if (!t->in_flight && t->next_due_ns < next)
                next = t->next_due_ns;
        }
        now = md_now_monotonic_ns();
        if (next > now) {
            uint64_t wait_ms = (next - now) / 1000000ULL + 1;

            curl_multi_poll(s->multi, NULL, 0, (int)(wait_ms > 1000 ? 1000 : wait_ms), NULL);
        }
    }
    for (size_t i = 0; i < s->ntargets; i++)
        if (s->targets[i]->in_flight)
            curl_multi_remove_handle(s->multi, s->targets[i]->easy);
    return NULL;
}

int
md_scrape_start(struct md_app *app, int store_fresh, struct md_scrape **out, struct md_err *err)
{
    struct md_scrape *s = md_calloc(1, sizeof(*s));
    int e;

    if (s == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    s->app = app;
    s->store = app->store;
    s->store_fresh = store_fresh;
    s->initial_open = 1;
    pthread_mutex_init(&s->status_mu, NULL);
    pthread_mutex_init(&s->disc_mu, NULL);
    pthread_cond_init(&s->disc_cv, NULL);
    md_discovery_result_init(&s->disc);
    s->multi = curl_multi_init();
    if (s->multi == NULL) {
        md_free(s);
        return md_err_set(err, MD_ENOMEM, "curl_multi_init failed");
    }
    s->scratch = md_attrib_scratch_new();
    s->parser = md_expfmt_parser_new();
    md_buf_init(&s->plain, 1u << 20);
    s->inflater = md_gunzip_new();
    if (s->scratch == NULL || s->parser == NULL || s->inflater == NULL) {
        md_scrape_stop(s);
        return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    s->conn_max = conn_limit();
    /* the half that is not in groups (struct conn_group) */
    curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, s->conn_max - s->conn_max / 2);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 4L);
    if (sync_config(s) != MD_OK) {
        md_scrape_stop(s);
        return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    e = pthread_create(&s->thread, NULL, scrape_main, s);
    if (e != 0) {
        md_scrape_stop(s);
        return md_err_set(err, MD_ENOMEM, "cannot start scrape thread: %s", strerror(e));
    }
    s->thread_started = 1;
    /* the discovery thread always runs: a reload may enable kubernetes */
    e = pthread_create(&s->disc_thread, NULL, discovery_main, s);
    if (e != 0) {
        md_scrape_stop(s);
        return md_err_set(err, MD_ENOMEM, "cannot start discovery thread: %s", strerror(e));
    }
    s->disc_started = 1;
    *out = s;
    return MD_OK;
}

void
md_scrape_stop(struct md_scrape *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stop, 1);
    if (s->disc_started) {
        pthread_mutex_lock(&s->disc_mu);
        pthread_cond_broadcast(&s->disc_cv);
        pthread_mutex_unlock(&s->disc_mu);
        pthread_join(s->disc_thread, NULL);
    }
    if (s->thread_started) {
        curl_multi_wakeup(s->multi);
        pthread_join(s->thread, NULL);
    }
    for (size_t i = 0; i < s->ntargets; i++)
        target_free(s, s->targets[i]);
    md_free(s->targets);
    curl_multi_cleanup(s->multi);
    md_attrib_free(s->attrib);
    md_attrib_scratch_free(s->scratch);
    md_expfmt_parser_free(s->parser);
    md_buf_fini(&s->plain);
    md_gunzip_free(s->inflater);
    for (size_t i = 0; i < s->nspare; i++)
        md_buf_fini(&s->spare[i]);
    md_config_unref(s->cfg);
    md_discovery_result_fini(&s->disc);
    pthread_cond_destroy(&s->disc_cv);
    pthread_mutex_destroy(&s->disc_mu);
    pthread_mutex_destroy(&s->status_mu);
    md_free(s);
}

void
md_scrape_reload(struct md_scrape *s)
{
    atomic_store(&s->reload, 1);
    curl_multi_wakeup(s->multi);
    /* list pods again now: the selector or namespaces may have changed */
    pthread_mutex_lock(&s->disc_mu);
    pthread_cond_broadcast(&s->disc_cv);
    pthread_mutex_unlock(&s->disc_mu);
}

/* ---- status ---- */

struct snap {
    char          url[512];
    char          ns[64];
    double        interval_s;
    struct status st;
};

static struct snap *
snapshot(struct md_scrape *s, size_t *n, uint64_t dropped[MD_DROP_REASON_COUNT])
{
    struct snap *v;

    pthread_mutex_lock(&s->status_mu);
    *n = s->ntargets;
    v = md_calloc(*n ? *n : 1, sizeof(*v));
    if (v != NULL) {
        for (size_t i = 0; i < *n; i++) {
            const struct target *t = s->targets[i];

            (void)snprintf(v[i].url, sizeof(v[i].url), "%s", t->url);
            (void)snprintf(v[i].ns, sizeof(v[i].ns), "%s", t->namespace ? t->namespace : "");
            v[i].interval_s = (double)t->interval_ns / 1e9;
            v[i].st = t->st;
        }
        memcpy(dropped, s->dropped, sizeof(s->dropped));
    }
    pthread_mutex_unlock(&s->status_mu);
    return v;
}

int
md_scrape_render_metrics(struct md_scrape *s, struct md_buf *b)
{
    uint64_t dropped[MD_DROP_REASON_COUNT] = {0}, overflow = 0;
    struct md_store_stats ss;
    size_t n = 0;
    struct snap *v = snapshot(s, &n, dropped);
    int rc;

    if (v == NULL)
        return MD_ENOMEM;
    /* the ledger's reasons are judged on the writer thread */
    md_store_get_stats(s->store, &ss);
    dropped[MD_DROP_INVALID_VALUE] += ss.ledger_invalid_values;
    dropped[MD_DROP_STALE_TIMESTAMP] += ss.ledger_stale_timestamps;
    dropped[MD_DROP_TOO_LARGE] += ss.ledger_too_large;
    rc = md_prom_family(b, "meterd_target_up", "gauge",
        "1 when the last scrape of the target succeeded, 0 when it failed.");
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        struct md_prom_label l[] = { { "target", v[i].url, 0 }, { "namespace", v[i].ns, 0 } };

        if (v[i].st.up >= 0)
            rc = md_prom_sample_u64(b, "meterd_target_up", l, 2, (uint64_t)v[i].st.up);
    }
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_scrape_duration_seconds", "gauge",
            "Duration of the target's last scrape.");
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        struct md_prom_label l[] = { { "target", v[i].url, 0 } };

        if (v[i].st.up >= 0)
            rc = md_prom_sample_f64(b, "meterd_scrape_duration_seconds", l, 1, v[i].st.duration_s);
    }
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_scrape_samples", "gauge",
            "Samples in the target's last successful scrape.");
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        struct md_prom_label l[] = { { "target", v[i].url, 0 } };

        if (v[i].st.up >= 0)
            rc = md_prom_sample_u64(b, "meterd_scrape_samples", l, 1, v[i].st.samples);
    }
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_scrape_failures_total", "counter",
            "Failed scrapes by target and reason; nothing of a failed scrape is applied.");
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        for (int r = 0; r < FAIL_COUNT && rc == MD_OK; r++) {
            struct md_prom_label l[] = {
                { "target", v[i].url, 0 }, { "reason", fail_names[r], 0 },
            };

            if (v[i].st.failures[r] > 0)
                rc = md_prom_sample_u64(b, "meterd_scrape_failures_total", l, 2,
                    v[i].st.failures[r]);
        }
        overflow += v[i].st.overflow_series;
    }
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_samples_dropped_total", "counter",
            "Scraped samples not billed, by reason (nothing is dropped silently).");
    for (int r = 0; r < MD_DROP_REASON_COUNT && rc == MD_OK; r++) {
        struct md_prom_label l[] = { { "reason", md_drop_names[r], 0 } };

        rc = md_prom_sample_u64(b, "meterd_samples_dropped_total", l, 1, dropped[r]);
    }
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_overflow_series", "gauge",
            "Token series labelled otel_metric_overflow=\"true\" in the last scrapes "
            "(booked to the unattributed tenant).");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_overflow_series", NULL, 0, overflow);
    md_free(v);
    return rc;
}

char *
md_scrape_targets_json(struct md_scrape *s, size_t *len)
{
    uint64_t dropped[MD_DROP_REASON_COUNT] = {0};
    size_t n = 0;
    struct snap *v = snapshot(s, &n, dropped);
    json_t *root, *arr;
    char *out;

    if (v == NULL)
        return NULL;
    root = json_object();
    arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object(), *f = json_object();
        char ts[40] = "";

        if (v[i].st.last_ns)
            md_fmt_rfc3339_ms(v[i].st.last_ns, ts, sizeof(ts));
        json_object_set_new(o, "url", json_string(v[i].url));
        json_object_set_new(o, "namespace", json_string(v[i].ns));
        json_object_set_new(o, "health", json_string(v[i].st.up < 0 ? "unknown"
                                                     : v[i].st.up ? "up" : "down"));
        json_object_set_new(o, "interval_seconds", json_real(v[i].interval_s));
        json_object_set_new(o, "last_scrape", v[i].st.last_ns ? json_string(ts) : json_null());
        json_object_set_new(o, "last_duration_seconds", json_real(v[i].st.duration_s));
        json_object_set_new(o, "last_error", json_string(v[i].st.last_error));
        json_object_set_new(o, "samples", json_integer((json_int_t)v[i].st.samples));
        json_object_set_new(o, "billed_series", json_integer((json_int_t)v[i].st.billed));
        json_object_set_new(o, "scrapes", json_integer((json_int_t)v[i].st.scrapes));
        for (int r = 0; r < FAIL_COUNT; r++)
            if (v[i].st.failures[r])
                json_object_set_new(f, fail_names[r],
                    json_integer((json_int_t)v[i].st.failures[r]));
        json_object_set_new(o, "failures", f);
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "targets", arr);
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    md_free(v);
    if (out != NULL && len != NULL)
        *len = strlen(out);
    return out;
}
