/*
 * chain.c - the stateless chain ops of a derivation: filter,
 * select, drop, rename, with_columns / map, cast, fillna.
 *
 * chain_compile() walks the JSON `ops` array once, checks each op against the schema of
 * the rows reaching it (schema propagation, below) and turns it into a step: the
 * parsed expressions and the names it needs, owned by the chain. Map-valued ops (rename,
 * with_columns, cast, fillna) store their entries sorted by key, byte order, because the
 * reference applies them in that order. `group_by` entries are skipped (the registry owns
 * them); an op kind this file does not know is reported, never trusted.
 *
 * chain_apply() runs the steps over a copy of the input row held in the caller's `out`
 * row. Rows are tiny, so every step is a linear scan by name; nothing is hashed and no
 * memory is taken except when `out` must grow (once per worker, then reused). Field
 * names in `out` point into the input row or into the chain; values point into the input
 * row, the chain (string literals, fillna defaults) or the arena. `in` and `out` must be
 * different rows. On a compile error *out is NULL and out_schema is an empty, initialised
 * schema (freeing it is harmless).
 *
 * cast steps reuse the expression evaluator instead of a second copy of the cast rules:
 * each entry holds the compiled program `cast(v, <target>)`, run against a one-field row
 * {v: value}. That keeps one definition of the cast rules for expressions and for the cast op.
 *
 * Schema propagation follows the reference: with_columns sets the column to the inferred
 * type (a bare null -> str) and clears its optional mark when the type is known; fillna
 * clears the mark; select and rename carry it. Fields removed then re-added (rename)
 * move to the end of the schema, as they do in the row. Allocation failure during
 * compile or apply aborts, as everywhere else in beava (inputs are bounded by the
 * request caps).
 */
#include "chain.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum step_kind { S_FILTER, S_SELECT, S_DROP, S_RENAME, S_WITH, S_CAST, S_FILLNA };

typedef struct entry {
    char *name;         /* field / column / old name */
    size_t len;
    char *to;           /* rename: new name */
    size_t to_len;
    expr *ex;           /* with_columns: the expression; cast: cast(v, <target>) */
    json_t *dflt;       /* fillna: the default (own reference; null for list/map) */
} entry;

typedef struct step {
    enum step_kind kind;
    expr *filter;
    size_t n;
    entry *e;
} step;

struct chain {
    size_t n, cap;
    step *steps;
};

static void step_free(step *s) {
    expr_free(s->filter);
    for (size_t i = 0; i < s->n; i++) {
        free(s->e[i].name);
        free(s->e[i].to);
        expr_free(s->e[i].ex);
        json_decref(s->e[i].dflt);
    }
    free(s->e);
}

void chain_free(chain *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) step_free(&c->steps[i]);
    free(c->steps);
    free(c);
}

bool chain_is_empty(const chain *c) { return !c || c->n == 0; }

/* ------------------------------------------------------------------------------------ */
/* Compile                                                                               */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of a JSON object in ascending byte order (caller frees the array only). */
static const char **sorted_keys(const json_t *obj, size_t *n) {
    *n = json_object_size(obj);
    const char **keys = bv_xcalloc(*n, sizeof *keys);
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        (void)v;
        keys[i++] = k;
    }
    qsort(keys, *n, sizeof *keys, cmp_str);
    return keys;
}

static void schema_unset_optional(bv_schema *s, const char *name) {
    for (size_t i = 0; i < s->nopt; i++) {
        if (strcmp(s->optional[i], name) == 0) {
            free(s->optional[i]);
            memmove(&s->optional[i], &s->optional[i + 1], (s->nopt - i - 1) * sizeof *s->optional);
            s->nopt--;
            return;
        }
    }
}

static void set_name(entry *en, const char *name) {
    en->name = bv_xstrdup(name);
    en->len = strlen(name);
}

/* Parse and type-check one expression against the current schema. On failure the
 * error's reason is prefixed with `what` and its path set. */
static expr *compile_expr(const char *src, const bv_schema *cur, const char *path,
                          const char *what, int *type, bv_err *err) {
    bv_err e2;
    bv_err_clear(&e2);
    expr *ex = expr_parse(src, &e2);
    if (!ex || expr_typecheck(ex, cur, type, &e2) < 0) {
        expr_free(ex);
        bv_err_set(err, "invalid_expression", path, "%s: %s", what, e2.reason);
        return NULL;
    }
    expr_bind_schema(ex, cur);
    return ex;
}

