// SPDX-License-Identifier: Apache-2.0
/*
 * hypha-http-proxy: the L7 HTTP proxy's data path in C, one process per CPU in a
 * SO_REUSEPORT group, as the agent runs its proxy workers (src/agent/l7.ts). It does
 * what src/proxy/http/proxy.ts and main.ts do for HTTP/1.x, at a fraction of the cost per
 * request (perf: Node.js spent ~50 µs of user CPU on a proxied request's event handling):
 *
 *   - two transparent listeners (egress, ingress) on 127.0.0.1; a connection arrives
 *     with its original destination as local address (bpf_sk_assign);
 *   - the peer's identity from the connection's conntrack entry (pinned hypha_ct4), the
 *     ipcache when it is gone; the endpoint and redirect entry from what the agent pushes
 *     (rules.c);
 *   - each request's head parsed strictly (h1.c): 400/431 and close on anything
 *     malformed; CONNECT refused; the rules judge method, path, host and headers; a
 *     denied request is answered 403 "Access denied" and its body thrown away, the
 *     connection stays usable; an allowed one goes to the original destination over the
 *     connection's own upstream connection (SO_MARK with the client's identity; from the
 *     client's own address for a pod on another node), its head rebuilt without
 *     hop-by-hop fields, edits applied, the body streamed as it came; the response
 *     streams back byte for byte while its framing is followed to find its end;
 *   - pipelined requests are served in order (the next head is parsed once the exchange
 *     before it is over);
 *   - WebSocket upgrades become byte tunnels when the destination answers 101;
 *   - HTTP/2 (the h2c preface) is handed to a Node.js worker (proxy.ts has node:http2):
 *     the connection is relayed to its unix socket (--handoff-dir) behind a PROXY protocol
 *     v1 line that names the original addresses;
 *   - one L7 record per request and per response, packed as events.ts has them, to the
 *     agent in batches over the IPC channel Node.js set up (NODE_CHANNEL_FD, JSON lines).
 *
 * Single-threaded, level-triggered epoll; every socket non-blocking; what cannot be
 * written at once is buffered and the side feeding it stops being read (back-pressure).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "h1.h"
#include "rules.h"

/* ---- constants shared with the TypeScript side ---------------------------- */

/* skb->mark magic of the proxy's own connections (bpf/include/proxy.h). */
#define MARK_MAGIC_PROXY_INGRESS 0x0a00u
#define MARK_MAGIC_PROXY_EGRESS 0x0b00u
#define CT_SCOPE_EGRESS 1
#define CT_SCOPE_INGRESS 2
#define ID_WORLD 2u
#define MIN_CLUSTER_IDENTITY 256u

/* Packed event flags (src/proxy/http/events.ts). */
#define F_RESPONSE 1
#define F_DROPPED 2
#define F_ERROR 4
#define F_EGRESS 8

/*
 * The conntrack and ipcache layouts of bpf/include/conntrack.h and ipcache.h
 * (test/datapath/layout.test.ts holds these copies to the BTF of lxc.o).
 */
struct ct_key4 {
	uint32_t saddr, daddr;
	uint16_t sport, dport;
	uint8_t proto, scope, pad[2];
};
struct ct_entry {
	uint64_t expires_ns, last_report_ns, tx_packets, tx_bytes, rx_packets, rx_bytes;
	uint32_t src_identity, dst_identity, cookie;
	uint16_t proxy_port;
	uint8_t flags, pad;
};
struct ipcache_key4 {
	uint32_t prefixlen;
	uint32_t ip4;
};
struct ipcache_info {
	uint32_t identity;
	uint32_t tunnel_endpoint;
	uint8_t flags, pad[3];
};
_Static_assert(sizeof(struct ct_key4) == 16, "ct_key4 layout");
_Static_assert(sizeof(struct ct_entry) == 64, "ct_entry layout");
_Static_assert(sizeof(struct ipcache_info) == 12, "ipcache_info layout");

/*
 * `--layouts`: these structs as compiled here, as JSON, for a test to hold against the BTF
 * of the datapath's objects (the one source of truth is bpf/include).
 */
#define LAYOUT_STRUCT(s) \
	printf("%s\"" #s "\":{\"size\":%zu,\"fields\":[", n ? "]}," : "{", sizeof(struct s)), n = 0
#define LAYOUT_FIELD(s, f) \
	printf("%s[\"%s\",%zu,%zu]", n++ ? "," : "", #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))
static void print_layouts(void)
{
	int n = 0;
	LAYOUT_STRUCT(ct_key4);
	LAYOUT_FIELD(ct_key4, saddr);
	LAYOUT_FIELD(ct_key4, daddr);
	LAYOUT_FIELD(ct_key4, sport);
	LAYOUT_FIELD(ct_key4, dport);
	LAYOUT_FIELD(ct_key4, proto);
	LAYOUT_FIELD(ct_key4, scope);
	LAYOUT_FIELD(ct_key4, pad);
	LAYOUT_STRUCT(ct_entry);
	LAYOUT_FIELD(ct_entry, expires_ns);
	LAYOUT_FIELD(ct_entry, last_report_ns);
	LAYOUT_FIELD(ct_entry, tx_packets);
	LAYOUT_FIELD(ct_entry, tx_bytes);
	LAYOUT_FIELD(ct_entry, rx_packets);
	LAYOUT_FIELD(ct_entry, rx_bytes);
	LAYOUT_FIELD(ct_entry, src_identity);
	LAYOUT_FIELD(ct_entry, dst_identity);
	LAYOUT_FIELD(ct_entry, cookie);
	LAYOUT_FIELD(ct_entry, proxy_port);
	LAYOUT_FIELD(ct_entry, flags);
	LAYOUT_FIELD(ct_entry, pad);
	LAYOUT_STRUCT(ipcache_key4);
	LAYOUT_FIELD(ipcache_key4, prefixlen);
	LAYOUT_FIELD(ipcache_key4, ip4);
	LAYOUT_STRUCT(ipcache_info);
	LAYOUT_FIELD(ipcache_info, identity);
	LAYOUT_FIELD(ipcache_info, tunnel_endpoint);
	LAYOUT_FIELD(ipcache_info, flags);
	LAYOUT_FIELD(ipcache_info, pad);
	printf("]}}\n");
}

/* ---- limits --------------------------------------------------------------- */

#define DEFAULT_MAX_HEADER_SIZE (16 * 1024)
#define MAX_RESPONSE_HEAD (64 * 1024)
#define DEFAULT_IDLE_MS 60000
/* A tunnel (an upgraded connection) idles longer than an HTTP connection. */
#define TUNNEL_IDLE_MS 3600000
/* Buffered bytes towards one side before the side feeding it is no longer read. */
#define HIGH_WATER (1 << 20)
/* Bytes read at once. */
#define READ_CHUNK (64 * 1024)
/* Records per IPC message, and how long a record may wait for company (ms). */
#define BATCH_EVENTS 256
#define BATCH_MS 20
/* Records not yet taken by the agent beyond this are dropped (and counted). */
#define MAX_IPC_BACKLOG (16 << 20)
#define MAX_EDITS 32

static const char DENIED_BODY[] = "Access denied\r\n";

/* ---- small utilities ------------------------------------------------------ */

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;
	fputs("hypha-http-proxy: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		logf_("out of memory (%zu bytes)", n);
		abort();
	}
	return q;
}

/* A growable byte buffer; `off` is where unconsumed bytes start. */
struct buf {
	char *p;
	size_t off, len, cap;
};

static size_t buf_size(const struct buf *b)
{
	return b->len - b->off;
}

static const char *buf_data(const struct buf *b)
{
	return b->p + b->off;
}

static void buf_reserve(struct buf *b, size_t more)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->len + more <= b->cap)
		return;
	if (b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->len + more <= b->cap)
			return;
	}
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more)
		cap *= 2;
	b->p = xrealloc(b->p, cap);
	b->cap = cap;
}

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (!n)
		return;
	buf_reserve(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	buf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

static void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* A JSON string, bytes read as Latin-1 (as Node.js reads HTTP heads), so always valid. */
/* Bytes a JSON string holds as they are: copied in runs. */
static const unsigned char JSON_PLAIN[256] = { [0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7e] = 1 };

static void buf_json(struct buf *b, const char *s, size_t n)
{
	buf_reserve(b, n * 6 + 2);
	char *o = b->p + b->len;
	*o++ = '"';
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		while (j < n && JSON_PLAIN[(unsigned char)s[j]])
			j++;
		memcpy(o, s + i, j - i);
		o += j - i;
		if (j == n)
			break;
		i = j;
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			*o++ = '\\';
			*o++ = (char)c;
		} else if (c == '\n') {
			*o++ = '\\';
			*o++ = 'n';
		} else if (c < 0x80) {
			o += sprintf(o, "\\u%04x", c);
		} else {
			/* Latin-1 to UTF-8: two bytes. */
			*o++ = (char)(0xc0 | (c >> 6));
			*o++ = (char)(0x80 | (c & 0x3f));
		}
	}
	*o++ = '"';
	b->len = (size_t)(o - b->p);
}

