/*
 * runtime_systemd.c — the server as a transient systemd unit, driven over D-Bus (sd-bus).
 *
 * Start: StartTransientUnit(unit, "fail") of a Type=exec service with
 *   RootDirectory= the unpacked image rootfs, MountAPIVFS=yes, ProtectSystem=strict (the
 *   image is read-only, like the bwrap runtime's --ro-bind), PrivateTmp=yes,
 *   BindPaths= the data dir at /data, BindReadOnlyPaths= runtime.config at
 *   /etc/beava/beava.yaml, WorkingDirectory=/data, ExecStart= the server, Environment=,
 *   User=/Group= the image's user as numbers (resolved in the image's /etc/passwd: the host
 *   need not know the name, and systemd refuses "uid:gid" in User=), KillSignal=SIGTERM,
 *   TimeoutStopUSec= runtime.stop_grace_s, stdout/stderr appended to the deploy's log.
 *   A leftover unit of the same name is stopped (active) or reset (failed) first, since
 *   systemd refuses to create a transient unit whose name is loaded.
 * Jobs: the client subscribes to the manager's signals and matches JobRemoved for the job
 *   object path StartTransientUnit/StopUnit returned (systemd-run's approach); the job's
 *   result must be "done", and afterwards ActiveState must be "active" (start) or
 *   "inactive"/"failed"/gone (stop).
 * Stop: StopUnit(unit, "replace"); systemd sends SIGTERM and SIGKILL after
 *   TimeoutStopUSec itself; should the stop job still be pending 2 s after the grace
 *   period, KillUnit(unit, "all", SIGKILL), then wait for the job again (10 s).
 *
 * systemd as PID 1 cannot run in the test environment: tests/control/test_ctl_systemd.c
 * runs these calls against a private dbus-daemon and tests/control/fake_systemd.c, a fake
 * org.freedesktop.systemd1 that validates property names/types like systemd does, records
 * every call and emits JobRemoved; e2e_control.py also deploys through it with the fake
 * executing the unit under bubblewrap.
 */
#include "runtime.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MGR "org.freedesktop.systemd1.Manager"

#define JOBS_SEEN 16

/* JobRemoved signals seen on one connection (a small ring: we wait for one job at a time). */
struct jobs {
    char path[JOBS_SEEN][256];
    char result[JOBS_SEEN][32];
    unsigned n;
};

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *e) {
    (void)e;
    struct jobs *j = userdata;
    uint32_t id;
    const char *path = NULL, *unit = NULL, *result = NULL;
    if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0) return 0;
    unsigned i = j->n++ % JOBS_SEEN;
    snprintf(j->path[i], sizeof j->path[i], "%s", path);
    snprintf(j->result[i], sizeof j->result[i], "%s", result);
    return 0;
}

struct conn {
    sd_bus *bus;
    sd_bus_slot *match;
    struct jobs jobs;
};

static void conn_close(struct conn *c) {
    sd_bus_slot_unref(c->match);
    sd_bus_flush_close_unref(c->bus);
    c->match = NULL;
    c->bus = NULL;
}

