/*
 * test_diff.c - the one diff classifier: every class (through the registry's dry run, so
 * the real normal form is compared), the class order, byte-identical output, rename
 * pairing determinism, the force removal set and its cascade (diff_classify directly).
 *
 * Bodies use ' for " (and ` for a literal '); q() converts them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "diff.h"
#include "registry.h"

static char *q(const char *s) {
    char *d = strdup(s);
    for (char *p = d; *p; p++) {
        if (*p == '\'') *p = '"';
        else if (*p == '`') *p = '\'';
    }
    return d;
}

/* Register `base` on a fresh registry, then dry-run `next` (nodes array contents) and
 * return the "diff" member of the body, rendered (malloc'd). */
static char *dry_diff(const char *base, const char *next, bool force) {
    registry *r = registry_new(NULL);
    bv_buf out;
    bv_buf_init(&out);
    reg_plan *plan = NULL;
    char *b = q(base);
    int st = registry_prepare(r, b, strlen(b), &out, &plan);
    free(b);
    if (st != 200) print_error("base: %d %s\n", st, out.data);
    assert_int_equal(st, 200);
    if (plan) {
        out.len = 0;
        registry_apply(r, plan, NULL, &out);
    }
    uint64_t v = registry_version(r);
    char body[8192];
    snprintf(body, sizeof body, "{'dry_run':true,'force':%s,'nodes':[%s]}", force ? "true" : "false", next);
    b = q(body);
    out.len = 0;
    st = registry_prepare(r, b, strlen(b), &out, &plan);
    free(b);
    assert_int_equal(st, 200);
    assert_null(plan);
    assert_int_equal(registry_version(r), v);
    json_t *j = json_loads(out.data, 0, NULL);
    assert_non_null(j);
    if (json_object_get(j, "error")) print_error("dry run error: %s\n", out.data);
    assert_null(json_object_get(j, "error"));
    /* the diff is a prefix of the body: {"diff":<diff>,"would_apply":false} */
    const char *start = out.data + strlen("{\"diff\":");
    const char *end = strstr(out.data, ",\"would_apply\":false}");
    assert_non_null(end);
    char *d = strndup(start, (size_t)(end - start));
    json_decref(j);
    bv_buf_free(&out);
    registry_free(r, NULL);
    return d;
}

static void expect_diff(const char *base, const char *next, const char *expected) {
    char *got = dry_diff(base, next, false);
    char *e = q(expected);
    if (strcmp(got, e) != 0) print_error("got      %s\nexpected %s\n", got, e);
    assert_string_equal(got, e);
    free(got);
    free(e);
}

#define EV "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'}}}"
#define EVF(fields) "{'kind':'event','name':'E','schema':{'fields':{" fields "}}}"
#define TB(aggs) "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"  \
                 "'ops':[{'op':'group_by','keys':['u'],'agg':{" aggs "}}],'table_primary_key':['u']}"
#define NODES(...) "{'nodes':[" __VA_ARGS__ "]}"
#define NONE "'additive':[],'already_present':[],'destructive':[]"

static void test_new_descriptor_and_present(void **state) {
    (void)state;
    expect_diff(NODES(EV), EV "," TB("'c':{'op':'count'}") ",{'kind':'event','name':'A','schema':{'fields':{'a':'str'}}}",
                "{'additive':[{'descriptor_kind':'derivation','kind':'new_descriptor','name':'T'},"
                "{'descriptor_kind':'event','kind':'new_descriptor','name':'A'}],"
                "'already_present':['E'],'destructive':[]}");
    expect_diff(NODES(EV), EV, "{'additive':[],'already_present':['E'],'destructive':[]}");
}

