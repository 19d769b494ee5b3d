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
static void validate_scrape(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_target(struct md_cfg_ctx *c, int node, const char *path, void *obj);
static void validate_root(struct md_cfg_ctx *c, int node, const char *path, void *obj);

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
      .help = "an idle or slow connection is closed after this" },
    { .name = "connection_memory_limit", .type = MD_CFG_SIZE,
      .off = OFF(http.connection_memory_limit), .min = 4096, .max = 1ULL << 30,
      .def = "64KiB", .help = "memory per connection for headers and request body" },
    END,
};
static const struct md_cfg_section http_section = { .name = "http", .keys = http_keys };

static const struct md_cfg_key pricing_keys[] = {
    { .name = "file", .type = MD_CFG_STR, .off = OFF(pricing.file), .max = 1024,
      .def = "config/pricing.yaml", .check = check_nonempty,
      .help = "pricing models YAML (meterd/pricing.h; `meterd pricing check FILE`)" },
    END,
};
static const struct md_cfg_section pricing_section = { .name = "pricing", .keys = pricing_keys };

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
    { .name = "http", .type = MD_CFG_SECTION, .sub = &http_section,
      .help = "HTTP server limits" },
    END,
};
static const struct md_cfg_section root_section = {
    .name = "", .keys = root_keys, .size = sizeof(struct md_config), .validate = validate_root
};

static pthread_mutex_t refs_mu = PTHREAD_MUTEX_INITIALIZER;
/* ---- checks ---- */

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
