/* money.c: decimal strings <-> int64 nano-units, and the one rounding rule.
 *
 * Stateless and pure: any thread may call anything here.  Invariants: no
 * floating point anywhere; every product goes through __int128 and every
 * narrowing back to int64 is range-checked; rounding is half to even and
 * happens exactly once per computed amount (md_money_line_amount,
 * md_money_apply_percent).  Half-to-even ("banker's rounding") keeps a large
 * sum of rounded lines unbiased: ties go up as often as down. */
#include "money.h"

#include <string.h>

static const int64_t pow10_tab[10] = {
    1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
};

static int
parse(const char *s, size_t len, int allow_neg, int64_t *nanos, struct md_err *err)
{
    uint64_t ip = 0, fp = 0, mag, limit;
    size_t i = 0, idigits = 0, fdigits = 0;
    int neg = 0;

    if (s == NULL || len == 0)
        return md_err_set(err, MD_EPARSE, "empty amount");
    if (len > MD_MONEY_STR_MAX)
        return md_err_set(err, MD_EPARSE, "longer than %d characters", MD_MONEY_STR_MAX);
    if (s[0] == '-') {
        if (!allow_neg)
            return md_err_set(err, MD_EPARSE, "must not be negative");
        neg = 1;
        i = 1;
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, idigits++) {
        uint64_t d = (uint64_t)(s[i] - '0');

        /* 19 integer digits already exceed every int64 nano amount */
        if (ip > (UINT64_MAX - d) / 10)
            return md_err_set(err, MD_ELIMIT, "too large");
        ip = ip * 10 + d;
    }
    if (idigits == 0)
        return md_err_set(err, MD_EPARSE, "not a decimal number (expected e.g. \"0.15\")");
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, fdigits++) {
            if (fdigits == MD_MONEY_DECIMALS)
                return md_err_set(err, MD_EPARSE, "more than %d decimals",
                    MD_MONEY_DECIMALS);
            fp = fp * 10 + (uint64_t)(s[i] - '0');
        }
        if (fdigits == 0)
            return md_err_set(err, MD_EPARSE, "no digit after the decimal point");
    }
    if (i != len)
        return md_err_set(err, MD_EPARSE,
            "not a decimal number (digits and one '.', no sign, exponent or space)");
    fp *= (uint64_t)pow10_tab[MD_MONEY_DECIMALS - fdigits];
    limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    if (ip > limit / (uint64_t)MD_MONEY_SCALE)
        return md_err_set(err, MD_ELIMIT, "too large (at most 9223372036.854775807)");
    mag = ip * (uint64_t)MD_MONEY_SCALE;
    if (mag > limit - fp)
        return md_err_set(err, MD_ELIMIT, "too large (at most 9223372036.854775807)");
    mag += fp;
    /* -(2^63) is representable only through the unsigned detour */
    *nanos = neg ? (int64_t)(0u - mag) : (int64_t)mag;
    return MD_OK;
}

int
md_money_parse(const char *s, size_t len, int64_t *nanos, struct md_err *err)
{
    return parse(s, len, 0, nanos, err);
}

int
md_money_parse_signed(const char *s, size_t len, int64_t *nanos, struct md_err *err)
{
    return parse(s, len, 1, nanos, err);
}

static uint64_t
magnitude(int64_t v)
{
    return v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
}

/* Writes sign, integer part and `decimals` digits of the fraction fr
 * (fr < 10^decimals); trims trailing zeros when trim is set.  A digit loop
 * from the right into a local array, then one copy: no printf, because the
 * bills endpoint prints two amounts per line (snprintf was most of its
 * rendering time).  The longest result is 21 characters (sign, 10 integer
 * digits, '.', 9 decimals; or sign and 19 digits without decimals). */
static int
emit(int neg, uint64_t ip, uint64_t fr, unsigned decimals, int trim, char *buf, size_t buf_len)
{
    char tmp[32];
    char *p = tmp + sizeof(tmp);
    size_t n;

    if (buf == NULL || buf_len == 0)
        return MD_ELIMIT;
    if (trim) {
        while (decimals > 0 && fr % 10 == 0) {
            fr /= 10;
            decimals--;
        }
    }
    if (decimals > 0) {
        for (unsigned k = 0; k < decimals; k++) {
            *--p = (char)('0' + fr % 10);
            fr /= 10;
        }
        *--p = '.';
    }
    do {
        *--p = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip != 0);
    if (neg)
        *--p = '-';
    n = (size_t)(tmp + sizeof(tmp) - p);
    if (n >= buf_len) {
        buf[0] = '\0';
        return MD_ELIMIT;
    }
    memcpy(buf, p, n);
    buf[n] = '\0';
    return MD_OK;
}

int
md_money_fmt(int64_t nanos, char *buf, size_t buf_len)
{
    uint64_t mag = magnitude(nanos);

    return emit(nanos < 0, mag / (uint64_t)MD_MONEY_SCALE, mag % (uint64_t)MD_MONEY_SCALE,
        MD_MONEY_DECIMALS, 1, buf, buf_len);
}

int
md_money_fmt_fixed(int64_t nanos, unsigned decimals, char *buf, size_t buf_len)
{
    uint64_t mag = magnitude(nanos), unit, q, r, scale;

    if (decimals > MD_MONEY_DECIMALS) {
        if (buf != NULL && buf_len > 0)
            buf[0] = '\0';
        return MD_ELIMIT;
    }
    unit = (uint64_t)pow10_tab[MD_MONEY_DECIMALS - decimals];
    q = mag / unit;
    r = mag % unit;
    /* half to even on the magnitude is symmetric, so also right for < 0 */
    if (r > unit - r || (r == unit - r && (q & 1u)))
        q++;
    scale = (uint64_t)pow10_tab[decimals];
    return emit(nanos < 0 && q != 0, q / scale, q % scale, decimals, 0, buf, buf_len);
}

__int128
md_money_div_half_even(__int128 n, __int128 d)
{
    __int128 q = n / d, r = n % d;   /* C truncates toward zero */
    __int128 twice = r < 0 ? -r * 2 : r * 2;

    if (twice > d || (twice == d && (q & 1) != 0))
        q += n < 0 ? -1 : 1;
    return q;
}

static int
narrow(__int128 v, int64_t *out, struct md_err *err, const char *what)
{
    if (v > (__int128)INT64_MAX || v < (__int128)INT64_MIN)
        return md_err_set(err, MD_ELIMIT, "%s exceeds the int64 nano range", what);
    *out = (int64_t)v;
    return MD_OK;
}

int
md_money_line_amount(uint64_t tokens, int64_t price_per_million_nanos, int64_t *amount_nanos,
    struct md_err *err)
{
    /* |tokens| < 2^64 and |price| <= 2^63, so the product fits in 127 bits */
    __int128 p = (__int128)tokens * (__int128)price_per_million_nanos;

    return narrow(md_money_div_half_even(p, (__int128)MD_MONEY_PER), amount_nanos, err,
        "line amount");
}

int
md_money_apply_percent(int64_t amount_nanos, int64_t percent_nanos, int64_t *out,
    struct md_err *err)
{
    /* percent is in 1e-9 percent, so 100 % is 100 * 1e9 */
    const __int128 hundred = (__int128)100 * MD_MONEY_SCALE;
    __int128 factor = hundred + (__int128)percent_nanos;

    return narrow(md_money_div_half_even((__int128)amount_nanos * factor, hundred), out, err,
        "adjusted amount");
}

int
md_money_currency_valid(const char *s)
{
    if (s == NULL || strlen(s) != 3)
        return 0;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return 0;
    return 1;
}
