/*
 * runtime_systemd.c — the server as a transient systemd unit, driven over D-Bus (sd-bus).
 *
 * StartTransientUnit with RootDirectory= the unpacked image, BindPaths= the data dir at
 * /data, ExecStart= the server, Environment=, User= the image's user, and the log appended
 * to the deploy's log file. Jobs are awaited by polling the unit's ActiveState (simpler and
 * as reliable as matching JobRemoved for one unit). Stop is StopUnit; a unit still up after
 * the grace period gets KillUnit(SIGKILL).
 *
 * Tested against a private dbus-daemon with a fake org.freedesktop.systemd1 (no systemd as
 * PID 1 in the test environment); see tests/control/test_systemd.c.
 */
#include "runtime.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MGR "org.freedesktop.systemd1.Manager"

static int bus_open(const struct ctl_config *cfg, sd_bus **out, char *err)
{
    sd_bus *bus = NULL;
    int r;
    if (cfg->systemd_bus && *cfg->systemd_bus) {
        if ((r = sd_bus_new(&bus)) < 0)
            return ctl_errf(err, "sd_bus_new: %s", strerror(-r));
        sd_bus_set_address(bus, cfg->systemd_bus);
        sd_bus_set_bus_client(bus, 1);
        if ((r = sd_bus_start(bus)) < 0) {
            sd_bus_unref(bus);
            return ctl_errf(err, "D-Bus %s: %s", cfg->systemd_bus, strerror(-r));
        }
    } else if ((r = sd_bus_open_system(&bus)) < 0) {
        return ctl_errf(err, "system D-Bus: %s", strerror(-r));
    }
    *out = bus;
    return 0;
}

/* ActiveState of unit, or "" when the unit does not exist. */
static int unit_state(sd_bus *bus, const char *unit, char *state, size_t len, char *err)
{
    sd_bus_error e = SD_BUS_ERROR_NULL;
    sd_bus_message *m = NULL;
    const char *path = NULL;
    state[0] = 0;
    int r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "GetUnit", &e, &m, "s", unit);
    if (r < 0) {
        int nosuch = sd_bus_error_has_name(&e, "org.freedesktop.systemd1.NoSuchUnit");
        if (!nosuch)
            ctl_errf(err, "GetUnit %s: %s", unit, e.message ? e.message : strerror(-r));
        sd_bus_error_free(&e);
        return nosuch ? 0 : -1;
    }
    sd_bus_message_read(m, "o", &path);
    char *p = ctl_strdup(path);
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

int rt_systemd_start(const struct ctl_config *cfg, const struct rt_start *s, char *const *argv,
                     char *const *envp, json_t **instance, char *err)
{
    sd_bus *bus = NULL;
    sd_bus_message *m = NULL, *reply = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int rc = -1, r;
    const char *unit = cfg->systemd_unit;
    if (bus_open(cfg, &bus, err) < 0)
        return -1;
    /* A leftover unit of the same name (failed or still up) must go first. */
    sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "ResetFailedUnit", NULL, NULL, "s", unit);
    if ((r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MGR, "StartTransientUnit")) < 0)
        goto bus_err;
    if ((r = sd_bus_message_append(m, "ss", unit, "fail")) < 0)
        goto bus_err;
    if ((r = sd_bus_message_open_container(m, 'a', "(sv)")) < 0)
        goto bus_err;
    char desc[256];
    snprintf(desc, sizeof desc, "beava %s (beava-control)", s->digest ? s->digest : "");
    r = sd_bus_message_append(m, "(sv)", "Description", "s", desc);
    if (r >= 0)
        r = sd_bus_message_append(m, "(sv)", "RootDirectory", "s", s->rootfs);
    if (r >= 0)
        r = sd_bus_message_append(m, "(sv)", "BindPaths", "a(ssbt)", 1, cfg->runtime_data_dir, "/data", 0, (uint64_t)0);
    if (r >= 0 && *cfg->runtime_config)
        r = sd_bus_message_append(m, "(sv)", "BindReadOnlyPaths", "a(ssbt)", 1, cfg->runtime_config,
                                  "/etc/beava/beava.yaml", 0, (uint64_t)0);
    if (r >= 0)
        r = sd_bus_message_append(m, "(sv)", "WorkingDirectory", "s", "/data");
    if (r >= 0)
        r = sd_bus_message_append(m, "(sv)", "KillSignal", "i", SIGTERM);
    if (r >= 0)
        r = sd_bus_message_append(m, "(sv)", "TimeoutStopUSec", "t", (uint64_t)cfg->stop_grace_s * 1000000u);
    if (r >= 0 && s->log_path) {
        r = sd_bus_message_append(m, "(sv)", "StandardOutputFileToAppend", "s", s->log_path);
        if (r >= 0)
            r = sd_bus_message_append(m, "(sv)", "StandardErrorFileToAppend", "s", s->log_path);
    }
    const char *user = json_string_value(json_object_get(s->image_config, "User"));
    if (r >= 0 && user && *user)
        r = sd_bus_message_append(m, "(sv)", "User", "s", user);
    if (r < 0)
        goto bus_err;
    /* Environment=as */
    if ((r = sd_bus_message_open_container(m, 'r', "sv")) < 0 ||
        (r = sd_bus_message_append(m, "s", "Environment")) < 0 ||
        (r = sd_bus_message_open_container(m, 'v', "as")) < 0 ||
        (r = sd_bus_message_append_strv(m, (char **)envp)) < 0 ||
        (r = sd_bus_message_close_container(m)) < 0 || (r = sd_bus_message_close_container(m)) < 0)
        goto bus_err;
    /* ExecStart=a(sasb) */
    if ((r = sd_bus_message_open_container(m, 'r', "sv")) < 0 ||
        (r = sd_bus_message_append(m, "s", "ExecStart")) < 0 ||
        (r = sd_bus_message_open_container(m, 'v', "a(sasb)")) < 0 ||
        (r = sd_bus_message_open_container(m, 'a', "(sasb)")) < 0 ||
        (r = sd_bus_message_open_container(m, 'r', "sasb")) < 0 ||
        (r = sd_bus_message_append(m, "s", argv[0])) < 0 ||
        (r = sd_bus_message_append_strv(m, (char **)argv)) < 0 ||
        (r = sd_bus_message_append(m, "b", 0)) < 0 ||
        (r = sd_bus_message_close_container(m)) < 0 || (r = sd_bus_message_close_container(m)) < 0 ||
        (r = sd_bus_message_close_container(m)) < 0 || (r = sd_bus_message_close_container(m)) < 0)
        goto bus_err;
    if ((r = sd_bus_message_close_container(m)) < 0)
        goto bus_err;
    if ((r = sd_bus_message_append(m, "a(sa(sv))", 0)) < 0)
        goto bus_err;
    if ((r = sd_bus_call(bus, m, 30 * 1000000ull, &e, &reply)) < 0) {
        ctl_errf(err, "StartTransientUnit %s: %s", unit, e.message ? e.message : strerror(-r));
        goto out;
    }
    /* Await the start job: the unit leaves "activating" (or never appears). */
    char state[64] = "";
    int64_t deadline = ctl_mono_ms() + 30000;
    for (;;) {
        if (unit_state(bus, unit, state, sizeof state, err) < 0)
            goto out;
        if (strcmp(state, "activating") != 0 && *state)
            break;
        if (ctl_mono_ms() > deadline)
            break;
        usleep(100000);
    }
    if (strcmp(state, "active") != 0) {
        ctl_errf(err, "unit %s is '%s' after its start job", unit, *state ? state : "gone");
        goto out;
    }
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    *instance = json_pack("{s:s,s:s,s:s,s:s,s:s}", "runtime", "systemd", "unit", unit, "digest",
                          s->digest ? s->digest : "", "log", s->log_path ? s->log_path : "",
                          "started", ts);
    rc = 0;
    goto out;
