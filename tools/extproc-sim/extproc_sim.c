/* extproc_sim.c: the ExtProc simulator.  Serves many fake Envoy AI Gateway
 * (EAIG) ExtProc sidecars on 127.0.0.1, each with its own /metrics shaped
 * exactly like EAIG's (see ../shared/extproc/FACTS.md), plus a control port
 * with the exact ground truth of every token counted (GET /truth).
 *
 * Threads and ownership:
 * - main: parses flags, starts everything, waits in sigwait(), stops.
 * - one MHD daemon (internal polling thread) per target port and one for the
 *   control port.  A handler reads a target under that target's mutex.
 * - the clock thread: every --tick-ms it adds deterministic requests to every
 *   target (under tick_mu, then each target's mutex), and every few
 *   milliseconds resumes the scrapes it is holding back (timeouts).
 * Lock order: tick_mu before target->mu; susp_mu is never held with either.
 *
 * Invariants:
 * - every histogram is valid: buckets are counted per bound (upper-inclusive)
 *   and printed cumulatively, so +Inf == _count; _sum is an exact integer for
 *   token histograms (tokens < 2^53 print exactly).
 * - truth (truth_tok/truth_req) only ever grows; a reset clears the exposed
 *   histograms, never truth.
 * - a reset (a simulated sidecar restart) happens only after --reset-scrapes
 *   scrapes of the frozen counters, by a client whose User-Agent starts with
 *   --reset-ua-prefix, that the client provably received in full.  From the
 *   moment such a scrape is rendered the target is frozen (the clock skips
 *   it), so the counters at reset equal what was received: nothing counted is
 *   ever unseen, and the truth is exactly what a scraper that applied every
 *   scrape it received can bill.
 * - "received in full" is the next request on the same keep-alive connection
 *   (an HTTP/1.1 client sends it only after reading the previous response to
 *   its end), not MHD's "completed": MHD reports that when the last byte is in
 *   the socket buffer, also for a client that has timed out, dropped the
 *   target or closed already (RELIABILITY 18: resets on such scrapes took
 *   counts no scraper saw, an hour's soak came out 0.6-1.7 % short).  A
 *   connection that closes with such a delivery pending counts it as
 *   `unconfirmed` and does not advance the reset.
 * - a restart must be seen before it is forgotten: after a reset the clock
 *   runs until the restart is visible (series recorded again, most of them
 *   below their values before the reset: restart_visible), then holds the
 *   target there until a --reset-ua-prefix scrape of that state was received
 *   in full (same rule).  A restarted EAIG sidecar shows no series until it records again,
 *   and a restart nobody scraped until its series regrew past their old
 *   values cannot be told by value from absence or a glitch (DESIGN.md
 *   "Exactness of usage": absence is not a reset, and the guard); in a soak
 *   whose pods stay unlisted longer than --reset-every right after a reset,
 *   the truth would otherwise hold tokens no scraper can bill.
 * - faults (timeouts, 500s) never arm a reset.
 * - only 127.0.0.1 is ever bound. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <zlib.h>

#include "../../exporters/prom_text.h"
#include "../../meterd/buf.h"
#include "../../meterd/util.h"

#define SIM_TARGETS_MAX     4096
#define SIM_COMBOS_MAX      4096         /* per target, --max-combos ceiling */
#define SIM_BODY_MAX        (64u << 20)  /* one /metrics body */
#define SIM_DEPT_MAX        48           /* bytes of a department value */
#define SIM_LABELS_MAX      12
#define SIM_SUSPENDED_MAX   8192         /* scrapes held back at once */
#define SIM_WAKE_MS         20           /* resume check granularity */
#define SIM_STACK_BYTES     (256u << 10) /* per MHD thread */

/* ---------- options ---------- */

enum naming { NAMING_V04, NAMING_V05 };

static struct {
    unsigned    targets;
    unsigned    base_port;
    unsigned    control_port;
    int         naming;
    int         names_utf8;
    const char *dept_label;
    uint64_t    seed;
    uint64_t    tick_ms;
    uint64_t    requests_per_tick;
    uint64_t    max_ticks;
    uint64_t    reset_every_ms;
    const char *reset_ua_prefix;
    uint64_t    reset_scrapes;
    uint64_t    new_series_every_ms;
    uint64_t    max_combos;
    uint64_t    timeout_every;
    uint64_t    timeout_ms;
    uint64_t    error_every;
    int         count_tokens;
    int         overflow;
    int         quiet;
    int         log_scrapes;
} opt = {
    .targets = 1, .base_port = 10640, .control_port = 10650, .naming = NAMING_V04,
    .dept_label = "department", .seed = 1, .tick_ms = 200, .requests_per_tick = 2,
    .reset_ua_prefix = "meterd/", .reset_scrapes = 1, .max_combos = 256,
    .timeout_ms = 10000,
};

/* ---------- model ---------- */

enum tt { TT_INPUT, TT_CACHED, TT_CACHE_CREATION, TT_OUTPUT, TT_REASONING, TT_COUNT };
static const char *const tt_names[TT_COUNT] = {
    "input", "cached_input", "cache_creation_input", "output", "reasoning"
};
#define M_I  (1u << TT_INPUT)
#define M_C  (1u << TT_CACHED)
#define M_CC (1u << TT_CACHE_CREATION)
#define M_O  (1u << TT_OUTPUT)
#define M_R  (1u << TT_REASONING)

enum kind { K_OPENAI_CHAT, K_BEDROCK_CHAT, K_EMBED, K_MESSAGES, K_COUNT_TOKENS, K_OVERFLOW };

struct model_def {
    int         kind;
    const char *op;
    const char *prov_v04;
    const char *prov_v05;
    const char *orig;
    const char *req;
    const char *resp;
    unsigned    types_v04;
    unsigned    types_v05;
};

#define ANTH_BACKEND "default/anthropic/route/claude-messages/rule/0/ref/0"
static const struct model_def models[] = {
    { K_OPENAI_CHAT, "chat", "openai", "openai", "gpt-4o-mini", "gpt-4o-mini",
      "gpt-4o-mini-2024-07-18", M_I | M_C | M_O, M_I | M_C | M_CC | M_O | M_R },
    { K_BEDROCK_CHAT, "chat", "aws.bedrock", "aws.bedrock", "claude-sonnet",
      "anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0",
      M_I | M_C | M_O, M_I | M_O },
    { K_EMBED, "embeddings", "openai", "openai", "text-embedding-3-small",
      "text-embedding-3-small", "text-embedding-3-small", M_I, M_I },
    { K_MESSAGES, "messages", ANTH_BACKEND, "anthropic", "claude-3-5-haiku-20241022",
      "claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", M_I | M_C | M_O,
      M_I | M_C | M_CC | M_O },
    { K_COUNT_TOKENS, "count_tokens", ANTH_BACKEND, "anthropic", "claude-3-5-haiku-20241022",
      "claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", M_I, M_I },
    { K_OPENAI_CHAT, "chat", "openai", "openai", "gpt-4.1-mini", "gpt-4.1-mini",
      "gpt-4.1-mini-2025-04-14", M_I | M_C | M_O, M_I | M_C | M_CC | M_O | M_R },
    { K_OVERFLOW, "", "", "", "", "", "", M_I, M_I },
};
enum { MD_GPT4O, MD_BEDROCK, MD_EMBED, MD_MESSAGES, MD_COUNT_TOKENS, MD_GPT41, MD_OVERFLOW };

/* EAIG's explicit bounds (internal/metrics/genai.go). */
#define TOK_NB 14
static const double tok_bounds[TOK_NB] = {
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
    16777216, 67108864
};
#define DUR_NB 14
static const double dur_bounds[DUR_NB] = {
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
};
static char tok_le[TOK_NB][32];
static char dur_le[DUR_NB][32];

struct hist {
    uint64_t b[TOK_NB + 1];   /* per bound, not cumulative; last = above every bound */
    uint64_t count;
    uint64_t sum_u;           /* token histograms: exact */
    double   sum_d;           /* duration histograms: seconds */
};

struct combo {
    const struct model_def *m;
    uint64_t    old_sum[TT_COUNT];  /* token series before the last reset */
    uint64_t    old_cnt[TT_COUNT];
    int         has_dept;
    char        dept[SIM_DEPT_MAX];
    struct hist tok[TT_COUNT];
    uint64_t    truth_tok[TT_COUNT];
    uint64_t    truth_req[TT_COUNT];
    struct hist dur;
    struct hist dur_err;
};

