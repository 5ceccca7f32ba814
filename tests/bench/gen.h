/*
 * gen.h - the generated event stream of the benchmark pipelines.
 *
 * An event of a pipeline is {<key_field>: "k%08u", "event_time": <i64 counter>,
 * <each extra field>: f64 uniform [0,1000) | i64 uniform [0,1e6) | str "s0".."s999"}.
 * f64 values are drawn on a 0.001 grid so that the JSON text ("%u.%03u") and the
 * msgpack double carry exactly the same number. Keys are uniform or zipfian(alpha)
 * over a cardinality, or sequential (each key once, for prefills).
 *
 * All state lives in the caller's evgen (one per client thread); nothing is shared.
 */
#ifndef BENCH_GEN_H
#define BENCH_GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "pipeline.h"

typedef struct rng {
    uint64_t s[4];
} rng;

void rng_seed(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
/* Uniform in [0, n). */
uint64_t rng_below(rng *r, uint64_t n);
/* Uniform in [0, 1). */
double rng_double(rng *r);

typedef enum { KEYS_UNIFORM, KEYS_ZIPF, KEYS_SEQ } key_dist;

typedef struct keygen {
    key_dist dist;
    uint64_t n;
    double alpha;
    /* rejection-inversion zipf sampler (Hörmann & Derflinger) constants */
    double h_x1, h_n, s_term;
    /* sequential */
    uint64_t seq_next, seq_step;
} keygen;

/* seq_start/seq_step are used by KEYS_SEQ only (thread t of T: start t, step T). */
void keygen_init(keygen *k, key_dist dist, uint64_t n, double alpha, uint64_t seq_start, uint64_t seq_step);
/* A key id in [0, n); zipf rank 1 (the hottest) is id 0. */
uint64_t keygen_next(keygen *k, rng *r);

typedef union ev_val {
    uint32_t milli;  /* FT_F64: value * 1000 */
    int64_t i;       /* FT_I64 */
    uint32_t s;      /* FT_STR: "s<s>" */
} ev_val;

typedef struct event {
    uint64_t key;
    int64_t event_time;
    ev_val *vals;    /* one per pipeline extra field, owned by the evgen */
} event;

typedef struct evgen {
    const pipeline *pl;
    rng r;
    keygen kg;
    int64_t next_time, time_step;
    event ev;
} evgen;

/* The event_time counter starts at time_start and advances by time_step. */
void evgen_init(evgen *g, const pipeline *pl, uint64_t seed, const keygen *kg, int64_t time_start, int64_t time_step);
void evgen_free(evgen *g);
/* Draws the next event into g->ev and returns it (valid until the next call). */
const event *evgen_next(evgen *g);

/* Writes "k%08u" for key id into dst (at least 24 bytes); returns its length. */
int gen_key_text(uint64_t key, char *dst);
/* Writes the text of extra field i's value (as a group key would see it). */
int gen_val_text(const pipeline *pl, const event *e, int i, char *dst, int cap);
double gen_val_f64(const pipeline *pl, const event *e, int i);

/* The event body as a JSON object / a msgpack map. */
void gen_body_json(const pipeline *pl, const event *e, bbuf *out);
void gen_body_msgpack(const pipeline *pl, const event *e, bbuf *out);

/* A msgpack-c packer appending to out (shared with the wire encoders). */
struct msgpack_packer;
void gen_packer_init(struct msgpack_packer *pk, bbuf *out);

#endif
