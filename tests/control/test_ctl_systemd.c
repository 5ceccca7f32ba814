/*
 * Unit tests of the systemd runtime (control/src/runtime_systemd.c) over real D-Bus:
 * a private dbus-daemon on a unix socket in a temp dir, tests/control/fake_systemd.c owning
 * org.freedesktop.systemd1 on it (simulated units), and runtime_start/runtime_stop/
 * runtime_alive talking to it through systemd.bus. systemd as PID 1 cannot run here; this
 * is the nearest real test: the calls, their D-Bus types (the fake refuses what systemd
 * refuses), the unit properties, and that jobs are awaited through JobRemoved.
 * Needs dbus-daemon (Debian package dbus-daemon) and FAKE_SYSTEMD_BIN (set by CTest).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "runtime.h"
#include "util.h"

static char tmp[64];
static char addr[512];
static pid_t dbus_pid, fake_pid;
static struct ctl_config *cfg;
static char rootfs[256], datadir[256], logpath[256], recpath[256];

/* Spawn argv with stdout on a pipe; read its first line into line. */
static pid_t spawn_line(char *const *argv, char *line, size_t len)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    line[0] = 0;
    while (got < len - 1) {
        ssize_t n = read(p[0], line + got, 1);
        if (n <= 0 || line[got] == '\n')
            break;
        got++;
    }
    line[got] = 0;
    close(p[0]);
    return pid;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static int setup(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    const char *fake = getenv("FAKE_SYSTEMD_BIN");
    if (!fake || access(fake, X_OK) != 0) {
        fprintf(stderr, "FAKE_SYSTEMD_BIN is not set to the built fake_systemd\n");
        return -1;
    }
    snprintf(tmp, sizeof tmp, "/tmp/ctl-systemd-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    char *conf = ctl_asprintf("%s/bus.conf", tmp);
    char *text = ctl_asprintf(
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
        "<busconfig><type>session</type><listen>unix:path=%s/bus</listen><auth>EXTERNAL</auth>\n"
        "<policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>"
        "<allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n", tmp);
    write_file(conf, text, 0644);
    free(text);
    char *cf = ctl_asprintf("--config-file=%s", conf);
    char *dargv[] = {"dbus-daemon", cf, "--nofork", "--print-address=1", NULL};
    dbus_pid = spawn_line(dargv, addr, sizeof addr);
    free(cf);
    free(conf);
    if (dbus_pid <= 0 || strncmp(addr, "unix:", 5) != 0) {
        fprintf(stderr, "dbus-daemon did not start (is the dbus-daemon package installed?) '%s'\n", addr);
        return -1;
    }
    snprintf(recpath, sizeof recpath, "%s/record.jsonl", tmp);
    char line[64];
    char *fargv[] = {(char *)fake, "--address", addr, "--record", recpath, NULL};
    fake_pid = spawn_line(fargv, line, sizeof line);
    if (fake_pid <= 0 || strcmp(line, "ready") != 0) {
        fprintf(stderr, "fake_systemd did not start: '%s'\n", line);
        return -1;
    }
    /* A minimal image rootfs: the mount points runtime_start checks, a server, a user. */
    snprintf(rootfs, sizeof rootfs, "%s/rootfs", tmp);
    const char *dirs[] = {"data", "dev", "proc", "tmp", "etc", "usr/bin", NULL};
    for (int i = 0; dirs[i]; i++) {
        char *d = ctl_asprintf("%s/%s", rootfs, dirs[i]);
        ctl_mkdirs(d, 0755, err);
        free(d);
    }
    char *b = ctl_asprintf("%s/usr/bin/beava", rootfs);
    write_file(b, "#!/bin/sh\nexit 0\n", 0755);
    free(b);
    char *pw = ctl_asprintf("%s/etc/passwd", rootfs);
    write_file(pw, "root:x:0:0::/:/sbin/nologin\nbeava:x:65532:65533::/data:/sbin/nologin\n", 0644);
    free(pw);
    snprintf(datadir, sizeof datadir, "%s/data", tmp);
    snprintf(logpath, sizeof logpath, "%s/server.log", tmp);
    char *yaml = ctl_asprintf("%s/control.yaml", tmp);
    write_file(yaml, "{}\n", 0644);
    char s1[600], s2[300], s3[300];
    snprintf(s1, sizeof s1, "systemd.bus=%s", addr);
    snprintf(s2, sizeof s2, "runtime.data_dir=%s", datadir);
    snprintf(s3, sizeof s3, "state_dir=%s/state", tmp);
    char *sets[] = {"runtime.kind=systemd", s1, s2, s3, "systemd.unit=beava-test.service",
                    "runtime.stop_grace_s=1", "runtime.http_addr=127.0.0.1:18080",
                    "runtime.admin_addr=127.0.0.1:18090", "runtime.tcp_port=18081", "runtime.env.EXTRA=1"};
    int rc = config_load(yaml, sets, (int)(sizeof sets / sizeof sets[0]), &cfg, err);
    free(yaml);
    if (rc < 0) {
        fprintf(stderr, "config: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN];
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
    }
    if (dbus_pid > 0) {
        kill(dbus_pid, SIGTERM);
        waitpid(dbus_pid, NULL, 0);
    }
    config_free(cfg);
    ctl_rmtree(tmp, err);
    return 0;
}

/* Records of the fake since line `from` (JSON array; caller frees). */
static json_t *records(size_t from)
{
    json_t *out = json_array();
    FILE *f = fopen(recpath, "r");
    if (!f)
        return out;
    char *line = NULL;
    size_t cap = 0, i = 0;
    while (getline(&line, &cap, f) > 0) {
        if (i++ < from)
            continue;
        json_t *j = json_loads(line, 0, NULL);
        if (j)
            json_array_append_new(out, j);
    }
    free(line);
    fclose(f);
    return out;
}

static size_t nrecords(void)
{
    json_t *r = records(0);
    size_t n = json_array_size(r);
    json_decref(r);
    return n;
}

/* Index of the first record with this method at or after `from` in recs, -1 if none. */
static int find_method(json_t *recs, const char *method, int from)
{
    for (size_t i = (size_t)(from < 0 ? 0 : from); i < json_array_size(recs); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(recs, i), "method")), method))
            return (int)i;
    return -1;
}

