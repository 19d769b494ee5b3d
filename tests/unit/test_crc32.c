/* test_crc32.c: md_crc32 (PCLMULQDQ folding when the CPU has it) and its
 * portable path against zlib's crc32() on pseudo-random buffers of every
 * length 0..4096 at every start alignment 0..7, on large buffers (1 MiB and
 * 1 MiB + 13), on chained calls (a CRC continued over pieces, as a streaming
 * check does) and on the classic check value ("123456789" -> 0xcbf43926). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "crc32.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static unsigned char
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned char)(rng >> 24);
}

static void
test_check_value(void **state)
{
    (void)state;
    assert_int_equal(md_crc32(0, "123456789", 9), 0xcbf43926u);
    assert_int_equal(md_crc32_portable(0, "123456789", 9), 0xcbf43926u);
    assert_int_equal(md_crc32(0, "", 0), 0);
    /* 64 zero bytes take the folding path when available */
    {
        unsigned char z[64] = { 0 };

        assert_int_equal(md_crc32(0, z, 64), (uint32_t)crc32(0, z, 64));
    }
}

static void
test_every_length(void **state)
{
    enum { MAXLEN = 4096 };
    unsigned char *buf = malloc(MAXLEN + 8);

    (void)state;
    assert_non_null(buf);
    for (size_t i = 0; i < MAXLEN + 8; i++)
        buf[i] = rnd();
    for (size_t align = 0; align < 8; align++) {
        for (size_t len = 0; len <= MAXLEN; len++) {
            uint32_t want = (uint32_t)crc32(0, buf + align, (uInt)len);
            uint32_t got = md_crc32(0, buf + align, len);
            uint32_t port = md_crc32_portable(0, buf + align, len);

            if (got != want || port != want)
                fail_msg("len %zu align %zu: md_crc32 %08x portable %08x zlib %08x", len,
                    align, got, port, want);
        }
    }
    free(buf);
}

static void
test_large_and_chained(void **state)
{
    static const size_t sizes[] = { 1u << 20, (1u << 20) + 13 };
    unsigned char *buf = malloc((1u << 20) + 13);

    (void)state;
    assert_non_null(buf);
    for (size_t i = 0; i < (1u << 20) + 13; i++)
        buf[i] = rnd();
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        uint32_t want = (uint32_t)crc32(0, buf, (uInt)sizes[s]);
        uint32_t c = 0;
        size_t off = 0, step = 1;

        assert_int_equal(md_crc32(0, buf, sizes[s]), want);
        assert_int_equal(md_crc32_portable(0, buf, sizes[s]), want);
        /* pieces of growing, odd sizes */
        while (off < sizes[s]) {
            size_t n = step < sizes[s] - off ? step : sizes[s] - off;

            c = md_crc32(c, buf + off, n);
            off += n;
            step = step * 3 + 1;
        }
        assert_int_equal(c, want);
    }
    /* a non-zero starting CRC on every short length */
    for (size_t len = 0; len < 300; len++)
        assert_int_equal(md_crc32(0xdeadbeefu, buf, len),
            (uint32_t)crc32(0xdeadbeefu, buf, (uInt)len));
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_every_length),
        cmocka_unit_test(test_large_and_chained),
    };

    print_message("PCLMULQDQ path: %s\n", md_crc32_has_clmul() ? "used" : "not available");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
