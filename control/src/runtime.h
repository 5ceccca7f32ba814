/*
 * runtime.h — how the beava server is run: `process`, `bwrap` or `systemd`.
 *
 * A running server is described by an "instance" JSON object, persisted by the caller in
 * state_dir/instance.json so a restarted daemon can find, probe and stop it:
 *   {"runtime","digest","pid","pid_start","monitor_pid","monitor_start","log","started","unit"}
 * pid_start and monitor_start (the kernel start times of pid and of bwrap's monitor) guard
 * against pid reuse (a record without monitor_start, from an older daemon, matches any
 * process with that pid); log_offset is the size
 * of the log before this server was started (what it wrote comes after).
 *
 * Servers are not children that die with the daemon: they run in their own session and
 * write their logs to a file, so restarting beava-control never interrupts the service.
 *
 * The server is started as
 *   <binary> --data-dir <data> [--config <config>]
 * with BEAVA_LISTEN_ADDR, BEAVA_ADMIN_ADDR, BEAVA_TCP_PORT and runtime.env set.
 *   process: the binary on the host (a copy kept under state_dir/images/<digest>/).
 *   bwrap:   bubblewrap, the image rootfs as a read-only /, the data dir bound at /data,
 *            the config file at /etc/beava/beava.yaml, network shared, own IPC/UTS,
 *            run as the image's User when the daemon is root.
 *   systemd: a transient unit over D-Bus (runtime_systemd.c), the image's user passed
 *            as numeric User=/Group= whether or not the daemon runs as root.
 */
#ifndef CTL_RUNTIME_H
#define CTL_RUNTIME_H

#include "config.h"
#include <jansson.h>
#include <stdbool.h>

struct rt_start {
    const char *digest;   /* release identity, recorded in the instance */
    const char *rootfs;   /* unpacked image rootfs (bwrap, systemd); NULL for process */
    const char *binary;   /* host path (process) or path inside the rootfs */
    json_t *image_config; /* the OCI image config's "config" object, may be NULL */
    const char *log_path; /* stdout+stderr are appended here */
    /* listening sockets to pass (process, bwrap): fds 3.. in the server, LISTEN_FDNAMES */
    const int *listen_fds;
    const char *const *listen_names;
    int n_listen; /* <= RT_MAX_LISTEN */
};

#define RT_MAX_LISTEN 8

/* Start a server. *instance is a new object (caller owns) describing it. */
int runtime_start(const struct ctl_config *cfg, const struct rt_start *s, json_t **instance, char *err);
/* Stop: SIGTERM (or StopUnit), wait runtime.stop_grace_s, then SIGKILL. *how (optional,
 * caller owns) says what it took. Stopping something already gone is success. */
int runtime_stop(const struct ctl_config *cfg, json_t *instance, json_t **how, char *err);
/* Is the instance's process (or unit) still running? */
bool runtime_alive(const struct ctl_config *cfg, json_t *instance);
/* Every server this daemon's state dir started carries RUNTIME_MARK=<state_dir> in its
 * environment (bwrap too). Kill those still alive, other than `keep` (0: none), and whoever
 * else holds the data dir's LOCK: a server started by a daemon that was killed before it
 * recorded the instance (one still starting holds no LOCK yet). Returns how many. */
#define RUNTIME_MARK "BEAVACTL_INSTANCE_OF"
int runtime_kill_unrecorded(const struct ctl_config *cfg, pid_t keep);
/* Wait up to timeout_ms for an instance's processes (the server, bwrap's monitor) to
 * end, without polling (pidfd); zombies are left for runtime_reap. */
void runtime_wait_ended(json_t *instance, int64_t timeout_ms);
/* Reap exited children (call periodically from the daemon). exits (optional): an object
 * that gets "<pid>": wait status for each. */
void runtime_reap(json_t *exits);
/* "exited with status N" / "killed by signal N (name)" for a wait status (caller frees). */
char *runtime_exit_text(int status);

/* The last `lines` lines of a log file (caller frees). */
char *runtime_log_tail(const char *path, int lines);
/* What the server said last about a failure, verbatim: the last JSON log line at level
 * "error" or "fatal" written after byte `from` of the log, else its last non-empty line;
 * NULL when it wrote nothing. Caller frees. */
char *runtime_log_last_error(const char *path, long long from);

/* systemd runtime (runtime_systemd.c). */
/* uid/gid: the image's user as numbers, -1 for none (the unit runs as root). */
int rt_systemd_start(const struct ctl_config *cfg, const struct rt_start *s, char *const *argv, char *const *envp,
                     long uid, long gid, json_t **instance, char *err);
/* *how: what the stop took (StopUnit, or StopUnit then KillUnit SIGKILL). */
int rt_systemd_stop(const struct ctl_config *cfg, json_t *instance, const char **how, char *err);
bool rt_systemd_alive(const struct ctl_config *cfg, json_t *instance);

#endif
