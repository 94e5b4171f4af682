/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: packet and byte counters by reason (0 = forwarded, else the drop reason) and
 * direction, per CPU; the agent sums them.
 */
#ifndef __HYPHA_METRICS_H
#define __HYPHA_METRICS_H

#include "common.h"

struct metrics_key {
	__u8 reason;
	__u8 direction;
	__u16 pad;
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_metrics SEC(".maps");

__hy_inline void metrics_count(__u8 reason, __u8 direction, __u32 bytes)
{
	struct metrics_key k = { .reason = reason, .direction = direction };
	struct metrics_value *v = bpf_map_lookup_elem(&hypha_metrics, &k);

	if (v) {
		v->packets++;
		v->bytes += bytes;
		return;
	}
	struct metrics_value init = { .packets = 1, .bytes = bytes };
	if (bpf_map_update_elem(&hypha_metrics, &k, &init, BPF_NOEXIST) == 0)
		return;
	/* Another CPU created the key first: count on the entry it made. */
	v = bpf_map_lookup_elem(&hypha_metrics, &k);
	if (v) {
		v->packets++;
		v->bytes += bytes;
	}
}

#endif
