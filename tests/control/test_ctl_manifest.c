/* Unit tests: manifest parsing, translation, merging, conflicts, steps, destructive gate. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "names.h"
#include "util.h"

static struct manifest_set *load(const char *const *names, const char *const *texts, size_t n, char *err)
{
    struct manifest_set *s = manifest_set_new();
    for (size_t i = 0; i < n; i++) {
        if (manifest_set_add_text(s, names[i], texts[i], strlen(texts[i]), err) < 0) {
            manifest_set_free(s);
            return NULL;
        }
    }
    if (manifest_set_finish(s, err) < 0) {
        manifest_set_free(s);
        return NULL;
    }
    return s;
}

static const char *SITE =
    "order: 10\n"
    "events:\n"
    "  PageView:\n"
    "    fields: {session_id: str, path: str, dwell_ms: i64}\n"
    "tables:\n"
    "  SiteMetrics:\n"
    "    source: PageView\n"
    "    key: []\n"
    "    features:\n"
    "      page_views_24h: {op: count, window: 24h}\n"
    "      median_dwell_1h: {op: quantile, field: dwell_ms, q: 0.5, window: 1h}\n"
    "      top_page_1h: {op: top_k, field: path, k: 1, window: 1h}\n";

static void test_sitemetrics_translation(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"10-site.yaml"}, *t[] = {SITE};
    struct manifest_set *s = load(n, t, 1, err);
    assert_non_null(s);
    json_t *want = json_loads(
        "[{\"kind\":\"event\",\"name\":\"PageView\",\"schema\":{\"fields\":{\"session_id\":\"str\",\"path\":\"str\","
        "\"dwell_ms\":\"i64\"},\"optional_fields\":[]}},"
        "{\"kind\":\"derivation\",\"name\":\"SiteMetrics\",\"output_kind\":\"table\",\"upstreams\":[\"PageView\"],"
        "\"ops\":[{\"op\":\"group_by\",\"keys\":[],\"agg\":{"
        "\"median_dwell_1h\":{\"op\":\"quantile\",\"params\":{\"field\":\"dwell_ms\",\"q\":0.5,\"window\":\"1h\"}},"
        "\"page_views_24h\":{\"op\":\"count\",\"params\":{\"window\":\"24h\"}},"
        "\"top_page_1h\":{\"op\":\"top_k\",\"params\":{\"field\":\"path\",\"k\":1,\"window\":\"1h\"}}}}],"
        "\"table_primary_key\":[]}]",
        0, NULL);
    assert_non_null(want);
    assert_true(json_equal(want, s->all_nodes));
    assert_int_equal(s->m[0].order, 10);
    assert_false(s->m[0].allow_destructive);
    assert_true(ctl_is_digest(s->hash));
    json_t *tables = manifest_tables(s->all_nodes);
    assert_int_equal(json_array_size(tables), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tables, 0), "key")), "");
    json_decref(tables);
    json_decref(want);
    manifest_set_free(s);
}

static void expect_error(const char *text, const char *needle)
{
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"m.yaml"}, *t[] = {text};
    struct manifest_set *s = load(n, t, 1, err);
    if (s)
        fail_msg("expected an error containing '%s' for:\n%s", needle, text);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not contain '%s'", err, needle);
}

static void test_errors_name_the_key(void **st)
{
    (void)st;
    expect_error("tables:\n  T:\n    source: E\n    features:\n      f: {op: count, windw: 1h}\n",
                 "tables.T.features.f.windw: unknown parameter");
    expect_error("tables:\n  T:\n    source: E\n    features:\n      f: {op: counts}\n", "unknown operator 'counts'");
    expect_error("tables:\n  T:\n    source: E\n    features:\n      f: {op: count, window: 1y}\n", "window");
    expect_error("events:\n  E:\n    fields: {a: string}\n", "events.E.fields.a");
    expect_error("events:\n  E:\n    fields: {a: str}\n    optional: [b]\n", "'b' is not one of the fields");
    expect_error("events:\n  E:\n    fields: {a: str}\n    dedupe: {key: z}\n", "dedupe.key");
    expect_error("evnts: {}\n", "evnts: unknown key");
    expect_error("tables:\n  T:\n    features:\n      f: {op: count}\n", "`source` is required");
    expect_error("events:\n  9bad:\n    fields: {a: str}\n", "invalid name");
    expect_error("remove: [X]\n", "allow_destructive");
    expect_error("a: &x 1\nb: *x\n", "anchors");
    expect_error("a: 1\na: 2\n", "duplicate key");
    expect_error("events: [\n", "YAML syntax error");
    expect_error("nodes:\n  - {kind: table, name: T}\n", "nodes[0]");
    expect_error("tables:\n  T:\n    source: E\n    key: user\n    features:\n      user: {op: count}\n",
                 "name of a key field");
}

static void test_events_options(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"e.yaml"};
    const char *t[] = {"events:\n  Txn:\n    fields: {id: str, amount: f64}\n    optional: [amount]\n"
                       "    dedupe: {key: id, window: 1h}\n    cold_after: 7d\n    keep_events_for: 30d\n"};
    struct manifest_set *s = load(n, t, 1, err);
    assert_non_null(s);
    json_t *e = json_array_get(s->all_nodes, 0);
    assert_string_equal(json_string_value(json_object_get(e, "dedupe_key")), "id");
    assert_int_equal(json_integer_value(json_object_get(e, "dedupe_window_ms")), 3600000);
    assert_int_equal(json_integer_value(json_object_get(e, "cold_after_ms")), 7LL * 86400000);
    assert_int_equal(json_integer_value(json_object_get(e, "keep_events_for_ms")), 30LL * 86400000);
    manifest_set_free(s);
}

static void test_keyed_table_and_filter(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"k.yaml"};
    const char *t[] = {"events:\n  Tx:\n    fields: {u: str, c: str, amount: f64}\n"
                       "tables:\n  UT:\n    source: Tx\n    key: [u, c]\n    filter: \"(amount > 0)\"\n"
                       "    features:\n      n_1h: {op: count, window: 1h, where: \"(amount > 10)\"}\n"};
    struct manifest_set *s = load(n, t, 1, err);
    assert_non_null(s);
    json_t *d = json_array_get(s->all_nodes, 1);
    json_t *ops = json_object_get(d, "ops");
    assert_int_equal(json_array_size(ops), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ops, 0), "op")), "filter");
    assert_int_equal(json_array_size(json_object_get(d, "table_primary_key")), 2);
    json_t *tables = manifest_tables(s->all_nodes);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tables, 0), "key")), "|");
    json_decref(tables);
    manifest_set_free(s);
}

static void test_conflicts_across_files(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"10-a.yaml", "20-b.yaml"};
    const char *t[] = {SITE,
                       "tables:\n  SiteMetrics:\n    source: PageView\n    features:\n"
                       "      page_views_24h: {op: count, window: 12h}\n"};
    assert_null(load(n, t, 2, err));
    assert_non_null(strstr(err, "conflicting definitions of 'SiteMetrics'"));
    assert_non_null(strstr(err, "10-a.yaml"));
    assert_non_null(strstr(err, "20-b.yaml"));
    /* identical repeat is fine */
    const char *t2[] = {SITE, SITE};
    struct manifest_set *s = load(n, t2, 2, err);
    assert_non_null(s);
    assert_int_equal(json_array_size(s->all_nodes), 2);
    manifest_set_free(s);
    /* one feature name in two tables */
    const char *t3[] = {SITE, "tables:\n  Other:\n    source: PageView\n    features:\n"
                              "      page_views_24h: {op: count, window: 24h}\n"};
    assert_null(load(n, t3, 2, err));
    assert_non_null(strstr(err, "feature 'page_views_24h'"));
    /* defined and removed */
    const char *t4[] = {SITE, "allow_destructive: true\nremove: [SiteMetrics]\n"};
    assert_null(load(n, t4, 2, err));
    assert_non_null(strstr(err, "remove"));
}

