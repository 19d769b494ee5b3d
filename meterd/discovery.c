/* discovery.c: the pure half of Kubernetes pod discovery: PodList JSON ->
 * scrape targets (see discovery.h for which pods qualify and why).
 *
 * No I/O, no logging, no shared state: every call works on the caller's
 * result, so any thread may decode.  Invariants: a result's strings are
 * never NULL; a failed decode leaves the result exactly as it was (targets
 * appended by the failing page are freed, stats restored); every string
 * taken from the API is bounded and free of control characters before it
 * is kept, since it ends up in logs, labels and URLs. */
#include "discovery.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum skip {
    SKIP_NONE = 0,
    SKIP_INVALID,
    SKIP_NOT_RUNNING,
    SKIP_DELETING,
    SKIP_NO_IP,
    SKIP_NO_PORT
};

struct pod_view {
    const char *ns, *name, *uid, *node, *ip;
    const char *container, *port_name;
    uint16_t    port;
    int         ipv6;
};

void
md_discovery_result_init(struct md_discovery_result *r)
{
    memset(r, 0, sizeof(*r));
}

static void
target_free(struct md_discovered *t)
{
    md_free(t->url);
    md_free(t->namespace);
    md_free(t->pod);
    md_free(t->uid);
    md_free(t->node);
    md_free(t->container);
    md_free(t->port_name);
    for (size_t i = 0; i < t->labels.count; i++) {
        md_free(t->labels.keys[i]);
        md_free(t->labels.vals[i]);
    }
    md_free(t->labels.keys);
    md_free(t->labels.vals);
    memset(t, 0, sizeof(*t));
}

void
md_discovery_result_fini(struct md_discovery_result *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->count; i++)
        target_free(&r->v[i]);
    md_free(r->v);
    memset(r, 0, sizeof(*r));
}

void
md_discovery_result_move(struct md_discovery_result *dst, struct md_discovery_result *src)
{
    md_discovery_result_fini(dst);
    *dst = *src;
    memset(src, 0, sizeof(*src));
}

/* ---- string checks ---- */

