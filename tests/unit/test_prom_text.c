/* test_prom_text.c: exposition writer escaping and number spelling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exporters/prom_text.h"
#include "util.h"

static void
test_doubles(void **state)
{
    static const struct { double v; const char *want; } cases[] = {
        { 0.0, "0" }, { 1.0, "1" }, { -3.0, "-3" }, { 1297632.0, "1297632" },
        { 0.1, "0.1" }, { 28.683631999999996, "28.683631999999996" },
        { 1e300, "1e+300" }, { 2.5e-7, "2.5e-07" }, { 9007199254740993.0, "9007199254740992" },
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct md_buf b;

        md_buf_init(&b, 64);
        assert_int_equal(md_prom_put_double(&b, cases[i].v), MD_OK);
        if (strcmp(b.data, cases[i].want) != 0)
            fail_msg("case %zu: got %s want %s", i, b.data, cases[i].want);
        assert_true(strtod(b.data, NULL) == cases[i].v);
        md_buf_fini(&b);
    }
}

static void
test_specials_and_escapes(void **state)
{
    struct md_buf b;
    struct md_prom_label l[] = { { "a", "x\"y\\z\nw", 0 }, { "b", "", 0 } };

    (void)state;
    md_buf_init(&b, 4096);
    assert_int_equal(md_prom_sample_f64(&b, "m", l, 2, NAN), MD_OK);
    assert_int_equal(md_prom_sample_f64(&b, "m", NULL, 0, INFINITY), MD_OK);
    assert_int_equal(md_prom_sample_f64(&b, "m", NULL, 0, -INFINITY), MD_OK);
    assert_int_equal(md_prom_sample_u64(&b, "c", NULL, 0, UINT64_MAX), MD_OK);
    assert_int_equal(md_prom_family(&b, "f", "counter", "line1\nback\\slash"), MD_OK);
    assert_string_equal(b.data,
        "m{a=\"x\\\"y\\\\z\\nw\",b=\"\"} NaN\n"
        "m +Inf\n"
        "m -Inf\n"
        "c 18446744073709551615\n"
        "# HELP f line1\\nback\\\\slash\n# TYPE f counter\n");
    md_buf_fini(&b);
}

static void
test_cap(void **state)
{
    struct md_buf b;

    (void)state;
    md_buf_init(&b, 8);
    assert_int_equal(md_prom_sample_u64(&b, "a_long_name", NULL, 0, 1), MD_ELIMIT);
    md_buf_fini(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles),
        cmocka_unit_test(test_specials_and_escapes),
        cmocka_unit_test(test_cap),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
