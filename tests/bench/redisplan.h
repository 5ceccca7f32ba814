/*
 * redisplan.h - the Redis peer: what a team without beava would run in Redis for the
 * same features, one event at a time.
 *
 * For every table fed by the pipeline's event, the entity key is "<table>:<key>"
 * (composite keys joined with '|'), and each feature becomes commands:
 *
 *   count, lifetime      HINCRBY <T>:<key> <feat> 1
 *   sum, lifetime        HINCRBYFLOAT <T>:<key> <feat> <v>
 *   mean, lifetime       HINCRBYFLOAT <T>:<key> <feat>:sum <v> ; HINCRBY <T>:<key> <feat>:n 1
 *   count, window W      INCR <T>:<key>:<feat>:<bucket> ; EXPIRE <same> <ttl>
 *   sum, window W        INCRBYFLOAT <T>:<key>:<feat>:<bucket> <v> ; EXPIRE <same> <ttl>
 *   mean, window W       HINCRBYFLOAT <bk> sum <v> ; HINCRBY <bk> n 1 ; EXPIRE <bk> <ttl>
 *   min/max, lifetime    (lua mode only) HGET, compare, HSET
 *
 * where bucket = floor(now_ms / b) * b with b = ceil(W / 64) ms — the same 64
 * sub-buckets per window beava keeps — and ttl = ceil((W + b) / 1000) s, so a reader
 * would sum the live buckets of the last W. In "cmds" mode those commands are sent
 * pipelined as they are (an event's slot in the pipeline depth holds all of them); in
 * "lua" mode a generated script doing exactly the same calls is loaded once (SCRIPT
 * LOAD) and each event is one EVALSHA. Operators outside that list are refused with an
 * error naming them: the peer only claims equivalence where it is equivalent.
 */
#ifndef BENCH_REDISPLAN_H
#define BENCH_REDISPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "gen.h"
#include "pipeline.h"

typedef struct redis_step redis_step;
typedef struct redis_tkey redis_tkey;

typedef struct redis_plan {
    const pipeline *pl;
    redis_step *steps;
    size_t nsteps;
    redis_tkey *tkeys;        /* one per table with steps */
    size_t ntkeys;
    int *argv_field;          /* lua: extra field index of ARGV[2 + i] */
    size_t nargv_fields;
    unsigned cmds_per_event;  /* replies to expect per event */
    bool lua;
    char *script;             /* lua mode */
    char sha[41];             /* set by the caller after SCRIPT LOAD */
    bbuf doc;                 /* human description, one line per command */
} redis_plan;

/* Builds the plan for pl (which must outlive it). Returns 0, or -1 with a message
 * naming the unsupported operator or key. Free with redis_plan_free either way. */
int redis_plan_build(const pipeline *pl, bool lua, redis_plan *p, char *err, size_t errlen);
void redis_plan_free(redis_plan *p);
/* Appends the RESP commands for one event at now_ms; returns how many replies the
 * server will send. */
unsigned redis_plan_encode(const redis_plan *p, const event *e, int64_t now_ms, bbuf *out);

#endif
