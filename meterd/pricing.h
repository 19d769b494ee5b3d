/* pricing.h: pricing models (rate cards) and the pricing of one usage row set.
 *
 * A pricing document is loaded from YAML (pricing.file in meterd.yaml,
 * default config/pricing.yaml) through the cfgtab key tables:
 *
 *   pricing_models:
 *     - name: standard                  # unique; [A-Za-z0-9._:-], 1..128
 *       currency: USD                   # ISO 4217 shape: 3 letters A-Z
 *       clusters: [prod-east]           # required; an empty list is an error
 *       effective_from: 2026-01-01      # required, inclusive
 *       effective_to: 2026-07-01        # optional, EXCLUSIVE (so the next
 *                                       # model's effective_from may equal it)
 *       cache_included_in_input: true   # default true (EAIG v0.5+)
 *       providers:                      # per-provider override of that rule;
 *         anthropic: false              # keys are exact names or globs
 *         "*anthropic*": false          # (* and ?), first matching key wins
 *       adjustments:                    # optional per-tenant markup/discount
 *         - namespace: team-a           # exact namespace, unique per model
 *           percent: "-10"              # decimal, -100..1000 (-10 = 10 % off)
 *       items:                          # required, at least one
 *         - models: ["gpt-4o-mini*"]    # exact, glob (* ?), or "re:REGEX"
 *           per_million:                # decimal strings, at most 9 decimals
 *             input: "0.15"             # at least one of the five is needed
 *             cached_input: "0.075"
 *             cache_creation_input: "0.1875"
 *             output: "0.60"
 *             reasoning: "0.60"
 *
 * Validation (every error as FILE:LINE:COL, all collected): unknown keys
 * (including unknown token types under per_million), bad decimals, bad
 * dates, effective_to not after effective_from, empty clusters or items, an
 * item without any price, a regex that does not compile (with PCRE2's
 * message and offset), a pattern repeated inside one model, duplicate
 * model names, duplicate adjustment namespaces, percent out of range, and
 * two models whose effective ranges overlap on a shared cluster (so exactly
 * one model applies to a (cluster, day)).  Cross-model rules are checked
 * once the file has no other error.
 *
 * Matching: the model that applies to (cluster, day) is the one listing the
 * cluster with effective_from <= day < effective_to.  Inside it, items are
 * tried in file order and the FIRST item with a matching pattern wins (an
 * exact name listed later never beats an earlier glob).  Patterns are case
 * sensitive: a plain string matches itself; one containing * or ? is a glob
 * over the whole name; "re:..." is a PCRE2 regex anchored at both ends
 * (like Prometheus relabelling), JIT-compiled when available, with a match
 * limit so that no pattern can stall the rater.
 *
 * THE PRICING RULE (md_pricing_price): usage for one (day, cluster,
 * namespace, department, model, provider) arrives as token counts per type
 * exactly as EAIG reported them.  No token is ever priced twice:
 *   - cache rule "included" (cache_included_in_input true, or the provider's
 *     override): cached_input and cache_creation_input are subsets of input.
 *     Each of them that has its own price is carved out of input and priced
 *     at that price; one without a price stays inside input.  The remainder,
 *     uncached input = input - carved-out types, is priced at the input
 *     price.  A negative remainder is clamped to 0 and flagged as
 *     MD_PRICE_ANOMALY_INPUT (the carved types are still priced in full).
 *   - cache rule "additive" (false; EAIG v0.4 Anthropic/Bedrock): input is
 *     uncached input as is; cached_input and cache_creation_input are extra
 *     tokens, each priced at its own price (unpriced if it has none).
 *   - reasoning is always a subset of output.  With a reasoning price, output
 *     is priced as output - reasoning at the output price plus reasoning at
 *     its own price (negative remainder: clamped, MD_PRICE_ANOMALY_OUTPUT);
 *     without one, reasoning stays inside output and has no line.
 *   - a type with tokens but no price (and no parent to fold into) becomes
 *     an unpriced line: amount 0, never dropped.  Usage whose model no item
 *     matches (or no pricing model applies to) is split by the same rule
 *     (the applying model's cache rule, else "included") into unpriced lines.
 *   - `total` (EAIG v0.3: input + output) is never priced; callers do not
 *     pass it.
 * Each line: token type, tokens, list unit price, unit price after the
 * tenant's adjustment (md_money_apply_percent on the unit price, rounded
 * half to even), and amount = md_money_line_amount(tokens, unit price):
 * one rounding per line, so amount is reproducible from the line itself.
 * Lines with zero tokens are not emitted.
 *
 * A loaded md_pricing is immutable: any number of threads may look up and
 * price with it concurrently.  The loader is pure apart from reading the
 * file. */
#ifndef MD_PRICING_H
#define MD_PRICING_H

#include <stddef.h>
#include <stdint.h>

#include "cfgtab.h"
#include "util.h"

#define MD_PRICING_MODELS_MAX      1000   /* pricing models in one document */
#define MD_PRICING_ITEMS_MAX       10000  /* items in one pricing model */
#define MD_PRICING_PATTERNS_MAX    1000   /* patterns in one item */
#define MD_PRICING_CLUSTERS_MAX    1000   /* clusters of one pricing model */
#define MD_PRICING_ADJUST_MAX      10000  /* adjustments of one pricing model */
#define MD_PRICING_PROVIDERS_MAX   256    /* provider overrides of one model */
#define MD_PRICING_NAME_MAX        128    /* bytes of a pricing model name */
#define MD_PRICING_PATTERN_MAX     1024   /* bytes of one model pattern */
#define MD_PRICING_REGEX_MATCH_LIMIT 100000 /* PCRE2 match limit per attempt */
#define MD_PRICING_PERCENT_MIN     (-100LL * 1000000000LL)  /* nano-percent */
#define MD_PRICING_PERCENT_MAX     (1000LL * 1000000000LL)

