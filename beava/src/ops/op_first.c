/*
 * op_first.c - `first`: the first non-null matched value of `field`, then frozen.
 * Lifetime only; `field` required. Numeric values are coerced to the declared field type
 * (opval_coerce, sketch/opval.h). State: op_val (16 bytes). Empty: null.
 */
#include "valstate.h"

static void first_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    op_val *v = st;
    if (v->kind == BV_NULL) opval_set(v, in->v);
}

VALSTATE_VTABLES(op_first, "first",
                 OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_COERCE,
                 first_update, NULL);
