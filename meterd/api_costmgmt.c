/* api_costmgmt.c: the Alauda Cost Management 4.1 compatible usage API.
 *
 *   GET /platform/cost.alauda.io/v1beta1/costs/usage
 *   GET /platform/cost.alauda.io/v1beta1/projects/{project}/costs/usage
 *
 * Stateless; runs on HTTP pool threads.  Parameters and response fields are
 * those of Cost Management 4.1's "Usage [cost.alauda.io/v1beta1]" reference
 * (docs.alauda.io/costmanagement/4.1/apis/advanced_apis/usage.html).  That
 * reference names the parameters but not every semantic; where it is silent
 * meterd decides as follows (DECIDED marks each place below):
 *
 * - start, end: required, YYYY-MM-DD, UTC days, both inclusive (the
 *   reference's example pairs start=2025-06-01 with end=2025-06-30 and an
 *   item end of 20250630).  At most MD_CM_RANGE_DAYS_MAX days, else 400.
 * - step: day | week (Monday to Sunday, UTC) | month (calendar); default
 *   month.  An item's start/end (YYYYMMDD) are its bucket's first and last
 *   day clipped to [start, end].
 * - kind: project_all / namespace_all / cluster_all list every project
 *   (= namespace: meterd has no project objects), every (cluster, namespace)
 *   pair, or every cluster, one item per bucket each; project / namespace /
 *   cluster return the one entity named by `name` (then required).  With a
 *   *_all kind `name` still narrows to that entity.  A project item carries
 *   project = namespace = the namespace and cluster "" (a project spans
 *   clusters); a cluster item has project and namespace "".
 * - item: meterd's billing items are token items, "tokens.<token_type>"
 *   (tokens.input, tokens.output, tokens.cached_input,
 *   tokens.cache_creation_input, tokens.reasoning, or any other token type
 *   the gateway reports) and tokens.total (the sum of all token-type
 *   counters, like the usage API's totals: overlapping types are not
 *   deduplicated, which would need the pricing's per-provider cache rule);
 *   default tokens.total (the reference defaults to one item, Cpu).
 * - method: Usage (tokens counted), the only one; default Usage.
 * - currentPage >= 1 (default 1), pageSize 1..MD_CM_PAGE_SIZE_MAX (default
 *   20); a page past the end has no items and the true total.
 * - Items with zero tokens are not listed.  Items are ordered by bucket,
 *   then cluster, then namespace.
 * - usage is tokens (an integer).  cost is the priced amount from the
 *   pricing hook (cm_cost.c: the bill of the same days, open days
 *   provisional; decimal, currency units) or null when unpriced; currency
 *   is then "".
 * - Errors are Kubernetes Status objects; unknown parameters are 400 like
 *   everywhere in meterd's API.  A project without usage, an unknown one,
 *   and (for a tenant token) another tenant's all answer 200 with no items:
 *   the same bytes, so a tenant cannot probe for other tenants. */
#include "api.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "store.h"

#define BODY_MAX (8u << 20)
#define PROJECTS_PREFIX MD_CM_PREFIX "projects/"
#define USAGE_SUFFIX    "/costs/usage"

enum kind { K_PROJECT, K_NAMESPACE, K_CLUSTER, K_PROJECT_ALL, K_NAMESPACE_ALL, K_CLUSTER_ALL };
static const char *const kind_names[] = {
    "project", "namespace", "cluster", "project_all", "namespace_all", "cluster_all", NULL
};

static md_cm_cost_fn *cost_fn;
static void          *cost_arg;

void
md_api_costmgmt_set_cost_fn(md_cm_cost_fn *fn, void *arg)
{
    cost_fn = fn;
    cost_arg = arg;
}

