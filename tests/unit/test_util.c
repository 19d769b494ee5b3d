/* test_util.c: bounded number parsing, durations, sizes, checked math. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "util.h"
#include "buf.h"

static void
test_parse_u64(void **state)
{
    static const struct { const char *in; uint64_t max; int rc; uint64_t want; } cases[] = {
        { "0", 10, MD_OK, 0 },
        { "10", 10, MD_OK, 10 },
        { "11", 10, MD_ELIMIT, 0 },
        { "1x", 10, MD_EPARSE, 0 },
        { "", 10, MD_EPARSE, 0 },
        { "-1", 10, MD_EPARSE, 0 },
        { "+1", 10, MD_EPARSE, 0 },
        { " 1", 10, MD_EPARSE, 0 },
        { "18446744073709551615", UINT64_MAX, MD_OK, UINT64_MAX },
        { "18446744073709551616", UINT64_MAX, MD_ELIMIT, 0 },
        { "99999999999999999999999", UINT64_MAX, MD_ELIMIT, 0 },
        { "007", 100, MD_OK, 7 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t got = 12345;
        int rc = md_parse_u64(cases[i].in, strlen(cases[i].in), cases[i].max, &got);

        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc got %d want %d", i, cases[i].in, rc, cases[i].rc);
        if (rc == MD_OK && got != cases[i].want)
            fail_msg("case %zu \"%s\": got %llu want %llu", i, cases[i].in,
                (unsigned long long)got, (unsigned long long)cases[i].want);
        if (rc != MD_OK && got != 12345)
            fail_msg("case %zu: out-param touched on error", i);
    }
}

static void
test_duration(void **state)
{
    static const struct { const char *in; int rc; uint64_t want_ms; } cases[] = {
        { "15s", MD_OK, 15000 },
        { "5m", MD_OK, 300000 },
        { "1h", MD_OK, 3600000 },
        { "250ms", MD_OK, 250 },
        { "1h30m", MD_OK, 5400000 },
        { "1m30s", MD_OK, 90000 },
        { "2d", MD_OK, 172800000 },
        { "1w", MD_OK, 604800000 },
        { "0s", MD_OK, 0 },
        { "5", MD_EPARSE, 0 },          /* a unit is required */
        { "", MD_EPARSE, 0 },
        { "s", MD_EPARSE, 0 },
        { "5x", MD_EPARSE, 0 },
        { "5 s", MD_EPARSE, 0 },
        { "1.5s", MD_EPARSE, 0 },
        { "-1s", MD_EPARSE, 0 },
        { "5S", MD_EPARSE, 0 },
        { "1m5", MD_EPARSE, 0 },
        { "99999999999999999999s", MD_ELIMIT, 0 },
        { "9999999999999999w", MD_ELIMIT, 0 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_err err = {0};
        uint64_t got = 777;
        int rc = md_parse_duration_ms(cases[i].in, strlen(cases[i].in), &got, &err);

        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc got %d want %d (%s)", i, cases[i].in, rc,
                cases[i].rc, err.msg);
        if (rc == MD_OK && got != cases[i].want_ms)
            fail_msg("case %zu \"%s\": got %llu ms want %llu", i, cases[i].in,
                (unsigned long long)got, (unsigned long long)cases[i].want_ms);
        if (rc != MD_OK && err.msg[0] == '\0')
            fail_msg("case %zu: no message", i);
    }
}

static void
test_duration_fmt_roundtrip(void **state)
{
    static const uint64_t ms[] = { 0, 1, 999, 1000, 15000, 90000, 3600000, 5400001, 86400000 };

    (void)state;
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        char buf[64];
        uint64_t back = 0;

        md_fmt_duration(ms[i], buf, sizeof(buf));
        assert_int_equal(md_parse_duration_ms(buf, strlen(buf), &back, NULL), MD_OK);
        assert_int_equal(back, ms[i]);
    }
}

static void
test_size(void **state)
{
    static const struct { const char *in; int rc; uint64_t want; } cases[] = {
        { "16MiB", MD_OK, 16777216 },
        { "64KiB", MD_OK, 65536 },
        { "1GiB", MD_OK, 1073741824 },
        { "512B", MD_OK, 512 },
        { "10MB", MD_OK, 10000000 },
        { "1KB", MD_OK, 1000 },
        { "16", MD_EPARSE, 0 },
        { "16mib", MD_EPARSE, 0 },
        { "16 MiB", MD_EPARSE, 0 },
        { "MiB", MD_EPARSE, 0 },
        { "1.5MiB", MD_EPARSE, 0 },
        { "99999999999TiB", MD_ELIMIT, 0 },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_err err = {0};
        uint64_t got = 0;
        int rc = md_parse_size(cases[i].in, strlen(cases[i].in), &got, &err);

        if (rc != cases[i].rc)
            fail_msg("case %zu \"%s\": rc got %d want %d", i, cases[i].in, rc, cases[i].rc);
        if (rc == MD_OK && got != cases[i].want)
            fail_msg("case %zu \"%s\": got %llu want %llu", i, cases[i].in,
                (unsigned long long)got, (unsigned long long)cases[i].want);
    }
}

static void
test_checked_math(void **state)
{
    uint64_t u = 5;
    int64_t s = 5;

    (void)state;
    assert_int_equal(md_add_u64(UINT64_MAX, 1, &u), MD_ELIMIT);
    assert_int_equal(u, 5);
    assert_int_equal(md_mul_u64(UINT64_MAX / 2 + 1, 2, &u), MD_ELIMIT);
    assert_int_equal(md_mul_u64(3, 4, &u), MD_OK);
    assert_int_equal(u, 12);
    assert_int_equal(md_add_i64(INT64_MAX, 1, &s), MD_ELIMIT);
    assert_int_equal(md_mul_i64(INT64_MIN, -1, &s), MD_ELIMIT);
    assert_int_equal(md_mul_i64(-3, 4, &s), MD_OK);
    assert_int_equal(s, -12);
}

static void
test_buf_cap(void **state)
{
    struct md_buf b;

    (void)state;
    md_buf_init(&b, 10);
    assert_int_equal(md_buf_puts(&b, "0123456789"), MD_OK);
    assert_int_equal(md_buf_putc(&b, 'x'), MD_ELIMIT);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    md_buf_reset(&b);
    assert_int_equal(md_buf_printf(&b, "%d-%s", 42, "abcdefghij"), MD_ELIMIT);
    assert_int_equal(b.len, 0);
    assert_int_equal(md_buf_printf(&b, "%d", 42), MD_OK);
    assert_string_equal(b.data, "42");
    md_buf_fini(&b);
}

static void
test_ct_equal(void **state)
{
    (void)state;
    assert_true(md_ct_equal("abcd", "abcd", 4));
    assert_false(md_ct_equal("abcd", "abce", 4));
    assert_false(md_ct_equal("xbcd", "abcd", 4));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_u64),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_duration_fmt_roundtrip),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_checked_math),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_ct_equal),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
