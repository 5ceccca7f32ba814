/*
 * unpack.h — image layers (tar, tar+gzip, tar+zstd) onto a rootfs directory, safely.
 *
 * Layers are applied in order with OCI whiteouts (`.wh.NAME` deletes NAME from lower
 * layers, `.wh..wh..opq` empties a directory of lower-layer content).
 *
 * Every path operation (create, whiteout, opaque whiteout, replacing an entry of another
 * type, hard link, chmod, times) happens relative to a directory descriptor that the
 * kernel resolved beneath the rootfs (openat2 RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS from
 * a descriptor of the rootfs), on a single final name that is never followed. A path whose
 * resolution would leave the rootfs, through `..` or through any chain of symlinks, fails
 * in the kernel (EXDEV) and the layer is refused naming the entry. Nothing is ever written,
 * deleted or chmod'ed outside the rootfs, whatever the links in lower layers say.
 *
 * Refused, with the layer digest and entry name:
 *   - entry names with a `..` component, and whiteouts that name no file;
 *   - absolute symlinks, and symlinks that the kernel resolves outside the rootfs (checked
 *     when created and again over the whole tree after each layer, so a chain completed by
 *     a later entry or layer is caught); a dangling link (its target does not exist) stays;
 *   - hard links whose target is not a file already in the rootfs;
 *   - device nodes, FIFOs and sockets;
 *   - a layer whose uncompressed tar stream is over `unpack.max_layer_bytes`, or an image
 *     whose layers together are over `unpack.max_image_bytes` (the error names the limit).
 * Paths are made relative (a leading `/` or `./` is stripped); setuid/setgid/sticky bits
 * are dropped; files belong to the daemon's user (tar ownership is not applied). The whole
 * image is unpacked into `<final>.tmp.<pid>` and renamed into place only when every layer
 * succeeded.
 */
#ifndef CTL_UNPACK_H
#define CTL_UNPACK_H

#include <jansson.h>
#include <stdint.h>

/* Defaults of unpack.max_layer_bytes and unpack.max_image_bytes (uncompressed). */
#define UNPACK_DEFAULT_MAX_LAYER_BYTES (2ull << 30)
#define UNPACK_DEFAULT_MAX_IMAGE_BYTES (4ull << 30)

struct unpack_limits {
    uint64_t max_layer_bytes; /* uncompressed tar stream of one layer */
    uint64_t max_image_bytes; /* sum over the image's layers */
};

/* Apply one layer file (name used in messages) onto an existing rootfs dir. *image_used
 * (may be NULL) is the uncompressed size of the layers applied before; the layer's size
 * is added to it. lim NULL = the defaults. */
int unpack_layer(const char *layer_path, const char *name, const char *rootfs, const struct unpack_limits *lim,
                 uint64_t *image_used, char *err);

/* Unpack every layer (manifest "layers" descriptors, blobs in store_dir) into final.
 * An existing final dir is taken as already unpacked. lim NULL = the defaults. */
int unpack_image(const char *store_dir, json_t *layers, const char *final, const struct unpack_limits *lim, char *err);

#endif
