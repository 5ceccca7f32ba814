/*
 * manifest.c — translation of the friendly manifest form, merging and conflict checks.
 *
 * Translation is strict where the server is lenient: the server ignores unknown keys in a
 * node and unknown aggregation params, so a typo (`windw: 1h`) would silently register a
 * lifetime aggregation. Here every key must be known, every op name must be one of the
 * server's 55 and every parameter one it reads (both lists, the name rule and the
 * duration syntax are the server's own: beava/src/base/names.h), every field type one of
 * its 7, and every duration must parse. Raw `nodes:`
 * entries are passed through unchanged (they are the escape hatch), checked only for a
 * string `kind` and a valid `name`.
 */
#include "manifest.h"
#include "names.h"
#include "util.h"
#include "yamldoc.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MANIFEST_MAX_FILES 1000

static const char *const TYPES[] = { "str", "i64", "f64", "bool", "bytes", "datetime", "json", NULL };

static bool in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (!strcmp(*list, s)) return true;
    return false;
}

/* A positive duration ("30s", "1h"; not "forever"), in ms. */
static bool positive_duration(const char *s, int64_t *ms) { return bv_parse_duration(s, ms) == 0 && *ms > 0; }

static char *canon(json_t *v) {
    char *s = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) abort();
    return s;
}

struct manifest_set *manifest_set_new(void) {
    return ctl_calloc(1, sizeof(struct manifest_set));
}

static void manifest_clear(struct manifest *m) {
    free(m->id);
    free(m->path);
    json_decref(m->nodes);
    json_decref(m->remove);
}

void manifest_set_free(struct manifest_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) manifest_clear(&s->m[i]);
    free(s->m);
    json_decref(s->all_nodes);
    free(s);
}

/* ---- friendly form -> nodes ------------------------------------------------------- */

static int duration_param(json_t *v, const char *where, const char *key, long long *ms, char *err) {
    int64_t d;
    if (!json_is_string(v) || !positive_duration(json_string_value(v), &d))
        return ctl_errf(err, "%s.%s: expected a duration like 30s, 10m, 24h or 7d", where, key);
    *ms = d;
    return 0;
}

static int event_node(const char *where, const char *name, json_t *spec, json_t **out, char *err) {
    if (!json_is_object(spec)) return ctl_errf(err, "%s: expected a mapping with `fields`", where);
    json_t *node = json_object();
    json_t *schema = json_object();
    json_t *fields = json_object();
    json_t *optional = json_array();
    json_object_set_new(node, "kind", json_string("event"));
    json_object_set_new(node, "name", json_string(name));
    const char *key;
    json_t *v;
    json_object_foreach(spec, key, v) {
        if (!strcmp(key, "fields")) {
            if (!json_is_object(v) || json_object_size(v) == 0) {
                ctl_errf(err, "%s.fields: expected a non-empty mapping of field: type", where);
                goto err;
            }
            const char *f;
            json_t *t;
            json_object_foreach(v, f, t) {
                if (!json_is_string(t) || !in_list(TYPES, json_string_value(t))) {
                    ctl_errf(err,
                             "%s.fields.%s: type must be one of str, i64, f64, bool, bytes, "
                             "datetime, json",
                             where, f);
                    goto err;
                }
                json_object_set(fields, f, t);
            }
        } else if (!strcmp(key, "optional")) {
            size_t i;
            json_t *f;
            if (!json_is_array(v)) {
                ctl_errf(err, "%s.optional: expected a list of field names", where);
                goto err;
            }
            json_array_foreach(v, i, f) {
                if (!json_is_string(f)) {
                    ctl_errf(err, "%s.optional[%zu]: expected a field name", where, i);
                    goto err;
                }
                json_array_append(optional, f);
            }
        } else if (!strcmp(key, "dedupe")) {
            json_t *dk = json_object_get(v, "key");
            if (!json_is_object(v) || !json_is_string(dk)) {
                ctl_errf(err, "%s.dedupe: expected {key: FIELD, window: DURATION}", where);
                goto err;
            }
            const char *dkey;
            json_t *dv;
            json_object_foreach(v, dkey, dv) {
                if (strcmp(dkey, "key") && strcmp(dkey, "window")) {
                    ctl_errf(err, "%s.dedupe.%s: unknown key (expected key, window)", where, dkey);
                    goto err;
                }
            }
            json_object_set(node, "dedupe_key", dk);
            if (json_object_get(v, "window")) {
                long long ms = 0;
                if (duration_param(json_object_get(v, "window"), where, "dedupe.window", &ms, err) < 0) goto err;
                json_object_set_new(node, "dedupe_window_ms", json_integer(ms));
            }
        } else if (!strcmp(key, "keep_events_for") || !strcmp(key, "cold_after")) {
            long long ms = 0;
            if (duration_param(v, where, key, &ms, err) < 0) goto err;
            json_object_set_new(node, !strcmp(key, "cold_after") ? "cold_after_ms" : "keep_events_for_ms",
                                json_integer(ms));
        } else {
            ctl_errf(err,
                     "%s.%s: unknown key (expected fields, optional, dedupe, "
                     "keep_events_for, cold_after)",
                     where, key);
            goto err;
        }
    }
    if (json_object_size(fields) == 0) {
        ctl_errf(err, "%s: `fields` is required", where);
        goto err;
    }
    size_t i;
    json_t *f;
    json_array_foreach(optional, i, f) {
        if (!json_object_get(fields, json_string_value(f))) {
            ctl_errf(err, "%s.optional: '%s' is not one of the fields", where, json_string_value(f));
            goto err;
        }
    }
    json_t *dk = json_object_get(node, "dedupe_key");
    if (dk && !json_object_get(fields, json_string_value(dk))) {
        ctl_errf(err, "%s.dedupe.key: '%s' is not one of the fields", where, json_string_value(dk));
        goto err;
    }
    json_object_set_new(schema, "fields", fields);
    json_object_set_new(schema, "optional_fields", optional);
    json_object_set_new(node, "schema", schema);
    *out = node;
    return 0;
err:
    json_decref(fields);
    json_decref(optional);
    json_decref(schema);
    json_decref(node);
    return -1;
}