static int compile_filter(const json_t *op, const bv_schema *cur, step *st, const char *path, bv_err *err) {
    const char *src = json_string_value(json_object_get(op, "expr"));
    if (!src) {
        bv_err_set(err, "invalid_expression", path, "filter needs a string 'expr'");
        return -1;
    }
    int t;
    st->filter = compile_expr(src, cur, path, "filter", &t, err);
    return st->filter ? 0 : -1;
}

/* select / drop: `fields` must be an array of strings naming existing fields. */
static int compile_fields(const json_t *op, bv_schema *cur, step *st, const char *path, bv_err *err) {
    const char *opname = st->kind == S_SELECT ? "select" : "drop";
    const json_t *arr = json_object_get(op, "fields");
    if (!json_is_array(arr)) {
        bv_err_set(err, "invalid_expression", path, "%s needs an array of field names 'fields'", opname);
        return -1;
    }
    size_t n = json_array_size(arr);
    st->e = bv_xcalloc(n, sizeof *st->e);
    for (size_t i = 0; i < n; i++) {
        const char *f = json_string_value(json_array_get(arr, i));
        if (!f) {
            bv_err_set(err, "invalid_expression", path, "%s: fields[%zu] is not a string", opname, i);
            return -1;
        }
        if (st->kind == S_DROP) {
            /* Checked one by one against the schema as it shrinks, like the reference:
             * naming a field twice is an error the second time. */
            if (!bv_schema_remove(cur, f)) {
                bv_err_set(err, "invalid_expression", path, "field '%s' not found", f);
                return -1;
            }
            schema_unset_optional(cur, f);
        } else if (bv_schema_find(cur, f, NULL) < 0) {
            bv_err_set(err, "invalid_expression", path, "field '%s' not found", f);
            return -1;
        }
        bool dup = false;
        for (size_t j = 0; j < st->n; j++)
            if (strcmp(st->e[j].name, f) == 0) dup = true;
        if (!dup) set_name(&st->e[st->n++], f);
    }
    if (st->kind == S_SELECT) {
        bv_schema ns;
        bv_schema_init(&ns);
        for (size_t i = 0; i < st->n; i++) {
            bv_wtype t;
            bv_schema_find(cur, st->e[i].name, &t);
            bv_schema_set(&ns, st->e[i].name, t);
            if (bv_schema_is_optional(cur, st->e[i].name)) bv_schema_add_optional(&ns, st->e[i].name);
        }
        bv_schema_free(cur);
        *cur = ns;
    }
    return 0;
}

static int compile_rename(const json_t *op, bv_schema *cur, step *st, const char *path, bv_err *err) {
    const json_t *map = json_object_get(op, "mapping");
    if (!json_is_object(map)) {
        bv_err_set(err, "invalid_expression", path, "rename needs an object 'mapping' of old -> new names");
        return -1;
    }
    size_t n;
    const char **keys = sorted_keys(map, &n);
    int rc = -1;
    bv_wtype *types = bv_xcalloc(n, sizeof *types);
    bool *opt = bv_xcalloc(n, sizeof *opt);
    st->e = bv_xcalloc(n, sizeof *st->e);
    for (size_t i = 0; i < n; i++) {
        const char *to = json_string_value(json_object_get(map, keys[i]));
        if (!to) {
            bv_err_set(err, "invalid_expression", path, "rename: new name for '%s' is not a string", keys[i]);
            goto out;
        }
        if (bv_schema_find(cur, keys[i], &types[i]) < 0) {
            bv_err_set(err, "invalid_expression", path, "field '%s' not found", keys[i]);
            goto out;
        }
        if (bv_schema_find(cur, to, NULL) >= 0 && !json_object_get(map, to)) {
            bv_err_set(err, "invalid_expression", path,
                       "rename of '%s' to '%s': field '%s' already exists", keys[i], to, to);
            goto out;
        }
        for (size_t j = 0; j < st->n; j++) {
            if (strcmp(st->e[j].to, to) == 0) {
                bv_err_set(err, "invalid_expression", path,
                           "rename maps both '%s' and '%s' to '%s'", st->e[j].name, keys[i], to);
                goto out;
            }
        }
        entry *en = &st->e[st->n++];
        set_name(en, keys[i]);
        en->to = bv_xstrdup(to);
        en->to_len = strlen(to);
        opt[i] = bv_schema_is_optional(cur, keys[i]);
    }
    for (size_t i = 0; i < n; i++) {
        bv_schema_remove(cur, st->e[i].name);
        schema_unset_optional(cur, st->e[i].name);
    }
    for (size_t i = 0; i < n; i++) {
        bv_schema_set(cur, st->e[i].to, types[i]);
        if (opt[i]) bv_schema_add_optional(cur, st->e[i].to);
    }
    rc = 0;
out:
    free(keys);
    free(types);
    free(opt);
    return rc;
}

