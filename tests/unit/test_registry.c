/*
 * test_registry.c - the register pipeline end to end: parse, scans, validation codes and
 * paths, force / dry_run / 409 / no-op bodies (byte-exact), in-place widening, force
 * replacement with fresh state (via the hooks), ids, reset, dump.
 *
 * Bodies are written with ' for " (and ` for a literal ') so the JSON stays readable;
 * q() converts them. Every expected body is compared with strcmp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "registry.h"

/* ---- fixture ---- */

typedef struct T {
    registry *r;
    reg_hooks hooks;
    bv_buf log;                  /* "+Name#id ", "-Name#id ", "~Name:old>new " */
    bv_buf out;
    int status;
    bool applied;
} T;

static void log_added(void *ctx, agg_table *t) {
    bv_buf_printf(ctx, "+%s#%llu ", t->name, (unsigned long long)t->id);
}
static void log_removed(void *ctx, agg_table *t) {
    bv_buf_printf(ctx, "-%s#%llu ", t->name, (unsigned long long)t->id);
}
static void log_widened(void *ctx, agg_table *t, size_t old_n) {
    bv_buf_printf(ctx, "~%s:%zu>%zu ", t->name, old_n, t->nfeatures);
}

static char *q(const char *s) {
    char *d = strdup(s);
    for (char *p = d; *p; p++) {
        if (*p == '\'') *p = '"';
        else if (*p == '`') *p = '\'';
    }
    return d;
}

static void t_init(T *t, bool memgov) {
    memset(t, 0, sizeof *t);
    registry_options o = {memgov};
    t->r = registry_new(&o);
    bv_buf_init(&t->log);
    bv_buf_init(&t->out);
    t->hooks = (reg_hooks){&t->log, log_added, log_removed, log_widened};
}

static void t_fini(T *t) {
    registry_free(t->r, &t->hooks);
    bv_buf_free(&t->log);
    bv_buf_free(&t->out);
}

static const char *log_str(T *t) { return t->log.data ? t->log.data : ""; }
static void log_clear(T *t) { t->log.len = 0; if (t->log.data) t->log.data[0] = 0; }

/* Register `body` (quote-converted): prepare, then apply when a plan comes back. */
static int reg(T *t, const char *body) {
    char *b = q(body);
    t->out.len = 0;
    if (t->out.data) t->out.data[0] = 0;
    reg_plan *plan = NULL;
    t->status = registry_prepare(t->r, b, strlen(b), &t->out, &plan);
    t->applied = plan != NULL;
    if (plan) {
        assert_int_equal(t->status, 200);
        assert_int_equal(t->out.len, 0);
        registry_apply(t->r, plan, &t->hooks, &t->out);
    }
    free(b);
    return t->status;
}

static const char *out(T *t) { return t->out.data ? t->out.data : ""; }

static void expect_body(T *t, const char *expected) {
    char *e = q(expected);
    if (strcmp(out(t), e) != 0) print_error("got      %s\nexpected %s\n", out(t), e);
    assert_string_equal(out(t), e);
    free(e);
}

/* A 400 with this code and path, version unchanged. */
static void expect_error(T *t, const char *body, const char *code, const char *path) {
    uint64_t v = registry_version(t->r);
    size_t n = registry_node_count(t->r);
    int st = reg(t, body);
    json_error_t je;
    json_t *j = json_loads(out(t), 0, &je);
    assert_non_null(j);
    const json_t *e = json_object_get(j, "error");
    const char *c = json_string_value(json_object_get(e, "code"));
    const char *p = json_string_value(json_object_get(e, "path"));
    if (st != 400 || !c || strcmp(c, code) || !p || strcmp(p, path))
        print_error("body %s\n -> %d %s\n expected %s at %s\n", body, st, out(t), code, path);
    assert_int_equal(st, 400);
    assert_string_equal(c, code);
    assert_string_equal(p, path);
    assert_non_null(json_string_value(json_object_get(e, "reason")));
    assert_int_equal(json_integer_value(json_object_get(j, "registry_version")), (json_int_t)v);
    assert_int_equal(registry_version(t->r), v);
    assert_int_equal(registry_node_count(t->r), n);
    assert_false(t->applied);
    json_decref(j);
}

/* ---- payload pieces ---- */

#define PAGEVIEW "{'kind':'event','name':'PageView','schema':{'fields':{'path':'str','dwell_ms':'i64'}}}"
#define PAGEVIEW_SID                                                                      \
    "{'kind':'event','name':'PageView','schema':{'fields':{'path':'str','dwell_ms':'i64',"  \
    "'session_id':'str'}}}"
#define SITEMETRICS_AGG                                                                   \
    "'median_dwell_1h':{'op':'quantile','params':{'field':'dwell_ms','q':0.5,'window':'1h'}}," \
    "'page_views_today':{'op':'count','params':{'window':'24h'}},"                        \
    "'top_page_1h':{'op':'top_k','params':{'field':'path','k':1,'window':'1h'}}"
#define SITEMETRICS                                                                       \
    "{'kind':'derivation','name':'SiteMetrics','output_kind':'table','upstreams':['PageView']," \
    "'ops':[{'op':'group_by','keys':[],'agg':{" SITEMETRICS_AGG "}}],'table_primary_key':[]}"
#define SITEMETRICS_PLUS                                                                  \
    "{'kind':'derivation','name':'SiteMetrics','output_kind':'table','upstreams':['PageView']," \
    "'ops':[{'op':'group_by','keys':[],'agg':{" SITEMETRICS_AGG                           \
    ",'dwell_max':{'op':'max','params':{'field':'dwell_ms'}}}}],'table_primary_key':[]}"
#define PATHSTATS                                                                         \
    "{'kind':'derivation','name':'PathStats','output_kind':'table','upstreams':['PageView']," \
    "'ops':[{'op':'group_by','keys':['path'],'agg':{"                                     \
    "'path_views_1h':{'op':'count','params':{'window':'1h'}},"                            \
    "'path_dwell_mean_1h':{'op':'mean','params':{'field':'dwell_ms','window':'1h'}},"     \
    "'path_views_total':{'op':'count','params':{}}}}],'table_primary_key':['path']}"

#define EV_E "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'}}}"
/* A table on E with one feature spec (a JSON map entry) and keys. */
#define TABLE(name, keys, aggs)                                                           \
    "{'kind':'derivation','name':'" name "','output_kind':'table','upstreams':['E'],"     \
    "'ops':[{'op':'group_by','keys':" keys ",'agg':{" aggs "}}],'table_primary_key':" keys "}"

/* ---- tests ---- */

/* mode:"merge": descriptors not named are kept; named ones go through the same diff,
 * force and dry_run rules; already_present lists only named descriptors. */
static void test_merge_keeps_unnamed(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS "]}"), 200);
    agg_table *sm = registry_table(t.r, "SiteMetrics");
    log_clear(&t);
    /* add PathStats alone: SiteMetrics and PageView stay, untouched */
    assert_int_equal(reg(&t, "{'mode':'merge','nodes':[" PATHSTATS "]}"), 200);
    expect_body(&t, "{'added':['PathStats'],'already_present':[],"
                    "'registered_descriptors':['PathStats','PageView','SiteMetrics'],"
                    "'registry_version':2,'status':'ok'}");
    assert_string_equal(log_str(&t), "+PathStats#2 ");
    assert_ptr_equal(registry_table(t.r, "SiteMetrics"), sm);
    assert_int_equal(registry_node_count(t.r), 3);
    /* the same again: a no-op naming only PathStats as present */
    assert_int_equal(reg(&t, "{'mode':'merge','nodes':[" PATHSTATS "]}"), 200);
    assert_false(t.applied);
    expect_body(&t, "{'added':[],'already_present':['PathStats'],"
                    "'registered_descriptors':['PathStats','PageView','SiteMetrics'],"
                    "'registry_version':2,'status':'ok'}");
    /* an empty merge changes nothing (a replace with no nodes would be a 409) */
    assert_int_equal(reg(&t, "{'mode':'merge','nodes':[]}"), 200);
    assert_false(t.applied);
    /* additive in place: a new feature on SiteMetrics widens it, state kept */
    log_clear(&t);
    assert_int_equal(reg(&t, "{'mode':'merge','nodes':[" SITEMETRICS_PLUS "]}"), 200);
    assert_true(t.applied);
    assert_string_equal(log_str(&t), "~SiteMetrics:3>4 ");
    assert_ptr_equal(registry_table(t.r, "SiteMetrics"), sm);
    /* destructive: needs force, then replaces SiteMetrics only */
    log_clear(&t);
    assert_int_equal(reg(&t, "{'mode':'merge','nodes':[" SITEMETRICS "]}"), 409);
    assert_false(t.applied);
    assert_non_null(strstr(out(&t), "'kind':'agg_removal'") ? out(&t) : strstr(out(&t), "\"kind\":\"agg_removal\""));
    assert_int_equal(reg(&t, "{'mode':'merge','dry_run':true,'nodes':[" SITEMETRICS "]}"), 200);
    assert_false(t.applied);
    assert_non_null(strstr(out(&t), "\"would_apply\":false"));
    assert_int_equal(registry_version(t.r), 3);
    assert_int_equal(reg(&t, "{'mode':'merge','force':true,'nodes':[" SITEMETRICS "]}"), 200);
    assert_true(t.applied);
    assert_string_equal(log_str(&t), "-SiteMetrics#1 +SiteMetrics#3 ");
    assert_non_null(registry_table(t.r, "PathStats"));
    assert_int_equal(registry_table(t.r, "PathStats")->id, 2);
    assert_int_equal(registry_version(t.r), 4);
    /* a bad mode names the member */
    expect_error(&t, "{'mode':'append','nodes':[]}", "invalid_registration", "mode");
    expect_error(&t, "{'mode':1,'nodes':[]}", "invalid_registration", "mode");
    t_fini(&t);
}

