/*
 * engine.c - the engine's lifecycle, the registry hooks that give every table its
 * per-shard entity stores, registry changes, reset, ping, info and metrics (see
 * engine.h for the whole picture and engine_int.h for the locks).
 *
 * Entity rows widen lazily: when the registry appends features to a live table
 * (additive change without force), rows created before keep their bytes and get the
 * new slots initialised on their next access (entity.nfeat < table.nfeatures).
 */
#include "engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"

int64_t engine_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- entity rows -------------------------------------------------------------------- */

size_t entity_row_size(const agg_table *t, const entity *en) {
    return en->nfeat < t->nfeatures ? t->offsets[en->nfeat] : t->row_size;
}

void entity_destroy_states(const agg_table *t, entity *en) {
    char *row = entity_row(en);
    for (size_t i = 0; i < en->nfeat && i < t->nfeatures; i++)
        feature_state_destroy(&t->features[i], row + t->offsets[i]);
}

void entity_init_states(const agg_table *t, entity *en, size_t from) {
    char *row = entity_row(en);
    for (size_t i = from; i < t->nfeatures; i++)
        feature_state_init(&t->features[i], row + t->offsets[i]);
    en->nfeat = (uint32_t)t->nfeatures;
}

/* Widen a row created before features were appended to its table. */
entity *entity_ensure(agg_table *t, entity_store *s, entity *en) {
    if (en->nfeat >= t->nfeatures) return en;
    size_t from = en->nfeat;
    entity *n = store_grow(s, en, entity_row_size(t, en), t->row_size);
    if (!n) abort();
    entity_init_states(t, n, from);
    return n;
}

/* A table's entities are split over nshards stores, one per shard: shard = hash(table,
 * key) mod N. Only a holder of that shard's state lock touches a store. */
entity_store *table_store(const agg_table *t, unsigned shard) {
    return &((entity_store *)t->store)[shard];
}

unsigned engine_shard_for(const engine *e, const agg_table *t, uint64_t key_hash) {
    if (e->nshards <= 1) return 0;
    uint64_t x = key_hash ^ (t->id * 0x9E3779B97F4A7C15ull);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (unsigned)(x % e->nshards);
}

typedef struct destroy_ctx { const agg_table *t; } destroy_ctx;

static void destroy_cb(void *ctx, entity *en) {
    destroy_ctx *d = ctx;
    entity_destroy_states(d->t, en);
}

/* Registry hooks: table_added as a version is built (a fresh store nobody reads yet);
 * table_removed as the last version holding a table is freed or a build is discarded
 * (no reader, no queued part can reach the store). */
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
    (void)ctx;
    (void)t;
    (void)old_nfeatures;          /* rows widen lazily (entity_ensure) */
}

/* ---- lifecycle ---------------------------------------------------------------------- */

engine *engine_new(const engine_options *opts) {
    engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->opt = *opts;
    e->nshards = opts->shards ? opts->shards : 1;
    if (e->nshards > SHARD_MAX) e->nshards = SHARD_MAX;
    pthread_mutex_init(&e->bar_mu, NULL);
    pthread_cond_init(&e->bar_cv, NULL);
    pthread_cond_init(&e->drain_cv, NULL);
    pthread_mutex_init(&e->seq_mu, NULL);
    pthread_mutex_init(&e->sweep_mu, NULL);
    pthread_mutex_init(&e->apply_mu, NULL);
    pthread_mutex_init(&e->reg_change_mu, NULL);
    pthread_mutex_init(&e->hold_mu, NULL);
    pthread_cond_init(&e->hold_cv, NULL);
    pthread_cond_init(&e->park_cv, NULL);
    bv_buf_init(&e->history);
    store_init(&e->dedupe);
    e->dedupe_purge_at = DEDUPE_PURGE_MIN;
    registry_options ro = { .memory_gov_enforce = opts->memory_gov_enforce };
    regver *h = calloc(1, sizeof *h);
    if (h) h->reg = registry_new(&ro);
    atomic_store(&e->cur, h);
    atomic_store(&e->versions_retained, 1);
    static const shard_prefetch prefetch = { push_part_prefetch, push_part_prefetch_entity, push_part_prefetch_states };
    e->pool = shard_pool_new(e->nshards, opts->queue_capacity ? opts->queue_capacity : 4096, &prefetch);
    e->hooks.ctx = e;
    e->hooks.table_added = hook_table_added;
    e->hooks.table_removed = hook_table_removed;
    e->hooks.table_widened = hook_table_widened;
    if (!h || !h->reg || !e->pool) {
        engine_free(e);
        return NULL;
    }
    return e;
}