static void ip_str(uint32_t ip_be, char out[INET_ADDRSTRLEN])
{
	struct in_addr a = { .s_addr = ip_be };
	inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

/* ---- configuration -------------------------------------------------------- */

struct config {
	uint32_t address; /* listeners' address, network order */
	uint16_t egress_port, ingress_port;
	const char *handoff_dir; /* NULL: no HTTP/2 handoff */
	bool reuse_port;
	const char *pin_dir;
	uint32_t pod_net, pod_mask; /* the node's pod CIDR, network order */
	size_t max_header_size;
	uint32_t idle_ms;
	/* Tests without a datapath: every upstream goes here, every peer is this identity. */
	uint32_t upstream_ip;
	uint16_t upstream_port;
	bool fixed_peer;
	uint32_t peer_identity;
};

static struct config cfg = {
	.max_header_size = DEFAULT_MAX_HEADER_SIZE,
	.idle_ms = DEFAULT_IDLE_MS,
};

/* ---- the event loop's objects --------------------------------------------- */

enum kind { K_LISTENER, K_IPC, K_CLIENT, K_UPSTREAM };

/* What epoll hands back: every registered fd's owner starts with one. */
struct handle {
	enum kind kind;
	int fd;
	uint32_t events; /* the interest registered */
};

struct listener {
	struct handle h;
	enum rt_direction dir;
};

enum action { A_FORWARD, A_ANSWER };

/* One request, from its head to the end of its response. */
struct exchange {
	bool active;
	enum action action;
	uint64_t started;
	int minor;
	bool close;          /* the connection ends after this exchange */
	bool websocket;      /* an allowed WebSocket upgrade: a tunnel if the answer is 101 */
	bool request_done, response_done;
	bool head_request;   /* HEAD: the response has no body */
	struct h1_body body; /* the request body's framing */
	/*
	 * For records, NUL-terminated in `text` (kept between exchanges: no allocation per
	 * request): method, URL, host, the headers packed (name\nvalue\n..., events.ts
	 * packHeaders), the entry's policy (NO_TEXT: none).
	 */
	struct buf text;
	uint32_t method, url, host, headers, policy;
	/* The URL (made absolute) and the headers as JSON strings, made for the first record. */
	uint32_t url_json, headers_json;
	/* The response, as it comes. */
	int status;
	bool response_head_done;
};

#define NO_TEXT UINT32_MAX

static const char *xtext(const struct exchange *x, uint32_t off)
{
	return x->active && off != NO_TEXT && off < x->text.len ? x->text.p + off : "";
}

/* Appends a NUL-terminated string to the exchange's text; returns its offset. */
static uint32_t xadd(struct exchange *x, const char *p, size_t n)
{
	uint32_t off = (uint32_t)x->text.len;
	buf_add(&x->text, p, n);
	buf_add(&x->text, "", 1);
	return off;
}

struct upstream;

struct client {
	struct handle h;
	enum rt_direction dir;
	uint32_t src_ip, dst_ip; /* network order */
	uint16_t src_port, dst_port;
	/* The connection's endpoint and peer, once found (as main.ts caches them). */
	bool resolved;
	uint32_t endpoint_id, endpoint_identity, peer;
	char src_str[INET_ADDRSTRLEN], dst_str[INET_ADDRSTRLEN];
	struct buf in, out;
	struct exchange x;
	struct upstream *up;
	bool stopped;      /* nothing more is parsed */
	bool read_eof;     /* the client sent FIN */
	bool close_after_flush; /* then linger (below) */
	bool shut_after_flush;  /* then half-close (a tunnel's other end half-closed) */
	/*
	 * Lingering close: our side is shut (FIN sent) and what the client still sends is read
	 * and dropped until it closes or linger_until. Closing at once with unread bytes would
	 * send a reset, and a reset makes the client's kernel drop our last answer unread.
	 */
	bool lingering;
	uint64_t linger_until;
	bool tunnel;       /* bytes pass both ways unparsed (WebSocket, HTTP/2 handoff) */
	bool sniffed;      /* the first bytes told HTTP/1.x from HTTP/2 */
	uint64_t last_active;
	struct client *prev, *next; /* every client, for idle sweeps */
};

struct upstream {
	struct handle h;
	struct client *owner;
	bool connecting;
	bool reusable;
	bool handoff; /* a relay to the Node.js worker (HTTP/2) */
	uint32_t mark, src_ip, dst_ip;
	uint16_t src_port, dst_port;
	struct buf in, out;
	struct h1_body body; /* the response body's framing */
	bool read_eof;
};

static int epfd = -1;
static struct rt_table *table;
static struct listener listeners[2];
static bool listening;
static struct client *clients;
static volatile sig_atomic_t stop_requested;

/* BPF maps: conntrack and ipcache (-1: unavailable, e.g. run by hand without an agent). */
static int ct_fd = -1, ipcache_fd = -1;

/* ---- epoll ----------------------------------------------------------------- */

static void watch(struct handle *h, uint32_t events)
{
	if (h->fd < 0)
		return;
	if (h->events == events)
		return;
	struct epoll_event ev = { .events = events, .data.ptr = h };
	int op = h->events == UINT32_MAX ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(epfd, op, h->fd, &ev) < 0)
		logf_("epoll_ctl(%d): %s", h->fd, strerror(errno));
	h->events = events;
}

static void unwatch(struct handle *h)
{
	if (h->fd >= 0 && h->events != UINT32_MAX)
		epoll_ctl(epfd, EPOLL_CTL_DEL, h->fd, NULL);
	h->events = UINT32_MAX;
}

/* ---- IPC with the agent --------------------------------------------------- */

static struct handle ipc = { .kind = K_IPC, .fd = -1, .events = UINT32_MAX };
static struct buf ipc_in, ipc_out;
static struct buf batch; /* records waiting: `[...],[...]` */
static unsigned batch_events;
static uint64_t batch_since;
static uint64_t dropped_records;

static void ipc_flush(void)
{
	while (buf_size(&ipc_out)) {
		ssize_t n = write(ipc.fd, buf_data(&ipc_out), buf_size(&ipc_out));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				buf_consume(&ipc_out, buf_size(&ipc_out));
			break;
		}
		buf_consume(&ipc_out, (size_t)n);
	}
	if (ipc.fd >= 0)
		watch(&ipc, EPOLLIN | (buf_size(&ipc_out) ? EPOLLOUT : 0));
}

static void ipc_send(const char *line)
{
	if (ipc.fd < 0)
		return;
	buf_str(&ipc_out, line);
	buf_str(&ipc_out, "\n");
	ipc_flush();
}

static void batch_send(void)
{
	if (!batch_events)
		return;
	if (ipc.fd < 0) {
		/* Run by hand: the records go to the log. */
		fprintf(stderr, "[%.*s]\n", (int)buf_size(&batch), buf_data(&batch));
	} else if (buf_size(&ipc_out) > MAX_IPC_BACKLOG) {
		dropped_records += batch_events;
	} else {
		buf_str(&ipc_out, "{\"type\":\"l7\",\"packed\":[");
		buf_add(&ipc_out, buf_data(&batch), buf_size(&batch));
		buf_str(&ipc_out, "]}\n");
		ipc_flush();
	}
	buf_consume(&batch, buf_size(&batch));
	batch_events = 0;
}

/* ---- records ---------------------------------------------------------------- */

struct record {
	bool response;
	int verdict; /* 0 forwarded, F_DROPPED, F_ERROR */
	int code;
	int64_t latency_ns; /* -1: none */
	const char *reason;
	const char *policy;
};

/*
 * One packed event (events.ts PackedEvent): a request goes from client to server, a
 * response back; identities as main.ts #record assigns them.
 */
static void buf_u64(struct buf *b, uint64_t v)
{
	char tmp[24], *e = tmp + sizeof(tmp), *p = e;
	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10));
	buf_add(b, p, (size_t)(e - p));
}

static void buf_i64(struct buf *b, int64_t v)
{
	if (v < 0) {
		buf_add(b, "-", 1);
		buf_u64(b, (uint64_t)0 - (uint64_t)v);
	} else {
		buf_u64(b, (uint64_t)v);
	}
}

/* `"ip",port,identity,` */
static void buf_end(struct buf *b, const char *ip, uint16_t port, uint32_t identity)
{
	buf_add(b, "\"", 1);
	buf_str(b, ip);
	buf_add(b, "\",", 2);
	buf_u64(b, port);
	buf_add(b, ",", 1);
	buf_u64(b, identity);
	buf_add(b, ",", 1);
}

