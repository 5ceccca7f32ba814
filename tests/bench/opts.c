/*
 * opts.c - command-line parsing for beava-bench (see opts.h and opts_usage).
 */
#include "opts.h"

#include <stdlib.h>
#include <string.h>

void opts_usage(FILE *f) {
    fputs("usage: beava-bench --pipeline FILE [options]\n"
          "\n"
          "server under test (beava):\n"
          "  --spawn PATH          start this beava binary (ports chosen by the OS), stop it at the end\n"
          "  --durability MODE     memory (default, --memory-only) | batch | sync, for --spawn\n"
          "  --data-dir DIR        data dir of the spawned server (default: a temporary one)\n"
          "  --server-arg ARG      extra argument for the spawned server (repeatable), e.g. --server-arg=--shards=2\n"
          "  --http ADDR --tcp ADDR --admin ADDR   target a running server instead\n"
          "  --server-pid PID      its pid, for RSS\n"
          "  --keep                keep the spawned server's temporary directory\n"
          "what to drive:\n"
          "  --wire W              http | tcp-json | tcp-msgpack (default)   (alias --transport)\n"
          "  --target T            beava (default) | redis\n"
          "  --compare             run beava, then the Redis peer on the same stream; print the ratio\n"
          "  --redis ADDR          use a running redis; default: start redis-server on a free port\n"
          "  --redis-server PATH   redis-server binary (default: redis-server)\n"
          "  --redis-mode M        cmds (default: plain commands, pipelined) | lua (one EVALSHA per event)\n"
          "  -c, --connections N   connections (default 4)\n"
          "  -d, --depth N         requests in flight per connection (default 64)\n"
          "  -b, --batch N         events per request: > 1 uses OP_PUSH_MANY on TCP (default 1)\n"
          "  --threads N           client threads (default 1)\n"
          "  --duration S          seconds of load after the warmup (default 10)\n"
          "  --warmup S            seconds excluded from the figures (default 0)\n"
          "  --events N            stop after N events (or gets) instead\n"
          "  --keys N              key cardinality (default 100000)\n"
          "  --dist D              uniform (default) | zipf\n"
          "  --alpha A             zipf exponent (default 0.99)\n"
          "  --seed N              random seed (default 1)\n"
          "  --mode M              push (default) | get\n"
          "  --get-fraction F      share of gets among requests (0..1)\n"
          "  --rate R              open loop: R requests/s, latency counted from the scheduled time\n"
          "  --prefill N           before the run, push N distinct keys k00000000.. once each\n"
          "  --no-register         do not POST the pipeline's register body\n"
          "  --sched-batch         closed-loop push runs: load threads SCHED_BATCH (see README)\n"
          "output:\n"
          "  --label NAME          workload name for the results row\n"
          "  --results FILE        append a Markdown row to FILE\n"
          "  --smoke               self-test: 1 s TCP msgpack + 1 s HTTP, then counts == events acked\n",
          f);
}

static int num_u64(const char *s, uint64_t *out) {
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end || d < 0) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int num_d(const char *s, double *out) {
    char *end;
    *out = strtod(s, &end);
    return end == s || *end ? -1 : 0;
}