static void test_document_order_and_union_order(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"multi.yaml"};
    /* the table comes first in the file but depends on the event of a later document */
    const char *t[] = {"order: 2\ntables:\n  T:\n    source: E\n    features:\n      c: {op: count, window: 1h}\n"
                       "---\norder: 1\nevents:\n  E:\n    fields: {a: str}\n"};
    struct manifest_set *s = load(n, t, 1, err);
    assert_non_null(s);
    assert_int_equal(s->n, 2);
    assert_string_equal(s->m[0].id, "multi.yaml#2");
    assert_string_equal(json_string_value(json_object_get(json_array_get(s->all_nodes, 0), "name")), "E");
    manifest_set_free(s);
}

static void test_steps_carry_previous(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"10-a.yaml", "20-b.yaml"};
    const char *t[] = {SITE, "events:\n  Login:\n    fields: {user: str}\n"};
    struct manifest_set *s = load(n, t, 2, err);
    assert_non_null(s);
    json_t *prev = json_loads("[{\"kind\":\"event\",\"name\":\"Login\",\"schema\":{\"fields\":{\"user\":\"str\"},"
                              "\"optional_fields\":[]}},{\"kind\":\"event\",\"name\":\"Orphan\",\"schema\":"
                              "{\"fields\":{\"x\":\"str\"},\"optional_fields\":[]}}]", 0, NULL);
    json_t *s0 = manifest_step_nodes(s, 0, prev);
    /* step 1: SiteMetrics pipeline + the previously applied Login and Orphan */
    assert_int_equal(json_array_size(s0), 4);
    json_t *s1 = manifest_step_nodes(s, 1, prev);
    assert_int_equal(json_array_size(s1), 4);
    json_t *s0np = manifest_step_nodes(s, 0, NULL);
    assert_int_equal(json_array_size(s0np), 2);
    json_decref(s0);
    json_decref(s1);
    json_decref(s0np);
    json_decref(prev);
    manifest_set_free(s);
}

