/*
 * valmap.h - a small insert-only map from a typed value to a u64 count, used by the
 * exact phase of top_k and by entropy.
 *
 * Entries live in one dense array in insertion order (iteration = e[0..n)); maps of up
 * to VM_LINEAR entries are searched linearly, bigger ones get an open-addressing index
 * of u32 slots (power of two, load <= 1/2, linear probing) keyed by opval_hash; a slot
 * holds the entry number and, in the bits above it, a tag of the key's hash, so a probe
 * reads only the entries whose tag matches. Each entry keeps its key's hash: the linear
 * search compares hashes before keys, and a regrown index is rebuilt without hashing
 * again (h must always be opval_hash(key)). There is no deletion. 24 bytes, all-zero =
 * empty. Keys are Str/I64/F64/Bool (never lists/maps).
 */
#ifndef BEAVA_SKETCH_VALMAP_H
#define BEAVA_SKETCH_VALMAP_H

#include <stdbool.h>
#include <stdint.h>
#include "opval.h"

#define VM_LINEAR 8
#define VM_MIN_CAP 4             /* the first allocation's entries */

typedef struct vm_entry {
    op_val key;
    uint64_t count;
    uint64_t hash;            /* opval_hash(key) */
} vm_entry;

typedef struct valmap {
    uint32_t n, cap;          /* entries held / allocated */
    vm_entry *e;
    uint32_t *idx;            /* icap() slots: entry index + 1 | hash tag, 0 = free; NULL while small */
} valmap;

/* The entry for key (h = opval_hash(key)), or NULL. */
vm_entry *vm_find(const valmap *m, const bv_value *key, uint64_t h);
/* Memory hint, no effect on m: prefetch the index slot (or the first entries) that
 * vm_find(m, key, h) reads first. */
void vm_prefetch(const valmap *m, uint64_t h);
/* Whether vm_prefetch(m, h) uses h (the indexed form); a short map is prefetched whole,
 * so a caller may pass 0 without hashing (as distinct_prefetch_hashes). */
static inline bool vm_prefetch_hashes(const valmap *m) { return m->idx != NULL; }
/* Add an absent key with count 0 and return its entry (copies the key). */
vm_entry *vm_insert(valmap *m, const bv_value *key, uint64_t h);
void vm_free(valmap *m);

#endif