static void free_holders(regver *h) {
    while (h) {
        regver *next = h->next;
        free(h);
        h = next;
    }
}

void engine_free(engine *e) {
    if (!e) return;
    push_durability_stop(e);
    push_replay_done(e);
    shard_pool_free(e->pool);                 /* runs what is queued, joins */
    for (regver *v = e->retired_head; v; v = v->next) registry_free(v->reg, &e->hooks);   /* oldest first */
    free_holders(e->retired_head);
    free_holders(e->spare);
    regver *cur = atomic_load(&e->cur);
    if (cur) registry_free(cur->reg, &e->hooks);
    free(cur);
    store_free(&e->dedupe);
    bv_buf_free(&e->history);
    pthread_cond_destroy(&e->park_cv);
    pthread_cond_destroy(&e->hold_cv);
    pthread_mutex_destroy(&e->hold_mu);
    pthread_mutex_destroy(&e->sweep_mu);
    pthread_mutex_destroy(&e->apply_mu);
    pthread_mutex_destroy(&e->reg_change_mu);
    pthread_mutex_destroy(&e->seq_mu);
    pthread_cond_destroy(&e->drain_cv);
    pthread_cond_destroy(&e->bar_cv);
    pthread_mutex_destroy(&e->bar_mu);
    free(e);
}

int engine_start_shards(engine *e) {
    push_replay_done(e);
    if (shard_pool_run(e->pool) != 0) return -1;
    return push_durability_start(e);
}

/* ---- registry versions (engine_int.h) ------------------------------------------------- */

registry *engine_pin(engine *e, regver **pin) {
    for (;;) {
        regver *v = atomic_load_explicit(&e->cur, memory_order_seq_cst);
        atomic_fetch_add_explicit(&v->readers, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&e->cur, memory_order_seq_cst) == v) {
            *pin = v;
            return v->reg;
        }
        /* replaced meanwhile (the holder itself is never freed): pin the new one */
        engine_unpin(e, v);
    }
}

void engine_unpin(engine *e, regver *pin) {
    /* the last reader of a holder a barrier waits for wakes it (seq_cst on both sides:
     * either this sees drain_wait, or the barrier sees the count at 0) */
    if (atomic_fetch_sub_explicit(&pin->readers, 1, memory_order_seq_cst) == 1 &&
        atomic_load_explicit(&pin->drain_wait, memory_order_seq_cst)) {
        pthread_mutex_lock(&e->bar_mu);
        pthread_cond_broadcast(&e->drain_cv);
        pthread_mutex_unlock(&e->bar_mu);
    }
}

bool engine_barrier_wait(engine *e, regver *pin) {
    if (!atomic_load_explicit(&e->barrier_on, memory_order_seq_cst)) return false;
    engine_unpin(e, pin);
    pthread_mutex_lock(&e->bar_mu);
    while (atomic_load_explicit(&e->barrier_on, memory_order_relaxed)) pthread_cond_wait(&e->bar_cv, &e->bar_mu);
    pthread_mutex_unlock(&e->bar_mu);
    return true;
}

registry *engine_reg(engine *e) {
    return atomic_load_explicit(&e->cur, memory_order_relaxed)->reg;
}

regver *engine_holder(engine *e) {
    regver *h = e->spare;
    if (h) e->spare = h->next;
    else if (!(h = calloc(1, sizeof *h))) abort();
    h->next = NULL;
    h->keep_reg = false;
    return h;
}

void engine_publish_locked(engine *e, regver *h, registry *next) {
    regver *old = atomic_load_explicit(&e->cur, memory_order_relaxed);
    h->reg = next;
    atomic_store_explicit(&e->cur, h, memory_order_seq_cst);
    atomic_store_explicit(&e->reg_version, registry_version(next), memory_order_release);
    old->next = NULL;
    if (e->retired_tail) e->retired_tail->next = old;
    else e->retired_head = old;
    e->retired_tail = old;
    atomic_fetch_add_explicit(&e->versions_retained, 1, memory_order_relaxed);
}

