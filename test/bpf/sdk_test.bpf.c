// SPDX-License-Identifier: GPL-2.0
/* Programs and maps that exercise every part of the hypha/bpf SDK in tests. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct sdk_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct sdk_value {
	__u64 packets;
	__u64 bytes;
	__u32 flags;
	__u8 name[12];
};

struct sdk_event {
	__u32 seq;
	__u32 len;
	__u64 ts;
	__u8 data[48];
};

struct lpm4_key {
	__u32 prefixlen;
	__u32 addr;
};

const volatile __u32 verdict = TC_ACT_OK;
const volatile __u64 magic = 0;
const volatile __u8 enabled = 1;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 200000);
	__type(key, struct sdk_key);
	__type(value, struct sdk_value);
} sdk_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} sdk_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} sdk_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} sdk_percpu_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} sdk_percpu_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct lpm4_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sdk_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sdk_pinned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} sdk_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} sdk_progs SEC(".maps");

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_map);
} sdk_array_of_maps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_map);
} sdk_hash_of_maps SEC(".maps");

/* Counts packets by protocol and returns the configured verdict; reports each packet. */
SEC("tc")
int sdk_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct sdk_key key = {};
	struct sdk_value *v, init = {};
	struct sdk_event *ev;
	__u32 k0 = 0;
	__u64 *cnt;

	if (!enabled)
		return TC_ACT_OK;
	cnt = bpf_map_lookup_elem(&sdk_array, &k0);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return verdict;
	key.addr = ip->saddr;
	key.proto = ip->protocol;
	v = bpf_map_lookup_elem(&sdk_hash, &key);
	if (!v) {
		bpf_map_update_elem(&sdk_hash, &key, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&sdk_hash, &key);
	}
	if (v) {
		__sync_fetch_and_add(&v->packets, 1);
		__sync_fetch_and_add(&v->bytes, skb->len);
	}
	ev = bpf_ringbuf_reserve(&sdk_events, sizeof(*ev), 0);
	if (ev) {
		ev->seq = (__u32)magic;
		ev->len = skb->len;
		ev->ts = bpf_ktime_get_ns();
		__builtin_memset(ev->data, 0, sizeof(ev->data));
		bpf_skb_load_bytes(skb, 0, ev->data, sizeof(ev->data) < skb->len ? sizeof(ev->data) : 14);
		bpf_ringbuf_submit(ev, 0);
	}
	return verdict;
}

/* Returns the magic constant's low bits: checks .rodata from test runs. */
SEC("tc")
int sdk_return_magic(struct __sk_buff *skb)
{
	return (int)(magic & 0x7fffffff);
}

/* Emits `count` records of 64 bytes for the ring buffer benchmark, from test runs. */
struct bench_ctl {
	__u32 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_ctl);
} sdk_bench_ctl SEC(".maps");

static long emit_one(__u32 i, void *ctx)
{
	struct sdk_event *ev = bpf_ringbuf_reserve(&sdk_events, sizeof(*ev), 0);

	if (!ev)
		return 1;
	ev->seq = i;
	ev->len = 64;
	ev->ts = 0;
	__builtin_memset(ev->data, 0, sizeof(ev->data));
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tc")
int sdk_emit(struct __sk_buff *skb)
{
	__u32 k0 = 0;
	struct bench_ctl *ctl = bpf_map_lookup_elem(&sdk_bench_ctl, &k0);

	if (!ctl)
		return 0;
	return bpf_loop(ctl->count, emit_one, NULL, 0);
}

SEC("tc")
int sdk_tail_target(struct __sk_buff *skb)
{
	return 42;
}

SEC("tc")
int sdk_tail_caller(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &sdk_progs, 0);
	return 7;
}

SEC("xdp")
int sdk_xdp(struct xdp_md *ctx)
{
	__u32 k = 1;
	__u64 *cnt = bpf_map_lookup_elem(&sdk_array, &k);

	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return XDP_PASS;
}

SEC("cgroup/connect4")
int sdk_connect4(struct bpf_sock_addr *ctx)
{
	__u32 k = 2;
	__u64 *cnt = bpf_map_lookup_elem(&sdk_array, &k);

	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int sdk_tracepoint(void *ctx)
{
	__u32 k = 3;
	__u64 *cnt = bpf_map_lookup_elem(&sdk_array, &k);

	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return 0;
}

SEC("kprobe/__x64_sys_getppid")
int sdk_kprobe(void *ctx)
{
	__u32 k = 4;
	__u64 *cnt = bpf_map_lookup_elem(&sdk_array, &k);

	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	return 0;
}

/* Keep the layout structs in BTF even where no program uses them by value. */
struct sdk_key *__sdk_key_btf __attribute__((unused));
struct sdk_value *__sdk_value_btf __attribute__((unused));

char _license[] SEC("license") = "GPL";
