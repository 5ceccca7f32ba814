/*
 * log.c - JSON log lines (see log.h).
 */
#include "log.h"
#include "jsonw.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = { "trace", "debug", "info", "warn", "error" };

void bv_log_init(bv_log *log, bv_log_level min_level) {
    log->min_level = min_level;
    log->fd = 1;
}

int bv_log_level_parse(const char *s) {
    for (int i = 0; i <= LOG_ERROR; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

void bv_log_emit(const bv_log *log, bv_log_level level, const char *kind, const char *fields) {
    if (log && level < log->min_level) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{\"kind\":");
    bv_buf_json_str(&b, kind, strlen(kind));
    bv_buf_printf(&b, ",\"level\":\"%s\",\"ts_ms\":%lld", level_names[level], ms);
    if (fields && *fields) {
        bv_buf_putc(&b, ',');
        bv_buf_puts(&b, fields);
    }
    bv_buf_puts(&b, "}\n");
    int fd = log ? log->fd : 1;
    size_t off = 0;
    while (off < b.len) {
        ssize_t n = write(fd, b.data + off, b.len - off);
        if (n <= 0) break;
        off += (size_t)n;
    }
    bv_buf_free(&b);
}

void bv_log_msg(const bv_log *log, bv_log_level level, const char *kind, const char *fmt, ...) {
    if (log && level < log->min_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bv_buf f;
    bv_buf_init(&f);
    bv_buf_puts(&f, "\"msg\":");
    bv_buf_json_str(&f, msg, strlen(msg));
    bv_log_emit(log, level, kind, f.data);
    bv_buf_free(&f);
}
