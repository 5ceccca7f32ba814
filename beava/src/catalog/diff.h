/*
 * diff.h - the one registry diff classifier (README "Registering pipelines").
 *
 * diff_classify() compares the registered descriptors with a register payload and
 * produces the categorised diff that dry_run reports, that the force gate (409) tests,
 * and that registry_apply() follows (which fields to add, which features to append,
 * which descriptors force replaces). There is no second comparison anywhere: the
 * registry asks this module every question of the form "what changed".
 *
 * Input is the normal form of each descriptor node that registry.c produces (every
 * default made explicit, unknown keys dropped, derivation `schema` kept but ignored
 * here because the server recomputes it). The payload is declarative: a registered
 * name missing from the payload is a removal.
 *
 * Classes, in output order (this is also the sort order of both lists):
 *   destructive  rename            {from, to}
 *                type_change       {field:"E.f", from, to}        to may be "<absent>"
 *                op_removal        {table, agg:"<op>[i]"}        ops list got shorter
 *                agg_removal       {table, agg}                  agg "" = descriptor gone
 *                window_change     {agg:"D.f", from, to}         missing window = ""
 *                agg_change        {table, agg}                  (ours) a feature's spec
 *                                  changed other than window/op: where, q, k, half_life,
 *                                  field, any other param
 *                key_cols_change   {table, from:[..], to:[..]}   group keys or
 *                                  table_primary_key (the latter when either side is a table)
 *                descriptor_change {name}                        (ours) anything else about
 *                                  a descriptor: upstreams, chain op contents, added ops,
 *                                  output_kind, dedupe_key/dedupe_window_ms,
 *                                  keep_events_for_ms, cold_after_ms, optional_fields,
 *                                  event <-> derivation kind change
 *   additive     new_descriptor    {descriptor_kind, name}
 *                new_agg           {table, agg, source:op}
 *                new_field         {event, field, type}
 * Within a class entries sort by (primary, secondary) strings in byte order:
 *   rename (from, to); type_change (field, "from->to"); op_removal, agg_removal,
 *   agg_change (table, agg); window_change (agg, "from->to"); key_cols_change
 *   (table, '["a", "b"]->["c"]'); descriptor_change (name); new_descriptor
 *   (descriptor_kind, name); new_agg (table, "agg@source"); new_field (event,
 *   "field:type"); remaining ties by creation order. already_present is sorted by name.
 *
 * Rename pairing: removed names are visited in sorted order, each paired with the first
 * not-yet-paired new payload node of the same kind in payload order (deterministic,
 * unlike the reference's hash order). Only the first payload node of a name is
 * classified (duplicates are a validation error later).
 *
 * Ownership: a reg_diff owns every string in it; diff_free() releases it.
 */
#ifndef BEAVA_DIFF_H
#define BEAVA_DIFF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include "jsonw.h"

typedef enum diff_class {
    DIFF_RENAME = 0,
    DIFF_TYPE_CHANGE,
    DIFF_OP_REMOVAL,
    DIFF_AGG_REMOVAL,
    DIFF_WINDOW_CHANGE,
    DIFF_AGG_CHANGE,
    DIFF_KEY_COLS_CHANGE,
    DIFF_DESCRIPTOR_CHANGE,
    DIFF_NEW_DESCRIPTOR,
    DIFF_NEW_AGG,
    DIFF_NEW_FIELD,
} diff_class;

/* One descriptor as the classifier sees it (borrowed pointers). */
typedef struct diff_desc {
    const char *name;
    bool is_event;               /* else derivation */
    const json_t *node;          /* normal form (registry.c) */
} diff_desc;

/*
 * One entry. Field use by class:
 *   rename            s1=from  s2=to
 *   type_change       s1=field s2=from s3=to
 *   op_removal, agg_removal, agg_change   s1=table s2=agg
 *   window_change     s1=agg   s2=from s3=to
 *   key_cols_change   s1=table from_keys/to_keys (JSON arrays of strings)
 *   descriptor_change s1=name
 *   new_descriptor    s1=descriptor_kind ("event"/"derivation") s2=name
 *   new_agg           s1=table s2=agg s3=source
 *   new_field         s1=event s2=field s3=type
 * owner: the registered descriptor the entry names (the force removal set), NULL for
 * new_descriptor.
 */
typedef struct diff_entry {
    diff_class cls;
    char *s1, *s2, *s3;
    json_t *from_keys, *to_keys;
    char *owner;
    char *sort2;                 /* secondary sort key */
    size_t seq;                  /* creation order: last tie-break */
} diff_entry;

typedef struct reg_diff {
    diff_entry *destructive;
    size_t ndestructive;
    diff_entry *additive;
    size_t nadditive;
    char **already_present;      /* sorted */
    size_t npresent;
} reg_diff;

/* Classify `pay` (payload order) against `cur` (any order). Never fails (allocation
 * failure aborts, as everywhere in beava). The caller frees *out with diff_free. */
void diff_classify(const diff_desc *cur, size_t ncur, const diff_desc *pay, size_t npay,
                   reg_diff *out);
void diff_free(reg_diff *d);

/* {"additive":[...],"already_present":[...],"destructive":[...]} */
void diff_write_json(const reg_diff *d, jsonw *w);

/* True for the two additive classes that name an existing descriptor. */
bool diff_entry_against_existing(const diff_entry *e);

/*
 * The force removal set (what force=true replaces, registry_prepare): owners of destructive
 * entries, plus (include_additive) owners of new_field / new_agg entries, plus every
 * registered derivation in `cur` whose upstreams contain a removed name, transitively.
 * Returns the count and a sorted array of distinct names in *out (caller frees each
 * string and the array; *out is NULL when the count is 0).
 */
size_t diff_removal_set(const reg_diff *d, bool include_additive, const diff_desc *cur,
                        size_t ncur, char ***out);

#endif
