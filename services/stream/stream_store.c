/* stream_store: see stream_store.h for what it guarantees. */
#include "stream_store.h"
#include "qv_log.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_TMP_PREFIX ".tmp-"
#define S_TMP_MAX_AGE_S 3600

struct stream_store_t {
    char           *dir;
    int             dirfd;
    pthread_mutex_t mu;
    int64_t         count;
};

bool stream_sha_valid(const char *s)
{
    if (!s) return false;
    size_t i = 0;
    for (; s[i]; i++) {
        if (i >= 64) return false;
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    }
    return i == 64;
}

void stream_sha256_hex(const uint8_t *data, size_t len, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, data, len);
    sodium_bin2hex(out, 65, h, sizeof h);
}

static int s_mkdirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) { free(p); return -1; }
        *s = '/';
    }
    int rc = mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* Counts stored files and removes old temporaries. A young temporary may belong to another
 * replica's upload in progress in a shared directory, so it is left alone. */
static void s_scan(stream_store_t *s)
{
    int fd = dup(s->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) { if (fd >= 0) close(fd); return; }
    rewinddir(d);
    struct dirent *de;
    time_t now = time(NULL);
    while ((de = readdir(d))) {
        if (stream_sha_valid(de->d_name)) s->count++;
        else if (strncmp(de->d_name, S_TMP_PREFIX, strlen(S_TMP_PREFIX)) == 0) {
            struct stat st;
            if (fstatat(s->dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
                && now - st.st_mtime > S_TMP_MAX_AGE_S) {
                if (unlinkat(s->dirfd, de->d_name, 0) == 0)
                    qv_info("removed stale temporary %s/%s", s->dir, de->d_name);
            }
        }
    }
    closedir(d);
}

stream_store_t *stream_store_new(const char *dir)
{
    if (sodium_init() < 0) { qv_error("libsodium failed to initialise"); return NULL; }
    if (!dir || !*dir || s_mkdirs(dir) != 0) {
        qv_error("storage_dir '%s': cannot create: %s", dir ? dir : "", strerror(errno));
        return NULL;
    }
    stream_store_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->dir = strdup(dir);
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!s->dir || s->dirfd < 0) {
        qv_error("storage_dir '%s': cannot open: %s", dir, strerror(errno));
        if (s->dirfd >= 0) close(s->dirfd);
        free(s->dir);
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s_scan(s);
    return s;
}

void stream_store_destroy(stream_store_t **self_p)
{
    if (!self_p || !*self_p) return;
    stream_store_t *s = *self_p;
    close(s->dirfd);
    free(s->dir);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *self_p = NULL;
}

const char *stream_store_dir(stream_store_t *self) { return self->dir; }

int64_t stream_store_count(stream_store_t *self)
{
    pthread_mutex_lock(&self->mu);
    int64_t n = self->count;
    pthread_mutex_unlock(&self->mu);
    return n;
}

static int s_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        p += n;
        len -= (size_t) n;
    }
    return 0;
}

