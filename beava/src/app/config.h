/*
 * config.h - the server's configuration and how it is resolved.
 *
 * Precedence (README "Configuration"): CLI flags > BEAVA_* environment >
 * YAML (only with -c/--config) > built-in defaults. config_load() applies the layers in
 * reverse order onto a bv_config, validating each value where it is read; any bad value
 * or unknown YAML key is an error naming the key (YAML keys by their dotted path, env
 * vars and flags by name) and nothing is started.
 *
 * Where the files go (README "Configuration"): the data dir holds LOCK and quarantine/, and
 * the WAL and snapshot directories default to <data_dir>/wal and <data_dir>/snapshots.
 * When no layer names a data dir but one names a WAL or snapshot directory (the SDK's
 * embed mode), the data dir is the WAL directory if given, else the snapshot directory:
 * nothing is created or locked in the current directory.
 *
 * Ownership: a bv_config owns its string lists; config_free() releases them.
 */
#ifndef BEAVA_CONFIG_H
#define BEAVA_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_ADDR_MAX 128
#define CONFIG_CLUSTER_URL_MAX 1024
#define CONFIG_CLUSTER_ID_MAX 64      /* node ids and the cluster name: [A-Za-z0-9_-] */
#define CONFIG_CLUSTER_NODES_MAX 64

typedef enum bv_durability { DURABILITY_BATCH = 0, DURABILITY_SYNC = 1 } bv_durability;

typedef struct bv_config {
    char http_addr[CONFIG_ADDR_MAX];     /* "127.0.0.1:8080" */
    char admin_addr[CONFIG_ADDR_MAX];    /* "127.0.0.1:8090" */
    bool tcp_enabled;
    char tcp_host[CONFIG_ADDR_MAX];      /* "127.0.0.1" */
    int tcp_port;                        /* 8081; 0 = OS-assigned */
    uint32_t tcp_max_frame_bytes;        /* 4 MiB */
    uint32_t tcp_max_connections;        /* 10000; past it new connections are closed at once */
    uint32_t tcp_idle_timeout_s;         /* 300; 0 = never */
    uint32_t tcp_frame_timeout_ms;       /* 30000: a started frame must be complete within this */
    uint64_t partial_body_budget_bytes;  /* 512 MiB: partially received bodies and frames, all connections */
    char log_level[16];                  /* "info" */
    char data_dir[PATH_MAX];             /* "./.beava"; see config_load for the embed rule */
    bool data_dir_set;                   /* some layer named the data dir */
    char wal_dir[PATH_MAX];              /* "" = <data_dir>/wal */
    char snapshot_dir[PATH_MAX];         /* "" = <data_dir>/snapshots */
    bool memory_only;
    bool accept_data_loss;               /* recover past missing WAL records (logged) */
    bool test_mode;
    bool memory_gov_enforce;
    int shards;                          /* 0 = two per core */
    int io_threads;                      /* 0 = automatic */
    uint32_t shard_queue;                /* tasks queued per shard before 503 overloaded */
    bv_durability durability;
    uint32_t wal_tick_ms;                /* 2 */
    uint64_t wal_segment_bytes;          /* 64 MiB */
    uint64_t wal_fsync_bytes;            /* 1 MiB: a batch this large is written before its tick */
    uint32_t snapshot_interval_s;        /* 60 */
    uint32_t snapshot_retain;            /* 2 */
    uint64_t max_body_bytes;             /* 4 MiB */
    /* HTTP listener limits (http.c); one block so other keys merge around it */
    uint32_t http_threads;               /* data-plane I/O threads; 0 = number of cores */
    uint32_t http_max_connections;       /* 10000 per HTTP listener */
    uint32_t http_max_connections_per_ip;/* 0 = no per-address limit */
    uint32_t http_header_timeout_ms;     /* 10000: accept (or request line) -> headers done */
    uint32_t http_body_timeout_ms;       /* 30000: headers done -> body done */
    uint32_t http_idle_timeout_s;        /* 60: keep-alive connection without a request */
    char site_dir[PATH_MAX];             /* "" = no site */
    char **public_tables; size_t npublic_tables;
    char **public_events; size_t npublic_events;
    char admin_token_file[PATH_MAX];     /* "" = admin routes open */
    char config_path[PATH_MAX];          /* "" = none */
    /* Cluster mode (README "Cluster", beava/src/cluster): on iff cluster.nats_url is set. */
    char cluster_nats_url[CONFIG_CLUSTER_URL_MAX];  /* "nats://h1:4222,nats://h2:4222" */
    char cluster_name[CONFIG_CLUSTER_ID_MAX];       /* "beava": prefix of subjects and the stream */
    char cluster_node_id[CONFIG_CLUSTER_ID_MAX];    /* this node, one of cluster_nodes */
    char **cluster_nodes; size_t ncluster_nodes;    /* every node id (ownership input) */
    uint32_t cluster_partitions;                    /* 64; fixed when the cluster is created */
    uint32_t cluster_replicas;                      /* 2 beava owners per partition */
    uint32_t cluster_stream_replicas;               /* 1 JetStream replica (3 on a 3-server NATS cluster) */
    uint64_t cluster_stream_max_age_s;              /* 0 = keep every record */
    uint64_t cluster_stream_max_msgs;               /* 0 = no limit */
    char cluster_advertise_admin[CONFIG_ADDR_MAX];  /* "" = the bound admin address */
    char cluster_advertise_data[CONFIG_ADDR_MAX];   /* "" = the bound HTTP address */
    uint32_t cluster_peer_snapshot_max_mb;          /* 1024: cap of a peer's partition snapshot */
    uint32_t cluster_publish_timeout_ms;            /* 5000: JetStream ack wait per publish */
    uint32_t cluster_record_format;                 /* 1: event records by name; 2: by schema position */
    uint32_t cluster_read_wait_ms;                  /* 2000: a get waits this long for its owner to
                                                     * catch up (503 not_caught_up); 0 = relaxed */
    char cluster_creds_file[PATH_MAX];              /* "" = no NATS credentials */
    char cluster_tls_ca_file[PATH_MAX];             /* "" = no TLS CA (plain or system trust) */
} bv_config;