static void behave(const char *k, const char *v)
{
    sd_bus *bus = NULL;
    assert_int_equal(sd_bus_new(&bus), 0);
    sd_bus_set_address(bus, addr);
    sd_bus_set_bus_client(bus, 1);
    assert_true(sd_bus_start(bus) >= 0);
    sd_bus_error e = SD_BUS_ERROR_NULL;
    int r = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                               "org.beava.FakeSystemd", "SetBehaviour", &e, NULL, "ss", k, v);
    sd_bus_error_free(&e);
    sd_bus_flush_close_unref(bus);
    assert_true(r >= 0);
}

static json_t *image_config(void)
{
    return json_pack("{s:s,s:[s]}", "User", "beava", "Env", "PATH=/usr/bin:/bin");
}

static int start(json_t **inst, char *err)
{
    json_t *ic = image_config();
    struct rt_start s = {.digest = "sha256:0123", .rootfs = rootfs, .binary = "/usr/bin/beava",
                         .image_config = ic, .log_path = logpath};
    int rc = runtime_start(cfg, &s, inst, err);
    json_decref(ic);
    return rc;
}

static bool has_string(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v) && !strcmp(json_string_value(v), s)) return true;
    return false;
}

/* The unit's properties, and the start job awaited through JobRemoved. */
static void test_start_properties_and_job(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    /* The unit is active after 300 ms, its job reported done 600 ms later: a client that
     * awaits JobRemoved returns after ~900 ms (one polling ActiveState after ~300). */
    behave("start_delay_ms", "300");
    behave("job_removed_lag_ms", "600");
    size_t from = nrecords();
    json_t *inst = NULL;
    int64_t t0 = ctl_mono_ms();
    int rc = start(&inst, err);
    int64_t took = ctl_mono_ms() - t0;
    assert_int_equal(rc, 0);
    assert_true(took >= 850); /* returned only after JobRemoved, not at the reply */
    behave("job_removed_lag_ms", "0");
    assert_string_equal(json_string_value(json_object_get(inst, "runtime")), "systemd");
    assert_string_equal(json_string_value(json_object_get(inst, "unit")), "beava-test.service");
    assert_true(runtime_alive(cfg, inst));

    json_t *recs = records(from);
    int sub = find_method(recs, "Subscribe", 0);
    int sti = find_method(recs, "StartTransientUnit", 0);
    int jr = find_method(recs, "JobRemoved(signal)", sti);
    assert_true(sub >= 0 && sti > sub && jr > sti);
    json_t *call = json_array_get(recs, (size_t)sti);
    assert_string_equal(json_string_value(json_object_get(call, "unit")), "beava-test.service");
    assert_string_equal(json_string_value(json_object_get(call, "mode")), "fail");
    json_t *p = json_object_get(call, "properties");
    assert_string_equal(json_string_value(json_object_get(p, "RootDirectory")), rootfs);
    assert_string_equal(json_string_value(json_object_get(p, "Type")), "exec");
    assert_string_equal(json_string_value(json_object_get(p, "ProtectSystem")), "strict");
    assert_true(json_is_true(json_object_get(p, "MountAPIVFS")));
    assert_true(json_is_true(json_object_get(p, "PrivateTmp")));
    /* BindPaths a(ssbt): [[data dir, /data, false, 0]] */
    json_t *bp = json_object_get(p, "BindPaths");
    assert_int_equal(json_array_size(bp), 1);
    assert_string_equal(json_string_value(json_array_get(json_array_get(bp, 0), 0)), datadir);
    assert_string_equal(json_string_value(json_array_get(json_array_get(bp, 0), 1)), "/data");
    assert_true(json_is_false(json_array_get(json_array_get(bp, 0), 2)));
    assert_null(json_object_get(p, "BindReadOnlyPaths")); /* runtime.config unset */
    /* ExecStart a(sasb): [[/usr/bin/beava, [/usr/bin/beava, --data-dir, /data], false]] */
    json_t *ex = json_array_get(json_object_get(p, "ExecStart"), 0);
    assert_string_equal(json_string_value(json_array_get(ex, 0)), "/usr/bin/beava");
    json_t *args = json_array_get(ex, 1);
    assert_int_equal(json_array_size(args), 3);
    assert_string_equal(json_string_value(json_array_get(args, 0)), "/usr/bin/beava");
    assert_string_equal(json_string_value(json_array_get(args, 1)), "--data-dir");
    assert_string_equal(json_string_value(json_array_get(args, 2)), "/data");
    json_t *env = json_object_get(p, "Environment");
    assert_true(has_string(env, "PATH=/usr/bin:/bin"));
    assert_true(has_string(env, "BEAVA_LISTEN_ADDR=127.0.0.1:18080"));
    assert_true(has_string(env, "BEAVA_ADMIN_ADDR=127.0.0.1:18090"));
    assert_true(has_string(env, "BEAVA_TCP_PORT=18081"));
    assert_true(has_string(env, "EXTRA=1"));
    /* the image's user "beava" resolved in the image's /etc/passwd, passed as numbers */
    assert_string_equal(json_string_value(json_object_get(p, "User")), "65532");
    assert_string_equal(json_string_value(json_object_get(p, "Group")), "65533");
    assert_string_equal(json_string_value(json_object_get(p, "WorkingDirectory")), "/data");
    assert_int_equal(json_integer_value(json_object_get(p, "KillSignal")), SIGTERM);
    assert_int_equal(json_integer_value(json_object_get(p, "TimeoutStopUSec")), 1000000);
    /* the server's descriptor limit: soft = hard = ours (systemd's default soft one is 1024) */
    struct rlimit nofile;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &nofile), 0);
    if (nofile.rlim_max != RLIM_INFINITY) {
        assert_int_equal(json_integer_value(json_object_get(p, "LimitNOFILE")), (json_int_t)nofile.rlim_max);
        assert_int_equal(json_integer_value(json_object_get(p, "LimitNOFILESoft")), (json_int_t)nofile.rlim_max);
    }
    assert_string_equal(json_string_value(json_object_get(p, "StandardOutputFileToAppend")), logpath);
    assert_string_equal(json_string_value(json_object_get(p, "StandardErrorFileToAppend")), logpath);
    assert_true(strstr(json_string_value(json_object_get(p, "Description")), "sha256:0123") != NULL);
    json_decref(recs);

    /* stop: StopUnit, its job awaited, no KillUnit needed */
    behave("stop_delay_ms", "500");
    from = nrecords();
    json_t *how = NULL;
    t0 = ctl_mono_ms();
    assert_int_equal(runtime_stop(cfg, inst, &how, err), 0);
    took = ctl_mono_ms() - t0;
    assert_true(took >= 450);
    assert_string_equal(json_string_value(json_object_get(how, "via")), "StopUnit");
    recs = records(from);
    int stop = find_method(recs, "StopUnit", 0);
    assert_true(stop >= 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(recs, (size_t)stop), "mode")), "replace");
    assert_true(find_method(recs, "JobRemoved(signal)", stop) > stop);
    assert_int_equal(find_method(recs, "KillUnit", 0), -1);
    assert_false(runtime_alive(cfg, inst));
    json_decref(recs);
    json_decref(how);
    /* stopping what is gone already is success */
    assert_int_equal(runtime_stop(cfg, inst, NULL, err), 0);
    json_decref(inst);
    behave("start_delay_ms", "200");
    behave("stop_delay_ms", "200");
}

