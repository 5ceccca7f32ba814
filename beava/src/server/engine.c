/*
 * engine.c - register / push / get / reset on top of the registry and the entity
 * stores (see engine.h).
 *
 * Push path, in the order a reader follows one event:
 *   engine_push -> push_validate (reference-wire-api.md §9.2, first failure wins)
 *   -> dedupe lookup -> push_job_new: for every table fed by the event, run its prefix
 *   chain and build the entity key from the transformed row (parse once, on the I/O
 *   thread) -> log (the WAL seam) -> push_job_dispatch: each table's part goes to the
 *   shard owning hash(table, key) -> apply_part on that shard: find or create the
 *   entity (cold-TTL check), update each feature -> ack once every part is applied.
 *
 * Entity rows widen lazily: when the registry appends features to a live table
 * (additive change without force), rows created before keep their bytes and get the
 * new slots initialised on their next access (entity.nfeat < table.nfeatures).
 *
 * The dedupe cache is an entity_store keyed by "<event>\x1f<value text>" whose row
 * holds (expiry, ack_lsn, registry_version); expired entries are purged when the
 * cache doubles in size and on reset.
 */
#include "engine.h"

#include <math.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chain.h"
#include "evrec.h"
#include "expr.h"
#include "ops/feature.h"
#include "registry.h"
#include "shard.h"
#include "store.h"

#define DEDUPE_PURGE_MIN 1024

typedef struct dedupe_row {
    int64_t expiry_ms;
    uint64_t ack_lsn;
    uint64_t registry_version;
} dedupe_row;

struct engine {
    pthread_mutex_t mu;
    engine_options opt;
    registry *reg;
    reg_hooks hooks;
    pthread_cond_t applied_cv;    /* signalled whenever applied_lsn advances */
    uint64_t last_lsn;            /* highest LSN handed out */
    uint64_t applied_lsn;         /* every record <= this has been applied (or voided) */
    bool barrier;                 /* a register/reset waits for the pipeline to drain */
    bv_buf history;               /* every applied register/reset record: u8 kind, u32 len, bytes */
    int64_t watermark_ms;         /* latest push arrival */
    entity_store dedupe;
    size_t dedupe_purge_at;
    shard_pool *pool;             /* NULL until engine_start_shards: apply inline */
    unsigned nshards;             /* partitions per table (fixed at creation) */
    shard_ctx inline_ctx;         /* context for inline applies (recovery, no pool) */
    uint64_t overloaded;
    uint64_t events_applied;
    uint64_t events_rejected;
    uint64_t events_replayed;
    uint64_t wal_failures;
    uint64_t registers_applied;
    uint64_t keys_too_long;
    struct pending_rec **pend;    /* ring of parked records, indexed by LSN & (pend_cap - 1) */
    size_t pend_cap;
    bool draining;
    size_t sweep_table, sweep_slot;   /* cold-sweeper cursor */
    unsigned sweep_shard;
    uint64_t swept_evictions;
    bv_row row;                   /* scratch: the pushed row (validation) */
};

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- table stores (registry hooks) ------------------------------------------------ */

static size_t entity_row_size(const agg_table *t, const entity *en) {
    return en->nfeat < t->nfeatures ? t->offsets[en->nfeat] : t->row_size;
}

static void entity_destroy_states(const agg_table *t, entity *en) {
    char *row = entity_row(en);
    for (size_t i = 0; i < en->nfeat && i < t->nfeatures; i++)
        feature_state_destroy(&t->features[i], row + t->offsets[i]);
}

static void entity_init_states(const agg_table *t, entity *en, size_t from) {
    char *row = entity_row(en);
    for (size_t i = from; i < t->nfeatures; i++)
        feature_state_init(&t->features[i], row + t->offsets[i]);
    en->nfeat = (uint32_t)t->nfeatures;
}

typedef struct destroy_ctx { const agg_table *t; } destroy_ctx;

static void destroy_cb(void *ctx, entity *en) {
    destroy_ctx *d = ctx;
    entity_destroy_states(d->t, en);
}

/* A table's entities are split over nshards stores, one per shard: shard = hash(table,
 * key) mod N. Only the owning shard's thread touches a store (or any thread while the
 * pool is quiesced under the engine mutex). */
static entity_store *table_store(const agg_table *t, unsigned shard) {
    return &((entity_store *)t->store)[shard];
}

static unsigned shard_for(const engine *e, const agg_table *t, uint64_t key_hash) {
    if (e->nshards <= 1) return 0;
    uint64_t x = key_hash ^ (t->id * 0x9E3779B97F4A7C15ull);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (unsigned)(x % e->nshards);
}

static void hook_table_added(void *ctx, agg_table *t) {
    engine *e = ctx;
    entity_store *s = calloc(e->nshards, sizeof *s);
    if (!s) abort();
    for (unsigned i = 0; i < e->nshards; i++) store_init(&s[i]);
    t->store = s;
}

static void hook_table_removed(void *ctx, agg_table *t) {
    engine *e = ctx;
    if (!t->store) return;
    destroy_ctx d = { t };
    for (unsigned i = 0; i < e->nshards; i++) {
        store_foreach(table_store(t, i), destroy_cb, &d);
        store_free(table_store(t, i));
    }
    free(t->store);
    t->store = NULL;
}

static void hook_table_widened(void *ctx, agg_table *t, size_t old_nfeatures) {
    /* rows widen lazily on their next access (entity_ensure) */
    (void)ctx;
    (void)t;
    (void)old_nfeatures;
}

/* Make sure every feature slot of the entity exists (after an in-place widening). */
static entity *entity_ensure(agg_table *t, entity_store *s, entity *en) {
    if (en->nfeat >= t->nfeatures) return en;
    size_t from = en->nfeat;
    entity *n = store_grow(s, en, t->offsets[from], t->row_size);
    if (!n) abort();
    entity_init_states(t, n, from);
    return n;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

engine *engine_new(const engine_options *opts) {
    engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->opt = *opts;
    e->nshards = opts->shards ? opts->shards : 1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->applied_cv, NULL);
    bv_buf_init(&e->history);
    registry_options ro = { .memory_gov_enforce = opts->memory_gov_enforce };
    e->reg = registry_new(&ro);
    if (!e->reg) {
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->applied_cv);
        free(e);
        return NULL;
    }
    e->hooks.ctx = e;
    e->hooks.table_added = hook_table_added;
    e->hooks.table_removed = hook_table_removed;
    e->hooks.table_widened = hook_table_widened;
    store_init(&e->dedupe);
    e->dedupe_purge_at = DEDUPE_PURGE_MIN;
    return e;
}

void engine_free(engine *e) {
    if (!e) return;
    shard_pool_stop(e->pool);                 /* runs what is queued, joins */
    registry_free(e->reg, &e->hooks);
    store_free(&e->dedupe);
    free(e->row.fields);
    free(e->pend);
    bv_buf_free(&e->history);
    pthread_cond_destroy(&e->applied_cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

uint64_t engine_registry_version(engine *e) {
    pthread_mutex_lock(&e->mu);
    uint64_t v = registry_version(e->reg);
    pthread_mutex_unlock(&e->mu);
    return v;
}

/* ---- the log seam and the apply sequencer -----------------------------------------
 *
 * Records are applied in LSN order, and only once durable when the caller asked for
 * sync. Under the mutex a push validates, appends (taking the next LSN) and, when no
 * earlier record is still in flight and it need not wait, applies at once (the batch
 * fast path). Otherwise it drops the mutex, waits for durability, retakes the mutex,
 * waits its turn (applied_lsn == lsn - 1) and applies; a record whose write failed is
 * voided (its turn passes, nothing is applied). Register and reset raise a barrier:
 * new pushes wait while the pipeline drains, so registry changes are validated against
 * exactly the state they will apply to.
 */

static int seq_append(engine *e, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen) {
    if (!e->opt.wal.append) {
        *lsn = ++e->last_lsn;
        return 0;
    }
    if (e->opt.wal.append(e->opt.wal.ctx, kind, payload, len, lsn, reason, rlen) != 0) {
        e->wal_failures++;
        return -1;
    }
    e->last_lsn = *lsn;
    return 0;
}

/* Called with the mutex held; returns with it held. 0 = durable. */
static int seq_wait_durable(engine *e, uint64_t lsn, char *reason, size_t rlen) {
    if (!e->opt.wal.append) return 0;
    pthread_mutex_unlock(&e->mu);
    int rc = e->opt.wal.wait(e->opt.wal.ctx, lsn, reason, rlen);
    pthread_mutex_lock(&e->mu);
    if (rc != 0) e->wal_failures++;
    return rc;
}

static void seq_done(engine *e, uint64_t lsn) {
    if (lsn > e->applied_lsn) e->applied_lsn = lsn;
    pthread_cond_broadcast(&e->applied_cv);
}

/* Raise the barrier and wait until every appended record is applied. */
static void seq_barrier_enter(engine *e) {
    while (e->barrier) pthread_cond_wait(&e->applied_cv, &e->mu);
    e->barrier = true;
    while (e->applied_lsn < e->last_lsn) pthread_cond_wait(&e->applied_cv, &e->mu);
    if (e->pool) shard_pool_quiesce(e->pool);   /* every dispatched record applied */
}

static void seq_barrier_leave(engine *e) {
    e->barrier = false;
    pthread_cond_broadcast(&e->applied_cv);
}

static void history_add(engine *e, int kind, const void *p, size_t n) {
    uint8_t k = (uint8_t)kind;
    uint32_t l = (uint32_t)n;
    bv_buf_put(&e->history, &k, 1);
    bv_buf_put(&e->history, &l, 4);
    bv_buf_put(&e->history, p, n);
}

static void error_body(bv_buf *out, const char *code, const char *reason_key, const char *reason,
                       bool with_version, uint64_t version) {
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "error");
    jsonw_obj_begin(&w);
    jsonw_key(&w, "code");
    jsonw_str(&w, code);
    if (reason_key && reason) {
        jsonw_key(&w, reason_key);
        jsonw_str(&w, reason);
    }
    jsonw_obj_end(&w);
    if (with_version) {
        jsonw_key(&w, "registry_version");
        jsonw_u64(&w, version);
    }
    jsonw_obj_end(&w);
}

/* ---- register ----------------------------------------------------------------------- */

int engine_register(engine *e, const char *body, size_t len, bv_buf *out) {
    pthread_mutex_lock(&e->mu);
    seq_barrier_enter(e);
    reg_plan *plan = NULL;
    int status = registry_prepare(e->reg, body, len, out, &plan);
    if (plan) {
        uint64_t lsn;
        char reason[256];
        int rc = seq_append(e, REC_REGISTER, body, len, &lsn, reason, sizeof reason);
        if (rc == 0) {
            rc = seq_wait_durable(e, lsn, reason, sizeof reason);
            if (rc != 0) seq_done(e, lsn);      /* voided */
        }
        if (rc != 0) {
            reg_plan_free(plan);
            out->len = 0;
            char msg[400];
            snprintf(msg, sizeof msg, "WAL append for registry bump failed; registry not mutated (%s)", reason);
            error_body(out, "wal_unavailable", "reason", msg, true, registry_version(e->reg));
            seq_barrier_leave(e);
            pthread_mutex_unlock(&e->mu);
            return 503;
        }
        out->len = 0;
        registry_apply(e->reg, plan, &e->hooks, out);
        history_add(e, REC_REGISTER, body, len);
        e->registers_applied++;
        seq_done(e, lsn);
        status = 200;
    }
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
    return status;
}

/* ---- push --------------------------------------------------------------------------- */

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

/* Unicode Cc: U+0000-001F, U+007F, U+0080-009F (UTF-8 C2 80..C2 9F). */
static bool has_control_char(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

static bool json_has_control_char(const json_t *j, int depth) {
    if (depth > 256) return false;      /* jansson already bounds nesting */
    switch (json_typeof(j)) {
    case JSON_STRING: return has_control_char(json_string_value(j), json_string_length(j));
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(j); i++)
            if (json_has_control_char(json_array_get(j, i), depth + 1)) return true;
        return false;
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            if (has_control_char(k, strlen(k))) return true;
            if (json_has_control_char(v, depth + 1)) return true;
        }
        return false;
    }
    default: return false;
    }
}

