/*
 * test_shard.c - the shard pool's ordering contract (shard.h) under real threads.
 *
 * Producers follow the engine's protocol: under one sequencer mutex they give each task a
 * sequence number and either apply it inline (shard_try_inline) or queue it
 * (shard_push); after dropping the mutex they apply their inline tasks, end the shards
 * they hold (shard_inline_end) and call shard_help() on the shards they queued to. The
 * tests check that every shard applied its tasks in sequence order whichever thread
 * applied them, that every task sequenced was applied exactly once and its post ran (a
 * task finding its ring full is refused, as the engine answers `overloaded`), with
 * producers meeting on the same shards, with readers holding the state locks (the help
 * path must then leave the work to the shard thread), with a shard paused and resumed,
 * and with help asked only to wake the thread (take 0).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "shard.h"

#define T_SHARDS 3u
#define T_RING 64u
#define T_PRODUCERS 3u
#define T_PER_PRODUCER 20000u
#define T_BATCH_MAX 40u

typedef struct shard_log {
    uint64_t last;               /* sequence number of the last task applied (state lock held) */
    uint64_t applied;
    bool out_of_order;
} shard_log;

typedef struct world {
    shard_pool *pool;
    pthread_mutex_t seq_mu;
    uint64_t next_seq;           /* seq_mu: tasks sequenced */
    uint64_t refused;            /* seq_mu: tasks refused for a full ring */
    shard_log logs[T_SHARDS];    /* each under its shard's state lock */
    _Atomic uint64_t posts;
    _Atomic bool stop_readers;
    size_t help_take;            /* what producers pass to shard_help */
} world;

typedef struct task {
    world *w;
    unsigned shard;
    uint64_t seq;
} task;

static void apply_task(shard_ctx *ctx, void *arg) {
    task *t = arg;
    shard_log *l = &t->w->logs[t->shard];
    assert_int_equal(ctx->index, t->shard);
    if (t->seq <= l->last) l->out_of_order = true;
    l->last = t->seq;
    l->applied++;
}

static void post_task(shard_ctx *ctx, void *arg) {
    (void)ctx;
    task *t = arg;
    atomic_fetch_add(&t->w->posts, 1);
}

typedef struct producer {
    world *w;
    unsigned id;
    task *tasks;                 /* T_PER_PRODUCER, alive until the pool is freed */
} producer;

static unsigned next_rand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(*s >> 33);
}

static void *producer_main(void *arg) {
    producer *p = arg;
    world *w = p->w;
    uint64_t rnd = 0x9e3779b97f4a7c15ull * (p->id + 1);
    size_t done = 0;
    while (done < T_PER_PRODUCER) {
        size_t n = 1 + next_rand(&rnd) % T_BATCH_MAX;
        if (n > T_PER_PRODUCER - done) n = T_PER_PRODUCER - done;
        bool decided[T_SHARDS] = { false }, held[T_SHARDS] = { false }, queued[T_SHARDS] = { false };
        task *inl[T_BATCH_MAX];
        size_t ninl = 0;
        pthread_mutex_lock(&w->seq_mu);
        for (size_t k = 0; k < n; k++) {
            task *t = &p->tasks[done + k];
            t->w = w;
            t->shard = next_rand(&rnd) % T_SHARDS;
            if (!decided[t->shard]) {
                decided[t->shard] = true;
                held[t->shard] = shard_try_inline(w->pool, t->shard);
            }
            if (!held[t->shard] && !shard_has_room(w->pool, t->shard, 1)) {
                t->seq = 0;                        /* a full ring: refused (overloaded), never applied */
                w->refused++;
                continue;
            }
            t->seq = ++w->next_seq;
            if (held[t->shard]) {
                inl[ninl++] = t;
            } else {
                shard_push(w->pool, t->shard, apply_task, post_task, t);
                queued[t->shard] = true;
            }
        }
        pthread_mutex_unlock(&w->seq_mu);
        for (size_t k = 0; k < ninl; k++) {
            apply_task(shard_inline_ctx(w->pool, inl[k]->shard), inl[k]);
            post_task(NULL, inl[k]);
        }
        for (unsigned s = 0; s < T_SHARDS; s++)
            if (held[s]) shard_inline_end(w->pool, s, SHARD_INLINE_TAKE);
        for (unsigned s = 0; s < T_SHARDS; s++)
            if (queued[s] && !held[s]) shard_help(w->pool, s, w->help_take);
        done += n;
    }
    return NULL;
}

