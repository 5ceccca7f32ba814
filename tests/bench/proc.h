/*
 * proc.h - the servers under test as child processes: beava (ports chosen by the OS,
 * discovered from its server.*_bound log lines) and redis-server (on a free loopback
 * port, no persistence), plus reading a process's memory from /proc.
 *
 * Every child gets its own temporary directory (cwd, log file, and the data dir when
 * beava runs with durability), removed by proc_stop unless keep is set. Children die
 * with beava-bench (PR_SET_PDEATHSIG), so a crashed bench leaves no server behind.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct server_proc {
    pid_t pid;
    char dir[256];       /* temporary directory */
    char log[300];       /* child's stdout + stderr */
    char http[64], tcp[64], admin[64];   /* beava; redis uses tcp */
    bool keep;           /* leave dir behind */
} server_proc;

/* Starts beava. durability: "memory" (--memory-only), "batch" or "sync" (data dir in
 * the temporary directory, or data_dir when given). extra: more argv, NULL-terminated
 * (may be NULL). Returns 0, or -1 with err (and the log's tail) and nothing running. */
int proc_spawn_beava(const char *bin, const char *durability, const char *data_dir, char *const *extra,
                     server_proc *p, char *err, size_t errlen);
/* Starts redis-server on a free 127.0.0.1 port with --save '' --appendonly no. */
int proc_spawn_redis(const char *bin, server_proc *p, char *err, size_t errlen);
/* SIGTERM, wait up to timeout_s, then SIGKILL; removes the directory. Returns the
 * child's exit status (128+signal when killed), -1 when there was none. */
int proc_stop(server_proc *p, double timeout_s);

/* A field of /proc/<pid>/status in kB ("VmRSS", "VmHWM"), -1 when unreadable. */
long proc_status_kb(pid_t pid, const char *field);

#endif
