/* litellm.c: LiteLLM price map (JSON) -> pricing YAML, with exact decimal
 * shifting of the number lexemes.
 *
 * Stateless and pure.  jansson validates the document first (syntax,
 * duplicate keys, positions for errors); a small scanner then walks the same
 * text to read each price as the characters written, because jansson keeps
 * only the double.  The scanner relies on the validation but still checks
 * every bound.  Invariant: no floating point touches a price. */
#include "litellm.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "money.h"
#include "pricing.h"

#define KEY_MAX 1024     /* bytes of a decoded model name or key */

static const struct {
    const char *key;
    const char *type;
} price_keys[] = {
    { "input_cost_per_token", "input" },
    { "cache_read_input_token_cost", "cached_input" },
    { "cache_creation_input_token_cost", "cache_creation_input" },
    { "output_cost_per_token", "output" },
    { "output_cost_per_reasoning_token", "reasoning" },
};
#define NKEYS (sizeof(price_keys) / sizeof(price_keys[0]))

/* ---- number shifting ---- */

int
md_litellm_shift6(const char *s, size_t len, char *out, size_t out_len, struct md_err *err)
{
    char digits[MD_LITELLM_NUM_MAX];
    size_t nd = 0, i = 0, frac = 0, start = 0;
    long exp = 0, e;
    int eneg = 0;
    struct md_err perr = {0};
    int64_t check;

    if (len == 0 || len >= MD_LITELLM_NUM_MAX || out_len < MD_LITELLM_NUM_MAX)
        return md_err_set(err, MD_EPARSE, "number too long");
    if (s[0] == '-')
        return md_err_set(err, MD_EPARSE, "negative price %.*s", (int)len, s);
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
        digits[nd++] = s[i];
    if (nd == 0)
        return md_err_set(err, MD_EPARSE, "not a number");
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, frac++)
            digits[nd++] = s[i];
        if (frac == 0)
            return md_err_set(err, MD_EPARSE, "not a number");
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        size_t ed = 0;

        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, ed++) {
            if (exp > 100000)
                return md_err_set(err, MD_ELIMIT, "exponent too large");
            exp = exp * 10 + (s[i] - '0');
        }
        if (ed == 0)
            return md_err_set(err, MD_EPARSE, "not a number");
    }
    if (i != len)
        return md_err_set(err, MD_EPARSE, "not a number");
    /* value = digits x 10^e, and per million is 10^6 times that */
    e = (eneg ? -exp : exp) - (long)frac + 6;
    while (start < nd && digits[start] == '0')
        start++;
    if (start == nd) {
        (void)snprintf(out, out_len, "0");
        return MD_OK;
    }
    nd -= start;
    memmove(digits, digits + start, nd);
    /* drop trailing zeros of the digit string into the exponent */
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
        e++;
    }
    if (e >= 0) {
        if ((long)nd + e >= 20)
            return md_err_set(err, MD_ELIMIT, "price too large");
        memcpy(out, digits, nd);
        memset(out + nd, '0', (size_t)e);
        out[nd + (size_t)e] = '\0';
    } else if (-e > 9) {
        return md_err_set(err, MD_EPARSE,
            "%.*s per token is %ld decimals per million tokens, more than 9", (int)len, s, -e);
    } else if ((long)nd > -e) {
        size_t ip = nd - (size_t)(-e);

        memcpy(out, digits, ip);
        out[ip] = '.';
        memcpy(out + ip + 1, digits + ip, nd - ip);
        out[nd + 1] = '\0';
    } else {
        size_t zeros = (size_t)(-e) - nd;

        memcpy(out, "0.", 2);
        memset(out + 2, '0', zeros);
        memcpy(out + 2 + zeros, digits, nd);
        out[2 + zeros + nd] = '\0';
    }
    /* the result must be a price meterd accepts */
    if (md_money_parse(out, strlen(out), &check, &perr) != MD_OK)
        return md_err_set(err, perr.rc, "price %s", perr.msg);
    return MD_OK;
}

/* ---- scanner over validated JSON ---- */

struct scan {
    const char *s;
    size_t      len, pos;
};

