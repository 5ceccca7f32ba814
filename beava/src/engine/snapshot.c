/*
 * snapshot.c - the engine's state as bytes (snapshot bodies), restoring it, and the
 * replay of WAL records during recovery.
 *
 * Body layout (little-endian, base/codec.h): magic "BVSNAP01", registry version,
 * applied LSN, watermark, the registry history (every register/reset record: u8 kind,
 * u32 length, bytes — replayed to rebuild the exact registry, versions and slot order),
 * the dedupe cache, then per table its name, feature names and every entity (key,
 * last-seen stamp, each feature's encoded state).
 */
#include "engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int engine_replay(engine *e, int kind, uint64_t lsn, const void *payload, size_t len, char *reason, size_t rlen) {
    if (kind == REC_EVENT) return push_replay_event(e, lsn, payload, len, reason, rlen);
    int rc = 0;
    engine_barrier_enter(e);
    switch (kind) {
    case REC_REGISTER: {
        bv_buf out;
        bv_buf_init(&out);
        reg_plan *plan = NULL;
        int st = registry_prepare(engine_reg(e), payload, len, &out, &plan);
        if (plan) {
            out.len = 0;
            engine_apply_plan(e, plan, &out);
            engine_history_add(e, REC_REGISTER, payload, len);
        } else {
            /* it changed the registry when it was logged, so it must again */
            snprintf(reason, rlen, "register record at LSN %llu no longer applies (status %d: %.200s)",
                     (unsigned long long)lsn, st, out.data ? out.data : "");
            rc = -1;
        }
        bv_buf_free(&out);
        break;
    }
    case REC_RESET:
        engine_reset_state(e);
        engine_history_add(e, REC_RESET, "", 0);
        break;
    default:
        snprintf(reason, rlen, "record at LSN %llu has unknown kind %d", (unsigned long long)lsn, kind);
        rc = -1;
    }
    if (lsn > e->last_lsn) e->last_lsn = lsn;
    engine_barrier_leave(e);
    return rc;
}

/* ---- snapshots ---------------------------------------------------------------------- */

#define SNAP_MAGIC "BVSNAP01"

typedef struct snap_out {
    engine_write_fn write;
    void *ctx;
    bv_buf buf;
    int failed;
} snap_out;

static void so_flush(snap_out *so) {
    if (so->buf.len && !so->failed && so->write(so->ctx, so->buf.data, so->buf.len) != 0) so->failed = 1;
    so->buf.len = 0;
}

static void so_put(snap_out *so, const void *p, size_t n) {
    bv_buf_put(&so->buf, p, n);
    if (so->buf.len >= (1u << 20)) so_flush(so);
}

static void so_u32(snap_out *so, uint32_t v) {
    unsigned char b[4];
    codec_put32(b, v);
    so_put(so, b, 4);
}
static void so_u64(snap_out *so, uint64_t v) {
    unsigned char b[8];
    codec_put64(b, v);
    so_put(so, b, 8);
}
static void so_str(snap_out *so, const char *s, size_t n) {
    so_u32(so, (uint32_t)n);
    so_put(so, s, n);
}

typedef struct snap_table_ctx {
    snap_out *so;
    agg_table *t;
    bv_buf state;
    engine_keep_fn keep;          /* NULL = every entity */
    void *kctx;
    uint64_t count;
} snap_table_ctx;

static bool snap_kept(snap_table_ctx *c, entity *en) {
    return !c->keep || c->keep(c->kctx, c->t->name, entity_key(en), en->key_len);
}

static void snap_count(void *ctx, entity *en) {
    snap_table_ctx *c = ctx;
    if (snap_kept(c, en)) c->count++;
}

static void snap_entity(void *ctx, entity *en) {
    snap_table_ctx *c = ctx;
    agg_table *t = c->t;
    if (!snap_kept(c, en)) return;
    so_str(c->so, entity_key(en), en->key_len);
    so_u64(c->so, (uint64_t)en->last_seen_ms);
    const char *row = entity_row_const(en);
    for (size_t i = 0; i < t->nfeatures; i++) {
        c->state.len = 0;
        if (i < en->nfeat) feature_encode(&t->features[i], row + t->offsets[i], &c->state);
        so_u32(c->so, (uint32_t)c->state.len);       /* 0 = slot not initialised yet */
        so_put(c->so, c->state.data, c->state.len);
    }
}

