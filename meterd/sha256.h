/* sha256.h: SHA-256 (FIPS 180-4), one-shot and streaming.  Pure, no
 * allocation, reentrant: every state lives in the caller's struct.  Used to
 * hash bearer tokens so configuration and memory hold only digests. */
#ifndef MD_SHA256_H
#define MD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define MD_SHA256_LEN 32

struct md_sha256 {
    uint32_t h[8];
    uint64_t total_len;            /* bytes fed so far */
    uint8_t  block[64];
    size_t   block_len;
};

void md_sha256_init(struct md_sha256 *s);
void md_sha256_update(struct md_sha256 *s, const void *data, size_t len);
/* Writes the digest and wipes the state. */
void md_sha256_final(struct md_sha256 *s, uint8_t out[MD_SHA256_LEN]);
void md_sha256(const void *data, size_t len, uint8_t out[MD_SHA256_LEN]);

#endif
