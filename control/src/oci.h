/*
 * oci.h — pulling images from an OCI registry (Distribution API v2) by digest.
 *
 * Flow: oci_parse_ref -> oci_resolve (tag -> digest, waiting for a tag that does not exist
 * yet) -> oci_pull (manifest or index by digest, the host platform's manifest, the config
 * and every layer into the content-addressed blob store, each verified against its
 * SHA-256 while it streams). Nothing is trusted that was not verified: a blob whose bytes do
 * not hash to its digest is deleted and the pull fails naming the digest.
 *
 * Transport: plain HTTP for loopback registries (or registry.plain_http), HTTPS otherwise.
 * Auth: anonymous; Basic with registry.username / password_file; Bearer tokens fetched from
 * the realm named by a `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge
 * (with the basic credentials when set).
 */
#ifndef CTL_OCI_H
#define CTL_OCI_H

#include "config.h"
#include <jansson.h>
#include <stdbool.h>

struct oci_ref {
    char host[256];  /* "127.0.0.1:5000" */
    char repo[512];  /* "beava" or "org/beava" */
    char tag[128];   /* "" when only a digest was given */
    char digest[80]; /* "" when only a tag was given */
};

/* Parse "HOST[:PORT]/PATH[:TAG][@sha256:...]". The host part is required. */
int oci_parse_ref(const char *s, struct oci_ref *r, char *err);
/* Is the image inside `repository` ("HOST[:PORT]/PATH")? */
bool oci_ref_in_repository(const struct oci_ref *r, const char *repository);
/* "host/repo:tag@digest" (as much as is known) into buf. */
void oci_ref_format(const struct oci_ref *r, char *buf, size_t len);

/* Resolve the reference to the digest of what it names, waiting up to wait_s seconds for
 * a tag that does not exist yet. digest_out >= 80 bytes. *waited_ms (optional) gets the
 * time spent waiting. */
int oci_resolve(const struct ctl_config *cfg, const struct oci_ref *r, long wait_s, char *digest_out, long *waited_ms,
                char *err);

struct oci_image {
    char digest[80];          /* what was asked for (index or manifest) */
    char manifest_digest[80]; /* the platform manifest */
    char config_digest[80];   /* the config blob's digest */
    json_t *config;           /* the image config blob (caller frees via oci_image_free) */
    json_t *layers;           /* manifest "layers" array */
    long long bytes_fetched;
};

/* Pull digest of r's repository into store_dir (blobs/sha256/<hex>). */
int oci_pull(const struct ctl_config *cfg, const struct oci_ref *r, const char *digest, const char *store_dir,
             struct oci_image *img, char *err);
void oci_image_free(struct oci_image *img);

/* Path of a blob in the store (caller frees). */
char *oci_blob_path(const char *store_dir, const char *digest);
/* Hash a file and compare with digest. */
int oci_verify_file(const char *path, const char *digest, char *err);

/* Parse a WWW-Authenticate challenge: scheme ("basic"/"bearer") and, for bearer, the
 * realm, service and scope (each >= 512 bytes). Exposed for tests. */
int oci_parse_challenge(const char *h, char *scheme, char *realm, char *service, char *scope);

/* The label org.opencontainers.image.revision of a config blob (NULL if none). */
const char *oci_revision_label(json_t *config);
/* Does the image's revision label match the wanted revision (full or >= 7-char prefix)? */
bool oci_revision_matches(const char *label, const char *wanted);

#endif