int opts_parse(int argc, char **argv, bench_opts *o, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    o->durability = "memory";
    o->wire = WIRE_TCP_MSGPACK;
    o->redis_server = "redis-server";
    o->conns = 4;
    o->depth = 64;
    o->batch = 1;
    o->threads = 1;
    o->duration = 10;
    o->keys = 100000;
    o->dist = KEYS_UNIFORM;
    o->alpha = 0.99;
    o->seed = 1;
    bool duration_set = false, keys_set = false;
    for (int i = 1; i < argc; i++) {
        char name[64];
        const char *a = argv[i];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        if (a[0] == '-' && a[1] == '-' && eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
#define FLAG(s) (strcmp(name, s) == 0)
#define NEED()                                                             \
    do {                                                                   \
        if (!val) {                                                        \
            if (i + 1 >= argc) {                                           \
                snprintf(err, errlen, "%s needs a value", name);           \
                return -1;                                                 \
            }                                                              \
            val = argv[++i];                                               \
        }                                                                  \
    } while (0)
#define U64(dst)                                                           \
    do {                                                                   \
        NEED();                                                            \
        uint64_t v_;                                                       \
        if (num_u64(val, &v_) != 0) {                                      \
            snprintf(err, errlen, "%s: bad number %s", name, val);         \
            return -1;                                                     \
        }                                                                  \
        dst = v_;                                                          \
    } while (0)
#define DBL(dst)                                                           \
    do {                                                                   \
        NEED();                                                            \
        if (num_d(val, &dst) != 0) {                                       \
            snprintf(err, errlen, "%s: bad number %s", name, val);         \
            return -1;                                                     \
        }                                                                  \
    } while (0)
        if (FLAG("-h") || FLAG("--help")) {
            opts_usage(stdout);
            return 1;
        } else if (FLAG("--pipeline")) { NEED(); o->pipeline_path = val; }
        else if (FLAG("--spawn")) { NEED(); o->spawn = val; }
        else if (FLAG("--durability")) {
            NEED();
            if (strcmp(val, "memory") && strcmp(val, "batch") && strcmp(val, "sync")) {
                snprintf(err, errlen, "--durability: memory, batch or sync");
                return -1;
            }
            o->durability = val;
        } else if (FLAG("--data-dir")) { NEED(); o->data_dir = val; }
        else if (FLAG("--server-arg")) {
            NEED();
            if (o->nserver_args == OPTS_MAX_SERVER_ARGS) {
                snprintf(err, errlen, "too many --server-arg");
                return -1;
            }
            o->server_args[o->nserver_args++] = val;
        } else if (FLAG("--http")) { NEED(); o->http = val; }
        else if (FLAG("--tcp")) { NEED(); o->tcp = val; }
        else if (FLAG("--admin")) { NEED(); o->admin = val; }
        else if (FLAG("--server-pid")) { uint64_t v; U64(v); o->server_pid = (int)v; }
        else if (FLAG("--keep")) o->keep = true;
        else if (FLAG("--wire") || FLAG("--transport")) {
            NEED();
            if (wire_kind_parse(val, &o->wire) != 0 || o->wire == WIRE_REDIS) {
                snprintf(err, errlen, "%s: http, tcp-json or tcp-msgpack", name);
                return -1;
            }
        } else if (FLAG("--target")) {
            NEED();
            if (strcmp(val, "beava") == 0) o->target_redis = false;
            else if (strcmp(val, "redis") == 0) o->target_redis = true;
            else {
                snprintf(err, errlen, "--target: beava or redis");
                return -1;
            }
        } else if (FLAG("--compare")) o->compare = true;
        else if (FLAG("--redis")) { NEED(); o->redis_addr = val; }
        else if (FLAG("--redis-server")) { NEED(); o->redis_server = val; }
        else if (FLAG("--redis-mode")) {
            NEED();
            if (strcmp(val, "cmds") == 0) o->redis_lua = false;
            else if (strcmp(val, "lua") == 0) o->redis_lua = true;
            else {
                snprintf(err, errlen, "--redis-mode: cmds or lua");
                return -1;
            }
        } else if (FLAG("-c") || FLAG("--connections")) U64(o->conns);
        else if (FLAG("-d") || FLAG("--depth")) U64(o->depth);
        else if (FLAG("-b") || FLAG("--batch")) U64(o->batch);
        else if (FLAG("--threads")) U64(o->threads);
        else if (FLAG("--duration")) { DBL(o->duration); duration_set = true; }
        else if (FLAG("--warmup")) DBL(o->warmup);
        else if (FLAG("--events")) U64(o->events);
        else if (FLAG("--keys")) { U64(o->keys); keys_set = true; }
        else if (FLAG("--dist")) {
            NEED();
            if (strcmp(val, "uniform") == 0) o->dist = KEYS_UNIFORM;
            else if (strcmp(val, "zipf") == 0 || strcmp(val, "zipfian") == 0) o->dist = KEYS_ZIPF;
            else {
                snprintf(err, errlen, "--dist: uniform or zipf");
                return -1;
            }
        } else if (FLAG("--alpha")) DBL(o->alpha);
        else if (FLAG("--seed")) U64(o->seed);
        else if (FLAG("--mode")) {
            NEED();
            if (strcmp(val, "push") == 0) o->get_fraction = 0;
            else if (strcmp(val, "get") == 0) o->get_fraction = 1;
            else {
                snprintf(err, errlen, "--mode: push or get");
                return -1;
            }
        } else if (FLAG("--get-fraction")) DBL(o->get_fraction);
        else if (FLAG("--rate")) DBL(o->rate);
        else if (FLAG("--prefill")) U64(o->prefill);
        else if (FLAG("--no-register")) o->no_register = true;
        else if (FLAG("--sched-batch")) o->sched_batch = true;
        else if (FLAG("--label")) { NEED(); o->label = val; }
        else if (FLAG("--results")) { NEED(); o->results = val; }
        else if (FLAG("--smoke")) o->smoke = true;
        else {
            snprintf(err, errlen, "unknown option %s (see --help)", a);
            return -1;
        }
#undef FLAG
#undef NEED
#undef U64
#undef DBL
    }
    if (o->events && !duration_set) o->duration = 0;
    if (!o->pipeline_path) {
        snprintf(err, errlen, "--pipeline FILE is required");
        return -1;
    }
    if (o->get_fraction < 0 || o->get_fraction > 1) {
        snprintf(err, errlen, "--get-fraction must be within [0, 1]");
        return -1;
    }
    if (o->batch == 0) o->batch = 1;
    if (o->batch > TCP_PUSH_MANY_MAX) {
        snprintf(err, errlen, "--batch: at most %d (OP_PUSH_MANY limit)", TCP_PUSH_MANY_MAX);
        return -1;
    }
    if (o->batch > 1 && o->wire == WIRE_HTTP && !o->target_redis) {
        snprintf(err, errlen, "--batch > 1 needs a TCP wire (HTTP has no batch push)");
        return -1;
    }
    if (o->depth == 0 || o->conns == 0 || o->threads == 0) {
        snprintf(err, errlen, "--connections, --depth and --threads must be >= 1");
        return -1;
    }
    if (o->keys == 0) o->keys = 1;
    if (o->prefill && !keys_set) o->keys = o->prefill;  /* gets address the prefilled keys */
    return 0;
}