/* A merge naming an event that live tables read: the kept tables validate against the
 * new event (a removed field they read is a 400, not a silent break). */
static void test_merge_validates_kept(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS "]}"), 200);
    expect_error(&t, "{'mode':'merge','force':true,'nodes':["
                     "{'kind':'event','name':'PageView','schema':{'fields':{'path':'str'}}}]}",
                 "aggregation_unknown_field", "registry.SiteMetrics.ops[0].agg.median_dwell_1h.params.field");
    t_fini(&t);
}

/* Validation before the diff: typos in a change to a live table are 400s with the
 * validation code and path, never a destructive diff to force. */
static void test_typos_on_live_table(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'c':{'op':'count','params':{'window':'1h'}}") "]}"), 200);
    const char *mode[] = {"", "'mode':'merge',", "'force':true,"};
    for (size_t m = 0; m < 3; m++) {
        char body[2048];
#define TYPO(aggs, code, path)                                                                         \
        snprintf(body, sizeof body, "{%s'nodes':[" EV_E "," TABLE("T", "['u']", aggs) "]}", mode[m]); \
        expect_error(&t, body, code, path)
        TYPO("'c':{'op':'cuont','params':{'window':'1h'}}", "aggregation_unknown_op", "nodes[1].ops[0].agg.c.op");
        TYPO("'c':{'op':'count','params':{'window':'1hr'}}", "aggregation_invalid_window", "nodes[1].ops[0].agg.c.params.window");
        TYPO("'c':{'op':'sum','params':{'field':'nope','window':'1h'}}", "aggregation_unknown_field", "nodes[1].ops[0].agg.c.params.field");
        TYPO("'c':{'op':'count','params':{'window':'1h','where':'u ==== 1'}}", "aggregation_invalid_where", "nodes[1].ops[0].agg.c.params.where");
        TYPO("'c':{'op':'quantile','params':{'field':'x','q':50,'window':'1h'}}", "invalid_percentile_q", "nodes[1].ops[0].agg.c.params.q");
#undef TYPO
    }
    assert_int_equal(registry_version(t.r), 1);
    t_fini(&t);
}

static void test_fresh_register_example(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS "," PATHSTATS "]}"), 200);
    assert_true(t.applied);
    expect_body(&t, "{'added':['PathStats','SiteMetrics','PageView'],'already_present':[],"
                    "'registered_descriptors':['PageView','SiteMetrics','PathStats'],"
                    "'registry_version':1,'status':'ok'}");
    assert_string_equal(log_str(&t), "+SiteMetrics#1 +PathStats#2 ");
    assert_int_equal(registry_node_count(t.r), 3);

    agg_table *const *tabs;
    assert_int_equal(registry_tables_for_event(t.r, "PageView", &tabs), 2);
    assert_string_equal(tabs[0]->name, "SiteMetrics");
    assert_string_equal(tabs[1]->name, "PathStats");
    assert_int_equal(registry_tables_for_event(t.r, "Nope", &tabs), 0);
    assert_int_equal(registry_tables(t.r, &tabs), 2);

    agg_table *pt = registry_table(t.r, "PathStats");
    assert_non_null(pt);
    assert_int_equal(pt->nkeys, 1);
    assert_string_equal(pt->keys[0], "path");
    assert_string_equal(pt->source, "PageView");
    assert_non_null(pt->prefix);
    assert_int_equal(pt->nfeatures, 3);
    /* slot order = sorted names at creation; offsets aligned to 8 */
    assert_string_equal(pt->features[0].name, "path_dwell_mean_1h");
    assert_string_equal(pt->features[1].name, "path_views_1h");
    assert_string_equal(pt->features[2].name, "path_views_total");
    for (size_t i = 0; i < pt->nfeatures; i++) {
        assert_int_equal(pt->offsets[i] % 8, 0);
        assert_int_equal(pt->by_name[i], i);
        if (i) assert_true(pt->offsets[i] >= pt->offsets[i - 1] + pt->features[i - 1].state_size);
    }
    assert_true(pt->row_size >= pt->offsets[2] + pt->features[2].state_size);
    assert_int_equal(pt->row_size % 8, 0);

    size_t slot = 99;
    assert_ptr_equal(registry_feature_owner(t.r, "path_views_total", &slot), pt);
    assert_int_equal(slot, 2);
    assert_ptr_equal(registry_feature_owner(t.r, "top_page_1h", &slot),
                     registry_table(t.r, "SiteMetrics"));
    assert_int_equal(slot, 2);
    assert_null(registry_feature_owner(t.r, "nope", &slot));
    assert_null(registry_table(t.r, "PageView"));

    const ev_desc *e = registry_event(t.r, "PageView");
    assert_non_null(e);
    assert_int_equal(e->schema.n, 3);
    assert_int_equal(e->dedupe_window_ms, 86400000);
    assert_null(e->dedupe_key);
    assert_int_equal(e->registered_at_version, 1);
    t_fini(&t);
}

static void test_same_payload_is_noop(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    const char *b = "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS "," PATHSTATS "]}";
    assert_int_equal(reg(&t, b), 200);
    log_clear(&t);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(reg(&t, b), 200);
        assert_false(t.applied);
        expect_body(&t, "{'added':[],'already_present':['PageView','PathStats','SiteMetrics'],"
                        "'registered_descriptors':['PageView','SiteMetrics','PathStats'],"
                        "'registry_version':1,'status':'ok'}");
    }
    /* force=true with nothing to change is the same no-op */
    assert_int_equal(reg(&t, "{'force':true,'nodes':[" PAGEVIEW_SID "," SITEMETRICS "," PATHSTATS "]}"), 200);
    assert_false(t.applied);
    assert_int_equal(registry_version(t.r), 1);
    assert_string_equal(log_str(&t), "");
    t_fini(&t);
}

/* Regression (a): the seed bug. force=true + an additive change on an existing event
 * succeeds, bumps the version and replaces the event and its tables with fresh state. */
static void test_regression_force_additive_replaces(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS "]}"), 200);
    agg_table *before = registry_table(t.r, "SiteMetrics");
    assert_int_equal(before->id, 1);
    log_clear(&t);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS "],'force':true}"), 200);
    assert_true(t.applied);
    /* SiteMetrics is re-created by the cascade: listed under added only */
    expect_body(&t, "{'added':['PageView','SiteMetrics'],'already_present':[],"
                    "'registered_descriptors':['PageView','SiteMetrics'],'registry_version':2,"
                    "'status':'ok'}");
    assert_string_equal(log_str(&t), "-SiteMetrics#1 +SiteMetrics#2 ");
    assert_int_equal(registry_version(t.r), 2);
    assert_int_equal(registry_table(t.r, "SiteMetrics")->id, 2);
    const ev_desc *e = registry_event(t.r, "PageView");
    assert_true(bv_schema_find(&e->schema, "session_id", NULL) >= 0);
    assert_int_equal(e->registered_at_version, 2);
    t_fini(&t);
}

/* Regression (b): the same change without force widens the event in place; the table
 * keeps its state (no table_removed), the event is listed in `added`. */