typedef struct snap_dedupe_ctx { snap_out *so; } snap_dedupe_ctx;

static void snap_dedupe(void *ctx, entity *en) {
    snap_dedupe_ctx *c = ctx;
    const dedupe_row *d = entity_row_const(en);
    so_str(c->so, entity_key(en), en->key_len);
    so_u64(c->so, (uint64_t)d->expiry_ms);
    so_u64(c->so, d->ack_lsn);
    so_u64(c->so, d->registry_version);
}

int engine_serialize(engine *e, engine_write_fn write, void *ctx) {
    return engine_serialize_filtered(e, NULL, NULL, write, ctx);
}

int engine_serialize_filtered(engine *e, engine_keep_fn keep, void *kctx, engine_write_fn write, void *ctx) {
    snap_out so = { .write = write, .ctx = ctx };
    bv_buf_init(&so.buf);
    so_put(&so, SNAP_MAGIC, 8);
    registry *reg = engine_reg(e);    /* quiesced (or a forked copy): the writer's view */
    so_u64(&so, registry_version(reg));
    so_u64(&so, e->last_lsn);
    so_u64(&so, (uint64_t)atomic_load(&e->watermark_ms));
    so_u64(&so, e->history.len);
    so_put(&so, e->history.data, e->history.len);
    so_u64(&so, e->dedupe.count);
    snap_dedupe_ctx dc = { &so };
    store_foreach(&e->dedupe, snap_dedupe, &dc);
    agg_table *const *tables;
    size_t nt = registry_tables(reg, &tables);
    so_u32(&so, (uint32_t)nt);
    for (size_t i = 0; i < nt; i++) {
        agg_table *t = tables[i];
        so_str(&so, t->name, strlen(t->name));
        so_u32(&so, (uint32_t)t->nfeatures);
        for (size_t f = 0; f < t->nfeatures; f++) so_str(&so, t->features[f].name, strlen(t->features[f].name));
        snap_table_ctx tc = { .so = &so, .t = t, .keep = keep, .kctx = kctx };
        for (unsigned sh = 0; sh < e->nshards; sh++) {
            if (keep) store_foreach(table_store(t, sh), snap_count, &tc);
            else tc.count += table_store(t, sh)->count;
        }
        so_u64(&so, tc.count);
        bv_buf_init(&tc.state);
        for (unsigned sh = 0; sh < e->nshards; sh++) store_foreach(table_store(t, sh), snap_entity, &tc);
        bv_buf_free(&tc.state);
    }
    so_flush(&so);
    bv_buf_free(&so.buf);
    return so.failed ? -1 : 0;
}

/* Every shard's state lock, for a barrier holder that reads or rewrites stores as a whole
 * (gets widen rows under these locks: engine_int.h "THE BARRIER"). */
static void lock_all_shards(engine *e) {
    for (unsigned sh = 0; sh < e->nshards; sh++) shard_lock(e->pool, sh);
}

static void unlock_all_shards(engine *e) {
    for (unsigned sh = 0; sh < e->nshards; sh++) shard_unlock(e->pool, sh);
}

/* fn sees the stores still: gets wait for it (a fork, or an in-process serialisation). */
int engine_quiesce(engine *e, int (*fn)(void *ctx, uint64_t lsn, uint64_t version), void *ctx) {
    engine_barrier_enter(e);
    lock_all_shards(e);
    int rc = fn(ctx, e->last_lsn, registry_version(engine_reg(e)));
    unlock_all_shards(e);
    engine_barrier_leave(e);
    return rc;
}

typedef struct snap_in {
    const uint8_t *p, *end;
    bool bad;
} snap_in;

static bool si_take(snap_in *si, void *out, size_t n) {
    if (si->bad || (size_t)(si->end - si->p) < n) {
        si->bad = true;
        return false;
    }
    if (out) memcpy(out, si->p, n);
    si->p += n;
    return true;
}

static uint32_t si_u32(snap_in *si) {
    unsigned char b[4] = { 0 };
    si_take(si, b, 4);
    return codec_get32(b);
}
static uint64_t si_u64(snap_in *si) {
    unsigned char b[8] = { 0 };
    si_take(si, b, 8);
    return codec_get64(b);
}

static const char *si_str(snap_in *si, uint32_t *n) {
    *n = si_u32(si);
    const char *s = (const char *)si->p;
    if (!si_take(si, NULL, *n)) return NULL;
    return s;
}