static void test_event_classes(void **state) {
    (void)state;
    /* new field, removed field, changed type */
    expect_diff(NODES(EV), EVF("'u':'str','x':'i64','s':'bool'"),
                "{'additive':[{'event':'E','field':'s','kind':'new_field','type':'bool'}],'already_present':[],"
                "'destructive':[{'field':'E.n','from':'i64','kind':'type_change','to':'<absent>'},"
                "{'field':'E.x','from':'f64','kind':'type_change','to':'i64'}]}");
    /* settings the reference never compared */
    const char *variants[] = {
        "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'}},'dedupe_key':'u'}",
        "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'}},'dedupe_window_ms':1000}",
        "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'}},'cold_after_ms':1000}",
        "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'}},'keep_events_for_ms':1000}",
        "{'kind':'event','name':'E','schema':{'fields':{'u':'str','x':'f64','n':'i64'},'optional_fields':['x']}}",
    };
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++)
        expect_diff(NODES(EV), variants[i],
                    "{'additive':[],'already_present':[],'destructive':[{'kind':'descriptor_change','name':'E'}]}");
    /* defaults spelled out are not a change; optional_fields order is not a change */
    expect_diff(NODES("{'kind':'event','name':'E','schema':{'fields':{'u':'str'},'optional_fields':['a','b']}}"),
                "{'kind':'event','name':'E','schema':{'fields':{'u':'str'},'optional_fields':['b','a','b']},"
                "'dedupe_window_ms':86400000,'dedupe_key':null,'cold_after_ms':null,'x_unknown':1}",
                "{'additive':[],'already_present':['E'],'destructive':[]}");
    /* event <-> derivation under the same name */
    expect_diff(NODES(EV ",{'kind':'event','name':'K','schema':{'fields':{'a':'str'}}}"),
                EV ",{'kind':'derivation','name':'K','output_kind':'event','upstreams':['E'],"
                "'ops':[{'op':'filter','expr':'n > 1'}]}",
                "{'additive':[],'already_present':['E'],'destructive':[{'kind':'descriptor_change','name':'K'}]}");
}

