/*
 * smoke.c - the bench's self-test (see smoke.h).
 *
 * The count check needs a lifetime `count` feature on the table grouped by the key
 * field (small.json's TxnAgg.cnt). It reads every key of the (small) key space with
 * POST /batch_get, 250 keys per call, and compares the sum with the events acked by
 * all runs: a lost, duplicated or unacknowledged-but-applied event fails it.
 */
#include "smoke.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "run.h"
#include "target.h"

#define SMOKE_KEYS 1000

typedef struct tally {
    int passed, failed;
} tally;

static void check(tally *t, bool ok, const char *what, const char *detail) {
    if (ok) t->passed++;
    else t->failed++;
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what, detail && detail[0] ? ": " : "", detail ? detail : "");
    fflush(stdout);
}

static const pl_feature *count_feature(const pl_table *t) {
    for (size_t i = 0; t && i < t->nfeats; i++)
        if (strcmp(t->feats[i].op, "count") == 0 && t->feats[i].window_ms == 0) return &t->feats[i];
    return NULL;
}

/* Sum of feature over keys 0..n-1 via /batch_get; -1 on any error (message in err). */
static long long sum_counts(beava_target *t, const pl_table *tb, const pl_feature *f, unsigned n, char *err,
                            size_t errlen) {
    long long sum = 0;
    bbuf req, resp;
    bbuf_init(&req);
    bbuf_init(&resp);
    for (unsigned base = 0; base < n && sum >= 0; base += 250) {
        bbuf_reset(&req);
        bbuf_puts(&req, "{\"requests\":[");
        for (unsigned k = base; k < base + 250 && k < n; k++) {
            char key[32];
            int kl = gen_key_text(k, key);
            bbuf_printf(&req, "%s{\"table\":\"%s\",\"key\":\"%.*s\",\"features\":[\"%s\"]}", k > base ? "," : "",
                        tb->name, kl, key, f->name);
        }
        bbuf_puts(&req, "]}");
        long st;
        if (ctl_request(&t->ctl, "POST", t->http, "/batch_get", "application/json", req.data, req.len, &st, &resp) != 0 ||
            st != 200) {
            snprintf(err, errlen, "POST /batch_get: %ld %.200s", st, resp.data ? resp.data : "");
            sum = -1;
            break;
        }
        json_error_t je;
        json_t *root = json_loadb(resp.data, resp.len, 0, &je);
        json_t *results = json_object_get(root, "results");
        if (!json_is_array(results)) {
            snprintf(err, errlen, "batch_get reply has no results: %.200s", resp.data);
            sum = -1;
        }
        size_t i;
        json_t *row;
        json_array_foreach(results, i, row) {
            if (!json_is_object(row) || json_object_get(row, "error")) {
                snprintf(err, errlen, "batch_get element %zu is not a row", i);
                sum = -1;
                break;
            }
            json_t *v = json_object_get(row, f->name);
            if (json_is_integer(v)) sum += json_integer_value(v);
        }
        json_decref(root);
    }
    bbuf_free(&req);
    bbuf_free(&resp);
    return sum;
}

static bool run_ok(const driver_result *r, bool get_mode, char *detail, size_t n) {
    bool ok = !r->error[0] && r->lost == 0 && r->conn_errors == 0 && r->events_failed == 0 && r->gets_failed == 0 &&
              (get_mode ? r->gets_ok > 0 : r->events_acked > 0);
    snprintf(detail, n, "%llu events acked, %llu failed, %llu gets ok, %llu lost in %.2f s%s%s",
             (unsigned long long)r->events_acked, (unsigned long long)r->events_failed, (unsigned long long)r->gets_ok,
             (unsigned long long)r->lost, r->elapsed_s, r->error[0] ? "; " : "", r->error);
    return ok;
}

