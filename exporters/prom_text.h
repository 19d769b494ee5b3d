/* prom_text.h: Prometheus text exposition writer (format 0.0.4).
 * Pure: writes into a caller-owned md_buf, no I/O, no locks.  Values are
 * printed with the shortest decimal that parses back to the same double, so
 * parse -> write -> parse round-trips exactly. */
#ifndef MD_PROM_TEXT_H
#define MD_PROM_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "../meterd/buf.h"

struct md_prom_label {
    const char *name;
    const char *value;
    size_t      value_len;    /* 0: strlen(value) */
};

/* "# HELP name help\n# TYPE name type\n"; help is escaped (\\ and \n). */
int md_prom_family(struct md_buf *b, const char *name, const char *type, const char *help);
/* "name{l1="v1",...} value\n"; label values escaped (\\, \", \n). */
int md_prom_sample_f64(struct md_buf *b, const char *name, const struct md_prom_label *labels,
    size_t nlabels, double value);
int md_prom_sample_u64(struct md_buf *b, const char *name, const struct md_prom_label *labels,
    size_t nlabels, uint64_t value);
/* Same with an explicit millisecond timestamp. */
int md_prom_sample_f64_ts(struct md_buf *b, const char *name,
    const struct md_prom_label *labels, size_t nlabels, double value, int64_t ts_ms);
/* Appends the exposition spelling of v: "NaN", "+Inf", "-Inf" or the
 * shortest round-tripping decimal. */
int md_prom_put_double(struct md_buf *b, double v);
/* Appends s[0..len) escaped as a label value (without quotes). */
int md_prom_put_label_value(struct md_buf *b, const char *s, size_t len);

#endif
