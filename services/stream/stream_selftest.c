/* stream_selftest: the stream daemon's selftests, one ctest entry per row of s_tests.
 * Usage: stream_selftest <name>   (no name: run all). Audio is made here with libsndfile (a
 * 1 s sine) and, for MP3, encoded with /usr/bin/lame when it is installed. */
#include "qv_selftest.h"
#include "stream_probe.h"
#include "stream_store.h"
#include "stream_server.h"
#include "quaver/v1/stream.pb-c.h"
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
                                          __LINE__, #c); return 1; } } while (0)

static char s_tmpdir[64];

static const char *s_tmp(void)
{
    if (!s_tmpdir[0]) {
        snprintf(s_tmpdir, sizeof s_tmpdir, "/tmp/stream_selftest.XXXXXX");
        if (!mkdtemp(s_tmpdir)) { perror("mkdtemp"); exit(2); }
    }
    return s_tmpdir;
}

static void s_rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) s_rm_rf(p); else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static uint8_t *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t) n + 1);
    if (b && fread(b, 1, (size_t) n, f) != (size_t) n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t) n;
    return b;
}

/* A 1 s 440 Hz sine, 44.1 kHz mono, in the given format; returns the file's bytes. */
static uint8_t *s_make_audio(int format, const char *ext, size_t *len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/sine.%s", s_tmp(), ext);
    SF_INFO info = { .samplerate = 44100, .channels = 1, .format = format };
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) { fprintf(stderr, "sf_open %s: %s\n", path, sf_strerror(NULL)); return NULL; }
    static float buf[44100];
    for (int i = 0; i < 44100; i++) buf[i] = (float) (0.5 * sin(2 * M_PI * 440 * i / 44100.0));
    sf_writef_float(sf, buf, 44100);
    sf_close(sf);
    return s_slurp(path, len);
}

static uint8_t *s_make_mp3(size_t *len)
{
    if (access("/usr/bin/lame", X_OK) != 0) return NULL;
    size_t wl;
    uint8_t *wav = s_make_audio(SF_FORMAT_WAV | SF_FORMAT_PCM_16, "wav", &wl);
    if (!wav) return NULL;
    free(wav);
    char cmd[512], mp3[160];
    snprintf(mp3, sizeof mp3, "%s/sine.mp3", s_tmp());
    snprintf(cmd, sizeof cmd, "/usr/bin/lame --quiet -b 128 %s/sine.wav %s", s_tmp(), mp3);
    if (system(cmd) != 0) { fprintf(stderr, "lame failed\n"); return NULL; }
    return s_slurp(mp3, len);
}

static int s_check_probe(const uint8_t *data, size_t len, const char *mime)
{
    stream_probe_t p;
    char err[256];
    int rc = stream_probe(data, len, &p, err, sizeof err);
    if (rc != 0) { fprintf(stderr, "probe failed: %s\n", err); return 1; }
    fprintf(stderr, "%s: %lld ms, %d bit/s\n", p.mime, (long long) p.duration_ms, p.bitrate);
    CHECK(strcmp(p.mime, mime) == 0);
    CHECK(p.duration_ms >= 990 && p.duration_ms <= 1010);
    CHECK(p.bitrate > 0);
    return 0;
}

static int s_probe_wav(void)
{
    size_t len;
    uint8_t *d = s_make_audio(SF_FORMAT_WAV | SF_FORMAT_PCM_16, "wav", &len);
    CHECK(d);
    int rc = s_check_probe(d, len, "audio/wav");
    free(d);
    return rc;
}

static int s_probe_flac(void)
{
    size_t len;
    uint8_t *d = s_make_audio(SF_FORMAT_FLAC | SF_FORMAT_PCM_16, "flac", &len);
    CHECK(d);
    int rc = s_check_probe(d, len, "audio/flac");
    free(d);
    return rc;
}

static int s_probe_ogg(void)
{
    size_t len;
    uint8_t *d = s_make_audio(SF_FORMAT_OGG | SF_FORMAT_VORBIS, "ogg", &len);
    CHECK(d);
    int rc = s_check_probe(d, len, "audio/ogg");
    free(d);
    return rc;
}