void engine_publish(engine *e, registry *next) {
    regver *h = engine_holder(e);
    pthread_mutex_lock(&e->seq_mu);
    engine_publish_locked(e, h, next);
    pthread_mutex_unlock(&e->seq_mu);
}

/* Free the retired versions no reader pins, oldest first, if no part judged on them can
 * be left (drained: the caller knows the shards applied everything sequenced). The pins
 * are read first: a push unpins only after its inline parts are applied and its other
 * parts are queued or parked, so the park list and then the rings are looked at after. */
static void reclaim_locked(engine *e, bool drained) {
    size_t n = 0;
    for (regver *v = e->retired_head; v && atomic_load_explicit(&v->readers, memory_order_seq_cst) == 0; v = v->next)
        n++;
    if (n == 0) return;
    if (!drained) {
        pthread_mutex_lock(&e->seq_mu);
        bool parked = e->park_head != NULL;
        pthread_mutex_unlock(&e->seq_mu);
        if (parked || !shard_pool_idle(e->pool)) return;
    }
    while (n--) {
        regver *v = e->retired_head;
        e->retired_head = v->next;
        if (!e->retired_head) e->retired_tail = NULL;
        if (!v->keep_reg) registry_free(v->reg, &e->hooks);
        v->reg = NULL;
        v->next = e->spare;
        e->spare = v;
        atomic_fetch_sub_explicit(&e->versions_retained, 1, memory_order_relaxed);
    }
}

/* ---- the barrier -------------------------------------------------------------------- */

/* Hold pushes off: raise the flag, publish a fence (the same registry in a new holder),
 * wait until nothing pins the holder before it (see the top of engine_int.h). */
static void barrier_fence(engine *e) {
    pthread_mutex_lock(&e->bar_mu);
    atomic_store_explicit(&e->barrier_on, true, memory_order_seq_cst);
    pthread_mutex_unlock(&e->bar_mu);
    regver *old = atomic_load_explicit(&e->cur, memory_order_relaxed);
    regver *h = engine_holder(e);
    old->keep_reg = true;                         /* the fence holds its registry now */
    pthread_mutex_lock(&e->seq_mu);
    engine_publish_locked(e, h, old->reg);
    pthread_mutex_unlock(&e->seq_mu);
    pthread_mutex_lock(&e->bar_mu);
    atomic_store_explicit(&old->drain_wait, true, memory_order_seq_cst);
    while (atomic_load_explicit(&old->readers, memory_order_seq_cst) != 0) pthread_cond_wait(&e->drain_cv, &e->bar_mu);
    atomic_store_explicit(&old->drain_wait, false, memory_order_relaxed);
    pthread_mutex_unlock(&e->bar_mu);
}

void engine_barrier_enter(engine *e) {
    pthread_mutex_lock(&e->reg_change_mu);        /* no register between its record and its apply */
    pthread_mutex_lock(&e->apply_mu);             /* no engine_apply_logged half done */
    push_replay_flush(e);                         /* recovery: gathered events apply first */
    barrier_fence(e);                             /* no push is past validation now */
    pthread_mutex_unlock(&e->apply_mu);
    push_drain_applied(e);
    pthread_mutex_lock(&e->sweep_mu);             /* the sweeper keeps off the stores */
}

void engine_barrier_leave(engine *e) {
    reclaim_locked(e, true);                      /* drained: only pins can hold a version */
    pthread_mutex_unlock(&e->sweep_mu);
    pthread_mutex_lock(&e->bar_mu);
    atomic_store_explicit(&e->barrier_on, false, memory_order_seq_cst);
    pthread_cond_broadcast(&e->bar_cv);
    pthread_mutex_unlock(&e->bar_mu);
    pthread_mutex_unlock(&e->reg_change_mu);
}

void engine_reclaim_retired(engine *e) {
    if (pthread_mutex_trylock(&e->reg_change_mu) != 0) return;   /* a change runs: next time */
    reclaim_locked(e, false);
    pthread_mutex_unlock(&e->reg_change_mu);
}

void engine_history_add(engine *e, int kind, const void *p, size_t n) {
    unsigned char h[5];
    h[0] = (unsigned char)kind;
    codec_put32(h + 1, (uint32_t)n);
    bv_buf_put(&e->history, h, 5);
    bv_buf_put(&e->history, p, n);
}

