// SPDX-License-Identifier: Apache-2.0
/*
 * Strict HTTP/1.x heads and body framing (see h1.h for the rules).
 *
 * A head is parsed in one forward pass that validates every byte as it goes, so a
 * malformed prefix is rejected as soon as it is seen, even before the head is complete,
 * and a caller that reparses from the start on each new read stays linear per call.
 * Framing fields (Content-Length, Transfer-Encoding, Connection) are interpreted as
 * each field line completes for the same reason.
 */
#include "h1.h"

/* Byte classes (RFC 9110 §5.6.2, §5.5; RFC 9112 §3.2). */
#define C_TCHAR 0x01  /* token character */
#define C_VALUE 0x02  /* field value / reason phrase: VCHAR, obs-text, SP, HTAB */
#define C_TARGET 0x04 /* request-target: anything but SP and CTL */
#define C_HEX 0x08

#define C_TVG (C_TCHAR | C_VALUE | C_TARGET)
#define C_VG (C_VALUE | C_TARGET)

static const uint8_t h1_class[256] = {
	['\t'] = C_VALUE,
	[' '] = C_VALUE,
	['!'] = C_TVG,
	['"'] = C_VG,
	['#' ... '\''] = C_TVG,
	['(' ... ')'] = C_VG,
	['*' ... '+'] = C_TVG,
	[','] = C_VG,
	['-' ... '.'] = C_TVG,
	['/'] = C_VG,
	['0' ... '9'] = C_TVG | C_HEX,
	[':' ... '@'] = C_VG,
	['A' ... 'F'] = C_TVG | C_HEX,
	['G' ... 'Z'] = C_TVG,
	['[' ... ']'] = C_VG,
	['^' ... '`'] = C_TVG,
	['a' ... 'f'] = C_TVG | C_HEX,
	['g' ... 'z'] = C_TVG,
	['{'] = C_VG,
	['|'] = C_TVG,
	['}'] = C_VG,
	['~'] = C_TVG,
	[0x80 ... 0xff] = C_VG,
};

/* The longest chunk-size line (with extensions) or trailer line a peer may send. */
#define H1_CHUNK_LINE_MAX 4096

/* ---- cursor over the head ------------------------------------------------ */

struct h1_cursor {
	const unsigned char *p;
	size_t pos;
	size_t end;  /* what may belong to the head: min(len, max_head) */
	int limited; /* end is max_head: running out of bytes means the head is too big */
	const char *why;
};

static void cursor_init(struct h1_cursor *c, const char *buf, size_t len, size_t max_head)
{
	/* Offsets are 32-bit. */
	if (max_head > UINT32_MAX)
		max_head = UINT32_MAX;
	c->p = (const unsigned char *)buf;
	c->pos = 0;
	c->end = len < max_head ? len : max_head;
	c->limited = len >= max_head;
	c->why = NULL;
}

static int bad(struct h1_cursor *c, const char *why)
{
	c->why = why;
	return H1_BAD;
}

/* Rejects the byte at the cursor, naming a bare LF as such since it is the usual cause. */
static int bad_byte(struct h1_cursor *c, const char *why)
{
	return bad(c, c->p[c->pos] == '\n' ? "bare LF" : why);
}

static int is_ws(unsigned char ch)
{
	return ch == ' ' || ch == '\t';
}

static int expect_byte(struct h1_cursor *c, unsigned char want, const char *why)
{
	if (c->pos == c->end)
		return H1_PARTIAL;
	if (c->p[c->pos] != want)
		return bad_byte(c, why);
	c->pos++;
	return H1_DONE;
}

static int expect_crlf(struct h1_cursor *c, const char *why)
{
	int rc = expect_byte(c, '\r', why);

	return rc ? rc : expect_byte(c, '\n', "bare CR");
}

/* A run of 1+ bytes of class cls, ended by stop (consumed, not part of the run). */
static int scan_run(struct h1_cursor *c, uint8_t cls, unsigned char stop, struct h1_slice *s,
		    const char *why)
{
	size_t start = c->pos;

	while (c->pos < c->end && (h1_class[c->p[c->pos]] & cls))
		c->pos++;
	if (c->pos == c->end)
		return H1_PARTIAL;
	if (c->p[c->pos] != stop || c->pos == start)
		return bad_byte(c, why);
	s->off = (uint32_t)start;
	s->len = (uint32_t)(c->pos - start);
	c->pos++;
	return H1_DONE;
}

