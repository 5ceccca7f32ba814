/*
 * push.c - the push path: validation, the sequencer, inline or queued application, and
 * asynchronous completion (see engine.h for the flow, engine_int.h for the locks).
 *
 * One batch (the frames of one read on a TCP connection, or one HTTP request) goes:
 *
 *  1. Prepare (on a pinned registry version; a barrier holds it off): for every item, in order,
 *     validate the row against its event schema in one pass over its fields (first
 *     failure wins: not an object, control character, unknown event, undeclared field,
 *     missing/null required field, type, i64 fraction, key length), then for every
 *     table the event feeds run the table's prefix chain and build the entity key: one
 *     `part` per (item, table), with the shard that owns hash(table, key). All scratch
 *     comes from the batch's arena.
 *  2. Sequence (seq_mu held, once per batch; a batch whose version is no longer the
 *     current one is prepared again on the new one, and a batch that meets a registry
 *     change's gate is deferred whole instead, judged again after it: engine_int.h): per
 *     item, the dedupe check, room on the shards its parts are queued to (else 503
 *     overloaded for that item alone), the WAL
 *     append that gives it its LSN (else 503 wal_unavailable), and the routing of each
 *     part: a shard the batch could take inline (shard_try_inline: idle, empty ring) is
 *     applied by this thread after the lock is dropped; any other gets the part on its
 *     ring. Because every producer goes through seq_mu, every shard sees its parts in
 *     LSN order (shard.h explains why inline application keeps that order).
 *     A costly batch (more than PUSH_COSTLY_UPDATES feature updates) takes at most one
 *     shard inline, the idle one with most of its work, and queues the rest, so that
 *     this thread and the shard threads apply it together (split_costly).
 *     Sync durability: a batch with a sync item (or arriving while others wait) is not
 *     routed at all: it joins the park list, in LSN order, and the durability thread
 *     routes it once its records are on disk (one fsync releases every batch it covers;
 *     it applies them itself on every free shard, release_parked),
 *     so a sync push is applied only once durable, and a failed write voids it with
 *     nothing applied.
 *  3. Apply inline parts, release the shards, unpin the version.
 *  4. Completion: `pending` counts the queued parts plus one guard held by the submitter
 *     (and one park token while parked). Whoever brings it to zero completes the batch:
 *     the submitter (engine_push_submit returns true, no callback) or the shard /
 *     durability thread that finishes last (b->done(b)).
 */
#include "engine_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "chain.h"
#include "evrec.h"

/* Rows of up to this many fields are validated with index arrays on the stack, and the
 * schema positions of that many fields of the previous row are remembered as guesses. */
#define VALIDATE_STACK_FIELDS 64
#define VALIDATE_ORDER_FIELDS 32
/* Group-key row positions remembered per event (over all its tables' keys, in order). */
#define VALIDATE_KEY_SLOTS 16

/* One field of the row shape the batch last validated in full (validate_fast); its
 * schema position is in push_batch_state.shape_pos. */
typedef struct shape_field {
    uint32_t len;                 /* its name's length */
    bool opt;                     /* an optional field (no null/type check) */
} shape_field;

typedef struct push_part {
    push_batch_state *st;
    agg_table *t;                 /* validation side only: a shard reads the `layout` below */
    /* the table as this part was judged (its version's shell): a later version may widen
     * or remove the table meanwhile; this one is freed only once no part is left */
    feature *features;
    size_t *offsets;
    size_t nfeatures, row_size;
    void *stores;
    const bv_row *row;            /* the item's row (the caller's) */
    bv_row chained;               /* chain output; its field array (malloc'd) stays with the
                                   * slot of st->parts for the next part made there */
    bool has_chain;               /* features read `chained`, not `row` (parts move while
                                   * the array grows, so no pointer to it is kept) */
    const char *key;
    size_t klen;
    uint64_t hash;
    unsigned shard;
    bool inline_apply;
    int64_t now, cold_after_ms;
} push_part;

typedef struct item_state {
    const ev_desc *ev;
    size_t first_part, nparts;
    bool valid;                   /* passed validation (res not yet final) */
    bool logged;                  /* has an LSN */
    int64_t now;
    char *dk;                     /* dedupe key (arena), NULL if none */
    size_t dkl;
    uint64_t dh;
    size_t rec_off, rec_len;      /* its WAL record in the batch's rec buffer */
} item_state;

struct push_batch_state {
    engine_batch *b;
    engine *e;
    arena ar;
    push_part *parts;
    size_t nparts, parts_cap;
    item_state *items;            /* arena */
    bool *held;                   /* per shard: taken inline by this batch */
    bool *decided;                /* per shard: inline decision made */
    size_t *queued;               /* per shard: parts queued by this batch */
    size_t *need;                 /* per shard: scratch for one item's room check */
    size_t *shard_cost;           /* per shard: feature updates of this batch's parts */
    size_t cost;                  /* feature updates of the whole batch */
    _Atomic unsigned pending;
    uint64_t max_lsn;
    bool parked;
    push_batch_state *park_next;
    push_batch_state *defer_next; /* on the register gate's deferred list (seq_mu) */
    size_t rejected, too_long;    /* counted by this submission (undone if it is deferred) */
    bv_buf rec;                   /* WAL record scratch */
    registry *reg;                /* the version validated against (pinned, or recovery's) */
    bool apply_filter;            /* cluster apply batch: parts pass log.keep_part */
    const ev_desc *last_ev;       /* find_event_cached */
    size_t last_ev_len;
    agg_table *const *last_tables;    /* the tables last_ev feeds */
    size_t last_nt;
    const ev_desc *order_ev;      /* the event of the last row validated, and the schema */
    int32_t order[VALIDATE_ORDER_FIELDS];  /* position of each of that row's fields (-1: none) */
    uint32_t order_len[VALIDATE_ORDER_FIELDS];   /* and the length of its schema name */
    /* the shape memo: the last row of shape_ev that passed the full check had shape_n
     * distinct schema fields, the i-th at schema position shape_pos[i] (also the WAL
     * record's field refs, evrec_pos) described by shape[i]; a row naming the same fields
     * at the same positions has the same fields present, so only its values need checking */
    const ev_desc *shape_ev;      /* NULL: none (reset with the batch: st->reg is pinned) */
    size_t shape_n;
    shape_field shape[VALIDATE_ORDER_FIELDS];
    int32_t shape_pos[VALIDATE_ORDER_FIELDS];
    const bv_row *shape_row;      /* the row last validated, when the memo describes it */
    /* group-key row positions of the row last validated (kpos_row), slot s for the s-th
     * key over the event's tables, -1 = absent; khint: the guesses for the next row */
    const bv_row *kpos_row;
    int32_t kpos[VALIDATE_KEY_SLOTS];
    int32_t khint[VALIDATE_KEY_SLOTS];
};

/* ---- batch lifecycle ------------------------------------------------------------------ */

void engine_batch_init(engine_batch *b) {
    memset(b, 0, sizeof *b);
}

void engine_batch_free(engine_batch *b) {
    push_batch_state *st = b->priv;
    if (!st) return;
    for (size_t i = 0; i < st->parts_cap; i++) free(st->parts[i].chained.fields);
    free(st->parts);
    arena_free(&st->ar);
    bv_buf_free(&st->rec);
    free(st);
    b->priv = NULL;
}

static push_batch_state *state_for(engine *e, engine_batch *b) {
    push_batch_state *st = b->priv;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st) abort();
        arena_init(&st->ar);
        bv_buf_init(&st->rec);
        b->priv = st;
    }
    st->nparts = 0;               /* each slot keeps its chain row's array (part_new) */
    arena_reset(&st->ar);
    st->b = b;
    st->e = e;
    st->items = arena_calloc(&st->ar, (b->n ? b->n : 1) * sizeof *st->items);
    size_t ns = e->nshards;
    st->held = arena_calloc(&st->ar, ns * sizeof *st->held);
    st->decided = arena_calloc(&st->ar, ns * sizeof *st->decided);
    st->queued = arena_calloc(&st->ar, ns * sizeof *st->queued);
    st->need = arena_calloc(&st->ar, ns * sizeof *st->need);
    st->shard_cost = arena_calloc(&st->ar, ns * sizeof *st->shard_cost);
    st->cost = 0;
    atomic_store(&st->pending, 1);              /* the submitter's guard */
    st->max_lsn = 0;
    st->parked = false;
    st->park_next = NULL;
    st->defer_next = NULL;
    st->rejected = st->too_long = 0;
    st->last_ev = NULL;
    st->order_ev = NULL;
    st->shape_ev = NULL;
    st->kpos_row = NULL;
    return st;
}

static push_part *part_new(push_batch_state *st) {
    if (st->nparts == st->parts_cap) {
        size_t cap = st->parts_cap ? st->parts_cap * 2 : 64;
        push_part *p = realloc(st->parts, cap * sizeof *p);
        if (!p) abort();
        memset(p + st->parts_cap, 0, (cap - st->parts_cap) * sizeof *p);
        st->parts = p;
        st->parts_cap = cap;
    }
    /* a slot keeps the field array of the chain row made there before: a part with a
     * prefix chain reuses it (chain_apply grows it when needed), no allocation per part */
    push_part *p = &st->parts[st->nparts++];
    bv_row keep = { p->chained.fields, 0, p->chained.cap };
    memset(p, 0, sizeof *p);
    p->chained = keep;
    p->st = st;
    return p;
}

/* ---- validation (the reference's push checks, in order) ------------------------------- */

