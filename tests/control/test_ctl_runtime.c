/* Unit tests: what the readiness gate quotes from a server's log (runtime_log_last_error). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_error_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
