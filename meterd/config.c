/* config.c: meterd.yaml -> struct md_config through key tables.
 *
 * libyaml's document loader gives every node its line and column; the loader
 * walks the document against the tables and collects every error (up to
 * MD_CONFIG_ERRORS_MAX) instead of stopping at the first, like smtpd's
 * yyerror counter.  Unknown keys are errors.  Value errors point at the
 * value, unknown or duplicate keys at the key, missing keys at the mapping.
 * A loaded config is immutable; the reference count is the only mutable
 * field and is guarded by refs_mu.  No thread owns a config: whoever holds
 * a reference may read it. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "util.h"

enum ktype {
    K_STR,        /* char * */
    K_BOOL,       /* int */
    K_UINT,       /* uint64_t within [min, max] */
    K_DURATION,   /* uint64_t milliseconds within [min, max] */
    K_SIZE,       /* uint64_t bytes within [min, max] */
    K_ENUM,       /* int: index into values[] */
    K_STRLIST,    /* struct md_strlist, at most max items (0: 1024) */
    K_STRMAP,     /* struct md_strmap, at most max pairs (0: 1024) */
    K_SECTION,    /* nested keys; their offsets are relative to the parent
                   * struct (so "scrape.interval" is OFF(scrape.interval_ms)) */
    K_LIST        /* struct md_cfg_list of sub, at most max items */
};

#define K_REQUIRED 0x1u

struct ctx;
struct section;

/* Extra check of a string value; returns NULL when fine, else the reason. */
typedef const char *md_cfg_check_fn(const char *v);
/* Cross-field validation of a loaded section; node is its mapping (or 0). */
typedef void md_cfg_validate_fn(struct ctx *c, int node, const char *path, void *obj);

struct key {
    const char           *name;
    enum ktype            type;
    size_t                off;
    uint64_t              min, max;
    const char           *def;       /* in YAML syntax; NULL: none */
    const char           *help;
    const struct section *sub;
    const char *const    *values;    /* K_ENUM, NULL-terminated */
    unsigned              flags;
    md_cfg_check_fn      *check;
};

struct section {
    const char         *name;
    const struct key   *keys;
    size_t              size;        /* struct size, for K_LIST elements */
    md_cfg_validate_fn *validate;
};

struct ctx {
    const char           *file;
    yaml_document_t      *doc;
    struct md_cfg_errors *errs;
    size_t                visits;
    int                   nomem;
};

#define LIST_MAX_DEFAULT 1024
#define KEYS_MAX 64

static const char *check_url(const char *v);
static const char *check_listen(const char *v);
static const char *check_dns_label(const char *v);
static const char *check_nonempty(const char *v);
static void validate_scrape(struct ctx *c, int node, const char *path, void *obj);
static void validate_target(struct ctx *c, int node, const char *path, void *obj);
static void validate_root(struct ctx *c, int node, const char *path, void *obj);

static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const log_formats[] = { "logfmt", "json", NULL };

#define OFF(field) offsetof(struct md_config, field)

static const struct key storage_keys[] = {
    { "path", K_STR, OFF(storage.path), 0, 1024, "./var/meterd.db",
      "SQLite database file (created with its directory)", NULL, NULL, 0, check_nonempty },
    { "busy_timeout", K_DURATION, OFF(storage.busy_timeout_ms), 10, 600000, "5s",
      "how long a write waits for a lock held by another process", NULL, NULL, 0, NULL },
    { NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL },
};
static const struct section storage_section = { "storage", storage_keys, 0, NULL };

static const struct key scrape_keys[] = {
    { "interval", K_DURATION, OFF(scrape.interval_ms), 100, 86400000, "15s",
      "time between two scrapes of a target", NULL, NULL, 0, NULL },
    { "timeout", K_DURATION, OFF(scrape.timeout_ms), 100, 86400000, "10s",
      "a scrape taking longer fails (at most the interval)", NULL, NULL, 0, NULL },
    { "body_size_limit", K_SIZE, OFF(scrape.body_size_limit), 1024, 1ULL << 32, "16MiB",
      "a larger (decompressed) scrape body fails", NULL, NULL, 0, NULL },
    { NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL },
};
static const struct section scrape_section = { "scrape", scrape_keys, 0, validate_scrape };

