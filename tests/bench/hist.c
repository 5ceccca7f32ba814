/*
 * hist.c - log-bucket latency histogram (see hist.h for the layout).
 */
#include "hist.h"

#include <math.h>
#include <string.h>

void hist_reset(hist *h) {
    memset(h, 0, sizeof *h);
}

static unsigned bucket_of(uint64_t v) {
    if (v < 64) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = msb - 5;                      /* >= 1 */
    unsigned mant = (unsigned)(v >> e);        /* 32..63 */
    return 64 + (e - 1) * 32 + (mant - 32);
}

static uint64_t bucket_mid(unsigned b) {
    if (b < 64) return b;
    unsigned e = (b - 64) / 32 + 1;
    uint64_t mant = (b - 64) % 32 + 32;
    uint64_t lo = mant << e;
    return lo + ((1ull << e) >> 1);
}

void hist_add(hist *h, uint64_t v) {
    h->counts[bucket_of(v)]++;
    if (h->total == 0 || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->total++;
    h->sum += (double)v;
}

void hist_merge(hist *dst, const hist *src) {
    if (src->total == 0) return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
    if (dst->total == 0 || src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
    dst->total += src->total;
    dst->sum += src->sum;
}

uint64_t hist_percentile(const hist *h, double p) {
    if (h->total == 0) return 0;
    uint64_t target = (uint64_t)ceil(p / 100.0 * (double)h->total);
    if (target < 1) target = 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        acc += h->counts[i];
        if (acc >= target) {
            uint64_t v = bucket_mid(i);
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    return h->max;
}

double hist_mean(const hist *h) {
    return h->total ? h->sum / (double)h->total : 0.0;
}
