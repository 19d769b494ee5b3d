/* util.c: error codes, bounded number parsing, checked arithmetic, clocks.
 * Stateless except for the allocation-failure hook, whose counter is atomic,
 * so every function is safe from any thread.  Parsers never read past the
 * length they are given and leave their out-params untouched on error. */
#include "util.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int
md_err_set(struct md_err *err, enum md_rc rc, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL) {
        err->rc = rc;
        va_start(ap, fmt);
        (void)vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return rc;
}

const char *
md_rc_str(int rc)
{
    switch (rc) {
    case MD_OK:        return "ok";
    case MD_ENOMEM:    return "out of memory";
    case MD_EPARSE:    return "parse error";
    case MD_ELIMIT:    return "limit exceeded";
    case MD_EIO:       return "I/O error";
    case MD_EDB:       return "database error";
    case MD_ECONFIG:   return "configuration error";
    case MD_ENOTFOUND: return "not found";
    case MD_ESTATE:    return "invalid state";
    default:           return "unknown error";
    }
}

int
md_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0)
        return MD_EPARSE;
    for (size_t i = 0; i < len; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return MD_EPARSE;
        d = (unsigned)(s[i] - '0');
        /* check before multiplying, so nothing ever wraps */
        if (v > (max - d) / 10)
            return MD_ELIMIT;
        v = v * 10 + d;
    }
    *out = v;
    return MD_OK;
}

/* One "<digits><unit>" group.  Returns bytes consumed, 0 on error. */
static size_t
duration_group(const char *s, size_t len, uint64_t *ms, struct md_err *err)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
        { "d", 86400000 }, { "w", 604800000 },
    };
    size_t i = 0, digits;
    uint64_t n;

    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    digits = i;
    if (digits == 0) {
        md_err_set(err, MD_EPARSE, "expected a number");
        return 0;
    }
    if (md_parse_u64(s, digits, UINT64_MAX, &n) != MD_OK) {
        md_err_set(err, MD_ELIMIT, "number too large");
        return 0;
    }
    if (i == len) {
        md_err_set(err, MD_EPARSE, "needs a unit (e.g. 15s)");
        return 0;
    }
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        size_t ul = strlen(units[u].unit);

        if (len - i < ul || memcmp(s + i, units[u].unit, ul) != 0)
            continue;
        /* "m" must not swallow the "m" of "ms" */
        if (ul == 1 && units[u].unit[0] == 'm' && len - i >= 2 && s[i + 1] == 's')
            continue;
        if (md_mul_u64(n, units[u].ms, ms) != MD_OK) {
            md_err_set(err, MD_ELIMIT, "duration too large");
            return 0;
        }
        return i + ul;
    }
    md_err_set(err, MD_EPARSE, "unknown unit (use ms, s, m, h, d or w)");
    return 0;
}

int
md_parse_duration_ms(const char *s, size_t len, uint64_t *out_ms, struct md_err *err)
{
    uint64_t total = 0;
    size_t i = 0;

    if (len == 0)
        return md_err_set(err, MD_EPARSE, "empty duration");
    while (i < len) {
        uint64_t ms;
        size_t used = duration_group(s + i, len - i, &ms, err);

        if (used == 0)
            return err != NULL ? (int)err->rc : MD_EPARSE;
        if (md_add_u64(total, ms, &total) != MD_OK)
            return md_err_set(err, MD_ELIMIT, "duration too large");
        i += used;
    }
    *out_ms = total;
    return MD_OK;
}

void
md_fmt_duration(uint64_t ms, char *buf, size_t buf_len)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
        { "ms", 1 },
    };
    size_t off = 0;

    if (buf_len == 0)
        return;
    buf[0] = '\0';
    if (ms == 0) {
        (void)snprintf(buf, buf_len, "0s");
        return;
    }
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        uint64_t n = ms / units[u].ms;
        int w;

        if (n == 0)
            continue;
        ms -= n * units[u].ms;
        w = snprintf(buf + off, buf_len - off, "%llu%s",
            (unsigned long long)n, units[u].unit);
        if (w < 0 || (size_t)w >= buf_len - off)
            return;
        off += (size_t)w;
    }
}

int
md_parse_size(const char *s, size_t len, uint64_t *out_bytes, struct md_err *err)
{
    static const struct { const char *unit; uint64_t mul; } units[] = {
        { "B", 1 },
        { "KiB", 1024ULL }, { "MiB", 1024ULL << 10 }, { "GiB", 1024ULL << 20 },
        { "TiB", 1024ULL << 30 },
        { "KB", 1000ULL }, { "MB", 1000000ULL }, { "GB", 1000000000ULL },
        { "TB", 1000000000000ULL },
    };
    size_t i = 0;
    uint64_t n;

    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == 0)
        return md_err_set(err, MD_EPARSE, "expected a number");
    if (md_parse_u64(s, i, UINT64_MAX, &n) != MD_OK)
        return md_err_set(err, MD_ELIMIT, "number too large");
    if (i == len)
        return md_err_set(err, MD_EPARSE, "needs a unit (e.g. 16MiB)");
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        if (strlen(units[u].unit) != len - i || memcmp(s + i, units[u].unit, len - i) != 0)
            continue;
        if (md_mul_u64(n, units[u].mul, out_bytes) != MD_OK)
            return md_err_set(err, MD_ELIMIT, "size too large");
        return MD_OK;
    }
    return md_err_set(err, MD_EPARSE, "unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)");
}