bus_err:
    ctl_errf(err, "building StartTransientUnit: %s", strerror(-r));
out:
    sd_bus_error_free(&e);
    sd_bus_message_unref(m);
    sd_bus_message_unref(reply);
    sd_bus_flush_close_unref(bus);
    return rc;
}

int rt_systemd_stop(const struct ctl_config *cfg, json_t *instance, char *err)
{
    const char *unit = json_string_value(json_object_get(instance, "unit"));
    sd_bus *bus = NULL;
    sd_bus_error e = SD_BUS_ERROR_NULL;
    if (!unit)
        return 0;
    if (bus_open(cfg, &bus, err) < 0)
        return -1;
    int rc = 0;
    char state[64];
    int r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "StopUnit", &e, NULL, "ss", unit, "replace");
    if (r < 0 && !sd_bus_error_has_name(&e, "org.freedesktop.systemd1.NoSuchUnit")) {
        rc = ctl_errf(err, "StopUnit %s: %s", unit, e.message ? e.message : strerror(-r));
        goto out;
    }
    int64_t deadline = ctl_mono_ms() + (cfg->stop_grace_s + 5) * 1000;
    bool killed = false;
    for (;;) {
        if (unit_state(bus, unit, state, sizeof state, err) < 0) {
            rc = -1;
            break;
        }
        if (!*state || !strcmp(state, "inactive") || !strcmp(state, "failed"))
            break;
        if (ctl_mono_ms() > deadline) {
            if (killed) {
                rc = ctl_errf(err, "unit %s still '%s' after SIGKILL", unit, state);
                break;
            }
            sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "KillUnit", NULL, NULL, "ssi", unit, "all", SIGKILL);
            killed = true;
            deadline = ctl_mono_ms() + 10000;
        }
        usleep(100000);
    }
    sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MGR, "ResetFailedUnit", NULL, NULL, "s", unit);
out:
    sd_bus_error_free(&e);
    sd_bus_flush_close_unref(bus);
    return rc;
}

bool rt_systemd_alive(const struct ctl_config *cfg, json_t *instance)
{
    const char *unit = json_string_value(json_object_get(instance, "unit"));
    sd_bus *bus = NULL;
    char err[CTL_ERR_LEN], state[64] = "";
    if (!unit || bus_open(cfg, &bus, err) < 0)
        return false;
    int r = unit_state(bus, unit, state, sizeof state, err);
    sd_bus_flush_close_unref(bus);
    return r == 0 && (!strcmp(state, "active") || !strcmp(state, "activating") ||
                      !strcmp(state, "reloading") || !strcmp(state, "deactivating"));
}