/* An integral JSON number within i64 range (3 and 3.0; not 1.5, not 1e300). */
static bool json_is_integral(const json_t *v) {
    if (json_is_integer(v)) return true;
    if (!json_is_real(v)) return false;
    double d = json_real_value(v);
    return d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d;
}

static bool type_compatible(bv_wtype t, const json_t *v) {
    switch (t) {
    case WT_I64: return json_is_integral(v);
    case WT_F64: return json_is_number(v);
    case WT_STR: return json_is_string(v);
    case WT_BOOL: return json_is_boolean(v);
    default: return !json_is_null(v);
    }
}

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

static void row_reserve(bv_row *r, size_t n) {
    if (r->cap >= n) return;
    size_t cap = r->cap ? r->cap : 16;
    while (cap < n) cap *= 2;
    bv_field *f = realloc(r->fields, cap * sizeof *f);
    if (!f) abort();
    r->fields = f;
    r->cap = cap;
}

/* The row view of a pushed object: names and values borrowed from `data`. */
static void fill_row(bv_row *row, const json_t *data) {
    const char *k;
    json_t *v;
    row->n = 0;
    row_reserve(row, json_object_size(data));
    json_object_foreach((json_t *)data, k, v) {
        bv_field *f = &row->fields[row->n++];
        f->name = k;
        f->name_len = strlen(k);
        f->value = bv_from_json(v);
    }
}

/* Steps 2-6 of §9.2. Fills e->row on success. */
static bool push_validate(engine *e, const char *event, size_t event_len, const json_t *data,
                          const ev_desc **evp, push_result *res) {
    if (!json_is_object(data)) {
        push_fail(res, 400, "invalid_event", "event data must be a JSON object, got %s", json_kind_name(data));
        return false;
    }
    if (has_control_char(event, event_len) || json_has_control_char(data, 0)) {
        push_fail(res, 400, "control_character_in_string",
                  "a control character appears in the event name, a field name or a string value");
        return false;
    }
    char name[REGISTRY_NAME_MAX + 1];
    const ev_desc *ev = NULL;
    if (event_len <= REGISTRY_NAME_MAX) {
        memcpy(name, event, event_len);
        name[event_len] = 0;
        ev = registry_event(e->reg, name);
    }
    if (!ev) {
        push_fail(res, 404, "event_not_found", "event '%.*s' is not registered",
                  (int)(event_len > 128 ? 128 : event_len), event);
        return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)data, k, v) {
        if (bv_schema_find(&ev->schema, k, NULL) < 0 && !bv_schema_is_optional(&ev->schema, k)) {
            bool et = strcmp(k, "event_time") == 0 || strcmp(k, "event_time_ms") == 0;
            push_fail(res, 400, et ? "unknown_field_event_time_v0" : "unknown_field_v0",
                      "field '%.64s' is not declared by event '%s'", k, ev->name);
            return false;
        }
    }
    fill_row(&e->row, data);
    for (size_t i = 0; i < ev->schema.n; i++) {
        const char *fname = ev->schema.names[i];
        if (bv_schema_is_optional(&ev->schema, fname)) continue;
        json_t *fv = json_object_get(data, fname);
        if (!fv || json_is_null(fv)) {
            push_fail(res, 400, "invalid_event", "required field '%.64s' of event '%s' is missing or null",
                      fname, ev->name);
            return false;
        }
        if (!type_compatible(ev->schema.types[i], fv)) {
            if (ev->schema.types[i] == WT_I64 && json_is_number(fv))
                push_fail(res, 400, "invalid_event", "field '%.64s' of event '%s' must be i64 (an integer), got %.17g",
                          fname, ev->name, json_number_value(fv));
            else
                push_fail(res, 400, "invalid_event", "field '%.64s' of event '%s' must be %s, got %s", fname,
                          ev->name, bv_wtype_name(ev->schema.types[i]), json_kind_name(fv));
            return false;
        }
    }
    /* i64 fields keep their type: 3.0 is stored as 3; a fraction in an optional i64
     * field is refused like one in a required field (README "Wire protocol"). */
    for (size_t f = 0; f < e->row.n; f++) {
        bv_field *rf = &e->row.fields[f];
        bv_wtype t;
        if (rf->value.kind != BV_F64 || bv_schema_find(&ev->schema, rf->name, &t) < 0 || t != WT_I64) continue;
        double d = rf->value.u.f;
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(int64_t)d)) {
            push_fail(res, 400, "invalid_event", "field '%.64s' of event '%s' must be i64 (an integer), got %.17g",
                      rf->name, ev->name, rf->value.u.f);
            return false;
        }
        rf->value = bv_i64((int64_t)rf->value.u.f);
    }
    /* cap on entity keys read straight from the pushed row */
    agg_table *const *tables;
    size_t nt = registry_tables_for_event(e->reg, ev->name, &tables);
    for (size_t t = 0; t < nt; t++)
        for (size_t kk = 0; kk < tables[t]->nkeys; kk++) {
            const bv_value *kv = bv_row_get(&e->row, tables[t]->keys[kk]);
            if (kv && kv->kind == BV_STR && kv->u.s.len > STORE_MAX_KEY) {
                push_fail(res, 400, "invalid_event", "key field '%.64s' is %zu bytes long (max %d)",
                          tables[t]->keys[kk], kv->u.s.len, STORE_MAX_KEY);
                return false;
            }
        }
    *evp = ev;
    return true;
}

