/* api.c: /api/v1 routing and the small handlers.  Stateless; runs on HTTP
 * pool threads.  Unknown query parameters are errors (400 naming them), like
 * unknown configuration keys: a misspelt filter must not silently widen an
 * answer. */
#include "api.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "scrape.h"
#include "store.h"

const char *
md_api_param(const struct md_api_req *req, const char *key)
{
    for (size_t i = 0; i < req->nquery; i++)
        if (strcmp(req->query[i].key, key) == 0)
            return req->query[i].value ? req->query[i].value : "";
    return NULL;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing past U+10FFFF), 0 when there is none. */
static size_t
utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)   /* also stops at the terminating NUL */
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void
md_api_msg_utf8(char *msg)
{
    unsigned char *p = (unsigned char *)msg;

    while (*p != '\0') {
        size_t n = utf8_seq(p);

        if (n == 0) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

void
md_api_error(struct md_api_resp *resp, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[512];
    json_t *o;
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    md_api_msg_utf8(msg);   /* a parameter name is any bytes; JSON strings are UTF-8 */
    o = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    md_free(resp->body);
    resp->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    resp->len = resp->body ? strlen(resp->body) : 0;
    resp->status = status;
    resp->content_type = "application/json";
    json_decref(o);
}

static int
check_params(const struct md_api_req *req, const char *const *allowed, struct md_api_resp *resp)
{
    if (req->query_overflow) {
        md_api_error(resp, 400, "bad_request", "more than %d query parameters",
            MD_API_QUERY_MAX);
        return 0;
    }
    for (size_t i = 0; i < req->nquery; i++) {
        int ok = 0;

        for (size_t j = 0; allowed[j] != NULL && !ok; j++)
            ok = strcmp(req->query[i].key, allowed[j]) == 0;
        for (size_t j = 0; j < i && ok; j++)
            if (strcmp(req->query[i].key, req->query[j].key) == 0) {
                md_api_error(resp, 400, "bad_request", "%.64s: given more than once",
                    req->query[i].key);
                return 0;
            }
        if (!ok) {
            md_api_error(resp, 400, "bad_request", "%.64s: unknown query parameter",
                req->query[i].key);
            return 0;
        }
    }
    return 1;
}

static int
method_get(const struct md_api_req *req, struct md_api_resp *resp)
{
    if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
        return 1;
    md_api_error(resp, 405, "method_not_allowed", "use GET");
    resp->allow = "GET, HEAD";
    return 0;
}

int
md_api_usage_request(const struct md_api_req *req, int64_t now_s, struct md_usage_query *q,
    struct md_api_resp *resp)
{
    static const char *const allowed[] = {
        "from", "to", "step", "group_by", "cluster", "namespace", "department", "model",
        "provider", "operation", "token_type", NULL,
    };
    struct md_err err = {0};

    if (!method_get(req, resp) || !check_params(req, allowed, resp))
        return 0;
    if (md_api_usage_parse(req, now_s, q, &err) != MD_OK) {
        md_api_error(resp, 400, "bad_request", "%s", err.msg);
        return 0;
    }
    q->tenant = req->tenant;    /* auth: a tenant token sees only its rows */
    return 1;
}

static void
handle_usage(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    struct md_usage_query q;
    struct md_err err = {0};
    int rc;

    if (!md_api_usage_request(req, md_now_realtime_ns() / 1000000000LL, &q, resp))
        return;
    rc = md_api_usage_json(ctx->app->store, &q, &resp->body, &resp->len, &err);
    if (rc == MD_ELIMIT) {
        md_api_error(resp, 400, "too_many_rows", "%s; narrow the range, step or group_by",
            err.msg);
        return;
    }
    if (rc != MD_OK) {
        md_api_error(resp, 500, "internal", "usage query failed");
        return;
    }
    resp->status = 200;
    resp->content_type = "application/json";
}

static void
handle_targets(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    static const char *const allowed[] = { NULL };

    if (!method_get(req, resp) || !check_params(req, allowed, resp))
        return;
    if (ctx->scrape == NULL) {
        md_api_error(resp, 503, "unavailable", "scraper not running");
        return;
    }
    resp->body = md_scrape_targets_json(ctx->scrape, &resp->len);
    if (resp->body == NULL) {
        md_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    resp->status = 200;
    resp->content_type = "application/json";
}

void
md_api_handle(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    resp->status = 500;
    resp->body = NULL;
    resp->len = 0;
    resp->allow = NULL;
    resp->content_type = "application/json";
    if (strcmp(req->path, "/api/v1/usage") == 0)
        handle_usage(ctx, req, resp);
    else if (strcmp(req->path, "/api/v1/targets") == 0)
        handle_targets(ctx, req, resp);
    else if (md_api_bills_handle(ctx, req, resp))
        ;
    else
        md_api_error(resp, 404, "not_found", "no such API endpoint");
}
