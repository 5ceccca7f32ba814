/*
 * fake_systemd.c — a fake org.freedesktop.systemd1 on a private D-Bus, for testing
 * control/src/runtime_systemd.c where systemd cannot run as PID 1.
 *
 *   fake_systemd --address ADDR --record FILE [--exec]
 *
 * Owns org.freedesktop.systemd1 on the bus at ADDR and prints "ready" on stdout once it
 * does. Implements the part of the Manager API beava-control uses: Subscribe, Unsubscribe,
 * GetUnit, StartTransientUnit, StopUnit, KillUnit, ResetFailedUnit, the JobRemoved signal,
 * and the Unit interface's Id/ActiveState properties on /org/freedesktop/systemd1/unit/<x>.
 * Like systemd it refuses unknown properties and wrong D-Bus types (the signature table
 * below is systemd's), a User=/Group= that is not a user name or a number, non-absolute
 * paths, a unit name that is loaded already (UnitExists) and a non-.service name.
 * Every Manager call is appended to FILE as a JSON line: {"method", "sender", "t_ms", ...}
 * with StartTransientUnit's properties decoded into JSON (a(ssbt) -> [[s,s,b,n]], ...).
 *
 * Without --exec the unit's life is simulated: a start job ends "start_delay_ms" later with
 * "start_result" (its JobRemoved "job_removed_lag_ms" after the unit is already active);
 * a stop job "stop_delay_ms" later, or, with stop=stubborn, only when KillUnit sends
 * SIGKILL. Tune with org.beava.FakeSystemd.SetBehaviour(key, value).
 * With --exec the unit really runs, the way systemd would run it, under bubblewrap:
 * RootDirectory= bound at / (read-only with ProtectSystem=strict), MountAPIVFS= /dev and
 * /proc, PrivateTmp= a tmpfs /tmp, BindPaths=/BindReadOnlyPaths=, WorkingDirectory=,
 * Environment=, User=/Group= (setuid before bwrap), stdout/stderr appended to
 * StandardOutputFileToAppend=. The unit is its own process group (the fake is a child
 * subreaper, so the group is "the cgroup"): StopUnit sends KillSignal= to the group and
 * SIGKILL after TimeoutStopUSec=, KillUnit sends the given signal; the unit is inactive
 * once the group is empty (failed when the main process exited non-zero or by a signal
 * other than KillSignal).
 */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#define MGR "org.freedesktop.systemd1.Manager"
#define ROOT "/org/freedesktop/systemd1"
#define UNIT_PREFIX "/org/freedesktop/systemd1/unit"

struct unit {
    char name[256];
    char path[600];
    char state[32];
    json_t *props;
    uint32_t stop_job;       /* pending stop job id, 0 = none */
    pid_t pid;               /* exec mode: main pid = process group id */
    int exit_status;         /* wait status of the main pid, -1 while it runs */
    int kill_signal;
    uint64_t timeout_stop_us;
    sd_event_source *timer;  /* simulated job end / stop timeout */
    struct unit *next;
};

static sd_bus *bus;
static sd_event *ev;
static struct unit *units;
static uint32_t next_job = 1;
static FILE *record;
static bool exec_mode;
static long long t0_ms;
static struct {
    long start_delay_ms, stop_delay_ms, job_removed_lag_ms;
    char start_result[32];
    bool stubborn;
} beh = {200, 200, 0, "done", false};

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static void rec(const char *method, sd_bus_message *m, json_t *fields)
{
    json_t *j = fields ? fields : json_object();
    json_object_set_new(j, "method", json_string(method));
    json_object_set_new(j, "t_ms", json_integer(mono_ms() - t0_ms));
    const char *snd = m ? sd_bus_message_get_sender(m) : NULL;
    if (snd)
        json_object_set_new(j, "sender", json_string(snd));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    fprintf(record, "%s\n", s);
    fflush(record);
    free(s);
    json_decref(j);
}

static struct unit *find_unit(const char *name)
{
    for (struct unit *u = units; u; u = u->next)
        if (!strcmp(u->name, name))
            return u;
    return NULL;
}