struct target {
    pthread_mutex_t     mu;
    unsigned            idx;
    unsigned            port;
    struct MHD_Daemon  *d;
    struct combo       *combos;
    size_t              ncombos;
    size_t              cap;
    uint64_t            rng;
    uint64_t            next_reset_ms;
    uint64_t            next_new_ms;
    unsigned            new_k;
    int                 frozen;
    int                 held;               /* reset, restart not yet seen by a scraper */
    uint64_t            frozen_delivered;   /* confirmed scrapes of the frozen counters */
    uint64_t            scrapes, meterd_scrapes, delivered, timeouts, errors, resets;
    uint64_t            confirmed, unconfirmed;   /* armed deliveries, see conn_state */
    uint64_t            unseeable;          /* restarts regrown past before a scrape saw them */
};

static struct target   *targets;
static pthread_mutex_t  tick_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int       paused;
static atomic_int       stopping;
static atomic_ullong    ticks;
static uint64_t         start_ms;

/* Scrapes held back (timeouts), resumed by the clock thread. */
enum req_state { RS_NEW, RS_SUSPENDED, RS_RESUMED };
struct req {
    struct target          *t;
    struct MHD_Connection  *conn;
    int                     state;
    int                     armed;          /* a scrape of the frozen counters */
    int                     post_reset;     /* it showed a held target's restart */
    uint64_t                epoch;          /* t->resets when the body was rendered */
    int                     meterd;         /* --reset-ua-prefix client */
    uint64_t                sn;             /* the target's scrape number */
    uint64_t                render_ms;      /* when the body was rendered */
    uint64_t                exposed;        /* tokens the body exposed */
    uint64_t                resume_at_ms;
    struct req             *next;
};
/* One per target connection (MHD socket context): an armed scrape written
 * out in full waits here until the client sends its next request on this
 * connection (then it was read in full: confirm_pending) or the connection
 * closes (then nobody knows: `unconfirmed`).  Touched only by the target's
 * MHD thread; the target's counters under t->mu. */
struct conn_state {
    struct target  *t;
    int             pending;          /* 0, or PEND_FROZEN | PEND_RESTARTED */
    uint64_t        pending_epoch;    /* t->resets when that body was rendered */
    uint64_t        pending_sn;
};
#define PEND_FROZEN     1u
#define PEND_RESTARTED  2u
static pthread_mutex_t susp_mu = PTHREAD_MUTEX_INITIALIZER;
static struct req     *susp_head;
static size_t          susp_count;

static pthread_mutex_t clock_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  clock_cv;

static uint64_t
now_ms(void)
{
    return md_now_monotonic_ns() / 1000000u;
}

/* splitmix64: small, deterministic, good enough for traffic shapes. */
static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---------- number formatting: Go strconv.FormatFloat(v, 'g', -1, 64) ---------- */

static void
go_fmt(double v, char *out, size_t out_len)
{
    char tmp[48], dig[24];
    int nd = 0, e = 0, eneg = 0;
    size_t o = 0;
    const char *s;

    if (isnan(v)) {
        (void)snprintf(out, out_len, "NaN");
        return;
    }
    if (isinf(v)) {
        (void)snprintf(out, out_len, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        (void)snprintf(out, out_len, "0");
        return;
    }
    if (v < 0) {
        out[o++] = '-';
        v = -v;
    }
    if (v == floor(v) && v < 1e15) {
        /* integers (counts, token sums, bounds): exact digits without strtod */
        int len = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);

        for (nd = 0; nd < len && nd < (int)sizeof(dig); nd++)
            dig[nd] = tmp[nd];
        e = len - 1;
    } else {
        /* shortest digits that parse back to v */
        for (int p = 1; p <= 17; p++) {
            (void)snprintf(tmp, sizeof(tmp), "%.*e", p - 1, v);
            if (strtod(tmp, NULL) == v)
                break;
        }
        for (s = tmp; *s != '\0' && *s != 'e'; s++)
            if (*s >= '0' && *s <= '9' && nd < (int)sizeof(dig))
                dig[nd++] = *s;
        if (*s == 'e') {
            s++;
            if (*s == '-' || *s == '+')
                eneg = *s++ == '-';
            for (; *s >= '0' && *s <= '9'; s++)
                e = e * 10 + (*s - '0');
        }
        if (eneg)
            e = -e;
    }
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    /* Go: shortest 'g' uses %e when exp < -4 || exp >= 6 (eprec = 6) */
    if (e < -4 || e >= 6) {
        out[o++] = dig[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++)
                out[o++] = dig[i];
        }
        (void)snprintf(out + o, out_len - o, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
        return;
    }
    if (e >= 0) {
        for (int i = 0; i <= e; i++)
            out[o++] = i < nd ? dig[i] : '0';
        if (nd > e + 1) {
            out[o++] = '.';
            for (int i = e + 1; i < nd; i++)
                out[o++] = dig[i];
        }
    } else {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = 0; i < -e - 1; i++)
            out[o++] = '0';
        for (int i = 0; i < nd; i++)
            out[o++] = dig[i];
    }
    out[o] = '\0';
}

/* ---------- traffic ---------- */

static void
hist_add(struct hist *h, const double *bounds, size_t nb, double v)
{
    size_t i = 0;

    while (i < nb && v > bounds[i])   /* upper-inclusive: v <= le */
        i++;
    h->b[i]++;
    h->count++;
}

static void
tok_add(struct combo *c, int tt, uint64_t n)
{
    hist_add(&c->tok[tt], tok_bounds, TOK_NB, (double)n);
    c->tok[tt].sum_u += n;
    c->truth_tok[tt] += n;
    c->truth_req[tt] += 1;
}

static unsigned
types_of(const struct model_def *m)
{
    return opt.naming == NAMING_V04 ? m->types_v04 : m->types_v05;
}

/* One request on combo c: one token sample per recorded type (EAIG records
 * one sample per type per successful request) and one duration sample. */
static void
record_request(struct combo *c, uint64_t *rng)
{
    uint64_t r = rng_next(rng), r2 = rng_next(rng);
    uint64_t amt[TT_COUNT] = { 0 };
    unsigned mask = types_of(c->m);
    double secs = (double)(50000000u + r2 % 30000000000u) / 1e9;

    switch (c->m->kind) {
    case K_OPENAI_CHAT:
        if (r % 50 == 7) {  /* upstream failure: a duration sample only */
            hist_add(&c->dur_err, dur_bounds, DUR_NB, secs);
            c->dur_err.sum_d += secs;
            return;
        }
        amt[TT_INPUT] = 20 + r % 3000;
        amt[TT_CACHED] = (amt[TT_INPUT] >= 1024 && (r >> 12) % 3 == 0) ? 1024 : 0;
        amt[TT_OUTPUT] = 5 + (r >> 20) % 1200;
        amt[TT_REASONING] = (r >> 32) % 5 == 0 ? (r >> 36) % (amt[TT_OUTPUT] + 1) : 0;
        break;
    case K_BEDROCK_CHAT:
        amt[TT_INPUT] = 500 + r % 40000;
        amt[TT_OUTPUT] = 20 + (r >> 20) % 3000;
        break;
    case K_EMBED:
        amt[TT_INPUT] = r % 10 == 0 ? 20000 + (r >> 8) % 60000 : 5 + (r >> 8) % 4000;
        break;
    case K_MESSAGES: {
        uint64_t rd = (r >> 40) % 3 == 0 ? 12000 : 0, wr = (r >> 44) % 5 == 0 ? 12000 : 0;
        uint64_t base = 100 + r % 4000;

        /* v0.4: input excludes cache reads, writes are invisible;
         * v0.5+: input includes both (ExtractTokenUsageFromExplicitCaching) */
        amt[TT_INPUT] = opt.naming == NAMING_V04 ? base : base + rd + wr;
        amt[TT_CACHED] = rd;
        amt[TT_CACHE_CREATION] = wr;
        amt[TT_OUTPUT] = 30 + (r >> 20) % 1500;
        break;
    }
    case K_COUNT_TOKENS:
        amt[TT_INPUT] = 50 + r % 8000;
        break;
    case K_OVERFLOW:
    default:
        amt[TT_INPUT] = 1 + r % 5000;
        break;
    }
    for (int t = 0; t < TT_COUNT; t++)
        if (mask & (1u << t))
            tok_add(c, t, amt[t]);
    if (c->m->kind != K_OVERFLOW) {
        hist_add(&c->dur, dur_bounds, DUR_NB, secs);
        c->dur.sum_d += secs;
    }
}

