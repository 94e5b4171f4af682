/* SPDX-License-Identifier: GPL-2.0 */
/*
 * API: IP prefix -> security identity (longest prefix wins). Pods, nodes, CIDR and FQDN
 * identities all live here; an address nothing covers is the world.
 */
#ifndef __HYPHA_IPCACHE_H
#define __HYPHA_IPCACHE_H

#include "common.h"

struct ipcache_key4 {
	__u32 prefixlen;
	__be32 ip4;
};

struct ipcache_info {
	__u32 identity;
	/* Node the address lives on (0 for local or outside addresses). */
	__be32 tunnel_endpoint;
	__u8 flags;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 512000);
	__type(key, struct ipcache_key4);
	__type(value, struct ipcache_info);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hypha_ipcache4 SEC(".maps");

__hy_inline __u32 ipcache_identity4(__be32 ip)
{
	struct ipcache_key4 k = { .prefixlen = 32, .ip4 = ip };
	struct ipcache_info *info = bpf_map_lookup_elem(&hypha_ipcache4, &k);

	return info ? info->identity : ID_WORLD;
}

#endif
