/* arena.c - chunked bump allocator (see arena.h). */
#include "arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_HDR ((sizeof(arena_block) + 15u) & ~(size_t)15u)

void arena_init(arena *a) {
    a->head = NULL;
    a->first = NULL;
}

static void free_chain(arena_block *b, arena_block *stop) {
    while (b && b != stop) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}

void arena_free(arena *a) {
    free_chain(a->head, NULL);
    a->head = a->first = NULL;
}

void arena_reset(arena *a) {
    if (!a->first) return;
    free_chain(a->head, a->first);
    a->first->next = NULL;
    a->first->used = 0;
    a->head = a->first;
}

void *arena_alloc(arena *a, size_t n) {
    n = (n + 15u) & ~(size_t)15u;
    arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK_BYTES ? n : ARENA_BLOCK_BYTES;
        arena_block *nb = malloc(ARENA_HDR + cap);
        if (!nb) {
            fputs("beava: out of memory (arena)\n", stderr);
            abort();
        }
        nb->cap = cap;
        nb->used = 0;
        nb->next = b;
        a->head = nb;
        if (!a->first) a->first = nb;
        b = nb;
    }
    void *p = (char *)b + ARENA_HDR + b->used;
    b->used += n;
    return p;
}

void *arena_calloc(arena *a, size_t n) {
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

void *arena_dup(arena *a, const void *p, size_t n) {
    void *d = arena_alloc(a, n ? n : 1);
    if (n) memcpy(d, p, n);
    return d;
}
