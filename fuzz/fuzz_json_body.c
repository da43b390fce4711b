/* fuzz_json_body: what the gateway does with a JSON request body before a handler sees it
 * (gw_read_json in gw_http.c minus the civetweb read): gw_json_nesting_ok with
 * GW_JSON_MAX_DEPTH, then json_loadb(JSON_REJECT_DUPLICATES), then the object check; and the
 * WebSocket message path (gw_ws.c s_parse_request: depth 16).
 * Oracle: the depth guard exists because civetweb worker threads have 100 KB stacks, so a
 * document the guard lets through must really be no deeper than the limit: the parsed tree's
 * depth is measured and a deeper one aborts. The parse also runs on a thread with a civetweb
 * sized stack (USE_STACK_SIZE=102400 in Debian's build), so a recursion the guard misses
 * overflows here as it would in the gateway. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "gw_http.h"

static int s_depth(json_t *j)
{
    int d = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            int c = s_depth(v);
            if (c > d)
                d = c;
        }
        return d + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            int c = s_depth(v);
            if (c > d)
                d = c;
        }
        return d + 1;
    }
    return 0;
}

typedef struct {
    const char *text;
    size_t      len;
    int         max_depth;
} s_job_t;

static void *s_parse(void *arg)
{
    s_job_t *job = arg;
    if (!gw_json_nesting_ok(job->text, job->len, job->max_depth))
        return NULL;
    json_error_t err;
    json_t *doc = json_loadb(job->text, job->len, JSON_REJECT_DUPLICATES, &err);
    if (doc) {
        if (s_depth(doc) > job->max_depth)
            abort();   /* the guard let a deeper document through */
        if (json_is_object(doc)) {
            /* What the field getters then read (gw_json_string's pure checks). */
            json_t *v = json_object_get(doc, "name");
            if (json_is_string(v)) {
                const char *s = json_string_value(v);
                size_t n = json_string_length(v);
                if (strlen(s) > n)
                    abort();
            }
        }
        json_decref(doc);
    }
    return NULL;
}

/* civetweb's 100 KB exactly. jansson is the system library, not instrumented, so its frames
 * are their real size: without the guard, "[[[..." 2000 deep overflows this stack (checked:
 * ASan reports stack-overflow inside jansson), 1000 deep does not. */
#define S_STACK 102400

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_job_t jobs[2] = {
        { (const char *) data, size, GW_JSON_MAX_DEPTH },   /* HTTP body */
        { (const char *) data, size, 16 },                  /* WebSocket message */
    };
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, S_STACK);
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, s_parse, &jobs[i]) != 0)
            s_parse(&jobs[i]);
        else
            pthread_join(t, NULL);
    }
    pthread_attr_destroy(&attr);
    return 0;
}
