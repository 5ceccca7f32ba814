/*
 * releases.h — what the journal knows about releases and backups, and the image store's
 * retention (garbage collection of unpacked images and blobs).
 *
 * A release is a digest that a deploy, rollback or restore left running ("succeeded").
 * Its record: {"digest","image","version","revision","first_deployed","last_deployed",
 * "deploys":[ids],"in_store","running","previous"}; version and revision are the image's
 * org.opencontainers.image.{version,revision} labels (from the store, else the journal).
 *
 * A backup is a directory state_dir/backups/<deploy id>/ written by a deploy (a copy of
 * the data dir taken while no server ran: kind "data") or by a destructive apply (a server
 * snapshot: kind "snapshot"): {"id","when","why","kind","path","bytes","lsn","release",
 * "exists"}.
 */
#ifndef CTL_RELEASES_H
#define CTL_RELEASES_H

#include <jansson.h>

/* Every release, most recently deployed first. */
json_t *releases_list(const char *state_dir);

/* Find a release by digest (full, or "sha256:" + a unique prefix of >= 7 hex), deploy id,
 * image reference, or tag; digest_out >= 80 bytes. Ambiguous or unknown: -1 naming why. */
int releases_resolve(const char *state_dir, const char *what, char *digest_out, char *err);

/* Every backup the journal recorded, newest first. */
json_t *backups_list(const char *state_dir);

/* Remove blobs no unpacked image in the store references. Nothing is removed when an image
 * of the store does not list its blobs (an older store). Returns the number removed. */
int releases_gc_blobs(const char *state_dir);

#endif