#define TOFF(field) offsetof(struct md_target_cfg, field)
static const struct key target_keys[] = {
    { "url", K_STR, TOFF(url), 0, 2048, NULL,
      "http:// or https:// URL of an ExtProc metrics endpoint", NULL, NULL, K_REQUIRED, check_url },
    { "namespace", K_STR, TOFF(namespace), 0, 63, "",
      "Kubernetes namespace the target belongs to (namespace rules)", NULL, NULL, 0,
      check_dns_label },
    { "labels", K_STRMAP, TOFF(labels), 0, 64, NULL,
      "extra labels attached to the target", NULL, NULL, 0, NULL },
    { NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL },
};
static const struct section target_section = {
    "targets[]", target_keys, sizeof(struct md_target_cfg), validate_target
};

static const struct key log_keys[] = {
    { "level", K_ENUM, OFF(log.level), 0, 0, "info", "debug, info, warn or error",
      NULL, log_levels, 0, NULL },
    { "format", K_ENUM, OFF(log.format), 0, 0, "logfmt", "logfmt or json",
      NULL, log_formats, 0, NULL },
    { NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL },
};
static const struct section log_section = { "log", log_keys, 0, NULL };

static const struct key http_keys[] = {
    { "threads", K_UINT, OFF(http.threads), 1, 64, "4",
      "HTTP worker threads (libmicrohttpd thread pool)", NULL, NULL, 0, NULL },
    { "max_connections", K_UINT, OFF(http.max_connections), 1, 100000, "256",
      "open connections accepted at once", NULL, NULL, 0, NULL },
    { "max_connections_per_ip", K_UINT, OFF(http.max_connections_per_ip), 1, 100000, "64",
      "open connections accepted at once from one client address", NULL, NULL, 0, NULL },
    { "connection_timeout", K_DURATION, OFF(http.connection_timeout_ms), 1000, 3600000, "30s",
      "an idle or slow connection is closed after this", NULL, NULL, 0, NULL },
    { "connection_memory_limit", K_SIZE, OFF(http.connection_memory_limit), 4096, 1ULL << 30,
      "64KiB", "memory per connection for headers and request body", NULL, NULL, 0, NULL },
    { NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL },
};
static const struct section http_section = { "http", http_keys, 0, NULL };

static const struct key root_keys[] = {
    { "cluster", K_STR, OFF(cluster), 0, 253, "default",
      "name of the cluster stamped on every usage row", NULL, NULL, 0, check_nonempty },
    { "listen", K_STR, OFF(listen), 0, 300, "127.0.0.1:9180",
      "HTTP listen address host:port (empty host: all addresses)", NULL, NULL, 0, check_listen },
    { "storage", K_SECTION, 0, 0, 0, NULL, "embedded SQLite store",
      &storage_section, NULL, 0, NULL },
    { "scrape", K_SECTION, 0, 0, 0, NULL, "scrape defaults",
      &scrape_section, NULL, 0, NULL },
    { "targets", K_LIST, OFF(targets), 0, 100000, NULL, "static scrape targets",
      &target_section, NULL, 0, NULL },
    { "log", K_SECTION, 0, 0, 0, NULL, "logging", &log_section, NULL, 0, NULL },
    { "http", K_SECTION, 0, 0, 0, NULL, "HTTP server limits",
      &http_section, NULL, 0, NULL },
    { NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, NULL },
};
static const struct section root_section = {
    "", root_keys, sizeof(struct md_config), validate_root
};

static pthread_mutex_t refs_mu = PTHREAD_MUTEX_INITIALIZER;

/* ---- errors ---- */

static void
verr_at(struct ctx *c, const yaml_mark_t *m, const char *path, const char *fmt, va_list ap)
{
    struct md_cfg_errors *e = c->errs;
    char msg[256];
    char *dst;

    if (e == NULL)
        return;
    if (e->count == MD_CONFIG_ERRORS_MAX) {
        e->truncated = 1;
        return;
    }
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    dst = e->msgs[e->count++];
    if (m != NULL)
        (void)snprintf(dst, sizeof(e->msgs[0]), "%s:%zu:%zu: %s%s%s", c->file,
            m->line + 1, m->column + 1, path, *path ? ": " : "", msg);
    else
        (void)snprintf(dst, sizeof(e->msgs[0]), "%s: %s%s%s", c->file,
            path, *path ? ": " : "", msg);
}

