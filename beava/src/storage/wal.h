/*
 * wal.h - the write-ahead log: one per data dir, CRC-framed records in size-rotated
 * segment files, written by one group-commit thread.
 *
 * Lifecycle (one process per data dir, enforced with flock on <dir>/LOCK):
 *
 *   wal_open()      take the lock, list the segments, validate every segment header
 *                   (a foreign or newer-format file is refused and left untouched)
 *   wal_recover()   scan every record in LSN order: repair the torn tail, quarantine
 *                   corrupt records, hand records with LSN > from_lsn to a callback; then
 *                   open the active segment and start the writer thread
 *   wal_append()    copy a record into the pending batch and return its LSN at once
 *   wal_wait_durable() / wal_lsn_state()   learn when (or whether) an LSN is on disk
 *   wal_truncate_before()   drop segments a snapshot has made redundant
 *   wal_close()     final write + fsync, join the writer, release the lock
 *
 * LSNs: one space for every record kind, starting at 1 and growing by 1 with every record
 * handed out (valid range 1..2^62). An LSN once handed out is never reused: if its record
 * could not be written it becomes a "void" LSN (see failure semantics), and so do LSNs
 * skipped by a snapshot floor (wal_recover's from_lsn). The next segment header records
 * such gaps, so recovery can tell a void LSN (never acknowledged as durable) from a lost
 * one (was durable, is gone: corruption).
 *
 * FAILURE SEMANTICS (write or fsync error, e.g. ENOSPC, EIO)
 *  - The batch being written and every record appended after it are failed as a whole:
 *    the writer truncates the active segment back to the end of the last fsynced batch
 *    and fsyncs it ("settling"). Only when that truncation is durable are the failed LSNs
 *    reported: wal_wait_durable() returns WAL_FAILED and wal_lsn_state() WAL_LSN_FAILED.
 *    A record reported failed is therefore not on disk and is never replayed.
 *  - From the first error until recovery the WAL is "degraded": wal_append() fails at
 *    once with code "wal_unavailable" (nothing is queued, no LSN is used), and appenders
 *    blocked by back-pressure wake with the same error. The engine answers 503
 *    wal_unavailable and changes nothing.
 *  - Recovery is automatic: the writer retries the settling truncation every retry_ms
 *    until it succeeds, then probes by creating a fresh segment whose header names the
 *    failed LSNs as void, first retry_ms after the failure, then at doubling intervals up
 *    to 1 s (the interval resets after a batch succeeds). When that header is on disk the
 *    WAL is healthy again and wal_append() accepts records (LSNs continue after the void
 *    ones).
 *  - Records a batch-mode caller already applied and acknowledged before the failure was
 *    known (wal_append succeeded, durability was not awaited) are not on disk; they count
 *    in wal_stats.failed_records. Callers that must never apply a non-durable record wait
 *    with wal_wait_durable() before applying.
 *  - With wal_options.keep_failed (batch mode: records are applied before they are
 *    durable), no record is ever voided: the failed batch and every record appended
 *    after it stay in memory (wal_stats.retained_records) and, once the settling
 *    truncation is durable, the writer writes them again at the same offset with the
 *    same LSNs, at the probe intervals above, until they are on disk; then the WAL is
 *    healthy again. Meanwhile wal_append() fails with "wal_unavailable" as above, and
 *    their waiters stay PENDING (wal_wait_durable() blocks) instead of failing. Only if
 *    wal_close() comes first (one last write is tried) are they lost, and wal_close()
 *    says so.
 *  - A record acknowledged as durable (wal_wait_durable() == WAL_OK, or an LSN at or
 *    below wal_durable_lsn() that is not void) is on disk.
 *  - Rotation failure (cannot create the next segment) is not a record failure: the writer
 *    keeps appending to the current segment and retries rotation later. Unless the
 *    half-created file could not even be removed: then no record may be written past it
 *    into the current segment (recovery would read such records as void), so the next
 *    batch must rotate first, and fails like a write failure if it cannot.
 *
 * BACK-PRESSURE: memory for records not yet durable is bounded by pending_cap. An append
 * that would exceed it BLOCKS until the writer has made room (at most one write+fsync),
 * or fails if the WAL becomes degraded or closes while it waits. A single record always
 * fits (the cap is raised to hold at least one maximal record).
 *
 * THREADS: after wal_recover(), wal_append, wal_wait_durable, wal_lsn_state,
 * wal_durable_lsn, wal_truncate_before, wal_set_registry_version and wal_get_stats may be
 * called from any number of threads. wal_open/wal_recover/wal_close are single-threaded:
 * nothing else may run on the handle while they do, and no call may start once wal_close
 * has begun (calls already blocked inside wal_append/wal_wait_durable are woken and
 * return before wal_close frees the handle).
 *
 * SNAPSHOTS: pass wal_truncate_before() the LSN of the OLDEST snapshot still retained,
 * not the newest, so that falling back to an older snapshot (newest one corrupt) still
 * finds every WAL record after it.
 *
 * The on-disk format is described at the top of wal.c.
 */
