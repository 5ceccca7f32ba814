/*
 * arena.h - a chunked bump allocator for memory that lives exactly as long as one unit
 * of work (a batch of pushes, one decoded request).
 *
 * Blocks are never moved, so every pointer handed out stays valid until arena_reset()
 * or arena_free(). arena_reset() keeps the first block (and frees the rest), so an arena
 * reused for one batch after another reaches a steady state with no allocation at all.
 * Allocation failure aborts, like the rest of the server's bounded buffers: every request
 * that fills an arena is capped in size by the listener that read it.
 *
 * Not thread-safe: an arena belongs to one owner at a time.
 */
#ifndef BEAVA_ARENA_H
#define BEAVA_ARENA_H

#include <stddef.h>

#define ARENA_BLOCK_BYTES (64u * 1024u)

typedef struct arena_block {
    struct arena_block *next;
    size_t cap, used;
    /* bytes follow, 16-aligned */
} arena_block;

typedef struct arena {
    arena_block *head;        /* newest block (allocations come from it) */
    arena_block *first;       /* oldest block, kept by arena_reset */
} arena;

void arena_init(arena *a);
void arena_free(arena *a);
/* Forget every allocation; keeps one block for reuse. */
void arena_reset(arena *a);
/* n bytes, 16-aligned, uninitialised. */
void *arena_alloc(arena *a, size_t n);
/* n zeroed bytes. */
void *arena_calloc(arena *a, size_t n);
/* A copy of n bytes. */
void *arena_dup(arena *a, const void *p, size_t n);

#endif
