/* stream_probe: see stream_probe.h for what it guarantees. */
#include "stream_probe.h"
#include <mpg123.h>
#include <sndfile.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* ---- memory I/O shared by both libraries ------------------------------------------------ */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
} s_mem_t;

static int64_t s_mem_seek(s_mem_t *m, int64_t off, int whence)
{
    int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? (int64_t) m->pos
                                                                : (int64_t) m->len;
    int64_t p = base + off;
    if (p < 0 || p > (int64_t) m->len) return -1;
    m->pos = (size_t) p;
    return p;
}

static size_t s_mem_read(s_mem_t *m, void *buf, size_t n)
{
    size_t left = m->len - m->pos;
    if (n > left) n = left;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return n;
}

/* ---- MP3 ------------------------------------------------------------------------------- */

static ssize_t s_mpg_read(void *h, void *buf, size_t n) { return (ssize_t) s_mem_read(h, buf, n); }
static off_t s_mpg_seek(void *h, off_t off, int whence)
{
    return (off_t) s_mem_seek(h, (int64_t) off, whence);
}

static pthread_once_t s_mpg_once = PTHREAD_ONCE_INIT;
static void s_mpg_init(void) { (void) mpg123_init(); }

static int s_probe_mp3(const uint8_t *data, size_t len, stream_probe_t *out, char *err,
                       size_t errlen)
{
    pthread_once(&s_mpg_once, s_mpg_init);
    int rc = -1, e = MPG123_OK;
    mpg123_handle *mh = mpg123_new(NULL, &e);
    if (!mh) {
        snprintf(err, errlen, "%s: decoder unavailable", STREAM_PROBE_UNSUPPORTED);
        return -1;
    }
    s_mem_t mem = { data, len, 0 };
    mpg123_param(mh, MPG123_ADD_FLAGS, MPG123_QUIET, 0);
    /* No gapless/Frankenstein guessing: the length should be what the frames say. */
    mpg123_param(mh, MPG123_ADD_FLAGS, MPG123_NO_FRANKENSTEIN, 0);
    long rate = 0;
    int ch = 0, enc = 0;
    if (mpg123_replace_reader_handle(mh, s_mpg_read, s_mpg_seek, NULL) != MPG123_OK
        || mpg123_open_handle(mh, &mem) != MPG123_OK
        || mpg123_getformat(mh, &rate, &ch, &enc) != MPG123_OK || rate <= 0) {
        snprintf(err, errlen, "%s: no MPEG audio frame found", STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    if (mpg123_scan(mh) != MPG123_OK) {
        snprintf(err, errlen, "%s: MPEG stream does not scan", STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    off_t samples = mpg123_length(mh);
    off_t frames = mpg123_framelength(mh);
    if (samples <= 0 || frames <= 0) {
        snprintf(err, errlen, "%s: MPEG stream holds no audio", STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    struct mpg123_frameinfo fi;
    memset(&fi, 0, sizeof fi);
    (void) mpg123_info(mh, &fi);
    /* A byte sequence that only looks like an MPEG header now and then is not an MP3: the
     * frames must cover most of the file (tags and a little junk aside). */
    if (fi.framesize > 0 && (double) frames * (fi.framesize + 4) < 0.25 * (double) len
        && fi.vbr == MPG123_CBR) {
        snprintf(err, errlen, "%s: MPEG frames cover too little of the file",
                 STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    out->duration_ms = (int64_t) samples * 1000 / rate;
    if (out->duration_ms <= 0) {
        snprintf(err, errlen, "%s: MPEG stream is shorter than 1 ms", STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    if (fi.vbr == MPG123_CBR && fi.bitrate > 0) out->bitrate = fi.bitrate * 1000;
    else out->bitrate = (int32_t) ((double) len * 8 * 1000 / (double) out->duration_ms);
    snprintf(out->mime, sizeof out->mime, "audio/mpeg");
    rc = 0;
done:
    mpg123_close(mh);
    mpg123_delete(mh);
    return rc;
}

/* ---- WAV / FLAC / Ogg ------------------------------------------------------------------ */

static sf_count_t s_sf_len(void *u) { return (sf_count_t) ((s_mem_t *) u)->len; }
static sf_count_t s_sf_seek(sf_count_t off, int whence, void *u)
{
    return (sf_count_t) s_mem_seek(u, off, whence);
}
static sf_count_t s_sf_read(void *ptr, sf_count_t n, void *u)
{
    return n < 0 ? 0 : (sf_count_t) s_mem_read(u, ptr, (size_t) n);
}
static sf_count_t s_sf_write(const void *p, sf_count_t n, void *u)
{
    (void) p; (void) n; (void) u;
    return 0;   /* read-only: the probe never writes */
}
static sf_count_t s_sf_tell(void *u) { return (sf_count_t) ((s_mem_t *) u)->pos; }

static uint32_t s_le32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

/* libsndfile quietly shortens a WAV whose data chunk runs past the end of the file; an upload
 * cut short must be refused instead, so check the chunk sizes ourselves. */
static int s_wav_complete(const uint8_t *d, size_t len)
{
    size_t p = 12;
    while (p + 8 <= len) {
        uint32_t sz = s_le32(d + p + 4);
        if (memcmp(d + p, "data", 4) == 0)
            return sz == 0xFFFFFFFFu || (uint64_t) p + 8 + sz <= len;  /* ~0: unknown length */
        p += 8 + (size_t) sz + (sz & 1);
    }
    return 0;   /* no data chunk at all */
}

/* libsndfile 1.2 leaks the Vorbis decoder state (~6 KB) when an Ogg stream ends or breaks
 * inside its header packets, so such uploads must not reach it: walk the pages ourselves,
 * checking each CRC, until a complete page with a positive granule position (audio, which
 * only follows the headers) is found. */
static uint32_t s_ogg_table[256];
static void s_ogg_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i << 24;
        for (int k = 0; k < 8; k++) r = r & 0x80000000u ? (r << 1) ^ 0x04c11db7u : r << 1;
        s_ogg_table[i] = r;
    }
}

static uint32_t s_ogg_crc(const uint8_t *p, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, s_ogg_crc_init);
    uint32_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        /* The checksum field itself (bytes 22..25) counts as zero. */
        uint8_t b = i >= 22 && i < 26 ? 0 : p[i];
        crc = (crc << 8) ^ s_ogg_table[((crc >> 24) & 0xff) ^ b];
    }
    return crc;
}

static int s_ogg_headers_ok(const uint8_t *d, size_t len)
{
    size_t p = 0;
    while (p + 27 <= len) {
        if (memcmp(d + p, "OggS", 4) != 0 || d[p + 4] != 0) return 0;
        size_t nseg = d[p + 26];
        if (p + 27 + nseg > len) return 0;
        size_t body = 0;
        for (size_t i = 0; i < nseg; i++) body += d[p + 27 + i];
        size_t plen = 27 + nseg + body;
        if (p + plen > len) return 0;
        if (s_ogg_crc(d + p, plen) != s_le32(d + p + 22)) return 0;
        int64_t granule = 0;
        for (int i = 7; i >= 0; i--) granule = (int64_t) ((uint64_t) granule << 8 | d[p + 6 + i]);
        if (granule > 0) return 1;
        p += plen;
    }
    return 0;
}

static int s_probe_sndfile(const uint8_t *data, size_t len, int want_major, const char *mime,
                           stream_probe_t *out, char *err, size_t errlen)
{
    SF_VIRTUAL_IO vio = { s_sf_len, s_sf_seek, s_sf_read, s_sf_write, s_sf_tell };
    s_mem_t mem = { data, len, 0 };
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *sf = sf_open_virtual(&vio, SFM_READ, &info, &mem);
    if (!sf) {
        snprintf(err, errlen, "%s: %s", STREAM_PROBE_UNSUPPORTED, sf_strerror(NULL));
        return -1;
    }
    int rc = -1;
    if ((info.format & SF_FORMAT_TYPEMASK) != want_major || info.samplerate <= 0
        || info.channels <= 0 || info.channels > 64 || info.frames <= 0) {
        snprintf(err, errlen, "%s: no audio frames", STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    /* Decode everything: a file whose header promises more than its body holds is refused. */
    enum { CHUNK = 4096 };
    float *buf = malloc(sizeof(float) * CHUNK * (size_t) info.channels);
    if (!buf) { snprintf(err, errlen, "out of memory"); goto done; }
    sf_count_t got = 0, n;
    while ((n = sf_readf_float(sf, buf, CHUNK)) > 0) got += n;
    free(buf);
    if (got != info.frames || sf_error(sf) != SF_ERR_NO_ERROR) {
        snprintf(err, errlen, "%s: truncated or corrupt (%lld of %lld frames decode)",
                 STREAM_PROBE_UNSUPPORTED, (long long) got, (long long) info.frames);
        goto done;
    }
    out->duration_ms = (int64_t) info.frames * 1000 / info.samplerate;
    if (out->duration_ms <= 0) {
        snprintf(err, errlen, "%s: shorter than 1 ms", STREAM_PROBE_UNSUPPORTED);
        goto done;
    }
    out->bitrate = (int32_t) ((double) len * 8 * 1000 / (double) out->duration_ms);
    snprintf(out->mime, sizeof out->mime, "%s", mime);
    rc = 0;
done:
    sf_close(sf);
    return rc;
}

int stream_probe(const uint8_t *data, size_t len, stream_probe_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len < 12) {
        snprintf(err, errlen, "%s: too short", STREAM_PROBE_UNSUPPORTED);
        return -1;
    }
    if (memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WAVE", 4) == 0) {
        if (!s_wav_complete(data, len)) {
            snprintf(err, errlen, "%s: WAV data chunk missing or truncated",
                     STREAM_PROBE_UNSUPPORTED);
            return -1;
        }
        return s_probe_sndfile(data, len, SF_FORMAT_WAV, "audio/wav", out, err, errlen);
    }
    if (memcmp(data, "fLaC", 4) == 0)
        return s_probe_sndfile(data, len, SF_FORMAT_FLAC, "audio/flac", out, err, errlen);
    if (memcmp(data, "OggS", 4) == 0) {
        if (!s_ogg_headers_ok(data, len)) {
            snprintf(err, errlen, "%s: Ogg pages broken or headers incomplete",
                     STREAM_PROBE_UNSUPPORTED);
            return -1;
        }
        return s_probe_sndfile(data, len, SF_FORMAT_OGG, "audio/ogg", out, err, errlen);
    }
    if (memcmp(data, "ID3", 3) == 0 || (data[0] == 0xFF && (data[1] & 0xE0) == 0xE0))
        return s_probe_mp3(data, len, out, err, errlen);
    snprintf(err, errlen, "%s", STREAM_PROBE_UNSUPPORTED);
    return -1;
}
