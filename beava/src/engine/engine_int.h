/*
 * engine_int.h - the engine's private state, shared by its files (engine.c: lifecycle,
 * register, reset, metrics; push.c: the push path and the sequencer; read.c: gets;
 * dedupe.c; sweep.c; snapshot.c: serialise, restore, replay). Nothing outside
 * beava/src/engine/ includes it.
 *
 * REGISTRY VERSIONS (pointer swap; engine.c). The registry readers see is immutable:
 * a change builds the next version (registry_next: copies of the containers, the
 * descriptors and the table shells, registry.h "Versions"), applies its plan to that
 * copy while readers go on with the current one, and publishes it by storing
 * `cur` (a version holder: the registry and an atomic reader count). Readers (pushes,
 * gets, the sweep, metrics, info) pin the current version without blocking
 * (engine_pin: load cur, increment its reader count, check cur again, else undo and
 * retry) and unpin it when done. The replaced version goes on the retired list
 * (oldest first); engine_reclaim_retired frees retired versions, oldest first, once
 * none is pinned AND no part judged on them can still be applied (the park list empty,
 * then every shard idle: push.c's parts capture a table's arrays and store, and a
 * version's shells own those arrays); with them go the tables no later version has
 * (their stores: the table_removed hook). It runs from the sweeper and as a barrier
 * leaves; /metrics shows beava_registry_versions_retained (1 when nothing waits).
 * Holders are recycled, never freed while the engine lives, so a reader that loaded a
 * holder which was retired meanwhile only touches its counter and retries. No reader
 * waits for a registry change, and a change never waits for readers: it defers the
 * frees (only a barrier, below, waits for the readers that pinned before it).
 *
 * Locks, in the only order they are ever nested:
 *   reg_change_mu (registry changes, reset, snapshots, reclaiming retired versions: one
 *                  at a time; no push or read ever takes it)
 *   -> apply_mu (engine_apply_logged's gather+flush vs a barrier's flush)
 *   -> sweep_mu (the sweeper's cursor; the barrier takes it to keep the sweeper off the
 *                stores it serialises or rewrites)
 *   -> seq_mu (the sequencer: LSNs, WAL appends, publishing a version, shard rings, the
 *              park list, the register gate and its deferred batches, dedupe)
 *   -> a shard's queue lock -> (trylock only) a shard's state lock
 * bar_mu (the barrier's flag and the wait for pins) is a leaf: nothing is taken under it.
 * A reader pins a version, then takes one shard state lock at a time. No push or read
 * takes an engine-wide lock before the sequencer.
 *
 * ORDER OF PUSHES AND CHANGES. The registry a push is validated against must be the one
 * its LSN implies: every record below the register's LSN L was judged on the old
 * version, every record above L on the new one. A version is published under seq_mu,
 * and a push is sequenced only if the version it pinned is still current under seq_mu;
 * otherwise it is validated again, on the new one (push_submit). So:
 *
 *  AT APPEND (a log that never voids a record: batch durability, or no log). Build the
 *  next version beside readers (the in-memory apply; nobody waits for it), then
 *  under seq_mu append the record (L) and publish the version in the same section. If
 *  the append fails, the built version is discarded (registry_discard) and the answer is
 *  503: nothing was published. Then wait until L is durable, holding nothing but
 *  reg_change_mu, and answer. Such a log writes records in LSN order and retries a
 *  failed write until it is on disk, so any record after L that survives a crash has L
 *  before it: memory and log agree. If the log closes first, the answer is 503 (the
 *  change is in memory only; the process is stopping).
 *
 *  GATED (a log that may void L: sync durability).
 *   1. Sequence (seq_mu, a few microseconds): append the record, take L, and raise the
 *      GATE. From now on a push batch that reaches the sequencer is not sequenced: it is
 *      put, whole and untouched, on the deferred list and engine_push_submit returns
 *      false (answered later through b->done, like any batch that waits for a shard), so
 *      its I/O thread goes on serving its other connections. A batch that sees the gate
 *      before validating is deferred at once (no wasted work, no counter counted twice).
 *   2. Wait until L is durable, holding nothing a reader needs.
 *   3. Build the next version, publish it and lower the gate under seq_mu, then re-submit
 *      the deferred batches in arrival order on this thread: they are validated again,
 *      now against the new version, and sequenced after L (LSNs, dedupe and replies as if
 *      they had just arrived).
 *   If L could not be made durable (the WAL fails the write and voids L and whatever came
 *   after it, which the gate kept empty), nothing is built: the register answers 503
 *   wal_unavailable and the deferred batches run against the unchanged version. If the
 *   append itself fails, the gate is never raised.
 *
 * A change is judged first: registry_prepare on a pinned version, beside pushes and
 * gets (an invalid body, a dry run, a 409 or a no-op ends here); then reg_change_mu, and
 * the plan is judged again if another change got in first. So a register is
 * acknowledged only when durable, log and memory agree on every path, no change waits
 * for a shard or a reader, and no reader ever waits for a change. Pushes that meet a
 * gated change (sync durability) wait, asynchronously, for its fsync, as their
 * validation depends on its outcome. engine_hold_registry_changes (a test hook) holds a
 * change between building and publishing its version, which is how the tests show it.
 *
 * THE BARRIER (engine_barrier_enter): reset, snapshots and restores, cluster-mode
 * registers (whose log append is a synchronous publish with its own conflict check) and
 * recovery's registry records. reg_change_mu; then the flag `barrier_on` is raised and
 * a FENCE is published: a new holder of the same registry. A push checks the flag after
 * pinning, so every push that pins the fence (or later) sees it and waits (on bar_cv)
 * until the barrier leaves, then starts again; the barrier waits (drain_cv, signalled by
 * the unpin that brings it to zero) until no reader pins the holder before the fence, so
 * no push is between validation and the end of its inline apply. Then the park list and
 * the shards drain, then sweep_mu. Gets and metrics are not held off: the barrier waits
 * only for those that pinned before its fence (a get's length), and during it they read
 * the version they pinned under one shard state lock at a time. They do wait while the
 * barrier touches stores as a whole, which it does holding every shard's state lock
 * (gets widen rows under them): engine_quiesce's callback (a fork() for a snapshot, or
 * a cluster partition snapshot serialised in process), a restore's or a merge's entity
 * loading, dropping a partition's entities. The drain, a reset, a cluster register or a
 * registry record replayed does not stop them. A reset publishes an empty version (the
 * old tables go with the old version). Taking reg_change_mu first keeps a barrier out of
 * a gated register's window (1-3), where the log holds L but no version has it yet.
 * Pushes do wait for a barrier, as they did for the rwlock this replaced.
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

/* Recovery's pipeline: the WAL reader gathers event records into groups; applier
 * threads (and the reader while it would wait) prepare them chunk by chunk and apply them
 * shard set by shard set, each shard in LSN order (push.c, "replay", explains it). */
