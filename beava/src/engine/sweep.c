/*
 * sweep.c - the cold-entity sweeper: evicts entities idle longer than their event's
 * cold_after_ms. Each call scans at most `budget` index slots, resuming where the last
 * call stopped (the cursor is guarded by sweep_mu, which a barrier takes to keep the
 * sweeper off the stores), on a pinned registry version, holding only the state lock of
 * the shard whose store it is scanning, so pushes to the other shards go on meanwhile.
 * Each call also frees the registry versions changes replaced, once nothing can still
 * read them (engine_reclaim_retired).
 */
#include "engine_int.h"

size_t engine_sweep_cold(engine *e, size_t budget) {
    size_t evicted = 0, scanned = 0;
    engine_reclaim_retired(e);                   /* the sweeper's other chore (engine_int.h) */
    regver *pin;
    registry *reg = engine_pin(e, &pin);
    agg_table *const *tables;
    size_t nt = registry_tables(reg, &tables);
    bool any = false;
    for (size_t i = 0; i < nt && !any; i++) {
        const ev_desc *ev = registry_event(reg, tables[i]->source);
        any = ev && ev->cold_after_ms > 0;
    }
    if (!any) {
        engine_unpin(e, pin);
        return 0;
    }
    pthread_mutex_lock(&e->sweep_mu);
    int64_t now = engine_wall_ms();
    for (size_t visited = 0; visited < nt * e->nshards && scanned < budget; visited++) {
        if (e->sweep_table >= nt) {
            e->sweep_table = 0;
            e->sweep_shard = 0;
            e->sweep_slot = 0;
        }
        agg_table *t = tables[e->sweep_table];
        const ev_desc *ev = registry_event(reg, t->source);
        if (ev && ev->cold_after_ms > 0) {
            shard_lock(e->pool, e->sweep_shard);
            entity_store *s = table_store(t, e->sweep_shard);
            while (e->sweep_slot < s->cap && scanned < budget) {
                entity *en = s->slots[e->sweep_slot].e;
                scanned++;
                /* a row a newer version widened is left to a sweep on that version (this
                 * shell would not know its newer slots) */
                if (en && en->last_seen_ms > 0 && now - en->last_seen_ms > ev->cold_after_ms &&
                    en->nfeat <= t->nfeatures) {
                    size_t row_size = entity_row_size(t, en);
                    entity_destroy_states(t, en);
                    store_remove(s, en, row_size);   /* a later entry may shift into this slot: look again */
                    evicted++;
                    continue;
                }
                e->sweep_slot++;
            }
            bool unfinished = e->sweep_slot < s->cap;
            shard_unlock(e->pool, e->sweep_shard);
            if (unfinished) break;                   /* budget spent inside this store */
        }
        e->sweep_slot = 0;
        if (++e->sweep_shard >= e->nshards) {
            e->sweep_shard = 0;
            e->sweep_table++;
        }
    }
    pthread_mutex_unlock(&e->sweep_mu);
    engine_unpin(e, pin);
    atomic_fetch_add_explicit(&e->swept_evictions, evicted, memory_order_relaxed);
    return evicted;
}
