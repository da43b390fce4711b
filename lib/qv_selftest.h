/* qv_selftest: the one runner behind every selftest binary (libquaver's and each daemon's).
 * A binary declares a NULL-terminated table of named tests; ctest registers one entry per
 * name, and `<runner> NAME` runs that test, no argument runs them all. */
#ifndef QV_SELFTEST_H
#define QV_SELFTEST_H

typedef struct {
    const char *name;      /* NULL ends the table */
    int (*fn)(void);       /* 0 passed, anything else failed */
} qv_selftest_t;

/* Prints "name: ok|FAILED" per test and a closing "N passed, N failed". Returns main()'s exit
 * code: 0 when every test that ran passed, 1 on a failure, 2 for an unknown name. */
int qv_selftest_run(const char *runner, const qv_selftest_t *tests, int argc, char **argv);
#endif
