/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: local endpoints, keyed by the ifindex of their host-side veth (the programs run
 * there, so skb->ifindex names the endpoint). The agent writes an entry before it
 * attaches the programs; a packet on a veth with no entry is dropped (165).
 */
#ifndef __HYPHA_ENDPOINTS_H
#define __HYPHA_ENDPOINTS_H

#include "common.h"

#define EP_ENFORCE_INGRESS (1 << 0)
#define EP_ENFORCE_EGRESS (1 << 1)

struct endpoint_key {
	__u32 ifindex;
};

struct endpoint_info {
	__be32 ip4;
	__u32 identity;
	__u16 id;
	__u8 flags;
	__u8 pad;
	__u8 mac[6];
	__u8 pad2[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_endpoints SEC(".maps");

__hy_inline struct endpoint_info *endpoint_lookup(__u32 ifindex)
{
	struct endpoint_key k = { .ifindex = ifindex };

	return bpf_map_lookup_elem(&hypha_endpoints, &k);
}

#endif