static int table_node(const char *where, const char *name, json_t *spec, json_t **out, char *err) {
    if (!json_is_object(spec)) return ctl_errf(err, "%s: expected a mapping with `source` and `features`", where);
    json_t *node = json_object();
    json_t *ops = json_array();
    json_t *keys = json_array();
    json_t *agg = json_object();
    const char *source = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(spec, key, v) {
        if (!strcmp(key, "source")) {
            if (!json_is_string(v) || !bv_name_valid(json_string_value(v))) {
                ctl_errf(err, "%s.source: expected the name of an event", where);
                goto err;
            }
            source = json_string_value(v);
        } else if (!strcmp(key, "key")) {
            if (json_is_null(v) || (json_is_string(v) && !*json_string_value(v))) {
                /* global */
            } else if (json_is_string(v)) {
                json_array_append(keys, v);
            } else if (json_is_array(v)) {
                size_t i;
                json_t *k;
                json_array_foreach(v, i, k) {
                    if (!json_is_string(k) || !*json_string_value(k)) {
                        ctl_errf(err, "%s.key[%zu]: expected a field name", where, i);
                        goto err;
                    }
                    json_array_append(keys, k);
                }
            } else {
                ctl_errf(err, "%s.key: expected a field name or a list of field names", where);
                goto err;
            }
        } else if (!strcmp(key, "filter")) {
            if (!json_is_string(v) || !*json_string_value(v)) {
                ctl_errf(err, "%s.filter: expected an expression string", where);
                goto err;
            }
            json_array_append_new(ops, json_pack("{s:s,s:O}", "op", "filter", "expr", v));
        } else if (!strcmp(key, "ops")) {
            size_t i;
            json_t *op;
            if (!json_is_array(v)) {
                ctl_errf(err, "%s.ops: expected a list of op objects", where);
                goto err;
            }
            json_array_foreach(v, i, op) {
                if (!json_is_object(op) || !json_is_string(json_object_get(op, "op"))) {
                    ctl_errf(err, "%s.ops[%zu]: expected an object with an `op` string", where, i);
                    goto err;
                }
                if (!strcmp(json_string_value(json_object_get(op, "op")), "group_by")) {
                    ctl_errf(err, "%s.ops[%zu]: group_by comes from `key` and `features`", where, i);
                    goto err;
                }
                json_array_append(ops, op);
            }
        } else if (!strcmp(key, "features")) {
            if (!json_is_object(v) || json_object_size(v) == 0) {
                ctl_errf(err, "%s.features: expected a non-empty mapping of name: {op, ...}", where);
                goto err;
            }
            const char *fname;
            json_t *fs;
            json_object_foreach(v, fname, fs) {
                json_t *op = json_object_get(fs, "op");
                if (!json_is_object(fs) || !json_is_string(op)) {
                    ctl_errf(err, "%s.features.%s: expected a mapping with `op`", where, fname);
                    goto err;
                }
                if (!bv_op_name_known(json_string_value(op))) {
                    ctl_errf(err, "%s.features.%s.op: unknown operator '%s'", where, fname, json_string_value(op));
                    goto err;
                }
                json_t *params = json_object();
                const char *pk;
                json_t *pv;
                json_object_foreach(fs, pk, pv) {
                    if (!strcmp(pk, "op")) continue;
                    if (!bv_param_name_known(pk)) {
                        ctl_errf(err, "%s.features.%s.%s: unknown parameter", where, fname, pk);
                        json_decref(params);
                        goto err;
                    }
                    int64_t d;
                    if ((!strcmp(pk, "window") &&
                         !(json_is_string(pv) && bv_parse_duration(json_string_value(pv), &d) == 0)) ||
                        ((!strcmp(pk, "half_life") || !strcmp(pk, "sub_window")) &&
                         !(json_is_string(pv) && positive_duration(json_string_value(pv), &d)))) {
                        ctl_errf(err, "%s.features.%s.%s: expected a duration like 30s, 1h, 7d%s", where, fname, pk,
                                 !strcmp(pk, "window") ? " or forever" : "");
                        json_decref(params);
                        goto err;
                    }
                    json_object_set(params, pk, pv);
                }
                json_object_set_new(agg, fname, json_pack("{s:O,s:o}", "op", op, "params", params));
            }
        } else {
            ctl_errf(err, "%s.%s: unknown key (expected source, key, filter, ops, features)", where, key);
            goto err;
        }
    }
    if (!source) {
        ctl_errf(err, "%s: `source` is required", where);
        goto err;
    }
    if (json_object_size(agg) == 0) {
        ctl_errf(err, "%s: `features` is required", where);
        goto err;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) {
        if (json_object_get(agg, json_string_value(k))) {
            ctl_errf(err, "%s: feature '%s' has the name of a key field", where, json_string_value(k));
            goto err;
        }
    }
    json_array_append_new(ops, json_pack("{s:s,s:O,s:O}", "op", "group_by", "keys", keys, "agg", agg));
    json_object_set_new(node, "kind", json_string("derivation"));
    json_object_set_new(node, "name", json_string(name));
    json_object_set_new(node, "output_kind", json_string("table"));
    json_object_set_new(node, "upstreams", json_pack("[s]", source));
    json_object_set_new(node, "ops", ops);
    json_object_set_new(node, "table_primary_key", keys);
    json_decref(agg);
    *out = node;
    return 0;
err:
    json_decref(ops);
    json_decref(keys);
    json_decref(agg);
    json_decref(node);
    return -1;
}

