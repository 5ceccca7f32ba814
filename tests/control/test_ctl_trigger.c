/* Unit tests: HMAC trigger signatures (method, path, timestamp, delivery, body), replay window,
 * delivery-id and image+revision de-duplication. */
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
/* printf 'GET\n/v1/status\n1\n\n' | openssl dgst -sha256 -hmac key */
#define VECTOR_GET_STATUS "72800ced431c8df0de01ac7671db1930a453fd5fb64a273bf4b7327b5952b176"
static const char BODY[] = "{\"image\":\"127.0.0.1:5000/beava:sha-abc\",\"revision\":\"abc\"}";

static struct trigger_req req(const char *ts, const char *delivery, const char *body)
{
    return (struct trigger_req){.method = "POST", .path = "/v1/deploys", .timestamp = ts, .delivery = delivery,
                                .body = body, .body_len = body ? strlen(body) : 0};
}

static int verify(const struct trigger_req *r, const char *sig, int64_t now)
{
    char err[CTL_ERR_LEN];
    return trigger_verify(SECRET, strlen(SECRET), r, sig, now, 300, err);
}

static void test_sign_verify(void **st)
{
    (void)st;
    char sig[80];
    struct trigger_req r = req("1700000000", "run-1", BODY);
    trigger_sign(SECRET, strlen(SECRET), &r, sig);
    assert_int_equal(strncmp(sig, "sha256=", 7), 0);
    assert_int_equal(strlen(sig), 71);
    assert_int_equal(verify(&r, sig, 1700000100), 0);
    /* a known vector: HMAC-SHA256("key", "GET\n/v1/status\n1\n\n"), as openssl computes it:
     * printf 'GET\n/v1/status\n1\n\n' | openssl dgst -sha256 -hmac key */
    struct trigger_req g = {.method = "GET", .path = "/v1/status", .timestamp = "1"};
    trigger_sign("key", 3, &g, sig);
    assert_string_equal(sig, "sha256=" VECTOR_GET_STATUS);
}

static void test_rejections(void **st)
{
    (void)st;
    char sig[80], err[CTL_ERR_LEN];
    const char *ts = "1700000000";
    struct trigger_req r = req(ts, "run-1", BODY);
    trigger_sign(SECRET, strlen(SECRET), &r, sig);
    /* body changed */
    struct trigger_req x = req(ts, "run-1", "{}");
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), &x, sig, 1700000000, 300, err), -1);
    assert_non_null(strstr(err, "bad signature"));
    /* delivery id changed, even only its case: the signature covers it */
    x = req(ts, "RUN-1", BODY);
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    x = req(ts, "run-2", BODY);
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    x = req(ts, NULL, BODY);
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    /* method and path changed */
    x = req(ts, "run-1", BODY);
    x.method = "PUT";
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    x = req(ts, "run-1", BODY);
    x.path = "/v1/apply";
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    /* the old "<timestamp>.<body>" signature is not accepted */
    char *old = ctl_asprintf("%s.%s", ts, BODY);
    char oldsig[80];
    struct trigger_req raw = {.method = "", .path = "", .timestamp = "", .body = old, .body_len = strlen(old)};
    trigger_sign(SECRET, strlen(SECRET), &raw, oldsig);
    assert_int_equal(verify(&r, oldsig, 1700000000), -1);
    free(old);
    /* timestamp changed (signature covers it) */
    x = req("1700000001", "run-1", BODY);
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    /* wrong secret */
    assert_int_equal(trigger_verify("other-secret-xxxxxx", 19, &r, sig, 1700000000, 300, err), -1);
    /* stale and future */
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), &r, sig, 1700000301, 300, err), -1);
    assert_non_null(strstr(err, "stale"));
    assert_int_equal(verify(&r, sig, 1699999699), -1);
    /* missing / malformed headers */
    x = req(NULL, "run-1", BODY);
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), &x, sig, 1700000000, 300, err), -1);
    assert_non_null(strstr(err, TRIGGER_HDR_TS));
    assert_int_equal(trigger_verify(SECRET, strlen(SECRET), &r, NULL, 1700000000, 300, err), -1);
    assert_non_null(strstr(err, TRIGGER_HDR_SIG));
    x = req("12x", "run-1", BODY);
    assert_int_equal(verify(&x, sig, 1700000000), -1);
    assert_int_equal(verify(&r, "sha1=abc", 1700000000), -1);
    char bad[80];
    snprintf(bad, sizeof bad, "%s", sig);
    bad[10] = 'z';
    assert_int_equal(verify(&r, bad, 1700000000), -1);
    /* no secret configured */
    assert_int_equal(trigger_verify("", 0, &r, sig, 1700000000, 300, err), -1);
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

static void test_body_replay_window(void **st)
{
    (void)st;
    char dir[] = "/tmp/ctl-trigger-XXXXXX", err[CTL_ERR_LEN];
    assert_non_null(mkdtemp(dir));
    char *path = ctl_asprintf("%s/deliveries.json", dir);
    struct trigger_seen *s = NULL;
    assert_int_equal(trigger_seen_open(path, &s, err), 0);
    assert_int_equal(trigger_seen_body_check(s, "r/beava:x", "abc", 1000, 300, err), 0);
    assert_int_equal(trigger_seen_body_add(s, "r/beava:x", "abc", "run-1", 1000, err), 0);
    /* the same image + revision from another delivery inside the window: refused, naming it */
    assert_int_equal(trigger_seen_body_check(s, "r/beava:x", "abc", 1100, 300, err), -1);
    assert_non_null(strstr(err, "delivery run-1"));
    /* another revision or image passes */
    assert_int_equal(trigger_seen_body_check(s, "r/beava:x", "abd", 1100, 300, err), 0);
    assert_int_equal(trigger_seen_body_check(s, "r/beava:y", "abc", 1100, 300, err), 0);
    trigger_seen_close(s);
    /* persisted across a restart */
    assert_int_equal(trigger_seen_open(path, &s, err), 0);
    assert_int_equal(trigger_seen_body_check(s, "r/beava:x", "abc", 1200, 300, err), -1);
    /* after the window it may be deployed again */
    assert_int_equal(trigger_seen_body_check(s, "r/beava:x", "abc", 1301, 300, err), 0);
    trigger_seen_close(s);
    /* the older flat {id: t} file still loads, ids kept */
    assert_int_equal(ctl_write_file_atomic(path, "{\"old-1\":1000}", 14, 0600, err), 0);
    assert_int_equal(trigger_seen_open(path, &s, err), 0);
    assert_int_equal(trigger_seen_check_add(s, "old-1", 1001, 300, err), -1);
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
        cmocka_unit_test(test_body_replay_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
