/* cfgtab.c: the key-table engine behind every YAML file meterd reads.
 *
 * libyaml's document loader gives every node its line and column; the engine
 * walks the document against the tables and collects every error (up to
 * MD_CONFIG_ERRORS_MAX) instead of stopping at the first, like smtpd's
 * yyerror counter.  Unknown keys are errors.  Value errors point at the
 * value, unknown or duplicate keys at the key, missing keys at the mapping.
 * Stateless: all state lives in the md_cfg_ctx of one load, on the caller's
 * stack, so any thread may load. */
#include "cfgtab.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "util.h"

struct md_cfg_ctx {
    const char           *file;
    yaml_document_t      *doc;
    struct md_cfg_errors *errs;
    size_t                visits;
    int                   nomem;
};

/* ---- errors ---- */

static void __attribute__((format(printf, 4, 0)))
verr_at(struct md_cfg_ctx *c, const yaml_mark_t *m, const char *path, const char *fmt, va_list ap)
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
err_at(struct md_cfg_ctx *c, const yaml_mark_t *m, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verr_at(c, m, path, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 4, 5)))
err_node(struct md_cfg_ctx *c, int node, const char *path, const char *fmt, ...)
{
    yaml_node_t *n = node ? yaml_document_get_node(c->doc, node) : NULL;
    va_list ap;

    va_start(ap, fmt);
    verr_at(c, n ? &n->start_mark : NULL, path, fmt, ap);
    va_end(ap);
}

/* Position of key `name` inside mapping node, else of the mapping. */
static int
key_node(struct md_cfg_ctx *c, int mapping, const char *name, int want_value)
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
type_name(enum md_cfg_type t)
{
    switch (t) {
    case MD_CFG_STR:      return "a string";
    case MD_CFG_BOOL:     return "true or false";
    case MD_CFG_UINT:     return "a whole number";
    case MD_CFG_SCALAR:   return "a value";
    case MD_CFG_DURATION: return "a duration (e.g. 15s)";
    case MD_CFG_SIZE:     return "a size (e.g. 16MiB)";
    case MD_CFG_ENUM:     return "one of the listed words";
    case MD_CFG_STRLIST:  return "a list of strings";
    case MD_CFG_STRMAP:   return "a mapping of strings";
    case MD_CFG_SECTION:  return "a mapping";
    case MD_CFG_LIST:     return "a list";
    }
    return "?";
}

