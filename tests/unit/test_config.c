/* test_config.c - configuration layers: YAML keys and errors, env, flags, precedence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"

static int apply(bv_config *c, const char *yaml, char *err) {
    return config_apply_yaml(c, yaml, strlen(yaml), "t.yaml", err, 512);
}

static void test_yaml_keys(void **state) {
    (void)state;
    bv_config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(apply(&c,
        "listen_addr: 127.0.0.1:9000\n"
        "tcp: {port: 0, max_frame_bytes: 1024}\n"
        "durability: sync\n"
        "wal: {tick_ms: 5}\n"
        "snapshot: {interval_s: 30, retain: 3}\n"
        "site: {dir: /tmp, public_tables: [A, B], public_events: [E]}\n", err), 0);
    assert_string_equal(c.http_addr, "127.0.0.1:9000");
    assert_int_equal(c.tcp_port, 0);
    assert_int_equal(c.tcp_max_frame_bytes, 1024);
    assert_int_equal(c.durability, DURABILITY_SYNC);
    assert_int_equal(c.wal_tick_ms, 5);
    assert_int_equal(c.snapshot_interval_s, 30);
    assert_int_equal(c.snapshot_retain, 3);
    assert_int_equal(c.npublic_tables, 2);
    assert_string_equal(c.public_tables[1], "B");
    assert_string_equal(c.public_events[0], "E");
    /* the reference's durability mapping */
    assert_int_equal(apply(&c, "durability:\n  mode: batch\n  snapshot_interval_ms: 1500\n  wal_dir: /x/wal\n", err), 0);
    assert_int_equal(c.durability, DURABILITY_BATCH);
    assert_int_equal(c.snapshot_interval_s, 2);
    assert_string_equal(c.wal_dir, "/x/wal");
    config_free(&c);
}

static void expect_error(const char *yaml, const char *needle) {
    bv_config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(apply(&c, yaml, err), -1);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
    config_free(&c);
}

static void test_yaml_errors_name_the_key(void **state) {
    (void)state;
    expect_error("bogus: 1\n", "'bogus'");
    expect_error("tcp:\n  portt: 1\n", "'tcp.portt'");
    expect_error("tcp: {port: 70000}\n", "tcp.port");
    expect_error("tcp: {port: -1}\n", "tcp.port");
    expect_error("listen_addr: nowhere\n", "listen_addr");
    expect_error("log_level: chatty\n", "log_level");
    expect_error("durability: maybe\n", "durability");
    expect_error("site: {public_tables: 5}\n", "site.public_tables");
    expect_error("site: {public_tables: [[1]]}\n", "site.public_tables[0]");
    expect_error("- a\n- b\n", "mapping");
    expect_error("a: [\n", "line");
    expect_error("memory_only: perhaps\n", "memory_only");
    expect_error("wal: {tick_ms: 0}\n", "wal.tick_ms");
}

static void test_precedence(void **state) {
    (void)state;
    bv_config c;
    bv_cli cli;
    char err[512];
    const char *path = "/tmp/beava_test_config.yaml";
    FILE *f = fopen(path, "w");
    fputs("listen_addr: 127.0.0.1:1111\nadmin_addr: 127.0.0.1:2222\nlog_level: warn\n", f);
    fclose(f);
    setenv("BEAVA_ADMIN_ADDR", "127.0.0.1:3333", 1);
    setenv("BEAVA_TEST_MODE", "yes", 1);       /* only exactly "1" enables it */
    char *argv[] = { "beava", "--config", (char *)path, "--log-level", "debug", "--tcp-addr", "127.0.0.1:0", NULL };
    assert_int_equal(config_load(&c, &cli, 7, argv, err, sizeof err), 0);
    assert_string_equal(c.http_addr, "127.0.0.1:1111");   /* YAML */
    assert_string_equal(c.admin_addr, "127.0.0.1:3333");  /* env beats YAML */
    assert_string_equal(c.log_level, "debug");            /* flag beats YAML */
    assert_int_equal(c.tcp_port, 0);
    assert_false(c.test_mode);
    config_free(&c);
    setenv("BEAVA_TEST_MODE", "1", 1);
    char *argv2[] = { "beava", "--admin-addr=127.0.0.1:4444", "quickstart", "--no-file", NULL };
    assert_int_equal(config_load(&c, &cli, 4, argv2, err, sizeof err), 0);
    assert_true(c.test_mode);
    assert_string_equal(c.admin_addr, "127.0.0.1:4444");  /* flag beats env */
    assert_int_equal(cli.command, CMD_QUICKSTART);
    assert_true(cli.quickstart_no_file);
    config_free(&c);
    char *argv3[] = { "beava", "--shards", "many", NULL };
    assert_int_equal(config_load(&c, &cli, 3, argv3, err, sizeof err), -1);
    assert_non_null(strstr(err, "--shards"));
    config_free(&c);
    unsetenv("BEAVA_ADMIN_ADDR");
    unsetenv("BEAVA_TEST_MODE");
    unlink(path);
}