static void __attribute__((format(printf, 4, 5)))
err_at(struct ctx *c, const yaml_mark_t *m, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr_at(c, m, path, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 4, 5)))
err_node(struct ctx *c, int node, const char *path, const char *fmt, ...)
{
    yaml_node_t *n = node ? yaml_document_get_node(c->doc, node) : NULL;
    va_list ap;

    va_start(ap, fmt);
    verr_at(c, n ? &n->start_mark : NULL, path, fmt, ap);
    va_end(ap);
}

/* Position of key `name` inside mapping node, else of the mapping. */
static int
key_node(struct ctx *c, int mapping, const char *name, int want_value)
{
    yaml_node_t *m = mapping ? yaml_document_get_node(c->doc, mapping) : NULL;

    if (m == NULL || m->type != YAML_MAPPING_NODE)
        return mapping;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);

        if (k != NULL && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, name) == 0)
            return want_value ? p->value : p->key;
    }
    return mapping;
}

/* ---- value conversion ---- */

/* Paths like "targets[3].labels" are cut at the buffer size; they only
 * label messages. */
static void __attribute__((format(printf, 3, 4)))
fmt_path(char *dst, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(dst, len, fmt, ap);
    va_end(ap);
}

static void
join_path(char *dst, size_t len, const char *path, const char *name)
{
    fmt_path(dst, len, "%s%s%s", path, *path ? "." : "", name);
}

/* Scalar text of a node, NULL if the node is not a scalar. */
static const char *
scalar(yaml_node_t *n, size_t *len)
{
    if (n == NULL || n->type != YAML_SCALAR_NODE)
        return NULL;
    *len = n->data.scalar.length;
    return (const char *)n->data.scalar.value;
}