/* RFC 9112 §2.2: empty lines before the start line are tolerated. */
static int skip_empty_lines(struct h1_cursor *c)
{
	int rc;

	while (c->pos < c->end && c->p[c->pos] == '\r') {
		rc = expect_crlf(c, "bad start line");
		if (rc)
			return rc;
	}
	return H1_DONE;
}

/* "HTTP/1.0" or "HTTP/1.1", compared as it arrives so a wrong prefix fails early. */
static int parse_version(struct h1_cursor *c, int *minor)
{
	static const char prefix[] = "HTTP/1.";
	size_t i;
	unsigned char ch;
	int rc;

	for (i = 0; i < sizeof(prefix) - 1; i++) {
		rc = expect_byte(c, (unsigned char)prefix[i], "bad HTTP version");
		if (rc)
			return rc;
	}
	if (c->pos == c->end)
		return H1_PARTIAL;
	ch = c->p[c->pos];
	if (ch != '0' && ch != '1')
		return bad_byte(c, "bad HTTP version");
	*minor = ch - '0';
	c->pos++;
	return H1_DONE;
}

/* Field value after the colon: OWS removed on both sides, CRLF consumed. */
static int parse_value(struct h1_cursor *c, struct h1_slice *v)
{
	const unsigned char *p = c->p;
	size_t i = c->pos, start, last;

	while (i < c->end && is_ws(p[i]))
		i++;
	start = last = i;
	for (; i < c->end && (h1_class[p[i]] & C_VALUE); i++) {
		if (!is_ws(p[i]))
			last = i + 1;
	}
	c->pos = i;
	v->off = (uint32_t)start;
	v->len = (uint32_t)(last - start);
	return expect_crlf(c, "bad header value");
}

/* ---- framing fields ------------------------------------------------------ */

struct h1_head {
	const unsigned char *p;
	int is_request;
	int minor;
	struct h1_field *fields;
	uint32_t *nfields;
	struct h1_framing *framing;
	int has_cl;
	int has_te;
	int has_host;
	int has_upgrade;
};

static unsigned char lower(unsigned char ch)
{
	return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch;
}

/* Case-insensitive comparison with a lowercase literal. */
static int slice_is(const unsigned char *p, size_t off, size_t len, const char *lit)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (lit[i] == '\0' || lower(p[off + i]) != (unsigned char)lit[i])
			return 0;
	}
	return lit[len] == '\0';
}

/*
 * The next non-empty element of a comma-separated list in p[*pos..end), without the
 * whitespace around it (RFC 9110 §5.6.1: empty elements are ignored).
 */
static int list_next(const unsigned char *p, size_t *pos, size_t end, size_t *off, size_t *len)
{
	size_t i = *pos, last;

	while (i < end && (p[i] == ',' || is_ws(p[i])))
		i++;
	if (i == end) {
		*pos = i;
		return 0;
	}
	*off = last = i;
	for (; i < end && p[i] != ','; i++) {
		if (!is_ws(p[i]))
			last = i + 1;
	}
	*len = last - *off;
	*pos = i;
	return 1;
}

static int apply_content_length(struct h1_cursor *c, struct h1_head *h, const struct h1_slice *v)
{
	const unsigned char *p = h->p + v->off;
	int64_t n = 0;
	uint32_t i;

	if (h->has_cl)
		return bad(c, "duplicate Content-Length");
	if (v->len == 0)
		return bad(c, "bad Content-Length");
	for (i = 0; i < v->len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return bad(c, "bad Content-Length");
		if (n > (INT64_MAX - (p[i] - '0')) / 10)
			return bad(c, "Content-Length too large");
		n = n * 10 + (p[i] - '0');
	}
	h->has_cl = 1;
	h->framing->content_length = n;
	return H1_DONE;
}