static int
combo_add(struct target *t, int model, const char *dept)
{
    struct combo *c;

    if (t->ncombos >= opt.max_combos)
        return MD_ELIMIT;
    if (t->ncombos == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        struct combo *n = md_realloc(t->combos, ncap * sizeof(*n));

        if (n == NULL)
            return MD_ENOMEM;
        t->combos = n;
        t->cap = ncap;
    }
    c = &t->combos[t->ncombos++];
    memset(c, 0, sizeof(*c));
    c->m = &models[model];
    if (dept != NULL) {
        c->has_dept = 1;
        (void)snprintf(c->dept, sizeof(c->dept), "%s", dept);
    }
    return MD_OK;
}

/* New (model, department) combinations: the first a new model for eng, then
 * new departments team-K across the models. */
static void
add_new_series(struct target *t)
{
    static const int pool[] = { MD_GPT4O, MD_BEDROCK, MD_EMBED, MD_MESSAGES, MD_GPT41 };
    char dept[SIM_DEPT_MAX];
    unsigned k = t->new_k;

    if (k == 0) {
        if (combo_add(t, MD_GPT41, "eng") != MD_OK)
            return;
    } else {
        (void)snprintf(dept, sizeof(dept), "team-%u", k);
        if (combo_add(t, pool[k % 5], dept) != MD_OK)
            return;
    }
    t->new_k++;
    /* record at once so the new series shows up in the next scrape */
    record_request(&t->combos[t->ncombos - 1], &t->rng);
}

/* Whether a scrape now shows the restart to meterd's guard (DESIGN.md: a
 * restart when at least half of the billed series in both scrapes went
 * down): the billed series recorded since the reset that existed before it
 * (token _sum with a non-zero old value, input _count) vote, and visible
 * means at least three times as many below their old values as not, a
 * margin for the guard's exact series set.  A series new since the reset
 * counts in full anyway.  Only billed series vote: a biller drops the
 * count_tokens operation before its ledger sees it, so a state in which
 * only such a series went down shows no restart to it (and a series born
 * after the reset, billed in full there, was billed twice once the restart
 * showed later: the run billed one request above its truth).  RV_NEVER:
 * every old series shows and the vote is still short, so no later state can
 * show it (a sidecar reset again within a few requests of its start).
 * Caller holds t->mu. */
/* Whether a biller bills the combination's series: every operation but
 * count_tokens (DESIGN.md "Metric names and token semantics"; the truth's
 * "excluded" rows).  The overflow series is billed, to unattributed. */
static int
combo_billed(const struct combo *c)
{
    return c->m->kind != K_COUNT_TOKENS;
}

enum { RV_NOT_YET, RV_VISIBLE, RV_NEVER };
static int
restart_visible(const struct target *t)
{
    uint64_t down = 0, up = 0;
    int all_back = 1;

    for (size_t i = 0; i < t->ncombos; i++) {
        const struct combo *c = &t->combos[i];

        if (!combo_billed(c))
            continue;
        for (int k = 0; k < TT_COUNT; k++) {
            if (c->old_cnt[k] == 0)
                continue;
            if (c->tok[k].count == 0) {
                all_back = 0;
                continue;
            }
            if (c->old_sum[k] > 0) {
                if (c->tok[k].sum_u < c->old_sum[k])
                    down++;
                else
                    up++;
            }
            if (k == TT_INPUT) {
                if (c->tok[k].count < c->old_cnt[k])
                    down++;
                else
                    up++;
            }
        }
    }
    if (down > 0 && down >= 3 * up)
        return RV_VISIBLE;
    return all_back && down + up > 0 ? RV_NEVER : RV_NOT_YET;
}

/* The held target's state after the clock recorded into it: visible (stop
 * the clock) or never (let go, and say so). */
static int
hold_check(struct target *t)
{
    int v = restart_visible(t);

    if (v == RV_NEVER) {
        t->held = 0;
        t->unseeable++;
        if (opt.log_scrapes)
            fprintf(stderr, "sim-unseeable wall_ms=%llu target=%u resets=%llu\n",
                (unsigned long long)(md_now_realtime_ns() / 1000000u), t->idx,
                (unsigned long long)t->resets);
    }
    return v;
}

static void
tick_target(struct target *t, uint64_t now)
{
    uint64_t n;

    if (t->frozen || t->ncombos == 0)
        return;
    /* a restart nobody has seen yet: stop as soon as it shows */
    if (t->held && hold_check(t) == RV_VISIBLE)
        return;
    if (opt.new_series_every_ms && now >= t->next_new_ms) {
        t->next_new_ms += opt.new_series_every_ms;
        add_new_series(t);
    }
    n = opt.requests_per_tick ? rng_next(&t->rng) % (2 * opt.requests_per_tick + 1) : 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = rng_next(&t->rng);

        record_request(&t->combos[r % t->ncombos], &t->rng);
    }
}

static void
target_reset(struct target *t, uint64_t now)
{
    for (size_t i = 0; i < t->ncombos; i++) {
        struct combo *c = &t->combos[i];

        for (int k = 0; k < TT_COUNT; k++) {
            c->old_sum[k] = c->tok[k].sum_u;
            c->old_cnt[k] = c->tok[k].count;
        }
        memset(c->tok, 0, sizeof(c->tok));
        memset(&c->dur, 0, sizeof(c->dur));
        memset(&c->dur_err, 0, sizeof(c->dur_err));
    }
    t->resets++;
    t->frozen = 0;
    t->held = 0;        /* until a scrape showing the restart was received */
    for (size_t i = 0; i < t->ncombos && !t->held; i++)
        for (int k = 0; k < TT_COUNT; k++)
            t->held |= t->combos[i].old_cnt[k] > 0;
    t->frozen_delivered = 0;
    t->next_reset_ms = now + opt.reset_every_ms;
}

/* ---------- rendering ---------- */

struct lab {
    const char *key;    /* OTel attribute key (sort key) */
    const char *val;
};

struct ent {
    struct lab         l[SIM_LABELS_MAX];
    size_t             n;
    const struct hist *h;
    int                is_tok;
};

static int
legacy_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || *s == ':'))
        return 0;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
            return 0;
    return 1;
}

static int
is_name_char(char ch, int first)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
           (!first && ch >= '0' && ch <= '9');
}

/* A label or metric name as exposed: utf8 quotes non-legacy names; v0.4
 * underscore escaping maps each invalid char to '_'; v0.5+ sanitizes at the
 * exporter (runs of '_' collapsed, leading digit -> key_). */
static int
put_name(struct md_buf *b, const char *key, int utf8)
{
    int rc = MD_OK;

    if (legacy_name(key))
        return md_buf_puts(b, key);
    if (utf8 && opt.naming == NAMING_V04)
        return md_buf_printf(b, "\"%s\"", key);
    if (opt.naming == NAMING_V04) {
        for (const char *s = key; *s && rc == MD_OK; s++)
            rc = md_buf_putc(b, is_name_char(*s, s == key) ? *s : '_');
        return rc;
    }
    if (*key >= '0' && *key <= '9')
        rc = md_buf_puts(b, "key_");
    for (const char *s = key; *s && rc == MD_OK; s++) {
        char ch = is_name_char(*s, 0) ? *s : '_';

        if (ch == '_' && b->len > 0 && b->data[b->len - 1] == '_')
            continue;
        rc = md_buf_putc(b, ch);
    }
    return rc;
}

static int
lab_cmp(const void *a, const void *b)
{
    return strcmp(((const struct lab *)a)->key, ((const struct lab *)b)->key);
}

/* client_golang MetricSorter: label count, then values pairwise. */
static int
ent_cmp(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;

    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    for (size_t i = 0; i < x->n; i++) {
        int c = strcmp(x->l[i].val, y->l[i].val);

        if (c != 0)
            return c;
    }
    return 0;
}

static void
ent_push(struct ent *e, const char *key, const char *val)
{
    if (e->n < SIM_LABELS_MAX) {
        e->l[e->n].key = key;
        e->l[e->n].val = val;
        e->n++;
    }
}

