// packet_counter.bpf.c: the tutorial's section 11.2 program, unchanged in substance.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/pkt_cls.h>

// Define a per-CPU array map to count packets (one entry)
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} packet_count SEC(".maps");

SEC("tc")
int count_packets(struct __sk_buff *skb)
{
    __u32 key = 0;
    __u64 *count;

    count = bpf_map_lookup_elem(&packet_count, &key);
    if (count)
        __sync_fetch_and_add(count, 1);

    return TC_ACT_OK;  // Pass the packet through
}

char _license[] SEC("license") = "GPL";
