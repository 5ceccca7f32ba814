/*
 * beava_api.h — the calls beava-control makes to a running beava server.
 *
 * Data plane (http_addr): POST /ping, POST /register, POST /get.
 * Admin (admin_addr): GET /ready, GET /registry, GET /cluster, POST /snapshot.
 * When a token is set it is sent as `Authorization: Bearer` on every call (the server
 * requires it for /register and /snapshot when security.admin_token_file is set).
 */
#ifndef CTL_BEAVA_API_H
#define CTL_BEAVA_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct beava_ep {
    const char *http_addr;  /* "IP:PORT" */
    const char *admin_addr; /* "IP:PORT" */
    const char *token;      /* NULL or "" = none */
};

/* 1 when admin /ready answers 200, 0 for any other answer or no answer. */
int beava_ready(const struct beava_ep *ep, char *why, size_t whylen);
/* The same; while not ready, *progress (caller owns, may stay NULL) gets the answer's
 * "progress" object: {"phase","records","bytes","wal_bytes_total","snapshot_bytes"}. */
int beava_ready_progress(const struct beava_ep *ep, char *why, size_t whylen, json_t **progress);
/* 0 when POST /ping answers 200 {"pong":true}; *version gets registry_version. */
int beava_ping(const struct beava_ep *ep, int64_t *version, char *err);
/* POST /register {"nodes","force","dry_run"}. *status gets the HTTP status and *out the
 * parsed body (caller owns; NULL if not JSON). Transport errors return -1. */
int beava_register(const struct beava_ep *ep, json_t *nodes, bool force, bool dry_run, long *status, json_t **out,
                   char *err);
/* The same with the envelope's "mode" ("merge": descriptors not in nodes are kept; NULL:
 * the server's default, replace). */
int beava_register_mode(const struct beava_ep *ep, json_t *nodes, const char *mode, bool force, bool dry_run,
                        long *status, json_t **out, char *err);
/* Admin GET /registry -> version and node_count. */
int beava_registry(const struct beava_ep *ep, int64_t *version, int64_t *count, char *err);
/* POST /get {"table","key"}: *status gets the HTTP status. */
int beava_get(const struct beava_ep *ep, const char *table, const char *key, long *status, json_t **out, char *err);
/* Admin GET /cluster (cluster mode: this node, members, ownership, applied/stream/lag per
 * owned partition, the registry's). *status gets the HTTP status (404: not a cluster node),
 * *out the parsed body (caller owns; NULL if not JSON). Transport errors return -1. */
int beava_cluster(const struct beava_ep *ep, long *status, json_t **out, char *err);
/* Admin POST /snapshot -> {"lsn","path"} (caller owns *out). Non-200 is an error. */
int beava_snapshot(const struct beava_ep *ep, json_t **out, char *err);

#endif
