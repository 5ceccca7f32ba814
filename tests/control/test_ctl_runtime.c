/* Unit tests: what the readiness gate quotes from a server's log (runtime_log_last_error);
 * servers a killed daemon started but never recorded (runtime_kill_unrecorded). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "runtime.h"
#include "util.h"

static char *write_log(const char *dir, const char *text)
{
    char err[CTL_ERR_LEN];
    char *p = ctl_asprintf("%s/server.log", dir);
    assert_int_equal(ctl_write_file_atomic(p, text, strlen(text), 0644, err), 0);
    return p;
}

static void test_last_error_line(void **st)
{
    (void)st;
    char dir[] = "/tmp/ctl-runtime-XXXXXX", err[CTL_ERR_LEN];
    assert_non_null(mkdtemp(dir));
    /* an older run's error before the offset, then this run: info, the error, stderr text */
    const char *before = "{\"kind\":\"server.start_failed\",\"level\":\"error\",\"msg\":\"an older run\"}\n";
    const char *line = "{\"kind\":\"recovery.gap\",\"level\":\"error\",\"ts_ms\":1,\"msg\":\"LSNs 1..1600 missing\"}";
    char *text = ctl_asprintf("%s{\"kind\":\"server.start\",\"level\":\"info\",\"msg\":\"starting\"}\n%s\n"
                              "beava: refusing to start\n\n", before, line);
    char *p = write_log(dir, text);
    char *got = runtime_log_last_error(p, (long long)strlen(before));
    assert_non_null(got);
    assert_string_equal(got, line);
    free(got);
    free(p);
    free(text);
    /* no JSON error line: the last line it printed (a crash, a usage error) */
    p = write_log(dir, "{\"kind\":\"server.start\",\"level\":\"info\"}\nSegmentation fault\n");
    got = runtime_log_last_error(p, 0);
    assert_string_equal(got, "Segmentation fault");
    free(got);
    free(p);
    /* a level "error" inside a message is not an error line; "fatal" is */
    p = write_log(dir, "{\"kind\":\"x\",\"level\":\"fatal\",\"msg\":\"disk\"}\n"
                       "{\"kind\":\"y\",\"level\":\"info\",\"msg\":\"\\\"level\\\":\\\"error\\\"\"}\n");
    got = runtime_log_last_error(p, 0);
    assert_string_equal(got, "{\"kind\":\"x\",\"level\":\"fatal\",\"msg\":\"disk\"}");
    free(got);
    free(p);
    /* nothing written since the offset, or no log at all */
    p = write_log(dir, "old line\n");
    assert_null(runtime_log_last_error(p, 9));
    free(p);
    char *missing = ctl_asprintf("%s/none.log", dir);
    assert_null(runtime_log_last_error(missing, 0));
    free(missing);
    ctl_rmtree(dir, err);
}

/* A process started with the mark of state dir `sd` (as runtime_start sets it). */
static pid_t spawn_marked(const char *sd)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *mark = ctl_asprintf("%s=%s", RUNTIME_MARK, sd);
        char *const argv[] = { "sleep", "60", NULL };
        char *const envp[] = { mark, "PATH=/usr/bin:/bin", NULL };
        execve("/bin/sleep", argv, envp);
        _exit(127);
    }
    return pid;
}

static void test_kill_unrecorded(void **st)
{
    (void)st;
    struct ctl_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.state_dir = "/tmp/ctl-test-state-a";
    cfg.runtime_data_dir = "/tmp/ctl-test-state-a/no-data"; /* no LOCK there: only the mark counts */
    pid_t ours = spawn_marked("/tmp/ctl-test-state-a"), kept = spawn_marked("/tmp/ctl-test-state-a");
    pid_t other = spawn_marked("/tmp/ctl-test-state-a-other");   /* another daemon's: a prefix is not a match */
    usleep(200000);                                                /* let them exec */
    assert_int_equal(runtime_kill_unrecorded(&cfg, kept), 1);
    int ws;
    assert_int_equal(waitpid(ours, &ws, 0), ours);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    assert_int_equal(waitpid(kept, &ws, WNOHANG), 0);              /* still running */
    assert_int_equal(waitpid(other, &ws, WNOHANG), 0);
    assert_int_equal(runtime_kill_unrecorded(&cfg, 0), 1);         /* now the kept one */
    assert_int_equal(waitpid(kept, &ws, 0), kept);
    assert_int_equal(waitpid(other, &ws, WNOHANG), 0);
    kill(other, SIGKILL);
    waitpid(other, &ws, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_error_line),
        cmocka_unit_test(test_kill_unrecorded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
