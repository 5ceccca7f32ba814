/*
 * shard.c - shard threads, their bounded task rings and state locks (see shard.h).
 *
 * The thread sleeps on a condition of the queue lock when its ring is empty (or it is
 * paused); producers wake it through shard_pool_kick() only when it sleeps, so a busy
 * shard costs its producers no system call.
 */
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct shard_task {
    shard_fn apply, post;
    void *arg;
} shard_task;

typedef struct shard {
    pthread_t thread;
    bool started;
    pthread_mutex_t qmu;         /* ring, flags */
    pthread_cond_t cv;           /* work arrived / pause lifted / stop */
    pthread_cond_t idle_cv;      /* ring drained, or room made */
    shard_task *ring;
    size_t capacity, head, count;
    bool inflight, paused, stopping, waiting;
    bool held_inline;            /* an I/O thread applies inline: it takes what queues meanwhile */
    pthread_mutex_t smu;         /* state: stores and ctx */
    shard_ctx ctx;
    shard_prefetch prefetch;
} shard;

struct shard_pool {
    unsigned n;
    bool running;
    shard *shards;
};

static void run_tasks(shard *s, shard_task *run, size_t n);

static void *shard_main(void *arg) {
    shard *s = arg;
    pthread_setname_np(pthread_self(), "beava-shard");   /* for top, perf sched and gdb */
    shard_task run[SHARD_RUN_MAX];
    pthread_mutex_lock(&s->qmu);
    for (;;) {
        while (!s->stopping && (s->count == 0 || s->paused || s->held_inline)) {
            pthread_cond_broadcast(&s->idle_cv);
            s->waiting = true;
            pthread_cond_wait(&s->cv, &s->qmu);
            s->waiting = false;
        }
        if (s->count == 0) break;                      /* stopping, drained */
        size_t n = 0;
        while (n < SHARD_RUN_MAX && n < s->count) {
            run[n++] = s->ring[s->head];
            s->head = (s->head + 1) % s->capacity;
        }
        s->count -= n;
        s->inflight = true;
        pthread_cond_broadcast(&s->idle_cv);           /* room was made */
        pthread_mutex_unlock(&s->qmu);
        pthread_mutex_lock(&s->smu);
        run_tasks(s, run, n);
        pthread_mutex_unlock(&s->smu);
        for (size_t i = 0; i < n; i++)
            if (run[i].post) run[i].post(&s->ctx, run[i].arg);
        pthread_mutex_lock(&s->qmu);
        s->inflight = false;
    }
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}

shard_pool *shard_pool_new(unsigned n, size_t capacity, const shard_prefetch *prefetch) {
    if (n == 0 || n > SHARD_MAX || capacity == 0) return NULL;
    shard_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    p->shards = calloc(n, sizeof *p->shards);
    if (!p->shards) {
        free(p);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_init(&s->qmu, NULL);
        pthread_mutex_init(&s->smu, NULL);
        pthread_cond_init(&s->cv, NULL);
        pthread_cond_init(&s->idle_cv, NULL);
        s->ctx.index = i;
        s->capacity = capacity;
        if (prefetch) s->prefetch = *prefetch;
        s->ring = calloc(capacity, sizeof *s->ring);
        if (!s->ring) {
            shard_pool_free(p);
            return NULL;
        }
    }
    return p;
}

int shard_pool_run(shard_pool *p) {
    if (p->running) return 0;
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        if (pthread_create(&s->thread, NULL, shard_main, s) != 0) return -1;
        s->started = true;
    }
    p->running = true;
    return 0;
}

void shard_pool_free(shard_pool *p) {
    if (!p) return;
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        if (!s->started) continue;
        pthread_mutex_lock(&s->qmu);
        s->stopping = true;
        s->paused = false;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->qmu);
        pthread_join(s->thread, NULL);
    }
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        free(s->ring);
        pthread_cond_destroy(&s->cv);
        pthread_cond_destroy(&s->idle_cv);
        pthread_mutex_destroy(&s->qmu);
        pthread_mutex_destroy(&s->smu);
    }
    free(p->shards);
    free(p);
}

unsigned shard_pool_size(const shard_pool *p) { return p->n; }

bool shard_has_room(shard_pool *p, unsigned i, size_t n) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->qmu);
    bool ok = s->count + n <= s->capacity;
    pthread_mutex_unlock(&s->qmu);
    return ok;
}

void shard_push(shard_pool *p, unsigned i, shard_fn apply, shard_fn post, void *arg) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->qmu);
    if (s->count == s->capacity) {
        fputs("beava: shard ring overflow (the producer did not check for room)\n", stderr);
        abort();
    }
    s->ring[(s->head + s->count) % s->capacity] = (shard_task){ apply, post, arg };
    s->count++;
    pthread_mutex_unlock(&s->qmu);
}

void shard_pool_kick(shard_pool *p) {
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->qmu);
        if (s->waiting && s->count > 0 && !s->paused && !s->held_inline) pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->qmu);
    }
}

bool shard_try_inline(shard_pool *p, unsigned i) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->qmu);
    bool ok = s->count == 0 && !s->inflight && !s->paused && pthread_mutex_trylock(&s->smu) == 0;
    if (ok) s->held_inline = true;
    pthread_mutex_unlock(&s->qmu);
    return ok;
}