static int s_probe_mp3(void)
{
    if (access("/usr/bin/lame", X_OK) != 0) {
        printf("probe_mp3: skipped: /usr/bin/lame is not installed\n");
        return 0;
    }
    size_t len;
    uint8_t *d = s_make_mp3(&len);
    CHECK(d);
    int rc = s_check_probe(d, len, "audio/mpeg");
    free(d);
    return rc;
}

static int s_expect_415(const uint8_t *d, size_t len, const char *what)
{
    stream_probe_t p;
    char err[256];
    if (stream_probe(d, len, &p, err, sizeof err) == 0) {
        fprintf(stderr, "%s (%zu bytes) was accepted as %s %lld ms\n", what, len, p.mime,
                (long long) p.duration_ms);
        return 1;
    }
    CHECK(strncmp(err, STREAM_PROBE_UNSUPPORTED, strlen(STREAM_PROBE_UNSUPPORTED)) == 0);
    return 0;
}

/* Random bytes, random bytes behind each magic, and truncated real files: all refused, no
 * crash (run it under ASan with -DQV_SANITIZE=ON for the "no crash" half to mean more). */
static int s_probe_junk(void)
{
    srand(7);
    static uint8_t buf[65536];
    static const struct { const char *magic; size_t len; } magics[] = {
        { "", 0 }, { "RIFF\x24\x08\x00\x00WAVEfmt ", 16 }, { "fLaC", 4 }, { "OggS", 4 },
        { "ID3\x03\x00\x00\x00\x00\x00\x10", 10 }, { "\xff\xfb\x90\x00", 4 }, { "\xff\xf3", 2 },
    };
    for (size_t m = 0; m < sizeof magics / sizeof magics[0]; m++) {
        for (int round = 0; round < 60; round++) {
            size_t len = (size_t) (rand() % 3 == 0 ? rand() % 64 : rand() % (int) sizeof buf);
            for (size_t i = 0; i < len; i++) buf[i] = (uint8_t) rand();
            if (len >= magics[m].len) memcpy(buf, magics[m].magic, magics[m].len);
            if (s_expect_415(buf, len, magics[m].len ? "magic + random bytes" : "random bytes"))
                return 1;
        }
    }
    /* Truncations. Every cut inside the first 256 bytes (headers) must be refused. WAV and
     * FLAC say how long they are, so any cut is refused. Ogg and MP3 carry no total length
     * a cut can contradict (a cut at a page or frame boundary is a valid shorter file), so
     * for those a mid-file cut need only not crash. */
    struct { int fmt; const char *ext; int strict; } kinds[] = {
        { SF_FORMAT_WAV | SF_FORMAT_PCM_16, "wav", 1 },
        { SF_FORMAT_FLAC | SF_FORMAT_PCM_16, "flac", 1 },
        { SF_FORMAT_OGG | SF_FORMAT_VORBIS, "ogg", 0 },
        { 0, "mp3", 0 },
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t len = 0;
        uint8_t *d = kinds[k].fmt ? s_make_audio(kinds[k].fmt, kinds[k].ext, &len) : s_make_mp3(&len);
        if (!d) { printf("truncation of %s skipped (cannot make one)\n", kinds[k].ext); continue; }
        for (size_t cut = 0; cut < 256 && cut < len; cut += 1)
            if (kinds[k].fmt && s_expect_415(d, cut, kinds[k].ext)) { free(d); return 1; }
        for (size_t cut = 256; cut < len; cut += len / 37) {
            stream_probe_t p;
            char err[256];
            int rc = stream_probe(d, cut, &p, err, sizeof err);
            if (kinds[k].strict && rc == 0) {
                fprintf(stderr, "%s cut at %zu of %zu accepted\n", kinds[k].ext, cut, len);
                free(d);
                return 1;
            }
        }
        /* Corrupt the middle: must not crash whatever the answer. */
        for (int r = 0; r < 20; r++) {
            uint8_t *c = malloc(len);
            memcpy(c, d, len);
            for (int i = 0; i < 64; i++) c[rand() % len] = (uint8_t) rand();
            stream_probe_t p;
            char err[256];
            (void) stream_probe(c, len, &p, err, sizeof err);
            free(c);
        }
        free(d);
    }
    return 0;
}

