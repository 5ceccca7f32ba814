/*
 * server.c - process lifecycle (see server.h).
 */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "engine.h"
#include "http.h"
#include "jsonw.h"
#include "listenfd.h"
#include "persist.h"
#include "tcp.h"

struct beava_server {
    const bv_config *cfg;
    const bv_log *log;
    engine *eng;
    http_server *admin;
    http_server *data;
    tcp_server *tcp;
    persist *persist;
    cluster *cluster;            /* cluster mode (no persist then) */
    /* tcp, persist and cluster as the admin listener's callbacks see them: server_stop
     * detaches each under parts_mu before it stops and frees it (the admin listener serves
     * until the end), and a callback holds parts_mu while it uses one */
    pthread_mutex_t parts_mu;
    pthread_t sweeper;
    bool sweeper_started;
    pthread_mutex_t sweep_mu;
    pthread_cond_t sweep_cv;
    bool stopping;
    atomic_bool ready;
    char *admin_token;
    membudget body_budget;       /* receive buffers of every listener */
    http_stats http_stats;       /* data-plane connections, shown by admin /metrics */
    listenfd_set inherited;      /* sockets passed by beava-control or beava.socket */
    char http_bound[CONFIG_ADDR_MAX];
    char admin_bound[CONFIG_ADDR_MAX];
    char tcp_bound[CONFIG_ADDR_MAX];
};

static void log_bound(const bv_log *log, const char *kind, const char *addr) {
    bv_buf f;
    bv_buf_init(&f);
    bv_buf_puts(&f, "\"addr\":");
    bv_buf_json_str(&f, addr, strlen(addr));
    bv_log_emit(log, LOG_INFO, kind, f.data);
    bv_buf_free(&f);
}

/* The cold-entity sweeper: a bounded scan every SWEEP_INTERVAL_MS, so idle entities are
 * evicted even when their key never comes back (the reference only checked on the next
 * event for that entity). */
#define SWEEP_INTERVAL_MS 200
#define SWEEP_BUDGET 65536

static void *sweeper_main(void *arg) {
    beava_server *s = arg;
    pthread_setname_np(pthread_self(), "beava-sweep");   /* for top, perf sched and gdb */
    pthread_mutex_lock(&s->sweep_mu);
    while (!s->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SWEEP_INTERVAL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->sweep_cv, &s->sweep_mu, &ts);
        if (s->stopping) break;
        pthread_mutex_unlock(&s->sweep_mu);
        engine_sweep_cold(s->eng, SWEEP_BUDGET);
        pthread_mutex_lock(&s->sweep_mu);
    }
    pthread_mutex_unlock(&s->sweep_mu);
    return NULL;
}

/* The answer of an admin call that needs a part server_stop has already detached. */
static int stopping_error(bv_buf *out) {
    jsonw_member m = { .key = "reason", .str = "the server is stopping" };
    jsonw_error(out, "stopping", &m, 1, false, 0);
    return 503;
}

static void server_metrics(void *ctx, bv_buf *out) {
    beava_server *s = ctx;
    pthread_mutex_lock(&s->parts_mu);
    if (s->persist) persist_metrics(s->persist, out);
    if (s->cluster) cluster_metrics(s->cluster, out);
    if (s->tcp) {
        tcp_stats t;
        tcp_counters(s->tcp, &t);
        bv_buf_printf(out,
                      "# HELP beava_tcp_connections_open Open framed-TCP connections.\n"
                      "# TYPE beava_tcp_connections_open gauge\nbeava_tcp_connections_open %llu\n"
                      "# HELP beava_tcp_connections_refused_total Connections closed at once: tcp.max_connections reached.\n"
                      "# TYPE beava_tcp_connections_refused_total counter\nbeava_tcp_connections_refused_total %llu\n"
                      "# HELP beava_tcp_connections_timed_out_total Connections closed by the idle or frame deadline.\n"
                      "# TYPE beava_tcp_connections_timed_out_total counter\nbeava_tcp_connections_timed_out_total %llu\n"
                      "# HELP beava_tcp_partial_frame_bytes Bytes of partially received frames held (budgeted).\n"
                      "# TYPE beava_tcp_partial_frame_bytes gauge\nbeava_tcp_partial_frame_bytes %llu\n",
                      (unsigned long long)t.open_connections, (unsigned long long)t.refused_connections,
                      (unsigned long long)t.timed_out_connections, (unsigned long long)t.partial_frame_bytes);
    }
    pthread_mutex_unlock(&s->parts_mu);
}

