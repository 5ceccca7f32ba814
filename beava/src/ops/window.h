/*
 * window.h - the sliding window of the windowable ("B") kinds: 64 sub-buckets
 * (window.c).
 *
 * A windowed feature's fixed state (window_state_size bytes, all-zero = no bucket yet)
 * holds the first (epoch, inner state) bucket inline and a pointer to a lazily grown
 * list of the others, at most WINDOW_MAX_BUCKETS in all. Bucket width
 * b = ceil(W/64) (feature->bucket_ms); an event at now goes to epoch floor(now/b)*b.
 * A new epoch when 64 are held evicts the smallest epoch (op_stats.bucket_reclaim).
 * Stale buckets are otherwise kept (queries skip them). A query at q merges the active
 * buckets (0 <= q - e < W), oldest epoch first, into a temporary state with the kind's
 * merge and reads that.
 *
 * Buckets are created only by events the op actually consumes (where matched, field
 * present): the reference also opens empty buckets on where-false events, which no
 * query can observe.
 */
#ifndef BEAVA_OPS_WINDOW_H
#define BEAVA_OPS_WINDOW_H

#include <stddef.h>
#include <stdint.h>
#include "feature.h"
#include "op.h"

#define WINDOW_MAX_BUCKETS 64

/* Bucket epoch of now_ms: floor(now/b)*b, floor division also for negative times. */
int64_t window_epoch(int64_t now_ms, int64_t bucket_ms);
/* True iff the bucket at epoch e is part of the window at query time q. */
bool window_active(int64_t q, int64_t e, int64_t window_ms);

/* The fixed state size of a windowed feature of kind vt. */
size_t window_state_size(const struct op_vtable *vt);

/* The event `in` into the bucket of epoch e = window_epoch(in->now_ms, f->bucket_ms)
 * (the caller computes it: features of one width share it). */
void window_update(const feature *f, void *st, const op_input *in, int64_t e);
/* The kind's prefetch hint (value v, op.h) on the bucket of epoch e (as window_update)
 * when that is the inline or the most recently used bucket (no bucket is created or
 * searched for); hint false: only the bucket list's header (e unused). */
void window_prefetch(const feature *f, const void *st, bool hint, const bv_value *v, int64_t e);
void window_read(const feature *f, const void *st, int64_t query_ms, jsonw *w);
void window_destroy(const feature *f, void *st);
/* u8 nbuckets, then per bucket: i64 epoch + the kind's encoding. Decode rejects more
 * than 64 buckets and duplicate epochs. */
void window_encode(const feature *f, const void *st, bv_buf *out);
int window_decode(const feature *f, void *st, const uint8_t **p, const uint8_t *end);

/* Introspection for tests and metrics: buckets held. */
size_t window_nbuckets(const void *st);

#endif
