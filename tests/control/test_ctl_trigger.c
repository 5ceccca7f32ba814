/* Unit tests: HMAC trigger signatures, replay window, delivery-id de-duplication. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trigger.h"
#include "util.h"

static const char SECRET[] = "0123456789abcdef-secret";
static const char BODY[] = "{\"image\":\"127.0.0.1:5000/beava:sha-abc\",\"revision\":\"abc\"}";

static void test_sign_verify(void **st)
{
    (void)st;
    char sig[80], err[CTL_ERR_LEN];
    trigger_sign(SECRET, strlen(SECRET), "1700000000", BODY, strlen(BODY), sig);
    assert_int_equal(strncmp(sig, "sha256=", 7), 0);
    assert_int_equal(strlen(sig), 71);
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), "1700000000", sig, BODY, strlen(BODY), 1700000100, 300, err), 0);
    /* a known vector: HMAC-SHA256("key", "1.") */
    trigger_sign("key", 3, "1", "", 0, sig);
    assert_string_equal(sig, "sha256=53123bc365c2fe4bee48bc5cc6cd6c19699147d43513154ed34277c7c063e80f");
}

static void test_rejections(void **st)
{
    (void)st;
    char sig[80], err[CTL_ERR_LEN];
    const char *ts = "1700000000";
    trigger_sign(SECRET, strlen(SECRET), ts, BODY, strlen(BODY), sig);
    /* body changed */
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), ts, sig, "{}", 2, 1700000000, 300, err), -1);
    assert_non_null(strstr(err, "bad signature"));
    /* timestamp changed (signature covers it) */
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), "1700000001", sig, BODY, strlen(BODY), 1700000000, 300, err), -1);
    /* wrong secret */
    assert_int_equal(trigger_verify("other-secret-xxxxxx", 19, ts, sig, BODY, strlen(BODY), 1700000000, 300, err), -1);
    /* stale and future */
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), ts, sig, BODY, strlen(BODY), 1700000301, 300, err), -1);
    assert_non_null(strstr(err, "stale"));
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), ts, sig, BODY, strlen(BODY), 1699999699, 300, err), -1);
    /* missing / malformed headers */
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), NULL, sig, BODY, strlen(BODY), 1700000000, 300, err), -1);
    assert_non_null(strstr(err, TRIGGER_HDR_TS));
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), ts, NULL, BODY, strlen(BODY), 1700000000, 300, err), -1);
    assert_non_null(strstr(err, TRIGGER_HDR_SIG));
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), "12x", sig, BODY, strlen(BODY), 1700000000, 300, err), -1);
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), ts, "sha1=abc", BODY, strlen(BODY), 1700000000, 300, err), -1);
    char bad[80];
    snprintf(bad, sizeof bad, "%s", sig);
    bad[10] = 'z';
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), ts, bad, BODY, strlen(BODY), 1700000000, 300, err), -1);
    /* no secret configured */
    assert_int_equal(trigger_verify("", 0, ts, sig, BODY, strlen(BODY), 1700000000, 300, err), -1);
}

static void test_delivery_dedupe_persists(void **st)
{
    (void)st;
    char dir[] = "/tmp/ctl-trigger-XXXXXX", err[CTL_ERR_LEN];
    assert_non_null(mkdtemp(dir));
    char *path = ctl_asprintf("%s/deliveries.json", dir);
    struct trigger_seen *s = NULL;
    assert_int_equal(trigger_seen_open(path, &s, err), 0);
    assert_int_equal(trigger_seen_check_add(s, "d-1", 1000, 300, err), 0);
    assert_int_equal(trigger_seen_check_add(s, "d-1", 1001, 300, err), -1);
    assert_non_null(strstr(err, "replayed"));
    assert_int_equal(trigger_seen_check_add(s, "", 1001, 300, err), -1);
    assert_int_equal(trigger_seen_check_add(s, NULL, 1001, 300, err), -1);
    assert_int_equal(trigger_seen_check_add(s, "bad id!", 1001, 300, err), -1);
    trigger_seen_close(s);
    /* after a restart the id is still known */
    assert_int_equal(trigger_seen_open(path, &s, err), 0);
    assert_int_equal(trigger_seen_check_add(s, "d-1", 1002, 300, err), -1);
    assert_int_equal(trigger_seen_check_add(s, "d-2", 1002, 300, err), 0);
    /* long after, old ids are pruned (their timestamps cannot pass anyway) */
    assert_int_equal(trigger_seen_check_add(s, "d-3", 5000, 300, err), 0);
    assert_int_equal(trigger_seen_check_add(s, "d-1", 5001, 300, err), 0);
    trigger_seen_close(s);
    ctl_rmtree(dir, err);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_delivery_dedupe_persists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