/* Several Transfer-Encoding fields form one list, in order (RFC 9110 §5.3). */
static int apply_transfer_encoding(struct h1_cursor *c, struct h1_head *h, const struct h1_slice *v)
{
	size_t pos = v->off, end = (size_t)v->off + v->len, off, len;

	/*
	 * RFC 9112 §6.1: chunked is applied once, and last. Like llhttp, nothing may follow
	 * it, not even an empty list element: a peer that reads "chunked," differently
	 * would frame the body differently.
	 */
	h->has_te = 1;
	if (h->framing->chunked && v->len)
		return bad(c, "chunked not last in Transfer-Encoding");
	while (list_next(h->p, &pos, end, &off, &len)) {
		if (!slice_is(h->p, off, len, "chunked"))
			continue;
		if (pos < end)
			return bad(c, "chunked not last in Transfer-Encoding");
		h->framing->chunked = 1;
	}
	return H1_DONE;
}

static void apply_connection(struct h1_head *h, const struct h1_slice *v)
{
	size_t pos = v->off, end = (size_t)v->off + v->len, off, len;

	while (list_next(h->p, &pos, end, &off, &len)) {
		if (slice_is(h->p, off, len, "close"))
			h->framing->conn_close = 1;
		else if (slice_is(h->p, off, len, "keep-alive"))
			h->framing->conn_keep_alive = 1;
		else if (slice_is(h->p, off, len, "upgrade"))
			h->framing->conn_upgrade = 1;
	}
}

/* Request smuggling defences (RFC 9112 §6.1, §6.3) that do not need the whole head. */
static int check_request_framing(struct h1_cursor *c, const struct h1_head *h)
{
	if (!h->is_request || !h->has_te)
		return H1_DONE;
	if (h->minor == 0)
		return bad(c, "Transfer-Encoding in HTTP/1.0");
	if (h->has_cl)
		return bad(c, "Content-Length with Transfer-Encoding");
	return H1_DONE;
}

static int apply_field(struct h1_cursor *c, struct h1_head *h, const struct h1_field *f)
{
	const unsigned char *p = h->p;
	int rc;

	switch (lower(p[f->name.off])) {
	case 'c':
		if (slice_is(p, f->name.off, f->name.len, "content-length")) {
			rc = apply_content_length(c, h, &f->value);
			return rc ? rc : check_request_framing(c, h);
		}
		if (slice_is(p, f->name.off, f->name.len, "connection"))
			apply_connection(h, &f->value);
		return H1_DONE;
	case 't':
		if (slice_is(p, f->name.off, f->name.len, "transfer-encoding")) {
			rc = apply_transfer_encoding(c, h, &f->value);
			return rc ? rc : check_request_framing(c, h);
		}
		return H1_DONE;
	case 'h':
		if (slice_is(p, f->name.off, f->name.len, "host"))
			h->has_host = 1;
		return H1_DONE;
	case 'u':
		if (slice_is(p, f->name.off, f->name.len, "upgrade"))
			h->has_upgrade = 1;
		return H1_DONE;
	}
	return H1_DONE;
}

/* Field lines up to and including the empty line that ends the head. */
static int parse_fields(struct h1_cursor *c, struct h1_head *h)
{
	struct h1_field *f;
	int rc;

	for (;;) {
		if (c->pos == c->end)
			return H1_PARTIAL;
		if (c->p[c->pos] == '\r')
			return expect_crlf(c, "bad header");
		/* obs-fold, or whitespace between the start line and the first field */
		if (is_ws(c->p[c->pos]))
			return bad(c, "obsolete line folding");
		if (*h->nfields == H1_MAX_FIELDS) {
			c->why = "too many header fields";
			return H1_TOO_BIG;
		}
		f = &h->fields[*h->nfields];
		rc = scan_run(c, C_TCHAR, ':', &f->name, "bad header name");
		if (!rc)
			rc = parse_value(c, &f->value);
		if (rc)
			return rc;
		(*h->nfields)++;
		rc = apply_field(c, h, f);
		if (rc)
			return rc;
	}
}

static void framing_init(struct h1_framing *fr)
{
	fr->chunked = 0;
	fr->other_encoding = 0;
	fr->content_length = -1;
	fr->conn_close = 0;
	fr->conn_keep_alive = 0;
	fr->conn_upgrade = 0;
}

