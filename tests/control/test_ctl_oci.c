/* Unit tests: image references, repository check, auth challenges, digest verification. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oci.h"
#include "util.h"

static void test_refs(void **st)
{
    (void)st;
    struct oci_ref r;
    char err[CTL_ERR_LEN], buf[1200];
    assert_int_equal(oci_parse_ref("127.0.0.1:5000/beava:sha-abc", &r, err), 0);
    assert_string_equal(r.host, "127.0.0.1:5000");
    assert_string_equal(r.repo, "beava");
    assert_string_equal(r.tag, "sha-abc");
    assert_string_equal(r.digest, "");
    assert_true(oci_ref_in_repository(&r, "127.0.0.1:5000/beava"));
    assert_false(oci_ref_in_repository(&r, "127.0.0.1:5000/other"));
    assert_false(oci_ref_in_repository(&r, ""));
    const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char in[300];
    snprintf(in, sizeof in, "registry.example.com/org/beava@%s", d);
    assert_int_equal(oci_parse_ref(in, &r, err), 0);
    assert_string_equal(r.repo, "org/beava");
    assert_string_equal(r.digest, d);
    assert_string_equal(r.tag, "");
    oci_ref_format(&r, buf, sizeof buf);
    assert_string_equal(buf, in);
    assert_int_equal(oci_parse_ref("localhost/beava", &r, err), 0);
    assert_string_equal(r.tag, "latest");
    assert_int_equal(oci_parse_ref("beava:latest", &r, err), -1);
    assert_int_equal(oci_parse_ref("127.0.0.1:5000/Beava:x", &r, err), -1);
    assert_int_equal(oci_parse_ref("127.0.0.1:5000/../x:y", &r, err), -1);
    assert_int_equal(oci_parse_ref("127.0.0.1:5000/x@sha256:12", &r, err), -1);
    assert_int_equal(oci_parse_ref("127.0.0.1:5000/x:t$g", &r, err), -1);
    assert_int_equal(oci_parse_ref("", &r, err), -1);
}

static void test_challenges(void **st)
{
    (void)st;
    char scheme[16], realm[512], service[512], scope[512];
    assert_int_equal(oci_parse_challenge("Basic realm=\"Registry\"", scheme, realm, service, scope), 0);
    assert_string_equal(scheme, "basic");
    assert_int_equal(oci_parse_challenge("Bearer realm=\"https://auth.example/token\",service=\"registry.example\","
                                         "scope=\"repository:beava:pull\"", scheme, realm, service, scope), 0);
    assert_string_equal(scheme, "bearer");
    assert_string_equal(realm, "https://auth.example/token");
    assert_string_equal(service, "registry.example");
    assert_string_equal(scope, "repository:beava:pull");
    assert_int_equal(oci_parse_challenge("Digest realm=x", scheme, realm, service, scope), -1);
    assert_int_equal(oci_parse_challenge("Bearer service=x", scheme, realm, service, scope), -1);
    assert_int_equal(oci_parse_challenge(NULL, scheme, realm, service, scope), -1);
}

static void test_digest_verification(void **st)
{
    (void)st;
    char dir[] = "/tmp/ctl-oci-XXXXXX", err[CTL_ERR_LEN], want[80];
    assert_non_null(mkdtemp(dir));
    char *p = ctl_asprintf("%s/blob", dir);
    const char data[] = "layer bytes";
    FILE *f = fopen(p, "w");
    fwrite(data, 1, sizeof data - 1, f);
    fclose(f);
    ctl_sha256_digest(data, sizeof data - 1, want);
    assert_true(ctl_is_digest(want));
    assert_int_equal(oci_verify_file(p, want, err), 0);
    f = fopen(p, "a");
    fputc('!', f);
    fclose(f);
    assert_int_equal(oci_verify_file(p, want, err), -1);
    assert_non_null(strstr(err, "digest mismatch"));
    char *bp = oci_blob_path("/s", want);
    assert_int_equal(strncmp(bp, "/s/blobs/sha256/", 16), 0);
    assert_int_equal(strlen(bp), 16 + 64);
    free(bp);
    free(p);
    ctl_rmtree(dir, err);
    assert_false(ctl_is_digest("sha256:ABC"));
    assert_false(ctl_is_digest("sha512:0123"));
}

static void test_revision(void **st)
{
    (void)st;
    json_t *cfg = json_loads("{\"config\":{\"Labels\":{\"org.opencontainers.image.revision\":"
                             "\"0123456789abcdef0123456789abcdef01234567\"}}}", 0, NULL);
    const char *l = oci_revision_label(cfg);
    assert_non_null(l);
    assert_true(oci_revision_matches(l, "0123456789abcdef0123456789abcdef01234567"));
    assert_true(oci_revision_matches(l, "0123456"));
    assert_false(oci_revision_matches(l, "012345"));
    assert_false(oci_revision_matches(l, "1123456789"));
    assert_false(oci_revision_matches(NULL, "0123456"));
    json_decref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_challenges),
        cmocka_unit_test(test_digest_verification),
        cmocka_unit_test(test_revision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