static void
ws(struct scan *sc)
{
    while (sc->pos < sc->len && (sc->s[sc->pos] == ' ' || sc->s[sc->pos] == '\t' ||
                                 sc->s[sc->pos] == '\n' || sc->s[sc->pos] == '\r'))
        sc->pos++;
}

static int
peek(struct scan *sc)
{
    ws(sc);
    return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

static int
expect(struct scan *sc, char c)
{
    if (peek(sc) != (unsigned char)c)
        return MD_EPARSE;
    sc->pos++;
    return MD_OK;
}

static int
hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d;

        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return MD_EPARSE;
        *v = *v * 16 + d;
    }
    return MD_OK;
}

static size_t
put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Reads a string into out (decoded, NUL-terminated, at most KEY_MAX bytes;
 * out NULL: skip). */
static int
string(struct scan *sc, char *out, size_t *out_len)
{
    size_t n = 0;

    if (expect(sc, '"') != MD_OK)
        return MD_EPARSE;
    while (sc->pos < sc->len && sc->s[sc->pos] != '"') {
        char tmp[4];
        size_t k = 1;
        char c = sc->s[sc->pos++];

        tmp[0] = c;
        if (c == '\\') {
            if (sc->pos >= sc->len)
                return MD_EPARSE;
            c = sc->s[sc->pos++];
            switch (c) {
            case 'b': tmp[0] = '\b'; break;
            case 'f': tmp[0] = '\f'; break;
            case 'n': tmp[0] = '\n'; break;
            case 'r': tmp[0] = '\r'; break;
            case 't': tmp[0] = '\t'; break;
            case 'u': {
                unsigned cp, lo;

                if (sc->len - sc->pos < 4 || hex4(sc->s + sc->pos, &cp) != MD_OK)
                    return MD_EPARSE;
                sc->pos += 4;
                if (cp >= 0xd800 && cp < 0xdc00) {
                    if (sc->len - sc->pos < 6 || sc->s[sc->pos] != '\\' ||
                        sc->s[sc->pos + 1] != 'u' || hex4(sc->s + sc->pos + 2, &lo) != MD_OK ||
                        lo < 0xdc00 || lo > 0xdfff)
                        return MD_EPARSE;
                    sc->pos += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return MD_EPARSE;   /* a lone low surrogate is no character */
                }
                k = put_utf8(tmp, cp);
                break;
            }
            default: tmp[0] = c; break;   /* \" \\ \/ */
            }
        }
        if (out != NULL) {
            if (n + k > KEY_MAX)
                return MD_ELIMIT;
            memcpy(out + n, tmp, k);
        }
        n += k;
    }
    if (sc->pos >= sc->len)
        return MD_EPARSE;
    sc->pos++;
    if (out != NULL) {
        out[n] = '\0';
        *out_len = n;
    }
    return MD_OK;
}

/* Ends a bare token (number, true, false, null).  Not strchr: that would
 * also "find" a NUL byte, and jansson lets NUL through in some positions. */
static int
is_delim(char c)
{
    return c == ',' || c == ':' || c == ']' || c == '}' || c == ' ' || c == '\t' ||
        c == '\r' || c == '\n';
}

/* Skips any value; strings are skipped as strings so brackets inside them
 * do not count. */
static int
skip_value(struct scan *sc)
{
    size_t depth = 0;

    do {
        int c = peek(sc);

        if (c < 0)
            return MD_EPARSE;
        if (c == '"') {
            if (string(sc, NULL, NULL) != MD_OK)
                return MD_EPARSE;
        } else if (c == '{' || c == '[') {
            depth++;
            sc->pos++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return MD_EPARSE;
            depth--;
            sc->pos++;
        } else if (c == ',' || c == ':') {
            if (depth == 0)
                return MD_EPARSE;
            sc->pos++;
        } else {
            size_t from = sc->pos;

            while (sc->pos < sc->len && !is_delim(sc->s[sc->pos]))
                sc->pos++;
            if (sc->pos == from)
                return MD_EPARSE;   /* no progress: not JSON after all */
        }
    } while (depth > 0);
    return MD_OK;
}

