/*
 * engine.h - the data plane's operations, transport-independent: register, push, get,
 * batch_get, the legacy GET, reset, ping, metrics, recovery and snapshots.
 *
 * Push path, in the order one event travels (push.c holds the design in full):
 *   a listener decodes the body straight into a bv_row (rowdec.c) and hands a batch of
 *   rows to engine_push_submit() on its I/O thread -> validation, dedupe, prefix chains
 *   and entity keys, still on that thread, against the registry version it pinned ->
 *   the sequencer (one short critical section per batch) gives each event its LSN,
 *   appends its WAL record and routes each table's part to the shard owning
 *   hash(table, key): applied inline when that shard is idle, else queued to its thread
 *   -> the batch completes when every part is applied (and, for sync pushes, durable);
 *   a batch that cannot complete at once is answered later through its done callback,
 *   so an I/O thread never waits for a shard or an fsync.
 *
 * Registry changes build an immutable next version beside readers and publish it by
 * pointer swap in the sequencer section of their record (engine_int.h): no reader waits
 * for one. Reset and snapshots take the barrier (pushes wait, gets do not) until every
 * sequenced record is applied. All are exactly ordered with the pushes around them, and
 * replay (records in LSN order) reproduces the same state.
 *
 * Reads run on the calling thread under the owning shard's state lock: a get issued
 * after a push's ack sees it (the ack is sent after the apply).
 */
#ifndef BEAVA_ENGINE_H
#define BEAVA_ENGINE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "jsonw.h"
#include "log.h"
#include "value.h"

typedef struct engine engine;

/* WAL record kinds (one LSN space). */
enum { REC_EVENT = 1, REC_REGISTER = 3, REC_RESET = 5 };

/* The log seam (the WAL). append queues a record and returns its LSN at once; wait
 * blocks until that LSN is durable (0) or known failed (-1). Both fill reason on error.
 * NULL append = memory only: LSNs come from a counter and nothing is waited for. */
typedef struct engine_wal_ops {
    int (*append)(void *ctx, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen);
    int (*wait)(void *ctx, uint64_t lsn, char *reason, size_t rlen);
    void *ctx;
    /* The log never voids an appended record: a failed write is retried until it is on
     * disk (wait fails only when the log closes), and records become durable in LSN
     * order (batch durability's keep_failed, storage/wal.h). A register is then applied
     * as its record is appended and only its reply waits for the disk. */
    bool never_voids;
} engine_wal_ops;

/* engine_wal_ops.append may return this: the log refused the record because another
 * was appended first (cluster registry, expected last sequence); register answers 409. */
#define ENGINE_LOG_CONFLICT (-2)

typedef struct engine_batch engine_batch;
typedef enum engine_transport { TRANSPORT_HTTP = 0, TRANSPORT_TCP = 1 } engine_transport;

/* The cluster's log backend (beava/src/cluster). With `publish` set, a push batch is
 * validated and split here as usual, then handed to the backend instead of being
 * sequenced and applied: the owners of each part's partition apply it later, from the
 * log, through engine_apply_logged(). */
typedef struct engine_log_part {
    const char *table;           /* the table it feeds (NUL-terminated) */
    const char *key;             /* its entity key (internal form), klen bytes */
    size_t klen;
} engine_log_part;

typedef struct engine_log_record {
    size_t item;                 /* index of the push in the batch */
    const void *payload;         /* the event record (evrec), what engine_apply_logged takes */
    size_t len;
    const engine_log_part *parts;
    size_t nparts;               /* 0: the event feeds no table (nothing to apply anywhere) */
} engine_log_record;