static int s_store_roundtrip(void)
{
    char dir[160];
    snprintf(dir, sizeof dir, "%s/store/a/b", s_tmp());
    stream_store_t *s = stream_store_new(dir);
    CHECK(s);
    CHECK(stream_store_count(s) == 0);
    static uint8_t data[300000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t) (i * 7 + i / 251);
    stream_meta_t meta = { "audio/wav", 1000, 128000 };
    char sha[65], sha2[65];
    bool existed = true;
    CHECK(stream_store_put(s, data, sizeof data, &meta, sha, &existed) == 0 && !existed);
    CHECK(stream_sha_valid(sha));
    CHECK(stream_store_put(s, data, sizeof data, &meta, sha2, &existed) == 0 && existed);
    CHECK(strcmp(sha, sha2) == 0);
    CHECK(stream_store_count(s) == 1);
    /* The file on disk is named by its hash and holds exactly the bytes. */
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, sha);
    size_t flen = 0;
    uint8_t *onfile = s_slurp(path, &flen);
    CHECK(onfile && flen == sizeof data && memcmp(onfile, data, flen) == 0);
    free(onfile);
    /* No temporary left behind. */
    DIR *d = opendir(dir);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d))) {
        CHECK(strncmp(de->d_name, ".tmp-", 5) != 0);
        if (de->d_name[0] != '.') files++;
    }
    closedir(d);
    CHECK(files == 2);   /* <sha> and <sha>.meta */
    /* Ranges. */
    static uint8_t buf[300000];
    stream_file_info_t fi;
    size_t got = 0;
    int64_t offs[] = { 0, 1, 4095, 4096, 150000, 299999 };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        CHECK(stream_store_read(s, sha, offs[i], 10000, buf, &got, &fi) == 0);
        size_t want = sizeof data - (size_t) offs[i] < 10000 ? sizeof data - (size_t) offs[i] : 10000;
        CHECK(got == want && memcmp(buf, data + offs[i], got) == 0);
        CHECK(fi.size == (int64_t) sizeof data && fi.has_meta);
        CHECK(strcmp(fi.meta.mime, "audio/wav") == 0 && fi.meta.duration_ms == 1000
              && fi.meta.bitrate == 128000);
    }
    CHECK(stream_store_read(s, sha, (int64_t) sizeof data, 10, buf, &got, &fi) == -3);
    char other[65];
    memset(other, 'a', 64); other[64] = 0;
    CHECK(stream_store_read(s, other, 0, 10, buf, &got, &fi) == -1);
    CHECK(stream_store_stat(s, sha, &fi) == 0 && fi.size == (int64_t) sizeof data);
    stream_store_destroy(&s);
    /* A new store over the same directory counts what is there. */
    s = stream_store_new(dir);
    CHECK(s && stream_store_count(s) == 1);
    stream_store_destroy(&s);
    return 0;
}

static int s_store_bad_sha(void)
{
    CHECK(!stream_sha_valid(NULL));
    CHECK(!stream_sha_valid(""));
    CHECK(!stream_sha_valid("../../etc/passwd"));
    char s[80];
    memset(s, 'a', 64); s[64] = 0;
    CHECK(stream_sha_valid(s));
    s[10] = 'A';
    CHECK(!stream_sha_valid(s));
    s[10] = '/';
    CHECK(!stream_sha_valid(s));
    s[10] = 'a'; s[64] = 'a'; s[65] = 0;
    CHECK(!stream_sha_valid(s));
    s[63] = 0;
    CHECK(!stream_sha_valid(s));
    char dir[160];
    snprintf(dir, sizeof dir, "%s/badsha", s_tmp());
    stream_store_t *st = stream_store_new(dir);
    CHECK(st);
    stream_file_info_t fi;
    CHECK(stream_store_stat(st, "../badsha", &fi) == -1);
    stream_store_destroy(&st);
    return 0;
}

/* ---- through the dispatcher ----------------------------------------------------------- */