/* A stop job that does not end within the grace period: KillUnit(all, SIGKILL). */
static void test_stubborn_stop_gets_sigkill(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    json_t *inst = NULL;
    assert_int_equal(start(&inst, err), 0);
    behave("stop", "stubborn");
    size_t from = nrecords();
    json_t *how = NULL;
    int64_t t0 = ctl_mono_ms();
    assert_int_equal(runtime_stop(cfg, inst, &how, err), 0);
    int64_t took = ctl_mono_ms() - t0;
    assert_true(took >= 2900 && took < 8000); /* grace 1 s + 2 s slack, then SIGKILL */
    assert_non_null(strstr(json_string_value(json_object_get(how, "via")), "KillUnit"));
    json_t *recs = records(from);
    int stop = find_method(recs, "StopUnit", 0), kill_ = find_method(recs, "KillUnit", 0);
    assert_true(stop >= 0 && kill_ > stop);
    json_t *k = json_array_get(recs, (size_t)kill_);
    assert_string_equal(json_string_value(json_object_get(k, "who")), "all");
    assert_int_equal(json_integer_value(json_object_get(k, "signal")), SIGKILL);
    assert_true(find_method(recs, "JobRemoved(signal)", kill_) > kill_);
    /* killed units are "failed": reset so the name can be used again */
    assert_true(find_method(recs, "ResetFailedUnit", kill_) > kill_);
    json_decref(recs);
    json_decref(how);
    json_decref(inst);
    behave("stop", "normal");
    assert_int_equal(start(&inst, err), 0);
    assert_int_equal(runtime_stop(cfg, inst, NULL, err), 0);
    json_decref(inst);
}

