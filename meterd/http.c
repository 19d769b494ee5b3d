/* http.c: the HTTP server on libmicrohttpd.
 *
 * Threads: MHD's internal polling thread plus a pool of
 * http.threads workers call handle().  Per-request state is a small struct
 * hung on MHD's request closure and freed by request_done().  The request
 * counters are a fixed [route][code] array of atomics, so cardinality is
 * bounded by construction: unknown paths count as route="other".
 *
 * Rules: unknown paths 404, wrong methods 405 with Allow; under /api/ every
 * error is JSON {"error":{"code":"...","message":"..."}}, under the Cost
 * Management prefix a Kubernetes Status; error bodies never echo the request
 * (OpenBSD httpd).
 *
 * Auth (auth.h): every path not in auth.open_paths needs a bearer token of
 * the scope the route table below names; the decision is taken before any
 * handler runs, and a tenant token reaches the handlers only as a
 * md_tenant_filter that the store's queries apply.  Bad tokens are counted
 * per client address; past auth.failure_limit the address is answered 429
 * with Retry-After (no sleeping in the pool).  Tokens are never logged.
 *
 * Slow clients: libmicrohttpd's connection timeout counts from the last byte
 * received, so a client sending one byte per second would hold a connection
 * (and a per-address slot) for ever.  Each connection therefore also has a
 * deadline, http.connection_timeout after it opened or after its previous
 * response: the whole next request (headers and body) must have arrived by
 * then.  The deadline thread shuts down the socket of a connection past its
 * deadline, and libmicrohttpd closes it on the EOF that follows.  Connections
 * are tracked in a list under h->mu from MHD's STARTED to its CLOSED
 * notification, which comes before MHD closes the descriptor: a socket in
 * the list is always still open, so shutdown() never hits a reused number. */
#define MD_MODULE "http"
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "../exporters/prom_text.h"
#include "../exporters/prometheus.h"
#include "api.h"
#include "auth.h"
#include "log.h"
#include "selfmetrics.h"
#include "store.h"

#define MD_HTTP_BODY_MAX   (1u << 20)   /* request body bytes accepted (PUT/POST) */
#define MD_HTTP_TICK_NS    (100u * 1000u * 1000u)   /* deadline thread's period */

enum route_id { R_HEALTHZ, R_READYZ, R_METRICS, R_API, R_COSTMGMT, R_OTHER, R_COUNT };
static const char *const route_names[R_COUNT] = {
    "/healthz", "/readyz", "/metrics", "/api", "/platform/cost.alauda.io", "other"
};

/* Every path served, with the scope it needs when it is not open.  Exported
 * (md_http_route_path) so the tests can hold schema/openapi.yaml to it. */
static const struct {
    const char        *path;        /* {project}: one path segment */
    int                id;
    enum md_auth_need  need;
} routes[] = {
    { "/healthz", R_HEALTHZ, MD_AUTH_NEED_ANY },
    { "/readyz", R_READYZ, MD_AUTH_NEED_ANY },
    { "/metrics", R_METRICS, MD_AUTH_NEED_READER },     /* every tenant's usage */
    { "/api/v1/usage", R_API, MD_AUTH_NEED_ANY },        /* tenant-filtered */
    { "/api/v1/targets", R_API, MD_AUTH_NEED_ADMIN },    /* sidecar addresses */
    { "/api/v1/bills", R_API, MD_AUTH_NEED_ANY },        /* tenant-filtered */
    { "/api/v1/pricing", R_API, MD_AUTH_NEED_ADMIN },    /* PUT changes every bill */
    { "/api/v1/pricing/revisions", R_API, MD_AUTH_NEED_ADMIN },
    { "/api/v1/milestones", R_API, MD_AUTH_NEED_READER },
    { "/api/v1/backfill", R_API, MD_AUTH_NEED_ADMIN },
    { "/api/v1/periods/{month}/finalize", R_API, MD_AUTH_NEED_ADMIN },
    { MD_CM_PREFIX "costs/usage", R_COSTMGMT, MD_AUTH_NEED_ANY },
    { MD_CM_PREFIX "projects/{project}/costs/usage", R_COSTMGMT, MD_AUTH_NEED_ANY },
};
#define ROUTES_COUNT (sizeof(routes) / sizeof(routes[0]))