void engine_reset_state(engine *e) {
    registry *next = registry_next(engine_reg(e));
    registry_reset(next, &e->hooks);
    engine_publish(e, next);
    dedupe_clear(e);
    atomic_store(&e->watermark_ms, 0);
}

void engine_apply_plan(engine *e, reg_plan *plan, bv_buf *out) {
    registry *next = registry_next(engine_reg(e));
    registry_apply(next, plan, &e->hooks, out);
    engine_publish(e, next);
}

/* ---- the log seam ------------------------------------------------------------------- */

int engine_log_append(engine *e, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason,
                      size_t rlen) {
    if (!e->opt.wal.append) {
        *lsn = ++e->last_lsn;
        return 0;
    }
    int rc = e->opt.wal.append(e->opt.wal.ctx, kind, payload, len, lsn, reason, rlen);
    if (rc != 0) {
        atomic_fetch_add_explicit(&e->wal_failures, 1, memory_order_relaxed);
        return rc == ENGINE_LOG_CONFLICT ? rc : -1;
    }
    e->last_lsn = *lsn;
    return 0;
}

int engine_log_wait(engine *e, uint64_t lsn, char *reason, size_t rlen) {
    if (!e->opt.wal.append) return 0;
    int rc = e->opt.wal.wait(e->opt.wal.ctx, lsn, reason, rlen);
    if (rc != 0) atomic_fetch_add_explicit(&e->wal_failures, 1, memory_order_relaxed);
    return rc;
}

/* Append a registry/reset record and wait until it is durable (barrier held). */
static int log_durably(engine *e, int kind, const void *payload, size_t len, char *reason, size_t rlen) {
    uint64_t lsn;
    pthread_mutex_lock(&e->seq_mu);
    int rc = engine_log_append(e, kind, payload, len, &lsn, reason, rlen);
    pthread_mutex_unlock(&e->seq_mu);
    if (rc == 0) rc = engine_log_wait(e, lsn, reason, rlen);
    return rc;
}

/* ---- the error envelope ------------------------------------------------------------- */

void engine_error_body(bv_buf *out, const char *code, const char *reason_key, const char *reason, bool with_version,
                       uint64_t version) {
    jsonw_member m = { .key = reason_key, .str = reason };
    jsonw_error(out, code, &m, reason_key && reason ? 1 : 0, with_version, version);
}

/* ---- register / reset --------------------------------------------------------------- */

/* The register's failure bodies (nothing was applied). */
static int register_refused(engine *e, int lrc, const char *reason, bv_buf *out) {
    out->len = 0;
    if (lrc == ENGINE_LOG_CONFLICT) {         /* cluster: another register got in first */
        engine_error_body(out, "registry_conflict", "reason", reason, true, engine_registry_version(e));
        return 409;
    }
    char msg[400];
    snprintf(msg, sizeof msg, "WAL append for registry bump failed; registry not mutated (%s)", reason);
    engine_error_body(out, "wal_unavailable", "reason", msg, true, engine_registry_version(e));
    return 503;
}

/* The next version with the plan applied (reg_change_mu held), beside readers. */
static registry *register_build(engine *e, reg_plan *plan, bv_buf *out) {
    registry *next = registry_next(engine_reg(e));
    out->len = 0;
    registry_apply(next, plan, &e->hooks, out);
    return next;
}

/* Test hook: a change waits here, built and not yet published, while it is held. */
static void register_hold_point(engine *e) {
    pthread_mutex_lock(&e->hold_mu);
    if (e->hold_on) {
        e->holding = true;
        pthread_cond_broadcast(&e->hold_cv);
        while (e->hold_on) pthread_cond_wait(&e->hold_cv, &e->hold_mu);
        e->holding = false;
    }
    pthread_mutex_unlock(&e->hold_mu);
}

void engine_hold_registry_changes(engine *e, bool on) {
    pthread_mutex_lock(&e->hold_mu);
    e->hold_on = on;
    pthread_cond_broadcast(&e->hold_cv);
    pthread_mutex_unlock(&e->hold_mu);
}

void engine_wait_registry_held(engine *e) {
    pthread_mutex_lock(&e->hold_mu);
    while (!e->holding) pthread_cond_wait(&e->hold_cv, &e->hold_mu);
    pthread_mutex_unlock(&e->hold_mu);
}

