/*
 * feature.h - one compiled aggregation feature (an entry of a group_by `agg` map) and
 * its per-entity state.
 *
 * A feature couples an operator kind (ops/op.h), its parsed params, the `field` it reads,
 * an optional `where` predicate and an optional sliding window (64 sub-buckets,
 * window.h). The engine stores each entity's feature states back to
 * back in one row buffer: feature_state_size() bytes at an offset the table assigns.
 * Variable-size state (buckets, sketches) hangs off pointers inside that fixed part and
 * is released by feature_state_destroy().
 *
 * Thread-safety: a compiled feature is immutable; states are owned by one apply thread.
 */
#ifndef BEAVA_FEATURE_H
#define BEAVA_FEATURE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "err.h"
#include "expr.h"
#include "jsonw.h"
#include "names.h"
#include "value.h"

struct op_vtable;

/* Counters for /metrics, owned by whoever applies events (one per apply thread). */
typedef struct op_stats {
    uint64_t entropy_categories_capped;
    uint64_t bucket_reclaim;
    uint64_t cold_evictions;      /* entity rows reset or evicted by cold_after_ms */
} op_stats;

/* Parsed params. One struct for all kinds; each kind reads what it needs. */
typedef struct op_params {
    double q;                 /* quantile */
    int64_t k;                /* top_k */
    int64_t n;                /* first_n, last_n, lag, time_since_last_n, most_recent_n */
    int64_t half_life_ms;     /* decay ops */
    int64_t sub_window_ms;    /* burst_count */
    double sigma;             /* outlier_count */
    double *buckets; size_t nbuckets;         /* histogram */
    char **categories; size_t ncategories;    /* event_type_mix */
    int64_t max_categories;
    int64_t samples;          /* reservoir_sample, distance_from_home */
    int64_t expected_n;       /* bloom_member */
    double fpr;
    uint32_t bloom_nwords, bloom_k;   /* bloom_member geometry, computed by its parse */
    char *lat_field, *lon_field;
    size_t lat_len, lon_len;
    int lat_pos, lon_pos;     /* schema positions (bv_row_field_at hints), -1 unknown */
    int64_t param_window_ms;  /* first_seen_in_window */
} op_params;

/* How feature_prefetch calls the kind's hook (op.h): not at all (no hook, or the value
 * needs a `where` or an expression first), on the state alone, or with the field's value. */
enum { FEATURE_PREFETCH_NONE, FEATURE_PREFETCH_STATE, FEATURE_PREFETCH_VALUE };

typedef struct feature {
    char *name;
    const struct op_vtable *vt;
    char *op_name;            /* as sent ("ema" stays "ema") */
    op_params p;
    char *field;              /* NULL if not given */
    size_t field_len;
    int field_pos;            /* its position in the upstream schema, -1 unknown */
    char *window_src;         /* as sent, NULL if absent ("forever" kept) */
    int64_t window_ms;        /* 0 = lifetime */
    int64_t bucket_ms;        /* ceil(window/64) when windowed */
    uint8_t epoch_slot;       /* bucket_ms hashed: its slot in feature_update_row's epoch memo */
    expr *value_expr;         /* `expr` param: the value, when no `field` is given */
    char *value_src;          /* its source text (NULL without one) */
    size_t value_src_len;
    expr *where;              /* NULL = always matched */
    char *where_src;
    json_t *spec;             /* the original {"op":..,"params":{..}} (owned ref) */
    size_t state_size;
    bool hinted;              /* feature_prefetch has something to load (set by compile) */
    uint8_t prefetch_mode;    /* FEATURE_PREFETCH_*: what the kind's prefetch hook is given */
} feature;

/*
 * Memory-governance pre-check on the raw agg spec (a window-less unbounded kind is
 * refused), run before strict parsing. Returns 0, or -1 with err =
 * unbounded_op_in_lifetime_mode.
 */
int feature_precheck_unbounded(const json_t *agg_spec, const char *path, bv_err *err);

/*
 * Compile `spec` ({"op":NAME,"params":{...}}) for feature `name` reading rows of
 * `schema` (the upstream schema after prefix ops). Runs the per-feature checks
 * (steps 2 and 4-12, numbered in feature.c) (group-key checks and cross-table
 * uniqueness are the registry's). On failure returns -1, sets err (code, path = `path`,
 * reason) and leaves *f empty. On success the caller owns *f (feature_release).
 */
int feature_compile(feature *f, const char *name, const json_t *spec, const bv_schema *schema,
                    const char *path, bv_err *err);
void feature_release(feature *f);

/* True if the op kind is known (any of the 55 op strings), whether or not implemented. */
bool feature_op_known(const char *op_name);

void feature_state_init(const feature *f, void *st);
void feature_state_destroy(const feature *f, void *st);

/* Apply one event: evaluate where, read the field from `row`, update (windowed: into the
 * bucket of now_ms). */
void feature_update(const feature *f, void *st, const bv_row *row, int64_t now_ms,
                    expr_arena *arena, op_stats *stats);

/* feature_update of features fs[0..n) on the states at base + offsets[i], in order, the
 * arena reset before each (an entity row's update). */
void feature_update_row(const feature *fs, const size_t *offsets, size_t n, char *base, const bv_row *row,
                        int64_t now_ms, expr_arena *arena, op_stats *stats);

/* Memory hint before feature_update(f, st, row, now_ms, ...): start loading what the
 * update will probe (the kind's prefetch hook, op.h), so the cache misses of an entity's
 * features overlap instead of following one another. Changes nothing; skips features
 * whose value needs a `where` or an expression evaluated. */
void feature_prefetch_state(const feature *f, const void *st, const bv_row *row, int64_t now_ms);
static inline void feature_prefetch(const feature *f, const void *st, const bv_row *row, int64_t now_ms) {
    if (f->hinted) feature_prefetch_state(f, st, row, now_ms);
}
/* feature_prefetch of features fs[0..n) on the states at base + offsets[i]. */
void feature_prefetch_row(const feature *fs, const size_t *offsets, size_t n, const char *base,
                          const bv_row *row, int64_t now_ms);

/* Write the feature's current value (one JSON value) as of query_ms. */
void feature_read(const feature *f, const void *st, int64_t query_ms, jsonw *w);

/* Serialise / restore a state (snapshots). decode expects an initialised state. */
void feature_encode(const feature *f, const void *st, bv_buf *out);
int feature_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end);

#endif
