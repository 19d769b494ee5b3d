/* config.c: meterd.yaml -> struct md_config, through the key tables below
 * (read by the cfgtab engine).  A loaded config is immutable; the reference
 * count is its only mutable field and is guarded by refs_mu.  No thread owns
 * a config: whoever holds a reference may read it. */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *check_url(const char *v);
static const char *check_listen(const char *v);
static const char *check_dns_label(const char *v);
static const char *check_nonempty(const char *v);
static const char *check_header_value(const char *v);
static const char *check_dns_label_nonempty(const char *v);
static void validate_attribution(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_scrape(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_target(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_root(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static const char *check_api_server(const char *v);
static const char *check_port_name(const char *v);
static const char *check_clean(const char *v);
static void validate_kubernetes(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_auth(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_auth_token(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static const char *conv_sha256(const char *s, size_t len, void *field);
static const char *check_open_path(const char *v);

static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const log_formats[] = { "logfmt", "json", NULL };

#define OFF(field) offsetof(struct md_config, field)
#define TOFF(field) offsetof(struct md_target_cfg, field)
#define END { .name = NULL }

static const struct md_cfg_key storage_keys[] = {
    { .name = "path", .type = MD_CFG_STR, .off = OFF(storage.path), .max = 1024,
      .def = "./var/meterd.db", .check = check_nonempty,
      .help = "SQLite database file (created with its directory)" },
    { .name = "busy_timeout", .type = MD_CFG_DURATION, .off = OFF(storage.busy_timeout_ms),
      .min = 10, .max = 600000, .def = "5s",
      .help = "how long a write waits for a lock held by another process" },
    { .name = "max_page_count", .type = MD_CFG_UINT, .off = OFF(storage.max_page_count),
      .min = 0, .max = 4294967294ULL, .def = "0",
      .help = "for tests/ops: cap the database at this many pages (PRAGMA max_page_count) "
              "to rehearse a full disk; applied at start and on reload; 0: no cap" },
    END,
};
static const struct md_cfg_section storage_section = { .name = "storage", .keys = storage_keys };

static const struct md_cfg_key scrape_keys[] = {
    { .name = "interval", .type = MD_CFG_DURATION, .off = OFF(scrape.interval_ms),
      .min = 100, .max = 86400000, .def = "15s",
      .help = "time between two scrapes of a target" },
    { .name = "timeout", .type = MD_CFG_DURATION, .off = OFF(scrape.timeout_ms),
      .min = 100, .max = 86400000, .def = "10s",
      .help = "a scrape taking longer fails (at most the interval)" },
    { .name = "body_size_limit", .type = MD_CFG_SIZE, .off = OFF(scrape.body_size_limit),
      .min = 1024, .max = 1ULL << 32, .def = "16MiB",
      .help = "a larger (decompressed) scrape body fails" },
    { .name = "sample_limit", .type = MD_CFG_UINT, .off = OFF(scrape.sample_limit),
      .min = 0, .max = 100000000, .def = "0",
      .help = "a body with more samples fails the scrape (0: no limit)" },
    { .name = "accept", .type = MD_CFG_STR, .off = OFF(scrape.accept), .max = 512,
      .def = "text/plain;version=0.0.4", .check = check_header_value,
      .help = "Accept header sent to targets (every EAIG version answers text 0.0.4)" },
    END,
};
static const struct md_cfg_section scrape_section = {
    .name = "scrape", .keys = scrape_keys, .validate = validate_scrape
};

static const struct md_cfg_key target_keys[] = {
    { .name = "url", .type = MD_CFG_STR, .off = TOFF(url), .max = 2048,
      .flags = MD_CFG_REQUIRED, .check = check_url,
      .help = "http:// or https:// URL of an ExtProc metrics endpoint" },
    { .name = "namespace", .type = MD_CFG_STR, .off = TOFF(namespace), .max = 63, .def = "",
      .check = check_dns_label,
      .help = "Kubernetes namespace the target belongs to (namespace rules)" },
    { .name = "labels", .type = MD_CFG_STRMAP, .off = TOFF(labels), .max = 64,
      .help = "extra labels attached to the target" },
    { .name = "interval", .type = MD_CFG_DURATION, .off = TOFF(interval_ms),
      .min = 100, .max = 86400000, .help = "this target's scrape interval (default scrape.interval)" },
    { .name = "timeout", .type = MD_CFG_DURATION, .off = TOFF(timeout_ms),
      .min = 100, .max = 86400000, .help = "this target's scrape timeout (default scrape.timeout)" },
    END,
};
static const struct md_cfg_section target_section = {
    .name = "targets[]", .keys = target_keys, .size = sizeof(struct md_target_cfg),
    .validate = validate_target
};

static const struct md_cfg_key log_keys[] = {
    { .name = "level", .type = MD_CFG_ENUM, .off = OFF(log.level), .def = "info",
      .values = log_levels, .help = "debug, info, warn or error" },
    { .name = "format", .type = MD_CFG_ENUM, .off = OFF(log.format), .def = "logfmt",
      .values = log_formats, .help = "logfmt or json" },
    END,
};
static const struct md_cfg_section log_section = { .name = "log", .keys = log_keys };

static const struct md_cfg_key http_keys[] = {
    { .name = "threads", .type = MD_CFG_UINT, .off = OFF(http.threads), .min = 1, .max = 64,
      .def = "4", .help = "HTTP worker threads (libmicrohttpd thread pool)" },
    { .name = "max_connections", .type = MD_CFG_UINT, .off = OFF(http.max_connections),
      .min = 1, .max = 100000, .def = "256", .help = "open connections accepted at once" },
    { .name = "max_connections_per_ip", .type = MD_CFG_UINT,
      .off = OFF(http.max_connections_per_ip), .min = 1, .max = 100000, .def = "64",
      .help = "open connections accepted at once from one client address" },
    { .name = "connection_timeout", .type = MD_CFG_DURATION,
      .off = OFF(http.connection_timeout_ms), .min = 1000, .max = 3600000, .def = "30s",
      .help = "a connection idle this long is closed, and so is one that has not sent a "
              "whole request this long after it opened or after its previous response "
              "(a client trickling bytes); whole seconds for the idle part" },
    { .name = "connection_memory_limit", .type = MD_CFG_SIZE,
      .off = OFF(http.connection_memory_limit), .min = 4096, .max = 1ULL << 30,
      .def = "64KiB", .help = "memory per connection for headers and request body" },
    { .name = "send_buffer", .type = MD_CFG_SIZE, .off = OFF(http.send_buffer),
      .min = 0, .max = 64ULL << 20, .def = "256KiB",
      .help = "SO_SNDBUF of each client socket (the kernel doubles it); 0B leaves the "
              "kernel's autotuning (up to net.ipv4.tcp_wmem, 4 MiB)" },
    END,
};
static const struct md_cfg_section http_section = { .name = "http", .keys = http_keys };

static const char *const first_scrape_values[] = { "baseline", "count", NULL };

static const struct md_cfg_key attribution_keys[] = {
    { .name = "department_label", .type = MD_CFG_STR, .off = OFF(attribution.department_label),
      .max = 256, .def = "department", .check = check_nonempty,
      .help = "header-attribute label carrying the department (any spelling: department_id, "
              "department.id)" },
    { .name = "default_department", .type = MD_CFG_STR,
      .off = OFF(attribution.default_department), .max = 256, .def = "unassigned",
      .check = check_nonempty, .help = "department of usage without (or with an empty) label" },
    { .name = "namespace_label", .type = MD_CFG_STR, .off = OFF(attribution.namespace_label),
      .max = 256, .def = "",
      .help = "header-attribute label carrying the namespace (first namespace rule; empty: off)" },
    { .name = "department_namespaces", .type = MD_CFG_STRMAP,
      .off = OFF(attribution.department_namespaces), .max = 10000,
      .help = "department -> namespace (second namespace rule)" },
    { .name = "default_namespace", .type = MD_CFG_STR, .off = OFF(attribution.default_namespace),
      .max = 63, .def = "unassigned", .check = check_dns_label_nonempty,
      .help = "namespace when no rule gives one (last rule after the target's namespace)" },
    { .name = "model_label", .type = MD_CFG_STR, .off = OFF(attribution.model_label),
      .max = 256, .def = "gen_ai_request_model", .check = check_nonempty,
      .help = "label giving the model: gen_ai_request_model, gen_ai_original_model or "
              "gen_ai_response_model" },
    { .name = "provider_label", .type = MD_CFG_STR, .off = OFF(attribution.provider_label),
      .max = 256, .def = "gen_ai_provider_name", .check = check_nonempty,
      .help = "label giving the provider (EAIG v0.3: gen_ai_system_name, read as a fallback)" },
    { .name = "operation_label", .type = MD_CFG_STR, .off = OFF(attribution.operation_label),
      .max = 256, .def = "gen_ai_operation_name", .check = check_nonempty,
      .help = "label giving the operation" },
    { .name = "token_type_label", .type = MD_CFG_STR, .off = OFF(attribution.token_type_label),
      .max = 256, .def = "gen_ai_token_type", .check = check_nonempty,
      .help = "label giving the token type" },
    { .name = "exclude_operations", .type = MD_CFG_STRLIST,
      .off = OFF(attribution.exclude_operations), .max = 64,
      .help = "operations that count tokens without consuming them; dropped with reason "
              "excluded_operation (default: count_tokens, responses_input_tokens)" },
    END,
};
static const struct md_cfg_section attribution_section = {
    .name = "attribution", .keys = attribution_keys, .validate = validate_attribution
};

static const struct md_cfg_key ledger_keys[] = {
    { .name = "first_scrape", .type = MD_CFG_ENUM, .off = OFF(ledger.first_scrape),
      .def = "baseline", .values = first_scrape_values,
      .help = "targets already running when a fresh database first starts: baseline (count "
              "from here) or count (bill what they report in full)" },
    { .name = "series_max", .type = MD_CFG_UINT, .off = OFF(ledger.series_max),
      .min = 1, .max = 100000000, .def = "1000000",
      .help = "billed series tracked at once; beyond it scrapes fail loudly" },
    { .name = "max_spread", .type = MD_CFG_DURATION, .off = OFF(ledger.max_spread_ms),
      .min = 0, .max = 2678400000ULL, .def = "7d",
      .help = "a gap up to this long is spread over the hours it spans; a longer gap goes "
              "whole into the hour of the scrape that ends it (at most 31d; 0s: never spread)" },
    END,
};
static const struct md_cfg_section ledger_section = { .name = "ledger", .keys = ledger_keys };

static const struct md_cfg_key usage_keys[] = {
    { .name = "retention", .type = MD_CFG_DURATION, .off = OFF(usage.retention_ms),
      .min = 0, .max = 3162240000000ULL, .def = "0s",
      .help = "hourly usage older than this is deleted (0s: keep forever)" },
    END,
};
static const struct md_cfg_section usage_section = { .name = "usage", .keys = usage_keys };

/* /metrics exposition (exporters/prometheus.h) */
static const struct md_cfg_key metrics_keys[] = {
    { .name = "max_series", .type = MD_CFG_UINT, .off = OFF(metrics.max_series),
      .min = 1, .max = 1000000, .def = "100000",
      .help = "usage series (tokens, requests, cost, unpriced) exported on /metrics; the "
              "rest is left out and counted in meterd_metrics_series_cut_total" },
    END,
};
static const struct md_cfg_section metrics_section = { .name = "metrics", .keys = metrics_keys };

/* Kubernetes pod discovery (discovery.h).  port_names has no table default
 * because the engine's defaults are scalars: validate_kubernetes fills
 * [aigw-admin, aigw-metrics] when the key is absent. */
static const struct md_cfg_key kubernetes_keys[] = {
    { .name = "enabled", .type = MD_CFG_BOOL, .off = OFF(kubernetes.enabled), .def = "false",
      .help = "discover ExtProc sidecars from the Kubernetes API" },
    { .name = "api_server", .type = MD_CFG_STR, .off = OFF(kubernetes.api_server), .max = 2048,
      .def = "", .check = check_api_server,
      .help = "API server URL; empty: in cluster (KUBERNETES_SERVICE_HOST/_PORT, https)" },
    { .name = "token_file", .type = MD_CFG_STR, .off = OFF(kubernetes.token_file), .max = 1024,
      .def = "", .check = check_clean,
      .help = "bearer token file, re-read on every list; empty: the service-account token "
              "in cluster, no token with api_server" },
    { .name = "ca_file", .type = MD_CFG_STR, .off = OFF(kubernetes.ca_file), .max = 1024,
      .def = "", .check = check_clean,
      .help = "CA bundle for https; empty: the service-account ca.crt in cluster, the "
              "system store with api_server" },
    { .name = "namespaces", .type = MD_CFG_STRLIST, .off = OFF(kubernetes.namespaces),
      .max = 1000, .check = check_dns_label_nonempty,
      .help = "namespaces to list pods in; empty: all namespaces" },
    { .name = "label_selector", .type = MD_CFG_STR, .off = OFF(kubernetes.label_selector),
      .max = 1024, .def = "", .check = check_clean,
      .help = "Kubernetes label selector of the pods (e.g. app.kubernetes.io/name=envoy)" },
    { .name = "port_names", .type = MD_CFG_STRLIST, .off = OFF(kubernetes.port_names),
      .max = 16, .check = check_port_name,
      .help = "container port names to scrape, most preferred first, searched in "
              "containers and native-sidecar init containers; default [aigw-admin, aigw-metrics]" },
    { .name = "refresh", .type = MD_CFG_DURATION, .off = OFF(kubernetes.refresh_ms),
      .min = 1000, .max = 86400000, .def = "30s",
      .help = "time between two pod lists" },
    { .name = "request_timeout", .type = MD_CFG_DURATION,
      .off = OFF(kubernetes.request_timeout_ms), .min = 100, .max = 300000, .def = "10s",
      .help = "an API request (one page of pods) taking longer fails the list" },
    { .name = "insecure_skip_verify", .type = MD_CFG_BOOL,
      .off = OFF(kubernetes.insecure_skip_verify), .def = "false",
      .help = "do not verify the API server's certificate (tests only; needs api_server)" },
    END,
};
static const struct md_cfg_section kubernetes_section = {
    .name = "kubernetes", .keys = kubernetes_keys, .validate = validate_kubernetes
};
static const struct md_cfg_key pricing_keys[] = {
    { .name = "file", .type = MD_CFG_STR, .off = OFF(pricing.file), .max = 1024,
      .def = "config/pricing.yaml", .check = check_nonempty,
      .help = "pricing models YAML (meterd/pricing.h; `meterd pricing check FILE`)" },
    END,
};
static const struct md_cfg_section pricing_section = { .name = "pricing", .keys = pricing_keys };

static const struct md_cfg_key rating_keys[] = {
    { .name = "grace", .type = MD_CFG_DURATION, .off = OFF(rating.grace_ms), .min = 0,
      .max = 2678400000ULL, .def = "2h",
      .help = "a UTC day stays open this long after it ends, for late usage; then its bill "
              "lines are computed and stored (closed)" },
    END,
};
static const struct md_cfg_section rating_section = { .name = "rating", .keys = rating_keys };

/* ---- auth ---- */

#define KOFF(field) offsetof(struct md_auth_token_cfg, field)
static const char *const auth_scopes[] = { "admin", "reader", "tenant", NULL };

static const struct md_cfg_key auth_token_keys[] = {
    { .name = "name", .type = MD_CFG_STR, .off = KOFF(name), .max = 64,
      .flags = MD_CFG_REQUIRED, .check = check_dns_label_nonempty,
      .help = "who holds the token (logged on use; the token never is)" },
    { .name = "sha256", .type = MD_CFG_SCALAR, .off = KOFF(sha256),
      .flags = MD_CFG_REQUIRED, .conv = conv_sha256,
      .help = "SHA-256 of the token as 64 hex digits (printf %s TOKEN | sha256sum)" },
    { .name = "scope", .type = MD_CFG_ENUM, .off = KOFF(scope), .values = auth_scopes,
      .flags = MD_CFG_REQUIRED,
      .help = "admin (everything), reader (all usage, no admin routes) or tenant" },
    { .name = "namespaces", .type = MD_CFG_STRLIST, .off = KOFF(namespaces), .max = 1024,
      .check = check_nonempty, .help = "tenant: namespaces whose rows it sees" },
    { .name = "departments", .type = MD_CFG_STRLIST, .off = KOFF(departments), .max = 1024,
      .check = check_nonempty, .help = "tenant: departments whose rows it sees" },
    END,
};
static const struct md_cfg_section auth_token_section = {
    .name = "auth.tokens[]", .keys = auth_token_keys, .size = sizeof(struct md_auth_token_cfg),
    .validate = validate_auth_token
};

static const struct md_cfg_key auth_keys[] = {
    { .name = "open_paths", .type = MD_CFG_STRLIST, .off = OFF(auth.open_paths), .max = 64,
      .check = check_open_path,
      .help = "exact paths served without a token (default [/metrics, /healthz, /readyz]; "
              "[] for none)" },
    { .name = "tokens", .type = MD_CFG_LIST, .off = OFF(auth.tokens), .max = 10000,
      .sub = &auth_token_section, .help = "bearer tokens" },
    { .name = "failure_limit", .type = MD_CFG_UINT, .off = OFF(auth.failure_limit),
      .min = 1, .max = 1000000, .def = "5",
      .help = "bad tokens from one client address before it is answered 429" },
    { .name = "failure_backoff_max", .type = MD_CFG_DURATION,
      .off = OFF(auth.failure_backoff_max_ms), .min = 1000, .max = 86400000, .def = "5m",
      .help = "longest 429 period (it doubles from 1s with each further bad token)" },
    END,
};
static const struct md_cfg_section auth_section = {
    .name = "auth", .keys = auth_keys, .validate = validate_auth
};

static const struct md_cfg_key root_keys[] = {
    { .name = "cluster", .type = MD_CFG_STR, .off = OFF(cluster), .max = 253, .def = "default",
      .check = check_nonempty, .help = "name of the cluster stamped on every usage row" },
    { .name = "listen", .type = MD_CFG_STR, .off = OFF(listen), .max = 300,
      .def = "127.0.0.1:9180", .check = check_listen,
      .help = "HTTP listen address host:port (empty host: all addresses)" },
    { .name = "storage", .type = MD_CFG_SECTION, .sub = &storage_section,
      .help = "embedded SQLite store" },
    { .name = "scrape", .type = MD_CFG_SECTION, .sub = &scrape_section,
      .help = "scrape defaults" },
    { .name = "targets", .type = MD_CFG_LIST, .off = OFF(targets), .max = 100000,
      .sub = &target_section, .help = "static scrape targets" },
    { .name = "log", .type = MD_CFG_SECTION, .sub = &log_section, .help = "logging" },
    { .name = "pricing", .type = MD_CFG_SECTION, .sub = &pricing_section,
      .help = "pricing models for bills" },
    { .name = "rating", .type = MD_CFG_SECTION, .sub = &rating_section,
      .help = "bills: milestones and late data" },
    { .name = "http", .type = MD_CFG_SECTION, .sub = &http_section,
      .help = "HTTP server limits" },
    { .name = "attribution", .type = MD_CFG_SECTION, .sub = &attribution_section,
      .help = "how samples become tenants (namespace, department) and dimensions" },
    { .name = "ledger", .type = MD_CFG_SECTION, .sub = &ledger_section,
      .help = "counter semantics" },
    { .name = "usage", .type = MD_CFG_SECTION, .sub = &usage_section,
      .help = "hourly usage store" },
    { .name = "kubernetes", .type = MD_CFG_SECTION, .sub = &kubernetes_section,
      .help = "Kubernetes pod discovery" },
    { .name = "metrics", .type = MD_CFG_SECTION, .sub = &metrics_section,
      .help = "the /metrics exposition" },
    { .name = "auth", .type = MD_CFG_SECTION, .sub = &auth_section,
      .help = "bearer-token authentication (absent: the API is open)" },
    END,
};
static const struct md_cfg_section root_section = {
    .name = "", .keys = root_keys, .size = sizeof(struct md_config), .validate = validate_root
};

static pthread_mutex_t refs_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- checks ---- */

static const char *
conv_sha256(const char *s, size_t len, void *field)
{
    uint8_t *out = field;

    if (len != 64)
        return "must be 64 hex digits (the SHA-256 of the token)";
    for (size_t i = 0; i < 64; i++) {
        unsigned char ch = (unsigned char)s[i];
        unsigned v;

        if (ch >= '0' && ch <= '9')
            v = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            v = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            v = ch - 'A' + 10;
        else
            return "must be 64 hex digits (the SHA-256 of the token)";
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return NULL;
}

static const char *
check_open_path(const char *v)
{
    if (v[0] != '/')
        return "must start with /";
    for (const char *p = v; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
            return "must be a plain path (no space, control character, ? or #)";
    return NULL;
}

static const char *
check_nonempty(const char *v)
{
    return *v == '\0' ? "must not be empty" : NULL;
}

static const char *
check_url(const char *v)
{
    const char *host;

    if (strncmp(v, "http://", 7) == 0)
        host = v + 7;
    else if (strncmp(v, "https://", 8) == 0)
        host = v + 8;
    else
        return "must start with http:// or https://";
    if (*host == '\0' || *host == '/' || *host == ':')
        return "has no host";
    for (const char *p = v; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "contains a space or control character";
    return NULL;
}

int
md_config_split_listen(const char *listen, char *host, size_t host_len, uint16_t *port)
{
    const char *colon, *hs = listen, *he;
    uint64_t p;

    if (listen[0] == '[') {
        he = strchr(listen, ']');
        if (he == NULL || he[1] != ':')
            return MD_EPARSE;
        hs = listen + 1;
        colon = he + 1;
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL)
            return MD_EPARSE;
        he = colon;
        if (memchr(listen, ':', (size_t)(colon - listen)) != NULL)
            return MD_EPARSE;   /* bare IPv6 needs brackets */
    }
    if ((size_t)(he - hs) >= host_len)
        return MD_ELIMIT;
    if (md_parse_u64(colon + 1, strlen(colon + 1), 65535, &p) != MD_OK || p == 0)
        return MD_EPARSE;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    *port = (uint16_t)p;
    return MD_OK;
}

static const char *
check_listen(const char *v)
{
    char host[256];
    uint16_t port;

    if (md_config_split_listen(v, host, sizeof(host), &port) != MD_OK)
        return "expected host:port with a port from 1 to 65535 (e.g. 127.0.0.1:9180)";
    return NULL;
}

static const char *
check_dns_label(const char *v)
{
    size_t len = strlen(v);

    if (len == 0)
        return NULL;
    if (len > 63)
        return "a Kubernetes namespace has at most 63 characters";
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';

        if (!ok || ((i == 0 || i == len - 1) && ch == '-'))
            return "not a Kubernetes namespace name (lower-case letters, digits and '-')";
    }
    return NULL;
}

static const char *
check_dns_label_nonempty(const char *v)
{
    return *v == '\0' ? "must not be empty" : check_dns_label(v);
}

static const char *
check_header_value(const char *v)
{
    for (; *v != '\0'; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return "contains a control character";
    return NULL;
}

static void
validate_attribution(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct md_config *cfg = obj;
    const struct md_strmap *m = &cfg->attribution.department_namespaces;
    int map = md_cfgtab_key_node(c, node, "department_namespaces", 1);

    (void)path;
    for (size_t i = 0; i < m->count; i++) {
        const char *why = check_dns_label(m->vals[i]);
        char kpath[300];

        if (why == NULL && m->vals[i][0] == '\0')
            why = "must not be empty";
        if (why == NULL)
            continue;
        (void)snprintf(kpath, sizeof(kpath), "attribution.department_namespaces.%.200s",
            m->keys[i]);
        md_cfgtab_error(c, md_cfgtab_key_node(c, map, m->keys[i], 1), kpath, "\"%s\": %s",
            m->vals[i], why);
    }
}

static int
valid_label_name(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return 0;
    for (s++; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static const char *
check_clean(const char *v)
{
    for (const char *p = v; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "contains a control character";
    return NULL;
}

static const char *
check_api_server(const char *v)
{
    const char *why, *host, *end;

    if (*v == '\0')
        return NULL;
    why = check_url(v);
    if (why != NULL)
        return why;
    host = strstr(v, "://") + 3;
    end = host + strcspn(host, "/");
    if (memchr(host, '@', (size_t)(end - host)) != NULL)
        return "must not contain user:password@ (use token_file)";
    if (strpbrk(v, "?#") != NULL)
        return "must not have a query or fragment";
    return NULL;
}

/* A container port name is an IANA_SVC_NAME: 1-15 of [a-z0-9-], at least
 * one letter, no '-' at either end, no "--" (Kubernetes validation). */
static const char *
check_port_name(const char *v)
{
    size_t len = strlen(v);
    int letter = 0;

    if (len == 0 || len > 15)
        return "a container port name has 1 to 15 characters";
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];

        if (ch >= 'a' && ch <= 'z')
            letter = 1;
        else if (!((ch >= '0' && ch <= '9') || ch == '-'))
            return "not a container port name (lower-case letters, digits and '-')";
    }
    if (!letter || v[0] == '-' || v[len - 1] == '-' || strstr(v, "--") != NULL)
        return "not a container port name (needs a letter; no '-' at either end, no \"--\")";
    return NULL;
}

/* 1 when the host of an http(s) URL is a loopback address or localhost. */
static int
url_host_is_loopback(const char *url)
{
    const char *host = strstr(url, "://");
    size_t hl;

    if (host == NULL)
        return 0;
    host += 3;
    if (host[0] == '[')
        return strncmp(host, "[::1]", 5) == 0 && (host[5] == '\0' || host[5] == ':' ||
            host[5] == '/');
    hl = strcspn(host, ":/");
    if (hl == 9 && strncmp(host, "localhost", 9) == 0)
        return 1;
    if (hl < 7 || strncmp(host, "127.", 4) != 0)
        return 0;
    for (size_t i = 0; i < hl; i++)
        if (!((host[i] >= '0' && host[i] <= '9') || host[i] == '.'))
            return 0;       /* "127.example.com" is a name, not an address */
    return 1;
}

static void
dup_check_in(struct md_cfg_ctx *c, int node, const char *prefix, const char *key,
    const struct md_strlist *l)
{
    int list = md_cfgtab_key_node(c, node, key, 1);

    for (size_t i = 1; i < l->count; i++) {
        for (size_t j = 0; j < i; j++) {
            char p[64];

            if (strcmp(l->v[i], l->v[j]) != 0)
                continue;
            (void)snprintf(p, sizeof(p), "%s.%s[%zu]", prefix, key, i);
            md_cfgtab_error(c, md_cfgtab_item_node(c, list, i), p, "\"%s\" is listed twice",
                l->v[i]);
            break;
        }
    }
}

static void
dup_check(struct md_cfg_ctx *c, int node, const char *key, const struct md_strlist *l)
{
    dup_check_in(c, node, "kubernetes", key, l);
}

static void
validate_kubernetes(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    static const char *const def_ports[] = { "aigw-admin", "aigw-metrics" };
    struct md_config *cfg = obj;
    struct md_strlist *pn = &cfg->kubernetes.port_names;
    /* api_server is NULL when its own check rejected it (fuzz_config found
     * this): the cross-key checks below then have nothing to check */
    const char *api = cfg->kubernetes.api_server ? cfg->kubernetes.api_server : "";
    int is_http = strncmp(api, "http://", 7) == 0;
    int pn_node = md_cfgtab_key_node(c, node, "port_names", 1);

    (void)path;
    if (pn->count == 0 && node != 0 && pn_node != node) {
        md_cfgtab_error(c, pn_node, "kubernetes.port_names",
            "needs at least one container port name (default [aigw-admin, aigw-metrics])");
    } else if (pn->count == 0) {
        pn->v = md_calloc(2, sizeof(char *));
        if (pn->v != NULL) {
            for (size_t i = 0; i < 2; i++) {
                pn->v[i] = md_strdup(def_ports[i]);
                if (pn->v[i] == NULL)
                    break;
                pn->count++;
            }
        }
        if (pn->count != 2)
            md_cfgtab_error(c, node, "kubernetes.port_names", "out of memory");
    }
    dup_check(c, node, "port_names", pn);
    dup_check(c, node, "namespaces", &cfg->kubernetes.namespaces);
    if (cfg->kubernetes.insecure_skip_verify && strncmp(api, "https://", 8) != 0)
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "insecure_skip_verify", 1),
            "kubernetes.insecure_skip_verify",
            "only allowed with an https:// api_server (in cluster the CA is always verified)");
    if (is_http && cfg->kubernetes.ca_file[0] != '\0')
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "ca_file", 1), "kubernetes.ca_file",
            "set, but api_server \"%s\" is plain http", api);
    if (is_http && cfg->kubernetes.token_file[0] != '\0' && !url_host_is_loopback(api))
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "token_file", 1), "kubernetes.token_file",
            "would send the token in clear text to \"%s\"; use https (plain http only to a "
            "loopback address, e.g. kubectl proxy)", api);
}

static void
validate_auth_token(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct md_auth_token_cfg *t = obj;
    size_t lists = t->namespaces.count + t->departments.count;

    if (t->scope == MD_CFG_SCOPE_TENANT && lists == 0)
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "scope", 1), path,
            "a tenant token needs at least one namespace or department");
    if (t->scope != MD_CFG_SCOPE_TENANT && lists != 0)
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "scope", 1), path,
            "namespaces and departments only restrict tenant tokens; scope %s sees all rows",
            auth_scopes[t->scope]);
    dup_check_in(c, node, path, "namespaces", &t->namespaces);
    dup_check_in(c, node, path, "departments", &t->departments);
}

