/*
 * valmap.c - typed value -> count map (see valmap.h).
 */
#include "valmap.h"

#include <stdlib.h>
#include <string.h>
#include "xalloc.h"

/* Index size for the current capacity: the smallest power of two >= 2 * cap. */
static uint32_t icap_for(uint32_t cap) {
    uint32_t c = 16;
    while (c < 2 * cap) c *= 2;
    return c;
}

/* log2 of the index size: the low bits of a slot hold an entry number (<= cap <
 * icap), the bits above them a tag of the key's hash, so that a probe passes other keys'
 * slots without reading their entries (a cache miss each, and a string compare). */
static uint32_t ibits_for(uint32_t icap) { return (uint32_t)__builtin_ctz(icap); }   /* < 32 */

/* The slot bits above the entry number that a key hashing to h has: its hash's high
 * word with the entry number's bits cleared. */
static uint32_t tag_of(uint64_t h, uint32_t ibits) { return (uint32_t)(h >> 32) >> ibits << ibits; }

static vm_entry *probe(const valmap *m, const bv_value *key, uint64_t h, uint32_t *slot) {
    uint32_t ic = icap_for(m->cap), mask = ic - 1, ib = ibits_for(ic);
    uint32_t tag = tag_of(h, ib);
    for (uint32_t s = (uint32_t)h & mask;; s = (s + 1) & mask) {
        uint32_t v = m->idx[s];
        if (!v) { *slot = s; return NULL; }
        if ((v & ~mask) != tag) continue;
        vm_entry *e = &m->e[(v & mask) - 1];
        if (e->hash == h && opval_same_key(&e->key, key)) { *slot = s; return e; }
    }
}

/* The slot value for entry number ix (1-based) of a key hashing to h. */
static uint32_t slot_value(const valmap *m, uint32_t ix, uint64_t h) {
    return ix | tag_of(h, ibits_for(icap_for(m->cap)));
}

void vm_prefetch(const valmap *m, uint64_t h) {
    if (m->idx) {
        __builtin_prefetch(&m->idx[(uint32_t)h & (icap_for(m->cap) - 1)]);
        if (m->n < m->cap) __builtin_prefetch(&m->e[m->n]);      /* where a new key goes */
    } else if (m->e) {
        __builtin_prefetch(m->e);
    }
}

vm_entry *vm_find(const valmap *m, const bv_value *key, uint64_t h) {
    if (!m->idx) {
        for (uint32_t i = 0; i < m->n; i++)
            if (m->e[i].hash == h && opval_same_key(&m->e[i].key, key)) return &m->e[i];
        return NULL;
    }
    uint32_t slot;
    return probe(m, key, h, &slot);
}

static void reindex(valmap *m) {
    free(m->idx);
    m->idx = NULL;
    if (m->cap <= VM_LINEAR) return;
    uint32_t ic = icap_for(m->cap);
    m->idx = bv_xcalloc_written(ic, sizeof *m->idx);
    uint32_t mask = ic - 1;
    for (uint32_t i = 0; i < m->n; i++) {      /* the keys are distinct: the first free slot */
        uint64_t h = m->e[i].hash;
        uint32_t s = (uint32_t)h & mask;
        while (m->idx[s]) s = (s + 1) & mask;
        m->idx[s] = slot_value(m, i + 1, h);
    }
}

vm_entry *vm_insert(valmap *m, const bv_value *key, uint64_t h) {
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : VM_MIN_CAP;
        m->e = realloc(m->e, (size_t)m->cap * sizeof *m->e);
        if (!m->e) abort();
        reindex(m);
    }
    vm_entry *e = &m->e[m->n];
    memset(e, 0, sizeof *e);
    opval_set(&e->key, key);
    e->hash = h;
    m->n++;
    if (m->idx) {
        uint32_t slot;
        probe(m, key, h, &slot);
        m->idx[slot] = slot_value(m, m->n, h);
    }
    return e;
}

void vm_free(valmap *m) {
    for (uint32_t i = 0; i < m->n; i++) opval_clear(&m->e[i].key);
    free(m->e);
    free(m->idx);
    memset(m, 0, sizeof *m);
}