static int
is_null_scalar(yaml_node_t *n)
{
    size_t len;
    const char *s = scalar(n, &len);

    if (s == NULL || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    return len == 0 || (len == 1 && s[0] == '~') || (len == 4 && memcmp(s, "null", 4) == 0);
}

static const char *
type_name(enum ktype t)
{
    switch (t) {
    case K_STR:      return "a string";
    case K_BOOL:     return "true or false";
    case K_UINT:     return "a whole number";
    case K_DURATION: return "a duration (e.g. 15s)";
    case K_SIZE:     return "a size (e.g. 16MiB)";
    case K_ENUM:     return "one of the listed words";
    case K_STRLIST:  return "a list of strings";
    case K_STRMAP:   return "a mapping of strings";
    case K_SECTION:  return "a mapping";
    case K_LIST:     return "a list";
    }
    return "?";
}

/* Converts scalar text to the field.  m == NULL: a table default. */
static int
convert_scalar(struct ctx *c, const struct key *k, const char *s, size_t len,
    void *field, const yaml_mark_t *m, const char *path)
{
    struct md_err err = {0};
    uint64_t v = 0;
    int rc = MD_OK;

    switch (k->type) {
    case K_STR: {
        uint64_t max = k->max ? k->max : MD_CONFIG_STR_MAX;
        const char *why;
        char *d;

        if (len > max) {
            err_at(c, m, path, "value is %zu bytes, longer than the limit of %llu",
                len, (unsigned long long)max);
            return MD_ECONFIG;
        }
        if (memchr(s, '\0', len) != NULL) {
            err_at(c, m, path, "value contains a NUL byte");
            return MD_ECONFIG;
        }
        if (k->check != NULL && (why = k->check(s)) != NULL) {
            err_at(c, m, path, "\"%.*s\": %s", (int)(len > 80 ? 80 : len), s, why);
            return MD_ECONFIG;
        }
        d = md_strndup(s, len);
        if (d == NULL) {
            c->nomem = 1;
            return MD_ENOMEM;
        }
        md_free(*(char **)field);
        *(char **)field = d;
        return MD_OK;
    }
    case K_BOOL:
        if (len == 4 && memcmp(s, "true", 4) == 0)
            *(int *)field = 1;
        else if (len == 5 && memcmp(s, "false", 5) == 0)
            *(int *)field = 0;
        else {
            err_at(c, m, path, "\"%.*s\" is not true or false", (int)(len > 40 ? 40 : len), s);
            return MD_ECONFIG;
        }
        return MD_OK;
    case K_ENUM:
        for (int i = 0; k->values[i] != NULL; i++) {
            if (strlen(k->values[i]) == len && memcmp(k->values[i], s, len) == 0) {
                *(int *)field = i;
                return MD_OK;
            }
        }
        {
            char opts[160] = "";

            for (int i = 0; k->values[i] != NULL; i++) {
                size_t o = strlen(opts);

                (void)snprintf(opts + o, sizeof(opts) - o, "%s%s", i ? ", " : "", k->values[i]);
            }
            err_at(c, m, path, "\"%.*s\" is not one of: %s", (int)(len > 40 ? 40 : len), s, opts);
        }
        return MD_ECONFIG;
    case K_UINT:
        rc = md_parse_u64(s, len, UINT64_MAX, &v);
        if (rc != MD_OK)
            (void)md_err_set(&err, rc, rc == MD_ELIMIT ? "number too large" : "not a whole number");
        break;
    case K_DURATION:
        rc = md_parse_duration_ms(s, len, &v, &err);
        break;
    case K_SIZE:
        rc = md_parse_size(s, len, &v, &err);
        break;
    default:
        err_at(c, m, path, "expected %s", type_name(k->type));
        return MD_ECONFIG;
    }
    if (rc != MD_OK) {
        err_at(c, m, path, "\"%.*s\" %s", (int)(len > 40 ? 40 : len), s, err.msg);
        return MD_ECONFIG;
    }
    if (v < k->min || v > k->max) {
        char lo[32], hi[32];

        if (k->type == K_DURATION) {
            md_fmt_duration(k->min, lo, sizeof(lo));
            md_fmt_duration(k->max, hi, sizeof(hi));
        } else {
            (void)snprintf(lo, sizeof(lo), "%llu", (unsigned long long)k->min);
            (void)snprintf(hi, sizeof(hi), "%llu", (unsigned long long)k->max);
        }
        err_at(c, m, path, "\"%.*s\" is out of range [%s, %s]%s", (int)(len > 40 ? 40 : len), s,
            lo, hi, k->type == K_SIZE ? " bytes" : "");
        return MD_ECONFIG;
    }
    *(uint64_t *)field = v;
    return MD_OK;
}

static int visit(struct ctx *c, int node, const char *path);
static void *field_of(const struct key *k, void *obj);
static void load_section(struct ctx *c, int node, const struct section *sec, void *obj,
    const char *path);
static void free_section(const struct section *sec, void *obj);

static int
visit(struct ctx *c, int node, const char *path)
{
    if (++c->visits == MD_CONFIG_NODES_MAX + 1)
        err_node(c, node, path, "document has more than %d nodes (aliases expanding?)",
            MD_CONFIG_NODES_MAX);
    return c->visits <= MD_CONFIG_NODES_MAX;
}

static int
str_dup_node(struct ctx *c, yaml_node_t *n, char **out, const char *path, size_t max)
{
    size_t len;
    const char *s = scalar(n, &len);

    if (s == NULL) {
        err_at(c, n ? &n->start_mark : NULL, path, "expected a string");
        return MD_ECONFIG;
    }
    if (len > max) {
        err_at(c, &n->start_mark, path, "value is %zu bytes, longer than the limit of %zu",
            len, max);
        return MD_ECONFIG;
    }
    if (memchr(s, '\0', len) != NULL) {
        err_at(c, &n->start_mark, path, "value contains a NUL byte");
        return MD_ECONFIG;
    }
    *out = md_strndup(s, len);
    if (*out == NULL) {
        c->nomem = 1;
        return MD_ENOMEM;
    }
    return MD_OK;
}

static void
load_value(struct ctx *c, const struct key *k, int node, void *field, const char *path)
{
    yaml_node_t *n = yaml_document_get_node(c->doc, node);
    size_t max = k->max ? (size_t)k->max : LIST_MAX_DEFAULT;

    if (!visit(c, node, path))
        return;
    switch (k->type) {
    case K_SECTION:
        if (is_null_scalar(n)) {
            load_section(c, 0, k->sub, field, path);
            return;
        }
        if (n->type != YAML_MAPPING_NODE) {
            err_at(c, &n->start_mark, path, "expected a mapping");
            load_section(c, 0, k->sub, field, path);
            return;
        }
        load_section(c, node, k->sub, field, path);
        return;
    case K_LIST: {
        struct md_cfg_list *l = field;
        size_t count, i = 0;
        char *v;

        if (is_null_scalar(n))
            return;
        if (n->type != YAML_SEQUENCE_NODE) {
            err_at(c, &n->start_mark, path, "expected a list");
            return;
        }
        count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (count > max) {
            err_at(c, &n->start_mark, path, "%zu items, more than the limit of %zu", count, max);
            return;
        }
        if (count == 0)
            return;
        v = md_calloc(count, k->sub->size);
        if (v == NULL) {
            c->nomem = 1;
            return;
        }
        l->v = v;
        l->count = count;
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             it < n->data.sequence.items.top; it++, i++) {
            yaml_node_t *e = yaml_document_get_node(c->doc, *it);
            char epath[256];

            fmt_path(epath, sizeof(epath), "%s[%zu]", path, i);
            if (e->type != YAML_MAPPING_NODE) {
                err_at(c, &e->start_mark, epath, "expected a mapping");
                continue;
            }
            load_section(c, *it, k->sub, v + i * k->sub->size, epath);
        }
        return;
    }
    case K_STRLIST: {
        struct md_strlist *l = field;
        size_t count, i = 0;

        if (is_null_scalar(n))
            return;
        if (n->type != YAML_SEQUENCE_NODE) {
            err_at(c, &n->start_mark, path, "expected a list of strings");
            return;
        }
        count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (count > max) {
            err_at(c, &n->start_mark, path, "%zu items, more than the limit of %zu", count, max);
            return;
        }
        if (count == 0)
            return;
        l->v = md_calloc(count, sizeof(char *));
        if (l->v == NULL) {
            c->nomem = 1;
            return;
        }
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             it < n->data.sequence.items.top; it++, i++) {
            char epath[256];
            const char *why;

            fmt_path(epath, sizeof(epath), "%s[%zu]", path, i);
            if (!visit(c, *it, epath))
                return;
            if (str_dup_node(c, yaml_document_get_node(c->doc, *it), &l->v[l->count],
                    epath, MD_CONFIG_STR_MAX) != MD_OK)
                continue;
            if (k->check != NULL && (why = k->check(l->v[l->count])) != NULL) {
                err_node(c, *it, epath, "\"%s\": %s", l->v[l->count], why);
                md_free(l->v[l->count]);
                l->v[l->count] = NULL;
                continue;
            }
            l->count++;
        }
        return;
    }
    case K_STRMAP: {
        struct md_strmap *mp = field;
        size_t count;

        if (is_null_scalar(n))
            return;
        if (n->type != YAML_MAPPING_NODE) {
            err_at(c, &n->start_mark, path, "expected a mapping of strings");
            return;
        }
        count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
        if (count > max) {
            err_at(c, &n->start_mark, path, "%zu entries, more than the limit of %zu", count, max);
            return;
        }
        if (count == 0)
            return;
        mp->keys = md_calloc(count, sizeof(char *));
        mp->vals = md_calloc(count, sizeof(char *));
        if (mp->keys == NULL || mp->vals == NULL) {
            c->nomem = 1;
            return;
        }
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
            char *kv = NULL, *vv = NULL;
            char epath[256];
            int dup = 0;

            if (!visit(c, p->value, path))
                return;
            if (str_dup_node(c, kn, &kv, path, 256) != MD_OK)
                continue;
            join_path(epath, sizeof(epath), path, kv);
            for (size_t j = 0; j < mp->count; j++)
                dup |= strcmp(mp->keys[j], kv) == 0;
            if (dup) {
                err_at(c, &kn->start_mark, epath, "duplicate key");
                md_free(kv);
                continue;
            }
            if (str_dup_node(c, yaml_document_get_node(c->doc, p->value), &vv, epath,
                    MD_CONFIG_STR_MAX) != MD_OK) {
                md_free(kv);
                continue;
            }
            mp->keys[mp->count] = kv;
            mp->vals[mp->count] = vv;
            mp->count++;
        }
        return;
    }
    default: {
        size_t len;
        const char *s = scalar(n, &len);

        if (s == NULL) {
            err_at(c, &n->start_mark, path, "expected %s", type_name(k->type));
            return;
        }
        (void)convert_scalar(c, k, s, len, field, &n->start_mark, path);
        return;
    }
    }
}

