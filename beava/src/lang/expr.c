/*
 * expr.c - the expression language: lexer, recursive-descent parser, register-time type
 * inference and the per-row evaluator.
 *
 * Shape of a compiled expression: one flat array of nodes, linked by index. A node's
 * children are a singly linked list (first -> next -> ...), so the parser never needs a
 * per-node child array and the whole tree is freed with three free() calls. Names and
 * string literals live NUL-terminated in one byte pool (`strs`), referenced by offset.
 * Associative chains (`a + b - c`, `x and y and z`, `p or q`) are n-ary nodes evaluated by
 * a loop, so a long flat chain does not make the tree deep. Tree height is therefore
 * bounded by the nesting depth the parser admits (EXPR_MAX_DEPTH levels of parentheses,
 * call arguments and `not`, each counted), times the six grammar levels one nesting level
 * can contribute (or, and, not, comparison, +/-, * and /). The parser, the type checker
 * and the evaluator all recurse only along that bound: the worst-case input (255 levels
 * of `t or t and not a == a + a * (...)`) needs under 256 KiB of stack at -O2 and under
 * 1 MiB with ASan, so threads that parse or evaluate need at least that much stack.
 * A parsed tree is never written again: many threads may evaluate it at once.
 *
 * Grammar (usual precedence, binary operators accepted with or without parentheses):
 *   expr := or ; or := and ("or" and)* ; and := not ("and" not)* ;
 *   not  := "not" not | cmp ; cmp := add (cmpop add)?  -- at most one comparison
 *   add  := mul (("+"|"-") mul)* ; mul := atom (("*"|"/") atom)*
 *   atom := "(" "not" expr ")" | "(" expr ")" | IDENT "(" [expr ("," expr)*] ")"
 *         | IDENT | INT | FLOAT | STRING | true | false | null | "-" INT | "-" FLOAT
 * The "(" "not" expr ")" form keeps the reference's meaning: `not` directly after "("
 * negates everything up to the matching ")" (`(not a and b)` is `not (a and b)`), so every
 * expression the reference accepted means the same here. Elsewhere `not` binds as in
 * Python: tighter than and/or, looser than comparisons (`not a == 1 and b` is
 * `(not (a == 1)) and b`).
 *
 * Differences from the reference, all additive: unparenthesised binary operators, `not`
 * anywhere, string literal bytes kept verbatim (no Latin-1 mangling), double-quoted string
 * literals accepted as well as single-quoted ones (`country == "US"`).
 *
 * Post-parse rewrites as in the reference: the second argument of cast() given as a bare
 * identifier or a string literal becomes a type; `e == null` / `null == e` become
 * isnull(e) and `e != null` / `null != e` become not isnull(e).
 *
 * Evaluation never allocates: values point into the row, the expression's string pool or
 * the caller's expr_arena. The only values written to the arena are cast(x, str) results
 * of numbers (printed like Rust's Display for f64, as the reference does: 1.0 -> "1",
 * 1e20 -> "100000000000000000000", never an exponent); if the arena is full the cast
 * yields null (a row would need ~4 KiB of such strings in one evaluation for that). A
 * cast(s, float) of a numeric string longer than 255 bytes borrows the arena's free
 * space as scratch (not kept) and yields null if that does not fit either.
 *
 * Deliberately not done: constant folding, common subexpression elimination, and any
 * builtin beyond cast/isnull/quadkey (unknown functions parse, fail type checking, and
 * evaluate to null, as in the reference).
 */
#include "expr.h"
#include "jsonw.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE UINT32_MAX

enum nkind {
    N_NULL, N_BOOL, N_INT, N_FLOAT, N_STR,
    N_FIELD,        /* u.s = name */
    N_TYPE,         /* cast target literal; op = enum ctarget */
    N_CMP,          /* op = enum cmpop; two children */
    N_ARITH,        /* n-ary; every child after the first carries its operator in link */
    N_AND, N_OR,    /* n-ary */
    N_NOT,
    N_ISNULL, N_CAST, N_QUADKEY,
    N_CALL,         /* unknown function; u.s = name */
};

enum cmpop { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE };
enum arop { A_ADD, A_SUB, A_MUL, A_DIV };
enum ctarget { CT_STR, CT_INT, CT_FLOAT, CT_BOOL, CT_UNKNOWN };

typedef struct node {
    uint8_t kind;
    uint8_t op;
    uint8_t link;       /* arithmetic operator joining this node to its previous sibling */
    uint32_t pos;       /* byte offset in the source (for error messages) */
    uint32_t first;     /* first child or NONE */
    uint32_t next;      /* next sibling or NONE */
    uint32_t nkids;
    int32_t hint;       /* N_FIELD: the field's position in the bound schema (expr_bind_schema), -1 none */
    union {
        bool b;
        int64_t i;
        double f;
        struct { uint32_t off, len; } s;
    } u;
} node;

struct expr {
    node *nodes;
    uint32_t nnodes, capnodes;
    char *strs;
    size_t nstrs, capstrs;
    uint32_t root;
};

/* ------------------------------------------------------------------------------------ */
/* Lexer                                                                                 */

enum tkind {
    T_EOF, T_ERR, T_LP, T_RP, T_COMMA, T_PLUS, T_MINUS, T_STAR, T_SLASH,
    T_GT, T_GE, T_LT, T_LE, T_EQ, T_NE,
    T_AND, T_OR, T_NOT, T_TRUE, T_FALSE, T_NULL,
    T_IDENT, T_INT, T_FLOAT, T_STR,
};

typedef struct token {
    enum tkind kind;
    size_t start, end;          /* byte range in the source */
    int64_t i;
    double f;
    uint32_t soff, slen;        /* T_STR: unescaped bytes in the pool */
} token;

typedef struct parser {
    const char *src;
    size_t len, pos;
    token cur;
    int depth;
    bool failed;
    expr *e;
    bv_err *err;
} parser;

/* Render the source bytes [start, end) for an error message: at most 40 bytes, printable
 * ASCII verbatim, everything else as \xNN (reasons end up in JSON and must stay UTF-8). */
static void snippet(const char *s, size_t start, size_t end, char *out, size_t cap) {
    size_t o = 0;
    bool cut = false;
    if (end - start > 40) { end = start + 40; cut = true; }
    for (size_t i = start; i < end && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        }
    }
    if (cut && o + 4 < cap) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = 0;
}

