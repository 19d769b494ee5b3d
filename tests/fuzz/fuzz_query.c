/* fuzz_query.c: libFuzzer target for the HTTP query-parameter parsing of
 * GET /api/v1/usage, GET /api/v1/bills and the Cost Management usage API
 * (md_api_usage_request, md_api_bills_request, md_api_costmgmt_request: the
 * method and parameter checks and the value parsing the handlers run before
 * any query).
 *
 * Input: byte 0 picks the endpoint (% 3: usage, bills, Cost Management) and
 * the method (bits 3-5: 6 HEAD, 7 POST, else GET).  For Cost Management, a
 * first line (up to '\n') when bit 2 is set is the {project} segment of the
 * project route.  The rest is a query string, split and unescaped the way
 * libmicrohttpd does for GET arguments ('&', first '=', '+' to space, then
 * MHD_http_unescape; a piece without '=' has a NULL value), at most
 * MD_API_QUERY_MAX parameters, then query_overflow as http.c's collect_arg.
 *
 * Invariants checked (abort() on violation):
 * - an error is a 405 only for a method other than GET/HEAD (and always
 *   then), otherwise a 400; its body is the endpoint's JSON error shape and
 *   its message starts with "<name>:" for a parameter name (one the endpoint
 *   knows, "project", or a key of the request), or is the "more than N
 *   query parameters" message when there were more;
 * - an accepted request had only known keys, each at most once, and no
 *   overflow; its ranges are within the limits (usage: from < to, at most
 *   366 days; bills: from_day < to_day, at most 366 days, a period at most
 *   31; Cost Management: whole UTC days, at most 366, page and pageSize in
 *   their ranges, offset = (page - 1) * pageSize), enums in range, filters
 *   equal to the request's values;
 * - the same request gives the same answer twice (no hidden state). */
#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rating.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* api.c's /api/v1/targets handler pulls in scrape.c, which asks main.c
 * (not part of the library) for the configuration; no scraper runs here. */
struct md_config *
md_app_config(struct md_app *app)
{
    (void)app;
    abort();
}

#define INPUT_MAX 8192
#define NOW_S     1795737600LL   /* 2026-11-27T00:00:00Z, a fixed "now" */

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "invariant failed: %s (line %d)\n", #c, \
    __LINE__); abort(); } } while (0)

static const char *const usage_keys[] = {
    "from", "to", "step", "group_by", "cluster", "namespace", "department", "model",
    "provider", "operation", "token_type", NULL,
};
static const char *const bills_keys[] = {
    "period", "from", "to", "cluster", "namespace", "department", "model", "token_type",
    "group_by", "format", NULL,
};
static const char *const cm_keys[] = {
    "start", "end", "step", "kind", "name", "item", "method", "currentPage", "pageSize",
    "project", NULL,
};

static int
in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], s) == 0)
            return 1;
    return 0;
}

/* libmicrohttpd's GET argument handling: '+' is a space, then %XX. */
static void
unescape(char *s)
{
    for (char *p = s; *p != '\0'; p++)
        if (*p == '+')
            *p = ' ';
    (void)MHD_http_unescape(s);
}

static void
split_query(char *qs, struct md_api_req *req)
{
    char *p = qs;

    while (p != NULL) {
        char *amp = strchr(p, '&'), *eq;

        if (amp != NULL)
            *amp = '\0';
        eq = strchr(p, '=');
        if (eq != NULL)
            *eq = '\0';
        if (req->nquery == MD_API_QUERY_MAX) {
            req->query_overflow = 1;
            return;
        }
        unescape(p);
        if (eq != NULL)
            unescape(eq + 1);
        req->query[req->nquery].key = p;
        req->query[req->nquery].value = eq != NULL ? eq + 1 : NULL;
        req->nquery++;
        p = amp != NULL ? amp + 1 : NULL;
    }
}

