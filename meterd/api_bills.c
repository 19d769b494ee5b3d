/* api_bills.c: GET /api/v1/bills, GET/PUT /api/v1/pricing,
 * GET /api/v1/pricing/revisions (?diff=A..B), GET /api/v1/milestones,
 * POST /api/v1/periods/{YYYY-MM}/finalize, POST /api/v1/backfill.
 * Stateless; runs on HTTP pool threads; writes go through the store's
 * writer (md_store_call), so the HTTP thread waits for their commit.
 * Authentication is not done here: the actor recorded is "api". */
#include "api.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cfgtab.h"
#include "pricing.h"
#include "rating.h"
#include "store.h"

#define ACTOR "api"

static int
is_method(const struct md_api_req *req, struct md_api_resp *resp, const char *m,
    const char *allow)
{
    if (strcmp(req->method, m) == 0 || (strcmp(m, "GET") == 0 &&
            strcmp(req->method, "HEAD") == 0))
        return 1;
    md_api_error(resp, 405, "method_not_allowed", "use %s", allow);
    resp->allow = allow;
    return 0;
}

static int
only_params(const struct md_api_req *req, const char *const *allowed,
    struct md_api_resp *resp)
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
        if (!ok) {
            md_api_error(resp, 400, "bad_request", "%.64s: unknown query parameter",
                req->query[i].key);
            return 0;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(req->query[i].key, req->query[j].key) == 0) {
                md_api_error(resp, 400, "bad_request", "%.64s: given more than once",
                    req->query[i].key);
                return 0;
            }
    }
    return 1;
}

static void
ok_body(struct md_api_resp *resp, char *body, size_t len, const char *ctype)
{
    resp->status = 200;
    resp->body = body;
    resp->len = len;
    resp->content_type = ctype;
}

static void
db_failure(struct md_api_resp *resp, const struct md_err *err)
{
    if (err->rc == MD_ELIMIT)
        md_api_error(resp, 400, "too_many_rows", "%s; narrow the query", err->msg);
    else if (err->rc == MD_ENOTFOUND)
        md_api_error(resp, 404, "not_found", "%s", err->msg);
    else
        md_api_error(resp, 500, "internal", "query failed");
}

int
md_api_bills_request(const struct md_api_req *req, int32_t today, struct md_bill_query *q,
    enum md_bill_format *fmt, struct md_api_resp *resp)
{
    static const char *const allowed[] = {
        "period", "from", "to", "cluster", "namespace", "department", "model", "token_type",
        "group_by", "format", NULL,
    };
    const char *keys[MD_API_QUERY_MAX], *values[MD_API_QUERY_MAX];
    struct md_err err = {0};

    if (!is_method(req, resp, "GET", "GET, HEAD") || !only_params(req, allowed, resp))
        return 0;
    for (size_t i = 0; i < req->nquery; i++) {
        keys[i] = req->query[i].key;
        values[i] = req->query[i].value;
    }
    if (md_bill_query_parse(req->nquery, keys, values, today, q, fmt, &err) != MD_OK) {
        md_api_error(resp, 400, "bad_request", "%s", err.msg);
        return 0;
    }
    q->tenant = &req->tenant;   /* auth: a tenant token sees only its lines */
    return 1;
}

static void
handle_bills(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    struct md_bill_query q;
    enum md_bill_format fmt;
    struct md_bill bill;
    struct md_err err = {0};
    char *body = NULL;
    size_t len = 0;

    if (!md_api_bills_request(req, (int32_t)(md_now_realtime_ns() / 86400000000000ULL), &q,
            &fmt, resp))
        return;
    md_bill_init(&bill, q.lines_max);
    if (md_rating_bills(ctx->app->rating, ctx->app->store, &q, &bill, &err) != MD_OK ||
        md_bill_render(&bill, &q, fmt, &body, &len, &err) != MD_OK) {
        md_bill_fini(&bill);
        db_failure(resp, &err);
        return;
    }
    md_bill_fini(&bill);
    ok_body(resp, body, len, fmt == MD_BILL_JSON ? "application/json"
                                                 : "text/csv; charset=utf-8");
}

static void
config_errors(struct md_api_resp *resp, const struct md_cfg_errors *errs)
{
    json_t *o, *list = json_array();
    char *s;

    for (size_t i = 0; i < errs->count; i++)
        json_array_append_new(list, json_string(errs->msgs[i]));
    o = json_pack("{s:{s:s,s:s,s:o}}", "error", "code", "invalid_pricing", "message",
        errs->count ? errs->msgs[0] : "invalid pricing document", "errors", list);
    s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) {
        md_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    md_free(resp->body);
    resp->status = 400;
    resp->body = s;
    resp->len = strlen(s);
    resp->content_type = "application/json";
}

