/*
 * workpool.h - a small elastic thread pool for calls that may block.
 *
 * The HTTP data plane's I/O threads never wait: a request whose answer needs an engine
 * call that blocks (register and reset wait for every earlier push to be applied) is
 * suspended and handed to this pool; the job answers the request from the worker thread
 * when the call returns. Workers are started on demand, up to max_threads, whenever the
 * queued jobs outnumber the idle workers, so one blocked job never delays the jobs behind
 * it until max_threads jobs are blocked at once; past that, jobs wait in FIFO order.
 * Workers live until workpool_stop.
 *
 * Jobs are intrusive (the caller embeds a workpool_job in its own request state), so
 * submitting allocates nothing. The job memory must stay valid until its fn has run.
 */
#ifndef BEAVA_WORKPOOL_H
#define BEAVA_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct workpool workpool;

typedef struct workpool_job {
    void (*fn)(struct workpool_job *job);
    struct workpool_job *next;           /* owned by the pool while queued */
} workpool_job;

/* A pool that may grow to max_threads workers (at least 1), each with a stack of
 * stack_bytes (0 = the system default). Returns NULL when out of memory. */
workpool *workpool_new(unsigned max_threads, size_t stack_bytes);

/* Queue job; job->fn(job) runs on a worker later. Returns false (nothing queued) only when
 * p is NULL, the pool is stopping, or it has no worker and cannot start one. */
bool workpool_submit(workpool *p, workpool_job *job);

/* Number of workers started so far (for metrics). */
unsigned workpool_threads(workpool *p);

/* Run every queued job to completion and join the workers. Afterwards submit returns
 * false (the pool stays valid for callers racing with the stop). NULL is a no-op. */
void workpool_stop(workpool *p);

/* Stop (if not yet stopped) and free. No other thread may use p any more. NULL is a no-op. */
void workpool_free(workpool *p);

#endif
