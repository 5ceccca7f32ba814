/*
 * engine.h - the data plane's operations, transport-independent: register, push, get,
 * batch_get, the legacy GET, reset, ping, metrics.
 *
 * The HTTP and TCP layers parse bytes into JSON values and call these functions; the
 * engine validates in the reference order (reference-wire-api.md §8, §9), applies, and
 * writes the response body. Every state change goes through one "log then apply" path:
 * engine_options.log (the WAL; NULL in memory-only mode, where LSNs come from a counter)
 * is called with the record before the registry or any entity state is touched; if it
 * fails the request is answered 503 wal_unavailable and nothing changes.
 *
 * Concurrency: one mutex serialises every operation, which gives read-your-writes
 * across connections (a get issued after a push's ack sees it). Sync-mode pushes wait
 * for durability after releasing the mutex.
 */
#ifndef BEAVA_ENGINE_H
#define BEAVA_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "jsonw.h"
#include "log.h"

typedef struct engine engine;

/* WAL record kinds (one LSN space). */
enum { REC_EVENT = 1, REC_EVENT_BATCH = 2, REC_REGISTER = 3, REC_FORCE_REMOVE = 4, REC_RESET = 5 };

/* The log seam (the WAL). append queues a record and returns its LSN at once; wait
 * blocks until that LSN is durable (0) or known failed (-1). Both fill reason on error.
 * NULL append = memory only: LSNs come from a counter and nothing is waited for. */
typedef struct engine_wal_ops {
    int (*append)(void *ctx, int kind, const void *payload, size_t len, uint64_t *lsn, char *reason, size_t rlen);
    int (*wait)(void *ctx, uint64_t lsn, char *reason, size_t rlen);
    void *ctx;
} engine_wal_ops;

typedef struct engine_options {
    bool test_mode;
    bool memory_gov_enforce;
    const bv_log *log;
    engine_wal_ops wal;
    unsigned shards;              /* entity partitions (0 = 1); threads start with engine_start_shards */
} engine_options;

typedef enum engine_transport { TRANSPORT_HTTP = 0, TRANSPORT_TCP = 1 } engine_transport;

engine *engine_new(const engine_options *opts);
void engine_free(engine *e);

/* POST /register body (transport checks done). Returns the HTTP status. */
int engine_register(engine *e, const char *body, size_t len, bv_buf *out);

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

/* Validate and apply one event. `data` is the event body (any JSON; non-objects are
 * invalid_event). `sync` waits for durability before returning. */
void engine_push(engine *e, const char *event, size_t event_len, const json_t *data, bool sync, push_result *res);

/* Many pushes in one go (TCP OP_PUSH_MANY): validated, logged and dispatched in order
 * under one lock hold, then waited for together. events[i] NULL marks an unusable
 * envelope (res[i] = 400 unsupported). */
void engine_push_batch(engine *e, size_t n, const char *const *events, const size_t *event_lens,
                       const json_t *const *datas, bool sync, push_result *res);

/* Render a push result the way HTTP (t=HTTP) or TCP answers it. Returns the status. */
int engine_push_body(const push_result *res, engine_transport t, bv_buf *out);

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

/* Re-apply one WAL record during recovery (no logging, no waiting). Returns 0, or -1
 * with a reason when the record cannot be decoded (the caller logs and counts it). */
int engine_replay(engine *e, int kind, uint64_t lsn, const void *payload, size_t len, char *reason, size_t rlen);

/* The LSN up to which every record has been applied. */
uint64_t engine_applied_lsn(engine *e);

/* Serialise the whole state (registry history, dedupe cache, every entity row) through
 * write(ctx, bytes, n) (returns 0 or -1). The caller must hold the engine quiesced:
 * either inside engine_quiesce's callback or in a fork()ed child of it. */
typedef int (*engine_write_fn)(void *ctx, const void *p, size_t n);
int engine_serialize(engine *e, engine_write_fn write, void *ctx);

/* Run fn(ctx, applied_lsn, registry_version) with the engine locked and no record in
 * flight (used to fork a snapshot child). Returns fn's result. */
int engine_quiesce(engine *e, int (*fn)(void *ctx, uint64_t lsn, uint64_t version), void *ctx);

/* Restore a state written by engine_serialize into a fresh engine. Returns 0, or -1 with
 * a reason (the engine must then be discarded). */
int engine_deserialize(engine *e, const void *body, size_t len, char *reason, size_t rlen);

/* Entity lifecycle: evict entities idle longer than their event's cold_after_ms.
 * Scans at most `budget` index slots per call, resuming where the last call stopped, so
 * the engine is never held for long. Returns the number of entities evicted. */
size_t engine_sweep_cold(engine *e, size_t budget);

/* Start the shard threads (after recovery; before, work is applied inline). Queues hold
 * queue_capacity tasks each (0 = 4096); a push that finds a target queue full is
 * answered 503 overloaded. Returns 0 or -1. */
int engine_start_shards(engine *e, size_t queue_capacity);

/* Test hooks: pause a shard (its queue fills up: overload); which shard owns a key. */
void engine_pause_shard(engine *e, unsigned shard, bool paused);
unsigned engine_shard_of(engine *e, const char *table, const char *key);

/* Is `table` a registered aggregation / `event` a registered event (site allow-lists). */
bool engine_has_table(engine *e, const char *table);

#endif