/* A string of the exchange's text as JSON, kept in the text for the exchange's next record. */
static const char *x_json(struct exchange *x, uint32_t *cache, const char *s, size_t n)
{
	if (*cache == NO_TEXT) {
		static struct buf tmp;
		buf_consume(&tmp, buf_size(&tmp));
		buf_json(&tmp, s, n);
		*cache = xadd(x, buf_data(&tmp), buf_size(&tmp));
	}
	return x->text.p + *cache;
}

static const char *headers_json(struct exchange *x)
{
	const char *h = xtext(x, x->headers);
	return x_json(x, &x->headers_json, h, strlen(h));
}

/* Origin-form URLs are made absolute with the authority, as Hubble shows them. */
static const char *url_json(struct client *c)
{
	struct exchange *x = &c->x;
	if (x->url_json != NO_TEXT)
		return x->text.p + x->url_json;
	const char *url = xtext(x, x->url), *host = xtext(x, x->host);
	if (!*url || !strncasecmp(url, "http://", 7) || !strncasecmp(url, "https://", 8))
		return x_json(x, &x->url_json, url, strlen(url));
	static struct buf u;
	buf_consume(&u, buf_size(&u));
	buf_str(&u, "http://");
	if (*host) {
		buf_str(&u, host);
	} else {
		buf_str(&u, c->dst_str);
		buf_add(&u, ":", 1);
		buf_u64(&u, c->dst_port);
	}
	buf_str(&u, url);
	return x_json(x, &x->url_json, buf_data(&u), buf_size(&u));
}

static void record(struct client *c, const struct record *r)
{
	uint32_t local = c->resolved ? c->endpoint_identity : 0;
	uint32_t peer = c->resolved ? c->peer : 0;
	bool ingress = c->dir == RT_INGRESS;
	uint32_t client_id = ingress ? peer : local, server_id = ingress ? local : peer;
	struct exchange *x = &c->x;

	if (batch_events)
		buf_add(&batch, ",", 1);
	else
		batch_since = now_ns();
	int flags = (r->response ? F_RESPONSE : 0) | r->verdict | (ingress ? 0 : F_EGRESS);
	buf_add(&batch, "[", 1);
	buf_u64(&batch, wall_ms());
	buf_add(&batch, ",", 1);
	buf_u64(&batch, (uint64_t)flags);
	buf_add(&batch, ",", 1);
	buf_u64(&batch, c->resolved ? c->endpoint_id : 0);
	buf_add(&batch, ",", 1);
	if (r->response) {
		buf_end(&batch, c->dst_str, c->dst_port, server_id);
		buf_end(&batch, c->src_str, c->src_port, client_id);
	} else {
		buf_end(&batch, c->src_str, c->src_port, client_id);
		buf_end(&batch, c->dst_str, c->dst_port, server_id);
	}
	buf_u64(&batch, (uint64_t)r->code);
	buf_add(&batch, ",", 1);
	buf_json(&batch, xtext(x, x->method), strlen(xtext(x, x->method)));
	buf_add(&batch, ",", 1);
	buf_str(&batch, x->active ? url_json(c) : "\"\"");
	buf_str(&batch, x->active && x->minor == 0 ? ",\"HTTP/1.0\"," : ",\"HTTP/1.1\",");
	buf_i64(&batch, r->latency_ns);
	buf_add(&batch, ",", 1);
	buf_json(&batch, r->policy ? r->policy : "", r->policy ? strlen(r->policy) : 0);
	buf_add(&batch, ",", 1);
	buf_json(&batch, r->reason ? r->reason : "", r->reason ? strlen(r->reason) : 0);
	buf_add(&batch, ",", 1);
	buf_str(&batch, x->active ? headers_json(x) : "\"\"");
	buf_add(&batch, "]", 1);
	if (++batch_events >= BATCH_EVENTS)
		batch_send();
}

/* ---- the peer: conntrack, then ipcache ------------------------------------- */

static void open_maps(void)
{
	if (!cfg.pin_dir)
		return;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/hypha_ct4", cfg.pin_dir);
	ct_fd = bpf_obj_get(path);
	if (ct_fd < 0)
		logf_("%s: %s (peers from the ipcache only)", path, strerror(errno));
	snprintf(path, sizeof(path), "%s/hypha_ipcache4", cfg.pin_dir);
	ipcache_fd = bpf_obj_get(path);
	if (ipcache_fd < 0)
		logf_("%s: %s (unknown peers are the world)", path, strerror(errno));
}

/* The identity the datapath decided with (main.ts #conn). */
static uint32_t peer_identity(const struct client *c)
{
	if (cfg.fixed_peer)
		return cfg.peer_identity;
	bool ingress = c->dir == RT_INGRESS;
	if (ct_fd >= 0) {
		struct ct_key4 k = {
			.saddr = c->src_ip,
			.daddr = c->dst_ip,
			.sport = htons(c->src_port),
			.dport = htons(c->dst_port),
			.proto = IPPROTO_TCP,
			.scope = ingress ? CT_SCOPE_INGRESS : CT_SCOPE_EGRESS,
		};
		struct ct_entry e;
		if (bpf_map_lookup_elem(ct_fd, &k, &e) == 0)
			return ingress ? e.src_identity : e.dst_identity;
	}
	if (ipcache_fd >= 0) {
		struct ipcache_key4 k = { .prefixlen = 32, .ip4 = ingress ? c->src_ip : c->dst_ip };
		struct ipcache_info info;
		if (bpf_map_lookup_elem(ipcache_fd, &k, &info) == 0)
			return info.identity;
	}
	return ID_WORLD;
}

static bool resolve(struct client *c)
{
	if (c->resolved)
		return true;
	const struct rt_endpoint *ep = rt_endpoint_at(table, c->dir == RT_INGRESS ? c->dst_ip : c->src_ip);
	if (!ep)
		return false;
	c->endpoint_id = rt_endpoint_id(ep);
	c->endpoint_identity = rt_endpoint_identity(ep);
	c->peer = peer_identity(c);
	c->resolved = true;
	return true;
}

/* The mark carrying the client's identity (main.ts upstreamMark). */
static uint32_t upstream_mark(const struct client *c)
{
	uint32_t magic = c->dir == RT_INGRESS ? MARK_MAGIC_PROXY_INGRESS : MARK_MAGIC_PROXY_EGRESS;
	uint32_t id = c->dir == RT_INGRESS ? c->peer : c->endpoint_identity;
	if (id >= 1u << 24)
		id = ID_WORLD;
	return ((id & 0xffff) << 16) | magic | ((id >> 16) & 0xff);
}

/*
 * Egress to a pod on another node leaves from the client pod's own address and port
 * (main.ts #remotePod explains why); everything else from the node.
 */
static bool remote_pod(const struct client *c)
{
	if (c->dir != RT_EGRESS || cfg.upstream_port)
		return false;
	bool cluster = c->peer >= MIN_CLUSTER_IDENTITY && c->peer < 1u << 24;
	bool local = cfg.pod_mask && (c->dst_ip & cfg.pod_mask) == cfg.pod_net;
	return cluster && !local;
}

/* ---- connection teardown ------------------------------------------------- */

static void exchange_clear(struct exchange *x)
{
	struct buf text = x->text;
	memset(x, 0, sizeof(*x));
	text.off = text.len = 0;
	x->text = text;
}

/*
 * Closed connections are freed after the event batch: epoll may still hold events for
 * them in the same batch (their kind then says they are gone).
 */
struct grave {
	void *p;
	bool client;
};
static struct grave *graves;
static size_t graves_n, graves_cap;

static void entomb(void *p, bool client)
{
	if (graves_n == graves_cap) {
		graves_cap = graves_cap ? graves_cap * 2 : 64;
		graves = xrealloc(graves, graves_cap * sizeof(*graves));
	}
	graves[graves_n++] = (struct grave){ p, client };
}

static void upstream_free(struct upstream *u)
{
	if (!u || u->h.kind != K_UPSTREAM)
		return;
	unwatch(&u->h);
	if (u->h.fd >= 0)
		close(u->h.fd);
	u->h.fd = -1;
	u->h.kind = (enum kind)-1;
	if (u->owner && u->owner->up == u)
		u->owner->up = NULL;
	entomb(u, false);
}

static void client_kill(struct client *c)
{
	if (c->h.kind != K_CLIENT)
		return; /* already dead */
	upstream_free(c->up);
	c->up = NULL;
	unwatch(&c->h);
	close(c->h.fd);
	c->h.fd = -1;
	c->h.kind = (enum kind)-1;
	if (c->prev)
		c->prev->next = c->next;
	else
		clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	entomb(c, true);
}

static bool dead(const struct client *c)
{
	return c->h.kind != K_CLIENT;
}

static void bury(void)
{
	for (size_t i = 0; i < graves_n; i++) {
		if (graves[i].client) {
			struct client *c = graves[i].p;
			buf_free(&c->in);
			buf_free(&c->out);
			buf_free(&c->x.text);
			free(c);
		} else {
			struct upstream *u = graves[i].p;
			buf_free(&u->in);
			buf_free(&u->out);
			free(u);
		}
	}
	graves_n = 0;
}

