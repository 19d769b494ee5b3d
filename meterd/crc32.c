/* crc32.c: CRC-32 (gzip) with PCLMULQDQ folding and a slicing-by-8 fallback.
 *
 * Why: checking a scraped gzip body's CRC with zlib's crc32_z cost ~1,500
 * instructions per sample, a fifth of meterd's ingest (bench/RESULTS.md);
 * folding 64 bytes per step with carry-less multiplication costs a few
 * instructions per 64 bytes.
 * State: the tables and the CPU check, built once (pthread_once), read-only
 * afterwards; no other state.
 * Invariant: md_crc32(c, b, n) == zlib's crc32(c, b, n) for every input
 * (tests/unit/test_crc32.c checks every length 0..4096 and large buffers,
 * on both paths).
 * The folding follows Intel's "Fast CRC Computation for Generic Polynomials
 * Using PCLMULQDQ Instruction" (2009) with the bit-reflected constants for
 * this polynomial, as Chromium's zlib (crc32_simd.c) uses them. */
#include "crc32.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MD_CRC32_CLMUL 1
#include <emmintrin.h>
#include <wmmintrin.h>
#endif

static uint32_t tab[8][256];
static int has_clmul;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
        tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            tab[t][i] = (tab[t - 1][i] >> 8) ^ tab[0][tab[t - 1][i] & 0xff];
#ifdef MD_CRC32_CLMUL
    __builtin_cpu_init();
    has_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
#endif
}

/* on the register value (pre- and post-inverted by the callers) */
static uint32_t
slice8(uint32_t c, const unsigned char *p, size_t n)
{
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        c = tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo, hi;

        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;     /* little-endian (x86_64, aarch64 as built here) */
        c = tab[7][lo & 0xff] ^ tab[6][(lo >> 8) & 0xff] ^ tab[5][(lo >> 16) & 0xff] ^
            tab[4][lo >> 24] ^ tab[3][hi & 0xff] ^ tab[2][(hi >> 8) & 0xff] ^
            tab[1][(hi >> 16) & 0xff] ^ tab[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

#ifdef MD_CRC32_CLMUL
/* n >= 64, a multiple of 16; c is the register value */
__attribute__((target("pclmul,sse2")))
static uint32_t
fold(uint32_t c, const unsigned char *p, size_t n)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i lo32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8;

    x1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 0x00));
    x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 0x10));
    x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 0x20));
    x4 = _mm_loadu_si128((const __m128i *)(const void *)(p + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)c));
    x0 = k1k2;
    p += 64;
    n -= 64;
    /* four lanes, 64 bytes per step */
    while (n >= 64) {
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5),
            _mm_loadu_si128((const __m128i *)(const void *)(p + 0x00)));
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6),
            _mm_loadu_si128((const __m128i *)(const void *)(p + 0x10)));
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7),
            _mm_loadu_si128((const __m128i *)(const void *)(p + 0x20)));
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8),
            _mm_loadu_si128((const __m128i *)(const void *)(p + 0x30)));
        p += 64;
        n -= 64;
    }
    /* the four lanes into one */
    x0 = k3k4;
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    /* 16 bytes per step */
    while (n >= 16) {
        x2 = _mm_loadu_si128((const __m128i *)(const void *)p);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        p += 16;
        n -= 16;
    }
    /* 128 -> 64 bits */
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    x0 = k5k0;
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, lo32);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    /* Barrett reduction to 32 bits */
    x0 = poly;
    x2 = _mm_and_si128(x1, lo32);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, lo32);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(x1, 4));
}
#endif

uint32_t
md_crc32_portable(uint32_t crc, const void *buf, size_t len)
{
    (void)pthread_once(&once, init);
    return ~slice8(~crc, buf, len);
}

uint32_t
md_crc32(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = ~crc;

    (void)pthread_once(&once, init);
#ifdef MD_CRC32_CLMUL
    if (has_clmul && len >= 64) {
        size_t bulk = len & ~(size_t)15;

        c = fold(c, p, bulk);
        p += bulk;
        len -= bulk;
    }
#endif
    return ~slice8(c, p, len);
}

int
md_crc32_has_clmul(void)
{
    (void)pthread_once(&once, init);
    return has_clmul;
}
