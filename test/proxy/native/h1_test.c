// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of the strict HTTP/1.x parser (src/proxy/http/native/h1.c). Prints one line
 * per failed check and a summary; exits 1 if anything failed.
 */
#include "../../../src/proxy/http/native/h1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failures;

static int check(int ok, const char *file, int line, const char *expr)
{
	checks++;
	if (!ok) {
		failures++;
		printf("FAIL %s:%d: %s\n", file, line, expr);
	}
	return ok;
}

#define CHECK(expr) check(!!(expr), __FILE__, __LINE__, #expr)

/* Shows an input in a failure message with its control bytes escaped. */
static const char *shown(const char *s, size_t len)
{
	static char out[512];
	size_t o = 0, i;

	for (i = 0; i < len && o + 5 < sizeof(out); i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '\r')
			o += (size_t)sprintf(out + o, "\\r");
		else if (ch == '\n')
			o += (size_t)sprintf(out + o, "\\n");
		else if (ch < 0x20 || ch >= 0x7f)
			o += (size_t)sprintf(out + o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = '\0';
	return out;
}

#define MAX_HEAD 8192

static struct h1_request rq;
static struct h1_response rs;
static const char *buf; /* the input the slices of rq/rs point into */
static const char *why;

static int req_n(const char *s, size_t len)
{
	buf = s;
	why = NULL;
	return h1_parse_request(s, len, MAX_HEAD, &rq, &why);
}

static int req(const char *s)
{
	return req_n(s, strlen(s));
}

static int res(const char *s)
{
	buf = s;
	why = NULL;
	return h1_parse_response(s, strlen(s), MAX_HEAD, &rs, &why);
}

static int slice_is(struct h1_slice s, const char *want)
{
	return s.len == strlen(want) && memcmp(buf + s.off, want, s.len) == 0;
}

static int why_is(const char *want)
{
	return why && strcmp(why, want) == 0;
}

/* A check of one input against the expected result, naming the input when it fails. */
static void expect_at(int got, int want, const char *kind, const char *s, size_t len, int line)
{
	char expr[640];

	snprintf(expr, sizeof(expr), "%s \"%s\" -> %d (want %d, why %s)", kind, shown(s, len), got,
		 want, why ? why : "-");
	check(got == want, __FILE__, line, expr);
}

#define EXPECT_REQ(s, want) expect_at(req(s), (want), "request", (s), strlen(s), __LINE__)
#define EXPECT_RES(s, want) expect_at(res(s), (want), "response", (s), strlen(s), __LINE__)

/* ---- requests ------------------------------------------------------------ */

static void test_valid_requests(void)
{
	const char *get = "GET /index.html?q=1 HTTP/1.1\r\n"
			  "Host: example.com\r\n"
			  "X-Spaced:   some value \t \r\n"
			  "X-Empty:\r\n"
			  "X-Empty-Ws: \t \r\n"
			  "X-Tab:\ta\tb\r\n"
			  "X-Obs: \x80\xff\r\n"
			  "!#$%&'*+-.^_`|~09azAZ: tchars\r\n"
			  "\r\n";

	CHECK(req(get) == H1_DONE);
	CHECK(rq.head_len == strlen(get));
	CHECK(slice_is(rq.method, "GET"));
	CHECK(slice_is(rq.target, "/index.html?q=1"));
	CHECK(rq.minor == 1);
	CHECK(rq.nfields == 7);
	CHECK(slice_is(rq.fields[0].name, "Host"));
	CHECK(slice_is(rq.fields[0].value, "example.com"));
	CHECK(slice_is(rq.fields[1].value, "some value"));
	CHECK(slice_is(rq.fields[2].value, ""));
	CHECK(slice_is(rq.fields[3].value, ""));
	CHECK(slice_is(rq.fields[4].value, "a\tb"));
	CHECK(slice_is(rq.fields[5].value, "\x80\xff"));
	CHECK(slice_is(rq.fields[6].name, "!#$%&'*+-.^_`|~09azAZ"));
	CHECK(rq.has_host == 1);
	CHECK(rq.keep_alive == 1);
	CHECK(rq.upgrade == 0);
	CHECK(rq.framing.content_length == -1);
	CHECK(rq.framing.chunked == 0);
	CHECK(rq.framing.other_encoding == 0);

	/* the head ends at the blank line; what follows is the body */
	CHECK(req("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") == H1_DONE);
	CHECK(rq.head_len == strlen("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\n"));
	CHECK(rq.framing.content_length == 3);

	/* no fields at all; unusual but valid methods and targets */
	CHECK(req("GET / HTTP/1.1\r\n\r\n") == H1_DONE);
	CHECK(rq.nfields == 0 && rq.has_host == 0);
	CHECK(req("M-SEARCH * HTTP/1.1\r\n\r\n") == H1_DONE);
	CHECK(slice_is(rq.method, "M-SEARCH") && slice_is(rq.target, "*"));
	CHECK(req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") == H1_DONE);
	CHECK(slice_is(rq.target, "example.com:443"));
	CHECK(req("GET http://a.example/p HTTP/1.1\r\n\r\n") == H1_DONE);
	CHECK(req("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n") == H1_DONE);
	CHECK(slice_is(rq.target, "/caf\xc3\xa9"));

	/* leading empty lines are skipped but counted */
	CHECK(req("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == H1_DONE);
	CHECK(rq.head_len == strlen("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"));
	CHECK(rq.method.off == 4 && slice_is(rq.method, "GET"));
	CHECK(rq.has_host == 1);

	/* Host, case-insensitively */
	CHECK(req("GET / HTTP/1.1\r\nhOsT: a\r\n\r\n") == H1_DONE && rq.has_host == 1);
	CHECK(req("GET / HTTP/1.1\r\nX-Host: a\r\nHosts: b\r\n\r\n") == H1_DONE && rq.has_host == 0);
}

static void test_keep_alive(void)
{
	CHECK(req("GET / HTTP/1.1\r\n\r\n") == H1_DONE && rq.keep_alive == 1);
	CHECK(req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n") == H1_DONE);
	CHECK(rq.keep_alive == 0 && rq.framing.conn_close == 1);
	CHECK(req("GET / HTTP/1.1\r\nConnection: keep-alive, CLOSE\r\n\r\n") == H1_DONE);
	CHECK(rq.keep_alive == 0 && rq.framing.conn_keep_alive == 1 && rq.framing.conn_close == 1);
	CHECK(req("GET / HTTP/1.1\r\nConnection: foo\r\nConnection: Close\r\n\r\n") == H1_DONE);
	CHECK(rq.keep_alive == 0);
	CHECK(req("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n") == H1_DONE && rq.keep_alive == 1);
	CHECK(rq.framing.conn_close == 0);

	CHECK(req("GET / HTTP/1.0\r\n\r\n") == H1_DONE);
	CHECK(rq.minor == 0 && rq.keep_alive == 0);
	CHECK(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == H1_DONE && rq.keep_alive == 1);
	CHECK(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") == H1_DONE && rq.keep_alive == 1);
	CHECK(req("GET / HTTP/1.0\r\nConnection: ,, keep-alive ,\r\n\r\n") == H1_DONE);
	CHECK(rq.keep_alive == 1);
	CHECK(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n") == H1_DONE);
	CHECK(rq.keep_alive == 0);
	CHECK(req("GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n") == H1_DONE);
	CHECK(rq.keep_alive == 0);
}

static void test_upgrade(void)
{
	CHECK(req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") ==
	      H1_DONE);
	CHECK(rq.upgrade == 1 && rq.framing.conn_upgrade == 1 && rq.keep_alive == 1);
	CHECK(req("GET /ws HTTP/1.1\r\nupgrade: h2c\r\nconnection: keep-alive, upgrade\r\n\r\n") ==
	      H1_DONE);
	CHECK(rq.upgrade == 1);
	CHECK(req("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n") == H1_DONE);
	CHECK(rq.upgrade == 0 && rq.framing.conn_upgrade == 0);
	CHECK(req("GET /ws HTTP/1.1\r\nConnection: upgrade\r\n\r\n") == H1_DONE);
	CHECK(rq.upgrade == 0 && rq.framing.conn_upgrade == 1);
}

static void test_request_framing(void)
{
	CHECK(req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == H1_DONE);
	CHECK(rq.framing.content_length == 0);
	CHECK(req("POST / HTTP/1.1\r\ncontent-length: 00012\r\n\r\n") == H1_DONE);
	CHECK(rq.framing.content_length == 12);
	CHECK(req("POST / HTTP/1.1\r\nContent-Length:9223372036854775807 \r\n\r\n") == H1_DONE);
	CHECK(rq.framing.content_length == INT64_MAX);

	CHECK(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == H1_DONE);
	CHECK(rq.framing.chunked == 1 && rq.framing.other_encoding == 0);
	CHECK(req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip ,  CHUNKED\r\n\r\n") == H1_DONE);
	CHECK(rq.framing.chunked == 1);
	CHECK(req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n") ==
	      H1_DONE);
	CHECK(rq.framing.chunked == 1);
	CHECK(req("POST / HTTP/1.1\r\nTransfer-Encoding: , gzip,, chunked \r\n\r\n") == H1_DONE);
	CHECK(rq.framing.chunked == 1);
	CHECK(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n") == H1_DONE);
	CHECK(rq.framing.chunked == 1);
}

/* Every input here must be rejected as malformed. */
static void test_bad_requests(void)
{
	static const char *const bad[] = {
		/* request line */
		"GET  / HTTP/1.1\r\n\r\n",
		"GET /  HTTP/1.1\r\n\r\n",
		" GET / HTTP/1.1\r\n\r\n",
		"\tGET / HTTP/1.1\r\n\r\n",
		"GET\t/ HTTP/1.1\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",
		"G\x80T / HTTP/1.1\r\n\r\n",
		"GET\r\n\r\n",
		"GET /\r\n\r\n",
		"GET / \r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		"GET /\x01 HTTP/1.1\r\n\r\n",
		"GET /\x7f HTTP/1.1\r\n\r\n",
		"GET /a\tb HTTP/1.1\r\n\r\n",
		"GET / HTTP/2.0\r\n\r\n",
		"GET / HTTP/1.2\r\n\r\n",
		"GET / HTTP/0.9\r\n\r\n",
		"GET / http/1.1\r\n\r\n",
		"GET / HTTP/1.10\r\n\r\n",
		"GET / HTTP/1.\r\n\r\n",
		"GET / HTTP/11\r\n\r\n",
		"GET / HTTPS/1.1\r\n\r\n",
		/* line endings */
		"GET / HTTP/1.1\n\n",
		"GET / HTTP/1.1\r\n\n",
		"GET / HTTP/1.1\r\nHost: a\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\n",
		"GET / HTTP/1.1\r\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
		"\nGET / HTTP/1.1\r\n\r\n",
		"\r\rGET / HTTP/1.1\r\n\r\n",
		"\r\n\nGET / HTTP/1.1\r\n\r\n",
		/* field names */
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
		"GET / HTTP/1.1\r\n: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHo\x80st: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost\r\n\r\n",
		/* field values */
		"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
		"GET / HTTP/1.1\r\nX: \x1f\r\n\r\n",
		/* obs-fold, or whitespace before the first field */
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
		"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
		/* Content-Length */
		"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
		/* Transfer-Encoding */
		"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked ,\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked;a=b\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_REQ(bad[i], H1_BAD);
		CHECK(why != NULL);
	}

	/* the reasons a caller logs */
	CHECK(req("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n") == H1_BAD);
	CHECK(why_is("Content-Length with Transfer-Encoding"));
	CHECK(req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n") == H1_BAD);
	CHECK(why_is("Content-Length with Transfer-Encoding"));
	CHECK(req("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n") == H1_BAD);
	CHECK(why_is("duplicate Content-Length"));
	CHECK(req("GET / HTTP/1.1\nHost: a\r\n\r\n") == H1_BAD);
	CHECK(why_is("bare LF"));

	/* a NUL anywhere is malformed (strlen cannot carry these inputs) */
	{
		static const char nul_value[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
		static const char nul_target[] = "GET /\0 HTTP/1.1\r\n\r\n";
		static const char nul_name[] = "GET / HTTP/1.1\r\nX\0: a\r\n\r\n";

		CHECK(req_n(nul_value, sizeof(nul_value) - 1) == H1_BAD);
		CHECK(req_n(nul_target, sizeof(nul_target) - 1) == H1_BAD);
		CHECK(req_n(nul_name, sizeof(nul_name) - 1) == H1_BAD);
	}
}

/* Malformed bytes are rejected as soon as they arrive, before the head is complete. */
static void test_bad_early(void)
{
	static const struct {
		const char *s;
		size_t bad_from; /* prefixes at least this long are already malformed */
	} cases[] = {
		{ "GET  / HTTP/1.1\r\n\r\n", 5 },
		{ "GET / HTTP/2.0\r\n\r\n", 12 },
		{ "GET / HTTP/1.1\nHost: a\r\n\r\n", 15 },
		{ "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 21 },
		{ "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 23 },
		{ "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 55 },
		{ "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 64 },
	};
	size_t i, n;
	int rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (n = 0; n <= strlen(cases[i].s); n++) {
			rc = req_n(cases[i].s, n);
			expect_at(rc, n >= cases[i].bad_from ? H1_BAD : H1_PARTIAL, "request prefix", cases[i].s,
				  n, __LINE__);
		}
	}
}

/* Every proper prefix of a valid head is partial; the whole is done. */
static void test_partial(void)
{
	static const char *const heads[] = {
		"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-A:  v \r\nX-Empty:\r\n\r\n",
		"\r\n\r\nPOST / HTTP/1.0\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n",
		"PUT /u HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	};
	size_t i, n, len;
	int failed_before = failures;

	for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		len = strlen(heads[i]);
		for (n = 0; n < len; n++)
			expect_at(req_n(heads[i], n), H1_PARTIAL, "request prefix", heads[i], n, __LINE__);
		expect_at(req_n(heads[i], len), H1_DONE, "request", heads[i], len, __LINE__);
		CHECK(rq.head_len == len);
	}
	CHECK(failures == failed_before);
}

static void test_too_big(void)
{
	const char *head = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
	size_t len = strlen(head), i;
	static char big[1 << 16];
	size_t off;
	int rc;

	/* a head of exactly max_head bytes fits; one more does not */
	CHECK(h1_parse_request(head, len, len, &rq, &why) == H1_DONE);
	CHECK(rq.head_len == len);
	why = NULL;
	CHECK(h1_parse_request(head, len, len - 1, &rq, &why) == H1_TOO_BIG);
	CHECK(why != NULL);
	CHECK(h1_parse_request(head, len, 10, &rq, &why) == H1_TOO_BIG);
	/* below the limit and incomplete: wait for more */
	CHECK(h1_parse_request(head, 20, 30, &rq, &why) == H1_PARTIAL);
	CHECK(h1_parse_request(head, 30, 30, &rq, &why) == H1_TOO_BIG);
	/* malformed within the limit is malformed, not too big */
	CHECK(h1_parse_request("GET  / HTTP/1.1\r\n\r\n", 19, 8, &rq, &why) == H1_BAD);

	/* a field larger than the limit */
	off = (size_t)sprintf(big, "GET / HTTP/1.1\r\nX-Big: ");
	memset(big + off, 'a', 9000);
	off += 9000;
	off += (size_t)sprintf(big + off, "\r\n\r\n");
	CHECK(h1_parse_request(big, off, MAX_HEAD, &rq, &why) == H1_TOO_BIG);
	CHECK(h1_parse_request(big, 4000, MAX_HEAD, &rq, &why) == H1_PARTIAL);
	CHECK(h1_parse_request(big, off, off, &rq, &why) == H1_DONE);

	/* H1_MAX_FIELDS fields fit, one more does not (however large the limit) */
	off = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
	for (i = 0; i < H1_MAX_FIELDS; i++)
		off += (size_t)sprintf(big + off, "X-%zu: %zu\r\n", i, i);
	memcpy(big + off, "\r\n", 2);
	CHECK(h1_parse_request(big, off + 2, sizeof(big), &rq, &why) == H1_DONE);
	CHECK(rq.nfields == H1_MAX_FIELDS);
	buf = big;
	CHECK(slice_is(rq.fields[H1_MAX_FIELDS - 1].value, "127"));
	off += (size_t)sprintf(big + off, "X-Last: 1\r\n\r\n");
	why = NULL;
	rc = h1_parse_request(big, off, sizeof(big), &rq, &why);
	CHECK(rc == H1_TOO_BIG);
	CHECK(why_is("too many header fields"));
}

/* ---- responses ----------------------------------------------------------- */

static void test_responses(void)
{
	CHECK(res("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello") == H1_DONE);
	CHECK(rs.status == 200 && rs.minor == 1 && rs.keep_alive == 1);
	CHECK(rs.head_len == strlen("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"));
	CHECK(rs.framing.content_length == 5 && rs.nfields == 1);
	CHECK(slice_is(rs.fields[0].name, "Content-Length") && slice_is(rs.fields[0].value, "5"));

	/* reason phrases: absent, empty, with spaces, tabs and obs-text */
	CHECK(res("HTTP/1.1 204\r\n\r\n") == H1_DONE && rs.status == 204);
	CHECK(res("HTTP/1.1 404 \r\n\r\n") == H1_DONE && rs.status == 404);
	CHECK(res("HTTP/1.1 500 Internal\tServer  Error \xe2\x80\x94\r\n\r\n") == H1_DONE);
	CHECK(rs.status == 500);
	CHECK(res("HTTP/1.1 999 Whatever\r\n\r\n") == H1_DONE && rs.status == 999);
	CHECK(res("HTTP/1.1 100 Continue\r\n\r\n") == H1_DONE && rs.status == 100);
	CHECK(res("\r\nHTTP/1.1 200 OK\r\n\r\n") == H1_DONE && rs.head_len == 21);

	/* keep-alive from the response's own version and Connection */
	CHECK(res("HTTP/1.0 200 OK\r\n\r\n") == H1_DONE && rs.minor == 0 && rs.keep_alive == 0);
	CHECK(res("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n") == H1_DONE && rs.keep_alive == 1);
	CHECK(res("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n") == H1_DONE && rs.keep_alive == 0);
	CHECK(rs.framing.conn_close == 1);
	CHECK(res("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") ==
	      H1_DONE);
	CHECK(rs.framing.conn_upgrade == 1 && rs.status == 101);

	/* Transfer-Encoding wins over Content-Length in a response */
	CHECK(res("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n") == H1_DONE);
	CHECK(rs.framing.chunked == 1);
	CHECK(res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n") == H1_DONE);
	CHECK(rs.framing.chunked == 0 && rs.framing.other_encoding == 1);
	CHECK(res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == H1_DONE);
	CHECK(rs.framing.chunked == 1 && rs.framing.other_encoding == 0);

	{
		const char *s = "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n";
		size_t n, len = strlen(s);

		for (n = 0; n < len; n++) {
			buf = s;
			expect_at(h1_parse_response(s, n, MAX_HEAD, &rs, &why), H1_PARTIAL, "response prefix",
				  s, n, __LINE__);
		}
		CHECK(h1_parse_response(s, len, len - 1, &rs, &why) == H1_TOO_BIG);
	}
}

static void test_bad_responses(void)
{
	static const char *const bad[] = {
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 099 OK\r\n\r\n",
		"HTTP/1.1 000\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"HTTP/1.1 200\tOK\r\n\r\n",
		"HTTP/1.1 200 O\x01K\r\n\r\n",
		"HTTP/1.1 200 O\x7fK\r\n\r\n",
		"HTTP/1.1 200 OK\n\r\n",
		"HTTP/1.1 200 OK\r\n\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.2 200 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n",
		"HTTP/1.1\r\n\r\n",
		"HTTP/1.1200 OK\r\n\r\n",
		" HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		EXPECT_RES(bad[i], H1_BAD);
}

/* ---- bodies -------------------------------------------------------------- */

static struct h1_body body_of_request(const char *head)
{
	struct h1_body b;

	memset(&b, 0xa5, sizeof(b)); /* body setup must not depend on prior contents */
	CHECK(req(head) == H1_DONE);
	h1_body_request(&b, &rq);
	return b;
}

static struct h1_body body_of_response(const char *head, int to_head_request)
{
	struct h1_body b;

	memset(&b, 0xa5, sizeof(b));
	CHECK(res(head) == H1_DONE);
	h1_body_response(&b, &rs, to_head_request);
	return b;
}

static void test_body_kinds(void)
{
	struct h1_body b;

	CHECK(body_of_request("GET / HTTP/1.1\r\n\r\n").kind == H1_BODY_NONE);
	CHECK(body_of_request("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").kind == H1_BODY_NONE);
	b = body_of_request("POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n");
	CHECK(b.kind == H1_BODY_LENGTH && b.remaining == 42);
	CHECK(body_of_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").kind ==
	      H1_BODY_CHUNKED);

	CHECK(body_of_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 1).kind == H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1).kind ==
	      H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 100 Continue\r\n\r\n", 0).kind == H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 101 Switching Protocols\r\n\r\n", 0).kind == H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 199 X\r\nContent-Length: 5\r\n\r\n", 0).kind == H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 0).kind ==
	      H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 0).kind ==
	      H1_BODY_NONE);
	b = body_of_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0);
	CHECK(b.kind == H1_BODY_LENGTH && b.remaining == 5);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0).kind == H1_BODY_NONE);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0).kind ==
	      H1_BODY_CHUNKED);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0)
		      .kind == H1_BODY_CHUNKED);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n", 0)
		      .kind == H1_BODY_EOF);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0).kind == H1_BODY_EOF);
	CHECK(body_of_response("HTTP/1.1 200 OK\r\n\r\n", 0).kind == H1_BODY_EOF);
	CHECK(body_of_response("HTTP/1.0 200 OK\r\n\r\n", 0).kind == H1_BODY_EOF);
}

static void test_body_length_none_eof(void)
{
	struct h1_body b;
	const char *s = "abcdefGET / HTTP/1.1\r\n\r\n";
	int done;

	b = body_of_request("POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\n");
	CHECK(h1_body_feed(&b, s, 2, &done, &why) == 2 && done == 0);
	CHECK(h1_body_feed(&b, s + 2, 0, &done, &why) == 0 && done == 0);
	CHECK(h1_body_feed(&b, s + 2, strlen(s) - 2, &done, &why) == 4 && done == 1);

	b = body_of_request("GET / HTTP/1.1\r\n\r\n");
	CHECK(h1_body_feed(&b, s, strlen(s), &done, &why) == 0 && done == 1);

	b = body_of_response("HTTP/1.1 200 OK\r\n\r\n", 0);
	CHECK(h1_body_feed(&b, s, strlen(s), &done, &why) == (ssize_t)strlen(s) && done == 0);
	CHECK(h1_body_feed(&b, s, 0, &done, &why) == 0 && done == 0);
}

static struct h1_body chunked_body(void)
{
	return body_of_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
}

/* Feeds s in pieces of at most step bytes (0: whole); the bytes consumed, or -1. */
static ssize_t feed_steps(const char *s, size_t len, size_t step, int *done)
{
	struct h1_body b = chunked_body();
	size_t off = 0, n;
	ssize_t got;

	*done = 0;
	while (off < len && !*done) {
		n = step && len - off > step ? step : len - off;
		got = h1_body_feed(&b, s + off, n, done, &why);
		if (got < 0)
			return -1;
		if ((size_t)got != n && !*done)
			return -2; /* stopped early without finishing */
		off += (size_t)got;
	}
	return (ssize_t)off;
}

static void test_chunked(void)
{
#define BODY(s) { s, sizeof(s) - 1 }
	static const struct {
		const char *s;
		size_t len;
	} bodies[] = {
		BODY("0\r\n\r\n"),
		BODY("5\r\nhello\r\n0\r\n\r\n"),
		BODY("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
		BODY("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
		BODY("00005\r\nhello\r\n000\r\n\r\n"),
		BODY("5;name=value\r\nhello\r\n0;last\r\n\r\n"),
		BODY("5;a=\"quoted; \t\x80\"\r\nhello\r\n0\r\n\r\n"),
		BODY("5\r\nhello\r\n0\r\nX-Trailer: a\r\nX-Other:\tb\r\n\r\n"),
		BODY("3\r\n\r\n\r\r\n0\r\n\r\n"),
		BODY("2\r\n\x00\xff\r\n0\r\n\r\n"),
	};
#undef BODY
	const char *next = "GET /next HTTP/1.1\r\n\r\n";
	char joined[256];
	size_t i, len, step;
	int done;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		len = bodies[i].len;
		for (step = 0; step <= 7; step++) {
			expect_at((int)feed_steps(bodies[i].s, len, step, &done), (int)len, "chunked body",
				  bodies[i].s, len, __LINE__);
			CHECK(done == 1);
		}
		/* the next message's bytes are not part of the body */
		memcpy(joined, bodies[i].s, len);
		memcpy(joined + len, next, strlen(next));
		for (step = 0; step <= 3; step++) {
			expect_at((int)feed_steps(joined, len + strlen(next), step, &done), (int)len,
				  "chunked body + next", joined, len, __LINE__);
			CHECK(done == 1);
		}
	}

	/* split into two reads at every point */
	{
		const char *s = "5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\nGET";
		size_t total = strlen(s) - 3, cut;
		struct h1_body b;
		ssize_t a, c;

		for (cut = 0; cut <= strlen(s); cut++) {
			b = chunked_body();
			a = h1_body_feed(&b, s, cut, &done, &why);
			if (done) {
				CHECK(a == (ssize_t)total && cut >= total);
				continue;
			}
			CHECK(a == (ssize_t)cut);
			c = h1_body_feed(&b, s + cut, strlen(s) - cut, &done, &why);
			CHECK(c == (ssize_t)(total - cut) && done == 1);
		}
	}

	/* after the end, nothing more belongs to the body */
	{
		struct h1_body b = chunked_body();

		CHECK(h1_body_feed(&b, "0\r\n\r\n", 5, &done, &why) == 5 && done == 1);
		CHECK(h1_body_feed(&b, "GET", 3, &done, &why) == 0 && done == 1);
	}

	/* the largest size is accepted (only its line is fed here) */
	{
		struct h1_body b = chunked_body();

		CHECK(h1_body_feed(&b, "7fffffffffffffff\r\nab", 20, &done, &why) == 20 && done == 0);
		CHECK(b.remaining == 0x7fffffffffffffffULL - 2);
	}

	/* size and trailer lines up to the bound */
	{
		static char s[5000];
		size_t n;

		memset(s, '0', 4096);
		memcpy(s + 4096, "\r\n\r\n", 4);
		CHECK(feed_steps(s, 4100, 0, &done) == 4100 && done == 1);
		memcpy(s, "0\r\n", 3);
		memset(s + 3, 'x', 4096);
		memcpy(s + 3 + 4096, "\r\n\r\n", 4);
		n = 3 + 4096 + 4;
		CHECK(feed_steps(s, n, 0, &done) == (ssize_t)n && done == 1);
		CHECK(feed_steps(s, n, 1, &done) == (ssize_t)n && done == 1);
	}
}

static void test_chunked_errors(void)
{
	static const char *const bad[] = {
		"\r\n",
		"g\r\n",
		"-5\r\n",
		"+5\r\n",
		" 5\r\n",
		"5 \r\n",
		"5\t\r\n",
		"0x5\r\n",
		";ext\r\n",
		"5\n",
		"5\rx",
		"5\r\nhelloX\r\n",
		"5\r\nhello\rX",
		"5\r\nhello\n",
		"5\r\nhello\r\n\r\n",
		"5;a\x01\r\n",
		"5;a\x7f\r\n",
		"5;a\nb\r\n",
		"8000000000000000\r\n",
		"10000000000000000\r\n",
		"ffffffffffffffffff\r\n",
		"0\r\n\n",
		"0\r\nX: a\n\r\n",
		"0\r\nX: a\r\n\n",
		"0\r\nX: a\rb\r\n\r\n",
		"0\r\n\rx",
		"0\r\nX: a\x01\r\n\r\n",
	};
	static char long_line[5000];
	size_t i, step;
	int done;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (step = 0; step <= 1; step++) {
			why = NULL;
			expect_at((int)feed_steps(bad[i], strlen(bad[i]), step, &done), -1, "chunked body",
				  bad[i], strlen(bad[i]), __LINE__);
			CHECK(why != NULL);
		}
	}

	/* lines beyond the bound */
	memset(long_line, '0', 4097);
	memcpy(long_line + 4097, "\r\n\r\n", 4);
	CHECK(feed_steps(long_line, 4101, 0, &done) == -1);
	CHECK(feed_steps(long_line, 4097, 1, &done) == -1); /* even before the line ends */
	memcpy(long_line, "1;", 2);
	memset(long_line + 2, 'e', 4095);
	memcpy(long_line + 4097, "\r\n", 2);
	CHECK(feed_steps(long_line, 4099, 0, &done) == -1);
	memcpy(long_line, "0\r\n", 3);
	memset(long_line + 3, 'x', 4097);
	memcpy(long_line + 3 + 4097, "\r\n\r\n", 4);
	CHECK(feed_steps(long_line, 3 + 4097 + 4, 0, &done) == -1);

	/* an error sticks */
	{
		struct h1_body b = chunked_body();

		CHECK(h1_body_feed(&b, "z", 1, &done, &why) == -1);
		CHECK(h1_body_feed(&b, "0\r\n\r\n", 5, &done, &why) == -1);
	}
}

int main(void)
{
	test_valid_requests();
	test_keep_alive();
	test_upgrade();
	test_request_framing();
	test_bad_requests();
	test_bad_early();
	test_partial();
	test_too_big();
	test_responses();
	test_bad_responses();
	test_body_kinds();
	test_body_length_none_eof();
	test_chunked();
	test_chunked_errors();
	printf("h1_test: %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