/* The section is "present" when it is a mapping; `auth:` alone or no key at
 * all leaves the API open (main warns).  Names and digests must be unique: a
 * digest listed twice would make the scope of a token ambiguous. */
static void
validate_auth(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct md_config *cfg = obj;
    const struct md_auth_token_cfg *tk = cfg->auth.tokens.v;
    int tnode = md_cfgtab_key_node(c, node, "tokens", 1);

    (void)path;
    cfg->auth.enabled = node != 0;
    if (node == 0 || md_cfgtab_key_node(c, node, "open_paths", 1) == node) {
        /* key absent: the table cannot hold a list default */
        static const char *const def_open[] = { "/metrics", "/healthz", "/readyz" };
        struct md_strlist *op = &cfg->auth.open_paths;

        op->v = md_calloc(3, sizeof(char *));
        for (size_t i = 0; op->v != NULL && i < 3; i++) {
            op->v[i] = md_strdup(def_open[i]);
            if (op->v[i] == NULL)
                break;
            op->count++;
        }
        if (op->count != 3)
            md_cfgtab_error(c, node, "auth.open_paths", "out of memory");
    }
    dup_check_in(c, node, "auth", "open_paths", &cfg->auth.open_paths);
    if (node != 0 && cfg->auth.tokens.count == 0)
        md_cfgtab_error(c, tnode, "auth.tokens",
            "needs at least one token (remove the auth section to leave the API open)");
    for (size_t i = 0; i < cfg->auth.tokens.count; i++) {
        for (size_t j = 0; j < i; j++) {
            char tpath[64];

            (void)snprintf(tpath, sizeof(tpath), "auth.tokens[%zu]", i);
            if (strcmp(tk[i].name, tk[j].name) == 0)
                md_cfgtab_error(c, md_cfgtab_item_node(c, tnode, i), tpath,
                    "name \"%s\" is already used by tokens[%zu]", tk[i].name, j);
            if (memcmp(tk[i].sha256, tk[j].sha256, sizeof(tk[i].sha256)) == 0)
                md_cfgtab_error(c, md_cfgtab_item_node(c, tnode, i), tpath,
                    "sha256 is the same as tokens[%zu]'s", j);
        }
    }
}