typedef struct engine_log_backend {
    /* Takes the batch's valid pushes (invalid ones already have their result). Must fill
     * each record's item result and call b->done(b) exactly once, from another thread;
     * recs and the memory they point to stay valid until then. */
    void (*publish)(void *ctx, engine_batch *b, const engine_log_record *recs, size_t n);
    /* While engine_apply_logged runs: should this part be applied here. */
    bool (*keep_part)(void *ctx, const char *table, const char *key, size_t klen);
    /* Before a well-formed get is served here: -1 = serve it locally, else the status of
     * the answer the backend wrote to out (an owner's answer, or an error). */
    int (*get)(void *ctx, engine_transport t, const json_t *req, bv_buf *out);
    /* Before a well-formed batch_get (`reqs`: its n entries): fwd[i] = the answer of entry
     * i when the backend had it served elsewhere (malloc'd JSON text, a row or an error
     * object; the engine frees it), NULL to serve it here. */
    void (*batch_get)(void *ctx, const json_t *reqs, char **fwd);
    /* Before a push naming an event, or a get naming a table, not registered here is
     * answered 404, and before a register is judged: wait (bounded) until this node
     * applied the registry as the log holds it now (a register or reset on another node).
     * Called with no engine lock held. Optional. */
    void (*registry_catch_up)(void *ctx);
    /* The same for a push batch, off the submitting (I/O) thread: catch up, then call
     * engine_push_resume(b) from any thread. Optional; used instead of registry_catch_up
     * for pushes when set. */
    void (*registry_catch_up_push)(void *ctx, engine_batch *b);
    /* A reset (test mode checked): the backend orders it with the events in its log and
     * applies it (through engine_replay) itself; returns the HTTP status, body in out. */
    int (*reset)(void *ctx, bv_buf *out);
    /* Event records handed to publish name every field by name (evrec.h), the form every
     * build reads, instead of by schema position: nodes of older builds may read the log. */
    bool records_by_name;
    void *ctx;
} engine_log_backend;

typedef struct engine_options {
    bool test_mode;
    bool memory_gov_enforce;
    engine_wal_ops wal;
    engine_log_backend log;       /* cluster mode; zero = single node */
    unsigned shards;              /* entity partitions (0 = 1, at most SHARD_MAX) */
    size_t queue_capacity;        /* tasks per shard ring (0 = 4096) */
} engine_options;

engine *engine_new(const engine_options *opts);
void engine_free(engine *e);

/* POST /register body (transport checks done). Returns the HTTP status. Blocks until the
 * change is durable (a removal also until every earlier push is applied); pushes
 * sequenced before it may still be applying, with the registry they were judged on. */
int engine_register(engine *e, const char *body, size_t len, bv_buf *out);

/* ---- push ------------------------------------------------------------------------- */

/* Push outcome, for the transport to render. */
typedef struct push_result {
    int status;                  /* 200, 400, 404, 503 */
    char code[64];               /* error code when status != 200 */
    char reason[256];            /* human detail for errors */
    uint64_t ack_lsn;
    uint64_t registry_version;
    bool replay;                 /* dedupe replay: ack_lsn/registry_version are the original's */
    uint64_t current_version;    /* version now (TCP replay body) */
} push_result;

/* One event to push, as decoded by a listener. */
typedef struct engine_push_item {
    const char *event;           /* NULL: not a push envelope (res = 400 unsupported) */
    size_t event_len;
    bv_row *row;                 /* the event's fields; ignored when !data_is_object. The
                                  * engine normalises values in place (3.0 in an i64 field
                                  * becomes 3) */
    bool data_is_object;         /* false: data_kind names what was sent instead */
    const char *data_kind;
    bool has_control_char;       /* a control character in the name, a field name or a string */
    bool sync;                   /* acknowledge only once durable */
    push_result res;             /* out */
} engine_push_item;

typedef void (*engine_done_fn)(engine_batch *b);
typedef struct push_batch_state push_batch_state;   /* engine-private, reused */

/* A batch of pushes. The caller owns it (and may reuse it for batch after batch: the
 * engine keeps its scratch in `priv` until engine_batch_free). */
struct engine_batch {
    engine_push_item *items;
    size_t n;
    engine_done_fn done;         /* asynchronous completion, see engine_push_submit */
    void *owner;                 /* the caller's */
    push_batch_state *priv;
};