/* Build the entity key of `t` from row r into buf. Returns length or -1 (skip). */
static int build_key(const agg_table *t, const bv_row *r, char *buf, size_t cap) {
    size_t len = 0;
    for (size_t i = 0; i < t->nkeys; i++) {
        const bv_value *v = bv_row_get(r, t->keys[i]);
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

/* ---- push jobs: one event's work, split per table, run on the owning shards ----------- */

typedef struct push_part {
    agg_table *t;
    bv_row row;                   /* chain output (fields owned); unused when the chain is empty */
    const bv_row *in;             /* the row the features read: &row or the job's raw row */
    expr_arena *arena;            /* chain scratch (owned), NULL without a chain */
    char *key;
    size_t klen;
    uint64_t hash;
    unsigned shard;
    int64_t now, cold_after_ms;
} push_part;

typedef struct push_job {
    bv_row raw;                   /* the pushed row (fields owned, values borrowed) */
    size_t nparts;
    push_part *parts;
    shard_latch latch;
} push_job;

static void push_job_free(push_job *j) {
    if (!j) return;
    for (size_t i = 0; i < j->nparts; i++) {
        free(j->parts[i].row.fields);
        free(j->parts[i].arena);
        free(j->parts[i].key);
    }
    free(j->parts);
    free(j->raw.fields);
    free(j);
}

/* Run the prefix chains and build the entity keys of every table fed by ev (on the
 * caller's thread, under the engine mutex): parse once, fan out to the shards. */
static push_job *push_job_new(engine *e, const ev_desc *ev, const bv_row *raw, int64_t now) {
    agg_table *const *tables;
    size_t nt = registry_tables_for_event(e->reg, ev->name, &tables);
    push_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    row_reserve(&j->raw, raw->n ? raw->n : 1);
    memcpy(j->raw.fields, raw->fields, raw->n * sizeof *raw->fields);
    j->raw.n = raw->n;
    j->parts = calloc(nt ? nt : 1, sizeof *j->parts);
    if (!j->parts) abort();
    char key[STORE_MAX_KEY + 64];
    for (size_t ti = 0; ti < nt; ti++) {
        agg_table *t = tables[ti];
        push_part *pp = &j->parts[j->nparts];
        memset(pp, 0, sizeof *pp);
        pp->in = &j->raw;
        if (!chain_is_empty(t->prefix)) {
            pp->arena = malloc(sizeof *pp->arena);
            if (!pp->arena) abort();
            expr_arena_reset(pp->arena);
            if (!chain_apply(t->prefix, &j->raw, &pp->row, pp->arena)) {
                free(pp->row.fields);
                free(pp->arena);
                continue;                                   /* filtered out */
            }
            pp->in = &pp->row;
        }
        int klen = build_key(t, pp->in, key, sizeof key);
        if (klen < 0 || (size_t)klen > STORE_MAX_KEY) {     /* missing/null key: skipped by design */
            if (klen > 0) e->keys_too_long++;
            free(pp->row.fields);
            free(pp->arena);
            continue;
        }
        pp->t = t;
        pp->key = malloc((size_t)klen + 1);
        if (!pp->key) abort();
        memcpy(pp->key, key, (size_t)klen);
        pp->klen = (size_t)klen;
        pp->hash = store_hash(key, (size_t)klen);
        pp->shard = shard_for(e, t, pp->hash);
        pp->now = now;
        pp->cold_after_ms = ev->cold_after_ms;
        j->nparts++;
    }
    return j;
}

/* One table's update for one event, on the owning shard's thread. */
static void apply_part(shard_ctx *ctx, void *arg) {
    push_part *pp = arg;
    agg_table *t = pp->t;
    entity_store *s = table_store(t, pp->shard);
    entity *en = store_find(s, pp->key, pp->klen, pp->hash);
    if (en && pp->cold_after_ms > 0 && en->last_seen_ms > 0 && pp->now - en->last_seen_ms > pp->cold_after_ms) {
        entity_destroy_states(t, en);
        en = entity_ensure(t, s, en);     /* full size before reinitialising */
        memset(entity_row(en), 0, t->row_size);
        entity_init_states(t, en, 0);
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
    for (size_t i = 0; i < t->nfeatures; i++) {
        expr_arena_reset(&ctx->arena);
        feature_update(&t->features[i], row + t->offsets[i], pp->in, pp->now, &ctx->arena, &ctx->stats);
    }
    if (pp->cold_after_ms > 0) en->last_seen_ms = pp->now;
}

/* Is there queue room on every shard this job needs? (engine mutex held) */
static bool push_job_fits(engine *e, const push_job *j) {
    if (!e->pool) return true;
    size_t need[256] = { 0 };
    for (size_t i = 0; i < j->nparts; i++) need[j->parts[i].shard % 256]++;
    for (unsigned sh = 0; sh < e->nshards && sh < 256; sh++)
        if (need[sh] && !shard_has_room(e->pool, sh, need[sh])) return false;
    return true;
}

/* Hand the job to its shards in LSN order (engine mutex held). The caller waits on
 * j->latch after releasing the mutex, then frees the job. */
static void push_job_dispatch(engine *e, push_job *j, int64_t now) {
    shard_latch_init(&j->latch, (unsigned)j->nparts);
    for (size_t i = 0; i < j->nparts; i++) {
        if (e->pool) {
            shard_submit_deferred(e->pool, j->parts[i].shard, apply_part, &j->parts[i], &j->latch);
        } else {
            apply_part(&e->inline_ctx, &j->parts[i]);
            j->latch.remaining--;
        }
    }
    if (now > e->watermark_ms) e->watermark_ms = now;
}

/* A record appended but not dispatched yet: waiting for durability (sync) or for an
 * earlier record. Lives on the waiting thread's stack until `dispatched`. */
typedef struct pending_rec {
    push_job *job;
    int64_t now;
    bool ready;                   /* may be dispatched once it is next in line */
    bool failed;                  /* its write failed: voided, never applied */
    bool dispatched;
    pthread_cond_t cv;            /* signalled when dispatched (or voided) */
} pending_rec;

static void pend_put(engine *e, uint64_t lsn, pending_rec *pr) {
    size_t span = (size_t)(e->last_lsn - e->applied_lsn);
    if (span >= e->pend_cap) {
        size_t ncap = e->pend_cap ? e->pend_cap : 64;
        while (ncap <= span) ncap *= 2;
        pending_rec **n = calloc(ncap, sizeof *n);
        if (!n) abort();
        for (uint64_t l = e->applied_lsn + 1; l <= e->last_lsn && e->pend_cap; l++)
            n[l & (ncap - 1)] = e->pend[l & (e->pend_cap - 1)];
        free(e->pend);
        e->pend = n;
        e->pend_cap = ncap;
    }
    e->pend[lsn & (e->pend_cap - 1)] = pr;
}

/* Dispatch every parked record that is next in line and ready (mutex held). One thread
 * drains at a time; it may drop the mutex while a shard queue has no room. */
static void pend_drain(engine *e) {
    if (e->draining) return;
    e->draining = true;
    while (e->applied_lsn < e->last_lsn && e->pend_cap) {
        uint64_t lsn = e->applied_lsn + 1;
        pending_rec *p = e->pend[lsn & (e->pend_cap - 1)];
        if (!p || !p->ready) break;
        if (!p->failed) {
            while (!push_job_fits(e, p->job)) {
                pthread_mutex_unlock(&e->mu);
                struct timespec ts = { 0, 200000 };
                nanosleep(&ts, NULL);
                pthread_mutex_lock(&e->mu);
            }
            push_job_dispatch(e, p->job, p->now);
            e->events_applied++;
        }
        e->pend[lsn & (e->pend_cap - 1)] = NULL;
        p->dispatched = true;
        pthread_cond_signal(&p->cv);
        seq_done(e, lsn);
    }
    if (e->pool) shard_pool_kick(e->pool);
    e->draining = false;
}

static void push_job_finish(push_job *j) {
    shard_latch_wait(&j->latch);
    shard_latch_destroy(&j->latch);
    push_job_free(j);
}

static int dedupe_key(const ev_desc *ev, const bv_row *row, char *buf, size_t cap) {
    if (!ev->dedupe_key) return -1;
    const bv_value *v = bv_row_get(row, ev->dedupe_key);
    if (!v || v->kind == BV_NULL) return -1;
    size_t nl = strlen(ev->name);
    if (nl + 2 >= cap) return -1;
    memcpy(buf, ev->name, nl);
    buf[nl] = STORE_KEY_SEP;
    int n = bv_key_text(v, buf + nl + 1, cap - nl - 1);
    if (n < 0) return -1;
    return (int)(nl + 1 + (size_t)n);
}

typedef struct purge_ctx {
    int64_t now;
    entity **victims;
    size_t n, cap;
} purge_ctx;

static void purge_collect(void *ctx, entity *en) {
    purge_ctx *p = ctx;
    const dedupe_row *d = entity_row_const(en);
    if (d->expiry_ms > p->now) return;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        entity **v = realloc(p->victims, p->cap * sizeof *v);
        if (!v) abort();
        p->victims = v;
    }
    p->victims[p->n++] = en;
}

static void dedupe_purge(engine *e, int64_t now) {
    purge_ctx p = { .now = now };
    store_foreach(&e->dedupe, purge_collect, &p);
    for (size_t i = 0; i < p.n; i++) store_remove(&e->dedupe, p.victims[i], sizeof(dedupe_row));
    free(p.victims);
    e->dedupe_purge_at = e->dedupe.count * 2 > DEDUPE_PURGE_MIN ? e->dedupe.count * 2 : DEDUPE_PURGE_MIN;
}


static void dedupe_remember(engine *e, const char *dk, size_t dkl, uint64_t dh, int64_t expiry, uint64_t lsn,
                            uint64_t version, int64_t now) {
    if (e->dedupe.count >= e->dedupe_purge_at) dedupe_purge(e, now);
    entity *d = store_find(&e->dedupe, dk, dkl, dh);
    if (!d) d = store_insert(&e->dedupe, dk, dkl, dh, sizeof(dedupe_row));
    if (!d) abort();
    dedupe_row *dr = entity_row(d);
    dr->expiry_ms = expiry;
    dr->ack_lsn = lsn;
    dr->registry_version = version;
}

static void dedupe_forget(engine *e, const char *dk, size_t dkl, uint64_t dh) {
    entity *d = store_find(&e->dedupe, dk, dkl, dh);
    if (d) store_remove(&e->dedupe, d, sizeof(dedupe_row));
}

/* A push between its append and its acknowledgement. The batch path keeps one per event
 * so that all of a batch's records are appended before any of them waits for the disk:
 * one group commit then covers the whole batch. */
typedef struct push_slot {
    pending_rec pr;
    uint64_t lsn;
    bool active;                  /* appended: push_end_locked has work to do */
    bool sync;
    char *dk;                     /* dedupe key to forget if the write fails (owned) */
    size_t dkl;
    uint64_t dh;
} push_slot;

/* Validate, dedupe, build the job and append the record (mutex held; may wait on
 * conditions). Fast path (nothing in flight, no sync): dispatched at once. Otherwise the
 * record is parked and push_end_locked finishes it. On error res says why and the slot
 * stays inactive. */
static void push_begin_locked(engine *e, const char *event, size_t event_len, const json_t *data, bool sync,
                              push_result *res, push_slot *slot) {
    memset(res, 0, sizeof *res);
    memset(slot, 0, sizeof *slot);
    while (e->barrier) pthread_cond_wait(&e->applied_cv, &e->mu);
    res->current_version = registry_version(e->reg);
    const ev_desc *ev = NULL;
    if (!push_validate(e, event, event_len, data, &ev, res)) {
        e->events_rejected++;
        return;
    }
    int64_t now = wall_ms();
    char dk[STORE_MAX_KEY + REGISTRY_NAME_MAX + 8];
    int dkl = dedupe_key(ev, &e->row, dk, sizeof dk);
    uint64_t dh = 0;
    if (dkl >= 0) {
        dh = store_hash(dk, (size_t)dkl);
        entity *d = store_find(&e->dedupe, dk, (size_t)dkl, dh);
        if (d) {
            dedupe_row *dr = entity_row(d);
            if (dr->expiry_ms > now) {
                res->status = 200;
                res->replay = true;
                res->ack_lsn = dr->ack_lsn;
                res->registry_version = dr->registry_version;
                e->events_replayed++;
                return;
            }
            store_remove(&e->dedupe, d, sizeof(dedupe_row));
        }
    }
    push_job *job = push_job_new(e, ev, &e->row, now);
    /* a full queue gets a short grace (the shards may only need waking) before 503 */
    uint64_t seen_version = registry_version(e->reg);
    bool registry_moved = false;
    for (int tries = 0; tries < 250 && !push_job_fits(e, job); tries++) {
        if (e->pool) shard_pool_kick(e->pool);
        pthread_mutex_unlock(&e->mu);
        struct timespec ts = { 0, 200000 };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&e->mu);
        while (e->barrier) pthread_cond_wait(&e->applied_cv, &e->mu);
        if (registry_version(e->reg) != seen_version) {   /* the job's tables may be gone */
            registry_moved = true;
            break;
        }
    }
    if (registry_moved || !push_job_fits(e, job)) {
        e->overloaded++;
        push_job_free(job);
        push_fail(res, 503, "overloaded", "the apply shards are behind; retry shortly (nothing was applied)");
        return;
    }
    uint64_t lsn = 0;
    char reason[256];
    bv_buf rec;
    bv_buf_init(&rec);
    if (e->opt.wal.append) evrec_encode(now, ev->name, strlen(ev->name), data, &rec);
    int rc = seq_append(e, REC_EVENT, rec.data, rec.len, &lsn, reason, sizeof reason);
    bv_buf_free(&rec);
    if (rc != 0) {
        push_job_free(job);
        push_fail(res, 503, "wal_unavailable", "the write-ahead log refused the event, nothing was applied: %s", reason);
        return;
    }
    uint64_t version = registry_version(e->reg);
    if (dkl >= 0) {
        dedupe_remember(e, dk, (size_t)dkl, dh, now + ev->dedupe_window_ms, lsn, version, now);
        slot->dk = malloc((size_t)dkl);
        if (!slot->dk) abort();
        memcpy(slot->dk, dk, (size_t)dkl);
        slot->dkl = (size_t)dkl;
        slot->dh = dh;
    }
    slot->active = true;
    slot->lsn = lsn;
    slot->sync = sync && e->opt.wal.append;
    slot->pr.job = job;
    slot->pr.now = now;
    res->status = 200;
    res->ack_lsn = lsn;
    res->registry_version = version;
    if (!slot->sync && e->applied_lsn + 1 == lsn) {       /* the fast path */
        push_job_dispatch(e, job, now);
        e->events_applied++;
        seq_done(e, lsn);
        slot->pr.dispatched = true;
        return;
    }
    /* park it; whoever holds the mutex when it is next in line and ready dispatches it
     * (no thundering herd: each waiter has its own condition) */
    slot->pr.ready = !slot->sync;
    pthread_cond_init(&slot->pr.cv, NULL);
    pend_put(e, lsn, &slot->pr);
}

/* Wait for durability (sync) and dispatch (mutex held). On success *jobp is the job the
 * caller finishes after unlocking; on a failed write res becomes 503. */
static void push_end_locked(engine *e, push_slot *slot, push_result *res, push_job **jobp) {
    *jobp = NULL;
    if (!slot->active) return;
    char reason[256] = "";
    if (!slot->pr.dispatched) {
        if (!slot->pr.ready) {
            int rc = seq_wait_durable(e, slot->lsn, reason, sizeof reason);
            slot->pr.ready = true;
            slot->pr.failed = rc != 0;
        }
        pend_drain(e);
        while (!slot->pr.dispatched) pthread_cond_wait(&slot->pr.cv, &e->mu);
        pthread_cond_destroy(&slot->pr.cv);
    }
    if (slot->pr.failed) {
        if (slot->dk) dedupe_forget(e, slot->dk, slot->dkl, slot->dh);
        push_job_free(slot->pr.job);
        uint64_t cv = res->current_version;
        memset(res, 0, sizeof *res);
        res->current_version = cv;
        push_fail(res, 503, "wal_unavailable", "the event could not be made durable, nothing was applied: %s", reason);
    } else {
        *jobp = slot->pr.job;
    }
    free(slot->dk);
    slot->dk = NULL;
}

void engine_push(engine *e, const char *event, size_t event_len, const json_t *data, bool sync, push_result *res) {
    push_job *job;
    push_slot slot;
    pthread_mutex_lock(&e->mu);
    push_begin_locked(e, event, event_len, data, sync, res, &slot);
    push_end_locked(e, &slot, res, &job);
    if (e->pool) shard_pool_kick(e->pool);
    pthread_mutex_unlock(&e->mu);
    if (job) push_job_finish(job);   /* acknowledged once every shard applied it */
}

void engine_push_batch(engine *e, size_t n, const char *const *events, const size_t *event_lens,
                       const json_t *const *datas, bool sync, push_result *res) {
    push_job **jobs = calloc(n ? n : 1, sizeof *jobs);
    push_slot *slots = calloc(n ? n : 1, sizeof *slots);
    if (!jobs || !slots) abort();
    pthread_mutex_lock(&e->mu);
    /* append every record first, so one fsync makes the whole batch durable */
    for (size_t i = 0; i < n; i++) {
        if (!events[i]) {
            memset(&res[i], 0, sizeof res[i]);
            push_fail(&res[i], 400, "unsupported", "not a push envelope");
            continue;
        }
        push_begin_locked(e, events[i], event_lens[i], datas[i], sync, &res[i], &slots[i]);
        if (e->pool && (i & 255) == 255) shard_pool_kick(e->pool);   /* keep the shards busy meanwhile */
    }
    for (size_t i = 0; i < n; i++) push_end_locked(e, &slots[i], &res[i], &jobs[i]);
    if (e->pool) shard_pool_kick(e->pool);
    pthread_mutex_unlock(&e->mu);
    for (size_t i = 0; i < n; i++)
        if (jobs[i]) push_job_finish(jobs[i]);
    free(jobs);
    free(slots);
}

int engine_push_body(const push_result *res, engine_transport t, bv_buf *out) {
    jsonw w;
    if (res->status != 200) {
        error_body(out, res->code, res->reason[0] ? "reason" : NULL, res->reason, t == TRANSPORT_TCP,
                   res->current_version);
        return res->status;
    }
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "ack_lsn");
    jsonw_u64(&w, res->ack_lsn);
    jsonw_key(&w, "idempotent_replay");
    jsonw_bool(&w, res->replay && t == TRANSPORT_TCP);
    jsonw_key(&w, "registry_version");
    jsonw_u64(&w, res->replay && t == TRANSPORT_TCP ? res->current_version : res->registry_version);
    jsonw_obj_end(&w);
    return 200;
}

