/*
 * read.c - get, batch_get, the legacy GET and the legacy multi-gets.
 *
 * Reads run on the caller's thread on a pinned registry version (never waiting for a
 * registry change or a barrier, engine_int.h), and each entity is read under the state
 * lock of the shard that owns it (one at a time),
 * so a read never waits behind a shard's queue and a get issued after a push's ack sees
 * it (the ack is sent after the apply). Rows are written as JSON with the feature names
 * in ascending order. In cluster mode the legacy reads ask the log backend's batch_get for
 * their cells, as batch_get does for its entries (owned partitions caught up, the others
 * answered by their owners).
 */
#include "engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t query_time(engine *e) {
    int64_t now = engine_wall_ms();
    int64_t w = atomic_load_explicit(&e->watermark_ms, memory_order_relaxed);
    return now > w ? now : w;
}

/* Lock the shard owning (t, k) and find the entity (widened). The caller reads it and
 * then calls shard_unlock(e->pool, *shard). */
static entity *lookup_locked(engine *e, agg_table *t, const char *k, size_t kl, unsigned *shard) {
    uint64_t h = store_hash(k, kl);
    *shard = engine_shard_for(e, t, h);
    shard_lock(e->pool, *shard);
    entity_store *s = table_store(t, *shard);
    entity *en = store_find(s, k, kl, h);
    return en ? entity_ensure(t, s, en) : NULL;
}

static bool feature_selected(const agg_table *t, size_t slot, const json_t *features) {
    if (!features || json_is_null(features)) return true;
    const char *name = t->features[slot].name;
    for (size_t i = 0; i < json_array_size(features); i++) {
        const json_t *f = json_array_get(features, i);
        if (json_is_string(f) && strcmp(json_string_value(f), name) == 0) return true;
    }
    return false;
}

static void write_row(agg_table *t, entity *en, const json_t *features, int64_t q, jsonw *w) {
    jsonw_obj_begin(w);
    if (en) {
        const char *row = entity_row_const(en);
        for (size_t i = 0; i < t->nfeatures; i++) {
            size_t slot = t->by_name[i];
            if (!feature_selected(t, slot, features)) continue;
            jsonw_key(w, t->features[slot].name);
            feature_read(&t->features[slot], row + t->offsets[slot], q, w);
        }
    }
    jsonw_obj_end(w);
}

/* Names in `features` that the table does not have, as `["a", "b"]`; false if none. */
static bool missing_features(const agg_table *t, const json_t *features, bv_buf *missing) {
    if (!features || json_is_null(features)) return false;
    bool any = false;
    bv_buf_putc(missing, '[');
    for (size_t i = 0; i < json_array_size(features); i++) {
        const char *f = json_string_value(json_array_get(features, i));
        bool found = false;
        for (size_t s = 0; f && s < t->nfeatures; s++)
            if (strcmp(t->features[s].name, f) == 0) found = true;
        if (found) continue;
        if (any) bv_buf_puts(missing, ", ");
        bv_buf_json_str(missing, f ? f : "", f ? strlen(f) : 0);
        any = true;
    }
    bv_buf_putc(missing, ']');
    return any;
}

static bool valid_features_field(const json_t *f) {
    if (!f || json_is_null(f)) return true;
    if (!json_is_array(f)) return false;
    for (size_t i = 0; i < json_array_size(f); i++)
        if (!json_is_string(json_array_get(f, i))) return false;
    return true;
}

static const char *get_shape_error(const json_t *req) {
    if (!json_is_object(req)) return "invalid type: expected a JSON object {table, key, features?}";
    json_t *t = json_object_get(req, "table"), *k = json_object_get(req, "key");
    if (!t) return "missing field `table`";
    if (!json_is_string(t)) return "invalid type for `table`: expected a string";
    if (!k) return "missing field `key`";
    if (!json_is_string(k)) return "invalid type for `key`: expected a string";
    if (!valid_features_field(json_object_get(req, "features")))
        return "invalid type for `features`: expected an array of strings or null";
    return NULL;
}

