/* fuzz_expfmt.c: libFuzzer target for the exposition parser and the
 * normaliser.  The first input byte picks format and escaping, the rest is
 * the body.  Every delivered sample is checked for the parser's promises:
 * views inside the body or the scratch, names within the limits, and the
 * normaliser run on every name.  The fast skip (md_expfmt_opts.skip_fn) is
 * checked on every input against the full parse (expfmt_skipcheck.h): when
 * the full parse accepts, the skipping parses accept and deliver the same
 * samples and counts; the classifier is meterd's own (attribution by name)
 * or one that classes names by a hash of their bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/expfmt_skipcheck.h"
#include "attrib.h"
#include "expfmt.h"
#include "normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

/* Each input is copied to an exact-size heap block (so over-reads are
 * caught); a smaller quarantine keeps those copies from pushing RSS towards
 * smoke.sh's 256 MiB limit in long runs. */
const char *
__asan_default_options(void)
{
    return "quarantine_size_mb=32";
}

static int
on_sample(void *arg, const struct md_sample *s)
{
    const struct md_expfmt_limits *lim = arg;
    enum md_instrument inst;
    enum md_role role;
    char detail[64], out[MD_NORMALIZE_NAME_MAX + 1];
    volatile unsigned char sink = 0;

    if (s->name.len == 0 || s->name.len > lim->name_max || s->nlabels > lim->labels_max)
        abort();
    (void)md_normalize_name(s->name, &inst, &role, detail, sizeof(detail));
    for (size_t i = 0; i < s->nlabels; i++) {
        const struct md_label *l = &s->labels[i];

        if (l->name.len == 0 || l->name.len > lim->name_max ||
            l->value.len > lim->label_value_max)
            abort();
        /* touch every byte so ASan sees any view that points outside */
        for (size_t k = 0; k < l->value.len; k++)
            sink ^= (unsigned char)l->value.p[k];
        for (size_t k = 0; k < l->name.len; k++)
            sink ^= (unsigned char)l->name.p[k];
        (void)md_normalize_label(l->name, out, sizeof(out));
        (void)md_normalize_label_eq(l->name, "department.id");
    }
    for (size_t k = 0; k < s->name.len; k++)
        sink ^= (unsigned char)s->name.p[k];
    (void)sink;
    return 0;
}

/* the scraper's classifier: drop reason + 1 */
static int
cls_attrib(void *arg, struct md_str n)
{
    int d = md_attrib_name_drop(n);

    (void)arg;
    return d < 0 ? 0 : d + 1;
}

/* a pure function of the name bytes that skips about two names in three */
static int
cls_hash(void *arg, struct md_str n)
{
    uint32_t h = 2166136261u;

    (void)arg;
    for (size_t i = 0; i < n.len; i++)
        h = (h ^ (unsigned char)n.p[i]) * 16777619u;
    return (int)(h % 3);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_expfmt_parser *ps;
    struct md_expfmt_limits lim;
    struct md_expfmt_opts opts = { .escaping = MD_ESC_UNDERSCORES };
    struct md_expfmt_error err;
    enum md_expfmt_format fmt;
    char *body;

    if (size < 1)
        return 0;
    if (ps == NULL)
        ps = md_expfmt_parser_new();
    fmt = (enum md_expfmt_format)(data[0] % 3);
    opts.escaping = (enum md_expfmt_escaping)((data[0] >> 2) % 4);
    md_expfmt_limits_default(&lim);
    if (data[0] & 0x80) {
        lim.labels_max = 4;
        lim.name_max = 16;
        lim.label_value_max = 8;
        lim.samples_max = 8;
    }
    /* an exact-size copy, so ASan catches any read past the end */
    body = malloc(size - 1 ? size - 1 : 1);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, size - 1);
    (void)md_expfmt_parser_run(ps, body, size - 1, fmt, &lim, &opts, on_sample, &lim, &err);
    /* the fresh-parser path must agree with the reused one */
    if (md_expfmt_parse(body, size - 1, fmt, &lim, NULL, NULL, NULL) == 0 &&
        opts.escaping == MD_ESC_UNDERSCORES &&
        md_expfmt_parser_run(ps, body, size - 1, fmt, &lim, &opts, NULL, NULL, &err) != 0)
        abort();
    /* three more parses: bounded to 16 KiB bodies so that one input stays
     * well inside smoke.sh's 1 s timeout under ASan on a loaded machine */
    if (size - 1 <= 16384) {
        struct skc_result r;

        if (skc_check(ps, body, size - 1, fmt, &lim, opts.escaping,
                (data[0] & 0x40) ? cls_hash : cls_attrib, NULL, &r) < 0) {
            fprintf(stderr, "fast skip differs from the full parse: %s\n", r.why);
            abort();
        }
    }
    free(body);
    return 0;
}
