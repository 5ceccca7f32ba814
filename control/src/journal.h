/*
 * journal.h — the append-only deploy journal (state_dir/journal).
 *
 * One JSON object per line, each write followed by fsync before the call returns, so a
 * record that was reported is on disk. Records carry "ts" (RFC 3339 UTC) and "deploy" (the
 * deploy id) and an "event": deploy.queued, deploy.start, step, deploy.end, recovery.
 * A torn last line (crash mid-write) is skipped by the reader and overwritten by the next
 * append, which starts with a newline when the file does not end in one.
 *
 * Thread safety: a journal handle serialises appends with its own mutex.
 */
#ifndef CTL_JOURNAL_H
#define CTL_JOURNAL_H

#include <jansson.h>

struct journal;

/* Open (create) path for appending. */
int journal_open(const char *path, struct journal **out, char *err);
void journal_close(struct journal *j);

/* Append rec (a JSON object; "ts" is added when missing). rec is not consumed. */
int journal_append(struct journal *j, json_t *rec, char *err);

/* Read every complete record of the file at path, oldest first. Returns a new array
 * (empty when the file does not exist). Lines that do not parse are skipped and counted
 * into *skipped (optional). */
json_t *journal_read(const char *path, size_t *skipped);

/* Group records by deploy id, newest deploy first, at most `limit` deploys:
 * [{"id","kind","image","digest","status","started","ended","steps":[...], ...}]. */
json_t *journal_history(json_t *records, size_t limit);

#endif