/* ---- get ---------------------------------------------------------------------------- */

static int64_t query_time(const engine *e) {
    int64_t now = wall_ms();
    return now > e->watermark_ms ? now : e->watermark_ms;
}

/* Parse a get key into the internal form. Returns length, or -1 on arity mismatch. */
static int parse_get_key(const agg_table *t, const char *key, size_t klen, char *buf, size_t cap) {
    if (t->nkeys == 0) return klen == 0 ? 0 : -1;
    size_t segs = 1;
    for (size_t i = 0; i < klen; i++)
        if (key[i] == '|') segs++;
    if (segs != t->nkeys || klen >= cap) return -1;
    for (size_t i = 0; i < klen; i++) buf[i] = key[i] == '|' ? STORE_KEY_SEP : key[i];
    return (int)klen;
}

/* Look up an entity for reading (widening it if needed). */
/* Direct lookup: only with the pool quiesced under the engine mutex (or inline). */
static entity *lookup_entity(engine *e, agg_table *t, const char *k, size_t kl) {
    uint64_t h = store_hash(k, kl);
    entity_store *s = table_store(t, shard_for(e, t, h));
    entity *en = store_find(s, k, kl, h);
    return en ? entity_ensure(t, s, en) : NULL;
}

static bool feature_selected(const agg_table *t, size_t slot, const json_t *features) {
    if (!features || json_is_null(features)) return true;
    const char *name = t->features[slot].name;
    for (size_t i = 0; i < json_array_size(features); i++) {
        const json_t *f = json_array_get(features, i);
        if (json_is_string(f) && strcmp(json_string_value(f), name) == 0) return true;
    }
    return false;
}

static void write_row(agg_table *t, entity *en, const json_t *features, int64_t q, jsonw *w) {
    jsonw_obj_begin(w);
    if (en) {
        const char *row = entity_row_const(en);
        for (size_t i = 0; i < t->nfeatures; i++) {
            size_t slot = t->by_name[i];
            if (!feature_selected(t, slot, features)) continue;
            jsonw_key(w, t->features[slot].name);
            feature_read(&t->features[slot], row + t->offsets[slot], q, w);
        }
    }
    jsonw_obj_end(w);
}

/* Names in `features` that the table does not have, as `["a", "b"]`; false if none. */
static bool missing_features(const agg_table *t, const json_t *features, bv_buf *missing) {
    if (!features || json_is_null(features)) return false;
    bool any = false;
    bv_buf_putc(missing, '[');
    for (size_t i = 0; i < json_array_size(features); i++) {
        const char *f = json_string_value(json_array_get(features, i));
        bool found = false;
        for (size_t s = 0; f && s < t->nfeatures; s++)
            if (strcmp(t->features[s].name, f) == 0) found = true;
        if (found) continue;
        if (any) bv_buf_puts(missing, ", ");
        bv_buf_json_str(missing, f ? f : "", f ? strlen(f) : 0);
        any = true;
    }
    bv_buf_putc(missing, ']');
    return any;
}

static bool valid_features_field(const json_t *f) {
    if (!f || json_is_null(f)) return true;
    if (!json_is_array(f)) return false;
    for (size_t i = 0; i < json_array_size(f); i++)
        if (!json_is_string(json_array_get(f, i))) return false;
    return true;
}

static const char *get_shape_error(const json_t *req) {
    if (!json_is_object(req)) return "invalid type: expected a JSON object {table, key, features?}";
    json_t *t = json_object_get(req, "table"), *k = json_object_get(req, "key");
    if (!t) return "missing field `table`";
    if (!json_is_string(t)) return "invalid type for `table`: expected a string";
    if (!k) return "missing field `key`";
    if (!json_is_string(k)) return "invalid type for `key`: expected a string";
    if (!valid_features_field(json_object_get(req, "features")))
        return "invalid type for `features`: expected an array of strings or null";
    return NULL;
}

