/*
 * feature_harness.h - helpers shared by the operator unit tests (test_ops*.c): compile a
 * feature spec against the including file's schema, run its state through init/read/
 * destroy, and compare what it reads as exact JSON text.
 *
 * The including file defines PATH (the error path expected from feature_compile) and
 * `static void mk_schema(bv_schema *s)` (the upstream schema) before including this.
 */
#ifndef BEAVA_TEST_FEATURE_HARNESS_H
#define BEAVA_TEST_FEATURE_HARNESS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int compile_spec(feature *f, const char *spec_json, bv_err *err) {
    bv_schema s;
    mk_schema(&s);
    json_error_t je;
    json_t *spec = json_loads(spec_json, 0, &je);
    if (!spec) fail_msg("bad test JSON %s: %s", spec_json, je.text);
    bv_err_clear(err);
    int r = feature_compile(f, "feat", spec, &s, PATH, err);
    json_decref(spec);
    bv_schema_free(&s);
    return r;
}

static inline void compile_ok(feature *f, const char *spec_json) {
    bv_err err;
    if (compile_spec(f, spec_json, &err) != 0) fail_msg("compile %s: %s %s", spec_json, err.code, err.reason);
}

static inline void expect_code(const char *spec_json, const char *code) {
    feature f;
    bv_err err;
    if (compile_spec(&f, spec_json, &err) == 0) {
        feature_release(&f);
        fail_msg("%s compiled, expected %s", spec_json, code);
    }
    if (strcmp(err.code, code) != 0) fail_msg("%s: got %s (%s), expected %s", spec_json, err.code, err.reason, code);
    assert_string_equal(err.path, PATH);
    assert_true(strlen(err.reason) > 0);
    /* a failed compile leaves the feature empty */
    assert_null(f.name);
    assert_null(f.spec);
}

static inline void *state_new(const feature *f) {
    void *st = malloc(f->state_size ? f->state_size : 1);
    assert_non_null(st);
    feature_state_init(f, st);
    return st;
}

static inline void state_free(const feature *f, void *st) {
    feature_state_destroy(f, st);
    free(st);
}

static inline char *read_json(const feature *f, const void *st, int64_t q) {
    bv_buf b;
    jsonw w;
    bv_buf_init(&b);
    jsonw_init(&w, &b);
    feature_read(f, st, q, &w);
    return bv_buf_steal(&b);
}

static inline void assert_read(const feature *f, const void *st, int64_t q, const char *want) {
    char *got = read_json(f, st, q);
    bool same = strcmp(got, want) == 0;
    if (!same) fprintf(stderr, "op %s at q=%lld: got %s want %s\n", f->op_name, (long long)q, got, want);
    free(got);
    if (!same) fail();
}

#endif
