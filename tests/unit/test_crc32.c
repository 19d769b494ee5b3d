/* test_crc32.c: every path of md_crc32 this CPU has (VPCLMULQDQ, PCLMULQDQ,
 * portable) against zlib's crc32() on pseudo-random buffers of every length
 * 0..4096 at every start alignment 0..7 (the 128-byte and 64-byte folds,
 * their 32- and 16-byte steps and the byte tail all start and stop at each
 * length), on large buffers (1 MiB and 1 MiB + 13), on chained calls (a CRC
 * continued over pieces, as a streaming check does) and on the classic check
 * value ("123456789" -> 0xcbf43926).  Paths the CPU lacks fall back to the
 * next one below and are reported as not available. */
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

            for (int lv = MD_CRC32_PORTABLE; lv <= MD_CRC32_CLMUL256; lv++) {
                uint32_t got = md_crc32_at((enum md_crc32_level)lv, 0, buf + align, len);

                if (got != want)
                    fail_msg("len %zu align %zu path %d: %08x, zlib %08x", len, align, lv,
                        got, want);
            }
            assert_int_equal(md_crc32(0, buf + align, len), want);
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
        for (int lv = MD_CRC32_PORTABLE; lv <= MD_CRC32_CLMUL256; lv++)
            assert_int_equal(md_crc32_at((enum md_crc32_level)lv, 0, buf, sizes[s]), want);
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
    /* a non-zero starting CRC on every short length, on every path */
    for (size_t len = 0; len < 300; len++)
        for (int lv = MD_CRC32_PORTABLE; lv <= MD_CRC32_CLMUL256; lv++)
            assert_int_equal(md_crc32_at((enum md_crc32_level)lv, 0xdeadbeefu, buf, len),
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

    print_message("PCLMULQDQ path: %s; VPCLMULQDQ path: %s\n",
        md_crc32_level() >= MD_CRC32_CLMUL128 ? "tested" : "not available",
        md_crc32_level() >= MD_CRC32_CLMUL256 ? "tested" : "not available");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
