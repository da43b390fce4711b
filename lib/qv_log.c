/* qv_log: one line per event on stderr, text or JSON (see qv_log.h).
 * Guarantees: every event is exactly one line (newlines and control characters inside a
 * message are escaped, so a log shipper never splits an event), formatted in full in memory
 * and handed to the kernel with one write(2), so lines from different threads never
 * interleave. JSON is written by hand (libquaver does not link jansson) with RFC 8259 string
 * escaping. Before qv_log_init the daemon name is the program name, text format, level info. */
#include "qv_log.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Set once at start by qv_log_init, read by every thread afterwards. */
static char s_daemon[64];
static bool s_json;
static qv_log_level_t s_level = QV_LOG_INFO;

static const char s_letters[] = "DIWE";
static const char *const s_words[] = { "debug", "info", "warn", "error" };

int qv_log_init(const char *daemon, const char *format, const char *level)
{
    int rc = 0;
    if (daemon && *daemon)
        snprintf(s_daemon, sizeof s_daemon, "%s", daemon);
    if (format && *format) {
        if (strcasecmp(format, "text") == 0)
            s_json = false;
        else if (strcasecmp(format, "json") == 0)
            s_json = true;
        else
            rc = -1;
    }
    if (level && *level) {
        int i, found = -1;
        for (i = 0; i < 4; i++)
            if (strcasecmp(level, s_words[i]) == 0)
                found = i;
        /* "warning" is what people type as often as "warn" */
        if (found < 0 && strcasecmp(level, "warning") == 0)
            found = QV_LOG_WARN;
        if (found < 0)
            rc = -1;
        else
            s_level = (qv_log_level_t) found;
    }
    return rc;
}

/* A small growable buffer; on out of memory it stops growing and the line is truncated,
 * because losing the tail of a log line beats losing the process. */
typedef struct {
    char  *data;
    size_t len, cap;
    char   stack[1024];
} s_line_t;

static void s_put(s_line_t *l, const char *s, size_t n)
{
    if (l->len + n + 2 > l->cap) {
        size_t cap = l->cap * 2;
        while (cap < l->len + n + 2)
            cap *= 2;
        char *d = l->data == l->stack ? malloc(cap) : realloc(l->data, cap);
        if (!d) {
            n = l->cap > l->len + 2 ? l->cap - l->len - 2 : 0;
        } else {
            if (l->data == l->stack)
                memcpy(d, l->stack, l->len);
            l->data = d;
            l->cap = cap;
        }
    }
    memcpy(l->data + l->len, s, n);
    l->len += n;
}

static void s_puts(s_line_t *l, const char *s) { s_put(l, s, strlen(s)); }

/* Escapes s for a JSON string (json=true) or for one text line (json=false: only control
 * characters and backslash-n style escapes, quotes stay readable). */
static void s_put_escaped(s_line_t *l, const char *s, bool json)
{
    const unsigned char *p = (const unsigned char *) s;
    for (; *p; p++) {
        char esc[8];
        unsigned char c = *p;
        if (c == '\n')
            s_put(l, "\\n", 2);
        else if (c == '\r')
            s_put(l, "\\r", 2);
        else if (c == '\t')
            s_put(l, json ? "\\t" : "\t", 2 - !json);
        else if (json && c == '"')
            s_put(l, "\\\"", 2);
        else if (json && c == '\\')
            s_put(l, "\\\\", 2);
        else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            s_put(l, esc, 6);
        } else
            s_put(l, (const char *) p, 1);
    }
}

void qv_log(qv_log_level_t level, const char *req_id, const char *fmt, ...)
{
    if (level < s_level)
        return;
    if (level < QV_LOG_DEBUG || level > QV_LOG_ERROR)
        level = QV_LOG_ERROR;
    int saved_errno = errno;   /* callers log then inspect errno */

    char msgbuf[512];
    char *msg = msgbuf;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msgbuf, sizeof msgbuf, fmt, ap);
    va_end(ap);
    if (n >= (int) sizeof msgbuf) {
        char *big = malloc((size_t) n + 1);
        if (big) {
            va_start(ap, fmt);
            vsnprintf(big, (size_t) n + 1, fmt, ap);
            va_end(ap);
            msg = big;
        }
    } else if (n < 0)
        snprintf(msgbuf, sizeof msgbuf, "(bad log format '%s')", fmt);

    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03dZ", (int) (ts.tv_nsec / 1000000));

    const char *daemon = *s_daemon ? s_daemon : program_invocation_short_name;
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int) getpid());
    bool has_req = req_id && *req_id;

    s_line_t l = { .data = NULL, .len = 0, .cap = sizeof l.stack };
    l.data = l.stack;
    if (s_json) {
        s_puts(&l, "{\"ts\":\"");
        s_puts(&l, when);
        s_puts(&l, "\",\"level\":\"");
        s_puts(&l, s_words[level]);
        s_puts(&l, "\",\"daemon\":\"");
        s_put_escaped(&l, daemon, true);
        s_puts(&l, "\",\"pid\":");
        s_puts(&l, pid);
        if (has_req) {
            s_puts(&l, ",\"req\":\"");
            s_put_escaped(&l, req_id, true);
            s_puts(&l, "\"");
        }
        s_puts(&l, ",\"msg\":\"");
        s_put_escaped(&l, msg, true);
        s_puts(&l, "\"}");
    } else {
        s_puts(&l, when);
        s_put(&l, " ", 1);
        s_put(&l, &s_letters[level], 1);
        s_put(&l, " ", 1);
        s_put_escaped(&l, daemon, false);
        s_puts(&l, "[");
        s_puts(&l, pid);
        s_puts(&l, "] ");
        if (has_req) {
            s_puts(&l, "req=");
            s_put_escaped(&l, req_id, false);
            s_puts(&l, " ");
        }
        s_put_escaped(&l, msg, false);
    }
    l.data[l.len++] = '\n';   /* s_put always leaves room for this */

    /* One write; a partial write (pipe full, signal) is completed rather than dropped. */
    size_t off = 0;
    while (off < l.len) {
        ssize_t k = write(STDERR_FILENO, l.data + off, l.len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        off += (size_t) k;
    }
    if (l.data != l.stack)
        free(l.data);
    if (msg != msgbuf)
        free(msg);
    errno = saved_errno;
}