int smoke_run(const bench_opts *o, const pipeline *pl) {
    tally t = { 0, 0 };
    char err[1024] = "", detail[1024];
    beava_target bt;
    uint64_t acked = 0;
    const pl_table *kt = pipeline_key_table(pl);
    const pl_feature *cf = count_feature(kt);
    check(&t, kt && cf, "pipeline has a lifetime count on the key table", kt ? kt->name : pl->key_field);
    if (!kt || !cf) goto out;
    if (!o->spawn) {
        check(&t, false, "--smoke needs --spawn BEAVA", NULL);
        goto out;
    }
    bench_opts so = *o;
    so.durability = o->durability ? o->durability : "memory";
    int rc = target_open(&so, &bt, err, sizeof err);
    check(&t, rc == 0, "server starts", rc == 0 ? bt.tcp : err);
    if (rc != 0) goto out;
    rc = target_register(&bt, pl, err, sizeof err);
    check(&t, rc == 0, "register", err);

    driver_result *r = xcalloc(1, sizeof *r);
    driver_cfg c;
    so.conns = 2;
    so.depth = 32;
    so.batch = 1;
    so.threads = 1;
    so.duration = 1;
    so.warmup = 0;
    so.events = 0;
    so.rate = 0;
    so.get_fraction = 0;
    so.keys = SMOKE_KEYS;
    so.dist = KEYS_UNIFORM;

    /* 1. TCP msgpack, pipelined single pushes, 1 s */
    wire_ctx w = { .kind = WIRE_TCP_MSGPACK, .pl = pl, .get_table = kt->name };
    run_base_cfg(&so, &w, bt.tcp, &c);
    rc = driver_run(&c, r);
    check(&t, rc == 0 && run_ok(r, false, detail, sizeof detail), "1 s of TCP msgpack pushes (C2 x D32)",
          rc == 0 ? detail : r->error);
    acked += r->events_acked;

    /* 2. HTTP keep-alive, one push per request, 1 s */
    wire_ctx wh = { .kind = WIRE_HTTP, .pl = pl, .get_table = kt->name };
    so.depth = 1;
    run_base_cfg(&so, &wh, bt.http, &c);
    rc = driver_run(&c, r);
    check(&t, rc == 0 && run_ok(r, false, detail, sizeof detail), "1 s of HTTP keep-alive pushes (C2 x D1)",
          rc == 0 ? detail : r->error);
    acked += r->events_acked;

    /* 3. TCP JSON OP_PUSH_MANY, exactly 2,000 events in batches of 50 */
    wire_ctx wj = { .kind = WIRE_TCP_JSON, .pl = pl, .get_table = kt->name };
    so.conns = 1;
    so.depth = 4;
    so.batch = 50;
    so.duration = 0;
    so.events = 2000;
    run_base_cfg(&so, &wj, bt.tcp, &c);
    rc = driver_run(&c, r);
    bool ok = rc == 0 && run_ok(r, false, detail, sizeof detail) && r->events_acked == 2000;
    check(&t, ok, "2,000 events by TCP JSON OP_PUSH_MANY (B50)", rc == 0 ? detail : r->error);
    acked += r->events_acked;

    /* 4. the counts add up */
    char sumerr[256] = "";
    long long sum = sum_counts(&bt, kt, cf, SMOKE_KEYS, sumerr, sizeof sumerr);
    snprintf(detail, sizeof detail, "sum of %s.%s over %d keys = %lld, events acked = %llu%s%s", kt->name, cf->name,
             SMOKE_KEYS, sum, (unsigned long long)acked, sumerr[0] ? "; " : "", sumerr);
    check(&t, sum >= 0 && (unsigned long long)sum == acked, "server counts equal events acked", detail);
    double resident = target_metric(&bt, "beava_entity_count_resident");
    snprintf(detail, sizeof detail, "beava_entity_count_resident = %.0f", resident);
    check(&t, resident > 0 && resident <= SMOKE_KEYS, "entity count within the key space", detail);

    /* 5. gets over TCP msgpack and HTTP */
    so.batch = 1;
    so.depth = 8;
    so.events = 500;
    so.get_fraction = 1;
    run_base_cfg(&so, &w, bt.tcp, &c);
    rc = driver_run(&c, r);
    ok = rc == 0 && run_ok(r, true, detail, sizeof detail) && r->gets_ok == 500;
    check(&t, ok, "500 gets by TCP msgpack", rc == 0 ? detail : r->error);
    so.depth = 1;
    run_base_cfg(&so, &wh, bt.http, &c);
    rc = driver_run(&c, r);
    ok = rc == 0 && run_ok(r, true, detail, sizeof detail) && r->gets_ok == 500;
    check(&t, ok, "500 gets by HTTP", rc == 0 ? detail : r->error);
    free(r);

    int st = target_close(&bt);
    printf("note server exit status %d\n", st);
out:
    printf("%d passed, %d failed\n", t.passed, t.failed);
    return t.failed ? 1 : 0;
}