/* 1 when s is 1..max bytes of printable ASCII or UTF-8 (no control bytes). */
static int
clean_string(const char *s, size_t max, int allow_empty)
{
    size_t len = strlen(s);

    if (len > max || (len == 0 && !allow_empty))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* Printable ASCII copy of s[0..len) into buf (others become '?'), cut to fit. */
static void
copy_printable(char *buf, size_t buf_len, const char *s, size_t len)
{
    size_t o = 0;

    if (buf_len == 0)
        return;
    for (size_t i = 0; i < len && o + 1 < buf_len; i++) {
        unsigned char ch = (unsigned char)s[i];

        buf[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    buf[o] = '\0';
}

static const char *
json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:  return "an object";
    case JSON_ARRAY:   return "an array";
    case JSON_STRING:  return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL:    return "a number";
    case JSON_TRUE:
    case JSON_FALSE:   return "a boolean";
    case JSON_NULL:    return "null";
    }
    return "?";
}

/* ---- one pod ---- */

static enum skip __attribute__((format(printf, 3, 4)))
invalid(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return SKIP_INVALID;
}

/* A string member that must be present, bounded and clean. */
static const char *
member_string(const json_t *obj, const char *key, size_t max, int allow_empty)
{
    const json_t *v = json_object_get(obj, key);
    const char *s;

    if (!json_is_string(v))
        return NULL;
    s = json_string_value(v);
    return clean_string(s, max, allow_empty) ? s : NULL;
}

/* Looks for a TCP port named `want` in one container list.  sidecars_only:
 * only containers with restartPolicy "Always" (native sidecars among the
 * init containers).  Returns 1 found, 0 not found, -1 invalid (why set). */
static int
find_port_in(const json_t *list, const char *list_name, const char *want, int sidecars_only,
    struct pod_view *pv, char *why, size_t why_len)
{
    size_t i;
    const json_t *c;

    if (list == NULL || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        (void)invalid(why, why_len, "spec.%s is %s, not an array", list_name,
            json_type_name(list));
        return -1;
    }
    json_array_foreach(list, i, c) {
        const json_t *ports, *p;
        const char *cname, *policy;
        size_t j;

        if (!json_is_object(c)) {
            (void)invalid(why, why_len, "spec.%s[%zu] is %s, not an object", list_name, i,
                json_type_name(c));
            return -1;
        }
        cname = member_string(c, "name", MD_DISCOVERY_NAME_MAX, 0);
        if (cname == NULL) {
            (void)invalid(why, why_len, "spec.%s[%zu].name is missing or not a clean string",
                list_name, i);
            return -1;
        }
        if (sidecars_only) {
            policy = json_string_value(json_object_get(c, "restartPolicy"));
            if (policy == NULL || strcmp(policy, "Always") != 0)
                continue;   /* a plain init container: finished before Running */
        }
        ports = json_object_get(c, "ports");
        if (ports == NULL || json_is_null(ports))
            continue;
        if (!json_is_array(ports)) {
            (void)invalid(why, why_len, "spec.%s[%zu].ports is %s, not an array", list_name, i,
                json_type_name(ports));
            return -1;
        }
        json_array_foreach(ports, j, p) {
            const json_t *num, *proto;
            const char *pname;
            json_int_t n;

            if (!json_is_object(p)) {
                (void)invalid(why, why_len, "spec.%s[%zu].ports[%zu] is %s, not an object",
                    list_name, i, j, json_type_name(p));
                return -1;
            }
            pname = json_string_value(json_object_get(p, "name"));
            if (pname == NULL || strcmp(pname, want) != 0)
                continue;
            /* protocol defaults to TCP; a UDP or SCTP port of that name
             * cannot serve HTTP */
            proto = json_object_get(p, "protocol");
            if (proto != NULL && !json_is_null(proto) &&
                (!json_is_string(proto) || strcmp(json_string_value(proto), "TCP") != 0))
                continue;
            num = json_object_get(p, "containerPort");
            n = json_is_integer(num) ? json_integer_value(num) : 0;
            if (n < 1 || n > 65535) {
                (void)invalid(why, why_len,
                    "spec.%s[%zu] (\"%.60s\") port \"%s\": containerPort is not 1-65535",
                    list_name, i, cname, want);
                return -1;
            }
            pv->container = cname;
            pv->port_name = want;
            pv->port = (uint16_t)n;
            return 1;
        }
    }
    return 0;
}

static enum skip
find_port(const json_t *spec, const struct md_strlist *names, struct pod_view *pv,
    char *why, size_t why_len)
{
    const json_t *containers, *inits;

    if (!json_is_object(spec))
        return invalid(why, why_len, "spec is missing or not an object");
    containers = json_object_get(spec, "containers");
    inits = json_object_get(spec, "initContainers");
    for (size_t k = 0; k < names->count; k++) {
        int r = find_port_in(containers, "containers", names->v[k], 0, pv, why, why_len);

        if (r == 0)
            r = find_port_in(inits, "initContainers", names->v[k], 1, pv, why, why_len);
        if (r < 0)
            return SKIP_INVALID;
        if (r > 0)
            return SKIP_NONE;
    }
    return SKIP_NO_PORT;
}

/* Classifies one item; on SKIP_NONE pv holds views into the item. */
static enum skip
check_pod(const json_t *item, const struct md_strlist *names, struct pod_view *pv,
    char *why, size_t why_len)
{
    const json_t *meta, *status, *spec, *del, *ipj, *node;
    const char *phase;
    unsigned char addr[sizeof(struct in6_addr)];

    if (!json_is_object(item))
        return invalid(why, why_len, "item is %s, not an object", json_type_name(item));
    meta = json_object_get(item, "metadata");
    if (!json_is_object(meta))
        return invalid(why, why_len, "metadata is missing or not an object");
    pv->ns = member_string(meta, "namespace", 63, 0);
    pv->name = member_string(meta, "name", MD_DISCOVERY_NAME_MAX, 0);
    pv->uid = member_string(meta, "uid", MD_DISCOVERY_UID_MAX, 0);
    if (pv->ns == NULL || pv->name == NULL)
        return invalid(why, why_len, "metadata.name or metadata.namespace is missing or bad");
    if (pv->uid == NULL)
        return invalid(why, why_len, "pod %s/%s: metadata.uid is missing or bad", pv->ns,
            pv->name);
    spec = json_object_get(item, "spec");
    status = json_object_get(item, "status");
    if (!json_is_object(status))
        return invalid(why, why_len, "pod %s/%s: status is missing or not an object", pv->ns,
            pv->name);
    phase = json_string_value(json_object_get(status, "phase"));
    if (phase == NULL || strcmp(phase, "Running") != 0)
        return SKIP_NOT_RUNNING;
    del = json_object_get(meta, "deletionTimestamp");
    if (del != NULL && !json_is_null(del))
        return SKIP_DELETING;
    ipj = json_object_get(status, "podIP");
    if (ipj == NULL || json_is_null(ipj) ||
        (json_is_string(ipj) && json_string_length(ipj) == 0))
        return SKIP_NO_IP;
    pv->ip = json_string_value(ipj);
    if (pv->ip == NULL || json_string_length(ipj) > 45)
        return invalid(why, why_len, "pod %s/%s: status.podIP is not an IP address", pv->ns,
            pv->name);
    if (inet_pton(AF_INET, pv->ip, addr) == 1)
        pv->ipv6 = 0;
    else if (inet_pton(AF_INET6, pv->ip, addr) == 1)
        pv->ipv6 = 1;
    else
        return invalid(why, why_len, "pod %s/%s: status.podIP \"%.45s\" is not an IP address",
            pv->ns, pv->name, pv->ip);
    node = json_object_get(spec, "nodeName");
    pv->node = "";
    if (node != NULL && !json_is_null(node)) {
        pv->node = json_is_string(node) ? json_string_value(node) : NULL;
        if (pv->node == NULL || !clean_string(pv->node, MD_DISCOVERY_NAME_MAX, 1))
            return invalid(why, why_len, "pod %s/%s: spec.nodeName is bad", pv->ns, pv->name);
    }
    {
        enum skip s = find_port(spec, names, pv, why, why_len);

        if (s == SKIP_INVALID) {
            char inner[160];

            memcpy(inner, why, sizeof(inner) < why_len ? sizeof(inner) : why_len);
            inner[sizeof(inner) - 1] = '\0';
            /* cut when long: it only labels a log line */
            if (snprintf(why, why_len, "pod %s/%s: %s", pv->ns, pv->name, inner) < 0)
                why[0] = '\0';
        }
        return s;
    }
}

struct label {
    const char *k, *v;
};

static int
label_cmp(const void *a, const void *b)
{
    return strcmp(((const struct label *)a)->k, ((const struct label *)b)->k);
}

/* Copies the pod's labels into t (sorted, at most MD_DISCOVERY_LABELS_MAX);
 * labels over the limits are counted in *dropped.  MD_OK or MD_ENOMEM;
 * *bad = 1 when metadata.labels is not an object. */
static int
copy_labels(const json_t *meta, struct md_discovered *t, size_t *dropped, int *bad)
{
    const json_t *labels = json_object_get(meta, "labels"), *v;
    struct label *tmp = NULL;
    const char *k;
    size_t n = 0, keep;
    int rc = MD_OK;

    *bad = 0;
    if (labels == NULL || json_is_null(labels))
        return MD_OK;
    if (!json_is_object(labels)) {
        *bad = 1;
        return MD_OK;
    }
    if (json_object_size(labels) == 0)
        return MD_OK;
    tmp = md_calloc(json_object_size(labels), sizeof(*tmp));
    if (tmp == NULL)
        return MD_ENOMEM;
    json_object_foreach((json_t *)(uintptr_t)labels, k, v) {
        if (!json_is_string(v) || !clean_string(k, MD_DISCOVERY_LABEL_NAME_MAX, 0) ||
            !clean_string(json_string_value(v), MD_DISCOVERY_LABEL_VALUE_MAX, 1)) {
            (*dropped)++;
            continue;
        }
        tmp[n].k = k;
        tmp[n].v = json_string_value(v);
        n++;
    }
    qsort(tmp, n, sizeof(*tmp), label_cmp);
    keep = n > MD_DISCOVERY_LABELS_MAX ? MD_DISCOVERY_LABELS_MAX : n;
    *dropped += n - keep;
    if (keep == 0)
        goto out;
    t->labels.keys = md_calloc(keep, sizeof(char *));
    t->labels.vals = md_calloc(keep, sizeof(char *));
    if (t->labels.keys == NULL || t->labels.vals == NULL) {
        rc = MD_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < keep; i++) {
        t->labels.keys[i] = md_strdup(tmp[i].k);
        t->labels.vals[i] = md_strdup(tmp[i].v);
        if (t->labels.keys[i] == NULL || t->labels.vals[i] == NULL) {
            md_free(t->labels.keys[i]);
            md_free(t->labels.vals[i]);
            rc = MD_ENOMEM;
            goto out;
        }
        t->labels.count++;
    }
out:
    md_free(tmp);
    return rc;
}

static int
make_target(const json_t *item, const struct pod_view *pv, struct md_discovered *t,
    size_t *dropped, int *bad_labels)
{
    char url[96];

    memset(t, 0, sizeof(*t));
    (void)snprintf(url, sizeof(url), pv->ipv6 ? "http://[%s]:%u/metrics" : "http://%s:%u/metrics",
        pv->ip, (unsigned)pv->port);
    t->url = md_strdup(url);
    t->namespace = md_strdup(pv->ns);
    t->pod = md_strdup(pv->name);
    t->uid = md_strdup(pv->uid);
    t->node = md_strdup(pv->node);
    t->container = md_strdup(pv->container);
    t->port_name = md_strdup(pv->port_name);
    t->port = pv->port;
    if (t->url == NULL || t->namespace == NULL || t->pod == NULL || t->uid == NULL ||
        t->node == NULL || t->container == NULL || t->port_name == NULL ||
        copy_labels(json_object_get(item, "metadata"), t, dropped, bad_labels) != MD_OK) {
        target_free(t);
        return MD_ENOMEM;
    }
    return MD_OK;
}

static int
result_grow(struct md_discovery_result *res, struct md_err *err)
{
    struct md_discovered *nv;
    size_t na;

    if (res->count < res->alloc)
        return MD_OK;
    if (res->count >= MD_DISCOVERY_TARGETS_MAX)
        return md_err_set(err, MD_ELIMIT, "PodList: more than %u targets (MD_DISCOVERY_TARGETS_MAX)",
            MD_DISCOVERY_TARGETS_MAX);
    na = res->alloc ? res->alloc * 2 : 16;
    if (na > MD_DISCOVERY_TARGETS_MAX)
        na = MD_DISCOVERY_TARGETS_MAX;
    nv = md_realloc(res->v, na * sizeof(*nv));
    if (nv == NULL)
        return md_err_set(err, MD_ENOMEM, "PodList: out of memory");
    res->v = nv;
    res->alloc = na;
    return MD_OK;
}

static void
note_invalid(struct md_discovery_stats *st, const char *why)
{
    st->invalid++;
    if (st->first_invalid[0] == '\0')
        copy_printable(st->first_invalid, sizeof(st->first_invalid), why, strlen(why));
}

/* ---- the list ---- */

int
md_discovery_decode_podlist(const char *json, size_t len, const struct md_strlist *port_names,
    struct md_discovery_result *res, char **continue_token, struct md_err *err)
{
    struct md_discovery_stats saved = res->stats;
    size_t count0 = res->count;
    json_error_t jerr;
    json_t *root = NULL;
    const json_t *kind, *api, *meta, *items, *cont, *item;
    char *token = NULL;
    size_t i;
    int rc = MD_OK;

    if (port_names == NULL || port_names->count == 0)
        return md_err_set(err, MD_ESTATE, "PodList: no port names to look for");
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char text[JSON_ERROR_TEXT_LENGTH];

        copy_printable(text, sizeof(text), jerr.text, strlen(jerr.text));
        rc = md_err_set(err, MD_EPARSE, "PodList: malformed JSON at line %d column %d: %s",
            jerr.line, jerr.column, text);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = md_err_set(err, MD_EPARSE, "PodList: the body is %s, not an object",
            json_type_name(root));
        goto out;
    }
    kind = json_object_get(root, "kind");
    if (!json_is_string(kind)) {
        rc = md_err_set(err, MD_EPARSE, "PodList: \"kind\" is missing or not a string");
        goto out;
    }
    if (strcmp(json_string_value(kind), "Status") == 0) {
        char msg[200];

        md_discovery_status_message(json, len, msg, sizeof(msg));
        rc = md_err_set(err, MD_EPARSE, "PodList: the API answered a Status: %s", msg);
        goto out;
    }
    if (strcmp(json_string_value(kind), "PodList") != 0) {
        char k[64];

        copy_printable(k, sizeof(k), json_string_value(kind), json_string_length(kind));
        rc = md_err_set(err, MD_EPARSE, "PodList: \"kind\" is \"%s\", expected \"PodList\"", k);
        goto out;
    }
    api = json_object_get(root, "apiVersion");
    if (!json_is_string(api) || strcmp(json_string_value(api), "v1") != 0) {
        rc = md_err_set(err, MD_EPARSE, "PodList: \"apiVersion\" is missing or not \"v1\"");
        goto out;
    }
    meta = json_object_get(root, "metadata");
    if (meta != NULL && !json_is_object(meta)) {
        rc = md_err_set(err, MD_EPARSE, "PodList: \"metadata\" is %s, not an object",
            json_type_name(meta));
        goto out;
    }
    cont = meta ? json_object_get(meta, "continue") : NULL;
    if (cont != NULL && !json_is_null(cont)) {
        if (!json_is_string(cont)) {
            rc = md_err_set(err, MD_EPARSE, "PodList: \"metadata.continue\" is %s, not a string",
                json_type_name(cont));
            goto out;
        }
        if (json_string_length(cont) > MD_DISCOVERY_CONTINUE_MAX) {
            rc = md_err_set(err, MD_ELIMIT, "PodList: \"metadata.continue\" is %zu bytes, over %u",
                json_string_length(cont), MD_DISCOVERY_CONTINUE_MAX);
            goto out;
        }
        if (!clean_string(json_string_value(cont), MD_DISCOVERY_CONTINUE_MAX, 1)) {
            rc = md_err_set(err, MD_EPARSE, "PodList: \"metadata.continue\" has control characters");
            goto out;
        }
    }
    items = json_object_get(root, "items");
    if (items != NULL && !json_is_null(items) && !json_is_array(items)) {
        rc = md_err_set(err, MD_EPARSE, "PodList: \"items\" is %s, not an array",
            json_type_name(items));
        goto out;
    }
    if (items == NULL) {
        rc = md_err_set(err, MD_EPARSE, "PodList: \"items\" is missing");
        goto out;
    }
    json_array_foreach(items, i, item) {
        struct pod_view pv;
        char why[160] = "";
        enum skip s;
        int bad_labels = 0;

        memset(&pv, 0, sizeof(pv));
        res->stats.pods++;
        s = check_pod(item, port_names, &pv, why, sizeof(why));
        switch (s) {
        case SKIP_INVALID:     note_invalid(&res->stats, why); continue;
        case SKIP_NOT_RUNNING: res->stats.not_running++; continue;
        case SKIP_DELETING:    res->stats.deleting++; continue;
        case SKIP_NO_IP:       res->stats.no_ip++; continue;
        case SKIP_NO_PORT:     res->stats.no_port++; continue;
        case SKIP_NONE:        break;
        }
        rc = result_grow(res, err);
        if (rc != MD_OK)
            goto out;
        if (make_target(item, &pv, &res->v[res->count], &res->stats.labels_dropped,
                &bad_labels) != MD_OK) {
            rc = md_err_set(err, MD_ENOMEM, "PodList: out of memory");
            goto out;
        }
        if (bad_labels) {
            target_free(&res->v[res->count]);
            (void)snprintf(why, sizeof(why), "pod %s/%s: metadata.labels is not an object",
                pv.ns, pv.name);
            note_invalid(&res->stats, why);
            continue;
        }
        res->count++;
        res->stats.targets++;
    }
    if (cont != NULL && json_is_string(cont) && json_string_length(cont) > 0) {
        token = md_strdup(json_string_value(cont));
        if (token == NULL) {
            rc = md_err_set(err, MD_ENOMEM, "PodList: out of memory");
            goto out;
        }
    }
    res->stats.pages++;
    *continue_token = token;
out:
    if (rc != MD_OK) {
        for (size_t j = count0; j < res->count; j++)
            target_free(&res->v[j]);
        res->count = count0;
        res->stats = saved;
    }
    json_decref(root);
    return rc;
}