/* ---- writing ------------------------------------------------------------- */

/* Writes what `out` holds to fd; false if the peer is gone. */
static bool flush_out(int fd, struct buf *out)
{
	while (buf_size(out)) {
		ssize_t n = write(fd, buf_data(out), buf_size(out));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN;
		}
		buf_consume(out, (size_t)n);
	}
	return true;
}

/* Queues bytes for fd and writes what it can now (one write when nothing waits). */
static bool send_bytes(int fd, struct buf *out, const char *p, size_t n)
{
	if (!buf_size(out) && fd >= 0) {
		while (n) {
			ssize_t w = write(fd, p, n);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN)
					return false;
				break;
			}
			p += w;
			n -= (size_t)w;
		}
	}
	buf_add(out, p, n);
	return true;
}

/* ---- interest ------------------------------------------------------------ */

static void update_interest(struct client *c)
{
	if (dead(c) || c->lingering)
		return;
	struct upstream *u = c->up;
	bool up_full = u && buf_size(&u->out) > HIGH_WATER;
	bool client_full = buf_size(&c->out) > HIGH_WATER;
	/*
	 * The client is read while it can be parsed or passed on: not once stopped, not while
	 * a pipelined request waits with enough buffered, not while either side is backed up.
	 */
	bool read_client = !c->read_eof && !c->stopped && !up_full && !client_full && buf_size(&c->in) < HIGH_WATER;
	watch(&c->h, (read_client ? EPOLLIN : 0) | (buf_size(&c->out) ? EPOLLOUT : 0));
	if (u && u->h.fd >= 0) {
		bool read_up = !u->read_eof && !client_full && !u->connecting;
		watch(&u->h, (read_up ? EPOLLIN : 0) | (u->connecting || buf_size(&u->out) ? EPOLLOUT : 0));
	}
}

/* ---- answers made here ----------------------------------------------------- */

static const char *reason_phrase(int code)
{
	switch (code) {
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "";
	}
}

static void answer(struct client *c, int code, const char *body, bool close_conn)
{
	struct buf r = { 0 };
	buf_printf(&r, "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %zu\r\n%s\r\n%s", code,
		   reason_phrase(code), strlen(body), close_conn ? "connection: close\r\n" : "", body);
	if (!send_bytes(c->h.fd, &c->out, buf_data(&r), buf_size(&r)))
		client_kill(c);
	buf_free(&r);
}

/* ---- the exchange ---------------------------------------------------------- */

#define LINGER_MS 2000

static void linger(struct client *c)
{
	shutdown(c->h.fd, SHUT_WR);
	upstream_free(c->up);
	c->up = NULL;
	c->lingering = true;
	c->linger_until = now_ns() + LINGER_MS * 1000000ull;
	watch(&c->h, EPOLLIN);
}

/* The client connection ends once what is queued for it is written. */
static void client_finish(struct client *c)
{
	c->stopped = true;
	c->close_after_flush = true;
	if (!buf_size(&c->out))
		linger(c);
}

static void exchange_done(struct client *c)
{
	struct exchange *x = &c->x;
	if (!x->active || !x->request_done || !x->response_done)
		return;
	bool close_conn = x->close;
	exchange_clear(x);
	if (c->up && !c->up->reusable) {
		upstream_free(c->up);
		c->up = NULL;
	}
	/* The caller goes on with what the client sent next (no recursion: pipelines can be long). */
	if (close_conn)
		client_finish(c);
}

static void upstream_failed(struct upstream *u, const char *why);

/* Bytes of the response go to the client. */
static bool to_client(struct client *c, const char *p, size_t n)
{
	if (!send_bytes(c->h.fd, &c->out, p, n)) {
		client_kill(c);
		return false;
	}
	return true;
}

static void response_head(struct client *c, int status)
{
	struct exchange *x = &c->x;
	x->status = status;
	x->response_head_done = true;
	struct record r = {
		.response = true,
		.code = status,
		.latency_ns = (int64_t)(now_ns() - x->started),
		.policy = x->policy == NO_TEXT ? NULL : xtext(x, x->policy),
	};
	record(c, &r);
}

/* The destination switched protocols: from now on bytes pass both ways, unparsed. */
static void tunnel_opens(struct client *c)
{
	c->tunnel = true;
	c->x.response_done = true;
	c->x.request_done = true;
	exchange_clear(&c->x);
	/* What the client sent after its upgrade request was held for the tunnel. */
	if (buf_size(&c->in)) {
		struct upstream *u = c->up;
		if (!send_bytes(u->h.fd, &u->out, buf_data(&c->in), buf_size(&c->in))) {
			upstream_failed(u, "upstream closed the connection");
			return;
		}
		buf_consume(&c->in, buf_size(&c->in));
	}
}

/*
 * The destination's bytes: response heads are parsed (interim 1xx passed on, a 101 to a
 * WebSocket upgrade opens a tunnel), bodies followed to their end; everything is passed
 * to the client as it came.
 */
/* Writes the first *at bytes of the upstream's input to the client (one write for a whole read). */
static bool pass(struct client *c, struct upstream *u, size_t *at)
{
	if (!*at)
		return true;
	bool ok = to_client(c, buf_data(&u->in), *at);
	buf_consume(&u->in, *at);
	*at = 0;
	return ok;
}

static void upstream_input(struct upstream *u)
{
	struct client *c = u->owner;
	struct exchange *x = &c->x;
	/* Bytes of u->in known to go to the client, passed together. */
	size_t at = 0;
	while (at < buf_size(&u->in) && !dead(c)) {
		const char *p = buf_data(&u->in) + at;
		size_t left = buf_size(&u->in) - at;
		if (c->tunnel) {
			at += left;
			break;
		}
		if (!x->active || x->action != A_FORWARD || x->response_done) {
			/* Bytes nobody asked for: the connection cannot be trusted with another request. */
			if (!pass(c, u, &at))
				return;
			u->reusable = false;
			buf_consume(&u->in, buf_size(&u->in));
			if (!x->active) {
				upstream_free(u);
				c->up = NULL;
			}
			return;
		}
		if (!x->response_head_done) {
			static struct h1_response r;
			const char *why = NULL;
			int rc = h1_parse_response(p, left, MAX_RESPONSE_HEAD, &r, &why);
			if (rc == H1_PARTIAL)
				break;
			if (rc != H1_DONE) {
				char msg[160];
				snprintf(msg, sizeof(msg), "bad response from upstream: %s", why ? why : "malformed head");
				if (pass(c, u, &at))
					upstream_failed(u, msg);
				return;
			}
			at += r.head_len;
			if (r.status == 101 && x->websocket) {
				response_head(c, r.status);
				if (!pass(c, u, &at))
					return;
				tunnel_opens(c);
				continue; /* the rest of this read is the tunnel's */
			}
			if (r.status < 200)
				continue; /* interim: another head follows */
			h1_body_response(&u->body, &r, x->head_request);
			/* A body delimited by the connection's end ends the client's connection too. */
			if (!r.keep_alive || u->body.kind == H1_BODY_EOF)
				x->close = true;
			response_head(c, r.status);
			if (u->body.kind == H1_BODY_NONE) {
				x->response_done = true;
				u->reusable = !x->close;
				if (!pass(c, u, &at))
					return;
				exchange_done(c);
			}
			continue;
		}
		int done = 0;
		const char *why = NULL;
		ssize_t n = h1_body_feed(&u->body, p, left, &done, &why);
		if (n < 0) {
			char msg[160];
			snprintf(msg, sizeof(msg), "bad response from upstream: %s", why ? why : "bad body");
			if (pass(c, u, &at))
				upstream_failed(u, msg);
			return;
		}
		at += (size_t)n;
		if (done) {
			x->response_done = true;
			u->reusable = !x->close;
			if (!pass(c, u, &at))
				return;
			exchange_done(c);
		}
	}
	if (!dead(c))
		pass(c, u, &at);
}

/*
 * The destination went away or misbehaved. Before any of the response went out the client
 * gets a 503 (as Envoy's "upstream connect error or disconnect/reset before headers");
 * after, it can only learn of it from its connection closing.
 */
