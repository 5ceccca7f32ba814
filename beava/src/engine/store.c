/*
 * store.c - open-addressing entity index (see store.h).
 */
#include "store.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

uint64_t store_hash(const char *key, size_t len) { return XXH3_64bits(key, len); }

void store_init(entity_store *s) { memset(s, 0, sizeof *s); }

void store_free(entity_store *s) {
    for (size_t i = 0; i < s->cap; i++) free(s->slots[i].e);
    free(s->slots);
    store_init(s);
}

static bool key_eq(const entity *e, const char *key, size_t len) {
    return e->key_len == len && memcmp(entity_key(e), key, len) == 0;
}

entity *store_find(const entity_store *s, const char *key, size_t len, uint64_t hash) {
    if (!s->cap) return NULL;
    size_t mask = s->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        const store_slot *sl = &s->slots[i];
        if (!sl->e) return NULL;
        if (sl->hash == hash && key_eq(sl->e, key, len)) return sl->e;
    }
}

static int store_resize(entity_store *s, size_t ncap) {
    store_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    size_t mask = ncap - 1;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i].e) continue;
        size_t j = s->slots[i].hash & mask;
        while (ns[j].e) j = (j + 1) & mask;
        ns[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = ns;
    s->cap = ncap;
    return 0;
}

entity *store_insert(entity_store *s, const char *key, size_t len, uint64_t hash, size_t row_size) {
    if ((s->count + 1) * 4 > s->cap * 3) {           /* load factor 0.75 */
        if (store_resize(s, s->cap ? s->cap * 2 : 16) != 0) return NULL;
    }
    size_t sz = entity_alloc_size((uint32_t)len, row_size);
    entity *e = calloc(1, sz);
    if (!e) return NULL;
    e->key_len = (uint32_t)len;
    memcpy((char *)(e + 1), key, len);
    size_t mask = s->cap - 1;
    size_t i = hash & mask;
    while (s->slots[i].e) i = (i + 1) & mask;
    s->slots[i].hash = hash;
    s->slots[i].e = e;
    s->count++;
    s->bytes += sz;
    return e;
}

static size_t slot_of(const entity_store *s, const entity *e) {
    size_t mask = s->cap - 1;
    size_t i = store_hash(entity_key(e), e->key_len) & mask;   /* cold paths only */
    while (s->slots[i].e != e) i = (i + 1) & mask;
    return i;
}

entity *store_grow(entity_store *s, entity *e, size_t old_row_size, size_t new_row_size) {
    size_t i = slot_of(s, e);
    size_t old_sz = entity_alloc_size(e->key_len, old_row_size);
    size_t new_sz = entity_alloc_size(e->key_len, new_row_size);
    entity *n = realloc(e, new_sz);
    if (!n) return NULL;
    if (new_sz > old_sz) memset((char *)n + old_sz, 0, new_sz - old_sz);
    s->slots[i].e = n;
    s->bytes = s->bytes - old_sz + new_sz;
    return n;
}

void store_remove(entity_store *s, entity *e, size_t row_size) {
    size_t mask = s->cap - 1;
    size_t i = slot_of(s, e);
    s->bytes -= entity_alloc_size(e->key_len, row_size);
    free(e);
    s->slots[i].e = NULL;
    s->count--;
    /* backward-shift: move later members of the probe run into the hole */
    for (size_t j = (i + 1) & mask; s->slots[j].e; j = (j + 1) & mask) {
        size_t home = s->slots[j].hash & mask;
        /* can slot j move to i? yes if home is not in (i, j] cyclically */
        bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            s->slots[i] = s->slots[j];
            s->slots[j].e = NULL;
            i = j;
        }
    }
}

void store_foreach(entity_store *s, void (*cb)(void *ctx, entity *e), void *ctx) {
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].e) cb(ctx, s->slots[i].e);
}
