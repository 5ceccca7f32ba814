/*
 * feature.c - compile an agg spec into a feature and drive its per-entity state
 * (feature.h). The per-kind behaviour lives in the op vtables (op.h); windows in
 * window.c. This file owns the per-feature register-time checks (feature_compile, steps 2
 * and 4-12 as numbered there, in that order; the kind's own param checks run at step 10),
 * the memory-governance pre-check and the event path: where (once,
 * Bool(true) only) -> field (null/missing skipped) -> coercion -> update.
 *
 * Numeric coercion (before min/max/first/last and the value-keeping kinds): struct
 * feature has no slot for the field's declared type, so for OPF_COERCE kinds compile
 * swaps f->vt for the kind's as_f64 / as_i64 variant when the field is declared f64 / i64
 * (same name and behaviour, plus the conversion). Code comparing kinds should compare op
 * names, not vtable pointers.
 *
 * Choices where the spec is silent: a non-object `params` is invalid_registration; a
 * non-string `window` / `where` is aggregation_invalid_window / aggregation_invalid_where;
 * a wrongly typed q / k gets the range error's code; durations accept leading zeros.
 */
#include "feature.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "opval.h"
#include "param.h"
#include "window.h"
#include "xalloc.h"

bool feature_op_known(const char *op_name) { return op_name && op_lookup(op_name) != NULL; }

/* ---- memory-governance pre-check ---- */

static bool positive_int(const json_t *params, const char *key) {
    int64_t v;
    return param_int(params, key, &v) == 1 && v > 0;
}

int feature_precheck_unbounded(const json_t *agg_spec, const char *path, bv_err *err) {
    const json_t *params = json_is_object(agg_spec) ? json_object_get(agg_spec, "params") : NULL;
    if (!json_is_object(params)) params = NULL;
    if (params && json_is_string(json_object_get(params, "window"))) return 0;
    const json_t *opj = json_is_object(agg_spec) ? json_object_get(agg_spec, "op") : NULL;
    const char *op = json_is_string(opj) ? json_string_value(opj) : NULL;
    if (!feature_op_known(op)) {
        bv_err_set(err, "unbounded_op_in_lifetime_mode", path,
                   "unknown operator '%s' in lifetime mode (no window=): its per-entity memory "
                   "bound cannot be established", op ? op : "");
        return -1;
    }
    const char *need = NULL;
    if (!strcmp(op, "first_n") || !strcmp(op, "last_n") || !strcmp(op, "lag") ||
        !strcmp(op, "time_since_last_n") || !strcmp(op, "most_recent_n")) {
        if (!positive_int(params, "n")) need = "n=<int>";
    } else if (!strcmp(op, "reservoir_sample")) {
        if (!positive_int(params, "samples")) need = "samples=<int>";
    } else if (!strcmp(op, "histogram")) {
        const json_t *b = params ? json_object_get(params, "buckets") : NULL;
        if (!json_is_array(b) || json_array_size(b) == 0) need = "a non-empty buckets=[...]";
    }
    if (need) {
        bv_err_set(err, "unbounded_op_in_lifetime_mode", path,
                   "Operator '%s' requires %s in lifetime mode (window= omitted) to bound "
                   "per-entity memory", op, need);
        return -1;
    }
    return 0;
}

/* ---- compile ---- */

void feature_release(feature *f) {
    if (!f) return;
    free(f->name);
    free(f->op_name);
    free(f->field);
    free(f->window_src);
    free(f->where_src);
    free(f->value_src);
    if (f->where) expr_free(f->where);
    if (f->value_expr) expr_free(f->value_expr);
    if (f->spec) json_decref(f->spec);
    free(f->p.buckets);
    for (size_t i = 0; i < f->p.ncategories; i++) free(f->p.categories[i]);
    free(f->p.categories);
    free(f->p.lat_field);
    free(f->p.lon_field);
    memset(f, 0, sizeof *f);
}

