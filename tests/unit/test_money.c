/* test_money.c: decimal parsing and printing, the half-to-even line rule
 * (ties both ways, negatives), overflow refusal, percent adjustments, and a
 * million random lines checked against an independent exact computation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "money.h"
#include "util.h"

static void
test_parse(void **state)
{
    static const struct {
        const char *in;
        int         neg_ok;
        int         rc;
        int64_t     want;
    } cases[] = {
        { "0.15", 0, MD_OK, 150000000 },
        { "12", 0, MD_OK, 12000000000 },
        { "0.000000001", 0, MD_OK, 1 },
        { "007.5", 0, MD_OK, 7500000000 },
        { "0", 0, MD_OK, 0 },
        { "0.075", 0, MD_OK, 75000000 },
        { "0.1875", 0, MD_OK, 187500000 },
        { "1.100000000", 0, MD_OK, 1100000000 },
        { "9223372036.854775807", 0, MD_OK, INT64_MAX },
        { "9223372036.854775808", 0, MD_ELIMIT, 0 },
        { "9223372037", 0, MD_ELIMIT, 0 },
        { "99999999999999999999", 0, MD_ELIMIT, 0 },
        { "0.1234567891", 0, MD_EPARSE, 0 },
        { "0.0000000001", 0, MD_EPARSE, 0 },
        { "", 0, MD_EPARSE, 0 },
        { ".", 0, MD_EPARSE, 0 },
        { ".5", 0, MD_EPARSE, 0 },
        { "5.", 0, MD_EPARSE, 0 },
        { "+1", 0, MD_EPARSE, 0 },
        { " 1", 0, MD_EPARSE, 0 },
        { "1 ", 0, MD_EPARSE, 0 },
        { "1e3", 0, MD_EPARSE, 0 },
        { "1.5E-7", 0, MD_EPARSE, 0 },
        { "1.2.3", 0, MD_EPARSE, 0 },
        { "0x10", 0, MD_EPARSE, 0 },
        { "1,5", 0, MD_EPARSE, 0 },
        { "-0.5", 0, MD_EPARSE, 0 },
        { "-0.5", 1, MD_OK, -500000000 },
        { "-10", 1, MD_OK, -10000000000 },
        { "-0", 1, MD_OK, 0 },
        { "-9223372036.854775808", 1, MD_OK, INT64_MIN },
        { "-9223372036.854775809", 1, MD_ELIMIT, 0 },
        { "9223372036.854775808", 1, MD_ELIMIT, 0 },
        { "-", 1, MD_EPARSE, 0 },
        { "--1", 1, MD_EPARSE, 0 },
        { "-.5", 1, MD_EPARSE, 0 },
        { "-1.0000000001", 1, MD_EPARSE, 0 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_err err = {0};
        int64_t got = 424242;
        int rc = cases[i].neg_ok
            ? md_money_parse_signed(cases[i].in, strlen(cases[i].in), &got, &err)
            : md_money_parse(cases[i].in, strlen(cases[i].in), &got, &err);

        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc got %d want %d (%s)", i, cases[i].in, rc,
                cases[i].rc, err.msg);
        if (rc == MD_OK && got != cases[i].want)
            fail_msg("case %zu \"%s\": got %lld want %lld", i, cases[i].in, (long long)got,
                (long long)cases[i].want);
        if (rc != MD_OK && got != 424242)
            fail_msg("case %zu \"%s\": output touched on error", i, cases[i].in);
        if (rc != MD_OK && err.msg[0] == '\0')
            fail_msg("case %zu \"%s\": no error message", i, cases[i].in);
    }
    /* the length bounds the read: "0.15" inside a longer buffer */
    {
        int64_t got = 0;

        assert_int_equal(md_money_parse("0.159", 4, &got, NULL), MD_OK);
        assert_int_equal(got, 150000000);
    }
}

