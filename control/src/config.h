/*
 * config.h — beava-control configuration: flags > BEAVA_CONTROL_* env > YAML > defaults.
 *
 * Every setting has a dotted path (`runtime.kind`); the YAML file nests by those paths,
 * the environment variable is BEAVA_CONTROL_ + the path upper-cased with '.' -> '_'
 * (BEAVA_CONTROL_RUNTIME_KIND), and the flag is `--set runtime.kind=bwrap` (a few have
 * short flags too). Unknown YAML keys and unknown BEAVA_CONTROL_* variables are errors
 * naming the key. The table in config.c is the single list of settings (and the source of
 * `beava-control config` output and the README table).
 */
#ifndef CTL_CONFIG_H
#define CTL_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct ctl_config {
    char *config_path; /* file that was read ("" = none) */
    char *state_dir;
    char *socket_path; /* "" = state_dir/control.sock */
    char *socket_group;
    char *listen_addr; /* CI trigger API; "" = off */
    char *trigger_secret_file;
    int64_t trigger_replay_window_s;
    int64_t trigger_max_body;
    int64_t trigger_request_deadline_s;     /* control port: time to send one whole request */
    int64_t trigger_max_connections;        /* control port: connections in all */
    int64_t trigger_max_connections_per_ip; /* control port: connections per source address */
    char *registry_repository;              /* host[:port]/path every deployed image must be in */
    char *registry_username;
    char *registry_password_file;
    bool registry_plain_http; /* plain HTTP to a non-loopback registry */
    char *registry_platform;  /* os/arch[/variant] chosen from an image index */
    int64_t wait_for_image_s;
    char *runtime_kind;         /* process | bwrap | systemd */
    char *runtime_binary;       /* process runtime: the server binary */
    char *runtime_image_binary; /* path of the server inside an image rootfs */
    char *runtime_data_dir;
    char *runtime_config; /* beava --config (host path); "" = none */
    char *runtime_http_addr;
    char *runtime_admin_addr;
    int64_t runtime_tcp_port;
    json_t *runtime_env; /* object of extra environment variables */
    int64_t stop_grace_s;
    int64_t ready_timeout_s;
    int64_t ready_s_per_gib;
    int64_t ready_stall_s; /* readiness gate: longest time without recovery progress */
    bool hold_sockets;     /* process/bwrap: the daemon binds the listeners, passes them */
    char *admin_token_file;
    char *systemd_unit;
    char *systemd_bus;    /* "" = system bus, else a D-Bus address */
    char *manifests_dir;  /* default manifests for a deploy */
    char *manifests_root; /* triggers may name a manifest dir below this */
    char *notify_url;     /* webhook; "" = off */
    char *notify_secret_file;
    int64_t unpack_max_layer_bytes; /* uncompressed size of one layer */
    int64_t unpack_max_image_bytes; /* uncompressed size of all the layers of an image */
    int64_t keep_images;
    int64_t keep_backups;
    bool backup_data_on_deploy;
    char *cluster_node_id;          /* the beava cluster node this host runs; "" = not checked */
    json_t *cluster_hosts;          /* `cluster deploy`: [{name, url, secret_file}] in roll order */
    int64_t cluster_host_timeout_s; /* `cluster deploy`: longest wait for one host's deploy */
};

/* Load: defaults, then the YAML file (path, or /etc/beava/control.yaml when path is NULL
 * and that file exists), then the environment, then `sets` (n strings "path=value").
 * On error nothing is returned. Free with config_free. */
int config_load(const char *path, char *const *sets, int nsets, struct ctl_config **out, char *err);
void config_free(struct ctl_config *c);

/* Set one setting by path from a string (flags and env use it). */
int config_set(struct ctl_config *c, const char *path, const char *value, char *err);

/* The effective configuration as JSON (secrets are file paths, never contents). */
json_t *config_to_json(const struct ctl_config *c);

/* The socket path actually used. */
const char *config_socket(const struct ctl_config *c);

#endif
