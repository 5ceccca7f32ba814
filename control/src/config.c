/*
 * config.c — the settings table and the three loaders (YAML, environment, flags).
 *
 * All three go through one setter keyed by the dotted path, so precedence is simply the
 * order of application and type errors read the same wherever a value came from.
 */
#include "config.h"
#include "util.h"
#include "yamldoc.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

enum cfg_type { T_STR, T_INT, T_BOOL, T_MAP, T_HOSTS };

struct cfg_entry {
    const char *path;
    enum cfg_type type;
    size_t off;
    const char *def;
    const char *help;
};

#define S(f) offsetof(struct ctl_config, f)
static const struct cfg_entry ENTRIES[] = {
    { "state_dir", T_STR, S(state_dir), "/var/lib/beava-control", "journal, images, backups, state files" },
    { "socket", T_STR, S(socket_path), "", "CLI unix socket (mode 0660); default <state_dir>/control.sock" },
    { "socket_group", T_STR, S(socket_group), "", "group owning the CLI socket" },
    { "listen_addr", T_STR, S(listen_addr), "", "CI trigger HTTP API address IP:PORT; empty = off" },
    { "trigger.secret_file", T_STR, S(trigger_secret_file), "/etc/beava/control.secret", "HMAC secret for triggers" },
    { "trigger.replay_window_s", T_INT, S(trigger_replay_window_s), "300", "max age/skew of a trigger timestamp" },
    { "trigger.max_body", T_INT, S(trigger_max_body), "65536", "max trigger body bytes" },
    { "trigger.request_deadline_s", T_INT, S(trigger_request_deadline_s), "10",
      "control port: seconds to send a whole request" },
    { "trigger.max_connections", T_INT, S(trigger_max_connections), "256", "control port: open connections in all" },
    { "trigger.max_connections_per_ip", T_INT, S(trigger_max_connections_per_ip), "8",
      "control port: open connections per source address" },
    { "registry.repository", T_STR, S(registry_repository), "", "HOST[:PORT]/NAME; images elsewhere are refused" },
    { "registry.username", T_STR, S(registry_username), "", "registry user (basic or token auth)" },
    { "registry.password_file", T_STR, S(registry_password_file), "", "file holding the registry password" },
    { "registry.plain_http", T_BOOL, S(registry_plain_http), "false", "plain HTTP to a non-loopback registry" },
    { "registry.platform", T_STR, S(registry_platform), "", "os/arch picked from an image index; default: this host" },
    { "registry.wait_for_image_s", T_INT, S(wait_for_image_s), "300", "how long a missing tag is waited for" },
    { "runtime.kind", T_STR, S(runtime_kind), "process", "process | bwrap | systemd" },
    { "runtime.binary", T_STR, S(runtime_binary), "/usr/bin/beava", "server binary (process runtime)" },
    { "runtime.image_binary", T_STR, S(runtime_image_binary), "/usr/bin/beava", "server binary inside the image" },
    { "runtime.data_dir", T_STR, S(runtime_data_dir), "/var/lib/beava", "the server's data dir (host path)" },
    { "runtime.config", T_STR, S(runtime_config), "", "server config file (host path); empty = none" },
    { "runtime.http_addr", T_STR, S(runtime_http_addr), "127.0.0.1:8080", "BEAVA_LISTEN_ADDR" },
    { "runtime.admin_addr", T_STR, S(runtime_admin_addr), "127.0.0.1:8090", "BEAVA_ADMIN_ADDR" },
    { "runtime.tcp_port", T_INT, S(runtime_tcp_port), "8081", "BEAVA_TCP_PORT" },
    { "runtime.env", T_MAP, S(runtime_env), NULL, "extra environment for the server" },
    { "runtime.stop_grace_s", T_INT, S(stop_grace_s), "30", "SIGTERM grace before SIGKILL" },
    { "runtime.ready_timeout_s", T_INT, S(ready_timeout_s), "60", "readiness deadline (base)" },
    { "runtime.ready_s_per_gib", T_INT, S(ready_s_per_gib), "60", "extra readiness seconds per GiB of data" },
    { "runtime.ready_stall_s", T_INT, S(ready_stall_s), "10", "gate fails when recovery shows no progress this long" },
    { "runtime.hold_sockets", T_BOOL, S(hold_sockets), "true", "bind the listeners once, pass them to each server" },
    { "runtime.admin_token_file", T_STR, S(admin_token_file), "", "bearer token for /register and /snapshot" },
    { "systemd.unit", T_STR, S(systemd_unit), "beava-control-beava.service", "transient unit name" },
    { "systemd.bus", T_STR, S(systemd_bus), "", "D-Bus address; empty = the system bus" },
    { "manifests.dir", T_STR, S(manifests_dir), "/etc/beava/manifests", "manifests applied on deploy" },
    { "manifests.root", T_STR, S(manifests_root), "/etc/beava/manifests", "triggers may name dirs below this" },
    /* the unpack limits' defaults are UNPACK_DEFAULT_MAX_*_BYTES in unpack.h (2 GiB, 4 GiB) */
    { "unpack.max_layer_bytes", T_INT, S(unpack_max_layer_bytes), "2147483648",
      "max uncompressed size of one image layer" },
    { "unpack.max_image_bytes", T_INT, S(unpack_max_image_bytes), "4294967296",
      "max uncompressed size of all an image's layers" },
    { "deploy.keep_images", T_INT, S(keep_images), "3", "unpacked images kept (current, previous, ...)" },
    { "deploy.keep_backups", T_INT, S(keep_backups), "5", "backups kept in state_dir/backups" },
    { "notify.url", T_STR, S(notify_url), "", "webhook called on deploy success, failure, rollback" },
    { "notify.secret_file", T_STR, S(notify_secret_file), "", "HMAC secret signing the webhook body" },
    { "deploy.backup_data", T_BOOL, S(backup_data_on_deploy), "true", "copy the data dir before a new version starts" },
    { "cluster.node_id", T_STR, S(cluster_node_id), "",
      "the cluster node this host runs; the deploy gate checks the server's GET /cluster says so" },
    { "cluster.hosts", T_HOSTS, S(cluster_hosts), NULL,
      "`cluster deploy` roll order: [{name, url, secret_file}] (the hosts' control ports)" },
    { "cluster.host_timeout_s", T_INT, S(cluster_host_timeout_s), "1800",
      "`cluster deploy`: longest wait for one host's deploy to end" },
};
#undef S
#define NENTRIES (sizeof ENTRIES / sizeof ENTRIES[0])