/* Writes bytes to a new temporary, fsyncs, renames to name, fsyncs the directory. */
static int s_atomic_write(stream_store_t *s, const char *name, const void *data, size_t len)
{
    char tmp[64];
    int fd = -1;
    /* O_EXCL on a random name: mkstemp needs a full path, openat keeps us inside dirfd. */
    for (int tries = 0; tries < 8 && fd < 0; tries++) {
        snprintf(tmp, sizeof tmp, S_TMP_PREFIX "%08x%08x", randombytes_random(),
                 randombytes_random());
        fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        qv_error("%s: cannot create a temporary file: %s", s->dir, strerror(errno));
        return -1;
    }
    if (s_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        qv_error("%s/%s: write: %s", s->dir, tmp, strerror(errno));
        close(fd);
        unlinkat(s->dirfd, tmp, 0);
        return -1;
    }
    close(fd);
    if (renameat(s->dirfd, tmp, s->dirfd, name) != 0) {
        qv_error("%s/%s: rename: %s", s->dir, name, strerror(errno));
        unlinkat(s->dirfd, tmp, 0);
        return -1;
    }
    if (fsync(s->dirfd) != 0) {
        qv_error("%s: fsync of the directory: %s", s->dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int s_meta_text(const stream_meta_t *m, char *buf, size_t len)
{
    return snprintf(buf, len, "mime=%s\nduration_ms=%lld\nbitrate=%d\n", m->mime,
                    (long long) m->duration_ms, (int) m->bitrate);
}

int stream_store_put_meta(stream_store_t *self, const char *sha, const stream_meta_t *meta)
{
    if (!stream_sha_valid(sha)) return -1;
    char name[80], text[160];
    snprintf(name, sizeof name, "%s.meta", sha);
    int n = s_meta_text(meta, text, sizeof text);
    return s_atomic_write(self, name, text, (size_t) n);
}

int stream_store_put(stream_store_t *self, const uint8_t *data, size_t len,
                     const stream_meta_t *meta, char sha_out[65], bool *existed)
{
    stream_sha256_hex(data, len, sha_out);
    *existed = false;
    struct stat st;
    if (fstatat(self->dirfd, sha_out, &st, 0) == 0 && (size_t) st.st_size == len) {
        *existed = true;
        /* The content is there; make sure its meta is too (a crash may have lost it). */
        char name[80];
        snprintf(name, sizeof name, "%s.meta", sha_out);
        if (fstatat(self->dirfd, name, &st, 0) != 0)
            (void) stream_store_put_meta(self, sha_out, meta);
        return 0;
    }
    /* Meta first: once the audio name exists, its meta does too. */
    if (stream_store_put_meta(self, sha_out, meta) != 0) return -1;
    if (s_atomic_write(self, sha_out, data, len) != 0) return -1;
    pthread_mutex_lock(&self->mu);
    self->count++;
    pthread_mutex_unlock(&self->mu);
    return 0;
}

static void s_read_meta(stream_store_t *s, const char *sha, stream_file_info_t *out)
{
    char name[80], text[256];
    snprintf(name, sizeof name, "%s.meta", sha);
    out->has_meta = false;
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return;
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    if (n <= 0) return;
    text[n] = 0;
    char mime[sizeof out->meta.mime] = "";
    long long dur = -1;
    int br = -1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "mime=", 5) == 0) snprintf(mime, sizeof mime, "%s", line + 5);
        else if (strncmp(line, "duration_ms=", 12) == 0) dur = strtoll(line + 12, NULL, 10);
        else if (strncmp(line, "bitrate=", 8) == 0) br = atoi(line + 8);
    }
    if (!mime[0] || dur < 0 || br < 0) return;
    memcpy(out->meta.mime, mime, sizeof mime);
    out->meta.duration_ms = dur;
    out->meta.bitrate = br;
    out->has_meta = true;
}

static int s_open(stream_store_t *s, const char *sha, stream_file_info_t *out)
{
    if (!stream_sha_valid(sha)) return -1;
    int fd = openat(s->dirfd, sha, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? -1 : -2;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return -2; }
    memset(out, 0, sizeof *out);
    out->size = st.st_size;
    out->mtime_ms = (int64_t) st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    s_read_meta(s, sha, out);
    return fd;
}

int stream_store_stat(stream_store_t *self, const char *sha, stream_file_info_t *out)
{
    int fd = s_open(self, sha, out);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

int stream_store_read(stream_store_t *self, const char *sha, int64_t offset, size_t len,
                      uint8_t *buf, size_t *got, stream_file_info_t *info)
{
    *got = 0;
    int fd = s_open(self, sha, info);
    if (fd < 0) return fd;
    if (offset < 0 || offset >= info->size) { close(fd); return -3; }
    while (*got < len) {
        ssize_t n = pread(fd, buf + *got, len - *got, (off_t) (offset + (int64_t) *got));
        if (n < 0) { if (errno == EINTR) continue; close(fd); return -2; }
        if (n == 0) break;
        *got += (size_t) n;
    }
    close(fd);
    return 0;
}

uint8_t *stream_store_slurp(stream_store_t *self, const char *sha, size_t *len)
{
    stream_file_info_t info;
    int fd = s_open(self, sha, &info);
    if (fd < 0) return NULL;
    close(fd);
    uint8_t *buf = malloc(info.size ? (size_t) info.size : 1);
    size_t got = 0;
    if (!buf || (info.size > 0
                 && stream_store_read(self, sha, 0, (size_t) info.size, buf, &got, &info) != 0)) {
        free(buf);
        return NULL;
    }
    *len = got;
    return buf;
}