static void register_applied(engine *e, const char *body, size_t len) {
    engine_history_add(e, REC_REGISTER, body, len);
    atomic_fetch_add_explicit(&e->registers_applied, 1, memory_order_relaxed);
}

/* If another change got in since the plan was judged, judge the body again on the new
 * base (*plan may become NULL: answered without a change). Returns the status to answer. */
static int rejudge_if_stale(engine *e, const char *body, size_t len, bv_buf *out, reg_plan **plan, int status) {
    if (reg_plan_current(engine_reg(e), *plan)) return status;
    reg_plan_free(*plan);
    *plan = NULL;
    out->len = 0;
    return registry_prepare(engine_reg(e), body, len, out, plan);
}

/* Cluster mode: the log append is a synchronous publish with its own conflict check,
 * done inside the full barrier (pushes are published to the partitions, not sequenced
 * here, so the gate would not order them). */
static int register_in_barrier(engine *e, const char *body, size_t len, bv_buf *out, reg_plan *plan) {
    int status = 200;
    engine_barrier_enter(e);
    status = rejudge_if_stale(e, body, len, out, &plan, status);
    if (plan) {
        char reason[256];
        int lrc = log_durably(e, REC_REGISTER, body, len, reason, sizeof reason);
        if (lrc != 0) {
            reg_plan_free(plan);
            status = register_refused(e, lrc, reason, out);
        } else {
            engine_publish(e, register_build(e, plan, out));
            register_applied(e, body, len);
            status = 200;
        }
    }
    engine_barrier_leave(e);
    return status;
}

/* A log that never voids a record (batch durability) or no log: the next version is
 * built beside readers and published in the sequencer section that appends its record
 * (every record below the LSN was judged on the old version, every one above on the
 * new); only the reply waits for the disk. No drain: the old version, with everything a
 * queued part reads, is freed only once no such part is left (engine_reclaim_retired). */
static int register_at_append(engine *e, const char *body, size_t len, bv_buf *out, reg_plan *plan) {
    char reason[256];
    uint64_t lsn = 0;
    registry *next = register_build(e, plan, out);
    register_hold_point(e);
    regver *h = engine_holder(e);
    pthread_mutex_lock(&e->seq_mu);
    int lrc = engine_log_append(e, REC_REGISTER, body, len, &lsn, reason, sizeof reason);
    if (lrc == 0) engine_publish_locked(e, h, next);
    pthread_mutex_unlock(&e->seq_mu);
    if (lrc != 0) {
        h->next = e->spare;
        e->spare = h;
        registry_discard(next, &e->hooks);
        return register_refused(e, lrc, reason, out);
    }
    register_applied(e, body, len);
    if (engine_log_wait(e, lsn, reason, sizeof reason) != 0) {   /* the log closed first */
        char msg[400];
        snprintf(msg, sizeof msg, "the registry change is applied but the WAL closed before its record was durable (%s)",
                 reason);
        out->len = 0;
        engine_error_body(out, "wal_unavailable", "reason", msg, true, engine_registry_version(e));
        return 503;
    }
    return 200;
}

/* A log that may void the record (sync durability): through the gate (engine_int.h), so
 * that nothing is sequenced after the record until it is known durable. */
static int register_gated(engine *e, const char *body, size_t len, bv_buf *out, reg_plan *plan) {
    char reason[256];
    uint64_t lsn = 0;
    int status;
    pthread_mutex_lock(&e->seq_mu);
    int lrc = engine_log_append(e, REC_REGISTER, body, len, &lsn, reason, sizeof reason);
    if (lrc == 0) {                               /* records after lsn wait for the change */
        e->reg_gated = true;
        atomic_store_explicit(&e->reg_gate_hint, true, memory_order_relaxed);
    }
    pthread_mutex_unlock(&e->seq_mu);
    if (lrc != 0) {
        reg_plan_free(plan);
        return register_refused(e, lrc, reason, out);
    }
    lrc = engine_log_wait(e, lsn, reason, sizeof reason);
    registry *next = NULL;
    regver *h = NULL;
    if (lrc == 0) {
        next = register_build(e, plan, out);
        register_hold_point(e);
        h = engine_holder(e);
        status = 200;
    } else {                                      /* the WAL voided lsn (and, gated, nothing came after it) */
        reg_plan_free(plan);
        status = register_refused(e, lrc, reason, out);
    }
    push_batch_state *deferred = push_gate_lower(e, h, next);
    if (next) register_applied(e, body, len);
    push_resubmit(e, deferred);
    return status;
}

