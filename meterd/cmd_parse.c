/* cmd_parse.c: `meterd parse [--content-type CT | --format F] [--normalize]
 * [--dimension DIM=LABEL]... FILE|-`.
 *
 * Runs in the main thread of a short-lived process.  Reads FILE (or stdin)
 * whole, parses it with expfmt and prints one JSON object per sample per
 * line as the samples arrive.  On invalid input it prints
 * FILE:LINE:COL: message on stderr and exits 1; stdout is flushed before the
 * message and nothing more is written to it. */
#include "cmd_parse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "expfmt.h"
#include "exporters/prom_text.h"
#include "normalize.h"
#include "util.h"

#define INPUT_MAX ((size_t)1 << 30)     /* 1 GiB */
#define DIMS_MAX  16

struct dim {
    const char *dim;      /* output key */
    const char *label;    /* configured label name, any spelling */
};

struct ctx {
    struct md_buf out;
    int normalize;
    struct dim dims[DIMS_MAX];
    size_t ndims;
    int io_error;
};

static void
usage(FILE *fp)
{
    fputs("usage: meterd parse [--content-type CT | --format auto|text|openmetrics]\n"
          "                    [--normalize] [--dimension DIM=LABEL]... FILE|-\n"
          "\n"
          "Parses a Prometheus text 0.0.4 / OpenMetrics 1.0 exposition and prints one JSON\n"
          "object per sample per line: {\"name\", \"labels\", \"value\"[, \"timestamp_ms\"]}.\n"
          "  --content-type CT  the HTTP Content-Type the scrape came with (format, escaping)\n"
          "  --format F         force the format (default auto: detected from the body)\n"
          "  --normalize        add \"instrument\", \"role\" and the dimensions; label names\n"
          "                     in canonical OTel form\n"
          "  --dimension D=L    map label L (any spelling) to dimension D; defaults:\n"
          "                     department=department model=gen_ai.request.model\n"
          "                     provider=gen_ai.provider.name operation=gen_ai.operation.name\n"
          "                     token_type=gen_ai.token.type\n"
          "Invalid input: FILE:LINE:COL: message on stderr, exit status 1.\n", fp);
}

static int
put_json_str(struct md_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    int rc = md_buf_putc(b, '"');

    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[7];
        size_t el = 0;

        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            el = 2;
        } else if (c == '\n') {
            memcpy(e, "\\n", 2);
            el = 2;
        } else if (c < 0x20) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            el = 6;
        } else {
            continue;
        }
        rc = md_buf_append(b, s + start, i - start);
        if (rc == MD_OK)
            rc = md_buf_append(b, e, el);
        start = i + 1;
    }
    if (rc == MD_OK)
        rc = md_buf_append(b, s + start, n - start);
    if (rc == MD_OK)
        rc = md_buf_putc(b, '"');
    return rc;
}

static int
put_value(struct md_buf *b, double v)
{
    if (v != v || v > 1.7976931348623157e308 || v < -1.7976931348623157e308) {
        int rc = md_buf_putc(b, '"');

        if (rc == MD_OK)
            rc = md_prom_put_double(b, v);
        if (rc == MD_OK)
            rc = md_buf_putc(b, '"');
        return rc;
    }
    return md_prom_put_double(b, v);
}

