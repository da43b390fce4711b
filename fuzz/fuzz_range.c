/* fuzz_range: the request headers the gateway parses by hand, on arbitrary text:
 * gw_range_parse (Range, with arbitrary sizes) and gw_gzip_accepted (Accept-Encoding).
 * Input: 8 bytes of representation size (made >= 0), then the header text.
 * Checks what the header promises: GW_RANGE_OK means 0 <= first <= last < size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gw_range.h"
#include "gw_gzip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t rsize = 0;
    if (size >= 8) {
        uint64_t u;
        memcpy(&u, data, 8);
        /* Mostly small files, sometimes huge ones, never negative. */
        rsize = (u & 1) ? (int64_t) (u >> 1) : (int64_t) ((u >> 1) % 100000);
        data += 8;
        size -= 8;
    }
    char *hdr = malloc(size + 1);
    if (!hdr)
        return 0;
    memcpy(hdr, data, size);
    hdr[size] = '\0';
    int64_t first = -7, last = -7;
    gw_range_t r = gw_range_parse(hdr, rsize, &first, &last);
    if (r == GW_RANGE_OK && !(first >= 0 && first <= last && last < rsize))
        abort();
    (void) gw_range_parse(NULL, rsize, &first, &last);
    (void) gw_gzip_accepted(hdr);
    free(hdr);
    return 0;
}