/* Is cluster mode configured. */
static inline bool config_cluster_enabled(const bv_config *c) { return c->cluster_nats_url[0] != 0; }

/* What the command line asked for besides configuration. */
typedef enum bv_command { CMD_SERVE = 0, CMD_HELP, CMD_VERSION, CMD_PROBE, CMD_QUICKSTART, CMD_MEMBERS } bv_command;

typedef struct bv_cli {
    bv_command command;
    bool quickstart_no_file;
    char probe_addr[CONFIG_ADDR_MAX];    /* probe, members: admin address override */
    char members_op[16];                 /* members: "add", "remove", "cancel" */
    char members_id[CONFIG_CLUSTER_ID_MAX + 1];
} bv_cli;

void config_defaults(bv_config *c);
void config_free(bv_config *c);

/* Resolve the whole configuration from argv, the environment (envp-style lookup through
 * getenv) and the YAML file named by -c/--config. Returns 0, or -1 with a message in
 * err (what and where) and the config in an unspecified but freeable state. */
int config_load(bv_config *c, bv_cli *cli, int argc, char **argv, char *err, size_t errlen);

/* Apply one YAML document (the text) onto c. `source` names it in errors. */
int config_apply_yaml(bv_config *c, const char *text, size_t len, const char *source,
                      char *err, size_t errlen);

/* Parse "host:port" (IPv4, [IPv6] or a name) into its parts; port 0 allowed. */
int config_split_addr(const char *addr, char *host, size_t hostlen, int *port);

/* Paths derived from data_dir unless set explicitly. */
void config_wal_dir(const bv_config *c, char *out, size_t len);
void config_snapshot_dir(const bv_config *c, char *out, size_t len);

/* Print the --help text: the options, the file rule and every environment variable
 * of the key table with its meaning (or why it has no effect). */
void config_usage(FILE *out);

#endif
