/* crc32.h: CRC-32 of gzip/zlib (polynomial 0xEDB88320, reflected), the
 * value zlib's crc32() returns, computed faster: VPCLMULQDQ folding over
 * 128-byte blocks or PCLMULQDQ folding over 64-byte blocks when the CPU has
 * them (checked once at run time), slicing-by-8 tables otherwise and for
 * the tails.
 *
 * Pure; thread-safe (tables built once under pthread_once). */
#ifndef MD_CRC32_H
#define MD_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* crc: the CRC of the bytes before (0 to start), as with zlib's crc32() */
uint32_t md_crc32(uint32_t crc, const void *buf, size_t len);
/* the paths, slowest first; md_crc32 takes the best this CPU has */
enum md_crc32_level {
    MD_CRC32_PORTABLE = 0,      /* slicing-by-8 */
    MD_CRC32_CLMUL128,          /* PCLMULQDQ, 128-bit registers */
    MD_CRC32_CLMUL256           /* VPCLMULQDQ and AVX2, 256-bit registers */
};
/* md_crc32 on the given path, or the best below it this CPU has (tests
 * compare every path with zlib) */
uint32_t md_crc32_at(enum md_crc32_level level, uint32_t crc, const void *buf, size_t len);
/* the portable path alone: md_crc32_at(MD_CRC32_PORTABLE, ...) */
uint32_t md_crc32_portable(uint32_t crc, const void *buf, size_t len);
/* the best path this CPU has */
enum md_crc32_level md_crc32_level(void);

#endif