static void test_destructive_gate(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    const char *n[] = {"10-a.yaml", "20-b.yaml"};
    const char *t[] = {SITE, "allow_destructive: true\nevents:\n  Login:\n    fields: {user: str}\nremove: [Old]\n"};
    struct manifest_set *s = load(n, t, 2, err);
    assert_non_null(s);
    json_t *d1 = json_loads("[{\"kind\":\"window_change\",\"agg\":\"SiteMetrics.page_views_24h\",\"from\":\"12h\",\"to\":\"24h\"}]", 0, NULL);
    assert_int_equal(manifest_check_destructive(s, 1, d1, err), -1);
    assert_non_null(strstr(err, "10-a.yaml"));
    json_t *d2 = json_loads("[{\"kind\":\"type_change\",\"field\":\"Login.user\",\"from\":\"i64\",\"to\":\"str\"},"
                            "{\"kind\":\"agg_removal\",\"table\":\"Old\",\"agg\":\"\"}]", 0, NULL);
    assert_int_equal(manifest_check_destructive(s, 1, d2, err), 0);
    json_t *d3 = json_loads("[{\"kind\":\"agg_removal\",\"table\":\"Stranger\",\"agg\":\"\"}]", 0, NULL);
    assert_int_equal(manifest_check_destructive(s, 1, d3, err), -1);
    assert_non_null(strstr(err, "no manifest declares"));
    /* a rename needs the removed name under remove: */
    json_t *d4 = json_loads("[{\"kind\":\"rename\",\"from\":\"Gone\",\"to\":\"Login\"}]", 0, NULL);
    assert_int_equal(manifest_check_destructive(s, 1, d4, err), -1);
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
    json_decref(d4);
    manifest_set_free(s);
}

