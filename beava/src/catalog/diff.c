/*
 * diff.c - the one registry diff classifier (see diff.h for the classes and the order).
 *
 * Shape of the work: index both sides by name (sorted arrays, binary search), pair
 * removals with additions (rename heuristic, removed names in sorted order), then compare
 * every payload node whose name is registered. Each comparison emits the specific entries
 * the reference emits and then compares a "residual": the normal-form node with every
 * part those entries cover taken out. A residual that differs yields one
 * descriptor_change, so no change to a descriptor can go unreported (the reference
 * ignores what it does not look at; that silent acceptance is the bug this classifier
 * fixes). Finally both lists are sorted by (class, primary, secondary, creation order),
 * which makes the output a pure function of its inputs.
 *
 * Cost: O((n + m) log(n + m)) plus the rename pairing, which is O(removed x added) and
 * bounded by REGISTRY_MAX_NODES squared in the worst case (16 M cheap steps).
 */
#include "diff.h"
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_vec {
    diff_entry *v;
    size_t n, cap;
} entry_vec;

typedef struct str_vec {
    char **v;
    size_t n, cap;
} str_vec;

typedef struct name_idx {
    const char *name;
    size_t i;
} name_idx;

static char *xstrcat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *d = bv_xrealloc(NULL, la + lb + lc + 1);
    memcpy(d, a, la);
    memcpy(d + la, b, lb);
    memcpy(d + la + lb, c, lc + 1);
    return d;
}

static void strvec_push(str_vec *sv, const char *s) {
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 8;
        sv->v = bv_xrealloc(sv->v, sv->cap * sizeof *sv->v);
    }
    sv->v[sv->n++] = bv_xstrdup(s);
}

static int cmp_name_idx(const void *a, const void *b) {
    const name_idx *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return (x->i > y->i) - (x->i < y->i);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted (name, index) array of a descriptor list. */
static name_idx *index_descs(const diff_desc *d, size_t n) {
    name_idx *ix = bv_xrealloc(NULL, n * sizeof *ix);
    for (size_t i = 0; i < n; i++) {
        ix[i].name = d[i].name;
        ix[i].i = i;
    }
    qsort(ix, n, sizeof *ix, cmp_name_idx);
    return ix;
}

/* Smallest index holding `name`, or (size_t)-1. */
static size_t index_find(const name_idx *ix, size_t n, const char *name) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ix[mid].name, name) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < n && strcmp(ix[lo].name, name) == 0) return ix[lo].i;
    return (size_t)-1;
}

/* ---- entry construction ---- */

typedef struct classifier {
    entry_vec destructive, additive;
    str_vec present;
    size_t seq;
} classifier;

static bool class_is_additive(diff_class c) {
    return c == DIFF_NEW_DESCRIPTOR || c == DIFF_NEW_AGG || c == DIFF_NEW_FIELD;
}

static diff_entry *push_entry(classifier *cl, diff_class cls) {
    entry_vec *ev = class_is_additive(cls) ? &cl->additive : &cl->destructive;
    if (ev->n == ev->cap) {
        ev->cap = ev->cap ? ev->cap * 2 : 8;
        ev->v = bv_xrealloc(ev->v, ev->cap * sizeof *ev->v);
    }
    diff_entry *e = &ev->v[ev->n++];
    memset(e, 0, sizeof *e);
    e->cls = cls;
    e->seq = cl->seq++;
    return e;
}

