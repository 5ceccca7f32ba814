/*
 * main.c - the beava command line: run the server, `probe`, `quickstart`, --help,
 * --version. Signals are blocked here before any thread starts so that only the main
 * thread receives SIGTERM/SIGINT (server_wait_for_signal).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "httpc.h"
#include "log.h"
#include "server.h"
#include "version.h"

/* "mode":"merge" adds PageView and SiteMetrics next to whatever the server holds (the
 * pipelines ./run registers included) instead of replacing the whole registry. */
static const char quickstart_pipeline[] =
    "{\"mode\":\"merge\",\"nodes\":["
    "{\"kind\":\"event\",\"name\":\"PageView\",\"schema\":{\"fields\":{\"session_id\":\"str\",\"path\":\"str\","
    "\"dwell_ms\":\"i64\"},\"optional_fields\":[]}},"
    "{\"kind\":\"derivation\",\"name\":\"SiteMetrics\",\"output_kind\":\"table\",\"upstreams\":[\"PageView\"],"
    "\"ops\":[{\"op\":\"group_by\",\"keys\":[],\"agg\":{"
    "\"page_views_24h\":{\"op\":\"count\",\"params\":{\"window\":\"24h\"}},"
    "\"median_dwell_1h\":{\"op\":\"quantile\",\"params\":{\"field\":\"dwell_ms\",\"q\":0.5,\"window\":\"1h\"}},"
    "\"top_page_1h\":{\"op\":\"top_k\",\"params\":{\"field\":\"path\",\"k\":1,\"window\":\"1h\"}}}}],"
    "\"table_primary_key\":[]}]}";

static const char *const quickstart_events[] = {
    "{\"event\":\"PageView\",\"data\":{\"session_id\":\"s1\",\"path\":\"/\",\"dwell_ms\":1200}}",
    "{\"event\":\"PageView\",\"data\":{\"session_id\":\"s1\",\"path\":\"/pricing\",\"dwell_ms\":5400}}",
    "{\"event\":\"PageView\",\"data\":{\"session_id\":\"s2\",\"path\":\"/\",\"dwell_ms\":800}}",
    "{\"event\":\"PageView\",\"data\":{\"session_id\":\"s3\",\"path\":\"/docs\",\"dwell_ms\":15000}}",
    "{\"event\":\"PageView\",\"data\":{\"session_id\":\"s2\",\"path\":\"/\",\"dwell_ms\":2300}}",
};

static int call(const char *addr, const char *method, const char *path, const char *body, bv_buf *out) {
    int status = 0;
    char err[256];
    out->len = 0;
    if (httpc_request(addr, method, path, body, 5000, &status, out, err, sizeof err) != 0) {
        fprintf(stderr, "beava quickstart: %s %s failed: %s\n", method, path, err);
        return -1;
    }
    if (status != 200) {
        fprintf(stderr, "beava quickstart: %s %s answered %d: %s\n", method, path, status, out->data ? out->data : "");
        return -1;
    }
    return 0;
}

static void curl_lines(FILE *f, const char *addr) {
    fprintf(f, "curl -s -X POST http://%s/register -H 'Content-Type: application/json' -d '%s'\n", addr,
            quickstart_pipeline);
    for (size_t i = 0; i < sizeof quickstart_events / sizeof *quickstart_events; i++)
        fprintf(f, "curl -s -X POST http://%s/push -d '%s'\n", addr, quickstart_events[i]);
    fprintf(f, "curl -s -X POST http://%s/get -d '{\"table\":\"SiteMetrics\",\"key\":\"\"}'\n", addr);
}

static int run_quickstart(bv_config *cfg, const bv_cli *cli, const bv_log *log) {
    snprintf(cfg->http_addr, sizeof cfg->http_addr, "127.0.0.1:0");
    snprintf(cfg->admin_addr, sizeof cfg->admin_addr, "127.0.0.1:0");
    cfg->tcp_port = 0;                   /* every listener ephemeral: runs next to ./run */
    cfg->memory_only = true;
    cfg->site_dir[0] = 0;
    bv_log quiet = *log;
    quiet.min_level = LOG_WARN;
    char err[512];
    beava_server *s = server_start(cfg, &quiet, err, sizeof err);
    if (!s) {
        fprintf(stderr, "beava quickstart: %s\n", err);
        return 1;
    }
    const char *addr = server_http_addr(s);
    bv_buf out;
    bv_buf_init(&out);
    int rc = 1;
    printf("beava %s quickstart: an in-process server on http://%s (memory only)\n\n", BEAVA_VERSION, addr);
    if (call(addr, "POST", "/register", quickstart_pipeline, &out) != 0) goto done;
    printf("1. registered event PageView and global table SiteMetrics:\n   %s\n\n", out.data);
    printf("2. pushed 5 PageView events:\n");
    for (size_t i = 0; i < sizeof quickstart_events / sizeof *quickstart_events; i++) {
        if (call(addr, "POST", "/push", quickstart_events[i], &out) != 0) goto done;
        printf("   %s -> %s\n", quickstart_events[i], out.data);
    }
    if (call(addr, "POST", "/get", "{\"table\":\"SiteMetrics\",\"key\":\"\"}", &out) != 0) goto done;
    printf("\n3. POST /get {\"table\":\"SiteMetrics\",\"key\":\"\"}:\n   %s\n\n", out.data);
    printf("Do the same by hand against a running server (./run starts one on 127.0.0.1:8080):\n\n");
    curl_lines(stdout, "127.0.0.1:8080");
    if (!cli->quickstart_no_file) {
        FILE *f = fopen("beava_quickstart.sh", "w");
        if (f) {
            fprintf(f, "#!/bin/sh\n# Written by `beava quickstart`: the same steps with curl.\nset -e\n");
            curl_lines(f, "${BEAVA_ADDR:-127.0.0.1:8080}");
            fclose(f);
            printf("\n(wrote beava_quickstart.sh; run `beava quickstart --no-file` to write nothing)\n");
        }
    }
    rc = 0;
done:
    bv_buf_free(&out);
    server_stop(s);
    return rc;
}