static int
on_sample(void *arg, const struct md_sample *s)
{
    struct ctx *c = arg;
    struct md_buf *b = &c->out;
    char lname[MD_NORMALIZE_NAME_MAX + 1];
    int rc;

    rc = md_buf_puts(b, "{\"name\":");
    if (rc == MD_OK)
        rc = put_json_str(b, s->name.p, s->name.len);
    if (rc == MD_OK)
        rc = md_buf_puts(b, ",\"labels\":{");
    for (size_t i = 0; i < s->nlabels && rc == MD_OK; i++) {
        const struct md_str *n = &s->labels[i].name;

        if (i > 0)
            rc = md_buf_putc(b, ',');
        if (rc != MD_OK)
            break;
        if (c->normalize) {
            size_t l = md_normalize_label(*n, lname, sizeof(lname));

            rc = l < sizeof(lname) ? put_json_str(b, lname, l) : put_json_str(b, n->p, n->len);
        } else {
            rc = put_json_str(b, n->p, n->len);
        }
        if (rc == MD_OK)
            rc = md_buf_putc(b, ':');
        if (rc == MD_OK)
            rc = put_json_str(b, s->labels[i].value.p, s->labels[i].value.len);
    }
    if (rc == MD_OK)
        rc = md_buf_puts(b, "},\"value\":");
    if (rc == MD_OK)
        rc = put_value(b, s->value);
    if (rc == MD_OK && s->has_ts)
        rc = md_buf_printf(b, ",\"timestamp_ms\":%lld", (long long)s->ts_ms);
    if (rc == MD_OK && c->normalize) {
        enum md_instrument inst;
        enum md_role role;
        char detail[128];

        (void)md_normalize_name(s->name, &inst, &role, detail, sizeof(detail));
        rc = md_buf_puts(b, ",\"instrument\":");
        if (rc == MD_OK)
            rc = inst == MD_INST_UNKNOWN ? md_buf_puts(b, "null")
                                         : put_json_str(b, md_instrument_name(inst),
                                               strlen(md_instrument_name(inst)));
        if (rc == MD_OK && detail[0] != '\0') {
            rc = md_buf_puts(b, ",\"instrument_detail\":");
            if (rc == MD_OK)
                rc = put_json_str(b, detail, strlen(detail));
        }
        if (rc == MD_OK)
            rc = md_buf_printf(b, ",\"role\":\"%s\"", md_role_name(role));
        for (size_t d = 0; d < c->ndims && rc == MD_OK; d++) {
            for (size_t i = 0; i < s->nlabels; i++) {
                if (!md_normalize_label_eq(s->labels[i].name, c->dims[d].label))
                    continue;
                rc = md_buf_putc(b, ',');
                if (rc == MD_OK)
                    rc = put_json_str(b, c->dims[d].dim, strlen(c->dims[d].dim));
                if (rc == MD_OK)
                    rc = md_buf_putc(b, ':');
                if (rc == MD_OK)
                    rc = put_json_str(b, s->labels[i].value.p, s->labels[i].value.len);
                break;
            }
        }
    }
    if (rc == MD_OK)
        rc = md_buf_puts(b, "}\n");
    if (rc != MD_OK)
        return rc;
    if (b->len >= 1 << 16) {
        if (fwrite(b->data, 1, b->len, stdout) != b->len) {
            c->io_error = 1;
            return MD_EIO;
        }
        md_buf_reset(b);
    }
    return MD_OK;
}

static int
read_all(const char *path, struct md_buf *in)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char chunk[65536];
    size_t n;
    int rc = MD_OK;

    if (fp == NULL) {
        fprintf(stderr, "meterd parse: %s: %s\n", path, strerror(errno));
        return MD_EIO;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
        rc = md_buf_append(in, chunk, n);
        if (rc != MD_OK) {
            fprintf(stderr, "meterd parse: %s: larger than %zu bytes\n", path, INPUT_MAX);
            break;
        }
    }
    if (rc == MD_OK && ferror(fp)) {
        fprintf(stderr, "meterd parse: %s: read error\n", path);
        rc = MD_EIO;
    }
    if (fp != stdin)
        fclose(fp);
    return rc;
}

static int
set_dim(struct ctx *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    size_t dl;

    if (eq == NULL || eq == arg || eq[1] == '\0')
        return -1;
    dl = (size_t)(eq - arg);
    for (size_t i = 0; i < c->ndims; i++) {
        if (strlen(c->dims[i].dim) == dl && memcmp(c->dims[i].dim, arg, dl) == 0) {
            c->dims[i].label = eq + 1;
            return 0;
        }
    }
    /* a new dimension: keep the key as given (argv outlives the run) */
    if (c->ndims >= DIMS_MAX)
        return -1;
    {
        char *k = md_strndup(arg, dl);

        if (k == NULL)
            return -1;
        c->dims[c->ndims].dim = k;
        c->dims[c->ndims].label = eq + 1;
        c->ndims++;
    }
    return 0;
}