/* Connect, match JobRemoved and Subscribe, so no job's end can be missed. */
static int conn_open(const struct ctl_config *cfg, struct conn *c, char *err) {
    sd_bus *bus = NULL;
    int r;
    memset(c, 0, sizeof *c);
    if (cfg->systemd_bus && *cfg->systemd_bus) {
        if ((r = sd_bus_new(&bus)) < 0) return ctl_errf(err, "sd_bus_new: %s", strerror(-r));
        sd_bus_set_address(bus, cfg->systemd_bus);
        sd_bus_set_bus_client(bus, 1);
        if ((r = sd_bus_start(bus)) < 0) {
            sd_bus_unref(bus);
            return ctl_errf(err, "D-Bus %s: %s", cfg->systemd_bus, strerror(-r));
        }
    } else if ((r = sd_bus_open_system(&bus)) < 0) {
        return ctl_errf(err, "system D-Bus: %s", strerror(-r));
    }
    c->bus = bus;
    r = sd_bus_match_signal(bus, &c->match, SD_DEST, SD_PATH, SD_MGR, "JobRemoved", on_job_removed, &c->jobs);
    if (r < 0) {
        conn_close(c);
        return ctl_errf(err, "D-Bus: matching JobRemoved: %s", strerror(-r));
    }
    sd_bus_error e = SD_BUS_ERROR_NULL;
    r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "Subscribe", &e, NULL, "");
    if (r < 0) {
        ctl_errf(err, "systemd Subscribe: %s", e.message ? e.message : strerror(-r));
        sd_bus_error_free(&e);
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Wait until JobRemoved for job arrives (result copied) or the deadline passes (-1). */
static int await_job(struct conn *c, const char *job, int64_t deadline_ms, char *result, size_t len) {
    for (;;) {
        unsigned lo = c->jobs.n > JOBS_SEEN ? c->jobs.n - JOBS_SEEN : 0;
        for (unsigned k = lo; k < c->jobs.n; k++)
            if (!strcmp(c->jobs.path[k % JOBS_SEEN], job)) {
                snprintf(result, len, "%s", c->jobs.result[k % JOBS_SEEN]);
                return 0;
            }
        int r = sd_bus_process(c->bus, NULL);
        if (r < 0) {
            snprintf(result, len, "bus error: %s", strerror(-r));
            return -1;
        }
        if (r > 0) continue;
        int64_t left = deadline_ms - ctl_mono_ms();
        if (left <= 0) {
            snprintf(result, len, "timeout");
            return -1;
        }
        sd_bus_wait(c->bus, (uint64_t)(left > 200 ? 200 : left) * 1000u);
    }
}

/* ActiveState of unit, or "" when the unit does not exist (is not loaded). */
static int unit_state(sd_bus *bus, const char *unit, char *state, size_t len, char *err) {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_message *m = NULL;
    const char *path = NULL;
    state[0] = 0;
    int r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "GetUnit", &e, &m, "s", unit);
    if (r < 0) {
        int nosuch = sd_bus_error_has_name(&e, "org.freedesktop.systemd1.NoSuchUnit");
        if (!nosuch) ctl_errf(err, "GetUnit %s: %s", unit, e.message ? e.message : strerror(-r));
        sd_bus_error_free(&e);
        return nosuch ? 0 : -1;
    }
    r = sd_bus_message_read(m, "o", &path);
    char *p = ctl_strdup(r >= 0 && path ? path : "/");
    sd_bus_message_unref(m);
    char *val = NULL;
    r = sd_bus_get_property_string(bus, SD_DEST, p, "org.freedesktop.systemd1.Unit", "ActiveState", &e, &val);
    free(p);
    if (r < 0) {
        ctl_errf(err, "ActiveState of %s: %s", unit, e.message ? e.message : strerror(-r));
        sd_bus_error_free(&e);
        return -1;
    }
    snprintf(state, len, "%s", val);
    free(val);
    return 0;
}

static bool state_down(const char *s) { return !*s || !strcmp(s, "inactive") || !strcmp(s, "failed"); }

/* StopUnit, await its job; KillUnit(SIGKILL) when it outlives grace + 2 s. *how gets what
 * it took ("StopUnit" or "StopUnit, then KillUnit SIGKILL"). */
static int stop_unit(const struct ctl_config *cfg, struct conn *c, const char *unit, const char **how, char *err) {
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    const char *job = NULL;
    char result[64], state[64];
    *how = "StopUnit";
    int r = sd_bus_call_method(c->bus, SD_DEST, SD_PATH, SD_MGR, "StopUnit", &e, &reply, "ss", unit, "replace");
    if (r < 0) {
        bool nosuch = sd_bus_error_has_name(&e, "org.freedesktop.systemd1.NoSuchUnit");
        if (!nosuch) ctl_errf(err, "StopUnit %s: %s", unit, e.message ? e.message : strerror(-r));
        sd_bus_error_free(&e);
        return nosuch ? 0 : -1;
    }
    if (sd_bus_message_read(reply, "o", &job) < 0 || !job) {
        sd_bus_message_unref(reply);
        return ctl_errf(err, "StopUnit %s: no job in the reply", unit);
    }
    char *jobp = ctl_strdup(job);
    sd_bus_message_unref(reply);
    int rc = 0;
    if (await_job(c, jobp, ctl_mono_ms() + (cfg->stop_grace_s + 2) * 1000, result, sizeof result) < 0) {
        /* systemd should have sent SIGKILL after TimeoutStopUSec; make sure. */
        *how = "StopUnit, then KillUnit SIGKILL after the grace period";
        r = sd_bus_call_method(c->bus, SD_DEST, SD_PATH, SD_MGR, "KillUnit", &e, NULL, "ssi", unit, "all", SIGKILL);
        if (r < 0) {
            rc = ctl_errf(err, "KillUnit %s: %s", unit, e.message ? e.message : strerror(-r));
            sd_bus_error_free(&e);
        } else if (await_job(c, jobp, ctl_mono_ms() + 10000, result, sizeof result) < 0) {
            rc = ctl_errf(err, "the stop job of %s did not finish after SIGKILL (%s)", unit, result);
        }
    }
    free(jobp);
    if (rc == 0 && unit_state(c->bus, unit, state, sizeof state, err) < 0) rc = -1;
    if (rc == 0 && !state_down(state))
        rc = ctl_errf(err, "unit %s is '%s' after its stop job (%s)", unit, state, result);
    return rc;
}