static bool legacy_get_shape(const json_t *req) {
    if (!json_is_object(req)) return false;
    json_t *keys = json_object_get(req, "keys"), *features = json_object_get(req, "features");
    json_t *feature = json_object_get(req, "feature"), *key = json_object_get(req, "key");
    return (json_is_array(keys) && json_is_array(features)) || (json_is_string(feature) && json_is_string(key));
}

/* A row read, run on the shard that owns the entity (FIFO behind earlier pushes, which
 * gives read-your-writes across connections). */
typedef struct read_job {
    agg_table *t;
    char key[STORE_MAX_KEY + 1];
    size_t klen;
    unsigned shard;
    const json_t *features;
    int64_t q;
    bv_buf out;
} read_job;

static void read_part(shard_ctx *ctx, void *arg) {
    (void)ctx;
    read_job *r = arg;
    uint64_t h = store_hash(r->key, r->klen);
    entity_store *s = table_store(r->t, r->shard);
    entity *en = store_find(s, r->key, r->klen, h);
    if (en) en = entity_ensure(r->t, s, en);
    jsonw w;
    jsonw_init(&w, &r->out);
    write_row(r->t, en, r->features, r->q, &w);
}

static void read_job_init(engine *e, read_job *r, agg_table *t, const char *key, size_t klen,
                          const json_t *features, int64_t q) {
    r->t = t;
    memcpy(r->key, key, klen);
    r->klen = klen;
    r->shard = shard_for(e, t, store_hash(key, klen));
    r->features = features;
    r->q = q;
    bv_buf_init(&r->out);
}

/* Run the read jobs on their shards (engine mutex held on entry, released on return).
 * Returns false (nothing run) when a shard queue has no room. */
static bool run_reads_and_unlock(engine *e, read_job **jobs, size_t n) {
    if (!e->pool) {
        for (size_t i = 0; i < n; i++) read_part(&e->inline_ctx, jobs[i]);
        pthread_mutex_unlock(&e->mu);
        return true;
    }
    size_t need[256] = { 0 };
    for (size_t i = 0; i < n; i++) need[jobs[i]->shard % 256]++;
    for (unsigned sh = 0; sh < e->nshards && sh < 256; sh++)
        if (need[sh] && !shard_has_room(e->pool, sh, need[sh])) {
            e->overloaded++;
            pthread_mutex_unlock(&e->mu);
            return false;
        }
    shard_latch latch;
    shard_latch_init(&latch, (unsigned)n);
    for (size_t i = 0; i < n; i++) shard_submit(e->pool, jobs[i]->shard, read_part, jobs[i], &latch);
    pthread_mutex_unlock(&e->mu);
    shard_latch_wait(&latch);
    shard_latch_destroy(&latch);
    return true;
}

static int overloaded_body(bv_buf *out) {
    error_body(out, "overloaded", "reason", "the apply shards are behind; retry shortly", false, 0);
    return 503;
}

int engine_get(engine *e, engine_transport t, const json_t *req, const char *parse_error, bv_buf *out) {
    const char *shape = req ? get_shape_error(req) : parse_error;
    if (shape) {
        if (req && legacy_get_shape(req)) {
            jsonw w;
            jsonw_init(&w, out);
            jsonw_obj_begin(&w);
            jsonw_key(&w, "error");
            jsonw_obj_begin(&w);
            jsonw_key(&w, "code");
            jsonw_str(&w, "unsupported_request_shape");
            jsonw_key(&w, "message");
            jsonw_str(&w, t == TRANSPORT_HTTP
                ? "POST /get expects {table, key, features?}; received legacy {keys, features} shape — see docs/http-api.md#post-get"
                : "OP_GET expects {table, key, features?}; received legacy {keys, features} or {feature, key} shape — see docs/wire-spec.md#op_get-0x0020");
            jsonw_obj_end(&w);
            jsonw_obj_end(&w);
            return 400;
        }
        error_body(out, "internal_error", "reason", shape ? shape : "empty body", false, 0);
        return 500;
    }
    const char *table = json_string_value(json_object_get(req, "table"));
    json_t *key = json_object_get(req, "key");
    json_t *features = json_object_get(req, "features");
    pthread_mutex_lock(&e->mu);
    while (e->barrier) pthread_cond_wait(&e->applied_cv, &e->mu);   /* no reads into a changing registry */
    agg_table *tab = registry_table(e->reg, table);
    if (!tab) {
        pthread_mutex_unlock(&e->mu);
        error_body(out, "unknown_table", NULL, NULL, false, 0);
        return 404;
    }
    bv_buf missing;
    bv_buf_init(&missing);
    if (missing_features(tab, features, &missing)) {
        char reason[1024];
        snprintf(reason, sizeof reason, "feature_not_found: missing=%s table=%s", missing.data, table);
        bv_buf_free(&missing);
        pthread_mutex_unlock(&e->mu);
        error_body(out, "internal_error", "reason", reason, false, 0);
        return 500;
    }
    bv_buf_free(&missing);
    char kbuf[STORE_MAX_KEY + 1];
    int kl = parse_get_key(tab, json_string_value(key), json_string_length(key), kbuf, sizeof kbuf);
    if (kl < 0) {
        pthread_mutex_unlock(&e->mu);
        error_body(out, "key_parse_failure", NULL, NULL, false, 0);
        return 404;
    }
    read_job *r = malloc(sizeof *r);
    if (!r) abort();
    read_job_init(e, r, tab, kbuf, (size_t)kl, features, query_time(e));
    if (!run_reads_and_unlock(e, &r, 1)) {
        free(r);
        return overloaded_body(out);
    }
    bv_buf_put(out, r->out.data, r->out.len);
    bv_buf_free(&r->out);
    free(r);
    return 200;
}

static const char *batch_entry_error(const json_t *entry) {
    if (!json_is_object(entry)) return "invalid type: each request must be an object {table, key, features?}";
    json_t *t = json_object_get(entry, "table");
    json_t *k = json_object_get(entry, "key"), *id = json_object_get(entry, "entity_id");
    if (!t) return "missing field `table`";
    if (!json_is_string(t)) return "invalid type for `table`: expected a string";
    if (k && id) return "duplicate field: give `key` or its deprecated alias `entity_id`, not both";
    if (!k && !id) return "missing field `key`";
    if (!json_is_string(k ? k : id)) return "invalid type for `key`: expected a string";
    if (!valid_features_field(json_object_get(entry, "features")))
        return "invalid type for `features`: expected an array of strings or null";
    return NULL;
}

#define BATCH_GET_MAX 10000

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int engine_batch_get(engine *e, const json_t *req, const char *parse_error, bv_buf *out) {
    const char *err = parse_error;
    json_t *reqs = NULL;
    if (!err) {
        if (!json_is_object(req)) err = "invalid type: expected a JSON object {requests: [...]}";
        else if (!(reqs = json_object_get(req, "requests"))) err = "missing field `requests`";
        else if (!json_is_array(reqs)) err = "invalid type for `requests`: expected an array";
        else if (json_array_size(reqs) > BATCH_GET_MAX) err = "batch_too_large: more than 10000 requests";
    }
    for (size_t i = 0; !err && i < json_array_size(reqs); i++) err = batch_entry_error(json_array_get(reqs, i));
    if (err) {
        error_body(out, "internal_error", "reason", err ? err : "empty body", false, 0);
        return 500;
    }
    pthread_mutex_lock(&e->mu);
    while (e->barrier) pthread_cond_wait(&e->applied_cv, &e->mu);
    /* pre-pass: unknown features in a filter fail the whole call */
    for (size_t i = 0; i < json_array_size(reqs); i++) {
        json_t *entry = json_array_get(reqs, i);
        const char *table = json_string_value(json_object_get(entry, "table"));
        agg_table *tab = registry_table(e->reg, table);
        if (!tab) continue;
        bv_buf missing;
        bv_buf_init(&missing);
        if (missing_features(tab, json_object_get(entry, "features"), &missing)) {
            char reason[1024];
            snprintf(reason, sizeof reason, "feature_not_found: missing=%s table=%s", missing.data, table);
            bv_buf_free(&missing);
            pthread_mutex_unlock(&e->mu);
            error_body(out, "internal_error", "reason", reason, false, 0);
            return 500;
        }
        bv_buf_free(&missing);
    }
    int64_t q = query_time(e);
    size_t n = json_array_size(reqs);
    bv_buf *errs = calloc(n ? n : 1, sizeof *errs);          /* per entry: error element, or empty */
    read_job **slots = calloc(n ? n : 1, sizeof *slots);     /* per entry: its read, or NULL */
    read_job **jobs = calloc(n ? n : 1, sizeof *jobs);
    if (!errs || !slots || !jobs) abort();
    size_t njobs = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *entry = json_array_get(reqs, i);
        const char *table = json_string_value(json_object_get(entry, "table"));
        json_t *key = json_object_get(entry, "key");
        if (!key) key = json_object_get(entry, "entity_id");
        agg_table *tab = registry_table(e->reg, table);
        char msg[512];
        const char *code = NULL;
        char kbuf[STORE_MAX_KEY + 1];
        int kl = -1;
        if (!tab) {
            snprintf(msg, sizeof msg, "table '%.200s' is not a registered aggregation", table);
            code = "unknown_table";
        } else if ((kl = parse_get_key(tab, json_string_value(key), json_string_length(key), kbuf, sizeof kbuf)) < 0) {
            snprintf(msg, sizeof msg, "key '%.200s' does not match table '%.200s' group_keys arity (%zu)",
                     json_string_value(key), table, tab->nkeys);
            code = "key_parse_failure";
        }
        if (code) {
            jsonw ew;
            jsonw_init(&ew, &errs[i]);
            jsonw_obj_begin(&ew);
            jsonw_key(&ew, "error");
            jsonw_obj_begin(&ew);
            jsonw_key(&ew, "code");
            jsonw_str(&ew, code);
            jsonw_key(&ew, "message");
            jsonw_str(&ew, msg);
            jsonw_obj_end(&ew);
            jsonw_obj_end(&ew);
            continue;
        }
        read_job *r = malloc(sizeof *r);
        if (!r) abort();
        read_job_init(e, r, tab, kbuf, (size_t)kl, json_object_get(entry, "features"), q);
        slots[i] = jobs[njobs++] = r;
    }
    bool ran = run_reads_and_unlock(e, jobs, njobs);
    int status = 200;
    if (!ran) {
        status = overloaded_body(out);
    } else {
        bv_buf_puts(out, "{\"results\":[");
        for (size_t i = 0; i < n; i++) {
            if (i) bv_buf_putc(out, ',');
            if (slots[i]) bv_buf_put(out, slots[i]->out.data, slots[i]->out.len);
            else bv_buf_put(out, errs[i].data, errs[i].len);
        }
        bv_buf_puts(out, "]}");
    }
    for (size_t i = 0; i < n; i++) bv_buf_free(&errs[i]);
    for (size_t i = 0; i < njobs; i++) {
        bv_buf_free(&jobs[i]->out);
        free(jobs[i]);
    }
    free(errs);
    free(slots);
    free(jobs);
    return status;
}