/* The {project} segment of the project route, or NULL. */
static const char *
project_of(const char *path, size_t *len)
{
    size_t pl = strlen(PROJECTS_PREFIX), sl = strlen(USAGE_SUFFIX), n = strlen(path);
    const char *p;

    if (n <= pl + sl || strncmp(path, PROJECTS_PREFIX, pl) != 0 ||
        strcmp(path + n - sl, USAGE_SUFFIX) != 0)
        return NULL;
    p = path + pl;
    *len = n - pl - sl;
    if (memchr(p, '/', *len) != NULL)
        return NULL;
    return p;
}

int
md_api_costmgmt_match(const char *path)
{
    size_t len;

    return strcmp(path, MD_CM_PREFIX "costs/usage") == 0 || project_of(path, &len) != NULL;
}

const char *
md_api_status_reason(unsigned status)
{
    switch (status) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 413: return "RequestEntityTooLarge";
    case 429: return "TooManyRequests";
    case 503: return "ServiceUnavailable";
    default:  return "InternalError";
    }
}

void
md_api_status_error(struct md_api_resp *resp, unsigned status, const char *fmt, ...)
{
    char msg[512];
    json_t *o;
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    md_api_msg_utf8(msg);
    o = json_pack("{s:s,s:s,s:{},s:s,s:s,s:s,s:i}", "kind", "Status", "apiVersion", "v1",
        "metadata", "status", "Failure", "message", msg, "reason",
        md_api_status_reason(status), "code", (int)status);
    md_free(resp->body);
    resp->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    resp->len = resp->body ? strlen(resp->body) : 0;
    resp->status = status;
    resp->content_type = "application/json";
    json_decref(o);
}

/* Strict YYYY-MM-DD (the reference's format); md_parse_time checks the
 * calendar. */
static int
parse_day(const char *v, int64_t *out)
{
    struct md_err e = {0};

    if (strlen(v) != 10 || v[4] != '-' || v[7] != '-')
        return MD_EPARSE;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (v[i] < '0' || v[i] > '9'))
            return MD_EPARSE;
    return md_parse_time(v, 10, out, &e);
}

static int
parse_count(const char *v, uint64_t max, uint64_t *out)
{
    if (v[0] == '\0' || md_parse_u64(v, strlen(v), max, out) != MD_OK || *out == 0)
        return MD_EPARSE;
    return MD_OK;
}

/* Label values reach SQL as bound parameters; this only keeps them sane. */
static int
plain_name(const char *v, size_t len)
{
    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return 0;
    return 1;
}

struct render {
    struct md_buf b;
    int           kind;
    int64_t       from_s, to_s;        /* request range [from, to) */
    enum md_step  step;
    const char   *item;
    const char   *token_type;
    const struct md_tenant_filter *tenant;
    int           first;
};

static void
put_json_str(struct md_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    (void)md_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            (void)md_buf_putc(b, '\\');
            (void)md_buf_putc(b, (char)*p);
        } else if (*p < 0x20 || *p == 0x7f) {
            char u[7] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15], 0 };

            (void)md_buf_puts(b, u);
        } else {
            (void)md_buf_putc(b, (char)*p);
        }
    }
    (void)md_buf_putc(b, '"');
}

/* The first day after the bucket that starts at s. */
static int64_t
bucket_end(enum md_step step, int64_t s)
{
    char d[16];
    int64_t next = s + 86400;
    struct md_err e = {0};
    int y, m;

    if (step == MD_STEP_DAY)
        return s + 86400;
    if (step == MD_STEP_WEEK)
        return s + 7 * 86400;
    md_fmt_date(s, d, sizeof(d));
    y = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    m = (d[5] - '0') * 10 + (d[6] - '0') + 1;
    if (m == 13) {
        m = 1;
        y++;
    }
    (void)snprintf(d, sizeof(d), "%04d-%02d-01", y % 10000, m);
    if (md_parse_time(d, 10, &next, &e) != MD_OK)
        next = s + 28 * 86400;
    return next;
}

static void
put_day(struct md_buf *b, int64_t s)
{
    char d[16];

    md_fmt_date(s, d, sizeof(d));
    (void)md_buf_printf(b, "\"%.4s%.2s%.2s\"", d, d + 5, d + 8);
}

