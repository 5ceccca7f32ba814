/*
 * partmap.h - which partition an entity belongs to, and which nodes own a partition.
 *
 * A cluster splits the entity space into a fixed number of partitions: (table, key)
 * hashes to one of them (the same on every node and every build: FNV-1a over the bytes,
 * a 64-bit finaliser, modulo the count). Each partition is owned by `replicas` nodes
 * chosen by rendezvous (highest-random-weight) hashing: every node scores every
 * partition, the top scores own it. The map depends only on the node ids, the partition
 * count and the replica count, never on the order the nodes are listed in, and adding or
 * removing a node moves only the partitions that node wins or loses.
 *
 * A partmap is immutable once built (partmap_set_self belongs to building it); it may be
 * read from any thread. A cluster swaps whole maps when its members change (cluster.h).
 */
#ifndef BEAVA_PARTMAP_H
#define BEAVA_PARTMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PARTMAP_MAX_PARTITIONS 4096
#define PARTMAP_MAX_NODES 64

typedef struct partmap partmap;

/* Build the map. Returns NULL when an argument is out of range (no nodes, replicas 0 or
 * more than the nodes, partitions 0 or more than PARTMAP_MAX_PARTITIONS) or on OOM. The
 * node ids are copied. */
partmap *partmap_new(char *const *nodes, size_t nnodes, unsigned partitions, unsigned replicas);
void partmap_free(partmap *m);

unsigned partmap_partitions(const partmap *m);
unsigned partmap_replicas(const partmap *m);
size_t partmap_nodes(const partmap *m);
const char *partmap_node(const partmap *m, size_t i);
/* Index of a node id, or -1. */
int partmap_node_index(const partmap *m, const char *id);

/* The partition of (table, key). */
unsigned partmap_partition(const partmap *m, const char *table, const char *key, size_t klen);

/* The owners of partition p, best score first: `replicas` node indexes. */
const uint8_t *partmap_owners(const partmap *m, unsigned p);
bool partmap_owns(const partmap *m, unsigned p, size_t node);

/* The node this process is (by id; not a member of the map: owns nothing), set once right
 * after partmap_new, so that one map pointer answers "do I own p" consistently. */
void partmap_set_self(partmap *m, const char *id);
bool partmap_owns_self(const partmap *m, unsigned p);
/* Is id one of the map's nodes. */
static inline bool partmap_has(const partmap *m, const char *id) { return partmap_node_index(m, id) >= 0; }

#endif
