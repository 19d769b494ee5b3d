/* normalize.c: OTel metric and label name normalisation (see normalize.h).
 *
 * Stateless and pure: safe from any thread.  Names are decoded into stack
 * buffers of MD_NORMALIZE_NAME_MAX bytes; longer names are "unknown" rather
 * than truncated.  Matching happens on the underscored form, where the dotted
 * OTel name and every escaping agree. */
#include "normalize.h"

#include <string.h>

#include "util.h"

static const char *const inst_names[MD_INST_COUNT_] = {
    "", "gen_ai.client.token.usage", "gen_ai.server.request.duration",
    "gen_ai.server.time_to_first_token", "gen_ai.server.time_per_output_token",
    "gen_ai.client.inference.usage", "target_info",
};

/* underscored base names; a unit suffix may follow (v0.4 `_token`, `_seconds`) */
static const struct { const char *base; enum md_instrument inst; } inst_table[] = {
    { "gen_ai_client_token_usage", MD_INST_TOKEN_USAGE },
    { "gen_ai_server_request_duration", MD_INST_REQUEST_DURATION },
    { "gen_ai_server_time_to_first_token", MD_INST_TTFT },
    { "gen_ai_server_time_per_output_token", MD_INST_TPOT },
    { "target_info", MD_INST_TARGET_INFO },
};

#define INFERENCE_PREFIX "gen_ai_client_inference_usage_"

static const char *const unit_suffixes[] = { "_token", "_seconds" };

static const struct { const char *s; enum md_role role; } role_suffixes[] = {
    { "_bucket", MD_ROLE_BUCKET }, { "_sum", MD_ROLE_SUM }, { "_count", MD_ROLE_COUNT },
    { "_total", MD_ROLE_TOTAL }, { "_created", MD_ROLE_CREATED },
};

/* OTel / EAIG attribute names whose underscored spelling is ambiguous */
static const char *const dotted_labels[] = {
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system.name", "gen_ai.system",
    "gen_ai.original.model", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.token.type", "error.type", "department.id", "service.name",
    "service.namespace", "service.instance.id", "service.version",
    "telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version",
    "otel.metric.overflow", "mcp.method.name",
};

const char *
md_instrument_name(enum md_instrument inst)
{
    if ((unsigned)inst >= MD_INST_COUNT_)
        return "";
    return inst_names[inst];
}

const char *
md_role_name(enum md_role role)
{
    static const char *const n[] = { "none", "sum", "count", "bucket", "total", "created" };

    if ((unsigned)role > MD_ROLE_CREATED)
        return "none";
    return n[role];
}

static int
legacy_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        c == '_' || c == ':';
}

static int
has_sub(const char *s, size_t n, const char *sub)
{
    size_t l = strlen(sub);

    for (size_t i = 0; i + l <= n; i++)
        if (memcmp(s + i, sub, l) == 0)
            return 1;
    return 0;
}

/* decodes U__ (values) and _dot_ (dots) escapings; out has >= n bytes */
static size_t
decode_any(const char *s, size_t n, char *out)
{
    if (n > 3 && memcmp(s, "U__", 3) == 0)
        return md_expfmt_unescape_name(MD_ESC_VALUES, s, n, out);
    if (has_sub(s, n, "_dot_"))
        return md_expfmt_unescape_name(MD_ESC_DOTS, s, n, out);
    memcpy(out, s, n);
    return n;
}

static int
ends_with(const char *s, size_t n, const char *suf, size_t *cut)
{
    size_t l = strlen(suf);

    if (n <= l || memcmp(s + n - l, suf, l) != 0)
        return 0;
    *cut = n - l;
    return 1;
}

/* u: underscored name; returns the instrument, sets role and detail */
static enum md_instrument
match_underscored(const char *u, size_t n, enum md_role *role, char *detail,
    size_t detail_len)
{
    size_t base = n, cut;
    enum md_role r = MD_ROLE_NONE;
    size_t pl = strlen(INFERENCE_PREFIX);

    for (size_t i = 0; i < sizeof(role_suffixes) / sizeof(role_suffixes[0]); i++) {
        if (ends_with(u, n, role_suffixes[i].s, &cut)) {
            r = role_suffixes[i].role;
            base = cut;
            break;
        }
    }
    *role = r;
    for (int pass = 0; pass < 2; pass++) {
        size_t b = base;

        if (pass == 1) {
            size_t j;

            for (j = 0; j < sizeof(unit_suffixes) / sizeof(unit_suffixes[0]); j++)
                if (ends_with(u, base, unit_suffixes[j], &b))
                    break;
            if (j == sizeof(unit_suffixes) / sizeof(unit_suffixes[0]))
                break;
        }
        for (size_t i = 0; i < sizeof(inst_table) / sizeof(inst_table[0]); i++) {
            if (strlen(inst_table[i].base) == b && memcmp(u, inst_table[i].base, b) == 0)
                return inst_table[i].inst;
        }
    }
    if (base > pl && memcmp(u, INFERENCE_PREFIX, pl) == 0) {
        if (detail != NULL && detail_len > 0) {
            size_t dl = base - pl < detail_len - 1 ? base - pl : detail_len - 1;

            memcpy(detail, u + pl, dl);
            detail[dl] = '\0';
        }
        return MD_INST_INFERENCE_USAGE;
    }
    return MD_INST_UNKNOWN;
}

