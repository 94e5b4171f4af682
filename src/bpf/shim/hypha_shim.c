// SPDX-License-Identifier: Apache-2.0
/*
 * Glue between libbpf and the koffi binding, for the two places where a JS call per
 * item would cost too much or cannot be expressed:
 *
 *  - libbpf's print callback takes a va_list, which FFI cannot receive; we format the
 *    messages here into a buffer the binding reads (and attaches to errors).
 *  - ring buffers: a JS callback per record caps throughput far below what the datapath
 *    produces, so records are copied in batches into a caller-owned buffer as
 *    [u32 length][u32 reserved][data, padded to 8 bytes]. Waiting happens on a worker
 *    thread (koffi async) with poll(2) over libbpf's epoll fd and an eventfd that wakes
 *    the waiter when the reader is closed, so Node's event loop never blocks.
 *
 * Everything else goes straight from TypeScript to libbpf.
 */
#include <bpf/libbpf.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- libbpf messages ---------------------------------------------------- */

#define HY_LOG_CAP (256 * 1024)
static char hy_log[HY_LOG_CAP];
static size_t hy_log_len;
static int hy_log_echo = -1; /* echo messages at or below this level to stderr */

static int hy_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[4096];
	va_list copy;
	int n;

	if (level == LIBBPF_DEBUG && hy_log_echo < (int)LIBBPF_DEBUG)
		return 0;
	va_copy(copy, ap);
	n = vsnprintf(line, sizeof(line), fmt, copy);
	va_end(copy);
	if (n < 0)
		return 0;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	if (hy_log_echo >= (int)level)
		fputs(line, stderr);
	/* Keep the newest messages: a verifier failure is explained at the end. */
	if (hy_log_len + (size_t)n >= HY_LOG_CAP) {
		size_t drop = hy_log_len + (size_t)n - HY_LOG_CAP + 1;
		if (drop > hy_log_len)
			drop = hy_log_len;
		memmove(hy_log, hy_log + drop, hy_log_len - drop);
		hy_log_len -= drop;
	}
	memcpy(hy_log + hy_log_len, line, (size_t)n);
	hy_log_len += (size_t)n;
	return n;
}

void hy_log_init(int echo_level)
{
	hy_log_echo = echo_level;
	libbpf_set_print(hy_print);
}

/* Copies and clears the captured messages; returns the number of bytes copied. */
size_t hy_log_take(char *out, size_t cap)
{
	size_t n = hy_log_len < cap ? hy_log_len : cap;
	memcpy(out, hy_log + (hy_log_len - n), n);
	hy_log_len = 0;
	return n;
}

/* ---- ring buffers ------------------------------------------------------- */

struct hy_ringbuf {
	struct ring_buffer *rb;
	int wake_fd;
	unsigned char *out;
	size_t out_cap;
	size_t out_len;
	/* A record that did not fit in the caller's buffer. libbpf has already advanced
	 * the consumer position past it, so it is kept here and handed out first next time. */
	unsigned char *spill;
	size_t spill_len;
	size_t spill_cap;
};

#define HY_REC_HDR 8u
#define HY_ALIGN8(x) (((x) + 7u) & ~(size_t)7u)

static int hy_put(struct hy_ringbuf *h, const void *data, size_t size)
{
	size_t need = HY_REC_HDR + HY_ALIGN8(size);
	uint32_t len = (uint32_t)size;

	if (h->out_len + need > h->out_cap)
		return -ENOBUFS;
	memcpy(h->out + h->out_len, &len, sizeof(len));
	memset(h->out + h->out_len + 4, 0, 4);
	memcpy(h->out + h->out_len + HY_REC_HDR, data, size);
	h->out_len += need;
	return 0;
}

static int hy_on_sample(void *ctx, void *data, size_t size)
{
	struct hy_ringbuf *h = ctx;

	if (hy_put(h, data, size) == 0)
		return 0;
	if (h->spill_cap < size) {
		unsigned char *p = realloc(h->spill, size);
		if (!p)
			return -ENOMEM;
		h->spill = p;
		h->spill_cap = size;
	}
	memcpy(h->spill, data, size);
	h->spill_len = size;
	return -ENOBUFS; /* stop consuming: the caller's buffer is full */
}

struct hy_ringbuf *hy_ringbuf_new(int map_fd)
{
	struct hy_ringbuf *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->wake_fd < 0)
		goto err;
	h->rb = ring_buffer__new(map_fd, hy_on_sample, h, NULL);
	if (!h->rb)
		goto err;
	return h;
err:
	{
		int e = errno;
		if (h->wake_fd >= 0)
			close(h->wake_fd);
		free(h);
		errno = e;
		return NULL;
	}
}

/*
 * Copies as many whole records as fit into out. Returns the number of bytes written,
 * or -ENOSPC if the next record alone is larger than the buffer, or another -errno.
 */
long hy_ringbuf_drain(struct hy_ringbuf *h, unsigned char *out, size_t cap)
{
	int err;

	h->out = out;
	h->out_cap = cap;
	h->out_len = 0;
	if (h->spill_len) {
		if (hy_put(h, h->spill, h->spill_len))
			return -ENOSPC;
		h->spill_len = 0;
	}
	err = ring_buffer__consume(h->rb);
	if (err < 0 && err != -ENOBUFS)
		return err;
	return (long)h->out_len;
}

/* Blocks (on a worker thread) until records are ready (1), the timeout passes (0),
 * or the reader is woken for closing (2). */
int hy_ringbuf_wait(struct hy_ringbuf *h, int timeout_ms)
{
	struct pollfd fds[2] = {
		{ .fd = ring_buffer__epoll_fd(h->rb), .events = POLLIN },
		{ .fd = h->wake_fd, .events = POLLIN },
	};
	int n;

	if (h->spill_len)
		return 1;
	n = poll(fds, 2, timeout_ms);
	if (n < 0)
		return -errno;
	if (fds[1].revents)
		return 2;
	return n > 0 ? 1 : 0;
}

void hy_ringbuf_wake(struct hy_ringbuf *h)
{
	uint64_t one = 1;
	ssize_t r = write(h->wake_fd, &one, sizeof(one));
	(void)r;
}

void hy_ringbuf_free(struct hy_ringbuf *h)
{
	if (!h)
		return;
	ring_buffer__free(h->rb);
	close(h->wake_fd);
	free(h->spill);
	free(h);
}
