/*
 * snapfile.h - the snapshot FILE protocol: naming, header, checksums, atomic commit,
 * retention and "newest valid" loading. The engine supplies and consumes the body bytes;
 * this module never looks inside them.
 *
 * Files, in the snapshot directory (normally <data dir>/snapshots):
 *   snapshot-<16 lowercase hex LSN>.bvs   committed snapshots
 *   snapshot-<16 lowercase hex LSN>.tmp   being written, or left by a crash (removed by
 *                                         the next commit or snapfile_prune)
 * A .bvs file is a 64-byte header followed by the body (layout at the top of snapfile.c).
 *
 * Writing (streaming, so the body never has to be in one buffer):
 *   snapfile_begin() -> snapfile_write()* -> snapfile_commit()   (or snapfile_abort())
 * commit = header written, file fsynced, renamed to .bvs, directory fsynced; then older
 * snapshots beyond `retain` and stale .tmp files are deleted. A crash at any point leaves
 * the previous snapshots intact and at worst a stale .tmp.
 *
 * Loading: snapfile_open_latest() lists the .bvs files newest first and returns the first
 * whose header and body CRC verify; each one skipped is counted (and the first reason
 * kept) in the stats, so "newest snapshot corrupt, used the previous one" is visible.
 *
 * One writer at a time per directory (the data-dir lock held by the WAL guarantees one
 * process; the engine runs one snapshot at a time). Handles are not thread-safe; distinct
 * handles may be used from distinct threads. The writer only uses malloc and plain
 * syscalls, so it can run in a fork()ed child.
 */
#ifndef BEAVA_SERVER_SNAPFILE_H
#define BEAVA_SERVER_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

#define SNAPFILE_HEADER_BYTES 64
#define SNAPFILE_FORMAT_VERSION 1
#define SNAPFILE_DEFAULT_RETAIN 2

typedef struct snapfile_header {
    uint64_t lsn;               /* the WAL LSN the body covers (from the file name and header) */
    uint64_t registry_version;
    uint64_t created_ms;        /* wall clock at snapfile_begin() */
    uint64_t body_len;
    uint32_t body_crc;          /* CRC-32C of the body */
} snapfile_header;

/* ---- writing ---------------------------------------------------------------------- */

typedef struct snapfile_writer snapfile_writer;

typedef struct snapfile_commit_info {
    uint64_t bytes;             /* file size, header included */
    unsigned removed_old;       /* .bvs files deleted by retention */
    unsigned removed_tmp;       /* stale .tmp files deleted */
    unsigned prune_failures;    /* files that could not be deleted (commit still succeeded) */
} snapfile_commit_info;

/* Start snapshot `lsn` in snap_dir (created if missing). Creates snapshot-<lsn>.tmp,
 * truncating a stale one of the same name. Returns 0 and *out, or -1 with err (code
 * "snapshot_io") and *out = NULL. */
int snapfile_begin(const char *snap_dir, uint64_t lsn, uint64_t registry_version, snapfile_writer **out,
                   bv_err *err);

/* Append body bytes (buffered; the caller keeps its buffer). Returns 0, or -1 with err;
 * after a failure only snapfile_abort() (or a commit, which then fails) is useful. */
int snapfile_write(snapfile_writer *sw, const void *buf, size_t len, bv_err *err);

/* Make the snapshot durable and visible, then prune to the newest `retain` .bvs files
 * (0 = SNAPFILE_DEFAULT_RETAIN) and remove stale .tmp files. Always frees sw. Returns 0
 * once the .bvs is durable (pruning problems are only counted in info, which may be
 * NULL), or -1 with err (the .tmp is removed, no .bvs appears). */
int snapfile_commit(snapfile_writer *sw, unsigned retain, snapfile_commit_info *info, bv_err *err);

/* Discard an unfinished snapshot: close and remove the .tmp, free sw (NULL is fine). */
void snapfile_abort(snapfile_writer *sw);

/* Retention on its own (e.g. at boot): keep the newest `retain` .bvs (0 = default), delete
 * the others and every .tmp. Returns 0, or -1 with err if the directory cannot be listed
 * (a missing directory is fine). info may be NULL. */
int snapfile_prune(const char *snap_dir, unsigned retain, snapfile_commit_info *info, bv_err *err);

/* ---- loading ---------------------------------------------------------------------- */

typedef struct snapfile_reader snapfile_reader;

typedef struct snapfile_load_stats {
    unsigned found;             /* .bvs files with LSN < below_lsn, valid or not */
    unsigned rejected;          /* of those, newer than the one returned and invalid */
    char first_error[384];      /* why the first rejected one was rejected, "" if none */
} snapfile_load_stats;

/* Find the newest valid snapshot with LSN < below_lsn (UINT64_MAX for "any"; a smaller
 * value lets the engine step back past a snapshot whose body it could not decode).
 * Validation: magic, version, header CRC, name/header LSN, body length = file size
 * minus header, body CRC. Returns 1 and *out (positioned at the body start), 0 when no
 * valid snapshot exists (cold start; a missing directory counts as empty), -1 with err
 * when the directory cannot be read. st may be NULL. */
int snapfile_open_latest(const char *snap_dir, uint64_t below_lsn, snapfile_reader **out,
                         snapfile_load_stats *st, bv_err *err);

/* The verified header. Owned by r. */
const snapfile_header *snapfile_reader_header(const snapfile_reader *r);

/* Read up to n body bytes. Returns the count, 0 at the end of the body, -1 with err on an
 * I/O error or if the body no longer matches its CRC when the end is reached. */
ssize_t snapfile_read(snapfile_reader *r, void *buf, size_t n, bv_err *err);

/* Convenience: the whole (remaining) body in one malloc'd buffer, which the caller frees.
 * Returns 0, or -1 with err (*body = NULL). */
int snapfile_read_all(snapfile_reader *r, void **body, size_t *len, bv_err *err);

void snapfile_reader_close(snapfile_reader *r);

#endif