static size_t
underscore(const char *s, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = legacy_char(s[i]) ? s[i] : '_';
    return n;
}

int
md_normalize_name(struct md_str name, enum md_instrument *inst, enum md_role *role,
    char *detail, size_t detail_len)
{
    char dec[MD_NORMALIZE_NAME_MAX], u[MD_NORMALIZE_NAME_MAX];
    enum md_instrument in = MD_INST_UNKNOWN;
    enum md_role r = MD_ROLE_NONE;
    size_t n;

    if (detail != NULL && detail_len > 0)
        detail[0] = '\0';
    if (name.len > 0 && name.len <= MD_NORMALIZE_NAME_MAX) {
        /* as received (classic, or dotted UTF-8) first */
        n = underscore(name.p, name.len, u);
        in = match_underscored(u, n, &r, detail, detail_len);
        if (in == MD_INST_UNKNOWN &&
            (has_sub(name.p, name.len, "__") || has_sub(name.p, name.len, "_dot_"))) {
            enum md_role r2;
            enum md_instrument in2;

            n = decode_any(name.p, name.len, dec);
            if (n == name.len && memcmp(dec, name.p, n) == 0 && name.len > 3 &&
                memcmp(name.p, "U__", 3) != 0)
                n = md_expfmt_unescape_name(MD_ESC_DOTS, name.p, name.len, dec);
            n = underscore(dec, n, u);
            in2 = match_underscored(u, n, &r2, detail, detail_len);
            if (in2 != MD_INST_UNKNOWN) {
                in = in2;
                r = r2;
            }
        }
    }
    *inst = in;
    *role = r;
    return in == MD_INST_UNKNOWN ? MD_ENOTFOUND : MD_OK;
}

static size_t
emit(const char *s, size_t n, char *out, size_t out_len)
{
    if (n < out_len) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return n;
}

size_t
md_normalize_label(struct md_str name, char *out, size_t out_len)
{
    char dec[MD_NORMALIZE_NAME_MAX];
    size_t n;
    int legacy = 1;

    if (name.len > MD_NORMALIZE_NAME_MAX)
        return emit(name.p, name.len, out, out_len);
    n = decode_any(name.p, name.len, dec);
    for (size_t i = 0; i < n; i++)
        if (!legacy_char(dec[i]))
            legacy = 0;
    if (legacy) {
        /* underscored: a known dotted attribute with this underscored form */
        for (size_t i = 0; i < sizeof(dotted_labels) / sizeof(dotted_labels[0]); i++) {
            const char *d = dotted_labels[i];
            size_t dl = strlen(d), j;

            if (dl != n)
                continue;
            for (j = 0; j < n; j++)
                if (dec[j] != (d[j] == '.' ? '_' : d[j]))
                    break;
            if (j == n)
                return emit(d, dl, out, out_len);
        }
    }
    return emit(dec, n, out, out_len);
}

size_t
md_normalize_label_key(struct md_str name, char *out, size_t out_len)
{
    char dec[MD_NORMALIZE_NAME_MAX];
    size_t n, o = 0;

    if (name.len > MD_NORMALIZE_NAME_MAX)
        return emit(name.p, name.len, out, out_len);
    n = decode_any(name.p, name.len, dec);
    for (size_t i = 0; i < n; i++) {
        char c = dec[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            c = '_';
        if (c == '_' && o > 0 && dec[o - 1] == '_')
            continue;
        dec[o++] = c;   /* o <= i: in place */
    }
    return emit(dec, o, out, out_len);
}

int
md_normalize_label_eq(struct md_str received, const char *configured)
{
    char a[MD_NORMALIZE_NAME_MAX + 1], b[MD_NORMALIZE_NAME_MAX + 1];
    struct md_str c = { configured, strlen(configured) };
    size_t la = md_normalize_label_key(received, a, sizeof(a));
    size_t lb = md_normalize_label_key(c, b, sizeof(b));

    if (la >= sizeof(a) || lb >= sizeof(b))
        return 0;
    return la == lb && memcmp(a, b, la) == 0;
}
