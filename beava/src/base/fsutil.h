/*
 * fsutil.h - small file-system helpers shared by the storage modules (WAL, snapshots).
 */
#ifndef BEAVA_FSUTIL_H
#define BEAVA_FSUTIL_H

#include <stdbool.h>

/* mkdir -p with mode 0755. *created (may be NULL) says whether the leaf was made now.
 * Returns 0, or -1 with errno (ENOTDIR when the path exists and is not a directory). */
int bv_mkdir_p(const char *path, bool *created);

#endif