static void
validate_scrape(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct md_config *cfg = obj;
    char a[32], b[32];

    if (cfg->scrape.timeout_ms > cfg->scrape.interval_ms) {
        md_fmt_duration(cfg->scrape.timeout_ms, a, sizeof(a));
        md_fmt_duration(cfg->scrape.interval_ms, b, sizeof(b));
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "timeout", 1), path[0] ? "scrape.timeout" : path,
            "%s is longer than scrape.interval (%s)", a, b);
    }
}

static void
validate_target(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct md_target_cfg *t = obj;

    if (t->interval_ms != 0 && t->timeout_ms != 0 && t->timeout_ms > t->interval_ms) {
        char tpath[300], a[32], b[32];

        md_fmt_duration(t->timeout_ms, a, sizeof(a));
        md_fmt_duration(t->interval_ms, b, sizeof(b));
        (void)snprintf(tpath, sizeof(tpath), "%.280s.timeout", path);
        md_cfgtab_error(c, md_cfgtab_key_node(c, node, "timeout", 1), tpath,
            "%s is longer than the target's interval (%s)", a, b);
    }

    for (size_t i = 0; i < t->labels.count; i++) {
        char lpath[300];
        int labels;

        if (valid_label_name(t->labels.keys[i]) && strncmp(t->labels.keys[i], "__", 2) != 0)
            continue;
        (void)snprintf(lpath, sizeof(lpath), "%.280s.labels", path);
        labels = md_cfgtab_key_node(c, node, "labels", 1);
        md_cfgtab_error(c, md_cfgtab_key_node(c, labels, t->labels.keys[i], 0), lpath,
            "\"%s\" is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)",
            t->labels.keys[i]);
    }
}