enum { F_MISSING, F_INVALID, F_SCOPE, F_THROTTLED, F_COUNT };
static const char *const failure_names[F_COUNT] = { "missing", "invalid", "scope", "throttled" };
static atomic_ullong auth_failures[F_COUNT];

static const unsigned codes[] = { 200, 400, 401, 403, 404, 405, 409, 413, 429, 431, 500, 503 };
#define CODE_COUNT (sizeof(codes) / sizeof(codes[0]) + 1)   /* last: any other */

static atomic_ullong req_counts[R_COUNT][CODE_COUNT];
static atomic_ullong deadline_cuts;     /* connections shut down at their deadline */

/* One open connection (MHD's socket context), in h->conns under h->mu. */
struct conn {
    struct conn *prev, *next;
    int          fd;
    uint64_t     deadline_ns;   /* monotonic; 0: a request is being answered */
};

struct md_http {
    struct MHD_Daemon       *d;
    struct md_app           *app;
    struct md_auth_throttle *throttle;
    int                      send_buffer;   /* SO_SNDBUF; 0: the kernel's autotuning */
    uint64_t                 timeout_ns;    /* http.connection_timeout */
    pthread_mutex_t          mu;            /* conns, every deadline_ns, stopping */
    pthread_cond_t           cv;            /* wakes the deadline thread to stop */
    struct conn             *conns;         /* at most http.max_connections */
    int                      stopping;
    int                      thread_started;
    pthread_t                thread;
};

struct request {
    int    route;
    enum md_auth_need need;
    struct md_api_req api;
    size_t body_len;
    int    body_too_large;
    struct md_buf body;       /* API requests: the body, at most MD_HTTP_BODY_MAX */
};

static size_t
code_index(unsigned code)
{
    for (size_t i = 0; i < CODE_COUNT - 1; i++)
        if (codes[i] == code)
            return i;
    return CODE_COUNT - 1;
}

const char *
md_http_route_path(size_t i)
{
    return i < ROUTES_COUNT ? routes[i].path : NULL;
}

int
md_http_render_metrics(struct md_buf *b)
{
    int rc = md_prom_family(b, "meterd_auth_failures_total", "counter",
        "Requests refused by authentication: missing or invalid token, scope too small, "
        "or client address throttled after repeated invalid tokens.");

    for (int f = 0; f < F_COUNT && rc == MD_OK; f++) {
        struct md_prom_label l[] = { { "reason", failure_names[f], 0 } };

        rc = md_prom_sample_u64(b, "meterd_auth_failures_total", l, 1,
            atomic_load(&auth_failures[f]));
    }
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_http_connection_deadline_cuts_total", "counter",
            "Connections closed because a whole request had not arrived within "
            "http.connection_timeout of the connection opening or of its previous response.");
    if (rc == MD_OK)
        rc = md_prom_sample_u64(b, "meterd_http_connection_deadline_cuts_total", NULL, 0,
            atomic_load(&deadline_cuts));
    if (rc == MD_OK)
        rc = md_prom_family(b, "meterd_http_requests_total", "counter",
            "HTTP requests answered, by route and status code.");

    for (int r = 0; r < R_COUNT && rc == MD_OK; r++) {
        for (size_t c = 0; c < CODE_COUNT && rc == MD_OK; c++) {
            uint64_t n = atomic_load(&req_counts[r][c]);
            char code[8];
            struct md_prom_label l[] = {
                { "path", route_names[r], 0 }, { "code", code, 0 },
            };

            if (n == 0)
                continue;
            if (c == CODE_COUNT - 1)
                (void)snprintf(code, sizeof(code), "other");
            else
                (void)snprintf(code, sizeof(code), "%u", codes[c]);
            rc = md_prom_sample_u64(b, "meterd_http_requests_total", l, 2, n);
        }
    }
    return rc;
}

/* Headers some answers add; NULL members are left out. */
struct extra {
    const char *www_authenticate;
    const char *retry_after;
};

static enum MHD_Result send_resp_x(struct MHD_Connection *c, int route, unsigned status,
    const char *ctype, struct MHD_Response *resp, const char *allow, const struct extra *x);