/* The embed rule: no data dir named, a WAL or snapshot dir named -> the data dir is the
 * WAL dir (else the snapshot dir); a data dir named by any layer wins. */
static void test_data_dir_follows_the_wal(void **state) {
    (void)state;
    bv_config c;
    bv_cli cli;
    char err[512], wal[PATH_MAX], snap[PATH_MAX];
    char *argv[] = { "beava", "--config", "/dev/null", NULL };
    setenv("BEAVA_WAL_DIR", "/tmp/e/wal", 1);
    setenv("BEAVA_SNAPSHOT_DIR", "/tmp/e/snapshots", 1);
    assert_int_equal(config_load(&c, &cli, 3, argv, err, sizeof err), 0);
    assert_string_equal(c.data_dir, "/tmp/e/wal");
    config_wal_dir(&c, wal, sizeof wal);
    config_snapshot_dir(&c, snap, sizeof snap);
    assert_string_equal(wal, "/tmp/e/wal");
    assert_string_equal(snap, "/tmp/e/snapshots");
    config_free(&c);
    unsetenv("BEAVA_WAL_DIR");
    assert_int_equal(config_load(&c, &cli, 3, argv, err, sizeof err), 0);
    assert_string_equal(c.data_dir, "/tmp/e/snapshots");
    config_wal_dir(&c, wal, sizeof wal);
    assert_string_equal(wal, "/tmp/e/snapshots/wal");
    config_free(&c);
    char *argv2[] = { "beava", "--data-dir", "/tmp/d", NULL };
    assert_int_equal(config_load(&c, &cli, 3, argv2, err, sizeof err), 0);
    assert_string_equal(c.data_dir, "/tmp/d");
    config_free(&c);
    setenv("BEAVA_DATA_DIR", "/tmp/envd", 1);
    assert_int_equal(config_load(&c, &cli, 3, argv, err, sizeof err), 0);
    assert_string_equal(c.data_dir, "/tmp/envd");
    config_free(&c);
    unsetenv("BEAVA_DATA_DIR");
    unsetenv("BEAVA_SNAPSHOT_DIR");
    assert_int_equal(config_load(&c, &cli, 3, argv, err, sizeof err), 0);
    assert_string_equal(c.data_dir, "./.beava");
    config_free(&c);
}

/* The reference's variables: sync mode maps to durability (BEAVA_DURABILITY wins); the
 * no-effect integers are validated; the others accept anything. */
static void test_reference_variables(void **state) {
    (void)state;
    bv_config c;
    bv_cli cli;
    char err[512];
    char *argv[] = { "beava", NULL };
    setenv("BEAVA_WAL_SYNC_MODE", "per-event", 1);
    assert_int_equal(config_load(&c, &cli, 1, argv, err, sizeof err), 0);
    assert_int_equal(c.durability, DURABILITY_SYNC);
    config_free(&c);
    setenv("BEAVA_DURABILITY", "batch", 1);
    assert_int_equal(config_load(&c, &cli, 1, argv, err, sizeof err), 0);
    assert_int_equal(c.durability, DURABILITY_BATCH);
    config_free(&c);
    unsetenv("BEAVA_DURABILITY");
    setenv("BEAVA_WAL_SYNC_MODE", "always", 1);
    assert_int_equal(config_load(&c, &cli, 1, argv, err, sizeof err), -1);
    assert_non_null(strstr(err, "BEAVA_WAL_SYNC_MODE"));
    config_free(&c);
    unsetenv("BEAVA_WAL_SYNC_MODE");
    setenv("BEAVA_WAL_FSYNC_BYTES", "1MB", 1);
    assert_int_equal(config_load(&c, &cli, 1, argv, err, sizeof err), -1);
    assert_non_null(strstr(err, "BEAVA_WAL_FSYNC_BYTES"));
    config_free(&c);
    setenv("BEAVA_WAL_FSYNC_BYTES", "65536", 1);
    setenv("BEAVA_IO_BACKEND", "anything", 1);
    assert_int_equal(config_load(&c, &cli, 1, argv, err, sizeof err), 0);
    assert_int_equal(c.wal_fsync_bytes, 65536);
    config_free(&c);
    setenv("BEAVA_DEDUPE_SWEEP_SECS", "often", 1);
    assert_int_equal(config_load(&c, &cli, 1, argv, err, sizeof err), -1);
    assert_non_null(strstr(err, "BEAVA_DEDUPE_SWEEP_SECS"));
    config_free(&c);
    unsetenv("BEAVA_DEDUPE_SWEEP_SECS");
    unsetenv("BEAVA_WAL_FSYNC_BYTES");
    unsetenv("BEAVA_IO_BACKEND");
    const char *yaml = "durability: {wal_sync_mode: per_event, wal_fsync_bytes: 7}\n";
    config_defaults(&c);
    assert_int_equal(config_apply_yaml(&c, yaml, strlen(yaml), "t.yaml", err, sizeof err), 0);
    assert_int_equal(c.durability, DURABILITY_SYNC);
    assert_int_equal(c.wal_fsync_bytes, 7);
    config_free(&c);
}

