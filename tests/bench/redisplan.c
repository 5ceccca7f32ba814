/*
 * redisplan.c - translation of a pipeline's features into Redis commands (the mapping
 * is documented in redisplan.h) and their RESP encoding.
 *
 * RESP is written by hand straight into the connection's buffer (replies are parsed
 * with hiredis' redisReader in wire.c): formatting through redisFormatCommandArgv
 * would cost a malloc per command on the client, which is not the server's work we
 * want to measure.
 */
#include "redisplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RS_HINCRBY, RS_HINCRBYFLOAT, RS_MEAN, RS_WIN_INCR, RS_WIN_INCRBYFLOAT, RS_WIN_MEAN, RS_MIN, RS_MAX };

struct redis_step {
    int kind;
    size_t tkey;          /* index into plan->tkeys */
    const char *feat;
    int field;            /* extra field index, -1 when none */
    int64_t bucket_ms;
    int64_t ttl_s;
};

/* How to build a table's entity key: per group key, where the value comes from
 * (-1 key_field, -2 event_time, else an extra field index). */
struct redis_tkey {
    const char *table;
    int src[8];
    size_t nsrc;
};

static int cmds_of(int kind) {
    switch (kind) {
    case RS_MEAN: return 2;
    case RS_WIN_INCR: case RS_WIN_INCRBYFLOAT: return 2;
    case RS_WIN_MEAN: return 3;
    default: return 1;
    }
}

static int key_source(const pipeline *pl, const char *k) {
    if (strcmp(k, pl->key_field) == 0) return -1;
    if (strcmp(k, "event_time") == 0) return -2;
    return pipeline_extra_index(pl, k);  /* -1 = not generated; the caller tells it from key_field */
}

static void doc_step(redis_plan *p, const redis_step *s) {
    const char *t = p->tkeys[s->tkey].table;
    const char *fn = s->field >= 0 ? p->pl->extra[s->field].name : "";
    bbuf *d = &p->doc;
    switch (s->kind) {
    case RS_HINCRBY: bbuf_printf(d, "HINCRBY %s:<key> %s 1\n", t, s->feat); break;
    case RS_HINCRBYFLOAT: bbuf_printf(d, "HINCRBYFLOAT %s:<key> %s <%s>\n", t, s->feat, fn); break;
    case RS_MEAN:
        bbuf_printf(d, "HINCRBYFLOAT %s:<key> %s:sum <%s>; HINCRBY %s:<key> %s:n 1\n", t, s->feat, fn, t, s->feat);
        break;
    case RS_WIN_INCR:
        bbuf_printf(d, "INCR %s:<key>:%s:<bucket %lldms>; EXPIRE ... %llds\n", t, s->feat, (long long)s->bucket_ms,
                    (long long)s->ttl_s);
        break;
    case RS_WIN_INCRBYFLOAT:
        bbuf_printf(d, "INCRBYFLOAT %s:<key>:%s:<bucket %lldms> <%s>; EXPIRE ... %llds\n", t, s->feat,
                    (long long)s->bucket_ms, fn, (long long)s->ttl_s);
        break;
    case RS_WIN_MEAN:
        bbuf_printf(d, "HINCRBYFLOAT %s:<key>:%s:<bucket %lldms> sum <%s>; HINCRBY ... n 1; EXPIRE ... %llds\n", t,
                    s->feat, (long long)s->bucket_ms, fn, (long long)s->ttl_s);
        break;
    case RS_MIN: case RS_MAX:
        bbuf_printf(d, "lua: HGET %s:<key> %s; if <%s> %s it: HSET\n", t, s->feat, fn, s->kind == RS_MIN ? "<" : ">");
        break;
    }
}

static size_t argv_slot(redis_plan *p, int field) {
    for (size_t i = 0; i < p->nargv_fields; i++)
        if (p->argv_field[i] == field) return i;
    p->argv_field[p->nargv_fields] = field;
    return p->nargv_fields++;
}

