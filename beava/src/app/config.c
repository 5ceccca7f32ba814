/*
 * config.c - configuration layers (see config.h).
 *
 * One table (config_keys[]) describes every setting: its YAML path, its environment
 * variable, its CLI flag, its type and where it lives in bv_config. The YAML walker,
 * the environment pass and the flag parser all go through config_set(), so a value is
 * validated the same way whichever layer supplies it. The YAML `durability` key is
 * both the ack mode (a scalar: batch|sync) and, as in the reference, a
 * mapping of storage knobs; both forms are accepted.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "log.h"

typedef enum key_type {
    KT_ADDR, KT_HOST, KT_PATH, KT_BOOL, KT_U32, KT_U64, KT_PORT, KT_LEVEL, KT_DURABILITY,
    KT_STRLIST, KT_ENV_BOOL_STRICT1, KT_ENV_GOV, KT_MS_TO_S, KT_SYNC_MODE,
    KT_NOEFFECT_U64,         /* the reference's knob: must be an integer, has no effect here */
    KT_NOEFFECT,             /* the reference's knob: any value, has no effect here */
} key_type;

typedef struct config_key {
    const char *yaml;        /* dotted path, NULL if not settable from YAML */
    const char *env;         /* NULL if no env var */
    const char *flag;        /* "--http-addr", NULL if no flag */
    key_type type;
    size_t offset;
    size_t size;             /* for strings: buffer size; for lists: offset of the count */
    uint64_t min, max;       /* numeric range */
    const char *help;
} config_key;

#define OFF(f) offsetof(bv_config, f)
#define SZ(f) sizeof(((bv_config *)0)->f)

