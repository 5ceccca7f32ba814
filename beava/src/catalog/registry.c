/*
 * registry.c - descriptors, the register request pipeline and the apply step
 * (registry.h; README "Registering pipelines").
 *
 * registry_prepare() runs a request through these stages, stopping at the first that
 * answers:
 *   1. load     depth cap (REG_MAX_DEPTH, scanned on the raw bytes before jansson
 *               builds anything), JSON syntax, node cap (REGISTRY_MAX_NODES)
 *   2. rewrite  the documented table form {"kind":"table","key","source","agg":[..]}
 *               becomes a derivation with a group_by op; an event `schema` given as a
 *               flat name->type map becomes {"fields":{..}}
 *   3. scans    join/union, event_time_field/tolerate_delay_ms, unsupported kind,
 *               memory governance (feature_precheck_unbounded) - in that order
 *   4. parse    strict shape check of every node into a pnode plus its normal form (a
 *               JSON node with every default explicit and unknown keys dropped: the
 *               thing the diff compares and the registry stores)
 *   5. merge    `"mode":"merge"` only: every registered descriptor the request does not
 *               name is appended, parsed back from its stored normal form; from here on
 *               the request is the complete registry it describes (README "Registering pipelines")
 *   6. validate the rules in their documented order, first error wins, on that complete set
 *               alone, as on a fresh server: a typo is a 400 naming its code and path
 *               whatever the registry holds, never a diff entry. Compiles every chain
 *               and feature. (Equivalent to validating against the registry minus the
 *               force removal set: every registered name the request does not carry is
 *               in that set.)
 *   7. diff     diff_classify() (diff.c), the only comparison of old and new
 *   8. dry_run  200 {"diff","would_apply":false}, plus "error":{code,path,reason} when
 *               stage 6 failed (a dry run is a preview: it shows both)
 *   9. gate     destructive without force: 409 force_required
 *  10. removal  force: owners of destructive and additive-against-existing entries,
 *               plus the cascade (diff_removal_set)
 *  11. empty    `nodes: []` that got this far: 200 no-op (also with force, as the
 *               reference)
 *  12. plan     or a 200 no-op when nothing would change.
 * registry_apply() then removes the removal set, widens in place what the diff lists as
 * additive against existing descriptors (new fields; new features appended to a
 * table's slots, other slots untouched), inserts new descriptors, bumps the version
 * by one and calls the hooks after the indexes are rebuilt.
 *
 * Data: descriptors live in two arrays in registration order; sorted pointer indexes
 * (events, derivations, features, tables by source) are rebuilt after every change,
 * which keeps lookups O(log n) and the code free of hash tables. Registry changes are
 * rare; the rebuild is O(n log n).
 *
 * Choices where the reference is silent or accidental (documented for the API docs):
 *   - A derivation may hold at most one group_by op (400 invalid_registration).
 *   - Event derivations run at push time (the reference never runs them): a table
 *     over an event derivation is fed by the root event with the composed chain (see
 *     compose_through_derivations). Pushing to a derivation name stays event_not_found.
 *   - Group keys and features are checked against the schema after ALL of the
 *     derivation's non-group_by ops (what the engine runs before aggregating), not the
 *     reference's "ops before the group_by, else a union with sibling derivations".
 *   - A derivation's client-supplied `schema` only matters when it has no ops (it must
 *     be non-empty); it is stored as the exposed schema of group_by derivations, as the
 *     reference does, and is not compared by the diff.
 *   - The table form takes `agg` as a list of {"name","op",...params} (a nested
 *     "params" object is merged in) or as a map name -> {"op",...}; an optional `ops`
 *     list becomes the prefix chain. A name defined twice in the list is
 *     aggregation_duplicate_feature_name. A flat event schema is recognised when
 *     `schema` has no `fields` key and every member but `optional_fields` is a string.
 *   - Caps, each a 400 invalid_registration naming the place: body nesting 32, 4096
 *     nodes, 1024 fields per schema (and per union of a derivation's upstreams), 65536
 *     fields entering derivation chains in total, 256 ops, 64 upstreams, 64 keys, 4096
 *     features per group_by.
 *   - Error texts can quote request bytes (jansson's messages) or be cut mid-character
 *     by bv_err's fixed buffers; they are scrubbed to valid UTF-8 before they are sent.
 *   - Allocation failure aborts (as jsonw and value.c do): every structure here is
 *     bounded by the request caps.
 */
#include "registry.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "names.h"
#include "op.h"
#include "xalloc.h"

#define REG_MAX_DEPTH 32                /* nesting of the whole request body */
#define REG_MAX_FIELDS 1024             /* fields (and optional fields) per schema */
#define REG_MAX_CHAIN_INPUT (1 << 16)   /* total fields entering derivation chains */
#define REG_MAX_OPS 256                 /* ops per derivation */
#define REG_MAX_UPSTREAMS 64
#define REG_MAX_KEYS 64                 /* group keys / table_primary_key entries */
#define REG_MAX_FEATURES 4096           /* features per group_by */
#define REG_MAX_COMPOSED_OPS 1024       /* ops of a table's chain composed through event derivations */
#define REG_DEFAULT_DEDUPE_WINDOW_MS 86400000LL
#define REG_NONE ((size_t)-1)

/* ------------------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------------------- */

static json_t *jnew(json_t *j) {
    if (!j) abort();
    return j;
}

static void jset(json_t *obj, const char *key, json_t *val) {
    if (json_object_set_new(obj, key, jnew(val)) < 0) abort();
}

static void jappend(json_t *arr, json_t *val) {
    if (json_array_append_new(arr, jnew(val)) < 0) abort();
}

static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

/* invalid_registration with path "<body>": the reference's strict-parse failure. */
static int shape_err(bv_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int shape_err(bv_err *err, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    bv_err_set(err, "invalid_registration", "<body>", "%s", reason);
    return -1;
}

static const char *jtype_name(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "map";
    case JSON_ARRAY: return "sequence";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "floating point";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* ------------------------------------------------------------------------------------
 * Types
 * ---------------------------------------------------------------------------------- */

/* One payload node after the strict parse, plus what validation compiled for it. */
typedef struct pnode {
    bool is_event;
    bool kept;                   /* merge: a registered descriptor the request did not name */
    const char *name;            /* inside `node` */
    json_t *node;                /* normal form (owned) */
    /* event */
    bv_schema schema;            /* event: declared; derivation: client-supplied */
    const char *dedupe_key;      /* inside `node`, NULL if none */
    int64_t dedupe_window_ms, keep_ms, cold_ms;
    /* derivation */
    bool output_table, has_tpk, has_client_schema;
    size_t nup;
    const char **up;             /* inside `node` */
    size_t nops;
    size_t gb;                   /* index of the group_by op, REG_NONE if none */
    size_t gb_second;            /* index of a second group_by (an error), REG_NONE */
    /* compiled by validation */
    bool chained;
    bv_schema chain_out;         /* schema after every non-group_by op */
    chain *prefix;               /* tables over event derivations: the composed chain */
    char *root;                  /* tables over event derivations: the root event */
    size_t nfeat;                /* compiled so far (sorted by name) */
    feature *feats;
    bool *feat_moved;            /* taken by apply (widening) */
} pnode;

typedef struct payload {
    pnode *v;
    size_t n;                    /* nodes: the request's, then (merge) the kept ones */
    size_t nnamed;               /* the request's own nodes: v[0 .. nnamed-1] */
    bool force, dry_run, merge;
} payload;

struct reg_plan {
    uint64_t base_version;
    payload pl;
    reg_diff diff;
    char **removal;              /* sorted */
    size_t nremoval;
    char **added;                /* response order */
    size_t nadded;
};

typedef struct feat_ref {
    const char *name;
    agg_table *t;
    size_t slot;
} feat_ref;

typedef struct src_ref {
    const char *source;
    size_t start, n;             /* range in registry.src_tables */
} src_ref;

struct registry {
    registry_options opts;
    uint64_t version;
    uint64_t next_table_id;
    ev_desc **events;            /* registration order */
    size_t nevents, cap_events;
    deriv_desc **derivs;         /* registration order */
    size_t nderivs, cap_derivs;
    /* indexes, rebuilt by reindex() */
    ev_desc **ev_sorted;         /* the two arrays as of the last reindex() */
    deriv_desc **der_sorted;
    size_t nev_sorted, nder_sorted;
    agg_table **tables;          /* registration order */
    size_t ntables;
    agg_table **src_tables;      /* grouped by source, registration order within */
    src_ref *srcs;
    size_t nsrcs;
    feat_ref *feats;
    size_t nfeats;
};

/* ------------------------------------------------------------------------------------
 * Name rules (the one rule is base/names.c's, shared with the control daemon)
 * ---------------------------------------------------------------------------------- */

bool registry_name_valid(const char *name) { return bv_name_valid(name); }

/* ------------------------------------------------------------------------------------
 * Stage 1: load
 * ---------------------------------------------------------------------------------- */

/* Bracket depth outside strings; false when it exceeds `cap`. Runs before jansson so a
 * deeply nested body never reaches the recursive parser. */
static bool depth_within(const char *s, size_t n, int cap) {
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == '"') in_str = true;
        else if (c == '[' || c == '{') {
            if (++depth > cap) return false;
        } else if (c == ']' || c == '}') depth--;
    }
    return true;
}

static int load_body(const char *body, size_t len, json_t **root, bv_err *err) {
    if (!depth_within(body, len, REG_MAX_DEPTH))
        return shape_err(err, "request body nests deeper than %d levels", REG_MAX_DEPTH);
    json_error_t je;
    *root = json_loadb(body, len, JSON_DECODE_ANY, &je);
    if (!*root)
        return shape_err(err, "invalid JSON: %s at line %d column %d", je.text, je.line,
                         je.column);
    const json_t *nodes = json_object_get(*root, "nodes");
    if (json_is_array(nodes) && json_array_size(nodes) > REGISTRY_MAX_NODES) {
        bv_err_set(err, "invalid_registration", "nodes",
                   "payload has %zu nodes; at most %d are accepted per register call",
                   json_array_size(nodes), REGISTRY_MAX_NODES);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Stage 2: rewrite the table form and flat event schemas
 * ---------------------------------------------------------------------------------- */

/* params for one table-form feature: entry.params (if an object) overlaid with every
 * other key of the entry except name/op/params. */
static json_t *table_feature_params(const json_t *entry) {
    json_t *params = json_object();
    const json_t *inner = json_object_get(entry, "params");
    const char *k;
    json_t *v;
    if (json_is_object(inner)) {
        json_object_foreach((json_t *)inner, k, v) jset(params, k, json_deep_copy(v));
    }
    json_object_foreach((json_t *)entry, k, v) {
        if (!strcmp(k, "name") || !strcmp(k, "op") || !strcmp(k, "params")) continue;
        jset(params, k, json_deep_copy(v));
    }
    return params;
}

static int translate_table(const json_t *in, size_t i, json_t **out, bv_err *err) {
    char path[64];
    const json_t *key = json_object_get(in, "key");
    const json_t *source = json_object_get(in, "source");
    const json_t *agg = json_object_get(in, "agg");
    const json_t *ops = json_object_get(in, "ops");
    json_t *aggmap = NULL, *d = NULL;

    bool key_ok = json_is_array(key);
    for (size_t j = 0; key_ok && j < json_array_size(key); j++)
        key_ok = json_is_string(json_array_get(key, j));
    if (!key_ok) {
        snprintf(path, sizeof path, "nodes[%zu].key", i);
        bv_err_set(err, "invalid_registration", path,
                   "a table node needs `key`: an array of field names ([] for a global table)");
        return -1;
    }
    if (!json_is_string(source)) {
        snprintf(path, sizeof path, "nodes[%zu].source", i);
        bv_err_set(err, "invalid_registration", path,
                   "a table node needs `source`: the name of the event it aggregates");
        return -1;
    }
    if (ops && !json_is_null(ops) && !json_is_array(ops)) {
        snprintf(path, sizeof path, "nodes[%zu].ops", i);
        bv_err_set(err, "invalid_registration", path, "`ops` must be an array of op objects");
        return -1;
    }
    aggmap = jnew(json_object());
    if (json_is_array(agg)) {
        for (size_t j = 0; j < json_array_size(agg); j++) {
            const json_t *e = json_array_get(agg, j);
            const char *fname = json_string_value(json_object_get(e, "name"));
            const json_t *op = json_object_get(e, "op");
            if (!json_is_object(e) || !fname || !json_is_string(op)) {
                snprintf(path, sizeof path, "nodes[%zu].agg[%zu]", i, j);
                bv_err_set(err, "invalid_registration", path,
                           "each table aggregation needs a string `name` and a string `op`");
                goto fail;
            }
            if (json_object_get(aggmap, fname)) {
                snprintf(path, sizeof path, "nodes[%zu].agg[%zu].name", i, j);
                bv_err_set(err, "aggregation_duplicate_feature_name", path,
                           "feature '%s' is defined twice in this table", fname);
                goto fail;
            }
            json_t *spec = jnew(json_object());
            jset(spec, "op", json_deep_copy(op));
            jset(spec, "params", table_feature_params(e));
            jset(aggmap, fname, spec);
        }
    } else if (json_is_object(agg)) {
        const char *fname;
        json_t *e;
        json_object_foreach((json_t *)agg, fname, e) {
            const json_t *op = json_object_get(e, "op");
            if (!json_is_object(e) || !json_is_string(op)) {
                snprintf(path, sizeof path, "nodes[%zu].agg", i);
                bv_err_set(err, "invalid_registration", path,
                           "aggregation '%s' needs a string `op`", fname);
                goto fail;
            }
            json_t *spec = jnew(json_object());
            jset(spec, "op", json_deep_copy(op));
            jset(spec, "params", table_feature_params(e));
            jset(aggmap, fname, spec);
        }
    } else {
        snprintf(path, sizeof path, "nodes[%zu].agg", i);
        bv_err_set(err, "invalid_registration", path,
                   "a table node needs `agg`: a list of {\"name\",\"op\",...params}");
        goto fail;
    }

    d = jnew(json_object());
    jset(d, "kind", json_string("derivation"));
    const json_t *name = json_object_get(in, "name");
    if (name) jset(d, "name", json_deep_copy(name));
    jset(d, "output_kind", json_string("table"));
    json_t *ups = jnew(json_array());
    jappend(ups, json_deep_copy(source));
    jset(d, "upstreams", ups);
    json_t *dops = jnew(json_array());
    for (size_t j = 0; j < json_array_size(ops); j++) jappend(dops, json_deep_copy(json_array_get(ops, j)));
    json_t *gb = jnew(json_object());
    jset(gb, "op", json_string("group_by"));
    jset(gb, "keys", json_deep_copy(key));
    jset(gb, "agg", aggmap);
    aggmap = NULL;
    jappend(dops, gb);
    jset(d, "ops", dops);
    jset(d, "table_primary_key", json_deep_copy(key));
    *out = d;
    return 0;
fail:
    json_decref(aggmap);
    return -1;
}

/* {"a":"str",...} (no `fields`, every member but optional_fields a string) becomes
 * {"fields":{...},"optional_fields":[...]}. Anything else is left for the strict parse. */
static json_t *flat_schema(const json_t *schema) {
    if (!json_is_object(schema) || json_object_get(schema, "fields")) return NULL;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)schema, k, v) {
        if (strcmp(k, "optional_fields") != 0 && !json_is_string(v)) return NULL;
    }
    json_t *fields = jnew(json_object());
    json_object_foreach((json_t *)schema, k, v) {
        if (strcmp(k, "optional_fields") != 0) jset(fields, k, json_deep_copy(v));
    }
    json_t *out = jnew(json_object());
    jset(out, "fields", fields);
    const json_t *opt = json_object_get(schema, "optional_fields");
    if (opt) jset(out, "optional_fields", json_deep_copy(opt));
    return out;
}

