/* buf.h: growable byte buffer with a required cap (curl's dynbuf).
 * Not thread-safe: a buffer belongs to whoever embeds it. */
#ifndef MD_BUF_H
#define MD_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct md_buf {
    char  *data;    /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t alloc;
    size_t cap;     /* appends that would exceed cap bytes fail with MD_ELIMIT */
};

void md_buf_init(struct md_buf *b, size_t cap);
void md_buf_fini(struct md_buf *b);
void md_buf_reset(struct md_buf *b);                  /* len = 0, keeps memory */
int  md_buf_append(struct md_buf *b, const void *p, size_t len);
int  md_buf_puts(struct md_buf *b, const char *s);
int  md_buf_putc(struct md_buf *b, char c);
int  md_buf_printf(struct md_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int  md_buf_vprintf(struct md_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Writing in place (a decompressor's output): room for at least `want`
 * more bytes, returned in *at / *room (room may be larger, never past cap);
 * MD_ELIMIT when want > cap - len, MD_ENOMEM.  md_buf_commit(b, n) then
 * appends the n <= room bytes written there. */
int  md_buf_reserve(struct md_buf *b, size_t want, char **at, size_t *room);
void md_buf_commit(struct md_buf *b, size_t n);
/* Takes the bytes out (caller frees with md_free); the buffer is emptied. */
char *md_buf_steal(struct md_buf *b, size_t *len);

#endif