/* The descriptor part of "D.f". */
static char *owner_of_dotted(const char *s) {
    const char *dot = strchr(s, '.');
    size_t n = dot ? (size_t)(dot - s) : strlen(s);
    char *d = bv_xrealloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void add2(classifier *cl, diff_class cls, const char *a, const char *b) {
    diff_entry *e = push_entry(cl, cls);
    e->s1 = bv_xstrdup(a);
    e->s2 = bv_xstrdup(b);
    e->sort2 = bv_xstrdup(b);
    if (cls == DIFF_RENAME || cls == DIFF_OP_REMOVAL || cls == DIFF_AGG_REMOVAL ||
        cls == DIFF_AGG_CHANGE)
        e->owner = bv_xstrdup(a);
}

static void add3(classifier *cl, diff_class cls, const char *a, const char *b, const char *c) {
    diff_entry *e = push_entry(cl, cls);
    e->s1 = bv_xstrdup(a);
    e->s2 = bv_xstrdup(b);
    e->s3 = bv_xstrdup(c);
    switch (cls) {
    case DIFF_TYPE_CHANGE:
    case DIFF_WINDOW_CHANGE:
        e->sort2 = xstrcat3(b, "->", c);
        e->owner = owner_of_dotted(a);
        break;
    case DIFF_NEW_AGG:
        e->sort2 = xstrcat3(b, "@", c);
        e->owner = bv_xstrdup(a);
        break;
    default: /* DIFF_NEW_FIELD */
        e->sort2 = xstrcat3(b, ":", c);
        e->owner = bv_xstrdup(a);
        break;
    }
}

/* Rust's Debug rendering of a Vec<String> ('["a", "b"]'), the reference's sort key for
 * key changes. */
static void debug_list(const json_t *arr, bv_buf *b) {
    bv_buf_putc(b, '[');
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (i) bv_buf_puts(b, ", ");
        bv_buf_putc(b, '"');
        bv_buf_puts(b, s ? s : "");
        bv_buf_putc(b, '"');
    }
    bv_buf_putc(b, ']');
}

static void add_key_cols(classifier *cl, const char *table, const json_t *from, const json_t *to) {
    diff_entry *e = push_entry(cl, DIFF_KEY_COLS_CHANGE);
    e->s1 = bv_xstrdup(table);
    e->owner = bv_xstrdup(table);
    e->from_keys = json_deep_copy(from);
    e->to_keys = json_deep_copy(to);
    if (!e->from_keys || !e->to_keys) abort();
    bv_buf b;
    bv_buf_init(&b);
    debug_list(from, &b);
    bv_buf_puts(&b, "->");
    debug_list(to, &b);
    e->sort2 = bv_buf_steal(&b);
}

static void add_descriptor_change(classifier *cl, const char *name) {
    diff_entry *e = push_entry(cl, DIFF_DESCRIPTOR_CHANGE);
    e->s1 = bv_xstrdup(name);
    e->owner = bv_xstrdup(name);
    e->sort2 = bv_xstrdup("");
}

/* ---- per-descriptor comparison ---- */

/* Equal, treating a missing value and JSON null alike. */
static bool same(const json_t *a, const json_t *b) {
    if (!a) a = json_null();
    if (!b) b = json_null();
    return json_equal((json_t *)a, (json_t *)b) != 0;
}

/* Every top-level key except `skip*` compares equal. */
static bool same_except(const json_t *a, const json_t *b, const char *skip1, const char *skip2,
                        const char *skip3) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v) {
        if ((skip1 && !strcmp(k, skip1)) || (skip2 && !strcmp(k, skip2)) ||
            (skip3 && !strcmp(k, skip3)))
            continue;
        if (!same(v, json_object_get(b, k))) return false;
    }
    json_object_foreach((json_t *)b, k, v) {
        if ((skip1 && !strcmp(k, skip1)) || (skip2 && !strcmp(k, skip2)) ||
            (skip3 && !strcmp(k, skip3)))
            continue;
        if (!json_object_get(a, k) && !json_is_null(v)) return false;
    }
    return true;
}

