/* test_gunzip.c: md_gunzip (libdeflate for members that pass every check,
 * zlib's streaming inflate for the rest) against its zlib path alone.
 *
 * - Members written by zlib with every optional header field (FTEXT,
 *   FEXTRA, FNAME, FCOMMENT, FHCRC) and payloads from empty to 300 KiB
 *   (repetitive and random) inflate to the original bytes; those without a
 *   header CRC take the fast path (counted), those with one take zlib.
 * - Each check fails with its own message, the same on both paths: a wrong
 *   CRC-32, ISIZE larger and smaller, bytes after the member, a truncated
 *   stream, reserved flag bits, a bad magic or method, a wrong header CRC,
 *   an FEXTRA or FNAME that runs past the end, and a member larger than the
 *   limit (MD_ELIMIT, also when ISIZE claims it fits).
 * - 20,000 random mutations (bytes changed, cut, added) of valid members:
 *   md_gunzip's return code, message and output equal the zlib path's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "gunzip.h"
#include "util.h"

#define CAP (1u << 20)

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint32_t
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

enum { H_TEXT = 1, H_EXTRA = 2, H_NAME = 4, H_COMMENT = 8, H_HCRC = 16 };

/* a gzip member of p[0..n) written by zlib with the header fields in flags */
static unsigned char *
member(const unsigned char *p, size_t n, int flags, size_t *out_len)
{
    static unsigned char extra[] = { 'A', 'B', 4, 0, 1, 2, 3, 4 };
    static unsigned char name[] = "metrics.txt", comment[] = "a comment";
    z_stream z;
    gz_header h;
    size_t room = compressBound((uLong)n) + 128;
    unsigned char *out = malloc(room);

    assert_non_null(out);
    memset(&z, 0, sizeof(z));
    memset(&h, 0, sizeof(h));
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    h.text = (flags & H_TEXT) != 0;
    h.os = 3;
    if (flags & H_EXTRA) {
        h.extra = extra;
        h.extra_len = sizeof(extra);
    }
    if (flags & H_NAME)
        h.name = name;
    if (flags & H_COMMENT)
        h.comment = comment;
    h.hcrc = (flags & H_HCRC) != 0;
    assert_int_equal(deflateSetHeader(&z, &h), Z_OK);
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)room;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = room - z.avail_out;
    deflateEnd(&z);
    return out;
}

/* md_gunzip and md_gunzip_zlib on the same input agree on rc, message and
 * output; returns the rc, with the output in *got (caller's buffer) */
static int
both(struct md_gunzip *g, const unsigned char *in, size_t len, size_t cap, struct md_buf *got,
    char *msg, size_t msg_len)
{
    struct md_buf ref;
    char refmsg[256] = "";
    int rc, rrc;

    msg[0] = '\0';
    md_buf_init(&ref, cap);
    got->cap = cap;
    rc = md_gunzip(g, (const char *)in, len, got, msg, msg_len);
    rrc = md_gunzip_zlib((const char *)in, len, &ref, refmsg, sizeof(refmsg));
    if (rc != rrc)
        fail_msg("rc %d, the zlib path %d (%s / %s)", rc, rrc, msg, refmsg);
    if (rc == MD_OK) {
        if (got->len != ref.len || (got->len > 0 && memcmp(got->data, ref.data, got->len) != 0))
            fail_msg("outputs differ: %zu and %zu bytes", got->len, ref.len);
    } else if (strcmp(msg, refmsg) != 0) {
        fail_msg("messages differ: \"%s\" and \"%s\"", msg, refmsg);
    }
    md_buf_fini(&ref);
    return rc;
}

/* payloads: empty, one byte, a repetitive exposition, random bytes */
static unsigned char *
payload(int which, size_t *n)
{
    static const char line[] = "gen_ai_client_token_usage_token_sum{gen_ai_operation_name=\"chat\","
        "gen_ai_request_model=\"gpt-4o-mini\",gen_ai_token_type=\"input\"} ";
    size_t sizes[] = { 0, 1, 208709, 300000 };
    unsigned char *p;

    *n = sizes[which];
    p = malloc(*n + 1);
    assert_non_null(p);
    for (size_t i = 0; i < *n;) {
        if (which == 3) {
            p[i++] = (unsigned char)rnd();
        } else {
            char v[32];
            int k = snprintf(v, sizeof(v), "%u\n", rnd() % 100000);

            for (size_t j = 0; j < sizeof(line) - 1 && i < *n; j++)
                p[i++] = (unsigned char)line[j];
            for (int j = 0; j < k && i < *n; j++)
                p[i++] = (unsigned char)v[j];
        }
    }
    return p;
}

