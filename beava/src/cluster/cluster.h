/*
 * cluster.h - beava as a cluster on NATS JetStream (README "Cluster").
 *
 * The stream is the write-ahead log. One JetStream stream per cluster ("BEAVA_<name>",
 * file storage) holds a subject per partition ("beava.<name>.p.<N>") and the registry
 * subject ("beava.<name>.reg"). There is no local WAL in cluster mode.
 *
 * Push: the receiving node validates and splits as a single node does (engine), then the
 * engine hands the batch to this module (engine_log_backend.publish). Publisher threads
 * group the records by partition of each (table, key) they feed, publish one message per
 * partition with a message id (JetStream de-duplicates a retried publish), and answer
 * each push once JetStream acknowledged every partition it went to (ack_lsn = the
 * highest stream sequence among them). A push JetStream did not acknowledge is answered
 * 503 cluster_unavailable, never acknowledged.
 *
 * Reads (engine_log_backend.get): a get for an owned partition waits (bounded) until the
 * node applied it up to the stream's last sequence at the time of the read; any other is
 * forwarded over NATS request/reply to the partition's owners (a queue group each).
 *
 * Apply: ownership comes from partmap (rendezvous hashing over the member list). Each node
 * consumes only its partitions' subjects (an ordered consumer each, starting after the
 * sequence its snapshot recorded) and applies them through the engine's normal shards
 * (engine_apply_logged, keeping only the parts of that partition). Every message carries
 * the registry sequence it was validated against; it is applied only once this node's
 * registry has reached it.
 *
 * Membership (clmember.c): the member list lives in its own stream "BEAVA_<name>_MEMBERS"
 * (no retention limits: the partitions' stream may drop old messages, never the member
 * list), subject "beava-members.<name>.log". Each record is the whole state:
 * {"epoch":E,"nodes":[...],"next":[...]|null,"ready":[...]}, written with an
 * expected-last-subject-sequence (compare-and-set: of two concurrent writers one wins).
 * The first node of a new cluster seeds it from cluster.nodes (epoch 1); afterwards the
 * log is the truth and cluster.nodes is ignored. A change (POST /cluster/members
 * {"add":id} / {"remove":id}, `beava members`) writes "next" = the new list. The nodes that
 * own a partition under "next" they do not own under "nodes" (the gainers) build those
 * partitions and consume them, without joining their read queue groups; each then adds
 * itself to "ready"; the gainer that completes "ready" writes the switch in the same
 * record: epoch E+1, nodes = next, next = null. Every node follows the newest record: on a
 * new epoch it swaps its partition map (reads and forwarding follow the new owners at
 * once), joins the queue groups of the partitions it now owns and leaves the others; a
 * partition it lost is still applied for read_wait_ms + publish_timeout_ms (reads in
 * flight finish), then unsubscribed and its entities dropped. One change at a time
 * ({"cancel":true} abandons a pending one; the gainers drop what they built). A node not
 * in the list runs, owns nothing and forwards every read. Addresses: each node publishes
 * {"node","admin","data"} on "beava-members.<name>.addr.<id>" (cluster.advertise_admin /
 * advertise_data, default the bound addresses).
 *
 * Building a partition (clmember.c, clsnap.c): a node gaining p, or starting without a
 * local snapshot (a fresh or wiped data dir), fetches GET /cluster/snapshot?parts=p from
 * an owner of the current epoch over its advertised admin port (the admin token is sent;
 * capped at cluster.peer_snapshot_max_mb; CRC-32C checked; refused by a peer that has not
 * built p or caught up). The body carries the peer's registry sequence, p's applied stream
 * sequence and p's entities (engine_serialize_filtered); it is merged (engine_merge) when
 * this node's registry is at the same record (a fresh node takes the peer's registry
 * with it) and p is consumed from the peer's sequence. Without a peer, the stream alone
 * builds p when it still holds everything after what this node applied (cl_covered);
 * otherwise /ready stays 503 and says why (GET /cluster "build_error"), and the build is
 * retried every MEMBER_RETRY_MS: never a silent loss. A restart with a local snapshot
 * consumes the stream from the snapshot's sequences when the stream covers them.
 *
 * Registry: a register goes through the engine's WAL seam to the registry subject with an
 * expected-last-subject-sequence (its base: the registry record this node applied last):
 * of two concurrent registers on one base one lands, the other gets 409. A clustered
 * stream (nats-server 2.9) may store both (nats-server issue 4320), so every node also
 * checks each record's base against the record before it and skips a void one; the
 * publisher learns it from the stream's leader (STREAM.MSG.GET next_by_subj after its
 * base) and answers 409. Every node applies registry records in stream order; the node
 * that published one applied it already. A register is judged after catching up with the
 * registry subject; a push naming an unknown event catches up on a thread of its own
 * (clapply.c) and is resumed, off the I/O thread.
 *
 * Dedupe by event key: decided by the owners at apply time, per partition, in the
 * partition's log order (engine_apply_logged with the partition as dedupe scope; the
 * window in the records' arrival times), so every owner of a partition decides alike and
 * two nodes receiving the same event key never both get it applied.
 *
 * Reset (test mode; engine_log_backend.reset): a registry record R then a marker
 * (Beava-Reset: R, message id fixed by R and the partition) on every partition subject. A
 * partition's place for R is its first message that is the marker or carries Beava-Reg
 * >= R; the partition's consumer holds there (part_sub.held) and the registry's consumer
 * applies R once every owned partition is held, publishing the markers of its own
 * partitions if they do not come within publish_timeout_ms.
 *
 * Snapshots: <data_dir>/cluster/snap-<ms>.bin holds the registry sequence, the applied
 * stream sequence of every partition, which partitions the state holds, and the engine
 * state (engine_serialize), with a CRC-32C, written by a fork()ed child (the engine is
 * held quiesced only for the fork). Recovery = newest valid snapshot + the stream from
 * there.
 *
 * Locks: apply_mu (one message applied at a time; snapshots; ownership changes) -> the
 * engine's barrier; reg_mu (registry sequence, partitions held for a registry record,
 * publisher queue state) and member_mu (the newest membership record, the pending
 * change's map) are leaves; a partition waits for a registry record on reg_cv, not
 * holding apply_mu.
 */