/* Run tasks (state lock held), with the prefetch hints, then nothing else. */
static void run_tasks(shard *s, shard_task *run, size_t n) {
    const shard_prefetch *pf = &s->prefetch;
    if (!pf->slot) {
        for (size_t i = 0; i < n; i++) run[i].apply(&s->ctx, run[i].arg);
        return;
    }
    for (size_t i = 0; i < n && i < SHARD_AHEAD_SLOT; i++) pf->slot(run[i].arg);
    for (size_t i = 0; i < n && i < SHARD_AHEAD_ENTITY; i++) pf->entity(run[i].arg);
    for (size_t i = 0; i < n && i < SHARD_AHEAD_STATES; i++) pf->states(run[i].arg);
    for (size_t i = 0; i < n; i++) {
        if (i + SHARD_AHEAD_SLOT < n) pf->slot(run[i + SHARD_AHEAD_SLOT].arg);
        if (i + SHARD_AHEAD_ENTITY < n) pf->entity(run[i + SHARD_AHEAD_ENTITY].arg);
        if (i + SHARD_AHEAD_STATES < n) pf->states(run[i + SHARD_AHEAD_STATES].arg);
        run[i].apply(&s->ctx, run[i].arg);
    }
}

/* The state lock is held inline (held_inline set): apply what queued on the ring, in ring
 * order, up to `take` tasks in all (the thread pops nothing meanwhile), re-checking the
 * ring after each round so that work queued while this thread applied is taken too; then
 * let the shard go and run the posts. What is left past `take` wakes the thread. */
static void inline_drain_release(shard *s, size_t take) {
    shard_task run[SHARD_INLINE_TAKE];
    size_t n = 0;
    if (take > SHARD_INLINE_TAKE) take = SHARD_INLINE_TAKE;
    for (;;) {
        size_t from = n;
        pthread_mutex_lock(&s->qmu);
        if (!s->paused && !s->inflight) {
            while (n < take && s->count > 0) {
                run[n++] = s->ring[s->head];
                s->head = (s->head + 1) % s->capacity;
                s->count--;
            }
        }
        if (n == from) {
            /* the state lock goes first, under the queue lock: whoever sees the shard no
             * longer held (shard_help, shard_try_inline) finds it free, and a producer that
             * queues right after this takes it itself instead of waking the thread */
            pthread_mutex_unlock(&s->smu);
            s->held_inline = false;
            if (s->count > 0 && s->waiting && !s->paused) pthread_cond_signal(&s->cv);   /* the rest: the thread */
            pthread_cond_broadcast(&s->idle_cv);           /* room was made; a quiesce may wait */
            pthread_mutex_unlock(&s->qmu);
            break;
        }
        pthread_mutex_unlock(&s->qmu);
        run_tasks(s, run + from, n - from);
    }
    for (size_t k = 0; k < n; k++)
        if (run[k].post) run[k].post(&s->ctx, run[k].arg);
}

void shard_inline_end(shard_pool *p, unsigned i, size_t take) {
    inline_drain_release(&p->shards[i], take);
}

void shard_help(shard_pool *p, unsigned i, size_t take) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->qmu);
    /* nothing left, or someone applies it: a holder drains before it lets go, a running
     * thread pops again before it sleeps, a paused shard waits for its resume */
    if (s->count == 0 || s->paused || s->held_inline || s->inflight) {
        pthread_mutex_unlock(&s->qmu);
        return;
    }
    if (take > 0 && pthread_mutex_trylock(&s->smu) == 0) {
        s->held_inline = true;
        pthread_mutex_unlock(&s->qmu);
        inline_drain_release(s, take);
        return;
    }
    if (s->waiting) pthread_cond_signal(&s->cv);       /* a reader holds the state: the thread */
    pthread_mutex_unlock(&s->qmu);
}

shard_ctx *shard_inline_ctx(shard_pool *p, unsigned i) {
    return &p->shards[i].ctx;
}

void shard_wait_room(shard_pool *p, unsigned i, size_t n) {
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->qmu);
    while (!s->stopping && s->count + n > s->capacity) pthread_cond_wait(&s->idle_cv, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
}

shard_ctx *shard_lock(shard_pool *p, unsigned i) {
    pthread_mutex_lock(&p->shards[i].smu);
    return &p->shards[i].ctx;
}

void shard_unlock(shard_pool *p, unsigned i) {
    pthread_mutex_unlock(&p->shards[i].smu);
}

void shard_pool_quiesce(shard_pool *p) {
    for (unsigned i = 0; i < p->n; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->qmu);
        if (s->started) {
            if (s->count > 0 && s->waiting) pthread_cond_signal(&s->cv);
            while (s->count > 0 || s->inflight || s->held_inline) pthread_cond_wait(&s->idle_cv, &s->qmu);
        }
        pthread_mutex_unlock(&s->qmu);
    }
}

bool shard_pool_idle(shard_pool *p) {
    bool idle = true;
    for (unsigned i = 0; i < p->n && idle; i++) {
        shard *s = &p->shards[i];
        pthread_mutex_lock(&s->qmu);
        idle = s->count == 0 && !s->inflight && !s->held_inline;
        pthread_mutex_unlock(&s->qmu);
    }
    return idle;
}

void shard_pause(shard_pool *p, unsigned i, bool paused) {
    if (i >= p->n) return;
    shard *s = &p->shards[i];
    pthread_mutex_lock(&s->qmu);
    s->paused = paused;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->qmu);
}

void shard_pool_stats(shard_pool *p, op_stats *out) {
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < p->n; i++) {
        shard_ctx *c = shard_lock(p, i);
        out->entropy_categories_capped += c->stats.entropy_categories_capped;
        out->bucket_reclaim += c->stats.bucket_reclaim;
        out->cold_evictions += c->stats.cold_evictions;
        shard_unlock(p, i);
    }
}