static void classify_event(classifier *cl, const char *name, const json_t *prev, const json_t *next) {
    const json_t *ps = json_object_get(prev, "schema"), *ns = json_object_get(next, "schema");
    const json_t *pf = json_object_get(ps, "fields"), *nf = json_object_get(ns, "fields");
    const char *f;
    json_t *t;
    json_object_foreach((json_t *)pf, f, t) {
        const json_t *nt = json_object_get(nf, f);
        const char *from = json_string_value(t) ? json_string_value(t) : "";
        char *field = xstrcat3(name, ".", f);
        if (!nt)
            add3(cl, DIFF_TYPE_CHANGE, field, from, "<absent>");
        else if (!json_equal(t, (json_t *)nt))
            add3(cl, DIFF_TYPE_CHANGE, field, from,
                 json_string_value(nt) ? json_string_value(nt) : "");
        free(field);
    }
    json_object_foreach((json_t *)nf, f, t) {
        if (!json_object_get(pf, f))
            add3(cl, DIFF_NEW_FIELD, name, f, json_string_value(t) ? json_string_value(t) : "");
    }
    /* Residual: everything but schema.fields. */
    if (!same_except(prev, next, "schema", NULL, NULL) ||
        !same(json_object_get(ps, "optional_fields"), json_object_get(ns, "optional_fields")))
        add_descriptor_change(cl, name);
}

static const char *op_name(const json_t *op) {
    const char *s = json_string_value(json_object_get(op, "op"));
    return s ? s : "";
}

static bool is_group_by(const json_t *op) { return strcmp(op_name(op), "group_by") == 0; }

static const char *window_of(const json_t *params) {
    const char *w = json_string_value(json_object_get(params, "window"));
    return w ? w : "";
}

/* Params equal apart from `window`, and the window values equal whenever their string
 * views are (a non-string window is not a window_change but is still a change). */
static bool params_same_but_window(const json_t *pp, const json_t *np) {
    if (!same_except(pp, np, "window", NULL, NULL)) return false;
    if (strcmp(window_of(pp), window_of(np)) == 0 &&
        !same(json_object_get(pp, "window"), json_object_get(np, "window")))
        return false;
    return true;
}

static void classify_group_by(classifier *cl, const char *name, const json_t *pg, const json_t *ng) {
    const json_t *pk = json_object_get(pg, "keys"), *nk = json_object_get(ng, "keys");
    if (!same(pk, nk)) add_key_cols(cl, name, pk, nk);
    const json_t *pa = json_object_get(pg, "agg"), *na = json_object_get(ng, "agg");
    const char *f;
    json_t *ps;
    json_object_foreach((json_t *)pa, f, ps) {
        const json_t *ns = json_object_get(na, f);
        if (!ns) {
            add2(cl, DIFF_AGG_REMOVAL, name, f);
            continue;
        }
        const json_t *pp = json_object_get(ps, "params"), *np = json_object_get(ns, "params");
        const char *pw = window_of(pp), *nw = window_of(np);
        if (strcmp(pw, nw) != 0) {
            char *agg = xstrcat3(name, ".", f);
            add3(cl, DIFF_WINDOW_CHANGE, agg, pw, nw);
            free(agg);
        }
        if (strcmp(op_name(ps), op_name(ns)) != 0) {
            add2(cl, DIFF_AGG_REMOVAL, name, f);
            add3(cl, DIFF_NEW_AGG, name, f, op_name(ns));
        } else if (!params_same_but_window(pp, np)) {
            add2(cl, DIFF_AGG_CHANGE, name, f);
        }
    }
    json_object_foreach((json_t *)na, f, ps) {
        if (!json_object_get(pa, f)) add3(cl, DIFF_NEW_AGG, name, f, op_name(ps));
    }
}

static bool is_table(const json_t *node) {
    const char *k = json_string_value(json_object_get(node, "output_kind"));
    return k && strcmp(k, "table") == 0;
}