static bool legacy_get_shape(const json_t *req) {
    if (!json_is_object(req)) return false;
    json_t *keys = json_object_get(req, "keys"), *features = json_object_get(req, "features");
    json_t *feature = json_object_get(req, "feature"), *key = json_object_get(req, "key");
    return (json_is_array(keys) && json_is_array(features)) || (json_is_string(feature) && json_is_string(key));
}

int engine_get(engine *e, engine_transport t, const json_t *req, const char *parse_error, bv_buf *out) {
    regver *pin;
    registry *reg;
    const char *shape = req ? get_shape_error(req) : parse_error;
    if (shape) {
        if (req && legacy_get_shape(req)) {
            jsonw_member m = { .key = "message", .str = t == TRANSPORT_HTTP
                ? "POST /get expects {table, key, features?}; received legacy {keys, features} shape — see docs/http-api.md#post-get"
                : "OP_GET expects {table, key, features?}; received legacy {keys, features} or {feature, key} shape — see docs/wire-spec.md#op_get-0x0020" };
            jsonw_error(out, "unsupported_request_shape", &m, 1, false, 0);
            return 400;
        }
        engine_error_body(out, "internal_error", "reason", shape ? shape : "empty body", false, 0);
        return 500;
    }
    if (e->opt.log.get) {                         /* cluster: the owner answers */
        int st = e->opt.log.get(e->opt.log.ctx, t, req, out);
        if (st >= 0) return st;
    }
    const char *table = json_string_value(json_object_get(req, "table"));
    json_t *key = json_object_get(req, "key");
    json_t *features = json_object_get(req, "features");
    reg = engine_pin(e, &pin);
    agg_table *tab = registry_table(reg, table);
    if (!tab && e->opt.log.registry_catch_up) {   /* cluster: registered elsewhere a moment ago? */
        engine_unpin(e, pin);
        e->opt.log.registry_catch_up(e->opt.log.ctx);
        reg = engine_pin(e, &pin);
        tab = registry_table(reg, table);
    }
    if (!tab) {
        engine_unpin(e, pin);
        engine_error_body(out, "unknown_table", NULL, NULL, false, 0);
        return 404;
    }
    bv_buf missing;
    bv_buf_init(&missing);
    if (missing_features(tab, features, &missing)) {
        char reason[1024];
        snprintf(reason, sizeof reason, "feature_not_found: missing=%s table=%s", missing.data, table);
        bv_buf_free(&missing);
        engine_unpin(e, pin);
        engine_error_body(out, "internal_error", "reason", reason, false, 0);
        return 500;
    }
    bv_buf_free(&missing);
    char kbuf[STORE_MAX_KEY + 1];
    int kl = engine_parse_key(tab, json_string_value(key), json_string_length(key), kbuf, sizeof kbuf);
    if (kl < 0) {
        engine_unpin(e, pin);
        engine_error_body(out, "key_parse_failure", NULL, NULL, false, 0);
        return 404;
    }
    unsigned sh;
    entity *en = lookup_locked(e, tab, kbuf, (size_t)kl, &sh);
    jsonw w;
    jsonw_init(&w, out);
    write_row(tab, en, features, query_time(e), &w);
    shard_unlock(e->pool, sh);
    engine_unpin(e, pin);
    return 200;
}

static const char *batch_entry_error(const json_t *entry) {
    if (!json_is_object(entry)) return "invalid type: each request must be an object {table, key, features?}";
    json_t *t = json_object_get(entry, "table");
    json_t *k = json_object_get(entry, "key"), *id = json_object_get(entry, "entity_id");
    if (!t) return "missing field `table`";
    if (!json_is_string(t)) return "invalid type for `table`: expected a string";
    if (k && id) return "duplicate field: give `key` or its deprecated alias `entity_id`, not both";
    if (!k && !id) return "missing field `key`";
    if (!json_is_string(k ? k : id)) return "invalid type for `key`: expected a string";
    if (!valid_features_field(json_object_get(entry, "features")))
        return "invalid type for `features`: expected an array of strings or null";
    return NULL;
}

#define BATCH_GET_MAX 10000