static int manifest_from_doc(const char *id, json_t *doc, struct manifest *m, char *err) {
    memset(m, 0, sizeof *m);
    m->nodes = json_array();
    m->remove = json_array();
    if (json_is_null(doc)) return 0; /* an empty document is an empty manifest */
    if (!json_is_object(doc)) {
        ctl_errf(err, "%s: a manifest must be a mapping", id);
        goto err;
    }
    const char *key;
    json_t *v;
    char where[512];
    json_object_foreach(doc, key, v) {
        if (!strcmp(key, "order")) {
            if (!json_is_integer(v)) {
                ctl_errf(err, "%s: order: expected an integer", id);
                goto err;
            }
            m->order = json_integer_value(v);
        } else if (!strcmp(key, "allow_destructive")) {
            if (!json_is_boolean(v)) {
                ctl_errf(err, "%s: allow_destructive: expected true or false", id);
                goto err;
            }
            m->allow_destructive = json_is_true(v);
        } else if (!strcmp(key, "description")) {
            if (!json_is_string(v)) {
                ctl_errf(err, "%s: description: expected a string", id);
                goto err;
            }
        } else if (!strcmp(key, "events") || !strcmp(key, "tables")) {
            bool ev = !strcmp(key, "events");
            if (!json_is_object(v)) {
                ctl_errf(err, "%s: %s: expected a mapping of name: definition", id, key);
                goto err;
            }
            const char *name;
            json_t *spec;
            json_object_foreach(v, name, spec) {
                snprintf(where, sizeof where, "%s: %s.%s", id, key, name);
                if (!bv_name_valid(name)) {
                    ctl_errf(err,
                             "%s: invalid name (letters, digits, _; not starting with a "
                             "digit or _beava_; at most 128 bytes)",
                             where);
                    goto err;
                }
                json_t *node = NULL;
                if ((ev ? event_node(where, name, spec, &node, err) : table_node(where, name, spec, &node, err)) < 0)
                    goto err;
                json_array_append_new(m->nodes, node);
            }
        } else if (!strcmp(key, "nodes")) {
            size_t i;
            json_t *node;
            if (!json_is_array(v)) {
                ctl_errf(err, "%s: nodes: expected a list of register nodes", id);
                goto err;
            }
            json_array_foreach(v, i, node) {
                json_t *kind = json_object_get(node, "kind");
                json_t *name = json_object_get(node, "name");
                if (!json_is_object(node) || !json_is_string(kind) ||
                    (strcmp(json_string_value(kind), "event") && strcmp(json_string_value(kind), "derivation"))) {
                    ctl_errf(err, "%s: nodes[%zu]: expected an object with kind event or derivation", id, i);
                    goto err;
                }
                if (!json_is_string(name) || !bv_name_valid(json_string_value(name))) {
                    ctl_errf(err, "%s: nodes[%zu].name: missing or invalid name", id, i);
                    goto err;
                }
                json_array_append(m->nodes, node);
            }
        } else if (!strcmp(key, "remove")) {
            size_t i;
            json_t *n;
            if (!json_is_array(v)) {
                ctl_errf(err, "%s: remove: expected a list of names", id);
                goto err;
            }
            json_array_foreach(v, i, n) {
                if (!json_is_string(n) || !bv_name_valid(json_string_value(n))) {
                    ctl_errf(err, "%s: remove[%zu]: expected a descriptor name", id, i);
                    goto err;
                }
                json_array_append(m->remove, n);
            }
        } else {
            ctl_errf(err,
                     "%s: %s: unknown key (expected order, allow_destructive, description, "
                     "events, tables, nodes, remove)",
                     id, key);
            goto err;
        }
    }
    if (json_array_size(m->remove) && !m->allow_destructive) {
        ctl_errf(err,
                 "%s: remove: removing descriptors is destructive and needs "
                 "allow_destructive: true in the same manifest",
                 id);
        goto err;
    }
    return 0;
err:
    json_decref(m->nodes);
    json_decref(m->remove);
    m->nodes = m->remove = NULL;
    return -1;
}

