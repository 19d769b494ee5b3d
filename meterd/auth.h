/* auth.h: bearer-token authentication, scopes and the per-address throttle.
 *
 * Decisions (md_auth_decide, md_auth_match) are pure functions of the
 * configuration and the request; they keep no state and never log (the
 * caller counts and logs, and never logs the token).  The throttle is a
 * bounded table shared by the HTTP threads under its own mutex.
 *
 * Rules:
 * - No auth section: everything is open (main warns at start).
 * - A path listed in auth.open_paths (exact match) needs no token.
 * - Otherwise "Authorization: Bearer <token>" is required: missing or
 *   unknown -> 401 (WWW-Authenticate: Bearer); a known token whose scope is
 *   too small for the route -> 403.
 * - Tokens are compared as SHA-256 digests against every configured digest,
 *   in constant time and without an early exit, so neither how much of a
 *   token matches nor which entry matched shows in the timing. */
#ifndef MD_AUTH_H
#define MD_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define MD_AUTH_TOKEN_MAX      4096   /* bytes of a presented token */
#define MD_AUTH_THROTTLE_SLOTS 1024   /* client addresses remembered */
#define MD_AUTH_ADDR_MAX       16     /* bytes of an address key (IPv6) */

/* What a route needs. */
enum md_auth_need {
    MD_AUTH_NEED_ANY = 0,   /* any valid token (tenants see their rows only) */
    MD_AUTH_NEED_READER,    /* all tenants' data: reader or admin */
    MD_AUTH_NEED_ADMIN      /* operating meterd: admin */
};

enum md_auth_failure { MD_AUTH_OK = 0, MD_AUTH_MISSING, MD_AUTH_INVALID, MD_AUTH_SCOPE };

struct md_auth_result {
    unsigned                        status;  /* 0 allowed, 401 or 403 */
    enum md_auth_failure            failure;
    const struct md_auth_token_cfg *token;   /* the matched token; NULL if none */
};

/* The index of the token whose digest equals SHA-256(tok[0..len)), or -1.
 * Always hashes once and compares against every entry. */
int  md_auth_match(const struct md_cfg_list *tokens, const char *tok, size_t len);

/* Decides a request.  authorization: the header's value or NULL.  Fills out
 * in every case. */
void md_auth_decide(const struct md_config *cfg, const char *path, enum md_auth_need need,
    const char *authorization, struct md_auth_result *out);

/* 1 when path is served without a token under cfg. */
int  md_auth_is_open(const struct md_config *cfg, const char *path);

/* ---- throttle: failed authentications per client address ---- */

struct md_auth_throttle;

/* limit: failures before an address is refused; then it is refused for 1 s,
 * doubling with each further failure up to backoff_max_ms.  An address with
 * no failure for 2 * backoff_max_ms starts afresh.  NULL on ENOMEM. */
struct md_auth_throttle *md_auth_throttle_new(uint64_t limit, uint64_t backoff_max_ms);
void     md_auth_throttle_free(struct md_auth_throttle *t);
/* 0 when addr may present a token now, else the seconds to wait (>= 1). */
uint64_t md_auth_throttle_wait_s(struct md_auth_throttle *t, const void *addr, size_t len,
    uint64_t now_ns);
/* Records a bad token from addr.  When the table is full the address seen
 * least recently is forgotten. */
void     md_auth_throttle_fail(struct md_auth_throttle *t, const void *addr, size_t len,
    uint64_t now_ns);
/* A good token from addr clears its record. */
void     md_auth_throttle_ok(struct md_auth_throttle *t, const void *addr, size_t len);

#endif