typedef struct engine_replay_ctx engine_replay_ctx;

/* A published registry version and its readers (see the top of this file). */
typedef struct regver {
    registry *reg;
    _Atomic unsigned long readers;    /* pins (engine_pin) */
    _Atomic bool drain_wait;      /* a barrier waits for readers to reach 0 (bar_mu) */
    bool keep_reg;                /* retired by a fence: the next holder has reg (reg_change_mu) */
    struct regver *next;          /* on the retired or the spare list (reg_change_mu) */
} regver;

struct engine {
    engine_options opt;
    _Atomic bool barrier_on;      /* a barrier holds pushes off (see the top of this file) */
    pthread_mutex_t bar_mu;       /* barrier_on's waiters, and the wait for pins */
    pthread_cond_t bar_cv;        /* barrier_on went down */
    pthread_cond_t drain_cv;      /* a holder's readers reached 0 */
    _Atomic uint64_t reg_version;     /* registry_version of the current version */
    _Atomic(regver *) cur;        /* the current version (published under seq_mu) */
    regver *retired_head, *retired_tail;  /* replaced versions, oldest first (reg_change_mu) */
    regver *spare;                /* holders to reuse (reg_change_mu) */
    _Atomic uint64_t versions_retained;   /* 1 + retired versions not yet freed */
    pthread_mutex_t hold_mu;      /* engine_hold_registry_changes (tests) */
    pthread_cond_t hold_cv;
    bool hold_on, holding;
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
    size_t sweep_table, sweep_slot;   /* cold-sweeper cursor (sweep_mu) */
    unsigned sweep_shard;
    pthread_mutex_t sweep_mu;
    _Atomic uint64_t swept_evictions;
    engine_replay_ctx *replay;    /* NULL outside recovery (and cluster applies) */
    engine_replay_error_fn replay_on_error;   /* recovery's error sink (engine_replay_on_error) */
    void *replay_on_error_ctx;
    pthread_mutex_t apply_mu;     /* engine_apply_logged's gather+flush vs a barrier's flush */
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

/* Registry versions (see the top of this file). engine_pin never blocks; the registry
 * it returns stays valid until engine_unpin. */
registry *engine_pin(engine *e, regver **pin);
void engine_unpin(engine *e, regver *pin);
/* A push that pinned a version while a barrier holds pushes off: unpin, wait until it
 * leaves; true if it had to (start again). */
bool engine_barrier_wait(engine *e, regver *pin);
/* The current version, for its one writer (reg_change_mu held) or recovery. */
registry *engine_reg(engine *e);
/* Publish `next` as the current version (reg_change_mu held; seq_mu held for _locked,
 * taken by engine_publish) and retire the version it replaces. */
void engine_publish_locked(engine *e, regver *h, registry *next);
void engine_publish(engine *e, registry *next);
/* A holder for engine_publish_locked, taken before seq_mu (reg_change_mu held). */
regver *engine_holder(engine *e);

/* Exclusive access with every sequenced record applied (reset, snapshots, cluster
 * registers): takes reg_change_mu, holds pushes off (the fence), drains the park list
 * and the shards, takes sweep_mu. Gets and metrics go on (see the top of this file). */
void engine_barrier_enter(engine *e);
void engine_barrier_leave(engine *e);

/* Free retired versions, oldest first, while none is pinned and no part judged on them
 * can be left: the park list empty, then every shard idle. Skipped if a change is in
 * progress. Called by the sweeper. */
void engine_reclaim_retired(engine *e);

/* Registry history (barrier held). */
void engine_history_add(engine *e, int kind, const void *p, size_t n);
/* Reset: an empty version published, dedupe cleared (barrier held). */
void engine_reset_state(engine *e);
/* Apply a prepared plan as the next version and publish it (barrier held, or recovery). */
void engine_apply_plan(engine *e, reg_plan *plan, bv_buf *out);

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
/* Lower the gate (reg_change_mu held) and hand back the deferred batches; publishes
 * `next` in the same seq_mu section when it is not NULL. */
struct push_batch_state *push_gate_lower(engine *e, regver *h, registry *next);
/* Re-submit deferred batches (no engine lock held but reg_change_mu). */
void push_resubmit(engine *e, struct push_batch_state *list);
/* Memory hints for a queued part (shard.h's prefetch hooks). */
void push_part_prefetch(void *arg);
void push_part_prefetch_entity(void *arg);
void push_part_prefetch_states(void *arg);
/* Apply the event records replay has gathered (before anything else touches state). */
void push_replay_flush(engine *e);
/* Recovery is over: flush, free its scratch. */
void push_replay_done(engine *e);

#endif
