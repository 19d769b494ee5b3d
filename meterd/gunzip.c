/* gunzip.c: a whole gzip member inflated and checked (gunzip.h).
 *
 * Owner: whoever holds the struct md_gunzip (the scrape thread); no globals
 * besides md_crc32's read-only tables, no I/O.
 * Two paths with one result: libdeflate over the whole member when every
 * check passes (the common case, 2-3x cheaper than zlib), zlib's streaming
 * inflate for everything else, so a failure's class and message come from
 * one place.  Invariants: out never holds more than out->cap bytes; nothing
 * outside in[0..len) is read; MD_OK only for a member that passed every
 * check of RFC 1952, the CRC-32 and ISIZE included.
 * Why the inflated size is bounded before libdeflate runs: it needs the
 * output buffer's size up front, and ISIZE (the trailer's length mod 2^32)
 * is only a claim: libdeflate is given exactly that much room and the
 * result must fill it, so a trailer that lies fails the fast path. */
#include "gunzip.h"

#include <libdeflate.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "crc32.h"
#include "util.h"

struct md_gunzip {
    struct libdeflate_decompressor *d;
    unsigned long long              fast, slow;
};

struct md_gunzip *
md_gunzip_new(void)
{
    struct md_gunzip *g = md_calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    g->d = libdeflate_alloc_decompressor();
    if (g->d == NULL) {
        md_free(g);
        return NULL;
    }
    return g;
}

void
md_gunzip_free(struct md_gunzip *g)
{
    if (g == NULL)
        return;
    libdeflate_free_decompressor(g->d);
    md_free(g);
}

/* Inflates a whole gzip member into out (cap: the body limit).  MD_ELIMIT
 * past the cap (a gzip bomb stops there), MD_EPARSE for a corrupt or
 * truncated stream, a wrong CRC-32 or length in the trailer, or bytes after
 * its end.  The trailer is checked here with md_crc32 (carry-less
 * multiplies) instead of zlib's crc32_z, a fifth of the ingest CPU; zlib
 * still parses it (and checks everything when the header has its own CRC,
 * FHCRC, which then needs zlib's running check). */
int
md_gunzip_zlib(const char *in_data, size_t in_len, struct md_buf *out, char *msg, size_t msg_len)
{
    z_stream z;
    int zr, rc = MD_OK, own_check = 0;
    uint32_t crc = 0;

    memset(&z, 0, sizeof(z));
    md_buf_reset(out);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        (void)snprintf(msg, msg_len, "gzip: cannot initialise zlib");
        return MD_ENOMEM;
    }
#if ZLIB_VERNUM >= 0x1290
    /* byte 3 is FLG; bit 1 FHCRC */
    if (in_len >= 4 && !(in_data[3] & 0x02) && inflateValidate(&z, 0) == Z_OK)
        own_check = 1;
#endif
    z.next_in = (Bytef *)(uintptr_t)in_data;
    z.avail_in = (uInt)in_len;
    /* inflated straight into out (no bounce buffer), into all the room the
     * buffer has (>= 64 KiB), so zlib copies its 32 KiB window once per
     * step, not once per 16 KiB; at the cap a one-byte probe tells "ends
     * here" from "too large" */
    do {
        char probe, *at = &probe;
        size_t room = 1, got;

        if (out->len < out->cap) {
            size_t want = 65536;

            if (want > out->cap - out->len)
                want = out->cap - out->len;
            if (want > (1u << 30))
                want = 1u << 30;
            if (md_buf_reserve(out, want, &at, &room) != MD_OK) {
                (void)snprintf(msg, msg_len, "gzip: out of memory");
                rc = MD_ENOMEM;
                break;
            }
            if (room > (1u << 30))
                room = 1u << 30;
        }
        z.next_out = (Bytef *)at;
        z.avail_out = (uInt)room;
        zr = inflate(&z, Z_NO_FLUSH);
        got = room - z.avail_out;
        if (zr != Z_OK && zr != Z_STREAM_END) {
            (void)snprintf(msg, msg_len, "gzip: %s", z.msg ? z.msg
                : zr == Z_BUF_ERROR ? "stream truncated (no end of the gzip member)"
                : "corrupt stream");
            rc = zr == Z_MEM_ERROR ? MD_ENOMEM : MD_EPARSE;
            break;
        }
        if (at == &probe && got > 0) {
            (void)snprintf(msg, msg_len, "body exceeds %zu bytes once decompressed "
                "(scrape.body_size_limit)", out->cap);
            rc = MD_ELIMIT;
            break;
        }
        if (at != &probe) {
            /* while the bytes are still in the cache */
            if (own_check)
                crc = md_crc32(crc, at, got);
            md_buf_commit(out, got);
        }
    } while (zr != Z_STREAM_END);
    if (rc == MD_OK && own_check) {
        /* the 8 trailer bytes zlib consumed last: CRC-32 and ISIZE, LE */
        const unsigned char *t = z.next_in - 8;
        uint32_t want_crc, want_len;

        if ((const char *)t < in_data) {
            (void)snprintf(msg, msg_len, "gzip: no trailer");
            rc = MD_EPARSE;
        } else {
            want_crc = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 |
                (uint32_t)t[3] << 24;
            want_len = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 |
                (uint32_t)t[7] << 24;
            if (want_crc != crc) {
                (void)snprintf(msg, msg_len, "gzip: incorrect data check (CRC-32 %08x, "
                    "trailer says %08x)", crc, want_crc);
                rc = MD_EPARSE;
            } else if (want_len != (uint32_t)out->len) {
                (void)snprintf(msg, msg_len, "gzip: incorrect length check (%zu bytes, "
                    "trailer says %u mod 2^32)", out->len, want_len);
                rc = MD_EPARSE;
            }
        }
    }
    if (rc == MD_OK && z.avail_in != 0) {
        (void)snprintf(msg, msg_len, "gzip: %u bytes after the end of the stream", z.avail_in);
        rc = MD_EPARSE;
    }
    inflateEnd(&z);
    return rc;
}