int engine_get_legacy(engine *e, const char *rest, bv_buf *out) {
    const char *slash = strchr(rest, '/');
    if (!slash || slash == rest) {
        error_body(out, "feature_not_found", NULL, NULL, false, 0);
        return 404;
    }
    char name[REGISTRY_NAME_MAX * 2 + 1];
    size_t nl = (size_t)(slash - rest);
    if (nl >= sizeof name) {
        error_body(out, "feature_not_found", NULL, NULL, false, 0);
        return 404;
    }
    memcpy(name, rest, nl);
    name[nl] = 0;
    const char *key = slash + 1;
    pthread_mutex_lock(&e->mu);
    seq_barrier_enter(e);                 /* reads the stores directly: shards idle */
    int64_t q = query_time(e);
    size_t slot = 0;
    agg_table *tab = registry_feature_owner(e->reg, name, &slot);
    char kbuf[STORE_MAX_KEY + 1];
    jsonw w;
    jsonw_init(&w, out);
    int status;
    if (tab) {
        int kl = parse_get_key(tab, key, strlen(key), kbuf, sizeof kbuf);
        entity *en = kl < 0 ? NULL : lookup_entity(e, tab, kbuf, (size_t)kl);
        if (kl < 0) {
            error_body(out, "key_parse_failure", NULL, NULL, false, 0);
            status = 404;
        } else if (!en) {
            error_body(out, "key_not_found", NULL, NULL, false, 0);
            status = 404;
        } else {
            jsonw_obj_begin(&w);
            jsonw_key(&w, "value");
            feature_read(&tab->features[slot], (const char *)entity_row_const(en) + tab->offsets[slot], q, &w);
            jsonw_obj_end(&w);
            status = 200;
        }
    } else if ((tab = registry_table(e->reg, name)) != NULL) {
        int kl = parse_get_key(tab, key, strlen(key), kbuf, sizeof kbuf);
        entity *en = kl < 0 ? NULL : lookup_entity(e, tab, kbuf, (size_t)kl);
        if (!en) {
            error_body(out, "key_not_found", NULL, NULL, false, 0);
            status = 404;
        } else {
            write_row(tab, en, NULL, q, &w);
            status = 200;
        }
    } else {
        error_body(out, "feature_not_found", NULL, NULL, false, 0);
        status = 404;
    }
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
    return status;
}

int engine_get_multi(engine *e, const json_t *req, bool single_feature, bv_buf *out) {
    json_t *keys = json_is_object(req) ? json_object_get(req, "keys") : NULL;
    json_t *features = NULL, *one = NULL;
    if (json_is_object(req)) {
        if (single_feature) {
            json_t *f = json_object_get(req, "feature");
            if (json_is_string(f)) features = one = json_pack("[O]", f);
        } else {
            features = json_object_get(req, "features");
        }
    }
    if (!json_is_array(keys) || !json_is_array(features)) {
        json_decref(one);
        error_body(out, "internal_error", "reason",
                   single_feature ? "OP_MGET expects {feature, keys}" : "OP_GET_MULTI expects {keys, features}", false, 0);
        return 500;
    }
    for (size_t i = 0; i < json_array_size(keys); i++)
        if (!json_is_string(json_array_get(keys, i))) {
            json_decref(one);
            error_body(out, "internal_error", "reason", "every key must be a string", false, 0);
            return 500;
        }
    size_t cells = json_array_size(keys) * json_array_size(features);
    if (cells > BATCH_GET_MAX) {
        char reason[96];
        snprintf(reason, sizeof reason, "batch_too_large: cells=%zu cap=%d", cells, BATCH_GET_MAX);
        json_decref(one);
        error_body(out, "internal_error", "reason", reason, false, 0);
        return 500;
    }
    pthread_mutex_lock(&e->mu);
    seq_barrier_enter(e);                 /* reads the stores directly: shards idle */
    int64_t q = query_time(e);
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    /* keys in ascending order, as every object on the wire */
    size_t nk = json_array_size(keys);
    const char **sorted = nk ? malloc(nk * sizeof *sorted) : NULL;
    for (size_t i = 0; i < nk; i++) sorted[i] = json_string_value(json_array_get(keys, i));
    if (nk) qsort(sorted, nk, sizeof *sorted, cmp_cstr);
    for (size_t i = 0; i < nk; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0) continue;
        bool opened = false;
        for (size_t f = 0; f < json_array_size(features); f++) {
            const char *fname = json_string_value(json_array_get(features, f));
            size_t slot;
            agg_table *tab = fname ? registry_feature_owner(e->reg, fname, &slot) : NULL;
            if (!tab) continue;
            char kbuf[STORE_MAX_KEY + 1];
            int kl = parse_get_key(tab, sorted[i], strlen(sorted[i]), kbuf, sizeof kbuf);
            entity *en = kl < 0 ? NULL : lookup_entity(e, tab, kbuf, (size_t)kl);
            if (!en) continue;
            if (!opened) {
                jsonw_key(&w, sorted[i]);
                jsonw_obj_begin(&w);
                opened = true;
            }
            jsonw_key(&w, fname);
            feature_read(&tab->features[slot], (const char *)entity_row_const(en) + tab->offsets[slot], q, &w);
        }
        if (opened) jsonw_obj_end(&w);
    }
    jsonw_obj_end(&w);
    free(sorted);
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
    json_decref(one);
    return 200;
}

/* ---- reset / ping / info ------------------------------------------------------------ */

static void reset_locked(engine *e) {
    registry_reset(e->reg, &e->hooks);
    store_free(&e->dedupe);
    e->dedupe_purge_at = DEDUPE_PURGE_MIN;
    e->watermark_ms = 0;
}

int engine_reset(engine *e, bv_buf *out) {
    if (!e->opt.test_mode) {
        error_body(out, "reset_disabled_in_production", "reason",
                   "OP_RESET requires server test_mode (set BEAVA_TEST_MODE=1 or pass Config { test_mode: true } "
                   "at server construction). See docs/error-codes.md.",
                   false, 0);
        return 403;
    }
    pthread_mutex_lock(&e->mu);
    seq_barrier_enter(e);
    uint64_t lsn;
    char reason[256];
    int rc = seq_append(e, REC_RESET, "", 0, &lsn, reason, sizeof reason);
    if (rc == 0) {
        rc = seq_wait_durable(e, lsn, reason, sizeof reason);
        if (rc != 0) seq_done(e, lsn);
    }
    if (rc != 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "WAL append for reset failed; nothing was reset (%s)", reason);
        error_body(out, "wal_unavailable", "reason", msg, true, registry_version(e->reg));
        seq_barrier_leave(e);
        pthread_mutex_unlock(&e->mu);
        return 503;
    }
    reset_locked(e);
    history_add(e, REC_RESET, "", 0);
    seq_done(e, lsn);
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "registry_version");
    jsonw_u64(&w, registry_version(e->reg));
    jsonw_key(&w, "reset");
    jsonw_bool(&w, true);
    jsonw_obj_end(&w);
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
    return 200;
}

int engine_ping(engine *e, bv_buf *out) {
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "pong");
    jsonw_bool(&w, true);
    jsonw_key(&w, "registry_version");
    jsonw_u64(&w, engine_registry_version(e));
    jsonw_obj_end(&w);
    return 200;
}

void engine_registry_info(engine *e, bv_buf *out) {
    pthread_mutex_lock(&e->mu);
    uint64_t v = registry_version(e->reg);
    size_t n = registry_node_count(e->reg);
    pthread_mutex_unlock(&e->mu);
    bv_buf_printf(out, "{\"node_count\":%zu,\"version\":%llu}", n, (unsigned long long)v);
}

bool engine_has_table(engine *e, const char *table) {
    pthread_mutex_lock(&e->mu);
    bool ok = registry_table(e->reg, table) != NULL;
    pthread_mutex_unlock(&e->mu);
    return ok;
}

/* ---- entity lifecycle ---------------------------------------------------------------- */

size_t engine_sweep_cold(engine *e, size_t budget) {
    size_t evicted = 0, scanned = 0;
    pthread_mutex_lock(&e->mu);
    agg_table *const *tables;
    size_t nt = registry_tables(e->reg, &tables);
    bool any = false;
    for (size_t i = 0; i < nt && !any; i++) {
        const ev_desc *ev = registry_event(e->reg, tables[i]->source);
        any = ev && ev->cold_after_ms > 0;
    }
    if (!any) {                           /* no idle TTL anywhere: do not stop the shards */
        pthread_mutex_unlock(&e->mu);
        return 0;
    }
    seq_barrier_enter(e);                 /* reads the stores directly: shards idle */
    int64_t now = wall_ms();
    for (size_t visited = 0; visited < nt * e->nshards && scanned < budget; visited++) {
        if (e->sweep_table >= nt) {
            e->sweep_table = 0;
            e->sweep_shard = 0;
            e->sweep_slot = 0;
        }
        agg_table *t = tables[e->sweep_table];
        const ev_desc *ev = registry_event(e->reg, t->source);
        entity_store *s = table_store(t, e->sweep_shard);
        if (ev && ev->cold_after_ms > 0) {
            while (e->sweep_slot < s->cap && scanned < budget) {
                entity *en = s->slots[e->sweep_slot].e;
                scanned++;
                if (en && en->last_seen_ms > 0 && now - en->last_seen_ms > ev->cold_after_ms) {
                    size_t row_size = entity_row_size(t, en);
                    entity_destroy_states(t, en);
                    store_remove(s, en, row_size);   /* a later entry may shift into this slot: look again */
                    evicted++;
                    continue;
                }
                e->sweep_slot++;
            }
            if (e->sweep_slot < s->cap) break;       /* budget spent inside this store */
        }
        e->sweep_slot = 0;
        if (++e->sweep_shard >= e->nshards) {
            e->sweep_shard = 0;
            e->sweep_table++;
        }
    }
    e->swept_evictions += evicted;
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
    return evicted;
}

