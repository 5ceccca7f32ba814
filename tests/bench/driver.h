/*
 * driver.h - the load driver: C connections x D requests in flight, over T client
 * threads, each thread one epoll loop owning its connections.
 *
 * Closed loop by default (a connection refills its pipeline as soon as replies come
 * back). With rate > 0 the driver is open loop: requests are scheduled at fixed
 * intervals and a request's latency counts from its scheduled time, not from when a
 * free pipeline slot let it go out, so a stalled server shows up in the percentiles
 * (no coordinated omission). The run stops sending after duration_s (plus warmup_s)
 * or after max_ops events/gets, then drains what is in flight (drain_timeout_s).
 *
 * Nothing is shared between threads while running; each thread's counters and
 * histograms are merged into the result at the end.
 */
#ifndef BENCH_DRIVER_H
#define BENCH_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "gen.h"
#include "hist.h"
#include "wire.h"

typedef struct driver_cfg {
    const wire_ctx *wire;
    const char *addr;        /* "host:port" */
    unsigned conns, depth, batch, threads;
    double duration_s, warmup_s, drain_timeout_s;
    uint64_t max_ops;        /* 0 = until duration */
    double rate;             /* requests per second over all threads, 0 = closed loop */
    double get_fraction;     /* share of requests that are gets (1 = get mode) */
    key_dist dist;
    uint64_t keys;
    double alpha;
    uint64_t seed;
    int64_t time_base;       /* first event_time */
    bool sched_batch;        /* closed-loop push runs: load threads SCHED_BATCH */
} driver_cfg;

typedef struct driver_result {
    uint64_t events_acked, events_failed;  /* pushes */
    uint64_t gets_ok, gets_failed;
    uint64_t requests;                     /* completed requests (a batch is one) */
    uint64_t lost;                         /* in flight when a connection died or the drain timed out */
    unsigned conn_errors;
    double elapsed_s;                      /* measured window (after warmup) */
    hist push_lat, get_lat;                /* ns per request */
    hist send_lag;                         /* open loop: ns from a request's scheduled time to
                                            * when the client wrote it (0 when sent on time or
                                            * early): the client's own share of the latency */
    hist recv_lag;                         /* open loop: ns from a reply's arrival in the client's
                                            * socket (kernel timestamp) to beava-bench reading
                                            * it: the client's share on the way back */
    hist server_lat;                       /* open loop: ns from beava-bench writing a request to
                                            * its reply reaching the client's socket (at most:
                                            * the stamp is the read's last segment) */
    char error[256];                       /* first error, "" if none */
} driver_result;

/* Runs the load. Returns 0 when it ran to the end (possibly with failed requests,
 * counted in *res), -1 when it could not start (connect failed...) with res->error. */
int driver_run(const driver_cfg *cfg, driver_result *res);

/* Monotonic clock in nanoseconds / wall clock in ms. */
uint64_t driver_now_ns(void);
int64_t driver_wall_ms(void);

/* Parses "host:port" into a socket address and connects (blocking, TCP_NODELAY).
 * Returns the fd or -1 with errno set. */
int driver_connect(const char *addr);

#endif
