/*
 * partmap.c - partitions and their owners (see partmap.h).
 */
#include "partmap.h"

#include <stdlib.h>
#include <string.h>

struct partmap {
    unsigned partitions, replicas;
    size_t nnodes;
    size_t self;                  /* index of this process's node, nnodes if not a member */
    char **nodes;
    uint64_t *node_hash;          /* FNV-1a of each id */
    uint8_t *owners;              /* partitions x replicas node indexes */
};

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull
#define PARTMAP_TABLE_SEP 0x1f    /* between table and key: "ab"+"c" != "a"+"bc" */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

/* splitmix64's finaliser: every input bit reaches every output bit. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t score(const partmap *m, size_t node, unsigned p) {
    return mix64(m->node_hash[node] ^ mix64((uint64_t)p + 1));
}

void partmap_free(partmap *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nnodes; i++) free(m->nodes[i]);
    free(m->nodes);
    free(m->node_hash);
    free(m->owners);
    free(m);
}

partmap *partmap_new(char *const *nodes, size_t nnodes, unsigned partitions, unsigned replicas) {
    if (nnodes == 0 || nnodes > PARTMAP_MAX_NODES || replicas == 0 || replicas > nnodes || partitions == 0 ||
        partitions > PARTMAP_MAX_PARTITIONS)
        return NULL;
    partmap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->partitions = partitions;
    m->replicas = replicas;
    m->self = nnodes;
    m->nodes = calloc(nnodes, sizeof *m->nodes);
    m->node_hash = calloc(nnodes, sizeof *m->node_hash);
    m->owners = calloc((size_t)partitions * replicas, sizeof *m->owners);
    if (!m->nodes || !m->node_hash || !m->owners) goto err;
    for (size_t i = 0; i < nnodes; i++) {
        if (!(m->nodes[i] = strdup(nodes[i]))) goto err;
        m->nnodes = i + 1;
        m->node_hash[i] = fnv1a(FNV_OFFSET, nodes[i], strlen(nodes[i]));
    }
    for (unsigned p = 0; p < partitions; p++) {
        uint8_t *own = &m->owners[(size_t)p * replicas];
        /* selection of the top `replicas` scores; ties (equal 64-bit scores) go to the
         * smaller id so the result never depends on the listing order */
        for (unsigned r = 0; r < replicas; r++) {
            size_t best = nnodes;
            uint64_t best_s = 0;
            for (size_t i = 0; i < nnodes; i++) {
                bool taken = false;
                for (unsigned q = 0; q < r; q++) taken |= own[q] == i;
                if (taken) continue;
                uint64_t s = score(m, i, p);
                if (best == nnodes || s > best_s || (s == best_s && strcmp(m->nodes[i], m->nodes[best]) < 0)) {
                    best = i;
                    best_s = s;
                }
            }
            own[r] = (uint8_t)best;
        }
    }
    return m;
err:
    partmap_free(m);
    return NULL;
}

unsigned partmap_partitions(const partmap *m) { return m->partitions; }
unsigned partmap_replicas(const partmap *m) { return m->replicas; }
size_t partmap_nodes(const partmap *m) { return m->nnodes; }
const char *partmap_node(const partmap *m, size_t i) { return i < m->nnodes ? m->nodes[i] : NULL; }

int partmap_node_index(const partmap *m, const char *id) {
    for (size_t i = 0; i < m->nnodes; i++)
        if (strcmp(m->nodes[i], id) == 0) return (int)i;
    return -1;
}

unsigned partmap_partition(const partmap *m, const char *table, const char *key, size_t klen) {
    uint64_t h = fnv1a(FNV_OFFSET, table, strlen(table));
    unsigned char sep = PARTMAP_TABLE_SEP;
    h = fnv1a(h, &sep, 1);
    h = fnv1a(h, key, klen);
    return (unsigned)(mix64(h) % m->partitions);
}

const uint8_t *partmap_owners(const partmap *m, unsigned p) {
    return &m->owners[(size_t)(p % m->partitions) * m->replicas];
}

bool partmap_owns(const partmap *m, unsigned p, size_t node) {
    const uint8_t *own = partmap_owners(m, p);
    for (unsigned r = 0; r < m->replicas; r++)
        if (own[r] == node) return true;
    return false;
}

void partmap_set_self(partmap *m, const char *id) {
    int i = partmap_node_index(m, id);
    m->self = i < 0 ? m->nnodes : (size_t)i;
}

bool partmap_owns_self(const partmap *m, unsigned p) {
    return m->self < m->nnodes && partmap_owns(m, p, m->self);
}