/* ---- metrics ------------------------------------------------------------------------ */

static void metric(bv_buf *out, const char *name, const char *type, const char *help, const char *value) {
    bv_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, type, name, value);
}

static void metric_u64(bv_buf *out, const char *name, const char *type, const char *help, uint64_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    metric(out, name, type, help, tmp);
}

typedef struct size_hist {
    uint64_t buckets[64];          /* power-of-two size classes */
    uint64_t total;
    const agg_table *t;
} size_hist;

static void size_cb(void *ctx, entity *en) {
    size_hist *h = ctx;
    size_t sz = entity_alloc_size(en->key_len, entity_row_size(h->t, en));
    int b = 0;
    while (b < 63 && ((size_t)1 << b) < sz) b++;
    h->buckets[b]++;
    h->total++;
}

void engine_metrics(engine *e, bv_buf *out) {
    pthread_mutex_lock(&e->mu);
    seq_barrier_enter(e);                 /* reads the stores directly: shards idle */
    agg_table *const *tables;
    size_t nt = registry_tables(e->reg, &tables);
    uint64_t resident = 0, bytes = 0;
    size_hist hist;
    memset(&hist, 0, sizeof hist);
    for (size_t i = 0; i < nt; i++)
        for (unsigned sh = 0; sh < e->nshards; sh++) {
            entity_store *s = table_store(tables[i], sh);
            resident += s->count;
            bytes += s->bytes;
            hist.t = tables[i];
            if (hist.total < 200000) store_foreach(s, size_cb, &hist);   /* a sample bounds the pause */
        }
    op_stats st;
    if (e->pool) shard_pool_stats(e->pool, &st);
    else memset(&st, 0, sizeof st);
    st.entropy_categories_capped += e->inline_ctx.stats.entropy_categories_capped;
    st.bucket_reclaim += e->inline_ctx.stats.bucket_reclaim;
    st.cold_evictions += e->inline_ctx.stats.cold_evictions + e->swept_evictions;
    uint64_t p99 = 0;
    if (hist.total) {
        uint64_t want = (hist.total * 99 + 99) / 100, seen = 0;
        for (int b = 0; b < 64; b++) {
            seen += hist.buckets[b];
            if (seen >= want) { p99 = (uint64_t)1 << b; break; }
        }
    }
    metric_u64(out, "beava_registry_version", "gauge", "Current registry version.", registry_version(e->reg));
    metric_u64(out, "beava_node_count", "gauge", "Registered descriptors (events + derivations).",
               registry_node_count(e->reg));
    bv_buf_puts(out, "# HELP beava_runtime_kind Data-plane runtime.\n# TYPE beava_runtime_kind gauge\n"
                     "beava_runtime_kind{runtime=\"libmicrohttpd\"} 1\n");
    metric_u64(out, "beava_entropy_categories_capped_total", "counter",
               "Entropy categories dropped beyond the 1024-category cap.", st.entropy_categories_capped);
    metric_u64(out, "beava_cold_entity_evictions_total", "counter",
               "Entity rows discarded by the cold_after_ms idle TTL.", st.cold_evictions);
    metric_u64(out, "beava_lifetime_op_cap_hit_total", "counter",
               "Lifetime operator caps hit (entropy category cap).", st.entropy_categories_capped);
    metric_u64(out, "beava_entity_count_resident", "gauge", "Entity rows resident in memory.", resident);
    metric_u64(out, "beava_bucket_reclaim_total", "counter", "Window buckets evicted by the 64-bucket cap.",
               st.bucket_reclaim);
    metric_u64(out, "beava_bytes_per_entity_p99", "gauge",
               "99th percentile of entity row allocation size (power-of-two class, fixed part).", p99);
    metric_u64(out, "beava_entity_bytes", "gauge", "Bytes held by entity rows (fixed part).", bytes);
    metric_u64(out, "beava_events_applied_total", "counter", "Events accepted and applied.", e->events_applied);
    metric_u64(out, "beava_events_rejected_total", "counter", "Events rejected by validation.", e->events_rejected);
    metric_u64(out, "beava_events_replayed_total", "counter", "Pushes answered from the dedupe cache.",
               e->events_replayed);
    metric_u64(out, "beava_dedupe_entries", "gauge", "Entries in the dedupe cache.", e->dedupe.count);
    metric_u64(out, "beava_wal_append_failures_total", "counter", "Records the WAL refused.", e->wal_failures);
    metric_u64(out, "beava_registry_changes_total", "counter", "Register calls that changed the registry.",
               e->registers_applied);
    metric_u64(out, "beava_overloaded_total", "counter", "Requests refused with 503 overloaded (shard queues full).",
               e->overloaded);
    metric_u64(out, "beava_shards", "gauge", "Apply shards.", e->nshards);
    metric_u64(out, "beava_entity_keys_too_long_total", "counter",
               "Entity keys longer than the cap (event skipped for that table).", e->keys_too_long);
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
}

/* ---- shards ------------------------------------------------------------------------- */