static void batch_fwd_free(char **fwd, size_t n) {
    if (!fwd) return;
    for (size_t i = 0; i < n; i++) free(fwd[i]);
    free(fwd);
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int engine_batch_get(engine *e, const json_t *req, const char *parse_error, bv_buf *out) {
    regver *pin;
    registry *reg;
    const char *err = parse_error;
    json_t *reqs = NULL;
    if (!err) {
        if (!json_is_object(req)) err = "invalid type: expected a JSON object {requests: [...]}";
        else if (!(reqs = json_object_get(req, "requests"))) err = "missing field `requests`";
        else if (!json_is_array(reqs)) err = "invalid type for `requests`: expected an array";
        else if (json_array_size(reqs) > BATCH_GET_MAX) err = "batch_too_large: more than 10000 requests";
    }
    for (size_t i = 0; !err && i < json_array_size(reqs); i++) err = batch_entry_error(json_array_get(reqs, i));
    if (err) {
        engine_error_body(out, "internal_error", "reason", err ? err : "empty body", false, 0);
        return 500;
    }
    char **fwd = NULL;                            /* cluster: entries answered by their owners */
    if (e->opt.log.batch_get && json_array_size(reqs)) {
        fwd = calloc(json_array_size(reqs), sizeof *fwd);
        if (!fwd) abort();
        e->opt.log.batch_get(e->opt.log.ctx, reqs, fwd);
    }
    reg = engine_pin(e, &pin);
    /* pre-pass: unknown features in a filter fail the whole call */
    for (size_t i = 0; i < json_array_size(reqs); i++) {
        json_t *entry = json_array_get(reqs, i);
        const char *table = json_string_value(json_object_get(entry, "table"));
        agg_table *tab = registry_table(reg, table);
        if (!tab) continue;
        bv_buf missing;
        bv_buf_init(&missing);
        if (missing_features(tab, json_object_get(entry, "features"), &missing)) {
            char reason[1024];
            snprintf(reason, sizeof reason, "feature_not_found: missing=%s table=%s", missing.data, table);
            bv_buf_free(&missing);
            engine_unpin(e, pin);
            engine_error_body(out, "internal_error", "reason", reason, false, 0);
            batch_fwd_free(fwd, json_array_size(reqs));
            return 500;
        }
        bv_buf_free(&missing);
    }
    int64_t q = query_time(e);
    size_t n = json_array_size(reqs);
    bv_buf_puts(out, "{\"results\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) bv_buf_putc(out, ',');
        json_t *entry = json_array_get(reqs, i);
        const char *table = json_string_value(json_object_get(entry, "table"));
        json_t *key = json_object_get(entry, "key");
        if (!key) key = json_object_get(entry, "entity_id");
        agg_table *tab = registry_table(reg, table);
        char msg[512];
        const char *code = NULL;
        char kbuf[STORE_MAX_KEY + 1];
        int kl = -1;
        if (!tab) {
            snprintf(msg, sizeof msg, "table '%.200s' is not a registered aggregation", table);
            code = "unknown_table";
        } else if ((kl = engine_parse_key(tab, json_string_value(key), json_string_length(key), kbuf, sizeof kbuf)) < 0) {
            snprintf(msg, sizeof msg, "key '%.200s' does not match table '%.200s' group_keys arity (%zu)",
                     json_string_value(key), table, tab->nkeys);
            code = "key_parse_failure";
        }
        if (code) {
            jsonw_member m = { .key = "message", .str = msg };
            jsonw_error(out, code, &m, 1, false, 0);
            continue;
        }
        if (fwd && fwd[i]) {
            bv_buf_puts(out, fwd[i]);
            continue;
        }
        jsonw w;
        jsonw_init(&w, out);
        unsigned sh;
        entity *en = lookup_locked(e, tab, kbuf, (size_t)kl, &sh);
        write_row(tab, en, json_object_get(entry, "features"), q, &w);
        shard_unlock(e->pool, sh);
    }
    bv_buf_puts(out, "]}");
    engine_unpin(e, pin);
    batch_fwd_free(fwd, n);
    return 200;
}

/* ---- cluster mode: the legacy reads ask the backend like batch_get's entries -------------- */

/* Add {table, key, features?: [feature]} to reqs (the backend's batch_get entry shape). */
static void legacy_req(json_t *reqs, const char *table, const char *key, const char *feature) {
    json_t *r = feature ? json_pack("{s:s,s:s,s:[s]}", "table", table, "key", key, "features", feature)
                        : json_pack("{s:s,s:s}", "table", table, "key", key);
    if (!r || json_array_append_new(reqs, r)) abort();
}

/* The backend's answers for reqs (fwd[i] NULL: read it here, the backend caught up). */
static char **legacy_forward(engine *e, json_t *reqs) {
    size_t n = json_array_size(reqs);
    char **fwd = calloc(n ? n : 1, sizeof *fwd);
    if (!fwd) abort();
    if (n) e->opt.log.batch_get(e->opt.log.ctx, reqs, fwd);
    return fwd;
}

/* An answer that is an error object {"error":{"code":..}}: its code, else NULL. */
static const char *fwd_error_code(const char *text, json_t **parsed) {
    *parsed = NULL;
    if (strncmp(text, "{\"error\":{", 10) != 0) return NULL;
    json_t *j = json_loads(text, 0, NULL);
    json_t *code = json_object_get(json_object_get(j, "error"), "code");
    if (!json_is_string(code)) {
        json_decref(j);
        return NULL;
    }
    *parsed = j;
    return json_string_value(code);
}

/* The value of a one-member row text {"name":value}: its exact bytes. False for {}. */
static bool row_single_value(const char *s, const char **v, size_t *vl) {
    const char *p = strchr(s, '"');
    if (!p) return false;
    for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1]) p++;
    if (*p != '"' || !(p = strchr(p, ':'))) return false;
    p++;
    while (*p == ' ') p++;
    const char *end = strrchr(p, '}');
    if (!end) return false;
    while (end > p && end[-1] == ' ') end--;
    *v = p;
    *vl = (size_t)(end - p);
    return *vl > 0;
}