static void classify_derivation(classifier *cl, const char *name, const json_t *prev,
                                const json_t *next) {
    const json_t *po = json_object_get(prev, "ops"), *no = json_object_get(next, "ops");
    size_t lp = json_array_size(po), ln = json_array_size(no);
    size_t m = lp < ln ? lp : ln;
    bool residual_same = ln <= lp;   /* ops appended at the end are a change */
    char label[96];

    for (size_t i = ln; i < lp; i++) {
        snprintf(label, sizeof label, "%s[%zu]", op_name(json_array_get(po, i)), i);
        add2(cl, DIFF_OP_REMOVAL, name, label);
    }
    for (size_t i = 0; i < m; i++) {
        const json_t *a = json_array_get(po, i), *b = json_array_get(no, i);
        if (is_group_by(a) && is_group_by(b)) classify_group_by(cl, name, a, b);
        else if (!same(a, b)) residual_same = false;
    }
    bool table = is_table(prev) || is_table(next);
    if (table) {
        const json_t *pk = json_object_get(prev, "table_primary_key");
        const json_t *nk = json_object_get(next, "table_primary_key");
        json_t *empty = json_array();
        if (!empty) abort();
        if (!pk || json_is_null(pk)) pk = empty;
        if (!nk || json_is_null(nk)) nk = empty;
        if (!same(pk, nk)) add_key_cols(cl, name, pk, nk);
        json_decref(empty);
    }
    /* Residual: everything but ops (compared above), the client-side schema (the
     * server recomputes it) and, for tables, table_primary_key. */
    if (!same_except(prev, next, "ops", "schema", table ? "table_primary_key" : NULL))
        residual_same = false;
    if (!residual_same) add_descriptor_change(cl, name);
}

/* ---- sorting and output ---- */

static int cmp_entry(const void *a, const void *b) {
    const diff_entry *x = a, *y = b;
    if (x->cls != y->cls) return x->cls < y->cls ? -1 : 1;
    int c = strcmp(x->s1, y->s1);
    if (c) return c;
    c = strcmp(x->sort2, y->sort2);
    if (c) return c;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

void diff_classify(const diff_desc *cur, size_t ncur, const diff_desc *pay, size_t npay,
                   reg_diff *out) {
    classifier cl;
    memset(&cl, 0, sizeof cl);
    name_idx *cix = index_descs(cur, ncur);
    name_idx *pix = index_descs(pay, npay);
    bool *paired = calloc(npay ? npay : 1, sizeof *paired);
    if (!paired) abort();

    /* Rename heuristic over removed names in sorted order. */
    for (size_t k = 0; k < ncur; k++) {
        if (k > 0 && strcmp(cix[k].name, cix[k - 1].name) == 0) continue;
        const diff_desc *rd = &cur[cix[k].i];
        if (index_find(pix, npay, rd->name) != (size_t)-1) continue;   /* not removed */
        bool done = false;
        for (size_t i = 0; i < npay && !done; i++) {
            if (paired[i] || pay[i].is_event != rd->is_event) continue;
            if (index_find(cix, ncur, pay[i].name) != (size_t)-1) continue;  /* not new */
            if (index_find(pix, npay, pay[i].name) != i) continue;           /* duplicate */
            paired[i] = true;
            add2(&cl, DIFF_RENAME, rd->name, pay[i].name);
            done = true;
        }
        if (!done) add2(&cl, DIFF_AGG_REMOVAL, rd->name, "");
    }

    for (size_t i = 0; i < npay; i++) {
        const diff_desc *pd = &pay[i];
        if (index_find(pix, npay, pd->name) != i) continue;   /* duplicate name */
        size_t ci = index_find(cix, ncur, pd->name);
        if (ci == (size_t)-1) {
            if (paired[i]) continue;
            diff_entry *e = push_entry(&cl, DIFF_NEW_DESCRIPTOR);
            e->s1 = bv_xstrdup(pd->is_event ? "event" : "derivation");
            e->s2 = bv_xstrdup(pd->name);
            e->sort2 = bv_xstrdup(pd->name);
            continue;
        }
        const diff_desc *cd = &cur[ci];
        size_t before = cl.additive.n + cl.destructive.n;
        if (cd->is_event != pd->is_event) add_descriptor_change(&cl, pd->name);
        else if (pd->is_event) classify_event(&cl, pd->name, cd->node, pd->node);
        else classify_derivation(&cl, pd->name, cd->node, pd->node);
        if (cl.additive.n + cl.destructive.n == before) strvec_push(&cl.present, pd->name);
    }

    if (cl.destructive.n) qsort(cl.destructive.v, cl.destructive.n, sizeof *cl.destructive.v, cmp_entry);
    if (cl.additive.n) qsort(cl.additive.v, cl.additive.n, sizeof *cl.additive.v, cmp_entry);
    if (cl.present.n) qsort(cl.present.v, cl.present.n, sizeof *cl.present.v, cmp_str);

    out->destructive = cl.destructive.v;
    out->ndestructive = cl.destructive.n;
    out->additive = cl.additive.v;
    out->nadditive = cl.additive.n;
    out->already_present = cl.present.v;
    out->npresent = cl.present.n;
    free(paired);
    free(cix);
    free(pix);
}

static void free_entries(diff_entry *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].s1);
        free(v[i].s2);
        free(v[i].s3);
        free(v[i].owner);
        free(v[i].sort2);
        json_decref(v[i].from_keys);
        json_decref(v[i].to_keys);
    }
    free(v);
}