/* Levenshtein distance, capped; for "did you mean" on unknown keys. */
static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

    if (la >= 63 || lb >= 63)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;

            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(size_t) * (lb + 1));
    }
    return prev[lb];
}

static void *
field_of(const struct key *k, void *obj)
{
    return k->type == K_SECTION ? obj : (char *)obj + k->off;
}

static void
apply_default(struct ctx *c, const struct key *k, void *field, const char *path)
{
    if (k->type == K_SECTION) {
        load_section(c, 0, k->sub, field, path);
        return;
    }
    if (k->def == NULL)
        return;
    /* a table default that fails is a programming error; the unit tests load
     * an empty file to prove every default converts */
    (void)convert_scalar(c, k, k->def, strlen(k->def), field, NULL, path);
}

static void
load_section(struct ctx *c, int node, const struct section *sec, void *obj, const char *path)
{
    yaml_node_t *n = node ? yaml_document_get_node(c->doc, node) : NULL;
    unsigned char seen[KEYS_MAX] = {0};
    size_t nkeys = 0, errors_before = c->errs ? c->errs->count : 0;

    while (sec->keys[nkeys].name != NULL)
        nkeys++;
    if (n != NULL) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
            const struct key *k = NULL;
            size_t klen, idx = 0;
            const char *ks = scalar(kn, &klen);
            char kpath[256];

            if (ks == NULL) {
                err_at(c, &kn->start_mark, path, "a key must be a plain string");
                continue;
            }
            for (idx = 0; idx < nkeys; idx++) {
                if (strlen(sec->keys[idx].name) == klen &&
                    memcmp(sec->keys[idx].name, ks, klen) == 0) {
                    k = &sec->keys[idx];
                    break;
                }
            }
            join_path(kpath, sizeof(kpath), path, ks);
            if (k == NULL) {
                const char *best = NULL;
                size_t bestd = 3;

                for (size_t j = 0; j < nkeys; j++) {
                    size_t d = edit_distance(ks, sec->keys[j].name);

                    if (d < bestd) {
                        bestd = d;
                        best = sec->keys[j].name;
                    }
                }
                if (best != NULL)
                    err_at(c, &kn->start_mark, kpath, "unknown key (did you mean \"%s\"?)", best);
                else
                    err_at(c, &kn->start_mark, kpath, "unknown key");
                continue;
            }
            if (seen[idx]) {
                err_at(c, &kn->start_mark, kpath, "duplicate key");
                continue;
            }
            seen[idx] = 1;
            load_value(c, k, p->value, field_of(k, obj), kpath);
        }
    }
    for (size_t i = 0; i < nkeys; i++) {
        const struct key *k = &sec->keys[i];
        char kpath[256];

        if (seen[i])
            continue;
        join_path(kpath, sizeof(kpath), path, k->name);
        if (k->flags & K_REQUIRED) {
            if (n != NULL)
                err_at(c, &n->start_mark, path[0] ? path : kpath,
                    "missing required key \"%s\"", k->name);
            else
                err_at(c, NULL, kpath, "missing required key \"%s\"", k->name);
            continue;
        }
        apply_default(c, k, field_of(k, obj), kpath);
    }
    /* cross-field rules only make sense when every field converted */
    if (sec->validate != NULL && (c->errs == NULL || c->errs->count == errors_before))
        sec->validate(c, node, path, obj);
}

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
validate_scrape(struct ctx *c, int node, const char *path, void *obj)
{
    struct md_config *cfg = obj;
    char a[32], b[32];

    if (cfg->scrape.timeout_ms > cfg->scrape.interval_ms) {
        md_fmt_duration(cfg->scrape.timeout_ms, a, sizeof(a));
        md_fmt_duration(cfg->scrape.interval_ms, b, sizeof(b));
        err_node(c, key_node(c, node, "timeout", 1), path[0] ? "scrape.timeout" : path,
            "%s is longer than scrape.interval (%s)", a, b);
    }
}

