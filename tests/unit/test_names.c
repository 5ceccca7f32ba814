/*
 * test_names.c - the naming facts shared with the control daemon (base/names.h): the op
 * names are exactly the kinds of ops/op_table.c plus `ema`, the param names, the name
 * rule at its edges. The duration syntax is covered by test_ops.c (test_duration).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "names.h"
#include "op.h"

static void test_op_names_are_the_table(void **state) {
    (void)state;
    size_t n = 0;
    for (const struct op_vtable *vt; (vt = op_kind_at(n)) != NULL; n++) {
        if (!bv_op_name_known(vt->name)) fail_msg("kind '%s' missing from BV_OP_KINDS", vt->name);
        assert_ptr_equal(op_lookup(vt->name), vt);
    }
    assert_int_equal(n, 54);
    assert_true(bv_op_name_known("ema"));
    assert_ptr_equal(op_lookup("ema"), op_lookup("ewma"));
    static const char *const bad[] = { "", "cuont", "EMA", "Count", "count ", "group_by", "ewma2" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (bv_op_name_known(bad[i])) fail_msg("'%s' accepted as an op", bad[i]);
        assert_null(op_lookup(bad[i]));
    }
    assert_false(bv_op_name_known(NULL));
}

static void test_param_names(void **state) {
    (void)state;
    static const char *const ok[] = {
        "field", "window", "where", "expr", "n", "half_life", "sub_window", "sigma", "q", "k",
        "expected_n", "capacity", "target_fpr", "fpr", "buckets", "precision", "lat_field",
        "lat", "lon_field", "lon", "samples", "categories", "max_categories", "baseline_window",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!bv_param_name_known(ok[i])) fail_msg("param '%s' refused", ok[i]);
    static const char *const bad[] = { "", "windw", "op", "params", "Window", "half-life" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (bv_param_name_known(bad[i])) fail_msg("'%s' accepted as a param", bad[i]);
    assert_false(bv_param_name_known(NULL));
}

static void test_name_rule(void **state) {
    (void)state;
    char longest[BV_NAME_MAX + 2];
    memset(longest, 'a', BV_NAME_MAX);
    longest[BV_NAME_MAX] = '\0';
    assert_int_equal(bv_name_check(longest), BV_NAME_OK);
    longest[BV_NAME_MAX] = 'a';
    longest[BV_NAME_MAX + 1] = '\0';
    assert_int_equal(bv_name_check(longest), BV_NAME_TOO_LONG);

    static const char *const ok[] = { "a", "_", "A9", "page_view", "_x", "_beava", "beava_x" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!bv_name_valid(ok[i])) fail_msg("'%s' refused", ok[i]);
    assert_int_equal(bv_name_check(""), BV_NAME_EMPTY);
    static const char *const pattern[] = { "9a", "a-b", "a b", "a.b", "é", "a\tb" };
    for (size_t i = 0; i < sizeof pattern / sizeof pattern[0]; i++)
        assert_int_equal(bv_name_check(pattern[i]), BV_NAME_PATTERN);
    assert_int_equal(bv_name_check("_beava_"), BV_NAME_RESERVED);
    assert_int_equal(bv_name_check("_beava_x"), BV_NAME_RESERVED);
    assert_false(bv_name_valid(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_names_are_the_table),
        cmocka_unit_test(test_param_names),
        cmocka_unit_test(test_name_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