static void test_table_classes(void **state) {
    (void)state;
    const char *base = NODES(EV "," TB("'c':{'op':'count','params':{'window':'1h'}},"
                                       "'s':{'op':'sum','params':{'field':'x','where':'n > 1'}},"
                                       "'q':{'op':'quantile','params':{'field':'x','q':0.5}}"));
    /* window change, op change (agg_removal + new_agg), new feature, removed feature */
    expect_diff(base, EV "," TB("'c':{'op':'count','params':{'window':'30m'}},"
                                "'s':{'op':'mean','params':{'field':'x','where':'n > 1'}},"
                                "'m':{'op':'max','params':{'field':'n'}}"),
                "{'additive':[{'agg':'m','kind':'new_agg','source':'max','table':'T'},"
                "{'agg':'s','kind':'new_agg','source':'mean','table':'T'}],'already_present':['E'],"
                "'destructive':[{'agg':'q','kind':'agg_removal','table':'T'},"
                "{'agg':'s','kind':'agg_removal','table':'T'},"
                "{'agg':'T.c','from':'1h','kind':'window_change','to':'30m'}]}");
    /* where, q and field changes are agg_change (the reference saw nothing) */
    expect_diff(base, EV "," TB("'c':{'op':'count','params':{'window':'1h'}},"
                                "'s':{'op':'sum','params':{'field':'n','where':'n > 2'}},"
                                "'q':{'op':'quantile','params':{'field':'x','q':0.9}}"),
                "{'additive':[],'already_present':['E'],'destructive':["
                "{'agg':'q','kind':'agg_change','table':'T'},{'agg':'s','kind':'agg_change','table':'T'}]}");
    /* missing window vs "forever": a window_change as in the reference ("" vs "forever") */
    expect_diff(base, EV "," TB("'c':{'op':'count','params':{'window':'1h'}},"
                                "'s':{'op':'sum','params':{'field':'x','where':'n > 1','window':'forever'}},"
                                "'q':{'op':'quantile','params':{'field':'x','q':0.5}}"),
                "{'additive':[],'already_present':['E'],'destructive':["
                "{'agg':'T.s','from':'','kind':'window_change','to':'forever'}]}");
    /* group keys and table_primary_key */
    expect_diff(NODES(EV "," TB("'c':{'op':'count'}")),
                EV ",{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"
                "'ops':[{'op':'group_by','keys':['u','n'],'agg':{'c':{'op':'count'}}}],'table_primary_key':['u','n']}",
                "{'additive':[],'already_present':['E'],'destructive':["
                "{'from':['u'],'kind':'key_cols_change','table':'T','to':['u','n']},"
                "{'from':['u'],'kind':'key_cols_change','table':'T','to':['u','n']}]}");
    /* removed trailing op, changed prefix op, upstreams, output_kind */
    const char *chained = NODES(EV ",{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"
                                "'ops':[{'op':'filter','expr':'n > 1'},{'op':'group_by','keys':['u'],"
                                "'agg':{'c':{'op':'count'}}}],'table_primary_key':['u']}");
    expect_diff(chained,
                EV ",{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"
                "'ops':[{'op':'filter','expr':'n > 1'}],'table_primary_key':['u']}",
                "{'additive':[],'already_present':['E'],'destructive':["
                "{'agg':'group_by[1]','kind':'op_removal','table':'T'}]}");
    expect_diff(chained,
                EV ",{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"
                "'ops':[{'op':'filter','expr':'n > 2'},{'op':'group_by','keys':['u'],"
                "'agg':{'c':{'op':'count'}}}],'table_primary_key':['u']}",
                "{'additive':[],'already_present':['E'],'destructive':[{'kind':'descriptor_change','name':'T'}]}");
    expect_diff(chained,
                EV ",{'kind':'derivation','name':'T','output_kind':'event','upstreams':['E'],"
                "'ops':[{'op':'filter','expr':'n > 1'},{'op':'group_by','keys':['u'],"
                "'agg':{'c':{'op':'count'}}}],'table_primary_key':['u']}",
                "{'additive':[],'already_present':['E'],'destructive':[{'kind':'descriptor_change','name':'T'}]}");
    expect_diff(NODES(EV ",{'kind':'event','name':'F','schema':{'fields':{'u':'str'}}}," TB("'c':{'op':'count'}")),
                EV ",{'kind':'event','name':'F','schema':{'fields':{'u':'str'}}},"
                "{'kind':'derivation','name':'T','output_kind':'table','upstreams':['F'],"
                "'ops':[{'op':'group_by','keys':['u'],'agg':{'c':{'op':'count'}}}],'table_primary_key':['u']}",
                "{'additive':[],'already_present':['E','F'],'destructive':[{'kind':'descriptor_change','name':'T'}]}");
    /* an op added in front of the group_by */
    expect_diff(NODES(EV "," TB("'c':{'op':'count'}")),
                EV ",{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"
                "'ops':[{'op':'filter','expr':'n > 1'},{'op':'group_by','keys':['u'],"
                "'agg':{'c':{'op':'count'}}}],'table_primary_key':['u']}",
                "{'additive':[],'already_present':['E'],'destructive':[{'kind':'descriptor_change','name':'T'}]}");
    /* the client-side derivation schema is not compared (the server recomputes it) */
    expect_diff(NODES(EV "," TB("'c':{'op':'count'}")),
                EV ",{'kind':'derivation','name':'T','output_kind':'table','upstreams':['E'],"
                "'ops':[{'op':'group_by','keys':['u'],'agg':{'c':{'op':'count','params':{}}}}],"
                "'table_primary_key':['u'],'schema':{'fields':{'u':'str','c':'i64'}}}",
                "{'additive':[],'already_present':['E','T'],'destructive':[]}");
}