static const config_key config_keys[] = {
    { "listen_addr", "BEAVA_LISTEN_ADDR", "--http-addr", KT_ADDR, OFF(http_addr), SZ(http_addr), 0, 0,
      "HTTP data plane address (default 127.0.0.1:8080; port 0 = OS-assigned)" },
    { "admin_addr", "BEAVA_ADMIN_ADDR", "--admin-addr", KT_ADDR, OFF(admin_addr), SZ(admin_addr), 0, 0,
      "admin sidecar address (default 127.0.0.1:8090)" },
    { "log_level", "BEAVA_LOG_LEVEL", "--log-level", KT_LEVEL, OFF(log_level), SZ(log_level), 0, 0,
      "trace|debug|info|warn|error (default info)" },
    { "tcp.enabled", "BEAVA_TCP_ENABLED", NULL, KT_BOOL, OFF(tcp_enabled), 0, 0, 0,
      "bind the framed TCP listener (default true)" },
    { "tcp.host", "BEAVA_TCP_HOST", NULL, KT_HOST, OFF(tcp_host), SZ(tcp_host), 0, 0,
      "framed TCP host (default 127.0.0.1)" },
    { "tcp.port", "BEAVA_TCP_PORT", NULL, KT_PORT, OFF(tcp_port), 0, 0, 65535,
      "framed TCP port (default 8081)" },
    { "tcp.max_frame_bytes", "BEAVA_TCP_MAX_FRAME_BYTES", NULL, KT_U32, OFF(tcp_max_frame_bytes), 0, 1, 64u << 20,
      "largest TCP frame payload (default 4194304)" },
    { "tcp.max_connections", "BEAVA_TCP_MAX_CONNECTIONS", NULL, KT_U32, OFF(tcp_max_connections), 0, 1, 1000000,
      "open TCP connections at most; more are closed at once and counted" },
    { "tcp.idle_timeout_s", "BEAVA_TCP_IDLE_TIMEOUT_S", NULL, KT_U32, OFF(tcp_idle_timeout_s), 0, 0, 86400,
      "close a TCP connection idle this long (0 = never)" },
    { "tcp.frame_timeout_ms", "BEAVA_TCP_FRAME_TIMEOUT_MS", NULL, KT_U32, OFF(tcp_frame_timeout_ms), 0, 100, 3600000,
      "a started TCP frame must arrive whole within this" },
    { "limits.partial_body_budget_bytes", "BEAVA_PARTIAL_BODY_BUDGET_BYTES", NULL, KT_U64, OFF(partial_body_budget_bytes),
      0, 1u << 20, 1ull << 40, "bytes of partially received bodies and frames held at once, all connections" },
    { "data_dir", "BEAVA_DATA_DIR", "--data-dir", KT_PATH, OFF(data_dir), SZ(data_dir), 0, 0,
      "data directory: WAL in <dir>/wal, snapshots in <dir>/snapshots (default ./.beava)" },
    { "wal.dir", "BEAVA_WAL_DIR", NULL, KT_PATH, OFF(wal_dir), SZ(wal_dir), 0, 0,
      "WAL directory (default <data_dir>/wal)" },
    { "snapshot.dir", "BEAVA_SNAPSHOT_DIR", NULL, KT_PATH, OFF(snapshot_dir), SZ(snapshot_dir), 0, 0,
      "snapshot directory (default <data_dir>/snapshots)" },
    { "memory_only", "BEAVA_MEMORY_ONLY", "--memory-only", KT_BOOL, OFF(memory_only), 0, 0, 0,
      "keep everything in memory: no WAL, no snapshots" },
    { "recovery.accept_data_loss", "BEAVA_ACCEPT_DATA_LOSS", "--accept-data-loss", KT_BOOL, OFF(accept_data_loss), 0, 0, 0,
      "start even though WAL records no snapshot covers are missing (the old files are kept aside)" },
    { "test_mode", "BEAVA_TEST_MODE", "--test-mode", KT_ENV_BOOL_STRICT1, OFF(test_mode), 0, 0, 0,
      "enable POST /reset (env: exactly \"1\")" },
    { "memory_gov_enforce", "BEAVA_MEMORY_GOV_ENFORCE", NULL, KT_ENV_GOV, OFF(memory_gov_enforce), 0, 0, 0,
      "reject unbounded lifetime operators at register (default on; env \"0\" = off)" },
    { "shards", "BEAVA_SHARDS", "--shards", KT_U32, OFF(shards), 0, 0, 256,
      "apply shards (default 0 = two per core)" },
    { "shard_queue", "BEAVA_SHARD_QUEUE", NULL, KT_U32, OFF(shard_queue), 0, 16, 1u << 20,
      "tasks queued per shard before pushes get 503 overloaded (default 4096)" },
    { "io_threads", "BEAVA_IO_THREADS", "--io-threads", KT_U32, OFF(io_threads), 0, 0, 256,
      "I/O threads (default 0 = automatic)" },
    { "durability.wal_sync_mode", "BEAVA_WAL_SYNC_MODE", NULL, KT_SYNC_MODE, OFF(durability), 0, 0, 0,
      "periodic (= durability batch) | per-event (= durability sync); BEAVA_DURABILITY wins" },
    { "durability.mode", "BEAVA_DURABILITY", "--durability", KT_DURABILITY, OFF(durability), 0, 0, 0,
      "batch (ack after apply, on disk within one tick) | sync (ack after fsync)" },
    { "wal.tick_ms", "BEAVA_WAL_TICK_MS", NULL, KT_U32, OFF(wal_tick_ms), 0, 1, 1000,
      "WAL group-commit interval in ms (default 2)" },
    { "wal.fsync_bytes", "BEAVA_WAL_FSYNC_BYTES", NULL, KT_U64, OFF(wal_fsync_bytes), 0, 0, 1ull << 30,
      "write and fsync a WAL batch before its tick once it holds this many bytes (default 1048576, 0 = default)" },
    { "wal.segment_bytes", "BEAVA_WAL_SEGMENT_BYTES", NULL, KT_U64, OFF(wal_segment_bytes), 0, 1u << 20, 1ull << 40,
      "WAL segment size before rotation (default 67108864)" },
    { "snapshot.interval_s", "BEAVA_SNAPSHOT_INTERVAL_S", NULL, KT_U32, OFF(snapshot_interval_s), 0, 1, 86400,
      "seconds between snapshots (default 60)" },
    { "snapshot.retain", "BEAVA_SNAPSHOT_RETAIN_COUNT", NULL, KT_U32, OFF(snapshot_retain), 0, 1, 1000,
      "snapshots kept (default 2)" },
    { "limits.max_body_bytes", NULL, NULL, KT_U64, OFF(max_body_bytes), 0, 1024, 64ull << 20,
      "largest HTTP body (default 4194304)" },
    /* HTTP listener limits (http.c); the body budget is limits.partial_body_budget_bytes */
    { "http.threads", "BEAVA_HTTP_THREADS", "--http-threads", KT_U32, OFF(http_threads), 0, 0, 256,
      "HTTP data-plane I/O threads (default 0 = number of cores)" },
    { "http.max_connections", "BEAVA_HTTP_MAX_CONNECTIONS", NULL, KT_U32, OFF(http_max_connections), 0, 1, 1000000,
      "open connections per HTTP listener; more are closed at accept (default 10000)" },
    { "http.max_connections_per_ip", "BEAVA_HTTP_MAX_CONNECTIONS_PER_IP", NULL, KT_U32,
      OFF(http_max_connections_per_ip), 0, 0, 1000000, "open connections per client address (default 0 = no limit)" },
    { "http.header_timeout_ms", "BEAVA_HTTP_HEADER_TIMEOUT_MS", NULL, KT_U32, OFF(http_header_timeout_ms), 0, 100,
      3600000, "time to send a request's line and headers (default 10000)" },
    { "http.body_timeout_ms", "BEAVA_HTTP_BODY_TIMEOUT_MS", NULL, KT_U32, OFF(http_body_timeout_ms), 0, 100, 3600000,
      "time to send a request body once the headers are in (default 30000)" },
    { "http.idle_timeout_s", "BEAVA_HTTP_IDLE_TIMEOUT_S", NULL, KT_U32, OFF(http_idle_timeout_s), 0, 1, 86400,
      "keep-alive connection closed after this long without a request (default 60)" },
    { "site.dir", "BEAVA_SITE_DIR", "--site-dir", KT_PATH, OFF(site_dir), SZ(site_dir), 0, 0,
      "serve this directory at / on the data port (default: none)" },
    { "site.public_tables", NULL, NULL, KT_STRLIST, OFF(public_tables), OFF(npublic_tables), 0, 0,
      "tables readable through POST /api/get" },
    { "site.public_events", NULL, NULL, KT_STRLIST, OFF(public_events), OFF(npublic_events), 0, 0,
      "events accepted through POST /api/push/<event>" },
    { "security.admin_token_file", "BEAVA_ADMIN_TOKEN_FILE", NULL, KT_PATH, OFF(admin_token_file), SZ(admin_token_file), 0, 0,
      "file holding a bearer token required by /register, /reset and admin /snapshot" },
    /* Cluster mode (README "Cluster"): off unless cluster.nats_url is set. */
    { "cluster.nats_url", "BEAVA_CLUSTER_NATS_URL", "--cluster-nats-url", KT_PATH, OFF(cluster_nats_url),
      SZ(cluster_nats_url), 0, 0, "NATS server URLs, comma-separated; setting it turns cluster mode on" },
    { "cluster.name", "BEAVA_CLUSTER_NAME", "--cluster-name", KT_PATH, OFF(cluster_name), SZ(cluster_name), 0, 0,
      "cluster name: prefix of the stream and its subjects (default beava)" },
    { "cluster.node_id", "BEAVA_CLUSTER_NODE_ID", "--cluster-node-id", KT_PATH, OFF(cluster_node_id),
      SZ(cluster_node_id), 0, 0, "this node's id, one of cluster.nodes" },
    { "cluster.nodes", "BEAVA_CLUSTER_NODES", "--cluster-nodes", KT_STRLIST, OFF(cluster_nodes), OFF(ncluster_nodes),
      0, 0, "every node id of the cluster (YAML list; env and flag: comma-separated)" },
    { "cluster.partitions", "BEAVA_CLUSTER_PARTITIONS", NULL, KT_U32, OFF(cluster_partitions), 0, 1, 4096,
      "partitions of the entity space, fixed when the cluster is created (default 64)" },
    { "cluster.replicas", "BEAVA_CLUSTER_REPLICAS", NULL, KT_U32, OFF(cluster_replicas), 0, 1,
      CONFIG_CLUSTER_NODES_MAX, "beava nodes owning each partition (default 2, at most the node count)" },
    { "cluster.stream_replicas", "BEAVA_CLUSTER_STREAM_REPLICAS", NULL, KT_U32, OFF(cluster_stream_replicas), 0, 1, 5,
      "JetStream replicas of the cluster's stream (default 1; 3 on a 3-server NATS cluster)" },
    { "cluster.stream_max_age_s", "BEAVA_CLUSTER_STREAM_MAX_AGE_S", NULL, KT_U64, OFF(cluster_stream_max_age_s), 0, 0,
      UINT64_MAX / 1000000000ull, "stream retention in seconds (default 0 = keep everything)" },
    { "cluster.stream_max_msgs", "BEAVA_CLUSTER_STREAM_MAX_MSGS", NULL, KT_U64, OFF(cluster_stream_max_msgs), 0, 0,
      INT64_MAX, "stream retention in messages (default 0 = no limit); membership lives in its own stream" },
    { "cluster.advertise_admin", "BEAVA_CLUSTER_ADVERTISE_ADMIN", "--cluster-advertise-admin", KT_ADDR,
      OFF(cluster_advertise_admin), SZ(cluster_advertise_admin), 0, 0,
      "host:port peers reach this node's admin port at (peer snapshots; default: the bound admin address)" },
    { "cluster.advertise_data", "BEAVA_CLUSTER_ADVERTISE_DATA", "--cluster-advertise-data", KT_ADDR,
      OFF(cluster_advertise_data), SZ(cluster_advertise_data), 0, 0,
      "host:port clients reach this node's HTTP data port at (GET /cluster; default: the bound address)" },
    { "cluster.peer_snapshot_max_mb", "BEAVA_CLUSTER_PEER_SNAPSHOT_MAX_MB", NULL, KT_U32, OFF(cluster_peer_snapshot_max_mb),
      0, 1, 1048576, "largest partition snapshot fetched from a peer, in MiB (default 1024)" },
    { "cluster.publish_timeout_ms", "BEAVA_CLUSTER_PUBLISH_TIMEOUT_MS", NULL, KT_U32, OFF(cluster_publish_timeout_ms), 0,
      100, 600000, "wait this long for JetStream to acknowledge a publish (default 5000)" },
    { "cluster.record_format", "BEAVA_CLUSTER_RECORD_FORMAT", NULL, KT_U32, OFF(cluster_record_format), 0, 1, 2,
      "event records published to the stream: 1 = fields by name, read by every build (default); 2 = fields by "
      "schema position, about half the bytes, read only by builds with WAL format 2: set it once every node "
      "runs one (README \"Cluster\")" },
    { "cluster.read_wait_ms", "BEAVA_CLUSTER_READ_WAIT_MS", NULL, KT_U32, OFF(cluster_read_wait_ms), 0, 0, 600000,
      "a get waits this long for the partition's owner to catch up with the stream (default 2000; 0 = read the "
      "owner as it is)" },
    { "cluster.creds_file", "BEAVA_CLUSTER_CREDS_FILE", NULL, KT_PATH, OFF(cluster_creds_file), SZ(cluster_creds_file),
      0, 0, "NATS user credentials file (default none)" },
    { "cluster.tls_ca_file", "BEAVA_CLUSTER_TLS_CA_FILE", NULL, KT_PATH, OFF(cluster_tls_ca_file),
      SZ(cluster_tls_ca_file), 0, 0, "CA certificates trusted for TLS to NATS (default none)" },
    /* Reference-compatible keys of the `durability:` mapping: the same settings as above
     * under the reference's names (help NULL: listed once, under their own names). */
    { "durability.wal_dir", NULL, NULL, KT_PATH, OFF(wal_dir), SZ(wal_dir), 0, 0, NULL },
    { "durability.snapshot_dir", NULL, NULL, KT_PATH, OFF(snapshot_dir), SZ(snapshot_dir), 0, 0, NULL },
    { "durability.wal_fsync_interval_ms", "BEAVA_WAL_FSYNC_INTERVAL_MS", NULL, KT_U32, OFF(wal_tick_ms), 0, 1, 1000,
      "same as BEAVA_WAL_TICK_MS (the reference's name)" },
    { "durability.wal_fsync_bytes", NULL, NULL, KT_U64, OFF(wal_fsync_bytes), 0, 0, 1ull << 30, NULL },
    { "durability.wal_segment_bytes", NULL, NULL, KT_U64, OFF(wal_segment_bytes), 0, 1u << 20, 1ull << 40, NULL },
    { "durability.snapshot_interval_ms", "BEAVA_SNAPSHOT_INTERVAL_MS", NULL, KT_MS_TO_S, OFF(snapshot_interval_s), 0, 1000, 86400000,
      "snapshot interval in ms, rounded up to whole seconds (the reference's name)" },
    { "durability.snapshot_retain_count", NULL, NULL, KT_U32, OFF(snapshot_retain), 0, 1, 1000, NULL },
    /* The reference's knobs for machinery beava does not have. Each is accepted (the
     * integer ones validated as the reference validates them, so a configuration that
     * the reference refuses is refused here too) and changes nothing; README
     * "Configuration" says why for each. */
    { "durability.dedupe_sweep_interval_secs", "BEAVA_DEDUPE_SWEEP_SECS", NULL, KT_NOEFFECT_U64, 0, 0, 0, UINT64_MAX,
      "no effect: expired dedupe entries are purged whenever the dedupe cache doubles" },
    { NULL, "BEAVA_WAL_BUFFERS", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: the WAL writer double-buffers" },
    { NULL, "BEAVA_WAL_BUFFER_SIZE_MB", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: WAL buffers grow as needed" },
    { NULL, "BEAVA_SNAPSHOT_MIN_EVENTS", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: a snapshot is taken every interval when anything was applied since the last" },
    { NULL, "BEAVA_SNAPSHOT_FORK", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: periodic snapshots are always written by a forked child" },
    { NULL, "BEAVA_SNAPSHOT_FORK_WAIT_TIMEOUT_SECS", NULL, KT_NOEFFECT_U64, 0, 0, 1, UINT64_MAX,
      "no effect: the server waits for its snapshot child until it exits" },
    { NULL, "BEAVA_TRACE_APPLY_TIMING", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: there is no per-stage timing trace (snapshot timings are in /metrics)" },
    { NULL, "BEAVA_TRACE_AGG_TIMING", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: there is no per-stage timing trace" },
    { NULL, "BEAVA_CRASH_AT", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: crash points are injected by the tests with signals and fault hooks" },
    { NULL, "BEAVA_IO_BACKEND", NULL, KT_NOEFFECT, 0, 0, 0, 0,
      "no effect: one I/O backend" },
};

#define NKEYS (sizeof config_keys / sizeof config_keys[0])

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void config_defaults(bv_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->http_addr, sizeof c->http_addr, "127.0.0.1:8080");
    snprintf(c->admin_addr, sizeof c->admin_addr, "127.0.0.1:8090");
    c->tcp_enabled = true;
    snprintf(c->tcp_host, sizeof c->tcp_host, "127.0.0.1");
    c->tcp_port = 8081;
    c->tcp_max_frame_bytes = 4u << 20;
    c->tcp_max_connections = 10000;
    c->tcp_idle_timeout_s = 300;
    c->tcp_frame_timeout_ms = 30000;
    c->partial_body_budget_bytes = 512ull << 20;
    snprintf(c->log_level, sizeof c->log_level, "info");
    snprintf(c->data_dir, sizeof c->data_dir, "./.beava");
    c->memory_gov_enforce = true;
    c->durability = DURABILITY_BATCH;
    c->wal_tick_ms = 2;
    c->wal_segment_bytes = 64ull << 20;
    c->wal_fsync_bytes = 1u << 20;
    c->snapshot_interval_s = 60;
    c->snapshot_retain = 2;
    c->max_body_bytes = 4u << 20;
    c->http_max_connections = 10000;
    c->http_header_timeout_ms = 10000;
    c->http_body_timeout_ms = 30000;
    c->http_idle_timeout_s = 60;
    c->shard_queue = 4096;
    snprintf(c->cluster_name, sizeof c->cluster_name, "beava");
    c->cluster_partitions = 64;
    c->cluster_replicas = 2;
    c->cluster_stream_replicas = 1;
    c->cluster_publish_timeout_ms = 5000;
    c->cluster_read_wait_ms = 2000;
    c->cluster_record_format = 1;
    c->cluster_peer_snapshot_max_mb = 1024;
}

static void free_list(char **list, size_t n) {
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}

void config_free(bv_config *c) {
    free_list(c->public_tables, c->npublic_tables);
    free_list(c->public_events, c->npublic_events);
    free_list(c->cluster_nodes, c->ncluster_nodes);
    c->public_tables = c->public_events = c->cluster_nodes = NULL;
    c->npublic_tables = c->npublic_events = c->ncluster_nodes = 0;
}

int config_split_addr(const char *addr, char *host, size_t hostlen, int *port) {
    const char *colon;
    const char *hs = addr, *he;
    if (addr[0] == '[') {
        he = strchr(addr, ']');
        if (!he || he[1] != ':') return -1;
        hs = addr + 1;
        colon = he + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return -1;
        he = colon;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= hostlen) return -1;
    const char *ps = colon + 1;
    if (!*ps || strlen(ps) > 5) return -1;
    for (const char *p = ps; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    long v = strtol(ps, NULL, 10);
    if (v < 0 || v > 65535) return -1;
    memcpy(host, hs, hl);
    host[hl] = 0;
    *port = (int)v;
    return 0;
}

static int parse_bool(const char *v, bool *out) {
    static const char *const yes[] = { "1", "true", "TRUE", "True", "yes", "on" };
    static const char *const no[] = { "0", "false", "FALSE", "False", "no", "off" };
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(v, yes[i]) == 0) { *out = true; return 0; }
        if (strcmp(v, no[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

static int parse_u64(const char *v, uint64_t *out) {
    if (!*v) return -1;
    for (const char *p = v; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    errno = 0;
    unsigned long long x = strtoull(v, NULL, 10);
    if (errno == ERANGE) return -1;
    *out = x;
    return 0;
}

/* A list given as one scalar (env, flag): comma-separated, empty items refused. */
static int set_csv_list(bv_config *c, const config_key *k, const char *value, const char *where, char *err,
                        size_t errlen) {
    char ***listp = (char ***)((char *)c + k->offset);
    size_t *countp = (size_t *)((char *)c + k->size);
    free_list(*listp, *countp);
    *listp = NULL;
    *countp = 0;
    size_t n = 1;
    for (const char *p = value; *p; p++) n += *p == ',';
    if (n > 4096) return fail(err, errlen, "%s: too many entries (%zu, max 4096)", where, n);
    char **list = calloc(n, sizeof *list);
    if (!list) return fail(err, errlen, "%s: out of memory", where);
    const char *p = value;
    for (size_t i = 0; i < n; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len > 256) {
            free_list(list, i);
            return fail(err, errlen, "%s: item %zu of '%s' is empty or longer than 256 bytes", where, i + 1, value);
        }
        list[i] = strndup(p, len);
        if (!list[i]) { free_list(list, i); return fail(err, errlen, "%s: out of memory", where); }
        p = e ? e + 1 : p + len;
    }
    *listp = list;
    *countp = n;
    return 0;
}

/* Set one key from a textual value. `where` names the source for errors
 * (e.g. "config.yaml: key 'tcp.port'" or "env BEAVA_TCP_PORT"). */
static int config_set(bv_config *c, const config_key *k, const char *value, bool from_env,
                      const char *where, char *err, size_t errlen) {
    char *base = (char *)c;
    switch (k->type) {
    case KT_ADDR: {
        char host[CONFIG_ADDR_MAX];
        int port;
        if (config_split_addr(value, host, sizeof host, &port) != 0)
            return fail(err, errlen, "%s: '%s' is not a host:port address", where, value);
        /* fallthrough to copy */
    }
    /* FALLTHROUGH */
    case KT_HOST:
    case KT_PATH:
        if (strlen(value) >= k->size)
            return fail(err, errlen, "%s: value too long (%zu bytes, max %zu)", where, strlen(value), k->size - 1);
        if (k->type == KT_HOST && !*value)
            return fail(err, errlen, "%s: empty host", where);
        snprintf(base + k->offset, k->size, "%s", value);
        if (k->offset == OFF(data_dir)) c->data_dir_set = true;
        return 0;
    case KT_LEVEL:
        if (bv_log_level_parse(value) < 0)
            return fail(err, errlen, "%s: '%s' is not one of trace, debug, info, warn, error", where, value);
        snprintf(base + k->offset, k->size, "%s", value);
        return 0;
    case KT_BOOL: {
        bool b;
        if (from_env && strcmp(k->env, "BEAVA_TCP_ENABLED") == 0) {
            /* reference rule: 1/true (any case) = true, anything else = false */
            b = strcmp(value, "1") == 0 || strcasecmp(value, "true") == 0;
        } else if (parse_bool(value, &b) != 0) {
            return fail(err, errlen, "%s: '%s' is not a boolean (true/false)", where, value);
        }
        *(bool *)(base + k->offset) = b;
        return 0;
    }
    case KT_ENV_BOOL_STRICT1: {
        bool b;
        if (from_env) b = strcmp(value, "1") == 0;
        else if (parse_bool(value, &b) != 0)
            return fail(err, errlen, "%s: '%s' is not a boolean (true/false)", where, value);
        /* test mode can only be turned on by a layer, never off */
        if (b) *(bool *)(base + k->offset) = true;
        else if (!from_env) *(bool *)(base + k->offset) = false;
        return 0;
    }
    case KT_ENV_GOV: {
        bool b;
        if (from_env) b = strcmp(value, "0") != 0;
        else if (parse_bool(value, &b) != 0)
            return fail(err, errlen, "%s: '%s' is not a boolean (true/false)", where, value);
        *(bool *)(base + k->offset) = b;
        return 0;
    }
    case KT_PORT:
    case KT_U32:
    case KT_U64:
    case KT_MS_TO_S: {
        uint64_t v;
        if (parse_u64(value, &v) != 0)
            return fail(err, errlen, "%s: '%s' is not a non-negative integer", where, value);
        if (v < k->min || v > k->max)
            return fail(err, errlen, "%s: %llu is out of range [%llu, %llu]", where,
                        (unsigned long long)v, (unsigned long long)k->min, (unsigned long long)k->max);
        if (k->type == KT_PORT || k->type == KT_U32) {
            if (k->offset == OFF(tcp_port) || k->offset == OFF(shards) || k->offset == OFF(io_threads))
                *(int *)(base + k->offset) = (int)v;
            else
                *(uint32_t *)(base + k->offset) = (uint32_t)v;
        } else if (k->type == KT_MS_TO_S) {
            *(uint32_t *)(base + k->offset) = (uint32_t)((v + 999) / 1000);
        } else {
            *(uint64_t *)(base + k->offset) = v;
        }
        return 0;
    }
    case KT_SYNC_MODE:
        if (strcmp(value, "periodic") == 0) c->durability = DURABILITY_BATCH;
        else if (strcmp(value, "per-event") == 0 || strcmp(value, "perevent") == 0 || strcmp(value, "per_event") == 0)
            c->durability = DURABILITY_SYNC;
        else return fail(err, errlen, "%s: '%s' is not one of periodic, per-event", where, value);
        return 0;
    case KT_NOEFFECT_U64: {
        uint64_t v;
        if (parse_u64(value, &v) != 0 || v < k->min)
            return fail(err, errlen, "%s: '%s' is not an integer >= %llu", where, value, (unsigned long long)k->min);
        return 0;
    }
    case KT_NOEFFECT:
        return 0;
    case KT_DURABILITY:
        if (strcmp(value, "batch") == 0) c->durability = DURABILITY_BATCH;
        else if (strcmp(value, "sync") == 0) c->durability = DURABILITY_SYNC;
        else return fail(err, errlen, "%s: '%s' is not one of batch, sync", where, value);
        return 0;
    case KT_STRLIST:
        return set_csv_list(c, k, value, where, err, errlen);
    }
    return fail(err, errlen, "%s: unsupported key type", where);
}

static const config_key *key_by_yaml(const char *path) {
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].yaml && strcmp(config_keys[i].yaml, path) == 0) return &config_keys[i];
    return NULL;
}

static bool yaml_path_is_section(const char *path) {
    size_t n = strlen(path);
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].yaml && strncmp(config_keys[i].yaml, path, n) == 0 && config_keys[i].yaml[n] == '.')
            return true;
    return false;
}

static int set_list(bv_config *c, const config_key *k, yaml_document_t *doc, yaml_node_t *node,
                    const char *source, const char *path, char *err, size_t errlen) {
    char where[320];
    snprintf(where, sizeof where, "%s: key '%s'", source, path);
    if (node->type != YAML_SEQUENCE_NODE)
        return fail(err, errlen, "%s: expected a list of strings", where);
    char ***listp = (char ***)((char *)c + k->offset);
    size_t *countp = (size_t *)((char *)c + k->size);
    free_list(*listp, *countp);
    *listp = NULL;
    *countp = 0;
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n > 4096) return fail(err, errlen, "%s: too many entries (%zu, max 4096)", where, n);
    char **list = calloc(n ? n : 1, sizeof *list);
    if (!list) return fail(err, errlen, "%s: out of memory", where);
    size_t i = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        if (!item || item->type != YAML_SCALAR_NODE || item->data.scalar.length == 0 ||
            item->data.scalar.length > 256) {
            free_list(list, i);
            return fail(err, errlen, "%s: key '%s[%zu]': expected a non-empty string", source, path, i);
        }
        list[i] = strndup((const char *)item->data.scalar.value, item->data.scalar.length);
        if (!list[i]) { free_list(list, i); return fail(err, errlen, "%s: out of memory", where); }
        i++;
    }
    *listp = list;
    *countp = i;
    return 0;
}

static int walk_mapping(bv_config *c, yaml_document_t *doc, yaml_node_t *map, const char *prefix,
                        const char *source, int depth, char *err, size_t errlen) {
    if (depth > 4) return fail(err, errlen, "%s: nesting too deep at '%s'", source, prefix);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        if (!kn || kn->type != YAML_SCALAR_NODE || !vn)
            return fail(err, errlen, "%s: keys under '%s' must be plain strings", source, *prefix ? prefix : "<top>");
        char path[256];
        int pn = snprintf(path, sizeof path, "%s%s%.*s", prefix, *prefix ? "." : "",
                          (int)kn->data.scalar.length, (const char *)kn->data.scalar.value);
        if (pn < 0 || (size_t)pn >= sizeof path) return fail(err, errlen, "%s: key path too long", source);
        char where[320];
        snprintf(where, sizeof where, "%s: key '%s'", source, path);
        /* `durability: sync` is the scalar form of durability.mode */
        if (strcmp(path, "durability") == 0 && vn->type == YAML_SCALAR_NODE) {
            char v[32];
            snprintf(v, sizeof v, "%.*s", (int)vn->data.scalar.length, (const char *)vn->data.scalar.value);
            if (config_set(c, key_by_yaml("durability.mode"), v, false, where, err, errlen) != 0) return -1;
            continue;
        }
        const config_key *k = key_by_yaml(path);
        if (vn->type == YAML_MAPPING_NODE) {
            if (k || !yaml_path_is_section(path))
                return fail(err, errlen, "%s: unknown key '%s'", source, path);
            if (walk_mapping(c, doc, vn, path, source, depth + 1, err, errlen) != 0) return -1;
            continue;
        }
        if (!k) return fail(err, errlen, "%s: unknown key '%s'", source, path);
        if (k->type == KT_STRLIST) {
            if (set_list(c, k, doc, vn, source, path, err, errlen) != 0) return -1;
            continue;
        }
        if (vn->type != YAML_SCALAR_NODE)
            return fail(err, errlen, "%s: expected a single value", where);
        char value[PATH_MAX];
        if (vn->data.scalar.length >= sizeof value)
            return fail(err, errlen, "%s: value too long", where);
        memcpy(value, vn->data.scalar.value, vn->data.scalar.length);
        value[vn->data.scalar.length] = 0;
        if (config_set(c, k, value, false, where, err, errlen) != 0) return -1;
    }
    return 0;
}

int config_apply_yaml(bv_config *c, const char *text, size_t len, const char *source, char *err, size_t errlen) {
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = -1;
    if (!yaml_parser_initialize(&parser)) return fail(err, errlen, "%s: cannot initialise the YAML parser", source);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        fail(err, errlen, "%s: YAML error at line %zu column %zu: %s", source,
             parser.problem_mark.line + 1, parser.problem_mark.column + 1,
             parser.problem ? parser.problem : "syntax error");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = 0;                                  /* empty document (e.g. /dev/null) */
    } else if (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0) {
        rc = 0;
    } else if (root->type != YAML_MAPPING_NODE) {
        fail(err, errlen, "%s: the top level must be a mapping of keys", source);
    } else {
        rc = walk_mapping(c, &doc, root, "", source, 0, err, errlen);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

static int load_yaml_file(bv_config *c, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errlen, "config file not found: %s (%s)", path, strerror(errno));

    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (16u << 20)) { free(text); fclose(f); return fail(err, errlen, "%s: config file larger than 16 MiB", path); }
            char *p = realloc(text, cap);
            if (!p) { free(text); fclose(f); return fail(err, errlen, "%s: out of memory", path); }
            text = p;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    int ioerr = ferror(f);
    fclose(f);
    if (ioerr) { free(text); return fail(err, errlen, "%s: read error", path); }
    int rc = config_apply_yaml(c, text ? text : "", len, path, err, errlen);
    free(text);
    return rc;
}

static int apply_env(bv_config *c, char *err, size_t errlen) {
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (!k->env) continue;
        const char *v = getenv(k->env);
        if (!v) continue;
        char where[96];
        snprintf(where, sizeof where, "environment variable %s", k->env);
        if (config_set(c, k, v, true, where, err, errlen) != 0) return -1;
    }
    return 0;
}

void config_usage(FILE *out) {
    fputs("usage: beava [OPTIONS] [COMMAND]\n"
          "\n"
          "Real-time feature server: push events, read fresh per-entity features.\n"
          "\n"
          "Commands:\n"
          "  (none)                 run the server\n"
          "  probe [--admin-addr A] exit 0 iff the admin /ready answers 200 (healthcheck)\n"
          "  members add|remove ID [--admin-addr A]  (cluster) add or remove a node through any\n"
          "                         node's admin port: POST /cluster/members (README \"Cluster\")\n"
          "  members cancel [--admin-addr A]  abandon the membership change in progress\n"
          "  quickstart [--no-file] start an in-process server on ephemeral ports, register\n"
          "                         PageView/SiteMetrics, push 5 events, print the row and the\n"
          "                         curl commands to do the same by hand\n"
          "\n"
          "Options (flags > BEAVA_* environment > YAML > defaults):\n"
          "  -c, --config PATH      YAML configuration file (unknown keys are errors)\n"
          "  --http-addr ADDR       HTTP data plane (env BEAVA_LISTEN_ADDR, default 127.0.0.1:8080)\n"
          "  --tcp-addr ADDR        framed TCP listener (env BEAVA_TCP_HOST/BEAVA_TCP_PORT, default 127.0.0.1:8081)\n"
          "  --admin-addr ADDR      admin sidecar (env BEAVA_ADMIN_ADDR, default 127.0.0.1:8090)\n"
          "  --data-dir PATH        data directory (env BEAVA_DATA_DIR, default ./.beava)\n"
          "  --memory-only          no WAL, no snapshots\n"
          "  --accept-data-loss     start even though WAL records no snapshot covers are missing;\n"
          "                         the old files are kept in <data_dir>/data-loss-<time>/\n"
          "                         (env BEAVA_ACCEPT_DATA_LOSS)\n"
          "  --test-mode            enable POST /reset (env BEAVA_TEST_MODE=1)\n"
          "  --durability MODE      batch|sync (env BEAVA_DURABILITY, default batch)\n"
          "  --shards N             apply shards (env BEAVA_SHARDS, default: two per core)\n"
          "  --io-threads N         I/O threads (env BEAVA_IO_THREADS)\n"
          "  --http-threads N       HTTP data-plane I/O threads (env BEAVA_HTTP_THREADS, default: cores)\n"
          "  --log-level LEVEL      trace|debug|info|warn|error (env BEAVA_LOG_LEVEL)\n"
          "  --site-dir PATH        serve a static site at / (env BEAVA_SITE_DIR)\n"
          "  --cluster-nats-url U   cluster mode on NATS JetStream (env BEAVA_CLUSTER_NATS_URL)\n"
          "  --cluster-node-id ID   this node (env BEAVA_CLUSTER_NODE_ID)\n"
          "  --cluster-nodes A,B,C  every node id (env BEAVA_CLUSTER_NODES)\n"
          "  --cluster-name NAME    stream and subject prefix (env BEAVA_CLUSTER_NAME, default beava)\n"
          "  -h, --help             this text\n"
          "  -V, --version          version and build revision\n"
          "\n"
          "Files: the data dir holds LOCK and quarantine/; the WAL and snapshots default to\n"
          "<data dir>/wal and <data dir>/snapshots. When no data dir is given but a WAL or\n"
          "snapshot directory is (BEAVA_WAL_DIR / BEAVA_SNAPSHOT_DIR, wal.dir / snapshot.dir),\n"
          "the data dir is the WAL directory (else the snapshot directory): nothing is\n"
          "created in the current directory.\n"
          "\n"
          "Environment (each also a YAML key where one is shown):\n", out);
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (!k->env || !k->help) continue;
        if (k->yaml) fprintf(out, "  %s (%s)\n      %s\n", k->env, k->yaml, k->help);
        else fprintf(out, "  %s\n      %s\n", k->env, k->help);
    }
    fputs("\nPort 0 in any address means OS-assigned; the bound addresses are logged as JSON\n"
          "lines server.http_bound, server.tcp_bound and server.admin_bound on stdout.\n", out);
}

