/*
 * persist.h - durability for one engine: the WAL, snapshots and crash recovery
 * (README, Durability).
 *
 * persist_open() takes the data-dir lock (through the WAL), loads the newest snapshot
 * whose body decodes (stepping back to older ones when it does not), replays the WAL
 * tail in LSN order and plugs the WAL into the engine's log seam. A background thread
 * then takes a snapshot every snapshot_interval_s: the engine is quiesced for the time
 * of a fork(), the child writes the snapshot (copy-on-write memory, so pushes do not
 * stop), the parent reaps it and deletes the WAL segments covered by the oldest
 * snapshot still retained. persist_close() writes a final snapshot and closes the WAL.
 *
 * Missing records: when LSNs that were on disk are held by no file and no usable
 * snapshot covers them, recovery fails with one storage.recovery_refused line naming
 * the range and the files expected, having deleted or modified nothing. With
 * accept_data_loss it goes on: logged (storage.data_loss_accepted), in /metrics, the old
 * files kept in <data_dir>/data-loss-<UTC time>/, and a snapshot taken at once. In batch
 * mode the WAL keeps records whose write failed and writes them again (keep_failed).
 */
#ifndef BEAVA_PERSIST_H
#define BEAVA_PERSIST_H

#include "config.h"
#include "engine.h"
#include "jsonw.h"
#include "log.h"

typedef struct persist persist;

/* Take the data-dir lock and validate the WAL segments. Returns NULL with a message in
 * err (lock held by another process: the message names the LOCK file and its PID; a
 * refused segment). */
persist *persist_open(const bv_config *cfg, const bv_log *log, char *err, size_t errlen);

/* The WAL callbacks to put in engine_options.wal before engine_new. */
void persist_wal_ops(persist *p, engine_wal_ops *ops);

/* Load the newest usable snapshot into `eng`, replay the WAL tail, start writing and
 * start the snapshot thread. Returns 0, or -1 with a message in err. */
int persist_recover(persist *p, engine *eng, char *err, size_t errlen);

/* Take a snapshot now and wait for it. Writes {"lsn":N,"path":"..."} or an error body;
 * returns the HTTP status. */
int persist_snapshot_now(persist *p, bv_buf *out);

/* Prometheus lines: WAL, recovery and snapshot figures. */
void persist_metrics(persist *p, bv_buf *out);
/* Recovery progress for admin /ready while recovering: appends
 * ,"progress":{"phase","records","bytes","wal_bytes_total","snapshot_bytes"} — records and
 * payload bytes replayed so far, of a WAL of wal_bytes_total bytes on disk. Safe to call
 * from another thread while persist_recover runs. */
void persist_progress(persist *p, bv_buf *out);

/* Stop the snapshot thread, take a final snapshot, close the WAL (final fsync). */
void persist_close(persist *p);

#endif