/* merge: into an engine that may hold state already (cluster: a partition built from a
 * peer's snapshot). An engine with no registry history takes the snapshot's; one with a
 * history must have exactly the snapshot's. Kept entities replace the engine's of the same
 * key. Dedupe entries the engine lacks are taken too: in a cluster they are scoped by
 * partition and record what that partition's log held, the same on every owner, so a
 * partition built from a peer keeps deciding duplicates as its other owners do. */
static int deserialize(engine *e, const void *body, size_t len, engine_keep_fn keep, void *kctx, bool merge,
                       char *reason, size_t rlen) {
    snap_in si = { .p = body, .end = (const uint8_t *)body + len };
    char magic[8];
    size_t *slot_of = NULL;
    int rc = -1;
    bool locked = false;
    engine_barrier_enter(e);
    if (!si_take(&si, magic, 8) || memcmp(magic, SNAP_MAGIC, 8) != 0) {
        snprintf(reason, rlen, "snapshot body has a bad magic");
        goto out;
    }
    uint64_t version = si_u64(&si), applied = si_u64(&si), watermark = si_u64(&si), hlen = si_u64(&si);
    const uint8_t *h = si.p;
    if (!si_take(&si, NULL, hlen)) goto truncated;
    bool fresh = e->history.len == 0;
    if (merge && !fresh) {
        if (e->history.len != hlen || memcmp(e->history.data, h, hlen) != 0) {
            snprintf(reason, rlen, "the snapshot's registry history differs from this node's");
            goto out;
        }
        h += hlen;                    /* same registry: nothing to replay */
        hlen = 0;
    }
    /* replay the registry history: the exact registry, version and slot order */
    for (const uint8_t *p = h; p < h + hlen;) {
        if ((size_t)(h + hlen - p) < 5) goto corrupt_history;
        uint8_t kind = p[0];
        uint32_t l = codec_get32(p + 1);
        p += 5;
        if ((size_t)(h + hlen - p) < l) goto corrupt_history;
        if (kind == REC_RESET) {
            engine_reset_state(e);
        } else {
            bv_buf out;
            bv_buf_init(&out);
            reg_plan *plan = NULL;
            registry_prepare(engine_reg(e), (const char *)p, l, &out, &plan);
            if (plan) {
                out.len = 0;
                engine_apply_plan(e, plan, &out);
            }
            bv_buf_free(&out);
        }
        engine_history_add(e, kind, p, l);
        p += l;
    }
    registry *reg = engine_reg(e);
    if (registry_version(reg) != version) {
        snprintf(reason, rlen, "snapshot registry history rebuilds version %llu, header says %llu",
                 (unsigned long long)registry_version(reg), (unsigned long long)version);
        goto out;
    }
    lock_all_shards(e);                   /* entities are written: gets wait (see engine_quiesce) */
    locked = true;
    uint64_t nd = si_u64(&si);
    for (uint64_t i = 0; i < nd && !si.bad; i++) {
        uint32_t kl;
        const char *k = si_str(&si, &kl);
        uint64_t expiry = si_u64(&si), lsn = si_u64(&si), ver = si_u64(&si);
        if (si.bad || kl > STORE_MAX_KEY + REGISTRY_NAME_MAX + 8) goto truncated;
        uint64_t h = store_hash(k, kl);
        if (!fresh && store_find(&e->dedupe, k, kl, h)) continue;   /* merge: only what it lacks */
        dedupe_remember(e, k, kl, h, (int64_t)expiry, lsn, ver, 0);
    }
    uint32_t nt = si_u32(&si);
    for (uint32_t ti = 0; ti < nt && !si.bad; ti++) {
        uint32_t nl;
        const char *name = si_str(&si, &nl);
        if (!name || nl > REGISTRY_NAME_MAX) goto truncated;
        char tname[REGISTRY_NAME_MAX + 1];
        memcpy(tname, name, nl);
        tname[nl] = 0;
        agg_table *t = registry_table(reg, tname);
        if (!t) {
            snprintf(reason, rlen, "snapshot names table '%s' that its registry history does not define", tname);
            goto out;
        }
        uint32_t nf = si_u32(&si);
        if (nf > 100000) goto truncated;
        free(slot_of);
        slot_of = calloc(nf ? nf : 1, sizeof *slot_of);
        if (!slot_of) goto out;
        for (uint32_t f = 0; f < nf; f++) {
            uint32_t fl;
            const char *fn = si_str(&si, &fl);
            if (!fn) goto truncated;
            slot_of[f] = SIZE_MAX;
            for (size_t k = 0; k < t->nfeatures; k++)
                if (strlen(t->features[k].name) == fl && memcmp(t->features[k].name, fn, fl) == 0) slot_of[f] = k;
            if (slot_of[f] == SIZE_MAX) {
                snprintf(reason, rlen, "snapshot feature %.*s is not in table %s", (int)fl, fn, tname);
                goto out;
            }
        }
        uint64_t ne = si_u64(&si);
        for (uint64_t i = 0; i < ne && !si.bad; i++) {
            uint32_t kl;
            const char *k = si_str(&si, &kl);
            uint64_t last_seen = si_u64(&si);
            if (!k || kl > STORE_MAX_KEY) goto truncated;
            if (keep && !keep(kctx, t->name, k, kl)) {          /* skip its states */
                for (uint32_t f = 0; f < nf && !si.bad; f++) si_take(&si, NULL, si_u32(&si));
                continue;
            }
            uint64_t kh = store_hash(k, kl);
            entity_store *st = table_store(t, engine_shard_for(e, t, kh));
            entity *old = merge ? store_find(st, k, kl, kh) : NULL;
            if (old) {
                size_t rs = entity_row_size(t, old);
                entity_destroy_states(t, old);
                store_remove(st, old, rs);
            }
            entity *en = store_insert(st, k, kl, kh, t->row_size);
            if (!en) goto out;
            entity_init_states(t, en, 0);
            en->last_seen_ms = (int64_t)last_seen;
            char *row = entity_row(en);
            for (uint32_t f = 0; f < nf; f++) {
                uint32_t sl = si_u32(&si);
                const uint8_t *sp = si.p;
                if (!si_take(&si, NULL, sl)) goto truncated;
                if (sl == 0) continue;
                const feature *ft = &t->features[slot_of[f]];
                const uint8_t *cur = sp;
                if (feature_decode(ft, row + t->offsets[slot_of[f]], &cur, sp + sl) != 0) {
                    snprintf(reason, rlen, "snapshot state of %s.%s cannot be decoded", tname, ft->name);
                    goto out;
                }
            }
        }
    }
    if (si.bad) goto truncated;
    if (!merge || applied > e->last_lsn) e->last_lsn = applied;
    if (!merge || (int64_t)watermark > atomic_load(&e->watermark_ms)) atomic_store(&e->watermark_ms, (int64_t)watermark);
    rc = 0;
    goto out;
corrupt_history:
    snprintf(reason, rlen, "snapshot registry history is corrupt");
    goto out;
truncated:
    snprintf(reason, rlen, "snapshot body is truncated or malformed");
out:
    free(slot_of);
    if (locked) unlock_all_shards(e);
    engine_barrier_leave(e);
    return rc;
}

