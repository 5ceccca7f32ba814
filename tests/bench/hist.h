/*
 * hist.h - latency histogram with logarithmic buckets (HDR-style).
 *
 * Values (nanoseconds) below 64 have exact buckets; above, each power of two is split
 * into 32 linear sub-buckets, so a reported percentile is within ~3% of the true
 * value (it reports the middle of its bucket). Fixed size (1920 counters), no
 * allocation, merge by adding counters. One histogram per client thread, merged at
 * the end.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_BUCKETS 1920

typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t min, max;
    double sum;
} hist;

void hist_reset(hist *h);
void hist_add(hist *h, uint64_t v);
void hist_merge(hist *dst, const hist *src);
/* Value at percentile p (0..100), 0 when empty. */
uint64_t hist_percentile(const hist *h, double p);
double hist_mean(const hist *h);

#endif