static void test_regression_additive_in_place(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS "]}"), 200);
    agg_table *before = registry_table(t.r, "SiteMetrics");
    const ev_desc *ev_before = registry_event(t.r, "PageView");
    log_clear(&t);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS "]}"), 200);
    assert_true(t.applied);
    expect_body(&t, "{'added':['PageView'],'already_present':['SiteMetrics'],"
                    "'registered_descriptors':['PageView','SiteMetrics'],'registry_version':2,"
                    "'status':'ok'}");
    assert_string_equal(log_str(&t), "");
    assert_ptr_equal(registry_table(t.r, "SiteMetrics"), before);
    assert_int_equal(before->id, 1);
    const ev_desc *e = registry_event(t.r, "PageView");
    assert_ptr_equal(e, ev_before);
    bv_wtype ty;
    assert_int_equal(bv_schema_find(&e->schema, "session_id", &ty), 2);   /* appended */
    assert_int_equal(ty, WT_STR);
    assert_int_equal(e->registered_at_version, 1);
    /* the stored node is the new one: the same payload again is a no-op */
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS "]}"), 200);
    assert_false(t.applied);
    expect_body(&t, "{'added':[],'already_present':['PageView','SiteMetrics'],"
                    "'registered_descriptors':['PageView','SiteMetrics'],'registry_version':2,"
                    "'status':'ok'}");
    /* and a table may now use the new field */
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS ","
                             "{'kind':'derivation','name':'BySession','output_kind':'table',"
                             "'upstreams':['PageView'],'ops':[{'op':'group_by','keys':['session_id'],"
                             "'agg':{'session_views':{'op':'count','params':{}}}}],"
                             "'table_primary_key':['session_id']}]}"), 200);
    assert_int_equal(registry_version(t.r), 3);
    assert_string_equal(log_str(&t), "+BySession#2 ");
    t_fini(&t);
}

/* Regression (c): a new feature on an existing table without force is appended as a new
 * slot; the other slots (and their offsets) stay. */
static void test_regression_new_feature_in_place(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS "]}"), 200);
    agg_table *tb = registry_table(t.r, "SiteMetrics");
    size_t old_offsets[3], old_row = tb->row_size;
    for (int i = 0; i < 3; i++) old_offsets[i] = tb->offsets[i];
    log_clear(&t);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS_PLUS "]}"), 200);
    expect_body(&t, "{'added':['SiteMetrics'],'already_present':['PageView'],"
                    "'registered_descriptors':['PageView','SiteMetrics'],'registry_version':2,"
                    "'status':'ok'}");
    assert_string_equal(log_str(&t), "~SiteMetrics:3>4 ");
    assert_ptr_equal(registry_table(t.r, "SiteMetrics"), tb);
    assert_int_equal(tb->id, 1);
    assert_int_equal(tb->nfeatures, 4);
    assert_string_equal(tb->features[0].name, "median_dwell_1h");
    assert_string_equal(tb->features[1].name, "page_views_today");
    assert_string_equal(tb->features[2].name, "top_page_1h");
    assert_string_equal(tb->features[3].name, "dwell_max");
    for (int i = 0; i < 3; i++) assert_int_equal(tb->offsets[i], old_offsets[i]);
    assert_int_equal(tb->offsets[3], old_row);
    assert_int_equal(tb->by_name[0], 3);     /* dwell_max sorts first */
    assert_int_equal(tb->by_name[1], 0);
    size_t slot;
    assert_ptr_equal(registry_feature_owner(t.r, "dwell_max", &slot), tb);
    assert_int_equal(slot, 3);
    assert_ptr_equal(registry_feature_owner(t.r, "page_views_today", &slot), tb);
    assert_int_equal(slot, 1);
    t_fini(&t);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    return b;
}

static void test_scenario_table_form(void **state) {
    (void)state;
    const char *shared = getenv("BEAVA_SHARED_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/data/conformance/scenario.json",
             shared ? shared : "/work/shared");
    char *text = read_file(path);
    assert_non_null(text);
    json_t *sc = json_loads(text, 0, NULL);
    assert_non_null(sc);
    char *payload = json_dumps(json_object_get(sc, "register_payload"), JSON_COMPACT);
    T t;
    t_init(&t, true);
    bv_buf_init(&t.out);
    reg_plan *plan = NULL;
    int st = registry_prepare(t.r, payload, strlen(payload), &t.out, &plan);
    assert_int_equal(st, 200);
    assert_non_null(plan);
    registry_apply(t.r, plan, &t.hooks, &t.out);
    expect_body(&t, "{'added':['ClicksPerUser','TotalClicks','Click'],'already_present':[],"
                    "'registered_descriptors':['Click','ClicksPerUser','TotalClicks'],"
                    "'registry_version':1,'status':'ok'}");
    const ev_desc *click = registry_event(t.r, "Click");
    assert_non_null(click);
    assert_int_equal(click->schema.n, 2);
    agg_table *cpu = registry_table(t.r, "ClicksPerUser");
    assert_non_null(cpu);
    assert_int_equal(cpu->nkeys, 1);
    assert_string_equal(cpu->keys[0], "user_id");
    assert_string_equal(cpu->source, "Click");
    assert_int_equal(cpu->nfeatures, 1);
    assert_string_equal(cpu->features[0].name, "c");
    assert_int_equal(cpu->features[0].window_ms, 3600000);
    agg_table *tot = registry_table(t.r, "TotalClicks");
    assert_non_null(tot);
    assert_int_equal(tot->nkeys, 0);
    assert_string_equal(tot->features[0].name, "total");
    assert_int_equal(tot->features[0].window_ms, 0);
    /* The live-shape translation of reference-wire-api.md §11 is the same registry. */
    assert_int_equal(reg(&t, "{'nodes':["
        "{'kind':'event','name':'Click','schema':{'fields':{'user_id':'str','page':'str'},'optional_fields':[]}},"
        "{'kind':'derivation','name':'ClicksPerUser','output_kind':'table','upstreams':['Click'],"
        "'ops':[{'op':'group_by','keys':['user_id'],'agg':{'c':{'op':'count','params':{'window':'1h'}}}}],"
        "'table_primary_key':['user_id']},"
        "{'kind':'derivation','name':'TotalClicks','output_kind':'table','upstreams':['Click'],"
        "'ops':[{'op':'group_by','keys':[],'agg':{'total':{'op':'count','params':{'window':'forever'}}}}],"
        "'table_primary_key':[]}]}"), 200);
    assert_false(t.applied);
    expect_body(&t, "{'added':[],'already_present':['Click','ClicksPerUser','TotalClicks'],"
                    "'registered_descriptors':['Click','ClicksPerUser','TotalClicks'],"
                    "'registry_version':1,'status':'ok'}");
    free(payload);
    json_decref(sc);
    free(text);
    t_fini(&t);
}

static void test_table_form_details(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    /* agg as a map, params nested or flat, a prefix chain */
    assert_int_equal(reg(&t, "{'nodes':[" EV_E ",{'kind':'table','name':'T','key':['u'],'source':'E',"
                             "'ops':[{'op':'filter','expr':'n > 1'}],"
                             "'agg':{'s':{'op':'sum','field':'x'},'m':{'op':'max','params':{'field':'n'}}}}]}"),
                     200);
    agg_table *tb = registry_table(t.r, "T");
    assert_non_null(tb);
    assert_int_equal(tb->nfeatures, 2);
    assert_string_equal(tb->features[0].name, "m");
    assert_string_equal(tb->features[1].field, "x");
    /* malformed table nodes */
    expect_error(&t, "{'nodes':[{'kind':'table','name':'T','key':['u'],'agg':[]}]}",
                 "invalid_registration", "nodes[0].source");
    expect_error(&t, "{'nodes':[{'kind':'table','name':'T','source':'E','agg':[]}]}",
                 "invalid_registration", "nodes[0].key");
    expect_error(&t, "{'nodes':[{'kind':'table','name':'T','key':[],'source':'E'}]}",
                 "invalid_registration", "nodes[0].agg");
    expect_error(&t, "{'nodes':[{'kind':'table','name':'T','key':[],'source':'E','agg':[{'op':'count'}]}]}",
                 "invalid_registration", "nodes[0].agg[0]");
    expect_error(&t, "{'nodes':[{'kind':'table','name':'T','key':[],'source':'E','agg':"
                     "[{'name':'a','op':'count'},{'name':'a','op':'sum'}]}]}",
                 "aggregation_duplicate_feature_name", "nodes[0].agg[1].name");
    /* an event_time_field on a table node is still caught by the scan */
    expect_error(&t, "{'nodes':[{'kind':'table','name':'T','key':[],'source':'E','agg':[],"
                     "'event_time_field':'ts'}]}",
                 "unknown_field_event_time_v0", "nodes[0].T.event_time_field");
    t_fini(&t);
}

/* Validation runs against the registry minus the removal set: renaming a table while
 * keeping its feature names works with force (the reference says 400 here). */
