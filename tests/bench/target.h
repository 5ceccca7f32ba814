/*
 * target.h - the beava instance under test, spawned or attached: its addresses, its
 * pid (for RSS), and the control calls made around a run (register, metrics).
 */
#ifndef BENCH_TARGET_H
#define BENCH_TARGET_H

#include <stdbool.h>
#include <sys/types.h>

#include "ctl.h"
#include "opts.h"
#include "pipeline.h"
#include "proc.h"

typedef struct beava_target {
    server_proc proc;     /* pid -1 when attached */
    bool spawned;
    const char *http, *tcp, *admin;
    pid_t pid;            /* -1 unknown */
    ctl ctl;
} beava_target;

/* Spawns (o->spawn) or attaches (o->http / o->tcp / o->admin). Returns 0 or -1 with
 * err; on failure nothing is left running. */
int target_open(const bench_opts *o, beava_target *t, char *err, size_t errlen);
/* POST /register with the pipeline's register body; 0 when 200. */
int target_register(beava_target *t, const pipeline *pl, char *err, size_t errlen);
long target_rss_kb(const beava_target *t);
/* Admin metric, -1 when unknown (no admin address or no such metric). */
double target_metric(beava_target *t, const char *name);
/* Stops a spawned server; returns its exit status (-1 when attached). */
int target_close(beava_target *t);

#endif