static void test_split_addr(void **state) {
    (void)state;
    char host[64];
    int port;
    assert_int_equal(config_split_addr("127.0.0.1:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 0);
    assert_int_equal(config_split_addr("[::1]:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(config_split_addr("localhost:65536", host, sizeof host, &port), -1);
    assert_int_equal(config_split_addr(":80", host, sizeof host, &port), -1);
    assert_int_equal(config_split_addr("host", host, sizeof host, &port), -1);
    assert_int_equal(config_split_addr("h:8a", host, sizeof host, &port), -1);
}

/* --accept-data-loss: flag, env and YAML; off by default. */
static void test_accept_data_loss(void **state) {
    (void)state;
    bv_config c;
    bv_cli cli;
    char err[512];
    char *plain[] = { "beava", NULL };
    assert_int_equal(config_load(&c, &cli, 1, plain, err, sizeof err), 0);
    assert_false(c.accept_data_loss);
    config_free(&c);
    char *flag[] = { "beava", "--accept-data-loss", NULL };
    assert_int_equal(config_load(&c, &cli, 2, flag, err, sizeof err), 0);
    assert_true(c.accept_data_loss);
    config_free(&c);
    setenv("BEAVA_ACCEPT_DATA_LOSS", "true", 1);
    assert_int_equal(config_load(&c, &cli, 1, plain, err, sizeof err), 0);
    assert_true(c.accept_data_loss);
    config_free(&c);
    setenv("BEAVA_ACCEPT_DATA_LOSS", "sometimes", 1);
    assert_int_equal(config_load(&c, &cli, 1, plain, err, sizeof err), -1);
    assert_non_null(strstr(err, "BEAVA_ACCEPT_DATA_LOSS"));
    config_free(&c);
    unsetenv("BEAVA_ACCEPT_DATA_LOSS");
    config_defaults(&c);
    assert_int_equal(apply(&c, "recovery: {accept_data_loss: true}\n", err), 0);
    assert_true(c.accept_data_loss);
    config_free(&c);
}

/* The cluster section: YAML, env and flags; checked as a whole; absent = off. */
static int load_args(bv_config *c, int argc, char **argv, char *err) {
    bv_cli cli;
    return config_load(c, &cli, argc, argv, err, 512);
}

static void expect_load_error(int argc, char **argv, const char *needle) {
    bv_config c;
    char err[512];
    assert_int_equal(load_args(&c, argc, argv, err), -1);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
    config_free(&c);
}

static void test_cluster_section(void **state) {
    (void)state;
    bv_config c;
    char err[512];
    /* off by default: nothing about it changes */
    char *plain[] = { "beava", NULL };
    assert_int_equal(load_args(&c, 1, plain, err), 0);
    assert_false(config_cluster_enabled(&c));
    assert_int_equal(c.cluster_partitions, 64);
    assert_int_equal(c.cluster_replicas, 2);
    assert_string_equal(c.cluster_name, "beava");
    config_free(&c);
    /* YAML */
    config_defaults(&c);
    assert_int_equal(apply(&c,
        "cluster:\n  nats_url: nats://10.0.0.1:4222,nats://10.0.0.2:4222\n  name: prod\n  node_id: b\n"
        "  nodes: [a, b, c]\n  partitions: 16\n  replicas: 3\n  stream_replicas: 3\n  stream_max_age_s: 86400\n"
        "  publish_timeout_ms: 2000\n", err), 0);
    assert_true(config_cluster_enabled(&c));
    assert_string_equal(c.cluster_nats_url, "nats://10.0.0.1:4222,nats://10.0.0.2:4222");
    assert_string_equal(c.cluster_name, "prod");
    assert_string_equal(c.cluster_node_id, "b");
    assert_int_equal(c.ncluster_nodes, 3);
    assert_string_equal(c.cluster_nodes[2], "c");
    assert_int_equal(c.cluster_partitions, 16);
    assert_int_equal(c.cluster_replicas, 3);
    assert_int_equal(c.cluster_stream_replicas, 3);
    assert_int_equal(c.cluster_stream_max_age_s, 86400);
    assert_int_equal(c.cluster_publish_timeout_ms, 2000);
    config_free(&c);
    expect_error("cluster:\n  partitions: 0\n", "'cluster.partitions'");
    expect_error("cluster:\n  nodez: [a]\n", "'cluster.nodez'");
    expect_error("cluster:\n  nodes: a\n", "'cluster.nodes'");
    /* env, then flags over env */
    setenv("BEAVA_CLUSTER_NATS_URL", "nats://127.0.0.1:4222", 1);
    setenv("BEAVA_CLUSTER_NODE_ID", "n1", 1);
    setenv("BEAVA_CLUSTER_NODES", "n1,n2,n3", 1);
    setenv("BEAVA_CLUSTER_PARTITIONS", "8", 1);
    assert_int_equal(load_args(&c, 1, plain, err), 0);
    assert_true(config_cluster_enabled(&c));
    assert_int_equal(c.ncluster_nodes, 3);
    assert_string_equal(c.cluster_nodes[1], "n2");
    assert_int_equal(c.cluster_partitions, 8);
    config_free(&c);
    char *flags[] = { "beava", "--cluster-node-id", "n3", "--cluster-nodes=n3,n4", "--cluster-name", "x_1", NULL };
    assert_int_equal(load_args(&c, 6, flags, err), 0);
    assert_string_equal(c.cluster_node_id, "n3");
    assert_int_equal(c.ncluster_nodes, 2);
    assert_string_equal(c.cluster_name, "x_1");
    config_free(&c);
    /* checked as a whole, with clear errors */
    char *notmember[] = { "beava", "--cluster-node-id", "n9", NULL };
    expect_load_error(3, notmember, "not one of cluster.nodes");
    char *badid[] = { "beava", "--cluster-node-id", "n.1", NULL };
    expect_load_error(3, badid, "cluster.node_id 'n.1'");
    char *dup[] = { "beava", "--cluster-nodes", "n1,n2,n1", NULL };
    expect_load_error(3, dup, "listed twice");
    char *empty_item[] = { "beava", "--cluster-nodes", "n1,,n2", NULL };
    expect_load_error(3, empty_item, "empty");
    char *replicas[] = { "beava", "--cluster-nodes", "n1", NULL };
    setenv("BEAVA_CLUSTER_REPLICAS", "2", 1);
    expect_load_error(3, replicas, "cluster.replicas 2 is more than the 1 nodes");
    unsetenv("BEAVA_CLUSTER_REPLICAS");
    char *mem[] = { "beava", "--memory-only", NULL };
    expect_load_error(2, mem, "memory_only");
    unsetenv("BEAVA_CLUSTER_NODE_ID");
    expect_load_error(1, plain, "cluster.node_id is required");
    unsetenv("BEAVA_CLUSTER_NATS_URL");
    char *orphan[] = { "beava", "--cluster-node-id", "n1", NULL };
    expect_load_error(3, orphan, "cluster.nats_url is empty");
    unsetenv("BEAVA_CLUSTER_NODES");
    unsetenv("BEAVA_CLUSTER_PARTITIONS");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_keys),
        cmocka_unit_test(test_yaml_errors_name_the_key),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_split_addr),
        cmocka_unit_test(test_accept_data_loss),
        cmocka_unit_test(test_data_dir_follows_the_wal),
        cmocka_unit_test(test_reference_variables),
        cmocka_unit_test(test_cluster_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