static enum MHD_Result
send_buf_x(struct MHD_Connection *c, int route, unsigned status, const char *ctype,
    char *data, size_t len, const char *allow, const struct extra *x)
{
    struct MHD_Response *resp;

    /* takes ownership of data (allocated with malloc via md_*) */
    resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        md_free(data);
        return MHD_NO;
    }
    return send_resp_x(c, route, status, ctype, resp, allow, x);
}

/* Adds the common headers, queues resp (consumed) and counts it. */
static enum MHD_Result
send_resp_x(struct MHD_Connection *c, int route, unsigned status, const char *ctype,
    struct MHD_Response *resp, const char *allow, const struct extra *x)
{
    enum MHD_Result ret;

    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    (void)MHD_add_response_header(resp, "Cache-Control", "no-store");
    (void)MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (allow != NULL)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (x != NULL && x->www_authenticate != NULL)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
            x->www_authenticate);
    if (x != NULL && x->retry_after != NULL)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, x->retry_after);
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add(&req_counts[route][code_index(status)], 1);
    return ret;
}

static enum MHD_Result
send_buf(struct MHD_Connection *c, int route, unsigned status, const char *ctype,
    char *data, size_t len, const char *allow)
{
    return send_buf_x(c, route, status, ctype, data, len, allow, NULL);
}

static enum MHD_Result
send_text(struct MHD_Connection *c, int route, unsigned status, const char *text,
    const char *allow)
{
    char *d = md_strdup(text);

    if (d == NULL)
        return MHD_NO;
    return send_buf(c, route, status, "text/plain; charset=utf-8", d, strlen(d), allow);
}

static const char *
json_code_for(unsigned status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 429: return "too_many_requests";
    case 503: return "unavailable";
    default:  return "internal";
    }
}

/* The route of a path and the scope it needs; unknown paths need a token
 * too (when auth is on), so that 404s do not map the API for strangers. */
static int
route_of(const char *url, enum md_auth_need *need)
{
    *need = MD_AUTH_NEED_ANY;
    for (size_t i = 0; i < ROUTES_COUNT; i++) {
        if (strcmp(url, routes[i].path) == 0) {
            *need = routes[i].need;
            return routes[i].id;
        }
    }
    if (md_api_costmgmt_match(url))
        return R_COSTMGMT;
    if (strncmp(url, "/api/v1/periods/", 16) == 0) {
        *need = MD_AUTH_NEED_ADMIN;     /* /api/v1/periods/{month}/finalize */
        return R_API;
    }
    if (strcmp(url, "/api") == 0 || strncmp(url, "/api/", 5) == 0)
        return R_API;
    if (strncmp(url, MD_CM_PREFIX, strlen(MD_CM_PREFIX)) == 0)
        return R_COSTMGMT;
    return R_OTHER;
}

/* An error in the shape of the route's family. */
static enum MHD_Result
send_error_x(struct MHD_Connection *c, int route, unsigned status, const char *message,
    const char *allow, const struct extra *x)
{
    struct md_api_resp r = {0};

    if (route == R_COSTMGMT) {
        md_api_status_error(&r, status, "%s", message);
        if (r.body == NULL)
            return MHD_NO;
        return send_buf_x(c, route, status, r.content_type, r.body, r.len, allow, x);
    }
    if (route == R_API) {
        md_api_error(&r, status, json_code_for(status), "%s", message);
        if (r.body == NULL)
            return MHD_NO;
        return send_buf_x(c, route, status, r.content_type, r.body, r.len, allow, x);
    }
    {
        struct md_buf b;
        size_t len;
        char *d;

        md_buf_init(&b, 1024);
        (void)md_buf_printf(&b, "%s\n", message);
        d = md_buf_steal(&b, &len);
        if (d == NULL)
            return MHD_NO;
        return send_buf_x(c, route, status, "text/plain; charset=utf-8", d, len, allow, x);
    }
}

static size_t
client_key(struct MHD_Connection *c, uint8_t key[MD_AUTH_ADDR_MAX])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

/* Runs the auth decision; MHD_YES with *done = 0 lets the request through
 * (tenant filled for tenant tokens), otherwise the refusal is queued. */