void diff_free(reg_diff *d) {
    if (!d) return;
    free_entries(d->destructive, d->ndestructive);
    free_entries(d->additive, d->nadditive);
    for (size_t i = 0; i < d->npresent; i++) free(d->already_present[i]);
    free(d->already_present);
    memset(d, 0, sizeof *d);
}

static const char *class_name(diff_class c) {
    switch (c) {
    case DIFF_RENAME: return "rename";
    case DIFF_TYPE_CHANGE: return "type_change";
    case DIFF_OP_REMOVAL: return "op_removal";
    case DIFF_AGG_REMOVAL: return "agg_removal";
    case DIFF_WINDOW_CHANGE: return "window_change";
    case DIFF_AGG_CHANGE: return "agg_change";
    case DIFF_KEY_COLS_CHANGE: return "key_cols_change";
    case DIFF_DESCRIPTOR_CHANGE: return "descriptor_change";
    case DIFF_NEW_DESCRIPTOR: return "new_descriptor";
    case DIFF_NEW_AGG: return "new_agg";
    case DIFF_NEW_FIELD: return "new_field";
    }
    return "";
}

static void kv(jsonw *w, const char *k, const char *v) {
    jsonw_key(w, k);
    jsonw_str(w, v);
}

/* Keys in ascending byte order, per class. */
static void write_entry(const diff_entry *e, jsonw *w) {
    const char *kind = class_name(e->cls);
    jsonw_obj_begin(w);
    switch (e->cls) {
    case DIFF_RENAME:
        kv(w, "from", e->s1); kv(w, "kind", kind); kv(w, "to", e->s2);
        break;
    case DIFF_TYPE_CHANGE:
        kv(w, "field", e->s1); kv(w, "from", e->s2); kv(w, "kind", kind); kv(w, "to", e->s3);
        break;
    case DIFF_OP_REMOVAL:
    case DIFF_AGG_REMOVAL:
    case DIFF_AGG_CHANGE:
        kv(w, "agg", e->s2); kv(w, "kind", kind); kv(w, "table", e->s1);
        break;
    case DIFF_WINDOW_CHANGE:
        kv(w, "agg", e->s1); kv(w, "from", e->s2); kv(w, "kind", kind); kv(w, "to", e->s3);
        break;
    case DIFF_KEY_COLS_CHANGE:
        jsonw_key(w, "from"); jsonw_json(w, e->from_keys);
        kv(w, "kind", kind); kv(w, "table", e->s1);
        jsonw_key(w, "to"); jsonw_json(w, e->to_keys);
        break;
    case DIFF_DESCRIPTOR_CHANGE:
        kv(w, "kind", kind); kv(w, "name", e->s1);
        break;
    case DIFF_NEW_DESCRIPTOR:
        kv(w, "descriptor_kind", e->s1); kv(w, "kind", kind); kv(w, "name", e->s2);
        break;
    case DIFF_NEW_AGG:
        kv(w, "agg", e->s2); kv(w, "kind", kind); kv(w, "source", e->s3); kv(w, "table", e->s1);
        break;
    case DIFF_NEW_FIELD:
        kv(w, "event", e->s1); kv(w, "field", e->s2); kv(w, "kind", kind); kv(w, "type", e->s3);
        break;
    }
    jsonw_obj_end(w);
}