int
md_discovery_result_merge(struct md_discovery_result *dst, struct md_discovery_result *src,
    struct md_err *err)
{
    struct md_discovery_stats *a = &dst->stats;
    const struct md_discovery_stats *b = &src->stats;

    if (src->count > MD_DISCOVERY_TARGETS_MAX - dst->count)
        return md_err_set(err, MD_ELIMIT, "discovery: more than %u targets (MD_DISCOVERY_TARGETS_MAX)",
            MD_DISCOVERY_TARGETS_MAX);
    if (dst->count + src->count > dst->alloc) {
        struct md_discovered *nv = md_realloc(dst->v, (dst->count + src->count) * sizeof(*nv));

        if (nv == NULL)
            return md_err_set(err, MD_ENOMEM, "discovery: out of memory");
        dst->v = nv;
        dst->alloc = dst->count + src->count;
    }
    if (src->count > 0)
        memcpy(dst->v + dst->count, src->v, src->count * sizeof(*src->v));
    dst->count += src->count;
    a->pods += b->pods;
    a->targets += b->targets;
    a->not_running += b->not_running;
    a->deleting += b->deleting;
    a->no_ip += b->no_ip;
    a->no_port += b->no_port;
    a->invalid += b->invalid;
    a->duplicate += b->duplicate;
    a->labels_dropped += b->labels_dropped;
    a->pages += b->pages;
    if (a->first_invalid[0] == '\0')
        memcpy(a->first_invalid, b->first_invalid, sizeof(a->first_invalid));
    md_free(src->v);
    memset(src, 0, sizeof(*src));
    return MD_OK;
}

