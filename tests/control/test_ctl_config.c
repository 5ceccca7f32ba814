/* Unit tests: control.yaml, BEAVA_CONTROL_* environment and --set precedence, unknown keys. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

static char *write_tmp(const char *text)
{
    char *p = ctl_strdup("/tmp/ctl-config-XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return p;
}

static void test_precedence(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    char *p = write_tmp("state_dir: /srv/ctl\nruntime:\n  kind: bwrap\n  stop_grace_s: 7\n  env:\n    RUST_LOG: info\n"
                        "registry:\n  repository: 127.0.0.1:5000/beava\n");
    struct ctl_config *c = NULL;
    unsetenv("BEAVA_CONTROL_RUNTIME_KIND");
    assert_int_equal(config_load(p, NULL, 0, &c, err), 0);
    assert_string_equal(c->state_dir, "/srv/ctl");
    assert_string_equal(c->runtime_kind, "bwrap");
    assert_int_equal(c->stop_grace_s, 7);
    assert_string_equal(c->socket_path, "/srv/ctl/control.sock");
    assert_string_equal(json_string_value(json_object_get(c->runtime_env, "RUST_LOG")), "info");
    assert_int_equal(c->trigger_replay_window_s, 300);
    config_free(c);
    setenv("BEAVA_CONTROL_RUNTIME_KIND", "systemd", 1);
    assert_int_equal(config_load(p, NULL, 0, &c, err), 0);
    assert_string_equal(c->runtime_kind, "systemd");
    config_free(c);
    char *sets[] = {"runtime.kind=process", "runtime.env.X=1"};
    assert_int_equal(config_load(p, sets, 2, &c, err), 0);
    assert_string_equal(c->runtime_kind, "process");
    assert_string_equal(json_string_value(json_object_get(c->runtime_env, "X")), "1");
    config_free(c);
    unsetenv("BEAVA_CONTROL_RUNTIME_KIND");
    unlink(p);
    free(p);
}

static void expect_fail(const char *yaml, char *const *sets, int n, const char *needle)
{
    char err[CTL_ERR_LEN] = "";
    char *p = write_tmp(yaml);
    struct ctl_config *c = NULL;
    int rc = config_load(p, sets, n, &c, err);
    unlink(p);
    free(p);
    if (rc == 0) {
        config_free(c);
        fail_msg("expected failure containing '%s'", needle);
    }
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_errors(void **st)
{
    (void)st;
    expect_fail("runtime:\n  kindd: bwrap\n", NULL, 0, "runtime.kindd: unknown key");
    expect_fail("registry:\n  wait_for_image_s: soon\n", NULL, 0, "registry.wait_for_image_s");
    expect_fail("runtime:\n  kind: docker\n", NULL, 0, "runtime.kind");
    expect_fail("state_dir: relative\n", NULL, 0, "state_dir");
    expect_fail("runtime: 3\n", NULL, 0, "runtime: expected a mapping");
    char *bad[] = {"nope.key=1"};
    expect_fail("", bad, 1, "nope.key: unknown setting");
    char *bad2[] = {"novalue"};
    expect_fail("", bad2, 1, "PATH=VALUE");
    expect_fail("runtime:\n  kind: systemd\nsystemd:\n  unit: beava.timer\n", NULL, 0, "systemd.unit");
    setenv("BEAVA_CONTROL_TYPO", "1", 1);
    expect_fail("", NULL, 0, "BEAVA_CONTROL_TYPO: unknown setting");
    unsetenv("BEAVA_CONTROL_TYPO");
}

/* cluster.hosts: the YAML list (per-host secret files) and the NAME=URL,... flag form */
static void test_cluster_hosts(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    char *p = write_tmp("cluster:\n  node_id: n2\n  hosts:\n"
                        "    - {name: h1, url: 'http://10.0.0.1:8095', secret_file: /etc/beava/h1.secret}\n"
                        "    - {name: h2, url: 'https://h2.example:8095'}\n");
    struct ctl_config *c = NULL;
    assert_int_equal(config_load(p, NULL, 0, &c, err), 0);
    assert_string_equal(c->cluster_node_id, "n2");
    assert_int_equal(json_array_size(c->cluster_hosts), 2);
    json_t *h = json_array_get(c->cluster_hosts, 0);
    assert_string_equal(json_string_value(json_object_get(h, "name")), "h1");
    assert_string_equal(json_string_value(json_object_get(h, "url")), "http://10.0.0.1:8095");
    assert_string_equal(json_string_value(json_object_get(h, "secret_file")), "/etc/beava/h1.secret");
    assert_string_equal(json_string_value(json_object_get(json_array_get(c->cluster_hosts, 1), "secret_file")), "");
    json_t *j = config_to_json(c);
    assert_int_equal(json_array_size(json_object_get(j, "cluster.hosts")), 2);
    json_decref(j);
    config_free(c);
    char *sets[] = {"cluster.hosts=a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3"};
    assert_int_equal(config_load(p, sets, 1, &c, err), 0);
    assert_int_equal(json_array_size(c->cluster_hosts), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(c->cluster_hosts, 2), "url")),
                        "http://127.0.0.1:3");
    config_free(c);
    unlink(p);
    free(p);
    expect_fail("cluster:\n  hosts:\n    - {name: h1, url: 'ftp://x'}\n", NULL, 0, "url must be an http");
    expect_fail("cluster:\n  hosts:\n    - {name: h1, url: 'http://a'}\n    - {name: h1, url: 'http://b'}\n", NULL,
                0, "host h1 is listed twice");
    expect_fail("cluster:\n  hosts:\n    - {name: h1, url: 'http://a', secret: x}\n", NULL, 0,
                "cluster.hosts[0].secret: unknown key");
    expect_fail("cluster:\n  hosts:\n    - {url: 'http://a'}\n", NULL, 0, "a host needs a name");
    char *bad[] = {"cluster.hosts=h1"};
    expect_fail("", bad, 1, "expected NAME=URL");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_cluster_hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
