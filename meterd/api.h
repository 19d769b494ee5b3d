/* api.h: REST handlers, independent of the HTTP library.
 *
 * http.c parses the request (method, path, query) into an md_api_req and
 * sends whatever md_api_resp the handler fills.  Handlers run on HTTP pool
 * threads; they read through the store's read-only connections and never
 * write usage.  Errors are JSON {"error":{"code":"...","message":"..."}}
 * with the right status; messages never echo more of the request than the
 * name of the offending parameter. */
#ifndef MD_API_H
#define MD_API_H

#include <stddef.h>

#include <stdint.h>

#include "app.h"
#include "rating.h"
#include "store.h"
#include "util.h"

#define MD_API_QUERY_MAX   64        /* query parameters accepted */
#define MD_API_RANGE_MAX_S (366LL * 86400)
#define MD_API_ROWS_MAX    200000    /* rows in one answer */

struct md_scrape;

struct md_api_req {
    const char  *method;
    const char  *path;
    size_t       nquery;
    struct { const char *key; const char *value; } query[MD_API_QUERY_MAX];
    int          query_overflow;     /* more than MD_API_QUERY_MAX parameters */
    const char  *body;               /* request body (PUT/POST), "" when none */
    size_t       body_len;
    struct md_tenant_filter tenant;  /* from the token (auth); zero: all rows */
};

struct md_api_resp {
    unsigned    status;
    const char *content_type;
    char       *body;                /* md_malloc'd; sent then freed */
    size_t      len;
    const char *allow;               /* Allow header for 405 */
};

struct md_api_ctx {
    struct md_app    *app;
    struct md_scrape *scrape;
};

/* api_bills.c: bills, pricing, milestones, finalize, backfill.  Returns 1
 * when it handled req (resp filled), 0 for paths it does not serve. */
int  md_api_bills_handle(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp);

/* The request checks of GET /api/v1/bills without the query: method, the
 * allowed parameters (each at most once) and md_bill_query_parse.  Returns 1
 * with q and fmt filled (q->tenant points into req), or 0 with a JSON error
 * (405 or 400 "<param>: reason") in resp, whose body must start NULL.  Pure:
 * the fuzzer (tests/fuzz/fuzz_query.c) drives it. */
int  md_api_bills_request(const struct md_api_req *req, int32_t today,
    struct md_bill_query *q, enum md_bill_format *fmt, struct md_api_resp *resp);

/* Dispatches /api/... ; always fills resp. */
void md_api_handle(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp);
/* Fills resp with a JSON error. */
void md_api_error(struct md_api_resp *resp, unsigned status, const char *code,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Fills resp with a Kubernetes Status object (the Cost Management API's
 * error shape): {"kind":"Status","apiVersion":"v1","metadata":{},
 * "status":"Failure","message":...,"reason":...,"code":status}. */
void md_api_status_error(struct md_api_resp *resp, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Replaces every byte of msg that is not part of well-formed UTF-8 by '?'
 * (a parameter name echoed in a message, or one cut at "%.64s", would make
 * the JSON encoder refuse the message and the answer a 500). */
void md_api_msg_utf8(char *msg);
/* The Status reason for an HTTP status ("BadRequest", "Unauthorized"...). */
const char *md_api_status_reason(unsigned status);
/* The value of a query parameter, or NULL. */
const char *md_api_param(const struct md_api_req *req, const char *key);

/* Cost Management compatible API (api_costmgmt.c):
 * /platform/cost.alauda.io/v1beta1/costs/usage and
 * /platform/cost.alauda.io/v1beta1/projects/{project}/costs/usage. */
#define MD_CM_PREFIX        "/platform/cost.alauda.io/v1beta1/"
#define MD_CM_PAGE_SIZE_MAX 1000
#define MD_CM_PAGE_MAX      1000000
#define MD_CM_RANGE_DAYS_MAX 366

/* 1 when path is one of the two Cost Management routes. */
int  md_api_costmgmt_match(const char *path);
void md_api_costmgmt_handle(const struct md_api_ctx *ctx, const struct md_api_req *req,
    struct md_api_resp *resp);

/* A Cost Management request checked and parsed, before the query runs. */
struct md_cm_request {
    struct md_cm_query q;      /* q.namespace may point into project */
    int          kind;         /* index into project, namespace, cluster, *_all */
    const char  *item;         /* "tokens.total" or "tokens.<type>" (points into req) */
    uint64_t     page, size;   /* currentPage 1..MD_CM_PAGE_MAX, pageSize 1..MD_CM_PAGE_SIZE_MAX */
    char         project[256]; /* the {project} path segment, "" on the all route */
};
/* Method, parameters and path of a Cost Management request: 1 with out
 * filled, or 0 with a Status error (405 or 400 "<param>: reason") in resp,
 * whose body must start NULL.  Pure; the fuzzer drives it. */
int  md_api_costmgmt_request(const struct md_api_req *req, struct md_cm_request *out,
    struct md_api_resp *resp);

/* Pricing hook for the `cost` field.  k describes one answer row: the
 * bucket [from_s, to_s) clipped to the request, the row's cluster and
 * namespace (NULL: summed over all of them), the token type (NULL: all) and
 * the caller's tenant filter.  The function stores the priced amount in
 * integer nanos of the currency and the ISO 4217 code, and returns MD_OK;
 * MD_ENOTFOUND (or any other code) leaves the row unpriced ("cost": null,
 * "currency": "").  Called on HTTP threads, so it must be thread-safe. */
struct md_cm_cost_key {
    int64_t                        from_s, to_s;
    const char                    *cluster;
    const char                    *namespace;
    const char                    *token_type;
    const struct md_tenant_filter *tenant;
};
typedef int md_cm_cost_fn(void *arg, const struct md_cm_cost_key *k, int64_t *cost_nanos,
    char currency[8]);
/* Installs the hook; call before md_http_start (not synchronised). */
void md_api_costmgmt_set_cost_fn(md_cm_cost_fn *fn, void *arg);

#endif

/* GET /api/v1/usage pieces, shared with `meterd usage`. */
struct md_usage_query;
struct md_store;
/* Parses from, to, step, group_by and the dimension filters of req into q.
 * On a bad parameter returns MD_EPARSE with "<param>: reason" in err. */
int  md_api_usage_parse(const struct md_api_req *req, int64_t now_s,
    struct md_usage_query *q, struct md_err *err);
/* The request checks of GET /api/v1/usage without the query: method, the
 * allowed parameters (each at most once) and md_api_usage_parse.  Returns 1
 * with q filled, or 0 with a JSON error (405 or 400 "<param>: reason") in
 * resp, whose body must start NULL.  Pure; the fuzzer drives it. */
int  md_api_usage_request(const struct md_api_req *req, int64_t now_s,
    struct md_usage_query *q, struct md_api_resp *resp);
/* Runs q and renders the JSON document of GET /api/v1/usage. */
int  md_api_usage_json(struct md_store *st, const struct md_usage_query *q,
    char **body, size_t *len, struct md_err *err);
