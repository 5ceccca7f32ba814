/*
 * op.h - the operator module interface: one `struct op_vtable` per operator kind, each
 * defined in its own ops/op_<name>.c and registered in the one const table of
 * op_table.c.
 *
 * Lifecycle of a kind (nginx-style, same shape for every kind):
 *   register time  flags drive the common checks of feature_compile; `parse`
 *                  reads and validates the kind's own params into feature->p.
 *   per entity     init -> update* -> read* -> destroy, with encode/decode for
 *                  snapshots. Windowable kinds also provide `merge`, used by window.c
 *                  to combine sub-buckets into a temporary state at query time.
 *
 * State contract: a kind's fixed state is `state_size` bytes (a multiple of 8, at most
 * OP_MAX_STATE for windowable kinds), 8-byte aligned, position independent (it may be
 * moved with memcpy/realloc: no pointers into itself) and valid when all-zero unless
 * `init` says otherwise. Anything variable-size (strings, sketches) hangs off pointers in
 * it and is allocated lazily on the first update that needs it.
 *
 * A kind whose `update` is NULL is known (feature_op_known) but not implemented yet:
 * feature_compile runs its register-time checks, then rejects it with
 * aggregation_unknown_op.
 */
#ifndef BEAVA_OP_H
#define BEAVA_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "feature.h"

#define OP_MAX_STATE 64          /* largest fixed state of a windowable kind */

enum op_coerce { OP_COERCE_NONE = 0, OP_COERCE_F64, OP_COERCE_I64 };

enum op_flag {
    OPF_WINDOWABLE     = 1u << 0,  /* "B": real sliding window over 64 sub-buckets */
    OPF_LIFETIME_ONLY  = 1u << 1,  /* "L": any `window` key -> aggregation_invalid_window */
    OPF_WINDOW_PARAM   = 1u << 2,  /* "P": `window` required; a parameter, not a window */
    OPF_NO_WINDOW      = 1u << 3,  /* bloom_member: any `window` -> window_not_supported */
    OPF_FIELD_REQUIRED = 1u << 4,  /* `field` required and must exist in the schema */
    OPF_FIELD_CHECKED  = 1u << 5,  /* `field` optional; if given it must exist */
    OPF_READS_FIELD    = 1u << 6,  /* update needs a non-null `field` value */
    OPF_SEES_UNMATCHED = 1u << 7,  /* update runs when `where` is false too (ratio, streaks) */
    OPF_HALF_LIFE      = 1u << 8,  /* decay kinds: `half_life` required (invalid_registration) */
    OPF_SUB_WINDOW     = 1u << 9,  /* burst_count: `sub_window` required */
    OPF_N_REQUIRED     = 1u << 10, /* `n` required, integer in [1,1024] */
    OPF_COERCE         = 1u << 11, /* numeric values coerced to the field's declared type */
};

/* Results one event's features share (feature_update_row keeps one per row): the same
 * pure computation on the same inputs, done once. Any field may be left invalid. */
typedef struct op_memo {
    bool hav_valid;           /* geo_haversine(hav_in[0..3]) == hav_out */
    double hav_in[4];
    double hav_out;
    const char *vx_src;       /* NULL, or an `expr` source whose value is vx_val */
    size_t vx_src_len;
    bv_value vx_val;          /* never text (bv_value of kind BV_STR/BV_JSON) */
} op_memo;

/* One event as an operator sees it. */
typedef struct op_input {
    const bv_value *v;        /* the `field` value (non-null) for OPF_READS_FIELD kinds, else NULL */
    const bv_row *row;        /* the chain-transformed row (geo ops read two fields) */
    bool matched;             /* `where` result; always true unless OPF_SEES_UNMATCHED */
    int64_t now_ms;
    op_stats *stats;
    op_memo *memo;            /* this row's shared results (never NULL) */
} op_input;

struct op_vtable {
    const char *name;
    unsigned flags;
    size_t state_size;
    /* Kind-specific params into f->p, after feature_compile's common checks (steps 4-9).
     * Returns 0 or -1 with err set (code, path, reason). NULL: no params. */
    int (*parse)(feature *f, const json_t *params, const char *path, bv_err *err);
    void (*init)(const feature *f, void *st);                 /* NULL: all-zero is empty */
    void (*update)(const feature *f, void *st, const op_input *in);
    /* Optional memory hint run before a run of updates: start loading what update(f, st,
     * v) will probe first (a hash slot, sketch cells, the out-of-line array it writes),
     * so that the misses of an entity's features overlap. For OPF_READS_FIELD kinds v is
     * the field's value as pushed (before any coercion), never null; for the others v is
     * NULL. Reads st, changes nothing. NULL: none. */
    void (*prefetch)(const feature *f, const void *st, const bv_value *v);
    /* dst += src (both states of this kind; src is not modified). Windowable kinds only. */
    void (*merge)(const feature *f, void *dst, const void *src);
    void (*read)(const feature *f, const void *st, int64_t query_ms, jsonw *w);
    void (*destroy)(const feature *f, void *st);              /* NULL: owns nothing */
    void (*encode)(const feature *f, const void *st, bv_buf *out);
    /* Restore into an initialised state. Returns 0, or -1 on malformed input; on -1 the
     * state is still valid for destroy (it may hold part of the data). Never reads at or
     * past `end`. */
    int (*decode)(const feature *f, void *st, const uint8_t **p, const uint8_t *end);
    /* OPF_COERCE kinds: `coerce` is what this variant converts numeric values to
     * before update (OP_COERCE_NONE in the base vtable); as_f64/as_i64 name the
     * variants feature_compile picks for f64 / i64 fields. */
    int coerce;
    const struct op_vtable *as_f64, *as_i64;
};

/* The vtable of an op string (the 55 names; "ema" gives ewma's), or NULL. */
const struct op_vtable *op_lookup(const char *name);

/* The i-th kind of the table (54 kinds, aliases not repeated), NULL past the end. */
const struct op_vtable *op_kind_at(size_t i);

/* A prefetch hook's helper: the first line of an out-of-line allocation (NULL: none). */
static inline void op_prefetch_ptr(const void *p) {
    if (p) __builtin_prefetch(p);
}

static inline bool op_implemented(const struct op_vtable *vt) { return vt->update != NULL; }

#endif
