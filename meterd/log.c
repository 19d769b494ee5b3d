/* log.c: logfmt or JSON lines on stderr.  Level and format are atomics set
 * by main (at start and on reload); every line is built in a stack buffer and
 * written with a single write(2), so lines from threads never interleave.
 * Lines longer than MD_LOG_LINE_MAX are cut and end with "..." (stated). */
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define MD_LOG_LINE_MAX 4096

static atomic_int log_level = MD_LOG_INFO;
static atomic_int log_format = MD_LOG_LOGFMT;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void
md_log_setup(enum md_log_level level, enum md_log_format format)
{
    atomic_store(&log_level, (int)level);
    atomic_store(&log_format, (int)format);
}

int
md_log_enabled(enum md_log_level level)
{
    return (int)level >= atomic_load(&log_level);
}

/* Appends s escaped for a double-quoted logfmt or JSON string. */
static size_t
put_escaped(char *out, size_t off, size_t cap, const char *s, int json)
{
    for (; *s != '\0' && off + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            out[off++] = '\\';
            out[off++] = (char)c;
        } else if (c == '\n') {
            out[off++] = '\\';
            out[off++] = 'n';
        } else if (c < 0x20 || c == 0x7f) {
            off += (size_t)snprintf(out + off, cap - off,
                json ? "\\u%04x" : "\\x%02x", c);
        } else {
            out[off++] = (char)c;
        }
    }
    return off;
}

void
md_log_vwrite(enum md_log_level level, const char *module, const char *fmt, va_list ap)
{
    char msg[MD_LOG_LINE_MAX], line[MD_LOG_LINE_MAX * 2 + 128], ts[32];
    int json = atomic_load(&log_format) == MD_LOG_JSON;
    size_t off;
    int n;

    if (!md_log_enabled(level))
        return;
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n >= (int)sizeof(msg))
        memcpy(msg + sizeof(msg) - 4, "...", 4);
    md_fmt_rfc3339_ms(md_now_realtime_ns(), ts, sizeof(ts));
    if (json)
        off = (size_t)snprintf(line, sizeof(line),
            "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":\"",
            ts, level_names[level], module);
    else
        off = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s module=%s msg=\"",
            ts, level_names[level], module);
    off = put_escaped(line, off, sizeof(line) - 4, msg, json);
    if (json)
        line[off++] = '"', line[off++] = '}';
    else
        line[off++] = '"';
    line[off++] = '\n';
    /* one write per line; a short write to stderr is not worth retrying */
    (void)!write(STDERR_FILENO, line, off);
}

void
md_log_write(enum md_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    md_log_vwrite(level, module, fmt, ap);
    va_end(ap);
}

void
md_fatal_at(const char *module, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    md_log_vwrite(MD_LOG_ERR, module, fmt, ap);
    va_end(ap);
    exit(1);
}

void
md_complain(struct md_complaint *c, enum md_log_level level, const char *module,
    const char *fmt, ...)
{
    char msg[sizeof(c->last)];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->failing && strcmp(msg, c->last) == 0)
        return;
    c->failing = 1;
    memcpy(c->last, msg, sizeof(msg));
    md_log_write(level, module, "%s", msg);
}

void
md_release(struct md_complaint *c, const char *module, const char *fmt, ...)
{
    va_list ap;

    if (!c->failing)
        return;
    c->failing = 0;
    c->last[0] = '\0';
    va_start(ap, fmt);
    md_log_vwrite(MD_LOG_INFO, module, fmt, ap);
    va_end(ap);
}