static int compile_with(const json_t *op, bv_schema *cur, step *st, const char *path, bv_err *err) {
    const char *opname = json_string_value(json_object_get(op, "op"));
    const json_t *map = json_object_get(op, "exprs");
    if (!json_is_object(map)) {
        bv_err_set(err, "invalid_expression", path, "%s needs an object 'exprs' of column -> expression", opname);
        return -1;
    }
    size_t n;
    const char **keys = sorted_keys(map, &n);
    int rc = -1;
    st->e = bv_xcalloc(n, sizeof *st->e);
    for (size_t i = 0; i < n; i++) {
        const char *src = json_string_value(json_object_get(map, keys[i]));
        char what[200];
        snprintf(what, sizeof what, "%s column '%s'", opname, keys[i]);
        if (!src) {
            bv_err_set(err, "invalid_expression", path, "%s: expression is not a string", what);
            goto out;
        }
        int t;
        entry *en = &st->e[st->n];
        en->ex = compile_expr(src, cur, path, what, &t, err);
        if (!en->ex) goto out;
        set_name(en, keys[i]);
        st->n++;
        /* Later columns see this one (sorted order), with its inferred type. */
        if (t == EXPR_TYPE_NULL) {
            bv_schema_set(cur, keys[i], WT_STR);
        } else {
            bv_schema_set(cur, keys[i], (bv_wtype)t);
            schema_unset_optional(cur, keys[i]);
        }
    }
    rc = 0;
out:
    free(keys);
    return rc;
}

static int compile_cast(const json_t *op, bv_schema *cur, step *st, const char *path, bv_err *err) {
    static const struct { const char *name; bv_wtype t; } targets[] = {
        { "str", WT_STR }, { "int", WT_I64 }, { "float", WT_F64 }, { "bool", WT_BOOL },
    };
    const json_t *map = json_object_get(op, "type_map");
    if (!json_is_object(map)) {
        bv_err_set(err, "invalid_expression", path, "cast needs an object 'type_map' of field -> type");
        return -1;
    }
    size_t n;
    const char **keys = sorted_keys(map, &n);
    int rc = -1;
    st->e = bv_xcalloc(n, sizeof *st->e);
    for (size_t i = 0; i < n; i++) {
        const json_t *tj = json_object_get(map, keys[i]);
        bv_wtype src;
        if (bv_schema_find(cur, keys[i], &src) < 0) {
            bv_err_set(err, "invalid_expression", path, "field '%s' not found", keys[i]);
            goto out;
        }
        int k = -1;
        for (int j = 0; j < 4 && json_is_string(tj); j++)
            if (strcmp(json_string_value(tj), targets[j].name) == 0) k = j;
        if (k < 0) {
            char shown[64];
            if (json_is_string(tj)) snprintf(shown, sizeof shown, "'%.40s'", json_string_value(tj));
            else snprintf(shown, sizeof shown, "(not a string)");
            bv_err_set(err, "invalid_expression", path,
                       "unknown cast target %s for field '%s'; must be one of: str, int, float, bool",
                       shown, keys[i]);
            goto out;
        }
        if (src == WT_BYTES) {
            bv_err_set(err, "invalid_expression", path,
                       "cannot cast field '%s' to %s: bytes fields cannot be cast", keys[i], targets[k].name);
            goto out;
        }
        char prog[32];
        snprintf(prog, sizeof prog, "cast(v, %s)", targets[k].name);
        entry *en = &st->e[st->n];
        en->ex = expr_parse(prog, err);
        if (!en->ex) goto out;
        set_name(en, keys[i]);
        st->n++;
        bv_schema_set(cur, keys[i], targets[k].t);
    }
    rc = 0;
out:
    free(keys);
    return rc;
}