/* Converts scalar text to the field.  m == NULL: a table default. */
static int
convert_scalar(struct md_cfg_ctx *c, const struct md_cfg_key *k, const char *s, size_t len,
    void *field, const yaml_mark_t *m, const char *path)
{
    struct md_err err = {0};
    uint64_t v = 0;
    int rc = MD_OK;

    switch (k->type) {
    case MD_CFG_STR: {
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
    case MD_CFG_BOOL:
        if (len == 4 && memcmp(s, "true", 4) == 0)
            *(int *)field = 1;
        else if (len == 5 && memcmp(s, "false", 5) == 0)
            *(int *)field = 0;
        else {
            err_at(c, m, path, "\"%.*s\" is not true or false", (int)(len > 40 ? 40 : len), s);
            return MD_ECONFIG;
        }
        return MD_OK;
    case MD_CFG_ENUM:
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
    case MD_CFG_UINT:
        rc = md_parse_u64(s, len, UINT64_MAX, &v);
        if (rc != MD_OK)
            (void)md_err_set(&err, rc, rc == MD_ELIMIT ? "number too large" : "not a whole number");
        break;
    case MD_CFG_DURATION:
        rc = md_parse_duration_ms(s, len, &v, &err);
        break;
    case MD_CFG_SIZE:
        rc = md_parse_size(s, len, &v, &err);
        break;
    case MD_CFG_SCALAR: {
        const char *why = k->conv(s, len, field);

        if (why != NULL) {
            err_at(c, m, path, "\"%.*s\": %s", (int)(len > 80 ? 80 : len), s, why);
            return MD_ECONFIG;
        }
        return MD_OK;
    }
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

        if (k->type == MD_CFG_DURATION) {
            md_fmt_duration(k->min, lo, sizeof(lo));
            md_fmt_duration(k->max, hi, sizeof(hi));
        } else {
            (void)snprintf(lo, sizeof(lo), "%llu", (unsigned long long)k->min);
            (void)snprintf(hi, sizeof(hi), "%llu", (unsigned long long)k->max);
        }
        err_at(c, m, path, "\"%.*s\" is out of range [%s, %s]%s", (int)(len > 40 ? 40 : len), s,
            lo, hi, k->type == MD_CFG_SIZE ? " bytes" : "");
        return MD_ECONFIG;
    }
    *(uint64_t *)field = v;
    return MD_OK;
}

static int visit(struct md_cfg_ctx *c, int node, const char *path);
static void *field_of(const struct md_cfg_key *k, void *obj);
static void load_section(struct md_cfg_ctx *c, int node, const struct md_cfg_section *sec, void *obj,
    const char *path);
static void free_section(const struct md_cfg_section *sec, void *obj);

static int
visit(struct md_cfg_ctx *c, int node, const char *path)
{
    if (++c->visits == MD_CONFIG_NODES_MAX + 1)
        err_node(c, node, path, "document has more than %d nodes (aliases expanding?)",
            MD_CONFIG_NODES_MAX);
    return c->visits <= MD_CONFIG_NODES_MAX;
}

static int
str_dup_node(struct md_cfg_ctx *c, yaml_node_t *n, char **out, const char *path, size_t max)
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
load_value(struct md_cfg_ctx *c, const struct md_cfg_key *k, int node, void *field, const char *path)
{
    yaml_node_t *n = yaml_document_get_node(c->doc, node);
    size_t max = k->max ? (size_t)k->max : MD_CFG_LIST_MAX_DEFAULT;

    if (!visit(c, node, path))
        return;
    switch (k->type) {
    case MD_CFG_SECTION:
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
    case MD_CFG_LIST: {
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
    case MD_CFG_STRLIST: {
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
    case MD_CFG_STRMAP: {
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
field_of(const struct md_cfg_key *k, void *obj)
{
    return k->type == MD_CFG_SECTION ? obj : (char *)obj + k->off;
}

static void
apply_default(struct md_cfg_ctx *c, const struct md_cfg_key *k, void *field, const char *path)
{
    if (k->type == MD_CFG_SECTION) {
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
load_section(struct md_cfg_ctx *c, int node, const struct md_cfg_section *sec, void *obj, const char *path)
{
    yaml_node_t *n = node ? yaml_document_get_node(c->doc, node) : NULL;
    unsigned char seen[MD_CFG_KEYS_MAX] = {0};
    size_t nkeys = 0, errors_before = c->errs ? c->errs->count : 0;

    while (sec->keys[nkeys].name != NULL)
        nkeys++;
    if (n != NULL) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
            const struct md_cfg_key *k = NULL;
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
        const struct md_cfg_key *k = &sec->keys[i];
        char kpath[256];

        if (seen[i])
            continue;
        join_path(kpath, sizeof(kpath), path, k->name);
        if (k->flags & MD_CFG_REQUIRED) {
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

/* ---- free ---- */

static void
free_section(const struct md_cfg_section *sec, void *obj)
{
    for (const struct md_cfg_key *k = sec->keys; k->name != NULL; k++) {
        void *f = field_of(k, obj);

        switch (k->type) {
        case MD_CFG_STR:
            md_free(*(char **)f);
            *(char **)f = NULL;
            break;
        case MD_CFG_STRLIST: {
            struct md_strlist *l = f;

            for (size_t i = 0; i < l->count; i++)
                md_free(l->v[i]);
            md_free(l->v);
            l->v = NULL;
            l->count = 0;
            break;
        }
        case MD_CFG_STRMAP: {
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
        case MD_CFG_SECTION:
            free_section(k->sub, f);
            break;
        case MD_CFG_LIST: {
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
    if (sec->free_extra != NULL)
        sec->free_extra(obj);
}

/* ---- public ---- */

void
md_cfgtab_error(struct md_cfg_ctx *c, int node, const char *path, const char *fmt, ...)
{
    yaml_node_t *n = node ? yaml_document_get_node(c->doc, node) : NULL;
    va_list ap;

    va_start(ap, fmt);
    verr_at(c, n ? &n->start_mark : NULL, path, fmt, ap);
    va_end(ap);
}

int
md_cfgtab_key_node(struct md_cfg_ctx *c, int mapping, const char *name, int want_value)
{
    return key_node(c, mapping, name, want_value);
}

int
md_cfgtab_item_node(struct md_cfg_ctx *c, int seq, size_t i)
{
    yaml_node_t *n = seq ? yaml_document_get_node(c->doc, seq) : NULL;

    if (n == NULL || n->type != YAML_SEQUENCE_NODE ||
        i >= (size_t)(n->data.sequence.items.top - n->data.sequence.items.start))
        return seq;
    return n->data.sequence.items.start[i];
}

void
md_cfgtab_free(const struct md_cfg_section *root, void *obj)
{
    free_section(root, obj);
}

int
md_cfgtab_load(const char *name, const char *data, size_t len,
    const struct md_cfg_section *root_sec, void *obj, struct md_cfg_errors *errs)
{
    struct md_cfg_errors local;
    yaml_parser_t parser;
    yaml_document_t doc;
    struct md_cfg_ctx c = {0};
    yaml_node_t *root;

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
    if (!yaml_parser_initialize(&parser))
        return MD_ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_mark_t m = parser.problem_mark;
        int nomem = parser.error == YAML_MEMORY_ERROR;

        err_at(&c, &m, "", "YAML syntax: %s%s%s", parser.problem ? parser.problem : "error",
            parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return nomem ? MD_ENOMEM : MD_ECONFIG;
    }
    c.doc = &doc;
    root = yaml_document_get_root_node(&doc);
    if (root == NULL || is_null_scalar(root))
        load_section(&c, 0, root_sec, obj, "");
    else if (root->type != YAML_MAPPING_NODE)
        err_at(&c, &root->start_mark, "", "expected a mapping at the top level");
    else
        load_section(&c, 1, root_sec, obj, "");
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
        return MD_ENOMEM;
    return errs->count > 0 ? MD_ECONFIG : MD_OK;
}

int
md_cfgtab_read_file(const char *path, char **out, size_t *out_len, struct md_cfg_errors *errs)
{
    char *data = NULL;
    size_t len = 0, cap = 0;
    FILE *fp;

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
    data[len] = '\0';
    *out = data;
    *out_len = len;
    return MD_OK;
}

/* ---- help ---- */

static void
help_section(FILE *fp, const struct md_cfg_section *sec, const char *path)
{
    for (const struct md_cfg_key *k = sec->keys; k->name != NULL; k++) {
        char kpath[256];

        join_path(kpath, sizeof(kpath), path, k->name);
        if (k->type == MD_CFG_SECTION) {
            help_section(fp, k->sub, kpath);
            continue;
        }
        fprintf(fp, "  %-36s %s", kpath, type_name(k->type));
        if (k->type == MD_CFG_ENUM) {
            fputs(" [", fp);
            for (int i = 0; k->values[i] != NULL; i++)
                fprintf(fp, "%s%s", i ? "|" : "", k->values[i]);
            fputc(']', fp);
        }
        if (k->type == MD_CFG_UINT || k->type == MD_CFG_SIZE)
            fprintf(fp, ", %llu..%llu", (unsigned long long)k->min, (unsigned long long)k->max);
        if (k->type == MD_CFG_DURATION) {
            char lo[32], hi[32];

            md_fmt_duration(k->min, lo, sizeof(lo));
            md_fmt_duration(k->max, hi, sizeof(hi));
            fprintf(fp, ", %s..%s", lo, hi);
        }
        if (k->flags & MD_CFG_REQUIRED)
            fputs(", required", fp);
        else if (k->def != NULL)
            fprintf(fp, ", default \"%s\"", k->def);
        fprintf(fp, "\n  %-36s   %s\n", "", k->help);
        if (k->type == MD_CFG_LIST) {
            char epath[256];

            fmt_path(epath, sizeof(epath), "%s[]", kpath);
            help_section(fp, k->sub, epath);
        }
    }
}

void
md_cfgtab_help(FILE *fp, const struct md_cfg_section *root, const char *prefix)
{
    help_section(fp, root, prefix);
}

void
md_cfgtab_print_errors(FILE *fp, const struct md_cfg_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        fprintf(fp, "%s\n", errs->msgs[i]);
    if (errs->truncated)
        fprintf(fp, "(more than %d errors; stopped counting)\n", MD_CONFIG_ERRORS_MAX);
}
