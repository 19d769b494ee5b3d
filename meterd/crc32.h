/* crc32.h: CRC-32 of gzip/zlib (polynomial 0xEDB88320, reflected), the
 * value zlib's crc32() returns, computed faster: PCLMULQDQ folding over
 * 64-byte blocks when the CPU has it (checked once at run time), slicing-by-8
 * tables otherwise and for the tails.
 *
 * Pure; thread-safe (tables built once under pthread_once). */
#ifndef MD_CRC32_H
#define MD_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* crc: the CRC of the bytes before (0 to start), as with zlib's crc32() */
uint32_t md_crc32(uint32_t crc, const void *buf, size_t len);
/* the portable path alone (tests compare both with zlib) */
uint32_t md_crc32_portable(uint32_t crc, const void *buf, size_t len);
/* 1 when md_crc32 uses PCLMULQDQ on this CPU */
int md_crc32_has_clmul(void);

#endif