static int keep_alive(int minor, const struct h1_framing *fr)
{
	if (fr->conn_close)
		return 0;
	return minor == 1 || fr->conn_keep_alive;
}

/* Parsing stopped for lack of bytes: more may come unless the limit is what stopped it. */
static int finish(struct h1_cursor *c, int rc, const char **why)
{
	if (rc == H1_PARTIAL && c->limited) {
		c->why = "head too large";
		rc = H1_TOO_BIG;
	}
	if (why && (rc == H1_BAD || rc == H1_TOO_BIG))
		*why = c->why;
	return rc;
}

/* ---- requests ------------------------------------------------------------ */

static int parse_request_line(struct h1_cursor *c, struct h1_request *r)
{
	int rc;

	rc = skip_empty_lines(c);
	if (!rc)
		rc = scan_run(c, C_TCHAR, ' ', &r->method, "bad method");
	if (!rc)
		rc = scan_run(c, C_TARGET, ' ', &r->target, "bad request target");
	if (!rc)
		rc = parse_version(c, &r->minor);
	if (!rc)
		rc = expect_crlf(c, "bad request line");
	return rc;
}

static void request_init(struct h1_request *r)
{
	r->method.off = r->method.len = 0;
	r->target.off = r->target.len = 0;
	r->minor = 0;
	r->head_len = 0;
	r->nfields = 0;
	framing_init(&r->framing);
	r->has_host = 0;
	r->keep_alive = 0;
	r->upgrade = 0;
}

int h1_parse_request(const char *buf, size_t len, size_t max_head, struct h1_request *r, const char **why)
{
	struct h1_cursor c;
	struct h1_head h = {
		.p = (const unsigned char *)buf,
		.is_request = 1,
		.fields = r->fields,
		.nfields = &r->nfields,
		.framing = &r->framing,
	};
	int rc;

	cursor_init(&c, buf, len, max_head);
	request_init(r);
	rc = parse_request_line(&c, r);
	h.minor = r->minor;
	if (!rc)
		rc = parse_fields(&c, &h);
	if (!rc) {
		r->framing.other_encoding = h.has_te && !r->framing.chunked;
		/* RFC 9112 §6.3: a request's length cannot be determined otherwise. */
		if (r->framing.other_encoding)
			rc = bad(&c, "Transfer-Encoding without chunked last");
	}
	if (!rc) {
		r->head_len = (uint32_t)c.pos;
		r->has_host = h.has_host;
		r->keep_alive = keep_alive(r->minor, &r->framing);
		r->upgrade = h.has_upgrade && r->framing.conn_upgrade;
	}
	return finish(&c, rc, why);
}

/* ---- responses ----------------------------------------------------------- */

/* Exactly three digits, 100..999. */
static int parse_status(struct h1_cursor *c, int *status)
{
	unsigned char ch;
	int i;

	*status = 0;
	for (i = 0; i < 3; i++) {
		if (c->pos == c->end)
			return H1_PARTIAL;
		ch = c->p[c->pos];
		if (ch < '0' || ch > '9' || (i == 0 && ch == '0'))
			return bad_byte(c, "bad status code");
		*status = *status * 10 + (ch - '0');
		c->pos++;
	}
	return H1_DONE;
}

/* The reason phrase, with its SP, is optional (RFC 9112 §4 allows it empty). */
static int parse_reason(struct h1_cursor *c)
{
	if (c->pos == c->end)
		return H1_PARTIAL;
	if (c->p[c->pos] == ' ') {
		c->pos++;
		while (c->pos < c->end && (h1_class[c->p[c->pos]] & C_VALUE))
			c->pos++;
	}
	return expect_crlf(c, "bad status line");
}

static int parse_status_line(struct h1_cursor *c, struct h1_response *r)
{
	int rc;

	rc = skip_empty_lines(c);
	if (!rc)
		rc = parse_version(c, &r->minor);
	if (!rc)
		rc = expect_byte(c, ' ', "bad status line");
	if (!rc)
		rc = parse_status(c, &r->status);
	if (!rc)
		rc = parse_reason(c);
	return rc;
}

