/* fuzz_config_file: qv_config_load_from reading a config file ("key = value" lines, '#'
 * comments) into a table with every key type, bounds and flags.
 * Input: the file's bytes, written to a temp file per run. When the input holds a NUL byte,
 * what follows it is also split on NULs into --set "k=v" entries (at most 8), so the --set
 * path and the file-then-set precedence are fuzzed as well. The environment is always empty
 * (a fixed getenv) so runs are reproducible. After a load, qv_config_print must cope with
 * the result and qv_config_free must release it. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "qv_config.h"

typedef struct {
    QV_COMMON_CFG_FIELDS
    char   *name;
    char   *secret;
    char   *any;
    int64_t count;
    int64_t big;
    bool    flag;
    bool    flag2;
    double  ratio;
    double  wide;
} s_cfg_t;

static const qv_cfg_key_t s_keys[] = {
    QV_COMMON_CFG_KEYS(s_cfg_t),
    { "name", QV_CFG_STR, offsetof(s_cfg_t, name), "n", 0, 16, "NAME_ALIAS", QV_CFG_NONEMPTY, "s" },
    { "secret", QV_CFG_STR, offsetof(s_cfg_t, secret), "", 0, 0, NULL, QV_CFG_SECRET, "s" },
    { "any", QV_CFG_STR, offsetof(s_cfg_t, any), NULL, 0, 0, NULL, QV_CFG_RUNTIME, NULL },
    { "count", QV_CFG_INT, offsetof(s_cfg_t, count), "5", -10, 100, NULL, 0, "i" },
    { "big", QV_CFG_INT, offsetof(s_cfg_t, big), "0", -9.2e18, 9.2e18, NULL, 0, "i" },
    { "flag", QV_CFG_BOOL, offsetof(s_cfg_t, flag), "false", 0, 0, NULL, 0, "b" },
    { "flag2", QV_CFG_BOOL, offsetof(s_cfg_t, flag2), "yes", 0, 0, NULL, 0, "b" },
    { "ratio", QV_CFG_DOUBLE, offsetof(s_cfg_t, ratio), "0.5", 0, 1, NULL, 0, "d" },
    { "wide", QV_CFG_DOUBLE, offsetof(s_cfg_t, wide), "0", -1e300, 1e300, NULL, 0, "d" },
    { NULL, QV_CFG_STR, 0, NULL, 0, 0, NULL, 0, NULL }
};

static const char *s_no_env(const char *name)
{
    (void) name;
    return NULL;
}

static char s_path[64];

static void s_cleanup(void)
{
    if (s_path[0])
        unlink(s_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_path[0]) {
        snprintf(s_path, sizeof s_path, "/tmp/qv-fuzz-config-%d", (int) getpid());
        atexit(s_cleanup);
    }
    const uint8_t *nul = memchr(data, '\0', size);
    size_t flen = nul ? (size_t) (nul - data) : size;
    FILE *f = fopen(s_path, "wb");
    if (!f)
        abort();
    if (flen && fwrite(data, 1, flen, f) != flen)
        abort();
    fclose(f);

    /* The --set entries after the first NUL (each NUL-terminated by construction). */
    char *setbuf = NULL;
    const char *sets[9] = { 0 };
    if (nul) {
        size_t slen = size - flen - 1;
        setbuf = malloc(slen + 1);
        if (!setbuf)
            return 0;
        memcpy(setbuf, nul + 1, slen);
        setbuf[slen] = '\0';
        int n = 0;
        for (char *p = setbuf; n < 8 && p <= setbuf + slen; p += strlen(p) + 1)
            sets[n++] = p;
    }

    s_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[512];
    err[0] = '\0';
    int rc = qv_config_load_from(s_keys, &cfg, "fuzzd", s_path, nul ? sets : NULL, s_no_env,
                                 err, sizeof err);
    if (rc == 0) {
        if (!cfg.name || !*cfg.name || strlen(cfg.name) > 16)
            abort();   /* NONEMPTY and max length were promised */
        if (cfg.count < -10 || cfg.count > 100 || !(cfg.ratio >= 0 && cfg.ratio <= 1))
            abort();   /* bounds were promised */
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            qv_config_print(s_keys, &cfg, null);
            fclose(null);
        }
    }
    else if (!memchr(err, '\0', sizeof err))
        abort();
    qv_config_free(s_keys, &cfg);
    free(setbuf);
    return 0;
}