#ifndef BEAVA_SERVER_WAL_H
#define BEAVA_SERVER_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define WAL_MAX_PAYLOAD (8u << 20)   /* bytes; enforced on append and on read */
#define WAL_SEGMENT_HEADER_BYTES 64
#define WAL_RECORD_HEADER_BYTES 17   /* u32 len, u32 crc, u64 lsn, u8 kind */
/* Segment format versions: 2 is written; 1 is read too. The framing is the same; version
 * 2 segments may hold event records that name fields by schema position (engine/evrec.h),
 * which builds that read only version 1 cannot decode, so they refuse the segment by its
 * header instead of failing on a record. A version 1 segment is never appended to: the
 * writer starts a new segment after recovery. */
#define WAL_FORMAT_VERSION 2
#define WAL_FORMAT_OLDEST 1

/* Record kinds. The set is open: any kind 1..255 may be appended and is handed back by
 * recovery unchanged; 0 is invalid. The engine's kinds (engine.h REC_*) are these. */
enum wal_kind {
    WAL_KIND_EVENT = 1,
    WAL_KIND_REGISTER = 3,
    WAL_KIND_RESET = 5,
};

/* Return values of wal_wait_durable(). */
enum { WAL_OK = 0, WAL_FAILED = -1, WAL_TIMEOUT = -2 };

/* Return values of wal_lsn_state(). */
enum { WAL_LSN_FAILED = -1, WAL_LSN_PENDING = 0, WAL_LSN_DURABLE = 1 };

/* Test hook: when set, every write and fsync of WAL segment files and of the WAL
 * directory goes through it instead of pwrite()/fdatasync()/fsync(), and so does the
 * removal of a segment file whose creation failed. WAL_IO_WRITE has pwrite() semantics
 * (buf, len, off); WAL_IO_SYNC has fdatasync() semantics (buf/len/off unused);
 * WAL_IO_UNLINK has unlink() semantics (buf is the path, fd/len/off unused). Return what
 * the syscall would (-1 with errno set to fail). The hook may call the real syscall
 * itself, e.g. to write half the bytes and then fail. Called from the writer thread and,
 * during wal_recover(), from the caller's thread. Recovery's own repairs (quarantine,
 * truncating a torn tail) do not go through it. */
typedef enum wal_io_op { WAL_IO_WRITE = 1, WAL_IO_SYNC = 2, WAL_IO_UNLINK = 3 } wal_io_op;
typedef ssize_t (*wal_io_fn)(void *ctx, wal_io_op op, int fd, const void *buf, size_t len, off_t off);

/* Called by the writer thread (holding no WAL lock) whenever LSNs became durable or were
 * reported failed, so an event loop can re-check parked requests with wal_lsn_state().
 * It must not block for long and must not call wal_close(). */
typedef void (*wal_notify_fn)(void *ctx);

typedef struct wal_options {
    const char *dir;            /* data dir (required): LOCK and quarantine/ live here */
    const char *wal_dir;        /* segment directory; NULL or "" = <dir>/wal */
    uint64_t segment_bytes;     /* rotate when a segment holds this much; 0 = 64 MiB */
    unsigned tick_ms;           /* group-commit interval; 0 = 2 */
    size_t batch_bytes;         /* write+fsync early when the batch reaches this; 0 = 1 MiB */
    size_t pending_cap;         /* max bytes appended but not yet durable; 0 = 64 MiB */
    unsigned retry_ms;          /* first retry after an I/O failure; 0 = 50 */
    uint64_t registry_version;  /* written into segment headers (see wal_set_registry_version) */
    wal_io_fn io_hook;          /* NULL in production */
    void *io_ctx;
    wal_notify_fn notify;       /* optional */
    void *notify_ctx;
    uint64_t known_lsn;         /* the highest LSN another file (a snapshot's name) says
                                 * existed; recovery counts LSNs up to it as missing when no
                                 * record reaches it. 0 = none */
    bool accept_gaps;           /* recover past LSN gaps instead of refusing (see wal_recover) */
    bool keep_failed;           /* keep records whose write failed and write them again
                                 * (see FAILURE SEMANTICS); for callers that apply records
                                 * before they are durable */
    bool background;            /* no client waits for the writer (acks do not wait for
                                 * durability): it runs as SCHED_BATCH, so its wake-ups
                                 * never preempt the threads that answer clients (it still
                                 * gets its fair share of the CPU) */
    bool all_waited;            /* a client waits for every record (sync durability): batches
                                 * go without the tick, gathering one group commit per round
                                 * of the clients (see wal.c WRITER) */
} wal_options;

