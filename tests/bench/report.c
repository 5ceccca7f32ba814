/*
 * report.c - machine description and the Markdown results row (see report.h).
 */
#include "report.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static void run_line(const char *cmd, char *out, size_t outlen) {
    out[0] = '\0';
    FILE *f = popen(cmd, "r");
    if (!f) return;
    if (fgets(out, (int)outlen, f)) out[strcspn(out, "\r\n")] = '\0';
    pclose(f);
}

static void probe_commit(machine *m, const char *src_dir);

void machine_probe(machine *m, const char *src_dir) {
    memset(m, 0, sizeof *m);
    m->nproc = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(m->cpu, sizeof m->cpu, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ' || *c == '\t') c++;
                    c[strcspn(c, "\r\n")] = '\0';
                    snprintf(m->cpu, sizeof m->cpu, "%s", c);
                }
                break;
            }
        }
        fclose(f);
    }
    const char *pinned = getenv("BEAVA_BENCH_COMMIT");
    if (pinned && pinned[0]) {
        snprintf(m->commit, sizeof m->commit, "%s", pinned);
    } else {
        probe_commit(m, src_dir);
    }
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(m->date, sizeof m->date, "%Y-%m-%d %H:%M UTC", &tm);
}

static void probe_commit(machine *m, const char *src_dir) {
    char cmd[600], out[40];
    snprintf(cmd, sizeof cmd, "git -C '%s' rev-parse --short HEAD 2>/dev/null", src_dir ? src_dir : ".");
    run_line(cmd, out, sizeof out);
    snprintf(m->commit, sizeof m->commit, "%s", out[0] ? out : "unknown");
    if (out[0]) {
        snprintf(cmd, sizeof cmd,
                 "GIT_OPTIONAL_LOCKS=0 git -C '%s' status --porcelain --untracked-files=no 2>/dev/null | head -1",
                 src_dir ? src_dir : ".");
        run_line(cmd, out, sizeof out);
        if (out[0]) strncat(m->commit, "-dirty", sizeof m->commit - strlen(m->commit) - 1);
    }
}

char *report_cmdline(int argc, char **argv) {
    bbuf b;
    bbuf_init(&b);
    for (int i = 0; i < argc; i++) {
        if (i) bbuf_putc(&b, ' ');
        const char *a = argv[i];
        bool plain = a[0] != '\0';
        for (const char *p = a; *p; p++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%", *p)) plain = false;
        if (plain) {
            bbuf_puts(&b, a);
        } else {
            bbuf_putc(&b, '\'');
            for (const char *p = a; *p; p++) {
                if (*p == '\'') bbuf_puts(&b, "'\\''");
                else bbuf_putc(&b, *p);
            }
            bbuf_putc(&b, '\'');
        }
    }
    if (!b.data) bbuf_puts(&b, "");
    return b.data;
}

static void fmt_num(char *dst, size_t n, double v, const char *fmt) {
    if (v < 0) snprintf(dst, n, "n/a");
    else snprintf(dst, n, fmt, v);
}

int report_append(const char *path, const machine *m, const run_row *r, const char *cmdline) {
    struct stat st;
    bool fresh = stat(path, &st) != 0 || st.st_size == 0;
    FILE *f = fopen(path, "a");
    if (!f) return -1;
    if (fresh)
        fprintf(f, "| date | commit | machine | workload | target | wire | shape | keys | throughput | p50 µs | "
                   "p99 µs | p99.9 µs | RSS MB | B/entity | errors | vs redis | cores server/bench/other | command |\n"
                   "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    char rss[32], bpe[32], ratio[32];
    fmt_num(rss, sizeof rss, r->rss_kb < 0 ? -1.0 : r->rss_kb / 1024.0, "%.1f");
    fmt_num(bpe, sizeof bpe, r->bytes_per_entity, "%.0f");
    if (r->ratio > 0) snprintf(ratio, sizeof ratio, "%.2fx", r->ratio);
    else ratio[0] = '\0';
    char cores[64];
    if (r->server_cores >= 0)
        snprintf(cores, sizeof cores, "%.2f / %.2f / %.2f", r->server_cores, r->client_cores, r->other_cores);
    else
        snprintf(cores, sizeof cores, "n/a");
    fprintf(f, "| %s | %s | %ld x %s | %s | %s | %s | %s | %s | %.0f %s | %.1f | %.1f | %.1f | %s | %s | %llu | %s | %s | `%s` |\n",
            m->date, m->commit, m->nproc, m->cpu, r->label, r->target, r->wire, r->shape, r->keys, r->events_per_s,
            r->rate_unit, r->p50_us, r->p99_us, r->p999_us, rss, bpe, (unsigned long long)r->errors, ratio, cores,
            cmdline);
    return fclose(f) == 0 ? 0 : -1;
}
