/* fuzz_gunzip.c: libFuzzer target for md_gunzip (gunzip.c), differential:
 * every input goes through md_gunzip (libdeflate when the member passes
 * every check, else zlib) and through the zlib path alone, and the two must
 * agree on the return code, the message and the bytes.  The first input
 * byte picks the limit (a small one makes bombs and MD_ELIMIT common). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gunzip.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct md_gunzip *g;
    struct md_buf a, b;
    char ma[256] = "", mb[256] = "";
    size_t cap;
    int ra, rb;

    if (size < 1)
        return 0;
    if (g == NULL && (g = md_gunzip_new()) == NULL)
        abort();
    cap = (data[0] & 0x80) ? (size_t)(data[0] & 0x7f) * 64 : (size_t)1 << 20;
    md_buf_init(&a, cap);
    md_buf_init(&b, cap);
    ra = md_gunzip(g, (const char *)data + 1, size - 1, &a, ma, sizeof(ma));
    rb = md_gunzip_zlib((const char *)data + 1, size - 1, &b, mb, sizeof(mb));
    if (ra != rb || a.len > cap || b.len > cap)
        abort();
    if (ra == MD_OK && (a.len != b.len || (a.len > 0 && memcmp(a.data, b.data, a.len) != 0)))
        abort();
    if (ra != MD_OK && strcmp(ma, mb) != 0)
        abort();
    md_buf_fini(&a);
    md_buf_fini(&b);
    return 0;
}