/* A register is judged (parsed, validated, diffed) on a pinned version, beside pushes
 * and reads: an invalid body, a dry run, a 409 force_required or a no-op is answered
 * without taking anything else. A change then builds the next version and publishes it:
 * at its append (register_at_append), or after its fsync behind the gate
 * (register_gated); it never waits for a shard or a reader. engine_int.h has the design. */
int engine_register(engine *e, const char *body, size_t len, bv_buf *out) {
    reg_plan *plan = NULL;
    if (e->opt.log.registry_catch_up)     /* cluster: judged on the registry the log holds now */
        e->opt.log.registry_catch_up(e->opt.log.ctx);
    regver *pin;
    int status = registry_prepare(engine_pin(e, &pin), body, len, out, &plan);
    engine_unpin(e, pin);
    if (!plan) return status;
    if (e->opt.log.publish) return register_in_barrier(e, body, len, out, plan);
    pthread_mutex_lock(&e->reg_change_mu);        /* only its holder changes the registry */
    status = rejudge_if_stale(e, body, len, out, &plan, status);
    if (plan) {
        if (!e->opt.wal.append || e->opt.wal.never_voids) status = register_at_append(e, body, len, out, plan);
        else status = register_gated(e, body, len, out, plan);
    }
    pthread_mutex_unlock(&e->reg_change_mu);
    return status;
}

int engine_reset(engine *e, bv_buf *out) {
    if (!e->opt.test_mode) {
        engine_error_body(out, "reset_disabled_in_production", "reason",
                          "OP_RESET requires server test_mode (set BEAVA_TEST_MODE=1 or pass Config { test_mode: true } "
                          "at server construction). See docs/error-codes.md.",
                          false, 0);
        return 403;
    }
    if (e->opt.log.reset) return e->opt.log.reset(e->opt.log.ctx, out);   /* cluster: in log order */
    engine_barrier_enter(e);
    char reason[256];
    if (log_durably(e, REC_RESET, "", 0, reason, sizeof reason) != 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "WAL append for reset failed; nothing was reset (%s)", reason);
        engine_error_body(out, "wal_unavailable", "reason", msg, true, engine_registry_version(e));
        engine_barrier_leave(e);
        return 503;
    }
    engine_reset_state(e);
    engine_history_add(e, REC_RESET, "", 0);
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "registry_version");
    jsonw_u64(&w, engine_registry_version(e));
    jsonw_key(&w, "reset");
    jsonw_bool(&w, true);
    jsonw_obj_end(&w);
    engine_barrier_leave(e);
    return 200;
}

/* ---- small reads of the registry ------------------------------------------------------ */

/* Lock-free: pings and error envelopes never wait (set as each version is published). */
uint64_t engine_registry_version(engine *e) {
    return atomic_load_explicit(&e->reg_version, memory_order_acquire);
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
    regver *pin;
    registry *reg = engine_pin(e, &pin);
    uint64_t v = registry_version(reg);
    size_t n = registry_node_count(reg);
    engine_unpin(e, pin);
    bv_buf_printf(out, "{\"node_count\":%zu,\"version\":%llu}", n, (unsigned long long)v);
}

bool engine_has_table(engine *e, const char *table) {
    regver *pin;
    bool ok = registry_table(engine_pin(e, &pin), table) != NULL;
    engine_unpin(e, pin);
    return ok;
}

uint64_t engine_applied_lsn(engine *e) {
    pthread_mutex_lock(&e->seq_mu);
    uint64_t v = e->last_lsn;
    pthread_mutex_unlock(&e->seq_mu);
    return v;
}

void engine_pause_shard(engine *e, unsigned shard, bool paused) {
    shard_pause(e->pool, shard, paused);
}

/* Parse a get key ("a|b") into the internal form (0x1f-joined). Returns length, or -1
 * on arity mismatch. Shared with read.c through engine_parse_key. */
