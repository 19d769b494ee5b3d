/* auth.c: token decisions (pure) and the failure throttle (a fixed table of
 * MD_AUTH_THROTTLE_SLOTS addresses guarded by its mutex; the HTTP threads
 * share it).  Invariants: a token is held only long enough to hash it; the
 * digest comparison touches every configured digest whatever matches; the
 * throttle never grows and never sleeps: a refused client is told when to
 * come back (429 + Retry-After by the caller). */
#include "auth.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "sha256.h"
#include "util.h"

int
md_auth_match(const struct md_cfg_list *tokens, const char *tok, size_t len)
{
    const struct md_auth_token_cfg *t = tokens->v;
    uint8_t d[MD_SHA256_LEN];
    uint32_t matched = 0, idx = 0;

    md_sha256(tok, len, d);
    for (size_t i = 0; i < tokens->count; i++) {
        uint32_t diff = 0, eq, take;

        for (size_t j = 0; j < MD_SHA256_LEN; j++)
            diff |= (uint32_t)(d[j] ^ t[i].sha256[j]);
        /* eq = 1 iff diff == 0, without a branch on secret data */
        eq = ((diff - 1u) >> 8) & 1u;
        take = 0u - (eq & (matched ^ 1u));      /* all ones for the first match */
        idx = (idx & ~take) | ((uint32_t)i & take);
        matched |= eq;
    }
    explicit_bzero(d, sizeof(d));
    return matched ? (int)idx : -1;
}

int
md_auth_is_open(const struct md_config *cfg, const char *path)
{
    if (!cfg->auth.enabled)
        return 1;
    for (size_t i = 0; i < cfg->auth.open_paths.count; i++)
        if (strcmp(cfg->auth.open_paths.v[i], path) == 0)
            return 1;
    return 0;
}

/* RFC 6750 2.1: "Bearer" (case-insensitive scheme, RFC 7235), one or more
 * spaces, then a token68; anything else is not a bearer credential. */
static int
bearer_token(const char *h, const char **tok, size_t *len)
{
    size_t n;

    if (h == NULL || strncasecmp(h, "Bearer", 6) != 0 || h[6] != ' ')
        return 0;
    h += 6;
    while (*h == ' ')
        h++;
    n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    if (n == 0 || n > MD_AUTH_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' ||
              c == '='))
            return 0;
    }
    *tok = h;
    *len = n;
    return 1;
}

void
md_auth_decide(const struct md_config *cfg, const char *path, enum md_auth_need need,
    const char *authorization, struct md_auth_result *out)
{
    const struct md_auth_token_cfg *t;
    const char *tok;
    size_t len;
    int i;

    memset(out, 0, sizeof(*out));
    if (md_auth_is_open(cfg, path))
        return;
    if (authorization == NULL || authorization[0] == '\0') {
        out->status = 401;
        out->failure = MD_AUTH_MISSING;
        return;
    }
    if (!bearer_token(authorization, &tok, &len)) {
        out->status = 401;
        out->failure = MD_AUTH_INVALID;
        return;
    }
    i = md_auth_match(&cfg->auth.tokens, tok, len);
    if (i < 0) {
        out->status = 401;
        out->failure = MD_AUTH_INVALID;
        return;
    }
    t = (const struct md_auth_token_cfg *)cfg->auth.tokens.v + i;
    out->token = t;
    if ((need == MD_AUTH_NEED_ADMIN && t->scope != MD_CFG_SCOPE_ADMIN) ||
        (need == MD_AUTH_NEED_READER && t->scope == MD_CFG_SCOPE_TENANT)) {
        out->status = 403;
        out->failure = MD_AUTH_SCOPE;
    }
}

/* ---- throttle ---- */

struct slot {
    uint8_t  addr[MD_AUTH_ADDR_MAX];
    uint8_t  len;                /* 0: free */
    uint32_t failures;
    uint64_t last_ns;            /* last failure */
    uint64_t until_ns;           /* refused before this */
};

struct md_auth_throttle {
    pthread_mutex_t mu;
    uint64_t        limit, backoff_max_ns;
    size_t          used;        /* slots in use: lets the common case skip the scan */
    struct slot     slots[MD_AUTH_THROTTLE_SLOTS];
};

struct md_auth_throttle *
md_auth_throttle_new(uint64_t limit, uint64_t backoff_max_ms)
{
    struct md_auth_throttle *t = md_calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->limit = limit ? limit : 1;
    t->backoff_max_ns = (backoff_max_ms ? backoff_max_ms : 1000) * 1000000ULL;
    return t;
}

void
md_auth_throttle_free(struct md_auth_throttle *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->mu);
    md_free(t);
}

static struct slot *
find(struct md_auth_throttle *t, const void *addr, size_t len)
{
    if (t->used == 0 || len == 0 || len > MD_AUTH_ADDR_MAX)
        return NULL;
    for (size_t i = 0; i < MD_AUTH_THROTTLE_SLOTS; i++)
        if (t->slots[i].len == len && memcmp(t->slots[i].addr, addr, len) == 0)
            return &t->slots[i];
    return NULL;
}

uint64_t
md_auth_throttle_wait_s(struct md_auth_throttle *t, const void *addr, size_t len,
    uint64_t now_ns)
{
    uint64_t wait = 0;
    struct slot *s;

    pthread_mutex_lock(&t->mu);
    s = find(t, addr, len);
    if (s != NULL && s->until_ns > now_ns)
        wait = (s->until_ns - now_ns + 999999999ULL) / 1000000000ULL;
    pthread_mutex_unlock(&t->mu);
    return wait;
}

void
md_auth_throttle_fail(struct md_auth_throttle *t, const void *addr, size_t len,
    uint64_t now_ns)
{
    struct slot *s;

    if (len == 0 || len > MD_AUTH_ADDR_MAX)
        return;
    pthread_mutex_lock(&t->mu);
    s = find(t, addr, len);
    if (s == NULL) {
        struct slot *oldest = NULL;

        for (size_t i = 0; i < MD_AUTH_THROTTLE_SLOTS && s == NULL; i++) {
            if (t->slots[i].len == 0)
                s = &t->slots[i];
            else if (oldest == NULL || t->slots[i].last_ns < oldest->last_ns)
                oldest = &t->slots[i];
        }
        if (s == NULL)
            s = oldest;      /* full: forget the quietest address */
        else
            t->used++;
        memset(s, 0, sizeof(*s));
        memcpy(s->addr, addr, len);
        s->len = (uint8_t)len;
    }
    if (s->failures > 0 && now_ns > s->last_ns && now_ns - s->last_ns > 2 * t->backoff_max_ns)
        s->failures = 0;
    if (s->failures < UINT32_MAX)
        s->failures++;
    s->last_ns = now_ns;
    if (s->failures >= t->limit) {
        uint64_t n = s->failures - t->limit, d = 1000000000ULL;

        while (n-- > 0 && d < t->backoff_max_ns)
            d *= 2;
        if (d > t->backoff_max_ns)
            d = t->backoff_max_ns;
        s->until_ns = now_ns + d;
    }
    pthread_mutex_unlock(&t->mu);
}

void
md_auth_throttle_ok(struct md_auth_throttle *t, const void *addr, size_t len)
{
    struct slot *s;

    pthread_mutex_lock(&t->mu);
    s = find(t, addr, len);
    if (s != NULL) {
        memset(s, 0, sizeof(*s));
        t->used--;
    }
    pthread_mutex_unlock(&t->mu);
}