/* ---- after the last page ---- */

static int
cmp_url(const void *a, const void *b)
{
    const struct md_discovered *x = a, *y = b;
    int c = strcmp(x->url, y->url);

    if (c == 0)
        c = strcmp(x->namespace, y->namespace);
    if (c == 0)
        c = strcmp(x->pod, y->pod);
    return c;
}

static int
cmp_pod(const void *a, const void *b)
{
    const struct md_discovered *x = a, *y = b;
    int c = strcmp(x->namespace, y->namespace);

    if (c == 0)
        c = strcmp(x->pod, y->pod);
    if (c == 0)
        c = strcmp(x->url, y->url);
    return c;
}

void
md_discovery_result_finish(struct md_discovery_result *res)
{
    size_t w = 0;

    if (res->count == 0)
        return;
    qsort(res->v, res->count, sizeof(*res->v), cmp_url);
    for (size_t i = 0; i < res->count; i++) {
        if (w > 0 && strcmp(res->v[w - 1].url, res->v[i].url) == 0) {
            target_free(&res->v[i]);
            res->stats.duplicate++;
            res->stats.targets--;
            continue;
        }
        if (w != i)
            res->v[w] = res->v[i];
        w++;
    }
    res->count = w;
    qsort(res->v, res->count, sizeof(*res->v), cmp_pod);
}

