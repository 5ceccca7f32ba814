/*
 * dedupe.c - the push dedupe cache: an entity_store keyed by "<event>\x1f<value text>"
 * whose row holds (expiry, ack_lsn, registry_version). A replayed push inside the window
 * is answered with the original's ack. Expired entries are purged when the cache doubles
 * in size and on reset. Guarded by the sequencer lock (or the barrier), because a lookup
 * and the remember that follows it must not interleave with another push of the same key.
 */
#include "engine_int.h"

#include <stdlib.h>
#include <string.h>

int dedupe_key(const ev_desc *ev, const bv_row *row, char *buf, size_t cap) {
    if (!ev->dedupe_key) return -1;
    const bv_value *v = bv_row_get(row, ev->dedupe_key);
    if (!v || v->kind == BV_NULL) return -1;
    size_t nl = strlen(ev->name);
    if (nl + 2 >= cap) return -1;
    memcpy(buf, ev->name, nl);
    buf[nl] = STORE_KEY_SEP;
    int n = bv_key_text(v, buf + nl + 1, cap - nl - 1);
    if (n < 0) return -1;
    return (int)(nl + 1 + (size_t)n);
}

entity *dedupe_find(engine *e, const char *dk, size_t dkl, uint64_t dh) {
    return store_find(&e->dedupe, dk, dkl, dh);
}

typedef struct purge_ctx {
    int64_t now;
    entity **victims;
    size_t n, cap;
} purge_ctx;

static void purge_collect(void *ctx, entity *en) {
    purge_ctx *p = ctx;
    const dedupe_row *d = entity_row_const(en);
    if (d->expiry_ms > p->now) return;
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        entity **v = realloc(p->victims, p->cap * sizeof *v);
        if (!v) abort();
        p->victims = v;
    }
    p->victims[p->n++] = en;
}

static void dedupe_purge(engine *e, int64_t now) {
    purge_ctx p = { .now = now };
    store_foreach(&e->dedupe, purge_collect, &p);
    for (size_t i = 0; i < p.n; i++) store_remove(&e->dedupe, p.victims[i], sizeof(dedupe_row));
    free(p.victims);
    e->dedupe_purge_at = e->dedupe.count * 2 > DEDUPE_PURGE_MIN ? e->dedupe.count * 2 : DEDUPE_PURGE_MIN;
}

void dedupe_remember(engine *e, const char *dk, size_t dkl, uint64_t dh, int64_t expiry, uint64_t lsn,
                     uint64_t version, int64_t now) {
    if (e->dedupe.count >= e->dedupe_purge_at) dedupe_purge(e, now);
    entity *d = store_find(&e->dedupe, dk, dkl, dh);
    if (!d) d = store_insert(&e->dedupe, dk, dkl, dh, sizeof(dedupe_row));
    if (!d) abort();
    dedupe_row *dr = entity_row(d);
    dr->expiry_ms = expiry;
    dr->ack_lsn = lsn;
    dr->registry_version = version;
}

void dedupe_forget(engine *e, const char *dk, size_t dkl, uint64_t dh) {
    entity *d = store_find(&e->dedupe, dk, dkl, dh);
    if (d) store_remove(&e->dedupe, d, sizeof(dedupe_row));
}

void dedupe_clear(engine *e) {
    store_free(&e->dedupe);
    store_init(&e->dedupe);
    e->dedupe_purge_at = DEDUPE_PURGE_MIN;
}