int
md_cmd_parse(int argc, char **argv)
{
    static const struct dim defaults[] = {
        { "department", "department" }, { "model", "gen_ai.request.model" },
        { "provider", "gen_ai.provider.name" }, { "operation", "gen_ai.operation.name" },
        { "token_type", "gen_ai.token.type" },
    };
    struct ctx c;
    struct md_buf in;
    struct md_expfmt_error err;
    struct md_expfmt_opts opts = { .escaping = MD_ESC_UNDERSCORES };
    struct md_expfmt_parser *ps = NULL;
    enum md_expfmt_format fmt = MD_EXPFMT_AUTO;
    const char *path = NULL, *ct = NULL, *fmt_arg = NULL;
    size_t ndefault = sizeof(defaults) / sizeof(defaults[0]);
    int rc, status = 1;

    memset(&c, 0, sizeof(c));
    memcpy(c.dims, defaults, sizeof(defaults));
    c.ndims = ndefault;
    md_buf_init(&c.out, (size_t)1 << 20);
    md_buf_init(&in, INPUT_MAX);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            status = 0;
            goto out;
        } else if (strcmp(a, "--normalize") == 0) {
            c.normalize = 1;
        } else if (strcmp(a, "--content-type") == 0 && i + 1 < argc) {
            ct = argv[++i];
        } else if (strncmp(a, "--content-type=", 15) == 0) {
            ct = a + 15;
        } else if (strcmp(a, "--format") == 0 && i + 1 < argc) {
            fmt_arg = argv[++i];
        } else if (strncmp(a, "--format=", 9) == 0) {
            fmt_arg = a + 9;
        } else if (strcmp(a, "--dimension") == 0 && i + 1 < argc) {
            if (set_dim(&c, argv[++i]) != 0) {
                fprintf(stderr, "meterd parse: --dimension wants DIM=LABEL (at most %d)\n",
                    DIMS_MAX);
                status = 2;
                goto out;
            }
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "meterd parse: unknown or incomplete option \"%s\"\n\n", a);
            usage(stderr);
            status = 2;
            goto out;
        } else if (path == NULL) {
            path = a;
        } else {
            fprintf(stderr, "meterd parse: more than one FILE\n");
            status = 2;
            goto out;
        }
    }
    if (path == NULL || (ct != NULL && fmt_arg != NULL)) {
        fputs(path == NULL ? "meterd parse: FILE (or - for stdin) is required\n\n"
                           : "meterd parse: --content-type and --format exclude each other\n\n",
            stderr);
        usage(stderr);
        status = 2;
        goto out;
    }
    if (ct != NULL) {
        md_expfmt_content_type(ct, strlen(ct), &fmt, &opts.escaping);
    } else if (fmt_arg != NULL) {
        if (strcmp(fmt_arg, "auto") == 0)
            fmt = MD_EXPFMT_AUTO;
        else if (strcmp(fmt_arg, "text") == 0)
            fmt = MD_EXPFMT_TEXT;
        else if (strcmp(fmt_arg, "openmetrics") == 0)
            fmt = MD_EXPFMT_OPENMETRICS;
        else {
            fprintf(stderr, "meterd parse: --format must be auto, text or openmetrics\n");
            status = 2;
            goto out;
        }
    }
    if (read_all(path, &in) != MD_OK)
        goto out;
    ps = md_expfmt_parser_new();
    if (ps == NULL) {
        fputs("meterd parse: out of memory\n", stderr);
        goto out;
    }
    rc = md_expfmt_parser_run(ps, in.data ? in.data : "", in.len, fmt, NULL, &opts, on_sample,
        &c, &err);
    if (c.out.len > 0 && fwrite(c.out.data, 1, c.out.len, stdout) != c.out.len)
        c.io_error = 1;
    if (fflush(stdout) != 0)
        c.io_error = 1;
    if (c.io_error) {
        fprintf(stderr, "meterd parse: write error on stdout\n");
        goto out;
    }
    if (rc != MD_OK) {
        fprintf(stderr, "%s:%u:%u: %s\n", path, err.line, err.col, err.msg);
        goto out;
    }
    status = 0;
out:
    for (size_t i = ndefault; i < c.ndims; i++)
        md_free((void *)(uintptr_t)c.dims[i].dim);
    md_expfmt_parser_free(ps);
    md_buf_fini(&in);
    md_buf_fini(&c.out);
    return status;
}
