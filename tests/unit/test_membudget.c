/*
 * test_membudget.c - the shared receive budget (beava/src/server/membudget.c) and the
 * elastic blocking-call pool the HTTP data plane runs engine calls on
 * (beava/src/server/workpool.c).
 *
 * Budget: takes up to the limit succeed, one byte past it fails and changes nothing,
 * gives make room again, the peak and refusal counters follow, and racing threads never
 * take more than the limit in total. Pool: every job runs once; a job that blocks does
 * not hold back the jobs submitted after it (a new worker starts); stopping runs what is
 * queued; a stopped pool refuses new jobs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "membudget.h"
#include "workpool.h"

static void budget_limits(void **state) {
    (void)state;
    membudget b;
    membudget_init(&b, 1000);
    assert_true(membudget_take(&b, 600));
    assert_true(membudget_take(&b, 400));
    assert_int_equal(membudget_used(&b), 1000);
    assert_false(membudget_take(&b, 1));
    assert_int_equal(membudget_used(&b), 1000);
    assert_int_equal(atomic_load(&b.refused), 1);
    membudget_give(&b, 600);
    assert_int_equal(membudget_used(&b), 400);
    assert_false(membudget_take(&b, 601));
    assert_true(membudget_take(&b, 600));
    assert_int_equal(atomic_load(&b.peak), 1000);
    assert_false(membudget_take(&b, UINT64_MAX));
    assert_int_equal(atomic_load(&b.refused), 3);
    bv_buf out;
    bv_buf_init(&out);
    membudget_metrics(&b, &out);
    assert_non_null(strstr(out.data, "beava_body_budget_used_bytes 1000\n"));
    assert_non_null(strstr(out.data, "beava_body_budget_refused_total 3\n"));
    bv_buf_free(&out);
}

#define RACERS 4
#define RACE_ROUNDS 20000

typedef struct racer {
    membudget *b;
    _Atomic uint64_t *max_seen;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        if (!membudget_take(r->b, 300)) continue;
        uint64_t u = membudget_used(r->b), m = atomic_load(r->max_seen);
        while (u > m && !atomic_compare_exchange_weak(r->max_seen, &m, u)) {
        }
        membudget_give(r->b, 300);
    }
    return NULL;
}

static void budget_never_exceeded_under_races(void **state) {
    (void)state;
    membudget b;
    membudget_init(&b, 1000);                     /* room for three takes of 300, not four */
    _Atomic uint64_t max_seen = 0;
    racer r = { &b, &max_seen };
    pthread_t t[RACERS];
    for (int i = 0; i < RACERS; i++) assert_int_equal(pthread_create(&t[i], NULL, race, &r), 0);
    for (int i = 0; i < RACERS; i++) pthread_join(t[i], NULL);
    assert_true(atomic_load(&max_seen) <= 900);
    assert_true(atomic_load(&b.peak) <= 900);
    assert_int_equal(membudget_used(&b), 0);
}

/* ---- workpool ----------------------------------------------------------------------- */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    int ran;
} gate;

typedef struct test_job {
    workpool_job job;                 /* first: the pool hands this pointer back */
    gate *g;
    bool wait_for_gate;
} test_job;

static void run_test_job(workpool_job *j) {
    test_job *t = (test_job *)j;
    pthread_mutex_lock(&t->g->mu);
    while (t->wait_for_gate && !t->g->open) pthread_cond_wait(&t->g->cv, &t->g->mu);
    t->g->ran++;
    pthread_cond_broadcast(&t->g->cv);
    pthread_mutex_unlock(&t->g->mu);
}

static void wait_ran(gate *g, int n) {
    pthread_mutex_lock(&g->mu);
    while (g->ran < n) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void pool_blocked_job_does_not_hold_others(void **state) {
    (void)state;
    gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };
    workpool *p = workpool_new(8, 0);
    assert_non_null(p);
    test_job blocked = { { run_test_job, NULL }, &g, true };
    assert_true(workpool_submit(p, &blocked.job));
    test_job quick[5];
    for (int i = 0; i < 5; i++) {
        quick[i] = (test_job){ { run_test_job, NULL }, &g, false };
        assert_true(workpool_submit(p, &quick[i].job));
    }
    wait_ran(&g, 5);                              /* all five ran while the first is blocked */
    pthread_mutex_lock(&g.mu);
    assert_int_equal(g.ran, 5);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    wait_ran(&g, 6);
    assert_true(workpool_threads(p) >= 2);
    assert_true(workpool_threads(p) <= 8);
    workpool_free(p);
}

static void pool_stop_runs_queued_then_refuses(void **state) {
    (void)state;
    gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, true, 0 };
    workpool *p = workpool_new(1, 0);             /* one worker: jobs queue up */
    test_job jobs[20];
    for (int i = 0; i < 20; i++) {
        jobs[i] = (test_job){ { run_test_job, NULL }, &g, false };
        assert_true(workpool_submit(p, &jobs[i].job));
    }
    workpool_stop(p);
    assert_int_equal(g.ran, 20);
    test_job late = { { run_test_job, NULL }, &g, false };
    assert_false(workpool_submit(p, &late.job));
    workpool_free(p);
    assert_false(workpool_submit(NULL, &late.job));
    assert_int_equal(g.ran, 20);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(budget_limits),
        cmocka_unit_test(budget_never_exceeded_under_races),
        cmocka_unit_test(pool_blocked_job_does_not_hold_others),
        cmocka_unit_test(pool_stop_runs_queued_then_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
