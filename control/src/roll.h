/*
 * roll.h — `beava-control cluster deploy|status`: a rolling deploy of a beava cluster, run by
 * the CLI against the control daemons of every host (`cluster.hosts`, in roll order).
 *
 * Each host is an ordinary deploy through that host's signed trigger API (POST /v1/deploys,
 * then GET /v1/deploys/<id> until it ends), so each host's daemon stops, backs up, starts,
 * gates (admin /ready, data-plane /ping, and for a cluster node its partitions caught up with
 * the stream: deploy.c's "cluster" step), applies manifests, verifies, and rolls itself back
 * when any of that fails. The roll goes one host at a time and stops at the first host whose
 * deploy did not succeed: later hosts are not touched, and the report says which host runs
 * what. Before the first host, every host must answer and be running (or empty); a host
 * already running the requested digest (IMAGE@sha256:...) is skipped, so running the same
 * command again resumes a stopped roll.
 *
 * Exit codes as the rest of the CLI: 0 every host succeeded (or already ran it), 1 the roll
 * stopped (a deploy failed or rolled back, a host not ready before the roll), 2 usage or
 * configuration, 3 a host's daemon cannot be reached.
 */
#ifndef CTL_ROLL_H
#define CTL_ROLL_H

#include "config.h"
#include <jansson.h>
#include <stdbool.h>

struct roll_opts {
    const char *image;     /* as for `deploy` (tag or digest) */
    const char *revision;  /* NULL or the git sha the image must carry */
    const char *manifests; /* NULL or a manifest dir below each host's manifests.root */
    bool json;             /* print one JSON document at the end instead of progress */
    void (*print_step)(json_t *step);
};

int roll_deploy(const struct ctl_config *cfg, const struct roll_opts *o);

/* Every host's status (GET /v1/status through its control port), one line each, or JSON. */
int roll_status(const struct ctl_config *cfg, bool json);

#endif