static const struct cfg_entry *find_entry(const char *path) {
    for (size_t i = 0; i < NENTRIES; i++)
        if (!strcmp(ENTRIES[i].path, path)) return &ENTRIES[i];
    return NULL;
}

static bool is_section(const char *path) {
    size_t n = strlen(path);
    for (size_t i = 0; i < NENTRIES; i++)
        if (!strncmp(ENTRIES[i].path, path, n) && ENTRIES[i].path[n] == '.') return true;
    return false;
}

/* One `cluster.hosts` entry, checked: name and url required, secret_file optional ("" = the
 * daemon's own trigger.secret_file at use). */
static int add_host(struct ctl_config *c, const char *where, const char *name, const char *url, const char *secret,
                    char *err) {
    if (!name || !*name || strlen(name) > 64 ||
        strspn(name,
               "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
               "0123456789._-") != strlen(name))
        return ctl_errf(err, "%s: a host needs a name of 1..64 of [A-Za-z0-9._-]", where);
    if (!url || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
        return ctl_errf(err, "%s: host %s: url must be an http:// or https:// URL of its control port", where, name);
    size_t i;
    json_t *h;
    json_array_foreach(c->cluster_hosts, i, h) {
        if (!strcmp(json_string_value(json_object_get(h, "name")), name))
            return ctl_errf(err, "%s: host %s is listed twice", where, name);
    }
    json_array_append_new(c->cluster_hosts,
                          json_pack("{s:s,s:s,s:s}", "name", name, "url", url, "secret_file", secret ? secret : ""));
    return 0;
}

/* The flag/environment form of cluster.hosts: NAME=URL[,NAME=URL]... (each host's secret is
 * trigger.secret_file; per-host secret files need the YAML list). */
static int set_hosts(struct ctl_config *c, const struct cfg_entry *e, const char *v, char *err) {
    json_array_clear(c->cluster_hosts);
    char *copy = ctl_strdup(v), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            rc = ctl_errf(err, "%s: expected NAME=URL[,NAME=URL]..., got '%s'", e->path, tok);
            break;
        }
        *eq = 0;
        rc = add_host(c, e->path, tok, eq + 1, NULL, err);
    }
    free(copy);
    return rc;
}