/* Returns the rewritten nodes array (new reference). The first rewrite failure is kept
 * in *terr / *terr_index and reported at the strict-parse stage; the node stays as
 * sent (kind "table"), which the scans skip. */
static json_t *rewrite_nodes(const json_t *nodes, bv_err *terr, size_t *terr_index) {
    json_t *out = jnew(json_array());
    *terr_index = REG_NONE;
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        json_t *n = json_array_get(nodes, i);
        const char *kind = json_string_value(json_object_get(n, "kind"));
        json_t *rewritten = NULL;
        if (kind && strcmp(kind, "table") == 0) {
            bv_err e;
            bv_err_clear(&e);
            if (translate_table(n, i, &rewritten, &e) < 0 && *terr_index == REG_NONE) {
                *terr = e;
                *terr_index = i;
            }
        } else if (kind && strcmp(kind, "event") == 0) {
            json_t *fs = flat_schema(json_object_get(n, "schema"));
            if (fs) {
                rewritten = jnew(json_copy(n));
                jset(rewritten, "schema", fs);
            }
        }
        jappend(out, rewritten ? rewritten : json_incref(n));
    }
    return out;
}

/* ------------------------------------------------------------------------------------
 * Stage 3: the four scans that run before the strict parse
 * ---------------------------------------------------------------------------------- */

/* "nodes[i].<name>" or "nodes[i]" when the node has no usable name. */
static void node_prefix(char *buf, size_t cap, const json_t *node, size_t i) {
    const char *name = json_string_value(json_object_get(node, "name"));
    if (name && *name) snprintf(buf, cap, "nodes[%zu].%s", i, name);
    else snprintf(buf, cap, "nodes[%zu]", i);
}

static bool kind_is(const json_t *node, const char *kind) {
    const char *k = json_string_value(json_object_get(node, "kind"));
    return k && strcmp(k, kind) == 0;
}

static int scan_removed_ops(const json_t *nodes, bv_err *err) {
    char prefix[256], path[300];
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        const json_t *n = json_array_get(nodes, i);
        if (!kind_is(n, "derivation")) continue;
        const json_t *ops = json_object_get(n, "ops");
        for (size_t j = 0; j < json_array_size(ops); j++) {
            const char *op = json_string_value(json_object_get(json_array_get(ops, j), "op"));
            if (!op) continue;
            bool join = strcmp(op, "join") == 0, uni = strcmp(op, "union") == 0;
            if (!join && !uni) continue;
            node_prefix(prefix, sizeof prefix, n, i);
            snprintf(path, sizeof path, "%s.ops[%zu]", prefix, j);
            if (join)
                bv_err_set(err, "feature_removed_no_joins_v0", path,
                           "Joins are not part of beava: push events to each stream "
                           "independently and compose features client-side instead.");
            else
                bv_err_set(err, "feature_removed_no_unions_v0", path,
                           "Unions are not part of beava: register one aggregation per "
                           "event stream instead.");
            return -1;
        }
    }
    return 0;
}

static int scan_event_time(const json_t *nodes, bv_err *err) {
    char prefix[256], path[300];
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        const json_t *n = json_array_get(nodes, i);
        if (!json_is_object(n)) continue;
        node_prefix(prefix, sizeof prefix, n, i);
        if (json_object_get(n, "event_time_field")) {
            snprintf(path, sizeof path, "%s.event_time_field", prefix);
            bv_err_set(err, "unknown_field_event_time_v0", path,
                       "`event_time_field` is not supported: windows bucket on server "
                       "arrival time. Drop the key from the registration payload.");
            return -1;
        }
        if (json_object_get(n, "tolerate_delay_ms")) {
            snprintf(path, sizeof path, "%s.tolerate_delay_ms", prefix);
            bv_err_set(err, "unknown_field_tolerate_delay_v0", path,
                       "`tolerate_delay_ms` is not supported: windows bucket on server "
                       "arrival time. Drop the key from the registration payload.");
            return -1;
        }
    }
    return 0;
}

static int scan_kinds(const json_t *nodes, bv_err *err) {
    char prefix[256], path[300];
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        const json_t *n = json_array_get(nodes, i);
        const char *k = json_string_value(json_object_get(n, "kind"));
        if (!k || !*k || !strcmp(k, "event") || !strcmp(k, "derivation") || !strcmp(k, "table"))
            continue;
        node_prefix(prefix, sizeof prefix, n, i);
        snprintf(path, sizeof path, "%s.kind", prefix);
        bv_err_set(err, "unsupported_node_kind", path,
                   "Node kind `%s` is not supported (supported kinds: \"event\", "
                   "\"derivation\", and the table form \"table\").", k);
        return -1;
    }
    return 0;
}

static int scan_memory(const json_t *nodes, bv_err *err) {
    char prefix[256], path[512];
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        const json_t *n = json_array_get(nodes, i);
        if (!kind_is(n, "derivation")) continue;
        const json_t *ops = json_object_get(n, "ops");
        for (size_t j = 0; j < json_array_size(ops); j++) {
            const json_t *agg = json_object_get(json_array_get(ops, j), "agg");
            if (!json_is_object(agg)) continue;
            size_t nf = json_object_size(agg), k = 0;
            const char **names = bv_xcalloc(nf, sizeof *names);
            const char *f;
            json_t *spec;
            json_object_foreach((json_t *)agg, f, spec) names[k++] = f;
            qsort(names, nf, sizeof *names, cmp_cstr);
            node_prefix(prefix, sizeof prefix, n, i);
            int rc = 0;
            for (k = 0; k < nf && rc == 0; k++) {
                snprintf(path, sizeof path, "%s.ops[%zu].agg.%s", prefix, j, names[k]);
                rc = feature_precheck_unbounded(json_object_get(agg, names[k]), path, err);
            }
            free(names);
            if (rc < 0) return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Stage 4: strict parse into pnodes and the normal form
 * ---------------------------------------------------------------------------------- */

static void pnode_free(pnode *p) {
    json_decref(p->node);
    bv_schema_free(&p->schema);
    bv_schema_free(&p->chain_out);
    if (p->prefix) chain_free(p->prefix);
    free(p->root);
    for (size_t i = 0; i < p->nfeat; i++)
        if (!p->feat_moved || !p->feat_moved[i]) feature_release(&p->feats[i]);
    free(p->feats);
    free(p->feat_moved);
    free(p->up);
    memset(p, 0, sizeof *p);
}

static void payload_free(payload *pl) {
    for (size_t i = 0; i < pl->n; i++) pnode_free(&pl->v[i]);
    free(pl->v);
    memset(pl, 0, sizeof *pl);
}

static int req_string(const json_t *obj, const char *key, const char *where, const char **out,
                      bv_err *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v) return shape_err(err, "%s: missing field `%s`", where, key);
    if (!json_is_string(v))
        return shape_err(err, "%s.%s: invalid type: %s, expected a string", where, key,
                         jtype_name(v));
    *out = json_string_value(v);
    return 0;
}

/* An array of strings (NULL/absent allowed when !required); returns a deep copy. */
static int string_array(const json_t *v, const char *where, bool required, size_t cap,
                        json_t **out, bv_err *err) {
    if (!v || json_is_null(v)) {
        if (required) return shape_err(err, "%s: expected a sequence of strings, got %s", where,
                                       v ? "null" : "nothing");
        *out = NULL;
        return 0;
    }
    if (!json_is_array(v))
        return shape_err(err, "%s: invalid type: %s, expected a sequence", where, jtype_name(v));
    if (json_array_size(v) > cap)
        return shape_err(err, "%s: %zu entries; at most %zu are accepted", where,
                         json_array_size(v), cap);
    json_t *a = jnew(json_array());
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) {
            json_decref(a);
            return shape_err(err, "%s[%zu]: invalid type: %s, expected a string", where, i,
                             jtype_name(s));
        }
        jappend(a, json_string(json_string_value(s)));
    }
    *out = a;
    return 0;
}

/* An object whose values are strings; deep copy. */
static int string_map(const json_t *v, const char *where, json_t **out, bv_err *err) {
    if (!json_is_object(v))
        return shape_err(err, "%s: invalid type: %s, expected a map of strings", where,
                         v ? jtype_name(v) : "nothing");
    const char *k;
    json_t *s;
    json_object_foreach((json_t *)v, k, s) {
        if (!json_is_string(s))
            return shape_err(err, "%s.%s: invalid type: %s, expected a string", where, k,
                             jtype_name(s));
    }
    *out = jnew(json_deep_copy(v));
    return 0;
}

/* Optional non-negative integer; *out = -1 when absent or null. */
static int opt_u64(const json_t *obj, const char *key, const char *where, int64_t *out,
                   bv_err *err) {
    const json_t *v = json_object_get(obj, key);
    *out = -1;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return shape_err(err, "%s.%s: invalid value: %s, expected a non-negative integer "
                         "(milliseconds)", where, key, jtype_name(v));
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Append a field known to be new (JSON object keys are distinct): no lookup. */
static void schema_append(bv_schema *s, const char *name, bv_wtype t) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->names = bv_xrealloc(s->names, s->cap * sizeof *s->names);
        s->types = bv_xrealloc(s->types, s->cap * sizeof *s->types);
    }
    s->names[s->n] = bv_xstrdup(name);
    s->types[s->n] = t;
    s->n++;
}

/* schema {"fields":{name:type},"optional_fields":[..]} into `s` and its normal form. */
static int parse_schema(const json_t *schema, const char *where, bv_schema *s, json_t **out,
                        bv_err *err) {
    char w[300];
    if (!json_is_object(schema))
        return shape_err(err, "%s: invalid type: %s, expected a schema map", where,
                         jtype_name(schema));
    const json_t *fields = json_object_get(schema, "fields");
    if (!fields) return shape_err(err, "%s: missing field `fields`", where);
    if (!json_is_object(fields))
        return shape_err(err, "%s.fields: invalid type: %s, expected a map", where,
                         jtype_name(fields));
    if (json_object_size(fields) > REG_MAX_FIELDS)
        return shape_err(err, "%s.fields: %zu fields; at most %d per schema", where,
                         json_object_size(fields), REG_MAX_FIELDS);
    json_t *nf = jnew(json_object()), *nopt = NULL, *res = NULL;
    const char *k;
    json_t *t;
    json_object_foreach((json_t *)fields, k, t) {
        int wt = json_is_string(t) ? bv_wtype_parse(json_string_value(t)) : -1;
        if (wt < 0) {
            json_decref(nf);
            if (!json_is_string(t))
                return shape_err(err, "%s.fields.%s: invalid type: %s, expected a type name",
                                 where, k, jtype_name(t));
            return shape_err(err, "%s.fields.%s: unknown variant `%s`, expected one of `str`, "
                             "`i64`, `f64`, `bool`, `bytes`, `datetime`, `json`", where, k,
                             json_string_value(t));
        }
        schema_append(s, k, (bv_wtype)wt);
        jset(nf, k, json_string(bv_wtype_name((bv_wtype)wt)));
    }
    snprintf(w, sizeof w, "%s.optional_fields", where);
    if (string_array(json_object_get(schema, "optional_fields"), w, false, REG_MAX_FIELDS, &nopt,
                     err) < 0) {
        json_decref(nf);
        return -1;
    }
    /* Normal form: sorted, distinct. The schema keeps the order given. */
    size_t no = json_array_size(nopt);
    const char **names = bv_xcalloc(no, sizeof *names);
    for (size_t i = 0; i < no; i++) {
        names[i] = json_string_value(json_array_get(nopt, i));
        bv_schema_add_optional(s, names[i]);
    }
    qsort(names, no, sizeof *names, cmp_cstr);
    json_t *sorted = jnew(json_array());
    for (size_t i = 0; i < no; i++)
        if (i == 0 || strcmp(names[i], names[i - 1]) != 0) jappend(sorted, json_string(names[i]));
    free(names);
    json_decref(nopt);
    res = jnew(json_object());
    jset(res, "fields", nf);
    jset(res, "optional_fields", sorted);
    *out = res;
    return 0;
}

