/*
 * shard.c - shard threads and their bounded task rings (see shard.h).
 *
 * Each shard has a ring of `capacity` task slots guarded by its own mutex; the thread
 * sleeps on a condition variable when the ring is empty. The counters in shard_ctx
 * are only written by the shard thread while it holds no lock, and read by
 * shard_pool_stats under the shard mutex between tasks (the thread updates a copy
 * under the mutex after each task).
 */
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct shard_task {
    shard_fn fn;
    void *arg;
    shard_latch *latch;
} shard_task;

typedef struct shard {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* work arrived / pause lifted / stop */
    pthread_cond_t idle_cv;      /* queue drained */
    shard_task *ring;
    size_t capacity, head, count;
    bool busy, paused, stopping;
    bool waiting;                /* asleep on cv: the next submit must wake it */
    shard_ctx ctx;
    op_stats published;          /* copy of ctx.stats, updated under mu */
} shard;

struct shard_pool {
    unsigned n;
    size_t capacity;
    shard *shards;
};

void shard_latch_init(shard_latch *l, unsigned count) {
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->remaining = count;
}

void shard_latch_wait(shard_latch *l) {
    pthread_mutex_lock(&l->mu);
    while (l->remaining > 0) pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

void shard_latch_destroy(shard_latch *l) {
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}

static void latch_count_down(shard_latch *l) {
    pthread_mutex_lock(&l->mu);
    if (--l->remaining == 0) pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void *shard_main(void *arg) {
    shard *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stopping && (s->count == 0 || s->paused)) {
            if (s->count == 0) pthread_cond_broadcast(&s->idle_cv);
            s->waiting = true;
            pthread_cond_wait(&s->cv, &s->mu);
            s->waiting = false;
        }
        if (s->count == 0 && s->stopping) break;
        if (s->paused && !s->stopping) continue;
        shard_task t = s->ring[s->head];
        s->head = (s->head + 1) % s->capacity;
        s->count--;
        s->busy = true;
        pthread_mutex_unlock(&s->mu);
        t.fn(&s->ctx, t.arg);
        if (t.latch) latch_count_down(t.latch);
        pthread_mutex_lock(&s->mu);
        s->busy = false;
        s->published = s->ctx.stats;
    }
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

shard_pool *shard_pool_start(unsigned n, size_t capacity) {
    if (n == 0 || capacity == 0) return NULL;
    shard_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    p->capacity = capacity;
    p->shards = calloc(n, sizeof *p->shards);
    if (!p->shards) {
        free(p);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        pthread_cond_init(&s->idle_cv, NULL);
        s->ctx.index = i;
        s->capacity = capacity;
        s->ring = calloc(capacity, sizeof *s->ring);
        if (!s->ring || pthread_create(&s->thread, NULL, shard_main, s) != 0) {
            shard_pool_stop(p);
            return NULL;
        }
        s->started = true;
    }
    return p;
}

void shard_pool_stop(shard_pool *p) {
    if (!p) return;
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        s->paused = false;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (s->started) pthread_join(s->thread, NULL);
        free(s->ring);
        pthread_cond_destroy(&s->cv);
        pthread_cond_destroy(&s->idle_cv);
        pthread_mutex_destroy(&s->mu);
    }
    free(p->shards);
    free(p);
}

unsigned shard_pool_size(const shard_pool *p) { return p->n; }

bool shard_has_room(shard_pool *p, unsigned i, size_t n) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->mu);
    bool ok = s->count + n <= p->capacity;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void shard_pool_kick(shard_pool *p) {
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->mu);
        if (s->waiting && s->count > 0) pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

void shard_submit_deferred(shard_pool *p, unsigned i, shard_fn fn, void *arg, shard_latch *latch) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->mu);
    if (s->count == p->capacity) {
        fputs("beava: shard queue overflow (caller did not reserve room)\n", stderr);
        abort();
    }
    s->ring[(s->head + s->count) % p->capacity] = (shard_task){ fn, arg, latch };
    s->count++;
    pthread_mutex_unlock(&s->mu);
}

void shard_submit(shard_pool *p, unsigned i, shard_fn fn, void *arg, shard_latch *latch) {
    shard_submit_deferred(p, i, fn, arg, latch);
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->mu);
    /* wake the thread only if it sleeps; a busy shard finds the task on its next turn */
    if (s->waiting) pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void shard_pool_quiesce(shard_pool *p) {
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->mu);
        while (s->count > 0 || s->busy) pthread_cond_wait(&s->idle_cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
}

void shard_pause(shard_pool *p, unsigned i, bool paused) {
    if (i >= p->n) return;
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->mu);
    s->paused = paused;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void shard_pool_stats(shard_pool *p, op_stats *out) {
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->mu);
        out->entropy_categories_capped += s->published.entropy_categories_capped;
        out->bucket_reclaim += s->published.bucket_reclaim;
        out->cold_evictions += s->published.cold_evictions;
        pthread_mutex_unlock(&s->mu);
    }
}