static int set_entry(struct ctl_config *c, const struct cfg_entry *e, const char *v, char *err) {
    char *base = (char *)c;
    switch (e->type) {
    case T_STR: {
        char **p = (char **)(base + e->off);
        free(*p);
        *p = ctl_strdup(v);
        return 0;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || !*v || *end || x < 0)
            return ctl_errf(err, "%s: expected a non-negative integer, got '%s'", e->path, v);
        *(int64_t *)(base + e->off) = x;
        return 0;
    }
    case T_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) *(bool *)(base + e->off) = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) *(bool *)(base + e->off) = false;
        else return ctl_errf(err, "%s: expected true or false, got '%s'", e->path, v);
        return 0;
    case T_MAP: return ctl_errf(err, "%s: set map entries as %s.NAME=VALUE", e->path, e->path);
    case T_HOSTS: return set_hosts(c, e, v, err);
    }
    return -1;
}

int config_set(struct ctl_config *c, const char *path, const char *value, char *err) {
    const struct cfg_entry *e = find_entry(path);
    if (e) return set_entry(c, e, value, err);
    if (!strncmp(path, "runtime.env.", 12) && path[12]) {
        json_object_set_new(c->runtime_env, path + 12, json_string(value));
        return 0;
    }
    return ctl_errf(err, "%s: unknown setting", path);
}

static int yaml_walk(struct ctl_config *c, const char *file, const char *prefix, json_t *obj, char *err) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
        const struct cfg_entry *e = find_entry(path);
        if (e && e->type == T_MAP) {
            if (!json_is_object(v)) return ctl_errf(err, "%s: %s: expected a mapping of NAME: value", file, path);
            const char *k;
            json_t *x;
            json_object_foreach(v, k, x) {
                if (!json_is_string(x) && !json_is_integer(x))
                    return ctl_errf(err, "%s: %s.%s: expected a string", file, path, k);
                char *s = json_is_string(x) ? ctl_strdup(json_string_value(x))
                                            : ctl_asprintf("%lld", (long long)json_integer_value(x));
                json_object_set_new(c->runtime_env, k, json_string(s));
                free(s);
            }
            continue;
        }
        if (e && e->type == T_HOSTS && json_is_array(v)) {
            json_array_clear(c->cluster_hosts);
            size_t i;
            json_t *h;
            json_array_foreach(v, i, h) {
                char where[300];
                snprintf(where, sizeof where, "%s: %s[%zu]", file, path, i);
                if (!json_is_object(h)) return ctl_errf(err, "%s: expected a mapping {name, url, secret_file}", where);
                const char *k;
                json_t *x;
                json_object_foreach(h, k, x) {
                    if (strcmp(k, "name") && strcmp(k, "url") && strcmp(k, "secret_file"))
                        return ctl_errf(err, "%s.%s: unknown key", where, k);
                    if (!json_is_string(x)) return ctl_errf(err, "%s.%s: expected a string", where, k);
                }
                if (add_host(c, where, json_string_value(json_object_get(h, "name")),
                             json_string_value(json_object_get(h, "url")),
                             json_string_value(json_object_get(h, "secret_file")), err) < 0)
                    return -1;
            }
            continue;
        }
        if (e) {
            char buf[64];
            const char *s;
            if (json_is_string(v)) s = json_string_value(v);
            else if (json_is_integer(v)) snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v)), s = buf;
            else if (json_is_boolean(v)) s = json_is_true(v) ? "true" : "false";
            else if (json_is_null(v)) s = "";
            else return ctl_errf(err, "%s: %s: expected a scalar", file, path);
            char e2[CTL_ERR_LEN];
            if (set_entry(c, e, s, e2) < 0) return ctl_errf(err, "%s: %s", file, e2);
            continue;
        }
        if (is_section(path)) {
            if (!json_is_object(v)) return ctl_errf(err, "%s: %s: expected a mapping", file, path);
            if (yaml_walk(c, file, path, v, err) < 0) return -1;
            continue;
        }
        return ctl_errf(err, "%s: %s: unknown key", file, path);
    }
    return 0;
}

