/* fuzz_multipart: gw_multipart_file over an arbitrary body and Content-Type.
 * Input: the Content-Type header up to the first '\n' (at most 512 bytes), then the body.
 * Checks the header's promise: a found part lies inside the body, and the names are
 * NUL-terminated within their buffers. The body is copied into an exact-size heap buffer so
 * ASan catches a read one past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gw_multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size < 512 ? size : 512);
    size_t ctlen = nl ? (size_t) (nl - data) : 0;
    char ct[520];
    memcpy(ct, data, ctlen);
    ct[ctlen] = '\0';
    const uint8_t *b = nl ? nl + 1 : data;
    size_t blen = size - (size_t) (b - data);
    char *body = malloc(blen ? blen : 1);
    if (!body)
        return 0;
    memcpy(body, b, blen);

    gw_part_t part;
    char err[128];
    if (gw_multipart_file(ct, body, blen, &part, err, sizeof err) == 0) {
        if (part.data < body || part.len > blen || part.data + part.len > body + blen)
            abort();
        if (!memchr(part.filename, '\0', sizeof part.filename)
            || !memchr(part.content_type, '\0', sizeof part.content_type))
            abort();
    }
    else if (!memchr(err, '\0', sizeof err))
        abort();
    char bnd[80];
    if (gw_multipart_boundary(ct, bnd, sizeof bnd) == 0) {
        size_t n = strnlen(bnd, sizeof bnd);
        if (n < 1 || n > 70)
            abort();
    }
    free(body);
    return 0;
}