static void test_removal_and_rename(void **state) {
    (void)state;
    const char *base = NODES(EV "," TB("'c':{'op':'count'}"));
    expect_diff(base, EV, "{'additive':[],'already_present':['E'],'destructive':["
                          "{'agg':'','kind':'agg_removal','table':'T'}]}");
    expect_diff(base, EV ",{'kind':'derivation','name':'T2','output_kind':'table','upstreams':['E'],"
                          "'ops':[{'op':'group_by','keys':['u'],'agg':{'c':{'op':'count'}}}],'table_primary_key':['u']}",
                "{'additive':[],'already_present':['E'],'destructive':[{'from':'T','kind':'rename','to':'T2'}]}");
    /* a new event does not pair with a removed derivation */
    expect_diff(base, EV ",{'kind':'event','name':'F','schema':{'fields':{'a':'str'}}}",
                "{'additive':[{'descriptor_kind':'event','kind':'new_descriptor','name':'F'}],"
                "'already_present':['E'],'destructive':[{'agg':'','kind':'agg_removal','table':'T'}]}");
}

/* One payload touching every class: the lists come out in class order. */
static void test_class_order_and_bytes(void **state) {
    (void)state;
    const char *base = NODES(
        "{'kind':'event','name':'Tx','schema':{'fields':{'amount':'f64','u':'str','n':'i64'}}},"
        "{'kind':'event','name':'Old','schema':{'fields':{'a':'str'}}},"
        "{'kind':'event','name':'Gone','schema':{'fields':{'a':'str'}}},"
        "{'kind':'derivation','name':'D','output_kind':'table','upstreams':['Tx'],"
        "'ops':[{'op':'group_by','keys':['u'],'agg':{'cnt':{'op':'count','params':{'window':'1h'}},"
        "'total':{'op':'sum','params':{'field':'amount'}},'w':{'op':'count','params':{'where':'n > 1'}}}},"
        "{'op':'filter','expr':'n > 0'}],'table_primary_key':['u']},"
        "{'kind':'derivation','name':'B','output_kind':'event','upstreams':['Tx'],"
        "'ops':[{'op':'filter','expr':'n > 0'}]}");
    const char *next =
        "{'kind':'event','name':'Tx','schema':{'fields':{'amount':'i64','u':'str','n':'i64','session_id':'str'}},"
        "'cold_after_ms':5},"
        "{'kind':'event','name':'New','schema':{'fields':{'a':'str'}}},"
        "{'kind':'derivation','name':'NewD','output_kind':'event','upstreams':['Tx'],"
        "'ops':[{'op':'filter','expr':'n > 1'}]},"
        "{'kind':'derivation','name':'D','output_kind':'table','upstreams':['Tx'],"
        "'ops':[{'op':'group_by','keys':['u','n'],'agg':{'cnt':{'op':'count','params':{'window':'30m'}},"
        "'s':{'op':'sum','params':{'field':'amount'}},'w':{'op':'count','params':{'where':'n > 2'}}}}],"
        "'table_primary_key':['u']},"
        "{'kind':'derivation','name':'B','output_kind':'event','upstreams':['Tx'],"
        "'ops':[{'op':'filter','expr':'n > 5'}]}";
    const char *expected =
        "{'additive':[{'descriptor_kind':'derivation','kind':'new_descriptor','name':'NewD'},"
        "{'agg':'s','kind':'new_agg','source':'sum','table':'D'},"
        "{'event':'Tx','field':'session_id','kind':'new_field','type':'str'}],"
        "'already_present':[],"
        "'destructive':[{'from':'Gone','kind':'rename','to':'New'},"
        "{'field':'Tx.amount','from':'f64','kind':'type_change','to':'i64'},"
        "{'agg':'filter[1]','kind':'op_removal','table':'D'},"
        "{'agg':'total','kind':'agg_removal','table':'D'},"
        "{'agg':'','kind':'agg_removal','table':'Old'},"
        "{'agg':'D.cnt','from':'1h','kind':'window_change','to':'30m'},"
        "{'agg':'w','kind':'agg_change','table':'D'},"
        "{'from':['u'],'kind':'key_cols_change','table':'D','to':['u','n']},"
        "{'kind':'descriptor_change','name':'B'},"
        "{'kind':'descriptor_change','name':'Tx'}]}";
    char *first = dry_diff(base, next, false);
    char *e = q(expected);
    if (strcmp(first, e) != 0) print_error("got      %s\nexpected %s\n", first, e);
    assert_string_equal(first, e);
    for (int i = 0; i < 3; i++) {
        char *again = dry_diff(base, next, i == 1);
        assert_string_equal(again, first);
        free(again);
    }
    free(first);
    free(e);
}

