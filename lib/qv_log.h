/* qv_log: one line per event on stderr, text or JSON (QUAVER_LOG_FORMAT / log_format).
 *   2026-11-22T10:00:00.123Z W cache[1234] req=7f3a redis timeout, serving local tier
 *   {"ts":"...","level":"warn","daemon":"cache","pid":1234,"req":"7f3a","msg":"..."}
 * Thread-safe: each line is formatted in full and written with one write(2). */
#ifndef QV_LOG_H
#define QV_LOG_H
#include <stdbool.h>

typedef enum { QV_LOG_DEBUG = 0, QV_LOG_INFO, QV_LOG_WARN, QV_LOG_ERROR } qv_log_level_t;

/* format: "text" or "json"; level: "debug".."error". Returns -1 on an unknown word. */
int  qv_log_init(const char *daemon, const char *format, const char *level);
void qv_log(qv_log_level_t level, const char *req_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define qv_debug(...) qv_log(QV_LOG_DEBUG, NULL, __VA_ARGS__)
#define qv_info(...)  qv_log(QV_LOG_INFO,  NULL, __VA_ARGS__)
#define qv_warn(...)  qv_log(QV_LOG_WARN,  NULL, __VA_ARGS__)
#define qv_error(...) qv_log(QV_LOG_ERROR, NULL, __VA_ARGS__)

int qv_log_selftest(void);
#endif