static int parse_event(const json_t *in, size_t i, pnode *p, bv_err *err) {
    char where[64];
    const char *name, *dk = NULL;
    json_t *out = jnew(json_object()), *schema = NULL;
    snprintf(where, sizeof where, "nodes[%zu]", i);
    if (req_string(in, "name", where, &name, err) < 0) goto fail;
    const json_t *sch = json_object_get(in, "schema");
    if (!sch) { shape_err(err, "%s: missing field `schema`", where); goto fail; }
    char sw[80];
    snprintf(sw, sizeof sw, "%s.schema", where);
    if (parse_schema(sch, sw, &p->schema, &schema, err) < 0) goto fail;
    const json_t *dkv = json_object_get(in, "dedupe_key");
    if (dkv && !json_is_null(dkv)) {
        if (!json_is_string(dkv)) {
            shape_err(err, "%s.dedupe_key: invalid type: %s, expected a string", where,
                      jtype_name(dkv));
            goto fail;
        }
        dk = json_string_value(dkv);
    }
    int64_t dw, keep, cold;
    if (opt_u64(in, "dedupe_window_ms", where, &dw, err) < 0 ||
        opt_u64(in, "keep_events_for_ms", where, &keep, err) < 0 ||
        opt_u64(in, "cold_after_ms", where, &cold, err) < 0)
        goto fail;
    p->dedupe_window_ms = dw < 0 ? REG_DEFAULT_DEDUPE_WINDOW_MS : dw;
    p->keep_ms = keep < 0 ? 0 : keep;
    p->cold_ms = cold < 0 ? 0 : cold;

    jset(out, "kind", json_string("event"));
    jset(out, "name", json_string(name));
    jset(out, "schema", schema);
    schema = NULL;
    jset(out, "dedupe_key", dk ? json_string(dk) : json_null());
    jset(out, "dedupe_window_ms", json_integer(p->dedupe_window_ms));
    jset(out, "keep_events_for_ms", p->keep_ms ? json_integer(p->keep_ms) : json_null());
    jset(out, "cold_after_ms", p->cold_ms ? json_integer(p->cold_ms) : json_null());
    p->is_event = true;
    p->node = out;
    p->name = json_string_value(json_object_get(out, "name"));
    p->dedupe_key = json_string_value(json_object_get(out, "dedupe_key"));
    p->gb = p->gb_second = REG_NONE;
    return 0;
fail:
    json_decref(out);
    json_decref(schema);
    return -1;
}

static const char *const OP_KINDS =
    "`filter`, `select`, `drop`, `rename`, `with_columns`, `map`, `cast`, `fillna`, `group_by`";

static int parse_group_by(const json_t *op, const char *where, json_t *out, bv_err *err) {
    char w[300];
    json_t *keys = NULL;
    snprintf(w, sizeof w, "%s.keys", where);
    if (!json_object_get(op, "keys")) return shape_err(err, "%s: missing field `keys`", where);
    if (string_array(json_object_get(op, "keys"), w, true, REG_MAX_KEYS, &keys, err) < 0)
        return -1;
    jset(out, "keys", keys);
    const json_t *agg = json_object_get(op, "agg");
    if (!agg) return shape_err(err, "%s: missing field `agg`", where);
    if (!json_is_object(agg))
        return shape_err(err, "%s.agg: invalid type: %s, expected a map", where, jtype_name(agg));
    if (json_object_size(agg) > REG_MAX_FEATURES)
        return shape_err(err, "%s.agg: %zu features; at most %d per group_by", where,
                         json_object_size(agg), REG_MAX_FEATURES);
    json_t *nagg = jnew(json_object());
    jset(out, "agg", nagg);
    const char *f;
    json_t *spec;
    json_object_foreach((json_t *)agg, f, spec) {
        if (!json_is_object(spec))
            return shape_err(err, "%s.agg.%s: invalid type: %s, expected an aggregation map",
                             where, f, jtype_name(spec));
        const json_t *opn = json_object_get(spec, "op");
        if (!opn) return shape_err(err, "%s.agg.%s: missing field `op`", where, f);
        if (!json_is_string(opn))
            return shape_err(err, "%s.agg.%s.op: invalid type: %s, expected a string", where, f,
                             jtype_name(opn));
        const json_t *params = json_object_get(spec, "params");
        if (params && !json_is_null(params) && !json_is_object(params))
            return shape_err(err, "%s.agg.%s.params: invalid type: %s, expected a map", where, f,
                             jtype_name(params));
        json_t *ns = jnew(json_object());
        jset(ns, "op", json_string(json_string_value(opn)));
        jset(ns, "params", json_is_object(params) ? json_deep_copy(params) : json_object());
        jset(nagg, f, ns);
    }
    return 0;
}

/* One op of a derivation in normal form (only the keys its kind reads). */
static int parse_op(const json_t *op, size_t i, size_t j, json_t **out, bv_err *err) {
    char where[80], w[120];
    snprintf(where, sizeof where, "nodes[%zu].ops[%zu]", i, j);
    if (!json_is_object(op))
        return shape_err(err, "%s: invalid type: %s, expected an op map", where, jtype_name(op));
    const char *kind;
    if (req_string(op, "op", where, &kind, err) < 0) return -1;
    json_t *o = jnew(json_object()), *x = NULL;
    jset(o, "op", json_string(kind));
    if (!strcmp(kind, "filter")) {
        const char *expr;
        if (req_string(op, "expr", where, &expr, err) < 0) goto fail;
        jset(o, "expr", json_string(expr));
    } else if (!strcmp(kind, "select") || !strcmp(kind, "drop")) {
        snprintf(w, sizeof w, "%s.fields", where);
        if (!json_object_get(op, "fields")) { shape_err(err, "%s: missing field `fields`", where); goto fail; }
        if (string_array(json_object_get(op, "fields"), w, true, REG_MAX_FIELDS, &x, err) < 0) goto fail;
        jset(o, "fields", x);
    } else if (!strcmp(kind, "rename") || !strcmp(kind, "with_columns") || !strcmp(kind, "map") ||
               !strcmp(kind, "cast")) {
        const char *key = !strcmp(kind, "rename") ? "mapping" : !strcmp(kind, "cast") ? "type_map" : "exprs";
        snprintf(w, sizeof w, "%s.%s", where, key);
        if (!json_object_get(op, key)) { shape_err(err, "%s: missing field `%s`", where, key); goto fail; }
        if (string_map(json_object_get(op, key), w, &x, err) < 0) goto fail;
        jset(o, key, x);
    } else if (!strcmp(kind, "fillna")) {
        const json_t *d = json_object_get(op, "defaults");
        if (!d) { shape_err(err, "%s: missing field `defaults`", where); goto fail; }
        if (!json_is_object(d)) {
            shape_err(err, "%s.defaults: invalid type: %s, expected a map", where, jtype_name(d));
            goto fail;
        }
        jset(o, "defaults", json_deep_copy(d));
    } else if (!strcmp(kind, "group_by")) {
        if (parse_group_by(op, where, o, err) < 0) goto fail;
    } else {
        shape_err(err, "%s.op: unknown variant `%s`, expected one of %s", where, kind, OP_KINDS);
        goto fail;
    }
    *out = o;
    return 0;
fail:
    json_decref(o);
    return -1;
}

static int parse_derivation(const json_t *in, size_t i, pnode *p, bv_err *err) {
    char where[64], w[96];
    const char *name, *okind;
    json_t *out = jnew(json_object()), *ups = NULL, *tpk = NULL, *schema = NULL;
    json_t *ops = jnew(json_array());
    snprintf(where, sizeof where, "nodes[%zu]", i);
    p->gb = p->gb_second = REG_NONE;
    if (req_string(in, "name", where, &name, err) < 0) goto fail;
    if (req_string(in, "output_kind", where, &okind, err) < 0) goto fail;
    if (strcmp(okind, "event") != 0 && strcmp(okind, "table") != 0) {
        shape_err(err, "%s.output_kind: unknown variant `%s`, expected `event` or `table`", where,
                  okind);
        goto fail;
    }
    snprintf(w, sizeof w, "%s.upstreams", where);
    if (!json_object_get(in, "upstreams")) { shape_err(err, "%s: missing field `upstreams`", where); goto fail; }
    if (string_array(json_object_get(in, "upstreams"), w, true, REG_MAX_UPSTREAMS, &ups, err) < 0)
        goto fail;
    const json_t *iops = json_object_get(in, "ops");
    if (iops && !json_is_null(iops)) {
        if (!json_is_array(iops)) {
            shape_err(err, "%s.ops: invalid type: %s, expected a sequence", where, jtype_name(iops));
            goto fail;
        }
        if (json_array_size(iops) > REG_MAX_OPS) {
            shape_err(err, "%s.ops: %zu ops; at most %d per derivation", where,
                      json_array_size(iops), REG_MAX_OPS);
            goto fail;
        }
        for (size_t j = 0; j < json_array_size(iops); j++) {
            json_t *o = NULL;
            if (parse_op(json_array_get(iops, j), i, j, &o, err) < 0) goto fail;
            if (!strcmp(json_string_value(json_object_get(o, "op")), "group_by")) {
                if (p->gb == REG_NONE) p->gb = j;
                else if (p->gb_second == REG_NONE) p->gb_second = j;
            }
            jappend(ops, o);
        }
    }
    const json_t *sch = json_object_get(in, "schema");
    if (sch && !json_is_null(sch)) {
        snprintf(w, sizeof w, "%s.schema", where);
        if (parse_schema(sch, w, &p->schema, &schema, err) < 0) goto fail;
        p->has_client_schema = true;
    }
    snprintf(w, sizeof w, "%s.table_primary_key", where);
    if (string_array(json_object_get(in, "table_primary_key"), w, false, REG_MAX_KEYS, &tpk, err) < 0)
        goto fail;

    jset(out, "kind", json_string("derivation"));
    jset(out, "name", json_string(name));
    jset(out, "output_kind", json_string(okind));
    jset(out, "upstreams", ups);
    ups = NULL;
    jset(out, "ops", ops);
    ops = NULL;
    if (schema) jset(out, "schema", schema);
    schema = NULL;
    jset(out, "table_primary_key", tpk ? tpk : json_null());
    p->has_tpk = tpk != NULL;
    tpk = NULL;

    p->is_event = false;
    p->node = out;
    p->name = json_string_value(json_object_get(out, "name"));
    p->output_table = strcmp(okind, "table") == 0;
    const json_t *nu = json_object_get(out, "upstreams");
    p->nup = json_array_size(nu);
    p->up = bv_xcalloc(p->nup, sizeof *p->up);
    for (size_t j = 0; j < p->nup; j++) p->up[j] = json_string_value(json_array_get(nu, j));
    p->nops = json_array_size(json_object_get(out, "ops"));
    return 0;
fail:
    json_decref(out);
    json_decref(ups);
    json_decref(ops);
    json_decref(tpk);
    json_decref(schema);
    return -1;
}

