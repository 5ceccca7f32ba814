/*
 * apply_bench.c - beava-apply-bench: the operators' cost in one process, without a
 * network, a WAL or a load generator in the way, for heap profilers (massif), callgrind
 * and `perf stat -e instructions`.
 *
 *   beava-apply-bench --pipeline ../shared/data/bench/fraud-team.json [--events N]
 *                     [--keys K] [--seed S] [--batch B] [--roundtrip]
 *
 * Flow: the pipeline file (pipeline.c) -> a memory-only engine with one shard -> the
 * register body -> N events drawn exactly as beava-bench draws them (gen.c: one client
 * thread, keys uniform over K) -> figures: VmRSS before/after and growth per event.
 *
 * Events enter as WAL records through engine_replay (the recovery path), so that their
 * arrival times are ours, not the wall clock's: event i arrives at
 * time_base + i * span / N (defaults: 2100-01-01, N events over APPLY_DEFAULT_SPAN_MS,
 * about what the 10 s beava-bench run spreads them over). Reads then happen at the
 * last arrival (the engine reads at max(wall clock, latest arrival)), so every figure is
 * deterministic and windows are live. --push sends them through engine_push_submit
 * instead (the live path; arrival = wall clock).
 *
 * --dump FILE writes every feature value of every entity (OP_GET_MULTI bodies over keys
 * k00000000.. and s0..s999) so that two builds can be diffed. --roundtrip serialises
 * the state, restores it into a fresh engine and checks that every value reads the same
 * there (exit 1 if not): a self-check of every op's snapshot codec on a realistic state.
 * --save FILE writes the snapshot body (engine_serialize) after the events; --load FILE
 * restores one instead of applying events (then --dump / --save as usual): together
 * they check that two builds write the same bytes and read each other's snapshots.
 *
 * It measures, it does not assert figures; run it under
 *   valgrind --tool=massif, valgrind --tool=callgrind, perf stat -e instructions.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "evrec.h"
#include "gen.h"
#include "pipeline.h"

#define APPLY_DEFAULT_EVENTS 100000u
#define APPLY_DEFAULT_KEYS 100000u
#define APPLY_DEFAULT_BATCH 64u
#define APPLY_TEXT_MAX 32            /* one generated value or key as text */
#define APPLY_DEFAULT_TIME_BASE 4102444800000ll   /* 2100-01-01T00:00:00Z */
#define APPLY_DEFAULT_SPAN_MS 12000

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} waiter;

static void waiter_done(engine_batch *b) {
    waiter *w = b->owner;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static long vm_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) { kb = strtol(line + 6, NULL, 10); break; }
    fclose(f);
    return kb;
}

typedef struct opts {
    const char *pipeline;
    uint64_t events, keys, seed, batch;
    int64_t time_base, span_ms;
    const char *dump, *save, *load;
    bool roundtrip, push;
} opts;

static int parse_opts(int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->events = APPLY_DEFAULT_EVENTS;
    o->keys = APPLY_DEFAULT_KEYS;
    o->seed = 1;
    o->batch = APPLY_DEFAULT_BATCH;
    o->time_base = APPLY_DEFAULT_TIME_BASE;
    o->span_ms = APPLY_DEFAULT_SPAN_MS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--roundtrip")) { o->roundtrip = true; continue; }
        if (!strcmp(a, "--push")) { o->push = true; continue; }
        if (!v) return -1;
        if (!strcmp(a, "--pipeline")) o->pipeline = v;
        else if (!strcmp(a, "--events")) o->events = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--keys")) o->keys = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--seed")) o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--batch")) o->batch = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--time-base")) o->time_base = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--span")) o->span_ms = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--dump")) o->dump = v;
        else if (!strcmp(a, "--save")) o->save = v;
        else if (!strcmp(a, "--load")) o->load = v;
        else return -1;
        i++;
    }
    return o->pipeline && o->batch && o->keys ? 0 : -1;
}

/* Per batch slot: the row's fields and the text its string values point into. */
typedef struct slot {
    bv_field *fields;
    char (*text)[APPLY_TEXT_MAX];
} slot;

