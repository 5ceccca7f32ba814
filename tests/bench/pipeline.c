/*
 * pipeline.c - loads a benchmark pipeline file with jansson (see pipeline.h).
 *
 * Every string the loader returns is its own copy, so the jansson document is freed
 * before pipeline_load returns. One cleanup path: on any error everything taken so far
 * is released by pipeline_free on the partially filled struct.
 */
#include "pipeline.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static char *quoted(const char *s) {
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!q) return xstrdup("\"\"");
    char *r = xstrdup(q);
    free(q);
    return r;
}

int64_t pipeline_duration_ms(const char *s) {
    if (!s) return -1;
    if (strcmp(s, "forever") == 0) return 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0) return -1;
    if (strcmp(end, "ms") == 0) return v;
    if (strcmp(end, "s") == 0) return v * 1000;
    if (strcmp(end, "m") == 0) return v * 60000;
    if (strcmp(end, "h") == 0) return v * 3600000;
    if (strcmp(end, "d") == 0) return v * 86400000;
    return -1;
}

static int load_table(const json_t *node, const json_t *gb, pl_table *t, char *err, size_t errlen) {
    t->name = xstrdup(json_string_value(json_object_get(node, "name")));
    const json_t *keys = json_object_get(gb, "keys");
    t->nkeys = json_array_size(keys);
    t->keys = xcalloc(t->nkeys, sizeof *t->keys);
    for (size_t i = 0; i < t->nkeys; i++) {
        const char *k = json_string_value(json_array_get(keys, i));
        if (!k) {
            snprintf(err, errlen, "table %s: group_by keys must be strings", t->name);
            return -1;
        }
        t->keys[i] = xstrdup(k);
    }
    const json_t *agg = json_object_get(gb, "agg");
    t->nfeats = json_object_size(agg);
    t->feats = xcalloc(t->nfeats, sizeof *t->feats);
    size_t i = 0;
    const char *fname;
    json_t *fdef;
    json_object_foreach((json_t *)agg, fname, fdef) {
        pl_feature *f = &t->feats[i++];
        f->name = xstrdup(fname);
        const char *op = json_string_value(json_object_get(fdef, "op"));
        f->op = xstrdup(op ? op : "");
        const json_t *params = json_object_get(fdef, "params");
        const char *field = json_string_value(json_object_get(params, "field"));
        f->field = field ? xstrdup(field) : NULL;
        const char *win = json_string_value(json_object_get(params, "window"));
        f->window_ms = win ? pipeline_duration_ms(win) : 0;
        if (f->window_ms < 0) {
            snprintf(err, errlen, "table %s feature %s: bad window %s", t->name, fname, win);
            return -1;
        }
    }
    return 0;
}

int pipeline_load(const char *path, pipeline *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(err, errlen, "%s: %s (line %d)", path, je.text, je.line);
        return -1;
    }
    const json_t *reg = json_object_get(root, "register");
    const char *ev = json_string_value(json_object_get(root, "event_name"));
    const char *kf = json_string_value(json_object_get(root, "key_field"));
    const json_t *extra = json_object_get(root, "extra_fields");
    const json_t *nodes = json_object_get(reg, "nodes");
    if (!json_is_object(reg) || !json_is_array(nodes) || !ev || !kf) {
        snprintf(err, errlen, "%s: needs register.nodes, event_name and key_field", path);
        goto err;
    }
    const char *name = json_string_value(json_object_get(root, "name"));
    out->name = xstrdup(name ? name : "pipeline");
    char *rj = json_dumps(reg, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!rj) {
        snprintf(err, errlen, "%s: cannot encode register", path);
        goto err;
    }
    out->register_json = xstrdup(rj);
    free(rj);
    out->event_name = xstrdup(ev);
    out->event_json = quoted(ev);
    out->key_field = xstrdup(kf);
    out->key_json = quoted(kf);

    out->extra = xcalloc(json_object_size(extra) + 1, sizeof *out->extra);
    const char *fname;
    json_t *ftype;
    json_object_foreach((json_t *)extra, fname, ftype) {
        if (strcmp(fname, kf) == 0 || strcmp(fname, "event_time") == 0) continue;
        const char *t = json_string_value(ftype);
        extra_field *f = &out->extra[out->nextra];
        if (t && strcmp(t, "f64") == 0) f->type = FT_F64;
        else if (t && strcmp(t, "i64") == 0) f->type = FT_I64;
        else if (t && strcmp(t, "str") == 0) f->type = FT_STR;
        else {
            snprintf(err, errlen, "%s: extra field %s has unsupported type %s", path, fname, t ? t : "?");
            goto err;
        }
        f->name = xstrdup(fname);
        f->json_name = quoted(fname);
        out->nextra++;
    }

    out->tables = xcalloc(json_array_size(nodes) + 1, sizeof *out->tables);
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        const json_t *n = json_array_get(nodes, i);
        const char *kind = json_string_value(json_object_get(n, "kind"));
        const char *ok = json_string_value(json_object_get(n, "output_kind"));
        const char *up = json_string_value(json_array_get(json_object_get(n, "upstreams"), 0));
        if (!kind || strcmp(kind, "derivation") != 0 || !ok || strcmp(ok, "table") != 0 || !up ||
            strcmp(up, ev) != 0 || !json_is_string(json_object_get(n, "name")))
            continue;
        const json_t *ops = json_object_get(n, "ops");
        for (size_t j = 0; j < json_array_size(ops); j++) {
            const json_t *op = json_array_get(ops, j);
            const char *on = json_string_value(json_object_get(op, "op"));
            if (on && strcmp(on, "group_by") == 0) {
                int rc = load_table(n, op, &out->tables[out->ntables], err, errlen);
                out->ntables++;
                if (rc != 0) goto err;
                break;
            }
        }
    }
    json_decref(root);
    return 0;
err:
    json_decref(root);
    pipeline_free(out);
    return -1;
}

void pipeline_free(pipeline *pl) {
    free(pl->name);
    free(pl->register_json);
    free(pl->event_name);
    free(pl->event_json);
    free(pl->key_field);
    free(pl->key_json);
    for (size_t i = 0; pl->extra && i < pl->nextra; i++) {
        free(pl->extra[i].name);
        free(pl->extra[i].json_name);
    }
    free(pl->extra);
    for (size_t i = 0; pl->tables && i < pl->ntables; i++) {
        pl_table *t = &pl->tables[i];
        free(t->name);
        for (size_t k = 0; k < t->nkeys; k++) free(t->keys[k]);
        free(t->keys);
        for (size_t k = 0; k < t->nfeats; k++) {
            free(t->feats[k].name);
            free(t->feats[k].op);
            free(t->feats[k].field);
        }
        free(t->feats);
    }
    free(pl->tables);
    memset(pl, 0, sizeof *pl);
}

const pl_table *pipeline_key_table(const pipeline *pl) {
    for (size_t i = 0; i < pl->ntables; i++)
        if (pl->tables[i].nkeys == 1 && strcmp(pl->tables[i].keys[0], pl->key_field) == 0) return &pl->tables[i];
    return NULL;
}

int pipeline_extra_index(const pipeline *pl, const char *name) {
    for (size_t i = 0; i < pl->nextra; i++)
        if (strcmp(pl->extra[i].name, name) == 0) return (int)i;
    return -1;
}
