/* litellm.h: LiteLLM price map -> meterd pricing YAML, exactly.
 *
 * LiteLLM's model_prices_and_context_window.json maps model names to objects
 * whose per-token USD prices are JSON numbers (1.5e-07, 0.00000015).  Those
 * become per-million decimal strings by shifting the decimal point of the
 * number's TEXT by 6 places: no double is ever involved, so 1.5e-07 is
 * exactly "0.15".  Keys read:
 *   input_cost_per_token            -> input
 *   cache_read_input_token_cost     -> cached_input
 *   cache_creation_input_token_cost -> cache_creation_input
 *   output_cost_per_token           -> output
 *   output_cost_per_reasoning_token -> reasoning
 * Entries with none of them (image, audio or per-second models) and the
 * documentation entry "sample_spec" are skipped and counted.  Model names are
 * emitted exactly: a name with * or ? or starting with "re:" becomes an
 * escaped anchored regex, so it still matches only itself.  Pure. */
#ifndef MD_LITELLM_H
#define MD_LITELLM_H

#include <stddef.h>

#include "buf.h"
#include "util.h"

#define MD_LITELLM_CLUSTERS_MAX 64
#define MD_LITELLM_NUM_MAX      64     /* bytes of one JSON number lexeme */

struct md_litellm_opts {
    const char        *name;             /* pricing model name */
    const char        *currency;         /* ISO 4217 */
    const char *const *clusters;
    size_t             cluster_count;    /* 1..MD_LITELLM_CLUSTERS_MAX */
    const char        *effective_from;   /* YYYY-MM-DD */
};

struct md_litellm_stats {
    size_t models;                       /* items written */
    size_t skipped;                      /* entries without a token price */
};

/* Converts the JSON text json[0..len) into a pricing YAML document appended
 * to out.  Returns MD_OK; MD_EPARSE for invalid JSON (message with
 * line:column) or a price that is negative, not a number, or has more than
 * 9 decimals per million (the message names the model and key); MD_ELIMIT
 * when out's cap is reached. */
int md_litellm_to_yaml(const char *json, size_t len, const struct md_litellm_opts *o,
    struct md_buf *out, struct md_litellm_stats *stats, struct md_err *err);

/* The number lexeme s[0..len) (JSON syntax) times 10^6 as the shortest
 * decimal string ("1.5e-07" -> "0.15"); out_len >= MD_LITELLM_NUM_MAX.
 * MD_EPARSE for a malformed or negative number or more than 9 decimals,
 * MD_ELIMIT for a value too large for md_money_parse. */
int md_litellm_shift6(const char *s, size_t len, char *out, size_t out_len, struct md_err *err);

#endif
