/*
 * smoke.h - `beava-bench --smoke --spawn BEAVA --pipeline small.json`: the harness
 * tests itself end to end against a real server. One second of TCP msgpack pushes,
 * one second of HTTP pushes, a bounded PUSH_MANY run and a few gets, then checks that
 * the server's per-key counts add up to exactly the events it acknowledged. No timing
 * assertion. Prints one line per check and "N passed, M failed".
 */
#ifndef BENCH_SMOKE_H
#define BENCH_SMOKE_H

#include "opts.h"
#include "pipeline.h"

/* Returns the process exit code: 0 when every check passed. */
int smoke_run(const bench_opts *o, const pipeline *pl);

#endif
