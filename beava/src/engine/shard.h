/*
 * shard.h - apply shards: N partitions of the entities (shard = hash(table, key) mod N),
 * each with a thread, a bounded task ring and a state lock.
 *
 * Two locks per shard, never held together by the shard's own thread:
 *   - the queue lock guards the ring, the pause flag and the "in flight" flag;
 *   - the state lock guards the shard's entity stores and its shard_ctx (scratch arena,
 *     operator counters). Whoever applies or reads holds it: the shard thread while it
 *     runs a run of tasks, an I/O thread that applies inline (below), a reader.
 *
 * Order. Producers are serialised by the engine's sequencer lock, so tasks enter a ring
 * in LSN order. The shard thread pops a run of tasks (marking them in flight), releases
 * the queue lock, takes the state lock, runs them, and clears the flag. An I/O thread may
 * apply its own work INLINE, skipping the hand-off, only through shard_try_inline():
 * under the sequencer lock, when the ring is empty, nothing is in flight, the shard is not
 * paused and its state lock is free (trylock). It then holds the state lock until
 * shard_inline_end(); work sequenced after it either finds the lock taken (and queues,
 * to be applied after it) or finds it free again (after it). So every shard applies its
 * part of the log in LSN order, whichever thread applies it.
 *
 * While a shard is held inline its thread pops nothing and is not woken: what queues
 * meanwhile (up to the `take` the holder names) is applied by the holder in shard_inline_end(),
 * in ring order, before it lets the state lock go (it looks at the ring again after each
 * round, so work queued while it applied is taken too), and their `post`s run there too;
 * only a longer queue wakes the thread. A producer that queued behind a holder (or behind
 * nobody) then calls shard_help(): if the shard is free by then it applies the queue
 * itself, the same way, so the thread is woken only when a reader holds the state lock
 * or the queue is longer than one holder takes. Two I/O threads meeting on a shard thus cost no
 * wake-up of a third thread (on a machine with few cores, a wake-up can wait a whole
 * scheduler slice: that is the tail latency this avoids).
 *
 * A task is two functions: `apply` runs with the state lock held; `post` (optional) runs
 * right after the run of tasks, with no lock held — the engine counts its batches down
 * there and answers clients, so a reply never waits behind the state lock.
 *
 * Bounded rings: shard_has_room() is checked (under the sequencer lock) before work is
 * committed; a full ring means 503 overloaded for that work only.
 */
#ifndef BEAVA_SHARD_H
#define BEAVA_SHARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "expr.h"
#include "feature.h"

#define SHARD_MAX 256          /* upper bound of --shards (config refuses more) */
#define SHARD_RUN_MAX 64       /* tasks a shard thread runs per state-lock hold */
#define SHARD_INLINE_TAKE 1024 /* queued tasks an inline holder applies before letting go
                                * (one TCP run of push frames: tcp.c TCP_PUSH_RUN_MAX) */

typedef struct shard_ctx {
    unsigned index;
    expr_arena arena;            /* scratch for `where` evaluation */
    op_stats stats;              /* counters of the operators this shard ran */
} shard_ctx;

typedef void (*shard_fn)(shard_ctx *ctx, void *arg);

/* Optional memory hints run a few tasks ahead of the one being applied, in three stages,
 * each reading only what the stage before it loaded (the engine prefetches a queued
 * part's entity index slot, then the entity that slot names, then what its feature
 * updates will probe, read from that entity). */
typedef struct shard_prefetch {
    void (*slot)(void *arg);     /* SHARD_AHEAD_SLOT tasks ahead */
    void (*entity)(void *arg);   /* SHARD_AHEAD_ENTITY tasks ahead */
    void (*states)(void *arg);   /* SHARD_AHEAD_STATES tasks ahead */
} shard_prefetch;

/* Prefetch distances, in tasks (the engine's replay loop uses them too). */
#define SHARD_AHEAD_SLOT 24
#define SHARD_AHEAD_ENTITY 12
#define SHARD_AHEAD_STATES 4

typedef struct shard_pool shard_pool;

/* Create n shards with rings of `capacity` tasks. No thread runs yet: until
 * shard_pool_run(), every try_inline succeeds (recovery applies on the caller's thread).
 * prefetch may be NULL. NULL on failure. */
shard_pool *shard_pool_new(unsigned n, size_t capacity, const shard_prefetch *prefetch);
int shard_pool_run(shard_pool *p);            /* start the threads; 0 or -1 */
void shard_pool_free(shard_pool *p);          /* runs what is queued, joins, frees */

unsigned shard_pool_size(const shard_pool *p);

/* ---- producers (serialised by the caller's sequencer lock) ---- */

/* Room for n more tasks on shard i? */
bool shard_has_room(shard_pool *p, unsigned i, size_t n);
/* Queue a task (room was checked). Does not wake the thread: call shard_pool_kick. */
void shard_push(shard_pool *p, unsigned i, shard_fn apply, shard_fn post, void *arg);
/* Wake every shard thread that sleeps with work queued. */
void shard_pool_kick(shard_pool *p);
/* Take shard i for inline application (see above). True: the caller holds its state
 * lock and must call shard_inline_end(). */
bool shard_try_inline(shard_pool *p, unsigned i);
/* Apply up to `take` (at most SHARD_INLINE_TAKE) tasks that queued behind the inline
 * work (see above), release the state lock, run those tasks' posts; wake the thread for
 * the rest. */
void shard_inline_end(shard_pool *p, unsigned i, size_t take);
/* A producer that queued tasks on shard i without holding it inline calls this after
 * dropping its sequencer lock (instead of shard_pool_kick): when the shard is free
 * (nothing queued is in flight, not held, not paused, state lock free) the caller takes it
 * inline and applies up to `take` queued tasks itself, in ring order (those of other
 * producers too), as shard_inline_end does; otherwise it makes sure someone will (a
 * holder or a running thread takes them before it stops; a sleeping thread is woken).
 * take 0: only wake the thread. This spares the common case (two I/O threads meeting on
 * a shard) the hand-off to the shard thread and back. */
void shard_help(shard_pool *p, unsigned i, size_t take);
/* The context of shard i, for a caller that holds its state lock (inline or shard_lock). */
shard_ctx *shard_inline_ctx(shard_pool *p, unsigned i);
/* Block until shard i has room for n tasks (or the pool stops). Called WITHOUT the
 * sequencer lock. */
void shard_wait_room(shard_pool *p, unsigned i, size_t n);

/* ---- readers and maintenance ---- */

/* The state lock of shard i, and its context (valid while the lock is held). */
shard_ctx *shard_lock(shard_pool *p, unsigned i);
void shard_unlock(shard_pool *p, unsigned i);

/* Wait until every ring is empty and nothing is in flight. The caller must keep new
 * work out (the engine holds its registry lock as a writer). */
void shard_pool_quiesce(shard_pool *p);

/* Is every ring empty with nothing in flight or held inline, right now? (No wait: the
 * answer may change at once; the engine uses it to learn that work older than some
 * moment is all applied.) */
bool shard_pool_idle(shard_pool *p);

/* Test hook: a paused shard takes no task (its ring fills up: overload) and is never
 * taken inline; it still serves reads. */
void shard_pause(shard_pool *p, unsigned i, bool paused);

/* Sum of the shards' operator counters. */
void shard_pool_stats(shard_pool *p, op_stats *out);

#endif