static void
test_fmt(void **state)
{
    static const struct { int64_t in; const char *want; } cases[] = {
        { 150000000, "0.15" },  { 12000000000, "12" },     { 1, "0.000000001" },
        { 0, "0" },             { -1, "-0.000000001" },     { 1500000000, "1.5" },
        { -500000000, "-0.5" }, { 100000000000, "100" },    { 187500000, "0.1875" },
        { INT64_MAX, "9223372036.854775807" }, { INT64_MIN, "-9223372036.854775808" },
    };
    char buf[MD_MONEY_FMT_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t back = 0;

        assert_int_equal(md_money_fmt(cases[i].in, buf, sizeof(buf)), MD_OK);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\" want \"%s\"", i, buf, cases[i].want);
        /* printing is the exact inverse of parsing */
        assert_int_equal(md_money_parse_signed(buf, strlen(buf), &back, NULL), MD_OK);
        assert_true(back == cases[i].in);
    }
    /* too small a buffer is an error, never a truncated number */
    assert_int_equal(md_money_fmt(INT64_MIN, buf, 10), MD_ELIMIT);
    assert_string_equal(buf, "");
}

static void
test_fmt_fixed(void **state)
{
    static const struct { int64_t in; unsigned dec; const char *want; } cases[] = {
        { 125000000, 2, "0.12" },    /* tie, 2 is even: down */
        { 135000000, 2, "0.14" },    /* tie, 3 is odd: up */
        { 125000001, 2, "0.13" },    /* above the tie */
        { -125000000, 2, "-0.12" },
        { -135000000, 2, "-0.14" },
        { 5000000, 2, "0.00" },      /* 0.005: tie to 0 */
        { 15000000, 2, "0.02" },
        { -4000000, 2, "0.00" },     /* rounds to zero: no sign */
        { 12000000000, 0, "12" },
        { 2500000000, 0, "2" },
        { 3500000000, 0, "4" },
        { 1, 9, "0.000000001" },
        { 150000000, 4, "0.1500" },
        { 999999999, 2, "1.00" },
        { INT64_MAX, 0, "9223372037" },
        { INT64_MIN, 2, "-9223372036.85" },
    };
    char buf[MD_MONEY_FMT_MAX];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(md_money_fmt_fixed(cases[i].in, cases[i].dec, buf, sizeof(buf)), MD_OK);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\" want \"%s\"", i, buf, cases[i].want);
    }
    assert_int_equal(md_money_fmt_fixed(1, 10, buf, sizeof(buf)), MD_ELIMIT);
}

static void
test_line_amount(void **state)
{
    static const struct {
        uint64_t tokens;
        int64_t  price;
        int      rc;
        int64_t  want;
    } cases[] = {
        { 1000, 150000000, MD_OK, 150000 },          /* 1000 x 0.15/M = 0.00015 */
        { 1, 150000000, MD_OK, 150 },
        { 0, 150000000, MD_OK, 0 },
        { 123456789, 600000000, MD_OK, 74074073400 }, /* 123456789 x 600 nanos */
        { 7, 75000000, MD_OK, 525 },
        { 1, 187500000, MD_OK, 188 },                /* 187.5 -> 188 (even) */
        { 3, 187500000, MD_OK, 562 },                /* 562.5 -> 562 (even) */
        { 1, 500000, MD_OK, 0 },                     /* 0.5 -> 0 */
        { 3, 500000, MD_OK, 2 },                     /* 1.5 -> 2 */
        { 5, 500000, MD_OK, 2 },                     /* 2.5 -> 2 */
        { 7, 500000, MD_OK, 4 },                     /* 3.5 -> 4 */
        { 1, 499999, MD_OK, 0 },
        { 1, 500001, MD_OK, 1 },
        { 1, -500000, MD_OK, 0 },                    /* -0.5 -> 0 */
        { 3, -500000, MD_OK, -2 },                   /* -1.5 -> -2 */
        { 5, -500000, MD_OK, -2 },                   /* -2.5 -> -2 */
        { 1, -500001, MD_OK, -1 },
        { 1ULL << 62, 1000000, MD_OK, INT64_C(1) << 62 },
        { 1ULL << 62, 2000000, MD_ELIMIT, 0 },       /* exactly 2^63 */
        { UINT64_MAX, 1000000, MD_ELIMIT, 0 },
        { UINT64_MAX, INT64_MAX, MD_ELIMIT, 0 },
        { UINT64_MAX, INT64_MIN, MD_ELIMIT, 0 },
        { UINT64_MAX, 1, MD_OK, 18446744073710 },    /* 18446744073709.551615 */
        { 1ULL << 63, -1000000, MD_OK, INT64_MIN },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_err err = {0};
        int64_t got = 77;
        int rc = md_money_line_amount(cases[i].tokens, cases[i].price, &got, &err);

        if (rc != cases[i].rc)
            fail_msg("case %zu: rc got %d want %d", i, rc, cases[i].rc);
        if (rc == MD_OK && got != cases[i].want)
            fail_msg("case %zu: %llu x %lld: got %lld want %lld", i,
                (unsigned long long)cases[i].tokens, (long long)cases[i].price,
                (long long)got, (long long)cases[i].want);
        if (rc != MD_OK && got != 77)
            fail_msg("case %zu: output touched on error", i);
    }
}