void engine_batch_init(engine_batch *b);
void engine_batch_free(engine_batch *b);

/* Validate, log and apply b's items in order. Never waits for a shard or the disk (it
 * may wait briefly behind a registry change). Returns true when every item has its
 * result (done is NOT called); false when some results come later: then b->done(b) is
 * called exactly once, from another thread, and until then the caller must not touch b,
 * its items or the memory their rows point into. */
bool engine_push_submit(engine *e, engine_batch *b);

/* Submit b again after log.registry_catch_up_push (no second catch-up); its results come
 * through b->done, called from this thread or later from another. */
void engine_push_resume(engine *e, engine_batch *b);

/* Blocking conveniences over engine_push_submit for callers that have no event loop
 * (tests, the fuzzer). `data` is the event body as JSON. */
void engine_push(engine *e, const char *event, size_t event_len, const json_t *data, bool sync, push_result *res);

/* Fill `item` (and `row`, whose fields it mallocs: free(row->fields)) from a JSON event
 * body; values borrow from `data`. For JSON-tree callers (cold paths, tests). */
void engine_item_from_json(engine_push_item *item, bv_row *row, const char *event, size_t event_len,
                           const json_t *data);

/* Render a push result the way HTTP (t=HTTP) or TCP answers it. Returns the status. */
int engine_push_body(const push_result *res, engine_transport t, bv_buf *out);

/* ---- reads -------------------------------------------------------------------------- */

/* POST /get and OP_GET. `req` is the parsed body or NULL with parse_error set. */
int engine_get(engine *e, engine_transport t, const json_t *req, const char *parse_error, bv_buf *out);

/* POST /batch_get and OP_BATCH_GET. */
int engine_batch_get(engine *e, const json_t *req, const char *parse_error, bv_buf *out);

/* Legacy TCP OP_MGET {"feature":F,"keys":[..]} (features = [F]) and OP_GET_MULTI
 * {"keys":[..],"features":[..]}: {entity:{feature:value}} for entities that exist;
 * features resolve through the global feature index; keys whose arity does not match a
 * feature's table are skipped; more than 10,000 cells is internal_error. */
int engine_get_multi(engine *e, const json_t *req, bool single_feature, bv_buf *out);

/* Legacy GET /get/<name>/<key> (rest = "<name>/<key>"). */
int engine_get_legacy(engine *e, const char *rest, bv_buf *out);

/* POST /reset, OP_RESET. */
int engine_reset(engine *e, bv_buf *out);

/* POST /ping body. */
int engine_ping(engine *e, bv_buf *out);

uint64_t engine_registry_version(engine *e);

/* Admin /registry body {"version":V,"node_count":C}. */
void engine_registry_info(engine *e, bv_buf *out);

/* Prometheus text exposition of every engine metric. */
void engine_metrics(engine *e, bv_buf *out);

/* ---- recovery and snapshots --------------------------------------------------------- */

/* Re-apply one WAL record during recovery (no logging). Returns 0, or -1 with a reason
 * when the record cannot be decoded or applied (the caller logs and counts it). Event
 * records are applied by recovery's pipeline (push.c, "replay") after engine_replay
 * returns: one that turns out not to decode or validate is reported to the sink set by
 * engine_replay_on_error (in LSN order, on the calling thread, by a later engine_replay
 * or engine_replay_finish) instead of through the return value. */
int engine_replay(engine *e, int kind, uint64_t lsn, const void *payload, size_t len, char *reason, size_t rlen);
typedef void (*engine_replay_error_fn)(void *ctx, const char *reason);
void engine_replay_on_error(engine *e, engine_replay_error_fn fn, void *ctx);
/* The end of the log: every replayed record applied and reported, the pipeline stopped. */
void engine_replay_finish(engine *e);