/* Stage 4 over the whole envelope. `nodes` is the rewritten array. */
static int parse_payload(const json_t *root, const json_t *nodes, const bv_err *terr,
                         size_t terr_index, payload *pl, bv_err *err) {
    if (!json_is_object(root))
        return shape_err(err, "invalid type: %s, expected a map with a `nodes` sequence",
                         jtype_name(root));
    const json_t *mode = json_object_get(root, "mode");
    if (mode && !json_is_null(mode)) {
        const char *m = json_string_value(mode);
        if (!m || (strcmp(m, "replace") != 0 && strcmp(m, "merge") != 0)) {
            bv_err_set(err, "invalid_registration", "mode",
                       "mode must be \"replace\" (the payload is the whole registry) or \"merge\" "
                       "(descriptors not named are kept)");
            return -1;
        }
        pl->merge = strcmp(m, "merge") == 0;
    }
    const json_t *raw = json_object_get(root, "nodes");
    if (!raw) return shape_err(err, "missing field `nodes`");
    if (!json_is_array(raw))
        return shape_err(err, "nodes: invalid type: %s, expected a sequence", jtype_name(raw));
    size_t n = json_array_size(nodes);
    pl->v = bv_xcalloc(n, sizeof *pl->v);
    for (size_t i = 0; i < n; i++) {
        pl->n = i + 1;
        pnode *p = &pl->v[i];
        bv_schema_init(&p->schema);
        bv_schema_init(&p->chain_out);
        if (i == terr_index) {
            *err = *terr;
            return -1;
        }
        const json_t *in = json_array_get(nodes, i);
        char where[64];
        snprintf(where, sizeof where, "nodes[%zu]", i);
        if (!json_is_object(in))
            return shape_err(err, "%s: invalid type: %s, expected a node map", where,
                             jtype_name(in));
        const json_t *kind = json_object_get(in, "kind");
        if (!kind) return shape_err(err, "%s: missing field `kind`", where);
        const char *k = json_string_value(kind);
        if (!k)
            return shape_err(err, "%s.kind: invalid type: %s, expected a string", where,
                             jtype_name(kind));
        int rc;
        if (!strcmp(k, "event")) rc = parse_event(in, i, p, err);
        else if (!strcmp(k, "derivation")) rc = parse_derivation(in, i, p, err);
        else rc = shape_err(err, "%s.kind: unknown variant `%s`, expected `event` or `derivation`",
                            where, k);
        if (rc < 0) return -1;
    }
    pl->n = pl->nnamed = n;
    pl->force = json_is_true(json_object_get(root, "force"));
    pl->dry_run = json_is_true(json_object_get(root, "dry_run"));
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Stage 10: validation (Rules 1-9 below; per-feature checks in feature_compile)
 * ---------------------------------------------------------------------------------- */

static ev_desc *find_event(const registry *r, const char *name);
static deriv_desc *find_deriv(const registry *r, const char *name);

typedef struct name_pos {
    const char *name;
    size_t i;
} name_pos;

typedef struct vctx {
    const registry *r;
    char *const *removal;        /* sorted */
    size_t nremoval;
    payload *pl;
    name_pos *pix;               /* payload names sorted by (name, index) */
    size_t work;                 /* fields entering chain compilation so far */
} vctx;

static int fail(bv_err *err, const char *code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(bv_err *err, const char *code, const char *path, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    bv_err_set(err, code, path, "%s", reason);
    return -1;
}

static int cmp_name_pos(const void *a, const void *b) {
    const name_pos *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return (x->i > y->i) - (x->i < y->i);
}

static name_pos *index_payload(const payload *pl) {
    name_pos *ix = bv_xcalloc(pl->n, sizeof *ix);
    for (size_t i = 0; i < pl->n; i++) {
        ix[i].name = pl->v[i].name;
        ix[i].i = i;
    }
    qsort(ix, pl->n, sizeof *ix, cmp_name_pos);
    return ix;
}

/* Index of the first payload node named `name`, or REG_NONE. */
static size_t pay_find(const vctx *v, const char *name) {
    size_t lo = 0, hi = v->pl->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(v->pix[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < v->pl->n && strcmp(v->pix[lo].name, name) == 0) return v->pix[lo].i;
    return REG_NONE;
}

static bool in_removal(const vctx *v, const char *name) {
    return v->nremoval &&
           bsearch(&name, v->removal, v->nremoval, sizeof *v->removal, cmp_cstr) != NULL;
}

/* Registered descriptors as validation sees them: minus the removal set. */
static const ev_desc *vis_event(const vctx *v, const char *name) {
    return in_removal(v, name) ? NULL : find_event(v->r, name);
}

static const deriv_desc *vis_deriv(const vctx *v, const char *name) {
    return in_removal(v, name) ? NULL : find_deriv(v->r, name);
}

static const bv_schema *pnode_exposed(const pnode *p) {
    if (p->is_event || p->gb != REG_NONE || !p->chained) return &p->schema;
    return &p->chain_out;
}

/* The schema a downstream derivation reads from upstream `name` (payload first). */
static const bv_schema *upstream_schema(const vctx *v, const char *name) {
    size_t k = pay_find(v, name);
    if (k != REG_NONE) return pnode_exposed(&v->pl->v[k]);
    const ev_desc *e = vis_event(v, name);
    if (e) return &e->schema;
    const deriv_desc *d = vis_deriv(v, name);
    if (d) return &d->schema;
    return NULL;
}

static bool upstream_is_table(const vctx *v, const char *name) {
    size_t k = pay_find(v, name);
    if (k != REG_NONE) return !v->pl->v[k].is_event && v->pl->v[k].output_table;
    if (vis_event(v, name)) return false;
    const deriv_desc *d = vis_deriv(v, name);
    return d && d->output_table;
}

/* Rules 1-4 (and our one-group_by rule): per node, in node order. */
static int check_nodes(const vctx *v, bv_err *err) {
    char path[96];
    const payload *pl = v->pl;
    for (size_t i = 0; i < pl->n; i++) {
        size_t k = pay_find(v, pl->v[i].name);
        if (k != i) {
            snprintf(path, sizeof path, "nodes[%zu].name", i);
            return fail(err, "invalid_registration", path,
                        "duplicate descriptor name '%s'; first seen at nodes[%zu]",
                        pl->v[i].name, k);
        }
    }
    for (size_t i = 0; i < pl->n; i++) {
        const pnode *p = &pl->v[i];
        snprintf(path, sizeof path, "nodes[%zu].name", i);
        switch (bv_name_check(p->name)) {
        case BV_NAME_OK: break;
        case BV_NAME_EMPTY:
            return fail(err, "invalid_registration", path, "descriptor name must not be empty");
        case BV_NAME_TOO_LONG:
            return fail(err, "invalid_registration", path,
                        "descriptor name is %zu chars; maximum is %d", strlen(p->name),
                        REGISTRY_NAME_MAX);
        case BV_NAME_PATTERN:
            return fail(err, "invalid_registration", path,
                        "descriptor name '%s' must match [A-Za-z_][A-Za-z0-9_]* (no hyphens "
                        "or leading digits)", p->name);
        case BV_NAME_RESERVED:
            return fail(err, "invalid_registration", path,
                        "descriptor name '%s' uses reserved prefix '_beava_'", p->name);
        }
        if (p->is_event) {
            if (p->schema.n == 0) {
                snprintf(path, sizeof path, "nodes[%zu].schema.fields", i);
                return fail(err, "invalid_registration", path,
                            "event schema must have at least one field");
            }
            if (p->dedupe_key && bv_schema_find(&p->schema, p->dedupe_key, NULL) < 0) {
                snprintf(path, sizeof path, "nodes[%zu].dedupe_key", i);
                return fail(err, "invalid_registration", path,
                            "dedupe_key '%s' is not a field in schema", p->dedupe_key);
            }
            if (p->dedupe_window_ms == 0) {
                snprintf(path, sizeof path, "nodes[%zu].dedupe_window_ms", i);
                return fail(err, "invalid_registration", path,
                            "dedupe_window_ms must be positive (> 0)");
            }
            continue;
        }
        if (p->schema.n == 0 && p->nops == 0) {
            snprintf(path, sizeof path, "nodes[%zu].schema.fields", i);
            return fail(err, "invalid_registration", path,
                        "derivation schema must have at least one field");
        }
        if (p->output_table && !p->has_tpk) {
            snprintf(path, sizeof path, "nodes[%zu].table_primary_key", i);
            return fail(err, "invalid_registration", path,
                        "derivation with output_kind='table' must specify table_primary_key");
        }
        if (p->gb_second != REG_NONE) {
            snprintf(path, sizeof path, "nodes[%zu].ops[%zu]", i, p->gb_second);
            return fail(err, "invalid_registration", path,
                        "a derivation may hold at most one group_by op (the first is at "
                        "ops[%zu])", p->gb);
        }
    }
    return 0;
}

/* Rules 5 and 6. */
static int check_upstreams(const vctx *v, bv_err *err) {
    char path[96];
    const payload *pl = v->pl;
    for (size_t i = 0; i < pl->n; i++) {
        const pnode *p = &pl->v[i];
        for (size_t j = 0; j < p->nup; j++) {
            const char *u = p->up[j];
            if (pay_find(v, u) == REG_NONE && !vis_event(v, u) && !vis_deriv(v, u)) {
                snprintf(path, sizeof path, "nodes[%zu].upstreams[%zu]", i, j);
                return fail(err, "invalid_registration", path,
                            "upstream '%s' is not declared in this payload or in the registry", u);
            }
        }
    }
    for (size_t i = 0; i < pl->n; i++) {
        const pnode *p = &pl->v[i];
        for (size_t j = 0; j < p->nup; j++) {
            size_t k = pay_find(v, p->up[j]);
            /* the order rule binds the request's own nodes; kept ones are ordered by
             * the registry already, and chains compile in dependency order */
            if (k != REG_NONE && k > i && !p->kept && !pl->v[k].kept) {
                snprintf(path, sizeof path, "nodes[%zu].upstreams[%zu]", i, j);
                return fail(err, "invalid_registration", path,
                            "upstream '%s' appears later in payload at nodes[%zu]", p->up[j], k);
            }
        }
    }
    return 0;
}

/* Rule 7: a cycle across the payload and the (visible) registry. Vertices are the
 * derivations; DFS visits payload derivations in payload order, then registered ones
 * in name order, so the reported cycle is deterministic. */
typedef struct cyc_vertex {
    const char *name;
    size_t payload_index;        /* REG_NONE for registered ones */
    size_t nup;
    const char *const *up;
} cyc_vertex;

typedef struct cyc_ctx {
    cyc_vertex *vx;
    size_t n;
    name_pos *ix;                /* (name, vertex) sorted */
    unsigned char *color;        /* 0 white, 1 on the stack, 2 done */
    size_t *stack;
    size_t depth;
} cyc_ctx;

static size_t cyc_find(const cyc_ctx *c, const char *name) {
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(c->ix[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < c->n && strcmp(c->ix[lo].name, name) == 0) return c->ix[lo].i;
    return REG_NONE;
}

/* Returns the stack position where the cycle starts and the vertex closing it, or
 * REG_NONE. */
static size_t cyc_dfs(cyc_ctx *c, size_t u, size_t *closing) {
    c->color[u] = 1;
    c->stack[c->depth++] = u;
    for (size_t j = 0; j < c->vx[u].nup; j++) {
        size_t w = cyc_find(c, c->vx[u].up[j]);
        if (w == REG_NONE) continue;
        if (c->color[w] == 1) {
            for (size_t s = 0; s < c->depth; s++)
                if (c->stack[s] == w) {
                    *closing = w;
                    return s;
                }
        }
        if (c->color[w] == 0) {
            size_t s = cyc_dfs(c, w, closing);
            if (s != REG_NONE) return s;
        }
    }
    c->depth--;
    c->color[u] = 2;
    return REG_NONE;
}

static int check_cycles(const vctx *v, bv_err *err) {
    const payload *pl = v->pl;
    const registry *r = v->r;
    cyc_ctx c;
    memset(&c, 0, sizeof c);
    c.vx = bv_xcalloc(pl->n + r->nderivs, sizeof *c.vx);
    for (size_t i = 0; i < pl->n; i++) {
        if (pl->v[i].is_event || pay_find(v, pl->v[i].name) != i) continue;
        c.vx[c.n++] = (cyc_vertex){pl->v[i].name, i, pl->v[i].nup, pl->v[i].up};
    }
    for (size_t i = 0; i < r->nderivs; i++) {
        const deriv_desc *d = r->der_sorted[i];
        if (pay_find(v, d->name) != REG_NONE || in_removal(v, d->name)) continue;
        c.vx[c.n++] = (cyc_vertex){d->name, REG_NONE, d->nupstreams,
                                   (const char *const *)d->upstreams};
    }
    c.ix = bv_xcalloc(c.n, sizeof *c.ix);
    for (size_t i = 0; i < c.n; i++) c.ix[i] = (name_pos){c.vx[i].name, i};
    qsort(c.ix, c.n, sizeof *c.ix, cmp_name_pos);
    c.color = bv_xcalloc(c.n, 1);
    c.stack = bv_xcalloc(c.n, sizeof *c.stack);
    int rc = 0;
    for (size_t s = 0; s < c.n && rc == 0; s++) {
        if (c.color[s]) continue;
        size_t closing = REG_NONE;
        size_t start = cyc_dfs(&c, s, &closing);
        if (start == REG_NONE) continue;
        bv_buf b;
        bv_buf_init(&b);
        size_t first_payload = REG_NONE;
        for (size_t k = start; k < c.depth; k++) {
            const cyc_vertex *x = &c.vx[c.stack[k]];
            if (first_payload == REG_NONE) first_payload = x->payload_index;
            bv_buf_printf(&b, "%s -> ", x->name);
        }
        bv_buf_puts(&b, c.vx[closing].name);
        char path[64];
        if (first_payload != REG_NONE) snprintf(path, sizeof path, "nodes[%zu]", first_payload);
        else snprintf(path, sizeof path, "nodes");
        rc = fail(err, "invalid_registration", path, "cycle detected: %s", b.data);
        bv_buf_free(&b);
    }
    free(c.vx);
    free(c.ix);
    free(c.color);
    free(c.stack);
    return rc;
}

/* bv_schema_copy without its per-field lookup: the source names are distinct, so the
 * copy is linear (bv_schema_set is a linear scan, which makes a field-by-field copy
 * quadratic in the schema size). */
static void schema_copy_fast(bv_schema *dst, const bv_schema *src) {
    bv_schema_init(dst);
    if (src->n) {
        dst->names = bv_xcalloc(src->n, sizeof *dst->names);
        dst->types = bv_xcalloc(src->n, sizeof *dst->types);
        for (size_t i = 0; i < src->n; i++) {
            dst->names[i] = bv_xstrdup(src->names[i]);
            dst->types[i] = src->types[i];
        }
        dst->n = dst->cap = src->n;
    }
    if (src->nopt) {
        dst->optional = bv_xcalloc(src->nopt, sizeof *dst->optional);
        for (size_t i = 0; i < src->nopt; i++) dst->optional[i] = bv_xstrdup(src->optional[i]);
        dst->nopt = src->nopt;
    }
}

typedef struct field_pos {
    const char *name;
    bv_wtype type;
    size_t order;
} field_pos;

static int cmp_field_pos(const void *a, const void *b) {
    const field_pos *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return (x->order > y->order) - (x->order < y->order);
}

static int cmp_field_order(const void *a, const void *b) {
    const field_pos *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

/* The union of several schemas with bv_schema_set semantics (a later type wins, the
 * first position stays), in O(T log T) for T fields in total. */
static void schema_union(bv_schema *dst, const bv_schema *const *src, size_t k) {
    size_t total = 0, nopt = 0, n = 0;
    for (size_t i = 0; i < k; i++) {
        total += src[i]->n;
        nopt += src[i]->nopt;
    }
    field_pos *f = bv_xcalloc(total, sizeof *f);
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < src[i]->n; j++, n++) f[n] = (field_pos){src[i]->names[j], src[i]->types[j], n};
    qsort(f, n, sizeof *f, cmp_field_pos);
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i + 1;
        while (e < n && !strcmp(f[e].name, f[i].name)) e++;
        f[m++] = (field_pos){f[i].name, f[e - 1].type, f[i].order};
        i = e;
    }
    qsort(f, m, sizeof *f, cmp_field_order);
    bv_schema_init(dst);
    dst->names = bv_xcalloc(m, sizeof *dst->names);
    dst->types = bv_xcalloc(m, sizeof *dst->types);
    for (size_t i = 0; i < m; i++) {
        dst->names[i] = bv_xstrdup(f[i].name);
        dst->types[i] = f[i].type;
    }
    dst->n = dst->cap = m;
    const char **o = bv_xcalloc(nopt, sizeof *o);
    n = 0;
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < src[i]->nopt; j++) o[n++] = src[i]->optional[j];
    qsort(o, n, sizeof *o, cmp_cstr);
    dst->optional = bv_xcalloc(n, sizeof *dst->optional);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(o[i], o[i - 1]) != 0) dst->optional[dst->nopt++] = bv_xstrdup(o[i]);
    free(o);
    free(f);
}

/* Rule 8: compile every derivation's chain over the union of its upstream schemas.
 * The input of one chain is capped at REG_MAX_FIELDS and the total number of fields
 * entering chains at REG_MAX_CHAIN_INPUT, so that a small body cannot buy minutes of
 * schema propagation (schema copies through value.c are quadratic in the field count). */
static int check_chains_in(vctx *v, const size_t *order, bv_err *err);

/* Depth-first: payload upstreams of node i before i. Cycles were rejected before. */
static void chain_visit(const vctx *v, size_t i, bool *seen, size_t *order, size_t *n) {
    seen[i] = true;
    const pnode *p = &v->pl->v[i];
    for (size_t j = 0; j < p->nup; j++) {
        size_t k = pay_find(v, p->up[j]);
        if (k != REG_NONE && !seen[k]) chain_visit(v, k, seen, order, n);
    }
    order[(*n)++] = i;
}

static int check_chains(vctx *v, bv_err *err) {
    payload *pl = v->pl;
    /* Compile in dependency order so a derivation reads its upstreams' compiled output
     * schema. With the order rule (replace mode) this is payload order; in merge mode
     * kept descriptors and named ones may interleave. */
    bool *seen = bv_xcalloc(pl->n ? pl->n : 1, sizeof *seen);
    size_t *order = bv_xcalloc(pl->n ? pl->n : 1, sizeof *order);
    size_t norder = 0;
    for (size_t i = 0; i < pl->n; i++)
        if (!seen[i]) chain_visit(v, i, seen, order, &norder);
    free(seen);
    int rc = check_chains_in(v, order, err);
    free(order);
    return rc;
}

static int check_chains_in(vctx *v, const size_t *order, bv_err *err) {
    payload *pl = v->pl;
    for (size_t oi = 0; oi < pl->n; oi++) {
        size_t i = order[oi];
        pnode *p = &pl->v[i];
        if (p->is_event) continue;
        const bv_schema **ups = bv_xcalloc(p->nup, sizeof *ups);
        size_t k = 0;
        for (size_t j = 0; j < p->nup; j++) {
            const bv_schema *s = upstream_schema(v, p->up[j]);
            bool seen = false;
            for (size_t x = 0; x < k && !seen; x++) seen = ups[x] == s;
            if (s && !seen) ups[k++] = s;
        }
        bv_schema in;
        if (k == 1) schema_copy_fast(&in, ups[0]);
        else schema_union(&in, ups, k);
        free(ups);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "nodes[%zu]", i);
        if (in.n > REG_MAX_FIELDS) {
            size_t nin = in.n;
            bv_schema_free(&in);
            return fail(err, "invalid_registration", prefix,
                        "the union of the upstream schemas has %zu fields; at most %d are "
                        "accepted", nin, REG_MAX_FIELDS);
        }
        v->work += in.n + 1;
        if (v->work > REG_MAX_CHAIN_INPUT) {
            bv_schema_free(&in);
            return fail(err, "invalid_registration", prefix,
                        "payload too large to validate: derivation inputs exceed %d fields in "
                        "total", REG_MAX_CHAIN_INPUT);
        }
        bv_schema out;
        bv_schema_init(&out);
        chain *c = NULL;
        int rc = chain_compile(json_object_get(p->node, "ops"), &in, prefix, &c, &out, err);
        bv_schema_free(&in);
        if (rc < 0) {
            if (!err->code[0]) bv_err_set(err, "invalid_expression", prefix, "invalid op chain");
            return -1;
        }
        p->prefix = c;
        p->chain_out = out;
        p->chained = true;
    }
    return 0;
}

