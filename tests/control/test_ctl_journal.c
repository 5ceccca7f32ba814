/* Unit tests: journal append/read, torn lines, history grouping; state files; host lock. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "state.h"
#include "util.h"

static void test_append_read_history(void **st)
{
    (void)st;
    char dir[] = "/tmp/ctl-journal-XXXXXX", err[CTL_ERR_LEN];
    assert_non_null(mkdtemp(dir));
    char *path = ctl_asprintf("%s/journal", dir);
    struct journal *j = NULL;
    assert_int_equal(journal_open(path, &j, err), 0);
    json_t *r1 = json_pack("{s:s,s:s,s:s,s:s}", "event", "deploy.start", "deploy", "d-1", "kind", "deploy", "image", "r/b:1");
    json_t *r2 = json_pack("{s:s,s:s,s:s,s:b,s:i}", "event", "step", "deploy", "d-1", "step", "resolve", "ok", 1, "ms", 5);
    json_t *r3 = json_pack("{s:s,s:s,s:s,s:s}", "event", "deploy.end", "deploy", "d-1", "status", "succeeded", "message", "fine");
    json_t *r4 = json_pack("{s:s,s:s,s:s}", "event", "deploy.start", "deploy", "d-2", "kind", "apply");
    assert_int_equal(journal_append(j, r1, err), 0);
    assert_int_equal(journal_append(j, r2, err), 0);
    assert_int_equal(journal_append(j, r3, err), 0);
    journal_close(j);
    /* a torn line from a crash in the middle of a write */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"event\":\"st", 12), 12);
    close(fd);
    assert_int_equal(journal_open(path, &j, err), 0);
    assert_int_equal(journal_append(j, r4, err), 0);
    journal_close(j);
    size_t skipped = 0;
    json_t *recs = journal_read(path, &skipped);
    assert_int_equal(json_array_size(recs), 4);
    assert_int_equal(skipped, 1);
    assert_non_null(json_object_get(json_array_get(recs, 0), "ts"));
    json_t *h = journal_history(recs, 10);
    assert_int_equal(json_array_size(h), 2);
    json_t *newest = json_array_get(h, 0), *old = json_array_get(h, 1);
    assert_string_equal(json_string_value(json_object_get(newest, "id")), "d-2");
    assert_string_equal(json_string_value(json_object_get(newest, "status")), "running");
    assert_string_equal(json_string_value(json_object_get(old, "status")), "succeeded");
    assert_int_equal(json_array_size(json_object_get(old, "steps")), 1);
    assert_string_equal(json_string_value(json_object_get(old, "image")), "r/b:1");
    json_t *h1 = journal_history(recs, 1);
    assert_int_equal(json_array_size(h1), 1);
    json_decref(h1);
    json_decref(h);
    json_decref(recs);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    json_decref(r4);
    /* missing journal reads as empty */
    json_t *none = journal_read("/nonexistent/journal", NULL);
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    ctl_rmtree(dir, err);
    free(path);
}

static void test_state_files_and_lock(void **st)
{
    (void)st;
    char dir[] = "/tmp/ctl-state-XXXXXX", err[CTL_ERR_LEN];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(state_init(dir, err), 0);
    assert_null(state_load(dir, "current"));
    json_t *v = json_pack("{s:s}", "digest", "sha256:00");
    assert_int_equal(state_save(dir, "current", v, err), 0);
    json_t *back = state_load(dir, "current");
    assert_true(json_equal(v, back));
    assert_int_equal(state_save(dir, "current", NULL, err), 0);
    assert_null(state_load(dir, "current"));
    int fd1 = -1, fd2 = -1;
    assert_int_equal(state_lock(dir, &fd1, err), 0);
    /* flock is per open file description: a second open conflicts, like a second daemon */
    assert_int_equal(state_lock(dir, &fd2, err), -1);
    assert_non_null(strstr(err, "another beava-control"));
    close(fd1);
    assert_int_equal(state_lock(dir, &fd2, err), 0);
    close(fd2);
    json_decref(v);
    json_decref(back);
    ctl_rmtree(dir, err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read_history),
        cmocka_unit_test(test_state_files_and_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