static enum MHD_Result
authorize(struct md_http *h, struct MHD_Connection *c, struct request *rq,
    const struct md_config *cfg, const char *url, int *done)
{
    struct md_auth_result ar;
    uint8_t key[MD_AUTH_ADDR_MAX];
    size_t klen;
    uint64_t now = md_now_monotonic_ns(), wait;
    char ra[24];
    struct extra x = { 0 };

    *done = 0;
    if (md_auth_is_open(cfg, url))
        return MHD_YES;
    *done = 1;
    klen = client_key(c, key);
    wait = h->throttle ? md_auth_throttle_wait_s(h->throttle, key, klen, now) : 0;
    if (wait > 0) {
        atomic_fetch_add(&auth_failures[F_THROTTLED], 1);
        (void)snprintf(ra, sizeof(ra), "%llu", (unsigned long long)wait);
        x.retry_after = ra;
        return send_error_x(c, rq->route, 429, "too many failed authentications from this "
            "address; retry later", NULL, &x);
    }
    md_auth_decide(cfg, url, rq->need,
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &ar);
    if (ar.status == 401) {
        int invalid = ar.failure == MD_AUTH_INVALID;

        atomic_fetch_add(&auth_failures[invalid ? F_INVALID : F_MISSING], 1);
        if (invalid && h->throttle != NULL)
            md_auth_throttle_fail(h->throttle, key, klen, now);
        /* RFC 6750 3: a challenge always; error= only when a token was sent */
        x.www_authenticate = invalid ? "Bearer realm=\"meterd\", error=\"invalid_token\""
                                     : "Bearer realm=\"meterd\"";
        return send_error_x(c, rq->route, 401, invalid ? "invalid bearer token"
            : "a bearer token is required (Authorization: Bearer <token>)", NULL, &x);
    }
    if (ar.status == 403) {
        atomic_fetch_add(&auth_failures[F_SCOPE], 1);
        md_log_debug("token \"%s\" (scope %s) refused on %s", ar.token->name,
            ar.token->scope == MD_CFG_SCOPE_TENANT ? "tenant" : "reader", route_names[rq->route]);
        return send_error_x(c, rq->route, 403, "this token's scope does not allow this "
            "endpoint", NULL, NULL);
    }
    if (h->throttle != NULL && klen > 0)
        md_auth_throttle_ok(h->throttle, key, klen);
    if (ar.token != NULL && ar.token->scope == MD_CFG_SCOPE_TENANT) {
        rq->api.tenant.restricted = 1;
        rq->api.tenant.ns = ar.token->namespaces.v;
        rq->api.tenant.ns_count = ar.token->namespaces.count;
        rq->api.tenant.dept = ar.token->departments.v;
        rq->api.tenant.dept_count = ar.token->departments.count;
    }
    *done = 0;
    return MHD_YES;
}

static void
release_parts(void *cls)
{
    md_promexp_parts_release(cls);
    md_free(cls);
}

/* Zero copy: the usage body is the exporter's cached bytes, shared by every
 * scrape of the same snapshot and released when MHD is done sending. */
static enum MHD_Result
serve_metrics(struct md_http *h, struct MHD_Connection *c)
{
    struct md_promexp_parts *p = md_calloc(1, sizeof(*p));
    struct MHD_Response *resp;
    struct MHD_IoVec iov[2];

    if (p == NULL)
        return MHD_NO;
    if (md_promexp_render_parts(h->app, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
            MHD_HTTP_HEADER_ACCEPT), MHD_lookup_connection_value(c, MHD_HEADER_KIND,
            MHD_HTTP_HEADER_ACCEPT_ENCODING), p) != MD_OK) {
        md_free(p);
        return send_text(c, R_METRICS, 500, "cannot render metrics\n", NULL);
    }
    iov[0].iov_base = p->usage;
    iov[0].iov_len = p->usage_len;
    iov[1].iov_base = p->tail;
    iov[1].iov_len = p->tail_len;
    resp = MHD_create_response_from_iovec(iov, 2, release_parts, p);
    if (resp == NULL) {
        release_parts(p);
        return MHD_NO;
    }
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept, Accept-Encoding");
    if (p->encoding != NULL)
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, p->encoding);
    return send_resp_x(c, R_METRICS, 200, p->ctype, resp, NULL, NULL);
}

