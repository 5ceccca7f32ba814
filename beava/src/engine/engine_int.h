/*
 * engine_int.h - the engine's private state, shared by its files (engine.c: lifecycle,
 * register, reset, metrics; push.c: the push path and the sequencer; read.c: gets;
 * dedupe.c; sweep.c; snapshot.c: serialise, restore, replay). Nothing outside
 * beava/src/engine/ includes it.
 *
 * Locks, in the only order they are ever nested:
 *   reg_lock (rwlock; pushes and reads share it, registry changes/reset/snapshots/metrics
 *             hold it as writers)
 *   -> seq_mu (the sequencer: LSNs, WAL appends, shard rings, the park list, dedupe)
 *   -> a shard's queue lock -> (trylock only) a shard's state lock
 * A reader takes reg_lock (shared) then one shard state lock at a time.
 * A register is judged under reg_lock shared (registry_prepare only reads); only a change
 * takes it as a writer, and the registry version is published atomically as the barrier
 * leaves, so pings never take reg_lock. Still missing (issue 13): a registry published by
 * pointer swap; today a change holds the writer lock while the shards quiesce and its
 * record becomes durable, and pushes and gets wait meanwhile.
 */
#ifndef BEAVA_ENGINE_INT_H
#define BEAVA_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "arena.h"
#include "engine.h"
#include "registry.h"
#include "shard.h"
#include "store.h"

#define DEDUPE_PURGE_MIN 1024
#define DEDUPE_SCOPE_MAX 12             /* "<u32 scope>" and a separator, before a scoped dedupe key */

typedef struct dedupe_row {
    int64_t expiry_ms;
    uint64_t ack_lsn;
    uint64_t registry_version;
} dedupe_row;

/* Recovery's scratch, reused record after record (push.c). Recovery runs before any
 * other thread touches the engine (listeners, shard threads and the snapshot thread start
 * after it), so replay keeps its counters here and publishes them once per flush. */
#define REPLAY_BATCH_MAX 256    /* event records applied together (prefetching) */

typedef struct engine_replay_ctx {
    engine_batch batch;
    struct item_state *istates;   /* REPLAY_BATCH_MAX, the batch state's items (not zeroed per group) */
    engine_push_item items[REPLAY_BATCH_MAX];
    uint64_t lsns[REPLAY_BATCH_MAX];
    arena arena;                  /* payload copies, decoded rows */
    struct evrec *recs;           /* REPLAY_BATCH_MAX decoded records */
    size_t n;                     /* records waiting to be applied */
    size_t applied;               /* of them, valid (events_applied at the flush) */
    int64_t max_now;              /* their latest arrival time (the watermark at the flush) */
    bool any_dedupe;              /* one of them has a dedupe key */
} engine_replay_ctx;

struct engine {
    engine_options opt;
    pthread_rwlock_t reg_lock;
    _Atomic uint64_t reg_version;     /* registry_version(reg), published as the barrier leaves */
    registry *reg;
    reg_hooks hooks;
    bv_buf history;               /* every applied register/reset record: u8 kind, u32 len, bytes */
    unsigned nshards;
    shard_pool *pool;

    pthread_mutex_t seq_mu;
    uint64_t last_lsn;            /* highest LSN handed out (seq_mu) */
    struct push_batch_state *park_head, *park_tail;   /* batches waiting for durability (seq_mu) */
    pthread_cond_t park_cv;       /* the park list gained a batch, or emptied */
    pthread_t durable_thread;
    bool durable_running, stopping;
    entity_store dedupe;          /* seq_mu */
    size_t dedupe_purge_at;

    _Atomic int64_t watermark_ms; /* latest push arrival */
    _Atomic uint64_t overloaded, events_applied, events_rejected, events_replayed, wal_failures,
        registers_applied, keys_too_long;
    size_t sweep_table, sweep_slot;   /* cold-sweeper cursor (reg_lock as writer... see sweep.c) */
    unsigned sweep_shard;
    pthread_mutex_t sweep_mu;
    _Atomic uint64_t swept_evictions;
    engine_replay_ctx *replay;    /* NULL outside recovery (and cluster applies) */
    pthread_mutex_t apply_mu;     /* engine_apply_logged's gather+flush vs a barrier's flush;
                                   * taken before reg_lock */
};

int64_t engine_wall_ms(void);

/* Entity rows (engine.c). */
size_t entity_row_size(const agg_table *t, const entity *en);
void entity_destroy_states(const agg_table *t, entity *en);
void entity_init_states(const agg_table *t, entity *en, size_t from);
entity *entity_ensure(agg_table *t, entity_store *s, entity *en);
entity_store *table_store(const agg_table *t, unsigned shard);
unsigned engine_shard_for(const engine *e, const agg_table *t, uint64_t key_hash);
/* A get key ("a|b") in the internal 0x1f-joined form; -1 on arity mismatch. */
int engine_parse_key(const agg_table *t, const char *key, size_t klen, char *buf, size_t cap);

/* The one writer of the {"error":{...}} body (see error_body in engine.c). */
void engine_error_body(bv_buf *out, const char *code, const char *reason_key, const char *reason, bool with_version,
                       uint64_t version);

/* Exclusive access with every sequenced record applied (registry changes, reset,
 * snapshots): takes reg_lock as a writer and drains the park list and the shards. */
void engine_barrier_enter(engine *e);
void engine_barrier_leave(engine *e);

/* Registry history (barrier held). */
void engine_history_add(engine *e, int kind, const void *p, size_t n);
void engine_reset_state(engine *e);

/* The sequencer's log seam (seq_mu held for append). */
int engine_log_append(engine *e, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen);
int engine_log_wait(engine *e, uint64_t lsn, char *reason, size_t rlen);

/* Dedupe cache (seq_mu or barrier held). */
int dedupe_key(const ev_desc *ev, const bv_row *row, char *buf, size_t cap);
entity *dedupe_find(engine *e, const char *dk, size_t dkl, uint64_t dh);
void dedupe_remember(engine *e, const char *dk, size_t dkl, uint64_t dh, int64_t expiry, uint64_t lsn,
                     uint64_t version, int64_t now);
void dedupe_forget(engine *e, const char *dk, size_t dkl, uint64_t dh);
void dedupe_clear(engine *e);

/* Push path (push.c). */
int push_durability_start(engine *e);
void push_durability_stop(engine *e);
/* Replay one event record (no logging; inline apply). */
int push_replay_event(engine *e, uint64_t lsn, const void *payload, size_t len, char *reason, size_t rlen);
/* Memory hints for a queued part (shard.h's prefetch hooks). */
void push_part_prefetch(void *arg);
void push_part_prefetch_entity(void *arg);
/* Apply the event records replay has gathered (before anything else touches state). */
void push_replay_flush(engine *e);
/* Recovery is over: flush, free its scratch. */
void push_replay_done(engine *e);

#endif