static void push_fail(push_result *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void push_fail(push_result *res, int status, const char *code, const char *fmt, ...) {
    res->status = status;
    snprintf(res->code, sizeof res->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
}

static const char *value_kind_name(const bv_value *v) {
    switch (v->kind) {
    case BV_NULL: return "null";
    case BV_BOOL: return "boolean";
    case BV_I64: return "integer";
    case BV_F64: return "number";
    case BV_STR: return "string";
    case BV_JSON: return json_is_array(v->u.j) ? "array" : "object";
    }
    return "?";
}

static bool type_compatible(bv_wtype t, const bv_value *v) {
    switch (t) {
    case WT_I64:
    case WT_F64: return v->kind == BV_I64 || v->kind == BV_F64;
    case WT_STR: return v->kind == BV_STR;
    case WT_BOOL: return v->kind == BV_BOOL;
    default: return v->kind != BV_NULL;
    }
}

/* (name, len) against NUL-terminated names; the first byte is compared inline so that
 * most mismatches cost one comparison (a wide event compares fields with many names). */
static bool name_eq(const char *cname, const char *name, size_t len) {
    if (len == 0 || cname[0] != name[0]) return false;
    for (size_t i = 1; i < len; i++)          /* field names are short: no call */
        if (cname[i] != name[i] || cname[i] == 0) return false;
    return cname[len] == 0;
}

static bool name_in(char *const *names, size_t n, const char *name, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (name_eq(names[i], name, len)) return true;
    return false;
}

/* An integral double within i64 range (3.0; not 1.5, not 1e300). */
static bool integral_f64(double d) {
    return d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d;
}

/* The event named (name, len), remembering the last one found: a batch (or a stretch of
 * the WAL) is nearly always one event type. Valid while st->reg is pinned (the cache is
 * reset with the batch state). */
static const ev_desc *find_event_cached(engine *e, push_batch_state *st, const char *name, size_t len) {
    (void)e;
    if (st->last_ev && st->last_ev_len == len && bv_short_name_eq(st->last_ev->name, name, len)) return st->last_ev;
    char buf[REGISTRY_NAME_MAX + 1];
    if (len > REGISTRY_NAME_MAX) return NULL;
    memcpy(buf, name, len);
    buf[len] = 0;
    const ev_desc *ev = registry_event(st->reg, buf);
    if (ev) {
        st->last_ev = ev;
        st->last_ev_len = len;
        st->last_nt = registry_tables_for_event(st->reg, ev->name, &st->last_tables);
    }
    return ev;
}

/* The tables `ev` feeds (ev came from find_event_cached on this batch state). */
static size_t event_tables(engine *e, push_batch_state *st, const ev_desc *ev, agg_table *const **out) {
    if (ev == st->last_ev) {
        *out = st->last_tables;
        return st->last_nt;
    }
    (void)e;
    return registry_tables_for_event(st->reg, ev->name, out);
}

/* The schema position of the i-th field of a row of `ev`, named (name, len), or -1. The
 * rows of one event nearly always list their fields in one order, so the position the
 * i-th field of the previous row had is tried first. */
static long schema_index(push_batch_state *st, const ev_desc *ev, size_t i, const char *name, size_t len) {
    const bv_schema *sc = &ev->schema;
    if (i < VALIDATE_ORDER_FIELDS) {
        int32_t g = st->order[i];
        if (g >= 0 && st->order_len[i] == len && bv_short_name_eq(sc->names[g], name, len)) return g;
    }
    long j = -1;
    for (size_t k = 0; k < sc->n; k++)
        if (name_eq(sc->names[k], name, len)) {
            j = (long)k;
            break;
        }
    if (i < VALIDATE_ORDER_FIELDS) {
        st->order[i] = (int32_t)j;
        st->order_len[i] = (uint32_t)len;
    }
    return j;
}

/* The row position of key field `name` (its first occurrence), or -1. `guess` is tried
 * first; it is taken only when the row's names are all distinct (`unique`), where a
 * field named `name` at the guessed position is the only one. */
static int32_t key_pos(const bv_row *r, const char *name, int32_t guess, bool unique) {
    if (unique && guess >= 0 && (size_t)guess < r->n &&
        name_eq(name, r->fields[guess].name, r->fields[guess].name_len))
        return guess;
    for (size_t i = 0; i < r->n; i++)
        if (name_eq(name, r->fields[i].name, r->fields[i].name_len)) return (int32_t)i;
    return -1;
}

/* The value checks of a row whose field names match the shape memo of `ev` position by
 * position (so its fields are distinct and every required one is present): non-null and
 * typed required fields, integral i64s, which are then stored as i64. Returns false,
 * changing nothing, when the row does not match or a check fails: validate_full then
 * finds the error. */
static bool validate_fast(push_batch_state *st, const ev_desc *ev, bv_row *row) {
    if (st->shape_ev != ev || row->n != st->shape_n) return false;
    const bv_schema *sc = &ev->schema;
    uint32_t to_i64 = 0;          /* shape_n <= VALIDATE_ORDER_FIELDS bits */
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        const shape_field *m = &st->shape[i];
        int32_t g = st->shape_pos[i];
        if (f->name_len != m->len || !bv_short_name_eq(sc->names[g], f->name, m->len)) return false;
        bv_wtype t = sc->types[g];
        const bv_value *v = &f->value;
        if (!m->opt && (v->kind == BV_NULL || !type_compatible(t, v))) return false;
        if (v->kind == BV_F64 && t == WT_I64) {
            if (!integral_f64(v->u.f)) return false;
            to_i64 |= 1u << i;
        }
    }
    for (; to_i64; to_i64 &= to_i64 - 1) {
        bv_value *v = &row->fields[__builtin_ctz(to_i64)].value;
        *v = bv_i64((int64_t)v->u.f);
    }
    st->shape_row = row;
    return true;
}

/* The reference's field checks of item `it`'s row against `ev`, in order (the first
 * failure answers). On success, *unique says whether the row's field names are all
 * distinct, and a row of distinct schema fields becomes the shape memo. */
static bool validate_full(push_batch_state *st, const ev_desc *ev, bv_row *row, push_result *res, bool *unique) {
    /* one pass over the row: each field's schema position (unknown fields fail here,
     * first in row order), and each schema field's first occurrence in the row */
    const bv_schema *sc = &ev->schema;
    int32_t pos_stack[VALIDATE_STACK_FIELDS], fidx_stack[VALIDATE_STACK_FIELDS];
    int32_t *pos = sc->n <= VALIDATE_STACK_FIELDS ? pos_stack : arena_alloc(&st->ar, sc->n * sizeof *pos);
    int32_t *fidx = row->n <= VALIDATE_STACK_FIELDS ? fidx_stack : arena_alloc(&st->ar, row->n * sizeof *fidx);
    for (size_t j = 0; j < sc->n; j++) pos[j] = -1;
    if (st->order_ev != ev) {
        st->order_ev = ev;
        for (size_t i = 0; i < VALIDATE_ORDER_FIELDS; i++) st->order[i] = -1;
    }
    bool distinct = true;         /* every field a schema field, none twice */
    for (size_t i = 0; i < row->n; i++) {
        const bv_field *f = &row->fields[i];
        long j = schema_index(st, ev, i, f->name, f->name_len);
        fidx[i] = (int32_t)j;
        if (j < 0) {
            distinct = false;
            if (name_in(sc->optional, sc->nopt, f->name, f->name_len)) continue;
            bool et = (f->name_len == 10 && memcmp(f->name, "event_time", 10) == 0) ||
                      (f->name_len == 13 && memcmp(f->name, "event_time_ms", 13) == 0);
            push_fail(res, 400, et ? "unknown_field_event_time_v0" : "unknown_field_v0",
                      "field '%.*s' is not declared by event '%s'", (int)(f->name_len > 64 ? 64 : f->name_len),
                      f->name, ev->name);
            return false;
        }
        if (pos[j] < 0) pos[j] = (int32_t)i;
        else distinct = false;
    }
    /* required fields present and non-null, types, in schema order */
    for (size_t j = 0; j < sc->n; j++) {
        const char *fname = sc->names[j];
        if (sc->nopt && bv_schema_is_optional(sc, fname)) continue;
        const bv_value *fv = pos[j] >= 0 ? &row->fields[pos[j]].value : NULL;
        if (!fv || fv->kind == BV_NULL) {
            push_fail(res, 400, "invalid_event", "required field '%.64s' of event '%s' is missing or null", fname,
                      ev->name);
            return false;
        }
        if (!type_compatible(sc->types[j], fv)) {
            push_fail(res, 400, "invalid_event", "field '%.64s' of event '%s' must be %s, got %s", fname, ev->name,
                      bv_wtype_name(sc->types[j]), value_kind_name(fv));
            return false;
        }
    }
    /* i64 fields keep their type: 3.0 is stored as 3; a fraction (in a required or an
     * optional i64 field) is refused (README "Wire protocol") */
    for (size_t i = 0; i < row->n; i++) {
        bv_field *f = &row->fields[i];
        if (f->value.kind != BV_F64 || fidx[i] < 0 || sc->types[fidx[i]] != WT_I64) continue;
        if (!integral_f64(f->value.u.f)) {
            push_fail(res, 400, "invalid_event", "field '%.*s' of event '%s' must be i64 (an integer), got %.17g",
                      (int)(f->name_len > 64 ? 64 : f->name_len), f->name, ev->name, f->value.u.f);
            return false;
        }
        f->value = bv_i64((int64_t)f->value.u.f);
    }
    if (distinct && row->n <= VALIDATE_ORDER_FIELDS) {
        st->shape_ev = ev;
        st->shape_n = row->n;
        st->shape_row = row;
        for (size_t i = 0; i < row->n; i++) {
            shape_field *m = &st->shape[i];
            st->shape_pos[i] = fidx[i];
            m->len = (uint32_t)row->fields[i].name_len;
            m->opt = sc->nopt && bv_schema_is_optional(sc, sc->names[fidx[i]]);
        }
    }
    *unique = distinct;
    return true;
}

/* Validate item `it` against st->reg. Returns its event or NULL (res says why). On
 * success st->kpos holds the row's group-key positions (build_parts reads them). */
static const ev_desc *validate(engine *e, push_batch_state *st, const engine_push_item *it, push_result *res) {
    st->kpos_row = NULL;
    st->shape_row = NULL;
    if (!it->event) {
        push_fail(res, 400, "unsupported", "not a push envelope");
        return NULL;
    }
    if (!it->data_is_object) {
        push_fail(res, 400, "invalid_event", "event data must be a JSON object, got %s",
                  it->data_kind ? it->data_kind : "?");
        return NULL;
    }
    if (it->has_control_char) {
        push_fail(res, 400, "control_character_in_string",
                  "a control character appears in the event name, a field name or a string value");
        return NULL;
    }
    const ev_desc *ev = st->last_ev;              /* find_event_cached's hit, inline */
    if (!ev || st->last_ev_len != it->event_len || !bv_short_name_eq(ev->name, it->event, it->event_len))
        ev = find_event_cached(e, st, it->event, it->event_len);
    if (!ev) {
        push_fail(res, 404, "event_not_found", "event '%.*s' is not registered",
                  (int)(it->event_len > 128 ? 128 : it->event_len), it->event);
        return NULL;
    }
    bv_row *row = it->row;
    bool unique = true;
    if (!validate_fast(st, ev, row) && !validate_full(st, ev, row, res, &unique)) return NULL;
    /* cap on entity keys read straight from the pushed row */
    agg_table *const *tables;
    size_t nt = event_tables(e, st, ev, &tables);
    size_t s = 0;
    for (size_t t = 0; t < nt; t++)
        for (size_t k = 0; k < tables[t]->nkeys; k++, s++) {
            int32_t p = key_pos(row, tables[t]->keys[k], s < VALIDATE_KEY_SLOTS ? st->khint[s] : -1, unique);
            if (s < VALIDATE_KEY_SLOTS) st->kpos[s] = st->khint[s] = p;
            const bv_value *kv = p >= 0 ? &row->fields[p].value : NULL;
            if (kv && kv->kind == BV_STR && kv->u.s.len > STORE_MAX_KEY) {
                push_fail(res, 400, "invalid_event", "key field '%.64s' is %zu bytes long (max %d)",
                          tables[t]->keys[k], kv->u.s.len, STORE_MAX_KEY);
                return NULL;
            }
        }
    st->kpos_row = row;
    return ev;
}

/* Build the entity key of `t` from row r into buf. `kpos`: the row positions of t's keys
 * (validate's), or NULL to look them up by name. Returns length or -1 (skip). */
static int build_key(const agg_table *t, const bv_row *r, const int32_t *kpos, char *buf, size_t cap) {
    size_t len = 0;
    for (size_t i = 0; i < t->nkeys; i++) {
        const bv_value *v = kpos ? (kpos[i] >= 0 ? &r->fields[kpos[i]].value : NULL) : bv_row_field_at(r, t->keys[i], strlen(t->keys[i]), -1);
        if (!v) return -1;
        if (i > 0) {
            if (len + 1 >= cap) return -1;
            buf[len++] = STORE_KEY_SEP;
        }
        int n = bv_key_text(v, buf + len, cap - len);
        if (n < 0) return -1;
        len += (size_t)n;
    }
    return (int)len;
}

/* One part per table fed by the event: chain, key, shard (st->reg pinned). */
static void build_parts(engine *e, push_batch_state *st, item_state *is, const bv_row *row, int64_t now) {
    agg_table *const *tables;
    size_t nt = event_tables(e, st, is->ev, &tables);
    is->first_part = st->nparts;
    char key[STORE_MAX_KEY + 64];
    size_t slot = 0;              /* validate's st->kpos slot of t's first key */
    for (size_t ti = 0; ti < nt; ti++) {
        agg_table *t = tables[ti];
        const int32_t *kpos = st->kpos_row == row && slot + t->nkeys <= VALIDATE_KEY_SLOTS ? st->kpos + slot : NULL;
        slot += t->nkeys;
        push_part *pp = part_new(st);
        pp->row = row;
        const bv_row *in = row;
        if (!chain_is_empty(t->prefix)) {
            expr_arena *xa = arena_alloc(&st->ar, sizeof *xa);
            expr_arena_reset(xa);
            if (!chain_apply(t->prefix, row, &pp->chained, xa)) {   /* filtered out */
                st->nparts--;
                continue;
            }
            pp->has_chain = true;
            in = &pp->chained;
        }
        int klen = build_key(t, in, in == row ? kpos : NULL, key, sizeof key);
        if (klen < 0 || (size_t)klen > STORE_MAX_KEY) {     /* missing/null key: skipped by design */
            if (klen > 0) {
                atomic_fetch_add_explicit(&e->keys_too_long, 1, memory_order_relaxed);
                st->too_long++;
            }
            st->nparts--;
            continue;
        }
        if (st->apply_filter && !e->opt.log.keep_part(e->opt.log.ctx, t->name, key, (size_t)klen)) {
            st->nparts--;                     /* cluster apply: another partition's part */
            continue;
        }
        pp->t = t;
        pp->features = t->features;
        pp->offsets = t->offsets;
        pp->nfeatures = t->nfeatures;
        pp->row_size = t->row_size;
        pp->stores = t->store;
        pp->key = arena_dup(&st->ar, key, (size_t)klen);
        pp->klen = (size_t)klen;
        pp->hash = store_hash(key, (size_t)klen);
        pp->shard = engine_shard_for(e, t, pp->hash);
        pp->now = now;
        pp->cold_after_ms = is->ev->cold_after_ms;
        st->shard_cost[pp->shard] += t->nfeatures;
        st->cost += t->nfeatures;
    }
    is->nparts = st->nparts - is->first_part;
}

/* ---- applying a part ------------------------------------------------------------------ */

/* One table's update for one event, with the owning shard's state lock held. The table
 * is read as the part captured it: a row a reader already widened past it (a change
 * applied after this part was sequenced) keeps its newer slots, fresh, since no later
 * part of this shard has run yet. */
static void apply_part(shard_ctx *ctx, void *arg) {
    push_part *pp = arg;
    agg_table view = { .features = pp->features, .offsets = pp->offsets, .nfeatures = pp->nfeatures,
                       .row_size = pp->row_size, .store = pp->stores };
    agg_table *t = &view;
    entity_store *s = table_store(t, pp->shard);
    entity *en = store_find(s, pp->key, pp->klen, pp->hash);
    if (en && pp->cold_after_ms > 0 && en->last_seen_ms > 0 && pp->now - en->last_seen_ms > pp->cold_after_ms) {
        uint32_t had = en->nfeat;
        entity_destroy_states(t, en);
        en = entity_ensure(t, s, en);     /* full size before reinitialising */
        memset(entity_row(en), 0, t->row_size);
        entity_init_states(t, en, 0);
        if (had > en->nfeat) en->nfeat = had;   /* newer slots: untouched, still fresh */
        ctx->stats.cold_evictions++;
    }
    if (!en) {
        en = store_insert(s, pp->key, pp->klen, pp->hash, t->row_size);
        if (!en) abort();
        entity_init_states(t, en, 0);
    } else {
        en = entity_ensure(t, s, en);
    }
    char *row = entity_row(en);
    const bv_row *in = pp->has_chain ? &pp->chained : pp->row;
    feature_update_row(t->features, t->offsets, t->nfeatures, row, in, pp->now, &ctx->arena, &ctx->stats);
    if (pp->cold_after_ms > 0) en->last_seen_ms = pp->now;
}

/* Stage 1 of an apply loop's hints: the entity's index slot. */
void push_part_prefetch(void *arg) {
    push_part *pp = arg;
    store_prefetch_slot(&((entity_store *)pp->stores)[pp->shard], pp->hash);
}

/* Stage 2: the entity in the part's home slot (arrived by now). */
void push_part_prefetch_entity(void *arg) {
    const push_part *pp = arg;
    const entity_store *s = &((const entity_store *)pp->stores)[pp->shard];
    const entity *en = store_home_entity(s, pp->hash);
    if (en) store_prefetch_entity(en, pp->klen, pp->row_size);
}

/* Stage 3: what each feature update will probe, read from the entity (arrived by now).
 * Reads only; a row a reader widened past the part keeps its newer slots out (nfeat). */
void push_part_prefetch_states(void *arg) {
    const push_part *pp = arg;
    size_t hinted = 0;            /* most tables have no feature to hint: skip the lookup */
    while (hinted < pp->nfeatures && !pp->features[hinted].hinted) hinted++;
    if (hinted == pp->nfeatures) return;
    const entity_store *s = &((const entity_store *)pp->stores)[pp->shard];
    const entity *en = store_home_entity(s, pp->hash);
    if (!en) return;
    const bv_row *in = pp->has_chain ? &pp->chained : pp->row;
    size_t n = pp->nfeatures < en->nfeat ? pp->nfeatures : en->nfeat;
    feature_prefetch_row(pp->features + hinted, pp->offsets + hinted, n > hinted ? n - hinted : 0,
                         entity_row_const(en), in, pp->now);
}

/* Apply parts run[0..n) in order (their shards' state locks held), with the three stages
 * of hints ahead of them (shard.h's distances). */
static void apply_run(engine *e, push_part *const *run, size_t n) {
    for (size_t i = 0; i < n && i < SHARD_AHEAD_SLOT; i++) push_part_prefetch(run[i]);
    for (size_t i = 0; i < n && i < SHARD_AHEAD_ENTITY; i++) push_part_prefetch_entity(run[i]);
    for (size_t i = 0; i < n && i < SHARD_AHEAD_STATES; i++) push_part_prefetch_states(run[i]);
    for (size_t i = 0; i < n; i++) {
        if (i + SHARD_AHEAD_SLOT < n) push_part_prefetch(run[i + SHARD_AHEAD_SLOT]);
        if (i + SHARD_AHEAD_ENTITY < n) push_part_prefetch_entity(run[i + SHARD_AHEAD_ENTITY]);
        if (i + SHARD_AHEAD_STATES < n) push_part_prefetch_states(run[i + SHARD_AHEAD_STATES]);
        apply_part(shard_inline_ctx(e->pool, run[i]->shard), run[i]);
    }
}

/* Apply the batch's inline parts in order. */
static void apply_inline(engine *e, push_batch_state *st) {
    size_t n = 0;
    push_part **run = arena_alloc(&st->ar, (st->nparts ? st->nparts : 1) * sizeof *run);
    for (size_t i = 0; i < st->b->n; i++) {
        item_state *is = &st->items[i];
        if (!is->logged) continue;
        for (size_t k = 0; k < is->nparts; k++)
            if (st->parts[is->first_part + k].inline_apply) run[n++] = &st->parts[is->first_part + k];
    }
    apply_run(e, run, n);
}

static void batch_release(push_batch_state *st) {
    if (atomic_fetch_sub_explicit(&st->pending, 1, memory_order_acq_rel) == 1) st->b->done(st->b);
}

/* After a queued part is applied (shard thread, no lock held). */
static void part_post(shard_ctx *ctx, void *arg) {
    (void)ctx;
    batch_release(((push_part *)arg)->st);
}

/* Queue every part of st's logged items (the caller is the only producer: seq_mu held,
 * or the durability thread with the park list non-empty). wait_room: block for room
 * (the durability thread) instead of assuming it was checked. */
static void queue_parts(engine *e, push_batch_state *st, bool wait_room) {
    for (size_t i = 0; i < st->b->n; i++) {
        item_state *is = &st->items[i];
        if (!is->logged) continue;
        for (size_t k = 0; k < is->nparts; k++) {
            push_part *pp = &st->parts[is->first_part + k];
            if (pp->inline_apply) continue;
            if (wait_room && !shard_has_room(e->pool, pp->shard, 1)) {
                shard_pool_kick(e->pool);
                shard_wait_room(e->pool, pp->shard, 1);
            }
            atomic_fetch_add_explicit(&st->pending, 1, memory_order_relaxed);
            shard_push(e->pool, pp->shard, apply_part, part_post, pp);
        }
    }
    /* else the submitter helps (shard_help); the durability thread: release_parked */
}

/* ---- sequencing ----------------------------------------------------------------------- */

/* A batch with more feature updates than this is costly: applying it all inline would
 * keep one core busy while the shard threads wait for the state locks it holds. */
#define PUSH_COSTLY_UPDATES 1024

/* Decide the inline shards of a costly batch up front (seq_mu held, before any item is
 * routed): at most ONE, the idle shard that carries most of its work, and every other
 * part goes to its shard's thread. This I/O thread and the shard threads then apply the
 * batch together. The order argument is shard_try_inline's, unchanged: the decision is
 * made under the sequencer lock, once per shard and batch. */
static void split_costly(engine *e, push_batch_state *st) {
    unsigned ns = e->nshards;
    for (;;) {
        unsigned best = ns;
        for (unsigned s = 0; s < ns; s++)
            if (!st->decided[s] && st->shard_cost[s] > 0 && (best == ns || st->shard_cost[s] > st->shard_cost[best]))
                best = s;
        if (best == ns) break;
        st->decided[best] = true;
        if (shard_try_inline(e->pool, best)) {
            st->held[best] = true;
            break;
        }
    }
    for (unsigned s = 0; s < ns; s++) st->decided[s] = true;
}

/* Decide, for one item, where each of its parts goes and whether the queued ones fit
 * (seq_mu held). Takes shards inline on first contact. False: no room (overloaded). */
static bool route_item(engine *e, push_batch_state *st, item_state *is) {
    bool room = true;
    for (size_t k = 0; k < is->nparts; k++) {
        push_part *pp = &st->parts[is->first_part + k];
        unsigned s = pp->shard;
        if (!st->decided[s]) {
            st->decided[s] = true;
            st->held[s] = shard_try_inline(e->pool, s);
        }
        pp->inline_apply = st->held[s];
        if (!pp->inline_apply) st->need[s]++;
    }
    for (size_t k = 0; k < is->nparts; k++) {
        unsigned s = st->parts[is->first_part + k].shard;
        if (st->need[s] && !shard_has_room(e->pool, s, st->queued[s] + st->need[s])) room = false;
    }
    for (size_t k = 0; k < is->nparts; k++) {
        unsigned s = st->parts[is->first_part + k].shard;
        if (room) st->queued[s] += st->need[s];
        st->need[s] = 0;
    }
    return room;
}

static void sequence_item(engine *e, push_batch_state *st, size_t i, bool park, uint64_t version) {
    engine_push_item *it = &st->b->items[i];
    item_state *is = &st->items[i];
    push_result *res = &it->res;
    if (is->dk) {
        entity *d = dedupe_find(e, is->dk, is->dkl, is->dh);
        if (d) {
            dedupe_row *dr = entity_row(d);
            if (dr->expiry_ms > is->now) {
                res->status = 200;
                res->replay = true;
                res->ack_lsn = dr->ack_lsn;
                res->registry_version = dr->registry_version;
                atomic_fetch_add_explicit(&e->events_replayed, 1, memory_order_relaxed);
                return;
            }
            dedupe_forget(e, is->dk, is->dkl, is->dh);
        }
    }
    if (!park && !route_item(e, st, is)) {
        atomic_fetch_add_explicit(&e->overloaded, 1, memory_order_relaxed);
        push_fail(res, 503, "overloaded", "the apply shards are behind; retry shortly (nothing was applied)");
        return;
    }
    uint64_t lsn = 0;
    char reason[200];
    /* the record was encoded during prepare, outside this lock */
    if (engine_log_append(e, REC_EVENT, st->rec.data + is->rec_off, is->rec_len, &lsn, reason, sizeof reason) != 0) {
        /* parts already counted as queued for this item are simply not pushed */
        push_fail(res, 503, "wal_unavailable", "the write-ahead log refused the event, nothing was applied: %s",
                  reason);
        return;
    }
    if (is->dk) dedupe_remember(e, is->dk, is->dkl, is->dh, is->now + is->ev->dedupe_window_ms, lsn, version, is->now);
    is->logged = true;
    st->max_lsn = lsn;
    res->status = 200;
    res->ack_lsn = lsn;
    res->registry_version = version;
    atomic_fetch_add_explicit(&e->events_applied, 1, memory_order_relaxed);
}

/* ---- cluster hand-off ------------------------------------------------------------------ */

/* Cluster mode: the valid items' records and parts go to the log backend instead of the
 * sequencer (version pinned: table names are copied, the version may be freed once it
 * is unpinned). The backend answers them through b->done. */
static void log_hand_off(engine *e, push_batch_state *st) {
    engine_batch *b = st->b;
    engine_log_record *recs = arena_alloc(&st->ar, (b->n ? b->n : 1) * sizeof *recs);
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        item_state *is = &st->items[i];
        if (!is->valid) continue;
        engine_log_part *parts = arena_alloc(&st->ar, (is->nparts ? is->nparts : 1) * sizeof *parts);
        for (size_t k = 0; k < is->nparts; k++) {
            const push_part *pp = &st->parts[is->first_part + k];
            parts[k].table = arena_dup(&st->ar, pp->t->name, strlen(pp->t->name) + 1);
            parts[k].key = pp->key;
            parts[k].klen = pp->klen;
        }
        recs[n++] = (engine_log_record){ .item = i, .payload = st->rec.data + is->rec_off, .len = is->rec_len,
                                         .parts = parts, .nparts = is->nparts };
    }
    e->opt.log.publish(e->opt.log.ctx, b, recs, n);
}