static void
validate_target(struct ctx *c, int node, const char *path, void *obj)
{
    struct md_target_cfg *t = obj;

    for (size_t i = 0; i < t->labels.count; i++) {
        char lpath[256];

        if (valid_label_name(t->labels.keys[i]) && strncmp(t->labels.keys[i], "__", 2) != 0)
            continue;
        join_path(lpath, sizeof(lpath), path, "labels");
        err_node(c, key_node(c, key_node(c, node, "labels", 1), t->labels.keys[i], 0), lpath,
            "\"%s\" is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)",
            t->labels.keys[i]);
    }
}

static void
validate_root(struct ctx *c, int node, const char *path, void *obj)
{
    struct md_config *cfg = obj;
    struct md_target_cfg *t = cfg->targets.v;
    int list = key_node(c, node, "targets", 1);
    yaml_node_t *ln = list ? yaml_document_get_node(c->doc, list) : NULL;

    (void)path;
    for (size_t i = 1; i < cfg->targets.count; i++) {
        for (size_t j = 0; j < i; j++) {
            char tpath[64];
            int at = list;

            if (t[i].url == NULL || t[j].url == NULL || strcmp(t[i].url, t[j].url) != 0)
                continue;
            if (ln != NULL && ln->type == YAML_SEQUENCE_NODE)
                at = key_node(c, ln->data.sequence.items.start[i], "url", 1);
            (void)snprintf(tpath, sizeof(tpath), "targets[%zu].url", i);
            err_node(c, at, tpath, "\"%s\" is already targets[%zu]", t[i].url, j);
            break;
        }
    }
}

