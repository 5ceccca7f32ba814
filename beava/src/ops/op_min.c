/*
 * op_min.c - `min`: smallest value of `field` by the rule of extreme.h (same-kind
 * comparison, first observed wins ties), output in the value's own type. Numeric values
 * are coerced to the declared field type first (opval_coerce, sketch/opval.h).
 * Windowable. State: op_val (16 bytes). Empty: null.
 */
#include "extreme.h"
#include "valstate.h"

static void min_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    extreme_offer(st, in->v, -1);
}

static void min_merge(const feature *f, void *dst, const void *src) {
    (void)f;
    extreme_merge(dst, src, -1);
}

VALSTATE_VTABLES(op_min, "min",
                 OPF_WINDOWABLE | OPF_FIELD_CHECKED | OPF_READS_FIELD | OPF_COERCE,
                 min_update, min_merge);