/* Every key known to the endpoint and none twice (what acceptance needs). */
static int
keys_clean(const struct md_api_req *req, const char *const *known)
{
    if (req->query_overflow)
        return 0;
    for (size_t i = 0; i < req->nquery; i++) {
        if (!in_list(known, req->query[i].key) || strcmp(req->query[i].key, "project") == 0)
            return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(req->query[i].key, req->query[j].key) == 0)
                return 0;
    }
    return 1;
}

static const char *
value_of(const struct md_api_req *req, const char *key)
{
    for (size_t i = 0; i < req->nquery; i++)
        if (strcmp(req->query[i].key, key) == 0)
            return req->query[i].value ? req->query[i].value : "";
    return NULL;
}

/* The message names a parameter: "<name>:" with a known name or a key of
 * the request (as the handlers print it, at most 64 bytes). */
static void
check_error(const struct md_api_req *req, const struct md_api_resp *resp, int cm,
    const char *const *known)
{
    int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    json_error_t jerr;
    json_t *doc;
    const char *msg;
    char head[80];
    int named = 0;

    CHECK(resp->body != NULL && resp->len == strlen(resp->body));
    CHECK(strcmp(resp->content_type, "application/json") == 0);
    CHECK(resp->status == (get ? 400u : 405u));
    CHECK((resp->status == 405) == (resp->allow != NULL));
    doc = json_loadb(resp->body, resp->len, 0, &jerr);
    CHECK(doc != NULL);
    if (cm) {
        CHECK(strcmp(json_string_value(json_object_get(doc, "kind")), "Status") == 0);
        CHECK(json_integer_value(json_object_get(doc, "code")) == (json_int_t)resp->status);
        msg = json_string_value(json_object_get(doc, "message"));
    } else {
        msg = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    }
    CHECK(msg != NULL);
    if (resp->status == 400) {
        if (req->query_overflow) {
            (void)snprintf(head, sizeof(head), "more than %d query parameters",
                MD_API_QUERY_MAX);
            named = strcmp(msg, head) == 0;
        }
        for (size_t i = 0; known[i] != NULL && !named; i++)
            named = strncmp(msg, known[i], strlen(known[i])) == 0 &&
                    msg[strlen(known[i])] == ':';
        for (size_t i = 0; i < req->nquery && !named; i++) {
            int n = snprintf(head, sizeof(head), "%.64s:", req->query[i].key);

            md_api_msg_utf8(head);      /* as the message was made printable */
            named = n > 0 && strncmp(msg, head, (size_t)n) == 0;
        }
        if (!named)
            fprintf(stderr, "error names no parameter: %s\n", msg);
        CHECK(named);
    }
    json_decref(doc);
}

static void
fuzz_usage(const struct md_api_req *req)
{
    struct md_usage_query q, q2;
    struct md_api_resp resp = {0}, resp2 = {0};
    int ok = md_api_usage_request(req, NOW_S, &q, &resp);
    int ok2 = md_api_usage_request(req, NOW_S, &q2, &resp2);

    CHECK(ok == ok2);
    if (!ok) {
        check_error(req, &resp, 0, usage_keys);
        CHECK(resp.status == resp2.status && strcmp(resp.body, resp2.body) == 0);
        md_free(resp.body);
        md_free(resp2.body);
        return;
    }
    CHECK(memcmp(&q, &q2, sizeof(q)) == 0);
    CHECK(resp.body == NULL);
    CHECK(keys_clean(req, usage_keys));
    CHECK(q.from_s < q.to_s);
    CHECK(q.to_s - q.from_s <= MD_API_RANGE_MAX_S);
    /* no lower bound on from_s: "to=1970-01-01" alone defaults from to the
     * day before, and an RFC 3339 offset can put 1970-01-01 before 0 */
    CHECK(q.step >= MD_STEP_NONE && q.step <= MD_STEP_MONTH);
    CHECK(q.group_mask < (1u << MD_DIM_COUNT));
    CHECK(q.rows_max == MD_API_ROWS_MAX);
    if (value_of(req, "from") == NULL && value_of(req, "to") == NULL)
        CHECK(q.from_s == NOW_S - NOW_S % 86400 && q.to_s == q.from_s + 86400);
    for (int d = 0; d < MD_DIM_COUNT; d++) {
        const char *v = value_of(req, md_dim_names[d]);

        CHECK((v == NULL) == (q.filter[d] == NULL));
        CHECK(v == NULL || (v[0] != '\0' && strcmp(v, q.filter[d]) == 0));
    }
}