static void free_unit(struct unit *u)
{
    struct unit **pp = &units;
    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp)
        *pp = u->next;
    sd_event_source_unref(u->timer);
    json_decref(u->props);
    free(u);
}

static void job_path(uint32_t id, char *out, size_t len)
{
    snprintf(out, len, ROOT "/job/%u", id);
}

static void emit_job_removed(uint32_t id, const char *unit, const char *result)
{
    char p[64];
    job_path(id, p, sizeof p);
    sd_bus_emit_signal(bus, ROOT, MGR, "JobRemoved", "uoss", id, p, unit, result);
    rec("JobRemoved(signal)", NULL, json_pack("{s:I,s:s,s:s}", "job", (json_int_t)id, "unit", unit, "result", result));
}

/* ---- D-Bus values to JSON ------------------------------------------------------------- */

static json_t *read_any(sd_bus_message *m);

static json_t *read_container(sd_bus_message *m, char type, const char *contents)
{
    if (sd_bus_message_enter_container(m, type, contents) < 0)
        return NULL;
    json_t *out;
    if (type == 'v') {
        out = read_any(m);
    } else {
        out = json_array();
        json_t *x;
        while ((x = read_any(m)))
            json_array_append_new(out, x);
    }
    sd_bus_message_exit_container(m);
    return out;
}

static json_t *read_any(sd_bus_message *m)
{
    char type;
    const char *contents;
    if (sd_bus_message_peek_type(m, &type, &contents) <= 0)
        return NULL;
    union {
        const char *s;
        int b;
        uint8_t y;
        int16_t n;
        uint16_t q;
        int32_t i;
        uint32_t u;
        int64_t x;
        uint64_t t;
        double d;
    } v;
    switch (type) {
    case 's': case 'o': case 'g':
        sd_bus_message_read_basic(m, type, &v.s);
        return json_string(v.s);
    case 'b':
        sd_bus_message_read_basic(m, type, &v.b);
        return json_boolean(v.b);
    case 'y': sd_bus_message_read_basic(m, type, &v.y); return json_integer(v.y);
    case 'n': sd_bus_message_read_basic(m, type, &v.n); return json_integer(v.n);
    case 'q': sd_bus_message_read_basic(m, type, &v.q); return json_integer(v.q);
    case 'i': case 'h': sd_bus_message_read_basic(m, type, &v.i); return json_integer(v.i);
    case 'u': sd_bus_message_read_basic(m, type, &v.u); return json_integer(v.u);
    case 'x': sd_bus_message_read_basic(m, type, &v.x); return json_integer(v.x);
    case 't': sd_bus_message_read_basic(m, type, &v.t); return json_integer((json_int_t)v.t);
    case 'd': sd_bus_message_read_basic(m, type, &v.d); return json_real(v.d);
    case 'a': case 'r': case 'v': case 'e':
        return read_container(m, type, contents);
    default:
        return NULL;
    }
}

/* ---- validation, as systemd does it ------------------------------------------------------ */

static const struct {
    const char *name, *sig;
} KNOWN[] = {
    {"Description", "s"}, {"Type", "s"}, {"RootDirectory", "s"}, {"MountAPIVFS", "b"},
    {"ProtectSystem", "s"}, {"PrivateTmp", "b"}, {"BindPaths", "a(ssbt)"},
    {"BindReadOnlyPaths", "a(ssbt)"}, {"WorkingDirectory", "s"}, {"KillSignal", "i"},
    {"KillMode", "s"}, {"SendSIGKILL", "b"}, {"TimeoutStopUSec", "t"}, {"TimeoutStartUSec", "t"},
    {"StandardOutputFileToAppend", "s"}, {"StandardErrorFileToAppend", "s"}, {"User", "s"},
    {"Group", "s"}, {"Environment", "as"}, {"ExecStart", "a(sasb)"}, {"Restart", "s"},
    {"CollectMode", "s"}, {"RemainAfterExit", "b"}, {"NoNewPrivileges", "b"}, {"ReadWritePaths", "as"},
    {"ReadOnlyPaths", "as"}, {"PrivateDevices", "b"}, {"ProtectHome", "s"}, {"UMask", "u"},
    {"LimitNOFILE", "t"}, {"LimitNOFILESoft", "t"},
};

