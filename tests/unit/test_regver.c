/* test_regver.c - registry versions published by pointer swap (engine_int.h): readers
 * never wait for a registry change, pushes judged on the replaced version are sequenced
 * before the change, and replaced versions are freed once nothing reads them.
 *
 *  - a change held between building its version and publishing it (the test hook
 *    engine_hold_registry_changes) does not hold up gets, batch gets, pushes, metrics,
 *    pings or info; the pushes made meanwhile are judged on the old version and get LSNs
 *    below the change's, the ones after it on the new version above it;
 *  - registers of every kind (new field, widened table with a new chain, new table,
 *    forced removal, forced destructive change, merge, reset) race pushes, gets, batch
 *    gets, metrics and the sweeper (ASan shows any use after free); afterwards every
 *    replaced version is freed (beava_registry_versions_retained back to 1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <cmocka.h>

#include <jansson.h>

#include "engine.h"

#define STRESS_ROUNDS 150        /* register cycles raced by the readers */
#define USERS 17

/* Version 1 and its changes, one of each kind (as tests/e2e/test_engine_async.py). */
#define CLICK "{\"kind\":\"event\",\"name\":\"Click\",\"schema\":{\"fields\":{\"user\":\"str\",\"n\":\"i64\"}}}"
#define CLICK_W \
    "{\"kind\":\"event\",\"name\":\"Click\",\"schema\":{\"fields\":{\"user\":\"str\",\"n\":\"i64\",\"w\":\"i64\"}}}"
#define TABLE(name, agg, pre)                                                                               \
    "{\"kind\":\"derivation\",\"name\":\"" name "\",\"output_kind\":\"table\",\"upstreams\":[\"Click\"],"  \
    "\"ops\":[" pre "{\"op\":\"group_by\",\"keys\":[\"user\"],\"agg\":{" agg "}}],"                       \
    "\"table_primary_key\":[\"user\"]}"
#define PRE "{\"op\":\"with_columns\",\"exprs\":{\"n2\":\"(n * 2)\"}},"
#define AGG "\"clicks\":{\"op\":\"count\"},\"n2_sum\":{\"op\":\"sum\",\"params\":{\"field\":\"n2\"}}"
#define AGG_W AGG ",\"w_sum\":{\"op\":\"sum\",\"params\":{\"field\":\"w\"}}"
#define AGG_CHANGED \
    "\"clicks\":{\"op\":\"count\"},\"n2_sum\":{\"op\":\"sum\",\"params\":{\"field\":\"n2\",\"window\":\"1h\"}}"
#define PER_USER TABLE("PerUser", AGG, PRE)
#define PER_USER_W TABLE("PerUser", AGG_W, PRE)
#define SEEN TABLE("Seen", "\"seen\":{\"op\":\"count\"}", "")
#define BY_W TABLE("ByW", "\"bw\":{\"op\":\"sum\",\"params\":{\"field\":\"w\"}}", "")

#define BASE "{\"nodes\":[" CLICK "," PER_USER "],\"force\":true}"   /* from any change below */
static const char *const CHANGES[] = {
    BASE,
    "{\"nodes\":[" CLICK_W "," PER_USER "]}",                                 /* new field */
    "{\"nodes\":[" CLICK_W "," PER_USER_W "]}",                               /* widened table */
    "{\"nodes\":[" CLICK_W "," PER_USER_W "," SEEN "]}",                      /* new table */
    "{\"nodes\":[" CLICK_W "," PER_USER_W "," BY_W "],\"force\":true}",       /* removed + new */
    "{\"nodes\":[" TABLE("Seen", "\"seen\":{\"op\":\"count\"}", "") "],\"mode\":\"merge\"}",   /* merge */
    "{\"nodes\":[" CLICK_W "," TABLE("PerUser", AGG_CHANGED, PRE) "],\"force\":true}",   /* destructive */
};
#define NCHANGES (sizeof CHANGES / sizeof *CHANGES)

static int reg(engine *e, const char *body) {
    bv_buf out;
    bv_buf_init(&out);
    int st = engine_register(e, body, strlen(body), &out);
    if (st != 200) fprintf(stderr, "register %d: %.*s\n", st, (int)out.len, out.data ? out.data : "");
    bv_buf_free(&out);
    return st;
}

static push_result push(engine *e, const char *event, const char *user, int n, int w) {
    json_t *d = w >= 0 ? json_pack("{s:s,s:i,s:i}", "user", user, "n", n, "w", w)
                       : json_pack("{s:s,s:i}", "user", user, "n", n);
    push_result res;
    engine_push(e, event, strlen(event), d, false, &res);
    json_decref(d);
    return res;
}