int engine_deserialize(engine *e, const void *body, size_t len, char *reason, size_t rlen) {
    return deserialize(e, body, len, NULL, NULL, false, reason, rlen);
}

int engine_merge(engine *e, const void *body, size_t len, engine_keep_fn keep, void *kctx, char *reason, size_t rlen) {
    return deserialize(e, body, len, keep, kctx, true, reason, rlen);
}

size_t engine_drop_entities(engine *e, engine_keep_fn keep, void *kctx) {
    size_t dropped = 0;
    engine_barrier_enter(e);
    lock_all_shards(e);
    agg_table *const *tables;
    size_t nt = registry_tables(engine_reg(e), &tables);
    for (size_t i = 0; i < nt; i++) {
        agg_table *t = tables[i];
        for (unsigned sh = 0; sh < e->nshards; sh++) {
            entity_store *s = table_store(t, sh);
            for (size_t slot = 0; slot < s->cap;) {
                entity *en = s->slots[slot].e;
                if (en && !keep(kctx, t->name, entity_key(en), en->key_len)) {
                    size_t rs = entity_row_size(t, en);
                    entity_destroy_states(t, en);
                    store_remove(s, en, rs);     /* a later entry may shift into this slot: look again */
                    dropped++;
                    continue;
                }
                slot++;
            }
        }
    }
    unlock_all_shards(e);
    engine_barrier_leave(e);
    return dropped;
}