static int compile_fillna(const json_t *op, bv_schema *cur, step *st, const char *path, bv_err *err) {
    const json_t *map = json_object_get(op, "defaults");
    if (!json_is_object(map)) {
        bv_err_set(err, "invalid_expression", path, "fillna needs an object 'defaults' of field -> value");
        return -1;
    }
    size_t n;
    const char **keys = sorted_keys(map, &n);
    int rc = -1;
    st->e = bv_xcalloc(n, sizeof *st->e);
    for (size_t i = 0; i < n; i++) {
        if (bv_schema_find(cur, keys[i], NULL) < 0) {
            bv_err_set(err, "invalid_expression", path, "field '%s' not found", keys[i]);
            goto out;
        }
        json_t *d = json_object_get(map, keys[i]);
        entry *en = &st->e[st->n++];
        set_name(en, keys[i]);
        /* Scalars only; a list or map default fills in null, as in the reference. */
        en->dflt = (json_is_array(d) || json_is_object(d)) ? json_null() : json_deep_copy(d);
        if (!en->dflt) { fputs("beava: out of memory\n", stderr); abort(); }
        schema_unset_optional(cur, keys[i]);
    }
    rc = 0;
out:
    free(keys);
    return rc;
}

int chain_compile(const json_t *ops, const bv_schema *in, const char *path_prefix,
                  chain **out, bv_schema *out_schema, bv_err *err) {
    chain *c = bv_xcalloc(1, sizeof *c);
    bv_schema cur;
    bv_schema_copy(&cur, in);
    char path[256];
    const char *pre = path_prefix ? path_prefix : "";
    const char *dot = *pre ? "." : "";
    *out = NULL;
    bv_schema_init(out_schema);

    if (ops && !json_is_array(ops)) {
        snprintf(path, sizeof path, "%s%sops", pre, dot);
        bv_err_set(err, "invalid_expression", path, "ops must be an array");
        goto err;
    }
    size_t nops = ops ? json_array_size(ops) : 0;
    for (size_t i = 0; i < nops; i++) {
        const json_t *op = json_array_get(ops, i);
        const char *kind = json_string_value(json_object_get(op, "op"));
        snprintf(path, sizeof path, "%s%sops[%zu]", pre, dot, i);
        if (!kind) {
            bv_err_set(err, "invalid_expression", path, "an op must be an object with a string 'op'");
            goto err;
        }
        if (strcmp(kind, "group_by") == 0) continue;
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 4;
            step *ns = realloc(c->steps, c->cap * sizeof *ns);
            if (!ns) { fputs("beava: out of memory\n", stderr); abort(); }
            c->steps = ns;
        }
        step *st = &c->steps[c->n++];
        memset(st, 0, sizeof *st);
        int rc;
        if (strcmp(kind, "filter") == 0) {
            st->kind = S_FILTER;
            rc = compile_filter(op, &cur, st, path, err);
        } else if (strcmp(kind, "select") == 0) {
            st->kind = S_SELECT;
            rc = compile_fields(op, &cur, st, path, err);
        } else if (strcmp(kind, "drop") == 0) {
            st->kind = S_DROP;
            rc = compile_fields(op, &cur, st, path, err);
        } else if (strcmp(kind, "rename") == 0) {
            st->kind = S_RENAME;
            rc = compile_rename(op, &cur, st, path, err);
        } else if (strcmp(kind, "with_columns") == 0 || strcmp(kind, "map") == 0) {
            st->kind = S_WITH;
            rc = compile_with(op, &cur, st, path, err);
        } else if (strcmp(kind, "cast") == 0) {
            st->kind = S_CAST;
            rc = compile_cast(op, &cur, st, path, err);
        } else if (strcmp(kind, "fillna") == 0) {
            st->kind = S_FILLNA;
            rc = compile_fillna(op, &cur, st, path, err);
        } else {
            bv_err_set(err, "invalid_expression", path, "unknown op '%s'", kind);
            rc = -1;
        }
        if (rc < 0) goto err;
    }
    *out = c;
    *out_schema = cur;
    return 0;
err:
    chain_free(c);
    bv_schema_free(&cur);
    return -1;
}

/* ------------------------------------------------------------------------------------ */
/* Apply                                                                                 */

/* Grow r to hold `need` fields. Only called with r->n == 0 while r->cap is still 0. */
static void row_reserve(bv_row *r, size_t need) {
    if (r->cap >= need) return;
    size_t cap = r->cap ? r->cap * 2 : 16;
    while (cap < need) cap *= 2;
    /* cap == 0: the storage (if any) is borrowed; never hand it to realloc. */
    bv_field *f = r->cap ? realloc(r->fields, cap * sizeof *f) : malloc(cap * sizeof *f);
    if (!f) { fputs("beava: out of memory\n", stderr); abort(); }
    r->fields = f;
    r->cap = cap;
}