/* ---- diff_classify directly ---- */

static json_t *ev_node(const char *name) {
    return json_pack("{s:s,s:s,s:{s:{s:s},s:[]},s:n,s:i,s:n,s:n}", "kind", "event", "name", name,
                     "schema", "fields", "a", "str", "optional_fields", "dedupe_key",
                     "dedupe_window_ms", 86400000, "keep_events_for_ms", "cold_after_ms");
}

static json_t *der_node(const char *name, const char *up) {
    return json_pack("{s:s,s:s,s:s,s:[s],s:[{s:s,s:s}],s:n}", "kind", "derivation", "name", name,
                     "output_kind", "event", "upstreams", up, "ops", "op", "filter", "expr", "a == `x`",
                     "table_primary_key");
}

static char *render(const reg_diff *d) {
    bv_buf b;
    bv_buf_init(&b);
    jsonw w;
    jsonw_init(&w, &b);
    diff_write_json(d, &w);
    return bv_buf_steal(&b);
}

/* Several removals: pairing visits removed names sorted, whatever the registration
 * order, and takes added nodes in payload order. */
static void test_rename_pairing_is_deterministic(void **state) {
    (void)state;
    const char *regorders[][3] = {{"C", "A", "B"}, {"B", "C", "A"}, {"A", "B", "C"}};
    char *first = NULL;
    for (int k = 0; k < 3; k++) {
        json_t *nodes[3];
        diff_desc cur[3];
        for (int i = 0; i < 3; i++) {
            nodes[i] = ev_node(regorders[k][i]);
            cur[i] = (diff_desc){regorders[k][i], true, nodes[i]};
        }
        json_t *y = ev_node("Y"), *x = ev_node("X");
        diff_desc pay[2] = {{"Y", true, y}, {"X", true, x}};
        reg_diff d;
        diff_classify(cur, 3, pay, 2, &d);
        char *s = render(&d);
        char *e = q("{'additive':[],'already_present':[],'destructive':["
                    "{'from':'A','kind':'rename','to':'Y'},{'from':'B','kind':'rename','to':'X'},"
                    "{'agg':'','kind':'agg_removal','table':'C'}]}");
        assert_string_equal(s, e);
        free(e);
        if (!first) first = s;
        else {
            assert_string_equal(s, first);
            free(s);
        }
        char **rm;
        size_t n = diff_removal_set(&d, true, cur, 3, &rm);
        assert_int_equal(n, 3);
        assert_string_equal(rm[0], "A");
        assert_string_equal(rm[1], "B");
        assert_string_equal(rm[2], "C");
        for (size_t i = 0; i < n; i++) free(rm[i]);
        free(rm);
        diff_free(&d);
        for (int i = 0; i < 3; i++) json_decref(nodes[i]);
        json_decref(x);
        json_decref(y);
    }
    free(first);
}

/* Removal set: destructive owners, additive-against-existing owners only when asked,
 * plus the transitive cascade through registered derivations. */