static void
validate_root(struct md_cfg_ctx *c, int node, const char *path, void *obj)
{
    struct md_config *cfg = obj;
    struct md_target_cfg *t = cfg->targets.v;
    int list = md_cfgtab_key_node(c, node, "targets", 1);

    (void)path;
    for (size_t i = 1; i < cfg->targets.count; i++) {
        for (size_t j = 0; j < i; j++) {
            char tpath[64];
            int at;

            if (t[i].url == NULL || t[j].url == NULL || strcmp(t[i].url, t[j].url) != 0)
                continue;
            at = md_cfgtab_key_node(c, md_cfgtab_item_node(c, list, i), "url", 1);
            (void)snprintf(tpath, sizeof(tpath), "targets[%zu].url", i);
            md_cfgtab_error(c, at, tpath, "\"%s\" is already targets[%zu]", t[i].url, j);
            break;
        }
    }
}

/* ---- load ---- */

static void
config_free(struct md_config *cfg)
{
    if (cfg == NULL)
        return;
    md_cfgtab_free(&root_section, cfg);
    md_free(cfg->source);
    md_free(cfg);
}

int
md_config_load_buf(const char *name, const char *data, size_t len,
    struct md_config **out, struct md_cfg_errors *errs)
{
    struct md_config *cfg;
    int rc;