/* nanos -> a decimal JSON number in currency units, no floating point */
static void
put_nanos(struct md_buf *b, int64_t n)
{
    uint64_t a = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    uint64_t whole = a / 1000000000ULL, frac = a % 1000000000ULL;
    char f[16];
    int len = 9;

    (void)snprintf(f, sizeof(f), "%09llu", (unsigned long long)frac);
    while (len > 0 && f[len - 1] == '0')
        len--;
    (void)md_buf_printf(b, "%s%llu", n < 0 ? "-" : "", (unsigned long long)whole);
    if (len > 0)
        (void)md_buf_printf(b, ".%.*s", len, f);
}

static int
add_item(void *arg, const struct md_cm_row *r)
{
    struct render *rd = arg;
    int64_t s = r->bucket_s < rd->from_s ? rd->from_s : r->bucket_s;
    int64_t e = bucket_end(rd->step, r->bucket_s);
    const char *ns = r->namespace ? r->namespace : "";
    const char *cl = r->cluster ? r->cluster : "";
    const char *project = ns;
    struct md_cm_cost_key key;
    int64_t nanos = 0;
    char currency[8] = "";
    int priced = 0;

    if (e > rd->to_s)
        e = rd->to_s;
    if (cost_fn != NULL) {
        key.from_s = s;
        key.to_s = e;
        key.cluster = r->cluster;
        key.namespace = r->namespace;
        key.token_type = rd->token_type;
        key.tenant = rd->tenant;
        priced = cost_fn(cost_arg, &key, &nanos, currency) == MD_OK;
        currency[sizeof(currency) - 1] = '\0';
    }
    if (!priced)
        currency[0] = '\0';
    if (!rd->first)
        (void)md_buf_putc(&rd->b, ',');
    rd->first = 0;
    (void)md_buf_puts(&rd->b, "{\"project\":");
    put_json_str(&rd->b, project);
    (void)md_buf_puts(&rd->b, ",\"cluster\":");
    put_json_str(&rd->b, cl);
    (void)md_buf_puts(&rd->b, ",\"namespace\":");
    put_json_str(&rd->b, ns);
    (void)md_buf_puts(&rd->b, ",\"item\":");
    put_json_str(&rd->b, rd->item);
    (void)md_buf_printf(&rd->b, ",\"method\":\"Usage\",\"usage\":%llu,\"currency\":",
        (unsigned long long)r->tokens);
    put_json_str(&rd->b, currency);
    (void)md_buf_puts(&rd->b, ",\"cost\":");
    if (priced)
        put_nanos(&rd->b, nanos);
    else
        (void)md_buf_puts(&rd->b, "null");
    (void)md_buf_puts(&rd->b, ",\"start\":");
    put_day(&rd->b, s);
    (void)md_buf_puts(&rd->b, ",\"end\":");
    put_day(&rd->b, e - 86400);
    return md_buf_putc(&rd->b, '}');
}

int
md_api_costmgmt_request(const struct md_api_req *req, struct md_cm_request *out,
    struct md_api_resp *resp)
{
    static const char *const allowed[] = {
        "start", "end", "step", "kind", "name", "item", "method", "currentPage", "pageSize",
        NULL,
    };
    const char *start = md_api_param(req, "start"), *end = md_api_param(req, "end");
    const char *step = md_api_param(req, "step"), *kind = md_api_param(req, "kind");
    const char *name = md_api_param(req, "name"), *item = md_api_param(req, "item");
    const char *method = md_api_param(req, "method");
    const char *page_s = md_api_param(req, "currentPage");
    const char *size_s = md_api_param(req, "pageSize");
    struct md_cm_query *q = &out->q;
    const char *pp;
    size_t plen = 0;
    uint64_t page = 1, size = 20;
    int64_t from_s, last_s;
    int k = K_PROJECT_ALL;

