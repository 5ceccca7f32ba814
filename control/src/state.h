/*
 * state.h — the state directory: layout, small JSON state files, the host lock.
 *
 *   state_dir/lock            flock held by the one daemon of this host (holds its pid)
 *   state_dir/journal         the deploy journal (journal.h)
 *   state_dir/current.json    what runs: digest, image, revision, manifests hash, since,
 *                             and the previous release (the rollback target)
 *   state_dir/instance.json   the running server instance (runtime.h)
 *   state_dir/registry.json   the node set last registered (the manifest "carry")
 *   state_dir/deliveries.json trigger delivery ids seen (trigger.h)
 *   state_dir/blobs/sha256/   content-addressed image blobs
 *   state_dir/images/<hex>/   image.json + rootfs/ per release digest
 *   state_dir/backups/<id>/   data dir copies and snapshots taken by deploy <id>
 *   state_dir/logs/           server logs, one file per start
 * State files are written atomically (temp, fsync, rename, fsync dir).
 */
#ifndef CTL_STATE_H
#define CTL_STATE_H

#include <jansson.h>

/* Create the layout (0750). */
int state_init(const char *state_dir, char *err);
/* Take the host lock; fails naming the holder's pid. The fd stays open for the process's
 * lifetime (closing it releases the lock). */
int state_lock(const char *state_dir, int *fd_out, char *err);
/* Load state_dir/<name>.json; NULL when absent or unreadable. Caller owns. */
json_t *state_load(const char *state_dir, const char *name);
/* Save (atomically); v == NULL removes the file. */
int state_save(const char *state_dir, const char *name, json_t *v, char *err);

#endif
