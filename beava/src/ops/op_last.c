/*
 * op_last.c - `last`: the latest non-null matched value of `field`. Lifetime only;
 * `field` required. Numeric values are coerced to the declared field type (opval_coerce,
 * sketch/opval.h). State: op_val (16 bytes). Empty: null.
 */
#include "valstate.h"

static void last_update(const feature *f, void *st, const op_input *in) {
    (void)f;
    opval_set(st, in->v);
}

VALSTATE_VTABLES(op_last, "last",
                 OPF_LIFETIME_ONLY | OPF_FIELD_REQUIRED | OPF_READS_FIELD | OPF_COERCE,
                 last_update, NULL);