static void test_force_rename_keeps_feature_names(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," TABLE("T1", "['u']", "'cnt':{'op':'count','params':{}}") "]}"), 200);
    log_clear(&t);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," TABLE("T2", "['u']", "'cnt':{'op':'count','params':{}}") "]}"), 409);
    expect_body(&t, "{'error':{'code':'force_required','diff':{'additive':[],'already_present':['E'],"
                    "'destructive':[{'from':'T1','kind':'rename','to':'T2'}]},"
                    "'reason':'Destructive registry change requires force=true. See diff for details.'},"
                    "'registry_version':1}");
    assert_int_equal(reg(&t, "{'force':true,'nodes':[" EV_E "," TABLE("T2", "['u']", "'cnt':{'op':'count','params':{}}") "]}"), 200);
    /* E is untouched by the forced rename: already_present, not added */
    expect_body(&t, "{'added':['T2'],'already_present':['E'],'registered_descriptors':['E','T2'],"
                    "'registry_version':2,'status':'ok'}");
    assert_string_equal(log_str(&t), "-T1#1 +T2#2 ");
    assert_null(registry_table(t.r, "T1"));
    size_t slot;
    assert_ptr_equal(registry_feature_owner(t.r, "cnt", &slot), registry_table(t.r, "T2"));
    t_fini(&t);
}

/* force on an event cascades to every derivation fed by it, transitively. */
static void test_cascade_through_derivations(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    const char *d1 = "{'kind':'derivation','name':'Big','output_kind':'event','upstreams':['E'],"
                     "'ops':[{'op':'filter','expr':'x > 10.0'}]}";
    const char *tb = "{'kind':'derivation','name':'BigStats','output_kind':'table','upstreams':['Big'],"
                     "'ops':[{'op':'group_by','keys':['u'],'agg':{'big_n':{'op':'count','params':{}}}}],"
                     "'table_primary_key':['u']}";
    const char *other = TABLE("Other", "['u']", "'other_n':{'op':'count','params':{}}");
    char body[4096];
    snprintf(body, sizeof body, "{'nodes':[%s,%s,%s,%s]}", EV_E, d1, tb, other);
    assert_int_equal(reg(&t, body), 200);
    assert_string_equal(log_str(&t), "+BigStats#1 +Other#2 ");
    log_clear(&t);
    /* type change on E (x: f64 -> i64): Big, BigStats and Other all go */
    snprintf(body, sizeof body,
             "{'force':true,'nodes':[{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'i64','n':'i64'}}},%s,%s,%s]}",
             d1, tb, other);
    assert_int_equal(reg(&t, body), 200);
    expect_body(&t, "{'added':['E','Big','BigStats','Other'],'already_present':[],"
                    "'registered_descriptors':['E','Big','BigStats','Other'],'registry_version':2,'status':'ok'}");
    assert_string_equal(log_str(&t), "-BigStats#1 -Other#2 +BigStats#3 +Other#4 ");
    /* a change on Big alone takes BigStats but not Other */
    log_clear(&t);
    snprintf(body, sizeof body,
             "{'force':true,'nodes':[{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'i64','n':'i64'}}},"
             "{'kind':'derivation','name':'Big','output_kind':'event','upstreams':['E'],"
             "'ops':[{'op':'filter','expr':'x > 20'}]},%s,%s]}", tb, other);
    assert_int_equal(reg(&t, body), 200);
    assert_string_equal(log_str(&t), "-BigStats#3 +BigStats#5 ");
    t_fini(&t);
}

static void test_409_and_empty_nodes(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[]}"), 200);
    expect_body(&t, "{'added':[],'already_present':[],'registered_descriptors':[],"
                    "'registry_version':0,'status':'ok'}");
    assert_int_equal(reg(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'str'}}}]}"), 200);
    assert_int_equal(reg(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'i64'}}}]}"), 409);
    expect_body(&t, "{'error':{'code':'force_required','diff':{'additive':[],'already_present':[],"
                    "'destructive':[{'field':'E.a','from':'str','kind':'type_change','to':'i64'}]},"
                    "'reason':'Destructive registry change requires force=true. See diff for details.'},"
                    "'registry_version':1}");
    assert_int_equal(registry_version(t.r), 1);
    /* declarative: an empty payload removes everything, so it needs force ... */
    assert_int_equal(reg(&t, "{'nodes':[]}"), 409);
    expect_body(&t, "{'error':{'code':'force_required','diff':{'additive':[],'already_present':[],"
                    "'destructive':[{'agg':'','kind':'agg_removal','table':'E'}]},"
                    "'reason':'Destructive registry change requires force=true. See diff for details.'},"
                    "'registry_version':1}");
    /* ... and with force it is the reference's no-op */
    assert_int_equal(reg(&t, "{'nodes':[],'force':true}"), 200);
    assert_false(t.applied);
    expect_body(&t, "{'added':[],'already_present':[],'registered_descriptors':[],"
                    "'registry_version':1,'status':'ok'}");
    assert_non_null(registry_event(t.r, "E"));
    /* non-boolean force counts as false */
    assert_int_equal(reg(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'i64'}}}],'force':1}"), 409);
    t_fini(&t);
}

static void test_dry_run(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'dry_run':true,'nodes':[" EV_E "]}"), 200);
    expect_body(&t, "{'diff':{'additive':[{'descriptor_kind':'event','kind':'new_descriptor','name':'E'}],"
                    "'already_present':[],'destructive':[]},'would_apply':false}");
    assert_int_equal(registry_version(t.r), 0);
    assert_int_equal(registry_node_count(t.r), 0);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'s':{'op':'sum','params':{'field':'x'}}") "]}"), 200);
    log_clear(&t);
    /* a validation error is reported inside the 200 dry-run body */
    assert_int_equal(reg(&t, "{'dry_run':true,'force':true,'nodes':[" EV_E ","
                             TABLE("T", "['u']", "'s':{'op':'sum','params':{'field':'nope'}}") "]}"), 200);
    assert_false(t.applied);
    json_t *j = json_loads(out(&t), 0, NULL);
    assert_non_null(j);
    assert_true(json_is_false(json_object_get(j, "would_apply")));
    const json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "aggregation_unknown_field");
    assert_string_equal(json_string_value(json_object_get(e, "path")), "nodes[1].ops[0].agg.s.params.field");
    assert_non_null(json_object_get(json_object_get(j, "diff"), "destructive"));
    json_decref(j);
    /* exact body of a dry run with an error */
    assert_int_equal(reg(&t, "{'dry_run':true,'nodes':[" EV_E "," TABLE("T", "['u']", "'s':{'op':'sum','params':{'field':'x'}}") ","
                             "{'kind':'event','name':'bad-name','schema':{'fields':{'a':'str'}}}]}"), 200);
    expect_body(&t, "{'diff':{'additive':[{'descriptor_kind':'event','kind':'new_descriptor','name':'bad-name'}],"
                    "'already_present':['E','T'],'destructive':[]},"
                    "'error':{'code':'invalid_registration','path':'nodes[2].name',"
                    "'reason':'descriptor name `bad-name` must match [A-Za-z_][A-Za-z0-9_]* (no hyphens or leading digits)'},"
                    "'would_apply':false}");
    /* dry_run wins over force and changes nothing */
    assert_int_equal(reg(&t, "{'dry_run':true,'force':true,'nodes':[]}"), 200);
    expect_body(&t, "{'diff':{'additive':[],'already_present':[],'destructive':["
                    "{'agg':'','kind':'agg_removal','table':'E'},{'agg':'','kind':'agg_removal','table':'T'}]},"
                    "'would_apply':false}");
    assert_int_equal(registry_version(t.r), 1);
    assert_int_equal(registry_node_count(t.r), 2);
    assert_string_equal(log_str(&t), "");
    t_fini(&t);
}

