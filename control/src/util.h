/*
 * util.h — small helpers shared by every beava-control module.
 *
 * Error convention (used by every module): a function that can fail returns 0 on success
 * and -1 on failure, and writes a one-line, human-readable message naming what failed and
 * where into a caller-provided buffer `err` of CTL_ERR_LEN bytes. Nothing is printed by
 * library code; the caller decides whether to log, journal or answer a request with it.
 */
#ifndef CTL_UTIL_H
#define CTL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

#define CTL_ERR_LEN 1024

/* printf into err (never overflows; err may be NULL). Always returns -1 so callers can
 * write `return ctl_errf(err, "...")`. */
int ctl_errf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Milliseconds: wall clock (epoch) and monotonic. */
int64_t ctl_now_ms(void);
int64_t ctl_mono_ms(void);
/* RFC 3339 UTC timestamp with milliseconds into buf (>= 32 bytes). */
void ctl_iso_time(int64_t epoch_ms, char *buf, size_t len);

/* Read a whole file, refusing files larger than max_bytes. *out is malloc'd and
 * NUL-terminated (caller frees); *len_out (optional) gets the size. */
int ctl_read_file(const char *path, size_t max_bytes, char **out, size_t *len_out, char *err);
/* Write a file atomically: temp file in the same dir, fsync, rename, fsync the dir. */
int ctl_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err);
/* mkdir -p with the given mode for created components. */
int ctl_mkdirs(const char *path, mode_t mode, char *err);
/* fsync a directory by path. */
int ctl_fsync_dir(const char *path, char *err);
/* rm -rf (does not follow symlinks). Missing path is success. */
int ctl_rmtree(const char *path, char *err);
/* cp -a of a directory tree (regular files, dirs, symlinks). Files are fsynced. */
int ctl_copytree(const char *src, const char *dst, char *err);
/* Sum of regular-file sizes below path (0 when missing). */
uint64_t ctl_tree_bytes(const char *path);

/* SHA-256 of a buffer as "sha256:<64 hex>" (out >= 72 bytes). */
void ctl_sha256_digest(const void *data, size_t len, char *out);
/* Lowercase hex of len bytes into out (out >= 2*len+1). */
void ctl_hex(const unsigned char *in, size_t len, char *out);

/* Is s a well-formed "sha256:<64 lowercase hex>" digest? */
bool ctl_is_digest(const char *s);

/* Allocation that aborts on OOM (allocation failure is not a recoverable condition here);
 * the one copy of these helpers in control/. */
char *ctl_strdup(const char *s);
void *ctl_calloc(size_t n, size_t sz);
/* realloc that aborts on OOM (n == 0 is taken as 1). */
void *ctl_realloc(void *p, size_t n);
char *ctl_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