/* GET /get/<name>/<key> in cluster mode: -1 = read it here (single node code), else the
 * status of the owner's answer written to out. */
static int legacy_get_cluster(engine *e, const char *name, const char *key, bv_buf *out) {
    regver *pin;
    registry *reg;
    json_t *reqs = json_array();
    if (!reqs) abort();
    bool feature = false;
    reg = engine_pin(e, &pin);
    size_t slot = 0;
    agg_table *tab = registry_feature_owner(reg, name, &slot);
    if (tab) feature = true;
    else tab = registry_table(reg, name);
    char kbuf[STORE_MAX_KEY + 1];
    if (tab && engine_parse_key(tab, key, strlen(key), kbuf, sizeof kbuf) >= 0)
        legacy_req(reqs, tab->name, key, feature ? name : NULL);
    engine_unpin(e, pin);
    if (json_array_size(reqs) == 0) {             /* answered here: feature_not_found, ... */
        json_decref(reqs);
        return -1;
    }
    char **fwd = legacy_forward(e, reqs);
    json_decref(reqs);
    char *text = fwd[0];
    free(fwd);
    if (!text) return -1;
    int st;
    json_t *err;
    const char *code = fwd_error_code(text, &err);
    const char *v;
    size_t vl;
    if (code && strcmp(code, "unknown_table") == 0) {
        engine_error_body(out, "feature_not_found", NULL, NULL, false, 0);
        st = 404;
    } else if (code && strcmp(code, "key_parse_failure") == 0) {
        engine_error_body(out, "key_parse_failure", NULL, NULL, false, 0);
        st = 404;
    } else if (code) {
        bv_buf_puts(out, text);                    /* not_caught_up, owner_unavailable, ... */
        st = 503;
    } else if (strcmp(text, "{}") == 0) {
        engine_error_body(out, "key_not_found", NULL, NULL, false, 0);
        st = 404;
    } else if (!feature) {
        bv_buf_puts(out, text);
        st = 200;
    } else if (row_single_value(text, &v, &vl)) {
        bv_buf_puts(out, "{\"value\":");
        bv_buf_put(out, v, vl);
        bv_buf_putc(out, '}');
        st = 200;
    } else {
        engine_error_body(out, "key_not_found", NULL, NULL, false, 0);
        st = 404;
    }
    json_decref(err);
    free(text);
    return st;
}