/* The fast path of md_gunzip: the whole member at once.  meterd reads the
 * header (RFC 1952 2.3) itself, libdeflate inflates the raw DEFLATE stream
 * (2-3x cheaper than zlib's inflate), and md_crc32 checks the CRC-32: with
 * VPCLMULQDQ it is about twice as fast as the check libdeflate's gzip call
 * makes (bench/RESULTS.md, "Stop 14", change 1).  The output size
 * is taken from the trailer's ISIZE, so it inflates into one buffer of
 * exactly that size.  It returns 1 only when everything held: one valid
 * member that is the whole body, its CRC-32 and ISIZE right, no more than
 * ISIZE bytes and ISIZE within the body limit (out->cap), which is what the
 * zlib path accepts too.  Anything else (a header CRC, FHCRC, which the
 * zlib path checks; reserved flag bits; a trailer that lies; a bomb; bytes
 * after the member; corruption) returns 0 and the zlib path decides, so
 * limits, error classes and messages stay exactly the zlib path's. */
static int
fast(struct libdeflate_decompressor *d, const char *in_data, size_t in_len, struct md_buf *out)
{
    const unsigned char *u = (const unsigned char *)in_data;
    size_t isize, used = 0, got = 0, room, h = 10, end;
    uint32_t crc;
    char *at;

    /* 18: the smallest gzip member (10 header, 2 empty block, 8 trailer);
     * ID1 ID2 CM, then FLG without FHCRC (0x02) or reserved bits (0xe0) */
    if (d == NULL || in_len < 18 || u[0] != 0x1f || u[1] != 0x8b || u[2] != 8 ||
            (u[3] & 0xe2) != 0)
        return 0;
    end = in_len - 8;
    if (u[3] & 0x04) {              /* FEXTRA: XLEN, then XLEN bytes */
        if (end - h < 2)
            return 0;
        h += 2 + ((size_t)u[h] | (size_t)u[h + 1] << 8);
        if (h > end)
            return 0;
    }
    for (unsigned f = 0x08; f <= 0x10; f <<= 1) {   /* FNAME, FCOMMENT: NUL-ended */
        const unsigned char *z;

        if (!(u[3] & f))
            continue;
        z = memchr(u + h, 0, end - h);
        if (z == NULL)
            return 0;
        h = (size_t)(z - u) + 1;
    }
    isize = (size_t)u[in_len - 4] | (size_t)u[in_len - 3] << 8 |
        (size_t)u[in_len - 2] << 16 | (size_t)u[in_len - 1] << 24;
    crc = (uint32_t)u[end] | (uint32_t)u[end + 1] << 8 | (uint32_t)u[end + 2] << 16 |
        (uint32_t)u[end + 3] << 24;
    md_buf_reset(out);
    if (isize == 0 || isize > out->cap || md_buf_reserve(out, isize, &at, &room) != MD_OK)
        return 0;
    if (libdeflate_deflate_decompress_ex(d, u + h, end - h, at, isize, &used, &got)
            != LIBDEFLATE_SUCCESS || used != end - h || got != isize ||
            md_crc32(0, at, got) != crc)
        return 0;
    md_buf_commit(out, got);
    return 1;
}

int
md_gunzip(struct md_gunzip *g, const char *in, size_t len, struct md_buf *out, char *msg,
    size_t msg_len)
{
    if (fast(g->d, in, len, out)) {
        g->fast++;
        return MD_OK;
    }
    g->slow++;
    return md_gunzip_zlib(in, len, out, msg, msg_len);
}

void
md_gunzip_counts(const struct md_gunzip *g, unsigned long long *fast_n,
    unsigned long long *slow_n)
{
    *fast_n = g->fast;
    *slow_n = g->slow;
}