/* ---- the register gate (engine_int.h) --------------------------------------------------- */

/* Hold a whole batch until the registry change in progress is applied (seq_mu held). */
static void defer_batch(engine *e, push_batch_state *st) {
    st->defer_next = NULL;
    if (e->defer_tail) e->defer_tail->defer_next = st;
    else e->defer_head = st;
    e->defer_tail = st;
}

void push_drain_applied(engine *e) {
    pthread_mutex_lock(&e->seq_mu);
    while (e->park_head) pthread_cond_wait(&e->park_cv, &e->seq_mu);   /* durability thread drains it */
    pthread_mutex_unlock(&e->seq_mu);
    shard_pool_quiesce(e->pool);
}

push_batch_state *push_gate_lower(engine *e, regver *h, registry *next) {
    pthread_mutex_lock(&e->seq_mu);
    if (next) engine_publish_locked(e, h, next);
    push_batch_state *list = e->defer_head;
    e->defer_head = e->defer_tail = NULL;
    e->reg_gated = false;
    atomic_store_explicit(&e->reg_gate_hint, false, memory_order_relaxed);
    pthread_mutex_unlock(&e->seq_mu);
    return list;
}

/* Each deferred batch runs again from validation, in arrival order; its submitter was
 * told "later", so a batch completed here is answered through its done callback. */
