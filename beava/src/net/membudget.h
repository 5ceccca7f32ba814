/*
 * membudget.h - one process-wide budget for bytes held by requests that are still being
 * received (HTTP bodies, TCP frames) or waiting for their answer.
 *
 * A listener takes bytes before it grows a receive buffer and gives them back when the
 * buffer is freed, so the sum of all such buffers never exceeds `limit`
 * (limits.partial_body_budget_bytes in the README). When a take fails nothing is taken:
 * the listener answers 503 `overloaded` or closes the connection, it never grows the
 * buffer anyway. The counters are atomics, so every I/O thread of every listener shares
 * one budget without a lock; the owner (server.c) keeps it alive longer than the
 * listeners that use it.
 */
#ifndef BEAVA_MEMBUDGET_H
#define BEAVA_MEMBUDGET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "jsonw.h"

typedef struct membudget {
    uint64_t limit;              /* bytes; fixed after membudget_init */
    _Atomic uint64_t used;       /* bytes currently taken */
    _Atomic uint64_t peak;       /* highest `used` seen */
    _Atomic uint64_t refused;    /* takes that failed */
} membudget;

void membudget_init(membudget *b, uint64_t limit);

/* Take n bytes. Returns true when they fit under the limit (used grows by n), false
 * when they do not (nothing changes, `refused` counts one). */
bool membudget_take(membudget *b, uint64_t n);

/* Give back n bytes taken earlier. Giving back more than was taken is a caller bug. */
void membudget_give(membudget *b, uint64_t n);

uint64_t membudget_used(const membudget *b);

/* Prometheus lines: beava_body_budget_{limit,used,peak}_bytes, beava_body_budget_refused_total. */
void membudget_metrics(const membudget *b, bv_buf *out);

#endif