static void
ent_common(struct ent *e, const struct combo *c, int err)
{
    int v04 = opt.naming == NAMING_V04;

    if (c->has_dept)
        ent_push(e, opt.dept_label, c->dept);
    if (err)
        ent_push(e, "error.type", "_OTHER");
    ent_push(e, "gen_ai.operation.name", c->m->op);
    ent_push(e, "gen_ai.original.model", c->m->orig);
    ent_push(e, "gen_ai.provider.name", v04 ? c->m->prov_v04 : c->m->prov_v05);
    ent_push(e, "gen_ai.request.model", c->m->req);
    ent_push(e, "gen_ai.response.model", err ? "unknown" : c->m->resp);
}

static void
ent_scope(struct ent *e)
{
    ent_push(e, "otel_scope_name", "envoyproxy/ai-gateway");
    ent_push(e, "otel_scope_schema_url", "");
    ent_push(e, "otel_scope_version", "");
}

/* name + suffix at the start of a sample line, and the opening of labels */
static int
put_sample_head(struct md_buf *b, const char *family, const char *suffix, int utf8)
{
    if (legacy_name(family) || !(utf8 && opt.naming == NAMING_V04)) {
        int rc = put_name(b, family, utf8);

        if (rc == MD_OK)
            rc = md_buf_puts(b, suffix);
        return rc == MD_OK ? md_buf_putc(b, '{') : rc;
    }
    return md_buf_printf(b, "{\"%s%s\"", family, suffix);
}

static int
put_labels(struct md_buf *b, const struct ent *e, int utf8, int comma_first)
{
    int rc = MD_OK;

    for (size_t i = 0; i < e->n && rc == MD_OK; i++) {
        if (i > 0 || comma_first)
            rc = md_buf_putc(b, ',');
        if (rc == MD_OK)
            rc = put_name(b, e->l[i].key, utf8);
        if (rc == MD_OK)
            rc = md_buf_puts(b, "=\"");
        if (rc == MD_OK)
            rc = md_prom_put_label_value(b, e->l[i].val, strlen(e->l[i].val));
        if (rc == MD_OK)
            rc = md_buf_putc(b, '"');
    }
    return rc;
}

static int
put_family_head(struct md_buf *b, const char *family, const char *type, const char *help,
    int utf8)
{
    int rc = md_buf_puts(b, "# HELP ");

    if (rc == MD_OK)
        rc = put_name(b, family, utf8);
    if (rc == MD_OK)
        rc = md_buf_printf(b, " %s\n# TYPE ", help);
    if (rc == MD_OK)
        rc = put_name(b, family, utf8);
    if (rc == MD_OK)
        rc = md_buf_printf(b, " %s\n", type);
    return rc;
}

/* One histogram: the label text is rendered once and copied into each of its
 * bucket/_sum/_count lines (the bulk of a scrape's bytes). */
static int
put_hist(struct md_buf *b, const char *family, const struct ent *e, int utf8,
    struct md_buf *scratch)
{
    static const char *const suffix[3] = { "_bucket", "_sum", "_count" };
    const char (*le)[32] = e->is_tok ? tok_le : dur_le;
    size_t nb = e->is_tok ? TOK_NB : DUR_NB, head_len[3], lab_off;
    uint64_t cum = 0;
    char num[48];
    int rc = MD_OK;
    int quoted = !legacy_name(family) && utf8 && opt.naming == NAMING_V04;

    /* scratch = head("_bucket") head("_sum") head("_count") labels */
    md_buf_reset(scratch);
    for (int k = 0; k < 3 && rc == MD_OK; k++) {
        size_t before = scratch->len;

        rc = put_sample_head(scratch, family, suffix[k], utf8);
        head_len[k] = scratch->len - before;
    }
    lab_off = scratch->len;
    if (rc == MD_OK)
        rc = put_labels(scratch, e, utf8, quoted);
    if (rc != MD_OK)
        return rc;
    for (size_t i = 0; i <= nb && rc == MD_OK; i++) {
        cum += e->h->b[i];
        go_fmt((double)cum, num, sizeof(num));
        rc = md_buf_append(b, scratch->data, head_len[0]);
        if (rc == MD_OK)
            rc = md_buf_append(b, scratch->data + lab_off, scratch->len - lab_off);
        if (rc == MD_OK)
            rc = md_buf_printf(b, ",le=\"%s\"} %s\n", i < nb ? le[i] : "+Inf", num);
    }
    for (int k = 1; k < 3 && rc == MD_OK; k++) {
        if (k == 1 && e->is_tok)
            go_fmt((double)e->h->sum_u, num, sizeof(num));
        else if (k == 1)
            go_fmt(e->h->sum_d, num, sizeof(num));
        else
            go_fmt((double)e->h->count, num, sizeof(num));
        rc = md_buf_append(b, scratch->data + (k == 1 ? head_len[0] : head_len[0] + head_len[1]),
            head_len[k]);
        if (rc == MD_OK)
            rc = md_buf_append(b, scratch->data + lab_off, scratch->len - lab_off);
        if (rc == MD_OK)
            rc = md_buf_printf(b, "} %s\n", num);
    }
    return rc;
}

static int
put_family(struct md_buf *b, const char *family, const char *help, struct ent *ents, size_t n,
    int utf8)
{
    struct md_buf scratch;
    int rc;

    if (n == 0)
        return MD_OK;
    qsort(ents, n, sizeof(*ents), ent_cmp);
    md_buf_init(&scratch, 16384);   /* one series' heads and labels */
    rc = put_family_head(b, family, "histogram", help, utf8);
    for (size_t i = 0; i < n && rc == MD_OK; i++)
        rc = put_hist(b, family, &ents[i], utf8, &scratch);
    md_buf_fini(&scratch);
    return rc;
}

/* Renders target t (caller holds t->mu). */
static int
render(struct target *t, struct md_buf *b, int utf8)
{
    int v04 = opt.naming == NAMING_V04;
    size_t max = t->ncombos * (TT_COUNT + 2), n = 0;
    struct ent *ents = md_calloc(max ? max : 1, sizeof(*ents));
    int rc = MD_OK;

    if (ents == NULL)
        return MD_ENOMEM;
    for (size_t i = 0; i < t->ncombos; i++) {
        const struct combo *c = &t->combos[i];

        for (int tt = 0; tt < TT_COUNT; tt++) {
            struct ent *e;

            if (c->tok[tt].count == 0)   /* EAIG shows a series once recorded */
                continue;
            e = &ents[n++];
            e->h = &c->tok[tt];
            e->is_tok = 1;
            if (c->m->kind == K_OVERFLOW) {
                ent_push(e, "otel.metric.overflow", "true");
            } else {
                ent_common(e, c, 0);
                ent_push(e, "gen_ai.token.type", tt_names[tt]);
            }
            ent_scope(e);
            qsort(e->l, e->n, sizeof(e->l[0]), lab_cmp);
        }
    }
    rc = put_family(b, v04 ? "gen_ai.client.token.usage_token" : "gen_ai_client_token_usage",
        "Number of tokens processed.", ents, n, utf8);
    n = 0;
    for (size_t i = 0; i < t->ncombos && rc == MD_OK; i++) {
        const struct combo *c = &t->combos[i];

        for (int err = 0; err <= 1; err++) {
            const struct hist *h = err ? &c->dur_err : &c->dur;
            struct ent *e;

            if (h->count == 0)
                continue;
            e = &ents[n++];
            memset(e, 0, sizeof(*e));   /* reused from the token family */
            e->h = h;
            ent_common(e, c, err);
            ent_scope(e);
            qsort(e->l, e->n, sizeof(e->l[0]), lab_cmp);
        }
    }
    if (rc == MD_OK)
        rc = put_family(b, v04 ? "gen_ai.server.request.duration_seconds" :
            "gen_ai_server_request_duration_seconds",
            "Generative AI server request duration such as time-to-last byte or last "
            "output token.", ents, n, utf8);
    md_free(ents);
    if (rc == MD_OK)
        rc = put_family_head(b, "target_info", "gauge", "Target metadata", utf8);
    if (rc == MD_OK) {
        struct ent e = { .n = 0 };

        ent_push(&e, "service.name", "unknown_service:app");
        ent_push(&e, "telemetry.sdk.language", "go");
        ent_push(&e, "telemetry.sdk.name", "opentelemetry");
        ent_push(&e, "telemetry.sdk.version", v04 ? "1.38.0" : "1.44.0");
        rc = md_buf_puts(b, "target_info{");
        if (rc == MD_OK)
            rc = put_labels(b, &e, utf8, 0);
        if (rc == MD_OK)
            rc = md_buf_puts(b, "} 1\n");
    }
    return rc;
}