/* LSNs that should be on disk and that no file holds at all (see wal_recover). */
#define WAL_GAPS_KEPT 8
typedef struct wal_gap {
    uint64_t lo, hi;            /* the missing LSNs */
    uint64_t after_seg;         /* start LSN of the segment before the hole, 0 = none */
    uint64_t before_seg;        /* start LSN of the segment after it, 0 = none (the end) */
} wal_gap;

/* What recovery found. "Lost" numbers mean data that was durable and is gone (corruption);
 * "void" numbers are records that were reported failed at run time (expected after a
 * disk-full episode). Every skipped byte is first copied to <dir>/quarantine/. */
typedef struct wal_recovery_stats {
    uint32_t segments;              /* segment files scanned */
    uint64_t records;               /* valid records found */
    uint64_t replayed;              /* records handed to the callback (LSN > from_lsn) */
    uint64_t first_lsn, last_lsn;   /* of the valid records found; 0 when none */
    uint64_t truncated_bytes;       /* torn tail cut off the newest segment */
    uint64_t quarantined_regions;   /* corrupt spans skipped (each one quarantine file) */
    uint64_t quarantined_bytes;     /* bytes in those spans */
    uint64_t lost_lsns;             /* LSNs above from_lsn that should be on disk and are not
                                     * (gaps included) */
    uint64_t gap_lsns;              /* of those, LSNs no file holds (no quarantined bytes) */
    uint32_t ngaps;                 /* gap ranges found; the first WAL_GAPS_KEPT are in gaps[] */
    wal_gap gaps[WAL_GAPS_KEPT];
    uint64_t void_lsns;             /* LSNs recorded as never written (failures, LSN floor) */
    uint64_t void_records;          /* records present but recorded as failed: skipped */
    uint32_t torn_segments;         /* segment files removed: torn inside their header */
    bool orphan_reused;             /* a header-only newest segment became the active one */
    uint64_t next_lsn;              /* LSN the next wal_append() will return */
} wal_recovery_stats;

/* Run-time counters (a consistent snapshot taken under the WAL's mutex). */
typedef struct wal_stats {
    uint64_t next_lsn;              /* next LSN to be assigned */
    uint64_t durable_lsn;           /* every non-void LSN <= this is on disk */
    uint64_t appended_records, appended_bytes;
    uint64_t batches, fsyncs;
    uint64_t fsync_ns;              /* time spent in the group commits' fdatasync()s */
    uint64_t sync_batches;          /* batches written before their tick because a
                                     * wal_wait_durable() caller was waiting for them */
    uint64_t backpressure_waits;    /* appends that blocked on pending_cap */
    uint64_t failures;              /* I/O failure episodes */
    uint64_t failed_records;        /* records reported failed (void LSNs) */
    uint64_t rotations, rotation_failures;
    uint64_t segments;              /* segment files on disk */
    size_t pending_bytes;           /* appended, not yet durable */
    bool degraded;                  /* wal_append() currently fails */
    uint64_t retained_records;      /* keep_failed: failed records held to be written again */
    char last_error[256];           /* most recent I/O failure, "" if none */
} wal_stats;

typedef struct wal wal;

/* Replay callback: one valid record, in LSN order. payload points into a read-only
 * mapping valid only during the call (copy what you keep). Return 0 to continue; any
 * other value stops recovery, which then fails (fill err to say why, or a generic
 * "wal_replay_failed" error is set). */
typedef int (*wal_replay_fn)(void *ctx, uint8_t kind, uint64_t lsn, const void *payload, size_t len,
                             bv_err *err);

/* Open the WAL of opt->dir (created if missing, as is the wal dir). Takes the data-dir lock:
 * if another process (or another wal in this process) holds it, fails with code
 * "wal_locked" and a reason naming the LOCK file and the holder's PID. Every segment
 * header is validated; a file with a bad magic, a newer format version, a bad header CRC
 * or a name/header mismatch fails with code "wal_refused" naming the file and the
 * problem, and no file is modified. The options are copied (strings too).
 * On success returns 0 and sets *out (release with wal_close()); on failure returns -1,
 * *out = NULL, err filled, the lock released. */
