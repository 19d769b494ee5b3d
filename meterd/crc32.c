/* crc32.c: CRC-32 (gzip) with PCLMULQDQ folding (VPCLMULQDQ on 256-bit
 * registers where the CPU has it) and a slicing-by-8 fallback.
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
 * this polynomial, as Chromium's zlib (crc32_simd.c) uses them.  A fold
 * over a distance of D bits multiplies the low 64 bits of a lane by
 * x^(D+32) mod P and the high 64 bits by x^(D-32) mod P (bit-reflected,
 * shifted left once); the 256-bit path folds four 32-byte registers over
 * 128 bytes, then into one register over 32 bytes, then its two halves over
 * 16 bytes, and finishes as the 128-bit path does.  Why: the 128-bit loop
 * is bound by the multiplier's throughput (two per 16 bytes, ~12 GB/s on
 * the AMD EPYC of bench/RESULTS.md, 18 us of a 208 KB scrape body); a
 * 256-bit multiply does two lanes' work in one instruction. */
#include "crc32.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MD_CRC32_CLMUL 1
#include <emmintrin.h>
#include <immintrin.h>
#include <wmmintrin.h>
#endif

static uint32_t tab[8][256];
static enum md_crc32_level level_max = MD_CRC32_PORTABLE;     /* the best this CPU runs */
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
    if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2")) {
        level_max = MD_CRC32_CLMUL128;
        /* avx2 is reported only when the OS saves the 256-bit registers */
        if (__builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx2"))
            level_max = MD_CRC32_CLMUL256;
    }
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
__attribute__((target("pclmul,sse2")))
static uint32_t finish(__m128i x1, const unsigned char *p, size_t n);

/* n >= 64, a multiple of 16; c is the register value */
__attribute__((target("pclmul,sse2")))
static uint32_t
fold(uint32_t c, const unsigned char *p, size_t n)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
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
    return finish(x1, p, n);
}

/* x1: the folded 16 bytes before p; n more bytes at p, a multiple of 16 */
__attribute__((target("pclmul,sse2")))
static uint32_t
finish(__m128i x1, const unsigned char *p, size_t n)
{
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i lo32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i x0 = k3k4, x2, x5;

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

/* y * (x^(D+32), x^(D-32)) per 128-bit lane, xor d: y folded over D bits
 * onto the data d that follows it */
__attribute__((target("avx2,pclmul,vpclmulqdq")))
static inline __m256i
fold256(__m256i y, __m256i k, __m256i d)
{
    return _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(y, k, 0x00),
        _mm256_clmulepi64_epi128(y, k, 0x11)), d);
}

/* n >= 128, a multiple of 16; c is the register value */
__attribute__((target("avx2,pclmul,vpclmulqdq")))
static uint32_t
fold_wide(uint32_t c, const unsigned char *p, size_t n)
{
    /* D = 1024 (128 bytes), D = 256 (32 bytes), D = 128 (16 bytes) */
    const __m256i k1024 = _mm256_set_epi64x(0x014a7fe880LL, 0x01e88ef372LL,
        0x014a7fe880LL, 0x01e88ef372LL);
    const __m256i k256 = _mm256_set_epi64x(0x015a546366LL, 0x00f1da05aaLL,
        0x015a546366LL, 0x00f1da05aaLL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    __m256i y0, y1, y2, y3;
    __m128i x1, x2;

#define LOADY(off) _mm256_loadu_si256((const __m256i *)(const void *)(p + (off)))
    y0 = _mm256_xor_si256(LOADY(0x00), _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)c)));
    y1 = LOADY(0x20);
    y2 = LOADY(0x40);
    y3 = LOADY(0x60);
    p += 128;
    n -= 128;
    /* four registers, 128 bytes per step */
    while (n >= 128) {
        y0 = fold256(y0, k1024, LOADY(0x00));
        y1 = fold256(y1, k1024, LOADY(0x20));
        y2 = fold256(y2, k1024, LOADY(0x40));
        y3 = fold256(y3, k1024, LOADY(0x60));
        p += 128;
        n -= 128;
    }
    /* the four registers into one, then 32 bytes per step */
    y0 = fold256(y0, k256, y1);
    y0 = fold256(y0, k256, y2);
    y0 = fold256(y0, k256, y3);
    while (n >= 32) {
        y0 = fold256(y0, k256, LOADY(0));
        p += 32;
        n -= 32;
    }
#undef LOADY
    /* the register's two halves into one */
    x1 = _mm256_castsi256_si128(y0);
    x2 = _mm256_extracti128_si256(y0, 1);
    x1 = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x00),
        _mm_clmulepi64_si128(x1, k3k4, 0x11)), x2);
    return finish(x1, p, n);
}
#endif

uint32_t
md_crc32_portable(uint32_t crc, const void *buf, size_t len)
{
    return md_crc32_at(MD_CRC32_PORTABLE, crc, buf, len);
}

uint32_t
md_crc32_at(enum md_crc32_level level, uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint32_t c = ~crc;

    (void)pthread_once(&once, init);
    if (level > level_max)
        level = level_max;
#ifdef MD_CRC32_CLMUL
    if (level >= MD_CRC32_CLMUL128 && len >= 64) {
        size_t bulk = len & ~(size_t)15;

        c = level == MD_CRC32_CLMUL256 && bulk >= 128 ? fold_wide(c, p, bulk)
            : fold(c, p, bulk);
        p += bulk;
        len -= bulk;
    }
#else
    (void)level;
#endif
    return ~slice8(c, p, len);
}

uint32_t
md_crc32(uint32_t crc, const void *buf, size_t len)
{
    return md_crc32_at(MD_CRC32_CLMUL256, crc, buf, len);
}

enum md_crc32_level
md_crc32_level(void)
{
    (void)pthread_once(&once, init);
    return level_max;
}