static void upstream_failed(struct upstream *u, const char *why)
{
	struct client *c = u->owner;
	if (c->up != u) {
		upstream_free(u);
		return;
	}
	struct exchange *x = &c->x;
	c->up = NULL;
	upstream_free(u);
	if (c->tunnel) {
		client_finish(c);
		return;
	}
	if (!x->active || x->action != A_FORWARD || x->response_done)
		return; /* an idle connection went away: the next request opens another */
	struct record r = {
		.response = true,
		.verdict = F_ERROR,
		.code = 503,
		.reason = why,
		.latency_ns = (int64_t)(now_ns() - x->started),
		.policy = x->policy == NO_TEXT ? NULL : xtext(x, x->policy),
	};
	record(c, &r);
	if (x->response_head_done) {
		client_kill(c);
		return;
	}
	x->status = 503;
	x->response_done = true;
	answer(c, 503, "upstream connect error or disconnect/reset before headers\r\n", !x->request_done);
	if (dead(c))
		return;
	if (x->request_done) {
		exchange_done(c);
	} else {
		/* The rest of the request has nowhere to go. */
		exchange_clear(x);
		client_finish(c);
	}
}

/* A new upstream of `c`, not registered with epoll yet. */
static struct upstream *upstream_new(struct client *c)
{
	struct upstream *u = calloc(1, sizeof(*u));
	if (!u)
		abort();
	u->h.kind = K_UPSTREAM;
	u->h.fd = -1;
	u->h.events = UINT32_MAX;
	u->owner = c;
	return u;
}