static void
handle_pricing(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    static const char *const none[] = { NULL };
    struct md_err err = {0};
    char *body = NULL;
    size_t len = 0;

    if (!only_params(req, none, resp))
        return;
    if (strcmp(req->method, "PUT") == 0) {
        static __thread struct md_cfg_errors errs;
        int64_t rev = 0;
        int created = 0;
        int rc;

        memset(&errs, 0, sizeof(errs));
        if (req->body_len == 0) {
            md_api_error(resp, 400, "bad_request", "the pricing document is the body");
            return;
        }
        rc = md_rating_put(ctx->app->rating, ctx->app->store, ACTOR, req->body, req->body_len,
            &errs, &rev, &created, &err);
        if (rc == MD_ECONFIG && errs.count > 0) {
            config_errors(resp, &errs);
            return;
        }
        if (rc != MD_OK) {
            md_api_error(resp, 500, "internal", "%s", err.msg);
            return;
        }
        body = NULL;
        {
            json_t *o = json_pack("{s:I,s:b}", "revision", (json_int_t)rev, "created",
                created);

            body = o ? json_dumps(o, JSON_COMPACT) : NULL;
            json_decref(o);
        }
        if (body == NULL) {
            md_api_error(resp, 500, "internal", "out of memory");
            return;
        }
        ok_body(resp, body, strlen(body), "application/json");
        return;
    }
    if (!is_method(req, resp, "GET", "GET, HEAD, PUT"))
        return;
    if (md_rating_current_json(ctx->app->rating, ctx->app->store, &body, &len, &err) != MD_OK) {
        db_failure(resp, &err);
        return;
    }
    ok_body(resp, body, len, "application/json");
}

static int
parse_i64(const char *s, size_t n, int64_t *out)
{
    uint64_t v;

    if (md_parse_u64(s, n, INT64_MAX, &v) != MD_OK || v == 0)
        return MD_EPARSE;
    *out = (int64_t)v;
    return MD_OK;
}

static void
handle_revisions(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    static const char *const allowed[] = { "diff", NULL };
    const char *diff;
    struct md_err err = {0};
    char *body = NULL;
    size_t len = 0;
    int rc;

    if (!is_method(req, resp, "GET", "GET, HEAD") || !only_params(req, allowed, resp))
        return;
    diff = md_api_param(req, "diff");
    if (diff != NULL) {
        const char *dots = strstr(diff, "..");
        int64_t a, b;

        if (dots == NULL || parse_i64(diff, (size_t)(dots - diff), &a) != MD_OK ||
            parse_i64(dots + 2, strlen(dots + 2), &b) != MD_OK) {
            md_api_error(resp, 400, "bad_request", "diff: must be A..B (revision numbers)");
            return;
        }
        rc = md_rating_diff_json(ctx->app->store, a, b, &body, &len, &err);
    } else {
        rc = md_rating_revisions_json(ctx->app->store, &body, &len, &err);
    }
    if (rc != MD_OK) {
        db_failure(resp, &err);
        return;
    }
    ok_body(resp, body, len, "application/json");
}

static void
handle_milestones(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    static const char *const allowed[] = { "from", "to", "cluster", NULL };
    const char *from = md_api_param(req, "from"), *to = md_api_param(req, "to");
    int32_t today = (int32_t)(md_now_realtime_ns() / 86400000000000ULL);
    int32_t fd = today - MD_RATING_RANGE_DAYS + 1, td = today + 1;
    struct md_err err = {0};
    char *body = NULL;
    size_t len = 0;

    if (!is_method(req, resp, "GET", "GET, HEAD") || !only_params(req, allowed, resp))
        return;
    if (from != NULL && md_pricing_day_parse(from, strlen(from), &fd) != MD_OK) {
        md_api_error(resp, 400, "bad_request", "from: must be YYYY-MM-DD");
        return;
    }
    if (to != NULL && md_pricing_day_parse(to, strlen(to), &td) != MD_OK) {
        md_api_error(resp, 400, "bad_request", "to: must be YYYY-MM-DD");
        return;
    }
    if (md_rating_milestones_json(ctx->app->store, fd, td, md_api_param(req, "cluster"),
            &body, &len, &err) != MD_OK) {
        db_failure(resp, &err);
        return;
    }
    ok_body(resp, body, len, "application/json");
}