static const char *known_sig(const char *name)
{
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++)
        if (!strcmp(KNOWN[i].name, name))
            return KNOWN[i].sig;
    return NULL;
}

/* systemd's valid_user_group_name(..., VALID_USER_ALLOW_NUMERIC), simplified. */
static bool valid_user(const char *s)
{
    if (!*s || strlen(s) > 31)
        return false;
    bool digits = true;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            digits = false;
    if (digits)
        return strtoul(s, NULL, 10) < 4294967295UL;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

static bool valid_env(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s)
        return false;
    for (const char *p = s; p < eq; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return false;
    return !isdigit((unsigned char)s[0]);
}

static int check_props(json_t *props, sd_bus_error *error)
{
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v) {
        const char *s = json_string_value(v);
        if ((!strcmp(k, "User") || !strcmp(k, "Group")) && !valid_user(s))
            return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid %s name: %s", k, s);
        if ((!strcmp(k, "RootDirectory") || !strcmp(k, "StandardOutputFileToAppend") ||
             !strcmp(k, "StandardErrorFileToAppend")) && s[0] != '/')
            return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s= path is not absolute: %s", k, s);
        if (!strcmp(k, "WorkingDirectory") && s[0] != '/' && s[0] != '~' && !(s[0] == '-' && s[1] == '/'))
            return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "WorkingDirectory= path is not absolute: %s", s);
        if (!strcmp(k, "Type") && !strstr(" simple exec forking oneshot dbus notify idle ", s))
            return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid service type %s", s);
        if (!strcmp(k, "ProtectSystem") && strcmp(s, "yes") && strcmp(s, "no") && strcmp(s, "full") &&
            strcmp(s, "strict"))
            return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid ProtectSystem setting: %s", s);
        if (!strcmp(k, "Environment")) {
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) if (!valid_env(json_string_value(e)))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid environment assignment: %s",
                                         json_string_value(e));
        }
        if (!strcmp(k, "BindPaths") || !strcmp(k, "BindReadOnlyPaths")) {
            size_t i;
            json_t *b;
            json_array_foreach(v, i, b) {
                const char *src = json_string_value(json_array_get(b, 0));
                const char *dst = json_string_value(json_array_get(b, 1));
                if (src[0] == '-')
                    src++;
                if (src[0] != '/' || dst[0] != '/')
                    return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s: paths must be absolute", k);
            }
        }
        if (!strcmp(k, "ExecStart")) {
            size_t i;
            json_t *c;
            json_array_foreach(v, i, c) {
                const char *path = json_string_value(json_array_get(c, 0));
                if (!path || path[0] != '/' || json_array_size(json_array_get(c, 1)) == 0)
                    return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Path %s is not absolute or argv empty",
                                             path ? path : "");
            }
        }
    }
    json_t *soft = json_object_get(props, "LimitNOFILESoft"), *hard = json_object_get(props, "LimitNOFILE");
    if (soft && hard && json_integer_value(soft) > json_integer_value(hard))
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "LimitNOFILESoft= is above LimitNOFILE=");
    if (!json_object_get(props, "ExecStart"))
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Service has no ExecStart= setting");
    return 0;
}

/* ---- exec mode ----------------------------------------------------------------------------- */

static const char *pstr(struct unit *u, const char *k)
{
    return json_string_value(json_object_get(u->props, k));
}