/* Cluster ids go into NATS subjects and file names: letters, digits, '-' and '_'. */
static bool cluster_id_ok(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_') return false;
    return true;
}

/* The cluster section as a whole (each key was validated alone when set). */
static int check_cluster(const bv_config *c, char *err, size_t errlen) {
    if (!config_cluster_enabled(c)) {
        if (c->cluster_node_id[0] || c->ncluster_nodes)
            return fail(err, errlen, "cluster: cluster.node_id/cluster.nodes are set but cluster.nats_url is empty "
                                     "(BEAVA_CLUSTER_NATS_URL, --cluster-nats-url)");
        return 0;
    }
    if (!cluster_id_ok(c->cluster_name))
        return fail(err, errlen, "cluster.name '%s': use only letters, digits, '-' and '_'", c->cluster_name);
    if (!c->cluster_node_id[0])
        return fail(err, errlen, "cluster: cluster.node_id is required (BEAVA_CLUSTER_NODE_ID, --cluster-node-id)");
    if (!cluster_id_ok(c->cluster_node_id))
        return fail(err, errlen, "cluster.node_id '%s': use only letters, digits, '-' and '_'", c->cluster_node_id);
    if (c->ncluster_nodes == 0)
        return fail(err, errlen, "cluster: cluster.nodes is required (BEAVA_CLUSTER_NODES, --cluster-nodes)");
    if (c->ncluster_nodes > CONFIG_CLUSTER_NODES_MAX)
        return fail(err, errlen, "cluster.nodes: %zu nodes (max %d)", c->ncluster_nodes, CONFIG_CLUSTER_NODES_MAX);
    bool self = false;
    for (size_t i = 0; i < c->ncluster_nodes; i++) {
        if (!cluster_id_ok(c->cluster_nodes[i]) || strlen(c->cluster_nodes[i]) >= CONFIG_CLUSTER_ID_MAX)
            return fail(err, errlen, "cluster.nodes: '%s': use only letters, digits, '-' and '_' (at most %d)",
                        c->cluster_nodes[i], CONFIG_CLUSTER_ID_MAX - 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->cluster_nodes[i], c->cluster_nodes[j]) == 0)
                return fail(err, errlen, "cluster.nodes: '%s' is listed twice", c->cluster_nodes[i]);
        self |= strcmp(c->cluster_nodes[i], c->cluster_node_id) == 0;
    }
    if (!self)
        return fail(err, errlen, "cluster.node_id '%s' is not one of cluster.nodes", c->cluster_node_id);
    if (c->cluster_replicas > c->ncluster_nodes)
        return fail(err, errlen, "cluster.replicas %u is more than the %zu nodes of cluster.nodes", c->cluster_replicas,
                    c->ncluster_nodes);
    if (c->memory_only)
        return fail(err, errlen, "cluster: memory_only cannot be combined with cluster mode (snapshots live in the "
                                 "data dir)");
    return 0;
}