static int run_probe(const bv_config *cfg, const bv_cli *cli) {
    const char *addr = cli->probe_addr[0] ? cli->probe_addr : cfg->admin_addr;
    int status = 0;
    bv_buf body;
    bv_buf_init(&body);
    char err[256];
    int rc = httpc_request(addr, "GET", "/ready", NULL, 3000, &status, &body, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "beava probe: %s\n", err);
        bv_buf_free(&body);
        return 1;
    }
    printf("%d %s\n", status, body.data ? body.data : "");
    bv_buf_free(&body);
    return status == 200 ? 0 : 1;
}

/* `beava members add|remove ID` / `beava members cancel`: POST /cluster/members on a
 * node's admin port (the token from security.admin_token_file when set). */
static int run_members(const bv_config *cfg, const bv_cli *cli) {
    const char *addr = cli->probe_addr[0] ? cli->probe_addr : cfg->admin_addr;
    json_t *j = strcmp(cli->members_op, "cancel") == 0 ? json_pack("{s:b}", "cancel", 1)
                                                       : json_pack("{s:s}", cli->members_op, cli->members_id);
    char *req = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char hdr[600] = "", err[256];
    if (cfg->admin_token_file[0]) {
        FILE *f = fopen(cfg->admin_token_file, "r");
        char tok[512] = "";
        if (!f || !fgets(tok, sizeof tok, f)) {
            fprintf(stderr, "beava members: cannot read %s\n", cfg->admin_token_file);
            if (f) fclose(f);
            free(req);
            return 1;
        }
        fclose(f);
        tok[strcspn(tok, "\r\n")] = 0;
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", tok);
    }
    int status = 0;
    bv_buf body;
    bv_buf_init(&body);
    if (!req) snprintf(err, sizeof err, "out of memory");
    int rc = req ? httpc_request_ex(addr, "POST", "/cluster/members", req, 10000, hdr[0] ? hdr : NULL, 1u << 20, &status,
                                    &body, err, sizeof err)
                 : -1;
    free(req);
    if (rc != 0) {
        fprintf(stderr, "beava members: %s\n", err);
        bv_buf_free(&body);
        return 1;
    }
    printf("%d %s\n", status, body.data ? body.data : "");
    bv_buf_free(&body);
    return status == 200 ? 0 : 1;
}

int main(int argc, char **argv) {
    bv_config cfg;
    bv_cli cli;
    char err[1024];
    if (config_load(&cfg, &cli, argc, argv, err, sizeof err) != 0) {
        fprintf(stderr, "beava: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    int rc = 0;
    bv_log log;
    bv_log_init(&log, (bv_log_level)bv_log_level_parse(cfg.log_level));
    switch (cli.command) {
    case CMD_HELP:
        config_usage(stdout);
        break;
    case CMD_VERSION:
        printf("beava %s (revision %s)\n", BEAVA_VERSION, BEAVA_REVISION);
        break;
    case CMD_PROBE:
        rc = run_probe(&cfg, &cli);
        break;
    case CMD_MEMBERS:
        rc = run_members(&cfg, &cli);
        break;
    case CMD_QUICKSTART:
    case CMD_SERVE: {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        if (cli.command == CMD_QUICKSTART) {
            rc = run_quickstart(&cfg, &cli, &log);
            break;
        }
        char msg[160];
        snprintf(msg, sizeof msg, "beava %s (revision %s) starting", BEAVA_VERSION, BEAVA_REVISION);
        bv_log_msg(&log, LOG_INFO, "server.start", "%s", msg);
        beava_server *s = server_start(&cfg, &log, err, sizeof err);
        if (!s) {
            bv_log_msg(&log, LOG_ERROR, "server.start_failed", "%s", err);
            fprintf(stderr, "beava: %s\n", err);
            rc = 1;
            break;
        }
        server_wait_for_signal(s);
        server_stop(s);
        break;
    }
    }
    config_free(&cfg);
    return rc;
}