static int s_call(const char *method, const ProtobufCMessage *req, void *app,
                  uint8_t **payload, size_t *plen, char *err, size_t errlen)
{
    size_t rl = protobuf_c_message_get_packed_size(req);
    uint8_t *rb = malloc(rl + 1);
    protobuf_c_message_pack(req, rb);
    Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
    call.method = (char *) method;
    call.payload.data = rb;
    call.payload.len = rl;
    size_t cl = quaver__v1__call__get_packed_size(&call);
    uint8_t *cb = malloc(cl + 1);
    quaver__v1__call__pack(&call, cb);
    uint8_t *out = NULL; size_t olen = 0;
    int status = -1;
    if (qv_dispatch("stream", stream_methods, app, NULL, cb, cl, &out, &olen) == 0) {
        Quaver__V1__Result *res = quaver__v1__result__unpack(NULL, olen, out);
        if (res) {
            status = res->status;
            snprintf(err, errlen, "%s", res->error ? res->error : "");
            if (payload) {
                *payload = malloc(res->payload.len + 1);
                if (res->payload.len) memcpy(*payload, res->payload.data, res->payload.len);
                *plen = res->payload.len;
            }
            quaver__v1__result__free_unpacked(res, NULL);
        }
    }
    free(out); free(cb); free(rb);
    return status;
}