void push_resubmit(engine *e, push_batch_state *list) {
    while (list) {
        push_batch_state *next = list->defer_next;
        engine_batch *b = list->b;
        if (engine_push_submit(e, b)) b->done(b);
        list = next;
    }
}

/* ---- submit --------------------------------------------------------------------------- */

static void note_watermark(engine *e, int64_t now) {
    int64_t w = atomic_load_explicit(&e->watermark_ms, memory_order_relaxed);
    while (now > w && !atomic_compare_exchange_weak(&e->watermark_ms, &w, now)) {}
}

/* Does an item name an event the registry does not have (cluster: catch up first)? */
static bool names_unknown_event(engine *e, push_batch_state *st, const engine_batch *b) {
    bool unknown = false;
    regver *pin;
    st->reg = engine_pin(e, &pin);
    for (size_t i = 0; i < b->n && !unknown; i++) {
        const engine_push_item *it = &b->items[i];
        unknown = it->event && it->event_len > 0 && !find_event_cached(e, st, it->event, it->event_len);
    }
    st->last_ev = NULL;                           /* the cache lives under one pin */
    st->reg = NULL;
    engine_unpin(e, pin);
    return unknown;
}

static bool push_submit(engine *e, engine_batch *b, bool may_catch_up);

bool engine_push_submit(engine *e, engine_batch *b) {
    return push_submit(e, b, true);
}

void engine_push_resume(engine *e, engine_batch *b) {
    if (push_submit(e, b, false)) b->done(b);
}