static void test_removal_set_cascade(void **state) {
    (void)state;
    json_t *e = ev_node("E"), *f = ev_node("F");
    json_t *d1 = der_node("D1", "E"), *d2 = der_node("D2", "D1"), *d3 = der_node("D3", "D2");
    json_t *g = der_node("G", "F");
    diff_desc cur[6] = {{"D3", false, d3}, {"E", true, e}, {"D1", false, d1},
                        {"D2", false, d2}, {"F", true, f}, {"G", false, g}};
    /* E gains a field (additive against existing), everything else unchanged */
    json_t *e2 = json_deep_copy(e);
    json_object_set_new(json_object_get(json_object_get(e2, "schema"), "fields"), "b", json_string("i64"));
    diff_desc pay[6] = {{"E", true, e2}, {"F", true, f}, {"D1", false, d1},
                        {"D2", false, d2}, {"D3", false, d3}, {"G", false, g}};
    reg_diff d;
    diff_classify(cur, 6, pay, 6, &d);
    assert_int_equal(d.ndestructive, 0);
    assert_int_equal(d.nadditive, 1);
    assert_true(diff_entry_against_existing(&d.additive[0]));
    char *s = render(&d);
    char *x = q("{'additive':[{'event':'E','field':'b','kind':'new_field','type':'i64'}],"
                "'already_present':['D1','D2','D3','F','G'],'destructive':[]}");
    assert_string_equal(s, x);
    free(s);
    free(x);
    char **rm = (char **)1;
    assert_int_equal(diff_removal_set(&d, false, cur, 6, &rm), 0);
    assert_null(rm);
    size_t n = diff_removal_set(&d, true, cur, 6, &rm);
    assert_int_equal(n, 4);
    assert_string_equal(rm[0], "D1");
    assert_string_equal(rm[1], "D2");
    assert_string_equal(rm[2], "D3");
    assert_string_equal(rm[3], "E");
    for (size_t i = 0; i < n; i++) free(rm[i]);
    free(rm);
    diff_free(&d);

    /* D2 dropped from the payload: D2 and D3 go, D1 stays */
    diff_desc pay2[5] = {{"E", true, e}, {"F", true, f}, {"D1", false, d1}, {"D3", false, d3}, {"G", false, g}};
    diff_classify(cur, 6, pay2, 5, &d);
    n = diff_removal_set(&d, false, cur, 6, &rm);
    assert_int_equal(n, 2);
    assert_string_equal(rm[0], "D2");
    assert_string_equal(rm[1], "D3");
    for (size_t i = 0; i < n; i++) free(rm[i]);
    free(rm);
    diff_free(&d);

    /* duplicate payload names: only the first is classified */
    diff_desc pay3[7] = {{"E", true, e}, {"E", true, e2}, {"F", true, f}, {"D1", false, d1},
                         {"D2", false, d2}, {"D3", false, d3}, {"G", false, g}};
    diff_classify(cur, 6, pay3, 7, &d);
    assert_int_equal(d.nadditive + d.ndestructive, 0);
    assert_int_equal(d.npresent, 6);
    diff_free(&d);

    json_decref(e);
    json_decref(e2);
    json_decref(f);
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
    json_decref(g);
}

static void test_empty_inputs(void **state) {
    (void)state;
    reg_diff d;
    diff_classify(NULL, 0, NULL, 0, &d);
    char *s = render(&d);
    assert_string_equal(s, "{\"additive\":[],\"already_present\":[],\"destructive\":[]}");
    free(s);
    char **rm;
    assert_int_equal(diff_removal_set(&d, true, NULL, 0, &rm), 0);
    diff_free(&d);
    diff_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_descriptor_and_present),
        cmocka_unit_test(test_event_classes),
        cmocka_unit_test(test_table_classes),
        cmocka_unit_test(test_removal_and_rename),
        cmocka_unit_test(test_class_order_and_bytes),
        cmocka_unit_test(test_rename_pairing_is_deterministic),
        cmocka_unit_test(test_removal_set_cascade),
        cmocka_unit_test(test_empty_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
