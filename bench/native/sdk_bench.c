// SPDX-License-Identifier: Apache-2.0
/*
 * The baseline for bench/sdk.ts: the same operations on the same maps and data,
 * straight from C with libbpf. Prints one JSON object of figures.
 *   sdk_bench <sdk_test.bpf.o>
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sdk_key { uint32_t addr; uint16_t port; uint8_t proto, pad; };
struct sdk_value { uint64_t packets, bytes; uint32_t flags; uint8_t name[12]; };
struct sdk_event { uint32_t seq, len; uint64_t ts; uint8_t data[48]; };

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sdk_key key_of(uint32_t i)
{
	struct sdk_key k = { .addr = 0x0a000000u | i, .port = (uint16_t)i, .proto = 6 };
	return k;
}

/* Decoded records go here so the compiler cannot drop the decoding. */
static volatile uint64_t sink;
static uint64_t drained;

static int on_event(void *ctx, void *data, size_t size)
{
	struct sdk_event ev;
	memcpy(&ev, data, sizeof(ev));
	sink += ev.seq + ev.len + ev.ts + ev.data[0];
	drained++;
	return 0;
}

int main(int argc, char **argv)
{
	const int N = 100000, LOOKUPS = 1000000, ROUNDS = 20, PER_ROUND = 50000;
	struct bpf_object *obj;
	int hash, ctl, events, emit, i, r;
	struct sdk_key *keys = calloc(N, sizeof(*keys));
	struct sdk_value *vals = calloc(N, sizeof(*vals));
	struct sdk_value v = {};
	double t0, single_lookup, single_update, batch, drain_s = 0;

	libbpf_set_print(NULL);
	obj = bpf_object__open_file(argc > 1 ? argv[1] : "sdk_test.bpf.o", NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "load failed\n");
		return 1;
	}
	hash = bpf_object__find_map_fd_by_name(obj, "sdk_hash");
	ctl = bpf_object__find_map_fd_by_name(obj, "sdk_bench_ctl");
	events = bpf_object__find_map_fd_by_name(obj, "sdk_events");
	emit = bpf_program__fd(bpf_object__find_program_by_name(obj, "sdk_emit"));

	for (i = 0; i < N; i++) {
		keys[i] = key_of(i);
		vals[i].packets = i;
		vals[i].flags = i;
	}

	/* batch update of N entries */
	{
		uint32_t count = N;
		LIBBPF_OPTS(bpf_map_batch_opts, opts);
		t0 = now();
		if (bpf_map_update_batch(hash, keys, vals, &count, &opts)) { perror("batch"); return 1; }
		batch = now() - t0;
	}
	/* single lookups over those entries */
	t0 = now();
	for (i = 0; i < LOOKUPS; i++) {
		struct sdk_key k = keys[i % N];
		if (bpf_map_lookup_elem(hash, &k, &v)) { perror("lookup"); return 1; }
		sink += v.packets;
	}
	single_lookup = now() - t0;
	/* single updates */
	t0 = now();
	for (i = 0; i < LOOKUPS; i++) {
		struct sdk_key k = keys[i % N];
		v.packets = i;
		if (bpf_map_update_elem(hash, &k, &v, BPF_ANY)) { perror("update"); return 1; }
	}
	single_update = now() - t0;

	/* ring buffer drain: records emitted by a test run, drained and decoded */
	{
		struct ring_buffer *rb = ring_buffer__new(events, on_event, NULL, NULL);
		uint32_t k0 = 0, count = PER_ROUND;
		char pkt[64] = {};
		LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = pkt, .data_size_in = sizeof(pkt), .repeat = 1);
		bpf_map_update_elem(ctl, &k0, &count, BPF_ANY);
		for (r = 0; r < ROUNDS; r++) {
			if (bpf_prog_test_run_opts(emit, &run)) { perror("test run"); return 1; }
			t0 = now();
			ring_buffer__consume(rb);
			drain_s += now() - t0;
		}
		ring_buffer__free(rb);
	}

	printf("{\"single_lookup_ns\": %.1f, \"single_update_ns\": %.1f, \"batch_update_per_s\": %.0f, "
	       "\"ringbuf_records_per_s\": %.0f, \"ringbuf_records\": %llu}\n",
	       single_lookup / LOOKUPS * 1e9, single_update / LOOKUPS * 1e9, N / batch,
	       drained / drain_s, (unsigned long long)drained);
	bpf_object__close(obj);
	return 0;
}
