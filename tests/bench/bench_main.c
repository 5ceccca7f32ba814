/*
 * bench_main.c - beava-bench: load generator and benchmark harness for beava, with a
 * Redis peer doing the same features (issue 5).
 *
 *   beava-bench --pipeline small.json --spawn build-bench/beava [--wire tcp-msgpack]
 *               [-c 4 -d 64 -b 1] [--duration 10 | --events N] [--keys N --dist zipf]
 *               [--mode get --prefill 1000000] [--rate R] [--compare] [--results FILE]
 *   beava-bench --smoke --spawn build/beava --pipeline small.json
 *
 * Flow: options -> pipeline file -> beava run (spawn or attach, register, prefill,
 * drive, memory figures) and/or Redis run (spawn redis-server, same stream) -> human
 * summary + BENCH_RESULT lines on stdout -> optional Markdown rows. Modules: opts (CLI),
 * pipeline (file), gen (event stream), wire (encoders/parsers), driver (epoll load),
 * hist (latency), redisplan (Redis peer), proc/target/ctl (servers), report (rows),
 * run (one run), smoke (self-test).
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opts.h"
#include "pipeline.h"
#include "report.h"
#include "run.h"
#include "smoke.h"
#include "target.h"

#ifndef BENCH_SOURCE_DIR
#define BENCH_SOURCE_DIR "."
#endif

static void fill_row(run_row *row, const bench_opts *o, const pipeline *pl, const char *label, const char *target,
                     const char *wire, const run_out *r) {
    memset(row, 0, sizeof *row);
    row->label = label;
    row->target = target;
    row->wire = wire;
    row->pipeline = pl->name;
    if (r->prefill_only)
        snprintf(row->shape, sizeof row->shape, "prefill C2×D4×B1000");
    else if (o->rate > 0)
        snprintf(row->shape, sizeof row->shape, "C%u×D%u×B%u, %.0f req/s", o->conns, o->depth, o->batch, o->rate);
    else
        snprintf(row->shape, sizeof row->shape, "C%u×D%u×B%u", o->conns, o->depth, o->batch);
    if (o->dist == KEYS_ZIPF) snprintf(row->keys, sizeof row->keys, "zipf(%.2f) %llu", o->alpha, (unsigned long long)o->keys);
    else snprintf(row->keys, sizeof row->keys, "uniform %llu", (unsigned long long)o->keys);
    if (o->prefill) {
        size_t l = strlen(row->keys);
        snprintf(row->keys + l, sizeof row->keys - l, ", prefill %llu", (unsigned long long)o->prefill);
    }
    const hist *h = r->get_mode ? &r->dr.get_lat : &r->dr.push_lat;
    row->events_per_s = r->throughput;
    row->rate_unit = r->get_mode ? "gets/s" : "events/s";
    row->p50_us = hist_percentile(h, 50) / 1e3;
    row->p99_us = hist_percentile(h, 99) / 1e3;
    row->p999_us = hist_percentile(h, 99.9) / 1e3;
    row->rss_kb = r->rss1_kb;
    row->bytes_per_entity = r->bytes_per_entity;
    row->errors = r->dr.events_failed + r->dr.gets_failed + r->dr.lost;
    row->server_cores = r->cpu.server_cores;
    row->client_cores = r->cpu.client_cores;
    row->other_cores = r->cpu.other_cores;
}

int main(int argc, char **argv) {
    bench_opts o;
    char err[1024] = "";
    int prc = opts_parse(argc, argv, &o, err, sizeof err);
    if (prc == 1) return 0;
    if (prc != 0) {
        fprintf(stderr, "beava-bench: %s\n", err);
        return 2;
    }
    pipeline pl;
    if (pipeline_load(o.pipeline_path, &pl, err, sizeof err) != 0) {
        fprintf(stderr, "beava-bench: %s\n", err);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int exit_code = 0;
    if (o.smoke) {
        exit_code = smoke_run(&o, &pl);
        goto done;
    }

    machine m;
    machine_probe(&m, BENCH_SOURCE_DIR);
    char *cmd = report_cmdline(argc, argv);
    char label[160];
    if (o.label) snprintf(label, sizeof label, "%s", o.label);
    else snprintf(label, sizeof label, "%s/%s/%s", pl.name, o.target_redis && !o.compare ? "redis" : wire_name(o.wire),
                  o.get_fraction >= 1 ? "get" : "push");
    printf("# %s — %ld x %s, commit %s, %s\n# %s\n", label, m.nproc, m.cpu, m.commit, m.date, cmd);

    bool do_beava = !o.target_redis || o.compare;
    bool do_redis = o.target_redis || o.compare;
    run_out *rb = xcalloc(1, sizeof *rb), *rr = xcalloc(1, sizeof *rr);
    bool have_b = false, have_r = false;
    if (do_beava) {
        beava_target t;
        if (target_open(&o, &t, err, sizeof err) != 0) {
            fprintf(stderr, "beava-bench: %s\n", err);
            exit_code = 1;
        } else {
            if (run_beava(&o, &pl, &t, rb) != 0) {
                fprintf(stderr, "beava-bench: beava run: %s\n", rb->error);
                exit_code = 1;
            } else {
                have_b = true;
                run_print(label, "beava", wire_name(o.wire), rb);
            }
            int st = target_close(&t);
            if (st > 0) fprintf(stderr, "beava-bench: beava exited with status %d\n", st);
        }
    }
    if (do_redis && exit_code == 0) {
        if (run_redis(&o, &pl, rr) != 0) {
            fprintf(stderr, "beava-bench: redis run: %s\n", rr->error);
            exit_code = 1;
        } else {
            have_r = true;
            run_print(label, "redis", o.redis_lua ? "resp-lua" : "resp", rr);
        }
    }
    double ratio = 0;
    if (have_b && have_r && rr->throughput > 0) {
        ratio = rb->throughput / rr->throughput;
        printf("BENCH_COMPARE label=%s beava=%.0f redis=%.0f ratio=%.2f\n", label, rb->throughput, rr->throughput, ratio);
        printf("%s: beava/redis = %.2fx\n", label, ratio);
    }
    if (o.results) {
        run_row row;
        if (have_b) {
            fill_row(&row, &o, &pl, label, "beava", wire_name(o.wire), rb);
            row.ratio = ratio;
            if (report_append(o.results, &m, &row, cmd) != 0) perror(o.results);
        }
        if (have_r) {
            fill_row(&row, &o, &pl, label, "redis", o.redis_lua ? "resp-lua" : "resp", rr);
            if (report_append(o.results, &m, &row, cmd) != 0) perror(o.results);
        }
    }
    if (exit_code == 0 && ((have_b && (rb->dr.events_failed + rb->dr.gets_failed + rb->dr.lost)) ||
                           (have_r && (rr->dr.events_failed + rr->dr.lost))))
        exit_code = 3;
    free(rb);
    free(rr);
    free(cmd);
done:
    pipeline_free(&pl);
    curl_global_cleanup();
    return exit_code;
}