static void lua_step(redis_plan *p, bbuf *s, const redis_step *st) {
    char key[32];
    snprintf(key, sizeof key, "KEYS[%zu]", st->tkey + 1);
    char val[32] = "";
    if (st->field >= 0) snprintf(val, sizeof val, "ARGV[%zu]", argv_slot(p, st->field) + 2);
    const char *f = st->feat;
    switch (st->kind) {
    case RS_HINCRBY: bbuf_printf(s, "redis.call('HINCRBY', %s, '%s', 1)\n", key, f); break;
    case RS_HINCRBYFLOAT: bbuf_printf(s, "redis.call('HINCRBYFLOAT', %s, '%s', %s)\n", key, f, val); break;
    case RS_MEAN:
        bbuf_printf(s, "redis.call('HINCRBYFLOAT', %s, '%s:sum', %s)\nredis.call('HINCRBY', %s, '%s:n', 1)\n", key, f,
                    val, key, f);
        break;
    case RS_WIN_INCR: case RS_WIN_INCRBYFLOAT: case RS_WIN_MEAN:
        bbuf_printf(s, "do local bk = %s .. ':%s:' .. (math.floor(now / %lld) * %lld)\n", key, f,
                    (long long)st->bucket_ms, (long long)st->bucket_ms);
        if (st->kind == RS_WIN_INCR) bbuf_puts(s, "redis.call('INCR', bk)\n");
        else if (st->kind == RS_WIN_INCRBYFLOAT) bbuf_printf(s, "redis.call('INCRBYFLOAT', bk, %s)\n", val);
        else bbuf_printf(s, "redis.call('HINCRBYFLOAT', bk, 'sum', %s)\nredis.call('HINCRBY', bk, 'n', 1)\n", val);
        bbuf_printf(s, "redis.call('EXPIRE', bk, %lld) end\n", (long long)st->ttl_s);
        break;
    case RS_MIN: case RS_MAX:
        bbuf_printf(s,
                    "do local v = tonumber(%s); local c = redis.call('HGET', %s, '%s')\n"
                    "if (not c) or v %s tonumber(c) then redis.call('HSET', %s, '%s', %s) end end\n",
                    val, key, f, st->kind == RS_MIN ? "<" : ">", key, f, val);
        break;
    }
}

int redis_plan_build(const pipeline *pl, bool lua, redis_plan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    p->pl = pl;
    p->lua = lua;
    bbuf_init(&p->doc);
    size_t nfeat = 0;
    for (size_t t = 0; t < pl->ntables; t++) nfeat += pl->tables[t].nfeats;
    p->steps = xcalloc(nfeat + 1, sizeof *p->steps);
    p->tkeys = xcalloc(pl->ntables + 1, sizeof *p->tkeys);
    p->argv_field = xcalloc(pl->nextra + 1, sizeof *p->argv_field);
    for (size_t t = 0; t < pl->ntables; t++) {
        const pl_table *tb = &pl->tables[t];
        if (tb->nfeats == 0) continue;
        if (p->ntkeys == 8) {
            snprintf(err, errlen, "redis peer: more than 8 tables fed by %s", pl->event_name);
            return -1;
        }
        redis_tkey *tk = &p->tkeys[p->ntkeys];
        tk->table = tb->name;
        if (tb->nkeys == 0 || tb->nkeys > 8) {
            snprintf(err, errlen, "redis peer: table %s: %zu group keys not supported", tb->name, tb->nkeys);
            return -1;
        }
        for (size_t k = 0; k < tb->nkeys; k++) {
            int src = key_source(pl, tb->keys[k]);
            if (src == -1 && strcmp(tb->keys[k], pl->key_field) != 0) {
                snprintf(err, errlen, "redis peer: table %s: group key %s is not generated", tb->name, tb->keys[k]);
                return -1;
            }
            tk->src[tk->nsrc++] = src;
        }
        for (size_t i = 0; i < tb->nfeats; i++) {
            const pl_feature *f = &tb->feats[i];
            redis_step *s = &p->steps[p->nsteps];
            s->tkey = p->ntkeys;
            s->feat = f->name;
            s->field = -1;
            bool needs_field = strcmp(f->op, "count") != 0;
            if (needs_field) {
                s->field = f->field ? pipeline_extra_index(pl, f->field) : -1;
                if (s->field < 0 || pl->extra[s->field].type == FT_STR) {
                    snprintf(err, errlen, "redis peer: %s.%s: field %s is not a generated number", tb->name, f->name,
                             f->field ? f->field : "(none)");
                    return -1;
                }
            }
            bool win = f->window_ms > 0;
            if (strcmp(f->op, "count") == 0) s->kind = win ? RS_WIN_INCR : RS_HINCRBY;
            else if (strcmp(f->op, "sum") == 0) s->kind = win ? RS_WIN_INCRBYFLOAT : RS_HINCRBYFLOAT;
            else if (strcmp(f->op, "mean") == 0) s->kind = win ? RS_WIN_MEAN : RS_MEAN;
            else if (lua && !win && strcmp(f->op, "min") == 0) s->kind = RS_MIN;
            else if (lua && !win && strcmp(f->op, "max") == 0) s->kind = RS_MAX;
            else {
                snprintf(err, errlen, "redis peer: %s.%s: operator %s%s has no Redis equivalent here%s", tb->name,
                         f->name, f->op, win ? " (windowed)" : "",
                         (!lua && (!strcmp(f->op, "min") || !strcmp(f->op, "max"))) ? " (use --redis-mode lua)" : "");
                return -1;
            }
            if (win) {
                s->bucket_ms = (f->window_ms + 63) / 64;
                s->ttl_s = (f->window_ms + s->bucket_ms + 999) / 1000;
            }
            p->cmds_per_event += (unsigned)cmds_of(s->kind);
            doc_step(p, s);
            p->nsteps++;
        }
        p->ntkeys++;
    }
    if (p->nsteps == 0) {
        snprintf(err, errlen, "redis peer: the pipeline has no feature on event %s", pl->event_name);
        return -1;
    }
    if (lua) {
        bbuf s;
        bbuf_init(&s);
        bbuf_puts(&s, "local now = tonumber(ARGV[1])\n");
        for (size_t i = 0; i < p->nsteps; i++) lua_step(p, &s, &p->steps[i]);
        bbuf_puts(&s, "return 1\n");
        p->script = xstrdup(s.data);
        bbuf_free(&s);
        p->cmds_per_event = 1;
        bbuf_printf(&p->doc, "(all of the above in one EVALSHA per event, %zu KEYS, %zu ARGV)\n", p->ntkeys,
                    1 + p->nargv_fields);
    }
    return 0;
}