/* One provocation per validation rule, checking code and path. */
static void test_validation_errors(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    char name129[140], body[1024];
    memset(name129, 'a', 129);
    name129[129] = 0;

    expect_error(&t, "{'nodes':[" EV_E "," EV_E "]}", "invalid_registration", "nodes[1].name");
    expect_body(&t, "{'error':{'code':'invalid_registration','path':'nodes[1].name',"
                    "'reason':'duplicate descriptor name `E`; first seen at nodes[0]'},'registry_version':0}");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'1abc','schema':{'fields':{'a':'str'}}}]}",
                 "invalid_registration", "nodes[0].name");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'a-b','schema':{'fields':{'a':'str'}}}]}",
                 "invalid_registration", "nodes[0].name");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'','schema':{'fields':{'a':'str'}}}]}",
                 "invalid_registration", "nodes[0].name");
    snprintf(body, sizeof body, "{'nodes':[{'kind':'event','name':'%s','schema':{'fields':{'a':'str'}}}]}", name129);
    expect_error(&t, body, "invalid_registration", "nodes[0].name");
    expect_body(&t, "{'error':{'code':'invalid_registration','path':'nodes[0].name',"
                    "'reason':'descriptor name is 129 chars; maximum is 128'},'registry_version':0}");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'_beava_x','schema':{'fields':{'a':'str'}}}]}",
                 "invalid_registration", "nodes[0].name");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{}}}]}",
                 "invalid_registration", "nodes[0].schema.fields");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'str'}},'dedupe_key':'b'}]}",
                 "invalid_registration", "nodes[0].dedupe_key");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'str'}},'dedupe_window_ms':0}]}",
                 "invalid_registration", "nodes[0].dedupe_window_ms");
    expect_error(&t, "{'nodes':[{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E']}]}",
                 "invalid_registration", "nodes[0].schema.fields");
    expect_error(&t, "{'nodes':[" EV_E ",{'kind':'derivation','name':'D','output_kind':'table','upstreams':['E'],"
                     "'ops':[{'op':'filter','expr':'n > 1'}]}]}",
                 "invalid_registration", "nodes[1].table_primary_key");
    expect_error(&t, "{'nodes':[" EV_E ",{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E','Nope'],"
                     "'ops':[{'op':'filter','expr':'n > 1'}]}]}",
                 "invalid_registration", "nodes[1].upstreams[1]");
    expect_error(&t, "{'nodes':[{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E'],"
                     "'ops':[{'op':'filter','expr':'n > 1'}]}," EV_E "]}",
                 "invalid_registration", "nodes[0].upstreams[0]");
    expect_error(&t, "{'nodes':[" EV_E ",{'kind':'derivation','name':'D','output_kind':'event','upstreams':['D'],"
                     "'ops':[{'op':'filter','expr':'n > 1'}]}]}",
                 "invalid_registration", "nodes[1]");
    expect_body(&t, "{'error':{'code':'invalid_registration','path':'nodes[1]',"
                    "'reason':'cycle detected: D -> D'},'registry_version':0}");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'count'},'b':{'op':'count'}") ","
                     "{'kind':'derivation','name':'T2','output_kind':'table','upstreams':['E'],'ops':["
                     "{'op':'group_by','keys':[],'agg':{'c':{'op':'count'}}},{'op':'group_by','keys':[],'agg':{}}],"
                     "'table_primary_key':[]}]}",
                 "invalid_registration", "nodes[2].ops[1]");
    /* expressions in the chain */
    expect_error(&t, "{'nodes':[" EV_E ",{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E'],"
                     "'ops':[{'op':'filter','expr':'nope > 1'}]}]}",
                 "invalid_expression", "nodes[1].ops[0]");
    /* aggregations */
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'frobnicate','params':{'window':'1h'}}") "]}",
                 "aggregation_unknown_op", "nodes[1].ops[0].agg.a.op");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['x']", "'a':{'op':'count'}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].group_by[0]");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u','nope']", "'a':{'op':'count'}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].group_by[1]");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'u':{'op':'count'}") "]}",
                 "aggregation_group_key_collides_with_feature", "nodes[1].ops[0].agg.u");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'sum','params':{'field':'nope'}}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].agg.a.params.field");
    /* the member the reference names: field when the field is wrong, none for `n` */
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'first','params':{}}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].agg.a.params.field");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'lag','params':{'field':'x','n':2000}}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].agg.a");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'time_since_last_n','params':{'field':'nope','n':2000}}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].agg.a");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'bloom_member','params':{'field':'u','window':'1h'}}") "]}",
                 "window_not_supported", "nodes[1].ops[0].agg.a.params.window");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'bloom_member','params':{'field':'u','fpr':2}}") "]}",
                 "invalid_bloom_fpr", "nodes[1].ops[0].agg.a.params.target_fpr");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'count','params':{'window':'1w'}}") "]}",
                 "aggregation_invalid_window", "nodes[1].ops[0].agg.a.params.window");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'count','params':{'where':'(x >'}}") "]}",
                 "aggregation_invalid_where", "nodes[1].ops[0].agg.a.params.where");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'count','params':{'where':'nope == 1'}}") "]}",
                 "aggregation_invalid_where", "nodes[1].ops[0].agg.a.params.where");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'quantile','params':{'field':'x','q':1.5}}") "]}",
                 "invalid_percentile_q", "nodes[1].ops[0].agg.a.params.q");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'top_k','params':{'field':'u','k':2000}}") "]}",
                 "invalid_top_k_k", "nodes[1].ops[0].agg.a.params.k");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'ewma','params':{'field':'x'}}") "]}",
                 "invalid_registration", "nodes[1].ops[0].agg.a");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'count'}") ","
                     "{'kind':'derivation','name':'T2','output_kind':'table','upstreams':['T'],"
                     "'ops':[{'op':'group_by','keys':[],'agg':{'b':{'op':'count'}}}],'table_primary_key':[]}]}",
                 "aggregation_on_table_not_supported", "nodes[2].upstreams[0]");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("A", "['u']", "'shared':{'op':'count'}") ","
                     TABLE("B", "['u']", "'shared':{'op':'count'}") "]}",
                 "aggregation_feature_name_collision_across_aggregations", "nodes.B.features.shared");
    expect_body(&t, "{'error':{'code':'aggregation_feature_name_collision_across_aggregations',"
                    "'path':'nodes.B.features.shared','reason':'feature name `shared` is already defined by "
                    "aggregation `A`; feature names must be globally unique across aggregations'},'registry_version':0}");
    /* a group key produced by the chain is fine, one removed by it is not */
    assert_int_equal(reg(&t, "{'nodes':[" EV_E ",{'kind':'derivation','name':'T','output_kind':'table',"
                             "'upstreams':['E'],'ops':[{'op':'with_columns','exprs':{'bucket':'n + 1'}},"
                             "{'op':'group_by','keys':['bucket'],'agg':{'a':{'op':'count'}}}],"
                             "'table_primary_key':['bucket']}]}"), 200);
    expect_error(&t, "{'force':true,'nodes':[" EV_E ",{'kind':'derivation','name':'T','output_kind':'table',"
                     "'upstreams':['E'],'ops':[{'op':'drop','fields':['u']},"
                     "{'op':'group_by','keys':['u'],'agg':{'a':{'op':'count'}}}],'table_primary_key':['u']}]}",
                 "aggregation_unknown_field", "nodes[1].ops[1].group_by[0]");
    t_fini(&t);
}

/* The scans of §5.3 step 2 run before the strict parse, in their order. */
static void test_prechecks(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    expect_error(&t, "{'nodes':[" EV_E ",{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E'],"
                     "'ops':[{'op':'filter','expr':'n > 1'},{'op':'join','with':'F'}]}]}",
                 "feature_removed_no_joins_v0", "nodes[1].D.ops[1]");
    expect_error(&t, "{'nodes':[{'kind':'derivation','output_kind':'event','upstreams':['E'],'ops':[{'op':'union'}]}]}",
                 "feature_removed_no_unions_v0", "nodes[0].ops[0]");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'E','event_time_field':'ts','schema':{'fields':{'ts':'i64'}}}]}",
                 "unknown_field_event_time_v0", "nodes[0].E.event_time_field");
    expect_error(&t, "{'nodes':[{'kind':'event','name':'E','tolerate_delay_ms':5,'schema':{'fields':{'ts':'i64'}}}]}",
                 "unknown_field_tolerate_delay_v0", "nodes[0].E.tolerate_delay_ms");
    expect_error(&t, "{'nodes':[{'kind':'upsert','name':'X'}]}", "unsupported_node_kind", "nodes[0].X.kind");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'last_n','params':{'field':'x'}}") "]}",
                 "unbounded_op_in_lifetime_mode", "nodes[1].T.ops[0].agg.a");
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'frobnicate'}") "]}",
                 "unbounded_op_in_lifetime_mode", "nodes[1].T.ops[0].agg.a");
    /* order: the join scan wins over a later kind problem, the kind over memory */
    expect_error(&t, "{'nodes':[{'kind':'upsert'},{'kind':'derivation','ops':[{'op':'join'}]}]}",
                 "feature_removed_no_joins_v0", "nodes[1].ops[0]");
    expect_error(&t, "{'nodes':[{'kind':'derivation','name':'D','ops':[{'op':'group_by','agg':{'a':{'op':'zzz'}}}]},"
                     "{'kind':'nope'}]}",
                 "unsupported_node_kind", "nodes[1].kind");
    t_fini(&t);
    /* memory governance off: the same lifetime last_n reaches the compiler */
    t_init(&t, false);
    expect_error(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'a':{'op':'last_n','params':{'field':'x'}}") "]}",
                 "aggregation_unknown_field", "nodes[1].ops[0].agg.a");
    t_fini(&t);
}

