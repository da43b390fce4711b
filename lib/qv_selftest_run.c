/* qv_selftest_run: see qv_selftest.h. */
#include "qv_selftest.h"
#include <stdio.h>
#include <string.h>

int qv_selftest_run(const char *runner, const qv_selftest_t *tests, int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    for (int i = 0; tests[i].name; i++) {
        if (only && strcmp(only, tests[i].name) != 0)
            continue;
        printf("%s: running\n", tests[i].name);
        fflush(stdout);   /* a crash inside the test still shows which one it was */
        int rc = tests[i].fn();
        printf("%s: %s\n", tests[i].name, rc == 0 ? "ok" : "FAILED");
        fflush(stdout);
        if (rc == 0)
            passed++;
        else
            failed++;
    }
    if (passed + failed == 0) {
        fprintf(stderr, "%s: no test named '%s' (tests:", runner, only ? only : "");
        for (int i = 0; tests[i].name; i++)
            fprintf(stderr, " %s", tests[i].name);
        fprintf(stderr, ")\n");
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