static void
fuzz_bills(const struct md_api_req *req)
{
    struct md_bill_query q, q2;
    enum md_bill_format fmt, fmt2;
    struct md_api_resp resp = {0}, resp2 = {0};
    int32_t today = (int32_t)(NOW_S / 86400);
    int ok = md_api_bills_request(req, today, &q, &fmt, &resp);
    int ok2 = md_api_bills_request(req, today, &q2, &fmt2, &resp2);
    const char *period = value_of(req, "period");

    CHECK(ok == ok2);
    if (!ok) {
        check_error(req, &resp, 0, bills_keys);
        CHECK(resp.status == resp2.status && strcmp(resp.body, resp2.body) == 0);
        md_free(resp.body);
        md_free(resp2.body);
        return;
    }
    CHECK(memcmp(&q, &q2, sizeof(q)) == 0 && fmt == fmt2);
    CHECK(resp.body == NULL);
    CHECK(keys_clean(req, bills_keys));
    CHECK(q.from_day < q.to_day);
    CHECK(q.to_day - q.from_day <= MD_RATING_RANGE_DAYS);
    CHECK(fmt == MD_BILL_JSON || fmt == MD_BILL_CSV || fmt == MD_BILL_FOCUS);
    CHECK(q.group_mask < (1u << MD_BILL_DIMS));
    CHECK(fmt != MD_BILL_FOCUS || q.group_mask == 0);
    CHECK(q.tenant == &req->tenant);
    CHECK(q.lines_max == MD_RATING_LINES_MAX);
    if (period != NULL || (value_of(req, "from") == NULL && value_of(req, "to") == NULL)) {
        /* a calendar month: 28..31 days starting on the 1st */
        int64_t y;
        unsigned m, d;

        CHECK(q.to_day - q.from_day >= 28 && q.to_day - q.from_day <= 31);
        md_civil_from_days(q.from_day, &y, &m, &d);
        CHECK(d == 1);
        CHECK(strlen(q.period) == 7);
        if (period != NULL)
            CHECK(strcmp(period, q.period) == 0);
    } else {
        CHECK(q.period[0] == '\0');
    }
    for (int d = MD_BILL_CLUSTER; d < MD_BILL_DIMS; d++) {
        const char *v = value_of(req, md_bill_dim_names[d]);

        CHECK((v == NULL) == (q.filter[d] == NULL));
        CHECK(v == NULL || strcmp(v, q.filter[d]) == 0);
    }
}