static void env_name(const char *path, char *out, size_t len) {
    snprintf(out, len, "BEAVA_CONTROL_");
    size_t n = strlen(out);
    for (const char *p = path; *p && n + 1 < len; p++) out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = 0;
}

static int apply_env(struct ctl_config *c, char *err) {
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "BEAVA_CONTROL_", 14) != 0) continue;
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        size_t nl = (size_t)(eq - *e);
        if (nl == 20 && !strncmp(*e, "BEAVA_CONTROL_CONFIG", 20)) continue;
        const struct cfg_entry *found = NULL;
        for (size_t i = 0; i < NENTRIES; i++) {
            char name[128];
            env_name(ENTRIES[i].path, name, sizeof name);
            if (strlen(name) == nl && !strncmp(name, *e, nl)) found = &ENTRIES[i];
        }
        if (!found || found->type == T_MAP) return ctl_errf(err, "environment: %.*s: unknown setting", (int)nl, *e);
        char e2[CTL_ERR_LEN];
        if (set_entry(c, found, eq + 1, e2) < 0) return ctl_errf(err, "environment %.*s: %s", (int)nl, *e, e2);
    }
    return 0;
}

static int validate(struct ctl_config *c, char *err) {
    if (strcmp(c->runtime_kind, "process") && strcmp(c->runtime_kind, "bwrap") && strcmp(c->runtime_kind, "systemd"))
        return ctl_errf(err, "runtime.kind: '%s' is not one of process, bwrap, systemd", c->runtime_kind);
    if (!*c->state_dir || c->state_dir[0] != '/')
        return ctl_errf(err, "state_dir: must be an absolute path, got '%s'", c->state_dir);
    if (!*c->runtime_data_dir || c->runtime_data_dir[0] != '/')
        return ctl_errf(err, "runtime.data_dir: must be an absolute path, got '%s'", c->runtime_data_dir);
    if (c->trigger_replay_window_s < 1) return ctl_errf(err, "trigger.replay_window_s: must be at least 1");
    if (c->trigger_request_deadline_s < 1 || c->trigger_request_deadline_s > 3600)
        return ctl_errf(err, "trigger.request_deadline_s: must be 1..3600");
    if (c->trigger_max_connections < 2 || c->trigger_max_connections > 65536)
        return ctl_errf(err, "trigger.max_connections: must be 2..65536");
    if (c->trigger_max_connections_per_ip < 1 || c->trigger_max_connections_per_ip >= c->trigger_max_connections)
        return ctl_errf(err, "trigger.max_connections_per_ip: must be at least 1 and below trigger.max_connections");
    size_t ul = strlen(c->systemd_unit);
    if (!strcmp(c->runtime_kind, "systemd") &&
        (ul < 9 || strcmp(c->systemd_unit + ul - 8, ".service") || strchr(c->systemd_unit, '/')))
        return ctl_errf(err, "systemd.unit: '%s' is not a service unit name (NAME.service)", c->systemd_unit);
    const char *k;
    json_t *v;
    json_object_foreach(c->runtime_env, k, v) {
        const char *owned[] = { "BEAVA_LISTEN_ADDR", "BEAVA_ADMIN_ADDR", "BEAVA_TCP_PORT", "BEAVA_DATA_DIR",
                                "LISTEN_FDS",        "LISTEN_PID",       "LISTEN_FDNAMES", NULL };
        for (int i = 0; owned[i]; i++)
            if (!strcmp(k, owned[i]))
                return ctl_errf(err,
                                "runtime.env.%s: the daemon sets this itself (runtime.http_addr, "
                                "runtime.admin_addr, runtime.tcp_port, runtime.data_dir)",
                                k);
    }
    if (c->ready_stall_s < 1) return ctl_errf(err, "runtime.ready_stall_s: must be at least 1");
    if (*c->notify_url && strncmp(c->notify_url, "http://", 7) && strncmp(c->notify_url, "https://", 8))
        return ctl_errf(err, "notify.url: '%s' is not an http:// or https:// URL", c->notify_url);
    if (c->unpack_max_layer_bytes < 1 || c->unpack_max_image_bytes < 1)
        return ctl_errf(err, "unpack.max_layer_bytes and unpack.max_image_bytes: must be at least 1");
    if (c->keep_images < 2) return ctl_errf(err, "deploy.keep_images: must be at least 2 (current and previous)");
    if (c->cluster_host_timeout_s < 1) return ctl_errf(err, "cluster.host_timeout_s: must be at least 1");
    return 0;
}