/* Opens the connection to the destination (non-blocking). */
static struct upstream *upstream_open(struct client *c, uint32_t ip, uint16_t port, uint32_t mark, bool transparent)
{
	struct upstream *u = upstream_new(c);
	u->mark = mark;
	u->dst_ip = ip;
	u->dst_port = port;
	u->h.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	const char *what = NULL;
	if (u->h.fd < 0)
		what = "socket";
	else if (mark && setsockopt(u->h.fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		what = "SO_MARK";
	else if (setsockopt(u->h.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		what = "TCP_NODELAY";
	if (!what && transparent) {
		struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = c->src_ip, .sin_port = htons(c->src_port) };
		u->src_ip = c->src_ip;
		u->src_port = c->src_port;
		if (setsockopt(u->h.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    setsockopt(u->h.fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0)
			what = "IP_TRANSPARENT";
		else if (bind(u->h.fd, (struct sockaddr *)&src, sizeof(src)) < 0)
			what = "bind";
	}
	if (!what) {
		struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr.s_addr = ip, .sin_port = htons(port) };
		if (connect(u->h.fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS)
			what = "connect";
		else
			u->connecting = true;
	}
	if (what) {
		/* Reported as the exchange's upstream error by the caller. */
		int e = errno;
		if (u->h.fd >= 0)
			close(u->h.fd);
		u->h.fd = -1;
		errno = e;
		logf_("upstream %s: %s", what, strerror(e));
	}
	return u;
}

static bool same_upstream(const struct upstream *u, uint32_t ip, uint16_t port, uint32_t mark, bool transparent,
			  const struct client *c)
{
	return u->dst_ip == ip && u->dst_port == port && u->mark == mark &&
	       (transparent ? u->src_ip == c->src_ip && u->src_port == c->src_port : u->src_ip == 0);
}

/* ---- requests -------------------------------------------------------------- */

static bool name_is(const char *buf, struct h1_slice s, const char *name)
{
	return s.len == strlen(name) && !strncasecmp(buf + s.off, name, s.len);
}

/* Hop-by-hop fields (RFC 9110 §7.6.1) describe one connection, not the message. */
static bool hop_by_hop(const char *buf, struct h1_slice n)
{
	static const char *const names[] = { "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name_is(buf, n, names[i]))
			return true;
	return false;
}

/* Whether `name` is one of the tokens of the request's Connection fields. */
static bool named_by_connection(const char *buf, const struct h1_request *r, struct h1_slice name)
{
	for (uint32_t i = 0; i < r->nfields; i++) {
		if (!name_is(buf, r->fields[i].name, "connection"))
			continue;
		const char *v = buf + r->fields[i].value.off, *end = v + r->fields[i].value.len;
		while (v < end) {
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			const char *t = v;
			while (v < end && *v != ',')
				v++;
			const char *te = v;
			while (te > t && (te[-1] == ' ' || te[-1] == '\t'))
				te--;
			size_t tl = (size_t)(te - t);
			if (tl && tl == name.len && !strncasecmp(t, buf + name.off, tl))
				return true;
		}
	}
	return false;
}

static bool edited(const struct rt_edit *edits, size_t n, const char *buf, struct h1_slice name)
{
	for (size_t i = 0; i < n; i++)
		if (edits[i].kind != RT_EDIT_ADD && name_is(buf, name, edits[i].name))
			return true;
	return false;
}

static bool websocket_upgrade(const char *buf, const struct h1_request *r)
{
	for (uint32_t i = 0; i < r->nfields; i++) {
		if (!name_is(buf, r->fields[i].name, "upgrade"))
			continue;
		const char *v = buf + r->fields[i].value.off;
		size_t n = r->fields[i].value.len;
		for (size_t j = 0; j + 9 <= n; j++) {
			if (strncasecmp(v + j, "websocket", 9))
				continue;
			bool start = j == 0 || v[j - 1] == ',' || v[j - 1] == ' ' || v[j - 1] == '\t';
			bool stop = j + 9 == n || v[j + 9] == ',' || v[j + 9] == ' ' || v[j + 9] == '\t';
			if (start && stop)
				return true;
		}
	}
	return false;
}

/* The request head for the destination (proxy.ts upstreamHead). */
static void upstream_head(struct buf *o, const char *buf, const struct h1_request *r, const struct rt_edit *edits,
			  size_t nedits, bool websocket, bool close_conn)
{
	buf_add(o, buf + r->method.off, r->method.len);
	buf_str(o, " ");
	buf_add(o, buf + r->target.off, r->target.len);
	buf_printf(o, " HTTP/1.%d\r\n", r->minor);
	for (uint32_t i = 0; i < r->nfields; i++) {
		const struct h1_field *f = &r->fields[i];
		bool framing = name_is(buf, f->name, "content-length") || name_is(buf, f->name, "transfer-encoding");
		bool keep_upgrade = websocket && name_is(buf, f->name, "upgrade");
		if (!keep_upgrade) {
			if (hop_by_hop(buf, f->name))
				continue;
			/* The message's own framing stays: the destination must read the body the same way. */
			if (!framing && named_by_connection(buf, r, f->name))
				continue;
			if (edited(edits, nedits, buf, f->name))
				continue;
		}
		buf_add(o, buf + f->name.off, f->name.len);
		buf_str(o, ": ");
		buf_add(o, buf + f->value.off, f->value.len);
		buf_str(o, "\r\n");
	}
	for (size_t i = 0; i < nedits; i++)
		if (edits[i].kind != RT_EDIT_DELETE)
			buf_printf(o, "%s: %s\r\n", edits[i].name, edits[i].value ? edits[i].value : "");
	if (websocket)
		buf_str(o, "connection: upgrade\r\n");
	else if (close_conn)
		buf_str(o, "connection: close\r\n");
	buf_str(o, "\r\n");
}

/* Header names lower-cased, name\nvalue pairs (events.ts packHeaders), into the exchange's text. */
static uint32_t packed_headers(struct exchange *x, const char *buf, const struct h1_request *r)
{
	struct buf *o = &x->text;
	uint32_t off = (uint32_t)o->len;
	for (uint32_t i = 0; i < r->nfields; i++) {
		const struct h1_field *f = &r->fields[i];
		if (i)
			buf_add(o, "\n", 1);
		buf_reserve(o, f->name.len);
		for (uint32_t j = 0; j < f->name.len; j++) {
			char ch = buf[f->name.off + j];
			o->p[o->len++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
		buf_add(o, "\n", 1);
		buf_add(o, buf + f->value.off, f->value.len);
	}
	buf_add(o, "", 1);
	return off;
}

/* The request as the rules see it: method, path without the query, host, fields. */
struct view {
	struct rt_request req;
	struct rt_header headers[H1_MAX_FIELDS];
	char host[1024];
};

static void make_view(struct view *v, const char *buf, const struct h1_request *r)
{
	const char *target = buf + r->target.off;
	size_t tlen = r->target.len;
	v->req.method = buf + r->method.off;
	v->req.method_len = r->method.len;
	v->req.host = "";
	v->req.host_len = 0;
	for (uint32_t i = 0; i < r->nfields; i++) {
		const struct h1_field *f = &r->fields[i];
		v->headers[i] = (struct rt_header){ buf + f->name.off, f->name.len, buf + f->value.off, f->value.len };
		if (!v->req.host_len && name_is(buf, f->name, "host")) {
			v->req.host = buf + f->value.off;
			v->req.host_len = f->value.len;
		}
	}
	v->req.headers = v->headers;
	v->req.nheaders = r->nfields;
	/* Origin-form (/path?q) from transparent clients; absolute-form from explicit proxies. */
	const char *path = target;
	size_t plen = tlen;
	size_t scheme = tlen >= 7 && !strncasecmp(target, "http://", 7) ? 7 : tlen >= 8 && !strncasecmp(target, "https://", 8) ? 8 : 0;
	if (target[0] != '/' && scheme) {
		const char *auth = target + scheme, *end = target + tlen;
		const char *slash = memchr(auth, '/', (size_t)(end - auth));
		const char *q = memchr(auth, '?', (size_t)(end - auth));
		const char *auth_end = slash ? slash : q ? q : end;
		if (q && slash && q < slash)
			auth_end = q;
		size_t alen = (size_t)(auth_end - auth);
		if (alen < sizeof(v->host)) {
			/* URL hosts compare lower-case (as new URL() gives them). */
			for (size_t i = 0; i < alen; i++)
				v->host[i] = (char)(auth[i] >= 'A' && auth[i] <= 'Z' ? auth[i] + 32 : auth[i]);
			v->req.host = v->host;
			v->req.host_len = alen;
		}
		path = auth_end < end && *auth_end == '/' ? auth_end : "/";
		plen = path == auth_end ? (size_t)(end - auth_end) : 1;
	}
	const char *q = memchr(path, '?', plen);
	if (q)
		plen = (size_t)(q - path);
	v->req.path = path;
	v->req.path_len = plen;
}

static void deny(struct client *c, int code, const char *body, const char *reason, bool close_conn)
{
	struct exchange *x = &c->x;
	x->action = A_ANSWER;
	x->close = x->close || close_conn;
	struct record r = { .verdict = F_DROPPED, .code = code, .reason = reason, .latency_ns = -1 };
	if (c->resolved) {
		const struct rt_endpoint *ep = rt_endpoint_by_id(table, c->endpoint_id);
		const struct rt_entry *e = ep ? rt_match(ep, c->dir, c->peer, c->dst_port) : NULL;
		r.policy = e ? rt_entry_policy(e) : NULL;
	}
	record(c, &r);
	answer(c, code, body, x->close);
}

/*
 * Hands an HTTP/2 connection to the Node.js worker, which has node:http2, over its unix
 * socket (root only: the PROXY line it trusts names the client, so no other local process
 * may write one).
 */
static void handoff(struct client *c)
{
	struct upstream *u = upstream_new(c);
	u->handoff = true;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int len = cfg.handoff_dir ? snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/h2-%s.sock", cfg.handoff_dir,
					     c->dir == RT_INGRESS ? "ingress" : "egress")
				  : -1;
	u->h.fd = len > 0 && (size_t)len < sizeof(sun.sun_path) ? socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
	/* A unix socket connects at once or not at all. */
	if (u->h.fd >= 0 && connect(u->h.fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		logf_("HTTP/2 handoff to %s: %s", sun.sun_path, strerror(errno));
		close(u->h.fd);
		u->h.fd = -1;
	}
	if (u->h.fd < 0) {
		/* Nobody to serve HTTP/2: the client hears so at once (RST), not after a timeout. */
		free(u);
		client_kill(c);
		return;
	}
	c->up = u;
	struct buf line = { 0 };
	buf_printf(&line, "PROXY TCP4 %s %s %u %u\r\n", c->src_str, c->dst_str, c->src_port, c->dst_port);
	buf_add(&u->out, buf_data(&line), buf_size(&line));
	buf_free(&line);
	buf_add(&u->out, buf_data(&c->in), buf_size(&c->in));
	buf_consume(&c->in, buf_size(&c->in));
	c->tunnel = true;
}

static unsigned host_fields(const char *buf, const struct h1_request *r)
{
	unsigned n = 0;
	for (uint32_t i = 0; i < r->nfields; i++)
		n += name_is(buf, r->fields[i].name, "host");
	return n;
}

/* The client connection preface of HTTP/2 (RFC 9113 §3.4). */
static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof(PREFACE) - 1)

/* Starts the exchange of a request whose head was just parsed. */
static void request_head(struct client *c, const char *buf, const struct h1_request *r)
{
	struct exchange *x = &c->x;
	exchange_clear(x);
	x->active = true;
	x->started = now_ns();
	x->minor = r->minor;
	x->close = !r->keep_alive || r->upgrade;
	x->method = xadd(x, buf + r->method.off, r->method.len);
	x->url = xadd(x, buf + r->target.off, r->target.len);
	x->policy = x->url_json = x->headers_json = NO_TEXT;
	x->head_request = r->method.len == 4 && !memcmp(buf + r->method.off, "HEAD", 4);
	x->headers = packed_headers(x, buf, r);
	h1_body_request(&x->body, r);
	/* Known at once for a request without a body (an upstream failure then keeps the connection). */
	x->request_done = x->body.kind == H1_BODY_NONE;
	static struct view v;
	make_view(&v, buf, r);
	x->host = xadd(x, v.req.host, v.req.host_len);

	if (r->method.len == 7 && !memcmp(buf + r->method.off, "CONNECT", 7)) {
		/* A CONNECT tunnel would carry bytes no rule looks at. */
		deny(c, 403, DENIED_BODY, "CONNECT tunnels are not proxied", true);
		return;
	}
	if (r->minor >= 1 && !r->has_host) {
		deny(c, 400, "", "HTTP/1.1 request without Host", true);
		return;
	}
	if (host_fields(buf, r) > 1) {
		/* Rules judge one Host; a destination might take the other (RFC 9112 §3.2: 400). */
		deny(c, 400, "", "more than one Host", true);
		return;
	}
	if (!resolve(c)) {
		/*
		 * Nothing says where this connection may go: refuse rather than guess, and close,
		 * so that the client's next connection is judged by the datapath again.
		 */
		x->action = A_ANSWER;
		x->close = true;
		struct record rec = { .response = true, .verdict = F_ERROR, .code = 503, .reason = "no redirect", .latency_ns = -1 };
		record(c, &rec);
		answer(c, 503, "No redirect for this connection\r\n", true);
		return;
	}
	const struct rt_endpoint *ep = rt_endpoint_by_id(table, c->endpoint_id);
	const struct rt_entry *e = ep ? rt_match(ep, c->dir, c->peer, c->dst_port) : NULL;
	if (!e) {
		/* The policy that sent this connection here changed: the client reconnects and the datapath decides again. */
		deny(c, 403, DENIED_BODY, "no L7 rule applies any more", true);
		return;
	}
	struct rt_edit edits[MAX_EDITS];
	size_t nedits = 0;
	if (!rt_judge(e, &v.req, edits, MAX_EDITS, &nedits)) {
		deny(c, 403, DENIED_BODY, "Access denied", r->upgrade);
		return;
	}
	x->action = A_FORWARD;
	x->websocket = r->upgrade && websocket_upgrade(buf, r);
	const char *policy = rt_entry_policy(e);
	x->policy = xadd(x, policy, strlen(policy));
	struct record rec = { .latency_ns = -1, .policy = policy };
	record(c, &rec);

	bool transparent = remote_pod(c);
	uint32_t mark = upstream_mark(c);
	uint32_t ip = cfg.upstream_port ? cfg.upstream_ip : c->dst_ip;
	uint16_t port = cfg.upstream_port ? cfg.upstream_port : c->dst_port;
	if (c->up && (!c->up->reusable || !same_upstream(c->up, ip, port, mark, transparent, c))) {
		upstream_free(c->up);
		c->up = NULL;
	}
	if (!c->up) {
		struct upstream *u = upstream_open(c, ip, port, mark, transparent);
		c->up = u;
		if (u->h.fd < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "upstream connect error: %s", strerror(errno));
			upstream_failed(u, msg);
			return;
		}
	}
	c->up->reusable = false;
	memset(&c->up->body, 0, sizeof(c->up->body));
	upstream_head(&c->up->out, buf, r, edits, nedits, x->websocket, x->close);
}

/* A request head that cannot be parsed: 400 or 431, recorded, and the connection closes. */
static void bad_request(struct client *c, int rc, const char *why)
{
	int code = rc == H1_TOO_BIG ? 431 : 400;
	char reason[200];
	snprintf(reason, sizeof(reason), "%s: %s", rc == H1_TOO_BIG ? "HPE_HEADER_OVERFLOW" : "HPE_INVALID",
		 why ? why : "malformed request");
	exchange_clear(&c->x);
	struct record r = { .verdict = F_DROPPED, .code = code, .reason = reason, .latency_ns = -1 };
	record(c, &r);
	answer(c, code, "", true);
	if (!dead(c))
		client_finish(c);
}

/* Feeds the current request's body: to the destination, or away. */
static bool request_body(struct client *c)
{
	struct exchange *x = &c->x;
	int done = 0;
	const char *why = NULL;
	ssize_t n = h1_body_feed(&x->body, buf_data(&c->in), buf_size(&c->in), &done, &why);
	if (n < 0) {
		/* A broken body: nothing more can be parsed on this connection. */
		if (x->action == A_FORWARD && c->up && !x->response_head_done) {
			upstream_failed(c->up, why ? why : "bad request body");
			return false;
		}
		client_kill(c);
		return false;
	}
	if (x->action == A_FORWARD && c->up && n > 0) {
		if (!send_bytes(c->up->connecting ? -1 : c->up->h.fd, &c->up->out, buf_data(&c->in), (size_t)n)) {
			upstream_failed(c->up, "upstream closed the connection");
			return false;
		}
	}
	buf_consume(&c->in, (size_t)n);
	if (done) {
		x->request_done = true;
		exchange_done(c);
		return !dead(c);
	}
	return false; /* more body to come */
}

/* Parses and acts on what the client sent, as far as it goes. */
static void client_process(struct client *c)
{
	while (!dead(c)) {
		if (c->tunnel) {
			struct upstream *u = c->up;
			if (u && buf_size(&c->in)) {
				if (!send_bytes(u->connecting ? -1 : u->h.fd, &u->out, buf_data(&c->in), buf_size(&c->in))) {
					upstream_failed(u, "upstream closed the connection");
					return;
				}
				buf_consume(&c->in, buf_size(&c->in));
			}
			break;
		}
		struct exchange *x = &c->x;
		if (x->active) {
			if (x->request_done)
				break; /* the response is still coming: a pipelined request waits */
			if (x->websocket && x->action == A_FORWARD) {
				/* What follows an upgrade request is the new protocol's, held until the 101. */
				x->request_done = true;
				break;
			}
			if (!buf_size(&c->in))
				break;
			if (!request_body(c))
				break;
			continue;
		}
		if (c->stopped || !buf_size(&c->in))
			break;
		if (!c->sniffed) {
			size_t n = buf_size(&c->in) < PREFACE_LEN ? buf_size(&c->in) : PREFACE_LEN;
			if (memcmp(buf_data(&c->in), PREFACE, n))
				c->sniffed = true;
			else if (n < PREFACE_LEN)
				break; /* too few bytes to tell */
			else {
				c->sniffed = true;
				handoff(c);
				continue;
			}
		}
		static struct h1_request r;
		const char *why = NULL;
		int rc = h1_parse_request(buf_data(&c->in), buf_size(&c->in), cfg.max_header_size, &r, &why);
		if (rc == H1_PARTIAL)
			break;
		if (rc != H1_DONE) {
			bad_request(c, rc, why);
			break;
		}
		request_head(c, buf_data(&c->in), &r);
		buf_consume(&c->in, r.head_len);
		if (dead(c))
			break;
		if (c->x.active && c->x.action == A_ANSWER)
			c->x.response_done = true;
		exchange_done(c);
	}
	if (!dead(c) && c->up && c->up->h.fd >= 0 && !c->up->connecting)
		if (!flush_out(c->up->h.fd, &c->up->out))
			upstream_failed(c->up, "upstream closed the connection");
	if (!dead(c) && c->read_eof && !c->tunnel && !c->x.active && !c->close_after_flush)
		client_finish(c);
	if (!dead(c))
		update_interest(c);
}

/* ---- events ---------------------------------------------------------------- */

static char readbuf[READ_CHUNK];

/* The client sent FIN. */
static void client_eof(struct client *c)
{
	c->read_eof = true;
	if (c->tunnel) {
		/* A tunnel's half-close passes on, after what is queued. */
		struct upstream *u = c->up;
		if (!u || u->read_eof) {
			client_finish(c);
			return;
		}
		if (!u->connecting) {
			flush_out(u->h.fd, &u->out);
			shutdown(u->h.fd, SHUT_WR);
		}
		return;
	}
	/* Gone mid-request: nothing to answer. */
	if (c->x.active && !c->x.request_done)
		client_kill(c);
}

static void client_event(struct client *c, uint32_t ev)
{
	c->last_active = now_ns();
	if (ev & EPOLLERR) {
		client_kill(c);
		return;
	}
	if (c->lingering) {
		ssize_t n = read(c->h.fd, readbuf, sizeof(readbuf));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			client_kill(c);
		return;
	}
	if (ev & EPOLLOUT) {
		if (!flush_out(c->h.fd, &c->out)) {
			client_kill(c);
			return;
		}
		if (!buf_size(&c->out) && c->close_after_flush) {
			linger(c);
			return;
		}
		if (!buf_size(&c->out) && c->shut_after_flush) {
			c->shut_after_flush = false;
			shutdown(c->h.fd, SHUT_WR);
		}
	}
	if (ev & (EPOLLIN | EPOLLHUP)) {
		ssize_t n = read(c->h.fd, readbuf, sizeof(readbuf));
		if (n > 0) {
			buf_add(&c->in, readbuf, (size_t)n);
		} else if (n == 0) {
			client_eof(c);
		} else if (errno != EAGAIN && errno != EINTR) {
			client_kill(c);
		}
		if (dead(c))
			return;
	}
	client_process(c);
}

static void upstream_event(struct upstream *u, uint32_t ev)
{
	struct client *c = u->owner;
	c->last_active = now_ns();
	if (u->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(u->h.fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			char msg[128];
			snprintf(msg, sizeof(msg), "upstream connect error: %s", strerror(err));
			upstream_failed(u, msg);
			if (!dead(c))
				update_interest(c);
			return;
		}
		u->connecting = false;
	}
	if (!u->connecting && (ev & EPOLLOUT) && !flush_out(u->h.fd, &u->out)) {
		upstream_failed(u, "upstream closed the connection");
		if (!dead(c))
			update_interest(c);
		return;
	}
	if (!u->connecting && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		ssize_t n = read(u->h.fd, readbuf, sizeof(readbuf));
		if (n > 0) {
			buf_add(&u->in, readbuf, (size_t)n);
			upstream_input(u);
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			u->read_eof = true;
			if (c->tunnel && n == 0) {
				/* The tunnel's half-close passes on, after what is queued. */
				if (!c->read_eof) {
					flush_out(c->h.fd, &c->out);
					if (!buf_size(&c->out))
						shutdown(c->h.fd, SHUT_WR);
					else
						c->shut_after_flush = true;
					update_interest(c);
				} else {
					client_finish(c);
				}
				return;
			}
			struct exchange *x = &c->x;
			if (n == 0 && x->active && x->response_head_done && u->body.kind == H1_BODY_EOF && !x->response_done) {
				/* A response delimited by the connection's end ends here. */
				x->response_done = true;
				u->reusable = false;
				exchange_done(c);
			} else {
				upstream_failed(u, n == 0 ? "upstream closed the connection" : strerror(errno));
			}
		}
	}
	if (!dead(c))
		client_process(c);
}

static bool accept_paused;

static void accept_clients(struct listener *l)
{
	for (;;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		int fd = accept4(l->h.fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors: stop accepting for a moment rather than spin. */
				logf_("accept: %s (pausing for a second)", strerror(errno));
				watch(&l->h, 0);
				accept_paused = true;
				return;
			}
			/* The listener itself is broken (e.g. destroyed from outside): let the agent restart us. */
			logf_("accept: %s", strerror(errno));
			exit(1);
		}
		struct sockaddr_in local;
		socklen_t llen = sizeof(local);
		getsockname(fd, (struct sockaddr *)&local, &llen);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct client *c = calloc(1, sizeof(*c));
		if (!c)
			abort();
		c->h.kind = K_CLIENT;
		c->h.fd = fd;
		c->h.events = UINT32_MAX;
		c->dir = l->dir;
		c->src_ip = peer.sin_addr.s_addr;
		c->src_port = ntohs(peer.sin_port);
		c->dst_ip = local.sin_addr.s_addr;
		c->dst_port = ntohs(local.sin_port);
		ip_str(c->src_ip, c->src_str);
		ip_str(c->dst_ip, c->dst_str);
		c->last_active = now_ns();
		c->next = clients;
		if (clients)
			clients->prev = c;
		clients = c;
		update_interest(c);
	}
}

/* Closes connections idle past their limit (checked about once a second). */
static void sweep_idle(uint64_t now)
{
	for (struct client *c = clients; c; c = c->next) {
		if (dead(c))
			continue;
		uint64_t limit = (uint64_t)(c->tunnel ? TUNNEL_IDLE_MS : cfg.idle_ms) * 1000000ull;
		if (now - c->last_active > limit || (c->lingering && now > c->linger_until))
			client_kill(c);
	}
}

/* ---- listeners --------------------------------------------------------------- */

static int listen_on(uint16_t port, enum rt_direction dir, struct listener *l)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	const char *what = NULL;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = cfg.address, .sin_port = htons(port) };
	if (fd < 0)
		what = "socket";
	else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		what = "SO_REUSEADDR";
	else if (cfg.reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		what = "SO_REUSEPORT";
	else if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0)
		what = "IP_TRANSPARENT";
	else if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		what = "bind";
	else if (listen(fd, 1024) < 0)
		what = "listen";
	if (what) {
		char ip[INET_ADDRSTRLEN];
		ip_str(cfg.address, ip);
		logf_("listener %s:%u: %s: %s", ip, port, what, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (port == 0) {
		socklen_t len = sizeof(a);
		getsockname(fd, (struct sockaddr *)&a, &len);
	}
	l->h.kind = K_LISTENER;
	l->h.fd = fd;
	l->h.events = UINT32_MAX;
	l->dir = dir;
	watch(&l->h, EPOLLIN);
	return ntohs(a.sin_port);
}

static int start_listening(void)
{
	int e = listen_on(cfg.egress_port, RT_EGRESS, &listeners[0]);
	if (e < 0)
		return -1;
	int i = listen_on(cfg.ingress_port, RT_INGRESS, &listeners[1]);
	if (i < 0)
		return -1;
	listening = true;
	char ip[INET_ADDRSTRLEN];
	ip_str(cfg.address, ip);
	logf_("egress on %s:%d, ingress on :%d", ip, e, i);
	char ready[96];
	snprintf(ready, sizeof(ready), "{\"type\":\"ready\",\"ports\":[%d,%d]}", e, i);
	ipc_send(ready);
	return 0;
}

/* ---- IPC input ---------------------------------------------------------------- */

static void ipc_line(const char *line, size_t n)
{
	/* The agent sends EndpointsMessages only; Node.js's own messages are ignored. */
	if (!memmem(line, n, "\"type\":\"endpoints\"", 18))
		return;
	char err[512];
	if (rt_apply(table, line, n, err, sizeof(err)) < 0)
		logf_("endpoints update refused: %s", err);
	if (!listening && rt_synced(table) && start_listening() < 0)
		exit(1);
}

static void ipc_event(uint32_t ev)
{
	if (ev & EPOLLOUT)
		ipc_flush();
	if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	char tmp[65536];
	ssize_t n = read(ipc.fd, tmp, sizeof(tmp));
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		/* The agent is gone: so is its proxy. */
		stop_requested = 1;
		return;
	}
	if (n < 0)
		return;
	buf_add(&ipc_in, tmp, (size_t)n);
	for (;;) {
		const char *p = buf_data(&ipc_in);
		const char *nl = memchr(p, '\n', buf_size(&ipc_in));
		if (!nl)
			break;
		ipc_line(p, (size_t)(nl - p));
		buf_consume(&ipc_in, (size_t)(nl - p) + 1);
	}
}

/* ---- main ----------------------------------------------------------------------- */

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(void)
{
	fputs("usage: hypha-http-proxy --egress-port N --ingress-port N [--address IP] [--reuse-port]\n"
	      "         [--pin-dir DIR] [--pod-cidr CIDR] [--handoff-dir DIR]\n"
	      "         [--max-header-size BYTES] [--idle-timeout-ms MS]\n"
	      "  for tests without a datapath: --test-upstream IP:PORT (every upstream), --test-peer-identity N\n",
	      stderr);
}

static bool parse_port(const char *s, uint16_t *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end || v < 0 || v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

static bool parse_cidr(const char *s, uint32_t *net, uint32_t *mask)
{
	char ip[INET_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof(ip))
		return false;
	memcpy(ip, s, (size_t)(slash - s));
	ip[slash - s] = 0;
	char *end;
	long bits = strtol(slash + 1, &end, 10);
	struct in_addr a;
	if (*end || bits < 0 || bits > 32 || inet_pton(AF_INET, ip, &a) != 1)
		return false;
	*mask = bits ? htonl(~0u << (32 - bits)) : 0;
	*net = a.s_addr & *mask;
	return true;
}

static int parse_args(int argc, char **argv)
{
	inet_pton(AF_INET, "127.0.0.1", &cfg.address);
	bool have_egress = false, have_ingress = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool ok = true;
		if (!strcmp(a, "--reuse-port")) {
			cfg.reuse_port = true;
			continue;
		}
		if (!v) {
			logf_("%s: a value is missing", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--egress-port"))
			ok = have_egress = parse_port(v, &cfg.egress_port);
		else if (!strcmp(a, "--ingress-port"))
			ok = have_ingress = parse_port(v, &cfg.ingress_port);
		else if (!strcmp(a, "--handoff-dir"))
			cfg.handoff_dir = v;
		else if (!strcmp(a, "--test-upstream")) {
			char ip[INET_ADDRSTRLEN];
			const char *colon = strrchr(v, ':');
			ok = colon && (size_t)(colon - v) < sizeof(ip);
			if (ok) {
				memcpy(ip, v, (size_t)(colon - v));
				ip[colon - v] = 0;
				ok = inet_pton(AF_INET, ip, &cfg.upstream_ip) == 1 && parse_port(colon + 1, &cfg.upstream_port) &&
				     cfg.upstream_port;
			}
		} else if (!strcmp(a, "--test-peer-identity")) {
			char *end;
			unsigned long n = strtoul(v, &end, 10);
			ok = *v && !*end && n <= UINT32_MAX;
			cfg.fixed_peer = true;
			cfg.peer_identity = (uint32_t)n;
		}
		else if (!strcmp(a, "--address"))
			ok = inet_pton(AF_INET, v, &cfg.address) == 1;
		else if (!strcmp(a, "--pin-dir"))
			cfg.pin_dir = v;
		else if (!strcmp(a, "--pod-cidr"))
			ok = parse_cidr(v, &cfg.pod_net, &cfg.pod_mask);
		else if (!strcmp(a, "--max-header-size")) {
			char *end;
			long n = strtol(v, &end, 10);
			ok = !*end && n >= 1024 && n <= 1 << 20;
			cfg.max_header_size = (size_t)n;
		} else if (!strcmp(a, "--idle-timeout-ms")) {
			char *end;
			long n = strtol(v, &end, 10);
			ok = !*end && n >= 1 && n <= 86400000;
			cfg.idle_ms = (uint32_t)n;
		} else {
			logf_("unknown option %s", a);
			usage();
			return -1;
		}
		if (!ok) {
			logf_("%s: %s is not valid", a, v);
			return -1;
		}
	}
	if (!have_egress || !have_ingress) {
		usage();
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--layouts")) {
		print_layouts();
		return 0;
	}
	if (parse_args(argc, argv) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	epfd = epoll_create1(EPOLL_CLOEXEC);
	table = rt_new();
	if (epfd < 0 || !table) {
		logf_("startup: %s", strerror(errno));
		return 1;
	}
	open_maps();

	const char *chan = getenv("NODE_CHANNEL_FD");
	if (chan && *chan) {
		ipc.fd = atoi(chan);
		fcntl(ipc.fd, F_SETFL, fcntl(ipc.fd, F_GETFL) | O_NONBLOCK);
		fcntl(ipc.fd, F_SETFD, FD_CLOEXEC);
		watch(&ipc, EPOLLIN);
		/* A (re)started worker gets everything, then listens. */
		ipc_send("{\"type\":\"hello\"}");
	} else {
		/* Alone: no endpoints, so every request is answered 503. */
		char err[128];
		const char *empty = "{\"type\":\"endpoints\",\"full\":true,\"upsert\":[],\"remove\":[]}";
		rt_apply(table, empty, strlen(empty), err, sizeof(err));
		if (start_listening() < 0)
			return 1;
	}

	uint64_t last_sweep = now_ns();
	struct epoll_event evs[128];
	while (!stop_requested) {
		int timeout = batch_events ? BATCH_MS : 1000;
		int n = epoll_wait(epfd, evs, 128, timeout);
		if (n < 0 && errno != EINTR) {
			logf_("epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct handle *h = evs[i].data.ptr;
			uint32_t ev = evs[i].events;
			switch (h->kind) {
			case K_LISTENER:
				accept_clients((struct listener *)h);
				break;
			case K_IPC:
				ipc_event(ev);
				break;
			case K_CLIENT:
				client_event((struct client *)h, ev);
				break;
			case K_UPSTREAM: {
				struct upstream *u = (struct upstream *)h;
				if (u->owner && !dead(u->owner) && u->owner->up == u)
					upstream_event(u, ev);
				break;
			}
			default:
				break; /* closed earlier in this batch */
			}
		}
		bury();
		uint64_t now = now_ns();
		if (batch_events && now - batch_since >= BATCH_MS * 1000000ull)
			batch_send();
		if (now - last_sweep >= 1000000000ull) {
			if (accept_paused) {
				accept_paused = false;
				for (size_t i = 0; i < 2; i++)
					if (listeners[i].h.fd >= 0)
						watch(&listeners[i].h, EPOLLIN);
			}
			sweep_idle(now);
			bury();
			last_sweep = now;
		}
	}
	batch_send();
	if (ipc.fd >= 0) {
		fcntl(ipc.fd, F_SETFL, fcntl(ipc.fd, F_GETFL) & ~O_NONBLOCK);
		ipc_flush();
	}
	if (dropped_records)
		logf_("%llu records dropped (the agent did not take them)", (unsigned long long)dropped_records);
	return 0;
}
