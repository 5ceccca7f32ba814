/*
 * engine_int.h - the engine's private state, shared by its files (engine.c: lifecycle,
 * register, reset, metrics; push.c: the push path and the sequencer; read.c: gets;
 * dedupe.c; sweep.c; snapshot.c: serialise, restore, replay). Nothing outside
 * beava/src/engine/ includes it.
 *
 * Locks, in the only order they are ever nested:
 *   reg_change_mu (registry changes, reset, snapshots and the release of what changes
 *                  retired, one at a time; no push or read ever takes it)
 *   -> apply_mu (engine_apply_logged's gather+flush vs a barrier's flush)
 *   -> reg_lock (rwlock; pushes, reads, the sweep and metrics share it; it is held as a
 *                writer only to change the registry in memory, or by the full barrier)
 *   -> seq_mu (the sequencer: LSNs, WAL appends, shard rings, the park list, the register
 *              gate and its deferred batches, dedupe)
 *   -> a shard's queue lock -> (trylock only) a shard's state lock
 * A reader takes reg_lock (shared) then one shard state lock at a time.
 *
 * REGISTRY CHANGES WITHOUT STOPPING READERS (single node; engine_register in engine.c).
 * The registry a push is validated against must be the one its LSN implies: every record
 * below the register's LSN L was judged on the old registry, every record above L on the
 * new one, and each shard applies the parts below L before anything they read is freed.
 * Pushes hold reg_lock shared from validation through sequencing, so a change that is
 * appended and applied in one writer section is ordered exactly; what must not happen
 * inside that section is waiting (for shards, for the disk).
 *
 * What a shard reads is never changed in place or freed at once. A part captures its
 * table's features and offsets arrays, feature count, row size and stores when it is
 * judged (push.c apply_part). A widened table gets new arrays; the old ones, a replaced
 * prefix chain (chained rows point into it) and a removed table with its stores are
 * retired (registry.h) and freed once no part judged before the change can be left:
 * engine_reclaim_retired, from the sweeper (park list empty, then every shard idle), or
 * the next barrier (a snapshot: every 60 s by default). A part judged before a removal
 * thus still applies, to a store nobody can read any more. So no change waits for a
 * shard; the price is that a removed table's memory outlives it until the shards are
 * seen idle or a snapshot drains them (memory-only mode under unbroken load: until an
 * idle instant; an epoch per shard would bound this, not built).
 *
 * A change is judged first: registry_prepare under reg_lock shared, beside pushes and
 * gets (an invalid body, a dry run, a 409 or a no-op ends here); then reg_change_mu, and
 * the plan is judged again if another change got in first. Then one of two paths:
 *
 *  AT APPEND (a log that never voids a record: batch durability, or no log). reg_lock
 *  as a writer, append the record (L), apply it in memory, publish the version, unlock:
 *  microseconds. Then wait until L is durable, holding nothing but reg_change_mu, and
 *  answer. Such a log writes records in LSN order and retries a failed write until it is
 *  on disk, so any record after L that survives a crash has L before it: memory and log
 *  agree. If the log closes first, the answer is 503 (the change is in memory only; the
 *  process is stopping).
 *
 *  GATED (a log that may void L: sync durability).
 *   1. Sequence (seq_mu, a few microseconds): append the record, take L, and raise the
 *      GATE. From now on a push batch that reaches the sequencer is not sequenced: it is
 *      put, whole and untouched, on the deferred list and engine_push_submit returns
 *      false (answered later through b->done, like any batch that waits for a shard), so
 *      its I/O thread goes on serving its other connections. A batch that sees the gate
 *      before validating is deferred at once (no wasted work, no counter counted twice).
 *   2. Wait until L is durable, holding nothing a reader needs: gets, batch gets, the
 *      sweep, metrics and pings run on meanwhile, on every shard.
 *   3. Apply: reg_lock as a writer for the in-memory change only, publish the version,
 *      lower the gate under seq_mu, drop the writer lock, then re-submit the deferred
 *      batches in arrival order on this thread: they are validated again, now against the
 *      new registry, and sequenced after L (LSNs, dedupe and replies as if they had just
 *      arrived).
 *   If L could not be made durable (the WAL fails the write and voids L and whatever came
 *   after it, which the gate kept empty), nothing is applied: the registry is not
 *   mutated, the register answers 503 wal_unavailable and the deferred batches run
 *   against the unchanged registry. If the append itself fails, the gate is never raised.
 *
 * So a register is acknowledged only when durable, log and memory agree on every path,
 * no change waits for a shard, and readers never block on a writer for longer than an
 * in-memory apply. Pushes that meet a gated change (sync durability) wait, asynchronously,
 * for its fsync, as their validation depends on its outcome. What remains for issue 13:
 * an immutable registry version published by pointer swap, so that readers would not
 * wait for the in-memory apply either.
 *
 * Reset, snapshots and cluster-mode registers (whose log append is a synchronous publish
 * with its own conflict check) still use the full barrier (engine_barrier_enter):
 * reg_change_mu, then reg_lock as a writer while the park list and the shards drain.
 * Taking reg_change_mu first keeps them out of a gated register's window (1-3), where the
 * log holds L but the memory does not have it yet.
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
    pthread_mutex_t reg_change_mu;    /* registry changes, reset, snapshots: one at a time */
    bool reg_gated;               /* a register's record is sequenced, not yet applied (seq_mu) */
    _Atomic bool reg_gate_hint;   /* = reg_gated, read without seq_mu (a hint only) */
    struct push_batch_state *defer_head, *defer_tail;   /* batches held by the gate (seq_mu) */
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

/* Exclusive access with every sequenced record applied (reset, snapshots, cluster
 * registers): takes reg_change_mu, reg_lock as a writer, and drains the park list and
 * the shards. */
void engine_barrier_enter(engine *e);
void engine_barrier_leave(engine *e);

/* Free what registry changes retired once no part judged before them can be left: the
 * park list empty, then every shard idle (push.c's parts capture a table's arrays).
 * Skipped if a change is in progress. Called by the sweeper. */
void engine_reclaim_retired(engine *e);

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
/* Wait until the park list is empty and every shard has applied what it was given (the
 * caller keeps new work out: the barrier). */
void push_drain_applied(engine *e);
/* The register gate (see the top of this file). */
/* Lower the gate (reg_lock held as a writer) and hand back the deferred batches. */
struct push_batch_state *push_gate_lower(engine *e);
/* Re-submit deferred batches (no engine lock held but reg_change_mu). */
void push_resubmit(engine *e, struct push_batch_state *list);
/* Memory hints for a queued part (shard.h's prefetch hooks). */
void push_part_prefetch(void *arg);
void push_part_prefetch_entity(void *arg);
/* Apply the event records replay has gathered (before anything else touches state). */
void push_replay_flush(engine *e);
/* Recovery is over: flush, free its scratch. */
void push_replay_done(engine *e);

#endif
