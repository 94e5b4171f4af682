/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: packet and byte counters by reason (0 = forwarded, else the drop reason) and
 * direction, per CPU; the agent sums them. A per-CPU array indexed by
 * METRICS_INDEX(reason, direction): the verifier inlines its lookup into a bounds check
 * and an offset, and it needs no insert, where a hash costs hashing and a bucket walk on
 * every packet.
 */
#ifndef __HYPHA_METRICS_H
#define __HYPHA_METRICS_H

#include "common.h"

#define METRICS_INDEX(reason, direction) (((__u32)(direction) << 8) | (__u8)(reason))
#define METRICS_ENTRIES (2 << 8)

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, METRICS_ENTRIES);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_metrics SEC(".maps");

__hy_inline void metrics_count(__u8 reason, __u8 direction, __u32 bytes)
{
	__u32 k = METRICS_INDEX(reason, direction);
	struct metrics_value *v = bpf_map_lookup_elem(&hypha_metrics, &k);

	if (v) {
		v->packets++;
		v->bytes += bytes;
	}
}

#endif