int engine_parse_key(const agg_table *t, const char *key, size_t klen, char *buf, size_t cap) {
    if (t->nkeys == 0) return klen == 0 ? 0 : -1;
    size_t segs = 1;
    for (size_t i = 0; i < klen; i++)
        if (key[i] == '|') segs++;
    if (segs != t->nkeys || klen >= cap) return -1;
    for (size_t i = 0; i < klen; i++) buf[i] = key[i] == '|' ? STORE_KEY_SEP : key[i];
    return (int)klen;
}

unsigned engine_shard_of(engine *e, const char *table, const char *key) {
    regver *pin;
    agg_table *t = registry_table(engine_pin(e, &pin), table);
    char kbuf[STORE_MAX_KEY + 1];
    int kl = t ? engine_parse_key(t, key, strlen(key), kbuf, sizeof kbuf) : -1;
    unsigned sh = kl < 0 ? UINT32_MAX : engine_shard_for(e, t, store_hash(kbuf, (size_t)kl));
    engine_unpin(e, pin);
    return sh;
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

#define METRICS_SIZE_SAMPLE 200000    /* entities sampled for the size histogram */

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

static uint64_t relaxed(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

void engine_metrics(engine *e, bv_buf *out) {
    regver *pin;
    registry *reg = engine_pin(e, &pin);
    agg_table *const *tables;
    size_t nt = registry_tables(reg, &tables);
    uint64_t resident = 0, bytes = 0;
    size_hist hist;
    memset(&hist, 0, sizeof hist);
    for (unsigned sh = 0; sh < e->nshards; sh++) {       /* one shard's state lock at a time */
        shard_lock(e->pool, sh);
        for (size_t i = 0; i < nt; i++) {
            entity_store *s = table_store(tables[i], sh);
            resident += s->count;
            bytes += s->bytes;
            hist.t = tables[i];
            if (hist.total < METRICS_SIZE_SAMPLE) store_foreach(s, size_cb, &hist);
        }
        shard_unlock(e->pool, sh);
    }
    op_stats st;
    shard_pool_stats(e->pool, &st);
    st.cold_evictions += relaxed(&e->swept_evictions);
    uint64_t p99 = 0;
    if (hist.total) {
        uint64_t want = (hist.total * 99 + 99) / 100, seen = 0;
        for (int b = 0; b < 64; b++) {
            seen += hist.buckets[b];
            if (seen >= want) { p99 = (uint64_t)1 << b; break; }
        }
    }
    pthread_mutex_lock(&e->seq_mu);
    uint64_t dedupe_entries = e->dedupe.count;
    pthread_mutex_unlock(&e->seq_mu);
    metric_u64(out, "beava_registry_version", "gauge", "Current registry version.", registry_version(reg));
    metric_u64(out, "beava_node_count", "gauge", "Registered descriptors (events + derivations).",
               registry_node_count(reg));
    metric_u64(out, "beava_registry_versions_retained", "gauge",
               "Registry versions in memory: the current one and those replaced but still readable.",
               engine_registry_versions_retained(e));
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
    metric_u64(out, "beava_events_applied_total", "counter", "Events accepted and applied.",
               relaxed(&e->events_applied));
    metric_u64(out, "beava_events_rejected_total", "counter", "Events rejected by validation.",
               relaxed(&e->events_rejected));
    metric_u64(out, "beava_events_replayed_total", "counter", "Pushes answered from the dedupe cache.",
               relaxed(&e->events_replayed));
    metric_u64(out, "beava_dedupe_entries", "gauge", "Entries in the dedupe cache.", dedupe_entries);
    metric_u64(out, "beava_wal_append_failures_total", "counter", "Records the WAL refused.",
               relaxed(&e->wal_failures));
    metric_u64(out, "beava_registry_changes_total", "counter", "Register calls that changed the registry.",
               relaxed(&e->registers_applied));
    metric_u64(out, "beava_overloaded_total", "counter", "Requests refused with 503 overloaded (shard queues full).",
               relaxed(&e->overloaded));
    metric_u64(out, "beava_shards", "gauge", "Apply shards.", e->nshards);
    metric_u64(out, "beava_entity_keys_too_long_total", "counter",
               "Entity keys longer than the cap (event skipped for that table).", relaxed(&e->keys_too_long));
    engine_unpin(e, pin);
}

uint64_t engine_registry_versions_retained(engine *e) {
    return atomic_load_explicit(&e->versions_retained, memory_order_relaxed);
}