/* The lexeme of a number value, or MD_EPARSE when the value is not one. */
static int
number(struct scan *sc, const char **start, size_t *len)
{
    int c = peek(sc);

    if (!(c == '-' || (c >= '0' && c <= '9')))
        return MD_EPARSE;
    *start = sc->s + sc->pos;
    while (sc->pos < sc->len && !is_delim(sc->s[sc->pos]))
        sc->pos++;
    *len = (size_t)(sc->s + sc->pos - *start);
    return MD_OK;
}

/* ---- YAML output ---- */

/* A YAML double-quoted scalar.  YAML allows only printable characters in a
 * document (no C0/C1 controls but tab and NEL, no U+FFFE/U+FFFF), so others
 * are written as escapes; valid UTF-8 (jansson checked it) passes as is. */
static int
yaml_quoted(struct md_buf *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    int rc = md_buf_putc(out, '"');

    while (rc == MD_OK && *p != '\0') {
        unsigned cp = *p;
        size_t k = 1;

        if (cp >= 0xf0 && p[1] && p[2] && p[3]) {
            cp = ((cp & 0x07u) << 18) | ((p[1] & 0x3fu) << 12) | ((p[2] & 0x3fu) << 6) |
                (p[3] & 0x3fu);
            k = 4;
        } else if (cp >= 0xe0 && p[1] && p[2]) {
            cp = ((cp & 0x0fu) << 12) | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3fu);
            k = 3;
        } else if (cp >= 0xc0 && p[1]) {
            cp = ((cp & 0x1fu) << 6) | (p[1] & 0x3fu);
            k = 2;
        }
        if (cp == '"' || cp == '\\')
            rc = md_buf_printf(out, "\\%c", (char)cp);
        else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f && cp != 0x85) ||
                 cp == 0xfffe || cp == 0xffff)
            rc = md_buf_printf(out, "\\u%04x", cp);
        else
            rc = md_buf_append(out, p, k);
        p += k;
    }
    return rc == MD_OK ? md_buf_putc(out, '"') : rc;
}

/* A pattern that matches exactly the name: the name itself unless it
 * contains glob characters or starts with "re:", then an escaped regex. */
static int
exact_pattern(const char *name, char *pat, size_t pat_len)
{
    size_t n = 0;

    pat[0] = '\0';
    if (strpbrk(name, "*?") == NULL && strncmp(name, "re:", 3) != 0) {
        if (strlen(name) >= pat_len)
            return MD_ELIMIT;
        memcpy(pat, name, strlen(name) + 1);
        return MD_OK;
    }
    memcpy(pat, "re:", 3);
    n = 3;
    for (const char *p = name; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        int plain = c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '_' || c == '-';

        if (n + 3 >= pat_len) {
            pat[n] = '\0';
            return MD_ELIMIT;
        }
        if (!plain)
            pat[n++] = '\\';   /* backslash + ASCII punctuation is a literal in PCRE2 */
        pat[n++] = (char)c;
    }
    pat[n] = '\0';
    return MD_OK;
}

static int
header(struct md_buf *out, const struct md_litellm_opts *o)
{
    int rc = md_buf_printf(out,
        "# Generated by `meterd pricing import --litellm`: prices per million tokens,\n"
        "# shifted exactly from LiteLLM's per-token prices.  Review before use.\n"
        "pricing_models:\n"
        "  - name: ");

    if (rc == MD_OK)
        rc = yaml_quoted(out, o->name);
    if (rc == MD_OK)
        rc = md_buf_puts(out, "\n    currency: ");
    if (rc == MD_OK)
        rc = yaml_quoted(out, o->currency);
    if (rc == MD_OK)
        rc = md_buf_puts(out, "\n    clusters: [");
    for (size_t i = 0; rc == MD_OK && i < o->cluster_count; i++) {
        if (i > 0)
            rc = md_buf_puts(out, ", ");
        if (rc == MD_OK)
            rc = yaml_quoted(out, o->clusters[i]);
    }
    if (rc == MD_OK)
        rc = md_buf_printf(out, "]\n    effective_from: %s\n"
            "    cache_included_in_input: true\n    items:\n", o->effective_from);
    return rc;
}

int
md_litellm_to_yaml(const char *json, size_t len, const struct md_litellm_opts *o,
    struct md_buf *out, struct md_litellm_stats *stats, struct md_err *err)
{
    struct md_litellm_stats st = {0};
    struct scan sc = { json, len, 0 };
    json_error_t jerr;
    json_t *root;
    size_t nlen, klen;
    int rc;