static enum MHD_Result
collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct md_api_req *r = cls;

    (void)kind;
    if (r->nquery == MD_API_QUERY_MAX) {
        r->query_overflow = 1;
        return MHD_NO;
    }
    r->query[r->nquery].key = key;
    r->query[r->nquery].value = value;
    r->nquery++;
    return MHD_YES;
}

static enum MHD_Result
serve_api(struct md_http *h, struct MHD_Connection *c, struct request *rq, const char *url,
    const char *method)
{
    struct md_api_ctx ctx = { .app = h->app, .scrape = h->app->scrape };
    struct md_api_resp resp;

    rq->api.method = method;
    rq->api.path = url;
    rq->api.body = rq->body.len ? rq->body.data : "";
    rq->api.body_len = rq->body.len;
    (void)MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &rq->api);
    if (rq->route == R_COSTMGMT) {
        if (!md_api_costmgmt_match(url))
            return send_error_x(c, R_COSTMGMT, 404, "no such endpoint", NULL, NULL);
        md_api_costmgmt_handle(&ctx, &rq->api, &resp);
    } else {
        md_api_handle(&ctx, &rq->api, &resp);
    }
    if (resp.body == NULL)
        return send_error_x(c, rq->route, 500, "out of memory", NULL, NULL);
    return send_buf(c, rq->route, resp.status, resp.content_type, resp.body, resp.len,
        resp.allow);
}

static enum MHD_Result
dispatch(struct md_http *h, struct MHD_Connection *c, struct request *rq, const char *url,
    const char *method)
{
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
              strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    switch (rq->route) {
    case R_HEALTHZ:
        if (!get)
            return send_text(c, rq->route, 405, "method not allowed\n", "GET, HEAD");
        return send_text(c, rq->route, 200, "ok\n", NULL);
    case R_READYZ: {
        struct md_store_stats ss;

        if (!get)
            return send_text(c, rq->route, 405, "method not allowed\n", "GET, HEAD");
        if (!atomic_load(&h->app->ready))
            return send_text(c, rq->route, 503, "not ready: starting\n", NULL);
        md_store_get_stats(h->app->store, &ss);
        if (!ss.healthy)
            return send_text(c, rq->route, 503, "not ready: store writes failing\n", NULL);
        return send_text(c, rq->route, 200, "ready\n", NULL);
    }
    case R_METRICS:
        if (!get)
            return send_text(c, rq->route, 405, "method not allowed\n", "GET, HEAD");
        return serve_metrics(h, c);
    case R_API:
    case R_COSTMGMT:
        return serve_api(h, c, rq, url, method);
    default:
        return send_text(c, rq->route, 404, "not found\n", NULL);
    }
}

/* Sets the connection's deadline (0: none while its request is answered). */
static void
set_deadline(struct md_http *h, struct MHD_Connection *c, uint64_t deadline_ns)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn *k = ci != NULL ? ci->socket_context : NULL;

    if (k == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    k->deadline_ns = deadline_ns;
    if (deadline_ns != 0)
        pthread_cond_signal(&h->cv);    /* the deadline thread may be idle */
    pthread_mutex_unlock(&h->mu);
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
    struct md_http *h = cls;
    struct request *rq = *req_cls;
    struct md_config *cfg;
    enum MHD_Result ret;
    int done;

    (void)version;
    if (rq == NULL) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
            MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t n;

        rq = md_calloc(1, sizeof(*rq));
        if (rq == NULL)
            return MHD_NO;
        rq->route = route_of(url, &rq->need);
        md_buf_init(&rq->body, MD_HTTP_BODY_MAX);
        *req_cls = rq;
        /* a declared body over the limit is refused before it is read; MHD
         * then closes the connection instead of draining it */
        if (cl != NULL && (md_parse_u64(cl, strlen(cl), UINT64_MAX, &n) != MD_OK ||
                n > MD_HTTP_BODY_MAX)) {
            rq->body_too_large = 1;
            set_deadline(h, c, 0);
            return send_error_x(c, rq->route, 413, "request body too large", NULL, NULL);
        }
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        /* API bodies are kept (PUT pricing, POST backfill); others are
         * counted and discarded */
        rq->body_len += *upload_data_size;
        if (rq->body_len > MD_HTTP_BODY_MAX)
            rq->body_too_large = 1;
        else if (rq->route == R_API &&
                 md_buf_append(&rq->body, upload_data, *upload_data_size) != MD_OK)
            rq->body_too_large = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    /* the whole request is in: answering it has no deadline (a large
     * /metrics to a slow reader is bounded by MHD's inactivity timeout) */
    set_deadline(h, c, 0);
    if (rq->body_too_large)
        return send_error_x(c, rq->route, 413, "request body too large", NULL, NULL);

    cfg = md_app_config(h->app);
    ret = authorize(h, c, rq, cfg, url, &done);
    if (!done)
        ret = dispatch(h, c, rq, url, method);
    /* the tenant filter borrowed cfg's lists; the answer is built by now */
    md_config_unref(cfg);
    return ret;
}