/* ---- free ---- */

static void
free_section(const struct section *sec, void *obj)
{
    for (const struct key *k = sec->keys; k->name != NULL; k++) {
        void *f = field_of(k, obj);

        switch (k->type) {
        case K_STR:
            md_free(*(char **)f);
            *(char **)f = NULL;
            break;
        case K_STRLIST: {
            struct md_strlist *l = f;

            for (size_t i = 0; i < l->count; i++)
                md_free(l->v[i]);
            md_free(l->v);
            l->v = NULL;
            l->count = 0;
            break;
        }
        case K_STRMAP: {
            struct md_strmap *m = f;

            for (size_t i = 0; i < m->count; i++) {
                md_free(m->keys[i]);
                md_free(m->vals[i]);
            }
            md_free(m->keys);
            md_free(m->vals);
            m->keys = m->vals = NULL;
            m->count = 0;
            break;
        }
        case K_SECTION:
            free_section(k->sub, f);
            break;
        case K_LIST: {
            struct md_cfg_list *l = f;

            for (size_t i = 0; i < l->count; i++)
                free_section(k->sub, (char *)l->v + i * k->sub->size);
            md_free(l->v);
            l->v = NULL;
            l->count = 0;
            break;
        }
        default:
            break;
        }
    }
}

static void
config_free(struct md_config *cfg)
{
    if (cfg == NULL)
        return;
    free_section(&root_section, cfg);
    md_free(cfg->source);
    md_free(cfg);
}

/* ---- load ---- */

int
md_config_load_buf(const char *name, const char *data, size_t len,
    struct md_config **out, struct md_cfg_errors *errs)
{
    struct md_cfg_errors local;
    yaml_parser_t parser;
    yaml_document_t doc;
    struct md_config *cfg;
    struct ctx c = {0};
    yaml_node_t *root;
    int rc = MD_OK;