static void fill_row(const pipeline *pl, const event *ev, slot *s, bv_row *row) {
    size_t n = 0;
    int len = gen_key_text(ev->key, s->text[n]);
    s->fields[n] = (bv_field){ pl->key_field, strlen(pl->key_field), bv_str(s->text[n], (size_t)len) };
    n++;
    s->fields[n] = (bv_field){ "event_time", 10, bv_i64(ev->event_time) };
    n++;
    for (size_t i = 0; i < pl->nextra; i++, n++) {
        bv_value v;
        switch (pl->extra[i].type) {
        case FT_F64: v = bv_f64(gen_val_f64(pl, ev, (int)i)); break;
        case FT_I64: v = bv_i64(ev->vals[i].i); break;
        default:
            len = gen_val_text(pl, ev, (int)i, s->text[n], APPLY_TEXT_MAX);
            v = bv_str(s->text[n], (size_t)len);
        }
        s->fields[n] = (bv_field){ pl->extra[i].name, strlen(pl->extra[i].name), v };
    }
    row->fields = s->fields;
    row->n = n;
    row->cap = 0;
}

static int write_buf(void *ctx, const void *p, size_t n) {
    bv_buf_put(ctx, p, n);
    return 0;
}

#define APPLY_GET_CELLS 9000         /* below the engine's OP_GET_MULTI cell cap */
#define APPLY_STR_VALUES 1000        /* gen.c's "s0".."s999" */

/* Every feature of every entity of e as OP_GET_MULTI bodies, one per line, into out. */
static void dump_values(engine *e, const pipeline *pl, uint64_t keys, bv_buf *out) {
    json_t *feats = json_array();
    for (size_t t = 0; t < pl->ntables; t++)
        for (size_t f = 0; f < pl->tables[t].nfeats; f++)
            json_array_append_new(feats, json_string(pl->tables[t].feats[f].name));
    size_t per = json_array_size(feats) ? APPLY_GET_CELLS / json_array_size(feats) : 1;
    if (per == 0) per = 1;
    uint64_t total = keys + APPLY_STR_VALUES;
    for (uint64_t k = 0; k < total;) {
        json_t *req = json_object(), *ka = json_array();
        for (size_t i = 0; i < per && k < total; i++, k++) {
            char t[APPLY_TEXT_MAX];
            if (k < keys) t[gen_key_text(k, t)] = 0;
            else snprintf(t, sizeof t, "s%llu", (unsigned long long)(k - keys));
            json_array_append_new(ka, json_string(t));
        }
        json_object_set_new(req, "keys", ka);
        json_object_set(req, "features", feats);
        engine_get_multi(e, req, false, out);
        bv_buf_putc(out, '\n');
        json_decref(req);
    }
    json_decref(feats);
}

/* Serialise e, restore into a fresh engine, compare every value: 0 when identical. */
static int roundtrip(engine *e, const pipeline *pl, uint64_t keys) {
    bv_buf img, a, b;
    bv_buf_init(&img);
    bv_buf_init(&a);
    bv_buf_init(&b);
    char reason[256] = "";
    int rc = -1;
    engine_options eo = { .shards = 1 };
    engine *f = engine_new(&eo);
    if (!f || engine_serialize(e, write_buf, &img) < 0) goto out;
    if (engine_deserialize(f, img.data, img.len, reason, sizeof reason) < 0) {
        fprintf(stderr, "apply-bench: restore failed: %s\n", reason);
        goto out;
    }
    dump_values(e, pl, keys, &a);
    dump_values(f, pl, keys, &b);
    rc = a.len == b.len && !memcmp(a.data, b.data, a.len) ? 0 : -1;
    printf("snapshot: %zu bytes; values after restore %s (%zu bytes of values)\n", img.len,
           rc == 0 ? "identical" : "DIFFER", a.len);
out:
    if (f) engine_free(f);
    bv_buf_free(&img);
    bv_buf_free(&a);
    bv_buf_free(&b);
    return rc;
}

static int write_file(const char *path, const bv_buf *b) {
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(b->data, 1, b->len, f) == b->len ? 0 : -1;
    if (f && fclose(f) != 0) rc = -1;
    if (rc < 0) fprintf(stderr, "apply-bench: cannot write %s\n", path);
    return rc;
}