int engine_get_legacy(engine *e, const char *rest, bv_buf *out) {
    regver *pin;
    registry *reg;
    const char *slash = strchr(rest, '/');
    if (!slash || slash == rest) {
        engine_error_body(out, "feature_not_found", NULL, NULL, false, 0);
        return 404;
    }
    char name[REGISTRY_NAME_MAX * 2 + 1];
    size_t nl = (size_t)(slash - rest);
    if (nl >= sizeof name) {
        engine_error_body(out, "feature_not_found", NULL, NULL, false, 0);
        return 404;
    }
    memcpy(name, rest, nl);
    name[nl] = 0;
    const char *key = slash + 1;
    if (e->opt.log.batch_get) {                   /* cluster: the owner answers */
        int st = legacy_get_cluster(e, name, key, out);
        if (st >= 0) return st;
    }
    reg = engine_pin(e, &pin);
    int64_t q = query_time(e);
    size_t slot = 0;
    agg_table *tab = registry_feature_owner(reg, name, &slot);
    char kbuf[STORE_MAX_KEY + 1];
    jsonw w;
    jsonw_init(&w, out);
    int status;
    if (tab) {
        int kl = engine_parse_key(tab, key, strlen(key), kbuf, sizeof kbuf);
        unsigned sh = 0;
        entity *en = kl < 0 ? NULL : lookup_locked(e, tab, kbuf, (size_t)kl, &sh);
        if (kl < 0) {
            engine_error_body(out, "key_parse_failure", NULL, NULL, false, 0);
            status = 404;
        } else if (!en) {
            engine_error_body(out, "key_not_found", NULL, NULL, false, 0);
            status = 404;
        } else {
            jsonw_obj_begin(&w);
            jsonw_key(&w, "value");
            feature_read(&tab->features[slot], (const char *)entity_row_const(en) + tab->offsets[slot], q, &w);
            jsonw_obj_end(&w);
            status = 200;
        }
        if (kl >= 0) shard_unlock(e->pool, sh);
    } else if ((tab = registry_table(reg, name)) != NULL) {
        int kl = engine_parse_key(tab, key, strlen(key), kbuf, sizeof kbuf);
        unsigned sh = 0;
        entity *en = kl < 0 ? NULL : lookup_locked(e, tab, kbuf, (size_t)kl, &sh);
        if (!en) {
            engine_error_body(out, "key_not_found", NULL, NULL, false, 0);
            status = 404;
        } else {
            write_row(tab, en, NULL, q, &w);
            status = 200;
        }
        if (kl >= 0) shard_unlock(e->pool, sh);
    } else {
        engine_error_body(out, "feature_not_found", NULL, NULL, false, 0);
        status = 404;
    }
    engine_unpin(e, pin);
    return status;
}