#ifndef BEAVA_CLUSTER_H
#define BEAVA_CLUSTER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "engine.h"
#include "jsonw.h"
#include "log.h"

typedef struct cluster cluster;

/* Connect to NATS, create (or check) the stream, build the partition map. NULL with a
 * message in err on failure. */
cluster *cluster_open(const bv_config *cfg, const bv_log *log, char *err, size_t errlen);

/* The engine options this module provides: the registry's log and the push backend. */
void cluster_engine_ops(cluster *c, engine_wal_ops *wal, engine_log_backend *lb);

/* Restore the newest valid local snapshot into eng (before engine_start_shards). 0, or
 * -1 with err set (the engine must then be discarded). No snapshot is not an error. */
int cluster_recover(cluster *c, engine *eng, char *err, size_t errlen);

/* Start publishing, the consumers of this node's partitions and the registry, and the
 * snapshot timer. *ready is set once every owned partition and the registry have caught
 * up with the stream as it was at start. 0 or -1 with err set. */
int cluster_start(cluster *c, atomic_bool *ready, char *err, size_t errlen);

/* The bound admin address (advertised unless cluster.advertise_admin says otherwise) and
 * the admin token sent to peers (NULL: none); before cluster_start. */
void cluster_set_admin(cluster *c, const char *admin_bound, const char *token);
/* Once the data port is bound: publish this node's addresses (GET /cluster shows them,
 * peers fetch partition snapshots from the admin one). */
void cluster_advertise(cluster *c, const char *data_bound);

/* Admin /cluster/<sub> (POST /cluster/members, GET /cluster/snapshot). Returns the status. */
int cluster_admin(cluster *c, const char *method, const char *sub, const char *query, const char *body, size_t len,
                  bv_buf *out, const char **ctype);

/* Admin /ready while not ready: ",\"progress\":{...}" (what is being built, why not). */
void cluster_progress(cluster *c, bv_buf *out);

/* Admin POST /snapshot: write a snapshot now. Returns the HTTP status. */
int cluster_snapshot_now(cluster *c, bv_buf *out);

/* Admin GET /cluster: this node, the members, every partition's owners, and for the
 * partitions this node owns the sequence applied, the stream's last and the lag. Returns
 * the HTTP status. Asks JetStream once per owned partition: for operators, not a hot path. */
int cluster_status(cluster *c, bv_buf *out);

/* Prometheus lines for admin /metrics; the per-partition lag asks JetStream once per owned
 * partition, as cluster_status does. */
void cluster_metrics(cluster *c, bv_buf *out);

/* Stop consuming and publishing (pending pushes are answered), write a final snapshot,
 * disconnect. NULL is a no-op. */
void cluster_close(cluster *c);

#endif
