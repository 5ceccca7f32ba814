/*
 * opts.h - beava-bench's command line. Every option has a default that makes
 * `beava-bench --spawn build/beava --pipeline small.json` a sensible 10 s run; the
 * parsed struct is read-only for the rest of the program.
 */
#ifndef BENCH_OPTS_H
#define BENCH_OPTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gen.h"
#include "wire.h"

#define OPTS_MAX_SERVER_ARGS 32

typedef struct bench_opts {
    const char *pipeline_path;
    /* server under test */
    const char *spawn;                 /* beava binary to start */
    const char *durability;            /* memory | batch | sync (spawned server) */
    const char *data_dir;
    const char *server_args[OPTS_MAX_SERVER_ARGS + 1];
    size_t nserver_args;
    const char *http, *tcp, *admin;    /* running server */
    int server_pid;
    bool keep;                         /* keep the spawned server's directory */
    /* what to drive */
    bool target_redis;                 /* --target redis */
    bool compare;                      /* beava and redis in one invocation */
    wire_kind wire;                    /* beava wire */
    const char *redis_addr, *redis_server;
    bool redis_lua;
    unsigned conns, depth, batch, threads;
    double duration, warmup;
    uint64_t events;
    uint64_t keys;
    key_dist dist;
    double alpha;
    uint64_t seed;
    double get_fraction;               /* --mode get = 1 */
    double rate;
    uint64_t prefill;
    bool no_register;
    bool sched_batch;                  /* --sched-batch: closed-loop push threads SCHED_BATCH */
    /* output */
    const char *label;
    const char *results;
    bool smoke;
} bench_opts;

/* Parses argv into *o. Returns 0, 1 when --help was printed, -1 with err. */
int opts_parse(int argc, char **argv, bench_opts *o, char *err, size_t errlen);
void opts_usage(FILE *f);

#endif