/* ---- selftest ------------------------------------------------------------------------- */
#include <fcntl.h>

#define S_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "log selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    goto fail; } } while (0)

/* Runs the logging calls of the test with stderr pointed at a file; returns what was written. */
static char *s_capture(void (*fn)(void))
{
    char path[] = "/tmp/qv-log-test-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *buf = len >= 0 ? calloc(1, (size_t) len + 1) : NULL;
    if (buf && pread(fd, buf, (size_t) len, 0) != len) {
        free(buf);
        buf = NULL;
    }
    close(fd);
    return buf;
}

static void s_lines(void)
{
    qv_log(QV_LOG_WARN, "7f3a", "redis timeout, serving %s tier", "local");
    qv_log(QV_LOG_DEBUG, "x", "filtered out");
    qv_log(QV_LOG_INFO, "", "no req \"q\" \\ tab\there\nnext \x01");
    qv_error("e %d", 1);
}

int qv_log_selftest(void)
{
    char saved_daemon[sizeof s_daemon];
    memcpy(saved_daemon, s_daemon, sizeof s_daemon);
    bool saved_json = s_json;
    qv_log_level_t saved_level = s_level;
    char *out = NULL, want[256];
    int pid = (int) getpid();

    S_CHECK(qv_log_init("cache", "yaml", NULL) == -1);
    S_CHECK(qv_log_init("cache", NULL, "loud") == -1);
    S_CHECK(qv_log_init("cache", "text", "info") == 0);
    out = s_capture(s_lines);
    S_CHECK(out);
    /* 2026-11-22T10:00:00.123Z W cache[1234] req=7f3a redis timeout, serving local tier */
    S_CHECK(strlen(out) > 25 && out[4] == '-' && out[10] == 'T' && out[19] == '.' &&
            out[23] == 'Z' && out[24] == ' ');
    snprintf(want, sizeof want, " W cache[%d] req=7f3a redis timeout, serving local tier\n", pid);
    S_CHECK(strncmp(out + 24, want, strlen(want)) == 0);
    S_CHECK(!strstr(out, "filtered out"));
    snprintf(want, sizeof want,
             " I cache[%d] no req \"q\" \\ tab\there\\nnext \\u0001\n", pid);
    S_CHECK(strstr(out, want));
    snprintf(want, sizeof want, " E cache[%d] e 1\n", pid);
    S_CHECK(strstr(out, want));
    int lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    S_CHECK(lines == 3);
    free(out);

    S_CHECK(qv_log_init("cache", "json", "debug") == 0);
    out = s_capture(s_lines);
    S_CHECK(out && strncmp(out, "{\"ts\":\"", 7) == 0 && out[30] == 'Z');
    snprintf(want, sizeof want, "\",\"level\":\"warn\",\"daemon\":\"cache\",\"pid\":%d,"
             "\"req\":\"7f3a\",\"msg\":\"redis timeout, serving local tier\"}\n", pid);
    S_CHECK(strncmp(out + 31, want, strlen(want)) == 0);
    S_CHECK(strstr(out, "\"level\":\"debug\""));
    snprintf(want, sizeof want, "\"pid\":%d,\"msg\":\"no req \\\"q\\\" \\\\ tab\\there\\nnext "
             "\\u0001\"}\n", pid);
    S_CHECK(strstr(out, want));
    free(out);
    out = NULL;

    memcpy(s_daemon, saved_daemon, sizeof s_daemon);
    s_json = saved_json;
    s_level = saved_level;
    return 0;
fail:
    if (out)
        fprintf(stderr, "log selftest: captured:\n%s", out);
    free(out);
    memcpy(s_daemon, saved_daemon, sizeof s_daemon);
    s_json = saved_json;
    s_level = saved_level;
    return -1;
}