    memset(out, 0, sizeof(*out));
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        md_api_status_error(resp, 405, "method not allowed; use GET");
        resp->allow = "GET, HEAD";
        return 0;
    }
    if (req->query_overflow) {
        md_api_status_error(resp, 400, "more than %d query parameters", MD_API_QUERY_MAX);
        return 0;
    }
    for (size_t i = 0; i < req->nquery; i++) {
        int ok = 0;

        for (size_t j = 0; allowed[j] != NULL && !ok; j++)
            ok = strcmp(req->query[i].key, allowed[j]) == 0;
        if (!ok) {
            md_api_status_error(resp, 400, "%.64s: unknown query parameter",
                req->query[i].key);
            return 0;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(req->query[i].key, req->query[j].key) == 0) {
                md_api_status_error(resp, 400, "%.64s: given more than once",
                    req->query[i].key);
                return 0;
            }
    }
    pp = project_of(req->path, &plen);
    if (pp != NULL) {
        if (!plain_name(pp, plen)) {
            md_api_status_error(resp, 400, "project: must be 1 to 253 printable bytes");
            return 0;
        }
        memcpy(out->project, pp, plen);
        out->project[plen] = '\0';
        q->namespace = out->project;
    }
    if (start == NULL || end == NULL) {
        md_api_status_error(resp, 400, "%s: required (YYYY-MM-DD)",
            start == NULL ? "start" : "end");
        return 0;
    }
    if (parse_day(start, &from_s) != MD_OK) {
        md_api_status_error(resp, 400, "start: expected a date YYYY-MM-DD");
        return 0;
    }
    if (parse_day(end, &last_s) != MD_OK) {
        md_api_status_error(resp, 400, "end: expected a date YYYY-MM-DD");
        return 0;
    }
    if (last_s < from_s) {
        md_api_status_error(resp, 400, "end: must not be before start");
        return 0;
    }
    if ((last_s - from_s) / 86400 + 1 > MD_CM_RANGE_DAYS_MAX) {
        md_api_status_error(resp, 400, "end: the range is longer than %d days",
            MD_CM_RANGE_DAYS_MAX);
        return 0;
    }
    q->from_s = from_s;
    q->to_s = last_s + 86400;
    q->step = MD_STEP_MONTH;
    if (step != NULL) {
        if (strcmp(step, "day") == 0)
            q->step = MD_STEP_DAY;
        else if (strcmp(step, "week") == 0)
            q->step = MD_STEP_WEEK;
        else if (strcmp(step, "month") != 0) {
            md_api_status_error(resp, 400, "step: must be day, week or month");
            return 0;
        }
    }
    if (kind != NULL) {
        for (k = 0; kind_names[k] != NULL; k++)
            if (strcmp(kind, kind_names[k]) == 0)
                break;
        if (kind_names[k] == NULL) {
            md_api_status_error(resp, 400, "kind: must be project, namespace, cluster, "
                "project_all, namespace_all or cluster_all");
            return 0;
        }
    }
    if (name != NULL && !plain_name(name, strlen(name))) {
        md_api_status_error(resp, 400, "name: must be 1 to 253 printable bytes");
        return 0;
    }
    if (name == NULL && k <= K_CLUSTER) {
        md_api_status_error(resp, 400, "name: required with kind=%s", kind_names[k]);
        return 0;
    }
    /* DECIDED: entities by kind (see the file comment) */
    switch (k) {
    case K_PROJECT: case K_PROJECT_ALL:
        q->by_namespace = 1;
        break;
    case K_NAMESPACE: case K_NAMESPACE_ALL:
        q->by_cluster = q->by_namespace = 1;
        break;
    default:
        q->by_cluster = 1;
        break;
    }
    if (name != NULL) {
        if (q->by_namespace) {
            /* on the project route a name other than the project matches
             * nothing: a restricted filter with empty lists has no rows */
            if (q->namespace == NULL)
                q->namespace = name;
            else if (strcmp(q->namespace, name) != 0)
                q->tenant.restricted = 1;
        } else {
            q->cluster = name;
        }
    }
    if (item == NULL)
        item = "tokens.total";
    if (strncmp(item, "tokens.", 7) != 0 || !plain_name(item + 7, strlen(item + 7)) ||
        strlen(item) > 64) {
        md_api_status_error(resp, 400, "item: must be tokens.total or tokens.<token type> "
            "(tokens.input, tokens.output, tokens.cached_input, "
            "tokens.cache_creation_input, tokens.reasoning)");
        return 0;
    }
    q->token_type = strcmp(item, "tokens.total") == 0 ? NULL : item + 7;
    if (method != NULL && strcmp(method, "Usage") != 0) {
        md_api_status_error(resp, 400, "method: must be Usage");
        return 0;
    }
    if (page_s != NULL && parse_count(page_s, MD_CM_PAGE_MAX, &page) != MD_OK) {
        md_api_status_error(resp, 400, "currentPage: must be an integer from 1 to %d",
            MD_CM_PAGE_MAX);
        return 0;
    }
    if (size_s != NULL && parse_count(size_s, MD_CM_PAGE_SIZE_MAX, &size) != MD_OK) {
        md_api_status_error(resp, 400, "pageSize: must be an integer from 1 to %d",
            MD_CM_PAGE_SIZE_MAX);
        return 0;
    }
    q->offset = (page - 1) * size;
    q->limit = size;
    if (!q->tenant.restricted)
        q->tenant = req->tenant;
    out->kind = k;
    out->item = item;
    out->page = page;
    out->size = size;
    return 1;
}

