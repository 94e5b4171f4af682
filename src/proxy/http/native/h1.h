// SPDX-License-Identifier: Apache-2.0
/*
 * HTTP/1.x message heads and body framing (RFC 9112), strict, for the native HTTP proxy
 * (hypha-http-proxy). Strict means what llhttp (node:http's parser) does without lenient
 * flags: CRLF line ends only, no whitespace before a header's colon, no obs-fold, no
 * control characters, a token method, HTTP/1.0 or HTTP/1.1 only, a Content-Length of
 * digits only and at most once, no Content-Length with Transfer-Encoding (request
 * smuggling), a request's Transfer-Encoding ending in chunked. Anything else is H1_BAD
 * (answer 400); a head larger than the limit, or with more fields than H1_MAX_FIELDS, is
 * H1_TOO_BIG (answer 431).
 *
 * Parsing never copies: fields are offsets into the caller's buffer.
 */
#ifndef HYPHA_H1_H
#define HYPHA_H1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum h1_result {
	H1_DONE = 0,     /* a whole head was parsed: head_len bytes */
	H1_PARTIAL = 1,  /* more bytes needed (and the limit is not reached yet) */
	H1_BAD = -1,     /* malformed: 400 */
	H1_TOO_BIG = -2, /* over the size limit or H1_MAX_FIELDS: 431 */
};

#define H1_MAX_FIELDS 128

/* A slice of the buffer the head was parsed from. */
struct h1_slice {
	uint32_t off;
	uint32_t len;
};

struct h1_field {
	struct h1_slice name;  /* as received (compare case-insensitively) */
	struct h1_slice value; /* leading and trailing whitespace removed */
};

/* Connection, Content-Length and Transfer-Encoding as they decide framing and reuse. */
struct h1_framing {
	int chunked;            /* Transfer-Encoding present and its last coding is chunked */
	int other_encoding;     /* Transfer-Encoding present, last coding not chunked (responses: read to EOF) */
	int64_t content_length; /* -1: no Content-Length */
	int conn_close;         /* Connection lists close */
	int conn_keep_alive;    /* Connection lists keep-alive */
	int conn_upgrade;       /* Connection lists upgrade */
};

struct h1_request {
	struct h1_slice method;
	struct h1_slice target; /* request-target as sent */
	int minor;              /* HTTP/1.<minor>: 0 or 1 */
	uint32_t head_len;      /* bytes of the head, through the blank line */
	uint32_t nfields;
	struct h1_field fields[H1_MAX_FIELDS];
	struct h1_framing framing;
	int has_host;           /* a Host field is present */
	int keep_alive;         /* 1.1 without close, or 1.0 with keep-alive */
	int upgrade;            /* an Upgrade field and Connection: upgrade */
};

struct h1_response {
	int status;             /* 100..999 */
	int minor;
	uint32_t head_len;
	uint32_t nfields;
	struct h1_field fields[H1_MAX_FIELDS];
	struct h1_framing framing;
	int keep_alive;
};

/*
 * Parses the request head at the start of buf[0..len). max_head bounds the head's size
 * (a head not complete within max_head bytes is H1_TOO_BIG). On H1_BAD/H1_TOO_BIG, *why
 * (if not NULL) names the problem, e.g. "Content-Length with Transfer-Encoding".
 */
int h1_parse_request(const char *buf, size_t len, size_t max_head, struct h1_request *r, const char **why);

/* The same for a response head ("HTTP/1.x 200 OK"; the reason phrase may be empty or absent). */
int h1_parse_response(const char *buf, size_t len, size_t max_head, struct h1_response *r, const char **why);

/* A message body's framing, fed the bytes after the head as they arrive. */
enum h1_body_kind {
	H1_BODY_NONE = 0,    /* no body: the message ended with its head */
	H1_BODY_LENGTH = 1,  /* Content-Length bytes */
	H1_BODY_CHUNKED = 2, /* chunked, through the last chunk and the trailer section */
	H1_BODY_EOF = 3,     /* (responses only) everything until the connection closes */
};

struct h1_body {
	enum h1_body_kind kind;
	uint64_t remaining; /* LENGTH: bytes left; CHUNKED: bytes left of the current chunk's data */
	int state;          /* CHUNKED: where in the chunk syntax (private) */
	uint32_t line;      /* CHUNKED: length of the size/trailer line so far (bounded) */
};

/* Request bodies: chunked, Content-Length, or none (RFC 9112 §6.3). */
void h1_body_request(struct h1_body *b, const struct h1_request *r);

/*
 * Response bodies: none for a response to HEAD, 1xx, 204 and 304; then chunked,
 * Content-Length, or until EOF.
 */
void h1_body_response(struct h1_body *b, const struct h1_response *r, int to_head_request);

/*
 * Consumes the prefix of buf[0..len) that belongs to the message and returns its length
 * (0..len); *done is set to 1 when the message ended within it (the bytes after it
 * belong to the next message). Returns -1 on a framing error (bad chunk size, missing
 * CRLF, an oversized chunk line), with *why set. H1_BODY_EOF never ends by itself:
 * the caller ends it when the connection closes.
 */
ssize_t h1_body_feed(struct h1_body *b, const char *buf, size_t len, int *done, const char **why);

#endif