static bool is_key(const json_t *keys, const char *name) {
    for (size_t k = 0; k < json_array_size(keys); k++)
        if (!strcmp(json_string_value(json_array_get(keys, k)), name)) return true;
    return false;
}

/* The reference names the offending member of a feature spec in the error path
 * (".op", ".params.field", ".params.window", ...); feature_compile reports the feature
 * itself. Append the member for the codes whose member is unambiguous. The `n` of
 * first_n/last_n/lag/time_since_last_n shares aggregation_unknown_field with `field`;
 * it is told apart by the op's field rule (op.h flags), and left without a suffix. */
static void feature_err_member(bv_err *err, const json_t *spec, const bv_schema *schema,
                               const char *path) {
    static const struct { const char *code, *member; } members[] = {
        {"aggregation_unknown_op", ".op"},
        {"aggregation_invalid_window", ".params.window"},
        {"window_not_supported", ".params.window"},
        {"aggregation_invalid_where", ".params.where"},
        {"invalid_percentile_q", ".params.q"},
        {"invalid_top_k_k", ".params.k"},
        {"invalid_bloom_fpr", ".params.target_fpr"},
    };
    if (strcmp(err->path, path) != 0) return;
    const char *member = NULL;
    for (size_t i = 0; i < sizeof members / sizeof members[0] && !member; i++)
        if (!strcmp(err->code, members[i].code)) member = members[i].member;
    if (!member && !strcmp(err->code, "aggregation_unknown_field")) {
        const char *op = json_string_value(json_object_get(spec, "op"));
        const struct op_vtable *vt = op ? op_lookup(op) : NULL;
        const json_t *params = json_object_get(spec, "params");
        const char *field = json_string_value(json_object_get(params, "field"));
        unsigned fl = vt ? vt->flags : 0;
        if ((!field && (fl & OPF_FIELD_REQUIRED)) ||
            (field && (fl & (OPF_FIELD_REQUIRED | OPF_FIELD_CHECKED)) &&
             bv_schema_find(schema, field, NULL) < 0))
            member = ".params.field";
    }
    size_t n = strlen(err->path), m = member ? strlen(member) : 0;
    if (member && n + m < sizeof err->path) memcpy(err->path + n, member, m + 1);
}

/*
 * Derivation chains at push time. The reference never executes event
 * derivations, so a table over one never fires. Here a table whose upstreams[0] is an
 * event derivation D (possibly D -> D2 -> ... -> root event E, always following
 * upstreams[0]) is fed by pushes of E: its prefix chain becomes D_n.ops ++ ... ++
 * D.ops ++ the table's own ops (group_by skipped), compiled against E's schema, and
 * agg_table.source is E. The table's keys and features were already checked against
 * the schema propagated through that same path (check_chains), so the composed chain
 * only fails to compile when an event derivation on the path has several upstreams
 * and reads a field that only a later upstream has; that is reported here.
 * An event derivation on the path that is a table or holds a group_by, or one with no
 * upstream, is rejected: such an aggregation could never be fed.
 * Replaces p->prefix and p->chain_out and sets p->root. Does nothing when upstreams[0]
 * is an event, or is itself a table (check_aggregation reports that).
 */
static int compose_through_derivations(vctx *v, size_t i, bv_err *err) {
    pnode *p = &v->pl->v[i];
    char path[96];
    snprintf(path, sizeof path, "nodes[%zu].upstreams[0]", i);
    const char *u = p->up[0];
    const json_t **hops = NULL;
    size_t nhops = 0, nops = 0;
    size_t limit = v->pl->n + v->r->nderivs + 1;   /* acyclic (check_cycles): a bound */
    const bv_schema *root_schema = NULL;
    const char *root = NULL;
    json_t *arr = NULL;
    int rc = 0;
    for (;;) {
        size_t k = pay_find(v, u);
        const pnode *q = k != REG_NONE ? &v->pl->v[k] : NULL;
        const ev_desc *e = q ? NULL : vis_event(v, u);
        const deriv_desc *d = (q || e) ? NULL : vis_deriv(v, u);
        if ((q && q->is_event) || e) {
            root = u;
            root_schema = q ? &q->schema : &e->schema;
            break;
        }
        if (!q && !d) {           /* check_upstreams saw every name; a hop's upstream too */
            rc = fail(err, "invalid_registration", path,
                      "aggregation source '%s' derives from '%s', which is not registered",
                      p->up[0], u);
            goto out;
        }
        bool table = q ? (q->output_table || q->gb != REG_NONE) : (d->output_table || d->table);
        if (table) {
            if (nhops == 0) goto out;
            rc = fail(err, "aggregation_on_table_not_supported", path,
                      "aggregation source '%s' derives from '%s', which is a table; only events "
                      "and event derivations can feed an aggregation", p->up[0], u);
            goto out;
        }
        size_t nup = q ? q->nup : d->nupstreams;
        if (nup == 0) {
            rc = fail(err, "invalid_registration", path,
                      "aggregation source '%s' does not derive from an event: '%s' has no "
                      "upstream", p->up[0], u);
            goto out;
        }
        if (nhops == limit) {
            rc = fail(err, "invalid_registration", path, "cycle detected through '%s'", u);
            goto out;
        }
        hops = bv_xrealloc(hops, (nhops + 1) * sizeof *hops);
        hops[nhops] = json_object_get(q ? q->node : d->node, "ops");
        nops += json_array_size(hops[nhops]);
        nhops++;
        u = q ? q->up[0] : d->upstreams[0];
    }
    if (nhops == 0) goto out;
    const json_t *own = json_object_get(p->node, "ops");
    nops += json_array_size(own);
    if (nops > REG_MAX_COMPOSED_OPS) {
        rc = fail(err, "invalid_registration", path,
                  "the chain from event '%s' through '%s' has %zu ops; at most %d are accepted",
                  root, p->up[0], nops, REG_MAX_COMPOSED_OPS);
        goto out;
    }
    v->work += root_schema->n + 1;
    if (v->work > REG_MAX_CHAIN_INPUT) {
        rc = fail(err, "invalid_registration", path,
                  "payload too large to validate: derivation inputs exceed %d fields in total",
                  REG_MAX_CHAIN_INPUT);
        goto out;
    }
    arr = jnew(json_array());
    for (size_t h = nhops; h-- > 0;)
        for (size_t j = 0; j < json_array_size(hops[h]); j++)
            if (json_array_append(arr, json_array_get(hops[h], j)) < 0) abort();
    for (size_t j = 0; j < json_array_size(own); j++)
        if (json_array_append(arr, json_array_get(own, j)) < 0) abort();
    char prefix[64];
    snprintf(prefix, sizeof prefix, "nodes[%zu]", i);
    bv_schema out;
    bv_schema_init(&out);
    chain *c = NULL;
    bv_err cerr;
    bv_err_clear(&cerr);
    if (chain_compile(arr, root_schema, prefix, &c, &out, &cerr) < 0) {
        bv_schema_free(&out);
        rc = fail(err, cerr.code[0] ? cerr.code : "invalid_expression", path,
                  "the chain from event '%s' through '%s' does not apply to '%s': %s", root,
                  p->up[0], root, cerr.reason[0] ? cerr.reason : "invalid op chain");
        goto out;
    }
    if (p->prefix) chain_free(p->prefix);
    p->prefix = c;
    bv_schema_free(&p->chain_out);
    p->chain_out = out;
    free(p->root);
    p->root = bv_xstrdup(root);
out:
    json_decref(arr);
    free(hops);
    return rc;
}

/* Rule 9 for one derivation with a group_by: group keys, then feature_compile's steps 2-12. */
static int check_aggregation(vctx *v, size_t i, bv_err *err) {
    char path[512];
    pnode *p = &v->pl->v[i];
    if (p->nup == 0) {
        snprintf(path, sizeof path, "nodes[%zu].upstreams", i);
        return fail(err, "aggregation_on_table_not_supported", path,
                    "aggregation derivation must have at least one upstream");
    }
    if (upstream_is_table(v, p->up[0])) {
        snprintf(path, sizeof path, "nodes[%zu].upstreams[0]", i);
        return fail(err, "aggregation_on_table_not_supported", path,
                    "aggregation source '%s' is a table; aggregating a table is not supported",
                    p->up[0]);
    }
    if (compose_through_derivations(v, i, err) < 0) return -1;
    const json_t *gb = json_array_get(json_object_get(p->node, "ops"), p->gb);
    const json_t *keys = json_object_get(gb, "keys");
    const json_t *agg = json_object_get(gb, "agg");
    const bv_schema *schema = &p->chain_out;
    for (size_t k = 0; k < json_array_size(keys); k++) {
        const char *key = json_string_value(json_array_get(keys, k));
        bv_wtype t;
        snprintf(path, sizeof path, "nodes[%zu].ops[%zu].group_by[%zu]", i, p->gb, k);
        if (bv_schema_find(schema, key, &t) < 0)
            return fail(err, "aggregation_unknown_field", path,
                        "group_by key '%s' does not exist in upstream schema", key);
        if (t == WT_F64)
            return fail(err, "aggregation_unknown_field", path,
                        "group_by key '%s' cannot be float-typed; cast to str/int/bool first",
                        key);
    }
    size_t nf = json_object_size(agg), k = 0;
    const char **names = bv_xcalloc(nf, sizeof *names);
    const char *f;
    json_t *spec;
    json_object_foreach((json_t *)agg, f, spec) names[k++] = f;
    qsort(names, nf, sizeof *names, cmp_cstr);
    p->feats = bv_xcalloc(nf, sizeof *p->feats);
    p->feat_moved = bv_xcalloc(nf, sizeof *p->feat_moved);
    int rc = 0;
    for (k = 0; k < nf && rc == 0; k++) {
        spec = json_object_get(agg, names[k]);
        const char *op = json_string_value(json_object_get(spec, "op"));
        snprintf(path, sizeof path, "nodes[%zu].ops[%zu].agg.%s", i, p->gb, names[k]);
        /* Step 2 (unknown op) precedes step 3 (group-key collision): let the compiler
         * report an unknown op first. */
        if (!feature_op_known(op)) {
            feature tmp;
            memset(&tmp, 0, sizeof tmp);
            if (feature_compile(&tmp, names[k], spec, schema, path, err) == 0) {
                feature_release(&tmp);
                rc = fail(err, "aggregation_unknown_op", path, "unknown aggregation op '%s'", op);
            } else {
                rc = -1;
            }
            feature_err_member(err, spec, schema, path);
            break;
        }
        if (is_key(keys, names[k])) {
            rc = fail(err, "aggregation_group_key_collides_with_feature", path,
                      "feature name '%s' collides with a group_by key", names[k]);
            break;
        }
        if (feature_compile(&p->feats[k], names[k], spec, schema, path, err) < 0) {
            if (!err->code[0]) bv_err_set(err, "invalid_registration", path, "invalid aggregation");
            feature_err_member(err, spec, schema, path);
            rc = -1;
            break;
        }
        p->nfeat = k + 1;
    }
    free(names);
    return rc;
}

/* Rule 9, last step: feature names are unique across every table. */
typedef struct feat_use {
    const char *feature, *table;
    size_t pos;                  /* iteration order: payload order, then feature name */
} feat_use;