static int spawn(struct unit *u, char *why, size_t wl)
{
    json_t *ex = json_array_get(json_object_get(u->props, "ExecStart"), 0);
    json_t *args = json_array_get(ex, 1);
    const char *root = pstr(u, "RootDirectory");
    size_t n = 0, cap = 64 + 4 * json_array_size(args);
    cap += 4 * (json_array_size(json_object_get(u->props, "BindPaths")) +
                json_array_size(json_object_get(u->props, "BindReadOnlyPaths")));
    const char **argv = calloc(cap, sizeof *argv);
    argv[n++] = "bwrap";
    if (root) {
        argv[n++] = !strcmp(pstr(u, "ProtectSystem") ? pstr(u, "ProtectSystem") : "", "strict") ? "--ro-bind" : "--bind";
        argv[n++] = root;
        argv[n++] = "/";
    } else {
        argv[n++] = "--bind";
        argv[n++] = "/";
        argv[n++] = "/";
    }
    if (json_is_true(json_object_get(u->props, "MountAPIVFS")) || root) {
        argv[n++] = "--dev"; argv[n++] = "/dev";
        argv[n++] = "--proc"; argv[n++] = "/proc";
    }
    if (json_is_true(json_object_get(u->props, "PrivateTmp"))) {
        argv[n++] = "--tmpfs"; argv[n++] = "/tmp";
    }
    const char *kinds[2] = {"BindPaths", "BindReadOnlyPaths"};
    for (int k = 0; k < 2; k++) {
        size_t i;
        json_t *b;
        json_array_foreach(json_object_get(u->props, kinds[k]), i, b) {
            argv[n++] = k ? "--ro-bind" : "--bind";
            argv[n++] = json_string_value(json_array_get(b, 0));
            argv[n++] = json_string_value(json_array_get(b, 1));
        }
    }
    if (pstr(u, "WorkingDirectory")) {
        argv[n++] = "--chdir";
        argv[n++] = pstr(u, "WorkingDirectory");
    }
    argv[n++] = "--";
    argv[n++] = json_string_value(json_array_get(ex, 0));
    for (size_t i = 1; i < json_array_size(args); i++)
        argv[n++] = json_string_value(json_array_get(args, i));
    argv[n] = NULL;
    json_t *envj = json_object_get(u->props, "Environment");
    const char **envp = calloc(json_array_size(envj) + 1, sizeof *envp);
    for (size_t i = 0; i < json_array_size(envj); i++)
        envp[i] = json_string_value(json_array_get(envj, i));
    long uid = pstr(u, "User") ? strtol(pstr(u, "User"), NULL, 10) : -1;
    long gid = pstr(u, "Group") ? strtol(pstr(u, "Group"), NULL, 10) : uid;
    const char *logp = pstr(u, "StandardOutputFileToAppend");
    int logfd = logp ? open(logp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640) : open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (logfd < 0) {
        snprintf(why, wl, "log %s: %s", logp, strerror(errno));
        free(argv);
        free(envp);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (json_object_get(u->props, "LimitNOFILE")) { /* systemd applies Limit*= before exec */
            json_t *soft = json_object_get(u->props, "LimitNOFILESoft");
            struct rlimit rl = {.rlim_max = (rlim_t)json_integer_value(json_object_get(u->props, "LimitNOFILE"))};
            rl.rlim_cur = soft ? (rlim_t)json_integer_value(soft) : rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                _exit(205); /* EXIT_LIMITS */
        }
        if (gid >= 0 && (setgroups(0, NULL) < 0 || setgid((gid_t)gid) < 0))
            _exit(216); /* systemd's EXIT_GROUP */
        if (uid >= 0 && setuid((uid_t)uid) < 0)
            _exit(217); /* EXIT_USER */
        execve("/usr/bin/bwrap", (char *const *)argv, (char *const *)envp);
        execve("/usr/local/bin/bwrap", (char *const *)argv, (char *const *)envp);
        _exit(203); /* EXIT_EXEC */
    }
    close(logfd);
    free(argv);
    free(envp);
    if (pid < 0) {
        snprintf(why, wl, "fork: %s", strerror(errno));
        return -1;
    }
    setpgid(pid, pid);
    u->pid = pid;
    u->exit_status = -1;
    return 0;
}

