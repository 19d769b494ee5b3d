/* prom_text.c: Prometheus text exposition writer (format 0.0.4).
 * Pure and stateless; every function appends to the caller's buffer and
 * returns the buffer's error (MD_ELIMIT when its cap is reached). */
#include "prom_text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../meterd/util.h"

int
md_prom_put_label_value(struct md_buf *b, const char *s, size_t len)
{
    size_t start = 0;
    int rc = MD_OK;

    for (size_t i = 0; i < len && rc == MD_OK; i++) {
        const char *esc = NULL;

        if (s[i] == '\\')
            esc = "\\\\";
        else if (s[i] == '"')
            esc = "\\\"";
        else if (s[i] == '\n')
            esc = "\\n";
        if (esc == NULL)
            continue;
        rc = md_buf_append(b, s + start, i - start);
        if (rc == MD_OK)
            rc = md_buf_append(b, esc, 2);
        start = i + 1;
    }
    if (rc == MD_OK)
        rc = md_buf_append(b, s + start, len - start);
    return rc;
}

int
md_prom_family(struct md_buf *b, const char *name, const char *type, const char *help)
{
    int rc = md_buf_printf(b, "# HELP %s ", name);

    for (const char *p = help; *p != '\0' && rc == MD_OK; p++) {
        if (*p == '\\')
            rc = md_buf_append(b, "\\\\", 2);
        else if (*p == '\n')
            rc = md_buf_append(b, "\\n", 2);
        else
            rc = md_buf_putc(b, *p);
    }
    if (rc == MD_OK)
        rc = md_buf_printf(b, "\n# TYPE %s %s\n", name, type);
    return rc;
}

int
md_prom_put_double(struct md_buf *b, double v)
{
    char tmp[40];

    if (isnan(v))
        return md_buf_puts(b, "NaN");
    if (isinf(v))
        return md_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    /* integers up to 2^53 print exactly without an exponent */
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        (void)snprintf(tmp, sizeof(tmp), "%.0f", v);
        return md_buf_puts(b, tmp);
    }
    for (int prec = 1; prec <= 17; prec++) {
        (void)snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    return md_buf_puts(b, tmp);
}

static int
put_labels(struct md_buf *b, const char *name, const struct md_prom_label *labels,
    size_t nlabels)
{
    int rc = md_buf_puts(b, name);

    if (rc != MD_OK || nlabels == 0)
        return rc;
    rc = md_buf_putc(b, '{');
    for (size_t i = 0; i < nlabels && rc == MD_OK; i++) {
        const char *v = labels[i].value ? labels[i].value : "";
        size_t vl = labels[i].value_len ? labels[i].value_len : strlen(v);

        rc = md_buf_printf(b, "%s%s=\"", i ? "," : "", labels[i].name);
        if (rc == MD_OK)
            rc = md_prom_put_label_value(b, v, vl);
        if (rc == MD_OK)
            rc = md_buf_putc(b, '"');
    }
    if (rc == MD_OK)
        rc = md_buf_putc(b, '}');
    return rc;
}

int
md_prom_sample_f64(struct md_buf *b, const char *name, const struct md_prom_label *labels,
    size_t nlabels, double value)
{
    int rc = put_labels(b, name, labels, nlabels);

    if (rc == MD_OK)
        rc = md_buf_putc(b, ' ');
    if (rc == MD_OK)
        rc = md_prom_put_double(b, value);
    if (rc == MD_OK)
        rc = md_buf_putc(b, '\n');
    return rc;
}

int
md_prom_sample_f64_ts(struct md_buf *b, const char *name,
    const struct md_prom_label *labels, size_t nlabels, double value, int64_t ts_ms)
{
    int rc = put_labels(b, name, labels, nlabels);

    if (rc == MD_OK)
        rc = md_buf_putc(b, ' ');
    if (rc == MD_OK)
        rc = md_prom_put_double(b, value);
    if (rc == MD_OK)
        rc = md_buf_printf(b, " %lld\n", (long long)ts_ms);
    return rc;
}

int
md_prom_sample_u64(struct md_buf *b, const char *name, const struct md_prom_label *labels,
    size_t nlabels, uint64_t value)
{
    int rc = put_labels(b, name, labels, nlabels);

    if (rc == MD_OK)
        rc = md_buf_printf(b, " %llu\n", (unsigned long long)value);
    return rc;
}