    if (errs == NULL)
        errs = &local;
    errs->count = 0;
    errs->truncated = 0;
    c.file = name;
    c.errs = errs;
    if (len > MD_CONFIG_FILE_MAX) {
        err_at(&c, NULL, "", "file is larger than %u bytes", MD_CONFIG_FILE_MAX);
        return MD_ECONFIG;
    }
    cfg = md_calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return MD_ENOMEM;
    cfg->source = md_strdup(name);
    if (cfg->source == NULL || !yaml_parser_initialize(&parser)) {
        config_free(cfg);
        return MD_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_mark_t m = parser.problem_mark;

        err_at(&c, &m, "", "YAML syntax: %s%s%s", parser.problem ? parser.problem : "error",
            parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        config_free(cfg);
        return parser.error == YAML_MEMORY_ERROR ? MD_ENOMEM : MD_ECONFIG;
    }
    c.doc = &doc;
    root = yaml_document_get_root_node(&doc);
    if (root == NULL || is_null_scalar(root)) {
        load_section(&c, 0, &root_section, cfg, "");
    } else if (root->type != YAML_MAPPING_NODE) {
        err_at(&c, &root->start_mark, "", "expected a mapping at the top level");
    } else {
        load_section(&c, 1, &root_section, cfg, "");
    }
    yaml_document_delete(&doc);
    /* a second document after "---" would be ignored silently: refuse it */
    if (errs->count == 0 && !c.nomem) {
        yaml_document_t extra;

        if (yaml_parser_load(&parser, &extra)) {
            yaml_node_t *r = yaml_document_get_root_node(&extra);

            if (r != NULL)
                err_at(&c, &r->start_mark, "", "only one YAML document is allowed");
            yaml_document_delete(&extra);
        }
    }
    yaml_parser_delete(&parser);
    if (c.nomem)
        rc = MD_ENOMEM;
    else if (errs->count > 0)
        rc = MD_ECONFIG;
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
    size_t len = 0, cap = 0;
    FILE *fp;
    int rc;

    if (errs == NULL)
        errs = &local;
    errs->count = 0;
    errs->truncated = 0;
    fp = fopen(path, "rb");
    if (fp == NULL) {
        (void)snprintf(errs->msgs[0], sizeof(errs->msgs[0]), "%s: cannot open: %s",
            path, strerror(errno));
        errs->count = 1;
        return MD_EIO;
    }
    for (;;) {
        size_t n;

        if (len == cap) {
            char *p;

            if (cap > MD_CONFIG_FILE_MAX) {
                (void)snprintf(errs->msgs[0], sizeof(errs->msgs[0]),
                    "%s: file is larger than %u bytes", path, MD_CONFIG_FILE_MAX);
                errs->count = 1;
                md_free(data);
                (void)fclose(fp);
                return MD_ECONFIG;
            }
            cap = cap ? cap * 2 : 8192;
            p = md_realloc(data, cap + 1);
            if (p == NULL) {
                md_free(data);
                (void)fclose(fp);
                return MD_ENOMEM;
            }
            data = p;
        }
        n = fread(data + len, 1, cap - len, fp);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(fp)) {
        (void)snprintf(errs->msgs[0], sizeof(errs->msgs[0]), "%s: read error", path);
        errs->count = 1;
        md_free(data);
        (void)fclose(fp);
        return MD_EIO;
    }
    (void)fclose(fp);
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

/* ---- help ---- */

static void
help_section(FILE *fp, const struct section *sec, const char *path)
{
    for (const struct key *k = sec->keys; k->name != NULL; k++) {
        char kpath[256];

        join_path(kpath, sizeof(kpath), path, k->name);
        if (k->type == K_SECTION) {
            help_section(fp, k->sub, kpath);
            continue;
        }
        fprintf(fp, "  %-36s %s", kpath, type_name(k->type));
        if (k->type == K_ENUM) {
            fputs(" [", fp);
            for (int i = 0; k->values[i] != NULL; i++)
                fprintf(fp, "%s%s", i ? "|" : "", k->values[i]);
            fputc(']', fp);
        }
        if (k->type == K_UINT || k->type == K_SIZE)
            fprintf(fp, ", %llu..%llu", (unsigned long long)k->min, (unsigned long long)k->max);
        if (k->type == K_DURATION) {
            char lo[32], hi[32];

            md_fmt_duration(k->min, lo, sizeof(lo));
            md_fmt_duration(k->max, hi, sizeof(hi));
            fprintf(fp, ", %s..%s", lo, hi);
        }
        if (k->flags & K_REQUIRED)
            fputs(", required", fp);
        else if (k->def != NULL)
            fprintf(fp, ", default \"%s\"", k->def);
        fprintf(fp, "\n  %-36s   %s\n", "", k->help);
        if (k->type == K_LIST) {
            char epath[256];

            fmt_path(epath, sizeof(epath), "%s[]", kpath);
            help_section(fp, k->sub, epath);
        }
    }
}

void
md_config_help(FILE *fp)
{
    fputs("meterd.yaml keys (durations take units: 250ms 15s 5m 1h; sizes: 512B 64KiB 16MiB):\n",
        fp);
    help_section(fp, &root_section, "");
}