/* The unit's end: inactive (and gone: transient units are collected) or failed. */
static void unit_down(struct unit *u, bool failed)
{
    rec("UnitDown(event)", NULL, json_pack("{s:s,s:s}", "unit", u->name, "state", failed ? "failed" : "inactive"));
    uint32_t job = u->stop_job;
    char name[256];
    snprintf(name, sizeof name, "%s", u->name);
    u->stop_job = 0;
    u->pid = 0;
    u->timer = sd_event_source_unref(u->timer);
    if (failed)
        snprintf(u->state, sizeof u->state, "failed");
    else
        free_unit(u);
    if (job)
        emit_job_removed(job, name, "done");
}

/* Reap everything (we are a subreaper) and notice empty process groups. */
static int on_tick(sd_event_source *s, uint64_t usec, void *ud)
{
    (void)ud;
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0)
        for (struct unit *u = units; u; u = u->next)
            if (u->pid == p)
                u->exit_status = status;
    for (struct unit *u = units, *nx; u; u = nx) {
        nx = u->next;
        if (u->pid <= 0 || u->exit_status < 0 || kill(-u->pid, 0) == 0)
            continue;
        int st = u->exit_status;
        bool clean = (WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
                     (WIFSIGNALED(st) && WTERMSIG(st) == u->kill_signal && u->stop_job);
        unit_down(u, !clean);
    }
    sd_event_source_set_time(s, usec + 100000);
    return 0;
}

/* ---- simulated jobs ------------------------------------------------------------------------ */

struct pending {
    char unit[256];
    uint32_t job;
    int kind; /* 0 start, 1 stop, 2 stop timeout (exec), 3 start's JobRemoved (lagging) */
};

static void schedule(struct unit *u, uint32_t job, int kind, long ms);

static int on_timer(sd_event_source *s, uint64_t usec, void *ud)
{
    (void)s;
    (void)usec;
    /* p is freed with its event source (destroy callback): copy it first. */
    struct pending p = *(struct pending *)ud;
    struct unit *u = find_unit(p.unit);
    if (u)
        u->timer = sd_event_source_unref(u->timer);
    if (p.kind == 0) {
        bool ok = !strcmp(beh.start_result, "done");
        if (u)
            snprintf(u->state, sizeof u->state, "%s", ok ? "active" : "failed");
        /* job_removed_lag_ms: the unit is up before its job is reported done, which tells
         * a client that waits for JobRemoved from one that polls ActiveState. */
        if (u && beh.job_removed_lag_ms > 0)
            schedule(u, p.job, 3, beh.job_removed_lag_ms);
        else
            emit_job_removed(p.job, p.unit, beh.start_result);
    } else if (p.kind == 3) {
        emit_job_removed(p.job, p.unit, beh.start_result);
    } else if (p.kind == 1 && u) {
        unit_down(u, false);
    } else if (p.kind == 2 && u && u->pid > 0) {
        rec("StopTimeout(event)", NULL, json_pack("{s:s}", "unit", u->name));
        kill(-u->pid, SIGKILL);
    }
    return 0;
}

static void schedule(struct unit *u, uint32_t job, int kind, long ms)
{
    struct pending *p = calloc(1, sizeof *p);
    snprintf(p->unit, sizeof p->unit, "%s", u->name);
    p->job = job;
    p->kind = kind;
    sd_event_source_unref(u->timer);
    u->timer = NULL;
    sd_event_add_time_relative(ev, &u->timer, CLOCK_MONOTONIC, (uint64_t)ms * 1000u, 1000, on_timer, p);
    sd_event_source_set_destroy_callback(u->timer, free);
}

/* ---- Manager methods ------------------------------------------------------------------------- */

static int m_subscribe(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    (void)e;
    rec(strcmp(sd_bus_message_get_member(m), "Subscribe") ? "Unsubscribe" : "Subscribe", m, NULL);
    return sd_bus_reply_method_return(m, "");
}

