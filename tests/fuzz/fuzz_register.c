/*
 * fuzz_register.c - libFuzzer target: arbitrary bytes as a /register body.
 *
 * Each input runs against a fresh registry that already holds a small pipeline (an
 * event, an event derivation and two tables), so the bytes exercise the diff, the force
 * gate, dry_run, validation and - when a plan comes back - apply (removals, in-place
 * widening, inserts). Invariants checked beyond "no crash, no leak":
 *   - a 200 with a plan leaves an empty response and apply bumps the version by one;
 *   - every other answer leaves the version and the descriptor count unchanged;
 *   - every response is a JSON object;
 *   - table hooks balance: after registry_free no table is left alive.
 * One registry per input keeps runs independent (nothing accumulates across inputs).
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

static const char BASE[] =
    "{\"nodes\":["
    "{\"kind\":\"event\",\"name\":\"PageView\",\"schema\":{\"fields\":{\"path\":\"str\","
    "\"dwell_ms\":\"i64\",\"amount\":\"f64\"},\"optional_fields\":[\"amount\"]},"
    "\"dedupe_key\":\"path\"},"
    "{\"kind\":\"derivation\",\"name\":\"Long\",\"output_kind\":\"event\",\"upstreams\":[\"PageView\"],"
    "\"ops\":[{\"op\":\"filter\",\"expr\":\"dwell_ms > 1000\"}]},"
    "{\"kind\":\"derivation\",\"name\":\"SiteMetrics\",\"output_kind\":\"table\",\"upstreams\":[\"PageView\"],"
    "\"ops\":[{\"op\":\"group_by\",\"keys\":[],\"agg\":{"
    "\"views\":{\"op\":\"count\",\"params\":{\"window\":\"24h\"}},"
    "\"dwell_p50\":{\"op\":\"quantile\",\"params\":{\"field\":\"dwell_ms\",\"q\":0.5,\"window\":\"1h\"}}}}],"
    "\"table_primary_key\":[]},"
    "{\"kind\":\"derivation\",\"name\":\"PathStats\",\"output_kind\":\"table\",\"upstreams\":[\"Long\"],"
    "\"ops\":[{\"op\":\"with_columns\",\"exprs\":{\"slow\":\"dwell_ms > 5000\"}},"
    "{\"op\":\"group_by\",\"keys\":[\"path\"],\"agg\":{"
    "\"path_views\":{\"op\":\"count\",\"params\":{}},"
    "\"slow_views\":{\"op\":\"count\",\"params\":{\"where\":\"slow == true\"}}}}],"
    "\"table_primary_key\":[\"path\"]}]}";

typedef struct live {
    long tables;
} live;

static void on_added(void *ctx, agg_table *t) {
    (void)t;
    ((live *)ctx)->tables++;
}

static void on_removed(void *ctx, agg_table *t) {
    (void)t;
    if (--((live *)ctx)->tables < 0) abort();
}

static void on_widened(void *ctx, agg_table *t, size_t old_n) {
    (void)ctx;
    if (old_n >= t->nfeatures) abort();
}

static void must_be_object(const bv_buf *b) {
    json_t *j = json_loadb(b->data ? b->data : "", b->len, 0, NULL);
    if (!json_is_object(j)) abort();
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    live lv = {0};
    reg_hooks hooks = {&lv, on_added, on_removed, on_widened};
    registry_options opts = {size % 2 == 0};   /* both memory-governance modes */
    registry *r = registry_new(&opts);
    bv_buf out;
    bv_buf_init(&out);
    reg_plan *plan = NULL;

    if (registry_prepare(r, BASE, sizeof BASE - 1, &out, &plan) != 200 || !plan) abort();
    out.len = 0;
    registry_apply(r, plan, &hooks, &out);

    uint64_t v = registry_version(r);
    size_t n = registry_node_count(r);
    out.len = 0;
    plan = NULL;
    int status = registry_prepare(r, (const char *)data, size, &out, &plan);
    if (plan) {
        if (status != 200 || out.len != 0) abort();
        registry_apply(r, plan, &hooks, &out);
        if (registry_version(r) != v + 1) abort();
    } else {
        if (status != 200 && status != 400 && status != 409) abort();
        if (registry_version(r) != v || registry_node_count(r) != n) abort();
    }
    must_be_object(&out);

    bv_buf dump;
    bv_buf_init(&dump);
    jsonw w;
    jsonw_init(&w, &dump);
    registry_dump(r, &w);
    must_be_object(&dump);
    bv_buf_free(&dump);

    registry_free(r, &hooks);
    if (lv.tables != 0) abort();
    bv_buf_free(&out);
    return 0;
}
