/*
 * cpu.h - where the machine's CPU went during a run: the server's (utime + stime of
 * /proc/<pid>/stat, all threads), beava-bench's own (getrusage), and the whole
 * machine's busy time (/proc/stat). What is left, busy minus server minus client, is
 * other load: on a shared machine it explains a low figure better than guessing.
 */
#ifndef BENCH_CPU_H
#define BENCH_CPU_H

#include <sys/types.h>

typedef struct cpu_sample {
    double wall_s;
    double machine_busy_s;    /* summed over all CPUs */
    double server_s;          /* -1 when the pid is unknown */
    double self_s;
} cpu_sample;

void cpu_take(pid_t server, cpu_sample *s);

typedef struct cpu_usage {
    double server_cores;      /* average cores the server used; -1 unknown */
    double client_cores;
    double other_cores;       /* everything else on the machine; -1 unknown */
} cpu_usage;

void cpu_diff(const cpu_sample *a, const cpu_sample *b, cpu_usage *u);

#endif