/* Holds one shard's state lock at a time, briefly, over and over (a reader). */
static void *reader_main(void *arg) {
    world *w = arg;
    unsigned s = 0;
    while (!atomic_load(&w->stop_readers)) {
        shard_ctx *ctx = shard_lock(w->pool, s);
        assert_int_equal(ctx->index, s);
        shard_unlock(w->pool, s);
        s = (s + 1) % T_SHARDS;
    }
    return NULL;
}

static void run_world(size_t help_take, unsigned readers, bool pause_one) {
    world w;
    memset(&w, 0, sizeof w);
    w.help_take = help_take;
    pthread_mutex_init(&w.seq_mu, NULL);
    w.pool = shard_pool_new(T_SHARDS, T_RING, NULL);
    assert_non_null(w.pool);
    assert_int_equal(shard_pool_run(w.pool), 0);
    producer prods[T_PRODUCERS];
    pthread_t pt[T_PRODUCERS], rt[2];
    for (unsigned i = 0; i < T_PRODUCERS; i++) {
        prods[i] = (producer){ .w = &w, .id = i, .tasks = calloc(T_PER_PRODUCER, sizeof(task)) };
        assert_non_null(prods[i].tasks);
    }
    for (unsigned i = 0; i < readers; i++) assert_int_equal(pthread_create(&rt[i], NULL, reader_main, &w), 0);
    for (unsigned i = 0; i < T_PRODUCERS; i++) assert_int_equal(pthread_create(&pt[i], NULL, producer_main, &prods[i]), 0);
    if (pause_one) {
        /* a paused shard takes no task and is never taken inline: its ring fills and
         * its tasks are refused; resuming it lets what was queued through, in order */
        shard_pause(w.pool, 1, true);
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        shard_pause(w.pool, 1, false);
    }
    for (unsigned i = 0; i < T_PRODUCERS; i++) pthread_join(pt[i], NULL);
    shard_pool_quiesce(w.pool);
    atomic_store(&w.stop_readers, true);
    for (unsigned i = 0; i < readers; i++) pthread_join(rt[i], NULL);
    uint64_t applied = 0;
    for (unsigned s = 0; s < T_SHARDS; s++) {
        assert_false(w.logs[s].out_of_order);
        applied += w.logs[s].applied;
    }
    assert_int_equal(w.next_seq + w.refused, (uint64_t)T_PRODUCERS * T_PER_PRODUCER);
    assert_int_equal(applied, w.next_seq);
    assert_int_equal(atomic_load(&w.posts), w.next_seq);
    assert_true(shard_pool_idle(w.pool));
    shard_pool_free(w.pool);
    for (unsigned i = 0; i < T_PRODUCERS; i++) free(prods[i].tasks);
    pthread_mutex_destroy(&w.seq_mu);
}

static void test_producers_help_in_order(void **state) {
    (void)state;
    run_world(SHARD_INLINE_TAKE, 0, false);
}

static void test_readers_leave_help_to_the_thread(void **state) {
    (void)state;
    run_world(SHARD_INLINE_TAKE, 2, false);
}

static void test_help_that_only_wakes(void **state) {
    (void)state;
    run_world(0, 1, false);
}

static void test_paused_shard_then_resumed(void **state) {
    (void)state;
    run_world(SHARD_INLINE_TAKE, 1, true);
}

/* A queue longer than one help takes: the rest goes to the thread, nothing is lost. */
static void test_help_takes_at_most_take(void **state) {
    (void)state;
    world w;
    memset(&w, 0, sizeof w);
    w.pool = shard_pool_new(1, 256, NULL);
    assert_non_null(w.pool);
    assert_int_equal(shard_pool_run(w.pool), 0);
    task tasks[200];
    assert_true(shard_try_inline(w.pool, 0));      /* held: the thread pops nothing */
    for (unsigned i = 0; i < 200; i++) {
        tasks[i] = (task){ .w = &w, .shard = 0, .seq = i + 1 };
        shard_push(w.pool, 0, apply_task, post_task, &tasks[i]);
    }
    shard_help(w.pool, 0, SHARD_INLINE_TAKE);       /* held by us: left to the holder */
    assert_int_equal(w.logs[0].applied, 0);
    shard_inline_end(w.pool, 0, 150);               /* the holder takes 150, the thread the rest */
    shard_pool_quiesce(w.pool);
    assert_int_equal(w.logs[0].applied, 200);
    assert_false(w.logs[0].out_of_order);
    assert_int_equal(atomic_load(&w.posts), 200);
    shard_pool_free(w.pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_producers_help_in_order),
        cmocka_unit_test(test_readers_leave_help_to_the_thread),
        cmocka_unit_test(test_help_that_only_wakes),
        cmocka_unit_test(test_paused_shard_then_resumed),
        cmocka_unit_test(test_help_takes_at_most_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