int engine_get_multi(engine *e, const json_t *req, bool single_feature, bv_buf *out) {
    regver *pin;
    registry *reg;
    json_t *keys = json_is_object(req) ? json_object_get(req, "keys") : NULL;
    json_t *features = NULL, *one = NULL;
    if (json_is_object(req)) {
        if (single_feature) {
            json_t *f = json_object_get(req, "feature");
            if (json_is_string(f)) features = one = json_pack("[O]", f);
        } else {
            features = json_object_get(req, "features");
        }
    }
    if (!json_is_array(keys) || !json_is_array(features)) {
        json_decref(one);
        engine_error_body(out, "internal_error", "reason",
                   single_feature ? "OP_MGET expects {feature, keys}" : "OP_GET_MULTI expects {keys, features}", false, 0);
        return 500;
    }
    for (size_t i = 0; i < json_array_size(keys); i++)
        if (!json_is_string(json_array_get(keys, i))) {
            json_decref(one);
            engine_error_body(out, "internal_error", "reason", "every key must be a string", false, 0);
            return 500;
        }
    size_t cells = json_array_size(keys) * json_array_size(features);
    if (cells > BATCH_GET_MAX) {
        char reason[96];
        snprintf(reason, sizeof reason, "batch_too_large: cells=%zu cap=%d", cells, BATCH_GET_MAX);
        json_decref(one);
        engine_error_body(out, "internal_error", "reason", reason, false, 0);
        return 500;
    }
    /* keys in ascending order, as every object on the wire */
    size_t nk = json_array_size(keys), nf = json_array_size(features);
    const char **sorted = nk ? malloc(nk * sizeof *sorted) : NULL;
    for (size_t i = 0; i < nk; i++) sorted[i] = json_string_value(json_array_get(keys, i));
    if (nk) qsort(sorted, nk, sizeof *sorted, cmp_cstr);
    char **fwd = NULL;                            /* cluster: cells answered by their owners */
    long *cell = NULL;                            /* per (key, feature): its fwd index, -1 none */
    size_t nfwd = 0;
    if (e->opt.log.batch_get && nk > 0 && nf > 0) {
        cell = malloc(nk * nf * sizeof *cell);
        json_t *reqs = json_array();
        if (!cell || !reqs) abort();
        reg = engine_pin(e, &pin);
        for (size_t i = 0; i < nk; i++)
            for (size_t f = 0; f < nf; f++) {
                const char *fname = json_string_value(json_array_get(features, f));
                size_t slot;
                agg_table *tab = fname ? registry_feature_owner(reg, fname, &slot) : NULL;
                char kbuf[STORE_MAX_KEY + 1];
                cell[i * nf + f] = -1;
                if (!tab || engine_parse_key(tab, sorted[i], strlen(sorted[i]), kbuf, sizeof kbuf) < 0) continue;
                cell[i * nf + f] = (long)json_array_size(reqs);
                legacy_req(reqs, tab->name, sorted[i], fname);
            }
        engine_unpin(e, pin);
        nfwd = json_array_size(reqs);
        fwd = legacy_forward(e, reqs);
        json_decref(reqs);
        for (size_t i = 0; i < nfwd; i++) {       /* an owner that did not answer fails the call */
            json_t *err = NULL;
            const char *code = fwd[i] ? fwd_error_code(fwd[i], &err) : NULL;
            bool fatal = code && strcmp(code, "unknown_table") != 0 && strcmp(code, "key_parse_failure") != 0;
            if (fatal) bv_buf_puts(out, fwd[i]);
            json_decref(err);
            if (code && !fatal) {                 /* the owner's registry differs: skipped */
                free(fwd[i]);
                fwd[i] = strdup("{}");
                if (!fwd[i]) abort();
            }
            if (!fatal) continue;
            batch_fwd_free(fwd, nfwd);
            free(cell);
            free(sorted);
            json_decref(one);
            return 503;
        }
    }
    reg = engine_pin(e, &pin);
    int64_t q = query_time(e);
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    for (size_t i = 0; i < nk; i++) {
        if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0) continue;
        bool opened = false;
        for (size_t f = 0; f < nf; f++) {
            const char *fname = json_string_value(json_array_get(features, f));
            const char *fv;
            size_t fvl;
            long ci = cell ? cell[i * nf + f] : -1;
            if (ci >= 0 && fwd[ci]) {             /* the owner's row {} or {fname: value} */
                if (!row_single_value(fwd[ci], &fv, &fvl)) continue;
                if (!opened) {
                    jsonw_key(&w, sorted[i]);
                    jsonw_obj_begin(&w);
                    opened = true;
                }
                jsonw_key(&w, fname);
                jsonw_raw(&w, fv, fvl);
                continue;
            }
            size_t slot;
            agg_table *tab = fname ? registry_feature_owner(reg, fname, &slot) : NULL;
            if (!tab) continue;
            char kbuf[STORE_MAX_KEY + 1];
            int kl = engine_parse_key(tab, sorted[i], strlen(sorted[i]), kbuf, sizeof kbuf);
            if (kl < 0) continue;
            unsigned sh;
            entity *en = lookup_locked(e, tab, kbuf, (size_t)kl, &sh);
            if (!en) {
                shard_unlock(e->pool, sh);
                continue;
            }
            if (!opened) {
                jsonw_key(&w, sorted[i]);
                jsonw_obj_begin(&w);
                opened = true;
            }
            jsonw_key(&w, fname);
            feature_read(&tab->features[slot], (const char *)entity_row_const(en) + tab->offsets[slot], q, &w);
            shard_unlock(e->pool, sh);
        }
        if (opened) jsonw_obj_end(&w);
    }
    jsonw_obj_end(&w);
    free(sorted);
    engine_unpin(e, pin);
    batch_fwd_free(fwd, nfwd);
    free(cell);
    json_decref(one);
    return 200;
}