/* A duration param that must be a positive, finite duration (half_life, sub_window). */
static int required_duration(const json_t *params, const char *key, const char *op,
                             int64_t *out, const char *path, bv_err *err) {
    const char *s = NULL;
    int r = param_str(params, key, &s);
    if (r == 1 && bv_parse_duration(s, out) == 0 && *out > 0) return 0;
    if (r == 0)
        bv_err_set(err, "invalid_registration", path, "operator '%s' requires %s (e.g. \"1h\")", op, key);
    else
        bv_err_set(err, "invalid_registration", path,
                   "operator '%s': invalid %s '%s' (expected <digits>(ms|s|m|h|d), > 0, not forever)",
                   op, key, s ? s : "<non-string>");
    return -1;
}

struct where_ctx {
    const bv_schema *schema;
    const char *missing;
};

static bool where_field_cb(void *ctx, const char *field) {
    struct where_ctx *w = ctx;
    if (bv_schema_find(w->schema, field, NULL) >= 0) return true;
    w->missing = field;
    return false;
}

int feature_compile(feature *f, const char *name, const json_t *spec, const bv_schema *schema,
                    const char *path, bv_err *err) {
    memset(f, 0, sizeof *f);
    const json_t *opj = json_is_object(spec) ? json_object_get(spec, "op") : NULL;
    const char *op = json_is_string(opj) ? json_string_value(opj) : NULL;
    const json_t *params = json_is_object(spec) ? json_object_get(spec, "params") : NULL;
    const json_t *wj;
    const char *field = NULL, *wsrc = NULL, *where = NULL;
    bool has_window;
    unsigned fl;

    /* step 2: the op string */
    const struct op_vtable *vt = op ? op_lookup(op) : NULL;
    if (!vt) {
        bv_err_set(err, "aggregation_unknown_op", path, "unknown aggregation operator '%s'", op ? op : "");
        return -1;
    }
    if (params && json_is_null(params)) params = NULL;
    if (params && !json_is_object(params)) {
        bv_err_set(err, "invalid_registration", path, "params must be an object");
        return -1;
    }
    fl = vt->flags;
    f->name = bv_xstrdup(name);
    f->op_name = bv_xstrdup(op);
    f->vt = vt;
    f->spec = json_deep_copy(spec);
    f->p.q = 0.5;
    f->p.k = 10;
    f->p.sigma = 3.0;

    /* step 4: decay half_life; step 5: burst_count sub_window */
    if ((fl & OPF_HALF_LIFE) && required_duration(params, "half_life", op, &f->p.half_life_ms, path, err) < 0)
        goto fail;
    if ((fl & OPF_SUB_WINDOW) && required_duration(params, "sub_window", op, &f->p.sub_window_ms, path, err) < 0)
        goto fail;

    /* step 6: field presence / existence ("field" counts only as a JSON string) */
    if (param_str(params, "field", &field) != 1) field = NULL;
    if ((fl & OPF_FIELD_REQUIRED) && !field) {
        bv_err_set(err, "aggregation_unknown_field", path, "operator '%s' requires a field", op);
        goto fail;
    }
    if ((fl & (OPF_FIELD_REQUIRED | OPF_FIELD_CHECKED)) && field && bv_schema_find(schema, field, NULL) < 0) {
        bv_err_set(err, "aggregation_unknown_field", path,
                   "field '%s' of operator '%s' is not in the upstream schema", field, op);
        goto fail;
    }
    if (field) f->field = bv_xstrdup(field);

    /* step 7: n */
    if (fl & OPF_N_REQUIRED) {
        int r = param_int(params, "n", &f->p.n);
        if (r != 1 || f->p.n < 1 || f->p.n > 1024) {
            bv_err_set(err, "aggregation_unknown_field", path,
                       "operator '%s' requires an integer n in [1, 1024]", op);
            goto fail;
        }
    }

    /* steps 8-9: window presence rules */
    wj = params ? json_object_get(params, "window") : NULL;
    has_window = wj && !json_is_null(wj);
    if ((fl & OPF_LIFETIME_ONLY) && has_window) {
        bv_err_set(err, "aggregation_invalid_window", path,
                   "operator '%s' is lifetime-only and does not accept a window", op);
        goto fail;
    }
    if ((fl & OPF_WINDOW_PARAM) && !has_window) {
        bv_err_set(err, "aggregation_invalid_window", path, "operator '%s' requires a window", op);
        goto fail;
    }

    /* step 10: sketch params (bloom window, fpr, q, k) and the kind's own params */
    if ((fl & OPF_NO_WINDOW) && has_window) {
        bv_err_set(err, "window_not_supported", path, "operator '%s' does not support a window", op);
        goto fail;
    }
    if (vt->parse && vt->parse(f, params, path, err) < 0) goto fail;

    /* step 11: the window string */
    if (has_window) {
        int64_t w;
        if (!json_is_string(wj) || bv_parse_duration((wsrc = json_string_value(wj)), &w) < 0) {
            bv_err_set(err, "aggregation_invalid_window", path,
                       "invalid window '%s' (expected <digits>(ms|s|m|h|d) or \"forever\")",
                       wsrc ? wsrc : "<non-string>");
            goto fail;
        }
        if ((fl & OPF_WINDOW_PARAM) && w == 0) {
            bv_err_set(err, "aggregation_invalid_window", path, "operator '%s' needs a finite window", op);
            goto fail;
        }
        f->window_src = bv_xstrdup(wsrc);
        if (fl & OPF_WINDOWABLE) {
            f->window_ms = w;
            f->bucket_ms = w ? (w + 63) / 64 : 0;
            if (w && vt->state_size > OP_MAX_STATE) {
                /* a kind breaking op.h's contract: refuse rather than overflow window.c */
                bv_err_set(err, "aggregation_unknown_op", path,
                           "operator '%s' cannot be windowed by this server", op);
                goto fail;
            }
        } else if (fl & OPF_WINDOW_PARAM) {
            f->p.param_window_ms = w;
        }
    }

    /* step 12: where parses and references known fields (no type check) */
    {
        int r = param_str(params, "where", &where);
        if (r < 0) {
            bv_err_set(err, "aggregation_invalid_where", path, "where must be an expression string");
            goto fail;
        }
        if (r == 1) {
            bv_err perr;
            bv_err_clear(&perr);
            f->where = expr_parse(where, &perr);
            if (!f->where) {
                bv_err_set(err, "aggregation_invalid_where", path, "invalid where '%s': %s", where, perr.reason);
                goto fail;
            }
            struct where_ctx wc = { schema, NULL };
            if (!expr_foreach_field(f->where, where_field_cb, &wc)) {
                bv_err_set(err, "aggregation_invalid_where", path,
                           "where references field '%s' which is not in the upstream schema",
                           wc.missing ? wc.missing : "?");
                goto fail;
            }
            expr_bind_schema(f->where, schema);
            f->where_src = bv_xstrdup(where);
        }
    }

    /* `expr` (the reference parsed it and ignored it): a computed value for field-reading
     * kinds given no `field`, e.g. n_unique over quadkey(lat, lon, 7). */
    if ((fl & OPF_READS_FIELD) && !f->field) {
        const char *vsrc = NULL;
        int r = param_str(params, "expr", &vsrc);
        if (r < 0) {
            bv_err_set(err, "invalid_expression", path, "expr must be an expression string");
            goto fail;
        }
        if (r == 1) {
            bv_err perr;
            bv_err_clear(&perr);
            f->value_expr = expr_parse(vsrc, &perr);
            if (!f->value_expr) {
                bv_err_set(err, "invalid_expression", path, "invalid expr '%s': %s", vsrc, perr.reason);
                goto fail;
            }
            struct where_ctx vc = { schema, NULL };
            if (!expr_foreach_field(f->value_expr, where_field_cb, &vc)) {
                bv_err_set(err, "invalid_expression", path, "expr references field '%s' which is not in the upstream schema",
                           vc.missing);
                goto fail;
            }
            expr_bind_schema(f->value_expr, schema);
            f->value_src = bv_xstrdup(vsrc);
            f->value_src_len = strlen(vsrc);
        }
    }

    if (!op_implemented(vt)) {
        bv_err_set(err, "aggregation_unknown_op", path,
                   "operator '%s' is not implemented by this server yet", op);
        goto fail;
    }

    /* Numeric coercion variant from the field's declared type (opval_coerce). */
    if ((fl & OPF_COERCE) && f->field) {
        bv_wtype t = WT__COUNT;
        bv_schema_find(schema, f->field, &t);
        if (t == WT_F64 && vt->as_f64) f->vt = vt->as_f64;
        else if (t == WT_I64 && vt->as_i64) f->vt = vt->as_i64;
    }
    f->state_size = f->window_ms ? window_state_size(f->vt) : f->vt->state_size;
    {   /* the width's epoch memo slot: a multiplicative hash's top bits */
        uint64_t h = (uint64_t)f->bucket_ms * 0x9E3779B97F4A7C15ull;
        f->epoch_slot = (uint8_t)(h >> 56);
    }
    f->prefetch_mode = FEATURE_PREFETCH_NONE;
    if (f->vt->prefetch && !f->where) {
        if (!(f->vt->flags & OPF_READS_FIELD)) f->prefetch_mode = FEATURE_PREFETCH_STATE;
        else if (f->field) f->prefetch_mode = FEATURE_PREFETCH_VALUE;
    }
    f->hinted = f->window_ms || f->prefetch_mode != FEATURE_PREFETCH_NONE;
    /* lookup hints for the event path (bv_row_field_at) */
    f->field_pos = f->p.lat_pos = f->p.lon_pos = -1;
    if (f->field) {
        f->field_len = strlen(f->field);
        f->field_pos = bv_schema_find(schema, f->field, NULL);
    }
    if (f->p.lat_field) {
        f->p.lat_len = strlen(f->p.lat_field);
        f->p.lat_pos = bv_schema_find(schema, f->p.lat_field, NULL);
    }
    if (f->p.lon_field) {
        f->p.lon_len = strlen(f->p.lon_field);
        f->p.lon_pos = bv_schema_find(schema, f->p.lon_field, NULL);
    }
    return 0;
fail:
    feature_release(f);
    return -1;
}

