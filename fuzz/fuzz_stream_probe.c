/* fuzz_stream_probe: stream_probe (libmpg123 / libsndfile over bytes in memory) on arbitrary
 * uploads. The data is in an exact-size heap buffer so a read past the upload is caught.
 * Checks the header's promise: on success a known mime and a non-negative duration. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "stream_probe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    stream_probe_t p;
    char err[256];
    if (stream_probe(buf, size, &p, err, sizeof err) == 0) {
        if (!memchr(p.mime, '\0', sizeof p.mime) || strncmp(p.mime, "audio/", 6) != 0
            || p.duration_ms < 0)
            abort();
    }
    else if (!memchr(err, '\0', sizeof err))
        abort();
    free(buf);
    return 0;
}