static void fail(parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(parser *p, size_t at, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = true;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bv_err_set(p->err, "invalid_expression", NULL, "at byte %zu: %s", at, msg);
}

/* "unexpected token 'x'" / "unexpected end of input" for the current token. */
static void fail_tok(parser *p, const char *what) {
    if (p->cur.kind == T_ERR) return;       /* the lexer already reported */
    char msg[300], sn[200];
    if (p->cur.kind == T_EOF) {
        snprintf(msg, sizeof msg, "unexpected end of input%s%s", what ? ", " : "", what ? what : "");
    } else {
        snippet(p->src, p->cur.start, p->cur.end, sn, sizeof sn);
        snprintf(msg, sizeof msg, "unexpected token '%s'%s%s", sn, what ? ", " : "", what ? what : "");
    }
    fail(p, p->cur.start, "%s", msg);
}

static bool pool_reserve(parser *p, size_t n) {
    expr *e = p->e;
    if (e->nstrs + n <= e->capstrs) return true;
    size_t cap = e->capstrs ? e->capstrs : 64;
    while (cap < e->nstrs + n) cap *= 2;
    char *np = realloc(e->strs, cap);
    if (!np) { fail(p, p->pos, "out of memory"); return false; }
    e->strs = np;
    e->capstrs = cap;
    return true;
}

static bool pool_put(parser *p, const char *s, size_t n, uint32_t *off) {
    expr *e = p->e;
    if (!pool_reserve(p, n + 1)) return false;
    *off = (uint32_t)e->nstrs;
    if (n) memcpy(e->strs + e->nstrs, s, n);
    e->strs[e->nstrs + n] = 0;
    e->nstrs += n + 1;
    return true;
}

static bool is_ident_start(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
static bool is_ident_char(unsigned char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static void lex_string(parser *p, size_t start, char quote) {
    /* Unescape into the pool: \\ -> \, \<quote> -> quote, any other \c kept as both bytes.
     * The output is never longer than the rest of the source, so one reservation does. */
    expr *e = p->e;
    if (!pool_reserve(p, p->len - start + 1)) { p->cur.kind = T_ERR; return; }
    uint32_t off = (uint32_t)e->nstrs;
    char *o = e->strs + off;
    size_t i = start + 1;
    for (;;) {
        if (i >= p->len) {
            fail(p, start, "unterminated string literal");
            p->cur.kind = T_ERR;
            return;
        }
        char c = p->src[i];
        if (c == quote) { i++; break; }
        if (c == '\\') {
            if (i + 1 >= p->len) {
                fail(p, start, "unterminated string literal");
                p->cur.kind = T_ERR;
                return;
            }
            char d = p->src[i + 1];
            if (d != '\\' && d != quote) *o++ = '\\';
            *o++ = d;
            i += 2;
        } else {
            *o++ = c;
            i++;
        }
    }
    *o = 0;
    p->cur.soff = off;
    p->cur.slen = (uint32_t)(o - (e->strs + off));
    e->nstrs += (size_t)p->cur.slen + 1;
    p->cur.kind = T_STR;
    p->cur.end = i;
    p->pos = i;
}

static void lex_number(parser *p, size_t start) {
    size_t i = start;
    while (i < p->len && is_digit((unsigned char)p->src[i])) i++;
    if (i + 1 < p->len && p->src[i] == '.' && is_digit((unsigned char)p->src[i + 1])) {
        i++;
        while (i < p->len && is_digit((unsigned char)p->src[i])) i++;
        if (i < p->len && (p->src[i] == 'e' || p->src[i] == 'E')) {
            i++;
            if (i < p->len && (p->src[i] == '+' || p->src[i] == '-')) i++;
            size_t ds = i;
            while (i < p->len && is_digit((unsigned char)p->src[i])) i++;
            if (i == ds) {
                char sn[200];
                snippet(p->src, start, i, sn, sizeof sn);
                fail(p, start, "invalid float literal '%s'", sn);
                p->cur.kind = T_ERR;
                return;
            }
        }
        /* The token is exactly what strtod accepts here, and the source is NUL-terminated. */
        p->cur.kind = T_FLOAT;
        p->cur.f = strtod(p->src + start, NULL);
    } else {
        if (i < p->len && (p->src[i] == 'e' || p->src[i] == 'E')) {
            size_t j = i + 1;
            while (j < p->len && is_ident_char((unsigned char)p->src[j])) j++;
            char sn[200];
            snippet(p->src, start, j, sn, sizeof sn);
            fail(p, start, "invalid number literal '%s' (an exponent needs a decimal point, e.g. 1.0e5)", sn);
            p->cur.kind = T_ERR;
            return;
        }
        int64_t v = 0;
        for (size_t k = start; k < i; k++) {
            int d = p->src[k] - '0';
            if (v > (INT64_MAX - d) / 10) {
                char sn[200];
                snippet(p->src, start, i, sn, sizeof sn);
                fail(p, start, "integer literal '%s' out of range", sn);
                p->cur.kind = T_ERR;
                return;
            }
            v = v * 10 + d;
        }
        p->cur.kind = T_INT;
        p->cur.i = v;
    }
    p->cur.end = i;
    p->pos = i;
}

/* Scan the next token into p->cur. After an error the token is T_ERR and stays so. */
static void lex(parser *p) {
    if (p->failed) { p->cur.kind = T_ERR; return; }
    while (p->pos < p->len) {
        char c = p->src[p->pos];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
        p->pos++;
    }
    size_t s = p->pos;
    p->cur.start = s;
    p->cur.end = s;
    if (s >= p->len) { p->cur.kind = T_EOF; return; }
    unsigned char c = (unsigned char)p->src[s];
    char c2 = s + 1 < p->len ? p->src[s + 1] : 0;
    enum tkind k;
    size_t n = 1;
    switch (c) {
    case '(': k = T_LP; break;
    case ')': k = T_RP; break;
    case ',': k = T_COMMA; break;
    case '+': k = T_PLUS; break;
    case '-': k = T_MINUS; break;
    case '*': k = T_STAR; break;
    case '/': k = T_SLASH; break;
    case '>': if (c2 == '=') { k = T_GE; n = 2; } else k = T_GT; break;
    case '<': if (c2 == '=') { k = T_LE; n = 2; } else k = T_LT; break;
    case '=':
        if (c2 != '=') {
            fail(p, s, "unexpected character '='; use '==' for equality");
            p->cur.kind = T_ERR;
            return;
        }
        k = T_EQ; n = 2;
        break;
    case '!':
        if (c2 != '=') {
            fail(p, s, "unexpected character '!'; use 'not' for negation");
            p->cur.kind = T_ERR;
            return;
        }
        k = T_NE; n = 2;
        break;
    case '\'':
    case '"':
        lex_string(p, s, (char)c);
        return;
    default:
        if (is_digit(c)) { lex_number(p, s); return; }
        if (is_ident_start(c)) {
            size_t i = s + 1;
            while (i < p->len && is_ident_char((unsigned char)p->src[i])) i++;
            if (i + 1 < p->len && p->src[i] == '.' && is_ident_start((unsigned char)p->src[i + 1])) {
                i += 2;
                while (i < p->len && is_ident_char((unsigned char)p->src[i])) i++;
            }
            size_t len = i - s;
            const char *t = p->src + s;
            k = T_IDENT;
            if (len == 3 && memcmp(t, "and", 3) == 0) k = T_AND;
            else if (len == 2 && memcmp(t, "or", 2) == 0) k = T_OR;
            else if (len == 3 && memcmp(t, "not", 3) == 0) k = T_NOT;
            else if (len == 4 && memcmp(t, "true", 4) == 0) k = T_TRUE;
            else if (len == 5 && memcmp(t, "false", 5) == 0) k = T_FALSE;
            else if (len == 4 && memcmp(t, "null", 4) == 0) k = T_NULL;
            n = len;
            break;
        }
        {
            char sn[32];
            snippet(p->src, s, s + 1, sn, sizeof sn);
            fail(p, s, "unexpected character '%s'", sn);
            p->cur.kind = T_ERR;
            return;
        }
    }
    p->cur.kind = k;
    p->cur.end = s + n;
    p->pos = s + n;
}

/* ------------------------------------------------------------------------------------ */
/* Parser                                                                                */

#define ND(p, i) (&(p)->e->nodes[(i)])

static uint32_t new_node(parser *p, enum nkind kind, size_t pos) {
    expr *e = p->e;
    if (e->nnodes == e->capnodes) {
        uint32_t cap = e->capnodes ? e->capnodes * 2 : 16;
        node *np = realloc(e->nodes, (size_t)cap * sizeof *np);
        if (!np) { fail(p, pos, "out of memory"); return NONE; }
        e->nodes = np;
        e->capnodes = cap;
    }
    uint32_t id = e->nnodes++;
    node *n = &e->nodes[id];
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->pos = (uint32_t)pos;
    n->first = NONE;
    n->next = NONE;
    n->hint = -1;
    return id;
}

/* Append child c to parent's list; *tail tracks the last child (NONE when empty). */
static void add_kid(parser *p, uint32_t parent, uint32_t *tail, uint32_t c) {
    ND(p, c)->next = NONE;
    if (*tail == NONE) ND(p, parent)->first = c;
    else ND(p, *tail)->next = c;
    *tail = c;
    ND(p, parent)->nkids++;
}

static uint32_t wrap1(parser *p, enum nkind kind, size_t pos, uint32_t kid) {
    uint32_t n = new_node(p, kind, pos);
    if (n == NONE) return NONE;
    uint32_t tail = NONE;
    add_kid(p, n, &tail, kid);
    return n;
}

static uint32_t parse_or(parser *p);

static bool enter(parser *p) {
    if (++p->depth > EXPR_MAX_DEPTH) {
        fail(p, p->cur.start, "expression nesting exceeds the maximum depth of %d", EXPR_MAX_DEPTH);
        return false;
    }
    return true;
}

static enum ctarget ctarget_of(const char *s, size_t n) {
    if (n == 3 && memcmp(s, "str", 3) == 0) return CT_STR;
    if (n == 3 && memcmp(s, "int", 3) == 0) return CT_INT;
    if (n == 5 && memcmp(s, "float", 5) == 0) return CT_FLOAT;
    if (n == 4 && memcmp(s, "bool", 4) == 0) return CT_BOOL;
    return CT_UNKNOWN;
}

static uint32_t parse_call(parser *p, size_t name_start, size_t name_end) {
    const char *name = p->src + name_start;
    size_t nlen = name_end - name_start;
    enum nkind kind = N_CALL;
    if (nlen == 4 && memcmp(name, "cast", 4) == 0) kind = N_CAST;
    else if (nlen == 6 && memcmp(name, "isnull", 6) == 0) kind = N_ISNULL;
    else if (nlen == 7 && memcmp(name, "quadkey", 7) == 0) kind = N_QUADKEY;
    uint32_t call = new_node(p, kind, name_start);
    if (call == NONE) return NONE;
    if (kind == N_CALL) {
        uint32_t off;
        if (!pool_put(p, name, nlen, &off)) return NONE;
        ND(p, call)->u.s.off = off;
        ND(p, call)->u.s.len = (uint32_t)nlen;
    }
    lex(p);                                     /* consume '(' */
    uint32_t tail = NONE;
    if (p->cur.kind != T_RP) {
        for (;;) {
            uint32_t a = parse_or(p);                 /* the call already counted */
            if (a == NONE) return NONE;
            add_kid(p, call, &tail, a);
            if (p->cur.kind != T_COMMA) break;
            lex(p);
        }
    }
    if (p->cur.kind != T_RP) { fail_tok(p, "expected ',' or ')'"); return NONE; }
    lex(p);
    /* cast(x, int) / cast(x, 'int'): the second argument is a type, not a field. */
    if (kind == N_CAST && ND(p, call)->nkids == 2) {
        node *t = ND(p, ND(p, call)->first);
        uint32_t ti = t->next;
        node *tn = ND(p, ti);
        if (tn->kind == N_FIELD || tn->kind == N_STR) {
            tn->op = (uint8_t)ctarget_of(p->e->strs + tn->u.s.off, tn->u.s.len);
            tn->kind = N_TYPE;
        }
    }
    return call;
}

static uint32_t parse_atom(parser *p) {
    token t = p->cur;
    switch (t.kind) {
    case T_LP: {
        lex(p);
        if (!enter(p)) return NONE;
        uint32_t inner;
        if (p->cur.kind == T_NOT) {
            /* Reference form: "(" "not" expr ")" negates the whole parenthesised text. */
            size_t at = p->cur.start;
            lex(p);
            uint32_t operand = parse_or(p);           /* the "(" already counted */
            if (operand == NONE) return NONE;
            inner = wrap1(p, N_NOT, at, operand);
        } else {
            inner = parse_or(p);
        }
        p->depth--;
        if (inner == NONE) return NONE;
        if (p->cur.kind != T_RP) { fail_tok(p, "expected ')'"); return NONE; }
        lex(p);
        return inner;
    }
    case T_IDENT: {
        lex(p);
        if (p->cur.kind == T_LP) {
            if (!enter(p)) return NONE;
            uint32_t c = parse_call(p, t.start, t.end);
            p->depth--;
            return c;
        }
        uint32_t n = new_node(p, N_FIELD, t.start);
        if (n == NONE) return NONE;
        uint32_t off;
        if (!pool_put(p, p->src + t.start, t.end - t.start, &off)) return NONE;
        ND(p, n)->u.s.off = off;
        ND(p, n)->u.s.len = (uint32_t)(t.end - t.start);
        return n;
    }
    case T_INT:
    case T_FLOAT:
    case T_STR:
    case T_TRUE:
    case T_FALSE:
    case T_NULL: {
        static const enum nkind kinds[] = {
            [T_INT] = N_INT, [T_FLOAT] = N_FLOAT, [T_STR] = N_STR,
            [T_TRUE] = N_BOOL, [T_FALSE] = N_BOOL, [T_NULL] = N_NULL,
        };
        uint32_t n = new_node(p, kinds[t.kind], t.start);
        if (n == NONE) return NONE;
        node *nd = ND(p, n);
        if (t.kind == T_INT) nd->u.i = t.i;
        else if (t.kind == T_FLOAT) nd->u.f = t.f;
        else if (t.kind == T_STR) { nd->u.s.off = t.soff; nd->u.s.len = t.slen; }
        else if (t.kind == T_TRUE) nd->u.b = true;
        else if (t.kind == T_FALSE) nd->u.b = false;
        lex(p);
        return n;
    }
    case T_MINUS: {
        lex(p);
        token num = p->cur;
        if (num.kind != T_INT && num.kind != T_FLOAT) {
            fail(p, t.start, "'-' must be followed by a number literal");
            return NONE;
        }
        uint32_t n = new_node(p, num.kind == T_INT ? N_INT : N_FLOAT, t.start);
        if (n == NONE) return NONE;
        if (num.kind == T_INT) ND(p, n)->u.i = -num.i;      /* num.i >= 0: no overflow */
        else ND(p, n)->u.f = -num.f;
        lex(p);
        return n;
    }
    case T_AND:
    case T_OR:
    case T_NOT: {
        char sn[16];
        snippet(p->src, t.start, t.end, sn, sizeof sn);
        fail(p, t.start, "unexpected keyword '%s', expected an expression", sn);
        return NONE;
    }
    default:
        fail_tok(p, "expected an expression");
        return NONE;
    }
}

/* mul := atom (("*"|"/") atom)* ; add := mul (("+"|"-") mul)* -- built as one n-ary node. */
static uint32_t parse_arith(parser *p, bool additive) {
    uint32_t left = additive ? parse_arith(p, false) : parse_atom(p);
    if (left == NONE) return NONE;
    enum tkind a = additive ? T_PLUS : T_STAR, b = additive ? T_MINUS : T_SLASH;
    if (p->cur.kind != a && p->cur.kind != b) return left;
    uint32_t n = new_node(p, N_ARITH, ND(p, left)->pos);
    if (n == NONE) return NONE;
    uint32_t tail = NONE;
    add_kid(p, n, &tail, left);
    while (p->cur.kind == a || p->cur.kind == b) {
        enum arop op = p->cur.kind == T_PLUS ? A_ADD : p->cur.kind == T_MINUS ? A_SUB
                     : p->cur.kind == T_STAR ? A_MUL : A_DIV;
        lex(p);
        uint32_t r = additive ? parse_arith(p, false) : parse_atom(p);
        if (r == NONE) return NONE;
        add_kid(p, n, &tail, r);
        ND(p, r)->link = (uint8_t)op;
    }
    return n;
}

static int cmpop_of(enum tkind k) {
    switch (k) {
    case T_EQ: return C_EQ;
    case T_NE: return C_NE;
    case T_LT: return C_LT;
    case T_LE: return C_LE;
    case T_GT: return C_GT;
    case T_GE: return C_GE;
    default: return -1;
    }
}

static uint32_t parse_cmp(parser *p) {
    uint32_t l = parse_arith(p, true);
    if (l == NONE) return NONE;
    int op = cmpop_of(p->cur.kind);
    if (op < 0) return l;
    size_t at = p->cur.start;
    lex(p);
    uint32_t r = parse_arith(p, true);
    if (r == NONE) return NONE;
    if (cmpop_of(p->cur.kind) >= 0) {
        char sn[16];
        snippet(p->src, p->cur.start, p->cur.end, sn, sizeof sn);
        fail(p, p->cur.start, "comparisons cannot be chained (second operator '%s'); use 'and'", sn);
        return NONE;
    }
    /* (e == null) -> isnull(e); (e != null) -> not isnull(e); either side. */
    if (op == C_EQ || op == C_NE) {
        uint32_t other = NONE;
        if (ND(p, r)->kind == N_NULL) other = l;
        else if (ND(p, l)->kind == N_NULL) other = r;
        if (other != NONE) {
            uint32_t isn = wrap1(p, N_ISNULL, at, other);
            if (isn == NONE) return NONE;
            return op == C_EQ ? isn : wrap1(p, N_NOT, at, isn);
        }
    }
    uint32_t n = new_node(p, N_CMP, at);
    if (n == NONE) return NONE;
    ND(p, n)->op = (uint8_t)op;
    uint32_t tail = NONE;
    add_kid(p, n, &tail, l);
    add_kid(p, n, &tail, r);
    return n;
}

static uint32_t parse_not(parser *p) {
    if (p->cur.kind != T_NOT) return parse_cmp(p);
    size_t at = p->cur.start;
    lex(p);
    if (!enter(p)) return NONE;
    uint32_t operand = parse_not(p);
    p->depth--;
    if (operand == NONE) return NONE;
    return wrap1(p, N_NOT, at, operand);
}

/* and := not ("and" not)* ; or := and ("or" and)* -- each an n-ary node. */
static uint32_t parse_logic(parser *p, bool is_or) {
    uint32_t left = is_or ? parse_logic(p, false) : parse_not(p);
    if (left == NONE) return NONE;
    enum tkind k = is_or ? T_OR : T_AND;
    if (p->cur.kind != k) return left;
    uint32_t n = new_node(p, is_or ? N_OR : N_AND, p->cur.start);
    if (n == NONE) return NONE;
    uint32_t tail = NONE;
    add_kid(p, n, &tail, left);
    while (p->cur.kind == k) {
        lex(p);
        uint32_t r = is_or ? parse_logic(p, false) : parse_not(p);
        if (r == NONE) return NONE;
        add_kid(p, n, &tail, r);
    }
    return n;
}

static uint32_t parse_or(parser *p) { return parse_logic(p, true); }

void expr_free(expr *e) {
    if (!e) return;
    free(e->nodes);
    free(e->strs);
    free(e);
}

expr *expr_parse(const char *src, bv_err *err) {
    if (!src) {
        bv_err_set(err, "invalid_expression", NULL, "at byte 0: missing expression");
        return NULL;
    }
    size_t len = 0;
    while (len <= EXPR_MAX_SOURCE && src[len]) len++;
    if (len > EXPR_MAX_SOURCE) {
        bv_err_set(err, "invalid_expression", NULL,
                   "at byte %d: expression longer than %d bytes", EXPR_MAX_SOURCE, EXPR_MAX_SOURCE);
        return NULL;
    }
    parser p;
    memset(&p, 0, sizeof p);
    p.src = src;
    p.len = len;
    p.err = err;
    p.e = calloc(1, sizeof *p.e);
    if (!p.e) {
        bv_err_set(err, "invalid_expression", NULL, "at byte 0: out of memory");
        return NULL;
    }
    lex(&p);
    if (p.cur.kind == T_EOF) {
        fail(&p, p.cur.start, "empty expression");
        goto err;
    }
    p.e->root = parse_or(&p);
    if (p.e->root == NONE || p.failed) goto err;
    if (p.cur.kind != T_EOF) {
        fail_tok(&p, "expected end of expression");
        goto err;
    }
    return p.e;
err:
    if (!p.failed) fail(&p, p.cur.start, "syntax error");
    expr_free(p.e);
    return NULL;
}

bool expr_foreach_field(const expr *e, bool (*cb)(void *ctx, const char *field), void *ctx) {
    /* Every N_FIELD node in the pool belongs to the tree (rewrites only orphan null
     * literals), so a linear scan visits each reference once, in source order. */
    for (uint32_t i = 0; i < e->nnodes; i++)
        if (e->nodes[i].kind == N_FIELD && !cb(ctx, e->strs + e->nodes[i].u.s.off)) return false;
    return true;
}

void expr_bind_schema(expr *e, const bv_schema *schema) {
    char name[EXPR_BIND_NAME_MAX];
    for (uint32_t i = 0; i < e->nnodes; i++) {
        node *n = &e->nodes[i];
        if (n->kind != N_FIELD) continue;
        n->hint = -1;
        if (n->u.s.len >= sizeof name) continue;       /* no hint: found by name */
        memcpy(name, e->strs + n->u.s.off, n->u.s.len);
        name[n->u.s.len] = 0;
        n->hint = bv_schema_find(schema, name, NULL);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Type inference                                                                       */

static const char *tname(int t) {
    return t == EXPR_TYPE_NULL ? "null" : bv_wtype_name((bv_wtype)t);
}

static bool is_num_or_null(int t) { return t == WT_I64 || t == WT_F64 || t == EXPR_TYPE_NULL; }

static const char *const arop_names[] = { "+", "-", "*", "/" };
static const char *const cmpop_names[] = { "==", "!=", "<", "<=", ">", ">=" };

static int tc(const expr *e, const node *n, const bv_schema *s, int *out, bv_err *err) {
    switch ((enum nkind)n->kind) {
    case N_NULL: *out = EXPR_TYPE_NULL; return 0;
    case N_BOOL: *out = WT_BOOL; return 0;
    case N_INT: *out = WT_I64; return 0;
    case N_FLOAT: *out = WT_F64; return 0;
    case N_STR:
    case N_TYPE: *out = WT_STR; return 0;
    case N_FIELD: {
        bv_wtype t;
        if (bv_schema_find(s, e->strs + n->u.s.off, &t) < 0) {
            bv_err_set(err, "invalid_expression", NULL, "field '%s' not found", e->strs + n->u.s.off);
            return -1;
        }
        *out = (int)t;
        return 0;
    }
    case N_CMP: {
        int l, r;
        const node *a = &e->nodes[n->first], *b = &e->nodes[a->next];
        if (tc(e, a, s, &l, err) < 0 || tc(e, b, s, &r, err) < 0) return -1;
        bool ok = l == EXPR_TYPE_NULL || r == EXPR_TYPE_NULL || l == r ||
                  ((l == WT_I64 || l == WT_F64) && (r == WT_I64 || r == WT_F64));
        if (!ok) {
            bv_err_set(err, "invalid_expression", NULL, "at byte %u: cannot compare %s with %s using '%s'",
                       (unsigned)n->pos, tname(l), tname(r), cmpop_names[n->op]);
            return -1;
        }
        *out = WT_BOOL;
        return 0;
    }
    case N_ARITH: {
        int acc = 0;
        for (uint32_t k = n->first; k != NONE; k = e->nodes[k].next) {
            const node *c = &e->nodes[k];
            int t;
            if (tc(e, c, s, &t, err) < 0) return -1;
            if (k == n->first) {
                acc = t;
                if (!is_num_or_null(t)) {
                    const node *op = &e->nodes[c->next];
                    bv_err_set(err, "invalid_expression", NULL,
                               "at byte %u: operator '%s' needs numeric operands (i64 or f64), got %s",
                               (unsigned)c->pos, arop_names[op->link], tname(t));
                    return -1;
                }
                continue;
            }
            if (!is_num_or_null(t)) {
                bv_err_set(err, "invalid_expression", NULL,
                           "at byte %u: operator '%s' needs numeric operands (i64 or f64), got %s",
                           (unsigned)c->pos, arop_names[c->link], tname(t));
                return -1;
            }
            if (acc == EXPR_TYPE_NULL) acc = t;
            else if (t == EXPR_TYPE_NULL) { /* keep acc */ }
            else if (acc == WT_F64 || t == WT_F64) acc = WT_F64;
            else acc = WT_I64;
        }
        *out = acc;
        return 0;
    }
    case N_AND:
    case N_OR:
    case N_NOT: {
        for (uint32_t k = n->first; k != NONE; k = e->nodes[k].next) {
            int t;
            if (tc(e, &e->nodes[k], s, &t, err) < 0) return -1;
            if (t != WT_BOOL && t != EXPR_TYPE_NULL) {
                bv_err_set(err, "invalid_expression", NULL, "at byte %u: '%s' needs bool operands, got %s",
                           (unsigned)e->nodes[k].pos,
                           n->kind == N_AND ? "and" : n->kind == N_OR ? "or" : "not", tname(t));
                return -1;
            }
        }
        *out = WT_BOOL;
        return 0;
    }
    case N_ISNULL: {
        if (n->nkids != 1) {
            bv_err_set(err, "invalid_expression", NULL, "at byte %u: isnull() takes 1 argument, got %u",
                       (unsigned)n->pos, (unsigned)n->nkids);
            return -1;
        }
        int t;
        if (tc(e, &e->nodes[n->first], s, &t, err) < 0) return -1;
        *out = WT_BOOL;
        return 0;
    }
    case N_CAST: {
        if (n->nkids != 2) {
            bv_err_set(err, "invalid_expression", NULL, "at byte %u: cast() takes 2 arguments, got %u",
                       (unsigned)n->pos, (unsigned)n->nkids);
            return -1;
        }
        int t;
        const node *a = &e->nodes[n->first], *b = &e->nodes[a->next];
        if (tc(e, a, s, &t, err) < 0) return -1;
        static const int ttypes[] = { [CT_STR] = WT_STR, [CT_INT] = WT_I64,
                                      [CT_FLOAT] = WT_F64, [CT_BOOL] = WT_BOOL };
        if (b->kind != N_TYPE || b->op == CT_UNKNOWN) {
            bv_err_set(err, "invalid_expression", NULL,
                       "at byte %u: cast target must be one of str, int, float, bool", (unsigned)b->pos);
            return -1;
        }
        *out = ttypes[b->op];
        return 0;
    }
    case N_QUADKEY:
        bv_err_set(err, "invalid_expression", NULL,
                   "at byte %u: unknown function 'quadkey' (only cast and isnull are allowed here)",
                   (unsigned)n->pos);
        return -1;
    case N_CALL:
        bv_err_set(err, "invalid_expression", NULL,
                   "at byte %u: unknown function '%s' (only cast and isnull are allowed here)",
                   (unsigned)n->pos, e->strs + n->u.s.off);
        return -1;
    }
    bv_err_set(err, "invalid_expression", NULL, "internal error: bad expression node");
    return -1;
}

int expr_typecheck(const expr *e, const bv_schema *schema, int *out, bv_err *err) {
    /* Unknown fields first, in source order, as the reference reports them. */
    for (uint32_t i = 0; i < e->nnodes; i++) {
        const node *n = &e->nodes[i];
        if (n->kind == N_FIELD && bv_schema_find(schema, e->strs + n->u.s.off, NULL) < 0) {
            bv_err_set(err, "invalid_expression", NULL, "field '%s' not found", e->strs + n->u.s.off);
            return -1;
        }
    }
    int t;
    if (tc(e, &e->nodes[e->root], schema, &t, err) < 0) return -1;
    *out = t;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Evaluation                                                                           */

/* Rust's `f64 as i64`: truncate, saturate at the ends, NaN -> 0. */
static int64_t f64_to_i64(double d) {
    if (isnan(d)) return 0;
    if (d >= 9223372036854775808.0) return INT64_MAX;
    if (d <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)d;
}

static bv_value arith(int op, bv_value a, bv_value b) {
    if (a.kind == BV_I64 && b.kind == BV_I64) {
        int64_t x = a.u.i, y = b.u.i, r;
        switch (op) {
        case A_ADD:
            if (__builtin_add_overflow(x, y, &r)) r = y > 0 ? INT64_MAX : INT64_MIN;
            return bv_i64(r);
        case A_SUB:
            if (__builtin_sub_overflow(x, y, &r)) r = y < 0 ? INT64_MAX : INT64_MIN;
            return bv_i64(r);
        case A_MUL:
            if (__builtin_mul_overflow(x, y, &r)) r = ((x < 0) != (y < 0)) ? INT64_MIN : INT64_MAX;
            return bv_i64(r);
        default:
            if (y == 0) return bv_null();
            if (x == INT64_MIN && y == -1) return bv_i64(INT64_MAX);
            return bv_i64(x / y);
        }
    }
    double x, y;
    if (!bv_as_f64(&a, &x) || !bv_as_f64(&b, &y)) return bv_null();
    switch (op) {
    case A_ADD: return bv_f64(x + y);
    case A_SUB: return bv_f64(x - y);
    case A_MUL: return bv_f64(x * y);
    default: return bv_f64(x / y);
    }
}

static bv_value compare(int op, const bv_value *a, const bv_value *b) {
    int c;
    if (a->kind == BV_I64 && b->kind == BV_I64) {
        c = (a->u.i > b->u.i) - (a->u.i < b->u.i);
    } else if ((a->kind == BV_I64 || a->kind == BV_F64) && (b->kind == BV_I64 || b->kind == BV_F64)) {
        double x, y;
        bv_as_f64(a, &x);
        bv_as_f64(b, &y);
        if (isnan(x) || isnan(y)) return bv_bool(false);      /* every NaN comparison, != too */
        c = (x > y) - (x < y);
    } else if (a->kind == BV_STR && b->kind == BV_STR) {
        size_t n = a->u.s.len < b->u.s.len ? a->u.s.len : b->u.s.len;
        c = n ? memcmp(a->u.s.ptr, b->u.s.ptr, n) : 0;
        if (c == 0) c = (a->u.s.len > b->u.s.len) - (a->u.s.len < b->u.s.len);
    } else if (a->kind == BV_BOOL && b->kind == BV_BOOL) {
        c = (int)a->u.b - (int)b->u.b;
    } else {
        return bv_null();                                     /* null, cross-type, list/map */
    }
    switch (op) {
    case C_EQ: return bv_bool(c == 0);
    case C_NE: return bv_bool(c != 0);
    case C_LT: return bv_bool(c < 0);
    case C_LE: return bv_bool(c <= 0);
    case C_GT: return bv_bool(c > 0);
    default: return bv_bool(c >= 0);
    }
}

static char *arena_alloc(expr_arena *a, size_t n) {
    if (!a || n > sizeof a->buf - a->used) return NULL;
    char *p = a->buf + a->used;
    a->used += n;
    return p;
}

/* Rust's Display for f64 (what the reference's cast(x, str) prints): shortest round-trip
 * digits, never an exponent, no ".0" on integral values; NaN, inf, -inf. The digits come
 * from bv_fmt_f64, the one place that decides shortest forms. */
static bv_value f64_display(double v, expr_arena *a) {
    if (isnan(v)) return bv_str("NaN", 3);
    if (isinf(v)) return v > 0 ? bv_str("inf", 3) : bv_str("-inf", 4);
    char tmp[48];
    int n = bv_fmt_f64(v, tmp);
    char *e = memchr(tmp, 'e', (size_t)n);
    if (!e) {
        if (n >= 2 && tmp[n - 2] == '.' && tmp[n - 1] == '0') n -= 2;
        char *o = arena_alloc(a, (size_t)n);
        if (!o) return bv_null();
        memcpy(o, tmp, (size_t)n);
        return bv_str(o, (size_t)n);
    }
    /* [-]d[.ddd]eX -> plain notation. */
    int exp10 = atoi(e + 1);
    char digits[24];
    int nd = 0;
    bool neg = tmp[0] == '-';
    for (char *q = tmp + neg; q < e; q++)
        if (*q != '.') digits[nd++] = *q;
    /* value = d1.d2d3... * 10^exp10. bv_fmt_f64 uses an exponent only for exp10 >= 16
     * (then nd <= 17 <= exp10 + 1: an integer, zero-padded) or exp10 <= -6 ("0.000ddd").
     * At most 1 + 2 + 323 + 17 bytes. */
    size_t need = (size_t)neg + (exp10 >= 0 ? (size_t)exp10 + 1 : 2 + (size_t)(-exp10 - 1) + (size_t)nd);
    char *o = arena_alloc(a, need);
    if (!o) return bv_null();
    char *w = o;
    if (neg) *w++ = '-';
    if (exp10 >= 0) {
        for (int i = 0; i <= exp10; i++) *w++ = i < nd ? digits[i] : '0';
    } else {
        *w++ = '0';
        *w++ = '.';
        for (int i = 0; i < -exp10 - 1; i++) *w++ = '0';
        for (int i = 0; i < nd; i++) *w++ = digits[i];
    }
    return bv_str(o, need);
}

/* Rust's str::parse::<i64>: [+-]?digits, nothing else, overflow fails. */
static bool parse_i64_strict(const char *s, size_t n, int64_t *out) {
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-')) { neg = s[i] == '-'; i++; }
    if (i == n) return false;
    int64_t v = 0;                              /* accumulated negatively to reach INT64_MIN */
    for (; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) return false;
        int d = s[i] - '0';
        if (v < (INT64_MIN + d) / 10) return false;
        v = v * 10 - d;
    }
    if (!neg) {
        if (v == INT64_MIN) return false;
        v = -v;
    }
    *out = v;
    return true;
}

static bool ieq(const char *s, size_t n, const char *lit) {
    size_t m = strlen(lit);
    if (n != m) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != lit[i]) return false;
    }
    return true;
}

/* Rust's str::parse::<f64>: [+-]? (inf | infinity | nan | digits[.digits][e[+-]digits] with
 * at least one digit in the mantissa, "5." and ".5" allowed); case-insensitive words. */
static bool parse_f64_strict(const char *s, size_t n, double *out, expr_arena *a) {
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-')) { neg = s[i] == '-'; i++; }
    const char *w = s + i;
    size_t wn = n - i;
    if (ieq(w, wn, "inf") || ieq(w, wn, "infinity")) { *out = neg ? -INFINITY : INFINITY; return true; }
    if (ieq(w, wn, "nan")) { *out = NAN; return true; }
    size_t digits = 0;
    while (i < n && is_digit((unsigned char)s[i])) { i++; digits++; }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit((unsigned char)s[i])) { i++; digits++; }
    }
    if (digits == 0) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t ed = 0;
        while (i < n && is_digit((unsigned char)s[i])) { i++; ed++; }
        if (ed == 0) return false;
    }
    if (i != n) return false;
    /* strtod needs a NUL-terminated copy; the value itself may not be terminated. */
    char local[256];
    char *buf = local;
    if (n + 1 > sizeof local) {
        if (!a || n + 1 > sizeof a->buf - a->used) return false;   /* absurdly long: null */
        buf = a->buf + a->used;                                    /* scratch, not kept */
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    *out = strtod(buf, NULL);
    return true;
}

static bv_value cast_value(const bv_value *v, int target, expr_arena *a) {
    if (v->kind == BV_NULL || v->kind == BV_JSON) return bv_null();
    switch (target) {
    case CT_STR:
        switch (v->kind) {
        case BV_STR: return *v;
        case BV_BOOL: return v->u.b ? bv_str("true", 4) : bv_str("false", 5);
        case BV_I64: {
            char tmp[24];
            int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v->u.i);
            char *o = arena_alloc(a, (size_t)n);
            if (!o) return bv_null();
            memcpy(o, tmp, (size_t)n);
            return bv_str(o, (size_t)n);
        }
        case BV_F64: return f64_display(v->u.f, a);
        default: return bv_null();
        }
    case CT_INT:
        switch (v->kind) {
        case BV_I64: return *v;
        case BV_F64: return bv_i64(f64_to_i64(v->u.f));
        case BV_BOOL: return bv_i64(v->u.b ? 1 : 0);
        case BV_STR: {
            int64_t r;
            return parse_i64_strict(v->u.s.ptr, v->u.s.len, &r) ? bv_i64(r) : bv_null();
        }
        default: return bv_null();
        }
    case CT_FLOAT:
        switch (v->kind) {
        case BV_I64: return bv_f64((double)v->u.i);
        case BV_F64: return *v;
        case BV_BOOL: return bv_f64(v->u.b ? 1.0 : 0.0);
        case BV_STR: {
            double r;
            return parse_f64_strict(v->u.s.ptr, v->u.s.len, &r, a) ? bv_f64(r) : bv_null();
        }
        default: return bv_null();
        }
    case CT_BOOL:
        switch (v->kind) {
        case BV_BOOL: return *v;
        case BV_I64: return bv_bool(v->u.i != 0);
        case BV_F64: return bv_bool(v->u.f != 0.0 && !isnan(v->u.f));
        case BV_STR:
            if (v->u.s.len == 4 && memcmp(v->u.s.ptr, "true", 4) == 0) return bv_bool(true);
            if (v->u.s.len == 5 && memcmp(v->u.s.ptr, "false", 5) == 0) return bv_bool(false);
            return bv_null();
        default: return bv_null();
        }
    default:
        return bv_null();
    }
}