/* ---- state ---- */

void feature_state_init(const feature *f, void *st) {
    memset(st, 0, f->state_size);
    if (!f->window_ms && f->vt->init) f->vt->init(f, st);
}

void feature_state_destroy(const feature *f, void *st) {
    if (f->window_ms) window_destroy(f, st);
    else if (f->vt->destroy) f->vt->destroy(f, st);
}

/* Bucket epochs of one event's windowed features: a row has a few window widths
 * (5m, 1h, 24h...) over many features, so window_epoch's division runs once per width.
 * Direct-mapped by the width's slot (feature.epoch_slot, from compile): one compare per
 * lookup; two widths sharing a slot just recompute. */
#define EPOCH_MEMO 8                  /* a power of two */
typedef struct epoch_memo {
    int64_t bucket_ms[EPOCH_MEMO];    /* 0: free (a window's bucket is >= 1 ms) */
    int64_t epoch[EPOCH_MEMO];
} epoch_memo;

static inline int64_t memo_epoch(epoch_memo *m, int64_t now_ms, const feature *f) {
    unsigned i = f->epoch_slot & (EPOCH_MEMO - 1);
    if (m->bucket_ms[i] == f->bucket_ms) return m->epoch[i];
    m->bucket_ms[i] = f->bucket_ms;
    m->epoch[i] = window_epoch(now_ms, f->bucket_ms);
    return m->epoch[i];
}

