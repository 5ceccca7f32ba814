/*
 * op_time_since_last_n.c - `time_since_last_n(n)`: max(0, query time - arrival time of
 * the n-th most recent matched event) in ms, computed at read time; null until n events
 * matched. Lifetime only; no field; `n`
 * (1..1024) required.
 *
 * State: a ring of the last n match times (24 bytes; storage grown as events arrive):
 * while len < n the times sit in arrival order and head is 0, then head is the oldest.
 * Snapshot form: u32 count, count i64 times oldest -> newest. Empty: null.
 */
#include <stdlib.h>
#include <string.h>
#include "recency.h"

typedef struct tsln_st {
    int64_t *t;
    uint32_t len, cap;
    uint32_t head, pad;
} tsln_st;

static void tsln_update(const feature *f, void *st, const op_input *in) {
    tsln_st *s = st;
    uint32_t n = (uint32_t)f->p.n;
    if (s->len < n) {
        if (s->len == s->cap) {
            uint32_t nc = s->cap ? s->cap * 2 : 4;
            if (nc > n) nc = n;
            int64_t *nt = realloc(s->t, (size_t)nc * sizeof *nt);
            if (!nt) abort();
            s->t = nt;
            s->cap = nc;
        }
        s->t[s->len++] = in->now_ms;
        return;
    }
    s->t[s->head] = in->now_ms;
    s->head = s->head + 1 == n ? 0 : s->head + 1;
}

static void tsln_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    const tsln_st *s = st;
    if (s->len < (uint32_t)f->p.n) jsonw_null(w);
    else jsonw_i64(w, recency_since(q, s->t[s->head]));
}

static void tsln_destroy(const feature *f, void *st) {
    (void)f;
    tsln_st *s = st;
    free(s->t);
    memset(s, 0, sizeof *s);
}

static void tsln_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const tsln_st *s = st;
    cod_put_u32(out, s->len);
    for (uint32_t i = 0; i < s->len; i++) {
        uint32_t j = s->head + i;
        if (j >= s->len) j -= s->len;
        cod_put_i64(out, s->t[j]);
    }
}

static int tsln_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    tsln_st *s = st;
    const uint8_t *q = *p;
    uint32_t n;
    if (cod_get_u32(&q, end, &n) < 0 || n > (uint32_t)f->p.n || (size_t)(end - q) / 8 < n) return -1;
    int64_t *t = NULL;
    if (n) {
        t = malloc((size_t)n * sizeof *t);
        if (!t) abort();
        for (uint32_t i = 0; i < n; i++) cod_get_i64(&q, end, &t[i]);   /* length checked above */
    }
    tsln_destroy(f, st);
    s->t = t;
    s->len = s->cap = n;
    *p = q;
    return 0;
}

/* The cell tsln_update writes (when it does not grow the array). */
static void tsln_prefetch(const feature *f, const void *st, const bv_value *v) {
    (void)v;
    const tsln_st *s = st;
    if (!s->t) return;
    if (s->len < (uint32_t)f->p.n) { if (s->len < s->cap) __builtin_prefetch(&s->t[s->len]); }
    else __builtin_prefetch(&s->t[s->head]);
}

const struct op_vtable op_time_since_last_n = {
    .name = "time_since_last_n",
    .flags = OPF_LIFETIME_ONLY | OPF_N_REQUIRED,
    .state_size = sizeof(tsln_st),
    .update = tsln_update,
    .prefetch = tsln_prefetch,
    .read = tsln_read,
    .destroy = tsln_destroy,
    .encode = tsln_encode,
    .decode = tsln_decode,
};