/* A start job that ends "failed" is a failed start, with the result in the message. */
static void test_failed_start_job(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    behave("start_result", "failed");
    json_t *inst = NULL;
    assert_int_equal(start(&inst, err), -1);
    assert_null(inst);
    assert_non_null(strstr(err, "result 'failed'"));
    behave("start_result", "done");
    /* the failed unit is reset before the next start (systemd would refuse the name) */
    size_t from = nrecords();
    assert_int_equal(start(&inst, err), 0);
    json_t *recs = records(from);
    int reset = find_method(recs, "ResetFailedUnit", 0);
    assert_true(reset >= 0 && find_method(recs, "StartTransientUnit", reset) > reset);
    json_decref(recs);
    assert_int_equal(runtime_stop(cfg, inst, NULL, err), 0);
    json_decref(inst);
}

/* A unit of that name still running (a lost instance.json): stopped before the new start. */
static void test_leftover_unit_stopped_first(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    json_t *a = NULL, *b = NULL;
    assert_int_equal(start(&a, err), 0);
    size_t from = nrecords();
    assert_int_equal(start(&b, err), 0);
    json_t *recs = records(from);
    int stop = find_method(recs, "StopUnit", 0), sti = find_method(recs, "StartTransientUnit", 0);
    assert_true(stop >= 0 && sti > stop);
    assert_true(find_method(recs, "JobRemoved(signal)", stop) < sti); /* its stop job ended first */
    json_decref(recs);
    assert_int_equal(runtime_stop(cfg, b, NULL, err), 0);
    json_decref(a);
    json_decref(b);
}

