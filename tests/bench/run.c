/*
 * run.c - one measured run (see run.h).
 *
 * Memory per entity is (VmRSS after - VmRSS after register) / (entities after -
 * entities before), i.e. what the process really grew by per entity, allocator
 * overhead and hash-table slack included; the server's own accounting
 * (beava_entity_bytes / beava_entity_count_resident) is printed next to it.
 */
#include "run.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void run_base_cfg(const bench_opts *o, const wire_ctx *w, const char *addr, driver_cfg *c) {
    memset(c, 0, sizeof *c);
    c->wire = w;
    c->addr = addr;
    c->conns = o->conns;
    c->depth = o->depth;
    c->batch = o->batch;
    c->threads = o->threads;
    c->duration_s = o->duration;
    c->warmup_s = o->warmup;
    c->drain_timeout_s = 30;
    c->max_ops = o->events;
    c->rate = o->rate;
    c->get_fraction = o->get_fraction;
    c->sched_batch = o->sched_batch;
    c->dist = o->dist;
    c->keys = o->keys;
    c->alpha = o->alpha;
    c->seed = o->seed;
    c->time_base = 1;
}

int run_prefill(const wire_ctx *w, const char *addr, uint64_t n, driver_result *r, char *err, size_t errlen) {
    driver_cfg c;
    memset(&c, 0, sizeof c);
    c.wire = w;
    c.addr = addr;
    c.threads = 1;
    c.dist = KEYS_SEQ;
    c.keys = n;
    c.max_ops = n;
    c.drain_timeout_s = 120;
    c.seed = 42;
    c.time_base = 1;
    switch (w->kind) {
    case WIRE_TCP_JSON:
    case WIRE_TCP_MSGPACK: c.conns = 2; c.depth = 4; c.batch = 1000; break;
    case WIRE_REDIS: c.conns = 2; c.depth = 64; c.batch = 10; break;
    case WIRE_HTTP: c.conns = 16; c.depth = 1; c.batch = 1; break;
    }
    if (driver_run(&c, r) != 0 || r->error[0]) {
        snprintf(err, errlen, "prefill: %s", r->error);
        return -1;
    }
    fprintf(stderr, "beava-bench: prefilled %llu keys in %.1f s\n", (unsigned long long)r->events_acked, r->elapsed_s);
    if (r->events_acked != n) {
        snprintf(err, errlen, "prefill: %llu of %llu events acked", (unsigned long long)r->events_acked,
                 (unsigned long long)n);
        return -1;
    }
    return 0;
}

static void finish_throughput(run_out *out) {
    const driver_result *d = &out->dr;
    double n = out->get_mode ? (double)d->gets_ok : (double)d->events_acked;
    out->throughput = d->elapsed_s > 0 ? n / d->elapsed_s : 0;
}

int run_beava(const bench_opts *o, const pipeline *pl, beava_target *t, run_out *out) {
    memset(out, 0, sizeof *out);
    out->entities = out->bytes_per_entity = out->server_bytes_per_entity = -1;
    out->get_mode = o->get_fraction >= 1.0;
    const pl_table *kt = pipeline_key_table(pl);
    if (o->get_fraction > 0 && !kt) {
        snprintf(out->error, sizeof out->error, "gets need a table grouped by %s", pl->key_field);
        return -1;
    }
    if (!o->no_register && target_register(t, pl, out->error, sizeof out->error) != 0) return -1;
    const char *addr = o->wire == WIRE_HTTP ? t->http : t->tcp;
    if (!addr) {
        snprintf(out->error, sizeof out->error, "no address for wire %s", wire_name(o->wire));
        return -1;
    }
    wire_ctx w = { .kind = o->wire, .pl = pl, .get_table = kt ? kt->name : NULL };
    out->rss0_kb = target_rss_kb(t);
    double ent0 = target_metric(t, "beava_entity_count_resident");
    if (o->prefill) {
        wire_ctx pw = w;
        const char *paddr = addr;
        if (t->tcp) {
            pw.kind = WIRE_TCP_MSGPACK;
            paddr = t->tcp;
        }
        if (run_prefill(&pw, paddr, o->prefill, &out->dr, out->error, sizeof out->error) != 0) return -1;
        out->prefilled = out->dr.events_acked;
    }
    driver_cfg c;
    run_base_cfg(o, &w, addr, &c);
    out->cpu.server_cores = out->cpu.other_cores = -1;
    if (c.duration_s > 0 || c.max_ops > 0) {
        cpu_sample a, b;
        cpu_take(t->pid, &a);
        if (driver_run(&c, &out->dr) != 0) {
            snprintf(out->error, sizeof out->error, "%s", out->dr.error);
            return -1;
        }
        cpu_take(t->pid, &b);
        cpu_diff(&a, &b, &out->cpu);
    } else {
        out->prefill_only = true;   /* out->dr holds the prefill (memory workloads) */
        out->get_mode = false;
    }
    finish_throughput(out);
    out->rss1_kb = target_rss_kb(t);
    out->entities = target_metric(t, "beava_entity_count_resident");
    double eb = target_metric(t, "beava_entity_bytes");
    if (out->entities > 0 && eb >= 0) out->server_bytes_per_entity = eb / out->entities;
    if (out->rss0_kb > 0 && out->rss1_kb > 0 && out->entities > 0) {
        double de = out->entities - (ent0 > 0 ? ent0 : 0);
        if (de > 0) out->bytes_per_entity = (double)(out->rss1_kb - out->rss0_kb) * 1024.0 / de;
    }
    return 0;
}