/* A get of table/key: the status, and the row in *row (caller decrefs) when 200. */
static int get(engine *e, const char *table, const char *key, json_t **row) {
    json_t *req = json_pack("{s:s,s:s}", "table", table, "key", key);
    bv_buf out;
    bv_buf_init(&out);
    int st = engine_get(e, TRANSPORT_HTTP, req, NULL, &out);
    if (row) *row = st == 200 ? json_loadb(out.data, out.len, 0, NULL) : NULL;
    bv_buf_free(&out);
    json_decref(req);
    return st;
}

static int batch_get(engine *e, const char *key) {
    json_t *req = json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "requests", "table", "PerUser", "key", key, "table", "Seen",
                            "key", key);
    bv_buf out;
    bv_buf_init(&out);
    int st = engine_batch_get(e, req, NULL, &out);
    bv_buf_free(&out);
    json_decref(req);
    return st;
}

/* A gauge from /metrics text (-1 if absent). */
static long long metric(engine *e, const char *name) {
    bv_buf out;
    bv_buf_init(&out);
    engine_metrics(e, &out);
    bv_buf_putc(&out, 0);
    long long v = -1;
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(out.data, pat);
    if (p) v = strtoll(p + strlen(pat), NULL, 10);
    bv_buf_free(&out);
    return v;
}

static int nothing(void *ctx, uint64_t lsn, uint64_t version) {
    (void)ctx, (void)lsn, (void)version;
    return 0;
}

static engine *start(void) {
    engine_options o;
    memset(&o, 0, sizeof o);
    o.test_mode = true;
    o.shards = 2;
    engine *e = engine_new(&o);
    assert_non_null(e);
    assert_int_equal(engine_start_shards(e), 0);
    return e;
}

/* ---- a held change ----------------------------------------------------------------------- */

typedef struct reg_job {
    engine *e;
    const char *body;
    int status;
} reg_job;

static void *reg_thread(void *arg) {
    reg_job *j = arg;
    j->status = reg(j->e, j->body);
    return NULL;
}

static void test_readers_run_while_a_change_is_held(void **state) {
    (void)state;
    engine *e = start();
    assert_int_equal(reg(e, "{\"nodes\":[" CLICK_W "," PER_USER "]}"), 200);
    for (int i = 0; i < 3; i++) assert_int_equal(push(e, "Click", "u1", 1, 2).status, 200);

    /* widen PerUser (new chain, new slot) and add Seen; held once built */
    engine_hold_registry_changes(e, true);
    reg_job j = { e, "{\"nodes\":[" CLICK_W "," PER_USER_W "," SEEN "]}", 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reg_thread, &j), 0);
    engine_wait_registry_held(e);

    /* everything a reader does completes now, on version 1 */
    json_t *row = NULL;
    assert_int_equal(get(e, "PerUser", "u1", &row), 200);
    assert_int_equal(json_integer_value(json_object_get(row, "clicks")), 3);
    assert_null(json_object_get(row, "w_sum"));
    json_decref(row);
    assert_int_equal(get(e, "Seen", "u1", NULL), 404);
    assert_int_equal(batch_get(e, "u1"), 200);
    push_result held = push(e, "Click", "u1", 1, 5);
    assert_int_equal(held.status, 200);
    assert_int_equal(held.registry_version, 1);
    assert_int_equal(metric(e, "beava_registry_version"), 1);
    assert_true(metric(e, "beava_registry_versions_retained") >= 1);
    assert_int_equal(engine_registry_version(e), 1);
    bv_buf out;
    bv_buf_init(&out);
    assert_int_equal(engine_ping(e, &out), 200);
    engine_registry_info(e, &out);
    bv_buf_free(&out);
    assert_int_equal(engine_sweep_cold(e, 1024), 0);

    engine_hold_registry_changes(e, false);
    pthread_join(th, NULL);
    assert_int_equal(j.status, 200);
    uint64_t reg_lsn = engine_applied_lsn(e);      /* nothing was pushed since the register */
    assert_true(held.ack_lsn < reg_lsn);

    push_result after = push(e, "Click", "u1", 1, 7);
    assert_int_equal(after.status, 200);
    assert_int_equal(after.registry_version, 2);
    assert_true(after.ack_lsn > reg_lsn);
    assert_int_equal(get(e, "PerUser", "u1", &row), 200);
    assert_int_equal(json_integer_value(json_object_get(row, "clicks")), 5);
    assert_true(json_number_value(json_object_get(row, "w_sum")) == 7.0);   /* only the push after */
    json_decref(row);
    assert_int_equal(get(e, "Seen", "u1", &row), 200);
    assert_int_equal(json_integer_value(json_object_get(row, "seen")), 1);
    json_decref(row);

    /* version 1 is freed once drained (a barrier drains) */
    assert_int_equal(engine_quiesce(e, nothing, NULL), 0);
    assert_int_equal(metric(e, "beava_registry_versions_retained"), 1);
    engine_free(e);
}