    cfg = md_calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return MD_ENOMEM;
    cfg->source = md_strdup(name);
    if (cfg->source == NULL) {
        config_free(cfg);
        return MD_ENOMEM;
    }
    rc = md_cfgtab_load(name, data, len, &root_section, cfg, errs);
    if (rc != MD_OK) {
        config_free(cfg);
        return rc;
    }
    cfg->refs = 1;
    *out = cfg;
    return MD_OK;
}

int
md_config_load(const char *path, struct md_config **out, struct md_cfg_errors *errs)
{
    struct md_cfg_errors local;
    char *data = NULL;
    size_t len = 0;
    int rc;

    if (errs == NULL)
        errs = &local;
    rc = md_cfgtab_read_file(path, &data, &len, errs);
    if (rc != MD_OK)
        return rc;
    rc = md_config_load_buf(path, data, len, out, errs);
    md_free(data);
    return rc;
}

struct md_config *
md_config_ref(struct md_config *c)
{
    pthread_mutex_lock(&refs_mu);
    c->refs++;
    pthread_mutex_unlock(&refs_mu);
    return c;
}

void
md_config_unref(struct md_config *c)
{
    int last;

    if (c == NULL)
        return;
    pthread_mutex_lock(&refs_mu);
    last = --c->refs == 0;
    pthread_mutex_unlock(&refs_mu);
    if (last)
        config_free(c);
}

void
md_config_help(FILE *fp)
{
    fputs("meterd.yaml keys (durations take units: 250ms 15s 5m 1h; sizes: 512B 64KiB 16MiB):\n",
        fp);
    md_cfgtab_help(fp, &root_section, "");
}
