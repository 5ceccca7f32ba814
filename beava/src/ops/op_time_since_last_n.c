/*
 * op_time_since_last_n.c - `time_since_last_n(n)`: max(0, query time - arrival of the
 * n-th latest matched event), null until n matches (reference-pipelines.md §2.4).
 * Lifetime only; n in [1,1024] required. State: a ring of the last n arrival times,
 * allocated on the first match and grown by doubling (16 bytes fixed). Empty: null.
 */
#include <stdlib.h>
#include <string.h>
#include "op.h"
#include "tstate.h"

typedef struct tring {
    int64_t *t;
    uint32_t n, head;         /* held; index of the oldest when full */
} tring;

static uint32_t tring_cap(const tring *r) {
    uint32_t c = 0;
    if (r->t) { c = 2; while (c < r->n) c *= 2; }
    return c;
}

static void tring_push(tring *r, int64_t t, uint32_t limit) {
    if (r->n < limit) {
        uint32_t cap = tring_cap(r);
        if (r->n == cap) {
            r->t = realloc(r->t, (size_t)(cap ? cap * 2 : 2) * sizeof *r->t);
            if (!r->t) abort();
        }
        r->t[r->n++] = t;
        return;
    }
    r->t[r->head] = t;
    r->head = (r->head + 1) % r->n;
}

static void tsln_update(const feature *f, void *st, const op_input *in) {
    tring_push(st, in->now_ms, (uint32_t)f->p.n);
}

static void tsln_read(const feature *f, const void *st, int64_t q, jsonw *w) {
    const tring *r = st;
    if (r->n < (uint32_t)f->p.n) { jsonw_null(w); return; }
    jsonw_i64(w, tstate_elapsed(q, r->t[r->head]));
}

static void tsln_destroy(const feature *f, void *st) {
    (void)f;
    tring *r = st;
    free(r->t);
    memset(r, 0, sizeof *r);
}

static void tsln_encode(const feature *f, const void *st, bv_buf *out) {
    (void)f;
    const tring *r = st;
    cod_put_u32(out, r->n);
    cod_put_u32(out, r->head);
    for (uint32_t i = 0; i < r->n; i++) cod_put_i64(out, r->t[i]);
}

static int tsln_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end) {
    tring *r = st;
    uint32_t n, head, limit = (uint32_t)f->p.n;
    tsln_destroy(f, st);
    if (cod_get_u32(p, end, &n) < 0 || cod_get_u32(p, end, &head) < 0) return -1;
    if (n > limit || (head && (head >= n || n != limit))) return -1;
    if ((size_t)(end - *p) < (size_t)n * 8) return -1;
    for (uint32_t i = 0; i < n; i++) {
        int64_t t;
        cod_get_i64(p, end, &t);
        tring_push(r, t, limit);
    }
    r->head = head;
    return 0;
}

const struct op_vtable op_time_since_last_n = {
    .name = "time_since_last_n",
    .flags = OPF_LIFETIME_ONLY | OPF_N_REQUIRED,
    .state_size = sizeof(tring),
    .update = tsln_update,
    .read = tsln_read,
    .destroy = tsln_destroy,
    .encode = tsln_encode,
    .decode = tsln_decode,
};