static int
gzip_buf(const struct md_buf *in, struct md_buf *out)
{
    z_stream zs;
    int rc = MD_EIO;

    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return MD_EIO;
    {
        uLong bound = deflateBound(&zs, (uLong)in->len);
        char *p = md_malloc(bound + 1);

        if (p == NULL) {
            (void)deflateEnd(&zs);
            return MD_ENOMEM;
        }
        zs.next_in = (Bytef *)(uintptr_t)in->data;
        zs.avail_in = (uInt)in->len;
        zs.next_out = (Bytef *)p;
        zs.avail_out = (uInt)bound;
        if (deflate(&zs, Z_FINISH) == Z_STREAM_END) {
            out->data = p;
            out->len = zs.total_out;
            out->alloc = bound + 1;
            rc = MD_OK;
        } else {
            md_free(p);
        }
    }
    (void)deflateEnd(&zs);
    return rc;
}

/* ---------- target HTTP ---------- */

static enum MHD_Result
reply_text(struct MHD_Connection *conn, unsigned code, const char *ctype, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)(uintptr_t)text,
        MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (r == NULL)
        return MHD_NO;
    (void)MHD_add_response_header(r, "Content-Type", ctype);
    ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* Tokens a body rendered now exposes (the sum of every token _sum), for
 * --log-scrapes.  Caller holds t->mu. */
static uint64_t
exposed_tokens(const struct target *t)
{
    uint64_t sum = 0;

    for (size_t i = 0; i < t->ncombos; i++)
        for (int k = 0; k < TT_COUNT; k++)
            sum += t->combos[i].tok[k].sum_u;
    return sum;
}

/* One line per terminated meterd scrape (--log-scrapes): when the simulator
 * counted a scrape as delivered, and what it had exposed, so a soak's
 * resets can be matched against what meterd applied. */
static void
log_scrape(const struct req *q, enum MHD_RequestTerminationCode toe)
{
    uint64_t now = now_ms();

    fprintf(stderr, "sim-scrape wall_ms=%llu target=%u n=%llu armed=%d post_reset=%d toe=%d "
        "done_ms=%llu exposed=%llu\n",
        (unsigned long long)(md_now_realtime_ns() / 1000000u), q->t->idx,
        (unsigned long long)q->sn, q->armed, q->post_reset, (int)toe,
        (unsigned long long)(q->render_ms ? now - q->render_ms : 0),
        (unsigned long long)q->exposed);
}

/* The client sent another request on this connection, so it read the
 * pending armed response to its end: that scrape of the frozen counters
 * counts, and the reset happens once --reset-scrapes of them did (before
 * this request is rendered, so it sees the restarted sidecar).  A delivery
 * from before a reset that happened meanwhile (another connection) no
 * longer counts. */
static void
confirm_pending(struct conn_state *cs)
{
    struct target *t = cs->t;
    int reset = 0;

    if (!cs->pending)
        return;
    pthread_mutex_lock(&t->mu);
    t->confirmed++;
    if ((cs->pending & PEND_RESTARTED) && t->held && t->resets == cs->pending_epoch) {
        t->held = 0;        /* the scraper saw the restart: the clock resumes */
        /* its life counts from here: a sidecar reset again within a few
         * requests of its start could not show that restart (RV_NEVER) */
        t->next_reset_ms = now_ms() + opt.reset_every_ms;
    }
    if ((cs->pending & PEND_FROZEN) && t->frozen && t->resets == cs->pending_epoch &&
        ++t->frozen_delivered >= opt.reset_scrapes) {
        target_reset(t, now_ms());
        reset = 1;
    }
    cs->pending = 0;
    if (opt.log_scrapes)
        fprintf(stderr, "sim-confirm wall_ms=%llu target=%u n=%llu frozen_delivered=%llu "
            "reset=%d\n", (unsigned long long)(md_now_realtime_ns() / 1000000u), t->idx,
            (unsigned long long)cs->pending_sn, (unsigned long long)t->frozen_delivered, reset);
    pthread_mutex_unlock(&t->mu);
}

static void
target_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
    struct conn_state *cs = *socket_context;

    (void)conn;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        /* without it this connection's deliveries are never confirmed:
         * fewer resets, never a wrong truth */
        cs = md_calloc(1, sizeof(*cs));
        if (cs != NULL)
            cs->t = cls;
        *socket_context = cs;
        return;
    }
    if (cs == NULL)
        return;
    if (cs->pending) {
        pthread_mutex_lock(&cs->t->mu);
        cs->t->unconfirmed++;
        if (opt.log_scrapes)
            fprintf(stderr, "sim-unconfirmed wall_ms=%llu target=%u n=%llu\n",
                (unsigned long long)(md_now_realtime_ns() / 1000000u), cs->t->idx,
                (unsigned long long)cs->pending_sn);
        pthread_mutex_unlock(&cs->t->mu);
    }
    md_free(cs);
    *socket_context = NULL;
}

static struct conn_state *
conn_state_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

static enum MHD_Result
serve_metrics(struct MHD_Connection *conn, struct req *q)
{
    struct target *t = q->t;
    const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
    const char *ae = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept-Encoding");
    const char *ua = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "User-Agent");
    int want_utf8 = opt.names_utf8 || (accept && strstr(accept, "escaping=allow-utf-8"));
    int meterd = ua && opt.reset_ua_prefix[0] && strncmp(ua, opt.reset_ua_prefix,
        strlen(opt.reset_ua_prefix)) == 0;
    struct md_buf body, gz = { 0 };
    struct MHD_Response *r;
    enum MHD_Result ret;
    char ctype[96];
    int rc;

    if (q->state == RS_NEW) {
        uint64_t n;

        pthread_mutex_lock(&t->mu);
        n = ++t->scrapes;
        q->sn = n;
        q->meterd = meterd;
        if (meterd)
            t->meterd_scrapes++;
        if (opt.timeout_every && n % opt.timeout_every == 0) {
            t->timeouts++;
            pthread_mutex_unlock(&t->mu);
            pthread_mutex_lock(&susp_mu);
            if (!atomic_load(&stopping) && susp_count < SIM_SUSPENDED_MAX) {
                q->conn = conn;
                q->state = RS_SUSPENDED;
                q->resume_at_ms = now_ms() + opt.timeout_ms + 1000;
                q->next = susp_head;
                susp_head = q;
                susp_count++;
                MHD_suspend_connection(conn);
                pthread_mutex_unlock(&susp_mu);
                return MHD_YES;
            }
            pthread_mutex_unlock(&susp_mu);
            /* cannot hold it back: fail it instead, still no reset */
            return reply_text(conn, 503, "text/plain; charset=utf-8", "simulated timeout\n");
        }
        if (opt.error_every && n % opt.error_every == 0) {
            t->errors++;
            pthread_mutex_unlock(&t->mu);
            return reply_text(conn, 500, "text/plain; charset=utf-8",
                "An error has occurred while serving metrics:\n\nsimulated gather error\n");
        }
        pthread_mutex_unlock(&t->mu);
    }
    md_buf_init(&body, SIM_BODY_MAX);
    pthread_mutex_lock(&t->mu);
    if (q->state == RS_NEW && meterd && t->held) {
        /* one that shows the restart ends the hold once received; one
         * that does not (nothing recorded yet) neither ends it nor arms */
        if (hold_check(t) == RV_VISIBLE) {
            q->post_reset = 1;
            q->epoch = t->resets;
        }
    } else if (q->state == RS_NEW && meterd && opt.reset_every_ms &&
        (t->frozen || now_ms() >= t->next_reset_ms)) {
        t->frozen = 1;      /* the clock leaves it alone until the reset */
        q->armed = 1;
        q->epoch = t->resets;
    }
    rc = render(t, &body, want_utf8 && opt.naming == NAMING_V04);
    if (opt.log_scrapes) {
        q->render_ms = now_ms();
        q->exposed = exposed_tokens(t);
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != MD_OK) {
        md_buf_fini(&body);
        return reply_text(conn, 500, "text/plain; charset=utf-8", "render failed\n");
    }
    if (ae && strstr(ae, "gzip") && gzip_buf(&body, &gz) == MD_OK) {
        md_buf_fini(&body);
        r = MHD_create_response_from_buffer_with_free_callback(gz.len, gz.data, md_free);
        if (r != NULL)
            (void)MHD_add_response_header(r, "Content-Encoding", "gzip");
        else
            md_free(gz.data);
    } else {
        size_t len = body.len;
        char *p = md_buf_steal(&body, &len);

        r = MHD_create_response_from_buffer_with_free_callback(len, p, md_free);
        if (r == NULL)
            md_free(p);
    }
    if (r == NULL)
        return MHD_NO;
    (void)snprintf(ctype, sizeof(ctype), "text/plain; version=0.0.4; charset=utf-8; escaping=%s",
        want_utf8 ? "allow-utf-8" : "underscores");
    (void)MHD_add_response_header(r, "Content-Type", ctype);
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
target_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct target *t = cls;
    struct req *q = *con_cls;

    (void)version;
    (void)upload_data;
    if (q == NULL) {
        struct conn_state *cs = conn_state_of(conn);

        /* a new request on this connection: the previous response was read */
        if (cs != NULL)
            confirm_pending(cs);
        q = md_calloc(1, sizeof(*q));
        if (q == NULL)
            return MHD_NO;
        q->t = t;
        *con_cls = q;
        /* answer on the next call, once MHD has the whole request: a
         * response queued on the first call makes MHD close the connection
         * after it (Connection: close), and a sidecar (Go net/http) keeps
         * its connections alive; the reset rule needs that (conn_state) */
        return MHD_YES;
    }
    if (*upload_data_size != 0) {   /* ignore any body */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0)
        return reply_text(conn, 404, "text/plain; charset=utf-8", "not found\n");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply_text(conn, 405, "text/plain; charset=utf-8", "method not allowed\n");
    return serve_metrics(conn, q);
}

