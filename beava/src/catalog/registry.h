/*
 * registry.h - the registry of event and derivation descriptors, and the one diff
 * classifier (README "Registering pipelines").
 *
 * A register request goes through two steps so that the engine can log before it
 * applies (the WAL seam):
 *   registry_prepare()  parse + pre-checks + (mode "merge": the kept descriptors) +
 *                        validation + diff + dry_run + force gate. It never mutates the
 *                        registry. It always produces a status and a body; when the
 *                        registry must change it also returns a plan. The body alone
 *                        decides the outcome against a given registry (mode included),
 *                        which is why the WAL logs it verbatim.
 *   registry_apply()    applies a plan: removals (force set + cascade), in-place
 *                        additive changes, inserts; bumps the version by exactly 1;
 *                        calls the hooks so the engine can create/drop/widen state
 *                        stores; writes the 200 body.
 * Replaying the same request bodies in the same order reproduces the same registry and
 * version exactly (everything here is deterministic: sorted diffs, sorted rename
 * pairing, ids allocated in order).
 *
 * Versions. registry_apply and registry_reset change a registry in place; the engine
 * never changes one that a reader can see. It builds the next version with
 * registry_next (a copy of the containers, the indexes, every event and derivation
 * descriptor, and a new "shell" of every table), changes that copy, and publishes it
 * (engine_int.h). A version, once published, is immutable. What versions share:
 *   - a table's store, its feature states (the feature structs are bitwise copies) and
 *     its prefix chain until a change compiles a new one. The shells of one table form a
 *     line, oldest first (agg_table.pred/succ). A shell owns its arrays and strings; the
 *     chain goes with the shell whose successor has another; the store and the feature
 *     states go with the last shell of the line, through hooks->table_removed.
 *   - json nodes (reference counted).
 * registry_free frees a version that nothing can reach any more (its tables that live on
 * in a later version lose only their shells), and must be called oldest version first;
 * registry_discard drops a version that was built but never published (the version it
 * was built from keeps everything it had). Only one thread builds, discards or frees
 * versions at a time (the engine's reg_change_mu); readers of published versions need
 * no lock.
 *
 * Thread-safety: none inside beyond the above.
 */
#ifndef BEAVA_REGISTRY_H
#define BEAVA_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "chain.h"
#include "err.h"
#include "jsonw.h"
#include "feature.h"
#include "names.h"
#include "value.h"

#define REGISTRY_MAX_NODES 4096          /* nodes per register payload */
#define REGISTRY_NAME_MAX BV_NAME_MAX      /* bytes of a descriptor name (base/names.h) */

typedef struct ev_desc {
    char *name;
    bv_schema schema;                /* fields + optional_fields */
    /* for WAL event records (engine/evrec.h): prefix_fp[k] is the fingerprint of the
     * schema's first k fields (k = 0 .. schema.n; prefix_fp[schema.n] the whole one),
     * name_lens[i] strlen(schema.names[i]) */
    uint32_t *prefix_fp;
    uint32_t *name_lens;
    char *dedupe_key;                /* NULL if none */
    int64_t dedupe_window_ms;        /* 86,400,000 when not given */
    int64_t keep_events_for_ms;      /* 0 = not given */
    int64_t cold_after_ms;           /* 0 = not given */
    uint64_t registered_at_version;
    json_t *node;                    /* the node as last accepted (owned ref) */
} ev_desc;

/* A compiled aggregation: a derivation with a group_by op. */
typedef struct agg_table {
    uint64_t id;                     /* never reused, also not across reset */
    char *name;                      /* = derivation name, the table name of /get */
    char *source;                    /* the event whose pushes feed it: upstreams[0], or the
                                      * root event when upstreams[0] is an event derivation */
    size_t nkeys;
    char **keys;                     /* group_by keys, declaration order; 0 = global */
    chain *prefix;                   /* the derivation's non-group_by ops (never NULL); over
                                      * event derivations, their ops root-first, then these */
    size_t nfeatures;
    feature *features;               /* slot order: append-only while the table lives */
    size_t *offsets;                 /* state offset of each slot in an entity row */
    size_t row_size;                 /* total state bytes of an entity row */
    size_t *by_name;                 /* slot indices sorted by feature name (output order) */
    void *store;                     /* engine-owned entity store */
    /* the same table in the version this one was built from / the next one (registry.c's
     * bookkeeping, written by the one builder; no reader follows them) */
    struct agg_table *pred, *succ;
} agg_table;