int engine_start_shards(engine *e, size_t queue_capacity) {
    pthread_mutex_lock(&e->mu);
    if (!e->pool && e->nshards > 0) e->pool = shard_pool_start(e->nshards, queue_capacity ? queue_capacity : 4096);
    int rc = e->pool ? 0 : -1;
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void engine_pause_shard(engine *e, unsigned shard, bool paused) {
    if (e->pool) shard_pause(e->pool, shard, paused);
}

unsigned engine_shard_of(engine *e, const char *table, const char *key) {
    pthread_mutex_lock(&e->mu);
    agg_table *t = registry_table(e->reg, table);
    char kbuf[STORE_MAX_KEY + 1];
    int kl = t ? parse_get_key(t, key, strlen(key), kbuf, sizeof kbuf) : -1;
    unsigned sh = kl < 0 ? UINT32_MAX : shard_for(e, t, store_hash(kbuf, (size_t)kl));
    pthread_mutex_unlock(&e->mu);
    return sh;
}

/* ---- recovery ----------------------------------------------------------------------- */

uint64_t engine_applied_lsn(engine *e) {
    pthread_mutex_lock(&e->mu);
    uint64_t v = e->applied_lsn;
    pthread_mutex_unlock(&e->mu);
    return v;
}

static void replay_done(engine *e, uint64_t lsn) {
    if (lsn > e->last_lsn) e->last_lsn = lsn;
    if (lsn > e->applied_lsn) e->applied_lsn = lsn;
}

int engine_replay(engine *e, int kind, uint64_t lsn, const void *payload, size_t len, char *reason, size_t rlen) {
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    switch (kind) {
    case REC_REGISTER: {
        bv_buf out;
        bv_buf_init(&out);
        reg_plan *plan = NULL;
        int st = registry_prepare(e->reg, payload, len, &out, &plan);
        if (plan) {
            out.len = 0;
            registry_apply(e->reg, plan, &e->hooks, &out);
            history_add(e, REC_REGISTER, payload, len);
        } else {
            /* it changed the registry when it was logged, so it must again */
            snprintf(reason, rlen, "register record at LSN %llu no longer applies (status %d: %.200s)",
                     (unsigned long long)lsn, st, out.data ? out.data : "");
            rc = -1;
        }
        bv_buf_free(&out);
        break;
    }
    case REC_RESET:
        reset_locked(e);
        history_add(e, REC_RESET, "", 0);
        break;
    case REC_EVENT: {
        int64_t rnow;
        const char *name;
        size_t nl;
        json_t *data;
        char why[200];
        if (evrec_decode(payload, len, &rnow, &name, &nl, &data, why, sizeof why) != 0) {
            snprintf(reason, rlen, "event record at LSN %llu: %s", (unsigned long long)lsn, why);
            rc = -1;
            break;
        }
        uint64_t now = (uint64_t)rnow;
        push_result res;
        memset(&res, 0, sizeof res);
        const ev_desc *ev = NULL;
        if (push_validate(e, name, nl, data, &ev, &res)) {
            push_job *job = push_job_new(e, ev, &e->row, (int64_t)now);
            while (!push_job_fits(e, job)) {   /* only when replaying into running shards */
                struct timespec ts = { 0, 200000 };
                nanosleep(&ts, NULL);
            }
            push_job_dispatch(e, job, (int64_t)now);
            if (e->pool) shard_pool_kick(e->pool);
            push_job_finish(job);
            e->events_applied++;
            char dk[STORE_MAX_KEY + REGISTRY_NAME_MAX + 8];
            int dkl = dedupe_key(ev, &e->row, dk, sizeof dk);
            if (dkl >= 0 && (int64_t)now + ev->dedupe_window_ms > wall_ms())
                dedupe_remember(e, dk, (size_t)dkl, store_hash(dk, (size_t)dkl), (int64_t)now + ev->dedupe_window_ms,
                                lsn, registry_version(e->reg), (int64_t)now);
        } else {
            /* valid when logged: the registry history says otherwise, which is corruption */
            snprintf(reason, rlen, "event record at LSN %llu no longer validates: %s %s", (unsigned long long)lsn,
                     res.code, res.reason);
            rc = -1;
        }
        json_decref(data);
        break;
    }
    default:
        snprintf(reason, rlen, "record at LSN %llu has unknown kind %d", (unsigned long long)lsn, kind);
        rc = -1;
    }
    replay_done(e, lsn);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* ---- snapshots ---------------------------------------------------------------------- */

#define SNAP_MAGIC "BVSNAP01"

typedef struct snap_out {
    engine_write_fn write;
    void *ctx;
    bv_buf buf;
    int failed;
} snap_out;

static void so_flush(snap_out *so) {
    if (so->buf.len && !so->failed && so->write(so->ctx, so->buf.data, so->buf.len) != 0) so->failed = 1;
    so->buf.len = 0;
}

static void so_put(snap_out *so, const void *p, size_t n) {
    bv_buf_put(&so->buf, p, n);
    if (so->buf.len >= (1u << 20)) so_flush(so);
}

static void so_u32(snap_out *so, uint32_t v) { so_put(so, &v, 4); }
static void so_u64(snap_out *so, uint64_t v) { so_put(so, &v, 8); }
static void so_str(snap_out *so, const char *s, size_t n) {
    so_u32(so, (uint32_t)n);
    so_put(so, s, n);
}

typedef struct snap_table_ctx {
    snap_out *so;
    agg_table *t;
    bv_buf state;
} snap_table_ctx;

static void snap_entity(void *ctx, entity *en) {
    snap_table_ctx *c = ctx;
    agg_table *t = c->t;
    so_str(c->so, entity_key(en), en->key_len);
    so_u64(c->so, (uint64_t)en->last_seen_ms);
    const char *row = entity_row_const(en);
    for (size_t i = 0; i < t->nfeatures; i++) {
        c->state.len = 0;
        if (i < en->nfeat) feature_encode(&t->features[i], row + t->offsets[i], &c->state);
        so_u32(c->so, (uint32_t)c->state.len);       /* 0 = slot not initialised yet */
        so_put(c->so, c->state.data, c->state.len);
    }
}

typedef struct snap_dedupe_ctx { snap_out *so; } snap_dedupe_ctx;

static void snap_dedupe(void *ctx, entity *en) {
    snap_dedupe_ctx *c = ctx;
    const dedupe_row *d = entity_row_const(en);
    so_str(c->so, entity_key(en), en->key_len);
    so_u64(c->so, (uint64_t)d->expiry_ms);
    so_u64(c->so, d->ack_lsn);
    so_u64(c->so, d->registry_version);
}

int engine_serialize(engine *e, engine_write_fn write, void *ctx) {
    snap_out so = { .write = write, .ctx = ctx };
    bv_buf_init(&so.buf);
    so_put(&so, SNAP_MAGIC, 8);
    so_u64(&so, registry_version(e->reg));
    so_u64(&so, e->applied_lsn);
    so_u64(&so, (uint64_t)e->watermark_ms);
    so_u64(&so, e->history.len);
    so_put(&so, e->history.data, e->history.len);
    so_u64(&so, e->dedupe.count);
    snap_dedupe_ctx dc = { &so };
    store_foreach(&e->dedupe, snap_dedupe, &dc);
    agg_table *const *tables;
    size_t nt = registry_tables(e->reg, &tables);
    so_u32(&so, (uint32_t)nt);
    for (size_t i = 0; i < nt; i++) {
        agg_table *t = tables[i];
        so_str(&so, t->name, strlen(t->name));
        so_u32(&so, (uint32_t)t->nfeatures);
        for (size_t f = 0; f < t->nfeatures; f++) so_str(&so, t->features[f].name, strlen(t->features[f].name));
        uint64_t count = 0;
        for (unsigned sh = 0; sh < e->nshards; sh++) count += table_store(t, sh)->count;
        so_u64(&so, count);
        snap_table_ctx tc = { .so = &so, .t = t };
        bv_buf_init(&tc.state);
        for (unsigned sh = 0; sh < e->nshards; sh++) store_foreach(table_store(t, sh), snap_entity, &tc);
        bv_buf_free(&tc.state);
    }
    so_flush(&so);
    bv_buf_free(&so.buf);
    return so.failed ? -1 : 0;
}

int engine_quiesce(engine *e, int (*fn)(void *ctx, uint64_t lsn, uint64_t version), void *ctx) {
    pthread_mutex_lock(&e->mu);
    seq_barrier_enter(e);
    int rc = fn(ctx, e->applied_lsn, registry_version(e->reg));
    seq_barrier_leave(e);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

typedef struct snap_in {
    const uint8_t *p, *end;
    bool bad;
} snap_in;

static bool si_take(snap_in *si, void *out, size_t n) {
    if (si->bad || (size_t)(si->end - si->p) < n) {
        si->bad = true;
        return false;
    }
    if (out) memcpy(out, si->p, n);
    si->p += n;
    return true;
}

static uint32_t si_u32(snap_in *si) { uint32_t v = 0; si_take(si, &v, 4); return v; }
static uint64_t si_u64(snap_in *si) { uint64_t v = 0; si_take(si, &v, 8); return v; }

static const char *si_str(snap_in *si, uint32_t *n) {
    *n = si_u32(si);
    const char *s = (const char *)si->p;
    if (!si_take(si, NULL, *n)) return NULL;
    return s;
}

int engine_deserialize(engine *e, const void *body, size_t len, char *reason, size_t rlen) {
    snap_in si = { .p = body, .end = (const uint8_t *)body + len };
    char magic[8];
    size_t *slot_of = NULL;
    int rc = -1;
    pthread_mutex_lock(&e->mu);
    if (!si_take(&si, magic, 8) || memcmp(magic, SNAP_MAGIC, 8) != 0) {
        snprintf(reason, rlen, "snapshot body has a bad magic");
        goto out;
    }
    uint64_t version = si_u64(&si), applied = si_u64(&si), watermark = si_u64(&si), hlen = si_u64(&si);
    const uint8_t *h = si.p;
    if (!si_take(&si, NULL, hlen)) goto truncated;
    /* replay the registry history: the exact registry, version and slot order */
    for (const uint8_t *p = h; p < h + hlen;) {
        if ((size_t)(h + hlen - p) < 5) goto corrupt_history;
        uint8_t kind = p[0];
        uint32_t l;
        memcpy(&l, p + 1, 4);
        p += 5;
        if ((size_t)(h + hlen - p) < l) goto corrupt_history;
        if (kind == REC_RESET) {
            reset_locked(e);
        } else {
            bv_buf out;
            bv_buf_init(&out);
            reg_plan *plan = NULL;
            registry_prepare(e->reg, (const char *)p, l, &out, &plan);
            if (plan) {
                out.len = 0;
                registry_apply(e->reg, plan, &e->hooks, &out);
            }
            bv_buf_free(&out);
        }
        history_add(e, kind, p, l);
        p += l;
    }
    if (registry_version(e->reg) != version) {
        snprintf(reason, rlen, "snapshot registry history rebuilds version %llu, header says %llu",
                 (unsigned long long)registry_version(e->reg), (unsigned long long)version);
        goto out;
    }
    uint64_t nd = si_u64(&si);
    for (uint64_t i = 0; i < nd && !si.bad; i++) {
        uint32_t kl;
        const char *k = si_str(&si, &kl);
        uint64_t expiry = si_u64(&si), lsn = si_u64(&si), ver = si_u64(&si);
        if (si.bad || kl > STORE_MAX_KEY + REGISTRY_NAME_MAX + 8) goto truncated;
        dedupe_remember(e, k, kl, store_hash(k, kl), (int64_t)expiry, lsn, ver, 0);
    }
    uint32_t nt = si_u32(&si);
    for (uint32_t ti = 0; ti < nt && !si.bad; ti++) {
        uint32_t nl;
        const char *name = si_str(&si, &nl);
        if (!name || nl > REGISTRY_NAME_MAX) goto truncated;
        char tname[REGISTRY_NAME_MAX + 1];
        memcpy(tname, name, nl);
        tname[nl] = 0;
        agg_table *t = registry_table(e->reg, tname);
        if (!t) {
            snprintf(reason, rlen, "snapshot names table '%s' that its registry history does not define", tname);
            goto out;
        }
        uint32_t nf = si_u32(&si);
        if (nf > 100000) goto truncated;
        free(slot_of);
        slot_of = calloc(nf ? nf : 1, sizeof *slot_of);
        if (!slot_of) goto out;
        for (uint32_t f = 0; f < nf; f++) {
            uint32_t fl;
            const char *fn = si_str(&si, &fl);
            if (!fn) goto truncated;
            slot_of[f] = SIZE_MAX;
            for (size_t k = 0; k < t->nfeatures; k++)
                if (strlen(t->features[k].name) == fl && memcmp(t->features[k].name, fn, fl) == 0) slot_of[f] = k;
            if (slot_of[f] == SIZE_MAX) {
                snprintf(reason, rlen, "snapshot feature %.*s is not in table %s", (int)fl, fn, tname);
                goto out;
            }
        }
        uint64_t ne = si_u64(&si);
        for (uint64_t i = 0; i < ne && !si.bad; i++) {
            uint32_t kl;
            const char *k = si_str(&si, &kl);
            uint64_t last_seen = si_u64(&si);
            if (!k || kl > STORE_MAX_KEY) goto truncated;
            uint64_t kh = store_hash(k, kl);
            entity *en = store_insert(table_store(t, shard_for(e, t, kh)), k, kl, kh, t->row_size);
            if (!en) goto out;
            entity_init_states(t, en, 0);
            en->last_seen_ms = (int64_t)last_seen;
            char *row = entity_row(en);
            for (uint32_t f = 0; f < nf; f++) {
                uint32_t sl = si_u32(&si);
                const uint8_t *sp = si.p;
                if (!si_take(&si, NULL, sl)) goto truncated;
                if (sl == 0) continue;
                const feature *ft = &t->features[slot_of[f]];
                const uint8_t *cur = sp;
                if (feature_decode(ft, row + t->offsets[slot_of[f]], &cur, sp + sl) != 0) {
                    snprintf(reason, rlen, "snapshot state of %s.%s cannot be decoded", tname, ft->name);
                    goto out;
                }
            }
        }
    }
    if (si.bad) goto truncated;
    e->applied_lsn = e->last_lsn = applied;
    e->watermark_ms = (int64_t)watermark;
    rc = 0;
    goto out;
corrupt_history:
    snprintf(reason, rlen, "snapshot registry history is corrupt");
    goto out;
truncated:
    snprintf(reason, rlen, "snapshot body is truncated or malformed");
out:
    free(slot_of);
    pthread_mutex_unlock(&e->mu);
    return rc;
}