static void server_progress(void *ctx, bv_buf *out) {
    beava_server *s = ctx;
    pthread_mutex_lock(&s->parts_mu);
    if (s->cluster) cluster_progress(s->cluster, out);
    else if (s->persist) persist_progress(s->persist, out);
    pthread_mutex_unlock(&s->parts_mu);
}

static int server_snapshot(void *ctx, bv_buf *out) {
    beava_server *s = ctx;
    pthread_mutex_lock(&s->parts_mu);
    int st = s->cluster ? cluster_snapshot_now(s->cluster, out)
             : s->persist ? persist_snapshot_now(s->persist, out)
                          : stopping_error(out);
    pthread_mutex_unlock(&s->parts_mu);
    return st;
}

static int server_cluster_status(void *ctx, bv_buf *out) {
    beava_server *s = ctx;
    pthread_mutex_lock(&s->parts_mu);
    int st = s->cluster ? cluster_status(s->cluster, out) : stopping_error(out);
    pthread_mutex_unlock(&s->parts_mu);
    return st;
}

static int server_cluster_admin(void *ctx, const char *method, const char *sub, const char *query, const char *body,
                                size_t len, bv_buf *out, const char **ctype) {
    beava_server *s = ctx;
    pthread_mutex_lock(&s->parts_mu);
    int st = s->cluster ? cluster_admin(s->cluster, method, sub, query, body, len, out, ctype) : stopping_error(out);
    pthread_mutex_unlock(&s->parts_mu);
    return st;
}

/* Shards when the configuration leaves it to us: two per core (the engine caps it at
 * SHARD_MAX). A costly batch (fraud-team's 88 feature updates per event) is applied
 * inline on one idle shard by the I/O thread that received it, and its other shards'
 * parts go to their threads (README "The engine"). With one shard per core, a shard one
 * I/O thread holds inline is busy for every other batch too, whose parts wait behind it;
 * with two per core a batch more often finds an idle shard and the rest spreads over more
 * shard threads, so the server keeps more of the machine busy. fraud-team 16 x 64 on
 * 2 cores, 11 alternating pairs: 4 shards ahead in 8 (by up to 27 %), behind in 3 (by at
 * most 4 %), the server using 1.71-1.76 cores instead of 1.64-1.70; small.json, HTTP and
 * the half-rate latency unchanged within the noise; 8 shards behind 2
 * (tests/bench/RESULTS.md, sixth session). */
static unsigned default_shards(void) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    return ncpu > 0 ? (unsigned)(2 * ncpu) : 2u;
}

static char *read_token(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "security.admin_token_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    if (n < 16) {
        snprintf(err, errlen, "security.admin_token_file %s: the token must be at least 16 characters", path);
        return NULL;
    }
    return strdup(buf);
}

static void log_config(const bv_config *c, const bv_log *log) {
    bv_buf f;
    bv_buf_init(&f);
    bv_buf_printf(&f, "\"config_source\":");
    bv_buf_json_str(&f, c->config_path[0] ? c->config_path : "defaults+env", strlen(c->config_path[0] ? c->config_path : "defaults+env"));
    bv_buf_puts(&f, ",\"data_dir\":");
    bv_buf_json_str(&f, c->data_dir, strlen(c->data_dir));
    bv_buf_printf(&f, ",\"durability\":\"%s\",\"memory_only\":%s,\"test_mode\":%s",
                  c->durability == DURABILITY_SYNC ? "sync" : "batch", c->memory_only ? "true" : "false",
                  c->test_mode ? "true" : "false");
    /* the descriptor limit bounds the connections the server can hold: say it at start */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0)
        bv_buf_printf(&f, ",\"nofile_limit\":%llu,\"nofile_hard_limit\":%llu", (unsigned long long)nofile.rlim_cur,
                      (unsigned long long)nofile.rlim_max);
    bv_log_emit(log, LOG_INFO, "server.config", f.data);
    bv_buf_free(&f);
}

