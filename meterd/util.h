/* util.h: error codes, bounded number parsing, checked arithmetic, clocks.
 * Pure functions, safe from any thread.  No I/O. */
#ifndef MD_UTIL_H
#define MD_UTIL_H

#include <stddef.h>
#include <stdint.h>

enum md_rc {
    MD_OK = 0,
    MD_ENOMEM,      /* allocation failed */
    MD_EPARSE,      /* malformed input */
    MD_ELIMIT,      /* a stated limit was crossed */
    MD_EIO,         /* file, socket or transfer error */
    MD_EDB,         /* SQLite error */
    MD_ECONFIG,     /* configuration invalid */
    MD_ENOTFOUND,   /* looked-up item absent */
    MD_ESTATE       /* call not valid in the current state */
};

#define MD_ERR_MSG_MAX 256

/* Error detail; rc repeats the returned code.  Zero-initialise it. */
struct md_err {
    enum md_rc rc;
    char msg[MD_ERR_MSG_MAX];
};

/* Fills err when non-NULL; returns rc so callers can `return md_err_set(...)`. */
int md_err_set(struct md_err *err, enum md_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *md_rc_str(int rc);

/* Bounded parsers over (s, len); never read past len; out untouched on error.
 * md_parse_u64: decimal digits only, value <= max (MD_ELIMIT above it). */
int md_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

/* Duration with units: "250ms", "15s", "5m", "1h", "1d", "1h30m".  A bare
 * number is an error (a unit is required).  Result in milliseconds. */
int md_parse_duration_ms(const char *s, size_t len, uint64_t *out_ms,
    struct md_err *err);
/* Size with units: "512B", "64KiB", "16MiB", "1GiB", also KB/MB/GB (powers
 * of 1000).  A bare number is an error. */
int md_parse_size(const char *s, size_t len, uint64_t *out_bytes,
    struct md_err *err);
/* Formats a duration the way md_parse_duration_ms reads it ("1m30s"). */
void md_fmt_duration(uint64_t ms, char *buf, size_t buf_len);

/* Checked arithmetic: returns MD_ELIMIT on overflow, *out untouched. */
static inline int
md_add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;

    if (__builtin_add_overflow(a, b, &r))
        return MD_ELIMIT;
    *out = r;
    return MD_OK;
}

static inline int
md_mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;

    if (__builtin_mul_overflow(a, b, &r))
        return MD_ELIMIT;
    *out = r;
    return MD_OK;
}

static inline int
md_add_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;

    if (__builtin_add_overflow(a, b, &r))
        return MD_ELIMIT;
    *out = r;
    return MD_OK;
}

static inline int
md_mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;

    if (__builtin_mul_overflow(a, b, &r))
        return MD_ELIMIT;
    *out = r;
    return MD_OK;
}

/* Clocks in nanoseconds. */
uint64_t md_now_realtime_ns(void);
uint64_t md_now_monotonic_ns(void);

/* RFC 3339 UTC with milliseconds: "2026-11-27T09:48:39.123Z"; buf >= 25. */
void md_fmt_rfc3339_ms(uint64_t ts_ns, char *buf, size_t buf_len);

/* Civil time in UTC, no locale, no TZ: days since 1970-01-01 for a
 * proleptic Gregorian date and back (Howard Hinnant's algorithms). */
int64_t md_days_from_civil(int64_t y, unsigned m, unsigned d);
void    md_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);
/* "YYYY-MM-DD" (midnight UTC) or RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)"
 * -> unix seconds (fractions must be zero: usage is hourly).  Years
 * 1970..9999.  MD_EPARSE with a reason in err. */
int     md_parse_time(const char *s, size_t len, int64_t *unix_s, struct md_err *err);
/* "2026-11-27T10:00:00Z" (buf >= 21) and "2026-11-27" (buf >= 11). */
void    md_fmt_time(int64_t unix_s, char *buf, size_t buf_len);
void    md_fmt_date(int64_t unix_s, char *buf, size_t buf_len);

/* Writes code point cp (< 0x110000) as UTF-8 into o (room for 4 bytes);
 * returns the bytes written.  Callers check the range and surrogates. */
size_t md_utf8_put(char *o, unsigned cp);

/* strdup/strndup that go through the allocation hook. */
char *md_strdup(const char *s);
char *md_strndup(const char *s, size_t len);

/* Allocation hook (curl torture style): when MD_FAIL_ALLOC_AT=N is set in
 * the environment, the Nth call fails.  md_alloc_reset() rereads it. */
void *md_malloc(size_t n);
void *md_calloc(size_t count, size_t n);
void *md_realloc(void *p, size_t n);
void  md_free(void *p);
void  md_alloc_reset(void);

/* Constant-time comparison of equal-length buffers; 1 when equal. */
int md_ct_equal(const void *a, const void *b, size_t len);

#endif