/* The value of f's `expr` on in->row. Features of one row computing the same source
 * text (n_unique and entropy over one quadkey) evaluate it once: the first result is
 * kept in the row's memo unless it is text (text may live in the arena, reset between
 * features). Expressions are pure, so a kept result is the one evaluation gives. */
static bv_value value_of_expr(const feature *f, const op_input *in, expr_arena *arena) {
    op_memo *m = in->memo;
    if (m->vx_src && m->vx_src_len == f->value_src_len && memcmp(m->vx_src, f->value_src, f->value_src_len) == 0)
        return m->vx_val;
    bv_value v = expr_eval(f->value_expr, in->row, arena);
    if (v.kind != BV_STR && v.kind != BV_JSON) {
        m->vx_src = f->value_src;
        m->vx_src_len = f->value_src_len;
        m->vx_val = v;
    }
    return v;
}

/* The body of feature_update, inlined into feature_update_row's loop (one call and
 * frame per part instead of one per feature). `in` carries the row's fields that do not
 * change from feature to feature (row, now_ms, stats, memo), set once by the caller;
 * this sets v and matched. */
static inline void update_one(const feature *f, void *st, op_input *in, expr_arena *arena, epoch_memo *memo) {
    const struct op_vtable *vt = f->vt;
    bv_value cv, ev;                /* must outlive the update call below */
    in->v = NULL;
    in->matched = true;
    if (f->where) {
        in->matched = expr_matches(f->where, in->row, arena);
        if (!in->matched && !(vt->flags & OPF_SEES_UNMATCHED)) return;
    }
    if (vt->flags & OPF_READS_FIELD) {
        const bv_value *v;
        if (f->field) {
            v = bv_row_field_at(in->row, f->field, f->field_len, f->field_pos);
        } else if (f->value_expr) {
            ev = value_of_expr(f, in, arena);
            v = &ev;
        } else {
            return;
        }
        if (!v || v->kind == BV_NULL) return;
        if (vt->coerce != OP_COERCE_NONE) {
            cv = opval_coerce(v, vt->coerce == OP_COERCE_F64 ? WT_F64 : WT_I64);
            v = &cv;
        }
        in->v = v;
    }
    if (f->window_ms) window_update(f, st, in, memo_epoch(memo, in->now_ms, f));
    else vt->update(f, st, in);
}