static void test_shipped_manifests(void **st)
{
    (void)st;
    const char *root = getenv("CTL_SOURCE_DIR");
    if (!root)
        skip();
    char path[4096], err[CTL_ERR_LEN];
    snprintf(path, sizeof path, "%s/config/manifests", root);
    struct manifest_set *s = NULL;
    assert_int_equal(manifest_load(path, &s, err), 0);
    int found = 0;
    size_t i;
    json_t *node;
    json_array_foreach(s->all_nodes, i, node) {
        if (!strcmp(json_string_value(json_object_get(node, "name")), "SiteMetrics"))
            found = 1;
    }
    assert_true(found);
    manifest_set_free(s);
}

/* The op names, param names, name rule and durations are the server's (base/names.h):
 * every one of the 55 op strings translates, `expr` (which the server evaluates) is a
 * known param, and the name rule and the duration syntax hold at their edges. */
static void test_server_names(void **st)
{
    (void)st;
    char text[8192], err[CTL_ERR_LEN] = "";
    size_t n = (size_t)snprintf(text, sizeof text, "events:\n  E:\n    fields: {a: i64}\ntables:\n  T:\n"
                                                   "    source: E\n    features:\n");
#define FEATURE(op) n += (size_t)snprintf(text + n, sizeof text - n, "      f_" #op ": {op: " #op "}\n");
#define ALIAS(alias, kind) FEATURE(alias)
    BV_OP_KINDS(FEATURE)
    BV_OP_ALIASES(ALIAS)
#undef ALIAS
#undef FEATURE
    assert_true(n < sizeof text);
    const char *names[] = {"m.yaml"}, *texts[] = {text};
    struct manifest_set *s = load(names, texts, 1, err);
    if (!s)
        fail_msg("%s", err);
    json_t *agg = json_object_get(json_array_get(json_object_get(json_array_get(s->all_nodes, 1), "ops"), 0), "agg");
    assert_int_equal(json_object_size(agg), 55);
    manifest_set_free(s);

    const char *ok = "events:\n  E:\n    fields: {a: i64}\ntables:\n  T:\n    source: E\n    features:\n"
                     "      f: {op: sum, expr: a * 2, window: forever}\n      g: {op: ewma, field: a, half_life: 1ms}\n";
    texts[0] = ok;
    s = load(names, texts, 1, err);
    if (!s)
        fail_msg("%s", err);
    manifest_set_free(s);

    expect_error("tables:\n  T:\n    source: E\n    features:\n      f: {op: ewma, half_life: forever}\n",
                 "tables.T.features.f.half_life: expected a duration");
    expect_error("tables:\n  T:\n    source: E\n    features:\n      f: {op: count, window: 0s}\n",
                 "tables.T.features.f.window: expected a duration");
    char longname[BV_NAME_MAX + 2];
    memset(longname, 'e', BV_NAME_MAX + 1);
    longname[BV_NAME_MAX + 1] = '\0';
    snprintf(text, sizeof text, "events:\n  %s:\n    fields: {a: str}\n", longname);
    expect_error(text, "invalid name");
    longname[BV_NAME_MAX] = '\0';
    snprintf(text, sizeof text, "events:\n  %s:\n    fields: {a: str}\n", longname);
    texts[0] = text;
    s = load(names, texts, 1, err);
    if (!s)
        fail_msg("%s", err);
    manifest_set_free(s);
    expect_error("events:\n  _beava_x:\n    fields: {a: str}\n", "invalid name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sitemetrics_translation), cmocka_unit_test(test_errors_name_the_key),
        cmocka_unit_test(test_events_options),          cmocka_unit_test(test_keyed_table_and_filter),
        cmocka_unit_test(test_conflicts_across_files),  cmocka_unit_test(test_document_order_and_union_order),
        cmocka_unit_test(test_steps_carry_previous),    cmocka_unit_test(test_destructive_gate),
        cmocka_unit_test(test_shipped_manifests),
        cmocka_unit_test(test_server_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