static void
test_round_trip(void **state)
{
    struct md_gunzip *g = md_gunzip_new();
    struct md_buf out;
    char msg[256];

    (void)state;
    assert_non_null(g);
    md_buf_init(&out, CAP);
    for (int w = 0; w < 4; w++) {
        size_t n;
        unsigned char *p = payload(w, &n);

        for (int flags = 0; flags < 32; flags++) {
            unsigned long long f0, s0, f1, s1;
            size_t zlen;
            unsigned char *z = member(p, n, flags, &zlen);

            md_gunzip_counts(g, &f0, &s0);
            if (both(g, z, zlen, CAP, &out, msg, sizeof(msg)) != MD_OK)
                fail_msg("payload %d flags %d: %s", w, flags, msg);
            assert_int_equal(out.len, n);
            if (n > 0)
                assert_memory_equal(out.data, p, n);
            md_gunzip_counts(g, &f1, &s1);
            /* an empty member (ISIZE 0) and a header CRC go to zlib */
            if (n > 0 && !(flags & H_HCRC)) {
                if (f1 != f0 + 1 || s1 != s0)
                    fail_msg("payload %d flags %d: not the fast path", w, flags);
            } else if (s1 != s0 + 1 || f1 != f0) {
                fail_msg("payload %d flags %d: not the zlib path", w, flags);
            }
            free(z);
        }
        free(p);
    }
    md_buf_fini(&out);
    md_gunzip_free(g);
}

struct bad {
    const char *what;
    const char *msg;        /* a part of the message */
    int         rc;
};

/* in place on a copy of a member of a 208709-byte payload: returns the new length */
static size_t
mangle(int k, unsigned char *z, size_t n, size_t hdr)
{
    uint32_t isize = (uint32_t)z[n - 4] | (uint32_t)z[n - 3] << 8 | (uint32_t)z[n - 2] << 16 |
        (uint32_t)z[n - 1] << 24;

    switch (k) {
    case 0: z[n - 8] ^= 1; return n;                    /* CRC-32 */
    case 1: isize++; break;                             /* ISIZE larger */
    case 2: isize--; break;                             /* ISIZE smaller */
    case 3: memcpy(z + n, z + n - 4, 4); return n + 4;  /* 4 bytes after */
    case 4: return n - 9;                               /* truncated in the stream */
    case 5: z[3] |= 0x20; return n;                     /* a reserved flag bit */
    case 6: z[1] = 0x8c; return n;                      /* magic */
    case 7: z[2] = 7; return n;                         /* method */
    case 8: z[hdr - 1] ^= 0x55; return n;               /* header CRC-16 (H_HCRC) */
    case 9:                                             /* FEXTRA past the end */
        z[3] |= 0x04;
        z[10] = 0xff;
        z[11] = 0xff;
        return n;
    case 10: z[3] |= 0x08; memset(z + 10, 'x', n - 10); return n;  /* FNAME without NUL */
    default: return n;
    }
    z[n - 4] = (unsigned char)isize;
    z[n - 3] = (unsigned char)(isize >> 8);
    z[n - 2] = (unsigned char)(isize >> 16);
    z[n - 1] = (unsigned char)(isize >> 24);
    return n;
}