static int cmp_doc_order(const void *a, const void *b) {
    const struct manifest *x = a, *y = b;
    if (x->order != y->order) return x->order < y->order ? -1 : 1;
    return x->doc < y->doc ? -1 : (x->doc > y->doc);
}

int manifest_set_add_text(struct manifest_set *s, const char *name, const char *text, size_t len, char *err) {
    json_t *docs = NULL;
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    if (ydoc_parse(name, text, len, &docs, err) < 0) return -1;
    size_t nd = json_array_size(docs);
    struct manifest *tmp = ctl_calloc(nd, sizeof *tmp);
    for (size_t i = 0; i < nd; i++) {
        char *id = nd > 1 ? ctl_asprintf("%s#%zu", base, i + 1) : ctl_strdup(base);
        if (manifest_from_doc(id, json_array_get(docs, i), &tmp[i], err) < 0) {
            free(id);
            for (size_t j = 0; j < i; j++) manifest_clear(&tmp[j]);
            free(tmp);
            json_decref(docs);
            return -1;
        }
        tmp[i].id = id;
        tmp[i].path = ctl_strdup(name);
        tmp[i].doc = i;
    }
    json_decref(docs);
    qsort(tmp, nd, sizeof *tmp, cmp_doc_order);
    s->m = ctl_realloc(s->m, (s->n + nd + 1) * sizeof *s->m);
    memcpy(s->m + s->n, tmp, nd * sizeof *tmp);
    s->n += nd;
    free(tmp);
    return 0;
}

int manifest_set_add_file(struct manifest_set *s, const char *path, char *err) {
    char *text = NULL;
    size_t len = 0;
    if (ctl_read_file(path, 1u << 20, &text, &len, err) < 0) return -1;
    int rc = manifest_set_add_text(s, path, text, len, err);
    free(text);
    return rc;
}