int rt_systemd_start(const struct ctl_config *cfg, const struct rt_start *s, char *const *argv, char *const *envp,
                     long uid, long gid, json_t **instance, char *err) {
    struct conn c;
    sd_bus_message *m = NULL, *reply = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int rc = -1, r;
    const char *unit = cfg->systemd_unit;
    char state[64] = "", result[64] = "";
    if (conn_open(cfg, &c, err) < 0) return -1;
    /* A leftover unit of the same name must go first: systemd refuses to create a
     * transient unit whose name is loaded (active, or failed and not reset). */
    if (unit_state(c.bus, unit, state, sizeof state, err) < 0) goto out;
    if (!state_down(state)) {
        const char *how;
        if (stop_unit(cfg, &c, unit, &how, err) < 0) goto out;
    }
    sd_bus_call_method(c.bus, SD_DEST, SD_PATH, SD_MGR, "ResetFailedUnit", NULL, NULL, "s", unit);

    if ((r = sd_bus_message_new_method_call(c.bus, &m, SD_DEST, SD_PATH, SD_MGR, "StartTransientUnit")) < 0 ||
        (r = sd_bus_message_append(m, "ss", unit, "fail")) < 0 ||
        (r = sd_bus_message_open_container(m, 'a', "(sv)")) < 0)
        goto bus_err;
    char desc[256];
    snprintf(desc, sizeof desc, "beava %s (beava-control)", s->digest ? s->digest : "");
    r = sd_bus_message_append(m, "(sv)", "Description", "s", desc);
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "Type", "s", "exec");
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "RootDirectory", "s", s->rootfs);
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "MountAPIVFS", "b", 1);
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "ProtectSystem", "s", "strict");
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "PrivateTmp", "b", 1);
    if (r >= 0)
        r = sd_bus_message_append(m, "(sv)", "BindPaths", "a(ssbt)", 1, cfg->runtime_data_dir, "/data", 0, (uint64_t)0);
    if (r >= 0 && *cfg->runtime_config)
        r = sd_bus_message_append(m, "(sv)", "BindReadOnlyPaths", "a(ssbt)", 1, cfg->runtime_config,
                                  "/etc/beava/beava.yaml", 0, (uint64_t)0);
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "WorkingDirectory", "s", "/data");
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "KillSignal", "i", SIGTERM);
    if (r >= 0) r = sd_bus_message_append(m, "(sv)", "TimeoutStopUSec", "t", (uint64_t)cfg->stop_grace_s * 1000000u);
    /* as with the other runtimes, the server's soft descriptor limit is our hard one (a
     * transient unit would otherwise get systemd's default soft limit of 1024) */
    struct rlimit nofile;
    if (r >= 0 && getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_max != RLIM_INFINITY) {
        r = sd_bus_message_append(m, "(sv)", "LimitNOFILE", "t", (uint64_t)nofile.rlim_max);
        if (r >= 0) r = sd_bus_message_append(m, "(sv)", "LimitNOFILESoft", "t", (uint64_t)nofile.rlim_max);
    }
    if (r >= 0 && s->log_path) {
        r = sd_bus_message_append(m, "(sv)", "StandardOutputFileToAppend", "s", s->log_path);
        if (r >= 0) r = sd_bus_message_append(m, "(sv)", "StandardErrorFileToAppend", "s", s->log_path);
    }
    char num[32];
    if (r >= 0 && uid >= 0) {
        snprintf(num, sizeof num, "%ld", uid);
        r = sd_bus_message_append(m, "(sv)", "User", "s", num);
    }
    if (r >= 0 && gid >= 0) {
        snprintf(num, sizeof num, "%ld", gid);
        r = sd_bus_message_append(m, "(sv)", "Group", "s", num);
    }
    if (r < 0) goto bus_err;
    /* Environment=as */
    if ((r = sd_bus_message_open_container(m, 'r', "sv")) < 0 ||
        (r = sd_bus_message_append(m, "s", "Environment")) < 0 ||
        (r = sd_bus_message_open_container(m, 'v', "as")) < 0 ||
        (r = sd_bus_message_append_strv(m, (char **)envp)) < 0 || (r = sd_bus_message_close_container(m)) < 0 ||
        (r = sd_bus_message_close_container(m)) < 0)
        goto bus_err;
    /* ExecStart=a(sasb): path, argv (argv[0] included), ignore-failure */
    if ((r = sd_bus_message_open_container(m, 'r', "sv")) < 0 || (r = sd_bus_message_append(m, "s", "ExecStart")) < 0 ||
        (r = sd_bus_message_open_container(m, 'v', "a(sasb)")) < 0 ||
        (r = sd_bus_message_open_container(m, 'a', "(sasb)")) < 0 ||
        (r = sd_bus_message_open_container(m, 'r', "sasb")) < 0 || (r = sd_bus_message_append(m, "s", argv[0])) < 0 ||
        (r = sd_bus_message_append_strv(m, (char **)argv)) < 0 || (r = sd_bus_message_append(m, "b", 0)) < 0 ||
        (r = sd_bus_message_close_container(m)) < 0 || (r = sd_bus_message_close_container(m)) < 0 ||
        (r = sd_bus_message_close_container(m)) < 0 || (r = sd_bus_message_close_container(m)) < 0)
        goto bus_err;
    if ((r = sd_bus_message_close_container(m)) < 0) goto bus_err;
    if ((r = sd_bus_message_append(m, "a(sa(sv))", 0)) < 0) goto bus_err;
    if ((r = sd_bus_call(c.bus, m, 30 * 1000000ull, &e, &reply)) < 0) {
        ctl_errf(err, "StartTransientUnit %s: %s", unit, e.message ? e.message : strerror(-r));
        goto out;
    }
    const char *job = NULL;
    if (sd_bus_message_read(reply, "o", &job) < 0 || !job) {
        ctl_errf(err, "StartTransientUnit %s: no job in the reply", unit);
        goto out;
    }
    char *jobp = ctl_strdup(job);
    /* Type=exec: the start job ends once the server binary was executed (or failed to). */
    int w = await_job(&c, jobp, ctl_mono_ms() + 30000, result, sizeof result);
    free(jobp);
    if (w < 0) {
        ctl_errf(err, "the start job of %s did not finish within 30s (%s)", unit, result);
        goto out;
    }
    if (unit_state(c.bus, unit, state, sizeof state, err) < 0) goto out;
    if (strcmp(result, "done") != 0 || strcmp(state, "active") != 0) {
        ctl_errf(err, "the start job of %s ended with result '%s'; the unit is '%s'", unit, result,
                 *state ? state : "gone");
        goto out;
    }
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    *instance = json_pack("{s:s,s:s,s:s,s:s,s:s}", "runtime", "systemd", "unit", unit, "digest",
                          s->digest ? s->digest : "", "log", s->log_path ? s->log_path : "", "started", ts);
    rc = 0;
    goto out;
