/*
 * log.h - JSON log lines on stdout.
 *
 * Every line is one JSON object: {"kind":KIND,"level":LEVEL,"ts_ms":..., ...fields}.
 * The SDK's embed mode and our tests discover ports by parsing the
 * "server.http_bound" / "server.tcp_bound" / "server.admin_bound" lines, so those keep
 * their shape. Lines are written with one write(2) each, so concurrent threads never
 * interleave within a line. The level filter lives in a bv_log value owned by main.
 */
#ifndef BEAVA_LOG_H
#define BEAVA_LOG_H

#include <stdbool.h>

typedef enum bv_log_level { LOG_TRACE = 0, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } bv_log_level;

typedef struct bv_log {
    bv_log_level min_level;
    int fd;                     /* 1 (stdout) unless redirected */
} bv_log;

void bv_log_init(bv_log *log, bv_log_level min_level);
int bv_log_level_parse(const char *s);     /* -1 if unknown */

/* Emit one line. `fields` is a pre-rendered JSON fragment of extra members WITHOUT
 * surrounding braces (e.g. "\"addr\":\"127.0.0.1:8080\""), or NULL. */
void bv_log_emit(const bv_log *log, bv_log_level level, const char *kind, const char *fields);

/* printf-style message: {"kind":kind,"level":..,"msg":"..."} */
void bv_log_msg(const bv_log *log, bv_log_level level, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