/* ---- ordering and merging --------------------------------------------------------- */

static const char *node_name(json_t *n) { return json_string_value(json_object_get(n, "name")); }

static bool is_event(json_t *n) {
    const char *k = json_string_value(json_object_get(n, "kind"));
    return k && !strcmp(k, "event");
}

json_t *manifest_order_nodes(json_t *nodes) {
    json_t *out = json_array();
    size_t n = json_array_size(nodes), i;
    json_t *node;
    char *placed = ctl_calloc(n, 1);
    json_t *names = json_object(); /* name -> true once placed */
    json_t *all = json_object();   /* every name in the set */
    json_array_foreach(nodes, i, node) json_object_set_new(all, node_name(node), json_true());
    json_array_foreach(nodes, i, node) {
        if (is_event(node)) {
            json_array_append(out, node);
            json_object_set_new(names, node_name(node), json_true());
            placed[i] = 1;
        }
    }
    /* Derivations: repeatedly place the first one whose in-set upstreams are placed. A
     * cycle (or a self-reference) falls back to declaration order; the server reports it. */
    for (;;) {
        bool progress = false, left = false;
        json_array_foreach(nodes, i, node) {
            if (placed[i]) continue;
            left = true;
            bool ready = true;
            size_t j;
            json_t *u;
            json_array_foreach(json_object_get(node, "upstreams"), j, u) {
                const char *un = json_string_value(u);
                if (un && json_object_get(all, un) && !json_object_get(names, un)) ready = false;
            }
            if (ready) {
                json_array_append(out, node);
                json_object_set_new(names, node_name(node), json_true());
                placed[i] = 1;
                progress = true;
                break;
            }
        }
        if (!left) break;
        if (!progress) {
            json_array_foreach(nodes, i, node) if (!placed[i]) json_array_append(out, node);
            break;
        }
    }
    free(placed);
    json_decref(names);
    json_decref(all);
    return out;
}

static json_t *group_by_of(json_t *node) {
    size_t i;
    json_t *op;
    json_array_foreach(json_object_get(node, "ops"), i, op) {
        const char *o = json_string_value(json_object_get(op, "op"));
        if (o && !strcmp(o, "group_by")) return op;
    }
    return NULL;
}