static bool push_submit(engine *e, engine_batch *b, bool may_catch_up) {
    push_batch_state *st = state_for(e, b);
    int64_t now = engine_wall_ms();
    bool any_valid = false, any_sync = false;

    /* registered on another node a moment ago? The backend catches up off this thread
     * and resumes the batch (engine_push_resume), or here, bounded */
    if (may_catch_up && (e->opt.log.registry_catch_up_push || e->opt.log.registry_catch_up) &&
        names_unknown_event(e, st, b)) {
        if (e->opt.log.registry_catch_up_push) {
            e->opt.log.registry_catch_up_push(e->opt.log.ctx, b);
            return false;
        }
        e->opt.log.registry_catch_up(e->opt.log.ctx);
    }

again:
    /* a registry change is between its record and its apply: wait for it, unvalidated
     * (the hint is rechecked under seq_mu; a missed hint is caught at the sequencer) */
    if (atomic_load_explicit(&e->reg_gate_hint, memory_order_relaxed)) {
        pthread_mutex_lock(&e->seq_mu);
        bool gated = e->reg_gated;
        if (gated) defer_batch(e, st);
        pthread_mutex_unlock(&e->seq_mu);
        if (gated) return false;
    }

    regver *pin;
    st->reg = engine_pin(e, &pin);
    if (engine_barrier_wait(e, pin)) goto again;  /* reset, snapshot: after it */
    uint64_t version = registry_version(st->reg);
    st->rec.len = 0;
    for (size_t i = 0; i < b->n; i++) {
        engine_push_item *it = &b->items[i];
        item_state *is = &st->items[i];
        memset(&it->res, 0, sizeof it->res);
        it->res.current_version = version;
        is->ev = validate(e, st, it, &it->res);
        if (!is->ev) {
            if (it->event) {
                atomic_fetch_add_explicit(&e->events_rejected, 1, memory_order_relaxed);
                st->rejected++;
            }
            continue;
        }
        is->valid = true;
        is->now = now;
        char dk[STORE_MAX_KEY + REGISTRY_NAME_MAX + 8];
        int dkl = dedupe_key(is->ev, it->row, dk, sizeof dk);
        if (dkl >= 0) {
            is->dk = arena_dup(&st->ar, dk, (size_t)dkl);
            is->dkl = (size_t)dkl;
            is->dh = store_hash(dk, (size_t)dkl);
        }
        build_parts(e, st, is, it->row, now);
        if (e->opt.wal.append) {          /* encode the WAL record here, outside the sequencer */
            is->rec_off = st->rec.len;
            /* fields by schema position when the shape memo describes the row (distinct
             * schema fields) and the log's readers all read that form, else by name */
            evrec_pos pos = { is->ev->prefix_fp[is->ev->schema.n], (uint32_t)is->ev->schema.n, st->shape_pos };
            bool by_pos = st->shape_row == it->row && !e->opt.log.records_by_name;
            evrec_encode(now, is->ev->name, strlen(is->ev->name), it->row, by_pos ? &pos : NULL, &st->rec);
            is->rec_len = st->rec.len - is->rec_off;
        }
        any_valid = true;
        any_sync |= it->sync;
    }
    if (any_valid && e->opt.log.publish) {        /* cluster: the log's owners apply it */
        note_watermark(e, now);
        log_hand_off(e, st);
        engine_unpin(e, pin);
        return false;
    }
    if (any_valid) {
        pthread_mutex_lock(&e->seq_mu);
        bool gated = e->reg_gated;
        if (gated || atomic_load_explicit(&e->cur, memory_order_relaxed) != pin) {
            /* judged on a version that is (or is about to be) replaced: judge it again
             * after the change (gated) or now, on the new version */
            if (gated) defer_batch(e, st);
            pthread_mutex_unlock(&e->seq_mu);
            atomic_fetch_sub_explicit(&e->events_rejected, st->rejected, memory_order_relaxed);
            atomic_fetch_sub_explicit(&e->keys_too_long, st->too_long, memory_order_relaxed);
            engine_unpin(e, pin);
            if (gated) return false;
            st = state_for(e, b);
            any_valid = any_sync = false;
            goto again;
        }
        note_watermark(e, now);
        bool park = e->park_head != NULL || (any_sync && e->opt.wal.append);
        if (!park && st->cost > PUSH_COSTLY_UPDATES && e->nshards > 1) split_costly(e, st);
        for (size_t i = 0; i < b->n; i++)
            if (st->items[i].valid) sequence_item(e, st, i, park, version);
        if (park && st->max_lsn) {
            st->parked = true;
            atomic_fetch_add_explicit(&st->pending, 1, memory_order_relaxed);   /* the park token */
            if (e->park_tail) e->park_tail->park_next = st;
            else e->park_head = st;
            e->park_tail = st;
            pthread_cond_broadcast(&e->park_cv);
        } else if (!park) {
            queue_parts(e, st, false);
        }
        pthread_mutex_unlock(&e->seq_mu);
        /* inline parts, in item order, on the shards this batch holds */
        if (!st->parked) apply_inline(e, st);
        for (unsigned s = 0; s < e->nshards; s++)
            /* a cheap batch also applies what queued behind it (no wake-up of the shard
             * thread); a costly one leaves that to the thread (the point of splitting it) */
            if (st->held[s]) shard_inline_end(e->pool, s, st->cost > PUSH_COSTLY_UPDATES ? 0 : SHARD_INLINE_TAKE);
        /* parts queued on shards held by nobody now: applied here unless costly (shard.h) */
        for (unsigned s = 0; s < e->nshards && !st->parked; s++)
            if (st->queued[s] && !st->held[s]) shard_help(e->pool, s, st->cost > PUSH_COSTLY_UPDATES ? 0 : SHARD_INLINE_TAKE);
    }
    engine_unpin(e, pin);
    return atomic_fetch_sub_explicit(&st->pending, 1, memory_order_acq_rel) == 1;
}

/* ---- durability: the park list ---------------------------------------------------------- */

/* A released batch with at most this many feature updates (one request's events) is
 * applied by the durability thread itself; a larger one goes to the shard threads, which
 * apply it in parallel while this thread releases the next. */
#define PUSH_RELEASE_HELP_UPDATES 64

/* Queue the parts of a parked batch whose records are durable (the durability thread, the
 * only producer while the park list is non-empty). A small batch (a single request's
 * event) is then applied on this thread on every shard that is free (shard_help; a busy
 * shard's thread is woken and takes it): one group commit's requests complete and answer
 * their clients here, without a wake-up of each shard thread and the hand-back from it.
 * A larger one only wakes the threads. */
static void release_parked(engine *e, push_batch_state *st) {
    queue_parts(e, st, true);
    size_t take = st->cost > PUSH_RELEASE_HELP_UPDATES ? 0 : SHARD_INLINE_TAKE;
    unsigned last = e->nshards;
    for (size_t i = 0; i < st->b->n; i++) {
        const item_state *is = &st->items[i];
        if (!is->logged) continue;
        for (size_t k = 0; k < is->nparts; k++) {
            const push_part *pp = &st->parts[is->first_part + k];
            if (pp->shard == last) continue;
            last = pp->shard;
            shard_help(e->pool, pp->shard, take);
        }
    }
}

/* Route the head of the park list once its records are durable (or void it). Runs on
 * the durability thread; while the head is here the park list is non-empty, so no
 * submitter queues anything: this thread is the only producer. */
static void *durable_main(void *arg) {
    engine *e = arg;
    pthread_mutex_lock(&e->seq_mu);
    for (;;) {
        while (!e->stopping && !e->park_head) pthread_cond_wait(&e->park_cv, &e->seq_mu);
        if (!e->park_head) break;                                  /* stopping, drained */
        push_batch_state *st = e->park_head;
        pthread_mutex_unlock(&e->seq_mu);
        char reason[200] = "";
        int rc = engine_log_wait(e, st->max_lsn, reason, sizeof reason);
        if (rc == 0) {
            release_parked(e, st);
        } else {
            /* Its first records may have gone out in the WAL write before the one that
             * failed (the writer takes what is pending while a batch is being sequenced):
             * those are on disk and replay applies them, so they are applied here too.
             * LSNs rise with the item index, and a failed write voids its records and
             * every later one, so the durable items are a prefix: find where it ends. */
            size_t first_void = 0;
            for (; first_void < st->b->n; first_void++) {
                if (!st->items[first_void].logged) continue;
                char ignored[8];
                if (e->opt.wal.wait(e->opt.wal.ctx, st->b->items[first_void].res.ack_lsn, ignored, sizeof ignored) != 0)
                    break;
            }
            bool kept = false;
            for (size_t i = 0; i < first_void; i++) kept |= st->items[i].logged;
            pthread_mutex_lock(&e->seq_mu);
            for (size_t i = first_void; i < st->b->n; i++) {
                item_state *is = &st->items[i];
                if (!is->logged) continue;
                is->logged = false;
                if (is->dk) dedupe_forget(e, is->dk, is->dkl, is->dh);
                push_result *res = &st->b->items[i].res;
                uint64_t cv = res->current_version;
                memset(res, 0, sizeof *res);
                res->current_version = cv;
                push_fail(res, 503, "wal_unavailable", "the event could not be made durable, nothing was applied: %s",
                          reason);
                atomic_fetch_sub_explicit(&e->events_applied, 1, memory_order_relaxed);
            }
            pthread_mutex_unlock(&e->seq_mu);
            if (kept) release_parked(e, st);
        }
        pthread_mutex_lock(&e->seq_mu);
        e->park_head = st->park_next;
        if (!e->park_head) e->park_tail = NULL;
        pthread_cond_broadcast(&e->park_cv);                       /* a barrier may wait for the list to empty */
        pthread_mutex_unlock(&e->seq_mu);
        batch_release(st);                                         /* the park token */
        pthread_mutex_lock(&e->seq_mu);
    }
    pthread_mutex_unlock(&e->seq_mu);
    return NULL;
}

int push_durability_start(engine *e) {
    if (e->durable_running) return 0;
    if (pthread_create(&e->durable_thread, NULL, durable_main, e) != 0) return -1;
    e->durable_running = true;
    return 0;
}