void redis_plan_free(redis_plan *p) {
    free(p->steps);
    free(p->tkeys);
    free(p->argv_field);
    free(p->script);
    bbuf_free(&p->doc);
    memset(p, 0, sizeof *p);
}

/* ---- RESP ----------------------------------------------------------------------------- */

static void resp_head(bbuf *out, char c, size_t n) {
    char t[24];
    int l = snprintf(t, sizeof t, "%c%zu\r\n", c, n);
    bbuf_put(out, t, (size_t)l);
}

static void resp_bulk(bbuf *out, const char *s, size_t n) {
    resp_head(out, '$', n);
    bbuf_put(out, s, n);
    bbuf_put(out, "\r\n", 2);
}

static void resp_cstr(bbuf *out, const char *s) {
    resp_bulk(out, s, strlen(s));
}

static size_t entity_key(const redis_plan *p, const redis_tkey *tk, const event *e, char *dst, size_t cap) {
    size_t n = 0;
    size_t tl = strlen(tk->table);
    if (tl + 2 > cap) return 0;
    memcpy(dst, tk->table, tl);
    n = tl;
    dst[n++] = ':';
    for (size_t i = 0; i < tk->nsrc; i++) {
        if (i) dst[n++] = '|';
        if (n + 32 > cap) return n;
        int src = tk->src[i];
        if (src == -1) n += (size_t)gen_key_text(e->key, dst + n);
        else if (src == -2) n += (size_t)snprintf(dst + n, cap - n, "%lld", (long long)e->event_time);
        else n += (size_t)gen_val_text(p->pl, e, src, dst + n, (int)(cap - n));
    }
    return n;
}