static const config_key *key_by_flag(const char *flag) {
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].flag && strcmp(config_keys[i].flag, flag) == 0) return &config_keys[i];
    return NULL;
}

int config_load(bv_config *c, bv_cli *cli, int argc, char **argv, char *err, size_t errlen) {
    config_defaults(c);
    memset(cli, 0, sizeof *cli);
    const char *config_path = NULL;
    /* pass 1: find the command and the config file */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) return fail(err, errlen, "%s needs a value", a);
            config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            config_path = a + 9;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cli->command = CMD_HELP;
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            cli->command = CMD_VERSION;
            return 0;
        }
    }
    if (config_path) {
        if (strlen(config_path) >= sizeof c->config_path) return fail(err, errlen, "--config: path too long");
        snprintf(c->config_path, sizeof c->config_path, "%s", config_path);
        if (load_yaml_file(c, config_path, err, errlen) != 0) return -1;
    }
    if (apply_env(c, err, errlen) != 0) return -1;
    /* pass 2: flags and the command */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char flag[64];
        const char *value = NULL;
        const char *eq = strchr(a, '=');
        if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof flag) {
            memcpy(flag, a, (size_t)(eq - a));
            flag[eq - a] = 0;
            value = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", a);
        }
        if (strcmp(flag, "-c") == 0 || strcmp(flag, "--config") == 0) {
            if (!value) i++;
            continue;
        }
        if (strcmp(a, "probe") == 0 && cli->command == CMD_SERVE) { cli->command = CMD_PROBE; continue; }
        if (strcmp(a, "quickstart") == 0 && cli->command == CMD_SERVE) { cli->command = CMD_QUICKSTART; continue; }
        if (strcmp(a, "members") == 0 && cli->command == CMD_SERVE) { cli->command = CMD_MEMBERS; continue; }
        if (cli->command == CMD_MEMBERS && a[0] != '-') {
            if (!cli->members_op[0] && (strcmp(a, "add") == 0 || strcmp(a, "remove") == 0 || strcmp(a, "cancel") == 0))
                snprintf(cli->members_op, sizeof cli->members_op, "%s", a);
            else if (cli->members_op[0] && strcmp(cli->members_op, "cancel") != 0 && !cli->members_id[0] &&
                     strlen(a) < sizeof cli->members_id)
                snprintf(cli->members_id, sizeof cli->members_id, "%s", a);
            else
                return fail(err, errlen, "members: unexpected '%s' (beava members add|remove ID, beava members cancel)", a);
            continue;
        }
        if (strcmp(a, "--no-file") == 0 && cli->command == CMD_QUICKSTART) { cli->quickstart_no_file = true; continue; }
        if (strcmp(flag, "--tcp-addr") == 0) {
            if (!value) {
                if (i + 1 >= argc) return fail(err, errlen, "--tcp-addr needs a value");
                value = argv[++i];
            }
            char host[CONFIG_ADDR_MAX];
            int port;
            if (config_split_addr(value, host, sizeof host, &port) != 0)
                return fail(err, errlen, "--tcp-addr: '%s' is not a host:port address", value);
            snprintf(c->tcp_host, sizeof c->tcp_host, "%s", host);
            c->tcp_port = port;
            c->tcp_enabled = true;
            continue;
        }
        const config_key *k = key_by_flag(flag);
        if (!k) return fail(err, errlen, "unknown option '%s' (see --help)", a);
        bool takes_value = !(k->type == KT_BOOL || k->type == KT_ENV_BOOL_STRICT1);
        if (!takes_value) {
            if (value && config_set(c, k, value, false, flag, err, errlen) != 0) return -1;
            if (!value) *(bool *)((char *)c + k->offset) = true;
            continue;
        }
        if (!value) {
            if (i + 1 >= argc) return fail(err, errlen, "%s needs a value", flag);
            value = argv[++i];
        }
        if ((cli->command == CMD_PROBE || cli->command == CMD_MEMBERS) && strcmp(flag, "--admin-addr") == 0)
            snprintf(cli->probe_addr, sizeof cli->probe_addr, "%s", value);
        if (config_set(c, k, value, false, flag, err, errlen) != 0) return -1;
    }
    if (cli->command == CMD_MEMBERS && (!cli->members_op[0] || (strcmp(cli->members_op, "cancel") != 0) != !!cli->members_id[0]))
        return fail(err, errlen, "members: beava members add|remove ID, or beava members cancel");
    if (check_cluster(c, err, errlen) != 0) return -1;
    /* Embed rule (config.h): no data dir named, a WAL or snapshot dir named. */
    if (!c->data_dir_set && (c->wal_dir[0] || c->snapshot_dir[0]))
        snprintf(c->data_dir, sizeof c->data_dir, "%s", c->wal_dir[0] ? c->wal_dir : c->snapshot_dir);
    return 0;
}

void config_wal_dir(const bv_config *c, char *out, size_t len) {
    if (c->wal_dir[0]) snprintf(out, len, "%s", c->wal_dir);
    else snprintf(out, len, "%s/wal", c->data_dir);
}

void config_snapshot_dir(const bv_config *c, char *out, size_t len) {
    if (c->snapshot_dir[0]) snprintf(out, len, "%s", c->snapshot_dir);
    else snprintf(out, len, "%s/snapshots", c->data_dir);
}
