/* normalize.h: OpenTelemetry name normalisation for EAIG metrics.
 *
 * Pure functions, no state, safe from any thread.  Every spelling of an
 * instrument a scraper can receive maps to one canonical OTel instrument
 * plus a suffix role:
 *   gen_ai_client_token_usage_token_sum   (EAIG <= v0.4, unit suffix _token)
 *   gen_ai_client_token_usage_sum         (EAIG v0.5+)
 *   gen_ai.client.token.usage_token_sum   (quoted UTF-8, allow-utf-8)
 *   gen__ai_dot_client_dot_token_dot_usage__token_sum   (escaping=dots)
 *   U__gen__ai_2e_client_2e_token_2e_usage__token_sum   (escaping=values)
 * all become (MD_INST_TOKEN_USAGE, MD_ROLE_SUM).
 *
 * Label names: underscored names are ambiguous (department_id may be the
 * attribute department.id or a label really called department_id).  The
 * rule: two label names are the SAME dimension when their underscored keys
 * are equal, where the key is the name with escapings decoded, every
 * character outside [a-zA-Z0-9_] replaced by '_' and runs of '_' collapsed
 * (what EAIG v0.5+'s otlptranslator does).  So a configured "department.id"
 * matches a received department_id, department.id or department__id, and a
 * configured "department_id" matches the same three.  A configuration can
 * therefore not tell department.id and department_id apart; EAIG never emits
 * both for one header.
 *
 * Token accounting (never count the same tokens twice): EAIG's token
 * histogram gen_ai.client.token.usage is THE source of tokens (its _sum per
 * gen_ai.token.type); its _count is a record count.  The newer
 * gen_ai.client.inference.usage.* counters (MD_INST_INFERENCE_USAGE) count
 * the same requests' tokens again as counters: a consumer bills tokens from
 * token.usage and treats inference.usage as a second view of the same usage
 * (use it only for a target that has no token.usage family, and never add the
 * two). */
#ifndef MD_NORMALIZE_H
#define MD_NORMALIZE_H

#include <stddef.h>

#include "expfmt.h"

enum md_role {
    MD_ROLE_NONE = 0, MD_ROLE_SUM, MD_ROLE_COUNT, MD_ROLE_BUCKET, MD_ROLE_TOTAL,
    MD_ROLE_CREATED
};

enum md_instrument {
    MD_INST_UNKNOWN = 0,
    MD_INST_TOKEN_USAGE,          /* gen_ai.client.token.usage (histogram, tokens) */
    MD_INST_REQUEST_DURATION,     /* gen_ai.server.request.duration (s) */
    MD_INST_TTFT,                 /* gen_ai.server.time_to_first_token (s) */
    MD_INST_TPOT,                 /* gen_ai.server.time_per_output_token (s) */
    MD_INST_INFERENCE_USAGE,      /* gen_ai.client.inference.usage.* counters */
    MD_INST_TARGET_INFO,          /* target_info (resource attributes) */
    MD_INST_COUNT_
};

/* Longest name (decoded) the normaliser looks at; longer names are unknown. */
#define MD_NORMALIZE_NAME_MAX 512

/* Any spelling -> instrument + role.  detail (may be NULL) receives, for
 * MD_INST_INFERENCE_USAGE, the underscored part after
 * "gen_ai.client.inference.usage." without role suffix (e.g.
 * "input_tokens"), NUL-terminated and cut at detail_len - 1; "" otherwise.
 * Returns MD_OK when the instrument is known, MD_ENOTFOUND otherwise (role
 * is still set from the suffix, inst to MD_INST_UNKNOWN). */
int md_normalize_name(struct md_str name, enum md_instrument *inst, enum md_role *role,
    char *detail, size_t detail_len);

/* canonical OTel name ("gen_ai.client.token.usage"), "" for UNKNOWN */
const char *md_instrument_name(enum md_instrument inst);
/* "none", "sum", "count", "bucket", "total", "created" */
const char *md_role_name(enum md_role role);

/* Label name in any spelling -> canonical dotted OTel form
 * ("gen_ai_token_type" -> "gen_ai.token.type", "department_id" ->
 * "department.id", "U__gen__ai_2e_token_2e_type" -> "gen_ai.token.type").
 * Names that are not known OTel/EAIG attributes ("le", "otel_scope_name")
 * come back unchanged (escapes decoded).  Writes a NUL-terminated string
 * when it fits; returns the length it needs (without the NUL), like
 * snprintf: a result >= out_len means nothing usable was written. */
size_t md_normalize_label(struct md_str name, char *out, size_t out_len);

/* 1 when a received label name means the configured one (any spelling on
 * either side; see the key rule above). */
int md_normalize_label_eq(struct md_str received, const char *configured);

/* The comparison key of a label name (see above); same return convention as
 * md_normalize_label. */
size_t md_normalize_label_key(struct md_str name, char *out, size_t out_len);

#endif
