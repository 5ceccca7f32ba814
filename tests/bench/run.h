/*
 * run.h - one measured run against beava or the Redis peer, as the CLI and the smoke
 * test both need it: build the driver configuration from the options, prefill, run,
 * collect memory figures, print a human summary and a machine-readable line
 *   BENCH_RESULT key=value ...
 * that tests/bench/run-all parses.
 */
#ifndef BENCH_RUN_H
#define BENCH_RUN_H

#include <stdbool.h>

#include "cpu.h"
#include "driver.h"
#include "opts.h"
#include "pipeline.h"
#include "redisplan.h"
#include "target.h"

typedef struct run_out {
    driver_result dr;
    bool get_mode;
    double throughput;         /* events/s (push) or gets/s (get mode) */
    long rss0_kb, rss1_kb;     /* before the load (after register), after; -1 unknown */
    double entities;           /* beava_entity_count_resident after, -1 unknown */
    double bytes_per_entity;   /* RSS delta / entity delta, -1 unknown */
    double server_bytes_per_entity;  /* beava_entity_bytes / entities, -1 unknown */
    uint64_t prefilled;
    bool prefill_only;         /* no load phase: dr and throughput are the prefill's */
    cpu_usage cpu;             /* during the measured load */
    char error[256];
} run_out;

/* The driver configuration the options describe (addr and wire set by the caller). */
void run_base_cfg(const bench_opts *o, const wire_ctx *w, const char *addr, driver_cfg *c);

/* Pushes keys 0..n-1 once each (PUSH_MANY batches of 1000 on TCP) into *r. Returns
 * 0, or -1 with err when not every event was acknowledged. */
int run_prefill(const wire_ctx *w, const char *addr, uint64_t n, driver_result *r, char *err, size_t errlen);

/* Registers (unless o->no_register), prefills, drives the load against t. Returns 0
 * when the run happened (see out->dr for failures), -1 with out->error. */
int run_beava(const bench_opts *o, const pipeline *pl, beava_target *t, run_out *out);
/* Same stream into Redis (spawned unless o->redis_addr). */
int run_redis(const bench_opts *o, const pipeline *pl, run_out *out);

/* Prints the human summary to stdout and the BENCH_RESULT line. */
void run_print(const char *label, const char *target, const char *wire, const run_out *r);

#endif