static void
test_percent(void **state)
{
    static const struct {
        int64_t     amount;
        const char *pct;
        int         rc;
        int64_t     want;
    } cases[] = {
        { 1000, "-10", MD_OK, 900 },
        { 15, "-10", MD_OK, 14 },            /* 13.5 -> 14 */
        { 25, "-10", MD_OK, 22 },            /* 22.5 -> 22 */
        { 100, "2.5", MD_OK, 102 },          /* 102.5 -> 102 */
        { 300, "2.5", MD_OK, 308 },          /* 307.5 -> 308 */
        { -25, "-10", MD_OK, -22 },          /* -22.5 -> -22 */
        { 150000000, "20", MD_OK, 180000000 },
        { 150000000, "0", MD_OK, 150000000 },
        { 123456789, "-100", MD_OK, 0 },
        { 1, "0.000000001", MD_OK, 1 },
        { INT64_MAX, "100", MD_ELIMIT, 0 },
        { INT64_MAX, "-50", MD_OK, 4611686018427387904 }, /* 4611686018427387903.5 -> even */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t pct = 0, got = 5;
        int rc;

        assert_int_equal(md_money_parse_signed(cases[i].pct, strlen(cases[i].pct), &pct, NULL),
            MD_OK);
        rc = md_money_apply_percent(cases[i].amount, pct, &got, NULL);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc got %d want %d", i, rc, cases[i].rc);
        if (rc == MD_OK && got != cases[i].want)
            fail_msg("case %zu: %lld %s%%: got %lld want %lld", i, (long long)cases[i].amount,
                cases[i].pct, (long long)got, (long long)cases[i].want);
    }
}

static void
test_currency(void **state)
{
    (void)state;
    assert_true(md_money_currency_valid("USD"));
    assert_true(md_money_currency_valid("EUR"));
    assert_false(md_money_currency_valid("usd"));
    assert_false(md_money_currency_valid("US"));
    assert_false(md_money_currency_valid("USDT"));
    assert_false(md_money_currency_valid("U1D"));
    assert_false(md_money_currency_valid(""));
    assert_false(md_money_currency_valid(NULL));
}

/* xorshift64*: deterministic, so a failure reproduces */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* Independent rounding: pick the nearer of floor and floor+1 by comparing
 * distances (not remainders), ties to the even one; negatives by symmetry. */
static __int128
ref_round(__int128 p, __int128 d)
{
    __int128 a = p < 0 ? -p : p, lo = a / d, dlo = a - lo * d, dhi = (lo + 1) * d - a, r;

    if (dlo < dhi)
        r = lo;
    else if (dhi < dlo)
        r = lo + 1;
    else
        r = (lo % 2 == 0) ? lo : lo + 1;
    return p < 0 ? -r : r;
}

static void
test_million_lines(void **state)
{
    const size_t n = 1000000;
    __int128 exact_sum = 0, ref_sum = 0;
    int64_t total = 0;
    size_t ties = 0;

    (void)state;
    for (size_t i = 0; i < n; i++) {
        uint64_t tokens = rng() % 10000001u;            /* up to 1e7 tokens */
        int64_t price = (int64_t)(rng() % 100000000001u); /* up to 100 per million */
        int64_t amount = 0;
        __int128 p, want;

        if (i % 4 == 0)
            price -= price % 500000;    /* multiples of 0.0005/M make many ties */
        if (i % 10 == 9)
            price = -price;             /* credits */
        p = (__int128)tokens * price;
        want = ref_round(p, 1000000);
        ties += (p % 1000000 == 500000 || p % 1000000 == -500000);
        assert_int_equal(md_money_line_amount(tokens, price, &amount, NULL), MD_OK);
        if ((__int128)amount != want)
            fail_msg("line %zu: %llu x %lld: got %lld want %lld", i,
                (unsigned long long)tokens, (long long)price, (long long)amount,
                (long long)want);
        assert_int_equal(md_add_i64(total, amount, &total), MD_OK);
        ref_sum += want;
        exact_sum += p;
    }
    assert_true(ties > 1000);           /* the tie path was exercised */
    assert_true((__int128)total == ref_sum);
    /* each line is off by at most half a nano: the total by at most n/2 */
    {
        __int128 diff = (__int128)total * 1000000 - exact_sum;

        if (diff < 0)
            diff = -diff;
        assert_true(diff <= (__int128)n * 500000);
    }
}