/* Cluster mode: apply event records taken from the log (seq: their log position), only the
 * parts log.keep_part keeps, as one step (no registry change lands in the middle). One
 * caller thread at a time. Returns how many records could not be decoded or validated
 * (reason: the first one's); the others are applied. */
typedef struct engine_logged {
    const void *payload;          /* an event record (evrec) */
    size_t len;
} engine_logged;
/* The dedupe by event key is decided here, in log order, per dedupe_scope (the cluster's
 * partition): a record whose key the scope already took within the event's window (by the
 * records' arrival times) is not applied. */
size_t engine_apply_logged(engine *e, const engine_logged *recs, size_t n, uint64_t seq, unsigned dedupe_scope,
                           char *reason, size_t rlen);

/* The highest LSN sequenced (every record up to it is applied once the engine is idle). */
uint64_t engine_applied_lsn(engine *e);

/* Serialise the whole state (registry history, dedupe cache, every entity row) through
 * write(ctx, bytes, n) (returns 0 or -1). The caller must hold the engine quiesced:
 * either inside engine_quiesce's callback or in a fork()ed child of it. */
typedef int (*engine_write_fn)(void *ctx, const void *p, size_t n);
int engine_serialize(engine *e, engine_write_fn write, void *ctx);

/* Cluster (partitions moving between nodes): which entities to keep. */
typedef bool (*engine_keep_fn)(void *ctx, const char *table, const char *key, size_t klen);
/* engine_serialize, only the entities keep accepts (every table, the registry history and
 * the dedupe cache as engine_serialize writes them). */
int engine_serialize_filtered(engine *e, engine_keep_fn keep, void *kctx, engine_write_fn write, void *ctx);
/* Take the entities keep accepts from a state written by engine_serialize[_filtered] into a
 * running engine, replacing those of the same key: an engine without registry history
 * takes the snapshot's (and its dedupe cache), one with history must have exactly the
 * snapshot's. 0, or -1 with a reason (the engine is then unchanged up to the entity that
 * failed). */
int engine_merge(engine *e, const void *body, size_t len, engine_keep_fn keep, void *kctx, char *reason, size_t rlen);
/* Remove every entity keep rejects (under the barrier). Returns how many. */
size_t engine_drop_entities(engine *e, engine_keep_fn keep, void *kctx);

/* Run fn(ctx, applied_lsn, registry_version) with every sequenced record applied and
 * nothing new admitted (used to fork a snapshot child). Returns fn's result. */
int engine_quiesce(engine *e, int (*fn)(void *ctx, uint64_t lsn, uint64_t version), void *ctx);

/* Restore a state written by engine_serialize into a fresh engine. Returns 0, or -1 with
 * a reason (the engine must then be discarded). */
int engine_deserialize(engine *e, const void *body, size_t len, char *reason, size_t rlen);

/* Entity lifecycle: evict entities idle longer than their event's cold_after_ms.
 * Scans at most `budget` index slots per call, resuming where the last call stopped, one
 * shard at a time (only that shard's state lock is held). Returns the number evicted. */
size_t engine_sweep_cold(engine *e, size_t budget);

/* Start the shard threads (after recovery; before, work is applied inline). 0 or -1. */
int engine_start_shards(engine *e);

/* Test hooks: pause a shard (its queue fills up: overload); which shard owns a key. */
void engine_pause_shard(engine *e, unsigned shard, bool paused);
/* Test hooks: hold every registry change after its next version is built and before it
 * is published (on), or let them go (off); wait until a change is held. */
void engine_hold_registry_changes(engine *e, bool on);
void engine_wait_registry_held(engine *e);
/* Registry versions in memory: the current one plus those replaced but not yet freed
 * (pinned by a reader, or a queued part may still read them). */
uint64_t engine_registry_versions_retained(engine *e);
unsigned engine_shard_of(engine *e, const char *table, const char *key);

/* Is `table` a registered aggregation (site allow-lists). */
bool engine_has_table(engine *e, const char *table);

#endif