static void test_parse_errors(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    static const char *const bad[] = {
        "not json",
        "[1,2]",
        "{}",
        "{'descriptors':[]}",
        "{'nodes':{}}",
        "{'nodes':[1]}",
        "{'nodes':[{'name':'E'}]}",
        "{'nodes':[{'kind':'','name':'E'}]}",
        "{'nodes':[{'kind':'event','schema':{'fields':{'a':'str'}}}]}",
        "{'nodes':[{'kind':'event','name':'E'}]}",
        "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'string'}}}]}",
        "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'str'}},'dedupe_window_ms':-1}]}",
        "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'a':'str'}},'cold_after_ms':'1d'}]}",
        "{'nodes':[{'kind':'event','name':5,'schema':{'fields':{'a':'str'}}}]}",
        "{'nodes':[{'kind':'derivation','name':'D','upstreams':[]}]}",
        "{'nodes':[{'kind':'derivation','name':'D','output_kind':'stream','upstreams':[]}]}",
        "{'nodes':[{'kind':'derivation','name':'D','output_kind':'event'}]}",
        "{'nodes':[{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E'],'ops':[{'op':'delete'}]}]}",
        "{'nodes':[{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E'],'ops':[{'op':'filter'}]}]}",
        "{'nodes':[{'kind':'derivation','name':'D','output_kind':'table','upstreams':['E'],'ops':[{'op':'group_by','keys':null,'agg':{}}]}]}",
        "{'nodes':[{'kind':'derivation','name':'D','output_kind':'table','upstreams':['E'],'ops':[{'op':'group_by','keys':[],'agg':{'a':{'params':{'window':'1h'}}}}]}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) expect_error(&t, bad[i], "invalid_registration", "<body>");
    /* a jansson-level failure (NUL escape) and an empty body */
    reg_plan *plan = NULL;
    t.out.len = 0;
    assert_int_equal(registry_prepare(t.r, "", 0, &t.out, &plan), 400);
    assert_null(plan);
    t_fini(&t);
}

static void test_caps(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    /* 10,000 nodes: rejected before anything else is looked at */
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{\"nodes\":[");
    for (int i = 0; i < 10000; i++)
        bv_buf_printf(&b, "%s{\"kind\":\"event\",\"name\":\"E%d\",\"schema\":{\"fields\":{\"a\":\"str\"}}}",
                      i ? "," : "", i);
    bv_buf_puts(&b, "]}");
    reg_plan *plan = NULL;
    assert_int_equal(registry_prepare(t.r, b.data, b.len, &t.out, &plan), 400);
    assert_null(plan);
    assert_string_equal(out(&t), "{\"error\":{\"code\":\"invalid_registration\",\"path\":\"nodes\","
                                 "\"reason\":\"payload has 10000 nodes; at most 4096 are accepted per "
                                 "register call\"},\"registry_version\":0}");
    /* 4096 is fine */
    b.len = 0;
    bv_buf_puts(&b, "{\"nodes\":[");
    for (int i = 0; i < 4096; i++)
        bv_buf_printf(&b, "%s{\"kind\":\"event\",\"name\":\"E%d\",\"schema\":{\"fields\":{\"a\":\"str\"}}}",
                      i ? "," : "", i);
    bv_buf_puts(&b, "]}");
    t.out.len = 0;
    assert_int_equal(registry_prepare(t.r, b.data, b.len, &t.out, &plan), 200);
    assert_non_null(plan);
    t.out.len = 0;
    registry_apply(t.r, plan, &t.hooks, &t.out);
    assert_int_equal(registry_node_count(t.r), 4096);
    /* nesting beyond the cap */
    b.len = 0;
    bv_buf_puts(&b, "{\"nodes\":[],\"x\":");
    for (int i = 0; i < 100000; i++) bv_buf_putc(&b, '[');
    for (int i = 0; i < 100000; i++) bv_buf_putc(&b, ']');
    bv_buf_putc(&b, '}');
    t.out.len = 0;
    assert_int_equal(registry_prepare(t.r, b.data, b.len, &t.out, &plan), 400);
    assert_null(plan);
    assert_non_null(strstr(out(&t), "\"path\":\"<body>\""));
    assert_non_null(strstr(out(&t), "nests deeper"));
    bv_buf_free(&b);
    t_fini(&t);
}

static void test_event_options(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[{'kind':'event','name':'Tx','schema':{'fields':{'id':'str','amount':'f64',"
                             "'b':'bytes','d':'datetime','j':'json','ok':'bool','n':'i64'},'optional_fields':['j','b']},"
                             "'dedupe_key':'id','dedupe_window_ms':5000,'keep_events_for_ms':2592000000,"
                             "'cold_after_ms':604800000,'unknown_key':1}]}"), 200);
    const ev_desc *e = registry_event(t.r, "Tx");
    assert_non_null(e);
    assert_string_equal(e->dedupe_key, "id");
    assert_int_equal(e->dedupe_window_ms, 5000);
    assert_int_equal(e->keep_events_for_ms, 2592000000LL);
    assert_int_equal(e->cold_after_ms, 604800000);
    assert_int_equal(e->schema.n, 7);
    assert_true(bv_schema_is_optional(&e->schema, "j"));
    assert_true(bv_schema_is_optional(&e->schema, "b"));
    bv_wtype ty;
    assert_true(bv_schema_find(&e->schema, "d", &ty) >= 0);
    assert_int_equal(ty, WT_DATETIME);
    /* the flat schema form of scenario.json */
    assert_int_equal(reg(&t, "{'nodes':[{'kind':'event','name':'Tx','schema':{'fields':{'id':'str','amount':'f64',"
                             "'b':'bytes','d':'datetime','j':'json','ok':'bool','n':'i64'},'optional_fields':['b','j']},"
                             "'dedupe_key':'id','dedupe_window_ms':5000,'keep_events_for_ms':2592000000,"
                             "'cold_after_ms':604800000},"
                             "{'kind':'event','name':'Flat','schema':{'a':'str','n':'i64'}}]}"), 200);
    expect_body(&t, "{'added':['Flat'],'already_present':['Tx'],'registered_descriptors':['Tx','Flat'],"
                    "'registry_version':2,'status':'ok'}");
    assert_int_equal(registry_event(t.r, "Flat")->schema.n, 2);
    t_fini(&t);
}

static void test_reset_ids_and_dump(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'cnt':{'op':'count'}") "]}"), 200);
    log_clear(&t);
    registry_reset(t.r, &t.hooks);
    assert_string_equal(log_str(&t), "-T#1 ");
    assert_int_equal(registry_version(t.r), 2);
    assert_int_equal(registry_node_count(t.r), 0);
    assert_null(registry_table(t.r, "T"));
    assert_null(registry_event(t.r, "E"));
    size_t slot;
    assert_null(registry_feature_owner(t.r, "cnt", &slot));
    agg_table *const *tabs;
    assert_int_equal(registry_tables_for_event(t.r, "E", &tabs), 0);
    log_clear(&t);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," TABLE("T", "['u']", "'cnt':{'op':'count'}") "]}"), 200);
    expect_body(&t, "{'added':['T','E'],'already_present':[],'registered_descriptors':['E','T'],"
                    "'registry_version':3,'status':'ok'}");
    assert_string_equal(log_str(&t), "+T#2 ");   /* ids are never reused */

    bv_buf d;
    bv_buf_init(&d);
    jsonw w;
    jsonw_init(&w, &d);
    registry_dump(t.r, &w);
    char *exp = q("{'derivations':{'T':{'kind':'derivation','name':'T','ops':[{'agg':{'cnt':{'op':'count','params':{}}},"
                  "'keys':['u'],'op':'group_by'}],'output_kind':'table','table_primary_key':['u'],'upstreams':['E']}},"
                  "'events':{'E':{'cold_after_ms':null,'dedupe_key':null,'dedupe_window_ms':86400000,"
                  "'keep_events_for_ms':null,'kind':'event','name':'E','schema':{'fields':{'n':'i64','u':'str','x':'f64'},"
                  "'optional_fields':[]}}},'tables':{'T':{'features':['cnt'],'id':2,'keys':['u'],'row_size':");
    assert_memory_equal(d.data, exp, strlen(exp));
    free(exp);
    exp = q(",'source':'E'}},'version':3}");
    assert_non_null(strstr(d.data, exp));
    free(exp);
    bv_buf_free(&d);
    t_fini(&t);
}