beava_server *server_start(const bv_config *cfg, const bv_log *log, char *err, size_t errlen) {
    beava_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->log = log;
    atomic_init(&s->ready, false);
    membudget_init(&s->body_budget, cfg->partial_body_budget_bytes);
    pthread_mutex_init(&s->sweep_mu, NULL);
    pthread_cond_init(&s->sweep_cv, NULL);
    pthread_mutex_init(&s->parts_mu, NULL);
    log_config(cfg, log);
    if (cfg->admin_token_file[0] && !(s->admin_token = read_token(cfg->admin_token_file, err, errlen))) goto fail;
    engine_options eo = {
        .test_mode = cfg->test_mode,
        .memory_gov_enforce = cfg->memory_gov_enforce,
        .queue_capacity = cfg->shard_queue,
        .shards = cfg->shards > 0 ? (unsigned)cfg->shards : default_shards(),
    };
    if (config_cluster_enabled(cfg)) {      /* the stream is the log: no local WAL */
        s->cluster = cluster_open(cfg, log, err, errlen);
        if (!s->cluster) goto fail;
        cluster_engine_ops(s->cluster, &eo.wal, &eo.log);
    } else if (!cfg->memory_only) {
        s->persist = persist_open(cfg, log, err, errlen);
        if (!s->persist) goto fail;
        persist_wal_ops(s->persist, &eo.wal);
    }
    s->eng = engine_new(&eo);
    if (!s->eng) {
        snprintf(err, errlen, "cannot create the engine");
        goto fail;
    }
    listenfd_init(&s->inherited, log);
    const char *admin_fd = listenfd_addr(&s->inherited, "admin"), *http_fd = listenfd_addr(&s->inherited, "http");
    const char *tcp_fd = listenfd_addr(&s->inherited, "tcp");
    listenfd_close_unused(&s->inherited, log);
    http_deps deps = {
        .eng = s->eng, .cfg = cfg, .log = log, .ready = &s->ready, .admin_token = s->admin_token, .ctx = s,
        .extra_metrics = server_metrics,
        .snapshot = s->persist || s->cluster ? server_snapshot : NULL,
        .body_budget = &s->body_budget, .data_stats = &s->http_stats,
        .progress = s->persist || s->cluster ? server_progress : NULL,
        .cluster_status = s->cluster ? server_cluster_status : NULL,
        .cluster_admin = s->cluster ? server_cluster_admin : NULL,
    };
    s->admin = http_start(HTTP_ADMIN, admin_fd ? admin_fd : cfg->admin_addr, &deps, 1, s->admin_bound, sizeof s->admin_bound, err, errlen);
    if (!s->admin) goto fail;
    log_bound(log, "server.admin_bound", s->admin_bound);

    /* recovery: newest snapshot + WAL tail; admin /ready says 503 meanwhile */
    if (s->persist && persist_recover(s->persist, s->eng, err, errlen) != 0) goto fail;
    if (s->cluster && cluster_recover(s->cluster, s->eng, err, errlen) != 0) goto fail;
    if (engine_start_shards(s->eng) != 0) {
        snprintf(err, errlen, "cannot start the apply shards");
        goto fail;
    }
    /* cluster: consume the owned partitions; /ready turns 200 once they caught up */
    if (s->cluster) cluster_set_admin(s->cluster, s->admin_bound, s->admin_token);
    if (s->cluster && cluster_start(s->cluster, &s->ready, err, errlen) != 0) goto fail;

    s->data = http_start(HTTP_DATA, http_fd ? http_fd : cfg->http_addr, &deps, (int)cfg->http_threads, s->http_bound,
                         sizeof s->http_bound, err, errlen);
    if (!s->data) goto fail;
    log_bound(log, "server.http_bound", s->http_bound);
    if (s->cluster) cluster_advertise(s->cluster, s->http_bound);
    if (cfg->tcp_enabled) {
        char addr[CONFIG_ADDR_MAX + 16];
        bool v6 = strchr(cfg->tcp_host, ':') != NULL;
        snprintf(addr, sizeof addr, v6 ? "[%s]:%d" : "%s:%d", cfg->tcp_host, cfg->tcp_port);
        /* A TCP worker waits out the group commit of its connection's pushes in sync mode:
         * more workers keep more connections' batches in each fsync. */
        /* acks are asynchronous: one I/O thread per core serves any number of connections */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int tcp_threads = cfg->io_threads > 0 ? cfg->io_threads : (ncpu > 0 ? (int)ncpu : 2);
        tcp_server *tcp = tcp_start(tcp_fd ? tcp_fd : addr, s->eng, cfg, log, s->admin_token, &s->body_budget,
                                    tcp_threads, s->tcp_bound, sizeof s->tcp_bound, err, errlen);
        if (!tcp) goto fail;
        pthread_mutex_lock(&s->parts_mu);   /* the admin listener's callbacks read it */
        s->tcp = tcp;
        pthread_mutex_unlock(&s->parts_mu);
        log_bound(log, "server.tcp_bound", s->tcp_bound);
    }

    if (pthread_create(&s->sweeper, NULL, sweeper_main, s) != 0) {
        snprintf(err, errlen, "cannot start the cold-entity sweeper");
        goto fail;
    }
    s->sweeper_started = true;
    if (!s->cluster) atomic_store(&s->ready, true);
    sd_notify(0, "READY=1");
    bv_log_msg(log, LOG_INFO, "server.ready", "beava is ready");
    return s;
fail:
    server_stop(s);
    return NULL;
}