static void
request_done(void *cls, struct MHD_Connection *c, void **req_cls,
    enum MHD_RequestTerminationCode toe)
{
    struct md_http *h = cls;

    (void)toe;
    /* the next request on this connection has its own deadline */
    set_deadline(h, c, md_now_monotonic_ns() + h->timeout_ns);
    if (*req_cls != NULL)
        md_buf_fini(&((struct request *)*req_cls)->body);
    md_free(*req_cls);
    *req_cls = NULL;
}

/* http.send_buffer on each accepted socket.  Why: with autotuning every
 * connection's send buffer grows to tcp_wmem's 4 MiB, so 50 clients of a
 * 14 MB /metrics hold ~200 MB in flight: kernel memory, and bytes long out
 * of the CPU caches when the client finally copies them (bench/RESULTS.md
 * measured ~30% less CPU per response, server and client, at 256 KiB). */
static void
set_send_buffer(const struct md_http *h, int fd)
{
    if (h->send_buffer != 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &h->send_buffer,
            sizeof(h->send_buffer)) != 0)
        md_log_debug("cannot set SO_SNDBUF on a client socket; the kernel's default stays");
}

/* MHD's connection notifications: tracks each connection for its deadline
 * (STARTED to CLOSED) and sets its send buffer. */
static void
connection_notify(void *cls, struct MHD_Connection *c, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
    struct md_http *h = cls;
    struct conn *k;

    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        k = *socket_context;
        if (k == NULL)
            return;
        pthread_mutex_lock(&h->mu);
        if (k->prev != NULL)
            k->prev->next = k->next;
        else
            h->conns = k->next;
        if (k->next != NULL)
            k->next->prev = k->prev;
        pthread_mutex_unlock(&h->mu);
        md_free(k);
        *socket_context = NULL;
        return;
    }
    if (toe != MHD_CONNECTION_NOTIFY_STARTED)
        return;
    {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        if (ci == NULL)
            return;
        set_send_buffer(h, ci->connect_fd);
        k = md_calloc(1, sizeof(*k));
        if (k == NULL) {
            /* served without a deadline; MHD's inactivity timeout remains */
            md_log_warn("out of memory: a connection goes without its request deadline");
            return;
        }
        k->fd = ci->connect_fd;
        k->deadline_ns = md_now_monotonic_ns() + h->timeout_ns;
        pthread_mutex_lock(&h->mu);
        k->next = h->conns;
        if (h->conns != NULL)
            h->conns->prev = k;
        h->conns = k;
        pthread_cond_signal(&h->cv);    /* the deadline thread may be idle */
        pthread_mutex_unlock(&h->mu);
        *socket_context = k;
    }
}

/* The deadline thread: shuts down the sockets of connections past their
 * deadline (once each: the deadline is cleared), checking every
 * MD_HTTP_TICK_NS while a deadline is pending.  With none it sleeps until a
 * connection gets one (signalled under mu), instead of ten wake-ups a
 * second, each a context switch, of a daemon nobody queries. */
