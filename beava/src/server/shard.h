/*
 * shard.h - apply shards: N threads, each owning a partition of the entities
 * (shard = hash(table, key) mod N, DECISIONS §6), fed through bounded FIFO queues.
 *
 * Work reaches a shard as a task: a function run on the shard's thread with the
 * shard's private context (its index, a scratch arena, its operator counters). Tasks
 * of one shard run one at a time in the order they were submitted; the engine
 * submits them in LSN order, so every shard applies its part of the log in order. A
 * submitter waits for its tasks with a latch. Queues are bounded: the engine checks
 * shard_has_room() before it commits to a push and answers 503 overloaded otherwise.
 *
 * shard_pool_quiesce() waits until every queue is empty and every shard idle; the
 * engine uses it (with its own lock held, so nothing new is submitted) before registry
 * changes, resets and snapshots.
 */
#ifndef BEAVA_SHARD_H
#define BEAVA_SHARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "expr.h"
#include "ops/feature.h"

typedef struct shard_ctx {
    unsigned index;
    expr_arena arena;            /* scratch for `where` evaluation */
    op_stats stats;              /* counters of the operators this shard ran */
} shard_ctx;

typedef void (*shard_fn)(shard_ctx *ctx, void *arg);

/* Counts down to zero; submitters wait on it. */
typedef struct shard_latch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned remaining;
} shard_latch;

void shard_latch_init(shard_latch *l, unsigned count);
void shard_latch_wait(shard_latch *l);
void shard_latch_destroy(shard_latch *l);

typedef struct shard_pool shard_pool;

/* Start n shard threads with queues of `capacity` tasks each. NULL on failure. */
shard_pool *shard_pool_start(unsigned n, size_t capacity);
void shard_pool_stop(shard_pool *p);          /* runs what is queued, joins, frees */

unsigned shard_pool_size(const shard_pool *p);

/* Room for `n` more tasks on shard i? (Only meaningful while the caller holds the lock
 * that serialises submissions.) */
bool shard_has_room(shard_pool *p, unsigned i, size_t n);

/* Queue fn(ctx, arg) on shard i; the task counts the latch down when done (latch may
 * be NULL). Never blocks: the caller checked shard_has_room; a full queue aborts. */
void shard_submit(shard_pool *p, unsigned i, shard_fn fn, void *arg, shard_latch *latch);

/* Queue without waking the shard; call shard_pool_kick once the batch is queued, so a
 * batch of N events costs one wake-up per shard instead of N. */
void shard_submit_deferred(shard_pool *p, unsigned i, shard_fn fn, void *arg, shard_latch *latch);
void shard_pool_kick(shard_pool *p);

/* Wait until every shard is idle with an empty queue. */
void shard_pool_quiesce(shard_pool *p);

/* Test hook: a paused shard takes no task until resumed (overload tests). */
void shard_pause(shard_pool *p, unsigned i, bool paused);

/* Sum of the shards' operator counters (read under each shard's lock). */
void shard_pool_stats(shard_pool *p, op_stats *out);

#endif