int manifest_set_finish(struct manifest_set *s, char *err) {
    json_t *defs = json_object();     /* name -> {"m": idx, "c": canon} */
    json_t *features = json_object(); /* feature -> "table (manifest)" */
    json_t *removed = json_object();  /* name -> manifest idx */
    json_t *merged = json_array();
    int rc = -1;
    for (size_t mi = 0; mi < s->n; mi++) {
        struct manifest *m = &s->m[mi];
        size_t i;
        json_t *node;
        json_array_foreach(m->remove, i, node) {
            json_object_set_new(removed, json_string_value(node), json_integer((json_int_t)mi));
        }
        json_array_foreach(m->nodes, i, node) {
            const char *name = node_name(node);
            char *c = canon(node);
            json_t *prev = json_object_get(defs, name);
            if (prev) {
                size_t pm = (size_t)json_integer_value(json_object_get(prev, "m"));
                if (strcmp(json_string_value(json_object_get(prev, "c")), c) != 0) {
                    ctl_errf(err,
                             "conflicting definitions of '%s': %s and %s define it "
                             "differently (one name, one definition across all manifests)",
                             name, s->m[pm].id, m->id);
                    free(c);
                    goto out;
                }
                free(c);
                continue; /* identical repeat: the union holds it once */
            }
            json_object_set_new(defs, name, json_pack("{s:I,s:s}", "m", (json_int_t)mi, "c", c));
            free(c);
            json_array_append(merged, node);
            json_t *gb = group_by_of(node);
            const char *fname;
            json_t *fv;
            json_object_foreach(json_object_get(gb, "agg"), fname, fv) {
                json_t *owner = json_object_get(features, fname);
                if (owner) {
                    ctl_errf(err,
                             "feature '%s' is defined by table %s and by table %s (%s); "
                             "feature names are global on the server",
                             fname, json_string_value(owner), name, m->id);
                    goto out;
                }
                json_object_set_new(features, fname, json_sprintf("%s (%s)", name, m->id));
            }
        }
    }
    const char *rname;
    json_t *rv;
    json_object_foreach(removed, rname, rv) {
        json_t *d = json_object_get(defs, rname);
        if (d) {
            ctl_errf(err, "'%s' is listed under remove: in %s but defined in %s", rname,
                     s->m[json_integer_value(rv)].id, s->m[json_integer_value(json_object_get(d, "m"))].id);
            goto out;
        }
    }
    s->all_nodes = manifest_order_nodes(merged);
    json_t *h = json_pack("{s:O,s:O}", "nodes", s->all_nodes, "remove", removed);
    char *c = canon(h);
    ctl_sha256_digest(c, strlen(c), s->hash);
    free(c);
    json_decref(h);
    rc = 0;
out:
    json_decref(defs);
    json_decref(features);
    json_decref(removed);
    json_decref(merged);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int manifest_load(const char *path, struct manifest_set **out, char *err) {
    struct manifest_set *s = manifest_set_new();
    struct stat st;
    *out = NULL;
    if (stat(path, &st) < 0) {
        ctl_errf(err, "manifests %s: does not exist", path);
        goto err;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) {
            ctl_errf(err, "manifests %s: cannot open directory", path);
            goto err;
        }
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (e->d_name[0] == '.') continue;
            if (!((l > 5 && !strcmp(e->d_name + l - 5, ".yaml")) || (l > 4 && !strcmp(e->d_name + l - 4, ".yml"))))
                continue;
            if (n >= MANIFEST_MAX_FILES) break;
            names = ctl_realloc(names, (n + 1) * sizeof *names);
            names[n++] = ctl_strdup(e->d_name);
        }
        closedir(d);
        if (n) qsort(names, n, sizeof *names, cmp_str);
        int rc = 0;
        for (size_t i = 0; i < n; i++) {
            char *p = ctl_asprintf("%s/%s", path, names[i]);
            if (rc == 0) rc = manifest_set_add_file(s, p, err);
            free(p);
            free(names[i]);
        }
        free(names);
        if (rc < 0) goto err;
    } else if (manifest_set_add_file(s, path, err) < 0) {
        goto err;
    }
    if (manifest_set_finish(s, err) < 0) goto err;
    *out = s;
    return 0;
err:
    manifest_set_free(s);
    return -1;
}

json_t *manifest_step_nodes(const struct manifest_set *s, size_t k, json_t *prev) {
    json_t *names = json_object();
    json_t *nodes = json_array();
    for (size_t mi = 0; mi <= k && mi < s->n; mi++) {
        size_t i;
        json_t *node;
        json_array_foreach(s->m[mi].nodes, i, node) {
            if (json_object_get(names, node_name(node))) continue;
            json_object_set_new(names, node_name(node), json_true());
            json_array_append(nodes, node);
        }
        json_array_foreach(s->m[mi].remove, i, node) {
            json_object_set_new(names, json_string_value(node), json_false());
        }
    }
    size_t i;
    json_t *node;
    json_array_foreach(prev, i, node) {
        const char *n = node_name(node);
        if (n && !json_object_get(names, n)) json_array_append(nodes, node);
    }
    json_t *out = manifest_order_nodes(nodes);
    json_decref(nodes);
    json_decref(names);
    return out;
}

const char *manifest_entry_owner(json_t *entry, char *buf, size_t len) {
    const char *kind = json_string_value(json_object_get(entry, "kind"));
    const char *v = NULL;
    buf[0] = 0;
    if (!kind) return buf;
    if (!strcmp(kind, "rename")) v = json_string_value(json_object_get(entry, "to"));
    else if (!strcmp(kind, "type_change")) v = json_string_value(json_object_get(entry, "field"));
    else if (!strcmp(kind, "window_change")) v = json_string_value(json_object_get(entry, "agg"));
    else if (!strcmp(kind, "new_field")) v = json_string_value(json_object_get(entry, "event"));
    else if (!strcmp(kind, "descriptor_change") || !strcmp(kind, "new_descriptor"))
        v = json_string_value(json_object_get(entry, "name"));
    else v = json_string_value(json_object_get(entry, "table"));
    if (!v) return buf;
    snprintf(buf, len, "%s", v);
    if (!strcmp(kind, "type_change") || !strcmp(kind, "window_change")) {
        char *dot = strchr(buf, '.');
        if (dot) *dot = 0;
    }
    return buf;
}