static void
target_done(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
    struct req *q = *con_cls;

    (void)cls;
    if (q == NULL)
        return;
    if ((q->armed || q->post_reset) && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        /* written out, not yet known to be read: see conn_state */
        struct conn_state *cs = conn_state_of(conn);

        if (cs != NULL) {
            cs->pending = (q->armed ? PEND_FROZEN : 0) | (q->post_reset ? PEND_RESTARTED : 0);
            cs->pending_epoch = q->epoch;
            cs->pending_sn = q->sn;
        }
    }
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK || q->meterd) {
        pthread_mutex_lock(&q->t->mu);
        if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
            q->t->delivered++;
        if (opt.log_scrapes && q->meterd)
            log_scrape(q, toe);
        pthread_mutex_unlock(&q->t->mu);
    }
    md_free(q);
    *con_cls = NULL;
}

/* ---------- clock thread ---------- */

static void
resume_due(int all)
{
    uint64_t now = now_ms();
    struct req **pp;

    pthread_mutex_lock(&susp_mu);
    pp = &susp_head;
    while (*pp != NULL) {
        struct req *q = *pp;

        if (all || now >= q->resume_at_ms) {
            *pp = q->next;
            susp_count--;
            q->state = RS_RESUMED;
            MHD_resume_connection(q->conn);
        } else {
            pp = &q->next;
        }
    }
    pthread_mutex_unlock(&susp_mu);
}

static void *
clock_main(void *arg)
{
    uint64_t next_tick = now_ms() + opt.tick_ms;

    (void)arg;
    pthread_mutex_lock(&clock_mu);
    while (!atomic_load(&stopping)) {
        struct timespec ts;
        uint64_t now = now_ms(), wait_ms = SIM_WAKE_MS;

        /* wake for the next tick or the next resume check, whichever is first */
        if (next_tick <= now)
            wait_ms = 0;
        else if (next_tick - now < wait_ms)
            wait_ms = next_tick - now;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)(wait_ms * 1000000u);
        while (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (wait_ms > 0)
            (void)pthread_cond_timedwait(&clock_cv, &clock_mu, &ts);
        if (atomic_load(&stopping))
            break;
        resume_due(0);
        now = now_ms();
        if (now < next_tick)
            continue;
        next_tick += opt.tick_ms;
        if (next_tick <= now)           /* fell behind: skip, do not burst */
            next_tick = now + opt.tick_ms;
        pthread_mutex_lock(&tick_mu);
        if (!atomic_load(&paused) &&
            (opt.max_ticks == 0 || atomic_load(&ticks) < opt.max_ticks)) {
            for (unsigned i = 0; i < opt.targets; i++) {
                pthread_mutex_lock(&targets[i].mu);
                tick_target(&targets[i], now);
                pthread_mutex_unlock(&targets[i].mu);
            }
            atomic_fetch_add(&ticks, 1);
        }
        pthread_mutex_unlock(&tick_mu);
    }
    pthread_mutex_unlock(&clock_mu);
    return NULL;
}

/* ---------- control HTTP ---------- */

static json_t *
truth_json(void)
{
    json_t *root = json_object(), *series = json_array(), *tl = json_array();
    uint64_t tot_tok = 0, tot_req = 0, bill_tok = 0, bill_req = 0;
    uint64_t resets = 0, scrapes = 0;
    char host[32];

    pthread_mutex_lock(&tick_mu);
    for (unsigned i = 0; i < opt.targets; i++) {
        struct target *t = &targets[i];

        (void)snprintf(host, sizeof(host), "127.0.0.1:%u", t->port);
        pthread_mutex_lock(&t->mu);
        for (size_t k = 0; k < t->ncombos; k++) {
            const struct combo *c = &t->combos[k];
            int ovf = c->m->kind == K_OVERFLOW, excl = !combo_billed(c);

            for (int tt = 0; tt < TT_COUNT; tt++) {
                int v04 = opt.naming == NAMING_V04;

                if (c->truth_req[tt] == 0)
                    continue;
                json_array_append_new(series, json_pack(
                    "{s:s,s:i,s:s,s:s,s:s,s:s,s:s,s:b,s:s,s:I,s:I,s:b,s:b}",
                    "target", host, "port", (int)t->port, "operation", c->m->op,
                    "provider", v04 ? c->m->prov_v04 : c->m->prov_v05,
                    "model", c->m->req, "original_model", c->m->orig,
                    "department", c->has_dept ? c->dept : "", "has_department", c->has_dept,
                    "token_type", ovf ? "" : tt_names[tt],
                    "tokens", (json_int_t)c->truth_tok[tt],
                    "requests", (json_int_t)c->truth_req[tt],
                    "excluded", excl, "overflow", ovf));
                tot_tok += c->truth_tok[tt];
                if (tt == TT_INPUT)
                    tot_req += c->truth_req[tt];
                if (!ovf && !excl) {
                    bill_tok += c->truth_tok[tt];
                    if (tt == TT_INPUT)
                        bill_req += c->truth_req[tt];
                }
            }
        }
        json_array_append_new(tl, json_pack(
            "{s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:I}",
            "target", host, "port", (int)t->port,
            "scrapes", (json_int_t)t->scrapes, "meterd_scrapes", (json_int_t)t->meterd_scrapes,
            "delivered", (json_int_t)t->delivered, "timeouts", (json_int_t)t->timeouts,
            "errors", (json_int_t)t->errors, "resets", (json_int_t)t->resets,
            "confirmed", (json_int_t)t->confirmed, "unconfirmed", (json_int_t)t->unconfirmed,
            "unseeable", (json_int_t)t->unseeable, "frozen", t->frozen, "held", t->held,
            "combos", (json_int_t)t->ncombos));
        resets += t->resets;
        scrapes += t->scrapes;
        pthread_mutex_unlock(&t->mu);
    }
    json_object_set_new(root, "series", series);
    json_object_set_new(root, "totals", json_pack("{s:I,s:I}", "tokens", (json_int_t)tot_tok,
        "requests", (json_int_t)tot_req));
    json_object_set_new(root, "billable", json_pack("{s:I,s:I}", "tokens",
        (json_int_t)bill_tok, "requests", (json_int_t)bill_req));
    json_object_set_new(root, "resets", json_integer((json_int_t)resets));
    json_object_set_new(root, "scrapes", json_integer((json_int_t)scrapes));
    json_object_set_new(root, "ticks", json_integer((json_int_t)atomic_load(&ticks)));
    json_object_set_new(root, "paused", json_boolean(atomic_load(&paused)));
    json_object_set_new(root, "naming", json_string(opt.naming == NAMING_V04 ? "v04" : "v05"));
    json_object_set_new(root, "targets", tl);
    pthread_mutex_unlock(&tick_mu);
    return root;
}