static void response_init(struct h1_response *r)
{
	r->status = 0;
	r->minor = 0;
	r->head_len = 0;
	r->nfields = 0;
	framing_init(&r->framing);
	r->keep_alive = 0;
}

int h1_parse_response(const char *buf, size_t len, size_t max_head, struct h1_response *r, const char **why)
{
	struct h1_cursor c;
	struct h1_head h = {
		.p = (const unsigned char *)buf,
		.is_request = 0,
		.fields = r->fields,
		.nfields = &r->nfields,
		.framing = &r->framing,
	};
	int rc;

	cursor_init(&c, buf, len, max_head);
	response_init(r);
	rc = parse_status_line(&c, r);
	h.minor = r->minor;
	if (!rc)
		rc = parse_fields(&c, &h);
	if (!rc) {
		/* RFC 9112 §6.3: Transfer-Encoding overrides Content-Length in a response. */
		r->framing.other_encoding = h.has_te && !r->framing.chunked;
		r->head_len = (uint32_t)c.pos;
		r->keep_alive = keep_alive(r->minor, &r->framing);
	}
	return finish(&c, rc, why);
}

/* ---- bodies -------------------------------------------------------------- */

enum chunk_state {
	CH_SIZE = 0,     /* chunk-size digits */
	CH_EXT,          /* chunk extensions, up to CR */
	CH_SIZE_LF,      /* LF ending the size line */
	CH_DATA,         /* remaining bytes of chunk data */
	CH_DATA_CR,      /* CRLF after the data */
	CH_DATA_LF,
	CH_TRAILER,      /* start of a trailer line, or the final CRLF */
	CH_TRAILER_LINE, /* inside a trailer field line */
	CH_TRAILER_LF,
	CH_END_LF,       /* LF of the final CRLF */
	CH_DONE,
	CH_ERROR,
};

static void body_init(struct h1_body *b, enum h1_body_kind kind, uint64_t remaining)
{
	b->kind = kind;
	b->remaining = remaining;
	b->state = CH_SIZE;
	b->line = 0;
}

void h1_body_request(struct h1_body *b, const struct h1_request *r)
{
	if (r->framing.chunked)
		body_init(b, H1_BODY_CHUNKED, 0);
	else if (r->framing.content_length > 0)
		body_init(b, H1_BODY_LENGTH, (uint64_t)r->framing.content_length);
	else
		body_init(b, H1_BODY_NONE, 0);
}

void h1_body_response(struct h1_body *b, const struct h1_response *r, int to_head_request)
{
	const struct h1_framing *fr = &r->framing;

	if (to_head_request || r->status < 200 || r->status == 204 || r->status == 304)
		body_init(b, H1_BODY_NONE, 0);
	else if (fr->chunked)
		body_init(b, H1_BODY_CHUNKED, 0);
	else if (fr->other_encoding)
		body_init(b, H1_BODY_EOF, 0);
	else if (fr->content_length > 0)
		body_init(b, H1_BODY_LENGTH, (uint64_t)fr->content_length);
	else if (fr->content_length == 0)
		body_init(b, H1_BODY_NONE, 0);
	else
		body_init(b, H1_BODY_EOF, 0);
}

static int chunk_error(struct h1_body *b, const char **why, const char *msg)
{
	b->state = CH_ERROR;
	if (why)
		*why = msg;
	return -1;
}

/* One more byte of a size, extension or trailer line; bounded so a peer cannot stall us. */
static int chunk_line_grow(struct h1_body *b, const char **why)
{
	if (++b->line > H1_CHUNK_LINE_MAX)
		return chunk_error(b, why, "chunk line too long");
	return 0;
}

static int hex_value(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	return lower(ch) - 'a' + 10;
}

static int chunk_size_byte(struct h1_body *b, unsigned char ch, const char **why)
{
	uint64_t d;

	if (h1_class[ch] & C_HEX) {
		d = (uint64_t)hex_value(ch);
		if (b->remaining > ((uint64_t)INT64_MAX - d) / 16)
			return chunk_error(b, why, "chunk size too large");
		b->remaining = b->remaining * 16 + d;
		return chunk_line_grow(b, why);
	}
	/* RFC 9112 §7.1: at least one digit, then extensions or the line end; no spaces
	 * (llhttp's strict mode rejects them too). */
	if (b->line == 0 || (ch != ';' && ch != '\r'))
		return chunk_error(b, why, "bad chunk");
	b->state = ch == ';' ? CH_EXT : CH_SIZE_LF;
	return ch == ';' ? chunk_line_grow(b, why) : 0;
}

