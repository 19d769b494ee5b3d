/* log.h: one line per event on stderr, logfmt (default) or JSON.
 * Thread-safe: each line is written with one write(2).  Pure modules do not
 * log; they fill struct md_err and their caller logs.
 * Each .c defines MD_MODULE before including this header. */
#ifndef MD_LOG_H
#define MD_LOG_H

#include <stdarg.h>

enum md_log_level { MD_LOG_DEBUG = 0, MD_LOG_INFO, MD_LOG_WARN, MD_LOG_ERR };
enum md_log_format { MD_LOG_LOGFMT = 0, MD_LOG_JSON };

void md_log_setup(enum md_log_level level, enum md_log_format format);
int  md_log_enabled(enum md_log_level level);
void md_log_write(enum md_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void md_log_vwrite(enum md_log_level level, const char *module, const char *fmt,
    va_list ap) __attribute__((format(printf, 3, 0)));
/* Startup failures only: logs at error level and exits with status 1. */
void md_fatal_at(const char *module, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

#ifndef MD_MODULE
#define MD_MODULE "meterd"
#endif

#define md_log_debug(...) md_log_write(MD_LOG_DEBUG, MD_MODULE, __VA_ARGS__)
#define md_log_info(...)  md_log_write(MD_LOG_INFO, MD_MODULE, __VA_ARGS__)
#define md_log_warn(...)  md_log_write(MD_LOG_WARN, MD_MODULE, __VA_ARGS__)
#define md_log_err(...)   md_log_write(MD_LOG_ERR, MD_MODULE, __VA_ARGS__)
#define md_fatal(...)     md_fatal_at(MD_MODULE, __VA_ARGS__)

/* Repeated-failure suppression (collectd utils_complain): md_complain logs
 * only when the state changes from ok to failing or the message changes;
 * md_release logs once when a failing state recovers.  The struct belongs
 * to the caller's thread. */
struct md_complaint {
    int  failing;
    char last[160];
};
void md_complain(struct md_complaint *c, enum md_log_level level, const char *module,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void md_release(struct md_complaint *c, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