void push_durability_stop(engine *e) {
    if (!e->durable_running) return;
    pthread_mutex_lock(&e->seq_mu);
    e->stopping = true;
    pthread_cond_broadcast(&e->park_cv);
    pthread_mutex_unlock(&e->seq_mu);
    pthread_join(e->durable_thread, NULL);
    e->durable_running = false;
}

/* ---- replay ------------------------------------------------------------------------------ */

/*
 * RECOVERY'S PIPELINE. Replay re-applies logged events with the same validation and
 * parts as a live push, at their original arrival times. Recovery runs before the shard
 * threads start and owns the stores; it spreads the work over the machine's cores.
 *
 * The READER (the thread that calls engine_replay: persist.c's WAL scan, which reads and
 * CRC-checks each record) copies each event record's payload into the GROUP being filled
 * (up to REPLAY_BATCH_MAX records); the first record of a group pins the current
 * registry version for it. A full group is HANDED OFF to a ring of REPLAY_GROUPS groups
 * and the reader goes on with the next. A handed-off group is cut into TASKS, run by
 * whichever thread is free (the applier threads, and the reader whenever it would
 * otherwise wait for a free slot or a flush), so no thread sleeps while there is work,
 * and a thread the scheduler preempts holds up only what depends on it:
 *
 *  - PREPARE(g, c): decode, validate (on g's pinned version) and turn into parts the
 *    records of chunk c (REPLAY_CHUNK records), into the chunk's own batch state: the
 *    same validate and build_parts as a live push. Chunks are independent.
 *  - APPLY(g, s): once every chunk of g is prepared, and set s of group g - 1 is applied,
 *    apply in record order (= LSN order) the parts that go to the shards of SET s (the
 *    shards with index % sets == s), under those shards' state locks. So each shard
 *    applies its parts in LSN order, the only order the state depends on (an entity lives
 *    on one shard), and no two threads touch one store or shard context at once. The
 *    loop looks three distances ahead: the index slot, then the entity the slot names
 *    (the slot has arrived), then what its feature updates will probe (the entity has
 *    arrived), so dependent cache and TLB misses overlap with the work before them.
 *
 * Applying comes before preparing, oldest group first. The thread that applies a group's
 * last set releases it (decoded records, its version pin, the counters); groups
 * complete in hand-off order. The reader REPORTS each completed group, in LSN order,
 * before it reuses its slot: records that did not decode or validate go to the error
 * sink (engine_replay_on_error: persist.c logs and counts them, as it did when
 * engine_replay returned them), and the dedupe cache learns the group's keys (only the
 * reader touches it during recovery).
 *
 * ORDER-SENSITIVE RECORDS are barriers: a registry or reset record enters
 * engine_barrier_enter, which calls push_replay_flush first: the group being filled is
 * handed off and the reader runs tasks and waits until every group is applied and
 * reported; only then does the record apply, alone, and later groups pin the version it
 * published. A snapshot, the end of the WAL (engine_replay_finish) and the start of the
 * shards flush the same way, and push_replay_done stops and joins the appliers, so
 * nothing of recovery runs once the shard threads start. Without applier threads (none
 * could be started, or cluster apply: engine_apply_logged, beside live traffic, under
 * apply_mu, its errors returned to its caller) each record is prepared as it arrives and
 * each group applied at hand-off, on the calling thread.
 *
 * Why so: measured on the 2-core machine, preparing costs most of replay's instructions
 * (~1,500 a record: decode, validate, key, hash) and applying most of its stalls (the
 * index slot and the entity miss the cache and the TLB); a split by record for the first
 * and by shard for the second keeps both cores busy with either.
 */

#define REPLAY_WORKERS_MAX 2      /* applier threads besides the reader */
#define REPLAY_SETS_MAX 2         /* apply tasks per group (shard sets) */
#define REPLAY_BATCH_MAX 512      /* event records per group (one hand-off) */
#define REPLAY_CHUNK 128          /* records per prepare task */
#define REPLAY_CHUNKS (REPLAY_BATCH_MAX / REPLAY_CHUNK)
#define REPLAY_GROUPS 6           /* groups filling, queued, prepared or being applied */
#define REPLAY_REASON_MAX 320     /* a replay error's text */

/* One chunk's preparation. */
typedef struct replay_prep {
    engine_batch batch;           /* its state holds the parts, keys and chain outputs */
    arena arena;                  /* decoded rows, dedupe keys, error texts */
    size_t applied;               /* records valid (events_applied at completion) */
    int64_t max_now;              /* their latest arrival time (the watermark) */
    bool any_dedupe;              /* one of them has a dedupe key */
} replay_prep;

typedef struct replay_group {
    item_state *istates;          /* REPLAY_BATCH_MAX (not zeroed per group) */
    engine_push_item *items;      /* REPLAY_BATCH_MAX */
    uint64_t *lsns;               /* REPLAY_BATCH_MAX */
    evrec *recs;                  /* REPLAY_BATCH_MAX decoded records */
    const void **payloads;        /* REPLAY_BATCH_MAX copies, in `arena` */
    size_t *lens;
    char **errors;                /* REPLAY_BATCH_MAX: NULL, or why record k was not applied */
    arena arena;                  /* the payload copies (the reader's) */
    size_t n;                     /* records gathered */
    registry *reg;                /* the version they are validated on... */
    regver *pin;                  /* ...pinned until completion */
    uint64_t version;             /* its number (the dedupe cache's) */
    /* tasks (ctx mu) */
    unsigned chunks;              /* prepare tasks: ceil(n / REPLAY_CHUNK) */
    unsigned chunk_next;          /* the next one to claim */
    unsigned chunks_done;
    bool set_claimed[REPLAY_SETS_MAX];
    unsigned sets_done;
    bool finished;                /* completed (released), not yet counted in `completed` */
    replay_prep preps[REPLAY_CHUNKS];
} replay_group;

typedef struct replay_worker {
    engine *e;
    pthread_t thread;
    push_part **own;              /* scratch: an apply task's parts, in order */
    size_t own_cap;
} replay_worker;

struct engine_replay_ctx {
    replay_group groups[REPLAY_GROUPS];   /* group number g lives in groups[g % REPLAY_GROUPS] */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;       /* a task may have become runnable, or stop */
    pthread_cond_t done_cv;       /* a group was completed */
    uint64_t submitted;           /* groups handed off = number of the group being filled (mu) */
    uint64_t completed;           /* groups completed, always a prefix (mu) */
    uint64_t set_next[REPLAY_SETS_MAX];   /* per set: the group whose apply is next (mu) */
    unsigned sets;                /* shard sets: min(shards, REPLAY_SETS_MAX) */
    uint64_t reported;            /* completed groups the reader reported (reader) */
    bool stop;                    /* the appliers exit once nothing is left (mu) */
    bool started;                 /* the group being filled is started (pinned) (reader) */
    unsigned nworkers;            /* applier threads running; 0: all on the caller */
    replay_worker workers[REPLAY_WORKERS_MAX];
    replay_worker reader;         /* the reader's scratch */
    engine_replay_error_fn on_error;      /* where reported errors go (NULL: dropped) */
    void *on_error_ctx;
};

static void *replay_worker_main(void *arg);

static engine_replay_ctx *replay_ctx(engine *e, bool with_workers) {
    if (e->replay) return e->replay;
    engine_replay_ctx *r = calloc(1, sizeof *r);
    if (!r) abort();
    for (size_t i = 0; i < REPLAY_GROUPS; i++) {
        replay_group *g = &r->groups[i];
        arena_init(&g->arena);
        g->istates = calloc(REPLAY_BATCH_MAX, sizeof *g->istates);
        g->items = calloc(REPLAY_BATCH_MAX, sizeof *g->items);
        g->lsns = calloc(REPLAY_BATCH_MAX, sizeof *g->lsns);
        g->recs = calloc(REPLAY_BATCH_MAX, sizeof *g->recs);
        g->payloads = calloc(REPLAY_BATCH_MAX, sizeof *g->payloads);
        g->lens = calloc(REPLAY_BATCH_MAX, sizeof *g->lens);
        g->errors = calloc(REPLAY_BATCH_MAX, sizeof *g->errors);
        if (!g->istates || !g->items || !g->lsns || !g->recs || !g->payloads || !g->lens || !g->errors) abort();
        for (size_t c = 0; c < REPLAY_CHUNKS; c++) {
            engine_batch_init(&g->preps[c].batch);
            g->preps[c].batch.items = g->items;
            arena_init(&g->preps[c].arena);
        }
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->work_cv, NULL);
    pthread_cond_init(&r->done_cv, NULL);
    r->reader.e = e;
    r->on_error = e->replay_on_error;
    r->on_error_ctx = e->replay_on_error_ctx;
    e->replay = r;
    unsigned want = with_workers ? REPLAY_WORKERS_MAX : 0;
    for (unsigned w = 0; w < want; w++) {
        replay_worker *wk = &r->workers[w];
        wk->e = e;
        if (pthread_create(&wk->thread, NULL, replay_worker_main, wk) != 0) break;
        r->nworkers++;
    }
    /* fewer threads than asked (none at worst): the others, and the reader, do the work */
    r->sets = r->nworkers == 0 ? 1 : e->nshards < REPLAY_SETS_MAX ? e->nshards : REPLAY_SETS_MAX;
    return r;
}

/* Start preparing a chunk of g into p: its batch state on the group's version. */
static void replay_prep_begin(engine *e, replay_group *g, replay_prep *p) {
    arena_reset(&p->arena);
    p->batch.n = 0;
    push_batch_state *st = state_for(e, &p->batch);   /* resets the arena-held batch state too */
    st->items = g->istates;       /* every field replay reads is set record by record */
    p->batch.n = REPLAY_BATCH_MAX;
    st->reg = g->reg;
    st->apply_filter = e->opt.log.keep_part != NULL;
    p->applied = 0;
    p->max_now = 0;
    p->any_dedupe = false;
}

