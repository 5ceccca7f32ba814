/*
 * op_table.c - the one registry of operator kinds.
 *
 * The kinds and their aliases are the lists of base/names.h (BV_OP_KINDS, BV_OP_ALIASES),
 * which the control daemon shares. Adding a kind: write ops/op_<name>.c defining
 * `const struct op_vtable op_<name>`, then add X(<name>) there. The table is const and
 * searched linearly (55 names, only at register time).
 */
#include <string.h>
#include "names.h"
#include "op.h"

#define DECLARE(n) extern const struct op_vtable op_##n;
BV_OP_KINDS(DECLARE)
#undef DECLARE

#define REF(n) &op_##n,
static const struct op_vtable *const op_table[] = { BV_OP_KINDS(REF) };
#undef REF

#define ALIAS(alias, kind) { #alias, &op_##kind },
static const struct { const char *alias; const struct op_vtable *vt; } op_aliases[] = { BV_OP_ALIASES(ALIAS) };
#undef ALIAS

const struct op_vtable *op_lookup(const char *name) {
    for (size_t i = 0; i < sizeof op_table / sizeof op_table[0]; i++)
        if (strcmp(op_table[i]->name, name) == 0) return op_table[i];
    for (size_t i = 0; i < sizeof op_aliases / sizeof op_aliases[0]; i++)
        if (strcmp(op_aliases[i].alias, name) == 0) return op_aliases[i].vt;
    return NULL;
}

const struct op_vtable *op_kind_at(size_t i) {
    return i < sizeof op_table / sizeof op_table[0] ? op_table[i] : NULL;
}