    /* jansson checks syntax and rejects duplicate model names */
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return md_err_set(err, MD_EPARSE, "JSON %d:%d: %s", jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return md_err_set(err, MD_EPARSE, "the price map must be a JSON object");
    }
    json_decref(root);
    rc = header(out, o);
    if (rc != MD_OK)
        return md_err_set(err, (enum md_rc)rc, "output larger than its limit");
    if (expect(&sc, '{') != MD_OK)
        return md_err_set(err, MD_EPARSE, "the price map must be a JSON object");
    while (peek(&sc) == '"') {
        char mname[KEY_MAX + 1], mkey[KEY_MAX + 1];
        char prices[NKEYS][MD_LITELLM_NUM_MAX];
        unsigned have = 0;

        if (string(&sc, mname, &nlen) != MD_OK || expect(&sc, ':') != MD_OK)
            return md_err_set(err, MD_EPARSE, "model name longer than %d bytes or malformed",
                KEY_MAX);
        if (peek(&sc) != '{' || strcmp(mname, "sample_spec") == 0 || nlen == 0 ||
            memchr(mname, '\0', nlen) != NULL) {
            if (skip_value(&sc) != MD_OK)
                return md_err_set(err, MD_EPARSE, "malformed value of \"%.80s\"", mname);
            st.skipped++;
        } else {
            sc.pos++;
            while (peek(&sc) == '"') {
                size_t k;

                if (string(&sc, mkey, &klen) != MD_OK || expect(&sc, ':') != MD_OK)
                    return md_err_set(err, MD_EPARSE, "\"%.80s\": malformed key", mname);
                for (k = 0; k < NKEYS; k++)
                    if (strcmp(mkey, price_keys[k].key) == 0)
                        break;
                if (k == NKEYS) {
                    if (skip_value(&sc) != MD_OK)
                        return md_err_set(err, MD_EPARSE, "\"%.80s\": malformed value", mname);
                } else {
                    const char *num;
                    size_t numlen;
                    struct md_err nerr = {0};

                    if (number(&sc, &num, &numlen) != MD_OK)
                        return md_err_set(err, MD_EPARSE, "\"%.80s\": %s is not a number",
                            mname, mkey);
                    if (md_litellm_shift6(num, numlen, prices[k], sizeof(prices[k]), &nerr)
                        != MD_OK)
                        return md_err_set(err, nerr.rc, "\"%.80s\": %s: %s", mname, mkey,
                            nerr.msg);
                    have |= 1u << k;
                }
                if (peek(&sc) == ',')
                    sc.pos++;
            }
            if (expect(&sc, '}') != MD_OK)
                return md_err_set(err, MD_EPARSE, "\"%.80s\": malformed object", mname);
            if (have == 0) {
                st.skipped++;
            } else {
                char pat[MD_PRICING_PATTERN_MAX + 1];

                if (exact_pattern(mname, pat, sizeof(pat)) != MD_OK)
                    return md_err_set(err, MD_ELIMIT, "\"%.80s\": model name longer than a "
                        "pattern may be (%d bytes, counting regex escapes)", mname,
                        MD_PRICING_PATTERN_MAX);
                rc = md_buf_puts(out, "      - models: [");
                if (rc == MD_OK)
                    rc = yaml_quoted(out, pat);
                if (rc == MD_OK)
                    rc = md_buf_puts(out, "]\n        per_million:\n");
                for (size_t t = 0; rc == MD_OK && t < NKEYS; t++)
                    if (have & (1u << t))
                        rc = md_buf_printf(out, "          %s: \"%s\"\n", price_keys[t].type,
                            prices[t]);
                if (rc != MD_OK)
                    return md_err_set(err, (enum md_rc)rc, "output larger than its limit");
                st.models++;
            }
        }
        if (peek(&sc) == ',')
            sc.pos++;
    }
    if (expect(&sc, '}') != MD_OK)
        return md_err_set(err, MD_EPARSE, "malformed price map");
    if (st.models == 0)
        return md_err_set(err, MD_EPARSE, "no model in the map has a per-token price");
    if (stats != NULL)
        *stats = st;
    return MD_OK;
}