enum md_token_type {
    MD_TOK_INPUT,
    MD_TOK_CACHED_INPUT,
    MD_TOK_CACHE_CREATION_INPUT,
    MD_TOK_OUTPUT,
    MD_TOK_REASONING,
    MD_TOK_TYPES
};

/* "input", "cached_input", "cache_creation_input", "output", "reasoning";
 * NULL when out of range. */
const char *md_token_type_name(enum md_token_type t);
/* The type named s[0..len); MD_ENOTFOUND for others (including "total"). */
int md_token_type_parse(const char *s, size_t len, enum md_token_type *out);

/* Days since 1970-01-01 (UTC civil calendar). */
int  md_pricing_day_parse(const char *s, size_t len, int32_t *day);  /* "YYYY-MM-DD" */
void md_pricing_day_fmt(int32_t day, char *buf, size_t buf_len);      /* buf >= 11 */

struct md_pricing;

/* Loads and validates a pricing document.  On success *out is a new
 * document; on failure MD_ECONFIG (MD_EIO, MD_ENOMEM) with every problem in
 * errs and *out untouched. */
int  md_pricing_load(const char *path, struct md_pricing **out, struct md_cfg_errors *errs);
/* The same from memory; name is used in messages.  JSON is accepted too
 * (a JSON document is YAML flow syntax), so the admin API can PUT the
 * md_pricing_to_json shape and get the same validation. */
int  md_pricing_load_buf(const char *name, const char *data, size_t len,
    struct md_pricing **out, struct md_cfg_errors *errs);
void md_pricing_free(struct md_pricing *p);       /* NULL is a no-op */

size_t md_pricing_model_count(const struct md_pricing *p);

/* Canonical JSON of the document (key order fixed, prices and percents as
 * shortest decimal strings, dates as YYYY-MM-DD, defaults made explicit),
 * for revisions and diffs.  Returns a new jansson object (json_t *, caller
 * json_decref()s), NULL when out of memory.  Declared as void * so this
 * header does not pull in jansson. */
void *md_pricing_to_json(const struct md_pricing *p);

/* What applies to one usage key.  Strings point into the md_pricing and
 * live as long as it does. */
struct md_price_match {
    const char *pricing_model;        /* NULL: no model for (cluster, day) */
    const char *currency;             /* NULL with pricing_model */
    long        item;                 /* index of the matching item; -1: none */
    const char *pattern;              /* the pattern that matched, or NULL */
    int         cache_included;       /* the effective cache rule (1/0) */
    int64_t     adjust_percent_nanos; /* the namespace's adjustment, or 0 */
    unsigned    priced_mask;          /* bit t set: the item prices type t */
    int64_t     price_nanos[MD_TOK_TYPES]; /* list price per million tokens */
};

/* Finds the pricing model and item for a usage key.  Returns MD_OK when an
 * item matched; MD_ENOTFOUND otherwise (out is then still filled: the
 * applying model, if any, with item -1, so unpriced usage can be split by
 * its cache rule).  namespace and provider may be NULL (no adjustment;
 * the model's default cache rule); NULL cluster or model finds nothing.
 * Cost: models and items are scanned in order (patterns are cheap: exact,
 * glob, or JIT regex with a match limit); adjustments by binary search.  A
 * rater pricing millions of keys may cache results per (cluster, day,
 * provider, model, namespace) for the life of one md_pricing. */
int md_pricing_lookup(const struct md_pricing *p, const char *cluster, int32_t day,
    const char *provider, const char *model, const char *namespace,
    struct md_price_match *out);

#define MD_PRICE_LINES_MAX 5

enum {
    MD_PRICE_ANOMALY_INPUT  = 0x1,  /* cached + cache_creation > input */
    MD_PRICE_ANOMALY_OUTPUT = 0x2   /* reasoning > output */
};

struct md_price_line {
    enum md_token_type token_type;
    uint64_t tokens;
    int      priced;                 /* 0: unpriced, prices and amount 0 */
    int64_t  list_unit_price_nanos;  /* per million, before adjustment */
    int64_t  unit_price_nanos;       /* per million, after adjustment */
    int64_t  amount_nanos;           /* tokens x unit_price / 1e6, half even */
};

struct md_price_result {
    struct md_price_line lines[MD_PRICE_LINES_MAX];
    size_t   line_count;
    unsigned anomalies;              /* MD_PRICE_ANOMALY_* */
    uint64_t unpriced_tokens;        /* sum of the unpriced lines' tokens */
    int64_t  amount_nanos;           /* sum of the lines */
};

/* Prices token counts (indexed by enum md_token_type, as reported) under a
 * match from md_pricing_lookup (any return), by THE PRICING RULE above.
 * Returns MD_OK, or MD_ELIMIT when an amount or the sum leaves int64 (out
 * is then undefined).  Pure. */
int md_pricing_price(const struct md_price_match *m, const uint64_t tokens[MD_TOK_TYPES],
    struct md_price_result *out, struct md_err *err);

#endif