static enum MHD_Result
reply_json(struct MHD_Connection *conn, unsigned code, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    enum MHD_Result ret;

    json_decref(j);
    if (s == NULL)
        return MHD_NO;
    ret = reply_text(conn, code, "application/json", s);
    free(s);
    return ret;
}

static int control_marker;

static enum MHD_Result
control_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

    (void)cls;
    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {         /* headers only: wait for the body */
        *con_cls = &control_marker;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/healthz") == 0 && get)
        return reply_text(conn, 200, "text/plain; charset=utf-8", "ok\n");
    if (strcmp(url, "/truth") == 0 && get)
        return reply_json(conn, 200, truth_json());
    if ((strcmp(url, "/pause") == 0 || strcmp(url, "/resume") == 0) && post) {
        atomic_store(&paused, url[1] == 'p');
        /* wait out a tick in progress: after this no counter moves */
        pthread_mutex_lock(&tick_mu);
        pthread_mutex_unlock(&tick_mu);
        return reply_json(conn, 200, json_pack("{s:b,s:I}", "paused", atomic_load(&paused),
            "ticks", (json_int_t)atomic_load(&ticks)));
    }
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/truth") == 0 ||
        strcmp(url, "/pause") == 0 || strcmp(url, "/resume") == 0)
        return reply_text(conn, 405, "text/plain; charset=utf-8", "method not allowed\n");
    return reply_text(conn, 404, "text/plain; charset=utf-8", "not found\n");
}

/* ---------- startup ---------- */

static struct MHD_Daemon *
start_daemon(unsigned port, MHD_AccessHandlerCallback h, void *cls,
    MHD_RequestCompletedCallback done, MHD_NotifyConnectionCallback conn_cb)
{
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);     /* loopback only, always */
    return MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
        (uint16_t)port, NULL, NULL, h, cls,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)SIM_STACK_BYTES,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
        MHD_OPTION_NOTIFY_COMPLETED, done, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, conn_cb, cls,
        MHD_OPTION_END);
}

static void
usage(FILE *fp)
{
    fputs("usage: extproc-sim [options]\n"
          "Fake Envoy AI Gateway ExtProc sidecars on 127.0.0.1 with exact ground truth.\n"
          "\n"
          "  --targets N              sidecars to serve (1; at most 4096)\n"
          "  --base-port P            first sidecar port; targets use P..P+N-1 (10640)\n"
          "  --control-port C         control port: GET /truth /healthz, POST /pause /resume (10650)\n"
          "  --naming v04|v05         v04: gen_ai_client_token_usage_token_*, types input,\n"
          "                           cached_input, output; v05: gen_ai_client_token_usage_*,\n"
          "                           + cache_creation_input, reasoning (v04)\n"
          "  --names classic|utf8     utf8: quoted dotted names always (v04 only changes the body);\n"
          "                           classic: utf8 only when Accept has escaping=allow-utf-8 (classic)\n"
          "  --department-label NAME  header attribute key of the department (department)\n"
          "  --seed S                 deterministic traffic seed (1)\n"
          "  --tick-ms MS             clock tick; every tick adds requests (200)\n"
          "  --requests-per-tick R    mean requests per target per tick, 0..2R uniform (2)\n"
          "  --max-ticks N            stop the clock after N ticks: a fixed, reproducible\n"
          "                           end state for a given seed (0 = run on)\n"
          "  --reset-every SECONDS    simulated sidecar restart per target, staggered (0 = never)\n"
          "  --reset-ua-prefix S      only scrapes by this User-Agent prefix trigger a due\n"
          "                           reset (meterd/), once received in full: the client sent\n"
          "                           its next request on the same keep-alive connection\n"
          "  --reset-scrapes M        scrapes of the frozen counters received before the\n"
          "                           reset (1)\n"
          "  --new-series-every SECS  add a new (model, department) combination (0 = never)\n"
          "  --max-combos N           ceiling of combinations per target (256)\n"
          "  --timeout-every N        every Nth scrape of a target hangs (0 = never)\n"
          "  --timeout-ms MS          the scraper's timeout; a hung scrape is answered\n"
          "                           after MS+1000 ms (10000)\n"
          "  --error-every N          every Nth scrape of a target answers 500 (0 = never)\n"
          "  --count-tokens           add a count_tokens series (a biller must exclude it)\n"
          "  --overflow               add an otel_metric_overflow=\"true\" series\n"
          "  --quiet                  print only the summary of URLs\n"
          "  --log-scrapes            one stderr line per terminated --reset-ua-prefix scrape\n"
          "  -h, --help               this help\n"
          "\n"
          "SIGTERM/SIGINT stop cleanly.\n", fp);
}

static int
parse_num(const char *name, const char *s, uint64_t max, uint64_t *out)
{
    if (md_parse_u64(s, strlen(s), max, out) != MD_OK) {
        fprintf(stderr, "extproc-sim: --%s: \"%s\" is not a whole number 0..%llu\n", name, s,
            (unsigned long long)max);
        return -1;
    }
    return 0;
}