int wal_open(const wal_options *opt, wal **out, bv_err *err);

/* Scan and repair, replay, then start writing. Must be called exactly once, before any
 * append. Calls cb (may be NULL: scan and repair only) for every valid record with
 * LSN > from_lsn, in LSN order. from_lsn is also a floor for new LSNs: the next LSN is
 * greater than from_lsn and than every LSN found on disk (pass the snapshot's LSN).
 * Repairs: a torn tail of the newest segment is copied to quarantine/ then truncated; a
 * corrupt span elsewhere is copied to quarantine/ and skipped (replay resumes at the next
 * valid record); a segment file of ours too short to hold its header (a creation cut
 * short: it holds no records) is copied and removed.
 * GAPS: LSNs above from_lsn that were on disk once (a segment header's prev LSN, or
 * opt->known_lsn, says so) and that no file holds, not even as quarantined bytes: the
 * segment that held them was deleted or cut, and no snapshot covers them. Unless
 * opt->accept_gaps, wal_recover then fails with code "wal_gap", a reason naming the
 * missing ranges and the segment files expected to hold them, and the gaps in stats,
 * before it deletes, truncates or creates any segment (records were already handed to
 * cb; quarantine copies of corrupt spans may have been written). With accept_gaps it
 * goes on (they count in lost_lsns and gap_lsns).
 * stats (may be NULL) is filled even on failure with what was done so far.
 * Returns 0, or -1 with err (I/O error, quarantine could not be written, callback
 * failure, gap); after a failure the handle can only be closed. */
int wal_recover(wal *w, uint64_t from_lsn, wal_replay_fn cb, void *ctx, wal_recovery_stats *stats,
                bv_err *err);

/* Append one record (kind 1..255, len <= WAL_MAX_PAYLOAD; payload may be NULL when len is
 * 0). The bytes are copied; the caller keeps its buffer. Returns 0 and sets *lsn as soon
 * as the record is queued (it is NOT durable yet). Blocks only for back-pressure (see
 * above). Returns -1 with err: code "wal_unavailable" when degraded or closing,
 * "invalid_argument" for a bad kind/length or before wal_recover(). */
int wal_append(wal *w, uint8_t kind, const void *payload, size_t len, uint64_t *lsn, bv_err *err);

/* Block until LSN `lsn` (returned by wal_append) is durable. timeout_ms < 0 waits for ever.
 * Returns WAL_OK (on disk), WAL_FAILED (err code "wal_unavailable": the record is not on
 * disk and will never be replayed; or the WAL closed before its fate was settled, which
 * the reason says), WAL_TIMEOUT (err code "wal_sync_timeout": still pending). Any number
 * of threads may wait; one fsync releases all of them. lsn 0 or an LSN never handed out
 * is WAL_FAILED with code "invalid_argument". A pending LSN makes the writer write its
 * batch at once when it is idle (no tick wait); while it is busy with an earlier batch,
 * the record goes into the next one, written as soon as that fdatasync returns. */
int wal_wait_durable(wal *w, uint64_t lsn, int timeout_ms, bv_err *err);

/* Non-blocking: WAL_LSN_DURABLE, WAL_LSN_PENDING or WAL_LSN_FAILED for an LSN returned by
 * wal_append (LSNs from earlier runs are DURABLE; never-assigned ones are FAILED). */
int wal_lsn_state(wal *w, uint64_t lsn);

/* Highest LSN such that every non-void LSN at or below it is on disk. Lock-free. */
uint64_t wal_durable_lsn(wal *w);

/* Delete every closed segment whose records all have LSN <= lsn (the active segment is
 * never deleted), then fsync the WAL directory. Sets *removed (may be NULL) to the number
 * deleted. Returns 0, or -1 with err if a file could not be removed (those removed before
 * the failure stay removed). Idempotent. */
int wal_truncate_before(wal *w, uint64_t lsn, unsigned *removed, bv_err *err);

/* The registry version written into the header of segments created from now on. */
void wal_set_registry_version(wal *w, uint64_t version);

void wal_get_stats(wal *w, wal_stats *st);

/* Write and fsync everything pending, stop the writer, release the lock and free w
 * (NULL is fine). Returns 0 when every LSN handed out is durable or was already reported
 * failed; -1 with err when the final write failed (those records are reported failed to
 * their waiters). w is freed either way. */
int wal_close(wal *w, bv_err *err);

#endif