static void *
deadline_thread(void *arg)
{
    struct md_http *h = arg;

    pthread_mutex_lock(&h->mu);
    while (!h->stopping) {
        uint64_t now = md_now_monotonic_ns();
        struct timespec ts;
        int pending = 0;

        for (struct conn *k = h->conns; k != NULL; k = k->next) {
            if (k->deadline_ns == 0)
                continue;
            if (now < k->deadline_ns) {
                pending = 1;
                continue;
            }
            k->deadline_ns = 0;
            if (shutdown(k->fd, SHUT_RDWR) == 0 || errno == ENOTCONN) {
                atomic_fetch_add(&deadline_cuts, 1);
                md_log_debug("closed a connection that sent no whole request within "
                    "http.connection_timeout");
            }
        }
        if (!pending) {
            (void)pthread_cond_wait(&h->cv, &h->mu);
            continue;
        }
        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += MD_HTTP_TICK_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void __attribute__((format(printf, 2, 0)))
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    md_log_debug("libmicrohttpd: %s", msg);
}

/* h->mu and h->cv, the condition on the monotonic clock (deadline_thread's
 * timed waits must not jump with the wall clock). */
static int
sync_init(struct md_http *h)
{
    pthread_condattr_t ca;
    int rc;

    if (pthread_condattr_init(&ca) != 0)
        return -1;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&h->cv, &ca);
    (void)pthread_condattr_destroy(&ca);
    if (rc != 0)
        return -1;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        (void)pthread_cond_destroy(&h->cv);
        return -1;
    }
    return 0;
}

int
md_http_start(struct md_app *app, const struct md_config *cfg, struct md_http **out,
    struct md_err *err)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char host[256], port_s[8];
    struct md_http *h;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    uint16_t port;
    int gai;

    if (md_config_split_listen(cfg->listen, host, sizeof(host), &port) != MD_OK)
        return md_err_set(err, MD_ECONFIG, "listen \"%s\": not host:port", cfg->listen);
    (void)snprintf(port_s, sizeof(port_s), "%u", port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    hints.ai_family = AF_UNSPEC;
    gai = getaddrinfo(host[0] ? host : NULL, port_s, &hints, &ai);
    if (gai != 0)
        return md_err_set(err, MD_EIO, "listen \"%s\": %s", cfg->listen, gai_strerror(gai));
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h = md_calloc(1, sizeof(*h));
    if (h == NULL) {
        freeaddrinfo(ai);
        return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    h->app = app;
    h->send_buffer = (int)cfg->http.send_buffer;    /* <= 64 MiB (config.c) */
    h->timeout_ns = cfg->http.connection_timeout_ms * 1000000u;    /* <= 1 h (config.c) */
    if (sync_init(h) != 0) {
        freeaddrinfo(ai);
        md_free(h);
        return md_err_set(err, MD_ENOMEM, "cannot create the HTTP deadline lock");
    }
    if (cfg->auth.enabled) {
        h->throttle = md_auth_throttle_new(cfg->auth.failure_limit,
            cfg->auth.failure_backoff_max_ms);
        if (h->throttle == NULL) {
            freeaddrinfo(ai);
            md_http_stop(h);
            return md_err_set(err, MD_ENOMEM, "out of memory");
        }
    }
    h->d = MHD_start_daemon(flags, port, NULL, NULL, handle, h,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->http.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->http.max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)((cfg->http.connection_timeout_ms + 999) / 1000),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)cfg->http.connection_memory_limit,
        MHD_OPTION_NOTIFY_COMPLETED, request_done, h,
        MHD_OPTION_NOTIFY_CONNECTION, connection_notify, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (h->d == NULL) {
        md_http_stop(h);
        return md_err_set(err, MD_EIO, "listen \"%s\": cannot bind or start the server "
            "(address in use or not available)", cfg->listen);
    }
    if (pthread_create(&h->thread, NULL, deadline_thread, h) != 0) {
        md_http_stop(h);
        return md_err_set(err, MD_ENOMEM, "cannot start the HTTP deadline thread");
    }
    h->thread_started = 1;
    *out = h;
    return MD_OK;
}

void
md_http_stop(struct md_http *h)
{
    if (h == NULL)
        return;
    if (h->thread_started) {
        pthread_mutex_lock(&h->mu);
        h->stopping = 1;
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
        (void)pthread_join(h->thread, NULL);
    }
    /* closes every connection: their CLOSED notifications empty h->conns */
    if (h->d != NULL)
        MHD_stop_daemon(h->d);
    while (h->conns != NULL) {          /* none expected; MHD calls no one now */
        struct conn *k = h->conns;

        h->conns = k->next;
        md_free(k);
    }
    md_auth_throttle_free(h->throttle);
    (void)pthread_cond_destroy(&h->cv);
    (void)pthread_mutex_destroy(&h->mu);
    md_free(h);
}