static long row_find(const bv_row *r, size_t from, const char *name, size_t len) {
    for (size_t i = from; i < r->n; i++)
        if (r->fields[i].name_len == len && memcmp(r->fields[i].name, name, len) == 0) return (long)i;
    return -1;
}

static bool entry_named(const step *st, const bv_field *f, bool target) {
    for (size_t k = 0; k < st->n; k++) {
        const char *nm = target ? st->e[k].to : st->e[k].name;
        size_t len = target ? st->e[k].to_len : st->e[k].len;
        if (f->name_len == len && memcmp(f->name, nm, len) == 0) return true;
    }
    return false;
}

static void apply_rename(const step *st, bv_row *r) {
    /* Atomic: collect the renamed fields after the row, drop the old names (and any field
     * already holding a new name), then close the gap. */
    row_reserve(r, r->n + st->n);
    size_t n = r->n, t = n;
    for (size_t k = 0; k < st->n; k++) {
        long j = row_find(r, 0, st->e[k].name, st->e[k].len);
        if (j < 0) continue;                    /* absent (optional) field: nothing to rename */
        r->fields[t].name = st->e[k].to;
        r->fields[t].name_len = st->e[k].to_len;
        r->fields[t].value = r->fields[j].value;
        t++;
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (entry_named(st, &r->fields[i], false) || entry_named(st, &r->fields[i], true)) continue;
        r->fields[w++] = r->fields[i];
    }
    memmove(&r->fields[w], &r->fields[n], (t - n) * sizeof *r->fields);
    r->n = w + (t - n);
}

bool chain_apply(const chain *c, const bv_row *in, bv_row *out, expr_arena *arena) {
    out->n = 0;
    row_reserve(out, in->n ? in->n : 1);
    if (in->n) memcpy(out->fields, in->fields, in->n * sizeof *in->fields);
    out->n = in->n;
    if (!c) return true;
    for (size_t s = 0; s < c->n; s++) {
        const step *st = &c->steps[s];
        switch (st->kind) {
        case S_FILTER:
            if (!expr_matches(st->filter, out, arena)) return false;
            break;
        case S_SELECT: {
            /* Listed order; each listed field swapped into the next slot. */
            size_t w = 0;
            for (size_t k = 0; k < st->n; k++) {
                long j = row_find(out, w, st->e[k].name, st->e[k].len);
                if (j < 0) continue;
                bv_field tmp = out->fields[w];
                out->fields[w] = out->fields[j];
                out->fields[j] = tmp;
                w++;
            }
            out->n = w;
            break;
        }
        case S_DROP: {
            size_t w = 0;
            for (size_t i = 0; i < out->n; i++)
                if (!entry_named(st, &out->fields[i], false)) out->fields[w++] = out->fields[i];
            out->n = w;
            break;
        }
        case S_RENAME:
            apply_rename(st, out);
            break;
        case S_WITH:
            for (size_t k = 0; k < st->n; k++) {
                bv_value v = expr_eval(st->e[k].ex, out, arena);
                long j = row_find(out, 0, st->e[k].name, st->e[k].len);
                if (j < 0) {
                    row_reserve(out, out->n + 1);
                    j = (long)out->n++;
                    out->fields[j].name = st->e[k].name;
                    out->fields[j].name_len = st->e[k].len;
                }
                out->fields[j].value = v;
            }
            break;
        case S_CAST:
            for (size_t k = 0; k < st->n; k++) {
                long j = row_find(out, 0, st->e[k].name, st->e[k].len);
                if (j < 0) continue;
                bv_field one = { "v", 1, out->fields[j].value };
                bv_row r1 = { &one, 1, 0 };
                out->fields[j].value = expr_eval(st->e[k].ex, &r1, arena);
            }
            break;
        case S_FILLNA:
            for (size_t k = 0; k < st->n; k++) {
                long j = row_find(out, 0, st->e[k].name, st->e[k].len);
                if (j >= 0 && out->fields[j].value.kind == BV_NULL)
                    out->fields[j].value = bv_from_json(st->e[k].dflt);
            }
            break;
        }
    }
    return true;
}