typedef struct deriv_desc {
    char *name;
    bool output_table;               /* output_kind == "table" */
    size_t nupstreams;
    char **upstreams;
    bv_schema schema;                /* propagated output schema (event derivations) */
    agg_table *table;                /* NULL when the derivation has no group_by */
    uint64_t registered_at_version;
    json_t *node;                    /* owned ref */
} deriv_desc;

typedef struct registry registry;
typedef struct reg_plan reg_plan;

typedef struct registry_options {
    bool memory_gov_enforce;         /* BEAVA_MEMORY_GOV_ENFORCE != "0" */
} registry_options;

typedef struct reg_hooks {
    void *ctx;
    void (*table_added)(void *ctx, agg_table *t);                      /* fresh, empty state */
    void (*table_removed)(void *ctx, agg_table *t);                    /* before it is freed */
    void (*table_widened)(void *ctx, agg_table *t, size_t old_nfeatures); /* slots appended */
} reg_hooks;

registry *registry_new(const registry_options *opts);
void registry_free(registry *r, const reg_hooks *hooks);

uint64_t registry_version(const registry *r);
size_t registry_node_count(const registry *r);   /* events + derivations */

const ev_desc *registry_event(const registry *r, const char *name);
agg_table *registry_table(const registry *r, const char *name);

/* Tables whose source is `event`, in registration order: tables over `event` itself and
 * tables over event derivations rooted at it. The array is owned by the registry and
 * valid until the next apply/reset. */
size_t registry_tables_for_event(const registry *r, const char *event, agg_table *const **out);

/* All tables, registration order (same lifetime rule). */
size_t registry_tables(const registry *r, agg_table *const **out);

/* Global feature index: the table that owns feature `name`, and its slot. */
agg_table *registry_feature_owner(const registry *r, const char *name, size_t *slot);

/*
 * The register request pipeline (the stages listed at the top of registry.c), for a body that
 * already passed the transport checks (method, content type). Writes the response body
 * into `resp` and returns the HTTP status. When the registry must change, returns 200
 * with an empty `resp` and sets *plan (caller: log, then registry_apply). Otherwise
 * *plan is NULL and `resp` is the final body (dry run, 409, 400, no-op 200).
 */
int registry_prepare(const registry *r, const char *body, size_t len, bv_buf *resp, reg_plan **plan);

/* Apply a plan returned by registry_prepare against the same registry state. Writes
 * the 200 body into `resp`. Consumes the plan. */
void registry_apply(registry *r, reg_plan *plan, const reg_hooks *hooks, bv_buf *resp);
void reg_plan_free(reg_plan *plan);
/* Was the plan prepared on the registry as it is now (no change applied since)? */
bool reg_plan_current(const registry *r, const reg_plan *plan);
/* The next version: a copy of r that registry_apply / registry_reset may change while r
 * is read (see "Versions" above). */
registry *registry_next(registry *r);
/* Drop a version built by registry_next and never published (hooks->table_removed for
 * the tables it created). */
void registry_discard(registry *next, const reg_hooks *hooks);

/* Test-mode reset: drop every descriptor, version += 1. Table ids keep increasing. A
 * table this registry created goes at once (hooks->table_removed); one it shares with the
 * version it was built from goes with that version (registry_free). */
void registry_reset(registry *r, const reg_hooks *hooks);

/* {"version":V,"events":{...},"tables":{},"derivations":{...}} for debugging/admin. */
void registry_dump(const registry *r, jsonw *w);

/* The name rule (bv_name_check): non-empty, <= 128 bytes, [A-Za-z_][A-Za-z0-9_]*, no
 * "_beava_" prefix. */
bool registry_name_valid(const char *name);

#endif
