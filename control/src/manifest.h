/*
 * manifest.h — pipeline manifests: YAML files -> register nodes, merged in order.
 *
 * A manifest set is read from a directory (every *.yaml / *.yml, in byte order of the file
 * name) or from single files. A file may hold several YAML documents; within a file the
 * documents are ordered by their `order:` key (stable, default 0). Each document is one
 * manifest:
 *
 *   order: 10                  # optional, orders documents within one file
 *   allow_destructive: false   # optional; this manifest may force destructive changes
 *   events:
 *     PageView:
 *       fields: {session_id: str, path: str, dwell_ms: i64}
 *       optional: [path]                 # optional fields
 *       dedupe: {key: event_id, window: 24h}
 *       keep_events_for: 30d
 *       cold_after: 7d
 *   tables:
 *     SiteMetrics:
 *       source: PageView                 # the event aggregated
 *       key: []                          # "" / [] / absent = one global row; or a field / list
 *       filter: "(dwell_ms > 0)"         # optional prefix filter
 *       ops: [ {op: with_columns, ...} ] # optional raw prefix ops
 *       features:
 *         page_views_24h: {op: count, window: 24h}
 *         median_dwell_1h: {op: quantile, field: dwell_ms, q: 0.5, window: 1h}
 *   nodes: [ <raw register nodes, passed through> ]
 *   remove: [OldTable]         # explicit removal; needs allow_destructive: true
 *
 * The set is a cumulative union: the same name defined twice with a different shape is a
 * conflict, refused before anything is sent, as is one feature name used by two tables
 * (feature names are global on the server). Step k of an apply sends manifests 1..k plus
 * everything previously applied that those manifests do not mention (the "carry"), so a
 * step never removes what a later manifest or an earlier deploy put there; removals happen
 * only through `remove:`.
 */
#ifndef CTL_MANIFEST_H
#define CTL_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct manifest {
    char *id;        /* "10-sitemetrics.yaml" or "10-sitemetrics.yaml#2" */
    char *path;      /* file path */
    long long order; /* `order:` */
    size_t doc;      /* document index within the file */
    bool allow_destructive;
    json_t *nodes;  /* array of register nodes, as declared */
    json_t *remove; /* array of names */
};

struct manifest_set {
    struct manifest *m;
    size_t n;
    json_t *all_nodes; /* union of all manifests, ordered for registration */
    char hash[80];     /* "sha256:..." over the canonical union + removals */
};

/* An empty set to add manifests to. Never fails. */
struct manifest_set *manifest_set_new(void);
void manifest_set_free(struct manifest_set *s);

/* Parse YAML text (one or more documents) named `name` (used for ids and messages) and
 * append its manifests. On error nothing is appended. */
int manifest_set_add_text(struct manifest_set *s, const char *name, const char *text, size_t len, char *err);
/* Read one file. */
int manifest_set_add_file(struct manifest_set *s, const char *path, char *err);
/* After all files are added: detect conflicts, build the union and the hash. Must be
 * called exactly once before the functions below. */
int manifest_set_finish(struct manifest_set *s, char *err);

/* Load a directory (or a single file) and finish. *out owned by the caller. */
int manifest_load(const char *path, struct manifest_set **out, char *err);

/* The nodes for step k (0-based; manifests 0..k) with `prev` (the node array applied last
 * time, may be NULL) carried. Returns a new array (caller owns), ordered: events, then
 * derivations in dependency order. */
json_t *manifest_step_nodes(const struct manifest_set *s, size_t k, json_t *prev);

/* Destructive diff entries (the server's dry-run `destructive` array) are each owned by
 * the manifest that defines (or removes) the descriptor named in the entry. Returns 0 when
 * every owner among manifests 0..k allows destructive changes; otherwise -1 with err
 * listing the first refused entry and its manifest. */
int manifest_check_destructive(const struct manifest_set *s, size_t k, json_t *destructive, char *err);

/* The readable tables of a node array: [{"table":T,"key":K}] with K the cold key
 * (empty segments joined by '|', one per group key). */
json_t *manifest_tables(json_t *nodes);

/* Name of the descriptor an entry of a diff is about ("" if none). */
const char *manifest_entry_owner(json_t *entry, char *buf, size_t len);

/* Node ordering used for every payload: events first, derivations after their upstreams.
 * Returns a new array. */
json_t *manifest_order_nodes(json_t *nodes);

#endif