static int s_server_put_read(void)
{
    char dir[160];
    snprintf(dir, sizeof dir, "%s/server", s_tmp());
    stream_cfg_t cfg = { 0 };
    cfg.instance = "selftest";
    cfg.storage_dir = dir;
    cfg.max_upload_bytes = 200000;
    cfg.read_chunk_max = 4096;
    stream_app_t *app = stream_app_new(&cfg);
    CHECK(app);
    char err[256];
    size_t len;
    uint8_t *wav = s_make_audio(SF_FORMAT_WAV | SF_FORMAT_PCM_16, "wav", &len);
    CHECK(wav && len < 200000);
    Quaver__V1__StreamPutRequest put = QUAVER__V1__STREAM_PUT_REQUEST__INIT;
    put.data.data = wav; put.data.len = len; put.filename = "evil.mp3";
    uint8_t *p = NULL; size_t pl = 0;
    CHECK(s_call("Put", &put.base, app, &p, &pl, err, sizeof err) == 201);
    Quaver__V1__AudioInfo *ai = quaver__v1__audio_info__unpack(NULL, pl, p);
    CHECK(ai && ai->size == (int64_t) len && strcmp(ai->mime_type, "audio/wav") == 0);
    CHECK(ai->duration_ms >= 990 && ai->duration_ms <= 1010);
    char sha[65];
    snprintf(sha, sizeof sha, "%s", ai->sha256);
    quaver__v1__audio_info__free_unpacked(ai, NULL); free(p);
    CHECK(s_call("Put", &put.base, app, NULL, NULL, err, sizeof err) == 201);  /* again: fine */
    /* Not audio: 415 and nothing stored. Too big: 413. */
    static uint8_t junk[300000];
    memset(junk, 'x', sizeof junk);
    put.data.data = junk; put.data.len = 5000;
    CHECK(s_call("Put", &put.base, app, NULL, NULL, err, sizeof err) == 415);
    CHECK(strstr(err, "not a supported audio file"));
    put.data.len = sizeof junk;
    CHECK(s_call("Put", &put.base, app, NULL, NULL, err, sizeof err) == 413);
    DIR *d = opendir(dir);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d))) if (de->d_name[0] != '.') files++;
    closedir(d);
    CHECK(files == 2);
    /* Read: whole file in chunks capped at read_chunk_max. */
    Quaver__V1__StreamReadRequest rd = QUAVER__V1__STREAM_READ_REQUEST__INIT;
    rd.sha256 = sha;
    size_t off = 0;
    while (off < len) {
        rd.offset = (int64_t) off; rd.length = 100000;
        CHECK(s_call("Read", &rd.base, app, &p, &pl, err, sizeof err) == 200);
        Quaver__V1__StreamReadReply *rr = quaver__v1__stream_read_reply__unpack(NULL, pl, p);
        CHECK(rr && rr->data.len > 0 && rr->data.len <= 4096);
        CHECK(memcmp(rr->data.data, wav + off, rr->data.len) == 0);
        CHECK(rr->info && rr->info->size == (int64_t) len);
        off += rr->data.len;
        quaver__v1__stream_read_reply__free_unpacked(rr, NULL); free(p);
    }
    CHECK(off == len);
    rd.offset = (int64_t) len;
    CHECK(s_call("Read", &rd.base, app, &p, &pl, err, sizeof err) == 416);
    char want[64];
    snprintf(want, sizeof want, "size %zu", len);
    CHECK(strstr(err, want));
    /* The 416 carries the info too, so a gateway can write Content-Range: bytes * / size. */
    Quaver__V1__StreamReadReply *r416 = quaver__v1__stream_read_reply__unpack(NULL, pl, p);
    CHECK(r416 && r416->info && r416->info->size == (int64_t) len && r416->data.len == 0);
    quaver__v1__stream_read_reply__free_unpacked(r416, NULL); free(p);
    rd.offset = -1;
    CHECK(s_call("Read", &rd.base, app, NULL, NULL, err, sizeof err) == 400);
    rd.offset = 0;
    rd.sha256 = "../../../../etc/passwd";
    CHECK(s_call("Read", &rd.base, app, NULL, NULL, err, sizeof err) == 400);
    char unknown[65];
    memset(unknown, '0', 64); unknown[64] = 0;
    rd.sha256 = unknown;
    CHECK(s_call("Read", &rd.base, app, NULL, NULL, err, sizeof err) == 404);
    Quaver__V1__StreamStatRequest st = QUAVER__V1__STREAM_STAT_REQUEST__INIT;
    st.sha256 = unknown;
    CHECK(s_call("Stat", &st.base, app, NULL, NULL, err, sizeof err) == 404);
    st.sha256 = "ABC";
    CHECK(s_call("Stat", &st.base, app, NULL, NULL, err, sizeof err) == 400);
    st.sha256 = sha;
    CHECK(s_call("Stat", &st.base, app, &p, &pl, err, sizeof err) == 200);
    ai = quaver__v1__audio_info__unpack(NULL, pl, p);
    CHECK(ai && strcmp(ai->mime_type, "audio/wav") == 0 && ai->bitrate > 0);
    quaver__v1__audio_info__free_unpacked(ai, NULL); free(p);
    /* A lost .meta is rebuilt by probing the file again. */
    char mp[300];
    snprintf(mp, sizeof mp, "%s/%s.meta", dir, sha);
    CHECK(unlink(mp) == 0);
    CHECK(s_call("Stat", &st.base, app, &p, &pl, err, sizeof err) == 200);
    ai = quaver__v1__audio_info__unpack(NULL, pl, p);
    CHECK(ai && strcmp(ai->mime_type, "audio/wav") == 0);
    quaver__v1__audio_info__free_unpacked(ai, NULL); free(p);
    CHECK(access(mp, F_OK) == 0);
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    CHECK(s_call("Health", &e.base, app, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__HealthReply *h = quaver__v1__health_reply__unpack(NULL, pl, p);
    CHECK(h && strcmp(h->status, "ok") == 0 && h->n_dependencies == 1
          && strcmp(h->dependencies[0]->state, "up") == 0);
    quaver__v1__health_reply__free_unpacked(h, NULL); free(p);
    free(wav);
    stream_app_destroy(&app);
    return 0;
}

static const qv_selftest_t s_tests[] = {
    { "probe_wav",       s_probe_wav },
    { "probe_flac",      s_probe_flac },
    { "probe_ogg",       s_probe_ogg },
    { "probe_mp3",       s_probe_mp3 },
    { "probe_junk",      s_probe_junk },
    { "store_roundtrip", s_store_roundtrip },
    { "store_bad_sha",   s_store_bad_sha },
    { "server_put_read", s_server_put_read },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    int rc = qv_selftest_run("stream_selftest", s_tests, argc, argv);
    if (s_tmpdir[0])
        s_rm_rf(s_tmpdir);
    return rc;
}