static void
fuzz_cm(const struct md_api_req *req, const char *project)
{
    static struct md_cm_request r, r2;      /* static: 2 x ~300 bytes off the stack */
    struct md_api_resp resp = {0}, resp2 = {0};
    int ok = md_api_costmgmt_request(req, &r, &resp);
    int ok2 = md_api_costmgmt_request(req, &r2, &resp2);
    const char *name = value_of(req, "name");
    int64_t days;

    CHECK(ok == ok2);
    if (!ok) {
        check_error(req, &resp, 1, cm_keys);
        CHECK(resp.status == resp2.status && strcmp(resp.body, resp2.body) == 0);
        md_free(resp.body);
        md_free(resp2.body);
        return;
    }
    CHECK(resp.body == NULL);
    CHECK(keys_clean(req, cm_keys));
    CHECK(r.q.from_s % 86400 == 0 && r.q.to_s % 86400 == 0);
    CHECK(r.q.from_s >= 0 && r.q.from_s < r.q.to_s);
    days = (r.q.to_s - r.q.from_s) / 86400;
    CHECK(days >= 1 && days <= MD_CM_RANGE_DAYS_MAX);
    CHECK(r.q.step == MD_STEP_DAY || r.q.step == MD_STEP_WEEK || r.q.step == MD_STEP_MONTH);
    CHECK(r.page >= 1 && r.page <= MD_CM_PAGE_MAX);
    CHECK(r.size >= 1 && r.size <= MD_CM_PAGE_SIZE_MAX);
    CHECK(r.q.offset == (r.page - 1) * r.size && r.q.limit == r.size);
    CHECK(r.kind >= 0 && r.kind <= 5);
    CHECK(r.kind > 2 || name != NULL);
    CHECK(r.q.by_cluster || r.q.by_namespace);
    CHECK(strncmp(r.item, "tokens.", 7) == 0 && strlen(r.item) > 7 && strlen(r.item) <= 64);
    CHECK((r.q.token_type == NULL) == (strcmp(r.item, "tokens.total") == 0));
    CHECK(strcmp(r.project, project) == 0);
    if (project[0] != '\0') {
        /* the project route never widens past its project: another name
         * means no rows (restricted with empty lists) */
        CHECK(r.q.namespace != NULL && strcmp(r.q.namespace, project) == 0);
        if (name != NULL && r.q.by_namespace && strcmp(name, project) != 0)
            CHECK(r.q.tenant.restricted && r.q.tenant.ns_count == 0 && r.q.tenant.dept_count == 0);
    }
    r2.q.namespace = r.q.namespace;         /* may point into its own project[] */
    CHECK(memcmp(&r, &r2, sizeof(r)) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_api_req req;
    char buf[INPUT_MAX + 1], path[INPUT_MAX + 128], project[INPUT_MAX + 1] = "";
    char *qs;
    unsigned sel, meth;

    if (size < 1 || size > INPUT_MAX)
        return 0;
    sel = data[0] % 3;
    meth = (data[0] >> 3) & 7;
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    qs = buf;
    memset(&req, 0, sizeof(req));
    req.method = meth == 7 ? "POST" : meth == 6 ? "HEAD" : "GET";
    req.body = "";
    switch (sel) {
    case 0:
        req.path = "/api/v1/usage";
        break;
    case 1:
        req.path = "/api/v1/bills";
        break;
    default:
        (void)snprintf(path, sizeof(path), "%s", MD_CM_PREFIX "costs/usage");
        if (data[0] & 4) {
            char *nl = strchr(buf, '\n');

            if (nl == NULL)
                return 0;
            *nl = '\0';
            qs = nl + 1;
            (void)MHD_http_unescape(buf);   /* MHD hands the path over unescaped */
            (void)snprintf(path, sizeof(path), "%sprojects/%s/costs/usage", MD_CM_PREFIX, buf);
            if (!md_api_costmgmt_match(path))
                return 0;                   /* 404 before any parameter is looked at */
            /* what project_of() takes: between the prefix and the suffix */
            (void)snprintf(project, sizeof(project), "%s", buf);
            /* the match may cut elsewhere when the segment holds the suffix */
            if (strlen(path) != strlen(MD_CM_PREFIX "projects/") + strlen(buf) +
                    strlen("/costs/usage"))
                return 0;
            if (strlen(project) == 0 || strlen(project) > 253)
                project[0] = '\0';          /* rejected as "project:" before use */
        }
        req.path = path;
        break;
    }
    split_query(qs, &req);
    if (sel == 0)
        fuzz_usage(&req);
    else if (sel == 1)
        fuzz_bills(&req);
    else
        fuzz_cm(&req, project);
    return 0;
}