static int m_get_unit(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    const char *name;
    int r = sd_bus_message_read(m, "s", &name);
    if (r < 0)
        return r;
    rec("GetUnit", m, json_pack("{s:s}", "unit", name));
    struct unit *u = find_unit(name);
    if (!u)
        return sd_bus_error_setf(e, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not loaded.", name);
    return sd_bus_reply_method_return(m, "o", u->path);
}

static int m_start_transient(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    const char *name, *mode;
    int r = sd_bus_message_read(m, "ss", &name, &mode);
    if (r < 0)
        return r;
    json_t *props = json_object();
    json_t *fields = json_pack("{s:s,s:s,s:O}", "unit", name, "mode", mode, "properties", props);
    if ((r = sd_bus_message_enter_container(m, 'a', "(sv)")) < 0)
        goto bad;
    while ((r = sd_bus_message_enter_container(m, 'r', "sv")) > 0) {
        const char *pn, *contents;
        char type;
        if ((r = sd_bus_message_read(m, "s", &pn)) < 0 || (r = sd_bus_message_peek_type(m, &type, &contents)) < 0)
            goto bad;
        const char *want = known_sig(pn);
        if (!want) {
            rec("StartTransientUnit", m, fields);
            json_decref(props);
            return sd_bus_error_setf(e, SD_BUS_ERROR_PROPERTY_READ_ONLY, "Cannot set property %s, or unknown property.", pn);
        }
        if (strcmp(contents, want) != 0) {
            rec("StartTransientUnit", m, fields);
            json_decref(props);
            return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "Property %s has type %s, expected %s", pn, contents, want);
        }
        json_t *v = read_container(m, 'v', contents);
        json_object_set_new(props, pn, v ? v : json_null());
        sd_bus_message_exit_container(m);
    }
    if (r < 0)
        goto bad;
    sd_bus_message_exit_container(m);
    json_t *aux = read_any(m);
    json_object_set_new(fields, "aux", aux ? aux : json_array());
    rec("StartTransientUnit", m, json_incref(fields));
    json_decref(fields);
    fields = NULL;
    size_t nl = strlen(name);
    if (nl < 9 || strcmp(name + nl - 8, ".service") || nl >= 200 || strchr(name, '/')) {
        json_decref(props);
        return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "Invalid unit name or type.");
    }
    if (strcmp(mode, "fail") && strcmp(mode, "replace")) {
        json_decref(props);
        return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "Job mode %s invalid.", mode);
    }
    if (find_unit(name)) {
        json_decref(props);
        return sd_bus_error_setf(e, "org.freedesktop.systemd1.UnitExists",
                                 "Unit %s was already loaded or has a fragment file.", name);
    }
    if ((r = check_props(props, e)) < 0) {
        json_decref(props);
        return r;
    }
    struct unit *u = calloc(1, sizeof *u);
    snprintf(u->name, sizeof u->name, "%s", name);
    char *enc = NULL;
    sd_bus_path_encode(UNIT_PREFIX, name, &enc);
    snprintf(u->path, sizeof u->path, "%s", enc);
    free(enc);
    snprintf(u->state, sizeof u->state, "activating");
    u->props = props;
    u->kill_signal = json_object_get(props, "KillSignal") ? (int)json_integer_value(json_object_get(props, "KillSignal")) : SIGTERM;
    u->timeout_stop_us = json_object_get(props, "TimeoutStopUSec")
                             ? (uint64_t)json_integer_value(json_object_get(props, "TimeoutStopUSec"))
                             : 90000000u;
    u->exit_status = -1;
    u->next = units;
    units = u;
    uint32_t job = next_job++;
    char jp[64];
    job_path(job, jp, sizeof jp);
    r = sd_bus_reply_method_return(m, "o", jp);
    if (exec_mode) {
        char why[512];
        bool ok = spawn(u, why, sizeof why) == 0;
        snprintf(u->state, sizeof u->state, "%s", ok ? "active" : "failed");
        if (!ok)
            rec("SpawnFailed(event)", NULL, json_pack("{s:s,s:s}", "unit", name, "error", why));
        emit_job_removed(job, name, ok ? "done" : "failed");
    } else {
        schedule(u, job, 0, beh.start_delay_ms);
    }
    return r;
bad:
    json_decref(fields);
    json_decref(props);
    return r;
}