/* Is name declared (as a node or under remove:) by manifests 0..k? */
static bool declared_upto(const struct manifest_set *s, size_t k, const char *name) {
    for (size_t mi = 0; mi <= k && mi < s->n; mi++) {
        size_t j;
        json_t *x;
        json_array_foreach(s->m[mi].nodes, j, x) if (!strcmp(node_name(x), name)) return true;
        json_array_foreach(s->m[mi].remove, j, x) if (!strcmp(json_string_value(x), name)) return true;
    }
    return false;
}

int manifest_check_destructive(const struct manifest_set *s, size_t k, json_t *destructive, char *err) {
    size_t i;
    json_t *entry;
    /* A registry filled by hand: every descriptor the change is about (a rename's old name
     * included) that no manifest declares, named at once. */
    char names[700] = "";
    size_t undeclared = 0;
    json_array_foreach(destructive, i, entry) {
        char owner[256];
        const char *cand[2] = { manifest_entry_owner(entry, owner, sizeof owner), NULL };
        const char *ek = json_string_value(json_object_get(entry, "kind"));
        if (ek && !strcmp(ek, "rename")) cand[1] = json_string_value(json_object_get(entry, "from"));
        for (int c = 0; c < 2; c++) {
            const char *nm = cand[c];
            size_t l = strlen(names);
            if (!nm || !*nm || declared_upto(s, k, nm) || strstr(names, nm) || l + strlen(nm) + 3 >= sizeof names)
                continue;
            snprintf(names + l, sizeof names - l, "%s%s", undeclared ? ", " : "", nm);
            undeclared++;
        }
    }
    if (undeclared)
        return ctl_errf(err,
                        "the server holds %zu descriptor(s) that no manifest declares (registered by hand, not by "
                        "beava-control?): %s; taking over refused, nothing changed. Adopt them as they are with "
                        "`beava-control apply --adopt DIR` (they are kept; registers use mode merge), or declare them "
                        "in a manifest of their own, or drop them by listing them under remove: in a manifest with "
                        "allow_destructive: true",
                        undeclared, names);
    json_array_foreach(destructive, i, entry) {
        char owner[256];
        manifest_entry_owner(entry, owner, sizeof owner);
        long found = -1;
        for (size_t mi = 0; mi <= k && mi < s->n && found < 0; mi++) {
            size_t j;
            json_t *x;
            json_array_foreach(s->m[mi].nodes, j, x) if (!strcmp(node_name(x), owner)) found = (long)mi;
            json_array_foreach(s->m[mi].remove, j, x) if (!strcmp(json_string_value(x), owner)) found = (long)mi;
        }
        /* A rename pairs a removal with an addition: the removed name needs its own opt-in. */
        const char *kind = json_string_value(json_object_get(entry, "kind"));
        char *desc = canon(entry);
        if (found < 0) {
            ctl_errf(err, "destructive change %s is about '%s', which no manifest declares", desc, owner);
            free(desc);
            return -1;
        }
        if (!s->m[found].allow_destructive) {
            ctl_errf(err,
                     "destructive change %s in manifest %s, which does not say "
                     "allow_destructive: true; refused, nothing changed",
                     desc, s->m[found].id);
            free(desc);
            return -1;
        }
        if (kind && !strcmp(kind, "rename")) {
            const char *from = json_string_value(json_object_get(entry, "from"));
            bool ok = false;
            for (size_t mi = 0; mi <= k && mi < s->n; mi++) {
                size_t j;
                json_t *x;
                json_array_foreach(s->m[mi].remove, j, x) if (from && !strcmp(json_string_value(x), from)) ok = true;
            }
            if (!ok) {
                ctl_errf(err,
                         "destructive change %s would drop '%s', which is not listed "
                         "under remove:; refused",
                         desc, from ? from : "?");
                free(desc);
                return -1;
            }
        }
        free(desc);
    }
    return 0;
}

json_t *manifest_tables(json_t *nodes) {
    json_t *out = json_array();
    size_t i;
    json_t *node;
    json_array_foreach(nodes, i, node) {
        json_t *gb = group_by_of(node);
        if (!gb) continue;
        size_t nk = json_array_size(json_object_get(gb, "keys"));
        char key[256] = "";
        for (size_t j = 1; j < nk && j < sizeof key - 1; j++) strcat(key, "|");
        json_array_append_new(out, json_pack("{s:s,s:s}", "table", node_name(node), "key", key));
    }
    return out;
}
