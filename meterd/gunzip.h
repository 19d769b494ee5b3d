/* gunzip.h: one whole gzip member (RFC 1952) inflated into a buffer, with
 * every check a billing scrape needs: the header, the DEFLATE stream, the
 * trailer's CRC-32 and ISIZE, no bytes after the member, and a size limit
 * enforced while inflating (a gzip bomb stops at the limit).
 *
 * Pure: no I/O, no logging.  A struct md_gunzip holds libdeflate's
 * decompressor and belongs to one thread (the scrape thread). */
#ifndef MD_GUNZIP_H
#define MD_GUNZIP_H

#include <stddef.h>

#include "buf.h"

struct md_gunzip;

struct md_gunzip *md_gunzip_new(void);          /* NULL when out of memory */
void              md_gunzip_free(struct md_gunzip *g);      /* NULL ok */

/* Inflates the member in[0..len) into out, replacing its contents; out->cap
 * is the limit of the inflated size.  Returns MD_OK; MD_ELIMIT past the cap;
 * MD_EPARSE for a bad header, a corrupt or truncated stream, a wrong CRC-32
 * (of the header too, FHCRC) or ISIZE, or bytes after the member;
 * MD_ENOMEM.  On error msg names the check that failed.
 * The whole member is inflated at once by libdeflate when it passes every
 * check; anything else goes through zlib's streaming inflate, which decides
 * and words the error, so results never depend on the path taken. */
int md_gunzip(struct md_gunzip *g, const char *in, size_t len, struct md_buf *out, char *msg,
    size_t msg_len);

/* the zlib path alone (tests and the fuzz target compare the two) */
int md_gunzip_zlib(const char *in, size_t len, struct md_buf *out, char *msg, size_t msg_len);

/* members md_gunzip took on the fast path, on the zlib path (this g) */
void md_gunzip_counts(const struct md_gunzip *g, unsigned long long *fast,
    unsigned long long *slow);

#endif