static int m_stop_unit(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    const char *name, *mode;
    int r = sd_bus_message_read(m, "ss", &name, &mode);
    if (r < 0)
        return r;
    rec("StopUnit", m, json_pack("{s:s,s:s}", "unit", name, "mode", mode));
    struct unit *u = find_unit(name);
    if (!u)
        return sd_bus_error_setf(e, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not loaded.", name);
    uint32_t job = u->stop_job ? u->stop_job : next_job++;
    char jp[64];
    job_path(job, jp, sizeof jp);
    r = sd_bus_reply_method_return(m, "o", jp);
    if (!strcmp(u->state, "inactive") || !strcmp(u->state, "failed")) {
        emit_job_removed(job, name, "done");
        return r;
    }
    if (u->stop_job)
        return r; /* already stopping: same job */
    u->stop_job = job;
    snprintf(u->state, sizeof u->state, "deactivating");
    if (exec_mode) {
        if (u->pid > 0) {
            kill(-u->pid, u->kill_signal);
            if (!beh.stubborn)
                schedule(u, job, 2, (long)(u->timeout_stop_us / 1000u));
        }
    } else if (!beh.stubborn) {
        schedule(u, job, 1, beh.stop_delay_ms);
    }
    return r;
}

static int m_kill_unit(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    const char *name, *who;
    int32_t sig;
    int r = sd_bus_message_read(m, "ssi", &name, &who, &sig);
    if (r < 0)
        return r;
    rec("KillUnit", m, json_pack("{s:s,s:s,s:i}", "unit", name, "who", who, "signal", sig));
    struct unit *u = find_unit(name);
    if (!u)
        return sd_bus_error_setf(e, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not loaded.", name);
    if (strcmp(who, "all") && strcmp(who, "main") && strcmp(who, "control"))
        return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "Invalid who argument %s", who);
    r = sd_bus_reply_method_return(m, "");
    if (exec_mode) {
        if (u->pid > 0)
            kill(!strcmp(who, "main") ? u->pid : -u->pid, sig);
    } else if (sig == SIGKILL && (!strcmp(u->state, "active") || !strcmp(u->state, "deactivating"))) {
        unit_down(u, true); /* killed by a signal: "failed", as systemd says */
    }
    return r;
}

static int m_reset_failed(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    const char *name;
    int r = sd_bus_message_read(m, "s", &name);
    if (r < 0)
        return r;
    rec("ResetFailedUnit", m, json_pack("{s:s}", "unit", name));
    struct unit *u = find_unit(name);
    if (!u)
        return sd_bus_error_setf(e, "org.freedesktop.systemd1.NoSuchUnit", "Unit %s not loaded.", name);
    if (!strcmp(u->state, "failed"))
        free_unit(u);
    return sd_bus_reply_method_return(m, "");
}

static int m_set_behaviour(sd_bus_message *m, void *ud, sd_bus_error *e)
{
    (void)ud;
    const char *k, *v;
    int r = sd_bus_message_read(m, "ss", &k, &v);
    if (r < 0)
        return r;
    if (!strcmp(k, "start_delay_ms"))
        beh.start_delay_ms = atol(v);
    else if (!strcmp(k, "job_removed_lag_ms"))
        beh.job_removed_lag_ms = atol(v);
    else if (!strcmp(k, "stop_delay_ms"))
        beh.stop_delay_ms = atol(v);
    else if (!strcmp(k, "start_result"))
        snprintf(beh.start_result, sizeof beh.start_result, "%s", v);
    else if (!strcmp(k, "stop"))
        beh.stubborn = !strcmp(v, "stubborn");
    else
        return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "unknown behaviour %s", k);
    return sd_bus_reply_method_return(m, "");
}