/* Extensions and trailers are not interpreted, only kept free of control bytes. */
static int is_ctl(unsigned char ch)
{
	return (ch < 0x20 && ch != '\t') || ch == 0x7f;
}

static int chunk_ext_byte(struct h1_body *b, unsigned char ch, const char **why)
{
	if (ch == '\r') {
		b->state = CH_SIZE_LF;
		return 0;
	}
	if (is_ctl(ch))
		return chunk_error(b, why, "bad chunk");
	return chunk_line_grow(b, why);
}

static int chunk_expect(struct h1_body *b, unsigned char ch, unsigned char want, int next,
			const char **why)
{
	if (ch != want)
		return chunk_error(b, why, "bad chunk");
	b->state = next;
	b->line = 0;
	return 0;
}

static int chunk_trailer_byte(struct h1_body *b, unsigned char ch, const char **why)
{
	if (ch == '\r') {
		b->state = b->state == CH_TRAILER ? CH_END_LF : CH_TRAILER_LF;
		return 0;
	}
	if (is_ctl(ch))
		return chunk_error(b, why, "bad chunk");
	b->state = CH_TRAILER_LINE;
	return chunk_line_grow(b, why);
}

/* Steps the chunk syntax over one byte outside chunk data. */
static int chunk_byte(struct h1_body *b, unsigned char ch, const char **why)
{
	switch (b->state) {
	case CH_SIZE:
		return chunk_size_byte(b, ch, why);
	case CH_EXT:
		return chunk_ext_byte(b, ch, why);
	case CH_SIZE_LF:
		/* the last chunk (size 0) is followed by the trailer section */
		return chunk_expect(b, ch, '\n', b->remaining ? CH_DATA : CH_TRAILER, why);
	case CH_DATA_CR:
		return chunk_expect(b, ch, '\r', CH_DATA_LF, why);
	case CH_DATA_LF:
		return chunk_expect(b, ch, '\n', CH_SIZE, why);
	case CH_TRAILER:
	case CH_TRAILER_LINE:
		return chunk_trailer_byte(b, ch, why);
	case CH_TRAILER_LF:
		return chunk_expect(b, ch, '\n', CH_TRAILER, why);
	case CH_END_LF:
		return chunk_expect(b, ch, '\n', CH_DONE, why);
	}
	return chunk_error(b, why, "bad chunk");
}

static ssize_t chunked_feed(struct h1_body *b, const unsigned char *p, size_t len, int *done,
			    const char **why)
{
	size_t i = 0, n;

	if (b->state == CH_ERROR)
		return chunk_error(b, why, "bad chunk");
	while (i < len && b->state != CH_DONE) {
		if (b->state == CH_DATA) {
			n = len - i < b->remaining ? len - i : (size_t)b->remaining;
			i += n;
			b->remaining -= n;
			if (b->remaining == 0)
				b->state = CH_DATA_CR;
			continue;
		}
		if (chunk_byte(b, p[i], why))
			return -1;
		i++;
	}
	*done = b->state == CH_DONE;
	return (ssize_t)i;
}

ssize_t h1_body_feed(struct h1_body *b, const char *buf, size_t len, int *done, const char **why)
{
	size_t n;

	*done = 0;
	switch (b->kind) {
	case H1_BODY_NONE:
		*done = 1;
		return 0;
	case H1_BODY_LENGTH:
		n = len < b->remaining ? len : (size_t)b->remaining;
		b->remaining -= n;
		*done = b->remaining == 0;
		return (ssize_t)n;
	case H1_BODY_CHUNKED:
		return chunked_feed(b, (const unsigned char *)buf, len, done, why);
	case H1_BODY_EOF:
		return (ssize_t)len;
	}
	if (why)
		*why = "bad body kind";
	return -1;
}
