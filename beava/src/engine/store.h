/*
 * store.h - the entity store of one aggregation table: entity key -> entity row.
 *
 * An entity is one allocation: a small header, the key bytes (padded to 8) and the
 * feature states laid out at the table's offsets. The index is an open-addressing
 * hash table with linear probing and backward-shift deletion (no tombstones), keyed
 * by the entity's 64-bit XXH3 hash kept in the slot (not in the entity: 16 bytes less per
 * entity once malloc rounds), so a probe compares hashes before it touches key bytes. Keys are the canonical text of the group-key values
 * joined by 0x1f (pushed strings cannot contain control characters, so the join is
 * unambiguous); the global row has the empty key.
 *
 * Not thread-safe: each store is owned by the one thread that applies its table.
 *
 * Memory: entities are plain malloc allocations. A huge-page arena (mmap +
 * MADV_HUGEPAGE) was measured and not adopted: on the benchmark VM (THP in madvise mode,
 * guest huge pages over 4 KB host pages) random loads over 512 MiB cost 26-27 ns with
 * 4 KB pages and 29-30 ns with THP, and glibc.malloc.hugetlb=1 cut page faults 141k ->
 * 3k per 460k fraud-team events without lowering CPU time; what pays is overlapping the
 * misses (the prefetch hints below, one stride ahead of the apply).
 */
#ifndef BEAVA_STORE_H
#define BEAVA_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_KEY_SEP '\x1f'
#define STORE_MAX_KEY 4096

typedef struct entity {
    int64_t last_seen_ms;      /* cold-TTL stamp (0 = never stamped) */
    uint32_t nfeat;            /* feature slots initialised in this row */
    uint32_t key_len;
    /* key bytes, padded to 8, then the row state */
} entity;

/* A slot keeps the entity's hash next to its pointer, so probing compares hashes
 * without touching (cache-missing on) the entities it passes. */
typedef struct store_slot {
    uint64_t hash;
    entity *e;                 /* NULL = empty */
} store_slot;

typedef struct entity_store {
    store_slot *slots;
    size_t cap;                /* power of two, 0 when empty */
    size_t count;
    size_t bytes;              /* sum of entity allocation sizes */
} entity_store;

static inline size_t entity_key_space(uint32_t key_len) { return ((size_t)key_len + 7) & ~(size_t)7; }
static inline const char *entity_key(const entity *e) { return (const char *)(e + 1); }
static inline void *entity_row(entity *e) { return (char *)(e + 1) + entity_key_space(e->key_len); }
static inline const void *entity_row_const(const entity *e) {
    return (const char *)(e + 1) + entity_key_space(e->key_len);
}
static inline size_t entity_alloc_size(uint32_t key_len, size_t row_size) {
    return sizeof(entity) + entity_key_space(key_len) + row_size;
}

uint64_t store_hash(const char *key, size_t len);

/* Prefetch hints for a lookup of `hash` a little later: its home slot, then (once the
 * slot is in cache) the entity it points to. Applying a run of events, the caller
 * prefetches a few events ahead so the two dependent cache misses of each lookup overlap
 * with the work on the events before it. */
static inline void store_prefetch_slot(const entity_store *s, uint64_t hash) {
    if (s->cap) __builtin_prefetch(&s->slots[hash & (s->cap - 1)]);
}
#define STORE_LINE 64                  /* cache line: prefetch granularity */
#define STORE_PREFETCH_MAX 4096        /* bytes of an entity prefetched at most */
/* The entity in hash's home slot (the common case once that slot was prefetched), or
 * NULL when it is elsewhere or absent: a hint's lookup, never store_find's. */
static inline entity *store_home_entity(const entity_store *s, uint64_t hash) {
    if (!s->cap) return NULL;
    const store_slot *sl = &s->slots[hash & (s->cap - 1)];
    return sl->e && sl->hash == hash ? sl->e : NULL;
}
/* The whole entity e (header, a key of key_len bytes, a row of row_size bytes; at most STORE_PREFETCH_MAX
 * bytes): its feature states are then loaded in parallel instead of one miss after
 * another as an update walks the row. */
static inline void store_prefetch_entity(const entity *e, size_t key_len, size_t row_size) {
    size_t n = entity_alloc_size((uint32_t)key_len, row_size);
    if (n > STORE_PREFETCH_MAX) n = STORE_PREFETCH_MAX;
    uintptr_t end = (uintptr_t)e + n;
    for (uintptr_t p = (uintptr_t)e & ~(uintptr_t)(STORE_LINE - 1); p < end; p += STORE_LINE)
        __builtin_prefetch((const void *)p);
}

void store_init(entity_store *s);
/* Frees the index and every entity allocation; the caller must have destroyed the
 * feature states first (store_foreach). */
void store_free(entity_store *s);

entity *store_find(const entity_store *s, const char *key, size_t len, uint64_t hash);

/* Insert a new entity with a zeroed row of row_size bytes. The key must be absent.
 * Returns NULL only on allocation failure. */
entity *store_insert(entity_store *s, const char *key, size_t len, uint64_t hash, size_t row_size);

/* Grow an entity's row to new_row_size bytes (new bytes zeroed); the entity may move.
 * Returns the (possibly new) pointer, NULL on allocation failure (old entity intact). */
entity *store_grow(entity_store *s, entity *e, size_t old_row_size, size_t new_row_size);

/* Remove and free one entity (the caller destroyed its states). */
void store_remove(entity_store *s, entity *e, size_t row_size);

/* Visit every entity; the callback must not insert or remove. */
void store_foreach(entity_store *s, void (*cb)(void *ctx, entity *e), void *ctx);

#endif
