/* gw_multipart: finds the one file part of a multipart/form-data body held in memory.
 * Decision: our own small parser over the already-bounded body rather than civetweb's
 * mg_handle_form_request, because the body has to be in memory anyway (stream Put takes the
 * file in one message), and a parser over a buffer with an explicit length is easy to test and
 * cannot be led past the buffer. Lengths in the body are never trusted: part boundaries are
 * found by searching for the delimiter, and Content-Length headers inside parts are ignored.
 * The result points into the caller's buffer (borrowed, valid while the buffer lives). */
#ifndef GW_MULTIPART_H
#define GW_MULTIPART_H
#include <stddef.h>

typedef struct {
    const char *data;            /* the file's bytes, inside the body */
    size_t      len;
    char        filename[256];   /* from Content-Disposition filename="..." ("" if none) */
    char        content_type[128]; /* the part's Content-Type ("" if none) */
} gw_part_t;

/* content_type: the request's Content-Type header (with boundary=...).
 * Returns 0 and fills *out; or -1 with a client-facing reason in err (400-worthy): no or bad
 * boundary, truncated body, no file part, more than one file part. */
int gw_multipart_file(const char *content_type, const char *body, size_t len, gw_part_t *out,
                      char *err, size_t errlen);
/* Copies the boundary parameter of a multipart Content-Type into buf (1..70 chars). 0 or -1. */
int gw_multipart_boundary(const char *content_type, char *buf, size_t len);
#endif