/* Replaying the same bodies on a fresh registry reproduces the registry exactly. */
static void test_replay_is_deterministic(void **state) {
    (void)state;
    static const char *const seq[] = {
        "{'nodes':[" PAGEVIEW "," SITEMETRICS "]}",
        "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS "]}",
        "{'nodes':[" PAGEVIEW_SID "," SITEMETRICS_PLUS "," PATHSTATS "]}",
        "{'nodes':[" PAGEVIEW "," SITEMETRICS_PLUS "," PATHSTATS "],'force':true}",
        "{'nodes':[" PAGEVIEW "],'force':true}",
    };
    char *dumps[2];
    for (int k = 0; k < 2; k++) {
        T t;
        t_init(&t, true);
        for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) assert_int_equal(reg(&t, seq[i]), 200);
        if (k == 0) assert_string_equal(log_str(&t), "+SiteMetrics#1 ~SiteMetrics:3>4 +PathStats#2 "
                                                     "-SiteMetrics#1 -PathStats#2 +SiteMetrics#3 +PathStats#4 "
                                                     "-SiteMetrics#3 -PathStats#4 ");
        bv_buf d;
        bv_buf_init(&d);
        jsonw w;
        jsonw_init(&w, &d);
        registry_dump(t.r, &w);
        dumps[k] = bv_buf_steal(&d);
        assert_int_equal(registry_version(t.r), 5);
        t_fini(&t);
    }
    assert_string_equal(dumps[0], dumps[1]);
    free(dumps[0]);
    free(dumps[1]);
}

static void test_name_rule(void **state) {
    (void)state;
    char n128[129];
    memset(n128, 'x', 128);
    n128[128] = 0;
    assert_true(registry_name_valid("PageView"));
    assert_true(registry_name_valid("_x9"));
    assert_true(registry_name_valid(n128));
    assert_true(registry_name_valid("_beava"));
    assert_false(registry_name_valid("_beava_x"));
    assert_false(registry_name_valid(""));
    assert_false(registry_name_valid("9a"));
    assert_false(registry_name_valid("a.b"));
    assert_false(registry_name_valid(NULL));
    char n129[130];
    memset(n129, 'x', 129);
    n129[129] = 0;
    assert_false(registry_name_valid(n129));
}

static void test_free_calls_hooks(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" PAGEVIEW "," SITEMETRICS "," PATHSTATS "]}"), 200);
    log_clear(&t);
    registry_free(t.r, &t.hooks);
    assert_string_equal(log_str(&t), "-SiteMetrics#1 -PathStats#2 ");
    t.r = registry_new(NULL);
    t_fini(&t);
}

/* A cycle through a registered descriptor: D is replaced (force) by a D fed by itself. */
static void test_cycle_with_registry(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    const char *d_ok = "{'kind':'derivation','name':'D','output_kind':'event','upstreams':['E'],"
                       "'ops':[{'op':'filter','expr':'n > 1'}]}";
    const char *d_loop = "{'kind':'derivation','name':'D','output_kind':'event','upstreams':['D'],"
                         "'ops':[{'op':'filter','expr':'n > 1'}]}";
    char body[2048];
    snprintf(body, sizeof body, "{'nodes':[%s,%s]}", EV_E, d_ok);
    assert_int_equal(reg(&t, body), 200);
    /* validation comes before the diff: a cycle is a 400 with or without force */
    snprintf(body, sizeof body, "{'nodes':[%s,%s]}", EV_E, d_loop);
    expect_error(&t, body, "invalid_registration", "nodes[1]");
    snprintf(body, sizeof body, "{'force':true,'nodes':[%s,%s]}", EV_E, d_loop);
    expect_error(&t, body, "invalid_registration", "nodes[1]");
    expect_body(&t, "{'error':{'code':'invalid_registration','path':'nodes[1]',"
                    "'reason':'cycle detected: D -> D'},'registry_version':1}");
    /* the dry run without force reports the error the forced request would hit */
    snprintf(body, sizeof body, "{'dry_run':true,'nodes':[%s,%s]}", EV_E, d_loop);
    assert_int_equal(reg(&t, body), 200);
    expect_body(&t, "{'diff':{'additive':[],'already_present':['E'],'destructive':["
                    "{'kind':'descriptor_change','name':'D'}]},'error':{'code':'invalid_registration',"
                    "'path':'nodes[1]','reason':'cycle detected: D -> D'},'would_apply':false}");
    assert_int_equal(registry_version(t.r), 1);
    t_fini(&t);
}

/* Error bodies stay valid JSON (UTF-8) whatever bytes the request carried. */
static void test_error_text_is_utf8(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    static const char raw[] = "\"\\\xd6\x91\x9e\xc1\x9a\xa3\x9f\xab" "d";
    reg_plan *plan = NULL;
    assert_int_equal(registry_prepare(t.r, raw, sizeof raw - 1, &t.out, &plan), 400);
    json_t *j = json_loads(out(&t), 0, NULL);
    assert_non_null(j);
    json_decref(j);
    /* a path cut mid-character by the 256-byte path buffer */
    bv_buf b;
    bv_buf_init(&b);
    bv_buf_puts(&b, "{\"nodes\":[{\"kind\":\"event\",\"name\":\"E\",\"schema\":{\"fields\":{\"u\":\"str\"}}},"
                    "{\"kind\":\"derivation\",\"name\":\"T\",\"output_kind\":\"table\",\"upstreams\":[\"E\"],"
                    "\"ops\":[{\"op\":\"group_by\",\"keys\":[],\"agg\":{\"x");
    for (int i = 0; i < 200; i++) bv_buf_puts(&b, "\xc3\xa9");
    bv_buf_puts(&b, "\":{\"op\":\"count\",\"params\":{\"where\":\"nope == 1\"}}}}],\"table_primary_key\":[]}]}");
    t.out.len = 0;
    assert_int_equal(registry_prepare(t.r, b.data, b.len, &t.out, &plan), 400);
    j = json_loads(out(&t), 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "aggregation_invalid_where");
    json_decref(j);
    bv_buf_free(&b);
    t_fini(&t);
}

/* ---- derivation chains at push time (DECISIONS §4) ---- */

#define DER(name, up, ops)                                                                \
    "{'kind':'derivation','name':'" name "','output_kind':'event','upstreams':['" up "']," \
    "'ops':" ops "}"
/* E -> D2 (filter) -> D1 (with_columns making the key k, then select) -> T (key k) */
#define D2_NODE DER("D2", "E", "[{'op':'filter','expr':'(x > 10.0)'}]")
#define D1_NODE                                                                           \
    DER("D1", "D2", "[{'op':'with_columns','exprs':{'k':'cast(n, str)','x2':'(x * 2.0)'}},"   \
                    "{'op':'select','fields':['k','x','x2']}]")
#define T_OVER_D1                                                                         \
    "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['D1'],"           \
    "'ops':[{'op':'filter','expr':'(x2 < 1000.0)'},{'op':'group_by','keys':['k'],'agg':{"  \
    "'t_n':{'op':'count','params':{}},'t_x2':{'op':'sum','params':{'field':'x2'}}}}],"    \
    "'table_primary_key':['k']}"

/* Run a table's prefix chain on {u, x, n} (n < 0: absent); returns whether the row
 * survives and, if so, the text of field `k` in *k (or "" when k is absent). */
static bool run_prefix(const agg_table *tb, const char *u, double x, int64_t n, char *k, size_t cap) {
    bv_field f[3];
    size_t nf = 0;
    f[nf++] = (bv_field){"u", 1, bv_str(u, strlen(u))};
    f[nf++] = (bv_field){"x", 1, bv_f64(x)};
    if (n >= 0) f[nf++] = (bv_field){"n", 1, bv_i64(n)};
    bv_row in = {f, nf, 0}, out = {NULL, 0, 0};
    expr_arena ar;
    expr_arena_reset(&ar);
    bool kept = chain_apply(tb->prefix, &in, &out, &ar);
    k[0] = 0;
    if (kept) {
        const bv_value *kv = bv_row_get(&out, "k");
        if (kv && kv->kind != BV_NULL) assert_true(bv_key_text(kv, k, cap) >= 0);
        assert_null(bv_row_get(&out, "u"));   /* select dropped it */
    }
    free(out.fields);
    return kept;
}

