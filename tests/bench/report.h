/*
 * report.h - what a result row says about where and how it was measured: the machine
 * (nproc, CPU model), the commit, the date, the exact command line; and the Markdown
 * row appended to a results file.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include <stdint.h>

typedef struct machine {
    long nproc;
    char cpu[128];
    char commit[48];
    char date[40];
} machine;

/* src_dir: the repository to ask `git rev-parse --short HEAD` (commit "unknown" when
 * git fails). Marks the commit "-dirty" when the work tree has changes. The environment
 * variable BEAVA_BENCH_COMMIT, when set, is used instead (run-all pins the commit that
 * was built, since HEAD may move while a long matrix runs). */
void machine_probe(machine *m, const char *src_dir);

/* The command line, shell-quoted where needed. Caller frees. */
char *report_cmdline(int argc, char **argv);

typedef struct run_row {
    const char *label;        /* workload name */
    const char *target;       /* "beava" / "redis" */
    const char *wire;
    const char *pipeline;
    char shape[64];           /* "C4xD256xB1, 1 thr" */
    char keys[64];            /* "uniform 100000" */
    double events_per_s;      /* pushes (events), or gets per second in get mode */
    const char *rate_unit;    /* "events/s" or "gets/s" */
    double p50_us, p99_us, p999_us;
    long rss_kb;              /* -1 unknown */
    double bytes_per_entity;  /* -1 unknown */
    uint64_t errors;
    double ratio;             /* beava/redis when compared, else 0 */
    double server_cores, client_cores, other_cores;  /* -1 unknown */
} run_row;

/* Appends one Markdown row to path (writing the table header first when the file is
 * new or empty). Returns 0 or -1 (errno). */
int report_append(const char *path, const machine *m, const run_row *r, const char *cmdline);

#endif
