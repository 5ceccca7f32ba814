/*
 * cpu.c - CPU accounting around a run (see cpu.h).
 */
#include "cpu.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double ticks_to_s(unsigned long long t) {
    long hz = sysconf(_SC_CLK_TCK);
    return (double)t / (double)(hz > 0 ? hz : 100);
}

void cpu_take(pid_t server, cpu_sample *s) {
    memset(s, 0, sizeof *s);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->wall_s = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long v[10] = { 0 };
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]) == 8)
            s->machine_busy_s = ticks_to_s(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        fclose(f);
    }
    s->server_s = -1;
    if (server > 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)server);
        f = fopen(path, "r");
        if (f) {
            char buf[1024];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = '\0';
            fclose(f);
            const char *p = strrchr(buf, ')');  /* comm may contain spaces */
            unsigned long long ut, st;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
                s->server_s = ticks_to_s(ut + st);
        }
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        s->self_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                    ru.ru_stime.tv_usec / 1e6;
}

void cpu_diff(const cpu_sample *a, const cpu_sample *b, cpu_usage *u) {
    double wall = b->wall_s - a->wall_s;
    if (wall <= 0) wall = 1e-9;
    u->client_cores = (b->self_s - a->self_s) / wall;
    u->server_cores = (a->server_s >= 0 && b->server_s >= 0) ? (b->server_s - a->server_s) / wall : -1;
    double busy = (b->machine_busy_s - a->machine_busy_s) / wall;
    u->other_cores = busy - u->client_cores - (u->server_cores > 0 ? u->server_cores : 0);
    if (u->server_cores < 0) u->other_cores = -1;
    if (u->other_cores < 0 && u->server_cores >= 0) u->other_cores = 0;
}