/* Cluster (engine_apply_logged): the dedupe decision in log order. The cache key is the
 * dedupe key under `scope` (the partition being applied), so each partition decides on
 * its own, from its own log order, and every owner of it decides alike. A record whose
 * key this scope took within its window (the windows in the records' arrival times, not
 * the wall clock) is a duplicate: not applied. Returns true for a duplicate. */
static bool scoped_dedupe_dup(engine *e, const item_state *is, unsigned scope, uint64_t lsn) {
    char sk[DEDUPE_SCOPE_MAX + STORE_MAX_KEY + REGISTRY_NAME_MAX + 8];
    int pl = snprintf(sk, sizeof sk, "%u%c", scope, STORE_KEY_SEP);
    if (pl < 0 || (size_t)pl + is->dkl > sizeof sk) return false;
    memcpy(sk + pl, is->dk, is->dkl);
    size_t skl = (size_t)pl + is->dkl;
    uint64_t h = store_hash(sk, skl);
    pthread_mutex_lock(&e->seq_mu);
    entity *d = dedupe_find(e, sk, skl, h);
    bool dup = d && ((const dedupe_row *)entity_row_const(d))->expiry_ms > is->now;
    if (!dup)
        dedupe_remember(e, sk, skl, h, is->now + is->ev->dedupe_window_ms, lsn,
                        atomic_load_explicit(&e->reg_version, memory_order_acquire), is->now);
    pthread_mutex_unlock(&e->seq_mu);
    return dup;
}