static int cmp_feat_use(const void *a, const void *b) {
    const feat_use *x = a, *y = b;
    int c = strcmp(x->feature, y->feature);
    if (c) return c;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int check_feature_names(const vctx *v, bv_err *err) {
    const payload *pl = v->pl;
    size_t total = 0, n = 0;
    for (size_t i = 0; i < pl->n; i++) total += pl->v[i].nfeat;
    feat_use *u = bv_xcalloc(total, sizeof *u);
    for (size_t i = 0; i < pl->n; i++)
        for (size_t k = 0; k < pl->v[i].nfeat; k++, n++)
            u[n] = (feat_use){pl->v[i].feats[k].name, pl->v[i].name, n};
    qsort(u, n, sizeof *u, cmp_feat_use);
    /* Within the payload: report the earliest (in iteration order) use of a name that
     * an earlier table already defined. */
    size_t best = REG_NONE, best_first = 0;
    for (size_t s = 0; s < n;) {
        size_t e = s + 1;
        while (e < n && !strcmp(u[e].feature, u[s].feature)) e++;
        for (size_t k = s + 1; k < e; k++)
            if (strcmp(u[k].table, u[s].table) != 0) {
                if (best == REG_NONE || u[k].pos < u[best].pos) {
                    best = k;
                    best_first = s;
                }
                break;
            }
        s = e;
    }
    int rc = 0;
    char path[512];
    if (best != REG_NONE) {
        snprintf(path, sizeof path, "nodes.%s.features.%s", u[best].table, u[best].feature);
        rc = fail(err, "aggregation_feature_name_collision_across_aggregations", path,
                  "feature name '%s' is already defined by aggregation '%s'; feature names "
                  "must be globally unique across aggregations", u[best].feature,
                  u[best_first].table);
    }
    /* Against registered tables that stay (not removed, not redefined by the payload). */
    for (size_t k = 0; k < n && rc == 0; k++) {
        size_t slot;
        const agg_table *t = registry_feature_owner(v->r, u[k].feature, &slot);
        if (!t || !strcmp(t->name, u[k].table) || in_removal(v, t->name) ||
            pay_find(v, t->name) != REG_NONE)
            continue;
        snprintf(path, sizeof path, "nodes.%s.features.%s", u[k].table, u[k].feature);
        rc = fail(err, "aggregation_feature_name_collision_across_aggregations", path,
                  "feature name '%s' is already registered by aggregation '%s'; feature names "
                  "must be globally unique across aggregations", u[k].feature, t->name);
    }
    free(u);
    return rc;
}

/* Rules 1-9, first error wins. On success every derivation has its chain, its
 * propagated schema and (tables) its compiled features. */
static int validate(const registry *r, payload *pl, char *const *removal, size_t nremoval,
                    bv_err *err) {
    vctx v = {r, removal, nremoval, pl, index_payload(pl), 0};
    int rc = check_nodes(&v, err);
    if (rc == 0) rc = check_upstreams(&v, err);
    if (rc == 0) rc = check_cycles(&v, err);
    if (rc == 0) rc = check_chains(&v, err);
    for (size_t i = 0; i < pl->n && rc == 0; i++)
        if (!pl->v[i].is_event && pl->v[i].gb != REG_NONE) rc = check_aggregation(&v, i, err);
    if (rc == 0) rc = check_feature_names(&v, err);
    free(v.pix);
    return rc;
}

/* ------------------------------------------------------------------------------------
 * Storage: descriptors, tables, indexes
 * ---------------------------------------------------------------------------------- */

static ev_desc *find_event(const registry *r, const char *name) {
    size_t lo = 0, hi = r->nev_sorted;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->ev_sorted[mid]->name, name);
        if (c == 0) return r->ev_sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static deriv_desc *find_deriv(const registry *r, const char *name) {
    size_t lo = 0, hi = r->nder_sorted;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->der_sorted[mid]->name, name);
        if (c == 0) return r->der_sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int cmp_ev_name(const void *a, const void *b) {
    return strcmp((*(ev_desc *const *)a)->name, (*(ev_desc *const *)b)->name);
}

static int cmp_der_name(const void *a, const void *b) {
    return strcmp((*(deriv_desc *const *)a)->name, (*(deriv_desc *const *)b)->name);
}

static int cmp_feat_ref(const void *a, const void *b) {
    return strcmp(((const feat_ref *)a)->name, ((const feat_ref *)b)->name);
}

typedef struct src_pos {
    agg_table *t;
    size_t order;
} src_pos;

static int cmp_src_pos(const void *a, const void *b) {
    const src_pos *x = a, *y = b;
    int c = strcmp(x->t->source, y->t->source);
    if (c) return c;
    return (x->order > y->order) - (x->order < y->order);
}

/* Rebuild every derived index from the two registration-order arrays. */
static void reindex(registry *r) {
    free(r->ev_sorted);
    free(r->der_sorted);
    free(r->tables);
    free(r->src_tables);
    free(r->srcs);
    free(r->feats);
    r->ev_sorted = bv_xcalloc(r->nevents, sizeof *r->ev_sorted);
    if (r->nevents) memcpy(r->ev_sorted, r->events, r->nevents * sizeof *r->ev_sorted);
    qsort(r->ev_sorted, r->nevents, sizeof *r->ev_sorted, cmp_ev_name);
    r->der_sorted = bv_xcalloc(r->nderivs, sizeof *r->der_sorted);
    if (r->nderivs) memcpy(r->der_sorted, r->derivs, r->nderivs * sizeof *r->der_sorted);
    qsort(r->der_sorted, r->nderivs, sizeof *r->der_sorted, cmp_der_name);
    r->nev_sorted = r->nevents;
    r->nder_sorted = r->nderivs;

    r->tables = bv_xcalloc(r->nderivs, sizeof *r->tables);
    r->ntables = 0;
    r->nfeats = 0;
    for (size_t i = 0; i < r->nderivs; i++)
        if (r->derivs[i]->table) {
            r->tables[r->ntables++] = r->derivs[i]->table;
            r->nfeats += r->derivs[i]->table->nfeatures;
        }

    src_pos *sp = bv_xcalloc(r->ntables, sizeof *sp);
    for (size_t i = 0; i < r->ntables; i++) sp[i] = (src_pos){r->tables[i], i};
    qsort(sp, r->ntables, sizeof *sp, cmp_src_pos);
    r->src_tables = bv_xcalloc(r->ntables, sizeof *r->src_tables);
    r->srcs = bv_xcalloc(r->ntables, sizeof *r->srcs);
    r->nsrcs = 0;
    for (size_t i = 0; i < r->ntables; i++) {
        r->src_tables[i] = sp[i].t;
        if (r->nsrcs == 0 || strcmp(r->srcs[r->nsrcs - 1].source, sp[i].t->source) != 0)
            r->srcs[r->nsrcs++] = (src_ref){sp[i].t->source, i, 0};
        r->srcs[r->nsrcs - 1].n++;
    }
    free(sp);

    r->feats = bv_xcalloc(r->nfeats, sizeof *r->feats);
    size_t k = 0;
    for (size_t i = 0; i < r->ntables; i++)
        for (size_t s = 0; s < r->tables[i]->nfeatures; s++)
            r->feats[k++] = (feat_ref){r->tables[i]->features[s].name, r->tables[i], s};
    qsort(r->feats, r->nfeats, sizeof *r->feats, cmp_feat_ref);
}

/* Offsets in slot order (each aligned to 8, so appending slots never moves the
 * existing ones), the row size and the by-name output order. */
static void table_layout(agg_table *t) {
    t->offsets = bv_xrealloc(t->offsets, (t->nfeatures ? t->nfeatures : 1) * sizeof *t->offsets);
    t->by_name = bv_xrealloc(t->by_name, (t->nfeatures ? t->nfeatures : 1) * sizeof *t->by_name);
    size_t off = 0;
    for (size_t i = 0; i < t->nfeatures; i++) {
        off = align8(off);
        t->offsets[i] = off;
        off += t->features[i].state_size;
    }
    t->row_size = align8(off);
    name_pos *np = bv_xcalloc(t->nfeatures, sizeof *np);
    for (size_t i = 0; i < t->nfeatures; i++) np[i] = (name_pos){t->features[i].name, i};
    qsort(np, t->nfeatures, sizeof *np, cmp_name_pos);
    for (size_t i = 0; i < t->nfeatures; i++) t->by_name[i] = np[i].i;
    free(np);
}

/* What one version's shell of a table owns alone (registry.h "Versions"): its arrays and
 * strings, not the feature states, the chain or the store it may share with its
 * predecessor or successor. */
static void shell_free_own(agg_table *t) {
    free(t->features);
    free(t->offsets);
    free(t->by_name);
    for (size_t i = 0; i < t->nkeys; i++) free(t->keys[i]);
    free(t->keys);
    free(t->name);
    free(t->source);
    free(t);
}

static void table_free(agg_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nfeatures; i++) feature_release(&t->features[i]);
    if (t->prefix) chain_free(t->prefix);
    shell_free_own(t);
}

static void event_free(ev_desc *e) {
    free(e->name);
    bv_schema_free(&e->schema);
    free(e->prefix_fp);
    free(e->name_lens);
    free(e->dedupe_key);
    json_decref(e->node);
    free(e);
}

/* A derivation without its table (the caller disposes of that: shell_discard or
 * shell_retire). */
static void deriv_free_own(deriv_desc *d) {
    free(d->name);
    for (size_t i = 0; i < d->nupstreams; i++) free(d->upstreams[i]);
    free(d->upstreams);
    bv_schema_free(&d->schema);
    json_decref(d->node);
    free(d);
}

static void hook_added(const reg_hooks *h, agg_table *t) {
    if (h && h->table_added) h->table_added(h->ctx, t);
}

static void hook_removed(const reg_hooks *h, agg_table *t) {
    if (h && h->table_removed) h->table_removed(h->ctx, t);
}

static void hook_widened(const reg_hooks *h, agg_table *t, size_t old_n) {
    if (h && h->table_widened) h->table_widened(h->ctx, t, old_n);
}

/* A table leaving the version being built (removed, reset, or the whole build
 * discarded). With a predecessor (the same table in the version this one was built
 * from), only what this shell added goes: its arrays, the feature states it appended,
 * its chain if it replaced the predecessor's; the predecessor becomes the last of its
 * line, freed with its store when its own version is (shell_retire). A table this build
 * created goes at once, store and all. */
static void shell_discard(agg_table *n, const reg_hooks *hooks) {
    agg_table *p = n->pred;
    if (!p) {
        hook_removed(hooks, n);
        table_free(n);
        return;
    }
    p->succ = NULL;
    for (size_t i = p->nfeatures; i < n->nfeatures; i++) feature_release(&n->features[i]);
    if (n->prefix != p->prefix) chain_free(n->prefix);
    shell_free_own(n);
}

/* A table of a version being freed (no reader and no queued part can reach it). If the
 * table goes on in a later version, only this shell's arrays (and its chain, if the
 * successor has another) go; the last shell of a table takes its store (the hook) and
 * its feature states with it. */
static void shell_retire(agg_table *p, const reg_hooks *hooks) {
    agg_table *n = p->succ;
    if (!n) {
        hook_removed(hooks, p);
        table_free(p);
        return;
    }
    n->pred = NULL;
    if (p->prefix != n->prefix) chain_free(p->prefix);
    shell_free_own(p);
}

static void deriv_discard(deriv_desc *d, const reg_hooks *hooks) {
    if (d->table) shell_discard(d->table, hooks);
    deriv_free_own(d);
}

static void push_event(registry *r, ev_desc *e) {
    if (r->nevents == r->cap_events) {
        r->cap_events = r->cap_events ? r->cap_events * 2 : 16;
        r->events = bv_xrealloc(r->events, r->cap_events * sizeof *r->events);
    }
    r->events[r->nevents++] = e;
}

static void push_deriv(registry *r, deriv_desc *d) {
    if (r->nderivs == r->cap_derivs) {
        r->cap_derivs = r->cap_derivs ? r->cap_derivs * 2 : 16;
        r->derivs = bv_xrealloc(r->derivs, r->cap_derivs * sizeof *r->derivs);
    }
    r->derivs[r->nderivs++] = d;
}

static bool name_in_sorted(char *const *names, size_t n, const char *name) {
    return n && bsearch(&name, names, n, sizeof *names, cmp_cstr) != NULL;
}

/* Drop every descriptor named in `names` (sorted); table hooks in registration order. */
static void remove_names(registry *r, char *const *names, size_t n, const reg_hooks *hooks) {
    size_t w = 0;
    for (size_t i = 0; i < r->nevents; i++) {
        if (name_in_sorted(names, n, r->events[i]->name)) event_free(r->events[i]);
        else r->events[w++] = r->events[i];
    }
    r->nevents = w;
    w = 0;
    for (size_t i = 0; i < r->nderivs; i++) {
        deriv_desc *d = r->derivs[i];
        if (name_in_sorted(names, n, d->name)) deriv_discard(d, hooks);
        else r->derivs[w++] = d;
    }
    r->nderivs = w;
}

/* What WAL event records need of e's schema (evrec.h): the fingerprints of its prefixes
 * and its name lengths. */
static void event_schema_derived(ev_desc *e) {
    size_t n = e->schema.n;
    free(e->prefix_fp);
    free(e->name_lens);
    e->prefix_fp = bv_xcalloc(n + 1, sizeof *e->prefix_fp);
    e->name_lens = bv_xcalloc(n ? n : 1, sizeof *e->name_lens);
    for (size_t i = 0; i < n; i++) {
        e->prefix_fp[i + 1] = bv_schema_fingerprint_extend(e->prefix_fp[i], e->schema.names[i], e->schema.types[i]);
        e->name_lens[i] = (uint32_t)strlen(e->schema.names[i]);
    }
}

static ev_desc *event_from(pnode *p, uint64_t version) {
    ev_desc *e = bv_xcalloc(1, sizeof *e);
    e->name = bv_xstrdup(p->name);
    e->schema = p->schema;
    event_schema_derived(e);
    bv_schema_init(&p->schema);
    e->dedupe_key = p->dedupe_key ? bv_xstrdup(p->dedupe_key) : NULL;
    e->dedupe_window_ms = p->dedupe_window_ms;
    e->keep_events_for_ms = p->keep_ms;
    e->cold_after_ms = p->cold_ms;
    e->registered_at_version = version;
    e->node = json_incref(p->node);
    return e;
}

static agg_table *table_from(registry *r, pnode *p) {
    agg_table *t = bv_xcalloc(1, sizeof *t);
    t->id = r->next_table_id++;
    t->name = bv_xstrdup(p->name);
    t->source = bv_xstrdup(p->root ? p->root : p->up[0]);
    const json_t *keys = json_object_get(json_array_get(json_object_get(p->node, "ops"), p->gb), "keys");
    t->nkeys = json_array_size(keys);
    t->keys = bv_xcalloc(t->nkeys, sizeof *t->keys);
    for (size_t k = 0; k < t->nkeys; k++) t->keys[k] = bv_xstrdup(json_string_value(json_array_get(keys, k)));
    t->prefix = p->prefix;
    p->prefix = NULL;
    t->features = p->feats ? p->feats : bv_xcalloc(1, sizeof *t->features);
    t->nfeatures = p->nfeat;
    p->feats = NULL;
    p->nfeat = 0;
    free(p->feat_moved);
    p->feat_moved = NULL;
    table_layout(t);
    return t;
}