void
md_api_costmgmt_handle(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp)
{
    struct md_cm_request cr;
    struct md_cm_query *q = &cr.q;
    struct render rd;
    struct md_err err = {0};
    uint64_t total = 0;
    int rc, tn;
    size_t head;
    char t[32];

    resp->status = 500;
    resp->body = NULL;
    resp->len = 0;
    resp->allow = NULL;
    resp->content_type = "application/json";
    if (!md_api_costmgmt_request(req, &cr, resp))
        return;
    memset(&rd, 0, sizeof(rd));
    md_buf_init(&rd.b, BODY_MAX);
    rd.kind = cr.kind;
    rd.from_s = q->from_s;
    rd.to_s = q->to_s;
    rd.step = q->step;
    rd.item = cr.item;
    rd.token_type = q->token_type;
    rd.tenant = &req->tenant;
    rd.first = 1;
    (void)md_buf_printf(&rd.b, "{\"pageSize\":%llu,\"currentPage\":%llu,\"total\":",
        (unsigned long long)cr.size, (unsigned long long)cr.page);
    /* total is known only after the query: reserve 20 digits (UINT64_MAX)
     * and close the gap afterwards */
    head = rd.b.len;
    (void)md_buf_puts(&rd.b, "00000000000000000000,\"items\":[");
    rc = md_store_query_cm(ctx->app->store, q, add_item, &rd, &total, &err);
    if (rc == MD_OK)
        rc = md_buf_puts(&rd.b, "]}");
    if (rc != MD_OK) {
        md_buf_fini(&rd.b);
        if (rc == MD_ELIMIT)
            md_api_status_error(resp, 400, "answer too large; narrow the range or lower "
                "pageSize");
        else
            md_api_status_error(resp, 500, "usage query failed");
        return;
    }
    tn = snprintf(t, sizeof(t), "%llu", (unsigned long long)total);
    memcpy(rd.b.data + head, t, (size_t)tn);
    memmove(rd.b.data + head + tn, rd.b.data + head + 20, rd.b.len - head - 20 + 1);
    rd.b.len -= (size_t)(20 - tn);
    resp->body = md_buf_steal(&rd.b, &resp->len);
    if (resp->body == NULL) {
        md_api_status_error(resp, 500, "out of memory");
        return;
    }
    resp->status = 200;
}