static const sd_bus_vtable manager_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("Subscribe", "", "", m_subscribe, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("Unsubscribe", "", "", m_subscribe, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("GetUnit", "s", "o", m_get_unit, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StartTransientUnit", "ssa(sv)a(sa(sv))", "o", m_start_transient, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StopUnit", "ss", "o", m_stop_unit, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("KillUnit", "ssi", "", m_kill_unit, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("ResetFailedUnit", "s", "", m_reset_failed, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_SIGNAL("JobRemoved", "uoss", 0),
    SD_BUS_VTABLE_END};

static const sd_bus_vtable fake_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_METHOD("SetBehaviour", "ss", "", m_set_behaviour, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END};

/* ---- Unit objects -------------------------------------------------------------------------- */

static int unit_find(sd_bus *b, const char *path, const char *iface, void *ud, void **found, sd_bus_error *e)
{
    (void)b;
    (void)iface;
    (void)ud;
    (void)e;
    for (struct unit *u = units; u; u = u->next)
        if (!strcmp(u->path, path)) {
            *found = u;
            return 1;
        }
    return 0;
}

static int p_unit(sd_bus *b, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
                  void *ud, sd_bus_error *e)
{
    (void)b;
    (void)path;
    (void)iface;
    (void)e;
    struct unit *u = ud;
    return sd_bus_message_append(reply, "s", !strcmp(prop, "Id") ? u->name : u->state);
}

static const sd_bus_vtable unit_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Id", "s", p_unit, 0, 0),
    SD_BUS_PROPERTY("ActiveState", "s", p_unit, 0, 0),
    SD_BUS_VTABLE_END};

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *ud)
{
    (void)s;
    (void)si;
    (void)ud;
    sd_event_exit(ev, 0);
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *recpath = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--address") && i + 1 < argc)
            addr = argv[++i];
        else if (!strcmp(argv[i], "--record") && i + 1 < argc)
            recpath = argv[++i];
        else if (!strcmp(argv[i], "--exec"))
            exec_mode = true;
        else {
            fprintf(stderr, "usage: fake_systemd --address ADDR --record FILE [--exec]\n");
            return 2;
        }
    }
    if (!addr || !recpath) {
        fprintf(stderr, "usage: fake_systemd --address ADDR --record FILE [--exec]\n");
        return 2;
    }
    t0_ms = mono_ms();
    record = fopen(recpath, "a");
    if (!record) {
        perror(recpath);
        return 1;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    int r;
    if ((r = sd_event_default(&ev)) < 0 || (r = sd_bus_new(&bus)) < 0 || (r = sd_bus_set_address(bus, addr)) < 0 ||
        (r = sd_bus_set_bus_client(bus, 1)) < 0 || (r = sd_bus_start(bus)) < 0) {
        fprintf(stderr, "fake_systemd: bus %s: %s\n", addr, strerror(-r));
        return 1;
    }
    sd_bus_add_object_vtable(bus, NULL, ROOT, MGR, manager_vtable, NULL);
    sd_bus_add_object_vtable(bus, NULL, ROOT, "org.beava.FakeSystemd", fake_vtable, NULL);
    sd_bus_add_fallback_vtable(bus, NULL, UNIT_PREFIX, "org.freedesktop.systemd1.Unit", unit_vtable, unit_find, NULL);
    if ((r = sd_bus_request_name(bus, "org.freedesktop.systemd1", 0)) < 0) {
        fprintf(stderr, "fake_systemd: RequestName: %s\n", strerror(-r));
        return 1;
    }
    sd_bus_attach_event(bus, ev, 0);
    sd_event_add_signal(ev, NULL, SIGTERM, on_signal, NULL);
    sd_event_add_signal(ev, NULL, SIGINT, on_signal, NULL);
    uint64_t now;
    sd_event_now(ev, CLOCK_MONOTONIC, &now);
    sd_event_source *tick = NULL;
    sd_event_add_time(ev, &tick, CLOCK_MONOTONIC, now + 100000, 10000, on_tick, NULL);
    sd_event_source_set_enabled(tick, SD_EVENT_ON);
    printf("ready\n");
    fflush(stdout);
    r = sd_event_loop(ev);
    /* Leave nothing behind. */
    for (struct unit *u = units; u; u = u->next)
        if (u->pid > 0)
            kill(-u->pid, SIGKILL);
    while (units)
        free_unit(units);
    sd_event_source_unref(tick);
    sd_bus_flush_close_unref(bus);
    sd_event_unref(ev);
    fclose(record);
    return r < 0 ? 1 : 0;
}
