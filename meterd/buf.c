/* buf.c: growable byte buffer with a required cap.  Invariants: len < alloc
 * whenever data != NULL (room for the NUL), len <= cap; a failed append
 * leaves the content unchanged. */
#include "buf.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

void
md_buf_init(struct md_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap;
}

void
md_buf_fini(struct md_buf *b)
{
    md_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void
md_buf_reset(struct md_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

static int
grow(struct md_buf *b, size_t need)
{
    size_t want;
    char *p;

    if (need > b->cap)
        return MD_ELIMIT;
    if (need + 1 <= b->alloc)
        return MD_OK;
    want = b->alloc ? b->alloc : 256;
    while (want < need + 1)
        want = want > SIZE_MAX / 2 ? need + 1 : want * 2;
    if (want > b->cap + 1)
        want = b->cap + 1;
    p = md_realloc(b->data, want);
    if (p == NULL)
        return MD_ENOMEM;
    b->data = p;
    b->alloc = want;
    return MD_OK;
}

int
md_buf_append(struct md_buf *b, const void *p, size_t len)
{
    int rc;

    if (len > SIZE_MAX - b->len - 1)
        return MD_ELIMIT;
    rc = grow(b, b->len + len);
    if (rc != MD_OK)
        return rc;
    if (len > 0)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return MD_OK;
}

int
md_buf_reserve(struct md_buf *b, size_t want, char **at, size_t *room)
{
    int rc;

    if (want > b->cap - b->len)
        return MD_ELIMIT;
    rc = grow(b, b->len + want);
    if (rc != MD_OK)
        return rc;
    *at = b->data + b->len;
    *room = b->alloc - 1 - b->len;
    if (*room > b->cap - b->len)
        *room = b->cap - b->len;
    return MD_OK;
}

void
md_buf_commit(struct md_buf *b, size_t n)
{
    b->len += n;
    b->data[b->len] = '\0';
}

int
md_buf_puts(struct md_buf *b, const char *s)
{
    return md_buf_append(b, s, strlen(s));
}

int
md_buf_putc(struct md_buf *b, char c)
{
    return md_buf_append(b, &c, 1);
}

int
md_buf_vprintf(struct md_buf *b, const char *fmt, va_list ap)
{
    char small[256];
    va_list ap2;
    int n, rc;

    va_copy(ap2, ap);
    n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return MD_EPARSE;
    if ((size_t)n < sizeof(small))
        return md_buf_append(b, small, (size_t)n);
    rc = grow(b, b->len + (size_t)n);
    if (rc != MD_OK)
        return rc;
    (void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return MD_OK;
}

int
md_buf_printf(struct md_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = md_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

char *
md_buf_steal(struct md_buf *b, size_t *len)
{
    char *d = b->data;

    if (d == NULL) {
        d = md_strdup("");
        if (len != NULL)
            *len = 0;
        return d;
    }
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return d;
}