/* Replace e's state by the snapshot body in `path`. */
static int load_snapshot(engine *e, const char *path) {
    FILE *f = fopen(path, "rb");
    bv_buf b;
    bv_buf_init(&b);
    char chunk[1 << 16], reason[256] = "";
    size_t n;
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0) bv_buf_put(&b, chunk, n);
    int rc = f && !ferror(f) ? engine_deserialize(e, b.data, b.len, reason, sizeof reason) : -1;
    if (rc < 0) fprintf(stderr, "apply-bench: cannot load %s %s\n", path, reason);
    if (f) fclose(f);
    bv_buf_free(&b);
    return rc;
}

/* The events through engine_submit_push in batches (arrival = wall clock). */
static uint64_t feed_push(engine *e, const pipeline *pl, evgen *g, const opts *o, slot *slots) {
    engine_push_item *items = calloc(o->batch, sizeof *items);
    bv_row *rows = calloc(o->batch, sizeof *rows);
    waiter w = { .done = false };
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    engine_batch b;
    engine_batch_init(&b);
    uint64_t failed = 0;
    for (uint64_t done = 0; done < o->events;) {
        uint64_t n = o->events - done < o->batch ? o->events - done : o->batch;
        for (uint64_t i = 0; i < n; i++) {
            fill_row(pl, evgen_next(g), &slots[i], &rows[i]);
            memset(&items[i], 0, sizeof items[i]);
            items[i].event = pl->event_name;
            items[i].event_len = strlen(pl->event_name);
            items[i].row = &rows[i];
            items[i].data_is_object = true;
        }
        b.items = items;
        b.n = n;
        b.done = waiter_done;
        b.owner = &w;
        w.done = false;
        if (!engine_push_submit(e, &b)) {
            pthread_mutex_lock(&w.mu);
            while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
            pthread_mutex_unlock(&w.mu);
        }
        for (uint64_t i = 0; i < n; i++) failed += items[i].res.status != 200;
        done += n;
    }
    engine_batch_free(&b);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    free(items);
    free(rows);
    return failed;
}

/* The schema positions of fill_row's fields in the pipeline's event, and its schema
 * fingerprint, as the server writes its WAL records (evrec.h, fields by position).
 * Returns false (records are then written by name) when the event is not found. */
static bool record_positions(const pipeline *pl, const bv_row *row, int32_t *fpos, evrec_pos *pos) {
    json_t *reg = json_loads(pl->register_json, 0, NULL);
    json_t *node, *fields = NULL;
    size_t i;
    json_array_foreach(json_object_get(reg, "nodes"), i, node) {
        const char *kind = json_string_value(json_object_get(node, "kind"));
        const char *name = json_string_value(json_object_get(node, "name"));
        if (kind && name && strcmp(kind, "event") == 0 && strcmp(name, pl->event_name) == 0)
            fields = json_object_get(json_object_get(node, "schema"), "fields");
    }
    bv_schema sc;
    bv_schema_init(&sc);
    const char *fname;
    json_t *ftype;
    json_object_foreach(fields, fname, ftype) {
        int t = bv_wtype_parse(json_string_value(ftype) ? json_string_value(ftype) : "");
        bv_schema_set(&sc, fname, t < 0 ? WT_JSON : (bv_wtype)t);
    }
    bool ok = sc.n > 0;
    for (size_t f = 0; f < row->n && ok; f++)      /* fill_row's field names end in NUL */
        fpos[f] = bv_schema_find(&sc, row->fields[f].name, NULL);
    pos->fingerprint = bv_schema_fingerprint(&sc);
    pos->nschema = (uint32_t)sc.n;
    bv_schema_free(&sc);
    json_decref(reg);
    return ok;
}

/* The events as WAL records with our arrival times (see the top of the file). */
static uint64_t feed_replay(engine *e, const pipeline *pl, evgen *g, const opts *o, slot *s, uint64_t lsn) {
    bv_buf rec;
    bv_buf_init(&rec);
    bv_row row;
    uint64_t failed = 0;
    char reason[256];
    int32_t *fpos = calloc(pl->nextra + 2, sizeof *fpos);
    if (!fpos) abort();
    evrec_pos pos = { 0, 0, fpos };
    bool by_pos = false;
    for (uint64_t i = 0; i < o->events; i++) {
        fill_row(pl, evgen_next(g), s, &row);
        if (i == 0) by_pos = record_positions(pl, &row, fpos, &pos);
        int64_t now = o->time_base + (int64_t)((double)i * (double)o->span_ms / (double)o->events);
        rec.len = 0;
        evrec_encode(now, pl->event_name, strlen(pl->event_name), &row, by_pos ? &pos : NULL, &rec);
        if (engine_replay(e, REC_EVENT, lsn++, rec.data, rec.len, reason, sizeof reason) != 0) {
            if (!failed) fprintf(stderr, "apply-bench: %s\n", reason);
            failed++;
        }
    }
    bv_buf_free(&rec);
    free(fpos);
    return failed;
}