static deriv_desc *deriv_from(registry *r, pnode *p, uint64_t version) {
    deriv_desc *d = bv_xcalloc(1, sizeof *d);
    d->name = bv_xstrdup(p->name);
    d->output_table = p->output_table;
    d->nupstreams = p->nup;
    d->upstreams = bv_xcalloc(p->nup, sizeof *d->upstreams);
    for (size_t i = 0; i < p->nup; i++) d->upstreams[i] = bv_xstrdup(p->up[i]);
    schema_copy_fast(&d->schema, pnode_exposed(p));
    if (p->gb != REG_NONE) d->table = table_from(r, p);
    d->registered_at_version = version;
    d->node = json_incref(p->node);
    return d;
}

static void replace_node(json_t **slot, json_t *node) {
    json_decref(*slot);
    *slot = json_incref(node);
}

/* In-place additive change of a kept event: the diff's new_field entries. */
static void widen_event(ev_desc *e, pnode *p, const reg_diff *diff) {
    bool changed = false;
    for (size_t i = 0; i < diff->nadditive; i++) {
        const diff_entry *x = &diff->additive[i];
        if (x->cls != DIFF_NEW_FIELD || strcmp(x->s1, e->name) != 0) continue;
        int t = bv_wtype_parse(x->s3);
        if (t < 0) abort();   /* the parser only lets wire types through */
        bv_schema_set(&e->schema, x->s2, (bv_wtype)t);
        changed = true;
    }
    if (changed) {
        event_schema_derived(e);
        replace_node(&e->node, p->node);
    }
}

static int cmp_feature_key(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const feature *)elem)->name);
}

/* A kept derivation: take the freshly compiled chain and schema (an upstream may have
 * widened), append the diff's new_agg features. Returns true when slots were appended
 * (*old_n = slot count before). In a version being built the table is this version's own
 * shell: its arrays are its own to replace, the chain and the feature states it shares
 * with its predecessor are left alone (registry.h "Versions"). */
static bool update_kept_deriv(deriv_desc *d, pnode *p, const reg_diff *diff, size_t *old_n) {
    bv_schema_free(&d->schema);
    schema_copy_fast(&d->schema, pnode_exposed(p));
    agg_table *t = d->table;
    if (!t) return false;
    if (p->prefix) {
        if (!t->pred || t->prefix != t->pred->prefix) chain_free(t->prefix);
        t->prefix = p->prefix;
        p->prefix = NULL;
    }
    /* The root only changes with an upstream change, which the diff classifies as
     * destructive (the table is then replaced, not kept); follow it anyway. */
    const char *root = p->root ? p->root : p->up[0];
    if (strcmp(t->source, root) != 0) {
        free(t->source);
        t->source = bv_xstrdup(root);
    }
    *old_n = t->nfeatures;
    for (size_t i = 0; i < diff->nadditive; i++) {
        const diff_entry *x = &diff->additive[i];
        if (x->cls != DIFF_NEW_AGG || strcmp(x->s1, d->name) != 0) continue;
        feature *f = p->nfeat ? bsearch(x->s2, p->feats, p->nfeat, sizeof *p->feats, cmp_feature_key) : NULL;
        if (!f) abort();      /* validation compiled every payload feature */
        size_t k = (size_t)(f - p->feats);
        feature *grown = bv_xcalloc(t->nfeatures + 1, sizeof *grown);
        if (t->nfeatures) memcpy(grown, t->features, t->nfeatures * sizeof *grown);
        free(t->features);
        t->features = grown;
        t->features[t->nfeatures++] = *f;
        p->feat_moved[k] = true;
    }
    if (t->nfeatures == *old_n) return false;
    table_layout(t);
    replace_node(&d->node, p->node);
    return true;
}

/* ------------------------------------------------------------------------------------
 * Response bodies (keys in ascending byte order, the wire contract)
 * ---------------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s, or 0 (RFC 3629 table). */
static size_t utf8_seq(const unsigned char *s) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

/* Error texts may quote raw request bytes (jansson's messages) or be cut mid-character
 * by the fixed bv_err buffers; the body must stay valid UTF-8, so every byte that does
 * not start a well-formed sequence becomes '?'. */
/* text with every invalid UTF-8 byte replaced by '?' (error texts quote client input) */
static void clean_utf8(const char *text, char *buf, size_t cap) {
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (*s && n + 4 < cap) {
        size_t k = utf8_seq(s);
        if (k == 0) {
            buf[n++] = '?';
            s++;
            continue;
        }
        memcpy(buf + n, s, k);
        n += k;
        s += k;
    }
    buf[n] = 0;
}

static void write_clean_str(jsonw *w, const char *text) {
    char buf[sizeof ((bv_err *)0)->reason];
    clean_utf8(text, buf, sizeof buf);
    jsonw_str(w, buf);
}

static void write_err_obj(jsonw *w, const bv_err *e) {
    jsonw_obj_begin(w);
    jsonw_key(w, "code");
    write_clean_str(w, e->code);
    jsonw_key(w, "path");
    write_clean_str(w, e->path);
    jsonw_key(w, "reason");
    write_clean_str(w, e->reason);
    jsonw_obj_end(w);
}

static void body_error(bv_buf *out, const bv_err *e, uint64_t version) {
    char code[sizeof e->code], path[sizeof e->path], reason[sizeof e->reason];
    clean_utf8(e->code, code, sizeof code);
    clean_utf8(e->path, path, sizeof path);
    clean_utf8(e->reason, reason, sizeof reason);
    jsonw_member m[] = { { .key = "path", .str = path }, { .key = "reason", .str = reason } };
    jsonw_error(out, code, m, 2, true, version);
}

static void body_force_required(bv_buf *out, const reg_diff *d, uint64_t version) {
    bv_buf diff;
    bv_buf_init(&diff);
    jsonw w;
    jsonw_init(&w, &diff);
    diff_write_json(d, &w);
    bv_buf_putc(&diff, 0);
    jsonw_member m[] = { { .key = "diff", .raw = diff.data },
                         { .key = "reason", .str = "Destructive registry change requires force=true. See diff for details." } };
    jsonw_error(out, "force_required", m, 2, true, version);
    bv_buf_free(&diff);
}
static void body_dry_run(bv_buf *out, const reg_diff *d, const bv_err *verr) {
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "diff");
    diff_write_json(d, &w);
    if (verr) {
        jsonw_key(&w, "error");
        write_err_obj(&w, verr);
    }
    jsonw_key(&w, "would_apply");
    jsonw_bool(&w, false);
    jsonw_obj_end(&w);
}

static void body_ok(bv_buf *out, char *const *added, size_t nadded, const reg_diff *d,
                    const payload *pl, uint64_t version) {
    jsonw w;
    jsonw_init(&w, out);
    jsonw_obj_begin(&w);
    jsonw_key(&w, "added");
    jsonw_arr_begin(&w);
    for (size_t i = 0; i < nadded; i++) jsonw_str(&w, added[i]);
    jsonw_arr_end(&w);
    jsonw_key(&w, "already_present");
    jsonw_arr_begin(&w);
    for (size_t i = 0; i < d->npresent; i++) {
        bool re_added = false;           /* force re-created it: listed under added only */
        for (size_t k = 0; k < nadded && !re_added; k++) re_added = !strcmp(added[k], d->already_present[i]);
        if (!re_added) jsonw_str(&w, d->already_present[i]);
    }
    jsonw_arr_end(&w);
    jsonw_key(&w, "registered_descriptors");
    jsonw_arr_begin(&w);
    for (size_t i = 0; i < pl->n; i++) jsonw_str(&w, pl->v[i].name);
    jsonw_arr_end(&w);
    jsonw_key(&w, "registry_version");
    jsonw_u64(&w, version);
    jsonw_key(&w, "status");
    jsonw_str(&w, "ok");
    jsonw_obj_end(&w);
}

/* ------------------------------------------------------------------------------------
 * prepare / apply
 * ---------------------------------------------------------------------------------- */

typedef struct kind_name {
    const char *kind, *name;
} kind_name;

static int cmp_kind_name(const void *a, const void *b) {
    const kind_name *x = a, *y = b;
    int c = strcmp(x->kind, y->kind);
    return c ? c : strcmp(x->name, y->name);
}

static bool name_listed(char *const *sorted, size_t n, const char *name) {
    return n && bsearch(&name, sorted, n, sizeof *sorted, cmp_cstr) != NULL;
}

/* `added` of the response. Without removals: the new descriptors and the descriptors
 * widened in place, sorted by descriptor kind then name. With removals (force): in
 * payload order, every payload name that is new, widened or in the removal set (dropped
 * and re-created with fresh state, or the new name of a rename); a payload descriptor
 * that force left untouched is
 * not "added" (the reference lists every payload name, so a name could be both added
 * and already_present). */
static size_t compute_added(const registry *r, const payload *pl, const reg_diff *d,
                            char *const *removal, size_t nremoval, char ***out) {
    char **v;
    size_t n = 0;
    kind_name *kn = bv_xcalloc(d->nadditive, sizeof *kn);
    for (size_t i = 0; i < d->nadditive; i++) {
        const diff_entry *e = &d->additive[i];
        if (e->cls == DIFF_NEW_DESCRIPTOR) kn[n++] = (kind_name){e->s1, e->s2};
        else if (e->cls == DIFF_NEW_FIELD) kn[n++] = (kind_name){"event", e->s1};
        else if (e->cls == DIFF_NEW_AGG) kn[n++] = (kind_name){"derivation", e->s1};
    }
    qsort(kn, n, sizeof *kn, cmp_kind_name);
    if (nremoval) {
        v = bv_xcalloc(pl->n, sizeof *v);
        size_t m = 0;
        for (size_t i = 0; i < pl->n; i++) {
            const pnode *p = &pl->v[i];
            kind_name key = {p->is_event ? "event" : "derivation", p->name};
            bool registered = find_event(r, p->name) || find_deriv(r, p->name);
            if (!registered || name_listed(removal, nremoval, p->name) ||
                bsearch(&key, kn, n, sizeof *kn, cmp_kind_name))
                v[m++] = bv_xstrdup(p->name);
        }
        free(kn);
        *out = v;
        return m;
    }
    v = bv_xcalloc(n, sizeof *v);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || cmp_kind_name(&kn[i], &kn[i - 1]) != 0) v[m++] = bv_xstrdup(kn[i].name);
    free(kn);
    *out = v;
    return m;
}

