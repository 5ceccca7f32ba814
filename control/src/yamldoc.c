/*
 * yamldoc.c — libyaml event stream -> jansson tree.
 *
 * A small recursive-descent consumer of libyaml's event API: one function per node kind,
 * a depth counter and a node counter as the only state. Scalar typing follows the YAML 1.2
 * core schema for plain scalars only, so `"10"` stays a string and `10` is an integer.
 */
#include "yamldoc.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define YDOC_MAX_DEPTH 32
#define YDOC_MAX_NODES 100000
#define YDOC_MAX_FILE (1u << 20)

struct ydoc {
    yaml_parser_t parser;
    const char *name;
    char *err;
    size_t nodes;
};

static int ydoc_next(struct ydoc *y, yaml_event_t *ev) {
    if (!yaml_parser_parse(&y->parser, ev))
        return ctl_errf(y->err, "%s:%zu:%zu: YAML syntax error: %s", y->name, y->parser.problem_mark.line + 1,
                        y->parser.problem_mark.column + 1, y->parser.problem ? y->parser.problem : "unknown");
    return 0;
}

static json_t *scalar_value(const yaml_event_t *ev) {
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return json_stringn(v, n);
    if (n == 0 || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL")) return json_null();
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")) return json_true();
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")) return json_false();
    /* integer: [-+]?[0-9]+ */
    const char *p = v;
    if (*p == '-' || *p == '+') p++;
    if (*p && strspn(p, "0123456789") == strlen(p)) {
        errno = 0;
        char *end;
        long long ll = strtoll(v, &end, 10);
        if (!errno && !*end) return json_integer(ll);
    }
    /* float: digits with a '.' or exponent (no hex, no inf/nan: those stay strings) */
    if (strspn(v, "0123456789+-.eE") == n && strpbrk(v, "0123456789") && strpbrk(v, ".eE")) {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (!*end && !errno && isfinite(d)) return json_real(d);
    }
    return json_stringn(v, n);
}

static int parse_node(struct ydoc *y, yaml_event_t *ev, int depth, json_t **out);

static int check_event(struct ydoc *y, const yaml_event_t *ev) {
    if (ev->type == YAML_ALIAS_EVENT)
        return ctl_errf(y->err, "%s:%zu:%zu: YAML aliases are not accepted", y->name, ev->start_mark.line + 1,
                        ev->start_mark.column + 1);
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (ev->type == YAML_SCALAR_EVENT) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    }
    if (anchor)
        return ctl_errf(y->err, "%s:%zu:%zu: YAML anchors are not accepted", y->name, ev->start_mark.line + 1,
                        ev->start_mark.column + 1);
    if (tag)
        return ctl_errf(y->err, "%s:%zu:%zu: YAML tags are not accepted", y->name, ev->start_mark.line + 1,
                        ev->start_mark.column + 1);
    if (++y->nodes > YDOC_MAX_NODES) return ctl_errf(y->err, "%s: more than %d YAML nodes", y->name, YDOC_MAX_NODES);
    return 0;
}

static int parse_mapping(struct ydoc *y, int depth, json_t **out) {
    json_t *obj = json_object();
    yaml_event_t ev;
    for (;;) {
        if (ydoc_next(y, &ev) < 0) goto err;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (check_event(y, &ev) < 0) {
            yaml_event_delete(&ev);
            goto err;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            ctl_errf(y->err, "%s:%zu:%zu: mapping keys must be scalars", y->name, ev.start_mark.line + 1,
                     ev.start_mark.column + 1);
            yaml_event_delete(&ev);
            goto err;
        }
        char *key = ctl_strdup((const char *)ev.data.scalar.value);
        size_t line = ev.start_mark.line + 1, col = ev.start_mark.column + 1;
        yaml_event_delete(&ev);
        if (json_object_get(obj, key)) {
            ctl_errf(y->err, "%s:%zu:%zu: duplicate key '%s'", y->name, line, col, key);
            free(key);
            goto err;
        }
        json_t *val = NULL;
        if (ydoc_next(y, &ev) < 0) {
            free(key);
            goto err;
        }
        int rc = parse_node(y, &ev, depth + 1, &val);
        yaml_event_delete(&ev);
        if (rc < 0) {
            free(key);
            goto err;
        }
        json_object_set_new(obj, key, val);
        free(key);
    }
    *out = obj;
    return 0;
err:
    json_decref(obj);
    return -1;
}

static int parse_sequence(struct ydoc *y, int depth, json_t **out) {
    json_t *arr = json_array();
    yaml_event_t ev;
    for (;;) {
        if (ydoc_next(y, &ev) < 0) goto err;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        json_t *val = NULL;
        int rc = parse_node(y, &ev, depth + 1, &val);
        yaml_event_delete(&ev);
        if (rc < 0) goto err;
        json_array_append_new(arr, val);
    }
    *out = arr;
    return 0;
err:
    json_decref(arr);
    return -1;
}

/* ev is the node's first event (owned by the caller). */
static int parse_node(struct ydoc *y, yaml_event_t *ev, int depth, json_t **out) {
    if (depth > YDOC_MAX_DEPTH)
        return ctl_errf(y->err, "%s:%zu:%zu: nesting deeper than %d", y->name, ev->start_mark.line + 1,
                        ev->start_mark.column + 1, YDOC_MAX_DEPTH);
    if (check_event(y, ev) < 0) return -1;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: *out = scalar_value(ev); return 0;
    case YAML_MAPPING_START_EVENT: return parse_mapping(y, depth, out);
    case YAML_SEQUENCE_START_EVENT: return parse_sequence(y, depth, out);
    default:
        return ctl_errf(y->err, "%s:%zu:%zu: unexpected YAML event", y->name, ev->start_mark.line + 1,
                        ev->start_mark.column + 1);
    }
}

int ydoc_parse(const char *name, const char *text, size_t len, json_t **docs_out, char *err) {
    struct ydoc y = { .name = name, .err = err };
    json_t *docs = json_array();
    *docs_out = NULL;
    if (!yaml_parser_initialize(&y.parser)) abort();
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    yaml_event_t ev;
    int rc = -1;
    for (;;) {
        if (ydoc_next(&y, &ev) < 0) goto out;
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        yaml_event_delete(&ev);
        if (t != YAML_DOCUMENT_START_EVENT) continue;
        if (ydoc_next(&y, &ev) < 0) goto out;
        json_t *root = NULL;
        int prc = parse_node(&y, &ev, 0, &root);
        yaml_event_delete(&ev);
        if (prc < 0) goto out;
        json_array_append_new(docs, root);
        if (ydoc_next(&y, &ev) < 0) /* DOCUMENT_END */
            goto out;
        yaml_event_delete(&ev);
    }
    rc = 0;
    *docs_out = docs;
    docs = NULL;
out:
    json_decref(docs);
    yaml_parser_delete(&y.parser);
    return rc;
}

int ydoc_load_file(const char *path, json_t **docs_out, char *err) {
    char *text = NULL;
    size_t len = 0;
    *docs_out = NULL;
    if (ctl_read_file(path, YDOC_MAX_FILE, &text, &len, err) < 0) return -1;
    if (memchr(text, 0, len)) {
        free(text);
        return ctl_errf(err, "%s: contains NUL bytes", path);
    }
    int rc = ydoc_parse(path, text, len, docs_out, err);
    free(text);
    return rc;
}