uint64_t
md_now_realtime_ns(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t
md_now_monotonic_ns(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void
md_fmt_rfc3339_ms(uint64_t ts_ns, char *buf, size_t buf_len)
{
    time_t secs = (time_t)(ts_ns / 1000000000ULL);
    unsigned ms = (unsigned)((ts_ns / 1000000ULL) % 1000ULL);
    struct tm tm;

    (void)gmtime_r(&secs, &tm);
    (void)snprintf(buf, buf_len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
        tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

/* Allocation hook.  fail_at == 0 means never fail. */
static atomic_ullong alloc_calls;
static atomic_ullong alloc_fail_at;
static atomic_int    alloc_inited;

void
md_alloc_reset(void)
{
    const char *e = getenv("MD_FAIL_ALLOC_AT");
    uint64_t n = 0;

    if (e != NULL && md_parse_u64(e, strlen(e), UINT64_MAX, &n) != MD_OK)
        n = 0;
    atomic_store(&alloc_fail_at, n);
    atomic_store(&alloc_calls, 0);
    atomic_store(&alloc_inited, 1);
}

static int
alloc_should_fail(void)
{
    unsigned long long at;

    if (!atomic_load(&alloc_inited))
        md_alloc_reset();
    at = atomic_load(&alloc_fail_at);
    if (at == 0)
        return 0;
    return atomic_fetch_add(&alloc_calls, 1) + 1 == at;
}

void *
md_malloc(size_t n)
{
    return alloc_should_fail() ? NULL : malloc(n);
}

void *
md_calloc(size_t count, size_t n)
{
    return alloc_should_fail() ? NULL : calloc(count, n);
}

void *
md_realloc(void *p, size_t n)
{
    return alloc_should_fail() ? NULL : realloc(p, n);
}

void
md_free(void *p)
{
    free(p);
}

char *
md_strndup(const char *s, size_t len)
{
    char *d = md_malloc(len + 1);

    if (d == NULL)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *
md_strdup(const char *s)
{
    return md_strndup(s, strlen(s));
}

int
md_ct_equal(const void *a, const void *b, size_t len)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char acc = 0;

    for (size_t i = 0; i < len; i++)
        acc |= (unsigned char)(x[i] ^ y[i]);
    return acc == 0;
}

int64_t
md_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void
md_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int
digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 1;
}

int
md_parse_time(const char *s, size_t len, int64_t *unix_s, struct md_err *err)
{
    static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    unsigned y, mo, d, h = 0, mi = 0, se = 0, oh = 0, om = 0;
    int64_t t, off = 0;
    size_t i;

    if (len < 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d))
        return md_err_set(err, MD_EPARSE, "expected YYYY-MM-DD or RFC 3339 (2026-11-27T10:00:00Z)");
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)))
        return md_err_set(err, MD_EPARSE, "no such date");
    if (len > 10) {
        if ((s[10] != 'T' && s[10] != 't') || len < 20 || !digits(s + 11, 2, &h) ||
            s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &se))
            return md_err_set(err, MD_EPARSE,
                "expected YYYY-MM-DD or RFC 3339 (2026-11-27T10:00:00Z)");
        if (h > 23 || mi > 59 || se > 59)
            return md_err_set(err, MD_EPARSE, "time of day out of range");
        i = 19;
        if (i < len && s[i] == '.') {
            size_t j = i + 1;

            while (j < len && s[j] >= '0' && s[j] <= '9') {
                if (s[j] != '0')
                    return md_err_set(err, MD_EPARSE, "fractional seconds are not supported");
                j++;
            }
            if (j == i + 1)
                return md_err_set(err, MD_EPARSE, "expected digits after '.'");
            i = j;
        }
        if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z')) {
            off = 0;
        } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2, &oh) &&
                   s[i + 3] == ':' && digits(s + i + 4, 2, &om) && oh <= 23 && om <= 59) {
            off = ((int64_t)oh * 3600 + (int64_t)om * 60) * (s[i] == '+' ? 1 : -1);
        } else {
            return md_err_set(err, MD_EPARSE, "expected a time zone (Z or +HH:MM)");
        }
    }
    t = md_days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + se - off;
    if (t < 0)
        return md_err_set(err, MD_EPARSE, "before 1970");
    *unix_s = t;
    return MD_OK;
}

void
md_fmt_time(int64_t unix_s, char *buf, size_t buf_len)
{
    int64_t days = unix_s >= 0 ? unix_s / 86400 : (unix_s - 86399) / 86400, y;
    int64_t sod = unix_s - days * 86400;
    unsigned m, d;

    md_civil_from_days(days, &y, &m, &d);
    (void)snprintf(buf, buf_len, "%04lld-%02u-%02uT%02u:%02u:%02uZ", (long long)y, m, d,
        (unsigned)(sod / 3600), (unsigned)(sod % 3600 / 60), (unsigned)(sod % 60));
}

void
md_fmt_date(int64_t unix_s, char *buf, size_t buf_len)
{
    int64_t days = unix_s >= 0 ? unix_s / 86400 : (unix_s - 86399) / 86400, y;
    unsigned m, d;

    md_civil_from_days(days, &y, &m, &d);
    (void)snprintf(buf, buf_len, "%04lld-%02u-%02u", (long long)y, m, d);
}

size_t
md_utf8_put(char *o, unsigned cp)
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