static int redis_load_script(const char *addr, redis_plan *plan, char *err, size_t errlen) {
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errlen, "bad redis address %s", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    redisContext *c = redisConnect(host, atoi(colon + 1));
    if (!c || c->err) {
        snprintf(err, errlen, "redis %s: %s", addr, c ? c->errstr : "cannot connect");
        if (c) redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", plan->script);
    int rc = 0;
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        snprintf(err, errlen, "SCRIPT LOAD: %s", r && r->str ? r->str : "failed");
        rc = -1;
    } else {
        memcpy(plan->sha, r->str, 40);
        plan->sha[40] = '\0';
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return rc;
}

int run_redis(const bench_opts *o, const pipeline *pl, run_out *out) {
    memset(out, 0, sizeof *out);
    out->entities = out->bytes_per_entity = out->server_bytes_per_entity = -1;
    out->rss0_kb = out->rss1_kb = -1;
    if (o->get_fraction > 0) {
        snprintf(out->error, sizeof out->error, "the Redis peer drives pushes only");
        return -1;
    }
    redis_plan plan;
    if (redis_plan_build(pl, o->redis_lua, &plan, out->error, sizeof out->error) != 0) {
        redis_plan_free(&plan);
        return -1;
    }
    fprintf(stderr, "beava-bench: redis peer (%s mode), per event:\n%s", o->redis_lua ? "lua" : "cmds",
            plan.doc.data ? plan.doc.data : "");
    if (plan.script) fprintf(stderr, "beava-bench: lua script:\n%s", plan.script);
    server_proc rp;
    memset(&rp, 0, sizeof rp);
    rp.pid = -1;
    const char *addr = o->redis_addr;
    int rc = -1;
    if (!addr) {
        if (proc_spawn_redis(o->redis_server, &rp, out->error, sizeof out->error) != 0) goto done;
        rp.keep = o->keep;
        addr = rp.tcp;
        fprintf(stderr, "beava-bench: spawned %s (pid %d) on %s\n", o->redis_server, (int)rp.pid, addr);
    }
    if (plan.lua && redis_load_script(addr, &plan, out->error, sizeof out->error) != 0) goto done;
    wire_ctx w = { .kind = WIRE_REDIS, .pl = pl, .plan = &plan };
    if (rp.pid > 0) out->rss0_kb = proc_status_kb(rp.pid, "VmRSS");
    driver_cfg c;
    run_base_cfg(o, &w, addr, &c);
    cpu_sample a, b;
    cpu_take(rp.pid, &a);
    if (driver_run(&c, &out->dr) != 0) {
        snprintf(out->error, sizeof out->error, "%s", out->dr.error);
        goto done;
    }
    cpu_take(rp.pid, &b);
    cpu_diff(&a, &b, &out->cpu);
    finish_throughput(out);
    if (rp.pid > 0) out->rss1_kb = proc_status_kb(rp.pid, "VmRSS");
    rc = 0;
done:
    if (rp.pid > 0 || rp.dir[0]) proc_stop(&rp, 10);
    redis_plan_free(&plan);
    return rc;
}

void run_print(const char *label, const char *target, const char *wire, const run_out *r) {
    char tag[160];
    snprintf(tag, sizeof tag, "%s", label);
    for (char *p = tag; *p; p++)
        if (*p == ' ' || *p == '\t') *p = '_';
    const driver_result *d = &r->dr;
    const hist *h = r->get_mode ? &d->get_lat : &d->push_lat;
    const char *unit = r->get_mode ? "gets/s" : "events/s";
    if (r->prefill_only) printf("(no load phase; figures of the prefill, PUSH_MANY batches of 1000)\n");
    printf("%s [%s %s]: %.0f %s over %.2f s (%llu events acked, %llu failed, %llu gets ok, %llu failed, %llu lost, "
           "%u connection errors)\n",
           label, target, wire, r->throughput, unit, d->elapsed_s, (unsigned long long)d->events_acked,
           (unsigned long long)d->events_failed, (unsigned long long)d->gets_ok, (unsigned long long)d->gets_failed,
           (unsigned long long)d->lost, d->conn_errors);
    printf("  %s latency per request: p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us  mean %.1f us (%llu requests)\n",
           r->get_mode ? "get" : "push", hist_percentile(h, 50) / 1e3, hist_percentile(h, 99) / 1e3,
           hist_percentile(h, 99.9) / 1e3, (double)h->max / 1e3, hist_mean(h) / 1e3, (unsigned long long)h->total);
    if (!r->get_mode && d->get_lat.total)
        printf("  get latency: p50 %.1f us  p99 %.1f us  p99.9 %.1f us (%llu gets)\n", hist_percentile(&d->get_lat, 50) / 1e3,
               hist_percentile(&d->get_lat, 99) / 1e3, hist_percentile(&d->get_lat, 99.9) / 1e3,
               (unsigned long long)d->get_lat.total);
    if (d->send_lag.total)
        printf("  client send lag (scheduled -> written by beava-bench): p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us\n",
               hist_percentile(&d->send_lag, 50) / 1e3, hist_percentile(&d->send_lag, 99) / 1e3,
               hist_percentile(&d->send_lag, 99.9) / 1e3, (double)d->send_lag.max / 1e3);
    if (d->server_lat.total)
        printf("  server share (written -> reply in the client's socket): p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us\n",
               hist_percentile(&d->server_lat, 50) / 1e3, hist_percentile(&d->server_lat, 99) / 1e3,
               hist_percentile(&d->server_lat, 99.9) / 1e3, (double)d->server_lat.max / 1e3);
    if (d->recv_lag.total)
        printf("  client receive lag (reply in socket -> read by beava-bench): p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us\n",
               hist_percentile(&d->recv_lag, 50) / 1e3, hist_percentile(&d->recv_lag, 99) / 1e3,
               hist_percentile(&d->recv_lag, 99.9) / 1e3, (double)d->recv_lag.max / 1e3);
    if (r->rss1_kb > 0)
        printf("  server RSS %.1f MB (%.1f MB before the load)", r->rss1_kb / 1024.0, r->rss0_kb / 1024.0);
    if (r->entities >= 0) printf(", %.0f entities resident", r->entities);
    if (r->bytes_per_entity >= 0) printf(", %.0f B/entity by RSS", r->bytes_per_entity);
    if (r->server_bytes_per_entity >= 0) printf(", %.0f B/entity by server accounting", r->server_bytes_per_entity);
    if (r->rss1_kb > 0 || r->entities >= 0) printf("\n");
    if (r->cpu.server_cores >= 0)
        printf("  CPU during the load: server %.2f cores (%.0f %s per server core), beava-bench %.2f cores, "
               "other processes %.2f cores (machine has %ld)\n",
               r->cpu.server_cores, r->cpu.server_cores > 0 ? r->throughput / r->cpu.server_cores : 0.0, unit,
               r->cpu.client_cores, r->cpu.other_cores, sysconf(_SC_NPROCESSORS_ONLN));
    if (d->error[0]) printf("  first error: %s\n", d->error);
    printf("BENCH_RESULT label=%s target=%s wire=%s throughput=%.0f unit=%s p50_us=%.1f p99_us=%.1f p999_us=%.1f "
           "max_us=%.1f rss_kb=%ld rss0_kb=%ld entities=%.0f bpe=%.1f server_bpe=%.1f acked=%llu failed=%llu "
           "gets_ok=%llu gets_failed=%llu lost=%llu elapsed_s=%.3f server_cores=%.2f client_cores=%.2f other_cores=%.2f",
           tag, target, wire, r->throughput, unit, hist_percentile(h, 50) / 1e3, hist_percentile(h, 99) / 1e3,
           hist_percentile(h, 99.9) / 1e3, (double)h->max / 1e3, r->rss1_kb, r->rss0_kb, r->entities,
           r->bytes_per_entity, r->server_bytes_per_entity, (unsigned long long)d->events_acked,
           (unsigned long long)d->events_failed, (unsigned long long)d->gets_ok, (unsigned long long)d->gets_failed,
           (unsigned long long)d->lost, d->elapsed_s, r->cpu.server_cores, r->cpu.client_cores, r->cpu.other_cores);
    if (d->server_lat.total)     /* open loop: the shares of the latency (README) */
        printf(" send_lag_p99_us=%.1f server_p50_us=%.1f server_p99_us=%.1f recv_lag_p99_us=%.1f",
               hist_percentile(&d->send_lag, 99) / 1e3, hist_percentile(&d->server_lat, 50) / 1e3,
               hist_percentile(&d->server_lat, 99) / 1e3, hist_percentile(&d->recv_lag, 99) / 1e3);
    printf("\n");
    fflush(stdout);
}