/* The formatter as it was before the digit loop (snprintf of the integer
 * part and a zero-padded fraction), kept here as an independent reference:
 * the printed money of every bill must not change by a byte. */
static int
ref_fmt(int64_t v, unsigned decimals, int trim, char *buf, size_t len)
{
    static const uint64_t p10[10] = {
        1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
    };
    uint64_t mag = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
    uint64_t unit = p10[9 - decimals], q = mag / unit;
    char frac[16];
    int n;

    if (!trim) {
        /* fixed decimals: the nearer multiple of unit by distance, ties even */
        q = (uint64_t)ref_round((__int128)mag, (__int128)unit);
    }
    n = snprintf(frac, sizeof(frac), "%0*llu", (int)decimals,
        (unsigned long long)(q % p10[decimals]));
    assert_true(n == (int)decimals || decimals == 0);
    if (decimals == 0)
        frac[0] = '\0';
    if (trim) {
        size_t k = strlen(frac);

        while (k > 0 && frac[k - 1] == '0')
            frac[--k] = '\0';
    }
    n = snprintf(buf, len, "%s%llu%s%s", (v < 0 && q != 0) ? "-" : "",
        (unsigned long long)(q / p10[decimals]), frac[0] ? "." : "", frac);
    return n;
}

static void
check_fmt_one(int64_t v, unsigned dec)
{
    char want[64], got[64];
    int n = ref_fmt(v, dec == 10 ? 9 : dec, dec == 10, want, sizeof(want));
    int rc = dec == 10 ? md_money_fmt(v, got, sizeof(got))
                       : md_money_fmt_fixed(v, dec, got, sizeof(got));

    if (rc != MD_OK || strcmp(got, want) != 0)
        fail_msg("%lld at %u: got \"%s\" (rc %d) want \"%s\"", (long long)v, dec, got, rc,
            want);
    /* exactly fitting buffer works; one byte less is MD_ELIMIT and "" */
    rc = dec == 10 ? md_money_fmt(v, got, (size_t)n + 1)
                   : md_money_fmt_fixed(v, dec, got, (size_t)n + 1);
    if (rc != MD_OK || strcmp(got, want) != 0)
        fail_msg("%lld at %u in %d bytes: got \"%s\" rc %d", (long long)v, dec, n + 1, got, rc);
    rc = dec == 10 ? md_money_fmt(v, got, (size_t)n) : md_money_fmt_fixed(v, dec, got, (size_t)n);
    if (rc != MD_ELIMIT || got[0] != '\0')
        fail_msg("%lld at %u in %d bytes: rc %d, \"%s\"", (long long)v, dec, n, rc, got);
}

static void
test_fmt_vs_reference(void **state)
{
    static const int64_t edges[] = {
        0, 1, -1, 9, 10, 999999999, 1000000000, 1000000001, -999999999, -1000000000,
        -1000000001, 500000000, -500000000, 150000000, -150000000, 1999999999999,
        INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, 9223372036000000000LL,
        -9223372036000000000LL, 5, -5, 49999999, 50000000, -50000000, 995000000,
    };

    (void)state;
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        for (unsigned dec = 0; dec <= 10; dec++)
            check_fmt_one(edges[i], dec);
    for (size_t i = 0; i < 300000; i++) {
        /* every magnitude: a random 64-bit value shifted right 0..63 bits;
         * negative ones are the correction lines */
        uint64_t r = rng();
        int64_t v = (int64_t)(r >> (rng() % 64));

        if (i % 3 == 0)
            v = -v;
        if (i % 7 == 0)
            v -= v % 1000;          /* trailing zeros to trim */
        check_fmt_one(v, (unsigned)(i % 11));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_fmt),
        cmocka_unit_test(test_fmt_fixed),
        cmocka_unit_test(test_fmt_vs_reference),
        cmocka_unit_test(test_line_amount),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_currency),
        cmocka_unit_test(test_million_lines),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
