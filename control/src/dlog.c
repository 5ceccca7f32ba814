/*
 * dlog.c — the daemon's JSON-lines log on stdout (see dlog.h).
 */
#include "dlog.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

void dlog(const char *kind, json_t *fields) {
    char ts[40];
    ctl_iso_time(ctl_now_ms(), ts, sizeof ts);
    json_t *line = json_pack("{s:s,s:s}", "ts", ts, "kind", kind);
    if (json_is_object(fields)) json_object_update_missing(line, fields);
    json_decref(fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text) return;
    fprintf(stdout, "%s\n", text);
    fflush(stdout);
    free(text);
}