bus_err:
    ctl_errf(err, "building StartTransientUnit: %s", strerror(-r));
out:
    sd_bus_error_free(&e);
    sd_bus_message_unref(m);
    sd_bus_message_unref(reply);
    conn_close(&c);
    return rc;
}

int rt_systemd_stop(const struct ctl_config *cfg, json_t *instance, const char **how, char *err) {
    const char *unit = json_string_value(json_object_get(instance, "unit"));
    struct conn c;
    *how = "nothing to stop";
    if (!unit) return 0;
    if (conn_open(cfg, &c, err) < 0) return -1;
    int rc = stop_unit(cfg, &c, unit, how, err);
    if (rc == 0) sd_bus_call_method(c.bus, SD_DEST, SD_PATH, SD_MGR, "ResetFailedUnit", NULL, NULL, "s", unit);
    conn_close(&c);
    return rc;
}

bool rt_systemd_alive(const struct ctl_config *cfg, json_t *instance) {
    const char *unit = json_string_value(json_object_get(instance, "unit"));
    sd_bus *bus = NULL;
    char err[CTL_ERR_LEN], state[64] = "";
    int r;
    if (!unit) return false;
    /* No Subscribe here: a plain connection to read one property. */
    if (cfg->systemd_bus && *cfg->systemd_bus) {
        if (sd_bus_new(&bus) < 0) return false;
        sd_bus_set_address(bus, cfg->systemd_bus);
        sd_bus_set_bus_client(bus, 1);
        if (sd_bus_start(bus) < 0) {
            sd_bus_unref(bus);
            return false;
        }
    } else if (sd_bus_open_system(&bus) < 0) {
        return false;
    }
    r = unit_state(bus, unit, state, sizeof state, err);
    sd_bus_flush_close_unref(bus);
    return r == 0 &&
        (!strcmp(state, "active") || !strcmp(state, "activating") || !strcmp(state, "reloading") ||
         !strcmp(state, "deactivating"));
}