/* A formatted copy in arena a (a replay error's text). */
static char *replay_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *replay_printf(arena *a, const char *fmt, ...) {
    char buf[REPLAY_REASON_MAX + 200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof buf ? sizeof buf - 1 : (size_t)n;
    char *s = arena_alloc(a, len + 1);
    memcpy(s, buf, len);
    s[len] = '\0';
    return s;
}

typedef struct replay_schema_ctx {
    engine *e;
    push_batch_state *st;
} replay_schema_ctx;

/* evrec_schema_fn: the event's schema in the version being replayed (st->reg, pinned
 * while the group's rows are in use). */
static bool replay_schema(void *ctx, const char *event, size_t len, evrec_schema *out) {
    replay_schema_ctx *c = ctx;
    const ev_desc *ev = find_event_cached(c->e, c->st, event, len);
    if (!ev) return false;
    *out = (evrec_schema){ ev->schema.names, ev->name_lens, ev->schema.n, ev->prefix_fp };
    return true;
}

/* Decode, validate and turn record k of g into parts of p. scope: NULL in recovery (the
 * log holds no duplicate); the dedupe scope in cluster apply. Returns 0, or -1 with
 * g->errors[k] set (then it has no parts). */
static int replay_prepare(engine *e, replay_group *g, replay_prep *p, size_t k, const unsigned *scope) {
    push_batch_state *st = p->batch.priv;
    evrec *rec = &g->recs[k];
    item_state *is = &st->items[k];
    is->nparts = 0;
    is->dk = NULL;
    is->ev = NULL;
    g->errors[k] = NULL;
    char why[REPLAY_REASON_MAX];
    replay_schema_ctx sctx = { e, st };
    if (evrec_decode(g->payloads[k], g->lens[k], &p->arena, replay_schema, &sctx, rec, why, sizeof why) != 0) {
        rec->njson = 0;               /* nothing to release */
        g->errors[k] = replay_printf(&p->arena, "event record at LSN %llu: %s", (unsigned long long)g->lsns[k], why);
        return -1;
    }
    /* only what validate reads; res is written by validate when it fails */
    engine_push_item *item = &g->items[k];
    item->event = rec->event;
    item->event_len = rec->event_len;
    item->row = &rec->row;
    item->data_is_object = true;
    item->data_kind = NULL;
    item->has_control_char = false;
    item->sync = false;
    is->ev = validate(e, st, item, &item->res);
    if (!is->ev) {
        /* valid when logged: the registry history says otherwise, which is corruption */
        g->errors[k] = replay_printf(&p->arena, "event record at LSN %llu no longer validates: %s %s",
                                     (unsigned long long)g->lsns[k], item->res.code, item->res.reason);
        return -1;
    }
    is->now = rec->now;
    char dk[STORE_MAX_KEY + REGISTRY_NAME_MAX + 8];
    int dkl = dedupe_key(is->ev, &rec->row, dk, sizeof dk);
    if (dkl >= 0) {
        is->dk = arena_dup(&p->arena, dk, (size_t)dkl);
        is->dkl = (size_t)dkl;
        is->dh = store_hash(dk, (size_t)dkl);
        p->any_dedupe = true;
    }
    if (scope && is->dk && scoped_dedupe_dup(e, is, *scope, g->lsns[k])) {
        is->ev = NULL;                /* a duplicate in this scope: nothing to apply */
        is->dk = NULL;
        atomic_fetch_add_explicit(&e->events_replayed, 1, memory_order_relaxed);
        return 0;
    }
    if (scope) is->dk = NULL;         /* remembered under its scope already */
    build_parts(e, st, is, &rec->row, rec->now);
    if (rec->now > p->max_now) p->max_now = rec->now;
    p->applied++;
    return 0;
}

/* APPLY(g, set): the parts of g for the shards s with s % sets == set, in record order,
 * holding those shards' state locks. */
static void replay_apply_set(engine *e, replay_group *g, replay_worker *wk, unsigned set, unsigned sets) {
    unsigned chunks = (unsigned)((g->n + REPLAY_CHUNK - 1) / REPLAY_CHUNK);
    size_t total = 0;
    for (unsigned c = 0; c < chunks; c++) total += ((push_batch_state *)g->preps[c].batch.priv)->nparts;
    if (wk->own_cap < total) {
        free(wk->own);
        wk->own_cap = total;
        wk->own = malloc(wk->own_cap * sizeof *wk->own);
        if (!wk->own) abort();
    }
    push_part **own = wk->own;
    size_t n = 0;
    bool mine[SHARD_MAX];         /* no division per part */
    for (unsigned s = 0; s < e->nshards; s++) mine[s] = s % sets == set;
    for (size_t k = 0; k < g->n; k++) {
        push_batch_state *st = g->preps[k / REPLAY_CHUNK].batch.priv;
        const item_state *is = &st->items[k];
        for (size_t j = 0; j < is->nparts; j++) {
            push_part *pp = &st->parts[is->first_part + j];
            if (mine[pp->shard]) own[n++] = pp;
        }
    }
    if (n == 0) return;
    for (unsigned s = set; s < e->nshards; s += sets) shard_lock(e->pool, s);
    apply_run(e, own, n);
    for (unsigned s = set; s < e->nshards; s += sets) shard_unlock(e->pool, s);
}

/* Every set of g is applied: release what it decoded, count it, unpin its version. Its
 * errors and dedupe keys stay for the reader's report. */
static void replay_group_release(engine *e, replay_group *g) {
    unsigned chunks = (unsigned)((g->n + REPLAY_CHUNK - 1) / REPLAY_CHUNK);
    for (size_t k = 0; k < g->n; k++) evrec_release(&g->recs[k]);
    for (unsigned c = 0; c < chunks; c++) {
        replay_prep *p = &g->preps[c];
        note_watermark(e, p->max_now);
        atomic_fetch_add_explicit(&e->events_applied, p->applied, memory_order_relaxed);
        ((push_batch_state *)p->batch.priv)->reg = NULL;
    }
    g->reg = NULL;
    engine_unpin(e, g->pin);
    g->pin = NULL;
}

/* Claim and run one runnable task (r->mu held; dropped while it runs). Returns false
 * when none is runnable. Applying goes first, oldest group first, then preparing. */
static bool replay_run_task(engine *e, engine_replay_ctx *r, replay_worker *wk) {
    for (uint64_t num = r->completed; num < r->submitted; num++) {
        replay_group *g = &r->groups[num % REPLAY_GROUPS];
        if (g->chunks_done < g->chunks) continue;
        for (unsigned s = 0; s < r->sets; s++) {
            if (r->set_next[s] != num || g->set_claimed[s]) continue;
            g->set_claimed[s] = true;
            pthread_mutex_unlock(&r->mu);
            replay_apply_set(e, g, wk, s, r->sets);
            pthread_mutex_lock(&r->mu);
            r->set_next[s] = num + 1;     /* set s of the next group may go */
            if (++g->sets_done == r->sets) {
                pthread_mutex_unlock(&r->mu);
                replay_group_release(e, g);
                pthread_mutex_lock(&r->mu);
                g->finished = true;
                bool moved = false;
                while (r->completed < r->submitted && r->groups[r->completed % REPLAY_GROUPS].finished) {
                    r->groups[r->completed % REPLAY_GROUPS].finished = false;
                    r->completed++;
                    moved = true;
                }
                if (moved) pthread_cond_broadcast(&r->done_cv);
            }
            pthread_cond_broadcast(&r->work_cv);
            return true;
        }
    }
    for (uint64_t num = r->completed; num < r->submitted; num++) {
        replay_group *g = &r->groups[num % REPLAY_GROUPS];
        if (g->chunk_next == g->chunks) continue;
        unsigned c = g->chunk_next++;
        pthread_mutex_unlock(&r->mu);
        replay_prep *p = &g->preps[c];
        replay_prep_begin(e, g, p);
        size_t end = (size_t)(c + 1) * REPLAY_CHUNK < g->n ? (size_t)(c + 1) * REPLAY_CHUNK : g->n;
        for (size_t k = (size_t)c * REPLAY_CHUNK; k < end; k++) replay_prepare(e, g, p, k, NULL);
        pthread_mutex_lock(&r->mu);
        if (++g->chunks_done == g->chunks) pthread_cond_broadcast(&r->work_cv);
        return true;
    }
    return false;
}

static void *replay_worker_main(void *arg) {
    replay_worker *wk = arg;
    engine *e = wk->e;
    engine_replay_ctx *r = e->replay;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if (replay_run_task(e, r, wk)) continue;
        if (r->stop) break;
        pthread_cond_wait(&r->work_cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* The reader's report of completed groups, in order (see the top of this section). */
static void replay_report(engine *e, engine_replay_ctx *r, uint64_t upto) {
    for (; r->reported < upto; r->reported++) {
        replay_group *g = &r->groups[r->reported % REPLAY_GROUPS];
        if (r->nworkers && r->on_error)
            for (size_t k = 0; k < g->n; k++)
                if (g->errors[k]) r->on_error(r->on_error_ctx, g->errors[k]);
        unsigned chunks = (unsigned)((g->n + REPLAY_CHUNK - 1) / REPLAY_CHUNK);
        bool any_dedupe = false;
        for (unsigned c = 0; c < chunks; c++) any_dedupe |= g->preps[c].any_dedupe;
        if (!any_dedupe) continue;
        pthread_mutex_lock(&e->seq_mu);
        int64_t wall = engine_wall_ms();
        for (size_t k = 0; k < g->n; k++) {
            item_state *is = &g->istates[k];
            if (!is->ev || !is->dk) continue;
            if (is->now + is->ev->dedupe_window_ms > wall)
                dedupe_remember(e, is->dk, is->dkl, is->dh, is->now + is->ev->dedupe_window_ms, g->lsns[k],
                                g->version, is->now);
        }
        pthread_mutex_unlock(&e->seq_mu);
    }
}

/* Hand the group being filled over (its tasks become runnable), or, without appliers,
 * apply it here (its records are prepared already). */
static void replay_hand_off(engine *e, engine_replay_ctx *r) {
    if (!r->started) return;                      /* nothing gathered */
    r->started = false;
    replay_group *g = &r->groups[r->submitted % REPLAY_GROUPS];
    if (r->nworkers == 0) {
        replay_apply_set(e, g, &r->reader, 0, 1);
        replay_group_release(e, g);
        r->submitted++;
        r->completed = r->submitted;
        replay_report(e, r, r->completed);
        return;
    }
    pthread_mutex_lock(&r->mu);
    g->chunks = (unsigned)((g->n + REPLAY_CHUNK - 1) / REPLAY_CHUNK);
    g->chunk_next = 0;
    g->chunks_done = 0;
    for (unsigned s = 0; s < REPLAY_SETS_MAX; s++) g->set_claimed[s] = false;
    g->sets_done = 0;
    g->finished = false;
    r->submitted++;
    pthread_cond_broadcast(&r->work_cv);
    pthread_mutex_unlock(&r->mu);
}

/* Until group `upto` - 1 and every one before it is complete (running tasks meanwhile),
 * then report them. */
static void replay_wait(engine *e, engine_replay_ctx *r, uint64_t upto) {
    if (r->reported >= upto) return;
    pthread_mutex_lock(&r->mu);
    while (r->completed < upto)
        if (!replay_run_task(e, r, &r->reader)) pthread_cond_wait(&r->done_cv, &r->mu);
    uint64_t done = r->completed;
    pthread_mutex_unlock(&r->mu);
    replay_report(e, r, done);
}

void push_replay_flush(engine *e) {
    engine_replay_ctx *r = e->replay;
    if (!r) return;
    replay_hand_off(e, r);
    replay_wait(e, r, r->submitted);
}

/* Gather one event record (a copy of it: the WAL reader reuses its buffer). Without
 * appliers it is prepared now and its error returned; with them, errors are reported
 * through the sink once its group is applied, and this returns 0. */
static int replay_gather(engine *e, engine_replay_ctx *r, uint64_t lsn, const void *payload, size_t len,
                         const unsigned *scope, char *reason, size_t rlen) {
    replay_group *g = &r->groups[r->submitted % REPLAY_GROUPS];
    if (r->started && g->n == REPLAY_BATCH_MAX) {
        replay_hand_off(e, r);
        g = &r->groups[r->submitted % REPLAY_GROUPS];
    }
    if (!r->started) {
        /* its slot is free once the group REPLAY_GROUPS before it is complete and reported */
        if (r->submitted >= REPLAY_GROUPS) replay_wait(e, r, r->submitted - REPLAY_GROUPS + 1);
        arena_reset(&g->arena);
        g->n = 0;
        /* on the current version: a change flushes every group first (engine_barrier_enter) */
        g->reg = engine_pin(e, &g->pin);
        g->version = registry_version(g->reg);
        r->started = true;
    }
    size_t k = g->n++;
    g->lsns[k] = lsn;
    g->payloads[k] = arena_dup(&g->arena, payload, len);
    g->lens[k] = len;
    if (lsn > e->last_lsn) e->last_lsn = lsn;
    if (r->nworkers) return 0;
    replay_prep *p = &g->preps[k / REPLAY_CHUNK];
    if (k % REPLAY_CHUNK == 0) replay_prep_begin(e, g, p);
    if (replay_prepare(e, g, p, k, scope) == 0) return 0;
    snprintf(reason, rlen, "%s", g->errors[k]);
    return -1;
}

/* One event record of recovery (engine_replay): appliers only before the shards start
 * (engine_start_shards starts the durability thread after them). */
int push_replay_event(engine *e, uint64_t lsn, const void *payload, size_t len, char *reason, size_t rlen) {
    return replay_gather(e, replay_ctx(e, !e->durable_running), lsn, payload, len, NULL, reason, rlen);
}

void engine_replay_on_error(engine *e, engine_replay_error_fn fn, void *ctx) {
    e->replay_on_error = fn;
    e->replay_on_error_ctx = ctx;
    if (e->replay) {
        e->replay->on_error = fn;
        e->replay->on_error_ctx = ctx;
    }
}

void engine_replay_finish(engine *e) {
    push_replay_done(e);
}

size_t engine_apply_logged(engine *e, const engine_logged *recs, size_t n, uint64_t seq, unsigned dedupe_scope,
                           char *reason, size_t rlen) {
    size_t bad = 0;
    char why[512];
    pthread_mutex_lock(&e->apply_mu);
    if (e->replay && e->replay->nworkers) push_replay_done(e);   /* recovery's pipeline: over */
    engine_replay_ctx *r = replay_ctx(e, false);
    for (size_t i = 0; i < n; i++)
        if (replay_gather(e, r, seq, recs[i].payload, recs[i].len, &dedupe_scope, why, sizeof why) != 0 && bad++ == 0)
            snprintf(reason, rlen, "%s", why);
    push_replay_flush(e);
    pthread_mutex_unlock(&e->apply_mu);
    return bad;
}

void push_replay_done(engine *e) {
    engine_replay_ctx *r = e->replay;
    if (!r) return;
    push_replay_flush(e);
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->work_cv);
    pthread_mutex_unlock(&r->mu);
    for (unsigned w = 0; w < r->nworkers; w++) {
        pthread_join(r->workers[w].thread, NULL);
        free(r->workers[w].own);
    }
    free(r->reader.own);
    for (size_t i = 0; i < REPLAY_GROUPS; i++) {
        replay_group *g = &r->groups[i];
        for (size_t c = 0; c < REPLAY_CHUNKS; c++) {
            engine_batch_free(&g->preps[c].batch);
            arena_free(&g->preps[c].arena);
        }
        arena_free(&g->arena);
        free(g->istates);
        free(g->items);
        free(g->lsns);
        free(g->recs);
        free(g->payloads);
        free(g->lens);
        free(g->errors);
    }
    pthread_cond_destroy(&r->done_cv);
    pthread_cond_destroy(&r->work_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    e->replay = NULL;
}

/* ---- blocking convenience (JSON in) -------------------------------------------------------- */

static const char *json_kind_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

typedef struct push_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} push_waiter;

static void waiter_done(engine_batch *b) {
    push_waiter *w = b->owner;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void engine_item_from_json(engine_push_item *item, bv_row *row, const char *event, size_t event_len,
                           const json_t *data) {
    memset(row, 0, sizeof *row);
    memset(item, 0, sizeof *item);
    item->event = event;
    item->event_len = event_len;
    item->row = row;
    item->data_is_object = json_is_object(data);
    item->data_kind = json_kind_name(data);
    item->has_control_char = bv_has_control_char(event, event_len) || bv_json_has_control_char(data);
    if (!item->data_is_object) return;
    row->fields = calloc(json_object_size(data) + 1, sizeof *row->fields);
    if (!row->fields) abort();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)data, k, v) {
        bv_field *f = &row->fields[row->n++];
        f->name = k;
        f->name_len = strlen(k);
        f->value = bv_from_json(v);
    }
}

void engine_push(engine *e, const char *event, size_t event_len, const json_t *data, bool sync, push_result *res) {
    bv_row row;
    engine_push_item item;
    engine_item_from_json(&item, &row, event, event_len, data);
    item.sync = sync;
    push_waiter w = { .done = false };
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    engine_batch b;
    engine_batch_init(&b);
    b.items = &item;
    b.n = 1;
    b.done = waiter_done;
    b.owner = &w;
    if (!engine_push_submit(e, &b)) {
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    *res = item.res;
    engine_batch_free(&b);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    free(row.fields);
}

int engine_push_body(const push_result *res, engine_transport t, bv_buf *out) {
    if (res->status != 200) {
        engine_error_body(out, res->code, res->reason[0] ? "reason" : NULL, res->reason, t == TRANSPORT_TCP,
                          res->current_version);
        return res->status;
    }
    /* the hottest body there is: {"ack_lsn":N,"idempotent_replay":B,"registry_version":V} */
    static const char head[] = "{\"ack_lsn\":";
    static const char mid_false[] = ",\"idempotent_replay\":false,\"registry_version\":";
    static const char mid_true[] = ",\"idempotent_replay\":true,\"registry_version\":";
    bool replay = res->replay && t == TRANSPORT_TCP;
    bv_buf_reserve(out, 96);
    bv_buf_put(out, head, sizeof head - 1);
    bv_buf_put_u64(out, res->ack_lsn);
    if (replay) bv_buf_put(out, mid_true, sizeof mid_true - 1);
    else bv_buf_put(out, mid_false, sizeof mid_false - 1);
    bv_buf_put_u64(out, replay ? res->current_version : res->registry_version);
    bv_buf_putc(out, '}');
    return 200;
}