static void
test_each_check(void **state)
{
    static const struct bad bads[] = {
        { "CRC-32", "incorrect data check (CRC-32", MD_EPARSE },
        { "ISIZE + 1", "incorrect length check (", MD_EPARSE },
        { "ISIZE - 1", "incorrect length check (", MD_EPARSE },
        { "bytes after", "4 bytes after the end of the stream", MD_EPARSE },
        { "truncated", "gzip: ", MD_EPARSE },
        { "reserved flag", "unknown header flags set", MD_EPARSE },
        { "magic", "incorrect header check", MD_EPARSE },
        { "method", "unknown compression method", MD_EPARSE },
        { "header CRC", "header crc mismatch", MD_EPARSE },
        { "FEXTRA past the end", "gzip: ", MD_EPARSE },
        { "FNAME without NUL", "gzip: ", MD_EPARSE },
    };
    struct md_gunzip *g = md_gunzip_new();
    struct md_buf out;
    char msg[256];
    size_t n, zlen;
    unsigned char *p = payload(2, &n);

    (void)state;
    md_buf_init(&out, CAP);
    for (size_t k = 0; k < sizeof(bads) / sizeof(bads[0]); k++) {
        int flags = k == 8 ? H_HCRC : 0;
        unsigned char *z = member(p, n, flags, &zlen), *c = malloc(zlen + 8);
        size_t clen;
        int rc;

        assert_non_null(c);
        memcpy(c, z, zlen);
        clen = mangle((int)k, c, zlen, flags ? 12 : 10);
        rc = both(g, c, clen, CAP, &out, msg, sizeof(msg));
        if (rc != bads[k].rc || strstr(msg, bads[k].msg) == NULL)
            fail_msg("%s: rc %d, \"%s\"; want %d and \"%s\"", bads[k].what, rc, msg, bads[k].rc,
                bads[k].msg);
        free(c);
        free(z);
    }
    /* the limit: one byte too small, also when ISIZE claims it fits */
    {
        unsigned char *z = member(p, n, 0, &zlen);

        assert_int_equal(both(g, z, zlen, n - 1, &out, msg, sizeof(msg)), MD_ELIMIT);
        assert_non_null(strstr(msg, "scrape.body_size_limit"));
        assert_true(out.len <= n - 1);
        z[zlen - 4] = 0x10;     /* ISIZE: 16 bytes */
        z[zlen - 3] = z[zlen - 2] = z[zlen - 1] = 0;
        assert_int_equal(both(g, z, zlen, n - 1, &out, msg, sizeof(msg)), MD_ELIMIT);
        assert_true(out.len <= n - 1);
        assert_int_equal(both(g, z, zlen, n, &out, msg, sizeof(msg)), MD_EPARSE);
        free(z);
    }
    free(p);
    md_buf_fini(&out);
    md_gunzip_free(g);
}

static void
test_mutations(void **state)
{
    struct md_gunzip *g = md_gunzip_new();
    struct md_buf out;
    char msg[256];
    unsigned ok = 0;

    (void)state;
    md_buf_init(&out, CAP);
    for (int w = 1; w < 4; w++) {
        size_t n;
        unsigned char *p = payload(w, &n);

        if (w > 1)
            n = 2000 + rnd() % 4000;    /* short members: mutations reach every part */
        for (int flags = 0; flags < 32; flags += 3) {
            size_t zlen;
            unsigned char *z = member(p, n, flags, &zlen), *c = malloc(zlen + 16);

            assert_non_null(c);
            for (int i = 0; i < 2000 / 11 * 3; i++) {
                size_t clen = zlen;

                memcpy(c, z, zlen);
                switch (rnd() % 4) {
                case 0: c[rnd() % zlen] = (unsigned char)rnd(); break;
                case 1: c[rnd() % zlen] ^= (unsigned char)(1u << (rnd() % 8)); break;
                case 2: clen = rnd() % zlen; break;
                default:
                    for (int j = 0; j < 1 + (int)(rnd() % 16); j++)
                        c[clen++] = (unsigned char)rnd();
                    break;
                }
                /* headers are few bytes: aim a third of the changes there */
                if (rnd() % 3 == 0)
                    c[rnd() % (zlen < 24 ? zlen : 24)] ^= (unsigned char)(1u << (rnd() % 8));
                ok += both(g, c, clen, CAP, &out, msg, sizeof(msg)) == MD_OK;
            }
            free(c);
            free(z);
        }
        free(p);
    }
    print_message("mutations inflated without error: %u\n", ok);
    md_buf_fini(&out);
    md_gunzip_free(g);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_each_check),
        cmocka_unit_test(test_mutations),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
