/* http.h: the HTTP server (libmicrohttpd, internal thread pool).
 * Routes: /healthz, /readyz, /metrics; /api/... answers JSON errors.
 * Handlers run on MHD pool threads; they read the app's atomics, a
 * configuration reference and the store through read-only connections. */
#ifndef MD_HTTP_H
#define MD_HTTP_H

#include "app.h"
#include "buf.h"
#include "util.h"

struct md_http;

/* Binds cfg->listen and starts serving.  Errors name the address. */
int  md_http_start(struct md_app *app, const struct md_config *cfg, struct md_http **out,
    struct md_err *err);
/* Stops accepting, finishes running requests, joins the threads.  NULL ok. */
void md_http_stop(struct md_http *h);

/* The i-th served path (templates like {project} for one segment), NULL
 * past the last: the route table schema/openapi.yaml is checked against. */
const char *md_http_route_path(size_t i);

/* Appends meterd_auth_failures_total and meterd_http_requests_total. */
int  md_http_render_metrics(struct md_buf *b);

#endif
