/*
 * membudget.c - the shared receive-buffer budget (see membudget.h).
 *
 * take is a compare-and-swap loop on `used`, so two threads racing for the last bytes
 * cannot both succeed; give is a plain subtraction.
 */
#include "membudget.h"

void membudget_init(membudget *b, uint64_t limit) {
    b->limit = limit;
    atomic_init(&b->used, 0);
    atomic_init(&b->peak, 0);
    atomic_init(&b->refused, 0);
}

bool membudget_take(membudget *b, uint64_t n) {
    uint64_t cur = atomic_load_explicit(&b->used, memory_order_relaxed);
    do {
        if (n > b->limit || cur > b->limit - n) {
            atomic_fetch_add_explicit(&b->refused, 1, memory_order_relaxed);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&b->used, &cur, cur + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t now = cur + n, peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &peak, now, memory_order_relaxed, memory_order_relaxed)) {
    }
    return true;
}

void membudget_give(membudget *b, uint64_t n) {
    atomic_fetch_sub_explicit(&b->used, n, memory_order_relaxed);
}

uint64_t membudget_used(const membudget *b) {
    return atomic_load_explicit(&((membudget *)b)->used, memory_order_relaxed);
}

void membudget_metrics(const membudget *b, bv_buf *out) {
    membudget *m = (membudget *)b;
    bv_buf_printf(out,
                  "# HELP beava_body_budget_limit_bytes Budget for request bodies being received or awaiting their answer.\n"
                  "# TYPE beava_body_budget_limit_bytes gauge\nbeava_body_budget_limit_bytes %llu\n"
                  "# HELP beava_body_budget_used_bytes Bytes of that budget held now.\n"
                  "# TYPE beava_body_budget_used_bytes gauge\nbeava_body_budget_used_bytes %llu\n"
                  "# HELP beava_body_budget_peak_bytes Highest use of the budget since start.\n"
                  "# TYPE beava_body_budget_peak_bytes gauge\nbeava_body_budget_peak_bytes %llu\n"
                  "# HELP beava_body_budget_refused_total Buffer growths refused because the budget was spent.\n"
                  "# TYPE beava_body_budget_refused_total counter\nbeava_body_budget_refused_total %llu\n",
                  (unsigned long long)m->limit, (unsigned long long)atomic_load(&m->used),
                  (unsigned long long)atomic_load(&m->peak), (unsigned long long)atomic_load(&m->refused));
}
