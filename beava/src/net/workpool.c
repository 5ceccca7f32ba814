/*
 * workpool.c - the elastic blocking-call pool (see workpool.h).
 *
 * One mutex guards the FIFO and the counters; one condition wakes idle workers. A worker
 * is started inside submit (under the mutex) when the queued jobs outnumber the idle
 * workers (a signalled worker still counts as idle until it wakes) and the pool is below
 * its maximum. Stopping sets `stopping`, wakes everyone, and each worker exits once the
 * queue is empty, so queued jobs always run (their requests must be answered before the
 * HTTP daemon may stop).
 */
#include "workpool.h"

#include <pthread.h>
#include <stdlib.h>

struct workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    workpool_job *head, *tail;
    unsigned queued, idle, nthreads, max_threads;
    bool stopping;
    pthread_attr_t attr;
    pthread_t *threads;                  /* max_threads slots */
};

static void *worker_main(void *arg) {
    workpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) {
            p->idle++;
            pthread_cond_wait(&p->cv, &p->mu);
            p->idle--;
        }
        workpool_job *job = p->head;
        if (!job) break;                 /* stopping and drained */
        p->head = job->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        pthread_mutex_unlock(&p->mu);
        job->fn(job);                    /* may free the job's owner */
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

workpool *workpool_new(unsigned max_threads, size_t stack_bytes) {
    workpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->max_threads = max_threads ? max_threads : 1;
    p->threads = calloc(p->max_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_attr_init(&p->attr);
    if (stack_bytes) pthread_attr_setstacksize(&p->attr, stack_bytes);
    return p;
}

bool workpool_submit(workpool *p, workpool_job *job) {
    if (!p) return false;
    job->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    /* every queued job needs a worker of its own: the idle ones may be claimed already */
    if (p->queued + 1 > p->idle && p->nthreads < p->max_threads &&
        pthread_create(&p->threads[p->nthreads], &p->attr, worker_main, p) == 0)
        p->nthreads++;
    if (p->nthreads == 0) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    if (p->tail) p->tail->next = job;
    else p->head = job;
    p->tail = job;
    p->queued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return true;
}

unsigned workpool_threads(workpool *p) {
    pthread_mutex_lock(&p->mu);
    unsigned n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void workpool_stop(workpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    bool joined = p->stopping;
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    unsigned n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    if (joined) return;
    for (unsigned i = 0; i < n; i++) pthread_join(p->threads[i], NULL);
}

void workpool_free(workpool *p) {
    if (!p) return;
    workpool_stop(p);
    pthread_attr_destroy(&p->attr);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