static void free_strs(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The registry as the diff sees it, registration order (borrowed pointers). */
static diff_desc *registry_descs(const registry *r, size_t *n) {
    diff_desc *d = bv_xcalloc(r->nevents + r->nderivs, sizeof *d);
    size_t k = 0;
    for (size_t i = 0; i < r->nevents; i++)
        d[k++] = (diff_desc){r->events[i]->name, true, r->events[i]->node};
    for (size_t i = 0; i < r->nderivs; i++)
        d[k++] = (diff_desc){r->derivs[i]->name, false, r->derivs[i]->node};
    *n = k;
    return d;
}

/* Merge mode: append every registered descriptor the request does not name, in
 * registration order (events, then derivations), parsed back from its stored normal
 * form. From here on the request is the complete registry it describes, and the rest of
 * the pipeline is exactly the replace pipeline. */
static int merge_kept(const registry *r, payload *pl, bv_err *err) {
    char **named = bv_xcalloc(pl->nnamed ? pl->nnamed : 1, sizeof *named);
    for (size_t i = 0; i < pl->nnamed; i++) named[i] = (char *)pl->v[i].name;
    qsort(named, pl->nnamed, sizeof *named, cmp_cstr);
    size_t total = pl->nnamed + r->nevents + r->nderivs;
    pl->v = bv_xrealloc(pl->v, (total ? total : 1) * sizeof *pl->v);
    int rc = 0;
    for (size_t k = 0; k < r->nevents + r->nderivs && rc == 0; k++) {
        bool ev = k < r->nevents;
        const char *name = ev ? r->events[k]->name : r->derivs[k - r->nevents]->name;
        const json_t *node = ev ? r->events[k]->node : r->derivs[k - r->nevents]->node;
        if (name_listed(named, pl->nnamed, name)) continue;
        pnode *p = &pl->v[pl->n];
        memset(p, 0, sizeof *p);
        bv_schema_init(&p->schema);
        bv_schema_init(&p->chain_out);
        pl->n++;
        rc = ev ? parse_event(node, pl->n - 1, p, err) : parse_derivation(node, pl->n - 1, p, err);
        p->kept = true;
    }
    free(named);
    return rc;
}

/* Merge mode: an error inside a kept descriptor has the path "nodes[K]..." with K past the
 * request's own nodes; it becomes "registry.<Name>..." (the client never sent node K). */
static void kept_error_path(const payload *pl, bv_err *err) {
    size_t k = 0, at = 6;
    if (strncmp(err->path, "nodes[", 6) != 0) return;
    while (err->path[at] >= '0' && err->path[at] <= '9') k = k * 10 + (size_t)(err->path[at++] - '0');
    if (err->path[at] != ']' || k < pl->nnamed || k >= pl->n) return;
    char rest[sizeof err->path];
    snprintf(rest, sizeof rest, "%s", err->path + at + 1);
    snprintf(err->path, sizeof err->path, "registry.%.*s%.*s", REGISTRY_NAME_MAX, pl->v[k].name,
             (int)(sizeof err->path - REGISTRY_NAME_MAX - 16), rest);
}

/* Merge mode: already_present names only descriptors the request named. */
static void present_only_named(reg_diff *d, const payload *pl) {
    char **named = bv_xcalloc(pl->nnamed ? pl->nnamed : 1, sizeof *named);
    for (size_t i = 0; i < pl->nnamed; i++) named[i] = (char *)pl->v[i].name;
    qsort(named, pl->nnamed, sizeof *named, cmp_cstr);
    size_t m = 0;
    for (size_t i = 0; i < d->npresent; i++) {
        if (name_listed(named, pl->nnamed, d->already_present[i])) d->already_present[m++] = d->already_present[i];
        else free(d->already_present[i]);
    }
    d->npresent = m;
    free(named);
}

int registry_prepare(const registry *r, const char *body, size_t len, bv_buf *resp,
                     reg_plan **plan) {
    json_t *root = NULL, *nodes = NULL;
    payload pl;
    reg_diff diff;
    diff_desc *cur = NULL, *pay = NULL;
    size_t ncur = 0, nremoval = 0, nadded = 0;
    char **removal = NULL, **added = NULL;
    bv_err err, terr;
    size_t terr_index = REG_NONE;
    int status = 200;

    memset(&pl, 0, sizeof pl);
    memset(&diff, 0, sizeof diff);
    bv_err_clear(&err);
    bv_err_clear(&terr);
    *plan = NULL;

    if (load_body(body ? body : "", body ? len : 0, &root, &err) < 0) goto bad;
    const json_t *raw = json_object_get(root, "nodes");
    nodes = json_is_array(raw) ? rewrite_nodes(raw, &terr, &terr_index) : jnew(json_array());
    if (scan_removed_ops(nodes, &err) < 0 || scan_event_time(raw, &err) < 0 ||
        scan_kinds(nodes, &err) < 0 ||
        (r->opts.memory_gov_enforce && scan_memory(nodes, &err) < 0))
        goto bad;
    if (parse_payload(root, nodes, &terr, terr_index, &pl, &err) < 0) goto bad;
    if (pl.merge && merge_kept(r, &pl, &err) < 0) goto bad;

    /* Validation before the diff: the complete registry the request describes must be
     * valid on its own, as on a fresh server, whatever the registry holds now, so a typo
     * is a 400 naming it, never a "destructive change" to force. This is the one
     * validation: against the current registry minus the force removal set it would
     * see the same descriptors, because every registered name the request does not
     * carry is in that removal set (replace) or carried by the request (merge). */
    registry fresh;
    memset(&fresh, 0, sizeof fresh);
    fresh.opts = r->opts;
    bool invalid = pl.n && validate(&fresh, &pl, NULL, 0, &err) < 0;
    if (invalid && pl.merge) kept_error_path(&pl, &err);
    if (invalid && !pl.dry_run) goto bad;

    cur = registry_descs(r, &ncur);
    pay = bv_xcalloc(pl.n ? pl.n : 1, sizeof *pay);
    for (size_t i = 0; i < pl.n; i++) pay[i] = (diff_desc){pl.v[i].name, pl.v[i].is_event, pl.v[i].node};
    diff_classify(cur, ncur, pay, pl.n, &diff);
    if (pl.merge) present_only_named(&diff, &pl);

    if (pl.dry_run) {                    /* the preview: the diff, and the error if any */
        body_dry_run(resp, &diff, invalid ? &err : NULL);
        goto done;
    }
    if (diff.ndestructive && !pl.force) {
        body_force_required(resp, &diff, r->version);
        status = 409;
        goto done;
    }
    if (pl.force) nremoval = diff_removal_set(&diff, true, cur, ncur, &removal);
    if (pl.n == 0) {
        body_ok(resp, NULL, 0, &diff, &pl, r->version);
        goto done;
    }
    nadded = compute_added(r, &pl, &diff, removal, nremoval, &added);
    if (nremoval == 0 && nadded == 0) {
        body_ok(resp, NULL, 0, &diff, &pl, r->version);
        goto done;
    }
    reg_plan *p = bv_xcalloc(1, sizeof *p);
    p->base_version = r->version;
    p->pl = pl;
    p->diff = diff;
    p->removal = removal;
    p->nremoval = nremoval;
    p->added = added;
    p->nadded = nadded;
    memset(&pl, 0, sizeof pl);
    memset(&diff, 0, sizeof diff);
    removal = added = NULL;
    nremoval = nadded = 0;
    *plan = p;
    goto done;
bad:
    body_error(resp, &err, r->version);
    status = 400;
done:
    free_strs(removal, nremoval);
    free_strs(added, nadded);
    diff_free(&diff);
    free(cur);
    free(pay);
    payload_free(&pl);
    json_decref(nodes);
    json_decref(root);
    return status;
}

void reg_plan_free(reg_plan *p) {
    if (!p) return;
    payload_free(&p->pl);
    diff_free(&p->diff);
    free_strs(p->removal, p->nremoval);
    free_strs(p->added, p->nadded);
    free(p);
}

/* A table hook to call once the indexes are rebuilt (payload order). */
typedef struct table_event {
    agg_table *t;
    size_t old_n;                /* widened: slots before; REG_NONE: added */
} table_event;

bool reg_plan_current(const registry *r, const reg_plan *p) { return p->base_version == r->version; }


void registry_apply(registry *r, reg_plan *p, const reg_hooks *hooks, bv_buf *resp) {
    if (!reg_plan_current(r, p)) {
        /* The engine re-prepares a plan that is no longer current (engine_register); anything
         * else is a caller bug that would corrupt the registry, so stop here rather than guess. */
        fputs("beava: registry_apply on a plan prepared for another registry version\n", stderr);
        abort();
    }
    uint64_t version = r->version + 1;
    if (p->nremoval) {
        remove_names(r, p->removal, p->nremoval, hooks);
        reindex(r);
    }
    table_event *ev = bv_xcalloc(p->pl.n, sizeof *ev);
    size_t nev = 0;
    /* The sorted indexes still describe the registry before this loop; payload names are
     * distinct (validated), so a lookup never meets a descriptor inserted here. */
    for (size_t i = 0; i < p->pl.n; i++) {
        pnode *pn = &p->pl.v[i];
        if (pn->is_event) {
            ev_desc *e = find_event(r, pn->name);
            if (find_deriv(r, pn->name)) abort();   /* a kind change is in the removal set */
            if (e) widen_event(e, pn, &p->diff);
            else push_event(r, event_from(pn, version));
            continue;
        }
        deriv_desc *d = find_deriv(r, pn->name);
        if (find_event(r, pn->name)) abort();
        if (d) {
            size_t old_n = 0;
            if (update_kept_deriv(d, pn, &p->diff, &old_n)) ev[nev++] = (table_event){d->table, old_n};
            continue;
        }
        d = deriv_from(r, pn, version);
        push_deriv(r, d);
        if (d->table) ev[nev++] = (table_event){d->table, REG_NONE};
    }
    r->version = version;
    reindex(r);
    for (size_t i = 0; i < nev; i++) {
        if (ev[i].old_n == REG_NONE) hook_added(hooks, ev[i].t);
        else hook_widened(hooks, ev[i].t, ev[i].old_n);
    }
    body_ok(resp, p->added, p->nadded, &p->diff, &p->pl, version);
    free(ev);
    reg_plan_free(p);
}

/* ------------------------------------------------------------------------------------
 * Lifecycle and lookups
 * ---------------------------------------------------------------------------------- */

registry *registry_new(const registry_options *opts) {
    registry *r = bv_xcalloc(1, sizeof *r);
    r->opts.memory_gov_enforce = opts ? opts->memory_gov_enforce : true;
    r->next_table_id = 1;
    reindex(r);
    return r;
}

/* Every descriptor leaves the version being built (reset, or the build discarded). */
static void drop_all(registry *r, const reg_hooks *hooks) {
    for (size_t i = 0; i < r->nderivs; i++) deriv_discard(r->derivs[i], hooks);
    for (size_t i = 0; i < r->nevents; i++) event_free(r->events[i]);
    r->nevents = r->nderivs = 0;
}

static void free_containers(registry *r) {
    free(r->events);
    free(r->derivs);
    free(r->ev_sorted);
    free(r->der_sorted);
    free(r->tables);
    free(r->src_tables);
    free(r->srcs);
    free(r->feats);
    free(r);
}

void registry_free(registry *r, const reg_hooks *hooks) {
    if (!r) return;
    for (size_t i = 0; i < r->nderivs; i++) {
        deriv_desc *d = r->derivs[i];
        if (d->table) shell_retire(d->table, hooks);
        deriv_free_own(d);
    }
    for (size_t i = 0; i < r->nevents; i++) event_free(r->events[i]);
    free_containers(r);
}

void registry_discard(registry *next, const reg_hooks *hooks) {
    if (!next) return;
    drop_all(next, hooks);
    free_containers(next);
}

static ev_desc *event_copy(const ev_desc *e) {
    ev_desc *n = bv_xcalloc(1, sizeof *n);
    *n = *e;
    n->name = bv_xstrdup(e->name);
    schema_copy_fast(&n->schema, &e->schema);
    n->prefix_fp = NULL;
    n->name_lens = NULL;
    event_schema_derived(n);
    n->dedupe_key = e->dedupe_key ? bv_xstrdup(e->dedupe_key) : NULL;
    n->node = json_incref(e->node);
    return n;
}

static void *dup_array(const void *a, size_t n, size_t size) {
    void *d = bv_xcalloc(n ? n : 1, size);
    if (n) memcpy(d, a, n * size);
    return d;
}

/* The next shell of table p: own copies of its arrays and strings, the same feature
 * states (bitwise copies of the feature structs), chain and store. */
static agg_table *table_shell(agg_table *p) {
    agg_table *n = bv_xcalloc(1, sizeof *n);
    *n = *p;
    n->name = bv_xstrdup(p->name);
    n->source = bv_xstrdup(p->source);
    n->keys = bv_xcalloc(p->nkeys ? p->nkeys : 1, sizeof *n->keys);
    for (size_t k = 0; k < p->nkeys; k++) n->keys[k] = bv_xstrdup(p->keys[k]);
    n->features = dup_array(p->features, p->nfeatures, sizeof *p->features);
    n->offsets = dup_array(p->offsets, p->nfeatures, sizeof *p->offsets);
    n->by_name = dup_array(p->by_name, p->nfeatures, sizeof *p->by_name);
    n->pred = p;
    n->succ = NULL;
    p->succ = n;
    return n;
}

static deriv_desc *deriv_copy(const deriv_desc *d) {
    deriv_desc *n = bv_xcalloc(1, sizeof *n);
    *n = *d;
    n->name = bv_xstrdup(d->name);
    n->upstreams = bv_xcalloc(d->nupstreams ? d->nupstreams : 1, sizeof *n->upstreams);
    for (size_t i = 0; i < d->nupstreams; i++) n->upstreams[i] = bv_xstrdup(d->upstreams[i]);
    schema_copy_fast(&n->schema, &d->schema);
    n->node = json_incref(d->node);
    n->table = d->table ? table_shell(d->table) : NULL;
    return n;
}

registry *registry_next(registry *r) {
    registry *n = bv_xcalloc(1, sizeof *n);
    n->opts = r->opts;
    n->version = r->version;
    n->next_table_id = r->next_table_id;
    n->cap_events = r->nevents ? r->nevents : 1;
    n->events = bv_xcalloc(n->cap_events, sizeof *n->events);
    for (size_t i = 0; i < r->nevents; i++) n->events[i] = event_copy(r->events[i]);
    n->nevents = r->nevents;
    n->cap_derivs = r->nderivs ? r->nderivs : 1;
    n->derivs = bv_xcalloc(n->cap_derivs, sizeof *n->derivs);
    for (size_t i = 0; i < r->nderivs; i++) n->derivs[i] = deriv_copy(r->derivs[i]);
    n->nderivs = r->nderivs;
    reindex(n);
    return n;
}

void registry_reset(registry *r, const reg_hooks *hooks) {
    drop_all(r, hooks);
    r->version++;
    reindex(r);
}

uint64_t registry_version(const registry *r) { return r->version; }

size_t registry_node_count(const registry *r) { return r->nevents + r->nderivs; }

const ev_desc *registry_event(const registry *r, const char *name) { return find_event(r, name); }

agg_table *registry_table(const registry *r, const char *name) {
    deriv_desc *d = find_deriv(r, name);
    return d ? d->table : NULL;
}

size_t registry_tables_for_event(const registry *r, const char *event, agg_table *const **out) {
    size_t lo = 0, hi = r->nsrcs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->srcs[mid].source, event);
        if (c == 0) {
            *out = r->src_tables + r->srcs[mid].start;
            return r->srcs[mid].n;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *out = NULL;
    return 0;
}

size_t registry_tables(const registry *r, agg_table *const **out) {
    *out = r->tables;
    return r->ntables;
}

agg_table *registry_feature_owner(const registry *r, const char *name, size_t *slot) {
    size_t lo = 0, hi = r->nfeats;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->feats[mid].name, name);
        if (c == 0) {
            if (slot) *slot = r->feats[mid].slot;
            return r->feats[mid].t;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

void registry_dump(const registry *r, jsonw *w) {
    jsonw_obj_begin(w);
    jsonw_key(w, "derivations");
    jsonw_obj_begin(w);
    for (size_t i = 0; i < r->nderivs; i++) {
        jsonw_key(w, r->der_sorted[i]->name);
        jsonw_json(w, r->der_sorted[i]->node);
    }
    jsonw_obj_end(w);
    jsonw_key(w, "events");
    jsonw_obj_begin(w);
    for (size_t i = 0; i < r->nevents; i++) {
        jsonw_key(w, r->ev_sorted[i]->name);
        jsonw_json(w, r->ev_sorted[i]->node);
    }
    jsonw_obj_end(w);
    jsonw_key(w, "tables");
    jsonw_obj_begin(w);
    for (size_t i = 0; i < r->nderivs; i++) {
        const agg_table *t = r->der_sorted[i]->table;
        if (!t) continue;
        jsonw_key(w, t->name);
        jsonw_obj_begin(w);
        jsonw_key(w, "features");
        jsonw_arr_begin(w);
        for (size_t k = 0; k < t->nfeatures; k++) jsonw_str(w, t->features[t->by_name[k]].name);
        jsonw_arr_end(w);
        jsonw_key(w, "id");
        jsonw_u64(w, t->id);
        jsonw_key(w, "keys");
        jsonw_arr_begin(w);
        for (size_t k = 0; k < t->nkeys; k++) jsonw_str(w, t->keys[k]);
        jsonw_arr_end(w);
        jsonw_key(w, "row_size");
        jsonw_u64(w, t->row_size);
        jsonw_key(w, "source");
        jsonw_str(w, t->source);
        jsonw_obj_end(w);
    }
    jsonw_obj_end(w);
    jsonw_key(w, "version");
    jsonw_u64(w, r->version);
    jsonw_obj_end(w);
}