/* A push during a held change to an event only the change adds is judged on the old
 * version (404), the same push after it is accepted. */
static void test_held_change_judges_pushes_on_the_old_version(void **state) {
    (void)state;
    engine *e = start();
    assert_int_equal(reg(e, "{\"nodes\":[" CLICK "]}"), 200);
    engine_hold_registry_changes(e, true);
    reg_job j = { e, "{\"nodes\":[" CLICK ",{\"kind\":\"event\",\"name\":\"View\",\"schema\":{\"fields\":"
                     "{\"user\":\"str\",\"n\":\"i64\"}}}]}", 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reg_thread, &j), 0);
    engine_wait_registry_held(e);
    assert_int_equal(push(e, "View", "u", 1, -1).status, 404);
    assert_int_equal(push(e, "Click", "u", 1, -1).status, 200);
    engine_hold_registry_changes(e, false);
    pthread_join(th, NULL);
    assert_int_equal(j.status, 200);
    assert_int_equal(push(e, "View", "u", 1, -1).status, 200);
    engine_free(e);
}

/* ---- registers of every kind racing readers ---------------------------------------------- */

typedef struct race {
    engine *e;
    atomic_bool stop;
    atomic_long pushes_ok, gets_ok, bad;
} race;

static void *pusher(void *arg) {
    race *r = arg;
    char user[16];
    for (int i = 0; !atomic_load(&r->stop); i++) {
        snprintf(user, sizeof user, "u%d", i % USERS);
        push_result res = push(r->e, "Click", user, 1, i % 5);
        if (res.status == 200) atomic_fetch_add(&r->pushes_ok, 1);
        else if (res.status != 400 && res.status != 404) atomic_fetch_add(&r->bad, 1);
    }
    return NULL;
}

static void *getter(void *arg) {
    race *r = arg;
    static const char *const tables[] = { "PerUser", "Seen", "ByW" };
    char user[16];
    for (int i = 0; !atomic_load(&r->stop); i++) {
        snprintf(user, sizeof user, "u%d", i % USERS);
        json_t *row = NULL;
        int st = get(r->e, tables[i % 3], user, &row);
        json_decref(row);
        if (st == 200) atomic_fetch_add(&r->gets_ok, 1);
        else if (st != 404) atomic_fetch_add(&r->bad, 1);
        if (batch_get(r->e, user) != 200) atomic_fetch_add(&r->bad, 1);
    }
    return NULL;
}

static void *maintainer(void *arg) {
    race *r = arg;
    while (!atomic_load(&r->stop)) {
        if (metric(r->e, "beava_registry_versions_retained") < 1) atomic_fetch_add(&r->bad, 1);
        engine_sweep_cold(r->e, 4096);           /* frees unpinned, drained versions */
    }
    return NULL;
}

static void test_registers_of_every_kind_race_readers(void **state) {
    (void)state;
    race r = { .e = start() };
    atomic_init(&r.stop, false);
    atomic_init(&r.pushes_ok, 0);
    atomic_init(&r.gets_ok, 0);
    atomic_init(&r.bad, 0);
    assert_int_equal(reg(r.e, BASE), 200);
    pthread_t th[4];
    void *(*fn[4])(void *) = { pusher, pusher, getter, maintainer };
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, fn[i], &r), 0);
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        for (size_t c = 1; c < NCHANGES; c++) assert_int_equal(reg(r.e, CHANGES[c]), 200);
        if (round % 4 == 3) {
            bv_buf out;
            bv_buf_init(&out);
            assert_int_equal(engine_reset(r.e, &out), 200);
            bv_buf_free(&out);
        }
        assert_int_equal(reg(r.e, BASE), 200);       /* back to the base */
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&r.bad), 0);
    assert_true(atomic_load(&r.pushes_ok) > 0);
    assert_true(atomic_load(&r.gets_ok) > 0);

    /* everything replaced is freed once nothing reads it */
    assert_int_equal(engine_quiesce(r.e, nothing, NULL), 0);
    assert_int_equal(metric(r.e, "beava_registry_versions_retained"), 1);
    /* and the live version works */
    assert_int_equal(push(r.e, "Click", "z", 1, -1).status, 200);
    json_t *row = NULL;
    assert_int_equal(get(r.e, "PerUser", "z", &row), 200);
    assert_int_equal(json_integer_value(json_object_get(row, "clicks")), 1);
    json_decref(row);
    engine_free(r.e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readers_run_while_a_change_is_held),
        cmocka_unit_test(test_held_change_judges_pushes_on_the_old_version),
        cmocka_unit_test(test_registers_of_every_kind_race_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