/* ---- helpers for the fetcher ---- */

void
md_discovery_status_message(const char *json, size_t len, char *buf, size_t buf_len)
{
    json_error_t jerr;
    json_t *root;
    const char *reason, *msg, *kind;
    char tmp[512];

    if (buf_len == 0)
        return;
    buf[0] = '\0';
    root = json_loadb(json, len, 0, &jerr);
    if (root == NULL)
        return;
    kind = json_string_value(json_object_get(root, "kind"));
    if (kind != NULL && strcmp(kind, "Status") == 0) {
        reason = json_string_value(json_object_get(root, "reason"));
        msg = json_string_value(json_object_get(root, "message"));
        (void)snprintf(tmp, sizeof(tmp), "%s%s%s", reason ? reason : "",
            reason && msg ? ": " : "", msg ? msg : "");
        copy_printable(buf, buf_len, tmp, strlen(tmp));
    }
    json_decref(root);
}

int
md_discovery_incluster_base(const char *host, const char *port, char *buf, size_t buf_len,
    struct md_err *err)
{
    uint64_t p;
    int n;

    if (host == NULL || *host == '\0')
        return md_err_set(err, MD_EPARSE, "KUBERNETES_SERVICE_HOST is empty");
    for (const char *s = host; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch <= 0x20 || ch >= 0x7f || ch == '/' || ch == '@' || ch == '[' || ch == ']' ||
            ch == '?' || ch == '#')
            return md_err_set(err, MD_EPARSE, "KUBERNETES_SERVICE_HOST is not a host name or IP");
    }
    if (port == NULL || md_parse_u64(port, strlen(port), 65535, &p) != MD_OK || p == 0)
        return md_err_set(err, MD_EPARSE, "KUBERNETES_SERVICE_PORT is not a port (1-65535)");
    n = snprintf(buf, buf_len, strchr(host, ':') ? "https://[%s]:%u" : "https://%s:%u", host,
        (unsigned)p);
    if (n < 0 || (size_t)n >= buf_len)
        return md_err_set(err, MD_ELIMIT, "KUBERNETES_SERVICE_HOST is too long");
    return MD_OK;
}