static void
handle_finalize(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp, const char *period)
{
    static const char *const none[] = { NULL };
    struct md_err err = {0};
    size_t days = 0;
    int already = 0, rc;
    json_t *o;

    if (!is_method(req, resp, "POST", "POST") || !only_params(req, none, resp))
        return;
    rc = md_rating_finalize(ctx->app->rating, ctx->app->store, period, ACTOR, &already, &days,
        &err);
    if (rc == MD_EPARSE) {
        md_api_error(resp, 400, "bad_request", "%s", err.msg);
        return;
    }
    if (rc == MD_ESTATE) {
        md_api_error(resp, 409, "conflict", "%s", err.msg);
        return;
    }
    if (rc != MD_OK) {
        md_api_error(resp, 500, "internal", "finalize failed");
        return;
    }
    o = json_pack("{s:s,s:b,s:I}", "period", period, "already_finalized", already, "days",
        (json_int_t)days);
    resp->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (resp->body == NULL) {
        md_api_error(resp, 500, "internal", "out of memory");
        return;
    }
    ok_body(resp, resp->body, strlen(resp->body), "application/json");
}

static void
handle_backfill(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    static const char *const none[] = { NULL };
    json_error_t je;
    json_t *in, *v;
    const char *from, *to, *cluster = NULL;
    int32_t fd, td;
    int dry = 0;
    struct md_err err = {0};
    char *body = NULL;
    size_t len = 0;
    int rc;

    if (!is_method(req, resp, "POST", "POST") || !only_params(req, none, resp))
        return;
    in = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(in)) {
        json_decref(in);
        md_api_error(resp, 400, "bad_request", "body: a JSON object {from,to,cluster,dry_run}");
        return;
    }
    {
        const char *k;

        json_object_foreach(in, k, v) {
            if (strcmp(k, "from") != 0 && strcmp(k, "to") != 0 && strcmp(k, "cluster") != 0 &&
                strcmp(k, "dry_run") != 0) {
                md_api_error(resp, 400, "bad_request", "body: unknown key \"%.64s\"", k);
                json_decref(in);
                return;
            }
        }
    }
    from = json_string_value(json_object_get(in, "from"));
    to = json_string_value(json_object_get(in, "to"));
    v = json_object_get(in, "cluster");
    if (v != NULL && !json_is_null(v) && (cluster = json_string_value(v)) == NULL) {
        md_api_error(resp, 400, "bad_request", "cluster: must be a string");
        json_decref(in);
        return;
    }
    v = json_object_get(in, "dry_run");
    if (v != NULL && !json_is_boolean(v)) {
        md_api_error(resp, 400, "bad_request", "dry_run: must be true or false");
        json_decref(in);
        return;
    }
    dry = v != NULL && json_is_true(v);
    if (from == NULL || md_pricing_day_parse(from, strlen(from), &fd) != MD_OK ||
        to == NULL || md_pricing_day_parse(to, strlen(to), &td) != MD_OK) {
        md_api_error(resp, 400, "bad_request", "from, to: required, YYYY-MM-DD (to exclusive)");
        json_decref(in);
        return;
    }
    rc = md_rating_backfill(ctx->app->rating, ctx->app->store, fd, td, cluster, dry, NULL,
        NULL, &body, &len, &err);
    json_decref(in);
    if (rc == MD_EPARSE) {
        md_api_error(resp, 400, "bad_request", "%s", err.msg);
        return;
    }
    if (rc != MD_OK) {
        md_api_error(resp, 500, "internal", "backfill failed: %s", err.msg);
        return;
    }
    ok_body(resp, body, len, "application/json");
}

int
md_api_bills_handle(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    static const char fin_prefix[] = "/api/v1/periods/";
    const char *p = req->path;

    if (strcmp(p, "/api/v1/bills") != 0 && strcmp(p, "/api/v1/pricing") != 0 &&
        strcmp(p, "/api/v1/pricing/revisions") != 0 && strcmp(p, "/api/v1/milestones") != 0 &&
        strcmp(p, "/api/v1/backfill") != 0 && strncmp(p, fin_prefix, sizeof(fin_prefix) - 1) != 0)
        return 0;
    if (ctx->app->rating == NULL) {
        md_api_error(resp, 503, "unavailable", "rating is not running");
        return 1;
    }
    if (strcmp(p, "/api/v1/bills") == 0)
        handle_bills(ctx, req, resp);
    else if (strcmp(p, "/api/v1/pricing") == 0)
        handle_pricing(ctx, req, resp);
    else if (strcmp(p, "/api/v1/pricing/revisions") == 0)
        handle_revisions(ctx, req, resp);
    else if (strcmp(p, "/api/v1/milestones") == 0)
        handle_milestones(ctx, req, resp);
    else if (strcmp(p, "/api/v1/backfill") == 0)
        handle_backfill(ctx, req, resp);
    else {
        const char *rest = p + sizeof(fin_prefix) - 1, *slash = strchr(rest, '/');
        char period[8];

        if (slash == NULL || strcmp(slash, "/finalize") != 0 || slash - rest != 7) {
            md_api_error(resp, 404, "not_found", "no such API endpoint");
            return 1;
        }
        memcpy(period, rest, 7);
        period[7] = '\0';
        handle_finalize(ctx, req, resp, period);
    }
    return 1;
}
