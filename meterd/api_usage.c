/* api_usage.c: GET /api/v1/usage and `meterd usage`: parameters -> query ->
 * JSON.  Stateless.  Rules: from/to are RFC 3339 or YYYY-MM-DD in UTC, `to`
 * exclusive; an hour bucket counts when its start is in [from, to); the range
 * is at most MD_API_RANGE_MAX_S; defaults are today (UTC midnight to the next
 * midnight).  Totals are the sums of the rows, so they always agree. */
#include "api.h"

#include <jansson.h>
#include <string.h>

#include "batch.h"
#include "store.h"

static const char *const step_names[] = { "none", "hour", "day", "month" };

int
md_api_usage_parse(const struct md_api_req *req, int64_t now_s, struct md_usage_query *q,
    struct md_err *err)
{
    const char *from = md_api_param(req, "from"), *to = md_api_param(req, "to");
    const char *step = md_api_param(req, "step"), *group = md_api_param(req, "group_by");
    struct md_err e = {0};

    memset(q, 0, sizeof(*q));
    q->rows_max = MD_API_ROWS_MAX;
    q->from_s = now_s - now_s % 86400;
    q->to_s = q->from_s + 86400;
    if (from != NULL && md_parse_time(from, strlen(from), &q->from_s, &e) != MD_OK)
        return md_err_set(err, MD_EPARSE, "from: %s", e.msg);
    if (to != NULL && md_parse_time(to, strlen(to), &q->to_s, &e) != MD_OK)
        return md_err_set(err, MD_EPARSE, "to: %s", e.msg);
    if (from != NULL && to == NULL)
        q->to_s = q->from_s + 86400;
    if (to != NULL && from == NULL)
        q->from_s = q->to_s - 86400;
    if (q->to_s <= q->from_s)
        return md_err_set(err, MD_EPARSE, "to: must be after from");
    if (q->to_s - q->from_s > MD_API_RANGE_MAX_S)
        return md_err_set(err, MD_EPARSE, "to: the range is longer than %lld days",
            MD_API_RANGE_MAX_S / 86400);
    q->step = MD_STEP_NONE;
    if (step != NULL) {
        int found = 0;

        for (int i = 0; i < 4 && !found; i++) {
            if (strcmp(step, step_names[i]) == 0) {
                q->step = (enum md_step)i;
                found = 1;
            }
        }
        if (!found)
            return md_err_set(err, MD_EPARSE, "step: must be hour, day, month or none");
    }
    if (group != NULL && group[0] != '\0') {
        const char *p = group;
        unsigned item = 1;

        while (*p != '\0') {
            const char *end = strchr(p, ',');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            int found = 0;

            for (int d = 0; d < MD_DIM_COUNT && !found; d++) {
                if (strlen(md_dim_names[d]) == len && memcmp(md_dim_names[d], p, len) == 0) {
                    if (q->group_mask & (1u << d))
                        return md_err_set(err, MD_EPARSE, "group_by: %.*s given twice",
                            (int)(len > 32 ? 32 : len), p);
                    q->group_mask |= 1u << d;
                    found = 1;
                }
            }
            /* the item's position, not its bytes: messages echo no request
             * data beyond parameter names (api.h) */
            if (!found)
                return md_err_set(err, MD_EPARSE, "group_by: item %u is not a dimension "
                    "(cluster, namespace, department, model, provider, operation, token_type)",
                    item);
            item++;
            p += len;
            if (*p == ',')
                p++;
        }
    }
    for (int d = 0; d < MD_DIM_COUNT; d++) {
        const char *v = md_api_param(req, md_dim_names[d]);

        if (v != NULL && v[0] == '\0')
            return md_err_set(err, MD_EPARSE, "%s: must not be empty", md_dim_names[d]);
        q->filter[d] = v;
    }
    return MD_OK;
}

struct render {
    const struct md_usage_query *q;
    json_t   *rows;
    uint64_t  tokens, requests;
    int       overflow;
};

static int
add_row(void *arg, const struct md_usage_row *r)
{
    struct render *rd = arg;
    json_t *o = json_object();
    char ts[32];

    if (o == NULL)
        return MD_ENOMEM;
    md_fmt_time(r->start_s, ts, sizeof(ts));
    json_object_set_new(o, "start", json_string(ts));
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (rd->q->group_mask & (1u << d))
            json_object_set_new(o, md_dim_names[d], json_string(r->dims[d] ? r->dims[d] : ""));
    json_object_set_new(o, "tokens", json_integer((json_int_t)r->tokens));
    json_object_set_new(o, "requests", json_integer((json_int_t)r->requests));
    if (json_array_append_new(rd->rows, o) != 0)
        return MD_ENOMEM;
    if (md_add_u64(rd->tokens, r->tokens, &rd->tokens) != MD_OK ||
        md_add_u64(rd->requests, r->requests, &rd->requests) != MD_OK)
        rd->overflow = 1;
    return MD_OK;
}

int
md_api_usage_json(struct md_store *st, const struct md_usage_query *q, char **body,
    size_t *len, struct md_err *err)
{
    struct render rd = { .q = q };
    json_t *root = json_object(), *groups = json_array();
    char from[32], to[32];
    int rc;

    rd.rows = json_array();
    if (root == NULL || groups == NULL || rd.rows == NULL) {
        json_decref(root);
        json_decref(groups);
        json_decref(rd.rows);
        return md_err_set(err, MD_ENOMEM, "out of memory");
    }
    rc = md_store_query_usage(st, q, add_row, &rd, err);
    if (rc == MD_OK && rd.overflow)
        rc = md_err_set(err, MD_ELIMIT, "totals overflow 64 bits");
    if (rc != MD_OK) {
        json_decref(root);
        json_decref(groups);
        json_decref(rd.rows);
        return rc;
    }
    md_fmt_time(q->from_s, from, sizeof(from));
    md_fmt_time(q->to_s, to, sizeof(to));
    for (int d = 0; d < MD_DIM_COUNT; d++)
        if (q->group_mask & (1u << d))
            json_array_append_new(groups, json_string(md_dim_names[d]));
    json_object_set_new(root, "from", json_string(from));
    json_object_set_new(root, "to", json_string(to));
    json_object_set_new(root, "step", json_string(step_names[q->step]));
    json_object_set_new(root, "group_by", groups);
    json_object_set_new(root, "rows", rd.rows);
    json_object_set_new(root, "totals", json_pack("{s:I,s:I}", "tokens",
        (json_int_t)rd.tokens, "requests", (json_int_t)rd.requests));
    *body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (*body == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    *len = strlen(*body);
    return MD_OK;
}