int main(int argc, char **argv) {
    opts o;
    if (parse_opts(argc, argv, &o) < 0) {
        fprintf(stderr, "usage: beava-apply-bench --pipeline FILE [--events N] [--keys K] [--seed S] "
                        "[--batch B] [--time-base MS] [--span MS] [--push] [--roundtrip] [--dump FILE]\n"
                        "       [--save FILE] [--load FILE]\n");
        return 2;
    }
    pipeline pl;
    char err[256];
    if (pipeline_load(o.pipeline, &pl, err, sizeof err) < 0) {
        fprintf(stderr, "apply-bench: %s\n", err);
        return 2;
    }
    engine_options eo = { .shards = 1 };
    engine *e = engine_new(&eo);
    int rc = 0;
    if (o.load) {
        /* the snapshot brings its registry */
    } else if (o.push) {
        bv_buf out;
        bv_buf_init(&out);
        int st = engine_register(e, pl.register_json, strlen(pl.register_json), &out);
        if (st != 200) fprintf(stderr, "apply-bench: register answered %d: %.*s\n", st, (int)out.len, out.data);
        bv_buf_free(&out);
        rc = st != 200;
    } else if (engine_replay(e, REC_REGISTER, 1, pl.register_json, strlen(pl.register_json), err, sizeof err) != 0) {
        fprintf(stderr, "apply-bench: register: %s\n", err);
        rc = 1;
    }
    size_t nf = pl.nextra + 2;
    slot *slots = calloc(o.batch, sizeof *slots);
    for (uint64_t i = 0; i < o.batch; i++) {
        slots[i].fields = calloc(nf, sizeof *slots[i].fields);
        slots[i].text = calloc(nf, sizeof *slots[i].text);
    }
    keygen kg;
    keygen_init(&kg, KEYS_UNIFORM, o.keys, 0, 0, 1);
    evgen g;
    evgen_init(&g, &pl, o.seed * 1000003ull, &kg, 1, 1);
    long rss0 = vm_rss_kb();
    uint64_t failed = 0;
    if (!rc && !o.load) {
        failed = o.push ? feed_push(e, &pl, &g, &o, slots) : feed_replay(e, &pl, &g, &o, slots, 2);
        if (!o.push && engine_start_shards(e) != 0) rc = 1;     /* applies what replay gathered */
    }
    long rss1 = vm_rss_kb();
    printf("events %llu (%llu failed), keys %llu: VmRSS %ld -> %ld kB (%.1f MiB), %.1f B/event\n",
           (unsigned long long)o.events, (unsigned long long)failed, (unsigned long long)o.keys, rss0, rss1,
           rss1 / 1024.0, o.events ? (double)(rss1 - rss0) * 1024.0 / (double)o.events : 0.0);
    if (failed) rc = 1;
    if (!rc && o.load && load_snapshot(e, o.load) < 0) rc = 1;
    if (!rc && o.save) {
        bv_buf img;
        bv_buf_init(&img);
        if (engine_serialize(e, write_buf, &img) < 0 || write_file(o.save, &img) < 0) rc = 1;
        bv_buf_free(&img);
    }
    if (!rc && o.roundtrip && roundtrip(e, &pl, o.keys) < 0) rc = 1;
    if (!rc && o.dump) {
        bv_buf d;
        bv_buf_init(&d);
        dump_values(e, &pl, o.keys, &d);
        if (write_file(o.dump, &d) < 0) rc = 1;
        bv_buf_free(&d);
    }
    evgen_free(&g);
    for (uint64_t i = 0; i < o.batch; i++) {
        free(slots[i].fields);
        free(slots[i].text);
    }
    free(slots);
    engine_free(e);
    pipeline_free(&pl);
    return rc;
}