void diff_write_json(const reg_diff *d, jsonw *w) {
    jsonw_obj_begin(w);
    jsonw_key(w, "additive");
    jsonw_arr_begin(w);
    for (size_t i = 0; i < d->nadditive; i++) write_entry(&d->additive[i], w);
    jsonw_arr_end(w);
    jsonw_key(w, "already_present");
    jsonw_arr_begin(w);
    for (size_t i = 0; i < d->npresent; i++) jsonw_str(w, d->already_present[i]);
    jsonw_arr_end(w);
    jsonw_key(w, "destructive");
    jsonw_arr_begin(w);
    for (size_t i = 0; i < d->ndestructive; i++) write_entry(&d->destructive[i], w);
    jsonw_arr_end(w);
    jsonw_obj_end(w);
}

bool diff_entry_against_existing(const diff_entry *e) {
    return e->cls == DIFF_NEW_AGG || e->cls == DIFF_NEW_FIELD;
}

static bool strvec_has_sorted(const str_vec *sv, const char *s) {
    return sv->n && bsearch(&s, sv->v, sv->n, sizeof *sv->v, cmp_str) != NULL;
}

static void strvec_sort_unique(str_vec *sv) {
    if (sv->n == 0) return;
    qsort(sv->v, sv->n, sizeof *sv->v, cmp_str);
    size_t w = 0;
    for (size_t i = 0; i < sv->n; i++) {
        if (w > 0 && strcmp(sv->v[w - 1], sv->v[i]) == 0) free(sv->v[i]);
        else sv->v[w++] = sv->v[i];
    }
    sv->n = w;
}

size_t diff_removal_set(const reg_diff *d, bool include_additive, const diff_desc *cur,
                        size_t ncur, char ***out) {
    str_vec set = {0};
    for (size_t i = 0; i < d->ndestructive; i++)
        if (d->destructive[i].owner) strvec_push(&set, d->destructive[i].owner);
    if (include_additive)
        for (size_t i = 0; i < d->nadditive; i++)
            if (diff_entry_against_existing(&d->additive[i]))
                strvec_push(&set, d->additive[i].owner);
    strvec_sort_unique(&set);

    /* Cascade: registered derivations fed by a removed name, to a fixed point. The
     * loop runs at most once per registered derivation plus one. */
    bool grew = set.n > 0;
    while (grew) {
        grew = false;
        for (size_t i = 0; i < ncur; i++) {
            if (cur[i].is_event || strvec_has_sorted(&set, cur[i].name)) continue;
            const json_t *ups = json_object_get(cur[i].node, "upstreams");
            for (size_t j = 0; j < json_array_size(ups); j++) {
                const char *u = json_string_value(json_array_get(ups, j));
                if (u && strvec_has_sorted(&set, u)) {
                    strvec_push(&set, cur[i].name);
                    strvec_sort_unique(&set);
                    grew = true;
                    break;
                }
            }
        }
    }
    if (set.n == 0) {
        free(set.v);
        *out = NULL;
        return 0;
    }
    *out = set.v;
    return set.n;
}
