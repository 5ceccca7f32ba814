/* test_partmap.c - partitions and their owners: deterministic, balanced, `replicas`
 * distinct owners each, independent of the node order, minimal movement on change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "partmap.h"

static char *three[] = { "n1", "n2", "n3" };
static char *three_rev[] = { "n3", "n1", "n2" };
static char *four[] = { "n1", "n2", "n3", "n4" };

static void test_owners_distinct_and_deterministic(void **state) {
    (void)state;
    partmap *a = partmap_new(three, 3, 64, 2), *b = partmap_new(three, 3, 64, 2);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(partmap_partitions(a), 64);
    assert_int_equal(partmap_replicas(a), 2);
    for (unsigned p = 0; p < 64; p++) {
        const uint8_t *o = partmap_owners(a, p);
        assert_true(o[0] < 3 && o[1] < 3);
        assert_int_not_equal(o[0], o[1]);
        assert_memory_equal(o, partmap_owners(b, p), 2);
        unsigned owning = 0;
        for (size_t n = 0; n < 3; n++) owning += partmap_owns(a, p, n);
        assert_int_equal(owning, 2);
    }
    /* the same (table, key) always lands in the same partition, on any map of that size */
    for (int i = 0; i < 100; i++) {
        char key[16];
        int kl = snprintf(key, sizeof key, "user%d", i);
        assert_int_equal(partmap_partition(a, "T", key, (size_t)kl), partmap_partition(b, "T", key, (size_t)kl));
    }
    /* table and key are not just concatenated */
    bool differs = false;
    for (int i = 0; i < 32 && !differs; i++) {
        char t1[8], k2[16];
        snprintf(t1, sizeof t1, "a%d", i);
        snprintf(k2, sizeof k2, "%db", i);
        differs = partmap_partition(a, t1, "b", 1) != partmap_partition(a, "a", k2, strlen(k2));
    }
    assert_true(differs);
    partmap_free(a);
    partmap_free(b);
}

static void test_listing_order_does_not_matter(void **state) {
    (void)state;
    partmap *a = partmap_new(three, 3, 32, 2), *b = partmap_new(three_rev, 3, 32, 2);
    for (unsigned p = 0; p < 32; p++) {
        const uint8_t *oa = partmap_owners(a, p), *ob = partmap_owners(b, p);
        for (int r = 0; r < 2; r++) assert_string_equal(partmap_node(a, oa[r]), partmap_node(b, ob[r]));
    }
    partmap_free(a);
    partmap_free(b);
}

static void test_balance(void **state) {
    (void)state;
    /* partitions per node: 1024 x 2 replicas over 3 nodes = 682.7 each */
    partmap *m = partmap_new(three, 3, 1024, 2);
    unsigned per[3] = { 0 };
    for (unsigned p = 0; p < 1024; p++)
        for (size_t n = 0; n < 3; n++) per[n] += partmap_owns(m, p, n);
    for (int n = 0; n < 3; n++) assert_true(per[n] > 600 && per[n] < 766);
    /* keys over partitions: 64 partitions, 64000 keys, each within 25% of 1000 */
    partmap *k = partmap_new(three, 3, 64, 1);
    unsigned hits[64] = { 0 };
    for (int i = 0; i < 64000; i++) {
        char key[16];
        int kl = snprintf(key, sizeof key, "k%d", i);
        hits[partmap_partition(k, "ByUser", key, (size_t)kl)]++;
    }
    for (int p = 0; p < 64; p++) assert_true(hits[p] > 750 && hits[p] < 1250);
    partmap_free(m);
    partmap_free(k);
}

static void test_adding_a_node_moves_only_its_share(void **state) {
    (void)state;
    partmap *a = partmap_new(three, 3, 256, 1), *b = partmap_new(four, 4, 256, 1);
    unsigned moved = 0;
    for (unsigned p = 0; p < 256; p++) {
        const char *before = partmap_node(a, partmap_owners(a, p)[0]);
        const char *after = partmap_node(b, partmap_owners(b, p)[0]);
        if (strcmp(before, after) != 0) {
            assert_string_equal(after, "n4");     /* only to the new node */
            moved++;
        }
    }
    assert_true(moved > 32 && moved < 100);      /* about a quarter */
    partmap_free(a);
    partmap_free(b);
}

static void test_replicas_all_and_bad_arguments(void **state) {
    (void)state;
    partmap *m = partmap_new(three, 3, 8, 3);
    for (unsigned p = 0; p < 8; p++)
        for (size_t n = 0; n < 3; n++) assert_true(partmap_owns(m, p, n));
    assert_int_equal(partmap_node_index(m, "n2"), 1);
    assert_int_equal(partmap_node_index(m, "n9"), -1);
    partmap_free(m);
    assert_null(partmap_new(three, 3, 8, 4));
    assert_null(partmap_new(three, 3, 8, 0));
    assert_null(partmap_new(three, 3, 0, 1));
    assert_null(partmap_new(three, 0, 8, 1));
    assert_null(partmap_new(three, 3, PARTMAP_MAX_PARTITIONS + 1, 1));
}

/* The map answers "do I own p" for the node it was built for; a non-member owns nothing.
 * With replicas 2, adding a node replaces at most one owner of any partition (the move
 * keeps one owner serving reads throughout: README "Adding and removing a node"). */
static void test_self_and_one_owner_moves(void **state) {
    (void)state;
    char *four[] = { "n1", "n2", "n3", "n4" };
    partmap *a = partmap_new(three, 3, 64, 2), *b = partmap_new(four, 4, 64, 2), *out = partmap_new(three, 3, 64, 2);
    partmap_set_self(a, "n2");
    partmap_set_self(b, "n2");
    partmap_set_self(out, "n4");
    for (unsigned p = 0; p < 64; p++) {
        assert_int_equal(partmap_owns_self(a, p), partmap_owns(a, p, 1));
        assert_int_equal(partmap_owns_self(b, p), partmap_owns(b, p, 1));
        assert_false(partmap_owns_self(out, p));
        unsigned kept = 0;
        for (unsigned r = 0; r < 2; r++)
            kept += partmap_owns(b, p, (size_t)partmap_node_index(b, partmap_node(a, partmap_owners(a, p)[r])));
        assert_true(kept >= 1);
    }
    assert_true(partmap_has(b, "n4"));
    assert_false(partmap_has(a, "n4"));
    partmap_free(a);
    partmap_free(b);
    partmap_free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owners_distinct_and_deterministic),
        cmocka_unit_test(test_listing_order_does_not_matter),
        cmocka_unit_test(test_balance),
        cmocka_unit_test(test_adding_a_node_moves_only_its_share),
        cmocka_unit_test(test_replicas_all_and_bad_arguments),
        cmocka_unit_test(test_self_and_one_owner_moves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