const char *server_http_addr(const beava_server *s) { return s->http_bound; }
const char *server_admin_addr(const beava_server *s) { return s->admin_bound; }

void server_wait_for_signal(beava_server *s) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    uint64_t watchdog_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0;
    for (;;) {
        int sig;
        if (watchdog) {
            uint64_t half = watchdog_usec / 2;
            struct timespec ts = { .tv_sec = (time_t)(half / 1000000), .tv_nsec = (long)(half % 1000000) * 1000 };
            sig = sigtimedwait(&set, NULL, &ts);
            if (sig < 0) {
                if (errno == EAGAIN) sd_notify(0, "WATCHDOG=1");
                continue;
            }
        } else if (sigwait(&set, &sig) != 0) {
            continue;
        }
        bv_log_msg(s->log, LOG_INFO, "server.signal", "received %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        return;
    }
}

void server_stop(beava_server *s) {
    if (!s) return;
    sd_notify(0, "STOPPING=1");
    atomic_store(&s->ready, false);
    if (s->sweeper_started) {
        pthread_mutex_lock(&s->sweep_mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->sweep_cv);
        pthread_mutex_unlock(&s->sweep_mu);
        pthread_join(s->sweeper, NULL);
    }
    http_stop(s->data);          /* stop accepting; in-flight requests finish */
    /* the admin listener still serves (until the end): each part leaves its callbacks
     * before it is stopped and freed, so a /metrics or /ready meanwhile never reads one
     * that is gone */
    pthread_mutex_lock(&s->parts_mu);
    tcp_server *tcp = s->tcp;
    s->tcp = NULL;
    pthread_mutex_unlock(&s->parts_mu);
    tcp_stop(tcp);
    pthread_mutex_lock(&s->parts_mu);
    cluster *cl = s->cluster;
    s->cluster = NULL;
    pthread_mutex_unlock(&s->parts_mu);
    cluster_close(cl);           /* pending pushes answered, final snapshot */
    pthread_mutex_lock(&s->parts_mu);
    persist *ps = s->persist;
    s->persist = NULL;
    pthread_mutex_unlock(&s->parts_mu);
    persist_close(ps);           /* drained: final snapshot, final fsync, lock released */
    http_stop(s->admin);
    engine_free(s->eng);
    free(s->admin_token);
    bv_log_msg(s->log, LOG_INFO, "server.stopped", "beava stopped");
    pthread_cond_destroy(&s->sweep_cv);
    pthread_mutex_destroy(&s->sweep_mu);
    pthread_mutex_destroy(&s->parts_mu);
    free(s);
}
