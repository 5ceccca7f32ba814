/*
 * unpack.h — image layers (tar, tar+gzip, tar+zstd) onto a rootfs directory, safely.
 *
 * Layers are applied in order with OCI whiteouts (`.wh.NAME` deletes NAME from lower
 * layers, `.wh..wh..opq` empties a directory of lower-layer content). Refused, with the
 * layer digest and entry name: any `..` path component, absolute symlink targets,
 * relative symlinks that climb out of the rootfs, hard links outside it, device nodes,
 * FIFOs and sockets. Paths are made relative (a leading `/` or `./` is stripped); nothing is
 * ever written through a symlink (libarchive SECURE_SYMLINKS); setuid/setgid/sticky bits are
 * dropped. The whole image is unpacked into `<final>.tmp.<pid>` and renamed into place
 * only when every layer succeeded.
 */
#ifndef CTL_UNPACK_H
#define CTL_UNPACK_H

#include <jansson.h>

/* Apply one layer file (name used in messages) onto an existing rootfs dir. */
int unpack_layer(const char *layer_path, const char *name, const char *rootfs, char *err);

/* Unpack every layer (manifest "layers" descriptors, blobs in store_dir) into final.
 * An existing final dir is taken as already unpacked. */
int unpack_image(const char *store_dir, json_t *layers, const char *final, char *err);

#endif