void config_free(struct ctl_config *c) {
    if (!c) return;
    for (size_t i = 0; i < NENTRIES; i++) {
        if (ENTRIES[i].type == T_STR) free(*(char **)((char *)c + ENTRIES[i].off));
    }
    json_decref(c->runtime_env);
    json_decref(c->cluster_hosts);
    free(c->config_path);
    free(c);
}

int config_load(const char *path, char *const *sets, int nsets, struct ctl_config **out, char *err) {
    struct ctl_config *c = ctl_calloc(1, sizeof *c);
    c->runtime_env = json_object();
    c->cluster_hosts = json_array();
    *out = NULL;
    for (size_t i = 0; i < NENTRIES; i++)
        if (ENTRIES[i].def && set_entry(c, &ENTRIES[i], ENTRIES[i].def, err) < 0) abort();
    const char *file = path ? path : getenv("BEAVA_CONTROL_CONFIG");
    if (!file && access("/etc/beava/control.yaml", R_OK) == 0) file = "/etc/beava/control.yaml";
    c->config_path = ctl_strdup(file ? file : "");
    if (file && *file) {
        json_t *docs = NULL;
        if (ydoc_load_file(file, &docs, err) < 0) goto err;
        if (json_array_size(docs) > 1) {
            json_decref(docs);
            ctl_errf(err, "%s: expected one YAML document", file);
            goto err;
        }
        json_t *root = json_array_get(docs, 0);
        if (root && !json_is_null(root) && !json_is_object(root)) {
            json_decref(docs);
            ctl_errf(err, "%s: expected a mapping at the top level", file);
            goto err;
        }
        int rc = root && json_is_object(root) ? yaml_walk(c, file, "", root, err) : 0;
        json_decref(docs);
        if (rc < 0) goto err;
    }
    if (apply_env(c, err) < 0) goto err;
    for (int i = 0; i < nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        if (!eq) {
            ctl_errf(err, "--set %s: expected PATH=VALUE", sets[i]);
            goto err;
        }
        char *p = strndup(sets[i], (size_t)(eq - sets[i]));
        char e2[CTL_ERR_LEN];
        int rc = config_set(c, p, eq + 1, e2);
        free(p);
        if (rc < 0) {
            ctl_errf(err, "flag: %s", e2);
            goto err;
        }
    }
    if (validate(c, err) < 0) goto err;
    if (!*c->socket_path) {
        free(c->socket_path);
        c->socket_path = ctl_asprintf("%s/control.sock", c->state_dir);
    }
    *out = c;
    return 0;
err:
    config_free(c);
    return -1;
}

const char *config_socket(const struct ctl_config *c) { return c->socket_path; }

json_t *config_to_json(const struct ctl_config *c) {
    json_t *o = json_object();
    for (size_t i = 0; i < NENTRIES; i++) {
        const struct cfg_entry *e = &ENTRIES[i];
        const char *base = (const char *)c;
        json_t *v = NULL;
        switch (e->type) {
        case T_STR: v = json_string(*(char *const *)(base + e->off)); break;
        case T_INT: v = json_integer(*(const int64_t *)(base + e->off)); break;
        case T_BOOL: v = json_boolean(*(const bool *)(base + e->off)); break;
        case T_MAP: v = json_deep_copy(c->runtime_env); break;
        case T_HOSTS: v = json_deep_copy(c->cluster_hosts); break;
        }
        json_object_set_new(o, e->path, v);
    }
    json_object_set_new(o, "config_file", json_string(c->config_path));
    return o;
}