void feature_update(const feature *f, void *st, const bv_row *row, int64_t now_ms,
                    expr_arena *arena, op_stats *stats) {
    epoch_memo memo = { .bucket_ms = { 0 } };
    op_memo shared = { .hav_valid = false, .vx_src = NULL };
    op_input in = { .row = row, .now_ms = now_ms, .stats = stats, .memo = &shared };
    update_one(f, st, &in, arena, &memo);
}

void feature_update_row(const feature *fs, const size_t *offsets, size_t n, char *base, const bv_row *row,
                        int64_t now_ms, expr_arena *arena, op_stats *stats) {
    epoch_memo memo = { .bucket_ms = { 0 } };
    op_memo shared = { .hav_valid = false, .vx_src = NULL };
    op_input in = { .row = row, .now_ms = now_ms, .stats = stats, .memo = &shared };
    for (size_t i = 0; i < n; i++) {
        expr_arena_reset(arena);
        update_one(&fs[i], base + offsets[i], &in, arena, &memo);
    }
}

static inline void prefetch_one(const feature *f, const void *st, const bv_row *row, int64_t now_ms,
                                epoch_memo *memo) {
    const bv_value *v = NULL;
    bool hint;                        /* the kind's hook runs (op.h: v NULL unless it reads a field) */
    switch (f->prefetch_mode) {
    case FEATURE_PREFETCH_STATE: hint = true; break;
    case FEATURE_PREFETCH_VALUE:
        v = bv_row_field_at(row, f->field, f->field_len, f->field_pos);
        if (v && v->kind == BV_NULL) v = NULL;
        hint = v != NULL;
        break;
    default: hint = false; break;
    }
    if (f->window_ms) window_prefetch(f, st, hint, v, hint ? memo_epoch(memo, now_ms, f) : 0);
    else if (hint) f->vt->prefetch(f, st, v);
}

void feature_prefetch_state(const feature *f, const void *st, const bv_row *row, int64_t now_ms) {
    epoch_memo memo = { .bucket_ms = { 0 } };
    prefetch_one(f, st, row, now_ms, &memo);
}

void feature_prefetch_row(const feature *fs, const size_t *offsets, size_t n, const char *base,
                          const bv_row *row, int64_t now_ms) {
    epoch_memo memo = { .bucket_ms = { 0 } };
    for (size_t i = 0; i < n; i++)
        if (fs[i].hinted) prefetch_one(&fs[i], base + offsets[i], row, now_ms, &memo);
}

void feature_read(const feature *f, const void *st, int64_t query_ms, jsonw *w) {
    if (f->window_ms) window_read(f, st, query_ms, w);
    else f->vt->read(f, st, query_ms, w);
}

void feature_encode(const feature *f, const void *st, bv_buf *out) {
    if (f->window_ms) window_encode(f, st, out);
    else f->vt->encode(f, st, out);
}

int feature_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    if (f->window_ms) return window_decode(f, st, p, end);
    return f->vt->decode(f, st, p, end);
}