static void test_derivation_chain_feeds_table(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," D2_NODE "," D1_NODE "," T_OVER_D1 "]}"), 200);
    assert_string_equal(log_str(&t), "+T#1 ");
    agg_table *const *tabs;
    assert_int_equal(registry_tables_for_event(t.r, "E", &tabs), 1);
    agg_table *tb = tabs[0];
    assert_string_equal(tb->name, "T");
    assert_string_equal(tb->source, "E");
    assert_int_equal(tb->nkeys, 1);
    assert_string_equal(tb->keys[0], "k");
    /* nothing routes through the derivation names; they are not events */
    assert_int_equal(registry_tables_for_event(t.r, "D1", &tabs), 0);
    assert_int_equal(registry_tables_for_event(t.r, "D2", &tabs), 0);
    assert_null(registry_event(t.r, "D1"));
    assert_null(registry_table(t.r, "D1"));
    /* the composed chain: D2's filter, D1's with_columns + select, T's own filter */
    char k[64];
    assert_true(run_prefix(tb, "a", 20.0, 7, k, sizeof k));
    assert_string_equal(k, "7");
    assert_false(run_prefix(tb, "a", 5.0, 7, k, sizeof k));      /* D2 filter */
    assert_false(run_prefix(tb, "a", 600.0, 7, k, sizeof k));    /* T filter on x2 */
    assert_true(run_prefix(tb, "a", 11.0, -1, k, sizeof k));     /* k = cast(null): no key */
    assert_string_equal(k, "");
    /* the dump names the root event as the source */
    bv_buf d;
    bv_buf_init(&d);
    jsonw w;
    jsonw_init(&w, &d);
    registry_dump(t.r, &w);
    assert_non_null(strstr(d.data, "\"source\":\"E\""));
    assert_non_null(strstr(d.data, "\"upstreams\":[\"D1\"]"));
    bv_buf_free(&d);

    /* the same payload again is a no-op; a new field on E widens in place and keeps T */
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," D2_NODE "," D1_NODE "," T_OVER_D1 "]}"), 200);
    assert_false(t.applied);
    log_clear(&t);
    assert_int_equal(reg(&t, "{'nodes':[{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64',"
                             "'n':'i64','m':'str'}}}," D2_NODE "," D1_NODE "," T_OVER_D1 "]}"), 200);
    assert_true(t.applied);
    assert_string_equal(log_str(&t), "");
    assert_true(registry_table(t.r, "T") == tb);
    assert_string_equal(tb->source, "E");
    assert_true(run_prefix(tb, "a", 20.0, 8, k, sizeof k));
    assert_string_equal(k, "8");
    t_fini(&t);
}

static void test_derivation_chain_cascade(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    char body[4096];
    const char *other = TABLE("Other", "['u']", "'other_n':{'op':'count','params':{}}");
    snprintf(body, sizeof body, "{'nodes':[%s,%s,%s,%s,%s]}", EV_E, D2_NODE, D1_NODE, T_OVER_D1, other);
    assert_int_equal(reg(&t, body), 200);
    assert_string_equal(log_str(&t), "+T#1 +Other#2 ");
    /* a changed filter on D2: destructive descriptor_change, T goes with it */
    const char *d2b = DER("D2", "E", "[{'op':'filter','expr':'(x > 100.0)'}]");
    snprintf(body, sizeof body, "{'nodes':[%s,%s,%s,%s,%s]}", EV_E, d2b, D1_NODE, T_OVER_D1, other);
    assert_int_equal(reg(&t, body), 409);
    expect_body(&t, "{'error':{'code':'force_required','diff':{'additive':[],"
                    "'already_present':['D1','E','Other','T'],"
                    "'destructive':[{'kind':'descriptor_change','name':'D2'}]},"
                    "'reason':'Destructive registry change requires force=true. See diff for details.'},"
                    "'registry_version':1}");
    log_clear(&t);
    snprintf(body, sizeof body, "{'force':true,'nodes':[%s,%s,%s,%s,%s]}", EV_E, d2b, D1_NODE, T_OVER_D1, other);
    assert_int_equal(reg(&t, body), 200);
    assert_string_equal(log_str(&t), "-T#1 +T#3 ");
    agg_table *tb = registry_table(t.r, "T");
    assert_string_equal(tb->source, "E");
    char k[64];
    assert_false(run_prefix(tb, "a", 20.0, 7, k, sizeof k));     /* the new filter runs */
    assert_true(run_prefix(tb, "a", 200.0, 7, k, sizeof k));
    /* dropping D1 from the payload takes T (its dependant) too: T must be re-sent, and
     * re-sending it without D1 is an unknown upstream */
    log_clear(&t);
    snprintf(body, sizeof body, "{'force':true,'nodes':[%s,%s,%s]}", EV_E, d2b, other);
    assert_int_equal(reg(&t, body), 200);
    assert_string_equal(log_str(&t), "-T#3 ");
    agg_table *const *tabs;
    assert_int_equal(registry_tables_for_event(t.r, "E", &tabs), 1);
    assert_string_equal(tabs[0]->name, "Other");
    snprintf(body, sizeof body, "{'nodes':[%s,%s,%s,%s]}", EV_E, d2b, T_OVER_D1, other);
    expect_error(&t, body, "invalid_registration", "nodes[2].upstreams[0]");
    t_fini(&t);
}

static void test_derivation_chain_validation(void **state) {
    (void)state;
    T t;
    t_init(&t, true);
    /* group key dropped by D1's select: checked against the propagated schema */
    expect_error(&t, "{'nodes':[" EV_E "," D2_NODE "," D1_NODE ","
                     "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['D1'],"
                     "'ops':[{'op':'group_by','keys':['u'],'agg':{'t_n':{'op':'count','params':{}}}}],"
                     "'table_primary_key':['u']}]}",
                 "aggregation_unknown_field", "nodes[3].ops[0].group_by[0]");
    /* a feature over a field only the chain creates is fine; over a dropped one is not */
    expect_error(&t, "{'nodes':[" EV_E "," D2_NODE "," D1_NODE ","
                     "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['D1'],"
                     "'ops':[{'op':'group_by','keys':['k'],'agg':{'t_s':{'op':'sum','params':{'field':'n'}}}}],"
                     "'table_primary_key':['k']}]}",
                 "aggregation_unknown_field", "nodes[3].ops[0].agg.t_s.params.field");
    /* an event derivation over a table cannot feed an aggregation */
    expect_error(&t, "{'nodes':[" EV_E ","
                     "{'kind':'derivation','name':'Base','output_kind':'table','upstreams':['E'],"
                     "'ops':[{'op':'group_by','keys':['u'],'agg':{'base_n':{'op':'count','params':{}}}}],"
                     "'schema':{'fields':{'u':'str','base_n':'i64'}},'table_primary_key':['u']},"
                     DER("FromTable", "Base", "[{'op':'filter','expr':'(base_n > 1)'}]") ","
                     "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['FromTable'],"
                     "'ops':[{'op':'group_by','keys':[],'agg':{'t_n':{'op':'count','params':{}}}}],"
                     "'table_primary_key':[]}]}",
                 "aggregation_on_table_not_supported", "nodes[3].upstreams[0]");
    /* a derivation of two events reading a field only the second one has: fine for its
     * own schema (the union), but the chain cannot run on pushes of upstreams[0] */
    expect_error(&t, "{'nodes':[" EV_E ",{'kind':'event','name':'F','schema':{'fields':{'f':'i64'}}},"
                     "{'kind':'derivation','name':'Both','output_kind':'event','upstreams':['E','F'],"
                     "'ops':[{'op':'with_columns','exprs':{'g':'(f + 1)'}}]},"
                     "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['Both'],"
                     "'ops':[{'op':'group_by','keys':['u'],'agg':{'t_n':{'op':'count','params':{}}}}],"
                     "'table_primary_key':['u']}]}",
                 "invalid_expression", "nodes[3].upstreams[0]");
    /* registered derivations are followed too, and a long chain of them works */
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," D2_NODE "," D1_NODE "]}"), 200);
    assert_int_equal(reg(&t, "{'nodes':[" EV_E "," D2_NODE "," D1_NODE "," T_OVER_D1 "]}"), 200);
    agg_table *const *tabs;
    assert_int_equal(registry_tables_for_event(t.r, "E", &tabs), 1);
    assert_string_equal(tabs[0]->source, "E");
    t_fini(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_register_example),
        cmocka_unit_test(test_same_payload_is_noop),
        cmocka_unit_test(test_regression_force_additive_replaces),
        cmocka_unit_test(test_regression_additive_in_place),
        cmocka_unit_test(test_regression_new_feature_in_place),
        cmocka_unit_test(test_scenario_table_form),
        cmocka_unit_test(test_table_form_details),
        cmocka_unit_test(test_force_rename_keeps_feature_names),
        cmocka_unit_test(test_cascade_through_derivations),
        cmocka_unit_test(test_409_and_empty_nodes),
        cmocka_unit_test(test_dry_run),
        cmocka_unit_test(test_validation_errors),
        cmocka_unit_test(test_prechecks),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_event_options),
        cmocka_unit_test(test_reset_ids_and_dump),
        cmocka_unit_test(test_replay_is_deterministic),
        cmocka_unit_test(test_name_rule),
        cmocka_unit_test(test_free_calls_hooks),
        cmocka_unit_test(test_cycle_with_registry),
        cmocka_unit_test(test_error_text_is_utf8),
        cmocka_unit_test(test_derivation_chain_feeds_table),
        cmocka_unit_test(test_derivation_chain_cascade),
        cmocka_unit_test(test_derivation_chain_validation),
        cmocka_unit_test(test_merge_keeps_unnamed),
        cmocka_unit_test(test_merge_validates_kept),
        cmocka_unit_test(test_typos_on_live_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
