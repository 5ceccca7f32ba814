/*
 * slots.h - a sparse-then-dense array of fixed-size cells, for operators whose state is
 * "one small record per cell of a fixed grid" (dow_hour_histogram: 168 hours of the
 * week, seasonal_deviation: 24 hours, burst_count: a 64-slot ring) but whose entities
 * mostly touch one or two cells (slots.c).
 *
 * A cell is `vsize` bytes (a multiple of 8); an all-zero cell is the same as an absent
 * one, and callers must treat them alike (a cell once written is never zeroed again by
 * its op, so "present" = "written at least once" in both forms). Held as one pointer,
 * NULL = every cell zero:
 *   sparse  header + entries (u32 key, u32 pad, value) ascending by key, capacity
 *           doubled from 1; binary search.
 *   dense   header + ncells values indexed by key; chosen once the sparse array would
 *           be as big (slots_put moves there and never back).
 * Values are 8-byte aligned and may move on every slots_put (never keep a pointer
 * across one). The shape (ncells, vsize) is not stored: every call passes it, and it
 * must be the same for the life of the array.
 *
 * Snapshot codecs are the op's: it iterates the cells (slots_next) and writes its own
 * historic format, so the representation is invisible in snapshots.
 */
#ifndef BEAVA_OPS_SLOTS_H
#define BEAVA_OPS_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct slots slots;

typedef struct slots_shape {
    uint32_t ncells;          /* keys are 0 .. ncells-1 */
    uint32_t vsize;           /* bytes per cell, a multiple of 8 */
} slots_shape;

/* The value of cell `key`, or NULL when it was never written (sparse, absent). */
void *slots_get(const slots *s, const slots_shape *sh, uint32_t key);

/* The value of cell `key`, created all-zero when absent (*sp may be NULL and is
 * reallocated). Aborts on out-of-memory. */
void *slots_put(slots **sp, const slots_shape *sh, uint32_t key);

/* Iterate the present cells in ascending key order (dense: every cell, zero or not):
 * start with *pos = 0; returns the value and sets *key, or NULL at the end. */
void *slots_next(const slots *s, const slots_shape *sh, uint32_t *pos, uint32_t *key);

/* True when s holds the dense form (tests, metrics). */
bool slots_is_dense(const slots *s);

void slots_free(slots **sp);

#endif