static bv_value quadkey(const bv_value *lat, const bv_value *lon, const bv_value *zoom) {
    double la, lo;
    if (!bv_as_f64(lat, &la) || !bv_as_f64(lon, &lo)) return bv_null();
    if (zoom->kind != BV_I64 || zoom->u.i < 1 || zoom->u.i > 24) return bv_null();
    int64_t n = (int64_t)1 << zoom->u.i;
    if (!isnan(la)) la = la < -85.05112878 ? -85.05112878 : la > 85.05112878 ? 85.05112878 : la;
    int64_t row = f64_to_i64(floor((sin(la * (3.14159265358979323846 / 180.0)) + 1.0) / 2.0 * (double)n));
    int64_t col = f64_to_i64(floor((lo + 180.0) / 360.0 * (double)n));
    row = row < 0 ? 0 : row > n - 1 ? n - 1 : row;
    int64_t r;
    if (__builtin_mul_overflow(col, n, &r)) r = col < 0 ? INT64_MIN : INT64_MAX;
    if (__builtin_add_overflow(r, row, &r)) r = INT64_MAX;       /* row >= 0 */
    return bv_i64(r);
}

static bv_value ev(const expr *e, const node *n, const bv_row *row, expr_arena *a) {
    switch ((enum nkind)n->kind) {
    case N_NULL: return bv_null();
    case N_BOOL: return bv_bool(n->u.b);
    case N_INT: return bv_i64(n->u.i);
    case N_FLOAT: return bv_f64(n->u.f);
    case N_STR: return bv_str(e->strs + n->u.s.off, n->u.s.len);
    case N_TYPE: return bv_null();              /* only meaningful as cast's second argument */
    case N_FIELD: {
        const bv_value *v = bv_row_field_at(row, e->strs + n->u.s.off, n->u.s.len, n->hint);
        return v ? *v : bv_null();
    }
    case N_CMP: {
        const node *l = &e->nodes[n->first];
        bv_value x = ev(e, l, row, a);
        bv_value y = ev(e, &e->nodes[l->next], row, a);
        return compare(n->op, &x, &y);
    }
    case N_ARITH: {
        bv_value acc = ev(e, &e->nodes[n->first], row, a);
        for (uint32_t k = e->nodes[n->first].next; k != NONE; k = e->nodes[k].next) {
            if (acc.kind == BV_NULL) return acc;            /* null propagates; no side effects */
            bv_value r = ev(e, &e->nodes[k], row, a);
            if (r.kind == BV_NULL) return r;
            acc = arith(e->nodes[k].link, acc, r);
        }
        return acc;
    }
    case N_AND:
    case N_OR: {
        /* Left fold of the binary rule: X and Y = false if either is false (Y skipped when
         * X is false), true if both true, else null. `or` mirrors it. */
        bool stop = n->kind == N_OR;                        /* the absorbing value */
        bv_value acc = ev(e, &e->nodes[n->first], row, a);
        for (uint32_t k = e->nodes[n->first].next; k != NONE; k = e->nodes[k].next) {
            if (acc.kind == BV_BOOL && acc.u.b == stop) return acc;
            bv_value r = ev(e, &e->nodes[k], row, a);
            if (r.kind == BV_BOOL && r.u.b == stop) acc = r;
            else if (acc.kind == BV_BOOL && r.kind == BV_BOOL) acc = bv_bool(!stop);
            else acc = bv_null();
        }
        return acc;
    }
    case N_NOT: {
        bv_value v = ev(e, &e->nodes[n->first], row, a);
        return v.kind == BV_BOOL ? bv_bool(!v.u.b) : bv_null();
    }
    case N_ISNULL: {
        if (n->nkids != 1) return bv_null();
        bv_value v = ev(e, &e->nodes[n->first], row, a);
        return bv_bool(v.kind == BV_NULL);
    }
    case N_CAST: {
        if (n->nkids != 2) return bv_null();
        const node *x = &e->nodes[n->first], *t = &e->nodes[x->next];
        int target;
        if (t->kind == N_TYPE) {
            target = t->op;
        } else {                                /* computed target, e.g. cast(x, (s)) */
            bv_value tv = ev(e, t, row, a);
            if (tv.kind != BV_STR) return bv_null();
            target = ctarget_of(tv.u.s.ptr, tv.u.s.len);
        }
        bv_value v = ev(e, x, row, a);
        return cast_value(&v, target, a);
    }
    case N_QUADKEY: {
        if (n->nkids != 3) return bv_null();
        const node *k1 = &e->nodes[n->first], *k2 = &e->nodes[k1->next], *k3 = &e->nodes[k2->next];
        bv_value la = ev(e, k1, row, a), lo = ev(e, k2, row, a), z = ev(e, k3, row, a);
        return quadkey(&la, &lo, &z);
    }
    case N_CALL:
        return bv_null();
    }
    return bv_null();
}

bv_value expr_eval(const expr *e, const bv_row *row, expr_arena *arena) {
    return ev(e, &e->nodes[e->root], row, arena);
}

bool expr_matches(const expr *e, const bv_row *row, expr_arena *arena) {
    bv_value v = expr_eval(e, row, arena);
    return v.kind == BV_BOOL && v.u.b;
}