/* What systemd would refuse, the fake refuses too: the error reaches the caller. */
static void test_refusals_reach_the_caller(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    json_t *inst = NULL;
    /* an image user that is not in the image's /etc/passwd */
    json_t *ic = json_pack("{s:s}", "User", "nobody-here");
    struct rt_start s = {.digest = "sha256:0123", .rootfs = rootfs, .binary = "/usr/bin/beava",
                         .image_config = ic, .log_path = logpath};
    assert_int_equal(runtime_start(cfg, &s, &inst, err), -1);
    assert_non_null(strstr(err, "not in the image's /etc/passwd"));
    json_decref(ic);
    /* a unit name systemd does not accept for a service */
    char *old = cfg->systemd_unit;
    cfg->systemd_unit = "beava-test.timer";
    assert_int_equal(start(&inst, err), -1);
    assert_non_null(strstr(err, "StartTransientUnit beava-test.timer"));
    cfg->systemd_unit = old;
    /* no bus at that address */
    char *bus = cfg->systemd_bus;
    char *nobus = ctl_asprintf("unix:path=%s/nobus", tmp);
    cfg->systemd_bus = nobus;
    assert_int_equal(start(&inst, err), -1);
    assert_non_null(strstr(err, "D-Bus"));
    cfg->systemd_bus = bus;
    free(nobus);
}

/* runtime.config: bound read-only at /etc/beava/beava.yaml (the image must have the file). */
static void test_server_config_bound_read_only(void **st)
{
    (void)st;
    char err[CTL_ERR_LEN] = "";
    char *conf = ctl_asprintf("%s/beava.yaml", tmp);
    write_file(conf, "log_level: info\n", 0644);
    char *old = cfg->runtime_config;
    cfg->runtime_config = conf;
    json_t *inst = NULL;
    assert_int_equal(start(&inst, err), -1);
    assert_non_null(strstr(err, "mount point for runtime.config"));
    char *mp = ctl_asprintf("%s/etc/beava", rootfs);
    ctl_mkdirs(mp, 0755, err);
    free(mp);
    mp = ctl_asprintf("%s/etc/beava/beava.yaml", rootfs);
    write_file(mp, "", 0644);
    free(mp);
    size_t from = nrecords();
    assert_int_equal(start(&inst, err), 0);
    json_t *recs = records(from);
    json_t *p = json_object_get(json_array_get(recs, (size_t)find_method(recs, "StartTransientUnit", 0)), "properties");
    json_t *ro = json_array_get(json_object_get(p, "BindReadOnlyPaths"), 0);
    assert_string_equal(json_string_value(json_array_get(ro, 0)), conf);
    assert_string_equal(json_string_value(json_array_get(ro, 1)), "/etc/beava/beava.yaml");
    json_t *args = json_array_get(json_array_get(json_object_get(p, "ExecStart"), 0), 1);
    assert_int_equal(json_array_size(args), 5);
    assert_string_equal(json_string_value(json_array_get(args, 3)), "--config");
    assert_string_equal(json_string_value(json_array_get(args, 4)), "/etc/beava/beava.yaml");
    json_decref(recs);
    assert_int_equal(runtime_stop(cfg, inst, NULL, err), 0);
    json_decref(inst);
    cfg->runtime_config = old;
    free(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_properties_and_job),
        cmocka_unit_test(test_stubborn_stop_gets_sigkill),
        cmocka_unit_test(test_failed_start_job),
        cmocka_unit_test(test_leftover_unit_stopped_first),
        cmocka_unit_test(test_refusals_reach_the_caller),
        cmocka_unit_test(test_server_config_bound_read_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
