/*
 * target.c - spawning/attaching the beava under test (see target.h).
 */
#include "target.h"

#include <stdio.h>
#include <string.h>

int target_open(const bench_opts *o, beava_target *t, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    t->pid = -1;
    t->proc.pid = -1;
    if (ctl_init(&t->ctl) != 0) {
        snprintf(err, errlen, "libcurl init failed");
        return -1;
    }
    if (o->spawn) {
        if (proc_spawn_beava(o->spawn, o->durability, o->data_dir, (char *const *)o->server_args, &t->proc, err,
                             errlen) != 0) {
            ctl_free(&t->ctl);
            return -1;
        }
        t->proc.keep = o->keep;
        t->spawned = true;
        t->http = t->proc.http;
        t->tcp = t->proc.tcp;
        t->admin = t->proc.admin;
        t->pid = t->proc.pid;
        fprintf(stderr, "beava-bench: spawned %s (pid %d) http %s tcp %s admin %s, dir %s\n", o->spawn, (int)t->pid,
                t->http, t->tcp, t->admin, t->proc.dir);
        return 0;
    }
    t->http = o->http;
    t->tcp = o->tcp;
    t->admin = o->admin;
    t->pid = o->server_pid > 0 ? o->server_pid : -1;
    if (!t->http && !t->tcp) {
        snprintf(err, errlen, "give --spawn PATH, or the address of a running server (--http/--tcp)");
        ctl_free(&t->ctl);
        return -1;
    }
    return 0;
}

int target_register(beava_target *t, const pipeline *pl, char *err, size_t errlen) {
    if (!t->http) {
        snprintf(err, errlen, "registering needs --http (or --no-register)");
        return -1;
    }
    bbuf resp;
    bbuf_init(&resp);
    long st;
    int rc = ctl_request(&t->ctl, "POST", t->http, "/register", "application/json", pl->register_json,
                         strlen(pl->register_json), &st, &resp);
    if (rc != 0 || st != 200) {
        snprintf(err, errlen, "POST /register: %ld %s", rc ? 0L : st, resp.data ? resp.data : "");
        rc = -1;
    }
    bbuf_free(&resp);
    return rc;
}

long target_rss_kb(const beava_target *t) {
    return t->pid > 0 ? proc_status_kb(t->pid, "VmRSS") : -1;
}

double target_metric(beava_target *t, const char *name) {
    return t->admin ? ctl_metric(&t->ctl, t->admin, name) : -1;
}

int target_close(beava_target *t) {
    int st = -1;
    if (t->spawned) st = proc_stop(&t->proc, 20);
    t->spawned = false;
    ctl_free(&t->ctl);
    return st;
}
