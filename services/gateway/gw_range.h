/* gw_range: the HTTP Range header (RFC 7233), one byte range at most.
 * Decisions: a malformed header is ignored (RFC 7233 section 3.1 lets a server ignore Range),
 * so the client gets 200 and the whole file rather than an error; several ranges are also
 * answered with the whole file (200), which the RFC allows and which spares us
 * multipart/byteranges. Pure function of its input: no allocation, no assert. */
#ifndef GW_RANGE_H
#define GW_RANGE_H
#include <stdint.h>

typedef enum {
    GW_RANGE_NONE = 0,   /* no header, or one we ignore (malformed, not "bytes") -> 200 */
    GW_RANGE_OK,         /* one satisfiable range [*first, *last] -> 206 */
    GW_RANGE_MULTI,      /* several ranges -> 200 with the whole file */
    GW_RANGE_UNSAT,      /* well-formed but outside the file -> 416, Content-Range: bytes * / size */
} gw_range_t;

/* header may be NULL. size is the representation's length (>= 0). */
gw_range_t gw_range_parse(const char *header, int64_t size, int64_t *first, int64_t *last);
#endif