static int
parse_args(int argc, char **argv)
{
    enum { O_TARGETS = 256, O_BASE, O_CONTROL, O_NAMING, O_NAMES, O_DEPT, O_SEED, O_TICK,
           O_RPT, O_RESET, O_RESET_UA, O_RESET_SCRAPES, O_NEW, O_MAXC, O_TOE, O_TOMS, O_ERR,
           O_CT, O_OVF, O_QUIET, O_MAXT, O_LOGS };
    static const struct option lo[] = {
        { "targets", required_argument, NULL, O_TARGETS },
        { "base-port", required_argument, NULL, O_BASE },
        { "control-port", required_argument, NULL, O_CONTROL },
        { "naming", required_argument, NULL, O_NAMING },
        { "names", required_argument, NULL, O_NAMES },
        { "department-label", required_argument, NULL, O_DEPT },
        { "seed", required_argument, NULL, O_SEED },
        { "tick-ms", required_argument, NULL, O_TICK },
        { "requests-per-tick", required_argument, NULL, O_RPT },
        { "reset-every", required_argument, NULL, O_RESET },
        { "reset-ua-prefix", required_argument, NULL, O_RESET_UA },
        { "reset-scrapes", required_argument, NULL, O_RESET_SCRAPES },
        { "new-series-every", required_argument, NULL, O_NEW },
        { "max-combos", required_argument, NULL, O_MAXC },
        { "timeout-every", required_argument, NULL, O_TOE },
        { "timeout-ms", required_argument, NULL, O_TOMS },
        { "error-every", required_argument, NULL, O_ERR },
        { "count-tokens", no_argument, NULL, O_CT },
        { "overflow", no_argument, NULL, O_OVF },
        { "quiet", no_argument, NULL, O_QUIET },
        { "max-ticks", required_argument, NULL, O_MAXT },
        { "log-scrapes", no_argument, NULL, O_LOGS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t v;
    int c;

    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        const char *a = optarg;
        int bad = 0;

        switch (c) {
        case O_TARGETS:
            bad = parse_num("targets", a, SIM_TARGETS_MAX, &v) || v == 0;
            opt.targets = (unsigned)v;
            break;
        case O_BASE:
            bad = parse_num("base-port", a, 65535, &v) || v == 0;
            opt.base_port = (unsigned)v;
            break;
        case O_CONTROL:
            bad = parse_num("control-port", a, 65535, &v) || v == 0;
            opt.control_port = (unsigned)v;
            break;
        case O_NAMING:
            if (strcmp(a, "v04") == 0)
                opt.naming = NAMING_V04;
            else if (strcmp(a, "v05") == 0)
                opt.naming = NAMING_V05;
            else
                bad = 1;
            break;
        case O_NAMES:
            if (strcmp(a, "classic") == 0)
                opt.names_utf8 = 0;
            else if (strcmp(a, "utf8") == 0)
                opt.names_utf8 = 1;
            else
                bad = 1;
            break;
        case O_DEPT:
            bad = a[0] == '\0' || strlen(a) > 64 || strchr(a, '"') || strchr(a, '\\');
            opt.dept_label = a;
            break;
        case O_SEED:
            bad = parse_num("seed", a, UINT64_MAX, &opt.seed);
            break;
        case O_TICK:
            bad = parse_num("tick-ms", a, 3600000, &opt.tick_ms) || opt.tick_ms == 0;
            break;
        case O_RPT:
            bad = parse_num("requests-per-tick", a, 100000, &opt.requests_per_tick);
            break;
        case O_RESET:
            bad = parse_num("reset-every", a, 86400 * 365, &v);
            opt.reset_every_ms = v * 1000;
            break;
        case O_RESET_UA:
            opt.reset_ua_prefix = a;
            break;
        case O_RESET_SCRAPES:
            bad = parse_num("reset-scrapes", a, 1000, &opt.reset_scrapes) ||
                  opt.reset_scrapes == 0;
            break;
        case O_NEW:
            bad = parse_num("new-series-every", a, 86400 * 365, &v);
            opt.new_series_every_ms = v * 1000;
            break;
        case O_MAXC:
            bad = parse_num("max-combos", a, SIM_COMBOS_MAX, &opt.max_combos) ||
                  opt.max_combos < 16;
            break;
        case O_TOE:
            bad = parse_num("timeout-every", a, UINT32_MAX, &opt.timeout_every);
            break;
        case O_TOMS:
            bad = parse_num("timeout-ms", a, 3600000, &opt.timeout_ms);
            break;
        case O_ERR:
            bad = parse_num("error-every", a, UINT32_MAX, &opt.error_every);
            break;
        case O_CT:
            opt.count_tokens = 1;
            break;
        case O_OVF:
            opt.overflow = 1;
            break;
        case O_QUIET:
            opt.quiet = 1;
            break;
        case O_LOGS:
            opt.log_scrapes = 1;
            break;
        case O_MAXT:
            bad = parse_num("max-ticks", a, UINT64_MAX, &opt.max_ticks);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "extproc-sim: bad value \"%s\" for --%s\n", a, lo[c - O_TARGETS].name);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "extproc-sim: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (opt.base_port + opt.targets - 1 > 65535) {
        fprintf(stderr, "extproc-sim: ports %u..%u do not fit below 65536\n", opt.base_port,
            opt.base_port + opt.targets - 1);
        return -1;
    }
    if (opt.control_port >= opt.base_port && opt.control_port < opt.base_port + opt.targets) {
        fprintf(stderr, "extproc-sim: --control-port %u lies inside the target ports %u..%u\n",
            opt.control_port, opt.base_port, opt.base_port + opt.targets - 1);
        return -1;
    }
    return 0;
}

static int
target_init(struct target *t, unsigned idx)
{
    int rc = MD_OK;

    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    t->idx = idx;
    t->port = opt.base_port + idx;
    t->rng = opt.seed ^ ((uint64_t)(idx + 1) * 0xd1b54a32d192ed03ull);
    /* staggered: target i first restarts after (i+1)/N of the period */
    t->next_reset_ms = start_ms + opt.reset_every_ms * (idx + 1) / opt.targets;
    t->next_new_ms = start_ms + opt.new_series_every_ms;
    if (rc == MD_OK) rc = combo_add(t, MD_GPT4O, NULL);
    if (rc == MD_OK) rc = combo_add(t, MD_GPT4O, "eng");
    if (rc == MD_OK) rc = combo_add(t, MD_GPT4O, "finance");
    if (rc == MD_OK) rc = combo_add(t, MD_GPT4O, "sales");
    if (rc == MD_OK) rc = combo_add(t, MD_BEDROCK, "eng");
    if (rc == MD_OK) rc = combo_add(t, MD_BEDROCK, "sales");
    if (rc == MD_OK) rc = combo_add(t, MD_EMBED, "eng");
    if (rc == MD_OK) rc = combo_add(t, MD_EMBED, "finance");
    if (rc == MD_OK) rc = combo_add(t, MD_MESSAGES, "finance");
    if (rc == MD_OK && opt.count_tokens)
        rc = combo_add(t, MD_COUNT_TOKENS, "finance");
    if (rc == MD_OK && opt.overflow)
        rc = combo_add(t, MD_OVERFLOW, NULL);
    return rc;
}

int
main(int argc, char **argv)
{
    struct MHD_Daemon *control = NULL;
    pthread_t clock_thr;
    pthread_condattr_t ca;
    sigset_t set;
    struct rlimit rl;
    int sig = 0, ret = 1, clock_started = 0;
    unsigned started = 0;

    if (parse_args(argc, argv) != 0)
        return 2;
    for (int i = 0; i < TOK_NB; i++)
        go_fmt(tok_bounds[i], tok_le[i], sizeof(tok_le[i]));
    for (int i = 0; i < DUR_NB; i++)
        go_fmt(dur_bounds[i], dur_le[i], sizeof(dur_le[i]));
    /* one listening socket, epoll fd and wakeup fd per target: raise the limit */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);   /* before any thread: all inherit it */
    sigdelset(&set, SIGPIPE);

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&clock_cv, &ca);
    pthread_condattr_destroy(&ca);

    start_ms = now_ms();
    targets = md_calloc(opt.targets, sizeof(*targets));
    if (targets == NULL) {
        fprintf(stderr, "extproc-sim: out of memory\n");
        return 1;
    }
    for (unsigned i = 0; i < opt.targets; i++) {
        if (target_init(&targets[i], i) != MD_OK) {
            fprintf(stderr, "extproc-sim: out of memory\n");
            goto out;
        }
    }
    for (; started < opt.targets; started++) {
        struct target *t = &targets[started];

        t->d = start_daemon(t->port, target_handler, t, target_done, target_conn);
        if (t->d == NULL) {
            fprintf(stderr, "extproc-sim: cannot listen on 127.0.0.1:%u (in use?)\n", t->port);
            goto out;
        }
    }
    control = start_daemon(opt.control_port, control_handler, NULL, NULL, NULL);
    if (control == NULL) {
        fprintf(stderr, "extproc-sim: cannot listen on 127.0.0.1:%u (in use?)\n",
            opt.control_port);
        goto out;
    }
    if (pthread_create(&clock_thr, NULL, clock_main, NULL) != 0) {
        fprintf(stderr, "extproc-sim: cannot start the clock thread\n");
        goto out;
    }
    clock_started = 1;
    printf("extproc-sim: %u target(s), naming %s, names %s, seed %llu, tick %llums\n",
        opt.targets, opt.naming == NAMING_V04 ? "v04" : "v05",
        opt.names_utf8 ? "utf8" : "classic", (unsigned long long)opt.seed,
        (unsigned long long)opt.tick_ms);
    for (unsigned i = 0; i < opt.targets; i++) {
        if (opt.quiet || (opt.targets > 8 && i >= 3 && i + 1 < opt.targets)) {
            if (i == 3 && !opt.quiet)
                printf("  ...\n");
            continue;
        }
        printf("  target:  http://127.0.0.1:%u/metrics\n", targets[i].port);
    }
    if (opt.quiet)
        printf("  targets: http://127.0.0.1:%u..%u/metrics\n", opt.base_port,
            opt.base_port + opt.targets - 1);
    printf("  truth:   http://127.0.0.1:%u/truth\n", opt.control_port);
    printf("  control: POST http://127.0.0.1:%u/pause and /resume, GET /healthz\n",
        opt.control_port);
    fflush(stdout);

    if (sigwait(&set, &sig) == 0 && !opt.quiet)
        fprintf(stderr, "extproc-sim: signal %d, stopping\n", sig);
    ret = 0;
out:
    pthread_mutex_lock(&clock_mu);
    atomic_store(&stopping, 1);
    pthread_cond_signal(&clock_cv);
    pthread_mutex_unlock(&clock_mu);
    if (clock_started)
        pthread_join(clock_thr, NULL);
    resume_due(1);      /* MHD must not stop with suspended connections */
    if (control != NULL)
        MHD_stop_daemon(control);
    for (unsigned i = 0; i < started; i++)
        MHD_stop_daemon(targets[i].d);
    for (unsigned i = 0; i < opt.targets; i++) {
        md_free(targets[i].combos);
        pthread_mutex_destroy(&targets[i].mu);
    }
    md_free(targets);
    return ret;
}