static size_t bucket_key(const char *ek, size_t ekl, const redis_step *s, int64_t now_ms, char *dst, size_t cap) {
    int64_t b = now_ms / s->bucket_ms * s->bucket_ms;
    int n = snprintf(dst, cap, "%.*s:%s:%lld", (int)ekl, ek, s->feat, (long long)b);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

unsigned redis_plan_encode(const redis_plan *p, const event *e, int64_t now_ms, bbuf *out) {
    char ek[8][160];
    size_t ekl[8];
    size_t nk = p->ntkeys < 8 ? p->ntkeys : 8;
    for (size_t i = 0; i < nk; i++) ekl[i] = entity_key(p, &p->tkeys[i], e, ek[i], sizeof ek[i]);
    char v[32], bk[256], ttl[24], tmp[64];
    if (p->lua) {
        resp_head(out, '*', 4 + nk + p->nargv_fields);
        resp_cstr(out, "EVALSHA");
        resp_cstr(out, p->sha);
        int l = snprintf(tmp, sizeof tmp, "%zu", nk);
        resp_bulk(out, tmp, (size_t)l);
        for (size_t i = 0; i < nk; i++) resp_bulk(out, ek[i], ekl[i]);
        l = snprintf(tmp, sizeof tmp, "%lld", (long long)now_ms);
        resp_bulk(out, tmp, (size_t)l);
        for (size_t i = 0; i < p->nargv_fields; i++)
            resp_bulk(out, v, (size_t)gen_val_text(p->pl, e, p->argv_field[i], v, sizeof v));
        return 1;
    }
    unsigned n = 0;
    for (size_t i = 0; i < p->nsteps; i++) {
        const redis_step *s = &p->steps[i];
        const char *k = ek[s->tkey];
        size_t kl = ekl[s->tkey];
        size_t vl = s->field >= 0 ? (size_t)gen_val_text(p->pl, e, s->field, v, sizeof v) : 0;
        switch (s->kind) {
        case RS_HINCRBY:
            resp_head(out, '*', 4);
            resp_cstr(out, "HINCRBY");
            resp_bulk(out, k, kl);
            resp_cstr(out, s->feat);
            resp_bulk(out, "1", 1);
            n += 1;
            break;
        case RS_HINCRBYFLOAT:
            resp_head(out, '*', 4);
            resp_cstr(out, "HINCRBYFLOAT");
            resp_bulk(out, k, kl);
            resp_cstr(out, s->feat);
            resp_bulk(out, v, vl);
            n += 1;
            break;
        case RS_MEAN: {
            int l = snprintf(tmp, sizeof tmp, "%s:sum", s->feat);
            resp_head(out, '*', 4);
            resp_cstr(out, "HINCRBYFLOAT");
            resp_bulk(out, k, kl);
            resp_bulk(out, tmp, (size_t)l);
            resp_bulk(out, v, vl);
            l = snprintf(tmp, sizeof tmp, "%s:n", s->feat);
            resp_head(out, '*', 4);
            resp_cstr(out, "HINCRBY");
            resp_bulk(out, k, kl);
            resp_bulk(out, tmp, (size_t)l);
            resp_bulk(out, "1", 1);
            n += 2;
            break;
        }
        case RS_WIN_INCR: case RS_WIN_INCRBYFLOAT: case RS_WIN_MEAN: {
            size_t bl = bucket_key(k, kl, s, now_ms, bk, sizeof bk);
            if (s->kind == RS_WIN_INCR) {
                resp_head(out, '*', 2);
                resp_cstr(out, "INCR");
                resp_bulk(out, bk, bl);
                n += 1;
            } else if (s->kind == RS_WIN_INCRBYFLOAT) {
                resp_head(out, '*', 3);
                resp_cstr(out, "INCRBYFLOAT");
                resp_bulk(out, bk, bl);
                resp_bulk(out, v, vl);
                n += 1;
            } else {
                resp_head(out, '*', 4);
                resp_cstr(out, "HINCRBYFLOAT");
                resp_bulk(out, bk, bl);
                resp_bulk(out, "sum", 3);
                resp_bulk(out, v, vl);
                resp_head(out, '*', 4);
                resp_cstr(out, "HINCRBY");
                resp_bulk(out, bk, bl);
                resp_bulk(out, "n", 1);
                resp_bulk(out, "1", 1);
                n += 2;
            }
            int l = snprintf(ttl, sizeof ttl, "%lld", (long long)s->ttl_s);
            resp_head(out, '*', 3);
            resp_cstr(out, "EXPIRE");
            resp_bulk(out, bk, bl);
            resp_bulk(out, ttl, (size_t)l);
            n += 1;
            break;
        }
        default:
            break;  /* min/max exist only in lua mode */
        }
    }
    return n;
}
